//! The master alone, without the simulator: each test plays the CAC and the pos by hand and
//! sends what a broken or hostile po might.

use super::{MasterMachine, MasterSettings, PoState, TransferResult};
use crate::proto::manifest::{Entry, Kind};
use crate::proto::swarm::MASTER_PEER;
use crate::proto::wire::MAX_CONTROL;
use crate::proto::{
    Action, BlockRef, Body, ClassCfg, ConnId, Event, Machine, Manifest, Msg, Source, SourceError, Sum, Verify,
};
use std::sync::Arc;
use std::time::{Duration, Instant};

const TRANSFER: u64 = 7;

/// What the machine asked of its source, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Asked {
    Ahead(Vec<u64>, Verify),
    Read(u64, Verify),
}

/// Every block is zeros; what was asked is written down.
struct Zeros(Arc<std::sync::Mutex<Vec<Asked>>>);

impl Source for Zeros {
    fn ahead(&mut self, blocks: &[BlockRef], verify: Verify, _sendfile: bool) {
        self.0.lock().unwrap().push(Asked::Ahead(blocks.iter().map(|b| b.index).collect(), verify));
    }
    fn block(&mut self, b: &BlockRef, verify: Verify, _sendfile: bool) -> Result<(Body, Sum), SourceError> {
        self.0.lock().unwrap().push(Asked::Read(b.index, verify));
        let data = vec![0u8; b.len as usize];
        let sum = Sum::of(verify, &data);
        Ok((Body::Bytes(Arc::new(data)), sum))
    }
    fn unchanged(&mut self, _entry: u32) -> Result<(), SourceError> {
        Ok(())
    }
}

struct Rig {
    m: MasterMachine,
    now: Instant,
    /// Each po's control connection.
    conns: Vec<ConnId>,
    blocks: u64,
    asked: Arc<std::sync::Mutex<Vec<Asked>>>,
}

impl Rig {
    /// A master granted a class of `pos` pos and one file of `blocks` one-byte blocks, with
    /// every po connected and offered the transfer.
    fn new(pos: usize, blocks: u64, class: &[(&str, &str)]) -> Rig {
        let now = Instant::now();
        let file = Entry::plain("f", Kind::File { size: blocks });
        let manifest = Manifest::new(1, vec![file]).unwrap();
        let mut planned = Some(manifest);
        let asked = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = asked.clone();
        let planner: super::Planner = Box::new(move |_: &ClassCfg| {
            Ok((planned.take().ok_or("planned twice")?, Box::new(Zeros(log.clone())) as Box<dyn Source>))
        });
        let settings = MasterSettings {
            class: "c".into(),
            cacs: vec!["10.0.0.2:7100".parse().unwrap()],
            secret: None,
            connect_timeout: Duration::from_secs(3),
            unix_start: 0,
            dry_run: false,
            wait: None,
            transfer_key: [1; 32],
            canary: None,
            itemize: false,
        };
        let mut rig = Rig { m: MasterMachine::new(settings, planner, now), now, conns: Vec::new(), blocks, asked };
        let cac = rig.connects()[0];
        rig.event(Event::Connected { conn: cac });
        let mut cfg = ClassCfg::new("c");
        cfg.set("dest", "/data").unwrap();
        for (k, v) in class {
            cfg.set(k, v).unwrap();
        }
        let names = (0..pos).map(|i| format!("10.0.1.{}:7200", i + 1)).collect();
        let grant = Msg::AuthGrant {
            transfer: TRANSFER,
            token: b"t".to_vec(),
            pos: names,
            class: cfg.to_pairs(),
            sites: vec![],
        };
        rig.frame(cac, grant);
        rig.m.handle_timeout(now);
        rig.conns = rig.connects();
        for c in rig.conns.clone() {
            rig.event(Event::Connected { conn: c });
        }
        rig.actions();
        rig
    }

    fn event(&mut self, ev: Event) {
        self.m.handle_event(self.now, ev);
    }

    fn frame(&mut self, conn: ConnId, msg: Msg) {
        self.event(Event::Frame { conn, msg });
    }

    /// Po `i` says `msg` on its control connection.
    fn po(&mut self, i: usize, msg: Msg) {
        self.frame(self.conns[i], msg);
    }

    fn accept(&mut self, i: usize) {
        let have = vec![0; self.blocks.div_ceil(8) as usize];
        self.po(i, Msg::Accept { transfer: TRANSFER, have });
    }

    fn actions(&mut self) -> Vec<Action> {
        std::iter::from_fn(|| self.m.poll_action()).collect()
    }

    fn connects(&mut self) -> Vec<ConnId> {
        self.actions()
            .into_iter()
            .filter_map(|a| if let Action::Connect { conn, .. } = a { Some(conn) } else { None })
            .collect()
    }

    fn states(&self) -> Vec<PoState> {
        self.m.po_states()
    }
}

#[test]
fn indices_from_a_po_past_the_end_are_ignored() {
    for p2p in ["off", "on"] {
        let mut r = Rig::new(3, 20, &[("p2p", p2p)]);
        for i in 0..3 {
            r.accept(i);
        }
        let data = r.connects();
        for c in data {
            r.event(Event::Connected { conn: c });
        }
        r.actions();
        let t = TRANSFER;
        r.po(0, Msg::Have { transfer: t, blocks: vec![20, 21, u64::MAX] });
        r.po(0, Msg::Unsent { transfer: t, block: u64::MAX, to: u32::MAX, why: "x".into() });
        r.po(0, Msg::Unsent { transfer: t, block: 3, to: 99, why: "x".into() });
        r.po(0, Msg::Bad { transfer: t, block: u64::MAX, from: u32::MAX });
        r.po(0, Msg::Bad { transfer: t, block: 2, from: 99 });
        r.po(0, Msg::Bad { transfer: t, block: 2, from: MASTER_PEER });
        r.po(0, Msg::Bad { transfer: t, block: 2, from: 0 });
        r.actions();
        assert_eq!(r.states(), [PoState::Sending; 3], "p2p={p2p}");
    }
}

#[test]
fn check_answers_each_real_block_once_within_one_frame() {
    let nb = 120_000;
    let mut r = Rig::new(1, nb, &[]);
    let mut blocks: Vec<u64> = (0..nb).rev().collect();
    blocks.extend([5, 5, nb, nb + 1, u64::MAX]);
    r.po(0, Msg::Check { transfer: TRANSFER, blocks });
    let sums: Vec<u64> = r
        .actions()
        .into_iter()
        .find_map(|a| match a {
            Action::Send { msg: Msg::CheckSums { sums, .. }, .. } => Some(sums.iter().map(|s| s.0).collect()),
            _ => None,
        })
        .expect("an answer");
    let most = (MAX_CONTROL as usize - 64) / 40;
    assert_eq!(sums, (0..most as u64).collect::<Vec<_>>());
    assert_eq!(r.states(), [PoState::Offered]);
}

#[test]
fn checksums_are_asked_for_ahead_of_reading() {
    let mut r = Rig::new(2, 40, &[("verify", "md5")]);
    r.accept(0);
    let asked = std::mem::take(&mut *r.asked.lock().unwrap());
    // The blocks this pump sends are named before the first is read, then read in order.
    assert_eq!(asked[0], Asked::Ahead((0..16).collect(), Verify::Md5));
    assert_eq!(asked[1..3], [Asked::Read(0, Verify::Md5), Asked::Read(1, Verify::Md5)]);
    // A second po gets blocks whose checksums are known: nothing to hash, nothing named.
    r.accept(1);
    let asked = std::mem::take(&mut *r.asked.lock().unwrap());
    assert!(asked.iter().all(|a| matches!(a, Asked::Read(_, Verify::None))), "{asked:?}");
    // CHECK: the digests of the blocks asked about are named ahead too, in order.
    let mut r = Rig::new(1, 40, &[]);
    r.po(0, Msg::Check { transfer: TRANSFER, blocks: vec![7, 3, 5] });
    let asked = std::mem::take(&mut *r.asked.lock().unwrap());
    assert_eq!(asked[..2], [Asked::Ahead(vec![3, 5, 7], Verify::Blake3), Asked::Read(3, Verify::Blake3)]);
}

#[test]
fn an_accept_bitmap_of_the_wrong_length_fails_only_its_po() {
    // 20 blocks take 3 bytes.
    let mut r = Rig::new(3, 20, &[]);
    r.po(0, Msg::Accept { transfer: TRANSFER, have: vec![0xff; 100] });
    r.po(1, Msg::Accept { transfer: TRANSFER, have: vec![0; 2] });
    assert_eq!(r.states(), [PoState::Failed, PoState::Failed, PoState::Offered]);
    r.accept(2);
    assert_eq!(r.states(), [PoState::Failed, PoState::Failed, PoState::Sending]);
}

#[test]
fn a_po_that_published_stays_done_whatever_it_says_next() {
    let mut r = Rig::new(2, 4, &[("p2p", "on"), ("publish", "each")]);
    r.accept(0);
    r.accept(1);
    let done = Msg::Done {
        transfer: TRANSFER,
        files: 1,
        bytes: 4,
        hook_exit: Some(3),
        hook_tail: "oops".into(),
        unchanged: false,
    };
    r.po(0, done);
    // In a swarm a finished po keeps its connection (it serves its neighbours).
    r.po(0, Msg::Failed { transfer: TRANSFER, error: "late".into() });
    r.po(0, Msg::Check { transfer: TRANSFER, blocks: vec![1] });
    assert_eq!(r.states(), [PoState::Done, PoState::Sending]);
    r.po(1, Msg::Failed { transfer: TRANSFER, error: "disk".into() });
    let o = r.m.outcome().expect("every po ended");
    let TransferResult::Partial(ran) = &o.result else { panic!("{:?}", o.result) };
    assert_eq!(ran.pos[0].failed, None);
    assert_eq!(ran.pos[0].hook, Some((3, "oops".into())));
    assert_eq!(ran.pos[1].failed.as_deref(), Some("disk"));
}

#[test]
fn messages_for_another_transfer_or_state_are_protocol_errors() {
    let mut r = Rig::new(3, 8, &[]);
    r.po(0, Msg::Have { transfer: TRANSFER, blocks: vec![1] });
    r.po(1, Msg::Accept { transfer: TRANSFER + 1, have: vec![0] });
    r.po(
        2,
        Msg::Done {
            transfer: TRANSFER,
            files: 0,
            bytes: 0,
            hook_exit: None,
            hook_tail: String::new(),
            unchanged: false,
        },
    );
    assert_eq!(r.states(), [PoState::Failed; 3]);
    assert!(matches!(r.m.outcome().map(|o| &o.result), Some(TransferResult::Failed(_))));
}

#[test]
fn an_abort_tells_the_pos_not_done_and_the_cac_and_counts_the_published() {
    let mut r = Rig::new(3, 4, &[("publish", "each")]);
    for i in 0..3 {
        r.accept(i);
    }
    let done = Msg::Done {
        transfer: TRANSFER,
        files: 1,
        bytes: 4,
        hook_exit: None,
        hook_tail: String::new(),
        unchanged: false,
    };
    r.po(0, done);
    r.po(2, Msg::Failed { transfer: TRANSFER, error: "disk".into() });
    r.actions();
    r.m.abort(r.now, "aborted by SIGINT");
    let acts = r.actions();
    assert!(matches!(acts[0], Action::SetRates { upload: 0, download: 0 }), "{acts:?}");
    let aborted: Vec<ConnId> = acts
        .iter()
        .filter_map(|a| match a {
            Action::Abandon { conn, last: Some(Msg::Abort { transfer: TRANSFER, .. }) } => Some(*conn),
            _ => None,
        })
        .collect();
    assert_eq!(aborted, [r.conns[1]], "only the po still receiving is told: {acts:?}");
    let progress = acts.iter().find_map(|a| match a {
        Action::Send { msg: Msg::Progress { stat, .. }, .. } => Some(stat.state.clone()),
        _ => None,
    });
    assert_eq!(progress.as_deref(), Some("aborted"));
    assert!(r.m.is_finished());
    let o = r.m.outcome().expect("an outcome");
    assert_eq!(o.transfer, TRANSFER);
    let TransferResult::Aborted(ran) = &o.result else { panic!("{:?}", o.result) };
    let failed: Vec<Option<&str>> = ran.pos.iter().map(|p| p.failed.as_deref()).collect();
    assert_eq!(failed, [None, Some("aborted by SIGINT"), Some("disk")]);
}
