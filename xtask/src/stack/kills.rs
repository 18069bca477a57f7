//! Every kind of process killed once: each long-running service's process 1 is sent SIGKILL
//! from the host (as the kernel's out-of-memory killer would), while the client keeps sending
//! messages; Docker's restart policy must bring it back to healthy on its own. For each: how
//! long until healthy, what the client got meanwhile, and whether any message it sent is
//! missing or doubled once the failed sends are retried with their transaction ids.

use super::Stack;
use super::checks::{Window, now};
use super::client::{self, Client, State};
use super::report::{Report, Step};
use anyhow::{Context, ensure};
use std::time::{Duration, Instant};

/// How long a killed service has to be healthy again.
const BACK_DEADLINE: Duration = Duration::from_secs(120);

pub use super::report::Kill;

/// The services to kill, each with the kind it stands for: one per kind of Synapse process
/// (by name without its number; the room worker that serves the test room), and every other
/// long-running service.
pub fn victims(s: &Stack, room_worker: Option<&str>) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let servers = s.servers();
    let synapse = s.synapse_services();
    for name in &servers {
        if synapse.contains(name) {
            let module = s.model.services[name].synapse_module().unwrap_or_default();
            let kind = if module == "synapse.app.homeserver" {
                "main process".to_string()
            } else {
                format!(
                    "{} worker",
                    name.trim_end_matches(|c: char| c.is_ascii_digit())
                )
            };
            let is_rooms = kind == "rooms worker";
            if is_rooms && room_worker.is_some_and(|r| r != name) {
                continue;
            }
            if out.iter().any(|(_, k)| *k == kind) {
                continue;
            }
            let kind = if is_rooms {
                "rooms worker (serving the test room)".to_string()
            } else {
                kind
            };
            out.push((name.clone(), kind));
        } else {
            let img = s
                .images
                .iter()
                .find(|i| i.services.contains(name))
                .map(|i| super::image_name(&i.official).to_string())
                .unwrap_or_default();
            out.push((name.clone(), img));
        }
    }
    out
}

/// Kills every victim in turn; returns the windows whose log errors are the kills' doing.
pub fn kill_table(c: &mut Client, s: &Stack, st: &mut State, report: &mut Report) -> Vec<Window> {
    let t = Instant::now();
    let log = super::routing::NginxLog::mark(&s.compose, &nginx_service(s));
    // Which worker serves the room, according to nginx itself.
    let room_up = (|| -> anyhow::Result<String> {
        let b = format!("before the kills {}", crate::secrets::random_token(4));
        client::send_text(c, &st.alice, &st.room_id, &b)?;
        st.sent_bodies.push(b);
        super::routing::wait_for_line(super::routing::LOG_LINE_DEADLINE, || {
            log.read()
                .into_iter()
                .rev()
                .find(|l| l.method == "PUT" && l.uri.contains("/send/"))
        })
        .and_then(|l| l.upstream)
        .context("nginx logged no upstream for the send")
    })();
    let room_up = match room_up {
        Ok(u) => u,
        Err(e) => {
            report.push(Step::fail(
                "kill each kind of process",
                format!("{e:#}"),
                0.0,
            ));
            return vec![];
        }
    };
    let room_worker = super::routing::service_of_upstream(s, &room_up);
    let mut windows = Vec::new();
    let mut rows = Vec::new();
    for (svc, kind) in victims(s, room_worker.as_deref()) {
        let from = now();
        let tk = Instant::now();
        let is_room = room_worker.as_deref() == Some(svc.as_str());
        let row = kill_one(c, s, st, &svc, &kind, is_room.then_some(room_up.as_str()));
        c.in_fault = false;
        windows.push(Window {
            from,
            to: now() + 1.0,
        });
        let ok = row.came_back && row.lost == 0 && row.doubled == 0 && row.error.is_none();
        let detail = match &row.error {
            Some(e) => e.clone(),
            None => format!(
                "healthy again after {:.1} s ({} restart(s)); client got {}; {} retried; {} lost",
                row.seconds_to_healthy.unwrap_or(f64::NAN),
                row.restarts,
                if row.failed.is_empty() {
                    "no error".to_string()
                } else {
                    row.failed.clone()
                },
                row.retried,
                row.lost
            ),
        };
        report.push(Step::new(
            format!("kill -9 {svc} ({kind}): back on its own, nothing lost"),
            ok,
            detail,
            tk.elapsed(),
        ));
        rows.push(row);
    }
    let (_, excused) = super::checks::scan_logs(s, &windows);
    for (row, w) in rows.iter_mut().zip(&windows) {
        row.log_lines = excused.iter().filter(|(t, _)| w.contains(*t)).count();
    }
    eprintln!(
        "stack: kill table done in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    report.kills = rows;
    windows
}

fn nginx_service(s: &Stack) -> String {
    s.nginx_service().unwrap_or_else(|| "nginx".into())
}

fn kill_one(
    c: &mut Client,
    s: &Stack,
    st: &mut State,
    svc: &str,
    kind: &str,
    room_up: Option<&str>,
) -> Kill {
    let mut row = Kill {
        service: svc.to_string(),
        kind: kind.to_string(),
        killed_pid: 0,
        came_back: false,
        restarts: 0,
        seconds_to_healthy: None,
        attempts: 0,
        failed: String::new(),
        retried: 0,
        lost: 0,
        doubled: 0,
        nginx_routes_back_after: None,
        log_lines: 0,
        error: None,
    };
    if let Err(e) = kill_inner(c, s, st, &mut row, room_up) {
        row.error = Some(format!("{e:#}"));
    }
    row
}

fn kill_inner(
    c: &mut Client,
    s: &Stack,
    st: &mut State,
    row: &mut Kill,
    room_up: Option<&str>,
) -> anyhow::Result<()> {
    let svc = row.service.clone();
    let before = s.compose.inspect(&svc)?;
    let probe_health = health_probe(s, &svc);
    c.in_fault = true;
    // A client gives up on a request after a while; so does this one while the service is down.
    c.timeout = Duration::from_secs(10);
    row.killed_pid = s.compose.crash(&svc)?;
    let killed_at = Instant::now();
    let mut statuses: Vec<String> = Vec::new();
    let mut pending: Vec<(String, String)> = Vec::new();
    loop {
        let body = format!(
            "while {svc} is down {} {}",
            row.attempts,
            crate::secrets::random_token(4)
        );
        let txn = c.txn();
        match client::send_text_txn(c, &st.alice, &st.room_id, &body, &txn) {
            Ok(_) => st.sent_bodies.push(body),
            Err(e) => {
                statuses.push(format!("send: {}", short_error(&e)));
                pending.push((txn, body));
            }
        }
        // The other kinds of request, each served by another process.
        for (what, uri) in [
            ("sync", "/_matrix/client/v3/sync?timeout=0".to_string()),
            (
                "media config",
                "/_matrix/client/v1/media/config".to_string(),
            ),
            (
                "federation version",
                "/_matrix/federation/v1/version".to_string(),
            ),
            ("whoami", "/_matrix/client/v3/account/whoami".to_string()),
        ] {
            if let Err(e) = c.ok("GET", &uri, Some(&st.alice.token), None) {
                statuses.push(format!("{what}: {}", short_error(&e)));
            }
        }
        row.attempts += 1;
        let now = s.compose.inspect(&svc)?;
        let back = now.restart_count > before.restart_count && now.running && probe_health();
        if back {
            row.came_back = true;
            row.restarts = now.restart_count - before.restart_count;
            row.seconds_to_healthy = Some(round2(killed_at.elapsed().as_secs_f64()));
            break;
        }
        if killed_at.elapsed() > BACK_DEADLINE {
            row.restarts = now.restart_count - before.restart_count;
            let logs = s.compose.logs(&svc).unwrap_or_default();
            anyhow::bail!(
                "not healthy again {} s after the kill ({} restart(s), {}); its last log lines:\n{}",
                BACK_DEADLINE.as_secs(),
                row.restarts,
                if now.running {
                    "running"
                } else {
                    "not running"
                },
                super::docker::tail(&logs, 12)
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    c.timeout = Duration::from_secs(60);
    row.failed = summarize(&statuses);
    // What failed is sent again with the SAME transaction ids (idempotent), as a client
    // would; the server may need a moment more (a database reconnecting), so each gets time.
    for (txn, body) in &pending {
        let t = Instant::now();
        loop {
            match client::send_text_txn(c, &st.alice, &st.room_id, body, txn) {
                Ok(_) => break,
                Err(e) if t.elapsed() < Duration::from_secs(60) => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(500));
                }
                Err(e) => return Err(e.context("a retried send still fails 60 s later")),
            }
        }
        st.sent_bodies.push(body.clone());
        row.retried += 1;
    }
    c.in_fault = false;
    if let Some(up) = room_up {
        row.nginx_routes_back_after = Some(routes_back(c, s, st, up, killed_at, row)?);
    }
    let after = format!("after killing {svc} {}", crate::secrets::random_token(4));
    client::send_text(c, &st.alice, &st.room_id, &after)?;
    st.sent_bodies.push(after);
    let hist = client::history(c, &st.bob, &st.room_id)?;
    row.lost = st.sent_bodies.iter().filter(|b| !hist.contains(b)).count();
    row.doubled = st
        .sent_bodies
        .iter()
        .filter(|b| hist.iter().filter(|h| h == b).count() > 1)
        .count();
    ensure!(
        row.lost == 0,
        "{} messages missing from the room history",
        row.lost
    );
    Ok(())
}

/// Whether the service's own healthcheck passes now, run with `docker compose exec` rather
/// than waiting for Docker's next scheduled check (up to one `interval` later): the same test,
/// so "healthy" means what the Compose file says it means. A service without a healthcheck is
/// healthy when it runs.
#[allow(clippy::needless_lifetimes)]
fn health_probe<'a>(s: &'a Stack, svc: &'a str) -> impl Fn() -> bool + 'a {
    // The test exactly as Docker runs it (Compose's `$$` escapes already undone).
    let test: Vec<String> = s.compose.healthcheck_test(svc).unwrap_or_default();
    move || {
        let argv: Vec<&str> = match test.first().map(String::as_str) {
            Some("CMD") => test[1..].iter().map(String::as_str).collect(),
            Some("CMD-SHELL") => {
                let mut v = vec!["/bin/sh", "-c"];
                v.extend(test[1..].iter().map(String::as_str));
                v
            }
            _ => return true,
        };
        s.compose
            .exec(svc, &argv, &[], None, Duration::from_secs(30))
            .is_ok_and(|r| r.ok)
    }
}

/// nginx keeps a failed server out for its `fail_timeout` (10 s by default) after the last
/// failure, and each nginx worker process keeps its own count. The last failure is no later
/// than the moment the worker was healthy: wait out the timeout from then, then see nginx send
/// the room to it again. Returns seconds since the kill.
fn routes_back(
    c: &mut Client,
    s: &Stack,
    st: &mut State,
    up: &str,
    killed_at: Instant,
    row: &Kill,
) -> anyhow::Result<f64> {
    let fail_timeout = nginx_fail_timeout(&s.tree);
    let healthy = row.seconds_to_healthy.unwrap_or(0.0);
    let wait_until = Duration::from_secs_f64(healthy + fail_timeout + 1.0);
    if let Some(rest) = wait_until.checked_sub(killed_at.elapsed()) {
        std::thread::sleep(rest);
    }
    while killed_at.elapsed() < Duration::from_secs(180) {
        let log = super::routing::NginxLog::mark(&s.compose, &nginx_service(s));
        let b = format!("probe after the kill {}", crate::secrets::random_token(4));
        client::send_text(c, &st.alice, &st.room_id, &b)?;
        st.sent_bodies.push(b);
        let line = super::routing::wait_for_line(super::routing::LOG_LINE_DEADLINE, || {
            log.read().into_iter().find(|l| l.uri.contains("/send/"))
        });
        if line.and_then(|l| l.upstream).as_deref() == Some(up) {
            return Ok(round2(killed_at.elapsed().as_secs_f64()));
        }
        std::thread::sleep(Duration::from_millis(900));
    }
    anyhow::bail!("nginx never sent the room back to {up} within 180 s of the kill")
}

/// The `fail_timeout` of the nginx config's upstream servers (the largest one given), or
/// nginx's default of 10 s.
fn nginx_fail_timeout(tree: &crate::tree::Tree) -> f64 {
    let re = regex::Regex::new(r"fail_timeout=(\d+)(ms|s|m)?").expect("valid regex");
    tree.files
        .values()
        .filter(|f| f.path.starts_with("nginx/"))
        .flat_map(|f| {
            re.captures_iter(&f.content)
                .map(|c| {
                    let n: f64 = c[1].parse().unwrap_or(10.0);
                    match c.get(2).map(|m| m.as_str()) {
                        Some("ms") => n / 1000.0,
                        Some("m") => n * 60.0,
                        _ => n,
                    }
                })
                .collect::<Vec<_>>()
        })
        .fold(None, |a: Option<f64>, b| Some(a.map_or(b, |a| a.max(b))))
        .unwrap_or(10.0)
}

/// `HTTP 502` for a status error, `connection refused` and the like for the rest.
fn short_error(e: &anyhow::Error) -> String {
    let full = format!("{e:#}");
    // `METHOD URI: what happened`: only what happened (a URI may say `timeout=0`).
    let s = match full.split_once(' ') {
        Some((m, rest)) if m.chars().all(|c| c.is_ascii_uppercase()) => {
            rest.split_once(": ").map_or(rest, |(_, w)| w).to_string()
        }
        _ => full.clone(),
    };
    let low = s.to_lowercase();
    for (needle, short) in [
        ("refused", "connection refused"),
        ("reset", "connection reset"),
        ("timed out", "timeout"),
        ("timeout", "timeout"),
        ("would block", "timeout"),
        ("eof", "connection closed"),
        ("broken pipe", "connection closed"),
    ] {
        if low.contains(needle) {
            return short.into();
        }
    }
    let re = regex::Regex::new(r"HTTP (\d{3})").expect("valid regex");
    if let Some(c) = re.captures(&s) {
        return format!("HTTP {}", &c[1]);
    }
    s.chars().take(60).collect()
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn summarize(statuses: &[String]) -> String {
    let mut counts: std::collections::BTreeMap<&str, usize> = Default::default();
    for s in statuses {
        *counts.entry(s.as_str()).or_default() += 1;
    }
    counts
        .iter()
        .map(|(s, n)| format!("{n}x {s}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_summarised() {
        let e = anyhow::anyhow!("PUT /x: HTTP 502: bad gateway");
        assert_eq!(short_error(&e), "HTTP 502");
        let e = anyhow::anyhow!("connect: Connection refused (os error 111)");
        assert_eq!(short_error(&e), "connection refused");
        let e = anyhow::anyhow!("GET /_matrix/client/v3/sync?timeout=0: HTTP 502 <html>");
        assert_eq!(short_error(&e), "HTTP 502");
        assert_eq!(
            summarize(&["HTTP 502".into(), "HTTP 502".into(), "timeout".into()]),
            "2x HTTP 502, 1x timeout"
        );
    }
}
