//! Prometheus counters for `metrics_listen`: process-wide atomics that the roles bump, served
//! as text exposition by one small blocking thread (it never touches the event loop).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

pub struct Counter {
    pub name: &'static str,
    pub help: &'static str,
    /// A gauge goes up and down; a counter only up.
    pub gauge: bool,
    value: AtomicU64,
}

impl Counter {
    const fn new(name: &'static str, help: &'static str, gauge: bool) -> Counter {
        Counter { name, help, gauge, value: AtomicU64::new(0) }
    }
    pub fn add(&self, n: u64) {
        self.value.fetch_add(n, Relaxed);
    }
    pub fn inc(&self) {
        self.add(1);
    }
    pub fn dec(&self) {
        let _ = self.value.fetch_update(Relaxed, Relaxed, |v| Some(v.saturating_sub(1)));
    }
    pub fn get(&self) -> u64 {
        self.value.load(Relaxed)
    }
}

pub static BYTES_RECEIVED: Counter =
    Counter::new("wugui_bytes_received_total", "Block bytes verified and written by this po.", false);
pub static BLOCKS_RECEIVED: Counter =
    Counter::new("wugui_blocks_received_total", "Blocks verified and written.", false);
pub static BYTES_SENT: Counter =
    Counter::new("wugui_bytes_sent_total", "Block bytes queued to peers (a po) or pos (a master).", false);
pub static BLOCKS_SENT: Counter = Counter::new("wugui_blocks_sent_total", "Blocks queued for sending.", false);
pub static VERIFY_FAILURES: Counter =
    Counter::new("wugui_verify_failures_total", "Blocks that failed their checksum.", false);
pub static PEER_ERRORS: Counter =
    Counter::new("wugui_peer_errors_total", "Peer links lost or refused, and pushes that could not be served.", false);
pub static RATE_LIMIT_WAITS: Counter =
    Counter::new("wugui_rate_limit_waits_total", "Times a connection waited for its token bucket.", false);
pub static TRANSFERS_ACTIVE: Counter = Counter::new("wugui_transfers_active", "Transfers in progress here.", true);
pub static TRANSFERS_PUBLISHED: Counter =
    Counter::new("wugui_transfers_published_total", "Transfers published on this po.", false);
pub static TRANSFERS_FAILED: Counter =
    Counter::new("wugui_transfers_failed_total", "Transfers that failed here.", false);
pub static HOOK_FAILURES: Counter = Counter::new("wugui_hook_failures_total", "Hooks that exited non-zero.", false);
pub static AUTH_GRANTED: Counter = Counter::new("wugui_auth_granted_total", "Masters granted a class (CAC).", false);
pub static AUTH_DENIED: Counter = Counter::new("wugui_auth_denied_total", "Masters refused (CAC).", false);
pub static VERIFY_OK: Counter = Counter::new("wugui_token_verified_total", "Tokens verified for pos (CAC).", false);
pub static VERIFY_DENIED: Counter = Counter::new("wugui_token_refused_total", "Tokens refused (CAC).", false);
pub static PROTOCOL_ERRORS: Counter =
    Counter::new("wugui_protocol_errors_total", "Connections closed for garbage or a protocol violation.", false);

static ALL: [&Counter; 16] = [
    &BYTES_RECEIVED,
    &BLOCKS_RECEIVED,
    &BYTES_SENT,
    &BLOCKS_SENT,
    &VERIFY_FAILURES,
    &PEER_ERRORS,
    &RATE_LIMIT_WAITS,
    &TRANSFERS_ACTIVE,
    &TRANSFERS_PUBLISHED,
    &TRANSFERS_FAILED,
    &HOOK_FAILURES,
    &AUTH_GRANTED,
    &AUTH_DENIED,
    &VERIFY_OK,
    &VERIFY_DENIED,
    &PROTOCOL_ERRORS,
];

/// The text exposition format.
pub fn render(role: &str) -> String {
    let mut o = String::new();
    for c in ALL {
        let kind = if c.gauge { "gauge" } else { "counter" };
        o += &format!(
            "# HELP {} {}\n# TYPE {} {kind}\n{}{{role=\"{role}\"}} {}\n",
            c.name,
            c.help,
            c.name,
            c.name,
            c.get()
        );
    }
    o
}

/// Serves `GET /metrics` on `addr` from a thread of its own. Returns the bound address.
pub fn serve(addr: SocketAddr, role: &'static str) -> std::io::Result<SocketAddr> {
    let l = TcpListener::bind(addr)?;
    let bound = l.local_addr()?;
    std::thread::Builder::new().name("metrics".into()).spawn(move || {
        for s in l.incoming().flatten() {
            let _ = answer(s, role);
        }
    })?;
    log::info!("event=metrics_listen role={role} addr={bound}");
    Ok(bound)
}

fn answer(mut s: std::net::TcpStream, role: &str) -> std::io::Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.set_write_timeout(Some(Duration::from_secs(2)))?;
    let mut buf = [0u8; 1024];
    let n = s.read(&mut buf)?;
    let req = String::from_utf8_lossy(&buf[..n]);
    let (status, body) = if req.starts_with("GET /metrics ") || req.starts_with("GET /metrics\r") {
        ("200 OK", render(role))
    } else {
        ("404 Not Found", "try /metrics\n".to_string())
    };
    let head = format!(
        "HTTP/1.0 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())?;
    s.write_all(body.as_bytes())
}
