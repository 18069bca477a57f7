use crate::flags;
use std::process::ExitCode;

pub(crate) fn run(_f: flags::Setup) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`cargo xtask setup` is not built yet")
}
