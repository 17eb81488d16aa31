//! The chain simulator (issue 16): the flow model's chains ([`ChainLab`]) played unit by unit.
//!
//! Each stripe is a stream of forwarding units (a block is one or more units). A hop sends one
//! unit after another at its rate, starting a unit only once its sender holds it (cut-through)
//! or holds the unit's whole block (store-and-forward when the unit is the block); a unit lands
//! `hop_lat` after its last byte left. Rates are the flow model's shares ([`ChainLab::rates`])
//! over the hops open at the time, worked out again whenever a hop opens or closes, so what the
//! simulator adds to the model is the discrete part: units and blocks, the pipeline's fill and
//! drain, stripes ending at different times, and a death played out — the dead po's hops and
//! its queued units are lost, each predecessor notices `detect` later, asks the successor what
//! it holds (a round trip), and sends again from the start of the successor's partial block.
//! A po counts a block once every unit of it has landed.

#[cfg(test)]
mod cells;
#[cfg(test)]
mod tests;

use super::super::chain;
use super::super::fluid::agenda::Agenda;
use super::super::fluid::chain::{ChainLab, Finish, Hop};
use std::collections::BTreeMap;
use std::ops::Range;

/// What happened, in order, for the invariants' sake.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Note {
    /// Unit `unit` of stripe `stripe`'s stream landed at `po`.
    Landed { po: u32, stripe: usize, unit: usize },
    /// `po` counted `block` as held.
    Counted { po: u32, block: u64 },
    /// `po` let go of the units of its partial block from `unit` on (their sender died).
    Dropped { po: u32, stripe: usize, unit: usize },
}

pub struct Played {
    pub finish: Finish,
    pub notes: Vec<Note>,
    /// Bytes the master sent, and bytes sent again to repair partial blocks.
    pub source_bytes: f64,
    pub resent: f64,
    /// Bytes that went out on each hop (sender, `None` the master; receiver), whole units
    /// only, landed or lost: what sites count (issue 17).
    pub wire: BTreeMap<(Option<u32>, u32), f64>,
}

/// The units of one stripe's stream.
pub struct Stream {
    /// Bytes of each unit.
    pub len: Vec<f64>,
    /// The block of each unit, and the units of that block.
    pub block: Vec<u64>,
    pub span: Vec<Range<usize>>,
}

impl Stream {
    /// Every stripe's stream: block `b` on stripe `b mod K`, cut into units of at most `unit`.
    pub fn all(lab: &ChainLab) -> Vec<Stream> {
        let mut out: Vec<Stream> =
            (0..lab.stripes.max(1)).map(|_| Stream { len: Vec::new(), block: Vec::new(), span: Vec::new() }).collect();
        let blocks = (lab.bytes / lab.block).ceil() as u64;
        for b in 0..blocks {
            let st = &mut out[chain::stripe_of(b, lab.stripes)];
            let mut left = lab.block.min(lab.bytes - b as f64 * lab.block);
            let start = st.len.len();
            while left > 0.0 {
                st.len.push(left.min(lab.unit));
                left -= lab.unit;
            }
            let end = st.len.len();
            st.block.resize(end, b);
            st.span.resize(end, start..end);
        }
        out
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    /// A unit lands (`from`: its sender, `None` for the master).
    Land {
        stripe: usize,
        from: Option<u32>,
        to: u32,
        unit: usize,
    },
    Die,
    /// The dead po's predecessor in `stripe` notices.
    Notice(usize),
    /// The predecessor knows what the successor holds, and sends.
    Relink {
        stripe: usize,
        from: Option<u32>,
        to: u32,
    },
}

/// One hop as the simulator plays it: the next unit to start, what is left of the one on the wire.
struct Link {
    hop: Hop,
    next: usize,
    left: Option<f64>,
    rate: f64,
}

struct Sim<'a> {
    lab: &'a ChainLab,
    streams: Vec<Stream>,
    order: Vec<Vec<u32>>,
    links: Vec<Link>,
    /// Per stripe and po: how many units of the stream have landed, in order.
    got: Vec<Vec<usize>>,
    held: Vec<u64>,
    blocks: u64,
    alive: Vec<bool>,
    done: Vec<f64>,
    events: Agenda<Ev>,
    t: f64,
    played: Played,
}

/// Plays `lab` to the end.
pub fn play(lab: &ChainLab) -> Played {
    play_plan(lab, lab.plan())
}

/// Plays `lab` with its stripes in `order` (e.g. `sites::stripes`) rather than `lab.plan()`.
pub fn play_plan(lab: &ChainLab, order: Vec<Vec<u32>>) -> Played {
    let (hops, _) = ChainLab::hops(&order);
    let streams = Stream::all(lab);
    let mut sim = Sim {
        lab,
        links: hops.into_iter().map(|hop| Link { hop, next: 0, left: None, rate: 0.0 }).collect(),
        order,
        got: vec![vec![0; lab.pos]; streams.len()],
        streams,
        held: vec![0; lab.pos],
        blocks: (lab.bytes / lab.block).ceil() as u64,
        alive: vec![true; lab.pos],
        done: vec![f64::NAN; lab.pos],
        events: Agenda::new(),
        t: 0.0,
        played: Played {
            finish: Finish { done: Vec::new(), catch_up: Vec::new() },
            notes: Vec::new(),
            source_bytes: 0.0,
            resent: 0.0,
            wire: BTreeMap::new(),
        },
    };
    if let Some(d) = lab.death {
        sim.events.at(d.at, Ev::Die);
    }
    sim.rerate();
    for _ in 0..100_000_000u64 {
        if (0..lab.pos).all(|p| !sim.alive[p] || !sim.done[p].is_nan()) {
            let mut played = sim.played;
            played.finish = Finish { catch_up: sim.done.clone(), done: sim.done };
            return played;
        }
        sim.step();
    }
    panic!("the chain simulator ran too long at {:.3}s: held {:?}", sim.t, sim.held);
}

impl Sim<'_> {
    /// Whether the sender of `l` holds what it needs to start unit `l.next`.
    fn ready(&self, l: &Link) -> bool {
        let st = &self.streams[l.hop.stripe];
        l.next < st.len.len()
            && match l.hop.from {
                None => true,
                Some(f) => {
                    let need = if self.lab.unit < self.lab.block { l.next + 1 } else { st.span[l.next].end };
                    self.alive[f as usize] && self.got[l.hop.stripe][f as usize] >= need
                }
            }
    }

    /// The rates of the open hops (the flow model's shares), after one opened or closed.
    fn rerate(&mut self) {
        let hops: Vec<Hop> = self.links.iter().map(|l| l.hop).collect();
        let feed: Vec<Option<usize>> = hops
            .iter()
            .map(|h| h.from.and_then(|f| hops.iter().position(|g| g.stripe == h.stripe && g.to == f)))
            .collect();
        for (l, r) in self.links.iter_mut().zip(self.lab.rates(&hops, &feed)) {
            l.rate = r;
        }
    }

    /// Starts what can start, closes finished hops, then moves time to the next landing of a
    /// unit's last byte on a hop or the next event, whichever is first.
    fn step(&mut self) {
        for k in 0..self.links.len() {
            if self.links[k].left.is_none() && self.ready(&self.links[k]) {
                let l = &self.links[k];
                self.links[k].left = Some(self.streams[l.hop.stripe].len[l.next]);
            }
        }
        let before = self.links.len();
        let streams = &self.streams;
        self.links.retain(|l| l.left.is_some() || l.next < streams[l.hop.stripe].len.len());
        if self.links.len() != before {
            self.rerate();
        }
        let wire = self.links.iter().filter_map(|l| l.left.map(|b| b / l.rate)).fold(f64::INFINITY, f64::min);
        let ev = self.events.next();
        let dt = wire.min(ev - self.t).max(0.0);
        assert!(dt.is_finite(), "the chain stalled at {:.3}s: held {:?}", self.t, self.held);
        self.t += dt;
        let t = self.t;
        let mut sent = Vec::new();
        for l in &mut self.links {
            let Some(b) = l.left else { continue };
            if b / l.rate <= dt * (1.0 + 1e-12) {
                sent.push((l.hop, l.next));
                let len = self.streams[l.hop.stripe].len[l.next];
                if l.hop.from.is_none() {
                    self.played.source_bytes += len;
                }
                *self.played.wire.entry((l.hop.from, l.hop.to)).or_default() += len;
                l.left = None;
                l.next += 1;
            } else {
                l.left = Some(b - l.rate * dt);
            }
        }
        for (h, unit) in sent {
            self.events.at(t + self.lab.hop_lat, Ev::Land { stripe: h.stripe, from: h.from, to: h.to, unit });
        }
        while let Some(ev) = self.events.due(t) {
            self.handle(ev);
        }
    }

    fn handle(&mut self, ev: Ev) {
        let t = self.t;
        let lat = self.lab.hop_lat;
        match ev {
            // A unit from a dead sender was in its queue and is lost; a dead po takes nothing.
            Ev::Land { from, to, .. } if !self.alive[to as usize] || from.is_some_and(|f| !self.alive[f as usize]) => {}
            // The stream lands in order; the unit that completes a block makes it count.
            Ev::Land { stripe, to, unit, .. } => {
                let got = &mut self.got[stripe][to as usize];
                assert_eq!(*got, unit, "po {to} stripe {stripe}: out of order");
                *got += 1;
                self.played.notes.push(Note::Landed { po: to, stripe, unit });
                let st = &self.streams[stripe];
                if st.span[unit].end == unit + 1 {
                    let block = st.block[unit];
                    self.played.notes.push(Note::Counted { po: to, block });
                    self.held[to as usize] += 1;
                    if self.held[to as usize] == self.blocks {
                        self.done[to as usize] = t;
                    }
                }
            }
            // The po dies: its hops and what is on them are gone; its predecessors notice later.
            Ev::Die => {
                let dead = self.lab.death.unwrap().po;
                self.alive[dead as usize] = false;
                self.links.retain(|l| l.hop.to != dead && l.hop.from != Some(dead));
                self.rerate();
                for s in 0..self.order.len() {
                    self.events.at(t + self.lab.death.unwrap().detect, Ev::Notice(s));
                }
            }
            // The predecessor cuts the dead po out and asks its successor what it holds.
            Ev::Notice(stripe) => {
                let dead = self.lab.death.unwrap().po;
                if let Some((from, Some(to))) = chain::cut_out(&mut self.order[stripe], dead) {
                    self.events.at(t + 2.0 * lat, Ev::Relink { stripe, from, to });
                }
            }
            // It sends again from the start of the successor's partial block, so every block
            // reaches a po from one sender.
            Ev::Relink { stripe, from, to } => {
                let st = &self.streams[stripe];
                let got = self.got[stripe][to as usize];
                if got < st.len.len() {
                    let start = st.span[got].start;
                    if start < got {
                        self.played.resent += st.len[start..got].iter().sum::<f64>();
                        self.played.notes.push(Note::Dropped { po: to, stripe, unit: start });
                        self.got[stripe][to as usize] = start;
                    }
                    self.links.push(Link { hop: Hop { stripe, from, to }, next: start, left: None, rate: 0.0 });
                    self.rerate();
                }
            }
        }
    }
}
