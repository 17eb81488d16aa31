//! The manifest: the tree a transfer moves, and how its files split into blocks.
//!
//! Entries are sorted by path bytes, so every parent directory comes before its children.
//! Blocks are fixed slices of the *stream*: every file's bytes one after another in entry
//! order. So a block may hold the end of one file and several small files after it (20,000
//! files of 10 KiB make 50 blocks of 4 MiB, not 20,000), and only the last block is short.
//! `segments` says which file bytes a block holds.
//!
//! Path rules, checked by `Manifest::new` and so by every decode: a path is relative, its
//! components are non-empty, not `.` or `..`, at most `MAX_NAME` bytes, free of NUL; the whole
//! path is at most `MAX_PATH` bytes; no path repeats; and the parent of every entry is a
//! directory entry of the manifest. So no entry can be written through a symlink of the tree.
//! Paths are bytes (`RelPath`): a name need not be UTF-8.
//!
//! Hard links: the first path of a link group (in byte order) is a `File`; every other path
//! of the group is a `Link` naming it. A `Link` may name only a `File` entry that sorts before
//! it, so a po links staged files to staged files and to nothing else.

use super::codec::{invalid, DecodeError, Reader, Writer};
use super::relpath::split;
pub use super::relpath::RelPath;
use super::wire::{MAX_ENTRIES, MAX_NAME, MAX_PATH};

/// Most data extents a sparse file may list.
pub const MAX_EXTENTS: usize = 4096;
/// Blocks one transfer may have (4 Mi: 100 GB at a 32 KiB block). Per-block state on a po and
/// the master is sized by this, so a manifest over it is refused before anything is allocated;
/// a larger tree needs a larger `block_size`.
pub const MAX_BLOCKS: u64 = 1 << 22;
/// Decoded path bytes per received manifest byte, at most. Front coding makes a path cheap on the
/// wire; without a bound, 9 bytes could claim a 4 KiB path, and 0.4 MB of frame 400 MB of heap.
const MAX_PATH_EXPANSION: usize = 64;
/// Decoded path bytes any manifest may have on top of that.
const PATH_FLOOR: usize = 16 << 20;
use md5::{Digest, Md5};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File {
        size: u64,
    },
    /// The link's target, as bytes (not checked as a path: a po writes it, never follows it).
    Symlink {
        target: Vec<u8>,
    },
    /// A hard link to the `File` entry `to`, which sorts before it: no bytes of its own.
    Link {
        to: RelPath,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub path: RelPath,
    pub kind: Kind,
    /// Permission bits (07777).
    pub mode: u32,
    /// Owner and group on the master (numeric; a po applies them as class `owner` says).
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    pub mtime_nsec: u32,
    /// A sparse file's data extents (offset, len), ascending and apart; the rest is holes.
    /// `None`: all data.
    pub sparse: Option<Box<[(u64, u64)]>>,
}

/// One block: a slice of the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockRef {
    pub index: u64,
    /// Where the block starts in the stream.
    pub offset: u64,
    pub len: u32,
}

/// The part of a block that lies in one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// Index into `Manifest::entries`.
    pub entry: u32,
    /// Offset in the file.
    pub offset: u64,
    pub len: u32,
    /// Offset in the block.
    pub at: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub block_size: u32,
    entries: Vec<Entry>,
    /// (stream offset, entry index) for every non-empty file, ascending.
    starts: Vec<(u64, u32)>,
    blocks: u64,
    bytes: u64,
}

impl Manifest {
    /// Sorts the entries and checks the path rules.
    pub fn new(block_size: u32, mut entries: Vec<Entry>) -> Result<Manifest, String> {
        if block_size == 0 {
            return Err("block size 0".into());
        }
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        let mut dirs: std::collections::HashSet<&[u8]> = std::collections::HashSet::new();
        let mut prev: Option<&RelPath> = None;
        for (i, e) in entries.iter().enumerate() {
            check_path(e.path.as_bytes())?;
            if prev == Some(&e.path) {
                return Err(format!("path {:?} appears twice", e.path));
            }
            prev = Some(&e.path);
            let (parent, _) = split(e.path.as_bytes());
            if !parent.is_empty() && !dirs.contains(parent) {
                return Err(format!("parent of {:?} is not a directory of the tree", e.path));
            }
            match &e.kind {
                Kind::Symlink { target } if target.is_empty() || target.len() > MAX_PATH || target.contains(&0) => {
                    return Err(format!("symlink {:?} has a bad target", e.path));
                }
                // Sorted and unique, so a binary search of the entries before this one finds
                // the target if it is there: a link never names itself, a later entry, or a
                // path outside the tree.
                Kind::Link { to } => match entries[..i].binary_search_by(|x| x.path.cmp(to)) {
                    Ok(t) if matches!(entries[t].kind, Kind::File { .. }) => {}
                    _ => return Err(format!("hard link {:?} names {to:?}, not a file before it in the tree", e.path)),
                },
                _ => {}
            }
            if let Some(ext) = &e.sparse {
                let Kind::File { size } = e.kind else {
                    return Err(format!("{:?} has data extents but is not a file", e.path));
                };
                if ext.len() > MAX_EXTENTS {
                    return Err(format!("{:?} has {} data extents, over {MAX_EXTENTS}", e.path, ext.len()));
                }
                let mut end = 0u64;
                for (i, &(off, len)) in ext.iter().enumerate() {
                    let apart = i == 0 || off > end;
                    if len == 0 || !apart || off.checked_add(len).is_none_or(|x| x > size) {
                        return Err(format!("{:?} has a bad data extent {off}+{len}", e.path));
                    }
                    end = off + len;
                }
            }
            if e.mode > 0o7777 {
                return Err(format!("mode {:o} of {:?} is not permission bits", e.mode, e.path));
            }
            if e.kind == Kind::Dir {
                dirs.insert(e.path.as_bytes());
            }
        }
        // Sorting by bytes puts "a/b" after "a-c"; the parent check above needs the parent
        // anywhere earlier, which byte order guarantees because a prefix sorts first.
        let mut starts = Vec::new();
        let mut bytes = 0u64;
        for (i, e) in entries.iter().enumerate() {
            if let Kind::File { size } = e.kind {
                if size > 0 {
                    starts.push((bytes, i as u32));
                    bytes = bytes.checked_add(size).ok_or("file sizes overflow")?;
                }
            }
        }
        let blocks = bytes.div_ceil(block_size as u64);
        if blocks > MAX_BLOCKS {
            return Err(format!(
                "{blocks} blocks of {block_size} bytes, over the {MAX_BLOCKS} a transfer may have: raise block_size"
            ));
        }
        Ok(Manifest { block_size, entries, starts, blocks, bytes })
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }
    pub fn blocks(&self) -> u64 {
        self.blocks
    }
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
    pub fn files(&self) -> usize {
        self.entries.iter().filter(|e| matches!(e.kind, Kind::File { .. })).count()
    }

    pub fn block(&self, index: u64) -> Option<BlockRef> {
        if index >= self.blocks {
            return None;
        }
        let offset = index * self.block_size as u64;
        let len = (self.bytes - offset).min(self.block_size as u64) as u32;
        Some(BlockRef { index, offset, len })
    }

    /// The file pieces that make up block `b`, in stream order.
    pub fn segments(&self, b: &BlockRef) -> Vec<Segment> {
        let mut out = Vec::new();
        let end = b.offset + b.len as u64;
        let mut i = self.starts.partition_point(|&(start, _)| start <= b.offset).saturating_sub(1);
        while let Some(&(start, entry)) = self.starts.get(i) {
            if start >= end {
                break;
            }
            let Kind::File { size } = self.entries[entry as usize].kind else { break };
            let from = b.offset.max(start);
            let to = end.min(start + size);
            if to > from {
                out.push(Segment {
                    entry,
                    offset: from - start,
                    len: (to - from) as u32,
                    at: (from - b.offset) as u32,
                });
            }
            i += 1;
        }
        out
    }

    /// Whether block `b` lies wholly in holes of sparse files: all zeros, never sent.
    pub fn is_hole(&self, b: &BlockRef) -> bool {
        self.segments(b).iter().all(|s| self.in_hole(s.entry, s.offset, s.len as u64))
    }

    /// Whether bytes `off..off+len` of entry `entry` lie in a hole.
    pub fn in_hole(&self, entry: u32, off: u64, len: u64) -> bool {
        let Some(ext) = &self.entries[entry as usize].sparse else { return false };
        // the first extent ending after `off` must start at or after the range's end
        let i = ext.partition_point(|&(o, l)| o + l <= off);
        ext.get(i).is_none_or(|&(o, _)| o >= off + len)
    }

    /// The blocks that hold bytes of entry `entry`: (first, count); (0, 0) for non-files.
    pub fn entry_blocks(&self, entry: u32) -> (u64, u64) {
        match self.starts.binary_search_by_key(&entry, |&(_, e)| e) {
            Ok(i) => {
                let Kind::File { size } = self.entries[entry as usize].kind else { return (0, 0) };
                let start = self.starts[i].0;
                let bs = self.block_size as u64;
                let first = start / bs;
                (first, (start + size).div_ceil(bs) - first)
            }
            Err(_) => (0, 0),
        }
    }

    /// The compact form sent with every offer. Paths are front-coded (the bytes shared with
    /// the previous path, then the rest) and numbers are varints, mtimes as the difference
    /// from the previous entry's: 20,000 files take about 22 bytes each, not 52.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u32(self.block_size);
        w.u32(self.entries.len() as u32);
        let (mut prev, mut prev_mtime): (&[u8], i64) = (&[], 0);
        for e in &self.entries {
            let path = e.path.as_bytes();
            let shared = prev.iter().zip(path).take_while(|(a, b)| a == b).count();
            w.var(shared as u64);
            w.var((path.len() - shared) as u64);
            w.raw(&path[shared..]);
            w.var(e.mode as u64);
            let d = e.mtime.wrapping_sub(prev_mtime);
            w.var(((d << 1) ^ (d >> 63)) as u64); // zigzag
            w.var(e.mtime_nsec as u64);
            w.var(e.uid as u64);
            w.var(e.gid as u64);
            match (&e.kind, &e.sparse) {
                (Kind::Dir, _) => w.u8(0),
                (Kind::File { size }, None) => {
                    w.u8(1);
                    w.var(*size);
                }
                (Kind::Symlink { target }, _) => {
                    w.u8(2);
                    w.var(target.len() as u64);
                    w.raw(target);
                }
                (Kind::Link { to }, _) => {
                    w.u8(4);
                    // `new` checked that `to` is an entry before this one.
                    let t = self.entries.binary_search_by(|x| x.path.cmp(to)).unwrap_or(0);
                    w.var(t as u64);
                }
                (Kind::File { size }, Some(ext)) => {
                    w.u8(3);
                    w.var(*size);
                    w.var(ext.len() as u64);
                    let mut end = 0;
                    for &(off, len) in ext.iter() {
                        w.var(off - end); // extents ascend and are apart
                        w.var(len);
                        end = off + len;
                    }
                }
            }
            prev = path;
            prev_mtime = e.mtime;
        }
        w.buf
    }

    pub fn decode(buf: &[u8]) -> Result<Manifest, DecodeError> {
        let mut r = Reader::new(buf);
        let block_size = r.u32("block size")?;
        if block_size == 0 || block_size > super::wire::MAX_BLOCK {
            return Err(invalid("block size", block_size.to_string()));
        }
        // Each entry takes at least 8 bytes.
        let n = r.count(MAX_ENTRIES, 8, "manifest entries")?;
        let mut entries: Vec<Entry> = Vec::with_capacity(n);
        let mut prev_mtime = 0i64;
        let mut path_bytes = 0usize;
        let path_budget = buf.len().saturating_mul(MAX_PATH_EXPANSION).saturating_add(PATH_FLOOR);
        for _ in 0..n {
            let shared = r.var("path prefix")? as usize;
            let rest = r.var("path length")? as usize;
            let prev: &[u8] = entries.last().map_or(&[], |e| e.path.as_bytes());
            if shared > prev.len() || shared.saturating_add(rest) > MAX_PATH {
                return Err(invalid("manifest path", "bad prefix or length"));
            }
            path_bytes += shared + rest;
            if path_bytes > path_budget {
                return Err(invalid("manifest paths", "decode to far more than was sent"));
            }
            let mut path = prev[..shared].to_vec();
            path.extend_from_slice(r.take(rest, "manifest path")?);
            let path = RelPath::from_bytes(path);
            let mode = u32::try_from(r.var("mode")?).map_err(|_| invalid("mode", "too big"))?;
            let z = r.var("mtime")?;
            let mtime = prev_mtime.wrapping_add(((z >> 1) as i64) ^ -((z & 1) as i64));
            prev_mtime = mtime;
            let mtime_nsec = u32::try_from(r.var("mtime nsec")?).map_err(|_| invalid("mtime nsec", "too big"))?;
            // u32::MAX is chown's "leave it as it is", never an owner.
            let id = |v: u64, what| {
                u32::try_from(v).ok().filter(|v| *v != u32::MAX).ok_or_else(|| invalid(what, "out of range"))
            };
            let uid = id(r.var("uid")?, "uid")?;
            let gid = id(r.var("gid")?, "gid")?;
            let mut sparse = None;
            let kind = match r.u8("entry kind")? {
                0 => Kind::Dir,
                1 => Kind::File { size: r.var("file size")? },
                2 => {
                    let len = r.var("symlink target")? as usize;
                    if len > MAX_PATH {
                        return Err(invalid("symlink target", "too long"));
                    }
                    Kind::Symlink { target: r.take(len, "symlink target")?.to_vec() }
                }
                4 => {
                    // An entry decoded before this one, and a file: `new` checks order and
                    // kind again after sorting. Its path is counted like any other.
                    let t = r.var("hard link")?;
                    let to = usize::try_from(t).ok().and_then(|t| entries.get(t));
                    let Some(to) = to.filter(|x| matches!(x.kind, Kind::File { .. })) else {
                        return Err(invalid("hard link", format!("entry {t} is not a file before it")));
                    };
                    path_bytes += to.path.len();
                    if path_bytes > path_budget {
                        return Err(invalid("manifest paths", "decode to far more than was sent"));
                    }
                    Kind::Link { to: to.path.clone() }
                }
                3 => {
                    let size = r.var("file size")?;
                    let n = r.var("data extents")? as usize;
                    if n > MAX_EXTENTS || n.saturating_mul(2) > r.left() {
                        return Err(invalid("data extents", n.to_string()));
                    }
                    let mut ext = Vec::with_capacity(n);
                    let mut end = 0u64;
                    for _ in 0..n {
                        let off = end.checked_add(r.var("extent offset")?).ok_or(invalid("extent", "overflows"))?;
                        let len = r.var("extent length")?;
                        end = off.checked_add(len).ok_or(invalid("extent", "overflows"))?;
                        ext.push((off, len));
                    }
                    sparse = Some(ext.into_boxed_slice());
                    Kind::File { size }
                }
                k => return Err(invalid("entry kind", k.to_string())),
            };
            entries.push(Entry { path, kind, mode, uid, gid, mtime, mtime_nsec, sparse });
        }
        r.finish()?;
        let total = entries.iter().try_fold(0u64, |acc, e| match e.kind {
            Kind::File { size } => acc.checked_add(size),
            _ => Some(acc),
        });
        if total.is_none() {
            return Err(invalid("manifest", "file sizes overflow"));
        }
        Manifest::new(block_size, entries).map_err(|why| invalid("manifest", why))
    }

    /// Names the content: the same tree and block size give the same id, which is how a po
    /// recognises a transfer it can resume.
    pub fn id(&self) -> [u8; 16] {
        Manifest::id_of(&self.encode())
    }

    /// The id of the manifest whose encoding is `encoded`.
    pub fn id_of(encoded: &[u8]) -> [u8; 16] {
        Md5::digest(encoded).into()
    }
}

/// The path rules on the bytes of `p` (see the module doc).
pub fn check_path(p: &[u8]) -> Result<(), String> {
    let shown = super::relpath::show(p);
    if p.is_empty() {
        return Err("empty path".into());
    }
    if p.len() > MAX_PATH {
        return Err(format!("path of {} bytes is over the limit {MAX_PATH}", p.len()));
    }
    if p.contains(&0) {
        return Err(format!("path {shown:?} contains NUL"));
    }
    if p.starts_with(b"/") {
        return Err(format!("path {shown:?} is absolute"));
    }
    for c in p.split(|&b| b == b'/') {
        if c.is_empty() || c == b"." || c == b".." {
            return Err(format!("path {shown:?} has an empty, . or .. component"));
        }
        if c.len() > MAX_NAME {
            return Err(format!("path {shown:?} has a name over {MAX_NAME} bytes"));
        }
    }
    Ok(())
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
impl Entry {
    /// A test entry: `path` of `kind`, mode 0644, owned by root, mtime 1, not sparse.
    pub fn plain(path: &str, kind: Kind) -> Entry {
        Entry { path: path.into(), kind, mode: 0o644, uid: 0, gid: 0, mtime: 1, mtime_nsec: 0, sparse: None }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(path: &str, kind: Kind) -> Entry {
        Entry::plain(path, kind)
    }

    /// An owner of u32::MAX (chown's "leave it") never decodes.
    #[test]
    fn an_owner_of_minus_one_is_refused() {
        for (uid, gid) in [(u32::MAX, 0), (0, u32::MAX)] {
            let mut f = e("f", Kind::File { size: 1 });
            (f.uid, f.gid) = (uid, gid);
            let bytes = Manifest::new(4, vec![f]).unwrap().encode();
            assert!(Manifest::decode(&bytes).is_err(), "{uid} {gid}");
        }
    }

    #[test]
    fn blocks_map_across_files() {
        let m = Manifest::new(
            4,
            vec![
                e("b", Kind::File { size: 9 }),
                e("a", Kind::Dir),
                e("a/x", Kind::File { size: 4 }),
                e("c", Kind::File { size: 0 }),
            ],
        )
        .unwrap();
        // stream: a/x (4 bytes) then b (9 bytes) = 13 bytes, 4 blocks of 4
        assert_eq!(m.blocks(), 4);
        assert_eq!(m.block(0), Some(BlockRef { index: 0, offset: 0, len: 4 }));
        assert_eq!(m.block(3), Some(BlockRef { index: 3, offset: 12, len: 1 }));
        assert_eq!(m.block(4), None);
        let seg = |entry, offset, len, at| Segment { entry, offset, len, at };
        assert_eq!(m.segments(&m.block(0).unwrap()), vec![seg(1, 0, 4, 0)]);
        assert_eq!(m.segments(&m.block(1).unwrap()), vec![seg(2, 0, 4, 0)]);
        assert_eq!(m.segments(&m.block(3).unwrap()), vec![seg(2, 8, 1, 0)]);
        assert_eq!(m.entry_blocks(2), (1, 3));
        assert_eq!(m.entry_blocks(3), (0, 0));
        // many small files share one block
        let mut es = vec![e("d", Kind::Dir)];
        es.extend((0..10).map(|i| e(&format!("d/f{i}"), Kind::File { size: 3 })));
        let m = Manifest::new(8, es).unwrap();
        assert_eq!(m.blocks(), 4);
        let s1 = m.segments(&m.block(1).unwrap());
        assert_eq!(s1, vec![seg(3, 2, 1, 0), seg(4, 0, 3, 1), seg(5, 0, 3, 4), seg(6, 0, 1, 7)]);
        let total: u32 = (0..4).flat_map(|i| m.segments(&m.block(i).unwrap())).map(|s| s.len).sum();
        assert_eq!(total as u64, m.bytes());
        let back = Manifest::decode(&m.encode()).unwrap();
        assert_eq!(back, m);
        assert_eq!(back.id(), m.id());
    }

    #[test]
    fn sparse_files_name_their_holes() {
        let mut f = e("f", Kind::File { size: 40 });
        f.sparse = Some(vec![(4, 4), (30, 2)].into());
        let mut hole = e("g", Kind::File { size: 8 });
        hole.sparse = Some(vec![].into());
        let m = Manifest::new(4, vec![f.clone(), hole, e("h", Kind::File { size: 4 })]).unwrap();
        let holes: Vec<bool> = (0..m.blocks()).map(|i| m.is_hole(&m.block(i).unwrap())).collect();
        // f: blocks 0..10 with data in 1 and 7; g: blocks 10, 11 all hole; h: block 12 dense
        let want: Vec<bool> = (0..13).map(|i| ![1, 7, 12].contains(&i)).collect();
        assert_eq!(holes, want);
        assert!(m.in_hole(0, 8, 22) && !m.in_hole(0, 7, 1) && !m.in_hole(0, 8, 23));
        let back = Manifest::decode(&m.encode()).unwrap();
        assert_eq!(back, m);
        for bad in [vec![(0, 0)], vec![(0, 4), (4, 4)], vec![(8, 4), (0, 4)], vec![(38, 4)], vec![(u64::MAX, 2)]] {
            f.sparse = Some(bad.clone().into());
            assert!(Manifest::new(4, vec![f.clone()]).is_err(), "{bad:?}");
        }
        let mut d = e("d", Kind::Dir);
        d.sparse = Some(vec![].into());
        assert!(Manifest::new(4, vec![d]).is_err());
    }

    #[test]
    fn the_wire_form_is_compact_and_checked() {
        // Shared prefixes cut inside a multi-byte character, mtimes before 1970 and far apart.
        let mut es = vec![e("d", Kind::Dir), e("d/é1", Kind::File { size: 1 << 33 })];
        es.push(Entry { mtime: -5, mtime_nsec: 999_999_999, ..e("d/é2", Kind::File { size: 0 }) });
        es.push(Entry { mtime: i64::MAX, ..e("d/ê", Kind::Symlink { target: "é1".into() }) });
        es.push(Entry { mtime: i64::MIN, ..e("d/ë", Kind::Dir) });
        let m = Manifest::new(4096, es).unwrap();
        assert_eq!(Manifest::decode(&m.encode()).unwrap(), m);
        // 20,000 files in the lab's layout: about 22 bytes an entry
        let mut es: Vec<Entry> = vec![e("tree", Kind::Dir)];
        for k in 0..20_000u64 {
            let (a, b) = (format!("tree/d{:02}", k % 8), format!("tree/d{:02}/d{:02}", k % 8, (k / 8) % 5));
            for d in [a, b] {
                if !es.iter().any(|x| x.path == d.as_str()) {
                    es.push(e(&d, Kind::Dir));
                }
            }
            let f = format!("tree/d{:02}/d{:02}/f{k:04}.dat", k % 8, (k / 8) % 5);
            es.push(Entry {
                mtime: 1_764_000_000 + (k as i64 % 3),
                mtime_nsec: (k * 7919) as u32,
                ..e(&f, Kind::File { size: 1024 + k })
            });
        }
        let m = Manifest::new(4096, es).unwrap();
        let n = m.encode().len();
        eprintln!("20,000 files: {n} bytes of manifest ({} an entry)", n / m.entries().len());
        assert!(n < 20_050 * 26, "{n} bytes");
        assert_eq!(Manifest::decode(&m.encode()).unwrap(), m);
        // A prefix longer than the previous path, a varint past 64 bits: refused, never a
        // panic. A prefix that cuts a character is just bytes.
        let mut w = Writer::new();
        w.u32(4096);
        w.u32(1);
        w.var(3);
        let bad_prefix = w.buf.clone();
        assert!(Manifest::decode(&bad_prefix).is_err());
        let mut w = Writer::new();
        w.u32(4096);
        w.u32(1);
        w.raw(&[0xff; 11]);
        assert!(Manifest::decode(&w.buf).is_err());
        let good = Manifest::new(4, vec![e("é", Kind::Dir)]).unwrap().encode();
        let mut w = Writer::new();
        w.raw(&good[..4]);
        w.u32(2);
        w.raw(&good[8..]);
        w.var(1); // one byte of "é", then "x"
        w.var(1);
        w.raw(b"x");
        w.raw(&good[8 + 4..]);
        let cut = Manifest::decode(&w.buf).unwrap();
        assert!(cut.entries().iter().any(|e| e.path.as_bytes() == b"\xc3x"));
    }

    #[test]
    fn any_name_travels_as_bytes() {
        let mut es = vec![e("d", Kind::Dir)];
        for name in [&b"d/\xff\xfe.bin"[..], b"d/\x01\n\t", b"d/caf\xc3\xa9", b"d/\\x"] {
            es.push(Entry {
                path: RelPath::from_bytes(name.to_vec()),
                uid: 1000,
                gid: 7,
                ..e("x", Kind::File { size: 3 })
            });
        }
        es.push(e("l", Kind::Symlink { target: b"/\xff/\x80".to_vec() }));
        let m = Manifest::new(4096, es).unwrap();
        let back = Manifest::decode(&m.encode()).unwrap();
        assert_eq!(back, m);
        assert_eq!(back.entries()[1].path.as_bytes(), b"d/\x01\n\t");
        assert_eq!((back.entries()[2].uid, back.entries()[2].gid), (1000, 7));
        // NUL, `/` in a name (an empty component), `.` and `..` stay refused as bytes
        for bad in [&b"d/a\0b"[..], b"d//\xff", b"d/./\xff", b"d/../\xff", b"\xff/..", b"/\xff"] {
            let es = vec![e("d", Kind::Dir), Entry { path: RelPath::from_bytes(bad.to_vec()), ..e("x", Kind::Dir) }];
            assert!(Manifest::new(4, es).is_err(), "{bad:?}");
        }
        // a name over MAX_NAME bytes, a path over MAX_PATH
        let long = RelPath::from_bytes(vec![0xff; MAX_NAME + 1]);
        assert!(Manifest::new(4, vec![Entry { path: long, ..e("x", Kind::Dir) }]).is_err());
        assert!(Manifest::new(4, vec![e("l", Kind::Symlink { target: b"a\0b".to_vec() })]).is_err());
    }

    #[test]
    fn hard_links_name_an_earlier_file_of_the_tree_only() {
        let link = |p: &str, to: &str| e(p, Kind::Link { to: to.into() });
        let ok = Manifest::new(
            4,
            vec![e("d", Kind::Dir), e("d/a", Kind::File { size: 9 }), link("d/b", "d/a"), link("z", "d/a")],
        )
        .unwrap();
        assert_eq!(ok.blocks(), 3, "a link has no bytes of its own");
        assert_eq!(ok.files(), 1);
        let back = Manifest::decode(&ok.encode()).unwrap();
        assert_eq!(back, ok);
        // Built: a link to itself, to a later file, to nothing, to a directory, a symlink or
        // another link, to a path outside the tree.
        let f = || e("f", Kind::File { size: 1 });
        for (what, es) in [
            ("itself", vec![link("a", "a")]),
            ("later", vec![link("a", "f"), f()]),
            ("missing", vec![f(), link("g", "nope")]),
            ("dir", vec![e("d", Kind::Dir), link("e", "d")]),
            ("symlink", vec![e("s", Kind::Symlink { target: b"f".to_vec() }), link("t", "s")]),
            ("link", vec![f(), link("g", "f"), link("h", "g")]),
            ("outside", vec![f(), link("g", "../etc/passwd")]),
            ("absolute", vec![f(), link("g", "/etc/passwd")]),
        ] {
            assert!(Manifest::new(4, es).is_err(), "{what}");
        }
        // Decoded: the hostile wire forms (an index past the entries, at itself, at a
        // directory, over u64), refused before anything is allocated for them.
        let enc = |kind_and_index: &[u8]| {
            let mut w = Writer::new();
            w.u32(4);
            w.u32(2);
            for (k, name) in [(1u8, b"a"), (4u8, b"b")] {
                w.var(0);
                w.var(1);
                w.raw(name);
                for _ in 0..5 {
                    w.var(0);
                }
                w.u8(k);
                if k == 1 {
                    w.var(1);
                } else {
                    w.raw(kind_and_index);
                }
            }
            w.buf
        };
        assert!(Manifest::decode(&enc(&[0])).is_ok(), "b links to a");
        for bad in [&[1u8][..], &[2], &[0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x7f], &[]] {
            assert!(Manifest::decode(&enc(bad)).is_err(), "{bad:?}");
        }
        let mut dir_first = enc(&[0]);
        dir_first[8 + 8] = 0; // a is a directory
        let n = dir_first.len();
        dir_first.remove(8 + 9); // and has no size
        assert!(Manifest::decode(&dir_first[..n - 1]).is_err());
    }

    #[test]
    fn decoding_costs_what_was_sent_and_blocks_are_capped() {
        // 2^62 bytes of file would be 2^50 blocks of per-block state: refused, not allocated.
        let huge = vec![e("f", Kind::File { size: 1 << 62 })];
        let err = Manifest::new(4096, huge.clone()).unwrap_err();
        assert!(err.contains("raise block_size"), "{err}");
        let mut w = Writer::new();
        w.u32(4096);
        w.u32(1);
        w.raw(&Manifest { block_size: 4096, entries: huge, starts: vec![(0, 0)], blocks: 0, bytes: 0 }.encode()[8..]);
        assert!(Manifest::decode(&w.buf).is_err());
        assert!(Manifest::new(4096, vec![e("f", Kind::File { size: MAX_BLOCKS * 4096 })]).is_ok());
        // Each entry shares a long prefix with the one before and adds a byte: 4 bytes on the
        // wire claim ever longer paths. The decoder stops at MAX_PATH_EXPANSION times the frame.
        let mut es = Vec::new();
        let mut long = String::new();
        for c in ["d", "e", "f", "g", "h"] {
            long = if long.is_empty() { c.repeat(200) } else { format!("{long}/{}", c.repeat(200)) };
            es.push(e(&long, Kind::Dir));
        }
        for k in 0..2_000u32 {
            es.push(e(&format!("{long}/{k:05}"), Kind::File { size: 0 }));
        }
        let mut w = Writer::new();
        w.u32(4096);
        w.u32(20_000);
        for k in 0..20_000u32 {
            w.var(if k == 0 { 0 } else { (MAX_PATH - 2) as u64 });
            w.var(if k == 0 { (MAX_PATH - 1) as u64 } else { 1 });
            if k == 0 {
                w.raw(&vec![b'a'; MAX_PATH - 1]);
            } else {
                w.raw(b"b");
            }
            w.var(0o755);
            for _ in 0..4 {
                w.var(0); // mtime, nsec, uid, gid
            }
            w.u8(0);
        }
        let err = Manifest::decode(&w.buf).unwrap_err().to_string();
        assert!(err.contains("far more than was sent"), "{err}");
        let ok = Manifest::new(4096, es).unwrap();
        assert!(Manifest::decode(&ok.encode()).is_ok(), "a real tree of long paths still decodes");
    }

    #[test]
    fn path_rules() {
        for bad in ["../x", "/etc/passwd", "a//b", "a/./b", "x\0y", ""] {
            assert!(Manifest::new(4, vec![e(bad, Kind::Dir)]).is_err(), "{bad:?}");
        }
        assert!(Manifest::new(4, vec![e("a", Kind::Dir), e("a", Kind::Dir)]).is_err());
        // a file where a directory is expected, and writing through a symlink
        assert!(Manifest::new(4, vec![e("a", Kind::File { size: 1 }), e("a/b", Kind::File { size: 1 })]).is_err());
        let link = e("l", Kind::Symlink { target: "/etc".into() });
        assert!(Manifest::new(4, vec![link.clone(), e("l/passwd", Kind::File { size: 1 })]).is_err());
        assert!(Manifest::new(4, vec![link]).is_ok());
    }
}
