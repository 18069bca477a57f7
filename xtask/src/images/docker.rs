//! The few `docker` CLI calls the stand-ins need, with errors that say which call failed.

use anyhow::{Context, bail};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A `docker` command with the legacy builder forced (this machine has no buildx) and no stdin.
pub fn cmd() -> Command {
    let mut c = Command::new("docker");
    c.env("DOCKER_BUILDKIT", "0").stdin(Stdio::null());
    c
}

fn shown(args: &[&str]) -> String {
    format!("docker {}", args.join(" "))
}

/// Runs `docker ARGS`, returning its output whatever the exit status.
pub fn output(args: &[&str]) -> anyhow::Result<Output> {
    cmd().args(args).output().with_context(|| {
        format!(
            "cannot run `{}` (is the docker CLI installed?)",
            shown(args)
        )
    })
}

/// Runs `docker ARGS` and returns its trimmed stdout; fails with its stderr.
pub fn run(args: &[&str]) -> anyhow::Result<String> {
    let out = output(args)?;
    if !out.status.success() {
        bail!(
            "`{}` failed ({}): {}",
            shown(args),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Fails clearly when the Docker daemon does not answer.
pub fn daemon_version() -> anyhow::Result<String> {
    run(&["version", "--format", "{{.Server.Version}}"]).context(
        "the Docker daemon does not answer (is dockerd running, and may this user use it?)",
    )
}

/// The image ID of `image`, or None when there is no such local image.
pub fn image_id(image: &str) -> anyhow::Result<Option<String>> {
    let out = output(&["image", "inspect", "--format", "{{.Id}}", image])?;
    if out.status.success() {
        return Ok(Some(
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
        ));
    }
    let err = String::from_utf8_lossy(&out.stderr);
    if err.contains("No such image") || err.contains("No such object") {
        return Ok(None);
    }
    bail!("`docker image inspect {image}` failed: {}", err.trim())
}

/// `docker inspect` of an image or container, as JSON (the first object).
pub fn inspect(what: &str) -> anyhow::Result<serde_json::Value> {
    let text = run(&["inspect", what])?;
    let mut v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("docker inspect {what}: not JSON"))?;
    Ok(v.get_mut(0)
        .map(serde_json::Value::take)
        .unwrap_or_default())
}

/// A container that is removed (with its anonymous volumes) when dropped.
pub struct Container {
    pub name: String,
}

impl Container {
    /// `docker run -d --name NAME ARGS...`; ARGS holds the options, the image and the command.
    pub fn start(prefix: &str, args: &[&str]) -> anyhow::Result<Container> {
        // Removed on drop even when `run` fails half-way (created but not started).
        let c = Container {
            name: unique_name(prefix),
        };
        let mut all = vec!["run", "-d", "--name", c.name.as_str()];
        all.extend_from_slice(args);
        run(&all)?;
        Ok(c)
    }

    /// `docker exec NAME ARGS...`: exit status and stdout+stderr.
    pub fn exec(&self, args: &[&str]) -> anyhow::Result<(bool, String)> {
        let mut all = vec!["exec", self.name.as_str()];
        all.extend_from_slice(args);
        let out = output(&all)?;
        let mut text = String::from_utf8_lossy(&out.stdout).to_string();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        Ok((out.status.success(), text))
    }

    /// A `.State` field of the container, e.g. `{{.State.Health.Status}}`.
    pub fn state(&self, format: &str) -> anyhow::Result<String> {
        run(&["inspect", "--format", format, &self.name])
    }

    pub fn logs(&self) -> String {
        output(&["logs", &self.name])
            .map(|o| {
                let mut t = String::from_utf8_lossy(&o.stdout).to_string();
                t.push_str(&String::from_utf8_lossy(&o.stderr));
                t
            })
            .unwrap_or_default()
    }

    /// Polls `format` until `done` accepts it or `timeout` passes; returns the last value.
    pub fn wait_state(
        &self,
        format: &str,
        timeout: Duration,
        done: impl Fn(&str) -> bool,
    ) -> anyhow::Result<String> {
        let start = Instant::now();
        loop {
            let v = self.state(format)?;
            if done(&v) || start.elapsed() > timeout {
                return Ok(v);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Polls a command inside the container until it succeeds or `timeout` passes.
    pub fn wait_exec(&self, args: &[&str], timeout: Duration) -> anyhow::Result<(bool, String)> {
        let start = Instant::now();
        loop {
            let r = self.exec(args)?;
            if r.0 || start.elapsed() > timeout {
                return Ok(r);
            }
            if self.state("{{.State.Running}}")? != "true" {
                return Ok((false, format!("container stopped: {}", self.logs())));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = output(&["rm", "-f", "-v", &self.name]);
    }
}

/// A container or volume name no other run (or thread) uses.
pub fn unique_name(prefix: &str) -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}
