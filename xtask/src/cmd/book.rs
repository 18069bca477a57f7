//! `cargo xtask book [--out DIR]`: build the site with the pinned mdBook (see `site`).

use super::book_root;
use crate::{flags, site};
use anyhow::Context;
use std::process::ExitCode;

pub(crate) fn run(f: flags::BookCmd) -> anyhow::Result<ExitCode> {
    let root = book_root(&f.book);
    if f.vendor_mermaid {
        site::vendor_mermaid(&root)?;
        eprintln!(
            "vendored mermaid into {}",
            root.join(site::MERMAID_JS).display()
        );
    }
    let out = f
        .out
        .unwrap_or_else(|| crate::tools::target_dir().join("book"));
    let xtask = std::env::current_exe().context("cannot find the xtask binary")?;
    let built = site::build(&root, &out, &xtask)?;
    eprintln!(
        "built {} pages into {}, with {} ({} files)",
        built.pages,
        built.out.display(),
        site::ARCHIVE,
        built.archived_files
    );
    Ok(ExitCode::SUCCESS)
}
