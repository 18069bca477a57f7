//! `cargo xtask images [--check]`: build (or reuse) the stand-in of every image the extracted
//! Compose file names (for the repository's book, also of versions.toml [images-upgrade-from],
//! the release the upgrade test starts on), print official -> stand-in, and with `--check`
//! verify each contract.

use super::{book_root, report};
use crate::extract::{self, Options};
use crate::flags::{self, Format};
use crate::{book, images};
use anyhow::{Context, bail};
use std::process::ExitCode;

const COMPOSE_FILE: &str = "docker-compose.yml";

pub(crate) fn run(f: flags::Images) -> anyhow::Result<ExitCode> {
    let root = book_root(&f.book);
    let book = match book::load(&root) {
        Ok(b) => b,
        Err(mut d) => return Ok(report(&mut d, Format::Human, &root)),
    };
    let tree = match extract::assemble(&book, &Options::default()) {
        Ok(t) => t,
        Err(mut d) => return Ok(report(&mut d, Format::Human, &root)),
    };
    let Some(file) = tree.get(COMPOSE_FILE) else {
        bail!("the book extracts no {COMPOSE_FILE}: there is nothing to build stand-ins for");
    };
    let pairs = images::compose_services(&file.content).with_context(|| {
        format!(
            "cannot read the services of the extracted {COMPOSE_FILE} (written by {})",
            file.first_loc()
        )
    })?;
    let read = |p: &str| tree.get(p).map(|f| f.content.clone());
    let mut standins = images::standins_for_compose(&file.content, &read).with_context(|| {
        let users: Vec<String> = pairs.iter().map(|(s, i)| format!("{s}: {i}")).collect();
        format!(
            "the extracted {COMPOSE_FILE} names images without a stand-in (services: {})",
            users.join(", ")
        )
    })?;
    // The repository's own book runs exactly the images versions.toml pins, and its upgrade
    // test starts on the previous Synapse release ([images-upgrade-from]).
    let is_repo = |p: &std::path::Path| p.canonicalize().ok();
    if is_repo(&root) == is_repo(&crate::project_root()) {
        images::check_pinned(&standins, &images::pinned()?)?;
        standins.extend(images::upgrade_from_standins()?);
    }
    eprintln!("docker {}", images::docker::daemon_version()?);
    let base = images::pristine_debian()?;
    eprintln!("base: {base}");
    let mut rows = Vec::new();
    for s in &standins {
        eprintln!("building {} from {}", s.image, s.dir().display());
        rows.push(images::build(s)?);
    }
    let w0 = rows
        .iter()
        .map(|b| b.standin.official.len())
        .max()
        .unwrap_or(0)
        .max(8);
    let w1 = rows
        .iter()
        .map(|b| b.standin.image.len())
        .max()
        .unwrap_or(0)
        .max(8);
    eprintln!(
        "{:<w0$}  {:<w1$}  {:<19}  {:<7}  seconds",
        "official", "stand-in", "image id", "action"
    );
    for b in &rows {
        let short = b.id.trim_start_matches("sha256:");
        eprintln!(
            "{:<w0$}  {:<w1$}  {:<19}  {:<7}  {:.1}",
            b.standin.official,
            b.standin.image,
            format!("sha256:{}", &short[..short.len().min(12)]),
            if b.built { "built" } else { "reused" },
            b.seconds
        );
    }
    if !f.check {
        return Ok(ExitCode::SUCCESS);
    }
    let mut failed = 0;
    for s in &standins {
        eprintln!(
            "checking the contract of {} (stand-in for {})",
            s.image, s.official
        );
        for r in images::verify(s) {
            eprintln!(
                "  {} {:<28} {}",
                if r.ok { "ok  " } else { "FAIL" },
                r.check,
                r.detail
            );
            failed += usize::from(!r.ok);
        }
    }
    if failed > 0 {
        eprintln!("{failed} contract checks failed");
        return Ok(ExitCode::from(1));
    }
    eprintln!("every stand-in keeps its contract");
    Ok(ExitCode::SUCCESS)
}
