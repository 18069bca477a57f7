//! CPU time and memory of each container, read from its cgroup on the host (what `docker stats`
//! reads): cgroup v1 (`cpuacct.usage`, `memory.usage_in_bytes` less inactive page cache) or v2
//! (`cpu.stat` `usage_usec`, `memory.current` less `inactive_file`).
//!
//! CPU is cumulative, so a phase's CPU seconds are the difference of two readings. Memory is
//! sampled every [`SAMPLE`] by a thread, and each phase keeps the highest sample per container.

use crate::bench::Use;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often memory is sampled.
pub const SAMPLE: Duration = Duration::from_millis(250);

/// Where one container's counters are.
#[derive(Debug, Clone)]
pub struct Cgroup {
    pub service: String,
    cpu: CpuFile,
    mem: MemFiles,
}

#[derive(Debug, Clone)]
enum CpuFile {
    /// v1 `cpuacct.usage`, nanoseconds.
    V1(PathBuf),
    /// v2 `cpu.stat`, `usage_usec` line.
    V2(PathBuf),
}

#[derive(Debug, Clone)]
struct MemFiles {
    usage: PathBuf,
    stat: PathBuf,
    /// The `memory.stat` key of inactive page cache (`total_inactive_file` or `inactive_file`).
    inactive_key: &'static str,
}

impl Cgroup {
    /// The cgroup of the process `pid` (a container's main process, `docker inspect
    /// .State.Pid`), from `/proc/PID/cgroup`.
    pub fn of_pid(service: &str, pid: u32) -> anyhow::Result<Cgroup> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
        Self::from_proc(service, &text, Path::new("/sys/fs/cgroup"))
    }

    /// From the text of `/proc/PID/cgroup` and the cgroup mount point.
    fn from_proc(service: &str, text: &str, root: &Path) -> anyhow::Result<Cgroup> {
        let mut v1_cpu = None;
        let mut v1_mem = None;
        let mut v2 = None;
        for line in text.lines() {
            let mut parts = line.splitn(3, ':');
            let (Some(_), Some(ctrls), Some(path)) = (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let rel = path.trim_start_matches('/');
            if ctrls.is_empty() {
                v2 = Some(root.join(rel));
            }
            for c in ctrls.split(',') {
                match c {
                    "cpuacct" => v1_cpu = Some((ctrls.to_string(), rel.to_string())),
                    "memory" => v1_mem = Some(root.join("memory").join(rel)),
                    _ => {}
                }
            }
        }
        if let (Some((ctrls, rel)), Some(mem)) = (&v1_cpu, &v1_mem) {
            // The controllers may be mounted together (`cpu,cpuacct`) or apart.
            let together = root.join(ctrls).join(rel).join("cpuacct.usage");
            let cpu_file = if together.exists() {
                together
            } else {
                root.join("cpuacct").join(rel).join("cpuacct.usage")
            };
            return Ok(Cgroup {
                service: service.to_string(),
                cpu: CpuFile::V1(cpu_file),
                mem: MemFiles {
                    usage: mem.join("memory.usage_in_bytes"),
                    stat: mem.join("memory.stat"),
                    inactive_key: "total_inactive_file",
                },
            });
        }
        if let Some(dir) = v2 {
            return Ok(Cgroup {
                service: service.to_string(),
                cpu: CpuFile::V2(dir.join("cpu.stat")),
                mem: MemFiles {
                    usage: dir.join("memory.current"),
                    stat: dir.join("memory.stat"),
                    inactive_key: "inactive_file",
                },
            });
        }
        anyhow::bail!("no cpuacct/memory (v1) or unified (v2) cgroup for `{service}`")
    }

    /// CPU time used so far, in seconds.
    pub fn cpu_seconds(&self) -> Option<f64> {
        match &self.cpu {
            CpuFile::V1(p) => std::fs::read_to_string(p)
                .ok()?
                .trim()
                .parse::<u64>()
                .ok()
                .map(|ns| ns as f64 / 1e9),
            CpuFile::V2(p) => stat_value(&std::fs::read_to_string(p).ok()?, "usage_usec")
                .map(|us| us as f64 / 1e6),
        }
    }

    /// Memory in use now, without inactive page cache (as `docker stats` shows it), in bytes.
    pub fn memory_bytes(&self) -> Option<u64> {
        let usage: u64 = std::fs::read_to_string(&self.mem.usage)
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let inactive = std::fs::read_to_string(&self.mem.stat)
            .ok()
            .and_then(|s| stat_value(&s, self.mem.inactive_key))
            .unwrap_or(0);
        Some(usage.saturating_sub(inactive))
    }
}

/// The value of `key` in a `key value` per line file (`memory.stat`, `cpu.stat`).
fn stat_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// Samples the memory of every container on a thread; [`Sampler::phase`] closes a phase.
pub struct Sampler {
    groups: Vec<Cgroup>,
    peaks: Arc<Mutex<BTreeMap<String, u64>>>,
    cpu_at_start: BTreeMap<String, f64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sampler {
    pub fn start(groups: Vec<Cgroup>) -> Sampler {
        let peaks = Arc::new(Mutex::new(BTreeMap::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (groups, peaks, stop) = (groups.clone(), peaks.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    for g in &groups {
                        if let Some(m) = g.memory_bytes() {
                            let mut p = peaks.lock().expect("sampler lock");
                            let e = p.entry(g.service.clone()).or_insert(0);
                            *e = (*e).max(m);
                        }
                    }
                    std::thread::sleep(SAMPLE);
                }
            })
        };
        let cpu_at_start = cpu_now(&groups);
        Sampler {
            groups,
            peaks,
            cpu_at_start,
            stop,
            thread: Some(thread),
        }
    }

    /// Each container's CPU seconds and peak memory since the last call (or the start), and
    /// starts the next phase.
    pub fn phase(&mut self) -> BTreeMap<String, Use> {
        // One last sample, so that a phase shorter than the sampling period has one.
        for g in &self.groups {
            if let Some(m) = g.memory_bytes() {
                let mut p = self.peaks.lock().expect("sampler lock");
                let e = p.entry(g.service.clone()).or_insert(0);
                *e = (*e).max(m);
            }
        }
        let now = cpu_now(&self.groups);
        let peaks = std::mem::take(&mut *self.peaks.lock().expect("sampler lock"));
        let mut out = BTreeMap::new();
        for g in &self.groups {
            let cpu = match (now.get(&g.service), self.cpu_at_start.get(&g.service)) {
                (Some(a), Some(b)) => a - b,
                _ => 0.0,
            };
            out.insert(
                g.service.clone(),
                Use {
                    cpu_seconds: round3(cpu),
                    peak_mib: round1(
                        peaks.get(&g.service).copied().unwrap_or(0) as f64 / 1048576.0,
                    ),
                },
            );
        }
        self.cpu_at_start = now;
        out
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn cpu_now(groups: &[Cgroup]) -> BTreeMap<String, f64> {
    groups
        .iter()
        .filter_map(|g| Some((g.service.clone(), g.cpu_seconds()?)))
        .collect()
}

pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

pub fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_and_v2_paths_from_proc_cgroup() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let v1 = "12:cpu:/docker/abc\n11:cpuacct:/docker/abc\n10:memory:/docker/abc\n0::/\n";
        std::fs::create_dir_all(root.join("cpuacct/docker/abc")).unwrap();
        std::fs::create_dir_all(root.join("memory/docker/abc")).unwrap();
        std::fs::write(
            root.join("cpuacct/docker/abc/cpuacct.usage"),
            "2500000000\n",
        )
        .unwrap();
        std::fs::write(
            root.join("memory/docker/abc/memory.usage_in_bytes"),
            "3145728\n",
        )
        .unwrap();
        std::fs::write(
            root.join("memory/docker/abc/memory.stat"),
            "cache 5\ntotal_inactive_file 1048576\n",
        )
        .unwrap();
        let g = Cgroup::from_proc("db", v1, root).unwrap();
        assert_eq!(g.cpu_seconds(), Some(2.5));
        assert_eq!(g.memory_bytes(), Some(2 * 1048576));

        let v2 = "0::/system.slice/docker-abc.scope\n";
        let d = root.join("system.slice/docker-abc.scope");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("cpu.stat"), "usage_usec 1500000\nuser_usec 1\n").unwrap();
        std::fs::write(d.join("memory.current"), "4194304\n").unwrap();
        std::fs::write(d.join("memory.stat"), "anon 1\ninactive_file 2097152\n").unwrap();
        let g = Cgroup::from_proc("db", v2, root).unwrap();
        assert_eq!(g.cpu_seconds(), Some(1.5));
        assert_eq!(g.memory_bytes(), Some(2097152));

        assert!(Cgroup::from_proc("x", "", root).is_err());
    }

    #[test]
    fn a_phase_is_the_difference_of_two_readings() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("x")).unwrap();
        std::fs::write(root.join("x/cpu.stat"), "usage_usec 1000000\n").unwrap();
        std::fs::write(root.join("x/memory.current"), "1048576\n").unwrap();
        std::fs::write(root.join("x/memory.stat"), "inactive_file 0\n").unwrap();
        let g = Cgroup::from_proc("svc", "0::/x\n", root).unwrap();
        let mut s = Sampler::start(vec![g]);
        std::fs::write(root.join("x/cpu.stat"), "usage_usec 3500000\n").unwrap();
        std::fs::write(root.join("x/memory.current"), "5242880\n").unwrap();
        let p = s.phase();
        assert_eq!(p["svc"].cpu_seconds, 2.5);
        assert_eq!(p["svc"].peak_mib, 5.0);
        std::fs::write(root.join("x/memory.current"), "2097152\n").unwrap();
        let p = s.phase();
        assert_eq!(p["svc"].cpu_seconds, 0.0);
        assert_eq!(p["svc"].peak_mib, 2.0, "a new phase starts its own peak");
    }
}
