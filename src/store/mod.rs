//! The po's staging area: [`DiskStore`], the on-disk [`Store`].
//!
//! A transfer stages its files in `<dest>/.wugui-stage-<manifest id in hex>`, a hidden folder
//! on the dest's filesystem, so publishing is one `rename` a file. The same manifest always
//! maps to the same stage folder, which is what resume builds on.
//!
//! Below the dest nothing is reached by path ([`at`]): a symlink planted in the dest (or in
//! the stage) is never followed; where the tree needs a directory or a file, the symlink is
//! replaced. The dest itself is opened from its `allow_dest` root without following a
//! symlink either ([`dest`]).
//!
//! Until `publish`, nothing in the dest outside the stage folder is touched (except that the
//! dest itself is created when missing).
//!
//! The files: [`at`] the path-safe `*at` calls, [`staged`] one transfer's stage and its
//! writes, [`delta`] reuse of the published copy, [`publish`] seal/publish/mirror,
//! [`resume`] what an earlier attempt staged (its record, and its blocks checked again),
//! [`files`] block bodies read back from files (shared with the master's `tree::FsSource`),
//! [`unchanged`] whether a push changes nothing in the dest.

pub mod aside;
pub mod at;
pub mod delta;
pub mod dest;
pub mod files;
mod nested;
pub mod owner;
pub mod preview;
pub mod publish;
pub mod resume;
pub mod retain;
pub mod staged;
pub mod state_file;
#[cfg(test)]
pub(crate) mod tests;
mod unchanged;

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;

use crate::logging::kv_quote;
use crate::proto::disk::StageOptions;
use crate::proto::manifest::{hex, RelPath};
use crate::proto::msg::Digest;
use crate::proto::{BlockRef, Body, DiskJob, DiskOutput, JobDone, Manifest, Published, Store, StoreError};
use delta::Stop;
use dest::Roots;
use staged::Staged;

/// The prefix of every stage folder's name.
pub const STAGE_PREFIX: &str = ".wugui-stage-";

/// The stage folder's name (inside the dest) for `manifest`.
pub fn stage_name(manifest: &Manifest) -> String {
    format!("{STAGE_PREFIX}{}", hex(&manifest.id()))
}

/// How many published transfers stay servable.
const SERVED: usize = 4;
/// Staged files kept open to serve blocks (`DiskStore::serving`).
const SERVE_FILES: usize = 16;

/// The po's [`Store`] on the local disk.
pub struct DiskStore {
    state_dir: PathBuf,
    roots: Roots,
    /// po.conf `stage_retention`: how long a stage or record no transfer uses is kept.
    retention: Duration,
    /// Dests prepared lately, most recent first (kept in the state dir; see `retain`).
    dests: Vec<String>,
    /// po.conf `fsync`: make data durable before publish, and keep resume records.
    sync: bool,
    transfers: HashMap<u64, Staged>,
    /// Recently published transfers: their files can still be served to peers. The dest is
    /// reopened for each block served, so that nothing of a finished transfer stays open.
    published: Vec<(u64, String, Arc<Manifest>)>,
    /// Canary transfers: those to publish keeping the old tree aside, and those published so,
    /// with their dest, until the wave is decided.
    aside_wanted: std::collections::HashSet<u64>,
    asides: HashMap<u64, (OwnedFd, PathBuf, aside::Aside)>,
    /// Transfers whose stage a disk job holds (`Store::check_job`), by job id.
    busy: HashMap<u64, Busy>,
    next_job: u64,
    /// `WUGUI_FAILPOINT=hold_delta:PATH` (tests): check jobs wait for PATH before each block.
    hold: Option<PathBuf>,
    /// `WUGUI_FAILPOINT=hold_stage:PATH` (tests): stage builds wait for PATH before each
    /// block of the published copy they read.
    hold_stage: Option<PathBuf>,
    /// Checkpoint jobs running, by job id: their transfer.
    syncing: HashMap<u64, u64>,
    /// Dry runs' disk jobs running (`Store::preview_job`), by job id.
    previews: std::collections::HashSet<u64>,
    /// Set once a caller asked for `checkpoint_job`: `write_block` leaves checkpoints to it.
    checkpoint_jobs: bool,
    /// The staged files of one transfer, kept open to serve its blocks: a chain forwards every
    /// block it stages, and opening the file through the stage's directories cost a walk of
    /// several system calls a block. Forgotten whenever that stage is begun, published,
    /// released or aborted.
    serving: Option<(u64, files::OpenFiles<Arc<OwnedFd>>, at::DirCursor)>,
}

/// A transfer out on a disk job: what the store needs to know of it meanwhile (its stage and
/// record stay in use), and what became of it.
struct Busy {
    transfer: u64,
    dest: PathBuf,
    stage: String,
    record: PathBuf,
    cancel: Arc<AtomicBool>,
    /// Aborted meanwhile (`keep` as `abort` was called): applied when the job ends.
    aborted: Option<bool>,
    /// A stage that was staged before the job (not one being built): its folder (a dup of the
    /// descriptor) and manifest, to serve blocks from meanwhile. Sealing only sets attributes
    /// and syncs, and a check only writes blocks not held yet, so held blocks stay readable.
    serving: Option<(OwnedFd, Arc<Manifest>)>,
}

impl DiskStore {
    /// A store keeping its records in `state_dir` (created when missing), writing only into
    /// dests below one of `allow_dest` (paths on this host: po.conf's `root` in front), and
    /// keeping stale stages and records for `retention`. Sweeps what has expired.
    pub fn new(state_dir: PathBuf, allow_dest: Vec<PathBuf>, retention: Duration) -> Result<DiskStore, String> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&state_dir)
            .map_err(|e| format!("state dir {}: {e}", state_dir.display()))?;
        let mut store = DiskStore {
            state_dir,
            roots: Roots::new(allow_dest),
            retention,
            dests: Vec::new(),
            sync: true,
            transfers: HashMap::new(),
            published: Vec::new(),
            aside_wanted: Default::default(),
            asides: HashMap::new(),
            busy: HashMap::new(),
            next_job: 1,
            hold: None,
            hold_stage: None,
            syncing: HashMap::new(),
            previews: Default::default(),
            checkpoint_jobs: false,
            serving: None,
        };
        store.sweep_all();
        Ok(store)
    }

    /// po.conf `fsync = off`: no syncfs before publish and no resume records (a record is
    /// only true once its data is on disk). For RAM disks, or data verified downstream.
    pub fn without_sync(mut self) -> DiskStore {
        self.sync = false;
        self
    }

    /// `WUGUI_FAILPOINT=hold_delta:PATH` (tests only): every check job (a dry run's too)
    /// waits for `path` to exist before each block it reads.
    pub fn hold_checks(mut self, path: PathBuf) -> DiskStore {
        self.hold = Some(path);
        self
    }

    /// `WUGUI_FAILPOINT=hold_stage:PATH` (tests only): every stage build waits for `path` to
    /// exist before each block of the published copy it reads.
    pub fn hold_stages(mut self, path: PathBuf) -> DiskStore {
        self.hold_stage = Some(path);
        self
    }

    /// (dest, stage, record) of every transfer this store has, on a disk job or not.
    fn live(&self) -> impl Iterator<Item = (&Path, &str, &Path)> {
        let here = self.transfers.values().map(|t| (t.dest.as_path(), t.stage.as_str(), t.record.as_path()));
        let busy = self.busy.values().filter(|b| b.aborted.is_none());
        here.chain(busy.map(|b| (b.dest.as_path(), b.stage.as_str(), b.record.as_path())))
    }

    /// The `allow_dest` roots, shared: `Roots::set` on the handle reaches this store.
    pub fn roots(&self) -> Roots {
        self.roots.clone()
    }

    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// The stage folder of a prepared transfer.
    pub fn stage_dir(&self, transfer: u64) -> Option<PathBuf> {
        self.transfers.get(&transfer).map(|t| t.dest.join(&t.stage))
    }

    fn get(&mut self, transfer: u64) -> Result<&mut Staged, StoreError> {
        self.transfers
            .get_mut(&transfer)
            .ok_or_else(|| StoreError::Refused(format!("transfer {transfer} is not prepared")))
    }

    /// Closes the staged files kept open to serve `transfer` (its stage changes hands).
    fn forget_serving(&mut self, transfer: u64) {
        if self.serving.as_ref().is_some_and(|(t, ..)| *t == transfer) {
            self.serving = None;
        }
    }

    /// The stage of `transfer` and its manifest, also while a disk job has it.
    fn staged_for_serving(&self, transfer: u64) -> Option<(BorrowedFd<'_>, &Manifest)> {
        if let Some(t) = self.transfers.get(&transfer) {
            return Some((t.stage_fd.as_fd(), &t.manifest));
        }
        let b = self.busy.values().find(|b| b.transfer == transfer && b.aborted.is_none())?;
        b.serving.as_ref().map(|(fd, m)| (fd.as_fd(), &**m))
    }

    /// Opens the file of `entry` read-only: staged (kept open, `serving`), or published into
    /// the dest.
    fn open_for_serving(&mut self, transfer: u64, entry: u32) -> io::Result<Arc<OwnedFd>> {
        let path = |m: &Manifest| -> io::Result<RelPath> {
            Ok(m.entries().get(entry as usize).ok_or_else(|| io::Error::other("no such entry"))?.path.clone())
        };
        if self.staged_for_serving(transfer).is_some() {
            let (mut open, mut dirs) = match self.serving.take() {
                Some((t, open, dirs)) if t == transfer => (open, dirs),
                _ => (files::OpenFiles::new(SERVE_FILES), at::DirCursor::default()),
            };
            let (stage, m) = self.staged_for_serving(transfer).expect("checked above");
            let fd = open.get(entry, || dirs.open_file(stage, &path(m)?, OFlag::O_RDONLY).map(Arc::new)).cloned();
            self.serving = Some((transfer, open, dirs));
            return fd;
        }
        let Some((_, dest, m)) = self.published.iter().find(|(id, _, _)| *id == transfer) else {
            return Err(io::Error::new(io::ErrorKind::NotFound, "transfer unknown here"));
        };
        let dest_fd = self.roots.open(dest, false).map_err(|e| io::Error::other(e.to_string()))?;
        Ok(Arc::new(at::open_file_path(dest_fd.as_fd(), &path(m)?, OFlag::O_RDONLY)?))
    }
}

impl Store for DiskStore {
    fn prepare(
        &mut self,
        transfer: u64,
        dest: &str,
        manifest: &Manifest,
        delta: bool,
    ) -> Result<Vec<bool>, StoreError> {
        let begun = self.begin(transfer, dest, manifest)?;
        let t = build(transfer, begun, manifest, delta, Stop::budget())?;
        let held = t.held.clone();
        self.transfers.insert(transfer, t);
        Ok(held)
    }

    /// Building the stage (a directory an entry: seconds for a big tree) and the quick delta
    /// phase (copying unchanged blocks of the published copy) run in the job.
    fn prepare_job(&mut self, transfer: u64, dest: &str, manifest: &Manifest, delta: bool) -> Option<DiskJob> {
        // A refusal here is quick: `prepare` says it again.
        let begun = self.begin(transfer, dest, manifest).ok()?;
        let (manifest, names) = (manifest.clone(), (begun.dest.clone(), begun.stage.clone(), begun.record.clone()));
        let hold = self.hold_stage.clone();
        Some(self.spawn(transfer, names, move |cancel| {
            let stop = Stop { cancel: Some(cancel), hold: hold.as_deref(), ..Stop::budget() };
            match build(transfer, begun, &manifest, delta, stop) {
                Ok(t) => {
                    let held = t.held.clone();
                    (Some(t), Ok(JobDone::Prepared(held)))
                }
                Err(e) => (None, Err(e)),
            }
        }))
    }

    /// The staged blocks first (the likelier to be whole), then the delta ones not among them.
    fn candidates(&mut self, transfer: u64) -> Vec<u64> {
        let Some(t) = self.transfers.get(&transfer) else { return Vec::new() };
        let delta = t.reusable.iter().filter(|i| t.restaged.binary_search(i).is_err());
        t.restaged.iter().chain(delta).copied().collect()
    }

    fn check(&mut self, transfer: u64, sums: &[(u64, Digest)]) -> Vec<u64> {
        let Some(t) = self.transfers.get_mut(&transfer) else { return Vec::new() };
        t.check_sums(transfer, sums, Stop::budget())
    }

    /// The transfer's stage moves into the job and comes back with its output.
    fn check_job(&mut self, transfer: u64, sums: &[(u64, Digest)]) -> Option<DiskJob> {
        let (sums, hold) = (sums.to_vec(), self.hold.clone());
        self.job(transfer, move |t, cancel| {
            let stop = Stop { cancel: Some(cancel), hold: hold.as_deref(), ..Stop::budget() };
            Ok(JobDone::Checked(t.check_sums(transfer, &sums, stop)))
        })
    }

    /// Attributes of every entry, syncfs and the record: seconds for a big tree. Not
    /// cancelled halfway (an abort is done when it ends).
    fn seal_job(&mut self, transfer: u64) -> Option<DiskJob> {
        self.job(transfer, move |t, _| t.seal(transfer).map(|()| JobDone::Sealed))
    }

    /// A dup of the stage's descriptor syncs; the record written is of the blocks held now.
    fn checkpoint_job(&mut self, transfer: u64) -> Option<DiskJob> {
        self.checkpoint_jobs = true;
        let t = self.transfers.get_mut(&transfer)?;
        if t.syncing || !t.sync || !t.dirty || t.checkpointed.elapsed() < resume::CHECKPOINT_EVERY {
            return None;
        }
        let fd = t.stage_fd.try_clone().ok()?;
        let (record, bytes, lock) = (t.record.clone(), t.record_bytes(), t.record_lock.clone());
        (t.checkpointed, t.dirty, t.syncing) = (Instant::now(), false, true);
        let (id, cancel) = (self.next_job, Arc::new(AtomicBool::new(false)));
        self.next_job += 1;
        self.syncing.insert(id, transfer);
        let run = move |_: &AtomicBool| -> DiskOutput {
            Box::new(resume::write_checkpoint(fd.as_fd(), &record, &bytes, &lock).map_err(|e| e.to_string()))
        };
        Some(DiskJob { transfer, id, cancel, run: Box::new(run) })
    }

    fn job_done(&mut self, id: u64, out: Option<DiskOutput>) -> Result<Option<JobDone>, StoreError> {
        if self.previews.remove(&id) {
            let lost = || StoreError::Refused("the dry run's disk job was lost".into());
            return out.and_then(|o| o.downcast::<PreviewOutput>().ok()).map_or_else(|| Err(lost()), |r| r.map(Some));
        }
        if let Some(transfer) = self.syncing.remove(&id) {
            let done = out.and_then(|o| o.downcast::<Result<(), String>>().ok()).map_or(Err("lost".into()), |r| *r);
            if let Some(t) = self.transfers.get_mut(&transfer) {
                t.syncing = false;
                t.dirty |= done.is_err(); // the next one tries again
            }
            if let Err(e) = done {
                log::warn!("event=checkpoint_failed transfer={transfer} error={}", kv_quote(&e));
            }
            return Ok(None);
        }
        let Some(busy) = self.busy.remove(&id) else { return Ok(None) };
        let transfer = busy.transfer;
        let Some((t, done)) = out.and_then(|o| o.downcast::<JobOutput>().ok()).map(|b| *b) else {
            return Err(StoreError::Refused(format!("transfer {transfer}: its stage was lost with its disk job")));
        };
        let Some(t) = t else { return if busy.aborted.is_some() { Ok(None) } else { done.map(Some) } };
        match busy.aborted {
            None => {
                self.transfers.insert(transfer, t);
                done.map(Some)
            }
            Some(keep) => {
                // Another transfer may have taken over the stage meanwhile: it is theirs now.
                let taken_over = self.live().any(|(d, s, _)| d == t.dest && s == t.stage);
                if !taken_over {
                    self.finish_abort(transfer, t, keep);
                }
                Ok(None)
            }
        }
    }

    fn set_options(&mut self, transfer: u64, options: StageOptions) {
        let Some(t) = self.transfers.get_mut(&transfer) else { return };
        if t.opts != options {
            t.ids = owner::resolve(&options.owner);
            t.opts = options;
            // Files finished early (delta, resume) got the default attributes: seal sets
            // them again.
            t.done.iter_mut().for_each(|d| *d = false);
        }
    }

    fn write_block(&mut self, transfer: u64, b: &BlockRef, data: &[u8]) -> Result<(), StoreError> {
        let inline = !self.checkpoint_jobs;
        let t = self.get(transfer)?;
        let refuse = |s: String| Err(StoreError::Refused(s));
        if t.manifest.block(b.index) != Some(*b) {
            return refuse(format!("block {} does not match the manifest", b.index));
        }
        if data.len() != b.len as usize {
            return refuse(format!("write: block {} has {} bytes, expected {}", b.index, data.len(), b.len));
        }
        if t.sealed {
            return refuse(format!("write: transfer {transfer} is sealed"));
        }
        if t.held[b.index as usize] {
            return Ok(());
        }
        let segs = t.manifest.segments(b);
        t.put(transfer, b.index, &segs, data).map_err(|(path, e)| StoreError::io(format!("write {path}"), &e))?;
        // The resume record: at most about once a second, so its cost stays bounded; here
        // only when the caller does not take checkpoints off the loop (`checkpoint_job`).
        if inline && t.checkpointed.elapsed() >= resume::CHECKPOINT_EVERY {
            t.checkpoint_or_warn(transfer);
        }
        Ok(())
    }

    fn seal(&mut self, transfer: u64) -> Result<(), StoreError> {
        self.get(transfer)?.seal(transfer)
    }

    fn publish(&mut self, transfer: u64, flag_file: Option<&str>, mirror: bool) -> Result<Published, StoreError> {
        self.forget_serving(transfer);
        let dest = self.get(transfer)?.dest.clone();
        let nested = self.nested_in(&dest);
        let mut aside = match self.aside_wanted.remove(&transfer) {
            true => Some(aside::Aside::new(&self.get(transfer)?.stage)),
            false => None,
        };
        let t = self.get(transfer)?;
        t.nested = nested;
        let published = match t.publish(transfer, flag_file, mirror, aside.as_mut()) {
            Ok(p) => p,
            Err(e) => {
                // A canary that failed half way puts the old tree back at once.
                if let Some(a) = aside {
                    if let Err(r) = a.rollback(t.dest_fd.as_fd()) {
                        log::error!(
                            "event=canary_rollback_failed transfer={transfer} error={}",
                            kv_quote(&r.to_string())
                        );
                    }
                }
                return Err(e);
            }
        };
        if let Some(t) = self.transfers.remove(&transfer) {
            if let Some(a) = aside {
                let fd = t.dest_fd.try_clone().map_err(|e| StoreError::io("publish: keep the dest open", &e))?;
                self.asides.insert(transfer, (fd, t.dest.clone(), a));
            }
            let _ = std::fs::remove_file(&t.record);
            if self.published.len() >= SERVED {
                self.published.remove(0);
            }
            self.published.push((transfer, t.dest.display().to_string(), t.manifest));
        }
        Ok(published)
    }

    fn block_body(&mut self, transfer: u64, b: &BlockRef) -> Result<Body, StoreError> {
        let segments = match self.staged_for_serving(transfer) {
            Some((_, m)) => Some(m.segments(b)),
            None => self.published.iter().find(|(id, _, _)| *id == transfer).map(|(_, _, m)| m.segments(b)),
        };
        // Not an empty body: sent as the block, it would count against us at the peer.
        let Some(segments) = segments else {
            return Err(StoreError::Refused(format!("transfer {transfer} is neither staged nor published here")));
        };
        let err = |e: io::Error| StoreError::io(format!("serve block {}", b.index), &e);
        let open = |entry| self.open_for_serving(transfer, entry).map_err(err);
        let body = files::body_of(b.len as u64, &segments, true, open, |_, e| err(e))?;
        files::check_within(&body).map_err(err)?;
        Ok(body)
    }

    /// Closes the files kept open for writing; the stage folder and its descriptor stay, and
    /// the resume record is brought up to date.
    fn release(&mut self, transfer: u64) {
        self.forget_serving(transfer);
        if let Some(t) = self.transfers.get_mut(&transfer) {
            t.checkpoint_or_warn(transfer);
            t.open.clear();
        }
    }

    fn preview(
        &mut self,
        dest: &str,
        manifest: &Manifest,
        mirror: bool,
        itemize: bool,
        max_check: usize,
    ) -> Result<(crate::proto::msg::Preview, Vec<u64>), StoreError> {
        self.scan_of(dest)?.scan(manifest, (mirror, itemize), max_check, Stop::budget())
    }

    fn preview_check(&mut self, dest: &str, manifest: &Manifest, sums: &[(u64, Digest)]) -> Vec<u64> {
        self.scan_of(dest).map_or_else(|_| Vec::new(), |s| s.check(manifest, sums, Stop::budget()))
    }

    /// The dest is opened here (quick); the stat of every entry runs in the job.
    fn preview_job(
        &mut self,
        transfer: u64,
        dest: &str,
        manifest: &Manifest,
        mirror: bool,
        itemize: bool,
        max_check: usize,
    ) -> Option<DiskJob> {
        // A refusal here is quick: `preview` says it again.
        let scan = self.scan_of(dest).ok()?;
        let manifest = manifest.clone();
        Some(self.preview_spawn(transfer, move |cancel| {
            let stop = Stop { cancel: Some(cancel), ..Stop::budget() };
            let (p, check) = scan.scan(&manifest, (mirror, itemize), max_check, stop)?;
            Ok(JobDone::Previewed(Box::new(p), check))
        }))
    }

    /// Reading and hashing the old copies runs in the job (held by `hold_delta`, as checks are).
    fn preview_check_job(
        &mut self,
        transfer: u64,
        dest: &str,
        manifest: &Manifest,
        sums: &[(u64, Digest)],
    ) -> Option<DiskJob> {
        let scan = self.scan_of(dest).ok()?;
        let (manifest, sums, hold) = (manifest.clone(), sums.to_vec(), self.hold.clone());
        Some(self.preview_spawn(transfer, move |cancel| {
            let stop = Stop { cancel: Some(cancel), hold: hold.as_deref(), ..Stop::budget() };
            Ok(JobDone::PreviewHeld(scan.check(&manifest, &sums, stop)))
        }))
    }

    fn keep_aside(&mut self, transfer: u64) {
        if self.transfers.contains_key(&transfer) {
            self.aside_wanted.insert(transfer);
        }
    }

    fn rollback(&mut self, transfer: u64) -> Result<(), StoreError> {
        let Some((fd, dest, a)) = self.asides.remove(&transfer) else {
            return Err(StoreError::Refused(format!("transfer {transfer} kept no old tree")));
        };
        self.published.retain(|(id, _, _)| *id != transfer);
        a.rollback(fd.as_fd()).map_err(|e| StoreError::io(format!("rollback in {}", dest.display()), &e))
    }

    fn decide(&mut self, transfer: u64) {
        if let Some((fd, dest, a)) = self.asides.remove(&transfer) {
            if let Err(e) = a.drop_folder(fd.as_fd()) {
                // The next sweep of the dest removes it (no wave waits for it).
                log::warn!(
                    "event=aside_remove_failed transfer={transfer} dest={} error={}",
                    kv_quote(&dest.display().to_string()),
                    kv_quote(&e.to_string())
                );
            }
        }
    }

    fn abort(&mut self, transfer: u64, keep: bool) {
        self.forget_serving(transfer);
        self.decide(transfer);
        self.aside_wanted.remove(&transfer);
        self.published.retain(|(id, _, _)| *id != transfer);
        // A stage out on a disk job: the job stops soon, and the abort is done when it ends.
        if let Some(b) = self.busy.values_mut().find(|b| b.transfer == transfer && b.aborted.is_none()) {
            b.cancel.store(true, Ordering::Relaxed);
            b.aborted = Some(keep);
        }
        let Some(t) = self.transfers.remove(&transfer) else { return };
        self.finish_abort(transfer, t, keep);
    }
}

/// What a disk job hands back: the stage it had (or made), and what it did.
type JobOutput = (Option<Staged>, Result<JobDone, StoreError>);
/// What a dry run's disk job hands back: it has no stage.
type PreviewOutput = Result<JobDone, StoreError>;

/// A stage about to be built (`DiskStore::begin`).
struct Begun {
    dest: PathBuf,
    dest_fd: OwnedFd,
    stage: String,
    record: PathBuf,
    sync: bool,
}

/// `prepare`'s long part: the stage folder and its directories, then what this host holds
/// already (the published copy unchanged by size and mtime, with `delta`; what an earlier
/// attempt staged, to check).
fn build(transfer: u64, b: Begun, manifest: &Manifest, delta: bool, stop: Stop) -> Result<Staged, StoreError> {
    let started = Instant::now();
    let dest = b.dest.to_string_lossy().into_owned();
    let existed = at::lstat_at(b.dest_fd.as_fd(), b.stage.as_str()).ok().flatten().is_some();
    let opened = staged::open_stage(b.dest_fd.as_fd(), &dest, &b.stage, manifest, stop.cancel);
    let (stage_fd, reopened) = opened.inspect_err(|_| {
        if stop.cancelled() {
            log::info!("event=disk_job_cancelled transfer={transfer} kind=stage");
        }
        // A push refused (or cancelled) here leaves no stage of its own behind.
        if !existed {
            let _ = at::remove_at(b.dest_fd.as_fd(), b.stage.as_str());
        }
    })?;
    retain::touch(stage_fd.as_fd());
    log::info!(
        "event=stage_prepared transfer={transfer} entries={} ms={}",
        manifest.entries().len(),
        started.elapsed().as_millis()
    );
    let mut t = Staged::new((b.dest, b.dest_fd), (b.stage, stage_fd, reopened), manifest, b.record, b.sync);
    if delta && t.missing > 0 {
        t.reusable = t.reuse_dest(transfer, None, stop).1;
    }
    if stop.cancelled() {
        log::info!("event=disk_job_cancelled transfer={transfer} kind=stage");
    }
    t.untouched = t.missing == 0;
    t.find_restaged(transfer);
    Ok(t)
}

impl DiskStore {
    /// A disk job running `work` on the transfer's stage, which moves into the job.
    fn job<F>(&mut self, transfer: u64, work: F) -> Option<DiskJob>
    where
        F: FnOnce(&mut Staged, &AtomicBool) -> Result<JobDone, StoreError> + Send + 'static,
    {
        let mut t = self.transfers.remove(&transfer)?;
        let names = (t.dest.clone(), t.stage.clone(), t.record.clone());
        let serving = t.stage_fd.try_clone().ok().map(|fd| (fd, t.manifest.clone()));
        let job = self.spawn(transfer, names, move |cancel| {
            let done = work(&mut t, cancel);
            (Some(t), done)
        });
        if let Some(b) = self.busy.get_mut(&job.id) {
            b.serving = serving;
        }
        Some(job)
    }

    /// A disk job for `transfer` whose stage (dest, stage folder, record: `names`) is the
    /// job's until it ends.
    fn spawn<F>(&mut self, transfer: u64, names: (PathBuf, String, PathBuf), work: F) -> DiskJob
    where
        F: FnOnce(&AtomicBool) -> JobOutput + Send + 'static,
    {
        let job = self.new_job(transfer, work);
        let (dest, stage, record) = names;
        let busy = Busy { transfer, dest, stage, record, cancel: job.cancel.clone(), aborted: None, serving: None };
        self.busy.insert(job.id, busy);
        job
    }

    /// A dry run's disk job: it touches no stage, so the store only remembers its id.
    fn preview_spawn<F>(&mut self, transfer: u64, work: F) -> DiskJob
    where
        F: FnOnce(&AtomicBool) -> PreviewOutput + Send + 'static,
    {
        let job = self.new_job(transfer, work);
        self.previews.insert(job.id);
        job
    }

    /// A job with the next id and its own cancel flag, running `work` (its output boxed).
    fn new_job<F, T>(&mut self, transfer: u64, work: F) -> DiskJob
    where
        F: FnOnce(&AtomicBool) -> T + Send + 'static,
        T: Send + 'static,
    {
        let (id, cancel) = (self.next_job, Arc::new(AtomicBool::new(false)));
        self.next_job += 1;
        let run = move |cancel: &AtomicBool| -> DiskOutput { Box::new(work(cancel)) };
        DiskJob { transfer, id, cancel, run: Box::new(run) }
    }

    /// `prepare`'s part on the loop: the dest opened and remembered, stale stages and records
    /// swept, room made, and a transfer with the same stage (a master that died and was run
    /// again) made to hand it over: its record is written first, so nothing durable is lost.
    /// The same tree bound for another dest has its own stage and record.
    fn begin(&mut self, transfer: u64, dest: &str, manifest: &Manifest) -> Result<Begun, StoreError> {
        self.forget_serving(transfer);
        self.transfers.remove(&transfer);
        let stage = stage_name(manifest);
        let dest_fd = self.roots.open(dest, true)?;
        self.remember(dest);
        let record = resume::record_path(&self.state_dir, Path::new(dest), &stage);
        self.sweep_dest(dest_fd.as_fd(), dest, &stage);
        self.sweep_records(Some(&record));
        self.make_room(dest_fd.as_fd(), dest, &stage, manifest)?;
        let same: Vec<u64> = self
            .transfers
            .iter()
            .filter(|(_, t)| t.stage == stage && t.dest == Path::new(dest))
            .map(|(id, _)| *id)
            .chain(self.busy.values().filter(|b| b.stage == stage && b.dest == Path::new(dest)).map(|b| b.transfer))
            .collect();
        for id in same {
            self.abort(id, true);
        }
        Ok(Begun { dest: PathBuf::from(dest), dest_fd, stage, record, sync: self.sync })
    }

    fn finish_abort(&mut self, transfer: u64, mut t: Staged, keep: bool) {
        if keep {
            t.checkpoint_or_warn(transfer);
            retain::touch(t.stage_fd.as_fd());
            return;
        }
        let _ = std::fs::remove_file(&t.record);
        if let Err(e) = at::remove_at(t.dest_fd.as_fd(), t.stage.as_str()) {
            log::warn!(
                "event=stage_remove_failed transfer={transfer} path={} error={}",
                kv_quote(&t.dest.join(&t.stage).display().to_string()),
                kv_quote(&e.to_string())
            );
        }
    }
}
