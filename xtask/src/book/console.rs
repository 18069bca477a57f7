//! The session a `console` block shows: the commands a reader types (`$ ` lines, continued by
//! a trailing `\`), each followed by the output the book says it prints, and the comparison
//! of that shown output with what really came back.
//!
//! Wildcard: `…` inside a shown line matches any text on that line (none included); a shown
//! line that is only `…` matches any number of lines (none included). Trailing spaces and
//! trailing empty lines are not compared.

/// The marker of text that varies from run to run.
pub const WILDCARD: &str = "…";

/// One command of a console block and the output shown after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// 0-based index of the command's first line in the block.
    pub line: usize,
    /// The command as bash reads it (continuation lines kept, with their `\`).
    pub text: String,
    /// 0-based index of the first shown output line (the line after the command).
    pub output_line: usize,
    /// The shown output, one entry per line.
    pub output: Vec<String>,
}

/// The commands of a console block's text. Err((line, message)) when a line before the first
/// command is not a command (a prompt of another program, say): such a block cannot run.
pub fn session(text: &str) -> Result<Vec<Command>, (usize, String)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out: Vec<Command> = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let l = lines[i];
        if let Some(cmd) = l.strip_prefix("$ ") {
            let start = i;
            let mut text = cmd.to_string();
            while text.ends_with('\\') && i + 1 < lines.len() {
                i += 1;
                text.push('\n');
                text.push_str(lines[i]);
            }
            out.push(Command {
                line: start,
                text,
                output_line: i + 1,
                output: Vec::new(),
            });
        } else if let Some(c) = out.last_mut() {
            c.output.push(l.to_string());
        } else if !l.trim().is_empty() {
            return Err((
                i,
                format!(
                    "`{l}` is not a command (`$ ` first): a console block that cannot run needs skip=\"reason\""
                ),
            ));
        }
        i += 1;
    }
    for c in &mut out {
        while c.output.last().is_some_and(|l| l.trim().is_empty()) {
            c.output.pop();
        }
    }
    Ok(out)
}

/// What a command printed, as it is compared: no carriage returns, no trailing spaces, no
/// trailing empty lines.
pub fn normalise(output: &str) -> Vec<String> {
    let mut v: Vec<String> = output
        .replace("\r\n", "\n")
        .lines()
        .map(|l| l.trim_end().to_string())
        .collect();
    while v.last().is_some_and(|l| l.is_empty()) {
        v.pop();
    }
    v
}

/// Whether the actual lines match the shown ones, wildcards included.
pub fn matches(shown: &[String], actual: &[String]) -> bool {
    let pats: Vec<Option<regex::Regex>> = shown
        .iter()
        .map(|s| {
            let s = s.trim_end();
            (s.trim() != WILDCARD).then(|| {
                let parts: Vec<String> = s.split(WILDCARD).map(regex::escape).collect();
                regex::Regex::new(&format!("^{}$", parts.join(".*"))).expect("escaped text")
            })
        })
        .collect();
    // memo[i][j]: shown[i..] matches actual[j..].
    let (n, m) = (pats.len(), actual.len());
    let mut memo = vec![vec![false; m + 1]; n + 1];
    memo[n][m] = true;
    for i in (0..n).rev() {
        for j in (0..=m).rev() {
            memo[i][j] = match &pats[i] {
                None => memo[i + 1][j] || (j < m && memo[i][j + 1]),
                Some(re) => j < m && re.is_match(&actual[j]) && memo[i + 1][j + 1],
            };
        }
    }
    memo[0][0]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn commands_continuations_and_outputs() {
        let s = session("$ a \\\n    -b\nout1\nout2\n\n$ c\n").unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].text, "a \\\n    -b");
        assert_eq!((s[0].line, s[0].output_line), (0, 2));
        assert_eq!(s[0].output, v(&["out1", "out2"]));
        assert!(s[1].output.is_empty());
        assert_eq!(session("synapse=# SELECT 1;\n").unwrap_err().0, 0);
    }

    #[test]
    fn wildcards() {
        assert!(matches(&v(&["a … c"]), &v(&["a b c"])));
        assert!(matches(&v(&["a …"]), &v(&["a "])));
        assert!(!matches(&v(&["a … c"]), &v(&["a b d"])));
        assert!(matches(&v(&["x", "…", "z"]), &v(&["x", "1", "2", "z"])));
        assert!(matches(&v(&["x", "…", "z"]), &v(&["x", "z"])));
        assert!(!matches(&v(&["x", "z"]), &v(&["x", "y", "z"])));
        assert!(matches(&v(&["…"]), &v(&[])));
        assert!(!matches(&v(&["(1 row)"]), &v(&["(1 rows)"])));
        assert_eq!(normalise("a  \r\nb\n\n"), v(&["a", "b"]));
    }
}
