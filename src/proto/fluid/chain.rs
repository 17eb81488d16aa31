//! The flow model of pipelined chains (issue 16), in closed form.
//!
//! The master plans K stripes ([`chain::stripes`]); every hop of a stripe (master → head, po →
//! its successor) is one long-lived TCP flow. The hops share the uplinks and downlinks max-min
//! fairly ([`share::max_min`]), and a hop can forward no faster than its stripe reaches its
//! sender. A class `rate_limit` caps each sender's uplink, all its hops together. Forwarding from
//! the staged copy (`spool`) leaves a hop's rate to the hops upstream of it; forwarding through
//! a bounded pipe (chain-tar) holds the whole stripe to its slowest hop.
//!
//! A stripe of S/K bytes whose hops run at ρ_0…ρ_j reaches the po at place j after
//! `S/K / min ρ + Σ (u/ρ_h + lat) − u / min ρ`: every hop waits for one forwarding unit `u`
//! (the cut-through unit, or the whole block for store-and-forward) and one hop latency, then
//! the stripe streams at its slowest rate so far. With equal links this is the pipelined
//! broadcast bound S/R + N·K·u/R + N·lat. A po that dies at `at` stops its successors in every
//! stripe where it stands ahead of them: the predecessor notices `detect` later, asks the
//! successor what it holds (a round trip) and sends again from the start of the successor's
//! partial block (one sender a block, so a bad block has one culprit).

use super::super::chain;
use super::share;

/// One chain transfer: the hosts' links, the plan's shape and what goes wrong.
#[derive(Clone, Debug)]
pub struct ChainLab {
    pub pos: usize,
    pub bytes: f64,
    pub block: f64,
    /// The forwarding unit: below `block` for cut-through, `block` for store-and-forward.
    pub unit: f64,
    pub stripes: usize,
    /// Goodput of each po's uplink and downlink, and of the master's uplink, in bytes/s.
    pub up: Vec<f64>,
    pub down: Vec<f64>,
    pub master_up: f64,
    /// The class `rate_limit`: each sender's upload over all its hops (`f64::INFINITY`: none).
    pub limit: f64,
    /// One hop's latency under load (propagation and the sender's queue), seconds.
    pub hop_lat: f64,
    /// Forward from the staged copy (no backpressure) rather than through a bounded pipe.
    pub spool: bool,
    /// Pos the plan puts at the tail of every stripe.
    pub slow: Vec<u32>,
    pub death: Option<Death>,
    /// The rate the result is judged against: ideal = bytes / ideal_rate.
    pub ideal_rate: f64,
}

/// A po that dies during the transfer.
#[derive(Clone, Copy, Debug)]
pub struct Death {
    pub po: u32,
    /// Seconds from the start.
    pub at: f64,
    /// Seconds until its predecessors notice (a reset arrives; or a stall timeout).
    pub detect: f64,
}

/// One hop of a stripe: the sender (`None`: the master) and the receiver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hop {
    pub stripe: usize,
    pub from: Option<u32>,
    pub to: u32,
}

/// Seconds until each po holds every block (`NaN` for a po that died): as the stripes keep
/// their shares (`done`), and as a po stopped by a death catches up at its downlink's full
/// rate (`catch_up`; the same as `done` without a death). The two bound what a death costs.
#[derive(Clone, Debug)]
pub struct Finish {
    pub done: Vec<f64>,
    pub catch_up: Vec<f64>,
}

/// The share of the lab's nominal rate that TCP delivers (the lab's floor, 1.06–1.07 at N=1;
/// the swarm's model uses the same 93 of 100 Mbit/s).
pub const GOODPUT: f64 = 0.93;

impl ChainLab {
    /// `pos` pos and a master on links of `mbit` Mbit/s, `mib` MiB in the class's default
    /// block size, 64 KiB cut-through units, two stripes and the swarm model's 20 ms a hop.
    pub fn lab(pos: usize, mib: u64, mbit: f64) -> ChainLab {
        let rate = mbit * 1e6 / 8.0;
        let bytes = (mib << 20) as f64;
        ChainLab {
            pos,
            bytes,
            block: super::super::class::auto_block_size(mib << 20) as f64,
            unit: 65536.0,
            stripes: 2,
            up: vec![rate * GOODPUT; pos],
            down: vec![rate * GOODPUT; pos],
            master_up: rate * GOODPUT,
            limit: f64::INFINITY,
            hop_lat: 0.020,
            spool: true,
            slow: Vec::new(),
            death: None,
            ideal_rate: rate,
        }
    }

    pub fn ideal(&self) -> f64 {
        self.bytes / self.ideal_rate
    }

    pub fn plan(&self) -> Vec<Vec<u32>> {
        chain::stripes(self.pos as u32, self.stripes, &self.slow)
    }

    /// The bytes stripe `s` carries: its blocks, the last one maybe short.
    pub fn stripe_bytes(&self, s: usize) -> f64 {
        let blocks = (self.bytes / self.block).ceil() as u64;
        (0..blocks)
            .filter(|&b| chain::stripe_of(b, self.stripes) == s)
            .map(|b| self.block.min(self.bytes - b as f64 * self.block))
            .sum()
    }

    /// Every hop of `plan`, stripe by stripe in order, and for each the hop that feeds its
    /// sender (`None` for the master's).
    pub fn hops(plan: &[Vec<u32>]) -> (Vec<Hop>, Vec<Option<usize>>) {
        let mut hops = Vec::new();
        let mut feed = Vec::new();
        for (s, order) in plan.iter().enumerate() {
            let mut from = None;
            for &to in order {
                feed.push(from.map(|_| hops.len() - 1));
                hops.push(Hop { stripe: s, from, to });
                from = Some(to);
            }
        }
        (hops, feed)
    }

    /// The steady rate of each hop: max-min fair under the uplinks (capped by the rate limit)
    /// and downlinks, no faster than the hop feeding its sender (`feed`; with `spool` off, no
    /// faster than the stripe's slowest hop).
    pub fn rates(&self, hops: &[Hop], feed: &[Option<usize>]) -> Vec<f64> {
        let n = self.pos;
        // Resources: 0..n the pos' uplinks, n the master's, n+1.. the pos' downlinks.
        let cap: Vec<f64> = self
            .up
            .iter()
            .chain([&self.master_up])
            .map(|r| r.min(self.limit))
            .chain(self.down.iter().copied())
            .collect();
        let res: Vec<[usize; 2]> =
            hops.iter().map(|h| [h.from.map_or(n, |f| f as usize), n + 1 + h.to as usize]).collect();
        let mut demand = vec![f64::INFINITY; hops.len()];
        for _ in 0..4 * hops.len() + 8 {
            let rate = share::max_min(&cap, &res, &demand);
            let mut next: Vec<f64> = feed.iter().map(|f| f.map_or(f64::INFINITY, |f| rate[f])).collect();
            if !self.spool {
                for (k, h) in hops.iter().enumerate() {
                    let slowest = hops.iter().zip(&rate).filter(|(g, _)| g.stripe == h.stripe);
                    next[k] = slowest.map(|(_, r)| *r).fold(next[k], f64::min);
                }
            }
            if next.iter().zip(&demand).all(|(a, b)| a == b || (a - b).abs() <= 1e-9 * a.abs()) {
                return rate;
            }
            demand = next;
        }
        panic!("the chain's rates did not settle: {hops:?}");
    }

    /// The model's finishing times.
    pub fn predict(&self) -> Finish {
        let plan = self.plan();
        let (hops, feed) = Self::hops(&plan);
        let rate = self.rates(&hops, &feed);
        let mut done = vec![0.0f64; self.pos];
        // After a death: the plan without the dead po, and its rates.
        let after = self.death.map(|d| {
            let mut cut = plan.clone();
            for order in &mut cut {
                chain::cut_out(order, d.po);
            }
            let (h, f) = Self::hops(&cut);
            let r = self.rates(&h, &f);
            (cut, r)
        });
        let (u, lat) = (self.unit, self.hop_lat);
        // With a death: per po, what its stopped stripes still lack at the resume, the
        // pipeline from the predecessor, and its other stripes as (bytes, rate, offset).
        let mut stopped = vec![(0.0f64, 0.0f64); self.pos];
        let mut running: Vec<Vec<(f64, f64, f64)>> = vec![Vec::new(); self.pos];
        let resume = self.death.map_or(f64::INFINITY, |d| d.at + d.detect + 2.0 * lat);
        for (s, order) in plan.iter().enumerate() {
            let bytes = self.stripe_bytes(s);
            let first = hops_before(&plan, s);
            // Where the stripe reaches place j: (slowest rate so far, the pipeline's offset).
            let reach = |rates: &[f64], j: usize| {
                let slowest = rates[..=j].iter().copied().fold(f64::INFINITY, f64::min);
                let fill: f64 = rates[..=j].iter().map(|r| u / r + lat).sum();
                (slowest, fill - u / slowest)
            };
            let rs = &rate[first..first + order.len()];
            let dead_at = self.death.and_then(|d| order.iter().position(|p| *p == d.po).map(|p| (d, p)));
            for (j, &po) in order.iter().enumerate() {
                let (slowest, offset) = reach(rs, j);
                let mut t = bytes / slowest + offset;
                match (dead_at, &after) {
                    (Some((d, p)), Some((cut, cut_rate))) if j > p && d.at < t => {
                        // The successor q stops at `at`; the predecessor sends again from the
                        // start of q's partial block once it knows what q holds.
                        let (q_slowest, q_offset) = reach(rs, p + 1);
                        let got = (q_slowest * (d.at - q_offset)).clamp(0.0, bytes);
                        let from = (got / self.block).floor() * self.block;
                        let c_first = hops_before(cut, s);
                        let c_rates = &cut_rate[c_first..c_first + cut[s].len()];
                        // Places in the cut stripe: the predecessor's (p − 1) and ours (j − 1).
                        let (slowest, offset) = reach(c_rates, j - 1);
                        let lag = offset - if p == 0 { 0.0 } else { reach(c_rates, p - 1).1 };
                        t = resume + (bytes - from) / slowest + lag;
                        let st = &mut stopped[po as usize];
                        (st.0, st.1) = (st.0 + bytes - from, st.1.max(lag));
                    }
                    _ => running[po as usize].push((bytes, slowest, offset)),
                }
                done[po as usize] = done[po as usize].max(t);
            }
        }
        // Catching up: from the resume on, a stopped po's downlink carries all it lacks at its
        // full rate (the bound the stopped stripes cannot beat; without it, the stripes keep
        // their shares and the lost time is never made up).
        let mut catch_up = done.clone();
        for (po, (lacks, lag)) in stopped.iter().enumerate().filter(|(_, st)| st.0 > 0.0) {
            let others: f64 = running[po].iter().map(|(b, r, off)| (b - r * (resume - off).max(0.0)).max(0.0)).sum();
            let own = running[po].iter().map(|(b, r, off)| b / r + off).fold(0.0, f64::max);
            catch_up[po] = own.max(resume + (lacks + others) / self.down[po] + lag);
        }
        if let Some(d) = self.death {
            done[d.po as usize] = f64::NAN;
            catch_up[d.po as usize] = f64::NAN;
        }
        Finish { done, catch_up }
    }
}

/// How many hops come before stripe `s`'s in [`ChainLab::hops`].
fn hops_before(plan: &[Vec<u32>], s: usize) -> usize {
    plan[..s].iter().map(Vec::len).sum()
}

impl Finish {
    /// The latest finish among the live pos not in `except`.
    pub fn latest(&self, except: &[u32]) -> f64 {
        latest(&self.done, except)
    }

    pub fn latest_catching_up(&self, except: &[u32]) -> f64 {
        latest(&self.catch_up, except)
    }
}

fn latest(done: &[f64], except: &[u32]) -> f64 {
    let live = done.iter().enumerate().filter(|(p, d)| !d.is_nan() && !except.contains(&(*p as u32)));
    live.map(|(_, d)| *d).fold(0.0, f64::max)
}
