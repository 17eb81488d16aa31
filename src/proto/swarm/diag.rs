//! Link use and assignment times over a transfer, for the `event=swarm_diag` log line.

use super::{Node, Src};
use std::time::Instant;

const TOOK_BUCKETS: usize = 500;

/// Time-weighted link counts per po and assignment times, for `event=swarm_diag`.
pub(super) struct Diag {
    at: Option<(Instant, Instant)>,
    /// Per po: seconds x links out, seconds x links in, seconds with no link out.
    links: Vec<[f64; 3]>,
    /// Times from assignment (or reaching the head of its link) to HAVE, in 10 ms buckets up
    /// to 5 s: the master's blocks, the pos'. Fixed size, however long the transfer.
    took: [Box<[u32; TOOK_BUCKETS]>; 2],
    /// When the master had assigned every block once.
    pub(super) scattered: Option<Instant>,
}

impl Diag {
    pub(super) fn new(n: usize) -> Diag {
        let none = || Box::new([0; TOOK_BUCKETS]);
        Diag { at: None, links: vec![[0.0; 3]; n], took: [none(), none()], scattered: None }
    }

    pub(super) fn sample(&mut self, now: Instant, nodes: &[Node]) {
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

    pub(super) fn took(&mut self, from: Src, d: f64) {
        let h = &mut self.took[usize::from(from != Src::Master)];
        h[((d * 100.0) as usize).min(TOOK_BUCKETS - 1)] += 1;
    }

    pub(super) fn line(&self) -> String {
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
