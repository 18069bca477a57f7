//! nginx configuration: a tokenizer and parser that keep file and line like crossplane
//! ([`lexer`], [`ast`]), the directive table ([`directives`]), `include` resolution over the
//! deployment tree ([`config`]), complex values and built-in variables ([`vars`]), and the
//! checks of `cargo xtask lint` ([`lint`], including the real `nginx -t` in [`nginx_t`]).

pub mod ast;
pub mod config;
pub mod directives;
pub mod gixy;
pub mod lexer;
pub mod lint;
pub mod nginx_t;
pub mod vars;

use crate::extract::{Fragment, Tree, TreeFile};

/// A tree made of literal files, each pretending to come from line 1 of `<path>.md`
/// (for tests and fixtures).
pub fn tree_from(files: &[(&str, &str)]) -> Tree {
    let mut tree = Tree::default();
    for (path, content) in files {
        let lines = content.lines().count().max(1);
        tree.files.insert(
            (*path).to_string(),
            TreeFile {
                path: (*path).to_string(),
                content: (*content).to_string(),
                fragments: vec![Fragment {
                    md_file: format!("{path}.md"),
                    md_line: 1,
                    out_line: 1,
                    lines,
                }],
                secret: false,
                lang: if path.ends_with(".yaml") {
                    "yaml".into()
                } else {
                    "nginx".into()
                },
            },
        );
    }
    tree
}
