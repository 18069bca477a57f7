//! The major-version migration of the tuning guide ("Upgrading PostgreSQL"), run with this
//! machine's PostgreSQL: dump the Synapse database with `pg_dump --format=custom`, initialise
//! a fresh cluster the way the postgres image does (bootstrap superuser `POSTGRES_USER`,
//! `POSTGRES_INITDB_ARGS`, `CREATE DATABASE` `POSTGRES_DB`, then the book's SQL init scripts,
//! which create Synapse's role), restore from the dump file with `pg_restore --exit-on-error
//! --jobs=4`, collect statistics with `vacuumdb --analyze-in-stages`, and compare Synapse's
//! main tables with the old cluster. The caller then starts Synapse on the result.

use super::cluster::{self, Conn, Server};
use super::replica::{TableCompare, compare_tables, sql_literal};
use anyhow::Context;
use serde::Serialize;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

#[derive(Debug, Clone, Serialize)]
pub struct MigrateReport {
    pub old_version: String,
    pub new_version: String,
    pub dump_bytes: u64,
    pub tables_compared: usize,
    pub rows_compared: u64,
    pub tables: Vec<TableCompare>,
    pub seconds: f64,
}

/// What the new cluster is made from (the `db` service's `.postgres.env` and init scripts).
#[derive(Debug, Clone)]
pub struct Image {
    pub user: String,
    pub dbname: String,
    pub initdb_args: Vec<String>,
    /// The `*.sql` files of `/docker-entrypoint-initdb.d` (name, text), in name order, which
    /// the image feeds to psql in `POSTGRES_DB` as `POSTGRES_USER` after creating it.
    pub init_sql: Vec<(String, String)>,
    /// The service's environment, as those scripts see it (`\getenv`).
    pub env: Vec<(String, String)>,
}

impl Image {
    /// Runs the init scripts against `db` (the superuser in `POSTGRES_DB`), as the image does.
    pub fn run_init_sql(&self, db: &Conn) -> anyhow::Result<()> {
        for (name, text) in &self.init_sql {
            db.script_env(text, &self.env)
                .with_context(|| format!("init script {name}"))?;
        }
        Ok(())
    }
}

/// Migrates `old` into the fresh, not yet initialised `new` server (which it leaves running).
pub fn check(
    old: &Conn,
    new: &Server,
    image: &Image,
    config: Option<&Path>,
    settings: &[(String, String)],
    work: &Path,
) -> anyhow::Result<MigrateReport> {
    let t0 = Instant::now();
    std::fs::create_dir_all(work)?;
    let dump = work.join("synapse.dump");
    // Step 2 of the procedure: the dump.
    let mut cmd = Command::new(old.bindir.join("pg_dump"));
    cmd.arg(format!("--host={}", old.host.display()))
        .arg(format!("--port={}", old.port))
        .arg(format!("--username={}", old.user))
        .arg("--format=custom")
        .arg(format!("--file={}", dump.display()))
        .arg(&old.dbname);
    if let Some(p) = &old.password {
        cmd.env("PGPASSWORD", p);
    }
    cluster::run(&mut cmd).context("pg_dump failed")?;
    let dump_bytes = std::fs::metadata(&dump)?.len();

    // Step 3: the new image initialises an empty cluster with the same POSTGRES_* variables.
    new.initdb(&image.user, old.password.as_deref(), &image.initdb_args)?;
    std::fs::create_dir_all(&new.socket_dir)?;
    cluster::chown_postgres(&new.socket_dir)?;
    new.start(config, settings)?;
    let admin = Conn {
        password: old.password.clone(),
        ..new.conn(&image.user, "postgres")
    };
    if image.dbname != "postgres" {
        admin.query(&format!(
            "CREATE DATABASE \"{}\"",
            image.dbname.replace('"', "\"\"")
        ))?;
    }
    let target = Conn {
        password: old.password.clone(),
        ..new.conn(&image.user, &image.dbname)
    };
    image.run_init_sql(&target)?;

    // Step 4: restore, stopping at the first error, then statistics.
    let mut cmd = Command::new(old.bindir.join("pg_restore"));
    cmd.arg(format!("--host={}", target.host.display()))
        .arg(format!("--port={}", target.port))
        .arg(format!("--username={}", target.user))
        .arg(format!("--dbname={}", target.dbname))
        .arg("--exit-on-error")
        .arg("--jobs=4")
        .arg(&dump);
    if let Some(p) = &target.password {
        cmd.env("PGPASSWORD", p);
    }
    cluster::run(&mut cmd).context("pg_restore failed")?;
    let mut cmd = Command::new(old.bindir.join("vacuumdb"));
    cmd.arg(format!("--host={}", target.host.display()))
        .arg(format!("--port={}", target.port))
        .arg(format!("--username={}", target.user))
        .args(["--all", "--analyze-in-stages", "--quiet"]);
    if let Some(p) = &target.password {
        cmd.env("PGPASSWORD", p);
    }
    cluster::run(&mut cmd).context("vacuumdb failed")?;

    // The locale Synapse insists on survives (it refuses a database whose collation is not C).
    let collate = target.query(&format!(
        "SELECT datcollate || ' ' || datctype FROM pg_database WHERE datname = {}",
        sql_literal(&image.dbname)
    ))?;
    let tables = compare_tables(old, &target)?;
    Ok(MigrateReport {
        old_version: old.query("SHOW server_version")?,
        new_version: format!("{} ({collate})", target.query("SHOW server_version")?),
        dump_bytes,
        tables_compared: tables.len(),
        rows_compared: tables.iter().map(|t| t.rows).sum(),
        tables,
        seconds: t0.elapsed().as_secs_f64(),
    })
}
