//! Reading the book the way mdBook does: `book.toml`, then `SUMMARY.md` (with mdBook's own
//! summary parser), then every chapter with mdBook's own Markdown options. The result is every
//! fenced block with its language, attributes, text, and the Markdown file and line of each of
//! its lines.
//!
//! The block contract (`src/contributing/authoring.md` in the book):
//! - ```` ```yaml title="synapse/homeserver.yaml" ```` is (part of) an extracted file;
//! - ```` ```nginx title="nginx/nginx.conf" variant="https" ```` is a whole alternative of that
//!   file, checked but not extracted;
//! - ```` ```yaml title="docker-compose.yml" variant="scale" add ```` is added to the main file
//!   in that variant only (it joins the file's blocks in reading order);
//! - ```` ```yaml example ```` is shown and syntax-checked alone, never extracted;
//! - ```` ```routes ```` is a routing expectation table, ```` ```sql ```` a query the stack test
//!   runs, ```` ```mermaid ```` a diagram;
//! - any other config-language block without one of these is an error.
//!
//! Architecture invariant: this module knows Markdown and nothing about nginx, YAML or Synapse.

pub mod console;

use crate::diagnostics::{Diagnostic, MdLoc};
use mdbook_markdown::pulldown_cmark::{CodeBlockKind, Event, Tag, TagEnd};
use mdbook_markdown::{MarkdownOptions, new_cmark_parser};
use mdbook_summary::{SummaryItem, parse_summary};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Languages whose blocks are configuration or code a reader could paste: they must carry a
/// target or a marker.
pub const CONFIG_LANGS: &[&str] = &[
    "yaml",
    "yml",
    "nginx",
    "conf",
    "ini",
    "sh",
    "bash",
    "shell",
    "sql",
    "toml",
    "json",
    "env",
    "dotenv",
    "dockerfile",
    "crontab",
    "cron",
    "properties",
    "pgsql",
    "postgresql",
];

/// Attributes a fence's info string may carry after the language.
pub const KNOWN_ATTRS: &[&str] = &["title", "variant", "add", "example", "skip", "drop"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlockKind {
    /// Part of the file `target` (relative to the deployment root); with `variant`, part of a
    /// whole alternative of that file that is checked but not extracted, or with `add` as well,
    /// lines added to the main file in that variant only.
    File {
        target: String,
        variant: Option<String>,
        /// `add`: the block joins the main file's blocks in the variant (never without `variant`).
        add: bool,
    },
    /// Shown to the reader, syntax-checked alone, never extracted.
    Example,
    /// A table of `METHOD URI -> upstream` expectations.
    Routes,
    /// A query the stack test runs against the live database.
    Sql,
    /// A mermaid diagram.
    Diagram,
    /// Anything else that is not configuration (console sessions, plain text, output).
    Display,
}

#[derive(Debug, Clone)]
pub struct Block {
    /// Markdown file relative to the book root, e.g. `src/deployment/nginx.md`.
    pub file: String,
    /// 1-based line of the opening fence.
    pub fence_line: usize,
    pub lang: String,
    /// Attributes after the language: `key="value"`, `key=value` or a bare `flag` (value None).
    pub attrs: BTreeMap<String, Option<String>>,
    pub kind: BlockKind,
    /// The block's content, exactly as mdBook renders it (ends with `\n` unless empty).
    pub text: String,
}

impl Block {
    /// 1-based Markdown line of the block's first content line.
    pub fn first_line(&self) -> usize {
        self.fence_line + 1
    }

    /// Markdown location of the block's `n`-th content line (0-based).
    pub fn line_loc(&self, n: usize) -> MdLoc {
        MdLoc::new(self.file.clone(), self.first_line() + n)
    }

    pub fn fence_loc(&self) -> MdLoc {
        MdLoc::new(self.file.clone(), self.fence_line)
    }

    pub fn target(&self) -> Option<&str> {
        match &self.kind {
            BlockKind::File { target, .. } => Some(target),
            _ => None,
        }
    }

    /// For a `console` block the stack test runs (no `skip`): its commands and shown output.
    #[allow(clippy::type_complexity)]
    pub fn console_session(&self) -> Option<Result<Vec<console::Command>, (usize, String)>> {
        (self.lang == "console" && !self.attrs.contains_key("skip"))
            .then(|| console::session(&self.text))
    }

    /// The reason a `console` block is not run (`skip="..."`).
    pub fn skip_reason(&self) -> Option<&str> {
        self.attrs.get("skip").and_then(|r| r.as_deref())
    }

    /// The main files (or `dir/` prefixes) this variant block says its tree leaves out.
    pub fn drops(&self) -> Vec<&str> {
        match self.attrs.get("drop") {
            Some(Some(d)) if self.variant().is_some() => d.split_whitespace().collect(),
            _ => Vec::new(),
        }
    }

    pub fn variant(&self) -> Option<&str> {
        match &self.kind {
            BlockKind::File { variant, .. } => variant.as_deref(),
            _ => None,
        }
    }

    /// A variant block that adds to the main file (`add`) rather than replacing it.
    pub fn adds(&self) -> bool {
        matches!(self.kind, BlockKind::File { add: true, .. })
    }
}

#[derive(Debug, Clone)]
pub struct Chapter {
    pub name: String,
    /// Relative to the book root, with `/` separators, e.g. `src/deployment/nginx.md`.
    pub path: String,
    pub text: String,
    pub blocks: Vec<Block>,
}

#[derive(Debug, Clone)]
pub struct Book {
    /// The directory holding book.toml.
    pub root: PathBuf,
    /// `book.src` (default `src`), relative to root.
    pub src: String,
    pub title: Option<String>,
    /// Chapters in reading order (SUMMARY order, depth first). Draft chapters are skipped.
    pub chapters: Vec<Chapter>,
    /// Warnings found while reading (an indented code block, a chapter listed twice, ...):
    /// reported by every command, they do not stop the reading.
    pub warnings: Vec<Diagnostic>,
}

impl Book {
    /// Every block of the book in reading order.
    pub fn blocks(&self) -> impl Iterator<Item = &Block> {
        self.chapters.iter().flat_map(|c| c.blocks.iter())
    }

    pub fn summary_path(&self) -> String {
        format!("{}/SUMMARY.md", self.src)
    }
}

/// Loads the book at `root`. On any problem, returns every diagnostic found (not just the first).
pub fn load(root: &Path) -> Result<Book, Vec<Diagnostic>> {
    let toml_loc = MdLoc::new("book.toml", 1);
    let toml_text = match read_bounded(&root.join("book.toml"))
        .and_then(|b| String::from_utf8(b).map_err(|_| "it is not UTF-8".to_string()))
    {
        Ok(t) => t,
        Err(e) => {
            return Err(vec![Diagnostic::error(
                "book::no-book-toml",
                format!("cannot read {}: {e}", root.join("book.toml").display()),
                &toml_loc,
            )]);
        }
    };
    let config: toml::Table = match toml_text.parse() {
        Ok(c) => c,
        Err(e) => {
            let line = e.span().map(|s| line_of(&toml_text, s.start)).unwrap_or(1);
            return Err(vec![Diagnostic::error(
                "book::bad-book-toml",
                format!("book.toml is not valid TOML: {}", e.message()),
                &MdLoc::new("book.toml", line),
            )]);
        }
    };
    let book_table = config.get("book").and_then(|b| b.as_table());
    let src = book_table
        .and_then(|b| b.get("src"))
        .and_then(|s| s.as_str())
        .unwrap_or("src")
        .trim_end_matches('/')
        .to_string();
    let title = book_table
        .and_then(|b| b.get("title"))
        .and_then(|s| s.as_str())
        .map(String::from);

    let summary_rel = format!("{src}/SUMMARY.md");
    let summary_text =
        read_utf8(root, &summary_rel, &MdLoc::new(summary_rel.clone(), 1)).map_err(|d| vec![d])?;
    let summary = parse_summary(&summary_text).map_err(|e| {
        let msg = format!("{e:#}");
        vec![Diagnostic::error(
            "book::bad-summary",
            format!("SUMMARY.md cannot be parsed: {msg}"),
            &MdLoc::new(summary_rel.clone(), summary_error_line(&msg, &summary_text)),
        )]
    })?;

    let mut links = Vec::new();
    for items in [
        &summary.prefix_chapters,
        &summary.numbered_chapters,
        &summary.suffix_chapters,
    ] {
        flatten(items, &mut links);
    }

    let mut chapters = Vec::new();
    let mut diags = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for (name, location) in links {
        let listed_at = MdLoc::new(summary_rel.clone(), summary_line(&summary_text, &location));
        let raw = location.to_string_lossy().replace('\\', "/");
        // A chapter spelled twice (with and without a leading `./`) is one chapter; one that
        // leaves the sources is refused (mdBook stops on it: chapters are always inside a book).
        let Some(clean) = crate::contain::normalize(&raw).filter(|c| !c.is_empty()) else {
            diags.push(Diagnostic::error(
                "book::unreadable",
                format!("SUMMARY.md lists `{raw}`, which is not a file inside `{src}/`"),
                &listed_at,
            ));
            continue;
        };
        let rel = format!("{src}/{clean}");
        if !seen.insert(rel.clone()) {
            diags.push(Diagnostic::warning(
                "book::duplicate-chapter",
                format!("SUMMARY.md lists `{rel}` a second time: its blocks are read once"),
                &listed_at,
            ));
            continue;
        }
        match read_utf8(root, &rel, &listed_at) {
            Ok(text) => {
                let (blocks, mut d) = parse_blocks(&rel, &text);
                diags.append(&mut d);
                chapters.push(Chapter {
                    name,
                    path: rel,
                    text,
                    blocks,
                });
            }
            Err(d) => diags.push(d),
        }
    }
    if diags
        .iter()
        .all(|d| d.severity == crate::diagnostics::Severity::Warning)
    {
        Ok(Book {
            root: root.to_path_buf(),
            src,
            title,
            chapters,
            warnings: diags,
        })
    } else {
        Err(diags)
    }
}

fn flatten(items: &[SummaryItem], out: &mut Vec<(String, PathBuf)>) {
    for item in items {
        if let SummaryItem::Link(link) = item {
            if let Some(loc) = &link.location {
                out.push((link.name.clone(), loc.clone()));
            }
            flatten(&link.nested_items, out);
        }
    }
}

/// The line mdBook's SUMMARY parser names in its error (`failed to parse SUMMARY.md line N,
/// column M: ...`), or for a duplicate file the line that lists it the second time; else 1.
fn summary_error_line(msg: &str, summary: &str) -> usize {
    if let Some(rest) = msg.split("SUMMARY.md line ").nth(1)
        && let Some(n) = rest.split(|c: char| !c.is_ascii_digit()).next()
        && let Ok(n) = n.parse::<usize>()
    {
        return n.max(1);
    }
    if let Some(rest) = msg.split("Duplicate file in SUMMARY.md: ").nth(1) {
        let file = rest.trim().trim_matches('"');
        let needle = format!("({file})");
        if let Some(i) = summary
            .lines()
            .enumerate()
            .filter(|(_, l)| l.contains(&needle))
            .map(|(i, _)| i)
            .nth(1)
        {
            return i + 1;
        }
    }
    1
}

/// The line of SUMMARY.md that lists `location` (1 if it cannot be found).
fn summary_line(summary: &str, location: &Path) -> usize {
    let loc = location.to_string_lossy();
    summary
        .lines()
        .position(|l| {
            l.contains(&format!("({loc})"))
                || l.contains(&format!("(./{loc})"))
                || l.contains(&*loc)
        })
        .map_or(1, |i| i + 1)
}

/// Reads a book file as UTF-8. `listed_at` is where the file is referenced from, used when the
/// file cannot be read at all; a non-UTF-8 file is reported at its own first bad line.
fn read_utf8(root: &Path, rel: &str, listed_at: &MdLoc) -> Result<String, Diagnostic> {
    let unreadable = |why: String| {
        Diagnostic::error(
            "book::unreadable",
            format!("cannot read `{rel}`: {why}"),
            listed_at,
        )
    };
    let mut bytes = read_bounded(&root.join(rel)).map_err(unreadable)?;
    // mdBook drops a byte order mark before parsing (mdbook-driver's `load_chapter`).
    if bytes.starts_with(b"\xef\xbb\xbf") {
        bytes.drain(..3);
    }
    String::from_utf8(bytes).map_err(|e| {
        let valid = e.utf8_error().valid_up_to();
        let line = e.as_bytes()[..valid]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1;
        Diagnostic::error(
            "book::not-utf8",
            format!("`{rel}` is not valid UTF-8 (bad byte at offset {valid})"),
            &MdLoc::new(rel, line),
        )
    })
}

/// The largest book file read (book.toml, SUMMARY.md or a chapter): 16 MiB.
pub const MAX_FILE: u64 = 16 << 20;

/// The bytes of a regular file of at most [`MAX_FILE`] bytes (a link to `/dev/zero` or a FIFO
/// would never end, and is refused without being opened).
fn read_bounded(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read as _;
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("it is not a regular file".into());
    }
    if meta.len() > MAX_FILE {
        return Err(format!(
            "it is {} bytes; a book file may have {MAX_FILE} at most",
            meta.len()
        ));
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_FILE + 1).read_to_end(&mut bytes))
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > MAX_FILE {
        return Err(format!("it has more than {MAX_FILE} bytes"));
    }
    Ok(bytes)
}

/// 1-based line of byte offset `pos` in `text`.
pub fn line_of(text: &str, pos: usize) -> usize {
    text.as_bytes()[..pos.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// The start of every line of a text, for many [`line_of`] questions about one text (a binary
/// search each instead of a count from the start).
#[derive(Debug, Clone)]
pub struct LineIndex(Vec<usize>);

impl LineIndex {
    pub fn new(text: &str) -> Self {
        let starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        LineIndex(starts)
    }

    /// The 1-based line of byte offset `pos` (as [`line_of`]).
    pub fn line(&self, pos: usize) -> usize {
        self.0.partition_point(|&start| start <= pos).max(1)
    }
}

/// Every fenced block of one chapter, with diagnostics for blocks that break the contract.
pub fn parse_blocks(file: &str, text: &str) -> (Vec<Block>, Vec<Diagnostic>) {
    let mut blocks = Vec::new();
    let mut diags = Vec::new();
    let parser = new_cmark_parser(text, &MarkdownOptions::default()).into_offset_iter();
    let lines = LineIndex::new(text);
    includes(file, text, &lines, &mut diags);
    // (fence line, info string, content, the block's source range, where its content ends)
    let mut current: Option<(usize, String, String, std::ops::Range<usize>, usize)> = None;
    let mut indented: Option<usize> = None;
    let mut code_ranges = Vec::new();
    for (event, range) in parser {
        match event {
            Event::Start(Tag::CodeBlock(CodeBlockKind::Fenced(info))) => {
                code_ranges.push(range.clone());
                let content_start = text[range.clone()]
                    .find('\n')
                    .map_or(range.end, |i| range.start + i + 1);
                current = Some((
                    lines.line(range.start),
                    info.to_string(),
                    String::new(),
                    range,
                    content_start,
                ));
            }
            Event::Start(Tag::CodeBlock(CodeBlockKind::Indented)) => {
                code_ranges.push(range.clone());
                indented = Some(lines.line(range.start));
            }
            Event::Text(t) => {
                if let Some((_, _, body, _, end)) = current.as_mut() {
                    body.push_str(&t);
                    *end = range.end;
                }
            }
            Event::End(TagEnd::CodeBlock) => {
                if let Some(line) = indented.take() {
                    diags.push(Diagnostic::warning(
                        "book::indented-code-block",
                        "an indented code block is shown as code but never extracted nor checked: \
                         make it a fenced block (``` with a `title` or a marker) or indent it less",
                        &MdLoc::new(file, line),
                    ));
                    continue;
                }
                let Some((fence_line, info, body, range, content_end)) = current.take() else {
                    continue;
                };
                let loc = MdLoc::new(file, fence_line);
                if !is_closed(
                    &text[range.clone()],
                    &text[content_end.min(range.end)..range.end],
                ) {
                    diags.push(Diagnostic::error(
                        "book::unterminated-fence",
                        "this code fence is never closed: everything after it to the end of the file became part of the block",
                        &loc,
                    ));
                    continue;
                }
                if let Some(n) = fence_like_line(&text[range.clone()], &body) {
                    diags.push(Diagnostic::warning(
                        "book::fence-in-block",
                        format!(
                            "line {} looks like a code fence, but mdBook reads it as part of the block opened here \
                             (a closing fence is indented less than four spaces, has no info string, and in a quote keeps the quote's `>`)",
                            fence_line + 1 + n
                        ),
                        &loc,
                    ));
                }
                match classify(&info) {
                    Ok((lang, attrs, kind)) => {
                        let b = Block {
                            file: file.to_string(),
                            fence_line,
                            lang,
                            attrs,
                            kind,
                            text: body,
                        };
                        if let Some(Err((i, msg))) = b.console_session() {
                            diags.push(Diagnostic::error(
                                "book::console-not-runnable",
                                msg,
                                &b.line_loc(i),
                            ));
                        }
                        blocks.push(b);
                    }
                    Err((code, msg)) => diags.push(Diagnostic::error(code, msg, &loc)),
                }
            }
            _ => {}
        }
    }
    not_fences(file, text, &code_ranges, &mut diags);
    (blocks, diags)
}

/// Lines outside every code block that look like a backtick fence whose info string holds a
/// backtick: CommonMark takes such a line for text (inline code), so the block the author meant
/// does not exist and its closing fence opens one instead. Said at the line itself.
fn not_fences(
    file: &str,
    text: &str,
    code: &[std::ops::Range<usize>],
    diags: &mut Vec<Diagnostic>,
) {
    let mut offset = 0;
    let mut next_code = 0;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let start = offset;
        offset += line.len();
        while next_code < code.len() && code[next_code].end <= start {
            next_code += 1;
        }
        if code.get(next_code).is_some_and(|r| r.start <= start) {
            continue;
        }
        let l = line.trim_start_matches([' ', '>']);
        let n = l.bytes().take_while(|&b| b == b'`').count();
        if n >= 3 && l[n..].contains('`') {
            diags.push(Diagnostic::error(
                "book::bad-info-string",
                "this line is no code fence for mdBook: the info string of a ``` fence cannot hold a backtick (use ~~~ or drop the backtick)",
                &MdLoc::new(file, i + 1),
            ));
        }
    }
}

/// Whether a fenced block (source `src`) was closed by a fence: pulldown-cmark (mdBook's parser)
/// decided where the block's content ends, and `after` is the source after that content. A block
/// it never saw closed runs to the end of its container, so nothing but container prefixes
/// follows its content (a would-be closing fence indented four spaces, or `>`-prefixed outside
/// a quote, is content); a closed one is followed by its closing fence.
fn is_closed(src: &str, after: &str) -> bool {
    let open = src.lines().next().unwrap_or("");
    let open = open.trim_start_matches([' ', '>', '\t']);
    let ch = match open.chars().next() {
        Some(c @ ('`' | '~')) => c,
        _ => return true, // not a fence we understand; let mdBook decide
    };
    let n = open.chars().take_while(|&c| c == ch).count();
    after.lines().any(|l| {
        let l = l.trim_start_matches([' ', '>', '\t']);
        let m = l.chars().take_while(|&c| c == ch).count();
        m >= n && l[m * ch.len_utf8()..].trim().is_empty()
    })
}

/// The 0-based line of `body` (the content of the block with source `src`) that looks like a
/// fence of the block's own kind: a mistake mdBook silently turns into content.
fn fence_like_line(src: &str, body: &str) -> Option<usize> {
    let open = src.lines().next()?.trim_start_matches([' ', '>', '\t']);
    let ch = open.chars().next().filter(|c| matches!(c, '`' | '~'))?;
    let n = open.chars().take_while(|&c| c == ch).count();
    body.lines().position(|l| {
        let l = l.trim_start_matches([' ', '>', '\t']);
        l.chars().take_while(|&c| c == ch).count() >= n
    })
}

/// mdBook's `links` preprocessor (`{{#include}}`, `{{#rustdoc_include}}`, `{{#playground}}`)
/// runs after our checks, so text it pulls in would reach the site unchecked and unextracted
/// (and could name any file on the machine): each one is an error. Found with the links
/// preprocessor's own pattern (mdbook-driver 0.5.4, `builtin_preprocessors/links.rs`), escapes
/// (`\{{#...}}`) included.
fn includes(file: &str, text: &str, lines: &LineIndex, diags: &mut Vec<Diagnostic>) {
    static LINK: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r"\\\{\{\#.*\}\}|\{\{\s*\#([a-zA-Z0-9_]+)\s+([^}]+)\}\}")
            .expect("mdBook's link pattern")
    });
    if !text.contains("{{") {
        return;
    }
    for c in LINK.captures_iter(text) {
        let Some(name) = c.get(1).map(|m| m.as_str()) else {
            continue; // escaped
        };
        if matches!(name, "include" | "rustdoc_include" | "playground") {
            let at = c.get(0).map_or(0, |m| m.start());
            diags.push(Diagnostic::error(
                "book::include",
                format!(
                    "`{{{{#{name} ...}}}}` is expanded by mdBook after every check: the text it brings in \
                     would be neither extracted nor checked; put the text in the chapter itself"
                ),
                &MdLoc::new(file, lines.line(at)),
            ));
        }
    }
}

type Classified = (String, BTreeMap<String, Option<String>>, BlockKind);

/// Splits an info string into language, attributes and block kind.
pub fn classify(info: &str) -> Result<Classified, (&'static str, String)> {
    let tokens = split_info(info).map_err(|m| ("book::bad-info-string", m))?;
    let mut it = tokens.into_iter();
    let lang = it.next().unwrap_or_default().to_ascii_lowercase();
    if lang.contains('=') {
        return Err((
            "book::bad-info-string",
            format!("the info string must start with a language, not `{lang}`"),
        ));
    }
    let mut attrs = BTreeMap::new();
    for tok in it {
        let (key, value) = match tok.split_once('=') {
            Some((k, v)) => (k.to_string(), Some(unquote(v))),
            None => (tok.clone(), None),
        };
        if !KNOWN_ATTRS.contains(&key.as_str()) {
            return Err((
                "book::unknown-attribute",
                format!(
                    "unknown block attribute `{key}` (known: {})",
                    KNOWN_ATTRS.join(", ")
                ),
            ));
        }
        if attrs.insert(key.clone(), value).is_some() {
            return Err((
                "book::duplicate-attribute",
                format!("attribute `{key}` is given twice"),
            ));
        }
    }
    if let Some(reason) = attrs.get("skip") {
        if lang != "console" {
            return Err((
                "book::bad-info-string",
                "`skip` marks a console block that the stack test does not run".into(),
            ));
        }
        if reason.as_deref().is_none_or(|r| r.trim().is_empty()) {
            return Err((
                "book::bad-info-string",
                "`skip` needs the reason the block cannot run: skip=\"reason\"".into(),
            ));
        }
    }
    let title = attrs.get("title").cloned();
    let variant = attrs.get("variant").cloned();
    let example = attrs.contains_key("example");
    if matches!(title, Some(None)) {
        return Err((
            "book::bad-info-string",
            "`title` needs a value: title=\"path/to/file\"".into(),
        ));
    }
    if matches!(variant, Some(None)) {
        return Err((
            "book::bad-info-string",
            "`variant` needs a value: variant=\"name\"".into(),
        ));
    }
    if let Some(d) = attrs.get("drop")
        && (variant.as_ref().and_then(|v| v.as_ref()).is_none()
            || title.as_ref().and_then(|t| t.as_ref()).is_none()
            || d.as_deref().is_none_or(|d| d.trim().is_empty()))
    {
        return Err((
            "book::bad-info-string",
            "`drop` lists the main files a variant leaves out (`dir/` for a whole directory), \
             on one of that variant's blocks: title=\"path\" variant=\"name\" drop=\"path dir/\""
                .into(),
        ));
    }
    if matches!(attrs.get("example"), Some(Some(_))) {
        return Err((
            "book::bad-info-string",
            "`example` is a flag and takes no value".into(),
        ));
    }
    let add = attrs.contains_key("add");
    if matches!(attrs.get("add"), Some(Some(_))) {
        return Err((
            "book::bad-info-string",
            "`add` is a flag and takes no value".into(),
        ));
    }
    if add && !matches!(variant, Some(Some(_))) {
        return Err((
            "book::bad-info-string",
            "`add` marks lines a variant adds to a file: it needs title=\"path\" variant=\"name\""
                .into(),
        ));
    }
    let kind = match (title.flatten(), variant.flatten(), example) {
        (Some(_), _, true) => {
            return Err((
                "book::bad-info-string",
                "a block is either extracted (`title`) or an `example`, not both".into(),
            ));
        }
        (None, Some(_), _) => {
            return Err((
                "book::bad-info-string",
                "`variant` needs the `title` of the file it is an alternative of".into(),
            ));
        }
        (Some(_), _, false) if lang == "routes" => {
            return Err((
                "book::bad-info-string",
                "a `routes` block is a table `check` asserts, not a file: drop its `title`".into(),
            ));
        }
        (Some(target), variant, false) => BlockKind::File {
            target,
            variant,
            add,
        },
        (None, None, true) => BlockKind::Example,
        (None, None, false) => match lang.as_str() {
            "routes" => BlockKind::Routes,
            "sql" => BlockKind::Sql,
            "mermaid" => BlockKind::Diagram,
            l if CONFIG_LANGS.contains(&l) => {
                return Err((
                    "book::unmarked-config-block",
                    format!(
                        "a `{l}` block must say what it is: title=\"path\" (extracted), \
                         title=\"path\" variant=\"name\" (alternative file) or `example`"
                    ),
                ));
            }
            _ => BlockKind::Display,
        },
    };
    Ok((lang, attrs, kind))
}

fn unquote(v: &str) -> String {
    v.strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(v)
        .to_string()
}

/// Whitespace-separated tokens; double quotes group (so `title="a b"` is one token).
fn split_info(info: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in info.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            c if c.is_whitespace() && !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if quoted {
        return Err(format!("unbalanced quote in info string `{info}`"));
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_carry_lines_and_kinds() {
        let md = "# T\n\ntext\n\n```yaml title=\"a/b.yaml\"\nx: 1\ny: 2\n```\n\n- item\n\n  ```nginx example\n  events {}\n  ```\n\n```console\n$ ls\n```\n";
        let (blocks, diags) = parse_blocks("src/t.md", md);
        assert!(diags.is_empty(), "{diags:?}");
        assert_eq!(blocks.len(), 3);
        assert_eq!(blocks[0].fence_line, 5);
        assert_eq!(blocks[0].text, "x: 1\ny: 2\n");
        assert_eq!(
            blocks[0].kind,
            BlockKind::File {
                target: "a/b.yaml".into(),
                variant: None,
                add: false
            }
        );
        assert_eq!(blocks[1].fence_line, 12);
        assert_eq!(blocks[1].text, "events {}\n");
        assert_eq!(blocks[1].kind, BlockKind::Example);
        assert_eq!(blocks[2].kind, BlockKind::Display);
    }

    #[test]
    fn contract_errors() {
        for (info, code) in [
            ("yaml", "book::unmarked-config-block"),
            ("yaml titel=\"x\"", "book::unknown-attribute"),
            ("yaml title=\"x\" example", "book::bad-info-string"),
            ("nginx variant=\"https\"", "book::bad-info-string"),
            ("yaml title=\"x\" add", "book::bad-info-string"),
            (
                "yaml title=\"x\" variant=\"v\" add=\"yes\"",
                "book::bad-info-string",
            ),
            ("yaml title=\"x", "book::bad-info-string"),
        ] {
            assert_eq!(classify(info).unwrap_err().0, code, "{info}");
        }
        assert_eq!(classify("sql").unwrap().2, BlockKind::Sql);
        assert_eq!(
            classify("yaml title=\"x\" variant=\"v\" add").unwrap().2,
            BlockKind::File {
                target: "x".into(),
                variant: Some("v".into()),
                add: true
            }
        );
        assert_eq!(classify("routes").unwrap().2, BlockKind::Routes);
    }

    #[test]
    fn fences_close_where_pulldown_cmark_closes_them() {
        let codes = |md: &str| -> Vec<(&'static str, usize)> {
            let (_, d) = parse_blocks("src/t.md", md);
            d.iter().map(|d| (codes_name(&d.code), d.line)).collect()
        };
        fn codes_name(c: &str) -> &'static str {
            crate::diagnostics::codes::lookup(c).map_or("?", |c| c.name)
        }
        // Indented four spaces, or `>`-prefixed outside a quote: content, so never closed.
        for tail in ["    ```\n", "> ```\n", "\t```\n"] {
            let md = format!("```yaml title=\"a\"\na: 1\n{tail}");
            assert_eq!(codes(&md), [("book::unterminated-fence", 1)], "{tail:?}");
        }
        // Up to three spaces, in a quote with its marker, in a list item: closed.
        for md in [
            "```yaml title=\"a\"\na: 1\n   ```\n",
            "> ```yaml title=\"a\"\n> a: 1\n> ```\n",
            "- x\n\n  ```yaml title=\"a\"\n  a: 1\n  ```\n",
            "~~~yaml title=\"a\"\n```\n~~~\n",
        ] {
            let (b, d) = parse_blocks("src/t.md", md);
            assert!(b.len() == 1 && d.is_empty(), "{md:?}: {d:?}");
        }
        // A would-be closing fence before more blocks: the block swallows them, and it is said.
        assert_eq!(
            codes("```yaml title=\"a\"\na: 1\n    ```\n\n```yaml title=\"b\"\nb: 2\n```\n"),
            [("book::fence-in-block", 1)]
        );
        // An empty block, closed and not.
        assert!(parse_blocks("src/t.md", "```text\n```\n").1.is_empty());
        assert_eq!(codes("```text\n"), [("book::unterminated-fence", 1)]);
        // A backtick in a backtick fence's info string: said at that line.
        assert!(codes("x\n\n```yaml `y`\na: 1\n```\n").contains(&("book::bad-info-string", 3)));
        // Indented code blocks and includes.
        assert_eq!(
            codes("text\n\n    a: 1\n"),
            [("book::indented-code-block", 3)]
        );
        assert_eq!(
            codes(
                "a\n{{#include x.md}}\n\\{{#include y.md}}\n{{ #playground z.rs }}\n{{#include}}\n{{#title T}}\n"
            ),
            [("book::include", 2), ("book::include", 4)]
        );
    }

    #[test]
    fn summary_errors_at_their_line() {
        assert_eq!(
            summary_error_line("failed to parse SUMMARY.md line 7, column 1: x", ""),
            7
        );
        assert_eq!(
            summary_error_line(
                "Duplicate file in SUMMARY.md: \"c.md\"",
                "# S\n\n- [a](c.md)\n- [b](c.md)\n"
            ),
            4
        );
        assert_eq!(summary_error_line("something else", "x"), 1);
    }

    #[test]
    fn unterminated_fence_is_reported_at_its_opening_line() {
        let md = "a\n\n```yaml title=\"x.yaml\"\nk: v\n";
        let (blocks, diags) = parse_blocks("src/t.md", md);
        assert!(blocks.is_empty());
        assert_eq!(diags[0].code, "book::unterminated-fence");
        assert_eq!(diags[0].line, 3);
    }
}
