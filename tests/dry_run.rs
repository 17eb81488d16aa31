//! `--dry-run` with real processes on 127.0.0.1: every po is asked what a push would change
//! (its offer checks, the delta check against its tree), stages nothing and keeps no state.

mod common;
use common::*;
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Every name below `dir`, recursively (stage folders and state files included).
fn names(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    fn go(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            out.push(p.strip_prefix(root).unwrap().to_string_lossy().into_owned());
            if p.is_dir() && !p.is_symlink() {
                go(root, &p, out);
            }
        }
    }
    go(dir, dir, &mut out);
    out.sort();
    out
}

/// A dry run; `--wait`: the push just before may not have released the class on the CAC yet.
fn dry(c: &Cluster, src: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["--dry-run", "--wait=30", "-c", "base1", "-p", src.to_str().unwrap()];
    args.extend_from_slice(extra);
    c.master(&args)
}

#[test]
fn a_dry_run_after_a_one_file_change_lists_that_file_and_its_changed_block() {
    let c = Cluster::start("dryone", Opts { class_extra: vec!["block_size = 64K".into()], ..Default::default() });
    let src = c.seeded_src();
    assert_eq!(c.push(&src).status.code(), Some(0));
    // One byte in the middle of a 300,000-byte file: same size, new mtime.
    let f = fs::OpenOptions::new().write(true).open(src.join("index/part-0000")).unwrap();
    f.write_all_at(b"\xff", 150_000).unwrap();
    drop(f);
    let before: Vec<_> = (0..3).map(|i| names(&c.po_roots[i])).collect();
    let out = dry(&c, &src, &["-i"]);
    let o = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{o}\n{}", text(&out.stderr));
    for p in &c.pos {
        let line = format!("po={} would create=0 change=1 delete=0 bytes=65536", p.addr);
        let at = o.lines().position(|l| l == line).unwrap_or_else(|| panic!("no {line:?} in\n{o}"));
        // Exactly that file, and nothing else for this po.
        let items: Vec<&str> = o.lines().skip(at + 1).take_while(|l| l.starts_with("  ")).collect();
        assert_eq!(items, ["  >f.st...... index/part-0000"], "{o}");
    }
    assert!(o.contains("estimate seconds=") && o.contains("nominal 1 Gbit/s"), "{o}");
    assert!(o.lines().last().unwrap().contains("result=dry-run pos=3/3"), "{o}");
    // No stage, no dest change, no state file: the po roots hold the same names as before.
    for (i, was) in before.iter().enumerate() {
        assert_eq!(&names(&c.po_roots[i]), was, "po {i} wrote something");
        assert!(c.pos[i].log_text().contains("event=dry_run"), "po {i}");
    }
    // Without -i only the counts.
    let o = text(&dry(&c, &src, &[]).stdout);
    assert!(!o.contains(">f.st"), "{o}");
}

#[test]
fn a_dry_run_with_mirror_lists_what_would_be_deleted() {
    let c = Cluster::start("drymirror", Opts { class_extra: vec!["mirror = on".into()], ..Default::default() });
    let src = c.seeded_src();
    assert_eq!(c.push(&src).status.code(), Some(0));
    fs::remove_file(src.join("keep.dat")).unwrap();
    fs::write(src.join("fresh.txt"), b"new\n").unwrap();
    let out = dry(&c, &src, &["--itemize"]);
    let o = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{o}");
    assert_eq!(o.lines().filter(|l| l.contains(" would create=1 change=0 delete=1 bytes=")).count(), 3, "{o}");
    assert_eq!(o.matches("  *deleting   keep.dat").count(), 3, "{o}");
    assert_eq!(o.matches("  >f+++++++++ fresh.txt").count(), 3, "{o}");
    for i in 0..3 {
        assert!(c.po_dest(i).join("keep.dat").exists(), "po {i}: the dry run deleted");
    }
}

#[test]
fn a_dry_run_to_pos_that_refuse_the_dest_fails_as_the_push_would() {
    let c = Cluster::start("dryrefuse", Opts { allow_dest: "/srv/elsewhere".into(), ..Default::default() });
    let src = c.seeded_src();
    let real = c.push(&src);
    let out = dry(&c, &src, &[]);
    assert_eq!(out.status.code(), real.status.code(), "{}", text(&out.stderr));
    assert_eq!(out.status.code(), Some(4));
    let lines = |o: &std::process::Output| -> Vec<String> {
        let mut v: Vec<String> = text(&o.stderr).lines().filter(|l| l.starts_with("po=")).map(Into::into).collect();
        v.sort();
        v
    };
    assert_eq!(lines(&out), lines(&real));
    assert_eq!(lines(&out).len(), 3);
    assert!(lines(&out)[0].contains("dest_not_allowed"), "{:?}", lines(&out));
    assert!(summary(&out).contains("result=dry-run pos=0/3"), "{}", summary(&out));
}
