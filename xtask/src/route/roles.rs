//! Who listens on each Unix socket, and what that process can serve, read from the extracted
//! Synapse configuration (never from names; built on [`crate::synapse`]): `listeners` of the shared config are the main
//! process's; each worker file's `worker_listeners` are that worker's. A process's roles are its
//! listener resources, the streams it writes (`stream_writers`, unset streams default to
//! `main`), and whether it can load the media repository (`synapse/config/repository.py`:
//! `worker_app: synapse.app.media_repository`, or an effective `enable_media_repo: true`, which
//! a worker file overrides and which defaults to true).

use crate::diagnostics::{Diagnostic, MdLoc};
use crate::extract::Tree;
use crate::synapse::Deployment;
use std::collections::{BTreeMap, BTreeSet};

pub use crate::synapse::STREAMS;

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
        self.processes
            .iter()
            .find_map(|p| p.listeners.iter().find(|l| l.path == path).map(|l| (p, l)))
    }
}

/// Reads the processes of the tree's Synapse configuration (the integrator's
/// [`crate::synapse::Deployment`] model), keeping what routing needs.
pub fn from_tree(tree: &Tree) -> Result<Roles, Vec<Diagnostic>> {
    let dep = match Deployment::from_tree(tree)? {
        Some(d) => d,
        None => {
            return Err(vec![Diagnostic::error(
                "route::no-homeserver",
                "the book produces no shared Synapse config (a YAML file with `server_name`), so no upstream socket can be matched to a process",
                &MdLoc::new("src/SUMMARY.md", 1),
            )]);
        }
    };
    let writers: BTreeMap<String, Vec<String>> = STREAMS
        .iter()
        .map(|s| ((*s).to_string(), dep.writers(s)))
        .collect();
    let processes = dep
        .processes
        .iter()
        .map(|p| Process {
            name: p.name.clone(),
            app: p.app.clone(),
            file: p.file.clone(),
            listeners: p
                .listeners
                .iter()
                .filter(|l| l.kind == "http" || l.kind.is_empty())
                .filter_map(|l| {
                    Some(Listener {
                        path: l.path.clone()?,
                        resources: l.resources.iter().cloned().collect(),
                    })
                })
                .collect(),
            media_repo: p.media_repo,
            writes: STREAMS
                .iter()
                .filter(|s| {
                    writers[**s]
                        .iter()
                        .any(|w| w == &p.name || (p.is_main() && w == "master"))
                })
                .map(|s| (*s).to_string())
                .collect(),
        })
        .collect();
    Ok(Roles { processes, writers })
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
                "server_name: example.com\nenable_media_repo: false\nstream_writers:\n  typing: sync1\n  events: [rooms1, main]\nlisteners:\n  - path: /sockets/main_http.sock\n    type: http\n    resources:\n      - names: [client, federation]\n",
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
