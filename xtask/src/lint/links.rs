//! Internal links of the book: every relative link resolves to a chapter (or a file) and every
//! `#anchor` to a heading id, computed as mdBook 0.5 computes them (`mdbook-html`'s
//! `id_from_content` + `unique_id`: lowercase, alphanumerics, `_` and `-` kept, whitespace becomes
//! `-`, anything else dropped; repeats get `-1`, `-2`, ...; `{#custom}` ids and HTML `id="..."`
//! count too).

use crate::book::{Book, LineIndex};
use crate::diagnostics::{Diagnostic, MdLoc};
use mdbook_markdown::pulldown_cmark::{Event, Tag, TagEnd};
use mdbook_markdown::{MarkdownOptions, new_cmark_parser};
use regex::Regex;
use std::collections::{BTreeMap, HashSet};
use std::sync::LazyLock;

static HTML_ID: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r#"\b(?:id|name)\s*=\s*["']([^"']+)["']"#).expect("valid regex"));

/// mdBook's heading id for a heading's text.
pub fn id_from_content(content: &str) -> String {
    content
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|ch| {
            if ch.is_alphanumeric() || ch == '_' || ch == '-' {
                Some(ch)
            } else if ch.is_whitespace() {
                Some('-')
            } else {
                None
            }
        })
        .collect()
}

struct Page {
    ids: HashSet<String>,
    /// (link destination, Markdown line)
    links: Vec<(String, usize)>,
}

fn scan(text: &str) -> Page {
    let mut ids = HashSet::new();
    let mut links = Vec::new();
    let mut heading: Option<(Option<String>, String)> = None;
    let lines = LineIndex::new(text);
    for (ev, range) in new_cmark_parser(text, &MarkdownOptions::default()).into_offset_iter() {
        match ev {
            Event::Start(Tag::Heading { id, .. }) => {
                heading = Some((id.map(|i| i.to_string()), String::new()))
            }
            Event::End(TagEnd::Heading(_)) => {
                if let Some((explicit, content)) = heading.take() {
                    let id = explicit.unwrap_or_else(|| id_from_content(&content));
                    let mut unique = id.clone();
                    let mut n = 1;
                    while !ids.insert(unique.clone()) {
                        unique = format!("{id}-{n}");
                        n += 1;
                    }
                }
            }
            Event::Text(t) | Event::Code(t) => {
                if let Some((_, c)) = heading.as_mut() {
                    c.push_str(&t);
                }
            }
            Event::Html(h) | Event::InlineHtml(h) => {
                for c in HTML_ID.captures_iter(&h) {
                    ids.insert(c[1].to_string());
                }
            }
            Event::Start(Tag::Link { dest_url, .. })
            | Event::Start(Tag::Image { dest_url, .. }) => {
                links.push((dest_url.to_string(), lines.line(range.start)));
            }
            _ => {}
        }
    }
    Page { ids, links }
}

/// Lexically joins a relative link to the directory of `from` (both `/`-separated).
fn resolve(from: &str, rel: &str) -> Option<String> {
    let mut parts: Vec<&str> = from.split('/').collect();
    parts.pop();
    for comp in rel.split('/') {
        match comp {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            c => parts.push(c),
        }
    }
    Some(parts.join("/"))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Some(b) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn check(book: &Book) -> Vec<Diagnostic> {
    let pages: BTreeMap<&str, Page> = book
        .chapters
        .iter()
        .map(|c| (c.path.as_str(), scan(&c.text)))
        .collect();
    let mut diags = Vec::new();
    for (from, page) in &pages {
        for (dest, line) in &page.links {
            let at = MdLoc::new(*from, *line);
            if dest.contains("://")
                || dest.starts_with("mailto:")
                || dest.starts_with("//")
                || dest.is_empty()
            {
                continue;
            }
            let (path, frag) = match dest.split_once('#') {
                Some((p, f)) => (p, Some(percent_decode(f))),
                None => (dest.as_str(), None),
            };
            let path = path.split('?').next().unwrap_or("");
            let target = if path.is_empty() {
                Some(from.to_string())
            } else if path.starts_with('/') {
                // Site-absolute: relative to the book's src directory.
                Some(format!("{}{}", book.src, percent_decode(path)))
            } else {
                resolve(from, &percent_decode(path))
            };
            let Some(mut target) = target else {
                diags.push(Diagnostic::error(
                    "links::broken",
                    format!("link `{dest}` climbs above the book root"),
                    &at,
                ));
                continue;
            };
            if let Some(stem) = target.strip_suffix(".html") {
                target = format!("{stem}.md");
            }
            if target.ends_with('/') || target == book.src {
                target = format!("{}/README.md", target.trim_end_matches('/'));
            }
            if target.ends_with(".md") {
                let Some(to) = pages.get(target.as_str()) else {
                    let why = if book.root.join(&target).is_file() {
                        "exists but is not listed in SUMMARY.md, so mdBook does not render it"
                    } else {
                        "does not exist"
                    };
                    diags.push(Diagnostic::error(
                        "links::broken",
                        format!("link `{dest}`: `{target}` {why}"),
                        &at,
                    ));
                    continue;
                };
                if let Some(frag) = frag
                    && !frag.is_empty()
                    && !to.ids.contains(&frag)
                {
                    let mut known: Vec<&String> = to.ids.iter().collect();
                    known.sort();
                    let close: Vec<&&String> = known
                        .iter()
                        .filter(|k| k.contains(&frag) || frag.contains(k.as_str()))
                        .take(3)
                        .collect();
                    let mut d = Diagnostic::error(
                        "links::broken-anchor",
                        format!("link `{dest}`: `{target}` has no heading with id `{frag}`"),
                        &at,
                    );
                    if !close.is_empty() {
                        d = d.with_note(format!(
                            "similar ids: {}",
                            close
                                .iter()
                                .map(|s| s.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ));
                    }
                    diags.push(d);
                }
            } else if !book.root.join(&target).exists() {
                diags.push(Diagnostic::error(
                    "links::broken",
                    format!("link `{dest}`: `{target}` does not exist"),
                    &at,
                ));
            }
        }
    }
    diags
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_like_mdbook() {
        assert_eq!(
            id_from_content("`--passes`: add more rustdoc passes"),
            "--passes-add-more-rustdoc-passes"
        );
        assert_eq!(id_from_content("Why `x_forwarded`?"), "why-x_forwarded");
        let p = scan(
            "# A b\n\n## A b\n\n### Custom {#mine}\n\n<a id=\"raw\"></a>\n\n[x](other.md#a-b)\n",
        );
        for id in ["a-b", "a-b-1", "mine", "raw"] {
            assert!(p.ids.contains(id), "{id} in {:?}", p.ids);
        }
        assert_eq!(p.links, vec![("other.md#a-b".to_string(), 9)]);
    }

    #[test]
    fn resolve_paths() {
        assert_eq!(
            resolve("src/a/b.md", "../c.md").as_deref(),
            Some("src/c.md")
        );
        assert_eq!(
            resolve("src/a/b.md", "./d/e.md").as_deref(),
            Some("src/a/d/e.md")
        );
        assert_eq!(percent_decode("a%20b"), "a b");
    }
}
