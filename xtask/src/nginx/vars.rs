//! nginx "complex values" (`"text $var ${var}text $1"`) and the names of built-in variables.

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    Lit(String),
    /// `$name` / `${name}` (lower-cased as nginx does for lookup).
    Var(String),
    /// `$1`..`$9` (`$0`: the whole match).
    Capture(usize),
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Complex {
    pub parts: Vec<Part>,
}

impl Complex {
    /// Parses a complex value. Errors: `${` without `}`, a `$` with no name.
    pub fn parse(s: &str) -> Result<Complex, String> {
        let b = s.as_bytes();
        let mut parts = Vec::new();
        let mut lit = Vec::new();
        let mut i = 0;
        while i < b.len() {
            if b[i] != b'$' {
                lit.push(b[i]);
                i += 1;
                continue;
            }
            i += 1;
            let name: String;
            if i < b.len() && b[i].is_ascii_digit() {
                if !lit.is_empty() {
                    parts.push(Part::Lit(
                        String::from_utf8_lossy(&std::mem::take(&mut lit)).into_owned(),
                    ));
                }
                parts.push(Part::Capture(usize::from(b[i] - b'0')));
                i += 1;
                continue;
            }
            if i < b.len() && b[i] == b'{' {
                let Some(end) = b[i..].iter().position(|&c| c == b'}') else {
                    return Err(format!(
                        "the closing bracket in \"{s}\" variable is missing"
                    ));
                };
                name = String::from_utf8_lossy(&b[i + 1..i + end]).into_owned();
                i += end + 1;
            } else {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                    i += 1;
                }
                name = String::from_utf8_lossy(&b[start..i]).into_owned();
            }
            if name.is_empty() || !name.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_') {
                return Err(format!("invalid variable name in \"{s}\""));
            }
            if !lit.is_empty() {
                parts.push(Part::Lit(
                    String::from_utf8_lossy(&std::mem::take(&mut lit)).into_owned(),
                ));
            }
            parts.push(Part::Var(name.to_ascii_lowercase()));
        }
        if !lit.is_empty() {
            parts.push(Part::Lit(String::from_utf8_lossy(&lit).into_owned()));
        }
        Ok(Complex { parts })
    }

    pub fn vars(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| {
            if let Part::Var(v) = p {
                Some(v.as_str())
            } else {
                None
            }
        })
    }

    pub fn is_literal(&self) -> bool {
        self.parts.iter().all(|p| matches!(p, Part::Lit(_)))
    }
}

/// Built-in variables of the modules Debian's and the official image's nginx have.
pub const BUILTINS: &[&str] = &[
    "args",
    "binary_remote_addr",
    "body_bytes_sent",
    "bytes_sent",
    "connection",
    "connection_requests",
    "connection_time",
    "content_length",
    "content_type",
    "document_root",
    "document_uri",
    "host",
    "hostname",
    "https",
    "is_args",
    "limit_rate",
    "msec",
    "nginx_version",
    "pid",
    "pipe",
    "proxy_add_x_forwarded_for",
    "proxy_host",
    "proxy_port",
    "proxy_protocol_addr",
    "proxy_protocol_port",
    "query_string",
    "realip_remote_addr",
    "realip_remote_port",
    "realpath_root",
    "remote_addr",
    "remote_port",
    "remote_user",
    "request",
    "request_body",
    "request_body_file",
    "request_completion",
    "request_filename",
    "request_id",
    "request_length",
    "request_method",
    "request_time",
    "request_uri",
    "scheme",
    "server_addr",
    "server_name",
    "server_port",
    "server_protocol",
    "status",
    "time_iso8601",
    "time_local",
    "uri",
    "tcpinfo_rtt",
    "tcpinfo_rttvar",
    "tcpinfo_snd_cwnd",
    "tcpinfo_rcv_space",
    "limit_req_status",
    "limit_conn_status",
    "gzip_ratio",
    "upstream_addr",
    "upstream_status",
    "upstream_response_time",
    "upstream_connect_time",
    "upstream_header_time",
    "upstream_response_length",
    "upstream_bytes_received",
    "upstream_bytes_sent",
    "upstream_cache_status",
    "ssl_protocol",
    "ssl_cipher",
    "ssl_server_name",
    "ssl_session_id",
    "ssl_client_verify",
    "ssl_session_reused",
    "ssl_early_data",
    "http2",
    "realip_remote_addr",
];

/// Prefixes of built-in variable families.
pub const BUILTIN_PREFIXES: &[&str] = &[
    "arg_",
    "http_",
    "cookie_",
    "sent_http_",
    "sent_trailer_",
    "upstream_http_",
    "upstream_cookie_",
    "upstream_trailer_",
];

pub fn is_builtin(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    BUILTINS.contains(&n.as_str())
        || BUILTIN_PREFIXES
            .iter()
            .any(|p| n.starts_with(p) && n.len() > p.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn complex() {
        let c = Complex::parse("a$b_c${D}e$1$").unwrap_err();
        assert!(c.contains("invalid"));
        let c = Complex::parse("a$b_c${D}e$1").unwrap();
        assert_eq!(
            c.parts,
            [
                Part::Lit("a".into()),
                Part::Var("b_c".into()),
                Part::Var("d".into()),
                Part::Lit("e".into()),
                Part::Capture(1)
            ]
        );
        assert!(Complex::parse("${x").is_err());
        assert!(is_builtin("arg_access_token") && is_builtin("request_uri") && !is_builtin("room"));
    }
}
