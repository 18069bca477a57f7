//! The backup chapters on the live stack, in order: the `db-replica` service streams from the
//! primary and a write through Synapse reaches it; Synapse logs in as a role that is no
//! superuser and the cluster has data checksums; then [`super::backup`] (pgBackRest backups
//! from the replica, killed and refused runs, both repositories encrypted) and
//! [`super::restore`] (a point-in-time restore from the off-site repository, and the book's
//! restore procedure on the deployment itself).

use super::checks::Window;
use super::client::{Client, State};
use super::{Stack, backup, restore};
use anyhow::{Context, ensure};
use serde::Serialize;
use std::time::Instant;

pub use super::pg::REPLICA;
use super::pg::{one, port_of, wait_caught_up};

/// Who Synapse is to PostgreSQL, and how the cluster was made.
#[derive(Debug, Clone, Serialize)]
pub struct Roles {
    /// The role every session of Synapse's processes logged in as.
    pub synapse_role: String,
    pub synapse_sessions: u64,
    pub rolsuper: bool,
    /// Member of `pg_execute_server_program` (`COPY ... TO PROGRAM`).
    pub execute_server_program: bool,
    pub owns_database: bool,
    /// `SHOW data_checksums` on the primary.
    pub data_checksums: String,
}

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
    pub roles: Roles,
    pub backup: backup::BackupReport,
    pub point_in_time: restore::PitrReport,
    pub restore: restore::InPlaceReport,
    pub seconds: f64,
}

fn roles(s: &Stack, primary: &str, pport: &str) -> anyhow::Result<Roles> {
    // Synapse's sessions: every client connection but psql's (ours, the healthchecks').
    let row = one(
        s,
        primary,
        pport,
        "SELECT coalesce(string_agg(DISTINCT usename, ','), '') || '|' || count(*) \
           FROM pg_stat_activity \
          WHERE backend_type = 'client backend' AND datname = current_database() \
            AND application_name <> 'psql' AND pid <> pg_backend_pid()",
    )?;
    let (role, n) = row.split_once('|').context("sessions")?;
    ensure!(
        !role.is_empty() && !role.contains(','),
        "Synapse's sessions log in as {role:?}: one role expected"
    );
    let r = one(
        s,
        primary,
        pport,
        &format!(
            "SELECT rolsuper, pg_has_role(oid, 'pg_execute_server_program', 'MEMBER'), \
                    (SELECT datdba FROM pg_database WHERE datname = current_database()) = oid, \
                    current_setting('data_checksums') \
               FROM pg_roles WHERE rolname = '{}'",
            role.replace('\'', "''")
        ),
    )?;
    let f: Vec<&str> = r.split('|').collect();
    ensure!(f.len() == 4, "pg_roles for {role}: {r:?}");
    let roles = Roles {
        synapse_role: role.to_string(),
        synapse_sessions: n.parse().unwrap_or(0),
        rolsuper: f[0] == "t",
        execute_server_program: f[1] == "t",
        owns_database: f[2] == "t",
        data_checksums: f[3].to_string(),
    };
    ensure!(
        !roles.rolsuper && !roles.execute_server_program && roles.owns_database,
        "Synapse's role {role}: superuser {}, pg_execute_server_program {}, owns its database {}",
        roles.rolsuper,
        roles.execute_server_program,
        roles.owns_database
    );
    ensure!(
        roles.data_checksums == "on",
        "the primary runs with data_checksums {}",
        roles.data_checksums
    );
    Ok(roles)
}

/// Runs the whole check. The client writes through Synapse; `st` gains the messages sent.
/// Returns the report and the windows in which the restore made services log their shutdown.
pub fn check(
    s: &Stack,
    c: &mut Client,
    st: &mut State,
) -> anyhow::Result<(ReplicaReport, Vec<Window>)> {
    let t0 = Instant::now();
    let primary = s.primary_db().context("no primary database service")?;
    let pport = port_of(s, &primary);
    let rport = port_of(s, REPLICA);
    ensure!(
        s.model.services.contains_key(backup::BACKUP)
            && s.model.services.contains_key(restore::RESTORE),
        "the book has a `{REPLICA}` service but no `{}` or `{}` job",
        backup::BACKUP,
        restore::RESTORE
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
    let mut n = 0;
    let mut write = |c: &mut Client, st: &mut State| -> anyhow::Result<()> {
        n += 1;
        let body = format!("written for the backup check {n}");
        super::client::send_text(c, &st.alice, &st.room_id, &body)?;
        st.sent_bodies.push(body);
        Ok(())
    };
    write(c, st)?;
    let behind = wait_caught_up(s, &primary, &pport, &rport)?;
    let roles = roles(s, &primary, &pport)?;

    // One-time keys of a device, in every backup from here on.
    let uploaded = restore::upload_one_time_keys(c, &st.alice, 5)?;
    ensure!(
        uploaded >= 5,
        "Synapse counts {uploaded} one-time keys after the upload"
    );

    let backup = backup::check(s, &primary, &pport, &rport, &mut || write(c, st))?;
    let point_in_time = restore::point_in_time(s, c, st, &primary, &pport, 2)?;
    let (restore, window) = restore::in_place(s, c, st, &primary, &pport, uploaded)?;
    Ok((
        ReplicaReport {
            application_name: application_name.to_string(),
            state: state.to_string(),
            wal_receiver_status,
            replay_bytes_behind: behind,
            roles,
            backup,
            point_in_time,
            restore,
            seconds: t0.elapsed().as_secs_f64(),
        },
        vec![window],
    ))
}
