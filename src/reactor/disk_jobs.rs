//! The store's long disk work (`Action::Disk`: reading and hashing old copies) on the same
//! worker pool as block checks. A disk job may take seconds, so at most all workers but one
//! run disk jobs at a time: block checks always have a worker, and the transfers receiving
//! meanwhile keep flowing. The jobs beyond that wait here, in order (one a transfer at most,
//! so the queue is bounded by the transfers).

use super::Reactor;
use crate::proto::{DiskJob, Event};

impl Reactor {
    /// Queues `job` and starts what the pool has room for; with no pool, runs it here.
    pub(super) fn disk(&mut self, job: DiskJob) {
        if self.checks.is_none() {
            return self.events.push_back(job.run());
        }
        self.disk_waiting.push_back(job);
        self.start_disk_jobs();
    }

    /// Hands waiting disk jobs to the pool while fewer than its workers but one run.
    pub(super) fn start_disk_jobs(&mut self) {
        let Some(pool) = self.checks.as_mut() else { return };
        let most = pool.threads().saturating_sub(1).max(1);
        // A full pool (of checks) takes more once their verdicts are collected.
        while self.disk_out.len() < most && pool.has_room() {
            let Some(job) = self.disk_waiting.pop_front() else { return };
            let (transfer, id) = (job.transfer, job.id);
            let key = self.next_check;
            self.next_check += 1;
            if pool.submit(key, Box::new(move || job.run())).is_err() {
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
