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
    if let Some(c) = r["console"].as_object() {
        let skipped = c["skipped"].as_array().cloned().unwrap_or_default();
        let _ = writeln!(
            o,
            "**Console blocks**: {} run ({} commands, {} shown outputs compared), {} matched, {} \
             skipped ({:.1} s):\n",
            s(&c["run"]),
            s(&c["commands"]),
            s(&c["compared"]),
            s(&c["matched"]),
            skipped.len(),
            r["timings"]["console"].as_f64().unwrap_or(0.0),
        );
        for k in skipped {
            let _ = writeln!(o, "- {}", escape(k.as_str().unwrap_or_default()));
        }
        let _ = writeln!(o);
    }
    if let Some(vs) = r["variants"].as_array().filter(|v| !v.is_empty()) {
        let _ = writeln!(
            o,
            "**Variants**, brought up after the main deployment and smoke-tested:\n\n\
             | variants | result | bring-up (s) | whole run (s) | steps |\n| --- | --- | ---: | ---: | ---: |"
        );
        for v in vs {
            let names: Vec<String> = v["variants"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|x| format!("`{}`", s(x)))
                .collect();
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} |",
                names.join(" + "),
                if v["ok"] == true { "passed" } else { "FAILED" },
                f1(&v["bring_up_seconds"]),
                f1(&v["seconds"]),
                s(&v["steps"]),
            );
        }
        let _ = writeln!(o);
    }
    if let Some(u) = r["upgrade"].as_object() {
        let deltas: Vec<String> = u["deltas_migrated"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|d| format!("`{}`", s(d)))
            .collect();
        let _ = writeln!(
            o,
            "**Upgrade** from `{}` to `{}`, on a deployment of its own: {}; bring-up on the old \
             release {} s, the book's procedure {} s (schema deltas applied by \
             `update_synapse_database`: {}), the whole run {} s in {} steps.\n",
            s(&u["from"]),
            s(&u["to"]),
            if u["ok"] == true { "passed" } else { "FAILED" },
            f1(&u["bring_up_seconds"]),
            f1(&u["procedure_seconds"]),
            if deltas.is_empty() {
                "none".to_string()
            } else {
                deltas.join(", ")
            },
            f1(&u["seconds"]),
            s(&u["steps"]),
        );
    }
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
        replica(&mut o, rep);
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
        "{passed} of {} runs passed{}: {quiet} in a row with no load added by the script (the \
         load average column shows what else ran), then {} while a release build of the \
         workspace kept both cores busy ({} cores, {} GiB).\n\n\
         | run | machine | result | whole test (s) | bring-up (s) | upstreams as predicted | kills back, nothing lost | load average before → after |\n\
         | ---: | --- | --- | ---: | ---: | --- | --- | --- |",
        runs.len(),
        v["commit"]
            .as_str()
            .map(|c| format!(" (commit `{}`)", escape(c)))
            .unwrap_or_default(),
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
                "no added load"
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

/// The replica, backup and restore section (the `replica` object of the report).
fn replica(o: &mut String, rep: &serde_json::Map<String, Value>) {
    let roles = &rep["roles"];
    let _ = writeln!(
        o,
        "\n**Replica, backups and restores.** The replica was `{}` ({} bytes behind after a \
         write). Synapse's {} sessions logged in as `{}`: superuser {}, member of \
         `pg_execute_server_program` {}, owner of its database {}; data checksums {}.",
        s(&rep["state"]),
        s(&rep["replay_bytes_behind"]),
        s(&roles["synapse_sessions"]),
        s(&roles["synapse_role"]),
        s(&roles["rolsuper"]),
        s(&roles["execute_server_program"]),
        s(&roles["owns_database"]),
        s(&roles["data_checksums"]),
    );
    let b = &rep["backup"];
    let _ = writeln!(
        o,
        "\n| backup | repository | label | seconds |\n| --- | --- | --- | ---: |"
    );
    for run in b["runs"].as_array().cloned().unwrap_or_default() {
        let _ = writeln!(
            o,
            "| {} | repo{} | `{}` | {} |",
            s(&run["kind"]),
            s(&run["repo"]),
            s(&run["label"]),
            f1(&run["seconds"]),
        );
    }
    let k = &b["killed"];
    let _ = writeln!(
        o,
        "\nThe job killed (SIGKILL) while copying left `{}` with {} files and no manifest; the \
         next run {} it, and afterwards all {} backup directories of repo1 were complete and \
         listed, with {} temporary files left. `pgbackrest check` passed: {}.",
        s(&k["label"]),
        s(&k["files_left"]),
        if k["resumed"] == true {
            "resumed"
        } else {
            "replaced"
        },
        s(&k["backup_dirs_after"]),
        s(&k["temporary_files_after"]),
        s(&b["check_passed"]),
    );
    let _ = writeln!(
        o,
        "\n| refused run | exit | the job said |\n| --- | ---: | --- |"
    );
    for x in b["refusals"].as_array().cloned().unwrap_or_default() {
        let _ = writeln!(
            o,
            "| {} | {} | {} |",
            s(&x["case"]),
            s(&x["exit_code"]),
            s(&x["message"]),
        );
    }
    let _ = writeln!(
        o,
        "\n| repository | backups | files | encrypted | cipher | retention |\n| --- | ---: | ---: | ---: | --- | --- |"
    );
    for x in b["repos"].as_array().cloned().unwrap_or_default() {
        let _ = writeln!(
            o,
            "| repo{} | {} | {} | {} | {} | {} |",
            s(&x["repo"]),
            s(&x["backups"]),
            s(&x["files"]),
            s(&x["encrypted_files"]),
            s(&x["cipher"]),
            s(&x["retention"]),
        );
    }
    let p = &rep["point_in_time"];
    let _ = writeln!(
        o,
        "\n**Point in time**, from repo{} to {}: the message sent before it is there: {}; the one \
         sent after it: {}. The copy opened on timeline {}; `pg_checksums --check` on it: {} \
         files, {} blocks, {} bad checksums.",
        s(&p["repo"]),
        s(&p["target"]),
        s(&p["first_present"]),
        s(&p["second_present"]),
        s(&p["timeline"]),
        s(&p["checksums"]["files"]),
        s(&p["checksums"]["blocks"]),
        s(&p["checksums"]["bad"]),
    );
    let x = &rep["restore"];
    let _ = writeln!(
        o,
        "\n**The restore procedure, on the deployment**: recovery took {} s; {} tables ({} rows) \
         equal to the primary before it was stopped; one-time keys: {} uploaded, {} restored, {} \
         after the book's step, {} seen by Synapse; everything healthy again after {} s, the \
         replica streaming: {}; {} messages read back with the old access token; a full backup \
         afterwards: `{}`.",
        f1(&x["recovery_seconds"]),
        s(&x["tables_compared"]),
        s(&x["rows_compared"]),
        s(&x["one_time_keys_uploaded"]),
        s(&x["one_time_keys_restored"]),
        s(&x["one_time_keys_after"]),
        s(&x["one_time_keys_seen_by_synapse"]),
        f1(&x["bring_up_seconds"]),
        s(&x["replica_streaming_after"]),
        s(&x["messages_read"]),
        s(&x["backup_after"]),
    );
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
            "upgrade": {"from": "s:v1.1.0", "to": "s:v1.2.0", "ok": true, "bring_up_seconds": 70.0,
                        "procedure_seconds": 90.0, "seconds": 200.0, "steps": 12,
                        "deltas_migrated": ["94/11_x.sql"]},
            "bring_up": {"ready_at": {"db": 18.0, "init": 2.0}},
            "kills": [{"service": "rooms1", "kind": "rooms worker", "came_back": true, "seconds_to_healthy": 5.5,
                       "restarts": 1, "failed": "send: 2x HTTP 502", "retried": 2, "lost": 0}],
            "replica": {"state": "streaming", "replay_bytes_behind": 0,
                "roles": {"synapse_role": "synapse", "synapse_sessions": 40, "rolsuper": false,
                          "execute_server_program": false, "owns_database": true, "data_checksums": "on"},
                "backup": {"runs": [{"repo": 1, "kind": "full", "label": "20261201-221504F", "seconds": 8.3}],
                           "killed": {"label": "20261201-221504F_20261201-221600D", "files_left": 13,
                                      "resumed": true, "backup_dirs_after": 2, "temporary_files_after": 0},
                           "refusals": [{"case": "lag", "message": "backup: the replica's replay is 120 bytes behind", "exit_code": 1}],
                           "repos": [{"repo": 2, "backups": 1, "files": 40, "encrypted_files": 40,
                                      "cipher": "aes-256-cbc", "retention": "time 56"}],
                           "check_passed": true},
                "point_in_time": {"repo": 2, "target": "2026-12-01 22:15:52.708498+00", "first_present": true,
                                  "second_present": false, "timeline": "2",
                                  "checksums": {"files": 947, "blocks": 2833, "bad": 0}},
                "restore": {"recovery_seconds": 3.2, "tables_compared": 15, "rows_compared": 900,
                            "one_time_keys_uploaded": 5, "one_time_keys_restored": 5, "one_time_keys_after": 0,
                            "one_time_keys_seen_by_synapse": 0, "bring_up_seconds": 70.0,
                            "replica_streaming_after": true, "messages_read": 30, "backup_after": "x"}}
        });
        let md = super::render(&r);
        assert!(md.contains("1 of 2 steps passed"), "{md}");
        assert!(
            md.contains("| `rooms1` | rooms worker | yes | 5.5 | 1 | send: 2x HTTP 502 | 2 | 0 |"),
            "{md}"
        );
        assert!(md.contains("| `init` | 2.0 |\n| `db` | 18.0 |"), "{md}");
        assert!(md.contains("stand-in for nginx"));
        assert!(md.contains("15 tables (900 rows) equal"), "{md}");
        assert!(
            md.contains("| full | repo1 | `20261201-221504F` | 8.3 |"),
            "{md}"
        );
        assert!(
            md.contains("| repo2 | 1 | 40 | 40 | aes-256-cbc | time 56 |"),
            "{md}"
        );
        assert!(
            md.contains("there: true; the one sent after it: false")
                && md.contains("2833 blocks, 0 bad"),
            "{md}"
        );
        assert!(
            md.contains("logged in as `synapse`: superuser false"),
            "{md}"
        );
        assert!(
            md.contains("with 13 files and no manifest; the next run resumed it"),
            "{md}"
        );
        assert!(!md.contains("a | b"), "pipes are escaped: {md}");
        assert!(
            md.contains(
                "**Upgrade** from `s:v1.1.0` to `s:v1.2.0`, on a deployment of its own: passed"
            ) && md.contains("`update_synapse_database`: `94/11_x.sql`"),
            "{md}"
        );
    }

    #[test]
    fn renders_the_flakiness_series() {
        let v = serde_json::json!({"machine": {"cores": 2, "memory_gib": 23.5}, "commit": "e8de5bd0a1b2", "runs": [
            {"run": 1, "kind": "quiet", "ok": true, "seconds": 210.4, "bring_up": 68.1, "upstreams": "268/268",
             "kills_back": 11, "kills": 11, "load_before": 0.5, "load_after": 2.1},
            {"run": 2, "kind": "loaded", "ok": false, "failed": ["kill -9 x: not back"], "seconds": 300.0,
             "load_before": 4.0, "load_after": 5.0}]});
        let md = super::render_flakiness(&v);
        assert!(
            md.starts_with("1 of 2 runs passed (commit `e8de5bd0a1b2`): 1 in a row with no load"),
            "{md}"
        );
        assert!(
            md.contains(
                "| 1 | no added load | pass | 210.4 | 68.1 | 268/268 | 11/11 | 0.5 → 2.1 |"
            ),
            "{md}"
        );
        assert!(
            md.contains("| 2 | building | **FAIL**: kill -9 x: not back |"),
            "{md}"
        );
    }
}
