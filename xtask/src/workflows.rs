//! Checks of the GitHub workflows (`.github/workflows/*.yml`) with tools that install from PyPI
//! and Debian (no npm, no download at test time):
//!
//! - [`schema`]: `check-jsonschema --builtin-schema vendor.github-workflows` (SchemaStore's
//!   workflow schema, vendored in the pinned check-jsonschema): unknown keys, missing `runs-on`,
//!   wrong types;
//! - [`expressions`]: every `${{ }}` expression and `if:` condition, read here: known contexts
//!   and functions, the documented properties of `github`, `runner`, `job`, `strategy`,
//!   `steps.<id>` and `needs.<id>`, a `steps.<id>` that is an earlier step of the same job, a
//!   `needs.<id>` the job lists in `needs:`, a `matrix.<key>` of the job's matrix, an
//!   `inputs.<name>` the workflow declares. (Which context is *available* in which key is not
//!   checked.)
//! - [`zizmor`]: the zizmor security audit, offline, with the default ("regular") persona: the
//!   one meant to gate CI (few false positives; "pedantic" and "auditor" add code-smell and
//!   low-confidence findings). Its configuration is `.github/zizmor.yml`; a finding is fixed in the
//!   workflow or silenced on its line with `# zizmor: ignore[AUDIT]` and the reason beside it.
//! - [`shellcheck`]: every `run:` step through shellcheck, `${{ }}` replaced by a word.
//!
//! Each finding is a [`Diagnostic`] at the workflow file (as given) and its 1-based line.

use crate::diagnostics::{Diagnostic, MdLoc};
use crate::yaml::{Kind, Node, Style};
use anyhow::Context;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The workflow files of a repository: `.github/workflows/*.yml` and `*.yaml`, sorted.
pub fn files(repo: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(repo.join(".github/workflows"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "yml" || e == "yaml"))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// The zizmor configuration of this repository.
pub fn zizmor_config() -> PathBuf {
    crate::project_root().join(".github/zizmor.yml")
}

/// Every check on `files`; an error only when a tool cannot run at all.
pub fn check(files: &[PathBuf]) -> anyhow::Result<Vec<Diagnostic>> {
    let mut diags = schema(files)?;
    for f in files {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display()))?;
        diags.extend(expressions(&shown(f), &text));
        diags.extend(shellcheck(f)?);
    }
    diags.extend(zizmor(files, &zizmor_config())?);
    crate::diagnostics::sort(&mut diags);
    Ok(diags)
}

/// A path as diagnostics show it: relative to the repository when it is inside.
fn shown(p: &Path) -> String {
    let root = crate::project_root();
    p.strip_prefix(&root)
        .unwrap_or(p)
        .to_string_lossy()
        .into_owned()
}

fn at(file: &str, line: usize) -> MdLoc {
    MdLoc::new(file, line.max(1))
}

/// Loads a workflow, or the diagnostic of why it does not load.
fn load(file: &str, text: &str) -> Result<Node, Diagnostic> {
    match crate::yaml::load(text) {
        Ok(mut l) if !l.docs.is_empty() => Ok(l.docs.remove(0)),
        Ok(_) => Err(Diagnostic::error(
            "workflow::yaml",
            "the workflow is empty",
            &at(file, 1),
        )),
        Err(i) => Err(Diagnostic::error(
            "workflow::yaml",
            i.message,
            &at(file, i.line),
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// check-jsonschema

/// SchemaStore's GitHub workflow schema, as vendored by the pinned check-jsonschema.
pub fn schema(files: &[PathBuf]) -> anyhow::Result<Vec<Diagnostic>> {
    if files.is_empty() {
        return Ok(Vec::new());
    }
    let bin = crate::tools::py_tool("check-jsonschema", "check-jsonschema")?;
    let out = Command::new(&bin)
        .args([
            "--builtin-schema",
            "vendor.github-workflows",
            "--output-format",
            "json",
            "--color",
            "never",
        ])
        .args(files)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {}", bin.display()))?;
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "check-jsonschema printed no JSON report (exit {}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    let mut diags = Vec::new();
    let s = |v: &serde_json::Value, k: &str| v[k].as_str().unwrap_or("").to_string();
    for e in report["parse_errors"].as_array().into_iter().flatten() {
        let file = s(e, "filename");
        diags.push(Diagnostic::error(
            "workflow::yaml",
            format!("check-jsonschema cannot parse it: {}", s(e, "message")),
            &at(&shown(Path::new(&file)), 1),
        ));
    }
    for e in report["errors"].as_array().into_iter().flatten() {
        let file = s(e, "filename");
        // Of a `oneOf` failure, the deepest sub-error says what is wrong.
        let best =
            if e["has_sub_errors"].as_bool() == Some(true) && e["best_deep_match"].is_object() {
                &e["best_deep_match"]
            } else {
                e
            };
        let (path, message) = (s(best, "path"), s(best, "message"));
        let line = std::fs::read_to_string(&file)
            .ok()
            .and_then(|t| crate::yaml::load(&t).ok())
            .and_then(|l| l.docs.into_iter().next())
            .map_or(1, |root| json_path_line(&root, &path, &message));
        diags.push(
            Diagnostic::error(
                "workflow::schema",
                format!("{path}: {message}"),
                &at(&shown(Path::new(&file)), line),
            )
            .with_note("GitHub's workflow schema (check-jsonschema vendor.github-workflows)"),
        );
    }
    if !out.status.success() && diags.is_empty() {
        anyhow::bail!(
            "check-jsonschema failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(diags)
}

/// The line of a JSON path of check-jsonschema (`$.jobs.a.steps[0]`, `$["on"]`): the deepest
/// node reached, at its key's line; for "('x' was unexpected)", the line of key `x` there.
fn json_path_line(root: &Node, path: &str, message: &str) -> usize {
    let mut segs: Vec<String> = Vec::new();
    let mut rest = path.strip_prefix('$').unwrap_or(path);
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            segs.push(r[..end].to_string());
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']').unwrap_or(r.len());
            segs.push(r[..end].trim_matches(['"', '\'']).to_string());
            rest = r.get(end + 1..).unwrap_or("");
        } else {
            break;
        }
    }
    let (mut line, mut node) = (root.line(), root);
    for seg in &segs {
        let next = match &node.kind {
            Kind::Map(entries) => entries
                .iter()
                .find(|(k, _)| k.as_str() == Some(seg.as_str()))
                .map(|(k, v)| (k.line(), v)),
            Kind::Seq(items) => seg
                .parse::<usize>()
                .ok()
                .and_then(|i| items.get(i))
                .map(|v| (v.line(), v)),
            Kind::Scalar { .. } => None,
        };
        let Some((l, n)) = next else { break };
        line = l;
        node = n;
    }
    if let Some((_, r)) = message.split_once("('")
        && let Some((key, _)) = r.split_once("' was unexpected")
        && let Some(k) = node.get_key(key)
    {
        line = k.line();
    }
    line
}

// ---------------------------------------------------------------------------------------------
// ${{ }} expressions

const FUNCTIONS: &[&str] = &[
    "contains",
    "startswith",
    "endswith",
    "format",
    "join",
    "tojson",
    "fromjson",
    "hashfiles",
    "success",
    "always",
    "cancelled",
    "failure",
    "case",
];

const CONTEXTS: &[&str] = &[
    "github", "env", "vars", "job", "jobs", "steps", "runner", "secrets", "strategy", "matrix",
    "needs", "inputs",
];

/// The documented properties of the `github` context.
const GITHUB: &[&str] = &[
    "action",
    "action_path",
    "action_ref",
    "action_repository",
    "action_status",
    "actor",
    "actor_id",
    "api_url",
    "base_ref",
    "env",
    "event",
    "event_name",
    "event_path",
    "graphql_url",
    "head_ref",
    "job",
    "path",
    "ref",
    "ref_name",
    "ref_protected",
    "ref_type",
    "repository",
    "repository_id",
    "repository_owner",
    "repository_owner_id",
    "repositoryurl",
    "retention_days",
    "run_id",
    "run_number",
    "run_attempt",
    "secret_source",
    "server_url",
    "sha",
    "token",
    "triggering_actor",
    "workflow",
    "workflow_ref",
    "workflow_sha",
    "workspace",
];

const RUNNER: &[&str] = &[
    "name",
    "os",
    "arch",
    "temp",
    "tool_cache",
    "debug",
    "environment",
];

const JOB: &[&str] = &[
    "check_run_id",
    "container",
    "services",
    "status",
    "workflow_ref",
    "workflow_sha",
    "workflow_repository",
    "workflow_file_path",
];

const STRATEGY: &[&str] = &["fail-fast", "job-index", "job-total", "max-parallel"];
const STEP: &[&str] = &["outputs", "conclusion", "outcome"];
const NEEDS: &[&str] = &["outputs", "result"];

/// Where an expression is: which job, and which step of it (None: a job-level key).
#[derive(Clone, Copy)]
struct Scope<'a> {
    job: Option<(&'a str, &'a Node)>,
    step: Option<usize>,
}

/// What the workflow declares that expressions may refer to.
struct Decl {
    /// `inputs.*` of `workflow_dispatch` / `workflow_call`; None when the workflow has neither.
    inputs: Option<BTreeSet<String>>,
}

/// Checks every `${{ }}` expression and `if:` condition of a workflow.
pub fn expressions(file: &str, text: &str) -> Vec<Diagnostic> {
    let root = match load(file, text) {
        Ok(r) => r,
        Err(d) => return vec![d],
    };
    let decl = Decl {
        inputs: declared_inputs(&root),
    };
    let mut diags = Vec::new();
    let top = Scope {
        job: None,
        step: None,
    };
    for (k, v) in root.as_map().unwrap_or(&[]) {
        if k.as_str() == Some("jobs") {
            for (jk, job) in v.as_map().unwrap_or(&[]) {
                let Some(id) = jk.as_str() else { continue };
                let js = Scope {
                    job: Some((id, job)),
                    step: None,
                };
                for (key, val) in job.as_map().unwrap_or(&[]) {
                    if key.as_str() == Some("steps") {
                        for (i, step) in val.as_seq().unwrap_or(&[]).iter().enumerate() {
                            let ss = Scope {
                                job: Some((id, job)),
                                step: Some(i),
                            };
                            walk(file, step, ss, &decl, &mut diags);
                        }
                    } else {
                        walk_entry(file, key, val, js, &decl, &mut diags);
                    }
                }
            }
        } else {
            walk_entry(file, k, v, top, &decl, &mut diags);
        }
    }
    diags
}

fn declared_inputs(root: &Node) -> Option<BTreeSet<String>> {
    let on = root.get("on")?;
    let mut found: Option<BTreeSet<String>> = None;
    for trigger in ["workflow_dispatch", "workflow_call"] {
        if let Some(t) = on.get(trigger) {
            let set = found.get_or_insert_with(BTreeSet::new);
            for (k, _) in t.get("inputs").and_then(Node::as_map).unwrap_or(&[]) {
                if let Some(name) = k.as_str() {
                    set.insert(name.to_ascii_lowercase());
                }
            }
        }
    }
    found
}

fn walk_entry(
    file: &str,
    key: &Node,
    val: &Node,
    scope: Scope<'_>,
    decl: &Decl,
    diags: &mut Vec<Diagnostic>,
) {
    // `if:` is an expression even without `${{ }}`.
    if key.as_str() == Some("if")
        && let Some(cond) = val.as_str()
        && !cond.contains("${{")
    {
        check_expr(file, cond, val.line(), scope, decl, diags);
        return;
    }
    walk(file, val, scope, decl, diags);
}

fn walk(file: &str, node: &Node, scope: Scope<'_>, decl: &Decl, diags: &mut Vec<Diagnostic>) {
    match &node.kind {
        Kind::Map(entries) => {
            for (k, v) in entries {
                walk_entry(file, k, v, scope, decl, diags);
            }
        }
        Kind::Seq(items) => {
            for i in items {
                walk(file, i, scope, decl, diags);
            }
        }
        Kind::Scalar { value, style, .. } => {
            let mut from = 0;
            while let Some(open) = value[from..].find("${{").map(|p| from + p) {
                // Block scalars keep their lines: count them; other multi-line scalars are folded.
                let line = node.line()
                    + if matches!(style, Style::Literal) {
                        value[..open].matches('\n').count()
                    } else {
                        0
                    };
                let body_start = open + 3;
                let Some(close) = find_close(&value[body_start..]).map(|c| body_start + c) else {
                    diags.push(Diagnostic::error(
                        "workflow::expression-syntax",
                        "`${{` without its closing `}}`",
                        &at(file, line),
                    ));
                    break;
                };
                check_expr(file, &value[body_start..close], line, scope, decl, diags);
                from = close + 2;
            }
        }
    }
}

/// The offset of the `}}` that closes an expression (not one inside a string literal).
fn find_close(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let mut i = 0;
    let mut in_str = false;
    while i < b.len() {
        match b[i] {
            b'\'' if in_str && b.get(i + 1) == Some(&b'\'') => i += 1,
            b'\'' => in_str = !in_str,
            b'}' if !in_str && b.get(i + 1) == Some(&b'}') => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

/// One piece of an expression that names something: a function call or a property chain.
#[derive(Debug, PartialEq)]
enum Ref {
    Call(String),
    /// Segments (lower case); `*` for a filter, `?` for a computed index (not checked further).
    Chain(Vec<String>),
}

/// The function calls and property chains of an expression (string literals skipped).
fn refs(expr: &str) -> Result<Vec<Ref>, String> {
    let c: Vec<char> = expr.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let ident = |i: &mut usize| -> String {
        let start = *i;
        while *i < c.len() && (c[*i].is_ascii_alphanumeric() || c[*i] == '_' || c[*i] == '-') {
            *i += 1;
        }
        c[start..*i].iter().collect::<String>().to_ascii_lowercase()
    };
    let skip_ws = |i: &mut usize| {
        while *i < c.len() && c[*i].is_whitespace() {
            *i += 1;
        }
    };
    while i < c.len() {
        let ch = c[i];
        if ch == '\'' {
            i += 1;
            loop {
                match c.get(i) {
                    None => return Err("a string literal is not closed".into()),
                    Some('\'') if c.get(i + 1) == Some(&'\'') => i += 2,
                    Some('\'') => {
                        i += 1;
                        break;
                    }
                    Some(_) => i += 1,
                }
            }
        } else if ch.is_ascii_digit() {
            while i < c.len() && (c[i].is_ascii_alphanumeric() || c[i] == '.') {
                i += 1;
            }
        } else if ch.is_ascii_alphabetic() || ch == '_' {
            let name = ident(&mut i);
            let mut j = i;
            skip_ws(&mut j);
            if c.get(j) == Some(&'(') {
                out.push(Ref::Call(name));
                continue;
            }
            if matches!(name.as_str(), "true" | "false" | "null") {
                continue;
            }
            let mut segs = vec![name];
            loop {
                if c.get(i) == Some(&'.') {
                    i += 1;
                    if c.get(i) == Some(&'*') {
                        i += 1;
                        segs.push("*".into());
                    } else {
                        let s = ident(&mut i);
                        if s.is_empty() {
                            return Err(format!("`{}.` names no property", segs.join(".")));
                        }
                        segs.push(s);
                    }
                } else if c.get(i) == Some(&'[') {
                    let mut j = i + 1;
                    skip_ws(&mut j);
                    if c.get(j) == Some(&'\'') {
                        let start = j + 1;
                        let Some(len) = c[start..].iter().position(|x| *x == '\'') else {
                            return Err("a string literal is not closed".into());
                        };
                        let mut k = start + len + 1;
                        skip_ws(&mut k);
                        if c.get(k) == Some(&']') {
                            segs.push(
                                c[start..start + len]
                                    .iter()
                                    .collect::<String>()
                                    .to_ascii_lowercase(),
                            );
                            i = k + 1;
                            continue;
                        }
                    } else if c.get(j) == Some(&'*') {
                        let mut k = j + 1;
                        skip_ws(&mut k);
                        if c.get(k) == Some(&']') {
                            segs.push("*".into());
                            i = k + 1;
                            continue;
                        }
                    }
                    // A computed index: the chain's shape ends here; its content is read on.
                    segs.push("?".into());
                    i += 1;
                    break;
                } else {
                    break;
                }
            }
            out.push(Ref::Chain(segs));
        } else {
            i += 1;
        }
    }
    Ok(out)
}

fn check_expr(
    file: &str,
    expr: &str,
    line: usize,
    scope: Scope<'_>,
    decl: &Decl,
    diags: &mut Vec<Diagnostic>,
) {
    let loc = at(file, line);
    let found = match refs(expr) {
        Ok(r) => r,
        Err(why) => {
            diags.push(Diagnostic::error(
                "workflow::expression-syntax",
                format!("`${{{{ {} }}}}`: {why}", expr.trim()),
                &loc,
            ));
            return;
        }
    };
    for r in found {
        let problem = match &r {
            Ref::Call(name) => (!FUNCTIONS.contains(&name.as_str())).then(|| {
                (
                    "workflow::unknown-function",
                    format!("`{name}()` is not a function of GitHub expressions"),
                )
            }),
            Ref::Chain(segs) => chain_problem(segs, scope, decl),
        };
        if let Some((code, msg)) = problem {
            diags.push(Diagnostic::error(
                code,
                format!("{msg} (in `${{{{ {} }}}}`)", expr.trim()),
                &loc,
            ));
        }
    }
}

/// What is wrong with a property chain, if anything.
fn chain_problem(segs: &[String], scope: Scope<'_>, decl: &Decl) -> Option<(&'static str, String)> {
    let root = segs[0].as_str();
    let seg = |i: usize| segs.get(i).map(String::as_str);
    let undefined = |list: &[&str], i: usize| -> Option<(&'static str, String)> {
        let p = seg(i)?;
        (p != "*" && p != "?" && !list.contains(&p)).then(|| {
            (
                "workflow::undefined-property",
                format!("`{}` is not a property of `{}`", p, segs[..i].join(".")),
            )
        })
    };
    match root {
        "github" => undefined(GITHUB, 1),
        "runner" => undefined(RUNNER, 1),
        "job" => undefined(JOB, 1),
        "strategy" => undefined(STRATEGY, 1),
        "steps" => {
            let Some((job_id, job)) = scope.job else {
                return Some((
                    "workflow::unknown-step",
                    "the `steps` context exists only inside a job".into(),
                ));
            };
            let id = seg(1)?;
            if id != "*" && id != "?" {
                let steps = job.get("steps").and_then(Node::as_seq).unwrap_or(&[]);
                let before = scope.step.unwrap_or(steps.len());
                let pos = steps.iter().position(|s| {
                    s.get("id")
                        .and_then(Node::as_str)
                        .is_some_and(|x| x.eq_ignore_ascii_case(id))
                });
                match pos {
                    None => {
                        return Some((
                            "workflow::unknown-step",
                            format!("job `{job_id}` has no step with `id: {id}`"),
                        ));
                    }
                    Some(p) if p >= before => {
                        return Some((
                            "workflow::unknown-step",
                            format!(
                                "step `{id}` of job `{job_id}` runs after this one: its results do not exist yet"
                            ),
                        ));
                    }
                    Some(_) => {}
                }
            }
            undefined(STEP, 2)
        }
        "needs" => {
            let Some((job_id, job)) = scope.job else {
                return Some((
                    "workflow::unknown-need",
                    "the `needs` context exists only inside a job".into(),
                ));
            };
            let id = seg(1)?;
            if id != "*" && id != "?" {
                let needs = job.get("needs");
                let listed = needs
                    .map(|n| {
                        n.as_seq()
                            .map(|s| s.iter().filter_map(Node::as_str).collect::<Vec<_>>())
                            .unwrap_or_else(|| n.as_str().into_iter().collect())
                    })
                    .unwrap_or_default();
                if !listed.iter().any(|n| n.eq_ignore_ascii_case(id)) {
                    return Some((
                        "workflow::unknown-need",
                        format!("job `{job_id}` does not list `{id}` in `needs:`"),
                    ));
                }
            }
            undefined(NEEDS, 2)
        }
        "jobs" => undefined(NEEDS, 2),
        "matrix" => {
            let key = seg(1)?;
            if key == "?" {
                return None;
            }
            let matrix = scope
                .job
                .and_then(|(_, j)| j.get("strategy"))
                .and_then(|s| s.get("matrix"));
            let Some(m) = matrix else {
                return Some((
                    "workflow::undefined-property",
                    format!("`matrix.{key}`: the job has no `strategy.matrix`"),
                ));
            };
            let Some(entries) = m.as_map() else {
                return None; // a matrix computed by an expression: its keys are unknown here
            };
            let mut keys: BTreeSet<String> = BTreeSet::new();
            let mut dynamic = false;
            for (k, v) in entries {
                match k.as_str() {
                    Some("include") => match v.as_seq() {
                        Some(items) => {
                            for item in items {
                                match item.as_map() {
                                    Some(e) => keys.extend(
                                        e.iter()
                                            .filter_map(|(k, _)| k.as_str())
                                            .map(str::to_ascii_lowercase),
                                    ),
                                    None => dynamic = true,
                                }
                            }
                        }
                        None => dynamic = true,
                    },
                    Some("exclude") => {}
                    Some(name) => {
                        keys.insert(name.to_ascii_lowercase());
                    }
                    None => {}
                }
            }
            (!dynamic && !keys.contains(key)).then(|| {
                (
                    "workflow::undefined-property",
                    format!("`matrix.{key}`: the job's matrix has no key `{key}`"),
                )
            })
        }
        "inputs" => {
            let name = seg(1)?;
            match &decl.inputs {
                None => Some((
                    "workflow::undefined-property",
                    format!(
                        "`inputs.{name}`: the workflow declares no inputs (workflow_dispatch or workflow_call)"
                    ),
                )),
                Some(set) => (name != "?" && name != "*" && !set.contains(name)).then(|| {
                    (
                        "workflow::undefined-property",
                        format!("`inputs.{name}` is not an input the workflow declares"),
                    )
                }),
            }
        }
        "env" | "vars" | "secrets" => None,
        other => {
            debug_assert!(!CONTEXTS.contains(&other));
            Some((
                "workflow::undefined-context",
                format!(
                    "`{other}` is not a context of GitHub expressions (known: {})",
                    CONTEXTS.join(", ")
                ),
            ))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// zizmor

/// zizmor, offline, default persona, with the given configuration; one diagnostic per finding
/// at its primary location.
pub fn zizmor(files: &[PathBuf], config: &Path) -> anyhow::Result<Vec<Diagnostic>> {
    if files.is_empty() {
        return Ok(Vec::new());
    }
    let bin = crate::tools::py_tool("zizmor", "zizmor")?;
    let out = Command::new(&bin)
        .args([
            "--offline",
            "--persona",
            "regular",
            "--format",
            "json",
            "--no-progress",
            "--strict-collection",
            "--config",
        ])
        .arg(config)
        .args(files)
        .env_remove("GH_TOKEN")
        .env_remove("GITHUB_TOKEN")
        .env_remove("ZIZMOR_CONFIG")
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {}", bin.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let findings: Vec<serde_json::Value> = match serde_json::from_str(stdout.trim()) {
        Ok(f) => f,
        Err(_) => {
            // zizmor refused an input (a file it cannot read as a workflow): one finding.
            let stderr = String::from_utf8_lossy(&out.stderr);
            let why = stderr
                .lines()
                .filter(|l| !l.contains(" INFO ") && !l.trim().is_empty())
                .collect::<Vec<_>>()
                .join(" ");
            return Ok(vec![Diagnostic::error(
                "zizmor::failed",
                format!(
                    "zizmor could not audit the workflows ({}): {why}",
                    out.status
                ),
                &at(&shown(&files[0]), 1),
            )]);
        }
    };
    let mut diags = Vec::new();
    for f in findings {
        if f["ignored"].as_bool() == Some(true) {
            continue;
        }
        let ident = f["ident"].as_str().unwrap_or("finding");
        let locs = f["locations"].as_array().cloned().unwrap_or_default();
        let primary = locs
            .iter()
            .find(|l| l["symbolic"]["kind"] == "Primary")
            .or(locs.first());
        let (file, line, note) = primary.map_or((String::new(), 1, String::new()), |l| {
            let key = &l["symbolic"]["key"]["Local"];
            let file = key["given_path"]
                .as_str()
                .or(key["verbatim_path"].as_str())
                .unwrap_or("")
                .to_string();
            let row = l["concrete"]["location"]["start_point"]["row"]
                .as_u64()
                .unwrap_or(0) as usize;
            let note = l["symbolic"]["annotation"]
                .as_str()
                .unwrap_or("")
                .to_string();
            (file, row + 1, note)
        });
        let sev = f["determinations"]["severity"].as_str().unwrap_or("");
        diags.push(
            Diagnostic::error(
                &format!("zizmor::{ident}"),
                format!(
                    "{}: {note} ({sev} severity; {})",
                    f["desc"].as_str().unwrap_or(""),
                    f["url"].as_str().unwrap_or("")
                ),
                &at(&shown(Path::new(&file)), line),
            )
            .with_note(
                "fix it, or silence it on that line with `# zizmor: ignore[AUDIT]` and the reason",
            ),
        );
    }
    Ok(diags)
}

// ---------------------------------------------------------------------------------------------
// shellcheck on run: steps

/// shellcheck on every `run:` step (bash unless the step, job or workflow says `sh`; other
/// shells are skipped), `${{ }}` expressions replaced by a word, at the workflow's own lines.
pub fn shellcheck(path: &Path) -> anyhow::Result<Vec<Diagnostic>> {
    let file = shown(path);
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let root = match load(&file, &text) {
        Ok(r) => r,
        Err(d) => return Ok(vec![d]),
    };
    let shellcheck = crate::tools::which("shellcheck")
        .context("shellcheck is not installed: run `cargo xtask setup debian`")?;
    let expr = regex::Regex::new(r"\$\{\{[^}]*\}\}").expect("valid regex");
    let default_shell = |n: &Node| {
        n.get("defaults")
            .and_then(|d| d.get("run"))
            .and_then(|r| r.get("shell"))
            .and_then(Node::as_str)
            .map(str::to_string)
    };
    let wf_shell = default_shell(&root);
    let mut diags = Vec::new();
    let jobs = root.get("jobs").and_then(Node::as_map).unwrap_or(&[]);
    for (_, job) in jobs {
        let job_shell = default_shell(job).or_else(|| wf_shell.clone());
        for step in job.get("steps").and_then(Node::as_seq).unwrap_or(&[]) {
            let Some(run) = step.get("run") else { continue };
            let Some(script) = run.as_str() else { continue };
            let shell = step
                .get("shell")
                .and_then(Node::as_str)
                .map(str::to_string)
                .or_else(|| job_shell.clone())
                .unwrap_or_else(|| "bash".into());
            let dialect = match shell.split_whitespace().next().unwrap_or("") {
                "bash" => "bash",
                "sh" => "sh",
                _ => continue,
            };
            let script = expr.replace_all(script, "EXPR").into_owned();
            // Lines of the script are lines of the file only in a block scalar (`run: |`), whose
            // node starts on its first content line.
            let first = run.line();
            let literal = matches!(
                run.kind,
                Kind::Scalar {
                    style: Style::Literal,
                    ..
                }
            );
            let tmp = std::env::temp_dir().join(format!(
                "xtask-workflow-{}-{}.sh",
                std::process::id(),
                unique()
            ));
            std::fs::write(&tmp, format!("#!/usr/bin/env {dialect}\nset -e\n{script}"))?;
            let out = Command::new(&shellcheck)
                .args(["-s", dialect, "-f", "json1"])
                .arg(&tmp)
                .stdin(Stdio::null())
                .output();
            let _ = std::fs::remove_file(&tmp);
            let out = out.context("cannot run shellcheck")?;
            let report: serde_json::Value =
                serde_json::from_slice(&out.stdout).with_context(|| {
                    format!(
                        "shellcheck printed no JSON: {}",
                        String::from_utf8_lossy(&out.stderr)
                    )
                })?;
            for c in report["comments"].as_array().into_iter().flatten() {
                let l = c["line"].as_u64().unwrap_or(3) as usize;
                let line = if literal {
                    first + l.saturating_sub(3)
                } else {
                    first
                };
                let code = c["code"].as_u64().unwrap_or(0);
                let level = c["level"].as_str().unwrap_or("");
                let msg = format!(
                    "{} (https://www.shellcheck.net/wiki/SC{code})",
                    c["message"].as_str().unwrap_or("")
                );
                let code = format!("shell::SC{code}");
                diags.push(Diagnostic::by_tool(
                    &code,
                    matches!(level, "error" | "warning"),
                    msg,
                    &at(&file, line),
                ));
            }
        }
    }
    Ok(diags)
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codes(file: &str, text: &str) -> Vec<(String, usize)> {
        expressions(file, text)
            .into_iter()
            .map(|d| (d.code, d.line))
            .collect()
    }

    #[test]
    fn expression_references() {
        assert_eq!(
            refs("github.event.pull_request.head.sha && needs.*.result != 'x.y' || fromJSON(steps['a-b'].outputs.v)").unwrap(),
            [
                Ref::Chain(vec!["github".into(), "event".into(), "pull_request".into(), "head".into(), "sha".into()]),
                Ref::Chain(vec!["needs".into(), "*".into(), "result".into()]),
                Ref::Call("fromjson".into()),
                Ref::Chain(vec!["steps".into(), "a-b".into(), "outputs".into(), "v".into()]),
            ]
        );
        assert!(refs("'unclosed").is_err());
        assert!(refs("github.").is_err());
        assert_eq!(find_close("'}}' }} x"), Some(5));
    }

    #[test]
    fn contexts_steps_needs_matrix_inputs() {
        let wf = "on:\n  workflow_dispatch:\n    inputs:\n      level: {}\njobs:\n  a:\n    runs-on: ubuntu-latest\n    strategy:\n      matrix:\n        os: [x]\n        include:\n          - extra: 1\n    steps:\n      - id: first\n        run: echo ${{ steps.first.outputs.x }}\n      - run: |\n          echo ${{ matrix.os }} ${{ matrix.extra }}\n          echo ${{ matrix.nope }}\n      - if: steps.first.outcome == 'success' && inputs.level\n        run: echo ${{ inputs.nope }} ${{ github.nope }} ${{ runner.os }}\n  b:\n    needs: a\n    if: needs.a.result == 'success' && needs.c.result\n    runs-on: ${{ nope.x }}\n    steps:\n      - run: echo ${{ steps.first.outputs.x }} ${{ needs.a.bogus }} ${{ frobnicate(1) }}\n";
        assert_eq!(
            codes("w.yml", wf),
            [
                ("workflow::unknown-step".to_string(), 15),
                ("workflow::undefined-property".to_string(), 18),
                ("workflow::undefined-property".to_string(), 20),
                ("workflow::undefined-property".to_string(), 20),
                ("workflow::unknown-need".to_string(), 23),
                ("workflow::undefined-context".to_string(), 24),
                ("workflow::unknown-step".to_string(), 26),
                ("workflow::undefined-property".to_string(), 26),
                ("workflow::unknown-function".to_string(), 26),
            ]
        );
    }

    #[test]
    fn json_paths_reach_the_key() {
        let root = crate::yaml::load("on: push\njobs:\n  a:\n    runs-on: x\n    steps:\n      - run: echo\n        shel: bash\n")
            .unwrap()
            .docs
            .remove(0);
        assert_eq!(json_path_line(&root, "$.jobs.a", "x"), 3);
        assert_eq!(
            json_path_line(
                &root,
                "$.jobs.a.steps[0]",
                "Additional properties are not allowed ('shel' was unexpected)"
            ),
            7
        );
        assert_eq!(json_path_line(&root, "$[\"jobs\"].a.nope", "x"), 3);
    }
}
