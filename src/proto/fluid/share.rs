//! Max-min fair sharing (what long-lived TCP flows converge to), by progressive filling: each
//! flow uses a few resources (an uplink, a downlink) and may be capped by its own demand.

/// The rates of `flows` (each the indices of the resources it uses) under the capacities `cap`
/// and each flow's `demand` (`f64::INFINITY`: none).
pub fn max_min<const R: usize>(cap: &[f64], flows: &[[usize; R]], demand: &[f64]) -> Vec<f64> {
    let mut cap = cap.to_vec();
    let mut rate = vec![0.0; flows.len()];
    let mut fixed = vec![false; flows.len()];
    loop {
        let mut users = vec![0usize; cap.len()];
        for (f, _) in flows.iter().zip(&fixed).filter(|(_, x)| !**x) {
            for &r in f {
                users[r] += 1;
            }
        }
        let tight = (0..cap.len())
            .filter(|&r| users[r] > 0)
            .map(|r| (Some(r), cap[r].max(0.0) / users[r] as f64))
            .chain((0..flows.len()).filter(|&k| !fixed[k]).map(|k| (None, demand[k])))
            .min_by(|a, b| a.1.total_cmp(&b.1));
        let Some((tight, share)) = tight else { return rate };
        for (k, f) in flows.iter().enumerate() {
            // A tight resource fixes every flow on it; a tight demand fixes the flows at it.
            let hit = match tight {
                Some(r) => f.contains(&r),
                None => demand[k] <= share,
            };
            if !fixed[k] && hit {
                fixed[k] = true;
                rate[k] = share;
                for &r in f {
                    cap[r] -= share;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_capped_flow_leaves_its_share_to_the_others() {
        // Two flows share resource 0 (10); one is capped at 2, so the other gets 8.
        let r = max_min(&[10.0, 100.0, 100.0], &[[0, 1], [0, 2]], &[2.0, f64::INFINITY]);
        assert_eq!(r, [2.0, 8.0]);
        // Without caps, equal shares; a flow alone on a tighter resource is held there.
        let r = max_min(&[10.0, 3.0, 100.0], &[[0, 1], [0, 2]], &[f64::INFINITY; 2]);
        assert_eq!(r, [3.0, 7.0]);
    }
}
