//! The po alone, fed frames by hand: what a neighbour or the master puts on the wire is
//! checked before it is used, and a neighbour's bad frame costs only its own link.

use super::*;
use crate::proto::manifest::{Entry, Kind};
use crate::proto::{Body, StoreError, ACCEPTED};
use std::sync::Arc;

/// A store that keeps nothing but the digests it was asked to check: enough for the po to
/// accept and count blocks.
#[derive(Default)]
struct NullStore {
    checked: Vec<(u64, Digest)>,
    /// Hand `prepare` out as a disk job (`prepare_job`), and what became of those jobs.
    jobs: bool,
    /// Stage jobs running: their transfer and its blocks.
    preparing: HashMap<u64, (u64, usize)>,
    aborted: Vec<(u64, bool)>,
    next_job: u64,
}

impl Store for NullStore {
    fn prepare_job(&mut self, t: u64, _d: &str, m: &Manifest, _delta: bool) -> Option<crate::proto::DiskJob> {
        if !self.jobs {
            return None;
        }
        // As `DiskStore::begin`: the transfer's stage job running already is taken over.
        self.preparing.retain(|_, (x, _)| *x != t);
        self.next_job += 1;
        let id = 100 + self.next_job;
        self.preparing.insert(id, (t, m.blocks() as usize));
        let run = Box::new(|_: &std::sync::atomic::AtomicBool| Box::new(()) as crate::proto::DiskOutput);
        Some(crate::proto::DiskJob { transfer: t, id, cancel: Default::default(), run })
    }
    fn job_done(
        &mut self,
        id: u64,
        _out: Option<crate::proto::DiskOutput>,
    ) -> Result<Option<crate::proto::JobDone>, StoreError> {
        Ok(self.preparing.remove(&id).map(|(_, n)| crate::proto::JobDone::Prepared(vec![false; n])))
    }
    fn check(&mut self, _t: u64, sums: &[(u64, Digest)]) -> Vec<u64> {
        self.checked.extend_from_slice(sums);
        sums.iter().map(|s| s.0).collect()
    }
    fn prepare(&mut self, _t: u64, _d: &str, m: &Manifest, _delta: bool) -> Result<Vec<bool>, StoreError> {
        Ok(vec![false; m.blocks() as usize])
    }
    fn write_block(&mut self, _t: u64, _b: &crate::proto::BlockRef, _d: &[u8]) -> Result<(), StoreError> {
        Ok(())
    }
    fn seal(&mut self, _t: u64) -> Result<(), StoreError> {
        Ok(())
    }
    fn publish(&mut self, _t: u64, _f: Option<&str>, _m: bool) -> Result<crate::proto::Published, StoreError> {
        Ok(crate::proto::Published { files: 1, bytes: 0, unchanged: false })
    }
    fn abort(&mut self, t: u64, keep: bool) {
        // As `DiskStore`: an aborted stage job says nothing when it ends.
        self.preparing.retain(|_, (x, _)| *x != t);
        self.aborted.push((t, keep));
    }
    fn block_body(&mut self, _t: u64, _b: &crate::proto::BlockRef) -> Result<Body, StoreError> {
        Ok(Body::Bytes(Arc::new(vec![0; 4096])))
    }
}

const T: u64 = 7;
const MASTER: ConnId = ACCEPTED | 1;

struct Po {
    m: PoMachine<NullStore>,
    now: Instant,
    token: Vec<u8>,
}

impl Po {
    fn ev(&mut self, ev: Event) -> Vec<Action> {
        self.m.handle_event(self.now, ev);
        self.m.end_turn();
        // Socket tuning, not protocol (`peer_links_keep_short_queues` checks it).
        std::iter::from_fn(|| self.m.poll_action()).filter(|a| !matches!(a, Action::ShortQueue { .. })).collect()
    }
    fn frame(&mut self, conn: ConnId, msg: Msg) -> Vec<Action> {
        self.ev(Event::Frame { conn, msg })
    }
    /// A neighbour dials us and says who it is.
    /// The link-limit raise is taken out of the answer: it comes exactly when the link is
    /// not refused.
    fn hello(&mut self, conn: ConnId, me: u32, proof: Digest) -> Vec<Action> {
        let local = "10.0.0.2:7200".parse().unwrap();
        self.ev(Event::Accepted { conn, peer: "10.0.0.5:4000".parse().unwrap(), local });
        let mut a = self.frame(conn, Msg::PeerHello { token: self.token.clone(), me, proof });
        let raised = a.iter().any(|a| matches!(a, Action::FrameLimit { conn: c, .. } if *c == conn));
        a.retain(|a| !matches!(a, Action::FrameLimit { .. }));
        assert_eq!(raised, !closes(&a, conn), "{a:?}");
        a
    }
}

fn closes(a: &[Action], conn: ConnId) -> bool {
    a.iter().any(|a| matches!(a, Action::Close { conn: c } if *c == conn))
}

/// A po in a p2p transfer of 3 blocks, its offer verified and accepted.
fn accepted() -> Po {
    let (mut po, manifest) = verified(false);
    let a = po.frame(MASTER, Msg::Manifest { transfer: T, manifest });
    assert!(a.iter().any(|a| matches!(a, Action::Send { msg: Msg::Accept { .. }, .. })), "{a:?}");
    po
}

/// A po whose store builds stages as disk jobs (`jobs`), its offer verified: the manifest
/// (encoded) is due.
fn verified(jobs: bool) -> (Po, Arc<Vec<u8>>) {
    let settings = PoSettings {
        advertise: None,
        listen_port: 7200,
        release_after: Duration::from_secs(30),
        cacs: vec!["127.0.0.1:1".parse().unwrap()],
        allow_dest: vec!["/data".into()],
        root: None,
        cac_timeout: Duration::from_secs(5),
        hook_dir: None,
        max_upload_rate: 0,
        max_download_rate: 0,
    };
    let store = NullStore { jobs, ..Default::default() };
    let mut po = Po { m: PoMachine::new(settings, store), now: Instant::now(), token: Vec::new() };
    let _ = po.m.poll_action();
    let manifest = one_file();
    let ip = "10.0.0.1".parse().unwrap();
    po.token = Token::issue(b"key", T, "c", ip, u64::MAX, [0; 16]).encode();
    let local = "10.0.0.2:7200".parse().unwrap();
    po.ev(Event::Accepted { conn: MASTER, peer: "10.0.0.1:5000".parse().unwrap(), local });
    let manifest = Arc::new(manifest.encode());
    let (manifest_id, manifest_len) = (Manifest::id_of(&manifest), manifest.len() as u64);
    let offer = Msg::Offer { token: po.token.clone(), po: "10.0.0.2:7200".into(), manifest_id, manifest_len, mode: 0 };
    let a = po.frame(MASTER, offer);
    let Some(Action::Connect { conn: cac, .. }) = a.first() else { panic!("{a:?}") };
    let mut class = ClassCfg::new("c");
    class.set("dest", "/data/x").unwrap();
    class.set("p2p", "on").unwrap();
    let a = po.frame(*cac, Msg::VerifyOk { transfer: T, class_name: "c".into(), class: class.to_pairs() });
    assert!(a.iter().any(|a| matches!(a, Action::Send { msg: Msg::Verified { transfer: T }, .. })), "{a:?}");
    (po, manifest)
}

#[test]
fn the_answer_to_a_manifest_waits_for_the_stage_job() {
    let (mut po, manifest) = verified(true);
    let a = po.frame(MASTER, Msg::Manifest { transfer: T, manifest });
    let [Action::Disk(job)] = &a[..] else { panic!("only the stage job: {a:?}") };
    let id = job.id;
    assert_eq!(po.m.stats().transfers_active, 0);
    let a = po.ev(Event::DiskDone { transfer: T, id, out: None });
    assert!(
        a.iter().any(|a| matches!(a, Action::Send { conn: MASTER, msg: Msg::Accept { transfer: T, .. } })),
        "{a:?}"
    );
    assert_eq!(po.m.stats().transfers_active, 1);
    // A second word of the same job changes nothing.
    assert!(po.ev(Event::DiskDone { transfer: T, id, out: None }).is_empty());
    assert!(po.m.store().aborted.is_empty());
}

#[test]
fn a_stage_built_for_a_master_that_went_away_stays_for_a_resume() {
    let (mut po, manifest) = verified(true);
    let a = po.frame(MASTER, Msg::Manifest { transfer: T, manifest });
    let [Action::Disk(job)] = &a[..] else { panic!("{a:?}") };
    let id = job.id;
    po.ev(Event::Closed { conn: MASTER, reason: Close::Eof });
    assert_eq!(po.m.store().aborted, [(T, true)], "the job cancelled at once, its stage kept for a resume");
    let a = po.ev(Event::DiskDone { transfer: T, id, out: None });
    assert!(!a.iter().any(|a| matches!(a, Action::Send { .. })), "nobody to answer: {a:?}");
    assert_eq!(po.m.store().aborted, [(T, true)]);
    assert_eq!(po.m.stats().transfers_active, 0);
}

#[test]
fn an_abort_while_the_stage_is_built_cancels_the_job_and_ends_the_transfer() {
    let (mut po, manifest) = verified(true);
    let a = po.frame(MASTER, Msg::Manifest { transfer: T, manifest });
    let [Action::Disk(_)] = &a[..] else { panic!("{a:?}") };
    // An ABORT naming another transfer is a protocol error, as before: the master is refused,
    // and its offer goes as with a close.
    let a = po.frame(MASTER, Msg::Abort { transfer: T + 1, reason: "x".into() });
    assert!(closes(&a, MASTER), "{a:?}");
    assert_eq!(po.m.store().aborted, [(T, true)]);
    let (mut po, manifest) = verified(true);
    let a = po.frame(MASTER, Msg::Manifest { transfer: T, manifest });
    let [Action::Disk(job)] = &a[..] else { panic!("{a:?}") };
    let id2 = job.id;
    let a = po.frame(MASTER, Msg::Abort { transfer: T, reason: "SIGTERM".into() });
    assert!(a.is_empty(), "an abort is not a protocol error: {a:?}");
    assert_eq!(po.m.store().aborted, [(T, true)], "the job is cancelled now, as an abort does");
    let a = po.ev(Event::DiskDone { transfer: T, id: id2, out: None });
    assert!(a.is_empty(), "the transfer did not carry on: {a:?}");
    assert_eq!(po.m.stats().transfers_active, 0);
}

#[test]
fn a_stale_link_that_closes_leaves_the_stage_job_of_its_masters_new_link_alone() {
    let (mut po, manifest) = verified(true);
    let a = po.frame(MASTER, Msg::Manifest { transfer: T, manifest });
    let [Action::Disk(_)] = &a[..] else { panic!("{a:?}") };
    // The master offers T again on a new link (it gave the old one up; the po has not seen
    // that yet): the new offer's stage job takes over the old one's.
    let again = ACCEPTED | 30;
    let a = offer(&mut po, again, T);
    let Some(id) = a.iter().find_map(|a| match a {
        Action::Disk(j) => Some(j.id),
        _ => None,
    }) else {
        panic!("a stage job for the new link: {a:?}")
    };
    // The old link goes: what is being built now is not its to abort.
    po.ev(Event::Closed { conn: MASTER, reason: Close::Eof });
    assert!(po.m.store().aborted.is_empty(), "the new link's stage job was aborted");
    let a = po.ev(Event::DiskDone { transfer: T, id, out: None });
    assert_eq!(said(&a, again), ["accept"]);
    assert_eq!(po.m.stats().transfers_active, 1);
}

/// PEERS for po 1: neighbour 0 dials us, 2 too; bad entries (ourselves, the master's index,
/// neighbour 2 again) come along.
fn joined() -> Po {
    let mut po = accepted();
    let links = vec![
        PeerLink { idx: 0, addr: String::new(), key: [10; 32] },
        PeerLink { idx: 1, addr: "10.0.0.9:1".into(), key: [11; 32] },
        PeerLink { idx: MASTER_PEER, addr: String::new(), key: [12; 32] },
        PeerLink { idx: 2, addr: String::new(), key: [2; 32] },
        PeerLink { idx: 2, addr: "10.0.0.9:2".into(), key: [22; 32] },
    ];
    let a = po.frame(MASTER, Msg::Peers { transfer: T, me: 1, master_key: [9; 32], links });
    assert!(a.is_empty(), "a link to ourselves or a repeated neighbour was dialled: {a:?}");
    po
}

#[test]
fn peers_links_to_ourselves_the_master_or_twice_are_dropped() {
    let mut po = joined();
    assert!(closes(&po.hello(ACCEPTED | 10, 1, [11; 32]), ACCEPTED | 10), "a link to ourselves");
    assert!(closes(&po.hello(ACCEPTED | 11, 2, [22; 32]), ACCEPTED | 11), "the second key of po 2");
    assert!(closes(&po.hello(ACCEPTED | 12, MASTER_PEER, [12; 32]), ACCEPTED | 12), "a PEERS key for the master");
    assert!(po.hello(ACCEPTED | 13, 2, [2; 32]).is_empty());
    assert!(po.hello(ACCEPTED | 14, MASTER_PEER, [9; 32]).is_empty());
}

#[test]
fn pushes_past_the_end_or_to_strangers_are_not_kept() {
    let mut po = joined();
    assert!(po.frame(MASTER, Msg::Push { transfer: T, block: 3, to: 0 }).is_empty());
    let a = po.frame(MASTER, Msg::Push { transfer: T, block: 0, to: 5 });
    assert!(matches!(&a[..], [Action::Send { msg: Msg::Unsent { block: 0, to: 5, .. }, .. }]), "{a:?}");
    assert!(po.m.transfers[&T].waiting.is_empty());
}

#[test]
fn a_neighbours_bad_frame_costs_only_its_link() {
    let mut po = joined();
    let peer = ACCEPTED | 20;
    assert!(po.hello(peer, 0, [10; 32]).is_empty());
    let block = |transfer, index, len| Msg::Block {
        head: BlockHead { transfer, index, sum: Sum::None },
        data: Payload::from_vec(vec![1; len]),
    };
    // A block of another transfer: nothing of ours to name, so the master hears nothing.
    let a = po.frame(peer, block(T + 1, 0, 4096));
    assert!(closes(&a, peer) && !a.iter().any(|a| matches!(a, Action::Send { .. })), "{a:?}");
    // A block of ours with the wrong length: the master is told which, and from whom.
    let peer = ACCEPTED | 21;
    assert!(po.hello(peer, 0, [10; 32]).is_empty());
    let a = po.frame(peer, block(T, 1, 5));
    assert!(closes(&a, peer), "{a:?}");
    assert!(a.iter().any(|a| matches!(a, Action::Send { msg: Msg::Bad { block: 1, from: 0, .. }, .. })), "{a:?}");
    // Past the end: the link goes, nothing is reported.
    let peer = ACCEPTED | 22;
    assert!(po.hello(peer, 2, [2; 32]).is_empty());
    let a = po.frame(peer, block(T, 99, 4096));
    assert!(closes(&a, peer) && !a.iter().any(|a| matches!(a, Action::Send { .. })), "{a:?}");
    // Any other frame on a peer link, and bytes that do not decode.
    let peer = ACCEPTED | 23;
    assert!(po.hello(peer, 2, [2; 32]).is_empty());
    assert!(closes(&po.frame(peer, Msg::StatQuery), peer));
    let peer = ACCEPTED | 24;
    assert!(po.hello(peer, 2, [2; 32]).is_empty());
    let a = po.ev(Event::Closed { conn: peer, reason: Close::Decode("bad frame type".into()) });
    assert!(a.is_empty(), "{a:?}");
    // The transfer goes on.
    assert!(matches!(po.m.transfers[&T].state, TState::Receiving { .. }));
    assert_eq!(po.m.stats().transfers_active, 1);
    assert_eq!(po.m.stats().peer_errors, 5);
}

#[test]
fn check_answers_for_blocks_not_asked_or_twice_are_ignored() {
    let mut po = accepted();
    po.m.transfers.get_mut(&T).unwrap().state = TState::Receiving { checking: vec![1] };
    let a = po.frame(
        MASTER,
        Msg::CheckSums { transfer: T, sums: vec![(0, [1; 32]), (1, [2; 32]), (1, [3; 32]), (9, [4; 32])] },
    );
    assert!(matches!(&a[..], [Action::Send { msg: Msg::Accept { .. }, .. }]), "{a:?}");
    assert_eq!(po.m.store().checked, [(1, [2; 32])]);
    assert_eq!(po.m.transfers[&T].nheld, 1);
    // A second answer finds nothing asked.
    assert!(po.frame(MASTER, Msg::CheckSums { transfer: T, sums: vec![(1, [2; 32])] }).is_empty());
}

/// The tree every test offers: one 10,000-byte file `f` in 4 KiB blocks.
fn one_file() -> Manifest {
    Manifest::new(4096, vec![Entry::plain("f", Kind::File { size: 10_000 })]).unwrap()
}

/// Master connection `conn` offers transfer `id` of the same tree and class as `accepted`.
fn offer(po: &mut Po, conn: ConnId, id: u64) -> Vec<Action> {
    let token = Token::issue(b"key", id, "c", "10.0.0.1".parse().unwrap(), u64::MAX, [0; 16]).encode();
    po.ev(Event::Accepted { conn, peer: "10.0.0.1:5001".parse().unwrap(), local: "10.0.0.2:7200".parse().unwrap() });
    let manifest = Arc::new(one_file().encode());
    let (manifest_id, manifest_len) = (Manifest::id_of(&manifest), manifest.len() as u64);
    let a = po.frame(conn, Msg::Offer { token, po: "10.0.0.2:7200".into(), manifest_id, manifest_len, mode: 0 });
    let Some(Action::Connect { conn: cac, .. }) = a.first() else { panic!("{a:?}") };
    let mut class = ClassCfg::new("c");
    class.set("dest", "/data/x").unwrap();
    let mut a = po.frame(*cac, Msg::VerifyOk { transfer: id, class_name: "c".into(), class: class.to_pairs() });
    // The CAC vouched: the po asks for the manifest, and takes the offer once it has it.
    if a.iter().any(|x| matches!(x, Action::Send { msg: Msg::Verified { .. }, .. })) {
        a.extend(po.frame(conn, Msg::Manifest { transfer: id, manifest }));
    }
    a
}

fn said(a: &[Action], conn: ConnId) -> Vec<String> {
    a.iter()
        .filter_map(|a| match a {
            Action::Send { conn: c, msg: Msg::Failed { error, .. } } if *c == conn => Some(format!("failed: {error}")),
            Action::Send { conn: c, msg: Msg::Denied { text, .. } } if *c == conn => Some(format!("denied: {text}")),
            Action::Send { conn: c, msg: Msg::Accept { .. } } if *c == conn => Some("accept".into()),
            _ => None,
        })
        .collect()
}

#[test]
fn an_older_push_of_a_dest_never_replaces_a_newer_one() {
    let mut po = accepted();
    let (older, newer) = (ACCEPTED | 20, ACCEPTED | 21);
    // T - 2 is refused while T stages.
    let a = offer(&mut po, older, T - 2);
    assert_eq!(said(&a, older), ["denied: transfer 5 is too old: the newer transfer 7 is staging to /data/x"]);
    // T + 2 is accepted and T, still staging, fails.
    let a = offer(&mut po, newer, T + 2);
    assert_eq!(said(&a, newer), ["accept"]);
    assert_eq!(said(&a, MASTER), ["failed: superseded by the newer transfer 9 to /data/x"]);
    // Had a newer one been published here meanwhile, T + 2 would not be.
    po.m.published.insert("/data/x".into(), T + 10);
    po.m.transfers.get_mut(&(T + 2)).unwrap().state = TState::Ready;
    let a = po.frame(newer, Msg::Commit { transfer: T + 2 });
    assert_eq!(said(&a, newer), ["failed: not published: the newer transfer 17 was published to /data/x first"]);
    let a = offer(&mut po, ACCEPTED | 22, T + 3);
    assert_eq!(
        said(&a, ACCEPTED | 22),
        ["denied: transfer 10 is too old: the newer transfer 17 was published to /data/x first"]
    );
}

#[test]
fn a_broken_link_gives_back_what_it_carried_and_what_comes_for_it() {
    let mut po = joined();
    let peer = ACCEPTED | 20;
    assert!(po.hello(peer, 0, [10; 32]).is_empty());
    po.m.transfers.get_mut(&T).unwrap().held = vec![true; 3];
    let a = po.frame(MASTER, Msg::Push { transfer: T, block: 1, to: 0 });
    assert!(matches!(&a[..], [Action::SendBlock { conn, .. }] if *conn == peer), "{a:?}");
    // The link breaks mid-block: the push goes back to the master at once.
    let a = po.ev(Event::Closed { conn: peer, reason: Close::Io("source file ended".into()) });
    let back = |a: &[Action], b: u64| {
        a.iter().any(|a| matches!(a, Action::Send { msg: Msg::Unsent { block, to: 0, .. }, .. } if *block == b))
    };
    assert!(back(&a, 1), "{a:?}");
    // A push on the broken link is not held for a link that will not come.
    let a = po.frame(MASTER, Msg::Push { transfer: T, block: 2, to: 0 });
    assert!(back(&a, 2), "{a:?}");
    assert!(po.m.transfers[&T].waiting.is_empty());
    // Until the neighbour links again.
    assert!(po.hello(ACCEPTED | 21, 0, [10; 32]).is_empty());
    let a = po.frame(MASTER, Msg::Push { transfer: T, block: 2, to: 0 });
    assert!(matches!(&a[..], [Action::SendBlock { .. }]), "{a:?}");
}

/// `frame`, with the checks it asks for run at once (as the workers would).
fn checked(po: &mut Po, conn: ConnId, msg: Msg) -> Vec<Action> {
    let mut out = Vec::new();
    let mut acts = po.frame(conn, msg);
    while !acts.is_empty() {
        let mut next = Vec::new();
        for a in acts {
            match a {
                Action::Verify(c) => next.extend(po.ev(c.run())),
                a => out.push(a),
            }
        }
        acts = next;
    }
    out
}

#[test]
fn a_verified_chain_block_goes_on_to_the_successor_the_master_named() {
    let mut po = joined();
    let chain = |next: Vec<u32>, set: Vec<u8>| Msg::Chain { transfer: T, next, set };
    // Only the master names successors: a neighbour's CHAIN costs its link.
    let peer = ACCEPTED | 30;
    assert!(po.hello(peer, 2, [2; 32]).is_empty());
    assert!(closes(&po.frame(peer, chain(vec![0], vec![7])), peer));
    let to = ACCEPTED | 31;
    assert!(po.hello(to, 2, [2; 32]).is_empty());
    // A set of the wrong size is dropped, and not acknowledged.
    assert!(po.frame(MASTER, chain(vec![2], vec![7, 0])).is_empty());
    // Blocks 0 and 2 go down the chain to po 2; block 1 does not. The po says it follows.
    let a = po.frame(MASTER, chain(vec![2], vec![0b101]));
    let ack = |a: &Action| matches!(a, Action::Send { conn: MASTER, msg: Msg::Chain { next, set, .. } } if next == &[2] && set.is_empty());
    assert!(matches!(&a[..], [x] if ack(x)), "{a:?}");
    let data = |i: u64| vec![i as u8 + 1; if i == 2 { 10_000 - 8192 } else { 4096 }];
    let kind = po.m.transfers[&T].class.block_check();
    let sums = (0..3).map(|i| (i, Sum::of(kind, &data(i)))).collect();
    assert!(po.frame(MASTER, Msg::Sums { transfer: T, sums }).is_empty());
    let from = ACCEPTED | 32;
    assert!(po.hello(from, 0, [10; 32]).is_empty());
    let block = |i: u64, bytes: Vec<u8>| Msg::Block {
        head: BlockHead { transfer: T, index: i, sum: Sum::None },
        data: Payload::from_vec(bytes),
    };
    let forwarded = |a: &[Action]| -> Vec<u64> {
        a.iter()
            .filter_map(|a| match a {
                Action::SendBlock { conn, head, .. } if *conn == to => Some(head.index),
                _ => None,
            })
            .collect()
    };
    // A copy that fails its check is reported, never forwarded.
    let a = checked(&mut po, from, block(0, vec![9; 4096]));
    assert!(forwarded(&a).is_empty(), "{a:?}");
    assert!(a.iter().any(|a| matches!(a, Action::Send { msg: Msg::Bad { block: 0, from: 0, .. }, .. })), "{a:?}");
    // A good one goes on at once, from the stage; a chain block's HAVE waits for company.
    let have = |a: &[Action]| -> Option<Vec<u64>> {
        a.iter().find_map(|a| match a {
            Action::Send { conn: MASTER, msg: Msg::Have { blocks, .. } } => Some(blocks.clone()),
            _ => None,
        })
    };
    let a = checked(&mut po, from, block(0, data(0)));
    assert_eq!(forwarded(&a), [0], "{a:?}");
    assert_eq!(have(&a), None, "{a:?}");
    // It goes once it has waited HAVE_DELAY.
    let at = po.m.poll_timeout().expect("a HAVE waits");
    assert_eq!(at, po.now + super::chain::HAVE_DELAY);
    po.m.handle_timeout(at);
    let a: Vec<Action> = std::iter::from_fn(|| po.m.poll_action()).collect();
    assert_eq!(have(&a), Some(vec![0]), "{a:?}");
    // A block it holds already, sent again unasked, is dropped.
    assert!(checked(&mut po, from, block(0, data(0))).is_empty());
    let a = checked(&mut po, from, block(2, data(2)));
    assert_eq!((forwarded(&a), have(&a)), (vec![2], None));
    // Block 1 is not a chain block (and the last one): its HAVE goes at the end of the turn,
    // with the one that waited.
    let a = checked(&mut po, from, block(1, data(1)));
    assert!(forwarded(&a).is_empty(), "block 1 is not a chain block");
    assert_eq!(have(&a), Some(vec![2, 1]), "{a:?}");
}

#[test]
fn peer_links_keep_short_queues() {
    let mut po = joined();
    po.ev(Event::Accepted {
        conn: ACCEPTED | 40,
        peer: "10.0.0.5:4000".parse().unwrap(),
        local: "10.0.0.2:7200".parse().unwrap(),
    });
    po.m.handle_event(
        po.now,
        Event::Frame { conn: ACCEPTED | 40, msg: Msg::PeerHello { token: po.token.clone(), me: 2, proof: [2; 32] } },
    );
    let a: Vec<Action> = std::iter::from_fn(|| po.m.poll_action()).collect();
    assert!(a.iter().any(|a| matches!(a, Action::ShortQueue { conn } if *conn == ACCEPTED | 40)), "{a:?}");
    // Not the master's data link: the master's own queue is its business.
    po.ev(Event::Accepted {
        conn: ACCEPTED | 41,
        peer: "10.0.0.1:4000".parse().unwrap(),
        local: "10.0.0.2:7200".parse().unwrap(),
    });
    let hello = Msg::PeerHello { token: po.token.clone(), me: MASTER_PEER, proof: [9; 32] };
    po.m.handle_event(po.now, Event::Frame { conn: ACCEPTED | 41, msg: hello });
    let a: Vec<Action> = std::iter::from_fn(|| po.m.poll_action()).collect();
    assert!(!a.iter().any(|a| matches!(a, Action::ShortQueue { .. })), "{a:?}");
}
