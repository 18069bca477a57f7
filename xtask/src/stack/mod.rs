//! `cargo xtask stack`: the book's deployment, run by the real `docker compose` on the Docker
//! engine, and driven by a Matrix client.
//!
//! [`prepare`] extracts the book with fresh secrets into `target/stack/tree/`, picks the images
//! (the official ones when the engine has or can pull them, else the local stand-ins of
//! [`crate::images`], put in place by an override file outside the tree), and [`bring_up`] runs
//! what a reader runs: `docker compose up -d --wait`. Then [`client`] drives a Matrix client
//! through nginx's published port, [`routing`] compares the upstream nginx logged with the
//! simulator's, [`checks`] runs `nginx -t`, `python -m synapse.config`, the book's `sql` blocks
//! and the log scan inside the containers, [`kills`] crashes each kind of service in turn and
//! watches the restart policy bring it back, [`replica`] checks the replica and runs
//! [`backup`] (pgBackRest) and [`restore`] (point in time, and the book's procedure on the
//! deployment itself), [`console`] runs every console block of the book and compares its shown
//! output, [`variants`] brings up the book's variants after the main run, [`upgrade`] starts
//! one more deployment on the previous Synapse release and runs the book's upgrade procedure
//! on it, and [`report`] writes the JSON report. [`bench`] runs the layouts under a seeded
//! workload and measures them. [`docker`] is the only place that runs `docker`.

pub mod backup;
pub mod bench;
pub mod checks;
pub mod client;
pub mod console;
pub mod daytwo;
pub mod docker;
pub mod http;
pub mod kills;
pub mod outer;
pub mod pg;
pub mod replica;
pub mod report;
pub mod restore;
pub mod routing;
pub mod run;
pub mod scale;
pub mod tls;
pub mod upgrade;
pub mod variants;

use crate::book::{self, Book};
use crate::diagnostics::{Diagnostic, MdLoc};
use crate::extract;
use crate::tree::Tree;
use anyhow::{Context, bail};
use docker::{Compose, Model};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The Compose file of the tree.
pub const COMPOSE_FILE: &str = "docker-compose.yml";
/// `docker compose up --wait` gives up after this long.
pub const BRING_UP_TIMEOUT: Duration = Duration::from_secs(300);

/// Which images the stack runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageChoice {
    /// The official images where the engine has them or can pull them, else the stand-ins.
    #[default]
    Auto,
    /// The images the Compose file names (pulled when missing).
    Official,
    /// The local stand-ins built from Debian packages (`cargo xtask images`).
    Standin,
}

/// The run directory's layout: everything under `target/stack/`, never `deploy/`.
#[derive(Debug, Clone)]
pub struct Paths {
    pub base: PathBuf,
}

impl Paths {
    pub fn new(base: &Path) -> Self {
        Paths {
            base: base.to_path_buf(),
        }
    }
    pub fn default_base() -> PathBuf {
        crate::tools::target_dir().join("stack")
    }
    /// The extracted deployment: the Compose project directory.
    pub fn tree(&self) -> PathBuf {
        self.base.join("tree")
    }
    /// The override file that puts the stand-ins in place (outside the tree).
    pub fn standin_override(&self) -> PathBuf {
        self.base.join("compose.standin.yaml")
    }
    /// What `stack up` left for `smoke` and `down`: the project and its files.
    pub fn state(&self) -> PathBuf {
        self.base.join("state.json")
    }
    pub fn compose(&self, files: Vec<PathBuf>) -> Compose {
        let dir = self.tree();
        Compose {
            project: docker::project_name(&dir),
            dir,
            files,
        }
    }
}

/// One image the Compose file names, and what ran in its place.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ImageUse {
    /// As the Compose file names it.
    pub official: String,
    /// What ran: the official name, or the stand-in's tag.
    pub used: String,
    /// The stand-in's label, when a stand-in ran.
    pub standin: Option<String>,
    pub services: Vec<String>,
    /// For an image the Compose file builds: the image its Dockerfile starts `FROM`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub built_from: Option<String>,
}

/// An error the book caused, located in the Markdown.
pub fn book_error(code: &str, msg: impl Into<String>, at: &MdLoc) -> anyhow::Error {
    let d = Diagnostic::error(code, msg, at);
    anyhow::anyhow!(
        "{}:{}: error[{}]: {}",
        d.loc().file,
        d.loc().line,
        code,
        d.message
    )
}

/// Markdown location of a service's definition in the Compose file (the line of its key, from
/// the Compose model; the file's first line when the service is not in it).
pub fn service_loc(tree: &Tree, service: &str) -> MdLoc {
    let Some(model) = crate::compose::Compose::from_tree(tree) else {
        return tree
            .get(COMPOSE_FILE)
            .map_or_else(|| MdLoc::new("book.toml", 1), |f| f.first_loc());
    };
    match model.service(service) {
        Some(s) => tree.md_loc(&model.path, s.line),
        None => tree.md_loc(&model.path, 1),
    }
}

pub(crate) fn diag_error(what: &str, diags: &[Diagnostic]) -> anyhow::Error {
    let lines: Vec<String> = diags
        .iter()
        .map(|d| {
            format!(
                "{}:{}: {}: {}",
                d.loc().file,
                d.loc().line,
                d.code,
                d.message
            )
        })
        .collect();
    anyhow::anyhow!("{what}:\n{}", lines.join("\n"))
}

/// The book, extracted with fresh secrets, its images chosen, ready for `up`.
pub struct Stack {
    pub book: Book,
    pub tree: Tree,
    pub compose: Compose,
    /// What Compose resolved, every profile included (images as they run).
    pub model: Model,
    pub images: Vec<ImageUse>,
    pub paths: Paths,
    /// Held until the stack is down: other checkouts' stacks wait for the port.
    _port_locks: Vec<std::fs::File>,
}

impl Stack {
    /// Services running Synapse (`-m synapse.app.*`), by name.
    pub fn synapse_services(&self) -> Vec<String> {
        self.model
            .services
            .iter()
            .filter(|(_, s)| s.synapse_module().is_some())
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Services whose image (as the Compose file names it, or the image a built one starts
    /// `FROM`) has `name` as its last path part, e.g. `nginx` for `nginx:1.28-alpine`.
    pub fn services_of_image(&self, name: &str) -> Vec<String> {
        self.images
            .iter()
            .filter(|i| {
                image_name(&i.official) == name
                    || i.built_from
                        .as_deref()
                        .is_some_and(|f| image_name(f) == name)
            })
            .flat_map(|i| i.services.iter().cloned())
            .collect()
    }

    /// Long-running services a plain `docker compose up` starts (no profile, a restart policy).
    pub fn servers(&self) -> Vec<String> {
        self.model
            .services
            .iter()
            .filter(|(_, s)| {
                s.profiles.is_empty() && s.restart.as_deref().is_some_and(|r| r != "no")
            })
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// The long-running nginx service (the one whose log and ports the tests read).
    pub fn nginx_service(&self) -> Option<String> {
        let servers = self.servers();
        self.services_of_image("nginx")
            .into_iter()
            .find(|n| servers.contains(n))
    }

    /// Where the client reaches nginx: the first port an nginx service publishes.
    pub fn client_addr(&self) -> anyhow::Result<String> {
        for svc in self.services_of_image("nginx") {
            if let Some((ip, port)) = self.model.services[&svc].published().into_iter().next() {
                let ip = if ip == "0.0.0.0" || ip.is_empty() {
                    "127.0.0.1".to_string()
                } else {
                    ip
                };
                return Ok(format!("{ip}:{port}"));
            }
        }
        bail!("no nginx service publishes a port: the client has nowhere to connect")
    }

    /// The database Synapse uses: the postgres service a Synapse service depends on.
    pub fn primary_db(&self) -> Option<String> {
        let pg = self.services_of_image("postgres");
        self.synapse_services()
            .iter()
            .flat_map(|s| self.model.services[s].depends_on.keys().cloned())
            .find(|d| pg.contains(d))
    }
}

/// The description label of a local image (what a stand-in says of itself).
fn image_label(image: &str) -> String {
    let mut c = std::process::Command::new("docker");
    c.args([
        "image",
        "inspect",
        "--format",
        "{{index .Config.Labels \"org.opencontainers.image.description\"}}",
        image,
    ]);
    docker::run_with(c, None, Duration::from_secs(30))
        .map(|r| r.stdout.trim().to_string())
        .unwrap_or_default()
}

/// `postgres` for `postgres:17-alpine`, `synapse` for `ghcr.io/element-hq/synapse:v1`.
pub fn image_name(image: &str) -> &str {
    let no_digest = image.split('@').next().unwrap_or(image);
    let last = no_digest.rsplit('/').next().unwrap_or(no_digest);
    last.split(':').next().unwrap_or(last)
}

/// Stops a stack a previous run of this checkout left, and removes its directory.
fn clean_previous(paths: &Paths) -> anyhow::Result<()> {
    let compose = paths.compose(vec![paths.tree().join(COMPOSE_FILE)]);
    if !compose.leftovers().is_empty() {
        eprintln!(
            "stack: removing what a previous run left (project {})",
            compose.project
        );
        if paths.tree().join(COMPOSE_FILE).exists() {
            let mut c = compose.clone();
            if paths.standin_override().exists() {
                c.files.push(paths.standin_override());
            }
            let _ = c.down();
        }
        remove_project_objects(&compose.project);
    }
    if paths.base.exists() {
        remove_dir(&paths.base)?;
    }
    Ok(())
}

/// Removes containers, volumes and networks labelled with the project, whatever files are left.
fn remove_project_objects(project: &str) {
    let label = format!("label=com.docker.compose.project={project}");
    for (ls, rm) in [
        (vec!["ps", "-aq", "--filter", &label], vec!["rm", "-f"]),
        (
            vec!["volume", "ls", "-q", "--filter", &label],
            vec!["volume", "rm", "-f"],
        ),
        (
            vec!["network", "ls", "-q", "--filter", &label],
            vec!["network", "rm"],
        ),
    ] {
        let mut c = std::process::Command::new("docker");
        c.args(&ls);
        let Ok(r) = docker::run_with(c, None, Duration::from_secs(60)) else {
            continue;
        };
        let ids: Vec<&str> = r.stdout.split_whitespace().collect();
        if !ids.is_empty() {
            let mut c = std::process::Command::new("docker");
            c.args(&rm).args(&ids);
            let _ = docker::run_with(c, None, Duration::from_secs(120));
        }
    }
}

/// Removes a directory that containers wrote into (files of other users: fine as root).
pub fn remove_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::remove_dir_all(dir).with_context(|| {
        format!(
            "cannot remove {} (files written by the containers belong to their users: run as root)",
            dir.display()
        )
    })
}

/// Loads the book, extracts it with generated secrets into `tree/`, reads what Compose
/// resolves, and chooses the images.
pub fn prepare(book_root: &Path, paths: &Paths, choice: ImageChoice) -> anyhow::Result<Stack> {
    prepare_variants(book_root, paths, choice, &[])
}

/// The override file Compose reads after `docker-compose.yml` when it is in the project
/// directory (a variant may write one).
pub const OVERRIDE_FILE: &str = "docker-compose.override.yml";

/// The tree of the book with `variants` applied: each variant's files replace (or add to) the
/// main ones. Variants of different files combine; a file two of them give or add to is an
/// error that names both.
pub fn variant_tree(book: &Book, variants: &[&str]) -> anyhow::Result<Tree> {
    let opts = |v: Option<&str>| extract::Options {
        secrets: crate::secrets::Secrets::Generate,
        variant: v.map(String::from),
        ..Default::default()
    };
    // The files each variant gives or adds to.
    let touched = |v: &str| -> std::collections::BTreeSet<String> {
        book.blocks()
            .filter(|b| b.variant() == Some(v))
            .filter_map(|b| b.target().map(String::from))
            .collect()
    };
    let mut owner: BTreeMap<String, &str> = BTreeMap::new();
    for v in variants {
        for t in touched(v) {
            if let Some(first) = owner.insert(t.clone(), v) {
                bail!(
                    "variants `{first}` and `{v}` both give {t}: they cannot be brought up \
                     together (run them as separate sets)"
                );
            }
        }
    }
    let mut tree = extract::assemble(book, &opts(variants.first().copied()))
        .map_err(|d| diag_error("cannot extract the book", &d))?;
    for v in variants.iter().skip(1) {
        let other = extract::assemble(book, &opts(Some(v)))
            .map_err(|d| diag_error("cannot extract the book", &d))?;
        for t in touched(v) {
            if let Some(f) = other.files.get(&t) {
                if f.secret {
                    bail!("variant `{v}` writes a secret into {t}: it cannot be combined");
                }
                tree.files.insert(t.clone(), f.clone());
            }
        }
    }
    Ok(tree)
}

/// [`prepare`] for the tree of `variants` (none: the main tree).
pub fn prepare_variants(
    book_root: &Path,
    paths: &Paths,
    choice: ImageChoice,
    variants: &[&str],
) -> anyhow::Result<Stack> {
    prepare_edited(book_root, paths, choice, variants, &|_| Ok(()))
}

/// [`prepare_variants`], with `edit` applied to the tree before it is written and its images
/// chosen (the upgrade run starts from the Compose file of the previous release).
pub fn prepare_edited(
    book_root: &Path,
    paths: &Paths,
    choice: ImageChoice,
    variants: &[&str],
    edit: &dyn Fn(&mut Tree) -> anyhow::Result<()>,
) -> anyhow::Result<Stack> {
    if !docker::daemon_answers() {
        bail!(
            "no Docker daemon answers (`docker version`): the stack test runs on the Docker engine"
        );
    }
    if docker::compose_version().is_none() {
        bail!("`docker compose` is not installed: run `cargo xtask setup compose`");
    }
    let book = book::load(book_root).map_err(|d| diag_error("cannot load the book", &d))?;
    let mut tree = variant_tree(&book, variants)?;
    edit(&mut tree)?;
    let Some(cf) = tree.get(COMPOSE_FILE) else {
        bail!("the book has no `{COMPOSE_FILE}` block: nothing to run");
    };
    let first = cf.first_loc();
    clean_previous(paths)?;
    std::fs::create_dir_all(&paths.base)?;
    extract::write_tree(&tree, &paths.tree(), false)
        .map_err(|d| diag_error("cannot write the tree", &d))?;
    let mut files = vec![paths.tree().join(COMPOSE_FILE)];
    if tree.get(OVERRIDE_FILE).is_some() {
        // As Compose does by itself when COMPOSE_FILE is not set.
        files.push(paths.tree().join(OVERRIDE_FILE));
    }
    let mut compose = paths.compose(files);
    let model = compose
        .model()
        .map_err(|e| book_error("stack::compose", format!("{e:#}"), &first))?;

    // The images, each with the services that use it.
    let mut by_image: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, s) in &model.services {
        let Some(img) = &s.image else {
            bail!(
                "{}",
                book_error(
                    "stack::no-image",
                    format!("service `{name}` names no image"),
                    &service_loc(&tree, name)
                )
            );
        };
        by_image.entry(img.clone()).or_default().push(name.clone());
    }
    // Images the Compose file builds from a Dockerfile of the book: the image it starts FROM.
    let builds = crate::images::compose_builds(&cf.content)
        .map_err(|e| book_error("stack::compose", format!("{e:#}"), &first))?;
    let built_from = |image: &str| -> anyhow::Result<Option<String>> {
        let Some(b) = builds.iter().find(|b| b.image == image) else {
            return Ok(None);
        };
        let path = b.dockerfile_path();
        let Some(f) = tree.get(&path) else {
            bail!(
                "{}",
                book_error(
                    "stack::no-dockerfile",
                    format!("`{image}` is built from {path}, which the book does not write"),
                    &service_loc(&tree, &b.service)
                )
            );
        };
        match crate::images::built::parse_dockerfile(&f.content) {
            Ok((from, _)) => Ok(Some(from)),
            Err(e) => bail!(
                "{}",
                book_error("stack::dockerfile", e.message, &f.md_loc(e.line))
            ),
        }
    };
    let official_ok = || -> anyhow::Result<bool> {
        for i in by_image.keys() {
            let ok = match built_from(i)? {
                // Built here: its base must be there or pullable, then `docker compose build`.
                Some(from) => docker::image_present(&from) || docker::pull(&from),
                None => docker::image_present(i) || docker::pull(i),
            };
            if !ok {
                return Ok(false);
            }
        }
        Ok(true)
    };
    let use_standins = match choice {
        ImageChoice::Standin => true,
        ImageChoice::Official => {
            if !official_ok()? {
                bail!("--images official: an image is missing and cannot be pulled");
            }
            false
        }
        ImageChoice::Auto => !official_ok()?,
    };
    let mut images = Vec::new();
    if use_standins {
        let mut over = Vec::new();
        let mut built_services = Vec::new();
        for (image, services) in &by_image {
            let standin = match built_from(image)? {
                Some(_) => {
                    let b = builds
                        .iter()
                        .find(|b| &b.image == image)
                        .expect("built_from found it");
                    let text = tree
                        .get(&b.dockerfile_path())
                        .map(|f| f.content.clone())
                        .unwrap_or_default();
                    built_services.extend(services.iter().cloned());
                    crate::images::built::standin_for_built(image, &text)?
                }
                None => crate::images::standins_for(std::slice::from_ref(image))?
                    .into_iter()
                    .next()
                    .context("no stand-in")?,
            };
            let built = crate::images::build(&standin)?;
            for svc in services {
                over.push((svc.clone(), standin.image.clone()));
            }
            eprintln!(
                "stack: stand-in {} {} ({:.1} s)",
                standin.image,
                if built.built { "built" } else { "reused" },
                built.seconds
            );
            images.push(ImageUse {
                official: standin.official.clone(),
                used: standin.image.clone(),
                standin: Some(image_label(&standin.image)),
                services: services.clone(),
                built_from: standin.derived.as_ref().map(|d| d.from.clone()),
            });
        }
        std::fs::write(
            paths.standin_override(),
            crate::images::override_yaml_built(&over, &built_services),
        )?;
        compose.files.push(paths.standin_override());
    } else {
        for (img, services) in &by_image {
            let from = built_from(img)?;
            if from.is_some() {
                // As a reader's `docker compose up` would: build the book's Dockerfile.
                let svc = services.first().expect("an image has a service");
                compose
                    .ok(&["build", svc], Duration::from_secs(1800))
                    .with_context(|| format!("docker compose build {svc} ({img})"))?;
            }
            images.push(ImageUse {
                official: img.clone(),
                used: img.clone(),
                standin: None,
                services: services.clone(),
                built_from: from,
            });
        }
    }
    let model = compose.model()?;
    let mut stack = Stack {
        book,
        tree,
        compose,
        model,
        images,
        paths: paths.clone(),
        _port_locks: Vec::new(),
    };
    // Stacks of other checkouts on this machine publish the same port: take turns.
    let mut locks = Vec::new();
    for svc in stack.servers() {
        for (ip, port) in stack.model.services[&svc].published() {
            locks.push(port_lock(port)?);
            let ip = if ip == "0.0.0.0" {
                "127.0.0.1".to_string()
            } else {
                ip
            };
            if std::net::TcpListener::bind((ip.as_str(), port)).is_err() {
                bail!(
                    "{ip}:{port} (published by service `{svc}`) is already in use: is another deployment running?"
                );
            }
        }
    }
    stack._port_locks = locks;
    std::fs::write(
        paths.state(),
        serde_json::to_string_pretty(&serde_json::json!({
            "project": stack.compose.project,
            "files": stack.compose.files,
            "images": stack.images,
        }))?,
    )?;
    Ok(stack)
}

/// The project `stack up` started, for `smoke` and `down`.
pub fn running(paths: &Paths) -> anyhow::Result<Compose> {
    let text = std::fs::read_to_string(paths.state())
        .context("no running stack: run `cargo xtask stack up` first")?;
    let v: serde_json::Value = serde_json::from_str(&text)?;
    let files = v["files"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|f| f.as_str().map(PathBuf::from))
                .collect()
        })
        .unwrap_or_default();
    Ok(paths.compose(files))
}

/// Waits (up to 15 minutes) for the machine-wide lock of a published port.
fn port_lock(port: u16) -> anyhow::Result<std::fs::File> {
    use rustix::fs::{FlockOperation, flock};
    let path = std::env::temp_dir().join(format!("xtask-stack-port-{port}.lock"));
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)?;
    let t = Instant::now();
    let mut said = false;
    loop {
        match flock(&f, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => return Ok(f),
            Err(e) if e == rustix::io::Errno::WOULDBLOCK => {
                if !said {
                    eprintln!(
                        "stack: another stack on this machine holds port {port} ({}): waiting",
                        path.display()
                    );
                    said = true;
                }
                if t.elapsed() > Duration::from_secs(900) {
                    bail!(
                        "port {port} stayed locked by another stack for 15 minutes ({})",
                        path.display()
                    );
                }
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(e) => bail!("cannot lock {}: {e}", path.display()),
        }
    }
}

/// What bring-up measured.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct BringUp {
    pub seconds: f64,
    /// Seconds from the start of bring-up until each service was healthy (or, for a one-shot
    /// service, had exited 0; for a service without healthcheck, was running).
    pub ready_at: BTreeMap<String, f64>,
}

/// `docker compose up -d --wait`, as a reader runs it, timing each service on the way.
pub fn bring_up(s: &Stack) -> anyhow::Result<BringUp> {
    let t0 = Instant::now();
    let done = std::sync::atomic::AtomicBool::new(false);
    let (result, ready_at) = std::thread::scope(|sc| {
        let watcher = sc.spawn(|| {
            let mut ready: BTreeMap<String, f64> = BTreeMap::new();
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(cs) = s.compose.ps() {
                    for c in cs {
                        let ok = c.health == "healthy"
                            || (c.state == "exited" && c.exit_code == 0)
                            || (c.state == "running" && c.health.is_empty());
                        if ok {
                            ready
                                .entry(c.service)
                                .or_insert_with(|| t0.elapsed().as_secs_f64());
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(500));
            }
            ready
        });
        let wait = BRING_UP_TIMEOUT.as_secs().to_string();
        let r = s.compose.run(
            &["up", "--detach", "--wait", "--wait-timeout", &wait],
            BRING_UP_TIMEOUT + Duration::from_secs(60),
        );
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        (r, watcher.join().unwrap_or_default())
    });
    let r = result?;
    if !r.ok {
        // Name the first service that is not healthy, at its Markdown line.
        let bad = s
            .compose
            .ps()
            .unwrap_or_default()
            .into_iter()
            .find(|c| !(c.health == "healthy" || (c.state == "exited" && c.exit_code == 0)));
        let (svc, state) = bad
            .map(|c| (c.service, format!("{} {}", c.state, c.health)))
            .unwrap_or_else(|| ("?".into(), "?".into()));
        let logs = s
            .compose
            .logs(&svc)
            .map(|l| docker::tail(&l, 20))
            .unwrap_or_default();
        bail!(
            "{}",
            book_error(
                "stack::not-healthy",
                format!(
                    "`docker compose up --wait` failed; service `{svc}` is {state}:\n{}\n--- its last log lines:\n{logs}",
                    docker::tail(&r.text(), 15)
                ),
                &service_loc(&s.tree, &svc),
            )
        );
    }
    Ok(BringUp {
        seconds: t0.elapsed().as_secs_f64(),
        ready_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_names() {
        assert_eq!(image_name("postgres:17-alpine"), "postgres");
        assert_eq!(image_name("ghcr.io/element-hq/synapse:v1.163.2"), "synapse");
        assert_eq!(image_name("nginx"), "nginx");
        assert_eq!(
            image_name("synapse-guide-standin/nginx:1.28-alpine"),
            "nginx"
        );
        assert_eq!(image_name("redis@sha256:abc"), "redis");
    }

    #[test]
    fn errors_about_a_service_point_at_its_markdown_line() {
        let book = book::load(&crate::project_root().join("tests/fixtures/stack")).unwrap();
        let tree = extract::assemble(&book, &extract::Options::default()).unwrap();
        let loc = service_loc(&tree, "rooms1");
        assert_eq!(loc.file, "src/deploy.md");
        let md = std::fs::read_to_string(
            crate::project_root().join("tests/fixtures/stack/src/deploy.md"),
        )
        .unwrap();
        assert_eq!(md.lines().nth(loc.line - 1), Some("  rooms1:"));
        let e = book_error("stack::not-healthy", "boom", &loc);
        assert!(e.to_string().starts_with(&format!(
            "src/deploy.md:{}: error[stack::not-healthy]: boom",
            loc.line
        )));
    }
}
