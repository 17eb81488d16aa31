//! The disk as the role machines see it: the master's [`Source`], the po's [`Store`], the
//! [`Body`] of a block to send, and the typed errors of both traits.
//!
//! Files appear here only as opaque descriptors (`OwnedFd`) that the reactor sends from; the
//! protocol never reads or writes them itself.

use std::any::Any;
use std::fmt;
use std::os::fd::OwnedFd;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use super::msg::{Digest, Preview};
use super::{BlockRef, Manifest, Sum, Verify};

/// The bytes of a block, for sending.
#[derive(Debug, Clone)]
pub enum Body {
    Bytes(Arc<Vec<u8>>),
    /// `len` bytes of `file` at `offset`; `sendfile` false asks for the pread/write path.
    File {
        file: Arc<OwnedFd>,
        offset: u64,
        len: u64,
        sendfile: bool,
    },
    /// A block that spans several files: (file, offset, len) one after another.
    Files {
        ranges: Vec<(Arc<OwnedFd>, u64, u64)>,
        sendfile: bool,
    },
}

impl Body {
    pub fn len(&self) -> u64 {
        match self {
            Body::Bytes(b) => b.len() as u64,
            Body::File { len, .. } => *len,
            Body::Files { ranges, .. } => ranges.iter().map(|r| r.2).sum(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a [`DiskJob`] hands back to its store (only the store knows its type).
pub type DiskOutput = Box<dyn Any + Send>;

/// What a finished [`DiskJob`] did (`Store::job_done`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobDone {
    /// A check: the blocks taken.
    Checked(Vec<u64>),
    /// The stage is sealed.
    Sealed,
    /// The stage is prepared: which blocks it holds already (as `Store::prepare` says).
    Prepared(Vec<bool>),
    /// A dry run's scan (as `Store::preview` says).
    Previewed(Box<Preview>, Vec<u64>),
    /// A dry run's check (as `Store::preview_check` says).
    PreviewHeld(Vec<u64>),
}

/// Long disk work of the po's store (reading and hashing old copies, sealing, a dry run's
/// scan), run off the event loop (`Action::Disk`; `Event::DiskDone` follows). What the job
/// works on is moved into it, so the loop never touches it meanwhile; `cancel` is set by the
/// store (an abort) or, for a job of no transfer (a dry run's), by whoever waits for it, and
/// the job stops soon after it is set.
pub struct DiskJob {
    pub transfer: u64,
    /// The store's name for the job (`Store::check_done`).
    pub id: u64,
    pub cancel: Arc<AtomicBool>,
    pub run: Box<dyn FnOnce(&AtomicBool) -> DiskOutput + Send>,
}

impl DiskJob {
    /// Runs the job here, to its event.
    pub fn run(self) -> super::Event {
        let out = (self.run)(&self.cancel);
        super::Event::DiskDone { transfer: self.transfer, id: self.id, out: Some(out) }
    }
}

impl fmt::Debug for DiskJob {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "DiskJob {{ transfer: {}, id: {} }}", self.transfer, self.id)
    }
}

/// Why a [`Source`] could not serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceError {
    /// A system call failed; `what` names the step and the file ("read d/f").
    Io { what: String, error: String },
    /// The file of `path` is no longer what the manifest describes (`why` says how).
    Changed { path: String, why: String },
    /// The call names something the source does not have.
    Refused(String),
}

impl fmt::Display for SourceError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            SourceError::Io { what, error } => write!(f, "{what}: {error}"),
            SourceError::Changed { path, why } => write!(f, "file {path} changed while being sent ({why})"),
            SourceError::Refused(s) => f.write_str(s),
        }
    }
}

/// Why a [`Store`] call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// A system call failed; `what` names the step and the path ("write d/f").
    Io { what: String, error: String },
    /// As `Io`, but the file system is full.
    NoSpace { what: String, error: String },
    /// The call does not fit the transfer's state or its manifest (not prepared, not sealed,
    /// blocks missing, a block of the wrong size, a bad path).
    Refused(String),
}

impl StoreError {
    /// `Io`, or `NoSpace` when `error` says the disk is full.
    pub fn io(what: impl Into<String>, error: &std::io::Error) -> StoreError {
        let (what, text) = (what.into(), error.to_string());
        match error.kind() {
            std::io::ErrorKind::StorageFull => StoreError::NoSpace { what, error: text },
            _ => StoreError::Io { what, error: text },
        }
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            StoreError::Io { what, error } | StoreError::NoSpace { what, error } => write!(f, "{what}: {error}"),
            StoreError::Refused(s) => f.write_str(s),
        }
    }
}

/// Bytes of blocks a source reads ahead at most (`Source::ahead`), with at least two blocks a
/// worker: large blocks do not hold a gigabyte of bodies, small ones keep the workers ahead.
pub const AHEAD_BYTES: usize = 8 << 20;

/// The master's view of the source tree.
pub trait Source {
    /// The bytes of block `b`, and their checksum computed as they are read.
    fn block(&mut self, b: &BlockRef, verify: Verify, sendfile: bool) -> Result<(Body, Sum), SourceError>;
    /// Whether the file of `entry` still has the size and mtime it had in the manifest.
    fn unchanged(&mut self, entry: u32) -> Result<(), SourceError>;
    /// A hint: `blocks` will be asked for soon with `verify` (and `sendfile`), so their
    /// checksums may be computed now, beside the caller, and `block` then finds them done.
    /// Reading ahead stays within the list: a source never reads a block it was not told of.
    fn ahead(&mut self, _blocks: &[BlockRef], _verify: Verify, _sendfile: bool) {}
    /// Checksums of blocks named by `ahead` that are done by now and were not reported
    /// before, without waiting; their bodies stay for `block` (while `ahead` still names them).
    fn ready(&mut self) -> Vec<(u64, Sum)> {
        Vec::new()
    }
}

/// A po's staging area. Every method names a transfer that `prepare` opened.
/// How a prepared transfer is finished, from its class (see `Store::set_options`). The
/// default is the safe one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StageOptions {
    /// Keep the setuid, setgid and sticky bits of the manifest's modes (class
    /// `keep_special_bits`); without it, modes are `mode & 0o777`.
    pub keep_special_bits: bool,
    /// Class `owner`: who owns the published entries.
    pub owner: super::attrs::Owner,
    /// Class `chmod`: applied to every mode after the special bits rule.
    pub chmod: super::attrs::Chmod,
}

impl StageOptions {
    /// The options of `class`.
    pub fn of(class: &super::ClassCfg) -> StageOptions {
        StageOptions {
            keep_special_bits: class.keep_special_bits,
            owner: class.owner.clone(),
            chmod: class.chmod.clone(),
        }
    }

    /// The mode an entry of manifest mode `mode` gets.
    pub fn mode(&self, mode: u32, is_dir: bool) -> u32 {
        let keep = if self.keep_special_bits { 0o7777 } else { 0o777 };
        self.chmod.apply(mode & keep, is_dir)
    }
}

/// What `Store::publish` did: the tree's files and bytes, and whether the push changed
/// nothing there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    pub files: u64,
    pub bytes: u64,
    /// Every entry was in the dest as the manifest has it (kind, size, mtime, mode, symlink
    /// target), every block was taken unread from there (same size and mtime), the flag file
    /// was there, and with mirror nothing extra was: nothing was moved, removed or written.
    pub unchanged: bool,
}

pub trait Store {
    /// Opens a staging area for `manifest` below `dest` (an absolute path). With `delta`, it
    /// also takes the blocks that the published copy in `dest` holds at the same place in files
    /// that still have the manifest's size and mtime. Returns which blocks it holds already;
    /// blocks staged by an earlier attempt are not among them (see `candidates`).
    fn prepare(&mut self, transfer: u64, dest: &str, manifest: &Manifest, delta: bool)
        -> Result<Vec<bool>, StoreError>;
    /// After `prepare`: missing blocks this po may hold already, to check against the master's
    /// digests before they count: blocks an earlier attempt staged (whatever its resume record
    /// says: bytes from a peer are never taken on trust twice), and with delta, blocks the
    /// published copy may hold in files of another size or mtime.
    fn candidates(&mut self, _transfer: u64) -> Vec<u64> {
        Vec::new()
    }
    /// Takes the listed blocks whose bytes (staged, or in the published copy) match their
    /// digest. Returns the blocks taken.
    fn check(&mut self, _transfer: u64, _sums: &[(u64, Digest)]) -> Vec<u64> {
        Vec::new()
    }
    /// `check` as a job to run off the loop, or None to call `check` here. Until its output
    /// comes back (`job_done`), the transfer is the job's: the store serves nothing else for
    /// it, and `abort` cancels the job and takes effect when it ends.
    fn check_job(&mut self, _transfer: u64, _sums: &[(u64, Digest)]) -> Option<DiskJob> {
        None
    }
    /// `prepare` as a job to run off the loop (as `check_job`), or None to call `prepare` here.
    fn prepare_job(&mut self, _transfer: u64, _dest: &str, _manifest: &Manifest, _delta: bool) -> Option<DiskJob> {
        None
    }
    /// While blocks come in: a checkpoint of the resume record (a `syncfs`, then the record)
    /// as a job to run off the loop, when one is due; the stage stays the store's meanwhile.
    fn checkpoint_job(&mut self, _transfer: u64) -> Option<DiskJob> {
        None
    }
    /// `seal` as a job to run off the loop (as `check_job`), or None to call `seal` here.
    fn seal_job(&mut self, _transfer: u64) -> Option<DiskJob> {
        None
    }
    /// Disk job `id` ended (`out` None: it was lost, a panic): what it did, None when the
    /// transfer was aborted meanwhile; an error when sealing failed or the job lost the stage.
    fn job_done(&mut self, _id: u64, _out: Option<DiskOutput>) -> Result<Option<JobDone>, StoreError> {
        Ok(None)
    }
    /// After `prepare`, before the first block: the class's options for this transfer. Until
    /// it is called, a transfer has `StageOptions::default()` (special bits dropped).
    fn set_options(&mut self, _transfer: u64, _options: StageOptions) {}
    fn write_block(&mut self, transfer: u64, b: &BlockRef, data: &[u8]) -> Result<(), StoreError>;
    /// Every block is held: make directories, symlinks, modes and mtimes final, and sync.
    fn seal(&mut self, transfer: u64) -> Result<(), StoreError>;
    /// Moves the staged tree into `dest`, then writes `flag_file`; with `mirror`, removes
    /// what the tree lacks. When the dest holds the tree already (see `Published::unchanged`),
    /// it touches nothing there and drops the stage.
    fn publish(&mut self, transfer: u64, flag_file: Option<&str>, mirror: bool) -> Result<Published, StoreError>;
    /// Dry run: what a push of `manifest` to `dest` would change, writing nothing (no stage,
    /// no dest, no record); paths only with `itemize`. Also the blocks of changed files the
    /// published copy may hold (at most `max_check`), for `preview_check` with the master's
    /// digests.
    fn preview(
        &mut self,
        _dest: &str,
        _manifest: &Manifest,
        _mirror: bool,
        _itemize: bool,
        _max_check: usize,
    ) -> Result<(Preview, Vec<u64>), StoreError> {
        Err(StoreError::Refused("this store has no dry run".into()))
    }
    /// Of the blocks `preview` listed, those the published copy holds (their digests match).
    fn preview_check(&mut self, _dest: &str, _manifest: &Manifest, _sums: &[(u64, Digest)]) -> Vec<u64> {
        Vec::new()
    }
    /// `preview` as a job to run off the loop (`JobDone::Previewed`; an error as `preview`'s),
    /// or None to call `preview` here. `transfer` only names the job.
    fn preview_job(
        &mut self,
        _transfer: u64,
        _dest: &str,
        _manifest: &Manifest,
        _mirror: bool,
        _itemize: bool,
        _max_check: usize,
    ) -> Option<DiskJob> {
        None
    }
    /// `preview_check` as a job to run off the loop (`JobDone::PreviewHeld`), or None to call
    /// `preview_check` here.
    fn preview_check_job(
        &mut self,
        _transfer: u64,
        _dest: &str,
        _manifest: &Manifest,
        _sums: &[(u64, Digest)],
    ) -> Option<DiskJob> {
        None
    }
    /// Canary: the next `publish` of `transfer` keeps what it replaces aside, for `rollback`,
    /// until `decide` (or `abort`) drops it.
    fn keep_aside(&mut self, _transfer: u64) {}
    /// Puts back the tree a canary publish replaced.
    fn rollback(&mut self, transfer: u64) -> Result<(), StoreError> {
        Err(StoreError::Refused(format!("transfer {transfer}: this store keeps no old tree")))
    }
    /// The wave is decided: drops what a canary publish kept aside.
    fn decide(&mut self, _transfer: u64) {}
    /// Forgets the transfer (and what a canary publish kept aside). `keep` leaves the staged
    /// blocks for a resume.
    fn abort(&mut self, transfer: u64, keep: bool);
    /// The transfer's master is gone: close what is held open for it (the stage stays for a
    /// resume, and a later write opens its files again).
    fn release(&mut self, _transfer: u64) {}
    /// The bytes of a block this po holds (staged or published), for serving a peer; also
    /// while a disk job has the stage (sealing only sets attributes and syncs: nothing moves).
    fn block_body(&mut self, transfer: u64, b: &BlockRef) -> Result<Body, StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_print_as_before() {
        let e = StoreError::io("write d/f", &std::io::Error::from_raw_os_error(28));
        assert!(matches!(e, StoreError::NoSpace { .. }));
        assert_eq!(e.to_string(), "write d/f: No space left on device (os error 28)");
        assert_eq!(StoreError::Refused("not prepared".into()).to_string(), "not prepared");
        let c = SourceError::Changed { path: "g".into(), why: "size 3->4".into() };
        assert_eq!(c.to_string(), "file g changed while being sent (size 3->4)");
        let io = SourceError::Io { what: "open a/b".into(), error: "gone".into() };
        assert_eq!(io.to_string(), "open a/b: gone");
    }
}
