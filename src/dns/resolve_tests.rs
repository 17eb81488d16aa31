//! The resolver against a tiny server on 127.0.0.1 that each test starts itself. Each test uses
//! its own names, since the answer cache is process-wide.

use super::*;
use crate::dns::resolv_conf::parse;

#[path = "../../tests/common/dns_server.rs"]
mod dns_server;
use dns_server::{Behaviour, DnsServer};

fn conf(s: &DnsServer, extra: &str) -> ResolvConf {
    parse(&s.resolv_conf(&format!("options timeout:1 attempts:1\n{extra}")), true)
}

fn ips(v: &[&str]) -> Vec<IpAddr> {
    v.iter().map(|s| s.parse().unwrap()).collect()
}

#[test]
fn a_and_aaaa_ipv4_first_and_cached_for_their_ttl() {
    let s = DnsServer::start();
    s.set("both.wugui.test", &["fd00::7", "10.0.0.7", "10.0.0.8"], 1);
    let c = conf(&s, "");
    assert_eq!(lookup("both.wugui.test", &c), Ok(ips(&["10.0.0.7", "10.0.0.8", "fd00::7"])));
    let asked = s.udp_queries();
    assert_eq!(asked, 2, "one A and one AAAA query");
    // Within the TTL the answer comes from the cache, even after the name moved.
    s.set("both.wugui.test", &["10.0.0.9"], 1);
    assert_eq!(lookup("BOTH.wugui.test", &c), Ok(ips(&["10.0.0.7", "10.0.0.8", "fd00::7"])));
    assert_eq!(s.udp_queries(), asked);
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(lookup("both.wugui.test", &c), Ok(ips(&["10.0.0.9"])));
    assert_eq!(s.udp_queries(), asked + 2);
}

#[test]
fn a_zero_ttl_is_never_cached() {
    let s = DnsServer::start();
    s.set("zero.wugui.test", &["10.0.1.1"], 0);
    let c = conf(&s, "");
    assert_eq!(lookup("zero.wugui.test", &c), Ok(ips(&["10.0.1.1"])));
    s.set("zero.wugui.test", &["10.0.1.2"], 0);
    assert_eq!(lookup("zero.wugui.test", &c), Ok(ips(&["10.0.1.2"])));
}

#[test]
fn the_search_list_in_glibc_order() {
    let s = DnsServer::start();
    s.set("po7.corp.test", &["10.0.2.7"], 60);
    s.set("po8.lab.test", &["10.0.2.8"], 60);
    let c = conf(&s, "search corp.test lab.test\n");
    assert_eq!(candidates("po7", &c), ["po7.corp.test", "po7.lab.test", "po7"]);
    assert_eq!(candidates("a.b", &c), ["a.b", "a.b.corp.test", "a.b.lab.test"], "ndots 1: as is first");
    assert_eq!(candidates("abs.corp.test.", &c), ["abs.corp.test"], "a final dot: only as is");
    let nd = parse("search x.test\noptions ndots:3\n", false);
    assert_eq!(candidates("a.b", &nd), ["a.b.x.test", "a.b"]);

    assert_eq!(lookup("po7", &c), Ok(ips(&["10.0.2.7"])));
    assert_eq!(lookup("po8", &c), Ok(ips(&["10.0.2.8"])));
    let asked = s.asked();
    assert!(asked.iter().filter(|n| n.starts_with("po8")).any(|n| n == "po8.corp.test"), "{asked:?}");
    assert!(!asked.iter().any(|n| n == "po8"), "found before the bare name: {asked:?}");

    let e = lookup("gone", &c).unwrap_err();
    assert_eq!(e.name, "gone");
    assert_eq!(e.server, s.addr.to_string());
    assert_eq!(e.error, "gone.corp.test: no such name; gone.lab.test: no such name; gone: no such name");
}

#[test]
fn a_name_without_addresses_and_a_truncated_answer() {
    let s = DnsServer::start();
    s.set("empty.wugui.test", &[], 60);
    let c = conf(&s, "");
    let e = lookup("empty.wugui.test", &c).unwrap_err();
    assert_eq!(e.error, "empty.wugui.test: no A or AAAA record");

    // Over 512 bytes (here: any answer the server marks TC) comes again over TCP.
    s.set("big.wugui.test", &["10.0.3.1", "10.0.3.2"], 60);
    s.truncate("big.wugui.test");
    assert_eq!(lookup("big.wugui.test", &c), Ok(ips(&["10.0.3.1", "10.0.3.2"])));
    assert_eq!(s.tcp_queries(), 2, "the A and the AAAA query, each asked again over TCP");
}

#[test]
fn strays_are_dropped_and_a_hostile_answer_fails_that_server() {
    let s = DnsServer::start();
    s.set("stray.wugui.test", &["10.0.4.1"], 60);
    s.behave(Behaviour::StrayFirst);
    let c = conf(&s, "");
    assert_eq!(lookup("stray.wugui.test", &c), Ok(ips(&["10.0.4.1"])));

    s.set("loop.wugui.test", &["10.0.4.2"], 60);
    s.behave(Behaviour::PointerLoop);
    let e = lookup("loop.wugui.test", &c).unwrap_err();
    assert!(e.error.contains("compression pointer"), "{e}");
    assert_eq!(e.server, s.addr.to_string());
}

#[test]
fn a_half_answered_lookup_uses_what_came_and_never_mistakes_silence_for_no_address() {
    let s = DnsServer::start();
    s.behave(Behaviour::OnlyA);
    s.set("half4.wugui.test", &["10.0.6.1"], 60);
    s.set("half6.wugui.test", &["fd00::6"], 60);
    let c = conf(&s, "");
    assert_eq!(lookup("half4.wugui.test", &c), Ok(ips(&["10.0.6.1"])), "the A answer is enough");
    let e = lookup("half6.wugui.test", &c).unwrap_err();
    assert!(e.error.starts_with("no answer to the AAAA query"), "{e}");
    // "No such name" on the A query settles it.
    let e = lookup("nowhere.wugui.test", &c).unwrap_err();
    assert_eq!(e.error, "nowhere.wugui.test: no such name");
}

#[test]
fn a_dead_server_fails_within_the_bound_and_names_the_name_and_the_server() {
    // A server that takes the datagrams and never answers.
    let hole = UdpSocket::bind("127.0.0.1:0").unwrap();
    let hole_addr = hole.local_addr().unwrap();
    let c = parse(&format!("nameserver {hole_addr}\noptions timeout:1 attempts:2\n"), true);
    let start = Instant::now();
    let e = lookup("dead.wugui.test", &c).unwrap_err();
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(1900) && took < Duration::from_secs(4), "{took:?}");
    assert_eq!((e.name.as_str(), e.server.clone()), ("dead.wugui.test", hole_addr.to_string()));
    assert!(e.to_string().contains("no answer (2 attempts of 1s a server, 2s at most in all)"), "{e}");

    // Nobody on the port at all: the kernel says so at once.
    let gone = UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let c = parse(&format!("nameserver {gone}\noptions timeout:3 attempts:1\n"), true);
    let start = Instant::now();
    let e = lookup("refused.wugui.test", &c).unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(2), "{:?}", start.elapsed());
    assert!(e.error.contains(&format!("no DNS server at {gone}")), "{e}");

    // The second server answers when the first is silent.
    let s = DnsServer::start();
    s.set("second.wugui.test", &["10.0.5.1"], 60);
    let c = parse(&format!("nameserver {hole_addr}\nnameserver {}\noptions timeout:1 attempts:1\n", s.addr), true);
    assert_eq!(lookup("second.wugui.test", &c), Ok(ips(&["10.0.5.1"])));
    drop(hole);
}
