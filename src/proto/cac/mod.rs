//! The Config & Auth Center: authorises masters, issues tokens, verifies them for pos, and
//! keeps the live table of transfers that masters report.
//!
//! Every request is one frame on a fresh or kept connection:
//! - `AuthRequest` (master): unknown class or address outside `masters` is `Denied`; a class
//!   with a master secret first gets an `AuthChallenge`, answered by `AuthResponse`; then
//!   `AuthGrant` with the token, the po list and the class settings (or `Busy` when the
//!   table holds `MAX_LIVE` live transfers).
//! - `Verify` (po): the token's MAC, expiry, presenting master and the po's membership of the
//!   class are checked, then `VerifyOk` carries the class settings (the po takes dest and hook
//!   from here, never from the master).
//! - `Progress` (master): updates the master's own entry of the transfer table (`table.rs`:
//!   its bounds and expiry). A transfer the table does not hold is adopted only on its token
//!   (MAC, class, transfer id and the reporting address checked), and never takes the class
//!   from another running push (`busy.rs`). `StatQuery`: `StatReply`.
//!
//! Any other frame type is refused at its header (`ACCEPTS`), and no frame may be larger than
//! the largest of these (`MAX_FRAME`): a peer never makes the CAC buffer a manifest or a block.

mod table;
#[cfg(test)]
mod tests;

mod busy;

pub use busy::transfer_id;

use super::auth::{self, Token, TokenError};
use super::cidr::Cidr;
use super::msg::{Reason, TransferStat};
use super::sites::{self, SiteLink, SiteTotals};
use super::text::kv_quote;
use super::wire::{MsgType, TypeSet};
use super::{earliest, Action, ClassCfg, Close, ConnId, Env, Event, Machine, Msg, Stats};
use core::net::{IpAddr, SocketAddr};
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};
use table::Table;
pub use table::{KEEP_DONE, MAX_LIVE, MAX_PER_MASTER, RECENT, SILENT};

/// The frame types a CAC takes (an OFFER only to say that it is no po); the reactor refuses
/// any other at its header (`Action::FrameTypes`).
pub const ACCEPTS: TypeSet = TypeSet::of(&[
    MsgType::AuthRequest,
    MsgType::AuthResponse,
    MsgType::Verify,
    MsgType::Offer,
    MsgType::Progress,
    MsgType::StatQuery,
    MsgType::Ping,
]);
/// The largest frame a CAC takes: a PROGRESS, whose per-po list (up to `wire::MAX_ADDRS` pos,
/// each with an error text) is bounded by the control frame only. An address that may push
/// some class may send this much at once (before a grant: a master that lost its CAC reports
/// on a fresh connection); any other address `wire::MAX_PREAUTH`.
pub const MAX_FRAME: u32 = ACCEPTS.max_payload();
const _: () = assert!(MAX_FRAME == super::wire::MAX_CONTROL);

/// A class as the CAC holds it.
#[derive(Debug, Clone)]
pub struct ClassAuth {
    pub cfg: ClassCfg,
    pub pos: Vec<SocketAddr>,
    /// Each po's site label (`""`, or none at all: the master's site).
    pub sites: Vec<String>,
    /// CIDR networks allowed to push.
    pub masters: Vec<Cidr>,
    pub master_secret: Option<Vec<u8>>,
}

impl ClassAuth {
    fn master_allowed(&self, ip: IpAddr) -> bool {
        self.masters.iter().any(|c| c.contains(ip))
    }
}

#[derive(Debug, Clone)]
pub struct CacSettings {
    pub key: Vec<u8>,
    pub classes: Vec<ClassAuth>,
    /// Token lifetime, seconds.
    pub token_ttl: u64,
}

/// Bytes of class names an unknown-class refusal lists at most: with the asked name (at most
/// `wire::MAX_NAME`, escaped) the text stays inside `wire::MAX_TEXT`.
const LIST_BYTES: usize = 2048;
const HANDSHAKE: Duration = Duration::from_secs(10);
/// Masters report every second; a silent connection is dropped after this.
const IDLE: Duration = Duration::from_secs(120);

enum State {
    /// Nothing asked yet.
    New,
    /// Sent a challenge for `class`.
    Challenged { class: String, nonce: [u8; 32] },
    /// A master that holds a grant; it reports progress here.
    Master,
    /// A po or a stat client: served, kept until it closes or idles out.
    Served,
}

struct Conn {
    peer: SocketAddr,
    state: State,
    deadline: Instant,
    /// A refused progress report was logged: one line a connection is enough.
    warned: bool,
}

pub struct CacMachine {
    settings: CacSettings,
    env: Env,
    conns: HashMap<ConnId, Conn>,
    transfers: Table,
    /// The live grant of each class: one push of a class at a time.
    busy: busy::Busy,
    out: VecDeque<Action>,
    stats: Stats,
    /// Bytes per site link over every transfer reported here (`/metrics`).
    site_totals: SiteTotals,
}

impl CacMachine {
    pub fn new(settings: CacSettings, env: Env) -> CacMachine {
        let (conns, transfers, out) = (HashMap::new(), Table::default(), VecDeque::new());
        CacMachine {
            settings,
            env,
            conns,
            transfers,
            busy: busy::Busy::default(),
            out,
            stats: Stats::default(),
            site_totals: SiteTotals::default(),
        }
    }

    /// SIGHUP: new classes and key; live transfers and connections go on.
    pub fn reload(&mut self, settings: CacSettings) {
        self.settings = settings;
    }

    fn class(&self, name: &str) -> Option<&ClassAuth> {
        self.settings.classes.iter().find(|c| c.cfg.name == name)
    }

    /// The classes `ip` may push, for a master that asked for another: the names it may use
    /// (as many as fit `LIST_BYTES`), never a class it may not push.
    fn classes_for(&self, ip: IpAddr) -> String {
        let mut names: Vec<&str> =
            self.settings.classes.iter().filter(|c| c.master_allowed(ip)).map(|c| c.cfg.name.as_str()).collect();
        if names.is_empty() {
            return format!("{ip} may push no class here (see masters in cac.conf)");
        }
        names.sort_unstable();
        let (mut list, mut shown) = (String::new(), 0);
        for n in &names {
            if list.len() + n.len() > LIST_BYTES {
                break;
            }
            list += if shown == 0 { "" } else { ", " };
            list += n;
            shown += 1;
        }
        match names.len() - shown {
            0 => format!("{ip} may push {list}"),
            more => format!("{ip} may push {list} and {more} more"),
        }
    }

    fn deny(&mut self, conn: ConnId, reason: Reason, text: String) {
        match reason {
            Reason::UnknownClass | Reason::MasterNotAllowed | Reason::ChallengeFailed | Reason::Busy => {
                self.stats.auth_denied += 1
            }
            Reason::Protocol => self.stats.protocol_errors += 1,
            _ => self.stats.tokens_refused += 1,
        }
        self.out.push_back(Action::Send { conn, msg: Msg::Denied { reason, text } });
        self.out.push_back(Action::Close { conn });
        self.conns.remove(&conn);
    }

    /// One request on `conn`. The connection's state is taken out while the request is
    /// served; each step sets the next one (a denial removes the connection).
    fn on_frame(&mut self, now: Instant, conn: ConnId, msg: Msg) {
        let Some(c) = self.conns.get_mut(&conn) else { return };
        let peer = c.peer;
        c.deadline = now + IDLE;
        let state = std::mem::replace(&mut c.state, State::Served);
        match (state, msg) {
            (State::New, Msg::AuthRequest { class }) => self.on_auth_request(now, conn, peer, class),
            (State::Challenged { class, nonce }, Msg::AuthResponse { mac }) => {
                self.on_auth_response(now, conn, peer, &class, &nonce, &mac)
            }
            (State::New | State::Served, Msg::Verify { token, po, presenter }) => {
                self.on_verify(conn, &token, &po, &presenter)
            }
            (State::Master | State::New, Msg::Progress { stat, token }) => {
                self.on_progress(now, conn, peer, stat, &token)
            }
            (s @ (State::New | State::Served | State::Master), Msg::StatQuery) => {
                let transfers = self.transfers.reply(now);
                self.out.push_back(Action::Send { conn, msg: Msg::StatReply { transfers } });
                let master = matches!(s, State::Master);
                self.set_state(conn, if master { State::Master } else { State::Served });
            }
            (s, Msg::Ping) => self.set_state(conn, s),
            // A master whose class lists this CAC as a po: say what we are.
            (_, Msg::Offer { .. }) => {
                log::warn!("event=protocol_error peer={peer} error=\"Offer: a master takes this CAC for a po\"");
                let text = "unexpected Offer: this address is a CAC (wugui-cac), not a po";
                self.deny(conn, Reason::Protocol, text.into());
            }
            // Anything else is a protocol violation by the peer.
            (_, other) => {
                log::warn!("event=protocol_error peer={peer} error=\"unexpected {:?}\"", other.ty());
                self.deny(conn, Reason::Protocol, format!("unexpected {:?}", other.ty()));
            }
        }
    }

    fn set_state(&mut self, conn: ConnId, state: State) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.state = state;
        }
    }

    /// A master asks for a class: check its address, then challenge or grant.
    fn on_auth_request(&mut self, now: Instant, conn: ConnId, peer: SocketAddr, class: String) {
        let Some(ca) = self.class(&class) else {
            log::warn!("event=auth_denied class={} master={} reason=unknown_class", kv_quote(&class), peer.ip());
            let text = format!("no class {class:?} on this CAC; {}", self.classes_for(peer.ip()));
            return self.deny(conn, Reason::UnknownClass, text);
        };
        if !ca.master_allowed(peer.ip()) {
            log::warn!("event=auth_denied class={class} master={} reason=master_not_allowed", peer.ip());
            return self.deny(
                conn,
                Reason::MasterNotAllowed,
                format!("{} may not push class {class} (see masters in cac.conf)", peer.ip()),
            );
        }
        if ca.master_secret.is_some() {
            let mut nonce = [0u8; 32];
            (self.env.fill_random)(&mut nonce);
            self.out.push_back(Action::Send { conn, msg: Msg::AuthChallenge { nonce } });
            self.set_state(conn, State::Challenged { class, nonce });
        } else {
            self.grant(now, conn, peer, &class);
        }
    }

    /// The master answers the challenge with HMAC(secret, nonce || class).
    fn on_auth_response(
        &mut self,
        now: Instant,
        conn: ConnId,
        peer: SocketAddr,
        class: &str,
        nonce: &[u8; 32],
        mac: &[u8],
    ) {
        let secret = self.class(class).and_then(|c| c.master_secret.clone()).unwrap_or_default();
        if auth::verify_mac(&secret, &challenge_data(nonce, class), mac) {
            self.grant(now, conn, peer, class);
        } else {
            log::warn!("event=auth_denied class={class} master={} reason=challenge_failed", peer.ip());
            self.deny(conn, Reason::ChallengeFailed, "master secret does not match".into());
        }
    }

    /// A po asks whether a token is good.
    fn on_verify(&mut self, conn: ConnId, token: &[u8], po: &str, presenter: &str) {
        match self.verify(token, po, presenter) {
            Ok((t, ca)) => {
                log::info!(
                    "event=verify_ok transfer={} class={} po={} master={}",
                    t.transfer,
                    t.class,
                    kv_quote(po),
                    kv_quote(presenter)
                );
                let msg = Msg::VerifyOk { transfer: t.transfer, class_name: t.class, class: ca.cfg.to_pairs() };
                self.stats.tokens_verified += 1;
                self.out.push_back(Action::Send { conn, msg });
            }
            Err((reason, text)) => {
                log::warn!(
                    "event=verify_denied po={} master={} reason={} error={}",
                    kv_quote(po),
                    kv_quote(presenter),
                    reason.name(),
                    crate::proto::text::quoted(&text)
                );
                self.deny(conn, reason, text);
            }
        }
    }

    /// Progress from a master of the report's class. A report from an address that may not
    /// push that class ends the connection. A transfer the table holds for this address is
    /// updated (`Table::update`); any other is adopted only on its token (`adopt`). A refused
    /// report does not end the connection (the master keeps pushing, and would only dial
    /// again): it changes nothing, and only its first refusal on a connection is logged
    /// (`event=progress_refused reason=...`).
    fn on_progress(&mut self, now: Instant, conn: ConnId, peer: SocketAddr, stat: TransferStat, token: &[u8]) {
        let ip = peer.ip();
        if !self.class(&stat.class).is_some_and(|ca| ca.master_allowed(ip)) {
            return self.deny(conn, Reason::MasterNotAllowed, "not a master of this class".into());
        }
        let (transfer, claimed) = (stat.transfer, stat.class.clone());
        let finished = table::is_finished(&stat);
        let mut stat = stat;
        let old = self.transfers.sites(transfer, ip);
        let labels = self.class(&stat.class).map(|ca| ca.sites.clone()).unwrap_or_default();
        let known = |n: &str| n == sites::MASTER_SITE || n == sites::UNKNOWN || labels.iter().any(|l| l == n);
        let mut totals = std::mem::take(&mut self.site_totals);
        let before = totals.clone();
        totals.merge(&old, &mut stat.sites, known);
        let class = if self.transfers.holds(now, transfer, ip) {
            Ok(self.transfers.update(now, ip, stat))
        } else {
            self.adopt(now, ip, stat, token)
        };
        // Only an accepted report counts.
        self.site_totals = if class.is_ok() { totals } else { before };
        match class {
            Ok(class) => {
                let conns = &self.conns;
                self.busy.reported(&class, transfer, ip, conn, finished, now, |c| conns.contains_key(&c))
            }
            Err(why) => {
                let first = self.conns.get_mut(&conn).is_some_and(|c| !std::mem::replace(&mut c.warned, true));
                if first {
                    log::warn!(
                        "event=progress_refused transfer={transfer} class={} master={ip} reason={why}",
                        kv_quote(&claimed)
                    );
                }
            }
        }
        self.set_state(conn, State::Master);
    }

    /// A report of a transfer this CAC does not hold (it restarted, another replica granted
    /// it, or the entry expired while its master was silent): adopted only if the report
    /// carries that transfer's token, issued under our key to the reporting address, for the
    /// class and transfer the report names. Returns the class, or why not.
    fn adopt(&mut self, now: Instant, ip: IpAddr, stat: TransferStat, token: &[u8]) -> Result<String, &'static str> {
        if token.is_empty() {
            return Err("no_token");
        }
        let t = Token::verify(token, &self.settings.key, self.env.unix_now(), Some(ip)).map_err(|e| match e {
            TokenError::Malformed(_) | TokenError::BadSignature => "bad_token",
            TokenError::Expired { .. } => "token_expired",
            TokenError::WrongMaster { .. } => "wrong_master",
            TokenError::WrongClass { .. } => "wrong_class",
        })?;
        if t.class != stat.class {
            return Err("wrong_class");
        }
        if t.transfer != stat.transfer {
            return Err("wrong_transfer");
        }
        self.transfers.adopt(now, ip, stat)?;
        log::info!("event=transfer_adopted transfer={} class={} master={ip}", t.transfer, t.class);
        Ok(t.class)
    }

    fn grant(&mut self, now: Instant, conn: ConnId, peer: SocketAddr, class: &str) {
        let Some(ca) = self.class(class).cloned() else { return };
        match self.transfers.room(now, peer.ip()) {
            Ok(()) => {}
            Err("master_full") => {
                let ip = peer.ip();
                log::warn!("event=auth_denied class={class} master={ip} reason=busy live_master={MAX_PER_MASTER}");
                let text = format!(
                    "this CAC already tracks {MAX_PER_MASTER} live transfers of master {ip}; retry when some finish (a grant never used expires after {} s)",
                    SILENT.as_secs()
                );
                return self.deny(conn, Reason::Busy, text);
            }
            Err(_) => {
                log::warn!("event=auth_denied class={class} master={} reason=busy live={MAX_LIVE}", peer.ip());
                let text = format!(
                    "this CAC already tracks {MAX_LIVE} live transfers; retry when some finish (a grant never used expires after {} s)",
                    SILENT.as_secs()
                );
                return self.deny(conn, Reason::Busy, text);
            }
        }
        if let Some(text) = self.busy.refusal(class, now, |c| self.conns.contains_key(&c)) {
            log::warn!(
                "event=auth_denied class={class} master={} reason=busy error={}",
                peer.ip(),
                crate::proto::text::quoted(&text)
            );
            return self.deny(conn, Reason::Busy, text);
        }
        // Ordered by grant time: the pos' fence (README "Concurrent pushes"). Never 0, which
        // marks the transfers a STAT_REPLY left out.
        let transfer = transfer_id((self.env.unix_ms)(), self.env.random_u64()).max(1);
        self.busy.granted(class, transfer, peer.ip(), conn, now);
        let mut nonce = [0u8; 16];
        (self.env.fill_random)(&mut nonce);
        let expiry = self.env.unix_now() + self.settings.token_ttl;
        let token = Token::issue(&self.settings.key, transfer, class, peer.ip(), expiry, nonce);
        self.stats.auth_granted += 1;
        log::info!("event=auth_grant transfer={transfer} class={class} master={} pos={}", peer.ip(), ca.pos.len());
        let stat = TransferStat {
            transfer,
            class: class.to_owned(),
            master: peer.ip().to_string(),
            state: "authorized".into(),
            started_unix: self.env.unix_now(),
            ..Default::default()
        };
        self.transfers.add(now, peer.ip(), stat);
        let msg = Msg::AuthGrant {
            transfer,
            token: token.encode(),
            pos: ca.pos.iter().map(|p| p.to_string()).collect(),
            class: ca.cfg.to_pairs(),
            // Only a class with labels sends them: the master reads none as one site.
            sites: if ca.sites.iter().any(|s| !s.is_empty()) { ca.sites.clone() } else { Vec::new() },
        };
        self.out.push_back(Action::Send { conn, msg });
        // A granted master's progress reports may be big (one line a po).
        self.out.push_back(Action::FrameLimit { conn, max: MAX_FRAME });
        self.set_state(conn, State::Master);
    }

    fn verify(&self, token: &[u8], po: &str, presenter: &str) -> Result<(Token, &ClassAuth), (Reason, String)> {
        let presenter: IpAddr = presenter.parse().map_err(|_| (Reason::Protocol, "bad presenter address".into()))?;
        let now = self.env.unix_now();
        let t = Token::verify(token, &self.settings.key, now, Some(presenter)).map_err(|e| {
            let r = if matches!(e, TokenError::Expired { .. }) { Reason::Expired } else { Reason::BadToken };
            (r, e.to_string())
        })?;
        let ca = self.class(&t.class).ok_or((Reason::UnknownClass, format!("no class {:?} on this CAC", t.class)))?;
        let po_addr: Option<SocketAddr> = po.parse().ok();
        if !ca.pos.iter().any(|p| Some(*p) == po_addr) {
            return Err((Reason::PoNotInClass, format!("po {po} is not in class {}", t.class)));
        }
        Ok((t, ca))
    }
}

pub fn challenge_data(nonce: &[u8; 32], class: &str) -> Vec<u8> {
    let mut d = nonce.to_vec();
    d.extend_from_slice(class.as_bytes());
    d
}

impl Machine for CacMachine {
    fn handle_event(&mut self, now: Instant, ev: Event) {
        match ev {
            Event::Accepted { conn, peer, .. } => {
                self.conns.insert(conn, Conn { peer, state: State::New, deadline: now + HANDSHAKE, warned: false });
                self.out.push_back(Action::FrameTypes { conn, types: ACCEPTS });
                // A master that lost its CAC reports on a fresh connection with no grant here:
                // an address that may push some class may send a report of any size at once.
                if self.settings.classes.iter().any(|c| c.master_allowed(peer.ip())) {
                    self.out.push_back(Action::FrameLimit { conn, max: MAX_FRAME });
                }
            }
            Event::Frame { conn, msg } => self.on_frame(now, conn, msg),
            Event::Closed { conn, reason } => {
                if let Some(c) = self.conns.remove(&conn) {
                    if reason != Close::Eof {
                        log::warn!(
                            "event=protocol_error role=cac peer={} error={}",
                            c.peer,
                            crate::proto::text::quoted(&reason)
                        );
                        self.stats.protocol_errors += 1;
                    }
                }
            }
            Event::Connected { .. } | Event::HookDone { .. } | Event::Verified { .. } | Event::DiskDone { .. } => {}
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        let expired: Vec<ConnId> = self.conns.iter().filter(|(_, c)| c.deadline <= now).map(|(k, _)| *k).collect();
        for conn in expired {
            if let Some(c) = self.conns.remove(&conn) {
                log::info!("event=conn_timeout peer={} role=cac", c.peer);
                self.out.push_back(Action::Close { conn });
            }
        }
    }

    fn poll_action(&mut self) -> Option<Action> {
        self.out.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        earliest(self.conns.values().map(|c| Some(c.deadline)))
    }

    fn stats(&self) -> Stats {
        self.stats
    }

    fn site_bytes(&self) -> Vec<SiteLink> {
        self.site_totals.links()
    }
}
