//! The transfer's clocks: the class timeout (with its quorum commit and grace period), each
//! po's retry, connect and offer deadlines, progress reports with the swarm's stall check, and
//! pings that keep idle control links alive.

use super::state::{Phase, PoState, State};
use super::{MasterMachine, PING_EVERY, REPORT_EVERY, STALL_FLOOR};
use crate::proto::class::Publish;
use crate::proto::{Action, Msg};
use std::time::{Duration, Instant};

impl MasterMachine {
    pub(super) fn on_transfer_timers(&mut self, now: Instant) {
        let Phase::Transfer { next_report, next_ping, ticked } = self.phase else { return };
        let deadline = self.plan.as_ref().map(|p| p.deadline).expect("transfer has a plan");
        if now >= deadline && self.class_timeout(now) {
            return;
        }
        self.po_deadlines(now);
        let silent = self.plan.as_ref().map_or(0, |p| p.class.silent_timeout);
        self.silent_pos(now, ticked, Duration::from_secs(silent));
        if next_report <= now {
            self.report_tick(now);
        }
        let every = self.ping_every();
        if next_ping <= now {
            // A po answers a ping with one: what it says is how the master knows it is alive.
            for p in &self.pos {
                if let (Some(conn), PoState::Sending | PoState::Ready | PoState::Committing) = (p.conn, p.kind()) {
                    self.out.push_back(Action::Send { conn, msg: Msg::Ping });
                }
            }
        }
        if let Phase::Transfer { next_ping, ticked, .. } = &mut self.phase {
            if *next_ping <= now {
                *next_ping = now + every;
            }
            *ticked = now;
        }
        self.maybe_finish(now);
    }

    /// How often live pos are pinged: often enough that a live one is heard three times
    /// within `silent_timeout`.
    pub(super) fn ping_every(&self) -> Duration {
        match self.plan.as_ref().map_or(0, |p| p.class.silent_timeout) {
            0 => PING_EVERY,
            s => PING_EVERY.min(Duration::from_secs(s) / 3),
        }
    }

    /// Pos that said nothing for `limit` (0: no limit) while they were sent blocks or were
    /// ready are lost, as if their link had closed: a stopped or hung po (its kernel keeps the
    /// TCP link open) must not hold the push until the class timeout. Not while a po commits:
    /// it renames the whole tree into place on its loop, which may take minutes for millions
    /// of files. Counted from the last time these timers ran too, so a master that was itself
    /// stopped blames no one.
    fn silent_pos(&mut self, now: Instant, ticked: Instant, limit: Duration) {
        if limit.is_zero() {
            return;
        }
        if now.saturating_duration_since(ticked) > (limit / 3).max(2 * REPORT_EVERY) {
            self.pos.iter_mut().for_each(|p| p.heard = now);
            return;
        }
        for i in 0..self.pos.len() {
            let p = &self.pos[i];
            let live = matches!(p.kind(), PoState::Sending | PoState::Ready);
            let quiet = now.saturating_duration_since(p.heard);
            if live && p.conn.is_some() && quiet >= limit {
                log::warn!("event=po_silent po={} silent_s={} state={}", p.name, quiet.as_secs(), p.kind().name());
                self.po_lost(now, i, format!("silent for {} s (silent_timeout)", quiet.as_secs()));
            }
        }
    }

    /// The class timeout: a quorum may still commit; every other po that is not committing
    /// fails. Returns whether the transfer finished.
    fn class_timeout(&mut self, now: Instant) -> bool {
        let publish = self.plan.as_ref().map(|p| p.class.publish);
        if publish == Some(Publish::Together) {
            self.maybe_commit(true);
        }
        for i in 0..self.pos.len() {
            if matches!(self.pos[i].kind(), PoState::Done | PoState::Failed | PoState::Committing) {
                continue;
            }
            self.po_fail(i, "class timeout reached".into());
        }
        // Committing pos get a grace period to answer.
        if let Some(plan) = self.plan.as_mut() {
            plan.deadline = now + Duration::from_secs(30);
        }
        if self.pos.iter().all(|p| p.kind() != PoState::Committing) {
            self.finish(now);
            return true;
        }
        for i in 0..self.pos.len() {
            if self.pos[i].kind() == PoState::Committing {
                self.pos[i].state = State::Ready;
            }
        }
        false
    }

    /// Retries due, connects and offers unanswered.
    fn po_deadlines(&mut self, now: Instant) {
        for i in 0..self.pos.len() {
            let due = self.pos[i].state.deadline().is_some_and(|d| d <= now);
            match self.pos[i].kind() {
                PoState::Idle if due => self.connect_po(now, i),
                PoState::Connecting if due => self.po_lost(now, i, "connect timed out".into()),
                PoState::Offered if due => self.po_lost(now, i, "no answer to the offer".into()),
                _ => {}
            }
        }
    }

    /// Progress to the CAC (dialled again if it was lost), and the swarm's stalled pushes.
    fn report_tick(&mut self, now: Instant) {
        // Progress reports are best effort: a lost CAC is dialled again, in turn.
        if self.cac_conn.is_none() && self.cac_redial.is_none() && !self.settings.cacs.is_empty() {
            let addr = self.settings.cacs[self.next_cac % self.settings.cacs.len()];
            let conn = self.conn_id();
            self.cac_redial = Some(conn);
            self.out.push_back(Action::Connect { conn, addr });
        }
        self.report(now, None);
        // The encoded manifest is kept only while some po may still ask for it.
        if !self.pos.iter().any(|p| p.kind() == PoState::Offered) {
            if let Some(plan) = self.plan.as_mut() {
                plan.pinned = None;
            }
        }
        if let Phase::Transfer { next_report, .. } = &mut self.phase {
            *next_report = now + REPORT_EVERY;
        }
        // A transfer between two pos that never finishes is given to someone else.
        if let Some(sw) = self.plan.as_mut().and_then(|p| p.swarm.as_mut()) {
            log::debug!("event=swarm_state {}", sw.debug_line());
            let limit = sw.stall_limit(STALL_FLOOR);
            for (to, b, from) in sw.stalled(now, limit) {
                log::warn!("event=push_stalled block={b} to={to} from={from:?} limit_ms={}", limit.as_millis());
                sw.stalled_out(to, b, now, limit);
            }
        }
        self.schedule(now);
    }
}
