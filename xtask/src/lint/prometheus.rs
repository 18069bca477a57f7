//! Prometheus: a tree's Prometheus configuration (a YAML file with a top-level
//! `scrape_configs`) is checked by Prometheus's own `promtool check config`, which also loads
//! every rule file it names, relative to the configuration's directory. The tree's files are
//! copied into a scratch directory for it, so relative `rule_files` resolve as they do in the
//! container, where both files are mounted side by side.
//!
//! Against the deployment: every Synapse process with a metrics listener must be a target,
//! written as its Compose service name and the listener's port (the name the process has on
//! the Compose network). A process added without its target would go unwatched.
//!
//! Without `promtool` (Debian's `prometheus` package), one warning says so.

use super::TreeView;
use crate::diagnostics::Diagnostic;
use crate::tree::{Tree, TreeFile};
use std::collections::BTreeSet;

/// The tree's Prometheus configurations.
pub fn configs(tree: &Tree) -> Vec<&TreeFile> {
    tree.files
        .values()
        .filter(|f| {
            f.is_yaml()
                && f.yaml_root()
                    .is_some_and(|r| r.get("scrape_configs").is_some())
        })
        .collect()
}

/// Every `host:port` of every `static_configs` entry, with its line.
pub fn targets(f: &TreeFile) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    let Some(root) = f.yaml_root() else {
        return out;
    };
    for job in root.get("scrape_configs").map_or(&[][..], |n| n.items()) {
        for sc in job.get("static_configs").map_or(&[][..], |n| n.items()) {
            if let Some(t) = sc.get("targets") {
                for (s, n) in t.str_nodes() {
                    out.push((s.to_string(), n.line()));
                }
            }
        }
    }
    out
}

pub fn check(view: &TreeView<'_>) -> Vec<Diagnostic> {
    let mut diags = Vec::new();
    for f in configs(view.tree) {
        diags.append(&mut coverage(view, f));
        diags.append(&mut promtool(view, f));
    }
    diags
}

/// Every Synapse process with a metrics listener is a target.
fn coverage(view: &TreeView<'_>, f: &TreeFile) -> Vec<Diagnostic> {
    let mut diags = Vec::new();
    let Some(d) = view.deployment() else {
        return diags;
    };
    let have: BTreeSet<String> = targets(f).into_iter().map(|(t, _)| t).collect();
    for p in &d.processes {
        let Some(port) = p
            .listeners
            .iter()
            .find(|l| l.kind == "metrics")
            .and_then(|l| l.port)
        else {
            continue;
        };
        let Some(svc) = view.service_of(p) else {
            continue;
        };
        let want = format!("{}:{port}", svc.name);
        if !have.contains(&want) {
            diags.push(
                Diagnostic::error(
                    "prometheus::missing-target",
                    format!(
                        "Synapse process `{}` serves metrics on port {port}, but `{}` does not \
                         scrape `{want}`: it would go unwatched",
                        p.name, f.path
                    ),
                    &f.first_loc(),
                )
                .with_note(format!("its metrics listener: {}", p.at.file)),
            );
        }
    }
    diags
}

/// `promtool check config` on a scratch copy of the tree.
fn promtool(view: &TreeView<'_>, f: &TreeFile) -> Vec<Diagnostic> {
    let Some(exe) = crate::tools::which("promtool") else {
        return vec![Diagnostic::warning(
            "prometheus::no-promtool",
            "`promtool` is not installed (Debian package `prometheus`), so the Prometheus \
             configuration and its rules were not checked: run `cargo xtask setup`",
            &f.first_loc(),
        )];
    };
    let dir = match crate::cache::scratch_dir("promtool") {
        Ok(d) => d,
        Err(e) => {
            return vec![Diagnostic::warning(
                "prometheus::no-promtool",
                format!("no scratch directory for promtool: {e}"),
                &f.first_loc(),
            )];
        }
    };
    let _ = std::fs::remove_dir_all(&dir);
    let result = (|| -> std::io::Result<std::process::Output> {
        for t in view.tree.files.values() {
            // The same containment as extract: never write outside the scratch directory.
            crate::contain::write(&dir, &t.path, &t.content)?;
        }
        std::process::Command::new(&exe)
            .args(["check", "config"])
            .arg(dir.join(&f.path))
            .output()
    })();
    let _ = std::fs::remove_dir_all(&dir);
    match result {
        Ok(out) if out.status.success() => Vec::new(),
        Ok(out) => {
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
            .replace(&format!("{}/", dir.display()), "");
            let why: Vec<&str> = text
                .lines()
                .filter(|l| l.contains("FAILED") || l.contains("error") || l.contains("err="))
                .map(str::trim)
                .collect();
            vec![
                Diagnostic::error(
                    "prometheus::promtool",
                    format!(
                        "promtool rejects `{}` or a rule file it names: {}",
                        f.path,
                        if why.is_empty() {
                            text.trim().to_string()
                        } else {
                            why.join("; ")
                        }
                    ),
                    &f.first_loc(),
                )
                .with_note(format!("checked with {} check config", exe.display())),
            ]
        }
        Err(e) => vec![Diagnostic::warning(
            "prometheus::no-promtool",
            format!(
                "promtool could not run ({e}), so the Prometheus configuration was not checked"
            ),
            &f.first_loc(),
        )],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_of_static_configs() {
        let t = Tree::from_literal(&[(
            "monitoring/prometheus.yml",
            "scrape_configs:\n  - job_name: s\n    static_configs:\n      - targets: [\"a:9000\", \"b:9000\"]\n",
        )]);
        let f = t.get("monitoring/prometheus.yml").unwrap();
        let got: Vec<String> = targets(f).into_iter().map(|(s, _)| s).collect();
        assert_eq!(got, ["a:9000", "b:9000"]);
    }
}
