//! The seeded Matrix workload, sent through nginx's published port on the loopback address.
//!
//! Setup registers the users (an admin lifts their message rate limit, as a load test of the
//! server and not of its rate limiter must), creates public rooms of the planned sizes and joins
//! their members, and starts one `/sync` long-poll loop per user. Then: an idle phase, the
//! message ladder (each step sends at a fixed offered rate for a fixed time, from a pool of
//! sending threads fed by a clock, so a slow server delays later sends and the delay counts),
//! media uploads and downloads (bytes compared), and a burst of the federation requests that
//! need no signature. Every random choice comes from one seeded generator, so two runs send the
//! same requests in the same order.

use super::cgroup::Sampler;
use crate::bench::{Breakdown, Federation, Media, Pct, Phase, Step, Workload};
use crate::stack::client::{self, Client, User};
use crate::stack::http::{self, enc};
use anyhow::{Context, ensure};
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

/// The seed of every run.
pub const SEED: u64 = 18;

/// How long a measured request may take before it counts as an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// A message due longer ago than this is not sent at all (the step has broken down).
const MAX_BEHIND: Duration = Duration::from_secs(15);
/// After a step's last send, how long deliveries may still arrive.
const DELIVERY_GRACE: Duration = Duration::from_secs(10);

/// The full benchmark's workload, or the small one `--quick` runs.
pub fn plan(quick: bool) -> Workload {
    let breakdown = Breakdown {
        send_p95_ms: 2000.0,
        delivery_p95_ms: 5000.0,
        error_ratio: 0.01,
        min_throughput_ratio: 0.8,
    };
    if quick {
        Workload {
            seed: SEED,
            users: 4,
            rooms: vec![2, 4],
            rates: vec![2.0, 4.0],
            step_seconds: 5.0,
            senders: 4,
            sync_timeout_ms: 5000,
            media_files: 3,
            media_kib: (16, 64),
            federation_requests: 20,
            idle_seconds: 3.0,
            breakdown,
            max_messages: 100,
            max_run_seconds: 240.0,
        }
    } else {
        Workload {
            seed: SEED,
            users: 16,
            rooms: vec![2, 4, 8, 16],
            rates: vec![2.0, 4.0, 8.0, 16.0, 32.0, 64.0],
            step_seconds: 10.0,
            senders: 16,
            sync_timeout_ms: 5000,
            media_files: 16,
            media_kib: (16, 512),
            federation_requests: 300,
            idle_seconds: 10.0,
            breakdown,
            max_messages: 2000,
            max_run_seconds: 600.0,
        }
    }
}

/// splitmix64: small, fast, and the same sequence on every machine.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n + 8);
        while v.len() < n {
            v.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        v.truncate(n);
        v
    }
}

/// Which users are in each room: the first room member creates it. Seeded, so every run and
/// every layout has the same rooms.
pub fn memberships(w: &Workload) -> Vec<Vec<usize>> {
    let mut rng = Rng::new(w.seed);
    w.rooms
        .iter()
        .map(|&size| {
            let size = size.min(w.users);
            let mut all: Vec<usize> = (0..w.users).collect();
            // Fisher-Yates, then the first `size`.
            for i in (1..all.len()).rev() {
                let j = rng.below(i + 1);
                all.swap(i, j);
            }
            all.truncate(size);
            all
        })
        .collect()
}

/// One planned message: which room, which member sends it, when it is due.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Planned {
    pub id: u64,
    pub room: usize,
    pub sender: usize,
    /// Seconds after the step's start.
    pub due: f64,
}

/// The messages of one step at `rate`, evenly spaced, each from a seeded room and member.
pub fn step_messages(
    rng: &mut Rng,
    rooms: &[Vec<usize>],
    rate: f64,
    seconds: f64,
    first_id: u64,
) -> Vec<Planned> {
    let n = (rate * seconds).round() as u64;
    (0..n)
        .map(|k| {
            let room = rng.below(rooms.len());
            let sender = rooms[room][rng.below(rooms[room].len())];
            Planned {
                id: first_id + k,
                room,
                sender,
                due: k as f64 / rate,
            }
        })
        .collect()
}

/// A message as sent: acknowledged at that instant, or why not.
type Sent = (Planned, Result<Instant, String>);

/// The users, rooms and sync loops of a run.
pub struct World {
    pub addr: String,
    pub users: Vec<User>,
    pub rooms: Vec<String>,
    pub members: Vec<Vec<usize>>,
    /// (message id, user index) -> when that user's `/sync` returned it.
    arrivals: Arc<Mutex<HashMap<(u64, usize), Instant>>>,
    stop: Arc<AtomicBool>,
    syncs: Vec<std::thread::JoinHandle<()>>,
    /// A unique tag of this run in message bodies, so old messages never count.
    tag: String,
}

impl World {
    /// Registers the users, makes the rooms, and starts every user's sync loop.
    pub fn setup(addr: &str, secret: &str, w: &Workload) -> anyhow::Result<World> {
        let mut c = Client::new(addr);
        let tag = crate::secrets::random_token(6).to_lowercase();
        let admin = client::register_as(
            &mut c,
            secret,
            &format!("benchadmin-{tag}"),
            &format!("pw-{}", crate::secrets::random_token(12)),
            true,
        )?;
        let mut users = Vec::new();
        for i in 0..w.users {
            let u = client::register(
                &mut c,
                secret,
                &format!("bench{i}-{tag}"),
                &format!("pw-{}", crate::secrets::random_token(12)),
            )?;
            c.ok(
                "POST",
                &format!(
                    "/_synapse/admin/v1/users/{}/override_ratelimit",
                    enc(&u.user_id)
                ),
                Some(&admin.token),
                Some(&json!({"messages_per_second": 0, "burst_count": 0})),
            )?;
            users.push(u);
        }
        let members = memberships(w);
        let mut rooms = Vec::new();
        for (i, m) in members.iter().enumerate() {
            let creator = &users[m[0]];
            let v = c.ok(
                "POST",
                "/_matrix/client/v3/createRoom",
                Some(&creator.token),
                Some(&json!({"name": format!("bench {tag} {i}"), "preset": "public_chat"})),
            )?;
            let room = v["room_id"].as_str().context("no room_id")?.to_string();
            for &u in &m[1..] {
                c.ok(
                    "POST",
                    &format!("/_matrix/client/v3/rooms/{}/join", enc(&room)),
                    Some(&users[u].token),
                    Some(&json!({})),
                )?;
            }
            rooms.push(room);
        }
        let arrivals = Arc::new(Mutex::new(HashMap::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let mut syncs = Vec::new();
        for (i, u) in users.iter().enumerate() {
            // The first sync, without a token, before the loop: the loop then only waits.
            let since = initial_sync(addr, &u.token)?;
            let (addr, token, arrivals, stop, tag, timeout) = (
                addr.to_string(),
                u.token.clone(),
                arrivals.clone(),
                stop.clone(),
                tag.clone(),
                w.sync_timeout_ms,
            );
            syncs.push(std::thread::spawn(move || {
                sync_loop(&addr, &token, since, i, &tag, timeout, &arrivals, &stop)
            }));
        }
        Ok(World {
            addr: addr.to_string(),
            users,
            rooms,
            members,
            arrivals,
            stop,
            syncs,
            tag,
        })
    }

    /// Stops the sync loops (each returns after its current long-poll).
    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.syncs {
            let _ = t.join();
        }
    }

    /// One step of the ladder at `rate`.
    pub fn step(
        &self,
        w: &Workload,
        rng: &mut Rng,
        rate: f64,
        first_id: u64,
        sampler: &mut Sampler,
    ) -> Step {
        let plan = step_messages(rng, &self.members, rate, w.step_seconds, first_id);
        let t0 = Instant::now();
        let (tx, rx) = mpsc::channel::<Planned>();
        let rx = Arc::new(Mutex::new(rx));
        let results: Arc<Mutex<Vec<Sent>>> = Arc::new(Mutex::new(Vec::new()));
        let mut workers = Vec::new();
        for _ in 0..w.senders.max(1) {
            let (rx, results, addr, tag) = (
                rx.clone(),
                results.clone(),
                self.addr.clone(),
                self.tag.clone(),
            );
            let users: Vec<String> = self.users.iter().map(|u| u.token.clone()).collect();
            let rooms = self.rooms.clone();
            workers.push(std::thread::spawn(move || {
                loop {
                    let job = match rx.lock().expect("queue lock").recv() {
                        Ok(j) => j,
                        Err(_) => break,
                    };
                    let due = t0 + Duration::from_secs_f64(job.due);
                    // A server this far behind has broken down already: the rest of the
                    // backlog is counted as failed instead of prolonging the step.
                    let r = if due.elapsed() > MAX_BEHIND {
                        Err(format!(
                            "not sent: over {} s behind schedule",
                            MAX_BEHIND.as_secs()
                        ))
                    } else {
                        send(&addr, &users[job.sender], &rooms[job.room], &tag, job.id)
                    };
                    let done = Instant::now();
                    results
                        .lock()
                        .expect("results lock")
                        .push((job, r.map(|_| done)));
                }
            }));
        }
        // The clock: each message is handed to the pool when it is due.
        for p in &plan {
            let due = t0 + Duration::from_secs_f64(p.due);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let _ = tx.send(*p);
        }
        drop(tx);
        for t in workers {
            let _ = t.join();
        }
        let sent_done = Instant::now();
        let results = std::mem::take(&mut *results.lock().expect("results lock"));
        // Who must see each acknowledged message: every other member of its room.
        let mut expected: Vec<(u64, usize, Instant)> = Vec::new();
        let mut send_ms = Vec::new();
        let mut errors = Vec::new();
        let mut last_ok = t0;
        for (p, r) in &results {
            let due = t0 + Duration::from_secs_f64(p.due);
            match r {
                Ok(done) => {
                    send_ms.push(done.saturating_duration_since(due).as_secs_f64() * 1000.0);
                    last_ok = last_ok.max(*done);
                    for &m in &self.members[p.room] {
                        if m != p.sender {
                            expected.push((p.id, m, due));
                        }
                    }
                }
                Err(e) => errors.push(e.clone()),
            }
        }
        // Deliveries, until all arrived or the grace period ended.
        let deadline = sent_done + DELIVERY_GRACE;
        let delivery_ms = loop {
            let got: Vec<f64> = {
                let a = self.arrivals.lock().expect("arrivals lock");
                expected
                    .iter()
                    .filter_map(|(id, m, due)| {
                        a.get(&(*id, *m))
                            .map(|at| at.saturating_duration_since(*due).as_secs_f64() * 1000.0)
                    })
                    .collect()
            };
            if got.len() == expected.len() || Instant::now() >= deadline {
                break got;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let phase = Phase {
            seconds: cgroup_round(t0.elapsed().as_secs_f64()),
            containers: sampler.phase(),
        };
        let ok = send_ms.len();
        let window = last_ok
            .saturating_duration_since(t0)
            .as_secs_f64()
            .max(w.step_seconds);
        let mut step = Step {
            rate,
            sent: results.len(),
            ok,
            errors: errors.len(),
            error_samples: samples(&errors),
            throughput: cgroup_round(ok as f64 / window),
            send_ms: Pct::of(&send_ms),
            delivery_ms: Pct::of(&delivery_ms),
            delivered: delivery_ms.len(),
            expected_deliveries: expected.len(),
            broke: None,
            phase,
        };
        step.broke = broke(&step, &w.breakdown);
        step
    }

    /// Uploads `w.media_files` files of seeded sizes and contents from seeded users, then
    /// another member downloads each; the bytes must be the same.
    pub fn media(&self, w: &Workload, rng: &mut Rng, sampler: &mut Sampler) -> Media {
        let t0 = Instant::now();
        let mut up = Vec::new();
        let mut down = Vec::new();
        let mut errors = Vec::new();
        let mut bytes = 0u64;
        let (lo, hi) = w.media_kib;
        for i in 0..w.media_files {
            let kib = lo as usize + rng.below((hi - lo + 1) as usize);
            let body = rng.bytes(kib * 1024);
            let (a, b) = (rng.below(self.users.len()), rng.below(self.users.len()));
            let auth = format!("Bearer {}", self.users[a].token);
            let t = Instant::now();
            let r = http::request(
                &self.addr,
                "POST",
                &format!("/_matrix/media/v3/upload?filename=bench{i}.bin"),
                &[
                    ("Authorization", &auth),
                    ("Content-Type", "application/octet-stream"),
                ],
                Some(&body),
                REQUEST_TIMEOUT,
            );
            let mxc = match r {
                Ok(r) if r.status == 200 => {
                    up.push(t.elapsed().as_secs_f64() * 1000.0);
                    r.json()["content_uri"].as_str().map(String::from)
                }
                Ok(r) => {
                    errors.push(format!("upload: HTTP {}", r.status));
                    None
                }
                Err(e) => {
                    errors.push(format!("upload: {e:#}"));
                    None
                }
            };
            let Some(path) = mxc.as_deref().and_then(|m| m.strip_prefix("mxc://")) else {
                continue;
            };
            let auth = format!("Bearer {}", self.users[b].token);
            let t = Instant::now();
            match http::request(
                &self.addr,
                "GET",
                &format!("/_matrix/client/v1/media/download/{path}"),
                &[("Authorization", &auth)],
                None,
                REQUEST_TIMEOUT,
            ) {
                Ok(r) if r.status == 200 && r.body == body => {
                    down.push(t.elapsed().as_secs_f64() * 1000.0);
                    bytes += body.len() as u64;
                }
                Ok(r) => errors.push(format!(
                    "download: HTTP {}, {} bytes of {}",
                    r.status,
                    r.body.len(),
                    body.len()
                )),
                Err(e) => errors.push(format!("download: {e:#}")),
            }
        }
        Media {
            files: w.media_files,
            bytes,
            errors: errors.len(),
            error_samples: samples(&errors),
            upload_ms: Pct::of(&up),
            download_ms: Pct::of(&down),
            phase: Phase {
                seconds: cgroup_round(t0.elapsed().as_secs_f64()),
                containers: sampler.phase(),
            },
        }
    }
}

/// A burst of inbound federation requests that need no signature: the server's version and its
/// signing keys, as every remote server asks before it talks to this one. Returns the result
/// and the version string the server reported.
pub fn federation(addr: &str, w: &Workload, sampler: &mut Sampler) -> (Federation, String) {
    let t0 = Instant::now();
    let threads = 8.min(w.federation_requests.max(1));
    let version = Arc::new(Mutex::new(String::new()));
    let out: Arc<Mutex<(Vec<f64>, Vec<String>)>> = Arc::new(Mutex::new((Vec::new(), Vec::new())));
    let mut hs = Vec::new();
    for t in 0..threads {
        let (addr, out, version) = (addr.to_string(), out.clone(), version.clone());
        let n = w.federation_requests;
        hs.push(std::thread::spawn(move || {
            for i in (t..n).step_by(threads) {
                let uri = if i % 2 == 0 {
                    "/_matrix/federation/v1/version"
                } else {
                    "/_matrix/key/v2/server"
                };
                let s = Instant::now();
                let r = http::request(&addr, "GET", uri, &[], None, REQUEST_TIMEOUT);
                let ms = s.elapsed().as_secs_f64() * 1000.0;
                let mut o = out.lock().expect("federation lock");
                match r {
                    Ok(r) if r.status == 200 => {
                        let v = r.json();
                        let ok = if i % 2 == 0 {
                            let name = v["server"]["name"].as_str().unwrap_or_default();
                            let ver = v["server"]["version"].as_str().unwrap_or_default();
                            if !ver.is_empty() {
                                *version.lock().expect("version lock") = format!("{name} {ver}");
                            }
                            !ver.is_empty()
                        } else {
                            v["verify_keys"].as_object().is_some_and(|k| !k.is_empty())
                        };
                        if ok {
                            o.0.push(ms);
                        } else {
                            o.1.push(format!("{uri}: unexpected answer"));
                        }
                    }
                    Ok(r) => o.1.push(format!("{uri}: HTTP {}", r.status)),
                    Err(e) => o.1.push(format!("{uri}: {e:#}")),
                }
            }
        }));
    }
    for h in hs {
        let _ = h.join();
    }
    let secs = t0.elapsed().as_secs_f64();
    let (ms, errors) = std::mem::take(&mut *out.lock().expect("federation lock"));
    let version = version.lock().expect("version lock").clone();
    (
        Federation {
            requests: w.federation_requests,
            errors: errors.len(),
            error_samples: samples(&errors),
            throughput: cgroup_round(ms.len() as f64 / secs.max(0.001)),
            ms: Pct::of(&ms),
            phase: Phase {
                seconds: cgroup_round(secs),
                containers: sampler.phase(),
            },
        },
        version,
    )
}

/// Why a step broke down, if it did.
pub fn broke(s: &Step, b: &Breakdown) -> Option<String> {
    let mut why = Vec::new();
    if s.sent > 0 && s.errors as f64 / s.sent as f64 > b.error_ratio {
        why.push(format!("{} of {} sends failed", s.errors, s.sent));
    }
    if s.send_ms.p95 > b.send_p95_ms {
        why.push(format!("send p95 {:.0} ms", s.send_ms.p95));
    }
    if s.expected_deliveries > s.delivered {
        why.push(format!(
            "{} of {} deliveries missing",
            s.expected_deliveries - s.delivered,
            s.expected_deliveries
        ));
    }
    if s.delivery_ms.p95 > b.delivery_p95_ms {
        why.push(format!("delivery p95 {:.0} ms", s.delivery_ms.p95));
    }
    if s.throughput < b.min_throughput_ratio * s.rate {
        why.push(format!(
            "{:.1} msg/s acknowledged of {} offered",
            s.throughput, s.rate
        ));
    }
    (!why.is_empty()).then(|| why.join("; "))
}

fn cgroup_round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// The first few distinct errors, with their counts.
fn samples(errors: &[String]) -> Vec<String> {
    let mut n: BTreeMap<&str, usize> = BTreeMap::new();
    for e in errors {
        *n.entry(e.as_str()).or_default() += 1;
    }
    n.into_iter()
        .take(5)
        .map(|(e, k)| format!("{k}x {e}"))
        .collect()
}

/// Sends one message; Ok when the server acknowledged it with an event ID.
fn send(addr: &str, token: &str, room: &str, tag: &str, id: u64) -> Result<(), String> {
    let auth = format!("Bearer {token}");
    let body = json!({"msgtype": "m.text", "body": format!("bench {tag} {id}")}).to_string();
    let uri = format!(
        "/_matrix/client/v3/rooms/{}/send/m.room.message/b{tag}{id}",
        enc(room)
    );
    match http::request(
        addr,
        "PUT",
        &uri,
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        Some(body.as_bytes()),
        REQUEST_TIMEOUT,
    ) {
        Ok(r) if r.status == 200 && r.json()["event_id"].is_string() => Ok(()),
        Ok(r) => Err(format!("send: HTTP {}", r.status)),
        Err(e) => Err(format!("send: {}", e.root_cause())),
    }
}

/// The `/sync` filter: timelines only, enough events per room for the highest rate.
const FILTER: &str = r#"{"room":{"timeline":{"limit":200},"state":{"lazy_load_members":true},"ephemeral":{"not_types":["*"]},"account_data":{"not_types":["*"]}},"presence":{"not_types":["*"]},"account_data":{"not_types":["*"]}}"#;

fn initial_sync(addr: &str, token: &str) -> anyhow::Result<String> {
    let auth = format!("Bearer {token}");
    let r = http::request(
        addr,
        "GET",
        &format!("/_matrix/client/v3/sync?timeout=0&filter={}", enc(FILTER)),
        &[("Authorization", &auth)],
        None,
        Duration::from_secs(60),
    )?;
    ensure!(r.status == 200, "initial sync: HTTP {}", r.status);
    r.json()["next_batch"]
        .as_str()
        .map(String::from)
        .context("initial sync: no next_batch")
}

/// One user's `/sync` loop: records when each of this run's messages first reached the user.
#[allow(clippy::too_many_arguments)]
fn sync_loop(
    addr: &str,
    token: &str,
    mut since: String,
    user: usize,
    tag: &str,
    timeout_ms: u64,
    arrivals: &Mutex<HashMap<(u64, usize), Instant>>,
    stop: &AtomicBool,
) {
    let auth = format!("Bearer {token}");
    let prefix = format!("bench {tag} ");
    let filter = enc(FILTER);
    while !stop.load(Ordering::Relaxed) {
        let uri = format!(
            "/_matrix/client/v3/sync?timeout={timeout_ms}&since={}&filter={filter}",
            enc(&since)
        );
        let r = http::request(
            addr,
            "GET",
            &uri,
            &[("Authorization", &auth)],
            None,
            Duration::from_millis(timeout_ms) + REQUEST_TIMEOUT,
        );
        let now = Instant::now();
        let Ok(r) = r
            .map_err(|_| ())
            .and_then(|r| (r.status == 200).then_some(r).ok_or(()))
        else {
            // A failed sync is retried after a pause; a missed message shows as not delivered.
            std::thread::sleep(Duration::from_millis(500));
            continue;
        };
        let v = r.json();
        if let Some(rooms) = v["rooms"]["join"].as_object() {
            let mut a = arrivals.lock().expect("arrivals lock");
            for room in rooms.values() {
                for ev in room["timeline"]["events"].as_array().into_iter().flatten() {
                    if let Some(id) = ev["content"]["body"]
                        .as_str()
                        .and_then(|b| b.strip_prefix(&prefix))
                        .and_then(|id| id.parse::<u64>().ok())
                    {
                        a.entry((id, user)).or_insert(now);
                    }
                }
            }
        }
        if let Some(n) = v["next_batch"].as_str() {
            since = n.to_string();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_is_the_same_every_time() {
        let w = plan(false);
        let a = memberships(&w);
        assert_eq!(a, memberships(&w));
        assert_eq!(
            a.iter().map(Vec::len).collect::<Vec<_>>(),
            w.rooms,
            "each room has its planned size"
        );
        for m in &a {
            let mut s = m.clone();
            s.sort();
            s.dedup();
            assert_eq!(s.len(), m.len(), "no user twice in a room");
        }
        let (mut r1, mut r2) = (Rng::new(w.seed), Rng::new(w.seed));
        let s1 = step_messages(&mut r1, &a, 8.0, 12.0, 0);
        assert_eq!(s1, step_messages(&mut r2, &a, 8.0, 12.0, 0));
        assert_eq!(s1.len(), 96);
        assert_eq!(s1[1].due, 0.125);
        assert!(s1.iter().all(|p| a[p.room].contains(&p.sender)));
        let rooms_used: std::collections::BTreeSet<usize> = s1.iter().map(|p| p.room).collect();
        assert_eq!(rooms_used.len(), a.len(), "every room gets messages");
    }

    #[test]
    fn the_plans_stay_within_their_bounds() {
        for quick in [true, false] {
            let w = plan(quick);
            let messages: f64 = w.rates.iter().map(|r| r * w.step_seconds).sum();
            assert!(
                messages <= w.max_messages as f64,
                "quick={quick}: {messages}"
            );
            let ladder: f64 =
                w.rates.len() as f64 * (w.step_seconds + DELIVERY_GRACE.as_secs_f64());
            assert!(ladder + w.idle_seconds < w.max_run_seconds, "quick={quick}");
        }
    }

    #[test]
    fn a_step_breaks_down_for_each_reason() {
        let b = plan(false).breakdown;
        let good = Step {
            rate: 10.0,
            sent: 100,
            ok: 100,
            throughput: 10.0,
            send_ms: Pct::of(&[50.0; 100]),
            delivery_ms: Pct::of(&[80.0; 100]),
            delivered: 300,
            expected_deliveries: 300,
            ..Default::default()
        };
        assert_eq!(broke(&good, &b), None);
        let errs = Step {
            errors: 2,
            ok: 98,
            ..good.clone()
        };
        assert!(broke(&errs, &b).unwrap().contains("2 of 100 sends failed"));
        let slow = Step {
            send_ms: Pct::of(&[2500.0; 10]),
            ..good.clone()
        };
        assert!(broke(&slow, &b).unwrap().contains("send p95 2500 ms"));
        let lost = Step {
            delivered: 290,
            ..good.clone()
        };
        assert!(
            broke(&lost, &b)
                .unwrap()
                .contains("10 of 300 deliveries missing")
        );
        let behind = Step {
            throughput: 7.0,
            ..good.clone()
        };
        assert!(
            broke(&behind, &b)
                .unwrap()
                .contains("7.0 msg/s acknowledged of 10 offered")
        );
    }

    #[test]
    fn seeded_bytes() {
        let (mut a, mut b) = (Rng::new(1), Rng::new(1));
        let x = a.bytes(1000);
        assert_eq!(x.len(), 1000);
        assert_eq!(x, b.bytes(1000));
        assert_ne!(x, Rng::new(2).bytes(1000));
    }
}
