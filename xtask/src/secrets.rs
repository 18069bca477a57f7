//! Secret placeholders and the Synapse signing key.
//!
//! The book writes secrets as obviously fake placeholders: `CHANGEME_` followed by a lowercase
//! name (`CHANGEME_postgres_password`). A file holding one is written with mode 0600. With
//! `--secrets generate`, every distinct placeholder becomes a fresh random value from the
//! operating system's RNG, the same value in every file that names it.
//!
//! The signing key is written where `signing_key_path` in the Synapse config points, mapped from
//! the container path to the tree through the Compose file's bind mounts (the Compose model,
//! [`crate::compose`]). Its format is Synapse's
//! own: `ed25519 a_XXXX <unpadded base64 of a 32-byte seed>`. Without `generate` (the
//! downloadable archive) the file holds [`KEY_PLACEHOLDER`], a note that is not a key: a key
//! everyone can read would be a valid identity for anyone to sign as. Synapse refuses to parse
//! it, the deployment's init container refuses to start while it is there, and the book's
//! `prepare.sh` replaces it with a key from Synapse's `generate_signing_key`.

use crate::compose::Compose;
use crate::diagnostics::Diagnostic;
use crate::tree::{Fragment, Tree, TreeFile};
use base64::Engine as _;
use regex::Regex;
use std::collections::BTreeMap;
use std::sync::LazyLock;

/// The signing key file of a tree extracted without `--secrets generate`: not a key.
pub const KEY_PLACEHOLDER: &str = "CHANGEME: this is not a signing key. Run `sh prepare.sh SERVER_NAME` in the \
     deployment directory (see the book's introduction) to make one.\n";

/// What to do with secret placeholders.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Secrets {
    /// Keep the book's placeholders (deterministic output).
    #[default]
    Placeholders,
    /// Replace each placeholder with a random value.
    Generate,
}

/// The marker every placeholder secret carries; a tree with generated secrets holds none.
pub const PLACEHOLDER_MARK: &str = "CHANGEME";

pub static PLACEHOLDER: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"CHANGEME_[a-z0-9_]+").expect("valid regex"));

/// Marks secret files, replaces placeholders when asked, and writes the signing key.
pub fn apply(tree: &mut Tree, mode: &Secrets) -> Result<(), Vec<Diagnostic>> {
    // Where the key goes is read before the placeholders are replaced: the config's text is then
    // the book's own, whose parse every tree shares.
    let key = signing_key_path(tree);
    let mut values: BTreeMap<String, String> = BTreeMap::new();
    for file in tree.files.values_mut() {
        if !PLACEHOLDER.is_match(&file.content) {
            continue;
        }
        file.secret = true;
        if *mode == Secrets::Generate {
            let replaced = PLACEHOLDER.replace_all(&file.content, |c: &regex::Captures<'_>| {
                values
                    .entry(c[0].to_string())
                    .or_insert_with(|| random_token(32))
                    .clone()
            });
            let replaced = replaced.into_owned();
            file.set_content(replaced);
        }
    }
    if let Some(key) = key {
        write_signing_key(tree, mode, key).map_err(|d| vec![d])?;
    }
    Ok(())
}

/// Any placeholder left in a tree extracted with generated secrets (`extract --secrets
/// generate` must leave none): `CHANGEME` in any other form than `CHANGEME_<lowercase name>`.
pub fn placeholders_left(tree: &Tree) -> Vec<Diagnostic> {
    let mut diags = Vec::new();
    for f in tree.files.values() {
        if !f.content.contains(PLACEHOLDER_MARK) {
            continue;
        }
        for (i, line) in f.content.lines().enumerate() {
            if line.contains(PLACEHOLDER_MARK) {
                diags.push(
                    Diagnostic::error(
                        "security::placeholder-left",
                        format!(
                            "`{PLACEHOLDER_MARK}` survives `extract --secrets generate` here: a placeholder must be \
                             `CHANGEME_<lowercase name>` to be replaced"
                        ),
                        &f.md_loc(i + 1),
                    )
                    .with_note(format!("in {}, line {}: {}", f.path, i + 1, crate::diagnostics::clip(line.trim()))),
                );
            }
        }
    }
    diags
}

/// The Synapse config that names the signing key (a YAML file with a top-level
/// `signing_key_path`): (its tree path, the key's container path, the line).
fn signing_key_path(tree: &Tree) -> Option<(String, String, usize)> {
    tree.files.values().find_map(|f| {
        if !(f.path.ends_with(".yaml") || f.path.ends_with(".yml"))
            || !f.content.contains("signing_key_path")
        {
            return None;
        }
        let node = f.yaml_root()?.get("signing_key_path")?;
        Some((f.path.clone(), node.as_str()?.to_string(), node.line()))
    })
}

fn write_signing_key(
    tree: &mut Tree,
    mode: &Secrets,
    (config, key_path, line): (String, String, usize),
) -> Result<(), Diagnostic> {
    let loc = tree.files[&config].md_loc(line);
    let compose = Compose::from_tree(tree);
    if compose.is_none() && Compose::file_of(tree).is_some_and(|f| tree.files[f].yaml().is_err()) {
        // The Compose file is not YAML: that is reported (by lint) at its line, and where the
        // key belongs cannot be known.
        return Ok(());
    }
    let tree_path = compose
        .and_then(|c| c.container_to_tree(&key_path))
        .ok_or_else(|| {
            Diagnostic::error(
                "extract::signing-key-unmapped",
                format!(
                    "signing_key_path `{key_path}` is not under any bind mount of the Compose file \
                 that stays inside the deployment directory, so extract cannot tell where to \
                 write the key"
                ),
                &loc,
            )
        })?;
    // The key is written like a block's `title`: the same containment rule.
    if let Err(msg) = crate::contain::rel(&tree_path) {
        return Err(Diagnostic::error(
            "extract::bad-target",
            format!("signing_key_path `{key_path}` lands at a path extract refuses: {msg}"),
            &loc,
        ));
    }
    if let Some(existing) = tree.files.get(&tree_path) {
        return Err(Diagnostic::error(
            "extract::signing-key-in-book",
            format!("`{tree_path}` is the signing key; extract writes it, the book must not"),
            &existing.first_loc(),
        ));
    }
    let content = match mode {
        Secrets::Generate => {
            let seed = random_bytes(32);
            let id = random_token(4);
            format!(
                "ed25519 a_{id} {}\n",
                base64::engine::general_purpose::STANDARD_NO_PAD.encode(seed)
            )
        }
        Secrets::Placeholders => KEY_PLACEHOLDER.to_string(),
    };
    let loc_frag = Fragment {
        md_file: loc.file.clone(),
        md_line: loc.line,
        out_line: 1,
        lines: 1,
    };
    let mut key = TreeFile::new(tree_path.clone(), content, vec![loc_frag], "text");
    key.secret = true;
    tree.files.insert(tree_path, key);
    Ok(())
}

fn random_bytes(n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    getrandom::fill(&mut buf).expect("the operating system's RNG is available");
    buf
}

/// `n` random characters from [A-Za-z0-9] (unbiased: rejection sampling).
pub fn random_token(n: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::with_capacity(n);
    while out.len() < n {
        for b in random_bytes(n) {
            if (b as usize) < 248 && out.len() < n {
                out.push(ALPHABET[b as usize % ALPHABET.len()] as char);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnostics::MdLoc;

    fn file(path: &str, content: &str) -> TreeFile {
        TreeFile::new(
            path,
            content,
            vec![Fragment {
                md_file: "src/a.md".into(),
                md_line: 10,
                out_line: 1,
                lines: 50,
            }],
            "yaml",
        )
    }

    fn tree() -> Tree {
        let mut t = Tree::default();
        for f in [
            file(
                "docker-compose.yml",
                "services:\n  synapse:\n    volumes:\n      - ./synapse:/data\n      - sockets:/sockets\n",
            ),
            file(
                "synapse/homeserver.yaml",
                "server_name: x\nsigning_key_path: \"/data/keys/example.com.signing.key\"\ndatabase:\n  args:\n    password: CHANGEME_pg\n",
            ),
            file(".postgres.env", "POSTGRES_PASSWORD=CHANGEME_pg\n"),
        ] {
            t.files.insert(f.path.clone(), f);
        }
        t
    }

    #[test]
    fn generate_shares_values_and_writes_a_key() {
        let mut t = tree();
        apply(&mut t, &Secrets::Generate).unwrap();
        let env = &t.files[".postgres.env"].content;
        let pw = env.trim().strip_prefix("POSTGRES_PASSWORD=").unwrap();
        assert_eq!(pw.len(), 32);
        assert!(
            t.files["synapse/homeserver.yaml"]
                .content
                .contains(&format!("password: {pw}"))
        );
        assert!(
            t.files
                .values()
                .all(|f| !f.content.contains(PLACEHOLDER_MARK))
        );
        let key = &t.files["synapse/keys/example.com.signing.key"];
        assert!(key.secret);
        let parts: Vec<&str> = key.content.trim().split(' ').collect();
        assert_eq!(parts[0], "ed25519");
        assert!(parts[1].starts_with("a_"));
        let seed = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(parts[2])
            .unwrap();
        assert_eq!(seed.len(), 32);
        assert!(t.files[".postgres.env"].secret && !t.files["docker-compose.yml"].secret);
        // the key's Markdown location is the signing_key_path line
        assert_eq!(key.first_loc(), MdLoc::new("src/a.md", 11));
    }

    #[test]
    fn placeholders_stay_and_the_key_is_no_key() {
        let mut t = tree();
        apply(&mut t, &Secrets::Placeholders).unwrap();
        assert!(t.files[".postgres.env"].content.contains("CHANGEME_pg"));
        let key = &t.files["synapse/keys/example.com.signing.key"];
        assert!(key.secret);
        // Not `ed25519 <version> <base64 seed>`: a key everyone can read would be one anyone
        // could sign as. The note names the script that makes a real one.
        assert_eq!(key.content, KEY_PLACEHOLDER);
        assert!(!key.content.starts_with("ed25519 "));
        assert!(key.content.contains(PLACEHOLDER_MARK) && key.content.contains("prepare.sh"));
    }

    #[test]
    fn tokens_are_alphanumeric_and_differ() {
        let a = random_token(32);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, random_token(32));
    }
}
