use crate::flags;
use std::process::ExitCode;

pub(crate) fn run(_f: flags::BookCmd) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`cargo xtask book` is not built yet")
}
