//! Status reports: what a master tells its cac about a transfer, and what `wugui-stat` shows.

use crate::proto::codec::{DecodeError, Reader, Writer};
use crate::proto::wire::{MAX_ADDRS, MAX_NAME, MAX_TEXT};

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
    Ok(t)
}
