//! The master's P2P scheduler: a pure function of the swarm's state.
//!
//! It knows which po holds which block (the HAVE stream), which transfers are in flight, and
//! which links are busy. `schedule` returns new assignments "send block b from X to po r".
//! It thinks in links (sender -> receiver), each a TCP connection carrying blocks one after
//! another, because the network lab showed what fills links: a few long-lived flows per host
//! (a static mesh of 3 flows per host carries 94 of 100 Mbit/s into every host), while many
//! short ones share badly and each waits for the control loop (HAVE to the master, push order
//! back: 20-40 ms under load).
//!
//! - **Plan.** At the start every po gets `LINKS` planned receivers among its neighbours,
//!   and `LINKS` planned senders (i -> i+1..i+3 in a full mesh), so every uplink and every
//!   downlink carries the same few flows.
//! - **Depth.** A link queues `DEPTH` blocks, so the next one is in the sender's socket
//!   when a block lands, and the link stays busy while the control loop runs.
//! - **Scatter.** The master sends each block once, to the po that has had the fewest fresh
//!   blocks so far, so every po has blocks of its own to serve from the start.
//! - **Exchange.** Each po keeps its planned links filled with its rarest blocks (rarest
//!   first keeps every block available from several places). A po whose planned receivers
//!   need nothing from it serves the neediest other neighbour instead, up to `LINKS` links.
//! - **Slow pos** (whose fastest block took over 2.5 times the median) get no fresh blocks and
//!   serve only blocks nobody else holds, so they are never anyone's only source.
//! - **Faults.** A po that served a corrupt block `MAX_FAULTS` times is no longer a source.
//!   A dead po's blocks no longer count, and what only it held goes back to the master.
//! - **End-game.** When every block has left the master, its idle uplink sends what no
//!   serving po holds, and within a small budget helps the pos that lack most.
//!
//! The neighbour graph is fixed at the start (a ring plus random matchings, at most `peers`
//! links per po), so n pos cost O(n) connections.

mod chain;
mod diag;
mod ids;
mod plan;
mod schedule;
#[cfg(test)]
mod tests;

pub use plan::graph;

use super::sites::{self, Sites};
use diag::Diag;
use ids::IdMap;
use plan::plan;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Src {
    Master,
    Po(u32),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Assign {
    pub from: Src,
    pub to: u32,
    pub block: u64,
}

pub const MAX_FAULTS: u32 = 3;
/// The index the master presents on its data connection to a po.
pub const MASTER_PEER: u32 = u32::MAX;
pub const COOLDOWN: Duration = Duration::from_secs(1);
/// Links each po serves at once, and receives on from other pos (one more when a planned
/// sender has nothing for it). Few long-lived flows fill a link; many short ones queue up.
const LINKS: usize = 3;
/// Blocks queued on one link, one behind the other: the next one is already in the sender's
/// socket when a block lands, so the link stays busy while the HAVE travels to the master and
/// the next push order travels back.
const DEPTH: u8 = 2;
/// The master keeps at least this many blocks queued in all, so one fast link (a single po)
/// is as busy as many slow ones.
const MASTER_QUEUE: usize = 8;
/// Pos the master feeds at once; beyond that the swarm spreads the blocks.
const MASTER_LINKS: usize = 16;

/// An assignment under way.
#[derive(Debug, Clone, Copy)]
struct InFlight {
    from: Src,
    /// When it was assigned, or reached the head of its link (a queued block waits for the
    /// one ahead of it, and must not be taken for a stalled one).
    since: Instant,
}

#[derive(Debug, Clone)]
struct Node {
    have: Vec<bool>,
    held: u64,
    /// Joined and able to serve (accepted, peers dialled).
    live: bool,
    /// Open links out (to pos) and in (from pos and the master).
    up: usize,
    down: usize,
    /// Corrupt blocks served: never forgiven.
    faults: u32,
    /// Pushes that stalled since its last good one: a stopped po keeps them, a po on a busy
    /// host clears them with its next good push.
    stalls: u32,
    fresh: u64,
    /// The fastest assignment this po took part in, either way: a fast po has some fast
    /// ones even when its partners are slow, a slow po never does.
    best: Option<f64>,
    /// When it last reported a block: a chain member that reports none while its blocks
    /// stall is stuck (stopped), not its sender.
    last_have: Option<Instant>,
}

/// What `Swarm::wanted` goes through.
enum Wanted<'a> {
    All(std::ops::Range<usize>),
    Repair(std::collections::btree_set::Iter<'a, u64>),
}

impl Iterator for Wanted<'_> {
    type Item = usize;
    fn next(&mut self) -> Option<usize> {
        match self {
            Wanted::All(r) => r.next(),
            Wanted::Repair(i) => i.next().map(|&b| b as usize),
        }
    }
}

pub struct Swarm {
    nodes: Vec<Node>,
    neighbours: Vec<Vec<u32>>,
    /// The planned links out of each po: a balanced graph, `LINKS` out and in per po.
    plan: Vec<Vec<u32>>,
    /// Live holders of each block.
    count: Vec<u32>,
    /// Sent by the master at least once.
    scattered: Vec<bool>,
    /// Assignments under way, counted per block.
    moving: Vec<u32>,
    next_fresh: u64,
    /// Assignments under way, by (receiver, block).
    inflight: IdMap<(u32, u64), InFlight>,
    /// Blocks queued per open link (sender, receiver), in the order they travel.
    links: IdMap<(Src, u32), VecDeque<u64>>,
    /// The latest time the caller gave: when a link's head block lands, the next one's clock
    /// starts then, so a queued block is not taken for a stalled one.
    clock: Option<Instant>,
    /// Pos the master has an open link to.
    master_links: usize,
    blocks: u64,
    /// Links (sender, receiver) that just failed a push, and until when to leave them alone.
    cooldown: IdMap<(Src, u32), Instant>,
    /// Blocks the master has sent, scatter and end-game together; of those, fresh ones and
    /// extra copies sent to speed up the end.
    pub master_sent: u64,
    fresh_sent: u64,
    extra: u64,
    /// Pos whose uplink may have work since the last `schedule` (a slot freed, a block
    /// arrived), so that an event costs O(peers), not O(pos); a full pass runs now and then.
    dirty: Vec<bool>,
    dirty_list: Vec<u32>,
    next_full: Option<Instant>,
    /// A master link freed room since the last end-game search.
    master_freed: bool,
    /// `slow()` as of the last full pass.
    slow_cache: Arc<Vec<bool>>,
    diag: Diag,
    /// Each po's site (issue 17): a block crosses into a site only as `site_allows` says.
    sites: Sites,
    /// Links per po at most (the class's `peers`).
    peers: usize,
    /// With chains: the stripes, the chain set and its repair pairs.
    chain: Option<chain::Chains>,
}

impl Swarm {
    pub fn new(n: usize, blocks: u64, peers: u32) -> Swarm {
        let node = Node {
            have: vec![false; blocks as usize],
            held: 0,
            live: false,
            up: 0,
            down: 0,
            faults: 0,
            stalls: 0,
            fresh: 0,
            best: None,
            last_have: None,
        };
        let neighbours = graph(n, peers as usize);
        Swarm {
            nodes: vec![node; n],
            plan: plan(&neighbours, LINKS),
            neighbours,
            count: vec![0; blocks as usize],
            scattered: vec![false; blocks as usize],
            moving: vec![0; blocks as usize],
            next_fresh: 0,
            inflight: IdMap::default(),
            links: IdMap::default(),
            clock: None,
            master_links: 0,
            blocks,
            cooldown: IdMap::default(),
            master_sent: 0,
            fresh_sent: 0,
            extra: 0,
            dirty: vec![false; n],
            dirty_list: Vec::new(),
            next_full: None,
            master_freed: true,
            slow_cache: Arc::new(vec![false; n]),
            diag: Diag::new(n),
            sites: Sites::one(n),
            peers: peers as usize,
            chain: None,
        }
    }

    /// The pos' sites, before any joins and before `with_chains`, whose stripes follow them
    /// (all in one site unless this is called).
    pub fn set_sites(&mut self, sites: Sites) {
        debug_assert!(self.chain.is_none(), "sites after chains: the stripes ignore them");
        self.sites = sites;
    }

    /// The repair rule of issue 17 ([`sites::may_send`]): `from` may send block `b` to po `r`
    /// if both are in one site (the master is in site 0), or else while no fast serving
    /// neighbour of `r` in `r`'s site holds it or is receiving it, so a block enters a site
    /// once and then travels inside. Only neighbours count: `r` can get a block only from them
    /// (or the master), so a holder elsewhere in the site must not leave it waiting forever.
    fn site_allows(&self, from: Src, r: usize, b: usize) -> bool {
        let from = match from {
            Src::Master => None,
            Src::Po(s) => Some(s),
        };
        sites::may_send(&self.sites, from, r as u32, || {
            let site = self.sites.site(r as u32);
            self.neighbours[r].iter().any(|&n| {
                let k = n as usize;
                self.sites.site(n) == site
                    && self.serves(k)
                    && !self.slow_cache.get(k).copied().unwrap_or(false)
                    && (self.nodes[k].have[b] || self.inflight.contains_key(&(n, b as u64)))
            })
        })
    }

    pub fn neighbours(&self, i: u32) -> &[u32] {
        &self.neighbours[i as usize]
    }

    pub fn is_live(&self, i: u32) -> bool {
        self.nodes[i as usize].live
    }

    pub fn complete(&self, i: u32) -> bool {
        self.nodes[i as usize].held == self.blocks
    }

    /// Po `i` joined (or came back) holding `have` (a resume).
    pub fn join(&mut self, i: u32, have: &[bool]) {
        if self.nodes[i as usize].live {
            return;
        }
        self.touch_around(i);
        self.master_freed = true;
        let quiet = self.quiet_part(i as usize);
        let n = &mut self.nodes[i as usize];
        n.live = true;
        n.held = 0;
        for b in 0..self.blocks as usize {
            n.have[b] = have.get(b).copied().unwrap_or(false);
            if n.have[b] {
                n.held += 1;
                self.count[b] += 1;
                // Held already (a resume, a delta, a hole): it spreads by exchange.
                self.scattered[b] = true;
            }
        }
        self.quiet_moved(i as usize, quiet);
    }

    /// Po `i` holds block `b` now; returns who sent it, if it was an assignment.
    pub fn have(&mut self, i: u32, b: u64, now: Instant) -> Option<Src> {
        self.clock = Some(now);
        let started = self.inflight.get(&(i, b)).map(|m| m.since);
        let from = self.finish(i, b);
        self.touch(i);
        if let Some(Src::Po(s)) = from {
            self.nodes[s as usize].stalls = 0;
        }
        if let (Some(t), Some(from)) = (started, from) {
            let d = now.duration_since(t).as_secs_f64();
            self.diag.took(from, d);
            let best = |old: Option<f64>| Some(old.map_or(d, |o| o.min(d)));
            self.nodes[i as usize].best = best(self.nodes[i as usize].best);
            if let Src::Po(s) = from {
                self.nodes[s as usize].best = best(self.nodes[s as usize].best);
            }
        }
        let n = &mut self.nodes[i as usize];
        n.last_have = Some(now);
        if (b as usize) < n.have.len() && !n.have[b as usize] {
            n.have[b as usize] = true;
            n.held += 1;
            if n.live {
                self.count[b as usize] += 1;
            }
            let (live, complete) = (n.live, n.held == self.blocks);
            if let Some(c) = self.chain.as_mut() {
                let i = i as usize;
                if !c.set[b as usize] {
                    c.unset_missing[i] = c.unset_missing[i].saturating_sub(1);
                }
                // chain_quiet's counts: a repair pair is settled, an outsider complete.
                if live && c.repair[i].contains(&b) {
                    c.open_repair -= 1;
                }
                if live && complete && !c.member[i] {
                    c.outsiders -= 1;
                }
            }
            self.chain_forward(i, b, now);
        }
        from
    }

    /// Ends the assignment (i, b); a link whose queue empties closes.
    fn finish(&mut self, i: u32, b: u64) -> Option<Src> {
        let InFlight { from, .. } = self.inflight.remove(&(i, b))?;
        self.moving[b as usize] -= 1;
        // The link has room again: its sender, and the receiver's other senders, may act.
        self.touch_around(i);
        match from {
            Src::Master => self.master_freed = true,
            Src::Po(s) => self.touch(s),
        }
        let q = self.links.get_mut(&(from, i)).expect("an assignment has a link");
        let at = q.iter().position(|x| *x == b).expect("a link queues its blocks");
        q.remove(at);
        if let (0, Some(&next), Some(now)) = (at, q.front(), self.clock) {
            if let Some(m) = self.inflight.get_mut(&(i, next)) {
                m.since = m.since.max(now);
            }
        }
        if q.is_empty() {
            self.links.remove(&(from, i));
            self.nodes[i as usize].down -= 1;
            match from {
                Src::Master => self.master_links -= 1,
                Src::Po(s) => self.nodes[s as usize].up -= 1,
            }
        }
        Some(from)
    }

    fn touch(&mut self, i: u32) {
        if !std::mem::replace(&mut self.dirty[i as usize], true) {
            self.dirty_list.push(i);
        }
    }

    /// Po `i` and its neighbours, the pos that may send to it.
    fn touch_around(&mut self, i: u32) {
        self.touch(i);
        for k in 0..self.neighbours[i as usize].len() {
            self.touch(self.neighbours[i as usize][k]);
        }
    }

    /// Whether po `s` may serve blocks: live, no corrupt blocks or stalls past the limit.
    fn serves(&self, s: usize) -> bool {
        let n = &self.nodes[s];
        n.live && n.faults < MAX_FAULTS && n.stalls < MAX_FAULTS
    }

    /// The assignment (to, b) did not happen (sender lacked it, no connection, ...). The
    /// link rests for `COOLDOWN` so that a broken one is not retried in a tight loop.
    pub fn cancel(&mut self, to: u32, b: u64, now: Instant) {
        self.clock = Some(now);
        if let Some(from) = self.finish(to, b) {
            self.cooldown.insert((from, to), now + COOLDOWN);
        }
        self.chain_repair(to, b);
    }

    /// The source of the assignment (to, b) under way, if there is one.
    pub fn source_of(&self, to: u32, b: u64) -> Option<Src> {
        self.inflight.get(&(to, b)).map(|m| m.from)
    }

    /// Po `to` says its copy of `b` was corrupt. Only the po that was assigned to send it can
    /// be charged: a report about any other sender (or any other block) charges nobody.
    pub fn bad(&mut self, to: u32, b: u64, from: Src) {
        if to as usize >= self.nodes.len() || b >= self.blocks {
            return;
        }
        // A chain block's source is the plan's: its forwarder's HAVE may come after the
        // receiver's report (HAVEs wait a few ms for company), or never (a liar need not say).
        // (The master may not know yet that the forwarder holds it: every hop's HAVE waits. A
        // receiver could blame its predecessor falsely this way, but no more than it can blame
        // any source the master assigned it: once a block.)
        let planned = matches!(from, Src::Po(p) if self.chain_next(p, b) == Some(to))
            && self.chain_pending(to as usize, b as usize)
            && !self.inflight.contains_key(&(to, b));
        if self.source_of(to, b) != Some(from) && !planned {
            return;
        }
        self.finish(to, b);
        self.chain_repair(to, b);
        if let Src::Po(s) = from {
            if let Some(n) = self.nodes.get_mut(s as usize) {
                n.faults += 1;
            }
            // An excluded po forwards nothing that counts: the chains go around it.
            if !self.serves(s as usize) {
                self.chain_cut(s);
            }
        }
    }

    pub fn faults(&self, i: u32) -> u32 {
        self.nodes.get(i as usize).map_or(0, |n| n.faults)
    }

    pub fn stalls(&self, i: u32) -> u32 {
        self.nodes.get(i as usize).map_or(0, |n| n.stalls)
    }

    /// Po `i` is gone: its assignments are cancelled and its blocks no longer count.
    pub fn leave(&mut self, i: u32) {
        let gone: Vec<(u32, u64)> =
            self.inflight.iter().filter(|((r, _), m)| *r == i || m.from == Src::Po(i)).map(|(k, _)| *k).collect();
        for (r, b) in gone {
            self.finish(r, b);
        }
        self.chain_cut(i);
        if !self.nodes[i as usize].live {
            return;
        }
        let quiet = self.quiet_part(i as usize);
        self.nodes[i as usize].live = false;
        self.quiet_moved(i as usize, quiet);
        let n = &self.nodes[i as usize];
        for (b, h) in n.have.iter().enumerate() {
            if *h {
                self.count[b] -= 1;
                // Nobody else holds it: the master must send it again.
                if self.count[b] == 0 {
                    self.scattered[b] = false;
                    self.next_fresh = self.next_fresh.min(b as u64);
                }
            }
        }
    }

    /// Pos whose fastest transfer took over 2.5 times the median are slow.
    fn slow(&self) -> Vec<bool> {
        let mut known: Vec<f64> = self.nodes.iter().filter_map(|n| n.best).collect();
        if known.len() < 3 {
            return vec![false; self.nodes.len()];
        }
        known.sort_by(|a, b| a.total_cmp(b));
        let median = known[known.len() / 2];
        self.nodes.iter().map(|n| n.held < self.blocks && n.best.is_some_and(|d| d > 2.5 * median)).collect()
    }

    /// The blocks po `r` may want, in order: every block, or for a chain member that lacks
    /// no block outside the chain set only its repair blocks (`wants` refuses the others), so
    /// that a search over what a member wants costs its repair blocks, not every block.
    fn wanted(&self, r: usize) -> Wanted<'_> {
        match self.chain.as_ref() {
            Some(c) if c.planned_at.is_some() && c.member[r] && c.unset_missing[r] == 0 => {
                Wanted::Repair(c.repair[r].iter())
            }
            _ => Wanted::All(0..self.blocks as usize),
        }
    }

    fn wants(&self, r: usize, b: usize) -> bool {
        let n = &self.nodes[r];
        n.live && !n.have[b] && !self.inflight.contains_key(&(r as u32, b as u64)) && !self.chain_pending(r, b)
    }

    fn queued(&self, from: Src, to: u32) -> u8 {
        self.links.get(&(from, to)).map_or(0, |q| q.len() as u8)
    }

    fn cooling(&self, from: Src, to: u32, now: Instant) -> bool {
        self.cooldown.get(&(from, to)).is_some_and(|t| *t > now)
    }

    fn start(&mut self, a: Assign, now: Instant) {
        let q = self.links.entry((a.from, a.to)).or_default();
        q.push_back(a.block);
        if q.len() == 1 {
            self.nodes[a.to as usize].down += 1;
            match a.from {
                Src::Master => self.master_links += 1,
                Src::Po(s) => self.nodes[s as usize].up += 1,
            }
        }
        self.inflight.insert((a.to, a.block), InFlight { from: a.from, since: now });
        self.moving[a.block as usize] += 1;
        if a.from == Src::Master {
            self.master_sent += 1;
        }
    }

    /// One line per po for the debug log: links, blocks held, fastest transfer, slow.
    pub fn debug_line(&self) -> String {
        let slow = self.slow();
        let nodes: Vec<String> = self
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let best = n.best.map(|b| format!("{:.0}ms", b * 1000.0)).unwrap_or_else(|| "-".into());
                format!("{i}:up{}/down{}/held{}/best{best}{}", n.up, n.down, n.held, if slow[i] { "/SLOW" } else { "" })
            })
            .collect();
        format!("master_links={} inflight={} {}", self.master_links, self.inflight.len(), nodes.join(" "))
    }

    /// How the links were used, for the log at the end of a transfer.
    pub fn diag_line(&self) -> String {
        self.diag.line()
    }

    /// Assignments older than `limit`: the caller may cancel them (a stalled sender).
    pub fn stalled(&self, now: Instant, limit: Duration) -> Vec<(u32, u64, Src)> {
        self.inflight
            .iter()
            .filter(|((r, b), m)| now.duration_since(m.since) > limit && !self.chain_waits(*r, *b, m.from, now, limit))
            .map(|((r, b), m)| (*r, *b, m.from))
            .collect()
    }

    /// How long an assignment may take before it counts as stalled: 20 times the median of
    /// each po's fastest transfer, and at least `floor` (a block is slow on a slow link, but a
    /// stopped po never finishes one).
    pub fn stall_limit(&self, floor: Duration) -> Duration {
        let mut best: Vec<f64> = self.nodes.iter().filter_map(|n| n.best).collect();
        if best.is_empty() {
            return floor * 10;
        }
        best.sort_by(|a, b| a.total_cmp(b));
        floor.max(Duration::from_secs_f64(best[best.len() / 2] * 20.0))
    }

    /// An assignment older than `limit` (`stalled`). With chains, a receiver that reported
    /// nothing since it began, from a sender that is not stuck itself (the master, or a po
    /// whose own blocks arrive), is stuck (stopped): it is cut out of the chains and its sender
    /// is not charged. Otherwise as `stall`.
    pub fn stalled_out(&mut self, to: u32, b: u64, now: Instant, limit: Duration) {
        let Some(m) = self.inflight.get(&(to, b)).copied() else { return };
        let silent = self.nodes[to as usize].last_have.is_none_or(|t| t <= m.since);
        let sender_stuck = match m.from {
            Src::Master => false,
            Src::Po(s) => self.inflight.iter().any(|((r, _), x)| *r == s && now.duration_since(x.since) > limit),
        };
        if self.chain.is_some() && silent && !sender_stuck {
            self.chain_cut(to);
            return self.cancel(to, b, now);
        }
        self.stall(to, b, now);
    }

    /// A stalled assignment: the slots are freed, the link rests, and a po that stalls as a
    /// sender counts a fault, so that a stopped po stops being anyone's source.
    pub fn stall(&mut self, to: u32, b: u64, now: Instant) {
        let from = self.inflight.get(&(to, b)).map(|m| m.from);
        if let Some(Src::Po(s)) = from {
            self.nodes[s as usize].stalls += 1;
        }
        self.cancel(to, b, now);
        if let Some(Src::Po(s)) = from {
            if !self.serves(s as usize) {
                self.chain_cut(s);
            }
        }
    }
}
