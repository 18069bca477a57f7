//! The repository's own book extracts to a complete deployment, and the real tools accept it.
//!
//! - completeness: compose file, env files, homeserver.yaml, one file per worker, log configs,
//!   nginx files, postgresql.conf; every worker named in the Synapse config has a worker file,
//!   a Compose service with a healthcheck on a socket it listens on, and a log config;
//! - real `nginx -t` on the main tree and on the HTTPS variant;
//! - real `python -m synapse.config` (the pinned Synapse) for the main process and every worker;
//! - real `postgres -C` on the main postgresql.conf and the small-server variant.
//!
//! The tools are optional on a developer machine (the test says what it skipped), but with
//! `CI=true` a missing tool is a failure: CI must run every check.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use xtask::extract::{self, Options, Tree};
use xtask::yaml::Node as YamlOwned;

const WORKERS: [&str; 12] = [
    "client_sync1",
    "federation_reader1",
    "media1",
    "rooms1",
    "rooms2",
    "rooms3",
    "rooms4",
    "sender1",
    "sender2",
    "sender3",
    "sender4",
    "tasks1",
];

fn tree(variant: Option<&str>) -> Tree {
    let book = xtask::book::load(&xtask::project_root())
        .unwrap_or_else(|d| panic!("book does not load: {d:#?}"));
    let opts = Options {
        variant: variant.map(String::from),
        ..Options::default()
    };
    extract::assemble(&book, &opts).unwrap_or_else(|d| panic!("book does not extract: {d:#?}"))
}

/// The tree as `extract --secrets generate` writes it: with a real signing key, which Synapse
/// reads before anything else (the placeholder tree holds a note in its place).
fn generated_tree() -> Tree {
    let book = xtask::book::load(&xtask::project_root())
        .unwrap_or_else(|d| panic!("book does not load: {d:#?}"));
    let opts = Options {
        secrets: xtask::secrets::Secrets::Generate,
        ..Options::default()
    };
    extract::assemble(&book, &opts).unwrap_or_else(|d| panic!("book does not extract: {d:#?}"))
}

fn yaml(tree: &Tree, path: &str) -> YamlOwned {
    let f = tree
        .get(path)
        .unwrap_or_else(|| panic!("{path} is missing from the tree"));
    let loaded =
        xtask::yaml::load(&f.content).unwrap_or_else(|e| panic!("{path} is not YAML: {e:?}"));
    assert!(loaded.issues.is_empty(), "{path}: {:?}", loaded.issues);
    let mut docs = loaded.docs;
    assert_eq!(docs.len(), 1, "{path} must hold exactly one YAML document");
    docs.remove(0)
}

fn get<'a>(y: &'a YamlOwned, key: &str) -> Option<&'a YamlOwned> {
    y.get(key)
}

fn str_of(y: &YamlOwned) -> Option<String> {
    y.as_str().map(String::from)
}

/// Every string in a scalar-or-sequence value.
fn names(y: Option<&YamlOwned>) -> Vec<String> {
    y.map(|v| v.str_list().into_iter().map(String::from).collect())
        .unwrap_or_default()
}

/// The Unix socket paths of a `listeners`/`worker_listeners` list, with their resource names.
/// The Unix-socket listeners (path, resource names); TCP ones (metrics, the main process's
/// loopback port) are left out.
fn listeners(y: Option<&YamlOwned>) -> Vec<(String, Vec<String>)> {
    let Some(seq) = y.and_then(YamlOwned::as_seq) else {
        return vec![];
    };
    seq.iter()
        .filter(|l| get(l, "path").is_some())
        .map(|l| {
            let path = get(l, "path").and_then(str_of).unwrap_or_default();
            let res = get(l, "resources")
                .and_then(YamlOwned::as_seq)
                .map(|rs| rs.iter().flat_map(|r| names(get(r, "names"))).collect())
                .unwrap_or_default();
            (path, res)
        })
        .collect()
}

/// Container path under /data → tree path (`./synapse` is mounted at `/data`).
fn data_path(p: &str) -> String {
    format!(
        "synapse/{}",
        p.strip_prefix("/data/")
            .unwrap_or_else(|| panic!("{p} is not under /data"))
    )
}

#[test]
fn tree_is_complete() {
    let t = tree(None);
    for f in [
        "docker-compose.yml",
        ".env",
        ".postgres.env",
        ".synapse.env",
        "synapse/homeserver.yaml",
        "synapse/log/main.yaml",
        "nginx/nginx.conf",
        "nginx/conf.d/maps.conf",
        "nginx/conf.d/upstreams.conf",
        "nginx/snippets/proxy.conf",
        "nginx/snippets/locations.conf",
        "postgres/postgresql.conf",
    ] {
        assert!(t.get(f).is_some(), "{f} is missing from the extracted tree");
    }
    let worker_files: BTreeSet<String> = t
        .files
        .keys()
        .filter_map(|k| {
            k.strip_prefix("synapse/workers/")?
                .strip_suffix(".yaml")
                .map(String::from)
        })
        .collect();
    assert_eq!(
        worker_files,
        WORKERS.iter().map(|s| s.to_string()).collect(),
        "worker files"
    );

    // Secrets stay placeholders and the files holding them are marked secret.
    for f in [".postgres.env", "synapse/homeserver.yaml"] {
        assert!(
            t.files[f].secret,
            "{f} holds a secret and must be written 0600"
        );
    }
    let env_value = |k: &str| {
        t.files[".postgres.env"]
            .content
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .unwrap_or_else(|| panic!("{k} is not in .postgres.env"))
            .to_string()
    };
    // Synapse's role gets its own password; the superuser's never reaches Synapse.
    let synapse_pw = env_value("SYNAPSE_DB_PASSWORD");
    let superuser_pw = env_value("POSTGRES_PASSWORD");
    assert_ne!(synapse_pw, superuser_pw);
    assert!(
        t.files["synapse/homeserver.yaml"]
            .content
            .contains(&synapse_pw),
        "Synapse's database password must be shared with .postgres.env"
    );
    assert!(
        !t.files["synapse/homeserver.yaml"]
            .content
            .contains(&superuser_pw),
        "Synapse must not get the superuser's password"
    );

    let hs = yaml(&t, "synapse/homeserver.yaml");
    let compose = yaml(&t, "docker-compose.yml");
    assert!(
        get(&compose, "version").is_none(),
        "the Compose spec has no `version:`"
    );
    let services = get(&compose, "services").expect("compose has services");
    let restart = get(services, "init-sockets")
        .and_then(|s| get(s, "restart"))
        .and_then(str_of);
    assert_eq!(
        restart.as_deref(),
        Some("no"),
        "restart must be the quoted string \"no\""
    );

    // Every worker named anywhere in the shared config.
    let mut named: BTreeSet<String> = BTreeSet::new();
    let instance_map: BTreeMap<String, String> = get(&hs, "instance_map")
        .and_then(YamlOwned::as_map)
        .expect("instance_map")
        .iter()
        .map(|(k, v)| {
            (
                str_of(k).unwrap(),
                get(v, "path")
                    .and_then(str_of)
                    .expect("instance_map entries are sockets"),
            )
        })
        .collect();
    named.extend(instance_map.keys().filter(|k| *k != "main").cloned());
    if let Some(w) = get(&hs, "stream_writers").and_then(YamlOwned::as_map) {
        for (_, v) in w {
            named.extend(names(Some(v)));
        }
    }
    for key in [
        "federation_sender_instances",
        "pusher_instances",
        "run_background_tasks_on",
        "notify_appservices_from_worker",
        "update_user_directory_from_worker",
        "media_instance_running_background_jobs",
    ] {
        named.extend(names(get(&hs, key)));
    }
    assert!(
        instance_map.contains_key("main"),
        "main must be in instance_map"
    );
    for n in &named {
        assert!(
            worker_files.contains(n),
            "{n} is named in homeserver.yaml but has no synapse/workers/{n}.yaml"
        );
    }

    // main: its healthcheck uses a socket it listens on.
    let main_socks: Vec<String> = listeners(get(&hs, "listeners"))
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    let main_svc = get(services, "synapse").expect("service synapse");
    check_health(main_svc, "synapse", &main_socks);
    assert!(
        main_socks.contains(&instance_map["main"]),
        "main's instance_map socket must be one of its listeners"
    );

    for w in WORKERS {
        let y = yaml(&t, &format!("synapse/workers/{w}.yaml"));
        assert_eq!(
            get(&y, "worker_name").and_then(str_of).as_deref(),
            Some(w),
            "worker_name of {w}"
        );
        assert_eq!(
            get(&y, "worker_app").and_then(str_of).as_deref(),
            Some("synapse.app.generic_worker")
        );
        let ls = listeners(get(&y, "worker_listeners"));
        let socks: Vec<String> = ls.iter().map(|(p, _)| p.clone()).collect();
        for s in &socks {
            assert!(
                s.starts_with(&format!("/sockets/{w}_")),
                "{w} listens on {s}: sockets are named after the worker"
            );
        }
        if let Some(repl) = instance_map.get(w) {
            assert!(
                ls.iter()
                    .any(|(p, r)| p == repl && r.iter().any(|n| n == "replication")),
                "{w} is in instance_map at {repl} but has no replication listener there"
            );
        }
        let svc = get(services, w).unwrap_or_else(|| panic!("no compose service {w}"));
        check_health(svc, w, &socks);
        // the template arrives through the merge keys: image, volumes, and waiting for main
        assert_eq!(
            get(svc, "image").and_then(str_of),
            get(main_svc, "image").and_then(str_of),
            "{w}'s image"
        );
        let waits = svc
            .path(&["depends_on", "synapse", "condition"])
            .and_then(str_of);
        assert_eq!(
            waits.as_deref(),
            Some("service_healthy"),
            "{w} must wait for a healthy main process"
        );
        let cmd: Vec<String> = names(get(svc, "command"));
        assert!(
            cmd.contains(&format!("/data/workers/{w}.yaml")),
            "service {w} must load its worker file: {cmd:?}"
        );
        // log config exists, and writes under /data/logs (mounted from ./synapse)
        let log = get(&y, "worker_log_config")
            .and_then(str_of)
            .unwrap_or_else(|| panic!("{w} has no worker_log_config"));
        let log_yaml = yaml(&t, &data_path(&log));
        let file = get(&log_yaml, "handlers")
            .and_then(|h| get(h, "file"))
            .and_then(|f| get(f, "filename"))
            .and_then(str_of);
        assert_eq!(file, Some(format!("/data/logs/{w}.log")), "{w}'s log file");
    }
    let media = yaml(&t, "synapse/workers/media1.yaml");
    assert_eq!(
        get(&media, "enable_media_repo").and_then(YamlOwned::yaml11_bool),
        Some(true),
        "media1 enables the media repo"
    );
    assert_eq!(
        get(&hs, "enable_media_repo").and_then(YamlOwned::yaml11_bool),
        Some(false),
        "shared config disables it"
    );

    // nginx: every upstream used by proxy_pass is defined, and no proxy_pass has a URI part.
    let ups = &t.files["nginx/conf.d/upstreams.conf"].content;
    let defined: BTreeSet<&str> = ups
        .lines()
        .filter_map(|l| {
            l.trim()
                .strip_prefix("upstream ")?
                .split_whitespace()
                .next()
        })
        .collect();
    let locs = &t.files["nginx/snippets/locations.conf"].content;
    for l in locs
        .lines()
        .filter_map(|l| l.trim().strip_prefix("proxy_pass "))
    {
        let target = l
            .trim_end_matches(';')
            .strip_prefix("http://")
            .expect("proxy_pass http://");
        assert!(
            defined.contains(target),
            "proxy_pass to undefined upstream {target}"
        );
        assert!(
            !target.contains('/'),
            "proxy_pass http://{target} has a URI part"
        );
    }
    assert!(
        t.files["nginx/nginx.conf"]
            .content
            .contains("$upstream_addr"),
        "the access log shows the upstream"
    );
}

fn check_health(svc: &YamlOwned, name: &str, socks: &[String]) {
    let test: Vec<String> = names(get(svc, "healthcheck").and_then(|h| get(h, "test")));
    assert!(!test.is_empty(), "service {name} has no healthcheck test");
    assert!(
        socks.iter().any(|s| test.iter().any(|a| a == s)),
        "service {name}'s healthcheck {test:?} uses none of its sockets {socks:?}"
    );
}

/// A tool the test needs: None (skip) on a developer machine, a failure under CI.
fn require(tool: Option<PathBuf>, what: &str) -> Option<PathBuf> {
    if tool.is_none() {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{what} is not installed, and CI=true requires every check to run");
        }
        eprintln!("SKIPPED: {what} is not installed");
    }
    tool
}

fn write(t: &Tree) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    extract::write_tree(t, dir.path(), true).unwrap_or_else(|d| panic!("write_tree: {d:#?}"));
    dir
}

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// `nginx -t` on the extracted files. The container paths of the logs are redirected into the
/// temporary directory (the only change), and the pid file goes there too.
fn nginx_t(nginx: &Path, t: &Tree, certs: bool) -> (bool, String) {
    let dir = write(t);
    let root = dir.path();
    std::fs::create_dir_all(root.join("log")).unwrap();
    let log_dir = format!("{}/log/", root.display());
    {
        let f = "nginx/nginx.conf";
        let p = root.join(f);
        let text = std::fs::read_to_string(&p)
            .unwrap()
            .replace("/var/log/nginx/", &log_dir);
        let text = text.replace("/etc/nginx/tls/", &format!("{}/nginx/tls/", root.display()));
        std::fs::write(&p, text).unwrap();
    }
    if certs {
        let tls = root.join("nginx/tls");
        std::fs::create_dir_all(&tls).unwrap();
        let (ok, out) = run(Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=matrix.example.com",
                "-keyout",
            ])
            .arg(tls.join("privkey.pem"))
            .arg("-out")
            .arg(tls.join("fullchain.pem")));
        assert!(ok, "openssl: {out}");
    }
    run(Command::new(nginx)
        .arg("-t")
        .arg("-c")
        .arg(root.join("nginx/nginx.conf"))
        .arg("-g")
        .arg(format!("pid {}/nginx.pid;", root.display())))
}

#[test]
fn nginx_accepts_the_configuration() {
    let Some(nginx) = require(
        xtask::tools::which("nginx")
            .or_else(|| Some(PathBuf::from("/usr/sbin/nginx")).filter(|p| p.exists())),
        "nginx",
    ) else {
        return;
    };
    let (ok, out) = nginx_t(&nginx, &tree(None), false);
    assert!(
        ok && out.contains("test is successful"),
        "nginx -t failed on the main tree:\n{out}"
    );
    if require(
        xtask::tools::which("openssl"),
        "openssl (for the HTTPS variant's test certificate)",
    )
    .is_some()
    {
        let (ok, out) = nginx_t(&nginx, &tree(Some("https")), true);
        assert!(
            ok && out.contains("test is successful"),
            "nginx -t failed on the https variant:\n{out}"
        );
    }
}

#[test]
fn nginx_test_can_fail() {
    // The check above is only worth something if a broken file makes it fail.
    let Some(nginx) = require(
        xtask::tools::which("nginx")
            .or_else(|| Some(PathBuf::from("/usr/sbin/nginx")).filter(|p| p.exists())),
        "nginx",
    ) else {
        return;
    };
    let mut t = tree(None);
    let f = t.files.get_mut("nginx/snippets/locations.conf").unwrap();
    f.content = f.content.replacen(
        "proxy_pass http://media1;",
        "proxy_pass http://media_typo;",
        1,
    );
    let (ok, out) = nginx_t(&nginx, &t, false);
    assert!(
        !ok && out.contains("media_typo"),
        "nginx -t should reject an unknown upstream:\n{out}"
    );
}

/// `python -m synapse.config` for main and every worker. The container paths under `/data` are
/// redirected to the extracted `synapse/` directory, the only change.
fn synapse_config(python: &Path, t: &Tree) -> Vec<(String, bool, String)> {
    let dir = write(t);
    let data = dir.path().join("synapse");
    let data_s = format!("{}/", data.display());
    for entry in walk(&data) {
        if entry.extension().is_some_and(|e| e == "yaml") {
            let text = std::fs::read_to_string(&entry)
                .unwrap()
                .replace("/data/", &data_s);
            std::fs::write(&entry, text).unwrap();
        }
    }
    let hs = data.join("homeserver.yaml");
    let mut jobs: Vec<(String, Vec<PathBuf>)> = vec![("main".into(), vec![hs.clone()])];
    for w in WORKERS {
        jobs.push((
            w.into(),
            vec![hs.clone(), data.join(format!("workers/{w}.yaml"))],
        ));
    }
    let handles: Vec<_> = jobs
        .into_iter()
        .map(|(name, files)| {
            let python = python.to_path_buf();
            std::thread::spawn(move || {
                let mut cmd = Command::new(&python);
                cmd.args(["-m", "synapse.config"]);
                for f in &files {
                    cmd.arg("-c").arg(f);
                }
                let (ok, out) = run(&mut cmd);
                (name, ok && out.contains("Config parses OK"), out)
            })
        })
        .collect();
    let res = handles.into_iter().map(|h| h.join().unwrap()).collect();
    drop(dir);
    res
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn pinned_python() -> Option<PathBuf> {
    let p = xtask::tools::synapse_python();
    p.exists().then_some(p)
}

#[test]
fn synapse_accepts_every_process() {
    let Some(python) = require(
        pinned_python(),
        "the pinned Synapse venv (target/synapse-venv)",
    ) else {
        return;
    };
    let res = synapse_config(&python, &generated_tree());
    assert_eq!(res.len(), 13);
    let failed: Vec<_> = res.iter().filter(|(_, ok, _)| !ok).collect();
    assert!(
        failed.is_empty(),
        "python -m synapse.config failed:\n{failed:#?}"
    );
}

#[test]
fn synapse_config_check_can_fail() {
    let Some(python) = require(
        pinned_python(),
        "the pinned Synapse venv (target/synapse-venv)",
    ) else {
        return;
    };
    // client_sync1 writes typing; without its instance_map entry Synapse must refuse.
    let mut t = generated_tree();
    let f = t.files.get_mut("synapse/homeserver.yaml").unwrap();
    f.content = f.content.replacen(
        "  client_sync1:\n    path: /sockets/client_sync1_replication.sock\n",
        "",
        1,
    );
    let res = synapse_config(&python, &t);
    let (_, ok, out) = res.iter().find(|(n, _, _)| n == "client_sync1").unwrap();
    assert!(
        !ok && out.contains("instance_map"),
        "synapse.config should reject a writer missing from instance_map:\n{out}"
    );
}

/// `postgres -C` loads the whole file and fails on any unknown setting or bad value.
fn postgres_check(conf_text: &str) -> (bool, String) {
    let bindir = xtask::tools::pg_bindir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("postgresql.conf");
    std::fs::write(&conf, conf_text).unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    use std::os::unix::fs::PermissionsExt;
    for p in [dir.path(), &data, &conf] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let postgres = bindir.join("postgres");
    let mut cmd = if is_root() {
        // PostgreSQL refuses to run as root.
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(&postgres);
        c
    } else {
        Command::new(&postgres)
    };
    cmd.arg("-D")
        .arg(&data)
        .args(["-C", "shared_buffers", "-c"])
        .arg(format!("config_file={}", conf.display()));
    run(&mut cmd)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

#[test]
fn postgres_accepts_both_variants() {
    if require(xtask::tools::pg_bindir(), "PostgreSQL server binaries").is_none() {
        return;
    }
    for (variant, want) in [(None, "524288"), (Some("small"), "32768")] {
        let t = tree(variant);
        let (ok, out) = postgres_check(&t.files["postgres/postgresql.conf"].content);
        assert!(
            ok && out.lines().any(|l| l.trim() == want),
            "postgres -C failed for variant {variant:?}:\n{out}"
        );
    }
    let (ok, out) = postgres_check("shared_buffers = 1GB\nno_such_setting = 1\n");
    assert!(
        !ok && out.contains("no_such_setting"),
        "postgres -C should reject an unknown setting:\n{out}"
    );
}
