#![allow(unsafe_code)]
//! The data path: checksums over mapped file ranges, `sendfile(2)` from a file to a socket,
//! the pread/write fallback, and positioned reads and writes.
//!
//! This is the only module of the crate allowed `unsafe`, and the only `unsafe` in it is
//! mapping a file. A file that changes while it is mapped or sent is the caller's risk to
//! detect: every function here checks lengths where it can (a range beyond the end of the file
//! is an `UnexpectedEof` error, never a SIGBUS or a short frame), and the master compares a
//! file's size and mtime with the manifest after sending its blocks (`Source::unchanged`).

use std::fs::File;
use std::io;
use std::os::fd::BorrowedFd;
use std::os::unix::fs::FileExt;

use memmap2::{Advice, MmapOptions};

use crate::proto::{Sum, Verify};

/// Most bytes `copy_file_rw` moves per call.
pub const COPY_CHUNK: usize = 256 << 10;

/// Most bytes `checksum_range` maps at once (a block is at most `wire::MAX_BLOCK`).
pub const MAX_MAP: u64 = 64 << 20;

fn source_changed(what: &str, offset: u64, len: u64, size: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!("source file changed: {what} of {len} bytes at {offset} but the file has {size}"),
    )
}

/// The checksum of `len` bytes of `file` at `offset`.
///
/// Errors with `UnexpectedEof` when the file is shorter than `offset + len` (it changed since
/// the manifest was made), and with `InvalidInput` when `len` exceeds `MAX_MAP`.
pub fn checksum_range(file: &File, offset: u64, len: u64, verify: Verify) -> io::Result<Sum> {
    checksum_ranges(&[(file, offset, len)], verify)
}

/// Exactly `len` bytes of `file` at `offset` (a pread loop). `UnexpectedEof` if the file is
/// shorter.
pub fn read_range(file: &File, offset: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let mut done = 0;
    while done < len {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => {
                let size = file.metadata().map(|m| m.len()).unwrap_or(0);
                return Err(source_changed("read", offset, len as u64, size));
            }
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(buf)
}

/// One `sendfile(2)` of up to `count` bytes of `file` from `*offset` to `sock`; advances
/// `*offset` by what was sent and returns it.
///
/// `Err(WouldBlock)` when the socket buffer is full. `Ok(0)` with `count > 0` means the file
/// ended at `*offset` (it shrank). Errors for which `is_unsupported` is true mean the kernel
/// will not do sendfile for this pair: use `copy_file_rw` instead.
pub fn send_file(sock: BorrowedFd, file: &File, offset: &mut u64, count: usize) -> io::Result<usize> {
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
    file: &File,
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
        match file.read_at(&mut scratch[got..want], *offset + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    if got == 0 {
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
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

/// Writes all of `data` at `offset` of `file`.
/// The checksum of several file ranges read one after another, as one block.
pub fn checksum_ranges(ranges: &[(&File, u64, u64)], verify: Verify) -> io::Result<Sum> {
    use md5::Digest;
    match verify {
        Verify::None => Ok(Sum::None),
        Verify::Crc32 => {
            let mut h = crc32fast::Hasher::new();
            for &(f, off, len) in ranges {
                with_map(f, off, len, |b| h.update(b))?;
            }
            Ok(Sum::Crc32(h.finalize()))
        }
        Verify::Md5 => {
            let mut h = md5::Md5::new();
            for &(f, off, len) in ranges {
                with_map(f, off, len, |b| h.update(b))?;
            }
            Ok(Sum::Md5(h.finalize().into()))
        }
    }
}

/// Calls `f` with the bytes of a file range: small ranges are read (an mmap per tiny file
/// costs more than it saves), large ones are mapped.
fn with_map(file: &File, offset: u64, len: u64, mut f: impl FnMut(&[u8])) -> io::Result<()> {
    if len > MAX_MAP {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("checksum range of {len} bytes too long")));
    }
    let size = file.metadata()?.len();
    let end = offset.checked_add(len).ok_or_else(|| source_changed("checksum", offset, len, size))?;
    if end > size {
        return Err(source_changed("checksum", offset, len, size));
    }
    if len <= 64 << 10 {
        let mut buf = vec![0u8; len as usize];
        file.read_exact_at(&mut buf, offset)?;
        f(&buf);
        return Ok(());
    }
    // SAFETY: the mapping is read-only and private, lives only inside this function, and no
    // reference into it escapes. `offset + len` was within the file at the fstat above. The
    // remaining risk is another process changing the file while it is mapped: a write changes
    // the bytes we hash (the master then notices the new mtime via `Source::unchanged` and fails
    // the transfer), and a truncation below `offset + len` between the fstat and the last access
    // would raise SIGBUS. wugui documents that sources must not be truncated during a push;
    // there is no way to rule this out for a mapping, which is why the range is checked first.
    let map = unsafe { MmapOptions::new().offset(offset).len(len as usize).map(file)? };
    // Only a hint: the checksum reads the range once, front to back.
    let _ = map.advise(Advice::Sequential);
    f(&map);
    Ok(())
}

/// All the bytes of a block body (tests, diagnostics and the simulator's network).
pub fn body_bytes(body: &crate::proto::Body) -> io::Result<Vec<u8>> {
    use crate::proto::Body;
    let mut out = Vec::new();
    let mut take = |f: &File, off: u64, len: u64| -> io::Result<()> {
        let at = out.len();
        out.resize(at + len as usize, 0);
        f.read_exact_at(&mut out[at..], off)
    };
    match body {
        Body::Bytes(b) => return Ok(b.to_vec()),
        Body::File { file, offset, len, .. } => take(file, *offset, *len)?,
        Body::Files { ranges, .. } => {
            for (f, off, len) in ranges {
                take(f, *off, *len)?;
            }
        }
    }
    Ok(out)
}

/// Takes ownership of a descriptor that a raw syscall wrapper (nix 0.29's `openat`) just
/// returned, so that it is closed exactly once by the `File`.
pub fn file_from_raw(fd: std::os::fd::RawFd) -> File {
    use std::os::fd::FromRawFd;
    // SAFETY: the caller passes a descriptor it just opened and has not shared or closed; from
    // here on the returned `File` is its only owner and closes it on drop.
    unsafe { File::from_raw_fd(fd) }
}

pub fn pwrite_all(file: &File, offset: u64, data: &[u8]) -> io::Result<()> {
    file.write_all_at(data, offset)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    fn temp_file(name: &str, data: &[u8]) -> (std::path::PathBuf, File) {
        let path = std::env::temp_dir().join(format!("wugui-sendfile-{}-{name}", std::process::id()));
        let mut f = File::create(&path).unwrap();
        f.write_all(data).unwrap();
        drop(f);
        let f = File::options().read(true).write(true).open(&path).unwrap();
        (path, f)
    }

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    #[test]
    fn checksum_matches_sum_of() {
        let data = pattern(3 << 20);
        let (path, f) = temp_file("sum", &data);
        for v in [Verify::Crc32, Verify::Md5] {
            for (off, len) in [(0u64, data.len() as u64), (4096, 100_000), (12345, 777), (0, 0)] {
                let s = checksum_range(&f, off, len, v).unwrap();
                assert_eq!(s, Sum::of(v, &data[off as usize..(off + len) as usize]));
            }
        }
        assert_eq!(checksum_range(&f, 0, 10, Verify::None).unwrap(), Sum::None);
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn short_file_is_an_error() {
        let (path, f) = temp_file("short", &pattern(1000));
        let e = checksum_range(&f, 500, 1000, Verify::Crc32).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(read_range(&f, 900, 200).unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
        let (a, _b) = UnixStream::pair().unwrap();
        let mut off = 1000;
        assert_eq!(send_file(a.as_fd(), &f, &mut off, 100).unwrap(), 0);
        let mut scratch = Vec::new();
        let e = copy_file_rw(a.as_fd(), &f, &mut off, 100, &mut scratch).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn read_and_pwrite() {
        let (path, f) = temp_file("rw", &pattern(5000));
        pwrite_all(&f, 4000, b"hello").unwrap();
        pwrite_all(&f, 6000, b"tail").unwrap();
        let got = read_range(&f, 3998, 7).unwrap();
        assert_eq!(&got[2..], b"hello");
        assert_eq!(f.metadata().unwrap().len(), 6004);
        assert_eq!(read_range(&f, 6000, 4).unwrap(), b"tail");
        std::fs::remove_file(path).unwrap();
    }

    /// Sends `data[start..]` through `send` (non-blocking socket) while a thread reads it.
    fn deliver(
        name: &str,
        start: u64,
        mut send: impl FnMut(BorrowedFd, &File, &mut u64, usize) -> io::Result<usize>,
        tcp: bool,
    ) {
        let data = pattern(5 << 20);
        let (path, f) = temp_file(name, &data);
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
            match send(tx.as_fd(), &f, &mut off, left.min(1 << 20)) {
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
        std::fs::remove_file(path).unwrap();
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
