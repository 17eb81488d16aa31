//! Faults on one side of a transfer: a full disk on one po, a source file that changes while it
//! is sent. Nothing torn is published, old files stay, the others complete.

mod common;
use common::*;
use std::fs;
use std::process::Command;
use std::time::Duration;

/// A cluster of `pos` pos, or `None` (skipped, said why) where mounting a tmpfs needs root.
fn root_cluster(tag: &str, pos: usize) -> Option<Cluster> {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: mounting a small tmpfs needs root");
        return None;
    }
    Some(Cluster::start(tag, Opts { pos, ..Default::default() }))
}

/// Unmounts its folder when dropped.
struct Unmount(std::path::PathBuf);
impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Mounts a 1 MiB tmpfs on po `i`'s data folder (the dest's parent), for as long as the guard lives.
fn small_tmpfs(c: &Cluster, i: usize) -> Unmount {
    let mnt = c.po_dest(i).parent().unwrap().to_path_buf();
    fs::create_dir_all(&mnt).unwrap();
    let ok = Command::new("mount").args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"]).arg(&mnt).status().unwrap();
    assert!(ok.success(), "mount tmpfs");
    Unmount(mnt)
}

#[test]
fn a_full_disk_fails_that_po_alone_and_keeps_its_old_files() {
    let Some(c) = root_cluster("diskfull", 3) else { return };
    // po 1's data folder is a 1 MiB tmpfs holding an old copy.
    let _guard = small_tmpfs(&c, 1);
    fs::create_dir_all(c.po_dest(1)).unwrap();
    fs::write(c.po_dest(1).join("old.txt"), b"yesterday").unwrap();
    let src = c.dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("big.bin"), noise(4 << 20, 5)).unwrap();
    fs::write(src.join("old.txt"), b"today").unwrap();
    let out = c.push(&src);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    let line = err.lines().find(|l| l.starts_with("po=")).unwrap();
    assert!(line.contains(&c.pos[1].addr) && line.contains("No space left"), "{line}");
    assert_eq!(fs::read(c.po_dest(1).join("old.txt")).unwrap(), b"yesterday");
    assert!(c.pos[1].log_text().lines().any(|l| l.contains("event=po_failed") && l.contains("No space left")));
    for i in [0, 2] {
        assert_eq!(snapshot(&c.po_dest(i)), snapshot(&src), "po {i}");
    }
}

#[test]
fn a_source_file_that_changes_while_it_is_sent_is_never_published() {
    let extra = vec!["rate_limit = 2M".into(), "block_size = 256K".into()];
    let c = Cluster::start("changed", Opts { pos: 2, class_extra: extra, ..Default::default() });
    let src = c.dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("big.bin"), noise(6 << 20, 6)).unwrap();
    fs::write(src.join("note.txt"), b"v1").unwrap();
    for i in 0..2 {
        fs::create_dir_all(c.po_dest(i)).unwrap();
        fs::write(c.po_dest(i).join("note.txt"), b"old").unwrap();
    }
    let conf = c.master_conf.clone();
    let s = src.clone();
    let master = std::thread::spawn(move || master_with(&conf, &["-c", "base1", "-p", s.to_str().unwrap()]));
    std::thread::sleep(Duration::from_millis(1500));
    // Rewrite it in place while it is being sent: same size, new mtime and bytes.
    fs::write(src.join("big.bin"), noise(6 << 20, 7)).unwrap();
    let out = master.join().unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(err.contains("big.bin") && err.contains("changed"), "{err}");
    for i in 0..2 {
        assert_eq!(fs::read(c.po_dest(i).join("note.txt")).unwrap(), b"old", "po {i} published a torn copy");
        assert!(!c.po_dest(i).join("big.bin").exists());
    }
}

#[test]
fn a_cac_restart_does_not_break_a_running_transfer() {
    let extra = vec!["rate_limit = 2M".into(), "block_size = 256K".into()];
    let mut c = Cluster::start("cacrestart", Opts { pos: 2, class_extra: extra, ..Default::default() });
    let src = c.dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("big.bin"), noise(6 << 20, 8)).unwrap();
    let conf = c.master_conf.clone();
    let s = src.clone();
    let master = std::thread::spawn(move || master_with(&conf, &["-c", "base1", "-p", s.to_str().unwrap()]));
    std::thread::sleep(Duration::from_millis(1200));
    // The CAC goes down mid-transfer and comes back on the same address.
    c.cac.kill();
    std::thread::sleep(Duration::from_millis(500));
    let log = c.cac.log.clone();
    c.cac = Daemon::start("wugui-cac", &c.dir.path().join("cac.conf"), log);
    let out = master.join().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    for i in 0..2 {
        assert_eq!(snapshot(&c.po_dest(i)), snapshot(&src), "po {i}");
    }
    let mlog = fs::read_to_string(c.dir.path().join("master.log")).unwrap();
    assert!(mlog.contains("event=cac_lost") && mlog.contains("event=cac_reconnected"), "{mlog}");
    // The restarted CAC learned the transfer from the master's reports.
    let mut s = Command::new(bin("wugui-stat"));
    s.args(["-s", &c.cac.addr]);
    let table = text(&run_bounded(s, Duration::from_secs(10)).stdout);
    assert!(table.contains("base1") && table.contains(" ok "), "{table}");
    // On the token each report carries (a report without one adopts nothing).
    let clog = c.cac.log_text();
    assert!(clog.contains("event=transfer_adopted") && !clog.contains("event=progress_refused"), "{clog}");
}

fn swarm_cluster(tag: &str, extra: &[&str]) -> (Cluster, std::path::PathBuf) {
    let mut class_extra: Vec<String> = vec!["p2p = on".into(), "verify = crc32".into(), "block_size = 256K".into()];
    class_extra.extend(extra.iter().map(|s| s.to_string()));
    let c = Cluster::start(tag, Opts { pos: 4, class_extra, ..Default::default() });
    let src = c.dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("big.bin"), noise(8 << 20, 10)).unwrap();
    fs::write(src.join("small.txt"), b"small").unwrap();
    (c, src)
}

#[test]
fn a_po_that_dies_in_a_swarm_is_routed_around() {
    let (mut c, src) = swarm_cluster("swarmdeath", &["rate_limit = 2M", "retries = 0"]);
    let conf = c.master_conf.clone();
    let s = src.clone();
    let master = std::thread::spawn(move || master_with(&conf, &["-c", "base1", "-p", s.to_str().unwrap()]));
    std::thread::sleep(Duration::from_millis(1500));
    c.pos[2].kill();
    let out = master.join().unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.lines().any(|l| l.starts_with(&format!("po={} result=failed", c.pos[2].addr))), "{err}");
    for i in [0, 1, 3] {
        assert_eq!(snapshot(&c.po_dest(i)), snapshot(&src), "po {i}");
    }
}

/// A push of `src` in which po 1 is stopped (SIGSTOP: alive, its links open) 400 ms in. The
/// master must end it with exit 3 within 40 s, po 1 failed (its line is returned) and
/// unpublished, and the others holding the tree.
fn push_with_po_1_stopped(c: &Cluster, src: &std::path::Path) -> String {
    let conf = c.master_conf.clone();
    let s = src.to_path_buf();
    let master = std::thread::spawn(move || master_with(&conf, &["-c", "base1", "-p", s.to_str().unwrap()]));
    std::thread::sleep(Duration::from_millis(400));
    let victim = nix::unistd::Pid::from_raw(c.pos[1].child.id() as i32);
    nix::sys::signal::kill(victim, nix::sys::signal::Signal::SIGSTOP).unwrap();
    let t = std::time::Instant::now();
    let out = master.join().unwrap();
    let _ = nix::sys::signal::kill(victim, nix::sys::signal::Signal::SIGCONT);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(t.elapsed() < Duration::from_secs(40), "took {:?}", t.elapsed());
    let failed = format!("po={} result=failed", c.pos[1].addr);
    let line = err.lines().find(|l| l.starts_with(&failed)).unwrap_or_else(|| panic!("{err}")).to_owned();
    for i in [0, 2, 3] {
        assert_eq!(snapshot(&c.po_dest(i)), snapshot(src), "po {i}");
    }
    assert!(!c.po_dest(1).join("big.bin").exists(), "the stopped po published");
    line
}

#[test]
fn a_stalled_po_does_not_hold_the_others_past_the_timeout() {
    // quorum 3 of 4: at the class timeout the three READY pos commit, the stalled one fails.
    let (c, src) = swarm_cluster("stall", &["timeout = 12", "quorum = 3", "rate_limit = 8M"]);
    push_with_po_1_stopped(&c, &src);
}

#[test]
fn a_stopped_po_is_lost_at_its_silent_timeout_not_the_class_timeout() {
    // No quorum and an hour's class timeout: only `silent_timeout` can end this push early.
    let (c, src) = swarm_cluster("silent", &["silent_timeout = 3", "retries = 0", "rate_limit = 8M"]);
    let failed = push_with_po_1_stopped(&c, &src);
    assert!(failed.contains("silent for"), "{failed}");
    let log = fs::read_to_string(c.dir.path().join("master.log")).unwrap();
    assert!(log.contains(&format!("event=po_silent po={}", c.pos[1].addr)), "{log}");
}

#[test]
fn a_peer_serving_corrupt_blocks_is_caught_and_avoided() {
    let (mut c, src) = swarm_cluster("liar", &["rate_limit = 8M"]);
    // po 2 comes back as a liar: every block it serves to a peer is corrupt.
    c.pos[2].kill();
    let log = c.pos[2].log.clone();
    c.pos[2] =
        Daemon::start_env("wugui-po", &c.dir.path().join("po2.conf"), log, &[("WUGUI_FAILPOINT", "corrupt_serve")]);
    let out = c.push(&src);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    for i in 0..4 {
        assert_eq!(snapshot(&c.po_dest(i)), snapshot(&src), "po {i}");
    }
    let bad: usize = [0, 1, 3].iter().map(|&i| c.pos[i].log_text().matches("event=block_bad").count()).sum();
    assert!(bad > 0, "nobody caught the liar");
    let mlog = fs::read_to_string(c.dir.path().join("master.log")).unwrap();
    assert!(mlog.contains(&format!("source={}", c.pos[2].addr)), "the master did not name the source");
    // After three faults it is no longer a source, so the damage stays bounded.
    if bad >= 3 {
        assert!(mlog.contains("event=peer_excluded"), "{mlog}");
    }
    assert!(bad <= 3 + 2 * 4, "{bad} corrupt blocks: the liar kept serving");
}

#[test]
fn after_a_full_disk_the_next_push_that_fits_succeeds() {
    let Some(c) = root_cluster("diskstale", 1) else { return };
    let _guard = small_tmpfs(&c, 0);
    // A stage a killed push left behind (before this po started, or of another tree): 700 KiB.
    let stale = c.po_dest(0).join(".wugui-stage-00112233445566778899aabbccddeeff");
    fs::create_dir_all(&stale).unwrap();
    fs::write(stale.join("part"), noise(700 << 10, 1)).unwrap();
    let stages = || {
        fs::read_dir(c.po_dest(0))
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with(".wugui-stage-"))
            .count()
    };
    let push = |kib: usize, seed: u64| {
        let src = c.dir.path().join(format!("src{seed}"));
        fs::create_dir_all(&src).unwrap();
        fs::write(src.join("data.bin"), noise(kib << 10, seed)).unwrap();
        (c.push(&src), src)
    };
    // fits once the stale stage is gone: no manual step
    let (o, src) = push(600, 2);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(snapshot(&c.po_dest(0)), snapshot(&src));
    // too big: refused up front, clearly, leaving no stage
    let (o, _) = push(4096, 3);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(4), "{err}");
    assert!(err.contains("No space left") && err.contains("needs"), "{err}");
    assert_eq!(stages(), 0);
    // and the next push that fits goes through
    let (o, src) = push(300, 4);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(snapshot(&c.po_dest(0)), snapshot(&src));
    assert_eq!(stages(), 0);
}

#[test]
fn chains_carry_the_push_and_route_around_a_killed_po() {
    // Four pos on one chain; each host sends at 4 MiB/s, so the push takes seconds.
    let extra = ["rate_limit = 4M", "retries = 0"];
    let (mut c, src) = swarm_cluster("chains", &extra);
    let conf = c.master_conf.clone();
    let s = src.clone();
    let master = std::thread::spawn(move || master_with(&conf, &["-c", "base1", "-p", s.to_str().unwrap()]));
    let mlog = c.dir.path().join("master.log");
    let read = |p: &std::path::Path| fs::read_to_string(p).unwrap_or_default();
    wait_for("the chain plan", Duration::from_secs(20), || read(&mlog).contains("event=chain_plan"));
    let plan = read(&mlog).lines().find(|l| l.contains("event=chain_plan")).unwrap().to_owned();
    // A po in the middle of the chain dies while blocks flow through it.
    let order: Vec<usize> =
        plan.split("stripes=").nth(1).unwrap().split('>').map(|p| p.trim().parse().unwrap()).collect();
    let victim = order[1];
    wait_for("a forward", Duration::from_secs(20), || c.pos[victim].log_text().contains("event=chain_forward"));
    c.pos[victim].kill();
    let out = master.join().unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.lines().any(|l| l.starts_with(&format!("po={} result=failed", c.pos[victim].addr))), "{err}");
    for i in (0..4).filter(|&i| i != victim) {
        assert_eq!(snapshot(&c.po_dest(i)), snapshot(&src), "po {i}");
    }
    // Its predecessor now feeds its successor.
    let log = read(&mlog);
    let pred = &c.pos[order[0]].addr;
    let next = &c.pos[order[2]].addr;
    let relinked = |l: &&str| l.contains("event=chain_relink") && l.contains(&format!("po={pred} "));
    assert!(log.lines().filter(relinked).any(|l| l.ends_with(&format!("next={next}"))), "{log}");
    // The chain carried the blocks: the pos forwarded, and the master sent about one copy.
    for i in (0..4).filter(|&i| i != victim && i != order[3]) {
        assert!(c.pos[i].log_text().contains("event=chain_forward"), "po {i} forwarded nothing");
    }
    let end = log.lines().find(|l| l.contains("event=transfer_end")).unwrap();
    let copies: f64 = end.split(' ').find_map(|f| f.strip_prefix("src_copies=")).unwrap().parse().unwrap();
    eprintln!("{end}");
    assert!(copies < 1.6, "{end}");
}
