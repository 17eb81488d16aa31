//! The master: asks a CAC for the class, plans the tree, pushes blocks to every po, commits.
//!
//! Phases: `Auth` (CACs in order, each bounded by `connect_timeout`) -> `Transfer` (every po
//! connects, takes the offer and reports held blocks; blocks flow within a window of unacked
//! blocks per po; READY from every live po -> COMMIT; DONE or FAILED from each) -> `Finished`.
//! With `publish = each` pos publish alone and send DONE. The class `timeout` bounds the whole
//! transfer; at it, `quorum` READY pos still commit.

use super::bitmap::bit;
use super::cac::challenge_data;
use super::class::{Publish, Verify};
use super::failover::Failover;
use super::msg::{Digest, PeerLink, PoStat, Reason, TransferStat};
use super::swarm::{self, Src, Swarm};
use super::{auth, earliest, Action, Body, ClassCfg, ConnId, Event, Machine, Manifest, Msg, Source, Stats, Sum};
use core::net::SocketAddr;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Turns the class settings into the manifest and a source of block bytes. Called once, when
/// the CAC has granted the class (the class adds excludes and sets the block size).
pub type Planner = Box<dyn FnMut(&ClassCfg) -> Result<(Manifest, Box<dyn Source>), String>>;

pub struct MasterSettings {
    pub class: String,
    pub cacs: Vec<SocketAddr>,
    /// The class secret, for a class with `master_secret_file`.
    pub secret: Option<Vec<u8>>,
    pub connect_timeout: Duration,
    pub unix_start: u64,
    /// Ask the CAC and plan, then report what would go and send nothing.
    pub dry_run: bool,
    /// A fresh random secret of this run: the swarm's link keys derive from it.
    pub transfer_key: [u8; 32],
}

/// How the transfer ended, as data: `app::outcome` turns it into the exit code, the summary
/// line and the per-po lines.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// 0 when the CAC granted none.
    pub transfer: u64,
    pub class: String,
    pub result: TransferResult,
}

#[derive(Debug, Clone)]
pub enum TransferResult {
    /// No CAC answered, or the CAC refused this master or the class.
    Denied(String),
    /// The source could not be planned; nothing was offered.
    SourceFailed(String),
    DryRun(DryRun),
    /// Every po committed (a hook may still have failed).
    Ok(Ran),
    /// Some pos committed and some failed.
    Partial(Ran),
    /// No po committed (or the class timeout came first).
    Failed(Ran),
}

impl TransferResult {
    /// The `result=` word: the transfer's final state as the CAC shows it.
    pub fn name(&self) -> &'static str {
        match self {
            TransferResult::Denied(_) => "denied",
            TransferResult::SourceFailed(_) | TransferResult::Failed(_) => "failed",
            TransferResult::DryRun(_) => "dry-run",
            TransferResult::Ok(_) => "ok",
            TransferResult::Partial(_) => "partial",
        }
    }
}

/// What a dry run found: the class, the tree and the pos it would go to.
#[derive(Debug, Clone)]
pub struct DryRun {
    pub class: ClassCfg,
    pub files: usize,
    pub dirs: usize,
    pub symlinks: usize,
    pub bytes: u64,
    pub blocks: u64,
    pub block_size: u32,
    pub pos: Vec<String>,
}

/// A transfer that ran.
#[derive(Debug, Clone)]
pub struct Ran {
    /// The manifest's bytes and blocks.
    pub bytes: u64,
    pub blocks: u64,
    pub elapsed: Duration,
    /// Blocks (bytes) this master uploaded itself.
    pub master_blocks: u64,
    pub master_bytes: u64,
    pub pos: Vec<PoOutcome>,
}

/// How one po ended: every po has committed or failed when a transfer ends.
#[derive(Debug, Clone)]
pub struct PoOutcome {
    pub name: String,
    /// `None` if it committed; otherwise why it failed.
    pub failed: Option<String>,
    /// The hook's exit code and the tail of its output, if the po ran one.
    pub hook: Option<(i32, String)>,
}

/// Where the master is with one po.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoState {
    /// Waiting to (re)connect at `retry_at`.
    Idle,
    Connecting,
    /// Offer sent, waiting for ACCEPT.
    Offered,
    Sending,
    Ready,
    /// COMMIT sent.
    Committing,
    Done,
    Failed,
}

impl PoState {
    fn name(self) -> &'static str {
        match self {
            PoState::Idle => "retrying",
            PoState::Connecting => "connecting",
            PoState::Offered => "offered",
            PoState::Sending => "sending",
            PoState::Ready => "ready",
            PoState::Committing => "committing",
            PoState::Done => "done",
            PoState::Failed => "failed",
        }
    }
    fn live(self) -> bool {
        self != PoState::Failed
    }
    /// Accepted the offer and not failed since: in the swarm, and sent every checksum.
    fn joined(self) -> bool {
        matches!(self, PoState::Sending | PoState::Ready | PoState::Committing | PoState::Done)
    }
}

struct Po {
    name: String,
    addr: Option<SocketAddr>,
    conn: Option<ConnId>,
    /// Swarm mode: the master's blocks travel on their own connection, so that push orders
    /// and checksums on `conn` never wait behind megabytes of block data.
    data: Option<ConnId>,
    state: PoState,
    attempts: u32,
    deadline: Option<Instant>,
    have: Vec<bool>,
    cursor: u64,
    inflight: u64,
    bytes: u64,
    error: String,
    hook_exit: Option<i32>,
    hook_tail: String,
}

enum Phase {
    Auth { cac: Failover, conn: ConnId, deadline: Instant },
    Transfer,
    Finished,
}

struct Plan {
    transfer: u64,
    token: Vec<u8>,
    class: ClassCfg,
    manifest: Manifest,
    /// The encoded manifest, shared by the offers in flight; made again for a later one
    /// (a retry), so that it does not stay in memory for the whole transfer.
    offer: std::sync::Weak<Vec<u8>>,
    /// Blocks read into memory, while some connection still holds them.
    in_memory: std::collections::HashMap<u64, std::sync::Weak<Vec<u8>>>,
    /// Digests of the blocks pos asked about with CHECK (delta or resume), computed once.
    digests: std::collections::HashMap<u64, Digest>,
    source: Box<dyn Source>,
    sums: Vec<Option<Sum>>,
    started: Instant,
    deadline: Instant,
    window: u64,
    /// With `p2p = on`: who holds what, and who sends what next.
    swarm: Option<Swarm>,
    /// Blocks this master uploaded itself, and their bytes.
    sent_blocks: u64,
    sent_bytes: u64,
}

impl Plan {
    /// Block `idx` from the source with its checksum, computed on the first read and cached
    /// after; `fresh` says that this read computed it.
    fn read_block(&mut self, idx: u64) -> Result<(Body, Sum, bool), String> {
        let b = self.manifest.block(idx).expect("block indices come from the manifest");
        let cached = self.sums[idx as usize];
        // A block read into memory (many small files) and still queued for some po is sent
        // to the next one from the same buffer: memory stays about one window, not one per po.
        if let (Some(sum), Some(bytes)) = (cached, self.in_memory.get(&idx).and_then(|w| w.upgrade())) {
            return Ok((Body::Bytes(bytes), sum, false));
        }
        let verify = if cached.is_some() { Verify::None } else { self.class.block_check() };
        let (body, sum) = self.source.block(&b, verify, self.class.sendfile).map_err(|e| format!("source: {e}"))?;
        if let Body::Bytes(bytes) = &body {
            if self.in_memory.len() >= 4096 {
                self.in_memory.retain(|_, w| w.strong_count() > 0);
            }
            self.in_memory.insert(idx, Arc::downgrade(bytes));
        }
        let sum = cached.unwrap_or(sum);
        self.sums[idx as usize] = Some(sum);
        Ok((body, sum, cached.is_none()))
    }

    /// Block `idx`'s digest for a po's CHECK (delta or resume); computed once.
    fn digest_of(&mut self, idx: u64) -> Result<Digest, String> {
        if let Some(d) = self.digests.get(&idx) {
            return Ok(*d);
        }
        let b = self.manifest.block(idx).expect("block indices come from the manifest");
        let (_, sum) = self.source.block(&b, Verify::Blake3, false).map_err(|e| format!("source: {e}"))?;
        let Sum::Blake3(d) = sum else { return Err(format!("source: no digest for block {idx}")) };
        self.digests.insert(idx, d);
        if self.class.block_check() == Verify::Blake3 {
            self.sums[idx as usize] = Some(sum);
        }
        Ok(d)
    }

    /// A block frame from the master to `conn`, counted as sent. Also returns the checksum
    /// when this read computed it (the swarm sends it to every po).
    fn send_block(&mut self, conn: ConnId, idx: u64) -> Result<(Action, Option<(u64, Sum)>), String> {
        let (body, sum, fresh) = self.read_block(idx)?;
        self.sent_blocks += 1;
        self.sent_bytes += body.len();
        let head = super::BlockHead { transfer: self.transfer, index: idx, sum };
        Ok((Action::SendBlock { conn, head, body }, fresh.then_some((idx, sum))))
    }
}

const OFFER_TIMEOUT: Duration = Duration::from_secs(60);
const REPORT_EVERY: Duration = Duration::from_secs(1);
const PING_EVERY: Duration = Duration::from_secs(10);
/// Bytes in flight to one po: enough to keep a fast link full between acks.
const WINDOW_BYTES: u64 = 32 << 20;
/// The least time a block between pos may take before it is sent again from elsewhere (the
/// swarm scales it up with the transfers it has seen). A link's head block shares its sender's
/// uplink with two others, and with 1,000 pos on 2 cores heads took 3-6 s: at 3 s the master
/// saw 4,500 false stalls, at 6 s four.
const STALL_FLOOR: Duration = Duration::from_secs(6);

pub struct MasterMachine {
    settings: MasterSettings,
    planner: Planner,
    phase: Phase,
    plan: Option<Plan>,
    pos: Vec<Po>,
    cac_conn: Option<ConnId>,
    /// After losing the CAC: a connection being made for progress reports, and which CAC of
    /// the list to try next.
    cac_redial: Option<ConnId>,
    next_cac: usize,
    next_conn: ConnId,
    next_report: Option<Instant>,
    next_ping: Option<Instant>,
    last_done: u64,
    last_report: Option<Instant>,
    rate: u64,
    outcome: Option<Outcome>,
    out: VecDeque<Action>,
}

impl MasterMachine {
    pub fn new(settings: MasterSettings, planner: Planner, now: Instant) -> MasterMachine {
        let mut m = MasterMachine {
            settings,
            planner,
            phase: Phase::Finished,
            plan: None,
            pos: Vec::new(),
            cac_conn: None,
            cac_redial: None,
            next_cac: 0,
            next_conn: 1,
            next_report: None,
            next_ping: None,
            last_done: 0,
            last_report: None,
            rate: 0,
            outcome: None,
            out: VecDeque::new(),
        };
        m.ask_cac(now, Failover::first());
        m
    }

    pub fn outcome(&self) -> Option<&Outcome> {
        self.outcome.as_ref()
    }

    /// Each po's state, in the class's order.
    pub fn po_states(&self) -> Vec<PoState> {
        self.pos.iter().map(|p| p.state).collect()
    }

    fn conn_id(&mut self) -> ConnId {
        self.next_conn += 1;
        self.next_conn
    }

    fn ask_cac(&mut self, now: Instant, cac: Failover) {
        let Some(addr) = cac.cac(&self.settings.cacs) else {
            let n = self.settings.cacs.len();
            return self.stop_early(TransferResult::Denied(format!("no CAC reachable (tried {n})")));
        };
        let conn = self.conn_id();
        self.phase = Phase::Auth { cac, conn, deadline: now + self.settings.connect_timeout };
        self.out.push_back(Action::Connect { conn, addr });
    }

    fn cac_failed(&mut self, now: Instant, why: &str) {
        if let Phase::Auth { cac, conn, .. } = self.phase {
            self.out.push_back(Action::Close { conn });
            self.ask_cac(now, cac.next("master", &self.settings.cacs, why));
        }
    }

    /// The transfer never started: usage, source or CAC trouble.
    fn stop_early(&mut self, result: TransferResult) {
        if let Some(c) = self.cac_conn.take() {
            self.out.push_back(Action::Close { conn: c });
        }
        let transfer = self.plan.as_ref().map(|p| p.transfer).unwrap_or(0);
        self.outcome = Some(Outcome { transfer, class: self.settings.class.clone(), result });
        self.phase = Phase::Finished;
    }

    fn on_grant(
        &mut self,
        now: Instant,
        conn: ConnId,
        transfer: u64,
        token: Vec<u8>,
        pos: Vec<String>,
        pairs: Vec<(String, String)>,
    ) {
        let class = match ClassCfg::from_pairs(&self.settings.class, &pairs) {
            Ok(c) => c,
            Err(e) => return self.stop_early(TransferResult::Denied(format!("CAC sent a bad class: {e}"))),
        };
        self.cac_conn = Some(conn);
        let (manifest, source) = match (self.planner)(&class) {
            Ok(p) => p,
            Err(e) => return self.stop_early(TransferResult::SourceFailed(e)),
        };
        if self.settings.dry_run {
            return self.dry_run(conn, transfer, &class, &manifest, &pos);
        }
        let nb = manifest.blocks() as usize;
        log::info!(
            "event=transfer_start transfer={transfer} class={} pos={} files={} bytes={} blocks={nb} verify={} p2p={}",
            class.name,
            pos.len(),
            manifest.files(),
            manifest.bytes(),
            class.verify,
            if class.p2p { "on" } else { "off" }
        );
        self.out.push_back(Action::SetRates { upload: class.rate_limit, download: 0 });
        self.pos = pos
            .into_iter()
            .map(|name| Po {
                addr: name.parse().ok(),
                name,
                conn: None,
                data: None,
                state: PoState::Idle,
                attempts: 0,
                deadline: Some(now),
                have: vec![false; nb],
                cursor: 0,
                inflight: 0,
                bytes: 0,
                error: String::new(),
                hook_exit: None,
                hook_tail: String::new(),
            })
            .collect();
        let window = (WINDOW_BYTES / manifest.block_size as u64).max(2);
        let deadline = now + Duration::from_secs(class.timeout);
        let swarm = class.p2p.then(|| Swarm::new(self.pos.len(), nb as u64, class.peers));
        self.plan = Some(Plan {
            transfer,
            token,
            class,
            offer: std::sync::Weak::new(),
            digests: std::collections::HashMap::new(),
            in_memory: std::collections::HashMap::new(),
            manifest,
            source,
            sums: vec![None; nb],
            started: now,
            deadline,
            window,
            swarm,
            sent_blocks: 0,
            sent_bytes: 0,
        });
        self.phase = Phase::Transfer;
        self.next_report = Some(now);
        self.next_ping = Some(now + PING_EVERY);
        for i in 0..self.pos.len() {
            if self.pos[i].addr.is_none() {
                let e = format!("bad po address {:?} in the class", self.pos[i].name);
                self.po_fail(i, e);
            }
        }
        if self.pos.is_empty() {
            self.finish(now);
        }
    }

    /// What a transfer would move (`app::outcome` says how long it would take).
    fn dry_run(&mut self, cac: ConnId, transfer: u64, class: &ClassCfg, m: &Manifest, pos: &[String]) {
        use super::manifest::Kind;
        let count = |f: fn(&Kind) -> bool| m.entries().iter().filter(|e| f(&e.kind)).count();
        let plan = DryRun {
            class: class.clone(),
            files: count(|k| matches!(k, Kind::File { .. })),
            dirs: count(|k| matches!(k, Kind::Dir)),
            symlinks: count(|k| matches!(k, Kind::Symlink { .. })),
            bytes: m.bytes(),
            blocks: m.blocks(),
            block_size: m.block_size,
            pos: pos.to_vec(),
        };
        let stat = super::msg::TransferStat {
            transfer,
            class: class.name.clone(),
            state: "dry-run".into(),
            total: m.bytes(),
            started_unix: self.settings.unix_start,
            ..Default::default()
        };
        self.out.push_back(Action::Send { conn: cac, msg: Msg::Progress { stat } });
        self.out.push_back(Action::Close { conn: cac });
        let class = class.name.clone();
        self.outcome = Some(Outcome { transfer, class, result: TransferResult::DryRun(plan) });
        self.phase = Phase::Finished;
    }

    fn connect_po(&mut self, now: Instant, i: usize) {
        let conn = self.conn_id();
        let p = &mut self.pos[i];
        let Some(addr) = p.addr else { return };
        p.conn = Some(conn);
        p.state = PoState::Connecting;
        p.attempts += 1;
        p.deadline = Some(now + self.settings.connect_timeout);
        self.out.push_back(Action::Connect { conn, addr });
    }

    fn po_index(&self, conn: ConnId) -> Option<usize> {
        self.pos.iter().position(|p| p.conn == Some(conn) || p.data == Some(conn))
    }

    /// A po's connection broke: retry with backoff while `retries` allow.
    fn po_lost(&mut self, now: Instant, i: usize, why: String) {
        let retries = self.plan.as_ref().map(|p| p.class.retries).unwrap_or(0);
        if let Some(sw) = self.plan.as_mut().and_then(|p| p.swarm.as_mut()) {
            sw.leave(i as u32);
        }
        let p = &mut self.pos[i];
        for c in [p.conn.take(), p.data.take()].into_iter().flatten() {
            self.out.push_back(Action::Close { conn: c });
        }
        if matches!(p.state, PoState::Done | PoState::Failed) {
            return;
        }
        if p.attempts <= retries {
            let backoff = Duration::from_millis(500 << p.attempts.min(6));
            log::warn!(
                "event=po_retry po={} attempt={} in_ms={} error=\"{why}\"",
                p.name,
                p.attempts,
                backoff.as_millis()
            );
            p.state = PoState::Idle;
            p.deadline = Some(now + backoff);
            p.inflight = 0;
        } else {
            self.po_fail(i, why);
        }
    }

    fn po_fail(&mut self, i: usize, error: String) {
        let transfer = self.plan.as_ref().map(|p| p.transfer).unwrap_or(0);
        let p = &mut self.pos[i];
        if p.state == PoState::Failed {
            return;
        }
        log::error!("event=po_failed transfer={transfer} po={} state={} error=\"{error}\"", p.name, p.state.name());
        if let Some(sw) = self.plan.as_mut().and_then(|p| p.swarm.as_mut()) {
            sw.leave(i as u32);
        }
        let p = &mut self.pos[i];
        p.state = PoState::Failed;
        p.error = error;
        p.deadline = None;
        if let Some(c) = p.conn.take() {
            self.out.push_back(Action::Send { conn: c, msg: Msg::Abort { transfer, reason: "failed".into() } });
            self.out.push_back(Action::Close { conn: c });
        }
        if let Some(c) = p.data.take() {
            self.out.push_back(Action::Close { conn: c });
        }
    }

    /// Queues blocks to po `i` until its window is full.
    fn pump(&mut self, i: usize) {
        let Some(plan) = self.plan.as_mut() else { return };
        let p = &mut self.pos[i];
        let (Some(conn), PoState::Sending) = (p.conn, p.state) else { return };
        let nb = plan.manifest.blocks();
        while p.inflight < plan.window && p.cursor < nb {
            let idx = p.cursor;
            p.cursor += 1;
            if p.have[idx as usize] {
                continue;
            }
            match plan.send_block(conn, idx) {
                Ok((send, _)) => {
                    self.out.push_back(send);
                    p.inflight += 1;
                }
                // The source itself is broken: no po can get a good copy.
                Err(e) => return self.abort_all(e),
            }
        }
    }

    /// Turns the swarm's new assignments into block sends and push orders. Checksums go to
    /// every po before any po can be asked to serve the block.
    fn schedule(&mut self, now: Instant) {
        let Some(plan) = self.plan.as_mut() else { return };
        let Some(assigns) = plan.swarm.as_mut().map(|sw| sw.schedule(now)) else { return };
        let mut sums = Vec::new();
        let mut sends = Vec::new();
        for a in assigns {
            let conn = match a.from {
                Src::Master => self.pos[a.to as usize].data,
                Src::Po(s) => self.pos[s as usize].conn,
            };
            let Some(conn) = conn.filter(|_| self.pos[a.to as usize].conn.is_some()) else {
                if let Some(sw) = plan.swarm.as_mut() {
                    sw.cancel(a.to, a.block, now);
                }
                continue;
            };
            let sent = if a.from == Src::Master {
                plan.send_block(conn, a.block).map(|(send, fresh)| (send, fresh.map(|f| f.1)))
            } else {
                // A po serves it; its checksum must be known (and sent) first.
                let push = Action::Send { conn, msg: Msg::Push { transfer: plan.transfer, block: a.block, to: a.to } };
                match plan.sums[a.block as usize] {
                    Some(_) => Ok((push, None)),
                    None => plan.read_block(a.block).map(|(_, sum, _)| (push, Some(sum))),
                }
            };
            match sent {
                Ok((send, fresh)) => {
                    sums.extend(fresh.map(|sum| (a.block, sum)));
                    sends.push(send);
                }
                Err(e) => return self.abort_all(e),
            }
        }
        if !sums.is_empty() && plan.class.block_check() != Verify::None {
            for p in self.pos.iter().filter(|p| p.state.joined()) {
                if let Some(conn) = p.conn {
                    let msg = Msg::Sums { transfer: plan.transfer, sums: sums.clone() };
                    self.out.push_back(Action::Send { conn, msg });
                }
            }
        }
        self.out.extend(sends);
    }

    /// The first source file whose size or mtime differs from the manifest.
    fn changed_source(&mut self) -> Option<String> {
        let plan = self.plan.as_mut()?;
        let files: Vec<u32> = (0..plan.manifest.entries().len() as u32)
            .filter(|&e| matches!(plan.manifest.entries()[e as usize].kind, super::manifest::Kind::File { .. }))
            .collect();
        files.into_iter().find_map(|e| plan.source.unchanged(e).err().map(|e| e.to_string()))
    }

    fn abort_all(&mut self, error: String) {
        log::error!("event=transfer_abort error=\"{error}\"");
        for i in 0..self.pos.len() {
            if self.pos[i].state != PoState::Done {
                self.po_fail(i, error.clone());
            }
        }
    }

    fn on_po_frame(&mut self, now: Instant, i: usize, msg: Msg) {
        let Some(plan) = self.plan.as_ref() else { return };
        let transfer = plan.transfer;
        let state = self.pos[i].state;
        match (state, msg) {
            // Delta: the po's published copy may hold these blocks; their MD5s decide.
            (PoState::Offered, Msg::Check { transfer: t, mut blocks }) if t == transfer => {
                let plan = self.plan.as_mut().expect("checked above");
                // Each block once, and only real ones: the answer must fit one frame.
                blocks.sort_unstable();
                blocks.dedup();
                blocks.retain(|&b| b < plan.manifest.blocks());
                let mut sums = Vec::with_capacity(blocks.len());
                for b in blocks {
                    match plan.digest_of(b) {
                        Ok(d) => sums.push((b, d)),
                        Err(e) => return self.abort_all(e),
                    }
                }
                let p = &mut self.pos[i];
                log::info!("event=delta_check transfer={transfer} po={} blocks={}", p.name, sums.len());
                p.deadline = Some(now + OFFER_TIMEOUT);
                if let Some(conn) = p.conn {
                    self.out.push_back(Action::Send { conn, msg: Msg::CheckSums { transfer, sums } });
                }
            }
            // The po knows the token is good and says what it holds already.
            (PoState::Offered, Msg::Accept { transfer: t, have }) if t == transfer => {
                let nb = plan.manifest.blocks();
                let p = &mut self.pos[i];
                p.bytes = 0;
                for b in 0..nb {
                    p.have[b as usize] = bit(&have, b);
                    if p.have[b as usize] {
                        p.bytes += plan.manifest.block(b).map(|x| x.len as u64).unwrap_or(0);
                    }
                }
                p.cursor = 0;
                p.inflight = 0;
                p.state = PoState::Sending;
                p.deadline = None;
                log::info!("event=po_accept transfer={transfer} po={} held_bytes={}", p.name, p.bytes);
                if let Some(sw) = self.plan.as_ref().and_then(|p| p.swarm.as_ref()) {
                    // Every neighbour with the key of its link: we dial those that accepted
                    // before (an address); later ones dial us (none).
                    let key = &self.settings.transfer_key;
                    let me = i as u32;
                    let links = sw
                        .neighbours(me)
                        .iter()
                        .filter(|&&j| j != me)
                        .map(|&j| {
                            let p = &self.pos[j as usize];
                            let addr = if p.state.joined() { p.name.clone() } else { String::new() };
                            PeerLink { idx: j, addr, key: auth::link_key(key, me, j) }
                        })
                        .collect();
                    let master_key = auth::link_key(key, me, swarm::MASTER_PEER);
                    let conn = self.pos[i].conn.expect("accepting po is connected");
                    self.out.push_back(Action::Send { conn, msg: Msg::Peers { transfer, me, master_key, links } });
                    // A late joiner needs every checksum sent so far.
                    let plan = self.plan.as_ref().expect("checked above");
                    let sums: Vec<(u64, Sum)> =
                        plan.sums.iter().enumerate().filter_map(|(b, s)| s.map(|s| (b as u64, s))).collect();
                    if !sums.is_empty() && plan.class.block_check() != Verify::None {
                        self.out.push_back(Action::Send { conn, msg: Msg::Sums { transfer, sums } });
                    }
                    // The po joins the swarm once the data connection is up.
                    let data = self.conn_id();
                    self.pos[i].data = Some(data);
                    let addr = self.pos[i].addr.expect("a connected po has an address");
                    self.out.push_back(Action::Connect { conn: data, addr });
                } else {
                    self.pump(i);
                }
            }
            // Acks free window space, or swarm slots.
            (PoState::Sending | PoState::Ready, Msg::Have { transfer: t, blocks }) if t == transfer => {
                let plan = self.plan.as_mut().expect("checked above");
                let p = &mut self.pos[i];
                let nb = plan.manifest.blocks();
                for b in blocks.into_iter().filter(|&b| b < nb) {
                    if let Some(sw) = plan.swarm.as_mut() {
                        sw.have(i as u32, b, now);
                    }
                    if let Some(h) = p.have.get_mut(b as usize) {
                        if !*h {
                            *h = true;
                            p.bytes += plan.manifest.block(b).map(|x| x.len as u64).unwrap_or(0);
                            p.inflight = p.inflight.saturating_sub(1);
                        }
                    }
                }
                if plan.swarm.is_some() {
                    self.schedule(now);
                } else {
                    self.pump(i);
                }
            }
            // A push that could not happen: the slots are free again. Only the po that was to
            // send it may say so (the one the master had asked, for the master's own link).
            (_, Msg::Unsent { transfer: t, block, to, why }) if t == transfer => {
                log::debug!(
                    "event=push_unsent transfer={transfer} po={} block={block} to={to} why=\"{why}\"",
                    self.pos[i].name
                );
                if let Some(sw) = self.plan.as_mut().and_then(|p| p.swarm.as_mut()) {
                    let from = sw.source_of(to, block);
                    let unsent_by_sender = from == Some(Src::Po(i as u32));
                    // A po that cannot check a block on the master's data link gives it back.
                    let unsent_to_itself = to == i as u32 && from == Some(Src::Master);
                    if unsent_by_sender || unsent_to_itself {
                        sw.cancel(to, block, now);
                    }
                }
                self.schedule(now);
            }
            // A peer served a corrupt block: fetch it elsewhere; repeated faults exclude it.
            (_, Msg::Bad { transfer: t, block, from }) if t == transfer => {
                let src = self.pos.get(from as usize).map(|p| p.name.clone()).unwrap_or_default();
                log::warn!("event=block_bad transfer={transfer} po={} block={block} source={src}", self.pos[i].name);
                if let Some(sw) = self.plan.as_mut().and_then(|p| p.swarm.as_mut()) {
                    let before = sw.faults(from);
                    sw.bad(i as u32, block, Src::Po(from));
                    if before < swarm::MAX_FAULTS && sw.faults(from) == swarm::MAX_FAULTS {
                        log::error!("event=peer_excluded transfer={transfer} po={src} faults={}", swarm::MAX_FAULTS);
                    }
                }
                self.schedule(now);
            }
            (PoState::Sending | PoState::Offered, Msg::Ready { transfer: t }) if t == transfer => {
                let p = &mut self.pos[i];
                p.state = PoState::Ready;
                log::info!("event=po_ready transfer={transfer} po={}", p.name);
                if plan.class.publish == Publish::Together {
                    self.maybe_commit(false);
                }
            }
            (
                PoState::Ready | PoState::Committing | PoState::Sending,
                Msg::Done { transfer: t, files, bytes, hook_exit, hook_tail },
            ) if t == transfer => {
                let p = &mut self.pos[i];
                p.state = PoState::Done;
                p.hook_exit = hook_exit;
                p.hook_tail = hook_tail;
                p.deadline = None;
                log::info!("event=po_done transfer={transfer} po={} files={files} bytes={bytes}", p.name);
                // In a swarm a finished po still serves its neighbours.
                if plan.swarm.is_none() {
                    if let Some(c) = p.conn.take() {
                        self.out.push_back(Action::Close { conn: c });
                    }
                }
            }
            (_, Msg::Failed { transfer: t, error }) if t == transfer => {
                // A po's checksum failure is most often a source file changing under us: then
                // no po can get a good copy, and the error should say so.
                let together = plan.class.publish == Publish::Together;
                match self.changed_source() {
                    Some(e) => self.abort_all(e),
                    None => {
                        self.po_fail(i, error);
                        // The ready pos may have been waiting only for this one.
                        if together {
                            self.maybe_commit(false);
                        }
                    }
                }
            }
            (_, Msg::Denied { reason, text }) => {
                let e = format!("refused ({}): {text}", reason.name());
                if reason == Reason::NoCac {
                    self.po_lost(now, i, e)
                } else {
                    self.po_fail(i, e)
                }
            }
            (_, Msg::Ping) => {}
            (s, other) => {
                let e = format!("protocol: unexpected {:?} in state {}", other.ty(), s.name());
                self.po_fail(i, e)
            }
        }
        self.maybe_finish(now);
    }

    /// With `publish = together`: COMMIT once every live po is READY, or at the deadline when
    /// `quorum` of them are.
    fn maybe_commit(&mut self, deadline: bool) {
        let Some(plan) = self.plan.as_mut() else { return };
        let ready = self.pos.iter().filter(|p| p.state == PoState::Ready).count();
        let waiting = self.pos.iter().filter(|p| p.state.live() && p.state != PoState::Ready).count();
        if ready == 0 || (waiting > 0 && !deadline) {
            return;
        }
        if deadline && ready < plan.class.quorum.needed(self.pos.len()) {
            return;
        }
        // Never publish a copy of a file that changed while it was read.
        if let Some(err) = self.changed_source() {
            return self.abort_all(err);
        }
        let Some(plan) = self.plan.as_ref() else { return };
        let transfer = plan.transfer;
        log::info!("event=commit transfer={transfer} ready={ready} total={}", self.pos.len());
        for p in self.pos.iter_mut().filter(|p| p.state == PoState::Ready) {
            if let Some(conn) = p.conn {
                self.out.push_back(Action::Send { conn, msg: Msg::Commit { transfer } });
                p.state = PoState::Committing;
            }
        }
    }

    fn maybe_finish(&mut self, now: Instant) {
        if matches!(self.phase, Phase::Transfer)
            && self.pos.iter().all(|p| matches!(p.state, PoState::Done | PoState::Failed))
        {
            self.finish(now);
        }
    }

    fn finish(&mut self, now: Instant) {
        let Some(plan) = self.plan.as_ref() else { return };
        let pos: Vec<PoOutcome> = self
            .pos
            .iter()
            .map(|p| PoOutcome {
                name: p.name.clone(),
                failed: (p.state != PoState::Done).then(|| p.error.clone()),
                hook: p.hook_exit.map(|c| (c, p.hook_tail.clone())),
            })
            .collect();
        let ok = pos.iter().filter(|p| p.failed.is_none()).count();
        let ran = Ran {
            bytes: plan.manifest.bytes(),
            blocks: plan.manifest.blocks(),
            elapsed: now.duration_since(plan.started),
            master_blocks: plan.sent_blocks,
            master_bytes: plan.sent_bytes,
            pos,
        };
        let result = match ok {
            0 => TransferResult::Failed(ran),
            ok if ok < self.pos.len() => TransferResult::Partial(ran),
            _ => TransferResult::Ok(ran),
        };
        if let Some(sw) = plan.swarm.as_ref() {
            log::debug!("event=swarm_diag {}", sw.diag_line());
        }
        let (transfer, class) = (plan.transfer, plan.class.name.clone());
        self.report(now, Some(result.name()));
        if let Some(c) = self.cac_conn.take() {
            self.out.push_back(Action::Close { conn: c });
        }
        for p in &mut self.pos {
            for c in [p.conn.take(), p.data.take()].into_iter().flatten() {
                self.out.push_back(Action::Close { conn: c });
            }
        }
        self.outcome = Some(Outcome { transfer, class, result });
        self.phase = Phase::Finished;
    }

    /// The transfer as `wugui-stat` shows it.
    pub fn stat(&self, now: Instant, state: Option<&str>) -> TransferStat {
        let Some(plan) = self.plan.as_ref() else { return TransferStat::default() };
        let done: u64 = self.pos.iter().map(|p| p.bytes).sum();
        let live =
            self.pos.iter().any(|p| matches!(p.state, PoState::Sending | PoState::Offered | PoState::Connecting));
        TransferStat {
            transfer: plan.transfer,
            class: plan.class.name.clone(),
            master: String::new(),
            state: state.unwrap_or(if live { "sending" } else { "committing" }).to_owned(),
            total: plan.manifest.bytes(),
            done,
            started_unix: self.settings.unix_start,
            elapsed_ms: now.duration_since(plan.started).as_millis() as u64,
            rate: self.rate,
            pos: self
                .pos
                .iter()
                .map(|p| PoStat {
                    addr: p.name.clone(),
                    state: p.state.name().into(),
                    bytes: p.bytes,
                    // A failed hook shows in wugui-stat as in the master's stderr line.
                    error: match p.hook_exit {
                        Some(c) if c != 0 => {
                            format!("hook_exit={c} {}", p.hook_tail.lines().last().unwrap_or(""))
                        }
                        _ => p.error.clone(),
                    },
                })
                .collect(),
        }
    }

    fn report(&mut self, now: Instant, state: Option<&str>) {
        // Bytes/s over the last interval while running; the whole transfer's average at the end.
        let done: u64 = self.pos.iter().map(|p| p.bytes).sum();
        let per_sec = |bytes: u64, since: Instant| {
            let secs = now.duration_since(since).as_secs_f64();
            if secs > 0.0 {
                (bytes as f64 / secs) as u64
            } else {
                0
            }
        };
        self.rate = match (state, self.last_report, self.plan.as_ref()) {
            (Some(_), _, Some(plan)) => per_sec(done, plan.started),
            (None, Some(t), _) => per_sec(done.saturating_sub(self.last_done), t),
            _ => 0,
        };
        self.last_done = done;
        self.last_report = Some(now);
        let stat = self.stat(now, state);
        if let Some(conn) = self.cac_conn {
            self.out.push_back(Action::Send { conn, msg: Msg::Progress { stat } });
        }
    }
}

impl Machine for MasterMachine {
    fn handle_event(&mut self, now: Instant, ev: Event) {
        match (&self.phase, ev) {
            (Phase::Auth { conn: c, .. }, Event::Connected { conn }) if *c == conn => {
                self.out.push_back(Action::Send { conn, msg: Msg::AuthRequest { class: self.settings.class.clone() } });
            }
            (Phase::Auth { conn: c, .. }, Event::Frame { conn, msg }) if *c == conn => match msg {
                Msg::AuthGrant { transfer, token, pos, class } => self.on_grant(now, conn, transfer, token, pos, class),
                Msg::AuthChallenge { nonce } => match &self.settings.secret {
                    Some(s) => {
                        let mac = auth::mac(s, &challenge_data(&nonce, &self.settings.class));
                        self.out.push_back(Action::Send { conn, msg: Msg::AuthResponse { mac } });
                    }
                    None => {
                        let e = format!(
                            "class {} needs the master secret (secret_dir/{0} in master.conf)",
                            self.settings.class
                        );
                        self.stop_early(TransferResult::Denied(e))
                    }
                },
                // A CAC that answers has spoken for all replicas.
                Msg::Denied { reason, text } => {
                    self.stop_early(TransferResult::Denied(format!("CAC refused ({}): {text}", reason.name())))
                }
                other => self.cac_failed(now, &format!("unexpected {:?}", other.ty())),
            },
            (Phase::Auth { conn: c, .. }, Event::Closed { conn, reason }) if *c == conn => {
                self.cac_failed(now, &reason.or("closed before answering"))
            }
            (Phase::Transfer, Event::Connected { conn }) if self.cac_redial == Some(conn) => {
                log::info!("event=cac_reconnected role=master");
                self.cac_redial = None;
                self.cac_conn = Some(conn);
            }
            (Phase::Transfer, Event::Closed { conn, .. }) if self.cac_redial == Some(conn) => {
                self.cac_redial = None;
                self.next_cac += 1;
            }
            (Phase::Transfer, Event::Connected { conn }) => {
                let Some(i) = self.po_index(conn) else { return };
                let plan = self.plan.as_mut().expect("transfer phase has a plan");
                if self.pos[i].data == Some(conn) {
                    let proof = auth::link_key(&self.settings.transfer_key, i as u32, swarm::MASTER_PEER);
                    let msg = Msg::PeerHello { token: plan.token.clone(), me: swarm::MASTER_PEER, proof };
                    self.out.push_back(Action::Send { conn, msg });
                    if let Some(sw) = plan.swarm.as_mut() {
                        sw.join(i as u32, &self.pos[i].have);
                    }
                    return self.schedule(now);
                }
                let msg = Msg::Offer {
                    token: plan.token.clone(),
                    po: self.pos[i].name.clone(),
                    manifest: plan.offer.upgrade().unwrap_or_else(|| {
                        let m = Arc::new(plan.manifest.encode());
                        plan.offer = Arc::downgrade(&m);
                        m
                    }),
                };
                self.out.push_back(Action::Send { conn, msg });
                self.pos[i].state = PoState::Offered;
                self.pos[i].deadline = Some(now + OFFER_TIMEOUT);
            }
            (Phase::Transfer, Event::Frame { conn, msg }) => {
                if let Some(i) = self.po_index(conn) {
                    self.on_po_frame(now, i, msg);
                }
            }
            (Phase::Transfer, Event::Closed { conn, reason }) => {
                if self.cac_conn == Some(conn) {
                    // Progress reports are best effort; the transfer goes on.
                    log::warn!("event=cac_lost role=master error=\"{reason}\"");
                    self.cac_conn = None;
                } else if let Some(i) = self.po_index(conn) {
                    if self.pos[i].conn == Some(conn) {
                        self.pos[i].conn = None;
                    } else {
                        self.pos[i].data = None;
                    }
                    self.po_lost(now, i, reason.or("po closed the connection"));
                    self.maybe_commit(false);
                    self.maybe_finish(now);
                }
            }
            _ => {}
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        match self.phase {
            Phase::Auth { deadline, .. } if deadline <= now => self.cac_failed(now, "timed out"),
            Phase::Transfer => {
                let deadline = self.plan.as_ref().map(|p| p.deadline).expect("transfer has a plan");
                if now >= deadline {
                    let publish = self.plan.as_ref().map(|p| p.class.publish);
                    if publish == Some(Publish::Together) {
                        self.maybe_commit(true);
                    }
                    for i in 0..self.pos.len() {
                        if matches!(self.pos[i].state, PoState::Done | PoState::Failed | PoState::Committing) {
                            continue;
                        }
                        self.po_fail(i, "class timeout reached".into());
                    }
                    // Committing pos get a grace period to answer.
                    if let Some(plan) = self.plan.as_mut() {
                        plan.deadline = now + Duration::from_secs(30);
                    }
                    if self.pos.iter().all(|p| p.state != PoState::Committing) {
                        self.finish(now);
                        return;
                    }
                    for i in 0..self.pos.len() {
                        if self.pos[i].state == PoState::Committing {
                            self.pos[i].state = PoState::Ready;
                        }
                    }
                }
                for i in 0..self.pos.len() {
                    if self.pos[i].deadline.is_some_and(|d| d <= now) {
                        match self.pos[i].state {
                            PoState::Idle => self.connect_po(now, i),
                            PoState::Connecting => self.po_lost(now, i, "connect timed out".into()),
                            PoState::Offered => self.po_lost(now, i, "no answer to the offer".into()),
                            _ => self.pos[i].deadline = None,
                        }
                    }
                }
                if self.next_report.is_some_and(|t| t <= now) {
                    // Progress reports are best effort: a lost CAC is dialled again, in turn.
                    if self.cac_conn.is_none() && self.cac_redial.is_none() && !self.settings.cacs.is_empty() {
                        let addr = self.settings.cacs[self.next_cac % self.settings.cacs.len()];
                        let conn = self.conn_id();
                        self.cac_redial = Some(conn);
                        self.out.push_back(Action::Connect { conn, addr });
                    }
                    self.report(now, None);
                    self.next_report = Some(now + REPORT_EVERY);
                    // A transfer between two pos that never finishes is given to someone else.
                    if let Some(sw) = self.plan.as_mut().and_then(|p| p.swarm.as_mut()) {
                        log::debug!("event=swarm_state {}", sw.debug_line());
                        let limit = sw.stall_limit(STALL_FLOOR);
                        for (to, b, from) in sw.stalled(now, limit) {
                            log::warn!(
                                "event=push_stalled block={b} to={to} from={from:?} limit_ms={}",
                                limit.as_millis()
                            );
                            sw.stall(to, b, now);
                        }
                    }
                    self.schedule(now);
                }
                if self.next_ping.is_some_and(|t| t <= now) {
                    for p in &self.pos {
                        if let (Some(conn), PoState::Ready | PoState::Committing) = (p.conn, p.state) {
                            self.out.push_back(Action::Send { conn, msg: Msg::Ping });
                        }
                    }
                    self.next_ping = Some(now + PING_EVERY);
                }
                self.maybe_finish(now);
            }
            _ => {}
        }
    }

    fn poll_action(&mut self) -> Option<Action> {
        self.out.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        match &self.phase {
            Phase::Auth { deadline, .. } => Some(*deadline),
            Phase::Transfer => earliest(self.pos.iter().map(|p| p.deadline).chain([
                self.next_report,
                self.next_ping,
                self.plan.as_ref().map(|p| p.deadline),
            ])),
            Phase::Finished => None,
        }
    }

    fn is_finished(&self) -> bool {
        matches!(self.phase, Phase::Finished) && self.out.is_empty()
    }

    fn stats(&self) -> Stats {
        let (blocks_sent, bytes_sent) = self.plan.as_ref().map_or((0, 0), |p| (p.sent_blocks, p.sent_bytes));
        Stats { blocks_sent, bytes_sent, ..Stats::default() }
    }
}
