//! A minimal blocking HTTP/1.1 client for loopback use (`Connection: close`), over plain TCP
//! or TLS (rustls, trusting only the certificate authority the test generated).
//!
//! The stack test only ever talks to nginx on the loopback address; a small client keeps the
//! build light and lets the test send exactly the request line it wants (raw, un-normalised
//! URIs, which is what routing samples need).

use anyhow::{Context, bail};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// TLS to the server: the certificate authorities to trust and the name to ask for (SNI,
/// and the name the certificate must carry).
#[derive(Clone)]
pub struct Tls {
    pub config: Arc<rustls::ClientConfig>,
    pub server_name: String,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tls({})", self.server_name)
    }
}

impl Tls {
    /// Trusts only the certificates in `ca_pem` (PEM), for `server_name`.
    pub fn trusting(ca_pem: &[u8], server_name: &str) -> anyhow::Result<Self> {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(ca_pem) {
            roots
                .add(c.context("a certificate in the CA file")?)
                .context("the CA certificate")?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Tls {
            config: Arc::new(config),
            server_name: server_name.to_string(),
        })
    }
}

/// Sends one request to `addr` (`host:port`). `uri` goes on the request line as given.
pub fn request(
    addr: &str,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
    timeout: Duration,
) -> anyhow::Result<Response> {
    request_over(addr, None, method, uri, headers, body, timeout)
}

/// [`request`], over TLS when `tls` is given.
pub fn request_over(
    addr: &str,
    tls: Option<&Tls>,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
    timeout: Duration,
) -> anyhow::Result<Response> {
    let tcp = TcpStream::connect(addr).with_context(|| format!("cannot connect to {addr}"))?;
    tcp.set_read_timeout(Some(timeout))?;
    tcp.set_write_timeout(Some(timeout))?;
    match tls {
        None => exchange(tcp, addr, method, uri, headers, body),
        Some(t) => {
            let name = rustls::pki_types::ServerName::try_from(t.server_name.clone())
                .with_context(|| format!("`{}` is no server name", t.server_name))?;
            let conn = rustls::ClientConnection::new(t.config.clone(), name)?;
            let stream = rustls::StreamOwned::new(conn, tcp);
            exchange(stream, &t.server_name, method, uri, headers, body)
        }
    }
}

fn exchange(
    mut stream: impl Read + Write,
    addr: &str,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> anyhow::Result<Response> {
    let host = addr.split(':').next().unwrap_or("localhost");
    let mut req = format!(
        "{method} {uri} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nUser-Agent: xtask-stack\r\n"
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(b) = body {
        req.push_str(&format!("Content-Length: {}\r\n", b.len()));
    } else if matches!(method, "POST" | "PUT") {
        req.push_str("Content-Length: 0\r\n");
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes())?;
    // A server may answer before the body is all sent (413, or an upstream error) and close:
    // then its answer, not the broken pipe, is what the request got.
    let sent = body
        .map_or(Ok(()), |b| stream.write_all(b))
        .and_then(|()| stream.flush());
    if let Err(e) = sent {
        let mut raw = Vec::new();
        let _ = stream.read_to_end(&mut raw);
        return parse(&raw).map_err(|_| {
            anyhow::Error::new(e).context(format!("{method} {uri}: sending the request"))
        });
    }
    let mut raw = Vec::new();
    match stream.read_to_end(&mut raw) {
        Ok(_) => {}
        // nginx closes a TLS connection without close_notify after `Connection: close`.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => {}
        Err(e) => {
            return Err(e).with_context(|| format!("{method} {uri}: reading the response"));
        }
    }
    parse(&raw).with_context(|| format!("{method} {uri}: bad response"))
}

fn parse(raw: &[u8]) -> anyhow::Result<Response> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of headers")?;
    let head = std::str::from_utf8(&raw[..end])?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().context("empty response")?;
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .context("no status")?
        .parse()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let rest = &raw[end + 4..];
    let chunked = headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    let body = if chunked {
        dechunk(rest)?
    } else {
        rest.to_vec()
    };
    Ok(Response {
        status,
        headers,
        body,
    })
}

fn dechunk(mut data: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let nl = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("bad chunk size line")?;
        let size_text = std::str::from_utf8(&data[..nl])?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)?;
        data = &data[nl + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size + 2 {
            bail!("truncated chunk");
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// Percent-encodes a path segment (everything but unreserved characters).
pub fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_chunked() {
        let r = parse(b"HTTP/1.1 200 OK\r\nContent-Type: x\r\n\r\nhello").unwrap();
        assert_eq!(
            (r.status, r.body.as_slice(), r.header("content-type")),
            (200, &b"hello"[..], Some("x"))
        );
        let r = parse(b"HTTP/1.1 404 NF\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n1\r\n!\r\n0\r\n\r\n").unwrap();
        assert_eq!((r.status, r.body.as_slice()), (404, &b"hello!"[..]));
        assert_eq!(enc("!a:b.c/d"), "%21a%3Ab.c%2Fd");
    }
}
