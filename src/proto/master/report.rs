//! What the master tells the CAC and `wugui-stat`: the transfer's progress and each po's state.

use super::state::{PoState, State};
use super::MasterMachine;
use crate::proto::msg::{PoStat, TransferStat};
use crate::proto::{Action, Msg};
use std::time::Instant;

impl MasterMachine {
    pub fn stat(&self, now: Instant, state: Option<&str>) -> TransferStat {
        let Some(plan) = self.plan.as_ref() else { return TransferStat::default() };
        let done: u64 = self.pos.iter().map(|p| p.bytes).sum();
        let live =
            self.pos.iter().any(|p| matches!(p.kind(), PoState::Sending | PoState::Offered | PoState::Connecting));
        TransferStat {
            transfer: plan.transfer,
            class: plan.class.name.clone(),
            master: String::new(),
            state: state
                .unwrap_or(match self.wave.phase {
                    // A canary wave shows where it is: canary, rest, or decided (it failed).
                    super::wave::WavePhase::Staging if live => "sending",
                    super::wave::WavePhase::Staging => "committing",
                    w => w.name(),
                })
                .to_owned(),
            total: plan.manifest.bytes(),
            done,
            started_unix: self.settings.unix_start,
            elapsed_ms: now.duration_since(plan.started).as_millis() as u64,
            rate: self.rate,
            sites: if plan.site_bytes.sites().labelled() { plan.site_bytes.links() } else { Vec::new() },
            pos: self
                .pos
                .iter()
                .map(|p| PoStat {
                    addr: p.name.clone(),
                    state: match p.state {
                        State::Done { unchanged: true, .. } => "unchanged".into(),
                        _ => p.kind().name().into(),
                    },
                    bytes: p.bytes,
                    // A failed hook shows in wugui-stat as in the master's stderr line.
                    error: match &p.state {
                        State::Done { hook: Some((c, tail)), .. } if *c != 0 => {
                            format!("hook_exit={c} {}", tail.lines().last().unwrap_or(""))
                        }
                        State::Failed { error } => error.clone(),
                        _ => String::new(),
                    },
                })
                .collect(),
        }
    }

    pub(super) fn report(&mut self, now: Instant, state: Option<&str>) {
        // Bytes/s over the last interval while running; the whole transfer's average at the end.
        let done: u64 = self.pos.iter().map(|p| p.bytes).sum();
        let per_sec = |bytes: u64, since: Instant| {
            let secs = now.duration_since(since).as_secs_f64();
            if secs > 0.0 {
                (bytes as f64 / secs) as u64
            } else {
                0
            }
        };
        self.rate = match (state, self.last_report, self.plan.as_ref()) {
            (Some(_), _, Some(plan)) => per_sec(done, plan.started),
            (None, Some(t), _) => per_sec(done.saturating_sub(self.last_done), t),
            _ => 0,
        };
        self.last_done = done;
        self.last_report = Some(now);
        let stat = self.stat(now, state);
        if let (Some(conn), Some(plan)) = (self.cac_conn, self.plan.as_ref()) {
            // The token lets a CAC that does not know the transfer (restarted, or a replica
            // that did not grant it) adopt it.
            let token = plan.token.clone();
            self.out.push_back(Action::Send { conn, msg: Msg::Progress { stat, token } });
        }
    }
}
