//! Reading file ranges in place for checksums: small ranges are read, large ones mapped.

use std::io;
use std::os::fd::BorrowedFd;

use memmap2::{Advice, MmapOptions};

use super::{fd, source_changed};

/// Most bytes `read_ranges` maps at once (a block is at most `wire::MAX_BLOCK`).
pub const MAX_MAP: u64 = 64 << 20;

/// Calls `f` with the bytes of each (file, offset, len) range in turn.
///
/// Errors with `UnexpectedEof` when a file is shorter than `offset + len` (it changed since
/// the manifest was made), and with `InvalidInput` when `len` exceeds `MAX_MAP`.
pub fn read_ranges(ranges: &[(BorrowedFd, u64, u64)], mut f: impl FnMut(&[u8])) -> io::Result<()> {
    for &(file, offset, len) in ranges {
        with_map(file, offset, len, &mut f)?;
    }
    Ok(())
}

/// Calls `f` with the bytes of a file range: small ranges are read (an mmap per tiny file
/// costs more than it saves), large ones are mapped.
fn with_map(file: BorrowedFd, offset: u64, len: u64, f: &mut impl FnMut(&[u8])) -> io::Result<()> {
    if len > MAX_MAP {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("checksum range of {len} bytes too long")));
    }
    let size = fd::size(file)?;
    let end = offset.checked_add(len).ok_or_else(|| source_changed("checksum", offset, len, size))?;
    if end > size {
        return Err(source_changed("checksum", offset, len, size));
    }
    if len <= 64 << 10 {
        let mut buf = vec![0u8; len as usize];
        fd::read_exact_at(file, &mut buf, offset)?;
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
    // `populate`: the range is read whole at once, so one call maps every page instead of a
    // fault per few pages.
    let map = unsafe { MmapOptions::new().offset(offset).len(len as usize).populate().map(&file)? };
    // Only a hint: the checksum reads the range once, front to back.
    let _ = map.advise(Advice::Sequential);
    f(&map);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::testfile::{pattern, temp_file};
    use std::os::fd::AsFd;

    fn bytes_of(ranges: &[(BorrowedFd, u64, u64)]) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        read_ranges(ranges, |b| out.extend_from_slice(b))?;
        Ok(out)
    }

    #[test]
    fn reads_small_and_mapped_ranges() {
        let data = pattern(3 << 20);
        let (_dir, f) = temp_file("map", &data);
        for (off, len) in [(0u64, data.len() as u64), (4096, 100_000), (12345, 777), (0, 0)] {
            let got = bytes_of(&[(f.as_fd(), off, len)]).unwrap();
            assert!(got == data[off as usize..(off + len) as usize], "range {off}+{len}");
        }
        let two = bytes_of(&[(f.as_fd(), 10, 5), (f.as_fd(), 200_000, 70_000)]).unwrap();
        assert!(two[..5] == data[10..15] && two[5..] == data[200_000..270_000]);
    }

    #[test]
    fn short_file_is_an_error() {
        let (_dir, f) = temp_file("short", &pattern(1000));
        let e = bytes_of(&[(f.as_fd(), 500, 1000)]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        let e = bytes_of(&[(f.as_fd(), 0, MAX_MAP + 1)]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }
}
