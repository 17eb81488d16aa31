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

use std::collections::{HashMap, VecDeque};
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
    /// Assignments under way, per block.
    moving: Vec<u32>,
    next_fresh: u64,
    inflight: HashMap<(u32, u64), (Src, Instant)>,
    /// Blocks queued per open link (sender, receiver), in the order they travel.
    links: HashMap<(Src, u32), VecDeque<u64>>,
    /// The latest time the caller gave: when a link's head block lands, the next one's clock
    /// starts then, so a queued block is not taken for a stalled one.
    clock: Option<Instant>,
    /// Pos the master has an open link to.
    master_links: usize,
    blocks: u64,
    /// Links (sender, receiver) that just failed a push, and until when to leave them alone.
    cooldown: HashMap<(Src, u32), Instant>,
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
    slow_cache: Vec<bool>,
    diag: Diag,
}

/// How often `schedule` looks at every po, not only the dirty ones.
const FULL_PASS: Duration = Duration::from_millis(200);

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
            inflight: HashMap::new(),
            links: HashMap::new(),
            clock: None,
            master_links: 0,
            blocks,
            cooldown: HashMap::new(),
            master_sent: 0,
            fresh_sent: 0,
            extra: 0,
            dirty: vec![false; n],
            dirty_list: Vec::new(),
            next_full: None,
            master_freed: true,
            slow_cache: vec![false; n],
            diag: Diag::new(n),
        }
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
    }

    /// Po `i` holds block `b` now; returns who sent it, if it was an assignment.
    pub fn have(&mut self, i: u32, b: u64, now: Instant) -> Option<Src> {
        self.clock = Some(now);
        let started = self.inflight.get(&(i, b)).map(|(_, t)| *t);
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
        if (b as usize) < n.have.len() && !n.have[b as usize] {
            n.have[b as usize] = true;
            n.held += 1;
            if n.live {
                self.count[b as usize] += 1;
            }
        }
        from
    }

    /// Ends the assignment (i, b); a link whose queue empties closes.
    fn finish(&mut self, i: u32, b: u64) -> Option<Src> {
        let (from, _) = self.inflight.remove(&(i, b))?;
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
            if let Some(e) = self.inflight.get_mut(&(i, next)) {
                e.1 = e.1.max(now);
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
    }

    /// Po `to` got a corrupt copy of `b` from `from`.
    pub fn bad(&mut self, to: u32, b: u64, from: Src) {
        self.finish(to, b);
        if let Src::Po(s) = from {
            self.nodes[s as usize].faults += 1;
        }
    }

    pub fn faults(&self, i: u32) -> u32 {
        self.nodes[i as usize].faults
    }

    pub fn stalls(&self, i: u32) -> u32 {
        self.nodes[i as usize].stalls
    }

    /// Po `i` is gone: its assignments are cancelled and its blocks no longer count.
    pub fn leave(&mut self, i: u32) {
        let gone: Vec<(u32, u64)> =
            self.inflight.iter().filter(|((r, _), (s, _))| *r == i || *s == Src::Po(i)).map(|(k, _)| *k).collect();
        for (r, b) in gone {
            self.finish(r, b);
        }
        let n = &mut self.nodes[i as usize];
        if !n.live {
            return;
        }
        n.live = false;
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

    fn wants(&self, r: usize, b: usize) -> bool {
        let n = &self.nodes[r];
        n.live && !n.have[b] && !self.inflight.contains_key(&(r as u32, b as u64))
    }

    fn queued(&self, from: Src, to: u32) -> u8 {
        self.links.get(&(from, to)).map_or(0, |q| q.len() as u8)
    }

    fn cooling(&self, from: Src, to: u32, now: Instant) -> bool {
        self.cooldown.get(&(from, to)).is_some_and(|t| *t > now)
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
        self.inflight.insert((a.to, a.block), (a.from, now));
        self.moving[a.block as usize] += 1;
        if a.from == Src::Master {
            self.master_sent += 1;
        }
    }

    /// The rarest block `s` holds that `r` lacks (only ones nobody else holds when `s` is
    /// slow).
    fn pick(&self, s: usize, r: usize, slow: bool) -> Option<usize> {
        (0..self.blocks as usize)
            .filter(|&b| self.nodes[s].have[b] && self.wants(r, b) && (!slow || self.count[b] <= 1))
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

    /// New assignments for every link with room.
    #[allow(clippy::needless_range_loop)] // indices name pos in several parallel tables
    pub fn schedule(&mut self, now: Instant) -> Vec<Assign> {
        self.clock = Some(now);
        let mut out = Vec::new();
        let full = self.next_full.is_none_or(|t| t <= now);
        if full {
            // Link use is sampled on full passes only: an event must stay O(peers).
            self.diag.sample(now, &self.nodes);
            self.next_full = Some(now + FULL_PASS);
            self.slow_cache = self.slow();
            self.cooldown.retain(|_, until| *until > now);
        }
        let slow = std::mem::take(&mut self.slow_cache);
        // 1. Scatter: fresh blocks from the master, to the fast po that has had fewest.
        let any_fast = (0..self.nodes.len()).any(|r| self.nodes[r].live && !slow[r]);
        loop {
            while self.next_fresh < self.blocks && self.scattered[self.next_fresh as usize] {
                self.next_fresh += 1;
            }
            if self.next_fresh >= self.blocks {
                break;
            }
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
        // 2. Exchange: every po keeps its planned links busy with its rarest blocks; a po
        // whose planned receivers need nothing from it (or are gone) links to the neediest
        // other neighbour that has room.
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
            if !self.serves(s) || self.nodes[s].held == 0 {
                continue;
            }
            for k in 0..self.plan[s].len() {
                let r = self.plan[s][k];
                if self.nodes[r as usize].live && !self.cooling(Src::Po(s as u32), r, now) {
                    self.fill(s, r, slow[s], now, &mut out);
                }
            }
            // Links beyond the plan, while the planned ones leave room: refill the open ones
            // (the rest drain and close), then open new ones.
            for k in 0..self.neighbours[s].len() {
                let r = self.neighbours[s][k];
                if self.nodes[s].up <= LINKS && self.queued(Src::Po(s as u32), r) > 0 && !self.plan[s].contains(&r) {
                    self.fill(s, r, slow[s], now, &mut out);
                }
            }
            while self.nodes[s].up < LINKS {
                let r = self.neighbours[s]
                    .iter()
                    .copied()
                    .filter(|&r| {
                        let rn = &self.nodes[r as usize];
                        rn.live
                            && self.queued(Src::Po(s as u32), r) == 0
                            && rn.down <= LINKS
                            && !self.cooling(Src::Po(s as u32), r, now)
                            && self.pick(s, r as usize, slow[s]).is_some()
                    })
                    .min_by_key(|&r| (self.nodes[r as usize].down, self.nodes[r as usize].held, r));
                let Some(r) = r else { break };
                self.fill(s, r, slow[s], now, &mut out);
            }
        }
        // 3. End-game, once every block has left the master: its idle uplink sends what no
        // serving po holds (a dead or excluded po's blocks), then, within a budget of one block
        // in 16 of those it scattered, the rarest block a po cannot get from a neighbour, then
        // the rarest block the po lacking most still waits for. A block whose only copy is on
        // its way is not sent again. The budget keeps `src_copies` near 1, and a delta, where
        // few blocks travel, near its minimum.
        let search = full || std::mem::take(&mut self.master_freed);
        if search && self.next_fresh >= self.blocks {
            let held_by_server: Vec<bool> = (0..self.blocks as usize)
                .map(|b| (0..self.nodes.len()).any(|s| self.nodes[s].have[b] && self.serves(s)))
                .collect();
            loop {
                let budget = self.extra < self.fresh_sent / 16;
                let mut best: Option<(usize, usize, (bool, u32))> = None;
                for r in (0..self.nodes.len()).filter(|&r| self.master_room(r)) {
                    for b in 0..self.blocks as usize {
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
                        if orphan || !near {
                            best = Some((r, b, key));
                        }
                    }
                }
                if best.is_none() && budget {
                    let needy = (0..self.nodes.len())
                        .filter(|&r| self.nodes[r].live && self.master_room(r) && self.nodes[r].held < self.blocks)
                        .min_by_key(|&r| (self.nodes[r].held, r));
                    best = needy.and_then(|r| {
                        (0..self.blocks as usize)
                            .filter(|&b| self.wants(r, b) && self.count[b] > 0)
                            .min_by_key(|&b| (self.count[b], b))
                            .map(|b| (r, b, (true, 0)))
                    });
                }
                let Some((r, b, (copy, _))) = best else { break };
                if copy {
                    self.extra += 1;
                }
                let a = Assign { from: Src::Master, to: r as u32, block: b as u64 };
                self.start(a, now);
                out.push(a);
            }
        }
        self.slow_cache = slow;
        out
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
            .filter(|(_, (_, t))| now.duration_since(*t) > limit)
            .map(|((r, b), (s, _))| (*r, *b, *s))
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

    /// A stalled assignment: the slots are freed, the link rests, and a po that stalls as a
    /// sender counts a fault, so that a stopped po stops being anyone's source.
    pub fn stall(&mut self, to: u32, b: u64, now: Instant) {
        if let Some(Src::Po(s)) = self.inflight.get(&(to, b)).map(|(s, _)| *s) {
            self.nodes[s as usize].stalls += 1;
        }
        self.cancel(to, b, now);
    }
}

const TOOK_BUCKETS: usize = 500;

/// Time-weighted link counts per po and assignment times, for `event=swarm_diag`.
struct Diag {
    at: Option<(Instant, Instant)>,
    /// Per po: seconds x links out, seconds x links in, seconds with no link out.
    links: Vec<[f64; 3]>,
    /// Times from assignment (or reaching the head of its link) to HAVE, in 10 ms buckets up
    /// to 5 s: the master's blocks, the pos'. Fixed size, however long the transfer.
    took: [Box<[u32; TOOK_BUCKETS]>; 2],
    /// When the master had assigned every block once.
    scattered: Option<Instant>,
}

impl Diag {
    fn new(n: usize) -> Diag {
        let none = || Box::new([0; TOOK_BUCKETS]);
        Diag { at: None, links: vec![[0.0; 3]; n], took: [none(), none()], scattered: None }
    }

    fn sample(&mut self, now: Instant, nodes: &[Node]) {
        let (t0, last) = self.at.unwrap_or((now, now));
        let dt = now.duration_since(last).as_secs_f64();
        for (d, n) in self.links.iter_mut().zip(nodes) {
            d[0] += dt * n.up as f64;
            d[1] += dt * n.down as f64;
            if n.up == 0 {
                d[2] += dt;
            }
        }
        self.at = Some((t0, now));
    }

    fn took(&mut self, from: Src, d: f64) {
        let h = &mut self.took[usize::from(from != Src::Master)];
        h[((d * 100.0) as usize).min(TOOK_BUCKETS - 1)] += 1;
    }

    fn line(&self) -> String {
        let secs = self.at.map_or(1.0, |(a, b)| b.duration_since(a).as_secs_f64().max(1e-3));
        // 10th, 50th and 90th percentiles, as the upper edge of their bucket
        let ms = |h: &[u32; TOOK_BUCKETS]| {
            let total: u64 = h.iter().map(|c| *c as u64).sum();
            let at = |q: f64| {
                let want = (total as f64 * q).ceil().max(1.0) as u64;
                let mut seen = 0;
                h.iter()
                    .position(|c| {
                        seen += *c as u64;
                        seen >= want
                    })
                    .map_or(0, |i| (i + 1) * 10)
            };
            format!("{}/{}/{}", at(0.1), at(0.5), at(0.9))
        };
        let per: Vec<String> =
            self.links.iter().map(|d| format!("{:.1}/{:.1}/{:.2}", d[0] / secs, d[1] / secs, d[2] / secs)).collect();
        let scatter = match (self.at, self.scattered) {
            (Some((t0, _)), Some(t)) => format!("{:.2}", t.duration_since(t0).as_secs_f64()),
            _ => "-".into(),
        };
        format!(
            "secs={secs:.2} scattered_s={scatter} master_ms={} po_ms={} out/in/idle={}",
            ms(&self.took[0]),
            ms(&self.took[1]),
            per.join(",")
        )
    }
}

/// A balanced plan of links: po i serves `k` of its neighbours and is served by `k`, as far
/// as the neighbour graph allows. In a full mesh that is i -> i+1 .. i+k; otherwise it is `k`
/// maximum matchings of senders to receivers (Kuhn's augmenting paths), each over the
/// neighbour pairs not used yet, so no po ends up with fewer senders than the others.
fn plan(g: &[Vec<u32>], k: usize) -> Vec<Vec<u32>> {
    let n = g.len();
    if g.iter().all(|e| e.len() + 1 == n) {
        return (0..n).map(|i| (1..=k.min(n - 1)).map(|d| ((i + d) % n) as u32).collect()).collect();
    }
    let mut out: Vec<Vec<u32>> = vec![Vec::new(); n];
    for _ in 0..k {
        // sender of each receiver in this round
        let mut sender: Vec<Option<u32>> = vec![None; n];
        for s in 0..n {
            let mut seen = vec![false; n];
            augment(s, g, &out, &mut seen, &mut sender);
        }
        for (r, s) in sender.iter().enumerate() {
            if let Some(s) = s {
                out[*s as usize].push(r as u32);
            }
        }
    }
    out
}

/// Finds receivers for sender `s` along an augmenting path (one round of `plan`).
fn augment(s: usize, g: &[Vec<u32>], out: &[Vec<u32>], seen: &mut [bool], sender: &mut [Option<u32>]) -> bool {
    for &r in &g[s] {
        if seen[r as usize] || out[s].contains(&r) {
            continue;
        }
        seen[r as usize] = true;
        if sender[r as usize].is_none_or(|o| augment(o as usize, g, out, seen, sender)) {
            sender[r as usize] = Some(s as u32);
            return true;
        }
    }
    false
}

/// A full mesh up to `peers + 1` pos; beyond that a ring (so the graph is connected) plus
/// seeded random matchings up to `peers` links each, which keeps the diameter logarithmic.
pub fn graph(n: usize, peers: usize) -> Vec<Vec<u32>> {
    let mut g: Vec<Vec<u32>> = vec![Vec::new(); n];
    let link = |g: &mut Vec<Vec<u32>>, i: usize, j: usize| {
        if i != j && !g[i].contains(&(j as u32)) && g[i].len() < peers && g[j].len() < peers {
            g[i].push(j as u32);
            g[j].push(i as u32);
        }
    };
    if n <= peers + 1 {
        for i in 0..n {
            for j in i + 1..n {
                link(&mut g, i, j);
            }
        }
        return g;
    }
    for i in 0..n {
        link(&mut g, i, (i + 1) % n);
    }
    let mut x: u64 = 0x2545f4914f6cdd1d ^ n as u64;
    let mut rnd = move |m: usize| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % m as u64) as usize
    };
    for _ in 0..peers * 4 {
        let mut order: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            order.swap(i, rnd(i + 1));
        }
        for pair in order.chunks(2) {
            if let [a, b] = pair {
                link(&mut g, *a, *b);
            }
        }
        if g.iter().all(|e| e.len() >= peers) {
            break;
        }
    }
    g
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every uplink (the master's too) and every downlink moves one block per tick, a slow
    /// po's one every four ticks; blocks on a link go in order. Returns ticks, master copies
    /// and when each po was done.
    fn simulate(n: usize, blocks: u64, peers: u32, slow: &[u32], dead_at: Option<(u32, u64)>) -> (u64, f64, Vec<u64>) {
        let mut s = Swarm::new(n, blocks, peers);
        let t0 = Instant::now();
        for i in 0..n as u32 {
            s.join(i, &[]);
        }
        let mut pending: Vec<Assign> = Vec::new();
        let mut done_at = vec![0u64; n];
        for tick in 0..100_000u64 {
            let now = t0 + Duration::from_millis(tick * 10);
            if let Some((d, at)) = dead_at {
                if tick == at {
                    s.leave(d);
                    pending.retain(|a| a.to != d && a.from != Src::Po(d));
                }
            }
            let free = |p: u32| !slow.contains(&p) || tick % 4 == 0;
            let mut sent: std::collections::HashSet<Src> = std::collections::HashSet::new();
            let mut got = vec![false; n];
            let mut later = Vec::new();
            for a in std::mem::take(&mut pending) {
                let sender_free = match a.from {
                    Src::Master => true,
                    Src::Po(p) => free(p),
                };
                if sender_free && free(a.to) && !got[a.to as usize] && sent.insert(a.from) {
                    got[a.to as usize] = true;
                    s.have(a.to, a.block, now);
                    if s.complete(a.to) && done_at[a.to as usize] == 0 {
                        done_at[a.to as usize] = tick;
                    }
                } else {
                    // This sender or receiver is busy this tick; the link waits.
                    later.push(a);
                }
            }
            pending = later;
            if (0..n as u32).filter(|i| Some(*i) != dead_at.map(|d| d.0)).all(|i| s.complete(i)) {
                return (tick, s.master_sent as f64 / blocks as f64, done_at);
            }
            pending.extend(s.schedule(now));
            if pending.is_empty() && tick > 0 {
                let lacking: Vec<(u32, u64, usize, usize)> = (0..n as u32)
                    .filter(|i| !s.complete(*i))
                    .map(|i| (i, s.nodes[i as usize].held, s.nodes[i as usize].down, s.nodes[i as usize].up))
                    .collect();
                panic!(
                    "stuck at tick {tick}: {lacking:?} master_links={} inflight={}",
                    s.master_links,
                    s.inflight.len()
                );
            }
        }
        panic!("no end");
    }

    #[test]
    fn graph_is_bounded_and_connected() {
        for (n, p) in [(2, 8), (9, 8), (16, 8), (1000, 8), (1000, 16)] {
            let g = graph(n, p);
            assert!(g.iter().all(|e| e.len() <= p), "n={n}");
            let mut seen = vec![false; n];
            let mut stack = vec![0usize];
            while let Some(i) = stack.pop() {
                if !std::mem::replace(&mut seen[i], true) {
                    stack.extend(g[i].iter().map(|j| *j as usize));
                }
            }
            assert!(seen.iter().all(|s| *s), "n={n} not connected");
        }
    }

    #[test]
    fn n_pos_take_about_as_long_as_one() {
        // The flow model of the lab (links shared max-min fairly, 10 ms to report a block and
        // 20 ms to order a push): within 15% of one uplink sending everything once (the model
        // gives 1.00, 1.02, 1.06 and 1.11), with the master sending little more than one copy.
        for n in [1usize, 4, 8, 16] {
            let lab = crate::proto::fluid::Lab::uniform(n, 93.0);
            let o = lab.run();
            let end = o.done.iter().cloned().fold(0.0, f64::max) / lab.ideal();
            assert!(end < 1.15, "n={n}: {end:.3} of ideal");
            assert!(o.master_copies <= 1.07, "n={n}: the master sent {} copies", o.master_copies);
        }
        // In ticks, where every uplink and downlink moves one block a tick.
        for n in [1usize, 4, 8, 16] {
            let (ticks, copies, _) = simulate(n, 256, 8, &[], None);
            assert!((ticks as f64) < 256.0 * 1.25, "n={n}: {ticks} ticks");
            assert!(copies <= 1.07, "n={n}: master sent {copies} copies");
        }
    }

    #[test]
    fn the_plan_is_balanced() {
        for (n, peers) in [(2, 8), (4, 8), (9, 8), (16, 8), (30, 8), (1000, 8)] {
            let g = graph(n, peers);
            let p = plan(&g, LINKS);
            let mut into = vec![0; n];
            for (i, out) in p.iter().enumerate() {
                assert_eq!(out.len(), LINKS.min(n - 1), "n={n}: po {i} serves {out:?}");
                for r in out {
                    assert!(g[i].contains(r), "n={n}: {i} -> {r} is not a neighbour");
                    into[*r as usize] += 1;
                }
            }
            assert!(into.iter().all(|k| *k == LINKS.min(n - 1)), "n={n}: {into:?}");
        }
    }

    #[test]
    fn a_thousand_pos() {
        // The epidemic bound is 32 + 2·log2(1000) ≈ 52 ticks.
        let (ticks, copies, _) = simulate(1000, 32, 8, &[], None);
        assert!(ticks <= 60, "{ticks} ticks");
        assert!(copies < 2.0, "{copies} copies");
    }

    #[test]
    fn a_slow_po_does_not_slow_the_others() {
        let (_, _, done) = simulate(8, 256, 8, &[3], None);
        for (i, t) in done.iter().enumerate() {
            if i != 3 {
                assert!((*t as f64) < 256.0 * 1.25, "po {i} done at {t}");
            }
        }
        // The flow model, with po 2 on a quarter of the rate.
        let mut lab = crate::proto::fluid::Lab::uniform(8, 93.0);
        lab.rate[2] /= 4.0;
        let o = lab.run();
        for (i, t) in o.done.iter().enumerate() {
            assert!(i == 2 || *t / lab.ideal() < 1.2, "po {i} done at {:.3} of ideal", t / lab.ideal());
        }
    }

    #[test]
    fn a_stopped_sender_stops_being_a_source() {
        let mut s = Swarm::new(3, 4, 8);
        let t0 = Instant::now();
        for i in 0..3 {
            s.join(i, &[]);
        }
        s.join(0, &[]);
        // po 0 got every block and then stopped answering.
        for b in 0..4 {
            s.have(0, b, t0);
        }
        let first = s.schedule(t0);
        assert!(first.iter().any(|a| a.from == Src::Po(0)));
        let later = t0 + Duration::from_secs(60);
        for (to, b, _) in s.stalled(later, s.stall_limit(Duration::from_secs(3))) {
            s.stall(to, b, later);
        }
        assert!(s.stalls(0) >= 1 && s.faults(0) == 0);
        // after enough stalls in a row it serves nothing
        for _ in 0..MAX_FAULTS {
            s.nodes[0].stalls += 1;
        }
        let next = s.schedule(later + Duration::from_secs(2));
        assert!(next.iter().all(|a| a.from != Src::Po(0)), "{next:?}");
        assert!(next.iter().any(|a| a.from == Src::Master), "the master must resend what only po 0 had");
    }

    #[test]
    fn a_queued_block_is_timed_from_when_it_reaches_the_head_of_its_link() {
        let mut s = Swarm::new(2, 4, 8);
        let t0 = Instant::now();
        s.join(0, &[true; 4]);
        s.join(1, &[]);
        let first = s.schedule(t0);
        assert_eq!(first.len(), DEPTH as usize, "{first:?}");
        assert!(first.iter().all(|a| a.from == Src::Po(0) && a.to == 1));
        let limit = Duration::from_secs(3);
        // the head lands after 2.5 s; the block behind it has waited as long, but only started
        s.have(1, first[0].block, t0 + Duration::from_millis(2500));
        assert!(s.stalled(t0 + Duration::from_secs(4), limit).is_empty());
        let late = s.stalled(t0 + Duration::from_secs(6), limit);
        assert_eq!(late.len(), 1, "{late:?}");
    }

    #[test]
    fn a_good_push_forgives_earlier_stalls_but_not_corrupt_blocks() {
        let mut s = Swarm::new(3, 8, 8);
        let t0 = Instant::now();
        for i in 0..3 {
            s.join(i, &[]);
        }
        s.have(0, 0, t0);
        let a = s.schedule(t0);
        let push = a.iter().find(|a| a.from == Src::Po(0)).copied().expect("po 0 serves block 0");
        s.stall(push.to, push.block, t0 + Duration::from_secs(10));
        s.stall(push.to, push.block, t0 + Duration::from_secs(10)); // no longer in flight: no-op
        assert_eq!(s.stalls(0), 1);
        // a busy host's push that does arrive clears the count
        let t1 = t0 + Duration::from_secs(20);
        let again = s.schedule(t1).into_iter().find(|a| a.from == Src::Po(0)).expect("po 0 serves again");
        s.have(again.to, again.block, t1);
        assert_eq!(s.stalls(0), 0);
        s.bad(1, 0, Src::Po(0));
        assert_eq!(s.faults(0), 1);
    }

    #[test]
    fn blocks_every_po_holds_already_are_skipped() {
        // A resume, a delta or holes: every po joins holding blocks 0, 1 and 5.
        let mut s = Swarm::new(3, 6, 8);
        let t0 = Instant::now();
        let have = [true, true, false, false, false, true];
        for i in 0..3 {
            s.join(i, &have);
        }
        for tick in 0..100u64 {
            let now = t0 + Duration::from_millis(tick);
            for a in s.schedule(now) {
                assert!(!have[a.block as usize], "{a:?}");
                s.have(a.to, a.block, now);
            }
            if (0..3).all(|i| s.complete(i)) {
                // each missing block once: the others came by exchange
                assert_eq!(s.master_sent, 3);
                return;
            }
        }
        panic!("the swarm stalled on blocks every po held");
    }

    #[test]
    fn a_dead_po_is_routed_around() {
        let (ticks, _, _) = simulate(8, 128, 8, &[], Some((2, 40)));
        assert!(ticks < 128 * 2, "{ticks}");
    }
}
