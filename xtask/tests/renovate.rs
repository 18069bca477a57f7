//! Every pin of the project has an update path, and the book runs exactly the images
//! versions.toml pins:
//!
//! - `renovate.json` is valid against Renovate's schema (check-jsonschema's vendored copy);
//! - its regex managers, run here as Renovate runs them (each `managerFilePatterns` regex on the
//!   repository's paths, each `matchStrings` regex over a whole file, named groups), find every
//!   version pinned in versions.toml, the workflows' `RUST_VERSION`, and every image of the
//!   book's Compose file and Dockerfiles, at the values they hold; its built-in managers cover
//!   the crates and the actions;
//! - the images the book's Compose file runs (a built image's `FROM`) are exactly
//!   `versions.toml [images]`, so a Renovate update of one without the other fails here.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    xtask::project_root()
}

fn renovate() -> serde_json::Value {
    let text = std::fs::read_to_string(root().join("renovate.json")).unwrap();
    serde_json::from_str(&text).expect("renovate.json is JSON")
}

/// A dependency a regex manager found.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Dep {
    file: String,
    datasource: String,
    name: String,
    value: String,
}

/// Every file of the repository a manager could look at: the top level, .github/ and src/.
fn repo_files() -> Vec<String> {
    fn walk(dir: &Path, base: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, base, out);
            } else {
                out.push(p.strip_prefix(base).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    let r = root();
    let mut out = Vec::new();
    for e in std::fs::read_dir(&r).unwrap().flatten() {
        if e.path().is_file() {
            out.push(e.file_name().to_string_lossy().into_owned());
        }
    }
    walk(&r.join(".github"), &r, &mut out);
    walk(&r.join("src"), &r, &mut out);
    out.sort();
    out
}

/// Renovate's template: `{{{name}}}`/`{{name}}` replaced by the capture.
fn template(t: Option<&str>, caps: &regex::Captures<'_>, group: &str) -> Option<String> {
    if let Some(m) = caps.name(group) {
        return Some(m.as_str().to_string());
    }
    let t = t?;
    let re = regex::Regex::new(r"\{\{\{?(\w+)\}?\}\}").unwrap();
    Some(
        re.replace_all(t, |c: &regex::Captures<'_>| {
            caps.name(&c[1])
                .map(|m| m.as_str().to_string())
                .unwrap_or_default()
        })
        .into_owned(),
    )
}

/// What the regex managers of renovate.json find in the repository.
fn found() -> Vec<Dep> {
    let cfg = renovate();
    let files = repo_files();
    let mut deps = Vec::new();
    for m in cfg["customManagers"].as_array().expect("customManagers") {
        assert_eq!(m["customType"], "regex");
        let patterns: Vec<regex::Regex> = m["managerFilePatterns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                let p = p.as_str().unwrap();
                let inner = p
                    .strip_prefix('/')
                    .and_then(|p| p.strip_suffix('/'))
                    .expect("a /regex/ file pattern");
                regex::Regex::new(inner).unwrap()
            })
            .collect();
        let strings: Vec<regex::Regex> = m["matchStrings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| regex::Regex::new(s.as_str().unwrap()).expect("a matchString Rust reads too"))
            .collect();
        let mut matched_files = 0;
        for f in files
            .iter()
            .filter(|f| patterns.iter().any(|p| p.is_match(f)))
        {
            matched_files += 1;
            let text = std::fs::read_to_string(root().join(f)).unwrap();
            for re in &strings {
                for caps in re.captures_iter(&text) {
                    deps.push(Dep {
                        file: f.clone(),
                        datasource: template(m["datasourceTemplate"].as_str(), &caps, "datasource")
                            .expect("a datasource"),
                        name: template(m["depNameTemplate"].as_str(), &caps, "depName")
                            .expect("a depName"),
                        value: caps["currentValue"].to_string(),
                    });
                }
            }
        }
        assert!(
            matched_files > 0,
            "manager {} matches no file",
            m["description"]
        );
    }
    deps
}

#[test]
fn renovate_json_is_valid_and_uses_the_built_in_managers() {
    let cfg = renovate();
    let enabled: Vec<&str> = cfg["enabledManagers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect();
    for m in ["cargo", "github-actions", "custom.regex"] {
        assert!(enabled.contains(&m), "{m} is enabled: {enabled:?}");
    }
    let bin = xtask::tools::py_tool("check-jsonschema", "check-jsonschema")
        .expect("check-jsonschema (cargo xtask setup pytools)");
    let out = std::process::Command::new(bin)
        .args(["--builtin-schema", "vendor.renovate"])
        .arg(root().join("renovate.json"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "renovate.json against Renovate's schema:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn every_pin_of_versions_toml_has_a_manager() {
    let deps = found();
    let in_versions: BTreeSet<(&str, &str)> = deps
        .iter()
        .filter(|d| d.file == "versions.toml")
        .map(|d| (d.name.as_str(), d.value.as_str()))
        .collect();
    let versions: toml::Table = std::fs::read_to_string(root().join("versions.toml"))
        .unwrap()
        .parse()
        .unwrap();
    // Keys that pin no version of a package: lists, and the sdist's checksum.
    let not_pins = ["extras", "packages", "sdist-sha256"];
    let mut pins = 0;
    for (section, table) in &versions {
        for (key, value) in table.as_table().unwrap() {
            let Some(value) = value.as_str() else {
                continue;
            };
            if not_pins.contains(&key.as_str()) {
                continue;
            }
            pins += 1;
            let covered = if section.starts_with("images") {
                in_versions.iter().any(|(n, v)| format!("{n}:{v}") == value)
            } else {
                in_versions.iter().any(|(_, v)| *v == value)
            };
            assert!(
                covered,
                "versions.toml [{section}] {key} = {value:?} has no `# renovate:` line above it \
                 (found: {in_versions:?})"
            );
        }
    }
    assert!(pins >= 14, "{pins} pins");
    for d in &deps {
        assert!(
            ["pypi", "crate", "npm", "docker", "github-tags"].contains(&d.datasource.as_str()),
            "{d:?}"
        );
    }

    // The toolchain of the workflows.
    let rust = deps
        .iter()
        .find(|d| d.name == "rust-lang/rust")
        .expect("RUST_VERSION has a manager");
    assert!(rust.file.starts_with(".github/workflows/"));
}

#[test]
fn the_book_images_and_versions_toml_images_update_together() {
    let deps = found();
    let pinned = xtask::images::pinned().unwrap();
    let book: BTreeSet<String> = deps
        .iter()
        .filter(|d| d.file.starts_with("src/") && d.datasource == "docker")
        // The book's own image (built from its Dockerfile, disabled in renovate.json).
        .filter(|d| d.name != "synapse-postgres")
        .map(|d| format!("{}:{}", d.name, d.value))
        .collect();
    let mut pins: BTreeSet<String> = pinned.values().cloned().collect();
    // The images the book names without the stack test running them.
    let versions: toml::Value =
        toml::from_str(&std::fs::read_to_string(root().join("versions.toml")).unwrap()).unwrap();
    let not_run = versions["images-not-run"]
        .as_table()
        .expect("[images-not-run]");
    assert!(!not_run.is_empty());
    pins.extend(not_run.values().map(|v| v.as_str().unwrap().to_string()));
    assert_eq!(
        book, pins,
        "the images Renovate finds in the book are versions.toml [images]"
    );
    let disabled = renovate()["packageRules"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["enabled"] == false && r["matchPackageNames"][0] == "synapse-postgres");
    assert!(disabled, "the book's own image is never looked up");
}

#[test]
fn the_compose_file_runs_exactly_the_pinned_images() {
    let standins = xtask::images::standins_of_book(&root()).expect("the book's Compose file");
    let run: BTreeSet<&str> = standins.iter().map(xtask::images::upstream).collect();
    let pinned = xtask::images::pinned().unwrap();
    let pins: BTreeSet<&str> = pinned.values().map(String::as_str).collect();
    assert_eq!(run, pins);
    xtask::images::check_pinned(&standins, &pinned).unwrap();
}
