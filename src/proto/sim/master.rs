//! The master driven by hand: the test is its CACs and its pos. Every arm it handles, and the
//! test that reaches it:
//!
//! | phase + message or event                       | test                                      |
//! |------------------------------------------------|-------------------------------------------|
//! | Auth: Connected (AuthRequest), AuthGrant        | `pushes_to_every_po_and_commits_when_all_are_ready` |
//! | Auth + AuthChallenge, with and without a secret | `answers_a_challenge_with_the_class_secret` |
//! | Auth + Denied (final), anything else, Closed, timeout (next CAC; none left) | `a_cac_refusal_is_final_and_a_silent_one_is_passed_over` |
//! | AuthGrant: bad class, bad site labels, source fails, dry run, no pos, bad po address | `a_grant_it_cannot_use_ends_the_run` |
//! | Transfer: Connected po (Offer), Accept (pump), Have, Ready, Done, Ping | `pushes_to_every_po_and_commits_when_all_are_ready` |
//! | Offered + Check: CheckSums                      | `answers_check_with_the_digests_of_real_blocks` |
//! | Denied from a po: NoCac retries, others fail it | `a_refusing_po_is_retried_or_failed`      |
//! | Failed from a po: the ready others commit      | `a_failed_po_lets_the_ready_others_commit` |
//! | Failed when the source changed: all abort      | `a_changed_source_aborts_everyone`        |
//! | anything else, wrong transfer: protocol, po fails | `unexpected_messages_fail_the_po`       |
//! | Closed po, timeouts (connect, offer): retry, then fail | `connections_are_retried_then_given_up` |
//! | a po silent past `silent_timeout`: lost (retried, then failed); not while committing; a stopped master blames no one | `a_silent_po_is_lost_and_a_live_one_is_not` |
//! | Closed data link: the po leaves the swarm, is dialled again | `bad_and_unsent_count_only_from_the_po_that_was_asked` |
//! | class timeout: quorum commits, the rest fail   | `the_class_timeout_commits_a_quorum`      |
//! | Closed CAC; redial Connected / Closed; reports, pings | `a_lost_cac_is_dialled_again_for_reports`, `pushes_to_every_po_and_commits_when_all_are_ready` |
//! | swarm Accept: Peers with link keys, data link Connected: PeerHello, Sums | `a_joining_po_learns_its_links_and_the_data_link_proves_itself` |
//! | swarm Have: Push; Bad and Unsent from the po that was asked | `bad_and_unsent_count_only_from_the_po_that_was_asked` |
//! | swarm Bad and Unsent about another's assignment: nobody charged | `bad_and_unsent_count_only_from_the_po_that_was_asked` |

use super::super::auth::{self, link_key};
use super::super::bitmap::bitmap;
use super::super::cac::challenge_data;
use super::super::checksum::digest;
use super::super::master::{MasterMachine, MasterSettings, Outcome, Planner, PoState, TransferResult};
use super::super::msg::{PeerLink, Reason};
use super::super::swarm::MASTER_PEER;
use super::super::*;
use super::mem::MemSource;
use super::probe::*;
use super::{class_pairs, failures, master_settings, refusal, TRANSFER_KEY};
use std::time::Duration;

const CAC1: &str = "10.0.0.2:7100";
const CAC2: &str = "10.0.0.3:7100";
const POS: [&str; 3] = ["10.0.1.1:7200", "10.0.1.2:7200", "10.0.1.3:7200"];
const T: u64 = 77;
const KEY: [u8; 32] = TRANSFER_KEY;

type Master = Probe<MasterMachine>;

fn settings() -> MasterSettings {
    master_settings("base1", &[CAC1, CAC2])
}

fn planner(src: MemSource) -> Planner {
    let mut src = Some(src);
    Box::new(move |_: &ClassCfg| {
        let src = src.take().ok_or("planned twice")?;
        Ok((src.manifest.clone().unwrap(), Box::new(src) as Box<dyn Source>))
    })
}

/// A master asking the first CAC, on the connection returned.
fn master_with(settings: MasterSettings, planner: Planner) -> (Master, ConnId) {
    let now = Instant::now();
    let (p, first) = Probe::new(MasterMachine::new(settings, planner, now), now);
    let [(cac, addr)] = connects(&first)[..] else { panic!("{first:?}") };
    assert_eq!(addr.to_string(), CAC1);
    (p, cac)
}

fn grant(pos: &[&str], extra: &[(&str, &str)]) -> Msg {
    let pos = pos.iter().map(|p| p.to_string()).collect();
    Msg::AuthGrant { transfer: T, token: b"token".to_vec(), pos, class: class_pairs(extra), sites: vec![] }
}

/// A master granted `pos` for a tree of `blocks` blocks, dialling them: the probe, its CAC
/// connection, the pos' connections in order, and the source.
fn granted(pos: &[&str], blocks: u64, extra: &[(&str, &str)]) -> (Master, ConnId, Vec<ConnId>, MemSource) {
    let (_, src) = MemSource::one_file(blocks);
    let (mut p, cac) = master_with(settings(), planner(src.clone()));
    assert_eq!(only(&p.connected(cac), cac), Msg::AuthRequest { class: "base1".into() });
    let acts = p.frame(cac, grant(pos, extra));
    assert!(matches!(acts[..], [Action::SetRates { download: 0, .. }]), "{acts:?}");
    let acts = p.wait(Duration::ZERO);
    assert!(matches!(only(&acts, cac), Msg::Progress { .. }), "{acts:?}");
    let dialled = connects(&acts);
    let addrs: Vec<String> = dialled.iter().map(|(_, a)| a.to_string()).collect();
    assert_eq!(addrs, pos);
    (p, cac, dialled.into_iter().map(|(c, _)| c).collect(), src)
}

/// Po `conn` (number `i`) comes up and takes the offer holding `have`: what the master did then.
fn joined(p: &mut Master, conn: ConnId, i: usize, have: &[bool]) -> Vec<Action> {
    let acts = p.connected(conn);
    let Msg::Offer { token, po, manifest_id, manifest_len, mode: 0 } = only(&acts, conn) else { panic!("{acts:?}") };
    assert_eq!((token.as_slice(), po.as_str()), (&b"token"[..], POS[i]));
    // The manifest goes once the po says the CAC vouched for the token, as the offer named it.
    let acts = p.frame(conn, Msg::Verified { transfer: T });
    let Msg::Manifest { transfer: T, manifest } = only(&acts, conn) else { panic!("{acts:?}") };
    assert_eq!((Manifest::id_of(&manifest), manifest.len() as u64), (manifest_id, manifest_len));
    assert_eq!(Manifest::decode(&manifest).unwrap().blocks(), have.len() as u64);
    p.frame(conn, Msg::Accept { transfer: T, have: bitmap(have) })
}

/// (connection, block) of each block frame in `acts`.
fn block_sends(acts: &[Action]) -> Vec<(ConnId, u64)> {
    blocks(acts).into_iter().map(|(c, h)| (c, h.index)).collect()
}

fn outcome(p: &Master) -> Outcome {
    assert!(p.m.is_finished());
    p.m.outcome().cloned().expect("a finished master has an outcome")
}

fn done(files: u64, bytes: u64) -> Msg {
    Msg::Done { transfer: T, files, bytes, hook_exit: None, hook_tail: String::new(), unchanged: false }
}

#[test]
fn pushes_to_every_po_and_commits_when_all_are_ready() {
    let (mut p, cac, po, mut src) = granted(&POS[..2], 3, &[]);
    let acts = joined(&mut p, po[0], 0, &[false; 3]);
    assert_eq!(block_sends(&acts), [(po[0], 0), (po[0], 1), (po[0], 2)]);
    let sums: Vec<Sum> = blocks(&acts).iter().map(|(_, h)| h.sum).collect();
    let want: Vec<Sum> = (0..3).map(|i| Sum::of(Verify::Crc32, &bytes(&mut src, i))).collect();
    assert_eq!(sums, want, "every block carries the class checksum");
    // A po that holds a block already is not sent it again.
    let acts = joined(&mut p, po[1], 1, &[true, false, false]);
    assert_eq!(block_sends(&acts), [(po[1], 1), (po[1], 2)]);
    assert!(p.frame(po[0], Msg::Have { transfer: T, blocks: vec![0, 1, 2, 99] }).is_empty());
    assert!(p.frame(po[0], Msg::Ping).is_empty());
    assert!(p.frame(po[0], Msg::Ready { transfer: T }).is_empty(), "po 1 is not ready yet");
    p.frame(po[1], Msg::Have { transfer: T, blocks: vec![1, 2] });
    let acts = p.frame(po[1], Msg::Ready { transfer: T });
    assert_eq!(sent(&acts), [(po[0], &Msg::Commit { transfer: T }), (po[1], &Msg::Commit { transfer: T })]);
    // Committing pos are pinged, and the CAC hears how it goes.
    let acts = p.wait(Duration::from_secs(10));
    assert_eq!(sent_on(&acts, po[0]), [&Msg::Ping]);
    let [Msg::Progress { stat, .. }] = &sent_on(&acts, cac)[..] else { panic!("{acts:?}") };
    assert_eq!((stat.transfer, stat.state.as_str(), stat.done), (T, "committing", 2 * (2 * 4096 + 1000)));
    assert_eq!(closes(&p.frame(po[0], done(1, 2 * 4096 + 1000))), [po[0]], "a direct push is over");
    let acts = p.frame(po[1], done(1, 2 * 4096 + 1000));
    let [Msg::Progress { stat, .. }] = &sent_on(&acts, cac)[..] else { panic!("{acts:?}") };
    assert_eq!(stat.state, "ok");
    assert!(closes(&acts).contains(&cac));
    let o = outcome(&p);
    assert!(matches!(&o.result, TransferResult::Ok(r) if r.master_blocks == 5), "{o:?}");
    assert_eq!((o.transfer, o.class.as_str()), (T, "base1"));
    assert_eq!(p.stats(), Stats { blocks_sent: 5, bytes_sent: 3 * 4096 + 2 * 1000, ..Stats::default() });
}

fn bytes(src: &mut MemSource, i: u64) -> Vec<u8> {
    match src.frame(T, i, Verify::None) {
        Msg::Block { data, .. } => data.bytes().to_vec(),
        _ => unreachable!(),
    }
}

#[test]
fn answers_a_challenge_with_the_class_secret() {
    let (_, src) = MemSource::one_file(1);
    let secret = MasterSettings { secret: Some(b"s3cret".to_vec()), ..settings() };
    let (mut p, cac) = master_with(secret, planner(src.clone()));
    p.connected(cac);
    let acts = p.frame(cac, Msg::AuthChallenge { nonce: [3; 32] });
    let mac = auth::mac(b"s3cret", &challenge_data(&[3; 32], "base1"));
    assert_eq!(only(&acts, cac), Msg::AuthResponse { mac });
    let (mut p, cac) = master_with(settings(), planner(src));
    p.connected(cac);
    p.frame(cac, Msg::AuthChallenge { nonce: [3; 32] });
    assert!(refusal(&outcome(&p)).contains("needs the master secret"));
}

#[test]
fn a_cac_refusal_is_final_and_a_silent_one_is_passed_over() {
    let (_, src) = MemSource::one_file(1);
    let (mut p, cac) = master_with(settings(), planner(src.clone()));
    p.frame(cac, Msg::Denied { reason: Reason::UnknownClass, text: "no such class".into() });
    assert_eq!(refusal(&outcome(&p)), "CAC refused (unknown_class): no such class");
    // Garbage from the first, then the second cannot be reached: no CAC is left.
    let (mut p, cac) = master_with(settings(), planner(src.clone()));
    let acts = p.frame(cac, Msg::StatReply { transfers: vec![] });
    assert!(closes(&acts).contains(&cac));
    let [(second, addr)] = connects(&acts)[..] else { panic!("{acts:?}") };
    assert_eq!(addr.to_string(), CAC2);
    p.closed(second, Close::Connect("Connection refused (os error 111)".into()));
    let e = refusal(&outcome(&p)).to_owned();
    let tried = format!("tried 2: {CAC1}: unexpected StatReply; {CAC2}: connect: Connection refused (os error 111))");
    assert!(e.starts_with("no CAC reachable (") && e.contains(&tried), "{e}");
    // A po where a CAC should be says so, and the next CAC is asked.
    let (mut p, cac) = master_with(settings(), planner(src.clone()));
    let text = "unexpected AuthRequest: this address is a po (wugui-po), not a CAC";
    let acts = p.frame(cac, Msg::Denied { reason: Reason::Protocol, text: text.into() });
    let [(second, _)] = connects(&acts)[..] else { panic!("{acts:?}") };
    p.closed(second, Close::Connect("Connection refused (os error 111)".into()));
    let e = refusal(&outcome(&p)).to_owned();
    assert!(e.contains(&format!("{CAC1}: not a CAC: it answered \"{text}\"")), "{e}");
    // The first says nothing for `connect_timeout`; the second closes before answering.
    let (mut p, cac) = master_with(settings(), planner(src));
    assert!(p.wait(Duration::from_millis(2900)).is_empty());
    let acts = p.wait(Duration::from_millis(100));
    assert!(closes(&acts).contains(&cac));
    let [(second, _)] = connects(&acts)[..] else { panic!("{acts:?}") };
    p.connected(second);
    p.closed(second, Close::Eof);
    assert!(refusal(&outcome(&p)).starts_with("no CAC reachable"));
}

#[test]
fn a_grant_it_cannot_use_ends_the_run() {
    let (_, src) = MemSource::one_file(3);
    let ended = |settings: MasterSettings, planner: Planner, grant: Msg| {
        let (mut p, cac) = master_with(settings, planner);
        p.connected(cac);
        let acts = p.frame(cac, grant);
        (outcome(&p), acts, cac)
    };
    let bad_class = Msg::AuthGrant {
        transfer: T,
        token: vec![],
        pos: vec![],
        class: vec![("p2p".into(), "maybe".into())],
        sites: vec![],
    };
    let (o, _, _) = ended(settings(), planner(src.clone()), bad_class);
    assert!(refusal(&o).contains("CAC sent a bad class"), "{o:?}");
    // Site labels are checked as a config's are (a CAC's word is bounded, not trusted blindly).
    let Msg::AuthGrant { transfer, token, pos, class, .. } = grant(&POS, &[]) else { unreachable!() };
    let bad_sites = Msg::AuthGrant { transfer, token, pos, class, sites: vec!["bj".into(), "b j".into(), "".into()] };
    let (o, _, _) = ended(settings(), planner(src.clone()), bad_sites);
    assert!(refusal(&o).contains("CAC sent bad sites"), "{o:?}");
    let broken: Planner = Box::new(|_: &ClassCfg| Err("source /data: gone".into()));
    let (o, _, _) = ended(settings(), broken, grant(&POS, &[]));
    assert!(matches!(&o.result, TransferResult::SourceFailed(e) if e == "source /data: gone"), "{o:?}");
    // A dry run says what would go and tells the CAC; with no pos that is all.
    let dry = MasterSettings { dry_run: true, ..settings() };
    let (o, acts, cac) = ended(dry, planner(src.clone()), grant(&[], &[]));
    let TransferResult::DryRun(d) = &o.result else { panic!("{o:?}") };
    assert_eq!((d.files, d.blocks, d.bytes, d.pos.len()), (1, 3, 2 * 4096 + 1000, 0));
    assert!(matches!(only(&acts, cac), Msg::Progress { stat, .. } if stat.state == "dry-run"));
    assert!(connects(&acts).is_empty() && closes(&acts) == [cac]);
    // With pos, each is offered the tree in dry-run mode (with -i, itemized), as in a push.
    let dry = MasterSettings { dry_run: true, itemize: true, ..settings() };
    let (mut p, cac) = master_with(dry, planner(src.clone()));
    p.connected(cac);
    p.frame(cac, grant(&POS[..1], &[]));
    let acts = p.wait(Duration::ZERO);
    let [(po, _)] = connects(&acts)[..] else { panic!("{acts:?}") };
    let acts = p.connected(po);
    let Msg::Offer { mode, .. } = only(&acts, po) else { panic!("{acts:?}") };
    assert_eq!(mode, crate::proto::msg::OFFER_DRY_RUN | crate::proto::msg::OFFER_ITEMIZE);
    // No pos: nothing to do. A po that is no address fails at once.
    let (o, _, _) = ended(settings(), planner(src.clone()), grant(&[], &[]));
    assert!(matches!(&o.result, TransferResult::Failed(r) if r.pos.is_empty()), "{o:?}");
    let (mut p, cac) = master_with(settings(), planner(src));
    p.connected(cac);
    p.frame(cac, grant(&["nonsense"], &[]));
    let acts = p.wait(Duration::ZERO);
    assert!(connects(&acts).is_empty());
    assert_eq!(failures(&outcome(&p)), ["nonsense: bad po address \"nonsense\" in the class"]);
}

#[test]
fn answers_check_with_the_digests_of_real_blocks() {
    let (mut p, _, po, mut src) = granted(&POS[..1], 3, &[]);
    p.connected(po[0]);
    let acts = p.frame(po[0], Msg::Check { transfer: T, blocks: vec![2, 1, 1, 99] });
    let sums = vec![(1, digest(&bytes(&mut src, 1))), (2, digest(&bytes(&mut src, 2)))];
    assert_eq!(only(&acts, po[0]), Msg::CheckSums { transfer: T, sums });
    let acts = p.frame(po[0], Msg::Accept { transfer: T, have: bitmap(&[false, true, true]) });
    assert_eq!(block_sends(&acts), [(po[0], 0)]);
}

#[test]
fn a_refusing_po_is_retried_or_failed() {
    let (mut p, _, po, _) = granted(&POS[..2], 3, &[]);
    p.connected(po[0]);
    p.connected(po[1]);
    // A po that could reach no CAC may do better later: it is dialled again after a backoff.
    let acts = p.frame(po[0], Msg::Denied { reason: Reason::NoCac, text: "no CAC".into() });
    assert_eq!(closes(&acts), [po[0]]);
    assert!(connects(&p.wait(Duration::from_millis(900))).is_empty());
    let acts = p.wait(Duration::from_millis(100));
    assert_eq!(connects(&acts).iter().map(|c| c.1.to_string()).collect::<Vec<_>>(), [POS[0]]);
    // So may a po with too many offers waiting.
    let again = connects(&acts)[0].0;
    p.connected(again);
    let acts = p.frame(again, Msg::Denied { reason: Reason::Busy, text: "64 offers waiting".into() });
    assert_eq!(closes(&acts), [again]);
    assert_eq!(p.m.po_states()[0], PoState::Idle);
    // Any other refusal is final.
    let acts = p.frame(po[1], Msg::Denied { reason: Reason::DestNotAllowed, text: "not here".into() });
    assert_eq!(closes(&acts), [po[1]]);
    assert_eq!(p.m.po_states()[1], PoState::Failed);
    assert_eq!(p.m.stat(p.now, None).pos[1].error, "refused (dest_not_allowed): not here");
}

#[test]
fn unexpected_messages_fail_the_po() {
    let cases = [
        Msg::Have { transfer: T, blocks: vec![0] },
        Msg::Accept { transfer: T + 1, have: vec![] },
        Msg::Ready { transfer: T + 1 },
        Msg::Offer { token: vec![], po: String::new(), manifest_id: [0; 16], manifest_len: 0, mode: 0 },
        Msg::Verified { transfer: T + 1 },
    ];
    for msg in cases {
        let ty = msg.ty();
        let (mut p, _, po, _) = granted(&POS[..1], 3, &[]);
        p.connected(po[0]);
        let acts = p.frame(po[0], msg);
        let abort = Msg::Abort { transfer: T, reason: "failed".into() };
        assert_eq!((only(&acts, po[0]), closes(&acts).contains(&po[0])), (abort, true), "{ty:?}");
        let f = failures(&outcome(&p));
        assert_eq!(f, [format!("{}: protocol: unexpected {ty:?} in state offered", POS[0])]);
    }
    // Frames on connections that are not ours are dropped.
    let (mut p, _, _, _) = granted(&POS[..1], 3, &[]);
    assert!(p.frame(4242, Msg::Ready { transfer: T }).is_empty());
}

#[test]
fn a_failed_po_lets_the_ready_others_commit() {
    let (mut p, _, po, _) = granted(&POS, 2, &[]);
    for (i, &c) in po.iter().enumerate() {
        joined(&mut p, c, i, &[false; 2]);
    }
    assert!(p.frame(po[0], Msg::Ready { transfer: T }).is_empty());
    assert!(p.frame(po[1], Msg::Ready { transfer: T }).is_empty());
    let acts = p.frame(po[2], Msg::Failed { transfer: T, error: "disk full".into() });
    let commits: Vec<ConnId> =
        sent(&acts).into_iter().filter(|(_, m)| matches!(m, Msg::Commit { .. })).map(|(c, _)| c).collect();
    assert_eq!(commits, [po[0], po[1]]);
    p.frame(po[0], done(1, 4096 + 1000));
    p.frame(po[1], done(1, 4096 + 1000));
    let o = outcome(&p);
    assert!(matches!(o.result, TransferResult::Partial(_)), "{o:?}");
    assert_eq!(failures(&o), [format!("{}: disk full", POS[2])]);
}

#[test]
fn a_changed_source_aborts_everyone() {
    let (_, mut src) = MemSource::one_file(2);
    src.changed = Some(0);
    let (mut p, cac) = master_with(settings(), planner(src));
    p.connected(cac);
    p.frame(cac, grant(&POS[..2], &[]));
    let po: Vec<ConnId> = connects(&p.wait(Duration::ZERO)).into_iter().map(|c| c.0).collect();
    p.connected(po[0]);
    p.connected(po[1]);
    // A checksum failure at one po is the source changing under us: no po can get a good copy.
    let acts = p.frame(po[0], Msg::Failed { transfer: T, error: "block 0 failed its crc32 check".into() });
    let aborted: Vec<ConnId> =
        sent(&acts).into_iter().filter(|(_, m)| matches!(m, Msg::Abort { .. })).map(|(c, _)| c).collect();
    assert_eq!(aborted, po);
    let f = failures(&outcome(&p));
    assert_eq!(f.len(), 2);
    assert!(f.iter().all(|e| e.contains("changed while being sent")), "{f:?}");
}

#[test]
fn connections_are_retried_then_given_up() {
    let (mut p, _, po, _) = granted(&POS[..1], 2, &[("retries", "1")]);
    // No connection within connect_timeout: try again after 1 s.
    assert_eq!(closes(&p.wait(Duration::from_secs(3))), [po[0]]);
    let acts = p.wait(Duration::from_secs(1));
    let [(again, _)] = connects(&acts)[..] else { panic!("{acts:?}") };
    // Refused the second time: retries are spent.
    p.closed(again, Close::Connect("connection refused".into()));
    assert_eq!(failures(&outcome(&p)), [format!("{}: connect: connection refused", POS[0])]);
    // An offer left unanswered for a minute counts as a lost connection too.
    let (mut p, _, po, _) = granted(&POS[..1], 2, &[("retries", "0")]);
    p.connected(po[0]);
    assert!(closes(&p.wait(Duration::from_secs(59))).is_empty());
    p.wait(Duration::from_secs(1));
    assert_eq!(failures(&outcome(&p)), [format!("{}: no answer to the offer", POS[0])]);
}

#[test]
fn a_silent_po_is_lost_and_a_live_one_is_not() {
    let class = [("retries", "0"), ("silent_timeout", "3")];
    let (mut p, _, po, _) = granted(&POS[..2], 2, &class);
    for (i, &c) in po.iter().enumerate() {
        joined(&mut p, c, i, &[false; 2]);
    }
    // po 1 answers every ping (one a second with a 3 s limit); po 0, stopped, says nothing.
    let mut pinged = 0;
    for _ in 0..2 {
        let acts = p.wait(Duration::from_secs(1));
        assert!(closes(&acts).is_empty(), "{acts:?}");
        for (conn, msg) in sent(&acts) {
            if conn == po[1] && *msg == Msg::Ping {
                pinged += 1;
                p.frame(po[1], Msg::Ping);
            }
        }
    }
    assert!(pinged >= 1, "the live po was pinged");
    let acts = p.wait(Duration::from_secs(1));
    assert!(closes(&acts).contains(&po[0]) && !closes(&acts).contains(&po[1]), "{acts:?}");
    p.frame(po[1], Msg::Have { transfer: T, blocks: vec![0, 1] });
    p.frame(po[1], Msg::Ready { transfer: T });
    p.frame(po[1], done(1, 4096 + 1000));
    let f = failures(&outcome(&p));
    assert_eq!(f, [format!("{}: silent for 3 s (silent_timeout)", POS[0])]);

    // A master that was stopped itself (its timers ran 30 s late) blames no po for what it
    // did not read meanwhile; a po still silent after that is lost at its limit.
    let (mut p, _, po, _) = granted(&POS[..1], 2, &class);
    joined(&mut p, po[0], 0, &[false; 2]);
    assert!(closes(&p.wait(Duration::from_secs(30))).is_empty());
    p.frame(po[0], Msg::Have { transfer: T, blocks: vec![0] });
    assert!(closes(&p.wait(Duration::from_secs(1))).is_empty());
    assert!(closes(&p.wait(Duration::from_secs(1))).is_empty());
    assert!(closes(&p.wait(Duration::from_secs(1))).contains(&po[0]));
    assert_eq!(failures(&outcome(&p)), [format!("{}: silent for 3 s (silent_timeout)", POS[0])]);

    // A committing po renames its tree into place on its loop, which may take long: its
    // silence is not held against it.
    let (mut p, _, po, _) = granted(&POS[..1], 2, &class);
    joined(&mut p, po[0], 0, &[false; 2]);
    p.frame(po[0], Msg::Have { transfer: T, blocks: vec![0, 1] });
    let acts = p.frame(po[0], Msg::Ready { transfer: T });
    assert_eq!(sent_on(&acts, po[0]), [&Msg::Commit { transfer: T }]);
    for _ in 0..10 {
        assert!(closes(&p.wait(Duration::from_secs(1))).is_empty());
    }
    p.frame(po[0], done(1, 4096 + 1000));
    assert!(failures(&outcome(&p)).is_empty());
}

#[test]
fn the_class_timeout_commits_a_quorum() {
    let (mut p, _, po, _) = granted(&POS, 2, &[("quorum", "2"), ("timeout", "60")]);
    for (i, &c) in po.iter().enumerate() {
        joined(&mut p, c, i, &[false; 2]);
    }
    p.frame(po[0], Msg::Ready { transfer: T });
    p.frame(po[1], Msg::Ready { transfer: T });
    assert!(p.wait(Duration::from_secs(59)).iter().all(|a| !matches!(a, Action::Send { msg: Msg::Commit { .. }, .. })));
    let acts = p.wait(Duration::from_secs(1));
    let commits: Vec<ConnId> =
        sent(&acts).into_iter().filter(|(_, m)| matches!(m, Msg::Commit { .. })).map(|(c, _)| c).collect();
    assert_eq!(commits, [po[0], po[1]]);
    assert!(sent_on(&acts, po[2]).contains(&&Msg::Abort { transfer: T, reason: "failed".into() }));
    p.frame(po[0], done(1, 5096));
    p.frame(po[1], done(1, 5096));
    let o = outcome(&p);
    assert!(matches!(o.result, TransferResult::Partial(_)), "{o:?}");
    assert_eq!(failures(&o), [format!("{}: class timeout reached", POS[2])]);
}

#[test]
fn a_lost_cac_is_dialled_again_for_reports() {
    let (mut p, cac, _, _) = granted(&POS[..1], 2, &[]);
    assert!(p.closed(cac, Close::Io("reset".into())).is_empty(), "the transfer goes on");
    let acts = p.wait(Duration::from_secs(1));
    let [(redial, addr)] = connects(&acts)[..] else { panic!("{acts:?}") };
    assert_eq!(addr.to_string(), CAC1);
    p.closed(redial, Close::Connect("refused".into()));
    let acts = p.wait(Duration::from_secs(1));
    let [(redial, addr)] = connects(&acts)[..] else { panic!("{acts:?}") };
    assert_eq!(addr.to_string(), CAC2, "the next CAC in turn");
    assert!(p.connected(redial).is_empty());
    let acts = p.wait(Duration::from_secs(1));
    assert!(matches!(only(&acts, redial), Msg::Progress { .. }), "{acts:?}");
}

/// A p2p master with `POS` joined, for a tree of 6 blocks: the probe, the pos' control and
/// data connections, and the actions of the data links coming up.
fn swarm() -> (Master, Vec<ConnId>, Vec<ConnId>, MemSource, Vec<Action>) {
    let (mut p, _, po, src) = granted(&POS, 6, &[("p2p", "on"), ("chains", "off")]);
    let mut data = Vec::new();
    for (i, &c) in po.iter().enumerate() {
        let acts = joined(&mut p, c, i, &[false; 6]);
        let [(d, addr)] = connects(&acts)[..] else { panic!("{acts:?}") };
        assert_eq!(addr.to_string(), POS[i], "the data link goes to the po itself");
        data.push(d);
    }
    let acts: Vec<Action> = data.iter().flat_map(|&d| p.connected(d)).collect();
    (p, po, data, src, acts)
}

fn is_push(m: &Msg) -> bool {
    matches!(m, Msg::Push { .. })
}

#[test]
fn a_joining_po_learns_its_links_and_the_data_link_proves_itself() {
    let (_, po, data, mut src, acts) = swarm();
    let key = |a, b| link_key(&KEY, a, b);
    let hello = |me| Msg::PeerHello { token: b"token".to_vec(), me: MASTER_PEER, proof: key(me, MASTER_PEER) };
    // The first data link up gets every block (nobody else can serve yet), after the checksums.
    let sums =
        Msg::Sums { transfer: T, sums: (0..6).map(|i| (i, Sum::of(Verify::Blake3, &bytes(&mut src, i)))).collect() };
    assert_eq!(sent(&acts[..4]), [(data[0], &hello(0)), (po[0], &sums), (po[1], &sums), (po[2], &sums)]);
    assert_eq!(block_sends(&acts), (0..6).map(|b| (data[0], b)).collect::<Vec<_>>());
    assert_eq!(sent_on(&acts, data[1]), [&hello(1)]);
    // Each po hears of the links of its own: we dial those that joined before (an address).
    let (mut p, _, po, _) = granted(&POS, 6, &[("p2p", "on"), ("chains", "off")]);
    let peers = |acts: &[Action], conn| match only(acts, conn) {
        Msg::Peers { transfer: T, me, master_key, links } => (me, master_key, links),
        other => panic!("{other:?}"),
    };
    let link = |idx, addr: &str, k| PeerLink { idx, addr: addr.into(), key: k };
    let acts = joined(&mut p, po[0], 0, &[false; 6]);
    assert_eq!(peers(&acts, po[0]), (0, key(0, MASTER_PEER), vec![link(1, "", key(0, 1)), link(2, "", key(0, 2))]));
    let d0 = connects(&acts)[0].0;
    let acts = joined(&mut p, po[1], 1, &[false; 6]);
    assert_eq!(peers(&acts, po[1]), (1, key(1, MASTER_PEER), vec![link(0, POS[0], key(0, 1)), link(2, "", key(1, 2))]));
    // A late joiner gets every checksum sent so far.
    p.connected(d0);
    let acts = joined(&mut p, po[2], 2, &[false; 6]);
    let Msg::Peers { me: 2, links, .. } = sent_on(&acts, po[2])[0] else { panic!("{acts:?}") };
    assert_eq!(links.iter().map(|l| l.addr.as_str()).collect::<Vec<_>>(), [POS[0], POS[1]]);
    assert_eq!(sent_on(&acts, po[2])[1], &sums);
}

#[test]
fn bad_and_unsent_count_only_from_the_po_that_was_asked() {
    let (mut p, po, data, _, _) = swarm();
    // Po 0 holds blocks 0 and 1 (from the master): it is asked to serve them to 1 and 2.
    for b in [0, 1] {
        let acts = p.frame(po[0], Msg::Have { transfer: T, blocks: vec![b] });
        let pushes = [Msg::Push { transfer: T, block: b, to: 1 }, Msg::Push { transfer: T, block: b, to: 2 }];
        assert_eq!(sent_on(&acts, po[0]), pushes.iter().collect::<Vec<_>>());
    }
    // Reports about assignments that are not the reporter's change nothing and charge nobody.
    let unsent = |block, to| Msg::Unsent { transfer: T, block, to, why: "x".into() };
    let bad = |block, from| Msg::Bad { transfer: T, block, from };
    let false_reports = [
        (po[1], bad(0, 2)),    // po 2 never sent block 0 to po 1
        (po[1], bad(5, 0)),    // nobody sends block 5 to po 1
        (po[1], bad(0, 99)),   // no such po
        (po[2], unsent(0, 1)), // po 0 was asked, not po 2
        (po[1], unsent(0, 1)), // the receiver cannot give back what a peer sends it
    ];
    for (i, (conn, msg)) in false_reports.into_iter().enumerate() {
        assert!(p.frame(conn, msg).is_empty(), "report {i}");
    }
    let acts = p.wait(Duration::from_secs(2));
    assert!(blocks(&acts).is_empty() && !sent(&acts).iter().any(|(_, m)| is_push(m)), "{acts:?}");
    // Real reports from po 1 about po 0: each sends the block again, until po 0 has had
    // MAX_FAULTS (3) and serves no more; then the master sends it itself.
    for n in 1..=3 {
        let acts = p.frame(po[1], bad(0, 0));
        let again = sent_on(&acts, po[0]) == [&Msg::Push { transfer: T, block: 0, to: 1 }];
        assert_eq!(again, n < 3, "fault {n}: {acts:?}");
    }
    assert!(block_sends(&p.wait(Duration::from_secs(2))).contains(&(data[1], 0)));
    // The real sender gives a push back: the block comes from elsewhere.
    assert!(p.frame(po[0], unsent(1, 1)).is_empty());
    assert!(block_sends(&p.wait(Duration::from_secs(2))).contains(&(data[1], 1)));
    // A po gives back a block of the master's own link to it: the master sends it again.
    assert_eq!(block_sends(&p.frame(po[0], unsent(3, 0))), [(data[0], 3)]);
    // A po whose data link breaks leaves the swarm and is dialled again.
    assert_eq!(closes(&p.closed(data[2], Close::Io("reset".into()))), [po[2]]);
    let acts = p.wait(Duration::from_secs(1));
    assert_eq!(connects(&acts).iter().map(|c| c.1.to_string()).collect::<Vec<_>>(), [POS[2]]);
}
