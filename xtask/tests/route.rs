//! The routing simulator on fixture books: `check` passes on a good one, fails on a sample that
//! lands on a process that cannot serve it, on shadowed and unreached locations; room affinity;
//! the `route` command's JSON; and no panic on arbitrary input.

use std::path::PathBuf;
use xtask::extract::{self, Options};
use xtask::route::{self, Router};

fn fixture(name: &str) -> PathBuf {
    xtask::project_root()
        .join("tests/fixtures/route")
        .join(name)
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
            (
                "route::shadowed-location".into(),
                "src/deploy.md".into(),
                112
            ),
            (
                "route::unreached-location".into(),
                "src/deploy.md".into(),
                115
            ),
            ("route::contract".into(), "src/routes.md".into(), 16),
        ]
    );
}

/// Hashing on the whole request URI splits one room's pagination across workers: check fails.
#[test]
fn pagination_split_across_workers_fails() {
    assert_eq!(
        check("err-affinity"),
        (16..=19)
            .map(|l| (
                "route::room-affinity".to_string(),
                "src/routes.md".to_string(),
                l
            ))
            .collect::<Vec<_>>()
    );
}

/// Every request about one room gets the same hash key and the same room worker, whatever the
/// encoding of the room ID and whatever the query string.
#[test]
fn room_affinity() {
    let r = router("ok");
    let reqs = [
        (
            "PUT",
            "/_matrix/client/v3/rooms/!abc:example.com/send/m.room.message/t1",
        ),
        (
            "PUT",
            "/_matrix/client/v3/rooms/%21abc%3Aexample.com/state/m.room.topic/",
        ),
        (
            "PUT",
            "/_matrix/client/v3/rooms/!abc%3aexample.com/state/m.room.member/%40bob%3Aexample.com",
        ),
        (
            "GET",
            "/_matrix/client/v3/rooms/!abc:example.com/messages?dir=b&from=t47-123_0_0&limit=20&filter=%7B%22lazy_load_members%22%3Atrue%7D",
        ),
        (
            "GET",
            "/_matrix/client/v3/rooms/!abc:example.com/messages?dir=b&from=t5-1_0_0",
        ),
        (
            "GET",
            "/_matrix/client/v3/rooms/!abc:example.com/context/%24ev?limit=10",
        ),
        (
            "GET",
            "/_matrix/federation/v1/make_join/!abc%3Aexample.com/%40bob%3Aremote.org?ver=10",
        ),
        (
            "PUT",
            "/_matrix/federation/v2/send_join/!abc:example.com/%24ev",
        ),
        (
            "GET",
            "/_matrix/federation/v1/state_ids/!abc%3Aexample.com?event_id=%24ev",
        ),
        (
            "GET",
            "/_matrix/federation/v1/backfill/!abc%3Aexample.com?v=%24old%3Aexample.com&limit=50",
        ),
    ];
    let outs: Vec<_> = reqs.iter().map(|(m, u)| r.route(m, u)).collect();
    for o in &outs {
        assert_eq!(o.upstream.as_deref(), Some("rooms"), "{}", o.uri);
        assert_eq!(o.hash_key.as_deref(), Some("!abc:example.com"), "{}", o.uri);
        assert_eq!(o.server, outs[0].server, "{}", o.uri);
    }
    // Typing for that room goes to the typing writer instead (not a room worker).
    let t = r.route(
        "PUT",
        "/_matrix/client/v3/rooms/!abc:example.com/typing/@alice:example.com",
    );
    assert_eq!(t.upstream.as_deref(), Some("sync"));
    // Another room may land elsewhere: across 30 rooms, all three workers are used.
    let mut used = std::collections::BTreeSet::new();
    for i in 0..30 {
        used.insert(
            r.route(
                "GET",
                &format!("/_matrix/client/v3/rooms/!r{i}:example.com/messages"),
            )
            .server,
        );
    }
    assert_eq!(used.len(), 3);
}

#[test]
fn route_command_json() {
    let out = assert_cmd::Command::cargo_bin("xtask")
        .unwrap()
        .args(["route", "--book"])
        .arg(fixture("ok"))
        .args([
            "--format",
            "json",
            "--method",
            "PUT",
            "/_matrix/client/v3/rooms/%21abc%3Aexample.com/typing/%40a%3Aexample.com",
            "/_matrix/media",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let a = v.as_array().unwrap();
    assert_eq!(a.len(), 2);
    assert_eq!(a[0]["method"], "PUT");
    assert_eq!(a[0]["upstream"], "sync");
    assert_eq!(a[0]["server"], "unix:/sockets/sync1_http.sock");
    assert_eq!(a[0]["location"]["file"], "src/deploy.md");
    assert_eq!(a[0]["location"]["line"], 100);
    assert_eq!(a[0]["location"]["modifier"], "~");
    assert_eq!(a[0]["status"], serde_json::Value::Null);
    assert_eq!(a[1]["status"], 301);
    assert_eq!(a[1]["upstream"], serde_json::Value::Null);
    assert!(a[0]["vars"].is_object());
}

#[test]
fn route_command_routes_through_a_variant() {
    // The book's own scale variant adds rooms5 to the `rooms` upstream: some room lands there.
    let route = |extra: &[&str], uri: &str| {
        let out = assert_cmd::Command::cargo_bin("xtask")
            .unwrap()
            .args(["route", "--book"])
            .arg(xtask::project_root())
            .args(extra)
            .args(["--format", "json", "--method", "PUT", uri])
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let mut found = false;
    for i in 0..40 {
        let uri =
            format!("/_matrix/client/v3/rooms/%21room{i}%3Aexample.com/send/m.room.message/t{i}");
        let (code, out, err) = route(&["--variant", "scale"], &uri);
        assert_eq!(code, Some(0), "{err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        if v[0]["server"] == "unix:/sockets/rooms5_http.sock" {
            let (_, main, _) = route(&[], &uri);
            let m: serde_json::Value = serde_json::from_str(&main).unwrap();
            assert_eq!(m[0]["upstream"], "rooms");
            assert_ne!(m[0]["server"], "unix:/sockets/rooms5_http.sock");
            found = true;
            break;
        }
    }
    assert!(found, "no room of 40 lands on rooms5 in the scale variant");
    let (code, _, err) = route(&["--variant", "nope"], "/");
    assert_eq!(code, Some(2));
    assert!(err.contains("no such variant"), "{err}");
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
    let iters: usize = std::env::var("XTASK_FUZZ_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1500);
    let book = xtask::book::load(&fixture("ok")).unwrap();
    let tree = extract::assemble(&book, &Options::default()).unwrap();
    let seed = tree
        .get("nginx/conf.d/synapse.conf")
        .unwrap()
        .content
        .clone()
        .into_bytes();
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
        let block = xtask::book::Block {
            file: "src/x.md".into(),
            fence_line: 1,
            lang: "nginx".into(),
            attrs: Default::default(),
            kind: xtask::book::BlockKind::Example,
            text: text.clone(),
        };
        let _ = xtask::lint::nginx::check_example(&block);
        let t = xtask::nginx::tree_from(&[
            (
                "nginx/nginx.conf",
                "events {}\nhttp { include conf.d/*.conf; }\n",
            ),
            ("nginx/conf.d/synapse.conf", &text),
        ]);
        let _ = xtask::lint::nginx::check_static(&t);
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
    let d = xtask::lint::nginx::check_tree(&tree);
    assert!(d.is_empty(), "{d:#?}");
    let d = route::check_book(&book, &tree);
    assert!(
        d.iter()
            .all(|d| d.severity != xtask::diagnostics::Severity::Error),
        "{d:#?}"
    );
}

/// The real nginx agrees with the simulator on every sample of the fixture book and of the
/// repository's routing reference (skipped where nginx is not installed).
#[test]
fn real_nginx_agrees_with_the_simulator() {
    if xtask::tools::which("nginx").is_none() && !std::path::Path::new("/usr/sbin/nginx").exists() {
        eprintln!("nginx not installed: skipped");
        return;
    }
    for root in [fixture("ok"), xtask::project_root()] {
        let book = xtask::book::load(&root).unwrap();
        let tree = extract::assemble(&book, &Options::default()).unwrap();
        let (samples, d) = route::check::samples(&book);
        assert!(d.is_empty(), "{d:?}");
        if samples.is_empty() {
            continue;
        }
        let r = route::crosscheck::against_nginx(&tree, &samples).unwrap();
        assert_eq!(r.compared, samples.len());
        assert!(
            r.disagreements.is_empty(),
            "{}: {:#?}",
            root.display(),
            r.disagreements
        );
    }
}

/// Room affinity in the book's own configuration: every request about one room (client and
/// federation, any encoding, any query string) has the same hash key and the same room worker.
#[test]
fn repository_book_room_affinity() {
    let root = xtask::project_root();
    let book = xtask::book::load(&root).unwrap();
    let tree = extract::assemble(&book, &Options::default()).unwrap();
    let Ok(r) = Router::from_tree(&tree) else {
        return;
    };
    for room in [
        "!abc:example.com",
        "!31hneApxJ_1o-63DmFrpeqnkFfWppnzWso1JvH3ogLM",
        "!xyz:other.example",
    ] {
        let enc = room.replace('!', "%21").replace(':', "%3A");
        let reqs = [
            (
                "PUT",
                format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/t1"),
            ),
            (
                "PUT",
                format!("/_matrix/client/v3/rooms/{enc}/state/m.room.member/%40bob%3Aexample.com"),
            ),
            (
                "GET",
                format!(
                    "/_matrix/client/v3/rooms/{enc}/messages?dir=b&from=t47-123_0_0&filter=%7B%22lazy_load_members%22%3Atrue%7D"
                ),
            ),
            (
                "GET",
                format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&from=t5-1_0_0"),
            ),
            (
                "GET",
                format!("/_matrix/client/v3/rooms/{room}/context/%24ev?limit=10"),
            ),
            (
                "GET",
                format!("/_matrix/federation/v1/make_join/{enc}/%40bob%3Aremote.org?ver=10"),
            ),
            (
                "PUT",
                format!("/_matrix/federation/v2/send_join/{room}/%24ev"),
            ),
            (
                "GET",
                format!("/_matrix/federation/v1/state_ids/{enc}?event_id=%24ev"),
            ),
            (
                "GET",
                format!("/_matrix/federation/v1/backfill/{enc}?v=%24old%3Aexample.com&limit=50"),
            ),
        ];
        let outs: Vec<_> = reqs.iter().map(|(m, u)| r.route(m, u)).collect();
        for o in &outs {
            assert_eq!(o.hash_key.as_deref(), Some(room), "{}", o.uri);
            assert!(o.server.is_some(), "{}", o.uri);
            assert_eq!(o.server, outs[0].server, "{}", o.uri);
        }
        // Typing in that room goes to the typing writer, whatever the room.
        let t = r.route(
            "PUT",
            &format!("/_matrix/client/v3/rooms/{enc}/typing/%40alice%3Aexample.com"),
        );
        assert_ne!(t.upstream, outs[0].upstream);
    }
}

/// The `cargo xtask route` session shown on the routing page is what the command prints today.
#[test]
fn routing_page_console_example_is_current() {
    let root = xtask::project_root();
    let page = std::fs::read_to_string(root.join("src/deployment/routing.md")).unwrap();
    // The block is marked `skip` for the stack test (it runs in a checkout, not in the
    // deployment): this test is what runs it.
    let start = page
        .find("\n$ cargo xtask route")
        .expect("the routing page shows a `cargo xtask route` session");
    let fence = page[..start]
        .rfind("```console")
        .expect("inside a console block");
    assert!(
        !page[fence..start].contains("\n```"),
        "inside a console block"
    );
    let block = &page[start + 1..];
    let block = &block[..block.find("```").unwrap()];
    let mut lines = block.lines();
    let cmd = lines.next().unwrap();
    let method = cmd
        .split("--method ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or("GET");
    let uri = cmd.split('\'').nth(1).unwrap();
    let shown: Vec<&str> = lines.collect();
    let book = xtask::book::load(&root).unwrap();
    let tree = extract::assemble(&book, &Options::default()).unwrap();
    let r = Router::from_tree(&tree).unwrap();
    let now = route::describe(&r.route(method, uri));
    assert_eq!(
        shown.join("\n"),
        now,
        "update the console example in src/deployment/routing.md"
    );
}

/// The messages of the failing fixtures, as `check --format json` prints them (snapshots).
#[test]
fn failing_fixture_messages() {
    for name in ["err-contract", "err-shadowed", "err-affinity"] {
        let book = xtask::book::load(&fixture(name)).unwrap();
        let tree = extract::assemble(&book, &Options::default()).unwrap();
        let mut d = route::check_book(&book, &tree);
        xtask::diagnostics::sort(&mut d);
        let text = xtask::diagnostics::render(&d, xtask::flags::Format::Json, &fixture(name));
        insta::assert_snapshot!(format!("check-{name}"), text);
    }
}
