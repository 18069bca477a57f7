//! The simulator checked against the real nginx, without Synapse.
//!
//! The tree's nginx configuration runs under the installed nginx from a scratch directory, with
//! paths moved into it (the container's `/etc/nginx/`, `/var/log/nginx/`, and every
//! `unix:/...` socket) and the `listen` lines moved to one loopback port; a second nginx listens
//! on every upstream socket and answers with the socket's name. Each sample is sent (its client
//! address in `X-Forwarded-For`, which the book's `real_ip` settings trust from loopback), and
//! nginx's answer (status, or the backend that answered) must be what the simulator says for
//! the same rewritten configuration. Socket paths change, so the ketama ring differs from the
//! book's; what is compared is the algorithm, request by request. Both nginx processes are
//! stopped (SIGTERM to the masters this function started) before it returns.

use super::router::{DEFAULT_CLIENT, Outcome, Router};
use super::routes::Sample;
use crate::diagnostics::MdLoc;
use crate::nginx::config::{self, CONTAINER_PREFIX, IMAGE_FILES};
use crate::tree::Tree;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A sample on which nginx and the simulator disagree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disagreement {
    pub loc: MdLoc,
    pub message: String,
}

/// The result of a cross-check run.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub compared: usize,
    pub disagreements: Vec<Disagreement>,
}

struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            // SIGTERM lets the nginx master stop its workers.
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
        }
        for c in &mut self.0 {
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Rewrites one nginx file for the scratch run, line for line.
fn rewrite(text: &str, scratch: &str, port: u16) -> String {
    let etc = format!("{scratch}/etc/nginx/");
    let log = format!("{scratch}/log/");
    let mut out = String::with_capacity(text.len() + 256);
    for line in text.split_inclusive('\n') {
        let t = line.trim_start();
        let word = t
            .split(|c: char| c.is_whitespace() || c == ';')
            .next()
            .unwrap_or("");
        let l = match word {
            "user" | "pid" => format!("# {line}"),
            "listen" => {
                let args: Vec<&str> = t
                    .trim_end()
                    .trim_end_matches(';')
                    .split_whitespace()
                    .skip(1)
                    .collect();
                if args.first().is_some_and(|a| a.starts_with('[')) {
                    format!("# {line}")
                } else {
                    let flags: Vec<&str> = args
                        .iter()
                        .skip(1)
                        .copied()
                        .filter(|f| *f != "ssl" && *f != "http2")
                        .collect();
                    let indent = &line[..line.len() - t.len()];
                    let nl = if line.ends_with('\n') { "\n" } else { "" };
                    format!("{indent}listen 127.0.0.1:{port} {};{nl}", flags.join(" "))
                }
            }
            _ => line.to_string(),
        };
        out.push_str(
            &l.replace(CONTAINER_PREFIX, &etc)
                .replace("/var/log/nginx/", &log)
                .replace("unix:/", &format!("unix:{scratch}/")),
        );
    }
    out
}

fn request(port: u16, method: &str, uri: &str, client: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "{method} {uri} HTTP/1.1\r\nHost: example.com\r\nX-Forwarded-For: {client}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_string());
    Ok((status, body))
}

fn wait_port(port: u16, procs: &mut Procs) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        for c in &mut procs.0 {
            if let Ok(Some(st)) = c.try_wait() {
                let mut err = String::new();
                if let Some(e) = c.stderr.as_mut() {
                    let _ = e.read_to_string(&mut err);
                }
                return Err(format!("nginx exited ({st}): {err}"));
            }
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    Err("nginx did not start listening within 10 s".into())
}

fn spawn(nginx: &Path, conf: &Path, pid: &Path) -> std::io::Result<Child> {
    // The directory of the pid file (the scratch directory) is the prefix: relative paths
    // land in it.
    let prefix = pid
        .parent()
        .map(|p| format!("{}/", p.display()))
        .unwrap_or_default();
    Command::new(nginx)
        .arg("-p")
        .arg(prefix)
        .args(["-e", "stderr", "-g"])
        .arg(format!("daemon off; pid {};", pid.display()))
        .arg("-c")
        .arg(conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
}

/// Sends every sample through the real nginx and compares with the simulator.
pub fn against_nginx(tree: &Tree, samples: &[Sample]) -> Result<Report, String> {
    let nginx = crate::tools::which("nginx")
        .or_else(|| Some(PathBuf::from("/usr/sbin/nginx")).filter(|p| p.exists()))
        .ok_or("nginx is not installed")?;
    let root = config::root_file(tree).ok_or("the tree has no nginx configuration")?;
    let dir = root
        .rsplit_once('/')
        .map_or(String::new(), |(d, _)| format!("{d}/"));
    if let Some((_, why)) = config::load(tree)
        .ok()
        .as_ref()
        .and_then(config::outside_scratch)
    {
        return Err(format!("nginx is not run: {why}"));
    }
    let scratch = crate::contain::scratch("xc", None).map_err(|e| e.to_string())?;
    let result = run(&nginx, tree, samples, &root, &dir, &scratch);
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

fn run(
    nginx: &Path,
    tree: &Tree,
    samples: &[Sample],
    root: &str,
    dir: &str,
    scratch: &Path,
) -> Result<Report, String> {
    let io = |e: std::io::Error| e.to_string();
    let sc = scratch.display().to_string();
    let etc = scratch.join("etc/nginx");
    std::fs::create_dir_all(&etc).map_err(io)?;
    std::fs::create_dir_all(scratch.join("log")).map_err(io)?;
    std::fs::create_dir_all(scratch.join("tmp")).map_err(io)?;
    for f in IMAGE_FILES {
        let src = Path::new("/etc/nginx").join(f);
        if src.exists() {
            std::fs::copy(&src, etc.join(f)).map_err(io)?;
        }
    }
    let port = free_port().map_err(io)?;
    // The rewritten tree: same fragments, so Markdown lines stay right.
    let mut rt = tree.clone();
    for (path, tf) in rt.files.iter_mut() {
        let Some(rel) = path.strip_prefix(dir) else {
            continue;
        };
        if !path.starts_with(dir) || tf.lang != "nginx" && !rel.ends_with(".conf") {
            continue;
        }
        let text = rewrite(&tf.content, &sc, port);
        tf.set_content(text);
        crate::contain::write(&etc, rel, &tf.content).map_err(io)?;
    }
    let router =
        Router::from_tree(&rt).map_err(|d| format!("{} errors building the router", d.len()))?;
    // Backends: one server per upstream socket, answering with the socket's book name.
    let mut sockets: BTreeMap<String, String> = BTreeMap::new();
    for up in router.upstreams.values() {
        for p in &up.peers {
            if let Some(path) = p.name.strip_prefix("unix:") {
                let book_name = format!("unix:{}", path.strip_prefix(&sc).unwrap_or(path));
                sockets.insert(path.to_string(), book_name);
            }
        }
    }
    let mut back = format!(
        "worker_processes 1;\nerror_log {sc}/log/back.log;\nevents {{}}\nhttp {{\n access_log off;\n client_body_temp_path {sc}/tmp/b;\n proxy_temp_path {sc}/tmp/p;\n"
    );
    for (path, name) in &sockets {
        // Every socket lives in the scratch directory: one that would leave it is refused.
        let inside = path
            .strip_prefix(&format!("{sc}/"))
            .and_then(|rel| crate::contain::join(scratch, rel).ok())
            .ok_or_else(|| format!("the socket {name} leaves the scratch directory"))?;
        if let Some(parent) = inside.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        back +=
            &format!(" server {{ listen unix:{path}; location / {{ return 200 \"{name}\"; }} }}\n");
    }
    back += "}\n";
    let back_conf = scratch.join("back.conf");
    std::fs::write(&back_conf, back).map_err(io)?;
    let mut procs = Procs(Vec::new());
    procs
        .0
        .push(spawn(nginx, &back_conf, &scratch.join("back.pid")).map_err(io)?);
    let main_conf = etc.join(root.strip_prefix(dir).unwrap_or(root));
    procs
        .0
        .push(spawn(nginx, &main_conf, &scratch.join("main.pid")).map_err(io)?);
    wait_port(port, &mut procs)?;
    // Backends listen on sockets: wait until each exists.
    let deadline = Instant::now() + Duration::from_secs(10);
    while sockets.keys().any(|p| !Path::new(p).exists()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(25));
    }

    let mut report = Report::default();
    for s in samples {
        let client = s.from.as_deref().unwrap_or(DEFAULT_CLIENT);
        let o: Outcome = router.route_from(&s.method, &s.uri, client);
        let (status, body) = request(port, &s.method, &s.uri, client).map_err(io)?;
        report.compared += 1;
        let book = |srv: &str| {
            srv.strip_prefix("unix:")
                .and_then(|p| sockets.get(p))
                .cloned()
                .unwrap_or_else(|| srv.to_string())
        };
        let agrees = match o.status {
            Some(st) => status == st,
            None if !o.servers.is_empty() => {
                status == 200 && o.servers.iter().any(|x| book(x) == body)
            }
            None => false,
        };
        if !agrees {
            let sim = match (o.status, &o.server) {
                (Some(st), _) => format!("status {st}"),
                (None, Some(x)) => book(x),
                (None, None) => format!(
                    "any of {}",
                    o.servers
                        .iter()
                        .map(|x| book(x))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            report.disagreements.push(Disagreement {
                loc: s.loc.clone(),
                message: format!(
                    "{} {}: the simulator says {sim}, nginx answered {status} {:?}",
                    s.method,
                    s.uri,
                    body.chars().take(80).collect::<String>()
                ),
            });
        }
    }
    drop(procs);
    Ok(report)
}
