//! gixy-ng, the nginx configuration analyzer, on the tree's nginx configuration.
//!
//! gixy-ng is a Python package; [`install`] puts the pinned version (versions.toml `[gixy]`) in
//! its own venv, `target/gixy-venv` (`cargo xtask setup` calls it). [`check`] writes the tree's nginx
//! directory to a scratch directory (container paths rewritten as for `nginx -t`), runs
//! `gixy -f json` on it and reports every finding as an error at the Markdown line of the
//! directive gixy names. When the venv is absent the check is skipped (with no finding).
//!
//! A book silences a gixy check only by saying why, in the configuration itself, with a comment
//! line `# gixy-skip: PLUGIN -- reason` (the reason is required); the skip is passed to gixy as
//! `--skips PLUGIN`.

use super::config::{self, CONTAINER_PREFIX, IMAGE_FILES};
use crate::diagnostics::{Diagnostic, MdLoc};
use crate::extract::Tree;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The pinned version: `[gixy] version` of versions.toml.
pub fn version() -> anyhow::Result<String> {
    crate::tools::version("gixy", "version")
}

pub fn venv() -> PathBuf {
    crate::tools::target_dir().join("gixy-venv")
}

fn gixy_bin() -> PathBuf {
    venv().join("bin").join("gixy")
}

/// Creates `target/gixy-venv` with the pinned gixy-ng, unless it is there already.
pub fn install() -> anyhow::Result<()> {
    let v = version()?;
    let want = format!("Gixy v{v}");
    if let Ok(o) = Command::new(gixy_bin()).arg("--version").output()
        && String::from_utf8_lossy(&o.stdout).contains(&want) {
            return Ok(());
        }
    let st = Command::new("python3").args(["-m", "venv"]).arg(venv()).status()?;
    anyhow::ensure!(st.success(), "python3 -m venv {} failed", venv().display());
    let st = Command::new(venv().join("bin").join("pip"))
        .args(["install", "--quiet", &format!("gixy-ng=={v}")])
        .status()?;
    anyhow::ensure!(st.success(), "pip install gixy-ng=={v} failed");
    Ok(())
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
            let Some(rest) = line.trim_start().strip_prefix('#').map(str::trim_start) else { continue };
            let Some(rest) = rest.strip_prefix("gixy-skip:") else { continue };
            let (plugin, reason) = rest.split_once("--").map_or((rest.trim(), ""), |(p, r)| (p.trim(), r.trim()));
            if plugin.is_empty() || reason.is_empty() {
                diags.push(Diagnostic::error(
                    "nginx::gixy-skip",
                    format!("`{}`: write `# gixy-skip: PLUGIN -- why this finding does not apply`", line.trim()),
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

/// Runs gixy-ng; no findings when it is not installed.
pub fn check(tree: &Tree) -> Vec<Diagnostic> {
    let Some(root) = config::root_file(tree) else { return Vec::new() };
    if !gixy_bin().exists() {
        return Vec::new();
    }
    let (skip, mut diags) = skips(tree);
    let dir = root.rsplit_once('/').map_or(String::new(), |(d, _)| format!("{d}/"));
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let scratch = std::env::temp_dir().join(format!(
        "xtask-gixy-{}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let etc = scratch.join("etc/nginx");
    let res = run(tree, &root, &dir, &etc, &skip);
    let _ = std::fs::remove_dir_all(&scratch);
    match res {
        Ok(mut d) => diags.append(&mut d),
        Err(e) => diags.push(Diagnostic::warning("nginx::gixy", format!("could not run gixy-ng: {e}"), &config::md(tree, &root, 1))),
    }
    diags
}

fn run(tree: &Tree, root: &str, dir: &str, etc: &Path, skip: &[String]) -> anyhow::Result<Vec<Diagnostic>> {
    std::fs::create_dir_all(etc)?;
    let etc_s = format!("{}/", etc.display());
    for f in IMAGE_FILES {
        let src = Path::new("/etc/nginx").join(f);
        if src.exists() {
            std::fs::copy(&src, etc.join(f))?;
        }
    }
    for (path, tf) in &tree.files {
        let Some(rel) = path.strip_prefix(dir) else { continue };
        let out = etc.join(rel);
        if let Some(p) = out.parent() {
            std::fs::create_dir_all(p)?;
        }
        std::fs::write(out, tf.content.replace(CONTAINER_PREFIX, &etc_s))?;
    }
    let mut cmd = Command::new(gixy_bin());
    cmd.args(["-f", "json"]);
    if !skip.is_empty() {
        cmd.arg("--skips").arg(skip.join(","));
    }
    let out = cmd.arg(etc.join(root.strip_prefix(dir).unwrap_or(root))).output()?;
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
    let mut diags = Vec::new();
    for f in findings {
        let s = |k: &str| f.get(k).and_then(|v| v.as_str()).unwrap_or("").to_string();
        let file = s("file");
        let line = f.get("line").and_then(serde_json::Value::as_u64).unwrap_or(1) as usize;
        let tree_path = file.strip_prefix(&etc_s).map(|r| format!("{dir}{r}"));
        let at = match &tree_path {
            Some(p) if tree.get(p).is_some() => config::md(tree, p, line),
            _ => MdLoc::new(file.clone(), line),
        };
        diags.push(
            Diagnostic::error(
                "nginx::gixy",
                format!("gixy-ng {} ({}): {}. {}", s("plugin"), s("severity"), s("summary"), s("reason")),
                &at,
            )
            .with_note(s("reference")),
        );
    }
    Ok(diags)
}
