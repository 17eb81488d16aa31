//! What a po keeps of transfers that did not finish. A stage no live transfer uses, and a
//! resume record, are removed once older than the retention (po.conf `stage_retention`), and
//! only the newest few are kept at all; a stage's age is the time since a transfer last used
//! it. A push is accepted only when it fits the dest's filesystem, and stale stages of other
//! trees are removed first when that makes it fit: a stage left by a failed push never blocks
//! one that fits.
//!
//! Sweeps run at start (over the dests remembered in `<state_dir>/dests`) and at every prepare.

use std::collections::HashSet;
use std::ffi::OsString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::sys::statvfs::fstatvfs;

use super::at::{list, lstat_at, remove_at, split, Cursor};
use super::resume::record_path;
use super::{DiskStore, STAGE_PREFIX};
use crate::logging::kv_quote;
use crate::proto::manifest::Kind;
use crate::proto::{Manifest, StoreError};

/// Stages no live transfer uses, kept per dest (the newest).
pub const STAGES_PER_DEST: usize = 4;
/// Resume records kept in the state dir (the newest).
pub const RECORDS: usize = 64;
/// Dests remembered for the sweep at start (the most recently prepared).
pub const DESTS: usize = 64;
const DESTS_FILE: &str = "dests";

/// A stage (or a flag file left beside one) in a dest that no live transfer uses.
struct Stale {
    name: OsString,
    stage: String,
    age: Duration,
}

/// Seconds since the epoch of `st`'s mtime, and how long ago that is (0 when in the future).
fn age_of(st: &nix::libc::stat) -> Duration {
    let then = UNIX_EPOCH + Duration::from_secs(st.st_mtime.max(0) as u64);
    SystemTime::now().duration_since(then).unwrap_or_default()
}

/// The stage-prefixed entries of `dest` not in `in_use`, newest first.
fn stale_stages(dest: BorrowedFd, in_use: &HashSet<String>) -> std::io::Result<Vec<Stale>> {
    let mut v = Vec::new();
    for name in list(dest)? {
        let Some(s) = name.to_str() else { continue };
        let stage = s.strip_suffix(".flag").unwrap_or(s).to_string();
        if !s.starts_with(STAGE_PREFIX) || in_use.contains(&stage) {
            continue;
        }
        if let Some(st) = lstat_at(dest, name.as_os_str())? {
            v.push(Stale { age: age_of(&st), name, stage });
        }
    }
    v.sort_by_key(|s| s.age);
    Ok(v)
}

/// Bytes and inodes a push of `manifest` writes: every file's data and every directory,
/// less what `stage` (an earlier attempt's stage of the same tree) holds already.
fn need(manifest: &Manifest, unit: u64, stage: Option<BorrowedFd>) -> (u64, u64) {
    let round = |n: u64| n.div_ceil(unit).saturating_mul(unit);
    let mut cur = stage.map(Cursor::new);
    let (mut bytes, mut inodes) = (if stage.is_some() { 0 } else { unit }, u64::from(stage.is_none()));
    for e in manifest.entries() {
        let want = match (&e.kind, &e.sparse) {
            (Kind::File { size }, Some(ext)) => round(ext.iter().map(|(_, l)| l).sum::<u64>().min(*size)),
            (Kind::File { size }, None) => round(*size),
            (Kind::Dir, _) => unit,
            (Kind::Symlink { .. }, _) => 0,
            // another name of a file counted already: no data, no inode
            (Kind::Link { .. }, _) => continue,
        };
        let (parent, name) = split(&e.path);
        let have = cur.as_mut().and_then(|c| lstat_at(c.at(parent).ok()?, name).ok().flatten());
        match have {
            Some(st) => bytes = bytes.saturating_add(want.saturating_sub(st.st_blocks as u64 * 512)),
            None => (bytes, inodes) = (bytes.saturating_add(want), inodes + 1),
        }
    }
    (bytes, inodes)
}

impl DiskStore {
    /// Stage names of live transfers to `dest`.
    fn in_use(&self, dest: &str) -> HashSet<String> {
        let mut v: HashSet<String> =
            self.live().filter(|(d, _, _)| *d == Path::new(dest)).map(|(_, s, _)| s.to_owned()).collect();
        // A canary's old tree, kept aside until its wave is decided.
        v.extend(self.asides.values().filter(|(_, d, _)| d == Path::new(dest)).map(|(_, _, a)| a.name().to_string()));
        v
    }

    /// Removes the stale stage `s` of `dest`, and its record.
    fn remove_stale(&self, dest_fd: BorrowedFd, dest: &str, s: &Stale, why: &str) -> bool {
        let removed = remove_at(dest_fd, s.name.as_os_str());
        if let Err(e) = &removed {
            let path = format!("{dest}/{}", s.name.to_string_lossy());
            log::warn!("event=stage_remove_failed path={} error={}", kv_quote(&path), kv_quote(&e.to_string()));
        } else {
            log::info!(
                "event=stage_expired dest={} stage={} age_s={} reason={why}",
                kv_quote(dest),
                kv_quote(&s.name.to_string_lossy()),
                s.age.as_secs()
            );
        }
        let _ = std::fs::remove_file(record_path(&self.state_dir, Path::new(dest), &s.stage));
        removed.is_ok()
    }

    /// Removes the stages of `dest` no live transfer uses (nor `keep`) that are older than
    /// the retention or beyond the newest `STAGES_PER_DEST`.
    pub(super) fn sweep_dest(&self, dest_fd: BorrowedFd, dest: &str, keep: &str) {
        let mut in_use = self.in_use(dest);
        in_use.insert(keep.to_string());
        let Ok(stale) = stale_stages(dest_fd, &in_use) else { return };
        for (i, s) in stale.iter().enumerate() {
            if s.name.to_str().is_some_and(|n| n.ends_with(super::aside::SUFFIX)) {
                // A canary's old tree no wave waits for (the po restarted, or its removal
                // failed): the new tree stays, so it goes at once.
                self.remove_stale(dest_fd, dest, s, "aside");
            } else if s.age > self.retention {
                self.remove_stale(dest_fd, dest, s, "retention");
            } else if i >= STAGES_PER_DEST {
                self.remove_stale(dest_fd, dest, s, "count");
            }
        }
    }

    /// Removes resume records no live transfer uses (nor `keep`) that are older than the
    /// retention or beyond the newest `RECORDS`. (Records named before they were keyed by
    /// dest, `wugui-stage-<id>.held`, are never used again and go the same way.)
    pub(super) fn sweep_records(&self, keep: Option<&Path>) {
        let mut in_use: HashSet<PathBuf> = self.live().map(|(_, _, r)| r.to_path_buf()).collect();
        in_use.extend(keep.map(Path::to_path_buf));
        let Ok(dir) = std::fs::read_dir(&self.state_dir) else { return };
        let mut records: Vec<(Duration, std::path::PathBuf)> = dir
            .filter_map(|e| {
                let e = e.ok()?;
                let name = e.file_name().into_string().ok()?;
                let ours = name.starts_with(STAGE_PREFIX.trim_start_matches('.'))
                    && (name.ends_with(".held") || name.ends_with(".tmp"));
                let age = SystemTime::now().duration_since(e.metadata().ok()?.modified().ok()?).unwrap_or_default();
                (ours && !in_use.contains(&e.path())).then(|| (age, e.path()))
            })
            .collect();
        records.sort();
        for (i, (age, path)) in records.iter().enumerate() {
            if *age > self.retention || i >= RECORDS {
                log::info!(
                    "event=record_expired path={} age_s={}",
                    kv_quote(&path.display().to_string()),
                    age.as_secs()
                );
                let _ = std::fs::remove_file(path);
            }
        }
    }

    /// At start: sweeps every remembered dest still allowed, and the records.
    pub(super) fn sweep_all(&mut self) {
        let text = std::fs::read_to_string(self.state_dir.join(DESTS_FILE)).unwrap_or_default();
        self.dests = text.lines().filter(|l| !l.is_empty()).take(DESTS).map(String::from).collect();
        for dest in &self.dests {
            if let Ok(fd) = self.roots.open(dest, false) {
                self.sweep_dest(fd.as_fd(), dest, "");
            }
        }
        self.sweep_records(None);
    }

    /// Remembers `dest` for the sweep at start.
    pub(super) fn remember(&mut self, dest: &str) {
        if self.dests.first().is_some_and(|d| d == dest) {
            return;
        }
        self.dests.retain(|d| d != dest);
        self.dests.insert(0, dest.to_string());
        self.dests.truncate(DESTS);
        let path = self.state_dir.join(DESTS_FILE);
        if let Err(e) = super::state_file::replace(&path, (self.dests.join("\n") + "\n").as_bytes(), false) {
            log::warn!(
                "event=state_write_failed path={} error={}",
                kv_quote(&path.display().to_string()),
                kv_quote(&e.to_string())
            );
        }
    }

    /// Refuses (`NoSpace`) a push of `manifest` into `dest` that its filesystem cannot take,
    /// in bytes or inodes, once the stale stages of other trees in `dest` are removed (oldest
    /// first, only as many as it takes). `stage` is the push's own, maybe left by an earlier
    /// attempt: what it holds counts as written.
    pub(super) fn make_room(
        &self,
        dest_fd: BorrowedFd,
        dest: &str,
        stage: &str,
        manifest: &Manifest,
    ) -> Result<(), StoreError> {
        let statvfs = || fstatvfs(dest_fd).map_err(|e| StoreError::io(format!("dest {dest}: statvfs"), &e.into()));
        let unit = statvfs()?.fragment_size().max(512);
        let own = super::at::open_dir_path(dest_fd, stage).ok();
        let (bytes, inodes) = need(manifest, unit, own.as_ref().map(|f| f.as_fd()));
        drop(own);
        let mut in_use = self.in_use(dest);
        in_use.insert(stage.to_string());
        let mut stale = stale_stages(dest_fd, &in_use).unwrap_or_default();
        let mut removed = 0;
        loop {
            let vfs = statvfs()?;
            let free = vfs.blocks_available().saturating_mul(vfs.fragment_size());
            // Some filesystems (btrfs) have no inode limit and report 0 files.
            let ifree = if vfs.files() == 0 { u64::MAX } else { vfs.files_available() };
            if bytes <= free && inodes <= ifree {
                return Ok(());
            }
            match stale.pop() {
                Some(s) => removed += u32::from(self.remove_stale(dest_fd, dest, &s, "space")),
                None => {
                    let ifree = if ifree == u64::MAX { "unlimited".into() } else { ifree.to_string() };
                    let what = format!("dest {dest}");
                    let error = format!(
                        "No space left on device: the push needs {bytes} bytes and {inodes} inodes, the filesystem has {free} bytes and {ifree} inodes free (after removing {removed} stale stages)"
                    );
                    return Err(StoreError::NoSpace { what, error });
                }
            }
        }
    }
}

/// Marks the stage `fd` as used now: its age counts from here.
pub fn touch(fd: BorrowedFd) {
    use nix::sys::time::TimeSpec;
    let _ = nix::sys::stat::futimens(fd.as_raw_fd(), &TimeSpec::UTIME_OMIT, &TimeSpec::UTIME_NOW);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::Store;
    use crate::store::tests::{cleanup, names, scratch, transfer, write};
    use crate::tree::walk;
    use std::path::Path;

    /// Sets the mtime of `p` to `ago` before now.
    fn age(p: &Path, ago: Duration) {
        let f = std::fs::File::open(p).unwrap();
        f.set_modified(SystemTime::now() - ago).unwrap();
    }

    const MIN: Duration = Duration::from_secs(60);

    #[test]
    fn stale_stages_and_records_expire_and_are_bounded() {
        let base = scratch("retain");
        let (src, dest, state) = (base.join("src"), base.join("dest"), base.join("state"));
        std::fs::create_dir_all(&src).unwrap();
        write(&src.join("f"), b"data", 0o644);
        let m = walk(&src, &[], 4096).unwrap().manifest;
        let stage = crate::store::stage_name(&m);
        std::fs::create_dir_all(&dest).unwrap();
        std::fs::create_dir_all(&state).unwrap();
        let plant = |name: &str, ago: Duration| {
            std::fs::create_dir(dest.join(name)).unwrap();
            write(&dest.join(name).join("x"), b"x", 0o644);
            age(&dest.join(name), ago);
            let rec = record_path(&state, &dest, name);
            std::fs::write(&rec, b"r").unwrap();
            age(&rec, ago);
        };
        plant(".wugui-stage-aa", 120 * MIN);
        for i in 1..=5 {
            plant(&format!(".wugui-stage-b{i}"), i * MIN);
        }
        std::fs::write(state.join("wugui-stage-zz.held"), b"r").unwrap();
        age(&state.join("wugui-stage-zz.held"), 120 * MIN);
        std::fs::write(state.join("unrelated"), b"kept").unwrap();

        let mut store = DiskStore::new(state.clone(), vec![base.clone()], 60 * MIN).unwrap();
        store.prepare(1, dest.to_str().unwrap(), &m, false).unwrap();
        // older than the retention, and beyond the 4 newest stale stages: gone, records too
        let b: Vec<String> = (1..=4).map(|i| format!(".wugui-stage-b{i}")).collect();
        let mut want: Vec<String> = b.clone();
        want.push(stage.clone());
        want.sort();
        assert_eq!(names(&dest), want);
        let rec = |s: &str| record_path(&state, &dest, s).file_name().unwrap().to_string_lossy().into_owned();
        let mut recs: Vec<String> = b.iter().map(|s| rec(s)).collect();
        recs.extend(["dests".into(), "unrelated".into()]);
        recs.sort();
        assert_eq!(names(&state), recs);

        // a stage left by an aborted push is stale: the oldest beyond 4 goes at the next prepare
        store.abort(1, true);
        let m2 = walk(&src, &[], 2048).unwrap().manifest;
        store.prepare(2, dest.to_str().unwrap(), &m2, false).unwrap();
        assert!(dest.join(&stage).is_dir());
        assert!(!dest.join(".wugui-stage-b4").exists());
        store.abort(2, false);

        // at start: the remembered dest is swept
        for s in &b[..3] {
            age(&dest.join(s), 120 * MIN);
        }
        drop(store);
        let _store = DiskStore::new(state.clone(), vec![base.clone()], 60 * MIN).unwrap();
        assert_eq!(names(&dest), std::slice::from_ref(&stage));
        cleanup(&base);
    }

    /// A tmpfs of `size` mounted at `at`, or why not.
    fn mount_small(at: &Path, size: &str) -> Result<(), String> {
        std::fs::create_dir_all(at).unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }

    /// Writes blocks `range` of `m` (a file of `byte` repeated) into transfer `t`.
    fn blocks(
        store: &mut DiskStore,
        t: u64,
        m: &Manifest,
        range: std::ops::Range<u64>,
        byte: u8,
    ) -> Result<(), StoreError> {
        for i in range {
            let b = m.block(i).unwrap();
            store.write_block(t, &b, &vec![byte; b.len as usize])?;
        }
        Ok(())
    }

    #[test]
    fn a_stale_stage_never_blocks_a_push_that_fits() {
        let base = scratch("space");
        let small = base.join("small");
        if let Err(why) = mount_small(&small, "4m") {
            eprintln!("skipped: cannot mount a 4 MiB tmpfs here: {why}");
            return cleanup(&base);
        }
        let run = || {
            let dest = small.join("dest");
            let tree = |name: &str, mib: f64, byte: u8| {
                let src = base.join(name);
                std::fs::create_dir_all(&src).unwrap();
                write(&src.join("f"), &vec![byte; (mib * 1048576.0) as usize], 0o644);
                (src.clone(), walk(&src, &[], 64 << 10).unwrap().manifest)
            };
            let mut store = DiskStore::new(base.join("state"), vec![small.clone()], 3600 * MIN).unwrap();
            let d = dest.to_str().unwrap();

            // too big: refused up front, naming needed and free, and nothing staged
            let (_, big) = tree("big", 6.0, 1);
            let e = store.prepare(1, d, &big, false).unwrap_err();
            assert!(
                matches!(&e, StoreError::NoSpace { error, .. } if error.contains("needs") && error.contains("free")),
                "{e}"
            );
            assert!(names(&dest).is_empty(), "{:?}", names(&dest));

            // a push that fills the disk on the way fails (ENOSPC) and leaves its stage
            let (_, half) = tree("half", 3.0, 2);
            store.prepare(2, d, &half, false).unwrap();
            blocks(&mut store, 2, &half, 0..32, 2).unwrap();
            let filler = small.join("filler");
            let mut f = std::fs::File::create(&filler).unwrap();
            while std::io::Write::write_all(&mut f, &[0u8; 65536]).is_ok() {}
            drop(f);
            let e = blocks(&mut store, 2, &half, 32..half.blocks(), 2).unwrap_err();
            assert!(matches!(e, StoreError::NoSpace { .. }), "{e}");
            store.abort(2, true);
            std::fs::remove_file(&filler).unwrap();
            assert_eq!(names(&dest), [crate::store::stage_name(&half)]);

            // the next push that fits takes the stale stage's room, with no manual step
            let (src3, next) = tree("next", 2.5, 3);
            transfer(&mut store, 3, &src3, &dest, &next);
            store.publish(3, None, false).unwrap();
            assert_eq!(names(&dest), ["f"]);
            assert_eq!(std::fs::read(dest.join("f")).unwrap(), std::fs::read(src3.join("f")).unwrap());
        };
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(run));
        let _ = std::process::Command::new("umount").arg(&small).status();
        cleanup(&base);
        if let Err(p) = outcome {
            std::panic::resume_unwind(p);
        }
    }
}
