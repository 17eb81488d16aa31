//! Canary waves with real processes on 127.0.0.1 (README "Canary waves"): the first K pos
//! publish first, the rest only if every canary's publish and hook succeeded; otherwise the
//! canaries roll back to the tree they had and the rest keep theirs (exit 7).

mod common;
use common::*;
use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

/// The hook fails on a po whose root holds a file named `fail`.
const HOOK: &str =
    "#!/bin/sh\nif [ -e \"$WUGUI_DEST/../../../../fail\" ]; then echo 'smoke test failed'; exit 4; fi\necho ok\n";

fn cluster(tag: &str, extra: &[&str]) -> Cluster {
    let mut class_extra = vec!["hook = check.sh".to_string(), "mirror = on".to_string()];
    class_extra.extend(extra.iter().map(|s| s.to_string()));
    Cluster::start(tag, Opts { hook: Some(("check.sh", HOOK.into())), class_extra, ..Default::default() })
}

/// Files and symlinks as they are, directories by name only (publish sets their mtimes, and
/// a rollback does not put those back), and no stage folders.
fn tree(dest: &Path) -> BTreeMap<String, String> {
    snapshot(dest)
        .into_iter()
        .filter(|(k, _)| !k.starts_with(".wugui-stage-"))
        .map(|(k, v)| if v.starts_with("dir ") { (k, "dir".to_string()) } else { (k, v) })
        .collect()
}

fn aside_folders(dest: &Path) -> Vec<String> {
    fs::read_dir(dest)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".wugui-stage-") && n.ends_with("-old"))
        .collect()
}

/// Version 2 of the seeded tree: one file changed, one added, one removed.
fn change(src: &Path) {
    fs::write(src.join("conf/base.conf"), b"threads = 16\n").unwrap();
    fs::write(src.join("new.txt"), b"new in v2\n").unwrap();
    fs::remove_file(src.join("keep.dat")).unwrap();
}

/// A push; `--wait`: the push just before may not have released the class on the CAC yet.
fn push(c: &Cluster, src: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["--wait=30", "-c", "base1", "-p", src.to_str().unwrap()];
    args.extend_from_slice(extra);
    c.master(&args)
}

fn master_log(c: &Cluster) -> String {
    fs::read_to_string(c.dir.path().join("master.log")).unwrap_or_default()
}

/// A failing hook on the canary: it rolls back, the others never publish, exit 7.
fn canary_hook_fails(c: &Cluster, extra: &[&str]) {
    let src = c.seeded_src();
    let first = push(c, &src, &["--canary", "0"]);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first.stderr));
    let v1: Vec<_> = (0..3).map(|i| tree(&c.po_dest(i))).collect();
    change(&src);
    fs::write(c.po_roots[0].join("fail"), b"").unwrap();
    let out = push(c, &src, extra);
    let (err, last) = (text(&out.stderr), summary(&out));
    assert_eq!(out.status.code(), Some(7), "{last}\n{err}");
    assert!(last.contains("result=canary_failed"), "{last}");
    for (i, old) in v1.iter().enumerate() {
        assert_eq!(&tree(&c.po_dest(i)), old, "po {i} is not on its old tree");
        assert!(aside_folders(&c.po_dest(i)).is_empty(), "po {i} kept its old tree aside");
    }
    assert!(c.pos[0].log_text().contains("event=canary_rollback"), "{}", c.pos[0].log_text());
    for i in 1..3 {
        assert!(!c.pos[i].log_text().contains("event=canary_commit"), "po {i} was no canary");
    }
    let log = master_log(c);
    assert!(log.contains("event=canary_commit") && log.contains("event=canary_failed"), "{log}");
    assert!(log.contains(&format!("event=canary_failed transfer={}", transfer_id_in(&last))), "{log}");
    assert!(!log.contains("event=wave_go"), "{log}");
    assert!(err.contains(&format!("po={} result=failed error=\"rolled back", c.pos[0].addr)), "{err}");
}

#[test]
fn a_canary_whose_hook_fails_rolls_back_and_the_rest_keep_their_old_tree() {
    let c = cluster("canaryfail", &[]);
    canary_hook_fails(&c, &["--canary", "1"]);
}

#[test]
fn with_publish_each_the_class_canary_key_orders_the_pos_into_waves() {
    let c = cluster("canaryeach", &["publish = each", "canary = 1"]);
    canary_hook_fails(&c, &[]);
}

#[test]
fn when_every_canary_succeeds_the_rest_follow() {
    for (tag, extra) in [("canaryok", vec![]), ("canaryokeach", vec!["publish = each"])] {
        let c = cluster(tag, &extra);
        let src = c.seeded_src();
        assert_eq!(push(&c, &src, &[]).status.code(), Some(0));
        change(&src);
        let out = push(&c, &src, &["--canary", "2"]);
        let last = summary(&out);
        assert_eq!(out.status.code(), Some(0), "{last}\n{}", text(&out.stderr));
        assert!(last.contains("result=ok pos=3/3"), "{last}");
        let want = tree(&src);
        for i in 0..3 {
            assert_eq!(tree(&c.po_dest(i)), want, "{tag}: po {i}");
            assert!(aside_folders(&c.po_dest(i)).is_empty(), "{tag}: po {i} kept its old tree aside");
        }
        let log = master_log(&c);
        assert_eq!(log.matches("event=canary_commit").count(), 2, "{log}");
        assert!(log.contains("event=wave_go"), "{log}");
        // The canaries are the first two pos of the class.
        for i in 0..2 {
            assert!(c.pos[i].log_text().contains("event=canary_commit"), "{tag}: po {i}");
        }
        assert!(!c.pos[2].log_text().contains("event=canary_commit"), "{tag}: po 2 was no canary");
    }
}

#[test]
fn wugui_stat_shows_the_wave() {
    // The canary's hook takes a while: the CAC then shows the transfer in its canary wave.
    let slow = "#!/bin/sh\nsleep 2\n";
    let o = Opts {
        hook: Some(("check.sh", slow.into())),
        class_extra: vec!["hook = check.sh".into()],
        ..Default::default()
    };
    let c = Cluster::start("canarystat", o);
    let src = c.seeded_src();
    let child = spawn_master(&c.master_conf, &["-c", "base1", "-p", src.to_str().unwrap(), "--canary", "1"], &[]);
    wait_for("the canary wave in wugui-stat", std::time::Duration::from_secs(20), || {
        let mut s = std::process::Command::new(bin("wugui-stat"));
        s.args(["-s", &c.cac.addr, "--json"]);
        text(&run_bounded(s, std::time::Duration::from_secs(10)).stdout).contains("\"state\":\"canary\"")
    });
    let out = wait_output(child, std::time::Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}
