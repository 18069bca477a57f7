//! The YAML checks of the linter, on the project's one YAML loader ([`crate::yaml`]): the
//! loader's own issues (syntax errors with positions, alias bombs, duplicate keys, unknown aliases,
//! bad merges), tabs in indentation, and YAML 1.1 traps (plain `yes`/`no`/`on`/`off`/`y`/`n` and
//! leading-zero numbers, which PyYAML and YAML 1.2 readers read differently).
//!
//! Everything here works on one text and reports 1-based lines of that text; callers map lines
//! to the Markdown with `TreeFile::md_loc`. Nothing here panics on any input (see the property
//! test in `tests/lint_fuzz.rs`).

pub use crate::yaml::Issue;
use crate::yaml::{Kind, Loaded, Node, Style};

/// Every YAML finding of one text, given its parse: the loader's issues (fatal or not), tabs in
/// indentation and YAML 1.1 traps. An empty list means the text is clean YAML.
pub fn issues(text: &str, loaded: &Result<Loaded, Issue>) -> Vec<Issue> {
    let mut out = Vec::new();
    tab_indentation(text, &mut out);
    match loaded {
        Ok(l) => {
            out.extend(l.issues.iter().cloned());
            for doc in &l.docs {
                yaml11_traps(doc, &mut out);
            }
        }
        Err(i) => out.push(i.clone()),
    }
    // A tab makes the parser fail on the same line: the tab message says what to fix.
    let tab_lines: Vec<usize> = out
        .iter()
        .filter(|i| i.code == TAB_INDENT)
        .map(|i| i.line)
        .collect();
    out.retain(|i| !(i.code == crate::yaml::SYNTAX && tab_lines.contains(&i.line)));
    // YAML counts a lone CR as a line break, the book does not: keep lines inside the text.
    let last = text.lines().count().max(1);
    for i in &mut out {
        i.line = i.line.clamp(1, last);
    }
    out
}

/// Loads `text` with the one loader and returns its findings (for example blocks and tests).
pub fn check(text: &str) -> Vec<Issue> {
    issues(text, &crate::yaml::load(text))
}

const TAB_INDENT: &str = "yaml::tab-indent";

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

    fn codes(text: &str) -> Vec<(&'static str, usize)> {
        check(text).iter().map(|i| (i.code, i.line)).collect()
    }

    #[test]
    fn checks() {
        assert_eq!(
            codes("a: 1\nb:\n  c: 2\na: 3\n"),
            [("yaml::duplicate-key", 4)]
        );
        assert!(codes("x:\n\ty: 1\n").contains(&("yaml::tab-indent", 2)));
        assert!(
            !codes("x:\n\ty: 1\n")
                .iter()
                .any(|(c, l)| *c == "yaml::syntax" && *l == 2)
        );
        assert_eq!(
            codes("services:\n  s:\n    restart: no\n"),
            [("yaml::yaml11-boolean", 3)]
        );
        assert_eq!(codes("a: [1, 2\n")[0].0, "yaml::syntax");
        assert!(!codes("a: *nope\n").is_empty());
        assert_eq!(codes("a: \"no\"\nb: |\n  no\n"), []);
        assert_eq!(codes("mode: 0600\n"), [("yaml::yaml11-octal", 1)]);
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
        assert_eq!(codes(&bomb)[0].0, "yaml::too-complex");
    }
}
