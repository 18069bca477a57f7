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
    // is made of those only, unless they are `add` blocks: those join the main file's blocks.
    let mut by_target: BTreeMap<String, Vec<&Block>> = BTreeMap::new();
    let mut variant_targets = BTreeSet::new();
    for b in book.blocks() {
        let BlockKind::File {
            target,
            variant,
            add,
        } = &b.kind
        else {
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
        if variant.is_some() && variant == &opts.variant && !add {
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
    // Main files a variant leaves out (`drop="path dir/"` on one of its blocks). Each entry
    // must name a main file, or a directory holding one, that the variant does not write.
    let mut dropped: BTreeSet<String> = BTreeSet::new();
    for b in book.blocks() {
        for d in b.drops() {
            let hits: Vec<&String> = mains
                .iter()
                .filter(|m| {
                    if d.ends_with('/') {
                        m.starts_with(d)
                    } else {
                        m.as_str() == d
                    }
                })
                .collect();
            if hits.is_empty()
                || hits.iter().any(|h| {
                    by_target[h.as_str()]
                        .iter()
                        .any(|x| x.variant().is_some() && x.variant() == b.variant())
                })
            {
                diags.push(Diagnostic::error(
                    "extract::bad-drop",
                    format!(
                        "variant `{}` drops `{d}`, which {}",
                        b.variant().unwrap_or_default(),
                        if hits.is_empty() {
                            "names no file of the main tree (a directory ends with `/`)"
                        } else {
                            "the variant writes itself"
                        }
                    ),
                    &b.fence_loc(),
                ));
            } else if b.variant() == opts.variant.as_deref() {
                dropped.extend(hits.into_iter().cloned());
            }
        }
    }

    // A target that is a prefix directory of another target cannot be both (each target's
    // directories looked up: linear in the number of targets).
    for u in by_target.keys() {
        for (i, _) in u.match_indices('/') {
            let t = &u[..i];
            if let Some(blocks) = by_target.get(t) {
                diags.push(Diagnostic::error(
                    "extract::target-collision",
                    format!("`{t}` is a file here but a directory for `{u}`"),
                    &blocks[0].fence_loc(),
                ));
            }
        }
    }

    // This variant's `add` blocks: each adds to a main file, which the variant does not also
    // replace.
    let ours = |b: &Block| b.variant().is_some() && b.variant() == opts.variant.as_deref();
    for (target, blocks) in &by_target {
        for b in blocks.iter().filter(|b| ours(b) && b.adds()) {
            let v = b.variant().unwrap_or_default();
            if !mains.contains(target) {
                diags.push(Diagnostic::error(
                    "extract::add-without-file",
                    format!(
                        "variant `{v}` adds to `{target}`, but the main deployment has no such \
                         file: drop `add` to make the block a file of the variant"
                    ),
                    &b.fence_loc(),
                ));
            } else if variant_targets.contains(target) {
                diags.push(Diagnostic::error(
                    "extract::add-and-replace",
                    format!(
                        "variant `{v}` both replaces `{target}` (a block without `add`) and adds \
                         to it (this block): use one or the other"
                    ),
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
            blocks.iter().filter(|b| ours(b) && !b.adds()).collect()
        } else if dropped.contains(target) {
            continue; // left out by this variant
        } else if mains.contains(target) {
            // The main blocks, and this variant's additions, in reading order.
            blocks
                .iter()
                .filter(|b| b.variant().is_none() || (ours(b) && b.adds()))
                .collect()
        } else {
            continue; // only variants of other names: not part of this tree
        };
        let mut content = String::new();
        let mut out_line = 1;
        let mut fragments = Vec::new();
        for b in &chosen {
            let mut text = b.text.clone();
            if let Some(name) = &opts.server_name {
                text = replace_name(&text, EXAMPLE_SERVER_NAME, name);
            }
            if !text.is_empty() && !text.ends_with('\n') {
                text.push('\n');
            }
            let lines = text.lines().count();
            fragments.push(Fragment {
                md_file: b.file.clone(),
                md_line: b.first_line(),
                out_line,
                lines: lines.max(1),
            });
            out_line += lines;
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

/// `text` with every occurrence of the host name `from` that is a whole name replaced by `to`:
/// `example.com`, `matrix.example.com`, `@u:example.com`, `%3Aexample.com` and
/// `example.com.signing.key` change, `notexample.com` and `example.community` do not.
pub fn replace_name(text: &str, from: &str, to: &str) -> String {
    let label = |c: u8| c.is_ascii_alphanumeric() || c == b'-' || c == b'_';
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for (i, _) in text.match_indices(from) {
        let end = i + from.len();
        // After a percent escape (`%3A`), the name starts afresh.
        let escaped = i >= 3
            && b[i - 3] == b'%'
            && b[i - 2].is_ascii_hexdigit()
            && b[i - 1].is_ascii_hexdigit();
        let before = i == 0 || !label(b[i - 1]) || escaped;
        let after = end == b.len() || !label(b[end]);
        if before && after && i >= last {
            out.push_str(&text[last..i]);
            out.push_str(to);
            last = end;
        }
    }
    out.push_str(&text[last..]);
    out
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
        && port.is_none_or(|p| {
            p.chars().all(|c| c.is_ascii_digit()) && p.parse::<u16>().is_ok_and(|n| n > 0)
        })
}

/// A target is a relative path of plain components made of safe characters
/// ([`crate::contain::rel`], the rule every written path follows), and not the manifest.
pub fn check_target(target: &str) -> Result<(), String> {
    crate::contain::rel(target)?;
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
    write_tree_of(tree, out, force, None)
}

/// [`write_tree`] for the book at `book`: `out` must neither hold the book nor lie inside its
/// sources, so no target (and no cleanup) can touch a file the book is made of.
pub fn write_tree_of(
    tree: &Tree,
    out: &Path,
    force: bool,
    book: Option<(&Path, &str)>,
) -> Result<WriteReport, Vec<Diagnostic>> {
    write_with(tree, out, force, book, &|from, to| {
        std::fs::rename(from, to)
    })
}

type Rename<'a> = &'a dyn Fn(&Path, &Path) -> std::io::Result<()>;

fn write_with(
    tree: &Tree,
    out: &Path,
    force: bool,
    book: Option<(&Path, &str)>,
    rename: Rename<'_>,
) -> Result<WriteReport, Vec<Diagnostic>> {
    let mut diags = Vec::new();
    let book_loc = MdLoc::new("book.toml", 1);
    // `--out` itself may be a link (the operator's choice): everything below is resolved from
    // where it points, and nothing under it may be a link.
    let resolved = out.canonicalize().ok().filter(|p| p.is_dir());
    let out = resolved.as_deref().unwrap_or(out);
    let manifest_path = out.join(MANIFEST);
    if std::fs::symlink_metadata(&manifest_path).is_ok_and(|m| !m.is_file()) {
        return Err(vec![Diagnostic::error(
            "extract::symlink-escape",
            format!(
                "{} is not a plain file (a symbolic link or a directory): extract neither reads \
                 nor writes through it",
                manifest_path.display()
            ),
            &book_loc,
        )]);
    }
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
    if let Some((root, src)) = book
        && let Some(why) = over_book(out, root, src)
    {
        return Err(vec![Diagnostic::error(
            "extract::out-over-book",
            format!(
                "--out {} {why}: extract would write over the book's own files; choose a directory outside them",
                out.display()
            ),
            &book_loc,
        )]);
    }

    // Check each target against what is on disk.
    for file in tree.files.values() {
        let loc = file.first_loc();
        if let Err(msg) = check_target(&file.path) {
            diags.push(Diagnostic::error("extract::bad-target", msg, &loc));
            continue;
        }
        let mut p = out.to_path_buf();
        let comps: Vec<&str> = file.path.split('/').collect();
        for (i, comp) in comps.iter().enumerate() {
            p.push(comp);
            let last = i + 1 == comps.len();
            let Ok(meta) = std::fs::symlink_metadata(&p) else {
                break;
            };
            if meta.file_type().is_symlink() {
                diags.push(Diagnostic::error(
                    "extract::symlink-escape",
                    format!(
                        "target `{}` goes through the symbolic link {}: extract writes through no link, \
                         inside the output directory or out of it",
                        file.path,
                        p.display(),
                    ),
                    &loc,
                ));
                break;
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
    remove_leftovers(out);
    // Stage every file inside `out` (same filesystem, so the renames below are atomic).
    let staging = out.join(format!("{STAGING_PREFIX}{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    if let Err((file, e)) = stage(tree, &staging.join("new")) {
        let _ = std::fs::remove_dir_all(&staging);
        let at = file.map_or_else(|| book_loc.clone(), TreeFile::first_loc);
        return Err(vec![Diagnostic::error(
            "extract::io",
            format!("cannot stage files in {}: {e}", staging.display()),
            &at,
        )]);
    }
    let previous = previous.unwrap_or_default();
    // Until the move is over, the manifest names every file either run wrote: a run killed
    // midway leaves nothing of ours unlisted, so the next run can clean it.
    let during: BTreeSet<&str> = previous
        .iter()
        .map(String::as_str)
        .chain(tree.files.keys().map(String::as_str))
        .collect();
    if let Err(e) = write_manifest(out, &staging, during) {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(io_err("cannot write the manifest".into(), e));
    }
    let mut report = WriteReport::default();
    if let Err((file, e)) = move_into_place(tree, out, &staging, rename) {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(vec![Diagnostic::error(
            "extract::io",
            format!(
                "cannot move {} into place (every file was put back as it was): {e}",
                out.join(&file.path).display()
            ),
            &file.first_loc(),
        )]);
    }
    report.written = tree.files.len();

    // Remove what an earlier run wrote and the book no longer produces, following no link.
    for old in &previous {
        if tree.files.contains_key(old) || check_target(old).is_err() {
            continue;
        }
        let Ok(p) = crate::contain::join(out, old) else {
            continue;
        };
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
    let res = write_manifest(out, &staging, tree.files.keys().map(String::as_str));
    let _ = std::fs::remove_dir_all(&staging);
    res.map_err(|e| io_err("cannot write the manifest".into(), e))?;
    Ok(report)
}

/// The name of extract's staging directory in `out`, followed by the process id.
pub const STAGING_PREFIX: &str = ".extract-tmp-";

/// Why `out` would put the book's own files at risk: it is the book's directory or holds it, or
/// lies inside its sources. None when it does not.
fn over_book(out: &Path, root: &Path, src: &str) -> Option<&'static str> {
    // Where `out` will be: its longest existing ancestor resolved, then the rest with `..`
    // taken as the directories will be made (create_dir_all makes `new/` before `new/..`).
    let canon = |p: &Path| -> Option<PathBuf> {
        let comps: Vec<Component<'_>> = p.components().collect();
        let mut split = comps.len();
        while split > 0 && !comps[..split].iter().collect::<PathBuf>().exists() {
            split -= 1;
        }
        let mut c = comps[..split]
            .iter()
            .collect::<PathBuf>()
            .canonicalize()
            .ok()?;
        for part in &comps[split..] {
            match part {
                Component::ParentDir => {
                    c.pop();
                }
                Component::Normal(n) => c.push(n),
                _ => {}
            }
        }
        Some(c)
    };
    let out = canon(&if out.is_absolute() {
        out.to_path_buf()
    } else {
        std::env::current_dir().ok()?.join(out)
    })?;
    let root = root.canonicalize().ok()?;
    if root.starts_with(&out) {
        Some("is the book's directory or holds it")
    } else if out.starts_with(root.join(src)) {
        Some("is inside the book's sources")
    } else {
        None
    }
}

/// Removes the staging directories of earlier runs that were killed (their process is gone).
fn remove_leftovers(out: &Path) {
    let Ok(rd) = std::fs::read_dir(out) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(STAGING_PREFIX))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let alive = pid != std::process::id() && Path::new("/proc").join(pid.to_string()).exists();
        // remove_dir_all removes a link itself, never what it points to.
        if !alive {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// Writes the manifest naming `files` (staged, then renamed over the old one).
fn write_manifest<'a>(
    out: &Path,
    staging: &Path,
    files: impl IntoIterator<Item = &'a str>,
) -> std::io::Result<()> {
    let list: String = files.into_iter().map(|k| format!("{k}\n")).collect();
    let tmp = staging.join("manifest");
    std::fs::write(
        &tmp,
        format!("# Files written by `cargo xtask extract`; it removes only these.\n{list}"),
    )?;
    std::fs::rename(&tmp, out.join(MANIFEST))
}

/// Moves the staged files over their destinations. On a failure every destination is put back
/// as it was (the old file restored, a new one removed, directories made for it removed) and the
/// failing file returned.
fn move_into_place<'t>(
    tree: &'t Tree,
    out: &Path,
    staging: &Path,
    rename: Rename<'_>,
) -> Result<(), (&'t TreeFile, std::io::Error)> {
    enum Done {
        Replaced(PathBuf, PathBuf),
        Created(PathBuf),
        Dir(PathBuf),
    }
    let mut done: Vec<Done> = Vec::new();
    let mut result = Ok(());
    for (i, file) in tree.files.values().enumerate() {
        let dest = out.join(&file.path);
        let step = (|| {
            // Directories on the way, outermost first, each remembered for a rollback.
            let mut p = out.to_path_buf();
            let comps: Vec<&str> = file.path.split('/').collect();
            for comp in &comps[..comps.len() - 1] {
                p.push(comp);
                if std::fs::symlink_metadata(&p).is_err() {
                    std::fs::create_dir(&p)?;
                    done.push(Done::Dir(p.clone()));
                }
            }
            if std::fs::symlink_metadata(&dest).is_ok() {
                let old = staging.join("old").join(i.to_string());
                std::fs::create_dir_all(staging.join("old"))?;
                rename(&dest, &old)?;
                done.push(Done::Replaced(dest.clone(), old));
            } else {
                done.push(Done::Created(dest.clone()));
            }
            rename(&staging.join("new").join(&file.path), &dest)
        })();
        if let Err(e) = step {
            result = Err((file, e));
            break;
        }
    }
    if result.is_err() {
        for d in done.into_iter().rev() {
            match d {
                Done::Replaced(dest, old) => {
                    let _ = std::fs::rename(old, dest);
                }
                Done::Created(dest) => {
                    if std::fs::symlink_metadata(&dest).is_ok_and(|m| m.is_file()) {
                        let _ = std::fs::remove_file(dest);
                    }
                }
                Done::Dir(dir) => {
                    let _ = std::fs::remove_dir(dir);
                }
            }
        }
    }
    result
}

/// Writes every file under `staging`; on a failure, the file (None: the directory itself).
fn stage<'t>(tree: &'t Tree, staging: &Path) -> Result<(), (Option<&'t TreeFile>, std::io::Error)> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(staging).map_err(|e| (None, e))?;
    for file in tree.files.values() {
        let mode = if file.secret {
            0o600
        } else if file.content.starts_with("#!") {
            0o755
        } else {
            0o644
        };
        crate::contain::write(staging, &file.path, &file.content)
            .and_then(|p| std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)))
            .map_err(|e| (Some(file), e))?;
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
    let path = out.join(MANIFEST);
    if !std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_file()) {
        return None;
    }
    let text = std::fs::read_to_string(&path).ok()?;
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

    /// A one-chapter book on disk.
    fn book(chapter: &str) -> (tempfile::TempDir, Book) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("src")).unwrap();
        std::fs::write(root.join("book.toml"), "[book]\ntitle = \"t\"\n").unwrap();
        std::fs::write(root.join("src/SUMMARY.md"), "# Summary\n\n- [A](a.md)\n").unwrap();
        std::fs::write(root.join("src/a.md"), chapter).unwrap();
        let b = crate::book::load(root).unwrap();
        (dir, b)
    }

    fn variant(v: &str) -> Options {
        Options {
            variant: Some(v.into()),
            ..Options::default()
        }
    }

    #[test]
    fn a_variant_adds_to_a_main_file_in_reading_order() {
        let (_d, b) = book(
            "# A\n\n```yaml title=\"a.yaml\"\nx: 1\n```\n\n```yaml title=\"a.yaml\" variant=\"v\" add\ny: 2\n```\n\n```yaml title=\"a.yaml\"\nz: 3\n```\n",
        );
        let main = assemble(&b, &Options::default()).unwrap();
        assert_eq!(main.get("a.yaml").unwrap().content, "x: 1\nz: 3\n");
        let v = assemble(&b, &variant("v")).unwrap();
        let f = v.get("a.yaml").unwrap();
        assert_eq!(f.content, "x: 1\ny: 2\nz: 3\n");
        // The added line maps back to its own block.
        assert_eq!(f.md_loc(2).line, 8);
    }

    #[test]
    fn an_add_needs_a_main_file_and_no_replacement() {
        let (_d, b) = book("# A\n\n```yaml title=\"a.yaml\" variant=\"v\" add\ny: 2\n```\n");
        let d = assemble(&b, &variant("v")).unwrap_err();
        assert_eq!(
            (d[0].code.as_str(), d[0].file.as_str(), d[0].line),
            ("extract::add-without-file", "src/a.md", 3),
            "{d:?}"
        );
        let (_d, b) = book(
            "# A\n\n```yaml title=\"a.yaml\"\nx: 1\n```\n\n```yaml title=\"a.yaml\" variant=\"v\"\nx: 2\n```\n\n```yaml title=\"a.yaml\" variant=\"v\" add\ny: 2\n```\n",
        );
        let d = assemble(&b, &variant("v")).unwrap_err();
        assert_eq!(
            (d[0].code.as_str(), d[0].line),
            ("extract::add-and-replace", 11),
            "{d:?}"
        );
        // Other trees do not see another variant's additions.
        assert!(assemble(&b, &Options::default()).is_ok());
    }

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

    fn book_of(chapter: &str) -> (tempfile::TempDir, Book) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("src")).unwrap();
        std::fs::write(root.join("book.toml"), "[book]\ntitle = \"t\"\n").unwrap();
        std::fs::write(root.join("src/SUMMARY.md"), "# S\n\n- [A](a.md)\n").unwrap();
        std::fs::write(root.join("src/a.md"), chapter).unwrap();
        let book = crate::book::load(root).unwrap();
        (dir, book)
    }

    #[test]
    fn a_variant_drops_main_files() {
        let md = "# A\n\n```yaml title=\"w/one.yaml\"\na: 1\n```\n\n```yaml title=\"w/two.yaml\"\nb: 1\n```\n\n```yaml title=\"keep.yaml\"\nc: 1\n```\n\n```yaml title=\"keep.yaml\" variant=\"v\" drop=\"w/\"\nc: 2\n```\n";
        let (_d, book) = book_of(md);
        let main = assemble(&book, &Options::default()).unwrap();
        assert_eq!(main.files.len(), 3);
        let v = assemble(
            &book,
            &Options {
                variant: Some("v".into()),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(
            v.files.keys().collect::<Vec<_>>(),
            ["keep.yaml"],
            "the directory is gone from the variant only"
        );
        assert_eq!(v.files["keep.yaml"].content, "c: 2\n");
    }

    #[test]
    fn a_drop_must_name_a_main_file_the_variant_does_not_write() {
        for (drop, why) in [
            ("nothing/", "names no file of the main tree"),
            ("w/one", "names no file of the main tree"),
            ("keep.yaml", "the variant writes itself"),
        ] {
            let md = format!(
                "# A\n\n```yaml title=\"w/one.yaml\"\na: 1\n```\n\n```yaml title=\"keep.yaml\"\nc: 1\n```\n\n```yaml title=\"keep.yaml\" variant=\"v\" drop=\"{drop}\"\nc: 2\n```\n"
            );
            let (_d, book) = book_of(&md);
            // Reported for every tree, so `check` finds it whichever tree it assembles first.
            let d = assemble(&book, &Options::default()).unwrap_err();
            assert_eq!(d[0].code, "extract::bad-drop", "{drop}");
            assert!(d[0].message.contains(why), "{drop}: {}", d[0].message);
            assert_eq!(
                (d[0].loc().file.as_str(), d[0].loc().line),
                ("src/a.md", 11)
            );
        }
    }

    #[test]
    fn drop_belongs_on_a_variant_block() {
        for info in [
            "yaml title=\"a.yaml\" drop=\"w/\"",
            "yaml title=\"a.yaml\" variant=\"v\" drop",
            "yaml example drop=\"w/\"",
        ] {
            let e = crate::book::classify(info).unwrap_err();
            assert_eq!(e.0, "book::bad-info-string", "{info}");
            assert!(e.1.contains("`drop`"), "{info}: {}", e.1);
        }
    }

    fn tree_of(files: &[(&str, &str)]) -> Tree {
        let mut t = Tree::from_literal(files);
        for f in t.files.values_mut() {
            f.lang = "text".into();
        }
        t
    }

    /// A rename that fails on its `n`-th call (0-based), for the rollback.
    fn failing(n: usize) -> impl Fn(&Path, &Path) -> std::io::Result<()> {
        let calls = std::sync::atomic::AtomicUsize::new(0);
        move |from, to| {
            if calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed) == n {
                Err(std::io::Error::other("injected failure"))
            } else {
                std::fs::rename(from, to)
            }
        }
    }

    #[test]
    fn a_failed_move_puts_everything_back() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let old = tree_of(&[
            ("a.txt", "old a\n"),
            ("b/c.txt", "old c\n"),
            ("gone.txt", "x\n"),
        ]);
        write_tree(&old, &out, false).unwrap();
        let new = tree_of(&[
            ("a.txt", "new a\n"),
            ("b/c.txt", "new c\n"),
            ("d/e/f.txt", "new f\n"),
            ("z.txt", "new z\n"),
        ]);
        // Every rename, in turn, fails: each time the tree is exactly the old one.
        for n in 0..8 {
            let r = write_with(&new, &out, false, None, &failing(n));
            if r.is_ok() {
                break;
            }
            let d = r.unwrap_err();
            assert_eq!(d[0].code, "extract::io");
            assert_eq!(
                std::fs::read_to_string(out.join("a.txt")).unwrap(),
                "old a\n"
            );
            assert_eq!(
                std::fs::read_to_string(out.join("b/c.txt")).unwrap(),
                "old c\n"
            );
            assert!(out.join("gone.txt").is_file());
            assert!(
                !out.join("d").exists() && !out.join("z.txt").exists(),
                "n={n}"
            );
            // the manifest names at least every file on disk, and no staging is left
            let m = read_manifest(&out).unwrap();
            for f in ["a.txt", "b/c.txt", "gone.txt"] {
                assert!(m.iter().any(|l| l == f), "{m:?}");
            }
            let names: Vec<String> = std::fs::read_dir(&out)
                .unwrap()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            assert!(
                names.iter().all(|n| !n.starts_with(STAGING_PREFIX)),
                "{names:?}"
            );
        }
        write_tree(&new, &out, false).unwrap();
        assert!(!out.join("gone.txt").exists());
        assert_eq!(
            read_manifest(&out).unwrap(),
            ["a.txt", "b/c.txt", "d/e/f.txt", "z.txt"]
        );
    }

    #[test]
    fn server_names() {
        assert!(valid_server_name("matrix.example.org"));
        assert!(valid_server_name("localhost:8448"));
        assert!(!valid_server_name("exa mple.org"));
        assert!(!valid_server_name("a..b"));
        assert!(!valid_server_name("a/b"));
        assert!(!valid_server_name("a.org:99999") && !valid_server_name("a.org:0"));
        assert!(!valid_server_name("a.org:") && !valid_server_name("a.org:+1"));
        assert!(valid_server_name("a.org:65535"));
        for (text, want) in [
            ("example.com", "m.org"),
            ("notexample.com", "notexample.com"),
            ("example.community", "example.community"),
            ("matrix.example.com:443", "matrix.m.org:443"),
            ("@u:example.com %3Aexample.com", "@u:m.org %3Am.org"),
            ("/data/example.com.signing.key", "/data/m.org.signing.key"),
            ("my-example.com", "my-example.com"),
        ] {
            assert_eq!(replace_name(text, "example.com", "m.org"), want, "{text}");
        }
    }
}
