//! The Compose file: what the real Docker Compose v2 says of it (`docker compose config`, see
//! [`super::compose_config`]: the Compose specification's schema, interpolation, durations,
//! services and volumes referred to), and every name and path in it refers to something real:
//! `depends_on` services, named volumes, bind sources and `env_file`s in the tree, config files
//! passed on the command line, and a healthcheck that probes a socket the service itself listens
//! on. These own checks run first and report at the exact line; Compose's answer adds what they
//! do not know.

use super::TreeView;
use crate::compose::{Compose, MountKind, Resolved, Service, Word, env, word_value};
use crate::diagnostics::Diagnostic;
use std::collections::{BTreeMap, BTreeSet};

pub fn check(view: &TreeView<'_>) -> Vec<Diagnostic> {
    let Some(compose) = view.compose() else {
        return Vec::new();
    };
    let mut diags = Vec::new();
    let at = |line: usize| view.loc(&compose.path, line);

    if let Some(k) = compose.root.get_key("version") {
        diags.push(Diagnostic::error(
            "compose::obsolete-version",
            "`version:` is obsolete in the Compose specification (Compose ignores it and warns): remove it",
            &at(k.line()),
        ));
    }

    let declared_volumes: BTreeSet<&str> = compose
        .root
        .get("volumes")
        .map(|v| v.entries().iter().filter_map(|(k, _)| k.as_str()).collect())
        .unwrap_or_default();
    // Bind sources some service mounts read-write: state (a data directory, a repository) that
    // Docker may create empty on the first start, and that another service may read.
    let written_binds: BTreeSet<String> = compose
        .services
        .iter()
        .flat_map(|s| s.mounts.iter())
        .filter(|m| matches!(m.kind, MountKind::Bind) && !m.read_only)
        .map(|m| clean(&m.source))
        .collect();
    // Findings from a template merged into several services are reported once, naming them all.
    #[derive(PartialEq, Eq, PartialOrd, Ord)]
    enum Dep {
        NoHealthcheck,
        UnknownService,
    }
    let mut dep_findings: BTreeMap<(usize, Dep, String), Vec<String>> = BTreeMap::new();
    for svc in &compose.services {
        // depends_on: a list of names or a map name -> condition
        if let Some(dep) = svc.node.get("depends_on") {
            let names: Vec<(&str, usize)> = if dep.is_map() {
                dep.entries()
                    .iter()
                    .filter_map(|(k, _)| k.as_str().map(|s| (s, k.line())))
                    .collect()
            } else {
                dep.str_nodes()
                    .into_iter()
                    .map(|(s, n)| (s, n.line()))
                    .collect()
            };
            for (name, line) in names {
                let Some(target) = compose.service(name) else {
                    dep_findings
                        .entry((line, Dep::UnknownService, name.to_string()))
                        .or_default()
                        .push(svc.name.clone());
                    continue;
                };
                let healthy = dep
                    .get(name)
                    .and_then(|d| d.get("condition"))
                    .and_then(|c| c.as_str())
                    == Some("service_healthy");
                let has_check = target.node.get("healthcheck").is_some_and(|h| {
                    h.get("disable").and_then(|d| d.yaml11_bool()) != Some(true)
                        && h.get("test").is_some()
                });
                if healthy && !has_check {
                    dep_findings
                        .entry((line, Dep::NoHealthcheck, name.to_string()))
                        .or_default()
                        .push(svc.name.clone());
                }
            }
        }
        for m in &svc.mounts {
            match m.kind {
                MountKind::Volume
                    if !m.source.is_empty() && !declared_volumes.contains(m.source.as_str()) =>
                {
                    diags.push(Diagnostic::error(
                        "compose::undeclared-volume",
                        format!("service `{}` mounts the volume `{}`, which the top-level `volumes:` does not declare", svc.name, m.source),
                        &at(m.line),
                    ));
                }
                // A missing bind source is created by Docker as an empty directory: fine for
                // state (a data directory), wrong for anything the container must read.
                MountKind::Bind
                    if !m.source.starts_with('/')
                        && !m.source.starts_with('~')
                        && (m.read_only || looks_like_file(&m.source))
                        && !(m.read_only && written_binds.contains(&clean(&m.source))) =>
                {
                    let rel = clean(&m.source);
                    if !exists_in_tree(view, &rel) {
                        diags.push(Diagnostic::error(
                            "compose::missing-bind-source",
                            format!(
                                "service `{}` bind-mounts `{}` to read it, but the book writes no file {} it: Docker would mount an empty directory",
                                svc.name,
                                m.source,
                                if rel.is_empty() { "in the tree for" } else { "at or under" }
                            ),
                            &at(m.line),
                        ));
                    }
                }
                _ => {}
            }
        }
        for Word { text: f, line } in &svc.env_files {
            if view.file(&clean(f)).is_none() {
                diags.push(Diagnostic::error(
                    "compose::missing-env-file",
                    format!(
                        "service `{}` reads env_file `{f}`, which the book does not write",
                        svc.name
                    ),
                    &at(*line),
                ));
            }
        }
        // Config files named on the command line.
        let mut config_words: Vec<&Word> = crate::synapse::config_args(svc);
        config_words.extend(svc.flag_values(&["--config-file", "--config"]));
        for w in config_words {
            let p = word_value(w);
            if !p.starts_with('/') {
                continue;
            }
            match svc.resolve(p) {
                Resolved::Tree(t) if view.file(&t).is_none() => diags.push(Diagnostic::error(
                    "compose::missing-config-file",
                    format!("service `{}` is started with `{p}`, which is `{t}` in the tree, but the book writes no such file", svc.name),
                    &at(w.line),
                )),
                Resolved::Unmounted => diags.push(Diagnostic::error(
                    "compose::missing-config-file",
                    format!("service `{}` is started with `{p}`, but no volume of the service is mounted there", svc.name),
                    &at(w.line),
                )),
                _ => {}
            }
        }
    }
    for ((line, dep, name), services) in dep_findings {
        let who = services
            .iter()
            .map(|s| format!("`{s}`"))
            .collect::<Vec<_>>()
            .join(", ");
        let (code, msg) = match dep {
            Dep::UnknownService => (
                "compose::unknown-service",
                format!("{who} depend(s) on `{name}`, which is not a service of this file"),
            ),
            Dep::NoHealthcheck => (
                "compose::dependency-without-healthcheck",
                format!(
                    "{who} wait(s) for `{name}` to be healthy, but `{name}` has no healthcheck: Compose refuses to start them"
                ),
            ),
        };
        diags.push(Diagnostic::error(code, msg, &at(line)));
    }
    healthchecks(view, compose, &mut diags);
    interpolation(view, compose, &mut diags);
    let mut real = super::compose_config::check(view, compose, &diags);
    diags.append(&mut real);
    diags
}

/// `${NAME}` in the Compose file is filled from the shell environment or the project's `.env`:
/// a variable the book defines nowhere (and gives no default) becomes an empty string, with only
/// a warning from Compose (the old guide's replica healthcheck used such a `${SYNAPSE_PASSWORD}`).
/// `$$` is a literal `$` (for the container's own shell) and is left alone.
fn interpolation(view: &TreeView<'_>, compose: &Compose, diags: &mut Vec<Diagnostic>) {
    let Some(f) = view.file(&compose.path) else {
        return;
    };
    for (i, line) in f.content.lines().enumerate() {
        if line.trim_start().starts_with('#') {
            continue;
        }
        for r in env::references(line) {
            if !r.has_default() && !compose.vars.contains_key(r.name) {
                let name = r.name;
                diags.push(Diagnostic::error(
                    "compose::undefined-variable",
                    format!(
                        "`{}` is interpolated by Compose, but `{name}` is not set in `.env` and has no default (`${{{name}:-value}}`): \
                         Compose substitutes an empty string (write `$$` for a `$` the container's shell should see)",
                        r.text
                    ),
                    &f.md_loc(i + 1),
                ));
            }
        }
    }
}

/// A path whose last component has an extension (`nginx.conf`, `homeserver.yaml`).
fn looks_like_file(p: &str) -> bool {
    p.trim_end_matches('/')
        .rsplit('/')
        .next()
        .is_some_and(|last| {
            last.contains('.') && !last.starts_with('.')
                || last.starts_with('.') && last[1..].contains('.')
        })
}

fn clean(p: &str) -> String {
    p.trim_start_matches("./")
        .trim_end_matches('/')
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect::<Vec<_>>()
        .join("/")
}

fn exists_in_tree(view: &TreeView<'_>, rel: &str) -> bool {
    rel.is_empty()
        || view.file(rel).is_some()
        || view
            .tree
            .files
            .keys()
            .any(|k| k.starts_with(&format!("{rel}/")))
}

/// Sockets (container paths) and socket directories each service listens on.
pub fn served(view: &TreeView<'_>, compose: &Compose) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    // Which service runs each Synapse process, worked out once.
    let mut runs: BTreeMap<&str, Vec<&crate::synapse::Process>> = BTreeMap::new();
    if let Some(syn) = view.synapse() {
        for p in &syn.processes {
            if let Some(s) = view.service_of(p) {
                runs.entry(s.name.as_str()).or_default().push(p);
            }
        }
    }
    for svc in &compose.services {
        let mut socks = Vec::new();
        for w in svc.flag_values(&["--unixsocket"]) {
            socks.push(word_value(w).to_string());
        }
        for d in pg_socket_dirs(view, svc) {
            socks.push(d);
        }
        for p in runs.get(svc.name.as_str()).into_iter().flatten() {
            socks.extend(p.listeners.iter().filter_map(|l| l.path.clone()));
        }
        // A redis.conf passed as the first argument.
        for w in &svc.words {
            if w.text.ends_with("redis.conf")
                && let Resolved::Tree(t) = svc.resolve(&w.text)
                && let Some(f) = view.file(&t)
            {
                for l in f.content.lines() {
                    if let Some(rest) = l.trim().strip_prefix("unixsocket ") {
                        socks.push(rest.trim().trim_matches('"').to_string());
                    }
                }
            }
        }
        out.insert(svc.name.clone(), socks);
    }
    out
}

/// PostgreSQL's socket directories for a service: `-c unix_socket_directories=...` on its
/// command line, or `unix_socket_directories` in the postgresql.conf it is given.
pub fn pg_socket_dirs(view: &TreeView<'_>, svc: &Service) -> Vec<String> {
    let mut dirs = Vec::new();
    let mut conf_files = Vec::new();
    for w in svc.flag_values(&["-c"]) {
        let v = &w.text;
        if let Some(d) = v.strip_prefix("unix_socket_directories=") {
            dirs.extend(
                d.split(',')
                    .map(|s| s.trim().trim_matches('\'').to_string()),
            );
        }
        if let Some(c) = v.strip_prefix("config_file=") {
            conf_files.push(c.to_string());
        }
    }
    for c in conf_files {
        if let Resolved::Tree(t) = svc.resolve(&c)
            && let Some(f) = view.file(&t)
        {
            for l in f.content.lines() {
                let l = l.split('#').next().unwrap_or("").trim();
                if let Some(rest) = l.strip_prefix("unix_socket_directories") {
                    let v = rest
                        .trim_start()
                        .trim_start_matches('=')
                        .trim()
                        .trim_matches('\'');
                    dirs.extend(v.split(',').map(|s| s.trim().to_string()));
                }
            }
        }
    }
    dirs
}

/// The sockets a healthcheck probes: `curl --unix-socket P`, `redis-cli -s P`,
/// `pg_isready -h DIR`, or any word that is an absolute `*.sock` path.
pub fn health_sockets(svc: &Service) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    let w = &svc.health;
    for (i, word) in w.iter().enumerate() {
        let next = w.get(i + 1);
        let t = word.text.as_str();
        if let Some(v) = t.strip_prefix("--unix-socket=") {
            out.push((v.to_string(), word.line));
        } else if matches!(t, "--unix-socket" | "-s" | "--socket")
            || (t == "-h" && w.iter().any(|x| x.text.ends_with("pg_isready")))
        {
            if let Some(n) = next
                && n.text.starts_with('/')
            {
                out.push((n.text.clone(), n.line));
            }
        } else if t.starts_with('/') && t.ends_with(".sock") && !out.iter().any(|(p, _)| p == t) {
            out.push((t.to_string(), word.line));
        }
    }
    out.dedup();
    out
}

fn healthchecks(view: &TreeView<'_>, compose: &Compose, diags: &mut Vec<Diagnostic>) {
    if !view.yaml_clean() {
        return; // who listens where is unknown until every YAML file loads; those errors come first
    }
    let served = served(view, compose);
    for svc in &compose.services {
        let mine = served.get(&svc.name).cloned().unwrap_or_default();
        for (sock, line) in health_sockets(svc) {
            let ok = mine
                .iter()
                .any(|s| s.trim_end_matches('/') == sock.trim_end_matches('/'));
            if !ok {
                let owner = served
                    .iter()
                    .find(|(_, v)| v.iter().any(|s| s == &sock))
                    .map(|(k, _)| k.clone());
                if mine.is_empty() && owner.is_none() {
                    continue; // what this service listens on is unknown (e.g. its config is missing, reported elsewhere)
                }
                let why = match owner {
                    Some(o) => format!(
                        "that socket belongs to `{o}`, so the check says nothing about `{}`",
                        svc.name
                    ),
                    None => "no process of the deployment listens there".into(),
                };
                let listens = if mine.is_empty() {
                    "nothing the linter knows of".to_string()
                } else {
                    mine.join(", ")
                };
                diags.push(Diagnostic::error(
                    "compose::healthcheck-socket",
                    format!("the healthcheck of `{}` probes `{sock}`: {why} (`{}` listens on {listens})", svc.name, svc.name),
                    &view.loc(&compose.path, line),
                ));
            }
        }
    }
}
