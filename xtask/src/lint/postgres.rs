//! `postgresql.conf` (the main file and every variant), checked by the installed PostgreSQL
//! server itself: `postgres -D <scratch dir> -C data_directory` reads the file with the server's
//! own parser and GUC table and refuses unknown parameters, bad syntax and invalid values
//! (units, ranges, enum values, booleans), without starting a cluster. No hand-kept list.
//!
//! The server stops at the first *kind* of error (syntax and unknown names before values), so
//! the lines it names are commented out and the file is read again, a few times, to report
//! every problem in one run. Each message is mapped to the line that sets the parameter.

use super::TreeView;
use crate::cache;
use crate::diagnostics::Diagnostic;
use crate::tree::TreeFile;
use regex::Regex;
use std::collections::BTreeSet;
use std::sync::LazyLock;

static AT_LINE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r#"in file "[^"]*" line (\d+)"#).expect("valid regex"));
static PARAM: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r#"parameter "([^"]+)""#).expect("valid regex"));
static OPEN_FILE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r#"configuration file "[^"]*/([^"/]+)""#).expect("valid regex"));

/// Whether a tree file is a PostgreSQL server config.
pub fn is_pg_conf(f: &TreeFile) -> bool {
    f.path.ends_with("postgresql.conf")
        || f.path.ends_with(".conf") && f.path.starts_with("postgres/")
}

/// The 1-based line that last sets `name` (names are case-insensitive), if any.
fn line_setting(content: &str, name: &str) -> Option<usize> {
    let mut found = None;
    for (i, line) in content.lines().enumerate() {
        let l = line.trim_start();
        let key: String = l
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == '.')
            .collect();
        if !key.is_empty() && key.eq_ignore_ascii_case(name) {
            found = Some(i + 1);
        }
    }
    found
}

fn line_mentioning(content: &str, needle: &str) -> Option<usize> {
    content
        .lines()
        .position(|l| !l.trim_start().starts_with('#') && l.contains(needle))
        .map(|i| i + 1)
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
struct Finding {
    line: usize,
    message: String,
    hint: Option<String>,
}

/// The postgres binary, or None when PostgreSQL is not installed.
fn postgres_bin() -> Option<std::path::PathBuf> {
    static BIN: std::sync::OnceLock<Option<std::path::PathBuf>> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        crate::tools::pg_bindir()
            .map(|d| d.join("postgres"))
            .filter(|p| p.exists())
    })
    .clone()
}

fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// One pass of the server over `content`: its complaints, in order.
fn server_pass(bin: &std::path::Path, content: &str) -> Result<Vec<Finding>, String> {
    use std::os::unix::fs::PermissionsExt;
    let dir = cache::scratch_dir("pg")?;
    let _cleanup = Cleanup(dir.clone());
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| e.to_string())?;
    let conf = dir.join("postgresql.conf");
    std::fs::write(&conf, content).map_err(|e| e.to_string())?;
    std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o644))
        .map_err(|e| e.to_string())?;
    let dir_s = dir.to_string_lossy().into_owned();
    let mut cmd = if running_as_root() {
        // The server refuses to run as root.
        let mut c = std::process::Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin);
        c
    } else {
        std::process::Command::new(bin)
    };
    let out = cmd
        .args(["-D", &dir_s, "-C", "data_directory"])
        .output()
        .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
    if out.status.success() {
        return Ok(Vec::new());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let mut findings: Vec<Finding> = Vec::new();
    for line in stderr.lines() {
        let Some((_, msg)) = line.split_once(":  ") else {
            continue;
        };
        let level = line.split(":  ").next().unwrap_or("");
        if level.ends_with("HINT") {
            if let Some(last) = findings.last_mut() {
                last.hint = Some(msg.to_string());
            }
            continue;
        }
        if !level.ends_with("LOG") && !level.ends_with("ERROR") {
            continue;
        }
        if msg.starts_with("skipping missing configuration file") {
            continue;
        }
        let line_no = AT_LINE
            .captures(msg)
            .and_then(|c| c[1].parse().ok())
            .or_else(|| {
                PARAM
                    .captures(msg)
                    .and_then(|c| line_setting(content, &c[1]))
            })
            .or_else(|| {
                OPEN_FILE
                    .captures(msg)
                    .and_then(|c| line_mentioning(content, &c[1]))
            })
            .unwrap_or(1);
        let message = AT_LINE
            .replace_all(msg, "on line $1")
            .replace(&format!("{dir_s}/"), "");
        findings.push(Finding {
            line: line_no,
            message,
            hint: None,
        });
    }
    if findings.is_empty() {
        findings.push(Finding {
            line: 1,
            message: stderr.trim().to_string(),
            hint: None,
        });
    }
    Ok(findings)
}

struct Cleanup(std::path::PathBuf);
impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Every complaint of the server about `content`, over several passes.
fn findings(bin: &std::path::Path, content: &str) -> Result<Vec<Finding>, String> {
    let key = cache::key(&[
        b"postgres-conf-v1",
        &cache::tool_id(bin),
        content.as_bytes(),
    ]);
    cache::memo(&key, || {
        let mut all: Vec<Finding> = Vec::new();
        let mut text = content.to_string();
        for _ in 0..6 {
            let found = server_pass(bin, &text)?;
            if found.is_empty() {
                break;
            }
            let lines: BTreeSet<usize> = found.iter().map(|f| f.line).collect();
            let before = all.len();
            for f in found {
                if !all.contains(&f) {
                    all.push(f);
                }
            }
            if all.len() == before {
                break;
            }
            // Comment out the lines named and read the file again.
            text = text
                .lines()
                .enumerate()
                .map(|(i, l)| {
                    if lines.contains(&(i + 1)) {
                        format!("# {l}\n")
                    } else {
                        format!("{l}\n")
                    }
                })
                .collect();
        }
        Ok(all)
    })
}

pub fn check(view: &TreeView<'_>) -> Vec<Diagnostic> {
    let mut diags = Vec::new();
    let confs: Vec<&TreeFile> = view.tree.files.values().filter(|f| is_pg_conf(f)).collect();
    if confs.is_empty() {
        return diags;
    }
    let Some(bin) = postgres_bin() else {
        diags.push(Diagnostic::warning(
            "postgres::not-installed",
            "PostgreSQL is not installed: postgresql.conf was not checked (cargo xtask setup debian)",
            &confs[0].first_loc(),
        ));
        return diags;
    };
    for f in confs {
        match findings(&bin, &f.content) {
            Ok(found) => {
                for fd in found {
                    let mut d = Diagnostic::error(
                        "postgres::invalid-setting",
                        format!("PostgreSQL rejects this: {}", fd.message),
                        &f.md_loc(fd.line),
                    )
                    .with_note(format!(
                        "in {}, line {}; checked with {}",
                        f.path,
                        fd.line,
                        bin.display()
                    ));
                    if let Some(h) = fd.hint {
                        d = d.with_note(h);
                    }
                    diags.push(d);
                }
            }
            Err(why) => diags.push(Diagnostic::warning(
                "postgres::not-checked",
                why,
                &f.first_loc(),
            )),
        }
    }
    diags
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_setting_lines() {
        let c = "# shared_buffers = 1\nshared_buffers = 2GB\nwork_mem 4MB\nSHARED_BUFFERS=3\n";
        assert_eq!(line_setting(c, "shared_buffers"), Some(4));
        assert_eq!(line_setting(c, "work_mem"), Some(3));
        assert_eq!(line_setting(c, "fsync"), None);
    }

    #[test]
    fn the_server_rejects_bad_settings() {
        let Some(bin) = postgres_bin() else { return };
        let f = findings(
            &bin,
            "shared_buffers = 128MB\nno_such_thing = 1\nwal_level = replicaa\nfsync = maybe\n",
        )
        .unwrap();
        let lines: Vec<usize> = f.iter().map(|f| f.line).collect();
        assert!(
            lines.contains(&2) && lines.contains(&3) && lines.contains(&4),
            "{f:?}"
        );
        assert!(
            findings(&bin, "shared_buffers = 128MB\nwal_level = replica\n")
                .unwrap()
                .is_empty()
        );
    }
}
