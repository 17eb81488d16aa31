//! The CAC's transfer table without sockets: grants, reports and STAT queries as events, the
//! clock as the `now` given to the machine.

use super::*;
use crate::proto::msg::PoStat;
use crate::proto::wire::{self, MAX_CONTROL};
use crate::proto::{Payload, ACCEPTED};
use std::sync::Mutex;

const KEY: &[u8] = b"cluster-key";
const NOW_UNIX: u64 = 1_800_000_000;

/// What the CAC logged, from every test of this binary (each test asks for the lines that name
/// its own master addresses).
static LOGGED: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Keeps the CAC's refusal and adoption lines.
struct Capture;

impl log::Log for Capture {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.target().starts_with("wugui::proto::cac")
    }
    fn log(&self, r: &log::Record) {
        let line = r.args().to_string();
        if self.enabled(r.metadata())
            && (line.contains("progress_") || line.contains("adopted") || line.contains("live_master"))
        {
            LOGGED.lock().unwrap().push(line);
        }
    }
    fn flush(&self) {}
}

/// The lines logged about master `ip` since the last call (they are taken).
fn logged(ip: &str) -> Vec<String> {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        if log::set_logger(&Capture).is_ok() {
            log::set_max_level(log::LevelFilter::Info);
        }
    });
    let field = format!("master={ip}");
    let mut all = LOGGED.lock().unwrap();
    let (mine, rest) = std::mem::take(&mut *all).into_iter().partition(|l: &String| l.split(' ').any(|f| f == field));
    *all = rest;
    mine
}

/// A token as any replica holding the cluster key issues it (`key`: another cluster's).
fn token(key: &[u8], transfer: u64, class: &str, master: &str) -> Vec<u8> {
    Token::issue(key, transfer, class, master.parse().unwrap(), NOW_UNIX + 3600, [9; 16]).encode()
}

/// A CAC with classes `a` and `b`, each pushable from 10.0.0.0/8, and a clock.
struct Cac {
    m: CacMachine,
    now: Instant,
    next: ConnId,
    /// The token of each grant, which its master sends with its reports.
    tokens: HashMap<u64, Vec<u8>>,
}

impl Cac {
    fn new() -> Cac {
        let class = |name: &str| ClassAuth {
            cfg: ClassCfg::new(name),
            pos: vec!["10.9.0.1:7200".parse().unwrap()],
            sites: Vec::new(),
            masters: vec![crate::proto::cidr::Cidr::parse("10.0.0.0/8").unwrap()],
            master_secret: None,
        };
        let settings = CacSettings { key: KEY.to_vec(), classes: vec![class("a"), class("b")], token_ttl: 86400 };
        let m = CacMachine::new(settings, Env::fixed(NOW_UNIX, 7));
        Cac { m, now: Instant::now(), next: 0, tokens: HashMap::new() }
    }

    /// The CAC restarts: the same settings, an empty table, no connections.
    fn restart(&mut self) {
        let settings = self.m.settings.clone();
        self.m = CacMachine::new(settings, Env::fixed(NOW_UNIX, 8));
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
            [Action::Send { msg: Msg::AuthGrant { transfer, token, .. }, .. }, Action::FrameLimit { max, .. }] => {
                assert_eq!(*max, MAX_FRAME);
                self.tokens.insert(*transfer, token.clone());
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

    /// A report with the token of the transfer's grant, as a master sends it (none if this
    /// CAC granted no such transfer).
    fn report(&mut self, conn: ConnId, transfer: u64, class: &str, state: &str) {
        let token = self.tokens.get(&transfer).cloned().unwrap_or_default();
        self.report_with(conn, transfer, class, state, token);
    }

    fn report_with(&mut self, conn: ConnId, transfer: u64, class: &str, state: &str, token: Vec<u8>) {
        let stat =
            TransferStat { transfer, class: class.into(), state: state.into(), total: 100, ..Default::default() };
        let out = self.send(conn, Msg::Progress { stat, token });
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
    c.report_with(conn_a, 12345, "a", "sending", token(KEY, 12345, "a", "10.0.0.5"));
    let t = c.shown(12345).unwrap();
    assert_eq!((t.state.as_str(), t.class.as_str(), t.master.as_str()), ("sending", "a", "10.0.0.5"));
    let conn_b = c.connect("10.0.0.6:5000");
    c.report_with(conn_b, 12345, "b", "failed", token(KEY, 12345, "b", "10.0.0.6"));
    assert_eq!(c.shown(12345).unwrap().master, "10.0.0.5");
    // An address that may not push the class it names is refused, and its connection closed.
    let stranger = c.connect("192.168.1.1:5000");
    let stat = TransferStat { transfer: 777, class: "a".into(), state: "ok".into(), ..Default::default() };
    let out = c.send(stranger, Msg::Progress { stat, token: token(KEY, 777, "a", "192.168.1.1") });
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
        let token = c.tokens[&t].clone();
        assert!(c.send(conn, Msg::Progress { stat, token }).is_empty());
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
    logged("10.7.7.7");
    c.report_with(conn, 4242, "a", "sending", token(KEY, 4242, "a", "10.7.7.7"));
    assert!(c.shown(4242).is_none());
    assert!(logged("10.7.7.7")
        .iter()
        .any(|l| l.contains("event=progress_refused transfer=4242") && l.contains("reason=table_full")));
    assert_eq!(c.m.transfers.held(), MAX_LIVE);
}

/// The reason adoption exists: a CAC that restarts mid-push keeps tracking the running push
/// from its master's next report, which carries the transfer's token, and keeps the class busy
/// until it ends.
#[test]
fn a_restarted_cac_adopts_a_running_push_on_its_token() {
    let mut c = Cac::new();
    let (t, conn) = c.grant("10.21.0.5:5000", "a").unwrap();
    c.report(conn, t, "a", "sending");
    c.restart();
    logged("10.21.0.5");
    assert!(c.shown(t).is_none());
    // The master dials the restarted CAC and goes on reporting.
    let again = c.connect("10.21.0.5:5001");
    c.report(again, t, "a", "sending");
    let s = c.shown(t).expect("adopted");
    assert_eq!((s.state.as_str(), s.class.as_str(), s.master.as_str()), ("sending", "a", "10.21.0.5"));
    let lines = logged("10.21.0.5");
    assert_eq!(lines, [format!("event=transfer_adopted transfer={t} class=a master=10.21.0.5")]);
    // One push of a class at a time still holds.
    let (reason, text) = c.grant("10.21.0.6:5000", "a").unwrap_err();
    assert_eq!(reason, Reason::Busy);
    assert!(text.contains(&format!("transfer {t} by master 10.21.0.5")), "{text}");
    // Its end frees the class.
    c.report(again, t, "a", "ok");
    assert_eq!(c.shown(t).unwrap().state, "ok");
    c.grant("10.21.0.6:5000", "a").unwrap();
}

/// A report of a transfer the CAC does not hold changes nothing without a token that vouches
/// for exactly that transfer, class and master; each refusal is one log line.
#[test]
fn a_report_without_a_good_token_adopts_nothing() {
    let mut c = Cac::new();
    let ip = "10.22.0.5";
    let cases: [(&str, Vec<u8>); 7] = [
        ("no_token", vec![]),
        ("bad_token", vec![7; 100]),
        ("bad_token", token(b"another-cluster", 4242, "a", ip)),
        ("wrong_master", token(KEY, 4242, "a", "10.22.0.6")),
        ("wrong_class", token(KEY, 4242, "b", ip)),
        ("wrong_transfer", token(KEY, 4243, "a", ip)),
        ("token_expired", Token::issue(KEY, 4242, "a", ip.parse().unwrap(), NOW_UNIX - 1, [1; 16]).encode()),
    ];
    logged(ip);
    for (why, tok) in cases {
        let conn = c.connect(&format!("{ip}:5000"));
        c.report_with(conn, 4242, "a", "sending", tok);
        let lines = logged(ip);
        let want = format!("event=progress_refused transfer=4242 class=a master={ip} reason={why}");
        assert_eq!(lines, [want], "{why}");
        assert!(c.shown(4242).is_none(), "{why}");
        assert!(c.m.busy.holder("a").is_none(), "{why}");
        // A refusal is logged once a connection (a master reports every second).
        c.report_with(conn, 4242, "a", "sending", vec![]);
        assert!(logged(ip).is_empty());
    }
    // A forged report of state ok shows nothing either.
    let conn = c.connect("10.22.0.5:5000");
    c.report_with(conn, 4244, "a", "ok", vec![1; 10]);
    assert_eq!(c.stat(), vec![]);
    assert_eq!(c.m.transfers.held(), 0);
    c.grant("10.22.0.6:5000", "a").expect("the class is free");
}

/// An adopted transfer never takes the class from a running push, whose master still gets its
/// own end and whose class is not freed early.
#[test]
fn a_report_never_replaces_the_running_push_of_a_class() {
    let mut c = Cac::new();
    let (t1, conn1) = c.grant("10.0.0.5:5000", "a").unwrap();
    c.report(conn1, t1, "a", "sending");
    // Another replica granted t2 for the same class; its master reports here.
    let conn2 = c.connect("10.0.0.6:5000");
    c.report_with(conn2, 777, "a", "sending", token(KEY, 777, "a", "10.0.0.6"));
    assert_eq!(c.shown(777).unwrap().state, "sending", "tracked");
    assert_eq!(c.m.busy.holder("a"), Some(t1));
    // t2 ending does not free the class: t1 still runs.
    c.report(conn2, 777, "a", "ok");
    let (reason, text) = c.grant("10.0.0.7:5000", "a").unwrap_err();
    assert!(reason == Reason::Busy && text.contains(&format!("transfer {t1}")), "{text}");
    // A report of t1's transfer id under another class name moves nothing either.
    c.report(conn1, t1, "b", "sending");
    assert_eq!(c.m.busy.holder("b"), None);
    c.grant("10.0.0.7:5000", "b").expect("class b is free");
    c.report(conn1, t1, "a", "ok");
    c.grant("10.0.0.7:5001", "a").expect("t1's own end frees class a");
}

/// One master address holds at most `MAX_PER_MASTER` live entries, granted or adopted; the
/// rest of the table stays open to every other master.
#[test]
fn one_master_address_holds_a_bounded_share_of_the_table() {
    let mut c = Cac::new();
    for _ in 0..MAX_PER_MASTER {
        let (_, conn) = c.grant("10.24.0.5:5000", "a").unwrap();
        c.leave(conn);
    }
    logged("10.24.0.5");
    let (reason, text) = c.grant("10.24.0.5:5000", "a").unwrap_err();
    assert_eq!(reason, Reason::Busy);
    assert!(text.contains("16 live transfers of master 10.24.0.5"), "{text}");
    assert!(logged("10.24.0.5").iter().any(|l| l.contains("reason=busy live_master=16")));
    // Nor may it adopt more, even with good tokens.
    let conn = c.connect("10.24.0.5:5001");
    c.report_with(conn, 4242, "b", "sending", token(KEY, 4242, "b", "10.24.0.5"));
    assert!(c.shown(4242).is_none());
    let lines = logged("10.24.0.5");
    assert_eq!(lines, ["event=progress_refused transfer=4242 class=b master=10.24.0.5 reason=master_full"]);
    // Another address is granted, of either class.
    let (_, conn) = c.grant("10.24.0.6:5000", "a").unwrap();
    c.leave(conn);
    c.grant("10.24.0.6:5001", "b").unwrap();
    // Expired entries count no more.
    c.wait(SILENT);
    c.grant("10.24.0.5:5002", "a").expect("its silent grants expired");
}

/// The reactor refuses at the header any frame type a CAC never takes, and no peer may send a
/// frame larger than the largest it takes.
#[test]
fn a_cac_takes_only_control_frames_it_answers() {
    assert_eq!(MAX_FRAME, MAX_CONTROL);
    for ty in [wire::MsgType::Manifest, wire::MsgType::Block, wire::MsgType::Accept, wire::MsgType::Done] {
        assert!(!ACCEPTS.contains(ty), "{ty:?}");
    }
    let mut c = Cac::new();
    let conn = ACCEPTED | 99;
    let peer = "10.0.0.5:5000".parse().unwrap();
    c.m.handle_event(c.now, Event::Accepted { conn, peer, local: "10.9.0.9:7100".parse().unwrap() });
    let acts: Vec<Action> = std::iter::from_fn(|| c.m.poll_action()).collect();
    assert!(matches!(
        acts.as_slice(),
        [Action::FrameTypes { types: ACCEPTS, .. }, Action::FrameLimit { max: MAX_FRAME, .. }]
    ));
    let peer = "192.168.9.9:5000".parse().unwrap();
    c.m.handle_event(c.now, Event::Accepted { conn: conn + 1, peer, local: "10.9.0.9:7100".parse().unwrap() });
    let acts: Vec<Action> = std::iter::from_fn(|| c.m.poll_action()).collect();
    assert!(matches!(acts.as_slice(), [Action::FrameTypes { types: ACCEPTS, .. }]), "{acts:?}");
}
