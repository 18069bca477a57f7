//! The nginx lint corpus: `tests/fixtures/nginx/ok` lints clean, and each case in
//! `tests/fixtures/nginx/err/*.toml` (edits to `src/deploy.md` of that book) gives exactly its
//! expected error codes at the expected Markdown lines. Set `NGINX_FIXTURE=name` to run one case
//! and print everything it reports.

mod common;
use common::copy_dir;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use xtask::diagnostics::Severity;
use xtask::extract::{self, Options};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    #[allow(dead_code)]
    description: String,
    edit: Vec<Edit>,
    expect: Vec<Expect>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Edit {
    find: String,
    replace: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    code: String,
    line: usize,
}

fn dir() -> PathBuf {
    xtask::project_root().join("tests/fixtures/nginx")
}

fn lint(book_dir: &Path) -> Vec<(String, String, usize, String)> {
    let book = xtask::book::load(book_dir).expect("book loads");
    let tree = extract::assemble(&book, &Options::default()).expect("tree assembles");
    let mut d: Vec<_> = xtask::lint::nginx::check_tree(&tree)
        .into_iter()
        .filter(|d| d.severity == Severity::Error)
        .map(|d| (d.code, d.file, d.line, d.message))
        .collect();
    d.sort();
    d
}

#[test]
fn ok_book_lints_clean() {
    assert_eq!(lint(&dir().join("ok")), []);
}

#[test]
fn every_broken_case_reports_its_line() {
    let only = std::env::var("NGINX_FIXTURE").ok();
    let mut cases: Vec<PathBuf> = std::fs::read_dir(dir().join("err"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    cases.sort();
    assert!(cases.len() >= 15, "the corpus has {} cases", cases.len());
    let mut failures = Vec::new();
    for path in cases {
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        if only.as_ref().is_some_and(|o| o != &name) {
            continue;
        }
        let case: Case = toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        if case.expect.iter().any(|e| e.code == "nginx::gixy")
            && !xtask::lint::nginx::gixy::available()
        {
            eprintln!("{name}: gixy-ng not installed (cargo xtask setup): skipped");
            continue;
        }
        let tmp = tempfile::tempdir().unwrap();
        copy_dir(&dir().join("ok"), tmp.path());
        let md = tmp.path().join("src/deploy.md");
        let mut text = std::fs::read_to_string(&md).unwrap();
        for e in &case.edit {
            assert_eq!(
                text.matches(&e.find).count(),
                1,
                "{name}: `{}` must occur once",
                e.find
            );
            text = text.replacen(&e.find, &e.replace, 1);
        }
        std::fs::write(&md, text).unwrap();
        let got = lint(tmp.path());
        if only.is_some() {
            eprintln!("{got:#?}");
        }
        let mut want: Vec<(String, String, usize)> = case
            .expect
            .iter()
            .map(|e| (e.code.clone(), "src/deploy.md".to_string(), e.line))
            .collect();
        want.sort();
        let got3: Vec<(String, String, usize)> = got
            .iter()
            .map(|(c, f, l, _)| (c.clone(), f.clone(), *l))
            .collect();
        if got3 != want {
            failures.push(format!("{name}: expected {want:?}\n  got {got:#?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
