//! Pages generated from the same data the tests use: the file index (every file of the
//! extracted tree, the chapters and lines that build it, its assembled content) and the routing
//! table (every sample request of the book's `routes` blocks, the location nginx picks, the
//! upstream and the server).
//!
//! A page asks for generated content with a marker line in its Markdown source
//! ([`FILE_INDEX_MARKER`], [`ROUTING_TABLE_MARKER`]); the preprocessor replaces that line, so the
//! prose around it stays ordinary Markdown that contributors edit.
//!
//! To add a generated page: 1. define its marker here; 2. write a `fn(&Site, page) -> String`;
//! 3. add it to [`expand`]; 4. put the marker in the page's Markdown.

use super::Site;
use super::captions::{escape, file_anchor, variant_anchor};
use crate::diagnostics::MdLoc;
use crate::tree::{Fragment, TreeFile};
use std::collections::BTreeMap;
use std::fmt::Write as _;

pub const FILE_INDEX_MARKER: &str = "<!-- xtask:file-index -->";
pub const ROUTING_TABLE_MARKER: &str = "<!-- xtask:routing-table -->";

/// One sample request of a `routes` block (the routing checker's own parse).
pub use crate::route::routes::Sample;

/// What the nginx simulation answers for a sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routed {
    /// The matching location as written (`~ ^/_matrix/...`, `= /health`), and where it is.
    pub location: Option<(String, MdLoc)>,
    /// The upstream block proxied to (None for a location that does not proxy).
    pub upstream: Option<String>,
    /// The server of that upstream nginx picks (None when nginx may pick any of several).
    pub server: Option<String>,
    /// The servers of that upstream (the candidates when `server` is None).
    pub servers: Vec<String>,
    /// The status of a `return`.
    pub status: Option<u16>,
}

/// Replaces the marker lines of `content` with the generated pages. `page` is the chapter's path
/// relative to the book's `src` (e.g. `reference/files.md`).
pub fn expand(content: &str, site: &Site, page: &str) -> String {
    let mut out = String::with_capacity(content.len());
    for line in content.split_inclusive('\n') {
        match line.trim() {
            FILE_INDEX_MARKER => out.push_str(&file_index(site, page)),
            ROUTING_TABLE_MARKER => out.push_str(&routing_table(site, page)),
            super::evidence::STACK_REPORT_MARKER => {
                out.push_str(&super::evidence::stack_report(site))
            }
            super::evidence::FLAKINESS_MARKER => out.push_str(&super::evidence::flakiness(site)),
            super::benchmark::BENCHMARK_MARKER => out.push_str(&super::benchmark::benchmark(site)),
            _ => out.push_str(line),
        }
    }
    out
}

/// Whether a chapter's Markdown asks for a generated page.
pub fn has_marker(content: &str, marker: &str) -> bool {
    content.lines().any(|l| l.trim() == marker)
}

/// The file index.
pub fn file_index(site: &Site, page: &str) -> String {
    let mut out = String::new();
    let n = site.tree.files.len();
    let _ = writeln!(
        out,
        "The deployment has **{n} files**. Each section below shows one of them exactly as \
         `cargo xtask extract` writes it (with the book's example values), and the blocks of \
         the book it is assembled from, in order.\n"
    );
    for tf in site.tree.files.values() {
        file_section(&mut out, site, page, tf, &file_anchor(&tf.path), None);
    }
    let alternatives: Vec<(&str, &TreeFile)> = site
        .variants
        .iter()
        .flat_map(|t| {
            let name = t.variant.as_deref().unwrap_or_default();
            t.files
                .values()
                .filter(|f| {
                    site.tree
                        .get(&f.path)
                        .is_none_or(|m| m.fragments != f.fragments)
                })
                .map(move |f| (name, f))
        })
        .collect();
    if !alternatives.is_empty() {
        let _ = writeln!(
            out,
            "## Alternatives {{#alternatives}}\n\nThese files replace the ones above in a variant of \
             the deployment. They are linted like the rest but not extracted.\n"
        );
        for (variant, tf) in alternatives {
            file_section(
                &mut out,
                site,
                page,
                tf,
                &variant_anchor(variant, &tf.path),
                Some(variant),
            );
        }
    }
    out
}

fn file_section(
    out: &mut String,
    site: &Site,
    page: &str,
    tf: &TreeFile,
    anchor: &str,
    variant: Option<&str>,
) {
    let heading = match variant {
        Some(v) => format!("`{}`, variant “{v}”", tf.path),
        None => format!("`{}`", tf.path),
    };
    let _ = writeln!(out, "### {heading} {{#{anchor}}}\n");
    let mut groups: Vec<Vec<&Fragment>> = Vec::new();
    for f in &tf.fragments {
        match groups.last_mut() {
            Some(g) if g[0].md_file == f.md_file => g.push(f),
            _ => groups.push(vec![f]),
        }
    }
    let sources: Vec<String> = groups
        .iter()
        .map(|g| fragment_links(site, page, g))
        .collect();
    let blocks = match tf.fragments.len() {
        1 => "one block".to_string(),
        n => format!("{n} blocks"),
    };
    let _ = writeln!(out, "Assembled from {blocks}: {}.\n", sources.join(", "));
    if tf.secret {
        let _ = writeln!(
            out,
            "It holds secrets: `CHANGEME_…` placeholders here, replaced by fresh random values \
             with `cargo xtask extract --secrets generate`.\n"
        );
    }
    let fence = "`".repeat(longest_run(&tf.content, '`').max(2) + 1);
    let lang = highlight_lang(&tf.lang);
    let _ = writeln!(
        out,
        "{fence}{lang}\n{}{fence}\n",
        ensure_newline(&tf.content)
    );
}

/// `[Chapter](../x.md) (lines 3–9, 20–24)` for consecutive fragments from one chapter, each
/// range linked to the source on the repository.
fn fragment_links(site: &Site, page: &str, frags: &[&Fragment]) -> String {
    let f = frags[0];
    let chapter = site.book.chapters.iter().find(|c| c.path == f.md_file);
    let name = chapter.map_or(f.md_file.as_str(), |c| c.name.as_str());
    let src_rel = f
        .md_file
        .strip_prefix(&format!("{}/", site.book.src))
        .unwrap_or(&f.md_file);
    let ranges: Vec<String> = frags
        .iter()
        .map(|f| {
            let last = f.md_line + f.lines.saturating_sub(1);
            let (text, anchor) = if last > f.md_line {
                (
                    format!("{}–{last}", f.md_line),
                    format!("L{}-L{last}", f.md_line),
                )
            } else {
                (format!("{}", f.md_line), format!("L{}", f.md_line))
            };
            match &site.repo_url {
                Some(repo) => format!("[{text}]({repo}/blob/main/{}?plain=1#{anchor})", f.md_file),
                None => text,
            }
        })
        .collect();
    let word = if frags.len() == 1 && frags[0].lines <= 1 {
        "line"
    } else {
        "lines"
    };
    format!(
        "[{}]({}) ({word} {})",
        md_text(name),
        relative(page, src_rel),
        ranges.join(", ")
    )
}

/// The routing table.
pub fn routing_table(site: &Site, page: &str) -> String {
    let mut out = String::new();
    let total = site.routes.len();
    let pages: std::collections::BTreeSet<&str> = site
        .routes
        .iter()
        .map(|(s, _)| s.loc.file.as_str())
        .collect();
    let _ = writeln!(
        out,
        "The book holds **{total} sample requests** in its `routes` blocks ({}). For each one, \
         the table shows what the routing simulator of `cargo xtask route` answers for the \
         extracted nginx configuration: the `location` that matches, the upstream it proxies to, \
         and the server of that upstream nginx picks. `cargo xtask check` asserts each \
         expectation, and the stack test sends every sample through the real nginx and compares \
         the server it used.\n",
        if pages.len() == 1 {
            "on one page".to_string()
        } else {
            format!("on {} pages", pages.len())
        }
    );
    if site.routes.iter().any(|(_, r)| r.is_none()) {
        let _ = writeln!(
            out,
            "> The routing simulator was not available when this page was built: the table shows \
             the expectations only.\n"
        );
    }
    out.push_str(&flowchart(site));
    let mut current: Option<&MdLoc> = None;
    let mut headings_seen: BTreeMap<String, usize> = BTreeMap::new();
    // Each chapter's headings, found once however many `routes` blocks it has.
    let mut heads: BTreeMap<&str, Vec<(usize, String)>> = BTreeMap::new();
    for (sample, routed) in &site.routes {
        if current != Some(&sample.block) {
            let chapter = site
                .book
                .chapters
                .iter()
                .find(|c| c.path == sample.block.file);
            let name = chapter.map_or(sample.block.file.as_str(), |c| c.name.as_str());
            let src_rel = sample
                .block
                .file
                .strip_prefix(&format!("{}/", site.book.src))
                .unwrap_or(&sample.block.file);
            if current.is_some() {
                out.push_str("\n</div>\n");
            }
            // Named after the section of the chapter the block is in.
            let section = chapter
                .and_then(|c| {
                    let h = heads
                        .entry(c.path.as_str())
                        .or_insert_with(|| headings(&c.text));
                    last_before(h, sample.block.line)
                })
                .map(|s| format!(": {}", md_text(&s)))
                .unwrap_or_default();
            let seen = headings_seen.entry(format!("{name}{section}")).or_default();
            *seen += 1;
            let section = match *seen {
                1 => section,
                k => format!("{section} ({k})"),
            };
            let _ = writeln!(
                out,
                "\n### {}{section}\n\nThe `routes` block of [{}]({}) at {}.\n",
                md_text(name),
                md_text(name),
                relative(page, src_rel),
                source_link(site, &sample.block)
            );
            let _ = writeln!(out, "<div class=\"routing-table\">\n");
            let _ = writeln!(out, "| Request | Upstream → server | Location |");
            let _ = writeln!(out, "| --- | --- | --- |");
        }
        current = Some(&sample.block);
        let request = match &sample.from {
            Some(from) => format!(
                "{} from {from}",
                code_cell(&format!("{} {}", sample.method, sample.uri))
            ),
            None => code_cell(&format!("{} {}", sample.method, sample.uri)),
        };
        let (location, upstream, server) = match routed {
            // No simulator: show what the block expects.
            None => (
                "?".to_string(),
                format!("{} (expected)", code_cell(&sample.written)),
                String::new(),
            ),
            Some(r) => {
                let location = match &r.location {
                    Some((text, loc)) => {
                        format!("{} ({})", code_cell(text), source_link(site, loc))
                    }
                    None => "none".into(),
                };
                let upstream = match (&r.upstream, r.status) {
                    (Some(u), _) => code_cell(u),
                    (None, Some(s)) => format!("returns {s}"),
                    (None, None) => "not proxied".into(),
                };
                let server = match (&r.server, r.servers.len()) {
                    (Some(s), _) => {
                        format!(" → {}", code_cell(s.trim_start_matches("unix:/sockets/")))
                    }
                    (None, 0) => String::new(),
                    (None, _) => format!(
                        " → any of {}",
                        r.servers
                            .iter()
                            .map(|s| code_cell(s.trim_start_matches("unix:/sockets/")))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                };
                (location, upstream, server)
            }
        };
        let _ = writeln!(out, "| {request} | {upstream}{server} | {location} |");
    }
    if current.is_some() {
        out.push_str("\n</div>\n");
    }
    out.push('\n');
    variants_routing(&mut out, site);
    out
}

/// For each variant with other upstreams: what changes, and which samples land elsewhere.
fn variants_routing(out: &mut String, site: &Site) {
    if site.variant_routing.is_empty() {
        return;
    }
    let short = |s: &str| code_cell(s.trim_start_matches("unix:/sockets/"));
    let list = |v: &[String]| -> String {
        if v.is_empty() {
            "none".into()
        } else {
            v.iter().map(|s| short(s)).collect::<Vec<_>>().join(", ")
        }
    };
    let _ = writeln!(
        out,
        "## Variants {{#variants}}\n\nA variant of the deployment that changes the upstreams routes \
         the same requests to other servers. `cargo xtask route --variant NAME` answers for its \
         configuration, and the stack test compares real nginx with it there too.\n"
    );
    for v in &site.variant_routing {
        let name = md_text(&v.variant);
        let _ = writeln!(
            out,
            "### The {name} variant {{#the-{}-variant}}\n\n<div class=\"routing-table\">\n\n\
             | Upstream | Servers | In the {name} variant |\n| --- | --- | --- |",
            v.variant
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                })
                .collect::<String>()
        );
        for (u, main, var) in &v.upstreams {
            let _ = writeln!(out, "| {} | {} | {} |", code_cell(u), list(main), list(var));
        }
        out.push_str("\n</div>\n\n");
        if v.moved.is_empty() {
            let _ = writeln!(
                out,
                "Every sample above with one server chosen keeps that server in this variant.\n"
            );
            continue;
        }
        let _ = writeln!(
            out,
            "The samples above that nginx sends to another server in this variant (the others \
             keep theirs):\n\n<div class=\"routing-table\">\n\n| Request | Server | In the \
             {name} variant |\n| --- | --- | --- |"
        );
        for (i, after) in &v.moved {
            let Some((sample, Some(routed))) = site.routes.get(*i) else {
                continue;
            };
            let before = routed.server.as_deref().unwrap_or_default();
            let _ = writeln!(
                out,
                "| {} | {} | {} |",
                code_cell(&format!("{} {}", sample.method, sample.uri)),
                short(before),
                short(after)
            );
        }
        out.push_str("\n</div>\n\n");
    }
}

/// The text of the last heading above 1-based `line` of a chapter's Markdown.
#[cfg(test)]
fn section_before(text: &str, line: usize) -> Option<String> {
    last_before(&headings(text), line)
}

/// The last of `headings` (from [`headings`]) above 1-based `line` (a binary search).
fn last_before(headings: &[(usize, String)], line: usize) -> Option<String> {
    let i = headings.partition_point(|(l, _)| *l <= line);
    i.checked_sub(1).map(|i| headings[i].1.clone())
}

/// Every heading of a chapter's Markdown: (1-based line, text), in order. One parse per chapter.
fn headings(text: &str) -> Vec<(usize, String)> {
    use mdbook_markdown::pulldown_cmark::{Event, Tag, TagEnd};
    let parser = mdbook_markdown::new_cmark_parser(text, &Default::default()).into_offset_iter();
    let lines = crate::book::LineIndex::new(text);
    let mut out = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (event, range) in parser {
        match event {
            Event::Start(Tag::Heading { .. }) => {
                current = Some((lines.line(range.start), String::new()));
            }
            Event::Text(t) | Event::Code(t) => {
                if let Some((_, c)) = current.as_mut() {
                    c.push_str(&t);
                }
            }
            Event::End(TagEnd::Heading(_)) => out.extend(current.take()),
            _ => {}
        }
    }
    out
}

/// A mermaid flowchart of where the samples go: nginx → upstream → server, edges labelled with
/// the number of samples.
fn flowchart(site: &Site) -> String {
    let mut to_upstream: BTreeMap<String, usize> = BTreeMap::new();
    let mut to_server: BTreeMap<(String, String), usize> = BTreeMap::new();
    let mut to_any: std::collections::BTreeSet<(String, String)> = Default::default();
    for (_, routed) in &site.routes {
        let Some(r) = routed else { continue };
        let up = match (&r.upstream, r.status) {
            (Some(u), _) => u.clone(),
            (None, Some(s)) => format!("return {s}"),
            (None, None) => "not proxied".into(),
        };
        *to_upstream.entry(up.clone()).or_default() += 1;
        if let Some(s) = &r.server {
            *to_server.entry((up, s.clone())).or_default() += 1;
        } else {
            // nginx balances between these: drawn dashed, without a count.
            for s in &r.servers {
                to_any.insert((up.clone(), s.clone()));
            }
        }
    }
    if to_upstream.is_empty() {
        return String::new();
    }
    let id = |prefix: &str, s: &str| {
        format!(
            "{prefix}_{}",
            s.chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .collect::<String>()
        )
    };
    let label = |s: &str| s.replace('"', "#quot;");
    let mut out = String::from(
        "Where the samples go (edge labels count samples; dashed: nginx balances between the servers):\n\n```mermaid\nflowchart LR\n  nginx((nginx))\n",
    );
    for (up, n) in &to_upstream {
        let _ = writeln!(out, "  nginx -->|{n}| {}[\"{}\"]", id("u", up), label(up));
    }
    for ((up, server), n) in &to_server {
        let short = server.trim_start_matches("unix:/sockets/");
        let _ = writeln!(
            out,
            "  {} -->|{n}| {}[\"{}\"]",
            id("u", up),
            id("s", server),
            label(short)
        );
    }
    for (up, server) in to_any
        .iter()
        .filter(|(u, s)| !to_server.contains_key(&(u.clone(), s.clone())))
    {
        let short = server.trim_start_matches("unix:/sockets/");
        let _ = writeln!(
            out,
            "  {} -.-> {}[\"{}\"]",
            id("u", up),
            id("s", server),
            label(short)
        );
    }
    out.push_str("```\n");
    out
}

/// `nginx.md:120` linked to that line on the repository.
fn source_link(site: &Site, loc: &MdLoc) -> String {
    let short = loc.file.rsplit('/').next().unwrap_or(&loc.file);
    match &site.repo_url {
        Some(repo) => format!(
            "[{short}:{}]({repo}/blob/main/{}?plain=1#L{})",
            loc.line, loc.file, loc.line
        ),
        None => format!("{short}:{}", loc.line),
    }
}

/// Every sample of the book's `routes` blocks, from the routing checker's own parser
/// ([`crate::route::routes::samples`]). Lines it rejects are left out here: `cargo xtask check`
/// (and the preprocessor's checks) report them at their Markdown line.
pub fn samples(book: &crate::book::Book) -> Vec<Sample> {
    crate::route::routes::samples(book).0
}

/// A relative link from page `from` to page `to` (both relative to the book's src).
pub fn relative(from: &str, to: &str) -> String {
    let depth = from.matches('/').count();
    format!("{}{to}", "../".repeat(depth))
}

/// A table cell holding `s` as code: pipes escaped for the table, backticks fenced.
fn code_cell(s: &str) -> String {
    let ticks = "`".repeat(longest_run(s, '`') + 1);
    let pad = if s.starts_with('`') || s.ends_with('`') {
        " "
    } else {
        ""
    };
    format!("{ticks}{pad}{}{pad}{ticks}", s.replace('|', "\\|"))
}

/// Text safe inside a Markdown link label.
fn md_text(s: &str) -> String {
    escape(s).replace('[', "\\[").replace(']', "\\]")
}

fn longest_run(s: &str, ch: char) -> usize {
    let mut best = 0;
    let mut cur = 0;
    for c in s.chars() {
        cur = if c == ch { cur + 1 } else { 0 };
        best = best.max(cur);
    }
    best
}

fn ensure_newline(s: &str) -> String {
    if s.is_empty() || s.ends_with('\n') {
        s.to_string()
    } else {
        format!("{s}\n")
    }
}

/// The highlight.js name for a block language (mdBook bundles a subset of highlight.js).
fn highlight_lang(lang: &str) -> &str {
    match lang {
        "env" | "dotenv" | "conf" | "properties" => "ini",
        "sh" | "shell" => "bash",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_are_the_heading_above() {
        let md = "# Title\n\n## Sync `and` streams\n\ntext\n\n```routes\nGET / -> main\n```\n\n## Later\n";
        assert_eq!(section_before(md, 7).as_deref(), Some("Sync and streams"));
        assert_eq!(section_before(md, 2).as_deref(), Some("Title"));
    }

    #[test]
    fn relative_links() {
        assert_eq!(
            relative("reference/files.md", "deployment/nginx.md"),
            "../deployment/nginx.md"
        );
        assert_eq!(
            relative("introduction.md", "deployment/nginx.md"),
            "deployment/nginx.md"
        );
        assert_eq!(relative("a/b/c.md", "x.md"), "../../x.md");
    }

    #[test]
    fn code_cells_escape_pipes_and_backticks() {
        assert_eq!(code_cell("~ ^/(r0|v3)/sync$"), "`~ ^/(r0\\|v3)/sync$`");
        assert_eq!(code_cell("a`b"), "``a`b``");
        assert_eq!(code_cell("`x"), "`` `x ``");
    }

    #[test]
    fn samples_parse_with_their_markdown_lines() {
        let md = "# R\n\n```routes\n# comment\nGET /_matrix/client/v3/sync -> client_sync\n\nPUT /a%20b from 10.1.2.3 -> 403\nnonsense\n```\n";
        let (blocks, d) = crate::book::parse_blocks("src/r.md", md);
        assert!(d.is_empty());
        let book = crate::book::Book {
            root: ".".into(),
            src: "src".into(),
            title: None,
            chapters: vec![crate::book::Chapter {
                name: "R".into(),
                path: "src/r.md".into(),
                text: md.into(),
                blocks,
            }],
            warnings: Vec::new(),
        };
        let s = samples(&book);
        assert_eq!(s.len(), 2);
        assert_eq!(
            (
                s[0].method.as_str(),
                s[0].uri.as_str(),
                s[0].written.as_str()
            ),
            ("GET", "/_matrix/client/v3/sync", "client_sync")
        );
        assert_eq!(s[0].loc, MdLoc::new("src/r.md", 5));
        assert_eq!(
            (s[1].written.as_str(), s[1].loc.line, s[1].from.as_deref()),
            ("403", 7, Some("10.1.2.3"))
        );
        assert_eq!(s[1].block, MdLoc::new("src/r.md", 3));
    }
}
