//! Test certificates: a certificate authority made for one run, and a server certificate it
//! signs, both with `openssl` (Debian package `openssl`). The client trusts only that authority.

use super::http;
use anyhow::{Context, ensure};
use std::path::Path;
use std::time::Duration;

/// Makes a CA in `work` and a server certificate for `name` (and 127.0.0.1) at `cert` (the
/// chain, server certificate first, as `fullchain.pem` is) with its key at `key`. Returns the
/// client side: trust in that CA only, asking for `name`.
pub fn issue(work: &Path, cert: &Path, key: &Path, name: &str) -> anyhow::Result<http::Tls> {
    std::fs::create_dir_all(work)?;
    for p in [cert, key] {
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d)?;
        }
    }
    let ca_key = work.join("ca.key");
    let ca_pem = work.join("ca.pem");
    let csr = work.join("server.csr");
    let ext = work.join("server.ext");
    std::fs::write(
        &ext,
        format!(
            "subjectAltName=DNS:{name},IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\n"
        ),
    )?;
    let p = |x: &Path| x.to_string_lossy().into_owned();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let subj = format!("/CN={name}");
    let mut steps: Vec<Vec<String>> = Vec::new();
    let mut ca: Vec<String> = ["req", "-x509", "-days", "2", "-subj", "/CN=stack test CA"]
        .iter()
        .chain(&ec)
        .map(|x| x.to_string())
        .collect();
    ca.extend(["-keyout".into(), p(&ca_key), "-out".into(), p(&ca_pem)]);
    steps.push(ca);
    let mut req: Vec<String> = ["req", "-new", "-subj", &subj]
        .iter()
        .chain(&ec)
        .map(|x| x.to_string())
        .collect();
    req.extend(["-keyout".into(), p(key), "-out".into(), p(&csr)]);
    steps.push(req);
    steps.push(
        [
            "x509",
            "-req",
            "-days",
            "2",
            "-in",
            &p(&csr),
            "-CA",
            &p(&ca_pem),
            "-CAkey",
            &p(&ca_key),
            "-CAcreateserial",
            "-extfile",
            &p(&ext),
            "-out",
            &p(cert),
        ]
        .iter()
        .map(|x| x.to_string())
        .collect(),
    );
    for argv in steps {
        let mut c = std::process::Command::new("openssl");
        c.args(&argv);
        let r = super::docker::run_with(c, None, Duration::from_secs(60))
            .context("openssl (Debian package `openssl`)")?;
        ensure!(
            r.ok,
            "openssl {} failed: {}",
            argv.join(" "),
            r.text().trim()
        );
    }
    // The chain a server sends: the server certificate, then the CA's.
    let mut chain = std::fs::read(cert)?;
    chain.extend(std::fs::read(&ca_pem)?);
    std::fs::write(cert, chain)?;
    http::Tls::trusting(&std::fs::read(&ca_pem)?, name)
}
