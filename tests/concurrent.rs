//! Two masters pushing one class at once (README "Concurrent pushes"): a CAC runs one push of a
//! class at a time (the second master is refused, or waits with --wait), and with two CAC
//! replicas the pos' fence keeps the newer push. `WUGUI_FAILPOINT=hold_commit_ms=N` holds the
//! first master at its COMMIT, so that the race goes the same way every time.

mod common;
use common::*;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A tree that tells pushes apart.
fn tree(c: &Cluster, name: &str) -> PathBuf {
    let root = c.dir.path().join(name);
    fs::create_dir_all(root.join("d")).unwrap();
    fs::write(root.join("d/data.bin"), noise(200_000, name.len() as u64 + name.as_bytes()[0] as u64)).unwrap();
    fs::write(root.join("VERSION"), format!("{name}\n")).unwrap();
    root
}

fn log_of(c: &Cluster, file: &str) -> String {
    fs::read_to_string(c.dir.path().join(file)).unwrap_or_default()
}

/// Waits until the master log `file` says `needle`, and returns that line.
fn wait_line(c: &Cluster, file: &str, needle: &str) -> String {
    wait_for(needle, Duration::from_secs(20), || log_of(c, file).contains(needle));
    log_of(c, file).lines().find(|l| l.contains(needle)).unwrap().to_owned()
}

/// The transfer id in a `transfer=ID` line.
fn push_args(src: &Path) -> Vec<String> {
    vec!["-c".into(), "base1".into(), "-p".into(), src.display().to_string()]
}

fn args(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// A master held `ms` at its first COMMIT.
fn held_master(conf: &Path, src: &Path, ms: u64) -> std::process::Child {
    let fp = format!("hold_commit_ms={ms}");
    spawn_master(conf, &args(&push_args(src)), &[("WUGUI_FAILPOINT", fp.as_str())])
}

fn every_po_has(c: &Cluster, src: &Path) {
    let want = snapshot(src);
    for i in 0..c.pos.len() {
        let mut got = snapshot(&c.po_dest(i));
        got.retain(|k, _| !k.starts_with(".wugui-stage-"));
        assert_eq!(got, want, "po {i} holds another version");
    }
}

#[test]
fn one_cac_refuses_a_second_push_of_a_class_or_makes_it_wait() {
    let c = Cluster::start("busy", Opts { pos: 2, ..Default::default() });
    let (a_src, b_src) = (tree(&c, "a"), tree(&c, "bb"));
    let a = held_master(&c.master_conf, &a_src, 3000);
    let a_id = transfer_id_in(&wait_line(&c, "master.log", "event=transfer_start"));
    wait_line(&c, "master.log", "event=failpoint name=hold_commit_ms");

    // Refused at once, naming the running push.
    let b_conf = c.master_conf_for("b", &c.cac.addr);
    let o = master_with(&b_conf, &args(&push_args(&b_src)));
    let (out, err) = (text(&o.stdout), text(&o.stderr));
    assert_eq!(o.status.code(), Some(2), "stdout {out} stderr {err}");
    assert!(err.contains(&format!("transfer {a_id} by master 127.0.0.1")), "{err}");
    assert!(out.contains("result=denied"), "{out}");

    // With --wait it runs once A is over.
    let started = Instant::now();
    let mut b_args = push_args(&b_src);
    b_args.push("--wait=60".into());
    let b = spawn_master(&b_conf, &args(&b_args), &[]);
    let oa = wait_output(a, Duration::from_secs(30));
    assert_eq!(oa.status.code(), Some(0), "A: {}", text(&oa.stderr));
    let ob = wait_output(b, Duration::from_secs(30));
    assert_eq!(ob.status.code(), Some(0), "B: {}", text(&ob.stderr));
    eprintln!("B waited and pushed in {:?}", started.elapsed());
    assert!(log_of(&c, "master-b.log").contains("event=class_busy"), "{}", log_of(&c, "master-b.log"));
    let b_id = transfer_id_in(text(&ob.stdout).lines().last().unwrap());
    assert!(b_id > a_id, "B ({b_id}) was granted before A ({a_id}) ended");
    every_po_has(&c, &b_src);
}

#[test]
fn with_two_cac_replicas_the_pos_keep_the_newer_push() {
    let c = Cluster::start("race", Opts { pos: 3, ..Default::default() });
    let (_cac2, b_conf) = c.replica("b");
    let (a_src, b_src) = (tree(&c, "a"), tree(&c, "bb"));
    // A, on the first CAC, reaches its COMMIT and is held there ...
    let a = held_master(&c.master_conf, &a_src, 4000);
    let a_id = transfer_id_in(&wait_line(&c, "master.log", "event=transfer_start"));
    wait_line(&c, "master.log", "event=failpoint name=hold_commit_ms");
    // ... while B, granted later by the other replica, pushes the class.
    let ob = master_with(&b_conf, &args(&push_args(&b_src)));
    assert_eq!(ob.status.code(), Some(0), "B: {} {}", text(&ob.stdout), text(&ob.stderr));
    let b_id = transfer_id_in(text(&ob.stdout).lines().last().unwrap());
    assert!(b_id > a_id, "the replica granted B ({b_id}) an id below A's ({a_id})");
    every_po_has(&c, &b_src);
    // A's late COMMIT cannot put the older tree back, and A does not say ok.
    let oa = wait_output(a, Duration::from_secs(30));
    let (out, err) = (text(&oa.stdout), text(&oa.stderr));
    assert_eq!(oa.status.code(), Some(4), "A: stdout {out} stderr {err}");
    assert!(out.contains("result=failed pos=0/3"), "{out}");
    assert!(err.contains(&format!("superseded by the newer transfer {b_id}")), "{err}");
    every_po_has(&c, &b_src);
}

/// Two classes push the same tree to two dests of one po at once (a canary class and a
/// production class): each has its own stage and resume record, and neither push fails.
/// (Review wt-r1, finding 4: the stage was handed over by manifest id alone.)
#[test]
fn the_same_tree_to_two_dests_of_one_po_at_once_publishes_both() {
    let c = Cluster::start("twodests", Opts { pos: 1, ..Default::default() });
    c.add_class("base2", "/home/work/data/other");
    let src = c.seeded_src();
    let s = src.to_str().unwrap().to_owned();
    // Master 1 (base1) holds its COMMIT for 4 s once the po is READY ...
    let m1 = spawn_master(&c.master_conf, &["-c", "base1", "-p", &s], &[("WUGUI_FAILPOINT", "hold_commit_ms=4000")]);
    wait_for("po READY for the first push", Duration::from_secs(30), || c.pos[0].log_text().contains("event=po_ready"));
    // ... while the same tree goes to class base2, another dest on the same po.
    let o2 = c.master(&["-c", "base2", "-p", &s]);
    let o1 = wait_output(m1, Duration::from_secs(60));
    assert_eq!(o2.status.code(), Some(0), "the second push: {}", text(&o2.stderr));
    assert_eq!(
        o1.status.code(),
        Some(0),
        "the first push: {} {}\npo log:\n{}",
        summary(&o1),
        text(&o1.stderr),
        c.pos[0].log_text()
    );
    let other = c.po_roots[0].join("home/work/data/other");
    assert_eq!(snapshot(&c.po_dest(0)), snapshot(&src));
    assert_eq!(snapshot(&other), snapshot(&src));
}
