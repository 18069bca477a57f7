//! The few parts of a Compose service the PostgreSQL checks need, read from the extracted
//! `docker-compose.yml`: entrypoint, command, environment (`env_file` then `environment`) and
//! short-syntax volumes, plus the mapping of container paths onto host directories.

use crate::yaml::{self, Kind, Node};
use anyhow::{Context, bail};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Default)]
pub struct Service {
    pub name: String,
    pub entrypoint: Vec<String>,
    pub command: Vec<String>,
    /// `env_file` contents first, then `environment` (which wins), as Compose does.
    pub env: BTreeMap<String, String>,
    /// `(source, container path)`; source is `./relative`, `/absolute` or a named volume.
    pub volumes: Vec<(String, String)>,
    pub user: Option<String>,
}

fn scalar(y: &Node) -> Option<String> {
    match &y.kind {
        Kind::Scalar { value, .. } => Some(if y.is_null() {
            String::new()
        } else {
            value.clone()
        }),
        _ => None,
    }
}

fn words(y: Option<&Node>) -> Vec<String> {
    match y.map(|n| &n.kind) {
        Some(Kind::Seq(items)) => items.iter().filter_map(scalar).collect(),
        Some(_) => y
            .and_then(scalar)
            .map(|s| s.split_whitespace().map(String::from).collect())
            .unwrap_or_default(),
        None => Vec::new(),
    }
}

/// Reads a `.env`-style file: `KEY=VALUE` lines, `#` comments, optional quotes around values.
pub fn read_env_file(path: &Path) -> anyhow::Result<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read env_file {}", path.display()))?;
    let mut env = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let v = v.trim();
        let v = v
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
            .unwrap_or(v);
        env.insert(k.trim().to_string(), v.to_string());
    }
    Ok(env)
}

/// Reads service `name` of `tree/docker-compose.yml`.
pub fn service(tree: &Path, name: &str) -> anyhow::Result<Service> {
    let path = tree.join("docker-compose.yml");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let loaded = yaml::load(&text)
        .map_err(|e| anyhow::anyhow!("{}:{}: {}", path.display(), e.line, e.message))?;
    let doc = loaded
        .docs
        .first()
        .with_context(|| format!("{} is empty", path.display()))?;
    let svc = doc
        .path(&["services", name])
        .with_context(|| format!("{} has no service `{name}`", path.display()))?;
    let mut env = BTreeMap::new();
    for f in words(svc.get("env_file")) {
        env.extend(read_env_file(&tree.join(&f))?);
    }
    match svc.get("environment").map(|n| &n.kind) {
        Some(Kind::Map(m)) => {
            for (k, v) in m {
                if let (Some(k), Some(v)) = (scalar(k), scalar(v)) {
                    env.insert(k, v);
                }
            }
        }
        Some(Kind::Seq(items)) => {
            for it in items.iter().filter_map(scalar) {
                if let Some((k, v)) = it.split_once('=') {
                    env.insert(k.into(), v.into());
                }
            }
        }
        _ => {}
    }
    let mut volumes = Vec::new();
    if let Some(Kind::Seq(items)) = svc.get("volumes").map(|n| &n.kind) {
        for v in items {
            let Some(s) = scalar(v) else {
                bail!("service `{name}`: only short-syntax volumes are supported")
            };
            let mut parts = s.split(':');
            let (Some(src), Some(dst)) = (parts.next(), parts.next()) else {
                bail!("service `{name}`: volume `{s}` has no container path")
            };
            volumes.push((src.to_string(), dst.to_string()));
        }
    }
    Ok(Service {
        name: name.to_string(),
        entrypoint: words(svc.get("entrypoint")),
        command: words(svc.get("command")),
        env,
        volumes,
        user: svc.get("user").and_then(scalar),
    })
}

/// Where each container path of a service lives on this machine.
#[derive(Debug, Clone, Default)]
pub struct Mounts {
    /// `(container path, host path)`, longest container path first.
    pub map: Vec<(String, PathBuf)>,
}

impl Mounts {
    /// Bind mounts (`./x`) map into `tree`; named volumes through `named`, anything else is
    /// an error (the checks must know where every mount of the service is).
    pub fn of(
        svc: &Service,
        tree: &Path,
        named: &BTreeMap<&str, PathBuf>,
    ) -> anyhow::Result<Mounts> {
        let mut map = Vec::new();
        for (src, dst) in &svc.volumes {
            let host = if let Some(rel) = src.strip_prefix("./") {
                tree.join(rel)
            } else if src == "." {
                tree.to_path_buf()
            } else if let Some(p) = named.get(src.as_str()) {
                p.clone()
            } else {
                bail!(
                    "service `{}`: no host directory for volume `{src}`",
                    svc.name
                )
            };
            map.push((dst.trim_end_matches('/').to_string(), host));
        }
        map.sort_by_key(|m| std::cmp::Reverse(m.0.len()));
        Ok(Mounts { map })
    }

    /// Adds a mapping (e.g. a path the image declares, like its PGDATA).
    pub fn add(&mut self, container: &str, host: PathBuf) {
        self.map
            .push((container.trim_end_matches('/').to_string(), host));
        self.map.sort_by_key(|m| std::cmp::Reverse(m.0.len()));
    }

    /// Rewrites every container path inside `s` (at its start or after `=`) to the host path.
    pub fn rewrite(&self, s: &str) -> String {
        let starts: Vec<usize> = std::iter::once(0)
            .chain(s.match_indices('=').map(|(i, _)| i + 1))
            .collect();
        for &at in starts.iter().rev() {
            let rest = &s[at..];
            for (c, h) in &self.map {
                let hit = rest == c
                    || rest
                        .strip_prefix(c.as_str())
                        .is_some_and(|r| r.starts_with('/'));
                if hit {
                    return format!("{}{}{}", &s[..at], h.display(), &rest[c.len()..]);
                }
            }
        }
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_paths_at_start_and_after_equals() {
        let mut m = Mounts::default();
        m.add("/sockets", PathBuf::from("/tmp/s"));
        m.add(
            "/etc/postgresql/postgresql.conf",
            PathBuf::from("/t/postgres/postgresql.conf"),
        );
        assert_eq!(m.rewrite("/sockets"), "/tmp/s");
        assert_eq!(m.rewrite("/sockets/x.sock"), "/tmp/s/x.sock");
        assert_eq!(m.rewrite("/socketsx"), "/socketsx");
        assert_eq!(
            m.rewrite("config_file=/etc/postgresql/postgresql.conf"),
            "config_file=/t/postgres/postgresql.conf"
        );
        assert_eq!(m.rewrite("port=5433"), "port=5433");
    }

    #[test]
    fn reads_a_service() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(".e.env"), "# c\nA=1\nB=\"two\"\n").unwrap();
        std::fs::write(
            dir.path().join("docker-compose.yml"),
            "services:\n  s:\n    env_file: .e.env\n    environment:\n      B: \"2\"\n      C: /x\n    entrypoint: [\"bash\", \"/i.sh\"]\n    command: postgres -c port=5433\n    volumes:\n      - sockets:/sockets\n      - ./p/i.sh:/i.sh:ro\n",
        )
        .unwrap();
        let s = service(dir.path(), "s").unwrap();
        assert_eq!(s.env["A"], "1");
        assert_eq!(s.env["B"], "2");
        assert_eq!(s.entrypoint, ["bash", "/i.sh"]);
        assert_eq!(s.command, ["postgres", "-c", "port=5433"]);
        let named = BTreeMap::from([("sockets", PathBuf::from("/tmp/sk"))]);
        let m = Mounts::of(&s, dir.path(), &named).unwrap();
        assert_eq!(
            m.rewrite("/i.sh"),
            dir.path().join("p/i.sh").display().to_string()
        );
        assert!(service(dir.path(), "nope").is_err());
    }
}
