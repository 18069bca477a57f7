//! `routes` blocks: the book's tables of routing expectations.
//!
//! One request per line, `#` starts a comment, blank lines are ignored:
//!
//! ```text
//! METHOD URI [from ADDRESS] -> UPSTREAM [SERVER]
//! METHOD URI [from ADDRESS] -> STATUS [TEXT]
//! METHOD URI [from ADDRESS] -> unix:/path/of/socket.sock
//! ```
//!
//! `URI` is sent exactly as written (path and query, percent-encoding kept). `from ADDRESS` is
//! the client address (default: a public address, see `router::DEFAULT_CLIENT`). `UPSTREAM` is
//! the `upstream` block the request must be proxied to; `SERVER`, if given, is the server nginx
//! must pick in it, written as the worker name that listens there (`rooms2`) or as the `server`
//! entry (`unix:/sockets/rooms2_http.sock`). `STATUS` is a three-digit status nginx itself
//! answers (`return`, `deny` gives 403, a missing slash 301), optionally with the `return` text
//! or redirect target.
//!
//! This is the one parser of `routes` blocks: `check` asserts the samples, the preprocessor
//! lists them on the routing table page, and the stack test sends them through the real nginx.

use crate::book::{Block, BlockKind, Book};
use crate::diagnostics::{Diagnostic, MdLoc};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    Upstream {
        name: String,
        server: Option<String>,
    },
    Status {
        code: u16,
        text: Option<String>,
    },
    Server(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    pub method: String,
    pub uri: String,
    pub from: Option<String>,
    pub expect: Expect,
    /// What the line expects (right of `->`), as written.
    pub written: String,
    /// The Markdown line of the sample.
    pub loc: MdLoc,
    /// The opening fence of its `routes` block.
    pub block: MdLoc,
}

/// One parsed line: method, URI, client address, expectation.
pub type Line = (String, String, Option<String>, Expect);

/// Parses one line; Ok(None) for blank and comment lines.
pub fn parse_line(line: &str) -> Result<Option<Line>, String> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let Some((lhs, rhs)) = line.split_once("->") else {
        return Err("a routes line is `METHOD URI -> UPSTREAM [SERVER]` or `METHOD URI -> STATUS`: `->` is missing".into());
    };
    let l: Vec<&str> = lhs.split_whitespace().collect();
    let (method, uri, from) = match l.as_slice() {
        [m, u] => (*m, *u, None),
        [m, u, "from", a] => (*m, *u, Some((*a).to_string())),
        _ => {
            return Err(format!(
                "expected `METHOD URI [from ADDRESS]` before `->`, found `{}`",
                lhs.trim()
            ));
        }
    };
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(format!(
            "`{method}` is not an HTTP method (upper case, e.g. GET)"
        ));
    }
    if !uri.starts_with('/') {
        return Err(format!(
            "`{uri}` must start with `/` (the request line's path and query)"
        ));
    }
    if let Some(a) = &from
        && a.parse::<std::net::IpAddr>().is_err()
    {
        return Err(format!("`{a}` is not an IP address"));
    }
    let r: Vec<&str> = rhs.split_whitespace().collect();
    let expect = match r.as_slice() {
        [] => return Err("nothing after `->`: name the upstream or the status".into()),
        [s, rest @ ..] if s.len() == 3 && s.bytes().all(|b| b.is_ascii_digit()) => Expect::Status {
            code: s.parse().unwrap_or(0),
            text: (!rest.is_empty()).then(|| rest.join(" ")),
        },
        [s] if s.starts_with("unix:") => Expect::Server((*s).to_string()),
        [u] => Expect::Upstream {
            name: (*u).to_string(),
            server: None,
        },
        [u, s] => Expect::Upstream {
            name: (*u).to_string(),
            server: Some((*s).to_string()),
        },
        _ => {
            return Err(format!(
                "expected `UPSTREAM [SERVER]` after `->`, found `{}`",
                rhs.trim()
            ));
        }
    };
    Ok(Some((method.to_string(), uri.to_string(), from, expect)))
}

/// Parses a whole `routes` block; each error names its own Markdown line.
pub fn parse_block(block: &Block) -> (Vec<Sample>, Vec<Diagnostic>) {
    let mut samples = Vec::new();
    let mut diags = Vec::new();
    for (i, line) in block.text.lines().enumerate() {
        let loc = block.line_loc(i);
        match parse_line(line) {
            Ok(Some((method, uri, from, expect))) => samples.push(Sample {
                method,
                uri,
                from,
                expect,
                written: line
                    .split_once("->")
                    .map_or("", |(_, r)| r)
                    .trim()
                    .to_string(),
                loc,
                block: block.fence_loc(),
            }),
            Ok(None) => {}
            Err(e) => diags.push(Diagnostic::error("route::bad-sample", e, &loc)),
        }
    }
    (samples, diags)
}

/// Every sample of every `routes` block of the book, in reading order, and the parse errors.
pub fn samples(book: &Book) -> (Vec<Sample>, Vec<Diagnostic>) {
    let mut all = Vec::new();
    let mut diags = Vec::new();
    for b in book.blocks().filter(|b| b.kind == BlockKind::Routes) {
        let (mut s, mut d) = parse_block(b);
        all.append(&mut s);
        diags.append(&mut d);
    }
    (all, diags)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines() {
        assert_eq!(parse_line("  # x").unwrap(), None);
        let (m, u, f, e) = parse_line("PUT /a/%21b?x=1 from 10.0.0.1 -> rooms rooms2")
            .unwrap()
            .unwrap();
        assert_eq!(
            (m.as_str(), u.as_str(), f.as_deref()),
            ("PUT", "/a/%21b?x=1", Some("10.0.0.1"))
        );
        assert_eq!(
            e,
            Expect::Upstream {
                name: "rooms".into(),
                server: Some("rooms2".into())
            }
        );
        assert_eq!(
            parse_line("GET /x -> 403").unwrap().unwrap().3,
            Expect::Status {
                code: 403,
                text: None
            }
        );
        assert_eq!(
            parse_line("GET /x -> unix:/s.sock").unwrap().unwrap().3,
            Expect::Server("unix:/s.sock".into())
        );
        assert!(parse_line("get /x -> a").is_err());
        assert!(parse_line("GET x -> a").is_err());
        assert!(parse_line("GET /x a").is_err());
        assert!(parse_line("GET /x ->").is_err());
        assert!(parse_line("GET /x from nowhere -> a").is_err());
    }
}
