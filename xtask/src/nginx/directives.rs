//! The directive table: where each directive the book may use is allowed and how many arguments
//! it takes. Masks follow nginx's `ngx_command_t` (`NGX_CONF_TAKE12`, `NGX_HTTP_LOC_CONF`, ...)
//! as crossplane's analyzer copies them. Children of `map`, `types`, `geo` and `split_clients`
//! are key/value pairs, not directives, and are not checked here.

use super::ast::Directive;

// Context bits.
pub const MAIN: u32 = 1 << 0;
pub const EVENTS: u32 = 1 << 1;
pub const HTTP: u32 = 1 << 2;
pub const SRV: u32 = 1 << 3;
pub const LOC: u32 = 1 << 4;
pub const UPS: u32 = 1 << 5;
pub const SIF: u32 = 1 << 6;
pub const LIF: u32 = 1 << 7;
pub const LMT: u32 = 1 << 8;
pub const STREAM: u32 = 1 << 9;

// Argument bits: TAKE0..TAKE7 are bits 0..7 (bit n = exactly n arguments).
pub const NOARGS: u32 = 1 << 0;
pub const TAKE1: u32 = 1 << 1;
pub const TAKE2: u32 = 1 << 2;
pub const TAKE3: u32 = 1 << 3;
pub const TAKE4: u32 = 1 << 4;
pub const TAKE12: u32 = TAKE1 | TAKE2;
pub const TAKE13: u32 = TAKE1 | TAKE3;
pub const TAKE23: u32 = TAKE2 | TAKE3;
pub const TAKE123: u32 = TAKE1 | TAKE2 | TAKE3;
pub const TAKE1234: u32 = TAKE1 | TAKE2 | TAKE3 | TAKE4;
pub const BLOCK: u32 = 1 << 10;
pub const FLAG: u32 = 1 << 11;
pub const ANY: u32 = 1 << 12;
pub const MORE1: u32 = 1 << 13;
pub const MORE2: u32 = 1 << 14;

const H: u32 = HTTP | SRV | LOC;
const HI: u32 = HTTP | SRV | LOC | LIF;

/// `(name, contexts, args)`. A directive may appear several times with different masks.
pub const TABLE: &[(&str, u32, u32)] = &[
    // core / main
    ("user", MAIN, TAKE12),
    ("worker_processes", MAIN, TAKE1),
    ("worker_rlimit_nofile", MAIN, TAKE1),
    ("worker_shutdown_timeout", MAIN, TAKE1),
    ("pid", MAIN, TAKE1),
    ("daemon", MAIN, FLAG),
    ("master_process", MAIN, FLAG),
    ("pcre_jit", MAIN, FLAG),
    ("load_module", MAIN, TAKE1),
    ("env", MAIN, TAKE1),
    ("error_log", MAIN | HTTP | SRV | LOC | STREAM, MORE1),
    (
        "include",
        MAIN | EVENTS | HTTP | SRV | LOC | UPS | SIF | LIF | LMT | STREAM,
        TAKE1,
    ),
    ("events", MAIN, BLOCK | NOARGS),
    ("http", MAIN, BLOCK | NOARGS),
    ("stream", MAIN, BLOCK | NOARGS),
    // events
    ("worker_connections", EVENTS, TAKE1),
    ("multi_accept", EVENTS, FLAG),
    ("use", EVENTS, TAKE1),
    ("accept_mutex", EVENTS, FLAG),
    // http core
    ("server", HTTP | STREAM, BLOCK | NOARGS),
    ("server", UPS, MORE1),
    ("location", SRV | LOC, BLOCK | TAKE12),
    ("listen", SRV, MORE1),
    ("server_name", SRV, MORE1),
    ("server_tokens", H, TAKE1),
    ("root", H | LIF, TAKE1),
    ("alias", LOC, TAKE1),
    ("index", H, MORE1),
    ("try_files", SRV | LOC, MORE2),
    ("default_type", H, TAKE1),
    ("types", H, BLOCK | NOARGS),
    ("types_hash_max_size", H, TAKE1),
    ("types_hash_bucket_size", H, TAKE1),
    ("sendfile", H | LIF, FLAG),
    ("tcp_nopush", H, FLAG),
    ("tcp_nodelay", H, FLAG),
    ("keepalive_timeout", H, TAKE12),
    ("keepalive_requests", H, TAKE1),
    ("client_max_body_size", H, TAKE1),
    ("client_body_buffer_size", H, TAKE1),
    ("client_body_timeout", H, TAKE1),
    ("client_header_timeout", HTTP | SRV, TAKE1),
    ("client_body_temp_path", H, TAKE1234),
    ("large_client_header_buffers", HTTP | SRV, TAKE2),
    ("send_timeout", H, TAKE1),
    ("merge_slashes", HTTP | SRV, FLAG),
    ("underscores_in_headers", HTTP | SRV, FLAG),
    ("ignore_invalid_headers", HTTP | SRV, FLAG),
    ("server_names_hash_bucket_size", HTTP, TAKE1),
    ("server_names_hash_max_size", HTTP, TAKE1),
    ("variables_hash_max_size", HTTP, TAKE1),
    ("variables_hash_bucket_size", HTTP, TAKE1),
    ("resolver", H, MORE1),
    ("resolver_timeout", H, TAKE1),
    ("internal", LOC, NOARGS),
    ("limit_except", LOC, BLOCK | MORE1),
    ("error_page", H | LIF, MORE2),
    ("absolute_redirect", H, FLAG),
    ("port_in_redirect", H, FLAG),
    ("http2", HTTP | SRV, FLAG),
    ("chunked_transfer_encoding", H, FLAG),
    ("reset_timedout_connection", H, FLAG),
    ("log_not_found", H, FLAG),
    ("satisfy", H, TAKE1),
    // log
    ("log_format", HTTP, MORE2),
    ("access_log", H | LIF | LMT, MORE1),
    ("open_log_file_cache", H, TAKE1234),
    // rewrite
    ("return", SRV | SIF | LOC | LIF, TAKE12),
    ("rewrite", SRV | SIF | LOC | LIF, TAKE23),
    ("set", SRV | SIF | LOC | LIF, TAKE2),
    ("if", SRV | LOC, BLOCK | MORE1),
    ("break", SRV | SIF | LOC | LIF, NOARGS),
    ("rewrite_log", HTTP | SRV | SIF | LOC | LIF, FLAG),
    (
        "uninitialized_variable_warn",
        HTTP | SRV | SIF | LOC | LIF,
        FLAG,
    ),
    // map / geo / split_clients
    ("map", HTTP, BLOCK | TAKE2),
    ("map_hash_max_size", HTTP, TAKE1),
    ("map_hash_bucket_size", HTTP, TAKE1),
    ("geo", HTTP, BLOCK | TAKE12),
    ("split_clients", HTTP, BLOCK | TAKE2),
    // access / realip / headers
    ("allow", H | LMT, TAKE1),
    ("deny", H | LMT, TAKE1),
    ("set_real_ip_from", H, TAKE1),
    ("real_ip_header", H, TAKE1),
    ("real_ip_recursive", H, FLAG),
    ("add_header", HI, TAKE23),
    ("expires", HI, TAKE12),
    ("charset", HI, TAKE1),
    ("gzip", HI, FLAG),
    ("gzip_types", H, MORE1),
    ("gzip_vary", H, FLAG),
    ("gzip_proxied", H, MORE1),
    ("gzip_comp_level", H, TAKE1),
    ("gzip_min_length", H, TAKE1),
    ("limit_req_zone", HTTP, TAKE34),
    ("limit_req", H, TAKE123),
    ("limit_req_status", H, TAKE1),
    ("limit_conn_zone", HTTP, TAKE2),
    ("limit_conn", H, TAKE2),
    ("stub_status", SRV | LOC, NOARGS | TAKE1),
    // upstream
    ("upstream", HTTP | STREAM, BLOCK | TAKE1),
    ("hash", UPS, TAKE12),
    ("ip_hash", UPS, NOARGS),
    ("least_conn", UPS, NOARGS),
    ("random", UPS, NOARGS | TAKE12),
    ("keepalive", UPS, TAKE1),
    ("keepalive_timeout", UPS, TAKE1),
    ("keepalive_requests", UPS, TAKE1),
    ("zone", UPS, TAKE12),
    // proxy
    ("proxy_pass", LOC | LIF | LMT | SRV, TAKE1),
    ("proxy_set_header", H, TAKE2),
    ("proxy_http_version", H, TAKE1),
    ("proxy_read_timeout", H, TAKE1),
    ("proxy_send_timeout", H, TAKE1),
    ("proxy_connect_timeout", H, TAKE1),
    ("proxy_buffering", H, FLAG),
    ("proxy_request_buffering", H, FLAG),
    ("proxy_buffer_size", H, TAKE1),
    ("proxy_buffers", H, TAKE2),
    ("proxy_busy_buffers_size", H, TAKE1),
    ("proxy_max_temp_file_size", H, TAKE1),
    ("proxy_redirect", H, TAKE12),
    ("proxy_next_upstream", H, MORE1),
    ("proxy_next_upstream_tries", H, TAKE1),
    ("proxy_next_upstream_timeout", H, TAKE1),
    ("proxy_intercept_errors", H, FLAG),
    ("proxy_hide_header", H, TAKE1),
    ("proxy_pass_header", H, TAKE1),
    ("proxy_ignore_headers", H, MORE1),
    ("proxy_pass_request_headers", H, FLAG),
    ("proxy_pass_request_body", H, FLAG),
    ("proxy_cache", H, TAKE1),
    ("proxy_temp_path", H, TAKE1234),
    ("proxy_socket_keepalive", H, FLAG),
    // ssl
    ("ssl_certificate", HTTP | SRV, TAKE1),
    ("ssl_certificate_key", HTTP | SRV, TAKE1),
    ("ssl_protocols", HTTP | SRV, MORE1),
    ("ssl_ciphers", HTTP | SRV, TAKE1),
    ("ssl_prefer_server_ciphers", HTTP | SRV, FLAG),
    ("ssl_session_cache", HTTP | SRV, TAKE12),
    ("ssl_session_timeout", HTTP | SRV, TAKE1),
    ("ssl_session_tickets", HTTP | SRV, FLAG),
    ("ssl_dhparam", HTTP | SRV, TAKE1),
    ("ssl_ecdh_curve", HTTP | SRV, TAKE1),
    ("ssl_stapling", HTTP | SRV, FLAG),
    ("ssl_stapling_verify", HTTP | SRV, FLAG),
    ("ssl_trusted_certificate", HTTP | SRV, TAKE1),
];

pub const TAKE34: u32 = TAKE3 | TAKE4;

/// Blocks whose children are data (key value pairs), not directives.
pub const DATA_BLOCKS: &[&str] = &["map", "types", "geo", "split_clients"];

/// The context bit of a directive's parent chain (innermost decides).
pub fn context_of(parents: &[&Directive]) -> u32 {
    let mut ctx = MAIN;
    for p in parents {
        ctx = match (ctx, p.name.as_str()) {
            (MAIN, "events") => EVENTS,
            (MAIN, "http") => HTTP,
            (MAIN, "stream") => STREAM,
            (HTTP, "server") => SRV,
            (HTTP, "upstream") => UPS,
            (SRV | LOC, "location") => LOC,
            (SRV, "if") => SIF,
            (LOC, "if") => LIF,
            (LOC, "limit_except") => LMT,
            (c, _) => c,
        };
    }
    ctx
}

pub fn is_known(name: &str) -> bool {
    TABLE.iter().any(|(n, _, _)| *n == name)
}

/// Checks one directive against the table; `None` when fine, else nginx's message.
pub fn check(d: &Directive, parents: &[&Directive]) -> Option<String> {
    let ctx = context_of(parents);
    let usages: Vec<&(&str, u32, u32)> = TABLE.iter().filter(|(n, _, _)| *n == d.name).collect();
    if usages.is_empty() {
        return Some(format!("unknown directive \"{}\"", d.name));
    }
    let here: Vec<_> = usages.iter().filter(|(_, c, _)| c & ctx != 0).collect();
    if here.is_empty() {
        return Some(format!("\"{}\" directive is not allowed here", d.name));
    }
    let n = d.args.len();
    let mut arg_msg = None;
    for (_, _, mask) in here {
        let is_block = mask & BLOCK != 0;
        if is_block != d.block.is_some() {
            arg_msg = Some(if is_block {
                format!("directive \"{}\" has no opening \"{{\"", d.name)
            } else {
                format!("directive \"{}\" is not terminated by \";\"", d.name)
            });
            continue;
        }
        let ok = (n <= 7 && mask >> n & 1 == 1)
            || (mask & FLAG != 0 && n == 1 && matches!(d.args[0].text.as_str(), "on" | "off"))
            || mask & ANY != 0
            || (mask & MORE1 != 0 && n >= 1)
            || (mask & MORE2 != 0 && n >= 2);
        if ok {
            return None;
        }
        if mask & FLAG != 0 && n == 1 {
            arg_msg = Some(format!(
                "invalid value \"{}\" in \"{}\" directive, it must be \"on\" or \"off\"",
                d.args[0].text, d.name
            ));
        } else if arg_msg.is_none() {
            arg_msg = Some(format!(
                "invalid number of arguments in \"{}\" directive",
                d.name
            ));
        }
    }
    arg_msg
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nginx::ast::{parse, walk};

    fn msgs(src: &str) -> Vec<String> {
        let d = parse("f", src.as_bytes()).unwrap();
        let mut out = Vec::new();
        walk(&d, &mut |d, parents| {
            if parents
                .last()
                .is_some_and(|p| DATA_BLOCKS.contains(&p.name.as_str()))
            {
                return;
            }
            if let Some(m) = check(d, parents) {
                out.push(m);
            }
        });
        out
    }

    #[test]
    fn table() {
        assert!(msgs("http { upstream u { hash $uri consistent; server unix:/a.sock; } map $a $b { x y; } }").is_empty());
        assert_eq!(
            msgs("http { hash $uri; }"),
            ["\"hash\" directive is not allowed here"]
        );
        assert_eq!(
            msgs("http { upstream u { hash; } }"),
            ["invalid number of arguments in \"hash\" directive"]
        );
        assert_eq!(msgs("http { foo; }"), ["unknown directive \"foo\""]);
        assert_eq!(msgs("http { sendfile yes; }").len(), 1);
        assert_eq!(
            msgs("http { server; }"),
            ["directive \"server\" has no opening \"{\""]
        );
        assert!(msgs("http { server { location / { if ($a) { return 403; } } } }").is_empty());
    }
}
