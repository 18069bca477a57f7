use crate::flags;
use std::process::ExitCode;

pub(crate) fn run(_f: flags::Stack) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`cargo xtask stack` is not built yet")
}
