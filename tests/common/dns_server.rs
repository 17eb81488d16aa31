//! A tiny DNS server for tests: UDP and TCP on one port of 127.0.0.1, answering A and AAAA
//! queries from a table the test may change while it runs. It writes its answers by hand, with
//! no code from wugui, so it checks wugui's decoder rather than mirroring it. Std only: the unit
//! tests (`src/dns/`) and the process tests (`tests/`) both include this file.
//!
//! Names in the table answer NOERROR (with no records for a type they lack); other names answer
//! NXDOMAIN. A name marked `truncate` answers over UDP with TC set and no records, and fully over
//! TCP. `Behaviour` makes the server misbehave. Both threads stop when the server is dropped.
#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    Normal,
    /// Before each answer, a datagram with another id (a stray or a forgery) that must be dropped.
    StrayFirst,
    /// Each answer's record owner is a compression pointer to itself.
    PointerLoop,
    /// Never answers.
    Silent,
    /// Answers A queries only; AAAA queries go unanswered.
    OnlyA,
}

#[derive(Default)]
struct Zone {
    names: HashMap<String, Vec<(IpAddr, u32)>>,
    truncate: HashSet<String>,
    asked: Vec<String>,
    tcp_queries: usize,
}

pub struct DnsServer {
    pub addr: SocketAddr,
    zone: Arc<Mutex<Zone>>,
    behaviour: Arc<Mutex<Behaviour>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    udp_queries: Arc<AtomicUsize>,
}

impl DnsServer {
    /// Binds UDP 127.0.0.1:0, then TCP on the same port (a few tries if that port is taken).
    pub fn start() -> DnsServer {
        let (udp, tcp) = (0..20)
            .find_map(|_| {
                let udp = UdpSocket::bind("127.0.0.1:0").ok()?;
                let tcp = TcpListener::bind(udp.local_addr().ok()?).ok()?;
                Some((udp, tcp))
            })
            .expect("a port free for both UDP and TCP");
        let addr = udp.local_addr().unwrap();
        udp.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        tcp.set_nonblocking(true).unwrap();
        let zone = Arc::new(Mutex::new(Zone::default()));
        let behaviour = Arc::new(Mutex::new(Behaviour::Normal));
        let stop = Arc::new(AtomicBool::new(false));
        let udp_queries = Arc::new(AtomicUsize::new(0));
        let mut threads = Vec::new();
        {
            let (zone, behaviour, stop, count) = (zone.clone(), behaviour.clone(), stop.clone(), udp_queries.clone());
            threads.push(std::thread::spawn(move || {
                let mut buf = [0u8; 512];
                while !stop.load(Ordering::Relaxed) {
                    let Ok((n, from)) = udp.recv_from(&mut buf) else { continue };
                    count.fetch_add(1, Ordering::Relaxed);
                    let b = *behaviour.lock().unwrap();
                    if b == Behaviour::Silent {
                        continue;
                    }
                    let Some(reply) = respond(&buf[..n], &zone, true, b) else { continue };
                    if b == Behaviour::StrayFirst {
                        let mut stray = reply.clone();
                        stray[0] ^= 0x55;
                        let _ = udp.send_to(&stray, from);
                    }
                    let _ = udp.send_to(&reply, from);
                }
            }));
        }
        {
            let (zone, behaviour, stop) = (zone.clone(), behaviour.clone(), stop.clone());
            threads.push(std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match tcp.accept() {
                        Ok((s, _)) => serve_tcp(s, &zone, *behaviour.lock().unwrap()),
                        Err(_) => std::thread::sleep(Duration::from_millis(20)),
                    }
                }
            }));
        }
        DnsServer { addr, zone, behaviour, stop, threads, udp_queries }
    }

    /// `name` now has these addresses (A and AAAA as they parse), all with `ttl`.
    pub fn set(&self, name: &str, ips: &[&str], ttl: u32) {
        let recs = ips.iter().map(|s| (s.parse().unwrap(), ttl)).collect();
        self.zone.lock().unwrap().names.insert(name.to_ascii_lowercase(), recs);
    }

    pub fn remove(&self, name: &str) {
        self.zone.lock().unwrap().names.remove(&name.to_ascii_lowercase());
    }

    pub fn truncate(&self, name: &str) {
        self.zone.lock().unwrap().truncate.insert(name.to_ascii_lowercase());
    }

    pub fn behave(&self, b: Behaviour) {
        *self.behaviour.lock().unwrap() = b;
    }

    /// UDP datagrams received.
    pub fn udp_queries(&self) -> usize {
        self.udp_queries.load(Ordering::Relaxed)
    }

    pub fn tcp_queries(&self) -> usize {
        self.zone.lock().unwrap().tcp_queries
    }

    /// The names asked so far, in order (one entry a query).
    pub fn asked(&self) -> Vec<String> {
        self.zone.lock().unwrap().asked.clone()
    }

    /// A resolv.conf naming this server (the test-only `IP:PORT` form) and `extra` lines.
    pub fn resolv_conf(&self, extra: &str) -> String {
        format!("nameserver {}\n{extra}", self.addr)
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn serve_tcp(mut s: TcpStream, zone: &Mutex<Zone>, b: Behaviour) {
    let _ = s.set_nonblocking(false);
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut len = [0u8; 2];
    if s.read_exact(&mut len).is_err() {
        return;
    }
    let mut q = vec![0u8; u16::from_be_bytes(len) as usize];
    if s.read_exact(&mut q).is_err() {
        return;
    }
    zone.lock().unwrap().tcp_queries += 1;
    if let Some(reply) = respond(&q, zone, false, b) {
        let mut out = (reply.len() as u16).to_be_bytes().to_vec();
        out.extend(reply);
        let _ = s.write_all(&out);
    }
}

/// The answer to query `q`, or `None` if `q` is not a one-question query.
fn respond(q: &[u8], zone: &Mutex<Zone>, udp: bool, b: Behaviour) -> Option<Vec<u8>> {
    if q.len() < 12 || q[2] & 0x80 != 0 || q[4..6] != [0, 1] {
        return None;
    }
    // The question: plain labels (queries carry no pointers), then type and class.
    let mut at = 12;
    let mut labels = Vec::new();
    loop {
        let n = *q.get(at)? as usize;
        if n == 0 || n > 63 {
            break;
        }
        labels.push(String::from_utf8_lossy(q.get(at + 1..at + 1 + n)?).to_ascii_lowercase());
        at += 1 + n;
    }
    let qend = at + 5;
    let qtype = u16::from_be_bytes([*q.get(at + 1)?, *q.get(at + 2)?]);
    if b == Behaviour::OnlyA && qtype != 1 {
        return None;
    }
    let name = labels.join(".");
    let mut z = zone.lock().unwrap();
    z.asked.push(name.clone());
    let mut out = q[..2].to_vec();
    let (rcode, records): (u8, Vec<(IpAddr, u32)>) = match z.names.get(&name) {
        None => (3, vec![]),
        Some(recs) => {
            let want_v4 = qtype == 1;
            (0, recs.iter().filter(|(ip, _)| ip.is_ipv4() == want_v4 && matches!(qtype, 1 | 28)).copied().collect())
        }
    };
    let tc = udp && z.truncate.contains(&name);
    out.push(0x81 | if tc { 0x02 } else { 0 }); // QR, RD (+TC)
    out.push(0x80 | rcode); // RA, RCODE
    let an = if tc { 0 } else { records.len() as u16 };
    out.extend_from_slice(&[0, 1]);
    out.extend_from_slice(&an.to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(q.get(12..qend)?);
    if tc {
        return Some(out);
    }
    for (ip, ttl) in records {
        let here = out.len();
        if b == Behaviour::PointerLoop {
            out.extend_from_slice(&[0xc0 | (here >> 8) as u8, here as u8]);
        } else {
            out.extend_from_slice(&[0xc0, 12]);
        }
        let (t, data) = match ip {
            IpAddr::V4(v) => (1u16, v.octets().to_vec()),
            IpAddr::V6(v) => (28u16, v.octets().to_vec()),
        };
        out.extend_from_slice(&t.to_be_bytes());
        out.extend_from_slice(&[0, 1]);
        out.extend_from_slice(&ttl.to_be_bytes());
        out.extend_from_slice(&(data.len() as u16).to_be_bytes());
        out.extend(data);
    }
    Some(out)
}
