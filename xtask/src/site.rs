//! The published site: the pinned mdBook tools, the vendored mermaid JavaScript, and the build
//! (`cargo xtask book`) that runs mdBook with our preprocessor and adds the extracted tree as a
//! downloadable archive.
//!
//! Tools are installed with `cargo install --locked --root target/tools` at the versions of
//! `versions.toml`, so a CI cache of `target/tools` keyed on those versions skips the
//! ~3 minute build. Nothing is downloaded at build time: mermaid's JavaScript is committed in
//! `assets/` and only [`vendor_mermaid`] (run by hand to change its version) fetches it, with
//! `npm pack` from the npm registry.

use crate::extract::{self, Options};
use crate::tools;
use anyhow::{Context, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The archive of the extracted tree, at the root of the built site.
pub const ARCHIVE: &str = "deploy.tar.gz";
/// The directory at the top of the archive.
pub const ARCHIVE_DIR: &str = "synapse-deploy";
/// The vendored mermaid build, relative to the repository root.
pub const MERMAID_JS: &str = "assets/mermaid.min.js";

/// The pinned mdBook binaries.
#[derive(Debug, Clone)]
pub struct Tools {
    pub mdbook: PathBuf,
    pub mermaid: PathBuf,
}

/// The crates to install: (crate, versions.toml key in `[mdbook]`, extra `cargo install` args).
const CRATES: &[(&str, &str, &[&str])] = &[
    // Only the `search` feature: `serve`/`watch` would add a web server and a file watcher to a
    // build that already takes minutes. Contributors wanting `mdbook serve` install it themselves.
    (
        "mdbook",
        "version",
        &["--no-default-features", "--features", "search"],
    ),
    ("mdbook-mermaid", "mermaid", &[]),
];

/// Where the pinned tools are: `target/tools/bin`, with the versions of `versions.toml`.
pub fn tools() -> Tools {
    let bin = tools::tools_bin();
    Tools {
        mdbook: bin.join("mdbook"),
        mermaid: bin.join("mdbook-mermaid"),
    }
}

/// Whether `bin --version` prints `version`.
fn has_version(bin: &Path, version: &str) -> bool {
    Command::new(bin)
        .arg("--version")
        .output()
        .map(|o| {
            o.status.success()
                && String::from_utf8_lossy(&o.stdout)
                    .split_whitespace()
                    .any(|w| w.trim_start_matches('v') == version)
        })
        .unwrap_or(false)
}

/// Installs the pinned mdBook tools into `target/tools` unless they are already there.
pub fn ensure_tools() -> anyhow::Result<Tools> {
    let root = tools::target_dir().join("tools");
    for (krate, key, extra) in CRATES {
        let version = tools::version("mdbook", key)?;
        let bin = root.join("bin").join(krate);
        if has_version(&bin, &version) {
            continue;
        }
        eprintln!(
            "installing {krate} {version} into {} (takes a few minutes once)",
            root.display()
        );
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["install", "--locked", "--quiet", "--root"])
            .arg(&root)
            .args(*extra)
            .args([krate, "--version", &version])
            .status()
            .with_context(|| format!("cannot run cargo install {krate}"))?;
        if !status.success() || !has_version(&bin, &version) {
            bail!("cargo install {krate} {version} failed ({status})");
        }
    }
    Ok(tools())
}

/// Checks that the vendored mermaid is the version `versions.toml` pins.
pub fn check_vendored_mermaid(root: &Path) -> anyhow::Result<()> {
    let version = tools::version("site", "mermaid-js")?;
    let path = root.join(MERMAID_JS);
    let js = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "cannot read {} (run `cargo xtask book --vendor-mermaid`)",
            path.display()
        )
    })?;
    if !js.contains(&format!("version:\"{version}\"")) {
        bail!(
            "{} is not mermaid {version} (versions.toml): run `cargo xtask book --vendor-mermaid`",
            path.display()
        );
    }
    Ok(())
}

/// Replaces `assets/mermaid.min.js` with the one of the npm package at the pinned version.
pub fn vendor_mermaid(root: &Path) -> anyhow::Result<()> {
    let version = tools::version("site", "mermaid-js")?;
    let tmp = tempdir("mermaid")?;
    let status = Command::new("npm")
        .args(["pack", "--silent", &format!("mermaid@{version}")])
        .current_dir(&tmp)
        .status()
        .context("cannot run npm")?;
    if !status.success() {
        bail!("npm pack mermaid@{version} failed ({status})");
    }
    let tgz = format!("mermaid-{version}.tgz");
    run(Command::new("tar")
        .args([
            "-xzf",
            &tgz,
            "package/dist/mermaid.min.js",
            "package/LICENSE",
        ])
        .current_dir(&tmp))?;
    std::fs::copy(
        tmp.join("package/dist/mermaid.min.js"),
        root.join(MERMAID_JS),
    )?;
    std::fs::copy(
        tmp.join("package/LICENSE"),
        root.join("assets/mermaid.LICENSE"),
    )?;
    let _ = std::fs::remove_dir_all(&tmp);
    check_vendored_mermaid(root)
}

/// What a build produced.
#[derive(Debug)]
pub struct Built {
    pub out: PathBuf,
    pub pages: usize,
    pub archived_files: usize,
}

/// Builds the site of the book at `root` into `out` with the pinned tools. `xtask` is the
/// binary that answers the preprocessor protocol (so mdBook does not `cargo run` it again).
/// Where the book lives on GitHub, from the one line of `book.toml` that says it:
/// `[output.html] git-repository-url`. The edit button and the site's path follow from it, unless
/// book.toml sets them itself (a site on a custom domain is served at `/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repository {
    /// `https://github.com/OWNER/NAME`
    pub url: String,
    /// mdBook's `edit-url-template`: `URL/edit/main/{path}`.
    pub edit_url_template: String,
    /// mdBook's `site-url`: where GitHub Pages serves a project's site, `/NAME/`.
    pub site_url: String,
}

/// Reads [`Repository`] from `root/book.toml`.
pub fn repository(root: &Path) -> anyhow::Result<Repository> {
    let path = root.join("book.toml");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let cfg: toml::Table = text
        .parse()
        .with_context(|| format!("{} is not valid TOML", path.display()))?;
    let html = cfg
        .get("output")
        .and_then(|o| o.get("html"))
        .and_then(|h| h.as_table());
    let get = |k: &str| html.and_then(|h| h.get(k)).and_then(|v| v.as_str());
    let url = get("git-repository-url")
        .with_context(|| {
            format!(
                "{}: [output.html] has no git-repository-url",
                path.display()
            )
        })?
        .trim_end_matches('/')
        .to_string();
    let name = url
        .strip_prefix("https://github.com/")
        .and_then(|r| r.split_once('/'))
        .map(|(_, n)| n)
        .filter(|n| !n.is_empty() && !n.contains('/'))
        .with_context(|| {
            format!(
                "{}: git-repository-url {url:?} is not https://github.com/OWNER/NAME",
                path.display()
            )
        })?;
    Ok(Repository {
        edit_url_template: get("edit-url-template")
            .map_or_else(|| format!("{url}/edit/main/{{path}}"), str::to_string),
        site_url: get("site-url").map_or_else(|| format!("/{name}/"), str::to_string),
        url,
    })
}

pub fn build(root: &Path, out: &Path, xtask: &Path) -> anyhow::Result<Built> {
    let tools = ensure_tools()?;
    let repo = repository(root)?;
    let project = crate::project_root();
    if root.join(MERMAID_JS).exists() || root == project {
        check_vendored_mermaid(root)?;
    }
    std::fs::create_dir_all(out)?;
    let out = out.canonicalize()?;
    let status = Command::new(&tools.mdbook)
        .arg("build")
        .arg(root)
        .arg("--dest-dir")
        .arg(&out)
        .env(
            "MDBOOK_PREPROCESSOR__XTASK__COMMAND",
            format!("{} mdbook", shell_word(xtask)),
        )
        .env(
            "MDBOOK_PREPROCESSOR__MERMAID__COMMAND",
            shell_word(&tools.mermaid),
        )
        .env(
            "MDBOOK_OUTPUT__HTML__EDIT_URL_TEMPLATE",
            &repo.edit_url_template,
        )
        .env("MDBOOK_OUTPUT__HTML__SITE_URL", &repo.site_url)
        .status()
        .context("cannot run mdbook")?;
    if !status.success() {
        bail!("mdbook build failed ({status})");
    }
    let archived_files = archive(root, &out.join(ARCHIVE))?;
    let pages = walk(&out)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "html"))
        .count();
    Ok(Built {
        out,
        pages,
        archived_files,
    })
}

/// Writes the extracted tree (the book's example values) as a gzipped tarball; returns how many
/// files it holds.
pub fn archive(root: &Path, dest: &Path) -> anyhow::Result<usize> {
    let book = crate::book::load(root).map_err(|d| anyhow::anyhow!(render(&d, root)))?;
    let tree = extract::assemble(&book, &Options::default())
        .map_err(|d| anyhow::anyhow!(render(&d, root)))?;
    let tmp = tempdir("archive")?;
    let top = tmp.join(ARCHIVE_DIR);
    extract::write_tree(&tree, &top, false).map_err(|d| anyhow::anyhow!(render(&d, root)))?;
    // Reproducible: sorted names, fixed owner and time (GNU tar, as on Debian and GitHub runners).
    run(Command::new("tar")
        .args([
            "--sort=name",
            "--owner=0",
            "--group=0",
            "--numeric-owner",
            "--mtime=@0",
        ])
        .arg(format!("--exclude={ARCHIVE_DIR}/{}", extract::MANIFEST))
        .arg("-czf")
        .arg(dest)
        .arg(ARCHIVE_DIR)
        .current_dir(&tmp))?;
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(tree.files.len())
}

fn render(d: &[crate::diagnostics::Diagnostic], root: &Path) -> String {
    crate::diagnostics::render_human(d, root)
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}

/// A fresh scratch directory under the system temp dir.
fn tempdir(what: &str) -> anyhow::Result<PathBuf> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let dir =
        std::env::temp_dir().join(format!("xtask-site-{what}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// A path as one word for mdBook's shlex splitting of `command`.
fn shell_word(p: &Path) -> String {
    let s = p.to_string_lossy();
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-+".contains(c))
    {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// Every file under `dir`.
pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}
