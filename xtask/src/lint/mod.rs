//! `cargo xtask lint`: every check that can run before anything starts.
//!
//! [`run`] assembles the main tree and every variant tree of the book and runs each area on
//! each, then the checks that are about the book itself. Each area lives in its own module and
//! reports [`Diagnostic`]s at the Markdown line a contributor edits:
//!
//! - [`yaml`]: syntax, duplicate keys, tabs, YAML 1.1 traps (and the span-keeping tree the other
//!   YAML checks read);
//! - [`compose`]: the real Docker Compose v2 on the tree ([`compose_config`]: `docker compose
//!   config`), and every file, service and socket a service refers to;
//! - [`synapse`]: consistency between `homeserver.yaml`, the worker files, Compose, PostgreSQL
//!   and Redis (stream writers, `instance_map`, listeners, sockets, log configs), and the pinned
//!   Synapse's own config check;
//! - [`postgres`]: `postgresql.conf` checked by the installed PostgreSQL server;
//! - [`shell`]: shellcheck on every script;
//! - [`security`]: IP range blacklists, no placeholder left in a tree with generated secrets;
//! - [`links`]: internal links and `#anchors` between the book's pages.
//!
//! Support: [`model`] (Compose services and Synapse processes with their mounts, commands and
//! listeners, container paths mapped to tree paths), [`synapse_config`] (the pinned Synapse's own
//! config check), [`cache`] (answers of external tools, so an unchanged book lints in well under
//! a second).
//!
//! The nginx checks are `crate::nginx::lint::check` (its own module, `nginx/`), run on every tree
//! from here.

pub mod cache;
pub mod compose;
pub mod compose_config;
pub mod links;
pub mod model;
pub mod postgres;
pub mod security;
pub mod shell;
pub mod synapse;
pub mod synapse_config;
pub mod yaml;

use crate::book::{BlockKind, Book};
use crate::diagnostics::{Diagnostic, MdLoc};
use crate::extract::{self, Tree, TreeFile};
use std::collections::BTreeMap;

/// One assembled tree with its YAML files parsed once for every check.
pub struct TreeView<'a> {
    pub tree: &'a Tree,
    /// Parsed YAML files by path.
    pub yaml: BTreeMap<String, yaml::Loaded>,
}

impl<'a> TreeView<'a> {
    pub fn new(tree: &'a Tree) -> Self {
        let yaml = tree
            .files
            .values()
            .filter(|f| is_yaml(f))
            .map(|f| (f.path.clone(), yaml::load(&f.content)))
            .collect();
        TreeView { tree, yaml }
    }

    pub fn file(&self, path: &str) -> Option<&TreeFile> {
        self.tree.get(path)
    }

    /// The root node of a YAML file that parsed cleanly.
    pub fn yaml_root(&self, path: &str) -> Option<&yaml::Node> {
        self.yaml.get(path).and_then(yaml::Loaded::root)
    }

    /// Markdown location of line `line` (1-based) of the tree file `path`.
    pub fn loc(&self, path: &str, line: usize) -> MdLoc {
        self.file(path)
            .map_or_else(|| MdLoc::new("book.toml", 1), |f| f.md_loc(line))
    }
}

/// Whether a tree file is YAML (by language or extension).
pub fn is_yaml(f: &TreeFile) -> bool {
    matches!(f.lang.as_str(), "yaml" | "yml")
        || f.path.ends_with(".yaml")
        || f.path.ends_with(".yml")
}

/// Which of the slower checks run.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Run the pinned Synapse's own config check (imports Synapse: seconds, uncached).
    pub synapse_config: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            synapse_config: true,
        }
    }
}

/// Everything lint reports for a loaded book.
pub fn run(book: &Book) -> Vec<Diagnostic> {
    run_with(book, Options::default())
}

/// [`run`] with some checks switched off (for tests that do not need them).
pub fn run_with(book: &Book, opts: Options) -> Vec<Diagnostic> {
    let mut diags = Vec::new();
    let mut trees = Vec::new();
    for variant in std::iter::once(None).chain(extract::variants(book).into_iter().map(Some)) {
        match extract::assemble(
            book,
            &extract::Options {
                variant,
                ..extract::Options::default()
            },
        ) {
            Ok(t) => trees.push(t),
            Err(mut d) => diags.append(&mut d),
        }
    }
    for tree in &trees {
        diags.append(&mut check_tree(tree, opts));
    }
    diags.append(&mut check_examples(book));
    diags.append(&mut links::check(book));
    diags.append(&mut security::check_generated_secrets(book));
    diags.sort_by(|a, b| {
        (&a.file, a.line, &a.code, &a.message).cmp(&(&b.file, b.line, &b.code, &b.message))
    });
    diags.dedup_by(|a, b| {
        a.file == b.file && a.line == b.line && a.code == b.code && a.message == b.message
    });
    diags
}

/// Every check that reads one assembled tree.
pub fn check_tree(tree: &Tree, opts: Options) -> Vec<Diagnostic> {
    let view = TreeView::new(tree);
    let mut diags = Vec::new();
    for (path, loaded) in &view.yaml {
        let f = &tree.files[path];
        for issue in &loaded.issues {
            diags.push(issue_diag(issue, &f.md_loc(issue.line), path, issue.line));
        }
    }
    diags.append(&mut compose::check(&view));
    diags.append(&mut synapse::check(&view));
    if opts.synapse_config {
        diags.append(&mut synapse_config::check(&view));
    }
    diags.append(&mut postgres::check(&view));
    diags.append(&mut shell::check(&view));
    diags.append(&mut security::check_tree(&view));
    // The nginx checks read the Synapse model through `crate::yaml`, which has no alias
    // expansion guard: never hand them a file the YAML checks refused as too complex.
    if !view
        .yaml
        .values()
        .any(|l| l.issues.iter().any(|i| i.code == "yaml::too-complex"))
    {
        diags.append(&mut crate::nginx::lint::check(tree));
    }
    diags
}

fn issue_diag(issue: &yaml::Issue, at: &MdLoc, path: &str, line: usize) -> Diagnostic {
    let d = if issue.error {
        Diagnostic::error(issue.code, issue.message.clone(), at)
    } else {
        Diagnostic::warning(issue.code, issue.message.clone(), at)
    };
    d.with_note(format!("in {path}, line {line}"))
}

/// `example` blocks are checked alone: YAML for syntax, shell with shellcheck.
fn check_examples(book: &Book) -> Vec<Diagnostic> {
    let mut diags = Vec::new();
    for b in book.blocks() {
        if b.kind != BlockKind::Example {
            continue;
        }
        match b.lang.as_str() {
            "yaml" | "yml" => {
                let last = b.text.lines().count().max(1) - 1;
                for issue in yaml::load(&b.text).issues {
                    let line = (issue.line.max(1) - 1).min(last);
                    diags.push(issue_diag(
                        &issue,
                        &b.line_loc(line),
                        "an example block",
                        issue.line,
                    ));
                }
            }
            "sh" | "bash" | "shell" => diags.append(&mut shell::check_example(b)),
            "nginx" => diags.append(&mut crate::nginx::lint::check_example(b)),
            _ => {}
        }
    }
    diags
}
