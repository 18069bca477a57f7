//! One file per subcommand; each turns flags into calls to the library and an exit status.

mod book;
mod check;
mod ci;
mod extract;
mod images;
mod lint;
mod mdbook;
mod pristine;
mod route;
mod setup;
mod stack;

use crate::diagnostics::{self, Diagnostic};
use crate::flags::{BookArg, Cli, Command, Format};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Extract(f) => extract::run(f),
        Command::Lint(f) => lint::run(f),
        Command::Route(f) => route::run(f),
        Command::Check(f) => check::run(f),
        Command::Stack(f) => stack::run(f),
        Command::Images(f) => images::run(f),
        Command::Mdbook(f) => mdbook::run(f),
        Command::Book(f) => book::run(f),
        Command::Setup(f) => setup::run(f),
        Command::Ci(f) => ci::run(f),
        Command::Pristine(f) => pristine::run(f),
    }
}

/// The book root a command works on.
pub(crate) fn book_root(arg: &BookArg) -> PathBuf {
    arg.book.clone().unwrap_or_else(crate::project_root)
}

/// Prints diagnostics (human text to stderr, machine formats to stdout) and gives the exit code.
#[allow(clippy::print_stdout)]
pub(crate) fn report(diags: &mut [Diagnostic], format: Format, root: &Path) -> ExitCode {
    diagnostics::sort(diags);
    let text = diagnostics::render(diags, format, root);
    match format {
        Format::Human => eprint!("{text}"),
        Format::Github | Format::Json => print!("{text}"),
    }
    ExitCode::from(diagnostics::exit_status(diags))
}
