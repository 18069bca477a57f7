//! `cargo xtask stack`: the book's deployment, run natively and driven by a Matrix client.
//!
//! There is no Docker engine on our machines, so the extracted `docker-compose.yml` is run by a
//! small native runner: each service's own command in a private mount namespace with its
//! Compose volumes ([`ns`]), the images' entrypoints emulated ([`emulate`], the only place
//! that knows images), `depends_on` conditions, the services' own healthchecks and `restart:`
//! policies ([`procs`]). Then [`client`] drives a Matrix client through nginx, [`routing`]
//! compares the upstream real nginx picked with the simulator's, [`checks`] runs `nginx -t`,
//! `python -m synapse.config`, the book's `sql` blocks and the log scan, and [`report`] writes
//! the JSON report.
//!
//! Everything lives under `target/stack/run/` (never `deploy/`): `tree/` is the extracted
//! deployment, `volumes/` the named volumes, `logs/` one log per service.

pub mod checks;
pub mod client;
pub mod compose;
pub mod emulate;
pub mod http;
pub mod ns;
pub mod procs;
pub mod report;
pub mod routing;
pub mod run;

use crate::book::{self, Book};
use crate::diagnostics::{Diagnostic, MdLoc};
use crate::extract::{self, Tree};
use anyhow::{Context, bail};
use compose::{Condition, Project};
use procs::Runner;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The address clients use when the nginx service publishes no port.
pub const NGINX_ADDR: &str = "127.0.0.1:8008";

/// Where the client reaches nginx: the first port the nginx service publishes (the book's
/// `127.0.0.1:8008:8008`).
pub fn client_addr(project: &Project) -> String {
    project
        .services
        .iter()
        .filter(|s| emulate::for_image(&s.image).is_some_and(|e| e.name == "nginx"))
        .flat_map(|s| s.ports.iter())
        .next()
        .map(|(a, h, _)| format!("{}:{h}", if a == "0.0.0.0" { "127.0.0.1" } else { a }))
        .unwrap_or_else(|| NGINX_ADDR.to_string())
}
const COMPOSE_FILE: &str = "docker-compose.yml";
/// Bring-up gives up after this long.
const BRING_UP_TIMEOUT: Duration = Duration::from_secs(180);

/// The run directory's layout.
#[derive(Debug, Clone)]
pub struct Paths {
    pub run: PathBuf,
}

impl Paths {
    pub fn new(base: &Path) -> Self {
        Paths {
            run: base.join("run"),
        }
    }
    pub fn default_base() -> PathBuf {
        crate::tools::target_dir().join("stack")
    }
    pub fn tree(&self) -> PathBuf {
        self.run.join("tree")
    }
    pub fn logs(&self) -> PathBuf {
        self.run.join("logs")
    }
    pub fn state(&self) -> PathBuf {
        self.run.join("state.json")
    }
    pub fn layout(&self) -> ns::Layout {
        let mut extra_top = BTreeSet::new();
        for p in [
            crate::project_root(),
            crate::tools::synapse_venv(),
            self.run.clone(),
        ] {
            let real = p.canonicalize().unwrap_or(p);
            if let Some(std::path::Component::Normal(top)) = real.components().nth(1) {
                extra_top.insert(top.to_string_lossy().into_owned());
            }
        }
        ns::Layout {
            root_mnt: self.run.join("nsroot"),
            layers_mnt: self.run.join("nslayers"),
            volumes: self.run.join("volumes"),
            extra_top: extra_top.into_iter().collect(),
        }
    }
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

/// Markdown location of a service's definition in the Compose file.
pub fn service_loc(tree: &Tree, service: &str) -> MdLoc {
    let Some(f) = tree.get(COMPOSE_FILE) else {
        return MdLoc::new("book.toml", 1);
    };
    let needle = format!("\n  {service}:");
    match f.content.find(&needle) {
        Some(pos) => f.md_loc_at(pos + 1),
        None => f.first_loc(),
    }
}

/// Services a plain `docker compose up` starts, in dependency order (file order among equals).
pub fn start_order(project: &Project) -> Vec<String> {
    let active: Vec<&compose::Service> = project
        .services
        .iter()
        .filter(|s| !s.has_profiles)
        .collect();
    let mut done: Vec<String> = Vec::new();
    while done.len() < active.len() {
        let before = done.len();
        for s in &active {
            if !done.contains(&s.name)
                && s.depends_on.iter().all(|(d, _)| {
                    done.contains(d) || project.service(d).is_none_or(|x| x.has_profiles)
                })
            {
                done.push(s.name.clone());
            }
        }
        if done.len() == before {
            // a cycle: append the rest in file order (bring-up reports it)
            for s in &active {
                if !done.contains(&s.name) {
                    done.push(s.name.clone());
                }
            }
        }
    }
    done
}

/// The book, extracted with fresh secrets into the run directory, and ready to start.
pub struct Prepared {
    pub book: Book,
    pub tree: Tree,
    pub runner: Arc<Runner>,
    pub paths: Paths,
    /// Held until the stack is down: other checkouts' stacks wait for the port.
    _port_locks: Vec<std::fs::File>,
}

/// Removes a previous run directory (refusing while a stack from it is running).
fn clean_run_dir(paths: &Paths) -> anyhow::Result<()> {
    if paths.state().exists() {
        let events = procs::stop_from_state(&paths.state())?;
        for e in events {
            eprintln!("stack: previous run: {e}");
        }
    }
    let layout = paths.layout();
    procs::unmount_all(&procs::mounts_under(&layout.volumes));
    let left = procs::processes_rooted_in(&layout.root_mnt);
    if !left.is_empty() {
        bail!(
            "processes {left:?} from a previous run still use {}: stop them first",
            paths.run.display()
        );
    }
    if paths.run.exists() {
        std::fs::remove_dir_all(&paths.run)
            .with_context(|| format!("cannot remove {}", paths.run.display()))?;
    }
    Ok(())
}

/// Loads the book, extracts it with generated secrets into `run/tree`, reads the Compose file,
/// writes each service's namespace script and mounts the tmpfs volumes.
pub fn prepare(book_root: &Path, paths: &Paths) -> anyhow::Result<Prepared> {
    let book = book::load(book_root).map_err(|d| diag_error("cannot load the book", &d))?;
    let opts = extract::Options {
        secrets: crate::secrets::Secrets::Generate,
        ..Default::default()
    };
    let tree =
        extract::assemble(&book, &opts).map_err(|d| diag_error("cannot extract the book", &d))?;
    if tree.get(COMPOSE_FILE).is_none() {
        bail!("the book has no `{COMPOSE_FILE}` block: nothing to run");
    }
    clean_run_dir(paths)?;
    std::fs::create_dir_all(&paths.run)?;
    extract::write_tree(&tree, &paths.tree(), false)
        .map_err(|d| diag_error("cannot write the tree", &d))?;
    let project = compose::load(&paths.tree(), COMPOSE_FILE).map_err(|e| {
        book_error(
            "stack::compose",
            format!("{e:#}"),
            &tree.get(COMPOSE_FILE).expect("checked").first_loc(),
        )
    })?;

    // Natively there is no port mapping: each published port is the service's own, on the
    // host's network. Stacks of other checkouts on this machine may want the same port: a
    // machine-wide lock per port makes them take turns; then the port must be free.
    let mut locks = Vec::new();
    for (svc, addr, host, container) in project.services.iter().flat_map(|s| {
        s.ports
            .iter()
            .map(|(a, h, c)| (s.name.clone(), a.clone(), *h, *c))
    }) {
        if host != container {
            bail!(
                "{}",
                book_error(
                    "stack::port-mapping",
                    format!(
                        "service `{svc}` publishes {host}:{container}; the native runner needs the same port on both sides"
                    ),
                    &service_loc(&tree, &svc)
                )
            );
        }
        let a = if addr == "0.0.0.0" {
            "127.0.0.1".to_string()
        } else {
            addr
        };
        locks.push(port_lock(host)?);
        if std::net::TcpListener::bind((a.as_str(), host)).is_err() {
            bail!(
                "{a}:{host} (published by service `{svc}`) is already in use: is another stack running?"
            );
        }
    }

    let layout = paths.layout();
    for d in [&layout.root_mnt, &layout.layers_mnt, &layout.volumes] {
        std::fs::create_dir_all(d)?;
    }
    let host = emulate::Host {
        synapse_python: crate::tools::synapse_python(),
        pg_bindir: crate::tools::pg_bindir(),
        scripts: paths.run.join("scripts"),
    };
    emulate::write_scripts(&host)?;
    let mut launches = BTreeMap::new();
    let mut scripts = BTreeMap::new();
    for svc in &project.services {
        let l = emulate::launch(svc, &host).map_err(|e| {
            book_error(
                "stack::service",
                format!("{e:#}"),
                &service_loc(&tree, &svc.name),
            )
        })?;
        let p = host.scripts.join(format!("ns-{}.sh", svc.name));
        std::fs::write(&p, ns::script(&layout, svc))?;
        launches.insert(svc.name.clone(), l);
        scripts.insert(svc.name.clone(), p);
    }
    // Named volumes: directories; tmpfs volumes: one host tmpfs shared by the services using it.
    let mut host_mounts = Vec::new();
    for (name, tmpfs) in &project.volumes {
        let dir = layout.volumes.join(name);
        std::fs::create_dir_all(&dir)?;
        if *tmpfs {
            let ok = std::process::Command::new("mount")
                .args(["-t", "tmpfs", "-o", "mode=755", &format!("stack-{name}")])
                .arg(&dir)
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                bail!(
                    "cannot mount a tmpfs on {} (the stack test needs root)",
                    dir.display()
                );
            }
            host_mounts.push(dir);
        }
    }
    let runner = Runner::new(project, launches, scripts, &paths.run, host_mounts)?;
    Ok(Prepared {
        book,
        tree,
        runner,
        paths: paths.clone(),
        _port_locks: locks,
    })
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

/// What bring-up measured.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct BringUp {
    pub seconds: f64,
    /// Seconds from the start of bring-up until each service was ready.
    pub ready_at: BTreeMap<String, f64>,
}

/// Starts every service in dependency order and waits for their conditions; ready when every
/// service with a healthcheck is healthy and every one-shot service has exited 0.
pub fn bring_up(p: &Prepared, verbose: bool) -> anyhow::Result<BringUp> {
    let runner = &p.runner;
    let order = start_order(&runner.project);
    let t0 = Instant::now();
    let mut ready: BTreeMap<String, f64> = BTreeMap::new();
    let mut completed: BTreeSet<String> = BTreeSet::new();
    loop {
        // Reap (one-shot services exit; restarts happen in the watcher).
        for name in &order {
            if let Some(code) = runner.exit_code(name) {
                let svc = runner.project.service(name).expect("known");
                if code == 0 {
                    if completed.insert(name.clone()) {
                        ready
                            .entry(name.clone())
                            .or_insert(t0.elapsed().as_secs_f64());
                    }
                } else if svc.restart == compose::Restart::No {
                    bail!(
                        "{}",
                        book_error(
                            "stack::service-failed",
                            format!(
                                "service `{name}` exited with status {code} during bring-up; see {}",
                                runner.log_path(name).display()
                            ),
                            &service_loc(&p.tree, name),
                        )
                    );
                }
            }
        }
        // Start what can start.
        for name in &order {
            if runner.started(name) {
                continue;
            }
            let svc = runner.project.service(name).expect("known");
            let deps_ok = svc.depends_on.iter().all(|(d, cond)| match cond {
                Condition::Started => runner.started(d),
                Condition::Healthy => ready.contains_key(d) && !completed.contains(d),
                Condition::CompletedSuccessfully => completed.contains(d),
            });
            if deps_ok {
                let pid = runner.start(name)?;
                if verbose {
                    eprintln!(
                        "stack: {:6.2} s  started {name} (pid {pid}, {})",
                        t0.elapsed().as_secs_f64(),
                        runner.launches[name].emulation
                    );
                }
            }
        }
        // Health: every pending healthcheck of this round in parallel.
        let pending: Vec<&compose::Service> = order
            .iter()
            .filter(|n| !ready.contains_key(*n) && runner.started(n) && runner.pid(n).is_some())
            .map(|n| runner.project.service(n).expect("known"))
            .filter(|svc| !(svc.healthcheck.is_none() && svc.restart == compose::Restart::No)) // one-shot: ready when it exits 0
            .collect();
        let results: Vec<(String, bool, bool)> = std::thread::scope(|s| {
            let hs: Vec<_> = pending
                .iter()
                .map(|svc| {
                    (
                        svc.name.clone(),
                        svc.healthcheck.is_some(),
                        s.spawn(|| runner.health(svc)),
                    )
                })
                .collect();
            hs.into_iter()
                .map(|(n, hc, h)| (n, hc, h.join().ok().and_then(|r| r.ok()).unwrap_or(false)))
                .collect()
        });
        for (name, has_hc, ok) in results {
            if ok {
                ready.insert(name.clone(), t0.elapsed().as_secs_f64());
                if verbose {
                    eprintln!(
                        "stack: {:6.2} s  {name} is {}",
                        t0.elapsed().as_secs_f64(),
                        if has_hc { "healthy" } else { "started" }
                    );
                }
            }
        }
        if order.iter().all(|n| ready.contains_key(n)) {
            return Ok(BringUp {
                seconds: t0.elapsed().as_secs_f64(),
                ready_at: ready,
            });
        }
        if t0.elapsed() > BRING_UP_TIMEOUT {
            let waiting: Vec<&String> = order.iter().filter(|n| !ready.contains_key(*n)).collect();
            let first = waiting[0];
            bail!(
                "{}",
                book_error(
                    "stack::not-healthy",
                    format!(
                        "bring-up timed out after {} s; not ready: {waiting:?} (see {})",
                        BRING_UP_TIMEOUT.as_secs(),
                        runner.log_path(first).display()
                    ),
                    &service_loc(&p.tree, first),
                )
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> (Book, Tree) {
        let book = book::load(&crate::project_root().join("tests/fixtures/stack"))
            .expect("fixture book loads");
        let tree =
            extract::assemble(&book, &extract::Options::default()).expect("fixture extracts");
        (book, tree)
    }

    #[test]
    fn start_order_follows_depends_on() {
        let (_, tree) = fixture();
        let text = &tree.get(COMPOSE_FILE).unwrap().content;
        let dir = tempfile::tempdir().unwrap();
        for f in [".synapse.env", ".postgres.env"] {
            std::fs::write(dir.path().join(f), &tree.get(f).unwrap().content).unwrap();
        }
        let p = compose::parse(dir.path(), text, &BTreeMap::new()).unwrap();
        let order = start_order(&p);
        let pos = |n: &str| order.iter().position(|x| x == n).unwrap();
        assert_eq!(order.len(), 7);
        assert!(pos("sockets-init") < pos("db") && pos("db") < pos("synapse"));
        assert!(
            pos("synapse") < pos("rooms1")
                && pos("rooms1") < pos("nginx")
                && pos("client_sync1") < pos("nginx")
        );
        assert_eq!(client_addr(&p), "127.0.0.1:18008");
    }

    #[test]
    fn errors_about_a_service_point_at_its_markdown_line() {
        let (_, tree) = fixture();
        let loc = service_loc(&tree, "rooms1");
        assert_eq!(loc.file, "src/deploy.md");
        let md = std::fs::read_to_string(
            crate::project_root().join("tests/fixtures/stack/src/deploy.md"),
        )
        .unwrap();
        assert_eq!(md.lines().nth(loc.line - 1), Some("  rooms1:"));
        let e = book_error("stack::service", "boom", &loc);
        assert!(e.to_string().starts_with(&format!(
            "src/deploy.md:{}: error[stack::service]: boom",
            loc.line
        )));
    }
}
