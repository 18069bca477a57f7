//! The pinned Synapse's own config check, run on main and on every worker.
//!
//! For each process, the config files its Compose service passes with `--config-path` are
//! taken from the tree. Paths inside them are container paths (`/data/...`), so each file is
//! copied into a scratch directory with every mount target of that service rewritten to where
//! that mount lands in the scratch copy (a bind of `./synapse` to the tree's `synapse/`, a named
//! volume to its own directory). Then the pinned Synapse loads each process's files exactly as
//! `python -m synapse.config -c shared.yaml -c worker.yaml` does (`HomeServerConfig.load_config`,
//! the function behind that command), all processes in one interpreter so Synapse is imported
//! once. A `ConfigError` carries the key path it is about; it is reported at that key's line in
//! the worker file or the shared file, otherwise at the top of the process's own file.
//!
//! Results are cached (see [`crate::cache`]): an unchanged tree does not start Python again.

use super::TreeView;
use crate::cache;
use crate::compose::{Compose, MountKind, Resolved, Service, word_value};
use crate::diagnostics::Diagnostic;
use crate::synapse::{Deployment, Process, config_args};
use crate::yaml::Node;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

const ROOT: &str = "@ROOT@";

/// The Python side: `HomeServerConfig.load_config` per process, errors as JSON.
const SCRIPT: &str = r#"
import json, sys, traceback
plan = json.load(sys.stdin)
import os
from synapse.config._base import Config, ConfigError
from synapse.config.homeserver import HomeServerConfig

# Reading a config must not create directories (Synapse's ensure_directory makes the media
# store, for one, even from `python -m synapse.config`): check without creating.
def _ensure_directory(cls, dir_path):
    dir_path = cls.abspath(dir_path)
    if os.path.exists(dir_path) and not os.path.isdir(dir_path):
        raise ConfigError("%s is not a directory" % (dir_path,))
    return dir_path
Config.ensure_directory = classmethod(_ensure_directory)
out = {}
for name, files in plan:
    args = []
    for f in files:
        args += ["--config-path", f]
    try:
        HomeServerConfig.load_config("lint", args)
        out[name] = None
    except ConfigError as e:
        out[name] = {"msg": e.msg, "path": [str(p) for p in (e.path or [])]}
    except SystemExit as e:
        out[name] = {"msg": "Synapse exited while reading the config (status %s)" % (e.code,), "path": []}
    except Exception as e:
        out[name] = {"msg": "%s: %s" % (type(e).__name__, e), "path": []}
print(json.dumps(out))
"#;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Failure {
    msg: String,
    path: Vec<String>,
}

/// Rewrites every occurrence of container path `target` (as a whole path prefix) to `to`.
fn rewrite_prefix(text: &str, target: &str, to: &str) -> String {
    let target = target.trim_end_matches('/');
    if target.is_empty() {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(target) {
        let prev = if i > 0 {
            rest[..i].chars().last()
        } else {
            out.chars().last()
        };
        let before_ok = prev.is_none_or(|c| c.is_whitespace() || "\"'[,:{=".contains(c));
        let after = rest[i + target.len()..].chars().next();
        let after_ok = after.is_none_or(|c| c == '/' || c.is_whitespace() || "\"']},".contains(c));
        out.push_str(&rest[..i]);
        if before_ok && after_ok {
            out.push_str(to);
        } else {
            out.push_str(target);
        }
        rest = &rest[i + target.len()..];
    }
    out.push_str(rest);
    out
}

/// Where a mount lands in the scratch copy.
fn landing(svc: &Service, i: usize) -> String {
    let m = &svc.mounts[i];
    match (&m.kind, svc.resolve(&m.target)) {
        (_, Resolved::Tree(t)) => format!("{ROOT}/tree/{t}"),
        (MountKind::Volume, _) => format!("{ROOT}/volumes/{}", m.source),
        _ => format!("{ROOT}/other/{}/{i}", svc.name),
    }
}

/// One process's files, rewritten, with `@ROOT@` standing for the scratch directory.
type Plan = Vec<(String, Vec<(String, String)>)>;

fn plan(view: &TreeView<'_>, syn: &Deployment, compose: Option<&Compose>) -> Plan {
    let mut plan = Vec::new();
    for p in &syn.processes {
        let svc = compose.and_then(|_| view.service_of(p));
        if compose.is_some() && svc.is_none() {
            continue; // reported as synapse::worker-without-service; its paths cannot be mapped
        }
        let files: Vec<String> = match svc {
            Some(s) => config_args(s)
                .iter()
                .filter_map(|w| match s.resolve(word_value(w)) {
                    Resolved::Tree(t) if view.file(&t).is_some() => Some(t),
                    _ => None,
                })
                .collect(),
            None => std::iter::once(syn.shared_file.clone())
                .chain(p.worker_file().map(String::from))
                .collect(),
        };
        if files.is_empty() {
            continue;
        }
        let mut out = Vec::new();
        for f in files {
            let mut text = view.file(&f).map(|t| t.content.clone()).unwrap_or_default();
            if let Some(s) = svc {
                let mut order: Vec<usize> = (0..s.mounts.len()).collect();
                order.sort_by_key(|&i| std::cmp::Reverse(s.mounts[i].target.len()));
                for i in order {
                    text = rewrite_prefix(&text, &s.mounts[i].target, &landing(s, i));
                }
            }
            out.push((f, text));
        }
        plan.push((p.name.clone(), out));
    }
    plan
}

fn run_python(
    view: &TreeView<'_>,
    plan: &Plan,
    visible: &[String],
) -> Result<BTreeMap<String, Option<Failure>>, String> {
    let python = crate::tools::synapse_python();
    // Only the files Synapse can see (under its services' bind mounts) go to the scratch copy and
    // into the cache key: an edit to nginx or PostgreSQL files does not rerun Synapse.
    let seen = |path: &str| {
        visible
            .iter()
            .any(|v| v.is_empty() || path == v || path.starts_with(&format!("{v}/")))
    };
    let files: Vec<&crate::tree::TreeFile> =
        view.tree.files.values().filter(|f| seen(&f.path)).collect();
    let id = cache::tool_id(&python);
    let mut parts: Vec<&[u8]> = vec![b"synapse-config-v3", &id, SCRIPT.as_bytes()];
    for (name, texts) in plan {
        parts.push(name.as_bytes());
        for (file, text) in texts {
            parts.extend([file.as_bytes(), text.as_bytes()]);
        }
        parts.push(b"\0");
    }
    parts.push(b"\0tree");
    for f in &files {
        parts.extend([f.path.as_bytes(), f.content.as_bytes()]);
    }
    let key = cache::key(&parts);
    cache::memo(&key, || {
        let dir = cache::scratch_dir("synapse")?;
        let root = dir.to_string_lossy().into_owned();
        let res = (|| {
            for f in &files {
                // The archive's key is a note, not a key (see `secrets`): Synapse would stop at
                // it before reading the rest. The scratch copy gets a throwaway one.
                let content = if f.content == crate::secrets::KEY_PLACEHOLDER {
                    "ed25519 a_lint AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n"
                } else {
                    f.content.as_str()
                };
                crate::contain::write(&dir.join("tree"), &f.path, content)
                    .map_err(|e| e.to_string())?;
            }
            let mut real: Vec<(String, Vec<String>)> = Vec::new();
            for (name, files) in plan {
                let mut paths = Vec::new();
                for (i, (_, text)) in files.iter().enumerate() {
                    let p = dir.join("proc").join(name).join(format!("{i}.yaml"));
                    std::fs::create_dir_all(p.parent().expect("has a parent"))
                        .map_err(|e| e.to_string())?;
                    std::fs::write(&p, text.replace(ROOT, &root)).map_err(|e| e.to_string())?;
                    paths.push(p.to_string_lossy().into_owned());
                }
                real.push((name.clone(), paths));
            }
            for sub in ["volumes", "other"] {
                let _ = std::fs::create_dir_all(dir.join(sub));
            }
            let input = serde_json::to_vec(&real).map_err(|e| e.to_string())?;
            let mut child = std::process::Command::new(&python)
                .args(["-c", SCRIPT])
                .current_dir(&dir)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .map_err(|e| format!("cannot run {}: {e}", python.display()))?;
            {
                use std::io::Write as _;
                let mut si = child.stdin.take().ok_or("no stdin")?;
                si.write_all(&input).map_err(|e| e.to_string())?;
            }
            let out = child.wait_with_output().map_err(|e| e.to_string())?;
            let stdout = String::from_utf8_lossy(&out.stdout);
            let last = stdout.lines().last().unwrap_or("");
            let mut parsed: BTreeMap<String, Option<Failure>> = serde_json::from_str(last)
                .map_err(|_| {
                    format!(
                        "Synapse's config check did not answer: {}",
                        String::from_utf8_lossy(&out.stderr)
                            .lines()
                            .last()
                            .unwrap_or("")
                    )
                })?;
            // Scratch paths back to tree paths in messages.
            for f in parsed.values_mut().flatten() {
                f.msg = f
                    .msg
                    .replace(&format!("{root}/tree/"), "")
                    .replace(&root, "<scratch>");
            }
            Ok(parsed)
        })();
        let _ = std::fs::remove_dir_all(&dir);
        res
    })
}

/// The line of the key path in a YAML root (deepest node found).
fn line_of_path(root: &Node, path: &[String]) -> Option<usize> {
    let mut node = root;
    let mut line = None;
    for part in path {
        let next = if let Ok(i) = part.parse::<usize>() {
            node.items().get(i)
        } else {
            node.get(part)
        };
        match next {
            Some(n) => {
                line = Some(node.get_key(part).map_or(n.line(), |k| k.line()));
                node = n;
            }
            None => break,
        }
    }
    line
}

pub fn check(view: &TreeView<'_>) -> Vec<Diagnostic> {
    let Some(syn) = view.synapse() else {
        return Vec::new();
    };
    if !crate::tools::synapse_python().exists() {
        return vec![Diagnostic::warning(
            "synapse::config-not-checked",
            "the pinned Synapse is not installed (target/synapse-venv): Synapse's own config check did not run (cargo xtask setup synapse)",
            &view.loc(&syn.shared_file, 1),
        )];
    }
    let compose = view.compose();
    let plan = plan(view, syn, compose);
    let mut visible: Vec<String> = Vec::new();
    match compose {
        Some(_) => {
            for p in &syn.processes {
                if let Some(s) = view.service_of(p) {
                    for m in &s.mounts {
                        if let Resolved::Tree(t) = s.resolve(&m.target)
                            && !visible.contains(&t)
                        {
                            visible.push(t);
                        }
                    }
                }
            }
        }
        None => visible.push(String::new()),
    }
    let results = match run_python(view, &plan, &visible) {
        Ok(r) => r,
        Err(e) => {
            return vec![Diagnostic::warning(
                "synapse::config-not-checked",
                e,
                &view.loc(&syn.shared_file, 1),
            )];
        }
    };
    // Group identical complaints at the same place (e.g. a shared-file error every process hits).
    let mut grouped: BTreeMap<(String, usize, String), Vec<String>> = BTreeMap::new();
    for (name, failure) in results {
        let Some(f) = failure else { continue };
        let Some(p): Option<&Process> = syn.process(&name) else {
            continue;
        };
        let roots: Vec<(String, &Node)> = p
            .worker_file()
            .map(|wf| (wf.to_string(), &syn.worker_roots[wf]))
            .into_iter()
            .chain(std::iter::once((syn.shared_file.clone(), &syn.shared)))
            .collect();
        let at = roots
            .iter()
            .find_map(|(file, root)| line_of_path(root, &f.path).map(|l| (file.clone(), l)))
            .or_else(|| {
                roots
                    .iter()
                    .find_map(|(file, root)| guess_line(root, &f.msg).map(|l| (file.clone(), l)))
            })
            .unwrap_or_else(|| (roots[0].0.clone(), 1));
        let path = if f.path.is_empty() {
            String::new()
        } else {
            format!(" at `{}`", f.path.join("."))
        };
        grouped
            .entry((at.0, at.1, format!("{path}: {}", f.msg.trim())))
            .or_default()
            .push(format!("`{name}`"));
    }
    grouped
        .into_iter()
        .map(|((file, line, msg), names)| {
            Diagnostic::error(
                "synapse::config-error",
                format!("Synapse refuses the config of {}{msg}", names.join(", ")),
                &view.loc(&file, line),
            )
            .with_note(format!(
                "checked with {} (python -m synapse.config)",
                crate::tools::synapse_python().display()
            ))
        })
        .collect()
}

/// Without a key path: a top-level key the message names, or a value it quotes.
fn guess_line(root: &Node, msg: &str) -> Option<usize> {
    let words: Vec<&str> = msg
        .split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
        .collect();
    let key = root
        .entries()
        .iter()
        .filter_map(|(k, _)| k.as_str().map(|s| (s, k.line())))
        .filter(|(k, _)| words.contains(k))
        .max_by_key(|(k, _)| k.len());
    if let Some((_, line)) = key {
        return Some(line);
    }
    for quoted in msg.split('\'').skip(1).step_by(2) {
        if let Some(n) = find_scalar(root, quoted) {
            return Some(n);
        }
    }
    None
}

fn find_scalar(n: &Node, text: &str) -> Option<usize> {
    match &n.kind {
        crate::yaml::Kind::Scalar { value, .. } => (value == text).then_some(n.line()),
        crate::yaml::Kind::Seq(items) => items.iter().find_map(|i| find_scalar(i, text)),
        crate::yaml::Kind::Map(e) => e.iter().find_map(|(_, v)| find_scalar(v, text)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_whole_path_prefixes_only() {
        let t = "a: /data/x\nb: \"/data\"\nc: /database\nd: [/data/y, /datax]\ne: /other/data/z\n";
        let r = rewrite_prefix(t, "/data", "@ROOT@/tree/synapse");
        assert_eq!(
            r,
            "a: @ROOT@/tree/synapse/x\nb: \"@ROOT@/tree/synapse\"\nc: /database\nd: [@ROOT@/tree/synapse/y, /datax]\ne: /other/data/z\n"
        );
    }
}
