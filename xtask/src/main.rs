//! `cargo xtask`: parse the command line and hand over to the library.
//! Nothing else belongs here.

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = xtask::flags::Cli::parse();
    match xtask::cmd::run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}
