//! What a `wugui-stat` client (or a master's STAT query) is told.

use super::*;

impl<S: Store> PoMachine<S> {
    pub(super) fn stat_reply(&mut self, conn: ConnId) {
        let transfers = self
            .transfers
            .iter()
            .map(|(id, t)| TransferStat {
                transfer: *id,
                class: t.class.name.clone(),
                state: t.state.name().into(),
                total: t.manifest.bytes(),
                done: t.bytes,
                elapsed_ms: 0,
                pos: vec![],
                master: String::new(),
                started_unix: 0,
                rate: 0,
                sites: vec![],
            })
            .collect();
        self.send(conn, Msg::StatReply { transfers });
    }
}
