//! `cargo xtask mdbook`: the mdBook preprocessor (see `preprocess`, run by
//! [`crate::analysis::mdbook`]). stdout carries only the
//! book's JSON; everything for people goes to stderr.

use crate::flags;
use crate::preprocess::Failure;
use std::io::{Read, Write};
use std::process::ExitCode;

pub(crate) fn run(f: flags::Mdbook) -> anyhow::Result<ExitCode> {
    match f.args.as_slice() {
        // Nothing we do depends on the renderer: captions and generated pages suit them all.
        [cmd, _renderer] if cmd == "supports" => return Ok(ExitCode::SUCCESS),
        [] => {}
        other => {
            eprintln!(
                "usage: cargo xtask mdbook [supports <renderer>] (mdBook calls this; got {other:?})"
            );
            return Ok(ExitCode::from(2));
        }
    }
    let mut input = String::new();
    std::io::stdin().read_to_string(&mut input)?;
    match crate::analysis::mdbook(&input) {
        Ok((json, notes)) => {
            for n in notes {
                eprintln!("{}", n.trim_end());
            }
            let mut out = std::io::stdout().lock();
            out.write_all(json.as_bytes())?;
            out.flush()?;
            Ok(ExitCode::SUCCESS)
        }
        Err(Failure::Protocol(msg)) => {
            eprintln!("error[mdbook::protocol]: {msg}");
            Ok(ExitCode::from(2))
        }
        Err(Failure::Book(mut diags, root)) => {
            crate::diagnostics::sort(&mut diags);
            eprint!("{}", crate::diagnostics::render_human(&diags, &root));
            // Human text only, on GitHub Actions too: `cargo xtask ci` runs `cargo xtask check
            // --format github` before the site, and one finding is one annotation.
            let errors = diags
                .iter()
                .filter(|d| d.severity == crate::diagnostics::Severity::Error)
                .count();
            eprintln!(
                "error: the book does not check ({errors} errors): fix the Markdown lines above"
            );
            Ok(ExitCode::from(1))
        }
    }
}
