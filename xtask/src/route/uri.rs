//! What nginx makes of a request line's URI (`ngx_http_parse_complex_uri`): `$uri` is the path
//! percent-decoded, with `//` merged and `.`/`..` segments resolved; `$args` is the raw query
//! string; `$request_uri` is the URI exactly as sent. A bad `%` escape, a NUL byte or a `..`
//! above the root makes nginx answer 400, which [`parse`] reports as an error.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `$request_uri`: exactly as sent.
    pub raw: String,
    /// `$uri`: decoded, normalised path (bytes: a decoded path need not be UTF-8).
    pub path: Vec<u8>,
    /// `$args`: the raw query string (without `?`), if any.
    pub args: Option<String>,
}

impl Request {
    pub fn path_str(&self) -> String {
        String::from_utf8_lossy(&self.path).into_owned()
    }
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Parses a request-line URI (origin form, starting with `/`).
pub fn parse(raw: &str) -> Result<Request, String> {
    if !raw.starts_with('/') {
        return Err(format!(
            "`{raw}` does not start with `/` (nginx answers 400)"
        ));
    }
    if raw.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(format!(
            "`{raw}` contains a space or control character (nginx answers 400)"
        ));
    }
    let (p, args) = match raw.split_once('?') {
        Some((p, a)) => (p, Some(a.to_string())),
        None => (raw, None),
    };
    // A `#` ends the URI for nginx too (fragments are never sent, but be faithful).
    let p = p.split('#').next().unwrap_or("");
    let b = p.as_bytes();
    let mut decoded = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let (Some(h), Some(l)) = (
                b.get(i + 1).copied().and_then(hex),
                b.get(i + 2).copied().and_then(hex),
            ) else {
                return Err(format!(
                    "`{raw}` has an invalid %-escape (nginx answers 400)"
                ));
            };
            let c = h << 4 | l;
            if c == 0 {
                return Err(format!("`{raw}` decodes to a NUL byte (nginx answers 400)"));
            }
            decoded.push(c);
            i += 3;
        } else {
            decoded.push(b[i]);
            i += 1;
        }
    }
    // Merge slashes and resolve dot segments.
    let mut segs: Vec<&[u8]> = Vec::new();
    let trailing = decoded.ends_with(b"/") || decoded.ends_with(b"/.") || decoded.ends_with(b"/..");
    for seg in decoded.split(|&c| c == b'/').skip(1) {
        match seg {
            b"" | b"." => {}
            b".." => {
                if segs.pop().is_none() {
                    return Err(format!(
                        "`{raw}` goes above the root with `..` (nginx answers 400)"
                    ));
                }
            }
            s => segs.push(s),
        }
    }
    let mut path = Vec::with_capacity(decoded.len());
    for s in &segs {
        path.push(b'/');
        path.extend_from_slice(s);
    }
    if path.is_empty() || trailing {
        path.push(b'/');
    }
    Ok(Request {
        raw: raw.to_string(),
        path,
        args,
    })
}

/// `$arg_NAME`: the raw value of the first query argument named `name` (case-insensitive,
/// as `ngx_http_arg`), or None.
pub fn arg<'a>(args: Option<&'a str>, name: &str) -> Option<&'a str> {
    args?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        k.eq_ignore_ascii_case(name).then_some(v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> String {
        parse(s).unwrap().path_str()
    }

    #[test]
    fn normalise() {
        assert_eq!(
            p("/_matrix/client/v3/rooms/%21abc%3Aexample.org/send"),
            "/_matrix/client/v3/rooms/!abc:example.org/send"
        );
        assert_eq!(p("//a///b/"), "/a/b/");
        assert_eq!(p("/a/./b/../c"), "/a/c");
        assert_eq!(p("/a%2Fb"), "/a/b");
        assert_eq!(p("/a/%2e%2e/b"), "/b");
        assert_eq!(p("/a/b/.."), "/a/");
        assert_eq!(p("/"), "/");
        let r = parse("/x?a=1&B=%3A").unwrap();
        assert_eq!(r.args.as_deref(), Some("a=1&B=%3A"));
        assert_eq!(arg(r.args.as_deref(), "b"), Some("%3A"));
        assert!(parse("/a/../..").is_err());
        assert!(parse("/a%zz").is_err());
        assert!(parse("/a%00").is_err());
    }
}
