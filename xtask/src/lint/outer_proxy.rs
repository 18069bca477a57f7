//! The reader's own reverse proxy (the tree's `outer-proxy/` files, see
//! [`crate::outer_proxy`]) against the deployment it stands in front of: its body limit is at
//! least Synapse's `max_upload_size` (each in its own program's units), and it passes requests
//! to the address where the Compose file publishes nginx, and nowhere else. The stack test then
//! runs both files for real.

use super::TreeView;
use crate::diagnostics::Diagnostic;
use crate::outer_proxy::{self as model, Kind};

pub fn check(view: &TreeView<'_>) -> Vec<Diagnostic> {
    let mut diags = Vec::new();
    let published = published(view);
    for kind in Kind::ALL {
        let Some(f) = view.file(kind.file()) else {
            continue;
        };
        let at = |line: usize| f.md_loc(line);
        match model::body_limit(kind, &f.content) {
            Ok(limit) => {
                if let Some((max, max_line)) = model::max_upload_size(view.tree)
                    && limit < max
                {
                    let line = model::body_limit_line(kind, &f.content).unwrap_or(1);
                    let mut d = Diagnostic::error(
                        "outer::body-limit",
                        format!(
                            "{} accepts bodies of {limit} bytes at most, less than Synapse's \
                             max_upload_size ({max} bytes): larger uploads would fail with 413 \
                             before reaching the deployment",
                            kind.label()
                        ),
                        &at(line),
                    );
                    if let Some(l) = max_line {
                        d = d.with_note(format!(
                            "max_upload_size is set at {}",
                            view.loc("synapse/homeserver.yaml", l)
                        ));
                    }
                    diags.push(d);
                }
            }
            Err(e) => diags.push(Diagnostic::error(
                "outer::body-limit",
                format!("{e:#}"),
                &at(model::body_limit_line(kind, &f.content).unwrap_or(1)),
            )),
        }
        let ups = model::upstreams(kind, &f.content);
        if ups.is_empty() {
            diags.push(Diagnostic::error(
                "outer::upstream",
                format!(
                    "{} passes no request to the deployment: no {}",
                    kind.file(),
                    match kind {
                        Kind::Nginx => "`proxy_pass http://ADDRESS;`",
                        Kind::Caddy => "`reverse_proxy ... ADDRESS`",
                    }
                ),
                &at(1),
            ));
        }
        let Some(published) = &published else {
            continue;
        };
        for (addr, line) in ups {
            if !published.contains(&addr) {
                diags.push(Diagnostic::error(
                    "outer::upstream",
                    format!(
                        "{} passes requests to {addr}, but the Compose file publishes nginx at {}",
                        kind.label(),
                        published.join(", ")
                    ),
                    &at(line),
                ));
            }
        }
    }
    diags
}

/// The `host:port` addresses where the Compose file publishes an nginx service (an address of
/// `0.0.0.0` or none reads as `127.0.0.1`: where a proxy on the same host reaches it).
fn published(view: &TreeView<'_>) -> Option<Vec<String>> {
    let compose = view.compose()?;
    let mut out = Vec::new();
    for s in &compose.services {
        if !s.image.as_ref().is_some_and(|i| {
            i.text
                .split([':', '@'])
                .next()
                .unwrap_or("")
                .ends_with("nginx")
        }) {
            continue;
        }
        let Some(ports) = s.node.get("ports") else {
            continue;
        };
        for (p, _) in ports.str_nodes() {
            let parts: Vec<&str> = p.split(':').collect();
            let (ip, port) = match parts.as_slice() {
                [ip, host, _] => (*ip, *host),
                [host, _] => ("", *host),
                _ => continue,
            };
            let ip = if ip.is_empty() || ip == "0.0.0.0" {
                "127.0.0.1"
            } else {
                ip
            };
            out.push(format!("{ip}:{port}"));
        }
    }
    Some(out)
}
