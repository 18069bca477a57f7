//! The four actions: `up` (detached, supervised), `smoke`, `down`, and `test` (all of it, in
//! one process, with a report).

use super::report::{Report, Step};
use super::{Paths, Prepared, bring_up, checks, client, prepare, procs, routing};
use anyhow::{Context, bail};
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Installs what the stack needs when it is missing (`cargo xtask setup debian synapse`; a
/// quick check when everything is there).
fn ensure_installed() -> anyhow::Result<()> {
    for (part, outcome) in crate::setup::run_parts(&["debian".into(), "synapse".into()])? {
        if let crate::setup::Outcome::Installed(what) = outcome {
            eprintln!("stack: setup {part}: installed {what}");
        }
    }
    Ok(())
}

/// `stack up`: starts a detached supervisor (this program again) and waits until it reports the
/// stack healthy or failed.
#[allow(clippy::print_stdout)] // the status JSON is the command's output
pub fn up(root: &Path, paths: &Paths, supervisor_env: &str) -> anyhow::Result<ExitCode> {
    ensure_installed()?;
    let base = paths
        .run
        .parent()
        .expect("run dir has a parent")
        .to_path_buf();
    std::fs::create_dir_all(&base)?;
    let status_file = base.join("up-status.json");
    let _ = std::fs::remove_file(&status_file);
    let log = std::fs::File::create(base.join("supervisor.log"))?;
    let exe = std::env::current_exe()?;
    use std::os::unix::process::CommandExt as _;
    let child = std::process::Command::new(exe)
        .args(["stack", "up", "--book"])
        .arg(root)
        .env(supervisor_env, "1")
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()?;
    let pid = child.id();
    drop(child);
    let t = Instant::now();
    loop {
        if let Ok(text) = std::fs::read_to_string(&status_file) {
            println!("{text}");
            let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
            return Ok(if v["ok"].as_bool() == Some(true) {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            });
        }
        if !procs::alive(pid) {
            bail!(
                "the stack supervisor exited early; see {}",
                base.join("supervisor.log").display()
            );
        }
        if t.elapsed() > Duration::from_secs(300) {
            bail!(
                "the stack did not come up within 300 s; see {}",
                base.join("supervisor.log").display()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The detached supervisor behind `stack up`: brings the stack up, keeps restarting what the
/// restart policies say, and when `stack down` asks (the `stop` file) stops everything.
pub fn supervise(root: &Path, paths: &Paths) -> anyhow::Result<ExitCode> {
    let base = paths
        .run
        .parent()
        .expect("run dir has a parent")
        .to_path_buf();
    let status_file = base.join("up-status.json");
    let p = match prepare(root, paths) {
        Ok(p) => p,
        Err(e) => {
            std::fs::write(
                &status_file,
                serde_json::json!({"ok": false, "error": format!("{e:#}")}).to_string(),
            )?;
            return Err(e);
        }
    };
    std::fs::write(
        paths.run.join("supervisor.pid"),
        std::process::id().to_string(),
    )?;
    let watcher = p.runner.watch(true);
    let result = bring_up(&p, true);
    let status = match &result {
        Ok(b) => {
            serde_json::json!({"ok": true, "bring_up_seconds": b.seconds, "ready_at": b.ready_at, "run_dir": paths.run})
        }
        Err(e) => serde_json::json!({"ok": false, "error": format!("{e:#}")}),
    };
    std::fs::write(&status_file, serde_json::to_string_pretty(&status)?)?;
    if result.is_ok() {
        // `stack down` writes run/stop (no signal handler needed).
        let stop = paths.run.join("stop");
        while !stop.exists() {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    for e in p.runner.stop_all() {
        eprintln!("stack: {e}");
    }
    let _ = watcher.join();
    let _ = std::fs::remove_file(paths.run.join("supervisor.pid"));
    Ok(if result.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `stack down`: stops what `stack up` started.
pub fn down(paths: &Paths) -> anyhow::Result<ExitCode> {
    for e in procs::stop_from_state(&paths.state())? {
        eprintln!("stack: {e}");
    }
    let left = verify_clean(paths);
    if left.is_empty() {
        eprintln!("stack: down: no process, mount or socket left");
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("stack: down: left behind: {}", left.join("; "));
        Ok(ExitCode::from(1))
    }
}

/// What a run left behind (empty when clean).
pub fn verify_clean(paths: &Paths) -> Vec<String> {
    let layout = paths.layout();
    let mut left = Vec::new();
    let pids = procs::processes_rooted_in(&layout.root_mnt);
    if !pids.is_empty() {
        left.push(format!("processes {pids:?}"));
    }
    let mounts = procs::mounts_under(&paths.run);
    if !mounts.is_empty() {
        left.push(format!("mounts {mounts:?}"));
    }
    let mut socks = Vec::new();
    find_sockets(&paths.run, &mut socks);
    if !socks.is_empty() {
        left.push(format!("sockets {socks:?}"));
    }
    left
}

fn find_sockets(dir: &Path, out: &mut Vec<String>) {
    use std::os::unix::fs::FileTypeExt as _;
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_socket() {
            out.push(e.path().display().to_string());
        } else if ft.is_dir() && !ft.is_symlink() {
            find_sockets(&e.path(), out);
        }
    }
}

/// `stack smoke`: the Matrix client and the routing comparison against a running stack.
///
/// With `XTASK_STACK_EXTERNAL=DIR` (the GitHub Compose workflow), the client drives a deployment
/// this process did not start: the one extracted into DIR and started by `docker compose`. Its
/// secrets and published port are read from DIR; the routing comparison needs our own nginx log,
/// so it is reported as skipped there.
pub fn smoke(root: &Path, paths: &Paths, report_file: Option<&Path>) -> anyhow::Result<ExitCode> {
    let external = std::env::var_os(EXTERNAL_ENV).map(std::path::PathBuf::from);
    if external.is_none() && !paths.state().exists() {
        bail!("no running stack: run `cargo xtask stack up` first");
    }
    let tree_dir = external.clone().unwrap_or_else(|| paths.tree());
    let t0 = Instant::now();
    let mut report = Report::default();
    let book =
        crate::book::load(root).map_err(|d| super::diag_error("cannot load the book", &d))?;
    let tree = crate::extract::assemble(&book, &Default::default())
        .map_err(|d| super::diag_error("cannot extract the book", &d))?;
    let secret = client::shared_secret(&tree_dir)?;
    let nginx_log = paths.logs().join("nginx.log");
    let log_start = std::fs::metadata(&nginx_log).map(|m| m.len()).unwrap_or(0);
    let project = super::compose::load(&tree_dir, "docker-compose.yml")?;
    let mut c = client::Client::new(&super::client_addr(&project));
    let ts = Instant::now();
    let state = client::smoke(&mut c, &secret, &mut report);
    report.timings.smoke = ts.elapsed().as_secs_f64();
    if let Ok(state) = &state {
        client::route_samples(&mut c, &book, state, &mut report);
    }
    if let Err(e) = &state {
        report.push(Step::fail("smoke", format!("{e:#}"), 0.0));
    }
    if external.is_some() {
        let detail = format!(
            "skipped: {} requests went to an external deployment whose nginx log is not ours",
            c.sent.len()
        );
        report.push(Step::new(
            "routing compared with nginx's log",
            true,
            detail,
            Default::default(),
        ));
    } else {
        routing::compare_step(&tree, &nginx_log, log_start, &c.sent, &mut report);
    }
    report.timings.total = t0.elapsed().as_secs_f64();
    finish(report, report_file)
}

/// Names a deployment directory started by something else (`docker compose`) for `stack smoke`.
pub const EXTERNAL_ENV: &str = "XTASK_STACK_EXTERNAL";

fn finish(mut report: Report, report_file: Option<&Path>) -> anyhow::Result<ExitCode> {
    report.ok = report.steps.iter().all(|s| s.ok);
    let text = serde_json::to_string_pretty(&report)?;
    if let Some(f) = report_file {
        std::fs::write(f, &text).with_context(|| format!("cannot write {}", f.display()))?;
    }
    eprint!("{}", report.summary());
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `stack test`: up, checks, smoke, fault, routing, sql, log scan, down, in one process.
pub fn test(root: &Path, paths: &Paths, report_file: Option<&Path>) -> anyhow::Result<ExitCode> {
    let t0 = Instant::now();
    ensure_installed()?;
    let mut report = Report::default();
    let p = prepare(root, paths)?;
    let watcher = p.runner.watch(true);
    let result = test_inner(&p, &mut report);
    let exclude = match result {
        Ok(x) => x,
        Err(e) => {
            report.push(Step::fail("run", format!("{e:#}"), 0.0));
            Default::default()
        }
    };
    // Scan logs before teardown (shutdown noise is not a finding).
    let ts = Instant::now();
    let findings = checks::scan_logs(&p.runner, &exclude);
    report.push(Step::new(
        "logs have no ERROR or traceback",
        findings.is_empty(),
        findings.join("\n"),
        ts.elapsed(),
    ));

    let ts = Instant::now();
    let events = p.runner.stop_all();
    let _ = watcher.join();
    let left = verify_clean(paths);
    report.timings.teardown = ts.elapsed().as_secs_f64();
    report.push(Step::new(
        "teardown leaves no process, mount or socket",
        left.is_empty(),
        if left.is_empty() {
            events.join("; ")
        } else {
            left.join("; ")
        },
        ts.elapsed(),
    ));
    report.timings.total = t0.elapsed().as_secs_f64();
    finish(report, report_file)
}

fn test_inner(p: &Prepared, report: &mut Report) -> anyhow::Result<checks::Exclusions> {
    let ts = Instant::now();
    let up = bring_up(p, true);
    match &up {
        Ok(b) => {
            report.timings.bring_up = b.seconds;
            report.bring_up = Some(b.clone());
            report.push(Step::new(
                "bring-up: every healthcheck green",
                true,
                format!("{:.1} s", b.seconds),
                ts.elapsed(),
            ));
        }
        Err(e) => {
            report.push(Step::fail(
                "bring-up: every healthcheck green",
                format!("{e:#}"),
                ts.elapsed().as_secs_f64(),
            ));
            return Ok(Default::default());
        }
    }
    checks::nginx_t(p, report);
    checks::synapse_config(p, report);

    let nginx_log = p.paths.logs().join("nginx.log");
    let log_start = std::fs::metadata(&nginx_log).map(|m| m.len()).unwrap_or(0);
    let secret = client::shared_secret(&p.paths.tree())?;
    let mut c = client::Client::new(&super::client_addr(&p.runner.project));
    let ts = Instant::now();
    let state = client::smoke(&mut c, &secret, report);
    report.timings.smoke = ts.elapsed().as_secs_f64();
    let mut exclude = checks::Exclusions::new();
    let mut state_for_replica = None;
    match state {
        Ok(mut state) => {
            exclude = client::fault(&mut c, p, &mut state, report);
            client::route_samples(&mut c, &p.book, &state, report);
            state_for_replica = Some(state);
        }
        Err(e) => report.push(Step::fail(
            "smoke",
            format!("{e:#}"),
            ts.elapsed().as_secs_f64(),
        )),
    }
    routing::compare_step(&p.tree, &nginx_log, log_start, &c.sent, report);
    checks::sql_blocks(p, report);
    replica_check(p, &mut c, state_for_replica.as_ref(), report);
    Ok(exclude)
}

/// The PostgreSQL replica, backup and restore check of the book's backup chapters
/// ([`crate::pgcheck::replica`]), on the running stack: writes go through Synapse (a message).
fn replica_check(
    p: &Prepared,
    c: &mut client::Client,
    st: Option<&client::State>,
    report: &mut Report,
) {
    if p.runner.project.service("db-replica").is_none() {
        return; // the book has no replica
    }
    let t = Instant::now();
    let Some(st) = st else {
        report.push(Step::fail(
            "replica streams, backup from it restores",
            "no Synapse users to write with",
            0.0,
        ));
        return;
    };
    let Some(bindir) = crate::tools::pg_bindir() else {
        report.push(Step::fail(
            "replica streams, backup from it restores",
            "no PostgreSQL binaries",
            0.0,
        ));
        return;
    };
    let env = crate::pgcheck::replica::ReplicaEnv {
        tree: p.paths.tree(),
        sockets: p.paths.layout().volumes.join("sockets"),
        // Under the system's temporary directory, not the run directory: the restored cluster
        // runs as the postgres user, who may not be able to enter the checkout (under /root).
        work: std::env::temp_dir().join(format!("xtask-pgcheck-{}", std::process::id())),
        bindir,
        extra_settings: vec![("fsync".into(), "off".into())],
    };
    let mut n = 0;
    let mut write = || -> anyhow::Result<()> {
        n += 1;
        client::send_text(
            c,
            &st.alice,
            &st.room_id,
            &format!("written for the replica check {n}"),
        )
        .map(|_| ())
    };
    let result = crate::pgcheck::replica::check(&env, &mut write);
    let _ = std::fs::remove_dir_all(&env.work);
    match result {
        Ok(r) => {
            let detail = format!(
                "{} ({}), {} B behind; {} backup(s), {} tables / {} rows compared after restore",
                r.state,
                r.wal_receiver_status,
                r.replay_bytes_behind,
                r.backups_run,
                r.tables_compared,
                r.rows_compared
            );
            report.replica = serde_json::to_value(&r).ok();
            report.push(Step::new(
                "replica streams, backup from it restores",
                true,
                detail,
                t.elapsed(),
            ));
        }
        Err(e) => report.push(Step::new(
            "replica streams, backup from it restores",
            false,
            format!("{e:#}"),
            t.elapsed(),
        )),
    }
}
