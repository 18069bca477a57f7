//! PostgreSQL helpers the replica, backup and restore checks share: the replica's service, a
//! server's port, one value from a query, waiting for the replica to catch up.

use super::Stack;
use super::checks::psql;
use anyhow::{Context, ensure};
use std::time::{Duration, Instant};

/// The streaming replica's service.
pub const REPLICA: &str = "db-replica";

/// The `-c port=N` of a service's command, or 5432.
pub fn port_of(s: &Stack, svc: &str) -> String {
    let cmd = s.model.services[svc].command.clone().unwrap_or_default();
    cmd.iter()
        .find_map(|a| a.strip_prefix("port=").map(String::from))
        .unwrap_or_else(|| "5432".into())
}

/// The single value a query returns in a service's database.
pub fn one(s: &Stack, svc: &str, port: &str, sql: &str) -> anyhow::Result<String> {
    let r = psql(s, svc, Some(port), sql)?;
    ensure!(r.ok, "psql in {svc}: {}", r.text().trim());
    Ok(r.stdout.trim().to_string())
}

/// Waits (30 s at most) until the replica has replayed everything the primary has written.
pub fn wait_caught_up(s: &Stack, primary: &str, pport: &str, rport: &str) -> anyhow::Result<i64> {
    let lsn = one(s, primary, pport, "SELECT pg_current_wal_lsn()")?;
    let t = Instant::now();
    loop {
        let b: i64 = one(
            s,
            REPLICA,
            rport,
            &format!("SELECT pg_wal_lsn_diff('{lsn}', pg_last_wal_replay_lsn())::bigint"),
        )?
        .parse()
        .context("lsn diff")?;
        if b <= 0 {
            return Ok(0);
        }
        ensure!(
            t.elapsed() < Duration::from_secs(30),
            "the replica is still {b} bytes behind after 30 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
