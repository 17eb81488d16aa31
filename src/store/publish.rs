//! The end of a transfer: `seal` makes every staged entry final and durable, `publish` moves
//! the staged tree into the dest, removes what the tree lacks (mirror), sets directory
//! attributes and writes the flag file.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::time::Instant;

use nix::errno::Errno;
use nix::fcntl::{renameat, OFlag};
use nix::sys::stat::{fstat, utimensat, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::symlinkat;

use super::aside::Aside;
use super::at::{
    create_file_at, ensure_dir_at, is_dir, is_file, list, lstat_at, mode, mtime, open_dir_path, open_file_path,
    open_parent, remove_at, set_owner_attrs, split, Cursor,
};
use super::nested::Guard;
use super::staged::Staged;
use super::STAGE_PREFIX;
use crate::logging::kv_quote;
use crate::proto::manifest::{Entry, Kind, RelPath};
use crate::proto::{Published, StoreError};
use crate::sys::fd::openat;

/// `Io`, or `NoSpace` for ENOSPC, keeping the `Errno` text of today's messages.
fn errno(what: &str, e: Errno) -> StoreError {
    let (what, error) = (what.to_string(), e.to_string());
    match e {
        Errno::ENOSPC => StoreError::NoSpace { what, error },
        _ => StoreError::Io { what, error },
    }
}

impl Staged {
    /// Every block is held: gives each entry its final form, mode and mtime, then syncs.
    pub fn seal(&mut self, transfer: u64) -> Result<(), StoreError> {
        if self.missing > 0 {
            return Err(StoreError::Refused(format!(
                "seal: {} of {} blocks are missing",
                self.missing,
                self.held.len()
            )));
        }
        if let Err(why) = &self.ids {
            return Err(StoreError::Refused(why.clone()));
        }
        self.open.clear();
        let started = Instant::now();
        let stage = self.stage_fd.as_fd();
        let mut cur = Cursor::new(stage);
        for (i, e) in self.manifest.entries().iter().enumerate() {
            if self.done[i] {
                continue;
            }
            let (parent, name) = split(&e.path);
            let (owner, bits) = (self.owner_of(e), self.mode_of(e));
            let done = cur.at(parent).and_then(|dir| finish_entry(stage, dir, name, e, owner, bits));
            done.map_err(|err| StoreError::io(format!("seal {}", e.path), &err))?;
        }
        drop(cur);
        // One syncfs writes all staged data back in bulk before anything is published: with
        // 100,000 small files that is about 2 s, where an fdatasync per file took 10-30 s.
        let attrs_ms = started.elapsed().as_millis();
        if self.sync {
            nix::unistd::syncfs(self.stage_fd.as_raw_fd()).map_err(|e| errno("seal: syncfs", e))?;
        }
        log::info!(
            "event=stage_sealed transfer={transfer} finished_early={} attrs_ms={attrs_ms} sync_ms={}",
            self.done.iter().filter(|d| **d).count(),
            started.elapsed().as_millis() - attrs_ms
        );
        self.sealed = true;
        // A po that dies while it waits for COMMIT comes back holding everything.
        self.dirty = true;
        self.checkpoint_or_warn(transfer);
        Ok(())
    }

    /// Moves the sealed stage into the dest (see `Store::publish`). Every check that can fail
    /// runs before the first rename, so an error reported before `move_in` leaves the old tree
    /// exactly as it was.
    /// With `aside` (a canary), what is replaced or mirrored away is kept there for a rollback.
    pub fn publish(
        &mut self,
        transfer: u64,
        flag_file: Option<&str>,
        mirror: bool,
        mut aside: Option<&mut Aside>,
    ) -> Result<Published, StoreError> {
        if !self.sealed {
            return Err(StoreError::Refused(format!("publish: transfer {transfer} is not sealed")));
        }
        if let Some(flag) = flag_file {
            crate::proto::manifest::check_path(flag.as_bytes())
                .map_err(|e| StoreError::Refused(format!("flag file: {e}")))?;
        }
        let (mut files, mut bytes) = (0u64, 0u64);
        for e in self.manifest.entries() {
            if let Kind::File { size } = e.kind {
                files += 1;
                bytes += size;
            }
        }
        if self.dest_matches(flag_file, mirror) {
            log::info!("event=publish_unchanged transfer={transfer} files={files} bytes={bytes}");
            self.drop_stage(transfer);
            return Ok(Published { files, bytes, unchanged: true });
        }
        self.check_dest()?;
        self.check_nested(transfer)?;
        let flag = match flag_file {
            Some(flag) => Some((flag, self.stage_flag(flag, transfer, files, bytes)?)),
            None => None,
        };
        self.move_in(transfer, aside.as_deref_mut())?;
        // Remove what the tree lacks, before directory mtimes are set.
        if mirror {
            self.mirror_walk(transfer, flag_file, true, aside.as_deref_mut())?;
        }
        self.drop_stage(transfer);
        let dest = self.dest_fd.as_fd();
        self.dir_attrs(transfer)?;
        if let Some((flag, tmp)) = flag {
            place_flag(dest, &tmp, flag, aside).map_err(|e| StoreError::io(format!("flag file {flag}"), &e))?;
        }
        let _ = nix::unistd::fsync(dest.as_raw_fd());
        Ok(Published { files, bytes, unchanged: false })
    }

    /// Removes the stage folder once the tree is in place (or was already).
    fn drop_stage(&self, transfer: u64) {
        if let Err(e) = remove_at(self.dest_fd.as_fd(), self.stage.as_str()) {
            // The tree is in place; the retention sweep removes what is left.
            log::warn!(
                "event=stage_remove_failed transfer={transfer} path={} error={}",
                kv_quote(&self.dest.join(&self.stage).display().to_string()),
                kv_quote(&e.to_string())
            );
        }
    }

    /// Before the first rename: the dest's filesystem is writable, and no directory the tree
    /// moves into is another filesystem mounted below the dest (a rename could not cross it).
    fn check_dest(&self) -> Result<(), StoreError> {
        let refuse = |why: String| Err(StoreError::Refused(format!("publish: {why}")));
        let dest = self.dest_fd.as_fd();
        let vfs = nix::sys::statvfs::fstatvfs(dest).map_err(|e| errno("publish: statvfs of the dest", e))?;
        if vfs.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY) {
            return refuse(format!("dest {} is on a read-only filesystem", self.dest.display()));
        }
        let dev = fstat(self.stage_fd.as_raw_fd()).map_err(|e| errno("publish: stat of the stage", e))?.st_dev;
        // Directories the dest lacks (or has as something else) are made new, with all below.
        let mut fresh: HashSet<&[u8]> = HashSet::new();
        let mut cur = Cursor::new(dest);
        for e in self.manifest.entries().iter().filter(|e| e.kind == Kind::Dir) {
            let (parent, name) = split(&e.path);
            if fresh.contains(parent) {
                fresh.insert(e.path.as_bytes());
                continue;
            }
            let found = cur.at(parent).and_then(|d| lstat_at(d, name));
            match found.map_err(|err| StoreError::io(format!("publish {}", e.path), &err))? {
                Some(st) if is_dir(&st) && st.st_dev != dev => {
                    return refuse(format!("{} in the dest is another filesystem's mount point", e.path))
                }
                Some(st) if is_dir(&st) => {}
                _ => {
                    fresh.insert(e.path.as_bytes());
                }
            }
        }
        Ok(())
    }

    /// Writes the flag file's content, synced, beside the stage (`<stage>.flag`: mirror and
    /// other pushes leave it alone), after checking that it can take its place once the tree
    /// is in. Returns the temporary name.
    fn stage_flag(&self, flag: &str, transfer: u64, files: u64, bytes: u64) -> Result<String, StoreError> {
        let refuse = |why: &str| Err(StoreError::Refused(format!("flag file {flag} {why}")));
        let dest = self.dest_fd.as_fd();
        let in_tree =
            |p: &[u8]| self.manifest.entries().iter().find(|e| e.path.as_bytes() == p).map(|e| e.kind == Kind::Dir);
        match in_tree(flag.as_bytes()) {
            Some(true) => return refuse("is a directory of the pushed tree"),
            Some(false) => {}
            None => {
                let (parent, name) = split(flag);
                let in_dest =
                    open_parent(dest, parent).and_then(|p| lstat_at(p.as_ref().map_or(dest, |f| f.as_fd()), name));
                match in_dest {
                    Ok(Some(st)) if is_dir(&st) => return refuse("is a directory in the dest"),
                    Ok(_) => {}
                    Err(_) if in_tree(parent) == Some(true) => {}
                    Err(_) => return refuse("has no directory to go in"),
                }
            }
        }
        let tmp = format!("{}.flag", self.stage);
        let write = || -> io::Result<()> {
            remove_at(dest, tmp.as_str())?;
            let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
            let mut f = File::from(openat(dest, tmp.as_str(), flags, mode(0o644))?);
            f.write_all(format!("transfer={transfer}\nfiles={files}\nbytes={bytes}\n").as_bytes())?;
            f.sync_data()?;
            Ok(nix::sys::stat::fchmod(f.as_raw_fd(), mode(0o644))?)
        };
        write().map_err(|e| StoreError::io(format!("flag file {flag}"), &e))?;
        Ok(tmp)
    }

    /// Moves the staged entries in, parents first. A directory the dest lacks moves whole,
    /// with everything below it, in one rename (a first push of 20,000 files is a few).
    fn move_in(&self, transfer: u64, mut aside: Option<&mut Aside>) -> Result<(), StoreError> {
        let dest = self.dest_fd.as_fd();
        let started = Instant::now();
        let mut renames = 0u64;
        let mut dcur = Cursor::new(self.dest_fd.as_fd());
        let mut scur = Cursor::new(self.stage_fd.as_fd());
        let mut moved: HashSet<&[u8]> = HashSet::new();
        for e in self.manifest.entries() {
            let mut up = e.path.as_bytes();
            let mut inside = false;
            loop {
                let (p, _) = split(up);
                if p.is_empty() {
                    break;
                }
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
            let path = e.path.as_bytes();
            let aside = aside.as_deref_mut();
            let done = dcur.at(parent).and_then(|d| -> io::Result<()> {
                if e.kind == Kind::Dir {
                    let found = lstat_at(d, name)?;
                    if found.is_none() {
                        renameat(Some(scur.at(parent)?.as_raw_fd()), name, Some(d.as_raw_fd()), name)?;
                        moved.insert(path);
                        renames += 1;
                        if let Some(a) = aside {
                            a.placed(path);
                        }
                        return Ok(());
                    }
                    if let Some(a) = aside.filter(|_| !found.is_some_and(|st| is_dir(&st))) {
                        a.displace(dest, d, path, name)?;
                        a.placed(path);
                    }
                    return ensure_dir_at(d, name, 0o700);
                }
                renames += 1;
                if let Some(a) = aside {
                    a.displace(dest, d, path, name)?;
                    a.placed(path);
                } else if lstat_at(d, name)?.is_some_and(|st| is_dir(&st)) {
                    remove_at(d, name)?;
                }
                Ok(renameat(Some(scur.at(parent)?.as_raw_fd()), name, Some(d.as_raw_fd()), name)?)
            });
            done.map_err(|err| StoreError::io(format!("publish {}", e.path), &err))?;
        }
        log::debug!("event=publish_moved transfer={transfer} renames={renames} ms={}", started.elapsed().as_millis());
        Ok(())
    }

    /// Removes from the dest what the tree lacks, except stage folders, the flag file, other
    /// dests below this one and the directories that hold them; or, without `remove`, only
    /// says whether there is any. Returns whether there was.
    pub(super) fn mirror_walk(
        &self,
        transfer: u64,
        flag_file: Option<&str>,
        remove: bool,
        mut aside: Option<&mut Aside>,
    ) -> Result<bool, StoreError> {
        let mut found = false;
        let entries = self.manifest.entries();
        let dirs: HashMap<&[u8], bool> = entries.iter().map(|e| (e.path.as_bytes(), e.kind == Kind::Dir)).collect();
        let base = self.dest_fd.as_fd();
        let guard = Guard::new(&self.nested);
        let mut todo = vec![RelPath::default()];
        while let Some(dir) = todo.pop() {
            let failed = |e: io::Error| StoreError::io(format!("mirror {dir}"), &e);
            let fd = open_parent(base, &dir).map_err(failed)?;
            let at = fd.as_ref().map_or(base, |f| f.as_fd());
            for n in list(at).map_err(failed)? {
                let rel = dir.join(n.as_bytes());
                if dir.is_empty() && rel.starts_with(STAGE_PREFIX) || flag_file.is_some_and(|f| rel == f) {
                    continue;
                }
                // Other dests are named in the config, so they are UTF-8.
                let text = rel.to_str();
                if text.is_some_and(|r| guard.is_dest(r)) {
                    if remove {
                        log::info!("event=mirror_kept_dest transfer={transfer} path={}", kv_quote(&rel.to_string()));
                    }
                    continue;
                }
                match dirs.get(rel.as_bytes()) {
                    Some(true) => {
                        todo.push(rel);
                        continue;
                    }
                    Some(false) => continue,
                    None => {}
                }
                if text.is_some_and(|r| guard.holds_dest(r))
                    && lstat_at(at, n.as_os_str()).ok().flatten().is_some_and(|st| is_dir(&st))
                {
                    todo.push(rel);
                    continue;
                }
                found = true;
                if !remove {
                    return Ok(true);
                }
                let shown = rel.to_string();
                let gone = match aside.as_deref_mut() {
                    Some(a) => a.displace(base, at, rel.as_bytes(), n.as_bytes()),
                    None => remove_at(at, n.as_os_str()),
                };
                gone.map_err(|e| StoreError::io(format!("mirror: remove {shown}"), &e))?;
                log::debug!("event=mirror_remove transfer={transfer} path={}", kv_quote(&shown));
            }
        }
        Ok(found)
    }

    /// Directory modes and mtimes, deepest first (children sort after their parent).
    fn dir_attrs(&self, transfer: u64) -> Result<(), StoreError> {
        for e in self.manifest.entries().iter().rev().filter(|e| e.kind == Kind::Dir) {
            let what = || format!("publish {}", e.path);
            let fd = open_dir_path(self.dest_fd.as_fd(), &e.path).map_err(|err| StoreError::io(what(), &err))?;
            match set_owner_attrs(fd.as_fd(), self.owner_of(e), self.mode_of(e), &mtime(e.mtime, e.mtime_nsec)) {
                Ok(()) => {}
                Err(Errno::EPERM) => {
                    log::warn!(
                        "event=publish_attr_failed transfer={transfer} path={} error={}",
                        kv_quote(&e.path.to_string()),
                        kv_quote(&io::Error::from(Errno::EPERM).to_string())
                    )
                }
                Err(err) => return Err(StoreError::io(what(), &io::Error::from(err))),
            }
        }
        Ok(())
    }
}

/// Gives the staged entry `e` (`name` in `dir`, below the stage `stage`) its final form,
/// owner (when set), mode `bits` and mtime.
fn finish_entry(
    stage: BorrowedFd,
    dir: BorrowedFd,
    name: &[u8],
    e: &Entry,
    owner: Option<(u32, u32)>,
    bits: u32,
) -> io::Result<()> {
    let when = mtime(e.mtime, e.mtime_nsec);
    match &e.kind {
        Kind::Dir => {}
        Kind::File { size } => finish_file(dir, name, *size, e, owner, bits)?,
        Kind::Link { to } => link_staged(stage, to, dir, name)?,
        Kind::Symlink { target } => {
            remove_at(dir, name)?;
            symlinkat(std::ffi::OsStr::from_bytes(target), Some(dir.as_raw_fd()), name)?;
            let at = Some(dir.as_raw_fd());
            if let Some((u, g)) = owner {
                let (u, g) = (Some(nix::unistd::Uid::from_raw(u)), Some(nix::unistd::Gid::from_raw(g)));
                nix::unistd::fchownat(at, name, u, g, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)?;
            }
            match utimensat(at, name, &TimeSpec::UTIME_OMIT, &when, UtimensatFlags::NoFollowSymlink) {
                Ok(()) | Err(Errno::EOPNOTSUPP) | Err(Errno::ENOSYS) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}

/// Makes `name` in `dir` a hard link to the staged file `to`. The manifest let a link name
/// only a file entry before it, which seal has finished: `to` is opened below the stage
/// without following a symlink, and must be a regular file there, so a link never reaches
/// anything outside the stage.
fn link_staged(stage: BorrowedFd, to: &RelPath, dir: BorrowedFd, name: &[u8]) -> io::Result<()> {
    let (tparent, tname) = split(to);
    let tdir = open_parent(stage, tparent)?;
    let tdir = tdir.as_ref().map_or(stage, |f| f.as_fd());
    if !lstat_at(tdir, tname)?.is_some_and(|st| is_file(&st)) {
        return Err(io::Error::other(format!("hard link target {to} is not a staged file")));
    }
    remove_at(dir, name)?;
    let (from, at) = (Some(tdir.as_raw_fd()), Some(dir.as_raw_fd()));
    Ok(nix::unistd::linkat(from, tname, at, name, nix::fcntl::AtFlags::empty())?)
}

/// Checks a staged file's size (creating an empty or all-hole file no block reached) and
/// sets its owner (when set), mode `bits` and mtime.
fn finish_file(
    dir: BorrowedFd,
    name: &[u8],
    size: u64,
    e: &Entry,
    owner: Option<(u32, u32)>,
    bits: u32,
) -> io::Result<()> {
    let fd = match open_file_path(dir, name, OFlag::O_RDONLY) {
        Ok(fd) => fd,
        // An empty file (or one all holes) had no block to create it.
        Err(err) if err.kind() == io::ErrorKind::NotFound && (size == 0 || e.sparse.is_some()) => {
            drop(create_file_at(dir, name)?);
            open_file_path(dir, name, OFlag::O_RDONLY)?
        }
        Err(e) => return Err(e),
    };
    let mut st = fstat(fd.as_raw_fd())?;
    if e.sparse.is_some() && (st.st_size as u64) < size {
        // A sparse file ends in a hole that no write reached.
        let w = File::from(open_file_path(dir, name, OFlag::O_WRONLY)?);
        w.set_len(size)?;
        st = fstat(fd.as_raw_fd())?;
    }
    if st.st_size as u64 != size {
        return Err(io::Error::other(format!("staged size {} is not {size}", st.st_size)));
    }
    Ok(set_owner_attrs(fd.as_fd(), owner, bits, &mtime(e.mtime, e.mtime_nsec))?)
}

/// Renames the flag file written beside the stage (`tmp` in `dest`) over `flag`.
/// With `aside`, the old flag file is kept there.
fn place_flag(dest: BorrowedFd, tmp: &str, flag: &str, aside: Option<&mut Aside>) -> io::Result<()> {
    let (parent, name) = split(flag);
    let parent = open_parent(dest, parent)?;
    let at = parent.as_ref().map_or(dest, |f| f.as_fd());
    if let Some(a) = aside {
        a.displace(dest, at, flag.as_bytes(), name)?;
        a.placed(flag.as_bytes());
    }
    renameat(Some(dest.as_raw_fd()), tmp, Some(at.as_raw_fd()), name)?;
    let _ = nix::unistd::fsync(at.as_raw_fd());
    Ok(())
}
