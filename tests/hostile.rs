//! Faults and hostile peers against the real binaries: CAC failover, the master's
//! challenge-response, and garbage, idle and slowloris connections during a transfer.

mod common;
use common::*;
use std::fs;
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};
use wugui::proto::Msg;

#[test]
fn masters_and_pos_fail_over_past_refusing_and_blackholed_cacs() {
    // A CAC that accepts connections and never answers, and one that refuses them.
    let hole = TcpListener::bind("127.0.0.1:0").unwrap();
    let hole_addr = hole.local_addr().unwrap().to_string();
    // Nothing in the tests binds 127.0.0.77, so this is refused whatever ports others take.
    let refused = format!("127.0.0.77:{}", free_port());
    let o = Opts { pos: 2, po_cacs_before: vec![hole_addr.clone(), refused.clone()], ..Default::default() };
    let c = Cluster::start("failover", o);
    let conf = c.dir.path().join("failover-master.conf");
    fs::write(&conf, format!("[master]\ncac = {refused}, {hole_addr}, {}\nconnect_timeout = 1\n", c.cac.addr)).unwrap();
    let src = c.seeded_src();
    let t = Instant::now();
    let out = master_with(&conf, &["-c", "base1", "-p", src.to_str().unwrap()]);
    let took = t.elapsed();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    for i in 0..2 {
        assert_eq!(snapshot(&c.po_dest(i)), snapshot(&src));
        let log = c.pos[i].log_text();
        assert!(log.matches("event=cac_failover").count() >= 2, "{log}");
    }
    // master: refused at once, blackhole after connect_timeout (1 s); pos: 3 s on the blackhole.
    eprintln!("failover: the whole transfer took {took:?}");
    assert!(took < Duration::from_secs(15), "{took:?}");
    drop(hole);
}

#[test]
fn a_class_with_a_master_secret_needs_the_right_secret() {
    let d = TempDir::new("secret-files");
    fs::write(d.path().join("base1.secret"), "s3cret-for-base1\n").unwrap();
    let extra = vec![format!("master_secret_file = {}", d.path().join("base1.secret").display())];
    let c = Cluster::start("secret", Opts { pos: 1, class_extra: extra, ..Default::default() });
    let src = c.seeded_src();
    let s = src.to_str().unwrap();
    let with_secret = |secret: Option<&str>| {
        let dir = c.dir.path().join(format!("secrets-{}", secret.unwrap_or("none")));
        fs::create_dir_all(&dir).unwrap();
        if let Some(v) = secret {
            fs::write(dir.join("base1"), v).unwrap();
        }
        let conf = dir.join("master.conf");
        fs::write(&conf, format!("[master]\ncac = {}\nsecret_dir = {}\n", c.cac.addr, dir.display())).unwrap();
        master_with(&conf, &["-c", "base1", "-p", s])
    };
    let o = with_secret(None);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("needs the master secret"), "{}", text(&o.stderr));
    let o = with_secret(Some("wrong"));
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("challenge_failed"), "{}", text(&o.stderr));
    assert!(c.cac.log_text().contains("reason=challenge_failed"));
    let o = with_secret(Some("s3cret-for-base1"));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(snapshot(&c.po_dest(0)), snapshot(&src));
}

#[test]
fn garbage_idle_and_slowloris_connections_do_not_stop_a_transfer() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    let _ = setrlimit(Resource::RLIMIT_NOFILE, hard.min(8192), hard);
    let mut c = Cluster::start("hostile", Opts { pos: 2, ..Default::default() });
    let targets = [c.cac.addr.clone(), c.pos[0].addr.clone()];
    let mut held = Vec::new();
    let mut cases = 0;
    for t in &targets {
        // 400 idle connections each.
        for _ in 0..400 {
            if let Ok(s) = TcpStream::connect(t) {
                held.push(s);
                cases += 1;
            }
        }
        // 100 of garbage each: random bytes, a wrong magic, a huge declared length.
        for i in 0..100u64 {
            if let Ok(mut s) = TcpStream::connect(t) {
                let junk = match i % 3 {
                    0 => noise(64, i),
                    1 => b"GET / HTTP/1.0\r\n\r\n".to_vec(),
                    _ => vec![b'W', b'G', 1, 8, 0xff, 0xff, 0xff, 0xff],
                };
                let _ = s.write_all(&junk);
                held.push(s);
                cases += 1;
            }
        }
    }
    // Slowloris: a valid header start, one byte a second, on a thread.
    let slow: Vec<TcpStream> = (0..10).filter_map(|i| TcpStream::connect(&targets[i % 2]).ok()).collect();
    cases += slow.len();
    let slow_thread = std::thread::spawn(move || {
        let mut slow = slow;
        for b in b"WG\x01\x12\x00\x00\x00\x00" {
            for s in &mut slow {
                let _ = s.write_all(&[*b]);
            }
            std::thread::sleep(Duration::from_millis(700));
        }
    });
    let src = c.seeded_src();
    let out = c.push(&src);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    for i in 0..2 {
        assert_eq!(snapshot(&c.po_dest(i)), snapshot(&src));
    }
    slow_thread.join().unwrap();
    for d in [&mut c.cac, &mut c.pos[0]] {
        assert!(d.child.try_wait().unwrap().is_none(), "a daemon died");
    }
    let logs = c.cac.log_text() + &c.pos[0].log_text();
    assert!(logs.contains("event=protocol_error") || logs.contains("event=conn_error"), "garbage went unlogged");
    eprintln!("hostile cases tried: {cases}");
    drop(held);
}

/// A manifest encoded by hand, so that it can break the rules `Manifest::new` enforces.
/// A manifest in the wire's compact form, built by hand so that it can break every rule.
fn evil_manifest(entries: &[(&str, u8, &str)]) -> Vec<u8> {
    let mut w = wugui::proto::codec::Writer::new();
    w.u32(4096);
    w.u32(entries.len() as u32);
    for (path, kind, target) in entries {
        w.var(0); // no prefix shared with the previous path
        w.var(path.len() as u64);
        w.raw(path.as_bytes());
        w.var(0o644);
        w.var(0);
        w.var(0);
        w.u8(*kind);
        match kind {
            1 => w.var(10),
            2 => {
                w.var(target.len() as u64);
                w.raw(target.as_bytes());
            }
            _ => {}
        }
    }
    w.buf
}

#[test]
fn a_rogue_master_with_a_valid_token_cannot_write_outside_the_dest() {
    use wugui::proto::msg::Reason;
    use wugui::proto::{auth::Token, Manifest, Msg};
    let c = Cluster::start("rogue", Opts { pos: 1, ..Default::default() });
    let outside = c.dir.path().join("outside");
    fs::create_dir_all(&outside).unwrap();
    let o = outside.display().to_string();
    let long = "n".repeat(300);
    let cases: Vec<Vec<(&str, u8, &str)>> = vec![
        vec![("../escape.txt", 1, "")],
        vec![("a", 0, ""), ("a/../../escape.txt", 1, "")],
        vec![("/tmp/wugui-rogue-abs.txt", 1, "")],
        vec![("", 1, "")],
        vec![("a//b", 1, "")],
        vec![("x\0y", 1, "")],
        vec![("dup", 1, ""), ("dup", 1, "")],
        vec![("f", 1, ""), ("f/under-a-file", 1, "")],
        // A symlink out of the dest, then a file written through it.
        vec![("link", 2, o.as_str()), ("link/planted.txt", 1, "")],
        vec![(long.as_str(), 1, "")],
    ];
    let mut refused = 0;
    for (i, entries) in cases.iter().enumerate() {
        // The CAC grants this master (its address is allowed) a real token.
        let mut cac = TcpStream::connect(&c.cac.addr).unwrap();
        send(&mut cac, &Msg::AuthRequest { class: "base1".into() });
        let Some(Msg::AuthGrant { token, .. }) = recv(&mut cac) else { panic!("no grant") };
        let mut po = TcpStream::connect(&c.pos[0].addr).unwrap();
        let manifest = evil_manifest(entries);
        let (manifest_id, manifest_len) = (Manifest::id_of(&manifest), manifest.len() as u64);
        let transfer = Token::decode(&token).unwrap().transfer;
        send(&mut po, &Msg::Offer { token, po: c.pos[0].addr.clone(), manifest_id, manifest_len, mode: 0 });
        // The manifest goes only once the CAC vouched for the token.
        assert_eq!(recv(&mut po), Some(Msg::Verified { transfer }), "case {i}");
        send(&mut po, &Msg::Manifest { transfer, manifest: manifest.into() });
        match recv(&mut po) {
            Some(Msg::Denied { reason: Reason::BadManifest, text }) => {
                eprintln!("case {i}: refused: {text}");
                refused += 1;
            }
            other => panic!("case {i} {entries:?}: not refused: {other:?}"),
        }
    }
    assert_eq!(refused, cases.len());
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 0, "something was written outside");
    assert!(!c.po_dest(0).parent().unwrap().join("escape.txt").exists());
    assert!(!std::path::Path::new("/tmp/wugui-rogue-abs.txt").exists());
    let log = c.pos[0].log_text();
    assert_eq!(log.matches("reason=bad_manifest").count(), cases.len(), "one log line per refusal");
    // A stranger without a token gets a reason too, and the po keeps serving.
    let mut po = TcpStream::connect(&c.pos[0].addr).unwrap();
    send(
        &mut po,
        &Msg::Offer { token: vec![1, 2, 3], po: c.pos[0].addr.clone(), manifest_id: [0; 16], manifest_len: 9, mode: 0 },
    );
    assert!(matches!(recv(&mut po), Some(Msg::Denied { reason: Reason::BadToken, .. })));
    let src = c.seeded_src();
    assert_eq!(c.push(&src).status.code(), Some(0));
}

/// A po that asks for the delta sums of junk (repeats, blocks past the end) gets each real
/// block once, with the right MD5, and the others finish without it.
#[test]
fn a_po_asking_for_junk_delta_sums_gets_only_real_blocks() {
    use wugui::proto::{auth::Token, checksum::digest, Msg};
    let fake = TcpListener::bind("127.0.0.1:0").unwrap();
    let fake_addr = fake.local_addr().unwrap();
    let list = std::env::temp_dir().join(format!("wugui-junkcheck-{}.pos", std::process::id()));
    fs::write(&list, format!("{fake_addr}\n")).unwrap();
    let extra = vec![format!("po_file = {}", list.display()), "block_size = 64K".into(), "retries = 0".into()];
    let c = Cluster::start("junkcheck", Opts { pos: 1, class_extra: extra, ..Default::default() });
    let _ = fs::remove_file(&list); // read at start
    let src = c.dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    let data = noise(256 << 10, 7);
    fs::write(src.join("f.bin"), &data).unwrap();
    let conf = c.master_conf.clone();
    let s = src.to_str().unwrap().to_owned();
    let master = std::thread::spawn(move || master_with(&conf, &["-c", "base1", "-p", &s]));
    let (mut po, _) = fake.accept().unwrap();
    let Some(Msg::Offer { token, .. }) = recv(&mut po) else { panic!("no offer") };
    let transfer = Token::decode(&token).unwrap().transfer;
    send(&mut po, &Msg::Check { transfer, blocks: vec![3, 3, 0, 99, u64::MAX, 0] });
    let Some(Msg::CheckSums { transfer: t, sums }) = recv(&mut po) else { panic!("no sums") };
    assert_eq!(t, transfer);
    let blocks: Vec<u64> = sums.iter().map(|(b, _)| *b).collect();
    assert_eq!(blocks, vec![0, 3]);
    assert_eq!(sums[0].1, digest(&data[..64 << 10]));
    drop(po);
    drop(fake);
    let out = master.join().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert_eq!(fs::read(c.po_dest(0).join("f.bin")).unwrap(), data);
}

/// Text from the network reaches the logs as one value: a stranger's class name on the CAC, and
/// a po's FAILED text on the master, cannot add `event=` fields (or lines) to a log line.
#[test]
fn text_from_the_network_cannot_add_fields_to_a_log_line() {
    let c = Cluster::start("logkv", Opts { pos: 1, ..Default::default() });
    let forged = "nosuch event=auth_grant transfer=1 class=base1 master=10.6.6.6 pos=1";
    let mut s = TcpStream::connect(&c.cac.addr).unwrap();
    send(&mut s, &Msg::AuthRequest { class: forged.into() });
    assert!(matches!(recv(&mut s), Some(Msg::Denied { .. })));
    wait_for("the auth_denied line", Duration::from_secs(10), || c.cac.log_text().contains("event=auth_denied"));
    let log = c.cac.log_text();
    let line = log.lines().find(|l| l.contains("event=auth_denied")).unwrap();
    assert_eq!(events_in(line), 1, "{line}");

    let fake = common::rogue::FakePo::bind();
    let list = TempDir::new("logkv-list");
    let po_file = list.path().join("fake.pos");
    fs::write(&po_file, format!("{}\n", fake.addr)).unwrap();
    let c = Cluster::start(
        "logkv-po",
        Opts { pos: 1, class_extra: vec![format!("po_file = {}", po_file.display())], ..Default::default() },
    );
    let (conf, src) = (c.master_conf.clone(), c.seeded_src());
    let master = std::thread::spawn(move || master_with(&conf, &["-c", "base1", "-p", src.to_str().unwrap()]));
    let mut o = fake.offered();
    let error = "disk full\" event=po_done po=10.6.6.6 result=ok files=1 \"\u{202e}".to_string();
    assert!(common::rogue::send(&mut o.master, &Msg::Failed { transfer: o.transfer, error }));
    let out = master.join().unwrap();
    let log = fs::read_to_string(c.dir.path().join("master.log")).unwrap();
    let line = log.lines().find(|l| l.contains("event=po_failed")).expect("a po_failed line");
    assert_eq!(events_in(line), 1, "{line}");
    assert!(line.contains("\\u{202e}") && !line.contains('\u{202e}'), "{line}");
    assert!(!text(&out.stderr).contains('\u{202e}'), "{}", text(&out.stderr));
}
