//! Descriptors as `OwnedFd`/`BorrowedFd`, so that each has exactly one owner: opening below a
//! directory descriptor (`openat2` confined beneath it where the kernel has it), and
//! positioned reads.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

/// `openat(2)` of `path` below the directory `dir`.
pub fn openat<P: ?Sized + nix::NixPath>(dir: BorrowedFd, path: &P, flags: OFlag, mode: Mode) -> io::Result<OwnedFd> {
    let raw = nix::fcntl::openat(Some(dir.as_raw_fd()), path, flags, mode)?;
    // SAFETY: `raw` was just returned by a successful openat(2), so it is open and nothing
    // else holds it: the `OwnedFd` becomes its only owner and closes it exactly once.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// `openat2(2)` of the directory `path` below `dir` with `RESOLVE_BENEATH |
/// RESOLVE_NO_SYMLINKS`: nothing outside `dir` is reached and no symlink in `path` is
/// followed. Kernels before 5.6 (or a seccomp filter) answer ENOSYS or EPERM: callers then
/// walk component by component with `O_NOFOLLOW`, which is as strict.
pub fn open_dir_beneath(dir: BorrowedFd, path: &std::path::Path) -> io::Result<OwnedFd> {
    use std::os::unix::ffi::OsStrExt;
    /// `struct open_how` of linux/openat2.h (libc's is `non_exhaustive`).
    #[repr(C)]
    struct OpenHow {
        flags: u64,
        mode: u64,
        resolve: u64,
    }
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    let how = OpenHow {
        flags: flags.bits() as u64,
        mode: 0,
        resolve: nix::libc::RESOLVE_BENEATH | nix::libc::RESOLVE_NO_SYMLINKS,
    };
    let path = std::ffi::CString::new(path.as_os_str().as_bytes())?;
    // EAGAIN: a rename elsewhere raced the lookup (the kernel's seqlock); a few retries do.
    for _ in 0..8 {
        // SAFETY: `path` is a NUL-terminated string and `how` a `struct open_how` of the size
        // passed, both alive for the call, which only reads them; `dir` is an open descriptor
        // borrowed for the call. The return value is checked before it is used as a descriptor.
        let r = unsafe {
            nix::libc::syscall(
                nix::libc::SYS_openat2,
                dir.as_raw_fd(),
                path.as_ptr(),
                &how as *const OpenHow,
                std::mem::size_of::<OpenHow>(),
            )
        };
        if r >= 0 {
            // SAFETY: a successful openat2 returned this descriptor: it is open and owned by
            // nothing else, so the `OwnedFd` becomes its only owner.
            return Ok(unsafe { OwnedFd::from_raw_fd(r as std::os::fd::RawFd) });
        }
        match Errno::last() {
            Errno::EINTR | Errno::EAGAIN => {}
            e => return Err(e.into()),
        }
    }
    Err(Errno::EAGAIN.into())
}

/// The size of the open file `fd`.
pub fn size(fd: BorrowedFd) -> io::Result<u64> {
    Ok(nix::sys::stat::fstat(fd.as_raw_fd())?.st_size as u64)
}

/// One `pread(2)` into `buf` at `offset`, retried on EINTR. `Ok(0)` at the end of the file.
pub fn pread(fd: BorrowedFd, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let off = i64::try_from(offset)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, format!("file offset {offset} too large")))?;
    loop {
        match nix::sys::uio::pread(fd, buf, off) {
            Err(Errno::EINTR) => {}
            r => return Ok(r?),
        }
    }
}

/// Fills `buf` from `fd` at `offset`; a file that ends first is an `UnexpectedEof` error.
pub fn read_exact_at(fd: BorrowedFd, buf: &mut [u8], offset: u64) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        match pread(fd, &mut buf[done..], offset + done as u64)? {
            0 => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "failed to fill whole buffer")),
            n => done += n,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::testfile::{pattern, temp_file};
    use std::os::fd::AsFd;

    #[test]
    fn reads_exactly_or_fails() {
        let data = pattern(5000);
        let (_dir, f) = temp_file("read", &data);
        let mut buf = vec![0u8; 7];
        read_exact_at(f.as_fd(), &mut buf, 3998).unwrap();
        assert_eq!(buf, data[3998..4005]);
        assert_eq!(size(f.as_fd()).unwrap(), 5000);
        let mut long = vec![0u8; 200];
        let e = read_exact_at(f.as_fd(), &mut long, 4900).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn openat_owns_the_descriptor() {
        let (tmp, _f) = temp_file("openat", b"x");
        let dir = std::fs::File::open(tmp.path()).unwrap();
        let fd = openat(dir.as_fd(), "openat", OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty()).unwrap();
        assert_eq!(size(fd.as_fd()).unwrap(), 1);
        let missing = openat(dir.as_fd(), "wugui-no-such-file", OFlag::O_RDONLY, Mode::empty());
        assert_eq!(missing.unwrap_err().kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn openat2_stays_beneath_and_follows_no_symlink() {
        let base = std::env::temp_dir().join(format!("wugui-sys-{}-beneath", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(base.join("a/b")).unwrap();
        std::os::unix::fs::symlink(base.join("a"), base.join("link")).unwrap();
        let dir = std::fs::File::open(&base).unwrap();
        let p = std::path::Path::new;
        match open_dir_beneath(dir.as_fd(), p("a/b")) {
            Ok(fd) => assert!(nix::sys::stat::fstat(fd.as_raw_fd()).is_ok()),
            Err(e) if matches!(e.raw_os_error(), Some(nix::libc::ENOSYS | nix::libc::EPERM)) => {
                eprintln!("openat2 unavailable here: {e}");
                std::fs::remove_dir_all(&base).unwrap();
                return;
            }
            Err(e) => panic!("{e}"),
        }
        assert!(open_dir_beneath(dir.as_fd(), p("link/b")).is_err());
        assert!(open_dir_beneath(dir.as_fd(), p("a/../../x")).is_err());
        assert!(open_dir_beneath(dir.as_fd(), base.as_path()).is_err());
        std::fs::remove_dir_all(&base).unwrap();
    }
}
