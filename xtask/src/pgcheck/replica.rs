//! The replica check: the book's `db-replica` service brought up from a running primary with
//! its own entry script, and writes through Synapse seen streaming to it. (The backups taken
//! from the replica use pgBackRest, which only the stack test's images have; the stack test
//! runs them, see `stack::backup` and `stack::restore`.)
//!
//! Commands, environment and paths come from the extracted `docker-compose.yml` (service
//! `db-replica`); container paths are mapped onto this machine through the service's volumes.
//! Only what a container would provide is added: the data directory prepared for the
//! `postgres` user (the `db-dirs` service's job), a `PATH` with this machine's PostgreSQL
//! binaries, and `unix_socket_directories`/`listen_addresses` so the servers listen where the
//! mapped `/sockets` is.

use super::cluster::{self, Conn, wait_for};
use super::compose::{self, Mounts, Service};
use anyhow::{Context, bail, ensure};
use serde::Serialize;
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where things are on this machine.
#[derive(Debug, Clone)]
pub struct ReplicaEnv {
    /// The extracted deployment tree (holds docker-compose.yml, .postgres.env, postgres/*).
    pub tree: PathBuf,
    /// The host directory the `sockets` volume is: the primary's socket is in it.
    pub sockets: PathBuf,
    /// Scratch directory for logs and the restored copy.
    pub work: PathBuf,
    /// PostgreSQL's binaries (`tools::pg_bindir()`).
    pub bindir: PathBuf,
    /// `name=value` settings added to every server this check starts (e.g. `fsync=off` to
    /// save time on CI); empty means exactly the book's configuration.
    pub extra_settings: Vec<(String, String)>,
}

/// One table compared between the restored copy and the primary.
#[derive(Debug, Clone, Serialize)]
pub struct TableCompare {
    pub table: String,
    pub rows: u64,
}

/// What [`check`] saw. Every field was measured; `check` fails rather than report a mismatch.
#[derive(Debug, Clone, Serialize)]
pub struct ReplicaReport {
    /// False when a replica already answered on its port (e.g. the stack runner started it).
    pub started_replica: bool,
    pub application_name: String,
    /// `pg_stat_replication.state` on the primary once caught up (always `streaming`).
    pub state: String,
    /// `pg_stat_wal_receiver.status` on the replica (always `streaming`).
    pub wal_receiver_status: String,
    /// Bytes between the primary's WAL position and the replica's replay position after the
    /// writes (always 0).
    pub replay_bytes_behind: i64,
    pub seconds: f64,
}

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

const REPLICA: &str = "db-replica";

/// Runs the whole check. `write` must write to the primary through Synapse (each call makes
/// new rows, e.g. a message); it is called once after the replica streams.
pub fn check(
    env: &ReplicaEnv,
    write: &mut dyn FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<ReplicaReport> {
    let t0 = Instant::now();
    std::fs::create_dir_all(&env.work)?;
    std::fs::set_permissions(&env.work, std::fs::Permissions::from_mode(0o755))?;
    let replica_svc = compose::service(&env.tree, REPLICA)?;
    let named = BTreeMap::from([("sockets", env.sockets.clone())]);
    let mut replica_mounts = Mounts::of(&replica_svc, &env.tree, &named)?;

    let user = replica_svc
        .env
        .get("POSTGRES_USER")
        .context("db-replica has no POSTGRES_USER")?
        .clone();
    let dbname = replica_svc
        .env
        .get("POSTGRES_DB")
        .cloned()
        .unwrap_or_else(|| user.clone());
    let primary_port: u16 = replica_svc
        .env
        .get("PRIMARY_PORT")
        .map_or(Ok(5432), |p| p.parse())?;
    let replica_port: u16 =
        setting_in(&replica_svc.command, "port").map_or(Ok(5432), |p| p.parse())?;
    let app_name =
        setting_in(&replica_svc.command, "cluster_name").unwrap_or_else(|| "walreceiver".into());
    let slot = replica_svc
        .env
        .get("REPLICA_SLOT")
        .cloned()
        .unwrap_or_else(|| "db_replica".into());
    let primary = Conn {
        bindir: env.bindir.clone(),
        host: env.sockets.clone(),
        port: primary_port,
        user,
        dbname,
        password: replica_svc.env.get("POSTGRES_PASSWORD").cloned(),
    };
    ensure!(
        primary.is_ready(),
        "no primary answers on {} port {primary_port}",
        env.sockets.display()
    );
    let replica = primary.with_port(replica_port);

    // The service names its data directory (PGDATA); it is the volume mounted there.
    let container_pgdata = replica_svc
        .env
        .get("PGDATA")
        .cloned()
        .unwrap_or_else(|| "/var/lib/postgresql/data".into());
    let pgdata = replica_mounts.rewrite(&container_pgdata);
    replica_mounts.add(&container_pgdata, PathBuf::from(&pgdata));
    let mut started: Option<Child> = None;
    if !replica.is_ready() {
        started = Some(start_replica(
            env,
            &replica_svc,
            &replica_mounts,
            Path::new(&pgdata),
        )?);
    }
    let result = run_checks(env, &primary, &replica, &app_name, write, &mut started);
    let cleanup = match started.take() {
        Some(child) => stop_replica(env, child, Path::new(&pgdata), &primary, &slot),
        None => Ok(()),
    };
    let mut report = result?;
    cleanup?;
    report.seconds = t0.elapsed().as_secs_f64();
    Ok(report)
}

/// `value` of a `-c name=value` (or `name=value`) argument.
fn setting_in(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .find_map(|a| a.strip_prefix(&format!("{name}=")).map(String::from))
}

/// A `PATH` with this machine's PostgreSQL binaries first, as the image's PATH has its own.
fn path_env(bindir: &Path) -> String {
    format!(
        "{}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        bindir.display()
    )
}

/// The service's own command line (entrypoint + command), container paths mapped.
fn command_of(
    svc: &Service,
    mounts: &Mounts,
    args_override: Option<&[String]>,
) -> anyhow::Result<Command> {
    let mut argv: Vec<String> = svc.entrypoint.iter().map(|a| mounts.rewrite(a)).collect();
    match args_override {
        Some(a) => argv.extend(a.iter().map(|a| mounts.rewrite(a))),
        None => argv.extend(svc.command.iter().map(|a| mounts.rewrite(a))),
    }
    let Some((prog, args)) = argv.split_first() else {
        bail!("service `{}` has no command", svc.name)
    };
    let mut cmd = Command::new(prog);
    cmd.args(args).env_clear().current_dir("/");
    for (k, v) in &svc.env {
        cmd.env(k, mounts.rewrite(v));
    }
    match svc.user.as_deref() {
        None | Some("root") | Some("0") => {}
        Some("postgres") => {
            cluster::as_postgres(&mut cmd)?;
        }
        Some(other) => bail!("service `{}`: user `{other}` is not emulated", svc.name),
    }
    Ok(cmd)
}

fn start_replica(
    env: &ReplicaEnv,
    svc: &Service,
    mounts: &Mounts,
    pgdata: &Path,
) -> anyhow::Result<Child> {
    ensure!(
        pgdata.starts_with(&env.tree),
        "the replica's data directory {} is outside the tree",
        pgdata.display()
    );
    // A directory left by an earlier run of this check in the same tree is ours to replace.
    if pgdata.exists() {
        std::fs::remove_dir_all(pgdata)?;
    }
    // What `db-dirs` does for it: an empty directory of the postgres user, mode 0700.
    std::fs::create_dir_all(pgdata)?;
    cluster::chown_postgres(pgdata)?;
    std::fs::set_permissions(pgdata, std::fs::Permissions::from_mode(0o700))?;

    let mut native = vec![
        "-c".to_string(),
        format!("unix_socket_directories={}", env.sockets.display()),
        "-c".to_string(),
        "listen_addresses=".to_string(),
    ];
    for (k, v) in &env.extra_settings {
        native.push("-c".into());
        native.push(format!("{k}={v}"));
    }
    let mut args = svc.command.clone();
    args.extend(native);
    let mut cmd = command_of(svc, mounts, Some(&args))?;
    let log = env.work.join("db-replica.log");
    let out = std::fs::File::create(&log)?;
    cmd.env("PATH", path_env(&env.bindir))
        .env("PGDATA", pgdata)
        .env("HOME", pgdata.parent().unwrap_or(Path::new("/")))
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out);
    let child = cmd
        .spawn()
        .with_context(|| format!("cannot start db-replica: {cmd:?}"))?;
    Ok(child)
}

fn stop_replica(
    env: &ReplicaEnv,
    mut child: Child,
    pgdata: &Path,
    primary: &Conn,
    slot: &str,
) -> anyhow::Result<()> {
    let stopped = cluster::stop_data_dir(&env.bindir, pgdata);
    if stopped.is_err() {
        let _ = child.kill();
    }
    let _ = child.wait();
    stopped?;
    // The slot would keep WAL on the primary forever once its replica is gone.
    wait_for(
        Duration::from_secs(30),
        "the replica's slot to be released",
        || {
            let rows = primary.rows(&format!(
                "SELECT active FROM pg_replication_slots WHERE slot_name = {}",
                sql_literal(slot)
            ))?;
            Ok(match rows.first().and_then(|r| r.first()) {
                Some(a) if a == "t" => None,
                _ => Some(()),
            })
        },
    )?;
    primary.query(&format!(
        "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = {}",
        sql_literal(slot)
    ))?;
    Ok(())
}

/// A SQL string literal.
pub fn sql_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn run_checks(
    env: &ReplicaEnv,
    primary: &Conn,
    replica: &Conn,
    app_name: &str,
    write: &mut dyn FnMut() -> anyhow::Result<()>,
    started: &mut Option<Child>,
) -> anyhow::Result<ReplicaReport> {
    let log = env.work.join("db-replica.log");
    // 1. The replica is up and streaming.
    wait_for(
        Duration::from_secs(600),
        "db-replica to stream from the primary",
        || {
            if let Some(child) = started.as_mut()
                && let Some(st) = child.try_wait()?
            {
                bail!(
                    "db-replica exited ({st}); its log ends:\n{}",
                    cluster::tail(&log, 20)
                );
            }
            if !replica.is_ready() {
                return Ok(None);
            }
            let status = replica.query("SELECT status FROM pg_stat_wal_receiver")?;
            Ok((status == "streaming").then_some(()))
        },
    )?;
    let in_recovery = replica.query("SELECT pg_is_in_recovery()")?;
    ensure!(
        in_recovery == "t",
        "db-replica answers but is not a standby (pg_is_in_recovery = {in_recovery})"
    );

    // 2. Write through Synapse, then see the replica replay it, nothing behind.
    write().context("writing through Synapse failed")?;
    let target = primary.query("SELECT pg_current_wal_lsn()")?;
    let q = format!(
        "SELECT state, pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::bigint, replay_lsn >= {}::pg_lsn \
           FROM pg_stat_replication WHERE application_name = {}",
        sql_literal(&target),
        sql_literal(app_name)
    );
    let (state, behind) = wait_for(
        Duration::from_secs(120),
        "the replica to replay every write",
        || {
            let rows = primary.rows(&q)?;
            let Some(r) = rows.first() else {
                return Ok(None);
            };
            let behind: i64 = r.get(1).and_then(|b| b.parse().ok()).unwrap_or(i64::MAX);
            let caught_up = r.get(2).is_some_and(|c| c == "t");
            Ok((r[0] == "streaming" && caught_up && behind == 0).then(|| (r[0].clone(), behind)))
        },
    )
    .with_context(|| {
        format!(
            "pg_stat_replication on the primary: {:?}",
            primary.rows(&q).unwrap_or_default()
        )
    })?;
    let receiver = replica.query("SELECT status FROM pg_stat_wal_receiver")?;
    ensure!(
        receiver == "streaming",
        "the replica's WAL receiver is `{receiver}`, not streaming"
    );
    Ok(ReplicaReport {
        started_replica: started.is_some(),
        application_name: app_name.to_string(),
        state,
        wal_receiver_status: receiver,
        replay_bytes_behind: behind,
        seconds: 0.0,
    })
}

/// Row count and a digest of every row of each of [`MAIN_TABLES`] present on `a`, which must
/// be equal on `b`.
pub fn compare_tables(a: &Conn, b: &Conn) -> anyhow::Result<Vec<TableCompare>> {
    let mut out = Vec::new();
    for t in MAIN_TABLES {
        let exists = a.query(&format!(
            "SELECT to_regclass({}) IS NOT NULL",
            sql_literal(&format!("public.{t}"))
        ))?;
        if exists != "t" {
            continue;
        }
        let q = format!(
            "SELECT count(*), coalesce(md5(string_agg(md5(r::text), '' ORDER BY md5(r::text))), '-') FROM public.{t} AS r"
        );
        let x = a.rows(&q)?;
        let y = b
            .rows(&q)
            .with_context(|| format!("table {t} is missing from the copy"))?;
        ensure!(
            x == y,
            "table {t} differs: primary has {:?}, the copy {:?} (rows, digest)",
            x,
            y
        );
        let rows = x
            .first()
            .and_then(|r| r.first())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        out.push(TableCompare {
            table: t.to_string(),
            rows,
        });
    }
    ensure!(
        out.len() >= 10,
        "only {} of Synapse's main tables exist: is this a Synapse database?",
        out.len()
    );
    Ok(out)
}
