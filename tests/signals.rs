//! The daemons' signals on real processes: SIGHUP reloads the config (a bad one is refused and the
//! old one stays, live transfers go on), SIGUSR1 reopens the log file, SIGTERM stops cleanly.

mod common;
use common::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

fn signal(d: &Daemon, sig: Signal) {
    kill(Pid::from_raw(d.child.id() as i32), sig).unwrap();
}

/// Waits (bounded) until `d`'s log has `needle` at least `n` times.
fn wait_log(d: &Daemon, needle: &str, n: usize) {
    let start = Instant::now();
    while d.log_text().matches(needle).count() < n {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out waiting for {needle:?} in log:\n{}",
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits (bounded) until the child has exited, and returns its status code.
fn wait_exit(d: &mut Daemon, limit: Duration) -> Option<i32> {
    let start = Instant::now();
    loop {
        if let Some(st) = d.child.try_wait().unwrap() {
            return st.code();
        }
        assert!(start.elapsed() < limit, "still running {limit:?} after the signal");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn alive(d: &mut Daemon) -> bool {
    d.child.try_wait().unwrap().is_none()
}

/// The daemons block their signals only when their event loop starts, a moment after
/// `listening=`; the `event=limits` line is logged just before that. Waiting for it and a little
/// more keeps these tests about reload, not about that start-up window.
fn settled(d: &Daemon) {
    wait_log(d, "event=limits", 1);
    std::thread::sleep(Duration::from_millis(200));
}

fn ok(o: &Output) {
    assert_eq!(o.status.code(), Some(0), "stdout {} stderr {}", text(&o.stdout), text(&o.stderr));
}

fn cac_conf(c: &Cluster) -> std::path::PathBuf {
    c.dir.path().join("cac.conf")
}

fn small_tree(root: &Path, seed: u64) {
    fs::create_dir_all(root.join("d")).unwrap();
    fs::write(root.join("d/one.bin"), noise(100_000, seed)).unwrap();
    fs::write(root.join("two.txt"), format!("seed {seed}\n")).unwrap();
}

#[test]
fn sighup_on_the_cac_adds_a_class() {
    let c = Cluster::start("hup-cac", Opts { pos: 2, ..Default::default() });
    settled(&c.cac);
    let src = c.dir.path().join("src");
    small_tree(&src, 1);
    // Before the reload base2 is unknown.
    let o = c.master(&["-c", "base2", "-p", src.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("unknown_class"), "{}", text(&o.stderr));

    let old = fs::read_to_string(cac_conf(&c)).unwrap();
    let po_line = old.lines().find(|l| l.starts_with("po =")).unwrap().to_string();
    let new = format!("{old}\n[class base2]\n{po_line}\ndest = /home/work/data/base2\nmasters = 127.0.0.0/8\n");
    fs::write(cac_conf(&c), new).unwrap();
    signal(&c.cac, Signal::SIGHUP);
    wait_log(&c.cac, "event=config_reload", 1);
    let log = c.cac.log_text();
    let line = log.lines().find(|l| l.contains("event=config_reload")).unwrap();
    assert!(line.contains("role=cac") && line.contains("classes=2"), "{line}");

    let o = c.master(&["-c", "base2", "-p", src.to_str().unwrap()]);
    ok(&o);
    let want = snapshot(&src);
    for (i, root) in c.po_roots.iter().enumerate() {
        assert_eq!(snapshot(&root.join("home/work/data/base2")), want, "po {i}");
    }
    // The old class still works.
    let o = c.push(&src);
    ok(&o);
    assert_eq!(snapshot(&c.po_dest(0)), want);
}

#[test]
fn sighup_with_a_bad_config_keeps_the_old_one() {
    let mut c = Cluster::start("hup-bad", Opts { pos: 1, ..Default::default() });
    settled(&c.cac);
    let old = fs::read_to_string(cac_conf(&c)).unwrap();
    // The bad line goes right after `[class base1]`.
    let mut lines: Vec<&str> = old.lines().collect();
    let at = lines.iter().position(|l| *l == "[class base1]").unwrap() + 1;
    lines.insert(at, "bogus line without equals");
    let bad_line = at + 1; // 1-based
    fs::write(cac_conf(&c), lines.join("\n") + "\n").unwrap();
    signal(&c.cac, Signal::SIGHUP);
    wait_log(&c.cac, "event=config_refused", 1);
    let log = c.cac.log_text();
    let line = log.lines().find(|l| l.contains("event=config_refused")).unwrap();
    assert!(line.contains(&format!("cac.conf:{bad_line}")), "wanted cac.conf:{bad_line} in {line}");
    assert!(line.contains(" ERROR "), "{line}");
    assert!(!log.contains("event=config_reload"), "{log}");
    std::thread::sleep(Duration::from_millis(200));
    assert!(alive(&mut c.cac), "the CAC died on a bad config");

    // The old config still serves base1.
    let src = c.dir.path().join("src");
    small_tree(&src, 2);
    let o = c.push(&src);
    ok(&o);
    assert_eq!(snapshot(&c.po_dest(0)), snapshot(&src));

    // Fixing the file and another SIGHUP takes the new config.
    fs::write(cac_conf(&c), &old).unwrap();
    signal(&c.cac, Signal::SIGHUP);
    wait_log(&c.cac, "event=config_reload", 1);
    assert!(alive(&mut c.cac));
}

#[test]
fn sighup_on_a_po_keeps_a_live_transfer() {
    let extra = vec!["rate_limit = 2M".to_string(), "block_size = 256K".to_string()];
    let c = Cluster::start("hup-po", Opts { pos: 2, class_extra: extra, ..Default::default() });
    for p in &c.pos {
        settled(p);
    }
    let src = c.dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("big.bin"), noise(8 << 20, 7)).unwrap();
    fs::write(src.join("small.txt"), b"small\n").unwrap();
    let want = snapshot(&src);

    let conf = c.master_conf.clone();
    let s = src.to_str().unwrap().to_string();
    let started = Instant::now();
    let t = std::thread::spawn(move || master_with(&conf, &["-c", "base1", "-p", &s]));
    // Both pos have taken the offer, then a second more.
    for p in &c.pos {
        wait_log(p, "event=transfer_accept", 1);
    }
    std::thread::sleep(Duration::from_secs(1));
    assert!(!t.is_finished(), "the transfer finished before the SIGHUP; it should take several seconds");
    for p in &c.pos {
        signal(p, Signal::SIGHUP);
    }
    for p in &c.pos {
        wait_log(p, "event=config_reload", 1);
    }
    assert!(!t.is_finished(), "the transfer finished before the reloads were logged");
    let o = t.join().unwrap();
    ok(&o);
    // 16 MiB at 2 MiB/s from the master: the rate limit was in force, so the SIGHUP came mid-way.
    assert!(started.elapsed() > Duration::from_secs(3), "{:?}", started.elapsed());
    assert!(text(&o.stdout).contains("result=ok pos=2/2"), "{}", text(&o.stdout));
    for (i, p) in c.pos.iter().enumerate() {
        assert_eq!(snapshot(&c.po_dest(i)), want, "po {i}");
        let log = p.log_text();
        let reload = log.find("event=config_reload").unwrap();
        let publish = log.find("event=publish").expect("no publish");
        assert!(reload < publish, "po {i}: the reload was not mid-transfer:\n{log}");
        for bad in ["event=transfer_abort", "event=po_failed", "event=master_lost"] {
            assert!(!log.contains(bad), "po {i}: {bad}:\n{log}");
        }
    }
}

#[test]
fn sigusr1_reopens_the_po_log() {
    let c = Cluster::start("usr1", Opts { pos: 1, ..Default::default() });
    settled(&c.pos[0]);
    let log = c.pos[0].log.clone();
    let rotated = log.with_extension("log.1");
    fs::rename(&log, &rotated).unwrap();
    signal(&c.pos[0], Signal::SIGUSR1);
    wait_for("po.log to be created again", Duration::from_secs(10), || log.exists());

    let src = c.dir.path().join("src");
    small_tree(&src, 3);
    let o = c.push(&src);
    ok(&o);
    wait_log(&c.pos[0], "event=publish", 1);
    let new = fs::read_to_string(&log).unwrap();
    let old = fs::read_to_string(&rotated).unwrap();
    assert!(old.contains("event=po_start") && old.contains("event=listen"), "{old}");
    for e in ["event=publish", "event=transfer_accept"] {
        assert!(new.contains(e), "{e} not in the new po.log:\n{new}");
        assert!(!old.contains(e), "{e} went to the rotated po.log.1:\n{old}");
    }
    assert!(!new.contains("event=po_start"), "{new}");
    assert_eq!(snapshot(&c.po_dest(0)), snapshot(&src));
}

#[test]
fn sigterm_stops_the_daemons_cleanly() {
    let mut c = Cluster::start("term", Opts { pos: 1, ..Default::default() });
    settled(&c.cac);
    settled(&c.pos[0]);
    // One transfer first, so the CAC has served connections before it stops.
    let src = c.dir.path().join("src");
    small_tree(&src, 4);
    ok(&c.push(&src));

    signal(&c.cac, Signal::SIGTERM);
    assert_eq!(wait_exit(&mut c.cac, Duration::from_secs(5)), Some(0));
    let log = c.cac.log_text();
    let line = log.lines().find(|l| l.contains("event=stop")).unwrap_or_else(|| panic!("no stop:\n{log}"));
    assert!(line.contains("role=cac") && line.contains("signal=SIGTERM"), "{line}");

    signal(&c.pos[0], Signal::SIGTERM);
    assert_eq!(wait_exit(&mut c.pos[0], Duration::from_secs(5)), Some(0));
    let log = c.pos[0].log_text();
    assert!(log.lines().any(|l| l.contains("event=stop") && l.contains("role=po")), "{log}");
}

/// A CAC and a po config in `d` that need no other daemon (the po's CAC and the class's po are
/// port 1): `(cac.conf, po.conf)`, each with `extra` lines in its role section.
fn lone_confs(d: &Path, extra: &str) -> (PathBuf, PathBuf) {
    fs::write(d.join("cluster.key"), "k\n").unwrap();
    fs::create_dir_all(d.join("state")).unwrap();
    let cac_conf = d.join("cac.conf");
    fs::write(
        &cac_conf,
        format!(
            "[cac]\nlisten = 127.0.0.1:0\nsecret_file = {}\nlog = {}\n{extra}\n[class base1]\npo = 127.0.0.1:1\n\
             dest = /home/work/data/base\nmasters = 127.0.0.0/8\n",
            d.join("cluster.key").display(),
            d.join("cac.log").display()
        ),
    )
    .unwrap();
    let po_conf = d.join("po.conf");
    fs::write(
        &po_conf,
        format!(
            "[po]\nlisten = 127.0.0.1:0\ncac = 127.0.0.1:1\nstate_dir = {}\nallow_dest = /home/work/data\nlog = {}\n{extra}",
            d.join("state").display(),
            d.join("po.log").display()
        ),
    )
    .unwrap();
    (cac_conf, po_conf)
}

/// A SIGHUP (as from `systemctl reload` or a logrotate postrotate) that arrives once the daemon
/// has announced `listening=` must not kill it. Each daemon is started 10 times and signalled
/// as soon as the line is read.
#[test]
fn sighup_right_after_listening_does_not_kill_the_daemons() {
    let dir = TempDir::new("hup-early");
    let d = dir.path();
    let (cac_conf, po_conf) = lone_confs(d, "");
    let mut killed = Vec::new();
    for (bin, conf, log) in [("wugui-cac", &cac_conf, "cac.log"), ("wugui-po", &po_conf, "po.log")] {
        for _ in 0..10 {
            let mut dm = Daemon::start(bin, conf, d.join(log));
            signal(&dm, Signal::SIGHUP);
            std::thread::sleep(Duration::from_millis(300));
            if let Some(st) = dm.child.try_wait().unwrap() {
                killed.push(format!("{bin}: {st}"));
            }
        }
    }
    assert!(
        killed.is_empty(),
        "{} of 20 daemons died of a SIGHUP sent just after listening=:\n{}",
        killed.len(),
        killed.join("\n")
    );
}

/// With `metrics_listen` set (once served by a thread of its own, now by the event loop), a SIGHUP,
/// SIGUSR1 or SIGTERM long after start must still reach the event loop, not kill the process.
#[test]
fn sighup_reloads_a_daemon_that_serves_metrics() {
    let dir = TempDir::new("hup-metrics");
    let d = dir.path();
    let (cac_conf, po_conf) = lone_confs(d, "metrics_listen = 127.0.0.1:0\n");
    let mut died = Vec::new();
    for (bin, conf, log) in [("wugui-cac", &cac_conf, "cac.log"), ("wugui-po", &po_conf, "po.log")] {
        let mut dm = Daemon::start(bin, conf, d.join(log));
        wait_log(&dm, "event=metrics_listen", 1);
        std::thread::sleep(Duration::from_millis(500));
        signal(&dm, Signal::SIGHUP);
        std::thread::sleep(Duration::from_millis(300));
        if let Some(st) = dm.child.try_wait().unwrap() {
            died.push(format!("{bin}: {st}"));
            continue;
        }
        wait_log(&dm, "event=config_reload", 1);
        signal(&dm, Signal::SIGTERM);
        assert_eq!(wait_exit(&mut dm, Duration::from_secs(5)), Some(0), "{bin}");
        assert!(dm.log_text().contains("event=stop"), "{bin}");
    }
    assert!(died.is_empty(), "with metrics_listen, a SIGHUP well after start killed:\n{}", died.join("\n"));
}

/// `wugui-stat -s ADDR --json`.
fn stat_json(addr: &str) -> String {
    let mut c = std::process::Command::new(bin("wugui-stat"));
    c.args(["-s", addr, "--json"]);
    text(&run_bounded(c, Duration::from_secs(10)).stdout)
}

#[test]
fn sigint_on_the_master_aborts_the_push_everywhere() {
    let extra = vec!["rate_limit = 1M".to_string(), "block_size = 64K".to_string()];
    let c = Cluster::start("int-master", Opts { pos: 2, class_extra: extra, ..Default::default() });
    for p in &c.pos {
        settled(p);
    }
    let src = c.dir.path().join("src");
    small_tree(&src, 5);
    ok(&c.push(&src));
    let old = snapshot(&src);
    fs::write(src.join("big.bin"), noise(8 << 20, 8)).unwrap();

    let mut master = std::process::Command::new(bin("masterwugui"))
        .arg("-f")
        .arg(&c.master_conf)
        .args(["-c", "base1", "-p", src.to_str().unwrap()])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    for p in &c.pos {
        wait_log(p, "event=transfer_accept", 2);
    }
    std::thread::sleep(Duration::from_millis(500));
    assert!(master.try_wait().unwrap().is_none(), "the push ended before the signal; it should take ~16 s");
    let sent = Instant::now();
    kill(Pid::from_raw(master.id() as i32), Signal::SIGINT).unwrap();
    let start = Instant::now();
    while master.try_wait().unwrap().is_none() {
        assert!(start.elapsed() < Duration::from_secs(5), "the master still runs 5 s after SIGINT");
        std::thread::sleep(Duration::from_millis(10));
    }
    let took = sent.elapsed();
    eprintln!("masterwugui exited {took:?} after SIGINT");
    let o = master.wait_with_output().unwrap();
    let (out, err) = (text(&o.stdout), text(&o.stderr));
    assert_eq!(o.status.code(), Some(6), "stdout {out} stderr {err}");
    let summary = out.lines().last().unwrap_or_default();
    let id = summary.strip_prefix("transfer=").and_then(|s| s.split(' ').next()).unwrap_or("0");
    assert_ne!(id, "0", "{summary}");
    assert!(summary.contains(" class=base1 result=aborted pos=0/2 "), "{summary}");
    let master_log = fs::read_to_string(c.dir.path().join("master.log")).unwrap();
    assert!(!master_log.contains("not flushed in time"), "{master_log}");
    for (i, p) in c.pos.iter().enumerate() {
        wait_log(p, "event=transfer_abort", 1);
        // The stage stays beside the tree, for a rerun to resume from.
        let mut now = snapshot(&c.po_dest(i));
        now.retain(|k, _| !k.starts_with(".wugui-stage-"));
        assert_eq!(now, old, "po {i} lost its old tree");
        assert!(!p.log_text().contains("event=master_lost"), "po {i} was not told:\n{}", p.log_text());
        let json = stat_json(&p.addr);
        assert!(!json.contains("receiving"), "po {i} still lists the transfer: {json}");
    }
    let json = stat_json(&c.cac.addr);
    let want = format!("\"transfer\":\"{id}\",\"class\":\"base1\",\"master\":\"127.0.0.1\",\"state\":\"aborted\"");
    assert!(json.contains(&want), "{json}");
    assert!(took < Duration::from_secs(5));
}
