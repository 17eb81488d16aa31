//! One version per dest, whichever CAC replica granted the pushes (README "Concurrent pushes").
//! Transfer ids grow with grant time (`cac::transfer_id`), so a larger id is a later push. A po
//! remembers the last id it published to each dest, and:
//! - refuses the offer of a transfer older than that, or older than one staging to the dest;
//! - fails an older transfer still staging to the dest when a newer one is accepted (its
//!   master hears FAILED and cannot say ok);
//! - never publishes a transfer older than the last one published there.
//!
//! The memory lasts as long as the po runs: after a restart the CAC's one-push-a-class rule
//! and the first new publish set it again.

use super::*;

impl<S: Store> PoMachine<S> {
    /// Whether `transfer` may go on to `dest`: refuses it (and returns false) if a newer one
    /// was published or is staging there; fails the older ones staging there.
    pub(super) fn fence_offer(&mut self, master: ConnId, transfer: u64, dest: &str) -> bool {
        if let Some(why) = self.newer_than(transfer, dest) {
            log::warn!(
                "event=offer_refused transfer={transfer} reason=superseded dest={dest} error={}",
                crate::proto::text::quoted(&why)
            );
            self.refuse(master, Reason::Busy, why);
            return false;
        }
        let older: Vec<u64> = self
            .transfers
            .iter()
            .filter(|(id, t)| **id < transfer && t.dest == dest && t.state.live())
            .map(|(id, _)| *id)
            .collect();
        for id in older {
            self.fail(id, format!("superseded by the newer transfer {transfer} to {dest}"));
        }
        true
    }

    /// Why `transfer` must not be published to `dest`, if it must not.
    pub(super) fn fence_publish(&self, transfer: u64, dest: &str) -> Option<String> {
        let last = self.published_after(transfer, dest)?;
        Some(format!("not published: the newer transfer {last} was published to {dest} first"))
    }

    /// A transfer newer than `transfer` published to `dest`.
    fn published_after(&self, transfer: u64, dest: &str) -> Option<u64> {
        self.published.get(dest).copied().filter(|&last| last > transfer)
    }

    /// Why an offer of `transfer` to `dest` comes too late, if it does.
    pub(super) fn newer_than(&self, transfer: u64, dest: &str) -> Option<String> {
        let late = |what: String| Some(format!("transfer {transfer} is too old: {what}"));
        if let Some(last) = self.published_after(transfer, dest) {
            return late(format!("the newer transfer {last} was published to {dest} first"));
        }
        let newer = self
            .transfers
            .iter()
            .filter(|(id, t)| **id > transfer && t.dest == dest && t.state.live())
            .map(|(id, _)| *id)
            .max()?;
        late(format!("the newer transfer {newer} is staging to {dest}"))
    }
}
