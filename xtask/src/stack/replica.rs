//! The replica, backup and restore chapters on the live stack: the `db-replica` service
//! streams from the primary, a write through Synapse reaches it, the `db-backup` job (run as
//! the book runs it, `docker compose run --rm db-backup`) keeps `BACKUP_KEEP` archives and
//! refuses a primary, and the newest archive, unpacked by the book's `restore.sh` with the
//! book's command, starts as a primary holding exactly the rows of Synapse's main tables.

use super::Stack;
use super::checks::psql;
use anyhow::{Context, bail, ensure};
use serde::Serialize;
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub const REPLICA: &str = "db-replica";
pub const BACKUP: &str = "db-backup";

/// Synapse's main tables: the ones whose rows only change when clients act. (Tables such as
/// `devices` or `user_ips` are touched by background jobs and would differ by timing alone.)
pub const MAIN_TABLES: &[&str] = &[
    "users",
    "profiles",
    "rooms",
    "events",
    "event_json",
    "event_edges",
    "event_auth",
    "state_events",
    "current_state_events",
    "room_memberships",
    "local_current_membership",
    "state_groups",
    "state_groups_state",
    "state_group_edges",
    "event_forward_extremities",
];

/// What the check saw; every field was measured.
#[derive(Debug, Clone, Serialize)]
pub struct ReplicaReport {
    pub application_name: String,
    /// `pg_stat_replication.state` on the primary.
    pub state: String,
    /// `pg_stat_wal_receiver.status` on the replica.
    pub wal_receiver_status: String,
    /// Bytes the replica's replay was behind the primary's WAL position after the write.
    pub replay_bytes_behind: i64,
    pub backups_run: usize,
    pub archives_left: usize,
    pub backup_refuses_primary: bool,
    pub archive: String,
    pub archive_bytes: u64,
    pub tables_compared: usize,
    pub rows_compared: u64,
    pub seconds: f64,
}

/// The `-c port=N` of a service's command, or 5432.
fn port_of(s: &Stack, svc: &str) -> String {
    let cmd = s.model.services[svc].command.clone().unwrap_or_default();
    cmd.iter()
        .find_map(|a| a.strip_prefix("port=").map(String::from))
        .unwrap_or_else(|| "5432".into())
}

fn one(s: &Stack, svc: &str, port: &str, sql: &str) -> anyhow::Result<String> {
    let r = psql(s, svc, Some(port), sql)?;
    ensure!(r.ok, "psql in {svc}: {}", r.text().trim());
    Ok(r.stdout.trim().to_string())
}

/// Runs the whole check. `write` writes to the primary through Synapse (a message).
pub fn check(
    s: &Stack,
    write: &mut dyn FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<ReplicaReport> {
    let t0 = Instant::now();
    let primary = s.primary_db().context("no primary database service")?;
    let pport = port_of(s, &primary);
    let rport = port_of(s, REPLICA);
    ensure!(
        s.model.services.contains_key(BACKUP),
        "the book has a `{REPLICA}` service but no `{BACKUP}` job"
    );

    // Streaming, seen from both ends.
    let row = one(
        s,
        &primary,
        &pport,
        "SELECT application_name || '|' || state FROM pg_stat_replication",
    )?;
    let (application_name, state) = row.split_once('|').context("no standby connected")?;
    ensure!(state == "streaming", "pg_stat_replication.state is {state}");
    let wal_receiver_status = one(
        s,
        REPLICA,
        &rport,
        "SELECT status FROM pg_stat_wal_receiver",
    )?;
    ensure!(
        wal_receiver_status == "streaming",
        "the replica's WAL receiver is {wal_receiver_status:?}"
    );

    // A write through Synapse reaches the replica.
    write()?;
    let lsn = one(s, &primary, &pport, "SELECT pg_current_wal_lsn()")?;
    let t = Instant::now();
    let behind = loop {
        let b: i64 = one(
            s,
            REPLICA,
            &rport,
            &format!("SELECT pg_wal_lsn_diff('{lsn}', pg_last_wal_replay_lsn())::bigint"),
        )?
        .parse()
        .context("lsn diff")?;
        if b <= 0 || t.elapsed() > Duration::from_secs(30) {
            break b.max(0);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    ensure!(
        behind == 0,
        "the replica is still {behind} bytes behind after 30 s"
    );

    // The backup job, as the book runs it, twice with BACKUP_KEEP=1: one archive is left.
    let backups = s.compose.dir.join("backups");
    let archives = || -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(&backups)
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        v.retain(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("synapse-db-"))
        });
        v.sort();
        v
    };
    let mut backups_run = 0;
    for i in 0..2 {
        if i > 0 {
            // Archive names have a resolution of one second.
            std::thread::sleep(Duration::from_millis(1100));
        }
        s.compose.ok(
            &["run", "--rm", "--no-TTY", "-e", "BACKUP_KEEP=1", BACKUP],
            Duration::from_secs(600),
        )?;
        backups_run += 1;
    }
    let left = archives();
    ensure!(
        left.len() == 1,
        "BACKUP_KEEP=1 left {} archives: {left:?}",
        left.len()
    );

    // Pointed at the primary, it refuses and leaves the archive alone.
    let r = s.compose.run(
        &[
            "run",
            "--rm",
            "--no-TTY",
            "-e",
            &format!("REPLICA_PORT={pport}"),
            BACKUP,
        ],
        Duration::from_secs(300),
    )?;
    let backup_refuses_primary = !r.ok && archives() == left;
    ensure!(
        backup_refuses_primary,
        "the backup job pointed at the primary: exit {:?}, archives {:?}",
        r.code,
        archives()
    );

    // The restore drill, into a scratch directory of the deployment with the book's command.
    let archive = left[0].clone();
    let name = archive
        .file_name()
        .expect("file")
        .to_string_lossy()
        .into_owned();
    let archive_bytes = std::fs::metadata(&archive).map(|m| m.len()).unwrap_or(0);
    let drill = s.compose.dir.join("postgres/restore-drill");
    let restore = s.compose.shell(
        &format!(
            "docker compose run --rm --no-deps --entrypoint bash -v \"$PWD/postgres/restore-drill:/restore\" \
             {BACKUP} /usr/local/bin/restore.sh /backups/{name} /restore"
        ),
        None,
        Duration::from_secs(300),
    )?;
    ensure!(restore.ok, "restore.sh failed: {}", restore.text().trim());
    let result = compare_restored(s, &primary, &pport, &drill);
    let _ = super::remove_dir(&drill);
    let (tables_compared, rows_compared) = result?;
    Ok(ReplicaReport {
        application_name: application_name.to_string(),
        state: state.to_string(),
        wal_receiver_status,
        replay_bytes_behind: behind,
        backups_run,
        archives_left: left.len(),
        backup_refuses_primary,
        archive: name,
        archive_bytes,
        tables_compared,
        rows_compared,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// Starts the database image on the restored directory (a container of its own, labelled with
/// the project so teardown finds it), waits for it to finish recovery, and compares every row
/// of Synapse's main tables with the primary.
fn compare_restored(
    s: &Stack,
    primary: &str,
    pport: &str,
    dir: &std::path::Path,
) -> anyhow::Result<(usize, u64)> {
    let image = s.model.services[primary]
        .image
        .clone()
        .context("db image")?;
    let env = s.model.services[primary].env();
    let user = env
        .get("POSTGRES_USER")
        .cloned()
        .unwrap_or_else(|| "postgres".into());
    let db = env
        .get("POSTGRES_DB")
        .cloned()
        .unwrap_or_else(|| user.clone());
    let pw = env.get("POSTGRES_PASSWORD").cloned().unwrap_or_default();
    let conf = s.compose.dir.join("postgres/postgresql.conf");
    let name = format!("{}-restore-drill", s.compose.project);
    let mut c = s.compose.docker();
    c.args([
        "run",
        "-d",
        "--rm",
        "--name",
        &name,
        "--user",
        "postgres",
        "--shm-size",
        "256m",
    ])
    .args([
        "--label",
        &format!("com.docker.compose.project={}", s.compose.project),
    ])
    .arg("-v")
    .arg(format!("{}:/var/lib/postgresql/data", dir.display()))
    .arg("-v")
    .arg(format!(
        "{}:/etc/postgresql/postgresql.conf:ro",
        conf.display()
    ))
    .arg(&image)
    .args([
        "postgres",
        "-c",
        "config_file=/etc/postgresql/postgresql.conf",
        "-c",
        "unix_socket_directories=/tmp",
        "-c",
        "shared_buffers=128MB",
    ]);
    let r = super::docker::run_with(c, None, Duration::from_secs(120))?;
    ensure!(
        r.ok,
        "cannot start the restored cluster: {}",
        r.text().trim()
    );
    let result = (|| {
        let q = |sql: &str| -> anyhow::Result<String> {
            let mut c = s.compose.docker();
            c.args(["exec", "-i", "-e", &format!("PGPASSWORD={pw}"), &name])
                .args([
                    "psql",
                    "-X",
                    "-q",
                    "-A",
                    "-t",
                    "-v",
                    "ON_ERROR_STOP=1",
                    "-h",
                    "/tmp",
                ])
                .args(["-U", &user, "-d", &db, "-f", "-"]);
            let r = super::docker::run_with(c, Some(sql), Duration::from_secs(60))?;
            if !r.ok {
                bail!("{}", r.text().trim());
            }
            Ok(r.stdout.trim().to_string())
        };
        let t = Instant::now();
        loop {
            match q("SELECT pg_is_in_recovery()") {
                Ok(v) if v == "f" => break,
                _ if t.elapsed() > Duration::from_secs(120) => {
                    let mut c = s.compose.docker();
                    c.args(["logs", &name]);
                    let logs = super::docker::run_with(c, None, Duration::from_secs(30))
                        .map(|r| r.text())
                        .unwrap_or_default();
                    bail!(
                        "the restored cluster did not open as a primary within 120 s:\n{}",
                        super::docker::tail(&logs, 15)
                    );
                }
                _ => std::thread::sleep(Duration::from_millis(300)),
            }
        }
        let mut rows = 0;
        for table in MAIN_TABLES {
            let sql = format!(
                "SELECT count(*) || '|' || coalesce(md5(string_agg(t::text, ',' ORDER BY t::text)), '') FROM {table} t"
            );
            let restored = q(&sql)?;
            let live = one(s, primary, pport, &sql)?;
            ensure!(
                restored == live,
                "table {table}: restored {restored}, primary {live}"
            );
            rows += restored
                .split('|')
                .next()
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0);
        }
        Ok((MAIN_TABLES.len(), rows))
    })();
    let mut c = s.compose.docker();
    c.args(["rm", "-f", "-v", &name]);
    let _ = super::docker::run_with(c, None, Duration::from_secs(120));
    result
}
