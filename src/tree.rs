//! The master's side of the disk: walking the source tree into a [`Manifest`], and reading
//! its blocks back for sending ([`FsSource`]).
//!
//! Exclude patterns are regexes *searched* (unanchored) in the path relative to the root, with
//! `/` separators. A directory is tested both as `dir` and as `dir/`, so `(^|/)cache/` drops
//! the directory `cache` itself along with its subtree; a dropped directory is not descended.
//! Paths are bytes (a name need not be UTF-8), and so are the patterns (`regex::bytes`): `.`
//! and `[^/]` match one UTF-8 character, `(?-u:\xff)` the byte 0xff.
//!
//! Hard links: files of one inode (nlink > 1) within the walked tree become one `File` (the
//! first path in byte order) and `Link` entries naming it.
//!
//! An unreadable file or directory (open or read fails) fails the walk, unless
//! `WalkOptions::skip_unreadable`: then it is left out and listed in `Walk::unreadable`.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use std::os::unix::ffi::{OsStrExt, OsStringExt};

use regex::bytes::Regex;

use crate::logging::kv_quote;

use crate::proto::manifest::{Entry, Kind, RelPath};
use crate::proto::{BlockRef, Body, Manifest, Source, SourceError, Sum, Verify};
use crate::store::files::{self, OpenFiles};
use crate::work::Workers;

/// What [`walk`] found.
#[derive(Debug)]
pub struct Walk {
    pub manifest: Manifest,
    /// (relative path, why) for every device, fifo or socket left out.
    pub skipped: Vec<(RelPath, String)>,
    /// (relative path, error) for every file or directory left out because it could not be
    /// read (only with `WalkOptions::skip_unreadable`).
    pub unreadable: Vec<(RelPath, String)>,
    /// How many entries an exclude pattern dropped (a dropped directory counts once).
    pub excluded: u64,
}

/// Compiles exclude patterns; the error names the pattern that does not compile.
pub fn compile_excludes(patterns: &[String]) -> Result<Vec<Regex>, String> {
    patterns.iter().map(|p| Regex::new(p).map_err(|e| bad_pattern(p, &e))).collect()
}

/// One line: what the regex parser found, that patterns are regexes, and the way to a glob.
fn bad_pattern(p: &str, e: &regex::Error) -> String {
    let why = e.to_string();
    let why = why.lines().last().unwrap_or_default().trim_start_matches("error: ");
    format!(
        "bad exclude pattern {p:?}: {why}. Patterns are regexes searched in each path, as grep does \
         (not shell globs); for a glob use --exclude-glob {:?}",
        p
    )
}

fn excluded(excludes: &[Regex], rel: &[u8], is_dir: bool) -> bool {
    if excludes.is_empty() {
        return false;
    }
    if excludes.iter().any(|r| r.is_match(rel)) {
        return true;
    }
    if is_dir {
        let slashed = [rel, b"/"].concat();
        return excludes.iter().any(|r| r.is_match(&slashed));
    }
    false
}

/// How [`walk_with`] treats what it cannot read.
#[derive(Debug, Clone, Default)]
pub struct WalkOptions {
    /// Leave out unreadable files and directories (listed in `Walk::unreadable`) instead of
    /// failing the walk.
    pub skip_unreadable: bool,
    /// Test-only (`WUGUI_FAILPOINT=unreadable=PATH`): opening this relative path fails with
    /// EACCES, as an unreadable file would for a user that is not root.
    pub failpoint_unreadable: Option<Vec<u8>>,
    /// The transfer goes down chains: `block_size = auto` picks smaller blocks.
    pub chains: bool,
}

impl WalkOptions {
    fn check(&self, rel: &[u8]) -> std::io::Result<()> {
        match &self.failpoint_unreadable {
            Some(p) if p == rel => Err(std::io::Error::from_raw_os_error(nix::libc::EACCES)),
            _ => Ok(()),
        }
    }
}

fn special_kind(ft: &std::fs::FileType) -> &'static str {
    if ft.is_fifo() {
        "fifo"
    } else if ft.is_socket() {
        "socket"
    } else if ft.is_block_device() {
        "block_device"
    } else if ft.is_char_device() {
        "char_device"
    } else {
        "unknown"
    }
}

/// Opens a source file for reading without following a symlink in its last component, and
/// without blocking should it have become a fifo.
fn open_source(path: &Path) -> std::io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK | nix::libc::O_CLOEXEC)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    Ok(file)
}

/// Holes shorter than this are sent as zeros, to keep extent lists short.
const MIN_HOLE: u64 = 64 << 10;

/// The data extents of a file with holes (SEEK_DATA/SEEK_HOLE), or `None` when it has no
/// useful holes or the filesystem cannot say.
pub(crate) fn data_extents(f: &File, size: u64) -> Option<Vec<(u64, u64)>> {
    use nix::unistd::{lseek, Whence};
    let fd = std::os::fd::AsRawFd::as_raw_fd(f);
    let mut ext: Vec<(u64, u64)> = Vec::new();
    let mut at = 0u64;
    while at < size {
        let start = match lseek(fd, at as i64, Whence::SeekData) {
            Ok(o) => o as u64,
            Err(nix::errno::Errno::ENXIO) => break, // only a hole is left
            Err(_) => return None,
        };
        let end = (lseek(fd, start as i64, Whence::SeekHole).ok()? as u64).min(size);
        if end <= start {
            return None;
        }
        match ext.last_mut() {
            Some((o, l)) if start - (*o + *l) < MIN_HOLE => *l = end - *o,
            _ => ext.push((start, end - start)),
        }
        if ext.len() > crate::proto::manifest::MAX_EXTENTS {
            return None;
        }
        at = end;
    }
    let data: u64 = ext.iter().map(|e| e.1).sum();
    (data < size).then_some(ext)
}

/// Walks `root` into a manifest of `block_size` blocks, leaving out what `excludes` match.
pub fn walk(root: &Path, excludes: &[Regex], block_size: u32) -> Result<Walk, String> {
    walk_with(root, excludes, block_size, &WalkOptions::default())
}

/// [`walk`], with `opts` for what cannot be read.
pub fn walk_with(root: &Path, excludes: &[Regex], block_size: u32, opts: &WalkOptions) -> Result<Walk, String> {
    let meta = std::fs::metadata(root).map_err(|e| format!("source {}: {e}", root.display()))?;
    if !meta.is_dir() {
        return Err(format!("source {}: not a directory", root.display()));
    }
    let mut entries = Vec::new();
    let mut skipped = Vec::new();
    let mut unreadable = Vec::new();
    let mut excluded_count = 0u64;
    // (device, inode) of every file with more than one link, and its entries.
    let mut inodes: HashMap<(u64, u64), Vec<usize>> = HashMap::new();
    // (absolute path, relative path) of directories still to read.
    let mut todo: Vec<(PathBuf, RelPath)> = vec![(root.to_path_buf(), RelPath::default())];
    while let Some((dir, rel_dir)) = todo.pop() {
        let rd = std::fs::read_dir(&dir).map_err(|e| format!("source {}: {e}", shown(&dir)))?;
        for de in rd {
            let de = de.map_err(|e| format!("source {}: {e}", shown(&dir)))?;
            let abs = de.path();
            let rel = rel_dir.join(de.file_name().as_bytes());
            // DirEntry::metadata does not follow symlinks (lstat).
            let md = de.metadata().map_err(|e| format!("source {}: {e}", shown(&abs)))?;
            let ft = md.file_type();
            if excluded(excludes, rel.as_bytes(), ft.is_dir()) {
                excluded_count += 1;
                continue;
            }
            let mut sparse = None;
            let kind = if ft.is_dir() {
                // Read it now, so an unreadable one is left out whole rather than sent empty.
                if let Err(e) = opts.check(rel.as_bytes()).and_then(|()| std::fs::read_dir(&abs).map(drop)) {
                    unreadable_or_fail(opts, &mut unreadable, &abs, rel, e)?;
                    continue;
                }
                todo.push((abs.clone(), rel.clone()));
                Kind::Dir
            } else if ft.is_file() {
                let f = match opts.check(rel.as_bytes()).and_then(|()| open_source(&abs)) {
                    Ok(f) => f,
                    Err(e) => {
                        unreadable_or_fail(opts, &mut unreadable, &abs, rel, e)?;
                        continue;
                    }
                };
                // Fewer blocks than bytes: holes, which stay holes on every po.
                if md.blocks() * 512 < md.len() {
                    sparse = data_extents(&f, md.len()).map(Vec::into_boxed_slice);
                }
                if md.nlink() > 1 {
                    inodes.entry((md.dev(), md.ino())).or_default().push(entries.len());
                }
                Kind::File { size: md.len() }
            } else if ft.is_symlink() {
                let target = std::fs::read_link(&abs).map_err(|e| format!("source {}: {e}", shown(&abs)))?;
                Kind::Symlink { target: target.into_os_string().into_vec() }
            } else {
                let kind = special_kind(&ft);
                log::warn!("event=skip_special path={} kind={kind}", kv_quote(&rel.to_string()));
                skipped.push((rel, format!("{kind} skipped")));
                continue;
            };
            entries.push(Entry {
                path: rel,
                kind,
                mode: md.mode() & 0o7777,
                uid: md.uid(),
                gid: md.gid(),
                mtime: md.mtime(),
                mtime_nsec: md.mtime_nsec() as u32,
                sparse,
            });
        }
    }
    link_groups(&mut entries, inodes.into_values());
    let manifest = manifest_of(root, entries, block_size, opts.chains)?;
    Ok(Walk { manifest, skipped, unreadable, excluded: excluded_count })
}

/// `p` for people: a name that is not UTF-8 escaped as `\xNN` (see `RelPath`).
fn shown(p: &Path) -> String {
    crate::proto::relpath::show(p.as_os_str().as_bytes())
}

/// Leaves out `rel`, which could not be read, with a warning, when `opts` says so; otherwise
/// the walk's error.
fn unreadable_or_fail(
    opts: &WalkOptions,
    unreadable: &mut Vec<(RelPath, String)>,
    abs: &Path,
    rel: RelPath,
    e: std::io::Error,
) -> Result<(), String> {
    if !opts.skip_unreadable {
        return Err(format!("source {}: {e} (--skip-unreadable leaves such files out)", shown(abs)));
    }
    log::warn!("event=skip_unreadable path={} error={}", kv_quote(&rel.to_string()), kv_quote(&e.to_string()));
    unreadable.push((rel, e.to_string()));
    Ok(())
}

/// Makes every group of paths of one inode a `File` (the first path in byte order) and
/// `Link`s naming it.
fn link_groups(entries: &mut [Entry], groups: impl Iterator<Item = Vec<usize>>) {
    for group in groups.filter(|g| g.len() > 1) {
        let first = *group.iter().min_by(|a, b| entries[**a].path.cmp(&entries[**b].path)).expect("not empty");
        let to = entries[first].path.clone();
        for i in group.into_iter().filter(|i| *i != first) {
            entries[i].kind = Kind::Link { to: to.clone() };
            entries[i].sparse = None;
        }
    }
}

/// The manifest of the walked `entries`, within the wire's limits.
fn manifest_of(root: &Path, entries: Vec<Entry>, block_size: u32, chains: bool) -> Result<Manifest, String> {
    if entries.len() > crate::proto::wire::MAX_ENTRIES {
        return Err(format!(
            "source {}: {} entries, over the limit {}",
            root.display(),
            entries.len(),
            crate::proto::wire::MAX_ENTRIES
        ));
    }
    // block_size 0 is the class's `auto`: chosen from the tree's size.
    let block_size = match block_size {
        0 => {
            let bytes = entries.iter().map(|e| if let Kind::File { size } = e.kind { size } else { 0 }).sum();
            crate::proto::class::auto_block_size_for(bytes, chains)
        }
        b => b,
    };
    Manifest::new(block_size, entries).map_err(|e| format!("source {}: {e}", root.display()))
}

/// How many source files [`FsSource`] keeps open.
const OPEN_FILES: usize = 64;

/// The master's [`Source`]: reads blocks from the tree a [`walk`] described.
pub struct FsSource {
    root: PathBuf,
    manifest: Manifest,
    open: OpenFiles<Arc<OwnedFd>>,
    ahead: Option<Ahead>,
}

/// A block as read, and its checksum.
type Read = Result<(Body, Sum), SourceError>;

/// Checksums computed ahead of sending, on worker threads (`Source::ahead`): the loop sends
/// (`sendfile`) while the workers hash the blocks it will send next.
struct Ahead {
    pool: Workers<Read>,
    /// Blocks handed to the pool, and blocks done, by `ahead_key`; at most `limit` together,
    /// each holding its body (descriptors, or the bytes of a block of small files).
    running: HashSet<u64>,
    done: HashMap<u64, Read>,
    /// Keys in `done` whose checksum `Source::ready` has not reported yet.
    fresh: Vec<u64>,
    limit: usize,
}

fn ahead_key(index: u64, verify: Verify) -> u64 {
    index << 3 | verify as u64
}

impl FsSource {
    pub fn new(root: PathBuf, manifest: &Manifest) -> FsSource {
        FsSource { root, manifest: manifest.clone(), open: OpenFiles::new(OPEN_FILES), ahead: None }
    }

    fn changed(&self, path: &RelPath, why: String) -> SourceError {
        SourceError::Changed { path: path.to_string(), why }
    }

    /// Checksums of the blocks named by `Source::ahead` are computed on `workers` threads.
    pub fn with_workers(mut self, workers: usize) -> std::io::Result<FsSource> {
        let threads = workers.max(1);
        let limit = (2 * threads).max(crate::proto::disk::AHEAD_BYTES / self.manifest.block_size.max(1) as usize);
        let pool = Workers::new(threads, limit, || {})?;
        self.ahead = Some(Ahead { pool, running: HashSet::new(), done: HashMap::new(), fresh: Vec::new(), limit });
        Ok(self)
    }

    /// Block `b` as the master reads it (descriptors, or bytes when it spans many files).
    fn body(&mut self, b: &BlockRef, sendfile: bool) -> Result<(Body, String), SourceError> {
        let segments = self.manifest.segments(b);
        let (root, manifest, open) = (&self.root, &self.manifest, &mut self.open);
        let path = |entry: u32| &manifest.entries()[entry as usize].path;
        let io = |what: &str, entry: u32, e: std::io::Error| SourceError::Io {
            what: format!("{what} {}", path(entry)),
            error: e.to_string(),
        };
        let file = |entry: u32| {
            let open_one = || open_source(&root.join(path(entry))).map(|f| Arc::new(OwnedFd::from(f)));
            open.get(entry, open_one).cloned().map_err(|e| io("open", entry, e))
        };
        let body = files::body_of(b.len as u64, &segments, sendfile, file, |entry, e| io("read", entry, e))?;
        Ok((body, format!("read {}", path(segments[0].entry))))
    }

    /// The read of block `index` that `ahead` started, once done (waiting for it if it
    /// runs); `None` when none was started.
    fn take_ahead(&mut self, index: u64, verify: Verify) -> Option<Read> {
        let a = self.ahead.as_mut()?;
        let key = ahead_key(index, verify);
        loop {
            if let Some(read) = a.done.remove(&key) {
                return Some(read);
            }
            // Not started, or (never: each job ends with an outcome) nothing left to wait for.
            if !a.running.contains(&key) || !a.collect(true) {
                return None;
            }
        }
    }
}

impl Ahead {
    /// Moves finished reads to `done`; with `wait`, waits for one first. False when none came.
    fn collect(&mut self, wait: bool) -> bool {
        let mut next = if wait { self.pool.wait() } else { self.pool.collect() };
        let came = next.is_some();
        while let Some((key, outcome)) = next {
            self.running.remove(&key);
            let read = outcome.unwrap_or_else(|why| {
                Err(SourceError::Io { what: "checksum".into(), error: format!("worker panicked: {why}") })
            });
            if read.is_ok() {
                self.fresh.push(key);
            }
            self.done.insert(key, read);
            next = self.pool.collect();
        }
        came
    }
}

impl Source for FsSource {
    fn block(&mut self, b: &BlockRef, verify: Verify, sendfile: bool) -> Result<(Body, Sum), SourceError> {
        if verify != Verify::None {
            if let Some(read) = self.take_ahead(b.index, verify) {
                return read.map(|(body, sum)| (files::with_sendfile(body, sendfile), sum));
            }
        }
        let (body, what) = self.body(b, sendfile)?;
        let sum = files::checksum(&body, verify).map_err(|e| SourceError::Io { what, error: e.to_string() })?;
        Ok((body, sum))
    }

    /// Starts reads of `blocks` on the workers, in order, as long as fewer than `limit` are
    /// out or waiting to be taken (once no more than half are). Reads done for blocks that are
    /// no longer among the next ones are dropped (a block asked for later is read again).
    fn ahead(&mut self, blocks: &[BlockRef], verify: Verify, sendfile: bool) {
        let Some(a) = self.ahead.as_mut().filter(|_| verify != Verify::None) else { return };
        a.collect(false); // whatever is done by now
        let keys: HashSet<u64> = blocks.iter().map(|b| ahead_key(b.index, verify)).collect();
        a.done.retain(|k, _| keys.contains(k));
        let done = &a.done;
        a.fresh.retain(|k| done.contains_key(k));
        // Refilled in batches, once half is taken: a worker woken for one block at a time
        // costs the master more (futex wake, and the worker's sleep) than the checksum saves.
        if a.running.len() + a.done.len() > a.limit / 2 {
            return;
        }
        for b in blocks {
            let a = self.ahead.as_ref().expect("checked above");
            let key = ahead_key(b.index, verify);
            if a.running.contains(&key) || a.done.contains_key(&key) {
                continue;
            }
            if a.running.len() + a.done.len() >= a.limit {
                break;
            }
            let read = self.body(b, sendfile);
            let a = self.ahead.as_mut().expect("checked above");
            let (body, what) = match read {
                Ok(r) => r,
                Err(e) => {
                    a.done.insert(key, Err(e));
                    continue;
                }
            };
            let job = Box::new(move || {
                let sum = files::checksum(&body, verify).map_err(|e| SourceError::Io { what, error: e.to_string() })?;
                Ok((body, sum))
            });
            if a.pool.submit(key, job).is_err() {
                break;
            }
            a.running.insert(key);
        }
    }

    fn ready(&mut self) -> Vec<(u64, Sum)> {
        let Some(a) = self.ahead.as_mut() else { return Vec::new() };
        a.collect(false);
        let (fresh, done) = (std::mem::take(&mut a.fresh), &a.done);
        fresh.into_iter().filter_map(|k| Some((k >> 3, done.get(&k)?.as_ref().ok()?.1))).collect()
    }

    fn unchanged(&mut self, entry: u32) -> Result<(), SourceError> {
        let Some(e) = self.manifest.entries().get(entry as usize) else {
            return Err(SourceError::Refused(format!("no entry {entry}")));
        };
        let Kind::File { size } = e.kind else { return Ok(()) };
        let md =
            std::fs::symlink_metadata(self.root.join(&e.path)).map_err(|err| self.changed(&e.path, err.to_string()))?;
        if !md.is_file() {
            return Err(self.changed(&e.path, "no longer a regular file".into()));
        }
        let (now_size, now_sec, now_nsec) = (md.len(), md.mtime(), md.mtime_nsec() as u32);
        if now_size != size || now_sec != e.mtime || now_nsec != e.mtime_nsec {
            let why =
                format!("size {size}->{now_size}, mtime {}.{:09}->{now_sec}.{now_nsec:09}", e.mtime, e.mtime_nsec);
            return Err(self.changed(&e.path, why));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;
    use std::os::unix::fs::PermissionsExt;

    fn write(p: &Path, data: &[u8], mode: u32) {
        std::fs::write(p, data).unwrap();
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    fn paths(w: &Walk) -> Vec<&str> {
        w.manifest.entries().iter().map(|e| e.path.to_str().unwrap()).collect()
    }

    #[test]
    fn walks_a_tree() {
        let tmp = TempDir::new("walk");
        let root = tmp.path();
        std::fs::create_dir_all(root.join("d/e")).unwrap();
        std::fs::create_dir(root.join("empty")).unwrap();
        write(&root.join("d/e/f.bin"), &[7u8; 10], 0o750);
        write(&root.join("top"), b"hello", 0o600);
        write(&root.join("zero"), b"", 0o644);
        std::os::unix::fs::symlink("../top", root.join("d/link")).unwrap();
        nix::unistd::mkfifo(&root.join("pipe"), nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
        std::fs::set_permissions(root.join("d"), std::fs::Permissions::from_mode(0o750)).unwrap();

        let w = walk(root, &[], 4).unwrap();
        assert_eq!(paths(&w), ["d", "d/e", "d/e/f.bin", "d/link", "empty", "top", "zero"]);
        assert_eq!(w.skipped, vec![("pipe".into(), "fifo skipped".to_string())]);
        assert_eq!(w.excluded, 0);
        let m = &w.manifest;
        let by = |p: &str| m.entries().iter().find(|e| e.path == p).unwrap().clone();
        assert_eq!(by("d").kind, Kind::Dir);
        assert_eq!(by("d").mode, 0o750);
        assert_eq!(by("d/e/f.bin").kind, Kind::File { size: 10 });
        assert_eq!(by("d/e/f.bin").mode, 0o750);
        assert_eq!(by("top").mode, 0o600);
        assert_eq!(by("d/link").kind, Kind::Symlink { target: "../top".into() });
        let md = std::fs::symlink_metadata(root.join("top")).unwrap();
        assert_eq!((by("top").mtime, by("top").mtime_nsec), (md.mtime(), md.mtime_nsec() as u32));
        // 10 bytes then 5 bytes make one stream of 15: 4 blocks of 4
        assert_eq!(m.blocks(), 4);
        assert_eq!(m.bytes(), 15);
    }

    #[test]
    fn excludes() {
        let tmp = TempDir::new("excl");
        let root = tmp.path();
        std::fs::create_dir_all(root.join("cache/deep")).unwrap();
        std::fs::create_dir_all(root.join("keep/cache")).unwrap();
        std::fs::create_dir_all(root.join("skipme/sub")).unwrap();
        std::fs::create_dir_all(root.join("mycache")).unwrap();
        for f in ["a.txt", "data.txt", "b.txt", "keep/x", "keep/cache/y", "cache/deep/z", "skipme/sub/w", "mycache/v"] {
            write(&root.join(f), b"x", 0o644);
        }
        let ex = compile_excludes(&["a.txt".into(), "(^|/)cache/".into(), "^skip".into()]).unwrap();
        let w = walk(root, &ex, 1024).unwrap();
        assert_eq!(paths(&w), ["b.txt", "keep", "keep/x", "mycache", "mycache/v"]);
        // a.txt, data.txt, cache, keep/cache, skipme
        assert_eq!(w.excluded, 5);

        let err = compile_excludes(&["ok".into(), "(open".into()]).unwrap_err();
        assert!(err.contains("(open"), "{err}");
    }

    #[test]
    fn errors_name_the_path() {
        let tmp = TempDir::new("err");
        let root = tmp.path();
        let missing = root.join("nope");
        let err = walk(&missing, &[], 4).unwrap_err();
        assert!(err.contains(&missing.display().to_string()) && err.contains("No such file"), "{err}");
        write(&root.join("f"), b"x", 0o644);
        let err = walk(&root.join("f"), &[], 4).unwrap_err();
        assert!(err.contains("not a directory"), "{err}");
    }

    #[test]
    fn source_reads_blocks() {
        let tmp = TempDir::new("src");
        let root = tmp.path();
        std::fs::create_dir(root.join("d")).unwrap();
        let data: Vec<u8> = (0..10u8).collect();
        write(&root.join("d/f"), &data, 0o644);
        write(&root.join("g"), b"abc", 0o644);
        let w = walk(root, &[], 4).unwrap();
        let m = &w.manifest;
        let mut src = FsSource::new(root.to_path_buf(), m);
        let mut got = Vec::new();
        for i in 0..m.blocks() {
            let b = m.block(i).unwrap();
            let (body, sum) = src.block(&b, Verify::Md5, true).unwrap();
            assert!(matches!(body, Body::File { sendfile: true, .. } | Body::Files { sendfile: true, .. }));
            let buf = files::body_bytes(&body).unwrap();
            assert_eq!(buf.len(), b.len as usize);
            assert_eq!(sum, Sum::of(Verify::Md5, &buf));
            got.extend_from_slice(&buf);
        }
        let mut want = data.clone();
        want.extend_from_slice(b"abc");
        assert_eq!(got, want);
        let b = m.block(0).unwrap();
        let (_, sum) = src.block(&b, Verify::Crc32, false).unwrap();
        assert_eq!(sum, Sum::of(Verify::Crc32, &data[..4]));
        for i in 0..m.entries().len() as u32 {
            src.unchanged(i).unwrap();
        }
        // grow a file: unchanged() notices
        write(&root.join("g"), b"abcd", 0o644);
        let g = m.entries().iter().position(|e| e.path == "g").unwrap() as u32;
        let err = src.unchanged(g).unwrap_err().to_string();
        assert!(err.contains("g changed") && err.contains("size 3->4"), "{err}");
        // a file swapped for a symlink is refused
        std::fs::remove_file(root.join("g")).unwrap();
        std::os::unix::fs::symlink("d/f", root.join("g")).unwrap();
        let mut fresh = FsSource::new(root.to_path_buf(), m);
        assert!(fresh.block(&m.block(m.blocks() - 1).unwrap(), Verify::None, true).is_err());
    }
}

#[cfg(test)]
mod ahead_tests {
    use super::*;
    use crate::testutil::TempDir;

    /// Blocks hinted with `ahead` are hashed on the workers and come back from `block` as they
    /// would have been read there: the same checksums, bodies and errors, in any order.
    #[test]
    fn checksums_computed_ahead_are_the_ones_read_in_place() {
        let tmp = TempDir::new("ahead");
        let root = tmp.path();
        std::fs::write(root.join("big"), crate::testutil::noise(40 << 10, 7)).unwrap();
        for i in 0..40 {
            std::fs::write(root.join(format!("s{i:02}")), crate::testutil::noise(100, i)).unwrap();
        }
        let m = walk(root, &[], 8192).unwrap().manifest;
        let mut plain = FsSource::new(root.to_path_buf(), &m);
        let mut ahead = FsSource::new(root.to_path_buf(), &m).with_workers(2).unwrap();
        let blocks: Vec<BlockRef> = (0..m.blocks()).map(|i| m.block(i).unwrap()).collect();
        for verify in [Verify::Md5, Verify::Blake3] {
            // Hinted in order, asked for backwards, one not hinted at all.
            ahead.ahead(&blocks[1..], verify, true);
            for b in blocks.iter().rev() {
                let (want_body, want) = plain.block(b, verify, false).unwrap();
                let (body, sum) = ahead.block(b, verify, false).unwrap();
                assert_eq!(sum, want, "block {} {verify}", b.index);
                assert_eq!(files::body_bytes(&body).unwrap(), files::body_bytes(&want_body).unwrap());
                assert!(!matches!(body, Body::File { sendfile: true, .. }), "sendfile as asked for now");
            }
        }
        let a = ahead.ahead.as_ref().unwrap();
        assert!(a.running.is_empty() && a.done.is_empty(), "everything hinted was taken");
        // A file gone before its block is read: the error comes back from `block`.
        std::fs::remove_file(root.join("s39")).unwrap();
        let mut fresh = FsSource::new(root.to_path_buf(), &m).with_workers(1).unwrap();
        let last = *blocks.last().unwrap();
        fresh.ahead(&[last], Verify::Md5, true);
        let err = fresh.block(&last, Verify::Md5, true).unwrap_err();
        assert!(err.to_string().contains("s39"), "{err}");
    }

    /// What is read ahead is bounded by bytes: 16 MiB blocks hold at most two a worker, small
    /// blocks up to `AHEAD_BYTES` of them; `ready` reports each done checksum once and the
    /// body stays for `block`.
    #[test]
    fn reading_ahead_holds_a_bounded_number_of_bodies() {
        let tmp = TempDir::new("ahead-bound");
        let root = tmp.path();
        let f = std::fs::File::create(root.join("sparse")).unwrap();
        f.set_len(10 << 24).unwrap(); // ten blocks of 16 MiB, all holes
        let m = walk(root, &[], 16 << 20).unwrap().manifest;
        let mut big = FsSource::new(root.to_path_buf(), &m).with_workers(2).unwrap();
        let blocks: Vec<BlockRef> = (0..m.blocks()).map(|i| m.block(i).unwrap()).collect();
        assert_eq!(blocks.len(), 10);
        big.ahead(&blocks, Verify::Crc32, true);
        let a = big.ahead.as_ref().unwrap();
        assert_eq!(a.limit, 4);
        assert_eq!(a.running.len() + a.done.len(), 4, "two blocks a worker, not all ten");
        let mut seen = Vec::new();
        while seen.len() < 4 {
            seen.extend(big.ready());
        }
        let (want_body, want) = FsSource::new(root.to_path_buf(), &m).block(&blocks[0], Verify::Crc32, false).unwrap();
        assert_eq!(seen.iter().find(|s| s.0 == 0).map(|s| s.1), Some(want));
        assert!(big.ready().is_empty(), "each checksum is reported once");
        let (body, sum) = big.block(&blocks[0], Verify::Crc32, false).unwrap();
        assert_eq!((sum, body.len()), (want, want_body.len()));
        // 64 KiB blocks: 8 MiB of them.
        let small = walk(root, &[], 64 << 10).unwrap().manifest;
        let src = FsSource::new(root.to_path_buf(), &small).with_workers(2).unwrap();
        assert_eq!(src.ahead.as_ref().unwrap().limit, 128);
    }
}
