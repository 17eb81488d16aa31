//! A dry-run offer (`OFFER_DRY_RUN`): the same checks as a real offer (the CAC's word, the
//! dest, the fence, the manifest), then the store says what a push would change, with no
//! stage, no dest and no state made; the delta CHECK goes to the master as for a real push, so
//! that the bytes said to travel leave out what the published copy holds. PREVIEW answers.
//!
//! The scan (a stat of every entry) and the check (reading and hashing old copies) are disk
//! jobs, off the loop; a dry run that goes meanwhile (its master closed) cancels its job.

use super::*;
use crate::proto::disk::{JobDone, StoreError};
use crate::proto::msg::Preview;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A dry run waiting for its scan, the digests of its CHECK, or its check.
pub(super) struct DryRun {
    transfer: u64,
    class: String,
    manifest: Manifest,
    dest: String,
    /// What the scan found (None while it runs), and the blocks CHECK asked about.
    preview: Option<Preview>,
    check: Vec<u64>,
    job: Option<Job>,
}

/// The disk job a dry run waits for. Dropped with the dry run, it cancels the job.
struct Job {
    id: u64,
    cancel: Arc<AtomicBool>,
}

impl Drop for Job {
    fn drop(&mut self) {
        self.cancel.store(true, Ordering::Relaxed);
    }
}

impl<S: Store> PoMachine<S> {
    pub(super) fn dry_run(
        &mut self,
        now: Instant,
        master: ConnId,
        transfer: u64,
        manifest: Manifest,
        (class, dest): (ClassCfg, String),
        itemize: bool,
    ) {
        // The master's answer must fit one frame, as for a real CHECK.
        let max_check = if class.delta { (MAX_CONTROL as usize - 64) / 40 } else { 0 };
        // Nothing more is taken from this master but the digests (or the close).
        if let Some(c) = self.conns.get_mut(&master) {
            c.deadline = Some(now + MASTER_IDLE);
        }
        let mut d =
            DryRun { transfer, class: class.name.clone(), manifest, dest, preview: None, check: Vec::new(), job: None };
        if let Some(job) = self.store.preview_job(transfer, &d.dest, &d.manifest, class.mirror, itemize, max_check) {
            log::info!("event=disk_job transfer={transfer} job={} kind=preview", job.id);
            d.job = Some(Job { id: job.id, cancel: job.cancel.clone() });
            self.dry.insert(master, d);
            return self.out.push_back(Action::Disk(job));
        }
        let scanned = self.store.preview(&d.dest, &d.manifest, class.mirror, itemize, max_check);
        self.scanned(master, d, scanned);
    }

    /// The scan is done: PREVIEW, or CHECK first when the published copy may hold blocks.
    fn scanned(&mut self, master: ConnId, mut d: DryRun, scanned: Result<(Preview, Vec<u64>), StoreError>) {
        let transfer = d.transfer;
        let (mut preview, check) = match scanned {
            Ok(p) => p,
            Err(e) => {
                log::warn!(
                    "event=offer_refused transfer={transfer} dry_run=1 class={} error={}",
                    d.class,
                    crate::proto::text::quoted(e.to_string())
                );
                return self.refuse(master, Reason::Disk, e.to_string());
            }
        };
        preview.transfer = transfer;
        if check.is_empty() {
            return self.send_preview(master, preview);
        }
        self.send(master, Msg::Check { transfer, blocks: check.clone() });
        (d.preview, d.check) = (Some(preview), check);
        self.dry.insert(master, d);
    }

    /// The master's digests for a dry run's CHECK: blocks the published copy holds do not travel.
    pub(super) fn on_dry_run_sums(&mut self, master: ConnId, transfer: u64, sums: Vec<(u64, Digest)>) {
        let asked = |d: &DryRun| d.transfer == transfer && d.preview.is_some() && d.job.is_none();
        let Some(mut d) = self.dry.remove(&master).filter(asked) else {
            return self.refuse(master, Reason::Protocol, "CHECKSUMS with no CHECK asked".into());
        };
        // Only blocks we asked about, each once.
        let mut sums: Vec<(u64, Digest)> = sums.into_iter().filter(|(b, _)| d.check.binary_search(b).is_ok()).collect();
        sums.sort_by_key(|(b, _)| *b);
        sums.dedup_by_key(|(b, _)| *b);
        // Reading and hashing old copies takes long (up to `REUSE_BUDGET`): off the loop.
        if let Some(job) = self.store.preview_check_job(transfer, &d.dest, &d.manifest, &sums) {
            log::info!("event=disk_job transfer={transfer} job={} kind=preview_check blocks={}", job.id, sums.len());
            d.job = Some(Job { id: job.id, cancel: job.cancel.clone() });
            self.dry.insert(master, d);
            return self.out.push_back(Action::Disk(job));
        }
        let held = self.store.preview_check(&d.dest, &d.manifest, &sums);
        self.preview_checked(master, d, held);
    }

    /// The dry run (by its master) that waits for disk job `id`, if one does.
    pub(super) fn dry_run_of_job(&self, id: u64) -> Option<ConnId> {
        self.dry.iter().find(|(_, d)| d.job.as_ref().is_some_and(|j| j.id == id)).map(|(c, _)| *c)
    }

    /// A dry run's disk job ended: its scan (then CHECK or PREVIEW), or its check (PREVIEW).
    pub(super) fn on_dry_run_job(&mut self, master: ConnId, done: Result<Option<JobDone>, StoreError>) {
        let Some(mut d) = self.dry.remove(&master) else { return };
        d.job = None;
        match done {
            Ok(Some(JobDone::Previewed(p, check))) => self.scanned(master, d, Ok((*p, check))),
            Ok(Some(JobDone::PreviewHeld(held))) => self.preview_checked(master, d, held),
            // A check that was lost: every changed block counts as travelling.
            Err(_) if d.preview.is_some() => self.preview_checked(master, d, Vec::new()),
            Err(e) => self.scanned(master, d, Err(e)),
            Ok(_) => self.scanned(master, d, Err(StoreError::Refused("dry run: its disk job said nothing".into()))),
        }
    }

    /// Of the blocks CHECK asked about, those the published copy holds: PREVIEW.
    fn preview_checked(&mut self, master: ConnId, d: DryRun, held: Vec<u64>) {
        let Some(mut preview) = d.preview else { return };
        let kept: u64 = held.iter().filter_map(|&b| d.manifest.block(b)).map(|r| r.len as u64).sum();
        preview.bytes = preview.bytes.saturating_sub(kept);
        self.send_preview(master, preview);
    }

    fn send_preview(&mut self, master: ConnId, p: Preview) {
        log::info!(
            "event=dry_run transfer={} create={} change={} delete={} bytes={}",
            p.transfer,
            p.create,
            p.change,
            p.delete,
            p.bytes
        );
        self.send(master, Msg::Preview(Box::new(p)));
    }
}
