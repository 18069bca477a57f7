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
    // On GitHub Actions the annotations are also a table in the step summary.
    if format == Format::Github {
        append_step_summary(&diagnostics::render_markdown(diags));
    }
    ExitCode::from(diagnostics::exit_status(diags))
}

/// A GitHub workflow command (`::{command}`), on stdout where the runner reads them, flushed
/// before any child process writes to the same stream.
#[allow(clippy::print_stdout)]
pub(crate) fn github_command(command: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "::{command}");
    let _ = out.flush();
}

/// Appends Markdown to the job's step summary (`$GITHUB_STEP_SUMMARY`) when there is one.
pub(crate) fn append_step_summary(markdown: &str) {
    let Some(path) = std::env::var_os("GITHUB_STEP_SUMMARY") else {
        return;
    };
    use std::io::Write as _;
    let written = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(&path)
        .and_then(|mut f| writeln!(f, "{markdown}"));
    if let Err(e) = written {
        eprintln!("warning: cannot write the step summary {path:?}: {e}");
    }
}
