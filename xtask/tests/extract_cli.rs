//! `cargo xtask extract` from the outside: fixture books under tests/fixtures/extract/.
//!
//! Every error case must exit with the status of the CLI contract (1 findings, 2 unreadable
//! input; `src/contributing/architecture.md`),
//! name the Markdown file and line, and leave `--out` exactly as it was.

use assert_cmd::Command;
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/extract")
        .join(name)
}

fn xtask() -> Command {
    Command::cargo_bin("xtask").expect("xtask binary")
}

/// Everything under `dir`: relative path -> (mode, content or symlink target).
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
                out.insert(
                    rel,
                    (
                        mode,
                        std::fs::read_link(&p)
                            .unwrap()
                            .into_os_string()
                            .into_encoded_bytes(),
                    ),
                );
            } else if meta.is_dir() {
                out.insert(rel.clone() + "/", (mode, Vec::new()));
                walk(root, &p, out);
            } else {
                out.insert(rel, (mode, std::fs::read(&p).unwrap()));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn extract(book: &Path, out: &Path, extra: &[&str]) -> assert_cmd::assert::Assert {
    xtask()
        .arg("extract")
        .arg("--book")
        .arg(book)
        .arg("--out")
        .arg(out)
        .args(extra)
        .assert()
}

/// A fresh output directory holding a previous good extraction.
fn prepared_out() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    extract(&fixture("ok-basic"), tmp.path(), &[]).success();
    tmp
}

fn assert_error_case(case: &str, status: i32, location: &str, prepare: impl FnOnce(&Path)) {
    let out = prepared_out();
    prepare(out.path());
    let before = snapshot(out.path());
    let assert = extract(&fixture(case), out.path(), &[]).code(status);
    let stderr = String::from_utf8_lossy(&assert.get_output().stderr).into_owned();
    assert!(
        stderr.contains(&format!("--> {location}")),
        "{case}: no `{location}` in:\n{stderr}"
    );
    assert_eq!(snapshot(out.path()), before, "{case}: --out changed");
}

#[test]
fn path_with_dotdot() {
    assert_error_case("err-dotdot", 1, "src/chapter.md:3", |_| {});
}

#[test]
fn absolute_path() {
    assert_error_case("err-absolute", 1, "src/chapter.md:5", |_| {});
}

#[test]
fn symlink_out_of_the_tree() {
    let outside = tempfile::tempdir().unwrap();
    assert_error_case("err-symlink", 1, "src/chapter.md:4", |out| {
        std::os::unix::fs::symlink(outside.path(), out.join("nginx")).unwrap();
    });
    assert!(
        std::fs::read_dir(outside.path()).unwrap().next().is_none(),
        "wrote through the symlink"
    );
}

#[test]
fn target_colliding_with_a_directory() {
    // ok-basic wrote synapse/homeserver.yaml, so `synapse` is a directory in --out.
    assert_error_case("err-collision", 1, "src/chapter.md:4", |_| {});
}

#[test]
fn unterminated_fence() {
    assert_error_case("err-unterminated", 1, "src/chapter.md:5", |_| {});
}

#[test]
fn unknown_attribute() {
    assert_error_case("err-unknown-attr", 1, "src/chapter.md:3", |_| {});
}

#[test]
fn config_block_without_target_or_marker() {
    assert_error_case("err-unmarked", 1, "src/chapter.md:9", |_| {});
}

#[test]
fn unreadable_chapter_listed_in_summary() {
    assert_error_case("err-missing-chapter", 2, "src/SUMMARY.md:4", |_| {});
}

#[test]
fn non_utf8_chapter() {
    assert_error_case("err-not-utf8", 2, "src/chapter.md:4", |_| {});
}

#[test]
fn refuses_a_directory_it_did_not_write_unless_forced() {
    let out = tempfile::tempdir().unwrap();
    std::fs::write(out.path().join("precious.txt"), "mine").unwrap();
    let before = snapshot(out.path());
    let a = extract(&fixture("ok-basic"), out.path(), &[]).code(2);
    assert!(String::from_utf8_lossy(&a.get_output().stderr).contains("--force"));
    assert_eq!(snapshot(out.path()), before);
    extract(&fixture("ok-basic"), out.path(), &["--force"]).success();
    assert_eq!(
        std::fs::read_to_string(out.path().join("precious.txt")).unwrap(),
        "mine"
    );
}

#[test]
fn extraction_is_deterministic_and_removes_only_its_own_stale_files() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    extract(&fixture("ok-basic"), a.path(), &[]).success();
    extract(&fixture("ok-basic"), b.path(), &[]).success();
    let sa = snapshot(a.path());
    assert_eq!(sa, snapshot(b.path()));
    extract(&fixture("ok-basic"), a.path(), &[]).success();
    assert_eq!(snapshot(a.path()), sa, "a second run changes nothing");
    // The example block is not extracted; fragments are concatenated in reading order.
    let compose = std::fs::read_to_string(a.path().join("docker-compose.yml")).unwrap();
    assert!(
        compose.starts_with("services:\n  synapse:")
            && compose.contains("  db:\n    image: postgres")
    );
    assert_eq!(
        sa.keys().filter(|k| !k.ends_with('/')).count(),
        5,
        "{:?}",
        sa.keys()
    );

    // A runtime file the deployment created is never touched; a file the book dropped is removed.
    std::fs::write(a.path().join("synapse/runtime.log"), "x").unwrap();
    let smaller = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(smaller.path().join("src")).unwrap();
    std::fs::write(smaller.path().join("book.toml"), "[book]\n").unwrap();
    std::fs::write(
        smaller.path().join("src/SUMMARY.md"),
        "# S\n\n- [C](c.md)\n",
    )
    .unwrap();
    std::fs::write(
        smaller.path().join("src/c.md"),
        "```yaml title=\"docker-compose.yml\"\nservices: {}\n```\n",
    )
    .unwrap();
    extract(smaller.path(), a.path(), &[]).success();
    assert!(!a.path().join(".postgres.env").exists());
    assert!(!a.path().join("synapse/homeserver.yaml").exists());
    assert!(a.path().join("synapse/runtime.log").exists());
}

#[test]
fn generated_secrets() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    extract(
        &fixture("ok-basic"),
        a.path(),
        &["--secrets", "generate", "--server-name", "matrix.test.org"],
    )
    .success();
    extract(&fixture("ok-basic"), b.path(), &["--secrets", "generate"]).success();
    let env_a = std::fs::read_to_string(a.path().join(".postgres.env")).unwrap();
    let env_b = std::fs::read_to_string(b.path().join(".postgres.env")).unwrap();
    assert_ne!(env_a, env_b, "two runs give different secrets");
    let pw = env_a.trim().strip_prefix("POSTGRES_PASSWORD=").unwrap();
    assert!(pw.len() >= 32 && pw.chars().all(|c| c.is_ascii_alphanumeric()));
    let hs = std::fs::read_to_string(a.path().join("synapse/homeserver.yaml")).unwrap();
    assert!(
        hs.contains(&format!("password: {pw}")),
        "the shared secret is the same in every file"
    );
    assert!(hs.contains("server_name: matrix.test.org"));
    for (rel, (mode, content)) in snapshot(a.path()) {
        assert!(
            !String::from_utf8_lossy(&content).contains("CHANGEME"),
            "{rel} keeps a placeholder"
        );
        if rel == ".postgres.env" || rel.starts_with("synapse/") && !rel.ends_with('/') {
            assert_eq!(mode & 0o777, 0o600, "{rel} holds a secret");
        }
    }
    // --server-name renames the key file too (signing_key_path names the server).
    let key =
        std::fs::read_to_string(a.path().join("synapse/matrix.test.org.signing.key")).unwrap();
    let parts: Vec<&str> = key.trim_end().split(' ').collect();
    assert_eq!(parts.len(), 3);
    assert_eq!(parts[0], "ed25519");
    assert!(parts[1].starts_with("a_") && parts[1].len() > 2);
    use base64::Engine as _;
    let seed = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(parts[2])
        .unwrap();
    assert_eq!(seed.len(), 32);
}

/// When the pinned Synapse is installed, Synapse itself reads the generated key.
#[test]
fn synapse_accepts_the_generated_signing_key() {
    let python = xtask::tools::synapse_python();
    if !python.exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must install Synapse first (cargo xtask setup)"
        );
        return;
    }
    let out = tempfile::tempdir().unwrap();
    extract(&fixture("ok-basic"), out.path(), &["--secrets", "generate"]).success();
    let key = out.path().join("synapse/example.com.signing.key");
    let script = "import sys\nfrom signedjson.key import read_signing_keys\nks = read_signing_keys(open(sys.argv[1]))\nassert len(ks) == 1 and ks[0].alg == 'ed25519', ks\nprint(ks[0].version)";
    let o = std::process::Command::new(python)
        .args(["-c", script])
        .arg(&key)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let content = std::fs::read_to_string(&key).unwrap();
    assert!(content.contains(String::from_utf8_lossy(&o.stdout).trim()));
}

fn format_output(format: &str) -> String {
    let out = tempfile::tempdir().unwrap();
    let o = xtask()
        .args(["extract", "--format", format, "--book"])
        .arg(fixture("err-unmarked"))
        .arg("--out")
        .arg(out.path())
        .assert()
        .code(1);
    String::from_utf8(o.get_output().stdout.clone()).unwrap()
}

#[test]
fn json_format() {
    let s = format_output("json");
    let v: serde_json::Value = serde_json::from_str(&s).unwrap();
    assert_eq!(v[0]["file"], "src/chapter.md");
    insta::assert_snapshot!(s);
}

#[test]
fn github_format() {
    insta::assert_snapshot!(format_output("github"));
}

/// `--server-name matrix.example.org` on the book (whose server is `matrix.<server name>`)
/// would make the host `matrix.matrix.example.org`: extract says so, and what to pass instead.
#[test]
fn a_host_name_as_server_name_is_warned_about() {
    let book = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = tempfile::tempdir().unwrap();
    let a = extract(&book, out.path(), &["--server-name", "matrix.example.org"]).success();
    let err = String::from_utf8_lossy(&a.get_output().stderr).into_owned();
    assert!(
        err.contains("`matrix.matrix.example.org`") && err.contains("pass that instead"),
        "{err}"
    );
    let out = tempfile::tempdir().unwrap();
    let a = extract(&book, out.path(), &["--server-name", "example.org"]).success();
    let err = String::from_utf8_lossy(&a.get_output().stderr).into_owned();
    assert!(!err.contains("warning"), "{err}");
}
