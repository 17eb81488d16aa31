//! The master's state machine (`MasterMachine`) driven by arbitrary event sequences: its CAC
//! and po connections coming up, failing and closing; the CAC's grant (a class from the input,
//! p2p on or off, a few pos, sometimes a bad address; a real token, or bytes), challenge,
//! refusal, or `Busy` (with `--wait`, the master asks again later); every report a po sends
//! (VERIFIED, which the master answers with the MANIFEST, CHECK, ACCEPT with any bitmap, HAVE,
//! READY, DONE changed or unchanged, FAILED, UNSENT and BAD with any index, DENIED) on control
//! and data links; frames decoded from raw bytes; the source changing; time passing (the
//! master's PROGRESS reports to the CAC, with the grant's token, and its timeouts); a signal
//! that abandons the transfer (`MasterMachine::abort`).
//!
//! Frames come mostly on the connections they belong to (the CAC's on the connection to a
//! CAC, the pos' on the others), and a frame the reactor would not admit there
//! (`Action::FrameTypes`, `Action::FrameLimit`) closes the connection instead.
//!
//! Properties: no panic, no endless action loop (`sim::MAX_ACTIONS`), and allocation bounded
//! (libFuzzer's `-malloc_limit_mb` / `-rss_limit_mb`, set by scripts/fuzz.sh).
#![no_main]

mod sim;

use libfuzzer_sys::fuzz_target;
use sim::{Bytes, Conns, MemSource, Side};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wugui::proto::auth::Token;
use wugui::proto::master::{MasterMachine, MasterSettings};
use wugui::proto::msg::Reason;
use wugui::proto::{ClassCfg, Event, Machine, Manifest, Msg};

const TRANSFER: u64 = 9;

/// The class the CAC grants, from the first choices of the input.
fn class_pairs(b: &mut Bytes) -> Vec<(String, String)> {
    let mut c = ClassCfg::new("base1");
    let f = b.u8();
    let g = b.u8();
    let set = |c: &mut ClassCfg, k: &str, v: &str| c.set(k, v).expect("a valid setting");
    set(&mut c, "dest", "/data/base");
    set(&mut c, "p2p", if f & 1 == 1 { "on" } else { "off" });
    set(&mut c, "verify", ["md5", "crc32", "none", "blake3"][(f >> 1 & 3) as usize]);
    set(&mut c, "publish", if f & 8 == 0 { "together" } else { "each" });
    set(&mut c, "quorum", ["all", "1", "50%", "2"][(f >> 4 & 3) as usize]);
    set(&mut c, "delta", if f & 64 == 0 { "on" } else { "off" });
    set(&mut c, "retries", ["0", "1", "3"][(g % 3) as usize]);
    set(&mut c, "timeout", ["1", "60", "3600"][(g / 3 % 3) as usize]);
    set(&mut c, "peers", ["1", "2", "8"][(g / 9 % 3) as usize]);
    c.to_pairs()
}

struct World<'a> {
    b: Bytes<'a>,
    m: MasterMachine,
    conns: Conns,
    now: Instant,
    class: Vec<(String, String)>,
    pos: Vec<String>,
    manifest: Manifest,
    changed: Arc<AtomicBool>,
    /// A token as a CAC issues it, for the grant.
    token: Vec<u8>,
}

impl World<'_> {
    fn event(&mut self, ev: Event) {
        sim::trace(&ev);
        self.m.handle_event(self.now, ev);
        self.m.end_turn();
    }

    /// `msg` on an open connection, mostly one on `side`.
    fn frame_on(&mut self, side: Side, msg: Msg) {
        if let Some(conn) = self.conns.pick_on(&mut self.b, side) {
            let ev = self.conns.frame_event(conn, msg);
            self.event(ev);
        }
    }

    /// A po's frame, on its control link or the master's data link to it.
    fn frame(&mut self, msg: Msg) {
        self.frame_on(Side::Dialled, msg)
    }

    fn transfer(&mut self) -> u64 {
        self.b.mostly(TRANSFER)
    }

    fn blocks(&mut self) -> Vec<u64> {
        let nb = self.manifest.blocks();
        (0..self.b.pick(6)).map(|_| self.b.block(nb)).collect()
    }

    fn step(&mut self) {
        let n = self.pos.len() as u32 + 1;
        match self.b.pick(16) {
            0 | 1 => {
                if let Some(conn) = self.conns.pick_dialling(&mut self.b) {
                    if self.b.u8() < 200 {
                        self.conns.open.push(conn);
                        self.event(Event::Connected { conn });
                    } else {
                        let reason = self.b.close();
                        self.event(Event::Closed { conn, reason });
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
                let transfer = self.transfer();
                let token = if self.b.u8() < 200 { self.token.clone() } else { self.b.take(40) };
                let (pos, class) = (self.pos.clone(), self.class.clone());
                // Now and then a class with site labels (issue 17), so the site code runs too.
                let sites = match self.b.u8() % 4 {
                    0 => (0..pos.len()).map(|i| ["", "bj", "sh"][i % 3].to_string()).collect(),
                    _ => Vec::new(),
                };
                self.frame_on(Side::Cac, Msg::AuthGrant { transfer, token, pos, class, sites });
            }
            4 => {
                let m = match self.b.pick(4) {
                    0 => Msg::AuthChallenge { nonce: [self.b.u8(); 32] },
                    1 => Msg::Ping,
                    // Another push of the class runs.
                    2 => Msg::Denied { reason: Reason::Busy, text: "busy".into() },
                    _ => {
                        let reason = Reason::from_u16(self.b.u8() as u16 % 15).unwrap_or(Reason::Refused);
                        Msg::Denied { reason, text: "no".into() }
                    }
                };
                // Mostly the CAC's word; a po says DENIED too.
                let side = if self.b.u8() < 200 { Side::Cac } else { Side::Dialled };
                self.frame_on(side, m)
            }
            5 => {
                let transfer = self.transfer();
                if self.b.bool() {
                    // The CAC vouched for the token to the po: the master sends the manifest.
                    self.frame(Msg::Verified { transfer })
                } else {
                    let blocks = self.blocks();
                    self.frame(Msg::Check { transfer, blocks })
                }
            }
            6 | 7 => {
                let transfer = self.transfer();
                let have = match self.b.pick(3) {
                    0 => Vec::new(),
                    1 => vec![0xff; (self.manifest.blocks() as usize).div_ceil(8)],
                    _ => self.b.take(16),
                };
                self.frame(Msg::Accept { transfer, have })
            }
            8 | 9 => {
                let (transfer, blocks) = (self.transfer(), self.blocks());
                self.frame(Msg::Have { transfer, blocks })
            }
            10 => {
                let transfer = self.transfer();
                let m = match self.b.pick(3) {
                    0 => Msg::Ready { transfer },
                    1 => Msg::Done {
                        transfer,
                        files: 1,
                        bytes: 2,
                        hook_exit: Some(self.b.u8() as i32),
                        hook_tail: "t".into(),
                        unchanged: self.b.bool(),
                    },
                    _ => Msg::Failed { transfer, error: "fuzz".into() },
                };
                self.frame(m)
            }
            11 => {
                let (transfer, block, to) = (self.transfer(), self.b.block(self.manifest.blocks()), self.b.index(n));
                self.frame(Msg::Unsent { transfer, block, to, why: "fuzz".into() })
            }
            12 => {
                let (transfer, block, from) = (self.transfer(), self.b.block(self.manifest.blocks()), self.b.index(n));
                self.frame(Msg::Bad { transfer, block, from })
            }
            13 => {
                if let Some(m) = self.b.raw_msg() {
                    self.frame(m)
                }
            }
            14 => match self.b.u8() {
                241.. => {
                    self.changed.fetch_xor(true, Ordering::Relaxed);
                }
                // SIGINT: every po not published yet is abandoned with an ABORT.
                224..=240 => self.m.abort(self.now, "interrupted"),
                _ => {}
            },
            _ => {
                self.now += self.b.step();
                if self.m.poll_timeout().is_some_and(|t| t <= self.now) {
                    self.m.handle_timeout(self.now);
                }
            }
        }
        self.settle();
    }

    /// Takes the machine's actions; a deadline that has come is handled at once, as the reactor
    /// does (a few rounds: a machine may set a deadline of now again).
    fn settle(&mut self) {
        for _ in 0..4 {
            let m = &mut self.m;
            self.conns.absorb(|| m.poll_action());
            if !self.m.poll_timeout().is_some_and(|t| t <= self.now) || self.m.is_finished() {
                break;
            }
            self.m.handle_timeout(self.now);
        }
        let m = &mut self.m;
        self.conns.absorb(|| m.poll_action());
    }
}

fuzz_target!(|data: &[u8]| {
    sim::log_if_asked();
    let mut b = Bytes(data);
    let class = class_pairs(&mut b);
    let npos = 1 + b.pick(4);
    let mut pos: Vec<String> = (0..npos).map(|i| format!("10.0.0.{}:4100", 10 + i)).collect();
    if b.u8() > 240 {
        pos.push("not-an-address".into());
    }
    let manifest = sim::manifest(&mut b);
    let changed = Arc::new(AtomicBool::new(false));
    let source = MemSource { manifest: manifest.clone(), changed: changed.clone() };
    let planned = manifest.clone();
    let mut source = Some(source);
    let planner = Box::new(move |_: &ClassCfg| {
        let s = source.take().ok_or_else(|| "planned twice".to_string())?;
        Ok((planned.clone(), Box::new(s) as Box<dyn wugui::proto::Source>))
    });
    let settings = MasterSettings {
        class: "base1".into(),
        cacs: vec!["10.0.0.1:4000".parse().unwrap(), "10.0.0.2:4000".parse().unwrap()],
        secret: b.bool().then(|| b"s3cret".to_vec()),
        connect_timeout: Duration::from_secs(5),
        unix_start: 1_700_000_000,
        dry_run: b.u8() > 250,
        wait: match b.pick(4) {
            0 => None,
            1 => Some(Duration::ZERO),
            2 => Some(Duration::from_secs(3)),
            _ => Some(Duration::from_secs(600)),
        },
        transfer_key: [3; 32],
        canary: None,
        itemize: false,
    };
    let now = Instant::now();
    let mut m = MasterMachine::new(settings, planner, now);
    let mut conns = Conns::default();
    conns.absorb(|| m.poll_action());
    let token = Token::issue(b"cluster", TRANSFER, "base1", [10, 0, 0, 5].into(), 1 << 40, [2; 16]).encode();
    let mut w = World { b, m, conns, now, class, pos, manifest, changed, token };
    w.settle();
    let mut steps = 0;
    while !w.b.done() && steps < 4096 && !w.m.is_finished() {
        w.step();
        steps += 1;
    }
    let _ = (w.m.outcome(), w.m.po_states(), w.m.stats(), w.m.stat(w.now, None));
});
