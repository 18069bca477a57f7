//! Captions: every fenced block whose info string carries attributes (```` ```yaml
//! title="synapse/homeserver.yaml" ````) loses them, so mdBook's highlighter sees a plain
//! language, and gains a caption above it naming its target file (linked to the file index),
//! which part of that file it is, or that it is an example or a variant.
//!
//! The chapter text is parsed with mdBook's own Markdown options and edited by splicing at the
//! byte ranges the parser reports; nothing is re-serialised, so everything else reaches mdBook
//! byte for byte.
//!
//! To caption a new kind of block: 1. add the kind to `book::BlockKind`; 2. give it a
//! [`Caption`] in [`caption_for`]; 3. style its class in `assets/site.css`.

use crate::book::{self, Block, BlockKind};
use mdbook_markdown::pulldown_cmark::{CodeBlockKind, Event, Tag};
use mdbook_markdown::{MarkdownOptions, new_cmark_parser};
use std::collections::HashMap;

/// Which part of its file a block is: `(k, n)` = part k of n (1-based).
pub type Parts = HashMap<(String, usize), (usize, usize)>;

/// What a chapter needs to caption its blocks.
pub struct CaptionCtx<'a> {
    /// The chapter's blocks as read from disk (used when the content is the disk text).
    pub blocks: &'a [Block],
    /// Part numbers of every `title` block, keyed by (Markdown file, fence line).
    pub parts: &'a Parts,
    /// Relative link from this chapter to the file index page (`../reference/files.html`), if
    /// the book has one.
    pub files_href: Option<String>,
    /// The files of the main tree (a variant block of another file is a file of the variant only).
    pub main_files: &'a std::collections::BTreeSet<String>,
}

/// The caption of one block: CSS class and inner HTML.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caption {
    pub class: &'static str,
    pub html: String,
}

/// Returns `content` with attributes stripped and captions inserted.
pub fn annotate(content: &str, ctx: &CaptionCtx<'_>) -> String {
    let mut edits: Vec<(std::ops::Range<usize>, String)> = Vec::new();
    let parser = new_cmark_parser(content, &MarkdownOptions::default()).into_offset_iter();
    let lines = book::LineIndex::new(content);
    let mut index = 0;
    for (event, range) in parser {
        let Event::Start(Tag::CodeBlock(CodeBlockKind::Fenced(info))) = event else {
            continue;
        };
        let disk = ctx
            .blocks
            .get(index)
            .filter(|b| b.fence_line == lines.line(range.start));
        index += 1;
        let Ok((lang, attrs, kind)) = book::classify(&info) else {
            continue;
        };
        let Some(fence) = fence_info_range(content, range.start) else {
            continue;
        };
        if !attrs.is_empty() {
            edits.push((fence, lang.clone()));
        }
        let part = disk.and_then(|b| ctx.parts.get(&(b.file.clone(), b.fence_line)).copied());
        let variant_only = matches!(&kind, BlockKind::File { target, variant: Some(_), .. } if !ctx.main_files.contains(target));
        if let Some(c) = caption_for(&kind, part, ctx.files_href.as_deref(), variant_only) {
            let line_start = content[..range.start].rfind('\n').map_or(0, |p| p + 1);
            let prefix = &content[line_start..range.start];
            // Inside a list item or block quote the lines that follow must keep the container.
            let cont: String = prefix
                .chars()
                .map(|c| if c == '>' { '>' } else { ' ' })
                .collect();
            let html = format!(
                "<div class=\"code-title {}\">{}</div>\n{}\n{}",
                c.class,
                c.html,
                cont.trim_end(),
                cont
            );
            edits.push((range.start..range.start, html));
        }
    }
    splice(content, edits)
}

/// The byte range of the info string on a fence's opening line (after the backticks/tildes).
fn fence_info_range(content: &str, start: usize) -> Option<std::ops::Range<usize>> {
    let line_end = content[start..]
        .find('\n')
        .map_or(content.len(), |p| start + p);
    let line = &content[start..line_end];
    let indent = line.len() - line.trim_start_matches(' ').len();
    let rest = &line[indent..];
    let ch = rest.chars().next().filter(|c| *c == '`' || *c == '~')?;
    let n = rest.chars().take_while(|&c| c == ch).count();
    Some(start + indent + n..line_end)
}

/// Applies non-overlapping edits (sorted here), last first so earlier offsets stay valid.
pub fn splice(content: &str, mut edits: Vec<(std::ops::Range<usize>, String)>) -> String {
    edits.sort_by_key(|(r, _)| (r.start, r.end));
    let mut out = content.to_string();
    for (range, text) in edits.into_iter().rev() {
        out.replace_range(range, &text);
    }
    out
}

/// The caption a block of this kind gets, if any.
/// `variant_only`: the block's file exists in its variant only (not in the main tree).
pub fn caption_for(
    kind: &BlockKind,
    part: Option<(usize, usize)>,
    files_href: Option<&str>,
    variant_only: bool,
) -> Option<Caption> {
    let target_link = |target: &str, anchor: String| {
        let name = format!("<code>{}</code>", escape(target));
        match files_href {
            Some(href) => format!("<a href=\"{href}#{anchor}\">{name}</a>"),
            None => name,
        }
    };
    match kind {
        BlockKind::File {
            target,
            variant: None,
            ..
        } => {
            let mut html = target_link(target, file_anchor(target));
            if let Some((k, n)) = part.filter(|(_, n)| *n > 1) {
                html.push_str(&format!(" <span class=\"code-part\">part {k} of {n}</span>"));
            }
            Some(Caption { class: "code-file", html })
        }
        BlockKind::File {
            target,
            variant: Some(v),
            add,
        } => {
            let mut html = target_link(target, variant_anchor(v, target));
            html.push_str(&format!(
                " <span class=\"code-tag\">variant “{}”</span> <span class=\"code-note\">{}</span>",
                escape(v),
                if *add {
                    "added to this file in that variant, checked but not extracted"
                } else if variant_only {
                    "a file of that variant only, checked but not extracted"
                } else {
                    "an alternative, checked but not extracted"
                }
            ));
            if let Some((k, n)) = part.filter(|(_, n)| *n > 1) {
                html.push_str(&format!(" <span class=\"code-part\">part {k} of {n}</span>"));
            }
            Some(Caption { class: "code-variant", html })
        }
        BlockKind::Example => Some(Caption {
            class: "code-example",
            html: "<span class=\"code-tag\">example</span> <span class=\"code-note\">checked alone, not part of the deployment</span>".into(),
        }),
        BlockKind::Routes => Some(Caption {
            class: "code-routes",
            html: "<span class=\"code-tag\">routes</span> <span class=\"code-note\">where nginx sends each request; <code>cargo xtask check</code> asserts every line</span>".into(),
        }),
        BlockKind::Sql => Some(Caption {
            class: "code-sql",
            html: "<span class=\"code-tag\">query</span> <span class=\"code-note\">the stack test runs it against the live database</span>".into(),
        }),
        BlockKind::Diagram | BlockKind::Display => None,
    }
}

/// The HTML id of a file's section in the file index.
pub fn file_anchor(target: &str) -> String {
    format!("file-{}", slug(target))
}

/// The HTML id of a variant file's section in the file index.
pub fn variant_anchor(variant: &str, target: &str) -> String {
    format!("variant-{}-{}", slug(variant), slug(target))
}

fn slug(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect()
}

/// Minimal HTML escaping for text and attribute values.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn annotate_text(md: &str) -> String {
        let (blocks, diags) = book::parse_blocks("src/t.md", md);
        assert!(diags.is_empty(), "{diags:?}");
        let mut parts = Parts::new();
        for b in &blocks {
            if b.target().is_some() {
                parts.insert((b.file.clone(), b.fence_line), (2, 3));
            }
        }
        annotate(
            md,
            &CaptionCtx {
                blocks: &blocks,
                parts: &parts,
                files_href: Some("../reference/files.html".into()),
                main_files: &["nginx/nginx.conf".to_string()].into_iter().collect(),
            },
        )
    }

    #[test]
    fn strips_attributes_and_inserts_a_caption() {
        let out = annotate_text(
            "Text.\n\n```yaml title=\"synapse/homeserver.yaml\"\nx: 1\n```\n\nAfter.\n",
        );
        assert_eq!(
            out,
            "Text.\n\n<div class=\"code-title code-file\"><a href=\"../reference/files.html#file-synapse-homeserver-yaml\"><code>synapse/homeserver.yaml</code></a> <span class=\"code-part\">part 2 of 3</span></div>\n\n```yaml\nx: 1\n```\n\nAfter.\n"
        );
    }

    #[test]
    fn examples_variants_and_plain_blocks() {
        let out = annotate_text(
            "```nginx example\nevents {}\n```\n\n```console\n$ ls\n```\n\n```nginx title=\"nginx/nginx.conf\" variant=\"https\"\nevents {}\n```\n",
        );
        assert!(
            out.starts_with("<div class=\"code-title code-example\">"),
            "{out}"
        );
        assert!(out.contains("\n\n```nginx\nevents {}"), "{out}");
        assert!(
            out.contains("\n```console\n$ ls\n```\n"),
            "console block untouched: {out}"
        );
        assert_eq!(
            out.matches("class=\"code-title").count(),
            2,
            "the console block has no caption: {out}"
        );
        assert!(out.contains("#variant-https-nginx-nginx-conf"), "{out}");
        assert!(!out.contains("title="), "{out}");
    }

    #[test]
    fn blocks_inside_lists_keep_their_container() {
        let md = "1. Step one:\n\n   ```yaml title=\"a.yaml\"\n   k: v\n   ```\n2. Step two\n";
        let out = annotate_text(md);
        assert_eq!(
            out,
            "1. Step one:\n\n   <div class=\"code-title code-file\"><a href=\"../reference/files.html#file-a-yaml\"><code>a.yaml</code></a> <span class=\"code-part\">part 2 of 3</span></div>\n\n   ```yaml\n   k: v\n   ```\n2. Step two\n"
        );
        // The result still parses as one list with the code block inside it.
        let mut depth = 0;
        let mut seen = Vec::new();
        for ev in new_cmark_parser(&out, &MarkdownOptions::default()) {
            match ev {
                Event::Start(Tag::List(_)) => depth += 1,
                Event::End(mdbook_markdown::pulldown_cmark::TagEnd::List(_)) => depth -= 1,
                Event::Start(Tag::CodeBlock(_)) => seen.push(("code", depth)),
                Event::Html(h) if h.contains("code-title") => seen.push(("caption", depth)),
                _ => {}
            }
        }
        assert_eq!(seen, [("caption", 1), ("code", 1)]);
    }

    #[test]
    fn block_quotes_keep_their_marker() {
        let md = "> Note:\n>\n> ```sh title=\"run.sh\"\n> echo hi\n> ```\n";
        let out = annotate_text(md);
        assert!(
            out.contains("> <div class=\"code-title code-file\">"),
            "{out}"
        );
        assert!(out.contains("</div>\n>\n> ```sh\n> echo hi\n"), "{out}");
    }
}
