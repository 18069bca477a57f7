//! A Compose service as the PostgreSQL checks run it on this machine: its entrypoint, command,
//! environment (`env_file`s then `environment`) and volumes, read from an extracted tree on disk
//! through the project's one Compose model ([`crate::compose`]), plus the mapping of container
//! paths onto host directories.

use crate::compose::{Compose, MountKind};
use crate::tree::{Fragment, Tree, TreeFile};
use anyhow::{Context, bail};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use crate::compose::env::read_file as read_env_file;

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

/// A file of an extracted tree on disk, as a tree file (its lines are its own).
fn disk_file(dir: &Path, rel: &str) -> anyhow::Result<Option<TreeFile>> {
    let path = dir.join(rel);
    if !path.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let frag = Fragment {
        md_file: path.display().to_string(),
        md_line: 1,
        out_line: 1,
        lines: text.lines().count().max(1),
    };
    Ok(Some(TreeFile::new(rel, text, vec![frag], "")))
}

/// Reads service `name` of the extracted tree in `tree` (its Compose file and `.env`).
pub fn service(tree: &Path, name: &str) -> anyhow::Result<Service> {
    let mut files = Tree::default();
    for rel in crate::compose::FILES
        .iter()
        .chain([&crate::compose::DOT_ENV])
    {
        if let Some(f) = disk_file(tree, rel)? {
            files.files.insert(rel.to_string(), f);
        }
    }
    let Some(file) = Compose::file_of(&files) else {
        bail!("{} has no Compose file", tree.display());
    };
    let path = tree.join(file);
    if let Err(e) = files.files[file].yaml() {
        bail!("{}:{}: {}", path.display(), e.line, e.message);
    }
    let compose =
        Compose::from_tree(&files).with_context(|| format!("{} is empty", path.display()))?;
    let svc = compose
        .service(name)
        .with_context(|| format!("{} has no service `{name}`", path.display()))?;
    let env = svc
        .environment(|rel| std::fs::read_to_string(tree.join(rel)).ok())
        .map_err(|e| anyhow::anyhow!("{e} (in {})", tree.display()))?;
    let text = |w: &[crate::compose::Word]| w.iter().map(|w| w.text.clone()).collect();
    Ok(Service {
        name: name.to_string(),
        entrypoint: text(&svc.entrypoint),
        command: text(&svc.command),
        env,
        volumes: svc
            .mounts
            .iter()
            .filter(|m| m.kind != MountKind::Tmpfs)
            .map(|m| (m.source.clone(), m.target.clone()))
            .collect(),
        user: svc.user.clone(),
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
