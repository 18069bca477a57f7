//! The reader's own reverse proxy in front of the deployment: the book's nginx site file and
//! Caddyfile (`outer-proxy/` of the tree), each run by the real program from Debian's packages
//! on the host, listening on a loopback port, in front of the running deployment.
//!
//! A file is run as the book gives it except what only the reader's host has, each replaced
//! where it must match exactly (or the step fails): the port 443 it listens on becomes a free
//! loopback port, the certificate becomes one made for the run (for the same name), and Caddy
//! gets global options that keep it from asking Let's Encrypt or opening port 80. The nginx site
//! goes into a minimal `http` block of its own, as Debian's `nginx.conf` includes it.
//!
//! For each proxy:
//! 1. the program's own check of the file (`nginx -t`, `caddy validate`);
//! 2. the proxy in front of a probe that records what it receives: the URI arrives byte for byte
//!    as the client sent it (`%2F`, `%23`, `//`, `%2E%2E`), `X-Forwarded-For` is the client's
//!    address even when the client forged one, `X-Forwarded-Proto` is `https`, and a path that is
//!    not Matrix's is not passed on;
//! 3. the proxy in front of the deployment: the smoke steps, and a 50 MB upload downloaded
//!    back identical; the body limit is at least Synapse's `max_upload_size`.

use super::report::{Report, Step};
use super::{Stack, client, http};
use crate::outer_proxy::{self as model, Kind};
use anyhow::{Context, bail, ensure};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The name the proxies serve and the test certificate carries (the book's `matrix.` host).
const NAME: &str = super::variants::TLS_NAME;

/// The size of the upload sent through each proxy.
pub const UPLOAD_BYTES: usize = 50 * 1024 * 1024;

/// Runs both proxies in front of the live deployment, when the book has their files.
pub fn check(s: &Stack, secret: &str, report: &mut Report) {
    for kind in Kind::ALL {
        let Some(f) = s.tree.get(kind.file()) else {
            continue;
        };
        let mut sub = Report::default();
        let t = Instant::now();
        if let Err(e) = one(s, kind, &f.content, secret, &mut sub) {
            sub.push(Step::fail(
                format!("in front of the deployment ({})", kind.file()),
                format!("{e:#}"),
                t.elapsed().as_secs_f64(),
            ));
        }
        for mut st in sub.steps {
            st.name = format!("[outer {}] {}", kind.label(), st.name);
            report.steps.push(st);
        }
    }
}

fn one(
    s: &Stack,
    kind: Kind,
    book_text: &str,
    secret: &str,
    report: &mut Report,
) -> anyhow::Result<()> {
    let dir = s.paths.base.join("outer").join(kind.program());
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let dir = dir.canonicalize()?;
    let deployment = s.client_addr()?;
    let t = Instant::now();
    let tls = super::tls::issue(
        &dir.join("ca"),
        &dir.join("tls/fullchain.pem"),
        &dir.join("tls/privkey.pem"),
        NAME,
    )?;
    let limit = model::body_limit(kind, book_text)?;
    let (max_upload, _) = model::max_upload_size(&s.tree).context("no synapse/homeserver.yaml")?;
    report.push(Step::new(
        "the body limit is at least Synapse's max_upload_size",
        limit >= max_upload,
        format!("{limit} bytes in front, max_upload_size {max_upload} bytes"),
        t.elapsed(),
    ));

    // 1. The program's own check.
    let port = free_port()?;
    let t = Instant::now();
    let conf = Run::write(kind, &dir, book_text, port, &deployment)?;
    let r = conf.validate()?;
    report.push(Step::new(
        match kind {
            Kind::Nginx => "nginx -t on the site file",
            Kind::Caddy => "caddy validate on the Caddyfile",
        },
        r.0,
        r.1,
        t.elapsed(),
    ));
    ensure!(r.0, "the configuration does not load");

    // 2. In front of the probe.
    let t = Instant::now();
    let probe = Probe::start()?;
    let probe_addr = format!("127.0.0.1:{}", probe.port);
    let conf = Run::write(kind, &dir, book_text, port, &deployment)?
        .with_upstream_replaced(&deployment, &probe_addr)?;
    let r = {
        let _proxy = conf.start(port)?;
        probe_requests(&probe, port, &tls)
    };
    report.push(Step::new(
        "the URI unchanged, X-Forwarded-For and -Proto set, other paths not passed",
        r.is_ok(),
        r.unwrap_or_else(|e| format!("{e:#}")),
        t.elapsed(),
    ));

    // 3. In front of the deployment.
    let conf = Run::write(kind, &dir, book_text, port, &deployment)?;
    let _proxy = conf.start(port)?;
    let mut c = client::Client::new(&format!("127.0.0.1:{port}"));
    c.tls = Some(tls);
    c.timeout = Duration::from_secs(120);
    let st = client::smoke(&mut c, secret, report)?;
    let t = Instant::now();
    let r = upload(&mut c, &st);
    report.push(Step::new(
        "a 50 MB upload, downloaded back identical",
        r.is_ok(),
        r.unwrap_or_else(|e| format!("{e:#}")),
        t.elapsed(),
    ));
    Ok(())
}

/// A configuration written for one run of a proxy.
struct Run {
    kind: Kind,
    dir: PathBuf,
    /// The file the program is started with.
    config: PathBuf,
}

impl Run {
    /// Writes the book's file with the host-only parts replaced (see the module's comment),
    /// passing on to `upstream` what the book passes to the deployment.
    fn write(
        kind: Kind,
        dir: &Path,
        book_text: &str,
        port: u16,
        deployment: &str,
    ) -> anyhow::Result<Run> {
        let cert = dir.join("tls/fullchain.pem");
        let key = dir.join("tls/privkey.pem");
        let text = match kind {
            Kind::Nginx => model::nginx_site(book_text, port, &cert, &key)?,
            Kind::Caddy => model::caddyfile(book_text, NAME, port, &cert, &key)?,
        };
        ensure!(
            text.contains(deployment),
            "{} does not pass requests to {deployment}, where the deployment's nginx is published",
            kind.file()
        );
        let config = match kind {
            Kind::Nginx => {
                std::fs::write(dir.join("site.conf"), &text)?;
                for d in ["body", "proxy", "fastcgi", "uwsgi", "scgi", "logs"] {
                    std::fs::create_dir_all(dir.join(d))?;
                }
                let d = dir.display();
                let main = format!(
                    "# The http block of Debian's nginx.conf, reduced to what the test needs.\n\
                     user root;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/logs/error.log;\n\
                     events {{}}\nhttp {{\n    access_log {d}/logs/access.log;\n\
                     client_body_temp_path {d}/body;\n    proxy_temp_path {d}/proxy;\n\
                     fastcgi_temp_path {d}/fastcgi;\n    uwsgi_temp_path {d}/uwsgi;\n\
                     scgi_temp_path {d}/scgi;\n    include {d}/site.conf;\n}}\n"
                );
                let p = dir.join("nginx.conf");
                std::fs::write(&p, main)?;
                p
            }
            Kind::Caddy => {
                let p = dir.join("Caddyfile");
                std::fs::write(&p, &text)?;
                p
            }
        };
        Ok(Run {
            kind,
            dir: dir.to_path_buf(),
            config,
        })
    }

    /// The same configuration passing to `to` instead of `from`.
    fn with_upstream_replaced(self, from: &str, to: &str) -> anyhow::Result<Run> {
        let file = match self.kind {
            Kind::Nginx => self.dir.join("site.conf"),
            Kind::Caddy => self.config.clone(),
        };
        let text = std::fs::read_to_string(&file)?;
        std::fs::write(&file, text.replace(from, to))?;
        Ok(self)
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(self.kind.program());
        c.args(args);
        // Caddy keeps its state under $XDG_DATA_HOME/caddy and $XDG_CONFIG_HOME/caddy.
        c.env("HOME", &self.dir)
            .env("XDG_DATA_HOME", self.dir.join("data"))
            .env("XDG_CONFIG_HOME", self.dir.join("config"));
        c
    }

    fn args(&self, check: bool) -> Vec<String> {
        let conf = self.config.display().to_string();
        match self.kind {
            Kind::Nginx => {
                let mut a = vec![
                    "-p".into(),
                    format!("{}/", self.dir.display()),
                    "-c".into(),
                    conf,
                    "-e".into(),
                    format!("{}/logs/error.log", self.dir.display()),
                ];
                if check {
                    a.push("-t".into());
                } else {
                    a.extend(["-g".into(), "daemon off;".into()]);
                }
                a
            }
            Kind::Caddy => vec![
                if check { "validate" } else { "run" }.into(),
                "--config".into(),
                conf,
                "--adapter".into(),
                "caddyfile".into(),
            ],
        }
    }

    /// The program's own check: (passed, its output).
    fn validate(&self) -> anyhow::Result<(bool, String)> {
        let args = self.args(true);
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let r = super::docker::run_with(self.command(&argv), None, Duration::from_secs(60))
            .with_context(|| {
                format!(
                    "cannot run `{}` (Debian package `{}`: `cargo xtask setup debian`)",
                    self.kind.program(),
                    self.kind.program()
                )
            })?;
        let text = r.text();
        let last = text
            .lines()
            .rfind(|l| !l.trim().is_empty())
            .unwrap_or_default()
            .to_string();
        Ok((r.ok, if r.ok { last } else { text }))
    }

    /// Starts the proxy; it runs until the returned guard is dropped.
    fn start(&self, port: u16) -> anyhow::Result<Running> {
        use std::os::unix::process::CommandExt;
        let args = self.args(false);
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let log = std::fs::File::create(self.dir.join("run.log"))?;
        let child = self
            .command(&argv)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {}", self.kind.program()))?;
        let mut running = Running {
            child,
            log: self.dir.join("run.log"),
        };
        let t = Instant::now();
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(running);
            }
            if let Some(status) = running.child.try_wait()? {
                bail!(
                    "{} exited ({status}) before listening on 127.0.0.1:{port}:\n{}",
                    self.kind.program(),
                    running.output()
                );
            }
            if t.elapsed() > Duration::from_secs(30) {
                bail!(
                    "{} is not listening on 127.0.0.1:{port} after 30 s:\n{}",
                    self.kind.program(),
                    running.output()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A running proxy, stopped (the whole process group) when dropped.
struct Running {
    child: Child,
    log: PathBuf,
}

impl Running {
    fn output(&self) -> String {
        super::docker::tail(&std::fs::read_to_string(&self.log).unwrap_or_default(), 20)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let pgid = rustix::process::Pid::from_raw(self.child.id() as i32);
        // SIGTERM: nginx's master and Caddy stop their workers and exit; then the group is
        // killed in case anything is left.
        if let Some(g) = pgid {
            let _ = rustix::process::kill_process_group(g, rustix::process::Signal::TERM);
        }
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(10) {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if let Some(g) = pgid {
            let _ = rustix::process::kill_process_group(g, rustix::process::Signal::KILL);
        }
        let _ = self.child.wait();
    }
}

/// A loopback port nothing listens on now (the kernel's choice, released at once).
fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// What the probe received: request target and headers.
#[derive(Debug, Clone)]
struct Received {
    target: String,
    headers: Vec<(String, String)>,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A loopback HTTP server standing where the deployment would, recording each request.
struct Probe {
    port: u16,
    got: Arc<Mutex<Vec<Received>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Probe {
    fn start() -> anyhow::Result<Probe> {
        let l = TcpListener::bind("127.0.0.1:0")?;
        l.set_nonblocking(true)?;
        let port = l.local_addr()?.port();
        let got = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (g, st) = (got.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !st.load(std::sync::atomic::Ordering::Relaxed) {
                match l.accept() {
                    Ok((conn, _)) => {
                        let _ = serve(conn, &g);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Ok(Probe {
            port,
            got,
            stop,
            thread: Some(thread),
        })
    }

    fn take(&self) -> Vec<Received> {
        std::mem::take(&mut *self.got.lock().expect("probe lock"))
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads one request (head and a Content-Length body), records it, then answers `200 {}` and
/// closes: recorded before the answer, so the client sees it once its response arrived.
fn serve(mut conn: std::net::TcpStream, got: &Mutex<Vec<Received>>) -> Option<()> {
    conn.set_nonblocking(false).ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p;
        }
        let n = conn.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let target = lines.next()?.split(' ').nth(1)?.to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut have = buf.len() - end - 4;
    while have < len {
        let n = conn.read(&mut chunk).ok()?;
        if n == 0 {
            break;
        }
        have += n;
    }
    got.lock()
        .expect("probe lock")
        .push(Received { target, headers });
    conn.write_all(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
    )
    .ok()
}

/// URIs a proxy must pass on byte for byte: percent-encoded separators and dots, a double slash.
const RAW_URIS: &[&str] = &[
    "/_matrix/client/v3/directory/room/%23team%2Fops%3Aexample.com",
    "/_matrix/media/v3/thumbnail/example.com//a%2E%2E%2Fb?width=32&height=32&x=%2F",
    "/_synapse/client/probe%20x",
    "/.well-known/matrix/server",
];

/// Sends the raw URIs (with a forged `X-Forwarded-For` and `-Proto`) and a path outside
/// Matrix's through the proxy, and compares what the probe received.
fn probe_requests(probe: &Probe, port: u16, tls: &http::Tls) -> anyhow::Result<String> {
    let addr = format!("127.0.0.1:{port}");
    let forged = [
        ("X-Forwarded-For", "203.0.113.7"),
        ("X-Forwarded-Proto", "http"),
    ];
    let mut problems = Vec::new();
    for uri in RAW_URIS {
        probe.take();
        let r = http::request_over(
            &addr,
            Some(tls),
            "GET",
            uri,
            &forged,
            None,
            Duration::from_secs(30),
        )?;
        let got = probe.take();
        let Some(g) = got.first() else {
            problems.push(format!("{uri}: not passed on (HTTP {})", r.status));
            continue;
        };
        if g.target != *uri {
            problems.push(format!("{uri}: arrived as {}", g.target));
        }
        let xff = g.header("x-forwarded-for").unwrap_or("(none)");
        if xff != "127.0.0.1" {
            problems.push(format!(
                "{uri}: X-Forwarded-For `{xff}`, expected the client's 127.0.0.1"
            ));
        }
        let proto = g.header("x-forwarded-proto").unwrap_or("(none)");
        if proto != "https" {
            problems.push(format!(
                "{uri}: X-Forwarded-Proto `{proto}`, expected https"
            ));
        }
    }
    probe.take();
    let other = "/wp-admin/";
    let r = http::request_over(
        &addr,
        Some(tls),
        "GET",
        other,
        &[],
        None,
        Duration::from_secs(30),
    )?;
    if !probe.take().is_empty() {
        problems.push(format!("{other}: passed on, though it is no Matrix path"));
    }
    ensure!(problems.is_empty(), "{}", problems.join("\n"));
    Ok(format!(
        "{} URIs arrived byte for byte with X-Forwarded-For 127.0.0.1 (forged 203.0.113.7 \
         dropped) and X-Forwarded-Proto https; {other} answered {} without reaching it",
        RAW_URIS.len(),
        r.status
    ))
}

/// Uploads [`UPLOAD_BYTES`] of pseudo-random bytes and downloads them back.
fn upload(c: &mut client::Client, st: &client::State) -> anyhow::Result<String> {
    let mut data = vec![0u8; UPLOAD_BYTES];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for chunk in data.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let b = x.to_le_bytes();
        chunk.copy_from_slice(&b[..chunk.len()]);
    }
    let auth = format!("Bearer {}", st.alice.token);
    let t = Instant::now();
    let r = c.raw(
        "POST",
        "/_matrix/media/v3/upload?filename=big.bin",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/octet-stream"),
        ],
        Some(&data),
    )?;
    ensure!(
        r.status == 200,
        "upload: HTTP {} {}",
        r.status,
        r.text().chars().take(300).collect::<String>()
    );
    let up = t.elapsed();
    let mxc = r.json()["content_uri"]
        .as_str()
        .context("no content_uri")?
        .to_string();
    let rest = mxc
        .strip_prefix("mxc://")
        .context("content_uri is no mxc URI")?;
    let t = Instant::now();
    let d = c.raw(
        "GET",
        &format!("/_matrix/client/v1/media/download/{rest}"),
        &[("Authorization", &auth)],
        None,
    )?;
    ensure!(d.status == 200, "download: HTTP {}", d.status);
    ensure!(
        d.body == data,
        "download: {} bytes back, {} differ from what was sent",
        d.body.len(),
        if d.body.len() == data.len() {
            "some"
        } else {
            "and they"
        }
    );
    Ok(format!(
        "{} bytes up in {:.1} s and back in {:.1} s ({mxc})",
        data.len(),
        up.as_secs_f64(),
        t.elapsed().as_secs_f64()
    ))
}
