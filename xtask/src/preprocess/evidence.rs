//! The testing page's evidence: tables generated from the stack test's JSON report that is
//! committed next to the page (`reference/stack-report.json` under the book's `src`, written by
//! `cargo xtask stack test --bless`). The page never carries a hand-copied number.

use super::Site;

/// HTML-escaped, with `|` escaped for a table cell.
fn escape(x: &str) -> String {
    super::captions::escape(x).replace('|', "\\|")
}
use serde_json::Value;
use std::fmt::Write as _;

pub const STACK_REPORT_MARKER: &str = "<!-- xtask:stack-report -->";
/// Where the committed report lives, relative to the book's `src`.
pub const REPORT_PATH: &str = "reference/stack-report.json";
pub const FLAKINESS_MARKER: &str = "<!-- xtask:flakiness -->";
/// The summary `.ci/flakiness` writes, relative to the book's `src`.
pub const FLAKINESS_PATH: &str = "reference/flakiness.json";

fn f1(v: &Value) -> String {
    v.as_f64().map_or("–".into(), |x| format!("{x:.1}"))
}

fn s(v: &Value) -> String {
    match v {
        Value::String(x) => escape(x),
        Value::Null => "–".into(),
        other => escape(&other.to_string()),
    }
}

/// The generated section.
pub fn stack_report(site: &Site) -> String {
    let path = site.book.root.join(&site.book.src).join(REPORT_PATH);
    let Ok(text) = std::fs::read_to_string(&path) else {
        return format!(
            "*No recorded run: `{REPORT_PATH}` is missing. `cargo xtask stack test --bless` writes it.*\n"
        );
    };
    let Ok(r) = serde_json::from_str::<Value>(&text) else {
        return format!("*`{REPORT_PATH}` is not valid JSON.*\n");
    };
    render(&r)
}

/// The tables of one report.
pub fn render(r: &Value) -> String {
    let mut o = String::new();
    let steps = r["steps"].as_array().cloned().unwrap_or_default();
    let passed = steps.iter().filter(|x| x["ok"] == true).count();
    let m = &r["machine"];
    let _ = writeln!(
        o,
        "Recorded run: engine **{}** with Docker Compose {}, on {} cores and {} GiB of memory \
         (Docker Engine {}). {passed} of {} steps passed; nginx's upstream matched the \
         simulator's for {} of {} requests; {} `sql` blocks ran; bring-up took {} s, the whole \
         test {} s.\n",
        s(&r["engine"]),
        s(&r["compose_version"]),
        s(&m["cores"]),
        f1(&m["memory_gib"]),
        s(&m["docker_server"]),
        steps.len(),
        s(&r["upstreams"]["matched"]),
        s(&r["upstreams"]["total"]),
        s(&r["sql_blocks_run"]),
        f1(&r["timings"]["bring_up"]),
        f1(&r["timings"]["total"]),
    );
    let _ = writeln!(
        o,
        "**Images.**\n\n| the Compose file names | what ran |\n| --- | --- |"
    );
    for i in r["images"].as_array().cloned().unwrap_or_default() {
        let used = match i["standin"].as_str() {
            Some(label) => format!("`{}`: {}", s(&i["used"]), escape(label)),
            None => format!("`{}` (the official image)", s(&i["used"])),
        };
        let _ = writeln!(o, "| `{}` | {used} |", s(&i["official"]));
    }
    let _ = writeln!(
        o,
        "\n**Bring-up** (`docker compose up --wait`): seconds until each service was healthy \
         (one-shot services: exited 0).\n\n| service | ready after (s) |\n| --- | ---: |"
    );
    let mut ready: Vec<(String, f64)> = r["bring_up"]["ready_at"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_f64().unwrap_or(0.0)))
                .collect()
        })
        .unwrap_or_default();
    ready.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
    for (svc, t) in ready {
        let _ = writeln!(o, "| `{}` | {t:.1} |", escape(&svc));
    }
    let _ = writeln!(
        o,
        "\n**Every kind of process killed once** (SIGKILL to the container's process 1 from the \
         host, while the client keeps sending). *Healthy after* is when the service's own \
         healthcheck passed again; *client errors* are the requests that failed meanwhile, by \
         kind; failed messages were sent again with the same transaction id, and *lost* counts \
         messages missing from the room afterwards.\n\n\
         | service | kind | back on its own | healthy after (s) | restarts | client errors meanwhile | retried | lost |\n\
         | --- | --- | --- | ---: | ---: | --- | ---: | ---: |"
    );
    for k in r["kills"].as_array().cloned().unwrap_or_default() {
        let errors = k["failed"]
            .as_str()
            .filter(|x| !x.is_empty())
            .unwrap_or("none");
        let _ = writeln!(
            o,
            "| `{}` | {} | {} | {} | {} | {} | {} | {} |",
            s(&k["service"]),
            s(&k["kind"]),
            if k["came_back"] == true {
                "yes"
            } else {
                "**no**"
            },
            f1(&k["seconds_to_healthy"]),
            s(&k["restarts"]),
            escape(errors),
            s(&k["retried"]),
            s(&k["lost"]),
        );
    }
    if let Some(rep) = r["replica"].as_object() {
        let _ = writeln!(
            o,
            "\n**Replica, backup, restore**: the replica was `{}` ({} bytes behind after a \
             write); {} backup runs left {} archive; the backup job refused the primary: {}; the \
             restored archive held the same rows as the primary in {} tables ({} rows).",
            s(&rep["state"]),
            s(&rep["replay_bytes_behind"]),
            s(&rep["backups_run"]),
            s(&rep["archives_left"]),
            s(&rep["backup_refuses_primary"]),
            s(&rep["tables_compared"]),
            s(&rep["rows_compared"]),
        );
    }
    let _ = writeln!(
        o,
        "\n**Steps.**\n\n| step | result | seconds |\n| --- | --- | ---: |"
    );
    for st in steps {
        let _ = writeln!(
            o,
            "| {} | {} | {} |",
            s(&st["name"]),
            if st["ok"] == true { "pass" } else { "**FAIL**" },
            f1(&st["seconds"]),
        );
    }
    o
}

/// The table of the repeated runs `.ci/flakiness` recorded.
pub fn flakiness(site: &Site) -> String {
    let path = site.book.root.join(&site.book.src).join(FLAKINESS_PATH);
    let Ok(text) = std::fs::read_to_string(&path) else {
        return format!(
            "*No recorded series: `{FLAKINESS_PATH}` is missing. `.ci/flakiness` writes it.*\n"
        );
    };
    let Ok(v) = serde_json::from_str::<Value>(&text) else {
        return format!("*`{FLAKINESS_PATH}` is not valid JSON.*\n");
    };
    render_flakiness(&v)
}

/// The flakiness table of one summary.
pub fn render_flakiness(v: &Value) -> String {
    let runs = v["runs"].as_array().cloned().unwrap_or_default();
    let passed = runs.iter().filter(|r| r["ok"] == true).count();
    let quiet = runs.iter().filter(|r| r["kind"] == "quiet").count();
    let m = &v["machine"];
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{passed} of {} runs passed: {quiet} in a row, then {} while a release build of the \
         workspace kept both cores busy ({} cores, {} GiB).\n\n\
         | run | machine | result | whole test (s) | bring-up (s) | upstreams as predicted | kills back, nothing lost | load average before → after |\n\
         | ---: | --- | --- | ---: | ---: | --- | --- | --- |",
        runs.len(),
        runs.len() - quiet,
        s(&m["cores"]),
        f1(&m["memory_gib"]),
    );
    for r in &runs {
        let result = if r["ok"] == true {
            "pass".to_string()
        } else {
            let why: Vec<String> = r["failed"]
                .as_array()
                .map(|a| a.iter().filter_map(|x| x.as_str().map(escape)).collect())
                .unwrap_or_default();
            format!("**FAIL**: {}", why.join("; "))
        };
        let _ = writeln!(
            o,
            "| {} | {} | {result} | {} | {} | {} | {}/{} | {} → {} |",
            s(&r["run"]),
            if r["kind"] == "loaded" {
                "building"
            } else {
                "quiet"
            },
            f1(&r["seconds"]),
            f1(&r["bring_up"]),
            s(&r["upstreams"]),
            s(&r["kills_back"]),
            s(&r["kills"]),
            f1(&r["load_before"]),
            f1(&r["load_after"]),
        );
    }
    o
}

#[cfg(test)]
mod tests {
    #[test]
    fn renders_every_table_from_a_report() {
        let r = serde_json::json!({
            "engine": "docker", "compose_version": "2.40.3",
            "machine": {"cores": 2, "memory_gib": 23.5, "docker_server": "20.10.24"},
            "images": [{"official": "nginx:1.28-alpine", "used": "x/nginx:1.28-alpine", "standin": "stand-in for nginx"}],
            "steps": [{"name": "a | b", "ok": true, "seconds": 1.25}, {"name": "c", "ok": false, "seconds": 2.0}],
            "upstreams": {"matched": 3, "total": 3}, "sql_blocks_run": 31,
            "timings": {"bring_up": 60.0, "total": 200.0},
            "bring_up": {"ready_at": {"db": 18.0, "init": 2.0}},
            "kills": [{"service": "rooms1", "kind": "rooms worker", "came_back": true, "seconds_to_healthy": 5.5,
                       "restarts": 1, "failed": "send: 2x HTTP 502", "retried": 2, "lost": 0}],
            "replica": {"state": "streaming", "replay_bytes_behind": 0, "backups_run": 2, "archives_left": 1,
                        "backup_refuses_primary": true, "tables_compared": 15, "rows_compared": 900}
        });
        let md = super::render(&r);
        assert!(md.contains("1 of 2 steps passed"), "{md}");
        assert!(
            md.contains("| `rooms1` | rooms worker | yes | 5.5 | 1 | send: 2x HTTP 502 | 2 | 0 |"),
            "{md}"
        );
        assert!(md.contains("| `init` | 2.0 |\n| `db` | 18.0 |"), "{md}");
        assert!(md.contains("stand-in for nginx"));
        assert!(md.contains("15 tables (900 rows)"));
        assert!(!md.contains("a | b"), "pipes are escaped: {md}");
    }

    #[test]
    fn renders_the_flakiness_series() {
        let v = serde_json::json!({"machine": {"cores": 2, "memory_gib": 23.5}, "runs": [
            {"run": 1, "kind": "quiet", "ok": true, "seconds": 210.4, "bring_up": 68.1, "upstreams": "268/268",
             "kills_back": 11, "kills": 11, "load_before": 0.5, "load_after": 2.1},
            {"run": 2, "kind": "loaded", "ok": false, "failed": ["kill -9 x: not back"], "seconds": 300.0,
             "load_before": 4.0, "load_after": 5.0}]});
        let md = super::render_flakiness(&v);
        assert!(
            md.starts_with("1 of 2 runs passed: 1 in a row, then 1 while"),
            "{md}"
        );
        assert!(
            md.contains("| 1 | quiet | pass | 210.4 | 68.1 | 268/268 | 11/11 | 0.5 → 2.1 |"),
            "{md}"
        );
        assert!(
            md.contains("| 2 | building | **FAIL**: kill -9 x: not back |"),
            "{md}"
        );
    }
}
