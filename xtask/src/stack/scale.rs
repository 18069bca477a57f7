//! Requests reach the workers a variant adds (the book's scale-out recipe).
//!
//! The workers a variant adds are the Synapse processes of its tree that the main tree does not
//! have ([`crate::synapse`]). For each one, the routing simulator finds a request that nginx
//! must send to its HTTP socket, and the test sends it:
//! - a room whose ID nginx's consistent hash gives to that worker: rooms are created until the
//!   simulator puts one there, then a message is sent into it and read back;
//! - a federation transaction from an address whose hash lands there (`$federation_origin`
//!   falls back to the client address when a request carries no `X-Matrix` signature, and nginx
//!   takes the client address from the `X-Forwarded-For` of a proxy it trusts). Synapse refuses
//!   it (401, no signature) after the worker received it.
//!
//! Either way nginx's access log must name the worker's socket as the upstream, and the worker's
//! own log file (its `worker_log_config`'s handler, through the service's bind mount) must show
//! the request as processed.

use super::Stack;
use super::client::{self, Client, State};
use super::http::enc;
use super::report::{Report, Step};
use super::routing::{self, CLIENT_ADDR, LOG_LINE_DEADLINE, NginxLog};
use crate::compose::{Compose, Resolved};
use crate::route::{Outcome, Router};
use crate::synapse::{Deployment, Process};
use crate::tree::Tree;
use anyhow::{Context, bail, ensure};
use serde_json::json;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How many rooms may be created looking for one that hashes to a worker. With five room
/// workers each room has a one-in-five chance: 60 misses in a row happen once in 650,000 runs.
const ROOM_TRIES: usize = 60;

/// The workers of `variant` that `main` does not have, with their HTTP sockets.
pub fn added_workers(main: &Tree, variant: &Tree) -> Vec<(String, Vec<String>)> {
    let (Ok(Some(m)), Ok(Some(v))) = (Deployment::from_tree(main), Deployment::from_tree(variant))
    else {
        return Vec::new();
    };
    v.workers()
        .filter(|w| m.process(&w.name).is_none())
        .map(|w| {
            let socks = w
                .listeners
                .iter()
                .filter(|l| l.is_http())
                .filter_map(|l| l.path.as_ref().map(|p| format!("unix:{p}")))
                .collect();
            (w.name.clone(), socks)
        })
        .collect()
}

/// One step per worker the stack's variant adds: a request the simulator sends there reaches it.
pub fn check(s: &Stack, c: &mut Client, st: &State, report: &mut Report) {
    let main = match crate::extract::assemble(&s.book, &Default::default()) {
        Ok(t) => t,
        Err(d) => {
            report.push(Step::fail(
                "find the workers the variant adds",
                format!("the main tree does not assemble ({} diagnostics)", d.len()),
                0.0,
            ));
            return;
        }
    };
    let added = added_workers(&main, &s.tree);
    if added.is_empty() {
        return;
    }
    let router = match Router::from_tree(&s.tree) {
        Ok(r) => r,
        Err(d) => {
            report.push(Step::fail(
                "requests reach the workers the variant adds",
                format!(
                    "the routing simulator cannot read the nginx config ({} diagnostics)",
                    d.len()
                ),
                0.0,
            ));
            return;
        }
    };
    let Some(nginx) = s.nginx_service() else {
        report.push(Step::fail(
            "requests reach the workers the variant adds",
            "no nginx service",
            0.0,
        ));
        return;
    };
    for (name, socks) in added {
        let t = Instant::now();
        let r = reach(s, &router, &nginx, c, st, &name, &socks);
        report.push(Step::new(
            format!("requests reach {name}, a worker the variant adds"),
            r.is_ok(),
            r.unwrap_or_else(|e| format!("{e:#}")),
            t.elapsed(),
        ));
    }
}

/// Whether the simulator's answer `o` proxies to an upstream that has `sock` among its servers.
fn holds(router: &Router, o: &Outcome, sock: &str) -> bool {
    o.upstream
        .as_ref()
        .and_then(|u| router.upstreams.get(u))
        .is_some_and(|u| u.peers.iter().any(|p| p.name == sock))
}

fn send_uri(room: &str, txn: &str) -> String {
    format!(
        "/_matrix/client/v3/rooms/{}/send/m.room.message/{txn}",
        enc(room)
    )
}

/// Sends the requests that must reach worker `name`; the detail of its step.
fn reach(
    s: &Stack,
    router: &Router,
    nginx: &str,
    c: &mut Client,
    st: &State,
    name: &str,
    socks: &[String],
) -> anyhow::Result<String> {
    let logs = log_files(s, name)?;
    let mut done = Vec::new();
    for sock in socks {
        if holds(
            router,
            &router.route_from("PUT", &send_uri("!probe:example.com", "t"), CLIENT_ADDR),
            sock,
        ) {
            done.push(by_room(s, router, nginx, c, st, sock, &logs)?);
        }
        let fed = "/_matrix/federation/v1/send/probe";
        if holds(router, &router.route_from("PUT", fed, "198.51.100.1"), sock) {
            done.push(by_origin(s, router, nginx, c, sock, &logs)?);
        }
    }
    ensure!(
        !done.is_empty(),
        "no upstream of nginx that room or federation requests use has {name}'s socket ({}): nginx sends it nothing",
        socks.join(", ")
    );
    Ok(done.join("; "))
}

/// A room whose hash lands on `sock`: a message sent into it and read back, both through it.
fn by_room(
    s: &Stack,
    router: &Router,
    nginx: &str,
    c: &mut Client,
    st: &State,
    sock: &str,
    logs: &[PathBuf],
) -> anyhow::Result<String> {
    let mut room = None;
    for i in 1..=ROOM_TRIES {
        let v = c.ok(
            "POST",
            "/_matrix/client/v3/createRoom",
            Some(&st.alice.token),
            Some(&json!({"name": format!("scale probe {i}"), "preset": "private_chat"})),
        )?;
        let id = v["room_id"].as_str().context("no room_id")?.to_string();
        let o = router.route_from("PUT", &send_uri(&id, "t"), CLIENT_ADDR);
        if o.server.as_deref() == Some(sock) {
            room = Some((id, i));
            break;
        }
    }
    let Some((room, tries)) = room else {
        bail!("none of {ROOM_TRIES} new rooms hashes to {sock}, by the simulator");
    };
    let log = NginxLog::mark(&s.compose, nginx);
    let txn = c.txn();
    let body = format!("scale-out {}", crate::secrets::random_token(6));
    client::send_text_txn(c, &st.alice, &room, &body, &txn)?;
    let before = c.sent.len();
    let history = client::history(c, &st.alice, &room)?;
    let reads = c.sent[before..]
        .iter()
        .filter(|r| r.method == "GET" && r.uri.contains("/messages"))
        .count();
    ensure!(
        history.contains(&body),
        "the message sent into {room} is not in its history"
    );
    let send = routing::wait_for_line(LOG_LINE_DEADLINE, || {
        log.read()
            .into_iter()
            .find(|l| l.method == "PUT" && l.uri.contains(&txn))
    })
    .context("nginx logged no line for the send")?;
    ensure!(
        send.upstream.as_deref() == Some(sock),
        "nginx sent the message to {}, not {sock}",
        send.upstream.as_deref().unwrap_or("no upstream")
    );
    // Every page of the history nginx logged (it writes a line after the response went out).
    let messages = || -> Vec<String> {
        log.read()
            .into_iter()
            .filter(|l| l.method == "GET" && l.uri.contains("/messages"))
            .map(|l| l.upstream.unwrap_or_default())
            .collect()
    };
    let t = Instant::now();
    let read = loop {
        let r = messages();
        if r.len() >= reads || t.elapsed() > LOG_LINE_DEADLINE {
            break r;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    ensure!(
        read.len() == reads && read.iter().all(|u| u == sock),
        "nginx logged {} of the {reads} /messages requests, sent to {}, not all to {sock}",
        read.len(),
        read.join(", ")
    );
    let file = processed(s, logs, &txn)?;
    Ok(format!(
        "room {room} (new room {tries} of up to {ROOM_TRIES}) hashes to {sock}: the message sent \
         and read back ({} /messages) went there by nginx's access log, and {file} shows the send \
         processed",
        read.len()
    ))
}

/// A federation transaction from an address whose hash lands on `sock`.
fn by_origin(
    s: &Stack,
    router: &Router,
    nginx: &str,
    c: &Client,
    sock: &str,
    logs: &[PathBuf],
) -> anyhow::Result<String> {
    let txn = format!("scale{}", crate::secrets::random_token(8));
    let uri = format!("/_matrix/federation/v1/send/{txn}");
    let from = (1..=254)
        .map(|i| format!("198.51.100.{i}"))
        .find(|a| router.route_from("PUT", &uri, a).server.as_deref() == Some(sock))
        .with_context(|| {
            format!("no address of 198.51.100.0/24 hashes to {sock}, by the simulator")
        })?;
    // Its own client: the routing comparison of the run predicts from the test's own address.
    let mut fc = Client::new(&c.addr);
    fc.tls = c.tls.clone();
    let log = NginxLog::mark(&s.compose, nginx);
    let r = fc.raw(
        "PUT",
        &uri,
        &[
            ("X-Forwarded-For", from.as_str()),
            ("Content-Type", "application/json"),
        ],
        Some(br#"{"pdus": [], "edus": []}"#),
    )?;
    ensure!(
        r.status == 401,
        "PUT {uri}: HTTP {}, expected Synapse's 401 for a transaction without a signature",
        r.status
    );
    let line = routing::wait_for_line(LOG_LINE_DEADLINE, || {
        log.read().into_iter().find(|l| l.uri == uri)
    })
    .context("nginx logged no line for the transaction")?;
    ensure!(
        line.upstream.as_deref() == Some(sock),
        "nginx sent the transaction to {}, not {sock}",
        line.upstream.as_deref().unwrap_or("no upstream")
    );
    let file = processed(s, logs, &txn)?;
    Ok(format!(
        "a federation transaction from {from} hashes to {sock}: nginx sent it there, Synapse \
         answered 401 (no signature), and {file} shows it processed"
    ))
}

/// The log files worker `name` writes, on the host: the `filename` of each handler of its
/// `worker_log_config`, through its service's bind mounts.
fn log_files(s: &Stack, name: &str) -> anyhow::Result<Vec<PathBuf>> {
    let dep = Deployment::from_tree(&s.tree)
        .ok()
        .flatten()
        .context("the tree has no Synapse deployment")?;
    let p: &Process = dep.process(name).context("no such process")?;
    let compose = Compose::from_tree(&s.tree).context("the tree has no Compose file")?;
    let svc = dep
        .service_of(&compose, p)
        .with_context(|| format!("no Compose service runs {name}"))?;
    let conf = dep
        .effective(p, "worker_log_config")
        .and_then(|n| n.as_str())
        .with_context(|| format!("{name} has no worker_log_config"))?;
    let Resolved::Tree(conf_path) = svc.resolve(conf) else {
        bail!("{name}'s log config {conf} is not a file of the tree");
    };
    let root = s
        .tree
        .get(&conf_path)
        .and_then(|f| f.yaml_root())
        .with_context(|| format!("{conf_path} is not in the tree"))?;
    let mut out = Vec::new();
    for (_, h) in root
        .get("handlers")
        .map(|n| n.entries())
        .unwrap_or_default()
    {
        let Some(f) = h.get("filename").and_then(|f| f.as_str()) else {
            continue;
        };
        if let Resolved::Tree(t) = svc.resolve(f) {
            out.push(s.paths.tree().join(t));
        }
    }
    ensure!(
        !out.is_empty(),
        "{conf_path} writes no file into the deployment's directory"
    );
    Ok(out)
}

/// The first of `files` with a `Processed request` line naming `needle` (waits for Synapse to
/// write it: it logs a request once the response went out). Returns its path in the tree.
fn processed(s: &Stack, files: &[PathBuf], needle: &str) -> anyhow::Result<String> {
    let root = s.paths.tree();
    let shown = |f: &PathBuf| f.strip_prefix(&root).unwrap_or(f).display().to_string();
    let t = Instant::now();
    loop {
        for f in files {
            let text = std::fs::read_to_string(f).unwrap_or_default();
            if text
                .lines()
                .any(|l| l.contains("Processed request") && l.contains(needle))
            {
                return Ok(shown(f));
            }
        }
        if t.elapsed() > LOG_LINE_DEADLINE {
            bail!(
                "no `Processed request` line for {needle} in {}",
                files.iter().map(shown).collect::<Vec<_>>().join(", ")
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scale_variant_adds_two_workers_to_the_book() {
        let book = crate::book::load(&crate::project_root()).expect("the book loads");
        let tree = |v: Option<&str>| {
            crate::extract::assemble(
                &book,
                &crate::extract::Options {
                    variant: v.map(String::from),
                    ..Default::default()
                },
            )
            .expect("the tree assembles")
        };
        let main = tree(None);
        let mut added = added_workers(&main, &tree(Some("scale")));
        added.sort();
        assert_eq!(
            added,
            vec![
                (
                    "federation_reader2".to_string(),
                    vec!["unix:/sockets/federation_reader2_http.sock".to_string()]
                ),
                (
                    "rooms5".to_string(),
                    vec!["unix:/sockets/rooms5_http.sock".to_string()]
                ),
            ]
        );
        assert!(added_workers(&main, &tree(Some("https"))).is_empty());
    }
}
