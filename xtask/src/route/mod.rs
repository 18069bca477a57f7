//! The routing simulator: what nginx does with a request ([`router`], on [`uri`], nginx's PCRE
//! ([`crate::nginx::pcre`]) and [`ketama`]), which Synapse process the chosen socket belongs to
//! (the deployment model, [`crate::synapse`]) and what it may serve ([`contract`]), and the
//! book's `routes` blocks ([`routes`], [`check`]; [`crosscheck`] runs them through real nginx).

pub mod check;
pub mod contract;
pub mod crosscheck;
pub mod ketama;
pub mod router;
pub mod routes;
pub mod uri;

pub use router::{LocRef, Outcome, Router};

/// One line for people: `GET /x -> location ~ ^/x (src/deployment/nginx.md:40) -> rooms: unix:/sockets/rooms1_http.sock`.
pub fn describe(o: &Outcome) -> String {
    let mut s = format!("{} {}", o.method, o.uri);
    if let Some(l) = &o.location {
        let m = if l.modifier.is_empty() {
            String::new()
        } else {
            format!("{} ", l.modifier)
        };
        s += &format!("\n  location {m}{} ({}:{})", l.pattern, l.file, l.line);
    }
    if let Some(st) = o.status {
        s += &format!("\n  returns {st}");
        if let Some(t) = &o.text {
            s += &format!(" {t}");
        }
    }
    if let Some(u) = &o.upstream {
        s += &format!("\n  upstream {u} ({})", o.balance.as_deref().unwrap_or("?"));
    }
    if let Some(k) = &o.hash_key {
        s += &format!("\n  hash key {k:?}");
    }
    match (&o.server, o.servers.len()) {
        (Some(sv), _) => s += &format!("\n  server {sv}"),
        (None, n) if n > 1 => s += &format!("\n  any of {}", o.servers.join(", ")),
        _ => {}
    }
    for (k, v) in &o.vars {
        s += &format!("\n  ${k} = {v:?}");
    }
    for n in &o.notes {
        s += &format!("\n  note: {n}");
    }
    s
}

pub use check::check_book;
