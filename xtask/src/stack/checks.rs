//! Checks run against the live stack, each inside the service's own private root: real
//! `nginx -t`, `python -m synapse.config` on main and every worker with the service's own
//! config paths, every `sql` block of the book against the live database, and the scan of
//! every process's log for errors and tracebacks (done before teardown: shutdown noise is
//! not a finding).

use super::Prepared;
use super::procs::Runner;
use super::report::{Report, Step};
use crate::book::BlockKind;
use std::collections::BTreeMap;
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Instant;

/// Runs `argv` inside the root of service `svc`, with its environment; (success, output).
pub fn run_in(
    runner: &Runner,
    svc: &str,
    argv: &[String],
    stdin: Option<&str>,
) -> anyhow::Result<(bool, String)> {
    let pid = runner
        .pid(svc)
        .ok_or_else(|| anyhow::anyhow!("service {svc} is not running"))?;
    let full = super::ns::enter(pid, argv);
    let mut child = Command::new(&full[0])
        .args(&full[1..])
        .env_clear()
        .envs(&runner.launches[svc].env)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    if let (Some(text), Some(mut si)) = (stdin, child.stdin.take()) {
        si.write_all(text.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    Ok((out.status.success(), text))
}

fn services_with(runner: &Runner, emulation: &str) -> Vec<String> {
    runner
        .launches
        .iter()
        .filter(|(_, l)| l.emulation == emulation)
        .map(|(n, _)| n.clone())
        .collect()
}

/// `nginx -t` inside the nginx service's root (its own config at the image's path).
pub fn nginx_t(p: &Prepared, report: &mut Report) {
    for svc in services_with(&p.runner, "nginx") {
        let t = Instant::now();
        let mut argv = vec!["nginx".to_string(), "-t".into()];
        // keep a `-c FILE` / `-p DIR` the service's command gives
        let cmd = &p.runner.launches[&svc].argv;
        for flag in ["-c", "-p"] {
            if let Some(i) = cmd.iter().position(|a| a == flag)
                && let Some(v) = cmd.get(i + 1)
            {
                argv.push(flag.into());
                argv.push(v.clone());
            }
        }
        let (ok, out) =
            run_in(&p.runner, &svc, &argv, None).unwrap_or_else(|e| (false, format!("{e:#}")));
        let ok = ok && out.contains("test is successful");
        report.push(Step::new(
            format!("nginx -t ({svc})"),
            ok,
            out.trim().to_string(),
            t.elapsed(),
        ));
    }
}

/// `python -m synapse.config` with each Synapse service's own config paths, as its own user.
pub fn synapse_config(p: &Prepared, report: &mut Report) {
    let t = Instant::now();
    let mut jobs = Vec::new();
    for svc in services_with(&p.runner, "synapse") {
        let argv = &p.runner.launches[&svc].argv;
        let Some(py) = argv
            .iter()
            .position(|a| a.ends_with("/python") || a.ends_with("/python3"))
        else {
            continue;
        };
        let mut cmd: Vec<String> = argv[..=py].to_vec();
        cmd.extend(["-m".to_string(), "synapse.config".to_string()]);
        for c in super::emulate::synapse_config_paths(argv) {
            cmd.push("-c".into());
            cmd.push(c);
        }
        jobs.push((svc, cmd));
    }
    let n = jobs.len();
    // In parallel: each is a Python start-up of about 2 s.
    let results: Vec<(String, anyhow::Result<(bool, String)>)> = std::thread::scope(|s| {
        let handles: Vec<_> = jobs
            .iter()
            .map(|(svc, cmd)| (svc.clone(), s.spawn(|| run_in(&p.runner, svc, cmd, None))))
            .collect();
        handles
            .into_iter()
            .map(|(svc, h)| {
                (
                    svc,
                    h.join()
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("panicked"))),
                )
            })
            .collect()
    });
    let mut failures = Vec::new();
    for (svc, r) in results {
        match r {
            Ok((true, out)) if out.contains("Config parses OK!") => {}
            Ok((_, out)) => failures.push(format!("{svc}: {}", out.trim())),
            Err(e) => failures.push(format!("{svc}: {e:#}")),
        }
    }
    report.push(Step::new(
        format!("python -m synapse.config on main and every worker ({n})"),
        failures.is_empty() && n > 0,
        if failures.is_empty() {
            format!("{n} configs parse")
        } else {
            failures.join("\n")
        },
        t.elapsed(),
    ));
}

/// Every `sql` block of the book, run with psql inside the database service's root, as the
/// image's `POSTGRES_USER`, on `POSTGRES_DB`, over the server's Unix socket.
pub fn sql_blocks(p: &Prepared, report: &mut Report) {
    let t = Instant::now();
    // The database Synapse uses: a postgres service a Synapse service depends on (not a replica).
    let synapse_deps: Vec<String> = services_with(&p.runner, "synapse")
        .iter()
        .filter_map(|s| p.runner.project.service(s))
        .flat_map(|s| s.depends_on.iter().map(|(d, _)| d.clone()))
        .collect();
    let mut dbs = services_with(&p.runner, "postgres");
    dbs.sort_by_key(|d| !synapse_deps.contains(d));
    let Some(db) = dbs.into_iter().find(|s| p.runner.pid(s).is_some()) else {
        report.push(Step::new(
            "every sql block runs on the live database",
            false,
            "no running postgres service",
            t.elapsed(),
        ));
        return;
    };
    let env = &p.runner.launches[&db].env;
    let user = env
        .get("POSTGRES_USER")
        .cloned()
        .unwrap_or_else(|| "postgres".into());
    let dbname = env
        .get("POSTGRES_DB")
        .cloned()
        .unwrap_or_else(|| user.clone());
    let host = socket_dir(p);
    let mut failures = Vec::new();
    let mut run: usize = 0;
    let pw = format!(
        "PGPASSWORD={}",
        env.get("POSTGRES_PASSWORD").cloned().unwrap_or_default()
    );
    let psql: Vec<String> = [
        "env",
        &pw,
        "psql",
        "-X",
        "-q",
        "-v",
        "ON_ERROR_STOP=1",
        "-h",
        &host,
        "-U",
        &user,
        "-d",
        &dbname,
        "-f",
        "-",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // First what the PostgreSQL chapters tell the reader to do once (a console step): create
    // the statistics extensions the queries read.
    match run_in(
        &p.runner,
        &db,
        &psql,
        Some(crate::pgcheck::sql::ENABLE_EXTENSIONS),
    ) {
        Ok((true, _)) => {}
        Ok((false, out)) => failures.push(format!("creating the extensions: {}", out.trim())),
        Err(e) => failures.push(format!("creating the extensions: {e:#}")),
    }
    for b in p.book.blocks().filter(|b| b.kind == BlockKind::Sql) {
        let argv = psql.clone();
        run += 1;
        match run_in(&p.runner, &db, &argv, Some(&b.text)) {
            Ok((true, _)) => {}
            Ok((false, out)) => {
                let loc = b.fence_loc();
                failures.push(format!("{}:{}: {}", loc.file, loc.line, out.trim()));
            }
            Err(e) => failures.push(format!("{e:#}")),
        }
    }
    report.sql_blocks_run = run.saturating_sub(failures.len());
    report.push(Step::new(
        format!("every sql block runs on the live database ({run})"),
        failures.is_empty(),
        if failures.is_empty() {
            format!("{run} blocks ran without error")
        } else {
            failures.join("\n")
        },
        t.elapsed(),
    ));
}

/// The first `unix_socket_directories` entry of the tree's postgresql.conf files.
fn socket_dir(p: &Prepared) -> String {
    let re = regex::Regex::new(r#"(?m)^\s*unix_socket_directories\s*=\s*'([^',]+)"#)
        .expect("valid regex");
    p.tree
        .files
        .values()
        .filter(|f| f.path.ends_with(".conf") && f.path.contains("postgres"))
        .find_map(|f| re.captures(&f.content).map(|c| c[1].trim().to_string()))
        .unwrap_or_else(|| "/var/run/postgresql".into())
}

/// Error lines that are part of normal operation, each with the reason.
const BENIGN: &[(&str, &str)] = &[
    // Synapse runs its transactions at REPEATABLE READ and retries serialization failures and
    // deadlocks (synapse/storage/database.py: `engine.is_deadlock` -> "[TXN DEADLOCK]" warning,
    // retry); PostgreSQL still logs each one as an ERROR.
    // ("... due to concurrent update" or "... due to concurrent delete": both SQLSTATE 40001)
    (
        "could not serialize access due to concurrent ",
        "SQLSTATE 40001, retried by Synapse",
    ),
    ("deadlock detected", "SQLSTATE 40P01, retried by Synapse"),
    // A client (a healthcheck) connecting while a server starts or recovers: SQLSTATE 57P03.
    (
        "the database system is starting up",
        "a connection attempt during start-up, refused as expected",
    ),
];

/// Lines that mean something went wrong, in any of the processes' logs.
fn is_finding(line: &str) -> bool {
    if BENIGN.iter().any(|(m, _)| line.contains(m)) {
        return false;
    }
    const MARKS: &[&str] = &[
        " ERROR ",
        "- ERROR -",
        "ERROR:",
        "Traceback (most recent call last)",
        "CRITICAL",
        "FATAL:",
        "PANIC:",
        "[emerg]",
        "[alert]",
        "[crit]",
        "[error]",
    ];
    MARKS.iter().any(|m| line.contains(m))
}

/// Byte ranges of logs not to scan (service -> (from, to)), e.g. the window of a planned fault.
pub type Exclusions = BTreeMap<String, (u64, u64)>;

/// Scans every service's log; returns the findings (service, line).
pub fn scan_logs(runner: &Runner, exclude: &Exclusions) -> Vec<String> {
    let mut out = Vec::new();
    for name in runner.launches.keys() {
        let Ok(bytes) = std::fs::read(runner.log_path(name)) else {
            continue;
        };
        let mut offset = 0u64;
        for line in String::from_utf8_lossy(&bytes).split_inclusive('\n') {
            let start = offset;
            offset += line.len() as u64;
            if exclude
                .get(name)
                .is_some_and(|(a, b)| start >= *a && start < *b)
            {
                continue;
            }
            if is_finding(line) {
                out.push(format!("{name}: {}", line.trim_end()));
            }
        }
    }
    out.truncate(50);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn findings() {
        assert!(is_finding(
            "2026-11-27 15:00:00,000 - synapse.app - 10 - ERROR - main - boom"
        ));
        assert!(is_finding("Traceback (most recent call last):"));
        assert!(is_finding("2026/11/27 15:00:00 [emerg] 1#1: bad"));
        assert!(is_finding(
            "2026-11-27 15:00:00.000 UTC [42] ERROR:  relation \"x\" does not exist"
        ));
        assert!(!is_finding(
            "2026-11-27 15:00:00,000 - synapse.app - 10 - INFO - main - Synapse now listening"
        ));
        assert!(!is_finding(
            "2026-11-27 15:30:35.644 GMT [20280] ERROR:  could not serialize access due to concurrent update"
        ));
        assert!(!is_finding(
            "2026-11-27 17:20:11.932 UTC [21483] ERROR:  could not serialize access due to concurrent delete"
        ));
    }
}
