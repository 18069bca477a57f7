//! The nginx AST, shaped like crossplane's JSON: a directive has a name, arguments, the file and
//! line it starts on, and (for block directives) its children. [`parse`] turns one file's text
//! into directives; `include` is resolved later, over the deployment tree (see `config`).

use super::lexer::{self, Tok, Word};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    pub name: String,
    pub args: Vec<Word>,
    /// The tree path of the file the directive is in (e.g. `nginx/conf.d/synapse.conf`).
    pub file: String,
    /// 1-based line of the directive's name in that file.
    pub line: usize,
    /// Children, for block directives (`http { ... }`).
    pub block: Option<Vec<Directive>>,
    /// For `include`: the tree files it pulled in (their directives follow it in the parent).
    pub includes: Vec<String>,
}

impl Directive {
    pub fn arg(&self, i: usize) -> Option<&str> {
        self.args.get(i).map(|w| w.text.as_str())
    }

    pub fn children(&self) -> &[Directive] {
        self.block.as_deref().unwrap_or(&[])
    }

    /// `name arg1 arg2`, for messages.
    pub fn display(&self) -> String {
        let mut s = self.name.clone();
        for a in &self.args {
            s.push(' ');
            s.push_str(&a.text);
        }
        s
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub file: String,
    pub line: usize,
    pub msg: String,
}

/// Parses one file. `file` is the tree path recorded in each directive.
pub fn parse(file: &str, src: &[u8]) -> Result<Vec<Directive>, ParseError> {
    let toks = lexer::lex(src).map_err(|e| ParseError {
        file: file.into(),
        line: e.line,
        msg: e.msg,
    })?;
    let mut pos = 0;
    let out = parse_block(file, &toks, &mut pos, 0)?;
    Ok(out)
}

fn parse_block(
    file: &str,
    toks: &[Tok],
    pos: &mut usize,
    depth: usize,
) -> Result<Vec<Directive>, ParseError> {
    let err = |line: usize, msg: &str| ParseError {
        file: file.into(),
        line,
        msg: msg.into(),
    };
    let mut out = Vec::new();
    let mut words: Vec<Word> = Vec::new();
    while *pos < toks.len() {
        let t = &toks[*pos];
        *pos += 1;
        match t {
            Tok::Word(w) => words.push(w.clone()),
            Tok::Semi(l) | Tok::Open(l) => {
                if words.is_empty() {
                    return Err(err(*l, "unexpected terminator"));
                }
                let name = words.remove(0);
                let block = if matches!(t, Tok::Open(_)) {
                    if depth > 64 {
                        return Err(err(*l, "blocks nested too deeply"));
                    }
                    Some(parse_block(file, toks, pos, depth + 1)?)
                } else {
                    None
                };
                out.push(Directive {
                    name: name.text,
                    line: name.line,
                    args: std::mem::take(&mut words),
                    file: file.into(),
                    block,
                    includes: Vec::new(),
                });
            }
            Tok::Close(l) => {
                if depth == 0 {
                    return Err(err(*l, "unexpected \"}\""));
                }
                if !words.is_empty() {
                    return Err(err(*l, "unexpected \"}\""));
                }
                return Ok(out);
            }
        }
    }
    if depth > 0 {
        let line = toks.last().map_or(1, |t| match t {
            Tok::Word(w) => w.line,
            Tok::Semi(l) | Tok::Open(l) | Tok::Close(l) => *l,
        });
        return Err(err(line, "unexpected end of file, expecting \"}\""));
    }
    Ok(out)
}

/// Every directive, depth first, with its context path (names of the enclosing blocks).
pub fn walk<'a>(dirs: &'a [Directive], f: &mut dyn FnMut(&'a Directive, &[&'a Directive])) {
    fn go<'a>(
        dirs: &'a [Directive],
        stack: &mut Vec<&'a Directive>,
        f: &mut dyn FnMut(&'a Directive, &[&'a Directive]),
    ) {
        for d in dirs {
            f(d, stack);
            if let Some(b) = &d.block {
                stack.push(d);
                go(b, stack, f);
                stack.pop();
            }
        }
    }
    go(dirs, &mut Vec::new(), f);
}

/// Splits `location` arguments into (modifier, name), accepting `=/x` and `= /x` forms.
pub fn location_args(d: &Directive) -> Result<(String, String), String> {
    let a: Vec<&str> = d.args.iter().map(|w| w.text.as_str()).collect();
    match a.as_slice() {
        [m, n] if matches!(*m, "=" | "^~" | "~" | "~*") => Ok(((*m).into(), (*n).into())),
        [m, _] => Err(format!("invalid location modifier \"{m}\"")),
        [n] => {
            for m in ["^~", "~*", "=", "~"] {
                if let Some(rest) = n.strip_prefix(m)
                    && !rest.is_empty()
                {
                    return Ok((m.into(), rest.into()));
                }
            }
            if n.starts_with('@') {
                return Ok(("@".into(), (*n).into()));
            }
            Ok((String::new(), (*n).into()))
        }
        _ => Err("invalid number of arguments in \"location\" directive".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested() {
        let d = parse("f", b"http {\n  server { listen 80; }\n}\nuser x;").unwrap();
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].name, "http");
        let server = &d[0].children()[0];
        assert_eq!(server.name, "server");
        assert_eq!(server.line, 2);
        assert_eq!(server.children()[0].display(), "listen 80");
        assert_eq!(d[1].line, 4);
    }

    #[test]
    fn unbalanced() {
        assert_eq!(
            parse("f", b"http {\n").unwrap_err().msg,
            "unexpected end of file, expecting \"}\""
        );
        assert_eq!(parse("f", b"}\n").unwrap_err().msg, "unexpected \"}\"");
    }
}
