//! A private root for each service, so Docker-style absolute paths (`/sockets`, `/data`,
//! `/etc/nginx/nginx.conf`) work without creating anything on the host root.
//!
//! Each service runs under `unshare --mount --propagation private` with a shell script that
//! mounts a tmpfs "skeleton root" and fills it (facts/native-stack.md section 10, extended):
//! - the host's system directories (`/usr`, `/etc`, `/var`, `/run`, ..., and the top directory
//!   of the project, which holds the Synapse venv) appear as overlays whose writable layer is a
//!   private tmpfs: the service sees the host's binaries and can write anywhere, like in a
//!   container layer, and nothing reaches the host;
//! - `/proc`, `/dev`, `/sys` are the host's (same PID and network namespace);
//! - `/tmp` is empty and private (unless the project itself lives under it: then it is an
//!   overlay like the system directories, so the run directory and the venv are visible);
//! - the Compose volumes are bind mounts of directories under the run directory (or a tmpfs),
//!   mounted in depth order, then made read-only where the Compose file says `:ro`;
//! - then `chroot` into it and run the service's argv.
//!
//! The namespace and everything mounted in it disappear when its last process exits.

use super::compose::{MountSource, Service};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Where a run keeps its namespace mount points and volumes.
#[derive(Debug, Clone)]
pub struct Layout {
    /// Empty directory the skeleton root is mounted on (inside each private namespace).
    pub root_mnt: PathBuf,
    /// Empty directory the overlays' writable layers are mounted on (inside each namespace).
    pub layers_mnt: PathBuf,
    /// Named volumes live in `volumes/<name>`.
    pub volumes: PathBuf,
    /// Extra top-level host directories to show (e.g. the project's `/work`).
    pub extra_top: Vec<String>,
}

/// Top-level host directories shown through an overlay (when they exist).
const SYSTEM_DIRS: &[&str] = &[
    "bin", "boot", "etc", "home", "lib", "lib32", "lib64", "libx32", "opt", "root", "run", "sbin",
    "srv", "usr", "var",
];

fn q(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The host path a volume of `svc` binds (None for a per-service tmpfs).
pub fn mount_source(layout: &Layout, src: &MountSource) -> Option<PathBuf> {
    match src {
        MountSource::Bind(p) => Some(p.clone()),
        MountSource::Volume(v) => Some(layout.volumes.join(v)),
        MountSource::Tmpfs => None,
    }
}

/// The script that builds the service's root and execs `chroot ROOT env -C WD "$@"`.
pub fn script(layout: &Layout, svc: &Service) -> String {
    let r = layout.root_mnt.to_string_lossy();
    let l = layout.layers_mnt.to_string_lossy();
    let mut s = String::new();
    let _ = writeln!(
        s,
        "#!/bin/bash\n# private root for service {}\nset -eu",
        svc.name
    );
    let _ = writeln!(s, "R={}; L={}", q(&r), q(&l));
    s.push_str(
        "mount -t tmpfs -o mode=755 nsroot \"$R\"\nmount -t tmpfs -o mode=755 nslayers \"$L\"\n",
    );
    let mut dirs: Vec<String> = SYSTEM_DIRS.iter().map(|d| d.to_string()).collect();
    for t in &layout.extra_top {
        if !dirs.contains(t) {
            dirs.push(t.clone());
        }
    }
    let _ = writeln!(s, "OVERLAY=\" {} \"", dirs.join(" "));
    s.push_str(
        r#"for e in /*; do
  n=${e#/}
  if [ -L "$e" ]; then cp -P "$e" "$R/$n"; continue; fi
  [ -d "$e" ] || continue
  mkdir "$R/$n"
  case "$n" in
    proc|dev|sys) mount --rbind "$e" "$R/$n" ;;
    # an overlay when the project itself lives there (a checkout under /tmp), else empty
    *) if [[ "$OVERLAY" == *" $n "* ]]; then
         mkdir "$L/$n.u" "$L/$n.w"
         mount -t overlay "ov-$n" -o "lowerdir=$e,upperdir=$L/$n.u,workdir=$L/$n.w" "$R/$n"
       fi
       if [ "$n" = tmp ]; then chmod 1777 "$R/tmp"; fi ;;
  esac
done
"#,
    );
    // Volumes: parents before children (Docker mounts in the same order).
    let mut mounts = svc.mounts.clone();
    mounts.sort_by_key(|m| m.target.matches('/').count());
    for m in &mounts {
        let t = format!("$R{}", q(&m.target));
        match mount_source(layout, &m.source) {
            None => {
                let _ = writeln!(s, "mkdir -p {t}; mount -t tmpfs tmpfs {t}");
            }
            Some(src) => {
                let src = q(&src.to_string_lossy());
                // Docker creates a missing bind source as a directory.
                let _ = writeln!(
                    s,
                    "[ -e {src} ] || mkdir -p {src}\nif [ -d {src} ]; then mkdir -p {t}; else mkdir -p \"$(dirname {t})\"; [ -e {t} ] || touch {t}; fi\nmount --bind {src} {t}"
                );
            }
        }
    }
    for m in mounts.iter().rev().filter(|m| m.read_only) {
        let _ = writeln!(s, "mount -o remount,bind,ro $R{}", q(&m.target));
    }
    let wd = svc.working_dir.clone().unwrap_or_else(|| "/".into());
    let _ = writeln!(
        s,
        "cd /\nexec chroot \"$R\" /usr/bin/env -C {} \"$@\"",
        q(&wd)
    );
    s
}

/// The argv that runs `argv` in a new private namespace built by `script_path`.
pub fn command(script_path: &Path, argv: &[String]) -> Vec<String> {
    let mut a = vec![
        "unshare".to_string(),
        "--mount".into(),
        "--propagation".into(),
        "private".into(),
        "--".into(),
        "/bin/bash".into(),
        script_path.to_string_lossy().into_owned(),
    ];
    a.extend(argv.iter().cloned());
    a
}

/// The argv that runs `argv` inside the private root of the running process `pid`.
pub fn enter(pid: u32, argv: &[String]) -> Vec<String> {
    let mut a = vec![
        "nsenter".to_string(),
        format!("--target={pid}"),
        "--mount".into(),
        "--root".into(),
        "--".into(),
        // nsenter keeps the caller's cwd, which does not exist in the service's root
        "/usr/bin/env".into(),
        "-C".into(),
        "/".into(),
    ];
    a.extend(argv.iter().cloned());
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stack::compose::{Mount, Restart};

    #[test]
    fn script_mounts_volumes_parent_first_and_read_only_last() {
        let layout = Layout {
            root_mnt: "/run/x/nsroot".into(),
            layers_mnt: "/run/x/nslayers".into(),
            volumes: "/run/x/volumes".into(),
            extra_top: vec!["work".into()],
        };
        let svc = Service {
            name: "synapse".into(),
            image: "i".into(),
            entrypoint: None,
            command: None,
            env: Default::default(),
            depends_on: vec![],
            healthcheck: None,
            restart: Restart::No,
            mounts: vec![
                Mount {
                    source: MountSource::Volume("media".into()),
                    target: "/data/media_store".into(),
                    read_only: false,
                },
                Mount {
                    source: MountSource::Bind("/t/synapse".into()),
                    target: "/data".into(),
                    read_only: true,
                },
                Mount {
                    source: MountSource::Tmpfs,
                    target: "/scratch".into(),
                    read_only: false,
                },
            ],
            user: None,
            working_dir: None,
            has_profiles: false,
            ports: vec![],
        };
        let s = script(&layout, &svc);
        let data = s.find("mount --bind '/t/synapse' $R'/data'").unwrap();
        let media = s
            .find("mount --bind '/run/x/volumes/media' $R'/data/media_store'")
            .unwrap();
        let ro = s.find("remount,bind,ro $R'/data'").unwrap();
        assert!(data < media && media < ro);
        assert!(s.contains("mount -t tmpfs tmpfs $R'/scratch'"));
        assert!(s.contains(" work "));
        assert!(s.ends_with("exec chroot \"$R\" /usr/bin/env -C '/' \"$@\"\n"));
    }
}
