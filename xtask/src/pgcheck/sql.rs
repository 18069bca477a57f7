//! Every `sql` block of the book, run against a live Synapse database.
//!
//! The book promises each `sql` block is a read-only query a reader can paste into `psql`
//! on their server. This runs each one inside `BEGIN TRANSACTION READ ONLY … ROLLBACK`, so a
//! block that writes fails too, and reports failures at the block's Markdown line.

use super::cluster::Conn;
use crate::book::{BlockKind, Book};
use crate::diagnostics::Diagnostic;
use serde::Serialize;

/// The statements the tuning guide's "Statistics" chapter has the reader run once (as the
/// database owner, which the postgres image makes a superuser). The `sql` blocks need them.
pub const ENABLE_EXTENSIONS: &str = "CREATE EXTENSION IF NOT EXISTS pg_stat_statements;\nCREATE EXTENSION IF NOT EXISTS pg_buffercache;\n";

/// Creates the statistics extensions in the connected database, as the book says to.
pub fn enable_extensions(conn: &Conn) -> anyhow::Result<()> {
    conn.script(ENABLE_EXTENSIONS)?;
    Ok(())
}

#[derive(Debug, Clone, Serialize)]
pub struct SqlRun {
    pub file: String,
    pub line: usize,
    pub ok: bool,
    /// Output lines (unaligned), or psql's error.
    pub output: String,
}

/// Runs every `sql` block; one [`SqlRun`] per block, and a diagnostic per failing block.
pub fn run_blocks(book: &Book, conn: &Conn) -> (Vec<SqlRun>, Vec<Diagnostic>) {
    let mut runs = Vec::new();
    let mut diags = Vec::new();
    for b in book.blocks().filter(|b| b.kind == BlockKind::Sql) {
        let script = format!(
            "BEGIN TRANSACTION READ ONLY;\n{}\n;\nROLLBACK;\n",
            b.text.trim_end()
        );
        let loc = b.line_loc(0);
        match conn.script(&script) {
            Ok(out) => runs.push(SqlRun {
                file: loc.file.clone(),
                line: loc.line,
                ok: true,
                output: out,
            }),
            Err(e) => {
                diags.push(Diagnostic::error(
                    "sql::query-failed",
                    format!("this query fails on a live Synapse database: {e:#}"),
                    &loc,
                ));
                runs.push(SqlRun {
                    file: loc.file.clone(),
                    line: loc.line,
                    ok: false,
                    output: format!("{e:#}"),
                });
            }
        }
    }
    (runs, diags)
}
