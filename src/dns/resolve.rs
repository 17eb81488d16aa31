//! Asking the servers of resolv.conf for a name's A and AAAA records: over UDP, and over TCP
//! when an answer comes truncated; with a bounded wait; answers kept for their TTL.
//!
//! One lookup tries the names of the search list in glibc's order ([`candidates`]). For each,
//! it sends the A and the AAAA query together to the first server and waits up to `timeout` for
//! both answers, then moves to the next server, for `attempts` rounds. A name that does not
//! exist (NXDOMAIN) or has no address (NODATA) moves on to the next candidate; a server that
//! does not answer, answers SERVFAIL or REFUSED, or sends a bad answer, moves on to the next
//! server. The whole lookup never waits longer than [`ResolvConf::max_wait`]: `timeout` x
//! `attempts` x servers.
//!
//! Each query goes out on a fresh UDP socket (a random source port from the kernel) connected to
//! the server, so the kernel drops datagrams from any other address; the source is checked again
//! on receipt. Each query has a random 16-bit id from `getrandom`; an answer must carry it and
//! repeat the question (`msg::decode_answer`), and datagrams that do not are dropped as strays.
//!
//! Blocking: call this where waiting is fine (config loading at start, on SIGHUP, at the start
//! of a push), never from an event loop's hot path.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::msg::{self, Answer, Qtype, Rcode};
use super::resolv_conf::ResolvConf;

/// Answers kept at once; when full, expired ones go, and if none had, all go.
pub const MAX_CACHED: usize = 4096;
/// The longest an answer is kept, whatever its TTL says.
pub const MAX_CACHE_TTL: Duration = Duration::from_secs(86400);
/// Datagrams read while waiting for one server's answers (strays included): a flood of strays
/// cannot keep a lookup busy beyond this, nor beyond the timeout.
const MAX_DATAGRAMS: usize = 64;

/// A lookup that found no address: the name asked, the server(s) at fault or that said so, and
/// what went wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub name: String,
    pub server: String,
    pub error: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DNS lookup of {} failed: {} (server {})", self.name, self.error, self.server)
    }
}

impl std::error::Error for Failure {}

struct Entry {
    addrs: Vec<IpAddr>,
    expires: Instant,
}

static CACHE: Mutex<BTreeMap<String, Entry>> = Mutex::new(BTreeMap::new());

/// The addresses of `name` (IPv4 first, then IPv6, each in the server's order), from the cache
/// while an earlier answer's TTL lasts, else from the servers of `conf`.
pub fn lookup(name: &str, conf: &ResolvConf) -> Result<Vec<IpAddr>, Failure> {
    let servers = server_list(conf);
    // The same name may mean another host under another search list or other servers.
    let key = format!("{} {servers} {} {}", name.to_ascii_lowercase(), conf.search.join(","), conf.ndots);
    if let Some(hit) = cached(&key, Instant::now()) {
        return Ok(hit);
    }
    let r = ask(name, conf, Instant::now() + conf.max_wait());
    match &r {
        Ok((addrs, ttl, server)) => {
            let list: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
            log::debug!("event=dns_resolved name={name} addrs={} ttl={ttl} server={server}", list.join(","));
            remember(key, addrs.clone(), Duration::from_secs(*ttl as u64), Instant::now());
        }
        Err(f) => {
            // The error is this module's own text (the logger escapes control characters).
            log::warn!("event=dns_failed name={} server={} error=\"{}\"", f.name, f.server, f.error.replace('"', "'"))
        }
    }
    r.map(|(addrs, _, _)| addrs)
}

/// The names to ask for `name`, in order (resolv.conf(5)): a name ending in a dot as it is;
/// a name with at least `ndots` dots as it is, then with each search domain; a shorter one
/// with each search domain first. Names too long to ask are left out.
pub fn candidates(name: &str, conf: &ResolvConf) -> Vec<String> {
    let name = name.to_ascii_lowercase();
    if let Some(abs) = name.strip_suffix('.') {
        return vec![abs.to_owned()];
    }
    let searched = conf.search.iter().map(|d| format!("{name}.{d}"));
    let mut out: Vec<String> = if name.matches('.').count() >= conf.ndots {
        std::iter::once(name.clone()).chain(searched).collect()
    } else {
        searched.chain(std::iter::once(name.clone())).collect()
    };
    out.retain(|n| msg::name_to_wire(n).is_ok());
    out
}

fn server_list(conf: &ResolvConf) -> String {
    conf.servers.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(",")
}

fn cached(key: &str, now: Instant) -> Option<Vec<IpAddr>> {
    let cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    cache.get(key).filter(|e| e.expires > now).map(|e| e.addrs.clone())
}

fn remember(key: String, addrs: Vec<IpAddr>, ttl: Duration, now: Instant) {
    if ttl.is_zero() {
        return;
    }
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    if cache.len() >= MAX_CACHED {
        cache.retain(|_, e| e.expires > now);
        if cache.len() >= MAX_CACHED {
            cache.clear();
        }
    }
    cache.insert(key, Entry { addrs, expires: now + ttl.min(MAX_CACHE_TTL) });
}

/// What the servers said about one candidate name.
enum Outcome {
    /// Addresses, their TTL, and the server that gave them.
    Found(Vec<IpAddr>, u32, SocketAddr),
    /// The name does not exist (NXDOMAIN), or has no address (NODATA), says this server.
    NoAddress(Rcode, SocketAddr),
}

/// Every candidate in turn until one has addresses; `deadline` bounds the whole lookup.
fn ask(name: &str, conf: &ResolvConf, deadline: Instant) -> Result<(Vec<IpAddr>, u32, SocketAddr), Failure> {
    let fail = |server: String, error: String| Failure { name: name.to_owned(), server, error };
    let names = candidates(name, conf);
    if names.is_empty() {
        return Err(fail("-".into(), "the name is too long to ask for".into()));
    }
    let mut missing = Vec::new();
    for cand in &names {
        match ask_servers(cand, conf, deadline) {
            Ok(Outcome::Found(addrs, ttl, server)) => return Ok((addrs, ttl, server)),
            Ok(Outcome::NoAddress(rcode, server)) => missing.push((cand.clone(), rcode, server)),
            Err((servers, error)) => return Err(fail(servers, error)),
        }
    }
    let mut servers_unique: Vec<String> = Vec::new();
    for (_, _, s) in &missing {
        if !servers_unique.contains(&s.to_string()) {
            servers_unique.push(s.to_string());
        }
    }
    let said: Vec<String> = missing
        .iter()
        .map(|(n, rc, _)| match rc {
            Rcode::NxDomain => format!("{n}: no such name"),
            _ => format!("{n}: no A or AAAA record"),
        })
        .collect();
    Err(fail(servers_unique.join(","), said.join("; ")))
}

/// One candidate against the servers, `attempts` rounds; `Err` names the servers that failed
/// and the last error.
fn ask_servers(name: &str, conf: &ResolvConf, deadline: Instant) -> Result<Outcome, (String, String)> {
    let mut failed: Vec<SocketAddr> = Vec::new();
    let mut last = String::from("no server was asked");
    'rounds: for _ in 0..conf.attempts {
        for &server in &conf.servers {
            let now = Instant::now();
            if now >= deadline {
                break 'rounds;
            }
            let until = (now + conf.timeout).min(deadline);
            let err = match exchange(server, name, until) {
                Ok((a, aaaa)) => match judge(a.as_ref(), aaaa.as_ref()) {
                    Ok(found) => {
                        return Ok(match found {
                            Some((addrs, ttl)) => Outcome::Found(addrs, ttl, server),
                            None => Outcome::NoAddress(a.or(aaaa).map(|x| x.rcode).unwrap_or(Rcode::NoError), server),
                        })
                    }
                    Err(e) => e,
                },
                Err(e) => e,
            };
            if !failed.contains(&server) {
                failed.push(server);
            }
            last = err;
        }
    }
    let last = format!(
        "{last} ({} attempts of {}s a server, {}s at most in all)",
        conf.attempts,
        conf.timeout.as_secs(),
        conf.max_wait().as_secs()
    );
    let list: Vec<String> = failed.iter().map(|s| s.to_string()).collect();
    Err((if list.is_empty() { server_list(conf) } else { list.join(",") }, last))
}

/// `Ok(Some)`: addresses (A first) and the smaller TTL; `Ok(None)`: the name has none;
/// `Err`: this server could not say.
fn judge(a: Option<&Answer>, aaaa: Option<&Answer>) -> Result<Option<(Vec<IpAddr>, u32)>, String> {
    let answers: Vec<&Answer> = a.into_iter().chain(aaaa).collect();
    let addrs: Vec<IpAddr> = answers.iter().flat_map(|x| x.addrs.iter().copied()).collect();
    if !addrs.is_empty() {
        let ttl = answers.iter().filter(|x| !x.addrs.is_empty()).map(|x| x.ttl).min().unwrap_or(0);
        return Ok(Some((addrs, ttl)));
    }
    if let Some(bad) = answers.iter().find(|x| !matches!(x.rcode, Rcode::NoError | Rcode::NxDomain)) {
        return Err(format!("answered {}", bad.rcode));
    }
    // One query answered "no such name": the name is gone, whatever the other would say. One
    // answered "no records of this type" and the other not at all: the server could not say.
    if answers.iter().any(|x| x.rcode == Rcode::NxDomain) || answers.len() == 2 {
        return Ok(None);
    }
    Err(format!("no answer to the {} query", if a.is_none() { Qtype::A } else { Qtype::Aaaa }))
}

/// The A and AAAA queries for `name` to `server`, answers awaited until `until`. Either answer
/// may be missing if the other came; `Err` when neither did, or when one was bad.
fn exchange(server: SocketAddr, name: &str, until: Instant) -> Result<(Option<Answer>, Option<Answer>), String> {
    let qname = msg::name_to_wire(name).map_err(|e| e.to_string())?;
    let local: SocketAddr = match server {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let sock = UdpSocket::bind(local).map_err(|e| format!("cannot open a UDP socket: {e}"))?;
    sock.connect(server).map_err(|e| format!("cannot reach {server}: {e}"))?;
    let ids = query_ids()?;
    let types = [Qtype::A, Qtype::Aaaa];
    let mut queries = Vec::with_capacity(2);
    for (id, t) in ids.iter().zip(types) {
        let q = msg::encode_query(*id, name, t).map_err(|e| e.to_string())?;
        sock.send(&q).map_err(|e| match e.kind() {
            // The port-unreachable reply to the first query.
            ErrorKind::ConnectionRefused => format!("no DNS server at {server}: {e}"),
            _ => format!("cannot send to {server}: {e}"),
        })?;
        queries.push(q);
    }
    let mut got: [Option<Answer>; 2] = [None, None];
    let mut buf = [0u8; 4096];
    let mut refused = None;
    for _ in 0..MAX_DATAGRAMS {
        if got.iter().all(Option::is_some) {
            break;
        }
        let now = Instant::now();
        if now >= until {
            break;
        }
        sock.set_read_timeout(Some(until - now)).map_err(|e| e.to_string())?;
        let n = match sock.recv_from(&mut buf) {
            Ok((n, from)) if from == server => n,
            Ok(_) => continue, // not from the server we asked
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {
                continue
            }
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                refused = Some(e);
                break;
            }
            Err(e) => return Err(format!("cannot read from {server}: {e}")),
        };
        let m = &buf[..n];
        let Some(which) = msg::message_id(m).and_then(|id| ids.iter().position(|i| *i == id)) else {
            continue; // a stray: no query of ours has this id
        };
        if got[which].is_some() {
            continue;
        }
        let answer = msg::decode_answer(m, ids[which], &qname, types[which]).map_err(|e| e.to_string())?;
        got[which] = Some(if answer.truncated {
            over_tcp(server, &queries[which], ids[which], &qname, types[which], until)?
        } else {
            answer
        });
    }
    let [a, aaaa] = got;
    if a.is_none() && aaaa.is_none() {
        return Err(match refused {
            Some(e) => format!("no DNS server at {server}: {e}"),
            None => "no answer".to_string(),
        });
    }
    Ok((a, aaaa))
}

/// Two different random query ids.
fn query_ids() -> Result<[u16; 2], String> {
    let mut b = [0u8; 4];
    getrandom::getrandom(&mut b).map_err(|e| format!("no random source for the query id: {e}"))?;
    let a = u16::from_be_bytes([b[0], b[1]]);
    let mut c = u16::from_be_bytes([b[2], b[3]]);
    if c == a {
        c ^= 0x8000;
    }
    Ok([a, c])
}

/// The query again over TCP (RFC 7766), for an answer that came truncated over UDP.
fn over_tcp(
    server: SocketAddr,
    query: &[u8],
    id: u16,
    qname: &[u8],
    qtype: Qtype,
    until: Instant,
) -> Result<Answer, String> {
    let left =
        || until.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()).ok_or("no answer over TCP in time");
    let mut s = TcpStream::connect_timeout(&server, left()?).map_err(|e| format!("TCP to {server}: {e}"))?;
    s.set_write_timeout(Some(left()?)).map_err(|e| e.to_string())?;
    let mut framed = (query.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(query);
    s.write_all(&framed).map_err(|e| format!("TCP to {server}: {e}"))?;
    let mut len = [0u8; 2];
    read_full(&mut s, &mut len, until)?;
    let len = u16::from_be_bytes(len) as usize; // at most 65535 by its type: bounded before allocating
    if len < msg::HEADER_LEN {
        return Err(format!("server sent a {len}-byte answer over TCP"));
    }
    let mut body = vec![0u8; len];
    read_full(&mut s, &mut body, until)?;
    let answer = msg::decode_answer(&body, id, qname, qtype).map_err(|e| e.to_string())?;
    if answer.truncated {
        return Err("server sent a truncated answer over TCP".into());
    }
    Ok(answer)
}

/// Fills `buf` from `s`, each read waiting only until `until`.
fn read_full(s: &mut TcpStream, buf: &mut [u8], until: Instant) -> Result<(), String> {
    let mut at = 0;
    while at < buf.len() {
        let left = until.checked_duration_since(Instant::now()).filter(|d| !d.is_zero());
        let Some(left) = left else { return Err("no answer over TCP in time".into()) };
        s.set_read_timeout(Some(left)).map_err(|e| e.to_string())?;
        match s.read(&mut buf[at..]) {
            Ok(0) => return Err("server closed TCP inside an answer".into()),
            Ok(n) => at += n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {}
            Err(e) => return Err(format!("reading the TCP answer: {e}")),
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "resolve_tests.rs"]
mod tests;
