//! The actions: `up` (the deployment left running), `smoke` (the client on a running stack),
//! `down`, and `test` (all of it, with a report).

use super::report::{Report, Step};
use super::{ImageChoice, Paths, Stack, bring_up, checks, client, daytwo, kills, prepare, routing};
use anyhow::Context;
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

/// `stack up`: extract, choose the images, `docker compose up --wait`; the stack keeps running.
#[allow(clippy::print_stdout)] // the status JSON is the command's output
pub fn up(root: &Path, paths: &Paths, images: ImageChoice) -> anyhow::Result<ExitCode> {
    let s = prepare(root, paths, images)?;
    let b = bring_up(&s)?;
    println!(
        "{}",
        serde_json::to_string_pretty(&serde_json::json!({
            "ok": true,
            "project": s.compose.project,
            "directory": s.compose.dir,
            "compose_file": s.compose.compose_file_env(),
            "images": s.images,
            "bring_up_seconds": b.seconds,
            "ready_at": b.ready_at,
        }))?
    );
    eprintln!(
        "stack: up. In {} run `docker compose` with COMPOSE_PROJECT_NAME={} COMPOSE_FILE={}",
        s.compose.dir.display(),
        s.compose.project,
        s.compose.compose_file_env()
    );
    Ok(ExitCode::SUCCESS)
}

/// `stack down`: `docker compose down --volumes` on what `stack up` started.
pub fn down(paths: &Paths) -> anyhow::Result<ExitCode> {
    let compose = super::running(paths)?;
    let left = compose.down()?;
    let _ = std::fs::remove_file(paths.state());
    if left.is_empty() {
        eprintln!("stack: down: no container, volume or network left");
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("stack: down: left behind: {}", left.join("; "));
        Ok(ExitCode::from(1))
    }
}

/// `stack smoke`: the Matrix client and the routing comparison against the stack `stack up`
/// started (or, with `XTASK_STACK_EXTERNAL=DIR`, a deployment in DIR that a reader's own
/// `docker compose up` started: the GitHub workflow before it ran the whole test).
pub fn smoke(root: &Path, paths: &Paths, report_file: Option<&Path>) -> anyhow::Result<ExitCode> {
    let t0 = Instant::now();
    let mut report = Report::default();
    let compose = match std::env::var_os(EXTERNAL_ENV) {
        Some(dir) => {
            let dir = std::path::PathBuf::from(dir).canonicalize()?;
            super::docker::Compose {
                project: super::docker::project_name(&dir),
                files: vec![dir.join(super::COMPOSE_FILE)],
                dir,
            }
        }
        None => super::running(paths)?,
    };
    let book =
        crate::book::load(root).map_err(|d| super::diag_error("cannot load the book", &d))?;
    let tree = crate::extract::assemble(&book, &Default::default())
        .map_err(|d| super::diag_error("cannot extract the book", &d))?;
    let secret = client::shared_secret(&compose.dir)?;
    let model = compose.model()?;
    let nginx = model
        .services
        .iter()
        .find(|(_, s)| {
            s.image
                .as_deref()
                .is_some_and(|i| super::image_name(i) == "nginx")
        })
        .map(|(n, _)| n.clone())
        .context("no nginx service")?;
    let addr = model.services[&nginx]
        .published()
        .first()
        .map(|(ip, p)| format!("{}:{p}", if ip == "0.0.0.0" { "127.0.0.1" } else { ip }))
        .context("nginx publishes no port")?;
    let log = routing::NginxLog::mark(&compose, &nginx);
    let mut c = client::Client::new(&addr);
    let ts = Instant::now();
    let state = client::smoke(&mut c, &secret, &mut report);
    report.timings.smoke = ts.elapsed().as_secs_f64();
    match &state {
        Ok(state) => client::route_samples(&mut c, &book, state, &mut report),
        Err(e) => report.push(Step::fail("smoke", format!("{e:#}"), 0.0)),
    }
    routing::compare_step(&tree, &log, &c.sent, &mut report);
    report.timings.total = t0.elapsed().as_secs_f64();
    finish(report, report_file, None)
}

/// Names a deployment directory started by something else (`docker compose`) for `stack smoke`.
pub const EXTERNAL_ENV: &str = "XTASK_STACK_EXTERNAL";

/// Writes the report (and, when the run passed and `bless` names a path, the book's copy).
fn finish(
    mut report: Report,
    report_file: Option<&Path>,
    bless: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    report.ok = !report.steps.is_empty() && report.steps.iter().all(|s| s.ok);
    let text = serde_json::to_string_pretty(&report)?;
    if let Some(b) = bless {
        if report.ok {
            std::fs::write(b, format!("{text}\n"))
                .with_context(|| format!("cannot write {}", b.display()))?;
            eprintln!("stack: blessed: the report is now {}", b.display());
        } else {
            eprintln!("stack: not blessed: the run failed");
        }
    }
    if let Some(f) = report_file {
        if let Some(dir) = f.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(f, &text).with_context(|| format!("cannot write {}", f.display()))?;
    }
    eprint!("{}", report.summary());
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `stack test`: up, checks, smoke, kills, routing, sql, replica, log scan, down; then the
/// variants, then the upgrade from the previous Synapse release.
pub fn test(
    root: &Path,
    paths: &Paths,
    images: ImageChoice,
    report_file: Option<&Path>,
    bless: bool,
) -> anyhow::Result<ExitCode> {
    let t0 = Instant::now();
    let mut report = Report::default();
    let s = prepare(root, paths, images)?;
    report.engine = "docker".into();
    report.machine = super::report::Machine::this();
    report.compose_version = super::docker::compose_version().unwrap_or_default();
    report.images = s.images.clone();
    for i in &s.images {
        eprintln!(
            "stack: image {} -> {}{}",
            i.official,
            i.used,
            i.standin
                .as_deref()
                .map(|l| format!(" ({l})"))
                .unwrap_or_default()
        );
    }
    let windows = test_inner(&s, &mut report, bless);
    // Scan logs before teardown (shutdown noise is not a finding).
    let ts = Instant::now();
    let (findings, _) = checks::scan_logs(&s, &windows);
    report.push(Step::new(
        "logs have no ERROR or traceback",
        findings.is_empty(),
        findings.join("\n"),
        ts.elapsed(),
    ));
    checks::save_logs(&s);
    let ts = Instant::now();
    let left = s.compose.down().unwrap_or_else(|e| vec![format!("{e:#}")]);
    let _ = std::fs::remove_file(paths.state());
    report.timings.teardown = ts.elapsed().as_secs_f64();
    report.push(Step::new(
        "docker compose down -v leaves no container, volume or network",
        left.is_empty(),
        left.join("; "),
        ts.elapsed(),
    ));
    let blessed = bless.then(|| {
        s.book
            .root
            .join(&s.book.src)
            .join(crate::preprocess::evidence::REPORT_PATH)
    });
    // The variants publish the same ports: the main deployment's locks go first.
    drop(s);
    let tv = Instant::now();
    super::variants::run_all(root, paths, images, &mut report);
    report.timings.variants = tv.elapsed().as_secs_f64();
    super::upgrade::run(root, paths, images, &mut report);
    report.timings.total = t0.elapsed().as_secs_f64();
    let code = finish(report, report_file, blessed.as_deref())?;
    Ok(code)
}

fn test_inner(s: &Stack, report: &mut Report, bless: bool) -> Vec<checks::Window> {
    // Before the stack is up: its one-off containers use the same fixed network.
    daytwo::prepare_script(s, report);
    let ts = Instant::now();
    match bring_up(s) {
        Ok(b) => {
            report.timings.bring_up = b.seconds;
            report.push(Step::new(
                "docker compose up --wait: every healthcheck green",
                true,
                format!("{:.1} s", b.seconds),
                ts.elapsed(),
            ));
            report.bring_up = Some(b);
        }
        Err(e) => {
            report.push(Step::fail(
                "docker compose up --wait: every healthcheck green",
                format!("{e:#}"),
                ts.elapsed().as_secs_f64(),
            ));
            return vec![];
        }
    }
    checks::nginx_t(s, report);
    checks::synapse_config(s, report);

    let nginx = s.nginx_service().unwrap_or_else(|| "nginx".into());
    let log = routing::NginxLog::mark(&s.compose, &nginx);
    let Some(secret) = client::shared_secret_step(s, report) else {
        return vec![];
    };
    let addr = match s.client_addr() {
        Ok(a) => a,
        Err(e) => {
            report.push(Step::fail(
                "find nginx's published port",
                format!("{e:#}"),
                0.0,
            ));
            return vec![];
        }
    };
    let mut c = client::Client::new(&addr);
    let ts = Instant::now();
    let state = client::smoke(&mut c, &secret, report);
    report.timings.smoke = ts.elapsed().as_secs_f64();
    let mut windows = Vec::new();
    match state {
        Ok(mut state) => {
            client::route_samples(&mut c, &s.book, &state, report);
            routing::compare_step(&s.tree, &log, &c.sent, report);
            daytwo::admin_access(s, &addr, report);
            daytwo::token_redaction(s, &addr, &state.alice.token, report);
            daytwo::limits(s, report);
            daytwo::well_known(s, &addr, report);
            daytwo::metrics(s, report);
            super::outer::check(s, &secret, report);
            checks::sql_blocks(s, report);
            let t = Instant::now();
            let mut console_windows = Vec::new();
            report.console = Some(super::console::run(s, report, bless, &mut console_windows));
            report.timings.console = t.elapsed().as_secs_f64();
            let restore_windows = replica_check(s, &mut c, &mut state, report);
            windows = kills::kill_table(&mut c, s, &mut state, report);
            windows.extend(restore_windows);
            windows.extend(console_windows);
        }
        Err(e) => {
            report.push(Step::fail(
                "smoke",
                format!("{e:#}"),
                ts.elapsed().as_secs_f64(),
            ));
            routing::compare_step(&s.tree, &log, &c.sent, report);
        }
    }
    windows
}

/// The replica, backup and restore check of the backup chapters, when the book has a
/// replica. Returns the windows in which the restore made services log their shutdown.
fn replica_check(
    s: &Stack,
    c: &mut client::Client,
    st: &mut client::State,
    report: &mut Report,
) -> Vec<checks::Window> {
    if !s.model.services.contains_key(super::replica::REPLICA) {
        return Vec::new();
    }
    let t = Instant::now();
    let name = "replica streams; pgBackRest backups from it; point-in-time and full restores";
    match super::replica::check(s, c, st) {
        Ok((r, windows)) => {
            let detail = format!(
                "{} ({}), {} B behind; Synapse as `{}` (superuser: {}); {} backups, a killed one \
                 {}, {} refusals, {} encrypted files; point in time: first message {}, second {}, \
                 {} bad checksums in {} blocks; restore: {} tables / {} rows equal, one-time keys \
                 {} -> {}, {} messages read back",
                r.state,
                r.wal_receiver_status,
                r.replay_bytes_behind,
                r.roles.synapse_role,
                r.roles.rolsuper,
                r.backup.runs.len(),
                if r.backup.killed.resumed {
                    "resumed"
                } else {
                    "removed"
                },
                r.backup.refusals.len(),
                r.backup
                    .repos
                    .iter()
                    .map(|x| x.encrypted_files)
                    .sum::<usize>(),
                if r.point_in_time.first_present {
                    "there"
                } else {
                    "missing"
                },
                if r.point_in_time.second_present {
                    "there"
                } else {
                    "absent"
                },
                r.point_in_time.checksums.bad,
                r.point_in_time.checksums.blocks,
                r.restore.tables_compared,
                r.restore.rows_compared,
                r.restore.one_time_keys_restored,
                r.restore.one_time_keys_after,
                r.restore.messages_read,
            );
            report.replica = serde_json::to_value(&r).ok();
            report.push(Step::new(name, true, detail, t.elapsed()));
            windows
        }
        Err(e) => {
            report.push(Step::new(name, false, format!("{e:#}"), t.elapsed()));
            Vec::new()
        }
    }
}
