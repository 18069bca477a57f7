//! The upgrade run (issue 16), after the main deployment and the variants are down: one more
//! deployment of the main tree, started on the previous Synapse release (versions.toml
//! [images-upgrade-from]: the tag of the `x-synapse` template set to it, as a reader who
//! installed with the previous edition of the book has it), a client that registers and sends,
//! and then the book's upgrade procedure (src/deployment/running.md, "Upgrading Synapse"), run
//! command by command as written, its `sed` on `docker-compose.yml` included.
//!
//! Afterwards: every Synapse container runs the pinned release (asked with `python -c`, and the
//! image of each container, the one-shot `init-sockets` included), the schema deltas the new
//! release brings were applied by the migration step while no Synapse process ran (and none by
//! the main process when it started), the messages sent on the previous release are read back
//! and a new one is sent, and the logs are clean outside the procedure's stop.
//!
//! Only `docker compose pull` cannot run when the stand-ins run (no registry): the override
//! that puts the stand-ins in place then follows the Compose file the `sed` edited (each
//! service gets the stand-in of the tag the file now names), which is what the pull would have
//! fetched. With the official images the pull runs too.

use super::report::{Report, Step, UpgradeRun};
use super::{COMPOSE_FILE, ImageChoice, Paths, Stack, bring_up, checks, client};
use anyhow::{Context, bail, ensure};
use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

/// The heading of the book's upgrade procedure, in `running.md`.
pub const UPGRADE_HEADING: &str = "## Upgrading Synapse";

/// What the run does with a command of the procedure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `docker compose pull`: cannot reach a registry when the stand-ins run.
    Pull,
    /// `update_synapse_database`: the schema is checked before and after it.
    Migrate,
    /// Anything else, the `sed` included: run as written.
    Run,
}

impl Kind {
    pub fn of(cmd: &str) -> Kind {
        if cmd.contains("docker compose pull") {
            Kind::Pull
        } else if cmd.contains("update_synapse_database") {
            Kind::Migrate
        } else {
            Kind::Run
        }
    }
}

/// The commands of the console blocks under the upgrade heading of `running.md`, in order
/// (continuation lines joined).
pub fn upgrade_commands(book: &crate::book::Book) -> Vec<String> {
    let Some(file) = book
        .blocks()
        .find(|b| b.file.ends_with("deployment/running.md"))
        .map(|b| b.file.clone())
    else {
        return Vec::new();
    };
    let text = std::fs::read_to_string(book.root.join(&file)).unwrap_or_default();
    let Some(start) = text.lines().position(|l| l.trim() == UPGRADE_HEADING) else {
        return Vec::new();
    };
    // The procedure ends at the next heading of the same or a higher level.
    let end = text
        .lines()
        .enumerate()
        .skip(start + 1)
        .find(|(_, l)| l.starts_with("## ") || l.starts_with("# "))
        .map_or(usize::MAX, |(i, _)| i);
    let mut out = Vec::new();
    for b in book.blocks().filter(|b| {
        b.file == file && b.lang == "console" && b.fence_line > start + 1 && b.fence_line <= end
    }) {
        let mut cur = String::new();
        for line in b.text.lines() {
            let l = line.strip_prefix("$ ").unwrap_or(line).trim();
            if let Some(head) = l.strip_suffix('\\') {
                cur.push_str(head.trim_end());
                cur.push(' ');
                continue;
            }
            cur.push_str(l);
            out.push(std::mem::take(&mut cur));
        }
    }
    out
}

/// The two sides of the procedure's `sed -i 's|OLD|NEW|' docker-compose.yml`.
pub fn sed_tags(cmds: &[String]) -> Option<(String, String)> {
    let re = regex::Regex::new(r"^sed -i 's\|([^|]+)\|([^|]+)\|' docker-compose\.yml$")
        .expect("valid regex");
    cmds.iter().find_map(|c| {
        re.captures(c.trim())
            .map(|m| (m[1].to_string(), m[2].to_string()))
    })
}

/// The previous release's image and the pinned one (versions.toml), checked against the
/// book's `sed` line: it must turn the one into the other.
fn releases(cmds: &[String]) -> anyhow::Result<(String, String)> {
    let from = crate::images::upgrade_from()?
        .get("synapse")
        .cloned()
        .context(
            "versions.toml has no [images-upgrade-from] synapse: no release to upgrade from",
        )?;
    let to = crate::images::pinned()?
        .get("synapse")
        .cloned()
        .context("versions.toml has no [images] synapse")?;
    let (old, new) = sed_tags(cmds).with_context(|| {
        format!(
            "no `sed -i 's|OLD|NEW|' docker-compose.yml` line under `{UPGRADE_HEADING}` in \
             running.md"
        )
    })?;
    ensure!(
        from.ends_with(&old) && to.ends_with(&new),
        "running.md's upgrade `sed` turns `{old}` into `{new}`; versions.toml says the upgrade \
         goes from `{from}` ([images-upgrade-from]) to `{to}` ([images]): make them agree"
    );
    Ok((from, to))
}

/// `1.163.2` for `ghcr.io/element-hq/synapse:v1.163.2`.
fn version_of(image: &str) -> String {
    image
        .rsplit(':')
        .next()
        .unwrap_or(image)
        .trim_start_matches('v')
        .to_string()
}

/// Runs the upgrade when the book has the procedure, adding its steps (prefixed `[upgrade]`)
/// and its summary to `report`. The main deployment and the variants must be down (same ports).
pub fn run(root: &Path, main: &Paths, images: ImageChoice, report: &mut Report) {
    let Ok(book) = crate::book::load(root) else {
        return; // the main run has reported it
    };
    let cmds = upgrade_commands(&book);
    if cmds.is_empty() {
        return;
    }
    let t0 = Instant::now();
    let base = main.base.with_file_name(format!(
        "{}-upgrade",
        main.base
            .file_name()
            .map_or("stack".into(), |n| n.to_string_lossy().into_owned())
    ));
    let paths = Paths::new(&base);
    let mut sub = Report::default();
    let mut run = UpgradeRun::default();
    let started = releases(&cmds).and_then(|(from, to)| {
        run.from = from.clone();
        run.to = to.clone();
        let edit = |tree: &mut crate::tree::Tree| -> anyhow::Result<()> {
            let f = tree
                .files
                .get_mut(COMPOSE_FILE)
                .with_context(|| format!("the book has no {COMPOSE_FILE}"))?;
            let n = f.content.matches(to.as_str()).count();
            ensure!(n > 0, "{COMPOSE_FILE} does not name `{to}`");
            let text = f.content.replace(to.as_str(), &from);
            f.set_content(text);
            Ok(())
        };
        super::prepare_edited(root, &paths, images, &[], &edit)
    });
    match started {
        Ok(s) => {
            steps(&s, &cmds, &mut sub, &mut run);
            checks::teardown(&s, &paths, &mut sub);
        }
        Err(e) => sub.push(Step::fail(
            "extract the tree on the previous Synapse release and choose its images",
            format!("{e:#}"),
            t0.elapsed().as_secs_f64(),
        )),
    }
    run.ok = sub.steps.iter().all(|s| s.ok);
    run.steps = sub.steps.len();
    run.seconds = (t0.elapsed().as_secs_f64() * 10.0).round() / 10.0;
    for mut st in sub.steps {
        st.name = format!("[upgrade] {}", st.name);
        report.steps.push(st);
    }
    report.timings.upgrade = run.seconds;
    report.upgrade = Some(run);
}

/// Pushes a step for `f`'s outcome.
fn step(
    report: &mut Report,
    name: &str,
    f: impl FnOnce() -> anyhow::Result<String>,
) -> Option<String> {
    let t = Instant::now();
    match f() {
        Ok(d) => {
            report.push(Step::new(name, true, d.clone(), t.elapsed()));
            Some(d)
        }
        Err(e) => {
            report.push(Step::new(name, false, format!("{e:#}"), t.elapsed()));
            None
        }
    }
}

/// What each Synapse service's running container reports as `synapse.__version__`.
fn versions(s: &Stack) -> anyhow::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for svc in s.synapse_services() {
        let r = s.compose.exec(
            &svc,
            &["python", "-c", "import synapse; print(synapse.__version__)"],
            &[],
            None,
            Duration::from_secs(60),
        )?;
        ensure!(
            r.ok,
            "`docker compose exec {svc} python -c 'import synapse; ...'` failed: {}",
            super::docker::tail(&r.text(), 5)
        );
        // `1.163.2`, or `1.163.2 (b=..., ...)` when Synapse runs from a git checkout.
        let v = r.stdout.split_whitespace().next().unwrap_or_default();
        out.push((svc, v.to_string()));
    }
    ensure!(!out.is_empty(), "no Synapse service");
    Ok(out)
}

/// Every Synapse service reports `want`.
fn all_on(s: &Stack, want: &str) -> anyhow::Result<String> {
    let got = versions(s)?;
    let off: Vec<String> = got
        .iter()
        .filter(|(_, v)| v != want)
        .map(|(svc, v)| format!("{svc}: {v}"))
        .collect();
    ensure!(off.is_empty(), "not on {want}: {}", off.join(", "));
    Ok(format!(
        "{} Synapse containers report synapse.__version__ {want}: {}",
        got.len(),
        got.iter()
            .map(|(s, _)| s.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    ))
}

/// The schema deltas Synapse recorded as applied (`94/11_destination_room_sticky_events.sql`:
/// synapse/storage/prepare_database.py records the path relative to the delta directory).
fn applied_deltas(s: &Stack, db: &str) -> anyhow::Result<BTreeSet<String>> {
    let r = checks::psql(s, db, None, "SELECT file FROM applied_schema_deltas")?;
    ensure!(r.ok, "psql: {}", r.text().trim());
    Ok(r.stdout
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect())
}

/// With the stand-ins: rewrites the override so that each service runs the stand-in of the
/// image the Compose file names now, building the ones that are missing. Returns what changed.
fn follow_compose_file(s: &Stack) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(s.compose.dir.join(COMPOSE_FILE))?;
    let pairs = crate::images::compose_services(&text)?;
    let built: Vec<String> = s
        .images
        .iter()
        .filter(|i| i.built_from.is_some())
        .flat_map(|i| i.services.iter().cloned())
        .collect();
    let mut over = Vec::new();
    let mut changed = BTreeSet::new();
    for (svc, image) in pairs {
        let was = s
            .images
            .iter()
            .find(|i| i.services.contains(&svc))
            .with_context(|| format!("service `{svc}` was not in the Compose file before"))?;
        if was.official == image || built.contains(&svc) {
            over.push((svc, was.used.clone()));
            continue;
        }
        let standin = crate::images::standin_for(&image)?;
        crate::images::build(&standin)?;
        changed.insert(format!("{} -> {}", was.used, standin.image));
        over.push((svc, standin.image));
    }
    std::fs::write(
        s.paths.standin_override(),
        crate::images::override_yaml_built(&over, &built),
    )?;
    Ok(changed.into_iter().collect())
}

/// The steps on the deployment started on the previous release.
fn steps(s: &Stack, cmds: &[String], report: &mut Report, run: &mut UpgradeRun) {
    let (from_v, to_v) = (version_of(&run.from), version_of(&run.to));
    let ts = Instant::now();
    let up_name = format!("docker compose up --wait on Synapse {from_v}");
    match bring_up(s) {
        Ok(b) => {
            run.bring_up_seconds = (b.seconds * 10.0).round() / 10.0;
            report.push(Step::new(
                up_name,
                true,
                format!("{:.1} s", b.seconds),
                ts.elapsed(),
            ));
        }
        Err(e) => {
            report.push(Step::new(up_name, false, format!("{e:#}"), ts.elapsed()));
            return;
        }
    }
    if step(
        report,
        &format!("every Synapse container runs the previous release, {from_v}"),
        || all_on(s, &from_v),
    )
    .is_none()
    {
        return;
    }
    let Some(secret) = client::shared_secret_step(s, report) else {
        return;
    };
    let addr = match s.client_addr() {
        Ok(a) => a,
        Err(e) => {
            report.push(Step::fail(
                "find nginx's published port",
                format!("{e:#}"),
                0.0,
            ));
            return;
        }
    };
    let mut c = client::Client::new(&addr);
    let st = match client::smoke(&mut c, &secret, report) {
        Ok(st) => st,
        Err(e) => {
            report.push(Step::fail("smoke", format!("{e:#}"), 0.0));
            return;
        }
    };
    let Some(db) = s.primary_db() else {
        report.push(Step::fail(
            "find the database Synapse uses",
            "no postgres service that a Synapse service depends on",
            0.0,
        ));
        return;
    };
    let before_body = format!(
        "sent on {from_v}, before the upgrade {}",
        std::process::id()
    );

    // The procedure, command by command.
    let from_t = checks::now();
    let t = Instant::now();
    let mut deltas = [BTreeSet::new(), BTreeSet::new()];
    let procedure = (|| -> anyhow::Result<String> {
        client::send_text(&mut c, &st.alice, &st.room_id, &before_body)?;
        deltas[0] = applied_deltas(s, &db)?;
        let standins = s.images.iter().any(|i| i.standin.is_some());
        let compose_file = s.compose.dir.join(COMPOSE_FILE);
        let mut ran = Vec::new();
        let mut migrated = false;
        for cmd in cmds {
            let short = cmd.split_whitespace().take(5).collect::<Vec<_>>().join(" ");
            if Kind::of(cmd) == Kind::Pull && standins {
                ran.push(format!(
                    "not run: `{cmd}` (no registry here: the stand-in of the new tag was put in \
                     place instead)"
                ));
                run.commands.push(format!("(not run: {cmd})"));
                continue;
            }
            if Kind::of(cmd) == Kind::Migrate {
                let running: Vec<String> = s
                    .compose
                    .ps()?
                    .into_iter()
                    .filter(|c| c.state == "running" && s.synapse_services().contains(&c.service))
                    .map(|c| c.service)
                    .collect();
                ensure!(
                    running.is_empty(),
                    "Synapse processes still run when the migration starts: {}",
                    running.join(", ")
                );
            }
            let before = std::fs::read_to_string(&compose_file)?;
            let r = s.compose.shell(cmd, None, Duration::from_secs(900))?;
            ensure!(
                r.ok,
                "`{cmd}` failed ({:?}):\n{}",
                r.code,
                super::docker::tail(&r.text(), 20)
            );
            run.commands.push(cmd.clone());
            ran.push(short);
            let after = std::fs::read_to_string(&compose_file)?;
            if after != before {
                ensure!(
                    after.contains(&run.to) && !after.contains(&run.from),
                    "after `{cmd}`, {COMPOSE_FILE} does not name `{}` in place of `{}`",
                    run.to,
                    run.from
                );
                if standins {
                    let changed = follow_compose_file(s)?;
                    ensure!(
                        !changed.is_empty(),
                        "`{cmd}` changed {COMPOSE_FILE}, but no service's image"
                    );
                    ran.push(format!(
                        "(the stand-in override follows {COMPOSE_FILE}: {})",
                        changed.join(", ")
                    ));
                }
            }
            if Kind::of(cmd) == Kind::Migrate {
                deltas[1] = applied_deltas(s, &db)?;
                migrated = true;
            }
        }
        ensure!(
            migrated,
            "no `update_synapse_database` under `{UPGRADE_HEADING}`"
        );
        Ok(ran.join("; "))
    })();
    run.procedure_seconds = (t.elapsed().as_secs_f64() * 10.0).round() / 10.0;
    let window = checks::Window {
        from: from_t,
        to: checks::now(),
    };
    let ok = procedure.is_ok();
    report.push(Step::new(
        format!(
            "the book's upgrade procedure, as written, from {from_v} to {to_v} (backup, stop \
             every Synapse process, sed, migrate, start)"
        ),
        ok,
        procedure.unwrap_or_else(|e| format!("{e:#}")),
        t.elapsed(),
    ));
    if !ok {
        return;
    }
    step(
        report,
        &format!("every Synapse container, init-sockets included, runs {to_v}"),
        || {
            let d = all_on(s, &to_v)?;
            // The image of every container of a service that ran the previous release (those
            // a plain `up` starts: a service behind a profile has no container).
            let old: Vec<String> = s
                .images
                .iter()
                .filter(|i| i.official == run.from)
                .flat_map(|i| i.services.iter().cloned())
                .filter(|svc| s.model.services[svc].profiles.is_empty())
                .collect();
            let want = if s.images.iter().any(|i| i.standin.is_some()) {
                crate::images::standin_tag(&run.to)
            } else {
                run.to.clone()
            };
            let mut bad = Vec::new();
            let mut seen = 0;
            for c in s.compose.ps()? {
                if old.contains(&c.service) {
                    seen += 1;
                    if c.image != want {
                        bad.push(format!("{} ({}): {}", c.service, c.state, c.image));
                    }
                }
            }
            ensure!(bad.is_empty(), "not on {want}: {}", bad.join(", "));
            ensure!(
                seen == old.len(),
                "{seen} containers for the {} services of the previous release",
                old.len()
            );
            Ok(format!(
                "{d}; all {seen} containers of those services on image {want}"
            ))
        },
    );
    step(
        report,
        "update_synapse_database applied the new schema deltas while no Synapse process ran",
        || {
            let [before, migrated] = &deltas;
            let after = applied_deltas(s, &db)?;
            let by_migration: Vec<&String> = migrated.difference(before).collect();
            let by_start: Vec<&String> = after.difference(migrated).collect();
            ensure!(
                !by_migration.is_empty(),
                "update_synapse_database applied no schema delta ({} recorded before, as many \
                 after): {to_v} has deltas {from_v} lacks, so it did not migrate",
                before.len()
            );
            ensure!(
                by_start.is_empty(),
                "the processes applied deltas when they started, after the migration step: {}",
                by_start
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            run.deltas_migrated = by_migration.iter().map(|s| s.to_string()).collect();
            Ok(format!(
                "{} recorded before; applied by the migration step: {}; none at start",
                before.len(),
                run.deltas_migrated.join(", ")
            ))
        },
    );
    step(
        report,
        &format!("the messages sent on {from_v} are readable on {to_v}, and a new one is sent"),
        || {
            let after_body = format!("sent on {to_v}, after the upgrade {}", std::process::id());
            client::send_text(&mut c, &st.bob, &st.room_id, &after_body)?;
            let seen = client::history(&mut c, &st.alice, &st.room_id)?;
            let mut missing: Vec<&str> = st
                .sent_bodies
                .iter()
                .map(String::as_str)
                .chain([before_body.as_str(), after_body.as_str()])
                .filter(|b| !seen.iter().any(|x| x == b))
                .collect();
            missing.dedup();
            ensure!(missing.is_empty(), "not in the room's history: {missing:?}");
            Ok(format!(
                "{} messages of the room read back by alice through nginx, the one sent just \
                 before the upgrade and bob's after it included",
                seen.len()
            ))
        },
    );
    let t = Instant::now();
    let (findings, _) = checks::scan_logs(s, &[window]);
    report.push(Step::new(
        "logs have no ERROR or traceback (outside the procedure's stop)",
        findings.is_empty(),
        findings.join("\n"),
        t.elapsed(),
    ));
}

/// An error when the book's tree names no Synapse image to start from (used by tests).
pub fn check_book(book: &crate::book::Book) -> anyhow::Result<(String, String)> {
    let cmds = upgrade_commands(book);
    if cmds.is_empty() {
        bail!("no upgrade procedure under `{UPGRADE_HEADING}`");
    }
    releases(&cmds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_books_upgrade_procedure_goes_from_the_previous_release_to_the_pinned_one() {
        let book = crate::book::load(&crate::project_root()).unwrap();
        let cmds = upgrade_commands(&book);
        let kinds: Vec<Kind> = cmds.iter().map(|c| Kind::of(c)).collect();
        assert!(cmds[0].contains("db-backup full"), "{cmds:?}");
        assert!(cmds[1].starts_with("docker compose stop ") && cmds[1].ends_with(" synapse"));
        assert!(cmds[2].starts_with("sed -i "), "{cmds:?}");
        assert_eq!(kinds[3], Kind::Pull, "{cmds:?}");
        assert_eq!(kinds[4], Kind::Migrate, "{cmds:?}");
        assert_eq!(
            cmds.last().map(String::as_str),
            Some("docker compose up -d --wait")
        );
        assert_eq!(cmds.len(), 6, "{cmds:?}");
        // The `sed` goes from versions.toml [images-upgrade-from] to [images].
        let (from, to) = check_book(&book).unwrap();
        assert_ne!(from, to);
        assert_eq!(
            version_of(&to),
            crate::tools::version("synapse", "version").unwrap()
        );
        assert_eq!(
            Some(version_of(&from)),
            crate::tools::synapse_upgrade_from().unwrap()
        );
    }

    #[test]
    fn sed_lines_are_read() {
        let cmds = vec![
            "docker compose stop synapse".to_string(),
            "sed -i 's|element-hq/synapse:v1.1.0|element-hq/synapse:v1.2.0|' docker-compose.yml"
                .to_string(),
        ];
        assert_eq!(
            sed_tags(&cmds),
            Some((
                "element-hq/synapse:v1.1.0".to_string(),
                "element-hq/synapse:v1.2.0".to_string()
            ))
        );
        assert_eq!(sed_tags(&cmds[..1]), None);
        assert_eq!(version_of("ghcr.io/element-hq/synapse:v1.163.2"), "1.163.2");
        assert_eq!(Kind::of("docker compose pull synapse"), Kind::Pull);
    }
}
