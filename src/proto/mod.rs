//! The wugui protocol, with no I/O and no clock.
//!
//! Each role (master, po, cac) is a state machine implementing [`Machine`]. The reactor is its
//! only caller, and it follows one order of calls:
//!
//! 1. after every readiness wakeup, one [`Machine::handle_event`] per event (a connection
//!    accepted or established, a decoded frame, a closed connection);
//! 2. [`Machine::handle_timeout`] once `now` has reached [`Machine::poll_timeout`];
//! 3. after each of those calls, [`Machine::poll_action`] until it returns `None`;
//! 4. it stops when [`Machine::is_finished`] says so.
//!
//! Checking a received block against its digest is CPU work the machine hands out
//! (`Action::Verify`) and hears back about (`Event::Verified`), so it runs beside the loop.
//!
//! Disk work that a role needs (reading source blocks, staging and publishing) goes through
//! the [`Source`] and [`Store`] traits, so tests can run whole transfers in memory.

pub mod attrs;
pub mod auth;
pub mod bitmap;
pub mod cac;
pub mod chain;
pub mod checksum;
pub mod cidr;
pub mod class;
pub mod codec;
pub mod disk;
pub mod failover;
pub mod manifest;
pub mod master;
pub mod msg;
pub mod po;
pub mod relpath;
pub mod sites;
pub mod stats;
pub mod swarm;
pub mod text;
pub mod wire;

#[cfg(test)]
mod fluid;
#[cfg(test)]
mod sim;

use core::net::SocketAddr;
use std::time::Instant;

pub use checksum::{Check, Verdict};
pub use class::{ClassCfg, Verify};
pub use disk::{Body, DiskJob, DiskOutput, JobDone, Published, Source, SourceError, Store, StoreError};
pub use manifest::{BlockRef, Manifest, Segment};
pub use msg::{BlockHead, Msg, Payload, Sum};
pub use stats::Stats;

/// Names one connection. Ids of outbound connections are chosen by the machine (below
/// `ACCEPTED`); the reactor gives accepted ones ids with the `ACCEPTED` bit set.
pub type ConnId = u64;
pub const ACCEPTED: ConnId = 1 << 63;

#[derive(Debug)]
pub enum Event {
    /// A hook started by `Action::RunHook` ended: its exit code (-1 when it was killed or
    /// could not run) and the tail of its output.
    HookDone {
        id: u64,
        exit: i32,
        tail: String,
    },
    /// A check handed out by `Action::Verify` is done (see [`Check`]).
    Verified {
        transfer: u64,
        id: u64,
        verdict: Verdict,
    },
    /// A job handed out by `Action::Disk` ended: its output for the store, None when it was
    /// lost (a panic).
    DiskDone {
        transfer: u64,
        id: u64,
        out: Option<DiskOutput>,
    },
    /// `local`: our address that the peer reached (what `getsockname` says).
    Accepted {
        conn: ConnId,
        peer: SocketAddr,
        local: SocketAddr,
    },
    /// An outbound connection is established.
    Connected {
        conn: ConnId,
    },
    Frame {
        conn: ConnId,
        msg: Msg,
    },
    /// The connection is gone (`reason` says how). No more events come for `conn`.
    Closed {
        conn: ConnId,
        reason: Close,
    },
}

/// Why a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Close {
    /// The peer closed between frames.
    Eof,
    /// The machine gave up waiting on it.
    TimedOut,
    /// The outbound connection could not be made.
    Connect(String),
    /// Bytes that are not our protocol.
    Decode(String),
    /// A read or write failed, or the peer closed inside a frame.
    Io(String),
}

impl Close {
    /// The reason as log lines show it, or `eof` for a clean close.
    pub fn or(&self, eof: &str) -> String {
        match self {
            Close::Eof => eof.to_owned(),
            other => other.to_string(),
        }
    }
}

/// A clean EOF shows as nothing (`error=""` in log lines).
impl core::fmt::Display for Close {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Close::Eof => Ok(()),
            Close::TimedOut => f.write_str("timed out"),
            Close::Connect(e) => write!(f, "connect: {e}"),
            Close::Decode(e) | Close::Io(e) => f.write_str(e),
        }
    }
}

#[derive(Debug)]
pub enum Action {
    /// Open an outbound connection; `Connected` or `Closed` follows.
    Connect {
        conn: ConnId,
        addr: SocketAddr,
    },
    Send {
        conn: ConnId,
        msg: Msg,
    },
    /// A block frame: `head`, then `body` (by sendfile where it can).
    SendBlock {
        conn: ConnId,
        head: BlockHead,
        body: Body,
    },
    /// Flush what is queued, then close. No event follows.
    Close {
        conn: ConnId,
    },
    /// Drop the queued frames not begun yet (a frame half written is finished, so the stream
    /// stays whole), queue `last` if any, then close as `Close` does. For an abort: the ABORT
    /// must not wait behind megabytes of blocks.
    Abandon {
        conn: ConnId,
        last: Option<Msg>,
    },
    /// Frames on `conn` may now have payloads of up to `max` bytes (and their type's limit).
    /// Accepted connections start at `wire::MAX_PREAUTH`, so that a peer costs little before
    /// the machine vouched for it; outbound ones at `wire::NO_FRAME_LIMIT`. A first frame over
    /// the limit closes the connection (`Close::Decode`); a later one waits, unread, for the
    /// machine to raise the limit or close the connection.
    FrameLimit {
        conn: ConnId,
        max: u32,
    },
    /// Keep what `conn` has written but not yet sent short (`TCP_NOTSENT_LOWAT`): a chain's
    /// per-hop latency is the bytes queued in each sender's socket.
    ShortQueue {
        conn: ConnId,
    },
    /// Frames on `conn` may only be of these types (accepted connections start with
    /// `wire::TypeSet::ALL`): a header of another type closes the connection (`Close::Decode`)
    /// before its payload is read. A CAC never takes a MANIFEST or a BLOCK, so none is buffered.
    FrameTypes {
        conn: ConnId,
        types: wire::TypeSet,
    },
    /// Bytes/s for the whole process; 0 = none.
    SetRates {
        upload: u64,
        download: u64,
    },
    /// Runs `dir/name` (it must resolve inside `dir`) with `env`, killed after `timeout`;
    /// `Event::HookDone` follows.
    RunHook {
        id: u64,
        dir: String,
        name: String,
        env: Vec<(String, String)>,
        timeout: std::time::Duration,
    },
    /// Hash a block off the event loop (a worker thread): `Event::Verified` follows, in any
    /// order among other checks, and after anything else the machine did meanwhile.
    Verify(Check),
    /// Long disk work of the store's, off the event loop (a worker thread): `Event::DiskDone`
    /// follows.
    Disk(DiskJob),
}

pub trait Machine {
    fn handle_event(&mut self, now: Instant, ev: Event);
    /// A machine with no timers of its own needs neither this nor `poll_timeout`.
    fn handle_timeout(&mut self, _now: Instant) {}
    /// The events of one loop turn are all handled: what was batched over them goes now.
    fn end_turn(&mut self) {}
    fn poll_action(&mut self) -> Option<Action>;
    fn poll_timeout(&self) -> Option<Instant> {
        None
    }
    fn is_finished(&self) -> bool {
        false
    }
    /// What this machine has counted so far.
    fn stats(&self) -> Stats {
        Stats::default()
    }
    /// Bytes per site link counted so far (a CAC, from its masters' reports).
    fn site_bytes(&self) -> Vec<sites::SiteLink> {
        Vec::new()
    }
}

/// Wall clock and randomness, injected so that tests are deterministic (the binaries use
/// `app::real_env`).
pub struct Env {
    /// Milliseconds since the epoch by the system clock.
    pub unix_ms: Box<dyn Fn() -> u64>,
    pub fill_random: RandomFn,
}

pub type RandomFn = Box<dyn FnMut(&mut [u8])>;

impl Env {
    /// A fixed clock and a seeded generator, for tests.
    #[cfg(test)]
    pub fn fixed(unix: u64, seed: u64) -> Env {
        let mut rng = crate::testutil::Rng::from_state(seed | 1);
        Env { unix_ms: Box::new(move || unix * 1000), fill_random: Box::new(move |b| rng.fill(b)) }
    }

    /// Seconds since the epoch.
    pub fn unix_now(&self) -> u64 {
        (self.unix_ms)() / 1000
    }

    pub fn random_u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        (self.fill_random)(&mut b);
        u64::from_be_bytes(b)
    }
}

/// The earliest of some optional deadlines.
pub fn earliest(it: impl IntoIterator<Item = Option<Instant>>) -> Option<Instant> {
    it.into_iter().flatten().min()
}
