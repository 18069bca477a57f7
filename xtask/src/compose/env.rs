//! What Compose reads besides the Compose file: `.env`-style files (the project's `.env`, and
//! each service's `env_file`s), and `${VAR}` interpolation of the Compose file's values.
//!
//! Interpolation follows the Compose specification
//! (<https://github.com/compose-spec/compose-spec/blob/main/12-interpolation.md>): `$$` is a literal
//! `$`; `$NAME` and `${NAME}` are the variable; `${NAME:-default}` / `${NAME-default}` give a
//! default when it is unset or empty / unset; `${NAME:+alt}` / `${NAME+alt}` the opposite;
//! `${NAME:?err}` / `${NAME?err}` make Compose fail when it is missing. A default is plain text
//! here (no nested `${...}` inside it).

use regex::Regex;
use std::collections::BTreeMap;
use std::sync::LazyLock;

/// One variable of a `.env`-style file, with its 1-based line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Var {
    pub key: String,
    pub value: String,
    pub line: usize,
}

/// Reads a `.env`-style text: `KEY=VALUE` lines, optional `export `, `#` comment lines, values
/// optionally in single or double quotes; an unquoted value ends at ` #`.
pub fn parse(text: &str) -> Vec<Var> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        let line = line.strip_prefix("export ").unwrap_or(line).trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let v = v.trim();
        let value = if let Some(q) = v
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
        {
            q.to_string()
        } else {
            v.split(" #").next().unwrap_or("").trim_end().to_string()
        };
        out.push(Var {
            key: k.trim().to_string(),
            value,
            line: i + 1,
        });
    }
    out
}

/// Reads a `.env`-style file from disk into a map (later lines win).
pub fn read_file(path: &std::path::Path) -> anyhow::Result<BTreeMap<String, String>> {
    use anyhow::Context;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read env_file {}", path.display()))?;
    Ok(parse(&text).into_iter().map(|v| (v.key, v.value)).collect())
}

static REFERENCE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\$(\$|\{([A-Za-z_][A-Za-z0-9_]*)([^}]*)\}|([A-Za-z_][A-Za-z0-9_]*))")
        .expect("valid regex")
});

/// One `$NAME` / `${NAME...}` in a text (not `$$`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference<'a> {
    /// The whole reference as written, e.g. `${DB:-synapse}`.
    pub text: &'a str,
    pub name: &'a str,
    /// What follows the name inside the braces (`:-synapse`), empty for none.
    pub modifier: &'a str,
}

impl Reference<'_> {
    /// Whether the reference gives a value when the variable is unset (`-`, `:-`, `+`, `:+`).
    pub fn has_default(&self) -> bool {
        let m = self.modifier;
        m.starts_with(":-") || m.starts_with('-') || m.starts_with(":+") || m.starts_with('+')
    }
}

/// Every variable reference in `text`, in order (`$$` escapes are skipped).
pub fn references(text: &str) -> Vec<Reference<'_>> {
    REFERENCE
        .captures_iter(text)
        .filter(|c| &c[1] != "$")
        .map(|c| Reference {
            text: c.get(0).map_or("", |m| m.as_str()),
            name: c.get(2).or(c.get(4)).map_or("", |m| m.as_str()),
            modifier: c.get(3).map_or("", |m| m.as_str()),
        })
        .collect()
}

/// `text` with every reference replaced from `vars` as Compose does (unset without a default:
/// the empty string, which Compose only warns about).
pub fn interpolate(text: &str, vars: &BTreeMap<String, String>) -> String {
    if !text.contains('$') {
        return text.to_string();
    }
    REFERENCE
        .replace_all(text, |c: &regex::Captures<'_>| {
            if &c[1] == "$" {
                return "$".to_string();
            }
            let name = c.get(2).or(c.get(4)).map_or("", |m| m.as_str());
            let modifier = c.get(3).map_or("", |m| m.as_str());
            let value = vars.get(name);
            let set = value.is_some();
            let nonempty = value.is_some_and(|v| !v.is_empty());
            let own = value.cloned().unwrap_or_default();
            if let Some(d) = modifier.strip_prefix(":-") {
                if nonempty { own } else { d.to_string() }
            } else if let Some(d) = modifier.strip_prefix('-') {
                if set { own } else { d.to_string() }
            } else if let Some(a) = modifier.strip_prefix(":+") {
                if nonempty {
                    a.to_string()
                } else {
                    String::new()
                }
            } else if let Some(a) = modifier.strip_prefix('+') {
                if set { a.to_string() } else { String::new() }
            } else {
                own
            }
        })
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotenv_lines() {
        let v = parse("# c\nA=1\nexport B=\"two words\"\nC='x # y'\nD=plain # note\n\nE=\nbad\n");
        let got: Vec<(&str, &str, usize)> = v
            .iter()
            .map(|v| (v.key.as_str(), v.value.as_str(), v.line))
            .collect();
        assert_eq!(
            got,
            [
                ("A", "1", 2),
                ("B", "two words", 3),
                ("C", "x # y", 4),
                ("D", "plain", 5),
                ("E", "", 7)
            ]
        );
    }

    #[test]
    fn interpolation_as_compose_does_it() {
        let vars = BTreeMap::from([
            ("A".to_string(), "a".to_string()),
            ("E".to_string(), String::new()),
        ]);
        let i = |s: &str| interpolate(s, &vars);
        assert_eq!(i("x ${A} $A $$A $${A}"), "x a a $A ${A}");
        assert_eq!(i("${NO:-d} ${E:-d} ${E-d} ${NO-d}"), "d d  d");
        assert_eq!(i("${A:+alt} ${E:+alt} ${E+alt} ${NO+alt}"), "alt  alt ");
        assert_eq!(i("${NO} ${NO:?must be set}"), " ");
        let r = references("a ${X:-1} $$Y $Z ${W}");
        let names: Vec<(&str, bool)> = r.iter().map(|r| (r.name, r.has_default())).collect();
        assert_eq!(names, [("X", true), ("Z", false), ("W", false)]);
        assert_eq!(r[0].text, "${X:-1}");
    }
}
