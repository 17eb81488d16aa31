//! Resume: what an earlier attempt left in a stage, so that a po that restarts (or a master
//! that is run again) fetches only the rest. Nothing staged counts on trust: the bytes may
//! have come from a rogue peer, or been cut short by a crash. The record in the state dir
//! and the data found in the staged files name candidates; the master's digests decide.
//!
//! Record layout: `WGH1`, the manifest id (16 bytes), the block count (u64 BE), the
//! have-bitmap.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;

use super::at::open_file_path;
use super::delta::{Stop, REUSE_BUDGET};
use super::staged::Staged;
use crate::proto::bitmap::{bitmap, unpack};
use crate::proto::checksum::digest;
use crate::proto::manifest::{Kind, RelPath};
use crate::proto::msg::Digest;
use crate::proto::{Manifest, Segment};

/// How often a po makes its held blocks durable for a resume.
pub const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);
const RECORD_MAGIC: &[u8; 4] = b"WGH1";

/// Where the record of the stage folder `stage` in `dest` lives: one a (dest, manifest) pair,
/// so that the same tree staged in two dests keeps two records. The name is
/// `wugui-stage-<manifest id>-<8 bytes of BLAKE3 of the dest, by components>.held`.
pub fn record_path(state_dir: &Path, dest: &Path, stage: &str) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    let dest: PathBuf = dest.components().collect();
    let tag = crate::proto::manifest::hex(&blake3::hash(dest.as_os_str().as_bytes()).as_bytes()[..8]);
    state_dir.join(format!("{}-{tag}.held", stage.trim_start_matches('.')))
}

/// The held blocks recorded for `manifest`, if a record of that exact manifest exists.
pub fn read_record(path: &Path, manifest: &Manifest) -> Option<Vec<bool>> {
    let b = std::fs::read(path).ok()?;
    let blocks = manifest.blocks() as usize;
    if b.len() != 4 + 16 + 8 + blocks.div_ceil(8) || &b[..4] != RECORD_MAGIC || b[4..20] != manifest.id() {
        return None;
    }
    if u64::from_be_bytes(b[20..28].try_into().ok()?) != blocks as u64 {
        return None;
    }
    Some(unpack(&b[28..], blocks))
}

impl Staged {
    /// Finds the blocks an earlier attempt may have left whole in a reopened stage: those
    /// its record lists (when `fsync` was on), and those whose staged bytes hold data (the
    /// record lags by up to a second, and a crash may leave it older). Nothing is read here;
    /// per file, a few SEEK_DATA/SEEK_HOLE calls.
    pub fn find_restaged(&mut self, transfer: u64) {
        if !self.reopened {
            return;
        }
        let started = Instant::now();
        let mut maybe = read_record(&self.record, &self.manifest).unwrap_or_else(|| vec![false; self.held.len()]);
        let recorded = maybe.iter().filter(|m| **m).count();
        for (entry, e) in self.manifest.entries().iter().enumerate() {
            if !matches!(e.kind, Kind::File { size } if size > 0) {
                continue;
            }
            let Some(data) = staged_data(self.stage_fd.as_fd(), &e.path) else { continue };
            let (first, n) = self.manifest.entry_blocks(entry as u32);
            for i in first..first + n {
                if maybe[i as usize] {
                    continue;
                }
                let b = self.manifest.block(i).expect("entry blocks are in the manifest");
                let mut mine = self.manifest.segments(&b).into_iter().filter(|s| s.entry == entry as u32);
                maybe[i as usize] = mine.any(|s| overlaps(&data, s.offset, s.len as u64));
            }
        }
        self.restaged = (0..self.held.len()).filter(|&i| maybe[i] && !self.held[i]).map(|i| i as u64).collect();
        log::info!(
            "event=stage_reopened transfer={transfer} candidates={} recorded={recorded} ms={}",
            self.restaged.len(),
            started.elapsed().as_millis()
        );
    }

    /// Takes those of the listed blocks an earlier attempt staged whose staged bytes match
    /// their digest from the master; the others are fetched again. Reading stops at `stop`.
    /// Returns the blocks taken.
    pub fn verify_restaged(&mut self, transfer: u64, sums: &[(u64, Digest)], stop: Stop) -> Vec<u64> {
        let started = Instant::now();
        let mut files = StagedFiles(HashMap::new());
        let (mut taken, mut checked, mut bytes) = (Vec::new(), 0usize, 0u64);
        let mut buf = Vec::new();
        let mut stopped = false;
        for &(i, want) in sums {
            if self.restaged.binary_search(&i).is_err() || self.held[i as usize] {
                continue;
            }
            if stop.now() {
                stopped = true;
                break;
            }
            let b = self.manifest.block(i).expect("candidates are in the manifest");
            let segs = self.manifest.segments(&b);
            checked += 1;
            buf.resize(b.len as usize, 0);
            if !files.read(self, &segs, &mut buf) || digest(&buf) != want {
                continue;
            }
            self.now_held(transfer, i, &segs);
            taken.push(i);
            bytes += b.len as u64;
        }
        if stopped && !stop.cancelled() {
            log::warn!("event=stage_check_budget_spent transfer={transfer} seconds={}", REUSE_BUDGET.as_secs());
        }
        if checked > 0 {
            // `held=` counts what the earlier attempt left that is good, of all blocks.
            log::info!(
                "event=resume transfer={transfer} held={}/{} checked={checked} bytes={bytes} ms={}",
                taken.len(),
                self.held.len(),
                started.elapsed().as_millis()
            );
        }
        taken
    }

    /// Makes the staged data durable, then records which blocks it holds: a block in the
    /// record is always on disk. The record is replaced atomically.
    pub fn checkpoint(&mut self) -> io::Result<()> {
        self.checkpointed = Instant::now();
        if !self.dirty || !self.sync {
            return Ok(());
        }
        write_checkpoint(self.stage_fd.as_fd(), &self.record, &self.record_bytes(), &self.record_lock)?;
        self.dirty = false;
        Ok(())
    }

    /// The resume record of the blocks held now.
    pub fn record_bytes(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(28 + self.held.len() / 8 + 1);
        b.extend_from_slice(RECORD_MAGIC);
        b.extend_from_slice(&self.manifest.id());
        b.extend_from_slice(&(self.held.len() as u64).to_be_bytes());
        b.extend_from_slice(&bitmap(&self.held));
        b
    }

    /// Checkpoints, logging a failure (the transfer goes on; a resume just fetches more).
    pub fn checkpoint_or_warn(&mut self, transfer: u64) {
        if let Err(e) = self.checkpoint() {
            log::warn!(
                "event=checkpoint_failed transfer={transfer} error={}",
                crate::logging::kv_quote(&e.to_string())
            );
        }
    }
}

/// Makes the stage's data durable (`stage`: any descriptor on its filesystem), then replaces
/// the record with `bytes` (the blocks held before the sync began), one writer at a time.
pub fn write_checkpoint(stage: BorrowedFd, record: &Path, bytes: &[u8], lock: &std::sync::Mutex<()>) -> io::Result<()> {
    nix::unistd::syncfs(stage.as_raw_fd())?;
    let _one = lock.lock().unwrap_or_else(|e| e.into_inner());
    super::state_file::replace(record, bytes, true)
}

/// The byte ranges of a staged file that hold data: a range never written reads as a hole.
/// `None` when the file is not there (no block of it was written).
fn staged_data(stage: BorrowedFd, path: &RelPath) -> Option<Vec<(u64, u64)>> {
    let f = File::from(open_file_path(stage, path, OFlag::O_RDONLY).ok()?);
    let size = f.metadata().ok()?.len();
    // When the filesystem cannot say (or the list would be long), all of it may hold data.
    Some(crate::tree::data_extents(&f, size).unwrap_or_else(|| vec![(0, size)]))
}

/// Whether `off..off+len` meets one of the sorted ranges `data`.
fn overlaps(data: &[(u64, u64)], off: u64, len: u64) -> bool {
    let i = data.partition_point(|&(o, l)| o + l <= off);
    data.get(i).is_some_and(|&(o, _)| o < off + len)
}

/// Staged files open for reading while blocks are checked in stream order.
struct StagedFiles(HashMap<u32, Option<File>>);

impl StagedFiles {
    /// Reads block `segs` from the stage into `buf`. A sparse file may end in a hole that no
    /// write reached (zeros; seal extends it); any other short read means the block is not
    /// whole. False when the bytes cannot be read.
    fn read(&mut self, t: &Staged, segs: &[Segment], buf: &mut [u8]) -> bool {
        // Files before this block's first are done with.
        if let Some(first) = segs.first() {
            self.0.retain(|e, _| *e >= first.entry);
        }
        segs.iter().all(|seg| {
            let e = &t.manifest.entries()[seg.entry as usize];
            let f = self
                .0
                .entry(seg.entry)
                .or_insert_with(|| open_file_path(t.stage_fd.as_fd(), &e.path, OFlag::O_RDONLY).ok().map(File::from));
            let Some(f) = f.as_ref() else { return false };
            let piece = &mut buf[seg.at as usize..seg.at as usize + seg.len as usize];
            match read_at_most(f, piece, seg.offset) {
                Ok(n) if n == piece.len() => true,
                Ok(n) if e.sparse.is_some() => {
                    piece[n..].fill(0);
                    true
                }
                _ => false,
            }
        })
    }
}

/// Reads `buf.len()` bytes at `offset` of `f`, fewer at the end of the file. Returns how many.
fn read_at_most(f: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read_at(&mut buf[n..], offset + n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_read_for_its_own_manifest_only() {
        let base = crate::store::tests::scratch("record");
        let src = base.join("src");
        std::fs::create_dir(&src).unwrap();
        std::fs::write(src.join("f"), vec![3u8; 10_000]).unwrap();
        let m = crate::tree::walk(&src, &[], 1000).unwrap().manifest;
        let held: Vec<bool> = (0..m.blocks()).map(|i| i % 3 == 1).collect();
        let path = base.join("rec.held");
        let mut b = RECORD_MAGIC.to_vec();
        b.extend_from_slice(&m.id());
        b.extend_from_slice(&m.blocks().to_be_bytes());
        b.extend_from_slice(&bitmap(&held));
        std::fs::write(&path, &b).unwrap();
        assert_eq!(read_record(&path, &m), Some(held));
        let other = crate::tree::walk(&src, &[], 500).unwrap().manifest;
        assert_eq!(read_record(&path, &other), None);
        std::fs::write(&path, &b[..b.len() - 1]).unwrap();
        assert_eq!(read_record(&path, &m), None);
        crate::store::tests::cleanup(&base);
    }

    use crate::proto::{BlockRef, Source, Store, Verify};
    use crate::store::files::body_bytes;
    use crate::store::tests::RETENTION;
    use crate::store::tests::{cleanup, scratch, snapshot};
    use crate::store::{stage_name, DiskStore};
    use crate::tree::{walk, FsSource};

    const BS: u64 = 16 << 10;

    /// A source of a dense file (10 blocks) and a sparse one (data in its first and 13th
    /// block, holes between), its manifest, and the first block of each file.
    fn sparse_and_dense(src: &Path) -> (Manifest, u64, u64) {
        std::fs::create_dir_all(src).unwrap();
        std::fs::write(src.join("d.bin"), crate::testutil::noise(10 * BS as usize, 1)).unwrap();
        let f = File::create(src.join("s.bin")).unwrap();
        use std::os::unix::fs::FileExt;
        f.write_all_at(&crate::testutil::noise(4096, 2), 0).unwrap();
        f.write_all_at(&crate::testutil::noise(4096, 3), 12 * BS).unwrap();
        f.set_len(16 * BS).unwrap();
        let m = walk(src, &[], BS as u32).unwrap().manifest;
        let first = |name: &str| m.entry_blocks(m.entries().iter().position(|e| e.path == name).unwrap() as u32).0;
        let (d, s) = (first("d.bin"), first("s.bin"));
        assert!(m.entries().iter().any(|e| e.path == "s.bin" && e.sparse.is_some()), "no holes on this disk");
        (m, d, s)
    }

    fn bytes_of(fs: &mut FsSource, b: &BlockRef) -> Vec<u8> {
        body_bytes(&fs.block(b, Verify::None, false).unwrap().0).unwrap()
    }

    /// The master's answer to a CHECK of `blocks`.
    fn sums(fs: &mut FsSource, m: &Manifest, blocks: &[u64]) -> Vec<(u64, Digest)> {
        blocks.iter().map(|&i| (i, digest(&bytes_of(fs, &m.block(i).unwrap())))).collect()
    }

    fn write_at(path: &Path, data: &[u8], offset: u64) {
        let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
        f.write_all_at(data, offset).unwrap();
    }

    #[test]
    fn staged_blocks_count_once_the_masters_digests_match() {
        let base = scratch("resume");
        let (src, dest) = (base.join("src"), base.join("dest"));
        let (m, d, s) = sparse_and_dense(&src);
        let holes: Vec<bool> = (0..m.blocks()).map(|i| m.is_hole(&m.block(i).unwrap())).collect();
        assert_eq!(holes.iter().filter(|h| **h).count(), 14);
        let mut store = DiskStore::new(base.join("state"), vec![base.clone()], RETENTION).unwrap();
        let dest_s = dest.to_str().unwrap();
        assert_eq!(store.prepare(1, dest_s, &m, false).unwrap(), holes);
        let mut fs = FsSource::new(src.clone(), &m);
        for i in (d..d + 7).chain([s]) {
            let b = m.block(i).unwrap();
            store.write_block(1, &b, &bytes_of(&mut fs, &b)).unwrap();
        }
        store.abort(1, true);
        let stage = dest.join(stage_name(&m));
        // Landed after the last record: whole on disk, missing from the record.
        write_at(&stage.join("d.bin"), &bytes_of(&mut fs, &m.block(d + 7).unwrap()), 7 * BS);
        // Forged on disk after staging, the record claiming them: a byte of a dense block,
        // and bytes in a page of zeros of a sparse block (a page never written).
        write_at(&stage.join("d.bin"), b"forged", 2 * BS + 100);
        write_at(&stage.join("s.bin"), &[0xee; 100], 8192);

        // Nothing staged counts before the check; blocks of holes do.
        assert_eq!(store.prepare(2, dest_s, &m, false).unwrap(), holes);
        let mut cand = store.candidates(2);
        cand.sort_unstable();
        let mut want: Vec<u64> = (d..d + 8).chain([s]).collect();
        want.sort_unstable();
        assert_eq!(cand, want);
        let mut taken = store.check(2, &sums(&mut fs, &m, &cand));
        taken.sort_unstable();
        assert_eq!(taken, [0, 1, 3, 4, 5, 6, 7].map(|k| d + k));
        // The rest travels again, over the forged bytes; the published copy is the source.
        for i in (0..m.blocks()).filter(|i| !holes[*i as usize] && !taken.contains(i)) {
            let b = m.block(i).unwrap();
            store.write_block(2, &b, &bytes_of(&mut fs, &b)).unwrap();
        }
        store.seal(2).unwrap();
        store.publish(2, None, false).unwrap();
        assert_eq!(snapshot(&dest, &[]).1, snapshot(&src, &[]).1);
        cleanup(&base);
    }

    #[test]
    fn without_records_staged_data_is_still_found() {
        let base = scratch("resume-nosync");
        let (src, dest) = (base.join("src"), base.join("dest"));
        let (m, d, _) = sparse_and_dense(&src);
        let state = base.join("state");
        let mut store = DiskStore::new(state.clone(), vec![base.clone()], RETENTION).unwrap().without_sync();
        let dest_s = dest.to_str().unwrap();
        store.prepare(1, dest_s, &m, false).unwrap();
        let mut fs = FsSource::new(src.clone(), &m);
        for i in [d + 1, d + 2, d + 5] {
            let b = m.block(i).unwrap();
            store.write_block(1, &b, &bytes_of(&mut fs, &b)).unwrap();
        }
        store.abort(1, true);
        let records = std::fs::read_dir(&state).unwrap().filter(|e| e.as_ref().unwrap().path().extension().is_some());
        assert_eq!(records.count(), 0, "no record with fsync off");
        store.prepare(2, dest_s, &m, false).unwrap();
        let cand = store.candidates(2);
        // Data lands in whole pages: each written block is found, nothing past the last.
        assert!([d + 1, d + 2, d + 5].iter().all(|i| cand.contains(i)), "{cand:?}");
        assert!(cand.iter().all(|&i| i < d + 6), "{cand:?}");
        let mut taken = store.check(2, &sums(&mut fs, &m, &cand));
        taken.sort_unstable();
        assert_eq!(taken, [d + 1, d + 2, d + 5]);
        store.abort(2, false);
        cleanup(&base);
    }
}
