//! `cargo xtask route`: what nginx does with each URI, per the book's nginx configuration.

use super::{book_root, report};
use crate::book;
use crate::extract::{self, Options};
use crate::flags::{self, Format};
use crate::route::{self, Router};
use std::process::ExitCode;

#[allow(clippy::print_stdout)]
pub(crate) fn run(f: flags::Route) -> anyhow::Result<ExitCode> {
    let root = book_root(&f.book);
    let book = match book::load(&root) {
        Ok(b) => b,
        Err(mut d) => return Ok(report(&mut d, f.format, &root)),
    };
    if let Some(v) = &f.variant {
        let known = extract::variants(&book);
        if !known.contains(v) {
            eprintln!(
                "error: --variant {v}: the book has no such variant (it has: {})",
                known.join(", ")
            );
            return Ok(ExitCode::from(2));
        }
    }
    let opts = Options {
        variant: f.variant.clone(),
        ..Options::default()
    };
    let tree = match extract::assemble(&book, &opts) {
        Ok(t) => t,
        Err(mut d) => return Ok(report(&mut d, f.format, &root)),
    };
    let router = match Router::from_tree(&tree) {
        Ok(r) => r,
        Err(mut d) => return Ok(report(&mut d, f.format, &root)),
    };
    let client = f.from.as_deref().unwrap_or(route::router::DEFAULT_CLIENT);
    if client.parse::<std::net::IpAddr>().is_err() {
        eprintln!("error: --from {client}: not an IP address");
        return Ok(ExitCode::from(2));
    }
    let outcomes: Vec<route::Outcome> = f
        .uris
        .iter()
        .map(|u| router.route_from(&f.method, u, client))
        .collect();
    match f.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&outcomes)?),
        Format::Human | Format::Github => {
            for o in &outcomes {
                println!("{}", route::describe(o));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
