//! `cargo xtask stack bench`: the book's layouts under the same seeded Matrix workload.
//!
//! Each layout is a tree of the book ([`LAYOUTS`]: the worker deployment, and the `single`
//! variant with one Synapse process), extracted with fresh secrets, brought up with the real
//! `docker compose`, driven by [`workload`] through nginx on the loopback address while
//! [`cgroup`] reads each container's CPU time and memory, and torn down. Both layouts start the
//! same non-Synapse services (those every layout has: the replica of the worker layout is left
//! out), so they differ only in Synapse. With `--repeat N` the layouts alternate N times, each
//! repeat on a fresh deployment. The JSON ([`crate::bench::Bench`]) is what the book's benchmark
//! page is generated from.

pub mod cgroup;
pub mod workload;

use super::{ImageChoice, Paths, Stack, prepare_variants, routing};
use crate::bench::{self as model, Bench, Phase, Run};
use anyhow::{Context, bail};
use std::collections::BTreeSet;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// The layouts compared: a name, and the variants of the book its tree is made of.
pub const LAYOUTS: &[(&str, &[&str])] = &[("workers", &[]), ("single", &["single"])];

/// What the command was asked for.
#[derive(Debug, Clone)]
pub struct Options {
    pub quick: bool,
    pub repeat: usize,
    pub images: ImageChoice,
    pub out: Option<std::path::PathBuf>,
}

/// Runs the benchmark and writes its JSON.
pub fn run(root: &Path, opts: &Options) -> anyhow::Result<ExitCode> {
    let t0 = Instant::now();
    let w = workload::plan(opts.quick);
    let book =
        crate::book::load(root).map_err(|d| super::diag_error("cannot load the book", &d))?;
    // The services of each layout's Compose file, to start only those all layouts share.
    let mut names: Vec<BTreeSet<String>> = Vec::new();
    for (_, variants) in LAYOUTS {
        let tree = super::variant_tree(&book, variants)?;
        let c =
            crate::compose::Compose::from_tree(&tree).context("a layout has no Compose file")?;
        names.push(c.services.iter().map(|s| s.name.clone()).collect());
    }
    let shared: BTreeSet<String> = names.iter().skip(1).fold(names[0].clone(), |a, b| {
        a.intersection(b).cloned().collect()
    });

    let mut bench = Bench {
        quick: opts.quick,
        started: utc_now(),
        machine: machine(),
        workload: w.clone(),
        ..Default::default()
    };
    let repeat = opts.repeat.max(1);
    for r in 0..repeat {
        // Alternate the order, so that a machine that gets busier favours neither layout.
        let order: Vec<usize> = if r % 2 == 0 {
            (0..LAYOUTS.len()).collect()
        } else {
            (0..LAYOUTS.len()).rev().collect()
        };
        for i in order {
            let (name, variants) = LAYOUTS[i];
            eprintln!("bench: {name} (repeat {} of {repeat})", r + 1);
            let base = super::Paths::default_base().with_file_name(format!("bench-{name}"));
            let paths = Paths::new(&base);
            let mut run = Run {
                layout: name.to_string(),
                repeat: r + 1,
                load_before: loadavg(),
                ..Default::default()
            };
            let tr = Instant::now();
            match prepare_variants(root, &paths, opts.images, variants) {
                Ok(s) => {
                    if bench.versions.images.is_empty() {
                        bench.versions.images = s
                            .images
                            .iter()
                            .map(|i| {
                                let used = match &i.standin {
                                    Some(l) if !l.is_empty() => format!("{} ({l})", i.used),
                                    _ => i.used.clone(),
                                };
                                (i.official.clone(), used)
                            })
                            .collect();
                    }
                    if let Err(e) = one_run(&s, &shared, &w, &mut run, &mut bench) {
                        run.error = Some(format!("{e:#}"));
                    }
                    let left = s.compose.down().unwrap_or_else(|e| vec![format!("{e:#}")]);
                    if !left.is_empty() && run.error.is_none() {
                        run.error = Some(format!("left behind: {}", left.join("; ")));
                    }
                    let _ = std::fs::remove_file(paths.state());
                }
                Err(e) => run.error = Some(format!("{e:#}")),
            }
            run.seconds = model_round(tr.elapsed().as_secs_f64());
            run.ok = run_ok(&run, opts.quick);
            eprintln!("{}", summary(&run));
            bench.runs.push(run);
        }
    }
    bench.machine.load_after = loadavg();
    bench.seconds = model_round(t0.elapsed().as_secs_f64());
    bench.ok = !bench.runs.is_empty() && bench.runs.iter().all(|r| r.ok);
    let text = serde_json::to_string_pretty(&bench)?;
    if let Some(f) = &opts.out {
        if let Some(dir) = f.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(f, format!("{text}\n"))
            .with_context(|| format!("cannot write {}", f.display()))?;
        eprintln!("bench: wrote {}", f.display());
    }
    eprintln!(
        "bench: {} in {:.0} s",
        if bench.ok { "ok" } else { "FAILED" },
        bench.seconds
    );
    Ok(if bench.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// A run counts when it completed every phase; `--quick` (the CI form, which checks that the
/// benchmark works, not how fast the machine is) also wants no error and every delivery.
fn run_ok(r: &Run, quick: bool) -> bool {
    let complete = r.error.is_none()
        && r.idle.is_some()
        && !r.steps.is_empty()
        && r.steps.iter().all(|s| s.sent > 0)
        && r.media.is_some()
        && r.federation.is_some()
        && !r.upstreams.is_empty();
    if !complete || !quick {
        return complete;
    }
    r.steps
        .iter()
        .all(|s| s.errors == 0 && s.ok == s.sent && s.delivered == s.expected_deliveries)
        && r.media.as_ref().is_some_and(|m| m.errors == 0)
        && r.federation.as_ref().is_some_and(|f| f.errors == 0)
}

/// Brings the layout up, runs the workload on it, and records what nginx routed where.
fn one_run(
    s: &Stack,
    shared: &BTreeSet<String>,
    w: &model::Workload,
    run: &mut Run,
    bench: &mut Bench,
) -> anyhow::Result<()> {
    let synapse = s.synapse_services();
    let services: Vec<String> = s
        .servers()
        .into_iter()
        .filter(|n| synapse.contains(n) || shared.contains(n))
        .collect();
    run.synapse_processes = synapse.clone();
    run.services = services.clone();
    let tb = Instant::now();
    let wait = super::BRING_UP_TIMEOUT.as_secs().to_string();
    let mut args = vec!["up", "--detach", "--wait", "--wait-timeout", &wait];
    args.extend(services.iter().map(String::as_str));
    let r = s
        .compose
        .run(&args, super::BRING_UP_TIMEOUT + Duration::from_secs(60))?;
    if !r.ok {
        bail!(
            "docker compose up --wait failed:\n{}",
            super::docker::tail(&r.text(), 20)
        );
    }
    run.bring_up_seconds = model_round(tb.elapsed().as_secs_f64());
    let addr = s.client_addr()?;
    if !addr.starts_with("127.") {
        bail!("nginx is published on {addr}: the benchmark talks to the loopback address only");
    }
    let mut groups = Vec::new();
    for svc in &services {
        let i = s.compose.inspect(svc)?;
        if i.pid > 0 {
            groups.push(cgroup::Cgroup::of_pid(svc, i.pid as u32)?);
        }
    }
    let secret = super::client::shared_secret(&s.compose.dir)?;
    let nginx = s.nginx_service().context("no nginx service")?;
    let log = routing::NginxLog::mark(&s.compose, &nginx);
    let deadline = Instant::now() + Duration::from_secs_f64(w.max_run_seconds);

    let world = workload::World::setup(&addr, &secret, w)?;
    let mut sampler = cgroup::Sampler::start(groups);
    let ti = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(w.idle_seconds));
    run.idle = Some(Phase {
        seconds: model_round(ti.elapsed().as_secs_f64()),
        containers: sampler.phase(),
    });
    let mut rng = workload::Rng::new(w.seed);
    let mut next_id = 0u64;
    for &rate in &w.rates {
        let n = (rate * w.step_seconds).round() as u64;
        if next_id + n > w.max_messages as u64 || Instant::now() >= deadline {
            break;
        }
        let st = world.step(w, &mut rng, rate, next_id, &mut sampler);
        next_id += n;
        eprintln!(
            "bench:   {rate} msg/s: {:.1} acknowledged/s, send p95 {:.0} ms, delivery p95 {:.0} ms, {} errors{}",
            st.throughput,
            st.send_ms.p95,
            st.delivery_ms.p95,
            st.errors,
            st.broke
                .as_deref()
                .map(|b| format!(" (broke down: {b})"))
                .unwrap_or_default()
        );
        let broke = st.broke.is_some();
        run.steps.push(st);
        if broke {
            run.broke_down_at = Some(rate);
            break;
        }
    }
    let mut mrng = workload::Rng::new(w.seed ^ 0x006d_6564_6961);
    run.media = Some(world.media(w, &mut mrng, &mut sampler));
    let (fed, version) = workload::federation(&addr, w, &mut sampler);
    run.federation = Some(fed);
    if !version.is_empty() {
        bench.versions.synapse = version;
    }
    drop(sampler);
    world.stop();
    for l in log.read() {
        if let Some(u) = l.upstream.filter(|u| !u.is_empty() && u != "-") {
            *run.upstreams.entry(u).or_default() += 1;
        }
    }
    if bench.versions.postgres.is_empty()
        && let Some(db) = s.primary_db()
        && let Ok(r) = super::checks::psql(s, &db, None, "SHOW server_version")
        && r.ok
    {
        bench.versions.postgres = r.stdout.trim().to_string();
    }
    // One process means one upstream: a request that reached anything else was misrouted.
    if synapse.len() == 1 && run.upstreams.len() > 1 {
        bail!(
            "one Synapse process, but nginx used several upstreams: {:?}",
            run.upstreams
        );
    }
    Ok(())
}

/// One line per run for the terminal.
fn summary(r: &Run) -> String {
    let mut o = format!(
        "bench: {} repeat {}: {} in {:.0} s (bring-up {:.0} s)",
        r.layout,
        r.repeat,
        if r.ok { "ok" } else { "FAILED" },
        r.seconds,
        r.bring_up_seconds
    );
    if let Some(idle) = &r.idle {
        let (syn, _) = r.cpu(idle);
        o += &format!(
            "; idle: {:.2} CPU s/s, {:.0} MiB in Synapse",
            syn / idle.seconds.max(0.001),
            r.synapse_peak_mib(idle)
        );
    }
    if let Some(b) = r.broke_down_at {
        o += &format!("; broke down at {b} msg/s");
    }
    if let Some(e) = &r.error {
        o += &format!("\n  error: {e}");
    }
    o
}

fn model_round(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// `/proc/loadavg`'s three averages.
fn loadavg() -> Vec<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .map(|t| {
            t.split_whitespace()
                .take(3)
                .filter_map(|x| x.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn machine() -> model::Machine {
    let m = super::report::Machine::this();
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    model::Machine {
        cores: m.cores,
        memory_gib: m.memory_gib,
        cpu_model,
        kernel,
        docker_server: m.docker_server,
        compose_version: super::docker::compose_version().unwrap_or_default(),
        load_before: loadavg(),
        load_after: Vec::new(),
    }
}

/// The current UTC time, RFC 3339, to the second.
fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    rfc3339(secs)
}

/// Seconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ` (Howard Hinnant's civil-from-days).
fn rfc3339(secs: u64) -> String {
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_796_182_496), "2026-12-02T03:34:56Z");
    }

    #[test]
    fn the_book_has_every_layout_and_they_differ_only_in_synapse() {
        let root = crate::project_root();
        let book = crate::book::load(&root).unwrap();
        let mut services = Vec::new();
        for (name, variants) in LAYOUTS {
            let tree = crate::stack::variant_tree(&book, variants)
                .unwrap_or_else(|e| panic!("layout {name}: {e:#}"));
            let c = crate::compose::Compose::from_tree(&tree).unwrap();
            let d = crate::synapse::Deployment::from_tree(&tree)
                .unwrap()
                .unwrap();
            services.push((
                *name,
                d.processes.len(),
                c.services
                    .iter()
                    .map(|s| s.name.clone())
                    .collect::<BTreeSet<_>>(),
            ));
        }
        let (_, workers, w) = &services[0];
        let (_, single, s) = &services[1];
        assert!(*workers > 1, "the worker layout has workers");
        assert_eq!(*single, 1, "the single layout has one Synapse process");
        for svc in ["synapse", "db", "redis", "nginx"] {
            assert!(w.contains(svc) && s.contains(svc), "{svc} in both layouts");
        }
        assert!(
            s.is_subset(w),
            "the single layout adds no service of its own"
        );
    }
}
