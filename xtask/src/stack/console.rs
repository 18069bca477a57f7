//! Every `console` block of the book, run against the live deployment in reading order.
//!
//! Each command runs as a reader's shell would in the deployment directory (`bash -c`, with
//! the project's `COMPOSE_PROJECT_NAME` and `COMPOSE_FILE`), its standard output and error
//! together, as a terminal shows them. A command must succeed (grep finding nothing, status 1,
//! is not a failure); when the book shows output after it, that output must match what came
//! back, with the wildcards of [`crate::book::console`]. A mismatch is reported at its
//! Markdown line; with `--bless`, the shown output of every mismatched command is rewritten
//! with what came back. Blocks marked `skip="reason"` are counted, not run.

use super::Stack;
use super::report::{ConsoleCounts as Counts, Report, Step};
use crate::book::console::{self, Command};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// How long one command may take (a backup, a `docker compose run`).
const TIMEOUT: Duration = Duration::from_secs(300);

/// One replacement of shown output lines in a Markdown file.
struct Edit {
    /// 0-based Markdown line of the first shown output line, and how many there are.
    from: usize,
    len: usize,
    /// The indentation of the command's line (a block inside a list item).
    indent: String,
    lines: Vec<String>,
}

/// Runs every console block; pushes one step; with `bless`, rewrites mismatched outputs.
/// `windows` gets the time of each block that stops or restarts services: what the processes
/// log while they are stopped on purpose (a worker's lost Redis connection) is not a finding,
/// as for the kill table.
pub fn run(
    s: &Stack,
    report: &mut Report,
    bless: bool,
    windows: &mut Vec<super::checks::Window>,
) -> Counts {
    let t = Instant::now();
    let mut counts = Counts::default();
    let mut edits: BTreeMap<String, Vec<Edit>> = BTreeMap::new();
    for b in s.book.blocks().filter(|b| b.lang == "console") {
        let at = b.fence_loc();
        if let Some(r) = b.skip_reason() {
            counts.skipped.push(format!("{}:{}: {r}", at.file, at.line));
            continue;
        }
        let Some(Ok(cmds)) = b.console_session() else {
            counts.failures.push(format!(
                "{}:{}: not a runnable console block",
                at.file, at.line
            ));
            continue;
        };
        counts.run += 1;
        let mut ok = true;
        let stops = cmds.iter().any(|c| stops_services(&c.text));
        let from = super::checks::now();
        for c in &cmds {
            counts.commands += 1;
            let loc = b.line_loc(c.line);
            let (status, actual) = match execute(s, c) {
                Ok(x) => x,
                Err(e) => {
                    ok = false;
                    counts
                        .failures
                        .push(format!("{}:{}: {e:#}", loc.file, loc.line));
                    continue;
                }
            };
            let failed = status != Some(0) && !(status == Some(1) && ends_in_grep(&c.text));
            if failed {
                ok = false;
                counts.failures.push(format!(
                    "{}:{}: `{}` exited with {status:?}:\n{}",
                    loc.file,
                    loc.line,
                    c.text,
                    tail(&actual, 15)
                ));
            }
            if c.output.is_empty() {
                continue;
            }
            counts.compared += 1;
            if !console::matches(&c.output, &actual) {
                ok = false;
                counts.failures.push(format!(
                    "{}:{}: `{}` printed something else than the book shows:\n--- shown\n{}\n--- printed\n{}",
                    loc.file,
                    loc.line,
                    c.text,
                    c.output.join("\n"),
                    tail(&actual, 40)
                ));
                if bless && !failed {
                    let md = b.line_loc(c.output_line);
                    edits.entry(b.file.clone()).or_default().push(Edit {
                        from: md.line - 1,
                        len: c.output.len(),
                        indent: String::new(),
                        lines: actual,
                    });
                }
            }
        }
        if stops {
            windows.push(super::checks::Window {
                from,
                to: super::checks::now() + 1.0,
            });
        }
        if ok {
            counts.matched += 1;
        }
    }
    if bless {
        for (file, es) in edits {
            match apply(&s.book.root.join(&file), es) {
                Ok(()) => counts.blessed.push(file),
                Err(e) => counts.failures.push(format!("{file}: cannot bless: {e:#}")),
            }
        }
    }
    report.push(Step::new(
        format!(
            "every console block runs and prints what the book shows ({} run, {} matched, {} skipped)",
            counts.run,
            counts.matched,
            counts.skipped.len()
        ),
        counts.failures.is_empty() || (bless && !counts.blessed.is_empty() && all_output(&counts)),
        if counts.failures.is_empty() {
            format!(
                "{} commands, {} outputs compared",
                counts.commands, counts.compared
            )
        } else {
            counts.failures.join("\n")
        },
        t.elapsed(),
    ));
    counts
}

/// Whether every failure is an output mismatch (which `--bless` fixes).
fn all_output(c: &Counts) -> bool {
    c.failures
        .iter()
        .all(|f| f.contains("printed something else than the book shows"))
}

/// Runs one command as the reader's shell would; (exit status, normalised output).
fn execute(s: &Stack, c: &Command) -> anyhow::Result<(Option<i32>, Vec<String>)> {
    let line = format!("{{ {}\n}} 2>&1", c.text);
    let r = s.compose.shell(&line, None, TIMEOUT)?;
    Ok((r.code, console::normalise(&r.text())))
}

/// Whether a command stops or restarts services of the deployment.
fn stops_services(cmd: &str) -> bool {
    let words: Vec<&str> = cmd.split_whitespace().collect();
    words.windows(3).any(|w| {
        w[0] == "docker" && w[1] == "compose" && ["stop", "restart", "down", "kill"].contains(&w[2])
    })
}

/// Whether the last stage of a pipeline is `grep` (whose status 1 means "no line matched").
fn ends_in_grep(cmd: &str) -> bool {
    // The last stage after an unquoted `|` (a `|` inside quotes belongs to a pattern).
    let (mut quote, mut last) = (None, 0);
    for (i, ch) in cmd.char_indices() {
        match (quote, ch) {
            (None, '\'' | '"') => quote = Some(ch),
            (Some(q), c) if c == q => quote = None,
            (None, '|') => last = i + 1,
            _ => {}
        }
    }
    cmd[last..].trim_start().starts_with("grep ")
}

fn tail(lines: &[String], n: usize) -> String {
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Replaces shown output lines in a Markdown file (edits in any order, none overlapping).
fn apply(path: &std::path::Path, mut edits: Vec<Edit>) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path)?;
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    edits.sort_by_key(|e| std::cmp::Reverse(e.from));
    for mut e in edits {
        // The indentation of the block: that of the line before the output (the command).
        if let Some(prev) = e.from.checked_sub(1).and_then(|i| lines.get(i)) {
            e.indent = prev.chars().take_while(|c| *c == ' ').collect();
        }
        let new: Vec<String> = e
            .lines
            .iter()
            .map(|l| {
                if l.is_empty() {
                    String::new()
                } else {
                    format!("{}{l}", e.indent)
                }
            })
            .collect();
        lines.splice(e.from..e.from + e.len, new);
    }
    let mut out = lines.join("\n");
    if text.ends_with('\n') {
        out.push('\n');
    }
    std::fs::write(path, out)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grep_pipelines() {
        assert!(ends_in_grep("docker compose logs db | grep -i 'x'"));
        assert!(!ends_in_grep("docker compose logs db | grep x | tail"));
        assert!(!ends_in_grep("docker compose ps"));
        assert!(stops_services("docker compose stop client_sync1 synapse"));
        assert!(!stops_services("docker compose logs stop"));
        assert!(ends_in_grep(
            "docker compose logs db | grep -E 'duration: |still waiting for'"
        ));
        assert!(!ends_in_grep("grep 'a|b' f | wc -l"));
    }

    #[test]
    fn bless_replaces_the_shown_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.md");
        std::fs::write(&p, "x\n```console\n$ a\nold\nold2\n$ b\n```\n").unwrap();
        apply(
            &p,
            vec![Edit {
                from: 3,
                len: 2,
                indent: String::new(),
                lines: vec!["new".into()],
            }],
        )
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "x\n```console\n$ a\nnew\n$ b\n```\n"
        );
    }
}
