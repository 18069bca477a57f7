//! The pristine base: a Debian 12 root filesystem made by `mmdebstrap --variant=minbase` from
//! Debian's own packages, `docker import`ed under the project's namespace.
//!
//! It is cached by content: the tag carries a hash of everything that defines the filesystem
//! (suite, variant, package list, mirrors, mmdebstrap arguments, image config), so a second call
//! only asks Docker whether that tag exists.

use super::{NAMESPACE, docker};
use anyhow::{Context, bail};
use sha1::{Digest, Sha1};
use std::process::{Command, Stdio};

/// Debian 12.
pub const SUITE: &str = "bookworm";
/// Essential packages and apt only, like the official `debian:12` image.
pub const VARIANT: &str = "minbase";
/// Packages added to the variant's set (none: the base stays what a fresh `debian:12` has).
pub const PACKAGES: &[&str] = &[];
/// The apt sources written into the image (and used to build it).
pub const MIRRORS: &[&str] = &[
    "deb http://deb.debian.org/debian bookworm main",
    "deb http://deb.debian.org/debian bookworm-updates main",
    "deb http://deb.debian.org/debian-security bookworm-security main",
];
/// The image configuration `docker import` gives it (a tarball carries none).
const CHANGES: &[&str] = &[
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "CMD [\"bash\"]",
];

/// The repository of the base image; tags are `12` and `12-<hash>`.
pub fn repository() -> String {
    format!("{NAMESPACE}/debian")
}

/// The mmdebstrap arguments (the target, `-`, is stdout: a tarball streamed to docker import).
pub fn mmdebstrap_args() -> Vec<String> {
    let mut args = vec![
        format!("--variant={VARIANT}"),
        "--format=tar".to_string(),
        "--quiet".to_string(),
    ];
    if !PACKAGES.is_empty() {
        args.push(format!("--include={}", PACKAGES.join(",")));
    }
    args.push(SUITE.to_string());
    args.push("-".to_string());
    args.extend(MIRRORS.iter().map(|m| m.to_string()));
    args
}

/// The hash of what defines the base (first 12 hex digits of a SHA-1).
pub fn definition_hash() -> String {
    let mut h = Sha1::new();
    for part in [
        format!("suite={SUITE}"),
        format!("variant={VARIANT}"),
        format!("packages={}", PACKAGES.join(",")),
        format!("mmdebstrap={}", mmdebstrap_args().join(" ")),
        format!("changes={}", CHANGES.join("|")),
    ] {
        h.update(part.as_bytes());
        h.update(b"\n");
    }
    let digest = h.finalize();
    digest.iter().take(6).map(|b| format!("{b:02x}")).collect()
}

/// The content-addressed reference, `synapse-guide-standin/debian:12-<hash>`.
pub fn reference() -> String {
    format!("{}:12-{}", repository(), definition_hash())
}

/// Makes the base unless an image with its definition hash exists; returns its reference
/// (`synapse-guide-standin/debian:12-<hash>`, also tagged `:12`).
pub fn pristine_debian() -> anyhow::Result<String> {
    let reference = reference();
    if docker::image_id(&reference)?.is_some() {
        return Ok(reference);
    }
    let _lock = super::BuildLock::acquire()?;
    // Another process may have made it while we waited for the lock.
    if docker::image_id(&reference)?.is_none() {
        import(&reference)?;
    }
    Ok(reference)
}

fn import(reference: &str) -> anyhow::Result<()> {
    if crate::tools::which("mmdebstrap").is_none() {
        bail!(
            "mmdebstrap is not installed: it makes the pristine Debian 12 base of the stand-in \
             images (`cargo xtask setup debian` installs it)"
        );
    }
    let hash = definition_hash();
    let args = mmdebstrap_args();
    eprintln!(
        "images: making the pristine base {reference} (mmdebstrap {})",
        args.join(" ")
    );
    let mut strap = Command::new("mmdebstrap")
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot run mmdebstrap")?;
    let tar = strap.stdout.take().expect("piped stdout");
    let mut import = docker::cmd();
    import.arg("import");
    let description = format!(
        "org.opencontainers.image.description=\"pristine Debian 12 ({SUITE}) made by mmdebstrap \
         --variant={VARIANT} from Debian's packages; not the official debian image\""
    );
    for change in CHANGES {
        import.args(["--change", change]);
    }
    import.args([
        "--change",
        &format!("LABEL guide.standin.definition={hash}"),
    ]);
    import.args(["--change", &format!("LABEL {description}")]);
    import.args(["-", reference]).stdin(Stdio::from(tar));
    let out = import.output().context("cannot run docker import")?;
    let st = strap.wait().context("mmdebstrap did not finish")?;
    if !st.success() {
        // A half-written tarball may still have been imported: never leave it under the tag.
        let _ = docker::output(&["rmi", reference]);
        bail!("mmdebstrap failed ({st}); nothing was tagged {reference}");
    }
    if !out.status.success() {
        bail!(
            "docker import of the mmdebstrap tarball failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    docker::run(&["tag", reference, &format!("{}:12", repository())])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_covers_the_definition_and_is_stable() {
        let h = definition_hash();
        assert_eq!(h.len(), 12);
        assert!(h.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(h, definition_hash());
        assert_eq!(reference(), format!("synapse-guide-standin/debian:12-{h}"));
        let args = mmdebstrap_args();
        assert!(args.contains(&"--variant=minbase".to_string()), "{args:?}");
        assert!(args.iter().any(|a| a == SUITE));
    }
}
