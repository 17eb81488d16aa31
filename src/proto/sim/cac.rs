//! The CAC driven by hand. Every arm it handles, and the test that reaches it:
//!
//! | state + message or event                         | test                                  |
//! |--------------------------------------------------|---------------------------------------|
//! | New + AuthRequest, open class: AuthGrant         | `grants_a_master_and_vouches_for_its_token` |
//! | New + AuthRequest, unknown class: Denied         | `refuses_unknown_classes_and_foreign_masters` |
//! | New + AuthRequest, address outside `masters`     | `refuses_unknown_classes_and_foreign_masters` |
//! | New + AuthRequest, class with a secret: challenge | `challenges_a_class_with_a_master_secret` |
//! | Challenged + AuthResponse, right / wrong MAC      | `challenges_a_class_with_a_master_secret` |
//! | New / Served + Verify, good token: VerifyOk       | `grants_a_master_and_vouches_for_its_token` |
//! | Verify: bad presenter, forged, wrong master, po not in class, expired, class gone | `refuses_tokens_for_each_reason` |
//! | Master / New + Progress, allowed / not allowed    | `keeps_the_table_that_masters_report` |
//! | StatQuery in New, Served and Master               | `keeps_the_table_that_masters_report` |
//! | finished transfers pruned (age, count)           | `forgets_finished_transfers_after_an_hour_or_a_hundred` |
//! | Ping in any state (kept)                         | `challenges_a_class_with_a_master_secret` |
//! | anything else: Denied Protocol                   | `unexpected_messages_are_protocol_errors` |
//! | a frame for no connection                        | `unexpected_messages_are_protocol_errors` |
//! | Accepted; handshake and idle timeouts            | `closes_silent_connections_and_counts_broken_ones` |
//! | Closed clean / broken; Connected, HookDone       | `closes_silent_connections_and_counts_broken_ones` |

use super::super::auth::{self, Token};
use super::super::cac::{challenge_data, CacMachine, CacSettings, ClassAuth};
use super::super::cidr::Cidr;
use super::super::msg::{Reason, TransferStat};
use super::super::*;
use super::probe::{closes, denied, only, sent_on, Probe};
use std::time::Duration;

const MASTER: &str = "10.0.0.1:40001";
const PO: &str = "10.0.1.1:40002";
const STRANGER: &str = "192.168.1.1:40003";
const KEY: &[u8] = b"cluster-key";
const NOW_UNIX: u64 = 1_800_000_000;

fn class(name: &str, secret: Option<&[u8]>) -> ClassAuth {
    let mut cfg = ClassCfg::new(name);
    cfg.set("dest", "/home/work/data/base").unwrap();
    ClassAuth {
        cfg,
        pos: vec!["10.0.1.1:7200".parse().unwrap(), "10.0.1.2:7200".parse().unwrap()],
        sites: Vec::new(),
        masters: vec![Cidr::parse("10.0.0.0/24").unwrap()],
        master_secret: secret.map(|s| s.to_vec()),
    }
}

fn settings() -> CacSettings {
    CacSettings {
        key: KEY.to_vec(),
        classes: vec![class("base1", None), class("sec1", Some(b"s3cret"))],
        token_ttl: 3600,
    }
}

fn cac() -> Probe<CacMachine> {
    let (p, first) = Probe::new(CacMachine::new(settings(), Env::fixed(NOW_UNIX, 1)), Instant::now());
    assert!(first.is_empty(), "{first:?}");
    p
}

/// A grant for `base1` on `conn`: the transfer and its token.
fn grant(p: &mut Probe<CacMachine>, conn: ConnId) -> (u64, Vec<u8>) {
    p.accepted(conn, MASTER);
    let acts = p.frame(conn, Msg::AuthRequest { class: "base1".into() });
    let Msg::AuthGrant { transfer, token, .. } = only(&acts, conn) else { panic!("{acts:?}") };
    (transfer, token)
}

fn verify(token: &[u8], po: &str, presenter: &str) -> Msg {
    Msg::Verify { token: token.to_vec(), po: po.into(), presenter: presenter.into() }
}

/// A report from `MASTER`, with the token a replica would have granted it.
fn progress(transfer: u64, class: &str, state: &str) -> Msg {
    progress_from("10.0.0.1", transfer, class, state)
}

fn progress_from(master: &str, transfer: u64, class: &str, state: &str) -> Msg {
    let token = Token::issue(KEY, transfer, class, master.parse().unwrap(), NOW_UNIX + 60, [2; 16]).encode();
    let stat = TransferStat { transfer, class: class.into(), state: state.into(), ..Default::default() };
    Msg::Progress { stat, token }
}

/// What a fresh stat client on `conn` sees: (transfer, state, master) of each.
fn table(p: &mut Probe<CacMachine>, conn: ConnId) -> Vec<(u64, String, String)> {
    p.accepted(conn, PO);
    let acts = p.frame(conn, Msg::StatQuery);
    let Msg::StatReply { transfers } = only(&acts, conn) else { panic!("{acts:?}") };
    transfers.into_iter().map(|t| (t.transfer, t.state, t.master)).collect()
}

#[test]
fn grants_a_master_and_vouches_for_its_token() {
    let mut p = cac();
    p.accepted(ACCEPTED | 1, MASTER);
    let acts = p.frame(ACCEPTED | 1, Msg::AuthRequest { class: "base1".into() });
    let Msg::AuthGrant { transfer, token, pos, class, .. } = only(&acts, ACCEPTED | 1) else { panic!("{acts:?}") };
    assert_eq!(pos, ["10.0.1.1:7200", "10.0.1.2:7200"]);
    assert_eq!(ClassCfg::from_pairs("base1", &class).unwrap().dest, "/home/work/data/base");
    assert!(closes(&acts).is_empty(), "the master keeps its connection for progress");
    let t = Token::verify(&token, KEY, NOW_UNIX, Some(MASTER.parse::<SocketAddr>().unwrap().ip())).unwrap();
    assert_eq!((t.transfer, t.class.as_str(), t.expiry), (transfer, "base1", NOW_UNIX + 3600));
    // A po asks twice on one connection: New, then Served.
    p.accepted(ACCEPTED | 2, PO);
    for _ in 0..2 {
        let acts = p.frame(ACCEPTED | 2, verify(&token, "10.0.1.2:7200", "10.0.0.1"));
        let Msg::VerifyOk { transfer: t, class_name, class } = only(&acts, ACCEPTED | 2) else { panic!("{acts:?}") };
        assert_eq!((t, class_name.as_str()), (transfer, "base1"));
        assert_eq!(ClassCfg::from_pairs("base1", &class).unwrap().dest, "/home/work/data/base");
    }
    let s = p.stats();
    assert_eq!((s.auth_granted, s.tokens_verified, s.auth_denied, s.tokens_refused), (1, 2, 0, 0), "{s:?}");
}

#[test]
fn refuses_unknown_classes_and_foreign_masters() {
    let mut p = cac();
    p.accepted(ACCEPTED | 1, MASTER);
    let acts = p.frame(ACCEPTED | 1, Msg::AuthRequest { class: "nope".into() });
    assert_eq!(denied(&acts, ACCEPTED | 1), Some(Reason::UnknownClass));
    // The refusal names the classes this master may push, and no other.
    let [Msg::Denied { text, .. }] = &sent_on(&acts, ACCEPTED | 1)[..] else { panic!("{acts:?}") };
    assert_eq!(text, "no class \"nope\" on this CAC; 10.0.0.1 may push base1, sec1");
    p.accepted(ACCEPTED | 3, STRANGER);
    let acts = p.frame(ACCEPTED | 3, Msg::AuthRequest { class: "nope".into() });
    let [Msg::Denied { text, .. }] = &sent_on(&acts, ACCEPTED | 3)[..] else { panic!("{acts:?}") };
    assert!(text.ends_with("192.168.1.1 may push no class here (see masters in cac.conf)"), "{text}");
    p.accepted(ACCEPTED | 2, STRANGER);
    let acts = p.frame(ACCEPTED | 2, Msg::AuthRequest { class: "base1".into() });
    assert_eq!(denied(&acts, ACCEPTED | 2), Some(Reason::MasterNotAllowed));
    // Refused connections are gone: nothing more is answered on them.
    assert!(p.frame(ACCEPTED | 2, Msg::StatQuery).is_empty());
    let s = p.stats();
    assert_eq!((s.auth_denied, s.auth_granted), (3, 0), "{s:?}");
}

#[test]
fn challenges_a_class_with_a_master_secret() {
    let mut p = cac();
    p.accepted(ACCEPTED | 1, MASTER);
    let acts = p.frame(ACCEPTED | 1, Msg::AuthRequest { class: "sec1".into() });
    let Msg::AuthChallenge { nonce } = only(&acts, ACCEPTED | 1) else { panic!("{acts:?}") };
    // A ping keeps the connection where it is.
    assert!(p.frame(ACCEPTED | 1, Msg::Ping).is_empty());
    let mac = auth::mac(b"s3cret", &challenge_data(&nonce, "sec1"));
    let acts = p.frame(ACCEPTED | 1, Msg::AuthResponse { mac });
    assert!(matches!(only(&acts, ACCEPTED | 1), Msg::AuthGrant { .. }), "{acts:?}");
    p.accepted(ACCEPTED | 2, MASTER);
    let acts = p.frame(ACCEPTED | 2, Msg::AuthRequest { class: "sec1".into() });
    let Msg::AuthChallenge { nonce: other } = only(&acts, ACCEPTED | 2) else { panic!("{acts:?}") };
    assert_ne!(nonce, other, "a fresh nonce for every challenge");
    let acts = p.frame(ACCEPTED | 2, Msg::AuthResponse { mac });
    assert_eq!(denied(&acts, ACCEPTED | 2), Some(Reason::ChallengeFailed));
    let s = p.stats();
    assert_eq!((s.auth_granted, s.auth_denied), (1, 1), "{s:?}");
}

#[test]
fn refuses_tokens_for_each_reason() {
    let mut p = cac();
    let (_, token) = grant(&mut p, ACCEPTED | 1);
    let mut forged = token.clone();
    *forged.last_mut().unwrap() ^= 1;
    let master_ip = MASTER.parse::<SocketAddr>().unwrap().ip();
    let expired = Token::issue(KEY, 7, "base1", master_ip, NOW_UNIX - 1, [0; 16]).encode();
    let cases = [
        (verify(&token, "10.0.1.1:7200", "not-an-address"), Reason::Protocol),
        (verify(&forged, "10.0.1.1:7200", "10.0.0.1"), Reason::BadToken),
        (verify(&token, "10.0.1.1:7200", "10.0.0.9"), Reason::BadToken),
        (verify(&token, "10.0.1.9:7200", "10.0.0.1"), Reason::PoNotInClass),
        (verify(&expired, "10.0.1.1:7200", "10.0.0.1"), Reason::Expired),
    ];
    for (i, (msg, want)) in cases.into_iter().enumerate() {
        let conn = ACCEPTED | (10 + i as u64);
        p.accepted(conn, PO);
        assert_eq!(denied(&p.frame(conn, msg), conn), Some(want), "case {i}");
    }
    // The class is gone after a reload: its tokens name no class here.
    p.m.reload(CacSettings { classes: vec![class("sec1", Some(b"s3cret"))], ..settings() });
    p.accepted(ACCEPTED | 20, PO);
    let acts = p.frame(ACCEPTED | 20, verify(&token, "10.0.1.1:7200", "10.0.0.1"));
    assert_eq!(denied(&acts, ACCEPTED | 20), Some(Reason::UnknownClass));
    let s = p.stats();
    assert_eq!((s.tokens_refused, s.protocol_errors, s.auth_denied, s.tokens_verified), (4, 1, 1, 0), "{s:?}");
}

#[test]
fn keeps_the_table_that_masters_report() {
    let mut p = cac();
    let (transfer, _) = grant(&mut p, ACCEPTED | 1);
    assert_eq!(table(&mut p, ACCEPTED | 2), [(transfer, "authorized".into(), "10.0.0.1".into())]);
    // The granted master reports; a stat query on its connection leaves it a master.
    assert!(p.frame(ACCEPTED | 1, progress(transfer, "base1", "sending")).is_empty());
    let acts = p.frame(ACCEPTED | 1, Msg::StatQuery);
    assert!(matches!(only(&acts, ACCEPTED | 1), Msg::StatReply { transfers } if transfers[0].state == "sending"));
    assert!(p.frame(ACCEPTED | 1, progress(transfer, "base1", "ok")).is_empty());
    // Another master of the class reports on a fresh connection (after a CAC failover).
    p.accepted(ACCEPTED | 3, "10.0.0.5:40009");
    assert!(p.frame(ACCEPTED | 3, progress_from("10.0.0.5", 99, "base1", "sending")).is_empty());
    let want = [(99, "sending".to_string(), "10.0.0.5".to_string()), (transfer, "ok".into(), "10.0.0.1".into())];
    assert_eq!(table(&mut p, ACCEPTED | 4), want);
    // Nobody else may write the table: a stranger, or a class this master may not push.
    p.accepted(ACCEPTED | 5, STRANGER);
    assert_eq!(
        denied(&p.frame(ACCEPTED | 5, progress(1, "base1", "ok")), ACCEPTED | 5),
        Some(Reason::MasterNotAllowed)
    );
    p.accepted(ACCEPTED | 6, MASTER);
    assert_eq!(denied(&p.frame(ACCEPTED | 6, progress(1, "nope", "ok")), ACCEPTED | 6), Some(Reason::MasterNotAllowed));
    assert_eq!(table(&mut p, ACCEPTED | 7).len(), 2);
}

#[test]
fn forgets_finished_transfers_after_an_hour_or_a_hundred() {
    let mut p = cac();
    p.accepted(ACCEPTED | 1, MASTER);
    assert!(p.frame(ACCEPTED | 1, progress(1000, "base1", "sending")).is_empty());
    for t in 1..=105 {
        p.frame(ACCEPTED | 1, progress(t, "base1", if t % 2 == 0 { "ok" } else { "failed" }));
        assert!(p.wait(Duration::from_secs(1)).is_empty());
    }
    let ids: Vec<u64> = table(&mut p, ACCEPTED | 2).into_iter().map(|t| t.0).collect();
    let want: Vec<u64> = [1000].into_iter().chain((6..=105).rev()).collect();
    assert_eq!(ids, want, "the live one, then the hundred most recent finished ones, newest first");
    // A live transfer whose master went silent for 10 minutes is gone; finished ones stay an hour.
    p.wait(Duration::from_secs(601));
    let ids: Vec<u64> = table(&mut p, ACCEPTED | 3).into_iter().map(|t| t.0).collect();
    assert_eq!(ids, (6..=105).rev().collect::<Vec<u64>>());
    p.wait(Duration::from_secs(3601));
    assert_eq!(table(&mut p, ACCEPTED | 4), []);
}

#[test]
fn unexpected_messages_are_protocol_errors() {
    let mut p = cac();
    let (_, token) = grant(&mut p, ACCEPTED | 1);
    // A master may not ask for tokens.
    let acts = p.frame(ACCEPTED | 1, verify(&token, "10.0.1.1:7200", "10.0.0.1"));
    assert_eq!(denied(&acts, ACCEPTED | 1), Some(Reason::Protocol));
    p.accepted(ACCEPTED | 2, MASTER);
    assert_eq!(
        denied(&p.frame(ACCEPTED | 2, Msg::AuthResponse { mac: [0; 32] }), ACCEPTED | 2),
        Some(Reason::Protocol)
    );
    p.accepted(ACCEPTED | 3, MASTER);
    let offer = Msg::Offer { token: token.clone(), po: "x".into(), manifest_id: [0; 16], manifest_len: 0, mode: 0 };
    assert_eq!(denied(&p.frame(ACCEPTED | 3, offer), ACCEPTED | 3), Some(Reason::Protocol));
    // A stat client may not become a master, nor may a challenged master ask for tokens.
    p.accepted(ACCEPTED | 4, MASTER);
    p.frame(ACCEPTED | 4, Msg::StatQuery);
    let acts = p.frame(ACCEPTED | 4, Msg::AuthRequest { class: "base1".into() });
    assert_eq!(denied(&acts, ACCEPTED | 4), Some(Reason::Protocol));
    p.accepted(ACCEPTED | 5, MASTER);
    p.frame(ACCEPTED | 5, Msg::AuthRequest { class: "sec1".into() });
    let acts = p.frame(ACCEPTED | 5, verify(&token, "10.0.1.1:7200", "10.0.0.1"));
    assert_eq!(denied(&acts, ACCEPTED | 5), Some(Reason::Protocol));
    // A frame on no connection of ours is dropped.
    assert!(p.frame(ACCEPTED | 99, Msg::StatQuery).is_empty());
    let s = p.stats();
    assert_eq!((s.protocol_errors, s.auth_granted), (5, 1), "{s:?}");
}

#[test]
fn closes_silent_connections_and_counts_broken_ones() {
    let mut p = cac();
    // Ten seconds to say something, then two minutes between requests.
    p.accepted(ACCEPTED | 1, PO);
    p.accepted(ACCEPTED | 2, PO);
    assert!(p.frame(ACCEPTED | 2, Msg::StatQuery).len() == 1);
    assert!(p.wait(Duration::from_secs(9)).is_empty());
    assert_eq!(closes(&p.wait(Duration::from_secs(2))), [ACCEPTED | 1]);
    assert!(p.wait(Duration::from_secs(100)).is_empty());
    assert_eq!(closes(&p.wait(Duration::from_secs(10))), [ACCEPTED | 2]);
    assert_eq!(p.m.poll_timeout(), None);
    // A clean close counts nothing; a broken one is a protocol error; other events are ignored.
    p.accepted(ACCEPTED | 3, PO);
    p.accepted(ACCEPTED | 4, PO);
    assert!(p.closed(ACCEPTED | 3, Close::Eof).is_empty());
    assert!(p.closed(ACCEPTED | 4, Close::Decode("bad magic".into())).is_empty());
    assert!(p.closed(ACCEPTED | 5, Close::Io("reset".into())).is_empty());
    assert!(p.connected(7).is_empty());
    assert!(p.event(Event::HookDone { id: 1, exit: 0, tail: String::new() }).is_empty());
    assert_eq!(p.stats(), Stats { protocol_errors: 1, ..Stats::default() });
}

/// Before any grant, only an address that may push some class may send frames over the
/// pre-authentication limit (up to a PROGRESS's): a master that lost its CAC reports on a
/// fresh connection.
#[test]
fn only_master_addresses_may_send_big_frames_before_a_grant() {
    let mut p = cac();
    // Raised to the largest frame a CAC takes, not beyond: no MANIFEST-sized frame.
    let raised = |acts: &[Action]| acts.iter().any(|a| matches!(a, Action::FrameLimit { max: cac::MAX_FRAME, .. }));
    assert!(raised(&p.accepted(ACCEPTED | 1, MASTER)));
    assert!(!raised(&p.accepted(ACCEPTED | 2, STRANGER)));
    assert!(!raised(&p.accepted(ACCEPTED | 3, PO)));
}

/// A class with site labels: the grant carries them, and the reports' bytes per site link
/// add up in the CAC's counters (names outside the class dropped, nothing counted twice),
/// and show in its STAT reply.
#[test]
fn sends_the_sites_with_the_grant_and_counts_what_masters_report() {
    let mut s = settings();
    s.classes[0].sites = vec!["".into(), "bj".into()];
    let (mut p, _) = Probe::new(CacMachine::new(s, Env::fixed(NOW_UNIX, 1)), Instant::now());
    p.accepted(ACCEPTED | 1, MASTER);
    let acts = p.frame(ACCEPTED | 1, Msg::AuthRequest { class: "base1".into() });
    let Msg::AuthGrant { transfer, sites, .. } = only(&acts, ACCEPTED | 1) else { panic!("{acts:?}") };
    assert_eq!(sites, ["", "bj"]);
    let link = |from: &str, to: &str, bytes| sites::SiteLink { from: from.into(), to: to.into(), bytes };
    let report = |links: Vec<sites::SiteLink>| {
        let Msg::Progress { mut stat, token } = progress(transfer, "base1", "sending") else { unreachable!() };
        stat.sites = links;
        Msg::Progress { stat, token }
    };
    p.frame(ACCEPTED | 1, report(vec![link("master", "bj", 100), link("mars", "bj", 1 << 40)]));
    p.frame(ACCEPTED | 1, report(vec![link("master", "bj", 60), link("bj", "bj", 70)]));
    p.frame(ACCEPTED | 1, report(vec![link("master", "bj", 130), link("bj", "bj", 70)]));
    assert_eq!(p.m.site_bytes(), [link("bj", "bj", 70), link("master", "bj", 130)]);
    p.accepted(ACCEPTED | 2, PO);
    let acts = p.frame(ACCEPTED | 2, Msg::StatQuery);
    let Msg::StatReply { transfers } = only(&acts, ACCEPTED | 2) else { panic!("{acts:?}") };
    assert_eq!(transfers[0].sites, [link("master", "bj", 130), link("bj", "bj", 70)]);
    // Without labels the grant carries none.
    let mut q = cac();
    q.accepted(ACCEPTED | 1, MASTER);
    let acts = q.frame(ACCEPTED | 1, Msg::AuthRequest { class: "base1".into() });
    assert!(matches!(only(&acts, ACCEPTED | 1), Msg::AuthGrant { sites, .. } if sites.is_empty()), "{acts:?}");
}
