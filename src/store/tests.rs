//! The store end to end: prepare, write, seal, publish, abort, on real directories. Shared
//! helpers for the tests of the store's files.

use super::*;
use crate::proto::manifest::Kind;
use crate::proto::{Source, Verify};
use crate::tree::{walk, FsSource};
use files::body_bytes;
use std::fs::File;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

/// The retention the tests' stores keep stale stages for (po.conf's default).
pub(crate) const RETENTION: Duration = Duration::from_secs(7 * 86400);

pub(crate) fn scratch(tag: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let p = std::env::temp_dir().join(format!(
        "wugui-stage-test-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).unwrap();
    p
}

/// Removes a test tree, read-only directories included.
pub(crate) fn cleanup(p: &Path) {
    let parent = File::open(p.parent().unwrap()).unwrap();
    at::remove_at(parent.as_fd(), p.file_name().unwrap()).unwrap();
    assert!(!p.exists());
}

pub(crate) fn write(p: &Path, data: &[u8], bits: u32) {
    std::fs::write(p, data).unwrap();
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(bits)).unwrap();
}

pub(crate) fn chmod(p: &Path, bits: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(bits)).unwrap();
}

/// A source tree: nested dirs, an empty dir, a symlink, an empty file, various modes.
pub(crate) fn source(root: &Path) -> Manifest {
    std::fs::create_dir_all(root.join("d/e")).unwrap();
    std::fs::create_dir_all(root.join("sub")).unwrap();
    std::fs::create_dir(root.join("empty")).unwrap();
    std::fs::create_dir(root.join("was_file")).unwrap();
    write(&root.join("d/e/big.bin"), &(0..10_000u32).map(|i| (i * 7) as u8).collect::<Vec<_>>(), 0o750);
    write(&root.join("d/small"), b"small\n", 0o600);
    write(&root.join("d/zero"), b"", 0o644);
    write(&root.join("sub/f"), b"through?", 0o644);
    write(&root.join("was_dir"), b"now a file", 0o640);
    write(&root.join("was_file/x"), b"x", 0o644);
    std::os::unix::fs::symlink("e/big.bin", root.join("d/link")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/target", root.join("dangling")).unwrap();
    chmod(&root.join("d/e"), 0o750);
    chmod(&root.join("empty"), 0o700);
    chmod(&root.join("d"), 0o755);
    // read-only: set last, deepest first, and replaced on a second publish
    std::fs::create_dir_all(root.join("ro/inner")).unwrap();
    write(&root.join("ro/inner/f"), b"read only", 0o444);
    chmod(&root.join("ro/inner"), 0o555);
    chmod(&root.join("ro"), 0o500);
    walk(root, &[], 4096).unwrap().manifest
}

pub(crate) fn transfer(store: &mut DiskStore, id: u64, src: &Path, dest: &Path, m: &Manifest) {
    let held = store.prepare(id, dest.to_str().unwrap(), m, false).unwrap();
    assert_eq!(held, vec![false; m.blocks() as usize]);
    let mut fs = FsSource::new(src.to_path_buf(), m);
    // out of order, to exercise the cache and pwrite
    for i in (0..m.blocks()).rev() {
        let b = m.block(i).unwrap();
        let (body, _) = fs.block(&b, Verify::None, true).unwrap();
        let buf = body_bytes(&body).unwrap();
        store.write_block(id, &b, &buf).unwrap();
    }
    store.seal(id).unwrap();
}

/// The manifest of `dest` without `ignore`, and each file's content.
pub(crate) fn snapshot(root: &Path, ignore: &[&str]) -> (Vec<crate::proto::manifest::Entry>, Vec<(String, Vec<u8>)>) {
    let m = walk(root, &[], 4096).unwrap().manifest;
    let entries: Vec<_> = m.entries().iter().filter(|e| !ignore.iter().any(|i| e.path == *i)).cloned().collect();
    let contents = entries
        .iter()
        .filter(|e| matches!(e.kind, Kind::File { .. }))
        .map(|e| (e.path.to_string(), std::fs::read(root.join(&e.path)).unwrap()))
        .collect();
    (entries, contents)
}

pub(crate) fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

#[test]
fn full_cycle_into_an_old_dest() {
    let base = scratch("cycle");
    let (src, dest, outside) = (base.join("src"), base.join("a/b/dest"), base.join("outside"));
    std::fs::create_dir(&src).unwrap();
    std::fs::create_dir(&outside).unwrap();
    let m = source(&src);

    // an old dest: an extra file, stale content, a dir where a file goes, a file where a
    // dir goes, a planted symlink to a directory outside, another transfer's stage
    std::fs::create_dir_all(dest.join("d")).unwrap();
    std::fs::create_dir_all(dest.join("was_dir/inner")).unwrap();
    write(&dest.join("was_dir/inner/old"), b"old", 0o644);
    write(&dest.join("was_file"), b"old", 0o644);
    write(&dest.join("d/small"), b"stale content", 0o666);
    write(&dest.join("old.txt"), b"keep me unless mirror", 0o644);
    std::os::unix::fs::symlink(&outside, dest.join("sub")).unwrap();
    std::fs::create_dir(dest.join(".wugui-stage-0123")).unwrap();
    chmod(&dest.join("d"), 0o555);

    let state = base.join("state");
    let mut store = DiskStore::new(state.clone(), vec![base.clone()], RETENTION).unwrap();
    assert!(state.is_dir());
    transfer(&mut store, 7, &src, &dest, &m);
    let stage = store.stage_dir(7).unwrap();
    assert_eq!(stage, dest.join(stage_name(&m)));
    assert!(stage.is_dir());
    // nothing outside the stage changed yet
    assert_eq!(std::fs::read(dest.join("d/small")).unwrap(), b"stale content");
    assert!(dest.join("sub").symlink_metadata().unwrap().file_type().is_symlink());

    let crate::proto::Published { files, bytes, .. } = store.publish(7, Some("data.done"), false).unwrap();
    assert_eq!((files, bytes), (m.files() as u64, m.bytes()));
    assert!(!stage.exists());
    assert!(store.stage_dir(7).is_none());
    assert_eq!(std::fs::read_to_string(dest.join("data.done")).unwrap().lines().next(), Some("transfer=7"));
    assert_eq!(snapshot(&dest, &["data.done", "old.txt", ".wugui-stage-0123"]), snapshot(&src, &[]));
    assert!(dest.join("old.txt").exists());
    assert!(dest.join(".wugui-stage-0123").is_dir());
    // the planted symlink was replaced, not written through
    assert!(names(&outside).is_empty());
    assert!(dest.join("sub").symlink_metadata().unwrap().is_dir());
    assert_eq!(std::fs::read_link(dest.join("d/link")).unwrap(), Path::new("e/big.bin"));
    let md = std::fs::symlink_metadata(src.join("d/link")).unwrap();
    let got = std::fs::symlink_metadata(dest.join("d/link")).unwrap();
    assert_eq!((got.mtime(), got.mtime_nsec()), (md.mtime(), md.mtime_nsec()));

    // again with mirror: the extra file goes, the flag file and other stages stay
    let mut store = DiskStore::new(state, vec![base.clone()], RETENTION).unwrap();
    transfer(&mut store, 8, &src, &dest, &m);
    store.publish(8, Some("data.done"), true).unwrap();
    assert!(!dest.join("old.txt").exists());
    assert_eq!(std::fs::read_to_string(dest.join("data.done")).unwrap().lines().next(), Some("transfer=8"));
    assert_eq!(snapshot(&dest, &["data.done", ".wugui-stage-0123"]), snapshot(&src, &[]));
    cleanup(&base);
}

#[test]
fn planted_symlinks_are_not_followed() {
    let base = scratch("plant");
    let (src, dest, outside) = (base.join("src"), base.join("dest"), base.join("outside"));
    std::fs::create_dir_all(src.join("sub/deeper")).unwrap();
    write(&src.join("sub/deeper/f"), b"data", 0o644);
    write(&src.join("g"), b"gg", 0o644);
    std::fs::create_dir_all(&outside).unwrap();
    write(&outside.join("g"), b"precious", 0o644);
    let m = walk(&src, &[], 3).unwrap().manifest;
    std::fs::create_dir_all(&dest).unwrap();
    std::os::unix::fs::symlink(&outside, dest.join("sub")).unwrap();
    std::os::unix::fs::symlink(outside.join("g"), dest.join("g")).unwrap();

    let mut store = DiskStore::new(base.join("state"), vec![base.clone()], RETENTION).unwrap();
    transfer(&mut store, 1, &src, &dest, &m);
    store.publish(1, None, false).unwrap();
    assert_eq!(names(&outside), ["g"]);
    assert_eq!(std::fs::read(outside.join("g")).unwrap(), b"precious");
    assert_eq!(std::fs::read(dest.join("sub/deeper/f")).unwrap(), b"data");
    assert!(dest.join("g").symlink_metadata().unwrap().is_file());
    assert_eq!(snapshot(&dest, &[]), snapshot(&src, &[]));

    // a symlink planted as the stage dir is replaced too
    let m2 = walk(&src, &[], 5).unwrap().manifest;
    std::os::unix::fs::symlink(&outside, dest.join(stage_name(&m2))).unwrap();
    store.prepare(2, dest.to_str().unwrap(), &m2, false).unwrap();
    assert_eq!(names(&outside), ["g"]);
    assert!(dest.join(stage_name(&m2)).symlink_metadata().unwrap().is_dir());
    store.abort(2, false);
    assert!(!dest.join(stage_name(&m2)).exists());
    cleanup(&base);
}

/// `cargo test --release --lib -- --ignored many_files --nocapture`
#[test]
#[ignore]
fn many_files() {
    let base = scratch("many");
    let (src, dest) = (base.join("src"), base.join("dest"));
    for d in 0..1000 {
        std::fs::create_dir_all(src.join(format!("d{d}"))).unwrap();
        for f in 0..100 {
            std::fs::write(src.join(format!("d{d}/f{f}")), format!("{d}/{f}")).unwrap();
        }
    }
    let t = std::time::Instant::now();
    let m = walk(&src, &[regex::bytes::Regex::new("nomatch$").unwrap()], 4096).unwrap().manifest;
    eprintln!("walk {} entries: {:?}", m.entries().len(), t.elapsed());
    let mut store = DiskStore::new(base.join("state"), vec![base.clone()], RETENTION).unwrap();
    let t = std::time::Instant::now();
    store.prepare(1, dest.to_str().unwrap(), &m, false).unwrap();
    eprintln!("prepare: {:?}", t.elapsed());
    let t = std::time::Instant::now();
    let mut fs = FsSource::new(src.to_path_buf(), &m);
    for i in 0..m.blocks() {
        let b = m.block(i).unwrap();
        let (body, _) = fs.block(&b, Verify::Md5, true).unwrap();
        let buf = body_bytes(&body).unwrap();
        store.write_block(1, &b, &buf).unwrap();
    }
    eprintln!("read+write: {:?}", t.elapsed());
    let t = std::time::Instant::now();
    store.seal(1).unwrap();
    eprintln!("seal: {:?}", t.elapsed());
    let t = std::time::Instant::now();
    store.publish(1, Some("done"), true).unwrap();
    eprintln!("publish: {:?}", t.elapsed());
    cleanup(&base);
}

#[test]
fn abort_leaves_the_old_files() {
    let base = scratch("abort");
    let (src, dest) = (base.join("src"), base.join("dest"));
    std::fs::create_dir(&src).unwrap();
    let m = source(&src);
    std::fs::create_dir_all(dest.join("d")).unwrap();
    write(&dest.join("d/small"), b"old", 0o644);
    let before = snapshot(&dest, &[]);

    let mut store = DiskStore::new(base.join("state"), vec![base.clone()], RETENTION).unwrap();
    let d = dest.to_str().unwrap();
    store.prepare(3, d, &m, false).unwrap();
    let b = m.block(0).unwrap();
    store.write_block(3, &b, &vec![1u8; b.len as usize]).unwrap();
    assert!(store.write_block(3, &b, &[1u8; 3]).unwrap_err().to_string().contains("expected"));
    assert!(store.seal(3).unwrap_err().to_string().contains("missing"));
    assert!(store.publish(3, None, false).is_err());
    // keep: the stage stays for a resume
    store.abort(3, true);
    assert!(dest.join(stage_name(&m)).is_dir());
    assert!(store.write_block(3, &b, &vec![1u8; b.len as usize]).is_err());
    // the same manifest finds the same stage and keeps what is there
    store.prepare(4, d, &m, false).unwrap();
    let seg = m.segments(&b)[0];
    let staged = std::fs::read(dest.join(stage_name(&m)).join(&m.entries()[seg.entry as usize].path)).unwrap();
    assert_eq!(&staged[..seg.len as usize], &vec![1u8; seg.len as usize][..]);
    store.abort(4, false);
    assert_eq!(names(&dest), ["d"]);
    assert_eq!(snapshot(&dest, &[]), before);
    cleanup(&base);
}

#[test]
fn a_symlink_planted_by_one_class_is_not_followed_by_another() {
    let base = scratch("classes");
    let (src, data, outside) = (base.join("src"), base.join("data"), base.join("outside"));
    std::fs::create_dir_all(&src).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    // class A's dest is /data/a; its tree plants a/b -> outside, and class B's dest is /data/a/b/x
    std::os::unix::fs::symlink(&outside, src.join("b")).unwrap();
    write(&src.join("f"), b"a's file", 0o644);
    let ma = walk(&src, &[], 4096).unwrap().manifest;
    let mut store = DiskStore::new(base.join("state"), vec![data.clone()], RETENTION).unwrap();
    transfer(&mut store, 1, &src, &data.join("a"), &ma);
    store.publish(1, None, false).unwrap();
    assert!(data.join("a/b").symlink_metadata().unwrap().file_type().is_symlink());

    let srcb = base.join("srcb");
    std::fs::create_dir_all(&srcb).unwrap();
    write(&srcb.join("evil"), b"planted", 0o4755);
    let mb = walk(&srcb, &[], 4096).unwrap().manifest;
    for dest in [data.join("a/b/x"), data.join("a/b")] {
        let e = store.prepare(2, dest.to_str().unwrap(), &mb, false).unwrap_err();
        assert!(matches!(&e, StoreError::Refused(t) if t.contains("is a symlink")), "{e}");
    }
    // and a dest outside allow_dest, even one that shares its string prefix
    let e = store.prepare(2, base.join("database").to_str().unwrap(), &mb, false).unwrap_err();
    assert!(e.to_string().contains("outside allow_dest"), "{e}");
    assert!(names(&outside).is_empty());
    assert!(!base.join("database").exists());
    cleanup(&base);
}

/// Descriptors of this process open on `dir` or below it.
fn fds_under(dir: &Path) -> usize {
    let dir = dir.canonicalize().unwrap();
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|p| p.starts_with(&dir))
        .count()
}

#[test]
fn nothing_of_a_finished_transfer_stays_open() {
    let base = scratch("fds");
    let (src, dest) = (base.join("src"), base.join("dest"));
    std::fs::create_dir(&src).unwrap();
    let m = source(&src);
    let mut store = DiskStore::new(base.join("state"), vec![base.clone()], RETENTION).unwrap();
    transfer(&mut store, 1, &src, &dest, &m);
    assert!(fds_under(&dest) > 0, "a live transfer holds its stage");
    store.publish(1, None, false).unwrap();
    assert_eq!(fds_under(&dest), 0, "after publish");
    // still served to peers: the dest is opened for the block, and let go with it
    let b = m.block(0).unwrap();
    let body = store.block_body(1, &b).unwrap();
    assert_eq!(body_bytes(&body).unwrap().len(), b.len as usize);
    drop(body);
    assert_eq!(fds_under(&dest), 0, "after serving");

    for keep in [true, false] {
        let m2 = walk(&src, &[], 2048).unwrap().manifest;
        store.prepare(2, dest.to_str().unwrap(), &m2, false).unwrap();
        let b = m2.block(0).unwrap();
        store.write_block(2, &b, &vec![0u8; b.len as usize]).unwrap();
        // Served while staged: the file stays open for the next block, until the abort.
        drop(store.block_body(2, &b).unwrap());
        assert!(fds_under(&dest) > 0);
        store.abort(2, keep);
        assert_eq!(fds_under(&dest), 0, "after abort (keep = {keep})");
    }
    cleanup(&base);
}

#[test]
fn a_stage_begun_again_is_served_from_its_new_files() {
    let base = scratch("serve-again");
    let (src, dest) = (base.join("src"), base.join("dest"));
    std::fs::create_dir(&src).unwrap();
    let m = source(&src);
    let mut store = DiskStore::new(base.join("state"), vec![base.clone()], RETENTION).unwrap();
    let b = m.block(0).unwrap();
    for fill in [1u8, 2] {
        // The stage is made anew each time; what is served is what this stage holds.
        store.prepare(1, dest.to_str().unwrap(), &m, false).unwrap();
        let data = vec![fill; b.len as usize];
        store.write_block(1, &b, &data).unwrap();
        assert!(body_bytes(&store.block_body(1, &b).unwrap()).unwrap() == data, "fill {fill}");
        assert!(body_bytes(&store.block_body(1, &b).unwrap()).unwrap() == data, "again, fill {fill}");
        store.abort(1, false);
    }
    cleanup(&base);
}

#[test]
fn special_bits_are_dropped_unless_the_class_keeps_them() {
    let base = scratch("special");
    let (src, dest) = (base.join("src"), base.join("dest"));
    std::fs::create_dir_all(src.join("shared")).unwrap();
    std::fs::create_dir_all(src.join("group")).unwrap();
    write(&src.join("suid"), b"#!/bin/sh\n", 0o4755);
    write(&src.join("plain"), b"plain", 0o640);
    chmod(&src.join("shared"), 0o1777);
    chmod(&src.join("group"), 0o2750);
    let m = walk(&src, &[], 4096).unwrap().manifest;
    let modes = |root: &Path| -> Vec<(String, u32)> {
        ["suid", "plain", "shared", "group"]
            .iter()
            .map(|n| (n.to_string(), std::fs::metadata(root.join(n)).unwrap().mode() & 0o7777))
            .collect()
    };
    let want = |keep: bool| -> Vec<(String, u32)> {
        modes(&src).into_iter().map(|(n, b)| (n, if keep { b } else { b & 0o777 })).collect()
    };
    let mut store = DiskStore::new(base.join("state"), vec![base.clone()], RETENTION).unwrap();
    // the po has not said: the safe default
    transfer(&mut store, 1, &src, &dest, &m);
    store.publish(1, None, false).unwrap();
    assert_eq!(modes(&dest), want(false));
    assert_eq!(modes(&dest)[0].1, 0o755);

    // kept: and also on files the delta took from the published copy before set_options
    let held = store.prepare(2, dest.to_str().unwrap(), &m, true).unwrap();
    assert!(held.iter().all(|h| *h), "{held:?}");
    store.set_options(2, StageOptions { keep_special_bits: true, ..Default::default() });
    store.seal(2).unwrap();
    store.publish(2, None, false).unwrap();
    assert_eq!(modes(&dest), want(true));

    // and dropped again by the next push of a class that does not keep them
    store.prepare(3, dest.to_str().unwrap(), &m, true).unwrap();
    store.set_options(3, StageOptions { keep_special_bits: false, ..Default::default() });
    store.seal(3).unwrap();
    store.publish(3, None, false).unwrap();
    assert_eq!(modes(&dest), want(false));
    cleanup(&base);
}

#[test]
fn a_failed_publish_leaves_the_old_tree() {
    let base = scratch("prefail");
    let (src, dest) = (base.join("src"), base.join("dest"));
    std::fs::create_dir_all(src.join("sub")).unwrap();
    write(&src.join("f"), b"version 1", 0o644);
    let m1 = walk(&src, &[], 4096).unwrap().manifest;
    let mut store = DiskStore::new(base.join("state"), vec![base.clone()], RETENTION).unwrap();
    transfer(&mut store, 1, &src, &dest, &m1);
    store.publish(1, Some("done"), false).unwrap();
    std::fs::create_dir(dest.join("olddir")).unwrap();
    // the dest without stages
    let outside_stages = |d: &Path| {
        let (mut e, mut c) = snapshot(d, &[]);
        e.retain(|e| !e.path.starts_with(STAGE_PREFIX));
        c.retain(|(p, _)| !p.starts_with(STAGE_PREFIX));
        (e, c)
    };
    let before = outside_stages(&dest);

    // version 2 holds a directory named as the flag file; the dest one another
    std::fs::remove_file(src.join("f")).unwrap();
    write(&src.join("g"), b"version 2", 0o644);
    std::fs::create_dir(src.join("done")).unwrap();
    let m2 = walk(&src, &[], 4096).unwrap().manifest;
    transfer(&mut store, 2, &src, &dest, &m2);
    for (flag, why) in [("done", "directory of the pushed tree"), ("olddir", "directory in the dest")] {
        let e = store.publish(2, Some(flag), true).unwrap_err();
        assert!(matches!(&e, StoreError::Refused(t) if t.contains(why)), "{e}");
        assert_eq!(outside_stages(&dest), before, "flag {flag}");
    }
    // without the clash the same stage publishes
    store.publish(2, Some("flag"), true).unwrap();
    assert_eq!(snapshot(&dest, &["flag"]), snapshot(&src, &[]));
    assert_eq!(names(&dest), ["done", "flag", "g", "sub"]);
    cleanup(&base);
}

#[test]
fn a_staged_sparse_block_is_served_whole_before_seal() {
    use std::os::unix::fs::FileExt;
    let base = scratch("sparse-serve");
    let (src, dest) = (base.join("src"), base.join("dest"));
    std::fs::create_dir_all(&src).unwrap();
    // 4 bytes at 160 KiB of a 320 KiB file: the block holding them is one page of data and
    // the rest zeros, which the stage leaves as a hole at the file's end.
    let f = File::create(src.join("s.img")).unwrap();
    f.set_len(320 << 10).unwrap();
    f.write_all_at(b"data", 160 << 10).unwrap();
    let m = walk(&src, &[], 16 << 10).unwrap().manifest;
    if m.entries().iter().all(|e| e.sparse.is_none()) {
        eprintln!("skipped: the temp dir's filesystem does not keep holes");
        return cleanup(&base);
    }
    let mut store = DiskStore::new(base.join("state"), vec![base.clone()], RETENTION).unwrap();
    let held = store.prepare(1, dest.to_str().unwrap(), &m, false).unwrap();
    let data: Vec<u64> = (0..m.blocks()).filter(|&i| !held[i as usize]).collect();
    assert_eq!(data, [10]);
    let b = m.block(10).unwrap();
    let mut fs = FsSource::new(src.clone(), &m);
    let want = body_bytes(&fs.block(&b, Verify::None, true).unwrap().0).unwrap();
    store.write_block(1, &b, &want).unwrap();
    let body = store.block_body(1, &b).unwrap();
    assert_eq!(body.len(), 16 << 10);
    assert!(body_bytes(&body).unwrap() == want, "a staged sparse block reads back short or wrong");
    // A file shorter than its block is refused up front, not cut off mid-frame.
    let staged = store.stage_dir(1).unwrap().join("s.img");
    std::fs::OpenOptions::new().write(true).open(&staged).unwrap().set_len(100 << 10).unwrap();
    let e = store.block_body(1, &b).unwrap_err();
    assert!(e.to_string().contains("before the block's end"), "{e}");
    store.abort(1, false);
    cleanup(&base);
}

/// A tree at `root` of `files` (path, content); parents are made as needed.
fn tree_of(root: &Path, files: &[(&str, &[u8])]) -> Manifest {
    std::fs::create_dir_all(root).unwrap();
    for (p, data) in files {
        std::fs::create_dir_all(root.join(p).parent().unwrap()).unwrap();
        write(&root.join(p), data, 0o644);
    }
    walk(root, &[], 4096).unwrap().manifest
}

/// Class B's dest `a/x/b` inside class A's dest `a`, B's tree published there.
fn nested_rig(tag: &str) -> (PathBuf, DiskStore, PathBuf, PathBuf) {
    let base = scratch(tag);
    let (a, b) = (base.join("a"), base.join("a/x/b"));
    let mut store = DiskStore::new(base.join("state"), vec![base.clone()], RETENTION).unwrap();
    let m = tree_of(&base.join("src-b"), &[("b.dat", b"class B"), ("deep/f", b"ff")]);
    transfer(&mut store, 1, &base.join("src-b"), &b, &m);
    store.publish(1, None, false).unwrap();
    (base, store, a, b)
}

#[test]
fn a_file_never_replaces_another_dest_nor_a_directory_that_holds_it() {
    let (base, mut store, a, b) = nested_rig("nested-file");
    let before = snapshot(&b, &[]);
    for (id, at) in [(2, "x/b"), (3, "x")] {
        let src = base.join(format!("src-a{id}"));
        let m = tree_of(&src, &[("a.dat", b"class A"), (at, b"gone")]);
        transfer(&mut store, id, &src, &a, &m);
        let e = store.publish(id, None, false).unwrap_err();
        let want = format!("would replace the dest of another class: {}", b.display());
        assert!(matches!(&e, StoreError::Refused(t) if t.contains(&want)), "{at}: {e}");
        // refused before the first rename: nothing of A's tree is in, B's tree is whole
        assert!(!a.join("a.dat").exists(), "{at}");
        assert_eq!(snapshot(&b, &[]), before, "{at}");
        store.abort(id, false);
    }
    // a symlink where the holding directory is: refused too
    let src = base.join("src-a4");
    tree_of(&src, &[("a.dat", b"class A")]);
    std::os::unix::fs::symlink("/", src.join("x")).unwrap();
    let m = walk(&src, &[], 4096).unwrap().manifest;
    transfer(&mut store, 4, &src, &a, &m);
    assert!(store.publish(4, None, false).is_err());
    store.abort(4, false);
    assert_eq!(snapshot(&b, &[]), before);
    // nothing of A's tree goes into B's dest, a file or a directory
    for (id, at) in [(6, "x/b/f.dat"), (7, "x/b/sub/g.dat")] {
        let src = base.join(format!("src-a{id}"));
        let m = tree_of(&src, &[("a.dat", b"class A"), (at, b"into B")]);
        transfer(&mut store, id, &src, &a, &m);
        let e = store.publish(id, None, false).unwrap_err();
        let want = format!("would write into the dest of another class: {}", b.display());
        assert!(matches!(&e, StoreError::Refused(t) if t.contains(&want)), "{at}: {e}");
        assert_eq!(snapshot(&b, &[]), before, "{at}");
        store.abort(id, false);
    }
    // A's tree with directories on the way, and files beside them, publishes
    let src = base.join("src-a5");
    let m = tree_of(&src, &[("a.dat", b"class A"), ("x/beside", b"A's")]);
    transfer(&mut store, 5, &src, &a, &m);
    store.publish(5, None, false).unwrap();
    assert_eq!(std::fs::read(a.join("x/beside")).unwrap(), b"A's");
    assert_eq!(snapshot(&b, &[]), before);
    cleanup(&base);
}

#[test]
fn a_file_where_a_dest_once_was_is_published_when_nothing_is_there() {
    // the po remembers B's dest, but B's tree is gone from the disk: nothing to protect
    let (base, mut store, a, b) = nested_rig("nested-gone");
    std::fs::remove_dir_all(a.join("x")).unwrap();
    let src = base.join("src-a");
    let m = tree_of(&src, &[("x", b"A's file")]);
    transfer(&mut store, 2, &src, &a, &m);
    store.publish(2, None, false).unwrap();
    assert_eq!(std::fs::read(a.join("x")).unwrap(), b"A's file");
    assert!(!b.exists());
    cleanup(&base);
}

#[test]
fn mirror_keeps_a_nested_dest_and_its_live_stage_but_not_what_is_beside_it() {
    let (base, mut store, a, b) = nested_rig("nested-mirror");
    let before = snapshot(&b, &[]);
    // B's next push is staging inside B's dest
    let src_b2 = base.join("src-b2");
    let mb2 = tree_of(&src_b2, &[("b.dat", b"class B, version 2")]);
    store.prepare(2, b.to_str().unwrap(), &mb2, false).unwrap();
    let b_stage = store.stage_dir(2).unwrap();
    assert!(b_stage.starts_with(&b));
    // beside B's dest, and in A's dest: what A's tree lacks
    write(&a.join("x/sibling"), b"extra", 0o644);
    std::fs::create_dir_all(a.join("x/other/d")).unwrap();
    write(&a.join("old"), b"extra", 0o644);

    // A's tree lacks x altogether
    let src = base.join("src-a");
    let m = tree_of(&src, &[("a.dat", b"class A")]);
    transfer(&mut store, 3, &src, &a, &m);
    store.publish(3, None, true).unwrap();
    assert_eq!(snapshot(&b, &[]).1, before.1);
    assert!(b_stage.is_dir(), "B's live stage was removed");
    assert_eq!(names(&a.join("x")), ["b"]);
    assert_eq!(names(&a), ["a.dat", "x"]);

    // A's tree holds x, with a file of its own; B's dest stays, the sibling goes again
    write(&a.join("x/sibling"), b"extra", 0o644);
    let src = base.join("src-a2");
    let m = tree_of(&src, &[("a.dat", b"class A"), ("x/mine", b"A's")]);
    transfer(&mut store, 4, &src, &a, &m);
    store.publish(4, None, true).unwrap();
    assert_eq!(names(&a.join("x")), ["b", "mine"]);
    assert_eq!(snapshot(&b, &[]).1, before.1);

    // B's push goes on and publishes
    transfer_rest(&mut store, 2, &src_b2, &mb2);
    store.publish(2, None, false).unwrap();
    assert_eq!(std::fs::read(b.join("b.dat")).unwrap(), b"class B, version 2");
    cleanup(&base);
}

/// Writes every block of `m` into the prepared transfer `id`, and seals it.
fn transfer_rest(store: &mut DiskStore, id: u64, src: &Path, m: &Manifest) {
    let mut fs = FsSource::new(src.to_path_buf(), m);
    for i in 0..m.blocks() {
        let b = m.block(i).unwrap();
        let (body, _) = fs.block(&b, Verify::None, true).unwrap();
        store.write_block(id, &b, &body_bytes(&body).unwrap()).unwrap();
    }
    store.seal(id).unwrap();
}

#[test]
fn one_tree_to_two_dests_stages_and_resumes_in_each() {
    const BS: u64 = 16 << 10;
    let base = scratch("two-dests");
    let src = base.join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("d.bin"), crate::testutil::noise(8 * BS as usize, 7)).unwrap();
    let m = walk(&src, &[], BS as u32).unwrap().manifest;
    let (d1, d2) = (base.join("one"), base.join("two"));
    let state = base.join("state");
    let mut store = DiskStore::new(state.clone(), vec![base.clone()], RETENTION).unwrap();
    let mut fs = FsSource::new(src.clone(), &m);
    let mut bytes = |i: u64| body_bytes(&fs.block(&m.block(i).unwrap(), Verify::None, true).unwrap().0).unwrap();
    let put = |store: &mut DiskStore, id: u64, blocks: &[u64], bytes: &mut dyn FnMut(u64) -> Vec<u8>| {
        for &i in blocks {
            store.write_block(id, &m.block(i).unwrap(), &bytes(i)).unwrap();
        }
    };
    store.prepare(1, d1.to_str().unwrap(), &m, false).unwrap();
    put(&mut store, 1, &[0, 1], &mut bytes);
    // the same tree to another dest leaves the first transfer prepared
    store.prepare(2, d2.to_str().unwrap(), &m, false).unwrap();
    put(&mut store, 2, &[5], &mut bytes);
    put(&mut store, 1, &[2], &mut bytes);
    assert!(store.stage_dir(1).unwrap().starts_with(&d1));
    assert!(store.stage_dir(2).unwrap().starts_with(&d2));
    store.abort(1, true);
    store.abort(2, true);
    let records = names(&state).into_iter().filter(|n| n.ends_with(".held")).count();
    assert_eq!(records, 2, "{:?}", names(&state));

    // each resumes from its own stage and record
    drop(store);
    let mut store = DiskStore::new(state, vec![base.clone()], RETENTION).unwrap();
    store.prepare(3, d1.to_str().unwrap(), &m, false).unwrap();
    store.prepare(4, d2.to_str().unwrap(), &m, false).unwrap();
    let sorted = |mut v: Vec<u64>| {
        v.sort_unstable();
        v
    };
    assert_eq!(sorted(store.candidates(3)), [0, 1, 2]);
    assert_eq!(sorted(store.candidates(4)), [5]);
    for (id, dest) in [(3, &d1), (4, &d2)] {
        let sums: Vec<(u64, crate::proto::msg::Digest)> =
            store.candidates(id).iter().map(|&i| (i, crate::proto::checksum::digest(&bytes(i)))).collect();
        let taken = store.check(id, &sums);
        let rest: Vec<u64> = (0..m.blocks()).filter(|i| !taken.contains(i)).collect();
        put(&mut store, id, &rest, &mut bytes);
        store.seal(id).unwrap();
        store.publish(id, None, false).unwrap();
        assert_eq!(snapshot(dest, &[]), snapshot(&src, &[]));
    }
    cleanup(&base);
}

/// A stage someone else could have made or entered (here: open to everyone, with a file
/// planted in it) is removed and made anew, never reused.
#[test]
fn a_stage_others_could_enter_is_made_anew() {
    use std::os::unix::fs::PermissionsExt;
    let base = scratch("stage-trust");
    let (src, dest) = (base.join("src"), base.join("dest"));
    std::fs::create_dir(&src).unwrap();
    let m = source(&src);
    let stage = dest.join(crate::store::stage_name(&m));
    std::fs::create_dir_all(&stage).unwrap();
    std::fs::set_permissions(&stage, std::fs::Permissions::from_mode(0o777)).unwrap();
    write(&stage.join("planted"), b"theirs", 0o644);
    let mut store = DiskStore::new(base.join("state"), vec![base.clone()], RETENTION).unwrap();
    transfer(&mut store, 1, &src, &dest, &m);
    assert!(!stage.join("planted").exists(), "the planted stage was reused");
    assert_eq!(std::fs::metadata(&stage).unwrap().permissions().mode() & 0o777, 0o700);
    store.publish(1, None, false).unwrap();
    assert!(!dest.join("planted").exists());
    cleanup(&base);
}
