//! The machine's actions, applied to sockets: connect, queue frames, close, set rates, run
//! hooks, hand checks to the workers; and closing everything when the machine is finished.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use mio::net::TcpStream;

use super::conn::{Conn, State};
use super::lane::Dir;
use super::{hooks, Reactor, FINISH_FLUSH};
use crate::proto::msg::block_frame_head;
use crate::proto::wire::NO_FRAME_LIMIT;
use crate::proto::{Action, Body, Close, ConnId, Event};

/// Unsent bytes a chain link's socket holds at most (`Action::ShortQueue`): enough that the
/// link never idles between writes, few enough that a hop adds little latency.
const SHORT_QUEUE: u32 = 128 << 10;

impl Reactor {
    pub(super) fn apply(&mut self, a: Action) {
        let now = Instant::now();
        match a {
            Action::Connect { conn, addr } => self.connect(conn, addr),
            Action::Send { conn, msg } => {
                let Some(c) = self.sendable(conn, "send") else { return };
                c.begin_frame();
                for part in msg.to_frame_parts().into_iter().filter(|p| !p.is_empty()) {
                    c.push_bytes(part);
                }
                let slot = self.ids[&conn];
                self.mark(slot);
            }
            Action::SendBlock { conn, head, body } => {
                let len = body.len();
                let Ok(len32) = u32::try_from(len) else {
                    log::warn!("event=send_error conn={conn} error=\"block of {len} bytes is too long\"");
                    return;
                };
                let Some(c) = self.sendable(conn, "send_block") else { return };
                c.begin_frame();
                c.push_bytes(Arc::new(block_frame_head(&head, len32)));
                match body {
                    Body::Bytes(b) => c.push_bytes(b),
                    Body::File { file, offset, len, sendfile } => c.push_file(file, offset, len, sendfile),
                    Body::Files { ranges, sendfile } => {
                        for (file, offset, len) in ranges {
                            c.push_file(file, offset, len, sendfile);
                        }
                    }
                }
                let slot = self.ids[&conn];
                self.mark(slot);
            }
            Action::Close { conn } => {
                // No event follows a close, not even one already read.
                self.events.retain(|e| match e {
                    Event::Accepted { conn: c, .. }
                    | Event::Connected { conn: c }
                    | Event::Frame { conn: c, .. }
                    | Event::Closed { conn: c, .. } => *c != conn,
                    Event::HookDone { .. } | Event::Verified { .. } | Event::DiskDone { .. } => true,
                });
                let Some(&slot) = self.ids.get(&conn) else {
                    log::debug!("event=action_ignored action=close conn={conn} error=\"unknown connection\"");
                    return;
                };
                self.close(slot, now);
            }
            Action::Abandon { conn, last } => {
                if let Some(c) = self.sendable(conn, "abandon") {
                    c.drop_unbegun();
                }
                if let Some(msg) = last {
                    self.apply(Action::Send { conn, msg });
                }
                self.apply(Action::Close { conn });
            }
            Action::RunHook { id, dir, name, env, timeout } => {
                let started = hooks::resolve(std::path::Path::new(&dir), &name).and_then(|p| {
                    hooks::spawn(id, &p, &env, timeout, Instant::now()).map_err(|e| format!("hook {name}: {e}"))
                });
                match started {
                    Ok(h) => {
                        log::info!("event=hook_start id={id} hook={name}");
                        self.hooks.push(h);
                    }
                    Err(tail) => {
                        log::warn!(
                            "event=hook_refused id={id} hook={name} error={}",
                            crate::proto::text::quoted(&tail)
                        );
                        self.events.push_back(Event::HookDone { id, exit: -1, tail });
                    }
                }
            }
            Action::Verify(check) => self.verify(check),
            Action::Disk(job) => self.disk(job),
            Action::FrameLimit { conn, max } => {
                let Some(&slot) = self.ids.get(&conn) else { return };
                let Some(c) = self.slots[slot].as_mut() else { return };
                log::debug!("event=frame_limit conn={conn} max={max}");
                c.max_frame = max;
                if std::mem::take(&mut c.held) {
                    self.mark(slot); // the held header is judged again
                }
            }
            Action::ShortQueue { conn } => {
                let Some(&slot) = self.ids.get(&conn) else { return };
                if let Some(c) = self.slots[slot].as_ref() {
                    use std::os::fd::AsFd;
                    if let Err(e) = crate::sys::sock::set_notsent_lowat(c.stream.as_fd(), SHORT_QUEUE) {
                        log::debug!("event=short_queue conn={conn} error=\"{e}\"");
                    }
                }
            }
            Action::FrameTypes { conn, types } => {
                let Some(&slot) = self.ids.get(&conn) else { return };
                if let Some(c) = self.slots[slot].as_mut() {
                    c.types = types;
                }
            }
            Action::SetRates { upload, download } => {
                log::debug!("event=set_rates upload={upload} download={download}");
                self.lanes[Dir::Up.i()].set_rate(upload, now);
                self.lanes[Dir::Down.i()].set_rate(download, now);
            }
        }
    }

    /// The connection `conn` if frames may still be queued on it.
    pub(super) fn sendable(&mut self, conn: ConnId, what: &str) -> Option<&mut Conn> {
        let slot = self.ids.get(&conn).copied();
        let c = slot.and_then(|s| self.slots[s].as_mut());
        match c {
            Some(c) if matches!(c.state, State::Open | State::Connecting { close_since: None }) => Some(c),
            _ => {
                log::debug!("event=action_ignored action={what} conn={conn} error=\"unknown or closed connection\"");
                None
            }
        }
    }

    pub(super) fn connect(&mut self, conn: ConnId, addr: SocketAddr) {
        if self.ids.contains_key(&conn) {
            log::debug!("event=action_ignored action=connect conn={conn} error=\"connection id in use\"");
            return;
        }
        if self.finishing.is_some() {
            return;
        }
        let res = TcpStream::connect(addr).and_then(|s| {
            let c = Conn::new(conn, s, Some(addr), State::Connecting { close_since: None }, NO_FRAME_LIMIT);
            self.insert(c)
        });
        match res {
            Ok(_) => log::debug!("event=conn_connecting conn={conn} peer={addr}"),
            Err(e) => {
                log::debug!("event=conn_error conn={conn} peer={addr} error=\"connect: {e}\"");
                self.events.push_back(Event::Closed { conn, reason: Close::Connect(e.to_string()) });
            }
        }
    }

    /// The machine is done with `slot`: flush, then FIN; no more events.
    pub(super) fn close(&mut self, slot: usize, now: Instant) {
        let Some(c) = self.conn(slot) else { return };
        match c.state {
            State::Connecting { close_since: None } => {
                if c.out.is_empty() {
                    self.remove(slot);
                } else {
                    self.set_state(slot, State::Connecting { close_since: Some(now) });
                }
            }
            State::Open => {
                self.set_state(slot, State::Flushing { progress: now });
                self.mark(slot);
            }
            State::Connecting { close_since: Some(_) } | State::Flushing { .. } | State::Draining { .. } => {}
        }
    }

    /// The machine is finished: stop accepting, close every connection after its queue.
    pub(super) fn begin_finish(&mut self, now: Instant) {
        log::debug!("event=reactor_finish conns={}", self.ids.len());
        self.finishing = Some(now + FINISH_FLUSH);
        self.events.clear();
        if let Some(mut l) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut l);
        }
        if let Some(x) = self.metrics.take() {
            x.close(self.poll.registry());
        }
        let slots: Vec<usize> = self.ids.values().copied().collect();
        for slot in slots {
            self.close(slot, now);
        }
    }
}
