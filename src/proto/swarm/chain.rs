//! Chains in the swarm (issue 16): the blocks every po needs (the chain set) flow through K
//! stripes, each po forwarding what it verified to its successor with no word to the master.
//! The master feeds each stripe's head, and records every forward as an *implicit* assignment
//! when the forwarder reports HAVE, so stall detection, blame, cancel and leave work as for
//! any other assignment. A (po, block) pair whose chain delivery is pending is never scheduled
//! by scatter or exchange; it becomes *repair* (normal scheduling) when its delivery stalls, its
//! copy was bad, its predecessor died or was re-planned, or the po left the chain.

use super::{Assign, Src, Swarm};
use crate::proto::chain::stripe_of;
use crate::proto::sites::{self, Sites};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// How long the master waits, after the first po joined, for the others before it plans the
/// chains over those that joined; a later one gets its blocks by repair.
const PLAN_WAIT: Duration = Duration::from_secs(2);

pub(super) struct Chains {
    pub(super) k: usize,
    /// The planned order of every po in each stripe (`sites::stripes`, the one call: with no
    /// labels it is `chain::stripes`), each site's pos contiguous.
    planned: Vec<Vec<u32>>,
    /// The members of each stripe in order, once planned.
    order: Vec<Vec<u32>>,
    /// Successor of each po in each stripe (`None`: the tail, or no link to the next one), and
    /// the inverse: the predecessor that forwards to it.
    next: Vec<Vec<Option<u32>>>,
    prev: Vec<Vec<Option<u32>>>,
    /// Pos the master feeds in each stripe: the first, and any whose predecessor has no link.
    heads: Vec<Vec<u32>>,
    pub(super) member: Vec<bool>,
    /// The blocks every member needs, as of the plan.
    pub(super) set: Vec<bool>,
    /// Pairs taken out of the chain, by po: scheduled like any other block. (Per po, so that
    /// the scheduler looks at a member's few repair blocks, not at every block.)
    pub(super) repair: Vec<BTreeSet<u64>>,
    /// Blocks outside the chain set each member lacks: while none, a member wants nothing but
    /// its repair blocks.
    pub(super) unset_missing: Vec<u64>,
    /// Where the master's feed of each stripe's head goes on, by stripe and po.
    cursor: Vec<Vec<Option<u64>>>,
    /// Blocks the master keeps queued to each head.
    depth: u8,
    first_join: Option<Instant>,
    pub(super) planned_at: Option<Instant>,
    /// Pos whose successors changed since the caller last asked (`chain_news`).
    news: BTreeSet<u32>,
    /// CHAINs told to each po, and acknowledged by it: until a po acknowledged the last, a
    /// block it reports may have gone to its old successor, so its new one gets it by repair.
    told: Vec<u32>,
    acked: Vec<u32>,
    /// Pos moved to the tail once: never again (the lab showed slow verdicts that come and go
    /// turning every full pass into a re-plan).
    moved: Vec<bool>,
    /// Full passes in a row on which each po lagged behind its predecessor (`chain_laggards`),
    /// and each po's blocks at the last full pass.
    strikes: Vec<u8>,
    held_at_pass: Vec<u64>,
    /// Some live po lacks a block outside the chain set (as of the last full pass).
    open_unset: bool,
    /// `chain_quiet`'s counts, kept as they change (it is asked on every event, and must not
    /// cost O(pos)): repair pairs still open (a live po lacks the block), and live pos outside
    /// the chains that lack blocks. `quiet_part` is one po's share.
    pub(super) open_repair: u64,
    pub(super) outsiders: u64,
    /// Site entries that changed since the caller last asked (`chain_site_entries`): stripe,
    /// site, the new entry po (`None`: the site has no po left in the stripe).
    entries: Vec<(usize, u16, Option<u32>)>,
}

impl Chains {
    pub(super) fn new(sites: &Sites, blocks: u64, k: usize, depth: u8) -> Chains {
        let n = sites.pos();
        Chains {
            k: k.max(1),
            planned: sites::stripes(sites, k.max(1), &[]),
            order: Vec::new(),
            next: Vec::new(),
            prev: Vec::new(),
            heads: Vec::new(),
            member: vec![false; n],
            set: vec![false; blocks as usize],
            repair: vec![BTreeSet::new(); n],
            unset_missing: vec![0; n],
            cursor: vec![vec![None; n]; k.max(1)],
            depth: depth.max(2),
            first_join: None,
            planned_at: None,
            news: BTreeSet::new(),
            told: vec![0; n],
            acked: vec![0; n],
            moved: vec![false; n],
            strikes: vec![0; n],
            held_at_pass: vec![0; n],
            open_unset: true,
            open_repair: 0,
            outsiders: 0,
            entries: Vec::new(),
        }
    }

    /// The links the plan needs: each hop, and each hop past one po (a cut po's neighbours
    /// link); with sites, last, each po of a remote site to its run's last po and to the next
    /// run's first (where a slow po moves to, `chain_to_tail`), so it is not fed from outside.
    pub(super) fn edges(&self, sites: &Sites) -> Vec<(u32, u32)> {
        let mut e = Vec::new();
        for o in &self.planned {
            for w in o.windows(2) {
                e.push((w[0], w[1]));
            }
        }
        for o in &self.planned {
            for w in o.windows(3) {
                e.push((w[0], w[2]));
            }
        }
        for o in self.planned.iter().filter(|_| sites.labelled()) {
            for (at, &p) in o.iter().enumerate().filter(|(_, p)| sites.site(**p) != 0) {
                let end = at + o[at..].iter().take_while(|&&q| sites.site(q) == sites.site(p)).count();
                e.push((o[end - 1], p));
                if let Some(&next) = o.get(end) {
                    e.push((p, next));
                }
            }
        }
        e
    }
}

impl Swarm {
    /// Turns on chains for the first push of a transfer: `k` stripes, `depth` blocks queued by the
    /// master to each head. The neighbour graph takes the chain's links first. The stripes
    /// follow the pos' sites: call `set_sites` first (it plans them again if not).
    pub fn with_chains(mut self, k: usize, depth: u8) -> Swarm {
        let c = Chains::new(&self.sites, self.blocks, k, depth);
        self.neighbours = super::plan::graph_with(self.nodes.len(), self.peers, &c.edges(&self.sites));
        self.plan = super::plan::plan(&self.neighbours, super::LINKS);
        self.chain = Some(c);
        self
    }

    /// Whether chains are on and planned.
    pub fn chained(&self) -> bool {
        self.chain.as_ref().is_some_and(|c| c.planned_at.is_some())
    }

    /// Whether the scheduler still waits for the chain plan (chains on, not planned).
    pub(super) fn chain_waiting(&self) -> bool {
        self.chain.as_ref().is_some_and(|c| c.planned_at.is_none())
    }

    /// Whether (r, b) waits for its chain delivery: never scheduled otherwise.
    pub(super) fn chain_pending(&self, r: usize, b: usize) -> bool {
        self.chain.as_ref().is_some_and(|c| {
            c.planned_at.is_some()
                && c.member.get(r).copied().unwrap_or(false)
                && c.set.get(b).copied().unwrap_or(false)
                && !self.nodes[r].have[b]
                && !c.repair[r].contains(&(b as u64))
        })
    }

    /// Where po `i` forwards block `b` once it verified it: its successor in `b`'s stripe, for
    /// a block of the chain set.
    pub fn chain_next(&self, i: u32, b: u64) -> Option<u32> {
        let c = self.chain.as_ref().filter(|c| c.planned_at.is_some())?;
        if !c.set.get(b as usize).copied().unwrap_or(false) {
            return None;
        }
        // `i` may come from the wire (a po's BAD names its source).
        c.next[stripe_of(b, c.k)].get(i as usize).copied().flatten()
    }

    /// Who sent po `i` chain block `b` when its HAVE comes before its forwarder's (HAVEs travel
    /// on different links): its predecessor in `b`'s stripe, as nothing else was sent it. Asked
    /// before `have`, for the bytes per site link (issue 17), never for blame.
    /// (A pair taken out of the chain for repair but not scheduled yet can still arrive by the
    /// chain: its forwarder had sent it before the master knew.)
    pub fn chain_source(&self, i: u32, b: u64) -> Option<u32> {
        let c = self.chain.as_ref().filter(|c| c.planned_at.is_some())?;
        let chained =
            c.member.get(i as usize).copied().unwrap_or(false) && c.set.get(b as usize).copied().unwrap_or(false);
        if !chained || self.inflight.contains_key(&(i, b)) || self.nodes[i as usize].have[b as usize] {
            return None;
        }
        c.prev[stripe_of(b, c.k)][i as usize]
    }

    /// The chain set as a have-bitmap's layout, and `k`.
    pub fn chain_set(&self) -> Option<(usize, &[bool])> {
        self.chain.as_ref().filter(|c| c.planned_at.is_some()).map(|c| (c.k, &c.set[..]))
    }

    /// Pos whose successors changed since the last call, each with its successor per stripe.
    pub fn chain_news(&mut self) -> Vec<(u32, Vec<Option<u32>>)> {
        let Some(c) = self.chain.as_mut() else { return Vec::new() };
        let news = std::mem::take(&mut c.news);
        for &i in &news {
            c.told[i as usize] += 1;
        }
        // A po cut out but alive (excluded, or gone and back) hears that it forwards nothing.
        news.into_iter().map(|i| (i, c.next.iter().map(|n| n[i as usize]).collect())).collect()
    }

    /// Po `i` acknowledged a CHAIN: what it reports from now on went by the plan it was told.
    pub fn chain_acked(&mut self, i: u32) {
        if let Some(c) = self.chain.as_mut().filter(|c| (i as usize) < c.told.len()) {
            c.acked[i as usize] = (c.acked[i as usize] + 1).min(c.told[i as usize]);
        }
    }

    /// Site entries that changed since the last call (a dead entry po's site hands over to its
    /// next po): stripe, site, new entry po.
    pub fn chain_site_entries(&mut self) -> Vec<(usize, u16, Option<u32>)> {
        self.chain.as_mut().map(|c| std::mem::take(&mut c.entries)).unwrap_or_default()
    }

    /// The stripes' orders, for the log.
    pub fn chain_orders(&self) -> Vec<Vec<u32>> {
        self.chain.as_ref().map(|c| c.order.clone()).unwrap_or_default()
    }

    /// Plans the chains once every po joined, or `PLAN_WAIT` after the first did, over the live
    /// pos in the planned order. The chain set is what none of them holds.
    pub(super) fn chain_plan(&mut self, now: Instant) {
        let live: Vec<bool> = self.nodes.iter().map(|n| n.live).collect();
        let Some(c) = self.chain.as_mut().filter(|c| c.planned_at.is_none()) else { return };
        if !live.iter().any(|l| *l) {
            return;
        }
        let first = *c.first_join.get_or_insert(now);
        if !live.iter().all(|l| *l) && now < first + PLAN_WAIT {
            return;
        }
        c.planned_at = Some(now);
        c.member = live;
        c.order = c.planned.iter().map(|o| o.iter().copied().filter(|&p| c.member[p as usize]).collect()).collect();
        for b in 0..self.blocks as usize {
            c.set[b] = self.count[b] == 0;
            if c.set[b] {
                // The chain carries it: scatter must not.
                self.scattered[b] = true;
            }
        }
        c.news = (0..self.nodes.len() as u32).filter(|&i| c.member[i as usize]).collect();
        for (i, n) in self.nodes.iter().enumerate().filter(|(i, _)| c.member[*i]) {
            c.unset_missing[i] = n.have.iter().zip(&c.set).filter(|(h, s)| !**h && !**s).count() as u64;
        }
        let (open, out) = self.quiet_recount();
        if let Some(c) = self.chain.as_mut() {
            (c.open_repair, c.outsiders) = (open, out);
        }
        self.chain_relink();
    }

    /// Recomputes successors and heads from the orders: a hop without a link makes its
    /// receiver a head that the master feeds.
    fn chain_relink(&mut self) {
        let n = self.nodes.len();
        let Some(c) = self.chain.as_mut() else { return };
        let old = std::mem::take(&mut c.next);
        c.next = vec![vec![None; n]; c.k];
        c.prev = vec![vec![None; n]; c.k];
        c.heads = vec![Vec::new(); c.k];
        for s in 0..c.k {
            for (at, &p) in c.order[s].iter().enumerate() {
                let prev = at.checked_sub(1).map(|j| c.order[s][j]);
                match prev {
                    Some(q) if self.neighbours[q as usize].contains(&p) => {
                        c.next[s][q as usize] = Some(p);
                        c.prev[s][p as usize] = Some(q);
                    }
                    _ => c.heads[s].push(p),
                }
            }
        }
        for i in 0..n as u32 {
            let before: Vec<Option<u32>> = old.iter().map(|o| o[i as usize]).collect();
            let now: Vec<Option<u32>> = c.next.iter().map(|o| o[i as usize]).collect();
            if before.len() == now.len() && before != now {
                c.news.insert(i);
            }
        }
    }

    /// Takes po `i` out of every stripe (it died, left, or is excluded): its predecessor now
    /// feeds its successor, and every chain block the successor lacks that the predecessor
    /// already held (so will not forward again) becomes repair. A site's pos being contiguous,
    /// when `i` was where a stripe entered its site the next po of that site is the entry now
    /// (`sites::cut_out`), and the repair rule lets only that crossing carry what the site
    /// lacks.
    pub(super) fn chain_cut(&mut self, i: u32) {
        if !self.chain.as_ref().is_some_and(|c| c.planned_at.is_some() && c.member[i as usize]) {
            return;
        }
        let quiet = self.quiet_part(i as usize);
        let Some(c) = self.chain.as_mut() else { return };
        c.member[i as usize] = false;
        self.quiet_moved(i as usize, quiet);
        let Some(c) = self.chain.as_mut() else { return };
        let mut links = Vec::new();
        for s in 0..c.k {
            if let Some(cut) = sites::cut_out(&self.sites, &mut c.order[s], i) {
                links.push((s, cut.pred, cut.succ));
                if let Some((site, po)) = cut.new_entry.filter(|(site, _)| *site != 0) {
                    c.entries.push((s, site, po));
                }
            }
        }
        self.chain_relink();
        for (s, pred, succ) in links {
            self.chain_mend(s, pred, succ);
        }
    }

    /// Po `pred` (`None`: the master) now feeds `succ` in stripe `s`: what `succ` lacks and
    /// `pred` already holds (so will not forward again) goes by repair; a new head's feed
    /// starts again from its stripe's first block.
    fn chain_mend(&mut self, s: usize, pred: Option<u32>, succ: Option<u32>) {
        let Some(succ) = succ else { return };
        let quiet = self.quiet_part(succ as usize);
        let Some(c) = self.chain.as_mut() else { return };
        let k = c.k as u64;
        let mut b = s as u64;
        while b < self.blocks {
            let bi = b as usize;
            let pred_has = pred.is_some_and(|p| self.nodes[p as usize].have[bi]);
            if c.set[bi] && pred_has && !self.nodes[succ as usize].have[bi] && !self.inflight.contains_key(&(succ, b)) {
                c.repair[succ as usize].insert(b);
            }
            b += k;
        }
        if c.heads[s].contains(&succ) {
            c.cursor[s][succ as usize] = Some(s as u64);
        }
        self.quiet_moved(succ as usize, quiet);
    }

    /// Moves a slow po to the tail of every stripe, so that it only consumes; once, and not
    /// when only slow pos follow it already. With sites, a remote site's po goes only to the
    /// end of its site's run (`sites::to_segment_tail`): past it, every block would cross into
    /// its site a second time.
    pub(super) fn chain_to_tail(&mut self, i: u32, slow: &[bool]) {
        let Some(c) = self.chain.as_mut().filter(|c| c.planned_at.is_some() && c.member[i as usize]) else { return };
        let sites = &self.sites;
        let behind_slow = |o: &Vec<u32>| sites::behind_in_segment(sites, o, i).all(|p| slow[p as usize]);
        if c.moved[i as usize] || c.order.iter().all(behind_slow) {
            return;
        }
        c.moved[i as usize] = true;
        let mut links = Vec::new();
        for s in 0..c.k {
            if let Some(m) = sites::to_segment_tail(&self.sites, &mut c.order[s], i) {
                links.push((s, m.pred, m.succ));
                links.push((s, m.before, Some(i)));
                // Its new successor (the next site's entry) gets from it what it holds already.
                links.push((s, Some(i), m.after));
            }
        }
        self.chain_relink();
        for (s, pred, succ) in links {
            self.chain_mend(s, pred, succ);
        }
    }

    /// Whether the chains leave an event's pass nothing to do but feed the heads: no repair pair
    /// open, no block outside the chain set missing (as of the last full pass), and every po
    /// outside the chains complete. Exchange and end-game then wait for the next full pass:
    /// their search costs O(blocks) a sender, and chains bring one HAVE a block a po.
    pub(super) fn chain_quiet(&self) -> bool {
        let Some(c) = self.chain.as_ref().filter(|c| c.planned_at.is_some()) else { return false };
        debug_assert_eq!((c.open_repair, c.outsiders), self.quiet_recount(), "chain_quiet's counts");
        !c.open_unset && c.open_repair == 0 && c.outsiders == 0
    }

    /// Po `i`'s share of `chain_quiet`'s counts: its open repair pairs, and 1 if it is a live po
    /// outside the chains that lacks blocks.
    pub(super) fn quiet_part(&self, i: usize) -> (u64, u64) {
        let Some(c) = self.chain.as_ref() else { return (0, 0) };
        let n = &self.nodes[i];
        if !n.live {
            return (0, 0);
        }
        let open = c.repair[i].iter().filter(|&&b| !n.have[b as usize]).count() as u64;
        (open, u64::from(!c.member[i] && n.held < self.blocks))
    }

    /// Po `i`'s share changed from `before`: the counts follow.
    pub(super) fn quiet_moved(&mut self, i: usize, before: (u64, u64)) {
        let after = self.quiet_part(i);
        if let Some(c) = self.chain.as_mut() {
            c.open_repair = c.open_repair + after.0 - before.0;
            c.outsiders = c.outsiders + after.1 - before.1;
        }
    }

    /// `chain_quiet`'s counts from scratch.
    fn quiet_recount(&self) -> (u64, u64) {
        (0..self.nodes.len()).map(|i| self.quiet_part(i)).fold((0, 0), |a, p| (a.0 + p.0, a.1 + p.1))
    }

    /// On a full pass: forgets repair pairs that were settled, and looks whether any live po
    /// lacks a block outside the chain set.
    pub(super) fn chain_survey(&mut self) {
        let nodes = &self.nodes;
        let Some(c) = self.chain.as_mut().filter(|c| c.planned_at.is_some()) else { return };
        for (r, bs) in c.repair.iter_mut().enumerate() {
            bs.retain(|&b| nodes[r].live && !nodes[r].have[b as usize]);
        }
        let set = &c.set;
        c.open_unset = nodes.iter().any(|n| n.live && n.have.iter().zip(set).any(|(h, s)| !h && !s));
    }

    /// Members whose own downlink holds them back: on two full passes in a row, behind their
    /// predecessor in some stripe by more than a sixty-fourth of the stripe (at least 16 blocks)
    /// and gaining blocks at under half its pace. (A po just relinked behind a faster
    /// predecessor is behind too, but catches up faster than it gains.) A po's fastest
    /// transfer (`Swarm::slow`) cannot tell on a chain: a head's blocks wait behind the feed.
    pub(super) fn chain_laggards(&mut self) -> Vec<bool> {
        let n = self.nodes.len();
        let mut lagging = vec![false; n];
        let Some(c) = self.chain.as_mut().filter(|c| c.planned_at.is_some()) else { return lagging };
        // Behind by a sixty-fourth of the stripe (at least 16 blocks), while its predecessor
        // gained at least 8 blocks in the pass: well above what HAVEs waiting for company
        // (`po::chain::HAVE_DELAY`) make two equal links differ by, and found within about two
        // passes of a slow link's first block, before its successors have starved for long.
        let limit = (self.blocks / (64 * c.k as u64)).max(16);
        let gain: Vec<u64> = (0..n).map(|i| self.nodes[i].held.saturating_sub(c.held_at_pass[i])).collect();
        for s in 0..c.k {
            for w in c.order[s].windows(2) {
                let (p, i) = (w[0] as usize, w[1] as usize);
                let (pn, inode) = (&self.nodes[p], &self.nodes[i]);
                let behind = (s..self.blocks as usize)
                    .step_by(c.k)
                    .filter(|&b| c.set[b] && pn.have[b] && !inode.have[b])
                    .count() as u64;
                if behind > limit && pn.live && inode.live && gain[p] >= 8 && 2 * gain[i] < gain[p] {
                    lagging[i] = true;
                }
            }
        }
        for (i, n) in self.nodes.iter().enumerate() {
            c.held_at_pass[i] = n.held;
        }
        for (strikes, lag) in c.strikes.iter_mut().zip(lagging.iter_mut()) {
            *strikes = if *lag { strikes.saturating_add(1) } else { 0 };
            *lag = *strikes >= 2;
        }
        lagging
    }

    /// Whether a stalled-looking assignment is a chain forward to a po that keeps reporting
    /// blocks: it waits its turn behind that po's own slow link (a slow tail), it is not lost.
    pub(super) fn chain_waits(&self, to: u32, b: u64, from: Src, now: Instant, limit: Duration) -> bool {
        let Src::Po(s) = from else { return false };
        self.chain_next(s, b) == Some(to)
            && self.nodes[to as usize].last_have.is_some_and(|t| now.duration_since(t) < limit)
    }

    /// The pair (to, b) leaves the chain: its delivery stalled, was cancelled or was bad.
    pub(super) fn chain_repair(&mut self, to: u32, b: u64) {
        if self.chain_pending(to as usize, b as usize) {
            let live = self.nodes[to as usize].live;
            if let Some(c) = self.chain.as_mut() {
                // Pending: `to` lacks it, so the pair is open while `to` is live.
                if c.repair[to as usize].insert(b) && live {
                    c.open_repair += 1;
                }
            }
        }
    }

    /// Po `i` holds chain block `b` now and forwards it: the forward is an assignment from now
    /// on, unless its successor needs it no more (then the po's copy is wasted, not wrong).
    pub(super) fn chain_forward(&mut self, i: u32, b: u64, now: Instant) {
        let Some(to) = self.chain_next(i, b) else { return };
        if !self.chain_pending(to as usize, b as usize) || self.inflight.contains_key(&(to, b)) {
            return;
        }
        let sure = self.chain.as_ref().is_some_and(|c| c.acked[i as usize] == c.told[i as usize]);
        if !self.nodes[to as usize].live || !self.serves(i as usize) || !sure {
            return self.chain_repair(to, b);
        }
        self.start(Assign { from: Src::Po(i), to, block: b }, now);
    }

    /// The master's part: each head's blocks of its stripe, in order, `depth` queued.
    pub(super) fn chain_feed(&mut self, now: Instant, out: &mut Vec<Assign>) {
        let Some(c) = self.chain.as_ref().filter(|c| c.planned_at.is_some()) else { return };
        let (k, depth) = (c.k, c.depth);
        for s in 0..k {
            for at in 0.. {
                let Some(h) = self.chain.as_ref().and_then(|c| c.heads[s].get(at).copied()) else { break };
                self.chain_feed_head(s, h, k, depth, now, out);
            }
        }
    }

    /// Feeds head `h` of stripe `s` up to `depth` blocks, on from its cursor.
    fn chain_feed_head(&mut self, s: usize, h: u32, k: usize, depth: u8, now: Instant, out: &mut Vec<Assign>) {
        if !self.nodes[h as usize].live {
            return;
        }
        let mut b = self.chain.as_ref().and_then(|c| c.cursor[s][h as usize]).unwrap_or(s as u64);
        while b < self.blocks && self.queued(Src::Master, h) < depth {
            if self.chain_pending(h as usize, b as usize) && !self.inflight.contains_key(&(h, b)) {
                let a = Assign { from: Src::Master, to: h, block: b };
                if self.moving[b as usize] == 0 && self.count[b as usize] == 0 {
                    self.fresh_sent += 1;
                }
                self.start(a, now);
                out.push(a);
            }
            b += k as u64;
        }
        if let Some(c) = self.chain.as_mut() {
            c.cursor[s][h as usize] = Some(b);
        }
    }
}
