//! `cargo xtask lint`: every check that can run before anything starts.
//!
//! The checks read one assembled tree through a [`TreeView`]: the tree and the models the
//! analysis built once for it (the Compose model, the Synapse deployment, the nginx configuration
//! and the router), lent, never rebuilt here. Each area lives in its own module and reports
//! [`Diagnostic`]s at the Markdown line a contributor edits:
//!
//! - [`yaml`]: syntax, duplicate keys, tabs, YAML 1.1 traps (on the one YAML loader);
//! - [`compose`]: the real Docker Compose v2 on the tree ([`compose_config`]: `docker compose
//!   config`), and every file, service and socket a service refers to;
//! - [`synapse`]: consistency between `homeserver.yaml`, the worker files, Compose, PostgreSQL
//!   and Redis (stream writers, `instance_map`, listeners, sockets, log configs), and the pinned
//!   Synapse's own config check ([`synapse_config`]);
//! - [`nginx`]: the nginx configuration (directive table, variables, upstreams, sockets, admin
//!   API, TLS), the real `nginx -t` and gixy-ng;
//! - [`postgres`]: `postgresql.conf` checked by the installed PostgreSQL server;
//! - [`shell`]: shellcheck on every script;
//! - [`prometheus`]: `promtool check config` and every Synapse metrics listener a target;
//! - [`security`]: IP range blacklists, no placeholder left in a tree with generated secrets;
//! - [`outer_proxy`]: the reader's own proxy in front (body limit, where it passes requests);
//! - [`links`]: internal links and `#anchors` between the book's pages.
//!
//! The external checkers' answers are cached ([`crate::cache`]), so an unchanged book lints
//! without starting them. The whole run over a book (every variant, examples, links) is
//! [`crate::analysis`]'s.

pub mod compose;
pub mod compose_config;
pub mod links;
pub mod nginx;
pub mod outer_proxy;
pub mod postgres;
pub mod prometheus;
pub mod security;
pub mod shell;
pub mod synapse;
pub mod synapse_config;
pub mod yaml;

use crate::book::{BlockKind, Book};
use crate::compose::Compose;
use crate::diagnostics::{Diagnostic, MdLoc};
use crate::nginx::config::Config;
use crate::route::Router;
use crate::synapse::Deployment;
use crate::tree::{Tree, TreeFile};
use crate::yaml::{Issue, Node};
use std::collections::BTreeMap;

/// One assembled tree and its models, as every check of the tree reads them.
pub struct TreeView<'a> {
    pub tree: &'a Tree,
    /// The YAML findings of every YAML file, by path (empty: the file is clean).
    pub yaml: BTreeMap<String, Vec<Issue>>,
    compose: Option<&'a Compose>,
    synapse: &'a Result<Option<Deployment>, Vec<Diagnostic>>,
    /// The nginx configuration (None: the tree has none).
    pub nginx: Option<&'a Result<Config, Vec<Diagnostic>>>,
    pub router: Option<&'a Result<Router, Vec<Diagnostic>>>,
    /// The Compose service running each Synapse process, worked out once.
    services: std::sync::OnceLock<BTreeMap<String, usize>>,
}

/// The models of one tree a [`TreeView`] lends to the checks.
pub struct Models<'a> {
    pub compose: Option<&'a Compose>,
    pub synapse: &'a Result<Option<Deployment>, Vec<Diagnostic>>,
    pub nginx: Option<&'a Result<Config, Vec<Diagnostic>>>,
    pub router: Option<&'a Result<Router, Vec<Diagnostic>>>,
}

impl<'a> TreeView<'a> {
    pub fn new(tree: &'a Tree, models: Models<'a>) -> Self {
        let yaml = tree
            .files
            .values()
            .filter(|f| f.is_yaml())
            .map(|f| (f.path.clone(), yaml::issues(&f.content, f.yaml())))
            .collect();
        TreeView {
            tree,
            yaml,
            compose: models.compose,
            synapse: models.synapse,
            nginx: models.nginx,
            router: models.router,
            services: std::sync::OnceLock::new(),
        }
    }

    /// The Compose service running a Synapse process (see
    /// [`Deployment::service_of`]), when the Compose file and the deployment are clean.
    pub fn service_of(&self, p: &crate::synapse::Process) -> Option<&'a crate::compose::Service> {
        let compose = self.compose()?;
        let map = self.services.get_or_init(|| {
            let Some(d) = self.synapse() else {
                return BTreeMap::new();
            };
            d.processes
                .iter()
                .filter_map(|p| {
                    let s = d.service_of(compose, p)?;
                    let i = compose.services.iter().position(|x| x.name == s.name)?;
                    Some((p.name.clone(), i))
                })
                .collect()
        });
        map.get(&p.name).map(|&i| &compose.services[i])
    }

    pub fn file(&self, path: &str) -> Option<&TreeFile> {
        self.tree.get(path)
    }

    /// The root node of a YAML file without YAML findings.
    pub fn yaml_root(&self, path: &str) -> Option<&Node> {
        if self.yaml.get(path).is_some_and(Vec::is_empty) {
            self.tree.get(path).and_then(TreeFile::yaml_root)
        } else {
            None
        }
    }

    /// Whether every YAML file of the tree is clean.
    pub fn yaml_clean(&self) -> bool {
        self.yaml.values().all(Vec::is_empty)
    }

    /// The Compose model, when the Compose file is clean YAML.
    pub fn compose(&self) -> Option<&'a Compose> {
        self.compose
            .filter(|c| self.yaml.get(&c.path).is_some_and(Vec::is_empty))
    }

    /// The Synapse deployment, when every file of it is clean YAML.
    pub fn synapse(&self) -> Option<&'a Deployment> {
        let Ok(Some(d)) = self.synapse else {
            return None;
        };
        let clean = |f: &str| self.yaml.get(f).is_some_and(Vec::is_empty);
        (clean(&d.shared_file) && d.worker_roots.keys().all(|f| clean(f))).then_some(d)
    }

    /// The Synapse deployment as the model built it (whatever the YAML findings).
    pub fn deployment(&self) -> Option<&'a Deployment> {
        self.synapse.as_ref().ok().and_then(Option::as_ref)
    }

    /// Markdown location of line `line` (1-based) of the tree file `path`.
    pub fn loc(&self, path: &str, line: usize) -> MdLoc {
        self.file(path)
            .map_or_else(|| MdLoc::new("book.toml", 1), |f| f.md_loc(line))
    }
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

/// Every check that reads one assembled tree.
pub fn check_tree(view: &TreeView<'_>, opts: Options) -> Vec<Diagnostic> {
    let mut diags = Vec::new();
    for (path, issues) in &view.yaml {
        let f = &view.tree.files[path];
        for issue in issues {
            diags.push(issue_diag(issue, &f.md_loc(issue.line), path, issue.line));
        }
    }
    diags.append(&mut compose::check(view));
    diags.append(&mut synapse::check(view));
    if opts.synapse_config {
        diags.append(&mut synapse_config::check(view));
    }
    diags.append(&mut postgres::check(view));
    diags.append(&mut shell::check(view));
    diags.append(&mut prometheus::check(view));
    diags.append(&mut security::check_tree(view));
    diags.append(&mut nginx::check(view));
    diags.append(&mut outer_proxy::check(view));
    diags
}

fn issue_diag(issue: &Issue, at: &MdLoc, path: &str, line: usize) -> Diagnostic {
    Diagnostic::error(issue.code, issue.message.clone(), at)
        .with_note(format!("in {path}, line {line}"))
}

/// `example` blocks are checked alone: YAML for syntax, shell with shellcheck, nginx for its
/// directives and regexes.
pub fn check_examples(book: &Book) -> Vec<Diagnostic> {
    let mut diags = Vec::new();
    for b in book.blocks() {
        if b.kind != BlockKind::Example {
            continue;
        }
        match b.lang.as_str() {
            "yaml" | "yml" => {
                let last = b.text.lines().count().max(1) - 1;
                for issue in yaml::check(&b.text) {
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
            "nginx" => diags.append(&mut nginx::check_example(b)),
            _ => {}
        }
    }
    diags
}
