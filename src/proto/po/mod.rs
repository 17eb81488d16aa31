//! The po: receives a transfer, verifies every block, stages it and publishes it.
//!
//! A master connection goes `New` -> (Offer: token, manifest id and size) `Pending` (asking the
//! CACs in order) -> (VerifyOk; we send Verified) waiting for the manifest -> (Manifest)
//! `Receiving` -> (all blocks held) `Ready` -> (Commit, or at once with `publish = each`)
//! `Published`. Nothing big is read before the CAC vouched for the token. Any failure sends `Failed` to the master and leaves the
//! published tree as it was. Transfers are keyed by id, so a master that reconnects with the
//! same transfer picks up where it left.
//!
//! Here: the machine and its connections. `events` dispatches by connection kind and runs the
//! timers; `offer`, `blocks`, `swarm`, `publish` and `stat` handle what their names say;
//! `fence` keeps an older push of a dest from replacing a newer one;
//! `transfer` is one transfer's state.

mod blocks;
mod chain;
mod dry_run;
mod events;
mod fence;
mod offer;
mod publish;
mod stat;
mod swarm;
#[cfg(test)]
mod tests;
mod transfer;
mod wave;

use super::auth::{ct_eq, Token};
use super::bitmap::bitmap;
use super::class::Publish;
use super::failover::Failover;
use super::manifest::hex;
use super::msg::{Digest, PeerLink, Reason, TransferStat};
use super::swarm::MASTER_PEER;
use super::wire::{MAX_CONTROL, MAX_MANIFEST, NO_FRAME_LIMIT};
use super::Verify;
use super::{
    earliest, Action, BlockHead, BlockRef, Check, ClassCfg, Close, ConnId, Event, Machine, Manifest, Msg, Payload,
    Stats, Store, Sum, Verdict,
};
use chain::{HAVE_BATCH, HAVE_DELAY};
use core::net::SocketAddr;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};
use transfer::{Canary, From, Hook, Joined, Swarm, TState, Transfer};

#[derive(Debug, Clone)]
pub struct PoSettings {
    /// The address this po presents to the CAC; `None` (a wildcard `listen`): the address the
    /// master's connection reached here, with `listen_port`. Never what a master says.
    pub advertise: Option<String>,
    pub listen_port: u16,
    /// A transfer whose master is gone keeps its files open this long (for a quick reconnect),
    /// then the store lets go of them (`Store::release`); the stage stays for a resume.
    pub release_after: Duration,
    pub cacs: Vec<SocketAddr>,
    /// Class dests must lie below one of these (absolute paths).
    pub allow_dest: Vec<String>,
    /// Demo/test mode: every dest is taken below this directory.
    pub root: Option<String>,
    pub cac_timeout: Duration,
    /// Where class hooks live; a class hook runs only from here.
    pub hook_dir: Option<String>,
    /// Bytes/s over all transfers of this host; 0 = none.
    pub max_upload_rate: u64,
    pub max_download_rate: u64,
}

/// A connection says who it is within this.
const HANDSHAKE: Duration = Duration::from_secs(10);
/// Offers waiting for a CAC's word (or for their manifest), over all masters; more are refused
/// with `Busy`. Each costs at most one small frame's worth of memory.
const MAX_PENDING: usize = 64;
/// The master pings at least this often while it waits.
const MASTER_IDLE: Duration = Duration::from_secs(120);

enum ConnKind {
    /// Accepted, nothing said yet.
    New,
    /// A master's connection, once its offer is under verification or accepted.
    Master { transfer: Option<u64> },
    /// Our question to CAC number `cac` about the offer on master connection `master`.
    Cac { master: ConnId, cac: Failover },
    /// A `wugui-stat` client.
    Stat,
    /// A neighbour in the swarm of `transfer`: po `idx`, once the token was presented.
    Peer { transfer: u64, idx: u32 },
    /// The master's block stream for `transfer` in a swarm.
    MasterData { transfer: u64 },
}

struct Conn {
    peer: Option<SocketAddr>,
    /// Our address it reached (accepted connections).
    local: Option<SocketAddr>,
    kind: ConnKind,
    deadline: Option<Instant>,
}

/// An offer before its transfer starts: the CAC's word on its token, then its manifest.
struct Pending {
    token: Vec<u8>,
    /// Who this po says it is to the CAC.
    po: String,
    announced: Announced,
    step: Step,
}

/// The manifest an offer names: its id and encoded length.
pub(super) struct Announced {
    id: [u8; 16],
    len: u64,
    /// The offer's mode bits (`OFFER_DRY_RUN`, `OFFER_HOLD`).
    mode: u8,
}

enum Step {
    /// Waiting for a CAC's word.
    Cac,
    /// The CAC vouched for the token; the master was asked for the manifest (`Verified`).
    Manifest { transfer: u64, class: Box<ClassCfg>, dest: String },
    /// The store builds the stage of `transfer` (disk job `job`); then CHECK or ACCEPT.
    Stage { transfer: u64, job: u64, class: Box<ClassCfg>, dest: String, manifest: Box<Manifest> },
}

/// Peer blocks held back until their checksum arrives, per transfer.
const MAX_PARKED: usize = 8;
/// Peer hellos held back until our PEERS arrives, per transfer.
const MAX_HELLOS: usize = 64;

/// A push for a neighbour whose link never comes up is given back to the master.
const LINK_WAIT: Duration = Duration::from_secs(10);

pub struct PoMachine<S: Store> {
    settings: PoSettings,
    store: S,
    conns: HashMap<ConnId, Conn>,
    pending: HashMap<ConnId, Pending>,
    /// Dry runs waiting for the master's digests of their CHECK, by master connection.
    dry: HashMap<ConnId, dry_run::DryRun>,
    transfers: HashMap<u64, Transfer>,
    /// The last transfer published to each dest (`fence`).
    published: HashMap<String, u64>,
    next_conn: ConnId,
    /// Names the next `Check` handed out.
    next_check: u64,
    out: VecDeque<Action>,
    stats: Stats,
}

impl<S: Store> PoMachine<S> {
    pub fn new(settings: PoSettings, store: S) -> PoMachine<S> {
        let rates = Action::SetRates { upload: settings.max_upload_rate, download: settings.max_download_rate };
        PoMachine {
            settings,
            store,
            conns: HashMap::new(),
            pending: HashMap::new(),
            dry: HashMap::new(),
            transfers: HashMap::new(),
            published: HashMap::new(),
            next_conn: 1,
            next_check: 1,
            out: VecDeque::from([rates]),
            stats: Stats::default(),
        }
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    pub fn store_mut(&mut self) -> &mut S {
        &mut self.store
    }

    /// SIGHUP: new settings for new transfers; live ones go on.
    pub fn reload(&mut self, settings: PoSettings) {
        let (upload, download) = (settings.max_upload_rate, settings.max_download_rate);
        self.out.push_back(Action::SetRates { upload, download });
        self.settings = settings;
    }

    fn send(&mut self, conn: ConnId, msg: Msg) {
        self.out.push_back(Action::Send { conn, msg });
    }

    fn refuse(&mut self, conn: ConnId, reason: Reason, text: String) {
        self.send(conn, Msg::Denied { reason, text });
        self.out.push_back(Action::Close { conn });
        self.conns.remove(&conn);
        self.drop_pending(conn);
        self.dry.remove(&conn);
    }

    /// The transfer whose stage is being built for the offer on `conn`, if one is.
    fn staging(&self, conn: ConnId) -> Option<u64> {
        match self.pending.get(&conn)?.step {
            Step::Stage { transfer, .. } => Some(transfer),
            _ => None,
        }
    }

    /// Forgets the offer on `conn`; a stage being built for it is aborted as a transfer
    /// is (its job cancelled, what it staged kept for a resume). Not when the transfer was
    /// offered again on another link (its master's new one) meanwhile: the store's stage of
    /// it is that offer's now.
    fn drop_pending(&mut self, conn: ConnId) {
        if let Some(Pending { step: Step::Stage { transfer, .. }, .. }) = self.pending.remove(&conn) {
            let again = self.transfers.contains_key(&transfer)
                || self.pending.values().any(|p| matches!(p.step, Step::Stage { transfer: t, .. } if t == transfer));
            if !again {
                self.store.abort(transfer, true);
            }
        }
    }
}

impl<S: Store> Machine for PoMachine<S> {
    fn handle_event(&mut self, now: Instant, ev: Event) {
        match ev {
            Event::HookDone { id, exit, tail } => self.on_hook_done(id, exit, tail),
            Event::Verified { transfer, id, verdict } => self.on_checked(now, transfer, id, verdict),
            Event::DiskDone { transfer, id, out } => self.on_disk_done(now, transfer, id, out),
            Event::Accepted { conn, peer, local } => {
                let deadline = Some(now + HANDSHAKE);
                self.conns.insert(conn, Conn { peer: Some(peer), local: Some(local), kind: ConnKind::New, deadline });
            }
            Event::Connected { conn } => self.on_connected(now, conn),
            Event::Frame { conn, msg } => self.on_frame(now, conn, msg),
            Event::Closed { conn, reason } => self.on_closed(now, conn, reason),
        }
    }

    fn end_turn(&mut self) {
        if self.transfers.values().any(|t| t.haves_now || t.haves.len() >= HAVE_BATCH) {
            self.flush_haves();
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        if self.transfers.values().any(|t| t.haves_since.is_some_and(|at| now >= at + HAVE_DELAY)) {
            self.flush_haves();
        }
        self.conn_timeouts(now);
        self.release_timeouts(now);
        self.link_wait_timeouts(now);
        self.transfer_timeouts(now);
    }

    fn poll_action(&mut self) -> Option<Action> {
        self.out.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let t = earliest(self.conns.values().map(|c| c.deadline));
        let exp = earliest(
            self.transfers
                .values()
                .filter(|t| t.master.is_none())
                .map(|t| Some(t.started + Duration::from_secs(t.class.timeout))),
        );
        let waits = earliest(
            self.transfers.values().flat_map(|t| t.waiting.values().flatten().map(|(_, at)| Some(*at + LINK_WAIT))),
        );
        let release = earliest(self.transfers.values().map(|t| t.release_at));
        let haves = earliest(self.transfers.values().map(|t| t.haves_since.map(|at| at + HAVE_DELAY)));
        earliest([t, exp, waits, release, haves])
    }

    fn stats(&self) -> Stats {
        // The gauge is counted from the states, so that no path can leave it off by one.
        let active = self.transfers.values().filter(|t| t.state.live()).count();
        Stats { transfers_active: active as u64, ..self.stats }
    }
}
