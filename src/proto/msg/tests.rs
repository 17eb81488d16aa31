//! Round trips of every message, and hostile frames.

use super::*;

pub fn samples() -> Vec<Msg> {
    let stat = TransferStat {
        transfer: 7,
        class: "base1".into(),
        master: "127.0.0.1".into(),
        state: "sending".into(),
        total: 100,
        done: 50,
        started_unix: 1,
        elapsed_ms: 2,
        rate: 3,
        pos: vec![PoStat { addr: "127.0.0.1:1".into(), state: "ready".into(), bytes: 9, error: String::new() }],
        sites: vec![crate::proto::sites::SiteLink { from: "master".into(), to: "sh".into(), bytes: 8 }],
    };
    vec![
        Msg::AuthRequest { class: "base1".into() },
        Msg::AuthChallenge { nonce: [3; 32] },
        Msg::AuthResponse { mac: [4; 32] },
        Msg::AuthGrant {
            transfer: 9,
            token: vec![1, 2],
            pos: vec!["a:1".into()],
            class: vec![("dest".into(), "/x".into())],
            sites: vec!["bj".into()],
        },
        Msg::Denied { reason: Reason::BadToken, text: "no".into() },
        Msg::Verify { token: vec![1], po: "p".into(), presenter: "1.2.3.4".into() },
        Msg::VerifyOk { transfer: 1, class_name: "c".into(), class: vec![] },
        Msg::Offer { token: vec![1], po: "p".into(), manifest_id: [5; 16], manifest_len: 10, mode: 0 },
        Msg::Offer { token: vec![1], po: "p".into(), manifest_id: [5; 16], manifest_len: 10, mode: 3 },
        Msg::Wave { transfer: 1, step: WaveStep::Rollback },
        Msg::Preview(Box::new(Preview {
            transfer: 1,
            create: 2,
            change: 3,
            delete: 4,
            bytes: 5,
            items: vec![(PreviewKind::ChangeFile, b"a/b".to_vec()), (PreviewKind::Delete, vec![0xff])],
            more: 6,
        })),
        Msg::Verified { transfer: 1 },
        Msg::Manifest { transfer: 1, manifest: Arc::new(vec![0; 10]) },
        Msg::Check { transfer: 1, blocks: vec![3, 9] },
        Msg::CheckSums { transfer: 1, sums: vec![(3, [7; 32]), (9, [8; 32])] },
        Msg::Accept { transfer: 1, have: vec![0xff] },
        Msg::Block {
            head: BlockHead { transfer: 1, index: 2, sum: Sum::Md5([7; 16]) },
            data: Payload::from_vec(vec![1, 2, 3]),
        },
        Msg::Have { transfer: 1, blocks: vec![1, 5] },
        Msg::Ready { transfer: 1 },
        Msg::Commit { transfer: 1 },
        Msg::Abort { transfer: 1, reason: "x".into() },
        Msg::Done { transfer: 1, files: 2, bytes: 3, hook_exit: Some(-1), hook_tail: "t".into(), unchanged: false },
        Msg::Done { transfer: 1, files: 2, bytes: 3, hook_exit: None, hook_tail: String::new(), unchanged: true },
        Msg::Failed { transfer: 1, error: "disk full".into() },
        Msg::Progress { stat: stat.clone(), token: vec![7; 40] },
        Msg::StatQuery,
        Msg::StatReply { transfers: vec![stat] },
        Msg::Ping,
        Msg::Peers {
            transfer: 1,
            me: 2,
            master_key: [5; 32],
            links: vec![
                PeerLink { idx: 3, addr: "127.0.0.1:9".into(), key: [6; 32] },
                PeerLink { idx: 4, addr: String::new(), key: [7; 32] },
            ],
        },
        Msg::PeerHello { token: vec![9; 40], me: 4, proof: [3; 32] },
        Msg::Sums { transfer: 1, sums: vec![(0, Sum::Crc32(5)), (7, Sum::Md5([1; 16])), (9, Sum::None)] },
        Msg::Push { transfer: 1, block: 2, to: 3 },
        Msg::Unsent { transfer: 1, block: 2, to: 3, why: "no link".into() },
        Msg::Bad { transfer: 1, block: 2, from: 3 },
        Msg::Chain { transfer: 1, next: vec![4, u32::MAX], set: vec![0xff, 0x01] },
    ]
}

fn norm(m: Msg) -> Msg {
    match m {
        Msg::Block { head, data } => Msg::Block { head, data: Payload::from_vec(data.bytes().to_vec()) },
        m => m,
    }
}

#[test]
fn every_message_round_trips() {
    for m in samples() {
        let f = m.to_frame();
        let parts: Vec<u8> = m.to_frame_parts().iter().flat_map(|p| p.iter().copied()).collect();
        assert_eq!(parts, f, "{m:?} in parts");
        let (back, used) = Msg::from_frame(&f).unwrap().unwrap();
        assert_eq!(used, f.len());
        assert_eq!(norm(back), m);
        // every strict prefix is "need more", never an error or a panic
        for cut in 0..f.len() {
            assert_eq!(Msg::from_frame(&f[..cut]), Ok(None), "{m:?} cut at {cut}");
        }
    }
}

#[test]
fn block_head_matches_full_frame() {
    let head = BlockHead { transfer: 1, index: 2, sum: Sum::Crc32(5) };
    let mut f = block_frame_head(&head, 3);
    f.extend_from_slice(&[1, 2, 3]);
    assert_eq!(f, Msg::Block { head, data: Payload::from_vec(vec![1, 2, 3]) }.to_frame());
}

/// Seeded random and mutated frames: decode returns, never panics.
#[test]
fn random_and_mutated_frames_never_panic() {
    let mut rng = crate::testutil::Rng::from_state(0x9e3779b97f4a7c15);
    let mut rnd = move || rng.next_u64();
    let frames: Vec<Vec<u8>> = samples().iter().map(|m| m.to_frame()).collect();
    let mut errors = 0;
    for i in 0..50_000 {
        let mut f = frames[i % frames.len()].clone();
        for _ in 0..(1 + rnd() % 4) {
            let at = (rnd() as usize) % f.len();
            match rnd() % 3 {
                0 => f[at] ^= 1 << (rnd() % 8),
                1 => f[at] = rnd() as u8,
                _ => f.truncate(at.max(1)),
            }
        }
        if Msg::from_frame(&f).is_err() {
            errors += 1;
        }
    }
    assert!(errors > 1000, "mutations should mostly be caught, got {errors}");
}

/// A grant names a site for every po or for none, each within `sites::MAX_LABEL`; a status's
/// site links are bounded as well.
#[test]
fn site_lists_are_bounded() {
    let grant = |pos: usize, sites: Vec<String>| Msg::AuthGrant {
        transfer: 1,
        token: vec![],
        pos: vec!["10.0.0.1:7200".into(); pos],
        class: vec![],
        sites,
    };
    let bj = |n: usize| vec!["bj".to_string(); n];
    for (pos, sites, ok) in [(2, bj(0), true), (2, bj(2), true), (2, bj(1), false), (0, bj(1), false)] {
        let got = Msg::from_frame(&grant(pos, sites.clone()).to_frame());
        assert_eq!(got.is_ok(), ok, "{pos} pos, {} sites: {got:?}", sites.len());
    }
    let long = "x".repeat(crate::proto::sites::MAX_LABEL + 1);
    assert!(Msg::from_frame(&grant(1, vec![long.clone()]).to_frame()).is_err());
    let link = crate::proto::sites::SiteLink { from: long, to: "bj".into(), bytes: 1 };
    let stat = TransferStat { sites: vec![link], ..Default::default() };
    assert!(Msg::from_frame(&Msg::StatReply { transfers: vec![stat] }.to_frame()).is_err());
}

#[test]
fn wave_and_preview_fields_out_of_range_are_refused() {
    // The last byte of each frame is the field under test.
    let bad_last = |m: Msg, b: u8| {
        let mut f = m.to_frame();
        *f.last_mut().unwrap() = b;
        assert!(Msg::from_frame(&f).is_err(), "{m:?} with {b}");
    };
    let offer = Msg::Offer { token: vec![1], po: "p".into(), manifest_id: [5; 16], manifest_len: 10, mode: 0 };
    bad_last(offer, 8);
    bad_last(Msg::Wave { transfer: 1, step: WaveStep::Canary }, 4);
    bad_last(Msg::Wave { transfer: 1, step: WaveStep::Canary }, 0);
    // A PREVIEW that claims more items than the bound is refused before anything is allocated.
    let mut f = Msg::Preview(Box::default()).to_frame();
    let n = f.len() - 4;
    f[n..].copy_from_slice(&(MAX_PREVIEW_ITEMS as u32 + 1).to_be_bytes());
    assert!(Msg::from_frame(&f).is_err());
    let mut f =
        Msg::Preview(Box::new(Preview { items: vec![(PreviewKind::Delete, vec![b'a'])], ..Preview::default() }))
            .to_frame();
    let kind_at = f.len() - 1 - 4 - 1;
    f[kind_at] = 9;
    assert!(Msg::from_frame(&f).is_err());
}
