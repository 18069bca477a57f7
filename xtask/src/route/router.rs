//! The routing model built from the nginx configuration, and request evaluation.
//!
//! [`Router::from_tree`] reads `server`, `location` (nested), `map`, `set`, `return`,
//! `rewrite`, `allow`/`deny`, `proxy_pass` and `upstream` blocks. [`Router::route`] then does what
//! nginx does with one request, phase by phase: server rewrite (`set`, `return`), location
//! selection on the normalised `$uri` (nginx's `ngx_http_core_find_location`), location
//! rewrite, access, and the proxy's upstream choice (round robin or `least_conn` reported as
//! "any of"; `hash` and `hash … consistent` computed).

use super::ketama::{self, Peer, Ring};
use super::uri::{self, Request};
use crate::diagnostics::{Diagnostic, MdLoc};
use crate::nginx::ast::{Directive, location_args};
use crate::nginx::config::{self, Config};
use crate::nginx::pcre::Rx;
use crate::nginx::vars::{Complex, Part};
use crate::tree::Tree;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

/// The client address assumed when a request does not say `from ADDR` (TEST-NET-2: public).
pub const DEFAULT_CLIENT: &str = "198.51.100.7";

/// Where a location is written: Markdown file and line, modifier and pattern.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LocRef {
    pub file: String,
    pub line: usize,
    /// `=`, `^~`, `~`, `~*` or `` (plain prefix).
    pub modifier: String,
    pub pattern: String,
}

/// What nginx does with one request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outcome {
    pub method: String,
    pub uri: String,
    /// The normalised `$uri` locations were matched against.
    pub path: String,
    pub location: Option<LocRef>,
    pub upstream: Option<String>,
    /// The chosen `server` entry (None when the balancer does not decide by request).
    pub server: Option<String>,
    /// Every server the request may go to (one when the choice is determined).
    pub servers: Vec<String>,
    /// `hash consistent`, `hash`, `round robin`, `least_conn`, `ip_hash`, `random`, or `single`.
    pub balance: Option<String>,
    /// The evaluated hash key, for hash balancers.
    pub hash_key: Option<String>,
    /// The status of a `return`, a `deny` (403), a 301 auto-redirect, or 400 for a bad URI.
    pub status: Option<u16>,
    /// The redirect target or `return` text.
    pub text: Option<String>,
    /// Non-built-in variables (map, set, regex captures) evaluated for this request.
    pub vars: BTreeMap<String, String>,
    /// Anything the simulator could not follow (e.g. `rewrite … last`).
    pub notes: Vec<String>,
    /// Index of the location in [`Router::locations`] (not serialised).
    #[serde(skip)]
    pub location_id: Option<usize>,
}

#[derive(Debug, Clone)]
enum Action {
    Set(String, Complex),
    Return(u16, Option<Complex>),
    Rewrite(Rx, String, Option<String>),
    Other(String),
}

#[derive(Debug, Clone)]
struct Access {
    allow: bool,
    net: Option<(IpAddr, u8)>, // None = all
}

#[derive(Debug, Clone, Default)]
struct Level {
    exact: Vec<usize>,
    pfx: Vec<usize>,
    regex: Vec<usize>,
}

/// One `location` block.
#[derive(Debug, Clone)]
pub struct Location {
    pub modifier: String,
    pub name: String,
    pub md: MdLoc,
    pub file: String,
    pub line: usize,
    pub parent: Option<usize>,
    /// The upstream or address its `proxy_pass` names (raw argument), if any.
    pub proxy_pass: Option<String>,
    pub has_return: bool,
    re: Option<Rx>,
    children: Level,
    actions: Vec<Action>,
    access: Vec<Access>,
    auto_redirect: bool,
}

impl Location {
    pub fn loc_ref(&self) -> LocRef {
        LocRef {
            file: self.md.file.clone(),
            line: self.md.line,
            modifier: self.modifier.clone(),
            pattern: self.name.clone(),
        }
    }

    pub fn regex(&self) -> Option<&Rx> {
        self.re.as_ref()
    }

    /// The networks its effective `allow` rules admit (`None` = `allow all`).
    pub fn allowed(&self) -> Vec<Option<(IpAddr, u8)>> {
        self.access
            .iter()
            .filter(|a| a.allow)
            .map(|a| a.net)
            .collect()
    }
}

/// Whether a network lies inside the private, loopback or link-local ranges.
pub fn is_private(net: Option<(IpAddr, u8)>) -> bool {
    const V4: &[(&str, u8)] = &[
        ("10.0.0.0", 8),
        ("172.16.0.0", 12),
        ("192.168.0.0", 16),
        ("127.0.0.0", 8),
        ("169.254.0.0", 16),
    ];
    const V6: &[(&str, u8)] = &[("::1", 128), ("fc00::", 7), ("fe80::", 10)];
    let Some((ip, bits)) = net else { return false };
    let ranges = if ip.is_ipv4() { V4 } else { V6 };
    ranges
        .iter()
        .any(|(r, b)| bits >= *b && r.parse().is_ok_and(|r: IpAddr| in_net(ip, (r, *b))))
}

#[derive(Debug, Clone)]
struct Server {
    default: bool,
    level: Level,
    actions: Vec<Action>,
    access: Vec<Access>,
}

#[derive(Debug, Clone)]
struct Map {
    /// The `map` directive (for the cycle diagnostic).
    at: MdLoc,
    source: Complex,
    exact: HashMap<Vec<u8>, Complex>,
    regexes: Vec<(Rx, Complex)>,
    default: Complex,
}

#[derive(Debug, Clone)]
enum Balance {
    RoundRobin,
    LeastConn,
    IpHash,
    Random,
    Hash { key: Complex, consistent: bool },
}

/// One `upstream` block.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub name: String,
    pub md: MdLoc,
    pub peers: Vec<Peer>,
    /// Markdown location of each `server` line.
    pub peer_md: Vec<MdLoc>,
    balance: Balance,
    ring: Option<Ring>,
}

/// The routing model of one nginx configuration.
#[derive(Debug, Clone)]
pub struct Router {
    servers: Vec<Server>,
    pub locations: Vec<Location>,
    maps: HashMap<String, Map>,
    pub upstreams: BTreeMap<String, Upstream>,
}

fn md(tree: &Tree, d: &Directive) -> MdLoc {
    config::md(tree, &d.file, d.line)
}

fn parse_access(d: &Directive) -> Result<Access, String> {
    let a = d.arg(0).unwrap_or("");
    let allow = d.name == "allow";
    if a == "all" {
        return Ok(Access { allow, net: None });
    }
    let (addr, bits) = match a.split_once('/') {
        Some((x, b)) => (
            x,
            Some(
                b.parse::<u8>()
                    .map_err(|_| format!("invalid mask in \"{a}\""))?,
            ),
        ),
        None => (a, None),
    };
    let ip: IpAddr = addr
        .parse()
        .map_err(|_| format!("invalid address \"{a}\""))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let bits = bits.unwrap_or(max);
    if bits > max {
        return Err(format!("invalid mask in \"{a}\""));
    }
    Ok(Access {
        allow,
        net: Some((ip, bits)),
    })
}

fn in_net(ip: IpAddr, (net, bits): (IpAddr, u8)) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let m = if bits == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(bits))
            };
            u32::from(a) & m == u32::from(n) & m
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let m = if bits == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(bits))
            };
            u128::from(a) & m == u128::from(n) & m
        }
        _ => false,
    }
}

struct Builder<'t> {
    tree: &'t Tree,
    diags: Vec<Diagnostic>,
    locs: Vec<Location>,
}

impl Builder<'_> {
    fn err(&mut self, code: &str, msg: impl Into<String>, d: &Directive) {
        let at = md(self.tree, d);
        self.diags
            .push(Diagnostic::error(code, msg, &at).with_note(format!("in {}:{}", d.file, d.line)));
    }

    fn complex(&mut self, s: &str, d: &Directive) -> Complex {
        match Complex::parse(s) {
            Ok(c) => c,
            Err(e) => {
                self.err("nginx::bad-value", e, d);
                Complex::default()
            }
        }
    }

    fn rx(&mut self, pat: &str, caseless: bool, d: &Directive) -> Option<Rx> {
        match Rx::new(pat, caseless) {
            Ok(r) => Some(r),
            Err(e) => {
                self.err(
                    "nginx::bad-regex",
                    format!("`{pat}` is not a valid PCRE regex: {e}"),
                    d,
                );
                None
            }
        }
    }

    fn action(&mut self, d: &Directive) -> Option<Action> {
        match d.name.as_str() {
            "set" if d.args.len() == 2 => {
                let v = d.args[0]
                    .text
                    .strip_prefix('$')
                    .unwrap_or(&d.args[0].text)
                    .to_ascii_lowercase();
                Some(Action::Set(v, self.complex(&d.args[1].text.clone(), d)))
            }
            "return" => {
                let a0 = d.arg(0).unwrap_or("");
                match a0.parse::<u16>() {
                    Ok(code) if code <= 999 => {
                        let text = d.arg(1).map(str::to_string);
                        Some(Action::Return(code, text.map(|t| self.complex(&t, d))))
                    }
                    _ => Some(Action::Return(302, Some(self.complex(a0, d)))),
                }
            }
            "rewrite" => {
                let re = self.rx(d.arg(0).unwrap_or(""), false, d)?;
                Some(Action::Rewrite(
                    re,
                    d.arg(1).unwrap_or("").into(),
                    d.arg(2).map(String::from),
                ))
            }
            "if" | "break" => Some(Action::Other(d.display())),
            _ => None,
        }
    }

    fn level(
        &mut self,
        dirs: &[Directive],
        parent: Option<usize>,
        inherited: &[Access],
    ) -> (Level, Vec<Action>, Vec<Access>) {
        let mut access = Vec::new();
        for d in dirs {
            if d.name == "allow" || d.name == "deny" {
                match parse_access(d) {
                    Ok(a) => access.push(a),
                    Err(e) => self.err("nginx::bad-address", e, d),
                }
            }
        }
        let access = if access.is_empty() {
            inherited.to_vec()
        } else {
            access
        };
        let mut actions = Vec::new();
        let mut level = Level::default();
        let mut seen: Vec<(String, String)> = Vec::new();
        for d in dirs {
            if let Some(a) = self.action(d) {
                actions.push(a);
            }
            if d.name != "location" {
                continue;
            }
            let (modifier, name) = match location_args(d) {
                Ok(x) => x,
                Err(e) => {
                    self.err("nginx::bad-location", e, d);
                    continue;
                }
            };
            if modifier == "@" {
                if parent.is_some() {
                    self.err(
                        "nginx::bad-location",
                        format!("named location \"{name}\" can be on the server level only"),
                        d,
                    );
                }
                continue;
            }
            if let Some(p) = parent {
                let pl = &self.locs[p];
                if pl.modifier == "=" {
                    self.err(
                        "nginx::bad-location",
                        format!(
                            "location \"{name}\" cannot be inside the exact location \"{}\"",
                            pl.name
                        ),
                        d,
                    );
                    continue;
                }
                let pname = pl.name.clone();
                if pl.re.is_none()
                    && !matches!(modifier.as_str(), "~" | "~*")
                    && !name.starts_with(&pname)
                {
                    self.err(
                        "nginx::bad-location",
                        format!("location \"{name}\" is outside location \"{pname}\""),
                        d,
                    );
                    continue;
                }
            }
            // nginx: two exact locations, or two prefix locations (plain or `^~`), with one name
            // are a `duplicate location`; regexes are never duplicates.
            let kind = match modifier.as_str() {
                "=" => Some("="),
                "~" | "~*" => None,
                _ => Some(""),
            };
            if let Some(k) = kind {
                let key = (k.to_string(), name.clone());
                if seen.contains(&key) {
                    self.err(
                        "nginx::duplicate-location",
                        format!("duplicate location \"{name}\""),
                        d,
                    );
                    continue;
                }
                seen.push(key);
            }
            let re = if matches!(modifier.as_str(), "~" | "~*") {
                self.rx(&name, modifier == "~*", d)
            } else {
                None
            };
            if matches!(modifier.as_str(), "~" | "~*") && re.is_none() {
                continue;
            }
            let proxy_pass = d
                .children()
                .iter()
                .find(|c| c.name == "proxy_pass")
                .and_then(|c| c.arg(0).map(String::from));
            let has_return = d.children().iter().any(|c| c.name == "return");
            let auto_redirect = proxy_pass.is_some()
                && name.ends_with('/')
                && !matches!(modifier.as_str(), "~" | "~*");
            let id = self.locs.len();
            self.locs.push(Location {
                modifier: modifier.clone(),
                name,
                md: md(self.tree, d),
                file: d.file.clone(),
                line: d.line,
                parent,
                proxy_pass,
                has_return,
                re,
                children: Level::default(),
                actions: Vec::new(),
                access: Vec::new(),
                auto_redirect,
            });
            let (children, acts, acc) = self.level(d.children(), Some(id), &access);
            let l = &mut self.locs[id];
            l.children = children;
            l.actions = acts;
            l.access = acc;
            match modifier.as_str() {
                "=" => level.exact.push(id),
                "~" | "~*" => level.regex.push(id),
                _ => level.pfx.push(id),
            }
        }
        (level, actions, access)
    }
}

impl Router {
    /// Builds the routing model of the tree's nginx configuration.
    pub fn from_tree(tree: &Tree) -> Result<Router, Vec<Diagnostic>> {
        let cfg = config::load(tree)?;
        Router::from_config(tree, &cfg)
    }

    pub fn from_config(tree: &Tree, cfg: &Config) -> Result<Router, Vec<Diagnostic>> {
        let mut b = Builder {
            tree,
            diags: Vec::new(),
            locs: Vec::new(),
        };
        let mut servers = Vec::new();
        let mut maps = HashMap::new();
        let mut upstreams = BTreeMap::new();
        let Some(http) = cfg.directives.iter().find(|d| d.name == "http") else {
            return Err(vec![Diagnostic::error(
                "nginx::no-http",
                "nginx.conf has no `http` block",
                &config::md(tree, &cfg.root, 1),
            )]);
        };
        for d in http.children() {
            match d.name.as_str() {
                "server" => {
                    let default = d.children().iter().any(|c| {
                        c.name == "listen"
                            && c.args
                                .iter()
                                .any(|a| a.text == "default_server" || a.text == "default")
                    });
                    let (level, actions, access) = b.level(d.children(), None, &[]);
                    servers.push(Server {
                        default,
                        level,
                        actions,
                        access,
                    });
                }
                "map" => {
                    let (Some(src), Some(var)) = (d.arg(0), d.arg(1)) else {
                        continue;
                    };
                    let source = b.complex(src, d);
                    let name = var.strip_prefix('$').unwrap_or(var).to_ascii_lowercase();
                    let mut m = Map {
                        at: md(tree, d),
                        source,
                        exact: HashMap::new(),
                        regexes: Vec::new(),
                        default: Complex::default(),
                    };
                    for e in d.children() {
                        let Some(val) = e.arg(0) else {
                            if !matches!(e.name.as_str(), "hostnames" | "volatile") {
                                b.err(
                                    "nginx::bad-map",
                                    format!("map entry `{}` has no value", e.name),
                                    e,
                                );
                            }
                            continue;
                        };
                        let value = b.complex(val, e);
                        let key = e.name.as_str();
                        if key == "default" {
                            m.default = value;
                        } else if key == "include" {
                            continue;
                        } else if let Some(p) = key.strip_prefix("~*") {
                            if let Some(r) = b.rx(p, true, e) {
                                m.regexes.push((r, value));
                            }
                        } else if let Some(p) = key.strip_prefix('~') {
                            if let Some(r) = b.rx(p, false, e) {
                                m.regexes.push((r, value));
                            }
                        } else {
                            let k = key.strip_prefix('\\').unwrap_or(key);
                            m.exact.insert(k.to_ascii_lowercase().into_bytes(), value);
                        }
                    }
                    maps.insert(name, m);
                }
                "upstream" => {
                    let Some(name) = d.arg(0) else { continue };
                    let mut peers = Vec::new();
                    let mut peer_md = Vec::new();
                    let mut balance = Balance::RoundRobin;
                    for e in d.children() {
                        match e.name.as_str() {
                            "server" => {
                                let Some(addr) = e.arg(0) else { continue };
                                let mut weight = 1;
                                let mut down = false;
                                for a in &e.args[1..] {
                                    if let Some(w) = a.text.strip_prefix("weight=") {
                                        match w.parse::<u32>() {
                                            Ok(n) if (1..=10_000).contains(&n) => weight = n,
                                            Ok(n) if n > 10_000 => {
                                                b.err("nginx::bad-weight", format!("weight={n} is more than the simulator models (10000)"), e);
                                            }
                                            _ => b.err(
                                                "nginx::bad-weight",
                                                format!("invalid parameter \"{}\"", a.text),
                                                e,
                                            ),
                                        }
                                    } else if a.text == "down" {
                                        down = true;
                                    } else if a.text == "backup" {
                                        // Backup peers are not in the hash ring (nginx refuses
                                        // `backup` with hash); round robin uses them last.
                                        down = true;
                                    }
                                }
                                peers.push(Peer {
                                    name: addr.to_string(),
                                    weight,
                                    down,
                                });
                                peer_md.push(md(tree, e));
                            }
                            "hash" => {
                                let key = b.complex(e.arg(0).unwrap_or(""), e);
                                balance = Balance::Hash {
                                    key,
                                    consistent: e.arg(1) == Some("consistent"),
                                };
                            }
                            "least_conn" => balance = Balance::LeastConn,
                            "ip_hash" => balance = Balance::IpHash,
                            "random" => balance = Balance::Random,
                            _ => {}
                        }
                    }
                    let ring = matches!(
                        balance,
                        Balance::Hash {
                            consistent: true,
                            ..
                        }
                    )
                    .then(|| Ring::new(&peers));
                    upstreams.insert(
                        name.to_string(),
                        Upstream {
                            name: name.to_string(),
                            md: md(tree, d),
                            peers,
                            peer_md,
                            balance,
                            ring,
                        },
                    );
                }
                _ => {}
            }
        }
        b.diags.extend(map_cycles(&maps));
        if servers.is_empty() {
            b.diags.push(Diagnostic::error(
                "nginx::no-server",
                "the `http` block has no `server`",
                &md(tree, http),
            ));
        }
        if b.diags.is_empty() {
            Ok(Router {
                servers,
                locations: b.locs,
                maps,
                upstreams,
            })
        } else {
            Err(b.diags)
        }
    }

    /// Routes a request from the default (public) client address.
    pub fn route(&self, method: &str, uri: &str) -> Outcome {
        self.route_from(method, uri, DEFAULT_CLIENT)
    }

    /// Routes a request from client address `client`.
    pub fn route_from(&self, method: &str, raw: &str, client: &str) -> Outcome {
        let mut out = Outcome {
            method: method.to_string(),
            uri: raw.to_string(),
            path: String::new(),
            location: None,
            upstream: None,
            server: None,
            servers: Vec::new(),
            balance: None,
            hash_key: None,
            status: None,
            text: None,
            vars: BTreeMap::new(),
            notes: Vec::new(),
            location_id: None,
        };
        // nginx's request-line parser takes a method of A-Z, `_` and `-` only; anything else
        // (`get`) is a 400 before any location is looked at.
        if method.is_empty()
            || !method
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b == b'_' || b == b'-')
        {
            out.status = Some(400);
            out.notes.push(format!(
                "nginx takes methods of capital letters, `_` and `-` only: `{method}` is a bad request"
            ));
            return out;
        }
        let req = match uri::parse(raw) {
            Ok(r) => r,
            Err(e) => {
                out.status = Some(400);
                out.notes.push(e);
                return out;
            }
        };
        out.path = req.path_str();
        let server = self
            .servers
            .iter()
            .find(|s| s.default)
            .or(self.servers.first());
        let Some(server) = server else { return out };
        let mut cx = Ctx {
            r: self,
            req: &req,
            method,
            client,
            vars: HashMap::new(),
            caps: Vec::new(),
            used: BTreeMap::new(),
            failed: None,
            evaluating: Vec::new(),
        };

        // Server rewrite phase.
        if self.run_actions(&server.actions, &mut cx, &mut out) {
            out.vars = cx.used;
            return out;
        }
        // Find location.
        let (status, loc) = self.find(&server.level, &req.path, &mut cx);
        if status == Found::Failed {
            out.status = Some(500);
            out.notes.extend(cx.failed.take());
            out.vars = cx.used;
            return out;
        }
        let Some(id) = loc else {
            out.notes
                .push("no location matches: the server's own configuration serves it".into());
            out.vars = cx.used;
            return out;
        };
        let l = &self.locations[id];
        out.location = Some(l.loc_ref());
        out.location_id = Some(id);
        if status == Found::Redirect {
            out.status = Some(301);
            let mut to = l.name.clone();
            if let Some(a) = &req.args {
                to = format!("{to}?{a}");
            }
            out.text = Some(to);
            out.vars = cx.used;
            return out;
        }
        // Location rewrite phase.
        if self.run_actions(&l.actions, &mut cx, &mut out) {
            out.vars = cx.used;
            return out;
        }
        // Access phase.
        let access = if l.access.is_empty() {
            &server.access
        } else {
            &l.access
        };
        // An IPv4-mapped IPv6 client (`::ffff:10.0.0.1`) meets the IPv4 rules when there are any
        // (`allow`/`deny all` count), as ngx_http_access_module does.
        let v4_rules = access
            .iter()
            .any(|a| a.net.is_none_or(|(n, _)| n.is_ipv4()));
        let ip: Option<IpAddr> = client.parse().ok().map(|ip| match ip {
            IpAddr::V6(v6) if v4_rules => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            ip => ip,
        });
        for a in access {
            let hit = match (a.net, ip) {
                (None, _) => true,
                (Some(n), Some(ip)) => in_net(ip, n),
                (Some(_), None) => false,
            };
            if hit {
                if !a.allow {
                    out.status = Some(403);
                    out.vars = cx.used;
                    return out;
                }
                break;
            }
        }
        // Content: proxy_pass.
        if let Some(pp) = &l.proxy_pass {
            let target = match Complex::parse(pp) {
                Ok(c) => cx.eval(&c),
                Err(_) => pp.clone(),
            };
            let rest = target.split_once("://").map_or(target.as_str(), |(_, r)| r);
            if let Some(sock) = rest.strip_prefix("unix:") {
                let path = sock.split(':').next().unwrap_or(sock);
                let s = format!("unix:{path}");
                out.server = Some(s.clone());
                out.servers = vec![s];
                out.balance = Some("single".into());
            } else {
                let host = rest.split('/').next().unwrap_or(rest);
                if let Some(up) = self.upstreams.get(host) {
                    out.upstream = Some(up.name.clone());
                    self.choose(up, &mut cx, &mut out);
                } else {
                    out.server = Some(host.to_string());
                    out.servers = vec![host.to_string()];
                    out.balance = Some("single".into());
                }
            }
        } else if !l.has_return {
            out.notes
                .push("the location neither proxies nor returns".into());
        }
        out.vars = cx.used;
        out
    }

    fn choose(&self, up: &Upstream, cx: &mut Ctx<'_>, out: &mut Outcome) {
        let live: Vec<String> = up
            .peers
            .iter()
            .filter(|p| !p.down)
            .map(|p| p.name.clone())
            .collect();
        out.servers = live.clone();
        if live.len() == 1 {
            out.server = Some(live[0].clone());
            out.balance = Some("single".into());
            return;
        }
        match &up.balance {
            Balance::Hash { key, consistent } => {
                let k = cx.eval(key);
                out.balance = Some(
                    if *consistent {
                        "hash consistent"
                    } else {
                        "hash"
                    }
                    .into(),
                );
                out.hash_key = Some(k.clone());
                let pick = if k.is_empty() {
                    out.notes
                        .push("the hash key is empty: nginx falls back to round robin".into());
                    None
                } else if *consistent {
                    up.ring
                        .as_ref()
                        .and_then(|r| r.pick(&up.peers, k.as_bytes()))
                } else {
                    ketama::plain_pick(&up.peers, k.as_bytes())
                };
                if let Some(i) = pick {
                    out.server = Some(up.peers[i].name.clone());
                    out.servers = vec![up.peers[i].name.clone()];
                }
            }
            Balance::RoundRobin => out.balance = Some("round robin".into()),
            Balance::LeastConn => out.balance = Some("least_conn".into()),
            Balance::IpHash => out.balance = Some("ip_hash".into()),
            Balance::Random => out.balance = Some("random".into()),
        }
    }

    /// Runs rewrite-module directives; true when the request is finished (return).
    fn run_actions(&self, actions: &[Action], cx: &mut Ctx<'_>, out: &mut Outcome) -> bool {
        for a in actions {
            match a {
                Action::Set(v, c) => {
                    let val = cx.eval(c);
                    cx.used.insert(v.clone(), val.clone());
                    cx.vars.insert(v.clone(), val);
                }
                Action::Return(code, text) => {
                    out.status = Some(*code);
                    out.text = text.as_ref().map(|t| cx.eval(t));
                    return true;
                }
                Action::Rewrite(re, to, flag) => {
                    let hit = match re.try_is_match(&cx.req.path) {
                        Ok(hit) => hit,
                        Err(e) => {
                            out.status = Some(500);
                            out.notes.push(regex_failed(&re.pattern, &e));
                            return true;
                        }
                    };
                    if hit {
                        out.notes.push(format!(
                            "`rewrite {} {to}{}` matches: the simulator does not follow rewrites",
                            re.pattern,
                            flag.as_ref().map(|f| format!(" {f}")).unwrap_or_default()
                        ));
                    }
                }
                Action::Other(s) => out.notes.push(format!("`{s}` is not simulated")),
            }
        }
        false
    }

    /// `ngx_http_core_find_location` over one level.
    fn find(&self, level: &Level, u: &[u8], cx: &mut Ctx<'_>) -> (Found, Option<usize>) {
        for &i in &level.exact {
            if self.locations[i].name.as_bytes() == u {
                return (Found::Ok, Some(i));
            }
        }
        let pfx_equal = level
            .pfx
            .iter()
            .any(|&i| self.locations[i].name.as_bytes() == u);
        if !pfx_equal {
            for &i in level.exact.iter().chain(&level.pfx) {
                let l = &self.locations[i];
                if l.auto_redirect
                    && l.name.len() == u.len() + 1
                    && l.name.as_bytes().starts_with(u)
                {
                    return (Found::Redirect, Some(i));
                }
            }
        }
        let p = level
            .pfx
            .iter()
            .copied()
            .filter(|&i| u.starts_with(self.locations[i].name.as_bytes()))
            .max_by_key(|&i| self.locations[i].name.len());
        let mut cur = p;
        let mut noregex = false;
        if let Some(p) = p {
            noregex = self.locations[p].modifier == "^~";
            let (rc, n) = self.find(&self.locations[p].children, u, cx);
            if matches!(rc, Found::Ok | Found::Redirect | Found::Failed) {
                return (rc, n);
            }
            if n.is_some() {
                cur = n;
            }
        }
        if !noregex {
            for &r in &level.regex {
                let l = &self.locations[r];
                let Some(re) = l.re.as_ref() else { continue };
                // Most regexes do not match: a plain match first (no captures to allocate).
                match re.try_is_match(u) {
                    Ok(false) => continue,
                    Ok(true) => {}
                    Err(e) => {
                        cx.failed = Some(regex_failed(&re.pattern, &e));
                        return (Found::Failed, None);
                    }
                }
                let caps = match re.try_captures(u) {
                    Ok(Some(caps)) => caps,
                    Ok(None) => continue,
                    Err(e) => {
                        cx.failed = Some(regex_failed(&re.pattern, &e));
                        return (Found::Failed, None);
                    }
                };
                cx.set_caps(caps);
                let (rc, n) = self.find(&l.children, u, cx);
                if rc == Found::Failed {
                    return (rc, n);
                }
                return (Found::Ok, n.or(Some(r)));
            }
        }
        (
            if cur.is_some() {
                Found::Again
            } else {
                Found::Declined
            },
            cur,
        )
    }

    /// Locations whose `location` line no request can select, decided structurally:
    /// a prefix location equal to a sibling exact location's name where both exist is fine; a
    /// regex location after a sibling regex that matches everything it matches cannot be
    /// decided statically, so [`crate::route::check_book`] reports locations no sample reached.
    pub fn location_ids(&self) -> std::ops::Range<usize> {
        0..self.locations.len()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Found {
    Ok,
    Redirect,
    Again,
    Declined,
    /// A regex could not be matched (PCRE2's match limit): nginx answers 500.
    Failed,
}

/// The note of a regex nginx fails to match (and answers 500 for).
fn regex_failed(pattern: &str, e: &str) -> String {
    format!(
        "matching `{}` fails ({e}): nginx logs \"pcre2_match() failed\" and answers 500",
        crate::diagnostics::clip(pattern)
    )
}

/// Per-request variable state.
struct Ctx<'a> {
    r: &'a Router,
    req: &'a Request,
    method: &'a str,
    client: &'a str,
    vars: HashMap<String, String>,
    caps: Vec<Option<Vec<u8>>>,
    used: BTreeMap<String, String>,
    /// Why location selection failed ([`Found::Failed`]).
    failed: Option<String>,
    /// The maps being evaluated, innermost last: a name already here is a cycle, and more than
    /// [`VARIABLE_DEPTH`] of them is what nginx also calls one.
    evaluating: Vec<String>,
}

/// nginx's `ngx_http_variable_depth`: how deeply variables may evaluate variables.
const VARIABLE_DEPTH: usize = 100;

/// The `map`s that read themselves, directly or through other maps: nginx accepts them
/// (`nginx -t` passes) but every request that reads one logs "cycle while evaluating variable"
/// and gets an empty value. Found without recursion, so any chain length is safe.
fn map_cycles(maps: &HashMap<String, Map>) -> Vec<Diagnostic> {
    let deps = |m: &Map| -> Vec<String> {
        let mut v: Vec<String> = std::iter::once(&m.source)
            .chain(m.exact.values())
            .chain(m.regexes.iter().map(|(_, c)| c))
            .chain(std::iter::once(&m.default))
            .flat_map(Complex::vars)
            .filter(|v| maps.contains_key(*v))
            .map(String::from)
            .collect();
        v.sort();
        v.dedup();
        v
    };
    // 0 unseen, 1 on the current path, 2 done.
    let mut state: HashMap<&str, u8> = HashMap::new();
    let mut names: Vec<&String> = maps.keys().collect();
    names.sort();
    let mut diags = Vec::new();
    for start in names {
        if state.get(start.as_str()).copied().unwrap_or(0) != 0 {
            continue;
        }
        // (map name, its dependencies, next index)
        let mut stack: Vec<(&str, Vec<String>, usize)> =
            vec![(start.as_str(), deps(&maps[start]), 0)];
        state.insert(start.as_str(), 1);
        while let Some((name, ds, i)) = stack.last_mut() {
            if let Some(next) = ds.get(*i).cloned() {
                *i += 1;
                let (key, m) = maps.get_key_value(&next).expect("deps are maps");
                match state.get(key.as_str()).copied().unwrap_or(0) {
                    0 => {
                        state.insert(key.as_str(), 1);
                        stack.push((key.as_str(), deps(m), 0));
                    }
                    1 => {
                        let from = stack.iter().position(|(n, _, _)| *n == key).unwrap_or(0);
                        let cycle: Vec<String> = stack[from..]
                            .iter()
                            .map(|(n, _, _)| format!("${n}"))
                            .chain(std::iter::once(format!("${key}")))
                            .collect();
                        diags.push(Diagnostic::error(
                            "nginx::variable-cycle",
                            format!(
                                "the map of ${key} reads itself ({}): nginx -t accepts it, but every request that uses it logs \"cycle while evaluating variable\" and gets an empty value",
                                cycle.join(" -> ")
                            ),
                            &m.at,
                        ));
                    }
                    _ => {}
                }
            } else {
                state.insert(name, 2);
                stack.pop();
            }
        }
    }
    diags
}

impl Ctx<'_> {
    fn set_caps(&mut self, caps: crate::nginx::pcre::Caps) {
        for (n, v) in &caps.named {
            let v = String::from_utf8_lossy(v).into_owned();
            self.used.insert(n.to_ascii_lowercase(), v.clone());
            self.vars.insert(n.to_ascii_lowercase(), v);
        }
        self.caps = caps.numbered;
    }

    fn eval(&mut self, c: &Complex) -> String {
        let mut s = String::new();
        for p in &c.parts {
            match p {
                Part::Lit(l) => s.push_str(l),
                Part::Capture(n) => {
                    if let Some(Some(v)) = self.caps.get(*n) {
                        s.push_str(&String::from_utf8_lossy(v));
                    }
                }
                Part::Var(v) => {
                    let val = self.var(v);
                    s.push_str(&val);
                }
            }
        }
        s
    }

    fn var(&mut self, name: &str) -> String {
        if let Some(v) = self.vars.get(name) {
            return v.clone();
        }
        let r = self.r;
        if let Some(m) = r.maps.get(name) {
            if self.evaluating.len() >= VARIABLE_DEPTH || self.evaluating.iter().any(|n| n == name)
            {
                // nginx: "cycle while evaluating variable", and the value is empty.
                return String::new();
            }
            self.evaluating.push(name.to_string());
            let val = self.map_value(m);
            self.evaluating.pop();
            self.used.insert(name.to_string(), val.clone());
            self.vars.insert(name.to_string(), val.clone());
            return val;
        }
        self.builtin(name)
    }

    fn map_value(&mut self, m: &Map) -> String {
        let src = self.eval(&m.source);
        let low = src.to_ascii_lowercase().into_bytes();
        if let Some(v) = m.exact.get(&low) {
            return self.eval(v);
        }
        if !src.is_empty() {
            for (re, v) in &m.regexes {
                if let Some(c) = re.captures(src.as_bytes()) {
                    self.set_caps(c);
                    return self.eval(v);
                }
            }
        }
        self.eval(&m.default)
    }

    fn builtin(&self, name: &str) -> String {
        let req = self.req;
        match name {
            "uri" | "document_uri" => req.path_str(),
            "request_uri" => req.raw.clone(),
            "args" | "query_string" => req.args.clone().unwrap_or_default(),
            "is_args" => {
                if req.args.is_some() {
                    "?".into()
                } else {
                    String::new()
                }
            }
            "request_method" => self.method.to_string(),
            "remote_addr" | "realip_remote_addr" => self.client.to_string(),
            "scheme" => "http".into(),
            "server_port" => "8008".into(),
            "server_protocol" => "HTTP/1.1".into(),
            "host" | "http_host" | "server_name" => crate::extract::EXAMPLE_SERVER_NAME.into(),
            "request" => format!("{} {} HTTP/1.1", self.method, req.raw),
            _ => {
                if let Some(a) = name.strip_prefix("arg_") {
                    uri::arg(req.args.as_deref(), a).unwrap_or("").to_string()
                } else {
                    String::new()
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nginx::tree_from;

    fn router(conf: &str) -> Router {
        Router::from_tree(&tree_from(&[("nginx/nginx.conf", conf)])).unwrap()
    }

    fn loc(r: &Router, uri: &str) -> String {
        r.route("GET", uri)
            .location
            .map(|l| format!("{}{}", l.modifier, l.pattern))
            .unwrap_or_default()
    }

    #[test]
    fn methods_mapped_addresses_and_failed_regexes_as_nginx() {
        let r = router(
            "http { server {
               location / { allow 10.0.0.0/8; deny all; return 200; }
               location /a { allow 10.0.0.0/8; deny all; proxy_pass http://u; }
               location /six { allow fd00::/8; deny all; proxy_pass http://u; }
               location ~ \"^/re(a|aa)*c\" { return 201; }
               location /re { return 202; }
               location /rw { rewrite \"^/rw(a|aa)*c\" /x; return 203; }
             } upstream u { server unix:/s.sock; } }",
        );
        for m in ["get", "Get", "GE T", "G1", ""] {
            assert_eq!(r.route(m, "/").status, Some(400), "{m:?}");
        }
        assert_eq!(r.route_from("G_E-T", "/a", "10.0.0.1").status, None);
        // An IPv4-mapped client meets the IPv4 rules (ngx_http_access_module).
        assert_eq!(r.route_from("GET", "/a", "::ffff:10.0.0.1").status, None);
        assert_eq!(
            r.route_from("GET", "/a", "::ffff:11.0.0.1").status,
            Some(403)
        );
        assert_eq!(r.route_from("GET", "/a", "::1").status, Some(403));
        // PCRE2's match limit: nginx answers 500 (a location, a rewrite).
        let long = format!("/re{}b", "a".repeat(5000));
        let o = r.route("GET", &long);
        assert_eq!(o.status, Some(500), "{:?}", o.notes);
        assert_eq!(r.route("GET", "/reaab").status, Some(202));
        assert_eq!(
            r.route("GET", &format!("/rw{}b", "a".repeat(5000))).status,
            Some(500)
        );
        assert_eq!(r.route("GET", "/rwab").status, Some(203));
    }

    #[test]
    fn map_cycles_are_diagnostics_and_long_chains_do_not_overflow() {
        for conf in [
            "http { map $y $y { default $y; } server { location / { return 200 $y; } } }",
            "http { map $a $b { default $a; } map $b $a { default $b; } server { location / { return 200 $a; } } }",
            "http { map $uri $a { ~x $c; default 1; } map $a $c { default $a; } server { location / { return 200 $a; } } }",
        ] {
            let d = Router::from_tree(&tree_from(&[("nginx/nginx.conf", conf)])).unwrap_err();
            assert!(
                d.iter().any(|d| d.code == "nginx::variable-cycle"),
                "{conf}: {d:?}"
            );
        }
        // 20000 maps, each reading the next: deeper than nginx's variable depth, no cycle.
        let n = 20_000;
        let mut conf = String::from("http {\n");
        for i in 0..n {
            conf.push_str(&format!(
                "map $m{} $m{i} {{ default x$m{}; }}\n",
                i + 1,
                i + 1
            ));
        }
        conf.push_str(&format!("map $uri $m{n} {{ default end; }}\n"));
        conf.push_str("server { location / { return 200 $m0; } }\n}\n");
        let r = router(&conf);
        let o = r.route("GET", "/");
        assert_eq!(o.status, Some(200));
        assert!(
            o.text
                .as_deref()
                .is_some_and(|t| t.len() <= VARIABLE_DEPTH + 1),
            "{:?}",
            o.text.map(|t| t.len())
        );
    }

    #[test]
    fn selection_order() {
        let r = router(
            "http { server {
               location = /x { return 200; }
               location / { return 200; }
               location /a/ { return 200; location ~ b$ { return 200; } }
               location ^~ /s/ { return 200; }
               location ~ ^/a { return 200; }
               location ~* \\.PNG$ { return 200; }
               location /p/ { proxy_pass http://u; }
             } upstream u { server unix:/s.sock; } }",
        );
        assert_eq!(loc(&r, "/x"), "=/x");
        assert_eq!(loc(&r, "/x/"), "/");
        assert_eq!(loc(&r, "/a/zb"), "~b$", "nested regex before outer regexes");
        assert_eq!(loc(&r, "/a/z"), "~^/a", "outer regex beats prefix");
        assert_eq!(loc(&r, "/s/a.png"), "^~/s/");
        assert_eq!(loc(&r, "/t/A.png"), "~*\\.PNG$");
        assert_eq!(loc(&r, "/%61/z"), "~^/a", "percent-decoded");
        let o = r.route("GET", "/p?x=1");
        assert_eq!((o.status, o.text.as_deref()), (Some(301), Some("/p/?x=1")));
        let o = r.route("GET", "/p/q");
        assert_eq!(o.server.as_deref(), Some("unix:/s.sock"));
        assert_eq!(o.upstream.as_deref(), Some("u"));
    }

    #[test]
    fn map_and_hash() {
        let r = router(
            r#"http {
              map $request_uri $room { default ""; "~^/r/(?<rid>[^/?]+)" $rid; }
              map $arg_k $kk { default none; AbC exact; ~^x(.)$ "re$1"; }
              upstream rooms { hash $room consistent; server unix:/a.sock; server unix:/b.sock; server unix:/c.sock; }
              server { location / { set $k2 "$kk-$uri"; proxy_pass http://rooms; } }
            }"#,
        );
        let o = r.route("GET", "/r/!abc:example.com?k=abc");
        assert_eq!(o.vars["room"], "!abc:example.com");
        assert_eq!(o.vars["kk"], "exact");
        assert_eq!(o.vars["k2"], "exact-/r/!abc:example.com");
        assert_eq!(o.hash_key.as_deref(), Some("!abc:example.com"));
        assert_eq!(o.servers.len(), 1);
        assert_eq!(r.route("GET", "/?k=xy").vars["kk"], "rey");
        let o = r.route("GET", "/other");
        assert_eq!(o.server, None);
        assert_eq!(o.servers.len(), 3);
    }

    #[test]
    fn duplicates() {
        let t = |c: &str| {
            Router::from_tree(&tree_from(&[("nginx/nginx.conf", c)]))
                .err()
                .map(|d| d[0].code.clone())
        };
        assert_eq!(
            t("http { server { location = /a { return 200; } location /a { return 200; } } }"),
            None
        );
        assert_eq!(
            t("http { server { location /a { return 200; } location = /a { return 200; } } }"),
            None
        );
        assert_eq!(
            t("http { server { location ~ a { return 200; } location ~ a { return 200; } } }"),
            None
        );
        assert_eq!(
            t("http { server { location /a { return 200; } location ^~ /a { return 200; } } }")
                .as_deref(),
            Some("nginx::duplicate-location")
        );
        assert_eq!(
            t("http { server { location =/a { return 200; } location = /a { return 200; } } }")
                .as_deref(),
            Some("nginx::duplicate-location")
        );
    }

    #[test]
    fn access() {
        let r = router(
            "http { server { location /admin { allow 10.0.0.0/8; deny all; proxy_pass http://127.0.0.1:1; } } }",
        );
        assert_eq!(r.route("GET", "/admin").status, Some(403));
        assert_eq!(r.route_from("GET", "/admin", "10.1.2.3").status, None);
    }

    #[test]
    fn server_return_shadows() {
        let r = router("http { server { return 404; location / { proxy_pass http://x; } } }");
        let o = r.route("GET", "/a");
        assert_eq!((o.status, o.location), (Some(404), None));
    }
}
