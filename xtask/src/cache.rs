//! A result cache for the external checkers (shellcheck, postgres, Synapse's config check,
//! `nginx -t`, gixy-ng, `docker compose config`) and for the versions of the tools themselves.
//!
//! Their answer depends only on the input and on the tool binary, so it is kept on disk, keyed
//! by a hash of the tool's path, size and modification time, its arguments and its input. A
//! second `cargo xtask check` of an unchanged book then starts no external process at all, which
//! is what keeps it fast. Where ([`dir`]): `XTASK_LINT_CACHE_DIR` when set; else
//! `target/lint-cache/` of this repository when the book checked is the repository's own (or no
//! book was named); else a cache of the user's (`$XDG_CACHE_HOME/synapse-guide-xtask/lint-cache`,
//! by default under `~/.cache`), so checking another book writes nothing into this repository.
//! Delete the directory (or set `XTASK_LINT_NO_CACHE=1`) to force fresh runs.
//!
//! [`Memo`] is the in-process counterpart: a value computed once per key and process (a YAML
//! parse per text, a Compose model per Compose file, a compiled regex per pattern), even when
//! several threads ask for it at once.

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use std::collections::HashMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

/// A process-wide memo: each key's value is computed once, even when threads ask at once (the
/// others wait for the first).
pub struct Memo<K, V> {
    map: std::sync::OnceLock<Mutex<HashMap<K, Arc<std::sync::OnceLock<V>>>>>,
}

impl<K: std::hash::Hash + Eq, V: Clone> Memo<K, V> {
    pub const fn new() -> Self {
        Memo {
            map: std::sync::OnceLock::new(),
        }
    }

    /// The value of `key`, computed with `f` the first time.
    pub fn get_or(&self, key: K, f: impl FnOnce() -> V) -> V {
        let cell = self
            .map
            .get_or_init(Mutex::default)
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(key)
            .or_default()
            .clone();
        cell.get_or_init(f).clone()
    }
}

impl<K: std::hash::Hash + Eq, V: Clone> Default for Memo<K, V> {
    fn default() -> Self {
        Memo::new()
    }
}

static BOOK: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Says which book this process checks (the first call wins); it decides [`dir`].
pub fn for_book(root: &std::path::Path) {
    let _ = BOOK.set(root.canonicalize().unwrap_or_else(|_| root.to_path_buf()));
}

/// Where the answers are kept (see the module's documentation).
pub fn dir() -> PathBuf {
    if let Some(d) = std::env::var_os("XTASK_LINT_CACHE_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    let repo = crate::project_root();
    let ours = BOOK
        .get()
        .is_none_or(|b| repo.canonicalize().is_ok_and(|r| &r == b));
    if ours {
        return repo.join("target").join("lint-cache");
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|d| !d.is_empty())
                .map(|h| PathBuf::from(h).join(".cache"))
        })
        .unwrap_or_else(std::env::temp_dir);
    base.join("synapse-guide-xtask").join("lint-cache")
}

fn enabled() -> bool {
    std::env::var_os("XTASK_LINT_NO_CACHE").is_none()
}

/// A fresh, empty scratch directory under the system temp dir, unique within this process and
/// across processes (two threads may check the same input at the same time); the temp dir
/// itself is never created ([`crate::contain::scratch`]).
pub fn scratch_dir(what: &str) -> Result<PathBuf, String> {
    crate::contain::scratch(&format!("lint-{what}"), None).map_err(|e| e.to_string())
}

/// A key from the given parts: the SHA-1 of each part's length and bytes, in hex.
pub fn key(parts: &[&[u8]]) -> String {
    use sha1::{Digest, Sha1};
    let mut h = Sha1::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Identity of a program file: path, size and mtime (changes when the tool is upgraded).
pub fn tool_id(path: &std::path::Path) -> Vec<u8> {
    let meta = std::fs::metadata(path).ok();
    format!(
        "{}|{:?}|{:?}",
        path.display(),
        meta.as_ref().map(std::fs::Metadata::len),
        meta.and_then(|m| m.modified().ok())
    )
    .into_bytes()
}

/// Returns the cached value for `key`, or computes, stores and returns it. Errors are not cached.
pub fn memo<T: Serialize + DeserializeOwned>(
    key: &str,
    f: impl FnOnce() -> Result<T, String>,
) -> Result<T, String> {
    let path = dir().join(format!("{key}.json"));
    if enabled()
        && let Some(v) = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
    {
        return Ok(v);
    }
    let v = f()?;
    if enabled()
        && let Ok(bytes) = serde_json::to_vec(&v)
    {
        let _ = std::fs::create_dir_all(dir());
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        if std::fs::write(&tmp, bytes).is_ok() {
            let _ = std::fs::rename(&tmp, &path);
        }
    }
    Ok(v)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Output {
    pub status: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// Runs the program `exe` with `args` and `stdin`, through the cache. Err when it cannot run.
pub fn run_cached(exe: &std::path::Path, args: &[&str], stdin: &[u8]) -> Result<Output, String> {
    let program = exe.display();
    let mut parts: Vec<&[u8]> = Vec::new();
    let id = tool_id(exe);
    parts.push(&id);
    for a in args {
        parts.push(a.as_bytes());
    }
    parts.push(stdin);
    memo(&key(&parts), || {
        let mut child = Command::new(exe)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", exe.display()))?;
        if let Some(mut si) = child.stdin.take() {
            let _ = si.write_all(stdin);
        }
        let out = child
            .wait_with_output()
            .map_err(|e| format!("{program} failed: {e}"))?;
        Ok(Output {
            status: out.status.code(),
            stdout: out.stdout,
            stderr: out.stderr,
        })
    })
}
