//! The deployment as the cross-file checks see it: Compose services (mounts, command words,
//! environment, healthcheck) and Synapse processes (main and workers, their config files and
//! listeners), all with the line each fact came from, read from an assembled tree.
//!
//! Container paths are mapped to tree paths through each service's mounts, so a check can ask
//! "which file in the book does `/data/workers/rooms1.yaml` inside the `rooms1` container mean?".

use super::TreeView;
use super::yaml::{Node, NodeExt};
use std::collections::BTreeMap;

pub const COMPOSE_FILES: &[&str] = &[
    "docker-compose.yml",
    "docker-compose.yaml",
    "compose.yml",
    "compose.yaml",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountKind {
    /// A host path (relative ones are relative to the compose file, i.e. the tree root).
    Bind,
    /// A named volume.
    Volume,
    Tmpfs,
}

#[derive(Debug, Clone)]
pub struct Mount {
    pub kind: MountKind,
    /// Bind: the host path as written; volume: its name; tmpfs: empty.
    pub source: String,
    /// The path inside the container.
    pub target: String,
    /// `:ro` or `read_only: true`.
    pub read_only: bool,
    pub line: usize,
}

/// A word of a command with its line in the compose file.
#[derive(Debug, Clone)]
pub struct Word {
    pub text: String,
    pub line: usize,
}

#[derive(Debug, Clone)]
pub struct Service<'a> {
    pub name: String,
    pub node: &'a Node,
    pub line: usize,
    pub image: Option<String>,
    pub mounts: Vec<Mount>,
    /// entrypoint words then command words.
    pub words: Vec<Word>,
    pub env: BTreeMap<String, Word>,
    /// The healthcheck `test` words (CMD / CMD-SHELL stripped; shell strings split on spaces).
    pub health: Vec<Word>,
}

/// Where a container path lands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    /// A path in the tree (relative to the tree root), from a relative bind mount.
    Tree(String),
    /// Inside a named volume: (volume, path inside it, `""` for the root).
    Volume(String, String),
    /// Inside a tmpfs or an absolute host bind: outside the tree.
    Elsewhere(String),
    /// Not under any mount: the container's own filesystem.
    Unmounted,
}

fn clean_rel(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    parts.join("/")
}

impl Service<'_> {
    /// The mount a container path is under (the longest target prefix), and the rest of the path.
    pub fn mount_for(&self, path: &str) -> Option<(&Mount, String)> {
        self.mounts
            .iter()
            .filter_map(|m| {
                let t = m.target.trim_end_matches('/');
                if path == t {
                    Some((m, String::new()))
                } else {
                    path.strip_prefix(&format!("{t}/"))
                        .map(|rest| (m, rest.to_string()))
                }
            })
            .max_by_key(|(m, _)| m.target.len())
    }

    pub fn resolve(&self, path: &str) -> Resolved {
        match self.mount_for(path) {
            None => Resolved::Unmounted,
            Some((m, rest)) => match m.kind {
                MountKind::Bind if !m.source.starts_with('/') => {
                    let base = clean_rel(&m.source);
                    Resolved::Tree(clean_rel(&format!("{base}/{rest}")))
                }
                MountKind::Volume => Resolved::Volume(m.source.clone(), clean_rel(&rest)),
                _ => Resolved::Elsewhere(format!("{}/{rest}", m.source)),
            },
        }
    }

    /// Values following `flag` (`--flag X` or `--flag=X`) in the command words.
    pub fn flag_values(&self, flags: &[&str]) -> Vec<&Word> {
        let mut out = Vec::new();
        let mut it = self.words.iter().peekable();
        while let Some(w) = it.next() {
            if flags.contains(&w.text.as_str()) {
                if let Some(v) = it.peek() {
                    out.push(*v);
                }
            } else if let Some((f, _)) = w.text.split_once('=')
                && flags.contains(&f)
            {
                out.push(w);
            }
        }
        out
    }
}

/// The value part of a `--flag=value` word, or the word itself.
pub fn word_value(w: &Word) -> &str {
    if w.text.starts_with('-') {
        w.text.split_once('=').map_or(w.text.as_str(), |(_, v)| v)
    } else {
        &w.text
    }
}

#[derive(Debug)]
pub struct Compose<'a> {
    pub path: String,
    pub root: &'a Node,
    pub services: Vec<Service<'a>>,
}

impl<'a> Compose<'a> {
    pub fn find(view: &'a TreeView<'_>) -> Option<Compose<'a>> {
        let path = COMPOSE_FILES.iter().find(|p| view.yaml.contains_key(**p))?;
        let root = view.yaml_root(path)?;
        let mut services = Vec::new();
        if let Some(svcs) = root.get("services") {
            for (k, v) in svcs.entries() {
                let Some(name) = k.as_str() else { continue };
                services.push(service(name, k.line(), v));
            }
        }
        Some(Compose {
            path: path.to_string(),
            root,
            services,
        })
    }

    pub fn service(&self, name: &str) -> Option<&Service<'a>> {
        self.services.iter().find(|s| s.name == name)
    }
}

fn split_words(n: &Node) -> Vec<Word> {
    match n.as_str() {
        Some(s) => shell_words(s)
            .into_iter()
            .map(|text| Word {
                text,
                line: n.line(),
            })
            .collect(),
        None => n
            .items()
            .iter()
            .filter_map(|i| {
                i.as_str().map(|s| Word {
                    text: s.to_string(),
                    line: i.line(),
                })
            })
            .collect(),
    }
}

/// Splits a command string like a POSIX shell would for plain words and quotes (no expansion).
pub fn shell_words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut have = false;
    let mut quote: Option<char> = None;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some('"'), '\\') => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            (Some(_), c) => cur.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                have = true;
            }
            (None, '\\') => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                    have = true;
                }
            }
            (None, c) if c.is_whitespace() => {
                if have || !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                    have = false;
                }
            }
            (None, c) => cur.push(c),
        }
    }
    if have || !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn service<'a>(name: &str, line: usize, n: &'a Node) -> Service<'a> {
    let mut mounts = Vec::new();
    for v in n.get("volumes").map(NodeExt::items).unwrap_or_default() {
        if let Some(s) = v.as_str() {
            let parts: Vec<&str> = s.splitn(3, ':').collect();
            let (src, dst) = match parts.as_slice() {
                [dst] => ("", *dst),
                [src, dst, ..] => (*src, *dst),
                [] => continue,
            };
            let kind = if src.is_empty() {
                MountKind::Volume
            } else if src.starts_with('.') || src.starts_with('/') || src.starts_with('~') {
                MountKind::Bind
            } else {
                MountKind::Volume
            };
            let read_only = parts
                .get(2)
                .is_some_and(|o| o.split(',').any(|o| o == "ro"));
            mounts.push(Mount {
                kind,
                source: src.to_string(),
                target: dst.to_string(),
                read_only,
                line: v.line(),
            });
        } else {
            let kind = match v.get("type").and_then(Node::as_str) {
                Some("bind") => MountKind::Bind,
                Some("tmpfs") => MountKind::Tmpfs,
                _ => MountKind::Volume,
            };
            let source = v
                .get("source")
                .and_then(Node::as_str)
                .unwrap_or("")
                .to_string();
            let target = v
                .get("target")
                .and_then(Node::as_str)
                .unwrap_or("")
                .to_string();
            let read_only = v.get("read_only").and_then(Node::yaml11_bool) == Some(true);
            mounts.push(Mount {
                kind,
                source,
                target,
                read_only,
                line: v.line(),
            });
        }
    }
    if let Some(t) = n.get("tmpfs") {
        for (p, pn) in t.str_nodes() {
            let target = p.split(':').next().unwrap_or(p).to_string();
            mounts.push(Mount {
                kind: MountKind::Tmpfs,
                source: String::new(),
                target,
                read_only: false,
                line: pn.line(),
            });
        }
    }
    let mut words = Vec::new();
    for key in ["entrypoint", "command"] {
        if let Some(c) = n.get(key) {
            words.extend(split_words(c));
        }
    }
    let mut env = BTreeMap::new();
    if let Some(e) = n.get("environment") {
        if e.is_map() {
            for (k, v) in e.entries() {
                if let Some(k) = k.as_str() {
                    env.insert(
                        k.to_string(),
                        Word {
                            text: v.as_str().unwrap_or("").to_string(),
                            line: v.line(),
                        },
                    );
                }
            }
        } else {
            for (s, i) in e.str_nodes() {
                let (k, v) = s.split_once('=').unwrap_or((s, ""));
                env.insert(
                    k.to_string(),
                    Word {
                        text: v.to_string(),
                        line: i.line(),
                    },
                );
            }
        }
    }
    let mut health = Vec::new();
    if let Some(t) = n.get("healthcheck").and_then(|h| h.get("test")) {
        let mut w = split_words(t);
        if t.as_str().is_none() {
            // ["CMD", ...] or ["CMD-SHELL", "string"]
            match w.first().map(|w| w.text.as_str()) {
                Some("CMD") => {
                    w.remove(0);
                }
                Some("CMD-SHELL") => {
                    let line = w[0].line;
                    let rest: Vec<String> = w[1..].iter().map(|x| x.text.clone()).collect();
                    w = shell_words(&rest.join(" "))
                        .into_iter()
                        .map(|text| Word { text, line })
                        .collect();
                }
                _ => {}
            }
        }
        health = w;
    }
    Service {
        name: name.to_string(),
        node: n,
        line,
        image: n.get("image").and_then(Node::as_str).map(String::from),
        mounts,
        words,
        env,
        health,
    }
}

/// A Synapse HTTP listener.
#[derive(Debug, Clone)]
pub struct Listener {
    pub path: Option<String>,
    pub port: Option<String>,
    pub kind: String,
    pub resources: Vec<String>,
    /// Tree file and line of the listener entry.
    pub file: String,
    pub line: usize,
}

/// A Synapse process: `main` or a worker.
#[derive(Debug, Clone)]
pub struct Process {
    /// `main` or the worker's `worker_name`.
    pub name: String,
    /// The worker's own file (None for main).
    pub worker_file: Option<String>,
    pub listeners: Vec<Listener>,
}

/// The Synapse side of the tree: the shared config and every worker file.
#[derive(Debug)]
pub struct Synapse<'a> {
    /// Tree path of the shared config (the YAML file with `server_name`).
    pub shared: String,
    pub root: &'a Node,
    pub main: Process,
    pub workers: Vec<Process>,
    /// worker file path -> its root node
    pub worker_roots: BTreeMap<String, &'a Node>,
}

fn listeners(ls: &[crate::synapse::Listener]) -> Vec<Listener> {
    ls.iter()
        .map(|l| Listener {
            path: l.path.clone(),
            port: l.port.map(|p| p.to_string()),
            kind: l.kind.clone(),
            resources: l.resources.clone(),
            file: l.at.file.clone(),
            line: l.at.line,
        })
        .collect()
}

impl<'a> Synapse<'a> {
    /// The Synapse side of the tree, from the project's deployment model
    /// ([`crate::synapse::Deployment`]: which file is the shared config, which are workers, their
    /// listeners), with the parsed roots the checks read settings from.
    pub fn find(view: &'a TreeView<'_>) -> Option<Synapse<'a>> {
        // A YAML file that did not load (syntax, alias bomb) is reported by the YAML checks; the
        // deployment model would parse it again without the size guard.
        if view
            .yaml
            .values()
            .any(|l| l.issues.iter().any(|i| i.code == "yaml::too-complex"))
        {
            return None;
        }
        let d = crate::synapse::Deployment::from_tree(view.tree).ok()??;
        let root = view.yaml_root(&d.shared_file)?;
        let mut main = None;
        let mut workers = Vec::new();
        let mut worker_roots = BTreeMap::new();
        for p in &d.processes {
            let proc_ = Process {
                name: p.name.clone(),
                worker_file: (!p.is_main()).then(|| p.file.clone()),
                listeners: listeners(&p.listeners),
            };
            if p.is_main() {
                main = Some(proc_);
            } else {
                worker_roots.insert(p.file.clone(), view.yaml_root(&p.file)?);
                workers.push(proc_);
            }
        }
        Some(Synapse {
            shared: d.shared_file.clone(),
            root,
            main: main?,
            workers,
            worker_roots,
        })
    }

    pub fn process(&self, name: &str) -> Option<&Process> {
        if name == "main" || name == "master" {
            return Some(&self.main);
        }
        self.workers.iter().find(|w| w.name == name)
    }

    /// A setting as the given process sees it: its worker file overrides the shared config.
    pub fn effective(&self, p: &Process, key: &str) -> Option<&'a Node> {
        p.worker_file
            .as_ref()
            .and_then(|f| self.worker_roots.get(f))
            .and_then(|r| r.get(key))
            .or_else(|| self.root.get(key))
    }

    /// Where a setting of a process comes from (file, line), for reporting.
    pub fn effective_at(&self, p: &Process, key: &str) -> Option<(String, usize)> {
        if let Some(f) = &p.worker_file
            && let Some(k) = self.worker_roots.get(f).and_then(|r| r.key_node(key))
        {
            return Some((f.clone(), k.line()));
        }
        self.root
            .key_node(key)
            .map(|k| (self.shared.clone(), k.line()))
    }
}

/// The config files (container paths) a Synapse service is started with.
pub fn synapse_config_args<'s>(svc: &'s Service<'_>) -> Vec<&'s Word> {
    let mut out = svc.flag_values(&["--config-path", "-c"]);
    if out.is_empty()
        && let Some(w) = svc.env.get("SYNAPSE_CONFIG_PATH")
    {
        out.push(w);
    }
    out
}

/// The compose service running a Synapse process: the one whose config arguments resolve to
/// the worker's file (main: the shared file and no worker file).
pub fn service_of<'c, 'a>(
    compose: &'c Compose<'a>,
    syn: &Synapse<'_>,
    p: &Process,
) -> Option<&'c Service<'a>> {
    compose.services.iter().find(|s| {
        let files: Vec<Resolved> = synapse_config_args(s)
            .iter()
            .map(|w| s.resolve(word_value(w)))
            .collect();
        match &p.worker_file {
            Some(f) => files.contains(&Resolved::Tree(f.clone())),
            None => {
                files.contains(&Resolved::Tree(syn.shared.clone()))
                    && !files
                        .iter()
                        .any(|r| matches!(r, Resolved::Tree(t) if syn.worker_roots.contains_key(t)))
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words() {
        assert_eq!(
            shell_words(r#"a "b c" 'd e' f\ g"#),
            vec!["a", "b c", "d e", "f g"]
        );
        assert_eq!(
            shell_words("redis-server --unixsocket /sockets/redis.sock"),
            vec!["redis-server", "--unixsocket", "/sockets/redis.sock"]
        );
    }
}
