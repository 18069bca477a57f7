//! The Synapse deployment as configured in the tree: processes, their listeners and roles.
//!
//! Built from the YAML files alone, never from hard-coded names: the shared config is the YAML
//! file with a top-level `server_name`; every YAML file with a top-level `worker_app` or
//! `worker_name` is a worker. Each process knows its listeners (socket path or port, resources),
//! whether it can load the media repository (Synapse's `can_load_media_repo`: its effective
//! `enable_media_repo`, default true, or `worker_app: synapse.app.media_repository`), and the
//! shared config gives the role keys (`stream_writers`, `instance_map`, ...).
//!
//! Every value keeps its file and line, so a check can point at the Markdown line to edit.
//!
//! This is the one Synapse model of the project: lint's cross-file checks, the routing
//! simulator's contract (which process behind a socket can serve a request), and the stack test
//! all read it. Built once per tree, from the tree's one YAML parse of each file.

use crate::compose::{self, Compose, Resolved};
use crate::diagnostics::{Diagnostic, MdLoc};
use crate::tree::Tree;
use crate::yaml::Node;
use std::collections::{BTreeMap, BTreeSet};

/// The name Synapse gives the main process in `instance_map` and `stream_writers`.
pub const MAIN: &str = "main";

/// Streams that accept exactly one writer (synapse/config/workers.py).
pub const SINGLE_WRITER_STREAMS: &[&str] = &[
    "typing",
    "to_device",
    "account_data",
    "presence",
    "push_rules",
];

/// Every stream `stream_writers` accepts.
pub const STREAMS: &[&str] = &[
    "events",
    "typing",
    "to_device",
    "account_data",
    "receipts",
    "presence",
    "push_rules",
    "device_lists",
    "thread_subscriptions",
    "quarantined_media_changes",
];

/// A value's place: the tree file and the 1-based line in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct At {
    pub file: String,
    pub line: usize,
}

impl At {
    pub fn md(&self, tree: &Tree) -> MdLoc {
        tree.get(&self.file).map_or_else(
            || MdLoc::new(self.file.clone(), self.line),
            |f| f.md_loc(self.line),
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// Unix socket path, if it listens on one.
    pub path: Option<String>,
    pub port: Option<i64>,
    /// `type:` (http, metrics, manhole).
    pub kind: String,
    /// Resource names of every `resources` entry.
    pub resources: Vec<String>,
    pub at: At,
}

impl Listener {
    /// An HTTP listener (`type: http`, the default): what nginx can proxy to.
    pub fn is_http(&self) -> bool {
        self.kind == "http" || self.kind.is_empty()
    }

    /// Its resource names, sorted and without repeats.
    pub fn resource_set(&self) -> BTreeSet<&str> {
        self.resources.iter().map(String::as_str).collect()
    }
}

#[derive(Debug, Clone)]
pub struct Process {
    /// `main` for the main process, else `worker_name`.
    pub name: String,
    /// The tree file of its own config (homeserver.yaml for main).
    pub file: String,
    /// `synapse.app.homeserver` for main, else `worker_app`.
    pub app: String,
    pub listeners: Vec<Listener>,
    /// Synapse's `can_load_media_repo` for this process.
    pub media_repo: bool,
    /// Where `enable_media_repo` is decided (worker file, shared file, or the default).
    pub media_repo_at: Option<At>,
    /// `worker_log_config` / `log_config` value and where it is set.
    pub log_config: Option<(String, At)>,
    /// Where the process is named (worker_name line; line 1 of homeserver.yaml for main).
    pub at: At,
}

impl Process {
    pub fn is_main(&self) -> bool {
        self.name == MAIN
    }

    /// The worker's own file (None for main).
    pub fn worker_file(&self) -> Option<&str> {
        (!self.is_main()).then_some(self.file.as_str())
    }

    /// Serves the generic endpoints (main or a `generic_worker`).
    pub fn is_generic(&self) -> bool {
        self.is_main() || self.app.ends_with("generic_worker")
    }

    /// The listener bound to a Unix socket path.
    pub fn listener_at(&self, path: &str) -> Option<&Listener> {
        self.listeners
            .iter()
            .find(|l| l.path.as_deref() == Some(path))
    }

    pub fn has_resource(&self, resource: &str) -> bool {
        self.listeners
            .iter()
            .any(|l| l.resources.iter().any(|r| r == resource))
    }
}

/// A list-valued role key (`stream_writers.typing`, `federation_sender_instances`, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Named {
    pub names: Vec<String>,
    pub at: At,
}

#[derive(Debug, Clone)]
pub struct Deployment {
    /// Tree path of the shared config.
    pub shared_file: String,
    pub shared: Node,
    /// Main first, then the workers in tree order.
    pub processes: Vec<Process>,
    /// Each worker file's root node, by tree path.
    pub worker_roots: BTreeMap<String, Node>,
    /// `stream_writers`: stream -> writers, as configured (streams not listed are written by main).
    pub stream_writers: BTreeMap<String, Named>,
    /// `instance_map`: name -> (socket path or host:port, where).
    pub instance_map: BTreeMap<String, (String, At)>,
    /// Other role keys naming instances: `federation_sender_instances`, `pusher_instances`,
    /// `run_background_tasks_on`, `media_instance_running_background_jobs`,
    /// `update_user_directory_from_worker`, `notify_appservices_from_worker`,
    /// `outbound_federation_restricted_to`.
    pub roles: BTreeMap<String, Named>,
}

/// Role keys (besides `stream_writers` and `instance_map`) whose values are instance names.
pub const ROLE_KEYS: &[&str] = &[
    "federation_sender_instances",
    "pusher_instances",
    "run_background_tasks_on",
    "media_instance_running_background_jobs",
    "update_user_directory_from_worker",
    "notify_appservices_from_worker",
    "outbound_federation_restricted_to",
];

impl Deployment {
    /// The process of that instance name (`master` is Synapse's old name for main).
    pub fn process(&self, name: &str) -> Option<&Process> {
        let name = if name == "master" { MAIN } else { name };
        self.processes.iter().find(|p| p.name == name)
    }

    /// Every process but main.
    pub fn workers(&self) -> impl Iterator<Item = &Process> {
        self.processes.iter().filter(|p| !p.is_main())
    }

    /// The process and HTTP listener behind `unix:/path` (or `/path`), as nginx reaches them.
    pub fn by_socket(&self, server: &str) -> Option<(&Process, &Listener)> {
        let path = server.strip_prefix("unix:").unwrap_or(server);
        self.processes.iter().find_map(|p| {
            p.listeners
                .iter()
                .find(|l| l.is_http() && l.path.as_deref() == Some(path))
                .map(|l| (p, l))
        })
    }

    /// A setting as the given process sees it: its worker file overrides the shared config.
    pub fn effective(&self, p: &Process, key: &str) -> Option<&Node> {
        p.worker_file()
            .and_then(|f| self.worker_roots.get(f))
            .and_then(|r| r.get(key))
            .or_else(|| self.shared.get(key))
    }

    /// Where a setting of a process comes from (file, line), for reporting.
    pub fn effective_at(&self, p: &Process, key: &str) -> Option<(String, usize)> {
        if let Some(f) = p.worker_file()
            && let Some(k) = self.worker_roots.get(f).and_then(|r| r.get_key(key))
        {
            return Some((f.to_string(), k.line()));
        }
        self.shared
            .get_key(key)
            .map(|k| (self.shared_file.clone(), k.line()))
    }

    pub fn main(&self) -> Option<&Process> {
        self.process(MAIN)
    }

    /// The process with a listener on this Unix socket path.
    pub fn process_by_socket(&self, path: &str) -> Option<&Process> {
        self.processes
            .iter()
            .find(|p| p.listener_at(path).is_some())
    }

    /// The writers of a stream (main when not configured).
    pub fn writers(&self, stream: &str) -> Vec<String> {
        match self.stream_writers.get(stream) {
            Some(n) if !n.names.is_empty() => n.names.clone(),
            _ => vec![MAIN.to_string()],
        }
    }

    /// Whether `process` writes `stream` (main also under its old name `master`).
    pub fn is_writer(&self, process: &str, stream: &str) -> bool {
        self.writers(stream)
            .iter()
            .any(|w| w == process || (process == MAIN && w == "master"))
    }

    /// The streams a process writes.
    pub fn streams_of(&self, process: &str) -> Vec<&'static str> {
        STREAMS
            .iter()
            .copied()
            .filter(|s| self.is_writer(process, s))
            .collect()
    }

    /// The Compose service running a process: the one whose config arguments resolve to the
    /// process's own file (main: the shared file and no worker file).
    pub fn service_of<'c>(
        &self,
        compose: &'c Compose,
        p: &Process,
    ) -> Option<&'c compose::Service> {
        compose.services.iter().find(|s| {
            let files: Vec<Resolved> = config_args(s)
                .iter()
                .map(|w| s.resolve(compose::word_value(w)))
                .collect();
            match p.worker_file() {
                Some(f) => files.contains(&Resolved::Tree(f.to_string())),
                None => {
                    files.contains(&Resolved::Tree(self.shared_file.clone()))
                        && !files.iter().any(
                            |r| matches!(r, Resolved::Tree(t) if self.worker_roots.contains_key(t)),
                        )
                }
            }
        })
    }

    /// Loads the deployment from the tree's YAML files. Without a shared config (no YAML file
    /// with `server_name`) there is no deployment: Ok(None).
    pub fn from_tree(tree: &Tree) -> Result<Option<Deployment>, Vec<Diagnostic>> {
        let mut diags = Vec::new();
        let mut docs: Vec<(String, &Node)> = Vec::new();
        for f in tree.files.values() {
            if !(f.path.ends_with(".yaml") || f.path.ends_with(".yml")) {
                continue;
            }
            match f.yaml() {
                Ok(l) => {
                    if let Some(doc) = l.root() {
                        docs.push((f.path.clone(), doc));
                    }
                }
                Err(e) => diags.push(Diagnostic::error(
                    e.code,
                    format!("{}: {}", f.path, e.message),
                    &f.md_loc(e.line),
                )),
            }
        }
        if !diags.is_empty() {
            return Err(diags);
        }
        let Some((shared_file, shared)) = docs
            .iter()
            .find(|(_, d)| d.get("server_name").is_some() && d.get("worker_app").is_none())
            .map(|(f, d)| (f.clone(), (*d).clone()))
        else {
            return Ok(None);
        };
        let mut worker_roots = BTreeMap::new();
        let at = |file: &str, node: &Node| At {
            file: file.to_string(),
            line: node.line(),
        };

        let shared_media = shared
            .get("enable_media_repo")
            .map(|n| (n.yaml11_bool().unwrap_or(true), at(&shared_file, n)));
        let mut processes = vec![Process {
            name: MAIN.to_string(),
            file: shared_file.clone(),
            app: "synapse.app.homeserver".into(),
            listeners: listeners(&shared_file, shared.get("listeners")),
            media_repo: shared_media.as_ref().is_none_or(|(b, _)| *b),
            media_repo_at: shared_media.as_ref().map(|(_, a)| a.clone()),
            log_config: shared
                .get("log_config")
                .and_then(|n| Some((n.as_str()?.to_string(), at(&shared_file, n)))),
            at: At {
                file: shared_file.clone(),
                line: shared.get_key("server_name").map_or(1, Node::line),
            },
        }];
        for (file, doc) in &docs {
            if doc.get("worker_app").is_none() && doc.get("worker_name").is_none() {
                continue;
            }
            let app = doc
                .get("worker_app")
                .and_then(Node::as_str)
                .unwrap_or("synapse.app.generic_worker")
                .to_string();
            let name_node = doc.get("worker_name");
            let name = name_node
                .and_then(Node::as_str)
                .unwrap_or_default()
                .to_string();
            let own_media = doc
                .get("enable_media_repo")
                .map(|n| (n.yaml11_bool().unwrap_or(true), at(file, n)));
            let (enabled, media_at) = match (&own_media, &shared_media) {
                (Some((b, a)), _) | (None, Some((b, a))) => (*b, Some(a.clone())),
                (None, None) => (true, None),
            };
            worker_roots.insert(file.clone(), (*doc).clone());
            processes.push(Process {
                name,
                file: file.clone(),
                listeners: listeners(file, doc.get("worker_listeners")),
                media_repo: enabled || app == "synapse.app.media_repository",
                media_repo_at: media_at,
                log_config: doc
                    .get("worker_log_config")
                    .and_then(|n| Some((n.as_str()?.to_string(), at(file, n)))),
                at: At {
                    file: file.clone(),
                    line: name_node.or(doc.get("worker_app")).map_or(1, Node::line),
                },
                app,
            });
        }

        let mut stream_writers = BTreeMap::new();
        if let Some(sw) = shared.get("stream_writers").and_then(Node::as_map) {
            for (k, v) in sw {
                if let Some(stream) = k.as_str() {
                    let names = v.str_list().into_iter().map(String::from).collect();
                    stream_writers.insert(
                        stream.to_string(),
                        Named {
                            names,
                            at: at(&shared_file, k),
                        },
                    );
                }
            }
        }
        let mut instance_map = BTreeMap::new();
        if let Some(im) = shared.get("instance_map").and_then(Node::as_map) {
            for (k, v) in im {
                let Some(name) = k.as_str() else { continue };
                let loc = match (
                    v.get("path").and_then(Node::as_str),
                    v.get("host").and_then(Node::as_str),
                ) {
                    (Some(p), _) => p.to_string(),
                    (None, Some(h)) => {
                        format!("{h}:{}", v.get("port").and_then(Node::as_i64).unwrap_or(0))
                    }
                    _ => String::new(),
                };
                instance_map.insert(name.to_string(), (loc, at(&shared_file, k)));
            }
        }
        let mut roles = BTreeMap::new();
        for key in ROLE_KEYS {
            if let Some(n) = shared.get(key) {
                if n.is_null() {
                    continue;
                }
                let names = n.str_list().into_iter().map(String::from).collect();
                roles.insert(
                    key.to_string(),
                    Named {
                        names,
                        at: at(&shared_file, n),
                    },
                );
            }
        }
        Ok(Some(Deployment {
            shared_file,
            shared,
            processes,
            worker_roots,
            stream_writers,
            instance_map,
            roles,
        }))
    }
}

/// The config files (container paths) a Synapse service is started with: `--config-path` /
/// `-c` arguments, else `SYNAPSE_CONFIG_PATH`.
pub fn config_args(svc: &compose::Service) -> Vec<&compose::Word> {
    let mut out = svc.flag_values(&["--config-path", "-c"]);
    if out.is_empty()
        && let Some(w) = svc.env.get("SYNAPSE_CONFIG_PATH")
    {
        out.push(w);
    }
    out
}

fn listeners(file: &str, node: Option<&Node>) -> Vec<Listener> {
    let Some(items) = node.and_then(Node::as_seq) else {
        return Vec::new();
    };
    items
        .iter()
        .map(|l| Listener {
            path: l.get("path").and_then(Node::as_str).map(String::from),
            port: l.get("port").and_then(Node::as_i64),
            kind: l
                .get("type")
                .and_then(Node::as_str)
                .unwrap_or("http")
                .to_string(),
            resources: l
                .get("resources")
                .and_then(Node::as_seq)
                .unwrap_or(&[])
                .iter()
                .flat_map(|r| r.get("names").map(Node::str_list).unwrap_or_default())
                .map(String::from)
                .collect(),
            at: At {
                file: file.to_string(),
                line: l.line(),
            },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::{Fragment, TreeFile};

    fn tree(files: &[(&str, &str)]) -> Tree {
        let mut t = Tree::default();
        for (p, c) in files {
            t.files.insert(
                p.to_string(),
                TreeFile::new(
                    *p,
                    *c,
                    vec![Fragment {
                        md_file: format!("src/{p}.md"),
                        md_line: 100,
                        out_line: 1,
                        lines: 100,
                    }],
                    "yaml",
                ),
            );
        }
        t
    }

    const SHARED: &str = "server_name: example.com
enable_media_repo: false
listeners:
  - path: /sockets/main_http.sock
    type: http
    resources: [{names: [client, federation]}]
  - path: /sockets/main_replication.sock
    type: http
    resources:
      - names: [replication]
instance_map:
  main: {path: /sockets/main_replication.sock}
  client_sync1: {path: /sockets/client_sync1_replication.sock}
stream_writers:
  typing: client_sync1
  receipts: [client_sync1]
federation_sender_instances: [sender1, sender2]
";

    #[test]
    fn model_from_yaml() {
        let t = tree(&[
            ("synapse/homeserver.yaml", SHARED),
            (
                "synapse/workers/media1.yaml",
                "worker_app: synapse.app.generic_worker\nworker_name: media1\nenable_media_repo: true\nworker_listeners:\n  - path: /sockets/media1_http.sock\n    resources: [{names: [media]}]\n",
            ),
            (
                "synapse/workers/client_sync1.yaml",
                "worker_app: synapse.app.generic_worker\nworker_name: client_sync1\nworker_listeners:\n  - path: /sockets/client_sync1_http.sock\n    resources: [{names: [client]}]\n",
            ),
        ]);
        let d = Deployment::from_tree(&t).unwrap().unwrap();
        assert_eq!(d.processes.len(), 3);
        let main = d.main().unwrap();
        assert!(!main.media_repo);
        assert_eq!(main.listeners[1].resources, vec!["replication"]);
        let media = d.process_by_socket("/sockets/media1_http.sock").unwrap();
        assert_eq!(media.name, "media1");
        assert!(media.media_repo);
        let sync = d.process("client_sync1").unwrap();
        assert!(!sync.media_repo, "inherits enable_media_repo: false");
        assert_eq!(
            sync.media_repo_at.as_ref().unwrap().file,
            "synapse/homeserver.yaml"
        );
        assert!(d.is_writer("client_sync1", "typing"));
        assert!(d.is_writer("main", "push_rules"));
        assert_eq!(d.streams_of("client_sync1"), vec!["typing", "receipts"]);
        assert_eq!(
            d.roles["federation_sender_instances"].names,
            vec!["sender1", "sender2"]
        );
        assert_eq!(d.instance_map["main"].0, "/sockets/main_replication.sock");
        assert_eq!(
            d.instance_map["client_sync1"].1.md(&t),
            MdLoc::new("src/synapse/homeserver.yaml.md", 112)
        );
    }

    #[test]
    fn sockets_roles_settings_and_services() {
        let t = tree(&[
            (
                "synapse/homeserver.yaml",
                "server_name: example.com\nenable_media_repo: false\nstream_writers:\n  typing: sync1\n  events: [rooms1, master]\nlisteners:\n  - path: /sockets/main_http.sock\n    type: http\n    resources:\n      - names: [federation, client]\n  - path: /sockets/main_metrics.sock\n    type: metrics\n",
            ),
            (
                "synapse/workers/media1.yaml",
                "worker_app: synapse.app.media_repository\nworker_name: media1\nworker_listeners:\n  - path: /sockets/media1_http.sock\n    type: http\n    resources: [{names: [media]}]\n",
            ),
            (
                "synapse/workers/sync1.yaml",
                "worker_app: synapse.app.generic_worker\nworker_name: sync1\nenable_media_repo: true\nworker_listeners:\n  - path: /sockets/sync1_http.sock\n    resources: [{names: [client]}]\n",
            ),
            (
                "docker-compose.yml",
                "services:\n  main:\n    command: [\"--config-path=/data/homeserver.yaml\"]\n    volumes: [\"./synapse:/data\"]\n  sync1:\n    command: [\"--config-path\", \"/data/homeserver.yaml\", \"--config-path\", \"/data/workers/sync1.yaml\"]\n    volumes: [\"./synapse:/data\"]\n",
            ),
        ]);
        let d = Deployment::from_tree(&t).unwrap().unwrap();
        let (p, l) = d.by_socket("unix:/sockets/media1_http.sock").unwrap();
        assert_eq!(p.name, "media1");
        assert!(p.media_repo && !p.is_generic() && l.resources == ["media"]);
        assert!(
            d.by_socket("/sockets/main_metrics.sock").is_none(),
            "HTTP listeners only"
        );
        let (m, l) = d.by_socket("/sockets/main_http.sock").unwrap();
        assert_eq!(
            l.resource_set().into_iter().collect::<Vec<_>>(),
            ["client", "federation"]
        );
        assert!(m.is_main() && m.is_generic() && !m.media_repo);
        assert!(d.is_writer("main", "events"), "`master` is main's old name");
        assert!(d.is_writer("main", "push_rules") && !d.is_writer("sync1", "events"));
        assert_eq!(d.process("master").unwrap().name, "main");
        let sync = d.process("sync1").unwrap();
        assert!(sync.media_repo, "its own file overrides the shared setting");
        assert_eq!(
            d.effective_at(sync, "enable_media_repo"),
            Some(("synapse/workers/sync1.yaml".to_string(), 3))
        );
        assert_eq!(
            d.effective(sync, "server_name").and_then(Node::as_str),
            Some("example.com")
        );
        let compose = Compose::from_tree(&t).unwrap();
        assert_eq!(d.service_of(&compose, sync).unwrap().name, "sync1");
        assert_eq!(d.service_of(&compose, m).unwrap().name, "main");
        assert!(
            d.service_of(&compose, p).is_none(),
            "no service runs media1"
        );
    }

    #[test]
    fn no_shared_config_means_no_deployment() {
        assert!(
            Deployment::from_tree(&tree(&[("a.yaml", "x: 1\n")]))
                .unwrap()
                .is_none()
        );
        let err = Deployment::from_tree(&tree(&[("a.yaml", "x: [1\n")])).unwrap_err();
        assert_eq!(err[0].code, "yaml::syntax");
        assert_eq!(err[0].file, "src/a.yaml.md");
    }
}
