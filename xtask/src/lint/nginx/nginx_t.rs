//! The real `nginx -t` on the tree's nginx configuration, when nginx is installed.
//!
//! The tree's `nginx/` directory is written to a scratch directory and the container paths in
//! it are rewritten into that prefix (`/etc/nginx/` and `/var/log/nginx/`), byte-for-line so
//! that nginx's `file:line` still points at the same line; the `user` directive is commented
//! out (the image's `nginx` user need not exist here). Files the image ships (`mime.types`, ...)
//! are copied from the local nginx when present. nginx's messages
//! (`nginx: [emerg] ... in FILE:LINE`) are mapped back to the Markdown line.

use crate::diagnostics::{Diagnostic, MdLoc};
use crate::nginx::config::{self, CONTAINER_PREFIX, Config};
use crate::tree::Tree;
use std::path::Path;
use std::process::Command;

/// Runs `nginx -t` on the tree's configuration (`cfg`, already loaded); an empty list when it
/// passes or nginx is not installed.
pub fn check(tree: &Tree, cfg: &Config) -> Vec<Diagnostic> {
    let Some(root) = config::root_file(tree) else {
        return Vec::new();
    };
    let Some(nginx) = crate::tools::which("nginx").or_else(|| {
        let p = std::path::PathBuf::from("/usr/sbin/nginx");
        p.exists().then_some(p)
    }) else {
        return Vec::new();
    };
    let dir = root
        .rsplit_once('/')
        .map_or(String::new(), |(d, _)| format!("{d}/"));
    // `nginx -t` creates the log files and temporary directories a configuration names: one
    // that would land outside the scratch copy is not run at all.
    if let Some((d, why)) = config::outside_scratch(cfg) {
        return vec![Diagnostic::warning(
            "nginx::nginx-t-not-run",
            format!("`nginx -t` was not run: {why}"),
            &config::md(tree, &d.file, d.line),
        )];
    }
    // The answer depends only on nginx, the files and whether openssl can stand in for the
    // operator's certificates: cached (target/lint-cache), so an unchanged book runs no nginx.
    let id = crate::cache::tool_id(&nginx);
    let mut parts: Vec<&[u8]> = vec![
        b"nginx -t v2",
        &id,
        if crate::tools::which("openssl").is_some() {
            b"ssl"
        } else {
            b""
        },
    ];
    for (path, tf) in &tree.files {
        if path.starts_with(&dir) {
            parts.push(path.as_bytes());
            parts.push(tf.content.as_bytes());
        }
    }
    let key = crate::cache::key(&parts);
    let result = crate::cache::memo(&key, || {
        run(tree, cfg, &nginx, &root, &dir).map_err(|e| e.to_string())
    });
    let result = result.map(|(ok, stderr)| {
        let mut diags = Vec::new();
        for line in stderr.lines() {
            if let Some(d) = to_diag(tree, line, ETC, &dir, ok) {
                diags.push(d);
            }
        }
        if !ok && diags.is_empty() {
            diags.push(Diagnostic::by_tool(
                "nginx::nginx-t",
                true,
                format!("`nginx -t` failed: {}", stderr.trim()),
                &config::md(tree, &root, 1),
            ));
        }
        diags
    });
    match result {
        Ok(d) => d,
        Err(e) => vec![Diagnostic::warning(
            "nginx::nginx-t-not-run",
            format!("could not run `nginx -t`: {e}"),
            &config::md(tree, &root, 1),
        )],
    }
}

/// TLS certificates and keys are the operator's, not the book's: for every `ssl_certificate`,
/// `ssl_certificate_key` and `ssl_trusted_certificate` under `/etc/nginx/` that the tree does
/// not provide, write a throwaway self-signed pair (made with `openssl`) so `nginx -t` can load
/// the configuration.
fn stand_in_certificates(cfg: &Config, etc: &Path) -> std::io::Result<()> {
    let mut wanted: Vec<(String, bool)> = Vec::new();
    crate::nginx::ast::walk(&cfg.directives, &mut |d, _| {
        let key = match d.name.as_str() {
            "ssl_certificate" | "ssl_trusted_certificate" => false,
            "ssl_certificate_key" => true,
            _ => return,
        };
        // A path that leaves `/etc/nginx/` (`..`, a link) gets no stand-in: nothing is
        // written outside the scratch copy, and `nginx -t` says it cannot load the file.
        if let Some(p) = d.arg(0)
            && let Some(rel) = p.strip_prefix(CONTAINER_PREFIX)
            && let Ok(out) = crate::contain::join(etc, rel)
            && std::fs::symlink_metadata(&out).is_err()
        {
            wanted.push((rel.to_string(), key));
        }
    });
    if wanted.is_empty() || crate::tools::which("openssl").is_none() {
        return Ok(());
    }
    let dir = etc.join(".stand-in");
    std::fs::create_dir_all(&dir)?;
    let (crt, key) = (dir.join("crt.pem"), dir.join("key.pem"));
    let st = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=example.com",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&crt)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()?;
    if !st.success() {
        return Ok(());
    }
    for (rel, is_key) in wanted {
        crate::contain::write(etc, &rel, std::fs::read(if is_key { &key } else { &crt })?)?;
    }
    Ok(())
}

/// Stands for the scratch copy of `/etc/nginx/` in (cached) nginx output.
const ETC: &str = "@ETC@/";

/// Writes the tree's nginx directory (`dir`, holding the main file `root`) under `scratch` as
/// `nginx -t` needs it: `etc/nginx/` with the container paths rewritten into the scratch
/// directory, `log/`, and stand-in certificates. Returns the main file's path there.
pub fn prepare(
    tree: &Tree,
    cfg: &Config,
    root: &str,
    dir: &str,
    scratch: &Path,
) -> std::io::Result<std::path::PathBuf> {
    let etc = scratch.join("etc/nginx");
    let log = scratch.join("log");
    std::fs::create_dir_all(&log)?;
    let etc_s = format!("{}/", etc.display());
    let log_s = format!("{}/", log.display());
    config::write_scratch_etc(tree, dir, &etc, |text| rewrite(text, &etc_s, &log_s))?;
    stand_in_certificates(cfg, &etc)?;
    Ok(etc.join(root.strip_prefix(dir).unwrap_or(root)))
}

/// Writes the scratch tree and runs `nginx -t`: (passed, stderr with scratch paths replaced).
fn run(
    tree: &Tree,
    cfg: &Config,
    nginx: &Path,
    root: &str,
    dir: &str,
) -> std::io::Result<(bool, String)> {
    let scratch = crate::contain::scratch("nginx-t", None)?;
    let etc = scratch.join("etc/nginx");
    let res = (|| {
        let conf = prepare(tree, cfg, root, dir, &scratch)?;
        let etc_s = format!("{}/", etc.display());
        let out = Command::new(nginx)
            // The scratch directory is the prefix: relative paths land in it.
            .arg("-p")
            .arg(format!("{}/", scratch.display()))
            .args(["-t", "-q", "-e", "stderr", "-g"])
            .arg(format!("pid {}/nginx.pid;", scratch.display()))
            .arg("-c")
            .arg(&conf)
            .output()?;
        let stderr = String::from_utf8_lossy(&out.stderr)
            .replace(&etc_s, ETC)
            .replace(&scratch.display().to_string(), "@SCRATCH@");
        Ok((out.status.success(), stderr))
    })();
    let _ = std::fs::remove_dir_all(&scratch);
    res
}

/// Rewrites container paths into the scratch prefix, keeping every line where it was.
fn rewrite(text: &str, etc: &str, log: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let t = line.trim_start();
        let l = if t.starts_with("user ") || t.starts_with("user\t") {
            format!("# {line}")
        } else {
            line.to_string()
        };
        out.push_str(
            &l.replace(CONTAINER_PREFIX, etc)
                .replace("/var/log/nginx/", log),
        );
    }
    out
}

/// A message of nginx (`[emerg] MESSAGE in FILE:LINE`) -> a diagnostic at the Markdown line.
fn to_diag(tree: &Tree, line: &str, etc: &str, dir: &str, passed: bool) -> Option<Diagnostic> {
    // `nginx: [emerg] MSG` or, with `-e stderr`, `2026/01/01 00:00:00 [emerg] 1#1: MSG`.
    let open = line.find('[')?;
    let (level, msg) = line[open + 1..].split_once("] ")?;
    let msg = match msg.split_once(": ") {
        Some((pid, m)) if pid.bytes().all(|b| b.is_ascii_digit() || b == b'#') => m,
        _ => msg,
    };
    if level == "notice" || level == "info" {
        return None;
    }
    let (text, loc) = match msg.rsplit_once(" in ") {
        Some((t, f)) if f.contains(':') => {
            let (file, ln) = f.rsplit_once(':')?;
            let ln: usize = ln.trim().parse().ok()?;
            let tree_path = file.strip_prefix(etc).map(|r| format!("{dir}{r}"));
            let at = match &tree_path {
                Some(p) if tree.get(p).is_some() => config::md(tree, p, ln),
                _ => MdLoc::new(file, ln),
            };
            (
                format!(
                    "{t} (in {}:{ln})",
                    tree_path.unwrap_or_else(|| file.to_string())
                ),
                at,
            )
        }
        _ => (
            msg.to_string(),
            config::md(tree, &format!("{dir}nginx.conf"), 1),
        ),
    };
    let text = text.replace(etc, CONTAINER_PREFIX);
    let m = format!("nginx -t: {text}");
    Some(Diagnostic::by_tool(
        "nginx::nginx-t",
        !(level == "warn" || passed),
        m,
        &loc,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::Tree;

    fn tree_from(files: &[(&str, &str)]) -> Tree {
        Tree::from_literal(files)
    }

    fn check(tree: &Tree) -> Vec<Diagnostic> {
        super::check(tree, &config::load(tree).unwrap())
    }

    #[test]
    fn real_nginx_reports_at_the_markdown_line() {
        if crate::tools::which("nginx").is_none() && !Path::new("/usr/sbin/nginx").exists() {
            eprintln!("nginx not installed: skipped");
            return;
        }
        let ok = tree_from(&[
            (
                "nginx/nginx.conf",
                "user nginx;\nevents {}\nhttp {\n include /etc/nginx/conf.d/*.conf;\n include mime.types;\n}\n",
            ),
            (
                "nginx/conf.d/a.conf",
                "upstream u { server unix:/sockets/a.sock; }\nserver { listen 127.0.0.1:8008; location / { proxy_pass http://u; } }\n",
            ),
        ]);
        assert_eq!(check(&ok), []);
        let bad = tree_from(&[
            (
                "nginx/nginx.conf",
                "events {}\nhttp {\n include conf.d/*.conf;\n}\n",
            ),
            (
                "nginx/conf.d/a.conf",
                "server {\n listen 127.0.0.1:8008;\n location / { proxy_pass http://nowhere.invalid.; }\n}\n",
            ),
        ]);
        let d = check(&bad);
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(
            (d[0].file.as_str(), d[0].line),
            ("nginx/conf.d/a.conf.md", 3)
        );
    }
}
