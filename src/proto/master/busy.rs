//! The CAC refused because another push of the class runs (README "Concurrent pushes"): give
//! up with its words (exit 2), or with `--wait` ask again every second until `wait` is over.

use super::outcome::TransferResult;
use super::state::Phase;
use super::MasterMachine;
use crate::proto::{Action, ConnId};
use std::time::{Duration, Instant};

/// How often a waiting master asks again.
const RETRY: Duration = Duration::from_secs(1);

impl MasterMachine {
    pub(super) fn on_busy(&mut self, now: Instant, conn: ConnId, text: String) {
        self.busy_refusals += 1;
        match self.wait_until {
            Some(until) if now + RETRY <= until => {
                if self.busy_refusals == 1 {
                    log::warn!(
                        "event=class_busy class={} waiting=1 error={}",
                        self.settings.class,
                        crate::proto::text::quoted(&text)
                    );
                }
                self.out.push_back(Action::Close { conn });
                self.phase = Phase::Waiting { retry_at: now + RETRY };
            }
            Some(_) => {
                let secs = self.settings.wait.unwrap_or_default().as_secs();
                self.stop_early(TransferResult::Denied(format!("CAC refused (busy) after waiting {secs} s: {text}")))
            }
            None => self.stop_early(TransferResult::Denied(format!("CAC refused (busy): {text}"))),
        }
    }
}
