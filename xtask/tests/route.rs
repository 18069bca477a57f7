//! The routing simulator on fixture books: `check` passes on a good one, fails on a sample that
//! lands on a process that cannot serve it, on shadowed and unreached locations; room affinity;
//! the `route` command's JSON; and no panic on arbitrary input.

use std::path::PathBuf;
use xtask::extract::{self, Options};
use xtask::route::{self, Router};

fn fixture(name: &str) -> PathBuf {
    xtask::project_root().join("tests/fixtures/route").join(name)
}

fn check(name: &str) -> Vec<(String, String, usize)> {
    let book = xtask::book::load(&fixture(name)).expect("fixture book loads");
    let tree = extract::assemble(&book, &Options::default()).expect("fixture tree assembles");
    let mut d = route::check_book(&book, &tree);
    xtask::diagnostics::sort(&mut d);
    d.into_iter().map(|d| (d.code, d.file, d.line)).collect()
}

fn router(name: &str) -> Router {
    let book = xtask::book::load(&fixture(name)).unwrap();
    let tree = extract::assemble(&book, &Options::default()).unwrap();
    Router::from_tree(&tree).unwrap()
}

#[test]
fn good_book_checks_clean() {
    assert_eq!(check("ok"), []);
}

#[test]
fn contract_violation_and_mismatch_fail() {
    assert_eq!(
        check("err-contract"),
        [
            ("route::contract".into(), "src/routes.md".into(), 5),
            ("route::mismatch".into(), "src/routes.md".into(), 11),
        ]
    );
}

#[test]
fn shadowed_and_unreached_locations_fail() {
    assert_eq!(
        check("err-shadowed"),
        [
            ("route::shadowed-location".into(), "src/deploy.md".into(), 110),
            ("route::unreached-location".into(), "src/deploy.md".into(), 113),
            ("route::contract".into(), "src/routes.md".into(), 16),
        ]
    );
}

/// Every request about one room gets the same hash key and the same room worker, whatever the
/// encoding of the room ID and whatever the query string.
#[test]
fn room_affinity() {
    let r = router("ok");
    let reqs = [
        ("PUT", "/_matrix/client/v3/rooms/!abc:example.com/send/m.room.message/t1"),
        ("PUT", "/_matrix/client/v3/rooms/%21abc%3Aexample.com/state/m.room.topic/"),
        ("PUT", "/_matrix/client/v3/rooms/!abc%3aexample.com/state/m.room.member/%40bob%3Aexample.com"),
        ("GET", "/_matrix/client/v3/rooms/!abc:example.com/messages?dir=b&from=t47-123_0_0&limit=20&filter=%7B%22lazy_load_members%22%3Atrue%7D"),
        ("GET", "/_matrix/client/v3/rooms/!abc:example.com/messages?dir=b&from=t5-1_0_0"),
        ("GET", "/_matrix/client/v3/rooms/!abc:example.com/context/%24ev?limit=10"),
        ("GET", "/_matrix/federation/v1/make_join/!abc%3Aexample.com/%40bob%3Aremote.org?ver=10"),
        ("PUT", "/_matrix/federation/v2/send_join/!abc:example.com/%24ev"),
        ("GET", "/_matrix/federation/v1/state_ids/!abc%3Aexample.com?event_id=%24ev"),
        ("GET", "/_matrix/federation/v1/backfill/!abc%3Aexample.com?v=%24old%3Aexample.com&limit=50"),
    ];
    let outs: Vec<_> = reqs.iter().map(|(m, u)| r.route(m, u)).collect();
    for o in &outs {
        assert_eq!(o.upstream.as_deref(), Some("rooms"), "{}", o.uri);
        assert_eq!(o.hash_key.as_deref(), Some("!abc:example.com"), "{}", o.uri);
        assert_eq!(o.server, outs[0].server, "{}", o.uri);
    }
    // Typing for that room goes to the typing writer instead (not a room worker).
    let t = r.route("PUT", "/_matrix/client/v3/rooms/!abc:example.com/typing/@alice:example.com");
    assert_eq!(t.upstream.as_deref(), Some("sync"));
    // Another room may land elsewhere: across 30 rooms, all three workers are used.
    let mut used = std::collections::BTreeSet::new();
    for i in 0..30 {
        used.insert(r.route("GET", &format!("/_matrix/client/v3/rooms/!r{i}:example.com/messages")).server);
    }
    assert_eq!(used.len(), 3);
}

#[test]
fn route_command_json() {
    let out = assert_cmd::Command::cargo_bin("xtask")
        .unwrap()
        .args(["route", "--book"])
        .arg(fixture("ok"))
        .args(["--format", "json", "--method", "PUT", "/_matrix/client/v3/rooms/%21abc%3Aexample.com/typing/%40a%3Aexample.com", "/_matrix/media"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let a = v.as_array().unwrap();
    assert_eq!(a.len(), 2);
    assert_eq!(a[0]["method"], "PUT");
    assert_eq!(a[0]["upstream"], "sync");
    assert_eq!(a[0]["server"], "unix:/sockets/sync1_http.sock");
    assert_eq!(a[0]["location"]["file"], "src/deploy.md");
    assert_eq!(a[0]["location"]["line"], 98);
    assert_eq!(a[0]["location"]["modifier"], "~");
    assert_eq!(a[0]["status"], serde_json::Value::Null);
    assert_eq!(a[1]["status"], 301);
    assert_eq!(a[1]["upstream"], serde_json::Value::Null);
    assert!(a[0]["vars"].is_object());
}

/// xorshift: deterministic pseudo-random bytes without a dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// The parser, the router and the request path never panic, whatever the bytes. Set
/// `XTASK_FUZZ_ITERS` to run it long by hand.
#[test]
fn no_panic_on_arbitrary_input() {
    let iters: usize = std::env::var("XTASK_FUZZ_ITERS").ok().and_then(|s| s.parse().ok()).unwrap_or(1500);
    let book = xtask::book::load(&fixture("ok")).unwrap();
    let tree = extract::assemble(&book, &Options::default()).unwrap();
    let seed = tree.get("nginx/conf.d/synapse.conf").unwrap().content.clone().into_bytes();
    let alphabet = b"{};\"'\\$#~*^=/ \n\tabc()[]?%!:@.0123456789";
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for _ in 0..iters {
        let mut s = seed.clone();
        for _ in 0..(rng.next() % 8 + 1) {
            let i = (rng.next() as usize) % (s.len() + 1);
            match rng.next() % 3 {
                0 if i < s.len() => {
                    s.remove(i);
                }
                1 => s.insert(i, alphabet[(rng.next() as usize) % alphabet.len()]),
                _ => s.insert(i, rng.next() as u8),
            }
        }
        let _ = xtask::nginx::ast::parse("f", &s);
        let text = String::from_utf8_lossy(&s).into_owned();
        let t = xtask::nginx::tree_from(&[("nginx/nginx.conf", "events {}\nhttp { include conf.d/*.conf; }\n"), ("nginx/conf.d/synapse.conf", &text)]);
        let _ = xtask::nginx::lint::check_static(&t);
        if let Ok(r) = Router::from_tree(&t) {
            let mut uri = b"/_matrix/client/v3/rooms/".to_vec();
            for _ in 0..(rng.next() % 12) {
                uri.push(alphabet[(rng.next() as usize) % alphabet.len()]);
            }
            let _ = r.route("GET", &String::from_utf8_lossy(&uri));
        }
    }
}

/// The repository's own book: its nginx configuration lints clean (static checks and, where
/// nginx is installed, `nginx -t`), and `check_book` finds nothing.
#[test]
fn repository_book_nginx_is_clean() {
    let root = xtask::project_root();
    let book = xtask::book::load(&root).unwrap();
    let tree = extract::assemble(&book, &Options::default()).unwrap();
    if xtask::nginx::config::root_file(&tree).is_none() {
        return;
    }
    let d = xtask::nginx::lint::check(&tree);
    assert!(d.is_empty(), "{d:#?}");
    let d = route::check_book(&book, &tree);
    assert!(d.iter().all(|d| d.severity != xtask::diagnostics::Severity::Error), "{d:#?}");
}
