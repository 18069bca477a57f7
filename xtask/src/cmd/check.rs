//! `cargo xtask check`: extract to a temporary directory, then every static check
//! ([`crate::analysis::Analysis::check`]).

use super::{book_root, report};
use crate::analysis::Analysis;
use crate::flags;
use std::process::ExitCode;

pub(crate) fn run(f: flags::Check) -> anyhow::Result<ExitCode> {
    let root = book_root(&f.book);
    let mut diags = match Analysis::of_book(&root) {
        Ok(a) => a.check(),
        Err(d) => d,
    };
    Ok(report(&mut diags, f.format, &root))
}
