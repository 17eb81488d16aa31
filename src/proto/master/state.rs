//! Where the master is: its phase, and each po's state.

use crate::proto::failover::Failover;
use crate::proto::ConnId;
use core::net::SocketAddr;
use std::time::Instant;

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

pub(super) struct Po {
    pub(super) name: String,
    pub(super) addr: Option<SocketAddr>,
    pub(super) conn: Option<ConnId>,
    /// Swarm mode: the master's blocks travel on their own connection, so that push orders
    /// and checksums on `conn` never wait behind megabytes of block data.
    pub(super) data: Option<ConnId>,
    pub(super) state: PoState,
    pub(super) attempts: u32,
    pub(super) deadline: Option<Instant>,
    pub(super) have: Vec<bool>,
    pub(super) cursor: u64,
    pub(super) inflight: u64,
    pub(super) bytes: u64,
    pub(super) error: String,
    pub(super) hook_exit: Option<i32>,
    pub(super) hook_tail: String,
}

impl Po {
    /// Po `name` of a transfer of `blocks` blocks, to be dialled at `now`.
    pub(super) fn new(name: String, blocks: u64, now: Instant) -> Po {
        Po {
            addr: name.parse().ok(),
            name,
            conn: None,
            data: None,
            state: PoState::Idle,
            attempts: 0,
            deadline: Some(now),
            have: vec![false; blocks as usize],
            cursor: 0,
            inflight: 0,
            bytes: 0,
            error: String::new(),
            hook_exit: None,
            hook_tail: String::new(),
        }
    }
}

pub(super) enum Phase {
    Auth { cac: Failover, conn: ConnId, deadline: Instant },
    Transfer,
    Finished,
}
