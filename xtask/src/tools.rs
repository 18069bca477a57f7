//! Where the pinned external tools live, and their versions (read from `versions.toml`).
//!
//! Every command that runs Synapse, mdBook, nginx or PostgreSQL finds them through here, so
//! there is one place to change a path or a version.

use anyhow::Context;
use std::path::PathBuf;

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
