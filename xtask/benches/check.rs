//! Benchmark: `cargo xtask check` on the repository's book against the tools it stands for, side
//! by side in one run.
//!
//! - `check`, warm: the binary `cargo xtask` runs (the dev profile, built here with `cargo build
//!   -p xtask`), every cache warm (the second run of a contributor); also through `cargo xtask`
//!   itself (cargo's freshness check included);
//! - `check`, cold: the same binary with `XTASK_LINT_NO_CACHE=1` (every external checker runs);
//! - `nginx -t`, gixy-ng and yamllint on the same extracted tree, the way a shell script would run
//!   them (nginx on the configuration with its container paths moved into a scratch directory,
//!   as `check` does; gixy-ng on the same files; yamllint on every YAML file of the tree).
//!
//! Run: `cargo bench -p xtask --bench check` (`BENCH_RUNS=n` to change how often; the cold run is
//! repeated `BENCH_COLD_RUNS` times, default 3). Prints the medians and writes them to
//! `target/bench/check.json`; `BENCH_BLESS=1` also writes them into the "Speed" section of
//! `src/contributing/architecture.md`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use xtask::extract::{self, Options};
use xtask::lint::nginx::nginx_t;
use xtask::nginx::config;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Median wall time of `runs` runs of `cmd` (stdout and stderr discarded), and the last status.
fn time(runs: usize, mut cmd: impl FnMut() -> Command) -> (Duration, Option<i32>) {
    let mut times = Vec::new();
    let mut status = None;
    for _ in 0..runs.max(1) {
        let mut c = cmd();
        c.stdout(Stdio::null()).stderr(Stdio::null());
        let t = Instant::now();
        status = c.status().expect("the command runs").code();
        times.push(t.elapsed());
    }
    times.sort();
    (times[times.len() / 2], status)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The `xtask` binary of the dev profile, as `cargo xtask` builds it.
fn dev_binary(root: &Path) -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let st = Command::new(&cargo)
        .args(["build", "--quiet", "--package", "xtask"])
        .current_dir(root)
        .status()
        .expect("cargo build runs");
    assert!(st.success(), "cargo build -p xtask failed");
    xtask::tools::target_dir().join("debug/xtask")
}

struct Row {
    what: &'static str,
    ms: f64,
    note: String,
}

#[allow(clippy::print_stdout)]
fn main() {
    let root = xtask::project_root();
    let runs = env_usize("BENCH_RUNS", 10);
    let cold_runs = env_usize("BENCH_COLD_RUNS", 3);
    let exe = dev_binary(&root);

    // The extracted tree the tools run on.
    let book = xtask::book::load(&root).expect("the book loads");
    let tree = extract::assemble(&book, &Options::default()).expect("the book extracts");
    let scratch = std::env::temp_dir().join(format!("xtask-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    let out = scratch.join("tree");
    extract::write_tree(&tree, &out, false).expect("the tree is written");
    let yaml: Vec<PathBuf> = tree
        .files
        .values()
        .filter(|f| f.is_yaml())
        .map(|f| out.join(&f.path))
        .collect();
    let nginx_root = config::root_file(&tree).expect("the book has an nginx configuration");
    let dir = nginx_root
        .rsplit_once('/')
        .map_or(String::new(), |(d, _)| format!("{d}/"));
    let cfg = config::load(&tree).expect("the nginx configuration loads");
    let conf = nginx_t::prepare(&tree, &cfg, &nginx_root, &dir, &scratch.join("nginx"))
        .expect("the nginx scratch directory is written");
    let py_tools = xtask::tools::py_tools().join("bin");
    let nginx = xtask::tools::which("nginx")
        .or_else(|| Some(PathBuf::from("/usr/sbin/nginx")).filter(|p| p.exists()))
        .expect("nginx is installed (cargo xtask setup debian)");
    for (tool, dist) in [("gixy", "gixy-ng"), ("yamllint", "yamllint")] {
        assert!(
            xtask::tools::py_tool_ready(dist),
            "{tool} is not installed: run `cargo xtask setup pytools`"
        );
    }

    let mut rows = Vec::new();
    // Warm: one run fills the caches, then the median of `runs`.
    let check = || {
        let mut c = Command::new(&exe);
        c.arg("check").arg("--book").arg(&root);
        c
    };
    let (first, status) = time(1, check);
    assert_eq!(status, Some(0), "cargo xtask check fails on the book");
    let (warm, _) = time(runs, check);
    rows.push(Row {
        what: "cargo xtask check, warm (the dev binary)",
        ms: ms(warm),
        note: format!("first run {:.0} ms", ms(first)),
    });
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let (via_cargo, _) = time(runs, || {
        let mut c = Command::new(&cargo);
        c.args(["xtask", "check"]).current_dir(&root);
        c
    });
    rows.push(Row {
        what: "cargo xtask check, warm, through cargo",
        ms: ms(via_cargo),
        note: "cargo's freshness check included".into(),
    });
    let (cold, _) = time(cold_runs, || {
        let mut c = check();
        c.env("XTASK_LINT_NO_CACHE", "1");
        c
    });
    rows.push(Row {
        what: "cargo xtask check, cold (no cache)",
        ms: ms(cold),
        note: "every external checker runs".into(),
    });
    let pid = scratch.join("nginx.pid");
    let (nginx_t, _) = time(runs, || {
        let mut c = Command::new(&nginx);
        c.args(["-t", "-q", "-e", "stderr", "-g"])
            .arg(format!("pid {};", pid.display()))
            .arg("-c")
            .arg(&conf);
        c
    });
    let (gixy, _) = time(runs, || {
        let mut c = Command::new(py_tools.join("python"));
        c.args(["-m", "gixy", "-f", "json"]).arg(&conf);
        c
    });
    let (yamllint, _) = time(runs, || {
        let mut c = Command::new(py_tools.join("yamllint"));
        c.args(["-f", "parsable"]).args(&yaml);
        c
    });
    let tools = nginx_t + gixy + yamllint;
    rows.push(Row {
        what: "nginx -t",
        ms: ms(nginx_t),
        note: String::new(),
    });
    rows.push(Row {
        what: "gixy-ng",
        ms: ms(gixy),
        note: String::new(),
    });
    rows.push(Row {
        what: "yamllint",
        ms: ms(yamllint),
        note: format!("{} YAML files", yaml.len()),
    });
    rows.push(Row {
        what: "nginx -t + gixy-ng + yamllint",
        ms: ms(tools),
        note: "the tools `check` stands for, on the same tree".into(),
    });
    let _ = std::fs::remove_dir_all(&scratch);

    let mut table = String::from("| run | median | note |\n| --- | --- | --- |\n");
    for r in &rows {
        table.push_str(&format!("| {} | {:.0} ms | {} |\n", r.what, r.ms, r.note));
    }
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let load = std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().next().unwrap_or("?").to_string())
        .unwrap_or_else(|_| "?".into());
    let context = format!(
        "Medians of {runs} runs ({cold_runs} cold), {cores} cores, load average {load} at the end."
    );
    println!("{table}\n{context}");
    if ms(warm) > 100.0 {
        println!("WARNING: warm check is over the 100 ms target");
    }
    if warm >= tools {
        println!("WARNING: warm check is not faster than the tools it stands for");
    }

    let dir = root.join("target/bench");
    let _ = std::fs::create_dir_all(&dir);
    let json = serde_json::json!({
        "runs": runs,
        "cold_runs": cold_runs,
        "warm_ms": ms(warm),
        "first_ms": ms(first),
        "via_cargo_ms": ms(via_cargo),
        "cold_ms": ms(cold),
        "nginx_t_ms": ms(nginx_t),
        "gixy_ms": ms(gixy),
        "yamllint_ms": ms(yamllint),
        "tools_ms": ms(tools),
        "load": load,
    });
    let _ = std::fs::write(dir.join("check.json"), format!("{json:#}\n"));
    if std::env::var_os("BENCH_BLESS").is_some() {
        bless(
            &root.join("src/contributing/architecture.md"),
            &table,
            &context,
        );
    }
}

/// Writes the figures between the markers of the architecture page's "Speed" section.
fn bless(page: &Path, table: &str, context: &str) {
    const START: &str = "<!-- figures: cargo bench -p xtask --bench check -->\n";
    const END: &str = "<!-- end of figures -->";
    let text = std::fs::read_to_string(page).expect("the architecture page");
    let (before, rest) = text.split_once(START).expect("the start marker");
    let (_, after) = rest.split_once(END).expect("the end marker");
    std::fs::write(
        page,
        format!("{before}{START}{table}\n{context}\n{END}{after}"),
    )
    .expect("the architecture page is written");
}
