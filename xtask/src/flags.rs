//! The whole command line of `cargo xtask`, in one place (the contract other tools rely on is in
//! `src/contributing/architecture.md`, "Diagnostics and exit status").

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask",
    about = "Extract, lint, route and run the Synapse guide's configs"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Args)]
pub struct BookArg {
    /// Directory holding book.toml (default: the repository root)
    #[arg(long, value_name = "DIR")]
    pub book: Option<PathBuf>,
}

pub use crate::diagnostics::Format;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Secrets {
    /// Replace every secret placeholder with a fresh random value
    Generate,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Assemble every `title="..."` block of the book into a deployment tree
    Extract(Extract),
    /// Check every extracted file and the links between them
    Lint(Lint),
    /// Show which location, upstream and server nginx picks for each URI
    Route(Route),
    /// Extract to a temporary directory, lint, and assert every `routes` block
    Check(Check),
    /// Run the extracted deployment with docker compose and drive a Matrix client through it
    Stack(Stack),
    /// Build the local stand-ins for the images the Compose file names (no registry here)
    Images(Images),
    /// The mdBook preprocessor (called by mdbook, not by people)
    Mdbook(Mdbook),
    /// Build the site with the pinned mdBook
    Book(BookCmd),
    /// Install the pinned tools the tests need (Debian packages, Synapse, mdBook)
    Setup(Setup),
    /// Everything CI runs
    Ci(Ci),
    /// Run setup and the test suite in a container of the pristine Debian 12 image
    Pristine(Pristine),
}

#[derive(Debug, Args)]
pub struct Extract {
    #[command(flatten)]
    pub book: BookArg,
    /// Output directory (default: deploy/ under the book root)
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Replace the example server name (example.com) everywhere
    #[arg(long, value_name = "NAME")]
    pub server_name: Option<String>,
    /// Replace secret placeholders
    #[arg(long, value_enum)]
    pub secrets: Option<Secrets>,
    /// Write into an --out that holds files extract did not write
    #[arg(long)]
    pub force: bool,
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct Lint {
    #[command(flatten)]
    pub book: BookArg,
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct Route {
    #[command(flatten)]
    pub book: BookArg,
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
    /// HTTP method of the requests
    #[arg(long, default_value = "GET")]
    pub method: String,
    /// Client address the requests come from (default: a public address, 198.51.100.7)
    #[arg(long)]
    pub from: Option<String>,
    /// Route through the nginx configuration of this variant of the book (e.g. `scale`)
    #[arg(long, value_name = "NAME")]
    pub variant: Option<String>,
    /// Request URIs (path and query, as sent on the request line)
    #[arg(required = true)]
    pub uris: Vec<String>,
}

#[derive(Debug, Args)]
pub struct Check {
    #[command(flatten)]
    pub book: BookArg,
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StackAction {
    Up,
    Smoke,
    Down,
    Test,
    /// The layout benchmark: the worker and the single-process layouts under one seeded
    /// Matrix workload (see the book's benchmark page)
    Bench,
}

#[derive(Debug, Args)]
pub struct Stack {
    pub action: StackAction,
    #[command(flatten)]
    pub book: BookArg,
    /// Write a JSON report of the run (`bench`: its results; `--out` is the same)
    #[arg(long, value_name = "FILE", alias = "out")]
    pub report: Option<PathBuf>,
    /// Which images run: the official ones where the engine has or can pull them, else the
    /// local stand-ins (auto); or force one
    #[arg(long, value_enum, default_value_t)]
    pub images: crate::stack::ImageChoice,
    /// `test`: when the run passes, write its report into the book (the testing page's tables)
    #[arg(long)]
    pub bless: bool,
    /// `bench`: the small workload that checks the benchmark works (CI), not the full ladder
    #[arg(long)]
    pub quick: bool,
    /// `bench`: how many times each layout is brought up and run (alternating their order)
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub repeat: usize,
}

#[derive(Debug, Args)]
pub struct Images {
    #[command(flatten)]
    pub book: BookArg,
    /// Also run each stand-in and check its contract with the official image
    #[arg(long)]
    pub check: bool,
}

#[derive(Debug, Args)]
pub struct Mdbook {
    /// `supports <renderer>` when mdBook probes the preprocessor
    pub args: Vec<String>,
}

#[derive(Debug, Args)]
pub struct BookCmd {
    #[command(flatten)]
    pub book: BookArg,
    /// Where to write the site (default: target/book)
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Replace assets/mermaid.min.js with the npm package at the version of versions.toml
    #[arg(long)]
    pub vendor_mermaid: bool,
}

#[derive(Debug, Args)]
pub struct Setup {
    /// Only these parts (debian, synapse, mdbook, pytools, compose); all when empty
    pub parts: Vec<String>,
}

#[derive(Debug, Args)]
pub struct Ci {
    /// Skip what needs a Docker daemon: the stack test and the pristine-container run
    #[arg(long)]
    pub no_docker: bool,
}

#[derive(Debug, Args)]
pub struct Pristine {}
