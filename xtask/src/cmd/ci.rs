//! `cargo xtask ci`: everything CI runs ([`plan`]), the one command `.ci/run` and the GitHub
//! workflow (`.github/workflows/ci.yml`) both call.
//!
//! `setup` runs first and stops the run when it fails. The static steps then all run, so that one
//! failure does not hide another: `cargo xtask check` first (its findings are what a contributor
//! reads first), fmt, clippy, the tests, and the site built into `target/site` (what the
//! workflow deploys to GitHub Pages). The Docker steps (the stack test, the benchmark's quick
//! form, the pristine container) run only when all of those passed.
//!
//! On GitHub Actions (`GITHUB_ACTIONS=true`) `check` prints its findings as workflow commands,
//! one annotation per finding, and as a table in the step summary; every other step runs
//! between `::stop-commands::` and without `GITHUB_STEP_SUMMARY`, so that nothing else it prints
//! or writes (a failing test's captured `::error` lines, the tests' own `lint --format github`
//! runs on fixtures) becomes an annotation or a summary row too. Each step is a log group, and the
//! step table ends in the step summary.

use crate::flags;
use anyhow::Context;
use std::fmt::Write as _;
use std::process::{Command, ExitCode};
use std::time::Instant;

/// One step of the run: a cargo command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub name: &'static str,
    pub args: Vec<&'static str>,
    /// Extra environment.
    pub env: Vec<(&'static str, &'static str)>,
    pub kind: StepKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepKind {
    /// Its failure stops the run.
    Setup,
    /// Runs whatever the other static steps did.
    Static,
    /// Needs a Docker daemon; runs only when every earlier step passed.
    Docker,
}

/// Where the site is built (the workflow uploads it from here).
pub const SITE: &str = "target/site";

fn xtask(args: &[&'static str]) -> Vec<&'static str> {
    let mut v = vec!["run", "--quiet", "--locked", "--package", "xtask", "--"];
    v.extend_from_slice(args);
    v
}

/// The steps of a run, in order.
pub fn plan(no_docker: bool, github: bool) -> Vec<Step> {
    let step = |name, args, kind| Step {
        name,
        args,
        env: Vec::new(),
        kind,
    };
    let check = if github {
        xtask(&["check", "--format", "github"])
    } else {
        xtask(&["check"])
    };
    let mut test = step(
        "cargo test",
        vec!["test", "--workspace", "--locked", "--quiet"],
        StepKind::Static,
    );
    if no_docker {
        // The Docker fixture test skips itself, saying why.
        test.env.push(("XTASK_NO_DOCKER", "1"));
    }
    let mut steps = vec![
        step("cargo xtask setup", xtask(&["setup"]), StepKind::Setup),
        step("cargo xtask check", check, StepKind::Static),
        step(
            "cargo fmt --check",
            vec!["fmt", "--all", "--check"],
            StepKind::Static,
        ),
        step(
            "cargo clippy -D warnings",
            vec![
                "clippy",
                "--workspace",
                "--all-targets",
                "--locked",
                "--quiet",
                "--",
                "-D",
                "warnings",
            ],
            StepKind::Static,
        ),
        test,
        step(
            "cargo xtask book",
            xtask(&["book", "--out", SITE]),
            StepKind::Static,
        ),
    ];
    if !no_docker {
        steps.push(step(
            "cargo xtask stack test",
            xtask(&["stack", "test", "--report", "target/stack/report.json"]),
            StepKind::Docker,
        ));
        // The benchmark's small form: both layouts come up and answer the workload without
        // an error (its numbers are not checked: CI machines differ).
        steps.push(step(
            "cargo xtask stack bench --quick",
            xtask(&[
                "stack",
                "bench",
                "--quick",
                "--out",
                "target/stack/bench-quick.json",
            ]),
            StepKind::Docker,
        ));
        steps.push(step(
            "cargo xtask pristine",
            xtask(&["pristine"]),
            StepKind::Docker,
        ));
    }
    steps
}

/// What became of a step.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Passed(f64),
    Failed(f64, String),
    Skipped(&'static str),
}

/// The step table, as Markdown (for the step summary) or plain text.
pub fn table(results: &[(&str, Outcome)]) -> String {
    let mut out = String::from("| step | result | time |\n| --- | --- | --- |\n");
    for (name, o) in results {
        let (r, t) = match o {
            Outcome::Passed(s) => ("passed".to_string(), format!("{s:.0} s")),
            Outcome::Failed(s, why) => (format!("**FAILED** ({why})"), format!("{s:.0} s")),
            Outcome::Skipped(why) => (format!("skipped: {why}"), String::new()),
        };
        let _ = writeln!(out, "| `{name}` | {r} | {t} |");
    }
    out
}

pub(crate) fn run(f: flags::Ci) -> anyhow::Result<ExitCode> {
    let root = crate::project_root();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let github = std::env::var_os("GITHUB_ACTIONS").is_some_and(|v| v == "true");
    let mut results: Vec<(&str, Outcome)> = Vec::new();
    let mut failed = false;
    for step in plan(f.no_docker, github) {
        if failed && step.kind != StepKind::Static {
            results.push((step.name, Outcome::Skipped("an earlier step failed")));
            continue;
        }
        // Only `check` speaks to GitHub: everything else runs with workflow commands stopped.
        let annotates = step.name == "cargo xtask check";
        // GitHub asks for a token nothing else prints: a random one.
        let token = {
            let mut b = [0u8; 16];
            getrandom::fill(&mut b)
                .map_err(|e| anyhow::anyhow!("the operating system's RNG: {e}"))?;
            b.iter().map(|x| format!("{x:02x}")).collect::<String>()
        };
        if github {
            super::github_command(&format!("group::{}", step.name));
            if !annotates {
                super::github_command(&format!("stop-commands::{token}"));
            }
        } else {
            eprintln!("==> {}", step.name);
        }
        let t = Instant::now();
        let mut cmd = Command::new(&cargo);
        cmd.args(&step.args)
            .envs(step.env.iter().copied())
            .current_dir(&root);
        if !annotates {
            // Nor does it write the step summary: the tests run `lint --format github` on their
            // fixtures, whose findings are not the book's.
            cmd.env_remove("GITHUB_STEP_SUMMARY");
        }
        let status = cmd
            .status()
            .with_context(|| format!("cannot run {}", step.name))?;
        let secs = t.elapsed().as_secs_f64();
        if github {
            if !annotates {
                super::github_command(&format!("{token}::"));
            }
            super::github_command("endgroup::");
        }
        if status.success() {
            results.push((step.name, Outcome::Passed(secs)));
        } else {
            eprintln!("==> {} FAILED ({status})", step.name);
            results.push((step.name, Outcome::Failed(secs, status.to_string())));
            failed = true;
            if step.kind == StepKind::Setup {
                break;
            }
        }
    }
    let table = table(&results);
    eprint!("\n{table}");
    if github {
        super::append_step_summary(&format!("### cargo xtask ci\n\n{table}"));
    }
    if failed {
        let names: Vec<&str> = results
            .iter()
            .filter(|(_, o)| matches!(o, Outcome::Failed(..)))
            .map(|(n, _)| *n)
            .collect();
        eprintln!("==> FAILED: {}", names.join(", "));
        Ok(ExitCode::from(1))
    } else {
        eprintln!("==> all CI steps passed");
        Ok(ExitCode::SUCCESS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(steps: &[Step]) -> Vec<&str> {
        steps.iter().map(|s| s.name).collect()
    }

    #[test]
    fn the_plan_has_what_ci_promises() {
        let local = plan(false, false);
        assert_eq!(
            names(&local),
            [
                "cargo xtask setup",
                "cargo xtask check",
                "cargo fmt --check",
                "cargo clippy -D warnings",
                "cargo test",
                "cargo xtask book",
                "cargo xtask stack test",
                "cargo xtask stack bench --quick",
                "cargo xtask pristine"
            ]
        );
        let args = |s: &Step| s.args.join(" ");
        assert!(args(&local[2]).ends_with("fmt --all --check"));
        assert!(args(&local[3]).contains("--locked") && args(&local[3]).ends_with("-D warnings"));
        assert!(
            local
                .iter()
                .all(|s| s.args.contains(&"--locked") || s.name.contains("fmt"))
        );
        assert!(args(&local[5]).ends_with("book --out target/site"));
        assert!(local[4].env.is_empty());
        assert!(
            args(&local[7]).ends_with("stack bench --quick --out target/stack/bench-quick.json")
        );

        let gh = plan(true, true);
        assert_eq!(names(&gh).len(), 6, "no Docker step with --no-docker");
        assert!(args(&gh[1]).ends_with("check --format github"));
        assert_eq!(gh[4].env, [("XTASK_NO_DOCKER", "1")]);
    }

    #[test]
    fn the_table_says_what_failed_and_what_was_skipped() {
        let t = table(&[
            ("a", Outcome::Passed(1.2)),
            ("b", Outcome::Failed(3.0, "exit status: 1".into())),
            ("c", Outcome::Skipped("an earlier step failed")),
        ]);
        assert!(t.contains("| `a` | passed | 1 s |"), "{t}");
        assert!(
            t.contains("| `b` | **FAILED** (exit status: 1) | 3 s |"),
            "{t}"
        );
        assert!(
            t.contains("| `c` | skipped: an earlier step failed |  |"),
            "{t}"
        );
    }
}
