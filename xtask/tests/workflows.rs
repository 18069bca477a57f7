//! The GitHub workflows pass every workflow check of `xtask::workflows` (GitHub's workflow schema
//! through check-jsonschema, the `${{ }}` expression check, zizmor, shellcheck on `run:` steps),
//! and each broken workflow of `tests/fixtures/workflows/` gets exactly the findings its
//! `# expect: CODE LINE` header lines name: the checks are live, and precise.
//!
//! The tools come from `cargo xtask setup` (pytools: check-jsonschema and zizmor; debian:
//! shellcheck); a missing one fails the test with the setup part to run.

use std::path::PathBuf;
use xtask::diagnostics::{Diagnostic, Severity};

fn root() -> PathBuf {
    xtask::project_root()
}

fn shown(d: &[Diagnostic]) -> String {
    d.iter()
        .map(|d| format!("{}:{}: {} {}", d.file, d.line, d.code, d.message))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn repository_workflows_pass_every_check() {
    let files = xtask::workflows::files(&root());
    let names: Vec<String> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for w in ["ci.yml", "compose.yml", "pages.yml"] {
        assert!(names.iter().any(|n| n == w), "{w} is checked: {names:?}");
    }
    let diags = xtask::workflows::check(&files).expect("the workflow checks run");
    assert!(
        diags.is_empty(),
        "findings on .github/workflows:\n{}",
        shown(&diags)
    );

    // The expression check read every expression of them: it knows their contexts.
    let mut expressions = 0;
    for f in &files {
        expressions += std::fs::read_to_string(f).unwrap().matches("${{").count();
    }
    assert!(
        expressions >= 10,
        "the workflows use expressions ({expressions})"
    );
}

#[test]
fn each_broken_workflow_is_reported_where_it_is() {
    let dir = root().join("tests/fixtures/workflows");
    let mut fixtures: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml"))
        .collect();
    fixtures.sort();
    let mut kinds = std::collections::BTreeSet::new();
    let mut failures = Vec::new();
    for f in &fixtures {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(f).unwrap();
        let mut expected: Vec<(String, usize)> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# expect: "))
            .map(|e| {
                let (code, line) = e.rsplit_once(' ').expect("# expect: CODE LINE");
                (code.to_string(), line.parse().expect("a line number"))
            })
            .collect();
        assert!(
            !expected.is_empty(),
            "{name}: no `# expect: CODE LINE` line"
        );
        expected.sort();
        // One fixture at a time: zizmor refuses a whole run when one input is not a workflow.
        let diags = xtask::workflows::check(std::slice::from_ref(f)).expect("the checks run");
        let mut got: Vec<(String, usize)> = diags
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .map(|d| (d.code.clone(), d.line))
            .collect();
        got.sort();
        got.dedup();
        if got != expected {
            failures.push(format!(
                "{name}: expected {expected:?}, got:\n{}",
                shown(&diags)
            ));
        }
        assert!(
            diags.iter().all(|d| d.file.ends_with(&name)),
            "{name}: findings name the fixture: {}",
            shown(&diags)
        );
        kinds.extend(
            expected
                .iter()
                .map(|(c, _)| c.split("::").next().unwrap().to_string()),
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    // Every tool is exercised by some fixture.
    for k in ["workflow", "zizmor", "shell"] {
        assert!(
            kinds.contains(k),
            "a fixture expects a {k}:: finding: {kinds:?}"
        );
    }
    assert!(
        fixtures.iter().any(|f| std::fs::read_to_string(f)
            .unwrap()
            .contains("# expect: workflow::schema ")),
        "a fixture breaks the workflow schema"
    );
}
