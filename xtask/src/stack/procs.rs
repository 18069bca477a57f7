//! Starting, watching, restarting and stopping the services' processes.
//!
//! Each service is one process group started under its own private namespace (see [`super::ns`]);
//! its stdout and stderr go to `logs/<service>.log` in the run directory. A watcher thread reaps
//! exits and applies the Compose `restart:` policy (Docker waits 100 ms before the first
//! restart; so does this). Healthchecks run the service's OWN `healthcheck.test` inside the
//! service's root with `nsenter`. The PIDs are also written to `state.json`, so that
//! `stack down` in another invocation can stop what `stack up` started.
//!
//! Pitfalls from facts/native-stack.md handled here: a zombie still answers `kill -0`, so
//! liveness is read from `/proc/PID/stat`; every wait is on a specific child, never a blanket
//! `wait`.

use super::compose::{Project, Restart, Service};
use super::emulate::Launch;
use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What `stack down` needs to find the processes again.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct State {
    /// service -> (pid, stop signal)
    pub pids: BTreeMap<String, (u32, i32)>,
    /// Reverse dependency order to stop in.
    pub stop_order: Vec<String>,
    /// Host tmpfs mounts made for tmpfs volumes.
    pub host_mounts: Vec<PathBuf>,
}

#[derive(Debug)]
struct Proc {
    child: Option<Child>,
    pid: u32,
    /// Last exit code (None while running or never exited; -signal when killed).
    last_exit: Option<i32>,
    exits: u32,
    restarts: u32,
    /// `stack` stopped it on purpose: do not restart.
    stopped: bool,
    /// Its private mount namespace (`mnt:[inode]`), once it has one.
    mnt_ns: Option<String>,
}

fn mnt_ns_of(pid: u32) -> Option<String> {
    std::fs::read_link(format!("/proc/{pid}/ns/mnt"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

/// Kills every process left in a mount namespace: when a container's main process dies, the
/// container's other processes die with it (a daemon that left the process group, such as
/// the postmaster `pg_ctl start` runs, would otherwise survive).
fn kill_namespace(ns: &str) -> usize {
    let mut n = 0;
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if alive(pid) && mnt_ns_of(pid).as_deref() == Some(ns) {
                kill(pid as i32, libc::SIGKILL);
                n += 1;
            }
        }
    }
    n
}

/// One running project.
pub struct Runner {
    pub project: Project,
    pub launches: BTreeMap<String, Launch>,
    scripts: BTreeMap<String, PathBuf>,
    logs: PathBuf,
    state_file: PathBuf,
    procs: Mutex<BTreeMap<String, Proc>>,
    stopping: AtomicBool,
    pub host_mounts: Vec<PathBuf>,
}

/// Liveness from /proc (a zombie counts as dead).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => {
            let state = s
                .rsplit_once(')')
                .and_then(|(_, r)| r.split_whitespace().next());
            !matches!(state, Some("Z" | "X") | None)
        }
        Err(_) => false,
    }
}

/// kill(2): a positive pid is one process, a negative one its process group. Errors (already
/// gone) are ignored.
fn kill(pid: i32, sig: i32) {
    use rustix::process::{Pid, Signal, kill_process, kill_process_group};
    let (Some(p), Some(s)) = (Pid::from_raw(pid.abs()), Signal::from_named_raw(sig)) else {
        return;
    };
    let _ = if pid < 0 {
        kill_process_group(p, s)
    } else {
        kill_process(p, s)
    };
}

impl Runner {
    pub fn new(
        project: Project,
        launches: BTreeMap<String, Launch>,
        scripts: BTreeMap<String, PathBuf>,
        run_dir: &Path,
        host_mounts: Vec<PathBuf>,
    ) -> anyhow::Result<Arc<Self>> {
        let logs = run_dir.join("logs");
        std::fs::create_dir_all(&logs)?;
        Ok(Arc::new(Runner {
            project,
            launches,
            scripts,
            logs,
            state_file: run_dir.join("state.json"),
            procs: Mutex::new(BTreeMap::new()),
            stopping: AtomicBool::new(false),
            host_mounts,
        }))
    }

    pub fn log_path(&self, svc: &str) -> PathBuf {
        self.logs.join(format!("{svc}.log"))
    }

    fn spawn(&self, name: &str) -> anyhow::Result<Child> {
        let launch = &self.launches[name];
        let argv = super::ns::command(&self.scripts[name], &launch.argv);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(name))?;
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .env_clear()
            .envs(&launch.env)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0);
        cmd.spawn()
            .with_context(|| format!("cannot start service {name}"))
    }

    /// Starts one service (first start).
    pub fn start(&self, name: &str) -> anyhow::Result<u32> {
        let child = self.spawn(name)?;
        let pid = child.id();
        self.procs.lock().expect("lock").insert(
            name.to_string(),
            Proc {
                child: Some(child),
                pid,
                last_exit: None,
                exits: 0,
                restarts: 0,
                stopped: false,
                mnt_ns: None,
            },
        );
        self.save_state()?;
        Ok(pid)
    }

    pub fn pid(&self, name: &str) -> Option<u32> {
        self.procs
            .lock()
            .expect("lock")
            .get(name)
            .filter(|p| p.child.is_some())
            .map(|p| p.pid)
    }

    pub fn started(&self, name: &str) -> bool {
        self.procs.lock().expect("lock").contains_key(name)
    }

    /// Exit code of a process that has exited and is not running again.
    pub fn exit_code(&self, name: &str) -> Option<i32> {
        let procs = self.procs.lock().expect("lock");
        procs
            .get(name)
            .filter(|p| p.child.is_none())
            .and_then(|p| p.last_exit)
    }

    pub fn restarts(&self, name: &str) -> u32 {
        self.procs
            .lock()
            .expect("lock")
            .get(name)
            .map_or(0, |p| p.restarts)
    }

    pub fn exits(&self, name: &str) -> u32 {
        self.procs
            .lock()
            .expect("lock")
            .get(name)
            .map_or(0, |p| p.exits)
    }

    /// One watcher pass: reap exits and restart per policy. Returns log lines of what happened.
    pub fn reap(&self) -> Vec<String> {
        let mut events = Vec::new();
        let mut to_restart = Vec::new();
        {
            let mut procs = self.procs.lock().expect("lock");
            let own_ns = mnt_ns_of(std::process::id());
            for (name, p) in procs.iter_mut() {
                let Some(child) = p.child.as_mut() else {
                    continue;
                };
                if p.mnt_ns.is_none() {
                    p.mnt_ns = mnt_ns_of(p.pid).filter(|n| Some(n) != own_ns.as_ref());
                }
                if let Ok(Some(st)) = child.try_wait() {
                    use std::os::unix::process::ExitStatusExt as _;
                    let code = st.code().unwrap_or_else(|| -st.signal().unwrap_or(0));
                    // kill what is left of its process group (e.g. postgres backends)
                    kill(-(p.pid as i32), libc::SIGKILL);
                    if let Some(ns) = p.mnt_ns.take() {
                        kill_namespace(&ns);
                    }
                    p.child = None;
                    p.last_exit = Some(code);
                    p.exits += 1;
                    events.push(format!("{name} exited with {code}"));
                    let svc = self.project.service(name).expect("known service");
                    let again = !p.stopped
                        && !self.stopping.load(Ordering::SeqCst)
                        && match svc.restart {
                            Restart::No => false,
                            Restart::Always | Restart::UnlessStopped => true,
                            Restart::OnFailure(max) => {
                                code != 0 && max.is_none_or(|m| p.restarts < m)
                            }
                        };
                    if again {
                        to_restart.push(name.clone());
                    }
                }
            }
        }
        for name in to_restart {
            std::thread::sleep(Duration::from_millis(100));
            match self.spawn(&name) {
                Ok(child) => {
                    let mut procs = self.procs.lock().expect("lock");
                    if let Some(p) = procs.get_mut(&name) {
                        p.pid = child.id();
                        p.child = Some(child);
                        p.mnt_ns = None;
                        p.restarts += 1;
                        events.push(format!("{name} restarted (pid {})", p.pid));
                    }
                }
                Err(e) => events.push(format!("{name}: restart failed: {e:#}")),
            }
            let _ = self.save_state();
        }
        events
    }

    /// Runs the watcher in a thread until [`Runner::stop_all`].
    pub fn watch(self: &Arc<Self>, verbose: bool) -> std::thread::JoinHandle<()> {
        let me = Arc::clone(self);
        std::thread::spawn(move || {
            while !me.stopping.load(Ordering::SeqCst) {
                for e in me.reap() {
                    if verbose {
                        eprintln!("stack: {e}");
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    }

    /// Runs the service's own healthcheck inside its root. Ok(true) when it exits 0.
    pub fn health(&self, svc: &Service) -> anyhow::Result<bool> {
        let Some(hc) = &svc.healthcheck else {
            return Ok(true);
        };
        let Some(pid) = self.pid(&svc.name) else {
            return Ok(false);
        };
        let argv = super::ns::enter(pid, &hc.argv);
        let mut child = Command::new(&argv[0])
            .args(&argv[1..])
            .env_clear()
            .envs(&self.launches[&svc.name].env)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let deadline = Instant::now() + Duration::from_secs_f64(hc.timeout_s.min(10.0));
        loop {
            if let Some(st) = child.try_wait()? {
                return Ok(st.success());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends a signal to a running service's main process (for the fault test).
    pub fn signal(&self, name: &str, sig: i32) -> Option<u32> {
        let pid = self.pid(name)?;
        kill(pid as i32, sig);
        Some(pid)
    }

    fn stop_order(&self) -> Vec<String> {
        let mut order = super::start_order(&self.project);
        order.reverse();
        order
    }

    fn save_state(&self) -> anyhow::Result<()> {
        let procs = self.procs.lock().expect("lock");
        let state = State {
            pids: procs
                .iter()
                .filter(|(_, p)| p.child.is_some())
                .map(|(n, p)| (n.clone(), (p.pid, self.launches[n].stop_signal)))
                .collect(),
            stop_order: self.stop_order(),
            host_mounts: self.host_mounts.clone(),
        };
        drop(procs);
        std::fs::write(&self.state_file, serde_json::to_string_pretty(&state)?)?;
        Ok(())
    }

    /// Stops every service in reverse dependency order (stop signal, 10 s grace, then SIGKILL
    /// to the process group), and unmounts the host tmpfs volumes.
    pub fn stop_all(&self) -> Vec<String> {
        self.stopping.store(true, Ordering::SeqCst);
        let mut events = Vec::new();
        for name in self.stop_order() {
            let mut procs = self.procs.lock().expect("lock");
            let Some(p) = procs.get_mut(&name) else {
                continue;
            };
            p.stopped = true;
            let Some(mut child) = p.child.take() else {
                continue;
            };
            let pid = p.pid;
            let ns = p.mnt_ns.take().or_else(|| mnt_ns_of(pid));
            drop(procs);
            let t = Instant::now();
            kill(pid as i32, self.launches[&name].stop_signal);
            let deadline = t + Duration::from_secs(10);
            let mut code = None;
            while Instant::now() < deadline {
                if let Ok(Some(st)) = child.try_wait() {
                    code = Some(st);
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            kill(-(pid as i32), libc::SIGKILL);
            if let Some(ns) = ns.filter(|n| Some(n) != mnt_ns_of(std::process::id()).as_ref()) {
                let n = kill_namespace(&ns);
                if n > 0 {
                    events.push(format!(
                        "{name}: killed {n} process(es) left in its namespace"
                    ));
                }
            }
            if code.is_none() {
                let _ = child.wait();
                events.push(format!("{name} did not stop within 10 s: killed"));
            } else {
                events.push(format!(
                    "{name} stopped in {:.2} s",
                    t.elapsed().as_secs_f64()
                ));
            }
        }
        events.extend(unmount_all(&self.host_mounts));
        let _ = std::fs::remove_file(&self.state_file);
        events
    }
}

/// Unmounts host tmpfs volume mounts (lazily if busy).
pub fn unmount_all(mounts: &[PathBuf]) -> Vec<String> {
    let mut events = Vec::new();
    for m in mounts {
        if is_mounted(m) {
            let ok = Command::new("umount")
                .arg(m)
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                let _ = Command::new("umount").arg("-l").arg(m).status();
                events.push(format!("{} was busy: lazily unmounted", m.display()));
            }
        }
    }
    events
}

/// Is `p` a mount point in this namespace?
pub fn is_mounted(p: &Path) -> bool {
    mounts_under(p).iter().any(|m| m == p)
}

/// Mount points at or under `dir` in the host mount table.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .map(|m| PathBuf::from(m.replace("\\040", " ")))
        .filter(|m| m.starts_with(dir))
        .collect()
}

/// PIDs whose root directory is inside `dir` (processes still in a service's private root).
pub fn processes_rooted_in(dir: &Path) -> Vec<u32> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if let Ok(root) = std::fs::read_link(e.path().join("root"))
                && root.starts_with(dir)
                && alive(pid)
            {
                out.push(pid);
            }
        }
    }
    out
}

/// `stack down` from another invocation: stop what `state.json` lists.
pub fn stop_from_state(state_file: &Path) -> anyhow::Result<Vec<String>> {
    let text = match std::fs::read_to_string(state_file) {
        Ok(t) => t,
        Err(_) => return Ok(vec!["no running stack (no state.json)".into()]),
    };
    let state: State = serde_json::from_str(&text)?;
    let mut events = Vec::new();
    // A detached supervisor would restart what we stop: ask it to stop everything itself
    // (it polls for the `stop` file), and wait for it.
    let sup = state_file.with_file_name("supervisor.pid");
    if let Some(pid) = std::fs::read_to_string(&sup)
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
    {
        if alive(pid) {
            std::fs::write(state_file.with_file_name("stop"), "")?;
            let t = Instant::now();
            while alive(pid) && t.elapsed() < Duration::from_secs(60) {
                std::thread::sleep(Duration::from_millis(50));
            }
            events.push(format!(
                "supervisor {pid} stopped the stack in {:.1} s",
                t.elapsed().as_secs_f64()
            ));
        }
        let _ = std::fs::remove_file(&sup);
        if !state_file.exists() {
            events.extend(unmount_all(&state.host_mounts));
            return Ok(events);
        }
    }
    for name in &state.stop_order {
        let Some(&(pid, sig)) = state.pids.get(name) else {
            continue;
        };
        if !alive(pid) {
            continue;
        }
        kill(pid as i32, sig);
        let t = Instant::now();
        while alive(pid) && t.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(20));
        }
        kill(-(pid as i32), libc::SIGKILL);
        events.push(format!(
            "{name} stopped in {:.2} s",
            t.elapsed().as_secs_f64()
        ));
    }
    events.extend(unmount_all(&state.host_mounts));
    let _ = std::fs::remove_file(state_file);
    Ok(events)
}
