//! The whole nginx configuration of a deployment tree: `nginx/nginx.conf` parsed, every
//! `include` resolved inside the tree, and every position mapped back to the Markdown.
//!
//! Paths: the tree's `nginx/` directory is the container's `/etc/nginx/` (the official image's
//! configuration prefix), so `include conf.d/*.conf;` and `include /etc/nginx/conf.d/*.conf;`
//! both mean the tree files `nginx/conf.d/*.conf`. Files the nginx image ships itself
//! (`mime.types`, `fastcgi_params`, ...) are accepted without content. Glob includes that match
//! nothing are fine (as in nginx); a plain include of a missing file is an error.

use super::ast::{self, Directive};
use crate::diagnostics::{Diagnostic, MdLoc};
use crate::tree::Tree;

/// Where the tree's nginx directory is mounted in the container.
pub const CONTAINER_PREFIX: &str = "/etc/nginx/";

/// Files the nginx image ships in `/etc/nginx`.
pub const IMAGE_FILES: &[&str] = &[
    "mime.types",
    "fastcgi_params",
    "fastcgi.conf",
    "scgi_params",
    "uwsgi_params",
    "koi-utf",
    "koi-win",
    "win-utf",
];

#[derive(Debug, Clone)]
pub struct Config {
    /// Tree path of the main file, e.g. `nginx/nginx.conf`.
    pub root: String,
    /// Tree directory standing for `/etc/nginx`, e.g. `nginx`.
    pub dir: String,
    /// Directives with includes spliced in: an `include` directive stays (with `includes` set)
    /// and the included files' directives follow it at the same level.
    pub directives: Vec<Directive>,
}

/// The tree path of the main nginx file, if the tree has one.
pub fn root_file(tree: &Tree) -> Option<String> {
    if tree.get("nginx/nginx.conf").is_some() {
        return Some("nginx/nginx.conf".into());
    }
    tree.files
        .keys()
        .find(|p| p.ends_with("/nginx.conf") || *p == "nginx.conf")
        .cloned()
}

/// Markdown location of `line` of tree file `file`.
pub fn md(tree: &Tree, file: &str, line: usize) -> MdLoc {
    match tree.get(file) {
        Some(tf) => tf.md_loc(line),
        None => MdLoc::new(file, line),
    }
}

/// Loads and resolves the nginx configuration of the tree.
pub fn load(tree: &Tree) -> Result<Config, Vec<Diagnostic>> {
    let Some(root) = root_file(tree) else {
        return Err(vec![Diagnostic::error(
            "nginx::no-config",
            "the book produces no `nginx/nginx.conf`",
            &MdLoc::new("src/SUMMARY.md", 1),
        )]);
    };
    let dir = root
        .rsplit_once('/')
        .map_or(String::new(), |(d, _)| d.to_string());
    let mut diags = Vec::new();
    let mut stack = vec![root.clone()];
    let directives = load_file(tree, &dir, &root, &mut stack, &mut diags).unwrap_or_default();
    if diags.is_empty() {
        Ok(Config {
            root,
            dir,
            directives,
        })
    } else {
        Err(diags)
    }
}

fn load_file(
    tree: &Tree,
    dir: &str,
    file: &str,
    stack: &mut Vec<String>,
    diags: &mut Vec<Diagnostic>,
) -> Option<Vec<Directive>> {
    let tf = tree.get(file)?;
    match ast::parse(file, tf.content.as_bytes()) {
        Ok(mut dirs) => {
            resolve(tree, dir, &mut dirs, stack, diags);
            Some(dirs)
        }
        Err(e) => {
            diags.push(
                Diagnostic::error("nginx::syntax", e.msg.to_string(), &tf.md_loc(e.line))
                    .with_note(format!("in {}:{}", e.file, e.line)),
            );
            None
        }
    }
}

fn resolve(
    tree: &Tree,
    dir: &str,
    dirs: &mut Vec<Directive>,
    stack: &mut Vec<String>,
    diags: &mut Vec<Diagnostic>,
) {
    let mut out = Vec::with_capacity(dirs.len());
    for mut d in std::mem::take(dirs) {
        if let Some(b) = &mut d.block {
            resolve(tree, dir, b, stack, diags);
        }
        if d.name != "include" || d.args.len() != 1 {
            out.push(d);
            continue;
        }
        let pat = d.args[0].text.clone();
        let at = md(tree, &d.file, d.line);
        let Some(rel) = to_tree_pattern(dir, &pat) else {
            diags.push(Diagnostic::error(
                "nginx::include-outside",
                format!("`include {pat}` points outside {CONTAINER_PREFIX}, which the book does not provide"),
                &at,
            ));
            out.push(d);
            continue;
        };
        let base = rel.rsplit('/').next().unwrap_or("");
        let globbed = pat.contains(['*', '?', '[']);
        let mut files: Vec<String> = tree
            .files
            .keys()
            .filter(|p| glob_match(&rel, p))
            .cloned()
            .collect();
        files.sort();
        if files.is_empty() && !globbed && !IMAGE_FILES.contains(&base) {
            diags.push(Diagnostic::error(
                "nginx::include-missing",
                format!("`include {pat}`: no block of the book produces `{rel}`"),
                &at,
            ));
        }
        let mut spliced = Vec::new();
        for f in &files {
            if stack.contains(f) || stack.len() > 16 {
                diags.push(Diagnostic::error(
                    "nginx::include-cycle",
                    format!("`include {pat}` includes `{f}` again"),
                    &at,
                ));
                continue;
            }
            stack.push(f.clone());
            if let Some(mut ds) = load_file(tree, dir, f, stack, diags) {
                spliced.append(&mut ds);
            }
            stack.pop();
        }
        d.includes = files;
        out.push(d);
        out.append(&mut spliced);
    }
    *dirs = out;
}

/// Turns an include argument into a tree path pattern, or None when outside the prefix.
fn to_tree_pattern(dir: &str, pat: &str) -> Option<String> {
    let rel = if let Some(r) = pat.strip_prefix(CONTAINER_PREFIX) {
        r
    } else if pat.starts_with('/') {
        return None;
    } else {
        pat
    };
    if rel.split('/').any(|s| s == "..") {
        return None;
    }
    Some(if dir.is_empty() {
        rel.to_string()
    } else {
        format!("{dir}/{rel}")
    })
}

/// Shell-style glob over `/`-separated paths: `*` and `?` never match `/`; `[...]` classes.
pub fn glob_match(pat: &str, s: &str) -> bool {
    fn go(p: &[u8], s: &[u8]) -> bool {
        match p.first() {
            None => s.is_empty(),
            Some(b'*') => (0..=s.len())
                .take_while(|&i| i == 0 || s[i - 1] != b'/')
                .any(|i| go(&p[1..], &s[i..])),
            Some(b'?') => !s.is_empty() && s[0] != b'/' && go(&p[1..], &s[1..]),
            Some(b'[') => {
                let Some(end) = p.iter().skip(1).position(|&c| c == b']').map(|e| e + 1) else {
                    return !s.is_empty() && s[0] == b'[' && go(&p[1..], &s[1..]);
                };
                if s.is_empty() {
                    return false;
                }
                let class = &p[1..end];
                let (neg, class) = match class.first() {
                    Some(b'!' | b'^') => (true, &class[1..]),
                    _ => (false, class),
                };
                let mut hit = false;
                let mut i = 0;
                while i < class.len() {
                    if i + 2 < class.len() && class[i + 1] == b'-' {
                        hit |= class[i] <= s[0] && s[0] <= class[i + 2];
                        i += 3;
                    } else {
                        hit |= class[i] == s[0];
                        i += 1;
                    }
                }
                hit != neg && go(&p[end + 1..], &s[1..])
            }
            Some(&c) => !s.is_empty() && s[0] == c && go(&p[1..], &s[1..]),
        }
    }
    go(pat.as_bytes(), s.as_bytes())
}

/// Writes the tree's nginx files (those under `dir`) into a scratch copy of `/etc/nginx` at
/// `etc`, with the image files nginx expects beside them, each file's text passed through
/// `rewrite` (container paths to scratch paths). Used by `nginx -t` and gixy.
pub fn write_scratch_etc(
    tree: &crate::tree::Tree,
    dir: &str,
    etc: &std::path::Path,
    rewrite: impl Fn(&str) -> String,
) -> std::io::Result<()> {
    std::fs::create_dir_all(etc)?;
    for f in IMAGE_FILES {
        let src = std::path::Path::new("/etc/nginx").join(f);
        if src.exists() {
            std::fs::copy(&src, etc.join(f))?;
        }
    }
    for (path, tf) in &tree.files {
        let Some(rel) = path.strip_prefix(dir) else {
            continue;
        };
        crate::contain::write(etc, rel, rewrite(&tf.content))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("nginx/conf.d/*.conf", "nginx/conf.d/a.conf"));
        assert!(!glob_match("nginx/conf.d/*.conf", "nginx/conf.d/x/a.conf"));
        assert!(!glob_match(
            "nginx/conf.d/*.conf",
            "nginx/conf.d/a.conf.bak"
        ));
        assert!(glob_match("n/[a-c]?.conf", "n/b1.conf"));
        assert_eq!(
            to_tree_pattern("nginx", "/etc/nginx/conf.d/*.conf").unwrap(),
            "nginx/conf.d/*.conf"
        );
        assert_eq!(to_tree_pattern("nginx", "/usr/share/x"), None);
    }
}
