//! Each `postgres/postgresql.conf` of the book (the main tree and every variant) started by a
//! real PostgreSQL server. A setting the server rejects is reported at its Markdown line.

use super::cluster::{self, Server};
use crate::book::Book;
use crate::diagnostics::Diagnostic;
use crate::extract::{self, Options};
use regex::Regex;
use std::path::Path;

pub const CONF: &str = "postgres/postgresql.conf";

/// Starts and stops a scratch server with each variant of the file; gives the variants that
/// started (`"main"` for the main tree) and a diagnostic for each that did not.
pub fn check(
    book: &Book,
    bindir: &Path,
    work: &Path,
) -> anyhow::Result<(Vec<String>, Vec<Diagnostic>)> {
    std::fs::create_dir_all(work)?;
    let server = Server {
        bindir: bindir.to_path_buf(),
        data: work.join("data"),
        socket_dir: work.join("sockets"),
        port: 5499,
        log: work.join("logs").join("postgres.log"),
    };
    if !server.data.join("PG_VERSION").exists() {
        server.initdb(
            "postgres",
            None,
            &["--encoding=UTF8".into(), "--locale=C".into()],
        )?;
    }
    std::fs::create_dir_all(&server.socket_dir)?;
    cluster::chown_postgres(&server.socket_dir)?;
    let line_re = Regex::new(r"line (\d+)").expect("valid regex");
    let mut ok = Vec::new();
    let mut diags = Vec::new();
    let mut seen: Vec<String> = Vec::new();
    for variant in extract::trees(book) {
        let tree = match extract::assemble(
            book,
            &Options {
                variant: variant.clone(),
                ..Options::default()
            },
        ) {
            Ok(t) => t,
            Err(mut d) => {
                diags.append(&mut d);
                continue;
            }
        };
        let Some(file) = tree.get(CONF) else { continue };
        // A variant that does not replace this file gives the main one again.
        if seen.contains(&file.content) {
            continue;
        }
        seen.push(file.content.clone());
        let name = variant.clone().unwrap_or_else(|| "main".into());
        let path = work.join(format!("postgresql.{name}.conf"));
        std::fs::write(&path, &file.content)?;
        match server.start(Some(&path), &[]) {
            Ok(()) => {
                server.stop()?;
                ok.push(name);
            }
            Err(e) => {
                let log = std::fs::read_to_string(&server.log).unwrap_or_default();
                let line = log
                    .lines()
                    .filter(|l| l.contains(&*path.display().to_string()))
                    .find_map(|l| line_re.captures(l).and_then(|c| c[1].parse::<usize>().ok()));
                let loc = line.map_or_else(|| file.first_loc(), |n| file.md_loc(n));
                let first_error = log
                    .lines()
                    .find(|l| {
                        l.contains("LOG:") && !l.contains("starting PostgreSQL")
                            || l.contains("FATAL")
                    })
                    .unwrap_or("")
                    .to_string();
                diags.push(
                    Diagnostic::error(
                        "postgres::config-rejected",
                        format!("PostgreSQL refuses the {name} {CONF}: {first_error}"),
                        &loc,
                    )
                    .with_note(format!("{e:#}")),
                );
            }
        }
    }
    Ok((ok, diags))
}
