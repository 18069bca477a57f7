//! The routing contract (`xtask/data/routing-contract.toml`): which kind of Synapse process can
//! serve which endpoint, and the check of one routed request against it.

use super::router::Outcome;
use crate::nginx::pcre::Rx;
use crate::synapse::{Deployment, Process, STREAMS};
use serde::Deserialize;

pub const CONTRACT_TOML: &str = include_str!("../../data/routing-contract.toml");

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Serve {
    Any,
    Writer(String),
    Media,
    Main,
}

impl Serve {
    fn parse(s: &str) -> Result<Serve, String> {
        Ok(match s {
            "any" => Serve::Any,
            "media" => Serve::Media,
            "main" => Serve::Main,
            _ => match s.strip_prefix("writer:") {
                Some(w) if STREAMS.contains(&w) => Serve::Writer(w.into()),
                _ => return Err(format!("unknown `serve` value `{s}`")),
            },
        })
    }

    pub fn describe(&self, d: &Deployment) -> String {
        match self {
            Serve::Any => "main or a generic worker".into(),
            Serve::Media => "a process that can load the media repository".into(),
            Serve::Main => "the main process".into(),
            Serve::Writer(s) => {
                let w = d.writers(s).join(", ");
                format!("the `{s}` stream writer ({w})")
            }
        }
    }

    fn allows(&self, d: &Deployment, p: &Process) -> bool {
        match self {
            Serve::Any => p.is_generic(),
            Serve::Media => p.media_repo,
            Serve::Main => p.is_main(),
            Serve::Writer(s) => d.is_writer(&p.name, s) && p.is_generic(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub family: String,
    pub methods: Vec<String>,
    pub path: Rx,
    pub serve: Serve,
    pub prefer: Option<Serve>,
    pub why: String,
}

#[derive(Deserialize)]
struct RawRule {
    family: String,
    #[serde(default)]
    methods: Vec<String>,
    path: String,
    serve: String,
    prefer: Option<String>,
    why: String,
}

#[derive(Deserialize)]
struct RawContract {
    rule: Vec<RawRule>,
}

#[derive(Debug, Clone)]
pub struct Contract {
    pub rules: Vec<Rule>,
}

impl Contract {
    /// The contract shipped with the tool.
    pub fn builtin() -> Contract {
        Contract::parse(CONTRACT_TOML).expect("xtask/data/routing-contract.toml is valid (tested)")
    }

    pub fn parse(text: &str) -> Result<Contract, String> {
        let raw: RawContract = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut rules = Vec::new();
        for r in raw.rule {
            rules.push(Rule {
                path: Rx::new(&r.path, false).map_err(|e| format!("rule `{}`: {e}", r.family))?,
                serve: Serve::parse(&r.serve)?,
                prefer: r.prefer.as_deref().map(Serve::parse).transpose()?,
                family: r.family,
                methods: r.methods.iter().map(|m| m.to_ascii_uppercase()).collect(),
                why: r.why,
            });
        }
        Ok(Contract { rules })
    }

    /// The first rule for this method and decoded path.
    pub fn rule(&self, method: &str, path: &[u8]) -> Option<&Rule> {
        self.rules.iter().find(|r| {
            (r.methods.is_empty() || r.methods.iter().any(|m| m.eq_ignore_ascii_case(method)))
                && r.path.is_match(path)
        })
    }
}

/// The listener resources that mount a path on a process (synapse/app/generic_worker.py
/// `_listen_http`, and homeserver.py for main). Empty: any HTTP listener.
pub fn resources_for(path: &[u8], main: bool) -> &'static [&'static str] {
    let p = path;
    if p == b"/health" {
        &[]
    } else if p.starts_with(b"/_matrix/client/v1/media/") {
        &["client", "media"]
    } else if p.starts_with(b"/_matrix/federation/v1/media/") {
        &["federation", "media"]
    } else if p.starts_with(b"/_matrix/media/") {
        if main {
            &["media", "client", "federation"]
        } else {
            &["media"]
        }
    } else if is_media_admin(p) {
        &["client", "media"]
    } else if p.starts_with(b"/_matrix/federation/") {
        &["federation"]
    } else if p.starts_with(b"/_matrix/key/") {
        &["federation", "keys"]
    } else if p.starts_with(b"/_synapse/replication/") {
        &["replication"]
    } else if p.starts_with(b"/_synapse/metrics") {
        &["metrics"]
    } else {
        &["client"]
    }
}

/// The admin APIs a `media` listener mounts (synapse/rest/admin/media.py
/// `register_servlets_for_media_repo`).
fn is_media_admin(p: &[u8]) -> bool {
    let Some(rest) = p.strip_prefix(b"/_synapse/admin/v1/") else {
        return false;
    };
    rest.starts_with(b"media/")
        || rest.starts_with(b"quarantine_media/")
        || rest == b"purge_media_cache"
        || ((rest.starts_with(b"room/")
            || rest.starts_with(b"user/")
            || rest.starts_with(b"users/"))
            && rest.windows(6).any(|w| w == b"/media"))
}

/// A finding of [`check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// `route::contract` (cannot serve), `route::not-preferred` (works, extra hop),
    /// `route::unknown-socket` (no Synapse listener on that socket); the registry
    /// (`crate::diagnostics::codes`) rates them.
    pub code: &'static str,
    pub message: String,
}

/// Checks that every process the request may land on can serve it.
pub fn check(contract: &Contract, d: &Deployment, o: &Outcome) -> Vec<Violation> {
    let mut out = Vec::new();
    if o.status.is_some() || o.servers.is_empty() {
        return out;
    }
    let path = o.path.as_bytes();
    let rule = contract.rule(&o.method, path);
    for s in &o.servers {
        let Some((p, l)) = d.by_socket(s) else {
            out.push(Violation {
                code: "route::unknown-socket",
                message: format!(
                    "{} {} goes to `{s}`, which no Synapse listener in the book serves",
                    o.method, o.uri
                ),
            });
            continue;
        };
        let need = resources_for(path, p.is_main());
        if !need.is_empty() && !need.iter().any(|r| l.resources.iter().any(|x| x == r)) {
            out.push(Violation {
                code: "route::contract",
                message: format!(
                    "{} {} lands on `{}` ({s}), whose listener has resources [{}]; this path needs one of [{}] (404 otherwise)",
                    o.method,
                    o.uri,
                    p.name,
                    l.resource_set().into_iter().collect::<Vec<_>>().join(", "),
                    need.join(", ")
                ),
            });
            continue;
        }
        let Some(rule) = rule else { continue };
        if !rule.serve.allows(d, p) {
            out.push(Violation {
                code: "route::contract",
                message: format!(
                    "{} {} lands on `{}`, but {} must be served by {}: {}",
                    o.method,
                    o.uri,
                    p.name,
                    rule.family,
                    rule.serve.describe(d),
                    rule.why
                ),
            });
        } else if let Some(pref) = &rule.prefer
            && !pref.allows(d, p)
        {
            out.push(Violation {
                code: "route::not-preferred",
                message: format!(
                    "{} {} lands on `{}`; it works, but {} is better sent to {}: {}",
                    o.method,
                    o.uri,
                    p.name,
                    rule.family,
                    pref.describe(d),
                    rule.why
                ),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every endpoint family of Synapse's worker documentation
    /// (<https://github.com/element-hq/synapse/blob/develop/docs/workers.md>) and the main-only
    /// registrations, with the kind
    /// of process the contract must require (tests/fixtures/route/contract-samples.txt).
    #[test]
    fn families_of_the_docs() {
        let c = Contract::builtin();
        let text = std::fs::read_to_string(
            crate::project_root().join("tests/fixtures/route/contract-samples.txt"),
        )
        .unwrap();
        let mut bad = Vec::new();
        let mut n = 0;
        for l in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        {
            let w: Vec<&str> = l.split_whitespace().collect();
            let want = Serve::parse(w[2]).unwrap();
            let got = c.rule(w[0], w[1].as_bytes()).map(|r| r.serve.clone());
            n += 1;
            if got.as_ref() != Some(&want) {
                bad.push(format!("{l}: got {got:?}"));
            }
        }
        assert!(n > 140, "{n}");
        assert!(bad.is_empty(), "{}", bad.join("\n"));
    }

    #[test]
    fn builtin_parses_and_orders() {
        let c = Contract::builtin();
        let fam = |m: &str, p: &str| c.rule(m, p.as_bytes()).unwrap().family.clone();
        assert_eq!(
            fam("PUT", "/_matrix/client/v3/rooms/!a:b/typing/@u:b"),
            "typing"
        );
        assert_eq!(fam("GET", "/_matrix/client/v3/pushrules/"), "client reader");
        assert_eq!(
            fam("PUT", "/_matrix/client/v3/pushrules/global/room/!a:b"),
            "push-rules"
        );
        assert_eq!(
            fam("POST", "/_matrix/client/v3/rooms/!a:b/report/$e"),
            "main-only room"
        );
        assert_eq!(fam("GET", "/_matrix/media/v3/download/a/b"), "media");
        assert_eq!(
            fam("GET", "/_matrix/client/v3/rooms/!a:b/messages"),
            "room reads and event sending"
        );
        assert_eq!(
            fam("GET", "/_synapse/admin/v1/users/@a:b/joined_rooms"),
            "main (default)"
        );
        assert_eq!(
            fam("POST", "/_synapse/admin/v1/media/quarantine/a/b"),
            "quarantine"
        );
        assert_eq!(fam("GET", "/_synapse/admin/v1/media/a/b"), "media admin");
        assert_eq!(
            fam(
                "POST",
                "/_matrix/client/unstable/org.matrix.msc4140/delayed_events/d1/cancel"
            ),
            "delayed events (writes)"
        );
        assert_eq!(
            fam(
                "POST",
                "/_matrix/client/unstable/org.matrix.msc4140/delayed_events/d1/restart"
            ),
            "client reader"
        );
        assert_eq!(
            fam("PUT", "/_matrix/client/v3/user/@a:b/rooms/!r:b/tags/u.x"),
            "account data"
        );
        assert_eq!(fam("GET", "/health"), "health");
    }
}
