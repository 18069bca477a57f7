use crate::flags;
use std::process::ExitCode;

pub(crate) fn run(_f: flags::Lint) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`cargo xtask lint` is not built yet")
}
