//! SIGINT or SIGTERM: every po that has not published is told to abort and keeps its old tree,
//! the CAC hears `aborted`, and the outcome counts the pos that had published already.

use super::outcome::{Outcome, Ran, TransferResult};
use super::state::{Phase, PoState, State};
use super::MasterMachine;
use crate::proto::{Action, Msg};
use std::time::{Duration, Instant};

impl MasterMachine {
    /// Ends the transfer now, because of `why` (the signal). Blocks still queued are dropped,
    /// so that the ABORTs go out at once; the machine is finished when they are queued.
    pub fn abort(&mut self, now: Instant, why: &str) {
        match self.phase {
            Phase::Finished => {}
            Phase::Auth { .. } | Phase::Waiting { .. } => {
                log::warn!(
                    "event=transfer_abort class={} error={}",
                    self.settings.class,
                    crate::proto::text::quoted(why)
                );
                if let Phase::Auth { conn, .. } = self.phase {
                    self.out.push_back(Action::Close { conn });
                }
                let ran = Ran {
                    bytes: 0,
                    blocks: 0,
                    elapsed: Duration::ZERO,
                    master_blocks: 0,
                    master_bytes: 0,
                    pos: Vec::new(),
                    skipped: 0,
                    site_links: Vec::new(),
                    site_in: Vec::new(),
                };
                let class = self.settings.class.clone();
                self.outcome = Some(Outcome { transfer: 0, class, result: TransferResult::Aborted(ran) });
                self.phase = Phase::Finished;
            }
            Phase::Transfer { .. } => self.abort_transfer(now, why),
        }
    }

    fn abort_transfer(&mut self, now: Instant, why: &str) {
        let transfer = self.plan.as_ref().map_or(0, |p| p.transfer);
        log::warn!("event=transfer_abort transfer={transfer} error={}", crate::proto::text::quoted(why));
        // What is left of a frame half sent must go out: not at the class rate.
        self.out.push_back(Action::SetRates { upload: 0, download: 0 });
        for p in &mut self.pos {
            let error = match p.kind() {
                PoState::Done | PoState::Failed => continue,
                // The COMMIT went first: the po may publish before it reads the ABORT.
                PoState::Committing => format!("{why} after COMMIT (it may have published)"),
                _ => why.to_owned(),
            };
            if let Some(conn) = p.conn.take() {
                let last = Some(Msg::Abort { transfer, reason: why.to_owned() });
                self.out.push_back(Action::Abandon { conn, last });
            }
            if let Some(conn) = p.data.take() {
                self.out.push_back(Action::Abandon { conn, last: None });
            }
            p.state = State::Failed { error };
        }
        self.end(now, true);
    }
}
