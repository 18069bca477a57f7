//! Routing verified against real nginx: the upstream nginx chose for each request (the
//! `$upstream_addr` field of the book's access log format) against the server the routing
//! simulator predicts for the same method and raw URI.

use super::client::Sent;
use super::docker::Compose;
use super::report::{Report, Step};
use crate::tree::Tree;
use std::time::Instant;

/// One access log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub method: String,
    pub uri: String,
    pub status: Option<u16>,
    /// The last upstream tried (`unix:/sockets/x_http.sock`), None for `-` (not proxied).
    pub upstream: Option<String>,
}

/// Parses an access log line: the quoted request line (`"GET /x HTTP/1.1"`), the status that
/// follows it, and the upstream address (a `unix:` path or `host:port`; with retries nginx
/// writes `a, b` and the last one answered).
pub fn parse_line(line: &str) -> Option<LogLine> {
    // nginx's error log shares the container's output: `2026/11/27 15:00:00 [error] ...`
    let b = line.as_bytes();
    if b.len() > 21 && b[4] == b'/' && b[7] == b'/' && b[13] == b':' && b[20] == b'[' {
        return None;
    }
    let q = line.find('"')?;
    let rest = &line[q + 1..];
    let end = rest.find('"')?;
    let mut parts = rest[..end].split(' ');
    let method = parts.next()?.to_string();
    let uri = parts.next()?.to_string();
    if !method.chars().all(|c| c.is_ascii_uppercase()) || method.is_empty() {
        return None;
    }
    let after = &rest[end + 1..];
    let status = after
        .split_whitespace()
        .find_map(|t| t.parse::<u16>().ok().filter(|s| (100..600).contains(s)));
    let upstream = after
        .split(|c: char| c.is_whitespace() || c == ',' || c == '"' || c == '=')
        .filter(|t| {
            t.starts_with("unix:")
                || (t.contains(':')
                    && t.split(':')
                        .next_back()
                        .is_some_and(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
                    && t.chars().next().is_some_and(|c| c.is_ascii_digit()))
        })
        .map(|t| t.trim_end_matches(':').to_string())
        .next_back();
    Some(LogLine {
        method,
        uri,
        status,
        upstream,
    })
}

/// What the book's access log format writes for a request URI: the URI itself, or the path and
/// `?<redacted>` when the query string may hold an access token (nginx's
/// `$loggable_request_uri`, in `maps.conf`).
pub const REDACTED_QUERY: &str = "?<redacted>";

/// Whether the access log's `logged` URI is the line of a request sent as `sent`: the same, or
/// the same path with the query string redacted.
pub fn logged_as(logged: &str, sent: &str) -> bool {
    logged == sent
        || logged
            .strip_suffix(REDACTED_QUERY)
            .is_some_and(|path| sent.split_once('?').is_some_and(|(p, _)| p == path))
}

/// nginx's access log: what the nginx service wrote to its output (the official image links
/// `/var/log/nginx/access.log` to stdout), from a mark on.
pub struct NginxLog<'a> {
    compose: &'a Compose,
    service: String,
    skip: usize,
}

impl<'a> NginxLog<'a> {
    /// Marks the current end of the service's output: [`Self::read`] returns what follows.
    pub fn mark(compose: &'a Compose, service: &str) -> Self {
        let mut l = NginxLog {
            compose,
            service: service.to_string(),
            skip: 0,
        };
        l.skip = l.lines().len();
        l
    }
    fn lines(&self) -> Vec<String> {
        self.compose
            .logs(&self.service)
            .map(|t| t.lines().map(String::from).collect())
            .unwrap_or_default()
    }
    /// The access log lines written since the mark.
    pub fn read(&self) -> Vec<LogLine> {
        self.lines()
            .iter()
            .skip(self.skip)
            .filter_map(|l| parse_line(l))
            .collect()
    }
}

/// The service running the Synapse process behind an upstream address
/// (`unix:/sockets/rooms2_http.sock`), from the book's models: the process whose listener binds
/// that socket ([`crate::synapse`]), then the Compose service started with its config
/// ([`crate::compose`]).
pub fn service_of_upstream(s: &super::Stack, upstream: &str) -> Option<String> {
    let deployment = crate::synapse::Deployment::from_tree(&s.tree).ok()??;
    let compose = crate::compose::Compose::from_tree(&s.tree)?;
    let (process, _) = deployment.by_socket(upstream)?;
    deployment
        .service_of(&compose, process)
        .map(|svc| svc.name.clone())
}

/// The simulator's answer for (method, uri): the servers nginx may pick (one when the choice
/// is determined, several for round robin; empty for a location that does not proxy).
pub type Predict<'a> = dyn Fn(&str, &str) -> anyhow::Result<Vec<String>> + 'a;

/// The address the test client connects from (what nginx sees as `$remote_addr`).
pub const CLIENT_ADDR: &str = "127.0.0.1";

/// The routing simulator's prediction function for this tree.
pub fn predictor(tree: &Tree) -> Result<Box<Predict<'_>>, String> {
    let router = crate::route::Router::from_tree(tree).map_err(|d| {
        let first = d
            .first()
            .map(|d| format!("{}:{}: {}", d.loc().file, d.loc().line, d.message))
            .unwrap_or_default();
        format!(
            "the routing simulator cannot read the nginx config ({} diagnostics; first: {first})",
            d.len()
        )
    })?;
    Ok(Box::new(move |method: &str, uri: &str| {
        let o = router.route_from(method, uri, CLIENT_ADDR);
        Ok(if o.upstream.is_none() {
            vec![]
        } else if let Some(s) = o.server {
            vec![s]
        } else {
            o.servers
        })
    }))
}

/// The comparison itself: each sent request is matched with its access log line (same method
/// and raw URI, in order), and nginx's upstream compared with the prediction.
pub fn compare(sent: &[Sent], log: &[LogLine], predict: &Predict<'_>) -> super::report::Upstreams {
    let mut up = super::report::Upstreams::default();
    let mut pos = 0;
    for s in sent.iter().filter(|s| s.status.is_some()) {
        if s.during_fault {
            // matched to its log line, but only reported: nginx fails over while a worker is down
            if let Some(off) = log[pos..]
                .iter()
                .position(|l| l.method == s.method && logged_as(&l.uri, &s.uri))
            {
                let line = &log[pos + off];
                pos += off + 1;
                let pred = predict(&s.method, &s.uri).unwrap_or_default();
                up.during_fault.push(format!(
                    "{} {} -> HTTP {} via {} (healthy prediction: {})",
                    s.method,
                    s.uri,
                    line.status.map_or("?".into(), |x| x.to_string()),
                    line.upstream.as_deref().unwrap_or("no upstream"),
                    pred.join(" or ")
                ));
            }
            continue;
        }
        let Some(off) = log[pos..]
            .iter()
            .position(|l| l.method == s.method && logged_as(&l.uri, &s.uri))
        else {
            // A location with `access_log off` (a health endpoint): fine only if it does not proxy.
            match predict(&s.method, &s.uri) {
                Ok(p) if p.is_empty() => up.not_logged.push(format!("{} {}", s.method, s.uri)),
                _ => {
                    up.total += 1;
                    up.unlogged += 1;
                    up.mismatches.push(format!(
                        "{} {}: proxied, but not in nginx's access log",
                        s.method, s.uri
                    ));
                }
            }
            continue;
        };
        let line = &log[pos + off];
        pos += off + 1;
        up.total += 1;
        match predict(&s.method, &s.uri) {
            Ok(pred) if pred.is_empty() && line.upstream.is_none() => up.matched += 1,
            Ok(pred) if line.upstream.as_ref().is_some_and(|u| pred.contains(u)) => up.matched += 1,
            Ok(pred) => up.mismatches.push(format!(
                "{} {}: nginx used {}, the simulator predicts {}",
                s.method,
                s.uri,
                line.upstream.as_deref().unwrap_or("no upstream"),
                if pred.is_empty() {
                    "no upstream".to_string()
                } else {
                    pred.join(" or ")
                }
            )),
            Err(e) => up
                .mismatches
                .push(format!("{} {}: simulator error: {e:#}", s.method, s.uri)),
        }
    }
    up
}

/// How long a proxied request's access log line may take to appear. nginx writes it in the log
/// phase, after the response went out, so the client can see the response first.
pub const LOG_LINE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// [`compare`] once every proxied request's line is in the log: reads the log (with `read`)
/// again while some request that nginx must have logged is still missing, up to
/// `deadline` ([`LOG_LINE_DEADLINE`] in the stack test). A line still missing after that is reported as a mismatch.
pub fn compare_when_logged(
    sent: &[Sent],
    predict: &Predict<'_>,
    deadline: std::time::Duration,
    mut read: impl FnMut() -> Vec<LogLine>,
) -> super::report::Upstreams {
    let t = Instant::now();
    loop {
        let up = compare(sent, &read(), predict);
        if up.unlogged == 0 || t.elapsed() > deadline {
            return up;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// The first line `find` finds in the log, read again until it is there or `deadline` passed.
pub fn wait_for_line(
    deadline: std::time::Duration,
    mut find: impl FnMut() -> Option<LogLine>,
) -> Option<LogLine> {
    let t = Instant::now();
    loop {
        if let Some(l) = find() {
            return Some(l);
        }
        if t.elapsed() > deadline {
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// The report step: read nginx's log from the mark, compare every request the client sent.
pub fn compare_step(tree: &Tree, log: &NginxLog<'_>, sent: &[Sent], report: &mut Report) {
    let t = Instant::now();
    match predictor(tree) {
        Ok(predict) => {
            let up = compare_when_logged(sent, &*predict, LOG_LINE_DEADLINE, || log.read());
            let ok = up.total > 0 && up.matched == up.total;
            let detail = if up.mismatches.is_empty() {
                format!("{}/{} upstreams as predicted", up.matched, up.total)
            } else {
                format!(
                    "{}/{} matched; {}",
                    up.matched,
                    up.total,
                    up.mismatches.join("; ")
                )
            };
            report.upstreams = up;
            report.push(Step::new(
                "nginx's upstream = simulator's prediction, every request",
                ok,
                detail,
                t.elapsed(),
            ));
        }
        Err(why) => {
            report.upstreams.total = sent.len();
            report.push(Step::new(
                "nginx's upstream = simulator's prediction, every request",
                false,
                format!("{why}; nginx logged {} requests", log.read().len()),
                t.elapsed(),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacted_query_strings_match_what_was_sent() {
        let sent = "/_matrix/federation/v1/openid/userinfo?access_token=abc";
        assert!(logged_as(sent, sent));
        assert!(logged_as(
            "/_matrix/federation/v1/openid/userinfo?<redacted>",
            sent
        ));
        assert!(!logged_as("/_matrix/federation/v1/other?<redacted>", sent));
        assert!(!logged_as("/a?<redacted>", "/a"));
    }

    #[test]
    fn log_lines() {
        let l = parse_line(r#"127.0.0.1 "PUT /_matrix/client/v3/rooms/!a:b/send/m.room.message/t1 HTTP/1.1" 200 up=unix:/sockets/rooms2_http.sock rt=0.1"#).unwrap();
        assert_eq!(l.method, "PUT");
        assert_eq!(l.status, Some(200));
        assert_eq!(
            l.upstream.as_deref(),
            Some("unix:/sockets/rooms2_http.sock")
        );
        let l = parse_line(r#"127.0.0.1 - - [27/Nov/2026:15:00:00 +0000] "GET /health HTTP/1.1" 200 3 "-" "curl" upstream="-""#).unwrap();
        assert_eq!((l.uri.as_str(), l.upstream), ("/health", None));
        let l = parse_line(
            r#"x "GET /a HTTP/1.1" 502 up="unix:/sockets/a_http.sock, unix:/sockets/b_http.sock""#,
        )
        .unwrap();
        assert_eq!(l.upstream.as_deref(), Some("unix:/sockets/b_http.sock"));
        assert!(parse_line(r#"2026/11/27 15:19:00 [error] 2009#2009: *116 recv() failed, request: "PUT /x HTTP/1.1", upstream: "http://unix:/s.sock:/x""#).is_none());
        let l = parse_line(r#"x "GET /a HTTP/1.1" 200 up=127.0.0.1:8080"#).unwrap();
        assert_eq!(l.upstream.as_deref(), Some("127.0.0.1:8080"));
    }

    #[test]
    fn compare_pairs_requests_in_order() {
        let sent = vec![
            Sent {
                method: "GET".into(),
                uri: "/a".into(),
                status: Some(200),
                during_fault: false,
            },
            Sent {
                method: "GET".into(),
                uri: "/b".into(),
                status: Some(404),
                during_fault: false,
            },
        ];
        let log = vec![
            LogLine {
                method: "GET".into(),
                uri: "/health".into(),
                status: Some(200),
                upstream: None,
            },
            LogLine {
                method: "GET".into(),
                uri: "/a".into(),
                status: Some(200),
                upstream: Some("unix:/s/x.sock".into()),
            },
            LogLine {
                method: "GET".into(),
                uri: "/b".into(),
                status: Some(404),
                upstream: Some("unix:/s/y.sock".into()),
            },
        ];
        let up = compare(&sent, &log, &|_m: &str, u: &str| {
            Ok(vec![
                if u == "/a" {
                    "unix:/s/x.sock"
                } else {
                    "unix:/s/z.sock"
                }
                .to_string(),
            ])
        });
        assert_eq!((up.matched, up.total), (1, 2));
        assert!(up.mismatches[0].contains("nginx used unix:/s/y.sock"));
    }

    /// The access log line of the last request can land after its response: the comparison
    /// waits for it instead of reporting it missing; a line that never comes is a mismatch.
    #[test]
    fn compare_waits_for_late_log_lines() {
        let sent = vec![Sent {
            method: "POST".into(),
            uri: "/x".into(),
            status: Some(200),
            during_fault: false,
        }];
        let line = LogLine {
            method: "POST".into(),
            uri: "/x".into(),
            status: Some(200),
            upstream: Some("unix:/s/a.sock".into()),
        };
        let predict = |_m: &str, _u: &str| Ok(vec!["unix:/s/a.sock".to_string()]);
        let mut reads = 0;
        let up = compare_when_logged(&sent, &predict, LOG_LINE_DEADLINE, || {
            reads += 1;
            if reads < 3 {
                vec![]
            } else {
                vec![line.clone()]
            }
        });
        assert_eq!((up.matched, up.total, reads), (1, 1, 3), "{up:?}");
        let up = compare_when_logged(
            &sent,
            &predict,
            std::time::Duration::from_millis(200),
            Vec::new,
        );
        assert_eq!((up.matched, up.total, up.unlogged), (0, 1, 1), "{up:?}");
        assert!(up.mismatches[0].contains("not in nginx's access log"));
    }
}
