//! The Compose model: the one reading of the deployment's Compose file, shared by lint, the
//! secrets writer, the stand-in images, the PostgreSQL checks and the stack test.
//!
//! [`Compose::from_tree`] reads the Compose file of a tree (through the tree's one YAML parse,
//! anchors and `<<` merge keys applied) into its services: image, mounts, entrypoint and command
//! words, environment, `env_file`s and healthcheck words, each with the line it came from (so
//! every finding can point at the Markdown line), values interpolated from the project's `.env`
//! as Compose does ([`env`]). Container paths map to tree paths through a service's mounts
//! ([`Service::resolve`]): "which file of the book is `/data/workers/rooms1.yaml` inside the
//! `rooms1` container?".
//!
//! The running stack also asks `docker compose config` (the real Compose resolves profiles and
//! merges exactly); this model is the static side, and where the Markdown is.

pub mod env;

use crate::tree::Tree;
use crate::yaml::Node;
use std::collections::BTreeMap;
use std::sync::Arc;

/// The names Compose looks for, in its order.
pub const FILES: &[&str] = &[
    "docker-compose.yml",
    "docker-compose.yaml",
    "compose.yml",
    "compose.yaml",
];

/// The project's environment file (interpolation variables), next to the Compose file.
pub const DOT_ENV: &str = ".env";

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

/// A word (of a command, a path, a value) with its line in the Compose file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Word {
    pub text: String,
    pub line: usize,
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

#[derive(Debug, Clone)]
pub struct Service {
    pub name: String,
    /// The service's mapping as written (merge keys applied), for keys the model does not read.
    pub node: Node,
    /// The line of the service's key.
    pub line: usize,
    pub image: Option<Word>,
    pub mounts: Vec<Mount>,
    pub entrypoint: Vec<Word>,
    pub command: Vec<Word>,
    /// `entrypoint` words then `command` words.
    pub words: Vec<Word>,
    /// `environment`, as the service writes it.
    pub env: BTreeMap<String, Word>,
    /// `env_file` paths (relative to the tree root), in order.
    pub env_files: Vec<Word>,
    /// The healthcheck `test` words (CMD / CMD-SHELL stripped; shell strings split on spaces).
    pub health: Vec<Word>,
    pub user: Option<String>,
}

/// The Compose file of a tree.
#[derive(Debug, Clone)]
pub struct Compose {
    /// Tree path of the Compose file.
    pub path: String,
    /// Its first document.
    pub root: Node,
    pub services: Vec<Service>,
    /// The variables interpolation sees: the project's `.env`.
    pub vars: BTreeMap<String, String>,
}

/// `a/./b/../c` -> `a/c`, relative and without empty parts; None when the path is absolute or
/// climbs above its start ([`crate::contain::normalize`]).
pub fn clean_rel(p: &str) -> Option<String> {
    crate::contain::normalize(p)
}

impl Compose {
    /// The tree path of its Compose file, if it has one.
    pub fn file_of(tree: &Tree) -> Option<&'static str> {
        FILES.iter().copied().find(|p| tree.get(p).is_some())
    }

    /// The model of the tree's Compose file. None when the tree has none, or it is not YAML
    /// (the YAML checks report why). Trees with the same Compose file and `.env` (the main tree,
    /// its variants, the trees with generated secrets) share one model.
    pub fn from_tree(tree: &Tree) -> Option<Arc<Compose>> {
        type Key = (&'static str, String, Option<String>);
        static MODELS: crate::cache::Memo<Key, Option<Arc<Compose>>> = crate::cache::Memo::new();
        let path = Compose::file_of(tree)?;
        let file = tree.get(path)?;
        let dot_env = tree.get(DOT_ENV).map(|f| f.content.clone());
        let key = (path, file.content.clone(), dot_env.clone());
        MODELS.get_or(key, || {
            file.yaml_root().map(|root| {
                let vars = dot_env
                    .as_deref()
                    .map(|text| {
                        env::parse(text)
                            .into_iter()
                            .map(|v| (v.key, v.value))
                            .collect()
                    })
                    .unwrap_or_default();
                Arc::new(Compose::from_root(path, root, vars))
            })
        })
    }

    /// The model of a Compose document (`vars`: the interpolation variables).
    pub fn from_root(path: &str, root: &Node, vars: BTreeMap<String, String>) -> Compose {
        let mut services = Vec::new();
        if let Some(svcs) = root.get("services") {
            for (k, v) in svcs.entries() {
                let Some(name) = k.as_str() else { continue };
                services.push(service(name, k.line(), v, &vars));
            }
        }
        Compose {
            path: path.to_string(),
            root: root.clone(),
            services,
            vars,
        }
    }

    pub fn service(&self, name: &str) -> Option<&Service> {
        self.services.iter().find(|s| s.name == name)
    }

    /// A value of the file with its variables filled in, as Compose reads it.
    pub fn interpolate(&self, text: &str) -> String {
        env::interpolate(text, &self.vars)
    }

    /// The tree path a container path is, through any service's relative bind mount (the
    /// longest container prefix wins); None when no bind mount of the tree covers it.
    pub fn container_to_tree(&self, container_path: &str) -> Option<String> {
        self.services
            .iter()
            .filter_map(|s| {
                let (m, _) = s.mount_for(container_path)?;
                match s.resolve(container_path) {
                    Resolved::Tree(t) => Some((m.target.len(), t)),
                    _ => None,
                }
            })
            .max_by_key(|(len, _)| *len)
            .map(|(_, t)| t)
            .filter(|t| !t.is_empty())
    }
}

impl Service {
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

    /// Where a container path of this service lands.
    pub fn resolve(&self, path: &str) -> Resolved {
        match self.mount_for(path) {
            None => Resolved::Unmounted,
            Some((m, rest)) => match m.kind {
                MountKind::Bind if !m.source.starts_with('/') && !m.source.starts_with('~') => {
                    // A source or path that climbs out of the project directory (`./../keys`,
                    // `/data/../../x`) lands outside the tree.
                    match clean_rel(&m.source)
                        .and_then(|base| clean_rel(&format!("./{base}/{rest}")))
                    {
                        Some(t) => Resolved::Tree(t),
                        None => Resolved::Elsewhere(format!("{}/{rest}", m.source)),
                    }
                }
                MountKind::Volume => match clean_rel(&rest) {
                    Some(r) => Resolved::Volume(m.source.clone(), r),
                    None => Resolved::Elsewhere(format!("{}/{rest}", m.source)),
                },
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

    /// The container's environment as Compose builds it: every `env_file` in order, then
    /// `environment` (which wins). `read` gives an env file's text by its tree path.
    pub fn environment(
        &self,
        read: impl Fn(&str) -> Option<String>,
    ) -> Result<BTreeMap<String, String>, String> {
        let mut out = BTreeMap::new();
        for f in &self.env_files {
            let text = clean_rel(&f.text).and_then(|p| read(&p)).ok_or_else(|| {
                format!(
                    "service `{}` reads env_file `{}`, which does not exist",
                    self.name, f.text
                )
            })?;
            out.extend(env::parse(&text).into_iter().map(|v| (v.key, v.value)));
        }
        out.extend(self.env.iter().map(|(k, v)| (k.clone(), v.text.clone())));
        Ok(out)
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

fn split_words(n: &Node, vars: &BTreeMap<String, String>) -> Vec<Word> {
    match n.as_str() {
        Some(s) => shell_words(&env::interpolate(s, vars))
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
                    text: env::interpolate(s, vars),
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

fn mounts(n: &Node, vars: &BTreeMap<String, String>) -> Vec<Mount> {
    let i = |s: &str| env::interpolate(s, vars);
    let mut mounts = Vec::new();
    for v in n.get("volumes").map(Node::items).unwrap_or_default() {
        if let Some(s) = v.as_str() {
            let s = i(s);
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
            let field = |k: &str| v.get(k).and_then(Node::as_str).map(i).unwrap_or_default();
            mounts.push(Mount {
                kind,
                source: field("source"),
                target: field("target"),
                read_only: v.get("read_only").and_then(Node::yaml11_bool) == Some(true),
                line: v.line(),
            });
        }
    }
    if let Some(t) = n.get("tmpfs") {
        for (p, pn) in t.str_nodes() {
            let p = i(p);
            let target = p.split(':').next().unwrap_or(&p).to_string();
            mounts.push(Mount {
                kind: MountKind::Tmpfs,
                source: String::new(),
                target,
                read_only: false,
                line: pn.line(),
            });
        }
    }
    mounts
}

fn service(name: &str, line: usize, n: &Node, vars: &BTreeMap<String, String>) -> Service {
    let i = |s: &str| env::interpolate(s, vars);
    let entrypoint = n
        .get("entrypoint")
        .map(|c| split_words(c, vars))
        .unwrap_or_default();
    let command = n
        .get("command")
        .map(|c| split_words(c, vars))
        .unwrap_or_default();
    let mut env = BTreeMap::new();
    if let Some(e) = n.get("environment") {
        if e.is_map() {
            for (k, v) in e.entries() {
                if let Some(k) = k.as_str() {
                    env.insert(
                        k.to_string(),
                        Word {
                            text: i(v.as_str().unwrap_or("")),
                            line: v.line(),
                        },
                    );
                }
            }
        } else {
            for (s, item) in e.str_nodes() {
                let (k, v) = s.split_once('=').unwrap_or((s, ""));
                env.insert(
                    k.to_string(),
                    Word {
                        text: i(v),
                        line: item.line(),
                    },
                );
            }
        }
    }
    let mut env_files = Vec::new();
    if let Some(ef) = n.get("env_file") {
        if let Some(s) = ef.as_str() {
            env_files.push(Word {
                text: i(s),
                line: ef.line(),
            });
        } else {
            for item in ef.items() {
                if let Some(s) = item
                    .as_str()
                    .or_else(|| item.get("path").and_then(Node::as_str))
                {
                    env_files.push(Word {
                        text: i(s),
                        line: item.line(),
                    });
                }
            }
        }
    }
    let mut health = Vec::new();
    if let Some(t) = n.get("healthcheck").and_then(|h| h.get("test")) {
        let mut w = split_words(t, vars);
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
    let image = n.get("image").and_then(|img| {
        img.as_str().map(|s| Word {
            text: i(s),
            line: img.line(),
        })
    });
    Service {
        name: name.to_string(),
        node: n.clone(),
        line,
        image,
        mounts: mounts(n, vars),
        words: entrypoint.iter().chain(&command).cloned().collect(),
        entrypoint,
        command,
        env,
        env_files,
        health,
        user: n.get("user").and_then(Node::as_str).map(i),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "x-syn: &syn
  image: ghcr.io/element-hq/synapse:${SYNAPSE_TAG:-v1}
  env_file: .synapse.env
  volumes:
    - ./synapse:/data:ro
    - sockets:/sockets
services:
  main:
    <<: *syn
    command: [\"run\", \"--config-path=/data/homeserver.yaml\"]
    environment:
      SYNAPSE_PROCESS: main
  db:
    image: postgres:${PG}
    env_file: [.postgres.env]
    command: postgres -c 'config_file=/etc/postgresql/postgresql.conf'
    volumes:
      - type: bind
        source: ./postgres/postgresql.conf
        target: /etc/postgresql/postgresql.conf
    tmpfs: /run
    healthcheck:
      test: [\"CMD-SHELL\", \"pg_isready -h /sockets\"]
";

    fn tree() -> Tree {
        Tree::from_literal(&[
            ("docker-compose.yml", FILE),
            (".env", "PG=17-alpine\n"),
            (".synapse.env", "A=1\nSYNAPSE_PROCESS=x\n"),
        ])
    }

    #[test]
    fn services_mounts_and_interpolation() {
        let t = tree();
        let c = Compose::from_tree(&t).unwrap();
        assert_eq!(c.path, "docker-compose.yml");
        let main = c.service("main").unwrap();
        assert_eq!(main.line, 8);
        let img = main.image.as_ref().unwrap();
        assert_eq!(
            (img.text.as_str(), img.line),
            ("ghcr.io/element-hq/synapse:v1", 2)
        );
        assert_eq!(
            c.service("db").unwrap().image.as_ref().unwrap().text,
            "postgres:17-alpine"
        );
        assert_eq!(
            main.resolve("/data/workers/a.yaml"),
            Resolved::Tree("synapse/workers/a.yaml".into())
        );
        assert_eq!(
            main.resolve("/sockets/x.sock"),
            Resolved::Volume("sockets".into(), "x.sock".into())
        );
        assert_eq!(main.resolve("/etc/x"), Resolved::Unmounted);
        assert!(main.mounts[0].read_only);
        let cfg = main.flag_values(&["--config-path"]);
        assert_eq!(word_value(cfg[0]), "/data/homeserver.yaml");
        let env = main
            .environment(|p| t.get(p).map(|f| f.content.clone()))
            .unwrap();
        assert_eq!(
            (env["A"].as_str(), env["SYNAPSE_PROCESS"].as_str()),
            ("1", "main")
        );
        let db = c.service("db").unwrap();
        assert_eq!(
            db.words[2].text,
            "config_file=/etc/postgresql/postgresql.conf"
        );
        assert_eq!(
            db.resolve("/etc/postgresql/postgresql.conf"),
            Resolved::Tree("postgres/postgresql.conf".into())
        );
        assert_eq!(db.mounts[1].kind, MountKind::Tmpfs);
        assert_eq!(db.health[0].text, "pg_isready");
        assert!(
            db.environment(|_| None).is_err(),
            "a missing env_file is an error"
        );
        assert_eq!(
            c.container_to_tree("/data/keys/k.key").as_deref(),
            Some("synapse/keys/k.key")
        );
        assert_eq!(c.container_to_tree("/sockets/x"), None);
    }

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
