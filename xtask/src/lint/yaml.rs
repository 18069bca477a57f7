//! The YAML checks of the linter, on top of the project's span-keeping loader
//! ([`crate::yaml`], `saphyr-parser` events into a tree with anchors, aliases and `<<` merge keys
//! resolved and duplicate keys reported): syntax errors with positions, duplicate keys, unknown
//! aliases and bad merges (from the loader), tabs in indentation, YAML 1.1 traps (plain
//! `yes`/`no`/`on`/`off`/`y`/`n` and leading-zero numbers, which PyYAML and YAML 1.2 readers
//! read differently), and a size guard against alias expansion bombs.
//!
//! Everything here works on one text and reports 1-based lines of that text; callers map lines
//! to the Markdown with `TreeFile::md_loc`. Nothing here panics on any input (see the property
//! test in `tests/lint_fuzz.rs`).
//!
//! [`NodeExt`] adds the accessors the cross-file checks use to [`crate::yaml::Node`].

pub use crate::yaml::{Kind, Node, Style};

/// A problem found while reading YAML, at a 1-based line of the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    pub line: usize,
    pub code: &'static str,
    pub message: String,
    /// Errors stop the file from being understood; warnings do not.
    pub error: bool,
}

/// Accessors for the cross-file checks.
pub trait NodeExt {
    /// The key node of `key` (for positions).
    fn key_node(&self, key: &str) -> Option<&Node>;
    /// A mapping's entries (empty for anything else).
    fn entries(&self) -> &[(Node, Node)];
    /// A sequence's items (empty for anything else).
    fn items(&self) -> &[Node];
    fn is_map(&self) -> bool;
    /// A scalar or a list of scalars, each with its node (for positions).
    fn str_nodes(&self) -> Vec<(&str, &Node)>;
    /// The node at a JSON pointer (`/services/db/restart`), for mapping schema errors back.
    fn at_pointer(&self, pointer: &str) -> Option<&Node>;
    /// JSON under the YAML 1.2 core schema (what compose-go sees), for schema checks.
    fn json(&self) -> serde_json::Value;
}

impl NodeExt for Node {
    fn key_node(&self, key: &str) -> Option<&Node> {
        self.get_key(key)
    }

    fn entries(&self) -> &[(Node, Node)] {
        self.as_map().unwrap_or(&[])
    }

    fn items(&self) -> &[Node] {
        self.as_seq().unwrap_or(&[])
    }

    fn is_map(&self) -> bool {
        self.as_map().is_some()
    }

    fn str_nodes(&self) -> Vec<(&str, &Node)> {
        match &self.kind {
            Kind::Seq(items) => items
                .iter()
                .filter_map(|n| n.as_str().map(|s| (s, n)))
                .collect(),
            _ => self.as_str().map(|s| (s, self)).into_iter().collect(),
        }
    }

    fn at_pointer(&self, pointer: &str) -> Option<&Node> {
        let mut node = self;
        for raw in pointer.split('/').skip(1) {
            let part = raw.replace("~1", "/").replace("~0", "~");
            node = match &node.kind {
                Kind::Map(_) => node.get(&part)?,
                Kind::Seq(items) => items.get(part.parse::<usize>().ok()?)?,
                Kind::Scalar { .. } => return None,
            };
        }
        Some(node)
    }

    fn json(&self) -> serde_json::Value {
        self.to_json(crate::yaml::resolve_core)
    }
}

/// The result of reading one YAML text.
#[derive(Debug, Default)]
pub struct Loaded {
    /// One node per document (an empty text has none).
    pub docs: Vec<Node>,
    pub issues: Vec<Issue>,
}

impl Loaded {
    /// Whether the text parsed (no error-level issue).
    pub fn ok(&self) -> bool {
        !self.issues.iter().any(|i| i.error)
    }

    /// The first document, when the text parsed.
    pub fn root(&self) -> Option<&Node> {
        if self.ok() { self.docs.first() } else { None }
    }
}

/// Reads `text` and runs the YAML-level checks.
pub fn load(text: &str) -> Loaded {
    let mut out = Loaded::default();
    tab_indentation(text, &mut out.issues);
    if let Some(line) = crate::yaml::too_big(text) {
        out.issues.push(Issue {
            line,
            code: "yaml::too-complex",
            message: format!(
                "aliases here expand to more than {} nodes",
                crate::yaml::MAX_NODES
            ),
            error: true,
        });
    } else {
        match crate::yaml::load(text) {
            Ok(l) => {
                out.docs = l.docs;
                out.issues.extend(l.issues.into_iter().map(|i| Issue {
                    line: i.line,
                    code: i.code,
                    message: i.message,
                    error: true,
                }));
            }
            Err(i) => out.issues.push(Issue {
                line: i.line,
                code: i.code,
                message: i.message,
                error: true,
            }),
        }
    }
    for doc in &out.docs {
        yaml11_traps(doc, &mut out.issues);
    }
    // A tab makes the parser fail on the same line: the tab message says what to fix.
    let tab_lines: Vec<usize> = out
        .issues
        .iter()
        .filter(|i| i.code == "yaml::tab-indent")
        .map(|i| i.line)
        .collect();
    out.issues
        .retain(|i| i.code != "yaml::syntax" || !tab_lines.contains(&i.line));
    // YAML counts a lone CR as a line break, the book does not: keep lines inside the text.
    let last = text.lines().count().max(1);
    for i in &mut out.issues {
        i.line = i.line.clamp(1, last);
    }
    out
}

/// A tab in the indentation of a line: YAML forbids it, and the resulting parse error (if any)
/// usually points somewhere else.
fn tab_indentation(text: &str, issues: &mut Vec<Issue>) {
    let mut in_block_scalar: Option<usize> = None;
    for (i, line) in text.lines().enumerate() {
        let indent: String = line
            .chars()
            .take_while(|c| *c == ' ' || *c == '\t')
            .collect();
        let content = &line[indent.len()..];
        if let Some(ind) = in_block_scalar {
            if content.is_empty() || indent.len() > ind {
                continue;
            }
            in_block_scalar = None;
        }
        if indent.contains('\t') && !content.is_empty() && !content.starts_with('#') {
            issues.push(Issue {
                line: i + 1,
                code: "yaml::tab-indent",
                message: "tab character in indentation: YAML allows only spaces here".into(),
                error: true,
            });
        }
        let trimmed = content.split(" #").next().unwrap_or("").trim_end();
        if trimmed.ends_with('|')
            || trimmed.ends_with('>')
            || trimmed.ends_with("|-")
            || trimmed.ends_with(">-")
        {
            in_block_scalar = Some(indent.len());
        }
    }
}

/// Plain scalars that YAML 1.1 (PyYAML, which Synapse uses) reads as booleans but YAML 1.2
/// (Compose's Go parser, saphyr) reads as strings. Whatever the author meant, one of the two
/// readers gets something else: write `true`/`false`, or quote the string.
const YAML11_BOOLS: &[&str] = &["y", "n", "yes", "no", "on", "off"];

fn yaml11_traps(node: &Node, issues: &mut Vec<Issue>) {
    let mut stack = vec![node];
    let mut seen = std::collections::HashSet::new();
    while let Some(n) = stack.pop() {
        match &n.kind {
            Kind::Scalar {
                value,
                style: Style::Plain,
                tag: None,
            } => {
                let lower = value.to_ascii_lowercase();
                if YAML11_BOOLS.contains(&lower.as_str())
                    && seen.insert((n.start.line, n.start.col))
                {
                    let truthy = matches!(lower.as_str(), "y" | "yes" | "on");
                    issues.push(Issue {
                        line: n.line(),
                        code: "yaml::yaml11-boolean",
                        message: format!(
                            "unquoted `{value}` is the boolean {truthy} in YAML 1.1 (PyYAML, so Synapse) but the string \"{value}\" in YAML 1.2 (Compose): \
                             quote it if a string is meant (e.g. `restart: \"no\"`), write {} if a boolean is",
                            if truthy { "`true`" } else { "`false`" }
                        ),
                        error: true,
                    });
                }
                if value.len() > 1
                    && value.starts_with('0')
                    && value.bytes().all(|b| b.is_ascii_digit())
                    && seen.insert((n.start.line, n.start.col))
                {
                    issues.push(Issue {
                        line: n.line(),
                        code: "yaml::yaml11-octal",
                        message: format!("unquoted `{value}` is an octal number in YAML 1.1 (PyYAML) but decimal in YAML 1.2: quote it"),
                        error: true,
                    });
                }
            }
            Kind::Scalar { .. } => {}
            Kind::Seq(items) => stack.extend(items.iter()),
            Kind::Map(entries) => {
                for (k, v) in entries {
                    stack.push(k);
                    stack.push(v);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_anchors_and_merges() {
        let l = load("base: &b\n  a: 1\n  b: 2\nx:\n  <<: *b\n  b: 3\n");
        assert!(l.ok(), "{:?}", l.issues);
        let r = l.root().unwrap();
        let x = r.get("x").unwrap();
        assert_eq!(x.get("a").unwrap().as_str(), Some("1"));
        assert_eq!(x.get("b").unwrap().as_str(), Some("3"));
        assert_eq!(x.get("b").unwrap().line(), 6);
        assert_eq!(x.get("a").unwrap().line(), 2);
        assert_eq!(r.at_pointer("/x/b").unwrap().line(), 6);
    }

    #[test]
    fn checks() {
        let l = load("a: 1\nb:\n  c: 2\na: 3\n");
        assert_eq!(l.issues[0].code, "yaml::duplicate-key");
        assert_eq!(l.issues[0].line, 4);
        let l = load("x:\n\ty: 1\n");
        assert!(
            l.issues
                .iter()
                .any(|i| i.code == "yaml::tab-indent" && i.line == 2)
        );
        let l = load("services:\n  s:\n    restart: no\n");
        assert_eq!(l.issues[0].code, "yaml::yaml11-boolean");
        assert_eq!(l.issues[0].line, 3);
        let l = load("a: [1, 2\n");
        assert_eq!(l.issues[0].code, "yaml::syntax");
        let l = load("a: *nope\n");
        assert!(!l.ok());
        let l = load("a: \"no\"\nb: |\n  no\n");
        assert!(
            l.issues.iter().all(|i| i.code != "yaml::yaml11-boolean"),
            "{:?}",
            l.issues
        );
    }

    #[test]
    fn alias_bombs_are_refused() {
        let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let p = i - 1;
            bomb.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        let l = load(&bomb);
        assert_eq!(l.issues[0].code, "yaml::too-complex");
        assert!(l.docs.is_empty());
    }
}
