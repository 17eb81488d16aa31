//! Sparse files in the swarm (`p2p = on`): a po serves a block of a sparse file it staged
//! (shorter than its size until seal) or published, and a peer that fails to serve is replaced
//! within seconds.

mod common;
use common::*;
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// A tree of a dense random file and a 20 MiB sparse file with 4 bytes at 10 MiB (`round`
/// makes each round's bytes new, so that every push has data to move).
fn sparse_tree(src: &Path, round: u64) {
    let _ = fs::remove_dir_all(src);
    fs::create_dir_all(src).unwrap();
    fs::write(src.join("dense.bin"), noise(6 << 20, 100 + round)).unwrap();
    let f = fs::File::create(src.join("sparse.img")).unwrap();
    f.set_len(20 << 20).unwrap();
    f.write_all_at(&(round as u32 + 1).to_le_bytes(), 10 << 20).unwrap();
}

/// Each push must finish in about the time of its data (a few seconds on 127.0.0.1): never
/// after a 120 s timeout. The master's `-t` is not used: the bound is the test's own.
#[test]
fn sparse_and_dense_trees_cross_the_swarm_in_seconds() {
    let extra = vec!["p2p = on".into(), "verify = crc32".into(), "block_size = 256K".into()];
    let c = Cluster::start("sparse-p2p", Opts { pos: 3, class_extra: extra, ..Default::default() });
    let src = c.dir.path().join("src");
    let mut times = Vec::new();
    for round in 0..5 {
        sparse_tree(&src, round);
        let want = snapshot(&src);
        let started = Instant::now();
        let mut m = std::process::Command::new(bin("masterwugui"));
        m.arg("-f").arg(&c.master_conf).args(["-c", "base1", "-p", src.to_str().unwrap()]);
        m.stdin(std::process::Stdio::null());
        let o = run_bounded(m, Duration::from_secs(30));
        let took = started.elapsed();
        times.push(took.as_secs_f64());
        assert_eq!(o.status.code(), Some(0), "round {round}: {}", text(&o.stderr));
        for i in 0..3 {
            assert_eq!(snapshot(&c.po_dest(i)), want, "round {round} po {i}");
        }
    }
    eprintln!("sparse + dense, p2p, 3 pos: seconds per push {times:.2?}");
}

/// A po whose every served block breaks off mid-frame (`WUGUI_FAILPOINT=cut_serve`, as a file
/// shorter than its block would): it gives those pushes back as its links break, and the
/// master sends them from elsewhere at once, not after its stall check or a 120 s timeout.
#[test]
fn a_peer_whose_blocks_break_off_is_replaced_in_seconds() {
    let extra = vec!["p2p = on".into(), "verify = crc32".into(), "block_size = 256K".into()];
    let mut c = Cluster::start("cut-serve", Opts { pos: 3, class_extra: extra, ..Default::default() });
    c.pos[1].kill();
    let log = c.pos[1].log.clone();
    c.pos[1] = Daemon::start_env("wugui-po", &c.dir.path().join("po1.conf"), log, &[("WUGUI_FAILPOINT", "cut_serve")]);
    let src = c.dir.path().join("src");
    sparse_tree(&src, 0);
    let started = Instant::now();
    let mut m = std::process::Command::new(bin("masterwugui"));
    m.arg("-f").arg(&c.master_conf).args(["-c", "base1", "-p", src.to_str().unwrap()]);
    m.stdin(std::process::Stdio::null());
    let o = run_bounded(m, Duration::from_secs(30));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    for i in 0..3 {
        assert_eq!(snapshot(&c.po_dest(i)), snapshot(&src), "po {i}");
    }
    let cut = c.pos[1].log_text().matches("event=peer_lost").count();
    eprintln!("a po cutting off every block it serves: {:.2?}, {cut} links lost", started.elapsed());
    assert!(cut > 0, "the failpoint broke no link");
    let mlog = fs::read_to_string(c.dir.path().join("master.log")).unwrap();
    assert!(!mlog.contains("event=push_stalled"), "a broken link waited for the stall check");
}
