//! Blocks out: without a swarm the master fills each po's window from its cursor; in a swarm
//! the swarm's assignments become block sends (the master's) and push orders (a po's).

use super::state::State;
use super::MasterMachine;
use crate::proto::class::Verify;
use crate::proto::swarm::Src;
use crate::proto::{Action, Msg};
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

    /// Turns the swarm's new assignments into block sends and push orders. Checksums go to
    /// every po before any po can be asked to serve the block.
    pub(super) fn schedule(&mut self, now: Instant) {
        let Some(plan) = self.plan.as_mut() else { return };
        let Some(assigns) = plan.swarm.as_mut().map(|sw| sw.schedule(now)) else { return };
        // A plan or re-plan goes out before any block of it.
        self.tell_chains();
        let Some(plan) = self.plan.as_mut() else { return };
        // Every block of these whose checksum is still unknown is hashed on the source's
        // workers at once, while the loop goes through them in order.
        let next = plan.unsummed(assigns.iter().map(|a| a.block));
        plan.ahead(next.into_iter(), plan.class.block_check());
        let mut sums = Vec::new();
        let mut sends = Vec::new();
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
            let sent = if a.from == Src::Master {
                plan.send_block(conn, a.block).map(|(send, fresh)| (send, fresh.map(|f| f.1)))
            } else {
                // A po serves it; its checksum must be known (and sent) first.
                let push = Action::Send { conn, msg: Msg::Push { transfer: plan.transfer, block: a.block, to: a.to } };
                match plan.sums[a.block as usize] {
                    Some(_) => Ok((push, None)),
                    None => plan.read_block(a.block).map(|(_, sum, _)| (push, Some(sum))),
                }
            };
            match sent {
                Ok((send, fresh)) => {
                    sums.extend(fresh.map(|sum| (a.block, sum)));
                    sends.push(send);
                }
                Err(e) => return self.abort_all(e),
            }
        }
        if !sums.is_empty() && plan.class.block_check() != Verify::None {
            for p in self.pos.iter().filter(|p| p.kind().joined()) {
                if let Some(conn) = p.conn {
                    let msg = Msg::Sums { transfer: plan.transfer, sums: sums.clone() };
                    self.out.push_back(Action::Send { conn, msg });
                }
            }
        }
        self.out.extend(sends);
    }
}
