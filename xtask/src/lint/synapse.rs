//! Consistency of the Synapse deployment across files (Synapse's worker documentation,
//! <https://element-hq.github.io/synapse/latest/workers.html>):
//!
//! - `stream_writers`: known streams only; exactly one writer for the single-writer streams;
//! - every instance named in `stream_writers`, `instance_map`, `federation_sender_instances`,
//!   `pusher_instances` and the other role keys is `main` or a worker with a worker file (that
//!   `worker_name`) and a Compose service that runs it;
//! - `main` (when there are workers) and every stream writer are in `instance_map`, and each
//!   `instance_map` entry is a `replication` listener of that process at that exact path;
//! - no two listeners share a socket;
//! - a process serving the `media` resource (or running the media background jobs) has the
//!   media repository enabled;
//! - the database socket directory and the Redis socket Synapse uses are the ones PostgreSQL and
//!   Redis are told to listen on, through the same volume;
//! - every log config exists in the tree and writes its files where a volume is mounted.

use super::TreeView;
use super::compose::pg_socket_dirs;
use crate::compose::{Compose, MountKind, Resolved, Service, word_value};
use crate::diagnostics::{Diagnostic, MdLoc};
use crate::synapse::{Deployment, Process};
use crate::synapse::{ROLE_KEYS, SINGLE_WRITER_STREAMS as SINGLE_WRITER, STREAMS};
use crate::yaml::Node;
use std::collections::BTreeMap;

pub fn check(view: &TreeView<'_>) -> Vec<Diagnostic> {
    let Some(syn) = view.synapse() else {
        return Vec::new();
    };
    let mut c = Checker {
        view,
        syn,
        compose: view.compose(),
        diags: Vec::new(),
    };
    c.worker_names();
    c.streams();
    c.roles();
    c.instance_map();
    c.sockets();
    c.media();
    c.redis_enabled();
    c.db_and_redis();
    c.logs();
    c.diags
}

struct Checker<'a> {
    view: &'a TreeView<'a>,
    syn: &'a Deployment,
    compose: Option<&'a Compose>,
    diags: Vec<Diagnostic>,
}

impl<'a> Checker<'a> {
    fn at(&self, file: &str, line: usize) -> MdLoc {
        self.view.loc(file, line)
    }

    fn shared_at(&self, line: usize) -> MdLoc {
        self.at(&self.syn.shared_file, line)
    }

    fn err(&mut self, code: &str, msg: String, at: MdLoc) {
        self.diags.push(Diagnostic::error(code, msg, &at));
    }

    fn service_of(&self, p: &Process) -> Option<&'a Service> {
        self.view.service_of(p)
    }

    fn worker_names(&mut self) {
        let mut seen: BTreeMap<String, String> = BTreeMap::new();
        let syn = self.syn;
        for w in syn.workers() {
            let file = w.file.clone();
            let root = &syn.worker_roots[&file];
            let line = root.get_key("worker_name").map_or(1, |k| k.line());
            if w.name.is_empty() {
                self.err(
                    "synapse::no-worker-name",
                    format!("worker file `{file}` has no `worker_name`"),
                    self.at(&file, 1),
                );
                continue;
            }
            if w.name == "main" || w.name == "master" {
                self.err(
                    "synapse::reserved-worker-name",
                    format!(
                        "`{}` is the main process's name; a worker cannot use it",
                        w.name
                    ),
                    self.at(&file, line),
                );
            }
            if let Some(other) = seen.insert(w.name.clone(), file.clone()) {
                self.err(
                    "synapse::duplicate-worker-name",
                    format!(
                        "worker name `{}` is used by both `{other}` and `{file}`",
                        w.name
                    ),
                    self.at(&file, line),
                );
            }
            if self.compose.is_some() && self.service_of(w).is_none() {
                self.err(
                    "synapse::worker-without-service",
                    format!("no Compose service starts worker `{}` with `{file}` (--config-path through a bind mount)", w.name),
                    self.at(&file, line),
                );
            }
        }
    }

    /// Checks that `name` is main or a known worker; reports at `node`.
    fn known_instance(&mut self, name: &str, key: &str, node: &Node) -> bool {
        if self.syn.process(name).is_some() {
            return true;
        }
        let files: Vec<String> = self
            .syn
            .workers()
            .map(|w| format!("{} ({})", w.name, w.file))
            .collect();
        self.diags.push(
            Diagnostic::error(
                "synapse::unknown-instance",
                format!("`{key}` names `{name}`, but no worker file has `worker_name: {name}`"),
                &self.shared_at(node.line()),
            )
            .with_note(if files.is_empty() {
                "the book defines no worker".into()
            } else {
                format!("workers: {}", files.join(", "))
            }),
        );
        false
    }

    fn streams(&mut self) {
        let Some(sw) = self.syn.shared.get("stream_writers") else {
            return;
        };
        for (k, v) in sw.entries() {
            let stream = k.as_str().unwrap_or("");
            if !STREAMS.contains(&stream) {
                self.err(
                    "synapse::unknown-stream",
                    format!(
                        "`{stream}` is not a stream Synapse knows (known: {})",
                        STREAMS.join(", ")
                    ),
                    self.shared_at(k.line()),
                );
                continue;
            }
            let writers = v.str_nodes();
            if writers.is_empty() {
                self.err(
                    "synapse::no-writer",
                    format!("stream `{stream}` lists no writer"),
                    self.shared_at(k.line()),
                );
            }
            if SINGLE_WRITER.contains(&stream) && writers.len() > 1 {
                self.err(
                    "synapse::multiple-writers",
                    format!(
                        "stream `{stream}` can only have one writer, but {} are listed: Synapse refuses to start (\"Must only specify one instance to handle `{stream}` messages\")",
                        writers.len()
                    ),
                    self.shared_at(writers[1].1.line()),
                );
            }
            for (w, n) in writers {
                self.known_instance(w, &format!("stream_writers.{stream}"), n);
            }
        }
    }

    fn roles(&mut self) {
        for key in ROLE_KEYS {
            let Some(n) = self.syn.shared.get(key) else {
                continue;
            };
            for (name, node) in n.str_nodes() {
                self.known_instance(name, key, node);
            }
        }
        if let Some(im) = self.syn.shared.get("instance_map") {
            for (k, _) in im.entries() {
                if let Some(name) = k.as_str() {
                    self.known_instance(name, "instance_map", k);
                }
            }
        }
    }

    fn instance_map(&mut self) {
        let syn = self.syn;
        let im = syn.shared.get("instance_map");
        let entry = |name: &str| {
            im.and_then(|m| {
                m.get(name).or_else(|| {
                    if name == "main" {
                        m.get("master")
                    } else {
                        None
                    }
                })
            })
        };
        let im_line = syn.shared.get_key("instance_map").map_or(1, |k| k.line());
        if syn.workers().next().is_some() && entry("main").is_none() {
            self.err(
                "synapse::main-not-in-instance-map",
                "there are workers, so `instance_map` must have `main` (with the path of main's replication listener): workers reach main through it".into(),
                self.shared_at(im_line),
            );
        }
        // Every writer must be in instance_map.
        let mut writers: Vec<(String, usize)> = Vec::new();
        if let Some(sw) = syn.shared.get("stream_writers") {
            for (_, v) in sw.entries() {
                for (w, n) in v.str_nodes() {
                    if !writers.iter().any(|(x, _)| x == w) {
                        writers.push((w.to_string(), n.line()));
                    }
                }
            }
        }
        if let Some(n) = syn.shared.get("outbound_federation_restricted_to") {
            for (name, node) in n.str_nodes() {
                if !writers.iter().any(|(w, _)| w == name) {
                    writers.push((name.to_string(), node.line()));
                }
            }
        }
        for (w, line) in &writers {
            if (w == "main" || w == "master") || entry(w).is_some() || self.syn.process(w).is_none()
            {
                continue;
            }
            self.err(
                "synapse::writer-not-in-instance-map",
                format!("`{w}` writes a stream (or proxies outbound federation) but is not in `instance_map`: other processes cannot reach it over replication"),
                self.shared_at(*line),
            );
        }
        // Each entry must be a replication listener of that process at that exact path.
        let Some(im) = im else { return };
        for (k, v) in im.entries() {
            let Some(name) = k.as_str() else { continue };
            let Some(p) = self.syn.process(name) else {
                continue;
            };
            let path = v.get("path").and_then(Node::as_str);
            let port = v.get("port").and_then(Node::as_str);
            let repl: Vec<_> = p
                .listeners
                .iter()
                .filter(|l| l.resources.iter().any(|r| r == "replication"))
                .collect();
            let ok = repl.iter().any(|l| {
                (path.is_some() && l.path.as_deref() == path)
                    || (port.is_some() && l.port.map(|p| p.to_string()).as_deref() == port)
            });
            if !ok {
                let where_ = path.map_or_else(
                    || format!("port {}", port.unwrap_or("?")),
                    |p| format!("`{p}`"),
                );
                let have: Vec<String> = repl
                    .iter()
                    .map(|l| {
                        l.path
                            .clone()
                            .or(l.port.map(|p| p.to_string()))
                            .unwrap_or_default()
                    })
                    .collect();
                let file = p.file.clone();
                self.diags.push(
                    Diagnostic::error(
                        "synapse::no-replication-listener",
                        format!(
                            "`instance_map` sends replication for `{name}` to {where_}, but `{name}` has no `replication` listener there{}",
                            if have.is_empty() { String::new() } else { format!(" (it has: {})", have.join(", ")) }
                        ),
                        &self.shared_at(v.line()),
                    )
                    .with_note(format!("{name}'s listeners are in {file}")),
                );
            }
        }
    }

    fn sockets(&mut self) {
        let mut seen: BTreeMap<String, (String, String)> = BTreeMap::new();
        let syn = self.syn;
        for p in &syn.processes {
            for l in &p.listeners {
                let Some(path) = &l.path else { continue };
                if let Some((other, _)) = seen.get(path) {
                    let msg = format!(
                        "socket `{path}` is used by listeners of both `{other}` and `{}`: only one can bind it",
                        p.name
                    );
                    self.err(
                        "synapse::duplicate-socket",
                        msg,
                        self.at(&l.at.file, l.at.line),
                    );
                } else {
                    seen.insert(path.clone(), (p.name.clone(), l.at.file.clone()));
                }
            }
        }
    }

    fn media_enabled(&self, p: &Process) -> bool {
        let worker_app = self.syn.effective(p, "worker_app").and_then(Node::as_str);
        worker_app == Some("synapse.app.media_repository")
            || self
                .syn
                .effective(p, "enable_media_repo")
                .and_then(Node::yaml11_bool)
                != Some(false)
    }

    fn media(&mut self) {
        let syn = self.syn;
        for p in &syn.processes {
            let serves = p
                .listeners
                .iter()
                .find(|l| l.resources.iter().any(|r| r == "media"));
            if let Some(l) = serves
                && !self.media_enabled(p)
            {
                let (f, line) = self
                    .syn
                    .effective_at(p, "enable_media_repo")
                    .unwrap_or((l.at.file.clone(), l.at.line));
                let msg = format!(
                    "`{}` serves the `media` resource but `enable_media_repo` is false for it{}",
                    p.name,
                    if !p.is_main() {
                        ": the worker ignores its media listener (set `enable_media_repo: true` in its own file)"
                    } else {
                        ": main refuses to start (\"'media' resource conflicts with enable_media_repo=False\")"
                    }
                );
                self.err("synapse::media-disabled", msg, self.at(&f, line));
            }
        }
        if let Some(n) = syn.shared.get("media_instance_running_background_jobs")
            && let Some(name) = n.as_str()
            && let Some(p) = syn.process(name)
            && !self.media_enabled(p)
        {
            self.err(
                            "synapse::media-disabled",
                            format!("`media_instance_running_background_jobs` is `{name}`, but the media repository is disabled there"),
                            self.shared_at(n.line()),
                        );
        }
    }

    /// Where a path seen by one service lands, for comparing paths across containers.
    fn landing(svc: Option<&Service>, path: &str) -> Resolved {
        match svc {
            Some(s) => match s.resolve(path) {
                Resolved::Unmounted => Resolved::Elsewhere(format!("{}:{path}", s.name)),
                r => r,
            },
            None => Resolved::Elsewhere(path.to_string()),
        }
    }

    /// Workers talk to each other through Redis: `redis.enabled` must be true once there are
    /// workers (Synapse's docs: "This *must* be enabled when using workers").
    fn redis_enabled(&mut self) {
        if self.syn.workers().next().is_none() {
            return;
        }
        let enabled = self.syn.shared.get("redis").and_then(|r| r.get("enabled"));
        if enabled.and_then(|e| e.yaml11_bool()) != Some(true) {
            let line = enabled
                .map(|e| e.line())
                .or_else(|| self.syn.shared.get_key("redis").map(|k| k.line()))
                .unwrap_or(1);
            self.err(
                "synapse::redis-disabled",
                "there are workers but `redis.enabled` is not true: workers would not hear about each other's writes (replication goes through Redis)".into(),
                self.shared_at(line),
            );
        }
    }

    fn db_and_redis(&mut self) {
        let Some(compose) = self.compose else { return };
        let main_svc = self.syn.main().and_then(|m| self.service_of(m));
        // Database
        let host = self
            .syn
            .shared
            .get("database")
            .and_then(|d| d.get("args"))
            .and_then(|a| a.get("host"));
        if let Some(h) = host.filter(|h| h.as_str().is_some_and(|s| s.starts_with('/'))) {
            let hp = h.as_str().unwrap_or("");
            let mine = Self::landing(main_svc, hp);
            let mut any_pg = false;
            let mut matched = false;
            let mut told = Vec::new();
            for svc in &compose.services {
                let dirs = pg_socket_dirs(self.view, svc);
                if dirs.is_empty() {
                    continue;
                }
                any_pg = true;
                for d in &dirs {
                    told.push(format!("`{d}` in `{}`", svc.name));
                    if Self::landing(Some(svc), d) == mine {
                        matched = true;
                    }
                }
            }
            if any_pg && !matched {
                self.err(
                    "synapse::db-socket-mismatch",
                    format!("Synapse connects to PostgreSQL's socket in `{hp}`, but PostgreSQL is told to put it in {} (not the same place once volumes are mapped)", told.join(", ")),
                    self.shared_at(h.line()),
                );
            }
        }
        // Redis
        let rpath = self.syn.shared.get("redis").and_then(|r| r.get("path"));
        if let Some(rp) = rpath.and_then(|n| n.as_str().map(|s| (s, n.line()))) {
            let mine = Self::landing(main_svc, rp.0);
            let mut told = Vec::new();
            let mut matched = false;
            for svc in &compose.services {
                for w in svc.flag_values(&["--unixsocket"]) {
                    let v = word_value(w);
                    told.push(format!("`{v}` in `{}`", svc.name));
                    if Self::landing(Some(svc), v) == mine {
                        matched = true;
                    }
                }
            }
            if !told.is_empty() && !matched {
                self.err(
                    "synapse::redis-socket-mismatch",
                    format!(
                        "Synapse connects to Redis at `{}`, but Redis listens on {}",
                        rp.0,
                        told.join(", ")
                    ),
                    self.shared_at(rp.1),
                );
            }
        }
    }

    fn logs(&mut self) {
        let syn = self.syn;
        for p in &syn.processes {
            let key = if !p.is_main() {
                "worker_log_config"
            } else {
                "log_config"
            };
            let Some(node) = self
                .syn
                .effective(p, key)
                .or_else(|| self.syn.effective(p, "log_config"))
            else {
                continue;
            };
            let Some(path) = node.as_str() else { continue };
            let (file, line) = self
                .syn
                .effective_at(p, key)
                .or_else(|| self.syn.effective_at(p, "log_config"))
                .unwrap_or((self.syn.shared_file.clone(), node.line()));
            let Some(svc) = self.service_of(p) else {
                continue;
            };
            let tree_path = match svc.resolve(path) {
                Resolved::Tree(t) => t,
                Resolved::Unmounted => {
                    self.err(
                        "synapse::missing-log-config",
                        format!("`{}` reads its log config from `{path}`, but nothing is mounted there in service `{}`", p.name, svc.name),
                        self.at(&file, line),
                    );
                    continue;
                }
                _ => continue,
            };
            let Some(lc) = self.view.yaml_root(&tree_path) else {
                if self.view.file(&tree_path).is_none() {
                    self.err(
                        "synapse::missing-log-config",
                        format!("`{}` reads its log config from `{path}` (`{tree_path}` in the tree), which the book does not write", p.name),
                        self.at(&file, line),
                    );
                }
                continue;
            };
            if lc.get("version").and_then(Node::as_str) != Some("1") {
                let l = lc.get_key("version").map_or(1, |k| k.line());
                self.err(
                    "synapse::bad-log-config",
                    "a Python logging dictConfig needs `version: 1`".into(),
                    self.at(&tree_path, l),
                );
            }
            for (hname, h) in lc.get("handlers").map(Node::entries).unwrap_or_default() {
                let Some(fname) = h.get("filename") else {
                    continue;
                };
                let Some(fp) = fname.as_str() else { continue };
                if let Some((m, _)) = svc.mount_for(fp).filter(|(m, _)| m.read_only) {
                    self.err(
                        "synapse::log-not-on-volume",
                        format!("handler `{}` writes `{fp}`, but `{}` is mounted read-only in service `{}`", hname.as_str().unwrap_or("?"), m.target, svc.name),
                        self.at(&tree_path, fname.line()),
                    );
                    continue;
                }
                let writable = match svc.mount_for(fp) {
                    Some((m, _)) => m.kind != MountKind::Bind || !m.target.is_empty(),
                    None => false,
                };
                if !writable {
                    self.err(
                        "synapse::log-not-on-volume",
                        format!(
                            "handler `{}` writes `{fp}`, but service `{}` (which uses this log config) has no volume mounted there: the log is lost with the container (mounts: {})",
                            hname.as_str().unwrap_or("?"),
                            svc.name,
                            svc.mounts.iter().map(|m| m.target.as_str()).collect::<Vec<_>>().join(", ")
                        ),
                        self.at(&tree_path, fname.line()),
                    );
                }
            }
        }
    }
}
