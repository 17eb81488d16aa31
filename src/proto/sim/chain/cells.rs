//! The lab's cells of issue 16, predicted by the flow model and the simulator side by side with
//! the pipelined-broadcast theory and what the lab measured (`scripts/model-chains.sh`).

use super::super::super::fluid::chain::{ChainLab, Death, GOODPUT};
use super::play;

/// One cell: the lab, the pos it is not judged on, and the lab's figures from the issue.
pub struct Cell {
    pub name: &'static str,
    pub lab: ChainLab,
    pub except: Vec<u32>,
    /// chain-tar in the lab, and the target (issue 16).
    pub chain_tar: &'static str,
    pub target: &'static str,
}

/// A po at 25 Mbit/s where the others have 100.
fn slowed(mut lab: ChainLab, po: usize) -> ChainLab {
    let r = 25e6 / 8.0 * GOODPUT;
    (lab.up[po], lab.down[po]) = (r, r);
    lab
}

/// The cells with `stripes` stripes and forwarding unit `unit` (bytes).
pub fn cells(stripes: usize, unit: f64) -> Vec<Cell> {
    let lab = |n, mib, mbit| ChainLab { stripes, unit, ..ChainLab::lab(n, mib, mbit) };
    let cell = |name, lab, chain_tar, target| Cell { name, lab, except: Vec::new(), chain_tar, target };
    let mut slow_tail = slowed(lab(8, 64, 100.0), 2);
    slow_tail.slow = vec![2];
    // chain-tar as the lab ran it: one chain, h3 in the middle, a bounded pipe.
    let slow_mid = ChainLab { stripes: 1, spool: false, ..slowed(lab(8, 64, 100.0), 2) };
    let limited = 4.0 * 1048576.0;
    let mut out = vec![
        cell("n4", lab(4, 64, 100.0), "1.07", "1.10"),
        cell("n8", lab(8, 64, 100.0), "1.07", "1.10"),
        cell("n16", lab(16, 64, 100.0), "1.12", "1.10"),
        cell("n16_50mbit", lab(16, 64, 50.0), "1.11", "1.10"),
        cell("seed_20pos_256MiB_50mbit", lab(20, 256, 50.0), "-", "1.10"),
        Cell { except: vec![2], ..cell("slow_h3_tail_others", slow_tail, "1.06-1.07(tail,spool)", "1.10") },
        Cell { except: vec![2], ..cell("slow_h3_mid_pipe_others", slow_mid, "4.3-4.7", "-") },
        cell(
            "rate_limit_4M_20pos",
            ChainLab { limit: limited, ideal_rate: limited, ..lab(20, 256, 50.0) },
            "-",
            "1.03",
        ),
        cell("small_files_160MiB_n8(data_plane_only)", lab(8, 160, 100.0), "-", "1.12"),
    ];
    // A po killed half-way (its reset reaches the predecessor within a hop), and one that
    // stalls (noticed after the master's stall floor, 6 s today).
    for (name, stall) in [("kill_at_50%_n8", None), ("stall_at_50%_n8", Some(6.0))] {
        let mut l = lab(8, 64, 100.0);
        let detect = stall.unwrap_or(l.hop_lat);
        l.death = Some(Death { po: 3, at: 0.5 * l.ideal(), detect });
        out.push(Cell { except: vec![3], ..cell(name, l, "-", "1.25") });
    }
    out
}

impl Cell {
    /// The judged pos' latest finish ÷ ideal.
    pub fn ratios(&self) -> Ratios {
        let ideal = self.lab.ideal();
        let f = self.lab.predict();
        Ratios {
            model: f.latest(&self.except) / ideal,
            catch_up: f.latest_catching_up(&self.except) / ideal,
            sim: play(&self.lab).finish.latest(&self.except) / ideal,
            theory: 1.0 + self.lab.pos as f64 * self.lab.unit / self.lab.bytes,
        }
    }
}

/// The model's (stripes keep their shares, and catching up after a death), the simulator's,
/// and the pipelined-broadcast theory's T ≈ S/R + N·c/R.
pub struct Ratios {
    pub model: f64,
    pub catch_up: f64,
    pub sim: f64,
    pub theory: f64,
}

impl Ratios {
    /// `model=…` and, where a death makes them differ, `model_catch_up=…`.
    fn model(&self) -> String {
        match self.catch_up < self.model {
            true => format!("model={:.3} model_catch_up={:.3}", self.model, self.catch_up),
            false => format!("model={:.3}", self.model),
        }
    }
}

/// Prints every cell, then how the design's choices move them: K and the unit (the N=16 cell
/// and the kill), the hop latency, how soon a stall is noticed, and what the N=16 cell's gap to
/// 1.0 is made of. `scripts/model-chains.sh`, or
/// `cargo test --lib chain_cells -- --ignored --nocapture`.
#[test]
#[ignore]
fn chain_cells() {
    let line = |name: &str, what: String, c: &Cell| {
        let r = c.ratios();
        println!("{name} cell={}{what} {} sim={:.3} theory={:.3}", c.name, r.model(), r.sim, r.theory);
    };
    for c in cells(2, 65536.0) {
        let r = c.ratios();
        println!(
            "cell={} {} sim={:.3} theory={:.3} chain_tar={} target={}",
            c.name,
            r.model(),
            r.sim,
            r.theory,
            c.chain_tar,
            c.target
        );
    }
    let named = |k, unit, name| cells(k, unit).into_iter().find(|c| c.name == name).unwrap();
    for k in [1usize, 2, 4] {
        // 0: store-and-forward, the unit is the block.
        for unit in [16384.0, 65536.0, 0.0] {
            for name in ["n16", "kill_at_50%_n8"] {
                let mut c = named(k, unit, name);
                c.lab.unit = if unit == 0.0 { c.lab.block } else { unit };
                line("sweep", format!(" K={k} unit={}", c.lab.unit), &c);
            }
        }
    }
    for lat in [0.0, 0.005, 0.020, 0.040] {
        let mut c = named(2, 65536.0, "n16");
        c.lab.hop_lat = lat;
        line("sweep", format!(" hop_lat={lat}"), &c);
    }
    for detect in [0.1, 0.5, 1.0, 2.0, 6.0] {
        let mut c = named(2, 65536.0, "stall_at_50%_n8");
        c.lab.death.as_mut().unwrap().detect = detect;
        line("sweep", format!(" detect={detect}"), &c);
    }
    // The gap: TCP's share of the link, the hops' latency, the units in the pipeline.
    let n16 = named(2, 65536.0, "n16");
    let model = |lab: &ChainLab| lab.predict().latest(&[]) / lab.ideal();
    let no_lat = ChainLab { hop_lat: 0.0, ..n16.lab.clone() };
    let (all, units) = (model(&n16.lab), model(&no_lat));
    println!(
        "gap cell=n16 model={all:.3} tcp={:.3} hop_latency={:.3} units={:.3}",
        1.0 / GOODPUT - 1.0,
        all - units,
        units - 1.0 / GOODPUT
    );
}
