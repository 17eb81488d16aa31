//! The master's P2P scheduler: a pure function of the swarm's state.
//!
//! It knows which po holds which block (the HAVE stream), which transfers are in flight, and
//! who is busy. `schedule` returns new assignments "send block b from X to po r" that keep
//! every uplink busy:
//!
//! - **Scatter.** The master sends each block once, to the po that has had the fewest fresh
//!   blocks so far, so every po gets a share from the start and can serve it at once.
//! - **Exchange.** Each po with a free upload slot serves its rarest block to a neighbour
//!   lacking it (rarest first keeps every block available from several places).
//! - **Slow pos** (download rate under half the median) get no fresh blocks and serve only
//!   blocks nobody else can, so they are never anyone's only source.
//! - **Faults.** A po that served a corrupt block `MAX_FAULTS` times is no longer a source.
//!   A dead po's blocks no longer count, and what only it held goes back to the master.
//! - **End-game.** When no fresh block is left, the master's idle uplink serves the rarest
//!   block that a po still lacks.
//!
//! The neighbour graph is fixed at the start: po i links to i ± 2^k (mod n), at most `peers`
//! links per po, so n pos cost O(n) connections.

use std::collections::HashMap;
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
/// Extra download slots a po keeps for blocks that only one po holds, so the newest blocks
/// spread at once instead of queueing behind common ones (the tail of a transfer).
const RARE_EXTRA: u8 = 2;
/// Blocks assigned ahead per po upload, per po download, and for the master's uplink: deep
/// enough to cover the control loop (HAVE to the master, push order to the sender) while a
/// link stays busy.
const UP_SLOTS: u8 = 4;
const DOWN_SLOTS: u8 = 4;
const MASTER_SLOTS: u8 = 4;

fn slots() -> (u8, u8, u8) {
    // Tuning knob for lab experiments; not documented.
    match std::env::var("WUGUI_SLOTS").ok().map(|v| v.split(',').filter_map(|x| x.parse().ok()).collect::<Vec<u8>>()) {
        Some(v) if v.len() == 3 => (v[0], v[1], v[2]),
        _ => (UP_SLOTS, DOWN_SLOTS, MASTER_SLOTS),
    }
}

#[derive(Debug, Clone)]
struct Node {
    have: Vec<bool>,
    held: u64,
    /// Joined and able to serve (accepted, peers dialled).
    live: bool,
    up: u8,
    down: u8,
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
    /// Live holders of each block.
    count: Vec<u32>,
    /// Sent by the master at least once.
    scattered: Vec<bool>,
    /// Assignments under way, per block.
    moving: Vec<u32>,
    next_fresh: u64,
    inflight: HashMap<(u32, u64), (Src, Instant)>,
    master_up: u8,
    blocks: u64,
    up_slots: u8,
    down_slots: u8,
    master_slots: u8,
    /// Links (sender, receiver) that just failed a push, and until when to leave them alone.
    cooldown: HashMap<(Src, u32), Instant>,
    /// Blocks the master has sent, scatter and end-game together.
    pub master_sent: u64,
    /// Pos whose uplink may have work since the last `schedule` (a slot freed, a block
    /// arrived), so that an event costs O(peers), not O(pos); a full pass runs now and then.
    dirty: Vec<bool>,
    dirty_list: Vec<u32>,
    next_full: Option<Instant>,
    /// A master slot freed since the last end-game search.
    master_freed: bool,
    /// `slow()` as of the last full pass.
    slow_cache: Vec<bool>,
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
        Swarm {
            nodes: vec![node; n],
            neighbours: graph(n, peers as usize),
            count: vec![0; blocks as usize],
            scattered: vec![false; blocks as usize],
            moving: vec![0; blocks as usize],
            next_fresh: 0,
            inflight: HashMap::new(),
            master_up: 0,
            blocks,
            up_slots: slots().0,
            down_slots: slots().1,
            master_slots: slots().2,
            cooldown: HashMap::new(),
            master_sent: 0,
            dirty: vec![false; n],
            dirty_list: Vec::new(),
            next_full: None,
            master_freed: true,
            slow_cache: vec![false; n],
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
        let started = self.inflight.get(&(i, b)).map(|(_, t)| *t);
        let from = self.finish(i, b);
        self.touch(i);
        if let Some(Src::Po(s)) = from {
            self.nodes[s as usize].stalls = 0;
        }
        if let (Some(t), Some(from)) = (started, from) {
            let d = now.duration_since(t).as_secs_f64();
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

    /// Ends the assignment (i, b), freeing both slots.
    fn finish(&mut self, i: u32, b: u64) -> Option<Src> {
        let (from, _) = self.inflight.remove(&(i, b))?;
        self.moving[b as usize] -= 1;
        // The receiver's download slot is free: its neighbours may send to it.
        self.touch_around(i);
        let r = &mut self.nodes[i as usize];
        r.down = r.down.saturating_sub(1);
        match from {
            Src::Master => {
                self.master_up = self.master_up.saturating_sub(1);
                self.master_freed = true;
            }
            Src::Po(s) => {
                self.touch(s);
                let s = &mut self.nodes[s as usize];
                s.up = s.up.saturating_sub(1);
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

    fn start(&mut self, a: Assign, now: Instant) {
        self.inflight.insert((a.to, a.block), (a.from, now));
        self.moving[a.block as usize] += 1;
        self.nodes[a.to as usize].down += 1;
        match a.from {
            Src::Master => {
                self.master_up += 1;
                self.master_sent += 1;
            }
            Src::Po(s) => self.nodes[s as usize].up += 1,
        }
    }

    /// New assignments for every free slot.
    #[allow(clippy::needless_range_loop)] // indices name pos in several parallel tables
    pub fn schedule(&mut self, now: Instant) -> Vec<Assign> {
        let mut out = Vec::new();
        let full = self.next_full.is_none_or(|t| t <= now);
        if full {
            self.next_full = Some(now + FULL_PASS);
            self.slow_cache = self.slow();
            self.cooldown.retain(|_, until| *until > now);
        }
        let slow = std::mem::take(&mut self.slow_cache);
        // 1. Scatter: fresh blocks from the master, to the fast po that has had fewest.
        while self.master_up < self.master_slots {
            while self.next_fresh < self.blocks && self.scattered[self.next_fresh as usize] {
                self.next_fresh += 1;
            }
            if self.next_fresh >= self.blocks {
                break;
            }
            let b = self.next_fresh as usize;
            // A slow po gets fresh blocks only when every po is slow.
            let any_fast = (0..self.nodes.len()).any(|r| self.nodes[r].live && !slow[r]);
            let to = (0..self.nodes.len())
                .filter(|&r| self.nodes[r].down < self.down_slots && self.wants(r, b) && (!slow[r] || !any_fast))
                .min_by_key(|&r| (self.nodes[r].fresh, self.nodes[r].down, r));
            let Some(to) = to else { break };
            self.scattered[b] = true;
            self.nodes[to].fresh += 1;
            let a = Assign { from: Src::Master, to: to as u32, block: b as u64 };
            self.start(a, now);
            out.push(a);
        }
        // 2. Exchange: every free uplink serves its rarest block to a neighbour lacking it.
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
            while self.nodes[s].up < self.up_slots {
                let mut best: Option<(u32, usize, (u64, u32))> = None;
                for &r in &self.neighbours[s] {
                    let rn = &self.nodes[r as usize];
                    let full = rn.down >= self.down_slots;
                    if !rn.live
                        || rn.down >= self.down_slots + RARE_EXTRA
                        || self.cooldown.get(&(Src::Po(s as u32), r)).is_some_and(|t| *t > now)
                    {
                        continue;
                    }
                    for b in 0..self.blocks as usize {
                        if !self.nodes[s].have[b] || !self.wants(r as usize, b) || (full && self.count[b] > 1) {
                            continue;
                        }
                        // A slow po serves only what nobody else holds.
                        if slow[s] && self.count[b] > 1 {
                            continue;
                        }
                        let key = (self.nodes[r as usize].held, self.count[b]);
                        if best.is_none_or(|(_, _, k)| key < k) {
                            best = Some((r, b, key));
                        }
                    }
                }
                let Some((r, b, _)) = best else { break };
                let a = Assign { from: Src::Po(s as u32), to: r, block: b as u64 };
                self.start(a, now);
                out.push(a);
            }
        }
        // 3. End-game: the master's idle uplink serves the rarest block a po still lacks and
        // cannot get from a neighbour: one whose only copy is still on its way would be a
        // second scatter, and one a good neighbour holds will come by exchange. So the master
        // sends each block about once, which is what matters when few blocks travel (delta).
        let search = full || std::mem::take(&mut self.master_freed);
        while search && self.master_up < self.master_slots && self.next_fresh >= self.blocks {
            let mut best: Option<(usize, usize, u32)> = None;
            for r in 0..self.nodes.len() {
                if self.nodes[r].down >= self.down_slots || !self.nodes[r].live {
                    continue;
                }
                for b in 0..self.blocks as usize {
                    if !self.wants(r, b) || (self.count[b] == 0 && self.moving[b] > 0) {
                        continue;
                    }
                    let near = self.neighbours[r].iter().any(|&s| {
                        self.nodes[s as usize].have[b]
                            && self.serves(s as usize)
                            && !slow[s as usize]
                            && self.cooldown.get(&(Src::Po(s), r as u32)).is_none_or(|t| *t <= now)
                    });
                    if !near && best.is_none_or(|(_, _, k)| self.count[b] < k) {
                        best = Some((r, b, self.count[b]));
                    }
                }
            }
            let Some((r, b, _)) = best else { break };
            let a = Assign { from: Src::Master, to: r as u32, block: b as u64 };
            self.start(a, now);
            out.push(a);
        }
        self.slow_cache = slow;
        out
    }

    /// One line per po for the debug log: slots in use, blocks held, fastest transfer, slow.
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
        format!("master_up={} inflight={} {}", self.master_up, self.inflight.len(), nodes.join(" "))
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

    /// Every link (and the master's) moves one block per tick; returns ticks and master copies.
    fn simulate(n: usize, blocks: u64, peers: u32, slow: &[u32], dead_at: Option<(u32, u64)>) -> (u64, f64, Vec<u64>) {
        let mut s = Swarm::new(n, blocks, peers);
        let t0 = Instant::now();
        for i in 0..n as u32 {
            s.join(i, &[]);
        }
        let mut pending: Vec<(u64, Assign)> = Vec::new();
        let mut done_at = vec![0u64; n];
        for tick in 0..100_000u64 {
            let now = t0 + Duration::from_millis(tick * 10);
            if let Some((d, at)) = dead_at {
                if tick == at {
                    s.leave(d);
                    pending.retain(|(_, a)| a.to != d && a.from != Src::Po(d));
                }
            }
            let (due, later): (Vec<_>, Vec<_>) = pending.into_iter().partition(|(t, _)| *t <= tick);
            pending = later;
            for (_, a) in due {
                s.have(a.to, a.block, now);
                if s.complete(a.to) && done_at[a.to as usize] == 0 {
                    done_at[a.to as usize] = tick;
                }
            }
            if (0..n as u32).filter(|i| Some(*i) != dead_at.map(|d| d.0)).all(|i| s.complete(i)) {
                return (tick, s.master_sent as f64 / blocks as f64, done_at);
            }
            for a in s.schedule(now) {
                // UP_SLOTS blocks share a link, so one block takes that many ticks (a link moves a
                // block a tick); on a slow po's link four times that.
                let slow_link = slow.contains(&a.to) || matches!(a.from, Src::Po(p) if slow.contains(&p));
                let t = UP_SLOTS as u64;
                pending.push((tick + if slow_link { 4 * t } else { t }, a));
            }
            if pending.is_empty() && tick > 0 {
                let lacking: Vec<(u32, u64, u8, u8)> = (0..n as u32)
                    .filter(|i| !s.complete(*i))
                    .map(|i| (i, s.nodes[i as usize].held, s.nodes[i as usize].down, s.nodes[i as usize].up))
                    .collect();
                panic!("stuck at tick {tick}: {lacking:?} master_up={} inflight={}", s.master_up, s.inflight.len());
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
        // Ideal: the master sends `blocks` blocks, two ticks each, over its two slots.
        for n in [1usize, 4, 8, 16] {
            let (ticks, copies, _) = simulate(n, 256, 8, &[], None);
            let ideal = 256.0;
            eprintln!("n={n}: {ticks} ticks for an ideal {ideal}, master copies {copies:.3}");
            assert!((ticks as f64) < ideal * 1.08, "n={n}: {ticks} ticks");
            assert!(copies <= 1.05, "n={n}: master sent {copies} copies");
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
