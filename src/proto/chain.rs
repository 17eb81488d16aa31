//! Pipelined chains (issue 16): the master's plan of K stripes. Stripe `s` carries blocks `s`,
//! `s + K`, `s + 2K`, … through every po in its own order; a po forwards what it receives to the
//! next po of that stripe. The plan is a pure function of the pos and of which of them are slow,
//! so the flow model, the simulator and the master share it.

/// The order of the pos in each of `k` stripes. The other pos are rotated, stripe `s` starting
/// `s·n/k` places on, so each stripe has its own head and tail; the `slow` pos come last in every
/// stripe, in the order given, so that they only consume and never hold anyone back.
pub fn stripes(pos: u32, k: usize, slow: &[u32]) -> Vec<Vec<u32>> {
    let fast: Vec<u32> = (0..pos).filter(|p| !slow.contains(p)).collect();
    let k = k.max(1);
    (0..k)
        .map(|s| {
            let shift = if fast.is_empty() { 0 } else { s * fast.len() / k };
            let mut order: Vec<u32> = fast.iter().cycle().skip(shift).take(fast.len()).copied().collect();
            order.extend(slow.iter().filter(|p| **p < pos));
            order
        })
        .collect()
}

/// Bytes the master keeps queued to each stripe's head: two round trips at line rate, so the
/// head's downlink never waits for the master's next block.
const HEAD_QUEUE: u64 = 2 << 20;

/// Blocks of `block_size` the master queues to a head (a head's HAVEs go before half landed).
pub fn head_depth(block_size: u32) -> u8 {
    (HEAD_QUEUE / block_size.max(1) as u64).clamp(2, 64) as u8
}

/// The stripe that carries `block`.
pub fn stripe_of(block: u64, k: usize) -> usize {
    (block % k.max(1) as u64) as usize
}

/// Cuts `dead` out of one stripe's order: its predecessor (`None`: the master) now feeds its
/// successor (`None`: it was the tail). `None` when `dead` is not in the order.
pub fn cut_out(order: &mut Vec<u32>, dead: u32) -> Option<(Option<u32>, Option<u32>)> {
    let at = order.iter().position(|p| *p == dead)?;
    order.remove(at);
    let pred = at.checked_sub(1).map(|i| order[i]);
    Some((pred, order.get(at).copied()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_stripe_holds_every_po_once_with_the_slow_ones_last() {
        for (n, k, slow) in [(8u32, 1usize, vec![]), (8, 4, vec![2]), (16, 3, vec![5, 1]), (2, 4, vec![0, 1])] {
            let plan = stripes(n, k, &slow);
            assert_eq!(plan.len(), k);
            for order in &plan {
                let mut sorted = order.clone();
                sorted.sort();
                assert_eq!(sorted, (0..n).collect::<Vec<_>>(), "{plan:?}");
                assert_eq!(order[order.len() - slow.len()..], slow[..], "{plan:?}");
            }
        }
        // Four stripes over eight fast pos: four different heads and four different tails.
        let plan = stripes(8, 4, &[]);
        let heads: std::collections::BTreeSet<u32> = plan.iter().map(|o| o[0]).collect();
        let tails: std::collections::BTreeSet<u32> = plan.iter().map(|o| o[7]).collect();
        assert_eq!((heads.len(), tails.len()), (4, 4), "{plan:?}");
    }

    #[test]
    fn a_cut_links_the_predecessor_to_the_successor() {
        let mut o = vec![3, 1, 4, 0];
        assert_eq!(cut_out(&mut o, 1), Some((Some(3), Some(4))));
        assert_eq!(cut_out(&mut o, 3), Some((None, Some(4))));
        assert_eq!(cut_out(&mut o, 0), Some((Some(4), None)));
        assert_eq!(cut_out(&mut o, 9), None);
        assert_eq!(o, [4]);
        assert_eq!((stripe_of(7, 4), stripe_of(7, 1), stripe_of(7, 0)), (3, 0, 0));
    }
}
