//! `cargo xtask stack up|smoke|down|test|bench`: see [`crate::stack`].

use crate::flags::{self, StackAction};
use crate::stack;
use std::process::ExitCode;

pub(crate) fn run(f: flags::Stack) -> anyhow::Result<ExitCode> {
    let root = super::book_root(&f.book);
    let paths = stack::Paths::new(&stack::Paths::default_base());
    match f.action {
        StackAction::Up => stack::run::up(&root, &paths, f.images),
        StackAction::Down => stack::run::down(&paths),
        StackAction::Smoke => stack::run::smoke(&root, &paths, f.report.as_deref()),
        StackAction::Test => {
            stack::run::test(&root, &paths, f.images, f.report.as_deref(), f.bless)
        }
        StackAction::Bench => {
            let opts = stack::bench::Options {
                quick: f.quick,
                repeat: f.repeat,
                images: f.images,
                out: f.report,
            };
            stack::bench::run(&root, &opts)
        }
    }
}
