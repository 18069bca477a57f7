//! The mdBook preprocessor behind `cargo xtask mdbook` (mdBook 0.5 protocol).
//!
//! mdBook runs `cargo xtask mdbook supports <renderer>` (we support every renderer), then
//! `cargo xtask mdbook` with `[context, book]` as JSON on stdin, and reads the book back as JSON
//! from stdout. The JSON is handled as `serde_json::Value`, so fields this code does not know
//! pass through untouched.
//!
//! The pipeline ([`handle`]):
//! 1. the caller's analysis (`crate::analysis::site` for `cargo xtask mdbook`) reads the book
//!    **from disk** (`book::load`, not the chapter contents mdBook sends, which other
//!    preprocessors may have rewritten), assembles the tree and every variant, runs the checks,
//!    and simulates every `routes` sample into a [`Site`]. Any error stops the build with the
//!    Markdown file and line.
//! 2. [`process`] walks the chapters: [`captions::annotate`] strips block attributes and adds a
//!    caption per block; [`pages::expand`] replaces the generated-page markers.
//!
//! [`process`] is pure; this module runs no check itself.

pub mod benchmark;
pub mod captions;
pub mod evidence;
pub mod pages;

use crate::book::{BlockKind, Book};
use crate::diagnostics::{Diagnostic, MdLoc};
use crate::route::router::{DEFAULT_CLIENT, Router};
use crate::tree::Tree;
use captions::{CaptionCtx, Parts};
use pages::{Routed, Sample};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// Everything the preprocessor knows about the book, computed once from disk.
pub struct Site {
    pub book: Book,
    /// The main tree, with the book's example values.
    pub tree: Tree,
    /// One tree per variant.
    pub variants: Vec<Tree>,
    /// `output.html.git-repository-url` of book.toml, for links to source lines.
    pub repo_url: Option<String>,
    /// Every `routes` sample with the simulator's answer (None: no simulator available).
    pub routes: Vec<(Sample, Option<Routed>)>,
    /// What changes in the routing of each variant whose upstreams differ from the main tree's.
    pub variant_routing: Vec<VariantRouting>,
    /// Part numbers of the `title` blocks.
    pub parts: Parts,
}

impl Site {
    /// The site of a checked book: its trees, and the router of the main tree (None when the
    /// tree has none; every sample then lacks an answer).
    pub fn new(
        root: &Path,
        book: Book,
        tree: Tree,
        variants: Vec<Tree>,
        router: Option<&Router>,
    ) -> Site {
        let routes = simulate(&book, router);
        let variant_routing = router
            .map(|r| {
                variants
                    .iter()
                    .filter_map(|t| variant_routing(r, t, &routes))
                    .collect()
            })
            .unwrap_or_default();
        Site {
            repo_url: repo_url(root),
            parts: parts(&book),
            book,
            tree,
            variants,
            routes,
            variant_routing,
        }
    }
}

/// How a variant's nginx configuration routes differently from the main one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VariantRouting {
    pub variant: String,
    /// Each upstream whose servers differ: (name, the main tree's servers, the variant's).
    pub upstreams: Vec<(String, Vec<String>, Vec<String>)>,
    /// Each sample (its index in [`Site::routes`]) that nginx sends to another server of the
    /// same upstream in the variant: (index, the variant's server).
    pub moved: Vec<(usize, String)>,
}

/// The routing differences of variant tree `tree` (None when its upstreams are the main ones,
/// or it has no nginx configuration the simulator reads).
fn variant_routing(
    main: &Router,
    tree: &Tree,
    routes: &[(Sample, Option<Routed>)],
) -> Option<VariantRouting> {
    let r = Router::from_tree(tree).ok()?;
    let servers = |r: &Router, name: &str| -> Vec<String> {
        r.upstreams
            .get(name)
            .map(|u| u.peers.iter().map(|p| p.name.clone()).collect())
            .unwrap_or_default()
    };
    let names: std::collections::BTreeSet<&String> =
        main.upstreams.keys().chain(r.upstreams.keys()).collect();
    let upstreams: Vec<_> = names
        .into_iter()
        .map(|n| (n.clone(), servers(main, n), servers(&r, n)))
        .filter(|(_, a, b)| a != b)
        .collect();
    if upstreams.is_empty() {
        return None;
    }
    let moved = routes
        .iter()
        .enumerate()
        .filter_map(|(i, (s, routed))| {
            let before = routed.as_ref()?.server.as_ref()?;
            let client = s.from.as_deref().unwrap_or(DEFAULT_CLIENT);
            let after = r.route_from(&s.method, &s.uri, client).server?;
            (&after != before).then_some((i, after))
        })
        .collect();
    Some(VariantRouting {
        variant: tree.variant.clone().unwrap_or_default(),
        upstreams,
        moved,
    })
}

/// Every `routes` sample with the routing simulator's answer on the main tree.
fn simulate(book: &Book, router: Option<&Router>) -> Vec<(Sample, Option<Routed>)> {
    let samples = pages::samples(book);
    let Some(router) = router else {
        return samples.into_iter().map(|s| (s, None)).collect();
    };
    samples
        .into_iter()
        .map(|s| {
            let client = s.from.as_deref().unwrap_or(DEFAULT_CLIENT);
            let o = router.route_from(&s.method, &s.uri, client);
            let routed = Routed {
                location: o.location.map(|l| {
                    let text = if l.modifier.is_empty() {
                        l.pattern
                    } else {
                        format!("{} {}", l.modifier, l.pattern)
                    };
                    (text, MdLoc::new(l.file, l.line))
                }),
                upstream: o.upstream,
                server: o.server,
                servers: o.servers,
                status: o.status,
            };
            (s, Some(routed))
        })
        .collect()
}

fn repo_url(root: &Path) -> Option<String> {
    let text = std::fs::read_to_string(root.join("book.toml")).ok()?;
    let table: toml::Table = text.parse().ok()?;
    let url = table
        .get("output")?
        .get("html")?
        .get("git-repository-url")?
        .as_str()?;
    Some(url.trim_end_matches('/').to_string())
}

/// Part k of n for every `title` block: blocks of the same file (and variant) in reading order.
fn parts(book: &Book) -> Parts {
    // (target, variant) -> the (Markdown file, fence line) of its blocks, in reading order.
    type Group = (String, Option<String>);
    let mut groups: BTreeMap<Group, Vec<(String, usize)>> = BTreeMap::new();
    for b in book.blocks() {
        if let BlockKind::File {
            target, variant, ..
        } = &b.kind
        {
            groups
                .entry((target.clone(), variant.clone()))
                .or_default()
                .push((b.file.clone(), b.fence_line));
        }
    }
    let mut out = Parts::new();
    for blocks in groups.values() {
        for (k, key) in blocks.iter().enumerate() {
            out.insert(key.clone(), (k + 1, blocks.len()));
        }
    }
    out
}

/// Rewrites every chapter of mdBook's `book` JSON (the second element of the input).
pub fn process(site: &Site, book: &mut Value) {
    let files_page = site
        .book
        .chapters
        .iter()
        .find(|c| pages::has_marker(&c.text, pages::FILE_INDEX_MARKER))
        .map(|c| src_relative(site, &c.path).to_string());
    if let Some(items) = book.get_mut("items").and_then(Value::as_array_mut) {
        for item in items {
            process_item(site, files_page.as_deref(), item);
        }
    }
}

fn process_item(site: &Site, files_page: Option<&str>, item: &mut Value) {
    let Some(ch) = item.get_mut("Chapter").and_then(Value::as_object_mut) else {
        return;
    };
    if let Some(source) = ch
        .get("source_path")
        .and_then(Value::as_str)
        .map(|s| s.replace('\\', "/"))
    {
        let path = format!("{}/{source}", site.book.src);
        let blocks = site
            .book
            .chapters
            .iter()
            .find(|c| c.path == path)
            .map_or(&[][..], |c| &c.blocks[..]);
        let files_href = files_page.map(|f| pages::relative(&source, &f.replace(".md", ".html")));
        if let Some(content) = ch.get("content").and_then(Value::as_str) {
            let main_files = site.tree.files.keys().cloned().collect();
            let ctx = CaptionCtx {
                blocks,
                parts: &site.parts,
                files_href,
                main_files: &main_files,
            };
            let annotated = captions::annotate(content, &ctx);
            let expanded = pages::expand(&annotated, site, &source);
            ch.insert("content".into(), Value::String(expanded));
        }
    }
    if let Some(subs) = ch.get_mut("sub_items").and_then(Value::as_array_mut) {
        for sub in subs {
            process_item(site, files_page, sub);
        }
    }
}

fn src_relative<'a>(site: &Site, path: &'a str) -> &'a str {
    path.strip_prefix(&format!("{}/", site.book.src))
        .unwrap_or(path)
}

/// Why the preprocessor stopped.
#[derive(Debug)]
pub enum Failure {
    /// mdBook sent something that is not `[context, book]`.
    Protocol(String),
    /// The book does not extract or check: the diagnostics and the book root to render them.
    Book(Vec<Diagnostic>, std::path::PathBuf),
}

/// What an analysis of the book at a root gives the preprocessor: the site and its warnings,
/// or every diagnostic when one is an error.
pub type Analysed = Result<(Site, Vec<Diagnostic>), Vec<Diagnostic>>;

/// One preprocessor run: mdBook's JSON in, the book's JSON out, plus warnings to print.
/// `analyse` reads and checks the book at the root mdBook names.
pub fn handle(
    input: &str,
    analyse: impl FnOnce(&Path) -> Analysed,
) -> Result<(String, Vec<String>), Failure> {
    let mut value: Value = serde_json::from_str(input)
        .map_err(|e| Failure::Protocol(format!("stdin is not JSON: {e}")))?;
    let arr = value
        .as_array_mut()
        .filter(|a| a.len() == 2)
        .ok_or_else(|| {
            Failure::Protocol(
                "expected a JSON array [context, book] on stdin (mdBook 0.5 protocol)".into(),
            )
        })?;
    let ctx = arr[0].clone();
    let root = ctx
        .get("root")
        .and_then(Value::as_str)
        .ok_or_else(|| Failure::Protocol("the context has no `root`".into()))?;
    let root = std::path::PathBuf::from(root);
    let mut notes = Vec::new();
    if let Some(v) = ctx.get("mdbook_version").and_then(Value::as_str) {
        let pinned = crate::tools::version("mdbook", "version").unwrap_or_default();
        if !v.starts_with("0.5.") {
            return Err(Failure::Protocol(format!(
                "this preprocessor speaks the mdBook 0.5 protocol, but mdBook {v} called it (the pinned version is {pinned})"
            )));
        }
        if !pinned.is_empty() && v != pinned {
            notes.push(format!(
                "warning: mdBook {v} is running this book, the pinned version is {pinned}"
            ));
        }
    }
    if arr[1].get("items").is_none() {
        return Err(Failure::Protocol(
            "the book has no `items` (mdBook 0.4 sends `sections`: use mdBook 0.5)".into(),
        ));
    }
    let (site, warnings) = analyse(&root).map_err(|d| Failure::Book(d, root.clone()))?;
    if !warnings.is_empty() {
        notes.push(crate::diagnostics::render_human(&warnings, &root));
    }
    process(&site, &mut arr[1]);
    let out = serde_json::to_string(&arr[1]).map_err(|e| Failure::Protocol(e.to_string()))?;
    Ok((out, notes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The site of a book without its checks (they are `crate::analysis`'s; its tests run this
    /// pipeline with them).
    fn plain(root: &Path) -> Analysed {
        let book = crate::book::load(root)?;
        let tree = crate::extract::assemble(&book, &Default::default())?;
        let router = Router::from_tree(&tree).ok();
        Ok((
            Site::new(root, book, tree, Vec::new(), router.as_ref()),
            Vec::new(),
        ))
    }

    fn handle(input: &str) -> Result<(String, Vec<String>), Failure> {
        super::handle(input, plain)
    }

    /// A small book on disk and mdBook's JSON input for it.
    fn book_on_disk(chapter: &str) -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("src/reference")).unwrap();
        std::fs::write(root.join("book.toml"), "[book]\ntitle = \"t\"\n[output.html]\ngit-repository-url = \"https://example.org/r\"\n").unwrap();
        std::fs::write(
            root.join("src/SUMMARY.md"),
            "# Summary\n\n- [Setup](setup.md)\n- [Files](reference/files.md)\n",
        )
        .unwrap();
        std::fs::write(root.join("src/setup.md"), chapter).unwrap();
        let files = format!("# Files\n\nIntro.\n\n{}\n", pages::FILE_INDEX_MARKER);
        std::fs::write(root.join("src/reference/files.md"), &files).unwrap();
        let chapter_json = |name: &str, path: &str, content: &str| {
            json!({"Chapter": {"name": name, "content": content, "number": [1], "sub_items": [],
                   "path": path, "source_path": path, "parent_names": [], "some_future_field": 7}})
        };
        let input = json!([
            {"root": root, "config": {}, "renderer": "html", "mdbook_version": "0.5.4"},
            {"items": [chapter_json("Setup", "setup.md", chapter), "Separator",
                       chapter_json("Files", "reference/files.md", &files)]}
        ]);
        (dir, input.to_string())
    }

    #[test]
    fn captions_and_the_file_index_reach_mdbook() {
        let md = "# Setup\n\n```yaml title=\"app/settings.yaml\"\nname: example\n```\n\n```yaml title=\"app/settings.yaml\"\nsize: 3\n```\n";
        let (_dir, input) = book_on_disk(md);
        let (out, _) = handle(&input).unwrap();
        let book: Value = serde_json::from_str(&out).unwrap();
        let items = book["items"].as_array().unwrap();
        assert_eq!(items[1], json!("Separator"));
        let setup = &items[0]["Chapter"];
        assert_eq!(
            setup["some_future_field"],
            json!(7),
            "unknown fields pass through"
        );
        let content = setup["content"].as_str().unwrap();
        assert!(content.contains("<a href=\"reference/files.html#file-app-settings-yaml\"><code>app/settings.yaml</code></a> <span class=\"code-part\">part 1 of 2</span>"), "{content}");
        assert!(content.contains("part 2 of 2"), "{content}");
        assert!(!content.contains("title="), "{content}");
        let files = items[2]["Chapter"]["content"].as_str().unwrap();
        assert!(!files.contains(pages::FILE_INDEX_MARKER));
        assert!(
            files.contains("### `app/settings.yaml` {#file-app-settings-yaml}"),
            "{files}"
        );
        assert!(
            files.contains("```yaml\nname: example\nsize: 3\n```"),
            "{files}"
        );
        assert!(files.contains("Assembled from 2 blocks: [Setup](../setup.md) (lines [4](https://example.org/r/blob/main/src/setup.md?plain=1#L4), [8](https://example.org/r/blob/main/src/setup.md?plain=1#L8))."), "{files}");
    }

    #[test]
    fn a_book_that_does_not_extract_fails_with_file_and_line() {
        let md = "# Setup\n\ntext\n\n```yaml title=\"../escape.yaml\"\nx: 1\n```\n";
        let (_dir, input) = book_on_disk(md);
        match handle(&input) {
            Err(Failure::Book(d, _)) => {
                assert_eq!(
                    (d[0].code.as_str(), d[0].file.as_str(), d[0].line),
                    ("extract::bad-target", "src/setup.md", 5),
                    "{d:?}"
                );
            }
            other => panic!("expected a book failure, got {other:?}"),
        }
    }

    #[test]
    fn protocol_errors() {
        assert!(matches!(handle("{}"), Err(Failure::Protocol(_))));
        assert!(matches!(handle("not json"), Err(Failure::Protocol(_))));
        let (_dir, input) = book_on_disk("# Setup\n");
        let old = input.replace("\"items\"", "\"sections\"");
        match handle(&old) {
            Err(Failure::Protocol(m)) => assert!(m.contains("0.5"), "{m}"),
            other => panic!("{other:?}"),
        }
        let v04 = input.replace("\"0.5.4\"", "\"0.4.52\"");
        assert!(matches!(handle(&v04), Err(Failure::Protocol(_))));
    }
}
