//! Tidy: the repository's own rules, checked like rust-analyzer's `xtask tidy` does.
//!
//! - the modules of `xtask/src` import only modules of lower layers, as the layer table of
//!   `src/contributing/architecture.md` says (so the table and the code cannot drift apart), and
//!   the submodules of a module do not use each other in a cycle;
//! - `cargo fmt --check` is clean;
//! - every Rust file opens with its `//!` doc comment;
//! - every repository path a comment of the sources (Rust, TOML) cites exists (files of other
//!   projects are cited by URL);
//! - every diagnostic code is registered (`xtask/src/diagnostics/codes.rs`), and the registry is
//!   the table of `src/contributing/diagnostics.md` (`TIDY_BLESS=1` rewrites the table);
//! - no stray file (temporary files, editor backups, empty files) is tracked.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use xtask::diagnostics::codes::{CODES, Code, FAMILIES, Kind, Level};

fn root() -> PathBuf {
    xtask::project_root()
}

/// The repository's tracked files (git), relative to the root.
fn tracked() -> Vec<String> {
    let out = Command::new("git")
        .args(["ls-files", "-z"])
        .current_dir(root())
        .output()
        .expect("git runs");
    assert!(out.status.success(), "git ls-files failed");
    String::from_utf8(out.stdout)
        .expect("UTF-8 paths")
        .split('\0')
        .filter(|p| !p.is_empty() && root().join(p).exists())
        .map(String::from)
        .collect()
}

/// Every `.rs` file under `dir`, relative to it.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|e| e == "rs") {
                out.push(p.strip_prefix(dir).unwrap().to_path_buf());
            }
        }
    }
    out.sort();
    out
}

/// The code of a Rust file without its comments (line, doc and block comments) and without the
/// contents of its string literals (so neither can be taken for an import).
fn code_only(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    while i < b.len() {
        if b[i..].starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i..].starts_with(b"/*") {
            let mut depth = 0;
            while i < b.len() {
                if b[i..].starts_with(b"/*") {
                    depth += 1;
                    i += 2;
                } else if b[i..].starts_with(b"*/") {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if b[i] == b'r' && b.get(i + 1).is_some_and(|c| *c == b'"' || *c == b'#') {
            // raw string r"..." / r#"..."#
            let hashes = b[i + 1..].iter().take_while(|c| **c == b'#').count();
            let start = i + 1 + hashes;
            if b.get(start) == Some(&b'"') {
                let close: Vec<u8> = std::iter::once(b'"')
                    .chain(std::iter::repeat_n(b'#', hashes))
                    .collect();
                let end = b[start + 1..]
                    .windows(close.len())
                    .position(|w| w == close.as_slice())
                    .map_or(b.len(), |p| start + 1 + p + close.len());
                out.push_str("\"\"");
                i = end;
            } else {
                out.push('r');
                i += 1;
            }
        } else if b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if b[i] == b'\'' && b.get(i + 2) == Some(&b'\'') {
            // a char literal such as '{' (lifetimes have no closing quote)
            out.push_str("' '");
            i += 3;
        } else {
            let ch = src[i..].chars().next().unwrap();
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    out
}

/// The crate's top-level modules each `crate::` path of `code` names (`crate::a::b`,
/// `crate::{a, b::c}`).
fn crate_refs(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        let before = rest[..i].chars().next_back();
        rest = &rest[i + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue; // `xcrate::` or `x::crate::`, not ours
        }
        if let Some(group) = rest.strip_prefix('{') {
            // A use group: the first word of each top-level item.
            let mut depth = 0;
            let mut item = String::new();
            let mut first = true;
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        if first && !item.is_empty() {
                            out.insert(std::mem::take(&mut item));
                        }
                        first = true;
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                if first {
                    if c.is_alphanumeric() || c == '_' {
                        item.push(c);
                    } else if !item.is_empty() {
                        out.insert(std::mem::take(&mut item));
                        first = false;
                    }
                }
            }
            if first && !item.is_empty() {
                out.insert(item);
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                out.insert(name);
            }
        }
    }
    out.remove("self");
    out
}

/// The layer table of `src/contributing/architecture.md`: module -> layer (1 is the top).
fn layers() -> BTreeMap<String, usize> {
    let text = std::fs::read_to_string(root().join("src/contributing/architecture.md")).unwrap();
    let section = text
        .split("\n## ")
        .find(|s| s.starts_with("Layers"))
        .expect("architecture.md has a `## Layers` section");
    let mut out = BTreeMap::new();
    for line in section.lines().filter(|l| l.starts_with("| ")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let Ok(layer) = cells[1].parse::<usize>() else {
            continue; // the header row
        };
        for m in cells[2].split(',') {
            let m = m.trim().trim_matches('`');
            assert!(
                out.insert(m.to_string(), layer).is_none(),
                "`{m}` is in two layers"
            );
        }
    }
    assert!(out.len() > 10, "the layer table lists the modules: {out:?}");
    out
}

/// Items of the crate root (`lib.rs`) that every module may use.
const ROOT_ITEMS: &[&str] = &["project_root"];

#[test]
fn layers_only_point_down() {
    let layers = layers();
    let src = root().join("xtask/src");
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    let declared: BTreeSet<String> = lib
        .lines()
        .filter_map(|l| l.strip_prefix("pub mod "))
        .map(|m| m.trim_end_matches(';').to_string())
        .collect();
    let listed: BTreeSet<String> = layers.keys().cloned().collect();
    assert_eq!(
        declared, listed,
        "the modules of lib.rs and the layer table of architecture.md differ"
    );
    let mut wrong = Vec::new();
    for file in rust_files(&src) {
        let first = file
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let module = first.trim_end_matches(".rs").to_string();
        if module == "lib" || module == "main" {
            continue;
        }
        let own = layers[&module];
        let code = code_only(&std::fs::read_to_string(src.join(&file)).unwrap());
        for r in crate_refs(&code) {
            if r == module || ROOT_ITEMS.contains(&r.as_str()) {
                continue;
            }
            match layers.get(&r) {
                Some(&l) if l > own => {}
                Some(&l) => wrong.push(format!(
                    "{} (`{module}`, layer {own}) uses `crate::{r}` (layer {l}): a layer may use only the layers below it",
                    file.display()
                )),
                None => wrong.push(format!(
                    "{} uses `crate::{r}`, which is neither a module of the layer table nor a root item",
                    file.display()
                )),
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// The sibling submodules of module `m` that `code` (a file of `m`) names: `super::x`,
/// `super::{x, y}` and `crate::m::x`.
fn sibling_refs(code: &str, m: &str, siblings: &BTreeSet<String>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for prefix in ["super::".to_string(), format!("crate::{m}::")] {
        let mut rest = code;
        while let Some(i) = rest.find(&prefix) {
            let before = rest[..i].chars().next_back();
            rest = &rest[i + prefix.len()..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            let names: Vec<String> = match rest.strip_prefix('{') {
                Some(g) => g
                    .split('}')
                    .next()
                    .unwrap_or("")
                    .split([',', ' ', '\n'])
                    .map(|w| w.split("::").next().unwrap_or("").trim().to_string())
                    .collect(),
                None => vec![
                    rest.chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect(),
                ],
            };
            out.extend(names.into_iter().filter(|n| siblings.contains(n)));
        }
    }
    out
}

/// The nodes of `edges` from which a path leads back to themselves.
fn in_cycles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    fn reaches(
        edges: &BTreeMap<String, BTreeSet<String>>,
        from: &str,
        to: &str,
        seen: &mut BTreeSet<String>,
    ) -> bool {
        edges
            .get(from)
            .into_iter()
            .flatten()
            .any(|n| n == to || (seen.insert(n.clone()) && reaches(edges, n, to, seen)))
    }
    edges
        .keys()
        .filter(|n| reaches(edges, n, n, &mut BTreeSet::new()))
        .cloned()
        .collect()
}

#[test]
fn cycles_and_sibling_uses_are_found() {
    let edges: BTreeMap<String, BTreeSet<String>> = [
        ("report", &["kills"][..]),
        ("kills", &["checks"]),
        ("checks", &["report", "docker"]),
        ("docker", &[]),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
    .collect();
    assert_eq!(in_cycles(&edges), ["checks", "kills", "report"]);
    let siblings: BTreeSet<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
    let code = code_only("use super::{a, b::X};\nfn f() { crate::m::c::g(); super::d(); }");
    assert_eq!(
        sibling_refs(&code, "m", &siblings)
            .into_iter()
            .collect::<Vec<_>>(),
        ["a", "b", "c"]
    );
}

#[test]
fn submodules_have_no_cycles() {
    let src = root().join("xtask/src");
    let mut cycles = Vec::new();
    for e in std::fs::read_dir(&src).unwrap() {
        let dir = e.unwrap().path();
        if !dir.is_dir() {
            continue;
        }
        let m = dir.file_name().unwrap().to_string_lossy().into_owned();
        // Each submodule: a file `x.rs`, or a directory `x/` (its files count as `x`).
        let mut files: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
        for f in rust_files(&dir) {
            let first = f.components().next().unwrap().as_os_str().to_string_lossy();
            let sub = first.trim_end_matches(".rs").to_string();
            if sub != "mod" {
                files.entry(sub).or_default().push(dir.join(&f));
            }
        }
        let siblings: BTreeSet<String> = files.keys().cloned().collect();
        let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (sub, paths) in &files {
            for p in paths {
                let code = code_only(&std::fs::read_to_string(p).unwrap());
                // In a directory submodule, `super::` is the submodule itself.
                let is_dir_child = p.parent() != Some(dir.as_path());
                let mut refs = sibling_refs(&code, &m, &siblings);
                if is_dir_child {
                    refs.retain(|r| code.contains(&format!("crate::{m}::{r}")));
                }
                refs.remove(sub);
                edges.entry(sub.clone()).or_default().extend(refs);
            }
        }
        for sub in in_cycles(&edges) {
            cycles.push(format!("{m}::{sub} reaches itself: {edges:?}"));
        }
    }
    assert!(
        cycles.is_empty(),
        "submodules that use each other (move what both need to one of them):\n{}",
        cycles.join("\n")
    );
}

#[test]
fn the_import_scanner_sees_every_form() {
    let code = code_only(
        "use crate::{a, b::{c, d}, self};\n// crate::commented\nlet s = \"crate::quoted\";\nfn f() { crate::e::g(); x::crate::no; }\n/* crate::block */ let r = r#\"crate::raw\"#; let c = '{';",
    );
    let refs: Vec<String> = crate_refs(&code).into_iter().collect();
    assert_eq!(refs, ["a", "b", "e"]);
}

#[test]
fn rustfmt_is_clean() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let has_rustfmt = Command::new(&cargo)
        .args(["fmt", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_rustfmt {
        // A toolchain of rustup's minimal profile (`rustup component add rustfmt`).
        eprintln!("rustfmt is not installed: skipped");
        return;
    }
    let out = Command::new(cargo)
        .args(["fmt", "--all", "--check"])
        .current_dir(root())
        .output()
        .expect("cargo fmt runs");
    assert!(
        out.status.success(),
        "`cargo fmt --check` wants changes (run `cargo fmt`):\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn every_rust_file_opens_with_its_doc_comment() {
    let mut missing = Vec::new();
    for dir in ["xtask/src", "xtask/tests", "xtask/benches"] {
        let dir = root().join(dir);
        for f in rust_files(&dir) {
            let text = std::fs::read_to_string(dir.join(&f)).unwrap();
            if !text.trim_start().starts_with("//!") {
                missing.push(dir.join(f).display().to_string());
            }
        }
    }
    assert!(
        missing.is_empty(),
        "these files do not open with a `//!` comment saying what they are:\n{}",
        missing.join("\n")
    );
}

/// The comment part of a line (`//` in Rust, `#` in TOML), outside strings.
fn comment_of<'a>(path: &str, line: &'a str) -> Option<&'a str> {
    let marker = if path.ends_with(".rs") { "//" } else { "#" };
    let mut in_string = false;
    let mut escaped = false;
    for (i, c) in line.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if in_string => escaped = true,
            '"' => in_string = !in_string,
            _ if !in_string && line[i..].starts_with(marker) => return Some(&line[i..]),
            _ => {}
        }
    }
    None
}

/// Path-like words of a comment: `dir/file.ext` or `file.ext`, not inside a URL.
fn cited_paths(comment: &str) -> Vec<String> {
    const EXTS: &[&str] = &[
        "md", "rs", "toml", "yml", "yaml", "json", "sh", "py", "c", "txt", "lock",
    ];
    let mut out = Vec::new();
    for word in comment.split(|c: char| c.is_whitespace() || "`'\"()[],;<>*".contains(c)) {
        let word = word.trim_end_matches([':', '.', '!', '?']);
        if word.contains("://") || word.starts_with('.') || word.starts_with('/') {
            continue;
        }
        let Some((_, ext)) = word.rsplit_once('.') else {
            continue;
        };
        if !EXTS.contains(&ext)
            || !word
                .chars()
                .all(|c| c.is_alphanumeric() || "/._-".contains(c))
        {
            continue;
        }
        out.push(word.to_string());
    }
    out
}

#[test]
fn comments_cite_paths_that_exist() {
    let files = tracked();
    let set: BTreeSet<&str> = files.iter().map(String::as_str).collect();
    let tops: BTreeSet<&str> = files
        .iter()
        .filter_map(|f| f.split_once('/').map(|(d, _)| d))
        .collect();
    let basenames: BTreeSet<&str> = files
        .iter()
        .map(|f| f.rsplit('/').next().unwrap())
        .collect();
    let exists = |p: &str| {
        set.contains(p)
            || set.contains(format!("xtask/{p}").as_str())
            || set.contains(format!("xtask/src/{p}").as_str())
            || files.iter().any(|f| f.ends_with(&format!("/{p}")))
    };
    let mut bad = Vec::new();
    // The sources and their configuration (scripts name the files they are about to write).
    for f in files
        .iter()
        .filter(|f| f.ends_with(".rs") || f.ends_with(".toml"))
    {
        let Ok(text) = std::fs::read_to_string(root().join(f)) else {
            continue;
        };
        for (n, line) in text.lines().enumerate() {
            let Some(comment) = comment_of(f, line) else {
                continue;
            };
            for p in cited_paths(comment) {
                let first = p.split('/').next().unwrap();
                let is_doc = p.ends_with(".md");
                let rooted = p.contains('/') && tops.contains(first);
                let ok = if !p.contains('/') {
                    !is_doc || basenames.contains(p.as_str())
                } else if is_doc || rooted {
                    exists(&p)
                } else {
                    true // a path of the deployment tree or of another project's source
                };
                if !ok {
                    bad.push(format!("{f}:{}: `{p}`", n + 1));
                }
            }
        }
    }
    assert!(
        bad.is_empty(),
        "comments cite files that are not in the repository (cite other projects' files by URL):\n{}",
        bad.join("\n")
    );
}

#[test]
fn the_path_finder_sees_citations_not_urls() {
    assert_eq!(
        comment_of("a.rs", r#"let s = "x // y"; // z"#),
        Some("// z")
    );
    assert_eq!(comment_of("a.toml", "k = 1 # c"), Some("# c"));
    assert_eq!(
        cited_paths("// see DESIGN.md and `src/a.md`, https://x.org/docs/b.md, ./c.md, d.rs."),
        ["DESIGN.md", "src/a.md", "d.rs"]
    );
}

fn kind(c: &Code) -> &'static str {
    match c.kind {
        Kind::Input => "unreadable input (exit 2)",
        Kind::Finding => "finding",
    }
}

fn level(c: &Code) -> &'static str {
    match c.level {
        Level::Error => "error",
        Level::Warning => "warning",
        Level::Tool => "as the tool rates it",
    }
}

/// The table of `src/contributing/diagnostics.md`, from the registry.
fn codes_table() -> String {
    let mut out = String::from("| code | kind | severity | meaning |\n| --- | --- | --- | --- |\n");
    for c in CODES {
        out.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            c.name,
            kind(c),
            level(c),
            c.doc.replace('|', "\\|")
        ));
    }
    for f in FAMILIES {
        out.push_str(&format!(
            "| `{}…` | {} | {} | {} |\n",
            f.name,
            kind(f),
            level(f),
            f.doc.replace('|', "\\|")
        ));
    }
    out
}

const START: &str =
    "<!-- codes: generated from xtask/src/diagnostics/codes.rs by tests/tidy.rs -->\n";
const END: &str = "<!-- end of codes -->";

#[test]
fn every_code_is_registered_and_documented() {
    // Every code-like literal of the source is a registered code.
    let registered: BTreeSet<&str> = CODES.iter().map(|c| c.name).collect();
    let src = root().join("xtask/src");
    let mut unknown = Vec::new();
    for f in rust_files(&src) {
        let text = std::fs::read_to_string(src.join(&f)).unwrap();
        let body = text.split("#[cfg(test)]").next().unwrap();
        for lit in body.split('"').skip(1).step_by(2) {
            let Some((area, name)) = lit.split_once("::") else {
                continue;
            };
            let code_like = !area.is_empty()
                && area.bytes().all(|b| b.is_ascii_lowercase())
                && !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if code_like && !registered.contains(lit) {
                unknown.push(format!("{}: `{lit}`", f.display()));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "codes missing from xtask/src/diagnostics/codes.rs:\n{}",
        unknown.join("\n")
    );
    // The contributing page shows the registry.
    let page = root().join("src/contributing/diagnostics.md");
    let text = std::fs::read_to_string(&page).unwrap();
    let (before, rest) = text
        .split_once(START)
        .expect("diagnostics.md has the start marker");
    let (table, after) = rest
        .split_once(END)
        .expect("diagnostics.md has the end marker");
    let want = codes_table();
    if table != want {
        if std::env::var_os("TIDY_BLESS").is_some() {
            std::fs::write(&page, format!("{before}{START}{want}{END}{after}")).unwrap();
        } else {
            panic!(
                "src/contributing/diagnostics.md does not show the registry: run `TIDY_BLESS=1 cargo test -p xtask --test tidy`"
            );
        }
    }
}

#[test]
fn no_stray_files_are_tracked() {
    let stray: Vec<String> = tracked()
        .into_iter()
        .filter(|f| {
            let name = f.rsplit('/').next().unwrap();
            [".tmp", ".orig", ".rej", ".swp", ".swo", ".bak", "~"]
                .iter()
                .any(|s| name.ends_with(s))
                || name == ".DS_Store"
                || std::fs::metadata(root().join(f)).is_ok_and(|m| m.is_file() && m.len() == 0)
        })
        .collect();
    assert!(
        stray.is_empty(),
        "stray files are tracked (temporary, backup or empty): {stray:?}"
    );
}
