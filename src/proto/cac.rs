//! The Config & Auth Center: authorises masters, issues tokens, verifies them for pos, and
//! keeps the live table of transfers that masters report.
//!
//! Every request is one frame on a fresh or kept connection:
//! - `AuthRequest` (master): unknown class or address outside `masters` is `Denied`; a class
//!   with a master secret first gets an `AuthChallenge`, answered by `AuthResponse`; then
//!   `AuthGrant` with the token, the po list and the class settings.
//! - `Verify` (po): the token's MAC, expiry, presenting master and the po's membership of the
//!   class are checked, then `VerifyOk` carries the class settings (the po takes dest and hook
//!   from here, never from the master).
//! - `Progress` (master): updates the transfer table. `StatQuery`: `StatReply`.

use super::auth::{self, Token, TokenError};
use super::cidr::Cidr;
use super::msg::{Reason, TransferStat};
use super::{earliest, Action, ClassCfg, Close, ConnId, Env, Event, Machine, Msg, Stats};
use core::net::{IpAddr, SocketAddr};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

/// A class as the CAC holds it.
#[derive(Debug, Clone)]
pub struct ClassAuth {
    pub cfg: ClassCfg,
    pub pos: Vec<SocketAddr>,
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

const HANDSHAKE: Duration = Duration::from_secs(10);
/// Masters report every second; a silent connection is dropped after this.
const IDLE: Duration = Duration::from_secs(120);
/// Finished transfers stay visible this long, and at most `RECENT` of them.
const KEEP_DONE: Duration = Duration::from_secs(3600);
const RECENT: usize = 100;

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
}

struct Live {
    stat: TransferStat,
    updated: Instant,
    finished: bool,
}

pub struct CacMachine {
    settings: CacSettings,
    env: Env,
    conns: HashMap<ConnId, Conn>,
    transfers: BTreeMap<u64, Live>,
    out: VecDeque<Action>,
    stats: Stats,
}

impl CacMachine {
    pub fn new(settings: CacSettings, env: Env) -> CacMachine {
        let (conns, transfers, out) = (HashMap::new(), BTreeMap::new(), VecDeque::new());
        CacMachine { settings, env, conns, transfers, out, stats: Stats::default() }
    }

    /// SIGHUP: new classes and key; live transfers and connections go on.
    pub fn reload(&mut self, settings: CacSettings) {
        self.settings = settings;
    }

    fn class(&self, name: &str) -> Option<&ClassAuth> {
        self.settings.classes.iter().find(|c| c.cfg.name == name)
    }

    fn deny(&mut self, conn: ConnId, reason: Reason, text: String) {
        match reason {
            Reason::UnknownClass | Reason::MasterNotAllowed | Reason::ChallengeFailed => self.stats.auth_denied += 1,
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
            (State::Master | State::New, Msg::Progress { stat }) => self.on_progress(now, conn, peer, stat),
            (s @ (State::New | State::Served | State::Master), Msg::StatQuery) => {
                self.prune(now);
                let transfers = self.transfers.values().map(|l| l.stat.clone()).collect();
                self.out.push_back(Action::Send { conn, msg: Msg::StatReply { transfers } });
                let master = matches!(s, State::Master);
                self.set_state(conn, if master { State::Master } else { State::Served });
            }
            (s, Msg::Ping) => self.set_state(conn, s),
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
            log::warn!("event=auth_denied class={class} master={} reason=unknown_class", peer.ip());
            return self.deny(conn, Reason::UnknownClass, format!("no class {class:?} on this CAC"));
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
                log::info!("event=verify_ok transfer={} class={} po={po} master={presenter}", t.transfer, t.class);
                let msg = Msg::VerifyOk { transfer: t.transfer, class_name: t.class, class: ca.cfg.to_pairs() };
                self.stats.tokens_verified += 1;
                self.out.push_back(Action::Send { conn, msg });
            }
            Err((reason, text)) => {
                log::warn!("event=verify_denied po={po} master={presenter} reason={} error=\"{text}\"", reason.name());
                self.deny(conn, reason, text);
            }
        }
    }

    /// Progress from a master about a transfer of a class it may push.
    fn on_progress(&mut self, now: Instant, conn: ConnId, peer: SocketAddr, mut stat: TransferStat) {
        let allowed = self.class(&stat.class).is_some_and(|ca| ca.master_allowed(peer.ip()));
        if !allowed {
            return self.deny(conn, Reason::MasterNotAllowed, "not a master of this class".into());
        }
        let finished = matches!(stat.state.as_str(), "ok" | "partial" | "failed" | "dry-run");
        if stat.master.is_empty() {
            stat.master = peer.ip().to_string();
        }
        self.transfers.insert(stat.transfer, Live { stat, updated: now, finished });
        self.set_state(conn, State::Master);
    }

    fn grant(&mut self, now: Instant, conn: ConnId, peer: SocketAddr, class: &str) {
        let Some(ca) = self.class(class).cloned() else { return };
        let transfer = self.env.random_u64() >> 1;
        let mut nonce = [0u8; 16];
        (self.env.fill_random)(&mut nonce);
        let expiry = (self.env.unix_now)() + self.settings.token_ttl;
        let token = Token::issue(&self.settings.key, transfer, class, peer.ip(), expiry, nonce);
        self.stats.auth_granted += 1;
        log::info!("event=auth_grant transfer={transfer} class={class} master={} pos={}", peer.ip(), ca.pos.len());
        let stat = TransferStat {
            transfer,
            class: class.to_owned(),
            master: peer.ip().to_string(),
            state: "authorized".into(),
            started_unix: (self.env.unix_now)(),
            ..Default::default()
        };
        self.transfers.insert(transfer, Live { stat, updated: now, finished: false });
        let msg = Msg::AuthGrant {
            transfer,
            token: token.encode(),
            pos: ca.pos.iter().map(|p| p.to_string()).collect(),
            class: ca.cfg.to_pairs(),
        };
        self.out.push_back(Action::Send { conn, msg });
        // A granted master's progress reports may be big (one line a po).
        self.out.push_back(Action::FrameLimit { conn, max: super::wire::NO_FRAME_LIMIT });
        self.set_state(conn, State::Master);
    }

    fn verify(&self, token: &[u8], po: &str, presenter: &str) -> Result<(Token, &ClassAuth), (Reason, String)> {
        let presenter: IpAddr = presenter.parse().map_err(|_| (Reason::Protocol, "bad presenter address".into()))?;
        let now = (self.env.unix_now)();
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

    fn prune(&mut self, now: Instant) {
        self.transfers.retain(|_, l| !(l.finished && now.duration_since(l.updated) > KEEP_DONE));
        let done: Vec<u64> = self.transfers.iter().filter(|(_, l)| l.finished).map(|(k, _)| *k).collect();
        if done.len() > RECENT {
            let mut by_age: Vec<(Instant, u64)> = done.iter().map(|k| (self.transfers[k].updated, *k)).collect();
            by_age.sort();
            for (_, k) in &by_age[..done.len() - RECENT] {
                self.transfers.remove(k);
            }
        }
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
                self.conns.insert(conn, Conn { peer, state: State::New, deadline: now + HANDSHAKE });
            }
            Event::Frame { conn, msg } => self.on_frame(now, conn, msg),
            Event::Closed { conn, reason } => {
                if let Some(c) = self.conns.remove(&conn) {
                    if reason != Close::Eof {
                        log::warn!(
                            "event=protocol_error role=cac peer={} error=\"{}\"",
                            c.peer,
                            reason.to_string().replace('"', "'")
                        );
                        self.stats.protocol_errors += 1;
                    }
                }
            }
            Event::Connected { .. } | Event::HookDone { .. } => {}
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
}
