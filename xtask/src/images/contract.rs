//! What each stand-in keeps of its official image, as data, and [`verify`], which runs a built
//! stand-in with Docker and checks every item. The sources read for each contract are named in
//! `source`; src/reference/standins.md is the same contract as a table.

use super::Standin;
use super::docker::{self, Container};
use serde_json::Value;
use std::time::Duration;

/// Which tags of the official repository a stand-in can stand in for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tags {
    /// The Alpine variants (`17-alpine`, `1.28-alpine3.21`, `alpine`): users, UIDs and BusyBox
    /// are Alpine's. `slim` variants are excluded when `slim_differs`.
    Alpine { slim_differs: bool },
    /// Exactly `v<version>` of versions.toml [synapse], or the tag of [images-upgrade-from]
    /// synapse (the release the upgrade test starts on): the stand-in installs that version.
    SynapsePinned,
}

/// The contract of one official image.
#[derive(Debug)]
pub struct Contract {
    /// The `images/` folder, and the stand-in's short name.
    pub name: &'static str,
    /// The official repositories (as [`super::ImageRef::repository`] writes them).
    pub repositories: &'static [&'static str],
    pub tags: Tags,
    /// The official files this contract was read from (repository and path).
    pub source: &'static [&'static str],
    /// The user the entrypoint drops to, when it has a passwd entry.
    pub user: Option<&'static str>,
    pub uid: u32,
    pub gid: u32,
    /// The image's STOPSIGNAL; None when it sets none (Docker sends SIGTERM).
    pub stop_signal: Option<&'static str>,
    pub entrypoint: &'static [&'static str],
    pub cmd: &'static [&'static str],
    /// `NAME=value` entries the image environment must hold.
    pub env: &'static [&'static str],
    /// The working directory ("" when the image sets none).
    pub workdir: &'static str,
    pub exposed: &'static [&'static str],
    pub volumes: &'static [&'static str],
    /// The image's own HEALTHCHECK test, when it has one.
    pub healthcheck: Option<&'static [&'static str]>,
    /// Programs the book (or the official image's scripts) call: must be on PATH.
    pub present: &'static [&'static str],
    /// Programs the official image does not have: must NOT be on PATH here either.
    pub absent: &'static [&'static str],
    /// `/proc/1/comm` once the entrypoint has handed over to the server.
    pub server: &'static str,
    /// What cannot be the same, in one sentence per item.
    pub differences: &'static [&'static str],
}

pub static POSTGRES: Contract = Contract {
    name: "postgres",
    repositories: &["postgres"],
    tags: Tags::Alpine {
        slim_differs: false,
    },
    source: &[
        "docker-library/postgres 17/alpine3.22/Dockerfile",
        "docker-library/postgres 17/alpine3.22/docker-entrypoint.sh",
    ],
    user: Some("postgres"),
    uid: 70,
    gid: 70,
    stop_signal: Some("SIGINT"),
    entrypoint: &["docker-entrypoint.sh"],
    cmd: &["postgres"],
    env: &["PGDATA=/var/lib/postgresql/data", "LANG=en_US.utf8"],
    workdir: "",
    exposed: &["5432/tcp"],
    volumes: &["/var/lib/postgresql/data"],
    healthcheck: None,
    present: &[
        "postgres",
        "initdb",
        "pg_ctl",
        "pg_isready",
        "psql",
        "pg_dump",
        "pg_dumpall",
        "pg_restore",
        "pg_basebackup",
        "pg_verifybackup",
        "pg_checksums",
        "pg_upgrade",
        "gosu",
        "bash",
        "sh",
        "install",
        "flock",
        "tar",
        "gzip",
        "gunzip",
        "zstd",
        "xzcat",
        "wget",
    ],
    absent: &["curl"],
    server: "postgres",
    differences: &[
        "PostgreSQL 15 from Debian 12, not the tag's major version built from source",
        "glibc and Debian's userland (BusyBox applets only where Debian has no program), not Alpine",
        "PG_MAJOR is 15 and PG_VERSION is not set",
        "no docker-ensure-initdb.sh helper",
    ],
};

pub static REDIS: Contract = Contract {
    name: "redis",
    repositories: &["redis"],
    tags: Tags::Alpine {
        slim_differs: false,
    },
    source: &[
        "redis/docker-library-redis 7.4/alpine/Dockerfile",
        "docker-library/redis 7.4-rc/alpine/docker-entrypoint.sh",
    ],
    user: Some("redis"),
    uid: 999,
    gid: 1000,
    stop_signal: None,
    entrypoint: &["docker-entrypoint.sh"],
    cmd: &["redis-server"],
    env: &[],
    workdir: "/data",
    exposed: &["6379/tcp"],
    volumes: &["/data"],
    healthcheck: None,
    present: &["redis-server", "redis-cli", "gosu", "sh", "wget"],
    absent: &["curl", "bash"],
    server: "redis-server",
    differences: &[
        "Redis 7.0 from Debian 12, not 7.4",
        "protected mode is turned off by an argument the entrypoint adds when no config file is \
         given (the official binary is patched instead)",
        "glibc and Debian's userland (BusyBox applets only where Debian has no program), not Alpine",
    ],
};

pub static NGINX: Contract = Contract {
    name: "nginx",
    repositories: &["nginx"],
    tags: Tags::Alpine { slim_differs: true },
    source: &[
        "nginxinc/docker-nginx stable/alpine/Dockerfile",
        "nginxinc/docker-nginx stable/alpine-slim/Dockerfile",
        "nginxinc/docker-nginx stable/alpine-slim/docker-entrypoint.sh",
        "nginxinc/docker-nginx stable/alpine-slim/20-envsubst-on-templates.sh",
    ],
    user: Some("nginx"),
    uid: 101,
    gid: 101,
    stop_signal: Some("SIGQUIT"),
    entrypoint: &["/docker-entrypoint.sh"],
    cmd: &["nginx", "-g", "daemon off;"],
    env: &[],
    workdir: "",
    exposed: &["80/tcp"],
    volumes: &[],
    healthcheck: None,
    present: &["nginx", "wget", "curl", "envsubst", "sh"],
    absent: &["bash"],
    server: "nginx",
    differences: &[
        "nginx 1.22 from Debian 12 (package nginx), not the tag's version from nginx.org",
        "Debian's nginx is built without --user=nginx: the entrypoint adds `user nginx;` with -g \
         when the configuration names no user, so workers still run as 101",
        "no njs, xslt, geoip or image-filter dynamic modules",
        "glibc and Debian's userland (BusyBox applets only where Debian has no program), not Alpine",
    ],
};

pub static SYNAPSE: Contract = Contract {
    name: "synapse",
    repositories: &[
        "ghcr.io/element-hq/synapse",
        "matrixdotorg/synapse",
        "ghcr.io/matrix-org/synapse",
    ],
    tags: Tags::SynapsePinned,
    source: &[
        "element-hq/synapse docker/Dockerfile",
        "element-hq/synapse docker/start.py",
        "element-hq/synapse docker/conf/homeserver.yaml",
        "element-hq/synapse docker/conf/log.config",
    ],
    user: None,
    uid: 991,
    gid: 991,
    stop_signal: None,
    entrypoint: &["/start.py"],
    cmd: &[],
    env: &[],
    workdir: "",
    exposed: &["8008/tcp", "8448/tcp", "19090/tcp"],
    volumes: &[],
    healthcheck: Some(&[
        "CMD-SHELL",
        "curl -fSs http://localhost:8008/health || exit 1",
    ]),
    present: &[
        "python",
        "curl",
        "register_new_matrix_user",
        "synapse_port_db",
        "gosu",
        "sh",
        "bash",
        "chown",
        "chgrp",
        "chmod",
        "mkdir",
    ],
    absent: &["wget", "psql"],
    server: "python",
    differences: &[
        "Python 3.11 from Debian 12 (a venv at /usr/local), not the python:3.13 image",
        "matrix-synapse with the extras of versions.toml and psycopg2-binary from PyPI, not \
         `[all]` from the lock file",
        "migrate_config writes a smaller homeserver.yaml than upstream's template",
    ],
};

/// Every stand-in the project has.
pub static CONTRACTS: &[&Contract] = &[&SYNAPSE, &POSTGRES, &REDIS, &NGINX];

/// Whether the stand-in keeps the contract of this tag of the official image.
pub fn tag_supported(c: &Contract, tag: &str) -> Result<(), String> {
    match c.tags {
        Tags::Alpine { slim_differs } => {
            let re = regex::Regex::new(
                r"^(?:(?:\d+(?:\.\d+){0,2}|stable|mainline|latest)-)?alpine(?:\d+(?:\.\d+)*)?(-slim)?$",
            )
            .expect("valid regex");
            match re.captures(tag) {
                Some(caps) if caps.get(1).is_some() && slim_differs => Err(format!(
                    "the {} stand-in keeps the contract of the `-alpine` variant; `-alpine-slim` \
                     lacks programs it has (curl)",
                    c.name
                )),
                Some(caps) if caps.get(1).is_some() => Err(format!(
                    "the {} stand-in keeps the contract of the `-alpine` variant",
                    c.name
                )),
                Some(_) => Ok(()),
                None => Err(format!(
                    "the {} stand-in keeps the contract of the Alpine variants (`<version>-alpine`: \
                     user {} is {}:{} there); other variants are Debian-based with other IDs",
                    c.name,
                    c.user.unwrap_or("?"),
                    c.uid,
                    c.gid
                )),
            }
        }
        Tags::SynapsePinned => {
            let v = crate::tools::version("synapse", "version").map_err(|e| format!("{e:#}"))?;
            let from = crate::tools::synapse_upgrade_from().map_err(|e| format!("{e:#}"))?;
            if tag == format!("v{v}") || from.is_some_and(|f| tag == format!("v{f}")) {
                Ok(())
            } else {
                Err(format!(
                    "the synapse stand-in installs matrix-synapse {v} (versions.toml [synapse] \
                     version), or the release the upgrade test starts on ([images-upgrade-from]), \
                     so it stands in for those tags only"
                ))
            }
        }
    }
}

/// One checked item of a contract.
#[derive(Debug, Clone)]
pub struct ContractResult {
    /// Short name of the item, e.g. `stopsignal`, `pid1`, `absent`.
    pub check: String,
    pub ok: bool,
    /// What was expected and what was found.
    pub detail: String,
}

impl ContractResult {
    fn new(check: &str, ok: bool, detail: impl Into<String>) -> ContractResult {
        ContractResult {
            check: check.to_string(),
            ok,
            detail: detail.into(),
        }
    }
    fn failed(check: &str, e: &anyhow::Error) -> ContractResult {
        ContractResult::new(check, false, format!("{e:#}"))
    }
}

/// Runs the stand-in (it must be built) and checks every item of its contract.
pub fn verify(s: &Standin) -> Vec<ContractResult> {
    let mut out = Vec::new();
    match docker::inspect(&s.image) {
        Ok(img) => image_config(s, &img, &mut out),
        Err(e) => {
            out.push(ContractResult::failed("image", &e));
            return out;
        }
    }
    if let Err(e) = programs_and_user(s, &mut out) {
        out.push(ContractResult::failed("programs", &e));
    }
    if let Err(e) = server(s, &mut out) {
        out.push(ContractResult::failed("server", &e));
    }
    out
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn keys(v: &Value) -> Vec<String> {
    v.as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

fn same(check: &str, want: &[&str], got: &[String], out: &mut Vec<ContractResult>) {
    let ok = want.len() == got.len() && want.iter().zip(got).all(|(a, b)| a == b);
    out.push(ContractResult::new(
        check,
        ok,
        format!("want {want:?}, image has {got:?}"),
    ));
}

fn image_config(s: &Standin, img: &Value, out: &mut Vec<ContractResult>) {
    let c = s.contract;
    let cfg = &img["Config"];
    let label = |k: &str| cfg["Labels"][k].as_str().unwrap_or("").to_string();
    let desc = label("org.opencontainers.image.description");
    out.push(ContractResult::new(
        "labels",
        label("guide.standin.for") == s.official
            && desc.starts_with(&format!("stand-in for {} ", s.official))
            && desc.contains("not the official image"),
        format!(
            "guide.standin.for={:?}, description={desc:?}",
            label("guide.standin.for")
        ),
    ));
    let user = cfg["User"].as_str().unwrap_or("");
    out.push(ContractResult::new(
        "starts-as-root",
        user.is_empty() || user == "root" || user == "0",
        format!("the entrypoint starts as root and drops privileges itself (User={user:?})"),
    ));
    let sig = cfg["StopSignal"].as_str().unwrap_or("");
    out.push(ContractResult::new(
        "stopsignal",
        sig == c.stop_signal.unwrap_or(""),
        format!(
            "want {}, image has {}",
            c.stop_signal.unwrap_or("none (SIGTERM)"),
            if sig.is_empty() {
                "none (SIGTERM)"
            } else {
                sig
            }
        ),
    ));
    same(
        "entrypoint",
        c.entrypoint,
        &strings(&cfg["Entrypoint"]),
        out,
    );
    same("cmd", c.cmd, &strings(&cfg["Cmd"]), out);
    let env = strings(&cfg["Env"]);
    let missing: Vec<&&str> = c
        .env
        .iter()
        .filter(|e| !env.iter().any(|x| x == **e))
        .collect();
    out.push(ContractResult::new(
        "env",
        missing.is_empty(),
        format!("want {:?}; missing {missing:?}", c.env),
    ));
    let wd = cfg["WorkingDir"].as_str().unwrap_or("");
    out.push(ContractResult::new(
        "workdir",
        wd == c.workdir,
        format!("want {:?}, image has {wd:?}", c.workdir),
    ));
    let mut exposed = keys(&cfg["ExposedPorts"]);
    exposed.sort();
    let mut want: Vec<&str> = c.exposed.to_vec();
    want.sort();
    same("expose", &want, &exposed, out);
    let mut vols = keys(&cfg["Volumes"]);
    vols.sort();
    same("volumes", c.volumes, &vols, out);
    let hc = strings(&cfg["Healthcheck"]["Test"]);
    same("healthcheck", c.healthcheck.unwrap_or(&[]), &hc, out);
}

/// Programs on PATH (present and absent), the user's IDs, and a healthcheck calling a missing
/// program turning the container unhealthy.
fn programs_and_user(s: &Standin, out: &mut Vec<ContractResult>) -> anyhow::Result<()> {
    let c = s.contract;
    let mut args: Vec<String> = vec!["--entrypoint".into(), "sleep".into()];
    if let Some(missing) = c.absent.first() {
        args.extend([
            format!("--health-cmd={missing} --version"),
            "--health-interval=1s".into(),
            "--health-retries=1".into(),
            "--health-timeout=10s".into(),
            "--health-start-period=0s".into(),
        ]);
    }
    args.push(s.image.clone());
    args.push("300".into());
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let ctr = Container::start("standin-tools", &argv)?;
    let script = r#"for p; do if command -v "$p" >/dev/null 2>&1; then echo "yes $p"; else echo "no $p"; fi; done"#;
    let mut cmd = vec!["sh", "-c", script, "sh"];
    cmd.extend(c.present.iter().chain(c.absent));
    let (_, text) = ctr.exec(&cmd)?;
    let has = |p: &str| text.lines().any(|l| l == format!("yes {p}"));
    let missing: Vec<&&str> = c.present.iter().filter(|p| !has(p)).collect();
    out.push(ContractResult::new(
        "present",
        missing.is_empty(),
        format!(
            "want on PATH: {}; missing: {missing:?}",
            c.present.join(" ")
        ),
    ));
    let there: Vec<&&str> = c.absent.iter().filter(|p| has(p)).collect();
    out.push(ContractResult::new(
        "absent",
        there.is_empty(),
        format!(
            "the official image has no {}; found here: {there:?}",
            c.absent.join(", ")
        ),
    ));
    if let Some(user) = c.user {
        let (ok, ids) =
            ctr.exec(&["sh", "-c", &format!("echo $(id -u {user}):$(id -g {user})")])?;
        let want = format!("{}:{}", c.uid, c.gid);
        out.push(ContractResult::new(
            "user-ids",
            ok && ids.trim() == want,
            format!("want {user} = {want}, image has {}", ids.trim()),
        ));
    }
    if let Some(missing) = c.absent.first() {
        let status = ctr.wait_state("{{.State.Health.Status}}", Duration::from_secs(30), |v| {
            v == "unhealthy"
        })?;
        out.push(ContractResult::new(
            "healthcheck-missing-program",
            status == "unhealthy",
            format!("a healthcheck calling `{missing}` (absent) must fail: status {status}"),
        ));
    }
    Ok(())
}

/// Reads `/proc/<pid>/status` Uid/Gid (real IDs) inside the container.
fn proc_ids(ctr: &Container, pid: &str) -> anyhow::Result<(String, String, String)> {
    let script = format!(
        "cat /proc/{pid}/comm; sed -n 's/^Uid:[[:space:]]*\\([0-9]*\\).*/\\1/p;s/^Gid:[[:space:]]*\\([0-9]*\\).*/\\1/p' /proc/{pid}/status"
    );
    let (_, text) = ctr.exec(&["sh", "-c", &script])?;
    let mut l = text.lines().map(str::trim);
    Ok((
        l.next().unwrap_or("").to_string(),
        l.next().unwrap_or("").to_string(),
        l.next().unwrap_or("").to_string(),
    ))
}

/// A scratch directory removed on drop.
struct Scratch(std::path::PathBuf);

impl Scratch {
    fn new(prefix: &str) -> anyhow::Result<Scratch> {
        let p = std::env::temp_dir().join(docker::unique_name(prefix));
        std::fs::create_dir_all(&p)?;
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755))?;
        Ok(Scratch(p))
    }
    fn write(&self, name: &str, text: &str, mode: u32) -> anyhow::Result<()> {
        use std::os::unix::fs::PermissionsExt as _;
        let p = self.0.join(name);
        std::fs::write(&p, text)?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))?;
        Ok(())
    }
    fn path(&self) -> String {
        self.0.display().to_string()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A named volume removed on drop.
struct Volume(String);

impl Volume {
    fn new(prefix: &str) -> anyhow::Result<Volume> {
        let name = docker::unique_name(prefix);
        docker::run(&["volume", "create", &name])?;
        Ok(Volume(name))
    }
}

impl Drop for Volume {
    fn drop(&mut self) {
        let _ = docker::output(&["volume", "rm", "-f", &self.0]);
    }
}

const PG_PASSWORD: &str = "probe-secret";

/// Starts the server as the book does, waits until it serves, then checks PID 1, the user it
/// runs as, the image-specific behaviour, a healthcheck with a program the book calls, and a
/// clean stop on the image's STOPSIGNAL.
fn server(s: &Standin, out: &mut Vec<ContractResult>) -> anyhow::Result<()> {
    let c = s.contract;
    let scratch = Scratch::new("standin-probe")?;
    let _volume;
    let mut args: Vec<String> = Vec::new();
    let health: Option<&str>;
    let ready: Vec<&str>;
    match c.name {
        "postgres" => {
            scratch.write(
                "10-table.sql",
                "CREATE TABLE initdb_probe (note text);\nINSERT INTO initdb_probe VALUES ('sql');\n",
                0o644,
            )?;
            let psql = "psql -v ON_ERROR_STOP=1 --username \"$POSTGRES_USER\" --dbname \"$POSTGRES_DB\" -c";
            // Not executable: sourced by the entrypoint, so $0 is the entrypoint.
            scratch.write(
                "20-sourced.sh",
                &format!("{psql} \"INSERT INTO initdb_probe VALUES ('sourced:${{0##*/}}')\"\n"),
                0o644,
            )?;
            scratch.write(
                "30-executed.sh",
                &format!(
                    "#!/bin/sh\nset -e\n{psql} \"INSERT INTO initdb_probe VALUES ('executed:${{0##*/}}')\"\n"
                ),
                0o755,
            )?;
            scratch.write("40-ignored.txt", "not a script\n", 0o644)?;
            args.extend(
                [
                    "-e",
                    "POSTGRES_USER=probe",
                    "-e",
                    "POSTGRES_DB=probedb",
                    "-e",
                    "POSTGRES_INITDB_ARGS=--auth-local=scram-sha-256 --locale=C",
                    "-e",
                    "POSTGRES_INITDB_WALDIR=/var/lib/postgresql/wal",
                    "-v",
                ]
                .map(String::from),
            );
            args.push(format!("{}:/docker-entrypoint-initdb.d:ro", scratch.path()));
            args.push(format!("--env=POSTGRES_PASSWORD={PG_PASSWORD}"));
            health = Some("pg_isready -q -h /var/run/postgresql -U probe -d probedb");
            ready = vec![
                "sh",
                "-c",
                "test \"$(cat /proc/1/comm)\" = postgres && pg_isready -q -h /var/run/postgresql",
            ];
        }
        "redis" => {
            health = Some("redis-cli ping");
            ready = vec!["sh", "-c", "test \"$(redis-cli ping)\" = PONG"];
        }
        "nginx" => {
            // The book's nginx.conf names no `user`: workers must still be nginx (101).
            scratch.write(
                "nginx.conf",
                "events {}\nhttp {\n    server {\n        listen 80;\n        location / { return 200 \"standin\\n\"; }\n        location /up { proxy_pass http://127.0.0.1:81; }\n    }\n    server {\n        listen 81;\n        location / { return 200 \"got it\\n\"; }\n    }\n}\n",
                0o644,
            )?;
            args.push("-v".into());
            args.push(format!(
                "{}/nginx.conf:/etc/nginx/nginx.conf:ro",
                scratch.path()
            ));
            health = Some("wget -q -O /dev/null http://127.0.0.1/");
            ready = vec!["wget", "-q", "-O", "/dev/null", "http://127.0.0.1/"];
        }
        "synapse" => {
            let vol = Volume::new("standin-synapse-data")?;
            synapse_generate(s, &vol.0, None, out)?;
            // A second data volume generated with UID/GID: the files belong to them.
            let other = Volume::new("standin-synapse-uid")?;
            synapse_generate(s, &other.0, Some((1234, 4321)), out)?;
            args.push("-v".into());
            args.push(format!("{}:/data", vol.0));
            _volume = vol;
            health = None;
            ready = vec!["curl", "-fsS", "http://localhost:8008/health"];
        }
        other => anyhow::bail!("no server probe for the {other} stand-in"),
    }
    if let Some(h) = health {
        args.extend([
            format!("--health-cmd={h}"),
            "--health-interval=1s".into(),
            "--health-retries=3".into(),
            "--health-timeout=10s".into(),
        ]);
    }
    args.push(s.image.clone());
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let ctr = Container::start(&format!("standin-{}", c.name), &argv)?;
    let (up, text) = ctr.wait_exec(&ready, Duration::from_secs(120))?;
    out.push(ContractResult::new(
        "serves",
        up,
        if up {
            format!("`{}` succeeded", ready.join(" "))
        } else {
            format!(
                "`{}` never succeeded: {text}\n{}",
                ready.join(" "),
                ctr.logs()
            )
        },
    ));
    if !up {
        return Ok(());
    }
    let (comm, uid, gid) = proc_ids(&ctr, "1")?;
    let (want_uid, want_gid) = if c.name == "nginx" {
        // The master stays root; its workers drop (checked below).
        ("0".to_string(), "0".to_string())
    } else {
        (c.uid.to_string(), c.gid.to_string())
    };
    out.push(ContractResult::new(
        "pid1",
        comm == c.server && uid == want_uid && gid == want_gid,
        format!(
            "want PID 1 = {} as {want_uid}:{want_gid}, found {comm} as {uid}:{gid}",
            c.server
        ),
    ));
    match c.name {
        "postgres" => postgres_checks(&ctr, out)?,
        "redis" => {
            let (_, pm) = ctr.exec(&["redis-cli", "config", "get", "protected-mode"])?;
            out.push(ContractResult::new(
                "redis-protected-mode",
                pm.lines().nth(1) == Some("no"),
                format!(
                    "protected-mode must be off by default: {}",
                    pm.split_whitespace().collect::<Vec<_>>().join(" ")
                ),
            ));
        }
        "nginx" => {
            let script = "for d in /proc/[0-9]*; do [ \"$(cat $d/comm 2>/dev/null)\" = nginx ] || continue; [ \"${d#/proc/}\" = 1 ] && continue; sed -n 's/^Uid:[[:space:]]*\\([0-9]*\\).*/\\1/p' $d/status; done";
            let (_, text) = ctr.exec(&["sh", "-c", script])?;
            let uids: Vec<&str> = text.lines().map(str::trim).collect();
            let want = c.uid.to_string();
            out.push(ContractResult::new(
                "nginx-workers",
                !uids.is_empty() && uids.iter().all(|u| *u == want),
                format!("worker processes must run as {want}: found {uids:?}"),
            ));
            // A body larger than client_body_buffer_size goes to the client body temporary
            // directory, which the workers (not the root master) must be able to write: the
            // official image's /var/cache/nginx/client_temp is theirs.
            let (ok, text) = ctr.exec(&[
                "sh",
                "-c",
                "nginx -t -q && head -c 1000000 /dev/zero > /tmp/body && wget -q -O - --post-file=/tmp/body http://127.0.0.1/up",
            ])?;
            out.push(ContractResult::new(
                "nginx-body-temp",
                ok && text.trim() == "got it",
                format!(
                    "a 1 MB body proxied (buffered to the body temporary directory): {}",
                    text.trim()
                ),
            ));
        }
        "synapse" => {
            let (ok, text) = ctr.exec(&["register_new_matrix_user", "--help"])?;
            out.push(ContractResult::new(
                "register_new_matrix_user",
                ok && text.contains("usage"),
                "register_new_matrix_user --help runs",
            ));
            let (ok, own) = ctr.exec(&["stat", "-c", "%u:%g", "/data/homeserver.yaml"])?;
            out.push(ContractResult::new(
                "synapse-data-owner",
                ok && own.trim() == "991:991",
                format!(
                    "generate (as root, no UID) gives /data to 991:991: {}",
                    own.trim()
                ),
            ));
        }
        _ => {}
    }
    if let Some(h) = health {
        let st = ctr.wait_state("{{.State.Health.Status}}", Duration::from_secs(30), |v| {
            v == "healthy"
        })?;
        out.push(ContractResult::new(
            "healthcheck",
            st == "healthy",
            format!("`{h}` as a healthcheck: {st}"),
        ));
    }
    // The image's STOPSIGNAL must stop the server cleanly, well before Docker's SIGKILL.
    let started = std::time::Instant::now();
    docker::run(&["stop", "--time", "30", &ctr.name])?;
    let secs = started.elapsed().as_secs_f64();
    let code = ctr.state("{{.State.ExitCode}}")?;
    out.push(ContractResult::new(
        "clean-stop",
        code == "0" && secs < 25.0,
        format!(
            "docker stop ({}) must end the server with status 0: status {code} after {secs:.1} s",
            c.stop_signal.unwrap_or("SIGTERM")
        ),
    ));
    Ok(())
}

fn postgres_checks(ctr: &Container, out: &mut Vec<ContractResult>) -> anyhow::Result<()> {
    // The container's own address, not loopback: initdb trusts 127.0.0.1, and the line the
    // entrypoint appends (`host all all all <method>`) is what a client on the network meets.
    let addr = ctr.state("{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}")?;
    let addr = addr
        .split_whitespace()
        .next()
        .unwrap_or("127.0.0.1")
        .to_string();
    let q = |password: &str| -> anyhow::Result<(bool, String)> {
        ctr.exec(&[
            "env",
            &format!("PGPASSWORD={password}"),
            "psql",
            "-h",
            &addr,
            "-U",
            "probe",
            "-d",
            "probedb",
            "-XAt",
            "-c",
            "SELECT note FROM initdb_probe ORDER BY note",
        ])
    };
    let (ok, text) = q(PG_PASSWORD)?;
    let rows: Vec<&str> = text.lines().map(str::trim).collect();
    let want = [
        "executed:30-executed.sh",
        "sourced:docker-entrypoint.sh",
        "sql",
    ];
    out.push(ContractResult::new(
        "postgres-initdb",
        ok && rows == want,
        format!(
            "POSTGRES_USER/PASSWORD/DB and /docker-entrypoint-initdb.d (*.sql, sourced and \
             executed *.sh, others ignored): want rows {want:?}, got {rows:?}"
        ),
    ));
    let (ok, text) = q("wrong-password")?;
    out.push(ContractResult::new(
        "postgres-host-auth",
        !ok && text.contains("password authentication failed"),
        format!(
            "a wrong password over TCP from {addr} must be refused: {}",
            text.trim()
        ),
    ));
    let (ok, text) = ctr.exec(&["readlink", "/var/lib/postgresql/data/pg_wal"])?;
    out.push(ContractResult::new(
        "postgres-waldir",
        ok && text.trim() == "/var/lib/postgresql/wal",
        format!(
            "POSTGRES_INITDB_WALDIR puts the WAL elsewhere (pg_wal a link to it): {}",
            text.trim()
        ),
    ));
    let (ok, text) = ctr.exec(&["stat", "-c", "%u:%g %a", "/var/lib/postgresql/data"])?;
    out.push(ContractResult::new(
        "postgres-pgdata",
        ok && text.trim() == "70:70 700",
        format!("PGDATA must be 70:70 mode 700: {}", text.trim()),
    ));
    Ok(())
}

/// `start.py generate` into `volume`, as root (files to 991:991) or with UID/GID set.
fn synapse_generate(
    s: &Standin,
    volume: &str,
    ids: Option<(u32, u32)>,
    out: &mut Vec<ContractResult>,
) -> anyhow::Result<()> {
    let mount = format!("{volume}:/data");
    let mut args = vec![
        "run".to_string(),
        "--rm".into(),
        "-v".into(),
        mount.clone(),
        "-e".into(),
        "SYNAPSE_SERVER_NAME=standin.test".into(),
        "-e".into(),
        "SYNAPSE_REPORT_STATS=no".into(),
    ];
    if let Some((u, g)) = ids {
        args.extend([
            "-e".into(),
            format!("UID={u}"),
            "-e".into(),
            format!("GID={g}"),
        ]);
    }
    args.push(s.image.clone());
    args.push("generate".into());
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let gen_out = docker::output(&argv)?;
    let check = if ids.is_some() {
        "synapse-generate-uid"
    } else {
        "synapse-generate"
    };
    if !gen_out.status.success() {
        out.push(ContractResult::new(
            check,
            false,
            format!(
                "start.py generate failed: {}",
                String::from_utf8_lossy(&gen_out.stderr).trim()
            ),
        ));
        return Ok(());
    }
    let own = docker::run(&[
        "run",
        "--rm",
        "-v",
        &mount,
        "--entrypoint",
        "stat",
        &s.image,
        "-c",
        "%u:%g",
        "/data/homeserver.yaml",
        "/data/standin.test.signing.key",
    ])?;
    let (u, g) = ids.unwrap_or((991, 991));
    let want = format!("{u}:{g}");
    out.push(ContractResult::new(
        check,
        own.lines().count() == 2 && own.lines().all(|l| l.trim() == want),
        format!(
            "generate writes homeserver.yaml and the signing key as {want}: {}",
            own.replace('\n', " ")
        ),
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alpine_tags_are_accepted_and_others_explained() {
        for t in [
            "17-alpine",
            "17.6-alpine3.22",
            "alpine",
            "1.28-alpine",
            "stable-alpine",
        ] {
            assert_eq!(tag_supported(&POSTGRES, t), Ok(()), "{t}");
        }
        for t in ["17", "latest", "17-bookworm", "alpine-x"] {
            assert!(tag_supported(&POSTGRES, t).is_err(), "{t}");
        }
        let e = tag_supported(&NGINX, "1.28-alpine-slim").unwrap_err();
        assert!(e.contains("curl"), "{e}");
        assert_eq!(tag_supported(&NGINX, "1.28-alpine"), Ok(()));
    }

    /// src/reference/standins.md is the same contract as a table: each image's section names
    /// every program, the IDs, the stop signal and the sources of the data here.
    #[test]
    fn the_reference_page_states_each_contract() {
        let page = std::fs::read_to_string(crate::project_root().join("src/reference/standins.md"))
            .unwrap();
        for c in CONTRACTS {
            let start = page
                .find(&format!("\n## {} (`images/{}/`)", c.name, c.name))
                .unwrap_or_else(|| panic!("no section for {}", c.name));
            let rest = &page[start + 1..];
            let section = &rest[..rest[3..].find("\n## ").map_or(rest.len(), |i| i + 3)];
            let row = |aspect: &str| {
                section
                    .lines()
                    .find(|l| l.starts_with(&format!("| {aspect} |")))
                    .unwrap_or_else(|| panic!("{}: no `{aspect}` row", c.name))
                    .to_string()
            };
            let present = row("programs present");
            for p in c.present {
                assert!(
                    present.contains(&format!("`{p}`")),
                    "{}: {p} not in {present}",
                    c.name
                );
            }
            let absent = row("programs absent");
            for p in c.absent {
                assert!(
                    absent.contains(&format!("`{p}`")),
                    "{}: {p} not in {absent}",
                    c.name
                );
            }
            let user = row("user");
            assert!(
                user.contains(&format!("{}:{}", c.uid, c.gid)),
                "{}: {user}",
                c.name
            );
            let sig = row("STOPSIGNAL");
            assert!(
                sig.contains(c.stop_signal.unwrap_or("SIGTERM")),
                "{}: {sig}",
                c.name
            );
            for src in c.source {
                let path = src.split_once(' ').map_or(*src, |(_, p)| p);
                let file = path.rsplit('/').next().unwrap_or(path);
                assert!(section.contains(file), "{}: source {src} not cited", c.name);
            }
        }
    }

    #[test]
    fn contracts_are_consistent() {
        for c in CONTRACTS {
            assert!(
                crate::project_root()
                    .join("images")
                    .join(c.name)
                    .join("Dockerfile")
                    .is_file(),
                "{}",
                c.name
            );
            for p in c.absent {
                assert!(
                    !c.present.contains(p),
                    "{}: {p} both present and absent",
                    c.name
                );
            }
            assert!(!c.source.is_empty() && !c.differences.is_empty());
        }
    }
}
