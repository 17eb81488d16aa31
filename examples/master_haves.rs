//! Issue 16's CPU target, measured without the network: what the master's state machine spends
//! per HAVE'd block in a chain transfer (`p2p = on`, `chains = on`, 64 KiB blocks).
//!
//! The real `MasterMachine` is driven through a whole transfer by scripted pos: a CAC grant,
//! each po's offer, ACCEPT and data link, the CHAIN plan (acknowledged), then turns. On each
//! turn every po, in chain order, takes up to `--per-turn` blocks from its downlink (what the
//! master sent it, what its predecessor forwarded, what a PUSH asked a peer to send), forwards
//! each chain block to its successor at once, and reports them in one HAVE, which the master
//! handles before the next po's turn. The clock moves `--step-ms` a turn (a 64 KiB block at
//! 100 Mbit/s takes about 5 ms) and the master's timers run when due. The source hands out one
//! shared buffer and its cached digest, so reading and hashing cost the master nothing here:
//! what is left is its per-event and per-HAVE work.
//!
//! CPU is the thread's (`CLOCK_THREAD_CPUTIME_ID`) around each call into the master only, not
//! the scripted pos (`timer_us`: what reading that clock costs, once per event, included).
//! `digest` is a hash of every block send, push and chain plan in order: a change that must
//! not alter the schedule prints the same one. Prints one line per case to stdout:
//! `pos=.. blocks=.. turns=.. events=.. have_msgs=.. have_blocks=.. master_blocks=.. pushes=..
//! cpu_ms=.. us_per_have_block=.. us_per_event=.. timer_us=.. digest=..`.
//!
//! Usage: `master_haves [--cases 16x1024,16x4096,200x4096] [--per-turn 1] [--step-ms 5]
//! [--runs 1] [--kill PO@TURN,..] [--have-every 1]`. `--have-every T` holds each po's HAVE
//! back for T turns (or `HAVE_BATCH` blocks), as a po waits for company for its chain HAVEs
//! (20 ms: T = 4 at 5 ms a turn). `--kill` closes a po's links at that turn and refuses its
//! redials, so the chains are cut around it and repair (PUSH) fills its successors' holes. Build with `--release`; for a profile, `CARGO_PROFILE_RELEASE_DEBUG=true` and
//! `perf record -g`.

use nix::time::{clock_gettime, ClockId};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wugui::proto::bitmap::{bit, bitmap};
use wugui::proto::chain::stripe_of;
use wugui::proto::manifest::{Entry, Kind};
use wugui::proto::master::{MasterMachine, MasterSettings, Planner};
use wugui::proto::msg::NO_NEXT;
use wugui::proto::{
    Action, BlockRef, Body, ClassCfg, Close, ConnId, Event, Machine, Manifest, Msg, Source, SourceError, Sum, Verify,
};

const BLOCK: u32 = 64 << 10;
const CAC: &str = "10.0.0.2:7100";
/// The most blocks a po holds back from its HAVE (`--have-every`), as a po's chain HAVEs do.
const HAVE_BATCH: usize = 32;

/// Every block is the same buffer with its digest cached, so the master's reads cost nothing.
struct Shared {
    data: Arc<Vec<u8>>,
    sums: Vec<(Verify, Sum)>,
}

impl Source for Shared {
    fn block(&mut self, b: &BlockRef, verify: Verify, _sendfile: bool) -> Result<(Body, Sum), SourceError> {
        let _ = b;
        let sum = match self.sums.iter().find(|(v, _)| *v == verify) {
            Some((_, s)) => *s,
            None => {
                let s = Sum::of(verify, &self.data);
                self.sums.push((verify, s));
                s
            }
        };
        Ok((Body::Bytes(self.data.clone()), sum))
    }
    fn unchanged(&mut self, _entry: u32) -> Result<(), SourceError> {
        Ok(())
    }
}

#[derive(Default)]
struct Po {
    addr: String,
    ctl: Option<ConnId>,
    data: Option<ConnId>,
    have: Vec<bool>,
    held: u64,
    /// Blocks on their way in, in the order they were sent, with the turn each was sent on:
    /// it lands on a later one (a hop takes a turn).
    incoming: VecDeque<(u64, u64)>,
    /// Successor per stripe, and the chain set (a have-bitmap).
    next: Vec<u32>,
    set: Vec<u8>,
    ready: bool,
    /// Landed, not reported yet (`--have-every`).
    unsaid: Vec<u64>,
    /// Killed (`--kill`): its links closed, it answers nothing more.
    dead: bool,
}

struct Driver {
    m: MasterMachine,
    now: Instant,
    pos: Vec<Po>,
    blocks: u64,
    transfer: u64,
    cac: Option<ConnId>,
    events: VecDeque<Event>,
    turns: u64,
    /// A po reports what landed every this many turns (or once it has `HAVE_BATCH` blocks).
    have_every: u64,
    cpu: Duration,
    calls: u64,
    have_msgs: u64,
    have_blocks: u64,
    master_blocks: u64,
    pushes: u64,
    /// FNV-1a over what the master told whom (blocks, pushes, chain plans), in order: two
    /// builds that schedule alike print the same digest.
    digest: u64,
}

fn thread_cpu() -> Duration {
    clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID).map(Duration::from).unwrap_or_default()
}

impl Driver {
    /// One call into the master, timed, then its actions carried out.
    fn call(&mut self, f: impl FnOnce(&mut MasterMachine, Instant)) {
        let t = thread_cpu();
        f(&mut self.m, self.now);
        let mut acts = Vec::new();
        while let Some(a) = self.m.poll_action() {
            acts.push(a);
        }
        self.cpu += thread_cpu() - t;
        self.calls += 1;
        for a in acts {
            self.note(&a);
            self.act(a);
        }
    }

    fn note(&mut self, a: &Action) {
        let key = match a {
            Action::SendBlock { conn, head, .. } => format!("B{conn}:{}", head.index),
            Action::Send { conn, msg: Msg::Push { block, to, .. } } => format!("P{conn}:{block}>{to}"),
            Action::Send { conn, msg: Msg::Chain { next, set, .. } } => format!("C{conn}:{next:?}{set:?}"),
            _ => return,
        };
        for byte in key.bytes().chain([b';']) {
            self.digest = (self.digest ^ byte as u64).wrapping_mul(0x100_0000_01b3);
        }
    }

    fn po_of(&self, conn: ConnId) -> Option<(usize, bool)> {
        self.pos
            .iter()
            .position(|p| p.ctl == Some(conn) || p.data == Some(conn))
            .map(|i| (i, self.pos[i].ctl == Some(conn)))
    }

    fn frame(&mut self, i: usize, msg: Msg) {
        let conn = self.pos[i].ctl.expect("a po's control link");
        self.events.push_back(Event::Frame { conn, msg });
    }

    fn act(&mut self, a: Action) {
        let t = self.transfer;
        match a {
            Action::Connect { conn, addr } => {
                let addr = addr.to_string();
                if addr == CAC {
                    self.cac = Some(conn);
                } else {
                    let p = self.pos.iter_mut().find(|p| p.addr == addr).expect("a po's address");
                    if p.dead {
                        let reason = Close::Connect("connection refused".into());
                        return self.events.push_back(Event::Closed { conn, reason });
                    }
                    if p.ctl.is_none() {
                        p.ctl = Some(conn);
                    } else {
                        p.data = Some(conn);
                    }
                }
                self.events.push_back(Event::Connected { conn });
            }
            Action::SendBlock { conn, head, .. } => {
                let Some((i, _)) = self.po_of(conn) else { return };
                self.master_blocks += 1;
                self.pos[i].incoming.push_back((head.index, self.turns));
            }
            Action::Send { conn, msg: Msg::AuthRequest { .. } } if Some(conn) == self.cac => {
                let mut class = ClassCfg::new("bench");
                for (k, v) in [("dest", "/tmp/bench"), ("block_size", "64K"), ("p2p", "on"), ("chains", "on")] {
                    class.set(k, v).expect("a class setting");
                }
                let pos = self.pos.iter().map(|p| p.addr.clone()).collect();
                let grant = Msg::AuthGrant {
                    transfer: t,
                    token: b"token".to_vec(),
                    pos,
                    class: class.to_pairs(),
                    sites: vec![],
                };
                self.events.push_back(Event::Frame { conn, msg: grant });
            }
            Action::Send { conn, .. } if Some(conn) == self.cac => {}
            Action::Send { conn, msg } => {
                let Some((i, _)) = self.po_of(conn) else { return };
                match msg {
                    Msg::Offer { .. } => self.frame(i, Msg::Verified { transfer: t }),
                    Msg::Manifest { .. } => {
                        let have = bitmap(&vec![false; self.blocks as usize]);
                        self.frame(i, Msg::Accept { transfer: t, have });
                    }
                    Msg::Chain { next, set, .. } => {
                        self.pos[i].next = next;
                        self.pos[i].set = set;
                        self.frame(i, Msg::Chain { transfer: t, next: Vec::new(), set: Vec::new() });
                    }
                    Msg::Push { block, to, .. } => {
                        self.pushes += 1;
                        if self.pos[i].have[block as usize] && !self.pos[to as usize].dead {
                            self.pos[to as usize].incoming.push_back((block, self.turns));
                        } else {
                            self.frame(i, Msg::Unsent { transfer: t, block, to, why: "not held".into() });
                        }
                    }
                    Msg::Commit { .. } => {
                        let done = Msg::Done {
                            transfer: t,
                            files: 1,
                            bytes: 0,
                            hook_exit: None,
                            hook_tail: String::new(),
                            unchanged: false,
                        };
                        self.frame(i, done);
                    }
                    Msg::Abort { reason, .. } => panic!("po {i} aborted: {reason}"),
                    _ => {}
                }
            }
            _ => {}
        }
    }

    fn deliver(&mut self) {
        while let Some(ev) = self.events.pop_front() {
            self.call(|m, now| m.handle_event(now, ev));
        }
    }

    /// The pos in the order of stripe 0 (heads first), then any not in it.
    fn order(&self) -> Vec<usize> {
        let n = self.pos.len();
        let mut pred = vec![false; n];
        for p in &self.pos {
            if let Some(&s) = p.next.first().filter(|&&s| s != NO_NEXT && (s as usize) < n) {
                pred[s as usize] = true;
            }
        }
        let mut out = Vec::with_capacity(n);
        let mut seen = vec![false; n];
        for h in (0..n).filter(|&i| !pred[i]) {
            let mut at = h;
            while !seen[at] {
                seen[at] = true;
                out.push(at);
                match self.pos[at].next.first() {
                    Some(&s) if s != NO_NEXT && (s as usize) < n => at = s as usize,
                    _ => break,
                }
            }
        }
        out.extend((0..n).filter(|&i| !seen[i]));
        out
    }

    /// Po `i` dies: its links close, what was on its way to it is lost.
    fn kill(&mut self, i: usize) {
        let p = &mut self.pos[i];
        p.dead = true;
        p.incoming.clear();
        for conn in [p.ctl.take(), p.data.take()].into_iter().flatten() {
            self.events.push_back(Event::Closed { conn, reason: Close::Io("connection reset by peer".into()) });
        }
        self.deliver();
    }

    /// Po `i`'s turn: up to `per_turn` blocks land, chain blocks go on to the successor, and
    /// one HAVE says what landed.
    fn turn(&mut self, i: usize, per_turn: usize) {
        let mut landed = 0;
        while landed < per_turn {
            let Some(&(b, sent)) = self.pos[i].incoming.front() else { break };
            if sent >= self.turns {
                break;
            }
            self.pos[i].incoming.pop_front();
            let p = &mut self.pos[i];
            if p.have[b as usize] {
                continue;
            }
            p.have[b as usize] = true;
            p.held += 1;
            p.unsaid.push(b);
            landed += 1;
            let k = p.next.len();
            if k > 0 && bit(&p.set, b) {
                let s = p.next[stripe_of(b, k)];
                if s != NO_NEXT && (s as usize) < self.pos.len() && !self.pos[s as usize].dead {
                    self.pos[s as usize].incoming.push_back((b, self.turns));
                }
            }
        }
        let t = self.transfer;
        let p = &mut self.pos[i];
        let due = self.turns.is_multiple_of(self.have_every) || p.unsaid.len() >= HAVE_BATCH || p.held == self.blocks;
        if !p.unsaid.is_empty() && due {
            let got = std::mem::take(&mut p.unsaid);
            self.have_msgs += 1;
            self.have_blocks += got.len() as u64;
            self.frame(i, Msg::Have { transfer: t, blocks: got });
        }
        if self.pos[i].held == self.blocks && !self.pos[i].ready {
            self.pos[i].ready = true;
            self.frame(i, Msg::Ready { transfer: t });
        }
        self.deliver();
    }
}

fn settings() -> MasterSettings {
    MasterSettings {
        class: "bench".into(),
        cacs: vec![CAC.parse().unwrap()],
        secret: None,
        connect_timeout: Duration::from_secs(3),
        unix_start: 0,
        dry_run: false,
        wait: None,
        transfer_key: [0x5a; 32],
        canary: None,
        itemize: false,
    }
}

struct Figures {
    turns: u64,
    d: Driver,
}

fn run(n: usize, blocks: u64, (per_turn, have_every): (usize, u64), step: Duration, kills: &[(usize, u64)]) -> Figures {
    let size = blocks * BLOCK as u64;
    let planner: Planner = Box::new(move |_: &ClassCfg| {
        let f = Entry {
            path: "f.bin".into(),
            kind: Kind::File { size },
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 1,
            mtime_nsec: 0,
            sparse: None,
        };
        let m = Manifest::new(BLOCK, vec![f])?;
        let src = Shared { data: Arc::new(vec![7u8; BLOCK as usize]), sums: Vec::new() };
        Ok((m, Box::new(src) as Box<dyn Source>))
    });
    let now = Instant::now();
    let m = MasterMachine::new(settings(), planner, now);
    let pos = (0..n)
        .map(|i| Po {
            addr: format!("10.{}.{}.{}:7200", 1 + i / 65536, (i / 256) % 256, i % 256),
            have: vec![false; blocks as usize],
            ..Po::default()
        })
        .collect();
    let mut d = Driver {
        m,
        now,
        pos,
        blocks,
        transfer: 77,
        cac: None,
        events: VecDeque::new(),
        turns: 0,
        have_every,
        cpu: Duration::ZERO,
        calls: 0,
        have_msgs: 0,
        have_blocks: 0,
        master_blocks: 0,
        pushes: 0,
        digest: 0xcbf2_9ce4_8422_2325,
    };
    let mut acts = Vec::new();
    while let Some(a) = d.m.poll_action() {
        acts.push(a);
    }
    for a in acts {
        d.act(a);
    }
    d.deliver();
    let limit = 20 * (blocks + n as u64) + 100_000;
    while !d.m.is_finished() && d.turns < limit {
        d.turns += 1;
        let turns = d.turns;
        d.now += step;
        if d.m.poll_timeout().is_some_and(|t| t <= d.now) {
            d.call(|m, now| m.handle_timeout(now));
        }
        d.deliver();
        for &(i, _) in kills.iter().filter(|&&(i, at)| at == turns && i < n) {
            d.kill(i);
        }
        for i in d.order() {
            if !d.pos[i].dead {
                d.turn(i, per_turn);
            }
        }
    }
    assert!(d.m.is_finished(), "the transfer did not end in {} turns", d.turns);
    Figures { turns: d.turns, d }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opt = |name: &str, default: &str| {
        args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned().unwrap_or_else(|| default.into())
    };
    let cases: Vec<(usize, u64)> = opt("--cases", "16x1024,16x4096,200x4096")
        .split(',')
        .map(|c| {
            let (p, b) = c.split_once('x').expect("cases are POSxBLOCKS");
            (p.parse().expect("pos"), b.parse().expect("blocks"))
        })
        .collect();
    let per_turn: usize = opt("--per-turn", "1").parse().expect("--per-turn");
    let have_every: u64 = opt("--have-every", "1").parse::<u64>().expect("--have-every").max(1);
    let step = Duration::from_millis(opt("--step-ms", "5").parse().expect("--step-ms"));
    let runs: usize = opt("--runs", "1").parse().expect("--runs");
    let kills: Vec<(usize, u64)> = opt("--kill", "")
        .split(',')
        .filter(|k| !k.is_empty())
        .map(|k| {
            let (i, at) = k.split_once('@').expect("kills are PO@TURN");
            (i.parse().expect("po"), at.parse().expect("turn"))
        })
        .collect();
    // What one timed call costs in reading the clock alone (inside each event's figure).
    let t = thread_cpu();
    for _ in 0..10_000 {
        std::hint::black_box(thread_cpu());
    }
    let timer = (thread_cpu() - t).as_secs_f64() * 1e6 / 10_000.0;
    for _ in 0..runs {
        for &(pos, blocks) in &cases {
            let Figures { turns, d } = run(pos, blocks, (per_turn, have_every), step, &kills);
            let us = d.cpu.as_secs_f64() * 1e6;
            println!(
                "pos={pos} blocks={blocks} turns={turns} events={} have_msgs={} have_blocks={} master_blocks={} \
                 pushes={} cpu_ms={:.1} us_per_have_block={:.2} us_per_event={:.2} timer_us={timer:.2} digest={:016x}",
                d.calls,
                d.have_msgs,
                d.have_blocks,
                d.master_blocks,
                d.pushes,
                us / 1e3,
                us / d.have_blocks.max(1) as f64,
                us / d.calls.max(1) as f64,
                d.digest,
            );
        }
    }
}
