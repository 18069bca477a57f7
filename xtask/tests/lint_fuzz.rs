//! Property test: the linter's parsers never panic, whatever the input, and every position they
//! report is inside the input.
//!
//! Inputs: random bytes, soups of YAML syntax pieces (anchors, aliases, merge keys, tags, flow
//! and block collections, block scalars, tabs, documents), pathological nesting and alias
//! bombs, and random mutations of the fixture book's real YAML files. A small deterministic
//! PRNG keeps failures reproducible: the failing seed and input are printed.
//!
//! Short by default (part of `cargo test`); run long by hand with
//! `LINT_FUZZ_ITERS=200000 cargo test -p xtask --test lint_fuzz --release`, and pick another
//! sequence with `LINT_FUZZ_SEED=n`.

use xtask::{compose, yaml};

/// The one YAML loader and the linter's YAML checks on `text`: the documents (none when the
/// text does not load) and every finding.
struct Loaded {
    docs: Vec<yaml::Node>,
    issues: Vec<yaml::Issue>,
}

impl Loaded {
    fn ok(&self) -> bool {
        self.issues.is_empty()
    }
}

fn load(text: &str) -> Loaded {
    let loaded = yaml::load(text);
    Loaded {
        issues: xtask::lint::yaml::issues(text, &loaded),
        docs: loaded.map(|l| l.docs).unwrap_or_default(),
    }
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const PIECES: &[&str] = &[
    "a",
    "key",
    "services",
    "<<",
    "&x",
    "*x",
    "&y",
    "*y",
    "!reset",
    "!!str",
    "!override",
    ":",
    ": ",
    "-",
    "- ",
    "[",
    "]",
    "{",
    "}",
    ",",
    "?",
    "|",
    ">",
    "|-",
    ">+",
    "\"",
    "'",
    "#",
    "\n",
    "\n  ",
    "\n    ",
    " ",
    "\t",
    "---",
    "...",
    "%YAML 1.2",
    "no",
    "yes",
    "on",
    "0660",
    "~",
    "null",
    "true",
    "1.5e3",
    "0x1f",
    "\\",
    "é",
    "\u{feff}",
    "\r\n",
    "%",
    "@",
    "`",
];

fn soup(r: &mut Rng) -> String {
    let n = r.below(60);
    (0..n).map(|_| PIECES[r.below(PIECES.len())]).collect()
}

fn bytes(r: &mut Rng) -> String {
    let n = r.below(200);
    let v: Vec<u8> = (0..n).map(|_| (r.next() & 0xff) as u8).collect();
    String::from_utf8_lossy(&v).into_owned()
}

fn mutate(r: &mut Rng, base: &str) -> String {
    let mut s: Vec<char> = base.chars().collect();
    for _ in 0..1 + r.below(8) {
        let at = r.below(s.len() + 1);
        match r.below(4) {
            0 if !s.is_empty() => {
                s.remove(at.min(s.len() - 1));
            }
            1 => {
                for c in PIECES[r.below(PIECES.len())].chars().rev() {
                    s.insert(at, c);
                }
            }
            2 if !s.is_empty() => {
                let a = at.min(s.len() - 1);
                let b = r.below(s.len());
                s.swap(a, b);
            }
            _ => s.insert(at, ['\t', ' ', '\n', ':', '-', '&', '*'][r.below(7)]),
        }
    }
    s.into_iter().collect()
}

fn corpus() -> Vec<String> {
    let root = xtask::project_root().join("tests/fixtures/lint/ok/src");
    let mut out = Vec::new();
    for e in std::fs::read_dir(root).unwrap() {
        let text = std::fs::read_to_string(e.unwrap().path()).unwrap();
        for block in text.split("```").skip(1).step_by(2) {
            out.push(block.split_once('\n').map_or("", |(_, b)| b).to_string());
        }
    }
    out
}

fn check_one(input: &str) {
    let lines = input.lines().count() + 1;
    let loaded = load(input);
    for i in &loaded.issues {
        assert!(
            i.line >= 1 && i.line <= lines + 1,
            "issue line {} outside 1..={}: {i:?}",
            i.line,
            lines + 1
        );
    }
    for doc in &loaded.docs {
        let _ = doc.json();
        let _ = doc.at_pointer("/services/a/0");
    }
    let _ = compose::shell_words(input);
}

#[test]
fn parsers_never_panic() {
    let iters: usize = std::env::var("LINT_FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000);
    let seed: u64 = std::env::var("LINT_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5EED_CAFE);
    let corpus = corpus();
    assert!(!corpus.is_empty());
    let mut r = Rng(seed | 1);
    for i in 0..iters {
        let input = match i % 3 {
            0 => soup(&mut r),
            1 => bytes(&mut r),
            _ => {
                let base = &corpus[r.below(corpus.len())];
                mutate(&mut r, base)
            }
        };
        let res = std::panic::catch_unwind(|| check_one(&input));
        assert!(
            res.is_ok(),
            "panic on iteration {i} (seed {seed}) with input {input:?}"
        );
    }
}

const MD_PIECES: &[&str] = &[
    "# ",
    "## ",
    "Title",
    " {#id}",
    "[a](",
    "b.md",
    "#x",
    "../",
    "%20",
    "%",
    "%e2%82",
    ")",
    "](",
    "<a id=\"",
    "\">",
    "\n",
    "\n\n",
    "```yaml\n",
    "```\n",
    "`",
    "*",
    "é",
    "[",
    "]",
    "(#",
    "?q",
    "/",
    "http://x",
    "README.md",
    "index.html",
];

/// The Markdown side (headings, ids, links) never panics either.
#[test]
fn link_checker_never_panics() {
    let iters: usize = std::env::var("LINT_FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000)
        / 3;
    let mut r = Rng(0xB00C | 1);
    for i in 0..iters {
        let text: String = (0..r.below(40))
            .map(|_| MD_PIECES[r.below(MD_PIECES.len())])
            .collect();
        let book = xtask::book::Book {
            root: std::env::temp_dir(),
            src: "src".into(),
            title: None,
            chapters: vec![
                xtask::book::Chapter {
                    name: "a".into(),
                    path: "src/a.md".into(),
                    text: text.clone(),
                    blocks: Vec::new(),
                },
                xtask::book::Chapter {
                    name: "b".into(),
                    path: "src/sub/b.md".into(),
                    text: text.clone(),
                    blocks: Vec::new(),
                },
            ],
            warnings: Vec::new(),
        };
        let res = std::panic::catch_unwind(|| xtask::lint::links::check(&book));
        assert!(res.is_ok(), "panic on iteration {i} with {text:?}");
        let lines = text.lines().count() + 1;
        for d in res.unwrap() {
            assert!(
                d.line >= 1 && d.line <= lines,
                "{d:?} outside {lines} lines of {text:?}"
            );
        }
    }
}

#[test]
fn pathological_inputs_are_refused_not_crashed() {
    let deep = "[".repeat(100_000);
    assert!(!load(&deep).ok());
    let deep_map = (0..5_000)
        .map(|i| format!("{}k:\n", " ".repeat(i)))
        .collect::<String>();
    let _ = load(&deep_map);
    // Alias bomb: 9 levels of 9 aliases each = 9^9 nodes if expanded naively.
    let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x]\n");
    for i in 1..10 {
        let p = i - 1;
        bomb.push_str(&format!(
            "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
        ));
    }
    let l = load(&bomb);
    assert!(
        l.issues.iter().any(|i| i.code == "yaml::too-complex"),
        "{:?}",
        l.issues
    );
}

const MOUNT_SOURCES: &[&str] = &[
    ".",
    "./",
    "./synapse",
    "synapse",
    "./synapse/",
    "./../keys",
    "../keys",
    "..",
    "./synapse/../..",
    "./a/../../b",
    "./nginx",
    "./nginx/../..",
    "/abs/dir",
    "~/keys",
    "named",
    "./syn apse",
    "./.",
    "./a//b",
    "./%2e%2e",
    "./${X}",
];

const CONTAINER_PARTS: &[&str] = &[
    "/data",
    "/data/",
    "/",
    "/keys",
    "/etc/nginx",
    "/data/..",
    "/data/./x",
    "/d",
];

const KEY_PARTS: &[&str] = &[
    "/data",
    "/",
    "..",
    ".",
    "keys",
    "k.key",
    "",
    "x y",
    "%2e",
    "\\",
    "..%2f",
    "/etc/nginx",
    "sub",
    "...",
    "-",
    "@",
    "\u{e9}",
    "\t",
];

/// Generated Compose mounts and `signing_key_path`s: extract's assembly never panics, and every
/// path of the tree it makes (the key's included) passes the containment rule of `title`; some
/// of them are written, and nothing appears beside the output directory.
#[test]
fn compose_mounts_and_key_paths_stay_contained() {
    let iters: usize = std::env::var("LINT_FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000)
        / 3;
    let mut r = Rng(0x4B_E7 | 1);
    let world = tempfile::tempdir().unwrap();
    let sentinel = world.path().join("sentinel");
    std::fs::create_dir_all(&sentinel).unwrap();
    std::fs::write(sentinel.join("victim.txt"), "keep\n").unwrap();
    let (mut keys, mut refused) = (0, 0);
    for i in 0..iters {
        let mounts: Vec<String> = (0..1 + r.below(3))
            .map(|_| {
                format!(
                    "{}:{}",
                    MOUNT_SOURCES[r.below(MOUNT_SOURCES.len())],
                    CONTAINER_PARTS[r.below(CONTAINER_PARTS.len())]
                )
            })
            .collect();
        let key: String = (0..1 + r.below(6))
            .map(|_| KEY_PARTS[r.below(KEY_PARTS.len())])
            .collect::<Vec<_>>()
            .join(if r.below(3) == 0 { "" } else { "/" });
        let md = format!(
            "```yaml title=\"docker-compose.yml\"\nservices:\n  synapse:\n    image: x\n    volumes:\n{}\n```\n\n```yaml title=\"synapse/homeserver.yaml\"\nsigning_key_path: {:?}\n```\n",
            mounts
                .iter()
                .map(|m| format!("      - {m:?}"))
                .collect::<Vec<_>>()
                .join("\n"),
            key
        );
        let (blocks, _) = xtask::book::parse_blocks("src/c.md", &md);
        let book = xtask::book::Book {
            root: world.path().to_path_buf(),
            src: "src".into(),
            title: None,
            chapters: vec![xtask::book::Chapter {
                name: "c".into(),
                path: "src/c.md".into(),
                text: md.clone(),
                blocks,
            }],
            warnings: Vec::new(),
        };
        let opts = xtask::extract::Options {
            secrets: xtask::secrets::Secrets::Generate,
            ..Default::default()
        };
        let res = std::panic::catch_unwind(|| xtask::extract::assemble(&book, &opts));
        let Ok(res) = res else {
            panic!("panic on iteration {i} with {md}");
        };
        let Ok(tree) = res else {
            refused += 1;
            continue;
        };
        keys += usize::from(tree.files.len() > 2);
        for path in tree.files.keys() {
            assert!(
                xtask::contain::rel(path).is_ok(),
                "iteration {i}: `{path}` escapes, from {mounts:?} and {key:?}"
            );
        }
        if i % 25 == 0 {
            let out = world.path().join("out");
            let _ = std::fs::remove_dir_all(&out);
            xtask::extract::write_tree(&tree, &out, false).unwrap();
            let names: Vec<_> = std::fs::read_dir(world.path())
                .unwrap()
                .flatten()
                .map(|e| e.file_name())
                .collect();
            assert_eq!(names.len(), 2, "iteration {i}: {names:?}");
            assert_eq!(
                std::fs::read_to_string(sentinel.join("victim.txt")).unwrap(),
                "keep\n"
            );
            assert_eq!(std::fs::read_dir(&sentinel).unwrap().count(), 1);
        }
    }
    assert!(
        keys > 0 && refused > 0,
        "{keys} keys written, {refused} refused"
    );
}
