//! Benchmark: wall time of `cargo xtask check` on the repository's book (target: under 1 s
//! once built; the external checkers' answers are cached in target/lint-cache, so this measures
//! the steady state a contributor sees on their second run).
//!
//! Run: `cargo bench -p xtask --bench check` (or `BENCH_BOOK=dir BENCH_RUNS=n` to change what
//! and how often). Prints min / median / max and writes them to `target/bench/check.json`.

use std::process::Command;
use std::time::{Duration, Instant};

#[allow(clippy::print_stdout)]
fn main() {
    let exe = env!("CARGO_BIN_EXE_xtask");
    let root = xtask::project_root();
    let book = std::env::var("BENCH_BOOK").map_or_else(|_| root.clone(), std::path::PathBuf::from);
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let run = || {
        let t = Instant::now();
        let out = Command::new(exe)
            .arg("check")
            .arg("--book")
            .arg(&book)
            .output()
            .expect("run xtask check");
        (t.elapsed(), out)
    };
    // Warm-up: fills the lint cache and the page cache.
    let (first, out) = run();
    let status = out.status.code().unwrap_or(-1);
    let mut times: Vec<Duration> = (0..runs).map(|_| run().0).collect();
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let (min, med, max) = (
        ms(times[0]),
        ms(times[times.len() / 2]),
        ms(times[times.len() - 1]),
    );
    println!(
        "cargo xtask check --book {}: exit {status}; first run {:.0} ms; {runs} runs: min {min:.0} ms, median {med:.0} ms, max {max:.0} ms",
        book.display(),
        ms(first)
    );
    if med >= 1000.0 {
        println!("WARNING: median is over the 1 s target");
    }
    let dir = root.join("target/bench");
    let _ = std::fs::create_dir_all(&dir);
    let json = format!(
        "{{\"book\": {:?}, \"exit\": {status}, \"first_ms\": {:.1}, \"runs\": {runs}, \"min_ms\": {min:.1}, \"median_ms\": {med:.1}, \"max_ms\": {max:.1}}}\n",
        book.display().to_string(),
        ms(first)
    );
    let _ = std::fs::write(dir.join("check.json"), json);
}
