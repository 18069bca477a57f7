//! Local stand-ins for the container images the book's Compose file names.
//!
//! Our machines have a Docker engine but no registry, so the official images cannot be pulled.
//! Each stand-in is built here with `docker build` from a folder of `images/` (Dockerfile and the
//! scripts it copies), FROM a pristine Debian 12 base made by mmdebstrap ([`pristine_debian`]),
//! and keeps the part of the official image's contract the book relies on: entrypoint
//! behaviour, user and numeric UID/GID, STOPSIGNAL, paths and environment, the programs the
//! book's healthchecks and commands call (and not the ones the official image lacks). The
//! contract is data in [`contract`]; [`verify`] runs it against a built image.
//!
//! Stand-ins live under the project's own namespace, [`NAMESPACE`]: `postgres:17-alpine` is
//! stood in for by `synapse-guide-standin/postgres:17-alpine`, so an official image a user pulled
//! is never overwritten. [`override_yaml`] writes the Compose override that swaps them in.
//!
//! This module knows image names and Docker, nothing of Markdown, lint or routing.

mod base;
pub mod built;
pub mod contract;
pub mod docker;

pub use base::pristine_debian;
pub use contract::{Contract, ContractResult, verify};

use anyhow::{Context, bail};
use std::path::PathBuf;
use std::time::Instant;

/// The project-owned image namespace; official names are never tagged.
pub const NAMESPACE: &str = "synapse-guide-standin";

/// One stand-in: the official image it replaces and the local image that replaces it.
#[derive(Debug, Clone)]
pub struct Standin {
    /// The image as the Compose file names it, e.g. `postgres:17-alpine`.
    pub official: String,
    /// The local tag, e.g. `synapse-guide-standin/postgres:17-alpine`.
    pub image: String,
    /// What the stand-in keeps of the official image, and which `images/` folder builds it
    /// (for a built image: its base's folder and contract, plus the programs it adds).
    pub contract: &'static Contract,
    /// For an image the Compose file builds itself: what its Dockerfile adds to its base.
    pub derived: Option<Box<built::Derived>>,
}

impl Standin {
    /// The build context: `images/<name>/` at the repository root.
    pub fn dir(&self) -> PathBuf {
        crate::project_root()
            .join("images")
            .join(self.contract.name)
    }
}

/// An image reference split the way Docker reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// Registry host, None for Docker Hub.
    pub registry: Option<String>,
    /// Repository path without the registry (`library/` dropped for official Hub images).
    pub path: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl ImageRef {
    pub fn parse(image: &str) -> anyhow::Result<ImageRef> {
        let image = image.trim();
        if image.is_empty() || image.chars().any(char::is_whitespace) {
            bail!("`{image}` is not an image reference");
        }
        let (rest, digest) = match image.split_once('@') {
            Some((r, d)) => (r, Some(d.to_string())),
            None => (image, None),
        };
        let (name, tag) = match rest.rfind(':') {
            Some(i) if !rest[i..].contains('/') => (&rest[..i], Some(rest[i + 1..].to_string())),
            _ => (rest, None),
        };
        let mut parts: Vec<&str> = name.split('/').collect();
        let registry = if parts.len() > 1
            && (parts[0].contains('.') || parts[0].contains(':') || parts[0] == "localhost")
        {
            Some(parts.remove(0).to_string())
        } else {
            None
        };
        let registry = registry.filter(|r| r != "docker.io" && r != "index.docker.io");
        if registry.is_none() && parts.len() == 2 && parts[0] == "library" {
            parts.remove(0);
        }
        if parts.iter().any(|p| p.is_empty()) || tag.as_deref() == Some("") {
            bail!("`{image}` is not an image reference");
        }
        Ok(ImageRef {
            registry,
            path: parts.join("/"),
            tag,
            digest,
        })
    }

    /// The repository as the contracts name it: `postgres`, `ghcr.io/element-hq/synapse`.
    pub fn repository(&self) -> String {
        match &self.registry {
            Some(r) => format!("{r}/{}", self.path),
            None => self.path.clone(),
        }
    }
}

/// The local tag standing in for `official`: the namespace, the official path and tag
/// (`ghcr.io/element-hq/synapse:v1.163.2` -> `synapse-guide-standin/element-hq/synapse:v1.163.2`).
/// An image already in the namespace is returned unchanged.
pub fn standin_tag(official: &str) -> String {
    if official.starts_with(&format!("{NAMESPACE}/")) {
        return official.to_string();
    }
    match ImageRef::parse(official) {
        Ok(r) => format!(
            "{NAMESPACE}/{}:{}",
            r.path,
            r.tag.as_deref().unwrap_or("latest")
        ),
        Err(_) => format!("{NAMESPACE}/{official}"),
    }
}

/// The stand-ins for the images a Compose file names (duplicates once, in first-seen order).
/// Fails, naming the image, for one that has no stand-in or whose tag the stand-in cannot keep
/// the contract of.
pub fn standins_for(compose_images: &[String]) -> anyhow::Result<Vec<Standin>> {
    let mut out: Vec<Standin> = Vec::new();
    let mut problems = Vec::new();
    for image in compose_images {
        if out.iter().any(|s| &s.official == image) {
            continue;
        }
        match standin_for(image) {
            Ok(s) => out.push(s),
            Err(e) => problems.push(format!("{e:#}")),
        }
    }
    if !problems.is_empty() {
        bail!("{}", problems.join("\n"));
    }
    Ok(out)
}

pub(crate) fn standin_for(image: &str) -> anyhow::Result<Standin> {
    let r = ImageRef::parse(image).with_context(|| format!("image `{image}`"))?;
    let repo = r.repository();
    let Some(contract) = contract::CONTRACTS
        .iter()
        .find(|c| c.repositories.contains(&repo.as_str()))
    else {
        bail!(
            "image `{image}` has no local stand-in: there are stand-ins for {} only (images/ \
             holds one folder per stand-in; no registry is reachable here to pull it)",
            contract::CONTRACTS
                .iter()
                .map(|c| c.repositories[0])
                .collect::<Vec<_>>()
                .join(", ")
        );
    };
    if r.digest.is_some() {
        bail!(
            "image `{image}` is pinned by digest: a locally built stand-in cannot have that \
             digest; name it by tag"
        );
    }
    let tag = r.tag.as_deref().unwrap_or("latest");
    contract::tag_supported(contract, tag).map_err(|why| {
        anyhow::anyhow!("image `{image}` has no local stand-in for tag `{tag}`: {why}")
    })?;
    Ok(Standin {
        official: image.to_string(),
        image: standin_tag(image),
        contract,
        derived: None,
    })
}

/// The stand-ins for every image of the Compose file the book at `root` extracts.
pub fn standins_of_book(root: &std::path::Path) -> anyhow::Result<Vec<Standin>> {
    const COMPOSE_FILE: &str = "docker-compose.yml";
    let book = crate::book::load(root).map_err(|d| {
        anyhow::anyhow!(
            "cannot load the book: {}",
            crate::diagnostics::render_human(&d, root)
        )
    })?;
    let tree = crate::extract::assemble(&book, &Default::default()).map_err(|d| {
        anyhow::anyhow!(
            "cannot extract the book: {}",
            crate::diagnostics::render_human(&d, root)
        )
    })?;
    let file = tree
        .get(COMPOSE_FILE)
        .with_context(|| format!("the book extracts no {COMPOSE_FILE}"))?;
    let read = |p: &str| tree.get(p).map(|f| f.content.clone());
    standins_for_compose(&file.content, &read).with_context(|| {
        format!(
            "the images of {COMPOSE_FILE} (written by {})",
            file.first_loc()
        )
    })
}

/// The stand-ins for every image of a Compose file: [`standins_for`] for the images it pulls,
/// [`built::standin_for_built`] for those it builds, whose Dockerfile `read` returns (given its
/// path relative to the Compose file's directory, e.g. `postgres/image/Dockerfile`).
pub fn standins_for_compose(
    compose_yaml: &str,
    read: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<Vec<Standin>> {
    let builds = compose_builds(compose_yaml)?;
    let mut pulled: Vec<String> = Vec::new();
    let mut out: Vec<Standin> = Vec::new();
    let mut problems = Vec::new();
    for (_, image) in compose_services(compose_yaml)? {
        if out.iter().any(|s| s.official == image) || pulled.contains(&image) {
            continue;
        }
        match builds.iter().find(|b| b.image == image) {
            Some(b) => {
                let path = b.dockerfile_path();
                match read(&path) {
                    Some(text) => match built::standin_for_built(&image, &text) {
                        Ok(s) => out.push(s),
                        Err(e) => problems.push(format!("{path} (built as `{image}`): {e:#}")),
                    },
                    None => problems.push(format!(
                        "`{image}` is built from {path}, which the book does not write"
                    )),
                }
            }
            None => pulled.push(image),
        }
    }
    match standins_for(&pulled) {
        Ok(v) => out.extend(v),
        Err(e) => problems.push(format!("{e:#}")),
    }
    if !problems.is_empty() {
        bail!("{}", problems.join("\n"));
    }
    Ok(out)
}

/// A service the Compose file builds: `build:` next to `image:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComposeBuild {
    pub service: String,
    pub image: String,
    /// The build context as written (relative to the Compose file), e.g. `./postgres/image`.
    pub context: String,
    pub dockerfile: String,
}

impl ComposeBuild {
    /// The Dockerfile's path relative to the Compose file's directory.
    pub fn dockerfile_path(&self) -> String {
        let ctx = self.context.trim_start_matches("./").trim_end_matches('/');
        if ctx.is_empty() || ctx == "." {
            self.dockerfile.clone()
        } else {
            format!("{ctx}/{}", self.dockerfile)
        }
    }
}

/// The services of a Compose file that have both `image:` and `build:` (short form: the
/// context; long form: `context` and `dockerfile`), in file order.
pub fn compose_builds(compose_yaml: &str) -> anyhow::Result<Vec<ComposeBuild>> {
    let loaded = crate::yaml::load(compose_yaml)
        .map_err(|e| anyhow::anyhow!("line {}: {}", e.line, e.message))?;
    let root = loaded.docs.first().context("the file is empty")?;
    let services = root
        .get("services")
        .and_then(|s| s.as_map())
        .context("it has no `services:` mapping")?;
    let mut out = Vec::new();
    for (name, svc) in services {
        let (Some(image), Some(b)) = (svc.get("image").and_then(|i| i.as_str()), svc.get("build"))
        else {
            continue;
        };
        let (context, dockerfile) = match b.as_str() {
            Some(ctx) => (ctx.to_string(), "Dockerfile".to_string()),
            None => (
                b.get("context")
                    .and_then(|c| c.as_str())
                    .unwrap_or(".")
                    .to_string(),
                b.get("dockerfile")
                    .and_then(|c| c.as_str())
                    .unwrap_or("Dockerfile")
                    .to_string(),
            ),
        };
        out.push(ComposeBuild {
            service: name.as_str().unwrap_or_default().to_string(),
            image: image.to_string(),
            context,
            dockerfile,
        });
    }
    Ok(out)
}

/// The image a stand-in replaces upstream: for an image the Compose file builds, its
/// Dockerfile's `FROM`; else the image itself.
pub fn upstream(s: &Standin) -> &str {
    s.derived.as_ref().map_or(&s.official, |d| &d.from)
}

/// `versions.toml [images]`: the images the book runs, by name.
pub fn pinned() -> anyhow::Result<std::collections::BTreeMap<String, String>> {
    images_table("images")?.context("versions.toml has no [images] table")
}

/// `versions.toml [images-upgrade-from]`: the previous releases the stack test's upgrade run
/// starts on (empty when the table is absent).
pub fn upgrade_from() -> anyhow::Result<std::collections::BTreeMap<String, String>> {
    Ok(images_table("images-upgrade-from")?.unwrap_or_default())
}

/// The stand-ins of [`upgrade_from`]'s images, which `cargo xtask images` (and so `setup`)
/// builds next to the book's.
pub fn upgrade_from_standins() -> anyhow::Result<Vec<Standin>> {
    let images: Vec<String> = upgrade_from()?.into_values().collect();
    standins_for(&images).context("versions.toml [images-upgrade-from]")
}

fn images_table(name: &str) -> anyhow::Result<Option<std::collections::BTreeMap<String, String>>> {
    let v = crate::tools::versions()?;
    let Some(table) = v.get(name) else {
        return Ok(None);
    };
    let table = table
        .as_table()
        .with_context(|| format!("versions.toml [{name}] is not a table"))?;
    table
        .iter()
        .map(|(k, v)| {
            v.as_str()
                .map(|s| (k.clone(), s.to_string()))
                .with_context(|| format!("versions.toml [{name}] {k} is not a string"))
        })
        .collect::<anyhow::Result<_>>()
        .map(Some)
}

/// Checks that the images `standins` replace upstream ([`upstream`]) are exactly the `pinned`
/// ones: each one the Compose file runs is pinned, and each pin is run. The error names every
/// difference.
pub fn check_pinned(
    standins: &[Standin],
    pinned: &std::collections::BTreeMap<String, String>,
) -> anyhow::Result<()> {
    let run: Vec<&str> = standins.iter().map(upstream).collect();
    let mut problems = Vec::new();
    for image in &run {
        if !pinned.values().any(|p| p == image) {
            problems.push(format!(
                "the Compose file runs `{image}`, which versions.toml [images] does not pin"
            ));
        }
    }
    for (name, image) in pinned {
        if !run.contains(&image.as_str()) {
            problems.push(format!(
                "versions.toml [images] {name} = `{image}`, which the Compose file does not run"
            ));
        }
    }
    if !problems.is_empty() {
        bail!(
            "{} (the book and versions.toml name the same images: change both)",
            problems.join("; ")
        );
    }
    Ok(())
}

/// A Compose override file that puts the stand-ins in place of the official images:
/// `services: NAME: image: STANDIN` for each (service, image) pair. The image may be the
/// official name (mapped with [`standin_tag`]) or already a stand-in tag. `pull_policy: never`
/// keeps Compose from trying a registry for an image that was not built, and services in
/// `built` lose their `build:` (`!reset`), so Compose never builds the book's Dockerfile here.
pub fn override_yaml(services_to_images: &[(String, String)]) -> String {
    override_yaml_built(services_to_images, &[])
}

/// [`override_yaml`], with the services whose `build:` the override removes.
pub fn override_yaml_built(services_to_images: &[(String, String)], built: &[String]) -> String {
    let mut out = String::from(
        "# Written by `cargo xtask images`: local stand-ins for the official images.\nservices:\n",
    );
    if services_to_images.is_empty() {
        return out.replace("services:\n", "services: {}\n");
    }
    for (service, image) in services_to_images {
        out.push_str(&format!(
            "  {}:\n    image: {}\n    pull_policy: never\n",
            yaml_key(service),
            serde_json::Value::String(standin_tag(image))
        ));
        if built.contains(service) {
            out.push_str("    build: !reset null\n");
        }
    }
    out
}

/// A mapping key: plain when it is a safe Compose service name, JSON-quoted otherwise.
fn yaml_key(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
    if plain {
        s.to_string()
    } else {
        serde_json::Value::String(s.to_string()).to_string()
    }
}

/// The `(service, image)` pairs of a Compose file's text, read by the Compose model
/// ([`crate::compose`]: anchors, merge keys and `${VAR}` defaults resolved), in file order;
/// services without `image:` (built ones) are left out.
pub fn compose_services(compose_yaml: &str) -> anyhow::Result<Vec<(String, String)>> {
    let loaded = crate::yaml::load(compose_yaml)
        .map_err(|e| anyhow::anyhow!("line {}: {}", e.line, e.message))?;
    let root = loaded.root().context("the file is empty")?;
    root.get("services")
        .and_then(|s| s.as_map())
        .context("it has no `services:` mapping")?;
    let compose = crate::compose::Compose::from_root("compose.yaml", root, Default::default());
    Ok(compose
        .services
        .iter()
        .filter_map(|s| Some((s.name.clone(), s.image.as_ref()?.text.clone())))
        .collect())
}

/// What [`build`] did.
#[derive(Debug, Clone)]
pub struct Built {
    pub standin: Standin,
    /// The local image ID (sha256:...).
    pub id: String,
    /// False when Docker's layer cache gave back the image that was already tagged.
    pub built: bool,
    pub seconds: f64,
}

/// The `--build-arg`s of a stand-in: the base, the official name (for the labels) and, for
/// Synapse, the release its tag names ([`synapse_version`]) with the extras and psycopg2 of
/// versions.toml [synapse].
pub fn build_args(s: &Standin, base: &str) -> anyhow::Result<Vec<(String, String)>> {
    let mut args = vec![
        ("BASE".to_string(), base.to_string()),
        ("STANDIN_FOR".to_string(), s.official.clone()),
    ];
    if s.contract.name == "synapse" {
        let v = crate::tools::versions()?;
        let syn = v.get("synapse").context("versions.toml has no [synapse]")?;
        let version = synapse_version(s)?;
        let extras: Vec<&str> = syn
            .get("extras")
            .and_then(|x| x.as_array())
            .map(|a| a.iter().filter_map(|e| e.as_str()).collect())
            .unwrap_or_default();
        let psycopg2 = syn
            .get("psycopg2-binary")
            .and_then(|x| x.as_str())
            .context("versions.toml [synapse] psycopg2-binary")?;
        args.push(("SYNAPSE_VERSION".into(), version));
        args.push(("SYNAPSE_EXTRAS".into(), extras.join(",")));
        args.push(("PSYCOPG2_VERSION".into(), psycopg2.into()));
    }
    Ok(args)
}

/// Builds (or, through Docker's layer cache, reuses) one stand-in on the pristine base.
pub fn build(s: &Standin) -> anyhow::Result<Built> {
    let start = Instant::now();
    if let Some(d) = &s.derived {
        build(&d.base)?;
    }
    let base = pristine_debian()?;
    let _lock = BuildLock::acquire()?;
    let before = docker::image_id(&s.image)?;
    let dir = match &s.derived {
        Some(d) => built::context(s, d)?,
        None => context(s)?,
    };
    let mut cmd = docker::cmd();
    cmd.args(["build", "--quiet", "--tag", &s.image]);
    if s.derived.is_none() {
        for (k, v) in build_args(s, &base)? {
            cmd.args(["--build-arg", &format!("{k}={v}")]);
        }
    }
    cmd.arg(&dir);
    let out = cmd.output().context("cannot run docker build")?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().rev().take(40).collect();
        bail!(
            "docker build of the stand-in for {} (from {}) failed:\n{}",
            s.official,
            dir.display(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    let id = docker::image_id(&s.image)?
        .with_context(|| format!("docker build succeeded but {} is not tagged", s.image))?;
    Ok(Built {
        standin: s.clone(),
        built: before.as_deref() != Some(id.as_str()),
        id,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// The Synapse release a synapse stand-in installs: the one its tag names (`v1.163.2` ->
/// `1.163.2`; [`contract::tag_supported`] admits the pinned release and the one the upgrade test
/// starts on).
pub fn synapse_version(s: &Standin) -> anyhow::Result<String> {
    let r = ImageRef::parse(&s.official)?;
    let tag = r.tag.as_deref().unwrap_or("latest");
    contract::tag_supported(s.contract, tag).map_err(anyhow::Error::msg)?;
    tag.strip_prefix('v')
        .map(String::from)
        .with_context(|| format!("`{}`: the tag is not v<version>", s.official))
}

/// The Python of the synapse stand-in (Debian 12's), which the wheels must fit.
pub const SYNAPSE_PYTHON: &str = "3.11";

/// The build context of a stand-in: its `images/` folder, except for Synapse, whose context is
/// assembled under `target/standin-context/` from that folder and a wheelhouse (`wheels/`).
/// PyPI is reached from the host (whose pip trusts the machine's network setup), so the image
/// is built without network access to PyPI.
fn context(s: &Standin) -> anyhow::Result<PathBuf> {
    let dir = s.dir();
    if !dir.join("Dockerfile").is_file() {
        bail!("{} has no Dockerfile", dir.display());
    }
    if s.contract.name != "synapse" {
        return Ok(dir);
    }
    let wheels = wheelhouse(&crate::tools::synapse_requirements_for(&synapse_version(
        s,
    )?)?)?;
    let ctx = crate::tools::target_dir()
        .join("standin-context")
        .join(s.contract.name);
    if ctx.exists() {
        std::fs::remove_dir_all(&ctx).with_context(|| format!("cannot empty {}", ctx.display()))?;
    }
    copy_tree(&dir, &ctx)?;
    let dest = ctx.join("wheels");
    std::fs::create_dir_all(&dest)?;
    for e in std::fs::read_dir(&wheels)? {
        let e = e?;
        let name = e.file_name();
        if !name.to_string_lossy().ends_with(".whl") {
            continue;
        }
        let to = dest.join(&name);
        if std::fs::hard_link(e.path(), &to).is_err() {
            std::fs::copy(e.path(), &to)
                .with_context(|| format!("cannot copy {}", e.path().display()))?;
        }
    }
    Ok(ctx)
}

fn copy_tree(from: &std::path::Path, to: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let target = to.join(e.file_name());
        if e.file_name() == "__pycache__" {
            continue;
        }
        if e.file_type()?.is_dir() {
            copy_tree(&e.path(), &target)?;
        } else {
            // std::fs::copy keeps the mode (start.py stays executable).
            std::fs::copy(e.path(), &target)
                .with_context(|| format!("cannot copy {}", e.path().display()))?;
        }
    }
    Ok(())
}

/// Binary wheels of `requirements` and their dependencies for CPython [`SYNAPSE_PYTHON`] on this
/// architecture, downloaded once into `target/standin-wheels/<hash>/` (keyed by the
/// requirements) with the host's pip.
pub fn wheelhouse(requirements: &[String]) -> anyhow::Result<PathBuf> {
    use sha1::{Digest, Sha1};
    let key: String = Sha1::digest(requirements.join("\n").as_bytes())
        .iter()
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect();
    let dir = crate::tools::target_dir().join("standin-wheels").join(key);
    let done = dir.join(".complete");
    if done.is_file() {
        return Ok(dir);
    }
    // The venv `setup synapse` makes has pip; a plain python3 may not.
    let venv_python = crate::tools::synapse_python();
    let python = if venv_python.exists() {
        venv_python
    } else {
        crate::tools::which("python3").context("python3 is needed to download Synapse's wheels")?
    };
    let version = std::process::Command::new(&python)
        .args(["-c", "import sys; print('%d.%d' % sys.version_info[:2])"])
        .output()
        .with_context(|| format!("cannot run {}", python.display()))?;
    let version = String::from_utf8_lossy(&version.stdout).trim().to_string();
    if version != SYNAPSE_PYTHON {
        bail!(
            "{} is Python {version}: the wheels for the synapse stand-in must be downloaded by a \
             Python {SYNAPSE_PYTHON} (Debian 12's), the one inside the image",
            python.display()
        );
    }
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    eprintln!(
        "images: downloading wheels for {} into {}",
        requirements.join(" "),
        dir.display()
    );
    let out = std::process::Command::new(&python)
        .args([
            "-m",
            "pip",
            "download",
            "--quiet",
            "--disable-pip-version-check",
            "--no-input",
            "--only-binary=:all:",
            "--dest",
        ])
        .arg(&dir)
        .args(requirements)
        .env("PIP_NO_INPUT", "1")
        .stdin(std::process::Stdio::null())
        .output()
        .context("cannot run pip download")?;
    if !out.status.success() {
        bail!(
            "pip download of {} failed: {}",
            requirements.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    std::fs::write(&done, requirements.join("\n"))?;
    Ok(dir)
}

/// Serialises base creation and builds between processes (tests, a command and the stack
/// test, from any checkout, may all ask for the same image at once).
pub(crate) struct BuildLock {
    /// The locked file; None when this thread already held the lock.
    file: Option<std::fs::File>,
}

thread_local! {
    static LOCK_HELD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

impl BuildLock {
    pub(crate) fn acquire() -> anyhow::Result<BuildLock> {
        // flock belongs to the open file: a nested acquire in the same thread would wait for
        // itself, so it is a no-op.
        if LOCK_HELD.with(std::cell::Cell::get) {
            return Ok(BuildLock { file: None });
        }
        // Images belong to the machine's Docker daemon, not to a checkout: one lock per machine
        // (worktrees and the main checkout build the same tags).
        let path = std::env::temp_dir().join("synapse-guide-standin-images.lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
            .with_context(|| format!("cannot lock {}", path.display()))?;
        LOCK_HELD.with(|h| h.set(true));
        Ok(BuildLock { file: Some(file) })
    }
}

impl Drop for BuildLock {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            LOCK_HELD.with(|h| h.set(false));
        }
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn pinned_images_are_the_upstream_ones() {
        let pg = Standin {
            official: "postgres:17-alpine".into(),
            image: standin_tag("postgres:17-alpine"),
            contract: contract::CONTRACTS[0],
            derived: None,
        };
        let built = Standin {
            official: "local-pg:1".into(),
            image: standin_tag("local-pg:1"),
            contract: contract::CONTRACTS[0],
            derived: Some(Box::new(built::Derived {
                from: "postgres:17-alpine".into(),
                base: Box::new(pg.clone()),
                packages: Vec::new(),
            })),
        };
        assert_eq!(upstream(&built), "postgres:17-alpine");
        let pins = |v: &[(&str, &str)]| {
            v.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect::<std::collections::BTreeMap<_, _>>()
        };
        check_pinned(
            std::slice::from_ref(&built),
            &pins(&[("postgres", "postgres:17-alpine")]),
        )
        .unwrap();
        let e = format!(
            "{:#}",
            check_pinned(
                &[built],
                &pins(&[
                    ("postgres", "postgres:18-alpine"),
                    ("redis", "redis:7.4-alpine")
                ])
            )
            .unwrap_err()
        );
        assert!(
            e.contains("runs `postgres:17-alpine`, which versions.toml [images] does not pin"),
            "{e}"
        );
        assert!(
            e.contains("[images] redis = `redis:7.4-alpine`, which the Compose file does not run"),
            "{e}"
        );
        assert!(pinned().unwrap().contains_key("synapse"));
    }
    use super::*;

    #[test]
    fn images_come_from_the_services_with_aliases_resolved() {
        let y = "x-s: &s\n  image: &img ghcr.io/element-hq/synapse:v1.163.2\nservices:\n  a:\n    <<: *s\n  b:\n    image: *img\n  db:\n    image: postgres:${PG:-17-alpine}\n  built:\n    build: .\n";
        let got = compose_services(y).unwrap();
        assert_eq!(
            got,
            [
                (
                    "a".to_string(),
                    "ghcr.io/element-hq/synapse:v1.163.2".to_string()
                ),
                (
                    "b".to_string(),
                    "ghcr.io/element-hq/synapse:v1.163.2".to_string()
                ),
                ("db".to_string(), "postgres:17-alpine".to_string()),
            ]
        );
        assert!(compose_services("version: 1\n").is_err());
    }

    #[test]
    fn references_split_like_docker() {
        let r = ImageRef::parse("postgres:17-alpine").unwrap();
        assert_eq!((r.registry, r.path.as_str()), (None, "postgres"));
        assert_eq!(r.tag.as_deref(), Some("17-alpine"));
        let r = ImageRef::parse("docker.io/library/redis:7.4-alpine").unwrap();
        assert_eq!(r.repository(), "redis");
        let r = ImageRef::parse("ghcr.io/element-hq/synapse:v1.163.2").unwrap();
        assert_eq!(r.repository(), "ghcr.io/element-hq/synapse");
        assert_eq!(r.path, "element-hq/synapse");
        let r = ImageRef::parse("localhost:5000/nginx").unwrap();
        assert_eq!(
            (r.registry.as_deref(), r.tag),
            (Some("localhost:5000"), None)
        );
        let r = ImageRef::parse("nginx@sha256:abc").unwrap();
        assert_eq!(r.digest.as_deref(), Some("sha256:abc"));
        assert!(ImageRef::parse("").is_err());
        assert!(ImageRef::parse("nginx:").is_err());
        assert!(ImageRef::parse("a b").is_err());
    }

    #[test]
    fn standin_tags_keep_path_and_tag_under_the_namespace() {
        assert_eq!(
            standin_tag("postgres:17-alpine"),
            "synapse-guide-standin/postgres:17-alpine"
        );
        assert_eq!(
            standin_tag("ghcr.io/element-hq/synapse:v1.163.2"),
            "synapse-guide-standin/element-hq/synapse:v1.163.2"
        );
        assert_eq!(
            standin_tag("synapse-guide-standin/redis:7.4-alpine"),
            "synapse-guide-standin/redis:7.4-alpine"
        );
    }

    #[test]
    fn stand_ins_are_found_for_the_compose_images_and_deduplicated() {
        let synapse = format!(
            "ghcr.io/element-hq/synapse:v{}",
            crate::tools::version("synapse", "version").unwrap()
        );
        let imgs: Vec<String> = [
            synapse.as_str(),
            "postgres:17-alpine",
            "redis:7.4-alpine",
            "postgres:17-alpine",
            "nginx:1.28-alpine",
        ]
        .map(String::from)
        .to_vec();
        let s = standins_for(&imgs).unwrap();
        let names: Vec<&str> = s.iter().map(|s| s.contract.name).collect();
        assert_eq!(names, ["synapse", "postgres", "redis", "nginx"]);
        for st in &s {
            assert!(
                st.dir().join("Dockerfile").is_file(),
                "{}",
                st.dir().display()
            );
            assert!(st.image.starts_with("synapse-guide-standin/"));
        }
    }

    #[test]
    fn images_without_a_stand_in_fail_naming_the_image() {
        let e = standins_for(&["mysql:8".to_string()]).unwrap_err();
        let msg = format!("{e:#}");
        assert!(msg.contains("`mysql:8` has no local stand-in"), "{msg}");
        // The Debian-based postgres image has another contract (UID 999): not stood in for.
        let msg = format!(
            "{:#}",
            standins_for(&["postgres:17".to_string()]).unwrap_err()
        );
        assert!(
            msg.contains("`postgres:17`") && msg.contains("alpine"),
            "{msg}"
        );
        let msg = format!(
            "{:#}",
            standins_for(&["ghcr.io/element-hq/synapse:v1.0.0".to_string()]).unwrap_err()
        );
        assert!(msg.contains("versions.toml"), "{msg}");
        // The release the upgrade test starts on has one, installing that release.
        let from = upgrade_from_standins().unwrap();
        assert_eq!(from.len(), 1);
        let want = crate::tools::synapse_upgrade_from().unwrap().unwrap();
        assert_eq!(synapse_version(&from[0]).unwrap(), want);
        assert_ne!(
            want,
            crate::tools::version("synapse", "version").unwrap(),
            "the upgrade test starts on another release than the pinned one"
        );
        assert_eq!(
            from[0].image,
            format!("synapse-guide-standin/element-hq/synapse:v{want}")
        );
        let msg = format!(
            "{:#}",
            standins_for(&["nginx@sha256:00".to_string()]).unwrap_err()
        );
        assert!(msg.contains("digest"), "{msg}");
        // Every problem is reported, not only the first.
        let msg = format!(
            "{:#}",
            standins_for(&["mysql:8".to_string(), "mongo:7".to_string()]).unwrap_err()
        );
        assert!(msg.contains("mysql:8") && msg.contains("mongo:7"), "{msg}");
    }

    #[test]
    fn built_images_get_stand_ins_from_their_dockerfile() {
        let y = "services:\n  db:\n    image: &i synapse-postgres:17-alpine\n    build: &b ./postgres/image\n  job:\n    image: *i\n    build: *b\n  other:\n    image: x:1\n    build:\n      context: .\n      dockerfile: other.Dockerfile\n  redis:\n    image: redis:7.4-alpine\n";
        let b = compose_builds(y).unwrap();
        assert_eq!(b.len(), 3);
        assert_eq!(b[0].dockerfile_path(), "postgres/image/Dockerfile");
        assert_eq!(b[2].dockerfile_path(), "other.Dockerfile");
        let read = |p: &str| match p {
            "postgres/image/Dockerfile" => {
                Some("FROM postgres:17-alpine\nRUN apk add --no-cache pgbackrest\n".to_string())
            }
            "other.Dockerfile" => Some("FROM x:0\nCOPY a b\n".to_string()),
            _ => None,
        };
        // x:1 cannot be stood in for: its Dockerfile copies a file; the error names it.
        let e = format!("{:#}", standins_for_compose(y, &read).unwrap_err());
        assert!(
            e.contains("other.Dockerfile") && e.contains("line 2"),
            "{e}"
        );
        let y2 = y.replace("  other:\n    image: x:1\n    build:\n      context: .\n      dockerfile: other.Dockerfile\n", "");
        let s = standins_for_compose(&y2, &read).unwrap();
        let names: Vec<&str> = s.iter().map(|s| s.official.as_str()).collect();
        assert_eq!(names, ["synapse-postgres:17-alpine", "redis:7.4-alpine"]);
        assert!(s[0].derived.is_some() && s[1].derived.is_none());
        let o = override_yaml_built(
            &[
                ("db".into(), s[0].image.clone()),
                ("redis".into(), s[1].image.clone()),
            ],
            &["db".to_string()],
        );
        assert!(o.contains("  db:\n    image: \"synapse-guide-standin/synapse-postgres:17-alpine\"\n    pull_policy: never\n    build: !reset null\n"), "{o}");
        assert!(!o.contains("redis:\n    image: \"synapse-guide-standin/redis:7.4-alpine\"\n    pull_policy: never\n    build"), "{o}");
    }

    #[test]
    fn the_override_swaps_each_service_image() {
        let y = override_yaml(&[
            ("db".to_string(), "postgres:17-alpine".to_string()),
            (
                "synapse".to_string(),
                "ghcr.io/element-hq/synapse:v1.163.2".to_string(),
            ),
            ("odd name".to_string(), "redis:7.4-alpine".to_string()),
        ]);
        let doc = crate::yaml::load(&y).unwrap();
        let root = &doc.docs[0];
        let img = |svc: &str| {
            root.path(&["services", svc, "image"])
                .and_then(|n| n.as_str())
                .map(String::from)
        };
        assert_eq!(
            img("db").as_deref(),
            Some("synapse-guide-standin/postgres:17-alpine")
        );
        assert_eq!(
            img("synapse").as_deref(),
            Some("synapse-guide-standin/element-hq/synapse:v1.163.2")
        );
        assert_eq!(
            img("odd name").as_deref(),
            Some("synapse-guide-standin/redis:7.4-alpine")
        );
        assert_eq!(
            root.path(&["services", "db", "pull_policy"])
                .and_then(|n| n.as_str()),
            Some("never")
        );
        let empty = crate::yaml::load(&override_yaml(&[])).unwrap();
        assert!(empty.docs[0].path(&["services"]).is_some());
    }
}
