//! `check_book`: every `routes` block of the book asserted against the simulator, every routed
//! sample checked against the routing contract, and locations no request seems to reach reported.

use super::contract::{self, Contract};
use super::router::{DEFAULT_CLIENT, Outcome, Router};
use super::routes::{Expect, Sample};
use crate::book::Book;
use crate::diagnostics::{Diagnostic, MdLoc};
use crate::synapse::Deployment;
use crate::tree::Tree;

pub use super::routes::samples;

fn loc_desc(router: &Router, id: usize) -> String {
    let l = &router.locations[id];
    let m = if l.modifier.is_empty() {
        String::new()
    } else {
        format!("{} ", l.modifier)
    };
    format!("location {m}{} ({}:{})", l.name, l.md.file, l.md.line)
}

fn got(o: &Outcome, d: Option<&Deployment>) -> String {
    if let Some(s) = o.status {
        return match &o.text {
            Some(t) => format!("{s} {t}"),
            None => s.to_string(),
        };
    }
    let who = |s: &str| {
        d.and_then(|d| d.by_socket(s))
            .map_or(s.to_string(), |(p, _)| p.name.clone())
    };
    match (&o.upstream, &o.server) {
        (Some(u), Some(s)) => format!("upstream {u}, server {}", who(s)),
        (Some(u), None) => format!(
            "upstream {u} (any of {})",
            o.servers
                .iter()
                .map(|s| who(s))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        (None, Some(s)) => s.clone(),
        (None, None) => "no upstream".into(),
    }
}

/// Compares one outcome with its expectation; None when it matches.
pub fn compare(o: &Outcome, e: &Expect, d: Option<&Deployment>) -> Option<String> {
    let ok = match e {
        Expect::Status { code, text } => {
            o.status == Some(*code) && text.as_ref().is_none_or(|t| o.text.as_ref() == Some(t))
        }
        Expect::Server(s) => o.status.is_none() && o.server.as_ref() == Some(s),
        Expect::Upstream { name, server } => {
            o.status.is_none()
                && o.upstream.as_ref() == Some(name)
                && match server {
                    None => true,
                    Some(want) => o.server.as_ref().is_some_and(|s| {
                        s == want
                            || d.and_then(|d| d.by_socket(s))
                                .is_some_and(|(p, _)| &p.name == want)
                    }),
                }
        }
    };
    if ok {
        return None;
    }
    let want = match e {
        Expect::Status {
            code,
            text: Some(t),
        } => format!("{code} {t}"),
        Expect::Status { code, text: None } => code.to_string(),
        Expect::Server(s) => s.clone(),
        Expect::Upstream {
            name,
            server: Some(s),
        } => format!("upstream {name}, server {s}"),
        Expect::Upstream { name, server: None } => format!("upstream {name}"),
    };
    Some(format!(
        "{} {}: expected `{want}`, nginx gives `{}`",
        o.method,
        o.uri,
        got(o, d)
    ))
}

/// Asserts every `routes` block, the contract on every sample, and location reachability,
/// building the router and the Synapse model of `tree` (see [`check`] to pass them in).
pub fn check_book(book: &Book, tree: &Tree) -> Vec<Diagnostic> {
    let (samples, mut diags) = samples(book);
    let router = Router::from_tree(tree);
    diags.extend(check(&samples, tree, &router, &Deployment::from_tree(tree)));
    diags
}

/// The routing checks of one tree: every sample against the simulator (`router`, built from the
/// tree's nginx configuration) and the routing contract (`synapse`, the tree's deployment model),
/// and locations no sample can reach.
pub fn check(
    samples: &[Sample],
    tree: &Tree,
    router: &Result<Router, Vec<Diagnostic>>,
    synapse: &Result<Option<Deployment>, Vec<Diagnostic>>,
) -> Vec<Diagnostic> {
    let mut diags = Vec::new();
    if crate::nginx::config::root_file(tree).is_none() && samples.is_empty() {
        // A book without nginx (a fixture, a draft) has nothing to route.
        return diags;
    }
    let router = match router {
        Ok(r) => r,
        Err(d) => {
            diags.extend(d.iter().cloned());
            return diags;
        }
    };
    let deployment = match synapse {
        Ok(Some(d)) => Some(d),
        Ok(None) => {
            if !samples.is_empty() {
                diags.push(Diagnostic::error(
                    "route::no-homeserver",
                    "the book produces no shared Synapse config (a YAML file with `server_name`), so no upstream socket can be matched to a process",
                    &MdLoc::new("src/SUMMARY.md", 1),
                ));
            }
            None
        }
        Err(d) => {
            if !samples.is_empty() {
                diags.extend(d.iter().cloned());
            }
            None
        }
    };
    let contract = Contract::builtin();
    let pagination = crate::nginx::pcre::Rx::new(
        r"^/_matrix/client/(?:api/v1|r0|v3|unstable)/rooms/([^/]+)/messages$",
        false,
    )
    .expect("valid regex");
    // Room ID -> (first sample's server, its location) for /messages.
    let mut sticky: std::collections::BTreeMap<Vec<u8>, (String, String)> = Default::default();
    let n = router.locations.len();
    let mut hit = vec![false; n];
    // For each regex location never chosen: which location took the samples its regex matches.
    let mut taken_by: Vec<Vec<Option<usize>>> = vec![Vec::new(); n];
    for s in samples {
        let o = router.route_from(
            &s.method,
            &s.uri,
            s.from.as_deref().unwrap_or(DEFAULT_CLIENT),
        );
        if let Some(id) = o.location_id {
            hit[id] = true;
        }
        for (id, l) in router.locations.iter().enumerate() {
            if o.location_id != Some(id) && l.regex().is_some_and(|r| r.is_match(o.path.as_bytes()))
            {
                taken_by[id].push(o.location_id);
            }
        }
        if let Some(c) = pagination.captures(o.path.as_bytes())
            && o.status.is_none()
            && !o.servers.is_empty()
        {
            {
                let room = c.numbered[1].clone().unwrap_or_default();
                let room_s = String::from_utf8_lossy(&room).into_owned();
                match &o.server {
                    None => diags.push(Diagnostic::error(
                        "route::room-affinity",
                        format!(
                            "{} {}: pagination of room `{room_s}` may go to any of {}; Synapse needs every /messages request of a room on one process (hash on the room ID)",
                            o.method,
                            o.uri,
                            o.servers.join(", ")
                        ),
                        &s.loc,
                    )),
                    Some(srv) => match sticky.get(&room) {
                        Some((first, at)) if first != srv => diags.push(Diagnostic::error(
                            "route::room-affinity",
                            format!("{} {}: pagination of room `{room_s}` goes to `{srv}`, but {at} sent it to `{first}`", o.method, o.uri),
                            &s.loc,
                        )),
                        Some(_) => {}
                        None => {
                            sticky.insert(room, (srv.clone(), format!("the sample at {}", s.loc)));
                        }
                    },
                }
            }
        }
        if let Some(m) = compare(&o, &s.expect, deployment) {
            let mut d = Diagnostic::error("route::mismatch", m, &s.loc);
            if let Some(id) = o.location_id {
                d = d.with_note(format!("nginx picks {}", loc_desc(router, id)));
            }
            for note in &o.notes {
                d = d.with_note(note.clone());
            }
            diags.push(d);
        }
        if let Some(dep) = deployment {
            for v in contract::check(&contract, dep, &o) {
                let mut d = Diagnostic::new(v.code, v.message, &s.loc);
                if let Some(id) = o.location_id {
                    d = d.with_note(format!("via {}", loc_desc(router, id)));
                }
                diags.push(d);
            }
        }
    }
    // Prefix locations a regex always takes first. Whether a regex takes every path below a
    // prefix cannot be decided in general, so it is said only when a varied set of paths (every
    // kind of character after the prefix: letters of both cases, digits, punctuation, a deeper
    // path, a byte outside ASCII) all go to regexes; one that gets through shows the location
    // is reachable.
    let mut shadowed = vec![false; n];
    const SUFFIXES: &[&str] = &[
        "", "x", "/x", "X", "0", "-", "_", ".", "~", "%20", "/", "x/y", "x.y", "X/0", "@", "!",
        ":", ";", "+", "=", ",", "%C3%A9", "(", "'", "*", "$", "0/",
    ];
    for (id, l) in router.locations.iter().enumerate() {
        if l.regex().is_some() || !l.name.starts_with('/') {
            continue;
        }
        let witnesses: Vec<String> = SUFFIXES
            .iter()
            .map(|s| format!("{}{s}", l.name))
            .chain(std::iter::once(format!(
                "{}/x",
                l.name.trim_end_matches('/')
            )))
            .collect();
        // Stops at the first path that reaches the location (usually its own name).
        let mut first = None;
        let all_taken = witnesses.iter().all(|w| {
            let o = router.route("GET", w);
            first.get_or_insert(o.location_id);
            o.location_id != Some(id)
                && o.location_id
                    .is_some_and(|w| router.locations[w].regex().is_some())
        });
        if all_taken {
            shadowed[id] = true;
            let w = first.flatten().unwrap_or(id);
            diags.push(Diagnostic::error(
                "route::shadowed-location",
                format!(
                    "no request seems to reach this location: `{}` and the {} varied paths below it tried go to {} first",
                    l.name,
                    witnesses.len() - 1,
                    loc_desc(router, w)
                ),
                &l.md,
            ));
        }
    }
    if !samples.is_empty() {
        for id in 0..n {
            if hit[id] || shadowed[id] {
                continue;
            }
            let l = &router.locations[id];
            let taken: Vec<usize> = taken_by[id].iter().flatten().copied().collect();
            let d = if !taken.is_empty() {
                let mut winners: Vec<usize> = taken.clone();
                winners.sort_unstable();
                winners.dedup();
                Diagnostic::error(
                    "route::shadowed-location",
                    format!(
                        "location `{}` is never chosen: every sample its pattern matches ({}) goes to {} first",
                        l.name,
                        taken_by[id].len(),
                        winners
                            .iter()
                            .map(|&w| loc_desc(router, w))
                            .collect::<Vec<_>>()
                            .join(" or ")
                    ),
                    &l.md,
                )
            } else {
                Diagnostic::error(
                    "route::unreached-location",
                    format!(
                        "no sample of the book's `routes` blocks reaches location `{}`: add one, or remove the location",
                        l.name
                    ),
                    &l.md,
                )
            };
            diags.push(d);
        }
    }
    diags
}
