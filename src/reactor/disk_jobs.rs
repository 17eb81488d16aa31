//! The store's long disk work (`Action::Disk`: reading and hashing old copies, sealing) on
//! the same worker pool as block checks. A disk job may take seconds (a check up to
//! `REUSE_BUDGET`), so they have a lane of the pool to themselves (`DISK_JOBS` threads beside
//! the `workers` that check blocks): block checks always have their workers, and one
//! transfer's long check holds up no other's seal unless `DISK_JOBS` run at once. The pool's
//! bound counts them too; a job it has no room for waits here, in order (one a transfer at
//! most, so the queue is bounded by the transfers).

use super::Reactor;
use crate::proto::{DiskJob, Event};

/// Threads of the pool's disk lane: disk jobs running at once. Each holds at most one block's
/// buffer.
pub(super) const DISK_JOBS: usize = 4;
/// The pool's lane for disk jobs.
const DISK_LANE: usize = 1;

impl Reactor {
    /// Queues `job` and starts what the pool has room for; with no pool, runs it here.
    pub(super) fn disk(&mut self, job: DiskJob) {
        if self.checks.is_none() {
            return self.events.push_back(job.run());
        }
        self.disk_waiting.push_back(job);
        self.start_disk_jobs();
    }

    /// Hands waiting disk jobs to the pool while it has room (its disk lane queues them).
    pub(super) fn start_disk_jobs(&mut self) {
        let Some(pool) = self.checks.as_mut() else { return };
        // A full pool (of checks) takes more once their verdicts are collected.
        while pool.has_room() {
            let Some(job) = self.disk_waiting.pop_front() else { return };
            let (transfer, id) = (job.transfer, job.id);
            let key = self.next_check;
            self.next_check += 1;
            if pool.submit_to(DISK_LANE, key, Box::new(move || job.run())).is_err() {
                unreachable!("the pool had room");
            }
            self.disk_out.insert(key, (transfer, id));
        }
    }

    /// The event of disk job `key`'s outcome (a panic: the job is lost).
    pub(super) fn disk_done(&mut self, key: u64, outcome: Result<Event, String>) -> Option<Event> {
        let (transfer, id) = self.disk_out.remove(&key)?;
        Some(outcome.unwrap_or_else(|why| {
            log::error!("event=worker_panic transfer={transfer} disk_job={id} error=\"{}\"", why.escape_debug());
            Event::DiskDone { transfer, id, out: None }
        }))
    }
}
