//! Whole transfers on the simulated network: a master, two CAC replicas and many pos, with
//! faults injected on the way.

use super::*;

#[test]
fn one_to_n_delivers_identical_trees() {
    let mut w = world(Setup::default());
    let o = w.run();
    assert!(matches!(o.result, TransferResult::Ok(_)), "{o:?}");
    assert_eq!(tally(&o), ("ok", 5, 5), "{o:?}");
    for i in 0..5 {
        assert_eq!(w.published(i).as_ref(), Some(&w.tree), "po {i}");
    }
    // every block went to every po exactly once, except those wholly in holes
    let (m, _, _) = sample_tree(4096);
    let holes = (0..m.blocks()).filter(|&i| m.is_hole(&m.block(i).unwrap())).count() as u64;
    assert!(holes >= 8, "{holes} hole blocks");
    assert_eq!(w.net.block_frames, (m.blocks() - holes) * 5);
}

#[test]
fn every_verify_mode_and_publish_each() {
    for (verify, publish) in [("none", "each"), ("crc32", "together"), ("md5", "each")] {
        let mut s = Setup::default();
        s.class.set("verify", verify).unwrap();
        s.class.set("publish", publish).unwrap();
        s.class.set("flag_file", "data.done").unwrap();
        let mut w = world(s);
        let o = w.run();
        assert!(matches!(o.result, TransferResult::Ok(_)), "{verify} {publish}: {o:?}");
        let mut want = w.tree.clone();
        want.insert("data.done".into(), "flag".into());
        for i in 0..5 {
            assert_eq!(w.published(i), Some(want.clone()));
        }
    }
}

#[test]
fn unknown_class_and_foreign_master_are_denied() {
    let mut w = world(Setup { class_name: "nope", ..Default::default() });
    let o = w.run();
    assert!(refusal(&o).contains("unknown_class"), "{o:?}");
    let mut w = world(Setup { masters: vec![Cidr::parse("192.168.0.0/16").unwrap()], ..Default::default() });
    let o = w.run();
    assert!(matches!(o.result, TransferResult::Denied(_)), "{o:?}");
    assert_eq!(tally(&o).0, "denied");
    assert!(w.published(0).is_none());
}

#[test]
fn master_and_pos_fail_over_to_the_next_cac() {
    // The first CAC refuses connections for the master and swallows them for the pos.
    let mut s = Setup { cacs_for_master: vec!["10.0.0.9:7100", "10.0.0.3:7100"], ..Default::default() };
    s.cacs_for_po = vec!["10.0.0.8:7100", "10.0.0.3:7100"];
    let mut w = world(s);
    w.net.blackholed.insert("10.0.0.8:7100".parse().unwrap());
    let o = w.run();
    assert!(matches!(o.result, TransferResult::Ok(_)), "{o:?}");
    assert_eq!(w.published(4), Some(w.tree.clone()));
    let mut w = world(Setup { cacs_for_master: vec!["10.0.0.9:7100"], ..Default::default() });
    let o = w.run();
    assert!(refusal(&o).contains("no CAC reachable"), "{o:?}");
}

#[test]
fn a_failing_disk_fails_one_po_and_keeps_its_old_files() {
    let mut w = world(Setup::default());
    let dest = w.dest.clone();
    let old: Tree = [("old.txt".to_string(), "file 644 x".to_string())].into();
    w.store(2).published.insert(dest, old.clone());
    w.store(2).fail_writes = true;
    let o = w.run();
    assert_eq!(tally(&o), ("partial", 4, 5), "{o:?}");
    let f = failures(&o);
    assert_eq!(f.len(), 1);
    assert!(f[0].starts_with("10.0.1.3:7200: ") && f[0].contains("No space left"), "{f:?}");
    assert_eq!(w.published(2), Some(old));
    assert_eq!(w.published(0), Some(w.tree.clone()));
}

#[test]
fn a_po_that_dies_is_reported_and_the_rest_complete() {
    let mut w = world(Setup::default());
    let victim = w.pos[1];
    let mut seen = 0;
    w.net.tamper = Some(Box::new(move |_, to, m| {
        if to == victim && matches!(m, Msg::Block { .. }) {
            seen += 1;
        }
        seen != 3
    }));
    // Run until the victim has had some blocks, then kill it.
    for _ in 0..2000 {
        w.net.drive_steps(1);
    }
    w.net.kill(victim);
    let o = w.run();
    assert!(matches!(o.result, TransferResult::Partial(_)), "{o:?}");
    assert!(failures(&o)[0].contains("10.0.1.2:7200"), "{:?}", failures(&o));
    for i in [0, 2, 3, 4] {
        assert_eq!(w.published(i), Some(w.tree.clone()));
    }
}

#[test]
fn corrupted_blocks_are_caught_by_the_checksum() {
    for verify in ["crc32", "md5"] {
        let mut s = Setup::default();
        s.class.set("verify", verify).unwrap();
        let mut w = world(s);
        let victim = w.pos[0];
        w.net.tamper = Some(Box::new(move |_, to, m| {
            if let (true, Msg::Block { data, .. }) = (to == victim, m) {
                let at = data.start + 7 % data.len();
                data.buf[at] ^= 0x10;
            }
            true
        }));
        let o = w.run();
        assert!(matches!(o.result, TransferResult::Partial(_)), "{o:?}");
        assert!(failures(&o)[0].contains(&format!("failed its {verify} check")), "{:?}", failures(&o));
        assert_eq!(w.published(0), None);
    }
}

#[test]
fn a_tampered_token_is_refused_and_nothing_is_staged() {
    let mut w = world(Setup::default());
    w.net.tamper = Some(Box::new(|_, _, m| {
        if let Msg::Offer { token, .. } = m {
            let n = token.len();
            token[n - 1] ^= 1;
        }
        true
    }));
    let o = w.run();
    assert!(matches!(o.result, TransferResult::Failed(_)), "{o:?}");
    assert_eq!(failures(&o).len(), 5);
    assert!(failures(&o)[0].contains("bad_token"), "{:?}", failures(&o));
    for i in 0..5 {
        assert!(w.store(i).staged.is_empty());
    }
}

/// Po `i` accepts but never receives its blocks.
fn starve(w: &mut World, i: usize) {
    let stalled = w.pos[i];
    w.net.tamper = Some(Box::new(move |_, to, m| !(to == stalled && matches!(m, Msg::Block { .. }))));
}

#[test]
fn quorum_commits_at_the_timeout_without_a_stalled_po() {
    let mut s = Setup::default();
    s.class.set("quorum", "3").unwrap();
    s.class.set("timeout", "60").unwrap();
    let mut w = world(s);
    starve(&mut w, 4);
    let o = w.run();
    assert!(matches!(o.result, TransferResult::Partial(_)), "{o:?}");
    assert!(failures(&o)[0].contains("timeout"), "{:?}", failures(&o));
    assert_eq!(w.published(0), Some(w.tree.clone()));
    assert_eq!(w.published(4), None);
    // without quorum, nobody publishes: all or nothing
    let mut s = Setup::default();
    s.class.set("timeout", "60").unwrap();
    let mut w = world(s);
    starve(&mut w, 4);
    let o = w.run();
    assert!(matches!(o.result, TransferResult::Failed(_)), "{o:?}");
    for i in 0..5 {
        assert_eq!(w.published(i), None);
    }
}

fn p2p_setup(pos: usize) -> Setup {
    let mut s = Setup { pos, ..Default::default() };
    s.class.set("p2p", "on").unwrap();
    s.class.set("verify", "crc32").unwrap();
    s
}

#[test]
fn p2p_delivers_identical_trees_and_the_master_sends_each_block_about_once() {
    for (n, publish) in [(1, "together"), (4, "each"), (8, "together"), (12, "each")] {
        let mut s = p2p_setup(n);
        s.class.set("publish", publish).unwrap();
        let mut w = world(s);
        let o = w.run();
        assert!(matches!(o.result, TransferResult::Ok(_)), "n={n}: {o:?}");
        for i in 0..n {
            assert_eq!(w.published(i).as_ref(), Some(&w.tree), "n={n} po {i}");
        }
        let (m, _, _) = sample_tree(4096);
        let data = (0..m.blocks()).filter(|&i| !m.is_hole(&m.block(i).unwrap())).count() as u64;
        let from_master = w.net.blocks_from.get(&w.master).copied().unwrap_or(0);
        let total = w.net.block_frames;
        // The simulated network is instant, so the master end-game is generous; a direct push
        // would send n copies. The lab measures src_copies under real bandwidth.
        assert!(from_master <= m.blocks() * 2, "n={n}: master sent {from_master} of {} blocks", m.blocks());
        assert!(total >= data * n as u64, "n={n}: {total} block frames");
    }
}

/// In a chain transfer every po is told a block's checksum before any po can receive the
/// block (a chain forwards it without the master), and the checksums hashed ahead go out in a
/// few large SUMS, not a few per scheduling pass.
#[test]
fn checksums_reach_every_po_before_the_block_and_in_few_frames() {
    use std::cell::RefCell;
    use std::rc::Rc;
    let mut s = p2p_setup(4);
    s.file_blocks = 1024;
    s.hash_ahead = true;
    let mut w = world(s);
    let pos: Vec<usize> = w.pos.clone();
    let nb = 1024;
    // Per po: told its peers (then it must have every checksum of a block in flight), the
    // blocks whose checksums it was sent, and its SUMS frames.
    type Seen = (HashSet<usize>, HashMap<usize, HashSet<u64>>, HashMap<usize, u64>, u64);
    let seen: Rc<RefCell<Seen>> = Rc::default();
    let log = seen.clone();
    let master = w.master;
    w.net.tamper = Some(Box::new(move |from, to, msg| {
        let (peered, told, frames, checked) = &mut *log.borrow_mut();
        let block = match msg {
            Msg::Peers { .. } if from == master => {
                peered.insert(to);
                None
            }
            Msg::Sums { sums, .. } if from == master => {
                told.entry(to).or_default().extend(sums.iter().map(|s| s.0));
                *frames.entry(to).or_default() += 1;
                None
            }
            Msg::Block { head, .. } => Some(head.index),
            Msg::Push { block, .. } => Some(*block),
            _ => None,
        };
        if let Some(b) = block {
            for p in peered.iter() {
                assert!(
                    told.get(p).is_some_and(|t| t.contains(&b)),
                    "block {b} in flight before po {p} has its checksum"
                );
            }
            *checked += 1;
        }
        true
    }));
    let o = w.run();
    assert!(matches!(o.result, TransferResult::Ok(_)), "{o:?}");
    let (peered, _, frames, checked) = &*seen.borrow();
    assert_eq!(peered.len(), pos.len(), "every po was told its peers");
    assert!(*checked >= nb, "{checked} blocks checked");
    for p in &pos {
        let n = frames.get(p).copied().unwrap_or(0);
        assert!(n >= 1 && n <= nb / 16, "po {p}: {n} SUMS frames for {nb} blocks");
    }
}

/// The master keeps about 2 MiB queued to a chain's head and sends the next block on the
/// head's HAVE: with blocks of 256 KiB (8 queued) a head that held those HAVEs back for company
/// (`po::chain::HAVE_DELAY`) fed every chain 8 blocks a wait. The simulated network is
/// instant, so the transfer takes no simulated time unless something waits for a timer.
#[test]
fn a_chains_head_is_fed_without_waiting_for_haves_to_have_company() {
    let mut s = p2p_setup(4);
    s.class.set("block_size", "256K").unwrap();
    s.file_blocks = 64;
    let mut w = world(s);
    let start = w.net.now;
    let o = w.run();
    assert!(matches!(o.result, TransferResult::Ok(_)), "{:?}", failures(&o));
    for i in 0..4 {
        assert!(w.published(i).as_ref() == Some(&w.tree), "po {i}");
    }
    let took = w.net.now - start;
    assert!(took < Duration::from_millis(20), "{took:?} of simulated time");
}

#[test]
fn p2p_routes_around_a_dead_po() {
    let mut w = world(p2p_setup(8));
    let victim = w.pos[5];
    for _ in 0..600 {
        w.net.drive_steps(1);
    }
    w.net.kill(victim);
    let o = w.run();
    assert!(matches!(o.result, TransferResult::Partial(_)), "{o:?}");
    assert!(failures(&o).iter().any(|l| l.contains("10.0.1.6:7200")), "{:?}", failures(&o));
    for i in [0, 1, 2, 3, 4, 6, 7] {
        assert_eq!(w.published(i), Some(w.tree.clone()), "po {i}");
    }
}

#[test]
fn p2p_a_peer_serving_corrupt_blocks_is_caught_and_avoided() {
    a_liar_is_caught("off", 6, 2, 3 + 3 * 2);
    // In a chain (three pos: the tree has 8 blocks a po) the liar in the middle forwards what it
    // gets, unasked, until the master's word that it forwards nothing reaches it: at most what
    // the master queued to the head meanwhile.
    a_liar_is_caught("on", 3, 1, 3 + 64);
}

/// Po `liar` of `pos` corrupts every block it serves: `MAX_FAULTS` exclude it, and at most
/// `bound` corrupt frames leave it.
fn a_liar_is_caught(chains: &str, pos: usize, liar: usize, bound: u32) {
    let mut s = p2p_setup(pos);
    s.class.set("chains", chains).unwrap();
    let mut w = world(s);
    let liar = w.pos[liar];
    let corrupted = std::rc::Rc::new(std::cell::Cell::new(0u32));
    let c2 = corrupted.clone();
    w.net.tamper = Some(Box::new(move |from, _, m| {
        if let (true, Msg::Block { data, .. }) = (from == liar, m) {
            let at = data.start + 3 % data.len();
            data.buf[at] ^= 0x55;
            c2.set(c2.get() + 1);
        }
        true
    }));
    let o = w.run();
    assert!(matches!(o.result, TransferResult::Ok(_)), "{o:?}");
    assert!(corrupted.get() > 0, "the liar never served anything");
    // MAX_FAULTS, plus what its links had queued when it was excluded (3 links, 2 deep).
    assert!(corrupted.get() <= bound, "chains={chains}: the liar kept serving: {}", corrupted.get());
    for i in 0..pos {
        assert_eq!(w.published(i), Some(w.tree.clone()), "po {i}");
    }
    let planned = w.net.by_type.get("Chain").is_some_and(|n| *n > 0);
    assert_eq!(planned, chains == "on", "chains={chains}: {:?}", w.net.by_type);
}

#[test]
fn p2p_without_verification_still_delivers() {
    let mut s = p2p_setup(5);
    s.class.set("verify", "none").unwrap();
    let mut w = world(s);
    assert!(matches!(w.run().result, TransferResult::Ok(_)));
    for i in 0..5 {
        assert_eq!(w.published(i), Some(w.tree.clone()));
    }
}

#[test]
fn every_machine_counts_its_own_stats() {
    let mut w = world(Setup::default());
    let victim = w.pos[0];
    let mut corrupted = false;
    // One corrupted block for po 0 (crc32 catches it; it fails that po).
    w.net.tamper = Some(Box::new(move |_, to, m| {
        if let (false, true, Msg::Block { data, .. }) = (corrupted, to == victim, m) {
            data.buf[data.start] ^= 0x10;
            corrupted = true;
        }
        true
    }));
    w.run();
    let (m, _, _) = sample_tree(4096);
    let data: Vec<_> = (0..m.blocks()).map(|i| m.block(i).unwrap()).filter(|b| !m.is_hole(b)).collect();
    let data_bytes: u64 = data.iter().map(|b| b.len as u64).sum();
    let stats = |w: &mut World, node: usize| w.net.nodes[node].1.m().stats();
    for i in 1..5 {
        let po = w.pos[i];
        let s = stats(&mut w, po);
        assert_eq!(s.blocks_received, data.len() as u64, "po {i}: {s:?}");
        assert_eq!(s.bytes_received, data_bytes, "po {i}");
        assert_eq!((s.transfers_published, s.transfers_active, s.verify_failures), (1, 0, 0), "po {i}: {s:?}");
    }
    let s = stats(&mut w, victim);
    assert_eq!((s.verify_failures, s.transfers_failed, s.transfers_published), (1, 1, 0), "{s:?}");
    assert_eq!(s.transfers_active, 0, "{s:?}");
    let at = w.master;
    let master = stats(&mut w, at);
    assert_eq!(master.blocks_sent, w.net.block_frames, "{master:?}");
    // The first CAC answered the master and the pos; the second saw nothing.
    let cac = stats(&mut w, 0);
    assert_eq!((cac.auth_granted, cac.tokens_verified, cac.auth_denied), (1, 5, 0), "{cac:?}");
    assert_eq!(stats(&mut w, 1), Stats::default());
}

/// Which pos committed by holding the tree already, and the hooks that ran.
fn unchanged_and_hooks(o: &Outcome) -> (Vec<bool>, Vec<Option<(i32, String)>>) {
    let TransferResult::Ok(r) = &o.result else { panic!("{o:?}") };
    (r.pos.iter().map(|p| p.unchanged).collect(), r.pos.iter().map(|p| p.hook.clone()).collect())
}

#[test]
fn a_second_identical_push_changes_nothing_and_says_so() {
    for (hook_on_unchanged, publish) in [("off", "together"), ("on", "each")] {
        let mut s = Setup::default();
        s.class.set("hook", "reindex").unwrap();
        s.class.set("flag_file", "data.done").unwrap();
        s.class.set("publish", publish).unwrap();
        s.class.set("hook_on_unchanged", hook_on_unchanged).unwrap();
        let mut w = world(s);
        let o = w.run();
        let (same, hooks) = unchanged_and_hooks(&o);
        assert!(same.iter().all(|u| !u) && hooks.iter().all(|h| h.is_some()), "{o:?}");
        let trees: Vec<Option<Tree>> = (0..5).map(|i| w.published(i)).collect();
        let blocks = w.net.block_frames;
        // Again: no block travels, no po writes, every po commits saying so.
        let o = w.push_again();
        assert_eq!(tally(&o), ("ok", 5, 5), "{o:?}");
        assert_eq!(w.net.block_frames, blocks);
        let (same, hooks) = unchanged_and_hooks(&o);
        assert_eq!(same, [true; 5]);
        let ran = hooks.iter().filter(|h| h.as_ref().is_some_and(|(c, t)| *c == 0 && t == "ran reindex")).count();
        assert_eq!(ran, if hook_on_unchanged == "on" { 5 } else { 0 }, "{hooks:?}");
        for (i, tree) in trees.iter().enumerate() {
            assert_eq!(&w.published(i), tree);
            assert_eq!(w.store(i).moved, 1, "po {i} wrote into its dest again");
        }
    }
}
