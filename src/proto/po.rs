//! The po: receives a transfer, verifies every block, stages it and publishes it.
//!
//! A master connection goes `New` -> (Offer) `Verifying` (asking the CACs in order) ->
//! (VerifyOk) `Receiving` -> (all blocks held) `Ready` -> (Commit, or at once with
//! `publish = each`) `Published`. Any failure sends `Failed` to the master and leaves the
//! published tree as it was. Transfers are keyed by id, so a master that reconnects with the
//! same transfer picks up where it left.

use super::auth::Token;
use super::bitmap::bitmap;
use super::class::Publish;
use super::failover::Failover;
use super::manifest::hex;
use super::msg::{Digest, PeerLink, Reason, TransferStat};
use super::{earliest, Action, ClassCfg, Close, ConnId, Event, Machine, Manifest, Msg, Payload, Stats, Store, Sum};
use core::net::SocketAddr;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct PoSettings {
    /// The address this po presents to the CAC; `None`: the one the master dialled.
    pub advertise: Option<String>,
    pub cacs: Vec<SocketAddr>,
    /// Class dests must lie below one of these (absolute paths).
    pub allow_dest: Vec<String>,
    /// Demo/test mode: every dest is taken below this directory.
    pub root: Option<String>,
    pub cac_timeout: Duration,
    /// Where class hooks live; a class hook runs only from here.
    pub hook_dir: Option<String>,
    /// Bytes/s over all transfers of this host; 0 = none.
    pub max_upload_rate: u64,
    pub max_download_rate: u64,
}

const HANDSHAKE: Duration = Duration::from_secs(10);
/// The master pings at least this often while it waits.
const MASTER_IDLE: Duration = Duration::from_secs(120);

enum ConnKind {
    /// Accepted, nothing said yet.
    New,
    /// A master's connection, once its offer is under verification or accepted.
    Master { transfer: Option<u64> },
    /// Our question to CAC number `cac` about the offer on master connection `master`.
    Cac { master: ConnId, cac: Failover },
    /// A `wugui-stat` client.
    Stat,
    /// A neighbour in the swarm of `transfer`: po `idx`, once the token was presented.
    Peer { transfer: u64, idx: u32 },
    /// The master's block stream for `transfer` in a swarm.
    MasterData { transfer: u64 },
}

struct Conn {
    peer: Option<SocketAddr>,
    kind: ConnKind,
    deadline: Option<Instant>,
}

/// An offer waiting for a CAC's word.
struct Pending {
    token: Vec<u8>,
    po: String,
    manifest: Manifest,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TState {
    Receiving,
    Ready,
    Published,
    Failed,
}

impl TState {
    fn name(self) -> &'static str {
        match self {
            TState::Receiving => "receiving",
            TState::Ready => "ready",
            TState::Published => "published",
            TState::Failed => "failed",
        }
    }
}

struct Transfer {
    class: ClassCfg,
    manifest: Manifest,
    master: Option<ConnId>,
    held: Vec<bool>,
    nheld: u64,
    bytes: u64,
    state: TState,
    started: Instant,
    error: String,
    token: Vec<u8>,
    dest: String,
    /// The hook's result once it ran (None: no hook, or still running).
    hook: Option<(i32, String)>,
    /// Swarm: our index, links to neighbours by index, pushes waiting for a link, the master's
    /// checksums, and peer blocks waiting for their checksum.
    me: Option<u32>,
    peers: HashMap<u32, ConnId>,
    waiting: HashMap<u32, Vec<(u64, Instant)>>,
    sums: Vec<Option<Sum>>,
    parked: Vec<(ConnId, From, super::BlockHead, Payload)>,
    /// Swarm credentials from the master's PEERS: the key of each link of ours, and the one
    /// that proves the master's data link.
    link_keys: HashMap<u32, Digest>,
    master_key: Option<Digest>,
    /// Hellos that arrived before our PEERS (connection, claimed index, proof).
    hellos: Vec<(ConnId, u32, Digest)>,
    /// Delta: blocks asked about with CHECK; ACCEPT waits for their MD5s.
    checking: Vec<u64>,
}

impl Transfer {
    /// Block `b` is verified and staged.
    fn hold(&mut self, b: u64) {
        if let Some(h) = self.held.get_mut(b as usize).filter(|h| !**h) {
            *h = true;
            self.nheld += 1;
            self.bytes += self.manifest.block(b).map_or(0, |x| x.len as u64);
        }
    }
}

/// Peer blocks held back until their checksum arrives, per transfer.
const MAX_PARKED: usize = 8;
/// Peer hellos held back until our PEERS arrives, per transfer.
const MAX_HELLOS: usize = 64;

/// Where a block came from. Only the control connection is the master's own word; any other
/// block counts only if it matches a digest that came on the control connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum From {
    Control,
    MasterData,
    Peer(u32),
}
/// A push for a neighbour whose link never comes up is given back to the master.
const LINK_WAIT: Duration = Duration::from_secs(10);

pub struct PoMachine<S: Store> {
    settings: PoSettings,
    store: S,
    conns: HashMap<ConnId, Conn>,
    pending: HashMap<ConnId, Pending>,
    transfers: HashMap<u64, Transfer>,
    next_conn: ConnId,
    out: VecDeque<Action>,
    stats: Stats,
}

impl<S: Store> PoMachine<S> {
    pub fn new(settings: PoSettings, store: S) -> PoMachine<S> {
        let rates = Action::SetRates { upload: settings.max_upload_rate, download: settings.max_download_rate };
        PoMachine {
            settings,
            store,
            conns: HashMap::new(),
            pending: HashMap::new(),
            transfers: HashMap::new(),
            next_conn: 1,
            out: VecDeque::from([rates]),
            stats: Stats::default(),
        }
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    pub fn store_mut(&mut self) -> &mut S {
        &mut self.store
    }

    /// SIGHUP: new settings for new transfers; live ones go on.
    pub fn reload(&mut self, settings: PoSettings) {
        let (upload, download) = (settings.max_upload_rate, settings.max_download_rate);
        self.out.push_back(Action::SetRates { upload, download });
        self.settings = settings;
    }

    fn send(&mut self, conn: ConnId, msg: Msg) {
        self.out.push_back(Action::Send { conn, msg });
    }

    fn refuse(&mut self, conn: ConnId, reason: Reason, text: String) {
        self.send(conn, Msg::Denied { reason, text });
        self.out.push_back(Action::Close { conn });
        self.conns.remove(&conn);
        self.pending.remove(&conn);
    }

    /// Asks CAC number `cac` (or gives up when the list is exhausted).
    fn ask_cac(&mut self, now: Instant, master: ConnId, cac: Failover) {
        let Some(addr) = cac.cac(&self.settings.cacs) else {
            log::error!("event=cac_unreachable role=po error=\"no CAC of {} answered\"", self.settings.cacs.len());
            return self.refuse(master, Reason::NoCac, "the po could reach no CAC to verify the token".into());
        };
        let conn = self.next_conn;
        self.next_conn += 1;
        self.conns.insert(
            conn,
            Conn {
                peer: Some(addr),
                kind: ConnKind::Cac { master, cac },
                deadline: Some(now + self.settings.cac_timeout),
            },
        );
        self.out.push_back(Action::Connect { conn, addr });
    }

    /// The CAC at `conn` failed us: try the next one.
    fn cac_failed(&mut self, now: Instant, conn: ConnId, why: &str) {
        if let Some(Conn { kind: ConnKind::Cac { master, cac }, .. }) = self.conns.remove(&conn) {
            self.out.push_back(Action::Close { conn });
            let next = cac.next("po", &self.settings.cacs, why);
            if self.pending.contains_key(&master) {
                self.ask_cac(now, master, next);
            }
        }
    }

    fn on_offer(&mut self, now: Instant, conn: ConnId, token: Vec<u8>, po: String, manifest: &[u8]) {
        let manifest = match Manifest::decode(manifest) {
            Ok(m) => m,
            Err(e) => {
                log::warn!("event=offer_refused reason=bad_manifest error=\"{e}\"");
                return self.refuse(conn, Reason::BadManifest, e.to_string());
            }
        };
        let po = self.settings.advertise.clone().unwrap_or(po);
        self.pending.insert(conn, Pending { token, po, manifest });
        if let Some(c) = self.conns.get_mut(&conn) {
            c.kind = ConnKind::Master { transfer: None };
            c.deadline = None;
        }
        self.ask_cac(now, conn, Failover::first());
    }

    /// The CAC vouched for the offer on `master`.
    fn on_verified(
        &mut self,
        now: Instant,
        master: ConnId,
        transfer: u64,
        pairs: &[(String, String)],
        class_name: &str,
    ) {
        let Some(p) = self.pending.remove(&master) else { return };
        // The token names the transfer; the CAC has checked its MAC.
        if Token::decode(&p.token).map(|t| t.transfer) != Ok(transfer) {
            return self.refuse(master, Reason::BadToken, "CAC answered for another transfer".into());
        }
        let class = match ClassCfg::from_pairs(class_name, pairs) {
            Ok(c) => c,
            Err(e) => return self.refuse(master, Reason::Protocol, format!("CAC sent a bad class: {e}")),
        };
        if class.block_size != 0 && class.block_size != p.manifest.block_size {
            return self.refuse(master, Reason::BadManifest, "manifest block size differs from the class".into());
        }
        let Some(dest) = self.dest_for(&class.dest) else {
            log::warn!(
                "event=offer_refused transfer={transfer} class={} reason=dest_not_allowed dest={}",
                class.name,
                class.dest
            );
            return self.refuse(
                master,
                Reason::DestNotAllowed,
                format!("dest {} is outside allow_dest on this po", class.dest),
            );
        };
        // A master that reconnects to a live transfer keeps its progress.
        if let Some(t) = self.transfers.get_mut(&transfer) {
            if t.state != TState::Failed && t.manifest.id() == p.manifest.id() {
                t.master = Some(master);
                let have = bitmap(&t.held);
                let state = t.state;
                let checking = t.checking.clone();
                self.set_master(master, transfer, now);
                if !checking.is_empty() {
                    return self.send(master, Msg::Check { transfer, blocks: checking });
                }
                self.send(master, Msg::Accept { transfer, have });
                if state != TState::Receiving {
                    self.send(master, Msg::Ready { transfer });
                }
                // A published transfer answers DONE again once its hook (if any) has run.
                let hook_pending =
                    self.transfers.get(&transfer).is_some_and(|t| t.class.hook.is_some() && t.hook.is_none());
                if state == TState::Published && !hook_pending {
                    self.report_done(transfer);
                }
                return;
            }
            self.transfers.remove(&transfer);
        }
        // A rerun of the same tree by a new master replaces a transfer whose master is gone.
        let id = p.manifest.id();
        let stale: Vec<u64> = self
            .transfers
            .iter()
            .filter(|(_, t)| t.master.is_none() && t.manifest.id() == id)
            .map(|(k, _)| *k)
            .collect();
        for old in stale {
            log::info!("event=transfer_replaced transfer={old} by={transfer}");
            self.transfers.remove(&old);
        }
        let held = match self.store.prepare(transfer, &dest, &p.manifest, class.delta) {
            Ok(h) if h.len() as u64 == p.manifest.blocks() => h,
            Ok(_) => vec![false; p.manifest.blocks() as usize],
            Err(e) => {
                log::error!("event=po_failed transfer={transfer} class={} error=\"{e}\"", class.name);
                return self.refuse(master, Reason::Disk, e.to_string());
            }
        };
        let nheld = held.iter().filter(|h| **h).count() as u64;
        let bytes = (0..p.manifest.blocks())
            .filter(|&i| held[i as usize])
            .map(|i| p.manifest.block(i).map(|b| b.len as u64).unwrap_or(0))
            .sum();
        log::info!(
            "event=transfer_accept transfer={transfer} class={} dest={dest} files={} bytes={} held={nheld} manifest={}",
            class.name,
            p.manifest.files(),
            p.manifest.bytes(),
            hex(&p.manifest.id()[..6])
        );
        let have = bitmap(&held);
        let nb = p.manifest.blocks();
        if class.rate_limit > 0 {
            // The class caps what this host uploads to peers for the transfer.
            let cap = self.settings.max_upload_rate;
            let upload = if cap == 0 { class.rate_limit } else { cap.min(class.rate_limit) };
            self.out.push_back(Action::SetRates { upload, download: self.settings.max_download_rate });
        }
        self.transfers.insert(
            transfer,
            Transfer {
                class,
                manifest: p.manifest,
                master: Some(master),
                held,
                nheld,
                bytes,
                state: TState::Receiving,
                started: now,
                error: String::new(),
                token: p.token,
                dest: dest.clone(),
                hook: None,
                me: None,
                peers: HashMap::new(),
                waiting: HashMap::new(),
                sums: vec![None; nb as usize],
                parked: Vec::new(),
                link_keys: HashMap::new(),
                master_key: None,
                hellos: Vec::new(),
                checking: Vec::new(),
            },
        );
        self.set_master(master, transfer, now);
        let mut check = self.store.candidates(transfer);
        // The master's answer (24 bytes a block) must fit one frame; the rest just travels.
        check.truncate((super::wire::MAX_CONTROL as usize - 64) / 40);
        if !check.is_empty() {
            // Delta: the published copy may hold these; their MD5s decide, then ACCEPT.
            if let Some(t) = self.transfers.get_mut(&transfer) {
                t.checking = check.clone();
            }
            return self.send(master, Msg::Check { transfer, blocks: check });
        }
        self.send(master, Msg::Accept { transfer, have });
        self.maybe_ready(transfer);
    }

    /// The master's MD5s for the blocks of our CHECK: keep what matches, then ACCEPT.
    fn on_check_sums(&mut self, transfer: u64, sums: Vec<(u64, Digest)>) {
        let Some(t) = self.transfers.get_mut(&transfer) else { return };
        if t.checking.is_empty() || t.state != TState::Receiving {
            return;
        }
        let asked: std::collections::HashSet<u64> = std::mem::take(&mut t.checking).into_iter().collect();
        let mut sums: Vec<(u64, Digest)> = sums.into_iter().filter(|(b, _)| asked.contains(b)).collect();
        sums.sort_unstable_by_key(|(b, _)| *b);
        let taken = self.store.check(transfer, &sums);
        let Some(t) = self.transfers.get_mut(&transfer) else { return };
        for b in taken {
            t.hold(b);
        }
        let have = bitmap(&t.held);
        if let Some(m) = t.master {
            self.send(m, Msg::Accept { transfer, have });
        }
        self.maybe_ready(transfer);
    }

    fn set_master(&mut self, conn: ConnId, transfer: u64, now: Instant) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.kind = ConnKind::Master { transfer: Some(transfer) };
            c.deadline = Some(now + MASTER_IDLE);
        }
    }

    /// Where class dest `dest` lands here, if it is allowed.
    fn dest_for(&self, dest: &str) -> Option<String> {
        let inside = self.settings.allow_dest.iter().any(|a| {
            let a = a.trim_end_matches('/');
            dest == a || dest.strip_prefix(a).is_some_and(|rest| rest.starts_with('/')) || a.is_empty()
        });
        if !inside || dest.split('/').any(|c| c == "..") {
            return None;
        }
        Some(match &self.settings.root {
            Some(r) => format!("{}{dest}", r.trim_end_matches('/')),
            None => dest.to_owned(),
        })
    }

    /// A block from the master's control connection, its data link, or neighbour `p`. Only
    /// control blocks carry their own checksum; the rest are checked against the master's `Sums`.
    /// A peer's bad frame is the peer's fault: its link closes and the master refetches the block.
    fn on_block(&mut self, conn: ConnId, from: From, head: super::BlockHead, data: Payload) {
        let Some(t) = self.transfers.get_mut(&head.transfer) else {
            return self.refuse(conn, Reason::Protocol, format!("block for unknown transfer {}", head.transfer));
        };
        let shape = match t.manifest.block(head.index) {
            None => Err(format!("block {} is past the end of the manifest", head.index)),
            Some(b) if data.len() != b.len as usize => {
                Err(format!("block {} has {} bytes, expected {}", b.index, data.len(), b.len))
            }
            Some(b) => Ok(b),
        };
        let b = match (shape, from) {
            (Ok(b), _) => b,
            (Err(e), From::Peer(p)) => return self.peer_fault(conn, head.transfer, head.index, p, &e),
            (Err(e), _) => return self.fail(head.transfer, e),
        };
        if t.state != TState::Receiving || t.held[b.index as usize] {
            return;
        }
        let check = t.class.block_check();
        let want = match (from, t.sums[b.index as usize]) {
            (From::Control, _) => {
                t.sums[b.index as usize] = Some(head.sum);
                head.sum
            }
            (_, Some(s)) => s,
            (_, None) if t.parked.len() < MAX_PARKED => return t.parked.push((conn, from, head, data)),
            (_, None) => {
                // Give the assignment back; the master will send it again later.
                let (transfer, block, master, me) = (head.transfer, b.index, t.master, t.me.unwrap_or(0));
                if let Some(m) = master {
                    self.send(m, Msg::Unsent { transfer, block, to: me, why: "no checksum yet".into() });
                }
                return;
            }
        };
        let kind = if from == From::Control { t.class.verify } else { check };
        if kind != super::Verify::None && Sum::of(kind, data.bytes()) != want {
            let first = t.manifest.segments(&b).first().map(|s| s.entry).unwrap_or(0);
            let path = t.manifest.entries()[first as usize].path.clone();
            let source = match from {
                From::Peer(p) => format!("po#{p}"),
                _ => "master".into(),
            };
            log::warn!("event=block_bad transfer={} block={} path={path} source={source}", head.transfer, b.index);
            self.stats.verify_failures += 1;
            return match (from, t.master) {
                // A bad peer: fetch the block elsewhere, and let the master count the fault.
                (From::Peer(p), Some(m)) => self.send(m, Msg::Bad { transfer: head.transfer, block: b.index, from: p }),
                _ => self.fail(head.transfer, format!("block {} of {path} failed its {kind} check", b.index)),
            };
        }
        if let Err(e) = self.store.write_block(head.transfer, &b, data.bytes()) {
            return self.fail(head.transfer, e.to_string());
        }
        let t = self.transfers.get_mut(&head.transfer).expect("checked above");
        t.hold(b.index);
        self.stats.bytes_received += b.len as u64;
        self.stats.blocks_received += 1;
        if let Some(m) = t.master {
            self.send(m, Msg::Have { transfer: head.transfer, blocks: vec![b.index] });
        }
        self.maybe_ready(head.transfer);
    }

    /// Neighbour `p` sent a frame that cannot be a block of ours: close its link, and tell the
    /// master, which charges `p` a fault and sends the block from elsewhere.
    fn peer_fault(&mut self, conn: ConnId, transfer: u64, block: u64, p: u32, why: &str) {
        log::warn!("event=peer_fault transfer={transfer} peer=po#{p} error=\"{why}\"");
        self.stats.peer_errors += 1;
        self.conns.remove(&conn);
        self.out.push_back(Action::Close { conn });
        self.peer_lost(transfer, p, conn);
        let Some(t) = self.transfers.get(&transfer) else { return };
        if let (Some(m), true) = (t.master, block < t.manifest.blocks()) {
            self.send(m, Msg::Bad { transfer, block, from: p });
        }
    }

    /// The master gave us our place in the swarm and the keys of our links: dial the neighbours
    /// it named, then judge the hellos that came before it.
    fn on_peers(&mut self, now: Instant, transfer: u64, me: u32, master_key: Digest, links: Vec<PeerLink>) {
        let Some(t) = self.transfers.get_mut(&transfer) else { return };
        t.me = Some(me);
        t.master_key = Some(master_key);
        t.link_keys = links.iter().map(|l| (l.idx, l.key)).collect();
        let hellos = std::mem::take(&mut t.hellos);
        for l in links.into_iter().filter(|l| !l.addr.is_empty()) {
            let Ok(addr) = l.addr.parse::<SocketAddr>() else { continue };
            let conn = self.next_conn;
            self.next_conn += 1;
            if let Some(t) = self.transfers.get_mut(&transfer) {
                t.peers.insert(l.idx, conn);
            }
            let kind = ConnKind::Peer { transfer, idx: l.idx };
            self.conns.insert(conn, Conn { peer: Some(addr), kind, deadline: Some(now + self.settings.cac_timeout) });
            self.out.push_back(Action::Connect { conn, addr });
        }
        for (conn, idx, proof) in hellos {
            if self.conns.get(&conn).is_some_and(|c| matches!(c.kind, ConnKind::New)) {
                self.admit_peer(now, conn, transfer, idx, proof);
            }
        }
    }

    /// A neighbour (or the master's data link) dialled us: the token names the transfer, and
    /// the proof must be the key the master gave us for that link. An index alone proves nothing.
    fn on_peer_hello(&mut self, now: Instant, conn: ConnId, token: &[u8], idx: u32, proof: Digest) {
        let found = self.transfers.iter().find(|(_, t)| super::auth::ct_eq(&t.token, token)).map(|(id, _)| *id);
        let Some(transfer) = found else {
            log::warn!("event=peer_refused reason=bad_token");
            self.stats.peer_errors += 1;
            return self.refuse(conn, Reason::BadToken, "no transfer here has that token".into());
        };
        let t = self.transfers.get_mut(&transfer).expect("found above");
        // A class without p2p has no swarm links and no PEERS to wait for: no key matches.
        if t.me.is_none() && t.class.p2p {
            // Our PEERS is still on its way: judge the hello when it comes (bounded).
            if t.hellos.len() >= MAX_HELLOS {
                return self.refuse(conn, Reason::Protocol, "too many early hellos".into());
            }
            return t.hellos.push((conn, idx, proof));
        }
        self.admit_peer(now, conn, transfer, idx, proof);
    }

    fn admit_peer(&mut self, now: Instant, conn: ConnId, transfer: u64, idx: u32, proof: Digest) {
        let Some(t) = self.transfers.get_mut(&transfer) else { return };
        let master = idx == super::swarm::MASTER_PEER;
        let key = if master { t.master_key } else { t.link_keys.get(&idx).copied() };
        if !key.is_some_and(|k| super::auth::ct_eq(&k, &proof)) {
            let who = if master { "master".to_owned() } else { format!("po#{idx}") };
            log::warn!("event=peer_refused transfer={transfer} reason=bad_credential claimed={who}");
            self.stats.peer_errors += 1;
            return self.refuse(conn, Reason::BadToken, "that link's credential does not match".into());
        }
        if let Some(c) = self.conns.get_mut(&conn) {
            c.kind = if master { ConnKind::MasterData { transfer } } else { ConnKind::Peer { transfer, idx } };
            c.deadline = None;
        }
        if master {
            return;
        }
        if let Some(t) = self.transfers.get_mut(&transfer) {
            t.peers.insert(idx, conn);
        }
        self.flush_waiting(now, transfer, idx);
    }

    /// The master asks us to send `block` to neighbour `to`.
    fn on_push(&mut self, now: Instant, transfer: u64, block: u64, to: u32) {
        let Some(t) = self.transfers.get_mut(&transfer) else { return };
        let linked = t
            .peers
            .get(&to)
            .and_then(|c| self.conns.get(c))
            .is_some_and(|c| matches!(c.kind, ConnKind::Peer { .. }) && c.deadline.is_none());
        if !linked {
            // The link is still coming up (we dial, or they will): hold the push a while.
            t.waiting.entry(to).or_default().push((block, now));
            return;
        }
        self.serve(transfer, block, to);
    }

    fn serve(&mut self, transfer: u64, block: u64, to: u32) {
        let Some(t) = self.transfers.get_mut(&transfer) else { return };
        let (Some(&conn), Some(b)) = (t.peers.get(&to), t.manifest.block(block)) else { return };
        let unsent = |why: String| Msg::Unsent { transfer, block, to, why };
        if !t.held.get(block as usize).copied().unwrap_or(false) {
            if let Some(m) = t.master {
                self.send(m, unsent("not held".into()));
            }
            return;
        }
        let sum = t.sums[block as usize].unwrap_or(Sum::None);
        let master = t.master;
        match self.store.block_body(transfer, &b) {
            Ok(body) => {
                let head = super::BlockHead { transfer, index: block, sum };
                self.stats.bytes_sent += body.len();
                self.stats.blocks_sent += 1;
                self.out.push_back(Action::SendBlock { conn, head, body });
            }
            Err(e) => {
                log::warn!("event=serve_failed transfer={transfer} block={block} error=\"{e}\"");
                if let Some(m) = master {
                    self.send(m, unsent(e.to_string()));
                }
            }
        }
    }

    fn flush_waiting(&mut self, _now: Instant, transfer: u64, idx: u32) {
        let Some(t) = self.transfers.get_mut(&transfer) else { return };
        for (block, _) in t.waiting.remove(&idx).unwrap_or_default() {
            self.serve(transfer, block, idx);
        }
    }

    /// Checksums from the master; parked peer blocks can be checked now.
    fn on_sums(&mut self, transfer: u64, sums: Vec<(u64, Sum)>) {
        let Some(t) = self.transfers.get_mut(&transfer) else { return };
        for (b, s) in sums {
            if let Some(slot) = t.sums.get_mut(b as usize) {
                *slot = Some(s);
            }
        }
        let parked = std::mem::take(&mut t.parked);
        for (conn, from, head, data) in parked {
            self.on_block(conn, from, head, data);
        }
    }

    /// Closes the peer links and the master's data link of `transfer`.
    fn close_swarm_links(&mut self, transfer: u64) {
        let links: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| match c.kind {
                ConnKind::Peer { transfer: t, .. } | ConnKind::MasterData { transfer: t } => t == transfer,
                _ => false,
            })
            .map(|(k, _)| *k)
            .collect();
        for conn in links {
            self.conns.remove(&conn);
            self.out.push_back(Action::Close { conn });
        }
        if let Some(t) = self.transfers.get_mut(&transfer) {
            t.peers.clear();
            t.waiting.clear();
            t.parked.clear();
        }
    }

    /// A neighbour's link is gone: pushes to it go back to the master.
    fn peer_lost(&mut self, transfer: u64, idx: u32, conn: ConnId) {
        let Some(t) = self.transfers.get_mut(&transfer) else { return };
        if t.peers.get(&idx) == Some(&conn) {
            t.peers.remove(&idx);
        }
        let master = t.master;
        for (block, _) in t.waiting.remove(&idx).unwrap_or_default() {
            if let Some(m) = master {
                self.send(m, Msg::Unsent { transfer, block, to: idx, why: "peer link lost".into() });
            }
        }
    }

    /// Seals a transfer that holds every block, and publishes it at once with `publish = each`.
    fn maybe_ready(&mut self, transfer: u64) {
        let Some(t) = self.transfers.get_mut(&transfer) else { return };
        if t.state != TState::Receiving || t.nheld < t.manifest.blocks() {
            return;
        }
        if let Err(e) = self.store.seal(transfer) {
            return self.fail(transfer, e.to_string());
        }
        t.state = TState::Ready;
        log::info!("event=po_ready transfer={transfer} class={} bytes={}", t.class.name, t.bytes);
        let (master, each) = (t.master, t.class.publish == Publish::Each);
        if let Some(m) = master {
            self.send(m, Msg::Ready { transfer });
        }
        if each {
            self.publish(transfer);
        }
    }

    fn publish(&mut self, transfer: u64) {
        let Some(t) = self.transfers.get_mut(&transfer) else { return };
        if t.state != TState::Ready {
            return;
        }
        match self.store.publish(transfer, t.class.flag_file.as_deref(), t.class.mirror) {
            Ok((files, bytes)) => {
                t.state = TState::Published;
                self.stats.transfers_published += 1;
                log::info!("event=publish transfer={transfer} class={} files={files} bytes={bytes}", t.class.name);
                let Some(name) = t.class.hook.clone() else { return self.report_done(transfer) };
                let Some(dir) = self.settings.hook_dir.clone() else {
                    t.hook = Some((-1, format!("hook {name}: this po has no hook_dir")));
                    return self.report_done(transfer);
                };
                let env = vec![
                    ("WUGUI_TRANSFER".to_string(), transfer.to_string()),
                    ("WUGUI_CLASS".to_string(), t.class.name.clone()),
                    ("WUGUI_DEST".to_string(), t.dest.clone()),
                    ("WUGUI_FILES".to_string(), files.to_string()),
                    ("WUGUI_BYTES".to_string(), bytes.to_string()),
                ];
                let timeout = Duration::from_secs(t.class.hook_timeout);
                self.out.push_back(Action::RunHook { id: transfer, dir, name, env, timeout });
            }
            Err(e) => self.fail(transfer, format!("publish: {e}")),
        }
    }

    /// DONE to the master, with the hook's result when there was one.
    fn report_done(&mut self, transfer: u64) {
        let Some(t) = self.transfers.get(&transfer) else { return };
        let (files, bytes) = (t.manifest.files() as u64, t.manifest.bytes());
        let (hook_exit, hook_tail) = match &t.hook {
            Some((c, tail)) => (Some(*c), tail.clone()),
            None => (None, String::new()),
        };
        if let Some(m) = t.master {
            self.send(m, Msg::Done { transfer, files, bytes, hook_exit, hook_tail });
        }
    }

    fn on_hook_done(&mut self, transfer: u64, exit: i32, tail: String) {
        let Some(t) = self.transfers.get_mut(&transfer) else { return };
        let name = t.class.hook.clone().unwrap_or_default();
        if exit == 0 {
            log::info!("event=hook_done transfer={transfer} hook={name} exit=0");
        } else {
            let last = tail.lines().last().unwrap_or("").replace('"', "'");
            log::warn!("event=hook_failed transfer={transfer} hook={name} exit={exit} tail=\"{last}\"");
            self.stats.hook_failures += 1;
        }
        t.hook = Some((exit, tail));
        self.report_done(transfer);
    }

    /// This po gives up on `transfer`; what was published before stays.
    fn fail(&mut self, transfer: u64, error: String) {
        let Some(t) = self.transfers.get_mut(&transfer) else { return };
        log::error!("event=po_failed transfer={transfer} class={} error=\"{error}\"", t.class.name);
        if matches!(t.state, TState::Receiving | TState::Ready) {
            self.stats.transfers_failed += 1;
        }
        t.state = TState::Failed;
        t.error = error.clone();
        self.store.abort(transfer, true);
        if let Some(m) = t.master.take() {
            self.send(m, Msg::Failed { transfer, error });
        }
    }

    fn on_master_frame(&mut self, now: Instant, conn: ConnId, transfer: Option<u64>, msg: Msg) {
        match msg {
            Msg::Block { head, data } if Some(head.transfer) == transfer => {
                self.on_block(conn, From::Control, head, data)
            }
            Msg::Peers { transfer: t, me, master_key, links } if Some(t) == transfer => {
                self.on_peers(now, t, me, master_key, links)
            }
            Msg::Push { transfer: t, block, to } if Some(t) == transfer => self.on_push(now, t, block, to),
            Msg::Sums { transfer: t, sums } if Some(t) == transfer => self.on_sums(t, sums),
            Msg::CheckSums { transfer: t, sums } if Some(t) == transfer => self.on_check_sums(t, sums),
            Msg::Commit { transfer: t } if Some(t) == transfer => {
                let ready = self.transfers.get(&t).map(|x| x.state);
                match ready {
                    Some(TState::Ready) => self.publish(t),
                    Some(TState::Published) => {}
                    _ => self.fail(t, "COMMIT before every block was held".into()),
                }
            }
            Msg::Abort { transfer: t, reason } if Some(t) == transfer => {
                log::warn!("event=transfer_abort transfer={t} reason=\"{reason}\"");
                if let Some(x) = self.transfers.remove(&t) {
                    if x.state != TState::Published {
                        self.store.abort(t, true);
                    }
                }
            }
            Msg::Ping => {}
            Msg::StatQuery => self.stat_reply(conn),
            other => {
                log::warn!("event=protocol_error role=po error=\"unexpected {:?} from master\"", other.ty());
                self.refuse(conn, Reason::Protocol, format!("unexpected {:?}", other.ty()));
            }
        }
    }

    fn stat_reply(&mut self, conn: ConnId) {
        let transfers = self
            .transfers
            .iter()
            .map(|(id, t)| TransferStat {
                transfer: *id,
                class: t.class.name.clone(),
                state: t.state.name().into(),
                total: t.manifest.bytes(),
                done: t.bytes,
                elapsed_ms: 0,
                pos: vec![],
                master: String::new(),
                started_unix: 0,
                rate: 0,
            })
            .collect();
        self.send(conn, Msg::StatReply { transfers });
    }
}

impl<S: Store> Machine for PoMachine<S> {
    fn handle_event(&mut self, now: Instant, ev: Event) {
        match ev {
            Event::HookDone { id, exit, tail } => self.on_hook_done(id, exit, tail),
            Event::Accepted { conn, peer } => {
                self.conns
                    .insert(conn, Conn { peer: Some(peer), kind: ConnKind::New, deadline: Some(now + HANDSHAKE) });
            }
            Event::Connected { conn } => {
                if let Some(Conn { kind: ConnKind::Peer { transfer, idx, .. }, .. }) = self.conns.get(&conn) {
                    let (transfer, idx) = (*transfer, *idx);
                    let Some(t) = self.transfers.get(&transfer) else { return };
                    let proof = t.link_keys.get(&idx).copied().unwrap_or_default();
                    let msg = Msg::PeerHello { token: t.token.clone(), me: t.me.unwrap_or(0), proof };
                    self.send(conn, msg);
                    if let Some(c) = self.conns.get_mut(&conn) {
                        c.deadline = None;
                    }
                    return self.flush_waiting(now, transfer, idx);
                }
                let Some(Conn { kind: ConnKind::Cac { master, .. }, .. }) = self.conns.get(&conn) else { return };
                let master = *master;
                let presenter = self.conns.get(&master).and_then(|c| c.peer).map(|p| p.ip().to_string());
                let (Some(p), Some(presenter)) = (self.pending.get(&master), presenter) else { return };
                let msg = Msg::Verify { token: p.token.clone(), po: p.po.clone(), presenter };
                self.send(conn, msg);
            }
            Event::Frame { conn, msg } => {
                let Some(c) = self.conns.get_mut(&conn) else { return };
                match (&c.kind, msg) {
                    (ConnKind::New, Msg::Offer { token, po, manifest }) => {
                        self.on_offer(now, conn, token, po, &manifest)
                    }
                    (ConnKind::New, Msg::PeerHello { token, me, proof }) => {
                        self.on_peer_hello(now, conn, &token, me, proof)
                    }
                    (ConnKind::Peer { transfer, idx, .. }, Msg::Block { head, data }) if head.transfer == *transfer => {
                        let idx = *idx;
                        self.on_block(conn, From::Peer(idx), head, data)
                    }
                    (ConnKind::MasterData { transfer }, Msg::Block { head, data }) if head.transfer == *transfer => {
                        self.on_block(conn, From::MasterData, head, data)
                    }
                    (ConnKind::Peer { .. } | ConnKind::MasterData { .. }, Msg::Ping) => {}
                    (ConnKind::New | ConnKind::Stat, Msg::StatQuery) => {
                        c.kind = ConnKind::Stat;
                        c.deadline = Some(now + MASTER_IDLE);
                        self.stat_reply(conn);
                    }
                    (ConnKind::Master { transfer }, msg) => {
                        let transfer = *transfer;
                        if transfer.is_some() {
                            c.deadline = Some(now + MASTER_IDLE);
                        }
                        self.on_master_frame(now, conn, transfer, msg)
                    }
                    (ConnKind::Cac { master, .. }, Msg::VerifyOk { transfer, class_name, class }) => {
                        let master = *master;
                        self.conns.remove(&conn);
                        self.out.push_back(Action::Close { conn });
                        self.on_verified(now, master, transfer, &class, &class_name);
                    }
                    (ConnKind::Cac { master, .. }, Msg::Denied { reason, text }) => {
                        // The CAC has spoken: pass its refusal on, don't ask another.
                        let master = *master;
                        self.conns.remove(&conn);
                        log::warn!("event=offer_refused reason={} error=\"{text}\"", reason.name());
                        self.refuse(master, reason, text);
                    }
                    (_, other) => {
                        let ty = other.ty();
                        log::warn!("event=protocol_error role=po error=\"unexpected {ty:?}\"");
                        if matches!(c.kind, ConnKind::Cac { .. }) {
                            self.cac_failed(now, conn, "CAC sent an unexpected message");
                        } else {
                            self.refuse(conn, Reason::Protocol, format!("unexpected {ty:?}"));
                        }
                    }
                }
            }
            Event::Closed { conn, reason } => {
                let Some(c) = self.conns.get(&conn) else { return };
                match c.kind {
                    ConnKind::Cac { .. } => {
                        self.cac_failed(now, conn, &reason.or("closed"));
                    }
                    ConnKind::Master { transfer } => {
                        self.conns.remove(&conn);
                        self.pending.remove(&conn);
                        // Staged blocks stay for a master that comes back; what was published stays.
                        // The swarm's links go: only this master could schedule them.
                        if let Some(id) =
                            transfer.filter(|t| self.transfers.get(t).is_some_and(|x| x.master == Some(conn)))
                        {
                            self.close_swarm_links(id);
                        }
                        if let Some(t) = transfer.and_then(|t| self.transfers.get_mut(&t)) {
                            if t.master == Some(conn) {
                                t.master = None;
                                if t.state == TState::Receiving || t.state == TState::Ready {
                                    log::warn!(
                                        "event=master_lost transfer={} class={} held={}/{} error=\"{reason}\"",
                                        transfer.unwrap_or(0),
                                        t.class.name,
                                        t.nheld,
                                        t.manifest.blocks()
                                    );
                                }
                            }
                        }
                    }
                    ConnKind::Peer { transfer, idx, .. } => {
                        self.conns.remove(&conn);
                        let receiving = self.transfers.get(&transfer).is_some_and(|t| t.state == TState::Receiving);
                        if receiving || reason != Close::Eof {
                            log::info!("event=peer_lost transfer={transfer} peer=po#{idx} error=\"{reason}\"");
                        }
                        if reason != Close::Eof {
                            self.stats.peer_errors += 1;
                        }
                        self.peer_lost(transfer, idx, conn);
                    }
                    ConnKind::New | ConnKind::Stat => {
                        // A stranger that sent garbage: one line saying who and why.
                        if let (false, Some(c)) = (reason == Close::Eof, self.conns.remove(&conn)) {
                            let peer = c.peer.map(|p| p.to_string()).unwrap_or_default();
                            log::warn!(
                                "event=protocol_error role=po peer={peer} error=\"{}\"",
                                reason.to_string().replace('"', "'")
                            );
                            self.stats.protocol_errors += 1;
                        }
                        self.conns.remove(&conn);
                    }
                    ConnKind::MasterData { .. } => {
                        self.conns.remove(&conn);
                    }
                }
            }
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        let due: Vec<ConnId> =
            self.conns.iter().filter(|(_, c)| c.deadline.is_some_and(|d| d <= now)).map(|(k, _)| *k).collect();
        for conn in due {
            match self.conns.get(&conn).map(|c| matches!(c.kind, ConnKind::Cac { .. })) {
                Some(true) => self.cac_failed(now, conn, "timed out"),
                Some(false) => {
                    log::info!("event=conn_timeout role=po conn={conn}");
                    self.handle_event(now, Event::Closed { conn, reason: Close::TimedOut });
                    self.out.push_back(Action::Close { conn });
                }
                None => {}
            }
        }
        // Pushes whose link never came up go back to the master.
        let ids: Vec<u64> = self.transfers.keys().copied().collect();
        for id in ids {
            let Some(t) = self.transfers.get_mut(&id) else { continue };
            let mut expired = Vec::new();
            for (idx, list) in t.waiting.iter_mut() {
                list.retain(|(b, at)| {
                    let keep = now.duration_since(*at) < LINK_WAIT;
                    if !keep {
                        expired.push((*idx, *b));
                    }
                    keep
                });
            }
            t.waiting.retain(|_, l| !l.is_empty());
            if let Some(m) = t.master {
                for (to, block) in expired {
                    self.send(m, Msg::Unsent { transfer: id, block, to, why: "no link to that peer".into() });
                }
            }
        }
        // Whole-transfer timeout: a transfer nobody finished is dropped, its blocks kept.
        // Finished ones are forgotten then too.
        let stale: Vec<u64> = self
            .transfers
            .iter()
            .filter(|(_, t)| t.master.is_none() && now.duration_since(t.started) > Duration::from_secs(t.class.timeout))
            .map(|(k, _)| *k)
            .collect();
        for id in stale {
            if let Some(t) = self.transfers.remove(&id) {
                if matches!(t.state, TState::Receiving | TState::Ready) {
                    log::warn!("event=transfer_expired transfer={id} class={}", t.class.name);
                    self.store.abort(id, true);
                }
            }
        }
    }

    fn poll_action(&mut self) -> Option<Action> {
        self.out.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let t = earliest(self.conns.values().map(|c| c.deadline));
        let exp = earliest(
            self.transfers
                .values()
                .filter(|t| t.master.is_none())
                .map(|t| Some(t.started + Duration::from_secs(t.class.timeout))),
        );
        let waits = earliest(
            self.transfers.values().flat_map(|t| t.waiting.values().flatten().map(|(_, at)| Some(*at + LINK_WAIT))),
        );
        earliest([t, exp, waits])
    }

    fn stats(&self) -> Stats {
        // The gauge is counted from the states, so that no path can leave it off by one.
        let active = self.transfers.values().filter(|t| matches!(t.state, TState::Receiving | TState::Ready)).count();
        Stats { transfers_active: active as u64, ..self.stats }
    }
}
