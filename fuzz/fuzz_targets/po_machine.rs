//! The po's state machine (`PoMachine`) driven by arbitrary event sequences: connections
//! accepted, dialled, closed; offers with a real token and tree; the CAC's answer; swarm
//! setup (PEERS, PEER_HELLO with right or wrong proofs); blocks from the control link, the
//! master's data link and peers with right or wrong sums, indices and lengths; SUMS, CHECKSUMS,
//! PUSH, COMMIT, ABORT; frames decoded from raw bytes; time passing; hooks ending.
//!
//! Properties: no panic, no endless action loop (`sim::MAX_ACTIONS`), and allocation bounded
//! (libFuzzer's `-malloc_limit_mb` / `-rss_limit_mb`, set by scripts/fuzz.sh).
#![no_main]

mod sim;

use core::net::SocketAddr;
use libfuzzer_sys::fuzz_target;
use sim::{block_data, sum_for, Bytes, Conns, MemStore};
use std::time::{Duration, Instant};
use wugui::proto::auth::{link_key, Token};
use wugui::proto::msg::{PeerLink, Reason};
use wugui::proto::po::{PoMachine, PoSettings};
use wugui::proto::swarm::MASTER_PEER;
use wugui::proto::{BlockHead, ClassCfg, Event, Machine, Msg, Payload, Verify, ACCEPTED};

const TRANSFER: u64 = 7;

fn settings() -> PoSettings {
    PoSettings {
        advertise: None,
        cacs: vec!["10.0.0.1:4000".parse().unwrap(), "10.0.0.2:4000".parse().unwrap()],
        allow_dest: vec!["/data".into()],
        root: None,
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
}

impl World<'_> {
    fn event(&mut self, ev: Event) {
        self.po.handle_event(self.now, ev);
    }

    fn frame(&mut self, msg: Msg) {
        if let Some(conn) = self.conns.pick_open(&mut self.b) {
            self.event(Event::Frame { conn, msg });
        }
    }

    fn transfer(&mut self) -> u64 {
        if self.b.u8() < 240 {
            TRANSFER
        } else {
            self.b.u64()
        }
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
                self.conns.open.push(conn);
                self.event(Event::Accepted { conn, peer });
            }
            1 => {
                if let Some(conn) = self.conns.pick_dialling(&mut self.b) {
                    self.conns.open.push(conn);
                    self.event(Event::Connected { conn });
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
                let manifest = if self.b.u8() < 240 { self.manifest.encode() } else { self.b.take(255) };
                self.frame(Msg::Offer { token, po: "10.0.0.9:4100".into(), manifest: manifest.into() });
            }
            4 => {
                let transfer = self.transfer();
                let mut class = self.class.to_pairs();
                if self.b.u8() > 240 {
                    class.push(("verify".into(), "sha1".into()));
                }
                self.frame(Msg::VerifyOk { transfer, class_name: "base1".into(), class });
            }
            5 => {
                let reason = Reason::from_u16(self.b.u8() as u16 % 15).unwrap_or(Reason::Refused);
                self.frame(Msg::Denied { reason, text: "no".into() });
            }
            6 => {
                let m = self.peers_msg();
                self.frame(m)
            }
            7 => {
                let m = self.hello_msg();
                self.frame(m)
            }
            8 | 9 => {
                let m = self.block_msg();
                self.frame(m)
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
                    self.frame(m)
                }
            }
            _ => match self.b.pick(4) {
                0 => {
                    if !self.conns.hooks.is_empty() {
                        let id = self.conns.hooks.remove(0);
                        let exit = self.b.u8() as i8 as i32;
                        self.event(Event::HookDone { id, exit, tail: "ok\n".into() });
                    }
                }
                1 => self.po.store_mut().fail = !self.po.store().fail,
                _ => {
                    self.now += self.b.step();
                    if self.po.poll_timeout().is_some_and(|t| t <= self.now) {
                        self.po.handle_timeout(self.now);
                    }
                }
            },
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
    let mut w = World { b, po, conns, now, class, manifest, token, transfer_key, me: 0 };
    let mut steps = 0;
    while !w.b.done() && steps < 4096 {
        w.step();
        steps += 1;
    }
    let _ = w.po.stats();
});
