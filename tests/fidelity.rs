//! File fidelity with real processes (issue 20): names that are not UTF-8, hard links, owners,
//! and unreadable source files with and without `--skip-unreadable`.

mod common;
use common::*;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

fn name(b: &[u8]) -> &OsStr {
    OsStr::from_bytes(b)
}

fn write(root: &Path, rel: &[u8], data: &[u8], mode: u32) {
    let p = root.join(name(rel));
    fs::write(&p, data).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
}

fn push_env(c: &Cluster, src: &Path, extra: &[&OsStr], env: &[(&str, &OsStr)]) -> Output {
    let mut cmd = Command::new(bin("masterwugui"));
    cmd.arg("-f").arg(&c.master_conf).args(["-c", "base1", "-p"]).arg(src).args(extra).stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    run_bounded(cmd, Duration::from_secs(120))
}

fn says(o: &Output) -> String {
    format!("exit {:?}\nstdout {}\nstderr {}", o.status.code(), text(&o.stdout), text(&o.stderr))
}

#[test]
fn names_are_bytes_and_hard_links_stay_links() {
    let c = Cluster::start("fid-names", Opts { pos: 2, ..Default::default() });
    let src = c.dir.join("src");
    fs::create_dir_all(src.join("d")).unwrap();
    write(&src, b"d/\xff\xfe.bin", &[7u8; 100_000], 0o640);
    write(&src, b"ctl\x01\ttab", b"control characters", 0o644);
    write(&src, b"caf\xc3\xa9", b"utf-8", 0o600);
    write(&src, b"drop\xfe.tmp", b"excluded by its bytes", 0o644);
    std::os::unix::fs::symlink(name(b"d/\xff\xfe.bin"), src.join(name(b"link\xc3\xa9"))).unwrap();
    // a hard-linked trio, one of them below a name that is not UTF-8
    write(&src, b"a.dat", &[1u8; 300_000], 0o644);
    fs::hard_link(src.join("a.dat"), src.join("d/b.dat")).unwrap();
    fs::hard_link(src.join("a.dat"), src.join(name(b"d/\xffc.dat"))).unwrap();
    let x: &OsStr = name(b"-x");
    let pat: &OsStr = name(br"(?-u:\xfe)\.tmp$");
    let o = push_env(&c, &src, &[x, pat], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", says(&o));
    let mut want = fidelity(&src, &[]);
    want.retain(|k, _| k != "drop\\xfe.tmp");
    assert!(want["d/\\xff\\xfe.bin"].starts_with("file 640"), "{want:?}");
    assert!(want["a.dat"].contains("links=3 group=a.dat"), "{want:?}");
    for i in 0..2 {
        let dest = c.po_dest(i);
        let got = fidelity(&dest, &[]);
        assert_eq!(got, want, "po {i}");
        let a = fs::metadata(dest.join("a.dat")).unwrap();
        let b = fs::metadata(dest.join(name(b"d/\xffc.dat"))).unwrap();
        assert_eq!((a.ino(), a.nlink()), (b.ino(), 3), "po {i}: one inode, three names");
    }
    // The same tree again: every po finds it in place, links and all, and changes nothing.
    let o = push_env(&c, &src, &[x, pat], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", says(&o));
    assert!(summary(&o).ends_with("unchanged=2"), "{}", says(&o));
    // Edit the linked file in place: it travels (delta), and the names stay one inode.
    let f = fs::OpenOptions::new().write(true).open(src.join("a.dat")).unwrap();
    std::os::unix::fs::FileExt::write_at(&f, b"changed", 1000).unwrap();
    drop(f);
    let o = push_env(&c, &src, &[x, pat], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", says(&o));
    assert!(!summary(&o).contains("unchanged="), "{}", says(&o));
    let mut want = fidelity(&src, &[]);
    want.retain(|k, _| k != "drop\\xfe.tmp");
    for i in 0..2 {
        assert_eq!(fidelity(&c.po_dest(i), &[]), want, "po {i} after the edit");
    }
}

#[test]
fn owners_are_kept_as_root_and_chmod_applies() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: not root, so neither the source nor a po can own files as others");
        return;
    }
    let extra = vec!["owner = keep".to_string(), "chmod = go-w,Fo-r".to_string()];
    let c = Cluster::start("fid-owner", Opts { pos: 2, class_extra: extra, ..Default::default() });
    let src = c.dir.join("src");
    fs::create_dir_all(src.join("team")).unwrap();
    write(&src, b"team/ours", b"owned by 1234:5678", 0o664);
    write(&src, b"theirs", b"owned by 4321:8765", 0o666);
    write(&src, b"root's", b"root", 0o644);
    std::os::unix::fs::symlink("theirs", src.join("sym")).unwrap();
    std::os::unix::fs::chown(src.join("team/ours"), Some(1234), Some(5678)).unwrap();
    std::os::unix::fs::chown(src.join("team"), Some(1234), Some(5678)).unwrap();
    std::os::unix::fs::chown(src.join("theirs"), Some(4321), Some(8765)).unwrap();
    std::os::unix::fs::lchown(src.join("sym"), Some(4321), Some(8765)).unwrap();
    let o = c.push(&src);
    assert_eq!(o.status.code(), Some(0), "{}", says(&o));
    for i in 0..2 {
        let got = fidelity(&c.po_dest(i), &[]);
        let head = |k: &str| got[k].split(' ').take(3).collect::<Vec<_>>().join(" ");
        assert_eq!(head("team/ours"), "file 640 1234:5678", "{got:?}");
        assert_eq!(head("theirs"), "file 640 4321:8765", "{got:?}");
        assert_eq!(head("root's"), "file 640 0:0", "{got:?}");
        assert_eq!(head("team"), "dir 755 1234:5678", "{got:?}");
        assert!(got["sym"].starts_with("symlink 4321:8765 -> theirs"), "{got:?}");
    }
    let o = c.push(&src);
    assert!(summary(&o).ends_with("unchanged=2"), "owners in place count as unchanged: {}", says(&o));
}

#[test]
fn an_unreadable_file_stops_the_push_unless_skipped() {
    let c = Cluster::start("fid-unread", Opts { pos: 2, ..Default::default() });
    let src = c.dir.join("src");
    fs::create_dir_all(src.join("d")).unwrap();
    write(&src, b"d/ok", b"fine", 0o644);
    write(&src, b"d/secret\xff", b"root could read this, the failpoint cannot", 0o600);
    let fp = [&b"unreadable=d/secret\xff"[..]].concat();
    let env = [("WUGUI_FAILPOINT", name(&fp))];
    // The default: nothing is pushed, and the error says what would help.
    let o = push_env(&c, &src, &[], &env);
    assert_eq!(o.status.code(), Some(1), "{}", says(&o));
    assert!(summary(&o).contains("result=failed"), "{}", says(&o));
    let err = text(&o.stderr);
    assert!(err.contains("secret\\xff") && err.contains("--skip-unreadable"), "{err}");
    assert!(!c.po_dest(0).exists(), "nothing published");
    // With the flag: the rest goes, one warning names the file, and the exit code is 8.
    let o = push_env(&c, &src, &[name(b"--skip-unreadable")], &env);
    assert_eq!(o.status.code(), Some(8), "{}", says(&o));
    let s = summary(&o);
    assert!(s.contains("result=ok") && s.contains("pos=2/2") && s.ends_with("skipped=1"), "{s}");
    let warnings: Vec<_> =
        text(&o.stderr).lines().filter(|l| l.contains("skipped unreadable")).map(String::from).collect();
    assert_eq!(warnings.len(), 1, "{}", says(&o));
    assert!(warnings[0].contains("d/secret\\xff") && warnings[0].contains("Permission denied"), "{warnings:?}");
    for i in 0..2 {
        let dest = c.po_dest(i);
        assert_eq!(fs::read(dest.join("d/ok")).unwrap(), b"fine");
        assert!(!dest.join(name(b"d/secret\xff")).exists());
    }
    // Without the failpoint everything goes, exit 0.
    let o = push_env(&c, &src, &[name(b"--skip-unreadable")], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", says(&o));
    assert!(c.po_dest(1).join(name(b"d/secret\xff")).exists());
}
