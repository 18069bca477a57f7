//! Regexes exactly as nginx compiles them
//! (<https://github.com/nginx/nginx/blob/master/src/core/ngx_regex.c>): PCRE2, no UTF, byte
//! semantics, `PCRE2_CASELESS` for `~*`, no JIT (nginx's default `pcre_jit off`), so a match
//! that hits PCRE2's match limit fails here where it fails in nginx (which answers 500). We use the same engine (the `pcre2` crate), so there is
//! no dialect to translate and no pattern whose meaning differs.

use pcre2::bytes::{Regex, RegexBuilder};

#[derive(Debug, Clone)]
pub struct Rx {
    pub pattern: String,
    pub caseless: bool,
    re: Regex,
}

/// A successful match: numbered captures (`$0`..) and named ones.
#[derive(Debug, Clone, Default)]
pub struct Caps {
    pub numbered: Vec<Option<Vec<u8>>>,
    pub named: Vec<(String, Vec<u8>)>,
}

impl Rx {
    /// Compiles `pattern` (once per process: the trees of a book share most of their regexes).
    pub fn new(pattern: &str, caseless: bool) -> Result<Rx, String> {
        static COMPILED: crate::cache::Memo<(String, bool), Result<Rx, String>> =
            crate::cache::Memo::new();
        COMPILED.get_or((pattern.to_string(), caseless), || {
            RegexBuilder::new()
                .caseless(caseless)
                .utf(false)
                .ucp(false)
                // nginx's default is `pcre_jit off`: no JIT, so PCRE2's match limit applies
                // where it does in nginx.
                .jit_if_available(false)
                .build(pattern)
                .map_err(|e| e.to_string())
                .map(|re| Rx {
                    pattern: pattern.to_string(),
                    caseless,
                    re,
                })
        })
    }

    pub fn captures_len(&self) -> usize {
        self.re.captures_len()
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.re.capture_names().iter().filter_map(|n| n.as_deref())
    }

    pub fn is_match(&self, s: &[u8]) -> bool {
        self.re.is_match(s).unwrap_or(false)
    }

    /// Whether the pattern matches; Err when matching fails (PCRE2's match limit): nginx then
    /// answers 500 for a `location`, `if` or `rewrite`.
    pub fn try_is_match(&self, s: &[u8]) -> Result<bool, String> {
        self.re.is_match(s).map_err(|e| e.to_string())
    }

    /// Matches and returns captures; a matching error (e.g. match limit) counts as no match,
    /// as a `map` does (it falls back to its default).
    pub fn captures(&self, s: &[u8]) -> Option<Caps> {
        self.try_captures(s).ok().flatten()
    }

    /// Matches and returns captures; Err when matching fails (PCRE2's match limit), where nginx
    /// answers 500 for a `location`.
    pub fn try_captures(&self, s: &[u8]) -> Result<Option<Caps>, String> {
        let Some(c) = self.re.captures(s).map_err(|e| e.to_string())? else {
            return Ok(None);
        };
        let numbered = (0..c.len())
            .map(|i| c.get(i).map(|m| m.as_bytes().to_vec()))
            .collect();
        let named = self
            .re
            .capture_names()
            .iter()
            .enumerate()
            .filter_map(|(i, n)| {
                let n = n.as_ref()?;
                Some((
                    n.clone(),
                    c.get(i).map(|m| m.as_bytes().to_vec()).unwrap_or_default(),
                ))
            })
            .collect();
        Ok(Some(Caps { numbered, named }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pcre_semantics() {
        // PCRE `$` also matches before a final newline (no DOLLAR_ENDONLY), as in nginx.
        assert!(Rx::new(r"\.php$", false).unwrap().is_match(b"/x.php\n"));
        // Look-ahead works (the `regex` crate would refuse it).
        assert!(Rx::new(r"^/(?!_matrix)", false).unwrap().is_match(b"/foo"));
        // Caseless is ASCII-only without UTF; bytes need not be UTF-8.
        assert!(Rx::new("^/A", true).unwrap().is_match(b"/a\xff"));
        let c = Rx::new(r"^/rooms/(?<room>[^/]+)/(x)", false)
            .unwrap()
            .captures(b"/rooms/!a:b/x")
            .unwrap();
        assert_eq!(c.named, [("room".to_string(), b"!a:b".to_vec())]);
        assert_eq!(c.numbered[2].as_deref(), Some(&b"x"[..]));
        assert!(Rx::new("(", false).is_err());
    }
}
