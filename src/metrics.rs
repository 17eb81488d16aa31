//! `/metrics`: the Prometheus text exposition of a daemon's counters (the machine's [`Stats`]
//! plus what the reactor counts itself), and the HTTP reply that carries it. Pure: the reactor
//! reads the request and writes the reply like any other connection.

use crate::proto::sites::SiteLink;
use crate::proto::Stats;

/// What one scrape shows.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    pub machine: Stats,
    /// Times a connection waited for its token bucket (counted by the reactor).
    pub rate_limit_waits: u64,
    /// Bytes per site link (a CAC: summed over its masters' reports).
    pub sites: Vec<SiteLink>,
}

struct Metric {
    name: &'static str,
    help: &'static str,
    /// A gauge goes up and down; a counter only up.
    gauge: bool,
    get: fn(&Sample) -> u64,
}

const fn counter(name: &'static str, help: &'static str, get: fn(&Sample) -> u64) -> Metric {
    Metric { name, help, gauge: false, get }
}

static ALL: [Metric; 17] = [
    counter("wugui_bytes_received_total", "Block bytes verified and written by this po.", |s| s.machine.bytes_received),
    counter("wugui_blocks_received_total", "Blocks verified and written.", |s| s.machine.blocks_received),
    counter("wugui_bytes_sent_total", "Block bytes queued to peers (a po) or pos (a master).", |s| {
        s.machine.bytes_sent
    }),
    counter("wugui_blocks_sent_total", "Blocks queued for sending.", |s| s.machine.blocks_sent),
    counter("wugui_verify_failures_total", "Blocks that failed their checksum.", |s| s.machine.verify_failures),
    counter("wugui_peer_errors_total", "Peer links lost or refused, and pushes that could not be served.", |s| {
        s.machine.peer_errors
    }),
    counter("wugui_rate_limit_waits_total", "Times a connection waited for its token bucket.", |s| s.rate_limit_waits),
    Metric {
        name: "wugui_transfers_active",
        help: "Transfers in progress here.",
        gauge: true,
        get: |s| s.machine.transfers_active,
    },
    counter("wugui_transfers_published_total", "Transfers published on this po.", |s| s.machine.transfers_published),
    counter("wugui_transfers_unchanged_total", "Pushes that changed nothing on this po.", |s| {
        s.machine.transfers_unchanged
    }),
    counter("wugui_transfers_failed_total", "Transfers that failed here.", |s| s.machine.transfers_failed),
    counter("wugui_hook_failures_total", "Hooks that exited non-zero.", |s| s.machine.hook_failures),
    counter("wugui_auth_granted_total", "Masters granted a class (CAC).", |s| s.machine.auth_granted),
    counter("wugui_auth_denied_total", "Masters refused (CAC).", |s| s.machine.auth_denied),
    counter("wugui_token_verified_total", "Tokens verified for pos (CAC).", |s| s.machine.tokens_verified),
    counter("wugui_token_refused_total", "Tokens refused (CAC).", |s| s.machine.tokens_refused),
    counter("wugui_protocol_errors_total", "Connections closed for garbage or a protocol violation.", |s| {
        s.machine.protocol_errors
    }),
];

/// The text exposition format.
pub fn render(role: &str, s: &Sample) -> String {
    let mut o = String::new();
    for c in &ALL {
        let kind = if c.gauge { "gauge" } else { "counter" };
        let name = c.name;
        o += &format!("# HELP {name} {}\n# TYPE {name} {kind}\n{name}{{role=\"{role}\"}} {}\n", c.help, (c.get)(s));
    }
    // Labelled by site names, which are [A-Za-z0-9_.-] (`sites::check_label`): no escaping.
    let name = "wugui_site_bytes_total";
    o += &format!("# HELP {name} Block bytes that landed per site link (from the sender's site to the receiver's), as masters reported them.\n# TYPE {name} counter\n");
    for l in &s.sites {
        o += &format!("{name}{{role=\"{role}\",from=\"{}\",to=\"{}\"}} {}\n", l.from, l.to, l.bytes);
    }
    o
}

/// Whether `req` (the bytes read so far) is a whole request head, or all we will read of one.
pub fn request_done(req: &[u8], max: usize) -> bool {
    req.len() >= max || req.windows(4).any(|w| w == b"\r\n\r\n")
}

/// The whole HTTP reply to `req`: the metrics for `GET /metrics`, a 404 for anything else.
pub fn reply(req: &[u8], role: &str, s: &Sample) -> Vec<u8> {
    let (status, body) = if req.starts_with(b"GET /metrics ") || req.starts_with(b"GET /metrics\r") {
        ("200 OK", render(role, s))
    } else {
        ("404 Not Found", "try /metrics\n".to_string())
    };
    let head = format!(
        "HTTP/1.0 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    [head.into_bytes(), body.into_bytes()].concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_metric_with_its_role() {
        let s = Sample {
            machine: Stats { bytes_received: 7, transfers_active: 2, ..Stats::default() },
            rate_limit_waits: 3,
            sites: Vec::new(),
        };
        let t = render("po", &s);
        assert_eq!(t.lines().count(), 17 * 3 + 2);
        assert!(t.contains("# HELP wugui_bytes_received_total Block bytes verified and written by this po.\n"));
        assert!(t.contains("wugui_bytes_received_total{role=\"po\"} 7\n"));
        assert!(t.contains("# TYPE wugui_transfers_active gauge\nwugui_transfers_active{role=\"po\"} 2\n"));
        assert!(t.contains("wugui_rate_limit_waits_total{role=\"po\"} 3\n"));
        assert!(t.contains("# TYPE wugui_protocol_errors_total counter\n"));
        let link = SiteLink { from: "master".into(), to: "bj".into(), bytes: 9 };
        let t = render("cac", &Sample { sites: vec![link], ..Sample::default() });
        assert!(t.contains("# TYPE wugui_site_bytes_total counter\n"), "{t}");
        assert!(t.contains("\nwugui_site_bytes_total{role=\"cac\",from=\"master\",to=\"bj\"} 9\n"), "{t}");
    }

    #[test]
    fn answers_get_metrics_and_404_otherwise() {
        let s = Sample::default();
        let ok = String::from_utf8(reply(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", "cac", &s)).unwrap();
        assert!(ok.starts_with("HTTP/1.0 200 OK\r\n") && ok.contains("role=\"cac\""), "{ok}");
        let (head, body) = ok.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
        assert!(String::from_utf8(reply(b"GET / HTTP/1.0\r\n\r\n", "cac", &s)).unwrap().starts_with("HTTP/1.0 404"));
        assert!(!request_done(b"GET /metrics HTTP/1.0\r\n", 8192));
        assert!(request_done(b"GET /metrics HTTP/1.0\r\n\r\n", 8192));
        assert!(request_done(&[b'x'; 8192], 8192));
    }
}
