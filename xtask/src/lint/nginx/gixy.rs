//! gixy-ng, the nginx configuration analyzer, on the tree's nginx configuration.
//!
//! gixy-ng is a Python package, pinned in versions.toml `[pytools]` and installed by
//! `cargo xtask setup pytools` into `target/py-tools`; this module only looks for it. [`check`]
//! writes the tree's nginx directory to a scratch directory (container paths rewritten as for
//! `nginx -t`), runs `gixy -f json` on it and reports every finding as an error at the Markdown
//! line of the directive gixy names. When the pinned gixy-ng is not installed, the check reports
//! a warning saying so (and which setup part installs it) instead of passing in silence.
//!
//! A book silences a gixy check only by saying why, in the configuration itself, with a comment
//! line `# gixy-skip: PLUGIN -- reason` (the reason is required); the skip is passed to gixy as
//! `--skips PLUGIN`.

use crate::diagnostics::{Diagnostic, MdLoc};
use crate::nginx::config::{self, CONTAINER_PREFIX};
use crate::tree::Tree;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The distribution name in versions.toml `[pytools]`.
const DIST: &str = "gixy-ng";

/// The pinned version: `[pytools] gixy-ng` of versions.toml.
pub fn version() -> anyhow::Result<String> {
    crate::tools::version("pytools", DIST)
}

/// The venv gixy-ng runs from (`target/py-tools`).
pub fn venv() -> PathBuf {
    crate::tools::py_tools()
}

fn python(venv: &Path) -> PathBuf {
    venv.join("bin").join("python")
}

/// Whether the pinned gixy-ng is installed (nothing is installed here: `cargo xtask setup
/// pytools` does that).
pub fn available() -> bool {
    crate::tools::py_tool_ready(DIST)
}

/// `# gixy-skip: PLUGIN -- reason` lines of the tree's nginx files: (plugin, location).
pub fn skips(tree: &Tree) -> (Vec<String>, Vec<Diagnostic>) {
    let mut out = Vec::new();
    let mut diags = Vec::new();
    for (path, tf) in &tree.files {
        if tf.lang != "nginx" {
            continue;
        }
        for (i, line) in tf.content.lines().enumerate() {
            let Some(rest) = line.trim_start().strip_prefix('#').map(str::trim_start) else {
                continue;
            };
            let Some(rest) = rest.strip_prefix("gixy-skip:") else {
                continue;
            };
            let (plugin, reason) = rest
                .split_once("--")
                .map_or((rest.trim(), ""), |(p, r)| (p.trim(), r.trim()));
            if plugin.is_empty() || reason.is_empty() {
                diags.push(Diagnostic::error(
                    "nginx::gixy-skip",
                    format!(
                        "`{}`: write `# gixy-skip: PLUGIN -- why this finding does not apply`",
                        line.trim()
                    ),
                    &tf.md_loc(i + 1),
                ));
                continue;
            }
            let _ = path;
            out.push(plugin.to_string());
        }
    }
    (out, diags)
}

/// Runs gixy-ng; a warning naming the setup part when it is not installed.
pub fn check(tree: &Tree) -> Vec<Diagnostic> {
    let Some(root) = config::root_file(tree) else {
        return Vec::new();
    };
    let (skip, mut diags) = skips(tree);
    if !available() {
        diags.push(Diagnostic::warning(
            "nginx::no-gixy",
            format!(
                "gixy-ng {} is not installed in {}, so the nginx configuration was not analysed: run `cargo xtask setup pytools`",
                version().unwrap_or_default(),
                venv().display()
            ),
            &config::md(tree, &root, 1),
        ));
        return diags;
    }
    let dir = root
        .rsplit_once('/')
        .map_or(String::new(), |(d, _)| format!("{d}/"));
    // Cached like the other external checkers: an unchanged configuration runs no gixy.
    let gixy_version = version().unwrap_or_default();
    let id = gixy_version.as_bytes();
    let skip_s = skip.join(",");
    let mut parts: Vec<&[u8]> = vec![b"gixy v1", id, skip_s.as_bytes()];
    for (path, tf) in &tree.files {
        if path.starts_with(&dir) {
            parts.push(path.as_bytes());
            parts.push(tf.content.as_bytes());
        }
    }
    let key = crate::cache::key(&parts);
    let res = crate::cache::memo(&key, || {
        let scratch = crate::contain::scratch("gixy", None).map_err(|e| e.to_string())?;
        let r =
            run(tree, &root, &dir, &scratch.join("etc/nginx"), &skip).map_err(|e| e.to_string());
        let _ = std::fs::remove_dir_all(&scratch);
        r
    });
    match res {
        Ok(findings) => diags.extend(to_diags(tree, &dir, &findings)),
        Err(e) => diags.push(Diagnostic::warning(
            "nginx::gixy-not-run",
            format!("could not run gixy-ng: {e}"),
            &config::md(tree, &root, 1),
        )),
    }
    diags
}

fn run(
    tree: &Tree,
    root: &str,
    dir: &str,
    etc: &Path,
    skip: &[String],
) -> anyhow::Result<Vec<serde_json::Value>> {
    let etc_s = format!("{}/", etc.display());
    config::write_scratch_etc(tree, dir, etc, |text| {
        text.replace(CONTAINER_PREFIX, &etc_s)
    })?;
    let mut cmd = Command::new(python(&venv()));
    cmd.args(["-m", "gixy", "-f", "json"]);
    if !skip.is_empty() {
        cmd.arg("--skips").arg(skip.join(","));
    }
    let out = cmd
        .arg(etc.join(root.strip_prefix(dir).unwrap_or(root)))
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let start = text.find('[').unwrap_or(text.len());
    let findings: Vec<serde_json::Value> = if start < text.len() {
        let end = text.rfind(']').map_or(text.len(), |e| e + 1);
        serde_json::from_str(&text[start..end])?
    } else if out.status.success() {
        Vec::new()
    } else {
        anyhow::bail!("{}", String::from_utf8_lossy(&out.stderr).trim());
    };
    // Scratch paths out, so the cached answer does not depend on them.
    Ok(findings
        .into_iter()
        .map(|mut f| {
            if let Some(file) = f
                .get("file")
                .and_then(|v| v.as_str())
                .map(|v| v.replace(&etc_s, ETC))
            {
                f["file"] = serde_json::Value::String(file);
            }
            f
        })
        .collect())
}

/// Stands for the scratch copy of `/etc/nginx/` in (cached) gixy output.
const ETC: &str = "@ETC@/";

fn to_diags(tree: &Tree, dir: &str, findings: &[serde_json::Value]) -> Vec<Diagnostic> {
    let mut diags = Vec::new();
    for f in findings {
        let s = |k: &str| f.get(k).and_then(|v| v.as_str()).unwrap_or("").to_string();
        let file = s("file");
        let line = f
            .get("line")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(1) as usize;
        let tree_path = file.strip_prefix(ETC).map(|r| format!("{dir}{r}"));
        let at = match &tree_path {
            Some(p) if tree.get(p).is_some() => config::md(tree, p, line),
            _ => MdLoc::new(file.clone(), line),
        };
        diags.push(
            Diagnostic::error(
                "nginx::gixy",
                format!(
                    "gixy-ng {} ({}): {}. {}",
                    s("plugin"),
                    s("severity"),
                    s("summary"),
                    s("reason")
                ),
                &at,
            )
            .with_note(s("reference")),
        );
    }
    diags
}
