//! `cargo xtask stack up|smoke|down|test`: see [`crate::stack`].

use crate::flags::{self, StackAction};
use crate::stack;
use std::process::ExitCode;

/// Set in the environment of the detached supervisor that `stack up` starts.
const SUPERVISOR_ENV: &str = "XTASK_STACK_SUPERVISOR";

pub(crate) fn run(f: flags::Stack) -> anyhow::Result<ExitCode> {
    let root = super::book_root(&f.book);
    let paths = stack::Paths::new(&stack::Paths::default_base());
    match f.action {
        StackAction::Up if std::env::var_os(SUPERVISOR_ENV).is_some() => {
            stack::run::supervise(&root, &paths)
        }
        StackAction::Up => stack::run::up(&root, &paths, SUPERVISOR_ENV),
        StackAction::Down => stack::run::down(&paths),
        StackAction::Smoke => stack::run::smoke(&root, &paths, f.report.as_deref()),
        StackAction::Test => stack::run::test(&root, &paths, f.report.as_deref()),
    }
}
