//! Assembling the deployment tree from the book's `title="..."` blocks, and writing it safely.
//!
//! [`assemble`] is pure: book in, [`Tree`] (every file with a map from its lines back to the
//! Markdown) out, or every diagnostic. [`write_tree`] checks every target against the output
//! directory before touching anything, writes into a temporary directory inside it, then moves
//! the files into place, removes files that a previous extract wrote and the book no longer
//! produces, and records what it wrote in a manifest. It never deletes a file it did not write.

use crate::book::{Block, BlockKind, Book};
use crate::diagnostics::{Diagnostic, MdLoc};
use crate::secrets::{self, Secrets};
pub use crate::tree::{Fragment, Tree, TreeFile};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};

/// The name of the manifest extract keeps in the output directory.
pub const MANIFEST: &str = ".extract-manifest";
/// The example server name the book uses; `--server-name` replaces it.
pub const EXAMPLE_SERVER_NAME: &str = "example.com";

#[derive(Debug, Clone, Default)]
pub struct Options {
    pub server_name: Option<String>,
    pub secrets: Secrets,
    /// Assemble the tree of this variant: the files it gives replace the main ones.
    pub variant: Option<String>,
}

/// Every variant name the book uses, sorted.
pub fn variants(book: &Book) -> Vec<String> {
    let set: BTreeSet<String> = book
        .blocks()
        .filter_map(|b| b.variant().map(String::from))
        .collect();
    set.into_iter().collect()
}

/// Every tree the book makes: the main tree (None), then each variant, in name order. The one
/// list every per-tree loop goes through.
pub fn trees(book: &Book) -> Vec<Option<String>> {
    std::iter::once(None)
        .chain(variants(book).into_iter().map(Some))
        .collect()
}

/// Assembles the tree. All-or-nothing: any error means no tree.
pub fn assemble(book: &Book, opts: &Options) -> Result<Tree, Vec<Diagnostic>> {
    let mut diags = Vec::new();
    if let Some(name) = &opts.server_name
        && !valid_server_name(name)
    {
        diags.push(Diagnostic::error(
                "extract::bad-server-name",
                format!("`{name}` is not a valid server name (letters, digits, `-` and `.`, optionally `:port`)"),
                &MdLoc::new("book.toml", 1),
            ));
        return Err(diags);
    }

    // Which blocks make each file: for the variant tree, a file that has blocks of that variant
    // is made of those only.
    let mut by_target: BTreeMap<String, Vec<&Block>> = BTreeMap::new();
    let mut variant_targets = BTreeSet::new();
    for b in book.blocks() {
        let BlockKind::File { target, variant } = &b.kind else {
            continue;
        };
        if let Err(msg) = check_target(target) {
            diags.push(Diagnostic::error(
                "extract::bad-target",
                msg,
                &b.fence_loc(),
            ));
            continue;
        }
        if variant.is_some() && variant == &opts.variant {
            variant_targets.insert(target.clone());
        }
        by_target.entry(target.clone()).or_default().push(b);
    }
    let mut mains: BTreeSet<String> = BTreeSet::new();
    for (target, blocks) in &by_target {
        if blocks.iter().any(|b| b.variant().is_none()) {
            mains.insert(target.clone());
        }
    }

    // A target that is a prefix directory of another target cannot be both.
    let all: Vec<&String> = by_target.keys().collect();
    for t in &all {
        for u in &all {
            if u.starts_with(&format!("{t}/")) {
                let b = by_target[*t][0];
                diags.push(Diagnostic::error(
                    "extract::target-collision",
                    format!("`{t}` is a file here but a directory for `{u}`"),
                    &b.fence_loc(),
                ));
            }
        }
    }

    let mut tree = Tree {
        files: BTreeMap::new(),
        variant: opts.variant.clone(),
    };
    for (target, blocks) in &by_target {
        let chosen: Vec<&&Block> = if variant_targets.contains(target) {
            blocks
                .iter()
                .filter(|b| b.variant() == opts.variant.as_deref())
                .collect()
        } else if mains.contains(target) {
            blocks.iter().filter(|b| b.variant().is_none()).collect()
        } else {
            continue; // only variants of other names: not part of this tree
        };
        let mut content = String::new();
        let mut fragments = Vec::new();
        for b in &chosen {
            let mut text = b.text.clone();
            if let Some(name) = &opts.server_name {
                text = text.replace(EXAMPLE_SERVER_NAME, name);
            }
            if !text.is_empty() && !text.ends_with('\n') {
                text.push('\n');
            }
            let out_line = content.lines().count() + 1;
            let lines = text.lines().count().max(1);
            fragments.push(Fragment {
                md_file: b.file.clone(),
                md_line: b.first_line(),
                out_line,
                lines,
            });
            content.push_str(&text);
        }
        let lang = chosen.first().map(|b| b.lang.clone()).unwrap_or_default();
        tree.files.insert(
            target.clone(),
            TreeFile::new(target.clone(), content, fragments, lang),
        );
    }
    if !diags.is_empty() {
        return Err(diags);
    }
    if let Err(mut d) = secrets::apply(&mut tree, &opts.secrets) {
        diags.append(&mut d);
        return Err(diags);
    }
    Ok(tree)
}

fn valid_server_name(name: &str) -> bool {
    let (host, port) = match name.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (name, None),
    };
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
        && port
            .is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.chars().all(|c| c.is_ascii_digit()))
}

/// A target is a relative path of plain components made of safe characters.
pub fn check_target(target: &str) -> Result<(), String> {
    if target.is_empty() {
        return Err("empty target path".into());
    }
    if target.starts_with('/') || Path::new(target).is_absolute() {
        return Err(format!(
            "target `{target}` is absolute: targets are relative to the deployment root"
        ));
    }
    if target.ends_with('/') {
        return Err(format!("target `{target}` names a directory, not a file"));
    }
    for comp in target.split('/') {
        match comp {
            "" => {
                return Err(format!(
                    "target `{target}` has an empty path component (`//`)"
                ));
            }
            "." | ".." => {
                return Err(format!(
                    "target `{target}` contains `{comp}`: it could leave the output directory"
                ));
            }
            _ => {}
        }
        if let Some(c) = comp
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || "._-+@".contains(*c)))
        {
            return Err(format!(
                "target `{target}` holds the character {c:?}: use letters, digits and . _ - + @"
            ));
        }
    }
    if target.split('/').any(|c| c == MANIFEST) {
        return Err(format!(
            "target `{target}` would overwrite extract's own manifest"
        ));
    }
    Ok(())
}

/// What a write did, for the summary line.
#[derive(Debug, Default)]
pub struct WriteReport {
    pub written: usize,
    pub removed: Vec<String>,
}

/// Writes the tree into `out`. Checks everything first; on any problem nothing is written.
/// Errors carry the Markdown location of the block concerned.
pub fn write_tree(tree: &Tree, out: &Path, force: bool) -> Result<WriteReport, Vec<Diagnostic>> {
    let mut diags = Vec::new();
    let book_loc = MdLoc::new("book.toml", 1);
    let previous = read_manifest(out);
    if out.exists() {
        if !out.is_dir() {
            return Err(vec![Diagnostic::error(
                "extract::out-not-ours",
                format!("--out {} exists and is not a directory", out.display()),
                &book_loc,
            )]);
        }
        if previous.is_none() && !force && dir_has_entries(out) {
            return Err(vec![Diagnostic::error(
                "extract::out-not-ours",
                format!(
                    "--out {} holds files that extract did not write (no {MANIFEST}); \
                     use an empty directory, or --force to write into it anyway",
                    out.display()
                ),
                &book_loc,
            )]);
        }
    }
    let out_canon = if out.exists() {
        out.canonicalize().ok()
    } else {
        None
    };

    // Check each target against what is on disk.
    for file in tree.files.values() {
        let loc = file.first_loc();
        let mut p = out.to_path_buf();
        let comps: Vec<&str> = file.path.split('/').collect();
        for (i, comp) in comps.iter().enumerate() {
            p.push(comp);
            let last = i + 1 == comps.len();
            let Ok(meta) = std::fs::symlink_metadata(&p) else {
                break;
            };
            if meta.file_type().is_symlink() {
                let escapes = match (p.canonicalize(), &out_canon) {
                    (Ok(real), Some(root)) => !real.starts_with(root),
                    _ => true,
                };
                if escapes || last {
                    diags.push(Diagnostic::error(
                        "extract::symlink-escape",
                        format!(
                            "target `{}` goes through the symlink {}, which {}",
                            file.path,
                            p.display(),
                            if escapes {
                                "points out of the output directory"
                            } else {
                                "would be replaced"
                            }
                        ),
                        &loc,
                    ));
                    break;
                }
            } else if last && meta.is_dir() {
                diags.push(Diagnostic::error(
                    "extract::target-collision",
                    format!("target `{}` is a directory in {}", file.path, out.display()),
                    &loc,
                ));
            } else if !last && !meta.is_dir() {
                diags.push(Diagnostic::error(
                    "extract::target-collision",
                    format!(
                        "target `{}` needs {} to be a directory, but it is a file",
                        file.path,
                        p.display()
                    ),
                    &loc,
                ));
                break;
            }
        }
    }
    if !diags.is_empty() {
        return Err(diags);
    }

    let io_err = |what: String, e: std::io::Error| {
        vec![Diagnostic::error(
            "extract::io",
            format!("{what}: {e}"),
            &book_loc,
        )]
    };
    std::fs::create_dir_all(out)
        .map_err(|e| io_err(format!("cannot create {}", out.display()), e))?;
    // Stage every file inside `out` (same filesystem, so the renames below are atomic).
    let staging = out.join(format!(".extract-tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    let staged = stage(tree, &staging);
    if let Err(e) = staged {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(io_err(
            format!("cannot stage files in {}", staging.display()),
            e,
        ));
    }
    let mut report = WriteReport::default();
    for file in tree.files.values() {
        let dest = out.join(&file.path);
        let res = dest
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::rename(staging.join(&file.path), &dest));
        if let Err(e) = res {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(io_err(
                format!("cannot move {} into place", dest.display()),
                e,
            ));
        }
        report.written += 1;
    }
    let _ = std::fs::remove_dir_all(&staging);

    // Remove what an earlier run wrote and the book no longer produces.
    for old in previous.unwrap_or_default() {
        if tree.files.contains_key(&old) || check_target(&old).is_err() {
            continue;
        }
        let p = out.join(&old);
        if std::fs::symlink_metadata(&p).is_ok_and(|m| m.is_file())
            && std::fs::remove_file(&p).is_ok()
        {
            report.removed.push(old.clone());
            // Remove directories the removal left empty (never `out` itself).
            let mut dir = p.parent().map(Path::to_path_buf);
            while let Some(d) = dir {
                if d == out || std::fs::remove_dir(&d).is_err() {
                    break;
                }
                dir = d.parent().map(Path::to_path_buf);
            }
        }
    }
    let manifest: String = tree.files.keys().map(|k| format!("{k}\n")).collect();
    std::fs::write(
        out.join(MANIFEST),
        format!("# Files written by `cargo xtask extract`; it removes only these.\n{manifest}"),
    )
    .map_err(|e| io_err("cannot write the manifest".into(), e))?;
    Ok(report)
}

fn stage(tree: &Tree, staging: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for file in tree.files.values() {
        let p = staging.join(&file.path);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&p, &file.content)?;
        let mode = if file.secret {
            0o600
        } else if file.content.starts_with("#!") {
            0o755
        } else {
            0o644
        };
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

fn dir_has_entries(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .map(|mut d| d.next().is_some())
        .unwrap_or(false)
}

/// The files a previous extract wrote, or None when `out` has no manifest.
pub fn read_manifest(out: &Path) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(out.join(MANIFEST)).ok()?;
    Some(
        text.lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .map(String::from)
            .collect(),
    )
}

/// The default output directory for a book.
pub fn default_out(book_root: &Path) -> PathBuf {
    book_root.join("deploy")
}

/// Whether a path is plainly inside another (lexically; for messages).
pub fn is_within(root: &Path, p: &Path) -> bool {
    p.components().all(|c| !matches!(c, Component::ParentDir)) && p.starts_with(root)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert!(check_target("synapse/homeserver.yaml").is_ok());
        assert!(check_target(".postgres.env").is_ok());
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
            assert!(check_target(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn server_names() {
        assert!(valid_server_name("matrix.example.org"));
        assert!(valid_server_name("localhost:8448"));
        assert!(!valid_server_name("exa mple.org"));
        assert!(!valid_server_name("a..b"));
        assert!(!valid_server_name("a/b"));
    }
}
