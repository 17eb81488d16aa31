//! What strangers and rogue or vanished masters may cost real daemons (issue 14): memory before
//! a token is verified, a wildcard-listen po's class membership, descriptors of abandoned
//! transfers. Each test prints what it measured.

mod common;
use common::*;
use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};
use wugui::proto::manifest::{Entry, Kind};
use wugui::proto::msg::Reason;
use wugui::proto::{auth::Token, wire, BlockHead, Manifest, Msg, Payload, Sum, Verify};

fn open_fds(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count()
}

/// A frame header declaring `len` payload bytes of type `ty`.
fn header(ty: wire::MsgType, len: u32) -> Vec<u8> {
    let mut h = Vec::new();
    wire::write_header(&mut h, ty, len);
    h
}

/// Sends `bytes`, then up to `junk` more, until the peer cuts us off; returns what it took and
/// whether it closed the connection within 10 s.
fn push_until_cut(addr: &str, bytes: &[u8], junk: usize) -> (usize, bool) {
    let mut s = TcpStream::connect(addr).unwrap();
    let mut sent = s.write(bytes).unwrap_or(0);
    let chunk = vec![0x5a; 64 << 10];
    while sent < bytes.len() + junk {
        match s.write(&chunk) {
            Ok(n) => sent += n,
            Err(_) => break,
        }
    }
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 4096];
    let closed = loop {
        match s.read(&mut buf) {
            Ok(0) => break true,
            Ok(_) => {}
            Err(e) => break e.kind() != std::io::ErrorKind::WouldBlock && e.kind() != std::io::ErrorKind::TimedOut,
        }
    };
    (sent, closed)
}

#[test]
fn strangers_declaring_big_frames_are_cut_off_without_the_po_growing() {
    let c = Cluster::start("bounds-mem", Opts { pos: 1, ..Default::default() });
    let pid = c.pos[0].child.id();
    let (rss0, hwm0) = (status_kib(pid, "VmRSS"), status_kib(pid, "VmHWM"));
    // Each header alone used to cost its declared size: 64 MiB for a block, up to 256 MiB for
    // an offer. Twenty of each, with 4 MiB of bytes behind every header.
    let cases = [
        (wire::MsgType::Block, wire::MAX_BLOCK),
        (wire::MsgType::Manifest, 200 << 20),
        (wire::MsgType::Offer, 200 << 20),
    ];
    let mut sent = 0;
    let threads: Vec<_> = (0..60)
        .map(|i| {
            let (ty, len) = cases[i % 3];
            let addr = c.pos[0].addr.clone();
            std::thread::spawn(move || push_until_cut(&addr, &header(ty, len), 4 << 20))
        })
        .collect();
    for t in threads {
        let (n, closed) = t.join().unwrap();
        assert!(closed, "a stranger's big frame was not cut off");
        sent += n;
    }
    let (rss1, hwm1) = (status_kib(pid, "VmRSS"), status_kib(pid, "VmHWM"));
    eprintln!(
        "strangers sent {} KiB; po VmRSS {rss0} -> {rss1} KiB, VmHWM {hwm0} -> {hwm1} KiB ({:.4} bytes of peak memory per byte sent)",
        sent >> 10,
        (hwm1.saturating_sub(hwm0) << 10) as f64 / sent.max(1) as f64
    );
    assert!(hwm1 < hwm0 + (16 << 10), "the po grew from {hwm0} to {hwm1} KiB");
    let log = c.pos[0].log_text();
    assert!(log.contains("over this connection's limit of 65536 bytes"), "{log}");
    // The po still serves.
    let src = c.seeded_src();
    assert_eq!(c.push(&src).status.code(), Some(0));
}

#[test]
fn a_wildcard_po_refuses_a_master_of_a_class_it_is_not_in() {
    let dir = TempDir::new("bounds-class");
    let d = dir.path();
    fs::write(d.join("cluster.key"), "test-cluster-key\n").unwrap();
    let (cac_port, po_port, a_port) = (free_port(), free_port(), free_port());
    // Class A's only po is elsewhere; this po is in class B only, and listens on 0.0.0.0.
    let cac = format!(
        "[cac]\nlisten = 127.0.0.1:{cac_port}\nsecret_file = {}\nlog = {}\n\n\
         [class A]\npo = 127.0.0.1:{a_port}\ndest = /home/work/data/a\nmasters = 127.0.0.0/8\n\n\
         [class B]\npo = 127.0.0.1:{po_port}\ndest = /home/work/data/b\nmasters = 127.0.0.0/8\n",
        d.join("cluster.key").display(),
        d.join("cac.log").display()
    );
    fs::write(d.join("cac.conf"), cac).unwrap();
    let cac = Daemon::start("wugui-cac", &d.join("cac.conf"), d.join("cac.log"));
    let (po, root) = start_po(d, &format!("0.0.0.0:{po_port}"), &cac.addr);
    // A master granted class A offers to this po, calling it class A's po.
    let mut s = TcpStream::connect(&cac.addr).unwrap();
    send(&mut s, &Msg::AuthRequest { class: "A".into() });
    let Some(Msg::AuthGrant { token, .. }) = recv(&mut s) else { panic!("no grant") };
    let mut p = TcpStream::connect(format!("127.0.0.1:{po_port}")).unwrap();
    let claimed = format!("127.0.0.1:{a_port}");
    send(&mut p, &Msg::Offer { token, po: claimed, manifest_id: [0; 16], manifest_len: 100, mode: 0 });
    match recv(&mut p) {
        Some(Msg::Denied { reason: Reason::PoNotInClass, text }) => eprintln!("refused: {text}"),
        other => panic!("a class-A master was not refused: {other:?}"),
    }
    assert!(cac.log_text().contains(&format!("po=127.0.0.1:{po_port}")), "{}", cac.log_text());
    // Its own class still reaches it through the wildcard.
    let src = d.join("src");
    seed_tree(&src);
    let conf = d.join("master.conf");
    fs::write(&conf, format!("[master]\ncac = {}\nlog = {}\n", cac.addr, d.join("master.log").display())).unwrap();
    let out = master_with(&conf, &["-c", "B", "-p", src.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(root.join("home/work/data/b/keep.dat").exists());
    assert!(!root.join("home/work/data/a").exists());
    drop(po);
}

/// A tree of `files` files of 1 KiB at the top, told apart by `tag` (their mtime).
fn tree(files: usize, tag: i64) -> Manifest {
    let f = |i: usize| Entry {
        path: format!("f{i:03}").into(),
        uid: 0,
        gid: 0,
        kind: Kind::File { size: 1024 },
        mode: 0o644,
        mtime: 1_600_000_000 + tag,
        mtime_nsec: 0,
        sparse: None,
    };
    Manifest::new(4096, (0..files).map(f).collect()).unwrap()
}

/// A master on host `n` (`connect_from`: one address holds at most `cac::MAX_PER_MASTER` live
/// grants) that is granted base1, offers `m` to the po, sends every block but the last, and
/// vanishes. Returns the transfer.
fn abandon(c: &Cluster, n: usize, m: &Manifest) -> u64 {
    let mut s = connect_from(n, &c.cac.addr);
    send(&mut s, &Msg::AuthRequest { class: "base1".into() });
    let Some(Msg::AuthGrant { token, .. }) = recv(&mut s) else { panic!("no grant") };
    let transfer = Token::decode(&token).unwrap().transfer;
    let mut p = connect_from(n, &c.pos[0].addr);
    let bytes = m.encode();
    let (manifest_id, manifest_len) = (Manifest::id_of(&bytes), bytes.len() as u64);
    send(&mut p, &Msg::Offer { token, po: String::new(), manifest_id, manifest_len, mode: 0 });
    assert_eq!(recv(&mut p), Some(Msg::Verified { transfer }));
    send(&mut p, &Msg::Manifest { transfer, manifest: bytes.into() });
    assert!(matches!(recv(&mut p), Some(Msg::Accept { .. })));
    for index in 0..m.blocks() - 1 {
        let data = vec![index as u8; m.block(index).unwrap().len as usize];
        let head = BlockHead { transfer, index, sum: Sum::of(Verify::Md5, &data) };
        send(&mut p, &Msg::Block { head, data: Payload::from_vec(data) });
        assert!(matches!(recv(&mut p), Some(Msg::Have { .. })), "block {index}");
    }
    transfer
}

#[test]
fn abandoned_transfers_let_go_of_their_descriptors() {
    let opts = Opts { pos: 1, po_extra: vec!["release_after = 3".into()], ..Default::default() };
    let c = Cluster::start("bounds-fds", opts);
    let pid = c.pos[0].child.id();
    let before = open_fds(pid);
    // 40 files a transfer: each keeps its 32 most recent staged files open while it is fed.
    for i in 0..20 {
        abandon(&c, i as usize, &tree(40, i));
    }
    let fed = open_fds(pid);
    wait_for("20 releases", Duration::from_secs(30), || {
        c.pos[0].log_text().matches("event=transfer_released").count() == 20
    });
    // Closed connections linger a second after our FIN.
    std::thread::sleep(Duration::from_millis(1500));
    let after = open_fds(pid);
    eprintln!(
        "po descriptors: {before} at start, {fed} with 20 abandoned transfers, {after} after the grace ({:.1} per abandoned transfer)",
        (after - before) as f64 / 20.0
    );
    assert!(after <= before + 20 * 2 + 8, "{after} descriptors open after the grace (started with {before})");
    // The next push goes through.
    let src = c.seeded_src();
    let out = c.push(&src);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

/// Grants of base1, each on a connection closed at once and from a master address of its own
/// (one address holds at most `cac::MAX_PER_MASTER`), until `n` are live in the CAC's table
/// (they expire only after `cac::SILENT`).
fn fill_cac_table(cac: &str, n: usize) {
    let (mut granted, end) = (0, Instant::now() + Duration::from_secs(60));
    while granted < n {
        assert!(Instant::now() < end, "only {granted} grants in 60 s");
        let mut s = connect_from(granted, cac);
        send(&mut s, &Msg::AuthRequest { class: "base1".into() });
        match recv(&mut s) {
            Some(Msg::AuthGrant { .. }) => granted += 1,
            // The CAC has not yet seen the last grant's connection close (one push at a time).
            Some(Msg::Denied { reason: Reason::Busy, .. }) => std::thread::sleep(Duration::from_millis(5)),
            other => panic!("grant {granted}: {other:?}"),
        }
    }
}

/// The size of one STAT_REPLY from `addr`, in bytes on the wire.
fn stat_reply_len(addr: &str) -> usize {
    let mut s = TcpStream::connect(addr).unwrap();
    send(&mut s, &Msg::StatQuery);
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut head = [0u8; wire::HEADER_LEN];
    s.read_exact(&mut head).unwrap();
    let h = wire::parse_header(&head).unwrap().unwrap();
    assert_eq!(h.ty, wire::MsgType::StatReply);
    wire::HEADER_LEN + h.len as usize
}

/// Pipelines `n` STAT_QUERY frames to the daemon `pid` at `addr` and reads nothing for `hold`.
/// Returns the frames that went out and the daemon's VmHWM before and after, in KiB.
fn stat_flood(addr: &str, pid: u32, n: usize, hold: Duration) -> (usize, u64, u64) {
    let hwm0 = status_kib(pid, "VmHWM");
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_write_timeout(Some(hold)).unwrap();
    let frame = Msg::StatQuery.to_frame();
    let frames = frame.repeat(n);
    let mut sent = 0;
    // A daemon that pauses reading fills the socket's buffers, and the write times out.
    while sent < frames.len() {
        match s.write(&frames[sent..]) {
            Ok(k) if k > 0 => sent += k,
            _ => break,
        }
    }
    std::thread::sleep(hold);
    let hwm1 = status_kib(pid, "VmHWM");
    drop(s);
    (sent / frame.len(), hwm0, hwm1)
}

/// `wugui-stat -s addr` (it bounds its own waits; `output` because a big table overfills a pipe).
fn wugui_stat(addr: &str) -> std::process::Output {
    std::process::Command::new(bin("wugui-stat")).args(["-s", addr]).output().unwrap()
}

#[test]
fn a_client_that_pipelines_stat_queries_and_never_reads_is_paused() {
    let c = Cluster::start("bounds-stat", Opts { pos: 1, ..Default::default() });
    fill_cac_table(&c.cac.addr, 500);
    let reply = stat_reply_len(&c.cac.addr);
    let pid = c.cac.child.id();
    let (queries, hwm0, hwm1) = stat_flood(&c.cac.addr, pid, 20_000, Duration::from_secs(4));
    eprintln!(
        "CAC: {queries} STAT_QUERY of 8 bytes asking {} MiB of {reply}-byte replies; VmHWM {hwm0} -> {hwm1} KiB (+{} MiB)",
        (queries * reply) >> 20,
        (hwm1 - hwm0) >> 10
    );
    assert!(reply > 16 << 10, "a STAT_REPLY of 500 grants is only {reply} bytes");
    assert!(hwm1 < hwm0 + (128 << 10), "the CAC grew from {hwm0} to {hwm1} KiB");
    let o = wugui_stat(&c.cac.addr);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(text(&o.stdout).lines().filter(|l| l.contains(" authorized ")).count(), 500);

    // A po's replies are small: more of them.
    let src = c.seeded_src();
    // The last grant holds base1 until the CAC sees its connection closed.
    let out = c.master(&["-c", "base1", "-p", src.to_str().unwrap(), "--wait=30"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let (addr, pid) = (&c.pos[0].addr, c.pos[0].child.id());
    let reply = stat_reply_len(addr);
    let (queries, hwm0, hwm1) = stat_flood(addr, pid, 1_000_000, Duration::from_secs(4));
    eprintln!(
        "po: {queries} STAT_QUERY asking {} MiB of {reply}-byte replies; VmHWM {hwm0} -> {hwm1} KiB (+{} MiB)",
        (queries * reply) >> 20,
        (hwm1 - hwm0) >> 10
    );
    assert!(hwm1 < hwm0 + (128 << 10), "the po grew from {hwm0} to {hwm1} KiB");
    let o = wugui_stat(addr);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(text(&o.stdout).contains("base1"), "{}", text(&o.stdout));
}

/// Review wt-r1 finding 5: an address in a class's `masters` may send the CAC bigger frames
/// before a grant (a master that lost its CAC reports on a fresh connection), but only as big
/// as the largest frame a CAC takes (a PROGRESS, `cac::MAX_FRAME`), and only of the types it
/// answers: a MANIFEST or a BLOCK is refused at its header, before any of it is buffered.
#[test]
fn a_master_address_cannot_make_the_cac_buffer_frames_it_never_takes() {
    let c = Cluster::start("bounds-cacmem", Opts { pos: 1, ..Default::default() });
    let pid = c.cac.child.id();
    let before = status_kib(pid, "VmRSS");
    // Four connections each declare a 200 MiB MANIFEST and send what the CAC lets them.
    let mut cut = 0;
    let mut conns = Vec::new();
    let chunk = vec![0u8; 1 << 20];
    for (ty, len) in [(wire::MsgType::Manifest, 200 << 20), (wire::MsgType::Block, 60 << 20)] {
        for _ in 0..2 {
            let mut s = TcpStream::connect(&c.cac.addr).unwrap();
            s.write_all(&header(ty, len)).unwrap();
            s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut sent = 0;
            for _ in 0..64 {
                match s.write(&chunk) {
                    Ok(k) if k > 0 => sent += k,
                    _ => break,
                }
            }
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            // Cut off: the read sees the end (or a reset), never a frame.
            if matches!(s.read(&mut [0u8; 64]), Ok(0) | Err(_)) {
                cut += 1;
            }
            eprintln!("{ty:?} of {len} bytes: {sent} bytes of payload taken");
            conns.push(s);
        }
    }
    // What a master address may send: a PROGRESS up to the control limit, four of them held
    // one byte short of complete.
    let mut progress = Vec::new();
    for _ in 0..4 {
        let mut s = TcpStream::connect(&c.cac.addr).unwrap();
        s.write_all(&header(wire::MsgType::Progress, wire::MAX_CONTROL)).unwrap();
        s.write_all(&vec![0u8; wire::MAX_CONTROL as usize - 1]).unwrap();
        progress.push(s);
    }
    std::thread::sleep(Duration::from_millis(500));
    let after = status_kib(pid, "VmRSS");
    eprintln!(
        "CAC VmRSS {before} -> {after} KiB: 2 MANIFEST and 2 BLOCK frames of up to 200 MiB refused, 4 PROGRESS frames of 4 MiB held"
    );
    drop(conns);
    drop(progress);
    assert_eq!(cut, 4, "every MANIFEST and BLOCK connection is closed");
    assert!(after < before + (32 << 10), "the CAC grew by {} MiB", (after - before) >> 10);
    let log = c.cac.log_text();
    assert!(log.contains("a Manifest frame: this process takes none"), "{log}");
    assert!(log.contains("a Block frame: this process takes none"), "{log}");
    // The CAC still serves.
    let src = c.seeded_src();
    let o = c.push(&src);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
}
