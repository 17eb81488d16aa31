//! The master: asks a CAC for the class, plans the tree, pushes blocks to every po, commits.
//!
//! Phases: `Auth` (CACs in order, each bounded by `connect_timeout`) -> `Transfer` (every po
//! connects, takes the offer and reports held blocks; blocks flow within a window of unacked
//! blocks per po; READY from every live po -> COMMIT; DONE or FAILED from each) -> `Finished`.
//! With `publish = each` pos publish alone and send DONE. The class `timeout` bounds the whole
//! transfer; at it, `quorum` READY pos still commit.
//!
//! Files: `state` (the phase and each po's state), `plan` (manifest, source, checksums),
//! `grant` (the CAC's answer, the plan, a dry run), `link` (connections to the pos and their
//! loss), `send` (blocks, push orders and checksums), `frames` (one handler per message a po
//! sends), `commit` (COMMIT and the end), `abort` (the end a signal asks for), `busy` (another
//! push of the class runs: give up or wait), `timers`,
//! `report` (progress to the CAC), `outcome`.

mod abort;
mod busy;
mod chain;
mod commit;
mod frames;
mod grant;
mod link;
mod outcome;
mod plan;
mod report;
mod send;
mod state;
mod timers;
mod wave;

pub use outcome::{DryRun, Outcome, PoOutcome, Ran, TransferResult};
pub use state::PoState;

use super::{earliest, Action, ClassCfg, ConnId, Event, Machine, Manifest, Source, Stats};
use core::net::SocketAddr;
use plan::Plan;
use state::{Phase, Po};
use std::collections::{HashMap, VecDeque};
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
    /// While another push of the class runs, ask again for this long rather than give up.
    pub wait: Option<Duration>,
    /// A fresh random secret of this run: the swarm's link keys derive from it.
    pub transfer_key: [u8; 32],
    /// `--canary K`: overrides the class's `canary` (README "Canary waves").
    pub canary: Option<u32>,
    /// `-i`: a dry run asks each po for the paths it would change.
    pub itemize: bool,
}

const OFFER_TIMEOUT: Duration = Duration::from_secs(60);
const REPORT_EVERY: Duration = Duration::from_secs(1);
const PING_EVERY: Duration = Duration::from_secs(10);
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
    /// While asking for the grant: `ADDR: why` for each CAC that failed, for the final error.
    cac_tried: Vec<String>,
    next_conn: ConnId,
    last_done: u64,
    last_report: Option<Instant>,
    rate: u64,
    /// With `wait`: when to stop asking, and how often the class was busy.
    wait_until: Option<Instant>,
    busy_refusals: u32,
    outcome: Option<Outcome>,
    wave: wave::Wave,
    /// A dry run: the tree's summary, and each po's PREVIEW as it comes.
    dry: Option<Box<DryRun>>,
    previews: Vec<Option<Box<crate::proto::msg::Preview>>>,
    /// The po each connection id was made for (ids are never reused), so that a frame finds
    /// its po without a look at every po; `po_index` checks the po still uses it.
    conn_po: HashMap<ConnId, usize>,
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
            cac_tried: Vec::new(),
            next_conn: 1,
            last_done: 0,
            last_report: None,
            rate: 0,
            wait_until: None,
            busy_refusals: 0,
            outcome: None,
            wave: wave::Wave::new(0),
            dry: None,
            previews: Vec::new(),
            conn_po: HashMap::new(),
            out: VecDeque::new(),
        };
        m.wait_until = m.settings.wait.map(|w| now + w);
        m.ask_cac(now, super::failover::Failover::first());
        m
    }

    pub fn outcome(&self) -> Option<&Outcome> {
        self.outcome.as_ref()
    }

    /// Each po's state, in the class's order.
    pub fn po_states(&self) -> Vec<PoState> {
        self.pos.iter().map(|p| p.kind()).collect()
    }

    fn conn_id(&mut self) -> ConnId {
        self.next_conn += 1;
        self.next_conn
    }

    /// A new connection id for po `i`'s control or data link.
    fn po_conn_id(&mut self, i: usize) -> ConnId {
        let conn = self.conn_id();
        self.conn_po.insert(conn, i);
        conn
    }
}

impl Machine for MasterMachine {
    fn handle_event(&mut self, now: Instant, ev: Event) {
        match (&self.phase, ev) {
            (Phase::Auth { conn: c, .. }, ev) => {
                let c = *c;
                self.on_cac_event(now, c, ev)
            }
            (Phase::Transfer { .. }, Event::Connected { conn }) => self.on_connected(now, conn),
            (Phase::Transfer { .. }, Event::Frame { conn, msg }) => {
                if let Some(i) = self.po_index(conn) {
                    self.pos[i].heard = now;
                    self.on_po_frame(now, i, msg);
                }
            }
            (Phase::Transfer { .. }, Event::Closed { conn, reason }) => self.on_closed(now, conn, reason),
            _ => {}
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        match self.phase {
            Phase::Auth { deadline, .. } if deadline <= now => {
                let ms = self.settings.connect_timeout.as_millis();
                self.cac_failed(now, &format!("no answer within connect_timeout ({ms} ms)"))
            }
            Phase::Waiting { retry_at } if retry_at <= now => self.ask_cac(now, super::failover::Failover::first()),
            Phase::Transfer { .. } => self.on_transfer_timers(now),
            _ => {}
        }
    }

    fn poll_action(&mut self) -> Option<Action> {
        self.out.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        match &self.phase {
            Phase::Auth { deadline, .. } | Phase::Waiting { retry_at: deadline } => Some(*deadline),
            Phase::Transfer { next_report, next_ping, .. } => {
                earliest(self.pos.iter().map(|p| p.state.deadline()).chain([
                    Some(*next_report),
                    Some(*next_ping),
                    self.plan.as_ref().map(|p| p.deadline),
                ]))
            }
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

#[cfg(test)]
mod tests;
