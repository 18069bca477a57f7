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
    if let Some(name) = &f.server_name
        && let Some(host) = doubled_host(name, &tree)
    {
        eprintln!(
            "warning: --server-name {name} makes the server's host name `{host}`. The server name \
             is the domain in user IDs (@alice:{name}); if that should be `{}`, pass that instead.",
            name.trim_start_matches("matrix.")
        );
    }
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

/// The host name the tree ends up with when `name` already starts with the prefix the book puts
/// before the server name (`matrix.`): `matrix.matrix.example.org`.
fn doubled_host(name: &str, tree: &crate::tree::Tree) -> Option<String> {
    let host = format!("matrix.{name}");
    (name.starts_with("matrix.") && tree.files.values().any(|f| f.content.contains(&host)))
        .then_some(host)
}
