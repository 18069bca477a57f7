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
    let mut budget = MAX_LOADS;
    let directives =
        load_file(tree, &dir, &root, &mut stack, &mut budget, &mut diags).unwrap_or_default();
    // One report per place and message (a cycle is met once per way into it).
    let mut seen = std::collections::HashSet::new();
    diags.retain(|d| seen.insert((d.file.clone(), d.line, d.message.clone())));
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

/// How many files (with repeats) one configuration may splice in: includes that include each
/// other multiply, and past this the configuration is refused instead of expanded.
pub const MAX_LOADS: usize = 10_000;

fn load_file(
    tree: &Tree,
    dir: &str,
    file: &str,
    stack: &mut Vec<String>,
    budget: &mut usize,
    diags: &mut Vec<Diagnostic>,
) -> Option<Vec<Directive>> {
    let tf = tree.get(file)?;
    match ast::parse(file, tf.content.as_bytes()) {
        Ok(mut dirs) => {
            resolve(tree, dir, &mut dirs, stack, budget, diags);
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
    budget: &mut usize,
    diags: &mut Vec<Diagnostic>,
) {
    let mut out = Vec::with_capacity(dirs.len());
    for mut d in std::mem::take(dirs) {
        if let Some(b) = &mut d.block {
            resolve(tree, dir, b, stack, budget, diags);
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
                // A cycle is an error already: nothing more is spliced in (every way into the
                // cycle would be expanded again).
                *budget = 0;
                continue;
            }
            if *budget == 0 {
                continue;
            }
            *budget -= 1;
            if *budget == 0 {
                diags.push(Diagnostic::error(
                    "nginx::include-cycle",
                    format!(
                        "the includes splice in more than {MAX_LOADS} files (includes that \
                         include each other multiply): the configuration is not expanded further"
                    ),
                    &at,
                ));
                continue;
            }
            stack.push(f.clone());
            if let Some(mut ds) = load_file(tree, dir, f, stack, budget, diags) {
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
/// The pattern runs as a set of states over the path (no backtracking): time is the product of
/// the two lengths, whatever the number of `*`.
pub fn glob_match(pat: &str, s: &str) -> bool {
    enum Tok<'a> {
        Byte(u8),
        Any,
        Star,
        Class(bool, &'a [u8]),
    }
    let p = pat.as_bytes();
    let mut toks = Vec::new();
    let mut i = 0;
    while i < p.len() {
        match p[i] {
            b'*' => toks.push(Tok::Star),
            b'?' => toks.push(Tok::Any),
            b'[' => match p[i + 1..].iter().position(|&c| c == b']') {
                Some(e) => {
                    let class = &p[i + 1..i + 1 + e];
                    let (neg, class) = match class.first() {
                        Some(b'!' | b'^') => (true, &class[1..]),
                        _ => (false, class),
                    };
                    toks.push(Tok::Class(neg, class));
                    i += e + 1;
                }
                None => toks.push(Tok::Byte(b'[')),
            },
            c => toks.push(Tok::Byte(c)),
        }
        i += 1;
    }
    let in_class = |class: &[u8], c: u8| {
        let mut hit = false;
        let mut i = 0;
        while i < class.len() {
            if i + 2 < class.len() && class[i + 1] == b'-' {
                hit |= class[i] <= c && c <= class[i + 2];
                i += 3;
            } else {
                hit |= class[i] == c;
                i += 1;
            }
        }
        hit
    };
    let n = toks.len();
    // A `*` may match nothing: a state before one is also the state after it.
    let close = |set: &mut Vec<bool>| {
        for i in 0..n {
            if set[i] && matches!(toks[i], Tok::Star) {
                set[i + 1] = true;
            }
        }
    };
    let mut cur = vec![false; n + 1];
    cur[0] = true;
    close(&mut cur);
    for &c in s.as_bytes() {
        let mut next = vec![false; n + 1];
        for i in (0..n).filter(|&i| cur[i]) {
            match toks[i] {
                Tok::Byte(b) if b == c => next[i + 1] = true,
                Tok::Any if c != b'/' => next[i + 1] = true,
                Tok::Star if c != b'/' => next[i] = true,
                Tok::Class(neg, class) if in_class(class, c) != neg => next[i + 1] = true,
                _ => {}
            }
        }
        close(&mut next);
        if !next.iter().any(|&b| b) {
            return false;
        }
        cur = next;
    }
    cur[n]
}

/// The first directive that makes nginx create or load a file outside the scratch copy `nginx
/// -t` runs in (logs under `/var/log/nginx/` and files under `/etc/nginx/` are moved into it;
/// relative paths land under its prefix), and why. Public so every runner of the real nginx
/// (`nginx -t`, the routing cross-check) asks the same question.
pub fn outside_scratch(cfg: &Config) -> Option<(super::ast::Directive, String)> {
    let mut found = None;
    super::ast::walk(&cfg.directives, &mut |d, _| {
        if found.is_some() {
            return;
        }
        let name = d.name.as_str();
        let path = match name {
            "error_log" | "access_log" | "pid" | "lock_file" | "load_module" => d.arg(0),
            n if n.ends_with("_temp_path") || n.ends_with("_cache_path") => d.arg(0),
            _ => None,
        };
        let Some(p) = path else { return };
        let harmless = matches!(
            p,
            "off" | "stderr" | "/dev/stdout" | "/dev/stderr" | "/dev/null"
        ) || p.starts_with("syslog:")
            || p.starts_with("memory:");
        let inside = |rest: &str| crate::contain::normalize(rest).is_some();
        let ok = harmless
            || p.strip_prefix(CONTAINER_PREFIX).is_some_and(inside)
            || p.strip_prefix("/var/log/nginx/").is_some_and(inside)
            || (name == "load_module"
                && p.strip_prefix("/usr/lib/nginx/modules/")
                    .is_some_and(inside))
            || (!p.starts_with('/') && inside(p));
        if !ok {
            found = Some((
                d.clone(),
                format!(
                    "`{name} {}` names a file outside {CONTAINER_PREFIX} and /var/log/nginx/, which `nginx -t` would create or load on this machine",
                    crate::diagnostics::clip(p)
                ),
            ));
        }
    });
    found
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
