//! The nginx checks of `cargo xtask lint`, each reported at the Markdown line:
//!
//! - syntax, `include` resolution inside the tree, the directive table (context, arguments);
//! - every variable defined (`map`, `set`, a named regex capture, or built in);
//! - every `proxy_pass` names a defined `upstream` and carries no URI part (nginx would rewrite
//!   the URI, and Synapse verifies federation signatures over the raw URI);
//! - each location proxies or returns on purpose; a server-level `return` shadowing locations;
//! - regexes valid as PCRE, locations well nested and unique (shared with the router);
//! - each upstream Unix socket served by some Synapse listener of the book;
//! - the admin API reachable only from private address ranges;
//! - TLS 1.2 or newer only, wherever TLS is configured;
//! - the real `nginx -t` when nginx is installed ([`nginx_t`]), and gixy-ng when its venv is
//!   installed ([`gixy`]).
//!
//! They read the nginx configuration, the router and the Synapse model the analysis built for
//! the tree ([`TreeView`]); [`check_tree`] builds them itself for a lone tree (tests, fixtures).

pub mod gixy;
pub mod nginx_t;

use super::TreeView;
use crate::diagnostics::{Diagnostic, Severity};
use crate::nginx::ast::{self, Directive, location_args, walk};
use crate::nginx::config::{self, Config};
use crate::nginx::directives;
use crate::nginx::pcre::Rx;
use crate::nginx::vars::{self, Complex};
use crate::route::router::{Router, is_private};
use crate::synapse::Deployment;
use crate::tree::Tree;
use std::collections::BTreeSet;

/// Client addresses that must not reach the admin API (public IPv4 and IPv6 examples).
pub const PUBLIC_PROBES: &[&str] = &["198.51.100.7", "8.8.8.8", "2001:db8::1"];

/// Admin API requests used as probes.
pub const ADMIN_PROBES: &[&str] = &[
    "/_synapse/admin/v1/server_version",
    "/_synapse/admin/v2/users/@alice:example.com",
    "/_synapse/admin/v1/rooms/!abc:example.com",
    "/_synapse/admin/v1/purge_media_cache?before_ts=1",
    "/_synapse/admin/v1/media/quarantine/example.com/abc",
    "/_synapse/admin/v1/users/@alice:example.com/media",
];

/// Every nginx check of a tree, including the real `nginx -t` and gixy-ng when they are
/// installed (they run only when the static checks find no error).
pub fn check(view: &TreeView<'_>) -> Vec<Diagnostic> {
    let Some(cfg) = view.nginx else {
        return Vec::new();
    };
    let cfg = match cfg {
        Ok(c) => c,
        Err(d) => return d.clone(),
    };
    let router = view
        .router
        .expect("a tree with an nginx configuration has a router");
    let mut d = check_static_with(view.tree, cfg, router, view.deployment());
    if d.iter().all(|d| d.severity != Severity::Error) {
        d.extend(nginx_t::check(view.tree, cfg));
        d.extend(gixy::check(view.tree));
    }
    d
}

/// [`check`] for a lone tree: loads its nginx configuration, router and Synapse model.
pub fn check_tree(tree: &Tree) -> Vec<Diagnostic> {
    with_models(tree, check)
}

/// Every nginx check of a lone tree except `nginx -t` and gixy-ng.
pub fn check_static(tree: &Tree) -> Vec<Diagnostic> {
    with_models(tree, |view| match view.nginx {
        None => Vec::new(),
        Some(Err(d)) => d.clone(),
        Some(Ok(cfg)) => check_static_with(
            tree,
            cfg,
            view.router.expect("built with the configuration"),
            view.deployment(),
        ),
    })
}

fn with_models(tree: &Tree, f: impl FnOnce(&TreeView<'_>) -> Vec<Diagnostic>) -> Vec<Diagnostic> {
    let nginx = config::root_file(tree).map(|_| config::load(tree));
    let router = nginx.as_ref().map(|c| match c {
        Ok(c) => Router::from_config(tree, c),
        Err(d) => Err(d.clone()),
    });
    let synapse = Deployment::from_tree(tree);
    let view = TreeView::new(
        tree,
        super::Models {
            compose: None,
            synapse: &synapse,
            nginx: nginx.as_ref(),
            router: router.as_ref(),
        },
    );
    f(&view)
}

/// The static nginx checks on a loaded configuration and its router.
fn check_static_with(
    tree: &Tree,
    cfg: &Config,
    router: &Result<Router, Vec<Diagnostic>>,
    deployment: Option<&Deployment>,
) -> Vec<Diagnostic> {
    let mut diags = Vec::new();
    table(tree, cfg, &mut diags);
    if !diags.is_empty() {
        // Everything after a structural error would only repeat it in other words.
        return diags;
    }
    variables(tree, cfg, &mut diags);
    proxies(tree, cfg, &mut diags);
    tls(tree, cfg, &mut diags);
    match router {
        Ok(r) => {
            if let Some(d) = deployment {
                sockets(r, d, &mut diags);
            }
            admin(r, &mut diags);
        }
        Err(d) => diags.extend(d.iter().cloned()),
    }
    diags.sort_by(|a, b| (&a.file, a.line, &a.code).cmp(&(&b.file, b.line, &b.code)));
    diags.dedup();
    diags
}

/// Checks an nginx `example` block on its own: syntax, directives nginx does not know, argument
/// counts, and location regexes. Its context is unknown (an example is often a fragment, such
/// as one `location`), so a directive passes when any of its usages fits.
pub fn check_example(block: &crate::book::Block) -> Vec<Diagnostic> {
    let loc = |line: usize| {
        block.line_loc(
            line.saturating_sub(1)
                .min(block.text.lines().count().saturating_sub(1)),
        )
    };
    let dirs = match ast::parse("example", block.text.as_bytes()) {
        Ok(d) => d,
        Err(e) => return vec![Diagnostic::error("nginx::syntax", e.msg, &loc(e.line))],
    };
    let mut diags = Vec::new();
    walk(&dirs, &mut |d, parents| {
        if parents.iter().any(|p| {
            directives::DATA_BLOCKS.contains(&p.name.as_str()) || !directives::is_known(&p.name)
        }) {
            return;
        }
        if !directives::is_known(&d.name) {
            diags.push(Diagnostic::error(
                "nginx::directive",
                format!("unknown directive \"{}\"", d.name),
                &loc(d.line),
            ));
            return;
        }
        // Try the directive in every context it is allowed in.
        let fits = directives::TABLE
            .iter()
            .filter(|(n, _, _)| *n == d.name)
            .any(|(_, ctx, _)| {
                let fake = |name: &str| Directive {
                    name: name.into(),
                    args: Vec::new(),
                    file: String::new(),
                    line: 0,
                    block: Some(Vec::new()),
                    includes: Vec::new(),
                };
                let chains: Vec<Vec<Directive>> = vec![
                    vec![],
                    vec![fake("events")],
                    vec![fake("http")],
                    vec![fake("http"), fake("server")],
                    vec![fake("http"), fake("server"), fake("location")],
                    vec![fake("http"), fake("upstream")],
                    vec![fake("http"), fake("server"), fake("if")],
                    vec![fake("http"), fake("server"), fake("location"), fake("if")],
                    vec![
                        fake("http"),
                        fake("server"),
                        fake("location"),
                        fake("limit_except"),
                    ],
                    vec![fake("stream")],
                ];
                chains.iter().any(|c| {
                    let refs: Vec<&Directive> = c.iter().collect();
                    directives::context_of(&refs) & ctx != 0
                        && directives::check(d, &refs).is_none()
                })
            });
        if !fits {
            diags.push(Diagnostic::error(
                "nginx::directive",
                format!("invalid number of arguments in \"{}\" directive", d.name),
                &loc(d.line),
            ));
        }
        for (r, caseless) in regexes_of(d, parents) {
            if let Err(e) = Rx::new(&r, caseless) {
                diags.push(Diagnostic::error(
                    "nginx::bad-regex",
                    format!("`{r}` is not a valid PCRE regex: {e}"),
                    &loc(d.line),
                ));
            }
        }
    });
    diags
}

fn at(tree: &Tree, d: &Directive) -> crate::diagnostics::MdLoc {
    config::md(tree, &d.file, d.line)
}

fn err(tree: &Tree, code: &str, msg: String, d: &Directive) -> Diagnostic {
    Diagnostic::error(code, msg, &at(tree, d)).with_note(format!("in {}:{}", d.file, d.line))
}

fn in_data_block(parents: &[&Directive]) -> bool {
    parents
        .last()
        .is_some_and(|p| directives::DATA_BLOCKS.contains(&p.name.as_str()))
}

fn table(tree: &Tree, cfg: &Config, diags: &mut Vec<Diagnostic>) {
    walk(&cfg.directives, &mut |d, parents| {
        if parents.iter().any(|p| !directives::is_known(&p.name)) {
            return;
        }
        if parents.last().is_some_and(|p| p.name == "map") {
            // `KEY VALUE;`, or the bare flags `hostnames;` and `volatile;` (ngx_http_map).
            let flag = d.args.is_empty() && matches!(d.name.as_str(), "hostnames" | "volatile");
            if d.args.len() != 1 && !flag {
                diags.push(err(
                    tree,
                    "nginx::directive",
                    "invalid number of the map parameters".into(),
                    d,
                ));
            }
            return;
        }
        if in_data_block(parents) {
            return;
        }
        if let Some(m) = directives::check(d, parents) {
            let mut e = err(tree, "nginx::directive", m, d);
            if !directives::is_known(&d.name) {
                e = e.with_note("a comment must start with `#`; a directive must be one nginx knows (see xtask/src/nginx/directives.rs)");
            }
            diags.push(e);
        }
    });
}

/// Regexes of a directive (location patterns, map keys, rewrite, if operands).
fn regexes_of(d: &Directive, parents: &[&Directive]) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    if parents.last().is_some_and(|p| p.name == "map") {
        if let Some(r) = d.name.strip_prefix("~*") {
            out.push((r.to_string(), true));
        } else if let Some(r) = d.name.strip_prefix('~') {
            out.push((r.to_string(), false));
        }
        return out;
    }
    match d.name.as_str() {
        "location" => {
            if let Ok((m, n)) = location_args(d)
                && (m == "~" || m == "~*")
            {
                out.push((n, m == "~*"));
            }
        }
        "rewrite" => {
            if let Some(r) = d.arg(0) {
                out.push((r.to_string(), false));
            }
        }
        "if" => {
            let a: Vec<&str> = d.args.iter().map(|w| w.text.as_str()).collect();
            for (i, w) in a.iter().enumerate() {
                if matches!(*w, "~" | "~*" | "!~" | "!~*")
                    && let Some(r) = a.get(i + 1)
                {
                    out.push((r.trim_end_matches(')').to_string(), w.ends_with('*')));
                }
            }
        }
        _ => {}
    }
    out
}

fn variables(tree: &Tree, cfg: &Config, diags: &mut Vec<Diagnostic>) {
    let mut defined: BTreeSet<String> = BTreeSet::new();
    walk(&cfg.directives, &mut |d, parents| {
        match d.name.as_str() {
            "map" if !in_data_block(parents) => {
                if let Some(v) = d.arg(1) {
                    defined.insert(v.trim_start_matches('$').to_ascii_lowercase());
                }
            }
            "set" if !in_data_block(parents) => {
                if let Some(v) = d.arg(0) {
                    defined.insert(v.trim_start_matches('$').to_ascii_lowercase());
                }
            }
            _ => {}
        }
        for (r, caseless) in regexes_of(d, parents) {
            if let Ok(rx) = Rx::new(&r, caseless) {
                defined.extend(rx.names().map(str::to_ascii_lowercase));
            }
        }
    });
    walk(&cfg.directives, &mut |d, parents| {
        // Words that are not complex values: location patterns, regexes, map keys, if operands.
        let mut words: Vec<&str> = Vec::new();
        let in_map = parents.last().is_some_and(|p| p.name == "map");
        if in_map {
            words.extend(d.args.iter().map(|w| w.text.as_str()));
        } else if parents
            .last()
            .is_some_and(|p| directives::DATA_BLOCKS.contains(&p.name.as_str()))
        {
            return;
        } else {
            match d.name.as_str() {
                "location" => return,
                "log_format" => words.extend(d.args.iter().skip(1).map(|w| w.text.as_str())),
                "rewrite" => words.extend(d.args.iter().skip(1).map(|w| w.text.as_str())),
                "if" => {
                    let a: Vec<&str> = d.args.iter().map(|w| w.text.as_str()).collect();
                    for (i, w) in a.iter().enumerate() {
                        let prev = if i > 0 { a[i - 1] } else { "" };
                        if !matches!(prev, "~" | "~*" | "!~" | "!~*") {
                            words.push(w.trim_start_matches('(').trim_end_matches(')'));
                        }
                    }
                }
                "map" => words.extend(d.args.first().map(|w| w.text.as_str())),
                "set" => words.extend(d.args.iter().skip(1).map(|w| w.text.as_str())),
                _ => words.extend(d.args.iter().map(|w| w.text.as_str())),
            }
        }
        for w in words {
            if !w.contains('$') {
                continue;
            }
            match Complex::parse(w) {
                Ok(c) => {
                    for v in c.vars() {
                        if !vars::is_builtin(v) && !defined.contains(v) {
                            diags.push(err(
                                tree,
                                "nginx::undefined-variable",
                                format!("unknown \"{v}\" variable: no `map`, `set` or named capture defines `${v}`, and nginx has no such built-in"),
                                d,
                            ));
                        }
                    }
                }
                Err(e) => diags.push(err(tree, "nginx::bad-value", e, d)),
            }
        }
    });
}

fn proxies(tree: &Tree, cfg: &Config, diags: &mut Vec<Diagnostic>) {
    let mut upstreams = BTreeSet::new();
    walk(&cfg.directives, &mut |d, parents| {
        if d.name == "upstream"
            && !in_data_block(parents)
            && let Some(n) = d.arg(0)
        {
            upstreams.insert(n.to_string());
        }
    });
    walk(&cfg.directives, &mut |d, parents| {
        if in_data_block(parents) {
            return;
        }
        match d.name.as_str() {
            "proxy_pass" => {
                let Some(a) = d.arg(0) else { return };
                let rest = a.split_once("://").map_or(a, |(_, r)| r);
                if rest.starts_with("unix:") {
                    // http://unix:/path:/uri
                    if rest.splitn(3, ':').nth(2).is_some_and(|u| !u.is_empty()) {
                        diags.push(err(tree, "nginx::proxy-pass-uri", format!("`proxy_pass {a}` has a URI part: nginx would replace the matched part of the normalised URI, and Synapse must get the raw request URI (federation signatures cover it)"), d));
                    }
                    return;
                }
                let (host, uri) = rest
                    .split_once('/')
                    .map_or((rest, None), |(h, u)| (h, Some(u)));
                if uri.is_some() {
                    diags.push(err(tree, "nginx::proxy-pass-uri", format!("`proxy_pass {a}` has a URI part (even a lone `/`): nginx would send the decoded, normalised URI instead of the raw one, which breaks Synapse's signature checks"), d));
                }
                if !host.contains('$') && !upstreams.contains(host) {
                    diags.push(err(tree, "nginx::unknown-upstream", format!("`proxy_pass {a}` names `{host}`, which is not an `upstream` of this configuration"), d));
                }
            }
            "location" => {
                let purposeful = [
                    "proxy_pass",
                    "return",
                    "location",
                    "alias",
                    "root",
                    "try_files",
                    "stub_status",
                    "internal",
                    "rewrite",
                ];
                let named = d.arg(0).is_some_and(|a| a.starts_with('@'));
                if !named
                    && !d
                        .children()
                        .iter()
                        .any(|c| purposeful.contains(&c.name.as_str()))
                {
                    diags.push(err(tree, "nginx::location-no-action", format!("`location {}` neither proxies nor returns: nginx would serve files from its default root", d.args.iter().map(|w| w.text.as_str()).collect::<Vec<_>>().join(" ")), d));
                }
            }
            "server" if parents.last().is_some_and(|p| p.name == "http") => {
                if let Some(r) = d.children().iter().find(|c| c.name == "return")
                    && d.children().iter().any(|c| c.name == "location")
                {
                    diags.push(err(tree, "nginx::server-return-shadows", format!("`{}` at server level runs before any location is chosen: every location of this server is unreachable", r.display()), r));
                }
            }
            _ => {}
        }
    });
}

fn tls(tree: &Tree, cfg: &Config, diags: &mut Vec<Diagnostic>) {
    let mut protocols_set = false;
    let mut first_ssl_listen: Option<&Directive> = None;
    walk(&cfg.directives, &mut |d, _| {
        if d.name == "ssl_protocols" {
            protocols_set = true;
            for a in &d.args {
                if matches!(a.text.as_str(), "SSLv2" | "SSLv3" | "TLSv1" | "TLSv1.1") {
                    diags.push(err(
                        tree,
                        "nginx::weak-tls",
                        format!(
                            "`ssl_protocols` enables {}: allow TLSv1.2 and TLSv1.3 only",
                            a.text
                        ),
                        d,
                    ));
                }
            }
        }
        if d.name == "listen"
            && d.args.iter().any(|a| a.text == "ssl" || a.text == "quic")
            && first_ssl_listen.is_none()
        {
            first_ssl_listen = Some(d);
        }
    });
    if let (Some(l), false) = (first_ssl_listen, protocols_set) {
        diags.push(err(tree, "nginx::weak-tls", "TLS is on but `ssl_protocols` is not set: nginx before 1.23.4 (Debian 12 ships 1.22.1) also enables TLSv1 and TLSv1.1 by default; set `ssl_protocols TLSv1.2 TLSv1.3;`".into(), l));
    }
}

fn sockets(r: &Router, d: &Deployment, diags: &mut Vec<Diagnostic>) {
    for up in r.upstreams.values() {
        for (p, at) in up.peers.iter().zip(&up.peer_md) {
            if p.name.starts_with("unix:") && d.by_socket(&p.name).is_none() {
                diags.push(Diagnostic::error(
                    "nginx::unknown-socket",
                    format!("upstream `{}` sends to `{}`, but no Synapse listener (homeserver.yaml `listeners`, a worker's `worker_listeners`) has that path", up.name, p.name),
                    at,
                ));
            }
        }
    }
}

fn admin(r: &Router, diags: &mut Vec<Diagnostic>) {
    let mut seen = BTreeSet::new();
    // Every `allow` of the locations serving the admin API names a private range.
    let mut checked = BTreeSet::new();
    for probe in ADMIN_PROBES {
        let Some(id) = r.route_from("GET", probe, "10.0.0.5").location_id else {
            continue;
        };
        if !checked.insert(id) {
            continue;
        }
        let l = &r.locations[id];
        for net in l.allowed() {
            if !is_private(net) {
                let what = net.map_or("all".to_string(), |(ip, b)| format!("{ip}/{b}"));
                diags.push(Diagnostic::error(
                    "nginx::admin-public",
                    format!("`allow {what}` lets addresses outside the private ranges reach the admin API (via `location {} {}`)", l.modifier, l.name),
                    &l.md,
                ));
            }
        }
    }
    for probe in ADMIN_PROBES {
        for client in PUBLIC_PROBES {
            let o = r.route_from("GET", probe, client);
            if o.status.is_none() && !o.servers.is_empty() {
                let Some(id) = o.location_id else { continue };
                if seen.insert(id) {
                    let l = &r.locations[id];
                    diags.push(Diagnostic::error(
                        "nginx::admin-public",
                        format!("`GET {probe}` from the public address {client} is proxied to Synapse by `location {} {}`: allow the admin API from private ranges only (`allow 10.0.0.0/8; ... deny all;`)", l.modifier, l.name),
                        &l.md,
                    ));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::Tree;

    fn tree_from(files: &[(&str, &str)]) -> Tree {
        Tree::from_literal(files)
    }

    fn codes(conf: &str) -> Vec<String> {
        let t = tree_from(&[("nginx/nginx.conf", conf)]);
        check_static(&t).into_iter().map(|d| d.code).collect()
    }

    fn example(text: &str) -> Vec<(String, usize)> {
        let block = crate::book::Block {
            file: "src/x.md".into(),
            fence_line: 10,
            lang: "nginx".into(),
            attrs: Default::default(),
            kind: crate::book::BlockKind::Example,
            text: text.into(),
        };
        check_example(&block)
            .into_iter()
            .map(|d| (d.code, d.line))
            .collect()
    }

    #[test]
    fn examples() {
        assert_eq!(example("location /x {\n    proxy_pass http://u;\n}\n"), []);
        assert_eq!(
            example("upstream u {\n    hash $x consistent;\n    server unix:/a.sock;\n}\n"),
            []
        );
        assert_eq!(
            example("location /x {\n    proxy_pas http://u;\n}\n"),
            [("nginx::directive".to_string(), 12)]
        );
        assert_eq!(
            example("location ~ ( {\n    return 200;\n}\n"),
            [("nginx::bad-regex".to_string(), 11)]
        );
        assert_eq!(
            example("location /x {\n    return 200;\n"),
            [("nginx::syntax".to_string(), 12)]
        );
        assert_eq!(example("hash;\n"), [("nginx::directive".to_string(), 11)]);
    }

    #[test]
    fn clean() {
        let c = codes(
            "events {} http { map $request_uri $r { default x; ~^/(?<n>a) $n; }
             upstream u { hash $r consistent; server unix:/a.sock; }
             server { listen 80; location / { allow 10.0.0.0/8; deny all; set $z \"$r$n$arg_x\"; proxy_pass http://u; } } }",
        );
        assert_eq!(c, Vec::<String>::new());
    }

    #[test]
    fn findings() {
        assert_eq!(
            codes(
                "events {} http { server { location / { proxy_pass http://u; add_header X $nope; } } upstream u { server unix:/a.sock; } }"
            ),
            ["nginx::admin-public", "nginx::undefined-variable"]
        );
        assert!(codes("events {} http { server { location / { deny all; proxy_pass http://u/; } } upstream u { server unix:/a.sock; } }").contains(&"nginx::proxy-pass-uri".to_string()));
        assert_eq!(
            codes("events {} http { server { location / { deny all; proxy_pass http://v; } } }"),
            ["nginx::unknown-upstream"]
        );
        assert_eq!(
            codes(
                "events {} http { server { location / { allow 10.0.0.0/8; allow 1.2.3.0/24; deny all; return 200; } } }"
            ),
            ["nginx::admin-public"]
        );
        assert_eq!(
            codes(
                "events {} http { server { location / { allow 10.1.0.0/16; allow fd00::/8; deny all; return 200; } } }"
            ),
            Vec::<String>::new()
        );
        assert_eq!(
            codes(
                "events {} http { server { location /x { deny all; } location / { return 404; } } }"
            ),
            ["nginx::location-no-action"]
        );
        assert_eq!(
            codes("events {} http { server { return 404; location / { return 200; } } }"),
            ["nginx::server-return-shadows"]
        );
        assert_eq!(
            codes("events {} http { server { location ~ ( { return 200; } } }"),
            ["nginx::bad-regex"]
        );
        assert_eq!(
            codes("events {} http { server { listen 443 ssl; location / { return 200; } } }"),
            ["nginx::weak-tls"]
        );
        assert_eq!(
            codes(
                "events {} http { ssl_protocols TLSv1.1 TLSv1.2; server { location / { return 200; } } }"
            ),
            ["nginx::weak-tls"]
        );
        assert_eq!(
            codes("events {} http { server { location / { return 200; } } include missing.conf; }"),
            ["nginx::include-missing"]
        );
        assert_eq!(
            codes(
                "events {} http { map $uri $x { a \"b\" c; } server { location / { return 200 $x; } } }"
            ),
            ["nginx::directive"]
        );
        assert_eq!(
            codes("events {} http { server { location / { retrun 200; } } }"),
            ["nginx::directive"]
        );
    }
}
