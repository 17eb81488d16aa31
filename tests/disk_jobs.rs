//! The po's long disk work runs on its worker pool, off the event loop (issue 18, item 1):
//! a delta check reading an old copy (a real push's, or a dry run's) does not stop other
//! transfers, and an abort during it, or during the stage build, leaves the po and the dest
//! consistent.
//!
//! The work is held in the middle of its reading by the `hold_delta:PATH` failpoint (checks)
//! or `hold_stage:PATH` (stage builds): each block waits for PATH to exist, so the tests
//! assert order, not durations.

mod common;
use common::*;
use std::fs;
use std::path::PathBuf;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);

/// A cluster of one po (two workers) with classes base1 (64K blocks) and other, whose po
/// was restarted with the check held until `gate` exists; `big.bin` (4 MiB) was published to
/// base1 before, and its source has grown by a byte since, so its every block is a delta
/// candidate (`CHECK`) on the next push. Returns the cluster, the source and the gate.
fn held_check(tag: &str) -> (Cluster, PathBuf, PathBuf) {
    held(tag, "hold_delta")
}

/// As `held_check`, the po's failpoint `failpoint:gate`.
fn held(tag: &str, failpoint: &str) -> (Cluster, PathBuf, PathBuf) {
    let extra = vec!["block_size = 64K".into()];
    let mut c = Cluster::start(
        tag,
        Opts { pos: 1, class_extra: extra, po_extra: vec!["workers = 2".into()], ..Default::default() },
    );
    c.add_class("other", "/home/work/data/other");
    let src = c.dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    let mut big = noise(4 << 20, 5);
    fs::write(src.join("big.bin"), &big).unwrap();
    let out = c.push(&src);
    assert_eq!(out.status.code(), Some(0), "{}", summary(&out));
    big.push(b'!');
    fs::write(src.join("big.bin"), &big).unwrap();

    let gate = c.dir.path().join("gate");
    let conf = c.dir.path().join("po0.conf");
    let log = c.po_roots[0].join("po.log");
    c.pos[0].kill();
    let hold = format!("{failpoint}:{}", gate.display());
    c.pos[0] = Daemon::start_env("wugui-po", &conf, log, &[("WUGUI_FAILPOINT", &hold)]);
    (c, src, gate)
}

/// The line number of the first line of `log` containing every one of `parts`.
fn line_of(log: &str, parts: &[&str]) -> Option<usize> {
    log.lines().position(|l| parts.iter().all(|p| l.contains(p)))
}

fn published_bytes(c: &Cluster, log: &str) -> u64 {
    let t = fs::read_to_string(c.dir.path().join(log)).unwrap();
    let l = t.lines().rev().find(|l| l.contains("event=transfer_end")).expect("transfer_end");
    l.split(' ').find_map(|kv| kv.strip_prefix("master_bytes=")).expect("master_bytes").parse().unwrap()
}

#[test]
fn blocks_keep_flowing_while_another_transfers_delta_check_reads() {
    let (c, src, gate) = held_check("diskjob-flow");
    let b_args = ["-c", "base1", "-p", src.to_str().unwrap()];
    let b = spawn_master(&c.master_conf, &b_args, &[]);
    wait_for("the check job", LIMIT, || c.pos[0].log_text().contains("kind=check"));

    // Meanwhile a push of 8 MiB to another class: every block is received, checked and
    // staged, and the transfer published, while the check job is in the middle of its reading.
    push_other(&c);
    let log = c.pos[0].log_text();
    assert!(!log.contains("phase=check"), "the held check finished early:\n{log}");

    // Let the check go on: it reuses every block of the old copy but the changed last one.
    fs::write(&gate, b"").unwrap();
    let out = wait_output(b, LIMIT);
    assert_eq!(out.status.code(), Some(0), "{}", summary(&out));
    assert_eq!(snapshot(&c.po_dest(0)), snapshot(&src));
    let log = c.pos[0].log_text();
    let job = line_of(&log, &["event=disk_job", "kind=check"]).expect("job");
    let other_done = line_of(&log, &["event=publish", "class=other"]);
    let checked = line_of(&log, &["event=delta", "phase=check"]).expect("check");
    assert!(
        other_done.is_some_and(|d| job < d && d < checked),
        "order: job {job}, other {other_done:?}, check {checked}\n{log}"
    );
    let sent = published_bytes(&c, "master.log");
    assert!(sent <= 2 * (64 << 10), "the check's blocks travelled anyway: {sent} bytes");
}

#[test]
fn an_abort_during_a_check_job_cancels_it_and_leaves_the_dest_as_it_was() {
    let (c, src, gate) = held_check("diskjob-abort");
    let old = fs::read(c.po_dest(0).join("big.bin")).unwrap();
    let args = ["-c", "base1", "-p", src.to_str().unwrap()];
    let b = spawn_master(&c.master_conf, &args, &[]);
    wait_for("the check job", LIMIT, || c.pos[0].log_text().contains("kind=check"));
    // SIGTERM: the master tells the po to abort; the held job is cancelled without its gate.
    sigterm(&b);
    let out = wait_output(b, LIMIT);
    assert_ne!(out.status.code(), Some(0), "{}", summary(&out));
    wait_for("the job's cancel", LIMIT, || c.pos[0].log_text().contains("event=disk_job_cancelled"));
    assert!(!gate.exists());
    assert_eq!(fs::read(c.po_dest(0).join("big.bin")).unwrap(), old, "the published copy changed");

    // The po goes on: the same push again (its check no longer held) publishes the new tree.
    fs::write(&gate, b"").unwrap();
    let out = c.push(&src);
    assert_eq!(out.status.code(), Some(0), "{}", summary(&out));
    assert_eq!(snapshot(&c.po_dest(0)), snapshot(&src));
    assert!(c.pos[0].log_text().contains("phase=check"));
}

/// Pushes 8 MiB to class `other` and checks it arrived whole.
fn push_other(c: &Cluster) {
    let other = c.dir.path().join("other-src");
    fs::create_dir_all(&other).unwrap();
    fs::write(other.join("a.bin"), noise(8 << 20, 6)).unwrap();
    let conf_a = c.master_conf_for("a", &c.cac.addr);
    let out = master_with(&conf_a, &["-c", "other", "-p", other.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", summary(&out));
    assert_eq!(snapshot(&c.po_roots[0].join("home/work/data/other")), snapshot(&other));
}

fn sigterm(child: &std::process::Child) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
}

#[test]
fn a_dry_runs_check_reads_off_the_loop_and_stops_when_its_master_goes() {
    let (c, src, gate) = held_check("diskjob-dry");
    let dry = ["--dry-run", "-c", "base1", "-p", src.to_str().unwrap()];
    let is_job = |l: &str| l.contains("event=disk_job ") && l.contains("kind=preview_check");
    let jobs = |c: &Cluster| c.pos[0].log_text().lines().filter(|l| is_job(l)).count();

    // A dry run whose master goes while its check is held: the check is cancelled.
    let d = spawn_master(&c.master_conf, &dry, &[]);
    wait_for("the dry run's check job", LIMIT, || jobs(&c) == 1);
    sigterm(&d);
    let _ = wait_output(d, LIMIT);
    wait_for("the check's cancel", LIMIT, || {
        c.pos[0].log_text().contains("event=disk_job_cancelled kind=preview_check")
    });
    assert!(!c.pos[0].log_text().contains("event=dry_run "), "a PREVIEW went to nobody");

    // Another dry run, held again: a real push to another class flows meanwhile.
    let d = spawn_master(&c.master_conf, &dry, &[]);
    wait_for("the second check job", LIMIT, || jobs(&c) == 2);
    push_other(&c);
    assert!(!c.pos[0].log_text().contains("event=dry_run "), "the held check finished early");
    fs::write(&gate, b"").unwrap();
    let out = wait_output(d, LIMIT);
    let o = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{o}\n{}", text(&out.stderr));
    // Only the grown last block would travel: the check found every other in the old copy.
    let line = o.lines().find(|l| l.contains(" would create=0 change=1 delete=0 bytes=")).expect(&o);
    let bytes: u64 = line.rsplit("bytes=").next().unwrap().trim().parse().unwrap();
    assert!(bytes <= 2 * (64 << 10), "{o}");
    let log = c.pos[0].log_text();
    let lines: Vec<&str> = log.lines().collect();
    let job = lines.iter().rposition(|l| is_job(l)).unwrap();
    let other = line_of(&log, &["event=publish", "class=other"]).expect("other published");
    let previewed = line_of(&log, &["event=dry_run "]).expect("PREVIEW");
    assert!(job < other && other < previewed, "order: job {job}, other {other}, preview {previewed}\n{log}");
}

#[test]
fn an_abort_during_the_stage_build_cancels_it_and_the_transfer_ends() {
    let (c, src, gate) = held("diskjob-stage-abort", "hold_stage");
    let old = fs::read(c.po_dest(0).join("big.bin")).unwrap();
    // The po's log since its restart with the failpoint (the first push logged before it).
    let log = || {
        let t = c.pos[0].log_text();
        t[t.rfind("event=failpoint").expect("restarted with the failpoint")..].to_owned()
    };
    let b = spawn_master(&c.master_conf, &["-c", "base1", "-p", src.to_str().unwrap()], &[]);
    wait_for("the stage job", LIMIT, || log().contains("kind=stage"));
    // SIGTERM: the master tells the po to abort (before any ACCEPT); the held build is
    // cancelled without its gate, and the transfer never starts.
    sigterm(&b);
    let out = wait_output(b, LIMIT);
    assert_ne!(out.status.code(), Some(0), "{}", summary(&out));
    wait_for("the build's cancel", LIMIT, || line_of(&log(), &["event=disk_job_cancelled", "kind=stage"]).is_some());
    let log = log();
    assert!(!gate.exists());
    assert!(!log.contains("event=transfer_accept"), "the transfer carried on after its abort:\n{log}");
    assert!(!log.contains("unexpected Abort"), "the ABORT was taken for a protocol error:\n{log}");
    assert!(log.contains("event=transfer_abort"), "the ABORT was not heard:\n{log}");
    assert_eq!(fs::read(c.po_dest(0).join("big.bin")).unwrap(), old, "the published copy changed");

    // The po goes on: the same push again (its build no longer held) publishes the new tree.
    fs::write(&gate, b"").unwrap();
    let out = c.push(&src);
    assert_eq!(out.status.code(), Some(0), "{}", summary(&out));
    assert_eq!(snapshot(&c.po_dest(0)), snapshot(&src));
}
