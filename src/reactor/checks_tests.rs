//! Blocks checked on the worker pool: every verdict comes back to the machine, and the reactor
//! stops reading while `CHECK_PAUSE` bytes wait for a check.

use super::checks::CHECK_PAUSE;
use super::*;
use crate::proto::{Action, BlockHead, Check, Payload, Sum, Verdict, Verify};
use std::io::Write;
use std::net::TcpStream as StdStream;

const BLOCK: usize = 1 << 20;
const BLOCKS: u64 = 96;

/// Checks every block it gets (MD5), and counts what is out for checking at most.
#[derive(Default)]
struct Checker {
    out: VecDeque<Action>,
    checking: usize,
    most: usize,
    good: u64,
    bad: u64,
}

impl Machine for Checker {
    fn handle_event(&mut self, _now: Instant, ev: Event) {
        match ev {
            Event::Accepted { conn, .. } => {
                self.out.push_back(Action::FrameLimit { conn, max: crate::proto::wire::NO_FRAME_LIMIT })
            }
            Event::Frame { msg: Msg::Block { head, data }, .. } => {
                let want = head.sum;
                let (transfer, id) = (head.transfer, head.index);
                self.checking += 1;
                self.most = self.most.max(self.checking);
                self.out.push_back(Action::Verify(Check { transfer, id, kind: Verify::Md5, want, data }));
            }
            Event::Verified { verdict, .. } => {
                self.checking -= 1;
                match verdict {
                    Verdict::Good(data) => self.good += (data.len() == BLOCK) as u64,
                    _ => self.bad += 1,
                }
            }
            _ => {}
        }
    }
    fn poll_action(&mut self) -> Option<Action> {
        self.out.pop_front()
    }
    fn is_finished(&self) -> bool {
        self.good + self.bad == BLOCKS
    }
}

#[test]
fn checks_run_on_the_workers_and_reading_waits_for_them() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let mut m = Checker::default();
        let listeners = Listeners { peers: Some(listener), metrics: None };
        let opts = Options { workers: 1, ..Default::default() };
        run(&mut m, listeners, &opts, &[], &mut |_, _| Control::Continue).unwrap();
        m
    });
    let mut client = StdStream::connect(addr).unwrap();
    let data = crate::testutil::noise(BLOCK, 3);
    let good = Sum::of(Verify::Md5, &data);
    for i in 0..BLOCKS {
        // Every tenth block is not what its checksum says.
        let sum = if i % 10 == 9 { Sum::of(Verify::Md5, b"other") } else { good };
        let msg = Msg::Block { head: BlockHead { transfer: 1, index: i, sum }, data: Payload::from_vec(data.clone()) };
        client.write_all(&msg.to_frame()).unwrap();
    }
    let m = server.join().unwrap();
    assert_eq!((m.good, m.bad), (BLOCKS - 9, 9));
    // The frame a read turn ends in may come on top of the bound, no more.
    let bound = CHECK_PAUSE / BLOCK + 1;
    assert!(m.most <= bound, "{} blocks were out for checking at once, bound {bound}", m.most);
}
