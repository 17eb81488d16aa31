//! One machine driven by hand: the test plays every other party, feeds events and timeouts
//! one at a time, and reads what the machine does in answer. Only the `Machine` trait is used,
//! so these tests hold however a machine is laid out inside.

use super::super::msg::Reason;
use super::super::*;
use std::time::Duration;

pub struct Probe<M: Machine> {
    pub m: M,
    pub now: Instant,
    /// Our address that accepted connections reach.
    pub local: SocketAddr,
    /// Checks (`Action::Verify`) the test holds back, to answer when and in the order it
    /// likes (`hold_checks`); otherwise each is run at once and its verdict handed back.
    pub checks: Vec<Check>,
    pub hold_checks: bool,
}

impl<M: Machine> Probe<M> {
    /// The machine and what it did on its own at the start.
    pub fn new(m: M, now: Instant) -> (Probe<M>, Vec<Action>) {
        let mut p = Probe { m, now, local: "10.0.1.1:7200".parse().unwrap(), checks: Vec::new(), hold_checks: false };
        let first = p.drain();
        (p, first)
    }

    /// What the machine did; checks are run (and their verdicts handed back) as they come,
    /// unless held.
    fn drain(&mut self) -> Vec<Action> {
        let mut acts = Vec::new();
        while let Some(a) = self.m.poll_action() {
            match a {
                Action::Verify(c) if self.hold_checks => self.checks.push(c),
                // Socket tuning, not protocol: tests of what a machine says leave it out.
                Action::ShortQueue { .. } => {}
                Action::Verify(c) => {
                    self.m.handle_event(self.now, c.run());
                    self.m.end_turn();
                }
                Action::Disk(job) => {
                    self.m.handle_event(self.now, job.run());
                    self.m.end_turn();
                }
                a => acts.push(a),
            }
        }
        acts
    }

    /// One event, as one turn of the reactor's loop.
    pub fn event(&mut self, ev: Event) -> Vec<Action> {
        self.m.handle_event(self.now, ev);
        self.m.end_turn();
        self.drain()
    }

    pub fn frame(&mut self, conn: ConnId, msg: Msg) -> Vec<Action> {
        // Through the real codec, as on a socket.
        let frame = msg.to_frame();
        let (msg, _) = Msg::from_frame(&frame).unwrap().unwrap();
        self.event(Event::Frame { conn, msg })
    }

    pub fn accepted(&mut self, conn: ConnId, peer: &str) -> Vec<Action> {
        self.event(Event::Accepted { conn, peer: peer.parse().unwrap(), local: self.local })
    }

    pub fn connected(&mut self, conn: ConnId) -> Vec<Action> {
        self.event(Event::Connected { conn })
    }

    pub fn closed(&mut self, conn: ConnId, reason: Close) -> Vec<Action> {
        self.event(Event::Closed { conn, reason })
    }

    /// Time passes by `d`; the machine's timers run if one is due.
    pub fn wait(&mut self, d: Duration) -> Vec<Action> {
        self.now += d;
        if self.m.poll_timeout().is_some_and(|t| t <= self.now) {
            self.m.handle_timeout(self.now);
        }
        self.drain()
    }

    pub fn stats(&self) -> Stats {
        self.m.stats()
    }
}

/// The messages among `acts`, with their connections.
pub fn sent(acts: &[Action]) -> Vec<(ConnId, &Msg)> {
    acts.iter().filter_map(|a| if let Action::Send { conn, msg } = a { Some((*conn, msg)) } else { None }).collect()
}

/// The messages among `acts` on `conn`.
pub fn sent_on(acts: &[Action], on: ConnId) -> Vec<&Msg> {
    sent(acts).into_iter().filter(|(c, _)| *c == on).map(|(_, m)| m).collect()
}

pub fn closes(acts: &[Action]) -> Vec<ConnId> {
    acts.iter().filter_map(|a| if let Action::Close { conn } = a { Some(*conn) } else { None }).collect()
}

pub fn connects(acts: &[Action]) -> Vec<(ConnId, SocketAddr)> {
    acts.iter()
        .filter_map(|a| if let Action::Connect { conn, addr } = a { Some((*conn, *addr)) } else { None })
        .collect()
}

/// Whether `acts` let `conn` send frames of any size (`Action::FrameLimit`).
pub fn raised(acts: &[Action], conn: ConnId) -> bool {
    acts.iter().any(|a| matches!(a, Action::FrameLimit { conn: c, max: wire::NO_FRAME_LIMIT } if *c == conn))
}

/// The block frames among `acts`: connection and head.
pub fn blocks(acts: &[Action]) -> Vec<(ConnId, BlockHead)> {
    acts.iter()
        .filter_map(|a| if let Action::SendBlock { conn, head, .. } = a { Some((*conn, *head)) } else { None })
        .collect()
}

/// The reason of the `Denied` sent on `conn`, which must also close it.
pub fn denied(acts: &[Action], conn: ConnId) -> Option<Reason> {
    let reason = sent_on(acts, conn).into_iter().find_map(|m| match m {
        Msg::Denied { reason, .. } => Some(*reason),
        _ => None,
    })?;
    assert!(closes(acts).contains(&conn), "a refusal closes the connection: {acts:?}");
    Some(reason)
}

/// The one message sent on `conn`.
pub fn only(acts: &[Action], conn: ConnId) -> Msg {
    match sent_on(acts, conn)[..] {
        [m] => m.clone(),
        _ => panic!("expected one message on {conn}: {acts:?}"),
    }
}
