//! The po's state machine (`PoMachine`) driven by arbitrary event sequences: connections
//! accepted (on the po's own address or another), dialled, refused, closed; offers with a real
//! token and the tree's id and length (or wrong ones); the CAC's answer (after which the po
//! says VERIFIED) and the MANIFEST that follows (right, wrong or for another transfer); swarm
//! setup (PEERS, PEER_HELLO with right or wrong proofs); blocks from the control link, the
//! master's data link and peers with right or wrong sums, indices and lengths; SUMS, CHECKSUMS,
//! PUSH, COMMIT, ABORT; frames decoded from raw bytes; a store that fails, or finds the tree
//! published already (an unchanged DONE); time passing (the po lets go of a transfer whose
//! master is gone after `release_after`); block checks (`Action::Verify`) answered at once, or
//! held and answered in any order, or lost; hooks ending.
//!
//! Frames come mostly on the connections they belong to (a CAC's answer on a connection the po
//! dialled to a CAC, a master's frames on accepted ones), and the reactor's contract holds: a
//! frame whose type or size the po did not admit there (`Action::FrameTypes`,
//! `Action::FrameLimit`) closes the connection instead.
//!
//! Properties: no panic, no endless action loop (`sim::MAX_ACTIONS`), and allocation bounded
//! (libFuzzer's `-malloc_limit_mb` / `-rss_limit_mb`, set by scripts/fuzz.sh).
#![no_main]

mod sim;

use core::net::SocketAddr;
use libfuzzer_sys::fuzz_target;
use sim::{block_data, sum_for, Bytes, Conns, MemStore, Side};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wugui::proto::auth::{link_key, Token};
use wugui::proto::msg::{PeerLink, Reason};
use wugui::proto::po::{PoMachine, PoSettings};
use wugui::proto::swarm::MASTER_PEER;
use wugui::proto::{BlockHead, ClassCfg, Close, Event, Machine, Msg, Payload, Verdict, Verify, ACCEPTED};

const TRANSFER: u64 = 7;

fn settings() -> PoSettings {
    PoSettings {
        advertise: None,
        cacs: vec!["10.0.0.1:4000".parse().unwrap(), "10.0.0.2:4000".parse().unwrap()],
        allow_dest: vec!["/data".into()],
        root: None,
        listen_port: 4100,
        release_after: Duration::from_secs(30),
        cac_timeout: Duration::from_secs(5),
        hook_dir: Some("/hooks".into()),
        max_upload_rate: 0,
        max_download_rate: 0,
    }
}

/// The class the CAC vouches for, from the first choices of the input.
fn class(b: &mut Bytes) -> ClassCfg {
    let mut c = ClassCfg::new("base1");
    let flags = b.u8();
    let set = |c: &mut ClassCfg, k: &str, v: &str| c.set(k, v).expect("a valid setting");
    set(&mut c, "dest", if flags & 0x80 == 0 { "/data/base" } else { "/elsewhere" });
    set(&mut c, "p2p", if flags & 1 == 1 { "on" } else { "off" });
    set(&mut c, "verify", ["md5", "crc32", "none", "blake3"][(flags >> 1 & 3) as usize]);
    set(&mut c, "publish", if flags & 8 == 0 { "together" } else { "each" });
    set(&mut c, "block_size", if flags & 16 == 0 { "4K" } else { "auto" });
    if flags & 32 != 0 {
        set(&mut c, "hook", "reload");
    }
    if flags & 64 != 0 {
        set(&mut c, "rate_limit", "1M");
    }
    c
}

struct World<'a> {
    b: Bytes<'a>,
    po: PoMachine<MemStore>,
    conns: Conns,
    now: Instant,
    class: ClassCfg,
    manifest: wugui::proto::Manifest,
    token: Vec<u8>,
    /// The swarm keys of this run, as the master would derive them.
    transfer_key: [u8; 32],
    me: u32,
    /// Block checks wait for a step that answers one (in any order); otherwise the worker pool
    /// answers each at once.
    hold_checks: bool,
}

impl World<'_> {
    fn event(&mut self, ev: Event) {
        sim::trace(&ev);
        self.po.handle_event(self.now, ev);
        self.po.end_turn();
    }

    /// `msg` on an open connection, mostly one on `side`.
    fn frame_on(&mut self, side: Side, msg: Msg) {
        if let Some(conn) = self.conns.pick_on(&mut self.b, side) {
            let ev = self.conns.frame_event(conn, msg);
            self.event(ev);
        }
    }

    /// A frame from a master or a peer that dialled us.
    fn frame(&mut self, msg: Msg) {
        self.frame_on(Side::Accepted, msg)
    }

    fn transfer(&mut self) -> u64 {
        self.b.mostly(TRANSFER)
    }

    fn block_msg(&mut self) -> Msg {
        let blocks = self.manifest.blocks();
        let index = self.b.block(blocks);
        let mut data = block_data(&self.manifest, index.min(blocks.saturating_sub(1)));
        match self.b.pick(8) {
            0 => data.truncate(self.b.u8() as usize),
            1 => data.extend(std::iter::repeat_n(0, self.b.u8() as usize + 1)),
            2 => {
                if let Some(x) = data.first_mut() {
                    *x ^= 0xff
                }
            }
            _ => {}
        }
        let kind = if self.b.bool() { self.class.verify } else { Verify::Blake3 };
        let sum = sum_for(kind, &data, self.b.u8() < 200);
        let transfer = self.transfer();
        Msg::Block { head: BlockHead { transfer, index, sum }, data: Payload::from_vec(data) }
    }

    fn peers_msg(&mut self) -> Msg {
        self.me = self.b.index(4);
        let me = self.me;
        let mut links = Vec::new();
        for _ in 0..self.b.pick(4) {
            let idx = self.b.index(4);
            let addr = match self.b.pick(3) {
                0 => String::new(),
                1 => format!("10.0.2.{}:5000", idx % 250),
                _ => "not an address".into(),
            };
            links.push(PeerLink { idx, addr, key: link_key(&self.transfer_key, me, idx) });
        }
        let master_key = link_key(&self.transfer_key, me, MASTER_PEER);
        Msg::Peers { transfer: self.transfer(), me, master_key, links }
    }

    fn hello_msg(&mut self) -> Msg {
        let who = if self.b.bool() { MASTER_PEER } else { self.b.index(4) };
        let proof = if self.b.u8() < 170 { link_key(&self.transfer_key, self.me, who) } else { [self.b.u8(); 32] };
        let token = if self.b.u8() < 230 { self.token.clone() } else { self.b.take(64) };
        Msg::PeerHello { token, me: who, proof }
    }

    fn sums_msg(&mut self) -> Msg {
        let blocks = self.manifest.blocks();
        let kind = if self.b.bool() { self.class.block_check() } else { self.class.verify };
        let sums = (0..self.b.pick(6))
            .map(|_| {
                let i = self.b.block(blocks);
                let right = self.b.u8() < 220;
                (i, sum_for(kind, &block_data(&self.manifest, i.min(blocks.saturating_sub(1))), right))
            })
            .collect();
        Msg::Sums { transfer: self.transfer(), sums }
    }

    fn check_sums_msg(&mut self) -> Msg {
        let blocks = self.manifest.blocks();
        let sums = (0..self.b.pick(6))
            .map(|_| {
                let i = self.b.block(blocks);
                let mut d =
                    wugui::proto::checksum::digest(&block_data(&self.manifest, i.min(blocks.saturating_sub(1))));
                if self.b.u8() > 220 {
                    d[0] ^= 1;
                }
                (i, d)
            })
            .collect();
        Msg::CheckSums { transfer: self.transfer(), sums }
    }

    fn step(&mut self) {
        match self.b.pick(16) {
            0 => {
                self.conns.next_accept += 1;
                let conn = ACCEPTED | self.conns.next_accept;
                let peer = SocketAddr::from(([10, 0, 1, self.b.u8()], 40000));
                // The address the peer reached: the po's own, the same as an IPv4-mapped IPv6
                // one, or another.
                let local = match self.b.pick(8) {
                    0 => SocketAddr::from(([0, 0, 0, 0, 0, 0xffff, 0x0a00, 9], 4100)),
                    1 => SocketAddr::from(([10, 0, 0, self.b.u8()], 4100)),
                    _ => SocketAddr::from(([10, 0, 0, 9], 4100)),
                };
                self.conns.open.push(conn);
                self.event(Event::Accepted { conn, peer, local });
            }
            1 => {
                if let Some(conn) = self.conns.pick_dialling(&mut self.b) {
                    if self.b.u8() < 224 {
                        self.conns.open.push(conn);
                        self.event(Event::Connected { conn });
                    } else {
                        self.conns.forget(conn);
                        self.event(Event::Closed { conn, reason: Close::Connect("refused".into()) });
                    }
                }
            }
            2 => {
                if let Some(conn) = self.conns.pick_any(&mut self.b) {
                    self.conns.forget(conn);
                    let reason = self.b.close();
                    self.event(Event::Closed { conn, reason });
                }
            }
            3 => {
                let token = if self.b.u8() < 230 { self.token.clone() } else { self.b.take(64) };
                let manifest_id = if self.b.u8() < 240 { self.manifest.id() } else { [self.b.u8(); 16] };
                let manifest_len = match self.b.u8() {
                    0..=239 => self.manifest.encode().len() as u64,
                    240..=247 => self.b.u64(),
                    _ => u64::MAX - self.b.u8() as u64,
                };
                self.frame(Msg::Offer { token, po: "10.0.0.9:4100".into(), manifest_id, manifest_len, mode: 0 });
            }
            4 => {
                let transfer = self.transfer();
                let mut class = self.class.to_pairs();
                if self.b.u8() > 240 {
                    class.push(("verify".into(), "sha1".into()));
                }
                self.frame_on(Side::Cac, Msg::VerifyOk { transfer, class_name: "base1".into(), class });
            }
            5 => {
                let reason = Reason::from_u16(self.b.u8() as u16 % 15).unwrap_or(Reason::Refused);
                self.frame_on(Side::Cac, Msg::Denied { reason, text: "no".into() });
            }
            6 => {
                let m = self.peers_msg();
                self.frame(m)
            }
            7 => {
                let m = self.hello_msg();
                self.frame(m)
            }
            8 => {
                // The manifest the po asked for with VERIFIED: the announced one, another
                // encoding of bytes from the input, or for another transfer.
                let transfer = self.transfer();
                let manifest = if self.b.u8() < 240 { self.manifest.encode() } else { self.b.take(255) };
                self.frame(Msg::Manifest { transfer, manifest: Arc::new(manifest) })
            }
            9 => {
                let m = self.block_msg();
                // Blocks come on the control link, the master's data link, or from a peer
                // either side dialled.
                let side = if self.b.u8() < 200 { Side::Accepted } else { Side::Dialled };
                self.frame_on(side, m)
            }
            10 => {
                let m = self.sums_msg();
                self.frame(m)
            }
            11 => {
                let m = self.check_sums_msg();
                self.frame(m)
            }
            12 => {
                let (transfer, block, to) = (self.transfer(), self.b.block(self.manifest.blocks()), self.b.index(4));
                self.frame(Msg::Push { transfer, block, to })
            }
            13 => {
                let transfer = self.transfer();
                let m = match self.b.pick(5) {
                    0 => Msg::Commit { transfer },
                    1 => Msg::Abort { transfer, reason: "fuzz".into() },
                    2 => Msg::StatQuery,
                    3 => Msg::Ping,
                    _ => Msg::Ready { transfer },
                };
                self.frame(m)
            }
            14 => {
                if let Some(m) = self.b.raw_msg() {
                    if let Some(conn) = self.conns.pick_open(&mut self.b) {
                        let ev = self.conns.frame_event(conn, m);
                        self.event(ev);
                    }
                }
            }
            _ => match self.b.pick(7) {
                0 => {
                    if !self.conns.hooks.is_empty() {
                        let id = self.conns.hooks.remove(0);
                        let exit = self.b.u8() as i8 as i32;
                        self.event(Event::HookDone { id, exit, tail: "ok\n".into() });
                    }
                }
                1 => self.po.store_mut().fail = !self.po.store().fail,
                2 => self.po.store_mut().unchanged = !self.po.store().unchanged,
                5 => self.hold_checks = !self.hold_checks,
                6 => {
                    // A worker answers one held check: its verdict, or lost (the worker died).
                    if !self.conns.checks.is_empty() {
                        let c = self.conns.checks.remove(self.b.pick(self.conns.checks.len()));
                        let ev = if self.b.u8() < 240 {
                            c.run()
                        } else {
                            let verdict = Verdict::Lost("worker panicked".into());
                            Event::Verified { transfer: c.transfer, id: c.id, verdict }
                        };
                        self.event(ev);
                    }
                }
                _ => {
                    self.now += self.b.step();
                    if self.po.poll_timeout().is_some_and(|t| t <= self.now) {
                        self.po.handle_timeout(self.now);
                    }
                }
            },
        }
        self.settle();
    }

    /// Takes the machine's actions; a deadline that has come is handled at once, as the reactor
    /// does (a few rounds: a machine may set a deadline of now again).
    fn settle(&mut self) {
        for _ in 0..4 {
            let po = &mut self.po;
            self.conns.absorb(|| po.poll_action());
            while !self.hold_checks && !self.conns.checks.is_empty() {
                let ev = self.conns.checks.remove(0).run();
                self.event(ev);
                let po = &mut self.po;
                self.conns.absorb(|| po.poll_action());
            }
            if !self.po.poll_timeout().is_some_and(|t| t <= self.now) || self.po.is_finished() {
                break;
            }
            self.po.handle_timeout(self.now);
        }
        let po = &mut self.po;
        self.conns.absorb(|| po.poll_action());
    }
}

fuzz_target!(|data: &[u8]| {
    sim::log_if_asked();
    let mut b = Bytes(data);
    let class = class(&mut b);
    let manifest = sim::manifest(&mut b);
    let token = Token::issue(b"cluster", TRANSFER, "base1", [10, 0, 0, 9].into(), 1 << 40, [1; 16]).encode();
    let transfer_key = [b.u8(); 32];
    let now = Instant::now();
    let mut po = PoMachine::new(settings(), MemStore::default());
    let mut conns = Conns::default();
    conns.absorb(|| po.poll_action());
    let mut w = World { b, po, conns, now, class, manifest, token, transfer_key, me: 0, hold_checks: false };
    w.settle();
    let mut steps = 0;
    while !w.b.done() && steps < 4096 {
        w.step();
        steps += 1;
    }
    let _ = w.po.stats();
});
