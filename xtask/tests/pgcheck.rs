//! The PostgreSQL chapters run for real, without the rest of the stack: a scratch primary made
//! the way the postgres image makes it and started with the book's postgresql.conf, a main
//! Synapse process on it, then
//! - every `sql` block of the book against that live Synapse database (extensions enabled);
//! - the replica check (`pgcheck::replica::check`; the pgBackRest backups and restores need the
//!   stack test's images and run there);
//! - the major-version migration procedure into a fresh cluster, and Synapse started on it;
//! - both postgresql.conf variants started by the real server.
//!
//! Needs root, PostgreSQL and the Synapse venv (`cargo xtask setup`). Without them it is
//! skipped, except under CI=true, where that is a failure. Run alone with
//! `cargo test -p xtask --test pgcheck -- --nocapture`.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use xtask::pgcheck::cluster::{self, Conn, Server, wait_for};
use xtask::pgcheck::{compose, conf, migrate, replica, sql};
use xtask::{book, extract, secrets, tools};

fn prerequisites() -> Option<(PathBuf, PathBuf)> {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .ok()
        .is_some_and(|o| o.stdout.starts_with(b"0\n"));
    let bindir = tools::pg_bindir();
    let python = tools::synapse_python();
    match (root, bindir, python.exists()) {
        (true, Some(b), true) => Some((b, python)),
        (root, b, py) => {
            let why = format!("root={root} postgres={b:?} synapse venv={py}");
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "pgcheck cannot run under CI: {why}"
            );
            eprintln!("skipping pgcheck: {why}");
            None
        }
    }
}

/// One HTTP/1.1 request over a Unix socket; gives the status and the JSON body.
fn http(
    sock: &Path,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
    token: Option<&str>,
) -> (u16, serde_json::Value) {
    let mut s = UnixStream::connect(sock).expect("connect to Synapse");
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nX-Forwarded-For: 127.0.0.1\r\nX-Forwarded-Proto: http\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, rest) = text.split_once("\r\n\r\n").expect("an HTTP response");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("a status");
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = String::new();
        let mut r = rest;
        while let Some((size, tail)) = r.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if n == 0 {
                break;
            }
            out.push_str(&tail[..n]);
            r = &tail[n + 2..];
        }
        out
    } else {
        rest.to_string()
    };
    (
        status,
        serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
    )
}

struct Synapse {
    child: Child,
    sock: PathBuf,
    log: PathBuf,
}

impl Synapse {
    fn start(python: &Path, dir: &Path, sockets: &Path, db: &Conn) -> Synapse {
        std::fs::create_dir_all(dir).unwrap();
        let sock = dir.join("main_http.sock");
        let _ = std::fs::remove_file(&sock);
        let cfg = dir.join("homeserver.yaml");
        let password = db.password.clone().unwrap_or_default();
        std::fs::write(
            &cfg,
            format!(
                r#"server_name: "example.com"
public_baseurl: "http://127.0.0.1:8008/"
report_stats: false
enable_registration: true
enable_registration_without_verification: true
macaroon_secret_key: "test-macaroon"
form_secret: "test-form"
trusted_key_servers: []
suppress_key_server_warning: true
signing_key_path: "{dir}/signing.key"
media_store_path: "{dir}/media"
pid_file: "{dir}/main.pid"
bcrypt_rounds: 4
listeners:
  - path: "{sock}"
    type: http
    x_forwarded: true
    resources: [{{names: [client]}}]
database:
  name: psycopg2
  args: {{user: "{user}", password: "{password}", dbname: "{dbname}", host: "{host}", port: {port}, cp_min: 1, cp_max: 5}}
"#,
                dir = dir.display(),
                sock = sock.display(),
                user = db.user,
                dbname = db.dbname,
                host = sockets.display(),
                port = db.port,
            ),
        )
        .unwrap();
        let log = dir.join("synapse.log");
        let gen_status = Command::new(python)
            .args(["-m", "synapse.app.homeserver", "--generate-keys", "-c"])
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(gen_status.success(), "synapse --generate-keys failed");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(python)
            .args(["-m", "synapse.app.homeserver", "-c"])
            .arg(&cfg)
            .current_dir(dir)
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        let mut s = Synapse { child, sock, log };
        let sock = s.sock.clone();
        let ok = wait_for(Duration::from_secs(120), "Synapse /health", || {
            if let Some(st) = s.child.try_wait()? {
                anyhow::bail!("Synapse exited ({st})");
            }
            if !sock.exists() {
                return Ok(None);
            }
            let mut c = UnixStream::connect(&sock)?;
            c.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")?;
            let mut r = String::new();
            c.read_to_string(&mut r)?;
            Ok(r.ends_with("OK").then_some(()))
        });
        if let Err(e) = ok {
            let tail = cluster::tail(&s.log, 30);
            s.stop();
            panic!("{e:#}\n{tail}");
        }
        s
    }

    fn stop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

/// Registers alice (first call), creates a room, and sends one message per call.
struct Writer {
    sock: PathBuf,
    token: Option<String>,
    room: Option<String>,
    sent: usize,
}

impl Writer {
    fn write(&mut self) -> anyhow::Result<()> {
        if self.token.is_none() {
            let body = serde_json::json!({"username": "alice", "password": "wonderland-7",
                "auth": {"type": "m.login.dummy"}});
            let (st, r) = http(
                &self.sock,
                "POST",
                "/_matrix/client/v3/register",
                Some(&body),
                None,
            );
            anyhow::ensure!(st == 200, "register: {st} {r}");
            self.token = r["access_token"].as_str().map(String::from);
            let (st, r) = http(
                &self.sock,
                "POST",
                "/_matrix/client/v3/createRoom",
                Some(&serde_json::json!({"name": "backups"})),
                self.token.as_deref(),
            );
            anyhow::ensure!(st == 200, "createRoom: {st} {r}");
            self.room = r["room_id"].as_str().map(String::from);
        }
        let room = self.room.clone().unwrap_or_default();
        for _ in 0..3 {
            self.sent += 1;
            let path = format!(
                "/_matrix/client/v3/rooms/{room}/send/m.room.message/t{}",
                self.sent
            );
            let body =
                serde_json::json!({"msgtype": "m.text", "body": format!("message {}", self.sent)});
            let (st, r) = http(&self.sock, "PUT", &path, Some(&body), self.token.as_deref());
            anyhow::ensure!(st == 200, "send: {st} {r}");
        }
        Ok(())
    }
}

#[test]
fn postgres_chapters_run_for_real() {
    let Some((bindir, python)) = prerequisites() else {
        return;
    };
    let scratch = tempfile::Builder::new()
        .prefix("pgcheck-")
        .tempdir_in("/tmp")
        .unwrap();
    let s = scratch.path();
    std::fs::set_permissions(s, std::fs::Permissions::from_mode(0o755)).unwrap();

    // The book, extracted with fresh secrets.
    let root = xtask::project_root();
    let book = book::load(&root).expect("the book loads");
    let opts = extract::Options {
        secrets: secrets::Secrets::Generate,
        ..Default::default()
    };
    let tree = extract::assemble(&book, &opts).expect("the book extracts");
    let tree_dir = s.join("tree");
    extract::write_tree(&tree, &tree_dir, false).expect("the tree is written");
    let env = compose::read_env_file(&tree_dir.join(".postgres.env")).expect(".postgres.env");
    let user = env["POSTGRES_USER"].clone();
    let dbname = env
        .get("POSTGRES_DB")
        .cloned()
        .unwrap_or_else(|| user.clone());
    // The image runs the *.sql files of /docker-entrypoint-initdb.d (the tree's postgres/initdb)
    // after creating POSTGRES_DB: they create Synapse's role. (The *.sh one creates pgBackRest's
    // stanza, which needs the stack test's images.)
    let mut init_sql: Vec<(String, String)> = tree
        .files
        .values()
        .filter(|f| f.path.starts_with("postgres/initdb/") && f.path.ends_with(".sql"))
        .map(|f| (f.path.clone(), f.content.clone()))
        .collect();
    init_sql.sort();
    assert!(!init_sql.is_empty(), "the book has no SQL init script");
    let image = migrate::Image {
        user: user.clone(),
        dbname: dbname.clone(),
        initdb_args: env
            .get("POSTGRES_INITDB_ARGS")
            .map(|a| a.split_whitespace().map(String::from).collect())
            .unwrap_or_default(),
        init_sql,
        env: env.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
    };
    let config = tree_dir.join(conf::CONF);

    // The primary, as the image makes it, with the book's postgresql.conf.
    let sockets = s.join("sockets");
    std::fs::create_dir_all(&sockets).unwrap();
    std::fs::set_permissions(&sockets, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let primary = Server {
        bindir: bindir.clone(),
        data: s.join("primary"),
        socket_dir: sockets.clone(),
        port: 5432,
        log: s.join("logs/primary.log"),
    };
    // The book archives WAL with pgBackRest, which is in the stack test's images, not here.
    let extra: Vec<(String, String)> = vec![("archive_mode".into(), "off".into())];
    let password = env.get("POSTGRES_PASSWORD").cloned();
    primary
        .initdb(&user, password.as_deref(), &image.initdb_args)
        .unwrap();
    primary.start(Some(&config), &extra).unwrap();
    let admin = Conn {
        password: password.clone(),
        ..primary.conn(&user, "postgres")
    };
    if dbname != "postgres" {
        admin
            .query(&format!("CREATE DATABASE \"{dbname}\""))
            .unwrap();
    }
    // The superuser in Synapse's database, as the book's psql commands log in.
    let db = Conn {
        password: password.clone(),
        ..primary.conn(&user, &dbname)
    };
    image.run_init_sql(&db).expect("the init scripts run");
    // Synapse logs in as its own role, which the init script created and which owns the
    // database; it is no superuser.
    let synapse_db = Conn {
        password: env.get("SYNAPSE_DB_PASSWORD").cloned(),
        ..primary.conn("synapse", &dbname)
    };
    assert_eq!(
        db.query("SELECT rolsuper::text || ' ' || (SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()) FROM pg_roles WHERE rolname = 'synapse'")
            .unwrap(),
        "false synapse"
    );

    let mut synapse = Synapse::start(&python, &s.join("synapse"), &sockets, &synapse_db);
    let mut writer = Writer {
        sock: synapse.sock.clone(),
        token: None,
        room: None,
        sent: 0,
    };
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        writer.write().expect("first writes through Synapse");

        // Every sql block of the book against the live Synapse database.
        sql::enable_extensions(&db).unwrap();
        let (runs, diags) = sql::run_blocks(&book, &db);
        assert!(diags.is_empty(), "sql blocks failed: {diags:#?}");
        assert!(
            runs.len() >= 20,
            "only {} sql blocks in the book",
            runs.len()
        );
        eprintln!("sql blocks: {} run, all passed", runs.len());

        // The replica, the backup job and the restore.
        let renv = replica::ReplicaEnv {
            tree: tree_dir.clone(),
            sockets: sockets.clone(),
            work: s.join("replica-check"),
            bindir: bindir.clone(),
            extra_settings: extra.clone(),
        };
        let report = replica::check(&renv, &mut || writer.write()).unwrap_or_else(|e| {
            panic!(
                "{e:#}\nreplica log:\n{}",
                cluster::tail(&s.join("replica-check/db-replica.log"), 30)
            )
        });
        eprintln!(
            "replica report: {}",
            serde_json::to_string_pretty(&report).unwrap()
        );
        assert!(report.started_replica);
        assert_eq!(report.state, "streaming");
        assert_eq!(report.wal_receiver_status, "streaming");
        assert_eq!(report.replay_bytes_behind, 0);
    }));
    synapse.stop();
    if let Err(p) = outcome {
        eprintln!("Synapse log ends:\n{}", cluster::tail(&synapse.log, 40));
        let _ = primary.stop();
        std::panic::resume_unwind(p);
    }

    // Major-version migration procedure (15 -> 15 here), then Synapse on the result.
    let new = Server {
        bindir: bindir.clone(),
        data: s.join("new-major"),
        socket_dir: s.join("new-sockets"),
        port: 5440,
        log: s.join("logs/new-major.log"),
    };
    let migrated = migrate::check(&db, &new, &image, Some(&config), &extra, &s.join("migrate"));
    // The comparison can fail: change one row of the copy and it must notice.
    let new_db = Conn {
        password: db.password.clone(),
        ..new.conn(&user, &dbname)
    };
    let tampered = migrated.as_ref().ok().map(|_| {
        new_db
            .query("UPDATE rooms SET is_public = NOT is_public")
            .unwrap();
        let e = replica::compare_tables(&db, &new_db).expect_err("a changed row must be found");
        new_db
            .query("UPDATE rooms SET is_public = NOT is_public")
            .unwrap();
        replica::compare_tables(&db, &new_db).unwrap();
        e.to_string()
    });
    let _ = primary.stop();
    let report = migrated.unwrap();
    let tampered = tampered.unwrap();
    assert!(tampered.contains("rooms differs"), "{tampered}");
    eprintln!(
        "migration report: {}",
        serde_json::to_string_pretty(&report).unwrap()
    );
    assert!(report.tables_compared >= 10);
    // Synapse on the new cluster, logged in as its own role again (the init script made it).
    let new_synapse_db = Conn {
        password: synapse_db.password.clone(),
        ..new.conn("synapse", &dbname)
    };
    let mut synapse = Synapse::start(
        &python,
        &s.join("synapse"),
        &new.socket_dir,
        &new_synapse_db,
    );
    let body = serde_json::json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}, "password": "wonderland-7"});
    let (st, r) = http(
        &synapse.sock,
        "POST",
        "/_matrix/client/v3/login",
        Some(&body),
        None,
    );
    synapse.stop();
    let _ = new.stop();
    assert_eq!(st, 200, "login on the migrated database: {r}");

    // Both postgresql.conf variants, started by the real server.
    let (ok, diags) = conf::check(&book, &bindir, &s.join("conf")).unwrap();
    assert!(diags.is_empty(), "{diags:#?}");
    assert!(ok.contains(&"main".to_string()), "{ok:?}");
    eprintln!("postgresql.conf variants accepted: {ok:?}");
}
