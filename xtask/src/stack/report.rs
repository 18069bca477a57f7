//! The JSON report of a stack run: each step with pass or fail, the upstream comparison,
//! the number of `sql` blocks run, and timings.

use serde::Serialize;
use std::time::Duration;

#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub name: String,
    pub ok: bool,
    pub detail: String,
    pub seconds: f64,
}

impl Step {
    pub fn new(
        name: impl Into<String>,
        ok: bool,
        detail: impl Into<String>,
        took: Duration,
    ) -> Self {
        Step {
            name: name.into(),
            ok,
            detail: detail.into(),
            seconds: round(took.as_secs_f64()),
        }
    }
    pub fn fail(name: impl Into<String>, detail: impl Into<String>, seconds: f64) -> Self {
        Step {
            name: name.into(),
            ok: false,
            detail: detail.into(),
            seconds: round(seconds),
        }
    }
}

fn round(s: f64) -> f64 {
    (s * 1000.0).round() / 1000.0
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Timings {
    pub bring_up: f64,
    pub smoke: f64,
    pub teardown: f64,
    /// The console blocks of the book.
    pub console: f64,
    /// The variant runs (bring-up, smoke, teardown of each).
    pub variants: f64,
    /// The upgrade run (bring-up on the previous release, the procedure, checks, teardown).
    pub upgrade: f64,
    pub total: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Upstreams {
    /// Requests whose upstream (nginx's `$upstream_addr`) matched the simulator's prediction.
    pub matched: usize,
    /// Requests compared.
    pub total: usize,
    pub mismatches: Vec<String>,
    /// Requests sent while a worker was deliberately down: where nginx sent them (not compared).
    pub during_fault: Vec<String>,
    /// Requests nginx did not log (`access_log off`) to a location that does not proxy.
    pub not_logged: Vec<String>,
    /// Proxied requests with no access log line (each is also in `mismatches`).
    pub unlogged: usize,
}

/// What the timings were measured on.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Machine {
    pub cores: usize,
    pub memory_gib: f64,
    pub docker_server: String,
}

impl Machine {
    pub fn this() -> Self {
        let mem_kb: f64 = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .find(|l| l.starts_with("MemTotal:"))
                    .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
            })
            .unwrap_or(0.0);
        let mut c = std::process::Command::new("docker");
        c.args(["version", "--format", "{{.Server.Version}}"]);
        Machine {
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            memory_gib: (mem_kb / 1024.0 / 1024.0 * 10.0).round() / 10.0,
            docker_server: super::docker::run_with(c, None, std::time::Duration::from_secs(20))
                .map(|r| r.stdout.trim().to_string())
                .unwrap_or_default(),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub ok: bool,
    /// `docker` (the only engine).
    pub engine: String,
    /// `docker compose version --short`.
    pub compose_version: String,
    /// The machine the run measured.
    pub machine: Machine,
    /// Each image the Compose file names and what ran in its place.
    pub images: Vec<super::ImageUse>,
    pub steps: Vec<Step>,
    pub upstreams: Upstreams,
    pub sql_blocks_run: usize,
    pub timings: Timings,
    pub bring_up: Option<super::BringUp>,
    /// Every kind of process killed once, and how it came back.
    pub kills: Vec<Kill>,
    /// The PostgreSQL replica/backup/restore check, when the book has a replica.
    pub replica: Option<serde_json::Value>,
    /// The variants brought up after the main deployment.
    pub variants: Vec<VariantRun>,
    /// The upgrade from the previous Synapse release, after the variants.
    pub upgrade: Option<UpgradeRun>,
    /// The console blocks: run, matched, skipped.
    pub console: Option<ConsoleCounts>,
}

impl Report {
    pub fn push(&mut self, step: Step) {
        eprintln!(
            "stack: [{}] {} ({:.2} s){}",
            if step.ok { "pass" } else { "FAIL" },
            step.name,
            step.seconds,
            if step.ok || step.detail.is_empty() {
                String::new()
            } else {
                format!(": {}", step.detail)
            }
        );
        self.steps.push(step);
    }

    /// A few human lines for the end of the run.
    pub fn summary(&self) -> String {
        let failed = self.steps.iter().filter(|s| !s.ok).count();
        format!(
            "stack: {} steps, {} failed; upstream matched {}/{}; sql blocks run {}; bring-up {:.1} s, smoke {:.1} s, variants {:.1} s, upgrade {:.1} s, total {:.1} s\n",
            self.steps.len(),
            failed,
            self.upstreams.matched,
            self.upstreams.total,
            self.sql_blocks_run,
            self.timings.bring_up,
            self.timings.smoke,
            self.timings.variants,
            self.timings.upgrade,
            self.timings.total
        )
    }
}
/// One row of the kill table.
#[derive(Debug, Clone, Serialize)]
pub struct Kill {
    pub service: String,
    /// Why this service: the kind of process it stands for.
    pub kind: String,
    pub killed_pid: i32,
    /// Restarted by the restart policy and healthy again within the deadline.
    pub came_back: bool,
    pub restarts: u32,
    /// Seconds from the kill until the service's own healthcheck passed again (run by the test
    /// right away; Docker's status follows at its next scheduled check).
    pub seconds_to_healthy: Option<f64>,
    /// Rounds of requests the client made while it was down (a message, a sync, the media
    /// config, the federation version, whoami), and the ones that failed, by kind.
    pub attempts: usize,
    pub failed: String,
    /// Failed sends retried with the same transaction id once the service was back.
    pub retried: usize,
    /// Messages missing from the room history afterwards (must be 0), and doubled ones.
    pub lost: usize,
    pub doubled: usize,
    /// For the room's worker: seconds until nginx routed the room back to it.
    pub nginx_routes_back_after: Option<f64>,
    /// Error lines any service logged while this one was down (excused from the log scan).
    pub log_lines: usize,
    pub error: Option<String>,
}

/// The counts and findings of the console run ([`super::console`]).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ConsoleCounts {
    /// Blocks run (every command executed).
    pub run: usize,
    /// Blocks whose every shown output matched and every command succeeded.
    pub matched: usize,
    /// Blocks marked `skip`, as `file:line: reason`.
    pub skipped: Vec<String>,
    /// Commands executed.
    pub commands: usize,
    /// Commands whose shown output was compared.
    pub compared: usize,
    /// `file:line: what differed`.
    pub failures: Vec<String>,
    /// Markdown files whose shown outputs `--bless` rewrote.
    pub blessed: Vec<String>,
}

/// What one variant run did ([`super::variants`]).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct VariantRun {
    pub variants: Vec<String>,
    pub ok: bool,
    pub bring_up_seconds: f64,
    /// Seconds from extraction to teardown, bring-up included: what the run added.
    pub seconds: f64,
    /// The steps of this run (also in the report's steps, prefixed with the variant names).
    pub steps: usize,
}

/// What the upgrade run did ([`super::upgrade`]).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct UpgradeRun {
    /// The image the deployment started on (versions.toml [images-upgrade-from]).
    pub from: String,
    /// The image the procedure upgraded it to (versions.toml [images]).
    pub to: String,
    pub ok: bool,
    /// `docker compose up --wait` on the previous release.
    pub bring_up_seconds: f64,
    /// The book's procedure, from the backup to every service healthy on the new release.
    pub procedure_seconds: f64,
    /// Seconds from extraction to teardown: what the run added.
    pub seconds: f64,
    /// The steps of this run (also in the report's steps, prefixed `[upgrade]`).
    pub steps: usize,
    /// The procedure's commands as run; `(not run: ...)` for the one that was not.
    pub commands: Vec<String>,
    /// The schema deltas (`version/file`) the migration step applied.
    pub deltas_migrated: Vec<String>,
}
