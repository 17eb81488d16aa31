//! The CAC's transfer table against a real `wugui-cac`: a flood of grants that never report
//! stays within the table's bound, `wugui-stat` still answers, and the next master is refused
//! with a reason (exit 2) instead of growing the table; one master address holds a bounded
//! share of it; reports without the transfer's token change nothing (review wt-r1 findings 2
//! and 3).

mod common;
use common::*;
use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};
use wugui::proto::cac::{MAX_LIVE, MAX_PER_MASTER};
use wugui::proto::msg::Reason;
use wugui::proto::msg::TransferStat;
use wugui::proto::{wire, Msg, Payload};

/// One AUTH_REQUEST on a fresh connection from master address `n` (`connect_from`), and the
/// answer.
fn ask(cac: &str, n: usize) -> Msg {
    let mut s = connect_from(n, cac);
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
    // Each from an address of its own: one address holds at most MAX_PER_MASTER of them.
    for n in 0..MAX_LIVE + 100 {
        match ask(&c.cac.addr, n) {
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

#[test]
fn one_master_address_holds_a_bounded_share_of_the_table() {
    let c = Cluster::start("cac-per-master", Opts { pos: 1, ..Default::default() });
    let mut granted = 0;
    let end = Instant::now() + Duration::from_secs(60);
    // Grants from 127.0.0.1 (where masterwugui dials from) that never report.
    while granted < MAX_PER_MASTER {
        assert!(Instant::now() < end, "only {granted} grants in 60 s");
        let mut s = TcpStream::connect(&c.cac.addr).unwrap();
        send(&mut s, &Msg::AuthRequest { class: "base1".into() });
        match recv(&mut s) {
            Some(Msg::AuthGrant { .. }) => granted += 1,
            // The CAC has not seen the last grant's connection close yet (one push at a time).
            Some(Msg::Denied { reason: Reason::Busy, .. }) => std::thread::sleep(Duration::from_millis(5)),
            other => panic!("{other:?}"),
        }
    }
    // The next master on that host is told why, and exits 2.
    let src = c.seeded_src();
    let o = c.push(&src);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains(&format!("{MAX_PER_MASTER} live transfers of master 127.0.0.1")), "{err}");
    assert!(c.cac.log_text().contains(&format!("reason=busy live_master={MAX_PER_MASTER}")));
    // Another host is granted.
    assert!(matches!(ask(&c.cac.addr, 1), Msg::AuthGrant { .. }));
}

/// A PROGRESS as a host that holds no grant would forge it: `token` is whatever it has.
fn forged_progress(transfer: u64, class: &str, state: &str, token: Vec<u8>) -> Msg {
    let stat = TransferStat {
        transfer,
        class: class.into(),
        master: "forged".into(),
        state: state.into(),
        total: 1,
        ..Default::default()
    };
    Msg::Progress { stat, token }
}

/// Review wt-r1 finding 2: a host in the class's `masters` that does not know the class's
/// master secret, and holds no token, reports a transfer the CAC does not know. It used to be
/// taken as the class's running push, and every real master was refused `busy` while the
/// forger's connection stayed open.
#[test]
fn a_host_without_the_class_secret_cannot_lock_the_class_with_reports() {
    let d = TempDir::new("cac-forged-busy");
    fs::write(d.path().join("base1.secret"), "s3cret-for-base1\n").unwrap();
    let extra = vec![format!("master_secret_file = {}", d.path().join("base1.secret").display())];
    let c = Cluster::start("cac-forged-busy", Opts { pos: 1, class_extra: extra, ..Default::default() });
    let src = c.seeded_src();
    let mut forger = TcpStream::connect(&c.cac.addr).unwrap();
    send(&mut forger, &forged_progress(4242, "base1", "sending", vec![]));
    wait_for("the refusal", Duration::from_secs(10), || c.cac.log_text().contains("event=progress_refused"));
    // A second report on another connection, with a token of its own making.
    let mut forger2 = TcpStream::connect(&c.cac.addr).unwrap();
    send(&mut forger2, &forged_progress(4243, "base1", "sending", vec![0x5a; 200]));
    // The real master, with the secret.
    let dir = c.dir.path().join("secrets-ok");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("base1"), "s3cret-for-base1").unwrap();
    let conf = dir.join("master.conf");
    fs::write(&conf, format!("[master]\ncac = {}\nsecret_dir = {}\n", c.cac.addr, dir.display())).unwrap();
    let o = master_with(&conf, &["-c", "base1", "-p", src.to_str().unwrap()]);
    drop((forger, forger2));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let log = c.cac.log_text();
    assert!(log.contains("event=progress_refused transfer=4242 class=base1 master=127.0.0.1 reason=no_token"), "{log}");
    assert!(
        log.contains("event=progress_refused transfer=4243 class=base1 master=127.0.0.1 reason=bad_token"),
        "{log}"
    );
    assert!(!log.contains("transfer_adopted"), "{log}");
}

/// Review wt-r1 finding 3: a host allowed to push one class sends 1,100 reports of transfers
/// that do not exist (without tokens, some saying `ok`). They used to fill the CAC's live
/// table, and every master of every class was refused `busy`.
#[test]
fn reports_without_tokens_cannot_fill_the_table_for_other_classes() {
    let c = Cluster::start("cac-forged-fill", Opts { pos: 1, ..Default::default() });
    c.add_class("base2", "/home/work/data/other");
    let src = c.seeded_src();
    let mut forger = TcpStream::connect(&c.cac.addr).unwrap();
    for t in 0..1100u64 {
        let state = if t % 2 == 0 { "sending" } else { "ok" };
        send(&mut forger, &forged_progress(1_000_000 + t, "base1", state, vec![]));
    }
    // The forger's connection stays open (a refused report does not end it): a query on it
    // is answered after all 1,100 reports.
    send(&mut forger, &Msg::StatQuery);
    let Some(Msg::StatReply { transfers }) = recv(&mut forger) else { panic!("no STAT_REPLY") };
    assert!(transfers.is_empty(), "{transfers:?}");
    let o = c.master(&["-c", "base2", "-p", src.to_str().unwrap()]);
    drop(forger);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    // One line for the connection, not one a report.
    let log = c.cac.log_text();
    assert_eq!(log.matches("event=progress_refused").count(), 1, "{log}");
}
