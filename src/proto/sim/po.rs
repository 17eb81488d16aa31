//! The po driven by hand: the test is its master, its CACs and its neighbours. Every arm it
//! handles, and the test that reaches it:
//!
//! | connection + message or event                  | test                                      |
//! |------------------------------------------------|-------------------------------------------|
//! | New + Offer; Verified, then Manifest (good, garbage, not the one named) | `publishes_on_commit`, `refuses_offers_it_cannot_take` |
//! | CAC Connected: Verify                          | `publishes_on_commit`                     |
//! | CAC + VerifyOk (good, other transfer, bad class, block size, dest, disk) | `refuses_offers_it_cannot_take` |
//! | CAC + Denied: passed on                        | `refuses_offers_it_cannot_take`           |
//! | CAC + anything else, Closed, timed out: next CAC; none left: NoCac | `asks_the_next_cac_when_one_fails` |
//! | Master + Block (control: good, bad sum, past the end, short) | `publishes_on_commit`, `a_bad_block_from_the_master_fails_the_transfer` |
//! | Master + Commit (ready, published, too early)  | `publishes_on_commit`, `a_commit_before_every_block_fails_the_transfer` |
//! | Master + Abort                                 | `an_abort_drops_the_transfer`             |
//! | Master + Wave (canary, rollback, decided; refused after the decision, from another master) | `a_canary_rolls_back_only_while_its_wave_is_undecided` |
//! | Master + Ping, StatQuery                       | `publishes_on_commit`                     |
//! | Master + Peers, Connected peer: PeerHello      | `a_hello_with_the_right_proof_is_admitted`|
//! | Master + Sums; peer blocks parked until then, Unsent past the bound | `peer_blocks_wait_for_their_checksum` |
//! | Master + Push (linked, waiting, not held, link never up) | `serves_pushes_to_its_neighbours` |
//! | Closed peer link with pushes waiting: Unsent   | `a_lost_peer_link_gives_its_pushes_back`  |
//! | Master + Check / CheckSums (resume)            | `resumed_blocks_count_only_with_the_masters_digest` |
//! | Master + anything else: Denied Protocol        | `unexpected_messages_are_protocol_errors` |
//! | New + PeerHello: right / wrong proof, unknown token, master's data link | `a_hello_with_the_right_proof_is_admitted` |
//! | New + PeerHello before PEERS: parked, then judged | `a_hello_before_peers_is_judged_when_they_come` |
//! | Peer + Block with a wrong digest: Bad, transfer goes on | `a_peer_block_with_a_wrong_digest_is_reported_bad` |
//! | Peer + Block past the end or short: that link closes | `a_bad_frame_from_a_peer_closes_only_its_link` |
//! | MasterData + Block, Peer / MasterData + Ping   | `a_hello_with_the_right_proof_is_admitted`|
//! | New / Stat + StatQuery; New + other: Denied    | `unexpected_messages_are_protocol_errors` |
//! | Closed: New (clean, broken), Peer, MasterData, Master (links close; transfer kept) | `unexpected_messages_are_protocol_errors`, `losing_the_master_keeps_the_transfer`, `swarm_links_close_with_the_master` |
//! | timeouts: handshake, stat idle, link wait, class timeout | `unexpected_messages_are_protocol_errors`, `serves_pushes_to_its_neighbours`, `losing_the_master_keeps_the_transfer` |
//! | HookDone (and no hook_dir)                     | `a_hook_runs_after_publish_and_reports_in_done` |
//! | Verified: good, bad, lost; in any order; after abort, expiry or a new offer (`sim::checks`) | `verdicts_in_any_order_count_each_block_once_it_is_good`, `a_bad_verdict_out_of_order_charges_only_its_peer`, `verdicts_after_abort_or_expiry_change_nothing`, `a_check_that_never_finished_fails_the_transfer_loudly` |

use super::super::auth::{link_key, Token};
use super::super::bitmap::bitmap;
use super::super::checksum::digest;
use super::super::msg::{PeerLink, Reason};
use super::super::po::{PoMachine, PoSettings};
use super::super::swarm::MASTER_PEER;
use super::super::*;
use super::mem::{MemSource, MemStore};
use super::probe::*;
use super::{class_pairs, po_settings, TRANSFER_KEY};
use std::sync::Arc;
use std::time::Duration;

pub(super) const MASTER: &str = "10.0.0.1:40001";
const PEER: &str = "10.0.1.2:40002";
pub(super) const M: ConnId = ACCEPTED | 1;
pub(super) const T: u64 = 77;
const KEY: [u8; 32] = TRANSFER_KEY;

pub(super) type Po = Probe<PoMachine<MemStore>>;

pub(super) fn settings() -> PoSettings {
    po_settings("10.0.1.1:7200", &["10.0.0.2:7100", "10.0.0.3:7100"])
}

pub(super) fn po_with(settings: PoSettings, store: MemStore) -> Po {
    let (p, first) = Probe::new(PoMachine::new(settings, store), Instant::now());
    assert!(matches!(first[..], [Action::SetRates { upload: 0, download: 0 }]), "{first:?}");
    p
}

pub(super) fn token(transfer: u64) -> Vec<u8> {
    Token::issue(b"cluster-key", transfer, "base1", "10.0.0.1".parse().unwrap(), u64::MAX, [1; 16]).encode()
}

/// The offer of `transfer` naming the manifest encoded as `bytes`.
pub(super) fn offer(transfer: u64, bytes: &[u8]) -> Msg {
    let (manifest_id, manifest_len) = (Manifest::id_of(bytes), bytes.len() as u64);
    Msg::Offer { token: token(transfer), po: "ignored".into(), manifest_id, manifest_len, mode: 0 }
}

/// Master `conn` offers `m` as `transfer`; returns the CAC connection the po dialled to check.
pub(super) fn asked(p: &mut Po, conn: ConnId, transfer: u64, m: &Manifest) -> ConnId {
    p.accepted(conn, MASTER);
    let acts = p.frame(conn, offer(transfer, &m.encode()));
    let [(cac, addr)] = connects(&acts)[..] else { panic!("{acts:?}") };
    assert_eq!(addr.to_string(), "10.0.0.2:7100");
    let acts = p.connected(cac);
    // The po presents itself by its advertised address, and the master by the address it came from.
    let verify = Msg::Verify { token: token(transfer), po: "10.0.1.1:7200".into(), presenter: "10.0.0.1".into() };
    assert_eq!(only(&acts, cac), verify);
    cac
}

/// Master `conn` offers `m` and the CAC vouches for it with `pairs`: what the po did then.
pub(super) fn offered(
    p: &mut Po,
    conn: ConnId,
    transfer: u64,
    m: &Manifest,
    pairs: Vec<(String, String)>,
) -> Vec<Action> {
    let cac = asked(p, conn, transfer, m);
    let acts = p.frame(cac, Msg::VerifyOk { transfer, class_name: "base1".into(), class: pairs });
    assert!(closes(&acts).contains(&cac), "{acts:?}");
    manifest_if_asked(p, conn, transfer, acts, &m.encode())
}

/// `acts` if the po did not ask master `conn` for the manifest (`Verified`); else what the
/// po did with the manifest `bytes`.
pub(super) fn manifest_if_asked(
    p: &mut Po,
    conn: ConnId,
    transfer: u64,
    acts: Vec<Action>,
    bytes: &[u8],
) -> Vec<Action> {
    if sent_on(&acts, conn) != [&Msg::Verified { transfer }] {
        return acts;
    }
    p.frame(conn, Msg::Manifest { transfer, manifest: Arc::new(bytes.to_vec()) })
}

/// A po that accepted transfer `T` of `blocks` blocks from master `M`, and the source.
pub(super) fn receiving(blocks: u64, extra: &[(&str, &str)]) -> (Po, MemSource) {
    let (m, src) = MemSource::one_file(blocks);
    let mut p = po_with(settings(), MemStore::default());
    let acts = offered(&mut p, M, T, &m, class_pairs(extra));
    assert_eq!(sent_on(&acts, M), [&Msg::Accept { transfer: T, have: bitmap(&vec![false; blocks as usize]) }]);
    (p, src)
}

pub(super) fn have(b: u64) -> Msg {
    Msg::Have { transfer: T, blocks: vec![b] }
}

/// The PEERS of po 0: po 1 dials us, we dial po 2.
fn peers() -> Msg {
    let links = vec![
        PeerLink { idx: 1, addr: String::new(), key: link_key(&KEY, 0, 1) },
        PeerLink { idx: 2, addr: "10.0.1.3:7200".into(), key: link_key(&KEY, 0, 2) },
    ];
    Msg::Peers { transfer: T, me: 0, master_key: link_key(&KEY, 0, MASTER_PEER), links }
}

fn hello(me: u32, proof: [u8; 32]) -> Msg {
    Msg::PeerHello { token: token(T), me, proof }
}

/// The master's digests of the first `n` blocks.
pub(super) fn sums(src: &mut MemSource, n: u64) -> Msg {
    let sums = (0..n).map(|i| (i, block_sum(src.frame(T, i, Verify::Blake3)))).collect();
    Msg::Sums { transfer: T, sums }
}

fn block_sum(m: Msg) -> Sum {
    let Msg::Block { head, .. } = m else { unreachable!() };
    head.sum
}

/// Block frame `msg` with its head and bytes changed by `f`.
fn bend(msg: Msg, f: impl Fn(&mut BlockHead, &mut Vec<u8>)) -> Msg {
    let Msg::Block { mut head, data } = msg else { unreachable!() };
    let mut bytes = data.bytes().to_vec();
    f(&mut head, &mut bytes);
    Msg::Block { head, data: Payload::from_vec(bytes) }
}

/// Block `i` with its first byte changed, and the sender's own checksum of what it sends.
pub(super) fn forged(src: &mut MemSource, i: u64) -> Msg {
    bend(src.frame(T, i, Verify::Blake3), |h, b| {
        b[0] ^= 1;
        h.sum = Sum::of(Verify::Blake3, b);
    })
}

/// A p2p po that took PEERS; returns the connection it dialled to po 2.
pub(super) fn in_swarm(blocks: u64) -> (Po, MemSource, ConnId) {
    let (mut p, src) = receiving(blocks, &[("p2p", "on")]);
    let acts = p.frame(M, peers());
    let [(to2, addr)] = connects(&acts)[..] else { panic!("{acts:?}") };
    assert_eq!(addr.to_string(), "10.0.1.3:7200");
    (p, src, to2)
}

/// Po 1 dials in on `conn` with the key of our link.
pub(super) fn admit_po1(p: &mut Po, conn: ConnId) {
    p.accepted(conn, PEER);
    let acts = p.frame(conn, hello(1, link_key(&KEY, 0, 1)));
    assert!(matches!(acts[..], [Action::FrameLimit { .. }]) && raised(&acts, conn), "{acts:?}");
}

#[test]
fn publishes_on_commit() {
    let (mut p, mut src) = receiving(3, &[]);
    assert_eq!(sent_on(&p.frame(M, src.frame(T, 0, Verify::Crc32)), M), [&have(0)]);
    assert_eq!(sent_on(&p.frame(M, src.frame(T, 1, Verify::Crc32)), M), [&have(1)]);
    let acts = p.frame(M, src.frame(T, 2, Verify::Crc32));
    assert_eq!(sent_on(&acts, M), [&have(2), &Msg::Ready { transfer: T }]);
    // A ping from its master is answered: that is how the master tells a live po from a stopped one.
    assert_eq!(sent_on(&p.frame(M, Msg::Ping), M), [&Msg::Ping]);
    let Msg::StatReply { transfers } = only(&p.frame(M, Msg::StatQuery), M) else { panic!() };
    assert_eq!((transfers[0].state.as_str(), transfers[0].done), ("ready", 2 * 4096 + 1000));
    let done = Msg::Done {
        transfer: T,
        files: 1,
        bytes: 2 * 4096 + 1000,
        hook_exit: None,
        hook_tail: String::new(),
        unchanged: false,
    };
    assert_eq!(sent_on(&p.frame(M, Msg::Commit { transfer: T }), M), [&done]);
    assert!(p.frame(M, Msg::Commit { transfer: T }).is_empty(), "a second COMMIT changes nothing");
    assert!(p.frame(M, src.frame(T, 1, Verify::Crc32)).is_empty(), "a late block changes nothing");
    assert!(p.m.store().published["/home/work/data/base"].contains_key("f.bin"));
    let s = p.stats();
    assert_eq!((s.blocks_received, s.bytes_received), (3, 2 * 4096 + 1000), "{s:?}");
    assert_eq!((s.transfers_published, s.transfers_active, s.transfers_failed), (1, 0, 0), "{s:?}");
}

#[test]
fn a_canary_rolls_back_only_while_its_wave_is_undecided() {
    use super::super::msg::WaveStep;
    let wave = |step| Msg::Wave { transfer: T, step };
    let dest = "/home/work/data/base";
    for decided_first in [false, true] {
        let (mut p, mut src) = receiving(3, &[]);
        p.m.store_mut().published.insert(dest.into(), [("old.txt".to_string(), "v1".to_string())].into());
        for b in 0..3 {
            p.frame(M, src.frame(T, b, Verify::Crc32));
        }
        // A WAVE on another master's connection names no transfer of its own: refused there.
        let other = ACCEPTED | 9;
        p.accepted(other, MASTER);
        let acts = p.frame(other, wave(WaveStep::Rollback));
        assert!(matches!(sent_on(&acts, other)[..], [Msg::Denied { reason: Reason::Protocol, .. }]), "{acts:?}");
        // The canary commit publishes and keeps the old tree aside.
        let acts = p.frame(M, wave(WaveStep::Canary));
        assert!(matches!(sent_on(&acts, M)[..], [Msg::Done { .. }]), "{acts:?}");
        assert!(p.m.store().published[dest].contains_key("f.bin"));
        assert!(p.frame(M, wave(WaveStep::Canary)).is_empty(), "said twice");
        if decided_first {
            assert!(p.frame(M, wave(WaveStep::Decided)).is_empty());
            // After the decision a rollback is refused: the new tree stays.
            assert!(p.frame(M, wave(WaveStep::Rollback)).is_empty());
            assert!(p.m.store().published[dest].contains_key("f.bin"));
            assert!(p.m.store().asides.is_empty());
        } else {
            let acts = p.frame(M, wave(WaveStep::Rollback));
            let [Msg::Failed { error, .. }] = &sent_on(&acts, M)[..] else { panic!("{acts:?}") };
            assert!(error.starts_with("rolled back"), "{error}");
            assert_eq!(p.m.store().published[dest], [("old.txt".to_string(), "v1".to_string())].into());
            assert!(p.frame(M, wave(WaveStep::Rollback)).is_empty(), "a second rollback does nothing");
        }
    }
    // A po that is no canary (published on COMMIT) never rolls back.
    let (mut p, mut src) = receiving(3, &[]);
    for b in 0..3 {
        p.frame(M, src.frame(T, b, Verify::Crc32));
    }
    p.frame(M, Msg::Commit { transfer: T });
    assert!(p.frame(M, wave(WaveStep::Rollback)).is_empty());
    assert!(p.m.store().published[dest].contains_key("f.bin"));
}

#[test]
fn refuses_offers_it_cannot_take() {
    let (m, _) = MemSource::one_file(3);
    let mut p = po_with(settings(), MemStore::default());
    let verify_ok = |transfer, class| Msg::VerifyOk { transfer, class_name: "base1".into(), class };
    // A manifest that does not decode, or is not the one the offer named (length, id).
    let me = m.encode();
    let garbage = vec![1, 2, 3];
    let (id, len) = (Manifest::id_of(&me), me.len() as u64);
    let bad = [(Manifest::id_of(&garbage), 3, &garbage), (id, len + 1, &me), ([0; 16], len, &me)];
    for (i, (manifest_id, manifest_len, bytes)) in bad.into_iter().enumerate() {
        let conn = ACCEPTED | (20 + i as u64);
        p.accepted(conn, MASTER);
        let acts = p.frame(conn, Msg::Offer { token: token(T), po: String::new(), manifest_id, manifest_len, mode: 0 });
        let [(cac, _)] = connects(&acts)[..] else { panic!("{acts:?}") };
        p.connected(cac);
        let acts = p.frame(cac, verify_ok(T, class_pairs(&[])));
        let acts = manifest_if_asked(&mut p, conn, T, acts, bytes);
        assert_eq!(denied(&acts, conn), Some(Reason::BadManifest), "case {i}: {acts:?}");
    }
    let cases = [
        (verify_ok(T + 1, class_pairs(&[])), Reason::BadToken),
        (verify_ok(T, vec![("verify".into(), "sha0".into())]), Reason::Protocol),
        (verify_ok(T, class_pairs(&[("block_size", "8K")])), Reason::BadManifest),
        (verify_ok(T, class_pairs(&[("dest", "/etc")])), Reason::DestNotAllowed),
        (verify_ok(T, class_pairs(&[("dest", "/home/work/data/../../etc")])), Reason::DestNotAllowed),
        // The CAC's own refusal goes to the master as it is.
        (Msg::Denied { reason: Reason::Expired, text: "old".into() }, Reason::Expired),
    ];
    for (i, (answer, want)) in cases.into_iter().enumerate() {
        let conn = ACCEPTED | (10 + i as u64);
        let cac = asked(&mut p, conn, T, &m);
        let acts = p.frame(cac, answer);
        assert!(connects(&acts).is_empty(), "a CAC that answered is not asked again");
        let acts = manifest_if_asked(&mut p, conn, T, acts, &me);
        assert_eq!(denied(&acts, conn), Some(want), "case {i}: {acts:?}");
    }
    let mut p = po_with(settings(), MemStore { fail_prepare: true, ..Default::default() });
    assert_eq!(denied(&offered(&mut p, M, T, &m, class_pairs(&[])), M), Some(Reason::Disk));
    assert_eq!(p.stats().transfers_active, 0);
}

#[test]
fn asks_the_next_cac_when_one_fails() {
    let (m, _) = MemSource::one_file(3);
    let mut p = po_with(settings(), MemStore::default());
    // The first CAC sends something else: the second is asked.
    let cac = asked(&mut p, M, T, &m);
    let acts = p.frame(cac, Msg::StatQuery);
    assert!(closes(&acts).contains(&cac));
    let [(second, addr)] = connects(&acts)[..] else { panic!("{acts:?}") };
    assert_eq!(addr.to_string(), "10.0.0.3:7100");
    // The second cannot be reached: none is left.
    let acts = p.closed(second, Close::Connect("refused".into()));
    assert_eq!(denied(&acts, M), Some(Reason::NoCac));
    // A CAC that says nothing is given up after `cac_timeout`.
    let cac = asked(&mut p, ACCEPTED | 2, T, &m);
    assert!(p.wait(Duration::from_millis(2900)).is_empty());
    let acts = p.wait(Duration::from_millis(200));
    assert!(closes(&acts).contains(&cac));
    let [(second, _)] = connects(&acts)[..] else { panic!("{acts:?}") };
    let acts = p.connected(second);
    assert!(matches!(only(&acts, second), Msg::Verify { .. }));
    let acts = p.frame(second, Msg::VerifyOk { transfer: T, class_name: "base1".into(), class: class_pairs(&[]) });
    let acts = manifest_if_asked(&mut p, ACCEPTED | 2, T, acts, &m.encode());
    assert!(matches!(sent_on(&acts, ACCEPTED | 2)[..], [Msg::Accept { .. }]), "{acts:?}");
}

#[test]
fn a_bad_block_from_the_master_fails_the_transfer() {
    type Bend = fn(&mut BlockHead, &mut Vec<u8>);
    let cases: [(u64, Bend, &str); 3] = [
        (0, |_, b| b[9] ^= 1, "failed its crc32 check"),
        (0, |h, _| h.index = 99, "past the end"),
        (2, |_, b| b.truncate(10), "has 10 bytes, expected 1000"),
    ];
    for (i, f, want) in cases {
        let (mut p, mut src) = receiving(3, &[]);
        let acts = p.frame(M, bend(src.frame(T, i, Verify::Crc32), f));
        let [Msg::Failed { transfer: T, error }] = &sent_on(&acts, M)[..] else { panic!("{acts:?}") };
        assert!(error.contains(want), "{error}");
        let s = p.stats();
        assert_eq!((s.transfers_failed, s.transfers_active, s.verify_failures), (1, 0, want.contains("crc") as u64));
        assert!(p.frame(M, src.frame(T, 1, Verify::Crc32)).is_empty(), "a failed transfer takes no more blocks");
    }
}

#[test]
fn a_commit_before_every_block_fails_the_transfer() {
    let (mut p, mut src) = receiving(3, &[]);
    p.frame(M, src.frame(T, 0, Verify::Crc32));
    let acts = p.frame(M, Msg::Commit { transfer: T });
    let [Msg::Failed { error, .. }] = &sent_on(&acts, M)[..] else { panic!("{acts:?}") };
    assert!(error.contains("COMMIT before every block"), "{error}");
    assert_eq!(p.stats().transfers_failed, 1);
}

#[test]
fn an_abort_drops_the_transfer() {
    let (mut p, mut src) = receiving(3, &[]);
    p.frame(M, src.frame(T, 0, Verify::Crc32));
    assert!(p.frame(M, Msg::Abort { transfer: T, reason: "operator".into() }).is_empty());
    assert!(p.m.store().staged.is_empty());
    assert_eq!(only(&p.frame(M, Msg::StatQuery), M), Msg::StatReply { transfers: vec![] });
}

#[test]
fn losing_the_master_keeps_the_transfer() {
    let (mut p, mut src) = receiving(3, &[]);
    p.frame(M, src.frame(T, 0, Verify::Crc32));
    assert!(p.closed(M, Close::Io("reset".into())).is_empty());
    // A master that comes back picks up where the last one left, at each stage.
    let (m, _) = MemSource::one_file(3);
    let m2 = ACCEPTED | 2;
    let acts = offered(&mut p, m2, T, &m, class_pairs(&[]));
    assert_eq!(sent_on(&acts, m2), [&Msg::Accept { transfer: T, have: bitmap(&[true, false, false]) }]);
    p.frame(m2, src.frame(T, 1, Verify::Crc32));
    p.frame(m2, src.frame(T, 2, Verify::Crc32));
    p.closed(m2, Close::Eof);
    let m3 = ACCEPTED | 3;
    let acts = offered(&mut p, m3, T, &m, class_pairs(&[]));
    let all = Msg::Accept { transfer: T, have: bitmap(&[true; 3]) };
    assert_eq!(sent_on(&acts, m3), [&all, &Msg::Ready { transfer: T }]);
    p.frame(m3, Msg::Commit { transfer: T });
    p.closed(m3, Close::Eof);
    let m4 = ACCEPTED | 4;
    let acts = offered(&mut p, m4, T, &m, class_pairs(&[]));
    assert!(matches!(sent_on(&acts, m4)[..], [Msg::Accept { .. }, Msg::Ready { .. }, Msg::Done { .. }]), "{acts:?}");
    p.closed(m4, Close::Eof);
    // A new transfer of the same tree replaces the one whose master is gone.
    let m5 = ACCEPTED | 5;
    offered(&mut p, m5, T + 1, &m, class_pairs(&[]));
    let Msg::StatReply { transfers } = only(&p.frame(m5, Msg::StatQuery), m5) else { panic!() };
    assert_eq!(transfers.iter().map(|t| t.transfer).collect::<Vec<_>>(), [T + 1]);
    // Left without a master, it is forgotten at the class timeout (an hour).
    p.closed(m5, Close::Eof);
    p.wait(Duration::from_secs(3599));
    assert_eq!(p.stats().transfers_active, 1);
    p.wait(Duration::from_secs(2));
    assert_eq!(p.stats().transfers_active, 0);
    assert!(p.m.store().staged.is_empty());
}

#[test]
fn a_hook_runs_after_publish_and_reports_in_done() {
    let (mut p, mut src) = receiving(1, &[("hook", "notify.sh"), ("publish", "each")]);
    let acts = p.frame(M, src.frame(T, 0, Verify::Crc32));
    assert_eq!(sent_on(&acts, M), [&have(0), &Msg::Ready { transfer: T }], "publish = each needs no COMMIT");
    let Some(Action::RunHook { id: T, dir, name, env, .. }) = acts.last() else { panic!("{acts:?}") };
    assert_eq!((dir.as_str(), name.as_str()), ("/etc/wugui/hooks", "notify.sh"));
    assert!(env.contains(&("WUGUI_DEST".into(), "/home/work/data/base".into())), "{env:?}");
    let acts = p.event(Event::HookDone { id: T, exit: 3, tail: "one\nboom".into() });
    let done = Msg::Done {
        transfer: T,
        files: 1,
        bytes: 1000,
        hook_exit: Some(3),
        hook_tail: "one\nboom".into(),
        unchanged: false,
    };
    assert_eq!(sent_on(&acts, M), [&done]);
    assert_eq!(p.stats().hook_failures, 1);
    // Without a hook_dir the hook cannot run, and DONE says so at once. A class rate limit
    // caps this host's upload for the transfer.
    let (m, mut src) = MemSource::one_file(1);
    let mut p = po_with(PoSettings { hook_dir: None, ..settings() }, MemStore::default());
    let acts = offered(&mut p, M, T, &m, class_pairs(&[("hook", "notify.sh"), ("rate_limit", "1M")]));
    assert!(acts.iter().any(|a| matches!(a, Action::SetRates { upload: 1048576, download: 0 })), "{acts:?}");
    p.frame(M, src.frame(T, 0, Verify::Crc32));
    let acts = p.frame(M, Msg::Commit { transfer: T });
    assert!(
        matches!(only(&acts, M), Msg::Done { hook_exit: Some(-1), hook_tail, .. } if hook_tail.contains("no hook_dir"))
    );
}

#[test]
fn resumed_blocks_count_only_with_the_masters_digest() {
    let (m, mut src) = MemSource::one_file(3);
    let bytes = |src: &mut MemSource, i: u64| match src.frame(T, i, Verify::None) {
        Msg::Block { data, .. } => data.bytes().to_vec(),
        _ => unreachable!(),
    };
    // Block 0 was staged whole by an earlier attempt; block 1 was not (or was forged).
    let resumable = [(0, bytes(&mut src, 0)), (1, vec![7; 4096])].into();
    let mut p = po_with(settings(), MemStore { resumable, ..Default::default() });
    let acts = offered(&mut p, M, T, &m, class_pairs(&[]));
    assert_eq!(sent_on(&acts, M), [&Msg::Check { transfer: T, blocks: vec![0, 1] }]);
    let sums = (0..3).map(|i| (i, digest(&bytes(&mut src, i)))).collect();
    let acts = p.frame(M, Msg::CheckSums { transfer: T, sums });
    assert_eq!(sent_on(&acts, M), [&Msg::Accept { transfer: T, have: bitmap(&[true, false, false]) }]);
    assert!(p.frame(M, Msg::CheckSums { transfer: T, sums: vec![] }).is_empty(), "asked once, answered once");
    p.frame(M, src.frame(T, 1, Verify::Crc32));
    let acts = p.frame(M, src.frame(T, 2, Verify::Crc32));
    assert_eq!(sent_on(&acts, M), [&have(2), &Msg::Ready { transfer: T }]);
}

#[test]
fn unexpected_messages_are_protocol_errors() {
    let (mut p, mut src) = receiving(3, &[]);
    // A stranger's block, a second offer on a master's connection, a block of another transfer.
    p.accepted(ACCEPTED | 2, PEER);
    assert_eq!(denied(&p.frame(ACCEPTED | 2, src.frame(T, 0, Verify::Crc32)), ACCEPTED | 2), Some(Reason::Protocol));
    let (m, _) = MemSource::one_file(3);
    let again = offer(T, &m.encode());
    let (mut q, _) = receiving(3, &[]);
    assert_eq!(denied(&q.frame(M, again), M), Some(Reason::Protocol));
    assert_eq!(denied(&p.frame(M, src.frame(T + 1, 0, Verify::Crc32)), M), Some(Reason::Protocol));
    // A stat client is served until it idles out; a silent stranger goes after ten seconds.
    p.accepted(ACCEPTED | 3, PEER);
    for _ in 0..2 {
        assert!(matches!(only(&p.frame(ACCEPTED | 3, Msg::StatQuery), ACCEPTED | 3), Msg::StatReply { .. }));
    }
    p.accepted(ACCEPTED | 4, PEER);
    assert_eq!(closes(&p.wait(Duration::from_secs(11))), [ACCEPTED | 4]);
    assert_eq!(closes(&p.wait(Duration::from_secs(110))), [ACCEPTED | 3]);
    // Garbage closes count, and so do those timeouts; clean closes do not.
    p.accepted(ACCEPTED | 5, PEER);
    p.accepted(ACCEPTED | 6, PEER);
    p.closed(ACCEPTED | 5, Close::Eof);
    p.closed(ACCEPTED | 6, Close::Decode("bad magic".into()));
    assert_eq!(p.stats().protocol_errors, 3);
}

#[test]
fn a_hello_with_the_right_proof_is_admitted() {
    let (mut p, mut src, to2) = in_swarm(3);
    // We dial po 2 and prove the link with its key.
    assert_eq!(only(&p.connected(to2), to2), hello(0, link_key(&KEY, 0, 2)));
    admit_po1(&mut p, ACCEPTED | 2);
    let refused = [
        hello(1, link_key(&KEY, 0, 2)),                     // a real key, of another link
        hello(7, link_key(&KEY, 0, 7)),                     // not a neighbour: no key for it here
        hello(MASTER_PEER, link_key(&KEY, 1, MASTER_PEER)), // po 1's data link key
        Msg::PeerHello { token: token(T + 1), me: 1, proof: link_key(&KEY, 0, 1) },
    ];
    for (i, h) in refused.into_iter().enumerate() {
        let conn = ACCEPTED | (10 + i as u64);
        p.accepted(conn, PEER);
        assert_eq!(denied(&p.frame(conn, h), conn), Some(Reason::BadToken), "hello {i}");
    }
    assert_eq!(p.stats().peer_errors, 4);
    // The master's data link proves itself with the key PEERS gave us.
    let data = ACCEPTED | 3;
    p.accepted(data, MASTER);
    let acts = p.frame(data, hello(MASTER_PEER, link_key(&KEY, 0, MASTER_PEER)));
    assert!(matches!(acts[..], [Action::FrameLimit { .. }]) && raised(&acts, data), "{acts:?}");
    p.frame(M, sums(&mut src, 3));
    assert_eq!(sent_on(&p.frame(ACCEPTED | 2, src.frame(T, 0, Verify::Blake3)), M), [&have(0)]);
    assert_eq!(sent_on(&p.frame(data, src.frame(T, 1, Verify::Blake3)), M), [&have(1)]);
    assert!(p.frame(ACCEPTED | 2, Msg::Ping).is_empty() && p.frame(data, Msg::Ping).is_empty());
    // Nothing counts on a refused link.
    assert!(p.frame(ACCEPTED | 10, src.frame(T, 2, Verify::Blake3)).is_empty());
    assert!(p.closed(data, Close::Eof).is_empty());
}

#[test]
fn a_hello_before_peers_is_judged_when_they_come() {
    let (mut p, mut src) = receiving(3, &[("p2p", "on")]);
    p.accepted(ACCEPTED | 2, PEER);
    assert!(p.frame(ACCEPTED | 2, hello(1, link_key(&KEY, 0, 1))).is_empty());
    p.accepted(ACCEPTED | 3, PEER);
    assert!(p.frame(ACCEPTED | 3, hello(1, [9; 32])).is_empty(), "no key to judge it by yet");
    let acts = p.frame(M, peers());
    assert_eq!(connects(&acts).len(), 1);
    assert_eq!(denied(&acts, ACCEPTED | 3), Some(Reason::BadToken));
    assert!(!closes(&acts).contains(&(ACCEPTED | 2)));
    p.frame(M, sums(&mut src, 3));
    assert_eq!(sent_on(&p.frame(ACCEPTED | 2, src.frame(T, 0, Verify::Blake3)), M), [&have(0)]);
}

#[test]
fn a_peer_block_with_a_wrong_digest_is_reported_bad() {
    let (mut p, mut src, _) = in_swarm(3);
    admit_po1(&mut p, ACCEPTED | 2);
    p.frame(M, sums(&mut src, 3));
    // Its own checksum matches what it sends; the master's digest does not.
    let acts = p.frame(ACCEPTED | 2, forged(&mut src, 0));
    assert_eq!(sent_on(&acts, M), [&Msg::Bad { transfer: T, block: 0, from: 1 }]);
    assert!(closes(&acts).is_empty());
    let s = p.stats();
    assert_eq!((s.verify_failures, s.transfers_failed, s.transfers_active, s.blocks_received), (1, 0, 1, 0));
    assert_eq!(sent_on(&p.frame(ACCEPTED | 2, src.frame(T, 0, Verify::Blake3)), M), [&have(0)]);
}

#[test]
fn a_bad_frame_from_a_peer_closes_only_its_link() {
    let (mut p, mut src, _) = in_swarm(3);
    admit_po1(&mut p, ACCEPTED | 2);
    p.frame(M, sums(&mut src, 3));
    // Past the end: nothing to fetch again, the link goes.
    let acts = p.frame(ACCEPTED | 2, bend(src.frame(T, 0, Verify::Blake3), |h, _| h.index = 99));
    assert_eq!((closes(&acts), sent(&acts).len()), (vec![ACCEPTED | 2], 0), "{acts:?}");
    assert!(p.frame(ACCEPTED | 2, src.frame(T, 0, Verify::Blake3)).is_empty(), "the link is gone");
    // Short: the link goes and the master fetches the block elsewhere.
    admit_po1(&mut p, ACCEPTED | 3);
    let acts = p.frame(ACCEPTED | 3, bend(src.frame(T, 2, Verify::Blake3), |_, b| b.truncate(10)));
    assert_eq!(closes(&acts), [ACCEPTED | 3]);
    assert_eq!(sent_on(&acts, M), [&Msg::Bad { transfer: T, block: 2, from: 1 }]);
    let s = p.stats();
    assert_eq!((s.peer_errors, s.transfers_failed, s.transfers_active), (2, 0, 1), "{s:?}");
    assert_eq!(sent_on(&p.frame(M, src.frame(T, 2, Verify::Crc32)), M), [&have(2)]);
}

#[test]
fn peer_blocks_wait_for_their_checksum() {
    let (mut p, mut src, _) = in_swarm(12);
    admit_po1(&mut p, ACCEPTED | 2);
    for i in 0..8 {
        assert!(p.frame(ACCEPTED | 2, src.frame(T, i, Verify::Blake3)).is_empty(), "block {i} waits");
    }
    let acts = p.frame(ACCEPTED | 2, src.frame(T, 8, Verify::Blake3));
    let unsent = Msg::Unsent { transfer: T, block: 8, to: 0, why: "no checksum yet".into() };
    assert_eq!(sent_on(&acts, M), [&unsent], "past the bound, the block goes back to the master");
    let acts = p.frame(M, sums(&mut src, 12));
    let want: Vec<Msg> = (0..8).map(have).collect();
    assert_eq!(sent_on(&acts, M), want.iter().collect::<Vec<_>>());
}

#[test]
fn serves_pushes_to_its_neighbours() {
    let (mut p, mut src, to2) = in_swarm(3);
    p.frame(M, src.frame(T, 0, Verify::Crc32));
    // Po 2's link is still coming up: the push waits for it.
    assert!(p.frame(M, Msg::Push { transfer: T, block: 0, to: 2 }).is_empty());
    let acts = p.connected(to2);
    assert!(matches!(sent_on(&acts, to2)[..], [Msg::PeerHello { .. }]));
    assert_eq!(blocks(&acts).iter().map(|(c, h)| (*c, h.index)).collect::<Vec<_>>(), [(to2, 0)]);
    // A block we lack, and a link that never comes.
    let acts = p.frame(M, Msg::Push { transfer: T, block: 1, to: 2 });
    assert_eq!(only(&acts, M), Msg::Unsent { transfer: T, block: 1, to: 2, why: "not held".into() });
    assert!(p.frame(M, Msg::Push { transfer: T, block: 0, to: 1 }).is_empty());
    assert!(p.wait(Duration::from_secs(9)).is_empty());
    let acts = p.wait(Duration::from_secs(1));
    assert_eq!(only(&acts, M), Msg::Unsent { transfer: T, block: 0, to: 1, why: "no link to that peer".into() });
    // Once po 1 is in, pushes to it go at once; when its link breaks, waiting ones go back.
    admit_po1(&mut p, ACCEPTED | 2);
    assert_eq!(blocks(&p.frame(M, Msg::Push { transfer: T, block: 0, to: 1 })).len(), 1);
    p.closed(to2, Close::Io("reset".into()));
    let s = p.stats();
    assert_eq!((s.blocks_sent, s.bytes_sent, s.peer_errors), (2, 2 * 4096, 1), "{s:?}");
}

#[test]
fn a_lost_peer_link_gives_its_pushes_back() {
    let (mut p, mut src, to2) = in_swarm(3);
    p.frame(M, src.frame(T, 0, Verify::Crc32));
    assert!(p.frame(M, Msg::Push { transfer: T, block: 0, to: 2 }).is_empty());
    let acts = p.closed(to2, Close::Connect("refused".into()));
    assert_eq!(only(&acts, M), Msg::Unsent { transfer: T, block: 0, to: 2, why: "peer link lost".into() });
    assert_eq!(p.stats().peer_errors, 1);
}

#[test]
fn swarm_links_close_with_the_master() {
    let (mut p, _, to2) = in_swarm(3);
    admit_po1(&mut p, ACCEPTED | 2);
    let mut gone = closes(&p.closed(M, Close::Io("reset".into())));
    gone.sort();
    assert_eq!(gone, [to2, ACCEPTED | 2]);
}

/// The class, never the master, decides whether setuid, setgid and sticky bits survive.
#[test]
fn the_class_decides_special_bits() {
    for (value, keep) in [(None, false), (Some("off"), false), (Some("on"), true)] {
        let extra: Vec<(&str, &str)> = value.map(|v| ("keep_special_bits", v)).into_iter().collect();
        let (p, _) = receiving(1, &extra);
        assert_eq!(p.m.store().options[&T].keep_special_bits, keep, "{value:?}");
    }
}
