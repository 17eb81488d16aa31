//! Canary waves: a publish that keeps what it replaces or mirrors away in `<stage>-old`, a
//! folder beside the stage (so mirror and other pushes leave it alone), and logs every step,
//! so that a rollback can put the old tree back; `drop_folder` removes it once the wave is decided. One that no wave waits for
//! (the po restarted mid-wave: the new tree stays) is removed by the next sweep of its dest,
//! at start or at the next push there.
//!
//! Not restored: the modes and mtimes publish gave directories that were there before.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use nix::fcntl::renameat;

use super::at::{ensure_dir_at, lstat_at, open_dir_path, open_parent, remove_at, split};

enum Step {
    /// The old entry at this path went into the aside folder.
    Displaced(Vec<u8>),
    /// The new tree put an entry at this path.
    Placed(Vec<u8>),
}

/// Ends the aside folder's name (`<stage>-old`).
pub const SUFFIX: &str = "-old";

pub struct Aside {
    /// The folder's name in the dest.
    name: String,
    fd: Option<OwnedFd>,
    log: Vec<Step>,
}

impl Aside {
    /// Keeps the old tree of the publish of stage `stage` aside.
    pub fn new(stage: &str) -> Aside {
        Aside { name: format!("{stage}{SUFFIX}"), fd: None, log: Vec::new() }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The aside folder, made (anew: one a crash left behind is not ours) on first use.
    fn folder(&mut self, dest: BorrowedFd) -> io::Result<BorrowedFd<'_>> {
        if self.fd.is_none() {
            remove_at(dest, self.name.as_str())?;
            ensure_dir_at(dest, self.name.as_str(), 0o700)?;
            self.fd = Some(open_dir_path(dest, self.name.as_bytes())?);
        }
        Ok(self.fd.as_ref().expect("made above").as_fd())
    }

    /// Moves whatever is at `path` (`name` in `dir`) below the dest into the aside folder.
    pub fn displace(&mut self, dest: BorrowedFd, dir: BorrowedFd, path: &[u8], name: &[u8]) -> io::Result<()> {
        if lstat_at(dir, name)?.is_none() {
            return Ok(());
        }
        let (parent, _) = split(path);
        let folder = self.folder(dest)?;
        // The same parents below the folder, made as needed.
        let mut cur: Option<OwnedFd> = None;
        for c in parent.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
            let at = cur.as_ref().map_or(folder, |f| f.as_fd());
            ensure_dir_at(at, OsStr::from_bytes(c), 0o700)?;
            cur = Some(open_dir_path(at, c)?);
        }
        let to = cur.as_ref().map_or(folder, |f| f.as_fd());
        renameat(Some(dir.as_raw_fd()), name, Some(to.as_raw_fd()), name)?;
        self.log.push(Step::Displaced(path.to_vec()));
        Ok(())
    }

    /// The new tree put an entry at `path`.
    pub fn placed(&mut self, path: &[u8]) {
        self.log.push(Step::Placed(path.to_vec()));
    }

    /// Puts the old tree back, last step first: what was placed goes, what was displaced
    /// returns. The folder is removed after.
    pub fn rollback(mut self, dest: BorrowedFd) -> io::Result<()> {
        while let Some(step) = self.log.pop() {
            match step {
                Step::Placed(path) => {
                    let (parent, name) = split(&path);
                    let p = open_parent(dest, parent)?;
                    remove_at(p.as_ref().map_or(dest, |f| f.as_fd()), OsStr::from_bytes(name))?;
                }
                Step::Displaced(path) => {
                    let (parent, name) = split(&path);
                    let folder = self.fd.as_ref().map(|f| f.as_fd()).ok_or_else(|| io::Error::other("no folder"))?;
                    let from = open_parent(folder, parent)?;
                    let to = open_parent(dest, parent)?;
                    let (from, to) =
                        (from.as_ref().map_or(folder, |f| f.as_fd()), to.as_ref().map_or(dest, |f| f.as_fd()));
                    remove_at(to, OsStr::from_bytes(name))?;
                    renameat(Some(from.as_raw_fd()), name, Some(to.as_raw_fd()), name)?;
                }
            }
        }
        self.drop_folder(dest)
    }

    /// The wave is decided: the old tree is not needed any more.
    pub fn drop_folder(&self, dest: BorrowedFd) -> io::Result<()> {
        remove_at(dest, self.name.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{cleanup, scratch, snapshot, source, transfer, write, RETENTION};
    use super::super::DiskStore;
    use crate::proto::manifest::Kind;
    use crate::proto::Store;
    use crate::tree::walk;
    use std::path::Path;

    fn names_of(d: &Path) -> Vec<String> {
        super::super::tests::names(d)
    }

    /// Entries and contents, directories without their mtime (a rollback leaves those new).
    fn tree(d: &Path) -> Vec<String> {
        let (entries, contents) = snapshot(d, &[]);
        let mut out: Vec<String> = entries
            .iter()
            .filter(|e| !e.path.starts_with(super::super::STAGE_PREFIX))
            .map(|e| match e.kind {
                Kind::Dir => format!("dir {}", e.path),
                _ => format!("{e:?}"),
            })
            .collect();
        let hash = |c: &[u8]| crate::proto::checksum::digest(c)[..8].to_vec();
        out.extend(
            contents
                .iter()
                .filter(|(p, _)| !p.starts_with(super::super::STAGE_PREFIX))
                .map(|(p, c)| format!("{p}: {:?}", hash(c))),
        );
        out
    }

    #[test]
    fn a_canary_publish_rolls_back_to_the_old_tree_and_a_decided_one_drops_it() {
        let base = scratch("aside");
        let (src1, src2, dest) = (base.join("v1"), base.join("v2"), base.join("dest"));
        let m1 = source(&src1);
        // Version 2: a file changed, one new, a subtree gone (mirror), a file where a directory
        // was and a directory where a file was, a symlink retargeted.
        let m2 = {
            source(&src2);
            write(&src2.join("d/small"), b"changed\n", 0o600);
            write(&src2.join("new.txt"), b"new", 0o644);
            std::fs::remove_dir_all(src2.join("sub")).unwrap();
            std::fs::remove_file(src2.join("was_dir")).unwrap();
            std::fs::create_dir(src2.join("was_dir")).unwrap();
            write(&src2.join("was_dir/in"), b"in", 0o644);
            std::fs::remove_dir_all(src2.join("was_file")).unwrap();
            write(&src2.join("was_file"), b"now a file", 0o644);
            std::fs::remove_file(src2.join("d/link")).unwrap();
            std::os::unix::fs::symlink("small", src2.join("d/link")).unwrap();
            walk(&src2, &[], 4096).unwrap().manifest
        };
        let mut store = DiskStore::new(base.join("state"), vec![base.clone()], RETENTION).unwrap();
        transfer(&mut store, 1, &src1, &dest, &m1);
        store.publish(1, Some("done"), true).unwrap();
        let v1 = tree(&dest);
        for (id, decide) in [(2, false), (3, true)] {
            transfer(&mut store, id, &src2, &dest, &m2);
            store.keep_aside(id);
            store.publish(id, Some("done"), true).unwrap();
            let mut want = tree(&src2);
            want.retain(|l| !l.contains("done"));
            let mut got = tree(&dest);
            got.retain(|l| !l.contains("done"));
            assert_eq!(got, want, "the new tree is in place");
            let old = std::fs::read_dir(&dest)
                .unwrap()
                .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with("-old"))
                .count();
            assert_eq!(old, 1, "the old tree is kept aside");
            if decide {
                store.decide(id);
                assert!(store.rollback(id).is_err(), "nothing is left to roll back to");
            } else {
                store.rollback(id).unwrap();
                assert_eq!(tree(&dest), v1, "the old tree is back");
            }
            let old = std::fs::read_dir(&dest)
                .unwrap()
                .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with("-old"))
                .count();
            assert_eq!(old, 0);
        }
        // A po that restarts mid-wave keeps the new tree; its sweep at start drops the old one.
        transfer(&mut store, 4, &src1, &dest, &m1);
        store.keep_aside(4);
        store.publish(4, Some("done"), true).unwrap();
        let v1_again = tree(&dest);
        assert!(names_of(&dest).iter().any(|n| n.ends_with(super::SUFFIX)));
        drop(store);
        let _store = DiskStore::new(base.join("state"), vec![base.clone()], RETENTION).unwrap();
        assert!(!names_of(&dest).iter().any(|n| n.ends_with(super::SUFFIX)), "{:?}", names_of(&dest));
        assert_eq!(tree(&dest), v1_again);
        cleanup(&base);
    }
}
