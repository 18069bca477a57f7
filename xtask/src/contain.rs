//! Containment: the one check every path the tool writes, deletes or stands a file in for passes,
//! whoever chose it (a block's `title`, a Compose bind mount plus `signing_key_path`, an nginx
//! `ssl_certificate`, a manifest line, a scratch copy of the tree).
//!
//! A path is *contained* in a root when it is relative, made of plain components (no `.`, `..`
//! or empty ones) of safe characters, and no part of it that already exists under the root is a
//! symbolic link. [`rel`] is the lexical half (the rule for `title`), [`join`] the whole check
//! against a directory on disk, [`normalize`] the lexical resolution of a path that may hold
//! `..` (refused when it climbs above its start). Scratch directories are made fresh with
//! [`scratch`], which never creates the system temporary directory itself.
//!
//! Nothing here follows a symbolic link: metadata is read with `symlink_metadata`.

use std::path::{Path, PathBuf};

/// Whether `rel` is a relative path of plain components made of letters, digits and `._-+@`
/// (the rule a block's `title` follows). The message says what is wrong.
pub fn rel(rel: &str) -> Result<(), String> {
    if rel.is_empty() {
        return Err("empty target path".into());
    }
    if rel.starts_with('/') || Path::new(rel).is_absolute() {
        return Err(format!(
            "target `{rel}` is absolute: targets are relative to the deployment root"
        ));
    }
    if rel.ends_with('/') {
        return Err(format!("target `{rel}` names a directory, not a file"));
    }
    for comp in rel.split('/') {
        match comp {
            "" => {
                return Err(format!("target `{rel}` has an empty path component (`//`)"));
            }
            "." | ".." => {
                return Err(format!(
                    "target `{rel}` contains `{comp}`: it could leave the output directory"
                ));
            }
            _ => {}
        }
        if let Some(c) = comp
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || "._-+@".contains(*c)))
        {
            return Err(format!(
                "target `{rel}` holds the character {c:?}: use letters, digits and . _ - + @"
            ));
        }
    }
    Ok(())
}

/// `root/rel` when `rel` passes [`rel`] and no existing part of it under `root` is a symbolic
/// link (nor `root` itself).
pub fn join(root: &Path, path: &str) -> Result<PathBuf, String> {
    rel(path)?;
    if std::fs::symlink_metadata(root).is_ok_and(|m| m.file_type().is_symlink()) {
        return Err(format!("{} is a symbolic link", root.display()));
    }
    let mut p = root.to_path_buf();
    for comp in path.split('/') {
        p.push(comp);
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(format!(
                    "`{path}` goes through the symbolic link {}",
                    p.display()
                ));
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    Ok(root.join(path))
}

/// Resolves `.`, `..` and empty components of a `/`-separated relative path lexically; None when
/// a `..` climbs above the start (the path would leave its root) or the path is absolute.
pub fn normalize(path: &str) -> Option<String> {
    if path.starts_with('/') {
        return None;
    }
    let mut parts: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            c => parts.push(c),
        }
    }
    Some(parts.join("/"))
}

/// Writes `contents` to `root/path` (creating its parent directories under `root`) after the
/// [`join`] check. The error names the path.
pub fn write(root: &Path, path: &str, contents: impl AsRef<[u8]>) -> std::io::Result<PathBuf> {
    let p = join(root, path).map_err(std::io::Error::other)?;
    if let Some(parent) = p.parent() {
        std::fs::create_dir_all(parent)?;
    }
    // Checked again after the directories exist (a parent made meanwhile could be a link).
    join(root, path).map_err(std::io::Error::other)?;
    std::fs::write(&p, contents)?;
    Ok(p)
}

/// A fresh, empty directory for scratch files, `xtask-WHAT-PID-N` under `base` (the system
/// temporary directory when None). `base` must exist: it is never created.
pub fn scratch(what: &str, base: Option<&Path>) -> std::io::Result<PathBuf> {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let base = base.map_or_else(std::env::temp_dir, Path::to_path_buf);
    if !std::fs::metadata(&base).is_ok_and(|m| m.is_dir()) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!(
                "the temporary directory {} does not exist (set TMPDIR to one that does)",
                base.display()
            ),
        ));
    }
    loop {
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = base.join(format!("xtask-{what}-{}-{n}", std::process::id()));
        match std::fs::create_dir(&p) {
            Ok(()) => return Ok(p),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                // A leftover of an earlier process with our pid: take the next number.
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lexical_rule() {
        assert!(rel("synapse/homeserver.yaml").is_ok());
        assert!(rel(".postgres.env").is_ok());
        for bad in [
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a//b",
            "a/./b",
            "a b",
            "a/",
            "x\ty",
            "$HOME/x",
            "",
        ] {
            assert!(rel(bad).is_err(), "{bad}");
        }
        assert_eq!(normalize("./a/../b//c").as_deref(), Some("b/c"));
        assert_eq!(normalize("a/../../b"), None);
        assert_eq!(normalize("../keys"), None);
        assert_eq!(normalize("/abs"), None);
        assert_eq!(normalize(".").as_deref(), Some(""));
    }

    #[test]
    fn links_on_the_way_are_refused() {
        let t = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), t.path().join("l")).unwrap();
        assert!(join(t.path(), "l/x").is_err());
        assert!(join(t.path(), "l").is_err());
        assert!(write(t.path(), "l/x", "no").is_err());
        assert!(std::fs::read_dir(outside.path()).unwrap().next().is_none());
        assert!(write(t.path(), "a/b/c", "yes").is_ok());
        std::os::unix::fs::symlink(outside.path(), t.path().join("root-link")).unwrap();
        assert!(join(&t.path().join("root-link"), "x").is_err());
    }

    #[test]
    fn scratch_never_creates_its_base() {
        let t = tempfile::tempdir().unwrap();
        let missing = t.path().join("missing");
        assert!(scratch("t", Some(&missing)).is_err());
        assert!(!missing.exists());
        let a = scratch("t", Some(t.path())).unwrap();
        let b = scratch("t", Some(t.path())).unwrap();
        assert_ne!(a, b);
        assert!(a.is_dir() && b.is_dir());
    }
}
