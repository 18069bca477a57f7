//! The lint corpus: `tests/fixtures/lint/ok` must lint without errors, and each case in
//! `tests/fixtures/lint/err/*.toml` (a few edits to a base book) must produce its expected
//! diagnostic codes at the expected Markdown lines.
//!
//! Case format:
//! ```toml
//! description = "why this is broken"
//! base = "ok"                      # a book under tests/fixtures/lint
//! [[edit]]                         # applied in order; `find` must occur exactly once
//! file = "src/compose.md"
//! find = 'restart: "no"'
//! replace = "restart: no"
//! [[expect]]
//! code = "yaml::yaml11-boolean"
//! file = "src/compose.md"
//! line = 26
//! ```
//! Set `LINT_FIXTURE=name` to run one case and print everything it reports. Synapse's own
//! config check runs only in the cases that expect one of its `synapse::config-*` findings.

mod common;
use common::copy_dir;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use xtask::diagnostics::{Diagnostic, Severity};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    description: String,
    base: String,
    #[serde(default)]
    edit: Vec<Edit>,
    #[serde(default)]
    add: Vec<Add>,
    expect: Vec<Expect>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Edit {
    file: String,
    find: String,
    replace: String,
}

/// A whole new file in the case's book.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Add {
    file: String,
    text: String,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct Expect {
    code: String,
    file: String,
    line: usize,
}

fn fixtures() -> PathBuf {
    xtask::project_root().join("tests/fixtures/lint")
}

fn lint(root: &Path, synapse_config: bool) -> Vec<Diagnostic> {
    match xtask::book::load(root) {
        Ok(b) => xtask::analysis::Analysis::new(b).lint(xtask::lint::Options { synapse_config }),
        Err(d) => d,
    }
}

#[test]
fn ok_book_lints_clean() {
    let diags = lint(&fixtures().join("ok"), true);
    let errors: Vec<_> = diags
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    // Without warnings too: every tool the checks use is there (Docker Compose, gixy-ng,
    // shellcheck, postgres: `cargo xtask setup`), none was skipped.
    assert!(diags.is_empty(), "{diags:#?}");
}

#[test]
fn every_broken_case_is_reported_where_it_is() {
    let only = std::env::var("LINT_FIXTURE").ok();
    let mut cases: Vec<PathBuf> = std::fs::read_dir(fixtures().join("err"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    cases.sort();
    assert!(
        cases.len() >= 30,
        "the corpus has {} cases; it must keep at least 30",
        cases.len()
    );
    let mut failures = Vec::new();
    for path in &cases {
        let name = path.file_stem().unwrap().to_string_lossy().to_string();
        if only.as_ref().is_some_and(|o| o != &name) {
            continue;
        }
        let case: Case = toml::from_str(&std::fs::read_to_string(path).unwrap())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            !case.description.is_empty() && !case.expect.is_empty(),
            "{name}: needs a description and expectations"
        );
        let tmp = tempfile::tempdir().unwrap();
        copy_dir(&fixtures().join(&case.base), tmp.path());
        for e in &case.edit {
            let p = tmp.path().join(&e.file);
            let text = std::fs::read_to_string(&p)
                .unwrap_or_else(|err| panic!("{name}: {}: {err}", e.file));
            assert_eq!(
                text.matches(&e.find).count(),
                1,
                "{name}: `{}` must occur exactly once in {}",
                e.find,
                e.file
            );
            std::fs::write(&p, text.replacen(&e.find, &e.replace, 1)).unwrap();
        }
        for a in &case.add {
            let p = tmp.path().join(&a.file);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, &a.text).unwrap();
        }
        // Synapse's own check imports Synapse (seconds per uncached tree): only where expected.
        let synapse_config = case
            .expect
            .iter()
            .any(|e| e.code.starts_with("synapse::config"));
        let diags = lint(tmp.path(), synapse_config);
        if only.is_some() {
            eprintln!(
                "{name}:\n{}",
                xtask::diagnostics::render_human(&diags, tmp.path())
            );
        }
        for ex in &case.expect {
            if !diags
                .iter()
                .any(|d| d.code == ex.code && d.file == ex.file && d.line == ex.line)
            {
                let got: Vec<String> = diags
                    .iter()
                    .map(|d| format!("{} {}:{} {}", d.code, d.file, d.line, d.message))
                    .collect();
                failures.push(format!(
                    "{name}: expected {} at {}:{}, got:\n    {}",
                    ex.code,
                    ex.file,
                    ex.line,
                    got.join("\n    ")
                ));
            }
        }
        // A broken case must fail lint: at least one error.
        if !diags.iter().any(|d| d.severity == Severity::Error) {
            failures.push(format!("{name}: no error reported"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
