//! Two classes on one real po (issue 14): what a master of one class may make the po hold or
//! write. A manifest over `MAX_BLOCKS` blocks is refused without the po growing, and both
//! classes still push; one class's tree cannot lead another class's push out of `allow_dest`
//! through a symlink, nor remove another class's dest nested in its own; setuid, setgid and
//! sticky bits are kept only where the class says so.

mod common;
use common::*;
use std::fs;
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use wugui::proto::manifest::MAX_BLOCKS;
use wugui::proto::msg::Reason;
use wugui::proto::{auth::Token, wire, Manifest, Msg};

/// A CAC with classes A and B, and one po in both (its `root` maps the dests into the temp dir).
struct Rig {
    dir: TempDir,
    cac: Daemon,
    po: Daemon,
    root: PathBuf,
    master_conf: PathBuf,
}

/// Class A's dest is `/home/work/data/a`; B's is `dest_b`. `extra_a`, `extra_b`: more lines.
fn rig(tag: &str, dest_b: &str, extra_a: &str, extra_b: &str) -> Rig {
    let dir = TempDir::new(tag);
    let d = dir.path();
    fs::write(d.join("cluster.key"), "test-cluster-key\n").unwrap();
    let po_port = free_port();
    let class = |name: &str, dest: &str, extra: &str| {
        format!("\n[class {name}]\npo = 127.0.0.1:{po_port}\ndest = {dest}\nmasters = 127.0.0.0/8\n{extra}\n")
    };
    let cac = format!(
        "[cac]\nlisten = 127.0.0.1:0\nsecret_file = {}\nlog = {}\n{}{}",
        d.join("cluster.key").display(),
        d.join("cac.log").display(),
        class("A", "/home/work/data/a", extra_a),
        class("B", dest_b, extra_b)
    );
    fs::write(d.join("cac.conf"), cac).unwrap();
    let cac = Daemon::start("wugui-cac", &d.join("cac.conf"), d.join("cac.log"));
    let (po, root) = start_po(d, &format!("127.0.0.1:{po_port}"), &cac.addr);
    let master_conf = d.join("master.conf");
    fs::write(&master_conf, format!("[master]\ncac = {}\nlog = {}\n", cac.addr, d.join("master.log").display()))
        .unwrap();
    Rig { dir, cac, po, root, master_conf }
}

impl Rig {
    /// Pushes `src` to `class`, waiting (30 s at most) for a grant a rogue may still hold.
    fn push(&self, class: &str, src: &Path) -> Output {
        master_with(&self.master_conf, &["-c", class, "-p", src.to_str().unwrap(), "--wait=30"])
    }

    /// Where the po keeps `dest`.
    fn on_po(&self, dest: &str) -> PathBuf {
        self.root.join(dest.trim_start_matches('/'))
    }

    /// A master granted `class` offers `manifest` (encoded) to the po and sends it once the CAC
    /// vouched. Returns the po's answer (`None`: it closed).
    fn offer(&self, class: &str, manifest: Vec<u8>) -> Option<Msg> {
        let mut cac = TcpStream::connect(&self.cac.addr).unwrap();
        send(&mut cac, &Msg::AuthRequest { class: class.into() });
        let Some(Msg::AuthGrant { token, .. }) = recv(&mut cac) else { panic!("no grant") };
        let transfer = Token::decode(&token).unwrap().transfer;
        let mut po = TcpStream::connect(&self.po.addr).unwrap();
        let (manifest_id, manifest_len) = (Manifest::id_of(&manifest), manifest.len() as u64);
        send(&mut po, &Msg::Offer { token, po: String::new(), manifest_id, manifest_len, mode: 0 });
        assert_eq!(recv(&mut po), Some(Msg::Verified { transfer }));
        send(&mut po, &Msg::Manifest { transfer, manifest: manifest.into() });
        recv(&mut po)
    }
}

/// One file `big` of `size` bytes, encoded by hand: `Manifest::new` refuses a tree over
/// `MAX_BLOCKS` blocks, so `Manifest::encode` cannot make one.
fn one_file(block_size: u32, size: u64) -> Vec<u8> {
    let mut w = wugui::proto::codec::Writer::new();
    w.u32(block_size);
    w.u32(1); // entries
    w.var(0); // no prefix shared with the previous path
    w.var(3);
    w.raw(b"big");
    w.var(0o644);
    w.var(0); // mtime (zigzag difference)
    w.var(0); // mtime nsec
    w.u8(1); // a file
    w.var(size);
    w.buf
}

#[test]
fn a_manifest_over_max_blocks_is_refused_and_both_classes_still_push() {
    let mut r = rig("files-blocks", "/home/work/data/b", "", "");
    let pid = r.po.child.id();
    let hwm0 = status_kib(pid, "VmHWM");
    // 2^62 bytes once made the po allocate per-block state for 2^50 blocks and abort.
    let cases = [(4096, 1u64 << 62), (4096, (MAX_BLOCKS + 1) * 4096), (wire::MAX_BLOCK, u64::MAX)];
    for (block_size, size) in cases {
        let m = one_file(block_size, size);
        match r.offer("A", m.clone()) {
            Some(Msg::Denied { reason: Reason::BadManifest, text }) => {
                eprintln!("{} bytes declaring {size} bytes in blocks of {block_size}: refused: {text}", m.len())
            }
            None => eprintln!("{} bytes declaring {size} bytes: the po closed", m.len()),
            other => panic!("{size} bytes in blocks of {block_size}: not refused: {other:?}"),
        }
        assert!(r.po.child.try_wait().unwrap().is_none(), "the po died");
    }
    let hwm1 = status_kib(pid, "VmHWM");
    eprintln!("po VmHWM {hwm0} -> {hwm1} KiB");
    assert!(hwm1 < hwm0 + (32 << 10), "the po grew from {hwm0} to {hwm1} KiB");
    // The po is alive and serves both classes.
    let src = r.dir.join("src");
    seed_tree(&src);
    for (class, dest) in [("A", "/home/work/data/a"), ("B", "/home/work/data/b")] {
        let out = r.push(class, &src);
        assert_eq!(out.status.code(), Some(0), "class {class}: {}", text(&out.stderr));
        assert_eq!(snapshot(&r.on_po(dest)), snapshot(&src), "class {class}");
    }
}

#[test]
fn a_symlink_of_one_class_does_not_lead_another_class_out_of_allow_dest() {
    // B's dest lies inside A's tree, where A's push puts a symlink to a directory outside.
    let r = rig("files-link", "/home/work/data/a/sub/b", "", "");
    let outside = r.dir.join("outside");
    fs::create_dir_all(&outside).unwrap();
    let a_src = r.dir.join("src-a");
    fs::create_dir_all(&a_src).unwrap();
    fs::write(a_src.join("a.dat"), b"class A").unwrap();
    std::os::unix::fs::symlink(&outside, a_src.join("sub")).unwrap();
    let out = r.push("A", &a_src);
    assert_eq!(out.status.code(), Some(0), "class A: {}", text(&out.stderr));
    assert_eq!(fs::read_link(r.on_po("/home/work/data/a/sub")).unwrap(), outside);
    // B's push would follow it.
    let b_src = r.dir.join("src-b");
    seed_tree(&b_src);
    let out = r.push("B", &b_src);
    let err = text(&out.stderr);
    eprintln!("class B: exit {:?}: {}", out.status.code(), err.trim());
    assert_ne!(out.status.code(), Some(0), "class B was pushed through A's symlink: {err}");
    let log = r.po.log_text();
    assert!(log.lines().any(|l| l.contains("symlink") && l.contains("/home/work/data/a/sub")), "{log}");
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 0, "something was written outside allow_dest");
    assert_eq!(snapshot(&r.on_po("/home/work/data/a")), snapshot(&a_src), "class A's tree changed");
}

/// Class B's dest lies inside class A's (mirror on): A's push that puts a file where B's dest
/// is fails before anything is renamed, and A's push of a tree that lacks that path leaves B's
/// tree alone. (Review wt-r1, finding 1: A's push removed B's whole published tree.)
#[test]
fn a_class_never_removes_the_dest_of_another_class_nested_in_its_own() {
    let r = rig("files-nested", "/home/work/data/a/child", "mirror = on", "");
    let b_src = r.dir.join("src-b");
    seed_tree(&b_src);
    let out = r.push("B", &b_src);
    assert_eq!(out.status.code(), Some(0), "class B: {}", text(&out.stderr));
    let b_dest = r.on_po("/home/work/data/a/child");
    let before = snapshot(&b_dest);
    assert!(!before.is_empty());
    // A's tree with a FILE named `child`: refused on the po, nothing of A's tree published.
    let a_src = r.dir.join("src-a");
    fs::create_dir_all(&a_src).unwrap();
    fs::write(a_src.join("a.dat"), b"class A").unwrap();
    fs::write(a_src.join("child"), b"gone").unwrap();
    let out = r.push("A", &a_src);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "class A: {err}");
    assert!(err.contains("would replace the dest of another class"), "{err}");
    let log = r.po.log_text();
    assert!(log.lines().any(|l| l.contains("event=nested_dest_refused") && l.contains("path=child")), "{log}");
    assert!(fs::symlink_metadata(&b_dest).unwrap().is_dir());
    assert_eq!(snapshot(&b_dest), before, "class B's tree changed");
    assert!(!r.on_po("/home/work/data/a/a.dat").exists());
    // A's tree without `child` (mirror on) publishes, and B's tree stays.
    fs::remove_file(a_src.join("child")).unwrap();
    let out = r.push("A", &a_src);
    assert_eq!(out.status.code(), Some(0), "class A: {}", text(&out.stderr));
    assert_eq!(fs::read(r.on_po("/home/work/data/a/a.dat")).unwrap(), b"class A");
    assert_eq!(snapshot(&b_dest), before, "class B's tree changed");
}

#[test]
fn special_mode_bits_are_dropped_unless_the_class_keeps_them() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: not root, so the po cannot make setuid-root files");
        return;
    }
    let r = rig("files-modes", "/home/work/data/b", "", "keep_special_bits = on");
    let src = r.dir.join("src");
    fs::create_dir_all(src.join("tmp")).unwrap();
    fs::write(src.join("tmp/f"), b"in a sticky dir").unwrap();
    fs::write(src.join("tool"), b"#!/bin/sh\n").unwrap();
    fs::write(src.join("group-tool"), b"#!/bin/sh\n").unwrap();
    let modes = [("tool", 0o4755), ("group-tool", 0o2750), ("tmp", 0o1777)];
    for (p, mode) in modes {
        fs::set_permissions(src.join(p), fs::Permissions::from_mode(mode)).unwrap();
    }
    for (class, dest, keep) in [("A", "/home/work/data/a", false), ("B", "/home/work/data/b", true)] {
        let out = r.push(class, &src);
        assert_eq!(out.status.code(), Some(0), "class {class}: {}", text(&out.stderr));
        for (p, mode) in modes {
            let meta = fs::symlink_metadata(r.on_po(dest).join(p)).unwrap();
            let got = meta.permissions().mode() & 0o7777;
            let want = if keep { mode } else { mode & 0o777 };
            assert_eq!(got, want, "class {class}: {p} is {got:o}, want {want:o}");
        }
    }
    eprintln!("modes 4755, 2750, 1777: published as 755, 750, 777 by default, kept with keep_special_bits = on");
}

/// The po (root) never writes its state files through a link someone planted in `state_dir`,
/// and says when `state_dir` is open to others.
#[test]
fn a_link_planted_in_state_dir_is_never_written_through() {
    let c = Cluster::start("statedir-link", Opts { pos: 1, ..Default::default() });
    let victim = c.dir.path().join("victim");
    fs::write(&victim, "root:x:0:0:root:/root:/bin/bash\n").unwrap();
    let state = c.po_roots[0].join("state");
    std::os::unix::fs::symlink(&victim, state.join("dests.tmp")).unwrap();
    std::os::unix::fs::symlink(&victim, state.join("dests")).unwrap();
    let src = c.seeded_src();
    let o = c.push(&src);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(fs::read_to_string(&victim).unwrap(), "root:x:0:0:root:/root:/bin/bash\n");
    assert!(!fs::symlink_metadata(state.join("dests")).unwrap().file_type().is_symlink());

    fs::set_permissions(&state, fs::Permissions::from_mode(0o777)).unwrap();
    let mut t = std::process::Command::new(bin("wugui-po"));
    t.arg("-t").arg("-f").arg(c.dir.path().join("po0.conf"));
    let o = run_bounded(t, std::time::Duration::from_secs(10));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("writable by group or others"), "{}", text(&o.stderr));
}
