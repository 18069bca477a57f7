//! The stand-in images, built and run with the real Docker engine: the pristine base is cached
//! by content, a second build is a cache hit, and every stand-in keeps its contract.
//!
//! With no Docker daemon these tests FAIL, unless `XTASK_NO_DOCKER=1` is set (a pristine
//! container without Docker): then they say they skipped.

use std::sync::Mutex;
use std::time::Instant;
use xtask::images::{self, Standin};

/// The tests share one daemon and 2 CPUs: one at a time (builds also lock across processes).
static SERIAL: Mutex<()> = Mutex::new(());

/// False (and says so) when Docker is deliberately absent; panics when it should be there.
fn docker_or_skip(test: &str) -> bool {
    if std::env::var("XTASK_NO_DOCKER").is_ok_and(|v| v == "1") {
        // Straight to the stderr file descriptor: the test harness captures eprintln!, and the
        // skip must show in a normal `cargo test` run.
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED {test}: XTASK_NO_DOCKER=1 (no Docker daemon in this environment)"
        );
        return false;
    }
    if let Err(e) = images::docker::daemon_version() {
        panic!(
            "{test}: {e:#}\nThe stand-in tests need a Docker daemon; set XTASK_NO_DOCKER=1 to skip \
             them where there is none."
        );
    }
    true
}

/// The stand-ins of the Compose file the book extracts, as `cargo xtask images` finds them
/// (the images it pulls and those it builds from a Dockerfile of the book).
fn compose_standins() -> Vec<Standin> {
    let root = xtask::project_root();
    let book = xtask::book::load(&root).expect("the book loads");
    let tree = xtask::extract::assemble(&book, &xtask::extract::Options::default())
        .expect("the book extracts");
    let compose = tree
        .get("docker-compose.yml")
        .expect("a docker-compose.yml");
    let read = |p: &str| tree.get(p).map(|f| f.content.clone());
    images::standins_for_compose(&compose.content, &read).unwrap()
}

fn standin(name: &str) -> Standin {
    compose_standins()
        .into_iter()
        .find(|s| s.contract.name == name)
        .unwrap()
}

#[test]
fn pristine_base_is_cached_by_content() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !docker_or_skip("pristine_base_is_cached_by_content") {
        return;
    }
    let first = images::pristine_debian().unwrap();
    let start = Instant::now();
    let again = images::pristine_debian().unwrap();
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(first, again);
    assert!(
        secs < 1.0,
        "a second call must be a no-op, took {secs:.2} s"
    );
    let labels = images::docker::inspect(&first).unwrap()["Config"]["Labels"].clone();
    let hash = first.rsplit('-').next().unwrap();
    assert_eq!(labels["guide.standin.definition"].as_str(), Some(hash));
    // Debian 12 inside, made from Debian's packages only (minbase: no curl, apt present).
    let out = images::docker::run(&[
        "run",
        "--rm",
        &first,
        "sh",
        "-c",
        ". /etc/os-release; echo $VERSION_CODENAME; command -v apt-get; command -v curl || echo no-curl",
    ])
    .unwrap();
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["bookworm", "/usr/bin/apt-get", "no-curl"]
    );
}

fn check(name: &str) {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !docker_or_skip(name) {
        return;
    }
    let s = standin(name);
    images::build(&s).unwrap();
    // Nothing changed: Docker's layer cache gives the same image back, quickly.
    let again = images::build(&s).unwrap();
    assert!(
        !again.built,
        "{}: the second build made a new image",
        s.image
    );
    assert!(
        again.seconds < 5.0,
        "{}: a second build took {:.1} s",
        s.image,
        again.seconds
    );
    let results = images::verify(&s);
    let failed: Vec<String> = results
        .iter()
        .filter(|r| !r.ok)
        .map(|r| format!("{}: {}", r.check, r.detail))
        .collect();
    assert!(
        failed.is_empty(),
        "{} breaks its contract:\n{}",
        s.image,
        failed.join("\n")
    );
    // The checks that must always be there ran.
    for c in [
        "stopsignal",
        "present",
        "absent",
        "pid1",
        "serves",
        "clean-stop",
    ] {
        assert!(
            results.iter().any(|r| r.check == c),
            "{}: no `{c}` check ran",
            s.image
        );
    }
}

/// The book's PostgreSQL image is built (the official image plus pgBackRest): its stand-in is
/// the postgres stand-in plus Debian's pgBackRest, and keeps the postgres contract plus the
/// program.
#[test]
fn postgres_standin_keeps_its_contract() {
    let s = standin("postgres");
    let d = s
        .derived
        .as_ref()
        .expect("the book builds its PostgreSQL image from a Dockerfile");
    assert_eq!(d.from, "postgres:17-alpine");
    assert!(s.contract.present.contains(&"pgbackrest"));
    check("postgres");
}

#[test]
fn redis_standin_keeps_its_contract() {
    check("redis");
}

#[test]
fn nginx_standin_keeps_its_contract() {
    check("nginx");
}

#[test]
fn synapse_standin_keeps_its_contract() {
    check("synapse");
}
