//! Who listens on each Unix socket, and what that process can serve, read from the extracted
//! Synapse configuration (never from names): `listeners` of `homeserver.yaml` are the main
//! process's; each worker file's `worker_listeners` are that worker's. A process's roles are its
//! listener resources, the streams it writes (`stream_writers`, unset streams default to
//! `main`), and whether it can load the media repository (`synapse/config/repository.py`:
//! `worker_app: synapse.app.media_repository`, or an effective `enable_media_repo: true`, which
//! a worker file overrides and which defaults to true).

use crate::diagnostics::{Diagnostic, MdLoc};
use crate::extract::Tree;
use saphyr::{LoadableYamlNode, Yaml};
use std::collections::{BTreeMap, BTreeSet};

/// Streams of `stream_writers` (synapse/config/workers.py `WriterLocations`).
pub const STREAMS: &[&str] = &[
    "events", "typing", "to_device", "account_data", "receipts", "presence", "push_rules",
    "device_lists", "thread_subscriptions", "quarantined_media_changes",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub path: String,
    pub resources: BTreeSet<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Process {
    /// `main` or the `worker_name`.
    pub name: String,
    /// `synapse.app.homeserver` for main, else `worker_app`.
    pub app: String,
    /// Tree file that defines it.
    pub file: String,
    pub listeners: Vec<Listener>,
    pub media_repo: bool,
    pub writes: BTreeSet<String>,
}

impl Process {
    pub fn is_main(&self) -> bool {
        self.name == "main"
    }

    /// Serves the generic endpoints (main or a `generic_worker`).
    pub fn is_generic(&self) -> bool {
        self.is_main() || self.app.ends_with("generic_worker")
    }
}

#[derive(Debug, Clone, Default)]
pub struct Roles {
    pub processes: Vec<Process>,
    /// Stream -> writer names.
    pub writers: BTreeMap<String, Vec<String>>,
}

impl Roles {
    /// The process and listener behind `unix:/path` (or `/path`).
    pub fn by_socket(&self, server: &str) -> Option<(&Process, &Listener)> {
        let path = server.strip_prefix("unix:").unwrap_or(server);
        self.processes.iter().find_map(|p| p.listeners.iter().find(|l| l.path == path).map(|l| (p, l)))
    }
}

fn get<'a>(y: &'a Yaml<'a>, key: &str) -> Option<&'a Yaml<'a>> {
    if let Some(v) = y.as_mapping_get(key) {
        return Some(v);
    }
    // YAML merge keys: `<<: *anchor` or `<<: [*a, *b]`.
    let m = y.as_mapping_get("<<")?;
    if let Some(seq) = m.as_vec() {
        return seq.iter().find_map(|e| get(e, key));
    }
    get(m, key)
}

fn string(y: &Yaml<'_>) -> Option<String> {
    y.as_str().map(String::from).or_else(|| y.as_integer().map(|i| i.to_string()))
}

fn strings(y: Option<&Yaml<'_>>) -> Vec<String> {
    match y {
        None => Vec::new(),
        Some(y) => match y.as_vec() {
            Some(v) => v.iter().filter_map(string).collect(),
            None => string(y).into_iter().collect(),
        },
    }
}

fn listeners(y: Option<&Yaml<'_>>) -> Vec<Listener> {
    let mut out = Vec::new();
    for l in y.and_then(|y| y.as_vec()).map(Vec::as_slice).unwrap_or(&[]) {
        let Some(path) = get(l, "path").and_then(string) else { continue };
        if get(l, "type").and_then(|t| t.as_str()).is_some_and(|t| t != "http") {
            continue;
        }
        let mut resources = BTreeSet::new();
        for r in get(l, "resources").and_then(|r| r.as_vec()).map(Vec::as_slice).unwrap_or(&[]) {
            resources.extend(strings(get(r, "names")));
        }
        out.push(Listener { path, resources });
    }
    out
}

fn load<'a>(tree: &'a Tree, path: &str, diags: &mut Vec<Diagnostic>) -> Option<Yaml<'a>> {
    let tf = tree.get(path)?;
    match Yaml::load_from_str(&tf.content) {
        Ok(mut docs) if !docs.is_empty() => Some(docs.swap_remove(0)),
        Ok(_) => None,
        Err(e) => {
            diags.push(Diagnostic::error(
                "route::yaml",
                format!("cannot read `{path}` to find its listeners: {e}"),
                &tf.md_loc(e.marker().line()),
            ));
            None
        }
    }
}

/// Reads the processes of the tree's Synapse configuration.
pub fn from_tree(tree: &Tree) -> Result<Roles, Vec<Diagnostic>> {
    let mut diags = Vec::new();
    let hs_path = "synapse/homeserver.yaml";
    let Some(hs) = load(tree, hs_path, &mut diags) else {
        if diags.is_empty() {
            diags.push(Diagnostic::error(
                "route::no-homeserver",
                "the book produces no `synapse/homeserver.yaml`, so no upstream socket can be matched to a process",
                &MdLoc::new("src/SUMMARY.md", 1),
            ));
        }
        return Err(diags);
    };
    let shared_media = get(&hs, "enable_media_repo").and_then(|v| v.as_bool()).unwrap_or(true);
    let mut writers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let sw = get(&hs, "stream_writers");
    for s in STREAMS {
        let w = strings(sw.and_then(|sw| get(sw, s)));
        writers.insert((*s).to_string(), if w.is_empty() { vec!["main".to_string()] } else { w });
    }
    let mut processes = vec![Process {
        name: "main".into(),
        app: "synapse.app.homeserver".into(),
        file: hs_path.into(),
        listeners: listeners(get(&hs, "listeners")),
        media_repo: shared_media,
        writes: BTreeSet::new(),
    }];
    for (path, tf) in &tree.files {
        if path == hs_path || !(path.ends_with(".yaml") || path.ends_with(".yml")) || !tf.content.contains("worker_name") {
            continue;
        }
        let Some(y) = load(tree, path, &mut diags) else { continue };
        let Some(name) = get(&y, "worker_name").and_then(string) else { continue };
        let app = get(&y, "worker_app").and_then(string).unwrap_or_else(|| "synapse.app.generic_worker".into());
        let media = app == "synapse.app.media_repository"
            || get(&y, "enable_media_repo").and_then(|v| v.as_bool()).unwrap_or(shared_media);
        processes.push(Process {
            name,
            app,
            file: path.clone(),
            listeners: listeners(get(&y, "worker_listeners")),
            media_repo: media,
            writes: BTreeSet::new(),
        });
    }
    for p in &mut processes {
        for (s, ws) in &writers {
            // Synapse calls main `master` internally; the book's config says `main`.
            if ws.iter().any(|w| w == &p.name || (p.is_main() && w == "master")) {
                p.writes.insert(s.clone());
            }
        }
    }
    if diags.is_empty() { Ok(Roles { processes, writers }) } else { Err(diags) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nginx::tree_from;

    #[test]
    fn roles_from_yaml() {
        let t = tree_from(&[
            (
                "synapse/homeserver.yaml",
                "enable_media_repo: false\nstream_writers:\n  typing: sync1\n  events: [rooms1, main]\nlisteners:\n  - path: /sockets/main_http.sock\n    type: http\n    resources:\n      - names: [client, federation]\n",
            ),
            (
                "synapse/workers/media1.yaml",
                "worker_app: synapse.app.generic_worker\nworker_name: media1\nenable_media_repo: true\nworker_listeners:\n  - path: /sockets/media1_http.sock\n    type: http\n    resources: [{names: [media]}]\n",
            ),
            (
                "synapse/workers/sync1.yaml",
                "worker_app: synapse.app.generic_worker\nworker_name: sync1\nworker_listeners:\n  - path: /sockets/sync1_http.sock\n    type: http\n    resources: [{names: [client]}]\n",
            ),
        ]);
        let r = from_tree(&t).unwrap();
        let (p, l) = r.by_socket("unix:/sockets/media1_http.sock").unwrap();
        assert_eq!(p.name, "media1");
        assert!(p.media_repo && l.resources.contains("media"));
        let (s, _) = r.by_socket("/sockets/sync1_http.sock").unwrap();
        assert!(s.writes.contains("typing") && !s.media_repo);
        let (m, _) = r.by_socket("/sockets/main_http.sock").unwrap();
        assert!(m.writes.contains("push_rules") && m.writes.contains("events") && !m.media_repo);
    }
}
