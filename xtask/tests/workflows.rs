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
    assert_eq!(names, ["ci.yml"], "one workflow, ci.yml, holds every job");
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

fn load(path: &std::path::Path) -> xtask::yaml::Node {
    let text = std::fs::read_to_string(path).unwrap();
    xtask::yaml::load(&text).unwrap().docs.remove(0)
}

fn jobs(root: &xtask::yaml::Node) -> Vec<(String, &xtask::yaml::Node)> {
    root.get("jobs")
        .expect("jobs:")
        .entries()
        .iter()
        .map(|(k, v)| (k.as_str().unwrap().to_string(), v))
        .collect()
}

fn run_scripts(job: &xtask::yaml::Node) -> Vec<String> {
    job.get("steps")
        .map(|s| s.items())
        .unwrap_or_default()
        .iter()
        .filter_map(|s| s.get("run").and_then(|r| r.as_str()).map(str::to_string))
        .collect()
}

/// What issue 15 asked of the workflow, each a property a later edit could lose.
#[test]
fn ci_yml_runs_cargo_xtask_ci_and_deploys_what_it_built() {
    let path = root().join(".github/workflows/ci.yml");
    let text = std::fs::read_to_string(&path).unwrap();
    let wf = load(&path);
    let jobs = jobs(&wf);
    let job = |name: &str| {
        jobs.iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("ci.yml has a `{name}` job"))
            .1
    };

    // Every job has a timeout.
    for (name, j) in &jobs {
        assert!(
            j.get("timeout-minutes").and_then(|t| t.as_i64()).is_some(),
            "job `{name}` has timeout-minutes"
        );
    }

    // The Debian 12 job runs `cargo xtask ci` itself (fmt, clippy, --locked come with it), with
    // --no-docker: a hosted container job has no Docker engine inside it.
    let ci = job("ci");
    assert_eq!(
        ci.path(&["container", "image"]).and_then(|i| i.as_str()),
        Some("debian:12")
    );
    let scripts = run_scripts(ci).join("\n");
    assert!(
        scripts
            .lines()
            .any(|l| l.trim() == "cargo xtask ci --no-docker"),
        "{scripts}"
    );
    let every_script = jobs
        .iter()
        .flat_map(|(_, j)| run_scripts(j))
        .collect::<Vec<_>>()
        .join("\n");
    for reimplemented in [
        "cargo test",
        "cargo fmt",
        "cargo clippy",
        "xtask check",
        "xtask lint",
        "xtask book",
    ] {
        assert!(
            !every_script.contains(reimplemented),
            "ci.yml runs `{reimplemented}` itself instead of through `cargo xtask ci`"
        );
    }
    // The stack test runs on the runner's own engine, and keeps the logs when it fails.
    let compose = job("compose");
    assert!(
        run_scripts(compose)
            .iter()
            .any(|s| s.contains("stack test"))
    );
    let keeps_logs = compose.get("steps").unwrap().items().iter().any(|s| {
        s.get("if").and_then(|i| i.as_str()) == Some("failure()")
            && s.path(&["with", "path"])
                .and_then(|p| p.as_str())
                .is_some_and(|p| p.contains("target/stack/logs"))
    });
    assert!(
        keeps_logs,
        "the compose job uploads target/stack/logs/ on failure"
    );

    // The site is built once, by `cargo xtask ci` (target/site), uploaded from the ci job and
    // deployed from that artifact; only the deploy job may write Pages or mint an OIDC token,
    // and only on a push to main.
    assert!(!text.contains("configure-pages"));
    let ci_src = std::fs::read_to_string(root().join("xtask/src/cmd/ci.rs")).unwrap();
    assert!(
        ci_src.contains("target/site"),
        "cargo xtask ci builds the site into target/site"
    );
    let upload = ci
        .get("steps")
        .unwrap()
        .items()
        .iter()
        .find(|s| {
            s.get("uses")
                .and_then(|u| u.as_str())
                .is_some_and(|u| u.starts_with("actions/upload-pages-artifact@"))
        })
        .expect("the ci job uploads the Pages artifact");
    assert_eq!(
        upload.path(&["with", "path"]).and_then(|p| p.as_str()),
        Some("target/site")
    );
    let main_only = "github.event_name == 'push' && github.ref == 'refs/heads/main'";
    assert_eq!(upload.get("if").and_then(|i| i.as_str()), Some(main_only));
    let deploy = job("deploy");
    assert_eq!(deploy.get("if").and_then(|i| i.as_str()), Some(main_only));
    assert!(deploy.get("needs").unwrap().str_list().contains(&"ci"));
    for (name, j) in &jobs {
        let perms = j.get("permissions");
        let writes = |k: &str| {
            perms
                .and_then(|p| p.get(k))
                .and_then(|v| v.as_str())
                .is_some_and(|v| v == "write")
        };
        assert_eq!(
            writes("pages") || writes("id-token"),
            name == "deploy",
            "job `{name}`: pages/id-token write only on the deploy job"
        );
    }
    assert_eq!(
        wf.path(&["permissions", "contents"])
            .and_then(|p| p.as_str()),
        Some("read")
    );

    // Runs on main are never cancelled by a newer push.
    let cancel = wf
        .path(&["concurrency", "cancel-in-progress"])
        .and_then(|c| c.as_str())
        .unwrap_or("");
    assert!(
        cancel.contains("github.ref != 'refs/heads/main'"),
        "cancel-in-progress spares main: {cancel}"
    );
}

/// Every `uses:` of every workflow is an action at a full commit SHA with its release beside it
/// (`owner/repo@<40 hex> # vX.Y.Z`): what Renovate's github-actions manager keeps current.
#[test]
fn every_action_is_pinned_by_commit_sha_with_its_release() {
    let pin = regex::Regex::new(
        r"^\s*(?:-\s+)?uses:\s+[\w.-]+/[\w./-]+@[0-9a-f]{40}\s+#\s+v\d+\.\d+\.\d+\s*$",
    )
    .unwrap();
    let mut uses = 0;
    for f in xtask::workflows::files(&root()) {
        let text = std::fs::read_to_string(&f).unwrap();
        for (i, line) in text.lines().enumerate() {
            if line
                .trim_start()
                .trim_start_matches("- ")
                .trim_start()
                .starts_with("uses:")
            {
                uses += 1;
                assert!(
                    pin.is_match(line),
                    "{}:{}: not pinned by SHA with `# vX.Y.Z`: {line}",
                    f.display(),
                    i + 1
                );
            }
        }
    }
    assert!(uses >= 5, "{uses} actions used");
}
