//! Sites (issue 17): pos in several data centres, where the links between sites are the scarce
//! part. A class labels its pos (`po = 10.1.0.5:7200@bj`); the unlabelled pos are one site
//! with the master, site 0, named `master`. Everything here is pure: the plan of stripes that
//! makes each block enter each remote site once, the failover of a site's entry po, the rule
//! for who may send a block into a site, and the bytes counted per site link.

use super::chain;

/// The longest site label.
pub const MAX_LABEL: usize = 32;
/// Distinct sites of one class, the master's included.
pub const MAX_SITES: usize = 64;
/// The name of site 0: the master and the unlabelled pos.
pub const MASTER_SITE: &str = "master";
/// Where the bytes of a block that landed without a known sender are counted from.
pub const UNKNOWN: &str = "unknown";

/// Whether `label` may name a site: 1 to `MAX_LABEL` bytes of `[A-Za-z0-9_.-]`, and not one of
/// the names the counters use themselves.
pub fn check_label(label: &str) -> Result<(), String> {
    if label.is_empty() || label.len() > MAX_LABEL {
        return Err(format!("site label must have 1 to {MAX_LABEL} characters, not {}", label.len()));
    }
    if !label.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-')) {
        return Err(format!("site label {label:?} may hold only letters, digits, _ . -"));
    }
    if label == MASTER_SITE || label == UNKNOWN {
        return Err(format!("site label {label:?} is reserved (the master's site is the unlabelled pos)"));
    }
    Ok(())
}

/// The site of each po, by index. Site 0 is the master's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sites {
    of: Vec<u16>,
    names: Vec<String>,
}

impl Sites {
    /// `n` pos, all in the master's site.
    pub fn one(n: usize) -> Sites {
        Sites { of: vec![0; n], names: vec![MASTER_SITE.into()] }
    }

    /// From each po's label (`""`: unlabelled, the master's site); sites are numbered in the
    /// order they first appear. A label from the wire is checked like one from a config.
    pub fn from_labels<S: AsRef<str>>(labels: &[S]) -> Result<Sites, String> {
        let mut s = Sites::one(0);
        for l in labels {
            let l = l.as_ref();
            let id = if l.is_empty() {
                0
            } else {
                match s.names.iter().position(|n| n == l) {
                    Some(id) => id,
                    None => {
                        check_label(l)?;
                        if s.names.len() == MAX_SITES {
                            return Err(format!("more than {} site labels", MAX_SITES - 1));
                        }
                        s.names.push(l.to_owned());
                        s.names.len() - 1
                    }
                }
            };
            s.of.push(id as u16);
        }
        Ok(s)
    }

    pub fn pos(&self) -> usize {
        self.of.len()
    }

    /// Sites, the master's included even when it has no po.
    pub fn count(&self) -> usize {
        self.names.len()
    }

    /// Whether any po is outside the master's site.
    pub fn labelled(&self) -> bool {
        self.names.len() > 1
    }

    pub fn site(&self, po: u32) -> u16 {
        self.of.get(po as usize).copied().unwrap_or(0)
    }

    pub fn name(&self, site: u16) -> &str {
        &self.names[site as usize]
    }

    /// The site a sender is in (`None`: the master).
    pub fn of_sender(&self, from: Option<u32>) -> u16 {
        from.map_or(0, |p| self.site(p))
    }

    pub fn members(&self, site: u16) -> impl Iterator<Item = u32> + '_ {
        (0..self.of.len() as u32).filter(move |&p| self.of[p as usize] == site)
    }
}

/// The order of the pos in each of `k` stripes, as `chain::stripes` but with sites: in every
/// stripe each site's pos are contiguous, the master's site first, so each block enters each
/// remote site once (from the last po of the site before) and then travels inside it. Stripe
/// `s` rotates the remote sites by `s` and each site's pos by `s·m/k`, so stripes have
/// different heads, tails and site entries.
///
/// Slow pos: a remote site's go last in its own segment, and the remote sites that hold slow
/// pos come after those that do not. With one such site (the usual case) every slow po is at
/// the tail of every stripe, as in `chain::stripes`, and only consumes. With several, the slow
/// pos of a site that is not last in a stripe forward into the next site: that stripe runs at
/// their pace, but moving them to the stripe's tail would make each block cross into their
/// site a second time, and bytes into remote sites are what this plan saves. The rotation
/// shares the cost among those sites. The master's own site is first, so its slow pos go to
/// the stripe's tail instead: each block then comes back into the master's site once more,
/// but only for them, and no remote site waits on them. Without labels this is exactly
/// `chain::stripes`.
pub fn stripes(sites: &Sites, k: usize, slow: &[u32]) -> Vec<Vec<u32>> {
    let n = sites.pos() as u32;
    if !sites.labelled() {
        return chain::stripes(n, k, slow);
    }
    let k = k.max(1);
    let is_slow = |p: u32| slow.contains(&p);
    let remote: Vec<u16> = (1..sites.count() as u16).filter(|&s| sites.members(s).next().is_some()).collect();
    let (fast_sites, slow_sites): (Vec<u16>, Vec<u16>) = remote.iter().partition(|&&s| !sites.members(s).any(is_slow));
    let rotate = |v: &[u16], by: usize| -> Vec<u16> {
        if v.is_empty() {
            return Vec::new();
        }
        v.iter().cycle().skip(by % v.len()).take(v.len()).copied().collect()
    };
    (0..k)
        .map(|s| {
            let mut order = Vec::with_capacity(n as usize);
            let site_order = [vec![0u16], rotate(&fast_sites, s), rotate(&slow_sites, s)].concat();
            let slow_of = |site: u16| slow.iter().copied().filter(move |&p| p < n && sites.site(p) == site);
            for site in site_order {
                let fast: Vec<u32> = sites.members(site).filter(|&p| !is_slow(p)).collect();
                let shift = if fast.is_empty() { 0 } else { s * fast.len() / k };
                order.extend(fast.iter().cycle().skip(shift).take(fast.len()));
                // The slow ones in the order given, as chain::stripes does.
                if site != 0 {
                    order.extend(slow_of(site));
                }
            }
            order.extend(slow_of(0));
            order
        })
        .collect()
}

/// The po where blocks of a stripe enter `site`: its first po in the stripe's order.
pub fn entry_po(sites: &Sites, order: &[u32], site: u16) -> Option<u32> {
    order.iter().copied().find(|&p| sites.site(p) == site)
}

/// What cutting a po out of a stripe changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cut {
    /// Who now feeds whom (`chain::cut_out`'s answer: `None` is the master, or the tail).
    pub pred: Option<u32>,
    pub succ: Option<u32>,
    /// When the dead po was its site's entry: the site's new entry (`None`: the site has no
    /// po left in this stripe).
    pub new_entry: Option<(u16, Option<u32>)>,
}

/// Cuts `dead` out of one stripe (as `chain::cut_out`: its predecessor links to its
/// successor). A site's pos stay contiguous, so when the dead po was where blocks entered its
/// site, its successor is the next po of that site and becomes the entry: the predecessor in
/// the site before relinks to it, and the data still crosses into the site once (plus what
/// was in flight to the dead po).
pub fn cut_out(sites: &Sites, order: &mut Vec<u32>, dead: u32) -> Option<Cut> {
    let site = sites.site(dead);
    let was_entry = entry_po(sites, order, site) == Some(dead);
    let (pred, succ) = chain::cut_out(order, dead)?;
    let new_entry = was_entry.then(|| (site, entry_po(sites, order, site)));
    Some(Cut { pred, succ, new_entry })
}

/// What moving a slow po towards the tail of one stripe changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Moved {
    /// Its old neighbours, now linked (`chain::cut_out`'s answer).
    pub pred: Option<u32>,
    pub succ: Option<u32>,
    /// Its new predecessor, and its new successor (`None`: it is the stripe's tail).
    pub before: Option<u32>,
    pub after: Option<u32>,
}

/// Where slow po `p` goes in a stripe's `order` so that it only consumes: to the end of its
/// site's run of pos, which is the stripe's tail when its site is last. A po of a remote site
/// is never taken past its site's run: from the tail it would get every block from outside
/// its site, a second crossing into the site, and those bytes are what sites save; so a slow
/// po holds up the sites after its own in this stripe (the plan rotates which site is last,
/// and [`stripes`] puts sites with slow pos last). A po of the master's site (and every po
/// without labels, which is exactly `chain::stripes`' move) goes to the stripe's tail, as in
/// [`stripes`]: no remote site waits on it, and what comes back into the master's site is
/// not a remote site's bytes. `None`: it is there already, or not in the stripe.
pub fn to_segment_tail(sites: &Sites, order: &mut Vec<u32>, p: u32) -> Option<Moved> {
    let at = order.iter().position(|&q| q == p)?;
    let site = sites.site(p);
    let end = match site {
        0 => order.len(),
        _ => at + order[at..].iter().take_while(|&&q| sites.site(q) == site).count(),
    };
    if end == at + 1 {
        return None;
    }
    let (pred, succ) = chain::cut_out(order, p)?;
    order.insert(end - 1, p);
    let before = Some(order[end - 2]);
    let after = order.get(end).copied();
    Some(Moved { pred, succ, before, after })
}

/// The pos after `p` in its stripe up to where [`to_segment_tail`] would put it.
pub fn behind_in_segment<'a>(sites: &'a Sites, order: &'a [u32], p: u32) -> impl Iterator<Item = u32> + 'a {
    let site = sites.site(p);
    let rest = order.iter().copied().skip_while(move |&q| q != p).skip(1);
    rest.take_while(move |&q| site == 0 || sites.site(q) == site)
}

/// The repair rule: may `from` (`None`: the master) send a block to po `to`? From the
/// receiver's own site always (the master counts as a member of site 0). From another site
/// only while `site_has()` is false, that is while no po of the receiver's site that could
/// pass it on holds the block or is about to (a transfer to it under way): so the master's
/// uplink, or another site's po, sends into a site only what the site cannot get from inside.
/// `site_has` is asked only for a send across sites.
pub fn may_send(sites: &Sites, from: Option<u32>, to: u32, site_has: impl FnOnce() -> bool) -> bool {
    sites.of_sender(from) == sites.site(to) || !site_has()
}

/// The preferred source among `candidates` (`None` in the list: the master) for a block to
/// po `to`: a po of the receiver's site, then the master if it is in that site, then (only
/// when [`may_send`] allows a send across sites) a po of another site, and last the master
/// from another site, which keeps the master's uplink for what nobody else can send. Within a
/// rank, the first candidate. `None`: nobody may send it now.
pub fn prefer(sites: &Sites, to: u32, candidates: &[Option<u32>], site_has: bool) -> Option<Option<u32>> {
    let rank = |c: &Option<u32>| {
        let same = sites.of_sender(*c) == sites.site(to);
        match (same, c.is_some()) {
            (true, true) => 0,
            (true, false) => 1,
            (false, true) => 2,
            (false, false) => 3,
        }
    };
    candidates.iter().filter(|c| may_send(sites, **c, to, || site_has)).min_by_key(|c| rank(c)).copied()
}

/// One site link's bytes, by name: what the summary, `wugui-stat` and `/metrics` show.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SiteLink {
    pub from: String,
    pub to: String,
    pub bytes: u64,
}

/// Bytes that landed per site link (sender's site → receiver's site), counted once per block
/// a po holds for the first time, from the sender the master had assigned it. The one counter
/// of site bytes: the master fills it, the summary, the CAC's report and `/metrics` read it.
#[derive(Debug, Clone)]
pub struct SiteBytes {
    sites: Sites,
    /// `(count + 1) × count`: row `count` is the unknown sender.
    bytes: Vec<u64>,
}

impl SiteBytes {
    pub fn new(sites: Sites) -> SiteBytes {
        let n = sites.count();
        SiteBytes { sites, bytes: vec![0; (n + 1) * n] }
    }

    pub fn sites(&self) -> &Sites {
        &self.sites
    }

    /// `bytes` of a block landed on po `to`, sent by `from` (`None`: the master; `Err(())`: no
    /// known sender).
    pub fn add(&mut self, from: Result<Option<u32>, ()>, to: u32, bytes: u64) {
        let n = self.sites.count();
        let row = from.map_or(n, |f| self.sites.of_sender(f) as usize);
        let cell = &mut self.bytes[row * n + self.sites.site(to) as usize];
        *cell = cell.saturating_add(bytes);
    }

    /// Every link that carried bytes, senders in site order then the unknown one.
    pub fn links(&self) -> Vec<SiteLink> {
        let n = self.sites.count();
        let name = |r: usize| if r == n { UNKNOWN } else { self.sites.name(r as u16) };
        (0..=n)
            .flat_map(|r| (0..n).map(move |c| (r, c)))
            .filter(|&(r, c)| self.bytes[r * n + c] > 0)
            .map(|(r, c)| SiteLink { from: name(r).into(), to: name(c).into(), bytes: self.bytes[r * n + c] })
            .collect()
    }
}

/// Site link counters summed over transfers, as a CAC keeps them from its masters' reports
/// for `/metrics`. Each report carries a transfer's totals so far; a link counts what it grew
/// by since that transfer's last report, never less than before (`merge`).
#[derive(Debug, Clone, Default)]
pub struct SiteTotals {
    links: std::collections::BTreeMap<(String, String), u64>,
}

/// Distinct links a CAC counts: the rest are dropped (only a class's own labels are taken).
pub const MAX_TOTALS: usize = 4096;

impl SiteTotals {
    /// A transfer reported `new` after `old`: `new` becomes at least `old` link by link (a
    /// report cannot take bytes back, so none are counted twice), and what grew is added.
    /// Only links between names `known` accepts are kept.
    pub fn merge(&mut self, old: &[SiteLink], new: &mut Vec<SiteLink>, known: impl Fn(&str) -> bool) {
        new.retain(|l| known(&l.from) && known(&l.to));
        new.truncate(MAX_SITES * (MAX_SITES + 1));
        for o in old {
            match new.iter_mut().find(|l| l.from == o.from && l.to == o.to) {
                Some(l) => l.bytes = l.bytes.max(o.bytes),
                None => new.push(o.clone()),
            }
        }
        for l in new.iter() {
            let before = old.iter().find(|o| o.from == l.from && o.to == l.to).map_or(0, |o| o.bytes);
            let grew = l.bytes.saturating_sub(before);
            let key = (l.from.clone(), l.to.clone());
            if grew > 0 && (self.links.len() < MAX_TOTALS || self.links.contains_key(&key)) {
                let c = self.links.entry(key).or_default();
                *c = c.saturating_add(grew);
            }
        }
    }

    pub fn links(&self) -> Vec<SiteLink> {
        self.links.iter().map(|((from, to), b)| SiteLink { from: from.clone(), to: to.clone(), bytes: *b }).collect()
    }
}

/// Bytes that entered each remote site from outside it, by site name, in site order (sites
/// that received nothing included): the figure the issue judges, `≤ 1.05 × S` a site.
pub fn entered(sites: &Sites, links: &[SiteLink]) -> Vec<(String, u64)> {
    (1..sites.count() as u16)
        .map(|s| {
            let name = sites.name(s);
            let b = links.iter().filter(|l| l.to == name && l.from != name).map(|l| l.bytes).sum();
            (name.to_owned(), b)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// `per` pos in each of `labels`, in blocks (pos 0..per in the first, ...).
    fn blocks(labels: &[&str], per: usize) -> Sites {
        let l: Vec<&str> = labels.iter().flat_map(|l| std::iter::repeat_n(*l, per)).collect();
        Sites::from_labels(&l).unwrap()
    }

    /// The sites of `order`, one entry a run of pos of the same site.
    fn runs(s: &Sites, order: &[u32]) -> Vec<u16> {
        let mut r: Vec<u16> = order.iter().map(|&p| s.site(p)).collect();
        r.dedup();
        r
    }

    #[test]
    fn labels_are_checked() {
        for good in ["bj", "sh-2", "dc_1.eu", &"x".repeat(MAX_LABEL)] {
            assert_eq!(check_label(good), Ok(()), "{good}");
        }
        for bad in ["", "a b", "bj/1", "é", "a@b", &"x".repeat(MAX_LABEL + 1), "master", "unknown"] {
            assert!(check_label(bad).is_err(), "{bad:?}");
        }
        let s = Sites::from_labels(&["", "bj", "sh", "bj", ""]).unwrap();
        assert_eq!((s.count(), s.site(0), s.site(1), s.site(2), s.site(3), s.site(4)), (3, 0, 1, 2, 1, 0));
        assert_eq!((s.name(0), s.name(1), s.name(2)), ("master", "bj", "sh"));
        assert!(s.labelled() && !Sites::from_labels(&["", ""]).unwrap().labelled());
        assert!(Sites::from_labels(&["b j"]).is_err());
        let many: Vec<String> = (0..MAX_SITES).map(|i| format!("s{i}")).collect();
        assert!(Sites::from_labels(&many[..MAX_SITES - 1]).is_ok());
        assert!(Sites::from_labels(&many).unwrap_err().contains("more than"));
    }

    #[test]
    fn each_stripe_visits_each_site_once_and_every_po_once() {
        let cases: Vec<(Sites, usize, Vec<u32>)> = vec![
            (blocks(&["bj", "sh"], 8), 2, vec![]),
            (blocks(&["a", "b", "c", "d"], 4), 4, vec![]),
            (blocks(&["", "b", "c"], 3), 3, vec![4]),
            (Sites::from_labels(&["b", "", "c", "b", "", "c", "c"]).unwrap(), 2, vec![6, 0]),
            (blocks(&["", "bj", "sh"], 3), 3, vec![1, 4]),
            (Sites::from_labels(&["", "bj", "bj"]).unwrap(), 2, vec![0]),
            (blocks(&["x", "y"], 1), 4, vec![0, 1]),
        ];
        for (s, k, slow) in cases {
            let plan = stripes(&s, k, &slow);
            assert_eq!(plan.len(), k);
            for order in &plan {
                let mut sorted = order.clone();
                sorted.sort();
                assert_eq!(sorted, (0..s.pos() as u32).collect::<Vec<_>>(), "{plan:?}");
                let fast: Vec<u32> = order.iter().copied().filter(|p| s.site(*p) != 0 || !slow.contains(p)).collect();
                let r = runs(&s, &fast);
                assert_eq!(r.iter().collect::<BTreeSet<_>>().len(), r.len(), "a site visited twice: {order:?}");
                if fast.iter().any(|&p| s.site(p) == 0) {
                    assert_eq!(r[0], 0, "the master's site first: {order:?}");
                }
                // A remote site's slow pos are the last of its run; the master's site's slow pos
                // are the stripe's tail (the only run that may come back).
                for &p in &slow {
                    let at = order.iter().position(|&q| q == p).unwrap();
                    let rest = &order[at + 1..];
                    match s.site(p) {
                        0 => assert!(rest.iter().all(|q| slow.contains(q) && s.site(*q) == 0), "{order:?}"),
                        site => assert!(rest.iter().take_while(|&&q| s.site(q) == site).all(|q| slow.contains(q))),
                    }
                }
            }
        }
    }

    #[test]
    fn a_slow_po_moves_to_its_sites_end_and_a_master_site_po_to_the_tail() {
        let s = Sites::from_labels(&["", "", "bj", "bj", "bj", "sh", "sh"]).unwrap();
        let mut o = vec![0, 1, 2, 3, 4, 5, 6];
        let m = to_segment_tail(&s, &mut o, 2).unwrap();
        assert_eq!(o, [0, 1, 3, 4, 2, 5, 6]);
        assert_eq!(m, Moved { pred: Some(1), succ: Some(3), before: Some(4), after: Some(5) });
        assert_eq!(runs(&s, &o), [0, 1, 2], "bj is entered once still");
        assert_eq!(to_segment_tail(&s, &mut o, 2), None, "at its site's end already");
        assert_eq!(behind_in_segment(&s, &o, 3).collect::<Vec<_>>(), [4, 2]);
        let m = to_segment_tail(&s, &mut o, 0).unwrap();
        assert_eq!((o.last(), m.before, m.after), (Some(&0), Some(6), None));
        assert_eq!(to_segment_tail(&s, &mut o, 6), None);
        // Without labels: chain::stripes' move to the tail.
        let one = Sites::one(4);
        let mut o = vec![0, 1, 2, 3];
        to_segment_tail(&one, &mut o, 1).unwrap();
        assert_eq!(o, [0, 2, 3, 1]);
    }

    #[test]
    fn stripes_rotate_entries_tails_and_site_order() {
        let s = blocks(&["a", "b", "c", "d"], 4);
        let plan = stripes(&s, 4, &[]);
        let heads: BTreeSet<u32> = plan.iter().map(|o| o[0]).collect();
        let tails: BTreeSet<u32> = plan.iter().map(|o| o[15]).collect();
        let first_sites: BTreeSet<u16> = plan.iter().map(|o| runs(&s, o)[0]).collect();
        assert_eq!((heads.len(), tails.len(), first_sites.len()), (4, 4, 4), "{plan:?}");
        // Each site's entry differs between stripes.
        for site in 1..=4 {
            let entries: BTreeSet<u32> = plan.iter().map(|o| entry_po(&s, o, site).unwrap()).collect();
            assert_eq!(entries.len(), 4, "site {site}: {plan:?}");
        }
        // One site holding a slow po goes last: the slow po is every stripe's tail.
        let plan = stripes(&blocks(&["bj", "sh"], 8), 2, &[3]);
        assert!(plan.iter().all(|o| o[15] == 3), "{plan:?}");
        // A slow po beside the master: the tail too, after the remote sites.
        let s = blocks(&["", "bj"], 4);
        let plan = stripes(&s, 2, &[1]);
        assert!(plan.iter().all(|o| o[7] == 1 && runs(&s, o) == [0, 1, 0]), "{plan:?}");
    }

    #[test]
    fn unlabelled_pos_plan_as_chain_stripes() {
        for (n, k, slow) in [(8usize, 2usize, vec![]), (16, 3, vec![5, 1]), (3, 4, vec![0])] {
            let s = Sites::from_labels(&vec![""; n]).unwrap();
            assert_eq!(stripes(&s, k, &slow), chain::stripes(n as u32, k, &slow));
            assert_eq!(stripes(&Sites::one(n), k, &slow), chain::stripes(n as u32, k, &slow));
        }
    }

    #[test]
    fn a_dead_entry_hands_its_site_to_the_next_po() {
        let s = blocks(&["", "bj", "sh"], 2); // 0,1 master's; 2,3 bj; 4,5 sh
        let mut o = vec![0, 1, 2, 3, 4, 5];
        assert_eq!(entry_po(&s, &o, 1), Some(2));
        let c = cut_out(&s, &mut o, 2).unwrap();
        assert_eq!(c, Cut { pred: Some(1), succ: Some(3), new_entry: Some((1, Some(3))) });
        assert_eq!(entry_po(&s, &o, 1), Some(3));
        // Not an entry: only the relink.
        assert_eq!(cut_out(&s, &mut o, 5).unwrap(), Cut { pred: Some(4), succ: None, new_entry: None });
        // A site's last po: the site before now feeds the one after.
        let c = cut_out(&s, &mut o, 3).unwrap();
        assert_eq!(c, Cut { pred: Some(1), succ: Some(4), new_entry: Some((1, None)) });
        // The head of the whole stripe: the master feeds the next.
        assert_eq!(cut_out(&s, &mut o, 0).unwrap().pred, None);
        assert_eq!(cut_out(&s, &mut o, 9), None);
        assert_eq!(o, [1, 4]);
    }

    #[test]
    fn repair_prefers_the_site_and_spares_the_master() {
        let s = blocks(&["", "bj"], 2); // 0,1 with the master; 2,3 bj
                                        // Inside the site: always; across: only while the site lacks the block.
        assert!(may_send(&s, Some(3), 2, || true));
        assert!(may_send(&s, None, 1, || panic!("not asked for a send inside the site")));
        assert!(!may_send(&s, Some(0), 2, || true));
        assert!(!may_send(&s, None, 2, || true));
        assert!(may_send(&s, None, 2, || false));
        let all = [None, Some(0), Some(3)];
        assert_eq!(prefer(&s, 2, &all, true), Some(Some(3)));
        assert_eq!(prefer(&s, 2, &all, false), Some(Some(3)));
        assert_eq!(prefer(&s, 2, &[None, Some(0)], false), Some(Some(0)), "a po before the master");
        assert_eq!(prefer(&s, 2, &[None], false), Some(None));
        assert_eq!(prefer(&s, 2, &[None, Some(1)], true), None, "the site holds it: wait for it");
        assert_eq!(prefer(&s, 1, &[None, Some(3)], true), Some(None), "the master is in site 0");
        assert_eq!(prefer(&s, 1, &[Some(3), Some(0)], true), Some(Some(0)));
    }

    #[test]
    fn totals_add_what_each_report_grew_by_and_no_more() {
        let l = |from: &str, to: &str, bytes| SiteLink { from: from.into(), to: to.into(), bytes };
        let known = |n: &str| ["master", "bj", "unknown"].contains(&n);
        let mut t = SiteTotals::default();
        let mut r1 = vec![l("master", "bj", 100), l("evil", "bj", 5)];
        t.merge(&[], &mut r1, known);
        assert_eq!(r1, [l("master", "bj", 100)], "only the class's names");
        // Less than before, then more: the counter never counts a byte twice.
        let mut r2 = vec![l("master", "bj", 40), l("bj", "bj", 10)];
        t.merge(&r1, &mut r2, known);
        assert_eq!(r2, [l("master", "bj", 100), l("bj", "bj", 10)]);
        let mut r3 = vec![l("master", "bj", 150), l("bj", "bj", 10)];
        t.merge(&r2, &mut r3, known);
        // Another transfer adds to the same links.
        let mut other = vec![l("master", "bj", 1)];
        t.merge(&[], &mut other, known);
        assert_eq!(t.links(), [l("bj", "bj", 10), l("master", "bj", 151)]);
    }

    #[test]
    fn bytes_are_counted_per_site_link() {
        let s = Sites::from_labels(&["", "bj", "bj", "sh"]).unwrap();
        let mut b = SiteBytes::new(s.clone());
        b.add(Ok(None), 1, 100);
        b.add(Ok(Some(1)), 2, 100);
        b.add(Ok(Some(2)), 3, 100);
        b.add(Ok(Some(0)), 3, 10);
        b.add(Err(()), 0, 7);
        let links = b.links();
        let show: Vec<String> = links.iter().map(|l| format!("{}>{}={}", l.from, l.to, l.bytes)).collect();
        assert_eq!(show, ["master>bj=100", "master>sh=10", "bj>bj=100", "bj>sh=100", "unknown>master=7"]);
        assert_eq!(entered(&s, &links), [("bj".to_string(), 100), ("sh".to_string(), 110)]);
    }
}
