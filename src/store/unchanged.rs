//! A push that changes nothing: when the published copy in the dest is the manifest's tree
//! already, publish leaves the dest alone (same inodes, no new flag file) and drops the stage.

use std::os::fd::{AsFd, BorrowedFd};

use nix::fcntl::readlinkat;
use nix::libc;

use super::at::{lstat_at, open_parent, split, Cursor};
use super::staged::Staged;
use crate::proto::manifest::{Entry, Kind};

impl Staged {
    /// Whether publishing would change nothing in the dest: every block was there before the
    /// push (`untouched`), every entry is there as the manifest has it (kind, size, mtime,
    /// mode, symlink target), the flag file is there, and with `mirror` nothing else is. Any
    /// doubt (an entry that cannot be read) says no: the push is then published as any other.
    pub fn dest_matches(&self, flag_file: Option<&str>, mirror: bool) -> bool {
        if !self.untouched {
            return false;
        }
        let dest = self.dest_fd.as_fd();
        let mut cur = Cursor::new(dest);
        for e in self.manifest.entries() {
            let (parent, name) = split(&e.path);
            let same = cur.at(parent).is_ok_and(|dir| self.entry_matches(dir, name, e));
            if !same {
                return false;
            }
        }
        drop(cur);
        if let Some(flag) = flag_file {
            let (parent, name) = split(flag);
            let mut cur = Cursor::new(dest);
            let found = cur.at(parent).and_then(|dir| lstat_at(dir, name));
            if !matches!(found, Ok(Some(st)) if st.st_mode & libc::S_IFMT == libc::S_IFREG) {
                return false;
            }
        }
        // Mirror would remove something: the tree in the dest is not the manifest's.
        !mirror || matches!(self.mirror_walk(0, flag_file, false, None), Ok(false))
    }

    /// Whether `name` in `dir` is entry `e` as the stage would publish it.
    fn entry_matches(&self, dir: BorrowedFd, name: &[u8], e: &Entry) -> bool {
        let Ok(Some(st)) = lstat_at(dir, name) else { return false };
        let kind = st.st_mode & libc::S_IFMT;
        let when = st.st_mtime == e.mtime && st.st_mtime_nsec == i64::from(e.mtime_nsec);
        let bits = st.st_mode & 0o7777 == self.mode_of(e);
        let owned = self.owner_of(e).is_none_or(|(u, g)| st.st_uid == u && st.st_gid == g);
        if !owned && !matches!(e.kind, Kind::Link { .. }) {
            return false;
        }
        match &e.kind {
            // The same inode as the file it names, in the dest.
            Kind::Link { to } => {
                let (tparent, tname) = split(to);
                let dest = self.dest_fd.as_fd();
                let target = open_parent(dest, tparent)
                    .and_then(|d| lstat_at(d.as_ref().map_or(dest, |f| f.as_fd()), tname))
                    .ok()
                    .flatten();
                kind == libc::S_IFREG && target.is_some_and(|t| (t.st_dev, t.st_ino) == (st.st_dev, st.st_ino))
            }
            Kind::Dir => kind == libc::S_IFDIR && bits && when,
            Kind::File { size } => kind == libc::S_IFREG && st.st_size as u64 == *size && bits && when,
            Kind::Symlink { target } => {
                kind == libc::S_IFLNK
                    && when
                    && readlinkat(Some(std::os::fd::AsRawFd::as_raw_fd(&dir)), name)
                        .is_ok_and(|t| t.as_encoded_bytes() == target.as_slice())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::proto::{Published, Source, Store, Verify};
    use crate::store::files::body_bytes;
    use crate::store::tests::{chmod, cleanup, scratch, source, transfer, write, RETENTION};
    use crate::store::DiskStore;
    use crate::tree::FsSource;
    use std::collections::BTreeMap;
    use std::os::unix::fs::MetadataExt;
    use std::path::Path;

    /// Every path below `root` with its inode and ctime: what a publish would change.
    fn inodes(root: &Path) -> BTreeMap<String, (u64, i64, i64)> {
        let mut out = BTreeMap::new();
        let mut todo = vec![root.to_path_buf()];
        while let Some(d) = todo.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                let md = std::fs::symlink_metadata(&p).unwrap();
                if md.is_dir() {
                    todo.push(p.clone());
                }
                let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                out.insert(rel, (md.ino(), md.ctime(), md.ctime_nsec()));
            }
        }
        out
    }

    /// A push of `m` with delta: what the dest does not give comes from `src`. Returns the
    /// publish and how many blocks travelled.
    fn push(store: &mut DiskStore, id: u64, src: &Path, dest: &Path, mirror: bool) -> (Published, usize) {
        let m = crate::tree::walk(src, &[], 4096).unwrap().manifest;
        let held = store.prepare(id, dest.to_str().unwrap(), &m, true).unwrap();
        let mut fs = FsSource::new(src.to_path_buf(), &m);
        let missing: Vec<u64> = (0..m.blocks()).filter(|&i| !held[i as usize]).collect();
        for &i in &missing {
            let b = m.block(i).unwrap();
            let body = fs.block(&b, Verify::None, true).unwrap().0;
            store.write_block(id, &b, &body_bytes(&body).unwrap()).unwrap();
        }
        store.seal(id).unwrap();
        (store.publish(id, Some("data.done"), mirror).unwrap(), missing.len())
    }

    #[test]
    fn a_push_that_changes_nothing_leaves_the_dest_alone() {
        let base = scratch("unchanged");
        let (src, dest) = (base.join("src"), base.join("dest"));
        std::fs::create_dir(&src).unwrap();
        let m = source(&src);
        let mut store = DiskStore::new(base.join("state"), vec![base.clone()], RETENTION).unwrap();
        transfer(&mut store, 1, &src, &dest, &m);
        assert!(!store.publish(1, Some("data.done"), true).unwrap().unchanged);
        let before = inodes(&dest);
        std::thread::sleep(std::time::Duration::from_millis(20));

        // The same tree again: nothing travels, nothing in the dest changes, the stage goes.
        let (p, sent) = push(&mut store, 2, &src, &dest, true);
        assert!(p.unchanged && (p.files, p.bytes) == (m.files() as u64, m.bytes()), "{p:?}");
        assert_eq!(sent, 0);
        assert_eq!(inodes(&dest), before);
        let flag = std::fs::read_to_string(dest.join("data.done")).unwrap();
        assert_eq!(flag.lines().next(), Some("transfer=1"));

        // Something extra in the dest: only mirror cares.
        write(&dest.join("extra.txt"), b"extra", 0o644);
        assert!(push(&mut store, 3, &src, &dest, false).0.unchanged);
        assert!(!push(&mut store, 4, &src, &dest, true).0.unchanged);
        assert!(!dest.join("extra.txt").exists());
        // A mode changed in the dest (size and mtime the same): published again, mode back.
        chmod(&dest.join("d/small"), 0o644);
        let (p, sent) = push(&mut store, 5, &src, &dest, true);
        assert!(!p.unchanged && sent == 0, "{p:?} {sent}");
        assert_eq!(std::fs::metadata(dest.join("d/small")).unwrap().mode() & 0o777, 0o600);
        // The flag file gone: written again.
        std::fs::remove_file(dest.join("data.done")).unwrap();
        assert!(!push(&mut store, 6, &src, &dest, true).0.unchanged);
        assert!(dest.join("data.done").exists());
        assert!(push(&mut store, 7, &src, &dest, true).0.unchanged);
        // A changed file: its blocks travel.
        write(&src.join("d/small"), b"SMALL\n", 0o600);
        let (p, sent) = push(&mut store, 8, &src, &dest, true);
        assert!(!p.unchanged && sent == 1, "{p:?} {sent}");
        let names: Vec<String> =
            std::fs::read_dir(&dest).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        assert!(!names.iter().any(|n| n.starts_with(crate::store::STAGE_PREFIX)), "{names:?}");
        cleanup(&base);
    }
}
