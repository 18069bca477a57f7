//! YAML as the linter needs it: a node tree that keeps the line and column of every node, with
//! anchors, aliases and merge keys (`<<`) resolved, plus the checks that are about YAML itself:
//! syntax errors with positions, duplicate keys, tabs in indentation, and YAML 1.1 traps.
//!
//! Why `saphyr-parser`: `serde_yaml` is archived and its forks all sit on libyaml (RUSTSEC
//! 2024-0449), `serde_yml` is unsound, `marked-yaml` rejects anchors. `saphyr-parser` is a
//! maintained, pure-Rust YAML 1.2 parser whose events carry spans, which is exactly what a linter
//! needs: we build the tree ourselves so that every node keeps its position and duplicate keys
//! are seen before they are collapsed. Merge keys are a YAML 1.1 feature that Compose and PyYAML
//! (Synapse) both apply, so the tree applies them too.
//!
//! Everything here works on one text and reports 1-based lines of that text; callers map lines
//! to the Markdown with `TreeFile::md_loc`. Nothing here panics on any input: depth and size are
//! bounded (see the property test in `tests/lint_fuzz.rs`).

use saphyr_parser::{Event, Parser, ScalarStyle, Span};
use std::collections::HashMap;

/// Nesting deeper than this is refused (a stack-safe bound; real configs nest < 20).
const MAX_DEPTH: usize = 256;
/// Alias expansion may not create more nodes than this ("billion laughs").
const MAX_NODES: usize = 200_000;

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub value: Value,
    /// 1-based line in the text.
    pub line: usize,
    /// 0-based column (characters).
    pub col: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Scalar(Scalar),
    Seq(Vec<Node>),
    /// Entries in document order; merged (`<<`) entries come after the explicit ones.
    Map(Vec<(Node, Node)>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Scalar {
    pub text: String,
    /// Plain (unquoted, not a block scalar): only these are resolved to null/bool/number.
    pub plain: bool,
    /// A tag such as `!reset` or `!!str`, as written (`handle` + `suffix`).
    pub tag: Option<String>,
}

/// A problem found while reading YAML, at a 1-based line of the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    pub line: usize,
    pub code: &'static str,
    pub message: String,
    /// Errors stop the file from being understood; warnings do not.
    pub error: bool,
}

impl Node {
    /// The value under `key` of a mapping (last one wins, like every YAML loader we target).
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(entries) => entries.iter().rev().find(|(k, _)| k.as_str() == Some(key)).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The key node of `key` (for positions).
    pub fn key_node(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(entries) => entries.iter().rev().find(|(k, _)| k.as_str() == Some(key)).map(|(k, _)| k),
            _ => None,
        }
    }

    /// A scalar's text (whatever its type), None for collections.
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Scalar(s) => Some(&s.text),
            _ => None,
        }
    }

    pub fn entries(&self) -> &[(Node, Node)] {
        match &self.value {
            Value::Map(e) => e,
            _ => &[],
        }
    }

    pub fn items(&self) -> &[Node] {
        match &self.value {
            Value::Seq(v) => v,
            _ => &[],
        }
    }

    pub fn is_map(&self) -> bool {
        matches!(self.value, Value::Map(_))
    }

    /// Null in the YAML 1.2 core schema (an empty plain scalar, `~`, `null`).
    pub fn is_null(&self) -> bool {
        matches!(&self.value, Value::Scalar(s) if s.plain && s.tag.is_none() && matches!(s.text.as_str(), "" | "~" | "null" | "Null" | "NULL"))
    }

    /// A scalar or a list of scalars, as strings (Synapse accepts both for e.g. stream writers).
    pub fn str_list(&self) -> Vec<(&str, &Node)> {
        match &self.value {
            Value::Scalar(s) if !self.is_null() => vec![(s.text.as_str(), self)],
            Value::Seq(items) => items.iter().filter_map(|n| n.as_str().map(|s| (s, n))).collect(),
            _ => Vec::new(),
        }
    }

    /// The boolean this node holds under YAML 1.1 rules as PyYAML applies them (Synapse).
    pub fn as_bool_11(&self) -> Option<bool> {
        match &self.value {
            Value::Scalar(s) if s.plain => match s.text.to_ascii_lowercase().as_str() {
                "true" | "yes" | "on" | "y" => Some(true),
                "false" | "no" | "off" | "n" => Some(false),
                _ => None,
            },
            _ => None,
        }
    }

    /// The node as JSON under the YAML 1.2 core schema (what compose-go sees), for schema checks.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.value {
            Value::Scalar(s) => {
                if !s.plain || s.tag.as_deref().is_some_and(|t| t.ends_with(":str") || t == "!!str") {
                    return J::String(s.text.clone());
                }
                match s.text.as_str() {
                    "" | "~" | "null" | "Null" | "NULL" => J::Null,
                    "true" | "True" | "TRUE" => J::Bool(true),
                    "false" | "False" | "FALSE" => J::Bool(false),
                    t => {
                        if let Some(n) = parse_int(t) {
                            J::from(n)
                        } else if let Some(f) = parse_float(t) {
                            serde_json::Number::from_f64(f).map_or_else(|| J::String(t.to_string()), J::Number)
                        } else {
                            J::String(t.to_string())
                        }
                    }
                }
            }
            Value::Seq(items) => J::Array(items.iter().map(Node::to_json).collect()),
            Value::Map(entries) => {
                let mut m = serde_json::Map::new();
                for (k, v) in entries {
                    let key = match &k.value {
                        Value::Scalar(s) => s.text.clone(),
                        _ => format!("{:?}", k.to_json()),
                    };
                    m.entry(key).or_insert_with(|| v.to_json());
                }
                J::Object(m)
            }
        }
    }

    /// The node at a JSON pointer (`/services/db/restart`), for mapping schema errors back.
    pub fn at_pointer(&self, pointer: &str) -> Option<&Node> {
        let mut node = self;
        for raw in pointer.split('/').skip(1) {
            let part = raw.replace("~1", "/").replace("~0", "~");
            node = match &node.value {
                Value::Map(_) => node.get(&part)?,
                Value::Seq(items) => items.get(part.parse::<usize>().ok()?)?,
                Value::Scalar(_) => return None,
            };
        }
        Some(node)
    }
}

fn parse_int(t: &str) -> Option<i64> {
    let (neg, digits) = match t.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let v = if let Some(h) = digits.strip_prefix("0x") {
        i64::from_str_radix(h, 16).ok()?
    } else if let Some(o) = digits.strip_prefix("0o") {
        i64::from_str_radix(o, 8).ok()?
    } else if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        digits.parse().ok()?
    } else {
        return None;
    };
    Some(if neg { -v } else { v })
}

fn parse_float(t: &str) -> Option<f64> {
    let ok = t.bytes().all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b)) && t.bytes().any(|b| b.is_ascii_digit());
    if ok { t.parse().ok() } else { None }
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
    let mut events = Vec::new();
    for ev in Parser::new_from_str(text) {
        match ev {
            Ok(e) => events.push(e),
            Err(e) => {
                out.issues.push(Issue {
                    line: e.marker().line().clamp(1, text.lines().count().max(1)),
                    code: "yaml::syntax",
                    message: format!("YAML syntax error: {}", e.info()),
                    error: true,
                });
                return out;
            }
        }
    }
    let mut b = Builder { events, pos: 0, anchors: HashMap::new(), nodes: 0, issues: Vec::new() };
    while b.pos < b.events.len() {
        match &b.events[b.pos].0 {
            Event::DocumentStart(_) => {
                b.pos += 1;
                b.anchors.clear();
                if let Some(n) = b.node(0) {
                    out.docs.push(n);
                } else {
                    break;
                }
            }
            _ => b.pos += 1,
        }
    }
    out.issues.append(&mut b.issues);
    for doc in &out.docs {
        yaml11_traps(doc, &mut out.issues);
    }
    // YAML counts a lone CR as a line break, the book does not: keep lines inside the text.
    let last = text.lines().count().max(1);
    for i in &mut out.issues {
        i.line = i.line.clamp(1, last);
    }
    out
}

struct Builder<'a> {
    events: Vec<(Event<'a>, Span)>,
    pos: usize,
    anchors: HashMap<usize, Node>,
    nodes: usize,
    issues: Vec<Issue>,
}

impl Builder<'_> {
    fn fail(&mut self, line: usize, msg: String) -> Option<Node> {
        self.issues.push(Issue { line, code: "yaml::too-complex", message: msg, error: true });
        None
    }

    /// Builds the node starting at the current event (None on a structural problem).
    fn node(&mut self, depth: usize) -> Option<Node> {
        let (ev, span) = self.events.get(self.pos)?.clone();
        let (line, col) = (span.start.line().max(1), span.start.col());
        self.pos += 1;
        self.nodes += 1;
        if depth > MAX_DEPTH {
            return self.fail(line, format!("nesting deeper than {MAX_DEPTH} levels"));
        }
        if self.nodes > MAX_NODES {
            return self.fail(line, format!("more than {MAX_NODES} nodes once aliases are expanded"));
        }
        let tag_str = |t: &Option<std::borrow::Cow<'_, saphyr_parser::Tag>>| {
            t.as_ref().map(|t| format!("{}{}", t.handle, t.suffix))
        };
        match ev {
            Event::Scalar(text, style, anchor, tag) => {
                let n = Node {
                    value: Value::Scalar(Scalar {
                        text: text.into_owned(),
                        plain: style == ScalarStyle::Plain,
                        tag: tag_str(&tag),
                    }),
                    line,
                    col,
                };
                if anchor > 0 {
                    self.anchors.insert(anchor, n.clone());
                }
                Some(n)
            }
            Event::Alias(id) => {
                let Some(n) = self.anchors.get(&id).cloned() else {
                    return self.fail(line, "alias to an unknown anchor".into());
                };
                self.nodes += count(&n);
                if self.nodes > MAX_NODES {
                    return self.fail(line, format!("more than {MAX_NODES} nodes once aliases are expanded"));
                }
                Some(n)
            }
            Event::SequenceStart(anchor, _) => {
                let mut items = Vec::new();
                loop {
                    match self.events.get(self.pos).map(|e| &e.0) {
                        Some(Event::SequenceEnd) => {
                            self.pos += 1;
                            break;
                        }
                        None => return None,
                        _ => items.push(self.node(depth + 1)?),
                    }
                }
                let n = Node { value: Value::Seq(items), line, col };
                if anchor > 0 {
                    self.anchors.insert(anchor, n.clone());
                }
                Some(n)
            }
            Event::MappingStart(anchor, _) => {
                let mut explicit: Vec<(Node, Node)> = Vec::new();
                let mut merged: Vec<(Node, Node)> = Vec::new();
                loop {
                    match self.events.get(self.pos).map(|e| &e.0) {
                        Some(Event::MappingEnd) => {
                            self.pos += 1;
                            break;
                        }
                        None => return None,
                        _ => {
                            let k = self.node(depth + 1)?;
                            let v = self.node(depth + 1)?;
                            let is_merge = matches!(&k.value, Value::Scalar(s) if s.plain && s.text == "<<");
                            if is_merge {
                                self.merge(&v, &mut merged);
                                continue;
                            }
                            if let Some(first) = explicit.iter().find(|(e, _)| same_key(e, &k)) {
                                self.issues.push(Issue {
                                    line: k.line,
                                    code: "yaml::duplicate-key",
                                    message: format!(
                                        "key `{}` is given twice in this mapping (first on line {}); YAML loaders silently keep only one",
                                        key_text(&k),
                                        first.0.line
                                    ),
                                    error: true,
                                });
                            }
                            explicit.push((k, v));
                        }
                    }
                }
                for (k, v) in merged {
                    if !explicit.iter().any(|(e, _)| same_key(e, &k)) {
                        explicit.push((k, v));
                    }
                }
                let n = Node { value: Value::Map(explicit), line, col };
                if anchor > 0 {
                    self.anchors.insert(anchor, n.clone());
                }
                Some(n)
            }
            _ => None,
        }
    }

    /// Adds the entries of a merge value (a mapping or a list of mappings; earlier ones win).
    fn merge(&mut self, v: &Node, into: &mut Vec<(Node, Node)>) {
        let sources: Vec<&Node> = match &v.value {
            Value::Map(_) => vec![v],
            Value::Seq(items) => items.iter().collect(),
            Value::Scalar(_) => Vec::new(),
        };
        if sources.is_empty() || sources.iter().any(|s| !s.is_map()) {
            self.issues.push(Issue {
                line: v.line,
                code: "yaml::bad-merge",
                message: "a merge key `<<` takes a mapping (usually an alias like `*defaults`) or a list of them".into(),
                error: true,
            });
            return;
        }
        for s in sources {
            for (k, val) in s.entries() {
                if !into.iter().any(|(e, _)| same_key(e, k)) {
                    into.push((k.clone(), val.clone()));
                }
            }
        }
    }
}

fn count(n: &Node) -> usize {
    1 + match &n.value {
        Value::Scalar(_) => 0,
        Value::Seq(items) => items.iter().map(count).sum(),
        Value::Map(e) => e.iter().map(|(k, v)| count(k) + count(v)).sum(),
    }
}

fn same_key(a: &Node, b: &Node) -> bool {
    match (&a.value, &b.value) {
        (Value::Scalar(x), Value::Scalar(y)) => x.text == y.text && x.plain == y.plain || x.text == y.text && !x.plain && !y.plain,
        _ => a.value == b.value,
    }
}

fn key_text(k: &Node) -> String {
    k.as_str().map_or_else(|| "(complex key)".into(), String::from)
}

/// A tab in the indentation of a line: YAML forbids it, and the resulting parse error (if any)
/// usually points somewhere else.
fn tab_indentation(text: &str, issues: &mut Vec<Issue>) {
    let mut in_block_scalar: Option<usize> = None;
    for (i, line) in text.lines().enumerate() {
        let indent: String = line.chars().take_while(|c| *c == ' ' || *c == '\t').collect();
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
        if trimmed.ends_with('|') || trimmed.ends_with('>') || trimmed.ends_with("|-") || trimmed.ends_with(">-") {
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
        match &n.value {
            Value::Scalar(s) => {
                if s.plain && s.tag.is_none() && YAML11_BOOLS.contains(&s.text.to_ascii_lowercase().as_str()) && seen.insert((n.line, n.col)) {
                    issues.push(Issue {
                        line: n.line,
                        code: "yaml::yaml11-boolean",
                        message: format!(
                            "unquoted `{}` is the boolean {} in YAML 1.1 (PyYAML, old Compose) but the string \"{}\" in YAML 1.2: \
                             quote it if a string is meant (e.g. `restart: \"no\"`), write {} if a boolean is",
                            s.text,
                            matches!(s.text.to_ascii_lowercase().as_str(), "y" | "yes" | "on"),
                            s.text,
                            if matches!(s.text.to_ascii_lowercase().as_str(), "y" | "yes" | "on") { "`true`" } else { "`false`" }
                        ),
                        error: true,
                    });
                }
                if s.plain && s.tag.is_none() && s.text.len() > 1 && s.text.starts_with('0') && s.text.bytes().all(|b| b.is_ascii_digit()) && seen.insert((n.line, n.col)) {
                    issues.push(Issue {
                        line: n.line,
                        code: "yaml::yaml11-octal",
                        message: format!(
                            "unquoted `{}` is an octal number in YAML 1.1 (PyYAML) but decimal in YAML 1.2: quote it",
                            s.text
                        ),
                        error: true,
                    });
                }
            }
            Value::Seq(items) => stack.extend(items.iter()),
            Value::Map(entries) => {
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
        assert_eq!(x.get("b").unwrap().line, 6);
        assert_eq!(x.get("a").unwrap().line, 2);
        assert_eq!(r.at_pointer("/x/b").unwrap().line, 6);
    }

    #[test]
    fn checks() {
        let l = load("a: 1\nb:\n  c: 2\na: 3\n");
        assert_eq!(l.issues[0].code, "yaml::duplicate-key");
        assert_eq!(l.issues[0].line, 4);
        let l = load("x:\n\ty: 1\n");
        assert!(l.issues.iter().any(|i| i.code == "yaml::tab-indent" && i.line == 2));
        let l = load("services:\n  s:\n    restart: no\n");
        assert_eq!(l.issues[0].code, "yaml::yaml11-boolean");
        assert_eq!(l.issues[0].line, 3);
        let l = load("a: [1, 2\n");
        assert_eq!(l.issues[0].code, "yaml::syntax");
        let l = load("a: *nope\n");
        assert!(!l.ok());
        let l = load("a: \"no\"\nb: |\n  no\n\tx\n");
        assert!(l.issues.iter().all(|i| i.code != "yaml::yaml11-boolean"), "{:?}", l.issues);
    }
}
