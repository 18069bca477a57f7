//! Where the pinned external tools live, and their versions (read from `versions.toml`).
//!
//! Every command that runs Synapse, mdBook, nginx, PostgreSQL, Docker Compose or the Python
//! linters finds them through here, so there is one place to change a path or a version. Nothing
//! here installs anything: `cargo xtask setup` does ([`crate::setup`]), and a missing tool is an
//! error that names the setup part to run.

use anyhow::Context;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// `versions.toml` at the repository root, parsed.
pub fn versions() -> anyhow::Result<toml::Table> {
    let p = crate::project_root().join("versions.toml");
    let text =
        std::fs::read_to_string(&p).with_context(|| format!("cannot read {}", p.display()))?;
    text.parse()
        .with_context(|| format!("{} is not valid TOML", p.display()))
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

/// The directory of the PostgreSQL server binaries (Debian: /usr/lib/postgresql/15/bin).
pub fn pg_bindir() -> Option<PathBuf> {
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
/// (answered once per process and distribution).
pub fn py_tool_ready(dist: &str) -> bool {
    static READY: std::sync::Mutex<BTreeMap<String, bool>> = std::sync::Mutex::new(BTreeMap::new());
    let mut ready = READY
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    *ready.entry(dist.to_string()).or_insert_with(|| {
        version("pytools", dist)
            .is_ok_and(|want| py_versions(&py_tools(), &[dist]).get(dist) == Some(&want))
    })
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
