//! The CAC's transfer table without sockets: grants, reports and STAT queries as events, the
//! clock as the `now` given to the machine.

use super::*;
use crate::proto::msg::PoStat;
use crate::proto::wire::{self, MAX_CONTROL};
use crate::proto::{Payload, ACCEPTED};

/// A CAC with classes `a` and `b`, each pushable from 10.0.0.0/8, and a clock.
struct Cac {
    m: CacMachine,
    now: Instant,
    next: ConnId,
}

impl Cac {
    fn new() -> Cac {
        let class = |name: &str| ClassAuth {
            cfg: ClassCfg::new(name),
            pos: vec!["10.9.0.1:7200".parse().unwrap()],
            masters: vec![crate::proto::cidr::Cidr::parse("10.0.0.0/8").unwrap()],
            master_secret: None,
        };
        let settings =
            CacSettings { key: b"cluster-key".to_vec(), classes: vec![class("a"), class("b")], token_ttl: 86400 };
        Cac { m: CacMachine::new(settings, Env::fixed(1_800_000_000, 7)), now: Instant::now(), next: 0 }
    }

    fn connect(&mut self, peer: &str) -> ConnId {
        self.next += 1;
        let conn = ACCEPTED | self.next;
        let local = "10.9.0.9:7100".parse().unwrap();
        self.m.handle_event(self.now, Event::Accepted { conn, peer: peer.parse().unwrap(), local });
        // A master's address may send big frames at once (tested in `sim::cac`).
        while self.m.poll_action().is_some() {}
        conn
    }

    /// One frame in, every action out.
    fn send(&mut self, conn: ConnId, msg: Msg) -> Vec<Action> {
        self.m.handle_event(self.now, Event::Frame { conn, msg });
        std::iter::from_fn(|| self.m.poll_action()).collect()
    }

    /// A master at `peer` asks for `class` on a fresh connection: the transfer id, and the
    /// connection (kept, as a master keeps it to report), or the refusal.
    fn grant(&mut self, peer: &str, class: &str) -> Result<(u64, ConnId), (Reason, String)> {
        let conn = self.connect(peer);
        match self.send(conn, Msg::AuthRequest { class: class.into() }).as_slice() {
            // The grant, and the larger frames a granted master may now send (its reports).
            [Action::FrameLimit { .. }, Action::Send { msg: Msg::AuthGrant { transfer, .. }, .. }]
            | [Action::Send { msg: Msg::AuthGrant { transfer, .. }, .. }, Action::FrameLimit { .. }] => {
                Ok((*transfer, conn))
            }
            [Action::Send { msg: Msg::Denied { reason, text }, .. }, Action::Close { .. }] => {
                Err((*reason, text.clone()))
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    /// The master hangs up (so the class is free for the next master: one push of a class at
    /// a time), but its entry stays in the table until it reports an end or goes silent.
    fn leave(&mut self, conn: ConnId) {
        self.m.handle_event(self.now, Event::Closed { conn, reason: Close::Eof });
    }

    fn report(&mut self, conn: ConnId, transfer: u64, class: &str, state: &str) {
        let stat =
            TransferStat { transfer, class: class.into(), state: state.into(), total: 100, ..Default::default() };
        let out = self.send(conn, Msg::Progress { stat });
        assert!(out.is_empty(), "a report gets no answer, refused or not: {out:?}");
    }

    /// What `wugui-stat` gets: the reply goes through the codec, so it must fit one frame.
    fn stat(&mut self) -> Vec<TransferStat> {
        let conn = self.connect("192.168.5.5:40000");
        let out = self.send(conn, Msg::StatQuery);
        let [Action::Send { msg, .. }] = out.as_slice() else { panic!("{out:?}") };
        let frame = msg.to_frame();
        let h = wire::parse_header(&frame).expect("a valid frame").unwrap();
        assert!(h.len <= MAX_CONTROL);
        let body = Payload::from_vec(frame[wire::HEADER_LEN..].to_vec());
        match Msg::decode(h.ty, body).expect("wugui-stat decodes it") {
            Msg::StatReply { transfers } => transfers,
            other => panic!("{other:?}"),
        }
    }

    fn shown(&mut self, transfer: u64) -> Option<TransferStat> {
        self.stat().into_iter().find(|t| t.transfer == transfer)
    }

    fn wait(&mut self, d: Duration) {
        self.now += d;
    }
}

#[test]
fn a_master_updates_only_what_was_granted_to_its_address() {
    let mut c = Cac::new();
    let (ta, conn_a) = c.grant("10.0.0.5:5000", "a").unwrap();
    let (tb, conn_b) = c.grant("10.0.0.6:5000", "b").unwrap();
    assert_eq!(c.shown(ta).unwrap().state, "authorized");
    // Class b's master reports on class a's transfer, under either class name: refused.
    c.report(conn_b, ta, "a", "failed");
    c.report(conn_b, ta, "b", "sending");
    let a = c.shown(ta).unwrap();
    assert_eq!((a.state.as_str(), a.class.as_str(), a.master.as_str()), ("authorized", "a", "10.0.0.5"));
    assert_eq!(c.m.transfers.held(), 2);
    // The owner can, also on a new connection (a master that lost its CAC dials again); the
    // class and master shown stay the grant's, whatever the report claims.
    c.report(conn_a, ta, "b", "sending");
    let again = c.connect("10.0.0.5:5001");
    c.report(again, ta, "a", "sending");
    let a = c.shown(ta).unwrap();
    assert_eq!((a.state.as_str(), a.class.as_str(), a.master.as_str()), ("sending", "a", "10.0.0.5"));
    c.report(conn_b, tb, "b", "ok");
    assert_eq!(c.shown(tb).unwrap().state, "ok");
}

#[test]
fn a_transfer_granted_elsewhere_is_adopted_by_its_first_reporter() {
    let mut c = Cac::new();
    // Another replica (or this CAC before a restart) granted 12345: its master's reports
    // make the entry, and it is that master's from then on.
    let conn_a = c.connect("10.0.0.5:5000");
    c.report(conn_a, 12345, "a", "sending");
    let t = c.shown(12345).unwrap();
    assert_eq!((t.state.as_str(), t.class.as_str(), t.master.as_str()), ("sending", "a", "10.0.0.5"));
    let conn_b = c.connect("10.0.0.6:5000");
    c.report(conn_b, 12345, "b", "failed");
    assert_eq!(c.shown(12345).unwrap().master, "10.0.0.5");
    // An address that may not push the class it names is refused, and its connection closed.
    let stranger = c.connect("192.168.1.1:5000");
    let stat = TransferStat { transfer: 777, class: "a".into(), state: "ok".into(), ..Default::default() };
    let out = c.send(stranger, Msg::Progress { stat });
    assert!(matches!(
        out.as_slice(),
        [Action::Send { msg: Msg::Denied { reason: Reason::MasterNotAllowed, .. }, .. }, Action::Close { .. }]
    ));
    assert!(c.shown(777).is_none());
    assert_eq!(c.m.transfers.held(), 1);
}

#[test]
fn a_flood_of_grants_that_never_report_stays_bounded_and_stat_still_answers() {
    let mut c = Cac::new();
    let (mut granted, mut busy) = (0, 0);
    for i in 0..10_001u32 {
        let peer = format!("10.{}.{}.{}:6000", i >> 16, (i >> 8) & 255, i & 255);
        match c.grant(&peer, "a") {
            Ok((_, conn)) => {
                granted += 1;
                c.m.handle_event(c.now, Event::Closed { conn, reason: Close::Eof });
            }
            Err((Reason::Busy, text)) => {
                busy += 1;
                assert!(text.contains("1024 live transfers"), "{text}");
            }
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!((granted, busy), (MAX_LIVE, 10_001 - MAX_LIVE));
    assert_eq!(c.m.transfers.held(), MAX_LIVE);
    assert_eq!(c.m.stats().auth_denied, busy as u64);
    let shown = c.stat();
    assert_eq!(shown.len(), MAX_LIVE);
    assert!(shown.iter().all(|t| t.state == "authorized" && t.omitted_count().is_none()));
    eprintln!("CAC table after 10,001 grants: {} entries, STAT_REPLY {} bytes", c.m.transfers.held(), {
        Msg::StatReply { transfers: shown }.to_frame().len()
    });
}

#[test]
fn grants_that_never_report_expire_and_make_room() {
    let mut c = Cac::new();
    let mut grants = Vec::new();
    for i in 0..MAX_LIVE {
        let peer = format!("10.0.{}.{}:6000", i >> 8, i & 255);
        let (t, conn) = c.grant(&peer, "a").unwrap();
        c.leave(conn);
        grants.push((t, peer));
    }
    assert!(matches!(c.grant("10.1.0.1:6000", "a"), Err((Reason::Busy, _))));
    // One master reports just before its grant would expire (from a new connection): it stays.
    c.wait(SILENT - Duration::from_secs(1));
    let (kept, peer) = grants[7].clone();
    let conn = c.connect(&peer);
    c.report(conn, kept, "a", "sending");
    c.leave(conn);
    assert!(matches!(c.grant("10.1.0.1:6000", "a"), Err((Reason::Busy, _))));
    // The silent ones go, from the table and from STAT.
    c.wait(Duration::from_secs(1));
    let shown = c.stat();
    assert_eq!(shown.iter().map(|t| t.transfer).collect::<Vec<_>>(), vec![kept]);
    assert_eq!(c.m.transfers.held(), 1);
    let (_, conn) = c.grant("10.1.0.1:6000", "a").unwrap();
    c.leave(conn);
    // A master heard of again after its entry expired (a very long walk of its tree before
    // the first report) is adopted again.
    let (late, peer) = grants[8].clone();
    let conn = c.connect(&peer);
    c.report(conn, late, "a", "sending");
    c.leave(conn);
    assert_eq!(c.shown(late).unwrap().state, "sending");
    // A master that stops reporting goes SILENT after its last report (a second ago).
    c.wait(SILENT - Duration::from_secs(2));
    assert!(c.shown(kept).is_some());
    c.wait(Duration::from_secs(1));
    assert!(c.shown(kept).is_none());
}

#[test]
fn finished_transfers_are_kept_an_hour_and_only_the_newest() {
    let mut c = Cac::new();
    let mut done = Vec::new();
    for i in 0..RECENT + 5 {
        let (t, conn) = c.grant(&format!("10.0.0.{}:6000", i + 1), "a").unwrap();
        c.report(conn, t, "a", if i % 2 == 0 { "ok" } else { "failed" });
        done.push(t);
        c.wait(Duration::from_secs(1));
    }
    let (live, _) = c.grant("10.0.1.1:6000", "a").unwrap();
    let shown: Vec<u64> = c.stat().iter().map(|t| t.transfer).collect();
    // Live first, then the finished ones, newest first; the oldest five are gone.
    let newest: Vec<u64> = done.iter().rev().take(RECENT).copied().collect();
    assert_eq!(shown, [vec![live], newest].concat());
    assert_eq!(c.m.transfers.held(), RECENT + 1);
    // Each goes KEEP_DONE after its report (the oldest kept was reported at second 5, the
    // newest at second RECENT + 4; it is now second RECENT + 5).
    c.wait(KEEP_DONE - Duration::from_secs(RECENT as u64));
    let shown: Vec<u64> = c.stat().iter().map(|t| t.transfer).collect();
    assert_eq!(shown, done[6..].iter().rev().copied().collect::<Vec<_>>());
    c.wait(Duration::from_secs(RECENT as u64 - 1));
    assert_eq!(c.stat(), vec![]);
}

#[test]
fn a_stat_reply_fits_one_frame_and_counts_what_it_left_out() {
    let mut c = Cac::new();
    // Each report carries two pos with long errors: about 8 KiB an entry, 8 MiB in all.
    let po =
        |i: u32| PoStat { addr: format!("10.9.0.{i}:7200"), state: "failed".into(), bytes: 0, error: "e".repeat(4000) };
    let mut order = Vec::new();
    for i in 0..MAX_LIVE {
        let (t, conn) = c.grant(&format!("10.0.{}.{}:6000", i >> 8, i & 255), "a").unwrap();
        let stat = TransferStat {
            transfer: t,
            class: "a".into(),
            state: "sending".into(),
            pos: vec![po(1), po(2)],
            ..Default::default()
        };
        assert!(c.send(conn, Msg::Progress { stat }).is_empty());
        c.leave(conn);
        order.push(t);
    }
    let shown = c.stat();
    let (marker, listed) = shown.split_last().unwrap();
    let left_out = marker.omitted_count().expect("the last entry counts the rest");
    assert!(listed.len() > 400 && listed.len() < MAX_LIVE, "{}", listed.len());
    assert_eq!(listed.len() as u64 + left_out, MAX_LIVE as u64);
    // The newest are the ones listed.
    let newest: Vec<u64> = order.iter().rev().take(listed.len()).copied().collect();
    assert_eq!(listed.iter().map(|t| t.transfer).collect::<Vec<_>>(), newest);
}

#[test]
fn a_busy_cac_tells_the_master_why() {
    let mut c = Cac::new();
    for i in 0..MAX_LIVE {
        let (_, conn) = c.grant(&format!("10.0.{}.{}:6000", i >> 8, i & 255), "b").unwrap();
        c.leave(conn);
    }
    let (reason, text) = c.grant("10.7.7.7:6000", "a").unwrap_err();
    assert_eq!(reason, Reason::Busy);
    assert!(text.contains("retry when some finish") && text.contains("600 s"), "{text}");
    // Nor is a transfer granted elsewhere adopted while the table is full.
    let conn = c.connect("10.7.7.7:6001");
    c.report(conn, 4242, "a", "sending");
    assert!(c.shown(4242).is_none());
    assert_eq!(c.m.transfers.held(), MAX_LIVE);
}
