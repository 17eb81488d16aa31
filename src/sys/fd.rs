//! Descriptors as `OwnedFd`/`BorrowedFd`, so that each has exactly one owner: opening below a
//! directory descriptor, and positioned reads.

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
}
