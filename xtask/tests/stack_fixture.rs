//! The native stack runner end to end on a small fixture deployment
//! (`tests/fixtures/stack`: PostgreSQL, Redis, main Synapse, two workers, nginx on 18008):
//! bring-up, every client step, the fault, the upstream comparison against the simulator, the
//! sql block, the log scan and a clean teardown; then a second run right after.
//!
//! Needs root (mount namespaces), the Debian packages and the Synapse venv of
//! `cargo xtask setup`. Without them the test is skipped, except under `CI=true`, where a
//! missing prerequisite is a failure.

use std::path::Path;

fn prerequisites() -> Result<(), String> {
    let root = rustix_uid_is_root();
    if !root {
        return Err("not root".into());
    }
    for tool in [
        "unshare",
        "nsenter",
        "setpriv",
        "nginx",
        "redis-server",
        "curl",
    ] {
        if xtask::tools::which(tool).is_none() {
            return Err(format!("{tool} is not installed"));
        }
    }
    if xtask::tools::pg_bindir().is_none() {
        return Err("PostgreSQL server binaries are not installed".into());
    }
    if !xtask::tools::synapse_python().exists() {
        return Err("target/synapse-venv is missing (cargo xtask setup synapse)".into());
    }
    Ok(())
}

fn rustix_uid_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

fn run_once(book: &Path, base: &Path, n: usize) {
    let report = base.join(format!("report{n}.json"));
    let paths = xtask::stack::Paths::new(base);
    let _ = xtask::stack::run::test(book, &paths, Some(&report)).expect("the stack test runs");
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let failed: Vec<String> = r["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["ok"] != true)
        .map(|s| format!("{}: {}", s["name"], s["detail"]))
        .collect();
    assert!(
        failed.is_empty(),
        "run {n}: failed steps:\n{}",
        failed.join("\n")
    );
    assert_eq!(r["ok"], true);
    let (m, t) = (
        r["upstreams"]["matched"].as_u64().unwrap(),
        r["upstreams"]["total"].as_u64().unwrap(),
    );
    assert!(t >= 40 && m == t, "run {n}: upstreams {m}/{t}");
    assert_eq!(r["sql_blocks_run"], 1);
    assert!(r["steps"].as_array().unwrap().len() >= 25);
    assert_eq!(r["fault"]["service"], "rooms1");
    assert!(r["timings"]["bring_up"].as_f64().unwrap() < 60.0);
}

#[test]
fn fixture_stack_runs_twice_and_leaves_nothing() {
    if let Err(why) = prerequisites() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but {why}"
        );
        eprintln!("skipped: {why}");
        return;
    }
    let book = xtask::project_root().join("tests/fixtures/stack");
    let base = xtask::tools::target_dir().join("stack-fixture-test");
    run_once(&book, &base, 1);
    run_once(&book, &base, 2);
}
