//! What the container images' entrypoints do, done natively with Debian's binaries.
//!
//! This is the ONLY place that knows about images. A service's image name picks one entry of
//! [`EMULATIONS`]; the entry turns the service's own `entrypoint`/`command` into the argv run
//! inside the service's private root, the extra environment the image sets, and the signal
//! `docker stop` would send. Everything else (volumes, env files, healthchecks, restart) comes
//! from the Compose file unchanged. The book page `reference/testing.md` documents this list;
//! keep the two in step.

use super::compose::Service;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// One image family and how its entrypoint is emulated.
pub struct Emulation {
    /// Matched as a substring of the image name (before the tag).
    pub image: &'static str,
    /// Shown in logs and in the report.
    pub name: &'static str,
    /// What the image's entrypoint does and what the runner does instead (for the book).
    pub doc: &'static str,
}

/// Every emulation, in match order (the first whose `image` occurs in the image name wins).
pub const EMULATIONS: &[Emulation] = &[
    Emulation {
        image: "synapse",
        name: "synapse",
        doc: "`/start.py run`: runs `python -m $SYNAPSE_WORKER` (default `synapse.app.homeserver`) with \
              the command's own arguments, adds `--config-path $SYNAPSE_CONFIG_PATH` only when none is \
              given, and drops to `UID`:`GID` (991:991 by default) with gosu. Natively: the same argv with \
              `target/synapse-venv`'s Python and `setpriv` instead of gosu; jemalloc is not preloaded.",
    },
    Emulation {
        image: "postgres",
        name: "postgres",
        doc: "`docker-entrypoint.sh postgres`: on an empty `$PGDATA`, `initdb` as the postgres user with \
              `--username=$POSTGRES_USER`, the password from `$POSTGRES_PASSWORD` and `$POSTGRES_INITDB_ARGS`; \
              appends `host all all all scram-sha-256` to pg_hba.conf; starts a socket-only temporary server, \
              creates `$POSTGRES_DB`, runs `/docker-entrypoint-initdb.d/*.sh|*.sql`, stops it; then runs the \
              command as the postgres user. Natively: the same steps with Debian's PostgreSQL binaries. \
              `docker stop` sends SIGINT (the image's STOPSIGNAL): a fast shutdown.",
    },
    Emulation {
        image: "redis",
        name: "redis",
        doc: "`docker-entrypoint.sh redis-server`: a first argument starting with `-` or ending in `.conf` \
              gets `redis-server` put in front, and redis-server runs as the redis user. Natively: the same, \
              with Debian's redis-server and its redis user.",
    },
    Emulation {
        image: "nginx",
        name: "nginx",
        doc: "`/docker-entrypoint.sh nginx -g 'daemon off;'`: renders `/etc/nginx/templates/*.template` with \
              envsubst into `/etc/nginx/conf.d` when that directory exists; `/var/log/nginx/access.log` and \
              `error.log` are links to the container's stdout and stderr. Natively: the same links in the \
              private root, Debian's nginx; `docker stop` sends SIGQUIT (graceful).",
    },
    Emulation {
        image: "busybox",
        name: "shell",
        doc: "No entrypoint: the command runs with the host's shell and coreutils.",
    },
    Emulation {
        image: "alpine",
        name: "shell",
        doc: "No entrypoint: the command runs with the host's shell and coreutils.",
    },
];

/// The emulation for an image, or None (then the command runs as written).
pub fn for_image(image: &str) -> Option<&'static Emulation> {
    let name = image
        .rsplit_once(':')
        .map_or(image, |(n, tag)| if tag.contains('/') { image } else { n });
    EMULATIONS.iter().find(|e| name.contains(e.image))
}

/// How to start one service inside its private root.
#[derive(Debug, Clone)]
pub struct Launch {
    /// Argv run inside the service's root (after chroot).
    pub argv: Vec<String>,
    /// Environment (the service's plus what the image sets).
    pub env: BTreeMap<String, String>,
    /// Signal `docker stop` sends.
    pub stop_signal: i32,
    /// The emulation used (for logs and the report).
    pub emulation: &'static str,
}

/// Host paths the emulations need.
#[derive(Debug, Clone)]
pub struct Host {
    pub synapse_python: PathBuf,
    pub pg_bindir: Option<PathBuf>,
    /// Where helper scripts are written (visible inside every private root).
    pub scripts: PathBuf,
}

const BASE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Writes the helper scripts the emulations run into `host.scripts`.
pub fn write_scripts(host: &Host) -> std::io::Result<()> {
    std::fs::create_dir_all(&host.scripts)?;
    std::fs::write(
        host.scripts.join("postgres-entrypoint.sh"),
        POSTGRES_ENTRYPOINT,
    )?;
    std::fs::write(host.scripts.join("nginx-entrypoint.sh"), NGINX_ENTRYPOINT)?;
    Ok(())
}

/// Turns a service into what to run.
pub fn launch(svc: &Service, host: &Host) -> anyhow::Result<Launch> {
    let mut env = svc.env.clone();
    env.entry("PATH".into()).or_insert_with(|| BASE_PATH.into());
    env.entry("HOSTNAME".into())
        .or_insert_with(|| svc.name.clone());
    let emu = for_image(&svc.image);
    let script = |name: &str| host.scripts.join(name).to_string_lossy().into_owned();
    let mut stop_signal = libc::SIGTERM;
    // The image's own environment (its `ENV` lines) applies whatever the entrypoint is.
    if emu.is_some_and(|e| e.name == "postgres") {
        stop_signal = libc::SIGINT;
        if let Some(bin) = &host.pg_bindir {
            let p = format!("{}:{}", bin.display(), env["PATH"]);
            env.insert("PATH".into(), p);
        }
        env.entry("PGDATA".into())
            .or_insert_with(|| "/var/lib/postgresql/data".into());
    }
    let argv: Vec<String> = if let Some(ep) = &svc.entrypoint {
        // An explicit entrypoint replaces the image's: run it as written.
        ep.iter()
            .chain(svc.command.iter().flatten())
            .cloned()
            .collect()
    } else {
        let cmd = svc.command.clone().unwrap_or_default();
        match emu.map(|e| e.name) {
            Some("synapse") => synapse_argv(svc, &cmd, &env, host)?,
            Some("postgres") => {
                let cmd = if cmd.is_empty() {
                    vec!["postgres".to_string()]
                } else {
                    cmd
                };
                let mut a = vec!["/bin/bash".into(), script("postgres-entrypoint.sh")];
                a.extend(cmd);
                a
            }
            Some("redis") => {
                let mut cmd = if cmd.is_empty() {
                    vec!["redis-server".to_string()]
                } else {
                    cmd
                };
                if cmd[0].starts_with('-') || cmd[0].ends_with(".conf") {
                    cmd.insert(0, "redis-server".into());
                }
                if cmd[0] == "redis-server" && svc.user.is_none() {
                    let mut a = setpriv("redis", "redis");
                    a.extend(cmd);
                    a
                } else {
                    cmd
                }
            }
            Some("nginx") => {
                stop_signal = libc::SIGQUIT;
                let cmd = if cmd.is_empty() {
                    vec!["nginx".into(), "-g".into(), "daemon off;".into()]
                } else {
                    cmd
                };
                let mut a = vec!["/bin/bash".into(), script("nginx-entrypoint.sh")];
                a.extend(cmd);
                a
            }
            _ => {
                anyhow::ensure!(
                    !cmd.is_empty(),
                    "service {} has no command and no known image",
                    svc.name
                );
                cmd
            }
        }
    };
    let argv = match (&svc.user, emu.map(|e| e.name)) {
        // `user:` applies to the entrypoint too (the synapse emulation handles it itself).
        (Some(u), Some(n)) if n != "synapse" => {
            let (uid, gid) = u.split_once(':').unwrap_or((u, u));
            let mut a = setpriv(uid, gid);
            a.extend(argv);
            a
        }
        _ => argv,
    };
    Ok(Launch {
        argv,
        env,
        stop_signal,
        emulation: emu.map_or("none", |e| e.name),
    })
}

fn setpriv(uid: &str, gid: &str) -> Vec<String> {
    let numeric = uid.chars().all(|c| c.is_ascii_digit());
    let mut a = vec![
        "setpriv".to_string(),
        format!("--reuid={uid}"),
        format!("--regid={gid}"),
    ];
    a.push(if numeric {
        "--clear-groups".into()
    } else {
        "--init-groups".into()
    });
    a.push("--".into());
    a
}

/// docker/start.py `run` mode.
fn synapse_argv(
    svc: &Service,
    cmd: &[String],
    env: &BTreeMap<String, String>,
    host: &Host,
) -> anyhow::Result<Vec<String>> {
    let mode = cmd.first().map_or("run", String::as_str);
    anyhow::ensure!(
        mode == "run",
        "service {}: the synapse image's mode `{mode}` is not emulated (only `run`)",
        svc.name
    );
    let mut args: Vec<String> = cmd.iter().skip(1).cloned().collect();
    if !args.iter().any(|a| a == "-m") {
        let worker = env
            .get("SYNAPSE_WORKER")
            .cloned()
            .unwrap_or_else(|| "synapse.app.homeserver".into());
        args.splice(0..0, ["-m".to_string(), worker]);
    }
    if !args
        .iter()
        .any(|a| a.starts_with("--config-path") || a.starts_with("-c"))
    {
        let dir = env
            .get("SYNAPSE_CONFIG_DIR")
            .cloned()
            .unwrap_or_else(|| "/data".into());
        let path = env
            .get("SYNAPSE_CONFIG_PATH")
            .cloned()
            .unwrap_or_else(|| format!("{dir}/homeserver.yaml"));
        args.push("--config-path".into());
        args.push(path);
    }
    let mut argv = Vec::new();
    // start.py: UID/GID from the environment; else 991:991 when started as root. A `user:` makes
    // the container start as that user, so start.py does not switch (unless UID is set).
    let ownership = if let Some(uid) = env.get("UID") {
        Some((
            uid.clone(),
            env.get("GID").cloned().unwrap_or_else(|| "991".into()),
        ))
    } else if let Some(u) = &svc.user {
        let (uid, gid) = u.split_once(':').unwrap_or((u, u));
        Some((uid.to_string(), gid.to_string()))
    } else {
        Some(("991".into(), "991".into()))
    };
    if let Some((uid, gid)) = ownership
        && uid != "0"
    {
        argv.extend(setpriv(&uid, &gid));
    }
    argv.push(host.synapse_python.to_string_lossy().into_owned());
    argv.extend(args);
    Ok(argv)
}

/// True when `path` looks like a Synapse config path argument of an argv.
pub fn synapse_config_paths(argv: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut it = argv.iter();
    while let Some(a) = it.next() {
        if let Some(p) = a.strip_prefix("--config-path=") {
            out.push(p.to_string());
        } else if a == "--config-path" || a == "-c" {
            if let Some(p) = it.next() {
                out.push(p.clone());
            }
        } else if let Some(p) = a.strip_prefix("-c").filter(|p| !p.is_empty()) {
            out.push(p.to_string());
        }
    }
    out
}

/// The Python module a Synapse argv runs (`-m MODULE`).
pub fn synapse_module(argv: &[String]) -> Option<String> {
    argv.iter()
        .position(|a| a == "-m")
        .and_then(|i| argv.get(i + 1))
        .cloned()
}

const POSTGRES_ENTRYPOINT: &str = r#"#!/bin/bash
# Native emulation of the postgres image's docker-entrypoint.sh (see reference/testing.md).
set -Eeuo pipefail
: "${PGDATA:=/var/lib/postgresql/data}"
: "${POSTGRES_USER:=postgres}"
: "${POSTGRES_DB:=$POSTGRES_USER}"
as_pg() { setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"; }
# the image's psql calls authenticate with the superuser's password
export PGPASSWORD="${PGPASSWORD:-${POSTGRES_PASSWORD:-}}"
temp_started=
cleanup() { [ -n "$temp_started" ] && as_pg pg_ctl -D "$PGDATA" -m immediate -w stop >/dev/null 2>&1; return 0; }
trap cleanup EXIT
mkdir -p "$PGDATA" /var/run/postgresql
chown postgres:postgres "$PGDATA" /var/run/postgresql
chmod 700 "$PGDATA"
chmod 2777 /var/run/postgresql
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  if [ -z "${POSTGRES_PASSWORD:-}" ] && [ "${POSTGRES_HOST_AUTH_METHOD:-}" != trust ]; then
    echo "error: database is uninitialized and POSTGRES_PASSWORD is not set" >&2; exit 1
  fi
  pwfile=$(mktemp); chown postgres "$pwfile"
  printf '%s\n' "${POSTGRES_PASSWORD:-}" > "$pwfile"
  # shellcheck disable=SC2086
  as_pg initdb --username="$POSTGRES_USER" --pwfile="$pwfile" ${POSTGRES_INITDB_ARGS:-} -D "$PGDATA"
  rm -f "$pwfile"
  printf '\nhost all all all %s\n' "${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}" >> "$PGDATA/pg_hba.conf"
  as_pg pg_ctl -D "$PGDATA" -w -o "-c listen_addresses='' -c unix_socket_directories=/var/run/postgresql -p 5432" start
  temp_started=1
  psql=(psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --no-password --no-psqlrc -h /var/run/postgresql)
  if [ "$POSTGRES_DB" != postgres ]; then
    as_pg "${psql[@]}" --dbname postgres --set db="$POSTGRES_DB" <<<'CREATE DATABASE :"db" ;'
  fi
  if [ -d /docker-entrypoint-initdb.d ]; then
    for f in /docker-entrypoint-initdb.d/*; do
      case "$f" in
        *.sh) echo "running $f"; PGHOST=/var/run/postgresql bash "$f" ;;
        *.sql) echo "running $f"; as_pg "${psql[@]}" --dbname "$POSTGRES_DB" -f "$f" ;;
        *) ;;
      esac
    done
  fi
  as_pg pg_ctl -D "$PGDATA" -m fast -w stop
  temp_started=
  echo "PostgreSQL init process complete; ready for start up."
fi
trap - EXIT
unset PGPASSWORD
if [ "${1:-}" = postgres ] || [ "${1:0:1}" = - ]; then
  [ "${1:0:1}" = - ] && set -- postgres "$@"
  exec setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"
fi
exec "$@"
"#;

const NGINX_ENTRYPOINT: &str = r#"#!/bin/bash
# Native emulation of the nginx image's /docker-entrypoint.sh (see reference/testing.md).
set -euo pipefail
mkdir -p /var/log/nginx /var/cache/nginx /var/lib/nginx
ln -sf /dev/stdout /var/log/nginx/access.log
ln -sf /dev/stderr /var/log/nginx/error.log
if [ "${1:-}" = nginx ] && [ -d /etc/nginx/templates ]; then
  out=${NGINX_ENVSUBST_OUTPUT_DIR:-/etc/nginx/conf.d}
  vars=$(printf '${%s} ' $(env | cut -d= -f1))
  for t in /etc/nginx/templates/*.template; do
    [ -e "$t" ] || continue
    envsubst "$vars" < "$t" > "$out/$(basename "$t" .template)"
  done
fi
exec "$@"
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stack::compose::Restart;

    fn svc(image: &str, command: Option<Vec<&str>>, env: &[(&str, &str)]) -> Service {
        Service {
            name: "s".into(),
            image: image.into(),
            entrypoint: None,
            command: command.map(|c| c.into_iter().map(String::from).collect()),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            depends_on: vec![],
            healthcheck: None,
            restart: Restart::No,
            mounts: vec![],
            user: None,
            working_dir: None,
            has_profiles: false,
            ports: vec![],
        }
    }

    fn host() -> Host {
        Host {
            synapse_python: "/venv/bin/python".into(),
            pg_bindir: Some("/pg/bin".into()),
            scripts: "/s".into(),
        }
    }

    #[test]
    fn synapse_run_mode_follows_start_py() {
        let s = svc(
            "ghcr.io/element-hq/synapse:v1.163.2",
            Some(vec![
                "run",
                "--config-path=/data/homeserver.yaml",
                "--config-path=/data/workers/rooms1.yaml",
            ]),
            &[("SYNAPSE_WORKER", "synapse.app.generic_worker")],
        );
        let l = launch(&s, &host()).unwrap();
        assert_eq!(
            l.argv[..5],
            [
                "setpriv",
                "--reuid=991",
                "--regid=991",
                "--clear-groups",
                "--"
            ]
        );
        assert_eq!(
            l.argv[5..8],
            ["/venv/bin/python", "-m", "synapse.app.generic_worker"]
        );
        assert_eq!(
            synapse_config_paths(&l.argv),
            ["/data/homeserver.yaml", "/data/workers/rooms1.yaml"]
        );
        // no config path given: the default is added; UID from the environment
        let s = svc("ghcr.io/element-hq/synapse:v1.163.2", None, &[("UID", "0")]);
        let l = launch(&s, &host()).unwrap();
        assert_eq!(
            l.argv,
            [
                "/venv/bin/python",
                "-m",
                "synapse.app.homeserver",
                "--config-path",
                "/data/homeserver.yaml"
            ]
        );
        assert!(
            launch(
                &svc("ghcr.io/element-hq/synapse:v1", Some(vec!["generate"]), &[]),
                &host()
            )
            .is_err()
        );
    }

    /// The book page that lists the emulations names every one of them.
    #[test]
    fn testing_page_lists_every_emulation() {
        let page = std::fs::read_to_string(crate::project_root().join("src/reference/testing.md"))
            .unwrap();
        for e in EMULATIONS {
            assert!(
                page.contains(&format!("`{}`", e.image)),
                "testing.md does not mention image `{}`",
                e.image
            );
            assert!(
                page.contains(&format!("| `{}` |", e.name)),
                "testing.md has no row for emulation `{}`",
                e.name
            );
        }
    }

    #[test]
    fn other_images() {
        let l = launch(
            &svc("redis:7.4-alpine", Some(vec!["--port", "0"]), &[]),
            &host(),
        )
        .unwrap();
        assert_eq!(l.argv[0], "setpriv");
        assert!(l.argv.contains(&"redis-server".to_string()));
        let mut replica = svc("postgres:17-alpine", Some(vec!["postgres"]), &[]);
        replica.entrypoint = Some(vec!["bash".into(), "/replica-init.sh".into()]);
        let l = launch(&replica, &host()).unwrap();
        assert_eq!(l.argv, ["bash", "/replica-init.sh", "postgres"]);
        assert!(
            l.env["PATH"].starts_with("/pg/bin:"),
            "the image's PATH holds with an entrypoint of our own"
        );
        let l = launch(&svc("postgres:17-alpine", None, &[]), &host()).unwrap();
        assert_eq!(l.stop_signal, libc::SIGINT);
        assert!(l.env["PATH"].starts_with("/pg/bin:"));
        assert_eq!(l.argv.last().unwrap(), "postgres");
        let l = launch(&svc("nginx:1.28-alpine", None, &[]), &host()).unwrap();
        assert_eq!(l.argv[2..], ["nginx", "-g", "daemon off;"]);
        let l = launch(
            &svc(
                "busybox:1.37",
                Some(vec!["sh", "-c", "chmod 1777 /sockets"]),
                &[],
            ),
            &host(),
        )
        .unwrap();
        assert_eq!(l.argv, ["sh", "-c", "chmod 1777 /sockets"]);
        assert_eq!(
            for_image("localhost:5000/myredis:1").map(|e| e.name),
            Some("redis")
        );
    }
}
