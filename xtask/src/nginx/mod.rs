//! The nginx language: a tokenizer and parser that keep file and line like crossplane
//! ([`lexer`], [`ast`]), the directive table ([`directives`]), `include` resolution over the
//! deployment tree ([`config`]), complex values and built-in variables ([`vars`]), and regexes as
//! nginx compiles them ([`pcre`]).
//!
//! Nothing here knows Markdown, routing or lint: the checks on top of it are
//! `crate::lint::nginx`, the routing simulator is `crate::route`.

pub mod ast;
pub mod config;
pub mod directives;
pub mod lexer;
pub mod pcre;
pub mod vars;

use crate::tree::Tree;

/// A tree made of literal files, each pretending to come from line 1 of `<path>.md`
/// (for tests and fixtures): [`Tree::from_literal`].
pub fn tree_from(files: &[(&str, &str)]) -> Tree {
    Tree::from_literal(files)
}
