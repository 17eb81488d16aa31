//! Dry run: what a push of a manifest would change in a dest, found without writing anything
//! (no stage, no dest, no record). Entries are compared as `prepare` and delta see them: a
//! file of the same size and mtime is unchanged; a changed file's blocks at the same place may
//! still be in the published copy, which the master's digests decide (`preview_check`), so the
//! bytes said to travel are delta-aware. Bounded like a real offer: the manifest is already
//! bounded, the mirror walk stops after `MAX_WALK` entries, and reading the old copy stops at
//! the reuse budget.
//!
//! A stage that would not fit the dest's free space refuses the dry run as it would the push
//! (stale stages the real offer could remove first are not counted as free).
//!
//! With `mirror`, other classes' dests below this one are kept, as publish keeps them.
//!
//! Not told apart: attribute-only changes (mode, owner), and sparse holes (counted as bytes).

use std::collections::HashSet;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::FileExt;

use nix::fcntl::OFlag;

use super::at::{is_dir, is_file, list, lstat_at, open_file_path, open_parent, split};
use super::delta::Stop;
use super::{DiskStore, STAGE_PREFIX};
use crate::proto::checksum::digest;
use crate::proto::manifest::{Entry, Kind};
use crate::proto::msg::{Digest, Preview, PreviewKind, MAX_PREVIEW_ITEMS};
use crate::proto::{Manifest, StoreError};

/// Entries of the dest a mirror preview visits at most.
const MAX_WALK: usize = 1_000_000;

/// What an entry would become.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Change {
    Same,
    Create,
    Modify,
}

impl DiskStore {
    /// Opens `dest` without creating it: `None` when it is not there yet.
    fn dest_if_any(&self, dest: &str) -> Result<Option<OwnedFd>, StoreError> {
        match self.roots.open(dest, false) {
            Ok(fd) => Ok(Some(fd)),
            Err(StoreError::Refused(e)) => Err(StoreError::Refused(e)),
            Err(_) => Ok(None),
        }
    }

    /// What a scan of `dest` needs from the store, taken on the loop (quick): the dest, if
    /// there, and the other dests below it.
    pub(super) fn scan_of(&self, dest: &str) -> Result<Scan, StoreError> {
        let fd = self.dest_if_any(dest)?;
        Ok(Scan { dest: dest.to_owned(), fd, nested: self.nested_in(std::path::Path::new(dest)) })
    }
}

/// A dest to preview a push in, opened (`DiskStore::scan_of`); the scan itself (a stat of every
/// entry, the old copies read) may run off the loop.
pub(super) struct Scan {
    dest: String,
    fd: Option<OwnedFd>,
    nested: Vec<super::nested::Nested>,
}

impl Scan {
    /// The preview of `manifest` in the dest (paths listed only with `itemize`, at most
    /// `MAX_PREVIEW_ITEMS`), and the blocks of changed files the published copy may hold, for
    /// the master's digests to decide (at most `max_check`). Stops with an error once `stop`
    /// is cancelled.
    pub(super) fn scan(
        &self,
        manifest: &Manifest,
        (mirror, itemize): (bool, bool),
        max_check: usize,
        stop: Stop,
    ) -> Result<(Preview, Vec<u64>), StoreError> {
        let cancelled = || StoreError::Refused("dry run cancelled".into());
        let (dest, fd) = (self.dest.as_str(), &self.fd);
        let mut p = Preview::default();
        let item = |p: &mut Preview, kind: PreviewKind, path: &[u8]| {
            if itemize && p.items.len() < MAX_PREVIEW_ITEMS {
                p.items.push((kind, path.to_vec()));
            } else if itemize {
                p.more += 1;
            }
        };
        let entries = manifest.entries();
        let mut changes = vec![Change::Create; entries.len()];
        for (i, e) in entries.iter().enumerate() {
            if stop.cancelled() {
                return Err(cancelled());
            }
            let c = match fd {
                Some(d) => compare(d.as_fd(), e).unwrap_or(Change::Create),
                None => Change::Create,
            };
            changes[i] = c;
            let kind = match (&e.kind, c) {
                (_, Change::Same) => continue,
                (Kind::Dir, _) => PreviewKind::CreateDir,
                (Kind::Symlink { .. }, Change::Create) => PreviewKind::CreateLink,
                (Kind::Symlink { .. }, _) => PreviewKind::ChangeLink,
                (_, Change::Create) => PreviewKind::CreateFile,
                (_, _) => PreviewKind::ChangeFile,
            };
            if c == Change::Create {
                p.create += 1;
            } else {
                p.change += 1;
            }
            item(&mut p, kind, e.path.as_bytes());
        }
        // The stage would hold every created or changed file whole: the real offer refuses
        // when the dest's filesystem cannot take that, and so does the dry run.
        if let Some(d) = fd {
            let need: u64 = entries
                .iter()
                .zip(&changes)
                .filter(|(_, c)| **c != Change::Same)
                .map(|(e, _)| if let Kind::File { size } = e.kind { size } else { 0 })
                .sum();
            if let Ok(vfs) = nix::sys::statvfs::fstatvfs(d.as_fd()) {
                let free = vfs.blocks_available().saturating_mul(vfs.fragment_size());
                if need > free {
                    let what = format!("dry run: dest {dest}");
                    let error = format!("a stage of {need} bytes does not fit the {free} bytes free");
                    return Err(StoreError::NoSpace { what, error });
                }
            }
        }
        // Blocks that would travel: those touching a created or changed file. Those lying
        // wholly in files the dest holds (some changed) may be there still: to check.
        let mut check = Vec::new();
        for b in 0..manifest.blocks() {
            let Some(r) = manifest.block(b) else { break };
            let segs = manifest.segments(&r);
            if segs.iter().all(|s| changes[s.entry as usize] == Change::Same) {
                continue;
            }
            p.bytes += r.len as u64;
            if check.len() < max_check && segs.iter().all(|s| changes[s.entry as usize] != Change::Create) {
                check.push(b);
            }
        }
        if let (true, Some(d)) = (mirror, fd) {
            let names: HashSet<&[u8]> = entries.iter().map(|e| e.path.as_bytes()).collect();
            let dirs: HashSet<&[u8]> =
                entries.iter().filter(|e| e.kind == Kind::Dir).map(|e| e.path.as_bytes()).collect();
            // Other classes' dests below this one are kept by mirror, and the directories
            // that hold them are walked, as `mirror_walk` does.
            let guard = super::nested::Guard::new(&self.nested);
            let mut todo: Vec<Vec<u8>> = vec![Vec::new()];
            let mut seen = 0usize;
            while let Some(dir) = todo.pop() {
                if stop.cancelled() {
                    return Err(cancelled());
                }
                let Ok(sub) = open_parent(d.as_fd(), &dir[..]) else { continue };
                let at = sub.as_ref().map_or(d.as_fd(), |f| f.as_fd());
                for n in list(at).unwrap_or_default() {
                    seen += 1;
                    if seen > MAX_WALK {
                        break;
                    }
                    let rel = join(&dir, std::os::unix::ffi::OsStrExt::as_bytes(n.as_os_str()));
                    if dir.is_empty() && rel.starts_with(STAGE_PREFIX.as_bytes()) {
                        continue;
                    }
                    let text = std::str::from_utf8(&rel).ok();
                    if text.is_some_and(|r| guard.is_dest(r)) {
                        continue;
                    }
                    let holds = text.is_some_and(|r| guard.holds_dest(r))
                        && lstat_at(at, n.as_os_str()).ok().flatten().is_some_and(|st| is_dir(&st));
                    if dirs.contains(&rel[..]) || holds {
                        todo.push(rel);
                    } else if !names.contains(&rel[..]) {
                        p.delete += 1;
                        item(&mut p, PreviewKind::Delete, &rel);
                    }
                }
            }
        }
        Ok((p, check))
    }

    /// Of the `sums` (blocks `scan` listed, with the master's digests), those the published
    /// copy in the dest holds at the same place, read until `stop` (the reuse budget).
    pub(super) fn check(&self, manifest: &Manifest, sums: &[(u64, Digest)], stop: Stop) -> Vec<u64> {
        let Some(fd) = &self.fd else { return Vec::new() };
        let mut buf = Vec::new();
        let mut held = Vec::new();
        for &(b, want) in sums {
            if stop.now() {
                break;
            }
            let Some(r) = manifest.block(b) else { continue };
            buf.clear();
            buf.resize(r.len as usize, 0);
            let read = manifest.segments(&r).iter().try_for_each(|s| -> io::Result<()> {
                let e = &manifest.entries()[s.entry as usize];
                let f = File::from(open_file_path(fd.as_fd(), &e.path, OFlag::O_RDONLY)?);
                let to = &mut buf[s.at as usize..s.at as usize + s.len as usize];
                f.read_exact_at(to, s.offset)
            });
            if read.is_ok() && digest(&buf) == want {
                held.push(b);
            }
        }
        if stop.cancelled() {
            log::info!("event=disk_job_cancelled kind=preview_check held={}", held.len());
        }
        held
    }
}

fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut v = dir.to_vec();
    if !v.is_empty() {
        v.push(b'/');
    }
    v.extend_from_slice(name);
    v
}

/// How `e` differs from what `dest` holds at its path (symlinks are not followed).
fn compare(dest: BorrowedFd, e: &Entry) -> io::Result<Change> {
    let (parent, name) = split(&e.path);
    let dir = open_parent(dest, parent)?;
    let at = dir.as_ref().map_or(dest, |f| f.as_fd());
    let Some(st) = lstat_at(at, name)? else { return Ok(Change::Create) };
    let same_time = st.st_mtime == e.mtime && st.st_mtime_nsec as u32 == e.mtime_nsec;
    Ok(match &e.kind {
        Kind::Dir if is_dir(&st) => Change::Same,
        Kind::Dir => Change::Modify,
        Kind::File { size } if is_file(&st) && st.st_size as u64 == *size && same_time => Change::Same,
        Kind::File { .. } if is_file(&st) => Change::Modify,
        // A hard link follows the file it names, which is compared itself.
        Kind::Link { .. } if is_file(&st) => Change::Same,
        Kind::Symlink { target } if st.st_mode & nix::libc::S_IFMT == nix::libc::S_IFLNK => {
            let fd = at.as_raw_fd();
            let now = nix::fcntl::readlinkat(Some(fd), name)?;
            if std::os::unix::ffi::OsStrExt::as_bytes(now.as_os_str()) == &target[..] {
                Change::Same
            } else {
                Change::Modify
            }
        }
        _ => Change::Modify,
    })
}

#[cfg(test)]
mod tests {
    use super::super::tests::{cleanup, names, scratch, transfer, write, RETENTION};
    use super::super::DiskStore;
    use crate::proto::msg::PreviewKind;
    use crate::proto::Store;
    use crate::tree::walk;

    #[test]
    fn a_preview_writes_nothing_and_mirror_keeps_nested_dests() {
        let base = scratch("preview");
        let (src, dest) = (base.join("src"), base.join("dest"));
        std::fs::create_dir_all(src.join("d")).unwrap();
        write(&src.join("d/f"), b"one", 0o644);
        let m = walk(&src, &[], 4096).unwrap().manifest;
        let mut store = DiskStore::new(base.join("state"), vec![base.clone()], RETENTION).unwrap();
        // A dest not there yet: everything would be created, and it is still not there after.
        let (p, check) = store.preview(dest.to_str().unwrap(), &m, true, true, 100).unwrap();
        assert_eq!((p.create, p.change, p.delete, p.bytes, check.len()), (2, 0, 0, 3, 0));
        assert!(!dest.exists());
        transfer(&mut store, 1, &src, &dest, &m);
        store.publish(1, None, true).unwrap();
        // Another class's dest below this one (live), and a stray file.
        let inner = dest.join("inner");
        store.prepare(2, inner.to_str().unwrap(), &m, false).unwrap();
        write(&dest.join("stray"), b"x", 0o644);
        let before = names(&dest);
        let (p, _) = store.preview(dest.to_str().unwrap(), &m, true, true, 100).unwrap();
        assert_eq!((p.create, p.change, p.delete, p.bytes), (0, 0, 1, 0));
        assert_eq!(p.items, [(PreviewKind::Delete, b"stray".to_vec())]);
        assert_eq!(names(&dest), before, "a preview wrote in the dest");
        cleanup(&base);
    }
}
