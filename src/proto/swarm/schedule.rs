//! `schedule`: one pass over the swarm, in three phases (scatter, exchange, end-game), each
//! starting new assignments on links that have room.

use super::{Assign, Src, Swarm, DEPTH, LINKS, MASTER_LINKS, MASTER_QUEUE};
use std::time::{Duration, Instant};

/// How often `schedule` looks at every po, not only the dirty ones.
const FULL_PASS: Duration = Duration::from_millis(200);

/// An end-game pick: (receiver, block, whether it is an extra copy rather than an orphan).
type Pick = (usize, usize, bool);

#[allow(clippy::needless_range_loop)] // indices name pos in several parallel tables
impl Swarm {
    /// New assignments for every link with room.
    pub fn schedule(&mut self, now: Instant) -> Vec<Assign> {
        self.clock = Some(now);
        let mut out = Vec::new();
        let full = self.next_full.is_none_or(|t| t <= now);
        if full {
            // Link use is sampled on full passes only: an event must stay O(peers).
            self.diag.sample(now, &self.nodes);
            self.next_full = Some(now + FULL_PASS);
            self.slow_cache = std::sync::Arc::new(self.slow());
            self.cooldown.retain(|_, until| *until > now);
        }
        if self.chain_waiting() {
            self.chain_plan(now);
            if self.chain_waiting() {
                return out;
            }
        }
        // A handle (the phases borrow `self` mutably; `site_allows` reads the cache meanwhile).
        let slow = self.slow_cache.clone();
        if full && self.chained() {
            self.chain_survey();
            let lagging = self.chain_laggards();
            for i in (0..lagging.len()).filter(|&i| lagging[i]) {
                self.chain_to_tail(i as u32, &lagging);
            }
        }
        self.chain_feed(now, &mut out);
        self.scatter(&slow, now, &mut out);
        if full || !self.chain_quiet() {
            self.exchange(full, &slow, now, &mut out);
            let search = full || std::mem::take(&mut self.master_freed);
            if search && self.next_fresh >= self.blocks {
                self.end_game(&slow, now, &mut out);
            }
        }
        out
    }

    /// Phase 1, scatter: fresh blocks from the master, to the fast po that has had fewest.
    fn scatter(&mut self, slow: &[bool], now: Instant, out: &mut Vec<Assign>) {
        let mut any_fast = None;
        loop {
            while self.next_fresh < self.blocks && self.scattered[self.next_fresh as usize] {
                self.next_fresh += 1;
            }
            if self.next_fresh >= self.blocks {
                break;
            }
            // Asked only while there is a fresh block: with chains there is none, and an event
            // must not cost O(pos).
            let any_fast =
                *any_fast.get_or_insert_with(|| (0..self.nodes.len()).any(|r| self.nodes[r].live && !slow[r]));
            let b = self.next_fresh as usize;
            // A slow po gets fresh blocks only when every po is slow.
            let to = (0..self.nodes.len())
                .filter(|&r| self.master_room(r) && self.wants(r, b) && (!slow[r] || !any_fast))
                .min_by_key(|&r| (self.nodes[r].fresh, self.queued(Src::Master, r as u32), r));
            let Some(to) = to else { break };
            self.scattered[b] = true;
            self.nodes[to].fresh += 1;
            self.fresh_sent += 1;
            let a = Assign { from: Src::Master, to: to as u32, block: b as u64 };
            self.start(a, now);
            out.push(a);
        }
        if self.next_fresh >= self.blocks && self.diag.scattered.is_none() {
            self.diag.scattered = Some(now);
        }
    }

    /// Phase 2, exchange: every po keeps its planned links busy with its rarest blocks; a po whose
    /// planned receivers need nothing from it (or are gone) links to the neediest other
    /// neighbour that has room. A full pass looks at every po, otherwise only the dirty ones.
    fn exchange(&mut self, full: bool, slow: &[bool], now: Instant, out: &mut Vec<Assign>) {
        let senders: Vec<u32> =
            if full { (0..self.nodes.len() as u32).collect() } else { std::mem::take(&mut self.dirty_list) };
        for &i in &self.dirty_list {
            self.dirty[i as usize] = false;
        }
        self.dirty_list.clear();
        for &s in &senders {
            self.dirty[s as usize] = false;
        }
        for s in senders {
            let s = s as usize;
            if self.serves(s) && self.nodes[s].held > 0 {
                self.serve(s, slow[s], now, out);
            }
        }
    }

    /// Fills po `s`'s planned links, then links beyond the plan while the planned ones leave
    /// room: the open ones are refilled (the rest drain and close), then new ones open.
    fn serve(&mut self, s: usize, slow: bool, now: Instant, out: &mut Vec<Assign>) {
        let me = Src::Po(s as u32);
        for k in 0..self.plan[s].len() {
            let r = self.plan[s][k];
            if self.nodes[r as usize].live && !self.cooling(me, r, now) {
                self.fill(s, r, slow, now, out);
            }
        }
        for k in 0..self.neighbours[s].len() {
            let r = self.neighbours[s][k];
            if self.nodes[s].up <= LINKS && self.queued(me, r) > 0 && !self.plan[s].contains(&r) {
                self.fill(s, r, slow, now, out);
            }
        }
        while self.nodes[s].up < LINKS {
            let r = self.neighbours[s]
                .iter()
                .copied()
                .filter(|&r| {
                    let rn = &self.nodes[r as usize];
                    rn.live
                        && self.queued(me, r) == 0
                        && rn.down <= LINKS
                        && !self.cooling(me, r, now)
                        && self.pick(s, r as usize, slow).is_some()
                })
                .min_by_key(|&r| (self.nodes[r as usize].down, self.nodes[r as usize].held, r));
            let Some(r) = r else { break };
            self.fill(s, r, slow, now, out);
        }
    }

    /// Phase 3, end-game, once every block has left the master: its idle uplink sends what no
    /// serving po holds (a dead or excluded po's blocks), then, within a budget of one block in
    /// 16 of those it scattered, the rarest block a po cannot get from a neighbour, then the
    /// rarest block the po lacking most still waits for. A block whose only copy is on its way
    /// is not sent again. The budget keeps `src_copies` near 1, and a delta, where few blocks
    /// travel, near its minimum.
    fn end_game(&mut self, slow: &[bool], now: Instant, out: &mut Vec<Assign>) {
        // With chains, most often nothing to pick (they carry every block still missing): then
        // skip the O(blocks x pos) look at who holds what. (Without, the search below finds out
        // as fast.)
        let n = self.nodes.len();
        if self.chained() && !(0..n).any(|r| self.master_room(r) && self.wanted(r).any(|b| self.wants(r, b))) {
            return;
        }
        let held_by_server: Vec<bool> = (0..self.blocks as usize)
            .map(|b| (0..self.nodes.len()).any(|s| self.nodes[s].have[b] && self.serves(s)))
            .collect();
        loop {
            let budget = self.extra < self.fresh_sent / 16;
            let mut best = self.unreachable(&held_by_server, budget, slow, now);
            if best.is_none() && budget {
                best = self.neediest();
            }
            let Some((r, b, copy)) = best else { break };
            if copy {
                self.extra += 1;
            }
            let a = Assign { from: Src::Master, to: r as u32, block: b as u64 };
            self.start(a, now);
            out.push(a);
        }
    }

    /// The end-game's first choice: an orphan (no serving po holds it), else, within
    /// `budget`, a block the po cannot get from a fast serving neighbour; rarest first.
    fn unreachable(&self, held_by_server: &[bool], budget: bool, slow: &[bool], now: Instant) -> Option<Pick> {
        let mut best: Option<(usize, usize, (bool, u32))> = None;
        for r in (0..self.nodes.len()).filter(|&r| self.master_room(r)) {
            for b in self.wanted(r) {
                if !self.wants(r, b) || (self.count[b] == 0 && self.moving[b] > 0) {
                    continue;
                }
                let orphan = !held_by_server[b];
                let key = (!orphan, self.count[b]);
                if best.is_some_and(|(_, _, k)| key >= k) || (!orphan && !budget) {
                    continue;
                }
                let near = self.neighbours[r].iter().any(|&s| {
                    self.nodes[s as usize].have[b]
                        && self.serves(s as usize)
                        && !slow[s as usize]
                        && !self.cooling(Src::Po(s), r as u32, now)
                });
                if orphan || (!near && self.site_allows(Src::Master, r, b)) {
                    best = Some((r, b, key));
                }
            }
        }
        best.map(|(r, b, (copy, _))| (r, b, copy))
    }

    /// The end-game's fallback: the rarest block the po lacking most still waits for.
    fn neediest(&self) -> Option<Pick> {
        let needy = (0..self.nodes.len())
            .filter(|&r| self.nodes[r].live && self.master_room(r) && self.nodes[r].held < self.blocks)
            .min_by_key(|&r| (self.nodes[r].held, r));
        needy.and_then(|r| {
            self.wanted(r)
                .filter(|&b| self.wants(r, b) && self.count[b] > 0 && self.site_allows(Src::Master, r, b))
                .min_by_key(|&b| (self.count[b], b))
                .map(|b| (r, b, true))
        })
    }

    /// Whether the master's link to po `r` may take one more block: an open link queues
    /// `DEPTH` blocks, or more while the master feeds few pos; a new one needs a free link.
    fn master_room(&self, r: usize) -> bool {
        let q = self.queued(Src::Master, r as u32) as usize;
        if q > 0 {
            q < MASTER_QUEUE.div_ceil(self.master_links).max(DEPTH as usize)
        } else {
            self.master_links < MASTER_LINKS
        }
    }

    /// The rarest block `s` holds that `r` lacks (only ones nobody else holds when `s` is
    /// slow).
    fn pick(&self, s: usize, r: usize, slow: bool) -> Option<usize> {
        self.wanted(r)
            .filter(|&b| {
                self.nodes[s].have[b]
                    && self.wants(r, b)
                    && (!slow || self.count[b] <= 1)
                    && self.site_allows(Src::Po(s as u32), r, b)
            })
            .min_by_key(|&b| (self.count[b], b))
    }

    /// Fills link `s -> r` up to `DEPTH` blocks.
    fn fill(&mut self, s: usize, r: u32, slow: bool, now: Instant, out: &mut Vec<Assign>) {
        while self.queued(Src::Po(s as u32), r) < DEPTH {
            let Some(b) = self.pick(s, r as usize, slow) else { break };
            let a = Assign { from: Src::Po(s as u32), to: r, block: b as u64 };
            self.start(a, now);
            out.push(a);
        }
    }
}
