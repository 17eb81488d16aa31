//! `/etc/resolv.conf` as glibc reads it (resolv.conf(5)), for the lines wugui uses:
//!
//! - `nameserver IP`: up to [`MAX_SERVERS`], in order; none at all means `127.0.0.1`.
//! - `search D1 D2 ...` (up to [`MAX_SEARCH`]) and `domain D` (a search list of one): the last
//!   such line wins.
//! - `options timeout:N` (seconds a server gets, 1..=30, default 5), `attempts:N` (rounds over
//!   the servers, 1..=5, default 2), `ndots:N` (0..=15, default 1); other options are ignored.
//!
//! Lines starting with `#` or `;` are comments; lines wugui does not understand are skipped, as
//! glibc skips them. Not read: `RES_OPTIONS` and `LOCALDOMAIN` from the environment, `sortlist`,
//! and the domain of the host's own name when there is no `search` line.
//!
//! Test-only: with `allow_port` (the file came from `WUGUI_RESOLV_CONF`) a nameserver may carry a
//! port, `nameserver 127.0.0.1:5353` or `nameserver [::1]:5353`, so that tests can run a server
//! on port 0. The system file never takes one, as glibc never does.

use core::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

pub const MAX_SERVERS: usize = 3;
pub const MAX_SEARCH: usize = 6;
pub const DEFAULT_TIMEOUT_S: u64 = 5;
pub const DEFAULT_ATTEMPTS: u32 = 2;
pub const DEFAULT_NDOTS: usize = 1;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvConf {
    pub servers: Vec<SocketAddr>,
    pub search: Vec<String>,
    pub ndots: usize,
    pub timeout: Duration,
    pub attempts: u32,
}

impl Default for ResolvConf {
    fn default() -> Self {
        ResolvConf {
            servers: vec![SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 53)],
            search: Vec::new(),
            ndots: DEFAULT_NDOTS,
            timeout: Duration::from_secs(DEFAULT_TIMEOUT_S),
            attempts: DEFAULT_ATTEMPTS,
        }
    }
}

impl ResolvConf {
    /// The longest a lookup may wait for servers that never answer: each of `attempts` rounds
    /// gives each server `timeout`.
    pub fn max_wait(&self) -> Duration {
        self.timeout * self.attempts * self.servers.len().max(1) as u32
    }
}

/// Parses resolv.conf text; it never fails (a bad line is skipped).
pub fn parse(text: &str, allow_port: bool) -> ResolvConf {
    let mut c = ResolvConf::default();
    let mut servers = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let Some(key) = words.next() else { continue };
        match key {
            k if k.starts_with('#') || k.starts_with(';') => {}
            "nameserver" => {
                if let Some(sa) = words.next().and_then(|w| server(w, allow_port)) {
                    if servers.len() < MAX_SERVERS {
                        servers.push(sa);
                    }
                }
            }
            "domain" => c.search = words.next().filter(|d| is_domain(d)).map(dotless).into_iter().collect(),
            "search" => c.search = words.filter(|d| is_domain(d)).map(dotless).take(MAX_SEARCH).collect(),
            "options" => {
                for w in words {
                    let Some((opt, n)) = w.split_once(':') else { continue };
                    let Ok(n) = n.parse::<u64>() else { continue };
                    match opt {
                        "timeout" => c.timeout = Duration::from_secs(n.clamp(1, 30)),
                        "attempts" => c.attempts = n.clamp(1, 5) as u32,
                        "ndots" => c.ndots = n.min(15) as usize,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    if !servers.is_empty() {
        c.servers = servers;
    }
    c
}

fn server(w: &str, allow_port: bool) -> Option<SocketAddr> {
    if let Ok(ip) = w.parse::<IpAddr>() {
        return Some(SocketAddr::new(ip, 53));
    }
    if allow_port {
        return w.parse::<SocketAddr>().ok().filter(|s| s.port() != 0);
    }
    None
}

fn is_domain(d: &str) -> bool {
    d != "." && super::msg::name_to_wire(d).is_ok()
}

fn dotless(d: &str) -> String {
    d.trim_end_matches('.').to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lines_wugui_reads() {
        let text = "# comment\n; also\nnameserver 10.0.0.53\nnameserver fd00::53\nnameserver bogus\n\
                    domain first.example\nsearch Corp.Example. lab.example bad..name\n\
                    options ndots:2 timeout:1 attempts:3 rotate edns0 timeout:x\n\
                    nameserver 10.0.0.54\nnameserver 10.0.0.55\nsortlist 10.0.0.0/8\n";
        let c = parse(text, false);
        let want: Vec<SocketAddr> =
            ["10.0.0.53:53", "[fd00::53]:53", "10.0.0.54:53"].iter().map(|s| s.parse().unwrap()).collect();
        assert_eq!(c.servers, want, "at most three servers, in order");
        assert_eq!(c.search, ["corp.example", "lab.example"]);
        assert_eq!((c.ndots, c.timeout, c.attempts), (2, Duration::from_secs(1), 3));
        assert_eq!(c.max_wait(), Duration::from_secs(9));
    }

    #[test]
    fn defaults_bounds_and_the_test_only_port() {
        let c = parse("", false);
        assert_eq!(c, ResolvConf::default());
        assert_eq!(c.servers, ["127.0.0.1:53".parse().unwrap()]);
        assert_eq!(c.max_wait(), Duration::from_secs(10));
        let c = parse("options timeout:0 attempts:99 ndots:40\nsearch a.example\ndomain b.example\n", false);
        assert_eq!((c.timeout, c.attempts, c.ndots), (Duration::from_secs(1), 5, 15));
        assert_eq!(c.search, ["b.example"], "the last of search and domain wins");
        let c = parse(
            &format!("search {}\n", (0..9).map(|i| format!("d{i}.example")).collect::<Vec<_>>().join(" ")),
            false,
        );
        assert_eq!(c.search.len(), MAX_SEARCH);

        let ported = "nameserver 127.0.0.1:5353\nnameserver [::1]:5354\nnameserver 127.0.0.1:0\n";
        assert_eq!(parse(ported, false).servers, ResolvConf::default().servers, "no port in the system file");
        let c = parse(ported, true);
        assert_eq!(c.servers, ["127.0.0.1:5353".parse().unwrap(), "[::1]:5354".parse().unwrap()]);
    }
}
