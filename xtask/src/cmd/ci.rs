//! `cargo xtask ci`: everything CI runs, in order, stopping at the first failure.

use crate::flags;
use anyhow::{Context, bail};
use std::process::{Command, ExitCode};

pub(crate) fn run(f: flags::Ci) -> anyhow::Result<ExitCode> {
    let root = crate::project_root();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut steps: Vec<(&str, Vec<&str>)> = vec![
        (
            "cargo xtask setup",
            vec!["run", "--quiet", "--package", "xtask", "--", "setup"],
        ),
        ("cargo fmt --check", vec!["fmt", "--all", "--check"]),
        (
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
        ),
        (
            "cargo test",
            vec!["test", "--workspace", "--locked", "--quiet"],
        ),
        (
            "cargo xtask check",
            vec!["run", "--quiet", "--package", "xtask", "--", "check"],
        ),
    ];
    if !f.no_docker {
        steps.push((
            "cargo xtask stack test",
            vec![
                "run",
                "--quiet",
                "--package",
                "xtask",
                "--",
                "stack",
                "test",
                "--report",
                "target/stack/report.json",
            ],
        ));
        steps.push((
            "cargo xtask pristine",
            vec!["run", "--quiet", "--package", "xtask", "--", "pristine"],
        ));
    }
    for (name, args) in steps {
        eprintln!("==> {name}");
        let status = Command::new(&cargo)
            .args(&args)
            .current_dir(&root)
            .status()
            .with_context(|| format!("cannot run {name}"))?;
        if !status.success() {
            bail!("{name} failed ({status})");
        }
    }
    eprintln!("==> all CI steps passed");
    Ok(ExitCode::SUCCESS)
}
