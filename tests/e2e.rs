//! The four binaries as real processes on 127.0.0.1.

mod common;
use common::*;
use std::fs;
use std::process::Command;
use std::time::Duration;

fn expected(src: &std::path::Path, dropped: &[&str]) -> std::collections::BTreeMap<String, String> {
    let mut want = snapshot(src);
    for d in dropped {
        assert!(want.remove(*d).is_some(), "{d} not in the source");
    }
    want
}

#[test]
fn seed_command_delivers_identical_trees_to_three_pos() {
    let c = Cluster::start("seed", Opts::default());
    let src = c.seeded_src();
    let want = expected(&src, &["a.txt", "b.txt", "sub/c.txt", "data.txt"]);
    // The seed's own command line, with -p last as in the article.
    let o = c.master(&["-c", "base1", "-x", "a.txt", "b.txt", "c.txt", "-p", src.to_str().unwrap()]);
    let (out, err) = (text(&o.stdout), text(&o.stderr));
    assert_eq!(o.status.code(), Some(0), "stdout {out} stderr {err}");
    let last = out.lines().last().unwrap();
    assert!(last.starts_with("transfer=") && last.contains(" class=base1 result=ok pos=3/3 bytes="), "{last}");
    for i in 0..3 {
        assert_eq!(snapshot(&c.po_dest(i)), want, "po {i}");
        assert!(c.pos[i].log_text().contains("event=publish"), "po {i} log");
    }
    let cac_log = c.cac.log_text();
    assert!(cac_log.contains("event=auth_grant") && cac_log.contains("event=verify_ok"), "{cac_log}");
    // The CAC keeps the finished transfer for wugui-stat.
    let stat = run_bounded(
        {
            let mut s = Command::new(bin("wugui-stat"));
            s.args(["-s", &c.cac.addr, "--json"]);
            s
        },
        Duration::from_secs(10),
    );
    let js = text(&stat.stdout);
    assert!(js.contains("\"class\":\"base1\"") && js.contains("\"state\":\"ok\""), "{js}");
}

#[test]
fn verify_modes_sendfile_off_and_publish_each() {
    for (verify, sendfile, publish) in [("none", "on", "each"), ("crc32", "off", "together"), ("md5", "on", "together")]
    {
        let extra = vec![
            format!("verify = {verify}"),
            format!("sendfile = {sendfile}"),
            format!("publish = {publish}"),
            "flag_file = data.done".into(),
        ];
        // Also the po's fsync = off (no syncfs before publish, no resume records).
        let po_extra = if verify == "none" { vec!["fsync = off".to_string()] } else { vec![] };
        let c = Cluster::start("modes", Opts { pos: 2, class_extra: extra, po_extra, ..Default::default() });
        let src = c.seeded_src();
        let mut want = snapshot(&src);
        let o = c.push(&src);
        assert_eq!(o.status.code(), Some(0), "{verify}: {}", text(&o.stderr));
        for i in 0..2 {
            let mut got = snapshot(&c.po_dest(i));
            assert!(got.remove("data.done").is_some(), "flag file");
            // The flag file changes the dest root only, which the snapshot leaves out.
            want.retain(|k, _| k != "data.done");
            assert_eq!(got, want, "{verify} po {i}");
        }
    }
}

#[test]
fn republish_replaces_files_and_keeps_others_with_mirror_off() {
    let c = Cluster::start("again", Opts { pos: 1, ..Default::default() });
    let src = c.seeded_src();
    let o = c.push(&src);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    fs::write(c.po_dest(0).join("local-only.txt"), b"mine").unwrap();
    fs::write(src.join("keep.dat"), b"a new version").unwrap();
    let o = c.push(&src);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(fs::read(c.po_dest(0).join("keep.dat")).unwrap(), b"a new version");
    assert_eq!(fs::read(c.po_dest(0).join("local-only.txt")).unwrap(), b"mine");
}

#[test]
fn clear_errors_and_exit_codes() {
    let c = Cluster::start("errors", Opts { pos: 1, ..Default::default() });
    let src = c.seeded_src();
    let s = src.to_str().unwrap();
    // unknown class: 2
    let o = c.master(&["-c", "nope", "-p", s]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("unknown_class"), "{}", text(&o.stderr));
    assert!(text(&o.stdout).contains("result=denied"));
    // missing source: 1, before any CAC is asked
    let o = c.master(&["-c", "base1", "-p", "/nonexistent/src"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("source /nonexistent/src"), "{}", text(&o.stderr));
    assert!(text(&o.stdout).contains("transfer=0 class=base1 result=failed pos=0/0"), "{}", text(&o.stdout));
    // usage: 1, with the summary line naming what class it could
    let o = c.master(&["-p", s]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("-c CLASS"));
    assert!(text(&o.stdout).starts_with("transfer=0 class=- result=failed pos=0/0"), "{}", text(&o.stdout));
    let o = c.master(&["-c", "base1", "--bogus"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stdout).starts_with("transfer=0 class=base1 result=failed"), "{}", text(&o.stdout));
    // bad regex: 1
    let o = c.master(&["-c", "base1", "-x", "(", "-p", s]);
    assert_eq!(o.status.code(), Some(1));
    // no CAC reachable: 2
    let conf = c.dir.path().join("nocac.conf");
    fs::write(&conf, format!("[master]\ncac = 127.0.0.1:{}\nconnect_timeout = 1\n", free_port())).unwrap();
    let o = master_with(&conf, &["-c", "base1", "-p", s]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("no CAC reachable"), "{}", text(&o.stderr));
    // a bad master config names file:line: 1
    fs::write(&conf, "[master]\ncac = 127.0.0.1:1\nbogus = 1\n").unwrap();
    let o = master_with(&conf, &["-c", "base1", "-p", s]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("nocac.conf:3"), "{}", text(&o.stderr));
    assert!(text(&o.stdout).starts_with("transfer=0 class=base1 result=failed"), "{}", text(&o.stdout));
    // help lists the exit codes, and prints no summary
    let o = master_with(&conf, &["-h"]);
    assert_eq!(o.status.code(), Some(0));
    for code in ["0  every po", "1  usage", "2  no CAC", "3  some pos", "4  no po", "5  every po", "6  aborted"] {
        assert!(text(&o.stdout).contains(code), "help lacks {code}");
    }
    assert!(text(&o.stdout).contains("in the order 1, 2, 6, 4, 7, 3, 5, 8, 0"), "{}", text(&o.stdout));
    assert!(!text(&o.stdout).contains("transfer=0"), "{}", text(&o.stdout));
    let o = master_with(&conf, &["-v"]);
    assert_eq!((o.status.code(), text(&o.stdout).contains("transfer=")), (Some(0), false));
}

#[test]
fn a_daemon_with_a_bad_config_refuses_to_start() {
    let d = TempDir::new("badconf");
    let conf = d.path().join("cac.conf");
    fs::write(&conf, "[cac]\nlisten = 127.0.0.1:0\nsecret_file = /nonexistent/key\n").unwrap();
    let o = run_bounded(
        {
            let mut c = Command::new(bin("wugui-cac"));
            c.arg("-f").arg(&conf);
            c
        },
        Duration::from_secs(10),
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("cac.conf:3"), "{}", text(&o.stderr));
}

#[test]
fn a_dest_outside_allow_dest_is_refused() {
    let c = Cluster::start("allow", Opts { pos: 2, allow_dest: "/srv/elsewhere".into(), ..Default::default() });
    let src = c.seeded_src();
    let o = c.push(&src);
    assert_eq!(o.status.code(), Some(4), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("dest_not_allowed"), "{}", text(&o.stderr));
    assert!(!c.po_dest(0).exists());
}

#[test]
fn one_unwritable_po_fails_alone_and_the_others_complete() {
    let c = Cluster::start("unwritable", Opts::default());
    let src = c.seeded_src();
    // po 1's dest parent is a regular file: nothing can be created there.
    let parent = c.po_dest(1).parent().unwrap().to_path_buf();
    fs::create_dir_all(parent.parent().unwrap()).unwrap();
    fs::write(&parent, b"not a directory").unwrap();
    let o = c.push(&src);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(text(&o.stdout).contains("result=partial pos=2/3"));
    let line = err.lines().find(|l| l.starts_with("po=")).unwrap();
    assert!(line.contains(&c.pos[1].addr) && line.contains("result=failed"), "{line}");
    assert_eq!(fs::read(&parent).unwrap(), b"not a directory");
    assert_eq!(snapshot(&c.po_dest(0)), snapshot(&c.po_dest(2)));
}

#[test]
fn stat_shows_a_po_and_the_cac() {
    let c = Cluster::start("stat", Opts { pos: 1, ..Default::default() });
    let src = c.seeded_src();
    let o = c.push(&src);
    assert_eq!(o.status.code(), Some(0));
    for addr in [&c.cac.addr, &c.pos[0].addr] {
        let mut s = Command::new(bin("wugui-stat"));
        s.args(["-s", addr]);
        let o = run_bounded(s, Duration::from_secs(10));
        assert_eq!(o.status.code(), Some(0));
        let t = text(&o.stdout);
        assert!(t.contains("TRANSFER") && t.contains("base1"), "{t}");
    }
    let mut s = Command::new(bin("wugui-stat"));
    s.args(["-s", &format!("127.0.0.1:{}", free_port())]);
    assert_eq!(run_bounded(s, Duration::from_secs(10)).status.code(), Some(2));
}

#[test]
fn p2p_swarm_delivers_identical_trees() {
    let extra = vec!["p2p = on".into(), "verify = crc32".into(), "block_size = 16K".into(), "publish = each".into()];
    let c = Cluster::start("p2p", Opts { pos: 5, class_extra: extra, ..Default::default() });
    let src = c.seeded_src();
    let want = snapshot(&src);
    let o = c.push(&src);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    for i in 0..5 {
        assert_eq!(snapshot(&c.po_dest(i)), want, "po {i}");
    }
    let master_log = std::fs::read_to_string(c.dir.path().join("master.log")).unwrap();
    assert!(master_log.contains("p2p=on"), "{master_log}");
    // Direct push uploads 5 copies; in the swarm the pos serve each other (on loopback the
    // master is never the bottleneck, so its end-game help is generous).
    let end = master_log.lines().find(|l| l.contains("event=transfer_end")).unwrap();
    let field = |k: &str| -> f64 { end.split(' ').find_map(|f| f.strip_prefix(k)).unwrap().parse().unwrap() };
    assert!(field("src_copies=") < 3.5, "{end}");
}

#[test]
fn hooks_run_after_publish_and_their_failures_reach_the_master() {
    // The hook records its environment; on po1 it fails with a message.
    let script = "#!/bin/sh\nenv | grep ^WUGUI_ | sort > \"$WUGUI_DEST/../hook.env\"\n\
                  case \"$WUGUI_DEST\" in */po1/*) echo 'reload failed: port busy'; exit 3;; esac\necho reloaded\n";
    let o = Opts {
        hook: Some(("reload.sh", script.into())),
        class_extra: vec!["hook = reload.sh".into()],
        ..Default::default()
    };
    let c = Cluster::start("hooks", o);
    let src = c.seeded_src();
    let out = c.push(&src);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{err}");
    let line = err.lines().find(|l| l.starts_with("po=")).expect("a per-po line");
    assert!(line.contains(&c.pos[1].addr) && line.contains("result=hook_failed"), "{line}");
    assert!(line.contains("hook_exit=3") && line.contains("reload failed: port busy"), "{line}");
    assert_eq!(err.lines().filter(|l| l.starts_with("po=")).count(), 1, "{err}");
    let env = fs::read_to_string(c.po_dest(0).parent().unwrap().join("hook.env")).unwrap();
    assert!(env.contains("WUGUI_CLASS=base1") && env.contains("WUGUI_FILES=") && env.contains("WUGUI_BYTES="), "{env}");
    assert!(env.contains(&format!("WUGUI_DEST={}", c.po_dest(0).display())), "{env}");
    assert!(c.pos[1].log_text().contains("event=hook_failed"));
    // ... and wugui-stat against the CAC shows it too.
    let mut s = Command::new(bin("wugui-stat"));
    s.args(["-s", &c.cac.addr]);
    let table = text(&run_bounded(s, Duration::from_secs(10)).stdout);
    assert!(table.contains("hook_exit=3 reload failed: port busy"), "{table}");
}

#[test]
fn a_hook_outside_hook_dir_is_refused() {
    let o = Opts { pos: 1, class_extra: vec!["hook = escape.sh".into()], ..Default::default() };
    let c = Cluster::start("hookesc", o);
    // A symlink in hook_dir that points outside it.
    let outside = c.dir.path().join("evil.sh");
    fs::write(&outside, "#!/bin/sh\ntouch /tmp/wugui-evil-ran\n").unwrap();
    std::os::unix::fs::symlink(&outside, c.po_roots[0].join("hooks/escape.sh")).unwrap();
    let src = c.seeded_src();
    let out = c.push(&src);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(err.contains("outside hook_dir"), "{err}");
    assert!(!std::path::Path::new("/tmp/wugui-evil-ran").exists());
}

#[test]
fn a_hook_that_hangs_is_killed_at_hook_timeout() {
    let o = Opts {
        pos: 1,
        hook: Some(("slow.sh", "#!/bin/sh\necho starting\nexec sleep 30\n".into())),
        class_extra: vec!["hook = slow.sh".into(), "hook_timeout = 1".into()],
        ..Default::default()
    };
    let c = Cluster::start("hookslow", o);
    let src = c.seeded_src();
    let t = std::time::Instant::now();
    let out = c.push(&src);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(err.contains("hook_exit=-1") && err.contains("killed after 1s") && err.contains("starting"), "{err}");
    assert!(t.elapsed() < Duration::from_secs(20), "the hook was not killed");
}

/// Bytes a po has received so far, from wugui-stat.
fn po_bytes(addr: &str) -> u64 {
    let mut s = Command::new(bin("wugui-stat"));
    s.args(["-s", addr, "--json"]);
    let o = run_bounded(s, Duration::from_secs(10));
    let js = text(&o.stdout);
    js.split("\"done\":").nth(1).and_then(|r| r.split(',').next()).and_then(|n| n.parse().ok()).unwrap_or(0)
}

fn big_tree(c: &Cluster, mib: usize) -> std::path::PathBuf {
    let src = c.dir.path().join("src");
    fs::create_dir_all(src.join("d")).unwrap();
    fs::write(src.join("d/big.bin"), noise(mib << 20, 9)).unwrap();
    fs::write(src.join("small.txt"), b"small").unwrap();
    src
}

#[test]
fn a_po_killed_mid_transfer_resumes_and_only_the_missing_blocks_travel() {
    let extra = vec!["rate_limit = 2M".into(), "block_size = 256K".into(), "retries = 5".into()];
    let mut c = Cluster::start("resume", Opts { pos: 1, class_extra: extra, ..Default::default() });
    let src = big_tree(&c, 12);
    let mut m = Command::new(bin("masterwugui"));
    m.arg("-f").arg(&c.master_conf).args(["-c", "base1", "-p", src.to_str().unwrap()]);
    let master = std::thread::spawn(move || run_bounded(m, Duration::from_secs(120)));
    let addr = c.pos[0].addr.clone();
    wait_for("a third of the blocks", Duration::from_secs(30), || po_bytes(&addr) > 4 << 20);
    std::thread::sleep(Duration::from_millis(1500)); // past a checkpoint
    c.pos[0].kill();
    let conf = c.dir.path().join("po0.conf");
    let log = c.pos[0].log.clone();
    c.pos[0] = Daemon::start("wugui-po", &conf, log);
    let out = master.join().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(snapshot(&c.po_dest(0)), snapshot(&src));
    let log = c.pos[0].log_text();
    let resumed = log.lines().find(|l| l.contains("event=resume")).expect("the po resumed");
    let held: u64 = resumed.split("held=").nth(1).unwrap().split('/').next().unwrap().parse().unwrap();
    assert!(held >= 16, "only {held} of 49 blocks survived: {resumed}");
    assert!(std::fs::read_dir(c.po_roots[0].join("state")).unwrap().all(|e| !e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .ends_with(".held")));
}

#[test]
fn a_rerun_after_the_master_is_killed_sends_only_what_is_missing() {
    let extra = vec!["rate_limit = 2M".into(), "block_size = 256K".into()];
    let c = Cluster::start("rerun", Opts { pos: 2, class_extra: extra, ..Default::default() });
    let src = big_tree(&c, 12);
    let mut m = Command::new(bin("masterwugui"))
        .arg("-f")
        .arg(&c.master_conf)
        .args(["-c", "base1", "-p", src.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let addr = c.pos[0].addr.clone();
    wait_for("a third of the blocks", Duration::from_secs(30), || po_bytes(&addr) > 4 << 20);
    std::thread::sleep(Duration::from_millis(1500));
    m.kill().unwrap();
    m.wait().unwrap();
    let t = std::time::Instant::now();
    let out = c.push(&src);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    for i in 0..2 {
        assert_eq!(snapshot(&c.po_dest(i)), snapshot(&src), "po {i}");
        assert!(c.pos[i].log_text().contains("event=resume"), "po {i} did not resume");
    }
    // 12 MiB at 2 MiB/s from scratch would take 6 s; about half is left.
    eprintln!("rerun took {:?}", t.elapsed());
}

#[test]
fn a_po_serves_prometheus_metrics() {
    let port = free_port();
    let o = Opts { pos: 1, po_extra: vec![format!("metrics_listen = 127.0.0.1:{port}")], ..Default::default() };
    let c = Cluster::start("metrics", o);
    let src = c.seeded_src();
    let out = c.push(&src);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let get = |path: &str| {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes()).unwrap();
        let mut r = String::new();
        s.read_to_string(&mut r).unwrap();
        r
    };
    let m = get("/metrics");
    assert!(m.starts_with("HTTP/1.0 200"), "{m}");
    let value = |name: &str| -> u64 {
        let l = m.lines().find(|l| l.starts_with(&format!("{name}{{"))).unwrap_or_else(|| panic!("no {name}"));
        l.rsplit(' ').next().unwrap().parse().unwrap()
    };
    let total: u64 = snapshot(&src)
        .keys()
        .map(|k| fs::symlink_metadata(src.join(k)).unwrap())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum();
    assert_eq!(value("wugui_bytes_received_total"), total);
    assert_eq!(value("wugui_transfers_published_total"), 1);
    assert_eq!(value("wugui_transfers_active"), 0);
    assert!(m.contains("# TYPE wugui_verify_failures_total counter"));
    assert!(get("/").starts_with("HTTP/1.0 404"));
}

#[test]
fn dry_run_reports_what_would_go_and_sends_nothing() {
    let c = Cluster::start("dryrun", Opts { class_extra: vec!["rate_limit = 1M".into()], ..Default::default() });
    let src = c.seeded_src();
    let out = c.master(&["--dry-run", "-c", "base1", "-x", "a.txt", "-p", src.to_str().unwrap()]);
    let o = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let first = o.lines().next().unwrap();
    assert!(
        first.starts_with("dry-run class=base1 dest=/home/work/data/base files=") && first.contains("p2p=off"),
        "{o}"
    );
    // Every po is asked; with nothing there yet, everything would be created and travel.
    let per_po: Vec<&str> = o.lines().filter(|l| l.starts_with("po=127.0.0.1:")).collect();
    assert_eq!(per_po.len(), 3, "{o}");
    assert!(per_po.iter().all(|l| l.contains(" would create=") && l.contains(" change=0 delete=0 bytes=")), "{o}");
    assert!(o.contains("estimate seconds=") && o.contains("at the class rate_limit=1048576 bytes/s"), "{o}");
    assert!(o.lines().last().unwrap().contains("result=dry-run pos=3/3"), "{o}");
    for i in 0..3 {
        assert!(!c.po_dest(i).exists(), "po {i} got something");
        assert!(!c.pos[i].log_text().contains("event=transfer_accept"));
        assert!(c.pos[i].log_text().contains("event=dry_run"));
    }
}

#[test]
fn every_binary_has_help_and_version() {
    for b in ["masterwugui", "wugui-po", "wugui-cac", "wugui-stat"] {
        for (flag, want) in [("-h", "Usage:"), ("-v", "0.1.0")] {
            let mut c = Command::new(bin(b));
            c.arg(flag);
            let o = run_bounded(c, Duration::from_secs(10));
            assert_eq!(o.status.code(), Some(0), "{b} {flag}");
            assert!(text(&o.stdout).contains(want), "{b} {flag}: {}", text(&o.stdout));
        }
    }
}

#[test]
fn the_master_draws_a_progress_bar_on_a_tty() {
    if Command::new("sh").args(["-c", "command -v script"]).output().map(|o| !o.status.success()).unwrap_or(true) {
        eprintln!("skipped: util-linux script (for a pseudo-terminal) is not installed");
        return;
    }
    let c = Cluster::start("tty", Opts { pos: 1, class_extra: vec!["rate_limit = 2M".into()], ..Default::default() });
    let src = c.dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f.bin"), noise(3 << 20, 4)).unwrap();
    let cmd = format!("{} -f {} -c base1 -p {}", bin("masterwugui").display(), c.master_conf.display(), src.display());
    let mut s = Command::new("script");
    s.args(["-qec", &cmd, "/dev/null"]);
    let o = run_bounded(s, Duration::from_secs(60));
    let out = text(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{out}");
    // A bar redrawn in place with \r, ending at 100%.
    assert!(out.contains("\r[") && out.contains("100%") && out.contains("result=ok"), "{out:?}");
    // Without a TTY: plain progress lines instead (new bytes, so that they travel).
    fs::write(src.join("f.bin"), noise(3 << 20, 5)).unwrap();
    let o = c.push(&src);
    assert!(text(&o.stderr).contains("progress transfer="), "{}", text(&o.stderr));
    assert!(!text(&o.stderr).contains("\r["));
}

#[test]
fn thousands_of_small_files_share_blocks_within_a_small_fd_limit() {
    let c = Cluster::start("smallfiles", Opts { pos: 2, ..Default::default() });
    let src = c.dir.path().join("src");
    for d in 0..10 {
        fs::create_dir_all(src.join(format!("d{d}"))).unwrap();
        for f in 0..300 {
            fs::write(src.join(format!("d{d}/f{f}")), noise(100 + (f as usize % 50), d * 1000 + f)).unwrap();
        }
    }
    // 3,000 files in a couple of blocks, and a master allowed only 256 descriptors: a block's
    // pieces must not each hold one while it waits to be sent.
    let cmd = format!(
        "ulimit -n 256 && exec {} -f {} -c base1 -p {}",
        bin("masterwugui").display(),
        c.master_conf.display(),
        src.display()
    );
    let mut m = Command::new("sh");
    m.args(["-c", &cmd]);
    let out = run_bounded(m, Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    for i in 0..2 {
        assert_eq!(snapshot(&c.po_dest(i)), snapshot(&src), "po {i}");
    }
}

#[test]
fn a_finished_swarm_leaves_no_connections_open_on_the_pos() {
    let extra = vec!["p2p = on".into(), "verify = crc32".into(), "block_size = 64K".into()];
    let c = Cluster::start("linkleak", Opts { pos: 4, class_extra: extra, ..Default::default() });
    let sockets = |i: usize| {
        fs::read_dir(format!("/proc/{}/fd", c.pos[i].child.id()))
            .map(|d| {
                d.filter_map(|e| fs::read_link(e.ok()?.path()).ok())
                    .filter(|l| l.to_string_lossy().starts_with("socket:"))
                    .count()
            })
            .unwrap_or(0)
    };
    let before: Vec<usize> = (0..4).map(sockets).collect();
    let src = c.seeded_src();
    for _ in 0..2 {
        let o = c.push(&src);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    }
    for (i, b) in before.iter().enumerate() {
        wait_for("peer links to close", Duration::from_secs(10), || sockets(i) <= *b);
    }
}

/// The `master_bytes=` figure of the master's last `transfer_end` line.
fn master_bytes(c: &Cluster) -> u64 {
    let t = fs::read_to_string(c.dir.path().join("master.log")).unwrap();
    let l =
        t.lines().rev().find(|l| l.contains("event=transfer_end")).unwrap_or_else(|| panic!("no transfer_end: {t}"));
    let v = l.split(' ').find_map(|kv| kv.strip_prefix("master_bytes=")).expect("master_bytes");
    v.parse().unwrap()
}

#[test]
fn a_second_run_sends_only_the_changed_blocks() {
    let extra = vec!["block_size = 64K".into()];
    let c = Cluster::start("delta", Opts { pos: 2, class_extra: extra, ..Default::default() });
    let src = big_tree(&c, 4);
    let args = ["-c", "base1", "-p", src.to_str().unwrap()];
    let out = c.master(&args);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(master_bytes(&c) >= 2 * (4 << 20));

    // Two 1000-byte edits in place (two 64K blocks), and a new small file.
    let mut big = fs::read(src.join("d/big.bin")).unwrap();
    big[100_000..101_000].copy_from_slice(&noise(1000, 77));
    big[3_000_000..3_001_000].copy_from_slice(&noise(1000, 78));
    fs::write(src.join("d/big.bin"), &big).unwrap();
    fs::write(src.join("new.txt"), b"new").unwrap();
    let out = c.master(&args);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let sent = master_bytes(&c);
    eprintln!("second run: the master sent {sent} bytes");
    // Each po needs the two edited blocks and the block with the new file and small.txt.
    assert!(sent <= 2 * 3 * (64 << 10), "sent {sent} bytes for two changed blocks");
    for i in 0..2 {
        assert_eq!(snapshot(&c.po_dest(i)), snapshot(&src), "po {i}");
        assert!(c.pos[i].log_text().contains("event=delta"), "po {i} did not reuse its copy");
    }

    // With `delta = off` everything travels again.
    let extra = vec!["block_size = 64K".into(), "delta = off".into()];
    let c = Cluster::start("nodelta", Opts { pos: 1, class_extra: extra, ..Default::default() });
    let src = big_tree(&c, 1);
    let args = ["-c", "base1", "-p", src.to_str().unwrap()];
    for _ in 0..2 {
        let out = c.master(&args);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        assert!(master_bytes(&c) >= 1 << 20);
    }
    assert!(!c.pos[0].log_text().contains("event=delta"));
}

/// The data extents of `f` (SEEK_DATA/SEEK_HOLE).
fn extents(f: &fs::File) -> Vec<(u64, u64)> {
    use nix::unistd::{lseek, Whence};
    use std::os::fd::AsRawFd;
    let size = f.metadata().unwrap().len();
    let (fd, mut at, mut out) = (f.as_raw_fd(), 0u64, Vec::new());
    while at < size {
        let Ok(start) = lseek(fd, at as i64, Whence::SeekData) else { break };
        let end = lseek(fd, start, Whence::SeekHole).unwrap() as u64;
        out.push((start as u64, end - start as u64));
        at = end;
    }
    out
}

#[test]
fn a_6_gib_sparse_file_arrives_identical_and_still_sparse() {
    use std::os::unix::fs::{FileExt, MetadataExt};
    let c = Cluster::start("sparse", Opts { pos: 1, ..Default::default() });
    let src = c.dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    let img = src.join("vm.img");
    let f = fs::File::create(&img).unwrap();
    f.set_len(6 << 30).unwrap();
    for (i, at) in [0u64, 3 << 30, (6 << 30) - (1 << 20)].into_iter().enumerate() {
        f.write_all_at(&noise(1 << 20, i as u64 + 1), at).unwrap();
    }
    drop(f);
    fs::write(src.join("small.txt"), b"dense").unwrap();
    if fs::metadata(&img).unwrap().blocks() * 512 > 64 << 20 {
        eprintln!("skipped: the temp dir's filesystem does not keep holes");
        return;
    }
    let out = c.push(&src);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let copy = c.po_dest(0).join("vm.img");
    let (a, b) = (fs::File::open(&img).unwrap(), fs::File::open(&copy).unwrap());
    assert_eq!(a.metadata().unwrap().len(), b.metadata().unwrap().len());
    let used = b.metadata().unwrap().blocks() * 512;
    eprintln!("6 GiB sparse: the copy uses {used} bytes of disk, the master sent {}", master_bytes(&c));
    assert!(used <= 8 << 20, "the copy uses {used} bytes of disk");
    // Identical: outside both files' data extents both read as zeros, inside compare bytes.
    let mut ranges = extents(&a);
    ranges.extend(extents(&b));
    assert!(!ranges.is_empty());
    for (off, len) in ranges {
        let (mut x, mut y) = (vec![0u8; len as usize], vec![0u8; len as usize]);
        a.read_exact_at(&mut x, off).unwrap();
        b.read_exact_at(&mut y, off).unwrap();
        assert!(x == y, "bytes differ in {off}+{len}");
    }
    assert_eq!(fs::read(c.po_dest(0).join("small.txt")).unwrap(), b"dense");
    // Only the three data blocks travelled (the master's log says how much it sent).
    assert!(master_bytes(&c) < 64 << 20, "the master sent {} bytes", master_bytes(&c));
}

/// Issue 15 item 5: nothing of a finished transfer stays open, so `umount` of the dest's
/// filesystem works. Counts the po's descriptors that point into its dest (or a stage there)
/// after a push (the po used to keep the last dest's directories open for serving peers).
#[test]
fn a_finished_transfer_leaves_no_descriptor_in_the_dest() {
    let c = Cluster::start("nofd", Opts { pos: 2, ..Default::default() });
    let src = c.seeded_src();
    let out = c.push(&src);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    for (i, po) in c.pos.iter().enumerate() {
        let dest = c.po_dest(i);
        let dest = fs::canonicalize(&dest).unwrap_or(dest);
        let pid = po.child.id();
        // Publish comes before DONE reaches the master; give the po a moment to close up.
        wait_for("the po closes what it held in the dest", Duration::from_secs(5), || {
            let open: Vec<_> = fs::read_dir(format!("/proc/{pid}/fd"))
                .unwrap()
                .filter_map(|e| fs::read_link(e.ok()?.path()).ok())
                .filter(|p| p.starts_with(&dest))
                .collect();
            open.is_empty()
        });
    }
}
