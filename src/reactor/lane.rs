//! Rate limits: one token bucket per direction, and the connections parked until it refills.
//!
//! A connection stopped by an empty bucket waits for its lane's timer: as its socket never
//! stopped being ready, no event would wake it, so the timer puts it back in the work list.

use std::time::Instant;

use super::bucket::TokenBucket;

/// A connection stopped by an empty bucket waits until at least this much is available.
const MIN_CHUNK: u64 = 16 << 10;

/// The direction of traffic a bucket meters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    Up,
    Down,
}

impl Dir {
    pub const BOTH: [Dir; 2] = [Dir::Up, Dir::Down];

    /// Index into per-direction arrays (`Reactor::lanes`, `Conn::parked`).
    pub fn i(self) -> usize {
        self as usize
    }
}

/// One direction's bucket (none: no limit) and the slots parked on it.
#[derive(Default)]
pub struct Lane {
    pub bucket: Option<TokenBucket>,
    waiting: Vec<usize>,
    /// When the parked slots get another try.
    pub wake: Option<Instant>,
}

impl Lane {
    /// The bucket ran dry at `now`: wake the parked slots when it holds a chunk again.
    pub fn arm(&mut self, now: Instant) {
        let at = self.bucket.as_ref().and_then(|b| b.delay(now, MIN_CHUNK)).unwrap_or(now);
        self.wake = Some(self.wake.map_or(at, |w| w.min(at)));
    }

    pub fn park(&mut self, slot: usize) {
        self.waiting.push(slot);
    }

    /// The slots to wake, if the timer is due.
    pub fn due(&mut self, now: Instant) -> Vec<usize> {
        if self.wake.is_none_or(|t| now < t) {
            return Vec::new();
        }
        self.wake = None;
        // The first serviced takes what the bucket holds, and runs dry first again: rotate,
        // so that connections sharing a bucket take turns instead of one starving the rest.
        let mut waiting = std::mem::take(&mut self.waiting);
        if !waiting.is_empty() {
            waiting.rotate_left(1);
        }
        waiting
    }

    /// A new rate (0: none); everyone parked tries again under it.
    pub fn set_rate(&mut self, rate: u64, now: Instant) {
        self.bucket = match (rate, self.bucket.take()) {
            (0, _) => None,
            (r, Some(b)) if b.rate() == r => Some(b),
            (r, _) => Some(TokenBucket::new(r, TokenBucket::default_burst(r))),
        };
        self.wake = Some(now);
    }
}
