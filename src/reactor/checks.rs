//! Block checks (`Action::Verify`) on the worker pool: handed out, their verdicts collected
//! back into the machine's events, and reading paused while too many bytes wait for a check.
//!
//! The bound: while the blocks out for checking hold `CHECK_PAUSE` bytes (or `CHECK_JOBS`
//! checks), no connection is read; each goes on the list of slots to read again, and is
//! read again as soon as verdicts bring the pool below the bound. A read turn takes in at
//! most what is left below the bound (give or take the frame it ends in), and a check the pool
//! has no room for runs here, on the loop, so blocks waiting for a check hold at most
//! `CHECK_PAUSE` plus about one block.

use super::Reactor;
use crate::proto::Check;

/// Bytes of blocks out for checking at which reading stops: a few blocks, so that every worker
/// has one and the next is being read, while a po's memory stays within its bound.
pub(super) const CHECK_PAUSE: usize = 8 << 20;
/// Checks out at most (many small blocks).
pub(super) const CHECK_JOBS: usize = 64;

impl Reactor {
    /// Runs `c` on the pool, or here when there is no pool or no room in it.
    pub(super) fn verify(&mut self, c: Check) {
        let Some(pool) = self.checks.as_mut() else { return self.events.push_back(c.run()) };
        let (transfer, id, bytes) = (c.transfer, c.id, c.data.len());
        let key = self.next_check;
        self.next_check += 1;
        match pool.submit(key, Box::new(move || c.run())) {
            Ok(()) => {
                self.checks_out.insert(key, (transfer, id, bytes));
                self.check_bytes += bytes;
            }
            Err(job) => self.events.push_back(job()),
        }
    }

    /// Whether reading waits for checks to finish.
    pub(super) fn checks_full(&self) -> bool {
        self.checks.as_ref().is_some_and(|p| self.check_bytes >= CHECK_PAUSE || p.pending() >= CHECK_JOBS)
    }

    /// How many bytes one read turn may take in: what is left below the bound (a frame
    /// decoded in it becomes a check only after the turn).
    pub(super) fn check_room(&self) -> u64 {
        match self.checks {
            Some(_) => CHECK_PAUSE.saturating_sub(self.check_bytes) as u64,
            None => u64::MAX,
        }
    }

    /// Verdicts that came back become events; connections paused on the bound read again.
    pub(super) fn collect_checks(&mut self) {
        while let Some((key, outcome)) = self.checks.as_mut().and_then(|p| p.collect()) {
            if self.disk_out.contains_key(&key) {
                let ev = self.disk_done(key, outcome);
                self.events.extend(ev);
                continue;
            }
            let Some((transfer, id, bytes)) = self.checks_out.remove(&key) else { continue };
            self.check_bytes -= bytes;
            let ev = outcome.unwrap_or_else(|why| {
                // A bug of ours: loud, and the transfer fails; the daemon and the pool go on.
                log::error!("event=worker_panic transfer={transfer} check={id} error=\"{}\"", why.escape_debug());
                Check::lost(transfer, id, why)
            });
            self.events.push_back(ev);
        }
        self.start_disk_jobs();
        if !self.read_waiting.is_empty() && !self.checks_full() {
            log::trace!("event=read_resumed conns={}", self.read_waiting.len());
            for slot in std::mem::take(&mut self.read_waiting) {
                self.mark(slot);
            }
        }
    }
}
