//! The benchmark's results: what `cargo xtask stack bench` writes and the book's benchmark
//! page is generated from (`reference/bench.json` under the book's `src`). One model, read and
//! written with serde, so the page and the run cannot disagree about a field.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Where the book keeps the recorded benchmark, relative to its `src`.
pub const BENCH_PATH: &str = "reference/bench.json";

/// A container's use over one phase.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Use {
    pub cpu_seconds: f64,
    pub peak_mib: f64,
}

/// The whole output of one `stack bench` invocation.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Bench {
    /// Every run completed; with `--quick`, also without a single error.
    pub ok: bool,
    pub quick: bool,
    /// UTC time the benchmark started (RFC 3339).
    pub started: String,
    pub machine: Machine,
    pub versions: Versions,
    pub workload: Workload,
    /// Every layout, each repeat, in the order they ran.
    pub runs: Vec<Run>,
    pub seconds: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Machine {
    pub cores: usize,
    pub memory_gib: f64,
    pub cpu_model: String,
    pub kernel: String,
    pub docker_server: String,
    pub compose_version: String,
    /// `/proc/loadavg` (1, 5, 15 minutes) when the benchmark started and when it ended: other
    /// work on the machine shows here.
    pub load_before: Vec<f64>,
    pub load_after: Vec<f64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Versions {
    /// What `/_matrix/federation/v1/version` answered.
    pub synapse: String,
    /// `SHOW server_version`.
    pub postgres: String,
    /// Each image the Compose file names -> what ran (an official image or a stand-in).
    pub images: BTreeMap<String, String>,
}

/// What was sent, fixed before the first request.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Workload {
    pub seed: u64,
    pub users: usize,
    /// Members of each room.
    pub rooms: Vec<usize>,
    /// Offered message rates, messages per second over all users, in the order stepped.
    pub rates: Vec<f64>,
    pub step_seconds: f64,
    /// Threads sending at once (a slow answer delays later sends, which counts in the latency).
    pub senders: usize,
    /// Long-poll timeout of every user's `/sync`.
    pub sync_timeout_ms: u64,
    pub media_files: usize,
    pub media_kib: (u32, u32),
    pub federation_requests: usize,
    pub idle_seconds: f64,
    /// A step "breaks down" when any of these holds; the steps stop there.
    pub breakdown: Breakdown,
    /// Hard bounds on one run.
    pub max_messages: usize,
    pub max_run_seconds: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Breakdown {
    pub send_p95_ms: f64,
    pub delivery_p95_ms: f64,
    pub error_ratio: f64,
    /// Achieved throughput below this share of the offered rate.
    pub min_throughput_ratio: f64,
}

/// One layout brought up once and run once.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Run {
    pub layout: String,
    pub repeat: usize,
    pub ok: bool,
    /// Why the run could not complete, if it did not.
    pub error: Option<String>,
    pub bring_up_seconds: f64,
    /// Synapse services that ran.
    pub synapse_processes: Vec<String>,
    /// Every service the run started.
    pub services: Vec<String>,
    pub load_before: Vec<f64>,
    pub idle: Option<Phase>,
    pub steps: Vec<Step>,
    pub media: Option<Media>,
    pub federation: Option<Federation>,
    /// Which upstream nginx logged for the run's proxied requests, and how often.
    pub upstreams: BTreeMap<String, usize>,
    /// The offered rate of the first step that broke down (None: none did).
    pub broke_down_at: Option<f64>,
    pub seconds: f64,
}

/// CPU and memory of each container over one phase.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Phase {
    pub seconds: f64,
    pub containers: BTreeMap<String, Use>,
}

/// Latency percentiles, milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct Pct {
    pub n: usize,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

impl Pct {
    /// Nearest-rank percentiles of `ms` (empty: all zero).
    pub fn of(ms: &[f64]) -> Pct {
        if ms.is_empty() {
            return Pct::default();
        }
        let mut v = ms.to_vec();
        v.sort_by(f64::total_cmp);
        let rank = |p: f64| {
            let i = ((p / 100.0) * v.len() as f64).ceil() as usize;
            round1(v[i.clamp(1, v.len()) - 1])
        };
        Pct {
            n: v.len(),
            p50: rank(50.0),
            p95: rank(95.0),
            p99: rank(99.0),
            max: round1(v[v.len() - 1]),
        }
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// One step of the message ladder.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Step {
    /// Offered rate, messages per second.
    pub rate: f64,
    pub sent: usize,
    pub ok: usize,
    pub errors: usize,
    /// First few error descriptions.
    pub error_samples: Vec<String>,
    /// Acknowledged messages per second over the step.
    pub throughput: f64,
    /// From the time a send was due until the server acknowledged it.
    pub send_ms: Pct,
    /// From the time a send was due until another member's `/sync` returned it, per recipient.
    pub delivery_ms: Pct,
    pub delivered: usize,
    pub expected_deliveries: usize,
    /// Why the step counts as broken down (None: it held).
    pub broke: Option<String>,
    pub phase: Phase,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Media {
    pub files: usize,
    pub bytes: u64,
    pub errors: usize,
    pub error_samples: Vec<String>,
    pub upload_ms: Pct,
    pub download_ms: Pct,
    pub phase: Phase,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Federation {
    pub requests: usize,
    pub errors: usize,
    pub error_samples: Vec<String>,
    pub ms: Pct,
    /// Answered requests per second.
    pub throughput: f64,
    pub phase: Phase,
}

impl Run {
    /// CPU seconds of the Synapse containers, and of every container, over a phase.
    pub fn cpu(&self, p: &Phase) -> (f64, f64) {
        let syn: f64 = p
            .containers
            .iter()
            .filter(|(k, _)| self.synapse_processes.contains(k))
            .map(|(_, u)| u.cpu_seconds)
            .sum();
        let all: f64 = p.containers.values().map(|u| u.cpu_seconds).sum();
        (syn, all)
    }

    /// Sum of the Synapse containers' peak memory over a phase, MiB.
    pub fn synapse_peak_mib(&self, p: &Phase) -> f64 {
        p.containers
            .iter()
            .filter(|(k, _)| self.synapse_processes.contains(k))
            .map(|(_, u)| u.peak_mib)
            .sum()
    }

    /// The highest offered rate whose step held (None: not even the first).
    pub fn sustained(&self) -> Option<f64> {
        self.steps
            .iter()
            .filter(|s| s.broke.is_none())
            .map(|s| s.rate)
            .fold(None, |a: Option<f64>, r| Some(a.map_or(r, |a| a.max(r))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        let p = Pct::of(&v);
        assert_eq!(
            (p.n, p.p50, p.p95, p.p99, p.max),
            (100, 50.0, 95.0, 99.0, 100.0)
        );
        let p = Pct::of(&[7.0]);
        assert_eq!((p.p50, p.p99), (7.0, 7.0));
        assert_eq!(Pct::of(&[]), Pct::default());
        let p = Pct::of(&[3.0, 1.0, 2.0]);
        assert_eq!((p.p50, p.max), (2.0, 3.0));
    }
}
