//! What a connection, an offer or an abandoned transfer may cost a daemon (issue 14): small
//! frames until a peer is vouched for, the manifest only after the CAC's word, a bounded
//! number of offers waiting for it, the po's own identity to the CAC, and descriptors let go
//! when the master is gone.

use super::super::bitmap::bitmap;
use super::super::cac::{CacMachine, CacSettings, ClassAuth, ACCEPTS, MAX_FRAME};
use super::super::cidr::Cidr;
use super::super::po::PoSettings;
use super::super::*;
use super::mem::{MemSource, MemStore};
use super::po::*;
use super::probe::*;
use super::{class_pairs, world, Setup};
use std::time::Duration;

/// Whether `acts` changed `conn`'s frame limit at all.
fn limited(acts: &[Action], conn: ConnId) -> bool {
    acts.iter().any(|a| matches!(a, Action::FrameLimit { conn: c, .. } if *c == conn))
}

#[test]
fn frames_over_the_preauth_limit_flow_once_each_link_is_vouched_for() {
    // 64 KiB blocks: every block frame is over MAX_PREAUTH, on the master's control link, its
    // data links and the links between pos. The simulated network cuts off a frame over the
    // receiver's limit as the reactor does.
    for p2p in ["off", "on"] {
        let mut s = Setup { pos: 4, ..Default::default() };
        s.class.set("block_size", "64K").unwrap();
        s.class.set("p2p", p2p).unwrap();
        s.class.set("verify", "crc32").unwrap();
        let mut w = world(s);
        let o = w.run();
        assert!(matches!(o.result, master::TransferResult::Ok(_)), "p2p {p2p}: {o:?}");
        for i in 0..4 {
            assert_eq!(w.published(i).as_ref(), Some(&w.tree), "p2p {p2p} po {i}");
        }
    }
}

#[test]
fn a_masters_link_is_raised_only_once_the_cac_vouched() {
    let (m, _) = MemSource::one_file(3);
    let mut p = po_with(settings(), MemStore::default());
    assert!(!limited(&p.accepted(M, MASTER), M), "an accepted link starts small");
    p.accepted(M, MASTER);
    let acts = p.frame(M, offer(T, &m.encode()));
    assert!(!limited(&acts, M), "{acts:?}");
    let [(cac, _)] = connects(&acts)[..] else { panic!("{acts:?}") };
    p.connected(cac);
    let acts = p.frame(cac, Msg::VerifyOk { transfer: T, class_name: "base1".into(), class: class_pairs(&[]) });
    assert!(raised(&acts, M), "{acts:?}");
    assert_eq!(sent_on(&acts, M), [&Msg::Verified { transfer: T }]);
    // A refused offer is never raised.
    let conn = ACCEPTED | 9;
    let cac = asked(&mut p, conn, T + 1, &m);
    let acts = p.frame(cac, Msg::Denied { reason: msg::Reason::Expired, text: "old".into() });
    assert!(!limited(&acts, conn) && denied(&acts, conn).is_some(), "{acts:?}");
    // A master that comes back to resume is raised too, and asked for nothing.
    let (mut p, _) = receiving(3, &[]);
    p.closed(M, Close::Eof);
    let m2 = ACCEPTED | 2;
    let cac = asked(&mut p, m2, T, &m);
    let acts = p.frame(cac, Msg::VerifyOk { transfer: T, class_name: "base1".into(), class: class_pairs(&[]) });
    assert!(raised(&acts, m2), "{acts:?}");
    assert!(matches!(sent_on(&acts, m2)[..], [Msg::Accept { .. }]), "{acts:?}");
}

#[test]
fn the_cac_raises_a_masters_link_after_its_grant_only() {
    let mut cfg = ClassCfg::new("base1");
    cfg.set("dest", "/home/work/data/base").unwrap();
    let class = ClassAuth {
        cfg,
        pos: vec!["10.0.1.1:7200".parse().unwrap()],
        sites: Vec::new(),
        masters: vec![Cidr::parse("10.0.0.0/24").unwrap()],
        master_secret: None,
    };
    let settings = CacSettings { key: b"k".to_vec(), classes: vec![class], token_ttl: 60 };
    let (mut p, _) = Probe::new(CacMachine::new(settings, Env::fixed(1_800_000_000, 1)), Instant::now());
    for (conn, from, granted) in [(ACCEPTED | 1, "10.0.0.1:4000", true), (ACCEPTED | 2, "192.168.0.1:4000", false)] {
        p.accepted(conn, from);
        let acts = p.frame(conn, Msg::AuthRequest { class: "base1".into() });
        // Raised to the largest frame a CAC takes (a PROGRESS), never past it.
        let to_max = acts.iter().any(|a| matches!(a, Action::FrameLimit { conn: c, max: MAX_FRAME } if *c == conn));
        assert_eq!(to_max, granted, "{from}: {acts:?}");
        assert_eq!(limited(&acts, conn), granted);
    }
    p.accepted(ACCEPTED | 3, "10.0.1.1:4000");
    assert!(!limited(&p.frame(ACCEPTED | 3, Msg::StatQuery), ACCEPTED | 3));
    // Every connection takes only what a CAC answers: no manifest or block is ever buffered.
    let acts = p.accepted(ACCEPTED | 4, "10.0.0.1:4001");
    assert!(acts.iter().any(|a| matches!(a, Action::FrameTypes { types: ACCEPTS, .. })), "{acts:?}");
    assert!(!ACCEPTS.contains(wire::MsgType::Manifest) && !ACCEPTS.contains(wire::MsgType::Block));
}

#[test]
fn offers_waiting_for_the_cac_are_bounded_in_number_and_time() {
    let (m, _) = MemSource::one_file(3);
    let mut p = po_with(settings(), MemStore::default());
    let conn = |i: u64| ACCEPTED | (100 + i);
    for i in 0..64 {
        p.accepted(conn(i), MASTER);
        assert_eq!(connects(&p.frame(conn(i), offer(T + i, &m.encode()))).len(), 1, "offer {i}");
    }
    p.accepted(conn(64), MASTER);
    let acts = p.frame(conn(64), offer(T + 64, &m.encode()));
    assert_eq!(denied(&acts, conn(64)), Some(msg::Reason::Busy), "{acts:?}");
    assert!(connects(&acts).is_empty(), "a refused offer asks no CAC");
    // No CAC answers: each is given `cac_timeout` (3 s) in turn, then every offer is refused.
    p.wait(Duration::from_millis(3100));
    let acts = p.wait(Duration::from_millis(3100));
    for i in 0..64 {
        assert_eq!(denied(&acts, conn(i)), Some(msg::Reason::NoCac), "offer {i}");
    }
    // Room again.
    p.accepted(conn(65), MASTER);
    assert_eq!(connects(&p.frame(conn(65), offer(T + 65, &m.encode()))).len(), 1);
}

#[test]
fn a_connection_that_says_nothing_or_never_sends_its_manifest_is_closed() {
    let (m, _) = MemSource::one_file(3);
    let mut p = po_with(settings(), MemStore::default());
    p.accepted(ACCEPTED | 1, MASTER);
    assert!(p.wait(Duration::from_secs(9)).is_empty());
    assert_eq!(closes(&p.wait(Duration::from_secs(2))), [ACCEPTED | 1], "the handshake timeout");
    // Vouched for, asked for the manifest, never sends it: gone after the idle timeout.
    let cac = asked(&mut p, M, T, &m);
    let acts = p.frame(cac, Msg::VerifyOk { transfer: T, class_name: "base1".into(), class: class_pairs(&[]) });
    assert_eq!(sent_on(&acts, M), [&Msg::Verified { transfer: T }]);
    assert!(!closes(&p.wait(Duration::from_secs(119))).contains(&M));
    assert!(closes(&p.wait(Duration::from_secs(2))).contains(&M));
    assert_eq!(p.stats().transfers_active, 0);
}

#[test]
fn a_po_names_itself_to_the_cac_never_as_the_master_says() {
    let (m, _) = MemSource::one_file(3);
    let claimed = "10.0.1.2:7200"; // another po, of a class this one is not in
    let cases = [
        // A wildcard listen: the address the master reached, with our listen port.
        (None, "[::ffff:10.0.1.9]:7201", "10.0.1.9:7200"),
        // `advertise`, or a bound address (app::po passes either as `advertise`).
        (Some("10.0.1.1:7200"), "10.0.1.9:7200", "10.0.1.1:7200"),
    ];
    for (advertise, local, want) in cases {
        let mut p = po_with(PoSettings { advertise: advertise.map(Into::into), ..settings() }, MemStore::default());
        p.local = local.parse().unwrap();
        p.accepted(M, MASTER);
        let mut o = offer(T, &m.encode());
        if let Msg::Offer { po, .. } = &mut o {
            *po = claimed.into();
        }
        let acts = p.frame(M, o);
        let [(cac, _)] = connects(&acts)[..] else { panic!("{acts:?}") };
        let Msg::Verify { po, presenter, .. } = only(&p.connected(cac), cac) else { panic!() };
        assert_eq!((po.as_str(), presenter.as_str()), (want, "10.0.0.1"), "{advertise:?} {local}");
    }
}

#[test]
fn an_abandoned_transfer_lets_go_of_its_files_after_the_grace() {
    let (m, _) = MemSource::one_file(3);
    let (mut p, mut src) = receiving(3, &[]);
    p.frame(M, src.frame(T, 0, Verify::Crc32));
    // A master that comes back within the grace finds everything as it was.
    p.closed(M, Close::Io("reset".into()));
    p.wait(Duration::from_secs(20));
    let m2 = ACCEPTED | 2;
    let acts = offered(&mut p, m2, T, &m, class_pairs(&[]));
    assert_eq!(sent_on(&acts, m2), [&Msg::Accept { transfer: T, have: bitmap(&[true, false, false]) }]);
    p.wait(Duration::from_secs(60));
    assert!(p.m.store().released.is_empty(), "a linked transfer keeps its files");
    // Gone for good: 30 s later the store lets go of its files, and keeps the stage.
    p.closed(m2, Close::Eof);
    p.wait(Duration::from_secs(29));
    assert!(p.m.store().released.is_empty());
    p.wait(Duration::from_secs(2));
    assert_eq!(p.m.store().released, [T]);
    assert!(p.m.store().staged.contains_key(&T));
    p.wait(Duration::from_secs(60));
    assert_eq!(p.m.store().released, [T], "once");
    // A later master still resumes it; at the class timeout it is dropped for good.
    let m3 = ACCEPTED | 3;
    let acts = offered(&mut p, m3, T, &m, class_pairs(&[]));
    assert_eq!(sent_on(&acts, m3), [&Msg::Accept { transfer: T, have: bitmap(&[true, false, false]) }]);
    p.closed(m3, Close::Eof);
    p.wait(Duration::from_secs(3600));
    assert_eq!(p.m.store().released, [T, T]);
    assert_eq!(p.stats().transfers_active, 0);
    assert!(p.m.store().staged.is_empty(), "expiry leaves nothing held");
}
