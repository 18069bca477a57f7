//! Diagnostics are data: one type, several renderers.
//!
//! Every finding of every command is a [`Diagnostic`] that points at a Markdown file (relative to
//! the book root, e.g. `src/deployment/nginx.md`) and a 1-based line in it: the line a contributor
//! edits. Where the finding is about an extracted file, the position in that file goes into a
//! note. Renderers: human text with the source line, GitHub workflow annotations, JSON.
//!
//! Every code is registered in [`codes`], with whether it means unreadable input or a finding
//! and its severity: a diagnostic's severity and the exit status come from there.

pub mod codes;

use codes::{Kind, Level};
use serde::Serialize;
use std::fmt::Write as _;
use std::path::Path;

/// How diagnostics are printed (`--format`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    #[default]
    Human,
    Github,
    Json,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// A place in the book: Markdown file relative to the book root, 1-based line.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct MdLoc {
    pub file: String,
    pub line: usize,
}

impl MdLoc {
    pub fn new(file: impl Into<String>, line: usize) -> Self {
        MdLoc {
            file: file.into(),
            line,
        }
    }
}

impl std::fmt::Display for MdLoc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    /// `<area>::<kebab-name>`, e.g. `extract::path-escape`, `nginx::undefined-variable`
    pub code: String,
    pub message: String,
    pub file: String,
    pub line: usize,
    /// Extra context (e.g. the position in the extracted file). Not part of the JSON contract.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl Diagnostic {
    /// A diagnostic of a registered code; its severity is the registry's.
    pub fn new(code: &str, message: impl Into<String>, at: &MdLoc) -> Self {
        let severity = match codes::lookup(code).map(|c| c.level) {
            Some(Level::Warning) => Severity::Warning,
            Some(Level::Error) => Severity::Error,
            Some(Level::Tool) | None => {
                debug_assert!(
                    false,
                    "`{code}` is not a registered code with a fixed severity (diagnostics::codes)"
                );
                Severity::Error
            }
        };
        Diagnostic {
            severity,
            code: code.to_string(),
            message: clip(&message.into()),
            file: at.file.clone(),
            line: at.line,
            notes: Vec::new(),
        }
    }

    /// [`Diagnostic::new`] for a code the registry rates an error (checked in debug builds).
    pub fn error(code: &str, message: impl Into<String>, at: &MdLoc) -> Self {
        let d = Diagnostic::new(code, message, at);
        debug_assert_eq!(d.severity, Severity::Error, "`{code}` is not an error code");
        d
    }

    /// [`Diagnostic::new`] for a code the registry rates a warning (checked in debug builds).
    pub fn warning(code: &str, message: impl Into<String>, at: &MdLoc) -> Self {
        let d = Diagnostic::new(code, message, at);
        debug_assert_eq!(
            d.severity,
            Severity::Warning,
            "`{code}` is not a warning code"
        );
        d
    }

    /// A finding of an external tool whose code the registry rates [`Level::Tool`]: the tool's
    /// own rating (`tool_error`) decides the severity.
    pub fn by_tool(code: &str, tool_error: bool, message: impl Into<String>, at: &MdLoc) -> Self {
        debug_assert_eq!(
            codes::lookup(code).map(|c| c.level),
            Some(Level::Tool),
            "`{code}` is not a code rated by its tool"
        );
        Diagnostic {
            severity: if tool_error {
                Severity::Error
            } else {
                Severity::Warning
            },
            code: code.to_string(),
            message: clip(&message.into()),
            file: at.file.clone(),
            line: at.line,
            notes: Vec::new(),
        }
    }

    pub fn with_note(mut self, note: impl Into<String>) -> Self {
        self.notes.push(clip(&note.into()));
        self
    }

    pub fn loc(&self) -> MdLoc {
        MdLoc::new(self.file.clone(), self.line)
    }

    /// Whether the registry says this code means the input could not be read at all.
    pub fn is_input_error(&self) -> bool {
        codes::lookup(&self.code).is_some_and(|c| c.kind == Kind::Input)
    }
}

/// Sort by file, line, code so output is stable whatever order checks ran in.
pub fn sort(diags: &mut [Diagnostic]) {
    diags.sort_by(|a, b| {
        (&a.file, a.line, &a.code, &a.message).cmp(&(&b.file, b.line, &b.code, &b.message))
    });
}

/// Exit status of a run (the CLI contract of `src/contributing/architecture.md`): 0 clean, 1
/// findings, 2 unreadable input.
pub fn exit_status(diags: &[Diagnostic]) -> u8 {
    if diags.iter().any(Diagnostic::is_input_error) {
        2
    } else if diags.iter().any(|d| d.severity == Severity::Error) {
        1
    } else {
        0
    }
}

pub fn render(diags: &[Diagnostic], format: Format, book_root: &Path) -> String {
    match format {
        Format::Human => render_human(diags, book_root),
        Format::Github => render_github(diags),
        Format::Json => render_json(diags),
    }
}

/// The longest message, note or quoted source line a diagnostic carries, in bytes: a hostile
/// input (a 1 MB regex, a 1 MB line) is quoted in part, never whole.
pub const MAX_TEXT: usize = 400;

/// `text`, cut to about [`MAX_TEXT`] bytes (at a character boundary) with what was left out said.
pub fn clip(text: &str) -> String {
    if text.len() <= MAX_TEXT {
        return text.to_string();
    }
    let mut end = MAX_TEXT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} more bytes)", &text[..end], text.len() - end)
}

/// rustc-style text, with the Markdown source line when it can be read.
pub fn render_human(diags: &[Diagnostic], book_root: &Path) -> String {
    let mut out = String::new();
    // Each file is read and split into lines once, however many diagnostics point into it.
    let mut files: std::collections::HashMap<&str, Option<Vec<String>>> =
        std::collections::HashMap::new();
    for d in diags {
        let sev = match d.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        let _ = writeln!(out, "{sev}[{}]: {}", d.code, d.message);
        let _ = writeln!(out, "  --> {}:{}", d.file, d.line);
        let lines = files
            .entry(d.file.as_str())
            .or_insert_with(|| source_lines(book_root, &d.file));
        let src = lines
            .as_ref()
            .and_then(|l| l.get(d.line.checked_sub(1)?))
            .map(|l| clip(l));
        if let Some(src) = src {
            let num = d.line.to_string();
            let pad = " ".repeat(num.len());
            let _ = writeln!(out, "{pad} |");
            let _ = writeln!(out, "{num} | {src}");
            let _ = writeln!(out, "{pad} |");
        }
        for n in &d.notes {
            let _ = writeln!(out, "  = note: {n}");
        }
        out.push('\n');
    }
    let errors = diags
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .count();
    let warnings = diags.len() - errors;
    if !diags.is_empty() {
        let _ = writeln!(out, "{errors} error(s), {warnings} warning(s)");
    }
    out
}

/// The lines of a file of the book (a relative path inside it, a regular file: a diagnostic
/// never quotes a file from elsewhere on the machine).
fn source_lines(book_root: &Path, file: &str) -> Option<Vec<String>> {
    if file.starts_with('/') || file.split('/').any(|c| c == "..") {
        return None;
    }
    let path = book_root.join(file);
    let meta = std::fs::metadata(&path).ok()?;
    if !meta.is_file() || meta.len() > 64 << 20 {
        return None;
    }
    let bytes = std::fs::read(path).ok()?;
    let text = String::from_utf8_lossy(&bytes);
    Some(text.lines().map(|l| l.trim_end().to_string()).collect())
}

/// GitHub workflow commands: `::error file=…,line=…,title=…::message`.
pub fn render_github(diags: &[Diagnostic]) -> String {
    let mut out = String::new();
    for d in diags {
        let kind = match d.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        let mut msg = d.message.clone();
        for n in &d.notes {
            msg.push('\n');
            msg.push_str(n);
        }
        let _ = writeln!(
            out,
            "::{kind} file={},line={},title={}::{}",
            escape_property(&d.file),
            d.line,
            escape_property(&d.code),
            escape_data(&msg)
        );
    }
    out
}

/// A Markdown table of the findings (GitHub's step summary): severity, where, code, message.
pub fn render_markdown(diags: &[Diagnostic]) -> String {
    let errors = diags
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .count();
    let mut out = format!(
        "### Findings: {} error(s), {} warning(s)\n",
        errors,
        diags.len() - errors
    );
    if diags.is_empty() {
        return out;
    }
    out.push_str("\n| | where | code | message |\n| --- | --- | --- | --- |\n");
    let cell = |s: &str| s.replace('|', "\\|").replace('\n', "<br>");
    for d in diags {
        let sev = match d.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        let _ = writeln!(
            out,
            "| {sev} | `{}:{}` | `{}` | {} |",
            d.file,
            d.line,
            d.code,
            cell(&d.message)
        );
    }
    out
}

fn escape_data(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

fn escape_property(s: &str) -> String {
    escape_data(s).replace(':', "%3A").replace(',', "%2C")
}

/// `[{severity, code, message, file, line}]`, pretty-printed, one array.
pub fn render_json(diags: &[Diagnostic]) -> String {
    #[derive(Serialize)]
    struct Out<'a> {
        severity: Severity,
        code: &'a str,
        message: &'a str,
        file: &'a str,
        line: usize,
    }
    let v: Vec<Out<'_>> = diags
        .iter()
        .map(|d| Out {
            severity: d.severity,
            code: &d.code,
            message: &d.message,
            file: &d.file,
            line: d.line,
        })
        .collect();
    let mut s = serde_json::to_string_pretty(&v).expect("diagnostics serialize");
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Diagnostic> {
        vec![
            Diagnostic::error(
                "extract::bad-target",
                "target \"../x\" leaves the tree",
                &MdLoc::new("src/a.md", 3),
            ),
            Diagnostic::warning(
                "postgres::not-checked",
                "50% done, a:b",
                &MdLoc::new("src/b,c.md", 7),
            )
            .with_note("line 2\nline 3"),
        ]
    }

    #[test]
    fn github_escapes_properties_and_data() {
        let s = render_github(&sample());
        assert!(s.contains("::error file=src/a.md,line=3,title=extract%3A%3Abad-target::target \"../x\" leaves the tree"));
        assert!(s.contains("file=src/b%2Cc.md"));
        assert!(s.contains("50%25 done, a:b%0Aline 2%0Aline 3"));
    }

    #[test]
    fn markdown_is_one_row_per_finding() {
        let s = render_markdown(&sample());
        assert!(
            s.starts_with("### Findings: 1 error(s), 1 warning(s)\n"),
            "{s}"
        );
        assert_eq!(
            s.lines().filter(|l| l.starts_with("| error")).count(),
            1,
            "{s}"
        );
        assert_eq!(
            s.lines().filter(|l| l.starts_with("| warning")).count(),
            1,
            "{s}"
        );
        assert!(
            s.contains("| error | `src/a.md:3` | `extract::bad-target` |"),
            "{s}"
        );
        assert_eq!(
            render_markdown(&[]),
            "### Findings: 0 error(s), 0 warning(s)\n"
        );
    }

    #[test]
    fn exit_status_ranks_input_errors_highest() {
        let mut d = sample();
        assert_eq!(exit_status(&d), 1);
        d.push(Diagnostic::error(
            "book::not-utf8",
            "x",
            &MdLoc::new("src/c.md", 1),
        ));
        assert_eq!(exit_status(&d), 2);
        assert_eq!(exit_status(&d[1..2]), 0);
    }
}
