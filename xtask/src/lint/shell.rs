//! Shell: shellcheck on every extracted script and every `sh`/`bash` example block, with each
//! finding mapped back to the Markdown line. shellcheck's errors and warnings are errors here;
//! its info and style notes are warnings. Without shellcheck installed, one warning says so.

use super::TreeView;
use crate::book::Block;
use crate::cache;
use crate::diagnostics::{Diagnostic, MdLoc};
use serde::Deserialize;

#[derive(Deserialize)]
struct Output {
    comments: Vec<Comment>,
}

#[derive(Deserialize)]
struct Comment {
    line: usize,
    level: String,
    code: u32,
    message: String,
}

/// Whether a tree file is a shell script.
pub fn is_script(path: &str, lang: &str, content: &str) -> bool {
    matches!(lang, "sh" | "bash" | "shell")
        || path.ends_with(".sh")
        || content.starts_with("#!/bin/sh")
        || content.starts_with("#!/bin/bash")
        || content.starts_with("#!/usr/bin/env bash")
        || content.starts_with("#!/usr/bin/env sh")
}

/// Runs shellcheck on `text`; `Err` when shellcheck cannot run.
fn shellcheck(text: &str, dialect: &str) -> Result<Vec<Comment>, String> {
    let args = ["-f", "json1", "-s", dialect, "-"];
    let exe = crate::tools::which("shellcheck").ok_or("`shellcheck` is not installed")?;
    let out = cache::run_cached(&exe, &args, text.as_bytes())?;
    let parsed: Output = serde_json::from_slice(&out.stdout).map_err(|e| {
        format!(
            "shellcheck printed something that is not its JSON ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    Ok(parsed.comments)
}

fn dialect(text: &str, lang: &str) -> &'static str {
    let first = text.lines().next().unwrap_or("");
    if first.starts_with("#!") {
        if first.contains("bash") { "bash" } else { "sh" }
    } else if lang == "sh" {
        "sh"
    } else {
        "bash"
    }
}

fn to_diag(c: &Comment, at: &MdLoc, note: String) -> Diagnostic {
    let code = format!("shell::SC{}", c.code);
    let msg = format!(
        "{} (https://www.shellcheck.net/wiki/SC{})",
        c.message, c.code
    );
    Diagnostic::by_tool(
        &code,
        matches!(c.level.as_str(), "error" | "warning"),
        msg,
        at,
    )
    .with_note(note)
}

fn missing(at: &MdLoc, why: String) -> Diagnostic {
    Diagnostic::warning(
        "shell::no-shellcheck",
        format!("shell scripts were not checked: {why}"),
        at,
    )
}

pub fn check(view: &TreeView<'_>) -> Vec<Diagnostic> {
    let mut diags = Vec::new();
    for f in view.tree.files.values() {
        if !is_script(&f.path, &f.lang, &f.content) {
            continue;
        }
        match shellcheck(&f.content, dialect(&f.content, &f.lang)) {
            Ok(comments) => {
                for c in comments {
                    diags.push(to_diag(
                        &c,
                        &f.md_loc(c.line),
                        format!("in {}, line {}", f.path, c.line),
                    ));
                }
            }
            Err(why) => {
                diags.push(missing(&f.first_loc(), why));
                break;
            }
        }
    }
    diags
}

/// shellcheck on one `sh`/`bash` example block.
pub fn check_example(b: &Block) -> Vec<Diagnostic> {
    match shellcheck(&b.text, dialect(&b.text, &b.lang)) {
        Ok(comments) => comments
            .iter()
            .map(|c| {
                to_diag(
                    c,
                    &b.line_loc(c.line.max(1) - 1),
                    "in an example block".into(),
                )
            })
            .collect(),
        Err(why) => vec![missing(&b.fence_loc(), why)],
    }
}
