//! The fresh-machine proof: `cargo xtask setup` and the test suite run inside a container
//! started from the pristine Debian 12 image ([`crate::images::pristine_debian`]), as GitHub's
//! `debian:12` job of `.github/workflows/ci.yml` runs them.
//!
//! Only three things come from this machine: the checkout with its `target/` (mounted at the
//! same path, so the build is reused and every path compiled into the xtask holds), the Rust
//! toolchain (`RUSTUP_HOME`, read-only, and `CARGO_HOME`: no Debian 12 machine has the
//! toolchain, and the workflow installs it with rustup), and nothing else: not this machine's
//! `/usr/local`, its Python or its Debian packages. One piece of the network comes along: the
//! CA certificates of `/usr/local/share/ca-certificates`, when the machine's network intercepts
//! TLS with a CA of its own (ours does), so that PyPI answers inside as it does outside. Inside, the workflow's own "Base packages"
//! step runs first, then `cargo xtask setup`, then `cargo test --workspace --locked`. The
//! container has no Docker daemon: tests that need one are told so with `XTASK_NO_DOCKER=1`.

use anyhow::{Context, bail};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

/// The step of `ci.yml` that installs what the container job needs before the checkout.
const BASE_STEP: &str = "Base packages";
/// Where Debian keeps locally added CA certificates (`update-ca-certificates` reads it).
const EXTRA_CA_DIR: &str = "/usr/local/share/ca-certificates";

/// The script of the named `run:` step of a workflow's container job.
pub fn workflow_step(workflow: &Path, name: &str) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(workflow)
        .with_context(|| format!("cannot read {}", workflow.display()))?;
    let loaded = crate::yaml::load(&text)
        .map_err(|e| anyhow::anyhow!("{}: {}", workflow.display(), e.message))?;
    let doc = loaded.docs.first().context("empty workflow")?;
    let jobs = doc
        .get("jobs")
        .and_then(|j| j.as_map())
        .context("no jobs")?;
    for (_, job) in jobs {
        for step in job
            .get("steps")
            .and_then(|s| s.as_seq())
            .unwrap_or_default()
        {
            if step.get("name").and_then(|n| n.as_str()) == Some(name)
                && let Some(run) = step.get("run").and_then(|r| r.as_str())
            {
                return Ok(run.to_string());
            }
        }
    }
    bail!(
        "{} has no step named {name:?} with a run: script",
        workflow.display()
    )
}

fn home_of(var: &str, default: &str) -> PathBuf {
    std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into())).join(default)
    })
}

/// Runs setup and the test suite in the pristine container; the exit status is theirs.
pub fn run(root: &Path) -> anyhow::Result<ExitCode> {
    let image = crate::images::pristine_debian()?;
    let base = workflow_step(&root.join(".github/workflows/ci.yml"), BASE_STEP)?;
    let cargo_home = home_of("CARGO_HOME", ".cargo").canonicalize()?;
    let rustup_home = home_of("RUSTUP_HOME", ".rustup").canonicalize()?;
    let toolchain = std::env::var("RUSTUP_TOOLCHAIN").ok();
    let root = root.canonicalize()?;
    // The network of these machines intercepts TLS with a CA of its own, which the host trusts
    // (`/usr/local/share/ca-certificates`). The container gets those certificates, and only
    // them, so that it reaches PyPI as the host does; tools are not passed on this way.
    let extra_ca = Path::new(EXTRA_CA_DIR);
    let has_extra_ca = std::fs::read_dir(extra_ca).is_ok_and(|rd| {
        rd.flatten()
            .any(|e| e.path().extension().is_some_and(|x| x == "crt"))
    });
    let trust = if has_extra_ca {
        format!(
            "echo '==> pristine: trusting the network CA of {EXTRA_CA_DIR}'\n\
             update-ca-certificates >/dev/null\n\
             export PIP_CERT=/etc/ssl/certs/ca-certificates.crt SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt\n"
        )
    } else {
        String::new()
    };
    let script = format!(
        "set -euo pipefail\n\
         export DEBIAN_FRONTEND=noninteractive\n\
         echo '==> pristine: {BASE_STEP} (from ci.yml)'\n\
         {base}\n\
         {trust}\
         echo '==> pristine: cargo xtask setup'\n\
         cargo xtask setup\n\
         echo '==> pristine: cargo test --workspace --locked'\n\
         cargo test --workspace --locked\n"
    );
    let mut c = Command::new("docker");
    c.args(["run", "--rm", "--init", "--shm-size", "1g"])
        .args(["--label", "xtask.pristine=1"])
        .arg("-v")
        .arg(format!("{}:{}", root.display(), root.display()))
        .arg("-v")
        .arg(format!("{}:{}", cargo_home.display(), cargo_home.display()))
        .arg("-v")
        .arg(format!(
            "{}:{}:ro",
            rustup_home.display(),
            rustup_home.display()
        ))
        .arg("-w")
        .arg(&root)
        .arg("-e")
        .arg(format!("CARGO_HOME={}", cargo_home.display()))
        .arg("-e")
        .arg(format!("RUSTUP_HOME={}", rustup_home.display()))
        .arg("-e")
        .arg(format!(
            "PATH={}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            cargo_home.display()
        ))
        .args([
            "-e",
            "CI=true",
            "-e",
            "XTASK_NO_DOCKER=1",
            "-e",
            "CARGO_TERM_COLOR=never",
        ]);
    if has_extra_ca {
        c.arg("-v").arg(format!("{EXTRA_CA_DIR}:{EXTRA_CA_DIR}:ro"));
    }
    if let Some(t) = toolchain {
        c.arg("-e").arg(format!("RUSTUP_TOOLCHAIN={t}"));
    }
    c.arg(&image).args(["bash", "-c", &script]);
    eprintln!("pristine: setup and cargo test in a container of {image}");
    let t = std::time::Instant::now();
    let st = c.status().context("cannot run docker")?;
    eprintln!(
        "pristine: {} after {:.0} s",
        if st.success() { "passed" } else { "FAILED" },
        t.elapsed().as_secs_f64()
    );
    Ok(if st.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn ci_yml_has_the_base_packages_step() {
        let s = super::workflow_step(
            &crate::project_root().join(".github/workflows/ci.yml"),
            super::BASE_STEP,
        )
        .unwrap();
        assert!(s.contains("apt-get install"), "{s}");
    }
}
