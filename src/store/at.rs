//! The path-safe layer below the dest: every directory is opened component by component from
//! a directory descriptor with `O_NOFOLLOW | O_DIRECTORY`, and every change is an `*at` call
//! on such a descriptor, so a symlink planted in the dest or the stage is never followed.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::libc;
use nix::sys::stat::{fstat, fstatat, mkdirat, Mode};
use nix::sys::time::TimeSpec;
use nix::unistd::{unlinkat, UnlinkatFlags};

use crate::sys::fd::openat;

pub fn mode(bits: u32) -> Mode {
    Mode::from_bits_truncate(bits as libc::mode_t)
}

pub fn mtime(sec: i64, nsec: u32) -> TimeSpec {
    TimeSpec::new(sec as _, nsec as _)
}

pub fn is_dir(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

pub fn is_file(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFREG
}

/// (parent, name) of a `/`-separated relative path (bytes: a name need not be UTF-8); the
/// parent of a top-level name is empty.
pub fn split<P: AsRef<[u8]> + ?Sized>(path: &P) -> (&[u8], &[u8]) {
    crate::proto::relpath::split(path.as_ref())
}

pub fn dir_flags() -> OFlag {
    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC
}

/// Sets the final mode and mtime of an open file or directory.
pub fn set_attrs(fd: BorrowedFd, bits: u32, when: &TimeSpec) -> nix::Result<()> {
    nix::sys::stat::fchmod(fd.as_raw_fd(), mode(bits))?;
    nix::sys::stat::futimens(fd.as_raw_fd(), &TimeSpec::UTIME_OMIT, when)
}

/// Gives an open file or directory its owner (when `owner` is set; first, since a chown
/// clears the setuid and setgid bits), then its mode and mtime.
pub fn set_owner_attrs(fd: BorrowedFd, owner: Option<(u32, u32)>, bits: u32, when: &TimeSpec) -> nix::Result<()> {
    if let Some((u, g)) = owner {
        nix::unistd::fchown(fd.as_raw_fd(), Some(nix::unistd::Uid::from_raw(u)), Some(nix::unistd::Gid::from_raw(g)))?;
    }
    set_attrs(fd, bits, when)
}

/// Opens directory `rel` (non-empty, `/`-separated) below `base`, refusing symlinks.
pub fn open_dir_path<P: AsRef<[u8]> + ?Sized>(base: BorrowedFd, rel: &P) -> io::Result<OwnedFd> {
    let mut cur: Option<OwnedFd> = None;
    for c in rel.as_ref().split(|&b| b == b'/') {
        let at = cur.as_ref().map_or(base, |f| f.as_fd());
        cur = Some(openat(at, c, dir_flags(), Mode::empty())?);
    }
    cur.ok_or_else(|| io::Error::from(Errno::EINVAL))
}

/// Opens the parent directory of `rel` below `base` ("" is `base` itself, returned as `None`).
pub fn open_parent<P: AsRef<[u8]> + ?Sized>(base: BorrowedFd, parent: &P) -> io::Result<Option<OwnedFd>> {
    if parent.as_ref().is_empty() {
        return Ok(None);
    }
    open_dir_path(base, parent).map(Some)
}

/// Lstat of `name` in `dir`; `None` when it does not exist.
pub fn lstat_at<P: ?Sized + nix::NixPath>(dir: BorrowedFd, name: &P) -> io::Result<Option<libc::stat>> {
    match fstatat(Some(dir.as_raw_fd()), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(Errno::ENOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Sets the mode of directory `name` in `dir` through a descriptor opened with `O_NOFOLLOW |
/// O_DIRECTORY`: a symlink swapped in after a check fails the call instead of being followed
/// (`fchmodat` cannot refuse a symlink without following it on glibc: it says EOPNOTSUPP).
pub fn chmod_dir_at<P: ?Sized + nix::NixPath>(dir: BorrowedFd, name: &P, bits: u32) -> io::Result<()> {
    let fd = openat(dir, name, dir_flags(), Mode::empty())?;
    Ok(nix::sys::stat::fchmod(fd.as_raw_fd(), mode(bits))?)
}

/// Sets the mode of regular file `name` in `dir` through a descriptor opened with
/// `O_NOFOLLOW` (root opens it whatever its mode); anything but a regular file is refused.
pub fn chmod_file_at<P: ?Sized + nix::NixPath>(dir: BorrowedFd, name: &P, bits: u32) -> io::Result<()> {
    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
    let fd = openat(dir, name, flags, Mode::empty())?;
    if fstat(fd.as_raw_fd())?.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"));
    }
    Ok(nix::sys::stat::fchmod(fd.as_raw_fd(), mode(bits))?)
}

/// The names in directory `dir`, without `.` and `..`.
pub fn list(dir: BorrowedFd) -> io::Result<Vec<OsString>> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    let mut d = nix::dir::Dir::openat(Some(dir.as_raw_fd()), ".", flags, Mode::empty())?;
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
pub fn remove_at<P: ?Sized + nix::NixPath>(dir: BorrowedFd, name: &P) -> io::Result<()> {
    let Some(st) = lstat_at(dir, name)? else { return Ok(()) };
    let flag = if is_dir(&st) { UnlinkatFlags::RemoveDir } else { UnlinkatFlags::NoRemoveDir };
    if is_dir(&st) {
        if st.st_mode & 0o700 != 0o700 {
            chmod_dir_at(dir, name, 0o700)?;
        }
        let sub = openat(dir, name, dir_flags(), Mode::empty())?;
        for n in list(sub.as_fd())? {
            remove_at(sub.as_fd(), n.as_os_str())?;
        }
    }
    match unlinkat(Some(dir.as_raw_fd()), name, flag) {
        Ok(()) | Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Makes sure `name` in `dir` is a real directory (not a symlink to one), creating it with
/// `bits` when missing and replacing whatever else is there.
pub fn ensure_dir_at<P: ?Sized + nix::NixPath>(dir: BorrowedFd, name: &P, bits: u32) -> io::Result<()> {
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
    Ok(mkdirat(Some(dir.as_raw_fd()), name, mode(bits))?)
}

/// Opens (creating it when missing) the regular file `name` in `dir` for writing, mode 0600.
/// Anything else in the way (a symlink, a directory, a fifo) is removed first.
pub fn create_file_at<P: ?Sized + nix::NixPath>(dir: BorrowedFd, name: &P) -> io::Result<File> {
    let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
    if let Ok(fd) = openat(dir, name, flags, mode(0o600)) {
        let f = File::from(fd);
        if f.metadata()?.is_file() {
            nix::sys::stat::fchmod(f.as_raw_fd(), mode(0o600))?;
            return Ok(f);
        }
    }
    remove_at(dir, name)?;
    Ok(File::from(openat(dir, name, flags | OFlag::O_EXCL, mode(0o600))?))
}

/// Opens the regular file `rel` below `base` with `flags`, refusing symlinks anywhere.
pub fn open_file_path<P: AsRef<[u8]> + ?Sized>(base: BorrowedFd, rel: &P, flags: OFlag) -> io::Result<OwnedFd> {
    let (parent, name) = split(rel);
    let parent = open_parent(base, parent)?;
    open_file_in(parent.as_ref().map_or(base, |f| f.as_fd()), name, flags)
}

/// Opens the regular file `name` in `dir` with `flags`, refusing a symlink.
pub fn open_file_in<P: ?Sized + nix::NixPath>(dir: BorrowedFd, name: &P, flags: OFlag) -> io::Result<OwnedFd> {
    let fd = openat(dir, name, flags | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC, Mode::empty())?;
    if !is_file(&fstat(fd.as_raw_fd())?) {
        return Err(io::Error::other("not a regular file"));
    }
    Ok(fd)
}

/// The open directory of the last entry's parent, so walking a sorted manifest opens each
/// directory about once.
pub struct Cursor<'a> {
    base: BorrowedFd<'a>,
    dirs: DirCursor,
}

impl<'a> Cursor<'a> {
    pub fn new(base: BorrowedFd<'a>) -> Cursor<'a> {
        Cursor { base, dirs: DirCursor::default() }
    }

    /// The descriptor of directory `dir` (relative to the base; "" is the base).
    pub fn at<P: AsRef<[u8]> + ?Sized>(&mut self, dir: &P) -> io::Result<BorrowedFd<'_>> {
        self.dirs.at(self.base, dir)
    }
}

/// A `Cursor` that does not hold its base, so that it can live beside it (a stage's files are
/// opened one by one as blocks come, mostly in manifest order). The caller passes the same
/// base every time.
#[derive(Default)]
pub struct DirCursor {
    path: Vec<u8>,
    fd: Option<OwnedFd>,
}

impl DirCursor {
    /// The descriptor of directory `dir` below `base` ("" is the base).
    pub fn at<'s, P: AsRef<[u8]> + ?Sized>(&'s mut self, base: BorrowedFd<'s>, dir: &P) -> io::Result<BorrowedFd<'s>> {
        let dir = dir.as_ref();
        if dir.is_empty() {
            return Ok(base);
        }
        let fd = match &self.fd {
            Some(_) if self.path == dir => None,
            Some(fd) => match dir.strip_prefix(self.path.as_slice()).and_then(|r| r.strip_prefix(b"/")) {
                Some(rest) => Some(open_dir_path(fd.as_fd(), rest)?),
                None => Some(open_dir_path(base, dir)?),
            },
            None => Some(open_dir_path(base, dir)?),
        };
        if let Some(fd) = fd {
            self.path.clear();
            self.path.extend_from_slice(dir);
            self.fd = Some(fd);
        }
        Ok(self.fd.as_ref().expect("set above").as_fd())
    }

    /// The regular file `rel` below `base`, opened with `flags` (as `open_file_path`).
    pub fn open_file<P: AsRef<[u8]> + ?Sized>(
        &mut self,
        base: BorrowedFd,
        rel: &P,
        flags: OFlag,
    ) -> io::Result<OwnedFd> {
        let (parent, name) = split(rel);
        open_file_in(self.at(base, parent)?, name, flags)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A symlink where a directory (or a staged file) was is never chmodded through: the
    /// target keeps its mode whichever of the calls meets the link.
    #[test]
    fn chmod_never_follows_a_symlink() {
        let base = crate::store::tests::scratch("at-chmod");
        let victim = base.join("victim");
        std::fs::write(&victim, b"secret").unwrap();
        std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::symlink(&victim, base.join("link")).unwrap();
        std::fs::create_dir(base.join("d")).unwrap();
        let dir = openat(File::open(&base).unwrap().as_fd(), ".", dir_flags(), Mode::empty()).unwrap();
        assert!(chmod_dir_at(dir.as_fd(), "link", 0o4777).is_err());
        assert!(chmod_file_at(dir.as_fd(), "link", 0o4777).is_err());
        assert!(chmod_file_at(dir.as_fd(), "d", 0o777).is_err());
        assert_eq!(std::fs::metadata(&victim).unwrap().permissions().mode() & 0o7777, 0o600);
        chmod_dir_at(dir.as_fd(), "d", 0o750).unwrap();
        assert_eq!(std::fs::metadata(base.join("d")).unwrap().permissions().mode() & 0o7777, 0o750);
        // ensure_dir_at on a link that replaced a directory of mode 0: the link goes, the
        // target stays as it was
        ensure_dir_at(dir.as_fd(), "link", 0o755).unwrap();
        assert!(std::fs::symlink_metadata(base.join("link")).unwrap().is_dir());
        assert_eq!(std::fs::metadata(&victim).unwrap().permissions().mode() & 0o7777, 0o600);
        crate::store::tests::cleanup(&base);
    }

    #[test]
    fn cursor_and_remove_refuse_symlinks() {
        let base = crate::store::tests::scratch("at");
        std::fs::create_dir_all(base.join("a/b/c")).unwrap();
        std::fs::create_dir_all(base.join("outside")).unwrap();
        std::fs::write(base.join("outside/keep"), b"k").unwrap();
        std::os::unix::fs::symlink(base.join("outside"), base.join("a/link")).unwrap();
        let root = File::open(&base).unwrap();
        let mut cur = Cursor::new(root.as_fd());
        assert!(cur.at("a/b").is_ok());
        assert!(cur.at("a/b/c").is_ok());
        assert!(cur.at("a").is_ok());
        assert!(cur.at("a/link").is_err());
        drop(cur);
        remove_at(root.as_fd(), "a").unwrap();
        assert!(!base.join("a").exists());
        assert!(base.join("outside/keep").exists());
        crate::store::tests::cleanup(&base);
    }
}
