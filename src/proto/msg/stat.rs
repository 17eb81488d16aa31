//! Status reports: what a master tells its cac about a transfer, and what `wugui-stat` shows.

use crate::proto::codec::{DecodeError, Reader, Writer};
use crate::proto::sites::{SiteLink, MAX_LABEL, MAX_SITES};
use crate::proto::wire::{MAX_ADDRS, MAX_NAME, MAX_TEXT};

const OMITTED: &str = "omitted";

/// One po's line in a status report.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PoStat {
    pub addr: String,
    pub state: String,
    pub bytes: u64,
    pub error: String,
}

/// A transfer as `wugui-stat` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TransferStat {
    pub transfer: u64,
    pub class: String,
    pub master: String,
    pub state: String,
    /// Bytes of the tree.
    pub total: u64,
    /// Bytes held, summed over pos (so a finished transfer shows total × pos).
    pub done: u64,
    pub started_unix: u64,
    pub elapsed_ms: u64,
    /// Bytes/s over the last report interval, summed over pos.
    pub rate: u64,
    pub pos: Vec<PoStat>,
    /// Bytes per site link (issue 17), only for a class with site labels.
    pub sites: Vec<SiteLink>,
}

impl TransferStat {
    /// Bytes of this entry in a PROGRESS or STAT_REPLY payload (see `encode_stat`): a CAC
    /// fills one STAT_REPLY frame by it.
    pub fn wire_len(&self) -> usize {
        let str_len = |s: &str| 4 + s.len();
        let pos: usize = self.pos.iter().map(|p| str_len(&p.addr) + str_len(&p.state) + 8 + str_len(&p.error)).sum();
        let sites: usize = self.sites.iter().map(|l| str_len(&l.from) + str_len(&l.to) + 8).sum();
        6 * 8 + str_len(&self.class) + str_len(&self.master) + str_len(&self.state) + 4 + pos + 4 + sites
    }

    /// The last entry of a STAT_REPLY that had to leave `n` transfers out to fit one frame
    /// (transfer 0 is never granted). An older `wugui-stat` shows it as a row in state `omitted`.
    pub fn omitted(n: u64) -> TransferStat {
        TransferStat { state: OMITTED.into(), total: n, ..Default::default() }
    }

    /// How many transfers this entry stands for, if it is the `omitted` marker.
    pub fn omitted_count(&self) -> Option<u64> {
        (self.transfer == 0 && self.state == OMITTED).then_some(self.total)
    }
}

pub(super) fn encode_stat(w: &mut Writer, t: &TransferStat) {
    w.u64(t.transfer);
    w.str(&t.class);
    w.str(&t.master);
    w.str(&t.state);
    w.u64(t.total);
    w.u64(t.done);
    w.u64(t.started_unix);
    w.u64(t.elapsed_ms);
    w.u64(t.rate);
    w.u32(t.pos.len() as u32);
    for p in &t.pos {
        w.str(&p.addr);
        w.str(&p.state);
        w.u64(p.bytes);
        w.str(&p.error);
    }
    w.u32(t.sites.len() as u32);
    for l in &t.sites {
        w.str(&l.from);
        w.str(&l.to);
        w.u64(l.bytes);
    }
}

pub(super) fn decode_stat(r: &mut Reader) -> Result<TransferStat, DecodeError> {
    let mut t = TransferStat {
        transfer: r.u64("transfer")?,
        class: r.str(MAX_NAME, "class")?,
        master: r.str(MAX_NAME, "master")?,
        state: r.str(MAX_NAME, "state")?,
        total: r.u64("total")?,
        done: r.u64("done")?,
        started_unix: r.u64("started")?,
        elapsed_ms: r.u64("elapsed")?,
        rate: r.u64("rate")?,
        pos: Vec::new(),
        sites: Vec::new(),
    };
    let n = r.count(MAX_ADDRS, 20, "po stats")?;
    t.pos.reserve(n);
    for _ in 0..n {
        t.pos.push(PoStat {
            addr: r.str(MAX_NAME, "po address")?,
            state: r.str(MAX_NAME, "po state")?,
            bytes: r.u64("po bytes")?,
            error: r.str(MAX_TEXT, "po error")?,
        });
    }
    // Every link between two sites of at most MAX_SITES, and the unknown sender's.
    let n = r.count(MAX_SITES * (MAX_SITES + 1), 16, "site links")?;
    t.sites.reserve(n);
    for _ in 0..n {
        t.sites.push(SiteLink {
            from: r.str(MAX_LABEL, "site")?,
            to: r.str(MAX_LABEL, "site")?,
            bytes: r.u64("site bytes")?,
        });
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_len_is_the_encoded_length() {
        let po = |e: &str| PoStat { addr: "10.0.0.1:7200".into(), state: "sending".into(), bytes: 9, error: e.into() };
        for t in [
            TransferStat::default(),
            TransferStat {
                class: "base".into(),
                master: "10.0.0.5".into(),
                pos: vec![po(""), po("disk full")],
                sites: vec![SiteLink { from: "master".into(), to: "bj".into(), bytes: 5 }],
                ..Default::default()
            },
        ] {
            let mut w = Writer::new();
            encode_stat(&mut w, &t);
            assert_eq!(t.wire_len(), w.buf.len());
        }
    }
}
