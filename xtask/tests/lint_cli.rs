//! `cargo xtask lint` as a user runs it: formats (the JSON fields of the CLI contract in
//! `src/contributing/architecture.md`, GitHub annotations, human text) and exit statuses (0
//! clean, 1 findings, 2 unreadable input).

mod common;
use assert_cmd::Command;
use common::copy_dir;
use std::path::{Path, PathBuf};

fn ok_book() -> PathBuf {
    xtask::project_root().join("tests/fixtures/lint/ok")
}

/// The ok book with `restart: "no"` unquoted (src/compose.md line 26).
fn broken_book() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&ok_book(), tmp.path());
    let p = tmp.path().join("src/compose.md");
    let text = std::fs::read_to_string(&p).unwrap();
    std::fs::write(&p, text.replacen("restart: \"no\"", "restart: no", 1)).unwrap();
    tmp
}

fn lint(book: &Path, format: &str) -> std::process::Output {
    Command::cargo_bin("xtask")
        .unwrap()
        .args(["lint", "--format", format, "--book"])
        .arg(book)
        .output()
        .unwrap()
}

#[test]
fn clean_book_exits_0() {
    let out = lint(&ok_book(), "json");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        v.as_array()
            .unwrap()
            .iter()
            .all(|d| d["severity"] == "warning"),
        "{v}"
    );
}

#[test]
fn json_has_the_contract_fields() {
    let book = broken_book();
    let out = lint(book.path(), "json");
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let found = v
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["code"] == "yaml::yaml11-boolean")
        .unwrap_or_else(|| panic!("no yaml11-boolean in {v}"));
    assert_eq!(found["severity"], "error");
    assert_eq!(found["file"], "src/compose.md");
    assert_eq!(found["line"], 26);
    assert!(
        found["message"]
            .as_str()
            .unwrap()
            .contains("restart: \\\"no\\\"")
            || found["message"]
                .as_str()
                .unwrap()
                .contains("restart: \"no\"")
    );
    let keys: Vec<&String> = found.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["code", "file", "line", "message", "severity"]);
}

#[test]
fn github_annotations_point_at_the_markdown() {
    let book = broken_book();
    let out = lint(book.path(), "github");
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("::error file=src/compose.md,line=26,title=yaml%3A%3Ayaml11-boolean::"),
        "{text}"
    );
}

#[test]
fn human_output_shows_the_source_line() {
    let book = broken_book();
    let out = lint(book.path(), "human");
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8(out.stderr).unwrap();
    assert!(text.contains("error[yaml::yaml11-boolean]"), "{text}");
    assert!(text.contains("--> src/compose.md:26"), "{text}");
    assert!(text.contains("26 |     restart: no"), "{text}");
}

#[test]
fn unmarked_block_and_unreadable_book() {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&ok_book(), tmp.path());
    let p = tmp.path().join("src/scripts.md");
    std::fs::write(&p, "# Scripts\n\n```bash\necho hi\n```\n").unwrap();
    let out = lint(tmp.path(), "json");
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["code"], "book::unmarked-config-block");
    assert_eq!(v[0]["file"], "src/scripts.md");
    assert_eq!(v[0]["line"], 3);

    let out = lint(&tmp.path().join("nope"), "json");
    assert_eq!(out.status.code(), Some(2));
}
