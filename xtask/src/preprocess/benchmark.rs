//! The benchmark page's evidence: tables and an SVG chart generated from the JSON that
//! `cargo xtask stack bench` wrote into the book (`reference/bench.json` under its `src`). The page never carries a
//! hand-copied number: every figure below the marker comes from the file, at build time.

use super::Site;
use crate::bench::{Bench, Pct, Run, Step};
use std::collections::BTreeMap;
use std::fmt::Write as _;

pub const BENCHMARK_MARKER: &str = "<!-- xtask:benchmark -->";
pub use crate::bench::BENCH_PATH;

/// The generated section of the page.
pub fn benchmark(site: &Site) -> String {
    let path = site.book.root.join(&site.book.src).join(BENCH_PATH);
    let Ok(text) = std::fs::read_to_string(&path) else {
        return format!(
            "*No recorded benchmark: `{BENCH_PATH}` is missing. `cargo xtask stack bench --out src/{BENCH_PATH}` writes it.*\n"
        );
    };
    match serde_json::from_str::<Bench>(&text) {
        Ok(b) => render(&b),
        Err(e) => format!("*`{BENCH_PATH}` is not a benchmark result: {e}.*\n"),
    }
}

fn median(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// `median` alone for one value, `median (min–max)` for several.
fn spread(v: &[f64], digits: usize) -> String {
    let Some(m) = median(v) else {
        return "–".into();
    };
    if v.len() < 2 {
        return format!("{m:.digits$}");
    }
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{m:.digits$} ({lo:.digits$}–{hi:.digits$})")
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}×", a / b),
        _ => "–".into(),
    }
}

/// The layouts in the order they first ran, each with its runs.
fn by_layout(b: &Bench) -> Vec<(&str, Vec<&Run>)> {
    let mut out: Vec<(&str, Vec<&Run>)> = Vec::new();
    for r in &b.runs {
        match out.iter_mut().find(|(l, _)| *l == r.layout) {
            Some((_, v)) => v.push(r),
            None => out.push((&r.layout, vec![r])),
        }
    }
    out
}

/// A step of a run at that offered rate.
fn step_at(r: &Run, rate: f64) -> Option<&Step> {
    r.steps.iter().find(|s| s.rate == rate)
}

/// Per-run values of `f`, over the runs that have one.
fn each<'a>(runs: &[&'a Run], f: impl Fn(&'a Run) -> Option<f64>) -> Vec<f64> {
    runs.iter().filter_map(|r| f(r)).collect()
}

/// Everything below the page's marker.
pub fn render(b: &Bench) -> String {
    let mut o = String::new();
    let layouts = by_layout(b);
    let m = &b.machine;
    let list = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{x:.2}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let repeats = layouts.iter().map(|(_, r)| r.len()).max().unwrap_or(0);
    let _ = writeln!(
        o,
        "**Recorded run** ({}{}): {} cores ({}), {:.1} GiB of memory, Linux {}, Docker Engine {}, \
         Docker Compose {}. Load average (1, 5, 15 min) {} before and {} after: other work on \
         the machine during the run shows there. {}, PostgreSQL {}. Each layout ran {repeats} \
         time{} on a fresh deployment, the layouts alternating; the whole benchmark took {:.0} s.\n",
        b.started,
        if b.quick {
            ", the quick form: it shows that the benchmark works, its numbers mean little"
        } else {
            ""
        },
        m.cores,
        esc(&m.cpu_model),
        m.memory_gib,
        esc(&m.kernel),
        esc(&m.docker_server),
        esc(&m.compose_version),
        list(&m.load_before),
        list(&m.load_after),
        if b.versions.synapse.is_empty() {
            "Synapse (version not recorded)".to_string()
        } else {
            esc(&b.versions.synapse)
        },
        esc(&b.versions.postgres),
        if repeats == 1 { "" } else { "s" },
        b.seconds,
    );
    if !b.versions.images.is_empty() {
        o.push_str("| image in the Compose file | what ran |\n| --- | --- |\n");
        for (k, v) in &b.versions.images {
            let _ = writeln!(o, "| `{}` | {} |", esc(k), esc(v));
        }
        o.push('\n');
    }
    let w = &b.workload;
    let _ = writeln!(
        o,
        "**Workload** (seed {}): {} users; rooms of {} members; offered rates {} messages per \
         second, {:.0} s each, from {} sending threads; every user in a `/sync` long-poll \
         ({} ms); {} media files of {}–{} KiB uploaded and downloaded; {} unsigned federation \
         requests from 8 threads; {:.0} s idle before the ladder. A step breaks down when its \
         send p95 exceeds {:.0} ms, its delivery p95 {:.0} ms, more than {:.0} % of its sends \
         fail, a delivery is missing, or fewer than {:.0} % of the offered messages per second \
         are acknowledged; the ladder stops at the first such step.\n",
        w.seed,
        w.users,
        join(&w.rooms),
        w.rates
            .iter()
            .map(|r| format!("{r}"))
            .collect::<Vec<_>>()
            .join(", "),
        w.step_seconds,
        w.senders,
        w.sync_timeout_ms,
        w.media_files,
        w.media_kib.0,
        w.media_kib.1,
        w.federation_requests,
        w.idle_seconds,
        w.breakdown.send_p95_ms,
        w.breakdown.delivery_p95_ms,
        w.breakdown.error_ratio * 100.0,
        w.breakdown.min_throughput_ratio * 100.0,
    );
    let failed: Vec<&Run> = b.runs.iter().filter(|r| !r.ok).collect();
    for r in &failed {
        let _ = writeln!(
            o,
            "> **Run {} of `{}` did not complete**: {}\n",
            r.repeat,
            esc(&r.layout),
            esc(r
                .error
                .as_deref()
                .unwrap_or("a phase is missing or had errors"))
        );
    }
    if layouts.is_empty() {
        o.push_str("*The file holds no run.*\n");
        return o;
    }
    comparison(&mut o, &layouts);
    o.push_str(&chart(&layouts));
    o.push('\n');
    for (name, runs) in &layouts {
        steps_table(&mut o, name, runs);
    }
    containers_table(&mut o, &layouts);
    o
}

fn join(v: &[usize]) -> String {
    v.iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The highest rate every run of every layout sustained: where they compare like for like.
fn common_rate(layouts: &[(&str, Vec<&Run>)]) -> Option<f64> {
    layouts
        .iter()
        .flat_map(|(_, runs)| runs.iter())
        .map(|r| r.sustained())
        .try_fold(f64::INFINITY, |a, s| s.map(|s| a.min(s)))
        .filter(|r| r.is_finite())
}

/// The side-by-side table, the first layout's figures over the second's as a ratio.
fn comparison(o: &mut String, layouts: &[(&str, Vec<&Run>)]) {
    let common = common_rate(layouts);
    type Metric<'a> = (String, usize, Box<dyn Fn(&Run) -> Option<f64> + 'a>);
    let pct = |f: fn(&Step) -> Pct, pick: fn(&Pct) -> f64| {
        move |r: &Run| common.and_then(|c| step_at(r, c)).map(|s| pick(&f(s)))
    };
    let mut rows: Vec<Metric> = vec![
        (
            "Synapse processes".into(),
            0,
            Box::new(|r: &Run| Some(r.synapse_processes.len() as f64)),
        ),
        (
            "bring-up, `docker compose up --wait` (s)".into(),
            0,
            Box::new(|r: &Run| Some(r.bring_up_seconds)),
        ),
        (
            "idle: Synapse CPU (CPU seconds per second)".into(),
            3,
            Box::new(|r: &Run| r.idle.as_ref().map(|p| r.cpu(p).0 / p.seconds.max(0.001))),
        ),
        (
            "idle: Synapse memory, sum of the processes (MiB)".into(),
            0,
            Box::new(|r: &Run| r.idle.as_ref().map(|p| r.synapse_peak_mib(p))),
        ),
        (
            "highest offered rate that held (msg/s)".into(),
            0,
            Box::new(|r: &Run| r.sustained()),
        ),
    ];
    if let Some(c) = common {
        rows.push((
            format!("send p50 at {c} msg/s (ms)"),
            0,
            Box::new(pct(|s| s.send_ms, |p| p.p50)),
        ));
        rows.push((
            format!("send p95 at {c} msg/s (ms)"),
            0,
            Box::new(pct(|s| s.send_ms, |p| p.p95)),
        ));
        rows.push((
            format!("delivery p95 at {c} msg/s (ms)"),
            0,
            Box::new(pct(|s| s.delivery_ms, |p| p.p95)),
        ));
        rows.push((
            format!("Synapse CPU during the {c} msg/s step, per message (ms)"),
            1,
            Box::new(move |r: &Run| {
                step_at(r, c)
                    .filter(|s| s.ok > 0)
                    .map(|s| r.cpu(&s.phase).0 * 1000.0 / s.ok as f64)
            }),
        ));
        rows.push((
            format!("all containers' CPU during the {c} msg/s step, per message (ms)"),
            1,
            Box::new(move |r: &Run| {
                step_at(r, c)
                    .filter(|s| s.ok > 0)
                    .map(|s| r.cpu(&s.phase).1 * 1000.0 / s.ok as f64)
            }),
        ));
        rows.push((
            format!("Synapse memory at {c} msg/s (MiB)"),
            0,
            Box::new(move |r: &Run| step_at(r, c).map(|s| r.synapse_peak_mib(&s.phase))),
        ));
    }
    rows.push((
        "media upload p95 (ms)".into(),
        0,
        Box::new(|r: &Run| r.media.as_ref().map(|m| m.upload_ms.p95)),
    ));
    rows.push((
        "media download p95 (ms)".into(),
        0,
        Box::new(|r: &Run| r.media.as_ref().map(|m| m.download_ms.p95)),
    ));
    rows.push((
        "federation burst p95 (ms)".into(),
        0,
        Box::new(|r: &Run| r.federation.as_ref().map(|f| f.ms.p95)),
    ));
    rows.push((
        "federation burst throughput (requests/s)".into(),
        0,
        Box::new(|r: &Run| r.federation.as_ref().map(|f| f.throughput)),
    ));
    let names: Vec<&str> = layouts.iter().map(|(n, _)| *n).collect();
    let _ = write!(o, "| | {} |", names.join(" | "));
    let two = layouts.len() == 2;
    if two {
        let _ = write!(o, " {} ÷ {} |", names[0], names[1]);
    }
    o.push_str("\n| --- |");
    for _ in &names {
        o.push_str(" ---: |");
    }
    if two {
        o.push_str(" ---: |");
    }
    o.push('\n');
    for (label, digits, f) in &rows {
        let _ = write!(o, "| {label} |");
        let mut medians = Vec::new();
        for (_, runs) in layouts {
            let v = each(runs, f);
            medians.push(median(&v));
            let _ = write!(o, " {} |", spread(&v, *digits));
        }
        if two {
            let _ = write!(o, " {} |", ratio(medians[0], medians[1]));
        }
        o.push('\n');
    }
    o.push('\n');
    if layouts.iter().any(|(_, r)| r.len() > 1) {
        o.push_str(
            "Each cell is the median over the repeats, with the lowest and highest in \
             parentheses; the ratio is of the medians.\n\n",
        );
    }
    if common.is_none() {
        o.push_str("*No offered rate held in every run: there is no like-for-like step.*\n\n");
    }
}

/// One layout's ladder, step by step (medians over its repeats).
fn steps_table(o: &mut String, name: &str, runs: &[&Run]) {
    let mut rates: Vec<f64> = runs
        .iter()
        .flat_map(|r| r.steps.iter().map(|s| s.rate))
        .collect();
    rates.sort_by(f64::total_cmp);
    rates.dedup();
    let _ = writeln!(
        o,
        "**{}**, step by step:\n\n| offered (msg/s) | runs | acknowledged (msg/s) | send p50 / p95 / p99 (ms) | delivery p50 / p95 / p99 (ms) | errors | Synapse CPU (s) | all containers' CPU (s) | Synapse memory (MiB) | broke down |\n| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
        esc(name)
    );
    for rate in rates {
        let pairs: Vec<(&Run, &Step)> = runs
            .iter()
            .filter_map(|r| step_at(r, rate).map(|s| (*r, s)))
            .collect();
        let v = |f: &dyn Fn(&Run, &Step) -> f64| -> Vec<f64> {
            pairs.iter().map(|(r, s)| f(r, s)).collect()
        };
        let three = |f: fn(&Step) -> Pct| {
            let m = |g: fn(&Pct) -> f64| {
                median(&v(&|_, s| g(&f(s)))).map_or("–".into(), |x| format!("{x:.0}"))
            };
            format!("{} / {} / {}", m(|p| p.p50), m(|p| p.p95), m(|p| p.p99))
        };
        let broke: Vec<String> = pairs
            .iter()
            .filter_map(|(r, s)| s.broke.as_ref().map(|b| format!("run {}: {}", r.repeat, b)))
            .collect();
        let _ = writeln!(
            o,
            "| {rate} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            pairs.len(),
            spread(&v(&|_, s| s.throughput), 1),
            three(|s| s.send_ms),
            three(|s| s.delivery_ms),
            spread(&v(&|_, s| s.errors as f64), 0),
            spread(&v(&|r, s| r.cpu(&s.phase).0), 1),
            spread(&v(&|r, s| r.cpu(&s.phase).1), 1),
            spread(&v(&|r, s| r.synapse_peak_mib(&s.phase)), 0),
            if broke.is_empty() {
                "no".to_string()
            } else {
                esc(&broke.join("; "))
            },
        );
    }
    o.push('\n');
}

/// Each container's CPU during the step every run held (median over the repeats: the same
/// offered load in every layout) and its highest memory over the whole run.
fn containers_table(o: &mut String, layouts: &[(&str, Vec<&Run>)]) {
    let Some(c) = common_rate(layouts) else {
        return;
    };
    for (name, runs) in layouts {
        let mut cpu: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
        let mut mem: BTreeMap<&str, f64> = BTreeMap::new();
        for r in runs {
            if let Some(st) = step_at(r, c) {
                for (svc, u) in &st.phase.containers {
                    cpu.entry(svc).or_default().push(u.cpu_seconds);
                }
            }
            let phases = r
                .idle
                .iter()
                .chain(r.steps.iter().map(|s| &s.phase))
                .chain(r.media.iter().map(|m| &m.phase))
                .chain(r.federation.iter().map(|f| &f.phase));
            for p in phases {
                for (svc, u) in &p.containers {
                    let e = mem.entry(svc).or_default();
                    *e = e.max(u.peak_mib);
                }
            }
        }
        let _ = writeln!(
            o,
            "**{}**, each container: CPU during the {c} msg/s step, and its highest memory in \
             any phase of any run:\n\n| container | CPU at {c} msg/s (s) | highest memory (MiB) |\n| --- | ---: | ---: |",
            esc(name),
        );
        for (svc, v) in &cpu {
            let _ = writeln!(
                o,
                "| `{}` | {} | {:.0} |",
                esc(svc),
                spread(v, 2),
                mem.get(svc).copied().unwrap_or(0.0)
            );
        }
        o.push('\n');
    }
}

/// A layout's line: (rate, median, lowest, highest) of the send p95, and (rate, median) of the
/// delivery p95.
type Series = (String, Vec<(f64, f64, f64, f64)>, Vec<(f64, f64)>);

const COLORS: &[&str] = &["#1f77b4", "#d62728", "#2ca02c", "#9467bd"];

/// Send p95 against the offered rate, both axes logarithmic (the rates double), one line per
/// layout through the medians, a bar from the lowest to the highest repeat at each point, and
/// the delivery p95 dashed.
pub fn chart(layouts: &[(&str, Vec<&Run>)]) -> String {
    let (w, h, l, r, t, bt) = (640.0, 320.0, 64.0, 150.0, 16.0, 44.0);
    let mut series: Vec<Series> = Vec::new();
    for (name, runs) in layouts {
        let mut rates: Vec<f64> = runs
            .iter()
            .flat_map(|r| r.steps.iter().map(|s| s.rate))
            .collect();
        rates.sort_by(f64::total_cmp);
        rates.dedup();
        let mut send = Vec::new();
        let mut deliv = Vec::new();
        for rate in rates {
            let p95: Vec<f64> = runs
                .iter()
                .filter_map(|r| step_at(r, rate))
                .map(|s| s.send_ms.p95.max(1.0))
                .collect();
            let d95: Vec<f64> = runs
                .iter()
                .filter_map(|r| step_at(r, rate))
                .filter(|s| s.delivery_ms.n > 0)
                .map(|s| s.delivery_ms.p95.max(1.0))
                .collect();
            if let Some(m) = median(&p95) {
                let lo = p95.iter().copied().fold(f64::INFINITY, f64::min);
                let hi = p95.iter().copied().fold(0.0, f64::max);
                send.push((rate, m, lo, hi));
            }
            if let Some(m) = median(&d95) {
                deliv.push((rate, m));
            }
        }
        series.push((name.to_string(), send, deliv));
    }
    let xs: Vec<f64> = series
        .iter()
        .flat_map(|s| s.1.iter().map(|p| p.0))
        .collect();
    let ys: Vec<f64> = series
        .iter()
        .flat_map(|s| {
            s.1.iter()
                .flat_map(|p| [p.2, p.3])
                .chain(s.2.iter().map(|p| p.1))
        })
        .collect();
    if xs.is_empty() {
        return String::new();
    }
    let (x0, x1) = (
        xs.iter().copied().fold(f64::INFINITY, f64::min).log2(),
        xs.iter().copied().fold(0.0, f64::max).log2(),
    );
    let x1 = if x1 > x0 { x1 } else { x0 + 1.0 };
    let y0 = ys
        .iter()
        .copied()
        .fold(f64::INFINITY, f64::min)
        .log10()
        .floor();
    let y1 = ys.iter().copied().fold(1.0, f64::max).log10().ceil();
    let y1 = if y1 > y0 { y1 } else { y0 + 1.0 };
    let px = |x: f64| l + (x.log2() - x0) / (x1 - x0) * (w - l - r);
    let py = |y: f64| t + (1.0 - (y.log10() - y0) / (y1 - y0)) * (h - t - bt);
    // An HTML block (a `div` line) keeps Markdown out of the SVG; it ends at the blank line.
    let mut s = String::from("<div class=\"bench-chart\">\n");
    let _ = write!(
        s,
        "<svg class=\"bench-chart\" xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {w} {h}\" width=\"100%\" role=\"img\" aria-label=\"send and delivery p95 latency against the offered message rate, per layout\" font-family=\"sans-serif\" font-size=\"11\">"
    );
    let _ = write!(
        s,
        "<rect x=\"{l}\" y=\"{t}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#888\"/>",
        w - l - r,
        h - t - bt
    );
    // Decades on the latency axis, the offered rates on the other.
    let mut d = y0;
    while d <= y1 + 1e-9 {
        let v = 10f64.powf(d);
        let y = py(v);
        let _ = write!(
            s,
            "<line x1=\"{l}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#ccc\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" fill=\"currentColor\">{}</text>",
            w - r,
            l - 4.0,
            y + 4.0,
            if v >= 1000.0 {
                format!("{} s", v / 1000.0)
            } else {
                format!("{v} ms")
            }
        );
        d += 1.0;
    }
    let mut rates = xs.clone();
    rates.sort_by(f64::total_cmp);
    rates.dedup();
    for x in &rates {
        let _ = write!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"currentColor\">{x}</text>",
            px(*x),
            h - bt + 14.0
        );
    }
    let _ = write!(
        s,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"currentColor\">offered messages per second</text>",
        l + (w - l - r) / 2.0,
        h - 8.0
    );
    for (i, (name, send, deliv)) in series.iter().enumerate() {
        let c = COLORS[i % COLORS.len()];
        let pts: Vec<String> = send
            .iter()
            .map(|p| format!("{:.1},{:.1}", px(p.0), py(p.1)))
            .collect();
        let _ = write!(
            s,
            "<polyline points=\"{}\" fill=\"none\" stroke=\"{c}\" stroke-width=\"2\"/>",
            pts.join(" ")
        );
        for p in send {
            let _ = write!(
                s,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{c}\"/>",
                px(p.0),
                py(p.1)
            );
            if p.3 > p.2 {
                let _ = write!(
                    s,
                    "<line x1=\"{x:.1}\" y1=\"{:.1}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"{c}\"/>",
                    py(p.2),
                    py(p.3),
                    x = px(p.0)
                );
            }
        }
        let dp: Vec<String> = deliv
            .iter()
            .map(|p| format!("{:.1},{:.1}", px(p.0), py(p.1)))
            .collect();
        if !dp.is_empty() {
            let _ = write!(
                s,
                "<polyline points=\"{}\" fill=\"none\" stroke=\"{c}\" stroke-width=\"1.5\" stroke-dasharray=\"5 3\"/>",
                dp.join(" ")
            );
        }
        let ly = t + 14.0 + i as f64 * 34.0;
        let lx = w - r + 12.0;
        let _ = write!(
            s,
            "<line x1=\"{lx}\" y1=\"{ly}\" x2=\"{}\" y2=\"{ly}\" stroke=\"{c}\" stroke-width=\"2\"/><text x=\"{}\" y=\"{}\" fill=\"currentColor\">{} send p95</text><line x1=\"{lx}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"{c}\" stroke-dasharray=\"5 3\"/><text x=\"{}\" y=\"{}\" fill=\"currentColor\">{} delivery p95</text>",
            lx + 18.0,
            lx + 22.0,
            ly + 4.0,
            esc(name),
            ly + 14.0,
            lx + 18.0,
            ly + 14.0,
            lx + 22.0,
            ly + 18.0,
            esc(name)
        );
    }
    s.push_str("</svg>\n</div>\n");
    s
}

/// HTML-escaped, `|` escaped for a table cell.
fn esc(x: &str) -> String {
    super::captions::escape(x).replace('|', "\\|")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::{Media, Phase, Use};

    fn phase(main: f64, mib: f64) -> Phase {
        let mut containers = BTreeMap::new();
        containers.insert(
            "synapse".to_string(),
            Use {
                cpu_seconds: main,
                peak_mib: mib,
            },
        );
        containers.insert(
            "db".to_string(),
            Use {
                cpu_seconds: 1.0,
                peak_mib: 50.0,
            },
        );
        Phase {
            seconds: 10.0,
            containers,
        }
    }

    fn step(rate: f64, p95: f64, broke: bool) -> Step {
        Step {
            rate,
            sent: 10,
            ok: 10,
            throughput: rate,
            send_ms: Pct {
                n: 10,
                p50: p95 / 2.0,
                p95,
                p99: p95 * 1.5,
                max: p95 * 2.0,
            },
            delivery_ms: Pct {
                n: 10,
                p50: p95,
                p95: p95 * 2.0,
                p99: p95 * 3.0,
                max: p95 * 4.0,
            },
            delivered: 10,
            expected_deliveries: 10,
            broke: broke.then(|| "send p95 9000 ms".into()),
            phase: phase(rate, 100.0 + rate),
            ..Default::default()
        }
    }

    fn run(layout: &str, repeat: usize, procs: &[&str], p95s: &[f64]) -> Run {
        Run {
            layout: layout.into(),
            repeat,
            ok: true,
            bring_up_seconds: 40.0,
            synapse_processes: procs.iter().map(|s| s.to_string()).collect(),
            idle: Some(phase(0.5, 120.0)),
            steps: [2.0, 4.0, 8.0]
                .iter()
                .zip(p95s)
                .map(|(r, p)| step(*r, *p, *p > 5000.0))
                .collect(),
            media: Some(Media {
                files: 2,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn sample() -> Bench {
        let mut b = Bench {
            ok: true,
            started: "2026-12-02T05:00:00Z".into(),
            ..Default::default()
        };
        b.machine.cores = 2;
        b.machine.cpu_model = "Test CPU <1>".into();
        b.versions.synapse = "Synapse 1.163.2".into();
        b.workload.rates = vec![2.0, 4.0, 8.0];
        b.runs = vec![
            run(
                "workers",
                1,
                &["synapse", "rooms1"],
                &[100.0, 200.0, 9000.0],
            ),
            run("single", 1, &["synapse"], &[50.0, 60.0, 70.0]),
            run("single", 2, &["synapse"], &[40.0, 80.0, 90.0]),
            run(
                "workers",
                2,
                &["synapse", "rooms1"],
                &[120.0, 300.0, 9500.0],
            ),
        ];
        b
    }

    #[test]
    fn the_page_compares_the_layouts_from_the_json() {
        let page = render(&sample());
        assert!(page.contains("2 cores (Test CPU &lt;1&gt;)"), "{page}");
        assert!(page.contains("Synapse 1.163.2"));
        assert!(
            page.contains("| | workers | single | workers ÷ single |"),
            "{page}"
        );
        // Both layouts held 4 msg/s in every run: the like-for-like rate.
        assert!(
            page.contains("| send p95 at 4 msg/s (ms) | 250 (200–300) | 70 (60–80) | 3.57× |"),
            "{page}"
        );
        assert!(
            page.contains("| highest offered rate that held (msg/s) | 4 (4–4) | 8 (8–8) | 0.50× |"),
            "{page}"
        );
        assert!(
            page.contains("| Synapse processes | 2 (2–2) | 1 (1–1) | 2.00× |"),
            "{page}"
        );
        assert!(
            page.contains("run 1: send p95 9000 ms; run 2: send p95 9000 ms"),
            "{page}"
        );
        assert!(page.contains("**single**, step by step"));
        assert!(page.contains("| `db` |"));
        assert!(page.contains("<svg class=\"bench-chart\""));
        // The SVG is one line: a blank line would end mdBook's HTML block.
        let svg = page.lines().find(|l| l.starts_with("<svg")).unwrap();
        assert!(svg.ends_with("</svg>"));
        assert_eq!(
            svg.matches("<polyline").count(),
            4,
            "send and delivery, two layouts"
        );
        assert!(!page.contains("NaN") && !page.contains(" inf"), "{page}");
    }

    #[test]
    fn a_failed_run_and_a_missing_file_say_so() {
        let mut b = sample();
        b.runs[1].ok = false;
        b.runs[1].error = Some("docker compose up --wait failed".into());
        let page = render(&b);
        assert!(
            page.contains(
                "> **Run 1 of `single` did not complete**: docker compose up --wait failed"
            )
        );
        let empty = render(&Bench::default());
        assert!(empty.contains("*The file holds no run.*"));
    }

    #[test]
    fn without_a_common_rate_there_is_no_like_for_like_row() {
        let mut b = sample();
        for r in &mut b.runs {
            for s in &mut r.steps {
                s.broke = Some("x".into());
            }
        }
        let page = render(&b);
        assert!(page.contains("No offered rate held in every run"));
        assert!(!page.contains("send p95 at"));
    }

    #[test]
    fn the_chart_axes_are_logarithmic() {
        let b = sample();
        let layouts = by_layout(&b);
        let svg = chart(&layouts);
        for label in ["10 ms", "100 ms", "1 s", "10 s", ">2<", ">8<"] {
            assert!(svg.contains(label), "{label} in {svg}");
        }
    }

    /// The prose of "What the numbers say" on the benchmark page, checked against the recorded
    /// run it was written from: a new recording that contradicts it fails here.
    #[test]
    fn the_conclusion_matches_the_recorded_run() {
        let path = crate::project_root().join("src").join(BENCH_PATH);
        let b: Bench = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert!(
            b.ok && !b.quick,
            "the page's prose is about a full, complete run"
        );
        assert_eq!(b.machine.cores, 2, "the prose describes a two-core machine");
        let layouts = by_layout(&b);
        let runs = |name: &str| -> Vec<&Run> {
            layouts
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, r)| r.clone())
                .unwrap_or_default()
        };
        let (w, s) = (runs("workers"), runs("single"));
        assert!(w.len() >= 2 && s.len() >= 2, "repeats show the spread");
        let held =
            |r: &[&Run]| -> Vec<f64> { r.iter().map(|x| x.sustained().unwrap_or(0.0)).collect() };
        let (hw, hs) = (held(&w), held(&s));
        let min = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
        let max = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
        assert!(
            min(&hs) >= min(&hw) && max(&hs) >= max(&hw),
            "the single process held at least the same rate: {hs:?} vs {hw:?}"
        );
        // A fraction of the memory and less idle CPU.
        let idle = |r: &[&Run], f: &dyn Fn(&Run, &Phase) -> f64| -> f64 {
            median(
                &r.iter()
                    .filter_map(|x| x.idle.as_ref().map(|p| f(x, p)))
                    .collect::<Vec<_>>(),
            )
            .unwrap()
        };
        let mem = |x: &Run, p: &Phase| x.synapse_peak_mib(p);
        let cpu = |x: &Run, p: &Phase| x.cpu(p).0 / p.seconds;
        assert!(idle(&s, &mem) * 2.0 < idle(&w, &mem));
        assert!(idle(&s, &cpu) < idle(&w, &cpu));
        // Less CPU per message where both held, in Synapse and in total; latencies within the
        // spread of the repeats.
        let c = common_rate(&layouts).expect("a rate every run held");
        let per_msg = |r: &[&Run], all: bool| -> f64 {
            median(
                &r.iter()
                    .filter_map(|x| {
                        step_at(x, c).map(|st| {
                            let (syn, tot) = x.cpu(&st.phase);
                            (if all { tot } else { syn }) / st.ok as f64
                        })
                    })
                    .collect::<Vec<_>>(),
            )
            .unwrap()
        };
        assert!(per_msg(&s, false) < per_msg(&w, false));
        assert!(per_msg(&s, true) < per_msg(&w, true));
        let p95 = |r: &[&Run]| -> Vec<f64> {
            r.iter()
                .filter_map(|x| step_at(x, c))
                .map(|st| st.send_ms.p95)
                .collect()
        };
        let (pw, ps) = (p95(&w), p95(&s));
        assert!(
            min(&pw) <= max(&ps) && min(&ps) <= max(&pw),
            "send p95 ranges overlap at {c} msg/s: {pw:?} {ps:?}"
        );
        // Where the single process broke down, Synapse was near a core and PostgreSQL busy.
        for r in &s {
            let last = r.steps.last().unwrap();
            assert!(
                last.broke.is_some(),
                "the ladder ran until the single process broke down"
            );
            let (syn, _) = r.cpu(&last.phase);
            let db = last
                .phase
                .containers
                .get("db")
                .map_or(0.0, |u| u.cpu_seconds);
            assert!(
                syn / last.phase.seconds > 0.75,
                "{syn} CPU s in {} s",
                last.phase.seconds
            );
            assert!(db / last.phase.seconds > 0.4, "db {db} CPU s");
        }
        // Every federation sender works at every step, with no remote server to send to.
        for r in &w {
            for st in &r.steps {
                let senders: Vec<f64> = st
                    .phase
                    .containers
                    .iter()
                    .filter(|(k, _)| k.starts_with("sender"))
                    .map(|(_, u)| u.cpu_seconds)
                    .collect();
                assert!(
                    !senders.is_empty() && senders.iter().all(|c| *c > 0.0),
                    "{senders:?}"
                );
            }
        }
    }
}
