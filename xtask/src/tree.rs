//! The assembled deployment tree: every file the book's `title` blocks make, with the map from
//! each line of a file back to the Markdown line that wrote it ([`TreeFile::md_loc`], the one
//! place that turns a position in an extracted file into a position in the book).
//!
//! A YAML file is parsed at most once, on first use ([`TreeFile::yaml`]), and every model and
//! check of the tree reads that one parse; a text that several trees share (the main tree and
//! its variants differ in a few files only) is parsed once per process.

use crate::diagnostics::MdLoc;
use crate::yaml::{self, Loaded, Node};
use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

type Parse = Arc<Result<Loaded, yaml::Issue>>;

/// The YAML parse of a text, shared by every file with that text.
fn parse(text: &str) -> Parse {
    static PARSES: crate::cache::Memo<String, Parse> = crate::cache::Memo::new();
    PARSES.get_or(text.to_string(), || Arc::new(yaml::load(text)))
}

/// One fragment of an assembled file: which Markdown lines produced which file lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fragment {
    pub md_file: String,
    /// Markdown line of the fragment's first content line.
    pub md_line: usize,
    /// 1-based line of the fragment's first line in the assembled file.
    pub out_line: usize,
    pub lines: usize,
}

#[derive(Debug, Clone)]
pub struct TreeFile {
    /// Relative to the deployment root, `/`-separated.
    pub path: String,
    /// The file's text. Change it only with [`TreeFile::set_content`] (which forgets the parse).
    pub content: String,
    pub fragments: Vec<Fragment>,
    /// Holds a secret (a placeholder or a generated value): written with mode 0600.
    pub secret: bool,
    /// The language of the first block (yaml, nginx, conf, sh, ...).
    pub lang: String,
    /// The YAML parse of `content`, made on first use.
    yaml: OnceLock<Parse>,
    /// The start of each line of `content`, made on first use.
    lines: OnceLock<crate::book::LineIndex>,
}

impl TreeFile {
    pub fn new(
        path: impl Into<String>,
        content: impl Into<String>,
        fragments: Vec<Fragment>,
        lang: impl Into<String>,
    ) -> Self {
        TreeFile {
            path: path.into(),
            content: content.into(),
            fragments,
            secret: false,
            lang: lang.into(),
            yaml: OnceLock::new(),
            lines: OnceLock::new(),
        }
    }

    /// Replaces the text (and forgets its parse).
    pub fn set_content(&mut self, content: String) {
        self.content = content;
        self.yaml = OnceLock::new();
        self.lines = OnceLock::new();
    }

    /// Markdown location of 1-based line `line` of this file.
    pub fn md_loc(&self, line: usize) -> MdLoc {
        let line = line.max(1);
        // The last fragment starting at or before `line` (a binary search: fragments are in
        // file order).
        let i = self.fragments.partition_point(|f| f.out_line <= line);
        let frag = self
            .fragments
            .get(i.saturating_sub(1))
            .expect("a tree file has at least one fragment");
        let off = (line - frag.out_line).min(frag.lines.saturating_sub(1));
        MdLoc::new(frag.md_file.clone(), frag.md_line + off)
    }

    /// Markdown location of byte offset `pos` of this file.
    pub fn md_loc_at(&self, pos: usize) -> MdLoc {
        self.md_loc(self.line_of(pos))
    }

    /// The 1-based line of byte offset `pos` of the file (a binary search in the file's line
    /// index, made on first use).
    pub fn line_of(&self, pos: usize) -> usize {
        self.lines
            .get_or_init(|| crate::book::LineIndex::new(&self.content))
            .line(pos)
    }

    /// Where the file starts in the book (its first fragment's first line).
    pub fn first_loc(&self) -> MdLoc {
        self.md_loc(1)
    }

    /// Whether the file is YAML (by its block language or its extension).
    pub fn is_yaml(&self) -> bool {
        matches!(self.lang.as_str(), "yaml" | "yml")
            || self.path.ends_with(".yaml")
            || self.path.ends_with(".yml")
    }

    /// The file parsed as YAML by [`crate::yaml::load`], once.
    pub fn yaml(&self) -> &Result<Loaded, yaml::Issue> {
        self.yaml.get_or_init(|| parse(&self.content))
    }

    /// The first YAML document, when the file parses.
    pub fn yaml_root(&self) -> Option<&Node> {
        self.yaml().as_ref().ok().and_then(Loaded::root)
    }
}

/// The assembled deployment tree.
#[derive(Debug, Clone, Default)]
pub struct Tree {
    pub files: BTreeMap<String, TreeFile>,
    /// The variant this tree was assembled for (None: the main tree).
    pub variant: Option<String>,
}

impl Tree {
    pub fn get(&self, path: &str) -> Option<&TreeFile> {
        self.files.get(path)
    }

    /// Markdown location of line `line` of the tree file `path` (the file's own path when the
    /// tree has no such file).
    pub fn md_loc(&self, path: &str, line: usize) -> MdLoc {
        match self.get(path) {
            Some(f) => f.md_loc(line),
            None => MdLoc::new(path, line),
        }
    }

    /// A tree of literal files, each pretending to come from line 1 of `<path>.md` (for tests
    /// and small fixtures). Files ending in `.yaml`/`.yml` are YAML, the others nginx.
    pub fn from_literal(files: &[(&str, &str)]) -> Tree {
        let mut tree = Tree::default();
        for (path, content) in files {
            let lines = content.lines().count().max(1);
            let lang = if path.ends_with(".yaml") || path.ends_with(".yml") {
                "yaml"
            } else {
                "nginx"
            };
            tree.files.insert(
                (*path).to_string(),
                TreeFile::new(
                    *path,
                    *content,
                    vec![Fragment {
                        md_file: format!("{path}.md"),
                        md_line: 1,
                        out_line: 1,
                        lines,
                    }],
                    lang,
                ),
            );
        }
        tree
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_map_to_the_markdown_and_yaml_is_parsed_once() {
        let mut f = TreeFile::new(
            "a.yaml",
            "a: 1\nb: 2\nc: 3\n",
            vec![
                Fragment {
                    md_file: "src/x.md".into(),
                    md_line: 10,
                    out_line: 1,
                    lines: 2,
                },
                Fragment {
                    md_file: "src/y.md".into(),
                    md_line: 40,
                    out_line: 3,
                    lines: 1,
                },
            ],
            "yaml",
        );
        assert_eq!(f.md_loc(2), MdLoc::new("src/x.md", 11));
        assert_eq!(f.md_loc(3), MdLoc::new("src/y.md", 40));
        assert_eq!(f.md_loc_at(5), MdLoc::new("src/x.md", 11));
        let first = f.yaml_root().unwrap() as *const Node;
        assert_eq!(f.yaml_root().unwrap() as *const Node, first, "one parse");
        f.set_content("a: [\n".into());
        assert!(f.yaml().is_err(), "a new text is parsed again");
    }
}
