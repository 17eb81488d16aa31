//! The CAC's transfer table against a real `wugui-cac`: a flood of grants that never report
//! stays within the table's bound, `wugui-stat` still answers, and the next master is refused
//! with a reason (exit 2) instead of growing the table.

mod common;
use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};
use wugui::proto::cac::MAX_LIVE;
use wugui::proto::msg::Reason;
use wugui::proto::{wire, Msg, Payload};

/// One AUTH_REQUEST on a fresh connection, and the answer.
fn ask(cac: &str) -> Msg {
    let mut s = TcpStream::connect(cac).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&Msg::AuthRequest { class: "base1".into() }.to_frame()).unwrap();
    let mut head = [0u8; wire::HEADER_LEN];
    s.read_exact(&mut head).unwrap();
    let h = wire::parse_header(&head).unwrap().unwrap();
    let mut body = vec![0u8; h.len as usize];
    s.read_exact(&mut body).unwrap();
    Msg::decode(h.ty, Payload::from_vec(body)).unwrap()
}

#[test]
fn a_flood_of_unused_grants_is_bounded_and_wugui_stat_still_answers() {
    let c = Cluster::start("cac-flood", Opts { pos: 1, ..Default::default() });
    let src = c.seeded_src();
    assert_eq!(c.push(&src).status.code(), Some(0));
    let start = Instant::now();
    let (mut granted, mut busy) = (0, 0);
    for _ in 0..MAX_LIVE + 100 {
        match ask(&c.cac.addr) {
            Msg::AuthGrant { .. } => granted += 1,
            Msg::Denied { reason: Reason::Busy, .. } => busy += 1,
            other => panic!("{other:?}"),
        }
    }
    eprintln!("{} grants asked in {:?}: {granted} granted, {busy} refused busy", MAX_LIVE + 100, start.elapsed());
    assert_eq!((granted, busy), (MAX_LIVE, 100));
    // The table: every grant (live) and the finished push, in one reply.
    // (`output`, not `run_bounded`: the table is larger than a pipe holds; wugui-stat bounds
    // its own waits.)
    let o = Command::new(bin("wugui-stat")).args(["-s", &c.cac.addr]).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let table = text(&o.stdout);
    assert_eq!(table.lines().filter(|l| l.contains(" authorized ")).count(), MAX_LIVE);
    assert_eq!(table.lines().filter(|l| l.contains(" ok ")).count(), 1, "{table}");
    // A real master is told why, and exits 2.
    let o = c.push(&src);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("busy") && text(&o.stderr).contains("live transfers"), "{}", text(&o.stderr));
    assert!(c.cac.log_text().contains("reason=busy"));
}
