//! `cargo xtask setup [debian|synapse|mdbook|pytools|compose]`: see [`crate::setup`].

use crate::flags;
use std::process::ExitCode;

pub(crate) fn run(f: flags::Setup) -> anyhow::Result<ExitCode> {
    for (part, outcome) in crate::setup::run_parts(&f.parts)? {
        match outcome {
            crate::setup::Outcome::AlreadyThere(what) => {
                eprintln!("setup {part}: already there: {what}")
            }
            crate::setup::Outcome::Installed(what) => eprintln!("setup {part}: installed {what}"),
            crate::setup::Outcome::Ensured(what) => eprintln!("setup {part}: ready: {what}"),
        }
    }
    Ok(ExitCode::SUCCESS)
}
