//! nginx's upstream `hash` balancers (`ngx_http_upstream_hash_module.c`), for a healthy
//! upstream (no failed, busy or `down` peers): `hash KEY consistent` (ketama: 160 points per
//! unit of weight on a CRC32 ring, compatible with Cache::Memcached::Fast) and plain `hash KEY`
//! (compatible with Cache::Memcached). Both name a peer by the `server` directive's first
//! argument exactly as written, which is what nginx hashes.

/// Standard IEEE/zlib CRC32, as `ngx_crc32_long`.
pub fn crc32(data: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, e) in t.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xedb8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
            *e = c;
        }
        t
    });
    let mut c = 0xffff_ffffu32;
    for &b in data {
        c = table[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8);
    }
    c ^ 0xffff_ffff
}

/// One `server` line of an upstream, as the balancer sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// The first argument of `server`, exactly as written (`unix:/sockets/x.sock`, `host:80`).
    pub name: String,
    pub weight: u32,
    pub down: bool,
}

/// The ketama ring of an upstream: sorted `(point, peer index)`, duplicates removed.
#[derive(Debug, Clone)]
pub struct Ring {
    points: Vec<(u32, usize)>,
}

impl Ring {
    pub fn new(peers: &[Peer]) -> Ring {
        let mut points = Vec::new();
        for (idx, p) in peers.iter().enumerate() {
            let s = p.name.as_bytes();
            let (host, port): (&[u8], &[u8]) =
                if s.len() >= 5 && s[..5].eq_ignore_ascii_case(b"unix:") {
                    (&s[5..], b"")
                } else {
                    let mut hp = (s, &b""[..]);
                    for j in 0..s.len() {
                        let c = s[s.len() - 1 - j];
                        if c == b':' {
                            hp = (&s[..s.len() - 1 - j], &s[s.len() - j..]);
                            break;
                        }
                        if !c.is_ascii_digit() {
                            break;
                        }
                    }
                    hp
                };
            let mut base = Vec::with_capacity(host.len() + port.len() + 5);
            base.extend_from_slice(host);
            base.push(0);
            base.extend_from_slice(port);
            let mut prev: u32 = 0;
            for _ in 0..p.weight.saturating_mul(160) {
                let mut buf = base.clone();
                buf.extend_from_slice(&prev.to_le_bytes());
                let h = crc32(&buf);
                points.push((h, idx));
                prev = h;
            }
        }
        // nginx sorts with ngx_sort (stable insertion sort) on the hash only, then drops
        // later equal hashes.
        points.sort_by_key(|&(h, _)| h);
        points.dedup_by_key(|&mut (h, _)| h);
        Ring { points }
    }

    pub fn len(&self) -> usize {
        self.points.len()
    }

    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// The peer index nginx picks for `key` (all peers healthy); None when the ring is empty or
    /// every peer is down.
    pub fn pick(&self, peers: &[Peer], key: &[u8]) -> Option<usize> {
        if self.points.is_empty() {
            return None;
        }
        let h = crc32(key);
        let start = self.points.partition_point(|&(p, _)| p < h);
        for i in start..=start + 20 {
            let (_, idx) = self.points[i % self.points.len()];
            // Among peers sharing this name, smooth weighted round robin starts with the
            // first non-down one.
            let name = &peers[idx].name;
            if let Some(c) = peers.iter().position(|p| &p.name == name && !p.down) {
                return Some(c);
            }
        }
        None
    }
}

/// Plain `hash KEY` (no `consistent`). None means nginx falls back to round robin.
pub fn plain_pick(peers: &[Peer], key: &[u8]) -> Option<usize> {
    let total: u64 = peers.iter().map(|p| u64::from(p.weight)).sum();
    if peers.len() < 2 || key.is_empty() || total == 0 {
        return None;
    }
    let mut acc: u64 = 0;
    for rehash in 0..=20u32 {
        let mut s = Vec::new();
        if rehash > 0 {
            s.extend_from_slice(rehash.to_string().as_bytes());
        }
        s.extend_from_slice(key);
        acc += u64::from((crc32(&s) >> 16) & 0x7fff);
        let mut w = acc % total;
        let mut i = 0;
        while w >= u64::from(peers[i].weight) {
            w -= u64::from(peers[i].weight);
            i += 1;
        }
        if !peers[i].down {
            return Some(i);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peers(names: &[&str], weight: u32) -> Vec<Peer> {
        names
            .iter()
            .map(|n| Peer {
                name: (*n).into(),
                weight,
                down: false,
            })
            .collect()
    }

    fn pick<'a>(ps: &'a [Peer], key: &str) -> &'a str {
        let r = Ring::new(ps);
        &ps[r.pick(ps, key.as_bytes()).unwrap()].name
    }

    #[test]
    fn crc() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
    }

    /// `cloudflare/pingora` `pingora-ketama` `matches_nginx_sample` (observed from real nginx).
    #[test]
    fn pingora_nginx_sample() {
        let ps = peers(&["127.0.0.1:7777", "127.0.0.1:7778"], 1);
        for (k, want) in [
            ("/some/path", "127.0.0.1:7778"),
            ("/some/longer/path", "127.0.0.1:7777"),
            ("/sad/zaidoon", "127.0.0.1:7778"),
            ("/g", "127.0.0.1:7777"),
            (
                "/pingora/team/is/cool/and/this/is/a/long/uri",
                "127.0.0.1:7778",
            ),
            ("/i/am/not/confident/in/this/code", "127.0.0.1:7777"),
        ] {
            assert_eq!(pick(&ps, k), want, "{k}");
        }
    }

    /// Rows of `pingora-ketama/test-data/sample-nginx-upstream.csv` (real nginx, 9 × weight 100).
    #[test]
    fn pingora_csv_rows() {
        let names: Vec<String> = (1..=9).map(|i| format!("10.0.0.{i}:443")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let ps = peers(&names, 100);
        for (k, want) in [
            ("/81fa1d251d605775d647b5b55565e71526d4cef6", "10.0.0.7:443"),
            ("/2fec328e6ccdda6a7edf329f9f780e546ea183b4", "10.0.0.5:443"),
            ("/d9c4bc3cc4517c629e8f4c911c2fd8baf260ae65", "10.0.0.1:443"),
            ("/fe5199bdfeee5cd431ae7e9f77f178164f9995a0", "10.0.0.9:443"),
        ] {
            assert_eq!(pick(&ps, k), want, "{k}");
        }
    }

    #[test]
    fn computed_vectors() {
        let ps = peers(
            &[
                "synapse-worker1:8083",
                "synapse-worker2:8083",
                "synapse-worker3:8083",
            ],
            1,
        );
        assert_eq!(Ring::new(&ps).len(), 480);
        assert_eq!(pick(&ps, "@alice:example.com"), "synapse-worker3:8083");
        assert_eq!(pick(&ps, "@bob:example.com"), "synapse-worker1:8083");
        assert_eq!(pick(&ps, "!abc:example.com"), "synapse-worker2:8083");
        assert_eq!(
            ps[plain_pick(&ps, b"@alice:example.com").unwrap()].name,
            "synapse-worker2:8083"
        );
        assert_eq!(
            ps[plain_pick(&ps, b"@bob:example.com").unwrap()].name,
            "synapse-worker3:8083"
        );
        let ps = vec![
            Peer {
                name: "unix:/run/synapse/w1.sock".into(),
                weight: 1,
                down: false,
            },
            Peer {
                name: "unix:/run/synapse/w2.sock".into(),
                weight: 2,
                down: false,
            },
        ];
        assert_eq!(pick(&ps, "@alice:example.com"), "unix:/run/synapse/w1.sock");
        assert_eq!(pick(&ps, "@bob:example.com"), "unix:/run/synapse/w2.sock");
    }
}
