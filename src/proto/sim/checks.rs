//! Block checks off the loop, as the po sees them: a block counts only once its verdict is
//! good, verdicts may come in any order, and a verdict for a transfer that is gone (aborted,
//! failed, expired, replaced) changes nothing.

use super::super::*;
use super::po::{admit_po1, forged, have, in_swarm, offered, receiving, M, T};
use super::probe::*;
use super::{class_pairs, MemSource};
use std::time::Duration;

/// The blocks of `acts` sent to the master as HAVE, READY or BAD, in order.
fn told(acts: &[Action]) -> Vec<Msg> {
    sent_on(acts, M).into_iter().cloned().collect()
}

#[test]
fn verdicts_in_any_order_count_each_block_once_it_is_good() {
    let (mut p, mut src) = receiving(4, &[("verify", "md5")]);
    p.hold_checks = true;
    for i in 0..4 {
        assert!(p.frame(M, src.frame(T, i, Verify::Md5)).is_empty(), "no HAVE before the check of {i}");
    }
    assert_eq!(p.checks.len(), 4);
    assert!(p.m.store().staged[&T].2.is_empty(), "nothing is staged before its check");
    let Msg::StatReply { transfers } = only(&p.frame(M, Msg::StatQuery), M) else { panic!() };
    assert_eq!((transfers[0].state.as_str(), transfers[0].done), ("receiving", 0));
    // The same block again while its check is out: not checked twice.
    assert!(p.frame(M, src.frame(T, 2, Verify::Md5)).is_empty());
    assert_eq!(p.checks.len(), 4);
    // Last first.
    let mut checks = std::mem::take(&mut p.checks);
    for (n, c) in checks.drain(..).rev().enumerate() {
        let block = c.id - 1; // ids count from 1, in the order blocks came
        let acts = p.event(c.run());
        let mut want = vec![have(3 - n as u64)];
        if n == 3 {
            want.push(Msg::Ready { transfer: T });
        }
        assert_eq!(told(&acts), want, "block {block}");
    }
    let s = p.stats();
    assert_eq!((s.blocks_received, s.verify_failures), (4, 0), "{s:?}");
}

#[test]
fn a_bad_verdict_out_of_order_charges_only_its_peer() {
    let (mut p, mut src, _) = in_swarm(3);
    admit_po1(&mut p, ACCEPTED | 2);
    p.frame(M, super::po::sums(&mut src, 3));
    p.hold_checks = true;
    p.frame(ACCEPTED | 2, forged(&mut src, 0));
    p.frame(ACCEPTED | 2, src.frame(T, 1, Verify::Blake3));
    let (bad, good) = (p.checks.remove(0), p.checks.remove(0));
    assert_eq!(told(&p.event(good.run())), [have(1)]);
    assert_eq!(told(&p.event(bad.run())), [Msg::Bad { transfer: T, block: 0, from: 1 }]);
    // The block is fetched again, and this copy counts.
    p.frame(ACCEPTED | 2, src.frame(T, 0, Verify::Blake3));
    let again = p.checks.remove(0);
    assert_eq!(told(&p.event(again.run())), [have(0)]);
    let s = p.stats();
    assert_eq!((s.verify_failures, s.transfers_failed, s.blocks_received), (1, 0, 2), "{s:?}");
}

#[test]
fn verdicts_after_abort_or_expiry_change_nothing() {
    // Abort while checks are out: nothing is written, nothing is said.
    let (mut p, mut src) = receiving(3, &[("verify", "md5")]);
    p.hold_checks = true;
    p.frame(M, src.frame(T, 0, Verify::Md5));
    p.frame(M, src.frame(T, 1, Verify::Md5));
    assert!(p.frame(M, Msg::Abort { transfer: T, reason: "operator".into() }).is_empty());
    let (first, kept) = (p.checks.remove(0), p.checks.remove(0));
    assert!(p.event(first.run()).is_empty());
    assert!(p.m.store().staged.is_empty() && p.stats().blocks_received == 0);

    // The same transfer offered again: a verdict from before does not count for it.
    p.closed(M, Close::Eof);
    p.hold_checks = false;
    let (m, _) = MemSource::one_file(3);
    offered(&mut p, M | 8, T, &m, class_pairs(&[("verify", "md5")]));
    assert!(p.event(kept.run()).is_empty(), "a check the new transfer never asked for");
    assert_eq!(p.stats().blocks_received, 0);
    assert_eq!(sent_on(&p.frame(M | 8, src.frame(T, 1, Verify::Md5)), M | 8), [&have(1)]);

    // The master goes and the class timeout drops the transfer while a check is out.
    let (mut p, mut src) = receiving(3, &[("verify", "md5"), ("timeout", "60")]);
    p.hold_checks = true;
    p.frame(M, src.frame(T, 2, Verify::Md5));
    p.closed(M, Close::Io("reset".into()));
    p.wait(Duration::from_secs(61));
    let late = p.checks.remove(0);
    assert!(p.event(late.run()).is_empty());
    assert!(p.m.store().staged.is_empty());
}

#[test]
fn a_check_that_never_finished_fails_the_transfer_loudly() {
    let (mut p, mut src) = receiving(3, &[("verify", "md5")]);
    p.hold_checks = true;
    p.frame(M, src.frame(T, 0, Verify::Md5));
    let c = p.checks.remove(0);
    let acts = p.event(Check::lost(c.transfer, c.id, "worker panicked".into()));
    let [Msg::Failed { transfer: T, error }] = &sent_on(&acts, M)[..] else { panic!("{acts:?}") };
    assert!(error.contains("block 0: its check did not finish: worker panicked"), "{error}");
    assert_eq!(p.stats().transfers_failed, 1);
}

#[test]
fn without_verification_a_block_counts_at_once() {
    let (mut p, mut src) = receiving(2, &[("verify", "none")]);
    p.hold_checks = true;
    assert_eq!(told(&p.frame(M, src.frame(T, 0, Verify::None))), [have(0)]);
    assert!(p.checks.is_empty(), "nothing to hash, nothing handed out");
}
