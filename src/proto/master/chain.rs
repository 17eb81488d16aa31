//! Chains (issue 16): with `p2p = on` the swarm plans K stripes through the pos; each po hears
//! once (and again when a re-plan changes it) who its successor is in each stripe, and which
//! blocks go down the chains. One log line per plan and per change.

use super::MasterMachine;
use crate::proto::bitmap::bitmap;
use crate::proto::msg::NO_NEXT;
use crate::proto::{Action, Msg};

/// Stripes: one chain carries everything. The pipeline costs N·K blocks before the tail
/// gets its first, and the flow model gives K = 1–2 about the same end.
pub(super) const STRIPES: usize = 1;

/// The most blocks `block_size = auto` makes for chains (`class::auto_block_size_for`).
pub(super) const MOST_AUTO_BLOCKS: u64 = 2048;

/// Whether chains pay off for `pos` pos and `blocks` blocks: the last po gets its first block
/// N·K blocks' time late, the swarm's epidemic about log2(N); chains are planned only when
/// that fill is at most an eighth of the transfer.
pub(super) fn worth_it(pos: usize, blocks: u64) -> bool {
    blocks >= 8 * (pos * STRIPES) as u64
}

impl MasterMachine {
    /// Po `i` follows the last CHAIN it was told (an ack with no CHAIN told counts nothing).
    pub(super) fn on_chain_ack(&mut self, i: usize) {
        if let Some(sw) = self.plan.as_mut().and_then(|p| p.swarm.as_mut()) {
            sw.chain_acked(i as u32);
        }
    }

    /// Sends CHAIN to every po whose successors changed, and logs the plan or the change.
    pub(super) fn tell_chains(&mut self) {
        let Some(plan) = self.plan.as_mut() else { return };
        let transfer = plan.transfer;
        let Some(sw) = plan.swarm.as_mut() else { return };
        // A dead site entry handed over to the next po of its site (issue 17).
        for (s, site, po) in sw.chain_site_entries() {
            let po = po.and_then(|i| self.pos.get(i as usize)).map_or("-", |p| p.name.as_str());
            let site = plan.site_bytes.sites().name(site);
            log::info!("event=site_entry transfer={transfer} stripe={s} site={site} po={po}");
        }
        let news = sw.chain_news();
        if news.is_empty() {
            return;
        }
        let Some((k, set)) = sw.chain_set() else { return };
        let first = !std::mem::replace(&mut plan.chain_told, true);
        let name = |i: u32| self.pos.get(i as usize).map_or("-".to_owned(), |p| p.name.clone());
        if first {
            let stripes: Vec<String> = sw
                .chain_orders()
                .iter()
                .map(|o| o.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(">"))
                .collect();
            let n = set.iter().filter(|b| **b).count();
            log::info!(
                "event=chain_plan transfer={transfer} k={k} pos={} chain_blocks={n} stripes={}",
                news.len(),
                stripes.join("|")
            );
        }
        let set = bitmap(set);
        for (i, next) in news {
            if !first {
                for (s, n) in next.iter().enumerate() {
                    let to = n.map_or("-".to_owned(), name);
                    log::info!("event=chain_relink transfer={transfer} po={} stripe={s} next={to}", name(i));
                }
            }
            let Some(conn) = self.pos[i as usize].conn else { continue };
            let next = next.iter().map(|n| n.unwrap_or(NO_NEXT)).collect();
            self.out.push_back(Action::Send { conn, msg: Msg::Chain { transfer, next, set: set.clone() } });
        }
    }
}
