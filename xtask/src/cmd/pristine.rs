//! `cargo xtask pristine`: see [`crate::pristine`].

use crate::flags;
use std::process::ExitCode;

pub(crate) fn run(_f: flags::Pristine) -> anyhow::Result<ExitCode> {
    crate::pristine::run(&crate::project_root())
}
