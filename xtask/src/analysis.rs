//! One analysis per tree and variant, shared by `check`, `lint` and the mdBook preprocessor.
//!
//! [`Analysis::new`] assembles the main tree and every variant tree of the book once, and for
//! each builds its models once: the Compose model, the Synapse deployment, the nginx
//! configuration and the router (each YAML file is parsed once, by the tree). The checks then
//! borrow them: [`Analysis::lint`] runs every lint area on every tree (plus the examples, the
//! links and the generated-secrets extraction), [`Analysis::routes`] asserts the `routes` blocks
//! on the main tree, [`Analysis::check`] is both plus a real write of the main tree, and
//! [`site`] gives the preprocessor the same results and the pages' data.
//!
//! The variant loop is here and nowhere else.

use crate::book::{self, Book};
use crate::compose::Compose;
use crate::diagnostics::{self, Diagnostic, Severity};
use crate::extract::{self, Options};
use crate::lint::{self, Models, TreeView};
use crate::nginx::config::{self, Config};
use crate::preprocess::{self, Site};
use crate::route::{self, Router};
use crate::secrets::Secrets;
use crate::synapse::Deployment;
use crate::tree::Tree;
use std::path::Path;

/// One assembled tree and the models built from it.
pub struct TreeAnalysis {
    pub tree: Tree,
    pub compose: Option<std::sync::Arc<Compose>>,
    pub synapse: Result<Option<Deployment>, Vec<Diagnostic>>,
    /// The nginx configuration (None: the tree has none).
    pub nginx: Option<Result<Config, Vec<Diagnostic>>>,
    /// The routing model of that configuration (an error when there is none).
    pub router: Result<Router, Vec<Diagnostic>>,
}

impl TreeAnalysis {
    /// Builds every model of `tree`, once.
    pub fn new(tree: Tree) -> TreeAnalysis {
        let nginx = config::root_file(&tree).map(|_| config::load(&tree));
        let router = match &nginx {
            Some(Ok(cfg)) => Router::from_config(&tree, cfg),
            Some(Err(d)) => Err(d.clone()),
            None => Err(config::load(&tree).err().unwrap_or_default()),
        };
        TreeAnalysis {
            compose: Compose::from_tree(&tree),
            synapse: Deployment::from_tree(&tree),
            nginx,
            router,
            tree,
        }
    }

    /// The tree and its models as the lint checks read them.
    pub fn view(&self) -> TreeView<'_> {
        TreeView::new(
            &self.tree,
            Models {
                compose: self.compose.as_deref(),
                synapse: &self.synapse,
                nginx: self.nginx.as_ref(),
                router: self.nginx.as_ref().map(|_| &self.router),
            },
        )
    }
}

/// The book, its trees (main and variants) and their models.
pub struct Analysis {
    pub book: Book,
    /// The main tree (None when it does not assemble).
    pub main: Option<TreeAnalysis>,
    /// Every variant tree that assembles, in name order.
    pub variants: Vec<TreeAnalysis>,
    /// Why a tree did not assemble.
    pub assembly: Vec<Diagnostic>,
}

impl Analysis {
    /// Loads the book at `root` and analyses it; Err when the book cannot be read.
    pub fn of_book(root: &Path) -> Result<Analysis, Vec<Diagnostic>> {
        crate::cache::for_book(root);
        Ok(Analysis::new(book::load(root)?))
    }

    /// Assembles the main tree and every variant, and builds their models (the trees on threads
    /// of their own: they share nothing but the parses they have in common).
    pub fn new(book: Book) -> Analysis {
        let mut assembly = Vec::new();
        let built = parallel(extract::trees(&book), |variant| {
            let opts = Options {
                variant: variant.clone(),
                ..Options::default()
            };
            extract::assemble(&book, &opts).map(|t| (variant, TreeAnalysis::new(t)))
        });
        let mut trees = built
            .into_iter()
            .filter_map(|r| match r {
                Ok(t) => Some(t),
                Err(mut d) => {
                    assembly.append(&mut d);
                    None
                }
            })
            .peekable();
        let main = trees.next_if(|(v, _)| v.is_none()).map(|(_, t)| t);
        let variants = trees.map(|(_, t)| t).collect();
        Analysis {
            book,
            main,
            variants,
            assembly,
        }
    }

    /// The main tree, then every variant tree.
    pub fn trees(&self) -> impl Iterator<Item = &TreeAnalysis> {
        self.main.iter().chain(&self.variants)
    }

    /// Everything `cargo xtask lint` reports: assembly errors, every lint area on every tree,
    /// the example blocks, the links, and the trees extracted with generated secrets.
    pub fn lint(&self, opts: lint::Options) -> Vec<Diagnostic> {
        enum Job<'a> {
            Tree(&'a TreeAnalysis),
            Generated(Option<String>),
            Book,
        }
        let jobs = self
            .trees()
            .map(Job::Tree)
            .chain(extract::trees(&self.book).into_iter().map(Job::Generated))
            .chain([Job::Book]);
        let found = parallel(jobs.collect(), |job| match job {
            Job::Tree(t) => lint::check_tree(&t.view(), opts),
            // Assembly errors are reported from the trees with the book's placeholders.
            Job::Generated(variant) => extract::assemble(
                &self.book,
                &Options {
                    variant,
                    secrets: Secrets::Generate,
                    ..Options::default()
                },
            )
            .map(|tree| lint::security::placeholders_left(&tree))
            .unwrap_or_default(),
            Job::Book => {
                let mut d = lint::check_examples(&self.book);
                d.append(&mut lint::links::check(&self.book));
                d
            }
        });
        let mut diags = self.assembly.clone();
        diags.extend(self.book.warnings.iter().cloned());
        diags.extend(found.into_iter().flatten());
        unique(diags)
    }

    /// Every `routes` block asserted on the main tree (see [`route::check::check`]).
    pub fn routes(&self) -> Vec<Diagnostic> {
        let Some(t) = &self.main else {
            return Vec::new();
        };
        let (samples, mut diags) = route::routes::samples(&self.book);
        diags.append(&mut route::check::check(
            &samples, &t.tree, &t.router, &t.synapse,
        ));
        diags
    }

    /// Everything `cargo xtask check` reports: [`Analysis::lint`], [`Analysis::routes`], and the
    /// main tree written for real into a temporary directory (on a thread of its own: it waits
    /// on the filesystem while the checks compute).
    pub fn check(&self) -> Vec<Diagnostic> {
        std::thread::scope(|s| {
            let written = self
                .main
                .as_ref()
                .map(|t| s.spawn(|| write_to_temp(&t.tree)));
            let mut diags = self.lint(lint::Options::default());
            diags.append(&mut self.routes());
            if let Some(w) = written {
                diags.append(&mut w.join().expect("writing the tree does not panic"));
            }
            unique(diags)
        })
    }
}

/// Writes `tree` into a fresh temporary directory with [`extract::write_tree`] and removes it
/// (in `/dev/shm` where there is one: a memory filesystem makes and drops files fastest).
fn write_to_temp(tree: &Tree) -> Vec<Diagnostic> {
    let shm = Path::new("/dev/shm");
    let base = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    // A fresh directory of ours: the temporary directory itself is never created.
    let tmp = match crate::contain::scratch("check", Some(&base)) {
        Ok(t) => t,
        Err(e) => {
            return vec![Diagnostic::error(
                "extract::io",
                format!("cannot make a directory to write the tree into: {e}"),
                &crate::diagnostics::MdLoc::new("book.toml", 1),
            )];
        }
    };
    let res = extract::write_tree(tree, &tmp, false);
    let _ = std::fs::remove_dir_all(&tmp);
    res.err().unwrap_or_default()
}

/// `f` on every item, each on a thread of its own; the results in the items' order.
fn parallel<T: Send, R: Send>(items: Vec<T>, f: impl Fn(T) -> R + Sync) -> Vec<R> {
    std::thread::scope(|s| {
        let f = &f;
        let handles: Vec<_> = items
            .into_iter()
            .map(|item| s.spawn(move || f(item)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    })
}

/// Sorted, without repeats (the same finding from two trees is one finding).
fn unique(mut diags: Vec<Diagnostic>) -> Vec<Diagnostic> {
    diagnostics::sort(&mut diags);
    diags.dedup_by(|a, b| {
        a.file == b.file && a.line == b.line && a.code == b.code && a.message == b.message
    });
    diags
}

/// The preprocessor's analysis of the book at `root`: the checks of `cargo xtask check` (but the
/// write), and the site's data from the same trees. Err with every diagnostic when one is an
/// error.
pub fn site(root: &Path) -> preprocess::Analysed {
    let a = Analysis::of_book(root)?;
    let mut diags = a.lint(lint::Options::default());
    diags.append(&mut a.routes());
    let diags = unique(diags);
    if diags.iter().any(|d| d.severity == Severity::Error) {
        return Err(diags);
    }
    let Analysis {
        book,
        main,
        variants,
        ..
    } = a;
    let Some(main) = main else {
        return Err(diags); // unreachable: a main tree that does not assemble is an error above
    };
    let router = main.router.ok();
    let site = Site::new(
        root,
        book,
        main.tree,
        variants.into_iter().map(|t| t.tree).collect(),
        router.as_ref(),
    );
    Ok((site, diags))
}

/// `cargo xtask mdbook`: one preprocessor run with [`site`] as the analysis.
pub fn mdbook(input: &str) -> Result<(String, Vec<String>), preprocess::Failure> {
    preprocess::handle(input, site)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A one-chapter book on disk and mdBook's JSON input for it.
    fn book_on_disk(chapter: &str) -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("src")).unwrap();
        std::fs::write(root.join("book.toml"), "[book]\ntitle = \"t\"\n").unwrap();
        std::fs::write(
            root.join("src/SUMMARY.md"),
            "# Summary\n\n- [Setup](setup.md)\n",
        )
        .unwrap();
        std::fs::write(root.join("src/setup.md"), chapter).unwrap();
        let input = json!([
            {"root": root, "config": {}, "renderer": "html", "mdbook_version": "0.5.4"},
            {"items": [{"Chapter": {"name": "Setup", "content": chapter, "number": [1],
                "sub_items": [], "path": "setup.md", "source_path": "setup.md",
                "parent_names": []}}]}
        ]);
        (dir, input.to_string())
    }

    #[test]
    fn the_preprocessor_runs_the_checks_of_check() {
        let ok = "# Setup\n\n```yaml title=\"app/a.yaml\"\nname: example\n```\n";
        let (_dir, input) = book_on_disk(ok);
        let (out, notes) = mdbook(&input).unwrap();
        assert!(out.contains("app/a.yaml"), "{out}");
        assert!(notes.is_empty(), "{notes:?}");

        let dup = "# Setup\n\ntext\n\n```yaml title=\"app/a.yaml\"\nname: a\nname: b\n```\n";
        let (dir, input) = book_on_disk(dup);
        match mdbook(&input) {
            Err(preprocess::Failure::Book(d, root)) => {
                assert_eq!(root, dir.path());
                assert_eq!(
                    (d[0].code.as_str(), d[0].file.as_str(), d[0].line),
                    ("yaml::duplicate-key", "src/setup.md", 7),
                    "{d:?}"
                );
            }
            Err(other) => panic!("expected a book failure, got {other:?}"),
            Ok(_) => panic!("a duplicate key must stop the build"),
        }
    }

    #[test]
    fn one_analysis_covers_every_variant() {
        let md = "# Setup\n\n```yaml title=\"a.yaml\"\nx: 1\n```\n\n```yaml title=\"a.yaml\" variant=\"v\"\nx: yes\n```\n";
        let (dir, _) = book_on_disk(md);
        let a = Analysis::of_book(dir.path()).unwrap();
        assert_eq!(a.variants.len(), 1);
        assert_eq!(a.variants[0].tree.variant.as_deref(), Some("v"));
        let found: Vec<(String, usize)> = a
            .lint(lint::Options::default())
            .into_iter()
            .map(|d| (d.code, d.line))
            .collect();
        assert_eq!(found, [("yaml::yaml11-boolean".to_string(), 8)]);
    }
}
