//! The stack test end to end on a small fixture deployment
//! (`tests/fixtures/stack`: PostgreSQL, Redis, main Synapse, two workers, nginx on 18008):
//! bring-up, every client step, the fault, the upstream comparison against the simulator, the
//! sql block, the log scan and a clean teardown; then a second run right after.
//!
//! Needs a Docker daemon (and root, to remove what the containers wrote). Without a daemon the
//! test fails, unless `XTASK_NO_DOCKER=1` says the machine has none on purpose (the pristine
//! container of `cargo xtask pristine`).

use std::path::Path;

fn prerequisites() -> Result<(), String> {
    if std::env::var_os("XTASK_NO_DOCKER").is_some() {
        return Err("XTASK_NO_DOCKER is set (a container without a Docker daemon)".into());
    }
    if !xtask::stack::docker::daemon_answers() {
        return Err("no Docker daemon answers".into());
    }
    Ok(())
}

fn run_once(book: &Path, base: &Path, n: usize) {
    let report = base.join(format!("report{n}.json"));
    let paths = xtask::stack::Paths::new(base);
    let _ = xtask::stack::run::test(
        book,
        &paths,
        xtask::stack::ImageChoice::Auto,
        Some(&report),
        false,
    )
    .expect("the stack test runs");
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
    let kills = r["kills"].as_array().unwrap();
    assert!(kills.iter().any(|k| k["service"] == "rooms1"), "{kills:?}");
    assert!(
        kills
            .iter()
            .all(|k| k["came_back"] == true && k["lost"] == 0),
        "{kills:?}"
    );
    assert!(r["timings"]["bring_up"].as_f64().unwrap() < 60.0);
}

#[test]
fn fixture_stack_runs_twice_and_leaves_nothing() {
    if let Err(why) = prerequisites() {
        assert!(
            std::env::var_os("XTASK_NO_DOCKER").is_some(),
            "{why} (set XTASK_NO_DOCKER=1 on a machine without Docker to skip)"
        );
        eprintln!("skipped: {why}");
        return;
    }
    let book = xtask::project_root().join("tests/fixtures/stack");
    let base = xtask::tools::target_dir().join("stack-fixture-test");
    run_once(&book, &base, 1);
    run_once(&book, &base, 2);
}
