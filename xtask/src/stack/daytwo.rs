//! What an operator lives with after the first start (issue 16), run against the deployment:
//!
//! - [`prepare_script`]: the downloadable archive (the book's placeholders) does not start, the
//!   book's `prepare.sh` fills it in (server name, secrets from `openssl rand`, a key from
//!   Synapse's `generate_signing_key` in the image), and then it does. Runs before the stack is
//!   up: its one-off containers use the same fixed Compose network.
//! - [`admin_access`]: the admin API answers the host (through the published port) and refuses
//!   another container of the Compose network, even one claiming to be the host.
//! - [`token_redaction`]: a request with `?access_token=SECRET` leaves the secret in no log.
//! - [`limits`]: every long-running container has a memory limit and a bounded log.
//! - [`well_known`]: Synapse's `.well-known` answers through nginx (delegation to port 443).
//! - [`metrics`]: every target of the book's Prometheus configuration answers a scrape once.

use super::docker::{Compose, run_with};
use super::report::{Report, Step};
use super::{COMPOSE_FILE, Stack, http};
use anyhow::{Context, bail, ensure};
use std::path::Path;
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(180);

/// Whether the deployment has the part a day-two check is about: a file of the tree at `path`,
/// or a line of its nginx configuration containing `needle`. A book without it (the test
/// fixture) gets no step for it, rather than a failure about something it never claimed.
fn has_file(s: &Stack, path: &str) -> bool {
    s.tree.files.contains_key(path)
}

fn nginx_mentions(s: &Stack, needle: &str) -> bool {
    s.tree
        .files
        .values()
        .any(|f| f.path.starts_with("nginx/") && f.content.contains(needle))
}

fn compose_mentions(s: &Stack, needle: &str) -> bool {
    s.tree
        .files
        .get(COMPOSE_FILE)
        .is_some_and(|f| f.content.contains(needle))
}

/// The server name the archive check gives `prepare.sh`.
pub const PREPARED_NAME: &str = "example.org";

/// The archive as downloaded: refused by the init container; `prepare.sh`; then accepted.
pub fn prepare_script(s: &Stack, report: &mut Report) {
    if !has_file(s, "prepare.sh") {
        return;
    }
    let t = Instant::now();
    let name = "the archive (placeholders) does not start; prepare.sh fills it in; then it does";
    let dir = s.paths.base.join("archive");
    let compose = Compose {
        project: format!("{}-archive", s.compose.project),
        dir: dir.clone(),
        files: std::iter::once(dir.join(COMPOSE_FILE))
            .chain(s.compose.files.iter().skip(1).cloned())
            .collect(),
    };
    let r = prepare_script_inner(s, &compose);
    let _ = compose.down();
    let _ = super::remove_dir(&dir);
    match r {
        Ok(detail) => report.push(Step::new(name, true, detail, t.elapsed())),
        Err(e) => report.push(Step::new(name, false, format!("{e:#}"), t.elapsed())),
    }
}

fn prepare_script_inner(s: &Stack, compose: &Compose) -> anyhow::Result<String> {
    let tree = crate::extract::assemble(&s.book, &Default::default())
        .map_err(|d| super::diag_error("cannot extract the book", &d))?;
    ensure!(
        tree.get("prepare.sh").is_some(),
        "the book writes no prepare.sh"
    );
    crate::extract::write_tree(&tree, &compose.dir, false)
        .map_err(|d| super::diag_error("cannot write the tree", &d))?;
    let init = init_service(s)?;
    let before = compose.run(&["run", "--rm", &init], TIMEOUT)?;
    ensure!(
        !before.ok,
        "`docker compose run {init}` started on the book's placeholders:\n{}",
        before.text()
    );
    ensure!(
        before.text().contains("placeholders"),
        "`{init}` failed on the placeholders, but not with the guard's message:\n{}",
        super::docker::tail(&before.text(), 10)
    );
    let ran = compose.shell(&format!("sh prepare.sh {PREPARED_NAME}"), None, TIMEOUT)?;
    ensure!(
        ran.ok,
        "sh prepare.sh failed ({:?}):\n{}",
        ran.code,
        super::docker::tail(&ran.text(), 20)
    );
    let mut left = Vec::new();
    for f in &tree.files {
        let path = compose.dir.join(f.0);
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue; // the key note, removed; checked below
        };
        if text.contains(crate::secrets::PLACEHOLDER_MARK) {
            left.push(format!("{} holds a placeholder", f.0));
        }
        if f.0 != "prepare.sh" && text.contains(crate::extract::EXAMPLE_SERVER_NAME) {
            left.push(format!("{} still names the book's server", f.0));
        }
    }
    ensure!(left.is_empty(), "after prepare.sh: {}", left.join("; "));
    let key_rel = format!("synapse/keys/{PREPARED_NAME}.signing.key");
    let key = compose.dir.join(&key_rel);
    let text = std::fs::read_to_string(&key).with_context(|| format!("no key at {key_rel}"))?;
    ensure!(valid_key(&text), "{key_rel} is not a Synapse key: {text:?}");
    let mut modes = Vec::new();
    for f in [".postgres.env", "synapse/homeserver.yaml", key_rel.as_str()] {
        let m = mode(&compose.dir.join(f))?;
        ensure!(m & 0o077 == 0, "{f} has mode {m:o}: others can read it");
        modes.push(format!("{f} {m:o}"));
    }
    let after = compose.run(&["run", "--rm", &init], TIMEOUT)?;
    ensure!(
        after.ok,
        "`{init}` still refuses after prepare.sh:\n{}",
        super::docker::tail(&after.text(), 10)
    );
    Ok(format!(
        "`{init}` refused the archive ({}); prepare.sh {PREPARED_NAME}: no placeholder or \
         example.com left, key {} from generate_signing_key, modes {}; `{init}` then ran",
        before
            .text()
            .lines()
            .find(|l| l.contains("placeholders"))
            .unwrap_or("")
            .trim(),
        text.split_whitespace().nth(1).unwrap_or("?"),
        modes.join(", ")
    ))
}

/// `ed25519 a_XXXX <43 characters of unpadded base64: a 32-byte seed>`, one line.
fn valid_key(text: &str) -> bool {
    use base64::Engine as _;
    let w: Vec<&str> = text.split_whitespace().collect();
    w.len() == 3
        && w[0] == "ed25519"
        && w[1].starts_with("a_")
        && base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(w[2])
            .is_ok_and(|b| b.len() == 32)
}

fn mode(p: &Path) -> anyhow::Result<u32> {
    use std::os::unix::fs::PermissionsExt;
    Ok(std::fs::metadata(p)
        .with_context(|| format!("{}", p.display()))?
        .permissions()
        .mode()
        & 0o777)
}

/// The one-shot service every other one waits for: the one with a restart policy of "no" that
/// mounts the Synapse data directory.
fn init_service(s: &Stack) -> anyhow::Result<String> {
    s.model
        .services
        .iter()
        .find(|(n, svc)| svc.restart.as_deref() == Some("no") && n.starts_with("init"))
        .map(|(n, _)| n.clone())
        .context("no init service in the Compose file")
}

/// The main Synapse process's service.
fn main_service(s: &Stack) -> Option<String> {
    s.synapse_services().into_iter().find(|n| {
        s.model.services[n]
            .synapse_module()
            .is_some_and(|m| m == "synapse.app.homeserver")
    })
}

/// The admin API: 200 from the host (the published port) and from the main process's container
/// (where the book runs `register_new_matrix_user`), 403 from another container of the Compose
/// network, with and without a forged `X-Forwarded-For`.
pub fn admin_access(s: &Stack, addr: &str, report: &mut Report) {
    if !nginx_mentions(s, "/_synapse/admin") {
        return;
    }
    let t = Instant::now();
    let name = "admin API: the host and the main container get in, another container gets 403";
    let r = (|| -> anyhow::Result<String> {
        let path = "/_synapse/admin/v1/server_version";
        let host = http::request(addr, "GET", path, &[], None, Duration::from_secs(30))?;
        ensure!(
            host.status == 200,
            "from the host: HTTP {} (expected 200)",
            host.status
        );
        let main = main_service(s).context("no main Synapse service")?;
        let other = s
            .synapse_services()
            .into_iter()
            .find(|n| n != &main)
            .context("no Synapse worker service")?;
        let nginx = s.nginx_service().context("no nginx service")?;
        let port = s.model.services[&nginx]
            .published()
            .first()
            .map(|(_, p)| *p)
            .context("nginx publishes no port")?;
        let url = format!("http://{nginx}:{port}{path}");
        let code = |from: &str, forged: Option<&str>| -> anyhow::Result<String> {
            let mut argv = vec!["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}"];
            let h = forged.map(|ip| format!("X-Forwarded-For: {ip}"));
            if let Some(h) = &h {
                argv.extend(["-H", h.as_str()]);
            }
            argv.push(&url);
            Ok(s.compose
                .exec(from, &argv, &[], None, TIMEOUT)?
                .stdout
                .trim()
                .to_string())
        };
        let from_main = code(&main, None)?;
        ensure!(
            from_main == "200",
            "from `{main}`: HTTP {from_main} (expected 200: the book runs register_new_matrix_user there)"
        );
        let mut got = Vec::new();
        for forged in [None, Some("127.0.0.1"), Some("172.31.253.1")] {
            let c = code(&other, forged)?;
            ensure!(
                c == "403",
                "from `{other}` ({}): HTTP {c} (expected 403)",
                forged.map_or("no header".to_string(), |ip| format!("claiming {ip}"))
            );
            got.push(c);
        }
        Ok(format!(
            "host 200; `{main}` 200; `{other}` via {url}: {} (plain, X-Forwarded-For 127.0.0.1, X-Forwarded-For of the gateway)",
            got.join(", ")
        ))
    })();
    match r {
        Ok(d) => report.push(Step::new(name, true, d, t.elapsed())),
        Err(e) => report.push(Step::new(name, false, format!("{e:#}"), t.elapsed())),
    }
}

/// Sends alice's real token in the query string (and with a percent-encoded parameter name,
/// which Synapse decodes), then looks for it in every container's output and in Synapse's log
/// files: it must be in none.
pub fn token_redaction(s: &Stack, addr: &str, token: &str, report: &mut Report) {
    if !nginx_mentions(s, "access_token") {
        return;
    }
    let t = Instant::now();
    let name = "a request with ?access_token= leaves the token in no log";
    let r = (|| -> anyhow::Result<String> {
        let mut statuses = Vec::new();
        for key in ["access_token", "access%5Ftoken"] {
            let uri = format!("/_matrix/client/v3/account/whoami?{key}={token}");
            let resp = http::request(addr, "GET", &uri, &[], None, Duration::from_secs(30))?;
            statuses.push(format!("{key}: HTTP {}", resp.status));
            ensure!(
                resp.status == 200,
                "GET whoami?{key}=…: HTTP {} (Synapse should accept the token there)",
                resp.status
            );
        }
        // Let nginx and Synapse write their lines.
        std::thread::sleep(Duration::from_secs(2));
        let mut found = Vec::new();
        let mut redacted = 0;
        let mut searched = 0;
        for svc in s.model.services.keys() {
            let Ok(text) = s.compose.logs(svc) else {
                continue;
            };
            searched += 1;
            redacted += text
                .lines()
                .filter(|l| l.contains("/account/whoami?<redacted>"))
                .count();
            if text.contains(token) {
                found.push(format!("the output of `{svc}`"));
            }
        }
        let dir = s.compose.dir.join("synapse/logs");
        let mut files = 0;
        for e in std::fs::read_dir(&dir).with_context(|| format!("{}", dir.display()))? {
            let p = e?.path();
            let Ok(text) = std::fs::read_to_string(&p) else {
                continue;
            };
            files += 1;
            if text.contains(token) {
                found.push(format!("{}", p.display()));
            }
        }
        ensure!(found.is_empty(), "the token is in {}", found.join(", "));
        ensure!(
            redacted >= 2,
            "nginx logged {redacted} redacted whoami requests (expected 2): was the request logged at all?"
        );
        Ok(format!(
            "{}; the token is in none of {searched} services' output and {files} Synapse log files; \
             nginx logged both as /account/whoami?<redacted>",
            statuses.join(", ")
        ))
    })();
    match r {
        Ok(d) => report.push(Step::new(name, true, d, t.elapsed())),
        Err(e) => report.push(Step::new(name, false, format!("{e:#}"), t.elapsed())),
    }
}

/// Every container of the project: a bounded log (json-file with max-size); every long-running
/// one: a memory limit.
pub fn limits(s: &Stack, report: &mut Report) {
    if !compose_mentions(s, "mem_limit") && !compose_mentions(s, "max-size") {
        return;
    }
    let t = Instant::now();
    let name = "every container has a rotated log, every long-running one a memory limit";
    let r = (|| -> anyhow::Result<String> {
        let servers = s.servers();
        let mut bad = Vec::new();
        let mut caps: std::collections::BTreeMap<u64, Vec<String>> = Default::default();
        let mut logs = std::collections::BTreeSet::new();
        let containers = s.compose.ps()?;
        ensure!(!containers.is_empty(), "no container");
        for c in &containers {
            let out = docker(&[
                "inspect",
                "--format",
                "{{.HostConfig.Memory}}|{{.HostConfig.LogConfig.Type}}|{{index .HostConfig.LogConfig.Config \"max-size\"}}|{{index .HostConfig.LogConfig.Config \"max-file\"}}",
                &c.id,
            ])?;
            let f: Vec<&str> = out.trim().split('|').collect();
            let mem: u64 = f.first().and_then(|x| x.parse().ok()).unwrap_or(0);
            let (driver, size, count) = (
                f.get(1).copied().unwrap_or(""),
                f.get(2).copied().unwrap_or(""),
                f.get(3).copied().unwrap_or(""),
            );
            let rotated = matches!(driver, "local" | "journald")
                || (driver == "json-file" && !size.is_empty() && size != "<no value>");
            if !rotated {
                bad.push(format!(
                    "{}: log driver {driver} without max-size",
                    c.service
                ));
            } else {
                logs.insert(format!("{driver} max-size {size} max-file {count}"));
            }
            if servers.contains(&c.service) {
                if mem == 0 {
                    bad.push(format!("{}: no memory limit", c.service));
                } else {
                    caps.entry(mem >> 20).or_default().push(c.service.clone());
                }
            }
        }
        ensure!(bad.is_empty(), "{}", bad.join("; "));
        let caps: Vec<String> = caps
            .iter()
            .map(|(mib, svcs)| format!("{mib} MiB x{} ({})", svcs.len(), svcs.join(" ")))
            .collect();
        Ok(format!(
            "{} containers; logs: {}; memory caps: {}",
            containers.len(),
            logs.into_iter().collect::<Vec<_>>().join(", "),
            caps.join("; ")
        ))
    })();
    match r {
        Ok(d) => report.push(Step::new(name, true, d, t.elapsed())),
        Err(e) => report.push(Step::new(name, false, format!("{e:#}"), t.elapsed())),
    }
}

/// Every target of the book's Prometheus configuration, scraped once from inside the Compose
/// network (the main process's container, with its `curl`); every Synapse service among them;
/// every metric the alert rules name present in what they export.
pub fn metrics(s: &Stack, report: &mut Report) {
    if crate::lint::prometheus::configs(&s.tree).is_empty() {
        return;
    }
    let t = Instant::now();
    let name = "every Prometheus target answers a scrape; every metric of the alert rules exists";
    let r = (|| -> anyhow::Result<String> {
        let configs = crate::lint::prometheus::configs(&s.tree);
        let cfg = configs
            .first()
            .context("the book has no Prometheus configuration")?;
        let root = cfg
            .yaml_root()
            .context("the Prometheus configuration is not YAML")?;
        let targets: Vec<String> = crate::lint::prometheus::targets(cfg)
            .into_iter()
            .map(|(t, _)| t)
            .collect();
        let hosts: std::collections::BTreeSet<&str> =
            targets.iter().filter_map(|t| t.split(':').next()).collect();
        let missing: Vec<String> = s
            .synapse_services()
            .into_iter()
            .filter(|svc| !hosts.contains(svc.as_str()))
            .collect();
        ensure!(
            missing.is_empty(),
            "Synapse services that are no target: {}",
            missing.join(", ")
        );
        let path = root
            .get("scrape_configs")
            .and_then(|j| j.items().first())
            .and_then(|j| j.get("metrics_path"))
            .and_then(|n| n.as_str())
            .unwrap_or("/metrics")
            .to_string();
        let from = main_service(s).context("no main Synapse service")?;
        let mut all = String::new();
        let mut series = 0;
        for target in &targets {
            let url = format!("http://{target}{path}");
            let r = s
                .compose
                .exec(&from, &["curl", "-fsS", &url], &[], None, TIMEOUT)?;
            ensure!(
                r.ok && r.stdout.contains("process_resident_memory_bytes"),
                "{url} from `{from}`: {}",
                super::docker::tail(&r.text(), 5)
            );
            series += r.stdout.lines().filter(|l| !l.starts_with('#')).count();
            all.push_str(&r.stdout);
        }
        // The metric names of the rules' expressions.
        let dir = Path::new(&cfg.path).parent().unwrap_or(Path::new(""));
        let mut names = std::collections::BTreeSet::new();
        let re = regex::Regex::new(r"\b((?:synapse|process|python)_[a-z0-9_]+)").expect("regex");
        for rf in root
            .get("rule_files")
            .map(|n| n.str_list())
            .unwrap_or_default()
        {
            let p = dir.join(rf).to_string_lossy().into_owned();
            let f = s
                .tree
                .get(&p)
                .with_context(|| format!("rule file {p} is not in the tree"))?;
            let rr = f.yaml_root().context("rule file is not YAML")?;
            for g in rr.get("groups").map_or(&[][..], |n| n.items()) {
                for rule in g.get("rules").map_or(&[][..], |n| n.items()) {
                    if let Some(e) = rule.get("expr").and_then(|n| n.as_str()) {
                        for c in re.captures_iter(e) {
                            names.insert(c[1].to_string());
                        }
                    }
                }
            }
        }
        let absent: Vec<&String> = names
            .iter()
            .filter(|n| {
                !all.lines()
                    .any(|l| l.starts_with(&format!("{n}{{")) || l.starts_with(&format!("{n} ")))
            })
            .collect();
        ensure!(
            absent.is_empty(),
            "metrics the alert rules use but no process exports: {absent:?}"
        );
        Ok(format!(
            "{} targets ({}) scraped from `{from}`: {series} samples; the rules' metrics all exported: {}",
            targets.len(),
            targets.join(" "),
            names.into_iter().collect::<Vec<_>>().join(", ")
        ))
    })();
    match r {
        Ok(d) => report.push(Step::new(name, true, d, t.elapsed())),
        Err(e) => report.push(Step::new(name, false, format!("{e:#}"), t.elapsed())),
    }
}

/// What Synapse answers through nginx for the two `.well-known` files: the delegation to
/// `public_baseurl`'s host on port 443, and the client's base URL.
pub fn well_known(s: &Stack, addr: &str, report: &mut Report) {
    if !nginx_mentions(s, ".well-known/matrix") {
        return;
    }
    let t = Instant::now();
    let name = ".well-known/matrix/server and /client name public_baseurl (delegation to port 443)";
    let r = (|| -> anyhow::Result<String> {
        let shared = s
            .tree
            .files
            .values()
            .find_map(|f| {
                let root = f.yaml_root()?;
                root.get("public_baseurl")?.as_str().map(String::from)
            })
            .context("no public_baseurl in the Synapse configuration")?;
        let host = shared
            .trim_start_matches("https://")
            .trim_end_matches('/')
            .to_string();
        let server = http::request(
            addr,
            "GET",
            "/.well-known/matrix/server",
            &[],
            None,
            Duration::from_secs(30),
        )?;
        let m_server = server.json()["m.server"].as_str().unwrap_or("").to_string();
        ensure!(
            server.status == 200 && m_server == format!("{host}:443"),
            "/.well-known/matrix/server: HTTP {} {:?} (expected m.server {host}:443)",
            server.status,
            server.text()
        );
        let client = http::request(
            addr,
            "GET",
            "/.well-known/matrix/client",
            &[],
            None,
            Duration::from_secs(30),
        )?;
        let base = client.json()["m.homeserver"]["base_url"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let cors = client.header("Access-Control-Allow-Origin").unwrap_or("");
        ensure!(
            client.status == 200 && base == shared,
            "/.well-known/matrix/client: HTTP {} {:?} (expected base_url {shared})",
            client.status,
            client.text()
        );
        Ok(format!(
            "m.server {m_server}; m.homeserver.base_url {base}; Access-Control-Allow-Origin {cors:?}"
        ))
    })();
    match r {
        Ok(d) => report.push(Step::new(name, true, d, t.elapsed())),
        Err(e) => report.push(Step::new(name, false, format!("{e:#}"), t.elapsed())),
    }
}

/// Runs `docker ARGS` (not compose) and returns stdout, failing on a non-zero status.
fn docker(args: &[&str]) -> anyhow::Result<String> {
    let mut c = std::process::Command::new("docker");
    c.args(args);
    let r = run_with(c, None, Duration::from_secs(60))?;
    if !r.ok {
        bail!("docker {} failed: {}", args.join(" "), r.text().trim());
    }
    Ok(r.stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        assert!(valid_key(
            "ed25519 a_AbCd AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n"
        ));
        assert!(!valid_key(crate::secrets::KEY_PLACEHOLDER));
        assert!(!valid_key("ed25519 a_x AAAA\n"));
    }
}
