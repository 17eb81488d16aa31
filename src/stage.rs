//! The po's staging area: [`DiskStore`], the on-disk [`Store`].
//!
//! A transfer stages its files in `<dest>/.wugui-stage-<manifest id in hex>`, a hidden folder
//! on the dest's filesystem, so publishing is one `rename` a file. The same manifest always
//! maps to the same stage folder, which is what resume builds on.
//!
//! Below the dest nothing is reached by path: every directory is opened component by component
//! from the dest's descriptor with `O_NOFOLLOW | O_DIRECTORY`, and every change is an `*at`
//! call on such a descriptor. A symlink planted in the dest (or in the stage) is never
//! followed; where the tree needs a directory or a file, the symlink is replaced. The dest
//! path itself comes from the class config and is opened as given.
//!
//! Until `publish`, nothing in the dest outside the stage folder is touched (except that the
//! dest itself is created when missing).

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, renameat, AtFlags, OFlag};
use nix::libc;
use nix::sys::stat::{fchmodat, fstat, fstatat, mkdirat, utimensat, FchmodatFlags, Mode, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{symlinkat, unlinkat, UnlinkatFlags};

use crate::logging::kv_quote;
use crate::proto::manifest::{hex, Kind};
use crate::proto::{BlockRef, Manifest, Store};

/// The prefix of every stage folder's name.
pub const STAGE_PREFIX: &str = ".wugui-stage-";

/// How many staged files a transfer keeps open for writing.
const OPEN_FILES: usize = 32;

/// The stage folder's name (inside the dest) for `manifest`.
pub fn stage_name(manifest: &Manifest) -> String {
    format!("{STAGE_PREFIX}{}", hex(&manifest.id()))
}

/// An owned raw descriptor, closed on drop.
struct Fd(RawFd);

impl Drop for Fd {
    fn drop(&mut self) {
        let _ = nix::unistd::close(self.0);
    }
}

/// Hands a descriptor we own over to a `File`.
fn into_file(fd: Fd) -> io::Result<File> {
    let raw = fd.0;
    std::mem::forget(fd);
    Ok(crate::sendfile::file_from_raw(raw))
}

fn mode(bits: u32) -> Mode {
    Mode::from_bits_truncate(bits as libc::mode_t)
}

fn mtime(sec: i64, nsec: u32) -> TimeSpec {
    TimeSpec::new(sec as _, nsec as _)
}

fn is_dir(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

fn is_file(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFREG
}

fn split(path: &str) -> (&str, &str) {
    path.rsplit_once('/').unwrap_or(("", path))
}

fn dir_flags() -> OFlag {
    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC
}

/// Opens directory `rel` (non-empty, `/`-separated) below `base`, refusing symlinks.
fn open_dir_path(base: RawFd, rel: &str) -> io::Result<Fd> {
    let mut cur: Option<Fd> = None;
    for c in rel.split('/') {
        let at = cur.as_ref().map_or(base, |f| f.0);
        cur = Some(Fd(openat(Some(at), c, dir_flags(), Mode::empty())?));
    }
    cur.ok_or_else(|| io::Error::from(Errno::EINVAL))
}

/// Lstat of `name` in `dir`; `None` when it does not exist.
fn lstat_at<P: ?Sized + nix::NixPath>(dir: RawFd, name: &P) -> io::Result<Option<libc::stat>> {
    match fstatat(Some(dir), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(Errno::ENOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Sets the mode of `name` (a directory, or a staged file) in `dir`, not following a
/// symlink where the kernel and libc allow that.
fn chmod_dir_at<P: ?Sized + nix::NixPath>(dir: RawFd, name: &P, bits: u32) -> io::Result<()> {
    match fchmodat(Some(dir), name, mode(bits), FchmodatFlags::NoFollowSymlink) {
        Err(Errno::EOPNOTSUPP) | Err(Errno::ENOSYS) => {
            Ok(fchmodat(Some(dir), name, mode(bits), FchmodatFlags::FollowSymlink)?)
        }
        r => Ok(r?),
    }
}

/// The names in directory `dir`, without `.` and `..`.
fn list(dir: RawFd) -> io::Result<Vec<OsString>> {
    let mut d =
        nix::dir::Dir::openat(Some(dir), ".", OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())?;
    let mut out = Vec::new();
    for ent in d.iter() {
        let ent = ent?;
        let n = ent.file_name().to_bytes();
        if n != b"." && n != b".." {
            out.push(OsStr::from_bytes(n).to_os_string());
        }
    }
    Ok(out)
}

/// Removes `name` in `dir`, a whole tree if it is a directory, never following a symlink.
/// A missing `name` is no error.
fn remove_at<P: ?Sized + nix::NixPath>(dir: RawFd, name: &P) -> io::Result<()> {
    let Some(st) = lstat_at(dir, name)? else { return Ok(()) };
    if !is_dir(&st) {
        return match unlinkat(Some(dir), name, UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(e.into()),
        };
    }
    if st.st_mode & 0o700 != 0o700 {
        chmod_dir_at(dir, name, 0o700)?;
    }
    {
        let sub = Fd(openat(Some(dir), name, dir_flags(), Mode::empty())?);
        for n in list(sub.0)? {
            remove_at(sub.0, n.as_os_str())?;
        }
    }
    match unlinkat(Some(dir), name, UnlinkatFlags::RemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Makes sure `name` in `dir` is a real directory (not a symlink to one), creating it with
/// `bits` when missing and replacing whatever else is there.
fn ensure_dir_at(dir: RawFd, name: &str, bits: u32) -> io::Result<()> {
    match lstat_at(dir, name)? {
        Some(st) if is_dir(&st) => {
            if st.st_mode & 0o700 != 0o700 {
                chmod_dir_at(dir, name, (st.st_mode & 0o7777) | 0o700)?;
            }
            return Ok(());
        }
        Some(_) => remove_at(dir, name)?,
        None => {}
    }
    Ok(mkdirat(Some(dir), name, mode(bits))?)
}

/// Opens (creating it when missing) the regular file `name` in `dir` for writing, mode 0600.
/// Anything else in the way (a symlink, a directory, a fifo) is removed first.
fn create_file_at(dir: RawFd, name: &str) -> io::Result<File> {
    let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
    if let Ok(fd) = openat(Some(dir), name, flags, mode(0o600)) {
        let f = into_file(Fd(fd))?;
        if f.metadata()?.is_file() {
            nix::sys::stat::fchmod(f.as_raw_fd(), mode(0o600))?;
            return Ok(f);
        }
    }
    remove_at(dir, name)?;
    let fd = openat(Some(dir), name, flags | OFlag::O_EXCL, mode(0o600))?;
    into_file(Fd(fd))
}

/// Opens the regular file `rel` below `base` with `flags`, refusing symlinks anywhere.
fn open_file_path(base: RawFd, rel: &str, flags: OFlag) -> io::Result<Fd> {
    let (parent, name) = split(rel);
    let parent = if parent.is_empty() { None } else { Some(open_dir_path(base, parent)?) };
    let at = parent.as_ref().map_or(base, |f| f.0);
    let fd =
        Fd(openat(Some(at), name, flags | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC, Mode::empty())?);
    if !is_file(&fstat(fd.0)?) {
        return Err(io::Error::other("not a regular file"));
    }
    Ok(fd)
}

/// The open directory of the last entry's parent, so walking a sorted manifest opens each
/// directory about once.
struct Cursor {
    base: RawFd,
    path: String,
    fd: Option<Fd>,
}

impl Cursor {
    fn new(base: RawFd) -> Cursor {
        Cursor { base, path: String::new(), fd: None }
    }

    /// The descriptor of directory `dir` (relative to the base; "" is the base).
    fn at(&mut self, dir: &str) -> io::Result<RawFd> {
        if dir.is_empty() {
            return Ok(self.base);
        }
        if let Some(fd) = &self.fd {
            if self.path == dir {
                return Ok(fd.0);
            }
            if let Some(rest) = dir.strip_prefix(self.path.as_str()).and_then(|r| r.strip_prefix('/')) {
                let sub = open_dir_path(fd.0, rest)?;
                return Ok(self.set(dir, sub));
            }
        }
        self.fd = None;
        let fd = open_dir_path(self.base, dir)?;
        Ok(self.set(dir, fd))
    }

    fn set(&mut self, dir: &str, fd: Fd) -> RawFd {
        let raw = fd.0;
        self.path.clear();
        self.path.push_str(dir);
        self.fd = Some(fd);
        raw
    }
}

struct Staged {
    dest: PathBuf,
    dest_fd: Fd,
    stage: String,
    stage_fd: Fd,
    manifest: Manifest,
    held: Vec<bool>,
    missing: u64,
    /// The resume record in the state dir, and when it was last written.
    record: PathBuf,
    checkpointed: std::time::Instant,
    dirty: bool,
    sync: bool,
    /// Staged files open for writing, most recently used last.
    open: Vec<(u32, File)>,
    sealed: bool,
    /// Delta: blocks the published copy may hold in changed files, to check.
    candidates: Vec<u64>,
    /// Per entry: bytes of a dense file still to write (`u64::MAX`: not tracked), and
    /// whether its mode and mtime are final already. A file is finished as its last bytes
    /// land, so that seal does not visit 20,000 small files again at the end.
    left: Vec<u64>,
    done: Vec<bool>,
}

/// How often a po makes its held blocks durable for a resume.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
const RECORD_MAGIC: &[u8; 4] = b"WGH1";

/// The held blocks recorded for `manifest`, if a record of that exact manifest exists.
fn read_record(path: &Path, manifest: &Manifest) -> Option<Vec<bool>> {
    let b = std::fs::read(path).ok()?;
    let blocks = manifest.blocks() as usize;
    if b.len() != 4 + 16 + 8 + blocks.div_ceil(8) || &b[..4] != RECORD_MAGIC || b[4..20] != manifest.id() {
        return None;
    }
    if u64::from_be_bytes(b[20..28].try_into().ok()?) != blocks as u64 {
        return None;
    }
    Some((0..blocks).map(|i| b[28 + i / 8] & (1 << (i % 8)) != 0).collect())
}

/// Incremental transfer stops reading the old copy after this long and fetches the rest, so
/// that the master, waiting for the po's answer to its offer, does not give up on it.
const REUSE_BUDGET: std::time::Duration = std::time::Duration::from_secs(30);

/// A file of the published copy, for incremental transfer: open, and whether its size and
/// mtime equal the manifest's (then it is taken as unchanged without hashing, as rsync does).
struct Old {
    file: File,
    size: u64,
    same: bool,
}

/// The published copy's files, opened once each while blocks are visited in stream order.
struct OldFiles(HashMap<u32, Option<Old>>);

impl OldFiles {
    /// Whether the published copy has every piece of block `b` at the same place, and
    /// whether all those files look unchanged by size and mtime.
    fn covers(&mut self, t: &Staged, segs: &[crate::proto::Segment]) -> Option<bool> {
        // Files before this block's first are done with.
        if let Some(first) = segs.first() {
            self.0.retain(|e, _| *e >= first.entry);
        }
        let mut same = true;
        for seg in segs {
            let o = self.0.entry(seg.entry).or_insert_with(|| {
                let e = &t.manifest.entries()[seg.entry as usize];
                let fd = open_file_path(t.dest_fd.0, &e.path, OFlag::O_RDONLY).ok()?;
                let st = fstat(fd.0).ok()?;
                let size = st.st_size as u64;
                let same =
                    Kind::File { size } == e.kind && st.st_mtime == e.mtime && st.st_mtime_nsec as u32 == e.mtime_nsec;
                Some(Old { file: into_file(fd).ok()?, size, same })
            });
            let o = o.as_ref()?;
            if o.size < seg.offset + seg.len as u64 {
                return None;
            }
            same &= o.same;
        }
        Some(same)
    }

    /// Block `b`'s bytes from the published copy (after `covers` said yes).
    fn read(&self, segs: &[crate::proto::Segment], buf: &mut [u8]) -> io::Result<()> {
        for seg in segs {
            let o = self.0.get(&seg.entry).and_then(|o| o.as_ref()).ok_or_else(|| io::Error::other("not open"))?;
            o.file.read_exact_at(&mut buf[seg.at as usize..seg.at as usize + seg.len as usize], seg.offset)?;
        }
        Ok(())
    }
}

impl Staged {
    /// Incremental transfer, from the published copy in the dest (symlinks not followed):
    /// with `sums` None, takes every missing block whose files are unchanged by size and
    /// mtime and returns the blocks the copy may hold in changed files (to check); with
    /// `sums`, takes those of the listed blocks whose bytes match their MD5. Taken blocks
    /// are copied into the stage and never travel. Returns (taken, to check).
    fn reuse_dest(&mut self, transfer: u64, sums: Option<&[(u64, [u8; 16])]>) -> (Vec<u64>, Vec<u64>) {
        use md5::Digest;
        let started = std::time::Instant::now();
        let (mut bytes, mut hashed) = (0u64, 0u64);
        let mut old = OldFiles(HashMap::new());
        let (mut taken, mut candidates) = (Vec::new(), Vec::new());
        let mut buf = Vec::new();
        let todo: Vec<(u64, Option<[u8; 16]>)> = match sums {
            None => (0..self.held.len() as u64).map(|i| (i, None)).collect(),
            Some(s) => s.iter().map(|(i, d)| (*i, Some(*d))).collect(),
        };
        let mut stopped = false;
        for (i, want) in todo {
            let Some(b) = self.manifest.block(i).filter(|_| !self.held[i as usize]) else { continue };
            if started.elapsed() > REUSE_BUDGET {
                stopped = true;
                break;
            }
            let segs = self.manifest.segments(&b);
            let Some(same) = old.covers(self, &segs) else { continue };
            if !same && want.is_none() {
                candidates.push(i);
                continue;
            }
            buf.resize(b.len as usize, 0);
            if old.read(&segs, &mut buf).is_err() {
                continue;
            }
            if let Some(d) = want {
                hashed += b.len as u64;
                if md5::Md5::digest(&buf)[..] != d[..] {
                    continue;
                }
            }
            if let Err((path, e)) = self.put(transfer, i, &segs, &buf) {
                log::warn!(
                    "event=delta_failed transfer={transfer} path={} error={}",
                    kv_quote(&path),
                    kv_quote(&e.to_string())
                );
                break;
            }
            taken.push(i);
            bytes += b.len as u64;
        }
        if stopped {
            log::warn!("event=delta_budget_spent transfer={transfer} seconds={}", REUSE_BUDGET.as_secs());
        }
        log::info!(
            "event=delta transfer={transfer} phase={} reused={}/{} bytes={bytes} hashed={hashed} to_check={} ms={}",
            if sums.is_some() { "check" } else { "quick" },
            taken.len(),
            self.held.len(),
            candidates.len(),
            started.elapsed().as_millis()
        );
        (taken, candidates)
    }

    /// Writes block `index` (its pieces `segs`, bytes `data`) into the stage and counts it
    /// held. On error, the path that failed.
    fn put(
        &mut self,
        transfer: u64,
        index: u64,
        segs: &[crate::proto::Segment],
        data: &[u8],
    ) -> Result<(), (String, io::Error)> {
        for seg in segs {
            let piece = &data[seg.at as usize..seg.at as usize + seg.len as usize];
            if let Err(e) = self.write_piece(seg.entry, piece, seg.offset) {
                return Err((self.manifest.entries()[seg.entry as usize].path.clone(), e));
            }
        }
        self.held[index as usize] = true;
        self.missing -= 1;
        self.dirty = true;
        self.wrote(transfer, segs);
        Ok(())
    }

    /// Makes the staged data durable, then records which blocks it holds: a block in the
    /// record is always on disk. The record is replaced atomically.
    fn checkpoint(&mut self) -> io::Result<()> {
        self.checkpointed = std::time::Instant::now();
        if !self.dirty || !self.sync {
            return Ok(());
        }
        nix::unistd::syncfs(self.stage_fd.0)?;
        let mut b = Vec::with_capacity(28 + self.held.len() / 8 + 1);
        b.extend_from_slice(RECORD_MAGIC);
        b.extend_from_slice(&self.manifest.id());
        b.extend_from_slice(&(self.held.len() as u64).to_be_bytes());
        b.extend_from_slice(&crate::proto::po::bitmap(&self.held));
        let tmp = self.record.with_extension("tmp");
        let mut f = File::create(&tmp)?;
        f.write_all(&b)?;
        f.sync_data()?;
        std::fs::rename(&tmp, &self.record)?;
        self.dirty = false;
        Ok(())
    }

    /// The pieces `segs` of a newly held block are written: a file whose last bytes these
    /// were gets its final mode and mtime now, through the descriptor it was written by.
    fn wrote(&mut self, transfer: u64, segs: &[crate::proto::Segment]) {
        for seg in segs {
            let i = seg.entry as usize;
            if self.left[i] == u64::MAX {
                continue;
            }
            self.left[i] -= seg.len as u64;
            if self.left[i] > 0 {
                continue;
            }
            // Usually still open from the write; reopened when the cache let it go.
            let fd = match self.file(seg.entry) {
                Ok(f) => f.as_raw_fd(),
                Err(_) => continue,
            };
            let e = &self.manifest.entries()[i];
            let set = nix::sys::stat::fchmod(fd, mode(e.mode))
                .and_then(|()| nix::sys::stat::futimens(fd, &TimeSpec::UTIME_OMIT, &mtime(e.mtime, e.mtime_nsec)));
            match set {
                Ok(()) => self.done[i] = true,
                // seal tries again, and reports what still fails
                Err(err) => log::debug!(
                    "event=finish_file_failed transfer={transfer} path={} error={}",
                    kv_quote(&e.path),
                    kv_quote(&io::Error::from(err).to_string())
                ),
            }
        }
    }

    /// Writes `piece` at `offset` of the staged file of `entry`. In a sparse file, pages of
    /// zeros are left unwritten: the file is fresh, so they stay holes.
    fn write_piece(&mut self, entry: u32, piece: &[u8], offset: u64) -> io::Result<()> {
        const PAGE: u64 = 4096;
        let sparse = self.manifest.entries()[entry as usize].sparse.is_some();
        let f = self.file(entry)?;
        if !sparse {
            return f.write_all_at(piece, offset);
        }
        // Runs of pages (aligned in the file) holding a non-zero byte, one write each.
        let mut run: Option<usize> = None;
        let mut i = 0;
        while i < piece.len() {
            let end = piece.len().min(i + (PAGE - (offset + i as u64) % PAGE) as usize);
            let zero = piece[i..end].iter().all(|&b| b == 0);
            match (zero, run) {
                (false, None) => run = Some(i),
                (true, Some(from)) => {
                    f.write_all_at(&piece[from..i], offset + from as u64)?;
                    run = None;
                }
                _ => {}
            }
            i = end;
        }
        if let Some(from) = run {
            f.write_all_at(&piece[from..], offset + from as u64)?;
        }
        Ok(())
    }

    fn file(&mut self, entry: u32) -> io::Result<&File> {
        if let Some(at) = self.open.iter().position(|(e, _)| *e == entry) {
            let hit = self.open.remove(at);
            self.open.push(hit);
        } else {
            let path = &self.manifest.entries()[entry as usize].path;
            // Files are created when their first block arrives: on some disks a create costs
            // most of a millisecond, which should overlap the transfer, not precede it.
            let f = match open_file_path(self.stage_fd.0, path, OFlag::O_WRONLY) {
                Ok(fd) => into_file(fd)?,
                // Finished (made read-only) before a restart whose record lagged behind:
                // writable again, and finished again at seal.
                Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                    let (parent, name) = split(path);
                    let dir = if parent.is_empty() { None } else { Some(open_dir_path(self.stage_fd.0, parent)?) };
                    let at = dir.as_ref().map_or(self.stage_fd.0, |d| d.0);
                    chmod_dir_at(at, name, 0o600)?;
                    into_file(open_file_path(self.stage_fd.0, path, OFlag::O_WRONLY)?)?
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => match split(path) {
                    ("", name) => create_file_at(self.stage_fd.0, name)?,
                    (parent, name) => create_file_at(open_dir_path(self.stage_fd.0, parent)?.0, name)?,
                },
                Err(e) => return Err(e),
            };
            if self.open.len() >= OPEN_FILES {
                self.open.remove(0);
            }
            self.open.push((entry, f));
        }
        Ok(&self.open.last().expect("just pushed").1)
    }
}

/// The po's [`Store`] on the local disk.
pub struct DiskStore {
    state_dir: PathBuf,
    /// po.conf `fsync`: make data durable before publish, and keep resume records.
    sync: bool,
    transfers: HashMap<u64, Staged>,
    /// Recently published transfers: their files can still be served to peers.
    published: Vec<(u64, Fd, Manifest)>,
}

/// How many published transfers stay servable.
const SERVED: usize = 4;

impl DiskStore {
    /// A store keeping its records in `state_dir` (created when missing).
    pub fn new(state_dir: PathBuf) -> Result<DiskStore, String> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&state_dir)
            .map_err(|e| format!("state dir {}: {e}", state_dir.display()))?;
        Ok(DiskStore { state_dir, sync: true, transfers: HashMap::new(), published: Vec::new() })
    }

    /// po.conf `fsync = off`: no syncfs before publish and no resume records (a record is
    /// only true once its data is on disk). For RAM disks, or data verified downstream.
    pub fn without_sync(mut self) -> DiskStore {
        self.sync = false;
        self
    }

    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// The stage folder of a prepared transfer.
    pub fn stage_dir(&self, transfer: u64) -> Option<PathBuf> {
        self.transfers.get(&transfer).map(|t| t.dest.join(&t.stage))
    }

    fn get(&mut self, transfer: u64) -> Result<&mut Staged, String> {
        self.transfers.get_mut(&transfer).ok_or_else(|| format!("transfer {transfer} is not prepared"))
    }
}

impl Store for DiskStore {
    fn prepare(&mut self, transfer: u64, dest: &str, manifest: &Manifest, delta: bool) -> Result<Vec<bool>, String> {
        let started = std::time::Instant::now();
        self.transfers.remove(&transfer);
        let dest_path = Path::new(dest);
        if !dest_path.is_absolute() {
            return Err(format!("dest {dest:?} is not an absolute path"));
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dest_path)
            .map_err(|e| format!("dest {dest}: {e}"))?;
        let dest_fd =
            nix::fcntl::open(dest_path, OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
                .map(Fd)
                .map_err(|e| format!("dest {dest}: {}", io::Error::from(e)))?;
        let stage = stage_name(manifest);
        let stage_fd = ensure_dir_at(dest_fd.0, &stage, 0o700)
            .and_then(|()| Ok(Fd(openat(Some(dest_fd.0), stage.as_str(), dir_flags(), Mode::empty())?)))
            .map_err(|e| format!("stage {dest}/{stage}: {e}"))?;
        let mut cur = Cursor::new(stage_fd.0);
        for e in manifest.entries() {
            let (parent, name) = split(&e.path);
            let made = cur.at(parent).and_then(|dir| match e.kind {
                Kind::Dir => ensure_dir_at(dir, name, 0o700),
                // Files appear with their first block (`Staged::file`), empty ones at seal.
                Kind::File { .. } | Kind::Symlink { .. } => Ok(()),
            });
            made.map_err(|err| format!("stage {}: {err}", e.path))?;
        }
        drop(cur);
        log::info!(
            "event=stage_prepared transfer={transfer} entries={} ms={}",
            manifest.entries().len(),
            started.elapsed().as_millis()
        );
        let blocks = manifest.blocks() as usize;
        // Another transfer of the same tree (a master that died and was run again) hands its
        // stage over: its record is written first, so nothing durable is lost.
        let same: Vec<u64> = self.transfers.iter().filter(|(_, t)| t.stage == stage).map(|(id, _)| *id).collect();
        for id in same {
            self.abort(id, true);
        }
        let record = self.state_dir.join(format!("{}.held", stage.trim_start_matches('.')));
        let mut held = read_record(&record, manifest).unwrap_or_else(|| vec![false; blocks]);
        let resumed = held.iter().filter(|h| **h).count();
        if resumed > 0 {
            log::info!("event=resume transfer={transfer} held={resumed}/{blocks}");
        }
        // Blocks wholly in holes are zeros: the stage file's own holes at seal.
        if manifest.entries().iter().any(|e| e.sparse.is_some()) {
            for (i, h) in held.iter_mut().enumerate() {
                *h = *h || manifest.is_hole(&manifest.block(i as u64).expect("index below blocks()"));
            }
        }
        let missing = held.iter().filter(|h| !**h).count() as u64;
        let mut t = Staged {
            dest: dest_path.to_path_buf(),
            dest_fd,
            stage,
            stage_fd,
            manifest: manifest.clone(),
            held,
            missing,
            record,
            checkpointed: std::time::Instant::now(),
            dirty: false,
            sync: self.sync,
            open: Vec::new(),
            sealed: false,
            candidates: Vec::new(),
            left: manifest
                .entries()
                .iter()
                .map(|e| match e.kind {
                    Kind::File { size } if size > 0 && e.sparse.is_none() => size,
                    _ => u64::MAX,
                })
                .collect(),
            done: vec![false; manifest.entries().len()],
        };
        // Files complete from an earlier run are finished at seal, as before.
        for i in (0..blocks).filter(|&i| t.held[i]) {
            for seg in manifest.segments(&manifest.block(i as u64).expect("index below blocks()")) {
                if let Some(l) = t.left.get_mut(seg.entry as usize).filter(|l| **l != u64::MAX) {
                    *l -= seg.len as u64;
                }
            }
        }
        if delta && t.missing > 0 {
            t.candidates = t.reuse_dest(transfer, None).1;
        }
        let held = t.held.clone();
        self.transfers.insert(transfer, t);
        Ok(held)
    }

    fn delta_candidates(&mut self, transfer: u64) -> Vec<u64> {
        self.transfers.get_mut(&transfer).map(|t| std::mem::take(&mut t.candidates)).unwrap_or_default()
    }

    fn delta_check(&mut self, transfer: u64, sums: &[(u64, [u8; 16])]) -> Vec<u64> {
        let Some(t) = self.transfers.get_mut(&transfer) else { return Vec::new() };
        t.reuse_dest(transfer, Some(sums)).0
    }

    fn write_block(&mut self, transfer: u64, b: &BlockRef, data: &[u8]) -> Result<(), String> {
        let t = self.get(transfer)?;
        if t.manifest.block(b.index) != Some(*b) {
            return Err(format!("block {} does not match the manifest", b.index));
        }
        if data.len() != b.len as usize {
            return Err(format!("write: block {} has {} bytes, expected {}", b.index, data.len(), b.len));
        }
        if t.sealed {
            return Err(format!("write: transfer {transfer} is sealed"));
        }
        if t.held[b.index as usize] {
            return Ok(());
        }
        let segs = t.manifest.segments(b);
        t.put(transfer, b.index, &segs, data).map_err(|(path, e)| format!("write {path}: {e}"))?;
        // The resume record: at most about once a second, so its cost stays bounded.
        if t.checkpointed.elapsed() >= CHECKPOINT_EVERY {
            if let Err(e) = t.checkpoint() {
                log::warn!("event=checkpoint_failed transfer={transfer} error={}", kv_quote(&e.to_string()));
            }
        }
        Ok(())
    }

    fn seal(&mut self, transfer: u64) -> Result<(), String> {
        let t = self.get(transfer)?;
        if t.missing > 0 {
            return Err(format!("seal: {} of {} blocks are missing", t.missing, t.held.len()));
        }
        t.open.clear();
        let started = std::time::Instant::now();
        let mut cur = Cursor::new(t.stage_fd.0);
        for (i, e) in t.manifest.entries().iter().enumerate() {
            if t.done[i] {
                continue;
            }
            let (parent, name) = split(&e.path);
            let when = mtime(e.mtime, e.mtime_nsec);
            let done = cur.at(parent).and_then(|dir| -> io::Result<()> {
                match &e.kind {
                    Kind::Dir => {}
                    Kind::File { size } => {
                        let fd = match open_file_path(dir, name, OFlag::O_RDONLY) {
                            Ok(fd) => fd,
                            // An empty file (or one all holes) had no block to create it.
                            Err(err) if err.kind() == io::ErrorKind::NotFound && (*size == 0 || e.sparse.is_some()) => {
                                drop(create_file_at(dir, name)?);
                                open_file_path(dir, name, OFlag::O_RDONLY)?
                            }
                            Err(e) => return Err(e),
                        };
                        let mut st = fstat(fd.0)?;
                        if e.sparse.is_some() && (st.st_size as u64) < *size {
                            // A sparse file ends in a hole that no write reached.
                            let w = into_file(open_file_path(dir, name, OFlag::O_WRONLY)?)?;
                            w.set_len(*size)?;
                            st = fstat(fd.0)?;
                        }
                        if st.st_size as u64 != *size {
                            return Err(io::Error::other(format!("staged size {} is not {size}", st.st_size)));
                        }
                        nix::sys::stat::fchmod(fd.0, mode(e.mode))?;
                        nix::sys::stat::futimens(fd.0, &TimeSpec::UTIME_OMIT, &when)?;
                    }
                    Kind::Symlink { target } => {
                        remove_at(dir, name)?;
                        symlinkat(target.as_str(), Some(dir), name)?;
                        match utimensat(Some(dir), name, &TimeSpec::UTIME_OMIT, &when, UtimensatFlags::NoFollowSymlink)
                        {
                            Ok(()) | Err(Errno::EOPNOTSUPP) | Err(Errno::ENOSYS) => {}
                            Err(e) => return Err(e.into()),
                        }
                    }
                }
                Ok(())
            });
            done.map_err(|err| format!("seal {}: {err}", e.path))?;
        }
        // One syncfs writes all staged data back in bulk before anything is published: with
        // 100,000 small files that is about 2 s, where an fdatasync per file took 10-30 s.
        let attrs_ms = started.elapsed().as_millis();
        if t.sync {
            nix::unistd::syncfs(t.stage_fd.0).map_err(|e| format!("seal: syncfs: {e}"))?;
        }
        log::info!(
            "event=stage_sealed transfer={transfer} finished_early={} attrs_ms={attrs_ms} sync_ms={}",
            t.done.iter().filter(|d| **d).count(),
            started.elapsed().as_millis() - attrs_ms
        );
        t.sealed = true;
        // A po that dies while it waits for COMMIT comes back holding everything.
        t.dirty = true;
        if let Err(e) = t.checkpoint() {
            log::warn!("event=checkpoint_failed transfer={transfer} error={}", kv_quote(&e.to_string()));
        }
        Ok(())
    }

    fn publish(&mut self, transfer: u64, flag_file: Option<&str>, mirror: bool) -> Result<(u64, u64), String> {
        let t = self.get(transfer)?;
        if !t.sealed {
            return Err(format!("publish: transfer {transfer} is not sealed"));
        }
        if let Some(flag) = flag_file {
            crate::proto::manifest::check_path(flag).map_err(|e| format!("flag file: {e}"))?;
        }
        let (mut files, mut bytes) = (0u64, 0u64);
        let entries = t.manifest.entries();

        // Move the staged entries in, parents first. A directory the dest lacks moves whole,
        // with everything below it, in one rename (a first push of 20,000 files is a few).
        let started = std::time::Instant::now();
        let mut renames = 0u64;
        {
            let mut dcur = Cursor::new(t.dest_fd.0);
            let mut scur = Cursor::new(t.stage_fd.0);
            let mut moved: std::collections::HashSet<&str> = std::collections::HashSet::new();
            for e in entries {
                if let Kind::File { size } = e.kind {
                    files += 1;
                    bytes += size;
                }
                let mut up = e.path.as_str();
                let mut inside = false;
                while let Some((p, _)) = up.rsplit_once('/') {
                    if moved.contains(p) {
                        inside = true;
                        break;
                    }
                    up = p;
                }
                if inside {
                    continue;
                }
                let (parent, name) = split(&e.path);
                let done = dcur.at(parent).and_then(|d| -> io::Result<()> {
                    if e.kind == Kind::Dir {
                        if lstat_at(d, name)?.is_none() {
                            renameat(Some(scur.at(parent)?), name, Some(d), name)?;
                            moved.insert(e.path.as_str());
                            renames += 1;
                            return Ok(());
                        }
                        return ensure_dir_at(d, name, 0o700);
                    }
                    renames += 1;
                    if lstat_at(d, name)?.is_some_and(|st| is_dir(&st)) {
                        remove_at(d, name)?;
                    }
                    let s = scur.at(parent)?;
                    Ok(renameat(Some(s), name, Some(d), name)?)
                });
                done.map_err(|err| format!("publish {}: {err}", e.path))?;
            }
        }
        log::debug!("event=publish_moved transfer={transfer} renames={renames} ms={}", started.elapsed().as_millis());

        // Remove what the tree lacks, before directory mtimes are set.
        if mirror {
            let dirs: HashMap<&str, bool> = entries.iter().map(|e| (e.path.as_str(), e.kind == Kind::Dir)).collect();
            let mut todo = vec![String::new()];
            while let Some(dir) = todo.pop() {
                let fd = if dir.is_empty() { None } else { Some(open_dir_path(t.dest_fd.0, &dir)) };
                let fd = fd.transpose().map_err(|e| format!("mirror {dir}: {e}"))?;
                let at = fd.as_ref().map_or(t.dest_fd.0, |f| f.0);
                for n in list(at).map_err(|e| format!("mirror {dir}: {e}"))? {
                    let rel = n.to_str().map(|n| if dir.is_empty() { n.to_string() } else { format!("{dir}/{n}") });
                    if let Some(rel) = &rel {
                        if dir.is_empty() && rel.starts_with(STAGE_PREFIX) || flag_file == Some(rel.as_str()) {
                            continue;
                        }
                        match dirs.get(rel.as_str()) {
                            Some(true) => {
                                todo.push(rel.clone());
                                continue;
                            }
                            Some(false) => continue,
                            None => {}
                        }
                    }
                    let shown = rel.unwrap_or_else(|| format!("{dir}/{}", n.to_string_lossy()));
                    remove_at(at, n.as_os_str()).map_err(|e| format!("mirror: remove {shown}: {e}"))?;
                    log::debug!("event=mirror_remove transfer={transfer} path={}", kv_quote(&shown));
                }
            }
        }

        remove_at(t.dest_fd.0, t.stage.as_str()).map_err(|e| format!("remove stage {}: {e}", t.stage))?;

        // Directory modes and mtimes, deepest first (children sort after their parent).
        for e in entries.iter().rev().filter(|e| e.kind == Kind::Dir) {
            let fd = open_dir_path(t.dest_fd.0, &e.path).map_err(|err| format!("publish {}: {err}", e.path))?;
            let set = nix::sys::stat::fchmod(fd.0, mode(e.mode))
                .and_then(|()| nix::sys::stat::futimens(fd.0, &TimeSpec::UTIME_OMIT, &mtime(e.mtime, e.mtime_nsec)));
            match set {
                Ok(()) => {}
                Err(Errno::EPERM) => {
                    log::warn!(
                        "event=publish_attr_failed transfer={transfer} path={} error={}",
                        kv_quote(&e.path),
                        kv_quote(&io::Error::from(Errno::EPERM).to_string())
                    )
                }
                Err(err) => return Err(format!("publish {}: {}", e.path, io::Error::from(err))),
            }
        }

        if let Some(flag) = flag_file {
            write_flag(t.dest_fd.0, flag, transfer, files, bytes).map_err(|e| format!("flag file {flag}: {e}"))?;
        }
        let _ = nix::unistd::fsync(t.dest_fd.0);
        if let Some(t) = self.transfers.remove(&transfer) {
            let _ = std::fs::remove_file(&t.record);
            if self.published.len() >= SERVED {
                self.published.remove(0);
            }
            self.published.push((transfer, t.dest_fd, t.manifest));
        }
        Ok((files, bytes))
    }

    fn block_body(&mut self, transfer: u64, b: &BlockRef) -> Result<crate::proto::Body, String> {
        let segments = match self.transfers.get(&transfer) {
            Some(t) => t.manifest.segments(b),
            None => self
                .published
                .iter()
                .find(|(id, _, _)| *id == transfer)
                .map(|(_, _, m)| m.segments(b))
                .unwrap_or_default(),
        };
        let err = |e: io::Error| format!("serve block {}: {e}", b.index);
        // Many small pieces are read now: a queued body must not hold a descriptor per piece.
        if segments.len() > crate::tree::PIECES_BY_FILE {
            let mut data = vec![0u8; b.len as usize];
            for seg in segments {
                let f = self.open_for_serving(transfer, seg.entry).map_err(err)?;
                let at = seg.at as usize;
                f.read_exact_at(&mut data[at..at + seg.len as usize], seg.offset).map_err(err)?;
            }
            return Ok(crate::proto::Body::Bytes(std::sync::Arc::new(data)));
        }
        let mut ranges = Vec::with_capacity(segments.len());
        for seg in segments {
            let f = self.open_for_serving(transfer, seg.entry).map_err(err)?;
            ranges.push((std::sync::Arc::new(f), seg.offset, seg.len as u64));
        }
        Ok(crate::proto::Body::Files { ranges, sendfile: true })
    }

    fn abort(&mut self, transfer: u64, keep: bool) {
        self.published.retain(|(id, _, _)| *id != transfer);
        let Some(mut t) = self.transfers.remove(&transfer) else { return };
        if keep {
            if let Err(e) = t.checkpoint() {
                log::warn!("event=checkpoint_failed transfer={transfer} error={}", kv_quote(&e.to_string()));
            }
        } else {
            let _ = std::fs::remove_file(&t.record);
            if let Err(e) = remove_at(t.dest_fd.0, t.stage.as_str()) {
                log::warn!(
                    "event=stage_remove_failed transfer={transfer} path={} error={}",
                    kv_quote(&t.dest.join(&t.stage).display().to_string()),
                    kv_quote(&e.to_string())
                );
            }
        }
    }
}

impl DiskStore {
    /// Opens the file of `entry` read-only: staged, or published into the dest.
    fn open_for_serving(&self, transfer: u64, entry: u32) -> io::Result<File> {
        let (base, m) = match self.transfers.get(&transfer) {
            Some(t) => (t.stage_fd.0, &t.manifest),
            None => match self.published.iter().find(|(id, _, _)| *id == transfer) {
                Some((_, fd, m)) => (fd.0, m),
                None => return Err(io::Error::new(io::ErrorKind::NotFound, "transfer unknown here")),
            },
        };
        let path = &m.entries().get(entry as usize).ok_or_else(|| io::Error::other("no such entry"))?.path;
        into_file(open_file_path(base, path, OFlag::O_RDONLY)?)
    }
}

/// Writes the flag file atomically: a temporary file, synced, renamed over `flag`.
fn write_flag(dest: RawFd, flag: &str, transfer: u64, files: u64, bytes: u64) -> io::Result<()> {
    let (parent, name) = split(flag);
    let parent = if parent.is_empty() { None } else { Some(open_dir_path(dest, parent)?) };
    let at = parent.as_ref().map_or(dest, |f| f.0);
    let tmp = ".wugui-flag.tmp";
    remove_at(at, tmp)?;
    let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let mut f = into_file(Fd(openat(Some(at), tmp, flags, mode(0o644))?))?;
    f.write_all(format!("transfer={transfer}\nfiles={files}\nbytes={bytes}\n").as_bytes())?;
    f.sync_data()?;
    nix::sys::stat::fchmod(f.as_raw_fd(), mode(0o644))?;
    drop(f);
    if lstat_at(at, name)?.is_some_and(|st| is_dir(&st)) {
        // never trade published data for the flag
        remove_at(at, tmp)?;
        return Err(Errno::EISDIR.into());
    }
    renameat(Some(at), tmp, Some(at), name)?;
    let _ = nix::unistd::fsync(at);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{Source, Verify};
    use crate::tree::{walk, FsSource};
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn scratch(tag: &str) -> PathBuf {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "wugui-stage-test-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    /// Removes a test tree, read-only directories included.
    fn cleanup(p: &Path) {
        let parent =
            nix::fcntl::open(p.parent().unwrap(), OFlag::O_RDONLY | OFlag::O_DIRECTORY, Mode::empty()).unwrap();
        let parent = Fd(parent);
        remove_at(parent.0, p.file_name().unwrap()).unwrap();
        assert!(!p.exists());
    }

    fn write(p: &Path, data: &[u8], bits: u32) {
        std::fs::write(p, data).unwrap();
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(bits)).unwrap();
    }

    fn chmod(p: &Path, bits: u32) {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(bits)).unwrap();
    }

    /// A source tree: nested dirs, an empty dir, a symlink, an empty file, various modes.
    fn source(root: &Path) -> Manifest {
        std::fs::create_dir_all(root.join("d/e")).unwrap();
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::create_dir(root.join("empty")).unwrap();
        std::fs::create_dir(root.join("was_file")).unwrap();
        write(&root.join("d/e/big.bin"), &(0..10_000u32).map(|i| (i * 7) as u8).collect::<Vec<_>>(), 0o750);
        write(&root.join("d/small"), b"small\n", 0o600);
        write(&root.join("d/zero"), b"", 0o644);
        write(&root.join("sub/f"), b"through?", 0o644);
        write(&root.join("was_dir"), b"now a file", 0o640);
        write(&root.join("was_file/x"), b"x", 0o644);
        std::os::unix::fs::symlink("e/big.bin", root.join("d/link")).unwrap();
        std::os::unix::fs::symlink("/nonexistent/target", root.join("dangling")).unwrap();
        chmod(&root.join("d/e"), 0o750);
        chmod(&root.join("empty"), 0o700);
        chmod(&root.join("d"), 0o755);
        // read-only: set last, deepest first, and replaced on a second publish
        std::fs::create_dir_all(root.join("ro/inner")).unwrap();
        write(&root.join("ro/inner/f"), b"read only", 0o444);
        chmod(&root.join("ro/inner"), 0o555);
        chmod(&root.join("ro"), 0o500);
        walk(root, &[], 4096).unwrap().manifest
    }

    fn transfer(store: &mut DiskStore, id: u64, src: &Path, dest: &Path, m: &Manifest) {
        let held = store.prepare(id, dest.to_str().unwrap(), m, false).unwrap();
        assert_eq!(held, vec![false; m.blocks() as usize]);
        let mut fs = FsSource::new(src.to_path_buf(), m);
        // out of order, to exercise the cache and pwrite
        for i in (0..m.blocks()).rev() {
            let b = m.block(i).unwrap();
            let (body, _) = fs.block(&b, Verify::None, true).unwrap();
            let buf = crate::sendfile::body_bytes(&body).unwrap();
            store.write_block(id, &b, &buf).unwrap();
        }
        store.seal(id).unwrap();
    }

    /// The manifest of `dest` without `ignore`, and each file's content.
    fn snapshot(root: &Path, ignore: &[&str]) -> (Vec<crate::proto::manifest::Entry>, Vec<(String, Vec<u8>)>) {
        let m = walk(root, &[], 4096).unwrap().manifest;
        let entries: Vec<_> = m.entries().iter().filter(|e| !ignore.contains(&e.path.as_str())).cloned().collect();
        let contents = entries
            .iter()
            .filter(|e| matches!(e.kind, Kind::File { .. }))
            .map(|e| (e.path.clone(), std::fs::read(root.join(&e.path)).unwrap()))
            .collect();
        (entries, contents)
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> =
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    }

    #[test]
    fn full_cycle_into_an_old_dest() {
        let base = scratch("cycle");
        let (src, dest, outside) = (base.join("src"), base.join("a/b/dest"), base.join("outside"));
        std::fs::create_dir(&src).unwrap();
        std::fs::create_dir(&outside).unwrap();
        let m = source(&src);

        // an old dest: an extra file, stale content, a dir where a file goes, a file where a
        // dir goes, a planted symlink to a directory outside, another transfer's stage
        std::fs::create_dir_all(dest.join("d")).unwrap();
        std::fs::create_dir_all(dest.join("was_dir/inner")).unwrap();
        write(&dest.join("was_dir/inner/old"), b"old", 0o644);
        write(&dest.join("was_file"), b"old", 0o644);
        write(&dest.join("d/small"), b"stale content", 0o666);
        write(&dest.join("old.txt"), b"keep me unless mirror", 0o644);
        std::os::unix::fs::symlink(&outside, dest.join("sub")).unwrap();
        std::fs::create_dir(dest.join(".wugui-stage-0123")).unwrap();
        chmod(&dest.join("d"), 0o555);

        let state = base.join("state");
        let mut store = DiskStore::new(state.clone()).unwrap();
        assert!(state.is_dir());
        transfer(&mut store, 7, &src, &dest, &m);
        let stage = store.stage_dir(7).unwrap();
        assert_eq!(stage, dest.join(stage_name(&m)));
        assert!(stage.is_dir());
        // nothing outside the stage changed yet
        assert_eq!(std::fs::read(dest.join("d/small")).unwrap(), b"stale content");
        assert!(dest.join("sub").symlink_metadata().unwrap().file_type().is_symlink());

        let (files, bytes) = store.publish(7, Some("data.done"), false).unwrap();
        assert_eq!((files, bytes), (m.files() as u64, m.bytes()));
        assert!(!stage.exists());
        assert!(store.stage_dir(7).is_none());
        assert_eq!(std::fs::read_to_string(dest.join("data.done")).unwrap().lines().next(), Some("transfer=7"));
        assert_eq!(snapshot(&dest, &["data.done", "old.txt", ".wugui-stage-0123"]), snapshot(&src, &[]));
        assert!(dest.join("old.txt").exists());
        assert!(dest.join(".wugui-stage-0123").is_dir());
        // the planted symlink was replaced, not written through
        assert!(names(&outside).is_empty());
        assert!(dest.join("sub").symlink_metadata().unwrap().is_dir());
        assert_eq!(std::fs::read_link(dest.join("d/link")).unwrap(), Path::new("e/big.bin"));
        let md = std::fs::symlink_metadata(src.join("d/link")).unwrap();
        let got = std::fs::symlink_metadata(dest.join("d/link")).unwrap();
        assert_eq!((got.mtime(), got.mtime_nsec()), (md.mtime(), md.mtime_nsec()));

        // again with mirror: the extra file goes, the flag file and other stages stay
        let mut store = DiskStore::new(state).unwrap();
        transfer(&mut store, 8, &src, &dest, &m);
        store.publish(8, Some("data.done"), true).unwrap();
        assert!(!dest.join("old.txt").exists());
        assert_eq!(std::fs::read_to_string(dest.join("data.done")).unwrap().lines().next(), Some("transfer=8"));
        assert_eq!(snapshot(&dest, &["data.done", ".wugui-stage-0123"]), snapshot(&src, &[]));
        cleanup(&base);
    }

    #[test]
    fn delta_reuses_what_the_published_copy_holds() {
        let base = scratch("delta");
        let (src, dest, outside) = (base.join("src"), base.join("dest"), base.join("outside"));
        std::fs::create_dir_all(&src).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        let edited = crate::testutil::noise(40 << 10, 1);
        write(&src.join("edited.bin"), &edited, 0o644);
        write(&src.join("grown.log"), &crate::testutil::noise(10 << 10, 2), 0o644);
        write(&src.join("same.bin"), &crate::testutil::noise(40 << 10, 3), 0o644);
        let m1 = walk(&src, &[], 4096).unwrap().manifest;
        let mut store = DiskStore::new(base.join("state")).unwrap();
        transfer(&mut store, 1, &src, &dest, &m1);
        store.publish(1, None, false).unwrap();
        let v1: HashMap<String, Vec<u8>> = ["edited.bin", "grown.log", "same.bin"]
            .iter()
            .map(|n| (n.to_string(), std::fs::read(dest.join(n)).unwrap()))
            .collect();

        // Version 2: one 4K range edited in place, a log appended to, a new file, and a file
        // whose old copy is a planted symlink to identical bytes outside the dest.
        let mut e2 = edited.clone();
        e2[20_000..24_000].copy_from_slice(&crate::testutil::noise(4000, 9));
        write(&src.join("edited.bin"), &e2, 0o644);
        let mut grown = v1["grown.log"].clone();
        grown.extend(crate::testutil::noise(10 << 10, 4));
        write(&src.join("grown.log"), &grown, 0o644);
        write(&src.join("new.txt"), b"new", 0o644);
        let evil = crate::testutil::noise(8192, 5);
        write(&src.join("evil.bin"), &evil, 0o644);
        write(&outside.join("evil.bin"), &evil, 0o644);
        std::os::unix::fs::symlink(outside.join("evil.bin"), dest.join("evil.bin")).unwrap();
        let m2 = walk(&src, &[], 4096).unwrap().manifest;
        let mut fs = FsSource::new(src.clone(), &m2);
        let mut md5 = HashMap::new();
        let mut want = Vec::new();
        for i in 0..m2.blocks() {
            let b = m2.block(i).unwrap();
            let (body, sum) = fs.block(&b, Verify::Md5, false).unwrap();
            let crate::proto::Sum::Md5(d) = sum else { panic!("md5") };
            md5.insert(i, d);
            // The oracle: every piece of the block is at the same place in a version 1 file.
            let data = crate::sendfile::body_bytes(&body).unwrap();
            want.push(m2.segments(&b).iter().all(|s| {
                let old = v1.get(&m2.entries()[s.entry as usize].path);
                let (from, to) = (s.offset as usize, s.offset as usize + s.len as usize);
                old.is_some_and(|o| o.len() >= to && o[from..to] == data[s.at as usize..s.at as usize + s.len as usize])
            }));
        }
        // Quick phase: blocks wholly in same.bin (same size and mtime) are taken unread.
        let mut held = store.prepare(2, dest.to_str().unwrap(), &m2, true).unwrap();
        let same = m2.entries().iter().position(|e| e.path == "same.bin").unwrap() as u32;
        let (first, n) = m2.entry_blocks(same);
        assert!((first + 1..first + n - 1).all(|i| held[i as usize]));
        // Check phase: the master's MD5s for the candidates in changed files.
        let check = store.delta_candidates(2);
        assert!(!check.is_empty() && check.iter().all(|&i| !held[i as usize]));
        let sums: Vec<(u64, [u8; 16])> = check.iter().map(|&i| (i, md5[&i])).collect();
        for i in store.delta_check(2, &sums) {
            assert!(check.contains(&i) && !held[i as usize]);
            held[i as usize] = true;
        }
        assert_eq!(held, want);
        let kept = held.iter().filter(|h| **h).count();
        assert!(kept >= 18 && kept < held.len(), "kept {kept} of {}", held.len());
        // the symlinked old copy was not read
        let (first, n) = m2.entry_blocks(m2.entries().iter().position(|e| e.path == "evil.bin").unwrap() as u32);
        assert!((first..first + n).any(|i| !held[i as usize]));

        for i in (0..m2.blocks()).filter(|&i| !held[i as usize]) {
            let b = m2.block(i).unwrap();
            let (body, _) = fs.block(&b, Verify::None, true).unwrap();
            store.write_block(2, &b, &crate::sendfile::body_bytes(&body).unwrap()).unwrap();
        }
        store.seal(2).unwrap();
        store.publish(2, None, false).unwrap();
        assert_eq!(snapshot(&dest, &[]), snapshot(&src, &[]));
        assert_eq!(std::fs::read(outside.join("evil.bin")).unwrap(), evil);
        cleanup(&base);
    }

    #[test]
    fn planted_symlinks_are_not_followed() {
        let base = scratch("plant");
        let (src, dest, outside) = (base.join("src"), base.join("dest"), base.join("outside"));
        std::fs::create_dir_all(src.join("sub/deeper")).unwrap();
        write(&src.join("sub/deeper/f"), b"data", 0o644);
        write(&src.join("g"), b"gg", 0o644);
        std::fs::create_dir_all(&outside).unwrap();
        write(&outside.join("g"), b"precious", 0o644);
        let m = walk(&src, &[], 3).unwrap().manifest;
        std::fs::create_dir_all(&dest).unwrap();
        std::os::unix::fs::symlink(&outside, dest.join("sub")).unwrap();
        std::os::unix::fs::symlink(outside.join("g"), dest.join("g")).unwrap();

        let mut store = DiskStore::new(base.join("state")).unwrap();
        transfer(&mut store, 1, &src, &dest, &m);
        store.publish(1, None, false).unwrap();
        assert_eq!(names(&outside), ["g"]);
        assert_eq!(std::fs::read(outside.join("g")).unwrap(), b"precious");
        assert_eq!(std::fs::read(dest.join("sub/deeper/f")).unwrap(), b"data");
        assert!(dest.join("g").symlink_metadata().unwrap().is_file());
        assert_eq!(snapshot(&dest, &[]), snapshot(&src, &[]));

        // a symlink planted as the stage dir is replaced too
        let m2 = walk(&src, &[], 5).unwrap().manifest;
        std::os::unix::fs::symlink(&outside, dest.join(stage_name(&m2))).unwrap();
        store.prepare(2, dest.to_str().unwrap(), &m2, false).unwrap();
        assert_eq!(names(&outside), ["g"]);
        assert!(dest.join(stage_name(&m2)).symlink_metadata().unwrap().is_dir());
        store.abort(2, false);
        assert!(!dest.join(stage_name(&m2)).exists());
        cleanup(&base);
    }

    /// `cargo test --release --lib -- --ignored many_files --nocapture`
    #[test]
    #[ignore]
    fn many_files() {
        let base = scratch("many");
        let (src, dest) = (base.join("src"), base.join("dest"));
        for d in 0..1000 {
            std::fs::create_dir_all(src.join(format!("d{d}"))).unwrap();
            for f in 0..100 {
                std::fs::write(src.join(format!("d{d}/f{f}")), format!("{d}/{f}")).unwrap();
            }
        }
        let t = std::time::Instant::now();
        let m = walk(&src, &[regex::Regex::new("nomatch$").unwrap()], 4096).unwrap().manifest;
        eprintln!("walk {} entries: {:?}", m.entries().len(), t.elapsed());
        let mut store = DiskStore::new(base.join("state")).unwrap();
        let t = std::time::Instant::now();
        store.prepare(1, dest.to_str().unwrap(), &m, false).unwrap();
        eprintln!("prepare: {:?}", t.elapsed());
        let t = std::time::Instant::now();
        let mut fs = FsSource::new(src.to_path_buf(), &m);
        for i in 0..m.blocks() {
            let b = m.block(i).unwrap();
            let (body, _) = fs.block(&b, Verify::Md5, true).unwrap();
            let buf = crate::sendfile::body_bytes(&body).unwrap();
            store.write_block(1, &b, &buf).unwrap();
        }
        eprintln!("read+write: {:?}", t.elapsed());
        let t = std::time::Instant::now();
        store.seal(1).unwrap();
        eprintln!("seal: {:?}", t.elapsed());
        let t = std::time::Instant::now();
        store.publish(1, Some("done"), true).unwrap();
        eprintln!("publish: {:?}", t.elapsed());
        cleanup(&base);
    }

    #[test]
    fn abort_leaves_the_old_files() {
        let base = scratch("abort");
        let (src, dest) = (base.join("src"), base.join("dest"));
        std::fs::create_dir(&src).unwrap();
        let m = source(&src);
        std::fs::create_dir_all(dest.join("d")).unwrap();
        write(&dest.join("d/small"), b"old", 0o644);
        let before = snapshot(&dest, &[]);

        let mut store = DiskStore::new(base.join("state")).unwrap();
        let d = dest.to_str().unwrap();
        store.prepare(3, d, &m, false).unwrap();
        let b = m.block(0).unwrap();
        store.write_block(3, &b, &vec![1u8; b.len as usize]).unwrap();
        assert!(store.write_block(3, &b, &[1u8; 3]).unwrap_err().contains("expected"));
        assert!(store.seal(3).unwrap_err().contains("missing"));
        assert!(store.publish(3, None, false).is_err());
        // keep: the stage stays for a resume
        store.abort(3, true);
        assert!(dest.join(stage_name(&m)).is_dir());
        assert!(store.write_block(3, &b, &vec![1u8; b.len as usize]).is_err());
        // the same manifest finds the same stage and keeps what is there
        store.prepare(4, d, &m, false).unwrap();
        let seg = m.segments(&b)[0];
        let staged = std::fs::read(dest.join(stage_name(&m)).join(&m.entries()[seg.entry as usize].path)).unwrap();
        assert_eq!(&staged[..seg.len as usize], &vec![1u8; seg.len as usize][..]);
        store.abort(4, false);
        assert_eq!(names(&dest), ["d"]);
        assert_eq!(snapshot(&dest, &[]), before);
        cleanup(&base);
    }
}
