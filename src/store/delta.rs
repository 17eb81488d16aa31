//! Incremental transfer: blocks the published copy in the dest already holds are copied into
//! the stage instead of travelling.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;
use nix::sys::stat::fstat;

use super::at::open_file_path;
use super::staged::Staged;
use crate::logging::kv_quote;
use crate::proto::checksum::digest;
use crate::proto::manifest::Kind;
use crate::proto::msg::Digest;
use crate::proto::Segment;

/// Reuse of what this host holds (the published copy, an earlier stage) stops reading after
/// this long a phase and fetches the rest, so that the master, waiting for the po's answer to
/// its offer, does not give up on it.
pub const REUSE_BUDGET: Duration = Duration::from_secs(30);

/// When reuse stops reading: its time budget is spent, or its job was cancelled (an abort).
#[derive(Clone, Copy)]
pub struct Stop<'a> {
    pub until: Instant,
    pub cancel: Option<&'a AtomicBool>,
    /// Test hook (`WUGUI_FAILPOINT=hold_delta:PATH`): each block waits until PATH exists (or
    /// the job is cancelled), so a test sees a check in the middle of its reading.
    pub hold: Option<&'a Path>,
}

impl Stop<'_> {
    /// The time budget from now, nothing else.
    pub fn budget() -> Stop<'static> {
        Stop { until: Instant::now() + REUSE_BUDGET, cancel: None, hold: None }
    }

    pub fn cancelled(&self) -> bool {
        self.cancel.is_some_and(|c| c.load(Ordering::Relaxed))
    }

    /// Whether to stop before the next block (after waiting while held).
    pub fn now(&self) -> bool {
        while self.hold.is_some_and(|h| !h.exists()) && !self.cancelled() {
            std::thread::sleep(Duration::from_millis(10));
        }
        self.cancelled() || Instant::now() > self.until
    }
}

/// A file of the published copy, for incremental transfer: open, and whether its size and
/// mtime equal the manifest's (then it is taken as unchanged without hashing, as rsync does).
struct Old {
    file: File,
    size: u64,
    same: bool,
}

/// The published copy's files, opened once each while blocks are visited in stream order.
struct OldFiles(HashMap<u32, Option<Old>>);

impl OldFiles {
    /// Whether the published copy has every piece of block `b` at the same place, and
    /// whether all those files look unchanged by size and mtime.
    fn covers(&mut self, t: &Staged, segs: &[Segment]) -> Option<bool> {
        // Files before this block's first are done with.
        if let Some(first) = segs.first() {
            self.0.retain(|e, _| *e >= first.entry);
        }
        let mut same = true;
        for seg in segs {
            let o = self.0.entry(seg.entry).or_insert_with(|| {
                let e = &t.manifest.entries()[seg.entry as usize];
                let fd = open_file_path(t.dest_fd.as_fd(), &e.path, OFlag::O_RDONLY).ok()?;
                let st = fstat(std::os::fd::AsRawFd::as_raw_fd(&fd)).ok()?;
                let size = st.st_size as u64;
                let same =
                    Kind::File { size } == e.kind && st.st_mtime == e.mtime && st.st_mtime_nsec as u32 == e.mtime_nsec;
                Some(Old { file: File::from(fd), size, same })
            });
            let o = o.as_ref()?;
            if o.size < seg.offset + seg.len as u64 {
                return None;
            }
            same &= o.same;
        }
        Some(same)
    }

    /// Block `b`'s bytes from the published copy (after `covers` said yes).
    fn read(&self, segs: &[Segment], buf: &mut [u8]) -> io::Result<()> {
        for seg in segs {
            let o = self.0.get(&seg.entry).and_then(|o| o.as_ref()).ok_or_else(|| io::Error::other("not open"))?;
            o.file.read_exact_at(&mut buf[seg.at as usize..seg.at as usize + seg.len as usize], seg.offset)?;
        }
        Ok(())
    }
}

impl Staged {
    /// Incremental transfer, from the published copy in the dest (symlinks not followed):
    /// with `sums` None, takes every missing block whose files are unchanged by size and
    /// mtime and returns the blocks the copy may hold in changed files (to check); with
    /// `sums`, takes those of the listed blocks whose bytes match their digest. Taken blocks
    /// are copied into the stage and never travel. Reading stops at `stop`. Returns (taken,
    /// to check).
    pub fn reuse_dest(&mut self, transfer: u64, sums: Option<&[(u64, Digest)]>, stop: Stop) -> (Vec<u64>, Vec<u64>) {
        let started = Instant::now();
        let (mut bytes, mut hashed) = (0u64, 0u64);
        let mut old = OldFiles(HashMap::new());
        let (mut taken, mut candidates) = (Vec::new(), Vec::new());
        let mut buf = Vec::new();
        let todo: Vec<(u64, Option<Digest>)> = match sums {
            None => (0..self.held.len() as u64).map(|i| (i, None)).collect(),
            Some(s) => s.iter().map(|(i, d)| (*i, Some(*d))).collect(),
        };
        let mut stopped = false;
        for (i, want) in todo {
            let Some(b) = self.manifest.block(i).filter(|_| !self.held[i as usize]) else { continue };
            if stop.now() {
                stopped = true;
                break;
            }
            let segs = self.manifest.segments(&b);
            let Some(same) = old.covers(self, &segs) else { continue };
            if !same && want.is_none() {
                candidates.push(i);
                continue;
            }
            buf.resize(b.len as usize, 0);
            if old.read(&segs, &mut buf).is_err() {
                continue;
            }
            if let Some(d) = want {
                hashed += b.len as u64;
                if digest(&buf) != d {
                    continue;
                }
            }
            if let Err((path, e)) = self.put(transfer, i, &segs, &buf) {
                log::warn!(
                    "event=delta_failed transfer={transfer} path={} error={}",
                    kv_quote(&path.to_string()),
                    kv_quote(&e.to_string())
                );
                break;
            }
            taken.push(i);
            bytes += b.len as u64;
        }
        if stopped && !stop.cancelled() {
            log::warn!("event=delta_budget_spent transfer={transfer} seconds={}", REUSE_BUDGET.as_secs());
        }
        log::info!(
            "event=delta transfer={transfer} phase={} reused={}/{} bytes={bytes} hashed={hashed} to_check={} ms={}",
            if sums.is_some() { "check" } else { "quick" },
            taken.len(),
            self.held.len(),
            candidates.len(),
            started.elapsed().as_millis()
        );
        (taken, candidates)
    }
}

impl Staged {
    /// `Store::check`: the stage first; a block it does not hold whole may still be in the
    /// published copy. Both share one time budget.
    pub fn check_sums(&mut self, transfer: u64, sums: &[(u64, Digest)], stop: Stop) -> Vec<u64> {
        let mut taken = self.verify_restaged(transfer, sums, stop);
        let rest: Vec<(u64, Digest)> = sums
            .iter()
            .filter(|(i, _)| self.reusable.binary_search(i).is_ok() && self.held.get(*i as usize) == Some(&false))
            .copied()
            .collect();
        if !rest.is_empty() {
            taken.extend(self.reuse_dest(transfer, Some(&rest), stop).0);
        }
        if stop.cancelled() {
            log::info!("event=disk_job_cancelled transfer={transfer} kind=check taken={}", taken.len());
        }
        taken
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{JobDone, Source, Store, Verify};
    use crate::store::files::body_bytes;
    use crate::store::tests::RETENTION;
    use crate::store::tests::{cleanup, scratch, snapshot, transfer, write};
    use crate::store::DiskStore;
    use crate::tree::{walk, FsSource};

    #[test]
    fn delta_reuses_what_the_published_copy_holds() {
        let base = scratch("delta");
        let (src, dest, outside) = (base.join("src"), base.join("dest"), base.join("outside"));
        std::fs::create_dir_all(&src).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        let edited = crate::testutil::noise(40 << 10, 1);
        write(&src.join("edited.bin"), &edited, 0o644);
        write(&src.join("grown.log"), &crate::testutil::noise(10 << 10, 2), 0o644);
        write(&src.join("same.bin"), &crate::testutil::noise(40 << 10, 3), 0o644);
        let m1 = walk(&src, &[], 4096).unwrap().manifest;
        let mut store = DiskStore::new(base.join("state"), vec![base.clone()], RETENTION).unwrap();
        transfer(&mut store, 1, &src, &dest, &m1);
        store.publish(1, None, false).unwrap();
        let v1: HashMap<String, Vec<u8>> = ["edited.bin", "grown.log", "same.bin"]
            .iter()
            .map(|n| (n.to_string(), std::fs::read(dest.join(n)).unwrap()))
            .collect();

        // Version 2: one 4K range edited in place, a log appended to, a new file, and a file
        // whose old copy is a planted symlink to identical bytes outside the dest.
        let mut e2 = edited.clone();
        e2[20_000..24_000].copy_from_slice(&crate::testutil::noise(4000, 9));
        write(&src.join("edited.bin"), &e2, 0o644);
        let mut grown = v1["grown.log"].clone();
        grown.extend(crate::testutil::noise(10 << 10, 4));
        write(&src.join("grown.log"), &grown, 0o644);
        write(&src.join("new.txt"), b"new", 0o644);
        let evil = crate::testutil::noise(8192, 5);
        write(&src.join("evil.bin"), &evil, 0o644);
        write(&outside.join("evil.bin"), &evil, 0o644);
        std::os::unix::fs::symlink(outside.join("evil.bin"), dest.join("evil.bin")).unwrap();
        let m2 = walk(&src, &[], 4096).unwrap().manifest;
        let mut fs = FsSource::new(src.clone(), &m2);
        let mut sums_of = HashMap::new();
        let mut want = Vec::new();
        for i in 0..m2.blocks() {
            let b = m2.block(i).unwrap();
            let (body, sum) = fs.block(&b, Verify::Blake3, false).unwrap();
            let crate::proto::Sum::Blake3(d) = sum else { panic!("blake3") };
            sums_of.insert(i, d);
            // The oracle: every piece of the block is at the same place in a version 1 file.
            let data = body_bytes(&body).unwrap();
            want.push(m2.segments(&b).iter().all(|s| {
                let old = v1.get(&m2.entries()[s.entry as usize].path.to_string());
                let (from, to) = (s.offset as usize, s.offset as usize + s.len as usize);
                old.is_some_and(|o| o.len() >= to && o[from..to] == data[s.at as usize..s.at as usize + s.len as usize])
            }));
        }
        // Quick phase: blocks wholly in same.bin (same size and mtime) are taken unread.
        let mut held = store.prepare(2, dest.to_str().unwrap(), &m2, true).unwrap();
        let same = m2.entries().iter().position(|e| e.path == "same.bin").unwrap() as u32;
        let (first, n) = m2.entry_blocks(same);
        assert!((first + 1..first + n - 1).all(|i| held[i as usize]));
        // Check phase: the master's digests for the candidates in changed files.
        let check = store.candidates(2);
        assert!(!check.is_empty() && check.iter().all(|&i| !held[i as usize]));
        let sums: Vec<(u64, Digest)> = check.iter().map(|&i| (i, sums_of[&i])).collect();
        for i in store.check(2, &sums) {
            assert!(check.contains(&i) && !held[i as usize]);
            held[i as usize] = true;
        }
        assert_eq!(held, want);
        let kept = held.iter().filter(|h| **h).count();
        assert!(kept >= 18 && kept < held.len(), "kept {kept} of {}", held.len());
        // the symlinked old copy was not read
        let (first, n) = m2.entry_blocks(m2.entries().iter().position(|e| e.path == "evil.bin").unwrap() as u32);
        assert!((first..first + n).any(|i| !held[i as usize]));

        for i in (0..m2.blocks()).filter(|&i| !held[i as usize]) {
            let b = m2.block(i).unwrap();
            let (body, _) = fs.block(&b, Verify::None, true).unwrap();
            store.write_block(2, &b, &body_bytes(&body).unwrap()).unwrap();
        }
        store.seal(2).unwrap();
        store.publish(2, None, false).unwrap();
        assert_eq!(snapshot(&dest, &[]), snapshot(&src, &[]));
        assert_eq!(std::fs::read(outside.join("evil.bin")).unwrap(), evil);
        cleanup(&base);
    }

    /// v1 published in `dest`, v2 (every file grown by a byte) prepared as transfer 2 with
    /// its delta candidates; returns the store, dest and the candidates' digests.
    fn grown(tag: &str) -> (std::path::PathBuf, DiskStore, std::path::PathBuf, Vec<(u64, Digest)>) {
        let base = scratch(tag);
        let (src, dest) = (base.join("src"), base.join("dest"));
        std::fs::create_dir_all(&src).unwrap();
        let mut data = crate::testutil::noise(64 << 10, 7);
        write(&src.join("f.bin"), &data, 0o644);
        let m1 = walk(&src, &[], 4096).unwrap().manifest;
        let mut store = DiskStore::new(base.join("state"), vec![base.clone()], RETENTION).unwrap();
        transfer(&mut store, 1, &src, &dest, &m1);
        store.publish(1, None, false).unwrap();
        data.push(1);
        write(&src.join("f.bin"), &data, 0o644);
        let m2 = walk(&src, &[], 4096).unwrap().manifest;
        let mut fs = FsSource::new(src.clone(), &m2);
        store.prepare(2, dest.to_str().unwrap(), &m2, true).unwrap();
        let sums = store
            .candidates(2)
            .into_iter()
            .map(|i| match fs.block(&m2.block(i).unwrap(), Verify::Blake3, false).unwrap().1 {
                crate::proto::Sum::Blake3(d) => (i, d),
                s => panic!("{s:?}"),
            })
            .collect::<Vec<_>>();
        assert_eq!(sums.len(), 16, "every whole block of the old copy is a candidate");
        (base, store, dest, sums)
    }

    #[test]
    fn a_check_job_holds_the_stage_until_it_is_done() {
        let (base, mut store, _, sums) = grown("checkjob");
        let job = store.check_job(2, &sums).expect("a job");
        assert!(store.stage_dir(2).is_none(), "the stage is the job's while it runs");
        let crate::proto::Event::DiskDone { transfer: 2, id, out } = job.run() else { panic!() };
        let taken = store.job_done(id, out).unwrap();
        assert_eq!(taken, Some(JobDone::Checked((0..16).collect())));
        assert!(store.stage_dir(2).is_some(), "back in the store");
        assert_eq!(store.job_done(id, None).unwrap(), None, "a job's output counts once");
        cleanup(&base);
    }

    #[test]
    fn the_stage_is_built_by_a_job_and_the_quick_phase_runs_there() {
        let (base, mut store, dest, _) = grown("stagejob");
        store.abort(2, false);
        let src = base.join("src");
        std::fs::create_dir_all(src.join("a/b/c")).unwrap();
        write(&src.join("a/b/c/new.txt"), b"new", 0o644);
        // Unchanged by size and mtime this time: the quick phase takes every old block unread.
        let old = std::fs::metadata(dest.join("f.bin")).unwrap();
        write(&src.join("f.bin"), &std::fs::read(dest.join("f.bin")).unwrap(), 0o644);
        let f = std::fs::File::options().write(true).open(src.join("f.bin")).unwrap();
        f.set_modified(old.modified().unwrap()).unwrap();
        let m3 = walk(&src, &[], 4096).unwrap().manifest;
        let job = store.prepare_job(3, dest.to_str().unwrap(), &m3, true).expect("a job");
        assert!(store.stage_dir(3).is_none(), "the stage is the job's while it is built");
        let crate::proto::Event::DiskDone { id, out, .. } = job.run() else { panic!() };
        let Some(JobDone::Prepared(held)) = store.job_done(id, out).unwrap() else { panic!("prepared") };
        assert_eq!(held.iter().filter(|h| **h).count(), 16, "f.bin's blocks, taken unread");
        let stage = store.stage_dir(3).expect("back in the store");
        assert!(stage.join("a/b/c").is_dir(), "the directories are built");
        cleanup(&base);
    }

    #[test]
    fn a_checkpoint_job_syncs_and_records_the_blocks_held_when_it_began() {
        let (base, mut store, _, sums) = grown("checkpointjob");
        assert_eq!(store.check(2, &sums).len(), 16);
        let t = store.transfers.get_mut(&2).unwrap();
        t.checkpointed -= Duration::from_secs(2);
        let (record, manifest) = (t.record.clone(), t.manifest.clone());
        let job = store.checkpoint_job(2).expect("due: blocks were taken a while after the last");
        assert!(store.checkpoint_job(2).is_none(), "one at a time");
        assert!(store.stage_dir(2).is_some(), "the stage stays the store's");
        let crate::proto::Event::DiskDone { id, out, .. } = job.run() else { panic!() };
        assert_eq!(store.job_done(id, out).unwrap(), None);
        let held = crate::store::resume::read_record(&record, &manifest).expect("a record");
        assert_eq!(held.iter().filter(|h| **h).count(), 16);
        assert!(store.checkpoint_job(2).is_none(), "nothing new to record");
        cleanup(&base);
    }

    #[test]
    fn sealing_runs_as_a_job_and_the_transfer_publishes_after() {
        let (base, mut store, dest, sums) = grown("sealjob");
        assert!(store.check(2, &sums).len() == 16);
        let src = base.join("src");
        let m2 = walk(&src, &[], 4096).unwrap().manifest;
        let b = m2.block(16).unwrap();
        store.write_block(2, &b, &[1]).unwrap();
        let job = store.seal_job(2).expect("a job");
        assert!(store.publish(2, None, false).is_err(), "not while the job has the stage");
        let crate::proto::Event::DiskDone { id, out, .. } = job.run() else { panic!() };
        assert_eq!(store.job_done(id, out).unwrap(), Some(JobDone::Sealed));
        store.publish(2, None, false).unwrap();
        assert_eq!(snapshot(&dest, &[]), snapshot(&src, &[]));
        cleanup(&base);
    }

    #[test]
    fn an_abort_during_a_check_job_cancels_it_and_is_done_when_it_ends() {
        let (base, mut store, dest, sums) = grown("checkjob-abort");
        let job = store.check_job(2, &sums).expect("a job");
        let stage = dest.join(stage_name_of(&dest));
        store.abort(2, false);
        assert!(job.cancel.load(Ordering::Relaxed), "the abort cancels the job");
        assert!(stage.is_dir(), "the job still has the stage");
        let crate::proto::Event::DiskDone { id, out, .. } = job.run() else { panic!() };
        assert_eq!(store.job_done(id, out).unwrap(), None, "an aborted job's transfer is gone");
        assert!(!stage.exists(), "the abort is done once the job ends");
        assert!(store.stage_dir(2).is_none());
        // A lost job (a panic) loses the transfer's stage: the po fails the transfer.
        let (base2, mut store, _, sums) = grown("checkjob-lost");
        let job = store.check_job(2, &sums).expect("a job");
        assert!(store.job_done(job.id, None).is_err());
        cleanup(&base);
        cleanup(&base2);
    }

    #[test]
    fn held_blocks_are_served_while_the_stage_is_out_on_its_seal_job() {
        let (base, mut store, _, sums) = grown("sealserve");
        assert_eq!(store.check(2, &sums).len(), 16);
        let m2 = walk(&base.join("src"), &[], 4096).unwrap().manifest;
        store.write_block(2, &m2.block(16).unwrap(), &[1]).unwrap();
        let job = store.seal_job(2).expect("a job");
        // Sealing moves nothing: a neighbour still gets the staged bytes meanwhile.
        let b = m2.block(3).unwrap();
        let body = store.block_body(2, &b).expect("served during the seal");
        let want = std::fs::read(base.join("src/f.bin")).unwrap();
        assert_eq!(body_bytes(&body).unwrap(), want[3 * 4096..4 * 4096]);
        let crate::proto::Event::DiskDone { id, out, .. } = job.run() else { panic!() };
        assert_eq!(store.job_done(id, out).unwrap(), Some(JobDone::Sealed));
        assert!(store.block_body(2, &b).is_ok(), "and after it");
        // An aborted transfer's stage is not served, job or not.
        let job = store.check_job(2, &[]).expect("a job");
        store.abort(2, true);
        assert!(store.block_body(2, &b).is_err());
        let crate::proto::Event::DiskDone { id, out, .. } = job.run() else { panic!() };
        assert_eq!(store.job_done(id, out).unwrap(), None);
        cleanup(&base);
    }

    #[test]
    fn an_abort_while_the_stage_is_built_cancels_the_build() {
        let (base, mut store, dest, _) = grown("stageabort");
        store.abort(2, false);
        let src = base.join("src");
        for i in 0..50 {
            std::fs::create_dir_all(src.join(format!("d{i}"))).unwrap();
        }
        let m3 = walk(&src, &[], 4096).unwrap().manifest;
        let gate = base.join("gate");
        let mut store = store.hold_stages(gate.clone());
        let job = store.prepare_job(3, dest.to_str().unwrap(), &m3, true).expect("a job");
        // Held (gate absent) until the abort cancels it: the job ends without the gate.
        let runner = std::thread::spawn(move || job.run());
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(!runner.is_finished(), "the failpoint holds the build");
        store.abort(3, false);
        let crate::proto::Event::DiskDone { id, out, .. } = runner.join().unwrap() else { panic!() };
        assert_eq!(store.job_done(id, out).unwrap(), None, "an aborted build is nobody's");
        assert!(store.stage_dir(3).is_none());
        let stages: Vec<_> = std::fs::read_dir(&dest)
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.starts_with(crate::store::STAGE_PREFIX))
            .collect();
        assert!(stages.is_empty(), "the abort (keep off) removed the stage: {stages:?}");
        assert!(!gate.exists());
        cleanup(&base);
    }

    #[test]
    fn a_dry_runs_scan_and_check_run_as_jobs_and_stop_when_cancelled() {
        let (base, mut store, dest, sums) = grown("previewjob");
        let m2 = walk(&base.join("src"), &[], 4096).unwrap().manifest;
        let d = dest.to_str().unwrap();
        let want = store.preview(d, &m2, false, true, 100).unwrap();
        let job = store.preview_job(9, d, &m2, false, true, 100).expect("a job");
        let crate::proto::Event::DiskDone { transfer: 9, id, out } = job.run() else { panic!() };
        assert_eq!(store.job_done(id, out).unwrap(), Some(JobDone::Previewed(Box::new(want.0), want.1)));
        let held = store.preview_check(d, &m2, &sums);
        assert_eq!(held.len(), 16, "the old copy holds every whole block");
        let job = store.preview_check_job(9, d, &m2, &sums).expect("a job");
        let crate::proto::Event::DiskDone { id, out, .. } = job.run() else { panic!() };
        assert_eq!(store.job_done(id, out).unwrap(), Some(JobDone::PreviewHeld(held)));
        // Held by the failpoint, a check stops once its dry run goes (the cancel flag).
        let mut store = store.hold_checks(base.join("gate"));
        let job = store.preview_check_job(9, d, &m2, &sums).expect("a job");
        job.cancel.store(true, Ordering::Relaxed);
        let crate::proto::Event::DiskDone { id, out, .. } = job.run() else { panic!() };
        assert_eq!(store.job_done(id, out).unwrap(), Some(JobDone::PreviewHeld(Vec::new())));
        assert!(store.job_done(id, None).unwrap().is_none(), "a job's output counts once");
        cleanup(&base);
    }

    /// The one stage folder in `dest`.
    fn stage_name_of(dest: &std::path::Path) -> String {
        std::fs::read_dir(dest)
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .find(|n| n.starts_with(crate::store::STAGE_PREFIX))
            .expect("a stage")
    }
}
