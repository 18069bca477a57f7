//! Scratch PostgreSQL servers and clients: `initdb`, `pg_ctl`, `psql`, run as the `postgres`
//! user when we are root (PostgreSQL refuses to run as root).

use anyhow::{Context, bail};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// uid and gid of a system user, from `/etc/passwd`.
pub fn system_user(name: &str) -> anyhow::Result<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").context("cannot read /etc/passwd")?;
    for line in passwd.lines() {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() > 3 && f[0] == name {
            return Ok((f[2].parse()?, f[3].parse()?));
        }
    }
    bail!("there is no user `{name}` on this machine (install postgresql)")
}

/// Makes `cmd` run as the `postgres` user.
pub fn as_postgres(cmd: &mut Command) -> anyhow::Result<&mut Command> {
    let (uid, gid) = system_user("postgres")?;
    // The caller's directory may be one the postgres user cannot enter (a checkout under /root).
    Ok(cmd.uid(uid).gid(gid).current_dir("/"))
}

/// Gives `path` (recursively) to the `postgres` user, like the images' `chown`.
pub fn chown_postgres(path: &Path) -> anyhow::Result<()> {
    let st = Command::new("chown")
        .arg("-R")
        .arg("postgres:postgres")
        .arg(path)
        .status()?;
    if !st.success() {
        bail!("chown -R postgres:postgres {} failed", path.display());
    }
    Ok(())
}

/// Runs a command, failing with its output when it fails.
pub fn run(cmd: &mut Command) -> anyhow::Result<Output> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out)
}

/// The last `n` lines of a log file, for error messages.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Polls `f` until it gives `Some`, or fails after `timeout` with `what`.
pub fn wait_for<T>(
    timeout: Duration,
    what: &str,
    mut f: impl FnMut() -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    let start = Instant::now();
    let mut last_err = None;
    loop {
        match f() {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last_err = Some(e),
        }
        if start.elapsed() > timeout {
            let why = last_err
                .map(|e| format!(": last error: {e:#}"))
                .unwrap_or_default();
            bail!("timed out after {timeout:?} waiting for {what}{why}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A connection target for `psql`.
#[derive(Debug, Clone)]
pub struct Conn {
    pub bindir: PathBuf,
    /// Socket directory.
    pub host: PathBuf,
    pub port: u16,
    pub user: String,
    pub dbname: String,
    pub password: Option<String>,
}

/// Field separator of [`Conn::rows`]: a byte no Synapse value we read contains.
const SEP: char = '\u{1f}';

impl Conn {
    pub fn with_port(&self, port: u16) -> Conn {
        Conn {
            port,
            ..self.clone()
        }
    }

    pub fn with_db(&self, dbname: &str) -> Conn {
        Conn {
            dbname: dbname.to_string(),
            ..self.clone()
        }
    }

    /// A `psql` command for this target, reading nothing from `~/.psqlrc`.
    pub fn psql(&self) -> Command {
        let mut c = Command::new(self.bindir.join("psql"));
        c.arg("--no-psqlrc")
            .arg(format!("--host={}", self.host.display()))
            .arg(format!("--port={}", self.port))
            .arg(format!("--username={}", self.user))
            .arg(format!("--dbname={}", self.dbname))
            .env_remove("PGSERVICE");
        match &self.password {
            Some(p) => c.env("PGPASSWORD", p),
            None => c.env_remove("PGPASSWORD"),
        };
        c
    }

    /// Runs `sql` (one or more statements), stopping at the first error; gives psql's
    /// unaligned, tuples-only output.
    pub fn query(&self, sql: &str) -> anyhow::Result<String> {
        let out = run(self
            .psql()
            .args([
                "--tuples-only",
                "--no-align",
                "--quiet",
                "--set=ON_ERROR_STOP=1",
            ])
            .arg(format!("--field-separator={SEP}"))
            .arg("--command")
            .arg(sql))?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .trim_end_matches('\n')
            .to_string())
    }

    /// Runs a script given on standard input (`psql -f -`), stopping at the first error.
    pub fn script(&self, sql: &str) -> anyhow::Result<String> {
        self.script_env(sql, &[])
    }

    /// [`Conn::script`] with extra environment for psql (a script's `\getenv`).
    pub fn script_env(&self, sql: &str, env: &[(String, String)]) -> anyhow::Result<String> {
        use std::io::Write as _;
        let mut cmd = self.psql();
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .args([
                "--tuples-only",
                "--no-align",
                "--quiet",
                "--set=ON_ERROR_STOP=1",
                "--file=-",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot run psql")?;
        child
            .stdin
            .take()
            .context("psql has no stdin")?
            .write_all(sql.as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!("{}", String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(String::from_utf8_lossy(&out.stdout).to_string())
    }

    /// The rows of a query, each split into its columns.
    pub fn rows(&self, sql: &str) -> anyhow::Result<Vec<Vec<String>>> {
        let text = self.query(sql)?;
        Ok(text
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| l.split(SEP).map(String::from).collect())
            .collect())
    }

    /// True when a server answers on this socket.
    pub fn is_ready(&self) -> bool {
        Command::new(self.bindir.join("pg_isready"))
            .arg("--quiet")
            .arg(format!("--host={}", self.host.display()))
            .arg(format!("--port={}", self.port))
            .arg(format!("--username={}", self.user))
            .arg(format!("--dbname={}", self.dbname))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }
}

/// A server we run ourselves with `pg_ctl` (a scratch primary, a restored copy, a migration target).
#[derive(Debug, Clone)]
pub struct Server {
    pub bindir: PathBuf,
    pub data: PathBuf,
    pub socket_dir: PathBuf,
    pub port: u16,
    pub log: PathBuf,
}

impl Server {
    /// `initdb` as the postgres image does it: `superuser` is the bootstrap superuser
    /// (`POSTGRES_USER`) with `password` (`POSTGRES_PASSWORD`, given through `--pwfile`),
    /// `extra` are `POSTGRES_INITDB_ARGS`.
    pub fn initdb(
        &self,
        superuser: &str,
        password: Option<&str>,
        extra: &[String],
    ) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.data)?;
        chown_postgres(&self.data)?;
        let mut cmd = Command::new(self.bindir.join("initdb"));
        cmd.arg("--pgdata")
            .arg(&self.data)
            .arg(format!("--username={superuser}"))
            .args(extra);
        let pwfile = self.data.with_extension("pwfile");
        if let Some(p) = password {
            std::fs::write(&pwfile, format!("{p}\n"))?;
            chown_postgres(&pwfile)?;
            cmd.arg(format!("--pwfile={}", pwfile.display()));
        }
        let result = run(as_postgres(&mut cmd)?);
        let _ = std::fs::remove_file(&pwfile);
        result?;
        Ok(())
    }

    /// Starts the server with `pg_ctl -w`. `config_file` is the book's postgresql.conf (None:
    /// the data directory's own); `settings` are `-c name=value` overrides for running natively.
    pub fn start(
        &self,
        config_file: Option<&Path>,
        settings: &[(String, String)],
    ) -> anyhow::Result<()> {
        if let Some(dir) = self.log.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&self.log, "")?;
        chown_postgres(&self.log)?;
        let mut opts = Vec::new();
        if let Some(c) = config_file {
            // A copy beside the log: the postgres user may not be able to reach the tree (a
            // checkout under /root), but it owns this directory's files.
            let copy = self.log.with_file_name("postgresql.conf");
            std::fs::copy(c, &copy).with_context(|| format!("cannot copy {}", c.display()))?;
            chown_postgres(&copy)?;
            opts.push(format!(
                "-c config_file={}",
                shell_quote(&copy.display().to_string())
            ));
        }
        opts.push(format!("-c port={}", self.port));
        opts.push(format!(
            "-c unix_socket_directories={}",
            shell_quote(&self.socket_dir.display().to_string())
        ));
        opts.push("-c listen_addresses=''".to_string());
        for (k, v) in settings {
            opts.push(format!("-c {}", shell_quote(&format!("{k}={v}"))));
        }
        let mut cmd = Command::new(self.bindir.join("pg_ctl"));
        cmd.arg("--pgdata")
            .arg(&self.data)
            .arg("--log")
            .arg(&self.log)
            .arg("--wait")
            .arg("--timeout=300")
            .arg("--options")
            .arg(opts.join(" "))
            .arg("start");
        run(as_postgres(&mut cmd)?).with_context(|| {
            format!(
                "the server did not start; its log ends:\n{}",
                tail(&self.log, 20)
            )
        })?;
        Ok(())
    }

    /// Fast shutdown (`pg_ctl stop -m fast`), waiting for it.
    pub fn stop(&self) -> anyhow::Result<()> {
        stop_data_dir(&self.bindir, &self.data)
    }

    pub fn conn(&self, user: &str, dbname: &str) -> Conn {
        Conn {
            bindir: self.bindir.clone(),
            host: self.socket_dir.clone(),
            port: self.port,
            user: user.into(),
            dbname: dbname.into(),
            password: None,
        }
    }
}

/// Stops whatever server runs on `data` (fast shutdown), if one does.
pub fn stop_data_dir(bindir: &Path, data: &Path) -> anyhow::Result<()> {
    if !data.join("postmaster.pid").exists() {
        return Ok(());
    }
    let mut cmd = Command::new(bindir.join("pg_ctl"));
    cmd.arg("--pgdata")
        .arg(data)
        .args(["--mode=fast", "--wait", "--timeout=120", "stop"]);
    run(as_postgres(&mut cmd)?)?;
    Ok(())
}

/// Single-quotes a word for the shell `pg_ctl` starts the server with.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}
