//! One transfer's stage: opening it, writing blocks into its files (kept open in a small
//! cache), and finishing each file as its last bytes land.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::time::Instant;

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use super::at::{
    chmod_file_at, create_file_at, dir_flags, ensure_dir_at, is_dir, lstat_at, mtime, open_file_in, set_owner_attrs,
    split, Cursor, DirCursor,
};
use super::files::OpenFiles;
use super::owner::Ids;
use crate::logging::kv_quote;
use crate::proto::disk::StageOptions;
use crate::proto::manifest::{Entry, Kind, RelPath};
use crate::proto::{Manifest, Segment, StoreError};
use crate::sys::fd::openat;

/// How many staged files a transfer keeps open for writing.
const OPEN_FILES: usize = 32;

pub struct Staged {
    pub dest: PathBuf,
    pub dest_fd: OwnedFd,
    pub stage: String,
    pub stage_fd: OwnedFd,
    /// The stage folder was there before: its files may hold bytes of an earlier attempt.
    pub reopened: bool,
    /// Shared with a disk job's `Busy`, which serves from the stage while the job has it.
    pub manifest: std::sync::Arc<Manifest>,
    pub held: Vec<bool>,
    pub missing: u64,
    /// The resume record in the state dir, and when it was last written.
    pub record: PathBuf,
    pub checkpointed: Instant,
    pub dirty: bool,
    pub sync: bool,
    /// A checkpoint job (`Store::checkpoint_job`) runs; the lock orders its record write with
    /// the ones made here.
    pub syncing: bool,
    pub record_lock: std::sync::Arc<std::sync::Mutex<()>>,
    /// Staged files open for writing, and the directory of the last one opened.
    pub open: OpenFiles<File>,
    pub dirs: DirCursor,
    pub sealed: bool,
    /// Blocks an earlier attempt may have staged, to check (sorted).
    pub restaged: Vec<u64>,
    /// Delta: blocks the published copy may hold in changed files, to check (sorted).
    pub reusable: Vec<u64>,
    /// Per entry: bytes of a dense file still to write (`u64::MAX`: not tracked), and
    /// whether its mode and mtime are final already. A file is finished as its last bytes
    /// land, so that seal does not visit 20,000 small files again at the end.
    pub left: Vec<u64>,
    pub done: Vec<bool>,
    /// The class's mode and owner rules (`Store::set_options`).
    pub opts: StageOptions,
    /// `opts.owner` looked up on this po, or why it cannot be (seal then fails with it).
    pub ids: Result<Ids, String>,
    /// Other dests below this one, set before publish: never replaced, nor mirrored away.
    pub nested: Vec<super::nested::Nested>,
    /// Every block was here before the push: holes, or taken unread from the published copy
    /// (same size and mtime) by `prepare`. Then a dest that matches the manifest changes
    /// nothing (`dest_matches`).
    pub untouched: bool,
}

/// Opens (creating it when missing) the stage folder `stage` in the dest `dest_fd`, with the
/// manifest's directories. Returns its descriptor, and whether it was there already (an
/// earlier attempt may have left blocks in it).
pub fn open_stage(
    dest_fd: BorrowedFd,
    dest: &str,
    stage: &str,
    manifest: &Manifest,
    cancel: Option<&std::sync::atomic::AtomicBool>,
) -> Result<(OwnedFd, bool), StoreError> {
    let stage_err = |e: io::Error| StoreError::io(format!("stage {dest}/{stage}"), &e);
    let mut found = lstat_at(dest_fd, stage).map_err(stage_err)?.is_some_and(|st| is_dir(&st));
    let open =
        || ensure_dir_at(dest_fd, stage, 0o700).and_then(|()| openat(dest_fd, stage, dir_flags(), Mode::empty()));
    let mut stage_fd = open().map_err(stage_err)?;
    // A stage left from before is only ours if nobody else could have put it there or
    // entered it: owned by this user, no access for others. Else it goes, with what it holds.
    let st = nix::sys::stat::fstat(std::os::fd::AsRawFd::as_raw_fd(&stage_fd)).map_err(|e| stage_err(e.into()))?;
    if st.st_uid != nix::unistd::geteuid().as_raw() || st.st_mode & 0o077 != 0 {
        log::warn!(
            "event=stage_untrusted dest={} stage={stage} uid={} mode={:o}: removed and made anew",
            crate::logging::kv_quote(dest),
            st.st_uid,
            st.st_mode & 0o7777
        );
        drop(stage_fd);
        super::at::remove_at(dest_fd, stage).map_err(stage_err)?;
        stage_fd = open().map_err(stage_err)?;
        found = false;
    }
    let mut cur = Cursor::new(stage_fd.as_fd());
    for e in manifest.entries() {
        // An abort stops a big build (its folder then goes, or stays for a resume, as the
        // abort says).
        if cancel.is_some_and(|c| c.load(std::sync::atomic::Ordering::Relaxed)) {
            return Err(StoreError::Refused(format!("stage {dest}/{stage}: cancelled")));
        }
        let (parent, name) = split(&e.path);
        let made = cur.at(parent).and_then(|dir| match e.kind {
            Kind::Dir => ensure_dir_at(dir, name, 0o700),
            // Files appear with their first block (`Staged::file`), empty ones at seal.
            Kind::File { .. } | Kind::Symlink { .. } | Kind::Link { .. } => Ok(()),
        });
        made.map_err(|err| StoreError::io(format!("stage {}", e.path), &err))?;
    }
    drop(cur);
    Ok((stage_fd, found))
}

impl Staged {
    /// A transfer of `manifest` staged in `stage_fd`, holding every block that is wholly a
    /// hole. What an earlier attempt staged counts only once checked (`resume`).
    pub fn new(
        (dest, dest_fd): (PathBuf, OwnedFd),
        (stage, stage_fd, reopened): (String, OwnedFd, bool),
        manifest: &Manifest,
        record: PathBuf,
        sync: bool,
    ) -> Staged {
        let blocks = manifest.blocks() as usize;
        let mut held = vec![false; blocks];
        // Blocks wholly in holes are zeros: the stage file's own holes at seal.
        if manifest.entries().iter().any(|e| e.sparse.is_some()) {
            for (i, h) in held.iter_mut().enumerate() {
                *h = manifest.is_hole(&manifest.block(i as u64).expect("index below blocks()"));
            }
        }
        // Only files with holes have holes, and their bytes are not counted down.
        let left: Vec<u64> = manifest
            .entries()
            .iter()
            .map(|e| match e.kind {
                Kind::File { size } if size > 0 && e.sparse.is_none() => size,
                _ => u64::MAX,
            })
            .collect();
        Staged {
            dest,
            dest_fd,
            stage,
            stage_fd,
            reopened,
            manifest: std::sync::Arc::new(manifest.clone()),
            missing: held.iter().filter(|h| !**h).count() as u64,
            held,
            record,
            checkpointed: Instant::now(),
            dirty: false,
            sync,
            syncing: false,
            record_lock: Default::default(),
            open: OpenFiles::new(OPEN_FILES),
            dirs: DirCursor::default(),
            sealed: false,
            restaged: Vec::new(),
            reusable: Vec::new(),
            left,
            done: vec![false; manifest.entries().len()],
            opts: StageOptions::default(),
            ids: Ok(Ids::Own),
            nested: Vec::new(),
            untouched: false,
        }
    }

    /// The mode entry `e` gets: its own, without setuid, setgid and sticky bits unless the
    /// class keeps them, then the class `chmod`.
    pub fn mode_of(&self, e: &Entry) -> u32 {
        self.opts.mode(e.mode, e.kind == Kind::Dir)
    }

    /// The (uid, gid) entry `e` gets, when the class `owner` has one chowned.
    pub fn owner_of(&self, e: &Entry) -> Option<(u32, u32)> {
        match self.ids {
            Ok(Ids::Keep) => Some((e.uid, e.gid)),
            Ok(Ids::Fixed(u, g)) => Some((u, g)),
            Ok(Ids::Own) | Err(_) => None,
        }
    }

    /// Writes block `index` (its pieces `segs`, bytes `data`) into the stage and counts it
    /// held. On error, the path that failed.
    pub fn put(
        &mut self,
        transfer: u64,
        index: u64,
        segs: &[Segment],
        data: &[u8],
    ) -> Result<(), (RelPath, io::Error)> {
        for seg in segs {
            let piece = &data[seg.at as usize..seg.at as usize + seg.len as usize];
            if let Err(e) = self.write_piece(seg.entry, piece, seg.offset) {
                return Err((self.manifest.entries()[seg.entry as usize].path.clone(), e));
            }
        }
        self.now_held(transfer, index, segs);
        Ok(())
    }

    /// Block `index` (its pieces `segs`) is whole in the stage: it counts from now on.
    pub fn now_held(&mut self, transfer: u64, index: u64, segs: &[Segment]) {
        self.held[index as usize] = true;
        self.missing -= 1;
        self.dirty = true;
        self.wrote(transfer, segs);
    }

    /// The pieces `segs` of a newly held block are written: a file whose last bytes these
    /// were gets its final mode and mtime now, through the descriptor it was written by.
    fn wrote(&mut self, transfer: u64, segs: &[Segment]) {
        for seg in segs {
            let i = seg.entry as usize;
            if self.left[i] == u64::MAX {
                continue;
            }
            self.left[i] -= seg.len as u64;
            if self.left[i] > 0 {
                continue;
            }
            let (owner, bits, when) = {
                let e = &self.manifest.entries()[i];
                (self.owner_of(e), self.mode_of(e), mtime(e.mtime, e.mtime_nsec))
            };
            // Usually still open from the write; reopened when the cache let it go.
            let set = match self.file(seg.entry) {
                Ok(f) => set_owner_attrs(f.as_fd(), owner, bits, &when),
                Err(_) => continue,
            };
            let e = &self.manifest.entries()[i];
            match set {
                Ok(()) => self.done[i] = true,
                // seal tries again, and reports what still fails
                Err(err) => log::debug!(
                    "event=finish_file_failed transfer={transfer} path={} error={}",
                    kv_quote(&e.path.to_string()),
                    kv_quote(&io::Error::from(err).to_string())
                ),
            }
        }
    }

    /// Writes `piece` at `offset` of the staged file of `entry`. In a sparse file, pages of
    /// zeros are left unwritten, so they stay holes; in a reopened stage they may hold bytes
    /// of an earlier attempt (a block that failed its check), so they are punched out.
    fn write_piece(&mut self, entry: u32, piece: &[u8], offset: u64) -> io::Result<()> {
        const PAGE: u64 = 4096;
        let sparse = self.manifest.entries()[entry as usize].sparse.is_some();
        let clear = self.reopened;
        let f = self.file(entry)?;
        if !sparse {
            return f.write_all_at(piece, offset);
        }
        // Runs of pages (aligned in the file) that are all zeros or not, one call each.
        let page_end = |i: usize| piece.len().min(i + (PAGE - (offset + i as u64) % PAGE) as usize);
        let is_zero = |i: usize| piece[i..page_end(i)].iter().all(|&b| b == 0);
        let mut i = 0;
        while i < piece.len() {
            let zero = is_zero(i);
            let mut end = page_end(i);
            while end < piece.len() && is_zero(end) == zero {
                end = page_end(end);
            }
            let at = offset + i as u64;
            if !zero || (clear && punch_hole(f, at, (end - i) as u64).is_err()) {
                f.write_all_at(&piece[i..end], at)?;
            }
            i = end;
        }
        Ok(())
    }

    /// The staged file of `entry`, open for writing. A sparse file has its full size from
    /// the start: its blocks are served to peers before seal, and a hole past the end of a
    /// short file would end a block early (and the link with it).
    fn file(&mut self, entry: u32) -> io::Result<&File> {
        let (stage, e) = (self.stage_fd.as_fd(), &self.manifest.entries()[entry as usize]);
        let size = match e.kind {
            Kind::File { size } if e.sparse.is_some() => size,
            _ => 0,
        };
        let dirs = &mut self.dirs;
        self.open.get(entry, || {
            let f = open_staged(stage, dirs, e.path.as_bytes())?;
            if f.metadata()?.len() < size {
                f.set_len(size)?;
            }
            Ok(f)
        })
    }
}

/// Makes `len` bytes at `offset` of `f` a hole (zeros), keeping the file's size.
fn punch_hole(f: &File, offset: u64, len: u64) -> nix::Result<()> {
    use nix::fcntl::{fallocate, FallocateFlags};
    let flags = FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE;
    fallocate(std::os::fd::AsRawFd::as_raw_fd(f), flags, offset as i64, len as i64)
}

/// Opens the staged file `path` for writing. Files are created when their first block
/// arrives: on some disks a create costs most of a millisecond, which should overlap the
/// transfer, not precede it.
/// `dirs` keeps the last file's directory open: files come mostly in manifest order.
fn open_staged(stage: BorrowedFd, dirs: &mut DirCursor, path: &[u8]) -> io::Result<File> {
    let (parent, name) = split(path);
    let dir = dirs.at(stage, parent)?;
    match open_file_in(dir, name, OFlag::O_WRONLY) {
        Ok(fd) => Ok(File::from(fd)),
        // Finished (made read-only) before a restart whose record lagged behind: writable
        // again, and finished again at seal.
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            chmod_file_at(dir, name, 0o600)?;
            Ok(File::from(open_file_in(dir, name, OFlag::O_WRONLY)?))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => create_file_at(dir, name),
        Err(e) => Err(e),
    }
}
