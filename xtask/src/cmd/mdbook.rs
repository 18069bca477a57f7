use crate::flags;
use std::process::ExitCode;

pub(crate) fn run(_f: flags::Mdbook) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`cargo xtask mdbook` is not built yet")
}
