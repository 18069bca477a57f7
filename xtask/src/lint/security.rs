//! Security checks that are not about nginx:
//!
//! - Synapse's outbound IP range blacklists (`ip_range_blacklist`, the older
//!   `federation_ip_range_blacklist`, and `url_preview_ip_range_blacklist`, which Synapse requires
//!   once `url_preview_enabled` is on) must cover loopback, RFC 1918, CGNAT, link-local and IPv6
//!   ULA ranges; otherwise a remote server or a previewed URL can make Synapse talk to
//!   Redis, PostgreSQL or the admin API on the private network (SSRF). Synapse's own default
//!   (`DEFAULT_IP_RANGE_BLOCKLIST` in `synapse/config/server.py`) covers them, so leaving the key
//!   out is fine; a hand-written list that drops one is not.
//! - A tree extracted with `--secrets generate` holds no placeholder secret (`CHANGEME`).

use super::TreeView;
use crate::diagnostics::Diagnostic;
use crate::tree::Tree;
use std::net::IpAddr;

/// Ranges every outbound blacklist must cover.
pub const REQUIRED_RANGES: &[&str] = &[
    "127.0.0.0/8",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "169.254.0.0/16",
    "::1/128",
    "fe80::/10",
    "fc00::/7",
];

const BLACKLIST_KEYS: &[&str] = &[
    "ip_range_blacklist",
    "federation_ip_range_blacklist",
    "url_preview_ip_range_blacklist",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cidr {
    addr: u128,
    prefix: u32,
    v6: bool,
}

fn parse_cidr(s: &str) -> Option<Cidr> {
    let (a, p) = match s.trim().split_once('/') {
        Some((a, p)) => (a, Some(p.parse::<u32>().ok()?)),
        None => (s.trim(), None),
    };
    let ip: IpAddr = a.parse().ok()?;
    let (addr, bits, v6) = match ip {
        IpAddr::V4(v) => (u128::from(u32::from(v)), 32, false),
        IpAddr::V6(v) => (u128::from(v), 128, true),
    };
    let prefix = p.unwrap_or(bits);
    if prefix > bits {
        return None;
    }
    Some(Cidr { addr, prefix, v6 })
}

impl Cidr {
    fn bits(self) -> u32 {
        if self.v6 { 128 } else { 32 }
    }

    fn mask(self) -> u128 {
        if self.prefix == 0 {
            0
        } else {
            (!0u128 << (self.bits() - self.prefix))
                & if self.v6 {
                    !0u128
                } else {
                    u128::from(u32::MAX)
                }
        }
    }

    /// Whether `self` contains all of `other`.
    fn covers(self, other: Cidr) -> bool {
        self.v6 == other.v6
            && self.prefix <= other.prefix
            && (self.addr & self.mask()) == (other.addr & self.mask())
    }
}

/// Required ranges a list does not cover.
pub fn uncovered(list: &[&str]) -> Vec<&'static str> {
    let have: Vec<Cidr> = list.iter().filter_map(|s| parse_cidr(s)).collect();
    REQUIRED_RANGES
        .iter()
        .filter(|r| {
            let need = parse_cidr(r).expect("constant ranges parse");
            !have.iter().any(|h| h.covers(need))
        })
        .copied()
        .collect()
}

/// Blacklist checks on every Synapse YAML file of the tree.
pub fn check_tree(view: &TreeView<'_>) -> Vec<Diagnostic> {
    let mut diags = Vec::new();
    for path in view.yaml.keys() {
        let Some(root) = view.yaml_root(path) else {
            continue;
        };
        for key in BLACKLIST_KEYS {
            let Some(node) = root.get(key) else { continue };
            let list: Vec<&str> = node.str_nodes().into_iter().map(|(s, _)| s).collect();
            for (s, n) in node.str_nodes() {
                if parse_cidr(s).is_none() {
                    diags.push(Diagnostic::error(
                        "security::bad-ip-range",
                        format!("`{s}` in `{key}` is not an IP address or CIDR range"),
                        &view.loc(path, n.line()),
                    ));
                }
            }
            let missing = uncovered(&list);
            if !missing.is_empty() {
                let line = root.get_key(key).map_or(node.line(), |k| k.line());
                diags.push(Diagnostic::error(
                    "security::ip-blacklist-gap",
                    format!(
                        "`{key}` does not cover {}: Synapse could be made to connect to private or loopback addresses (SSRF)",
                        missing.join(", ")
                    ),
                    &view.loc(path, line),
                ));
            }
        }
        let previews = root
            .get("url_preview_enabled")
            .and_then(|n| n.yaml11_bool())
            == Some(true);
        if previews && root.get("url_preview_ip_range_blacklist").is_none() {
            let line = root.get_key("url_preview_enabled").map_or(1, |k| k.line());
            diags.push(Diagnostic::error(
                "security::no-url-preview-blacklist",
                "`url_preview_enabled` is on but `url_preview_ip_range_blacklist` is not set: Synapse refuses to start, \
                 and the list is what stops previews of internal URLs",
                &view.loc(path, line),
            ));
        }
    }
    diags
}

/// Any placeholder left in a tree extracted with generated secrets
/// ([`crate::secrets::placeholders_left`]).
pub fn placeholders_left(tree: &Tree) -> Vec<Diagnostic> {
    crate::secrets::placeholders_left(tree)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coverage() {
        assert!(uncovered(REQUIRED_RANGES).is_empty());
        assert!(uncovered(&["0.0.0.0/0", "::/0"]).is_empty());
        let m = uncovered(&["127.0.0.0/8", "10.0.0.0/8", "192.168.0.0/16", "::1"]);
        assert!(
            m.contains(&"172.16.0.0/12") && m.contains(&"fc00::/7") && !m.contains(&"10.0.0.0/8")
        );
        assert!(!uncovered(&["127.0.0.1/32"]).is_empty());
    }
}
