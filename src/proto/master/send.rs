//! Blocks out: without a swarm the master fills each po's window from its cursor; in a swarm
//! the swarm's assignments become block sends (the master's) and push orders (a po's).

use super::state::State;
use super::MasterMachine;
use crate::proto::class::Verify;
use crate::proto::swarm::Src;
use crate::proto::{Action, Msg, Sum};
use std::time::Instant;

impl MasterMachine {
    /// Queues blocks to po `i` until its window is full.
    pub(super) fn pump(&mut self, i: usize) {
        let Some(plan) = self.plan.as_mut() else { return };
        let p = &mut self.pos[i];
        let Some(conn) = p.conn else { return };
        let State::Sending { cursor, inflight } = &mut p.state else { return };
        let nb = plan.manifest.blocks();
        let check = plan.class.block_check();
        // The blocks this pump sends and the ones after them are hashed on the source's
        // workers while the loop queues and sends.
        // A bounded look: a po that holds most blocks is not scanned to its end every time.
        let (have, end) = (&p.have, nb.min(*cursor + plan.window + super::plan::AHEAD as u64));
        let next = plan.unsummed((*cursor..end).filter(|&i| !have[i as usize]));
        plan.ahead(next.into_iter(), check);
        while *inflight < plan.window && *cursor < nb {
            let idx = *cursor;
            *cursor += 1;
            if p.have[idx as usize] {
                continue;
            }
            match plan.send_block(conn, idx) {
                Ok((send, _)) => {
                    self.out.push_back(send);
                    *inflight += 1;
                }
                // The source itself is broken: no po can get a good copy.
                Err(e) => return self.abort_all(e),
            }
        }
    }

    /// Turns the swarm's new assignments into block sends and push orders. Every po has a
    /// block's checksum before any po can receive the block (a chain forwards it without the
    /// master): the SUMS go out before the send or push order. Checksums hashed ahead go out
    /// with them, so that the pos get them in a few large frames, not a few per pass.
    pub(super) fn schedule(&mut self, now: Instant) {
        let Some(plan) = self.plan.as_mut() else { return };
        let Some(assigns) = plan.swarm.as_mut().map(|sw| sw.schedule(now)) else { return };
        // A plan or re-plan goes out before any block of it.
        self.tell_chains();
        let Some(plan) = self.plan.as_mut() else { return };
        // The source's workers hash these blocks and the next ones; what is done by now is
        // taken without waiting, and a block needed now and not done is waited for alone.
        let blocks: Vec<u64> = assigns.iter().map(|a| a.block).collect();
        plan.hash_ahead(&blocks);
        let mut sends = Vec::new();
        let mut sent = Vec::new();
        for a in assigns {
            let conn = match a.from {
                Src::Master => self.pos[a.to as usize].data,
                Src::Po(s) => self.pos[s as usize].conn,
            };
            let Some(conn) = conn.filter(|_| self.pos[a.to as usize].conn.is_some()) else {
                if let Some(sw) = plan.swarm.as_mut() {
                    sw.cancel(a.to, a.block, now);
                }
                continue;
            };
            let done = if a.from == Src::Master {
                plan.send_block(conn, a.block).map(|(send, fresh)| (send, fresh.map(|f| f.1)))
            } else {
                // A po serves it; its checksum must be known (and sent) first.
                let push = Action::Send { conn, msg: Msg::Push { transfer: plan.transfer, block: a.block, to: a.to } };
                match plan.sums[a.block as usize] {
                    Some(_) => Ok((push, None)),
                    None => plan.read_block(a.block).map(|(_, sum, _)| (push, Some(sum))),
                }
            };
            match done {
                Ok((send, fresh)) => {
                    plan.untold.extend(fresh.map(|sum| (a.block, sum)));
                    sent.push(a.block);
                    sends.push(send);
                }
                Err(e) => return self.abort_all(e),
            }
        }
        self.tell_sums(&sent);
        self.out.extend(sends);
    }

    /// Sends the checksums not yet told to every joined po, in one SUMS (split at the frame
    /// limit), when one of the blocks `sent` now needs it or enough have piled up.
    fn tell_sums(&mut self, sent: &[u64]) {
        let Some(plan) = self.plan.as_mut() else { return };
        if plan.class.block_check() == Verify::None {
            return;
        }
        // A checksum known some other way (a CHECK's digest) is told with the block too.
        let (sums, told) = (&plan.sums, &plan.told);
        let needed: Vec<(u64, Sum)> =
            sent.iter().filter(|&&b| !told[b as usize]).filter_map(|&b| Some((b, sums[b as usize]?))).collect();
        if needed.is_empty() && plan.untold.len() < SUMS_BATCH {
            return;
        }
        let mut batch = std::mem::take(&mut plan.untold);
        batch.extend(needed);
        batch.sort_unstable_by_key(|s| s.0);
        batch.dedup_by_key(|s| s.0);
        batch.retain(|s| !plan.told[s.0 as usize]);
        for s in &batch {
            plan.told[s.0 as usize] = true;
        }
        let transfer = plan.transfer;
        for chunk in batch.chunks(super::frames::SUMS_PER_FRAME) {
            for p in self.pos.iter().filter(|p| p.kind().joined()) {
                if let Some(conn) = p.conn {
                    self.out.push_back(Action::Send { conn, msg: Msg::Sums { transfer, sums: chunk.to_vec() } });
                }
            }
        }
    }
}

/// Checksums that go to the pos in one SUMS when no block needs them yet.
const SUMS_BATCH: usize = 64;
