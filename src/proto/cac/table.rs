//! The CAC's table of transfers: one entry per grant, keyed by (transfer, the master's address
//! as the CAC saw it), updated only by reports from that address, bounded and expiring.
//! A transfer granted elsewhere (another replica, or before a restart) is adopted from its
//! first report that carries the transfer's token (the CAC checks it), within the same bounds.
//!
//! Bounds (the README's "CAC" part of "Bounds and retention" repeats them):
//! - at most `MAX_LIVE` live entries (granted, not finished), and `MAX_PER_MASTER` of one master
//!   address; a grant or an adoption beyond is refused;
//! - a live entry expires `SILENT` after it was last heard of: its grant, then its reports
//!   (masters report every second, so only a master that is gone, or never started, goes silent);
//! - finished entries stay `KEEP_DONE` after their last report, and only the newest `RECENT`;
//! - a STAT_REPLY lists what fits one frame, newest first, and counts the rest.

use crate::proto::msg::TransferStat;
use crate::proto::sites::SiteLink;
use crate::proto::wire::MAX_CONTROL;
use core::net::{IpAddr, Ipv4Addr};
use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Live transfers one CAC tracks at most (each costs a few hundred bytes plus its po list).
pub const MAX_LIVE: usize = 1024;
/// Live transfers of one master address at most: no one address fills the table for everyone
/// (a master pushes one class at a time; a build host may push a few classes at once).
pub const MAX_PER_MASTER: usize = 16;
/// A grant that never reports, or a master that stopped reporting, is dropped after this. Not
/// the token ttl (a day by default): a flood of grants would hold the table that long. Ten
/// minutes covers a master that walks a very large tree before its first report.
pub const SILENT: Duration = Duration::from_secs(600);
/// Finished transfers stay visible this long after their last report, and at most `RECENT`.
pub const KEEP_DONE: Duration = Duration::from_secs(3600);
pub const RECENT: usize = 100;

// `msg::decode` takes at most 10,000 entries in one STAT_REPLY; the marker is one more.
const _: () = assert!(MAX_LIVE + RECENT < 10_000);

type Key = (u64, IpAddr);

struct Entry {
    stat: TransferStat,
    /// Grant order: STAT replies list the newest first.
    seq: u64,
    /// The grant or the last report.
    heard: Instant,
    finished: bool,
}

pub(super) fn is_finished(stat: &TransferStat) -> bool {
    matches!(stat.state.as_str(), "ok" | "partial" | "failed" | "dry-run" | "aborted" | "canary_failed")
}

impl Entry {
    fn expires(&self) -> Instant {
        self.heard + if self.finished { KEEP_DONE } else { SILENT }
    }
}

#[derive(Default)]
pub struct Table {
    entries: BTreeMap<Key, Entry>,
    seq: u64,
}

impl Table {
    /// A grant to `master`: only reports from that address may update the entry.
    pub fn add(&mut self, now: Instant, master: IpAddr, stat: TransferStat) {
        self.seq += 1;
        let finished = is_finished(&stat);
        let e = Entry { stat, seq: self.seq, heard: now, finished };
        self.entries.insert((e.stat.transfer, master), e);
    }

    /// Whether `master` holds a live (or recently finished) entry of `transfer`: its reports
    /// update it (`update`); any other report must adopt (`adopt`).
    pub fn holds(&mut self, now: Instant, transfer: u64, master: IpAddr) -> bool {
        self.entries.get(&(transfer, master)).is_some_and(|e| now < e.expires())
    }

    /// A report from `master` on the entry it holds (`holds`): the class and master shown stay
    /// the entry's, whatever the report says. Returns the entry's class.
    pub fn update(&mut self, now: Instant, master: IpAddr, mut stat: TransferStat) -> String {
        let Some(e) = self.entries.get_mut(&(stat.transfer, master)) else { return stat.class };
        stat.class = std::mem::take(&mut e.stat.class);
        stat.master = master.to_string();
        e.finished = is_finished(&stat);
        e.stat = stat;
        e.heard = now;
        e.stat.class.clone()
    }

    /// The site links `master`'s entry of `transfer` shows (none if it holds none).
    pub fn sites(&self, transfer: u64, master: IpAddr) -> Vec<SiteLink> {
        self.entries.get(&(transfer, master)).map(|e| e.stat.sites.clone()).unwrap_or_default()
    }

    /// Whether a new live entry for `master` fits: a grant, or an adoption. Refused (the
    /// reason as log lines show it) when `MAX_LIVE` entries are live, or `MAX_PER_MASTER` of
    /// them are that address's.
    pub fn room(&mut self, now: Instant, master: IpAddr) -> Result<(), &'static str> {
        self.prune(now);
        let live = self.entries.iter().filter(|(_, e)| !e.finished);
        let (all, mine) = live.fold((0, 0), |(a, m), ((_, ip), _)| (a + 1, m + usize::from(*ip == master)));
        if all >= MAX_LIVE {
            Err("table_full")
        } else if mine >= MAX_PER_MASTER {
            Err("master_full")
        } else {
            Ok(())
        }
    }

    /// A transfer this table does not hold, reported by `master` with the transfer's token
    /// (the caller checked it: MAC, class, transfer and address): another replica granted it,
    /// or this CAC before a restart, or its entry expired while the master was silent. It is
    /// added as if granted now, within the same bounds (`room`, for a live one). Refused, with
    /// the table untouched: another address holds the transfer, or no room.
    pub fn adopt(&mut self, now: Instant, master: IpAddr, mut stat: TransferStat) -> Result<(), &'static str> {
        self.prune(now);
        let first = (stat.transfer, IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        if self.entries.range(first..).next().is_some_and(|((t, _), _)| *t == stat.transfer) {
            return Err("not_yours");
        }
        if !is_finished(&stat) {
            self.room(now, master)?;
        }
        stat.master = master.to_string();
        self.add(now, master, stat);
        Ok(())
    }

    /// What `wugui-stat` shows: live transfers, then finished ones, newest first in each; as
    /// many as fit one frame, then the `omitted` marker if any were left out.
    pub fn reply(&mut self, now: Instant) -> Vec<TransferStat> {
        self.prune(now);
        let mut order: Vec<&Entry> = self.entries.values().collect();
        order.sort_unstable_by_key(|e| (e.finished, Reverse(e.seq)));
        // The payload starts with the entry count; the marker needs room at the end.
        let mut room = MAX_CONTROL as usize - 4 - TransferStat::omitted(u64::MAX).wire_len();
        let (mut out, mut left_out) = (Vec::new(), 0);
        for e in order {
            match room.checked_sub(e.stat.wire_len()) {
                Some(r) => {
                    room = r;
                    out.push(e.stat.clone());
                }
                None => left_out += 1,
            }
        }
        if left_out > 0 {
            out.push(TransferStat::omitted(left_out));
        }
        out
    }

    /// Entries held, live or finished.
    #[cfg(test)]
    pub fn held(&self) -> usize {
        self.entries.len()
    }

    /// Drops expired entries, then all but the newest `RECENT` finished ones.
    fn prune(&mut self, now: Instant) {
        self.entries.retain(|(transfer, master), e| {
            let keep = now < e.expires();
            if !keep && !e.finished {
                log::info!(
                    "event=transfer_expired role=cac transfer={transfer} class={} master={master}",
                    e.stat.class
                );
            }
            keep
        });
        let mut done: Vec<(Instant, u64, Key)> =
            self.entries.iter().filter(|(_, e)| e.finished).map(|(k, e)| (e.heard, e.seq, *k)).collect();
        if done.len() > RECENT {
            done.sort_unstable();
            for (_, _, k) in &done[..done.len() - RECENT] {
                self.entries.remove(k);
            }
        }
    }
}
