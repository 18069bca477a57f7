//! YAML with positions: a small loader over `saphyr-parser` events.
//!
//! Why our own tree on top of `saphyr-parser`: `serde_yaml` is deprecated, its forks are built on
//! libyaml (YAML 1.1 resolution differs from both PyYAML and Compose's Go library), and none of
//! them keeps a position on every node. `saphyr-parser` is pure Rust, maintained, and reports a
//! span for every event, so this module can keep the line of every key and value (and map it to
//! the Markdown through `TreeFile::md_loc`), resolve anchors and `<<` merge keys the way both
//! PyYAML and Compose do, and report duplicate keys instead of silently keeping one.
//!
//! Scalars stay text plus their style; callers decide how to read them (`Node::as_str`,
//! `Node::yaml11_bool`), which is what the lints about YAML 1.1 traps need.

use saphyr_parser::{Event, Parser, ScalarStyle};
use std::collections::HashMap;

/// Alias expansion may not create more nodes than this ("billion laughs"): the loader copies
/// the anchored node for every alias.
pub const MAX_NODES: usize = 200_000;

/// The code of a syntax error (fatal).
pub const SYNTAX: &str = "yaml::syntax";
/// The code of a document whose aliases expand past [`MAX_NODES`] (fatal).
pub const TOO_COMPLEX: &str = "yaml::too-complex";

/// Where a node starts and ends in the YAML text (1-based lines, 0-based columns).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Plain,
    SingleQuoted,
    DoubleQuoted,
    Literal,
    Folded,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    Scalar {
        value: String,
        style: Style,
        tag: Option<String>,
    },
    Seq(Vec<Node>),
    /// Entries in document order, merge keys already applied (own keys first, then merged ones
    /// not overridden, in merge order). `<<` entries themselves are removed.
    Map(Vec<(Node, Node)>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub start: Pos,
    pub end: Pos,
    pub kind: Kind,
    /// The anchor this node was defined with, or the anchor an alias refers to.
    pub anchor: Option<String>,
}

/// A problem found while loading: syntax errors are fatal, the others are not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    pub code: &'static str,
    pub message: String,
    pub line: usize,
}

impl Node {
    pub fn line(&self) -> usize {
        self.start.line
    }

    /// The scalar's text for plain and quoted scalars (None for null, sequences and maps).
    pub fn as_str(&self) -> Option<&str> {
        match &self.kind {
            Kind::Scalar { value, style, .. } => {
                if *style == Style::Plain && is_null(value) {
                    None
                } else {
                    Some(value)
                }
            }
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(&self.kind, Kind::Scalar { value, style: Style::Plain, .. } if is_null(value))
    }

    pub fn is_plain(&self) -> bool {
        matches!(
            &self.kind,
            Kind::Scalar {
                style: Style::Plain,
                ..
            }
        )
    }

    /// The boolean a YAML 1.1 reader (PyYAML, so Synapse) sees in a plain scalar.
    pub fn yaml11_bool(&self) -> Option<bool> {
        let Kind::Scalar {
            value,
            style: Style::Plain,
            ..
        } = &self.kind
        else {
            return None;
        };
        yaml11_bool(value)
    }

    /// The boolean a YAML 1.2 core-schema reader sees (true/false only).
    pub fn yaml12_bool(&self) -> Option<bool> {
        let Kind::Scalar {
            value,
            style: Style::Plain,
            ..
        } = &self.kind
        else {
            return None;
        };
        match value.as_str() {
            "true" | "True" | "TRUE" => Some(true),
            "false" | "False" | "FALSE" => Some(false),
            _ => None,
        }
    }

    pub fn as_i64(&self) -> Option<i64> {
        let Kind::Scalar {
            value,
            style: Style::Plain,
            ..
        } = &self.kind
        else {
            return None;
        };
        value.replace('_', "").parse().ok()
    }

    pub fn as_seq(&self) -> Option<&[Node]> {
        match &self.kind {
            Kind::Seq(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_map(&self) -> Option<&[(Node, Node)]> {
        match &self.kind {
            Kind::Map(v) => Some(v),
            _ => None,
        }
    }

    /// The value of `key` in a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.as_map()?
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(_, v)| v)
    }

    /// The key node of `key` in a mapping (for pointing at the key's line).
    pub fn get_key(&self, key: &str) -> Option<&Node> {
        self.as_map()?
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(k, _)| k)
    }

    /// Follows a path of mapping keys: `node.path(&["database", "args", "host"])`.
    pub fn path(&self, keys: &[&str]) -> Option<&Node> {
        keys.iter().try_fold(self, |n, k| n.get(k))
    }

    /// A scalar or a sequence of scalars, as strings (Synapse accepts both for many keys).
    pub fn str_list(&self) -> Vec<&str> {
        match &self.kind {
            Kind::Seq(items) => items.iter().filter_map(Node::as_str).collect(),
            _ => self.as_str().into_iter().collect(),
        }
    }

    /// A mapping's entries (empty for anything else).
    pub fn entries(&self) -> &[(Node, Node)] {
        self.as_map().unwrap_or(&[])
    }

    /// A sequence's items (empty for anything else).
    pub fn items(&self) -> &[Node] {
        self.as_seq().unwrap_or(&[])
    }

    pub fn is_map(&self) -> bool {
        self.as_map().is_some()
    }

    /// A scalar or a list of scalars, each with its node (for positions).
    pub fn str_nodes(&self) -> Vec<(&str, &Node)> {
        match &self.kind {
            Kind::Seq(items) => items
                .iter()
                .filter_map(|n| n.as_str().map(|s| (s, n)))
                .collect(),
            _ => self.as_str().map(|s| (s, self)).into_iter().collect(),
        }
    }

    /// The node at a JSON pointer (`/services/db/restart`), for mapping schema errors back.
    pub fn at_pointer(&self, pointer: &str) -> Option<&Node> {
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

    /// JSON under the YAML 1.2 core schema (what compose-go sees), for schema checks.
    pub fn json(&self) -> serde_json::Value {
        self.to_json(resolve_core)
    }

    /// Converts to JSON (for schema validation). Plain scalars are resolved with `resolve`.
    pub fn to_json(&self, resolve: fn(&str) -> serde_json::Value) -> serde_json::Value {
        match &self.kind {
            Kind::Scalar {
                value,
                style: Style::Plain,
                ..
            } => resolve(value),
            Kind::Scalar { value, .. } => serde_json::Value::String(value.clone()),
            Kind::Seq(items) => {
                serde_json::Value::Array(items.iter().map(|n| n.to_json(resolve)).collect())
            }
            Kind::Map(entries) => serde_json::Value::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.as_str().unwrap_or("null").to_string(), v.to_json(resolve)))
                    .collect(),
            ),
        }
    }
}

pub fn is_null(s: &str) -> bool {
    matches!(s, "" | "~" | "null" | "Null" | "NULL")
}

/// YAML 1.1 booleans (what PyYAML resolves).
pub fn yaml11_bool(s: &str) -> Option<bool> {
    match s {
        "y" | "Y" | "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => {
            Some(true)
        }
        "n" | "N" | "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off" | "OFF" => {
            Some(false)
        }
        _ => None,
    }
}

/// YAML 1.2 core schema resolution of a plain scalar (what Compose's Go library does).
pub fn resolve_core(s: &str) -> serde_json::Value {
    use serde_json::Value;
    if is_null(s) {
        return Value::Null;
    }
    match s {
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        _ => {}
    }
    if let Ok(i) = s.parse::<i64>() {
        return Value::from(i);
    }
    if let Some(hex) = s.strip_prefix("0x")
        && let Ok(i) = i64::from_str_radix(hex, 16)
    {
        return Value::from(i);
    }
    if s.chars().any(|c| c.is_ascii_digit())
        && !s.contains(':')
        && let Ok(f) = s.parse::<f64>()
        && f.is_finite()
    {
        return Value::from(f);
    }
    Value::String(s.to_string())
}

/// A loaded file: every document, and the non-fatal issues found.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    pub docs: Vec<Node>,
    pub issues: Vec<Issue>,
}

impl Loaded {
    /// The first document (None for an empty text).
    pub fn root(&self) -> Option<&Node> {
        self.docs.first()
    }
}

/// Parses `text`: the one YAML loader of the project. Err carries the fatal issue (a syntax
/// error, or aliases that would expand past [`MAX_NODES`]); Ok may still carry issues (duplicate
/// keys, unknown aliases, bad merges).
///
/// One pass over the parser's events both counts what alias expansion would create (on the
/// events, before anything is copied) and builds the tree, so a "billion laughs" document is
/// refused at the line where it passes the limit and a normal one is read once.
pub fn load(text: &str) -> Result<Loaded, Issue> {
    let mut b = Builder::default();
    let mut guard = SizeGuard::default();
    for ev in Parser::new_from_str(text) {
        let (event, span) = ev.map_err(|e| Issue {
            code: SYNTAX,
            message: format!("YAML syntax error: {}", e.info()),
            line: e.marker().line().max(1),
        })?;
        if guard.exceeded(&event) {
            return Err(Issue {
                code: TOO_COMPLEX,
                message: if guard.aliases {
                    format!("aliases here expand to more than {MAX_NODES} nodes")
                } else {
                    format!(
                        "the document has more than {MAX_NODES} nodes, more than a config file needs"
                    )
                },
                line: span.start.line().max(1),
            });
        }
        let pos = Pos {
            line: span.start.line(),
            col: span.start.col(),
        };
        let end = Pos {
            line: span.end.line(),
            col: span.end.col(),
        };
        b.event(event, pos, end);
    }
    Ok(Loaded {
        docs: b.docs,
        issues: b.issues,
    })
}

/// Counts the nodes alias expansion creates, event by event.
#[derive(Default)]
struct SizeGuard {
    /// Nodes of each finished anchored node.
    sizes: HashMap<usize, usize>,
    /// Open collections: (anchor id, nodes so far).
    stack: Vec<(usize, usize)>,
    /// Nodes so far, finished or in open collections (kept as events come: never re-summed).
    all: usize,
    /// Whether an alias was met (for the message).
    aliases: bool,
}

impl SizeGuard {
    /// Accounts for `ev`; true when the document now holds more than [`MAX_NODES`].
    fn exceeded(&mut self, ev: &Event<'_>) -> bool {
        let done = match ev {
            Event::Scalar(_, _, anchor, _) => {
                self.all = self.all.saturating_add(1);
                Some((*anchor, 1))
            }
            Event::Alias(id) => {
                self.aliases = true;
                let n = self.sizes.get(id).copied().unwrap_or(1);
                self.all = self.all.saturating_add(n);
                Some((0, n))
            }
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                self.all = self.all.saturating_add(1);
                self.stack.push((*anchor, 1));
                None
            }
            // A finished collection's nodes move to its parent: `all` stays.
            Event::SequenceEnd | Event::MappingEnd => self.stack.pop(),
            _ => None,
        };
        if let Some((anchor, n)) = done {
            if anchor != 0 {
                self.sizes.insert(anchor, n);
            }
            if let Some((_, c)) = self.stack.last_mut() {
                *c = c.saturating_add(n);
            }
        }
        self.all > MAX_NODES
    }
}

enum Frame {
    Seq {
        start: Pos,
        anchor: usize,
        items: Vec<Node>,
    },
    Map {
        start: Pos,
        anchor: usize,
        entries: Vec<Node>,
    },
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    anchors: HashMap<usize, Node>,
    anchor_names: HashMap<usize, String>,
    docs: Vec<Node>,
    issues: Vec<Issue>,
}

impl Builder {
    fn event(&mut self, event: Event<'_>, pos: Pos, end: Pos) {
        match event {
            Event::Scalar(value, style, anchor, tag) => {
                let style = match style {
                    ScalarStyle::Plain => Style::Plain,
                    ScalarStyle::SingleQuoted => Style::SingleQuoted,
                    ScalarStyle::DoubleQuoted => Style::DoubleQuoted,
                    ScalarStyle::Literal => Style::Literal,
                    ScalarStyle::Folded => Style::Folded,
                };
                let tag = tag.map(|t| format!("{}{}", t.handle, t.suffix));
                let node = Node {
                    start: pos,
                    end,
                    kind: Kind::Scalar {
                        value: value.into_owned(),
                        style,
                        tag,
                    },
                    anchor: None,
                };
                self.push(node, anchor);
            }
            Event::Alias(id) => {
                let node = match self.anchors.get(&id) {
                    Some(n) => {
                        let mut n = n.clone();
                        n.anchor = self.anchor_names.get(&id).cloned();
                        n
                    }
                    None => {
                        self.issues.push(Issue {
                            code: "yaml::unknown-alias",
                            message: "alias to an unknown anchor".into(),
                            line: pos.line,
                        });
                        Node {
                            start: pos,
                            end,
                            kind: Kind::Scalar {
                                value: String::new(),
                                style: Style::Plain,
                                tag: None,
                            },
                            anchor: None,
                        }
                    }
                };
                self.push_node(node);
            }
            Event::SequenceStart(anchor, _) => self.stack.push(Frame::Seq {
                start: pos,
                anchor,
                items: Vec::new(),
            }),
            Event::MappingStart(anchor, _) => self.stack.push(Frame::Map {
                start: pos,
                anchor,
                entries: Vec::new(),
            }),
            Event::SequenceEnd => {
                if let Some(Frame::Seq {
                    start,
                    anchor,
                    items,
                }) = self.stack.pop()
                {
                    let node = Node {
                        start,
                        end,
                        kind: Kind::Seq(items),
                        anchor: None,
                    };
                    self.push(node, anchor);
                }
            }
            Event::MappingEnd => {
                if let Some(Frame::Map {
                    start,
                    anchor,
                    entries,
                }) = self.stack.pop()
                {
                    let kind = Kind::Map(self.finish_map(entries));
                    self.push(
                        Node {
                            start,
                            end,
                            kind,
                            anchor: None,
                        },
                        anchor,
                    );
                }
            }
            _ => {}
        }
    }

    fn push(&mut self, mut node: Node, anchor: usize) {
        if anchor != 0 {
            self.anchor_names
                .entry(anchor)
                .or_insert_with(|| format!("&{anchor}"));
            node.anchor = self.anchor_names.get(&anchor).cloned();
            self.anchors.insert(anchor, node.clone());
        }
        self.push_node(node);
    }

    fn push_node(&mut self, node: Node) {
        match self.stack.last_mut() {
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map { entries, .. }) => entries.push(node),
            None => self.docs.push(node),
        }
    }

    /// Pairs up keys and values, reports duplicates, applies `<<` merges.
    fn finish_map(&mut self, flat: Vec<Node>) -> Vec<(Node, Node)> {
        let mut own: Vec<(Node, Node)> = Vec::new();
        // Each string key's index in `own` (one look-up per key: linear in the map's size).
        let mut index: HashMap<String, usize> = HashMap::new();
        let mut merges: Vec<Node> = Vec::new();
        let mut it = flat.into_iter();
        while let Some(k) = it.next() {
            let v = it.next().unwrap_or_else(|| Node {
                start: k.end,
                end: k.end,
                kind: Kind::Scalar {
                    value: String::new(),
                    style: Style::Plain,
                    tag: None,
                },
                anchor: None,
            });
            if k.is_plain() && k.as_str() == Some("<<") {
                merges.push(v);
                continue;
            }
            if let Some(name) = k.as_str() {
                if let Some(&first) = index.get(name) {
                    self.issues.push(Issue {
                        code: "yaml::duplicate-key",
                        message: format!(
                            "duplicate key `{name}` (first defined on line {})",
                            own[first].0.line()
                        ),
                        line: k.line(),
                    });
                    continue;
                }
                index.insert(name.to_string(), own.len());
            }
            own.push((k, v));
        }
        for m in merges {
            let sources: Vec<Node> = match m.kind {
                Kind::Map(_) => vec![m],
                Kind::Seq(items) => items,
                _ => {
                    self.issues.push(Issue {
                        code: "yaml::bad-merge",
                        message: "`<<` must be given a mapping (or a list of mappings), usually an alias like `*name`".into(),
                        line: m.start.line,
                    });
                    continue;
                }
            };
            for src in sources {
                let Kind::Map(entries) = src.kind else {
                    self.issues.push(Issue {
                        code: "yaml::bad-merge",
                        message: "`<<` list items must be mappings".into(),
                        line: src.start.line,
                    });
                    continue;
                };
                for (k, v) in entries {
                    match k.as_str() {
                        Some(name) if index.contains_key(name) => continue,
                        Some(name) => {
                            index.insert(name.to_string(), own.len());
                        }
                        // A key that is not a scalar is kept unless one is already there.
                        None if own.iter().any(|(ek, _)| ek.as_str().is_none()) => continue,
                        None => {}
                    }
                    own.push((k, v));
                }
            }
        }
        own
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_anchors_and_merges() {
        let text = "x-base: &base\n  image: synapse\n  restart: unless-stopped\nservices:\n  main:\n    <<: *base\n    restart: \"no\"\n";
        let l = load(text).unwrap();
        assert!(l.issues.is_empty(), "{:?}", l.issues);
        let main = l.docs[0].path(&["services", "main"]).unwrap();
        assert_eq!(main.get("image").unwrap().as_str(), Some("synapse"));
        assert_eq!(
            main.get("image").unwrap().line(),
            2,
            "merged values keep their own line"
        );
        let restart = main.get("restart").unwrap();
        assert_eq!(restart.as_str(), Some("no"));
        assert_eq!(restart.line(), 7);
        assert!(!restart.is_plain());
    }

    #[test]
    fn duplicate_keys_and_yaml11() {
        let l = load("a: 1\nb: no\na: 2\n").unwrap();
        assert_eq!(l.issues.len(), 1);
        assert_eq!(l.issues[0].code, "yaml::duplicate-key");
        assert_eq!(l.issues[0].line, 3);
        assert_eq!(l.docs[0].get("b").unwrap().yaml11_bool(), Some(false));
        assert_eq!(l.docs[0].get("b").unwrap().yaml12_bool(), None);
    }

    #[test]
    fn syntax_errors_have_lines() {
        let e = load("a: 1\nb:\n\t- x\n").unwrap_err();
        assert_eq!(e.code, "yaml::syntax");
        assert!(e.line >= 2, "{e:?}");
        assert!(load("a: [1, 2\n").is_err());
    }

    #[test]
    fn alias_bombs_are_refused_before_expansion() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..8 {
            let refs = vec![format!("*a{}", i - 1); 10].join(", ");
            text.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
        }
        let e = load(&text).unwrap_err();
        assert_eq!(e.code, "yaml::too-complex");
        assert!(e.line >= 5, "{e:?}");
    }

    #[test]
    fn json_conversion() {
        let l = load("a: 1\nb: \"1\"\nc: true\nd: ~\ne: [x, 2.5]\n").unwrap();
        let j = l.docs[0].to_json(resolve_core);
        assert_eq!(
            j,
            serde_json::json!({"a": 1, "b": "1", "c": true, "d": null, "e": ["x", 2.5]})
        );
    }
}
