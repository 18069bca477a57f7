//! `cargo xtask lint`: load the book, run every check, print the findings
//! ([`crate::analysis::Analysis::lint`]).

use super::{book_root, report};
use crate::analysis::Analysis;
use crate::{flags, lint};
use std::process::ExitCode;

pub(crate) fn run(f: flags::Lint) -> anyhow::Result<ExitCode> {
    let root = book_root(&f.book);
    let mut diags = match Analysis::of_book(&root) {
        Ok(a) => a.lint(lint::Options::default()),
        // Blocks that break the contract (e.g. an unmarked config block) are reported here.
        Err(d) => d,
    };
    Ok(report(&mut diags, f.format, &root))
}
