//! Shared by the machine targets: a byte cursor that turns fuzz input into choices, a small
//! in-memory tree, source and store, and the connection book-keeping a reactor would do.
//!
//! The drivers keep the reactor's contract (`proto::Machine`): events only for connections
//! that exist (accepted, or dialled by the machine and not closed since), `handle_timeout`
//! only once its deadline has come, time never going back, and nothing after `is_finished`.
#![allow(dead_code)]

use core::net::SocketAddr;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use wugui::proto::checksum::digest;
use wugui::proto::disk::Published;
use wugui::proto::manifest::{Entry, Kind};
use wugui::proto::msg::Digest;
use wugui::proto::wire::{TypeSet, HEADER_LEN, MAX_PREAUTH, NO_FRAME_LIMIT};
use wugui::proto::{
    Action, BlockRef, Body, Check, Close, ConnId, Event, Manifest, Msg, Payload, Source, SourceError, Store,
};
use wugui::proto::{StoreError, Sum, Verify, ACCEPTED};

/// With `WUGUI_FUZZ_LOG=debug` (or another level) the machines' log lines go to stderr: for
/// reading what a seed or a crash input does (`po_machine INPUT`).
pub fn log_if_asked() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let level = std::env::var("WUGUI_FUZZ_LOG").ok().and_then(|v| wugui::logging::parse_level(&v));
        if let Some(level) = level {
            let _ = wugui::logging::init(None, level);
        }
    });
}

/// With `WUGUI_FUZZ_TRACE=1` the drivers print every event they hand the machine to stderr.
pub fn trace(ev: &Event) {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if *ON.get_or_init(|| std::env::var_os("WUGUI_FUZZ_TRACE").is_some_and(|v| v == "1")) {
        eprintln!("event: {ev:?}");
    }
}

/// Reads choices off the input; past its end every read is 0.
pub struct Bytes<'a>(pub &'a [u8]);

impl Bytes<'_> {
    pub fn done(&self) -> bool {
        self.0.is_empty()
    }
    pub fn u8(&mut self) -> u8 {
        let Some((&b, rest)) = self.0.split_first() else { return 0 };
        self.0 = rest;
        b
    }
    pub fn pick(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            self.u8() as usize % n
        }
    }
    pub fn bool(&mut self) -> bool {
        self.u8() & 1 == 1
    }
    pub fn u32(&mut self) -> u32 {
        u32::from_be_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    /// `usual` most of the time (15 in 16), else any value: a transfer id, mostly the live one.
    pub fn mostly(&mut self, usual: u64) -> u64 {
        if self.u8() < 240 {
            usual
        } else {
            self.u64()
        }
    }

    pub fn u64(&mut self) -> u64 {
        (self.u32() as u64) << 32 | self.u32() as u64
    }
    /// Up to `max` bytes, the count read first.
    pub fn take(&mut self, max: usize) -> Vec<u8> {
        let n = (self.u8() as usize).min(max).min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a.to_vec()
    }
    /// A block index: mostly a real one, sometimes anything.
    pub fn block(&mut self, blocks: u64) -> u64 {
        match self.u8() {
            0..=199 => self.u8() as u64 % blocks.max(1),
            200..=229 => blocks + self.u8() as u64,
            230..=239 => u64::MAX - self.u8() as u64,
            _ => self.u64(),
        }
    }
    /// A po index: mostly one of `n`, sometimes anything.
    pub fn index(&mut self, n: u32) -> u32 {
        match self.u8() {
            0..=199 => self.u8() as u32 % n.max(1),
            200..=229 => u32::MAX - self.u8() as u32 % 2,
            _ => self.u32(),
        }
    }
    pub fn close(&mut self) -> Close {
        match self.pick(5) {
            0 => Close::Eof,
            1 => Close::TimedOut,
            2 => Close::Connect("refused".into()),
            3 => Close::Decode("bad magic".into()),
            _ => Close::Io("reset".into()),
        }
    }
    pub fn step(&mut self) -> Duration {
        match self.pick(4) {
            0 => Duration::from_millis(self.u8() as u64 * 10),
            1 => Duration::from_secs(self.u8() as u64),
            2 => Duration::from_secs(self.u8() as u64 * 60),
            _ => Duration::ZERO,
        }
    }
    /// A frame from raw bytes: a type byte and a payload, through the real decoder.
    pub fn raw_msg(&mut self) -> Option<Msg> {
        let ty = wugui::proto::wire::MsgType::from_u8(self.u8())?;
        let body = self.take(255);
        Msg::decode(ty, Payload::from_vec(body)).ok()
    }
}

pub const BLOCK: u32 = 4096;

/// A small tree: a directory, two files (sizes from the input, a few blocks at most) and a symlink.
pub fn manifest(b: &mut Bytes) -> Manifest {
    let e = |path: &str, kind: Kind| Entry {
        path: path.into(),
        kind,
        mode: 0o644,
        uid: 0,
        gid: 0,
        mtime: 1,
        mtime_nsec: 0,
        sparse: None,
    };
    let a = b.u8() as u64 * 97 % (5 * BLOCK as u64);
    let c = b.u8() as u64 * 31;
    let entries = vec![
        e("d", Kind::Dir),
        e("d/a", Kind::File { size: a }),
        e("c", Kind::File { size: c }),
        e("l", Kind::Symlink { target: "d/a".into() }),
    ];
    Manifest::new(BLOCK, entries).expect("a valid tree")
}

/// The true bytes of block `b` of `m`.
pub fn block_data(m: &Manifest, b: u64) -> Vec<u8> {
    let len = m.block(b).map_or(0, |r| r.len as usize);
    (0..len).map(|i| (b as usize * 31 + i * 7) as u8).collect()
}

/// The master's source: the true bytes; `changed` makes every file look changed.
pub struct MemSource {
    pub manifest: Manifest,
    pub changed: Arc<std::sync::atomic::AtomicBool>,
}

impl Source for MemSource {
    fn block(&mut self, b: &BlockRef, verify: Verify, _sendfile: bool) -> Result<(Body, Sum), SourceError> {
        let data = block_data(&self.manifest, b.index);
        let sum = Sum::of(verify, &data);
        Ok((Body::Bytes(Arc::new(data)), sum))
    }
    fn unchanged(&mut self, _entry: u32) -> Result<(), SourceError> {
        if self.changed.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(SourceError::Changed { path: "d/a".into(), why: "fuzz".into() });
        }
        Ok(())
    }
}

/// A po's store that keeps the digest of each staged block, by tree: a later transfer of the
/// same tree gets those blocks as resume candidates, taken when the master's digests match.
#[derive(Default)]
pub struct MemStore {
    open: HashMap<u64, (Manifest, HashSet<u64>)>,
    staged: HashMap<([u8; 16], u64), Digest>,
    pub fail: bool,
    /// `publish` finds the dest holding the tree already (an unchanged DONE).
    pub unchanged: bool,
    /// `release` calls so far (a master gone past `release_after`).
    pub released: u64,
}

fn refused(s: &str) -> StoreError {
    StoreError::Refused(s.into())
}

impl Store for MemStore {
    fn prepare(&mut self, transfer: u64, _dest: &str, m: &Manifest, _delta: bool) -> Result<Vec<bool>, StoreError> {
        if self.fail {
            return Err(refused("disk on fire"));
        }
        self.open.insert(transfer, (m.clone(), HashSet::new()));
        Ok(vec![false; m.blocks() as usize])
    }
    fn candidates(&mut self, transfer: u64) -> Vec<u64> {
        let Some((m, _)) = self.open.get(&transfer) else { return Vec::new() };
        let id = m.id();
        (0..m.blocks()).filter(|b| self.staged.contains_key(&(id, *b))).collect()
    }
    fn check(&mut self, transfer: u64, sums: &[(u64, Digest)]) -> Vec<u64> {
        let Some((m, held)) = self.open.get_mut(&transfer) else { return Vec::new() };
        let id = m.id();
        let taken: Vec<u64> = sums.iter().filter(|(b, d)| self.staged.get(&(id, *b)) == Some(d)).map(|s| s.0).collect();
        held.extend(&taken);
        taken
    }
    fn write_block(&mut self, transfer: u64, b: &BlockRef, data: &[u8]) -> Result<(), StoreError> {
        if self.fail {
            return Err(StoreError::NoSpace { what: "write".into(), error: "full".into() });
        }
        let (m, held) = self.open.get_mut(&transfer).ok_or_else(|| refused("not prepared"))?;
        if m.block(b.index) != Some(*b) || data.len() != b.len as usize {
            return Err(refused("block does not match the manifest"));
        }
        held.insert(b.index);
        self.staged.insert((m.id(), b.index), digest(data));
        Ok(())
    }
    fn seal(&mut self, transfer: u64) -> Result<(), StoreError> {
        match self.open.get(&transfer) {
            Some(_) if !self.fail => Ok(()),
            _ => Err(refused("cannot seal")),
        }
    }
    fn publish(&mut self, transfer: u64, _flag: Option<&str>, _mirror: bool) -> Result<Published, StoreError> {
        let (m, _) = self.open.get(&transfer).ok_or_else(|| refused("not prepared"))?;
        Ok(Published { files: m.files() as u64, bytes: m.bytes(), unchanged: self.unchanged })
    }
    fn release(&mut self, transfer: u64) {
        if self.open.contains_key(&transfer) {
            self.released += 1;
        }
    }
    fn abort(&mut self, transfer: u64, _keep: bool) {
        self.open.remove(&transfer);
    }
    fn block_body(&mut self, transfer: u64, b: &BlockRef) -> Result<Body, StoreError> {
        let (m, held) = self.open.get(&transfer).ok_or_else(|| refused("unknown transfer"))?;
        if !held.contains(&b.index) {
            return Err(refused("block not held"));
        }
        Ok(Body::Bytes(Arc::new(block_data(m, b.index))))
    }
}

/// Most actions one call may queue: far above what a transfer of a few blocks to a few pos
/// needs, so a machine that goes past it loops.
pub const MAX_ACTIONS: usize = 100_000;

/// The connections as a reactor sees them.
#[derive(Default)]
pub struct Conns {
    /// Dialled by the machine, not yet connected or refused.
    pub dialling: Vec<ConnId>,
    /// Accepted, or connected: frames may come on these.
    pub open: Vec<ConnId>,
    /// Hooks started, waiting for `HookDone`.
    pub hooks: Vec<u64>,
    pub next_accept: u64,
    /// Where the machine dialled each connection it made.
    pub addr: HashMap<ConnId, SocketAddr>,
    /// `Action::FrameLimit` / `Action::FrameTypes` as the reactor keeps them (absent: the
    /// defaults, `MAX_PREAUTH` and every type for accepted connections, no limit for outbound).
    pub limit: HashMap<ConnId, u32>,
    pub types: HashMap<ConnId, TypeSet>,
    /// Connections the machine abandoned (`Action::Abandon`).
    pub abandoned: u64,
    /// Block checks handed out (`Action::Verify`), not yet answered with `Event::Verified`.
    pub checks: Vec<Check>,
}

/// Which connections a frame should come on, mostly (the input may send it anywhere).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Side {
    /// Accepted by the machine: a master's control link, a peer, a stat client.
    Accepted,
    /// Dialled by the machine to an address with port 4000 (the CACs of the drivers).
    Cac,
    /// Dialled by the machine to any other address (pos, peers, data links).
    Dialled,
}

impl Conns {
    /// Takes the machine's actions as a reactor would (sends are dropped).
    pub fn absorb(&mut self, mut next: impl FnMut() -> Option<Action>) {
        let mut n = 0;
        while let Some(a) = next() {
            n += 1;
            assert!(n <= MAX_ACTIONS, "over {MAX_ACTIONS} actions from one call");
            match a {
                Action::Connect { conn, addr } => {
                    assert!(
                        !self.dialling.contains(&conn) && !self.open.contains(&conn),
                        "connection {conn} dialled while in use"
                    );
                    self.dialling.push(conn);
                    self.addr.insert(conn, addr);
                }
                Action::Close { conn } => self.forget(conn),
                Action::Abandon { conn, .. } => {
                    self.abandoned += 1;
                    self.forget(conn)
                }
                Action::FrameLimit { conn, max } => {
                    self.limit.insert(conn, max);
                }
                Action::FrameTypes { conn, types } => {
                    self.types.insert(conn, types);
                }
                Action::RunHook { id, .. } => self.hooks.push(id),
                Action::Verify(check) => self.checks.push(check),
                // No store of the fuzz worlds hands out disk jobs (`Store::check_job`).
                Action::Disk(job) => drop(job),
                Action::Send { .. }
                | Action::SendBlock { .. }
                | Action::SetRates { .. }
                | Action::ShortQueue { .. } => {}
            }
        }
    }
    pub fn forget(&mut self, conn: ConnId) {
        self.dialling.retain(|c| *c != conn);
        self.open.retain(|c| *c != conn);
        self.addr.remove(&conn);
        self.limit.remove(&conn);
        self.types.remove(&conn);
    }
    pub fn side(&self, conn: ConnId) -> Side {
        if conn & ACCEPTED != 0 {
            Side::Accepted
        } else if self.addr.get(&conn).is_some_and(|a| a.port() == 4000) {
            Side::Cac
        } else {
            Side::Dialled
        }
    }
    /// Whether the reactor would hand `msg` on `conn` to the machine: its type allowed there
    /// and its payload within the connection's limit. (A reactor closes the connection with
    /// `Close::Decode` instead, or holds a later frame over the limit unread.)
    pub fn admits(&self, conn: ConnId, msg: &Msg) -> bool {
        if let Some(t) = self.types.get(&conn) {
            if !t.contains(msg.ty()) {
                return false;
            }
        }
        let default = if conn & ACCEPTED != 0 { MAX_PREAUTH } else { NO_FRAME_LIMIT };
        let max = self.limit.get(&conn).copied().unwrap_or(default);
        let len = (msg.to_frame().len() - HEADER_LEN) as u64;
        len <= max as u64 && len <= msg.ty().max_payload() as u64
    }
    /// The event for `msg` arriving on `conn`: the frame, or the connection closed as the
    /// reactor closes it for a frame it does not admit.
    pub fn frame_event(&mut self, conn: ConnId, msg: Msg) -> Event {
        if self.admits(conn, &msg) {
            Event::Frame { conn, msg }
        } else {
            self.forget(conn);
            Event::Closed { conn, reason: Close::Decode(format!("{:?} not admitted", msg.ty())) }
        }
    }
    pub fn pick_open(&self, b: &mut Bytes) -> Option<ConnId> {
        (!self.open.is_empty()).then(|| self.open[b.pick(self.open.len())])
    }
    /// An open connection, mostly one on `side` when there is one.
    pub fn pick_on(&self, b: &mut Bytes, side: Side) -> Option<ConnId> {
        let on: Vec<ConnId> = self.open.iter().copied().filter(|c| self.side(*c) == side).collect();
        if on.is_empty() || b.u8() >= 224 {
            self.pick_open(b)
        } else {
            Some(on[b.pick(on.len())])
        }
    }
    /// Any connection the machine knows of, dialling or open.
    pub fn pick_any(&self, b: &mut Bytes) -> Option<ConnId> {
        let all: Vec<ConnId> = self.dialling.iter().chain(&self.open).copied().collect();
        (!all.is_empty()).then(|| all[b.pick(all.len())])
    }
    pub fn pick_dialling(&mut self, b: &mut Bytes) -> Option<ConnId> {
        (!self.dialling.is_empty()).then(|| self.dialling.remove(b.pick(self.dialling.len())))
    }
}

/// A checksum of kind `kind` for `data`, or a wrong one.
pub fn sum_for(kind: Verify, data: &[u8], right: bool) -> Sum {
    let mut d = data.to_vec();
    if !right {
        d.push(1);
    }
    match Sum::of(kind, &d) {
        Sum::None if !right => Sum::Crc32(1),
        s => s,
    }
}
