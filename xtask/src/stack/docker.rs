//! The real `docker compose` CLI on the extracted tree.
//!
//! Every call runs `docker compose` in the tree's directory with `COMPOSE_PROJECT_NAME` and
//! `COMPOSE_FILE` in its environment, exactly as a reader's shell would after `cd` into the
//! deployment, except that `COMPOSE_FILE` may add an override file kept *outside* the tree (the
//! stand-in images). So a command the book shows, run through [`Compose::shell`], acts on the
//! same project as the test's own calls.
//!
//! What Compose itself resolved (`docker compose config --format json`: anchors, merges,
//! interpolation, profiles) is the only reading of the Compose file here: [`Model`].

use anyhow::{Context, bail};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// A Compose project: the deployment directory and the files that make it up.
#[derive(Debug, Clone)]
pub struct Compose {
    /// The project directory (holds `docker-compose.yml` and `.env`).
    pub dir: PathBuf,
    /// `COMPOSE_PROJECT_NAME`.
    pub project: String,
    /// `COMPOSE_FILE`, in order (the tree's file first, then overrides).
    pub files: Vec<PathBuf>,
}

/// The result of one command.
#[derive(Debug, Clone)]
pub struct Ran {
    pub ok: bool,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    fn of(o: Output) -> Self {
        Ran {
            ok: o.status.success(),
            code: o.status.code(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
    /// stdout then stderr.
    pub fn text(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// Runs `cmd` with `stdin` fed to it, capturing both outputs, killed after `timeout`.
pub fn run_with(mut cmd: Command, stdin: Option<&str>, timeout: Duration) -> anyhow::Result<Ran> {
    use std::os::unix::process::CommandExt;
    let shown = format!("{cmd:?}");
    // A process group of its own: on timeout the whole group is killed, so a grandchild that
    // holds the output pipes open (`docker compose logs -f` under `bash -c`) cannot keep the
    // reader waiting for an end of file that never comes.
    let mut child = cmd
        .process_group(0)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {shown}"))?;
    if let (Some(text), Some(mut si)) = (stdin, child.stdin.take()) {
        // A command that exits without reading its input is not an error here.
        let _ = si.write_all(text.as_bytes());
    }
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(out) => {
            let _ = waiter.join();
            Ok(Ran::of(
                out.with_context(|| format!("waiting for {shown}"))?,
            ))
        }
        Err(_) => {
            let _ = rustix::process::kill_process_group(
                rustix::process::Pid::from_raw(pid as i32).expect("child pid"),
                rustix::process::Signal::KILL,
            );
            let _ = waiter.join();
            bail!("{shown} did not finish within {} s", timeout.as_secs())
        }
    }
}

/// A container of the project, as `docker compose ps --format json` lists it.
#[derive(Debug, Clone, Deserialize)]
pub struct Container {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(rename = "Service")]
    pub service: String,
    #[serde(rename = "State")]
    pub state: String,
    #[serde(rename = "Health", default)]
    pub health: String,
    #[serde(rename = "ExitCode", default)]
    pub exit_code: i64,
    #[serde(rename = "Image", default)]
    pub image: String,
}

/// What `docker inspect` says of a container that the test needs.
#[derive(Debug, Clone, Default)]
pub struct Inspected {
    /// The host PID of the container's process 1 (0 when not running).
    pub pid: i32,
    pub restart_count: u32,
    pub health: Option<String>,
    pub running: bool,
    pub started_at: String,
}

/// One service as Compose resolved it.
#[derive(Debug, Clone, Deserialize)]
pub struct ModelService {
    #[serde(default)]
    pub image: Option<String>,
    #[serde(default)]
    pub command: Option<Vec<String>>,
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default)]
    pub profiles: Vec<String>,
    #[serde(default)]
    pub environment: BTreeMap<String, Option<String>>,
    #[serde(default)]
    pub ports: Vec<ModelPort>,
    #[serde(default)]
    pub depends_on: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    pub healthcheck: Option<serde_json::Value>,
    #[serde(default)]
    pub restart: Option<String>,
    #[serde(default)]
    pub volumes: Vec<ModelVolume>,
    /// `build:` (context, dockerfile), when Compose builds the image itself.
    #[serde(default)]
    pub build: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ModelPort {
    #[serde(default)]
    pub host_ip: Option<String>,
    #[serde(default)]
    pub published: Option<String>,
    pub target: u16,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ModelVolume {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub source: Option<String>,
    pub target: String,
}

/// The resolved Compose file: `docker compose --profile '*' config --format json`.
#[derive(Debug, Clone, Deserialize)]
pub struct Model {
    pub services: BTreeMap<String, ModelService>,
}

impl ModelService {
    /// The environment with every value present.
    pub fn env(&self) -> BTreeMap<String, String> {
        self.environment
            .iter()
            .map(|(k, v)| (k.clone(), v.clone().unwrap_or_default()))
            .collect()
    }
    /// `(host address, host port)` of each published port.
    pub fn published(&self) -> Vec<(String, u16)> {
        self.ports
            .iter()
            .filter_map(|p| {
                let port = p.published.as_deref()?.parse().ok()?;
                let ip = p.host_ip.clone().unwrap_or_else(|| "0.0.0.0".into());
                Some((ip, port))
            })
            .collect()
    }
    /// The Synapse module this service runs (`synapse.app.homeserver`, ...), if any: the
    /// `-m` of its command, or, for the Synapse image's start script in `run` mode without
    /// one, `SYNAPSE_WORKER` (default `synapse.app.homeserver`), as the script decides. A
    /// service whose entrypoint replaces the start script (a shell that never runs it) runs no
    /// Synapse.
    pub fn synapse_module(&self) -> Option<String> {
        let cmd = self.command.as_deref().unwrap_or_default();
        if let Some(i) = cmd.iter().position(|a| a == "-m") {
            return cmd
                .get(i + 1)
                .filter(|m| m.starts_with("synapse.app."))
                .cloned();
        }
        // The image's start script: its own entrypoint, or one of the Compose file's that
        // hands over to it (`exec /start.py "$@"`).
        let start_script = self
            .entrypoint
            .as_ref()
            .is_none_or(|e| e.iter().any(|a| a.contains("/start.py")))
            && self
                .image
                .as_deref()
                .is_some_and(|i| super::image_name(i) == "synapse");
        (start_script && cmd.first().map(String::as_str) == Some("run")).then(|| {
            self.env()
                .get("SYNAPSE_WORKER")
                .cloned()
                .unwrap_or_else(|| "synapse.app.homeserver".into())
        })
    }
    /// The `--config-path` arguments of a Synapse command (`--config-path X`, `-c X` or
    /// `--config-path=X`).
    pub fn synapse_config_paths(&self) -> Vec<String> {
        let cmd = self.command.as_deref().unwrap_or_default();
        let mut out = Vec::new();
        for (i, a) in cmd.iter().enumerate() {
            if let Some(v) = a.strip_prefix("--config-path=") {
                out.push(v.to_string());
            } else if (a == "--config-path" || a == "-c")
                && let Some(v) = cmd.get(i + 1)
            {
                out.push(v.clone());
            }
        }
        out
    }
}

impl Compose {
    /// The `docker` command with this project's environment, in its directory.
    pub fn docker(&self) -> Command {
        let mut c = Command::new("docker");
        c.current_dir(&self.dir)
            .env("COMPOSE_PROJECT_NAME", &self.project)
            .env("COMPOSE_FILE", self.compose_file_env())
            // No progress bars or colours in captured output.
            .env("COMPOSE_PROGRESS", "plain")
            .env("COMPOSE_ANSI", "never")
            .env("NO_COLOR", "1");
        c
    }

    /// `COMPOSE_FILE`: the files joined with `:`.
    pub fn compose_file_env(&self) -> String {
        self.files
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(":")
    }

    /// `docker compose ARGS...`
    pub fn compose(&self, args: &[&str]) -> Command {
        let mut c = self.docker();
        c.arg("compose").args(args);
        c
    }

    /// Runs `docker compose ARGS` and returns what it did (no error for a non-zero status).
    pub fn run(&self, args: &[&str], timeout: Duration) -> anyhow::Result<Ran> {
        run_with(self.compose(args), None, timeout)
    }

    /// Runs `docker compose ARGS`, failing with its output when it fails.
    pub fn ok(&self, args: &[&str], timeout: Duration) -> anyhow::Result<Ran> {
        let r = self.run(args, timeout)?;
        if !r.ok {
            bail!(
                "docker compose {} failed ({:?}):\n{}",
                args.join(" "),
                r.code,
                tail(&r.text(), 40)
            );
        }
        Ok(r)
    }

    /// A shell command line as a reader types it in the deployment directory (`bash -c`).
    pub fn shell(&self, line: &str, stdin: Option<&str>, timeout: Duration) -> anyhow::Result<Ran> {
        let mut c = Command::new("bash");
        c.arg("-c")
            .arg(line)
            .current_dir(&self.dir)
            .env("COMPOSE_PROJECT_NAME", &self.project)
            .env("COMPOSE_FILE", self.compose_file_env())
            .env("COMPOSE_PROGRESS", "plain")
            .env("COMPOSE_ANSI", "never")
            .env("NO_COLOR", "1");
        run_with(c, stdin, timeout)
    }

    /// The resolved model, every profile included.
    pub fn model(&self) -> anyhow::Result<Model> {
        let r = self.ok(
            &["--profile", "*", "config", "--format", "json"],
            Duration::from_secs(60),
        )?;
        serde_json::from_str(&r.stdout).context("docker compose config printed no valid JSON")
    }

    /// The project's containers, stopped ones included.
    pub fn ps(&self) -> anyhow::Result<Vec<Container>> {
        let r = self.ok(
            &["ps", "--all", "--format", "json"],
            Duration::from_secs(60),
        )?;
        let mut out = Vec::new();
        // Compose prints one JSON object per line (older versions: one array).
        let text = r.stdout.trim();
        if text.starts_with('[') {
            out = serde_json::from_str(text).context("docker compose ps JSON")?;
        } else {
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                out.push(serde_json::from_str(line).context("docker compose ps JSON line")?);
            }
        }
        Ok(out)
    }

    /// The id of the service's (first) container.
    pub fn container(&self, service: &str) -> anyhow::Result<String> {
        let r = self.ok(&["ps", "--all", "-q", service], Duration::from_secs(60))?;
        r.stdout
            .lines()
            .next()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .with_context(|| format!("service `{service}` has no container"))
    }

    /// `docker inspect` of the service's container.
    pub fn inspect(&self, service: &str) -> anyhow::Result<Inspected> {
        let id = self.container(service)?;
        let mut c = self.docker();
        c.args([
            "inspect",
            "--format",
            "{{.State.Pid}}|{{.RestartCount}}|{{if .State.Health}}{{.State.Health.Status}}{{end}}|{{.State.Running}}|{{.State.StartedAt}}",
            &id,
        ]);
        let r = run_with(c, None, Duration::from_secs(30))?;
        if !r.ok {
            bail!("docker inspect {id} failed: {}", r.text().trim());
        }
        let f: Vec<&str> = r.stdout.trim().split('|').collect();
        Ok(Inspected {
            pid: f.first().and_then(|x| x.parse().ok()).unwrap_or(0),
            restart_count: f.get(1).and_then(|x| x.parse().ok()).unwrap_or(0),
            health: f.get(2).filter(|s| !s.is_empty()).map(|s| s.to_string()),
            running: f.get(3) == Some(&"true"),
            started_at: f.get(4).unwrap_or(&"").to_string(),
        })
    }

    /// The healthcheck test of the service's container, as Docker runs it.
    pub fn healthcheck_test(&self, service: &str) -> anyhow::Result<Vec<String>> {
        let id = self.container(service)?;
        let mut c = self.docker();
        c.args(["inspect", "--format", "{{json .Config.Healthcheck}}", &id]);
        let r = run_with(c, None, Duration::from_secs(30))?;
        let v: serde_json::Value = serde_json::from_str(r.stdout.trim()).unwrap_or_default();
        Ok(v["Test"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// `docker compose exec -T` as the container's user, with extra environment; stdin fed.
    pub fn exec(
        &self,
        service: &str,
        argv: &[&str],
        env: &[(&str, &str)],
        stdin: Option<&str>,
        timeout: Duration,
    ) -> anyhow::Result<Ran> {
        let mut c = self.compose(&["exec", "-T"]);
        for (k, v) in env {
            c.arg("-e").arg(format!("{k}={v}"));
        }
        c.arg(service).args(argv);
        run_with(c, stdin, timeout)
    }

    /// Everything the service's containers wrote to stdout and stderr, restarts included.
    pub fn logs(&self, service: &str) -> anyhow::Result<String> {
        let r = self.ok(
            &["logs", "--no-color", "--no-log-prefix", service],
            Duration::from_secs(60),
        )?;
        Ok(r.text())
    }

    /// Kills the service's process 1 with SIGKILL from the host, as the kernel's out-of-memory
    /// killer or a crash would: unlike `docker kill`, which marks the container as stopped by
    /// hand, this leaves the restart policy in charge.
    pub fn crash(&self, service: &str) -> anyhow::Result<i32> {
        let i = self.inspect(service)?;
        if !i.running || i.pid <= 0 {
            bail!("service `{service}` is not running");
        }
        let pid = rustix::process::Pid::from_raw(i.pid).context("pid 0")?;
        rustix::process::kill_process(pid, rustix::process::Signal::KILL)
            .with_context(|| format!("cannot kill pid {} of `{service}` (needs root)", i.pid))?;
        Ok(i.pid)
    }

    /// `down --volumes --remove-orphans` (every profile), then what is left of the project.
    pub fn down(&self) -> anyhow::Result<Vec<String>> {
        let r = self.ok(
            &[
                "--profile",
                "*",
                "down",
                "--volumes",
                "--remove-orphans",
                "--timeout",
                "60",
            ],
            Duration::from_secs(300),
        );
        if let Err(e) = r {
            let text = format!("{e:#}");
            if text.contains("has active endpoints") {
                // Seen once with Docker 20.10 under load, after the kill table: every container
                // was removed, yet the daemon still counted an endpoint on the network, so the
                // network (and its fixed subnet) cannot be removed until the daemon restarts.
                return Err(e.context(
                    "the Docker daemon counts an endpoint on the project's network that no \
                     container holds (`docker network inspect` lists none): a bookkeeping fault of \
                     dockerd, not of the deployment. The network and its subnet stay taken until \
                     dockerd restarts (it then logs `Fixing inconsistent endpoint_cnt`); see the \
                     testing page",
                ));
            }
            return Err(e);
        }
        Ok(self.leftovers())
    }

    /// Containers, volumes and networks still labelled with this project.
    pub fn leftovers(&self) -> Vec<String> {
        let label = format!("label=com.docker.compose.project={}", self.project);
        let mut left = Vec::new();
        for (what, args) in [
            ("container", vec!["ps", "-a", "-q", "--filter", &label]),
            ("volume", vec!["volume", "ls", "-q", "--filter", &label]),
            ("network", vec!["network", "ls", "-q", "--filter", &label]),
        ] {
            let mut c = self.docker();
            c.args(&args);
            match run_with(c, None, Duration::from_secs(30)) {
                Ok(r) if r.ok => {
                    for l in r.stdout.lines().filter(|l| !l.trim().is_empty()) {
                        left.push(format!("{what} {}", l.trim()));
                    }
                }
                Ok(r) => left.push(format!("cannot list {what}s: {}", r.text().trim())),
                Err(e) => left.push(format!("cannot list {what}s: {e:#}")),
            }
        }
        left
    }
}

/// Whether a Docker daemon answers.
pub fn daemon_answers() -> bool {
    let mut c = Command::new("docker");
    c.args(["version", "--format", "{{.Server.Version}}"]);
    run_with(c, None, Duration::from_secs(20)).is_ok_and(|r| r.ok && !r.stdout.trim().is_empty())
}

/// `docker compose version --short`, if the plugin is installed.
pub fn compose_version() -> Option<String> {
    let mut c = Command::new("docker");
    c.args(["compose", "version", "--short"]);
    let r = run_with(c, None, Duration::from_secs(20)).ok()?;
    r.ok.then(|| r.stdout.trim().to_string())
}

/// Whether the image is in the local image store.
pub fn image_present(image: &str) -> bool {
    let mut c = Command::new("docker");
    c.args(["image", "inspect", "--format", "{{.Id}}", image]);
    run_with(c, None, Duration::from_secs(30)).is_ok_and(|r| r.ok)
}

/// Tries `docker pull`; false when no registry answers.
pub fn pull(image: &str) -> bool {
    let mut c = Command::new("docker");
    c.args(["pull", "--quiet", image]);
    run_with(c, None, Duration::from_secs(600)).is_ok_and(|r| r.ok)
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A Compose project name for a checkout: stable per directory, so two checkouts on one
/// machine never act on each other's containers.
pub fn project_name(dir: &Path) -> String {
    let s = dir.to_string_lossy();
    // FNV-1a: short, stable, no dependency.
    let mut h: u64 = 0xcbf29ce484222325;
    for b in s.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("xtask-stack-{:08x}", h as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_names_differ_per_checkout_and_are_valid() {
        let a = project_name(Path::new("/work/main/target/stack/tree"));
        let b = project_name(Path::new("/work/wt/x/target/stack/tree"));
        assert_ne!(a, b);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        );
        assert_eq!(a, project_name(Path::new("/work/main/target/stack/tree")));
    }

    #[test]
    fn model_reads_what_compose_prints() {
        let json = r#"{"name":"x","services":{"rooms1":{"image":"ghcr.io/element-hq/synapse:v1",
          "command":["run","-m","synapse.app.generic_worker","--config-path","/data/homeserver.yaml",
          "--config-path","/data/workers/rooms1.yaml"],"environment":{"UID":"991","X":null},
          "ports":[{"mode":"ingress","host_ip":"127.0.0.1","target":8008,"published":"8008","protocol":"tcp"}]}}}"#;
        let m: Model = serde_json::from_str(json).unwrap();
        let s = &m.services["rooms1"];
        assert_eq!(
            s.synapse_module().as_deref(),
            Some("synapse.app.generic_worker")
        );
        assert_eq!(
            s.synapse_config_paths(),
            ["/data/homeserver.yaml", "/data/workers/rooms1.yaml"]
        );
        assert_eq!(s.published(), [("127.0.0.1".to_string(), 8008)]);
        assert_eq!(s.env()["X"], "");
        let json = r#"{"services":{"w":{"image":"ghcr.io/element-hq/synapse:v1",
          "command":["run","--config-path=/data/a.yaml"],"environment":{"SYNAPSE_WORKER":"synapse.app.generic_worker"}},
          "init":{"image":"ghcr.io/element-hq/synapse:v1","entrypoint":["/bin/sh","-c"],"command":["run"]}}}"#;
        let m: Model = serde_json::from_str(json).unwrap();
        assert_eq!(
            m.services["w"].synapse_module().as_deref(),
            Some("synapse.app.generic_worker")
        );
        assert_eq!(m.services["w"].synapse_config_paths(), ["/data/a.yaml"]);
        assert_eq!(m.services["init"].synapse_module(), None);
    }

    #[test]
    fn run_with_times_out_and_feeds_stdin() {
        let mut c = Command::new("cat");
        c.arg("-");
        let r = run_with(c, Some("hello"), Duration::from_secs(10)).unwrap();
        assert!(r.ok && r.stdout == "hello");
        let mut c = Command::new("sleep");
        c.arg("5");
        let e = run_with(c, None, Duration::from_millis(200)).unwrap_err();
        assert!(format!("{e}").contains("did not finish"));
        // A grandchild holding the output pipe is killed with its parent: the call returns.
        let t = std::time::Instant::now();
        let mut c = Command::new("bash");
        c.arg("-c").arg("sleep 60 & sleep 60; echo never");
        let e = run_with(c, None, Duration::from_millis(300)).unwrap_err();
        assert!(format!("{e}").contains("did not finish"));
        assert!(t.elapsed() < Duration::from_secs(30), "{:?}", t.elapsed());
    }
}
