//! Hostile books (issue 14): every command that CI runs on a contributor's book (`extract`,
//! `lint`, `route`, `check`) meets odd and hostile inputs, several shapes of each class, and must
//!
//! - write and delete nothing outside `--out` (a sentinel tree beside the book and the output
//!   directory must be byte-for-byte unchanged after every run),
//! - never crash (exit status 0, 1 or 2, no signal, no "panicked" on stderr),
//! - finish generated large inputs in seconds (the tests assert results, not times; the
//!   figures are in `src/contributing/architecture.md`, from `cargo xtask bench hostile`),
//! - drop nothing silently (a block mdBook would swallow, an `{{#include}}`, a titled `routes`
//!   block are findings).

use assert_cmd::Command;
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// A scratch world: `T/book` (the book), `T/out` (extract's output), `T/sentinel` (files that
/// must never change), `T/tmp` (the commands' TMPDIR), `T/cache` (their cache).
struct World {
    _dir: tempfile::TempDir,
    t: PathBuf,
}

impl World {
    fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path().canonicalize().unwrap();
        for d in [
            "book/src",
            "sentinel/keys",
            "sentinel/nginx",
            "tmp",
            "cache",
        ] {
            std::fs::create_dir_all(t.join(d)).unwrap();
        }
        for (p, text) in [
            ("sentinel/victim.txt", "do not touch\n"),
            ("sentinel/homeserver.yaml", "keep: me\n"),
            ("sentinel/keys/k.key", "not a key\n"),
            ("sentinel/nginx/x.key", "not a key either\n"),
        ] {
            std::fs::write(t.join(p), text).unwrap();
        }
        std::fs::write(t.join("book/book.toml"), "[book]\ntitle = \"hostile\"\n").unwrap();
        World { _dir: dir, t }
    }

    fn book(&self) -> PathBuf {
        self.t.join("book")
    }

    fn out(&self) -> PathBuf {
        self.t.join("out")
    }

    /// Writes the chapters (name, text) and a SUMMARY.md listing them in order.
    fn chapters(&self, chapters: &[(&str, &str)]) {
        let mut summary = String::from("# Summary\n\n");
        for (name, text) in chapters {
            summary.push_str(&format!("- [{name}]({name})\n"));
            let p = self.book().join("src").join(name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        std::fs::write(self.book().join("src/SUMMARY.md"), summary).unwrap();
    }

    fn chapter(&self, text: &str) {
        self.chapters(&[("c.md", text)]);
    }

    /// Everything under T but the output directory, the commands' TMPDIR and cache.
    fn snapshot(&self) -> BTreeMap<String, (u32, Vec<u8>)> {
        let mut all = snapshot(&self.t);
        all.retain(|k, _| !["out", "tmp/", "cache/"].iter().any(|p| k.starts_with(p)));
        all
    }

    /// Runs `xtask ARGS` and checks that it did not crash. Returns (status, stdout, stderr).
    fn run(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::cargo_bin("xtask")
            .unwrap()
            .args(args)
            .env("TMPDIR", self.t.join("tmp"))
            .env("XTASK_LINT_CACHE_DIR", self.t.join("cache"))
            .env_remove("XTASK_LINT_NO_CACHE")
            .timeout(std::time::Duration::from_secs(120))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let code = out
            .status
            .code()
            .unwrap_or_else(|| panic!("`xtask {args:?}` was killed by a signal: {stderr}"));
        assert!(
            (0..=2).contains(&code) && !stderr.contains("panicked"),
            "`xtask {args:?}` crashed ({code}): {stderr}"
        );
        (
            code,
            String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr,
        )
    }

    /// Runs a command on the book (extract writes to `out`) and checks the sentinel tree.
    fn cmd(&self, cmd: &str, extra: &[&str]) -> (i32, String) {
        let before = self.snapshot();
        let book = self.book();
        let out = self.out();
        let mut args = vec![cmd, "--book", book.to_str().unwrap()];
        if cmd == "extract" {
            args.extend(["--out", out.to_str().unwrap()]);
        }
        args.extend(extra);
        let (code, _, stderr) = self.run(&args);
        let after = self.snapshot();
        assert_eq!(
            changed(&before, &after),
            Vec::<String>::new(),
            "`xtask {args:?}` changed files outside --out: {stderr}"
        );
        (code, stderr)
    }
}

fn changed(
    a: &BTreeMap<String, (u32, Vec<u8>)>,
    b: &BTreeMap<String, (u32, Vec<u8>)>,
) -> Vec<String> {
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .cloned()
        .collect()
}

/// Everything under `dir`: relative path -> (mode, content or link target). Follows no link.
fn snapshot(dir: &Path) -> BTreeMap<String, (u32, Vec<u8>)> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, (u32, Vec<u8>)>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let meta = std::fs::symlink_metadata(&p).unwrap();
            let mode = meta.permissions().mode();
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&p).unwrap();
                out.insert(rel, (mode, target.into_os_string().into_encoded_bytes()));
            } else if meta.is_dir() {
                out.insert(rel.clone() + "/", (mode, Vec::new()));
                walk(root, &p, out);
            } else if meta.is_file() {
                out.insert(rel, (mode, std::fs::read(&p).unwrap()));
            } else {
                out.insert(rel, (mode, b"special".to_vec()));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn compose(mount: &str) -> String {
    format!(
        "```yaml title=\"docker-compose.yml\"\nservices:\n  synapse:\n    image: x\n    volumes:\n      - {mount}\n```\n\n"
    )
}

fn homeserver(key: &str) -> String {
    format!(
        "```yaml title=\"synapse/homeserver.yaml\"\nserver_name: example.com\nsigning_key_path: \"{key}\"\n```\n\n"
    )
}

// ---------------------------------------------------------------------------------------------
// 1. Nothing written or deleted outside --out

#[test]
fn the_signing_key_never_lands_outside_the_tree() {
    let w = World::new();
    let up = "../".repeat(12);
    let t = w.t.to_str().unwrap().trim_start_matches('/').to_string();
    for (mount, key) in [
        // `..` in the key path, through an ordinary mount
        (
            "./synapse:/data".to_string(),
            format!("/data/{up}{t}/sentinel/victim.txt"),
        ),
        // no `..` in the YAML at all: the mount itself climbs out
        ("./../keys:/data".to_string(), "/data/k.key".to_string()),
        (
            "./../sentinel:/data".to_string(),
            "/data/victim.txt".to_string(),
        ),
        (
            "../sentinel/keys:/data".to_string(),
            "/data/k.key".to_string(),
        ),
        // mapped under nginx/, where lint makes its `nginx -t` scratch copy
        (
            "./nginx:/data".to_string(),
            "/data/../../sentinel/nginx/x.key".to_string(),
        ),
        (
            "./nginx/../..:/data".to_string(),
            "/data/sentinel/victim.txt".to_string(),
        ),
    ] {
        let nginx = "```nginx title=\"nginx/nginx.conf\"\nevents {}\nhttp { server { listen 8008; location / { return 200; } } }\n```\n";
        w.chapter(&format!(
            "# C\n\n{}{}{nginx}",
            compose(&mount),
            homeserver(&key)
        ));
        for cmd in ["extract", "check", "lint"] {
            let (code, err) = w.cmd(
                cmd,
                &["--secrets", "generate"][..if cmd == "extract" { 2 } else { 0 }],
            );
            assert_eq!(code, 1, "{cmd} with {mount} and {key}: {err}");
            assert!(err.contains("signing_key_path"), "{cmd} {mount}: {err}");
        }
        let _ = std::fs::remove_dir_all(w.out());
    }
}

#[test]
fn stand_in_certificates_stay_in_the_scratch_copy() {
    let w = World::new();
    let up = "../".repeat(12);
    let t = w.t.to_str().unwrap().trim_start_matches('/').to_string();
    for (crt, key) in [
        (
            format!("/etc/nginx/{up}{t}/sentinel/new.crt"),
            format!("/etc/nginx/{up}{t}/sentinel/new.key"),
        ),
        (
            format!("/etc/nginx/{up}{t}/sentinel/victim.txt"),
            format!("/etc/nginx/{up}{t}/sentinel/nginx/x.key"),
        ),
        (
            "/etc/nginx/ssl/../../../x.crt".to_string(),
            "/etc/nginx/ssl/../../../x.key".to_string(),
        ),
    ] {
        w.chapter(&format!(
            "# C\n\n```nginx title=\"nginx/nginx.conf\"\nevents {{}}\nhttp {{\n server {{\n  listen 8443 ssl;\n  ssl_protocols TLSv1.2 TLSv1.3;\n  ssl_certificate {crt};\n  ssl_certificate_key {key};\n  location / {{ return 200; }}\n }}\n}}\n```\n"
        ));
        for cmd in ["lint", "check"] {
            w.cmd(cmd, &[]);
        }
        assert!(!w.t.join("sentinel/new.key").exists());
    }
}

#[test]
fn nginx_t_creates_nothing_outside_its_scratch_copy() {
    let w = World::new();
    let up = "../".repeat(12);
    let t = w.t.to_str().unwrap().to_string();
    let rel = t.trim_start_matches('/');
    for line in [
        format!("error_log {t}/sentinel/e.log;"),
        format!("http_access_log {t}/sentinel/a.log;").replace("http_", ""),
        format!("client_body_temp_path {t}/sentinel/body;"),
        format!("proxy_temp_path /var/log/nginx/{up}{rel}/sentinel/p;"),
        format!("proxy_cache_path /etc/nginx/{up}{rel}/sentinel/c keys_zone=z:1m;"),
        format!("fastcgi_temp_path ../../../../../../../../../../../{rel}/sentinel/f;"),
    ] {
        let (main, http) = if line.starts_with("error_log") {
            (line.clone(), String::new())
        } else {
            (String::new(), line.clone())
        };
        w.chapter(&format!(
            "# C\n\n```nginx title=\"nginx/nginx.conf\"\nevents {{}}\n{main}\nhttp {{\n {http}\n server {{ listen 8008; location / {{ return 200; }} }}\n}}\n```\n"
        ));
        for cmd in ["lint", "check"] {
            let (_, err) = w.cmd(cmd, &[]);
            // Either `nginx -t` is not run, or the configuration is refused before it would be.
            assert!(
                err.contains("nginx::nginx-t-not-run")
                    || err.contains("nginx::directive")
                    || !has_nginx(),
                "{line}: {err}"
            );
        }
    }
}

fn has_nginx() -> bool {
    xtask::tools::which("nginx").is_some() || Path::new("/usr/sbin/nginx").exists()
}

#[test]
fn cleanup_and_the_manifest_follow_no_link() {
    let w = World::new();
    let with = "# C\n\n```yaml title=\"synapse/homeserver.yaml\"\na: 1\n```\n\n```yaml title=\"other.yaml\"\nb: 2\n```\n";
    let without = "# C\n\n```yaml title=\"other.yaml\"\nb: 2\n```\n";
    // A directory of the output replaced by a link to the sentinel: the next run that no
    // longer produces its file must not delete through it...
    w.chapter(with);
    assert_eq!(w.cmd("extract", &[]).0, 0);
    std::fs::remove_dir_all(w.out().join("synapse")).unwrap();
    std::os::unix::fs::symlink(w.t.join("sentinel"), w.out().join("synapse")).unwrap();
    w.chapter(without);
    assert_eq!(w.cmd("extract", &[]).0, 0);
    // ...nor one that does produce it write through it.
    w.chapter(with);
    let (code, err) = w.cmd("extract", &[]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("extract::symlink-escape"), "{err}");
    // A link to a directory inside --out is refused too.
    std::fs::remove_file(w.out().join("synapse")).unwrap();
    std::fs::create_dir_all(w.out().join("real")).unwrap();
    std::os::unix::fs::symlink("real", w.out().join("synapse")).unwrap();
    assert_eq!(w.cmd("extract", &[]).0, 1);
    std::fs::remove_file(w.out().join("synapse")).unwrap();

    // A manifest that is a link is neither read nor written through.
    for target in ["sentinel/victim.txt", "sentinel/keys"] {
        let m = w.out().join(".extract-manifest");
        let _ = std::fs::remove_file(&m);
        std::os::unix::fs::symlink(w.t.join(target), &m).unwrap();
        let (code, err) = w.cmd("extract", &[]);
        assert_eq!(code, 1, "{err}");
        assert!(err.contains(".extract-manifest"), "{err}");
    }
    // A manifest naming files outside --out (or through a link) removes nothing there.
    let m = w.out().join(".extract-manifest");
    std::fs::remove_file(&m).unwrap();
    std::fs::write(
        &m,
        "../sentinel/victim.txt\n/etc/hostname\nsynapse/homeserver.yaml\nlink/victim.txt\n",
    )
    .unwrap();
    std::os::unix::fs::symlink(w.t.join("sentinel"), w.out().join("link")).unwrap();
    w.chapter(without);
    assert_eq!(w.cmd("extract", &[]).0, 0);
}

#[test]
fn out_over_the_book_never_touches_its_sources() {
    let w = World::new();
    w.chapter(
        "# C\n\n```yaml title=\"src/c.md\"\na: 1\n```\n\n```yaml title=\"book.toml\"\nb: 1\n```\n",
    );
    let book = w.book();
    for out in [
        book.clone(),
        book.join("src"),
        book.join("src/deploy"),
        book.join("new/../src/y"),
        book.join("deploy/../.."),
        w.t.clone(),
        PathBuf::from("/"),
    ] {
        for force in [true, false] {
            let before = snapshot(&book);
            let mut args = vec![
                "extract",
                "--book",
                book.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
            ];
            if force {
                args.push("--force");
            }
            let (code, _, err) = w.run(&args);
            assert_eq!(code, 2, "{out:?}: {err}");
            assert_eq!(changed(&before, &snapshot(&book)), Vec::<String>::new());
        }
    }
    // The default, `deploy/` beside the sources, is fine.
    let (code, _, err) = w.run(&["extract", "--book", book.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(book.join("deploy/src/c.md").is_file());
}

#[test]
fn scratch_files_and_caches_stay_where_they_belong() {
    let w = World::new();
    w.chapter("# C\n\n```nginx title=\"nginx/nginx.conf\"\nevents {}\nhttp { server { listen 8008; location / { return 200; } } }\n```\n\n```sh title=\"run.sh\"\n#!/bin/sh\necho hi\n```\n");
    // A missing TMPDIR is not created.
    let missing = w.t.join("tmp/missing");
    let book = w.book();
    for cmd in ["check", "lint"] {
        let out = Command::cargo_bin("xtask")
            .unwrap()
            .args([cmd, "--book", book.to_str().unwrap()])
            .env("TMPDIR", &missing)
            .env("XTASK_LINT_NO_CACHE", "1")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.code().is_some() && !err.contains("panicked"),
            "{err}"
        );
        assert!(!missing.exists(), "{cmd} created TMPDIR");
    }
    // Another book's cache goes to the user's cache directory, not to this repository.
    let xdg = w.t.join("xdg");
    let out = Command::cargo_bin("xtask")
        .unwrap()
        .args(["lint", "--book", book.to_str().unwrap()])
        .env("TMPDIR", w.t.join("tmp"))
        .env("XDG_CACHE_HOME", &xdg)
        .env_remove("XTASK_LINT_CACHE_DIR")
        .env_remove("XTASK_LINT_NO_CACHE")
        .output()
        .unwrap();
    assert!(out.status.code().is_some());
    let ran_a_tool = ["nginx", "shellcheck"]
        .iter()
        .any(|t| xtask::tools::which(t).is_some())
        || Path::new("/usr/sbin/nginx").exists();
    if ran_a_tool {
        assert!(
            xdg.join("synapse-guide-xtask/lint-cache").is_dir(),
            "the cache of another book goes under XDG_CACHE_HOME"
        );
    }
    // Scratch directories are removed after the run.
    let left: Vec<_> = std::fs::read_dir(w.t.join("tmp"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "scratch left behind: {left:?}");
}

// ---------------------------------------------------------------------------------------------
// 2. No crash: map cycles

#[test]
fn map_cycles_are_findings_not_crashes() {
    let w = World::new();
    for maps in [
        "map $y $y { default $y; }",
        "map $a $b { default $a; }\n map $b $a { default $b; }",
        "map $uri $a { ~^/x $c; default 1; }\n map $a $c { default x$a; }",
        "map $y $y { default \"$y$y\"; }",
    ] {
        w.chapter(&format!(
            "# C\n\n```nginx title=\"nginx/nginx.conf\"\nevents {{}}\nhttp {{\n {maps}\n server {{ listen 8008; location / {{ return 200 $y$a; }} }}\n}}\n```\n"
        ));
        for cmd in [vec!["route", "/x"], vec!["check"], vec!["lint"]] {
            let (code, err) = w.cmd(cmd[0], &cmd[1..]);
            assert_eq!(code, 1, "{cmd:?} {maps}: {err}");
            assert!(
                err.contains("nginx::variable-cycle"),
                "{cmd:?} {maps}: {err}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Fences as mdBook finds them

#[test]
fn fences_close_exactly_where_mdbook_closes_them() {
    let w = World::new();
    // A would-be closing fence mdBook does not take: the block runs to the end of the chapter.
    for tail in ["    ```\n", "> ```\n", "\t```\n", "  > ```\n"] {
        w.chapter(&format!(
            "# C\n\n```yaml title=\"a.yaml\"\na: 1\n{tail}\nmore text\n"
        ));
        let (code, err) = w.cmd("check", &[]);
        assert_eq!(code, 1, "{tail:?}: {err}");
        assert!(err.contains("book::unterminated-fence"), "{tail:?}: {err}");
    }
    // ...or swallows the next block, which is said.
    w.chapter(
        "# C\n\n```yaml title=\"a.yaml\"\na: 1\n    ```\n\n```yaml title=\"b.yaml\"\nb: 2\n```\n",
    );
    let (_, err) = w.cmd("lint", &[]);
    assert!(err.contains("book::fence-in-block"), "{err}");
    // A fence in a quote closes with the quote's marker.
    w.chapter(
        "# C\n\n> ```yaml title=\"a.yaml\"\n> a: 1\n> ```\n\n```yaml title=\"b.yaml\"\nb: 2\n```\n",
    );
    assert_eq!(w.cmd("extract", &[]).0, 0);
    assert!(w.out().join("a.yaml").is_file() && w.out().join("b.yaml").is_file());
    // A byte order mark before a line-1 fence: mdBook drops it.
    w.chapter("\u{feff}```yaml title=\"a.yaml\"\na: 1\n```\n");
    assert_eq!(w.cmd("extract", &[]).0, 0);
    // A backtick in a backtick fence's info string: no fence at all for mdBook, said at that
    // line (not at the "closing" fence, which opens a block instead).
    for info in ["yaml title=\"a.yaml\" `x`", "yaml title=\"a`b.yaml\""] {
        w.chapter(&format!("# C\n\n```{info}\na: 1\n```\n\ntext\n"));
        let (code, err) = w.cmd("check", &[]);
        assert_eq!(code, 1, "{err}");
        assert!(
            err.contains("book::bad-info-string") && err.contains("c.md:3"),
            "{err}"
        );
    }
    // An indented code block holding config is shown but never checked: said.
    w.chapter("# C\n\nText.\n\n    server_name: example.com\n    listen: 8008\n");
    let (code, err) = w.cmd("lint", &[]);
    assert_eq!(code, 0);
    assert!(err.contains("book::indented-code-block"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// 4. All-or-nothing writes

#[test]
fn leftovers_of_a_killed_run_are_removed() {
    let w = World::new();
    w.chapter("# C\n\n```yaml title=\"a/b.yaml\"\na: 1\n```\n");
    assert_eq!(w.cmd("extract", &[]).0, 0);
    // pids above the kernel's pid_max (4194304) are never alive
    let dead = w.out().join(".extract-tmp-4194305");
    std::fs::create_dir_all(dead.join("new/a")).unwrap();
    std::fs::write(dead.join("new/a/b.yaml"), "half").unwrap();
    let link = w.out().join(".extract-tmp-4194306");
    std::os::unix::fs::symlink(w.t.join("sentinel"), &link).unwrap();
    assert_eq!(w.cmd("extract", &[]).0, 0);
    assert!(!dead.exists() && std::fs::symlink_metadata(&link).is_err());
    let names: Vec<String> = std::fs::read_dir(w.out())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().all(|n| !n.starts_with(".extract-tmp")),
        "{names:?}"
    );
    let manifest = std::fs::read_to_string(w.out().join(".extract-manifest")).unwrap();
    assert!(manifest.lines().any(|l| l == "a/b.yaml"), "{manifest}");
}

// ---------------------------------------------------------------------------------------------
// 5. Nothing silently dropped

#[test]
fn includes_titled_routes_duplicates_and_special_files() {
    let w = World::new();
    for text in [
        "# C\n\n{{#include /etc/passwd}}\n",
        "# C\n\n```yaml title=\"a.yaml\"\n{{#include ../../sentinel/homeserver.yaml}}\n```\n",
        "# C\n\n```rust\n{{#rustdoc_include x.rs:2}}\n```\n",
        "# C\n\n{{#playground x.rs}}\n",
    ] {
        w.chapter(text);
        let (code, err) = w.cmd("check", &[]);
        assert_eq!(code, 1, "{text}: {err}");
        assert!(err.contains("book::include"), "{err}");
    }
    // mdBook's escape is not an include.
    w.chapter("# C\n\n\\{{#include x.md}}\n");
    assert_eq!(w.cmd("check", &[]).0, 0);

    for info in [
        "routes title=\"r.txt\"",
        "routes title=\"r.txt\" variant=\"v\"",
    ] {
        w.chapter(&format!("# C\n\n```{info}\nGET /x -> u\n```\n"));
        let (code, err) = w.cmd("check", &[]);
        assert_eq!(code, 1, "{info}: {err}");
    }

    // One chapter listed twice (in several spellings) is read once.
    let text = "# C\n\n```yaml title=\"a.yaml\"\na: 1\n```\n";
    std::fs::write(w.book().join("src/c.md"), text).unwrap();
    // (mdBook's own SUMMARY parser refuses the same spelling twice.)
    for second in ["./c.md", "x/../c.md", "./x/.././c.md"] {
        std::fs::write(
            w.book().join("src/SUMMARY.md"),
            format!("# S\n\n- [C](c.md)\n- [Again]({second})\n"),
        )
        .unwrap();
        let (code, err) = w.cmd("extract", &[]);
        assert_eq!(code, 0, "{err}");
        assert!(err.contains("book::duplicate-chapter"), "{err}");
        assert_eq!(
            std::fs::read_to_string(w.out().join("a.yaml")).unwrap(),
            "a: 1\n"
        );
    }

    // SUMMARY links to things that are not regular files, or out of the sources.
    std::os::unix::fs::symlink("/dev/zero", w.book().join("src/zero.md")).unwrap();
    let fifo = w.book().join("src/fifo.md");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    std::fs::create_dir_all(w.book().join("src/dir.md")).unwrap();
    for link in [
        "zero.md",
        "fifo.md",
        "dir.md",
        "../../sentinel/victim.txt",
        "/dev/zero",
    ] {
        std::fs::write(
            w.book().join("src/SUMMARY.md"),
            format!("# S\n\n- [C](c.md)\n- [Z]({link})\n"),
        )
        .unwrap();
        for cmd in ["check", "extract"] {
            let (code, err) = w.cmd(cmd, &[]);
            assert_eq!(code, 2, "{link}: {err}");
            assert!(err.contains("SUMMARY.md:4"), "{link}: {err}");
        }
    }
}

#[test]
fn book_toml_and_summary_that_never_end_are_refused() {
    for file in ["book.toml", "src/SUMMARY.md"] {
        let w = World::new();
        w.chapter("# C\n");
        let p = w.book().join(file);
        std::fs::remove_file(&p).unwrap();
        std::os::unix::fs::symlink("/dev/zero", &p).unwrap();
        for cmd in ["check", "extract", "lint"] {
            let (code, err) = w.cmd(cmd, &[]);
            assert_eq!(code, 2, "{file} {cmd}: {err}");
            assert!(err.contains("not a regular file"), "{err}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 6. Large inputs: every reader linear (results asserted here; times in the benchmark)

/// The generated inputs of `cargo xtask bench hostile`, at the sizes that finish in a second or
/// two in a debug build.
#[test]
fn large_inputs_finish() {
    let w = World::new();
    // many small blocks, and one title repeated
    let n = 5_000;
    let mut text = String::from("# C\n\n");
    for i in 0..n {
        text.push_str(&format!("```yaml title=\"f/{i}.yaml\"\nk: {i}\n```\n\n"));
    }
    for i in 0..n {
        text.push_str(&format!("```yaml title=\"same.yaml\"\nk{i}: {i}\n```\n\n"));
    }
    w.chapter(&text);
    let (code, err) = w.cmd("extract", &[]);
    assert_eq!(code, 0, "{err}");
    let same = std::fs::read_to_string(w.out().join("same.yaml")).unwrap();
    assert_eq!(same.lines().count(), n);
    assert!(w.out().join(format!("f/{}.yaml", n - 1)).is_file());
    // a duplicate key at the end is found at its Markdown line
    let mut text = String::from("# C\n\n```yaml title=\"big.yaml\"\n");
    for i in 0..50_000 {
        text.push_str(&format!("k{i}: {i}\n"));
    }
    text.push_str("k7: again\n```\n");
    w.chapter(&text);
    let (code, err) = w.cmd("lint", &[]);
    assert_eq!(code, 1);
    assert!(
        err.contains("yaml::duplicate-key") && err.contains("c.md:50004"),
        "{err}"
    );
    // a big document without aliases is not called an alias bomb
    let mut text = String::from("# C\n\n```yaml title=\"big.yaml\"\n");
    for i in 0..110_000 {
        text.push_str(&format!("k{i}: {i}\n"));
    }
    text.push_str("```\n");
    w.chapter(&text);
    let (code, err) = w.cmd("lint", &[]);
    assert_eq!(code, 1);
    assert!(
        err.contains("yaml::too-complex") && !err.contains("aliases"),
        "{err}"
    );
    // globs with many stars, includes that include each other
    for (include, files) in [
        (format!("/etc/nginx/{}x.none", "*".repeat(40)), 0),
        ("/etc/nginx/inc/*.inc".to_string(), 9),
        ("/etc/nginx/inc/*.inc".to_string(), 40),
    ] {
        let mut text = format!(
            "# C\n\n```nginx title=\"nginx/nginx.conf\"\nevents {{}}\nhttp {{\n include {include};\n server {{ listen 8008; location / {{ return 200; }} }}\n}}\n```\n\n"
        );
        for i in 0..files {
            text.push_str(&format!(
                "```nginx title=\"nginx/inc/{i}.inc\"\ninclude /etc/nginx/inc/*.inc;\n```\n\n"
            ));
        }
        w.chapter(&text);
        let (code, err) = w.cmd("route", &["/x"]);
        if files > 0 {
            assert_eq!(code, 1, "{err}");
            assert!(err.contains("nginx::include-cycle"), "{err}");
        } else {
            assert_eq!(code, 0, "{err}");
        }
    }
    // a file included twice per level, 14 levels deep: 2^14 splices, refused past the limit
    let mut text = String::from(
        "# C\n\n```nginx title=\"nginx/nginx.conf\"\nevents {}\nhttp {\n include /etc/nginx/l0.inc;\n server { listen 8008; location / { return 200; } }\n}\n```\n\n",
    );
    for i in 0..14 {
        let next = i + 1;
        text.push_str(&format!(
            "```nginx title=\"nginx/l{i}.inc\"\ninclude /etc/nginx/l{next}.inc;\ninclude /etc/nginx/l{next}.inc;\n```\n\n"
        ));
    }
    text.push_str("```nginx title=\"nginx/l14.inc\"\n# end\n```\n");
    w.chapter(&text);
    let (code, err) = w.cmd("route", &["/x"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("more than 10000 files"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// 9. Messages that say what happened

#[test]
fn server_names_and_placeholders_are_not_half_done() {
    let w = World::new();
    w.chapter(
        "# C\n\n```yaml title=\"a.yaml\"\nname: example.com\nother: notexample.com\nroom: \"!r:example.com\"\npassword: CHANGEME_X\n```\n",
    );
    // A placeholder `generate` cannot replace stops the write.
    let (code, err) = w.cmd("extract", &["--secrets", "generate"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("security::placeholder-left"), "{err}");
    assert!(!w.out().exists());
    // Whole names only; ports in range.
    for bad in ["a.org:99999", "a.org:0", "a.org:", "a b"] {
        let (code, err) = w.cmd("extract", &["--server-name", bad]);
        assert_eq!(code, 2, "{bad}: {err}");
    }
    let (code, err) = w.cmd("extract", &["--server-name", "m.org:8448"]);
    assert_eq!(code, 0, "{err}");
    let a = std::fs::read_to_string(w.out().join("a.yaml")).unwrap();
    assert!(
        a.contains("name: m.org:8448\n")
            && a.contains("other: notexample.com\n")
            && a.contains("!r:m.org:8448"),
        "{a}"
    );
    // A 1 MB line is quoted in part.
    let long = "x".repeat(1 << 20);
    w.chapter(&format!(
        "# C\n\n```yaml title=\"a.yaml\"\na: [{long}\n```\n"
    ));
    let (code, err) = w.cmd("lint", &[]);
    assert_eq!(code, 1);
    assert!(err.len() < 20_000, "{} bytes of messages", err.len());
}

/// The mdBook preprocessor reads the same books: the same findings, no crash, no write.
#[test]
fn the_preprocessor_meets_the_same_books() {
    let w = World::new();
    let up = "../".repeat(12);
    let t = w.t.to_str().unwrap().trim_start_matches('/').to_string();
    for chapter in [
        format!(
            "# C\n\n{}{}",
            compose("./synapse:/data"),
            homeserver(&format!("/data/{up}{t}/sentinel/victim.txt"))
        ),
        "# C\n\n```nginx title=\"nginx/nginx.conf\"\nevents {}\nhttp {\n map $y $y { default $y; }\n server { listen 8008; location / { return 200 $y; } }\n}\n```\n".to_string(),
        "# C\n\n{{#include ../../sentinel/victim.txt}}\n".to_string(),
        "# C\n\n```yaml title=\"a.yaml\"\na: 1\n    ```\n".to_string(),
    ] {
        w.chapter(&chapter);
        let before = w.snapshot();
        let input = serde_json::json!([
            {"root": w.book(), "mdbook_version": "0.5.4", "renderer": "html", "config": {}},
            {"items": []}
        ]);
        let out = Command::cargo_bin("xtask")
            .unwrap()
            .arg("mdbook")
            .write_stdin(input.to_string())
            .env("TMPDIR", w.t.join("tmp"))
            .env("XTASK_LINT_CACHE_DIR", w.t.join("cache"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        let code = out.status.code().expect("no signal");
        assert!((code == 1 || code == 2) && err.contains("error["), "{code}: {err}");
        assert!(!err.contains("panicked"), "{err}");
        assert_eq!(changed(&before, &w.snapshot()), Vec::<String>::new());
    }
}
