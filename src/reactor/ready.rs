//! Readiness the loop learns from `poll`: a connect that settled, accepted connections,
//! signals.

use std::io;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::conn::{Conn, State};
use super::{is_fd_limit, Reactor, ACCEPT_PAUSE};
use crate::proto::wire::MAX_PREAUTH;
use crate::proto::{Close, Event, ACCEPTED};

impl Reactor {
    pub(super) fn on_ready(&mut self, slot: usize, ev: &mio::event::Event) {
        let Some(c) = self.conn(slot) else { return };
        if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
            c.readable = true;
        }
        if ev.is_writable() || ev.is_write_closed() || ev.is_error() {
            c.writable = true;
        }
        if let State::Connecting { close_since } = c.state {
            if !c.writable {
                return;
            }
            // mio: on the first writable event, an error or a peer address settles it.
            let res = match c.stream.take_error() {
                Ok(Some(e)) | Err(e) => Err(e),
                Ok(None) => c.stream.peer_addr(),
            };
            match res {
                Ok(peer) => {
                    let _ = c.stream.set_nodelay(true);
                    c.peer = Some(peer);
                    let id = c.id;
                    log::debug!("event=conn_connected conn={id} peer={peer}");
                    match close_since {
                        None => {
                            self.set_state(slot, State::Open);
                            self.events.push_back(Event::Connected { conn: id });
                        }
                        Some(_) => self.set_state(slot, State::Flushing { progress: Instant::now() }),
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::NotConnected && !(ev.is_error() || ev.is_write_closed()) => {
                    // Not settled yet; another writable event will come.
                    c.writable = false;
                    return;
                }
                Err(e) => {
                    let e = if e.kind() == io::ErrorKind::NotConnected {
                        "connection failed".into()
                    } else {
                        e.to_string()
                    };
                    self.fail(slot, Close::Connect(e));
                    return;
                }
            }
        }
        self.mark(slot);
    }

    pub(super) fn accept_all(&mut self, now: Instant) {
        if self.accept_resume.is_some() || self.finishing.is_some() {
            return;
        }
        loop {
            let Some(listener) = &self.listener else { return };
            let (stream, peer) = match listener.accept() {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => continue,
                Err(e) => {
                    // Out of file descriptors (or something stranger): pause, rather than spin
                    // on a listener that stays readable. The timer retries the accept.
                    let what = if is_fd_limit(&e) { "fd_limit" } else { "other" };
                    if self.emfile_logged.is_none_or(|t| now >= t + Duration::from_secs(1)) {
                        log::warn!(
                            "event=accept_error kind={what} error={} action=pause_accept",
                            crate::proto::text::quoted(&e)
                        );
                        self.emfile_logged = Some(now);
                    }
                    self.accept_resume = Some(now + ACCEPT_PAUSE);
                    return;
                }
            };
            if self.max_conns > 0 && self.accepted >= self.max_conns {
                log::warn!("event=conn_refused peer={peer} open={} max_conns={}", self.accepted, self.max_conns);
                continue;
            }
            let local = match stream.local_addr() {
                Ok(a) => a,
                Err(e) => {
                    log::debug!("event=conn_error peer={peer} error=\"getsockname: {e}\"");
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let id = ACCEPTED | self.next_accepted;
            self.next_accepted += 1;
            // Small frames only, until the machine vouched for the peer (`Action::FrameLimit`).
            let mut c = Conn::new(id, stream, Some(peer), State::Open, MAX_PREAUTH);
            // Readiness from before registration is not lost with epoll, but reading once
            // costs nothing and does not depend on that.
            c.readable = true;
            c.writable = true;
            match self.insert(c) {
                Ok(slot) => {
                    log::debug!("event=conn_accepted conn={id} peer={peer}");
                    self.events.push_back(Event::Accepted { conn: id, peer, local });
                    self.mark(slot);
                }
                Err(e) => log::warn!("event=conn_error conn={id} peer={peer} error=\"register: {e}\""),
            }
        }
    }

    pub(super) fn read_signals(&mut self) -> Vec<Signal> {
        let mut out = Vec::new();
        let Some((fd, _)) = &self.sigfd else { return out };
        loop {
            match fd.read_signal() {
                Ok(Some(info)) => match Signal::try_from(info.ssi_signo as i32) {
                    Ok(s) => out.push(s),
                    Err(_) => log::debug!("event=signal_unknown signo={}", info.ssi_signo),
                },
                Ok(None) => break,
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => {
                    log::warn!("event=signal_error error={}", crate::proto::text::quoted(e));
                    break;
                }
            }
        }
        out
    }
}
