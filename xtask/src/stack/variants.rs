//! The book's variants, brought up and smoke-tested after the main run.
//!
//! A variant replaces whole files of the deployment (`variant="NAME"` blocks) or adds to them
//! (`add`). Variants of different files can be brought up together, so each costs no extra
//! bring-up ([`super::variant_tree`] refuses a set in which two give the same file): the HTTPS
//! `nginx.conf` (with its `docker-compose.override.yml` that publishes 80 and 443 and mounts
//! the certificate) and the small-server `postgresql.conf` run as one deployment. Before it
//! starts, a certificate authority and a server certificate are generated with `openssl` where
//! the nginx service's mounts put `ssl_certificate`. The client then speaks TLS to the port
//! published for 443, trusting only that authority, runs the smoke steps, and checks that port
//! 80 redirects to HTTPS; `SHOW` confirms the database runs with the variant's settings. No
//! kill table, no replica: those run on the main deployment.
//!
//! Every set runs the smoke steps, sends the book's `routes` samples, and compares the upstream
//! nginx used for each request with the routing simulator's prediction on the variant's own
//! configuration. The scale variant (a fifth room worker and a second federation reader) runs
//! on its own, over plain HTTP on the published 8008 (the HTTPS server does not trust
//! `X-Forwarded-For`, which [`scale`] uses to choose the federation hash): [`scale`] checks that
//! requests the simulator sends to each added worker reach it.

use super::report::{Report, Step, VariantRun};
use super::{ImageChoice, Paths, Stack, bring_up, checks, client, http, routing, scale};
use anyhow::{Context, bail, ensure};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The variant sets brought up, each as one deployment.
pub const RUNS: &[&[&str]] = &[&["https", "small"], &["scale"]];

/// The name the test's certificate is issued for, and that the client asks for.
pub const TLS_NAME: &str = "matrix.example.com";

/// Brings up each set of [`RUNS`] in turn (the main deployment must be down: the ports are
/// the same) and adds its steps to `report`. A set with a variant the book does not have (a
/// test fixture's book) is left out: it would only bring the main tree up again. (The book of
/// this repository has every one, which a unit test asserts.)
pub fn run_all(root: &Path, main: &Paths, images: ImageChoice, report: &mut Report) {
    let known = crate::book::load(root)
        .map(|b| crate::extract::variants(&b))
        .unwrap_or_default();
    for set in RUNS {
        if let Some(v) = set.iter().find(|v| !known.iter().any(|k| k == *v)) {
            eprintln!(
                "stack: variants {} left out: the book has no variant `{v}`",
                set.join("+")
            );
            continue;
        }
        let t0 = Instant::now();
        let label = set.join("+");
        let base = main.base.with_file_name(format!(
            "{}-{}",
            main.base
                .file_name()
                .map_or("stack".into(), |n| n.to_string_lossy().into_owned()),
            set.join("-")
        ));
        let paths = Paths::new(&base);
        let mut sub = Report::default();
        let mut bring_up_seconds = 0.0;
        match super::prepare_variants(root, &paths, images, set) {
            Ok(s) => {
                bring_up_seconds = run_one(&s, &mut sub);
                checks::teardown(&s, &paths, &mut sub);
            }
            Err(e) => sub.push(Step::fail(
                "extract the variant tree and choose its images",
                format!("{e:#}"),
                t0.elapsed().as_secs_f64(),
            )),
        }
        let ok = sub.steps.iter().all(|s| s.ok);
        let n = sub.steps.len();
        for mut st in sub.steps {
            st.name = format!("[{label}] {}", st.name);
            report.steps.push(st);
        }
        report.variants.push(VariantRun {
            variants: set.iter().map(|v| v.to_string()).collect(),
            ok,
            bring_up_seconds,
            seconds: (t0.elapsed().as_secs_f64() * 10.0).round() / 10.0,
            steps: n,
        });
    }
}

/// The steps on a prepared variant stack; returns the bring-up time.
fn run_one(s: &Stack, report: &mut Report) -> f64 {
    let ts = Instant::now();
    let tls = match certificate(s) {
        Ok(t) => t,
        Err(e) => {
            report.push(Step::fail(
                "generate a certificate where nginx reads it",
                format!("{e:#}"),
                ts.elapsed().as_secs_f64(),
            ));
            return 0.0;
        }
    };
    if let Some(t) = &tls {
        report.push(Step::new(
            "generate a certificate where nginx reads it",
            true,
            format!("CA and server certificate for {TLS_NAME} in {}", t.dir),
            ts.elapsed(),
        ));
    }
    let ts = Instant::now();
    let seconds = match bring_up(s) {
        Ok(b) => {
            report.push(Step::new(
                "docker compose up --wait: every healthcheck green",
                true,
                format!("{:.1} s", b.seconds),
                ts.elapsed(),
            ));
            b.seconds
        }
        Err(e) => {
            report.push(Step::fail(
                "docker compose up --wait: every healthcheck green",
                format!("{e:#}"),
                ts.elapsed().as_secs_f64(),
            ));
            return 0.0;
        }
    };
    checks::nginx_t(s, report);
    settings_in_force(s, report);
    let Some(secret) = client::shared_secret_step(s, report) else {
        return seconds;
    };
    let nginx = s.nginx_service();
    // Every request of the client from here on is compared with the simulator's prediction.
    let log = nginx
        .as_ref()
        .map(|n| routing::NginxLog::mark(&s.compose, n));
    let published = |target: u16| -> Option<String> {
        let svc = nginx.as_ref()?;
        s.model.services[svc]
            .ports
            .iter()
            .find(|p| p.target == target)
            .and_then(|p| p.published.clone())
            .map(|port| format!("127.0.0.1:{port}"))
    };
    let mut c = match (&tls, published(443)) {
        (Some(t), Some(addr)) => {
            let mut c = client::Client::new(&addr);
            c.tls = Some(t.client.clone());
            c
        }
        _ => match s.client_addr() {
            Ok(a) => client::Client::new(&a),
            Err(e) => {
                report.push(Step::fail(
                    "find nginx's published port",
                    format!("{e:#}"),
                    0.0,
                ));
                return seconds;
            }
        },
    };
    if tls.is_some() {
        let t = Instant::now();
        let r = redirect(published(80).as_deref());
        report.push(Step::new(
            "port 80 answers 301 to the same URI over https",
            r.is_ok(),
            r.unwrap_or_else(|e| format!("{e:#}")),
            t.elapsed(),
        ));
        let t = Instant::now();
        let r = c
            .req("GET", "/_matrix/client/versions", None, None)
            .and_then(|r| {
                ensure!(r.status == 200, "HTTP {}", r.status);
                let hsts = r.header("strict-transport-security").unwrap_or_default();
                ensure!(
                    hsts.contains("max-age="),
                    "no Strict-Transport-Security header"
                );
                Ok(format!(
                    "TLS to {} as {TLS_NAME}, certificate verified; HSTS `{hsts}`",
                    c.addr
                ))
            });
        report.push(Step::new(
            "TLS on 443: the certificate verifies, HSTS is set",
            r.is_ok(),
            r.unwrap_or_else(|e| format!("{e:#}")),
            t.elapsed(),
        ));
    }
    match client::smoke(&mut c, &secret, report) {
        Ok(state) => {
            client::route_samples(&mut c, &s.book, &state, report);
            scale::check(s, &mut c, &state, report);
        }
        Err(e) => report.push(Step::fail("smoke", format!("{e:#}"), 0.0)),
    }
    if let Some(log) = &log {
        routing::compare_step(&s.tree, log, &c.sent, report);
    }
    let t = Instant::now();
    let (findings, _) = checks::scan_logs(s, &[]);
    report.push(Step::new(
        "logs have no ERROR or traceback",
        findings.is_empty(),
        findings.join("\n"),
        t.elapsed(),
    ));
    seconds
}

/// Port 80 redirects a Matrix request, path and query kept, to https.
fn redirect(addr: Option<&str>) -> anyhow::Result<String> {
    let addr = addr.context("nginx publishes no port for 80")?;
    let uri = "/_matrix/client/versions?probe=1";
    let r = http::request(addr, "GET", uri, &[], None, Duration::from_secs(30))?;
    let host = addr.split(':').next().unwrap_or_default();
    let want = format!("https://{host}{uri}");
    let got = r.header("location").unwrap_or_default();
    ensure!(
        r.status == 301 && got == want,
        "GET http://{addr}{uri}: HTTP {} Location `{got}`, expected 301 `{want}`",
        r.status
    );
    Ok(format!("301 -> {got}"))
}

/// For each `postgresql.conf` setting the variant's file sets among a few that show which file
/// is in force, `SHOW` on the live database returns it.
fn settings_in_force(s: &Stack, report: &mut Report) {
    let t = Instant::now();
    let Some(db) = s.primary_db() else { return };
    let Some(conf) = s
        .tree
        .files
        .values()
        .find(|f| f.path.ends_with("postgresql.conf"))
    else {
        return;
    };
    let re = regex::Regex::new(r"(?m)^\s*(shared_buffers|max_connections|work_mem|effective_cache_size)\s*=\s*'?([^'\s#]+)")
        .expect("valid regex");
    let mut want = Vec::new();
    for c in re.captures_iter(&conf.content) {
        want.push((c[1].to_string(), c[2].to_string()));
    }
    let mut bad = Vec::new();
    let mut seen = Vec::new();
    for (k, v) in &want {
        match checks::psql(s, &db, None, &format!("SHOW {k}")) {
            Ok(r) if r.ok && r.stdout.trim() == v => seen.push(format!("{k} = {v}")),
            Ok(r) => bad.push(format!("{k}: {} (file: {v})", r.text().trim())),
            Err(e) => bad.push(format!("{k}: {e:#}")),
        }
    }
    report.push(Step::new(
        format!("the database runs with {}", conf.path),
        bad.is_empty() && !seen.is_empty(),
        if bad.is_empty() {
            seen.join(", ")
        } else {
            bad.join("\n")
        },
        t.elapsed(),
    ));
}

/// What [`certificate`] made.
struct Made {
    dir: String,
    client: http::Tls,
}

/// When the tree's nginx config names `ssl_certificate` files: a CA and a server certificate
/// for [`TLS_NAME`] (and 127.0.0.1), written where the nginx service's bind mounts put them.
fn certificate(s: &Stack) -> anyhow::Result<Option<Made>> {
    let re = regex::Regex::new(r"(?m)^\s*(ssl_certificate|ssl_certificate_key)\s+([^;\s]+);")
        .expect("valid regex");
    let mut cert = None;
    let mut key = None;
    for f in s
        .tree
        .files
        .values()
        .filter(|f| f.path.starts_with("nginx/"))
    {
        for c in re.captures_iter(&f.content) {
            match &c[1] {
                "ssl_certificate" => cert = Some(c[2].to_string()),
                _ => key = Some(c[2].to_string()),
            }
        }
    }
    let (Some(cert), Some(key)) = (cert, key) else {
        return Ok(None);
    };
    let svc = s.nginx_service().context("no nginx service")?;
    let host_path = |container: &str| -> anyhow::Result<PathBuf> {
        for v in &s.model.services[&svc].volumes {
            let Some(src) = &v.source else { continue };
            if v.kind != "bind" {
                continue;
            }
            if let Ok(rest) = Path::new(container).strip_prefix(&v.target) {
                return Ok(PathBuf::from(src).join(rest));
            }
        }
        bail!("no bind mount of service `{svc}` holds {container}")
    };
    let (cert_path, key_path) = (host_path(&cert)?, host_path(&key)?);
    let dir = cert_path
        .parent()
        .context("certificate path")?
        .to_path_buf();
    std::fs::create_dir_all(&dir)?;
    let client = super::tls::issue(&s.paths.base.join("ca"), &cert_path, &key_path, TLS_NAME)?;
    Ok(Some(Made {
        dir: dir.display().to_string(),
        client,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_run_is_a_set_of_the_books_variants_that_combine() {
        let book = crate::book::load(&crate::project_root()).expect("the book loads");
        let known = crate::extract::variants(&book);
        for set in RUNS {
            for v in *set {
                assert!(
                    known.iter().any(|k| k == v),
                    "RUNS names `{v}`, which the book has not"
                );
            }
            if let Err(e) = super::super::variant_tree(&book, set) {
                panic!("{set:?} does not combine: {e:#}");
            }
        }
    }

    #[test]
    fn two_variants_of_one_file_do_not_combine() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("src")).unwrap();
        std::fs::write(root.join("book.toml"), "[book]\ntitle = \"t\"\n").unwrap();
        std::fs::write(root.join("src/SUMMARY.md"), "# Summary\n\n- [A](a.md)\n").unwrap();
        std::fs::write(
            root.join("src/a.md"),
            "# A\n\n```yaml title=\"a.yaml\"\nx: 1\n```\n\n\
             ```yaml title=\"a.yaml\" variant=\"v\" add\ny: 2\n```\n\n\
             ```yaml title=\"a.yaml\" variant=\"w\"\nx: 3\n```\n\n\
             ```yaml title=\"b.yaml\" variant=\"w\"\nz: 4\n```\n",
        )
        .unwrap();
        let book = crate::book::load(root).unwrap();
        let v = super::super::variant_tree(&book, &["v"]).unwrap();
        assert_eq!(v.get("a.yaml").unwrap().content, "x: 1\ny: 2\n");
        let w = super::super::variant_tree(&book, &["w"]).unwrap();
        assert_eq!(w.get("a.yaml").unwrap().content, "x: 3\n");
        assert_eq!(w.get("b.yaml").unwrap().content, "z: 4\n");
        let e = super::super::variant_tree(&book, &["v", "w"]).unwrap_err();
        assert!(
            format!("{e:#}").contains("variants `v` and `w` both give a.yaml"),
            "{e:#}"
        );
    }
}
