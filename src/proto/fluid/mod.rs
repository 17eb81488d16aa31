//! A flow-level model of the network lab, to judge the swarm scheduler without the lab.
//!
//! Every host has an uplink and a downlink of the same rate. Blocks on one (sender, receiver)
//! link travel one after another, as on a TCP connection; the blocks at the heads of all links
//! share the links' capacity max-min fairly (what TCP converges to). Control messages take
//! time: a HAVE reaches the master `have_lat` after the block landed, and a push order reaches
//! its sender `push_lat` after the master decided. The scheduler is the real [`Swarm`].
//!
//! - `agenda`: events in time order; `share`: max-min fair sharing; for this model and the chains'.
//! - `chain`: the flow model of pipelined chains (issue 16), in closed form; `sim::chain` plays
//!   the same chains unit by unit.

pub mod agenda;
pub mod chain;
pub mod share;

use super::swarm::{Assign, Src, Swarm};
use agenda::Agenda;
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

pub struct Lab {
    pub pos: usize,
    pub blocks: u64,
    pub block_bytes: f64,
    /// Bytes per second of each po's uplink and downlink, and the master's uplink.
    pub rate: Vec<f64>,
    pub master_rate: f64,
    pub have_lat: f64,
    pub push_lat: f64,
    pub peers: u32,
}

pub struct Outcome {
    /// Seconds until each po held every block.
    pub done: Vec<f64>,
    pub master_copies: f64,
    /// Mean fraction of its capacity each po's uplink carried until the last po finished.
    pub up_use: f64,
    /// When the master sent its last byte.
    pub master_end: f64,
    /// Per 0.5 s window: master tx, mean po rx, mean po tx (fractions of the rate).
    pub timeline: Vec<(f64, f64, f64)>,
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    /// A push order reaches sender `s` (the link `s -> to` queues block `b`).
    Queue(u32, u32, u64),
    /// Po `to`'s HAVE for `b` reaches the master.
    Have(u32, u64),
}

const M: u32 = u32::MAX;

impl Lab {
    pub fn uniform(pos: usize, rate_mbit: f64) -> Lab {
        let r = rate_mbit * 1e6 / 8.0;
        Lab {
            pos,
            blocks: 256,
            block_bytes: 262144.0,
            rate: vec![r; pos],
            master_rate: r,
            have_lat: 0.010,
            push_lat: 0.020,
            peers: 8,
        }
    }

    /// The time S / rate of one uplink sending every block once.
    pub fn ideal(&self) -> f64 {
        self.blocks as f64 * self.block_bytes / self.master_rate
    }

    pub fn run(&self) -> Outcome {
        let n = self.pos;
        let mut sw = Swarm::new(n, self.blocks, self.peers);
        for i in 0..n as u32 {
            sw.join(i, &[]);
        }
        let mut run = Run {
            lab: self,
            sw,
            t0: Instant::now(),
            links: BTreeMap::new(),
            events: Agenda::new(),
            done: vec![f64::NAN; n],
            held: vec![0u64; n],
            sent: vec![0f64; n],
            t: 0.0,
            master_end: 0.0,
            timeline: Vec::new(),
        };
        run.decide();
        for _ in 0..10_000_000 {
            if run.done.iter().all(|d| !d.is_nan()) {
                break;
            }
            run.flow();
            if run.deliver() {
                run.decide();
            }
        }
        let Run { done, sent, sw, master_end, timeline, .. } = run;
        let end = done.iter().cloned().fold(0.0, f64::max);
        let up_use = (0..n).map(|i| sent[i] / (self.rate[i] * end)).sum::<f64>() / n as f64;
        Outcome { done, master_copies: sw.master_sent as f64 / self.blocks as f64, up_use, master_end, timeline }
    }

    /// Max-min fair rates of the flows (sender, receiver) under the uplink and downlink limits.
    fn max_min(&self, flows: &[(u32, u32)]) -> Vec<f64> {
        let n = self.pos;
        // Resources: 0..n uplinks of pos, n the master's uplink, n+1.. downlinks.
        let res: Vec<[usize; 2]> =
            flows.iter().map(|f| [if f.0 == M { n } else { f.0 as usize }, n + 1 + f.1 as usize]).collect();
        let cap: Vec<f64> =
            self.rate.iter().copied().chain([self.master_rate]).chain(self.rate.iter().copied()).collect();
        share::max_min(&cap, &res, &vec![f64::INFINITY; flows.len()])
    }
}

/// One run of the model: the scheduler, what is on the links and on its way, and what is
/// measured.
struct Run<'a> {
    lab: &'a Lab,
    sw: Swarm,
    t0: Instant,
    /// Per link (sender, receiver): the blocks queued, the head's bytes left.
    links: BTreeMap<(u32, u32), (VecDeque<u64>, f64)>,
    events: Agenda<Ev>,
    done: Vec<f64>,
    held: Vec<u64>,
    sent: Vec<f64>,
    /// Seconds since the start.
    t: f64,
    master_end: f64,
    timeline: Vec<(f64, f64, f64)>,
}

impl Run<'_> {
    fn at(&self, t: f64) -> Instant {
        self.t0 + Duration::from_secs_f64(t)
    }

    /// Asks the scheduler; the master's blocks queue at once, a po's when the order reaches it.
    fn decide(&mut self) {
        let t = self.t;
        for Assign { from, to, block } in self.sw.schedule(self.at(t)) {
            match from {
                Src::Master => self.links.entry((M, to)).or_insert_with(|| (VecDeque::new(), 0.0)).0.push_back(block),
                Src::Po(s) => self.events.at(t + self.lab.push_lat, Ev::Queue(s, to, block)),
            }
        }
    }

    /// Moves bytes at the max-min fair rates until a head block lands or an event is due.
    fn flow(&mut self) {
        let (lab, n) = (self.lab, self.lab.pos);
        // Heads start with a full block.
        for (q, left) in self.links.values_mut() {
            if *left <= 0.0 && !q.is_empty() {
                *left = lab.block_bytes;
            }
        }
        let heads: Vec<(u32, u32)> = self.links.iter().filter(|(_, (q, _))| !q.is_empty()).map(|(k, _)| *k).collect();
        let rates = lab.max_min(&heads);
        let next_done = heads.iter().zip(&rates).map(|(k, r)| self.links[k].1 / r).fold(f64::INFINITY, f64::min);
        let next_ev = self.events.next();
        let dt = next_done.min(next_ev - self.t);
        assert!(dt.is_finite(), "the swarm stalled at {:.3}s: held {:?}", self.t, self.held);
        let w = (self.t / 0.5) as usize;
        if self.timeline.len() <= w {
            self.timeline.resize(w + 1, (0.0, 0.0, 0.0));
        }
        self.t += dt;
        let t = self.t;
        for (k, r) in heads.iter().zip(&rates) {
            let x = r * dt / 0.5 / lab.master_rate;
            if k.0 == M {
                self.timeline[w].0 += x;
                self.master_end = t;
            } else {
                self.timeline[w].2 += x / n as f64;
            }
            self.timeline[w].1 += x / n as f64;
            let l = self.links.get_mut(k).unwrap();
            l.1 -= r * dt;
            if k.0 != M {
                self.sent[k.0 as usize] += r * dt;
            }
            if l.1 <= 1e-6 {
                let b = l.0.pop_front().unwrap();
                l.1 = 0.0;
                self.events.at(t + lab.have_lat, Ev::Have(k.1, b));
            }
        }
    }

    /// Delivers the events now due; whether a HAVE reached the master.
    fn deliver(&mut self) -> bool {
        let t = self.t;
        let mut any = false;
        while let Some(e) = self.events.due(t + 1e-12) {
            match e {
                Ev::Queue(s, to, b) => {
                    self.links.entry((s, to)).or_insert_with(|| (VecDeque::new(), 0.0)).0.push_back(b)
                }
                Ev::Have(to, b) => {
                    self.sw.have(to, b, self.at(t));
                    self.held[to as usize] += 1;
                    if self.sw.complete(to) && self.done[to as usize].is_nan() {
                        self.done[to as usize] = t;
                    }
                    any = true;
                }
            }
        }
        any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Prints the model's ratios for the lab's cells:
    /// `cargo test --release --lib fluid -- --nocapture --ignored`. The control latencies are
    /// the constants below (the core reads no environment); `TIMELINE` prints rates over time.
    #[test]
    #[ignore]
    fn lab_cells() {
        const HAVE_MS: f64 = 10.0;
        const PUSH_MS: f64 = 20.0;
        const TIMELINE: bool = false;
        let lab = |n: usize| Lab { have_lat: HAVE_MS / 1e3, push_lat: PUSH_MS / 1e3, ..Lab::uniform(n, 93.0) };
        for n in [1usize, 4, 8, 16] {
            let lab = lab(n);
            let o = lab.run();
            let end = o.done.iter().cloned().fold(0.0, f64::max);
            eprintln!(
                "n={n} ratio={:.3} master_copies={:.3} up_use={:.2}",
                end / lab.ideal(),
                o.master_copies,
                o.up_use
            );
            if TIMELINE {
                eprintln!("  master_end={:.3}", o.master_end / lab.ideal());
                for (w, (m, rx, tx)) in o.timeline.iter().enumerate() {
                    eprintln!("  t={:.1} master={m:.2} po_rx={rx:.2} po_tx={tx:.2}", w as f64 * 0.5);
                }
            }
        }
        let mut lab = lab(8);
        lab.rate[2] /= 4.0;
        let o = lab.run();
        let worst = o.done.iter().enumerate().filter(|(i, _)| *i != 2).map(|(_, d)| *d).fold(0.0, f64::max);
        eprintln!("slow h3: others {:.3} slow {:.3}", worst / lab.ideal(), o.done[2] / lab.ideal());
    }
}
