//! Where the master is: its phase, and each po's state.

use crate::proto::failover::Failover;
use crate::proto::ConnId;
use core::net::SocketAddr;
use std::time::Instant;

/// Where the master is with one po, as `app::master` counts them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoState {
    /// Waiting to (re)connect.
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
    pub(super) fn name(self) -> &'static str {
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
    pub(super) fn live(self) -> bool {
        self != PoState::Failed
    }
    /// Accepted the offer and not failed since: in the swarm, and sent every checksum.
    pub(super) fn joined(self) -> bool {
        matches!(self, PoState::Sending | PoState::Ready | PoState::Committing | PoState::Done)
    }
}

/// One po's state, with what only that state has.
pub(super) enum State {
    /// Waiting to (re)connect at `retry_at`.
    Idle {
        retry_at: Instant,
    },
    Connecting {
        deadline: Instant,
    },
    /// Offer sent, waiting for VERIFIED (the manifest goes then), ACCEPT or CHECK until `deadline`.
    Offered {
        deadline: Instant,
    },
    /// Blocks flow. Without a swarm the master sends from `cursor` on, with at most a window
    /// of `inflight` blocks not acked yet.
    Sending {
        cursor: u64,
        inflight: u64,
    },
    Ready,
    /// COMMIT sent.
    Committing,
    /// The po published (or, `unchanged`, held the tree already); the hook's exit code and
    /// the tail of its output, if it ran one.
    Done {
        hook: Option<(i32, String)>,
        unchanged: bool,
    },
    Failed {
        error: String,
    },
}

impl State {
    pub(super) fn kind(&self) -> PoState {
        match self {
            State::Idle { .. } => PoState::Idle,
            State::Connecting { .. } => PoState::Connecting,
            State::Offered { .. } => PoState::Offered,
            State::Sending { .. } => PoState::Sending,
            State::Ready => PoState::Ready,
            State::Committing => PoState::Committing,
            State::Done { .. } => PoState::Done,
            State::Failed { .. } => PoState::Failed,
        }
    }

    /// When the master acts on this po without a word from it.
    pub(super) fn deadline(&self) -> Option<Instant> {
        match self {
            State::Idle { retry_at: t } | State::Connecting { deadline: t } | State::Offered { deadline: t } => {
                Some(*t)
            }
            _ => None,
        }
    }
}

pub(super) struct Po {
    pub(super) name: String,
    pub(super) addr: Option<SocketAddr>,
    pub(super) conn: Option<ConnId>,
    /// Swarm mode: the master's blocks travel on their own connection, so that push orders
    /// and checksums on `conn` never wait behind megabytes of block data.
    pub(super) data: Option<ConnId>,
    pub(super) state: State,
    pub(super) attempts: u32,
    /// The blocks it holds, and their bytes.
    pub(super) have: Vec<bool>,
    pub(super) bytes: u64,
    /// When it last said anything, on any of its links (see `silent_timeout`).
    pub(super) heard: Instant,
}

impl Po {
    /// Po `name` of a transfer of `blocks` blocks, to be dialled at `now`.
    pub(super) fn new(name: String, blocks: u64, now: Instant) -> Po {
        Po {
            addr: name.parse().ok(),
            name,
            conn: None,
            data: None,
            state: State::Idle { retry_at: now },
            attempts: 0,
            have: vec![false; blocks as usize],
            bytes: 0,
            heard: now,
        }
    }

    pub(super) fn kind(&self) -> PoState {
        self.state.kind()
    }
}

pub(super) enum Phase {
    Auth {
        cac: Failover,
        conn: ConnId,
        deadline: Instant,
    },
    /// The class is being pushed by another master: ask the CACs again at `retry_at`.
    Waiting {
        retry_at: Instant,
    },
    /// Pos are offered the transfer and sent blocks; progress goes to the CAC at
    /// `next_report`, idle control links are pinged at `next_ping`.
    Transfer {
        next_report: Instant,
        next_ping: Instant,
        /// When the transfer's timers last ran: a master that was itself stopped does not
        /// blame its pos for the frames it did not read meanwhile.
        ticked: Instant,
    },
    Finished,
}
