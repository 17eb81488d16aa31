//! Who may talk to whom: the neighbour graph, and the planned links over it.

/// A balanced plan of links: po i serves `k` of its neighbours and is served by `k`, as far
/// as the neighbour graph allows. In a full mesh that is i -> i+1 .. i+k; otherwise it is `k`
/// maximum matchings of senders to receivers (Kuhn's augmenting paths), each over the
/// neighbour pairs not used yet, so no po ends up with fewer senders than the others.
pub(super) fn plan(g: &[Vec<u32>], k: usize) -> Vec<Vec<u32>> {
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
    graph_with(n, peers, &[])
}

/// `graph`, with the links in `first` (the chains' hops) made before any other.
pub(super) fn graph_with(n: usize, peers: usize, first: &[(u32, u32)]) -> Vec<Vec<u32>> {
    let mut g: Vec<Vec<u32>> = vec![Vec::new(); n];
    let link = |g: &mut Vec<Vec<u32>>, i: usize, j: usize| {
        if i != j && !g[i].contains(&(j as u32)) && g[i].len() < peers && g[j].len() < peers {
            g[i].push(j as u32);
            g[j].push(i as u32);
        }
    };
    for &(i, j) in first {
        link(&mut g, i as usize, j as usize);
    }
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
