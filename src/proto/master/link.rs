//! The master's connections to the pos: dialling, the offer (or, in a swarm, the proof on the
//! data link), and what happens when one breaks: a retry with backoff, or the po fails.

use super::state::{PoState, State};
use super::{MasterMachine, OFFER_TIMEOUT};
use crate::proto::swarm;
use crate::proto::{auth, Action, Close, ConnId, Msg};
use std::time::{Duration, Instant};

impl MasterMachine {
    pub(super) fn connect_po(&mut self, now: Instant, i: usize) {
        let conn = self.po_conn_id(i);
        let p = &mut self.pos[i];
        let Some(addr) = p.addr else { return };
        p.conn = Some(conn);
        p.state = State::Connecting { deadline: now + self.settings.connect_timeout };
        p.attempts += 1;
        self.out.push_back(Action::Connect { conn, addr });
    }

    pub(super) fn po_index(&self, conn: ConnId) -> Option<usize> {
        let i = *self.conn_po.get(&conn)?;
        let p = self.pos.get(i)?;
        (p.conn == Some(conn) || p.data == Some(conn)).then_some(i)
    }

    /// An outbound connection is up: the CAC again, a po's control link (offer it the
    /// transfer) or a po's data link (prove who we are; the po joins the swarm).
    pub(super) fn on_connected(&mut self, now: Instant, conn: ConnId) {
        if self.cac_redial == Some(conn) {
            log::info!("event=cac_reconnected role=master");
            self.cac_redial = None;
            self.cac_conn = Some(conn);
            return;
        }
        let Some(i) = self.po_index(conn) else { return };
        let plan = self.plan.as_mut().expect("transfer phase has a plan");
        if self.pos[i].data == Some(conn) {
            let proof = auth::link_key(&self.settings.transfer_key, i as u32, swarm::MASTER_PEER);
            let msg = Msg::PeerHello { token: plan.token.clone(), me: swarm::MASTER_PEER, proof };
            self.out.push_back(Action::Send { conn, msg });
            if let Some(sw) = plan.swarm.as_mut() {
                sw.join(i as u32, &self.pos[i].have);
            }
            return self.schedule(now);
        }
        let (manifest_id, manifest_len) = plan.announced();
        // With `publish = each`, a canary wave decides when each po publishes; a dry run asks
        // each po what it would change.
        use crate::proto::msg;
        let hold = self.wave.on() && plan.class.publish == crate::proto::class::Publish::Each;
        let mode = match (self.settings.dry_run, self.settings.itemize) {
            (true, true) => msg::OFFER_DRY_RUN | msg::OFFER_ITEMIZE,
            (true, false) => msg::OFFER_DRY_RUN,
            _ if hold => msg::OFFER_HOLD,
            _ => 0,
        };
        let msg =
            Msg::Offer { token: plan.token.clone(), po: self.pos[i].name.clone(), manifest_id, manifest_len, mode };
        self.out.push_back(Action::Send { conn, msg });
        self.pos[i].state = State::Offered { deadline: now + OFFER_TIMEOUT };
    }

    pub(super) fn on_closed(&mut self, now: Instant, conn: ConnId, reason: Close) {
        if self.cac_redial == Some(conn) {
            self.cac_redial = None;
            self.next_cac += 1;
        } else if self.cac_conn == Some(conn) {
            // Progress reports are best effort; the transfer goes on.
            log::warn!("event=cac_lost role=master error={}", crate::proto::text::quoted(&reason));
            self.cac_conn = None;
        } else if let Some(i) = self.po_index(conn) {
            if self.pos[i].conn == Some(conn) {
                self.pos[i].conn = None;
            } else {
                self.pos[i].data = None;
            }
            self.po_lost(now, i, reason.or("po closed the connection"));
            self.maybe_commit(false);
            self.maybe_finish(now);
        }
    }

    /// A po's connection broke: retry with backoff while `retries` allow.
    pub(super) fn po_lost(&mut self, now: Instant, i: usize, why: String) {
        let retries = self.plan.as_ref().map(|p| p.class.retries).unwrap_or(0);
        if let Some(sw) = self.plan.as_mut().and_then(|p| p.swarm.as_mut()) {
            sw.leave(i as u32);
        }
        // Its chain neighbours link around it now.
        self.tell_chains();
        let p = &mut self.pos[i];
        for c in [p.conn.take(), p.data.take()].into_iter().flatten() {
            self.out.push_back(Action::Close { conn: c });
        }
        if matches!(p.kind(), PoState::Done | PoState::Failed) {
            return;
        }
        // A canary being rolled back cannot be offered the transfer again.
        if self.wave.phase == super::wave::WavePhase::Failed && self.wave.canaries.contains(&i) {
            return self.po_fail(i, why);
        }
        let p = &mut self.pos[i];
        if p.attempts <= retries {
            let backoff = Duration::from_millis(500 << p.attempts.min(6));
            log::warn!(
                "event=po_retry po={} attempt={} in_ms={} error={}",
                p.name,
                p.attempts,
                backoff.as_millis(),
                crate::proto::text::quoted(&why)
            );
            p.state = State::Idle { retry_at: now + backoff };
        } else {
            self.po_fail(i, why);
        }
    }

    pub(super) fn po_fail(&mut self, i: usize, error: String) {
        let transfer = self.plan.as_ref().map(|p| p.transfer).unwrap_or(0);
        let p = &mut self.pos[i];
        match p.kind() {
            PoState::Failed => return,
            // It published: that stays its result. Whatever it does wrong now only ends our
            // links to it (and its place in the swarm).
            PoState::Done => {
                log::warn!(
                    "event=po_error_after_done transfer={transfer} po={} error={}",
                    p.name,
                    crate::proto::text::quoted(&error)
                );
                if let Some(sw) = self.plan.as_mut().and_then(|p| p.swarm.as_mut()) {
                    sw.leave(i as u32);
                }
                self.tell_chains();
                let p = &mut self.pos[i];
                for c in [p.conn.take(), p.data.take()].into_iter().flatten() {
                    self.out.push_back(Action::Close { conn: c });
                }
                return;
            }
            _ => {}
        }
        log::error!(
            "event=po_failed transfer={transfer} po={} state={} error={}",
            p.name,
            p.kind().name(),
            crate::proto::text::quoted(&error)
        );
        if let Some(sw) = self.plan.as_mut().and_then(|p| p.swarm.as_mut()) {
            sw.leave(i as u32);
        }
        // Its chain neighbours link around it now.
        self.tell_chains();
        let p = &mut self.pos[i];
        p.state = State::Failed { error };
        if let Some(c) = p.conn.take() {
            self.out.push_back(Action::Send { conn: c, msg: Msg::Abort { transfer, reason: "failed".into() } });
            self.out.push_back(Action::Close { conn: c });
        }
        if let Some(c) = p.data.take() {
            self.out.push_back(Action::Close { conn: c });
        }
    }

    /// The source itself is broken: no po can get a good copy.
    pub(super) fn abort_all(&mut self, error: String) {
        log::error!("event=transfer_abort error={}", crate::proto::text::quoted(&error));
        for i in 0..self.pos.len() {
            if self.pos[i].kind() != PoState::Done {
                self.po_fail(i, error.clone());
            }
        }
    }
}
