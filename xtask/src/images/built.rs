//! Stand-ins for images the Compose file builds itself (`build:` next to `image:`).
//!
//! The book may extend an official image with a Dockerfile of its own, e.g. the PostgreSQL
//! image plus pgBackRest:
//!
//! ```text
//! FROM postgres:17-alpine
//! RUN apk add --no-cache pgbackrest
//! ```
//!
//! Such a Dockerfile cannot be built here (its `FROM` cannot be pulled, and `apk` is Alpine's),
//! so its stand-in is built the same way from the `FROM` image's stand-in: that stand-in, plus
//! the same packages from Debian 12 ([`PACKAGES`] maps Alpine's names to Debian's and names the
//! programs each brings). Its contract is the base's plus those programs. Only this shape of
//! Dockerfile is accepted; anything else fails with the line that is not understood.

use super::{Contract, Standin};
use anyhow::{Context, bail};
use std::path::PathBuf;

/// An Alpine package a built image may add, its Debian 12 counterpart, and the programs it
/// must put on PATH (checked by the contract).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Package {
    pub apk: &'static str,
    pub deb: &'static str,
    pub programs: &'static [&'static str],
}

/// The packages a built image may add.
pub const PACKAGES: &[Package] = &[Package {
    apk: "pgbackrest",
    deb: "pgbackrest",
    programs: &["pgbackrest"],
}];

/// What a built image adds to the image it starts from.
#[derive(Debug, Clone)]
pub struct Derived {
    /// The image of the Dockerfile's `FROM`, as written there.
    pub from: String,
    /// The stand-in of `from`, which the derived stand-in is built on.
    pub base: Box<Standin>,
    pub packages: Vec<Package>,
}

/// A Dockerfile this module cannot make a stand-in of: the 1-based line and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerfileError {
    pub line: usize,
    pub message: String,
}

impl std::fmt::Display for DockerfileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for DockerfileError {}

/// The `FROM` image and the Alpine packages of a Dockerfile of the accepted shape: comments,
/// blank lines, one `FROM <image>`, and `RUN apk add [--no-cache] <package>...` lines
/// (continuation lines joined).
pub fn parse_dockerfile(text: &str) -> Result<(String, Vec<Package>), DockerfileError> {
    let err = |line: usize, message: String| DockerfileError { line, message };
    // Join continuation lines, remembering where each instruction starts.
    let mut instructions: Vec<(usize, String)> = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if pending.is_none() && (line.is_empty() || line.starts_with('#')) {
            continue;
        }
        let (start, mut acc) = pending.take().unwrap_or((i + 1, String::new()));
        match line.strip_suffix('\\') {
            Some(head) => {
                acc.push_str(head);
                acc.push(' ');
                pending = Some((start, acc));
            }
            None => {
                acc.push_str(line);
                instructions.push((start, acc));
            }
        }
    }
    if let Some((start, _)) = pending {
        return Err(err(start, "the last instruction ends with `\\`".into()));
    }
    let mut from: Option<String> = None;
    let mut packages: Vec<Package> = Vec::new();
    for (line, ins) in instructions {
        let words: Vec<&str> = ins.split_whitespace().collect();
        let keyword = words
            .first()
            .map(|w| w.to_ascii_uppercase())
            .unwrap_or_default();
        match keyword.as_str() {
            "FROM" => {
                if from.is_some() {
                    return Err(err(
                        line,
                        "a second `FROM`: only one stage is supported".into(),
                    ));
                }
                match words.as_slice() {
                    [_, image] if !image.starts_with("--") => from = Some(image.to_string()),
                    _ => {
                        return Err(err(
                            line,
                            format!(
                                "`{ins}`: only `FROM <image>` is supported (no options, no stage name)"
                            ),
                        ));
                    }
                }
            }
            "RUN" if from.is_some() => {
                let args = match words.as_slice() {
                    [_, "apk", "add", rest @ ..] => rest,
                    _ => {
                        return Err(err(
                            line,
                            format!(
                                "`{ins}`: the stand-in of a built image knows `RUN apk add --no-cache <package>...` only"
                            ),
                        ));
                    }
                };
                let mut names = Vec::new();
                for a in args {
                    match *a {
                        "--no-cache" => {}
                        o if o.starts_with('-') => {
                            return Err(err(line, format!("`apk add {o}` is not supported")));
                        }
                        name => names.push(name),
                    }
                }
                if names.is_empty() {
                    return Err(err(line, "`apk add` names no package".into()));
                }
                for name in names {
                    let Some(p) = PACKAGES.iter().find(|p| p.apk == name) else {
                        return Err(err(
                            line,
                            format!(
                                "Alpine package `{name}` has no Debian counterpart known to the stand-ins (known: {})",
                                PACKAGES
                                    .iter()
                                    .map(|p| p.apk)
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ),
                        ));
                    };
                    if !packages.contains(p) {
                        packages.push(*p);
                    }
                }
            }
            "RUN" => return Err(err(line, "`RUN` before `FROM`".into())),
            other => {
                return Err(err(
                    line,
                    format!(
                        "`{other}`: the stand-in of a built image supports `FROM` and `RUN apk add` only"
                    ),
                ));
            }
        }
    }
    let Some(from) = from else {
        return Err(err(1, "no `FROM` line".into()));
    };
    Ok((from, packages))
}

/// The stand-in of `image`, which the Compose file builds from `dockerfile`.
pub fn standin_for_built(image: &str, dockerfile: &str) -> anyhow::Result<Standin> {
    let (from, packages) = parse_dockerfile(dockerfile)?;
    let base = super::standin_for(&from).with_context(|| {
        format!("`{image}` is built FROM `{from}`, which needs a stand-in itself")
    })?;
    if base.derived.is_some() {
        bail!("`{image}` is built FROM `{from}`, itself a built image: one level only");
    }
    let mut present: Vec<&'static str> = base.contract.present.to_vec();
    for p in &packages {
        present.extend(p.programs.iter().copied());
    }
    // One contract per built image and process: the base's, with the added programs.
    let contract: &'static Contract = Box::leak(Box::new(Contract {
        present: Box::leak(present.into_boxed_slice()),
        differences: base.contract.differences,
        ..*base.contract
    }));
    Ok(Standin {
        official: image.to_string(),
        image: super::standin_tag(image),
        contract,
        derived: Some(Box::new(Derived {
            from,
            base: Box::new(base),
            packages,
        })),
    })
}

/// The generated Dockerfile of a derived stand-in.
pub fn dockerfile(s: &Standin, d: &Derived) -> String {
    let apk: Vec<&str> = d.packages.iter().map(|p| p.apk).collect();
    let deb: Vec<&str> = d.packages.iter().map(|p| p.deb).collect();
    let what = format!("{} + apk add {}", d.from, apk.join(" "));
    format!(
        "# Generated by `cargo xtask images`: the stand-in for {official}, which the book builds as\n\
         # {what}. Built on the stand-in of {from}, with the same packages from Debian 12.\n\
         FROM {base}\n\
         RUN set -eu; \\\n    apt-get update -q; \\\n    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends {debs}; \\\n    rm -rf /var/lib/apt/lists/*\n\
         LABEL org.opencontainers.image.description=\"stand-in for {official} ({what}) built from the stand-in of {from} and Debian 12's {debs}; not the official image\" \\\n      \
         org.opencontainers.image.title=\"synapse-guide stand-in for {official}\" \\\n      \
         guide.standin.for=\"{official}\"\n",
        official = s.official,
        from = d.from,
        base = d.base.image,
        debs = deb.join(" "),
    )
}

/// Writes the build context of a derived stand-in under `target/standin-context/`.
pub fn context(s: &Standin, d: &Derived) -> anyhow::Result<PathBuf> {
    let name: String = s
        .image
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let dir = crate::tools::target_dir()
        .join("standin-context")
        .join(name);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::write(dir.join("Dockerfile"), dockerfile(s, d))?;
    Ok(dir)
}

/// The programs a derived stand-in adds to its base's contract (for the reference page).
pub fn added_programs(d: &Derived) -> Vec<&'static str> {
    d.packages
        .iter()
        .flat_map(|p| p.programs.iter().copied())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_books_dockerfile_shape_parses() {
        let (from, pkgs) = parse_dockerfile(
            "# comment\nFROM postgres:17-alpine\n\nRUN apk add --no-cache \\\n    pgbackrest\n",
        )
        .unwrap();
        assert_eq!(from, "postgres:17-alpine");
        assert_eq!(pkgs, vec![PACKAGES[0]]);
    }

    #[test]
    fn other_dockerfiles_fail_at_their_line() {
        let e = parse_dockerfile("FROM postgres:17-alpine\nCOPY x /x\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.message.contains("`COPY`"), "{e}");
        let e =
            parse_dockerfile("FROM postgres:17-alpine\nRUN apk add --no-cache curl\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.message.contains("`curl`"), "{e}");
        let e = parse_dockerfile("FROM a AS b\n").unwrap_err();
        assert_eq!(e.line, 1);
        let e = parse_dockerfile("# nothing\n").unwrap_err();
        assert!(e.message.contains("no `FROM`"), "{e}");
        let e = parse_dockerfile("FROM a\nRUN apk add \\\n").unwrap_err();
        assert_eq!(e.line, 2);
        let e = parse_dockerfile("FROM a\nRUN apt-get install pgbackrest\n").unwrap_err();
        assert!(e.message.contains("apk add"), "{e}");
    }

    #[test]
    fn the_reference_page_names_every_package() {
        let page = std::fs::read_to_string(crate::project_root().join("src/reference/standins.md"))
            .unwrap();
        let start = page
            .find("\n## Images the book builds")
            .expect("a section for built images");
        let section = &page[start
            ..start
                + page[start + 1..]
                    .find("\n## ")
                    .unwrap_or(page.len() - start - 1)];
        for p in PACKAGES {
            for word in [p.apk, p.deb].iter().chain(p.programs) {
                assert!(
                    section.contains(&format!("`{word}`")),
                    "`{word}` not in the section"
                );
            }
        }
    }

    #[test]
    fn a_built_image_stands_on_its_bases_stand_in() {
        let s = standin_for_built(
            "synapse-postgres:17-alpine",
            "FROM postgres:17-alpine\nRUN apk add --no-cache pgbackrest\n",
        )
        .unwrap();
        assert_eq!(s.image, "synapse-guide-standin/synapse-postgres:17-alpine");
        assert_eq!(s.contract.name, "postgres");
        assert!(s.contract.present.contains(&"pgbackrest"));
        assert!(s.contract.present.contains(&"psql"));
        let d = s.derived.as_ref().unwrap();
        assert_eq!(d.base.image, "synapse-guide-standin/postgres:17-alpine");
        let df = dockerfile(&s, d);
        assert!(
            df.contains("FROM synapse-guide-standin/postgres:17-alpine\n"),
            "{df}"
        );
        assert!(
            df.contains("install -y -q --no-install-recommends pgbackrest;"),
            "{df}"
        );
        assert!(
            df.contains("description=\"stand-in for synapse-postgres:17-alpine ("),
            "{df}"
        );
        // The base must have a stand-in that keeps the tag's contract.
        let e = standin_for_built("x:1", "FROM postgres:17\nRUN apk add pgbackrest\n").unwrap_err();
        assert!(format!("{e:#}").contains("`postgres:17`"), "{e:#}");
    }
}
