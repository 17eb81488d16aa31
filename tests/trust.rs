//! Issue 13 against the real binaries: a rogue po and rogue peers that speak the real protocol
//! try to get forged blocks published, to pass for someone else, to crash the master and to
//! stall the commit; a stage corrupted between two pushes must not be published.
//!
//! The rogue po (`common::rogue::FakePo`) is an address in the class's `po_file`, so the master
//! offers it the transfer and it learns the token, as any po of the class would.

mod common;
use common::rogue::{forged_blocks, rogue_peer, send, FakePo, Offered};
use common::*;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use wugui::proto::msg::Reason;
use wugui::proto::swarm::MASTER_PEER;
use wugui::proto::{Msg, Verify};

const BLOCK: usize = 64 << 10;

/// `real` wugui-pos and a fake po (index `real` in the class), one file of `blocks` blocks.
struct Rig {
    c: Cluster,
    fake: Option<FakePo>,
    src: PathBuf,
    blocks: u64,
    _list: TempDir,
}

fn rig(tag: &str, real: usize, blocks: u64, extra: &[&str]) -> Rig {
    let fake = FakePo::bind();
    let list = TempDir::new(&format!("{tag}-list"));
    let po_file = list.path().join("fake.pos");
    fs::write(&po_file, format!("{}\n", fake.addr)).unwrap();
    let mut class_extra = vec![format!("po_file = {}", po_file.display()), "block_size = 64K".into()];
    class_extra.extend(extra.iter().map(|s| s.to_string()));
    let c = Cluster::start(tag, Opts { pos: real, class_extra, ..Default::default() });
    let src = c.dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f.bin"), noise(blocks as usize * BLOCK, 13)).unwrap();
    Rig { c, fake: Some(fake), src, blocks, _list: list }
}

impl Rig {
    /// Runs the master on a thread; the fake po then waits for its OFFER.
    fn start(&mut self) -> (JoinHandle<Output>, Offered) {
        let conf = self.c.master_conf.clone();
        let s = self.src.to_str().unwrap().to_owned();
        let master = std::thread::spawn(move || master_with(&conf, &["-c", "base1", "-p", &s]));
        (master, self.fake.take().unwrap().offered())
    }

    fn wait_log(&self, po: usize, what: &str) {
        let limit = Duration::from_secs(60);
        wait_for(&format!("po{po}: {what}"), limit, || self.c.pos[po].log_text().contains(what));
    }

    fn forged(&self, transfer: u64, kind: Verify) -> Vec<Msg> {
        forged_blocks(transfer, &vec![BLOCK; self.blocks as usize], kind)
    }

    fn master_log(&self) -> String {
        fs::read_to_string(self.c.dir.path().join("master.log")).unwrap_or_default()
    }

    fn assert_copies(&self, real: usize) {
        for i in 0..real {
            assert_eq!(snapshot(&self.c.po_dest(i)), snapshot(&self.src), "po{i}'s copy");
        }
    }
}

fn refused_line<'a>(log: &'a str, claimed: &str) -> Option<&'a str> {
    log.lines().find(|l| l.contains("event=peer_refused") && l.contains("reason=bad_credential") && l.contains(claimed))
}

/// Issue 13, item 1. Guards: a PEER_HELLO claiming `me = MASTER_PEER` once made the connection
/// the master's data link, whose blocks took their checksum from their own head, so a po of the
/// class could publish data of its choosing on the others while the master said ok. Now the
/// data link must prove itself with the key the master gave the po, and with p2p off there is
/// no data link to take.
fn a_rogue_data_link_is_refused(p2p: &str) {
    // Rate limited so that the victim is still receiving when the rogue comes.
    let extra = [p2p, "rate_limit = 1M", "retries = 0"];
    let mut r = rig(&format!("trust-datalink-{}", &p2p[6..]), 1, 64, &extra);
    let (master, mut fake) = r.start();
    r.wait_log(0, "event=transfer_accept");
    // Head sums of the class's `verify` (md5): what the data link's blocks were once checked by.
    let forged = r.forged(fake.transfer, Verify::Md5);
    let answer = rogue_peer(&r.c.pos[0].addr, &fake.token, MASTER_PEER, [7; 32], &forged);
    assert!(
        matches!(answer, Some(Msg::Denied { reason: Reason::BadToken, .. })),
        "the fake data link was not refused: {answer:?}"
    );
    r.wait_log(0, "event=po_ready");
    fake.accept_all(r.blocks);
    fake.ready_then_done();
    let out = master.join().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    r.assert_copies(1);
    let log = r.c.pos[0].log_text();
    assert!(refused_line(&log, "claimed=master").is_some(), "no peer_refused line: {log}");
    assert!(!log.contains("event=block_bad"), "{log}");
}

#[test]
fn a_rogue_data_link_is_refused_with_p2p_on() {
    a_rogue_data_link_is_refused("p2p = on");
}

#[test]
fn a_rogue_data_link_is_refused_with_p2p_off() {
    a_rogue_data_link_is_refused("p2p = off");
}

/// Issue 13, item 3. Guards: `me` in PEER_HELLO was taken on trust, so a rogue could pass for
/// honest po#0 and send junk, getting po#0 blamed (`block_bad source=po#0`) and excluded as a
/// source. Now the proof is the key of the (po#0, victim) link, which the rogue does not have.
#[test]
fn a_rogue_cannot_pass_for_an_honest_po() {
    let mut r = rig("trust-impersonate", 2, 32, &["p2p = on", "rate_limit = 1M", "retries = 0"]);
    let (master, mut fake) = r.start();
    r.wait_log(1, "event=transfer_accept");
    let junk = r.forged(fake.transfer, Verify::Blake3);
    let answer = rogue_peer(&r.c.pos[1].addr, &fake.token, 0, [9; 32], &junk);
    assert!(matches!(answer, Some(Msg::Denied { reason: Reason::BadToken, .. })), "not refused: {answer:?}");
    r.wait_log(0, "event=po_ready");
    r.wait_log(1, "event=po_ready");
    fake.accept_all(r.blocks);
    fake.ready_then_done();
    let out = master.join().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    r.assert_copies(2);
    let log = r.c.pos[1].log_text();
    assert!(refused_line(&log, "claimed=po#0").is_some(), "no peer_refused line: {log}");
    assert!(!log.lines().any(|l| l.contains("event=block_bad") && l.contains("source=po#0")), "{log}");
    let mlog = r.master_log();
    assert!(!mlog.contains("event=block_bad") && !mlog.contains("event=peer_excluded"), "{mlog}");
}

// Issue 13, item 5 (a block past the end, a wrong length or bad bytes on an admitted peer link
// cannot fail the receiving po): a rogue can no longer get an admitted link without the key,
// so this is covered through the simulator (src/proto/sim), not here.

/// Issue 13, item 4. Guards: `Swarm::bad` indexed its nodes with the po-supplied `from`, so one
/// BAD { from: u32::MAX } from a po of a p2p class crashed masterwugui; UNSENT and HAVE carry
/// indices from the wire too. The master must ignore what is out of range and end normally.
#[test]
fn out_of_range_reports_cannot_crash_the_master() {
    let mut r = rig("trust-indices", 1, 16, &["p2p = on", "retries = 0"]);
    let (master, mut fake) = r.start();
    r.wait_log(0, "event=po_ready");
    fake.accept_all(r.blocks);
    let (transfer, nb) = (fake.transfer, r.blocks);
    let why = "rogue".to_string();
    for m in [
        Msg::Bad { transfer, block: 0, from: u32::MAX },
        Msg::Bad { transfer, block: u64::MAX, from: 0 },
        Msg::Bad { transfer, block: nb, from: u32::MAX - 1 },
        Msg::Unsent { transfer, block: 0, to: u32::MAX, why: why.clone() },
        Msg::Unsent { transfer, block: u64::MAX, to: 0, why: why.clone() },
        Msg::Unsent { transfer, block: nb, to: 1, why },
        Msg::Have { transfer, blocks: vec![u64::MAX, nb, 0, u64::MAX / 2] },
    ] {
        assert!(send(&mut fake.master, &m), "the master hung up on {m:?}");
    }
    fake.ready_then_done();
    let out = master.join().unwrap();
    let err = text(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(out.status.code(), Some(0), "{err}");
    r.assert_copies(1);
}

/// Issue 13, item 5. Guards: a FAILED report did not re-run the commit decision, so a po that
/// accepted and then failed kept the ready pos waiting for the class timeout. Now the master
/// commits the others at once (publish = together, the default quorum).
#[test]
fn a_failed_po_does_not_hold_the_commit_until_the_timeout() {
    let mut r = rig("trust-failed", 1, 16, &["timeout = 60", "retries = 0"]);
    let t = Instant::now();
    let (master, mut fake) = r.start();
    fake.accept_all(r.blocks);
    r.wait_log(0, "event=po_ready");
    let transfer = fake.transfer;
    assert!(send(&mut fake.master, &Msg::Failed { transfer, error: "rogue gives up".into() }));
    let out = master.join().unwrap();
    let took = t.elapsed();
    assert_eq!(out.status.code(), Some(3), "partial: {}", text(&out.stderr));
    assert!(took < Duration::from_secs(20), "the master waited {took:?} (class timeout 60 s)");
    r.assert_copies(1);
    assert!(r.c.pos[0].log_text().contains("event=publish"));
    drop(fake);
}

/// Issue 13, item 2. Guards: a push that died kept its stage and `.held` record, and the next
/// push of the same tree took the recorded blocks without checking them again, so bytes changed
/// in the stage in between (by a rogue, or a disk) were published. Now a resumed block counts
/// only once it matches the new offer's digest.
#[test]
fn a_corrupted_stage_is_not_published_on_resume() {
    let extra = vec!["block_size = 64K".into(), "rate_limit = 1M".into(), "retries = 0".into()];
    let c = Cluster::start("trust-resume", Opts { pos: 1, class_extra: extra, ..Default::default() });
    let src = c.dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f.bin"), noise(6 << 20, 17)).unwrap();
    // A master that dies half way (killed by its PID).
    let mut cmd = Command::new(bin("masterwugui"));
    cmd.arg("-f").arg(&c.master_conf).args(["-c", "base1", "-p", src.to_str().unwrap()]);
    let mut first = cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let state = c.po_roots[0].join("state");
    let record = || fs::read_dir(&state).unwrap().flatten().find(|e| e.path().extension().is_some_and(|x| x == "held"));
    let waited = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_for("a resume record", Duration::from_secs(30), || record().is_some());
        std::thread::sleep(Duration::from_millis(1500)); // a second record, with more blocks
    }));
    let _ = first.kill();
    let _ = first.wait();
    waited.unwrap();
    let log = c.pos[0].log_text();
    assert!(!log.contains("event=po_ready"), "the first push finished before it was killed");
    // Block 0 is in the record; change its bytes in the stage.
    let stage = stage_dir(&c.po_dest(0));
    let staged = stage.join("f.bin");
    let mut bytes = fs::read(&staged).unwrap();
    assert!(bytes.len() >= BLOCK);
    bytes[..4096].fill(0xEE);
    fs::write(&staged, &bytes).unwrap();
    let out = c.push(&src);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let (got, want) = (fs::read(c.po_dest(0).join("f.bin")).unwrap(), fs::read(src.join("f.bin")).unwrap());
    let wrong = got.iter().zip(&want).filter(|(a, b)| a != b).count();
    assert!(got == want, "the published copy differs from the source in {wrong} bytes");
}

/// The one stage folder in `dest`.
fn stage_dir(dest: &Path) -> PathBuf {
    let stages: Vec<PathBuf> = fs::read_dir(dest)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(wugui::store::STAGE_PREFIX))
        .collect();
    assert_eq!(stages.len(), 1, "{stages:?}");
    stages[0].clone()
}
