use crate::flags;
use std::process::ExitCode;

pub(crate) fn run(_f: flags::Route) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`cargo xtask route` is not built yet")
}
