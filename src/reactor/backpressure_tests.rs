//! A peer that asks and never reads the answers: the reactor stops reading it once its
//! out-queue holds `OUT_PAUSE`, and reads again when the queue drains.

use super::*;
use crate::proto::{Action, BlockHead, Body, Sum};
use std::io::{Read, Write};
use std::net::TcpStream as StdStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

const ANSWER: usize = 1 << 20;
const ASKS: usize = 200;

/// Answers every PING with a 1 MiB block, and counts the PINGs it has read.
struct Answerer {
    asked: Arc<AtomicUsize>,
    answer: Arc<Vec<u8>>,
    out: VecDeque<Action>,
    done: bool,
}

impl Machine for Answerer {
    fn handle_event(&mut self, _now: Instant, ev: Event) {
        match ev {
            Event::Frame { conn, msg: Msg::Ping } => {
                let n = self.asked.fetch_add(1, Ordering::SeqCst) as u64;
                let head = BlockHead { transfer: 1, index: n, sum: Sum::None };
                self.out.push_back(Action::SendBlock { conn, head, body: Body::Bytes(self.answer.clone()) });
            }
            Event::Closed { .. } => self.done = true,
            _ => {}
        }
    }
    fn poll_action(&mut self) -> Option<Action> {
        self.out.pop_front()
    }
    fn is_finished(&self) -> bool {
        self.done
    }
}

#[test]
fn a_peer_that_never_reads_costs_a_bounded_queue() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let asked = Arc::new(AtomicUsize::new(0));
    let m = Answerer { asked: asked.clone(), answer: Arc::new(vec![7; ANSWER]), out: VecDeque::new(), done: false };
    let server = std::thread::spawn(move || {
        let mut m = m;
        let listeners = Listeners { peers: Some(listener), metrics: None };
        run(&mut m, listeners, &Options::default(), &[], &mut |_, _| Control::Continue).unwrap();
    });
    let mut client = StdStream::connect(addr).unwrap();
    client.set_nodelay(true).unwrap();
    let ping = Msg::Ping.to_frame();
    for _ in 0..ASKS {
        // One request a millisecond: each arrives in a read of its own, as a real client's would.
        client.write_all(&ping).unwrap();
        std::thread::sleep(Duration::from_millis(1));
    }
    // Let the server read what it will; it must stop near OUT_PAUSE of queued answers (plus what
    // the sockets' buffers hold), far below the 200 MiB that was asked for.
    let mut last = usize::MAX;
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(100));
        let now = asked.load(Ordering::SeqCst);
        if now == last {
            break;
        }
        last = now;
    }
    let read_while_stalled = asked.load(Ordering::SeqCst);
    let bound = (OUT_PAUSE + (16 << 20)) / ANSWER;
    assert!(bound < ASKS / 2, "the test asks for far more than the bound");
    assert!(read_while_stalled <= bound, "read {read_while_stalled} requests, bound {bound}");
    // Reading the answers lets the server read the rest: every request is answered.
    let mut got = 0usize;
    let mut buf = vec![0u8; 1 << 16];
    client.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let want = ASKS * (ANSWER + block_frame_overhead());
    while got < want {
        match client.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    assert_eq!(got, want, "every request answered once reading resumed");
    assert_eq!(asked.load(Ordering::SeqCst), ASKS);
    drop(client);
    server.join().unwrap();
}

/// The bytes a block frame adds before its data.
fn block_frame_overhead() -> usize {
    let head = BlockHead { transfer: 1, index: 0, sum: Sum::None };
    crate::proto::msg::block_frame_head(&head, 0).len()
}
