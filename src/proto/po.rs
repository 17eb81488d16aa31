//! The po: receives a transfer, verifies every block, stages it and publishes it.
//!
//! A master connection goes `New` -> (Offer) `Verifying` (asking the CACs in order) ->
//! (VerifyOk) `Receiving` -> (all blocks held) `Ready` -> (Commit, or at once with
//! `publish = each`) `Published`. Any failure sends `Failed` to the master and leaves the
//! published tree as it was. Transfers are keyed by id, so a master that reconnects with the
//! same transfer picks up where it left.

use super::auth::Token;
use super::class::Publish;
use super::manifest::hex;
use super::msg::{Reason, TransferStat};
use super::{earliest, Action, ClassCfg, ConnId, Event, Machine, Manifest, Msg, Store, Sum};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
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
    Cac { master: ConnId, cac: usize },
    /// A `wugui-stat` client.
    Stat,
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
}

pub struct PoMachine<S: Store> {
    settings: PoSettings,
    store: S,
    conns: HashMap<ConnId, Conn>,
    pending: HashMap<ConnId, Pending>,
    transfers: HashMap<u64, Transfer>,
    next_conn: ConnId,
    out: VecDeque<Action>,
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
    fn ask_cac(&mut self, now: Instant, master: ConnId, cac: usize) {
        let Some(&addr) = self.settings.cacs.get(cac) else {
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
        if let Some(Conn { kind: ConnKind::Cac { master, cac }, peer, .. }) = self.conns.remove(&conn) {
            self.out.push_back(Action::Close { conn });
            log::warn!(
                "event=cac_failover role=po cac={} error=\"{why}\"",
                peer.map(|p| p.to_string()).unwrap_or_default()
            );
            if self.pending.contains_key(&master) {
                self.ask_cac(now, master, cac + 1);
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
        self.ask_cac(now, conn, 0);
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
        if class.block_size != p.manifest.block_size {
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
                let (state, files, bytes) = (t.state, t.manifest.files() as u64, t.manifest.bytes());
                self.set_master(master, transfer, now);
                self.send(master, Msg::Accept { transfer, have });
                if state != TState::Receiving {
                    self.send(master, Msg::Ready { transfer });
                }
                if state == TState::Published {
                    self.send(master, Msg::Done { transfer, files, bytes, hook_exit: None, hook_tail: String::new() });
                }
                return;
            }
            self.transfers.remove(&transfer);
        }
        let held = match self.store.prepare(transfer, &dest, &p.manifest) {
            Ok(h) if h.len() as u64 == p.manifest.blocks() => h,
            Ok(_) => vec![false; p.manifest.blocks() as usize],
            Err(e) => {
                log::error!("event=po_failed transfer={transfer} class={} error=\"{e}\"", class.name);
                return self.refuse(master, Reason::Disk, e);
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
            },
        );
        self.set_master(master, transfer, now);
        self.send(master, Msg::Accept { transfer, have });
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

    fn on_block(&mut self, conn: ConnId, head: super::BlockHead, data: &[u8]) {
        let Some(t) = self.transfers.get_mut(&head.transfer) else {
            return self.refuse(conn, Reason::Protocol, format!("block for unknown transfer {}", head.transfer));
        };
        if t.state != TState::Receiving {
            return;
        }
        let Some(b) = t.manifest.block(head.index) else {
            return self.fail(head.transfer, format!("block {} is past the end of the manifest", head.index));
        };
        if t.held[b.index as usize] {
            return;
        }
        if data.len() != b.len as usize {
            return self.fail(head.transfer, format!("block {} has {} bytes, expected {}", b.index, data.len(), b.len));
        }
        let sum = Sum::of(t.class.verify, data);
        if sum != head.sum && t.class.verify != super::Verify::None {
            let path = t.manifest.entries()[b.entry as usize].path.clone();
            let verify = t.class.verify;
            log::warn!("event=block_bad transfer={} block={} path={path} source=master", head.transfer, b.index);
            return self.fail(head.transfer, format!("block {} of {path} failed its {verify} check", b.index));
        }
        if let Err(e) = self.store.write_block(head.transfer, &b, data) {
            return self.fail(head.transfer, e);
        }
        let t = self.transfers.get_mut(&head.transfer).expect("checked above");
        t.held[b.index as usize] = true;
        t.nheld += 1;
        t.bytes += b.len as u64;
        self.send(conn, Msg::Have { transfer: head.transfer, blocks: vec![b.index] });
        self.maybe_ready(head.transfer);
    }

    /// Seals a transfer that holds every block, and publishes it at once with `publish = each`.
    fn maybe_ready(&mut self, transfer: u64) {
        let Some(t) = self.transfers.get_mut(&transfer) else { return };
        if t.state != TState::Receiving || t.nheld < t.manifest.blocks() {
            return;
        }
        if let Err(e) = self.store.seal(transfer) {
            return self.fail(transfer, e);
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
                log::info!("event=publish transfer={transfer} class={} files={files} bytes={bytes}", t.class.name);
                if let Some(m) = t.master {
                    self.send(m, Msg::Done { transfer, files, bytes, hook_exit: None, hook_tail: String::new() });
                }
            }
            Err(e) => self.fail(transfer, format!("publish: {e}")),
        }
    }

    /// This po gives up on `transfer`; what was published before stays.
    fn fail(&mut self, transfer: u64, error: String) {
        let Some(t) = self.transfers.get_mut(&transfer) else { return };
        log::error!("event=po_failed transfer={transfer} class={} error=\"{error}\"", t.class.name);
        t.state = TState::Failed;
        t.error = error.clone();
        self.store.abort(transfer, true);
        if let Some(m) = t.master.take() {
            self.send(m, Msg::Failed { transfer, error });
        }
    }

    fn on_master_frame(&mut self, conn: ConnId, transfer: Option<u64>, msg: Msg) {
        match msg {
            Msg::Block { head, data } if Some(head.transfer) == transfer => self.on_block(conn, head, data.bytes()),
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

pub fn bitmap(held: &[bool]) -> Vec<u8> {
    let mut v = vec![0u8; held.len().div_ceil(8)];
    for (i, h) in held.iter().enumerate() {
        if *h {
            v[i / 8] |= 1 << (i % 8);
        }
    }
    v
}

pub fn bit(map: &[u8], i: u64) -> bool {
    map.get((i / 8) as usize).is_some_and(|b| b & (1 << (i % 8)) != 0)
}

impl<S: Store> Machine for PoMachine<S> {
    fn handle_event(&mut self, now: Instant, ev: Event) {
        match ev {
            Event::Accepted { conn, peer } => {
                self.conns
                    .insert(conn, Conn { peer: Some(peer), kind: ConnKind::New, deadline: Some(now + HANDSHAKE) });
            }
            Event::Connected { conn } => {
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
                        self.on_master_frame(conn, transfer, msg)
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
            Event::Closed { conn, error } => {
                let Some(c) = self.conns.get(&conn) else { return };
                match c.kind {
                    ConnKind::Cac { .. } => {
                        let why = if error.is_empty() { "closed".to_owned() } else { error };
                        self.cac_failed(now, conn, &why);
                    }
                    ConnKind::Master { transfer } => {
                        self.conns.remove(&conn);
                        self.pending.remove(&conn);
                        // Staged blocks stay for a master that comes back; what was published stays.
                        if let Some(t) = transfer.and_then(|t| self.transfers.get_mut(&t)) {
                            if t.master == Some(conn) {
                                t.master = None;
                                if t.state == TState::Receiving || t.state == TState::Ready {
                                    log::warn!(
                                        "event=master_lost transfer={} class={} held={}/{} error=\"{error}\"",
                                        transfer.unwrap_or(0),
                                        t.class.name,
                                        t.nheld,
                                        t.manifest.blocks()
                                    );
                                }
                            }
                        }
                    }
                    _ => {
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
                    self.handle_event(now, Event::Closed { conn, error: "timed out".into() });
                    self.out.push_back(Action::Close { conn });
                }
                None => {}
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
        earliest([t, exp])
    }
}
