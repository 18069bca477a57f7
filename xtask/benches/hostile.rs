//! Benchmark: every reader is linear. Each hostile shape of issue 14 (many blocks, one title
//! repeated, a big YAML file, a big YAML file with merges, an nginx include glob of many `*`,
//! a long chain of nginx `map`s) is generated at two sizes 10x apart and run through the
//! command that reads it, with the dev binary `cargo xtask` runs (books and output in `/dev/shm`
//! where there is one). A linear reader takes about
//! 10x as long on the bigger input; a quadratic one 100x.
//!
//! Run: `cargo bench -p xtask --bench hostile` (`BENCH_RUNS=n` runs per size, default 3; the
//! median is kept). Prints a table and writes it to `target/bench/hostile.json`;
//! `BENCH_BLESS=1` also writes it into the "Speed" section of
//! `src/contributing/architecture.md`. The test suite runs the same shapes at one size and
//! asserts results (`xtask/tests/hostile.rs`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// One generated input: a chapter's text for size `n`, the command that reads it, and the exit
/// status it must give.
struct Shape {
    name: &'static str,
    unit: &'static str,
    small: usize,
    chapter: fn(usize) -> String,
    cmd: &'static [&'static str],
    status: i32,
}

fn many_blocks(n: usize) -> String {
    (0..n)
        .map(|i| format!("```yaml title=\"f/{i}.yaml\"\nk: {i}\n```\n\n"))
        .collect()
}

fn one_title(n: usize) -> String {
    (0..n)
        .map(|i| format!("```yaml title=\"same.yaml\"\nk{i}: {i}\n```\n\n"))
        .collect()
}

fn big_yaml(n: usize) -> String {
    let keys: String = (0..n).map(|i| format!("k{i}: {i}\n")).collect();
    format!("```yaml title=\"big.yaml\"\n{keys}```\n")
}

fn yaml_merges(n: usize) -> String {
    let keys: String = (0..n).map(|i| format!("  k{i}: {i}\n")).collect();
    let users: String = (0..10)
        .map(|i| format!("u{i}:\n  <<: *base\n  k{i}: own\n"))
        .collect();
    format!("```yaml title=\"big.yaml\"\nbase: &base\n{keys}{users}```\n")
}

fn nginx(http: &str) -> String {
    format!(
        "```nginx title=\"nginx/nginx.conf\"\nevents {{}}\nhttp {{\n{http}\n server {{ listen 8008; location / {{ return 200 $m0; }} }}\n}}\n```\n"
    )
}

fn glob_stars(n: usize) -> String {
    let mut text = nginx(&format!(
        " include /etc/nginx/conf.d/{}.none;\n map $uri $m0 {{ default x; }}",
        "*".repeat(n)
    ));
    for i in 0..20 {
        text.push_str(&format!(
            "\n```nginx title=\"nginx/conf.d/a{i}.conf\"\n# {i}\n```\n"
        ));
    }
    text
}

fn map_chain(n: usize) -> String {
    let maps: String = (0..n)
        .map(|i| format!(" map $m{} $m{i} {{ default x$m{}; }}\n", i + 1, i + 1))
        .collect();
    nginx(&format!("{maps} map $uri $m{n} {{ default end; }}"))
}

fn locations(n: usize) -> String {
    let locs: String = (0..n)
        .map(|i| {
            format!("  location /p{i}/ {{ return 200; }}\n  location ~ ^/r{i}/ {{ return 201; }}\n")
        })
        .collect();
    format!(
        "```nginx title=\"nginx/nginx.conf\"\nevents {{}}\nhttp {{\n server {{ listen 8008; server_tokens off;\n{locs} }}\n}}\n```\n"
    )
}

const SHAPES: &[Shape] = &[
    Shape {
        name: "blocks, each its own file",
        unit: "blocks",
        small: 2_000,
        chapter: many_blocks,
        cmd: &["extract"],
        status: 0,
    },
    Shape {
        name: "blocks, one title repeated",
        unit: "blocks",
        small: 2_000,
        chapter: one_title,
        cmd: &["check"],
        status: 0,
    },
    Shape {
        name: "YAML keys in one file",
        unit: "keys",
        small: 9_000,
        chapter: big_yaml,
        cmd: &["lint"],
        status: 0,
    },
    Shape {
        name: "YAML keys merged 10 times",
        unit: "keys",
        small: 800,
        chapter: yaml_merges,
        cmd: &["lint"],
        status: 0,
    },
    Shape {
        name: "`*` in an nginx include glob",
        unit: "stars",
        small: 1_000,
        chapter: glob_stars,
        cmd: &["route", "/"],
        status: 0,
    },
    Shape {
        name: "prefix and regex locations (a check, not a reader)",
        unit: "pairs",
        small: 100,
        chapter: locations,
        cmd: &["check"],
        status: 0,
    },
    Shape {
        name: "nginx maps, each reading the next",
        unit: "maps",
        small: 1_000,
        chapter: map_chain,
        cmd: &["route", "/"],
        status: 0,
    },
];

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

/// Writes a book with one chapter into `dir`.
fn book(dir: &Path, chapter: &str) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::write(dir.join("book.toml"), "[book]\ntitle = \"bench\"\n").unwrap();
    std::fs::write(dir.join("src/SUMMARY.md"), "# S\n\n- [C](c.md)\n").unwrap();
    std::fs::write(dir.join("src/c.md"), format!("# C\n\n{chapter}")).unwrap();
}

/// Median time of `runs` runs of the shape's command on the book in `dir`.
fn time(bin: &Path, dir: &Path, shape: &Shape, runs: usize, cache: &Path) -> Duration {
    let mut times = Vec::new();
    for _ in 0..runs.max(1) {
        let out = dir.join("out");
        let _ = std::fs::remove_dir_all(&out);
        let mut c = Command::new(bin);
        c.arg(shape.cmd[0]).arg("--book").arg(dir);
        if shape.cmd[0] == "extract" {
            c.arg("--out").arg(&out);
        }
        c.args(&shape.cmd[1..])
            .env("XTASK_LINT_CACHE_DIR", cache)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let t = Instant::now();
        let st = c.status().expect("xtask runs");
        times.push(t.elapsed());
        assert_eq!(
            st.code(),
            Some(shape.status),
            "{}: `xtask {:?}` exited with {st}",
            shape.name,
            shape.cmd
        );
    }
    times.sort();
    times[times.len() / 2]
}

fn main() {
    let root = xtask::project_root();
    let bin = dev_binary(&root);
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    // On a memory filesystem where there is one: on a disk, creating 20 000 files costs the
    // kernel's inode allocator more than linear time, which is not what is measured here.
    let shm = Path::new("/dev/shm");
    let work = if shm.is_dir() {
        tempfile::tempdir_in(shm)
    } else {
        tempfile::tempdir()
    }
    .expect("a temporary directory");
    let cache = work.path().join("cache");
    let mut rows = Vec::new();
    let mut json = Vec::new();
    for shape in SHAPES {
        let mut t = Vec::new();
        let mut bytes = Vec::new();
        for n in [shape.small, shape.small * 10] {
            let dir = work.path().join("book");
            let chapter = (shape.chapter)(n);
            bytes.push(chapter.len());
            book(&dir, &chapter);
            t.push(time(&bin, &dir, shape, runs, &cache));
        }
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let ratio = ms(t[1]) / ms(t[0]).max(0.001);
        eprintln!(
            "{:<36} {:>7} {:>9.0} ms  {:>7} {:>9.0} ms  x{ratio:.1}",
            shape.name,
            shape.small,
            ms(t[0]),
            shape.small * 10,
            ms(t[1])
        );
        rows.push(format!(
            "| {} (`{}`) | {} {unit} ({} KB): {:.0} ms | {} {unit} ({} KB): {:.0} ms | x{ratio:.1} |",
            shape.name,
            shape.cmd[0],
            shape.small,
            bytes[0] / 1024,
            ms(t[0]),
            shape.small * 10,
            bytes[1] / 1024,
            ms(t[1]),
            unit = shape.unit,
        ));
        json.push(serde_json::json!({
            "shape": shape.name,
            "command": shape.cmd,
            "sizes": [shape.small, shape.small * 10],
            "bytes": bytes,
            "ms": [ms(t[0]), ms(t[1])],
        }));
    }
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(String::from))
        .unwrap_or_else(|| "?".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let table = format!(
        "| input | small | 10x | time ratio |\n| --- | --- | --- | --- |\n{}\n\nMedians of {runs} runs, the dev binary, {cores} cores, load average {load} at the end.\n",
        rows.join("\n")
    );
    let out = xtask::tools::target_dir().join("bench");
    std::fs::create_dir_all(&out).expect("target/bench");
    std::fs::write(
        out.join("hostile.json"),
        serde_json::to_string_pretty(
            &serde_json::json!({ "runs": runs, "load": load, "shapes": json }),
        )
        .expect("JSON"),
    )
    .expect("target/bench/hostile.json");
    if std::env::var_os("BENCH_BLESS").is_some() {
        bless(&root.join("src/contributing/architecture.md"), &table);
    }
}

/// Writes the figures between the markers of the architecture page.
fn bless(page: &Path, table: &str) {
    const START: &str = "<!-- figures: cargo bench -p xtask --bench hostile -->\n";
    const END: &str = "<!-- end of hostile figures -->";
    let text = std::fs::read_to_string(page).expect("the architecture page");
    let (Some(a), Some(b)) = (text.find(START), text.find(END)) else {
        panic!("{} has no hostile figures markers", page.display());
    };
    let new = format!("{}{START}{table}{}", &text[..a], &text[b..]);
    std::fs::write(page, new).expect("the architecture page is written");
}
