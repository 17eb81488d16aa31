//! One push of a class at a time (README "Concurrent pushes"). While a class has a live grant,
//! the CAC refuses another master with `Busy`, naming the running transfer; `masterwugui
//! --wait` asks again until it is over. A grant is live until its master reports an end or its
//! master's connection is gone: a killed master's rerun goes at once (and should the connection
//! of a live master drop, the pos' fence still holds).
//!
//! Replicas share no state, so two masters on two replicas can still both be granted: the pos
//! settle that. Transfer ids are ordered by grant time (`transfer_id`), and a po never publishes
//! a transfer older than one it published to the same dest (`po::fence`).

use crate::proto::ConnId;
use core::net::IpAddr;
use std::collections::HashMap;
use std::time::Instant;

/// Random bits below the grant time in a transfer id: ids granted in the same millisecond by
/// two replicas still differ, and every po orders them alike.
const RANDOM_BITS: u32 = 20;

/// A transfer id granted at `unix_ms`: larger means granted later (to the millisecond, with
/// the replicas' clocks), and it fits 63 bits until the year 2248.
pub fn transfer_id(unix_ms: u64, random: u64) -> u64 {
    ((unix_ms << RANDOM_BITS) | (random & ((1 << RANDOM_BITS) - 1))) & (u64::MAX >> 1)
}

struct Running {
    transfer: u64,
    master: IpAddr,
    /// The connection it was granted or last reported on.
    conn: ConnId,
    since: Instant,
}

/// The live grant of each class.
#[derive(Default)]
pub(super) struct Busy {
    by_class: HashMap<String, Running>,
}

impl Busy {
    pub(super) fn granted(&mut self, class: &str, transfer: u64, master: IpAddr, conn: ConnId, now: Instant) {
        let r = Running { transfer, master, conn, since: now };
        self.by_class.insert(class.to_owned(), r);
    }

    /// A report of a transfer the table holds for its master: one this CAC granted, or one it
    /// adopted on the transfer's token (the caller checked both). A report never takes the slot
    /// from another transfer whose master is still connected (`open`): an adopted transfer
    /// that runs beside the holder (another replica granted it) is tracked, not made the
    /// holder, and the pos' fence orders the two. A free slot, or one whose holder's
    /// connection is gone, goes to the reporting transfer while it runs; its end frees it.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn reported(
        &mut self,
        class: &str,
        transfer: u64,
        master: IpAddr,
        conn: ConnId,
        finished: bool,
        now: Instant,
        open: impl Fn(ConnId) -> bool,
    ) {
        match self.by_class.get_mut(class) {
            Some(r) if r.transfer == transfer && finished => {
                self.by_class.remove(class);
            }
            Some(r) if r.transfer == transfer => r.conn = conn,
            Some(r) if open(r.conn) => {}
            _ if !finished => self.granted(class, transfer, master, conn, now),
            _ => {}
        }
    }

    /// The transfer holding `class`'s slot, if any.
    #[cfg(test)]
    pub(super) fn holder(&self, class: &str) -> Option<u64> {
        self.by_class.get(class).map(|r| r.transfer)
    }

    /// Why a new grant of `class` must wait, if it must. `open` says whether a connection is
    /// still up.
    pub(super) fn refusal(&self, class: &str, now: Instant, open: impl Fn(ConnId) -> bool) -> Option<String> {
        let r = self.by_class.get(class).filter(|r| open(r.conn))?;
        Some(format!(
            "class {class} is being pushed: transfer {} by master {}, granted {} s ago \
             (masterwugui --wait waits for it)",
            r.transfer,
            r.master,
            now.duration_since(r.since).as_secs()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_order_by_grant_time_and_keep_random_low_bits() {
        let a = transfer_id(1_800_000_000_000, u64::MAX);
        let b = transfer_id(1_800_000_000_001, 0);
        assert!(a < b);
        assert_eq!(a & ((1 << RANDOM_BITS) - 1), (1 << RANDOM_BITS) - 1);
        assert!(transfer_id(8_000_000_000_000, u64::MAX) < 1 << 63);
    }

    #[test]
    fn a_grant_is_live_until_it_ends_or_its_master_is_gone() {
        let now = Instant::now();
        let ip: IpAddr = "10.0.0.9".parse().unwrap();
        let mut b = Busy::default();
        b.granted("c", 5, ip, 1, now);
        let text = b.refusal("c", now, |_| true).unwrap();
        assert!(text.contains("transfer 5 by master 10.0.0.9"), "{text}");
        assert!(b.refusal("other", now, |_| true).is_none());
        assert!(b.refusal("c", now, |_| false).is_none(), "its master's connection is gone");
        // The end of another transfer changes nothing; its own end frees the class.
        b.reported("c", 6, ip, 2, true, now, |_| true);
        assert!(b.refusal("c", now, |_| true).is_some());
        b.reported("c", 5, ip, 2, true, now, |_| true);
        assert!(b.refusal("c", now, |_| true).is_none());
        // A running transfer granted elsewhere takes a free slot once it reports.
        b.reported("c", 9, ip, 3, false, now, |_| true);
        assert!(b.refusal("c", now, |_| true).unwrap().contains("transfer 9"));
    }

    #[test]
    fn a_report_never_takes_the_slot_of_a_connected_holder() {
        let now = Instant::now();
        let ip: IpAddr = "10.0.0.9".parse().unwrap();
        let mut b = Busy::default();
        b.granted("c", 5, ip, 1, now);
        // Transfer 7 (tracked beside it) reports while 5's master is connected: 5 keeps it.
        b.reported("c", 7, ip, 2, false, now, |c| c == 1);
        assert_eq!(b.holder("c"), Some(5));
        // 5's master is gone: 7, still running, holds the class now.
        b.reported("c", 7, ip, 2, false, now, |c| c == 2);
        assert_eq!(b.holder("c"), Some(7));
        assert!(b.refusal("c", now, |c| c == 2).unwrap().contains("transfer 7"));
    }
}
