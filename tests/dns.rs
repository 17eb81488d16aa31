//! Host names through DNS on real processes: a tiny DNS server the test starts on 127.0.0.1
//! (port 0), named to every binary through the test-only `WUGUI_RESOLV_CONF`; configs that name
//! the CAC and the pos by names only that server knows.

mod common;
use common::dns_server::DnsServer;
use common::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::fs;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

const DEST: &str = "/home/work/data/base";

/// A cluster whose configs name hosts through DNS: `dir` holds `resolv.conf` (the file the
/// binaries read) and every config.
struct Named {
    dir: TempDir,
    resolv: PathBuf,
}

impl Named {
    fn new(tag: &str, dns: &DnsServer) -> Named {
        let dir = TempDir::new(tag);
        fs::write(dir.join("cluster.key"), "test-cluster-key\n").unwrap();
        let resolv = dir.join("resolv.conf");
        fs::write(&resolv, dns.resolv_conf("search wugui.test\noptions timeout:1 attempts:2\n")).unwrap();
        Named { dir, resolv }
    }

    fn env(&self) -> [(&str, &str); 1] {
        [("WUGUI_RESOLV_CONF", self.resolv.to_str().unwrap())]
    }

    /// A CAC on 127.0.0.1:`port` with class base1, whose pos are `pos` (names).
    fn cac(&self, port: u16, pos: &str) -> Daemon {
        self.cac_on("cac", &format!("127.0.0.1:{port}"), pos)
    }

    /// A CAC replica `tag` (config and log named after it) listening on `listen`.
    fn cac_on(&self, tag: &str, listen: &str, pos: &str) -> Daemon {
        let d = self.dir.path();
        let conf = format!(
            "[cac]\nlisten = {listen}\nsecret_file = {}\nlog = {}\n\n[class base1]\npo = {pos}\ndest = {DEST}\nmasters = 127.0.0.0/8, ::1/128\n",
            d.join("cluster.key").display(),
            d.join(format!("{tag}.log")).display(),
        );
        let path = d.join(format!("{tag}.conf"));
        fs::write(&path, conf).unwrap();
        let cac = Daemon::start_env("wugui-cac", &path, d.join(format!("{tag}.log")), &self.env());
        settled(&cac);
        cac
    }

    /// A po listening on `listen` that asks the CAC at `cac` (a name); its root is `po-NAME`.
    fn po(&self, name: &str, listen: &str, cac: &str) -> (Daemon, PathBuf) {
        let root = self.dir.join(format!("po-{name}"));
        fs::create_dir_all(root.join("state")).unwrap();
        let conf = format!(
            "[po]\nlisten = {listen}\ncac = {cac}\nstate_dir = {}\nallow_dest = /home/work/data\nlog = {}\nroot = {}\n",
            root.join("state").display(),
            root.join("po.log").display(),
            root.display()
        );
        let path = self.dir.join(format!("po-{name}.conf"));
        fs::write(&path, conf).unwrap();
        let po = Daemon::start_env("wugui-po", &path, root.join("po.log"), &self.env());
        settled(&po);
        (po, root.join(DEST.trim_start_matches('/')))
    }

    /// `masterwugui` pushing `src` to base1 through the CAC at `cac` (a name).
    fn push(&self, cac: &str, src: &Path) -> Output {
        let conf = self.dir.join("master.conf");
        fs::write(&conf, format!("[master]\ncac = {cac}\nlog = {}\n", self.dir.join("master.log").display())).unwrap();
        let child = spawn_master(&conf, &["-c", "base1", "-p", src.to_str().unwrap()], &self.env());
        wait_output(child, Duration::from_secs(60))
    }
}

/// Waits (bounded) until `d`'s log has `needle` at least `n` times.
fn wait_log(d: &Daemon, needle: &str, n: usize) {
    wait_for(&format!("{needle:?} x{n} in {}", d.log.display()), Duration::from_secs(10), || {
        d.log_text().matches(needle).count() >= n
    });
}

/// The daemons block their signals when their loop starts, just after `event=limits`.
fn settled(d: &Daemon) {
    wait_log(d, "event=limits", 1);
    std::thread::sleep(Duration::from_millis(200));
}

fn sighup(d: &Daemon) {
    kill(Pid::from_raw(d.child.id() as i32), Signal::SIGHUP).unwrap();
}

fn ok(o: &Output) {
    assert_eq!(o.status.code(), Some(0), "stdout {} stderr {}", text(&o.stdout), text(&o.stderr));
}

fn tree(root: &Path, seed: u64) {
    fs::create_dir_all(root.join("d")).unwrap();
    fs::write(root.join("d/one.bin"), noise(200_000, seed)).unwrap();
    fs::write(root.join("two.txt"), format!("seed {seed}\n")).unwrap();
}

#[test]
fn a_po_and_a_cac_named_only_in_dns_take_a_push() {
    let dns = DnsServer::start();
    dns.set("cac1.wugui.test", &["127.0.0.1"], 60);
    dns.set("po1.wugui.test", &["127.0.0.1"], 60);
    let n = Named::new("dns-push", &dns);
    let (cac_port, po_port) = (free_port(), free_port());
    // The po list uses the search domain (`po1`); the others the full name.
    let cac = n.cac(cac_port, &format!("po1:{po_port}"));
    let (_po, dest) = n.po("1", &format!("127.0.0.1:{po_port}"), &format!("cac1.wugui.test:{cac_port}"));
    let src = n.dir.join("src");
    tree(&src, 1);
    let o = n.push(&format!("cac1.wugui.test:{cac_port}"), &src);
    ok(&o);
    assert_eq!(snapshot(&dest), snapshot(&src));
    let asked = dns.asked();
    for name in ["po1.wugui.test", "cac1.wugui.test"] {
        assert!(asked.iter().any(|a| a == name), "{name} was never asked: {asked:?}");
    }
    assert!(cac.log_text().contains("event=cac_start"));
}

/// The pos' name and the CAC's name move from 127.0.0.1 to ::1 between two pushes (a master
/// must reach its CAC and its pos from one address, so both move). Each master run asks again;
/// the CAC keeps its answer while the TTL lasts, and a SIGHUP after it follows the move.
#[test]
fn a_name_that_moves_is_followed_at_each_push_and_after_its_ttl_on_sighup() {
    if UdpSocket::bind("[::1]:0").is_err() {
        eprintln!("skipped: no IPv6 loopback here");
        return;
    }
    const TTL: u64 = 4;
    let dns = DnsServer::start();
    dns.set("mover.wugui.test", &["127.0.0.1"], TTL as u32);
    dns.set("cac.wugui.test", &["127.0.0.1"], TTL as u32);
    let n = Named::new("dns-move", &dns);
    let (cac_port, po_port) = (free_port(), free_port());
    let pos = format!("mover.wugui.test:{po_port}");
    // Two replicas (same key and classes): one a family.
    let _cac4 = n.cac_on("cac4", &format!("127.0.0.1:{cac_port}"), &pos);
    let cac6 = n.cac_on("cac6", &format!("[::1]:{cac_port}"), &pos);
    let resolved = Instant::now(); // just after the replicas' answers came
    let (_po4, dest4) = n.po("v4", &format!("127.0.0.1:{po_port}"), &format!("127.0.0.1:{cac_port}"));
    let (_po6, dest6) = n.po("v6", &format!("[::1]:{po_port}"), &format!("[::1]:{cac_port}"));
    let cac_name = format!("cac.wugui.test:{cac_port}");

    let src1 = n.dir.join("src1");
    tree(&src1, 1);
    ok(&n.push(&cac_name, &src1));
    assert_eq!(snapshot(&dest4), snapshot(&src1));
    assert!(!dest6.exists(), "the v6 po got the first push");

    // Both names move. A reload within the TTL keeps the cached answer (checked when this host
    // was quick enough to get here within the TTL).
    dns.set("mover.wugui.test", &["::1"], TTL as u32);
    dns.set("cac.wugui.test", &["::1"], TTL as u32);
    let asked = dns.asked().len();
    sighup(&cac6);
    wait_log(&cac6, "event=config_reload", 1);
    if resolved.elapsed() < Duration::from_secs(TTL - 1) {
        assert_eq!(dns.asked().len(), asked, "asked again within the TTL");
    }
    // After the TTL a reload asks again and finds the new address.
    let expiry = Duration::from_millis(TTL * 1000 + 200);
    std::thread::sleep(expiry.saturating_sub(resolved.elapsed()));
    sighup(&cac6);
    wait_log(&cac6, "event=config_reload", 2);
    assert!(dns.asked()[asked..].iter().any(|a| a == "mover.wugui.test"), "not asked again after the TTL");

    let src2 = n.dir.join("src2");
    tree(&src2, 2);
    ok(&n.push(&cac_name, &src2));
    assert_eq!(snapshot(&dest6), snapshot(&src2));
    assert_eq!(snapshot(&dest4), snapshot(&src1), "the old host kept the first push");
    assert_eq!(dns.asked().iter().filter(|a| *a == "cac.wugui.test").count(), 4, "A and AAAA at each master run");
}

/// A nameserver that never answers: the master gives up within the resolver's bound and says
/// which name and which server; a CAC refuses the reload, logs `event=dns_failed`, and keeps its
/// old config.
#[test]
fn a_dead_nameserver_fails_in_bounded_time_naming_the_name_and_the_server() {
    let dns = DnsServer::start();
    dns.set("po1.wugui.test", &["127.0.0.1"], 0);
    let n = Named::new("dns-dead", &dns);
    let (cac_port, po_port) = (free_port(), free_port());
    let cac = n.cac(cac_port, &format!("po1.wugui.test:{po_port}"));

    let hole = UdpSocket::bind("127.0.0.1:0").unwrap(); // takes the queries, never answers
    let hole_addr = hole.local_addr().unwrap();
    fs::write(&n.resolv, format!("nameserver {hole_addr}\noptions timeout:1 attempts:2\n")).unwrap();

    let src = n.dir.join("src");
    tree(&src, 3);
    let start = Instant::now();
    let o = n.push(&format!("cac9.wugui.test:{cac_port}"), &src);
    let took = start.elapsed();
    assert!(took < Duration::from_secs(6), "took {took:?}");
    assert_ne!(o.status.code(), Some(0));
    let err = text(&o.stderr);
    assert!(err.contains("cannot resolve cac9.wugui.test"), "{err}");
    assert!(err.contains(&format!("server {hole_addr}")), "{err}");
    assert!(err.contains("no answer (2 attempts of 1s a server, 2s at most in all)"), "{err}");

    // The CAC's reload asks again (TTL 0), fails, and the old po list stays.
    sighup(&cac);
    wait_log(&cac, "event=config_refused", 1);
    let log = cac.log_text();
    let line = log.lines().find(|l| l.contains("event=dns_failed")).unwrap_or_else(|| panic!("{log}"));
    assert!(line.contains("name=po1.wugui.test") && line.contains(&format!("server={hole_addr}")), "{line}");
    fs::write(&n.resolv, dns.resolv_conf("")).unwrap();
    let (_po, dest) = n.po("1", &format!("127.0.0.1:{po_port}"), &format!("127.0.0.1:{cac_port}"));
    ok(&n.push(&format!("127.0.0.1:{cac_port}"), &src));
    assert_eq!(snapshot(&dest), snapshot(&src));
    drop(hole);
}

/// A po's name moves (127.0.0.1 to 127.0.0.2) with no SIGHUP: the CAC's watch thread asks
/// again once the TTL is over and the next push goes to the new host, while a name that stops
/// answering keeps its last address.
#[test]
fn the_cac_follows_a_po_name_that_moves_without_a_sighup() {
    let dns = DnsServer::start();
    dns.set("mover.wugui.test", &["127.0.0.1"], 1);
    let n = Named::new("dns-follow", &dns);
    let (cac_port, po_port) = (free_port(), free_port());
    let cac = n.cac(cac_port, &format!("mover:{po_port}"));
    let (_old, dest_old) = n.po("old", &format!("127.0.0.1:{po_port}"), &format!("127.0.0.1:{cac_port}"));
    let (_new, dest_new) = n.po("new", &format!("127.0.0.2:{po_port}"), &format!("127.0.0.1:{cac_port}"));
    let cac_addr = format!("127.0.0.1:{cac_port}");
    let src1 = n.dir.join("src1");
    tree(&src1, 1);
    ok(&n.push(&cac_addr, &src1));
    assert_eq!(snapshot(&dest_old), snapshot(&src1));
    assert!(!dest_new.exists(), "the new host got the first push");

    dns.set("mover.wugui.test", &["127.0.0.2"], 1);
    wait_for("the CAC to follow the move", Duration::from_secs(20), || {
        cac.log_text().contains(&format!("event=names_refreshed role=cac moved=mover:{po_port}=127.0.0.2:{po_port}"))
    });
    assert!(!cac.log_text().contains("event=config_reload"), "a reload, not the watch, took the move");
    let src2 = n.dir.join("src2");
    tree(&src2, 2);
    ok(&n.push(&cac_addr, &src2));
    assert_eq!(snapshot(&dest_new), snapshot(&src2));
    assert_eq!(snapshot(&dest_old), snapshot(&src1), "the old host got the second push");

    // The name stops answering: the CAC keeps the last address, and says why.
    dns.remove("mover.wugui.test");
    wait_log(&cac, "event=dns_failed", 1);
    let src3 = n.dir.join("src3");
    tree(&src3, 3);
    ok(&n.push(&cac_addr, &src3));
    assert_eq!(snapshot(&dest_new), snapshot(&src3));
}
