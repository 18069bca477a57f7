//! The nginx tokenizer, a transcription of `ngx_conf_read_token`
//! (<https://github.com/nginx/nginx/blob/master/src/core/ngx_conf_file.c>).
//!
//! Rules that matter and that a naive tokenizer gets wrong:
//! - `#` starts a comment only at the start of a word (`a#b` is one word);
//! - `;` and `{` end a word, `}` does not (`${var}` and `abc}` are single words), and `}` is
//!   a block end only where a word could start;
//! - `"..."` and `'...'` quote, and a closing quote must be followed by a space, `;`, `{` or `)`;
//! - `\` escapes the next character; when the word is stored, `\"`, `\'` and `\\` lose the
//!   backslash and `\t`, `\r`, `\n` become control characters; any other `\x` is kept as is
//!   (so regexes like `\.` survive).
//!
//! The lexer works on bytes and never panics: any input gives tokens or one [`LexError`].

/// A word of a directive: its text after escape processing, whether it was quoted, its line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Word {
    pub text: String,
    pub quoted: bool,
    /// 1-based line where the word starts.
    pub line: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tok {
    Word(Word),
    /// `;` at this line.
    Semi(usize),
    /// `{` at this line.
    Open(usize),
    /// `}` at this line.
    Close(usize),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LexError {
    pub line: usize,
    pub msg: String,
}

fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\r' | b'\n')
}

/// Stores a word the way nginx does (escape processing).
fn store(raw: &[u8]) -> String {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'\\' && i + 1 < raw.len() {
            match raw[i + 1] {
                b'"' | b'\'' | b'\\' => {
                    out.push(raw[i + 1]);
                    i += 2;
                    continue;
                }
                b't' => {
                    out.push(b'\t');
                    i += 2;
                    continue;
                }
                b'r' => {
                    out.push(b'\r');
                    i += 2;
                    continue;
                }
                b'n' => {
                    out.push(b'\n');
                    i += 2;
                    continue;
                }
                _ => {}
            }
        }
        out.push(raw[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Tokenizes a whole file.
pub fn lex(src: &[u8]) -> Result<Vec<Tok>, LexError> {
    let mut toks = Vec::new();
    let mut line = 1usize;
    let mut nargs = 0usize; // words since the last terminator
    let mut last_space = true;
    let mut sharp = false;
    let mut quoted = false;
    let mut d_quoted = false;
    let mut s_quoted = false;
    let mut need_space = false;
    let mut variable = false;
    let mut start = 0usize;
    let mut start_line = 1usize;
    let mut word_quoted = false;
    let err = |line: usize, msg: String| Err(LexError { line, msg });

    let mut i = 0usize;
    while i < src.len() {
        let ch = src[i];
        i += 1;
        if ch == b'\n' {
            line += 1;
            if sharp {
                sharp = false;
            }
        }
        if sharp {
            continue;
        }
        if quoted {
            quoted = false;
            continue;
        }
        if need_space {
            if is_space(ch) {
                last_space = true;
                need_space = false;
                continue;
            }
            match ch {
                b';' => {
                    toks.push(Tok::Semi(line));
                    nargs = 0;
                    last_space = true;
                    need_space = false;
                    continue;
                }
                b'{' => {
                    toks.push(Tok::Open(line));
                    nargs = 0;
                    last_space = true;
                    need_space = false;
                    continue;
                }
                b')' => {
                    last_space = true;
                    need_space = false;
                    continue;
                }
                _ => return err(line, format!("unexpected \"{}\"", ch as char)),
            }
        }
        if last_space {
            if is_space(ch) {
                continue;
            }
            start = i - 1;
            start_line = line;
            word_quoted = false;
            match ch {
                b';' | b'{' => {
                    if nargs == 0 {
                        return err(line, format!("unexpected \"{}\"", ch as char));
                    }
                    toks.push(if ch == b';' {
                        Tok::Semi(line)
                    } else {
                        Tok::Open(line)
                    });
                    nargs = 0;
                    continue;
                }
                b'}' => {
                    if nargs != 0 {
                        return err(line, "unexpected \"}\"".into());
                    }
                    toks.push(Tok::Close(line));
                    continue;
                }
                b'#' => {
                    sharp = true;
                    continue;
                }
                b'\\' => {
                    quoted = true;
                    last_space = false;
                    continue;
                }
                b'"' => {
                    start = i;
                    d_quoted = true;
                    word_quoted = true;
                    last_space = false;
                    continue;
                }
                b'\'' => {
                    start = i;
                    s_quoted = true;
                    word_quoted = true;
                    last_space = false;
                    continue;
                }
                b'$' => {
                    variable = true;
                    last_space = false;
                    continue;
                }
                _ => {
                    last_space = false;
                    continue;
                }
            }
        }
        // Inside a word.
        if ch == b'{' && variable {
            continue;
        }
        variable = false;
        if ch == b'\\' {
            quoted = true;
            continue;
        }
        if ch == b'$' {
            variable = true;
            continue;
        }
        let mut found = false;
        let mut end_tok = None;
        if d_quoted {
            if ch == b'"' {
                d_quoted = false;
                need_space = true;
                found = true;
            }
        } else if s_quoted {
            if ch == b'\'' {
                s_quoted = false;
                need_space = true;
                found = true;
            }
        } else if is_space(ch) || ch == b';' || ch == b'{' {
            last_space = true;
            found = true;
            if ch == b';' {
                end_tok = Some(Tok::Semi(line));
            } else if ch == b'{' {
                end_tok = Some(Tok::Open(line));
            }
        }
        if found {
            let raw = &src[start..i - 1];
            toks.push(Tok::Word(Word {
                text: store(raw),
                quoted: word_quoted,
                line: start_line,
            }));
            nargs += 1;
            if let Some(t) = end_tok {
                toks.push(t);
                nargs = 0;
            }
        }
    }
    if d_quoted || s_quoted || !last_space && !need_space {
        return err(
            line,
            "unexpected end of file, expecting \";\" or \"}\"".into(),
        );
    }
    if nargs != 0 {
        return err(
            line,
            "unexpected end of file, expecting \";\" or \"}\"".into(),
        );
    }
    Ok(toks)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(src: &str) -> Vec<String> {
        lex(src.as_bytes())
            .unwrap()
            .into_iter()
            .map(|t| match t {
                Tok::Word(w) => w.text,
                Tok::Semi(_) => ";".into(),
                Tok::Open(_) => "{".into(),
                Tok::Close(_) => "}".into(),
            })
            .collect()
    }

    #[test]
    fn basic_and_comments() {
        assert_eq!(
            words("a b; # c d;\ne{f g;}"),
            ["a", "b", ";", "e", "{", "f", "g", ";", "}"]
        );
        assert_eq!(words("a b#c;"), ["a", "b#c", ";"]);
    }

    #[test]
    fn variables_braces_and_quotes() {
        assert_eq!(words("set $a ${b}c;"), ["set", "$a", "${b}c", ";"]);
        assert_eq!(
            words("location ~ \"^/a{2}$\" { }"),
            ["location", "~", "^/a{2}$", "{", "}"]
        );
        assert_eq!(
            words(r#"return 200 "a\"b\\c\.d";"#),
            ["return", "200", "a\"b\\c\\.d", ";"]
        );
        assert_eq!(words("a b}c;"), ["a", "b}c", ";"]);
    }

    #[test]
    fn errors() {
        assert!(lex(b"a \"b\"c;").is_err());
        assert!(lex(b"a b").is_err());
        assert!(lex(b";").is_err());
        assert!(lex(b"a }").is_err());
        assert!(lex(b"a \"b").is_err());
    }

    #[test]
    fn lines() {
        let t = lex(b"a\n\n  b\n c;").unwrap();
        let lines: Vec<usize> = t
            .iter()
            .filter_map(|t| {
                if let Tok::Word(w) = t {
                    Some(w.line)
                } else {
                    None
                }
            })
            .collect();
        assert_eq!(lines, [1, 3, 4]);
    }
}
