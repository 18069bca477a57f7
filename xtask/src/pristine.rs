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
//! TLS with a CA of its own (ours does), so that PyPI answers inside as it does outside.
//!
//! Inside, every `run:` step of the workflow's container job runs, in order, as GitHub runs it
//! ([`job_steps`]): "Base packages", then `cargo xtask ci --no-docker` (setup, check, fmt,
//! clippy, the tests, the site), with `GITHUB_ACTIONS=true` and the runner's files
//! (`GITHUB_OUTPUT`, `GITHUB_PATH`, `GITHUB_STEP_SUMMARY`) in the container's `/tmp`, so the
//! annotations and the step summary are exercised too; the summary is printed at the end. The one
//! step left out is [`TOOLCHAIN_STEP`]: rustup's installer is not reachable from here, and the
//! host's toolchain is mounted instead. The `uses:` steps (checkout, cache, uploads) are
//! GitHub's own. The container has no Docker daemon, as on GitHub.

use anyhow::{Context, bail};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

/// The workflow, and its job that runs in the `debian:12` container.
pub const WORKFLOW: &str = ".github/workflows/ci.yml";
pub const JOB: &str = "ci";
/// The step of that job that installs the Rust toolchain (not run here: see the module doc).
pub const TOOLCHAIN_STEP: &str = "Rust toolchain";
/// Where Debian keeps locally added CA certificates (`update-ca-certificates` reads it).
const EXTRA_CA_DIR: &str = "/usr/local/share/ca-certificates";

/// The `(name, script)` of every `run:` step of `job` in a workflow, in order, less
/// [`TOOLCHAIN_STEP`]. A script with a `${{ }}` expression (which only GitHub evaluates) or an
/// `if:` is refused.
pub fn job_steps(workflow: &Path, job: &str) -> anyhow::Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(workflow)
        .with_context(|| format!("cannot read {}", workflow.display()))?;
    let loaded = crate::yaml::load(&text)
        .map_err(|e| anyhow::anyhow!("{}: {}", workflow.display(), e.message))?;
    let doc = loaded.docs.first().context("empty workflow")?;
    let job_node = doc
        .get("jobs")
        .and_then(|j| j.get(job))
        .with_context(|| format!("{} has no job `{job}`", workflow.display()))?;
    let mut out = Vec::new();
    for (i, step) in job_node
        .get("steps")
        .and_then(|s| s.as_seq())
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let Some(run) = step.get("run").and_then(|r| r.as_str()) else {
            continue;
        };
        let name = step
            .get("name")
            .and_then(|n| n.as_str())
            .map_or_else(|| format!("step {}", i + 1), str::to_string);
        if name == TOOLCHAIN_STEP {
            continue;
        }
        if run.contains("${{") || step.get("if").is_some() {
            bail!(
                "{}:{}: step {name:?} of job `{job}` has a `${{{{ }}}}` expression or an `if:`, which only GitHub evaluates: keep the container job's run: steps free of them",
                workflow.display(),
                step.line()
            );
        }
        out.push((name, run.to_string()));
    }
    if out.is_empty() {
        bail!("{}: job `{job}` has no run: step", workflow.display());
    }
    Ok(out)
}

/// The `container.options` of `job` (what GitHub adds to `docker create`), split into words.
pub fn container_options(workflow: &Path, job: &str) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(workflow)
        .with_context(|| format!("cannot read {}", workflow.display()))?;
    let loaded = crate::yaml::load(&text)
        .map_err(|e| anyhow::anyhow!("{}: {}", workflow.display(), e.message))?;
    let doc = loaded.docs.first().context("empty workflow")?;
    Ok(doc
        .path(&["jobs", job, "container", "options"])
        .and_then(|o| o.as_str())
        .map(|o| o.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default())
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

fn home_of(var: &str, default: &str) -> PathBuf {
    std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into())).join(default)
    })
}

/// Runs setup and the test suite in the pristine container; the exit status is theirs.
pub fn run(root: &Path) -> anyhow::Result<ExitCode> {
    let image = crate::images::pristine_debian()?;
    let steps = job_steps(&root.join(WORKFLOW), JOB)?;
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
    let mut script = String::from(
        "set -euo pipefail\n\
         export DEBIAN_FRONTEND=noninteractive\n\
         export GITHUB_ACTIONS=true GITHUB_OUTPUT=/tmp/github-output GITHUB_PATH=/tmp/github-path GITHUB_STEP_SUMMARY=/tmp/github-step-summary.md\n\
         trap 'echo \"==> pristine: the step summary\"; cat \"$GITHUB_STEP_SUMMARY\" 2>/dev/null || true' EXIT\n",
    );
    for (i, (name, run)) in steps.iter().enumerate() {
        script.push_str(&format!(
            "echo {}\n(\n{run}\n)\n",
            shell_quote(&format!(
                "==> pristine: {WORKFLOW} job {JOB}, step {name:?}"
            ))
        ));
        // The certificates go in once the base packages (ca-certificates) are there.
        if i == 0 {
            script.push_str(&trust);
        }
    }
    let mut c = Command::new("docker");
    // The job's own `container.options`, and Docker's defaults otherwise (a 64 MiB /dev/shm
    // among them), as GitHub's container job gets.
    let options = container_options(&root.join(WORKFLOW), JOB)?;
    c.args(["run", "--rm", "--init"])
        .args(&options)
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
        .args(["-e", "CI=true", "-e", "CARGO_TERM_COLOR=never"]);
    if has_extra_ca {
        c.arg("-v").arg(format!("{EXTRA_CA_DIR}:{EXTRA_CA_DIR}:ro"));
    }
    // A machine shared with others limits its builds; the container keeps to the same limit.
    if let Ok(jobs) = std::env::var("CARGO_BUILD_JOBS") {
        c.arg("-e").arg(format!("CARGO_BUILD_JOBS={jobs}"));
    }
    if let Some(t) = toolchain {
        c.arg("-e").arg(format!("RUSTUP_TOOLCHAIN={t}"));
    }
    c.arg(&image).args(["bash", "-c", &script]);
    eprintln!("pristine: the {JOB} job of {WORKFLOW} in a container of {image}");
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
    fn the_container_job_is_base_packages_then_cargo_xtask_ci() {
        let steps =
            super::job_steps(&crate::project_root().join(super::WORKFLOW), super::JOB).unwrap();
        assert_eq!(steps[0].0, "Base packages");
        assert!(steps[0].1.contains("apt-get install"), "{steps:?}");
        assert!(
            steps
                .iter()
                .any(|(_, run)| run.trim() == "cargo xtask ci --no-docker"),
            "{steps:?}"
        );
        assert!(steps.iter().all(|(n, _)| n != super::TOOLCHAIN_STEP));
        let wf = crate::project_root().join(super::WORKFLOW);
        assert!(
            super::container_options(&wf, super::JOB)
                .unwrap()
                .is_empty()
        );
        assert_eq!(super::shell_quote("it's"), "'it'\\''s'");
    }
}
