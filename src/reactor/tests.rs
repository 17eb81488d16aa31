//! The reactor over real sockets on 127.0.0.1. Timing assertions are loose lower bounds only.

use super::*;
use crate::proto::msg::block_frame_head;
use crate::proto::wire::NO_FRAME_LIMIT;
use crate::proto::{Action, BlockHead, Body, Sum};
use crate::testutil::TempDir;
use std::fs::File;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::net::TcpStream as StdStream;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::thread::JoinHandle;

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed ^ (i >> 9) as u8)).collect()
}

/// A file holding `data`, open for reading; it goes with the directory.
fn temp_file(name: &str, data: &[u8]) -> (TempDir, Arc<OwnedFd>) {
    let dir = TempDir::new(&format!("reactor-{name}"));
    std::fs::write(dir.join("data"), data).unwrap();
    let f = File::open(dir.join("data")).unwrap();
    (dir, Arc::new(OwnedFd::from(f)))
}

fn head(index: u64) -> BlockHead {
    BlockHead { transfer: 42, index, sum: Sum::Crc32(index as u32) }
}

fn listen() -> (std::net::TcpListener, SocketAddr) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let a = l.local_addr().unwrap();
    (l, a)
}

fn spawn<M: Machine + Send + 'static>(mut m: M, listener: Option<std::net::TcpListener>) -> JoinHandle<M> {
    std::thread::spawn(move || {
        let listeners = Listeners { peers: listener, metrics: None };
        run(&mut m, listeners, &Options::default(), &[], &mut |_, _| Control::Continue).unwrap();
        m
    })
}

/// Every frame in `bytes`, which must end on a frame boundary.
fn frames(bytes: &[u8]) -> Vec<Msg> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        let (m, n) = Msg::from_frame(&bytes[pos..]).unwrap().expect("whole frame");
        out.push(m);
        pos += n;
    }
    out
}

fn block_data(m: &Msg) -> (BlockHead, Vec<u8>) {
    match m {
        Msg::Block { head, data } => (*head, data.bytes().to_vec()),
        other => panic!("expected a block, got {other:?}"),
    }
}

/// A machine that plays back a script of actions, and records what it is told.
#[derive(Default)]
struct Script {
    /// Actions queued when a connection is accepted or connected.
    on_open: Vec<Action>,
    /// Sent back for every frame (echo).
    echo: bool,
    actions: VecDeque<Action>,
    events: Vec<(Instant, Event)>,
    finish_after_open: bool,
    finish_after_closed: usize,
    /// Finish once this many hooks reported.
    finish_after_hooks: usize,
    finished: bool,
    /// For clients: finish once this many frames arrived (and close `client_conn`).
    want_frames: usize,
    client_conn: Option<ConnId>,
    /// What `stats` reports.
    stats: crate::proto::Stats,
    /// Accepted connections keep the pre-auth frame limit (by default the script trusts them
    /// at once) ...
    preauth: bool,
    /// ... until their first frame.
    vouch_on_frame: bool,
}

impl Script {
    fn frames(&self) -> Vec<&Msg> {
        self.events
            .iter()
            .filter_map(|(_, e)| if let Event::Frame { msg, .. } = e { Some(msg) } else { None })
            .collect()
    }
    fn closed(&self) -> Vec<(ConnId, Close)> {
        self.events
            .iter()
            .filter_map(
                |(_, e)| if let Event::Closed { conn, reason } = e { Some((*conn, reason.clone())) } else { None },
            )
            .collect()
    }
    fn hooks(&self) -> Vec<(u64, i32, String)> {
        self.events
            .iter()
            .filter_map(|(_, e)| match e {
                Event::HookDone { id, exit, tail } => Some((*id, *exit, tail.clone())),
                _ => None,
            })
            .collect()
    }
}

fn retarget(a: &Action, conn: ConnId) -> Action {
    match a {
        Action::Send { msg, .. } => Action::Send { conn, msg: msg.clone() },
        Action::SendBlock { head, body, .. } => Action::SendBlock { conn, head: *head, body: body.clone() },
        Action::Close { .. } => Action::Close { conn },
        Action::Abandon { last, .. } => Action::Abandon { conn, last: last.clone() },
        Action::Connect { addr, .. } => Action::Connect { conn, addr: *addr },
        Action::SetRates { upload, download } => Action::SetRates { upload: *upload, download: *download },
        Action::FrameLimit { max, .. } => Action::FrameLimit { conn, max: *max },
        Action::FrameTypes { types, .. } => Action::FrameTypes { conn, types: *types },
        Action::ShortQueue { .. } => Action::ShortQueue { conn },
        Action::RunHook { .. } | Action::Verify(_) | Action::Disk(_) => {
            unreachable!("scripts run no hooks, check no blocks and have no disk jobs")
        }
    }
}

impl Machine for Script {
    fn handle_event(&mut self, now: Instant, ev: Event) {
        match &ev {
            Event::Accepted { conn, .. } | Event::Connected { conn } => {
                if !self.preauth {
                    self.actions.push_back(Action::FrameLimit { conn: *conn, max: NO_FRAME_LIMIT });
                }
                for a in &self.on_open {
                    self.actions.push_back(retarget(a, *conn));
                }
                if self.finish_after_open {
                    self.finished = true;
                }
            }
            Event::Frame { conn, msg } => {
                if self.vouch_on_frame {
                    self.actions.push_back(Action::FrameLimit { conn: *conn, max: NO_FRAME_LIMIT });
                }
                if self.echo {
                    let a = match msg {
                        Msg::Block { head, data } => Action::SendBlock {
                            conn: *conn,
                            head: *head,
                            body: Body::Bytes(Arc::new(data.bytes().to_vec())),
                        },
                        m => Action::Send { conn: *conn, msg: m.clone() },
                    };
                    self.actions.push_back(a);
                }
            }
            Event::Closed { .. } | Event::HookDone { .. } | Event::Verified { .. } | Event::DiskDone { .. } => {}
        }
        self.events.push((now, ev));
        if self.finish_after_closed > 0 && self.closed().len() >= self.finish_after_closed {
            self.finished = true;
        }
        if self.finish_after_hooks > 0 && self.hooks().len() >= self.finish_after_hooks {
            self.finished = true;
        }
        if self.want_frames > 0 && self.frames().len() >= self.want_frames {
            if let Some(c) = self.client_conn {
                self.actions.push_back(Action::Close { conn: c });
            }
            self.finished = true;
        }
    }
    fn handle_timeout(&mut self, _now: Instant) {}
    fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }
    fn poll_timeout(&self) -> Option<Instant> {
        None
    }
    fn is_finished(&self) -> bool {
        self.finished
    }
    fn stats(&self) -> crate::proto::Stats {
        self.stats
    }
}

/// The frames `script` sends, with the data of `file` (`data`).
fn block_script(file: &Arc<OwnedFd>) -> Vec<Action> {
    let bytes = Arc::new(pattern(100_000, 9));
    vec![
        Action::Send { conn: 0, msg: Msg::Ping },
        Action::Send { conn: 0, msg: Msg::Ping },
        Action::SendBlock {
            conn: 0,
            head: head(1),
            body: Body::File { file: file.clone(), offset: 5, len: 300_000, sendfile: true },
        },
        Action::Send { conn: 0, msg: Msg::Ping },
        Action::SendBlock {
            conn: 0,
            head: head(2),
            body: Body::File { file: file.clone(), offset: 1000, len: 2 << 20, sendfile: false },
        },
        Action::SendBlock { conn: 0, head: head(3), body: Body::Bytes(bytes) },
        Action::Send { conn: 0, msg: Msg::Commit { transfer: 42 } },
    ]
}

fn check_block_frames(got: &[&Msg], data: &[u8]) {
    assert_eq!(got.len(), 7, "frames: {}", got.len());
    assert_eq!(*got[0], Msg::Ping);
    assert_eq!(*got[1], Msg::Ping);
    assert_eq!(block_data(got[2]), (head(1), data[5..300_005].to_vec()));
    assert_eq!(*got[3], Msg::Ping);
    assert_eq!(block_data(got[4]), (head(2), data[1000..1000 + (2 << 20)].to_vec()));
    assert_eq!(block_data(got[5]), (head(3), pattern(100_000, 9)));
    assert_eq!(*got[6], Msg::Commit { transfer: 42 });
}

#[test]
fn sends_exact_frames_to_a_blocking_client() {
    let data = pattern(3 << 20, 1);
    let (_dir, file) = temp_file("exact", &data);
    let (l, addr) = listen();
    let mut script = Script { on_open: block_script(&file), finish_after_open: true, ..Default::default() };
    script.on_open.push(Action::Close { conn: 0 });
    let server = spawn(script, Some(l));
    let mut s = StdStream::connect(addr).unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    let msgs = frames(&got);
    check_block_frames(&msgs.iter().collect::<Vec<_>>(), &data);
    let m = server.join().unwrap();
    assert!(matches!(m.events[0].1, Event::Accepted { conn, .. } if conn & ACCEPTED != 0));
}

#[test]
fn echo_between_two_reactors() {
    let data = pattern(3 << 20, 2);
    let (_dir, file) = temp_file("echo", &data);
    let (l, addr) = listen();
    let server = spawn(Script { echo: true, finish_after_closed: 1, ..Default::default() }, Some(l));
    let client = Script {
        on_open: block_script(&file),
        actions: VecDeque::from([Action::Connect { conn: 7, addr }]),
        want_frames: 7,
        client_conn: Some(7),
        ..Default::default()
    };
    let client = spawn(client, None);
    let c = client.join().unwrap();
    assert!(matches!(c.events[0].1, Event::Connected { conn: 7 }));
    check_block_frames(&c.frames(), &data);
    assert!(c.closed().is_empty(), "no event after our own close");
    let s = server.join().unwrap();
    check_block_frames(&s.frames(), &data);
    assert_eq!(s.closed().len(), 1);
    assert_eq!(s.closed()[0].1, Close::Eof, "clean EOF");
}

/// Ten clients that connect to the metrics port and say nothing neither delay a scrape nor
/// stay forever.
#[test]
fn idle_metrics_clients_do_not_delay_a_scrape() {
    let (l, addr) = listen();
    let (ml, maddr) = listen();
    let stats = crate::proto::Stats { bytes_received: 42, ..Default::default() };
    let server = std::thread::spawn(move || {
        let mut m = Script { finish_after_closed: 1, stats, ..Default::default() };
        let listeners = Listeners { peers: Some(l), metrics: Some((ml, "po")) };
        run(&mut m, listeners, &Options::default(), &[], &mut |_, _| Control::Continue).unwrap();
    });
    let mut idle: Vec<StdStream> = (0..10).map(|_| StdStream::connect(maddr).unwrap()).collect();
    // One more sends half a request, and the rest later.
    let mut slow = StdStream::connect(maddr).unwrap();
    slow.write_all(b"GET /metrics HTTP/1.1\r\n").unwrap();
    let get = |path: &str| {
        let mut s = StdStream::connect(maddr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).unwrap();
        let mut r = String::new();
        s.read_to_string(&mut r).unwrap();
        r
    };
    let t = Instant::now();
    let r = get("/metrics");
    assert!(t.elapsed() < Duration::from_secs(2), "the scrape took {:?}", t.elapsed());
    assert!(r.starts_with("HTTP/1.0 200 OK\r\n"), "{r}");
    assert!(r.contains("wugui_bytes_received_total{role=\"po\"} 42\n"), "{r}");
    assert!(r.contains("wugui_rate_limit_waits_total{role=\"po\"} 0\n"), "{r}");
    assert!(get("/").starts_with("HTTP/1.0 404"));
    slow.write_all(b"Host: x\r\n\r\n").unwrap();
    let mut r = String::new();
    slow.read_to_string(&mut r).unwrap();
    assert!(r.starts_with("HTTP/1.0 200 OK\r\n"), "{r}");
    // The idle ones are dropped at their deadline.
    idle[0].set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert_eq!(idle[0].read(&mut [0u8; 16]).unwrap(), 0, "an idle client is closed");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    drop(StdStream::connect(addr).unwrap());
    server.join().unwrap();
}

#[test]
fn garbage_closes_only_its_connection() {
    let (l, addr) = listen();
    let server = spawn(Script { echo: true, finish_after_closed: 2, ..Default::default() }, Some(l));

    let mut bad = StdStream::connect(addr).unwrap();
    bad.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let mut rest = Vec::new();
    let _ = bad.read_to_end(&mut rest); // EOF (or a reset): the server dropped it.
    assert!(rest.is_empty());

    let mut good = StdStream::connect(addr).unwrap();
    let ping = Msg::Ping.to_frame();
    // Split the frame across writes, to exercise a header cut off between reads.
    good.write_all(&ping[..3]).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    good.write_all(&ping[3..]).unwrap();
    let mut back = vec![0u8; ping.len()];
    good.read_exact(&mut back).unwrap();
    assert_eq!(back, ping);
    drop(good);

    let s = server.join().unwrap();
    let closed = s.closed();
    assert_eq!(closed.len(), 2);
    assert!(closed[0].1.to_string().contains("magic"), "error: {}", closed[0].1);
    assert_eq!(closed[1].1, Close::Eof);
    assert_eq!(s.frames(), vec![&Msg::Ping]);
}

#[test]
fn mid_frame_eof_is_an_error() {
    let (l, addr) = listen();
    let server = spawn(Script { finish_after_closed: 1, ..Default::default() }, Some(l));
    let mut c = StdStream::connect(addr).unwrap();
    let f = Msg::Commit { transfer: 1 }.to_frame();
    c.write_all(&f[..f.len() - 2]).unwrap();
    drop(c);
    let s = server.join().unwrap();
    assert!(s.closed()[0].1.to_string().contains("inside a frame"), "{}", s.closed()[0].1);
}

#[test]
fn failed_connect_is_a_closed_event() {
    let (l, addr) = listen();
    drop(l);
    let c = Script {
        actions: VecDeque::from([Action::Connect { conn: 3, addr }]),
        finish_after_closed: 1,
        ..Default::default()
    };
    let c = spawn(c, None).join().unwrap();
    let closed = c.closed();
    assert_eq!(closed[0].0, 3);
    assert!(matches!(closed[0].1, Close::Connect(_)), "{:?}", closed[0].1);
}

#[test]
fn upload_rate_is_respected() {
    let (l, addr) = listen();
    let script = Script {
        actions: VecDeque::from([Action::SetRates { upload: 4 << 20, download: 0 }]),
        on_open: vec![
            Action::SendBlock { conn: 0, head: head(1), body: Body::Bytes(Arc::new(pattern(2 << 20, 3))) },
            Action::Close { conn: 0 },
        ],
        finish_after_open: true,
        ..Default::default()
    };
    let server = spawn(script, Some(l));
    let t0 = Instant::now();
    let mut s = StdStream::connect(addr).unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    let took = t0.elapsed();
    server.join().unwrap();
    let msgs = frames(&got);
    assert_eq!(block_data(&msgs[0]).1, pattern(2 << 20, 3));
    // 2 MiB at 4 MiB/s, less a burst of 1/20 s: about 0.45 s.
    assert!(took >= Duration::from_millis(400), "took {took:?}");
}

#[test]
fn download_rate_is_respected() {
    let (l, addr) = listen();
    let script = Script {
        actions: VecDeque::from([Action::SetRates { upload: 0, download: 4 << 20 }]),
        finish_after_closed: 1,
        ..Default::default()
    };
    let server = spawn(script, Some(l));
    let mut s = StdStream::connect(addr).unwrap();
    let mut frame = block_frame_head(&head(1), 2 << 20);
    frame.extend_from_slice(&pattern(2 << 20, 4));
    s.write_all(&frame).unwrap();
    drop(s);
    let m = server.join().unwrap();
    let t_accept = m.events[0].0;
    let (t_frame, msg) = m
        .events
        .iter()
        .find_map(|(t, e)| if let Event::Frame { msg, .. } = e { Some((*t, msg)) } else { None })
        .unwrap();
    assert_eq!(block_data(msg).1, pattern(2 << 20, 4));
    let took = t_frame - t_accept;
    assert!(took >= Duration::from_millis(400), "took {took:?}");
}

/// Raises a signal from inside the loop (at its first timeout); the handler stops the loop.
#[test]
fn signal_stops_the_loop() {
    struct Raiser {
        at: Instant,
        fired: bool,
    }
    impl Machine for Raiser {
        fn handle_event(&mut self, _: Instant, _: Event) {}
        fn handle_timeout(&mut self, _: Instant) {
            self.fired = true;
            nix::sys::signal::raise(Signal::SIGUSR2).unwrap();
        }
        fn poll_action(&mut self) -> Option<Action> {
            None
        }
        fn poll_timeout(&self) -> Option<Instant> {
            (!self.fired).then_some(self.at)
        }
    }
    let h = std::thread::spawn(|| {
        let mut m = Raiser { at: Instant::now() + Duration::from_millis(20), fired: false };
        let mut seen = Vec::new();
        run(&mut m, Listeners::default(), &Options::default(), &[Signal::SIGUSR2], &mut |_, s| {
            seen.push(s);
            Control::Stop
        })
        .unwrap();
        assert!(m.fired);
        seen
    });
    assert_eq!(h.join().unwrap(), vec![Signal::SIGUSR2]);
}

#[test]
fn timeouts_round_up_to_a_millisecond() {
    let now = Instant::now();
    assert_eq!(timeout_until(now, now), Duration::ZERO);
    assert_eq!(timeout_until(now, now + Duration::from_micros(1)), Duration::from_millis(1));
    assert_eq!(timeout_until(now, now + Duration::from_micros(1001)), Duration::from_millis(2));
    assert_eq!(timeout_until(now + Duration::from_secs(1), now), Duration::ZERO);
}

/// A rough throughput check: `cargo test --release --lib reactor::tests::throughput -- --ignored --nocapture`.
#[test]
#[ignore]
fn throughput() {
    const BLOCK: u64 = 4 << 20;
    const BLOCKS: u64 = 128;
    let data = pattern(BLOCK as usize * 4, 5);
    let (_dir, file) = temp_file("throughput", &data);
    let (l, addr) = listen();
    let on_open = (0..BLOCKS)
        .map(|i| Action::SendBlock {
            conn: 0,
            head: head(i),
            body: Body::File { file: file.clone(), offset: (i % 4) * BLOCK, len: BLOCK, sendfile: true },
        })
        .collect();
    let server = spawn(Script { on_open, finish_after_closed: 1, ..Default::default() }, Some(l));
    let t0 = Instant::now();
    let client = Script {
        actions: VecDeque::from([Action::Connect { conn: 1, addr }]),
        want_frames: BLOCKS as usize,
        client_conn: Some(1),
        ..Default::default()
    };
    let c = spawn(client, None).join().unwrap();
    let took = t0.elapsed();
    assert_eq!(c.frames().len(), BLOCKS as usize);
    server.join().unwrap();
    eprintln!(
        "{} MiB in {took:?}: {:.0} MiB/s",
        (BLOCK * BLOCKS) >> 20,
        (BLOCK * BLOCKS) as f64 / 1048576.0 / took.as_secs_f64()
    );
}

/// The achieved upload rate against the configured one (slow: about 6.4 s).
/// `cargo test --release --lib reactor::tests::rate_accuracy -- --ignored --nocapture`.
#[test]
#[ignore]
fn rate_accuracy() {
    const RATE: u64 = 10 << 20;
    const BLOCK: u64 = 4 << 20;
    const BLOCKS: u64 = 16;
    let data = pattern(BLOCK as usize, 6);
    let (_dir, file) = temp_file("rate", &data);
    let (l, addr) = listen();
    let on_open: Vec<Action> = (0..BLOCKS)
        .map(|i| Action::SendBlock {
            conn: 0,
            head: head(i),
            body: Body::File { file: file.clone(), offset: 0, len: BLOCK, sendfile: i % 2 == 0 },
        })
        .collect();
    let script = Script {
        actions: VecDeque::from([Action::SetRates { upload: RATE, download: 0 }]),
        on_open,
        finish_after_closed: 1,
        ..Default::default()
    };
    let server = spawn(script, Some(l));
    let t0 = Instant::now();
    let mut s = StdStream::connect(addr).unwrap();
    let frame_len = block_frame_head(&head(0), BLOCK as u32).len() as u64 + BLOCK;
    let mut got = vec![0u8; (frame_len * BLOCKS) as usize];
    s.read_exact(&mut got).unwrap();
    let took = t0.elapsed().as_secs_f64();
    drop(s);
    server.join().unwrap();
    assert_eq!(frames(&got).len(), BLOCKS as usize);
    let rate = got.len() as f64 / took;
    eprintln!("{} bytes in {took:.3} s: {:.3} MiB/s (want {})", got.len(), rate / 1048576.0, RATE >> 20);
    assert!((rate - RATE as f64).abs() / (RATE as f64) < 0.03);
}

#[test]
fn hooks_run_off_the_loop_and_report_exit_and_output() {
    let dir = TempDir::new("hooks");
    std::fs::create_dir_all(dir.join("hooks")).unwrap();
    let script = |name: &str, body: &str| {
        let p = dir.join("hooks").join(name);
        std::fs::write(&p, body).unwrap();
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    };
    script("ok.sh", "#!/bin/sh\necho \"class=$WUGUI_CLASS\"\n");
    script("bad.sh", "#!/bin/sh\necho oops >&2\nexit 7\n");
    let hook = |id, name: &str| Action::RunHook {
        id,
        dir: dir.join("hooks").display().to_string(),
        name: name.into(),
        env: vec![("WUGUI_CLASS".into(), "base1".into())],
        timeout: Duration::from_secs(10),
    };
    let mut m = Script {
        actions: [hook(1, "ok.sh"), hook(2, "bad.sh"), hook(3, "../ok.sh"), hook(4, "missing")].into(),
        finish_after_hooks: 4,
        ..Default::default()
    };
    run(&mut m, Listeners::default(), &Options::default(), &[], &mut |_, _| Control::Continue).unwrap();
    let mut done = m.hooks();
    done.sort_by_key(|d| d.0);
    assert_eq!(done[0], (1, 0, "class=base1".into()));
    assert_eq!(done[1], (2, 7, "oops".into()));
    assert_eq!(done[2].1, -1, "{:?}", done[2]);
    assert_eq!(done[3].1, -1, "{:?}", done[3]);
}

#[test]
fn an_accepted_peer_is_cut_off_at_a_big_frame_header_until_vouched_for() {
    // A stranger's 64 MiB block header: cut off before anything is allocated for it.
    let (l, addr) = listen();
    let server = spawn(Script { preauth: true, finish_after_closed: 1, ..Default::default() }, Some(l));
    let mut s = StdStream::connect(addr).unwrap();
    s.write_all(&block_frame_head(&head(1), 64 << 20)).unwrap();
    let m = server.join().unwrap();
    assert!(m.frames().is_empty());
    let [(_, Close::Decode(e))] = &m.closed()[..] else { panic!("{:?}", m.closed()) };
    assert!(e.contains("over this connection's limit of 65536 bytes"), "{e}");
    // A peer the machine vouches for after its first frame may send a big one right behind it,
    // in the same read: that header waits until the machine has judged the first.
    let (l, addr) = listen();
    let script = Script { preauth: true, vouch_on_frame: true, finish_after_closed: 1, ..Default::default() };
    let server = spawn(script, Some(l));
    let mut s = StdStream::connect(addr).unwrap();
    let mut bytes = Msg::Ping.to_frame();
    bytes.extend(block_frame_head(&head(1), 2 << 20));
    bytes.extend(pattern(2 << 20, 5));
    s.write_all(&bytes).unwrap();
    drop(s);
    let m = server.join().unwrap();
    assert_eq!(m.frames().len(), 2);
    assert_eq!(block_data(m.frames()[1]), (head(1), pattern(2 << 20, 5)));
    assert_eq!(m.closed()[0].1, Close::Eof);
}
