//! Where the pinned external tools live, and their versions (read from `versions.toml`).
//!
//! Every command that runs Synapse, mdBook, nginx, PostgreSQL, Docker Compose or the Python
//! linters finds them through here, so there is one place to change a path or a version. Nothing
//! here installs anything: `cargo xtask setup` does ([`crate::setup`]), and a missing tool is an
//! error that names the setup part to run.
//!
//! What a tool answers about itself (its version, where PostgreSQL's binaries are) is asked once
//! and kept in the cache ([`crate::cache`]) under the tool's identity (path, size, mtime): a warm
//! `cargo xtask check` starts none of them.

use anyhow::Context;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// `versions.toml` at the repository root, parsed (once per process).
pub fn versions() -> anyhow::Result<toml::Table> {
    static PARSED: std::sync::OnceLock<Result<toml::Table, String>> = std::sync::OnceLock::new();
    PARSED
        .get_or_init(|| {
            let p = crate::project_root().join("versions.toml");
            let text = std::fs::read_to_string(&p)
                .map_err(|e| format!("cannot read {}: {e}", p.display()))?;
            text.parse()
                .map_err(|e| format!("{} is not valid TOML: {e}", p.display()))
        })
        .clone()
        .map_err(anyhow::Error::msg)
}

/// A string from versions.toml, e.g. `version("synapse", "version")`.
pub fn version(section: &str, key: &str) -> anyhow::Result<String> {
    versions()?
        .get(section)
        .and_then(|s| s.get(key))
        .and_then(|v| v.as_str())
        .map(String::from)
        .with_context(|| format!("versions.toml has no [{section}] {key}"))
}

/// The pip requirement strings for the pinned Synapse.
pub fn synapse_requirements() -> anyhow::Result<Vec<String>> {
    synapse_requirements_for(&version("synapse", "version")?)
}

/// The Synapse release the upgrade test starts on: the version of `versions.toml
/// [images-upgrade-from] synapse` (`ghcr.io/element-hq/synapse:v1.162.0` -> `1.162.0`), None
/// when there is no such pin.
pub fn synapse_upgrade_from() -> anyhow::Result<Option<String>> {
    let v = versions()?;
    let Some(image) = v
        .get("images-upgrade-from")
        .and_then(|t| t.get("synapse"))
        .and_then(|x| x.as_str())
    else {
        return Ok(None);
    };
    let tag = image
        .rsplit_once(':')
        .map(|(_, t)| t)
        .filter(|t| !t.contains('/'))
        .with_context(|| {
            format!("versions.toml [images-upgrade-from] synapse = {image:?} has no tag")
        })?;
    let version = tag.strip_prefix('v').with_context(|| {
        format!("versions.toml [images-upgrade-from] synapse: tag {tag:?} is not v<version>")
    })?;
    Ok(Some(version.to_string()))
}

/// The pip requirement strings for Synapse `version`, with the extras and the psycopg2-binary
/// of versions.toml [synapse].
pub fn synapse_requirements_for(version: &str) -> anyhow::Result<Vec<String>> {
    let v = versions()?;
    let s = v.get("synapse").context("versions.toml has no [synapse]")?;
    let extras: Vec<&str> = s
        .get("extras")
        .and_then(|x| x.as_array())
        .map(|a| a.iter().filter_map(|e| e.as_str()).collect())
        .unwrap_or_default();
    let mut reqs = vec![if extras.is_empty() {
        format!("matrix-synapse=={version}")
    } else {
        format!("matrix-synapse[{}]=={version}", extras.join(","))
    }];
    if let Some(p) = s.get("psycopg2-binary").and_then(|x| x.as_str()) {
        reqs.push(format!("psycopg2-binary=={p}"));
    }
    // An older release than the pinned one gets the constraints its own lock file had.
    if s.get("version").and_then(|x| x.as_str()) != Some(version) {
        for r in s
            .get("older-release-requirements")
            .and_then(|x| x.as_array())
            .map_or(&[][..], |a| a.as_slice())
        {
            reqs.extend(r.as_str().map(String::from));
        }
    }
    Ok(reqs)
}

/// Everything installed by the project itself lives under `target/`.
pub fn target_dir() -> PathBuf {
    crate::project_root().join("target")
}

/// The virtualenv holding the pinned Synapse.
pub fn synapse_venv() -> PathBuf {
    target_dir().join("synapse-venv")
}

/// The venv's Python (runs `-m synapse.config`, `-m synapse.app.homeserver`, ...).
pub fn synapse_python() -> PathBuf {
    synapse_venv().join("bin").join("python")
}

/// Where `cargo install --root` puts mdbook and mdbook-mermaid.
pub fn tools_bin() -> PathBuf {
    target_dir().join("tools").join("bin")
}

/// The directory of the PostgreSQL server binaries (Debian: /usr/lib/postgresql/15/bin), asked
/// of `pg_config` once per installation (cached under its identity and the installed versions).
pub fn pg_bindir() -> Option<PathBuf> {
    let pg_config = which("pg_config");
    let id = pg_config
        .as_deref()
        .map(crate::cache::tool_id)
        .unwrap_or_default();
    let installed = crate::cache::tool_id(Path::new("/usr/lib/postgresql"));
    let key = crate::cache::key(&[b"pg_bindir v1", &id, &installed]);
    let dir = crate::cache::memo(&key, || Ok(pg_bindir_uncached())).ok()??;
    // A cached answer whose server has gone is asked again.
    if dir.join("postgres").exists() {
        Some(dir)
    } else {
        pg_bindir_uncached()
    }
}

fn pg_bindir_uncached() -> Option<PathBuf> {
    let out = std::process::Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()?;
    let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if dir.join("postgres").exists() {
        return Some(dir);
    }
    // pg_config may come from libpq-dev while the server is elsewhere: look for the newest.
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("postgres").exists())
        .collect();
    found.sort();
    found.pop()
}

/// Finds a program on PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The one virtualenv of the Python tools of `[pytools]` (gixy-ng, check-jsonschema, zizmor),
/// made by `cargo xtask setup pytools`.
pub fn py_tools() -> PathBuf {
    target_dir().join("py-tools")
}

/// The version of each Python distribution `names` installed in `venv` (absent when it is not
/// installed, or the venv has no working Python).
pub fn py_versions(venv: &Path, names: &[&str]) -> BTreeMap<String, String> {
    const SCRIPT: &str = r#"
import importlib.metadata as m, sys
for n in sys.argv[1:]:
    try:
        print(n, m.version(n))
    except m.PackageNotFoundError:
        pass
"#;
    let out = Command::new(venv.join("bin/python"))
        .arg("-c")
        .arg(SCRIPT)
        .args(names)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output();
    let mut found = BTreeMap::new();
    if let Ok(o) = out
        && o.status.success()
    {
        for line in String::from_utf8_lossy(&o.stdout).lines() {
            if let Some((n, v)) = line.split_once(' ') {
                found.insert(n.to_string(), v.trim().to_string());
            }
        }
    }
    found
}

/// Whether `target/py-tools` has the pinned version of the `[pytools]` distribution `dist`
/// (answered once per process and distribution, and cached under the venv's identity: its
/// Python and its `site-packages` directories, which change when anything is installed).
pub fn py_tool_ready(dist: &str) -> bool {
    static READY: std::sync::Mutex<BTreeMap<String, bool>> = std::sync::Mutex::new(BTreeMap::new());
    let mut ready = READY
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    *ready.entry(dist.to_string()).or_insert_with(|| {
        let Ok(want) = version("pytools", dist) else {
            return false;
        };
        let venv = py_tools();
        let mut id = crate::cache::tool_id(&venv.join("bin/python"));
        for sp in site_packages(&venv) {
            id.extend(crate::cache::tool_id(&sp));
        }
        let key = crate::cache::key(&[b"py_versions v1", &id, dist.as_bytes()]);
        let got = crate::cache::memo(&key, || Ok(py_versions(&venv, &[dist]).get(dist).cloned()));
        got.ok().flatten() == Some(want)
    })
}

/// The `lib/python*/site-packages` directories of a venv.
fn site_packages(venv: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(venv.join("lib"))
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path().join("site-packages")))
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// The program `bin` of the `[pytools]` distribution `dist` in `target/py-tools/bin`, or an
/// error saying to run `cargo xtask setup pytools` when the pinned version is not installed.
pub fn py_tool(dist: &str, bin: &str) -> anyhow::Result<PathBuf> {
    let want = version("pytools", dist)?;
    let path = py_tools().join("bin").join(bin);
    anyhow::ensure!(
        py_tool_ready(dist) && path.is_file(),
        "{dist} {want} is not installed in {}: run `cargo xtask setup pytools`",
        py_tools().display()
    );
    Ok(path)
}

/// Where `cargo xtask setup compose` installs the Compose plugin:
/// `$DOCKER_CONFIG/cli-plugins`, by default `~/.docker/cli-plugins` (the first place the Docker
/// CLI looks for plugins).
pub fn compose_plugin_dir() -> PathBuf {
    match std::env::var_os("DOCKER_CONFIG").filter(|v| !v.is_empty()) {
        Some(d) => PathBuf::from(d).join("cli-plugins"),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
            .join(".docker/cli-plugins"),
    }
}

/// The Docker Compose v2 binary `docker compose` runs: the `docker-compose` CLI plugin, looked
/// up where the Docker CLI looks (the user's plugin directory, then the system ones).
pub fn compose_plugin() -> Option<PathBuf> {
    std::iter::once(compose_plugin_dir())
        .chain(
            [
                "/usr/local/lib/docker/cli-plugins",
                "/usr/local/libexec/docker/cli-plugins",
                "/usr/lib/docker/cli-plugins",
                "/usr/libexec/docker/cli-plugins",
            ]
            .into_iter()
            .map(PathBuf::from),
        )
        .map(|d| d.join("docker-compose"))
        .find(|p| p.is_file())
}

/// The version the Compose binary `bin` reports, asked once per binary (cached under its
/// identity).
pub fn compose_version(bin: &Path) -> Option<String> {
    let key = crate::cache::key(&[b"compose version v1", &crate::cache::tool_id(bin)]);
    crate::cache::memo(&key, || Ok(compose_version_of(&mut Command::new(bin))))
        .ok()
        .flatten()
}

/// The version a Compose binary reports (`2.40.3` from `Docker Compose version v2.40.3`).
pub fn compose_version_of(cmd: &mut Command) -> Option<String> {
    let out = cmd
        .arg("version")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .find_map(|w| {
            w.strip_prefix('v')
                .filter(|v| v.starts_with(|c: char| c.is_ascii_digit()))
                .map(str::to_string)
        })
}

/// A `docker compose` command (the Docker CLI with the pinned Compose v2 plugin), for everything
/// that drives a deployment. An error naming `cargo xtask setup compose` when the plugin is
/// missing.
pub fn docker_compose() -> anyhow::Result<Command> {
    compose_plugin().context(
        "Docker Compose v2 is not installed (no docker-compose CLI plugin): run `cargo xtask setup compose`",
    )?;
    let docker = which("docker").context("the docker CLI is not installed")?;
    let mut cmd = Command::new(docker);
    cmd.arg("compose");
    Ok(cmd)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// After `cargo xtask setup compose`, what `docker compose` runs is the pinned Compose (the
    /// plugin itself where there is no Docker CLI, as in CI's container).
    #[test]
    fn docker_compose_is_the_pinned_version() {
        let want = version("compose", "version").unwrap();
        let got = match which("docker") {
            Some(_) => compose_version_of(&mut docker_compose().unwrap()),
            None => compose_version_of(&mut Command::new(
                compose_plugin().expect("run `cargo xtask setup compose`"),
            )),
        };
        assert_eq!(got.as_deref(), Some(want.as_str()));
    }

    #[test]
    fn compose_versions_are_read_from_its_banner() {
        let mut echo = Command::new("echo");
        echo.arg("Docker Compose");
        // `echo Docker Compose version` prints the banner without a version number.
        assert_eq!(compose_version_of(&mut echo), None);
        let mut banner = Command::new("sh");
        banner.args(["-c", "echo Docker Compose $0 v2.40.3"]);
        assert_eq!(compose_version_of(&mut banner).as_deref(), Some("2.40.3"));
    }
}
