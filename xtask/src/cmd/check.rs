//! `cargo xtask check`: extract to a temporary directory, then every static check.

use super::{book_root, report};
use crate::extract::{self, Options};
use crate::{book, flags};
use std::process::ExitCode;

pub(crate) fn run(f: flags::Check) -> anyhow::Result<ExitCode> {
    let root = book_root(&f.book);
    let book = match book::load(&root) {
        Ok(b) => b,
        Err(mut d) => return Ok(report(&mut d, f.format, &root)),
    };
    let mut diags = Vec::new();
    let mut trees = Vec::new();
    for variant in std::iter::once(None).chain(extract::variants(&book).into_iter().map(Some)) {
        match extract::assemble(
            &book,
            &Options {
                variant,
                ..Options::default()
            },
        ) {
            Ok(t) => trees.push(t),
            Err(mut d) => diags.append(&mut d),
        }
    }
    if let Some(main) = trees.first() {
        diags.extend(crate::route::check_book(&book, main));
        let tmp = std::env::temp_dir().join(format!("xtask-check-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        if let Err(mut d) = extract::write_tree(main, &tmp, false) {
            diags.append(&mut d);
        }
        let _ = std::fs::remove_dir_all(&tmp);
    }
    diags.append(&mut crate::lint::run(&book));
    diags.dedup();
    Ok(report(&mut diags, f.format, &root))
}
