//! `cargo xtask extract`: assemble the book's tree and write it (see [`crate::extract`]).

use super::{book_root, report};
use crate::extract::{self, Options};
use crate::flags::{self, Secrets};
use crate::{book, secrets};
use std::process::ExitCode;

pub(crate) fn run(f: flags::Extract) -> anyhow::Result<ExitCode> {
    let root = book_root(&f.book);
    let book = match book::load(&root) {
        Ok(b) => b,
        Err(mut d) => return Ok(report(&mut d, f.format, &root)),
    };
    let opts = Options {
        server_name: f.server_name.clone(),
        secrets: match f.secrets {
            Some(Secrets::Generate) => secrets::Secrets::Generate,
            None => secrets::Secrets::Placeholders,
        },
        variant: None,
    };
    let tree = match extract::assemble(&book, &opts) {
        Ok(t) => t,
        Err(mut d) => return Ok(report(&mut d, f.format, &root)),
    };
    // `generate` promises a tree without placeholders: one it cannot replace stops the write.
    if opts.secrets == secrets::Secrets::Generate {
        let mut left = secrets::placeholders_left(&tree);
        if !left.is_empty() {
            return Ok(report(&mut left, f.format, &root));
        }
    }
    let out = f.out.clone().unwrap_or_else(|| extract::default_out(&root));
    match extract::write_tree_of(&tree, &out, f.force, Some((&book.root, &book.src))) {
        Ok(r) => {
            eprintln!("extracted {} files into {}", r.written, out.display());
            for old in &r.removed {
                eprintln!("removed {old} (no longer in the book)");
            }
            Ok(report(&mut book.warnings.clone(), f.format, &root))
        }
        Err(mut d) => Ok(report(&mut d, f.format, &root)),
    }
}
