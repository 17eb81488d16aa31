//! Canary waves on the po (README "Canary waves"): WAVE steps from the master of the transfer
//! (`on_master_frame` takes them only on that master's connection). A canary publishes keeping
//! its old tree aside; a rollback puts it back, only while the wave is undecided; `Decided`
//! drops it. A po that restarts mid-wave keeps the new tree (the wave's record is in memory);
//! its sweep at start removes the folder kept aside.

use super::*;
use crate::proto::msg::WaveStep;

impl<S: Store> PoMachine<S> {
    pub(super) fn on_wave(&mut self, transfer: u64, step: WaveStep) {
        let Some(t) = self.transfers.get_mut(&transfer) else { return };
        let class = t.class.name.clone();
        match (step, t.canary, &t.state) {
            (WaveStep::Canary, Canary::No, TState::Ready) => {
                log::info!("event=canary_commit transfer={transfer} class={class}");
                t.canary = Canary::Undecided;
                self.store.keep_aside(transfer);
                self.publish(transfer);
            }
            // Said twice: nothing more to do.
            (WaveStep::Canary, _, TState::Published { .. }) => {}
            (WaveStep::Canary, ..) => self.fail(transfer, "canary COMMIT before every block was held".into()),
            (WaveStep::Rollback, Canary::Undecided, TState::Published { .. }) => {
                let rolled = self.store.rollback(transfer);
                let Some(t) = self.transfers.get_mut(&transfer) else { return };
                t.state = TState::Failed;
                t.canary = Canary::Decided;
                let error = match rolled {
                    Ok(()) => {
                        log::warn!("event=canary_rollback transfer={transfer} class={class}");
                        "rolled back to the old tree: the canary wave failed".to_string()
                    }
                    Err(e) => {
                        log::error!(
                            "event=canary_rollback_failed transfer={transfer} class={class} error={}",
                            crate::proto::text::quoted(e.to_string())
                        );
                        format!("rollback failed: {e}")
                    }
                };
                if let Some(m) = t.master.take() {
                    self.send(m, Msg::Failed { transfer, error });
                }
            }
            // The wave was decided (or this po is no canary): its tree stays.
            (WaveStep::Rollback, canary, state) => {
                log::warn!(
                    "event=rollback_refused transfer={transfer} class={class} canary={canary:?} state={}",
                    state.name()
                );
            }
            (WaveStep::Decided, Canary::Undecided, _) => {
                t.canary = Canary::Decided;
                self.store.decide(transfer);
                log::info!("event=wave_decided transfer={transfer} class={class}");
            }
            (WaveStep::Decided, ..) => {}
        }
    }
}
