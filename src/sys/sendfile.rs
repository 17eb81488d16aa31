//! `sendfile(2)` from a file to a socket, and the pread/write fallback.

use std::io;
use std::os::fd::BorrowedFd;

use super::{fd, source_changed};

/// Most bytes `copy_file_rw` moves per call.
pub const COPY_CHUNK: usize = 256 << 10;

/// One `sendfile(2)` of up to `count` bytes of `file` from `*offset` to `sock`; advances
/// `*offset` by what was sent and returns it.
///
/// `Err(WouldBlock)` when the socket buffer is full. `Ok(0)` with `count > 0` means the file
/// ended at `*offset` (it shrank). Errors for which `is_unsupported` is true mean the kernel
/// will not do sendfile for this pair: use `copy_file_rw` instead.
pub fn send_file(sock: BorrowedFd, file: BorrowedFd, offset: &mut u64, count: usize) -> io::Result<usize> {
    let mut off = i64::try_from(*offset)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, format!("file offset {} too large", *offset)))?;
    loop {
        match nix::sys::sendfile::sendfile64(sock, file, Some(&mut off), count) {
            Ok(n) => {
                *offset = off as u64;
                return Ok(n);
            }
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(io::Error::from(e)),
        }
    }
}

/// Whether `e` (from `send_file`) says sendfile is not available for this file and socket.
pub fn is_unsupported(e: &io::Error) -> bool {
    use nix::errno::Errno;
    matches!(e.raw_os_error(), Some(c) if c == Errno::EINVAL as i32
        || c == Errno::ENOSYS as i32
        || c == Errno::EOPNOTSUPP as i32
        || c == Errno::ENOTSUP as i32)
}

/// The fallback for `send_file`: preads up to `min(count, COPY_CHUNK)` bytes into `scratch`
/// and writes them to `sock` once. `*offset` advances only by what the socket accepted, so a
/// partial write loses nothing (the rest is read again next time). Same results as
/// `send_file`, except that a file ending at `*offset` is an `UnexpectedEof` error.
pub fn copy_file_rw(
    sock: BorrowedFd,
    file: BorrowedFd,
    offset: &mut u64,
    count: usize,
    scratch: &mut Vec<u8>,
) -> io::Result<usize> {
    let want = count.min(COPY_CHUNK);
    if want == 0 {
        return Ok(0);
    }
    if scratch.len() < want {
        scratch.resize(want, 0);
    }
    let mut got = 0;
    while got < want {
        match fd::pread(file, &mut scratch[got..want], *offset + got as u64)? {
            0 => break,
            n => got += n,
        }
    }
    if got == 0 {
        let size = fd::size(file).unwrap_or(0);
        return Err(source_changed("send", *offset, count as u64, size));
    }
    loop {
        match nix::unistd::write(sock, &scratch[..got]) {
            Ok(n) => {
                *offset += n as u64;
                return Ok(n);
            }
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(io::Error::from(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::testfile::{pattern, temp_file};
    use std::io::Read;
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn file_end_is_zero_or_an_error() {
        let (_dir, f) = temp_file("short-send", &pattern(1000));
        let (a, _b) = UnixStream::pair().unwrap();
        let mut off = 1000;
        assert_eq!(send_file(a.as_fd(), f.as_fd(), &mut off, 100).unwrap(), 0);
        let mut scratch = Vec::new();
        let e = copy_file_rw(a.as_fd(), f.as_fd(), &mut off, 100, &mut scratch).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }

    /// Sends `data[start..]` through `send` (non-blocking socket) while a thread reads it.
    fn deliver(
        name: &str,
        start: u64,
        mut send: impl FnMut(BorrowedFd, BorrowedFd, &mut u64, usize) -> io::Result<usize>,
        tcp: bool,
    ) {
        let data = pattern(5 << 20);
        let (_dir, f) = temp_file(name, &data);
        let (tx, mut rx): (Box<dyn AsFd>, Box<dyn Read + Send>) = if tcp {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let a = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
            let (b, _) = l.accept().unwrap();
            a.set_nonblocking(true).unwrap();
            (Box::new(a), Box::new(b))
        } else {
            let (a, b) = UnixStream::pair().unwrap();
            a.set_nonblocking(true).unwrap();
            (Box::new(a), Box::new(b))
        };
        let want = data.len() - start as usize;
        let reader = std::thread::spawn(move || {
            let mut got = vec![0u8; want];
            rx.read_exact(&mut got).unwrap();
            got
        });
        let mut off = start;
        while off < data.len() as u64 {
            let left = data.len() - off as usize;
            match send(tx.as_fd(), f.as_fd(), &mut off, left.min(1 << 20)) {
                Ok(n) => assert!(n > 0),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(1))
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(off, data.len() as u64);
        let got = reader.join().unwrap();
        assert!(got == data[start as usize..], "bytes differ");
    }

    #[test]
    fn send_file_delivers_exact_bytes() {
        deliver("sf-tcp", 3, send_file, true);
        deliver("sf-unix", 0, send_file, false);
    }

    #[test]
    fn copy_file_rw_delivers_exact_bytes() {
        let mut scratch = Vec::new();
        deliver("rw-tcp", 11, |s, f, o, c| copy_file_rw(s, f, o, c, &mut scratch), true);
        let mut scratch = Vec::new();
        deliver("rw-unix", 0, |s, f, o, c| copy_file_rw(s, f, o, c, &mut scratch), false);
    }

    #[test]
    fn unsupported_errors() {
        assert!(is_unsupported(&io::Error::from_raw_os_error(nix::libc::EINVAL)));
        assert!(is_unsupported(&io::Error::from_raw_os_error(nix::libc::ENOSYS)));
        assert!(!is_unsupported(&io::Error::from_raw_os_error(nix::libc::EAGAIN)));
        assert!(!is_unsupported(&io::Error::other("x")));
    }
}
