//! `cargo xtask setup`: installs what the tests need, at the versions of `versions.toml`, and
//! does nothing for what is already there. Runs unattended on a fresh Debian 12 machine as root
//! (`CI=true`, no stdin): apt never prompts and never starts the services it installs.
//!
//! - `debian`: writes `/usr/sbin/policy-rc.d` (exit 101: "action forbidden", so installing a
//!   daemon does not start it) when missing, then `apt-get update` and
//!   `apt-get install -y --no-install-recommends` of `[debian] packages`, skipped when `dpkg -s`
//!   says every one is installed.
//! - `synapse`: a virtualenv at `target/synapse-venv` with the pinned `matrix-synapse[extras]`
//!   and `psycopg2-binary` (a wheel: no compiler or libpq headers needed), skipped when the
//!   venv already has exactly the pinned version.
//! - `mdbook`: the pinned mdBook and mdbook-mermaid in `target/tools` (see [`crate::site`]).
//! - `npm`: the Node tools of `.ci/node` from their lock file (see [`crate::site`]).

use anyhow::{Context, bail};
use std::path::Path;
use std::process::{Command, Stdio};

/// The parts `setup` knows, in the order it runs them.
pub const PARTS: &[&str] = &["debian", "synapse", "mdbook", "npm"];

/// What a part did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    AlreadyThere(String),
    Installed(String),
    /// Delegated to a part that installs only what is missing and does not say which.
    Ensured(String),
}

const POLICY_RC_D: &str = "/usr/sbin/policy-rc.d";

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let shown = format!("{cmd:?}");
    let st = cmd
        .stdin(Stdio::null())
        .status()
        .with_context(|| format!("cannot run {shown}"))?;
    if !st.success() {
        bail!("{shown} failed ({st})");
    }
    Ok(())
}

/// The Debian packages of versions.toml.
pub fn debian_packages() -> anyhow::Result<Vec<String>> {
    let v = crate::tools::versions()?;
    let list = v
        .get("debian")
        .and_then(|d| d.get("packages"))
        .and_then(|p| p.as_array())
        .context("versions.toml has no [debian] packages")?;
    Ok(list
        .iter()
        .filter_map(|p| p.as_str().map(String::from))
        .collect())
}

/// Packages dpkg does not report as installed, either by name or as a virtual package an
/// installed one provides (Debian 12's `postgresql-contrib-15` is provided by `postgresql-15`).
pub fn missing_packages(pkgs: &[String]) -> Vec<String> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Status}\t${Package}\t${Provides}\n"])
        .stderr(Stdio::null())
        .output();
    let mut have = std::collections::BTreeSet::new();
    if let Ok(o) = out {
        for line in String::from_utf8_lossy(&o.stdout).lines() {
            let mut f = line.split('\t');
            let (Some(status), Some(name)) = (f.next(), f.next()) else {
                continue;
            };
            if !status.contains("install ok installed") {
                continue;
            }
            have.insert(name.to_string());
            for prov in f.next().unwrap_or("").split(',') {
                if let Some(p) = prov.split_whitespace().next() {
                    have.insert(p.to_string());
                }
            }
        }
    }
    pkgs.iter()
        .filter(|p| !have.contains(p.as_str()))
        .cloned()
        .collect()
}

/// Installs the Debian packages that are missing.
pub fn debian() -> anyhow::Result<Outcome> {
    let pkgs = debian_packages()?;
    let missing = missing_packages(&pkgs);
    if missing.is_empty() {
        return Ok(Outcome::AlreadyThere(format!(
            "{} Debian packages",
            pkgs.len()
        )));
    }
    if !Path::new(POLICY_RC_D).exists() {
        std::fs::write(POLICY_RC_D, "#!/bin/sh\n# written by cargo xtask setup: never start services on install\nexit 101\n")
            .with_context(|| format!("cannot write {POLICY_RC_D} (setup needs root)"))?;
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(POLICY_RC_D, std::fs::Permissions::from_mode(0o755))?;
    }
    let apt = |args: &[&str]| -> anyhow::Result<()> {
        run(Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .env("NEEDRESTART_MODE", "a"))
    };
    apt(&["update", "-q"])?;
    let mut args = vec!["install", "-y", "-q", "--no-install-recommends"];
    args.extend(missing.iter().map(String::as_str));
    apt(&args)?;
    let still = missing_packages(&pkgs);
    if !still.is_empty() {
        bail!(
            "apt-get install finished but these are still not installed: {}",
            still.join(" ")
        );
    }
    Ok(Outcome::Installed(missing.join(" ")))
}

/// The Synapse version installed in `venv`, if any.
pub fn installed_synapse(venv: &Path) -> Option<String> {
    let py = venv.join("bin/python");
    let out = Command::new(py)
        .args([
            "-c",
            "import importlib.metadata as m; print(m.version('matrix-synapse'))",
        ])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The pip requirement strings for the pinned Synapse.
pub fn synapse_requirements() -> anyhow::Result<Vec<String>> {
    let v = crate::tools::versions()?;
    let s = v.get("synapse").context("versions.toml has no [synapse]")?;
    let version = s
        .get("version")
        .and_then(|x| x.as_str())
        .context("[synapse] version")?;
    let extras: Vec<&str> = s
        .get("extras")
        .and_then(|x| x.as_array())
        .map(|a| a.iter().filter_map(|e| e.as_str()).collect())
        .unwrap_or_default();
    let mut reqs = vec![if extras.is_empty() {
        format!("matrix-synapse=={version}")
    } else {
        format!("matrix-synapse[{}]=={version}", extras.join(","))
    }];
    if let Some(p) = s.get("psycopg2-binary").and_then(|x| x.as_str()) {
        reqs.push(format!("psycopg2-binary=={p}"));
    }
    Ok(reqs)
}

/// Creates `venv` with the pinned Synapse unless it already has that version.
pub fn synapse(venv: &Path) -> anyhow::Result<Outcome> {
    let want = crate::tools::version("synapse", "version")?;
    if installed_synapse(venv).as_deref() == Some(want.as_str()) {
        return Ok(Outcome::AlreadyThere(format!(
            "matrix-synapse {want} in {}",
            venv.display()
        )));
    }
    if !venv.join("bin/python").exists() {
        let python = crate::tools::which("python3")
            .context("python3 is not installed (run `cargo xtask setup debian`)")?;
        run(Command::new(python).args(["-m", "venv"]).arg(venv))
            .context("cannot create the venv (Debian needs the python3-venv package)")?;
    }
    let pip = venv.join("bin/pip");
    let mut args = vec![
        "install".to_string(),
        "--quiet".into(),
        "--disable-pip-version-check".into(),
        "--no-input".into(),
        "--only-binary=psycopg2-binary".into(),
    ];
    args.extend(synapse_requirements()?);
    run(Command::new(&pip).args(&args).env("PIP_NO_INPUT", "1"))?;
    let got = installed_synapse(venv);
    if got.as_deref() != Some(want.as_str()) {
        bail!(
            "after pip install, {} has matrix-synapse {got:?}, not {want}",
            venv.display()
        );
    }
    Ok(Outcome::Installed(format!(
        "matrix-synapse {want} into {}",
        venv.display()
    )))
}

/// Runs the parts asked for (all when empty).
pub fn run_parts(parts: &[String]) -> anyhow::Result<Vec<(String, Outcome)>> {
    let chosen: Vec<&str> = if parts.is_empty() {
        PARTS.to_vec()
    } else {
        parts.iter().map(String::as_str).collect()
    };
    for p in &chosen {
        if !PARTS.contains(p) {
            bail!("unknown setup part `{p}` (known: {})", PARTS.join(", "));
        }
    }
    let mut out = Vec::new();
    for p in PARTS.iter().filter(|p| chosen.contains(p)) {
        let o = match *p {
            "debian" => debian()?,
            "synapse" => synapse(&crate::tools::synapse_venv())?,
            "mdbook" => {
                let t = crate::site::ensure_tools()?;
                Outcome::Ensured(format!(
                    "{} and {}",
                    t.mdbook.display(),
                    t.mermaid.display()
                ))
            }
            "npm" => {
                let d = crate::site::node_tools(&crate::project_root())?;
                Outcome::Ensured(format!("the Node tools in {}", d.display()))
            }
            _ => unreachable!("checked above"),
        };
        out.push((p.to_string(), o));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requirements_come_from_versions_toml() {
        let reqs = synapse_requirements().unwrap();
        let v = crate::tools::version("synapse", "version").unwrap();
        assert!(
            reqs[0].starts_with("matrix-synapse[") && reqs[0].ends_with(&format!("=={v}")),
            "{reqs:?}"
        );
        assert!(reqs.iter().any(|r| r.starts_with("psycopg2-binary==")));
    }

    /// The fresh-install path, into a scratch venv (slow: downloads Synapse from PyPI).
    /// `cargo test -p xtask --lib setup::tests::fresh_synapse_venv -- --ignored`
    #[test]
    #[ignore = "downloads matrix-synapse from PyPI (about a minute)"]
    fn fresh_synapse_venv() {
        let dir = tempfile::tempdir().unwrap();
        let venv = dir.path().join("venv");
        let first = synapse(&venv).unwrap();
        assert!(matches!(first, Outcome::Installed(_)), "{first:?}");
        let again = synapse(&venv).unwrap();
        assert!(matches!(again, Outcome::AlreadyThere(_)), "{again:?}");
    }

    #[test]
    fn dpkg_reports_missing_packages() {
        if crate::tools::which("dpkg-query").is_none() {
            return;
        }
        let m = missing_packages(&["dpkg".into(), "surely-not-a-package-xtask".into()]);
        assert_eq!(m, ["surely-not-a-package-xtask"]);
        if missing_packages(&["postgresql-15".into()]).is_empty() {
            assert!(
                missing_packages(&["postgresql-contrib-15".into()]).is_empty(),
                "virtual package provided by postgresql-15"
            );
        }
    }
}
