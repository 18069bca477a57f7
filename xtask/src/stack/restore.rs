//! The restore chapter on the live stack: a point-in-time restore from the off-site repository
//! into a scratch directory (the first message there, the second not, and page checksums
//! verified on the copy), then the book's procedure on the deployment itself, to the newest
//! state: stop, move the data aside, `db-restore`, the primary alone, the one-time keys
//! emptied, the same rows as before, everything up again and the client reading its messages.

use super::checks::{self, Window, psql};
use super::client::{self, Client, State};
use super::{Stack, backup};
use anyhow::{Context, bail, ensure};
use serde::Serialize;
use std::path::Path;
use std::time::{Duration, Instant};

pub const RESTORE: &str = "db-restore";
/// Where the point-in-time drill restores to, in the containers.
const DRILL_PATH: &str = "/pitr";

pub use crate::pgcheck::replica::MAIN_TABLES;

#[derive(Debug, Clone, Serialize)]
pub struct Checksums {
    pub files: u64,
    pub blocks: u64,
    pub bad: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct PitrReport {
    pub repo: u8,
    /// The recovery target: the primary's clock between the two messages.
    pub target: String,
    pub first_event: String,
    pub first_present: bool,
    pub second_event: String,
    pub second_present: bool,
    /// The timeline the restored copy opened on.
    pub timeline: String,
    /// `pg_checksums --check` on the restored copy, shut down cleanly.
    pub checksums: Checksums,
    pub seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct InPlaceReport {
    /// One-time keys the test's device uploaded before the backups.
    pub one_time_keys_uploaded: u64,
    /// Rows of `e2e_one_time_keys_json` in the restored database before the book's step.
    pub one_time_keys_restored: u64,
    /// ... and after it (always 0).
    pub one_time_keys_after: u64,
    /// What Synapse, started on the restored database, reports for the device (always 0).
    pub one_time_keys_seen_by_synapse: u64,
    pub tables_compared: usize,
    pub rows_compared: u64,
    /// From `docker compose up -d db` until the primary left recovery.
    pub recovery_seconds: f64,
    /// `docker compose up -d --wait` after the restore.
    pub bring_up_seconds: f64,
    pub replica_streaming_after: bool,
    /// Messages the client had sent, every one read back from the room's history.
    pub messages_read: usize,
    /// The full backup taken after the restore (step 7).
    pub backup_after: String,
    pub seconds: f64,
}

fn one(s: &Stack, svc: &str, port: &str, sql: &str) -> anyhow::Result<String> {
    let r = psql(s, svc, Some(port), sql)?;
    ensure!(r.ok, "psql in {svc}: {}", r.text().trim());
    Ok(r.stdout.trim().to_string())
}

/// `count|md5` of every row of each main table, as one list.
fn digests(q: &dyn Fn(&str) -> anyhow::Result<String>) -> anyhow::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for t in MAIN_TABLES {
        let v = q(&format!(
            "SELECT count(*) || '|' || coalesce(md5(string_agg(md5(r::text), '' ORDER BY md5(r::text))), '-') FROM public.{t} AS r"
        ))?;
        out.push((t.to_string(), v));
    }
    Ok(out)
}

fn rows_of(d: &[(String, String)]) -> u64 {
    d.iter()
        .filter_map(|(_, v)| v.split('|').next()?.parse::<u64>().ok())
        .sum()
}

/// Uploads `n` one-time keys for `u`'s device; returns the count Synapse reports.
pub fn upload_one_time_keys(c: &mut Client, u: &client::User, n: usize) -> anyhow::Result<u64> {
    let mut keys = serde_json::Map::new();
    for i in 0..n {
        keys.insert(
            format!("signed_curve25519:backupdrill{i}"),
            serde_json::json!({
                "key": format!("b{i:042}"),
                "signatures": {(u.user_id.clone()): {(format!("ed25519:{}", u.device_id)): "test"}}
            }),
        );
    }
    let v = c.ok(
        "POST",
        "/_matrix/client/v3/keys/upload",
        Some(&u.token),
        Some(&serde_json::json!({ "one_time_keys": keys })),
    )?;
    Ok(v["one_time_key_counts"]["signed_curve25519"]
        .as_u64()
        .unwrap_or(0))
}

/// The count of one-time keys Synapse reports for `u`'s device (an empty upload).
fn one_time_key_count(c: &mut Client, u: &client::User) -> anyhow::Result<u64> {
    let v = c.ok(
        "POST",
        "/_matrix/client/v3/keys/upload",
        Some(&u.token),
        Some(&serde_json::json!({})),
    )?;
    Ok(v["one_time_key_counts"]["signed_curve25519"]
        .as_u64()
        .unwrap_or(0))
}

/// Waits until the primary's WAL segment holding everything written so far is archived.
fn archive_now(s: &Stack, primary: &str, pport: &str) -> anyhow::Result<String> {
    let seg = one(s, primary, pport, "SELECT pg_walfile_name(pg_switch_wal())")?;
    let t = Instant::now();
    loop {
        let done = one(
            s,
            primary,
            pport,
            &format!("SELECT coalesce(last_archived_wal, '') >= '{seg}' FROM pg_stat_archiver"),
        )?;
        if done == "t" {
            return Ok(seg);
        }
        if t.elapsed() > Duration::from_secs(120) {
            let st = one(
                s,
                primary,
                pport,
                "SELECT row(pg_stat_archiver.*)::text FROM pg_stat_archiver",
            )?;
            bail!("WAL segment {seg} was not archived within 120 s: pg_stat_archiver {st}");
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// A PostgreSQL server on a restored directory, in a container of its own (labelled with the
/// project, so teardown finds it), as the primary would run: the book's configuration,
/// pgBackRest's configuration and repositories for `restore_command`, the database secrets.
/// The directory is mounted where it was restored ([`DRILL_PATH`], `PGDATA` there): pgBackRest
/// wrote that path into the `restore_command` it left in the copy.
struct Copy<'a> {
    s: &'a Stack,
    name: String,
    password: String,
    user: String,
    db: String,
}

impl<'a> Copy<'a> {
    fn start(s: &'a Stack, primary: &str, dir: &Path) -> anyhow::Result<Copy<'a>> {
        let svc = &s.model.services[primary];
        let image = svc.image.clone().context("db image")?;
        // The server's environment is the service's `env_file` (the cipher passes for
        // `restore_command`); the password is read from it here only for psql.
        let env = svc.env();
        let user = env
            .get("POSTGRES_USER")
            .cloned()
            .unwrap_or_else(|| "postgres".into());
        let db = env
            .get("POSTGRES_DB")
            .cloned()
            .unwrap_or_else(|| user.clone());
        let password = env.get("POSTGRES_PASSWORD").cloned().unwrap_or_default();
        let repos = backup::Repos::of(s)?;
        let name = format!("{}-pitr-drill", s.compose.project);
        let tree = &s.compose.dir;
        let mut c = s.compose.docker();
        c.args(["run", "-d", "--name", &name, "--user", "postgres"])
            .args(["--shm-size", "256m"])
            .args([
                "--label",
                &format!("com.docker.compose.project={}", s.compose.project),
            ]);
        c.arg("--env-file")
            .arg(tree.join(".postgres.env"))
            .args(["-e", &format!("PGDATA={DRILL_PATH}")])
            // Its restore_command's pgBackRest reads this server's files, as the replica's.
            .args(["-e", &format!("PGBACKREST_PG1_PATH={DRILL_PATH}")]);
        for (src, dst, ro) in [
            (dir.to_path_buf(), DRILL_PATH, false),
            (
                tree.join("postgres/postgresql.conf"),
                "/etc/postgresql/postgresql.conf",
                true,
            ),
            (
                tree.join("pgbackrest/pgbackrest.conf"),
                "/etc/pgbackrest/pgbackrest.conf",
                true,
            ),
            (repos.repo1.clone(), "/var/lib/pgbackrest", true),
            (repos.repo2.clone(), "/var/lib/pgbackrest-offsite", true),
        ] {
            c.arg("-v").arg(format!(
                "{}:{dst}{}",
                src.display(),
                if ro { ":ro" } else { "" }
            ));
        }
        c.arg(&image).args([
            "postgres",
            "-c",
            "config_file=/etc/postgresql/postgresql.conf",
            "-c",
            "unix_socket_directories=/tmp",
            "-c",
            "shared_buffers=128MB",
        ]);
        let r = super::docker::run_with(c, None, Duration::from_secs(120))?;
        ensure!(r.ok, "cannot start the restored copy: {}", r.text().trim());
        Ok(Copy {
            s,
            name,
            password,
            user,
            db,
        })
    }

    fn q(&self, sql: &str) -> anyhow::Result<String> {
        let mut c = self.s.compose.docker();
        c.args([
            "exec",
            "-i",
            "-e",
            &format!("PGPASSWORD={}", self.password),
            &self.name,
        ])
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
        .args(["-U", &self.user, "-d", &self.db, "-f", "-"]);
        let r = super::docker::run_with(c, Some(sql), Duration::from_secs(60))?;
        ensure!(r.ok, "{}", r.text().trim());
        Ok(r.stdout.trim().to_string())
    }

    fn logs(&self) -> String {
        let mut c = self.s.compose.docker();
        c.args(["logs", &self.name]);
        super::docker::run_with(c, None, Duration::from_secs(30))
            .map(|r| r.text())
            .unwrap_or_default()
    }

    fn running(&self) -> bool {
        let mut c = self.s.compose.docker();
        c.args(["inspect", "--format", "{{.State.Running}}", &self.name]);
        super::docker::run_with(c, None, Duration::from_secs(30))
            .is_ok_and(|r| r.stdout.trim() == "true")
    }

    /// Waits until the copy has finished recovery and accepts writes.
    fn wait_primary(&self) -> anyhow::Result<()> {
        let t = Instant::now();
        loop {
            match self.q("SELECT pg_is_in_recovery()") {
                Ok(v) if v == "f" => return Ok(()),
                _ if !self.running() => bail!(
                    "the restored copy stopped during recovery:\n{}",
                    super::docker::tail(&self.logs(), 20)
                ),
                _ if t.elapsed() > Duration::from_secs(180) => bail!(
                    "the restored copy did not leave recovery within 180 s:\n{}",
                    super::docker::tail(&self.logs(), 20)
                ),
                _ => std::thread::sleep(Duration::from_millis(300)),
            }
        }
    }

    /// A clean shutdown (the image's stop signal, SIGINT: a fast shutdown).
    fn stop(&self) -> anyhow::Result<()> {
        let mut c = self.s.compose.docker();
        c.args(["stop", "--time", "120", &self.name]);
        let r = super::docker::run_with(c, None, Duration::from_secs(180))?;
        ensure!(r.ok, "docker stop {}: {}", self.name, r.text().trim());
        Ok(())
    }
}

impl Drop for Copy<'_> {
    fn drop(&mut self) {
        let mut c = self.s.compose.docker();
        c.args(["rm", "-f", "-v", &self.name]);
        let _ = super::docker::run_with(c, None, Duration::from_secs(120));
    }
}

/// `pg_checksums --check` on a cleanly shut down data directory, with the stack's image.
fn pg_checksums(s: &Stack, primary: &str, dir: &Path) -> anyhow::Result<Checksums> {
    let image = s.model.services[primary]
        .image
        .clone()
        .context("db image")?;
    let mut c = s.compose.docker();
    c.args(["run", "--rm", "--user", "postgres"])
        .arg("-v")
        .arg(format!("{}:{DRILL_PATH}", dir.display()))
        .args([&image, "pg_checksums", "--check", "-D", DRILL_PATH]);
    let r = super::docker::run_with(c, None, Duration::from_secs(300))?;
    let text = r.text();
    ensure!(r.ok, "pg_checksums --check failed:\n{}", text.trim());
    let field = |name: &str| -> anyhow::Result<u64> {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .with_context(|| format!("pg_checksums printed no `{name}`:\n{text}"))
    };
    let sums = Checksums {
        files: field("Files scanned:")?,
        blocks: field("Blocks scanned:")?,
        bad: field("Bad checksums:")?,
    };
    ensure!(
        sums.bad == 0 && sums.blocks > 0,
        "pg_checksums on the restored copy: {sums:?}"
    );
    Ok(sums)
}

/// The point-in-time drill, from repository `repo` into a scratch directory of the deployment.
pub fn point_in_time(
    s: &Stack,
    c: &mut Client,
    st: &mut State,
    primary: &str,
    pport: &str,
    repo: u8,
) -> anyhow::Result<PitrReport> {
    let t0 = Instant::now();
    let first_body = "point-in-time drill: sent before the target";
    let first = client::send_text(c, &st.alice, &st.room_id, first_body)?;
    st.sent_bodies.push(first_body.to_string());
    // Commit times have microseconds; a second either side keeps the target clearly between.
    std::thread::sleep(Duration::from_millis(1100));
    let target = one(
        s,
        primary,
        pport,
        "SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'",
    )?;
    std::thread::sleep(Duration::from_millis(1100));
    let second_body = "point-in-time drill: sent after the target";
    let second = client::send_text(c, &st.alice, &st.room_id, second_body)?;
    st.sent_bodies.push(second_body.to_string());
    archive_now(s, primary, pport)?;

    let dir = s.compose.dir.join("postgres/pitr-drill");
    if dir.exists() {
        super::remove_dir(&dir)?;
    }
    let result = (|| -> anyhow::Result<PitrReport> {
        let r = s.compose.run(
            &[
                "run",
                "--rm",
                "--no-TTY",
                "-e",
                &format!("PGBACKREST_PG1_PATH={DRILL_PATH}"),
                "-v",
                &format!("{}:{DRILL_PATH}", dir.display()),
                RESTORE,
                &format!("--repo={repo}"),
                "--type=time",
                &format!("--target={target}"),
                "--target-action=promote",
                "--archive-mode=off",
            ],
            Duration::from_secs(600),
        )?;
        ensure!(
            r.ok,
            "db-restore to {target} from repo{repo} failed:\n{}",
            super::docker::tail(&r.text(), 30)
        );
        let copy = Copy::start(s, primary, &dir)?;
        copy.wait_primary()?;
        let count = |id: &str| -> anyhow::Result<bool> {
            Ok(copy.q(&format!(
                "SELECT count(*) FROM events WHERE event_id = '{}'",
                id.replace('\'', "''")
            ))? == "1")
        };
        let first_present = count(&first)?;
        let second_present = count(&second)?;
        let timeline = copy.q("SELECT timeline_id FROM pg_control_checkpoint()")?;
        ensure!(
            first_present && !second_present,
            "restored to {target}: the message before it is {}, the one after it is {}\n{}",
            if first_present { "there" } else { "MISSING" },
            if second_present { "THERE" } else { "absent" },
            super::docker::tail(&copy.logs(), 15)
        );
        copy.stop()?;
        let checksums = pg_checksums(s, primary, &dir)?;
        Ok(PitrReport {
            repo,
            target: target.clone(),
            first_event: first.clone(),
            first_present,
            second_event: second.clone(),
            second_present,
            timeline,
            checksums,
            seconds: t0.elapsed().as_secs_f64(),
        })
    })();
    let _ = super::remove_dir(&dir);
    result
}

/// The book's procedure on the deployment itself, to the newest state. Returns the report and
/// the window in which `docker compose stop` made the services log their shutdown.
pub fn in_place(
    s: &Stack,
    c: &mut Client,
    st: &State,
    primary: &str,
    pport: &str,
    one_time_keys_uploaded: u64,
) -> anyhow::Result<(InPlaceReport, Window)> {
    let t0 = Instant::now();
    let before = digests(&|q| one(s, primary, pport, q))?;

    // 1-2. Stop everything, keep the old data directory aside, empty the replica's.
    let from = checks::now();
    s.compose.ok(&["stop"], Duration::from_secs(600))?;
    let window = Window {
        from,
        to: checks::now() + 2.0,
    };
    let r = s.compose.shell(
        "mv postgres/data \"postgres/data.old-$(date -u +%Y%m%dT%H%M%SZ)\" && rm -rf postgres/replica",
        None,
        Duration::from_secs(300),
    )?;
    ensure!(r.ok, "moving the data directory aside: {}", r.text().trim());

    // 3. The newest state.
    let r = s.compose.run(
        &["run", "--rm", "--no-TTY", RESTORE],
        Duration::from_secs(900),
    )?;
    ensure!(
        r.ok,
        "`docker compose run --rm db-restore` failed:\n{}",
        super::docker::tail(&r.text(), 30)
    );

    // 4. The primary alone, until it leaves recovery.
    let tr = Instant::now();
    s.compose
        .ok(&["up", "-d", primary], Duration::from_secs(300))?;
    loop {
        match psql(s, primary, Some(pport), "SELECT pg_is_in_recovery()") {
            Ok(r) if r.ok && r.stdout.trim() == "f" => break,
            _ if tr.elapsed() > Duration::from_secs(300) => {
                let logs = s.compose.logs(primary).unwrap_or_default();
                bail!(
                    "the restored primary did not leave recovery within 300 s:\n{}",
                    super::docker::tail(&logs, 20)
                );
            }
            _ => std::thread::sleep(Duration::from_millis(500)),
        }
    }
    let recovery_seconds = tr.elapsed().as_secs_f64();
    let count_keys = || -> anyhow::Result<u64> {
        one(
            s,
            primary,
            pport,
            "SELECT count(*) FROM e2e_one_time_keys_json",
        )?
        .parse()
        .context("count")
    };
    let one_time_keys_restored = count_keys()?;
    ensure!(
        one_time_keys_restored >= one_time_keys_uploaded && one_time_keys_uploaded > 0,
        "the restored database holds {one_time_keys_restored} one-time keys; {one_time_keys_uploaded} were uploaded before the backups"
    );
    let after_restore = digests(&|q| one(s, primary, pport, q))?;
    for ((t, a), (_, b)) in before.iter().zip(&after_restore) {
        ensure!(
            a == b,
            "table {t}: before the restore {a}, after it {b} (rows|digest)"
        );
    }

    // 5. The one-time keys, with the book's command (its password from the environment).
    let env = s.model.services[primary].env();
    let user = env
        .get("POSTGRES_USER")
        .cloned()
        .unwrap_or_else(|| "postgres".into());
    let dbname = env
        .get("POSTGRES_DB")
        .cloned()
        .unwrap_or_else(|| user.clone());
    let pw = env.get("POSTGRES_PASSWORD").cloned().unwrap_or_default();
    let host = checks::socket_dir(s);
    let r = s.compose.exec(
        primary,
        &[
            "psql",
            "-h",
            &host,
            "-U",
            &user,
            &dbname,
            "-c",
            "TRUNCATE e2e_one_time_keys_json",
        ],
        &[("PGPASSWORD", &pw)],
        None,
        Duration::from_secs(60),
    )?;
    ensure!(r.ok, "TRUNCATE e2e_one_time_keys_json: {}", r.text().trim());
    let one_time_keys_after = count_keys()?;
    ensure!(
        one_time_keys_after == 0,
        "{one_time_keys_after} one-time keys left"
    );

    // 6. Everything up again: healthy, the replica cloned and streaming.
    let b = super::bring_up(s).context("docker compose up -d --wait after the restore")?;
    let rep = one(
        s,
        primary,
        pport,
        "SELECT coalesce(string_agg(state, ','), '') FROM pg_stat_replication",
    )?;
    let replica_streaming_after = rep == "streaming";
    ensure!(
        replica_streaming_after,
        "after the restore, pg_stat_replication says {rep:?}"
    );
    // The client, with its old token, reads everything it sent.
    let history = client::history(c, &st.alice, &st.room_id)?;
    let missing: Vec<&String> = st
        .sent_bodies
        .iter()
        .filter(|b| !history.contains(b))
        .collect();
    ensure!(
        missing.is_empty(),
        "after the restore, the room's history lacks {} of {} messages: {missing:?}",
        missing.len(),
        st.sent_bodies.len()
    );
    let one_time_keys_seen_by_synapse = one_time_key_count(c, &st.alice)?;
    ensure!(
        one_time_keys_seen_by_synapse == 0,
        "Synapse still counts {one_time_keys_seen_by_synapse} one-time keys for the device"
    );

    // 7. A full backup of the new timeline.
    let labels = backup::labels(&backup::info(s)?, 1);
    let r = s.compose.run(
        &["run", "--rm", "--no-TTY", backup::BACKUP, "full"],
        Duration::from_secs(600),
    )?;
    ensure!(
        r.ok,
        "the full backup after the restore failed:\n{}",
        super::docker::tail(&r.text(), 30)
    );
    let backup_after = backup::labels(&backup::info(s)?, 1)
        .into_iter()
        .find(|l| !labels.contains(l))
        .context("the backup after the restore is not listed")?;
    Ok((
        InPlaceReport {
            one_time_keys_uploaded,
            one_time_keys_restored,
            one_time_keys_after,
            one_time_keys_seen_by_synapse,
            tables_compared: before.len(),
            rows_compared: rows_of(&before),
            recovery_seconds,
            bring_up_seconds: b.seconds,
            replica_streaming_after,
            messages_read: st.sent_bodies.len(),
            backup_after,
            seconds: t0.elapsed().as_secs_f64(),
        },
        window,
    ))
}
