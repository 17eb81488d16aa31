//! One transfer as this po holds it. Each state carries only what it has: CHECK's blocks while
//! receiving, the hook's run once published, the swarm's keys and links once PEERS came.

use super::{BlockHead, ClassCfg, ConnId, Digest, Manifest, Payload, Sum};
use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Instant;

pub(super) enum TState {
    /// Blocks are coming. `checking`: blocks asked about with CHECK (delta or resume); ACCEPT
    /// waits for their digests.
    Receiving { checking: Vec<u64> },
    /// Every block is held and the stage is sealed.
    Ready,
    /// Published; `unchanged`: the dest held the tree already, so nothing was written.
    Published { hook: Hook, unchanged: bool },
    /// Given up. The error went to the log and to the master; nothing here reads it again.
    Failed,
}

impl TState {
    pub(super) fn name(&self) -> &'static str {
        match self {
            TState::Receiving { .. } => "receiving",
            TState::Ready => "ready",
            TState::Published { unchanged: false, .. } => "published",
            TState::Published { unchanged: true, .. } => "unchanged",
            TState::Failed => "failed",
        }
    }

    /// Receiving or ready: the transfer is still in progress.
    pub(super) fn live(&self) -> bool {
        matches!(self, TState::Receiving { .. } | TState::Ready)
    }
}

/// The class hook of a published transfer.
pub(super) enum Hook {
    /// The class has none.
    Absent,
    /// Not run: the push changed nothing here (class `hook_on_unchanged = off`).
    Skipped,
    Running,
    /// Its exit code (-1: killed or could not run) and the tail of its output.
    Ran {
        exit: i32,
        tail: String,
    },
}

/// The swarm of a transfer as this po knows it.
pub(super) enum Swarm {
    /// Our PEERS has not come: hellos that came first wait for it (connection, claimed index,
    /// proof).
    Awaiting { hellos: Vec<(ConnId, u32, Digest)> },
    /// Boxed: it is far larger than `Awaiting`.
    Joined(Box<Joined>),
}

/// What the master's PEERS told us, and the links that came of it.
pub(super) struct Joined {
    /// Our index in the swarm.
    pub(super) me: u32,
    /// Proves the master's data link.
    pub(super) master_key: Digest,
    /// The key of each link of ours, by neighbour.
    pub(super) link_keys: HashMap<u32, Digest>,
    /// Live links to neighbours, by index.
    pub(super) peers: HashMap<u32, ConnId>,
    /// The last blocks served on each live link (a link queues only a few): when it breaks
    /// they go back to the master at once, which sends them from elsewhere.
    pub(super) served: HashMap<u32, VecDeque<u64>>,
    /// Neighbours whose link broke: a push to one goes back at once, until it links again.
    pub(super) lost: HashSet<u32>,
    /// The master's chain plan (`Msg::Chain`): our successor per stripe, and the chain set.
    pub(super) chain: Option<(Vec<u32>, Vec<u8>)>,
    /// A chain block went on already (the first is logged).
    pub(super) forwarded: bool,
}

impl Swarm {
    pub(super) fn joined(&self) -> Option<&Joined> {
        match self {
            Swarm::Joined(j) => Some(j.as_ref()),
            Swarm::Awaiting { .. } => None,
        }
    }

    pub(super) fn joined_mut(&mut self) -> Option<&mut Joined> {
        match self {
            Swarm::Joined(j) => Some(j.as_mut()),
            Swarm::Awaiting { .. } => None,
        }
    }

    /// The link to neighbour `idx`, if one is up or being dialled.
    pub(super) fn peer(&self, idx: u32) -> Option<ConnId> {
        self.joined().and_then(|j| j.peers.get(&idx).copied())
    }
}

/// Where a block came from. Only the control connection is the master's own word; any other
/// block counts only if it matches a digest that came on the control connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum From {
    Control,
    MasterData,
    Peer(u32),
}

pub(super) struct Transfer {
    pub(super) class: ClassCfg,
    pub(super) manifest: Manifest,
    pub(super) master: Option<ConnId>,
    /// While no master is linked and the store holds files open for the transfer: when it
    /// lets go of them.
    pub(super) release_at: Option<Instant>,
    pub(super) held: Vec<bool>,
    pub(super) nheld: u64,
    pub(super) bytes: u64,
    pub(super) state: TState,
    pub(super) started: Instant,
    pub(super) token: Vec<u8>,
    pub(super) dest: String,
    pub(super) swarm: Swarm,
    /// Pushes waiting for their link to come up, by neighbour (a push may come before PEERS).
    pub(super) waiting: HashMap<u32, Vec<(u64, Instant)>>,
    /// The master's digests (SUMS, in a swarm), and blocks waiting for theirs. A map that grows
    /// with what the master sent, not with what the manifest claims.
    pub(super) sums: HashMap<u64, Sum>,
    pub(super) parked: Vec<(ConnId, From, BlockHead, Payload)>,
    /// Blocks out for checking (`Action::Verify`), by check id: where each came from, and
    /// its index. Dropped with the transfer, so a late verdict for a
    /// transfer that is gone finds nothing and is ignored.
    pub(super) checking: HashMap<u64, (From, u64)>,
    /// Publish only on the master's word, even with `publish = each` (OFFER_HOLD).
    pub(super) hold: bool,
    pub(super) canary: Canary,
    /// The store's disk job (`Action::Disk`) this transfer waits for: its stage is the job's
    /// until `Event::DiskDone`.
    pub(super) disk: Option<u64>,
    /// Blocks verified since the last HAVE (`PoMachine::flush_haves`).
    pub(super) haves: Vec<u64>,
    /// When the oldest of `haves` was verified, and whether one of them is not a chain block
    /// (the master waits for that HAVE to schedule: it goes at the end of the turn).
    pub(super) haves_since: Option<Instant>,
    pub(super) haves_now: bool,
    /// Of `haves`, chain blocks the master sent (its feed of a head).
    pub(super) haves_fed: usize,
}

/// Where a transfer stands in a canary wave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Canary {
    /// Not a canary (or not yet committed as one).
    No,
    /// Published as a canary, the old tree kept aside: a rollback may come.
    Undecided,
    /// The wave was decided: the old tree is gone, and no rollback is taken.
    Decided,
}

impl Transfer {
    /// A transfer starting to receive; `held` says which blocks an earlier stage already holds.
    pub(super) fn new(
        class: ClassCfg,
        manifest: Manifest,
        held: Vec<bool>,
        token: Vec<u8>,
        dest: String,
        master: ConnId,
        now: Instant,
    ) -> Transfer {
        let nheld = held.iter().filter(|h| **h).count() as u64;
        let bytes = (0..manifest.blocks())
            .filter(|&i| held[i as usize])
            .map(|i| manifest.block(i).map(|b| b.len as u64).unwrap_or(0))
            .sum();
        Transfer {
            class,
            manifest,
            master: Some(master),
            release_at: None,
            held,
            nheld,
            bytes,
            state: TState::Receiving { checking: Vec::new() },
            started: now,
            token,
            dest,
            swarm: Swarm::Awaiting { hellos: Vec::new() },
            waiting: HashMap::new(),
            sums: HashMap::new(),
            parked: Vec::new(),
            checking: HashMap::new(),
            hold: false,
            canary: Canary::No,
            disk: None,
            haves: Vec::new(),
            haves_since: None,
            haves_now: false,
            haves_fed: 0,
        }
    }

    /// Whether block `b` goes down the master's chains (our successor gets it without a word
    /// to the master).
    pub(super) fn chained(&self, b: u64) -> bool {
        self.swarm.joined().and_then(|j| j.chain.as_ref()).is_some_and(|(_, set)| crate::proto::bitmap::bit(set, b))
    }

    /// Block `b` is verified and staged.
    pub(super) fn hold(&mut self, b: u64) {
        if let Some(h) = self.held.get_mut(b as usize).filter(|h| !**h) {
            *h = true;
            self.nheld += 1;
            self.bytes += self.manifest.block(b).map_or(0, |x| x.len as u64);
        }
    }
}
