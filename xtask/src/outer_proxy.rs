//! The reader's own reverse proxy in front of the deployment: the tree's `outer-proxy/` files,
//! an nginx site (`server` block for Debian's `sites-enabled/`) and a Caddyfile.
//!
//! What both the lint and the stack test read from them: the body limit in each program's
//! units, the addresses they pass requests to, and the copy of a file the stack test runs on a
//! loopback port with a certificate of its own (everything else as the book gives it).

use crate::tree::Tree;
use anyhow::{bail, ensure};
use std::path::Path;

/// Synapse's shared configuration in the tree.
const HOMESERVER: &str = "synapse/homeserver.yaml";

impl Kind {
    pub const ALL: [Kind; 2] = [Kind::Nginx, Kind::Caddy];
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Nginx,
    Caddy,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::Nginx => "nginx",
            Kind::Caddy => "Caddy",
        }
    }
    /// The tree file holding the book's configuration for this proxy.
    pub fn file(self) -> &'static str {
        match self {
            Kind::Nginx => "outer-proxy/nginx-site.conf",
            Kind::Caddy => "outer-proxy/Caddyfile",
        }
    }
    pub fn program(self) -> &'static str {
        match self {
            Kind::Nginx => "nginx",
            Kind::Caddy => "caddy",
        }
    }
}

/// Replaces `re`'s matches in `text` by `with`; fails unless it matched `min..` times.
fn replace(text: &str, re: &str, with: &str, min: usize, what: &str) -> anyhow::Result<String> {
    let re = regex::Regex::new(re).expect("valid regex");
    let n = re.find_iter(text).count();
    ensure!(n >= min, "the file has no {what}: the test cannot run it");
    Ok(re.replace_all(text, with).into_owned())
}

/// The book's nginx site with its listen addresses and certificate replaced.
pub fn nginx_site(text: &str, port: u16, cert: &Path, key: &Path) -> anyhow::Result<String> {
    let t = replace(
        text,
        r"(?m)^(\s*)listen\s+443(\s[^;]*)?;",
        &format!("${{1}}listen 127.0.0.1:{port}${{2}};"),
        1,
        "`listen 443 ...;`",
    )?;
    let t = replace(
        &t,
        r"(?m)^(\s*)listen\s+\[::\]:443(\s[^;]*)?;",
        "${1}# (IPv6 listen left out by the test)",
        0,
        "IPv6 listen",
    )?;
    let t = replace(
        &t,
        r"(?m)^(\s*)ssl_certificate\s+[^;]+;",
        &format!("${{1}}ssl_certificate {};", cert.display()),
        1,
        "`ssl_certificate`",
    )?;
    replace(
        &t,
        r"(?m)^(\s*)ssl_certificate_key\s+[^;]+;",
        &format!("${{1}}ssl_certificate_key {};", key.display()),
        1,
        "`ssl_certificate_key`",
    )
}

/// The book's Caddyfile with the test's global options, its site on a loopback port with the
/// run's certificate.
pub fn caddyfile(
    text: &str,
    name: &str,
    port: u16,
    cert: &Path,
    key: &Path,
) -> anyhow::Result<String> {
    let site = regex::escape(name);
    let t = replace(
        text,
        &format!(r"(?m)^(https://)?{site}(:443)?\s*\{{"),
        &format!(
            "https://{name}:{port} {{\n\t# (test: loopback only, the run's certificate)\n\tbind 127.0.0.1\n\ttls {} {}",
            cert.display(),
            key.display()
        ),
        1,
        &format!("site block for `{name}`"),
    )?;
    Ok(format!(
        "# (test: no admin endpoint, no certificates from Let's Encrypt, no listener on port 80)\n\
         {{\n\tadmin off\n\tauto_https disable_redirects\n}}\n\n{t}"
    ))
}

/// The body limit the file sets, in bytes (nginx: 1 MiB when it sets none; Caddy: none).
pub fn body_limit(kind: Kind, text: &str) -> anyhow::Result<u64> {
    match kind {
        Kind::Nginx => {
            let re = regex::Regex::new(r"(?m)^\s*client_max_body_size\s+([0-9]+)([kKmMgG]?)\s*;")
                .expect("valid regex");
            let Some(c) = re.captures(text) else {
                return Ok(1024 * 1024);
            };
            let n: u64 = c[1].parse()?;
            Ok(match c[2].to_ascii_lowercase().as_str() {
                "k" => n << 10,
                "m" => n << 20,
                "g" => n << 30,
                _ => n,
            })
        }
        Kind::Caddy => {
            let re = regex::Regex::new(r"(?m)^\s*max_size\s+([0-9]+)\s*([A-Za-z]*)\s*$")
                .expect("valid regex");
            let Some(c) = re.captures(text) else {
                return Ok(u64::MAX);
            };
            let n: u64 = c[1].parse()?;
            // Caddy's sizes: SI for kB/MB/GB, binary for KiB/MiB/GiB.
            let mult: u64 = match c[2].to_ascii_lowercase().as_str() {
                "" | "b" => 1,
                "kb" | "k" => 1000,
                "mb" | "m" => 1000 * 1000,
                "gb" | "g" => 1000 * 1000 * 1000,
                "kib" => 1 << 10,
                "mib" => 1 << 20,
                "gib" => 1 << 30,
                other => bail!("unknown size unit `{other}` in max_size"),
            };
            Ok(n * mult)
        }
    }
}

/// Synapse's `max_upload_size` from the tree's homeserver.yaml, in bytes (its `K`/`M`/`G` are
/// powers of 1024), with its line (None: not set, Synapse's default of 50M applies).
pub fn max_upload_size(tree: &Tree) -> Option<(u64, Option<usize>)> {
    let f = tree.get(HOMESERVER)?;
    let re =
        regex::Regex::new(r#"^max_upload_size:\s*"?([0-9]+)([KMG]?)"?\s*$"#).expect("valid regex");
    for (i, l) in f.content.lines().enumerate() {
        if let Some(c) = re.captures(l) {
            let n: u64 = c[1].parse().ok()?;
            let v = match &c[2] {
                "K" => n << 10,
                "M" => n << 20,
                "G" => n << 30,
                _ => n,
            };
            return Some((v, Some(i + 1)));
        }
    }
    Some((50 << 20, None))
}

/// The `host:port` addresses a file passes requests to, with their lines (1-based).
pub fn upstreams(kind: Kind, text: &str) -> Vec<(String, usize)> {
    let re = match kind {
        Kind::Nginx => regex::Regex::new(r"^\s*proxy_pass\s+https?://([^/;\s]+)[^;]*;"),
        Kind::Caddy => regex::Regex::new(
            r"^\s*reverse_proxy\s+(?:@\S+\s+|/\S*\s+)?(?:https?://)?([0-9A-Za-z.\[\]:-]+:[0-9]+)",
        ),
    }
    .expect("valid regex");
    text.lines()
        .enumerate()
        .filter_map(|(i, l)| re.captures(l).map(|c| (c[1].to_string(), i + 1)))
        .collect()
}

/// The line (1-based) that sets the body limit, if any.
pub fn body_limit_line(kind: Kind, text: &str) -> Option<usize> {
    let key = match kind {
        Kind::Nginx => "client_max_body_size",
        Kind::Caddy => "max_size",
    };
    text.lines()
        .position(|l| l.trim_start().starts_with(key))
        .map(|i| i + 1)
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstreams_of_both_kinds() {
        let n = "    location / {\n        proxy_pass http://127.0.0.1:8008;\n    }\n";
        assert_eq!(
            upstreams(Kind::Nginx, n),
            vec![("127.0.0.1:8008".to_string(), 2)]
        );
        let c = "x {\n\t@m path /_matrix/*\n\treverse_proxy @m 127.0.0.1:8008\n\treverse_proxy /a/* localhost:9000\n}\n";
        assert_eq!(
            upstreams(Kind::Caddy, c),
            vec![
                ("127.0.0.1:8008".to_string(), 3),
                ("localhost:9000".to_string(), 4)
            ]
        );
    }

    #[test]
    fn sizes_follow_each_programs_units() {
        assert_eq!(
            body_limit(Kind::Nginx, "client_max_body_size 100m;").unwrap(),
            100 << 20
        );
        assert_eq!(body_limit(Kind::Nginx, "server {}").unwrap(), 1 << 20);
        assert_eq!(
            body_limit(Kind::Caddy, "\tmax_size 100MiB\n").unwrap(),
            100 << 20
        );
        assert_eq!(
            body_limit(Kind::Caddy, "\tmax_size 100MB\n").unwrap(),
            100_000_000
        );
        assert!(body_limit(Kind::Caddy, "\tmax_size 100MB\n").unwrap() < 100 << 20);
    }

    #[test]
    fn the_site_is_moved_to_loopback_and_a_missing_listen_is_an_error() {
        let site = "server {\n    listen 443 ssl http2;\n    listen [::]:443 ssl http2;\n    ssl_certificate /a;\n    ssl_certificate_key /b;\n}\n";
        let t = nginx_site(site, 4433, Path::new("/c"), Path::new("/k")).unwrap();
        assert!(t.contains("listen 127.0.0.1:4433 ssl http2;"), "{t}");
        assert!(!t.contains("[::]:443"), "{t}");
        assert!(t.contains("ssl_certificate /c;") && t.contains("ssl_certificate_key /k;"));
        let e = nginx_site(
            "server {\n listen 80;\n}\n",
            1,
            Path::new("/c"),
            Path::new("/k"),
        )
        .unwrap_err();
        assert!(format!("{e}").contains("listen 443"), "{e}");
    }

    #[test]
    fn the_caddy_site_gets_the_runs_certificate_and_no_acme() {
        let f = "matrix.example.com {\n\treverse_proxy 127.0.0.1:8008\n}\n";
        let t = caddyfile(
            f,
            "matrix.example.com",
            4433,
            Path::new("/c"),
            Path::new("/k"),
        )
        .unwrap();
        assert!(t.contains("https://matrix.example.com:4433 {"), "{t}");
        assert!(t.contains("tls /c /k") && t.contains("auto_https disable_redirects"));
        assert!(
            caddyfile(
                "other.example {\n}\n",
                "matrix.example.com",
                1,
                Path::new("/c"),
                Path::new("/k")
            )
            .is_err()
        );
    }
}
