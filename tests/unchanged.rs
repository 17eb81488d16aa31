//! A push that changes nothing on a po publishes nothing there and says so.

mod common;
use common::*;
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Every path below `root` with its inode and ctime: what a publish would change.
fn inodes(root: &Path) -> BTreeMap<String, (u64, i64, i64)> {
    let mut out = BTreeMap::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let md = fs::symlink_metadata(&p).unwrap();
            if md.is_dir() {
                todo.push(p.clone());
            }
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            out.insert(rel, (md.ino(), md.ctime(), md.ctime_nsec()));
        }
    }
    out
}

#[test]
fn a_second_identical_push_keeps_every_inode_the_flag_file_and_skips_the_hook() {
    // The hook counts its runs beside the dest.
    let script = "#!/bin/sh\necho \"$WUGUI_TRANSFER\" >> \"$WUGUI_DEST/../hook.runs\"\n";
    let o = Opts {
        hook: Some(("count.sh", script.into())),
        class_extra: vec!["hook = count.sh".into(), "flag_file = data.done".into(), "mirror = on".into()],
        ..Default::default()
    };
    let c = Cluster::start("unchanged", o);
    let src = c.seeded_src();
    let out = c.push(&src);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(!text(&out.stdout).contains("unchanged="), "{}", text(&out.stdout));
    let runs = |i: usize| fs::read_to_string(c.po_dest(i).parent().unwrap().join("hook.runs")).unwrap();
    let before: Vec<_> = (0..3).map(|i| (inodes(&c.po_dest(i)), runs(i))).collect();
    std::thread::sleep(Duration::from_millis(50));

    let out = c.push(&src);
    let summary = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(summary.trim_end().ends_with(" unchanged=3") && summary.contains("result=ok pos=3/3"), "{summary}");
    for (i, (files, hook_runs)) in before.iter().enumerate() {
        assert_eq!(&inodes(&c.po_dest(i)), files, "po {i}: something in the dest changed");
        assert_eq!(&runs(i), hook_runs, "po {i}: the hook ran again");
        assert_eq!(runs(i).lines().count(), 1);
        assert!(c.pos[i].log_text().contains("event=unchanged"), "po {i}");
    }
    let flag = fs::read_to_string(c.po_dest(0).join("data.done")).unwrap();
    assert!(!summary.contains(flag.lines().next().unwrap()), "the flag file names the second push: {flag}");
    // The po says so, and so does the CAC (from the master's reports).
    for addr in [&c.pos[0].addr, &c.cac.addr] {
        let mut s = Command::new(bin("wugui-stat"));
        s.args(["-s", addr]);
        let table = text(&run_bounded(s, Duration::from_secs(10)).stdout);
        assert!(table.contains("unchanged"), "{addr}: {table}");
    }
    // A changed tree is published as ever.
    fs::write(src.join("conf/base.conf"), b"threads = 16\n").unwrap();
    let out = c.push(&src);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(!text(&out.stdout).contains("unchanged="), "{}", text(&out.stdout));
    assert_eq!(fs::read(c.po_dest(1).join("conf/base.conf")).unwrap(), b"threads = 16\n");
    assert_eq!(runs(1).lines().count(), 2);
}
