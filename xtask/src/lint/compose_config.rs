//! The real Docker Compose v2 on the tree: `docker compose config --quiet`, which loads the
//! Compose file exactly as `docker compose up` will (interpolation from `.env`, merge keys,
//! `env_file`s, the Compose specification's schema, durations and sizes, services, volumes and
//! networks referred to) without a Docker daemon.
//!
//! The tree is written to a scratch directory and Compose runs there with a clean environment
//! (so no variable of the contributor's shell fills a `${VAR}`), every profile enabled (a
//! service behind a profile is checked too). Compose stops at its first error; its message names
//! a key path (`services.db.restart`, `'services[db].healthcheck.interval'`), a service, an
//! `env_file` or a YAML line, and each is mapped through the YAML model (which keeps positions
//! through anchors and merge keys) to the line of the extracted file, then to the Markdown line.
//! Errors the linter's own Compose checks already report at that line are not repeated.
//!
//! Unlike a JSON-schema validator, Compose reports one error per run, and when a file has
//! several, which one comes first varies from run to run (Go's map order): fix it and lint again.
//! For one input the answer is cached, so lint repeats itself; a test case holds one error.
//!
//! The Compose binary is the `docker-compose` CLI plugin that `cargo xtask setup compose`
//! installs (run directly: no Docker CLI or daemon needed); when it is missing the check says so
//! in a warning. Answers are cached like the other external checkers' ([`crate::cache`]).

use super::TreeView;
use crate::compose::Compose;
use crate::diagnostics::{Diagnostic, Severity};
use crate::yaml::{Kind, Node};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// Stands for the scratch directory in (cached) Compose output.
const TREE: &str = "@TREE@/";

/// The Compose binary and the version it reports, looked up once per process.
fn plugin() -> Option<&'static (std::path::PathBuf, Option<String>)> {
    static P: OnceLock<Option<(std::path::PathBuf, Option<String>)>> = OnceLock::new();
    P.get_or_init(|| {
        let bin = crate::tools::compose_plugin()?;
        let version = crate::tools::compose_version(&bin);
        Some((bin, version))
    })
    .as_ref()
}

/// Runs Compose on the tree of `view`; `own` are the findings of the linter's own Compose checks
/// (an error of Compose at a line they already report is left out).
pub fn check(view: &TreeView<'_>, compose: &Compose, own: &[Diagnostic]) -> Vec<Diagnostic> {
    let first = view
        .file(&compose.path)
        .map_or_else(|| view.loc(&compose.path, 1), |f| f.first_loc());
    let Some((bin, version)) = plugin() else {
        return vec![Diagnostic::warning(
            "compose::no-compose",
            "Docker Compose v2 is not installed, so the Compose file was not checked by `docker compose config`: \
             run `cargo xtask setup compose`",
            &first,
        )];
    };
    let mut diags = Vec::new();
    let want = crate::tools::version("compose", "version").unwrap_or_default();
    if version.as_deref() != Some(want.as_str()) {
        diags.push(Diagnostic::warning(
            "compose::no-compose",
            format!(
                "{} reports Compose version {}, not the pinned {want}: run `cargo xtask setup compose`",
                bin.display(),
                version.as_deref().unwrap_or("(none)")
            ),
            &first,
        ));
    }
    // The answer depends on the binary and the tree's files only.
    let id = crate::cache::tool_id(bin);
    let mut parts: Vec<&[u8]> = vec![b"compose config v1", &id, compose.path.as_bytes()];
    for (path, tf) in &view.tree.files {
        parts.push(path.as_bytes());
        parts.push(tf.content.as_bytes());
    }
    let key = crate::cache::key(&parts);
    let res = crate::cache::memo(&key, || {
        run(view, bin, &compose.path).map_err(|e| e.to_string())
    });
    match res {
        Ok((ok, text)) => diags.extend(to_diags(view, compose, ok, &text, own)),
        Err(e) => diags.push(Diagnostic::warning(
            "compose::no-compose",
            format!("could not run `docker compose config`: {e}"),
            &first,
        )),
    }
    diags
}

/// Writes the tree to a scratch directory and runs `docker-compose config --quiet` there:
/// (passed, its output with the scratch path replaced by [`TREE`]).
fn run(view: &TreeView<'_>, bin: &Path, compose_file: &str) -> std::io::Result<(bool, String)> {
    let scratch = crate::cache::scratch_dir("compose").map_err(std::io::Error::other)?;
    let res = (|| {
        for (path, tf) in &view.tree.files {
            // The same containment as extract: never write outside the scratch directory.
            crate::contain::write(&scratch, path, &tf.content)?;
        }
        let out = Command::new(bin)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("HOME", &scratch)
            .current_dir(&scratch)
            .args(["--project-name", "xtask-lint", "--profile", "*", "--file"])
            .arg(compose_file)
            .args(["config", "--quiet"])
            .stdin(Stdio::null())
            .output()?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        let prefix = format!("{}/", scratch.display());
        Ok((out.status.success(), text.replace(&prefix, TREE)))
    })();
    let _ = std::fs::remove_dir_all(&scratch);
    res
}

/// Compose's warnings that the linter's own checks report as errors already.
const COVERED_WARNINGS: &[&str] = &[
    "the attribute `version` is obsolete", // compose::obsolete-version
    "variable is not set. Defaulting to a blank", // compose::undefined-variable
];

/// Compose's output -> diagnostics at Markdown lines.
fn to_diags(
    view: &TreeView<'_>,
    compose: &Compose,
    ok: bool,
    text: &str,
    own: &[Diagnostic],
) -> Vec<Diagnostic> {
    let at = |line: usize| view.loc(&compose.path, line);
    let first = at(1);
    let mut errors: Vec<Diagnostic> = Vec::new();
    let mut warnings: Vec<Diagnostic> = Vec::new();
    for raw in text.lines() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with("decoding failed due to the following error") {
            continue;
        }
        if let Some(msg) = logrus_field(line, "msg") {
            let level = logrus_field(line, "level").unwrap_or_default();
            if level == "warning" || level == "info" || level == "debug" {
                if level == "warning" && !COVERED_WARNINGS.iter().any(|c| msg.contains(c)) {
                    let msg = shown(&msg);
                    if !warnings.iter().any(|w| w.message.ends_with(&msg)) {
                        warnings.push(Diagnostic::warning(
                            "compose::config-warning",
                            format!("docker compose config: {msg}"),
                            &first,
                        ));
                    }
                }
                continue;
            }
        }
        if ok {
            continue;
        }
        let (code, line_no, found) = locate(compose, line);
        let found = found.map_or_else(String::new, |v| format!(" (found `{v}`)"));
        errors.push(
            Diagnostic::error(
                code,
                format!("docker compose config: {}{found}", shown(line)),
                &at(line_no.unwrap_or(1)),
            )
            .with_note(format!(
                "in {}, line {}; Compose stops at its first error",
                compose.path,
                line_no.unwrap_or(1)
            )),
        );
    }
    if !ok && errors.is_empty() {
        errors.push(Diagnostic::error(
            "compose::config",
            format!(
                "docker compose config failed: {}",
                shown(text.trim()).lines().collect::<Vec<_>>().join(" ")
            ),
            &first,
        ));
    }
    // One finding per line: a template merged into many services fails once per service, in an
    // order that changes from run to run (Go map order): keep the smallest message, so the
    // answer is the same every time.
    errors.sort_by(|a, b| (a.line, &a.code, &a.message).cmp(&(b.line, &b.code, &b.message)));
    let mut out: Vec<Diagnostic> = Vec::new();
    let mut more = 0;
    for d in errors {
        let same_line = |o: &Diagnostic| o.file == d.file && o.line == d.line;
        if own
            .iter()
            .any(|o| o.severity == Severity::Error && same_line(o))
        {
            continue;
        }
        if out.last().is_some_and(|o| same_line(o) && o.code == d.code) {
            more += 1;
            continue;
        }
        note_more(out.last_mut(), more);
        more = 0;
        out.push(d);
    }
    note_more(out.last_mut(), more);
    out.extend(warnings);
    out
}

fn note_more(d: Option<&mut Diagnostic>, more: usize) {
    if let Some(d) = d
        && more > 0
    {
        d.notes.push(format!(
            "Compose reports {more} more like it from this line (a template merged into several services)"
        ));
    }
}

/// A message for people: the scratch prefix out.
fn shown(s: &str) -> String {
    s.replace(TREE, "")
}

/// `key="value"` or `key=value` of a logrus line (`time="..." level=warning msg="..."`).
fn logrus_field(line: &str, key: &str) -> Option<String> {
    let start = line.find(&format!("{key}="))?;
    if start > 0 && !line[..start].ends_with(' ') {
        return None;
    }
    let rest = &line[start + key.len() + 1..];
    if let Some(q) = rest.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = q.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => out.extend(chars.next()),
                '"' => return Some(out),
                c => out.push(c),
            }
        }
        Some(out)
    } else {
        Some(rest.split_whitespace().next().unwrap_or("").to_string())
    }
}

/// The diagnostic code and the line of the Compose file one line of Compose's error names, and
/// for a schema error about a scalar, that scalar (Compose's `must be a ...` names only one of
/// the types a key accepts).
fn locate(compose: &Compose, msg: &str) -> (&'static str, Option<usize>, Option<String>) {
    let root = &compose.root;
    // `validating FILE: services.init-sockets additional properties 'restrat' not allowed`
    if let Some(rest) = msg.strip_prefix("validating ")
        && let Some((_, detail)) = rest.split_once(": ")
    {
        let path = detail.split_whitespace().next().unwrap_or("");
        let (mut line, node) = path_line(root, path);
        if detail.contains("additional properties")
            && let Some(name) = quoted(detail, '\'')
            && let Some(k) = node.get_key(name)
        {
            line = k.line();
        }
        let found = (detail.contains(" must be ") && node.as_str().is_some())
            .then(|| node.as_str().unwrap_or_default().to_string());
        return ("compose::schema", Some(line), found);
    }
    // `error while interpolating services.db.healthcheck.retries: failed to cast ...`
    if let Some(rest) = msg.strip_prefix("error while interpolating ")
        && let Some((path, _)) = rest.split_once(": ")
    {
        return ("compose::config", Some(path_line(root, path).0), None);
    }
    // `'services[db].healthcheck.interval' time: invalid duration "15 parsecs"`
    if let Some(rest) = msg.strip_prefix('\'')
        && let Some((path, _)) = rest.split_once('\'')
    {
        return ("compose::config", Some(path_line(root, path).0), None);
    }
    // `failed to parse FILE: line 44: ...`, `yaml: line 40: ...`
    if let Some(i) = msg.find("line ") {
        let digits: String = msg[i + 5..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        if let Ok(n) = digits.parse::<usize>()
            && (msg.starts_with("yaml:") || msg.starts_with("failed to parse"))
        {
            return ("compose::config", Some(n), None);
        }
    }
    // `env file @TREE@/.nope.env not found: stat ...`
    if let Some(rest) = msg.strip_prefix("env file ") {
        let file = rest.split_whitespace().next().unwrap_or("");
        let file = file.strip_prefix(TREE).unwrap_or(file);
        return ("compose::config", env_file_line(compose, file), None);
    }
    // `service "synapse" depends on undefined service "dbx": invalid compose project`,
    // `service "init-sockets" refers to undefined volume sockets2: ...`, other service errors.
    if let Some(svc) = msg
        .strip_prefix("service ")
        .and_then(|r| quoted(r, '"'))
        .and_then(|name| compose.service(name))
    {
        if let Some(dep) = msg
            .split_once("depends on undefined service ")
            .and_then(|(_, r)| quoted(r, '"'))
            && let Some(k) = svc
                .node
                .get("depends_on")
                .and_then(|d| d.get_key(dep).or_else(|| item_with(d, dep)))
        {
            return ("compose::config", Some(k.line()), None);
        }
        if let Some((_, r)) = msg.split_once("refers to undefined volume ") {
            let vol = r.split([':', ' ']).next().unwrap_or("");
            if let Some(n) = svc.node.get("volumes").and_then(|v| item_with(v, vol)) {
                return ("compose::config", Some(n.line()), None);
            }
        }
        return ("compose::config", Some(svc.line), None);
    }
    ("compose::config", None, None)
}

/// The first `'...'`/`"..."` quoted word of `s`.
fn quoted(s: &str, q: char) -> Option<&str> {
    let start = s.find(q)? + 1;
    let len = s[start..].find(q)?;
    Some(&s[start..start + len])
}

/// The item of a sequence that names `name`: a scalar equal to it or starting with `name:`, or a
/// mapping whose `source` is `name`.
fn item_with<'n>(seq: &'n Node, name: &str) -> Option<&'n Node> {
    seq.items().iter().find(|i| match i.as_str() {
        Some(s) => s == name || s.starts_with(&format!("{name}:")),
        None => i.get("source").and_then(Node::as_str) == Some(name),
    })
}

/// The line of the `env_file` entry that names `file` (relative to the tree).
fn env_file_line(compose: &Compose, file: &str) -> Option<usize> {
    let clean = |p: &str| p.trim_start_matches("./").to_string();
    compose
        .services
        .iter()
        .flat_map(|s| &s.env_files)
        .find(|w| clean(&w.text) == file)
        .map(|w| w.line)
}

/// The line a Compose key path names (`services.db.healthcheck.interval`, or with brackets,
/// `services[db].healthcheck`): the deepest node the path reaches in the YAML model, at the line
/// of its key (Compose's paths are dotted, and service names may hold dots: the longest key that
/// matches wins). Also returns that node.
fn path_line<'n>(root: &'n Node, path: &str) -> (usize, &'n Node) {
    let path = path.replace(']', "").replace('[', ".");
    let mut rest = path.trim_matches('.');
    let (mut line, mut node) = (root.line(), root);
    while !rest.is_empty() {
        match &node.kind {
            Kind::Map(entries) => {
                let best = entries
                    .iter()
                    .filter_map(|(k, v)| {
                        let ks = k.as_str()?;
                        (rest == ks || rest.starts_with(&format!("{ks}."))).then_some((
                            ks.len(),
                            k,
                            v,
                        ))
                    })
                    .max_by_key(|(len, _, _)| *len);
                let Some((len, k, v)) = best else { break };
                line = k.line();
                node = v;
                rest = rest[len..].trim_start_matches('.');
            }
            Kind::Seq(items) => {
                let (idx, r) = rest.split_once('.').unwrap_or((rest, ""));
                let Some(item) = idx.parse::<usize>().ok().and_then(|i| items.get(i)) else {
                    break;
                };
                line = item.line();
                node = item;
                rest = r;
            }
            Kind::Scalar { .. } => break,
        }
    }
    (line, node)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(text: &str) -> Node {
        crate::yaml::load(text).unwrap().docs.remove(0)
    }

    #[test]
    fn compose_paths_reach_the_key_line_through_merges() {
        let r = root(
            "x-t: &t\n  healthcheck:\n    interval: 15s\nservices:\n  db.main:\n    <<: *t\n    image: x\n  app:\n    volumes:\n      - a:/a\n      - b:/b\n",
        );
        assert_eq!(path_line(&r, "services.db.main.image").0, 7);
        assert_eq!(path_line(&r, "services[db.main].healthcheck.interval").0, 3);
        assert_eq!(path_line(&r, "services.app.volumes.1").0, 11);
        // A path past what the file has stops at the deepest node reached.
        assert_eq!(path_line(&r, "services.app.nope.deeper").0, 8);
    }

    #[test]
    fn logrus_fields() {
        let l =
            r#"time="2026-12-01T20:55:03Z" level=warning msg="the \"NOPE\" variable is not set""#;
        assert_eq!(logrus_field(l, "level").as_deref(), Some("warning"));
        assert_eq!(
            logrus_field(l, "msg").as_deref(),
            Some(r#"the "NOPE" variable is not set"#)
        );
        assert_eq!(logrus_field("no fields here", "msg"), None);
    }
}
