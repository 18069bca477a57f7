//! `cargo xtask lint`: load the book, run every check, print the findings.

use super::{book_root, report};
use crate::{book, flags, lint};
use std::process::ExitCode;

pub(crate) fn run(f: flags::Lint) -> anyhow::Result<ExitCode> {
    let root = book_root(&f.book);
    let mut diags = match book::load(&root) {
        Ok(b) => lint::run(&b),
        // Blocks that break the contract (e.g. an unmarked config block) are reported here.
        Err(d) => d,
    };
    Ok(report(&mut diags, f.format, &root))
}
