//! Blocks read back from files, shared by the master's source (`tree::FsSource`) and the po's
//! store (serving peers): an open-file cache, block -> [`Body`], and checksums and bytes of a
//! body.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use crate::proto::checksum::Hasher;
use crate::proto::{Body, Segment, Sum, Verify};
use crate::sys::fd::read_exact_at;

/// A block of more pieces than this is sent from memory rather than by sendfile per piece:
/// holding a descriptor per piece for every queued block would run out of them.
pub const PIECES_BY_FILE: usize = 4;

/// Files kept open per manifest entry, least recently used first out.
pub struct OpenFiles<F> {
    cap: usize,
    /// Most recently used last.
    open: Vec<(u32, F)>,
}

impl<F> OpenFiles<F> {
    pub fn new(cap: usize) -> OpenFiles<F> {
        OpenFiles { cap, open: Vec::with_capacity(cap) }
    }

    /// The file of `entry`, opened by `open` when it is not held.
    pub fn get<E>(&mut self, entry: u32, open: impl FnOnce() -> Result<F, E>) -> Result<&F, E> {
        if let Some(at) = self.open.iter().position(|(e, _)| *e == entry) {
            let hit = self.open.remove(at);
            self.open.push(hit);
        } else {
            let f = open()?;
            if self.open.len() >= self.cap {
                self.open.remove(0);
            }
            self.open.push((entry, f));
        }
        Ok(&self.open.last().expect("just pushed").1)
    }

    pub fn clear(&mut self) {
        self.open.clear();
    }
}

/// The body of a block of `len` bytes made of `segments`: its files' ranges to send from, or
/// (for many small pieces) its bytes read now. `open` gives the file of an entry; `read_err`
/// names a failed read of one.
pub fn body_of<E>(
    len: u64,
    segments: &[Segment],
    sendfile: bool,
    mut open: impl FnMut(u32) -> Result<Arc<OwnedFd>, E>,
    read_err: impl Fn(u32, io::Error) -> E,
) -> Result<Body, E> {
    if segments.len() > PIECES_BY_FILE {
        let mut data = vec![0u8; len as usize];
        for seg in segments {
            let f = open(seg.entry)?;
            let at = seg.at as usize;
            read_exact_at(f.as_fd(), &mut data[at..at + seg.len as usize], seg.offset)
                .map_err(|e| read_err(seg.entry, e))?;
        }
        return Ok(Body::Bytes(Arc::new(data)));
    }
    let mut ranges = Vec::with_capacity(segments.len());
    for seg in segments {
        ranges.push((open(seg.entry)?, seg.offset, seg.len as u64));
    }
    Ok(match ranges.len() {
        1 => {
            let (file, offset, len) = ranges.pop().expect("one range");
            Body::File { file, offset, len, sendfile }
        }
        _ => Body::Files { ranges, sendfile },
    })
}

/// Fails when a range of `body` runs past the end of its file: sent, the frame would end
/// early and break the link, and the peer could not tell which block it lost.
pub fn check_within(body: &Body) -> io::Result<()> {
    for (f, offset, len) in ranges(body) {
        let size = crate::sys::fd::size(f)?;
        if offset + len > size {
            let e = format!("the file ends at {size}, before the block's end at {}", offset + len);
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, e));
        }
    }
    Ok(())
}

/// The (file, offset, len) ranges of a body that is not in memory.
fn ranges(body: &Body) -> Vec<(BorrowedFd<'_>, u64, u64)> {
    match body {
        Body::Bytes(_) => Vec::new(),
        Body::File { file, offset, len, .. } => vec![(file.as_fd(), *offset, *len)],
        Body::Files { ranges, .. } => ranges.iter().map(|(f, o, l)| (f.as_fd(), *o, *l)).collect(),
    }
}

/// `body`, to be sent by `sendfile` or not.
pub fn with_sendfile(body: Body, sendfile: bool) -> Body {
    match body {
        Body::File { file, offset, len, .. } => Body::File { file, offset, len, sendfile },
        Body::Files { ranges, .. } => Body::Files { ranges, sendfile },
        bytes => bytes,
    }
}

/// The checksum of a body's bytes (mapped in place where they are in files).
pub fn checksum(body: &Body, verify: Verify) -> io::Result<Sum> {
    match (body, verify) {
        (_, Verify::None) => Ok(Sum::None),
        (Body::Bytes(b), _) => Ok(Sum::of(verify, b)),
        _ => {
            let mut h = Hasher::new(verify);
            crate::sys::map::read_ranges(&ranges(body), |b| h.update(b))?;
            Ok(h.finish())
        }
    }
}

/// All the bytes of a block body (tests, diagnostics and fault injection).
pub fn body_bytes(body: &Body) -> io::Result<Vec<u8>> {
    if let Body::Bytes(b) = body {
        return Ok(b.to_vec());
    }
    let mut out = Vec::new();
    for (f, off, len) in ranges(body) {
        let at = out.len();
        out.resize(at + len as usize, 0);
        read_exact_at(f, &mut out[at..], off)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn temp_fd(name: &str, data: &[u8]) -> (std::path::PathBuf, Arc<OwnedFd>) {
        let path = std::env::temp_dir().join(format!("wugui-files-{}-{name}", std::process::id()));
        std::fs::File::create(&path).unwrap().write_all(data).unwrap();
        (path.clone(), Arc::new(OwnedFd::from(std::fs::File::open(&path).unwrap())))
    }

    #[test]
    fn checksum_matches_sum_of() {
        let data: Vec<u8> = (0..3usize << 20).map(|i| (i * 7 + i / 251) as u8).collect();
        let (path, f) = temp_fd("sum", &data);
        for v in [Verify::Crc32, Verify::Md5] {
            for (off, len) in [(0u64, data.len() as u64), (4096, 100_000), (12345, 777), (0, 0)] {
                let body = Body::File { file: f.clone(), offset: off, len, sendfile: true };
                let want = &data[off as usize..(off + len) as usize];
                assert_eq!(checksum(&body, v).unwrap(), Sum::of(v, want));
                assert!(body_bytes(&body).unwrap() == want);
            }
        }
        let two = Body::Files { ranges: vec![(f.clone(), 0, 10), (f.clone(), 100_000, 70_000)], sendfile: false };
        let mut want = data[..10].to_vec();
        want.extend_from_slice(&data[100_000..170_000]);
        assert_eq!(checksum(&two, Verify::Md5).unwrap(), Sum::of(Verify::Md5, &want));
        assert_eq!(body_bytes(&two).unwrap(), want);
        let short = Body::File { file: f.clone(), offset: data.len() as u64 - 5, len: 10, sendfile: true };
        assert_eq!(checksum(&short, Verify::Crc32).unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(checksum(&short, Verify::None).unwrap(), Sum::None);
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn open_files_keeps_the_recent_ones() {
        let mut lru = OpenFiles::new(2);
        let mut opened = Vec::new();
        for e in [1u32, 2, 1, 3, 1, 2] {
            let got = *lru
                .get(e, || -> Result<u32, ()> {
                    opened.push(e);
                    Ok(e * 10)
                })
                .unwrap();
            assert_eq!(got, e * 10);
        }
        // 3 pushed 2 out (1 was used after it); 2 then pushed 3 out
        assert_eq!(opened, [1, 2, 3, 2]);
    }
}
