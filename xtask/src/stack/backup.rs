//! The backup chapter on the live stack: the book's `db-backup` job (pgBackRest, files from the
//! replica) run as the book runs it, killed in the middle of a backup and run again, refusing
//! a lagging replica and a repository without room, writing its freshness file, and both
//! repositories encrypted from end to end.

use super::Stack;
use super::checks::psql;
use anyhow::{Context, bail, ensure};
use serde::Serialize;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

pub const BACKUP: &str = "db-backup";
/// The stanza the book's pgBackRest configuration names.
pub const STANZA: &str = "synapse";
const JOB_TIMEOUT: Duration = Duration::from_secs(600);

/// The repositories' directories on the host, as the book's Compose file mounts them.
#[derive(Debug, Clone)]
pub struct Repos {
    pub repo1: PathBuf,
    pub repo2: PathBuf,
    pub metrics: PathBuf,
}

impl Repos {
    /// Bind sources of the `db-backup` service for pgBackRest's default repository paths and
    /// the metrics directory.
    pub fn of(s: &Stack) -> anyhow::Result<Repos> {
        let svc = s
            .model
            .services
            .get(BACKUP)
            .with_context(|| format!("the book has no `{BACKUP}` job"))?;
        let source = |target: &str| -> anyhow::Result<PathBuf> {
            svc.volumes
                .iter()
                .find(|v| v.target == target && v.kind == "bind")
                .and_then(|v| v.source.clone())
                .map(PathBuf::from)
                .with_context(|| format!("`{BACKUP}` mounts nothing at {target}"))
        };
        let metrics = svc
            .env()
            .get("BACKUP_METRICS_DIR")
            .cloned()
            .unwrap_or_else(|| "/backup-metrics".into());
        Ok(Repos {
            repo1: source("/var/lib/pgbackrest")?,
            repo2: source("/var/lib/pgbackrest-offsite")?,
            metrics: source(&metrics)?,
        })
    }
    fn repo(&self, n: u8) -> &Path {
        if n == 2 { &self.repo2 } else { &self.repo1 }
    }
}

/// One backup the job ran.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    pub repo: u8,
    pub kind: String,
    pub label: String,
    pub seconds: f64,
}

/// What the killed backup left, and what the next run made of it.
#[derive(Debug, Clone, Serialize)]
pub struct Killed {
    /// The label of the backup the kill interrupted.
    pub label: String,
    /// Files of it in the repository when it was killed (it had no manifest yet).
    pub files_left: usize,
    /// The next run said it resumed it (pgBackRest's `resumable backup`).
    pub resumed: bool,
    /// Backup directories in repo1 after the next run: every one complete and listed.
    pub backup_dirs_after: usize,
    /// Temporary files of pgBackRest or of the script left in the repository or the metrics
    /// directory after the next run (always 0).
    pub temporary_files_after: usize,
}

/// A run the job had to refuse.
#[derive(Debug, Clone, Serialize)]
pub struct Refusal {
    pub case: String,
    /// The job's own explanation.
    pub message: String,
    pub exit_code: Option<i32>,
}

/// One repository's state after the check.
#[derive(Debug, Clone, Serialize)]
pub struct RepoState {
    pub repo: u8,
    pub cipher: String,
    pub backups: usize,
    /// Regular files in the repository, every one starting with OpenSSL's `Salted__`.
    pub files: usize,
    pub encrypted_files: usize,
    /// `repoN-retention-full-type` / `repoN-retention-full` of the book's configuration.
    pub retention: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct BackupReport {
    pub runs: Vec<Run>,
    pub killed: Killed,
    pub refusals: Vec<Refusal>,
    pub repos: Vec<RepoState>,
    /// `pgbackrest check` (through the job) passed.
    pub check_passed: bool,
    /// Freshness files the job wrote, with the time each says.
    pub freshness_files: Vec<String>,
}

/// `docker compose run --rm --no-TTY [-e K=V]... db-backup ARGS...`
fn job(s: &Stack, env: &[(&str, &str)], args: &[&str]) -> anyhow::Result<super::docker::Ran> {
    let mut a: Vec<String> = vec!["run".into(), "--rm".into(), "--no-TTY".into()];
    for (k, v) in env {
        a.push("-e".into());
        a.push(format!("{k}={v}"));
    }
    a.push(BACKUP.into());
    a.extend(args.iter().map(|x| x.to_string()));
    let argv: Vec<&str> = a.iter().map(String::as_str).collect();
    s.compose.run(&argv, JOB_TIMEOUT)
}

/// `pgbackrest info --output=json` through the job's image and configuration.
pub fn info(s: &Stack) -> anyhow::Result<serde_json::Value> {
    let r = s.compose.run(
        &[
            "run",
            "--rm",
            "--no-TTY",
            "--no-deps",
            "--entrypoint",
            "pgbackrest",
            BACKUP,
            &format!("--stanza={STANZA}"),
            "--output=json",
            "info",
        ],
        JOB_TIMEOUT,
    )?;
    ensure!(r.ok, "pgbackrest info failed: {}", r.text().trim());
    let v: serde_json::Value = serde_json::from_str(r.stdout.trim())
        .with_context(|| format!("pgbackrest info printed no JSON: {}", r.stdout.trim()))?;
    Ok(v)
}

/// Labels of the backups `info` lists for repository `repo`.
pub fn labels(info: &serde_json::Value, repo: u8) -> Vec<String> {
    info[0]["backup"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|b| b["database"]["repo-key"].as_u64() == Some(u64::from(repo)))
                .filter_map(|b| b["label"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// Backup directories in a repository (`backup/<stanza>/<label>`).
fn backup_dirs(repo: &Path) -> Vec<PathBuf> {
    let re = regex::Regex::new(r"^\d{8}-\d{6}F(_\d{8}-\d{6}[DI])?$").expect("valid regex");
    let mut v: Vec<PathBuf> = std::fs::read_dir(repo.join("backup").join(STANZA))
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .is_some_and(|n| re.is_match(&n.to_string_lossy()))
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Every regular file under `dir` (symbolic links not followed).
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(t) if t.is_file() => out.push(e.path()),
                _ => {}
            }
        }
    }
    out.sort();
    out
}

fn name_of(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The freshness files of the metrics directory: (file name, contents).
fn freshness(repos: &Repos) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = std::fs::read_dir(&repos.metrics)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| name_of(p).ends_with(".prom"))
                .map(|p| (name_of(&p), std::fs::read_to_string(&p).unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The `synapse_db_backup_last_success_timestamp_seconds` a freshness file states.
fn stated_time(text: &str) -> Option<u64> {
    text.lines()
        .find(|l| l.starts_with("synapse_db_backup_last_success_timestamp_seconds{"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.trim().parse().ok())
}

/// Runs a backup that must succeed; returns the label pgBackRest gave it.
fn backup(s: &Stack, repo: u8, kind: &str, before: &[String]) -> anyhow::Result<Run> {
    let t = Instant::now();
    let repo_s = repo.to_string();
    let r = job(s, &[("BACKUP_REPO", &repo_s)], &[kind])?;
    ensure!(
        r.ok,
        "`docker compose run --rm db-backup {kind}` (BACKUP_REPO={repo}) failed ({:?}):\n{}",
        r.code,
        super::docker::tail(&r.text(), 30)
    );
    let after = labels(&info(s)?, repo);
    let new: Vec<&String> = after.iter().filter(|l| !before.contains(l)).collect();
    let label = match new.as_slice() {
        [one] => (*one).clone(),
        // A resumed backup keeps the label of the interrupted one.
        [] => r
            .stdout
            .lines()
            .find_map(|l| l.split("new backup label = ").nth(1))
            .map(|l| l.trim().to_string())
            .with_context(|| {
                format!("the backup into repo{repo} is not listed by pgbackrest info")
            })?,
        many => bail!("one backup made {} new ones: {many:?}", many.len()),
    };
    Ok(Run {
        repo,
        kind: kind.to_string(),
        label,
        seconds: t.elapsed().as_secs_f64(),
    })
}

/// Runs the job and kills its container (SIGKILL) once pgBackRest has copied a file of the
/// backup. Returns the interrupted backup's directory.
fn killed_backup(s: &Stack, repos: &Repos, kind: &str) -> anyhow::Result<PathBuf> {
    let before: Vec<PathBuf> = backup_dirs(&repos.repo1);
    let name = format!("{}-backup-killed", s.compose.project);
    let mut cmd = s.compose.compose(&[
        "run",
        "--rm",
        "--no-TTY",
        "--name",
        &name,
        "-e",
        "PGBACKREST_LOG_LEVEL_CONSOLE=detail",
        BACKUP,
        kind,
    ]);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().context("cannot run docker compose")?;
    let stdout = child.stdout.take().context("no stdout")?;
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let t = Instant::now();
    let mut seen = Vec::new();
    let copying = loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            // pgBackRest logs each file once it is in the repository.
            Ok(l) if l.contains("DETAIL: backup file ") => break true,
            Ok(l) => seen.push(l),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break false,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
        }
        if t.elapsed() > Duration::from_secs(300) {
            break false;
        }
    };
    if copying {
        let mut k = s.compose.docker();
        k.args(["kill", "--signal", "KILL", &name]);
        let r = super::docker::run_with(k, None, Duration::from_secs(60))?;
        ensure!(r.ok, "docker kill {name}: {}", r.text().trim());
    }
    let status = child.wait()?;
    drop(rx);
    let _ = reader.join();
    ensure!(
        copying,
        "the backup never started copying files (exit {status}):\n{}",
        super::docker::tail(&seen.join("\n"), 20)
    );
    ensure!(
        !status.success(),
        "the killed backup job exited 0: it was not killed"
    );
    let new: Vec<PathBuf> = backup_dirs(&repos.repo1)
        .into_iter()
        .filter(|d| !before.contains(d))
        .collect();
    let [dir] = new.as_slice() else {
        bail!(
            "the killed backup left {} new backup directories: {new:?}",
            new.len()
        );
    };
    ensure!(
        !dir.join("backup.manifest").exists(),
        "{} has its manifest: the backup had finished before the kill",
        dir.display()
    );
    Ok(dir.clone())
}

/// Temporary files: pgBackRest's (`*.pgbackrest.tmp`) in a repository, the script's
/// (`*.prom.tmp`) in the metrics directory.
fn temporary_files(repos: &Repos) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = files_under(&repos.repo1)
        .into_iter()
        .chain(files_under(&repos.repo2))
        .filter(|p| name_of(p).ends_with(".tmp"))
        .collect();
    v.extend(
        files_under(&repos.metrics)
            .into_iter()
            .filter(|p| name_of(p).ends_with(".tmp")),
    );
    v
}

/// No session of the primary is still in a backup started by pgBackRest.
fn primary_backup_sessions(s: &Stack, primary: &str, port: &str) -> anyhow::Result<i64> {
    let r = psql(
        s,
        primary,
        Some(port),
        "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'pgBackRest%'",
    )?;
    ensure!(r.ok, "psql: {}", r.text().trim());
    Ok(r.stdout.trim().parse().unwrap_or(-1))
}

/// A run that must fail without changing the repository or the freshness files.
fn refused(
    s: &Stack,
    repos: &Repos,
    case: &str,
    env: &[(&str, &str)],
    want: &str,
) -> anyhow::Result<Refusal> {
    let before_info = info(s)?;
    let before_dirs = backup_dirs(&repos.repo1);
    let before_fresh = freshness(repos);
    let r = job(s, env, &["diff"])?;
    let text = r.text();
    ensure!(
        !r.ok,
        "{case}: the backup job ran anyway (exit 0):\n{}",
        super::docker::tail(&text, 20)
    );
    let message = text
        .lines()
        .find(|l| l.starts_with("backup: ") && l.contains(want))
        .with_context(|| format!("{case}: the job failed without saying `{want}`:\n{text}"))?
        .to_string();
    ensure!(
        labels(&info(s)?, 1) == labels(&before_info, 1) && backup_dirs(&repos.repo1) == before_dirs,
        "{case}: the refused run changed repo1"
    );
    ensure!(
        freshness(repos) == before_fresh,
        "{case}: the refused run changed the freshness files"
    );
    Ok(Refusal {
        case: case.to_string(),
        message,
        exit_code: r.code,
    })
}

/// The book's retention setting for repository `n`.
fn retention(s: &Stack, n: u8) -> String {
    let conf = s
        .tree
        .get("pgbackrest/pgbackrest.conf")
        .map(|f| f.content.clone())
        .unwrap_or_default();
    let get = |k: String| {
        conf.lines()
            .filter_map(|l| l.trim().strip_prefix(&format!("{k}=")))
            .next_back()
            .map(String::from)
            .unwrap_or_else(|| "?".into())
    };
    format!(
        "{} {}",
        get(format!("repo{n}-retention-full-type")),
        get(format!("repo{n}-retention-full"))
    )
}

/// Every file of the repository is encrypted: (files, encrypted files, plain ones).
fn encryption(repo: &Path) -> (usize, usize, Vec<PathBuf>) {
    let files = files_under(repo);
    let mut plain = Vec::new();
    for f in &files {
        let mut head = [0u8; 8];
        let ok = std::fs::File::open(f)
            .and_then(|mut h| std::io::Read::read_exact(&mut h, &mut head))
            .is_ok()
            && &head == b"Salted__";
        if !ok {
            plain.push(f.clone());
        }
    }
    (files.len(), files.len() - plain.len(), plain)
}

/// The whole backup check. `lagging_write` sends a message through Synapse (it is called
/// while the replica's replay is paused).
pub fn check(
    s: &Stack,
    primary: &str,
    pport: &str,
    rport: &str,
    lagging_write: &mut dyn FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<BackupReport> {
    let repos = Repos::of(s)?;
    let mut runs = Vec::new();

    // A full backup into repo1, as the book runs it.
    let start_info = info(s)?;
    runs.push(backup(s, 1, "full", &labels(&start_info, 1))?);
    let fresh = freshness(&repos);
    ensure!(
        fresh
            .iter()
            .any(|(n, t)| n == "synapse_db_backup_repo1_full.prom" && stated_time(t).is_some()),
        "the full backup wrote no freshness file: {fresh:?}"
    );

    // A differential backup killed in the middle of copying files, then the next run.
    let killed_dir = killed_backup(s, &repos, "diff")?;
    let files_left = files_under(&killed_dir).len();
    let t = Instant::now();
    while primary_backup_sessions(s, primary, pport)? != 0 {
        ensure!(
            t.elapsed() < Duration::from_secs(30),
            "30 s after the kill, the primary still has a pgBackRest session"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let before = labels(&info(s)?, 1);
    let r = job(s, &[], &["diff"])?;
    ensure!(
        r.ok,
        "the backup after the killed one failed ({:?}):\n{}",
        r.code,
        super::docker::tail(&r.text(), 30)
    );
    let resumed = r.text().contains("resumable backup");
    let after = labels(&info(s)?, 1);
    let label = after
        .iter()
        .find(|l| !before.contains(l))
        .cloned()
        .unwrap_or_else(|| name_of(&killed_dir));
    runs.push(Run {
        repo: 1,
        kind: "diff".into(),
        label,
        seconds: r_seconds(&r),
    });
    let dirs = backup_dirs(&repos.repo1);
    for d in &dirs {
        ensure!(
            d.join("backup.manifest").exists() && after.contains(&name_of(d)),
            "after the next run, {} is not a complete backup listed by pgbackrest info ({after:?})",
            d.display()
        );
    }
    let temps = temporary_files(&repos);
    ensure!(temps.is_empty(), "temporary files left: {temps:?}");
    ensure!(
        freshness(&repos)
            .iter()
            .any(|(n, _)| n == "synapse_db_backup_repo1_diff.prom"),
        "the backup after the killed one wrote no freshness file"
    );
    let killed = Killed {
        label: name_of(&killed_dir),
        files_left,
        resumed,
        backup_dirs_after: dirs.len(),
        temporary_files_after: temps.len(),
    };

    // Refusals: a replica whose replay is behind, and a repository without room.
    let pause = psql(
        s,
        super::pg::REPLICA,
        Some(rport),
        "SELECT pg_wal_replay_pause()",
    )?;
    ensure!(pause.ok, "pg_wal_replay_pause(): {}", pause.text().trim());
    let lag = (|| -> anyhow::Result<Refusal> {
        // The pause takes effect at the replica's next look at it: wait for it, then write
        // until the replica is measurably behind.
        let t = Instant::now();
        while super::pg::one(
            s,
            super::pg::REPLICA,
            rport,
            "SELECT pg_get_wal_replay_pause_state()",
        )? != "paused"
            && t.elapsed() < Duration::from_secs(10)
        {
            std::thread::sleep(Duration::from_millis(100));
        }
        let t = Instant::now();
        loop {
            lagging_write()?;
            let replayed = super::pg::one(
                s,
                super::pg::REPLICA,
                rport,
                "SELECT pg_last_wal_replay_lsn()",
            )?;
            let behind: i64 = super::pg::one(
                s,
                primary,
                pport,
                &format!("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '{replayed}')::bigint"),
            )?
            .parse()
            .context("lsn diff")?;
            if behind > 0 {
                break;
            }
            ensure!(
                t.elapsed() < Duration::from_secs(20),
                "with replay paused, the replica is still not behind the primary"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
        refused(
            s,
            &repos,
            "replica replay paused behind the primary, BACKUP_MAX_REPLAY_LAG=0",
            &[("BACKUP_MAX_REPLAY_LAG", "0")],
            "behind the primary",
        )
    })();
    let resume = psql(
        s,
        super::pg::REPLICA,
        Some(rport),
        "SELECT pg_wal_replay_resume()",
    )?;
    ensure!(
        resume.ok,
        "pg_wal_replay_resume(): {}",
        resume.text().trim()
    );
    let mut refusals = vec![lag?];
    super::pg::wait_caught_up(s, primary, pport, rport)?;
    refusals.push(refused(
        s,
        &repos,
        "BACKUP_MIN_FREE larger than the repository's disk",
        &[("BACKUP_MIN_FREE", "900TB")],
        "bytes free",
    )?);

    // The copy that leaves the machine, and pgBackRest's own check of the archive.
    let before2 = labels(&info(s)?, 2);
    runs.push(backup(s, 2, "full", &before2)?);
    let c = job(s, &[], &["check"])?;
    ensure!(
        c.ok,
        "`docker compose run --rm db-backup check` failed:\n{}",
        super::docker::tail(&c.text(), 20)
    );

    // Both repositories: encrypted, file by file.
    let final_info = info(s)?;
    let mut repo_states = Vec::new();
    for n in [1u8, 2] {
        let (files, encrypted, plain) = encryption(repos.repo(n));
        ensure!(
            files > 0,
            "repo{n} ({}) holds no file",
            repos.repo(n).display()
        );
        ensure!(
            plain.is_empty(),
            "repo{n}: files not encrypted (no `Salted__` header): {plain:?}"
        );
        // Per repository where pgBackRest lists them (`repo: [{key, cipher}]`), else the stanza's.
        let cipher = final_info[0]["repo"]
            .as_array()
            .and_then(|a| a.iter().find(|r| r["key"].as_u64() == Some(u64::from(n))))
            .and_then(|r| r["cipher"].as_str())
            .or_else(|| final_info[0]["cipher"].as_str())
            .unwrap_or("")
            .to_string();
        ensure!(
            cipher != "none" && !cipher.is_empty(),
            "pgbackrest info: cipher {cipher:?}"
        );
        repo_states.push(RepoState {
            repo: n,
            cipher,
            backups: labels(&final_info, n).len(),
            files,
            encrypted_files: encrypted,
            retention: retention(s, n),
        });
    }
    let freshness_files = freshness(&repos)
        .into_iter()
        .map(|(n, t)| format!("{n} = {}", stated_time(&t).unwrap_or(0)))
        .collect();
    Ok(BackupReport {
        runs,
        killed,
        refusals,
        repos: repo_states,
        check_passed: true,
        freshness_files,
    })
}

/// pgBackRest's own duration of a backup (`completed successfully (8307ms)`), else 0.
fn r_seconds(r: &super::docker::Ran) -> f64 {
    r.stdout
        .lines()
        .find_map(|l| l.split("completed successfully (").nth(1))
        .and_then(|x| x.strip_suffix("ms)"))
        .and_then(|x| x.parse::<f64>().ok())
        .map_or(0.0, |ms| ms / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freshness_files_state_a_time() {
        let t = "# HELP x\n# TYPE synapse_db_backup_last_success_timestamp_seconds gauge\nsynapse_db_backup_last_success_timestamp_seconds{repo=\"1\",type=\"full\"} 1796158800\n";
        assert_eq!(stated_time(t), Some(1_796_158_800));
        assert_eq!(stated_time("nothing"), None);
    }

    #[test]
    fn info_labels_by_repository() {
        let v: serde_json::Value = serde_json::from_str(
            r#"[{"name":"synapse","cipher":"aes-256-cbc","backup":[
                {"label":"20261201-221504F","database":{"id":1,"repo-key":1}},
                {"label":"20261201-221504F_20261201-221600D","database":{"id":1,"repo-key":1}},
                {"label":"20261201-221700F","database":{"id":1,"repo-key":2}}]}]"#,
        )
        .unwrap();
        assert_eq!(labels(&v, 1).len(), 2);
        assert_eq!(labels(&v, 2), ["20261201-221700F"]);
        assert!(labels(&serde_json::Value::Null, 1).is_empty());
    }
}
