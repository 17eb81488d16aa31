//! One turn of one connection: read what it sent (unless its bucket or its out-queue says
//! wait), hand the frames to the machine, write what is queued, and finish a close.

use std::net::Shutdown;
use std::time::Instant;

use super::conn::{self, ReadEnd, State, WriteEnd};
use super::lane::Dir;
use super::{Reactor, DRAIN_LINGER, OUT_PAUSE};
use crate::proto::{Close, Event, Machine};

impl Reactor {
    /// One turn's reading and writing for one connection.
    pub(super) fn service<M: Machine>(&mut self, m: &mut M, slot: usize) {
        let Some(c) = self.conn(slot) else { return };
        c.queued = false;
        let now = Instant::now();
        if !self.read_step(m, slot, now) {
            return;
        }
        if !self.write_step(m, slot, now) {
            return;
        }
        // A closed connection whose queue is out: send our FIN and wait for the peer's.
        let Some(c) = self.conn(slot) else { return };
        if matches!(c.state, State::Flushing { .. }) && c.out.is_empty() {
            let _ = c.stream.shutdown(Shutdown::Write);
            let readable = c.readable;
            self.set_state(slot, State::Draining { until: now + DRAIN_LINGER });
            if readable {
                self.mark(slot);
            }
        }
    }

    /// Reads and delivers frames; false when the turn is over for this connection.
    fn read_step<M: Machine>(&mut self, m: &mut M, slot: usize, now: Instant) -> bool {
        let (checks_full, room) = (self.checks_full(), self.check_room());
        let Some(c) = self.conn(slot) else { return false };
        match c.state {
            State::Connecting { .. } => false,
            State::Open if c.readable && c.held => {
                // A frame over the limit waits, unread, for the machine to raise it.
                log::debug!("event=read_held conn={} max_frame={}", c.id, c.max_frame);
                true
            }
            State::Open if c.readable && c.out_mem >= OUT_PAUSE => {
                // The peer asks faster than it reads: read again once the queue drains.
                log::debug!("event=read_paused conn={} queued={}", c.id, c.out_mem);
                true
            }
            State::Open if c.readable && checks_full => {
                // Blocks wait for their checks: read again when the workers catch up.
                log::trace!("event=read_paused conn={} reason=checks", c.id);
                self.read_waiting.push(slot);
                true
            }
            State::Open if c.readable && !c.parked[Dir::Down.i()] => {
                let mut frames = std::mem::take(&mut self.frames);
                let c = self.slots[slot].as_mut().expect("conn present");
                let end = conn::read_frames(
                    c,
                    &mut self.stage,
                    &self.pool,
                    (&mut self.lanes[Dir::Down.i()].bucket, now),
                    room,
                    &mut frames,
                );
                let id = c.id;
                for msg in frames.drain(..) {
                    self.events.push_back(Event::Frame { conn: id, msg });
                }
                self.frames = frames;
                match end {
                    ReadEnd::Drained | ReadEnd::Held => {}
                    ReadEnd::Budget => self.mark(slot),
                    ReadEnd::Throttled => self.wait(Dir::Down, slot, now),
                    ReadEnd::Closed(reason) => self.fail(slot, reason),
                }
                self.deliver(m);
                true
            }
            State::Draining { .. } if c.readable => {
                let c = self.slots[slot].as_mut().expect("conn present");
                match conn::discard_input(c, &mut self.stage) {
                    ReadEnd::Closed(_) => {
                        self.remove(slot);
                    }
                    ReadEnd::Budget => self.mark(slot),
                    _ => {}
                }
                false
            }
            _ => true,
        }
    }

    /// Writes what is queued; false when the turn is over for this connection. The machine
    /// may have closed or dropped the connection while it read.
    fn write_step<M: Machine>(&mut self, m: &mut M, slot: usize, now: Instant) -> bool {
        let Some(c) = self.conn(slot) else { return false };
        if !matches!(c.state, State::Open | State::Flushing { .. }) {
            return false;
        }
        if !(c.writable && !c.parked[Dir::Up.i()] && !c.out.is_empty()) {
            return true;
        }
        let c = self.slots[slot].as_mut().expect("conn present");
        let paused = c.out_mem >= OUT_PAUSE;
        let (end, n) = conn::write_out(c, &mut self.lanes[Dir::Up.i()].bucket, now);
        if paused && c.out_mem < OUT_PAUSE && c.readable {
            self.mark(slot); // reading resumes
        }
        let Some(c) = self.conn(slot) else { return false };
        if n > 0 {
            if let State::Flushing { .. } = c.state {
                c.state = State::Flushing { progress: now };
            }
        }
        match end {
            WriteEnd::Empty | WriteEnd::Blocked => {}
            WriteEnd::Budget => self.mark(slot),
            WriteEnd::Throttled => self.wait(Dir::Up, slot, now),
            WriteEnd::Failed(e) => {
                self.fail(slot, Close::Io(e));
                self.deliver(m);
                return false;
            }
        }
        true
    }
}
