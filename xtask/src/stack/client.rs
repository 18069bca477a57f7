//! The Matrix client the stack test drives through nginx.
//!
//! Every step checks CONTENT, not only the status: the other user sees the message, sync
//! carries the typing notification and the receipt, media bytes round-trip, and so on. Every
//! request is recorded (method, raw URI, status) so [`super::routing`] can compare the upstream
//! nginx chose with the simulator's prediction.

use super::http::{self, Response, enc};
use super::report::{Report, Step};
use anyhow::{Context, bail, ensure};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};

/// One request as sent.
#[derive(Debug, Clone)]
pub struct Sent {
    pub method: String,
    pub uri: String,
    /// None when no response arrived.
    pub status: Option<u16>,
    /// Sent while a worker was deliberately down (the fault step): nginx may fail over, so
    /// these are reported, not compared with the healthy-state prediction.
    pub during_fault: bool,
}

pub struct Client {
    pub addr: String,
    /// TLS to nginx (the HTTPS variant), else plain HTTP.
    pub tls: Option<http::Tls>,
    pub sent: Vec<Sent>,
    txn: u64,
    pub in_fault: bool,
    /// How long a request may take before the client gives up.
    pub timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct User {
    pub user_id: String,
    pub token: String,
    pub device_id: String,
}

/// What later steps need from the smoke run.
#[derive(Debug, Clone)]
pub struct State {
    pub alice: User,
    pub bob: User,
    pub room_id: String,
    pub server_name: String,
    /// Bodies of every message alice sent that the server acknowledged.
    pub sent_bodies: Vec<String>,
}

impl Client {
    pub fn new(addr: &str) -> Self {
        Client {
            addr: addr.to_string(),
            tls: None,
            sent: Vec::new(),
            txn: 0,
            in_fault: false,
            timeout: Duration::from_secs(60),
        }
    }

    pub fn txn(&mut self) -> String {
        self.txn += 1;
        format!("t{}x{}", std::process::id(), self.txn)
    }

    /// Sends a request and records it (also when it fails to get an answer).
    pub fn req(
        &mut self,
        method: &str,
        uri: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> anyhow::Result<Response> {
        let bytes = body.map(|b| b.to_string().into_bytes());
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut headers: Vec<(&str, &str)> = Vec::new();
        if let Some(a) = &auth {
            headers.push(("Authorization", a));
        }
        if bytes.is_some() {
            headers.push(("Content-Type", "application/json"));
        }
        self.raw(method, uri, &headers, bytes.as_deref())
    }

    /// Sends a request; on 429 waits `retry_after_ms` and sends it again, as clients do.
    pub fn raw(
        &mut self,
        method: &str,
        uri: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> anyhow::Result<Response> {
        for _ in 0..20 {
            let r = http::request_over(
                &self.addr,
                self.tls.as_ref(),
                method,
                uri,
                headers,
                body,
                self.timeout,
            );
            self.sent.push(Sent {
                method: method.to_string(),
                uri: uri.to_string(),
                status: r.as_ref().ok().map(|r| r.status),
                during_fault: self.in_fault,
            });
            match &r {
                Ok(resp) if resp.status == 429 => {
                    let ms = resp.json()["retry_after_ms"]
                        .as_u64()
                        .unwrap_or(1000)
                        .min(10_000);
                    std::thread::sleep(Duration::from_millis(ms + 50));
                }
                _ => return r,
            }
        }
        bail!("{method} {uri}: still rate limited after 20 tries")
    }

    /// A request that must answer 200 with JSON.
    pub fn ok(
        &mut self,
        method: &str,
        uri: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let r = self.req(method, uri, token, body)?;
        ensure!(
            r.status == 200,
            "{method} {uri}: HTTP {} {}",
            r.status,
            truncate(&r.text())
        );
        Ok(r.json())
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(300).collect()
}

/// [`shared_secret`] of the stack's tree, or a failed step (and `None`) when it cannot be read.
pub fn shared_secret_step(s: &super::Stack, report: &mut super::report::Report) -> Option<String> {
    match shared_secret(&s.compose.dir) {
        Ok(x) => Some(x),
        Err(e) => {
            report.push(super::report::Step::fail(
                "read the registration secret",
                format!("{e:#}"),
                0.0,
            ));
            None
        }
    }
}

/// The registration shared secret of the extracted deployment.
pub fn shared_secret(tree_dir: &Path) -> anyhow::Result<String> {
    let re = regex::Regex::new(r#"(?m)^registration_shared_secret:\s*["']?([^"'\s#]+)"#)
        .expect("valid regex");
    let dir = tree_dir.join("synapse");
    let mut files = vec![dir.join("homeserver.yaml")];
    if let Ok(rd) = std::fs::read_dir(&dir) {
        files.extend(
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "yaml")),
        );
    }
    for f in files {
        if let Ok(text) = std::fs::read_to_string(&f)
            && let Some(c) = re.captures(&text)
        {
            return Ok(c[1].to_string());
        }
    }
    bail!(
        "no registration_shared_secret in {}: the smoke test registers its users with it",
        dir.display()
    )
}

/// Registers a user with the shared secret (Synapse admin API), as register_new_matrix_user does.
pub fn register(c: &mut Client, secret: &str, name: &str, password: &str) -> anyhow::Result<User> {
    register_as(c, secret, name, password, false)
}

pub fn register_as(
    c: &mut Client,
    secret: &str,
    name: &str,
    password: &str,
    admin: bool,
) -> anyhow::Result<User> {
    let v = c.ok("GET", "/_synapse/admin/v1/register", None, None)?;
    let nonce = v["nonce"].as_str().context("no nonce")?.to_string();
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes()).expect("any key length");
    let kind = if admin { "admin" } else { "notadmin" };
    for (i, part) in [nonce.as_str(), name, password, kind].iter().enumerate() {
        if i > 0 {
            mac.update(b"\x00");
        }
        mac.update(part.as_bytes());
    }
    let digest: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let body = json!({"nonce": nonce, "username": name, "password": password, "admin": admin, "mac": digest});
    let v = c.ok("POST", "/_synapse/admin/v1/register", None, Some(&body))?;
    Ok(User {
        user_id: v["user_id"].as_str().context("no user_id")?.into(),
        token: v["access_token"]
            .as_str()
            .context("no access_token")?
            .into(),
        device_id: v["device_id"].as_str().unwrap_or_default().into(),
    })
}

fn login(c: &mut Client, user: &str, password: &str) -> anyhow::Result<User> {
    let body = json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user}, "password": password});
    let v = c.ok("POST", "/_matrix/client/v3/login", None, Some(&body))?;
    Ok(User {
        user_id: v["user_id"].as_str().context("no user_id")?.into(),
        token: v["access_token"]
            .as_str()
            .context("no access_token")?
            .into(),
        device_id: v["device_id"].as_str().context("no device_id")?.into(),
    })
}

/// Syncs (incrementally from `since`) until `pred` holds for a response, or the deadline.
fn sync_until(
    c: &mut Client,
    u: &User,
    since: &mut Option<String>,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> anyhow::Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let uri = match since.as_deref() {
            Some(s) => format!("/_matrix/client/v3/sync?timeout=2000&since={}", enc(s)),
            None => "/_matrix/client/v3/sync?timeout=0".to_string(),
        };
        let v = c.ok("GET", &uri, Some(&u.token), None)?;
        if let Some(nb) = v["next_batch"].as_str() {
            *since = Some(nb.to_string());
        }
        if pred(&v) {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("sync of {} never showed {what} within 20 s", u.user_id);
        }
    }
}

fn room<'a>(v: &'a Value, room_id: &str) -> &'a Value {
    &v["rooms"]["join"][room_id]
}

fn events<'a>(v: &'a Value, path: &[&str]) -> Vec<&'a Value> {
    let mut cur = v;
    for p in path {
        cur = &cur[*p];
    }
    cur["events"]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default()
}

fn run_step<T>(
    report: &mut Report,
    name: &str,
    f: impl FnOnce() -> anyhow::Result<(T, String)>,
) -> Option<T> {
    let t = Instant::now();
    match f() {
        Ok((v, detail)) => {
            report.push(Step::new(name, true, detail, t.elapsed()));
            Some(v)
        }
        Err(e) => {
            report.push(Step::new(name, false, format!("{e:#}"), t.elapsed()));
            None
        }
    }
}

/// Sends a text message as `u`; returns the event id.
pub fn send_text(c: &mut Client, u: &User, room_id: &str, body: &str) -> anyhow::Result<String> {
    let txn = c.txn();
    send_text_txn(c, u, room_id, body, &txn)
}

pub fn send_text_txn(
    c: &mut Client,
    u: &User,
    room_id: &str,
    body: &str,
    txn: &str,
) -> anyhow::Result<String> {
    let uri = format!(
        "/_matrix/client/v3/rooms/{}/send/m.room.message/{txn}",
        enc(room_id)
    );
    let v = c.ok(
        "PUT",
        &uri,
        Some(&u.token),
        Some(&json!({"msgtype": "m.text", "body": body})),
    )?;
    Ok(v["event_id"].as_str().context("no event_id")?.to_string())
}

/// The whole smoke scenario. Returns the state later steps use; each step is in the report.
pub fn smoke(c: &mut Client, secret: &str, report: &mut Report) -> anyhow::Result<State> {
    let pw_a = format!("pw-{}", crate::secrets::random_token(12));
    let pw_b = format!("pw-{}", crate::secrets::random_token(12));
    // Unique names, so that `stack smoke` can run again on the same stack.
    let run = crate::secrets::random_token(6).to_lowercase();
    let (name_a, name_b) = (format!("alice-{run}"), format!("bob-{run}"));
    let regd = run_step(report, "register two users with the shared secret", || {
        let a = register(c, secret, &name_a, &pw_a)?;
        let b = register(c, secret, &name_b, &pw_b)?;
        ensure!(
            a.user_id.starts_with(&format!("@{name_a}:"))
                && b.user_id.starts_with(&format!("@{name_b}:")),
            "unexpected user ids"
        );
        // The test sends faster than Synapse's default message rate limit allows (the fault
        // step retries a burst of sends): an admin lifts the limit for the two test users.
        let admin = register_as(
            c,
            secret,
            &format!("stackadmin-{run}"),
            &format!("pw-{}", crate::secrets::random_token(12)),
            true,
        )?;
        for u in [&a, &b] {
            let uri = format!(
                "/_synapse/admin/v1/users/{}/override_ratelimit",
                enc(&u.user_id)
            );
            c.ok(
                "POST",
                &uri,
                Some(&admin.token),
                Some(&json!({"messages_per_second": 0, "burst_count": 0})),
            )?;
        }
        let d = format!(
            "{} and {} (rate limit lifted by an admin)",
            a.user_id, b.user_id
        );
        Ok(((a, b), d))
    })
    .context("registration failed")?;
    let server_name = regd
        .0
        .user_id
        .split_once(':')
        .map(|x| x.1.to_string())
        .unwrap_or_default();
    let (alice, bob) = run_step(report, "log in with a password", || {
        let a = login(c, &name_a, &pw_a)?;
        let b = login(c, &name_b, &pw_b)?;
        ensure!(
            a.user_id == regd.0.user_id && !a.token.is_empty(),
            "login returned another user"
        );
        let whoami = c.ok(
            "GET",
            "/_matrix/client/v3/account/whoami",
            Some(&a.token),
            None,
        )?;
        ensure!(
            whoami["user_id"] == a.user_id.as_str(),
            "whoami says {whoami}"
        );
        let d = format!("devices {} and {}", a.device_id, b.device_id);
        Ok(((a, b), d))
    })
    .context("login failed")?;

    let room_id = run_step(report, "create a room, invite, join", || {
        let v = c.ok(
            "POST",
            "/_matrix/client/v3/createRoom",
            Some(&alice.token),
            Some(&json!({"name": "stack test", "preset": "private_chat"})),
        )?;
        let room_id = v["room_id"].as_str().context("no room_id")?.to_string();
        let r = enc(&room_id);
        c.ok(
            "POST",
            &format!("/_matrix/client/v3/rooms/{r}/invite"),
            Some(&alice.token),
            Some(&json!({"user_id": bob.user_id})),
        )?;
        c.ok(
            "POST",
            &format!("/_matrix/client/v3/join/{r}"),
            Some(&bob.token),
            Some(&json!({})),
        )?;
        let m = c.ok(
            "GET",
            &format!("/_matrix/client/v3/rooms/{r}/joined_members"),
            Some(&alice.token),
            None,
        )?;
        let joined = m["joined"].as_object().map(|o| o.len()).unwrap_or(0);
        ensure!(
            m["joined"].get(&bob.user_id).is_some() && joined == 2,
            "joined_members: {m}"
        );
        Ok((room_id.clone(), format!("{room_id}: 2 members joined")))
    })
    .context("room setup failed")?;
    let r = enc(&room_id);
    let mut st = State {
        alice,
        bob,
        room_id: room_id.clone(),
        server_name,
        sent_bodies: Vec::new(),
    };
    let mut bob_since: Option<String> = None;
    let mut alice_since: Option<String> = None;
    // Baselines for incremental syncs.
    let _ = sync_until(c, &st.bob, &mut bob_since, "the room", |v| {
        !room(v, &room_id).is_null()
    });
    let _ = sync_until(c, &st.alice, &mut alice_since, "the room", |v| {
        !room(v, &room_id).is_null()
    });

    let first = run_step(
        report,
        "send a message; the other user sees it (incremental sync)",
        || {
            let body = format!("hello bob {}", crate::secrets::random_token(6));
            let ev = send_text(c, &st.alice, &room_id, &body)?;
            sync_until(c, &st.bob, &mut bob_since, "the message", |v| {
                events(room(v, &room_id), &["timeline"])
                    .iter()
                    .any(|e| e["content"]["body"] == body.as_str())
            })?;
            Ok(((ev.clone(), body), format!("bob's sync carries {ev}")))
        },
    );
    let Some((first_event, first_body)) = first else {
        bail!("messages do not get through")
    };
    st.sent_bodies.push(first_body);

    run_step(report, "room state: set and read the topic", || {
        let topic = format!("topic {}", crate::secrets::random_token(6));
        c.ok(
            "PUT",
            &format!("/_matrix/client/v3/rooms/{r}/state/m.room.topic/"),
            Some(&st.alice.token),
            Some(&json!({"topic": topic})),
        )?;
        let v = c.ok(
            "GET",
            &format!("/_matrix/client/v3/rooms/{r}/state/m.room.topic/"),
            Some(&st.bob.token),
            None,
        )?;
        ensure!(v["topic"] == topic.as_str(), "bob reads topic {v}");
        let all = c.ok(
            "GET",
            &format!("/_matrix/client/v3/rooms/{r}/state"),
            Some(&st.bob.token),
            None,
        )?;
        ensure!(
            all.as_array()
                .is_some_and(|a| a.iter().any(|e| e["type"] == "m.room.topic")),
            "full state lacks the topic"
        );
        Ok(((), topic))
    });

    run_step(
        report,
        "typing: the other user's sync carries m.typing",
        || {
            let uri = format!(
                "/_matrix/client/v3/rooms/{r}/typing/{}",
                enc(&st.alice.user_id)
            );
            c.ok(
                "PUT",
                &uri,
                Some(&st.alice.token),
                Some(&json!({"typing": true, "timeout": 30000})),
            )?;
            let alice_id = st.alice.user_id.clone();
            sync_until(c, &st.bob, &mut bob_since, "m.typing from alice", |v| {
                events(room(v, &room_id), &["ephemeral"]).iter().any(|e| {
                    e["type"] == "m.typing"
                        && e["content"]["user_ids"]
                            .as_array()
                            .is_some_and(|u| u.iter().any(|x| x == alice_id.as_str()))
                })
            })?;
            c.ok(
                "PUT",
                &uri,
                Some(&st.alice.token),
                Some(&json!({"typing": false})),
            )?;
            Ok(((), "m.typing with alice".to_string()))
        },
    );

    run_step(
        report,
        "m.read receipt: the sender's sync carries it",
        || {
            let uri = format!(
                "/_matrix/client/v3/rooms/{r}/receipt/m.read/{}",
                enc(&first_event)
            );
            c.ok("POST", &uri, Some(&st.bob.token), Some(&json!({})))?;
            let (bob_id, ev) = (st.bob.user_id.clone(), first_event.clone());
            sync_until(
                c,
                &st.alice,
                &mut alice_since,
                "bob's m.read receipt",
                |v| {
                    events(room(v, &room_id), &["ephemeral"]).iter().any(|e| {
                        e["type"] == "m.receipt" && !e["content"][&ev]["m.read"][&bob_id].is_null()
                    })
                },
            )?;
            Ok(((), format!("m.read by bob on {first_event}")))
        },
    );

    run_step(
        report,
        "read marker: m.fully_read lands in room account data",
        || {
            let uri = format!("/_matrix/client/v3/rooms/{r}/read_markers");
            c.ok(
                "POST",
                &uri,
                Some(&st.bob.token),
                Some(&json!({"m.fully_read": first_event, "m.read": first_event})),
            )?;
            let ev = first_event.clone();
            sync_until(c, &st.bob, &mut bob_since, "m.fully_read", |v| {
                events(room(v, &room_id), &["account_data"])
                    .iter()
                    .any(|e| e["type"] == "m.fully_read" && e["content"]["event_id"] == ev.as_str())
            })?;
            Ok(((), "m.fully_read set".to_string()))
        },
    );

    run_step(report, "to-device message reaches the other device", || {
        let token = crate::secrets::random_token(8);
        let uri = format!(
            "/_matrix/client/v3/sendToDevice/org.example.stack_test/{}",
            c.txn()
        );
        let body = json!({"messages": {st.bob.user_id.clone(): {st.bob.device_id.clone(): {"token": token}}}});
        c.ok("PUT", &uri, Some(&st.alice.token), Some(&body))?;
        sync_until(c, &st.bob, &mut bob_since, "the to-device message", |v| {
            events(v, &["to_device"]).iter().any(|e| {
                e["type"] == "org.example.stack_test" && e["content"]["token"] == token.as_str()
            })
        })?;
        Ok(((), format!("token {token} received")))
    });

    run_step(report, "account data and room tags round-trip", || {
        let u = enc(&st.alice.user_id);
        let value = crate::secrets::random_token(8);
        let uri = format!("/_matrix/client/v3/user/{u}/account_data/org.example.stack_test");
        c.ok(
            "PUT",
            &uri,
            Some(&st.alice.token),
            Some(&json!({"value": value})),
        )?;
        let v = c.ok("GET", &uri, Some(&st.alice.token), None)?;
        ensure!(
            v["value"] == value.as_str(),
            "account data read back as {v}"
        );
        let tag = format!("/_matrix/client/v3/user/{u}/rooms/{r}/tags/u.stack");
        c.ok(
            "PUT",
            &tag,
            Some(&st.alice.token),
            Some(&json!({"order": 0.25})),
        )?;
        let v = c.ok(
            "GET",
            &format!("/_matrix/client/v3/user/{u}/rooms/{r}/tags"),
            Some(&st.alice.token),
            None,
        )?;
        ensure!(
            v["tags"]["u.stack"]["order"] == 0.25,
            "tags read back as {v}"
        );
        Ok(((), "account data and u.stack tag".to_string()))
    });

    run_step(report, "presence: set and read back", || {
        let uri = format!(
            "/_matrix/client/v3/presence/{}/status",
            enc(&st.alice.user_id)
        );
        c.ok(
            "PUT",
            &uri,
            Some(&st.alice.token),
            Some(&json!({"presence": "online", "status_msg": "running the stack test"})),
        )?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let v = c.ok("GET", &uri, Some(&st.bob.token), None)?;
            if v["presence"] == "online" && v["status_msg"] == "running the stack test" {
                return Ok(((), "online".to_string()));
            }
            ensure!(
                Instant::now() < deadline,
                "bob reads alice's presence as {v}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    });

    run_step(report, "push rules: add one and read it back", || {
        let uri = "/_matrix/client/v3/pushrules/global/override/org.example.stack_test";
        let rule = json!({"conditions": [{"kind": "event_match", "key": "content.body", "pattern": "silence*"}], "actions": []});
        c.ok("PUT", uri, Some(&st.alice.token), Some(&rule))?;
        let v = c.ok("GET", uri, Some(&st.alice.token), None)?;
        ensure!(
            v["rule_id"] == "org.example.stack_test" && v["conditions"][0]["pattern"] == "silence*",
            "read back {v}"
        );
        c.ok(
            "PUT",
            &format!("{uri}/enabled"),
            Some(&st.alice.token),
            Some(&json!({"enabled": false})),
        )?;
        let v = c.ok(
            "GET",
            &format!("{uri}/enabled"),
            Some(&st.alice.token),
            None,
        )?;
        ensure!(v["enabled"] == false, "enabled read back as {v}");
        Ok(((), "override rule added and disabled".to_string()))
    });

    run_step(
        report,
        "device keys: upload, then the other user queries them",
        || {
            let dev = st.alice.device_id.clone();
            let key = crate::secrets::random_token(43);
            let body = json!({
                "device_keys": {
                    "user_id": st.alice.user_id, "device_id": dev,
                    "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
                    "keys": {format!("curve25519:{dev}"): key, format!("ed25519:{dev}"): key},
                    "signatures": {st.alice.user_id.clone(): {format!("ed25519:{dev}"): "c2lnbmF0dXJl"}}
                },
                "one_time_keys": {"curve25519:AAAAAQ": crate::secrets::random_token(43)}
            });
            let v = c.ok(
                "POST",
                "/_matrix/client/v3/keys/upload",
                Some(&st.alice.token),
                Some(&body),
            )?;
            ensure!(
                v["one_time_key_counts"]["curve25519"] == 1,
                "upload answered {v}"
            );
            let q = c.ok(
                "POST",
                "/_matrix/client/v3/keys/query",
                Some(&st.bob.token),
                Some(&json!({"device_keys": {st.alice.user_id.clone(): []}})),
            )?;
            let got =
                &q["device_keys"][&st.alice.user_id][&dev]["keys"][format!("curve25519:{dev}")];
            ensure!(got == key.as_str(), "bob's query returned {q}");
            Ok(((), format!("curve25519:{dev}")))
        },
    );

    run_step(report, "device listing shows the logged-in device", || {
        let v = c.ok(
            "GET",
            "/_matrix/client/v3/devices",
            Some(&st.alice.token),
            None,
        )?;
        let ids: Vec<&str> = v["devices"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|d| d["device_id"].as_str())
            .collect();
        ensure!(ids.contains(&st.alice.device_id.as_str()), "devices: {v}");
        Ok(((), format!("{} devices", ids.len())))
    });

    run_step(
        report,
        "media: upload, download (same bytes), thumbnail",
        || {
            let png = png_image(64, 48);
            let auth = format!("Bearer {}", st.alice.token);
            let r = c.raw(
                "POST",
                "/_matrix/media/v3/upload?filename=stack.png",
                &[("Authorization", &auth), ("Content-Type", "image/png")],
                Some(&png),
            )?;
            ensure!(
                r.status == 200,
                "upload: HTTP {} {}",
                r.status,
                truncate(&r.text())
            );
            let mxc = r.json()["content_uri"]
                .as_str()
                .context("no content_uri")?
                .to_string();
            let (server, id) = mxc
                .strip_prefix("mxc://")
                .and_then(|s| s.split_once('/'))
                .context("bad mxc")?;
            let auth_b = format!("Bearer {}", st.bob.token);
            let d = c.raw(
                "GET",
                &format!("/_matrix/client/v1/media/download/{server}/{id}"),
                &[("Authorization", &auth_b)],
                None,
            )?;
            ensure!(
                d.status == 200 && d.body == png,
                "download: HTTP {}, {} bytes (sent {})",
                d.status,
                d.body.len(),
                png.len()
            );
            let t = c.raw(
            "GET",
            &format!("/_matrix/client/v1/media/thumbnail/{server}/{id}?width=32&height=32&method=scale"),
            &[("Authorization", &auth_b)],
            None,
        )?;
            let ct = t.header("content-type").unwrap_or("").to_string();
            ensure!(
                t.status == 200 && ct.starts_with("image/") && t.body.len() > 8,
                "thumbnail: HTTP {} {ct}",
                t.status
            );
            Ok((
                (),
                format!(
                    "{mxc}: {} bytes round-trip, thumbnail {} bytes {ct}",
                    png.len(),
                    t.body.len()
                ),
            ))
        },
    );

    run_step(
        report,
        "paginate /messages backwards with a `from` token",
        || {
            let mut bodies = Vec::new();
            for i in 0..5 {
                let b = format!("page message {i} {}", crate::secrets::random_token(4));
                send_text(c, &st.alice, &room_id, &b)?;
                bodies.push(b);
            }
            st.sent_bodies.extend(bodies.iter().cloned());
            let p1 = c.ok(
                "GET",
                &format!("/_matrix/client/v3/rooms/{r}/messages?dir=b&limit=3"),
                Some(&st.bob.token),
                None,
            )?;
            let end = p1["end"]
                .as_str()
                .context("first page has no end token")?
                .to_string();
            let p2 = c.ok(
                "GET",
                &format!(
                    "/_matrix/client/v3/rooms/{r}/messages?dir=b&limit=3&from={}",
                    enc(&end)
                ),
                Some(&st.bob.token),
                None,
            )?;
            let texts = |p: &Value| -> Vec<String> {
                p["chunk"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|e| e["content"]["body"].as_str().map(String::from))
                    .collect()
            };
            let (t1, t2) = (texts(&p1), texts(&p2));
            ensure!(
                t1 == [bodies[4].clone(), bodies[3].clone(), bodies[2].clone()],
                "first page {t1:?}"
            );
            ensure!(
                t2.first() == Some(&bodies[1]) && t2.get(1) == Some(&bodies[0]),
                "second page {t2:?}"
            );
            Ok(((), "two pages of 3 in reverse order".to_string()))
        },
    );

    run_step(report, "federation: version and server keys", || {
        let v = c.ok("GET", "/_matrix/federation/v1/version", None, None)?;
        ensure!(v["server"]["name"] == "Synapse", "version: {v}");
        let k = c.ok("GET", "/_matrix/key/v2/server", None, None)?;
        ensure!(
            k["server_name"] == st.server_name.as_str(),
            "keys for {}",
            k["server_name"]
        );
        let n = k["verify_keys"].as_object().map_or(0, |o| o.len());
        ensure!(n >= 1, "no verify_keys: {k}");
        Ok((
            (),
            format!(
                "Synapse {}, {n} verify key(s)",
                v["server"]["version"].as_str().unwrap_or("?")
            ),
        ))
    });
    Ok(st)
}

/// Every text body in the room's history (paginating backwards to the start).
pub fn history(c: &mut Client, u: &User, room_id: &str) -> anyhow::Result<Vec<String>> {
    let r = enc(room_id);
    let mut from: Option<String> = None;
    let mut out = Vec::new();
    for _ in 0..100 {
        let uri = match &from {
            Some(f) => format!(
                "/_matrix/client/v3/rooms/{r}/messages?dir=b&limit=50&from={}",
                enc(f)
            ),
            None => format!("/_matrix/client/v3/rooms/{r}/messages?dir=b&limit=50"),
        };
        let v = c.ok("GET", &uri, Some(&u.token), None)?;
        let chunk = v["chunk"].as_array().cloned().unwrap_or_default();
        out.extend(
            chunk
                .iter()
                .filter_map(|e| e["content"]["body"].as_str().map(String::from)),
        );
        match v["end"].as_str() {
            Some(e) if !chunk.is_empty() => from = Some(e.to_string()),
            _ => break,
        }
    }
    Ok(out)
}

/// Every `routes` sample of the book, sent through nginx whatever status it gets. They go
/// without an access token, so samples such as logout or deactivate cannot hurt the test
/// users; routing does not depend on the token.
pub fn route_samples(c: &mut Client, book: &crate::book::Book, _st: &State, report: &mut Report) {
    let t = Instant::now();
    let (samples, _) = crate::route::routes::samples(book);
    let mut answered = 0;
    let mut failed = Vec::new();
    for s in &samples {
        let body = if matches!(s.method.as_str(), "POST" | "PUT") {
            Some(json!({}))
        } else {
            None
        };
        match c.req(&s.method, &s.uri, None, body.as_ref()) {
            Ok(_) => answered += 1,
            Err(e) => failed.push(format!("{} {}: {e:#}", s.method, s.uri)),
        }
    }
    report.push(Step::new(
        "send every `routes` sample of the book through nginx",
        failed.is_empty(),
        if failed.is_empty() {
            format!("{answered} samples answered")
        } else {
            failed.join("; ")
        },
        t.elapsed(),
    ));
}

/// A valid PNG (RGB gradient), stored with uncompressed deflate blocks.
pub fn png_image(w: u32, h: u32) -> Vec<u8> {
    let mut raw = Vec::new();
    for y in 0..h {
        raw.push(0u8); // filter: none
        for x in 0..w {
            raw.extend_from_slice(&[(x * 255 / w.max(1)) as u8, (y * 255 / h.max(1)) as u8, 128]);
        }
    }
    let mut z = vec![0x78, 0x01];
    let mut chunks = raw.chunks(65535).peekable();
    while let Some(ch) = chunks.next() {
        z.push(u8::from(chunks.peek().is_none()));
        let len = ch.len() as u16;
        z.extend_from_slice(&len.to_le_bytes());
        z.extend_from_slice(&(!len).to_le_bytes());
        z.extend_from_slice(ch);
    }
    let (mut a, mut b) = (1u32, 0u32);
    for &x in &raw {
        a = (a + u32::from(x)) % 65521;
        b = (b + a) % 65521;
    }
    z.extend_from_slice(&((b << 16) | a).to_be_bytes());
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    for (ty, data) in [
        (&b"IHDR"[..], ihdr),
        (&b"IDAT"[..], z),
        (&b"IEND"[..], Vec::new()),
    ] {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut crc_in = ty.to_vec();
        crc_in.extend_from_slice(&data);
        out.extend_from_slice(&crc_in);
        out.extend_from_slice(&crc32(&crc_in).to_be_bytes());
    }
    out
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_and_png() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        let p = png_image(4, 3);
        assert!(p.starts_with(b"\x89PNG\r\n\x1a\n"));
        assert!(p.ends_with(&[0xAE, 0x42, 0x60, 0x82]), "IEND crc");
    }
}
