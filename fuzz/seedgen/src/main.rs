//! Writes the committed seed corpus, `fuzz/seeds/{frame,token,manifest,po_machine,master_machine}/`,
//! from the current protocol: frames through `Msg::to_frame` (so their header carries the
//! current `wire::VERSION`), tokens through `Token::issue`, manifests through `Manifest::encode`.
//! The machine seeds are choice sequences for the drivers in `fuzz/fuzz_targets/`, spelled out
//! step by step below; they must follow the order in which `World::step` reads its input (check
//! one with `WUGUI_FUZZ_LOG=debug fuzz/target/x86_64-unknown-linux-gnu/release/po_machine SEED`).
//!
//! Run it after a protocol change (the `config` seeds are text and kept by hand):
//!
//!     cargo run --manifest-path fuzz/seedgen/Cargo.toml

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use wugui::proto::auth::Token;
use wugui::proto::checksum::digest;
use wugui::proto::manifest::{Entry, Kind};
use wugui::proto::msg::{PeerLink, PoStat, Preview, PreviewKind, Reason, TransferStat, WaveStep};
use wugui::proto::sites::SiteLink;
use wugui::proto::wire::{self, MsgType, VERSION};
use wugui::proto::{BlockHead, Manifest, Msg, Payload, Sum};

fn main() {
    let seeds = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../seeds");
    write_dir(&seeds.join("frame"), frames());
    write_dir(&seeds.join("token"), tokens());
    write_dir(&seeds.join("manifest"), manifests());
    write_dir(&seeds.join("po_machine"), po_machine());
    write_dir(&seeds.join("master_machine"), master_machine());
}

/// Replaces the files of `dir` with `files`.
fn write_dir(dir: &Path, files: Vec<(String, Vec<u8>)>) {
    if dir.exists() {
        std::fs::remove_dir_all(dir).expect("remove old seeds");
    }
    std::fs::create_dir_all(dir).expect("seed dir");
    for (name, bytes) in &files {
        std::fs::write(dir.join(name), bytes).expect("write seed");
    }
    println!("{}: {} seeds", dir.display(), files.len());
}

fn entry(path: &str, kind: Kind) -> Entry {
    Entry { path: path.into(), kind, mode: 0o644, uid: 0, gid: 0, mtime: 1, mtime_nsec: 0, sparse: None }
}

fn small_manifest() -> Manifest {
    let entries = vec![
        entry("a", Kind::Dir),
        entry("a/x", Kind::File { size: 5000 }),
        entry("b", Kind::File { size: 10 }),
        entry("l", Kind::Symlink { target: "a/x".into() }),
    ];
    Manifest::new(4096, entries).expect("a valid tree")
}

fn token(master: IpAddr, expiry: u64) -> Token {
    Token::issue(b"key", 7, "base1", master, expiry, [1; 16])
}

/// One frame of every type, plus a header that is not ours.
fn frames() -> Vec<(String, Vec<u8>)> {
    let tok = token([10, 0, 0, 1].into(), 100).encode();
    let class = vec![("dest".to_string(), "/data/base".to_string()), ("p2p".into(), "on".into())];
    let m = small_manifest();
    let stat = TransferStat {
        transfer: 7,
        class: "base1".into(),
        master: "10.0.0.1".into(),
        state: "sending".into(),
        total: 5010,
        done: 100,
        started_unix: 1_700_000_000,
        elapsed_ms: 1500,
        rate: 1000,
        pos: vec![PoStat { addr: "10.0.0.9:4100".into(), state: "sending".into(), bytes: 100, error: String::new() }],
        sites: vec![SiteLink { from: "master".into(), to: "bj".into(), bytes: 100 }],
    };
    let data = vec![7u8; 64];
    let msgs = vec![
        Msg::AuthRequest { class: "base1".into() },
        Msg::AuthChallenge { nonce: [3; 32] },
        Msg::AuthResponse { mac: [4; 32] },
        Msg::AuthGrant {
            transfer: 7,
            token: tok.clone(),
            pos: vec!["10.0.0.9:4100".into()],
            class: class.clone(),
            sites: vec!["bj".into()],
        },
        Msg::Denied { reason: Reason::Busy, text: "another push of base1 runs".into() },
        Msg::Verify { token: tok.clone(), po: "10.0.0.9:4100".into(), presenter: "10.0.0.1".into() },
        Msg::VerifyOk { transfer: 7, class_name: "base1".into(), class },
        Msg::Offer {
            token: tok.clone(),
            po: "10.0.0.9:4100".into(),
            manifest_id: m.id(),
            manifest_len: m.encode().len() as u64,
            mode: 0,
        },
        Msg::Wave { transfer: 7, step: WaveStep::Canary },
        Msg::Verified { transfer: 7 },
        Msg::Manifest { transfer: 7, manifest: Arc::new(m.encode()) },
        Msg::Check { transfer: 7, blocks: vec![0, 1] },
        Msg::CheckSums { transfer: 7, sums: vec![(0, digest(&data))] },
        Msg::Accept { transfer: 7, have: vec![0x80] },
        Msg::Block {
            head: BlockHead { transfer: 7, index: 0, sum: Sum::Blake3(digest(&data)) },
            data: Payload::from_vec(data.clone()),
        },
        Msg::Have { transfer: 7, blocks: vec![0] },
        Msg::Ready { transfer: 7 },
        Msg::Commit { transfer: 7 },
        Msg::Abort { transfer: 7, reason: "interrupted".into() },
        Msg::Done { transfer: 7, files: 2, bytes: 5010, hook_exit: Some(0), hook_tail: "ok\n".into(), unchanged: true },
        Msg::Failed { transfer: 7, error: "disk full".into() },
        Msg::Progress { stat: stat.clone(), token: tok.clone() },
        Msg::StatQuery,
        Msg::StatReply { transfers: vec![stat] },
        Msg::Ping,
        Msg::Peers {
            transfer: 7,
            me: 0,
            master_key: [5; 32],
            links: vec![PeerLink { idx: 1, addr: "10.0.0.10:4100".into(), key: [6; 32] }],
        },
        Msg::PeerHello { token: tok, me: 1, proof: [6; 32] },
        Msg::Sums { transfer: 7, sums: vec![(0, Sum::Md5([8; 16])), (1, Sum::Crc32(9))] },
        Msg::Push { transfer: 7, block: 0, to: 1 },
        Msg::Unsent { transfer: 7, block: 0, to: 1, why: "peer gone".into() },
        Msg::Bad { transfer: 7, block: 0, from: 1 },
        Msg::Preview(Box::new(Preview {
            transfer: 7,
            create: 1,
            change: 1,
            delete: 1,
            bytes: 5010,
            items: vec![(PreviewKind::ChangeFile, b"a/x".to_vec()), (PreviewKind::Delete, b"old".to_vec())],
            more: 0,
        })),
        Msg::Chain { transfer: 7, next: vec![1, u32::MAX], set: vec![0xc0] },
    ];
    let mut out: Vec<(String, Vec<u8>)> = msgs
        .iter()
        .enumerate()
        .map(|(i, msg)| {
            let frame = msg.to_frame();
            assert_eq!(frame[2], VERSION, "frame header carries the wire version");
            assert!(Msg::from_frame(&frame).expect("decodes").is_some());
            (format!("{:02}-{}", i + 1, format!("{:?}", msg.ty()).to_lowercase()), frame)
        })
        .collect();
    // Every type is here once.
    let types: Vec<u8> = msgs.iter().map(|m| m.ty() as u8).collect();
    assert!((0..=255).filter(|b| MsgType::from_u8(*b).is_some()).all(|b| types.contains(&b)), "a type has no seed");
    let mut bad = Vec::new();
    wire::write_header(&mut bad, MsgType::Ping, 0);
    bad[0] = b'X';
    out.push((format!("{:02}-not-ours", out.len() + 1), bad));
    out
}

/// The token target's input: key length, key, `now`, presenter kind and address, the token.
fn tokens() -> Vec<(String, Vec<u8>)> {
    let case = |key: &[u8], now: u64, presenter: Option<IpAddr>, t: &Token| {
        let mut b = vec![key.len() as u8];
        b.extend_from_slice(key);
        b.extend_from_slice(&now.to_be_bytes());
        match presenter {
            None => b.push(0),
            Some(IpAddr::V4(a)) => {
                b.push(4);
                b.extend_from_slice(&a.octets());
            }
            Some(IpAddr::V6(a)) => {
                b.push(6);
                b.extend_from_slice(&a.octets());
            }
        }
        b.extend_from_slice(&t.encode());
        b
    };
    let v4 = token([10, 0, 0, 1].into(), 100);
    let v6 = token("fd00::1".parse().unwrap(), 100);
    vec![
        ("bare-v4".into(), v4.encode()),
        ("bare-v6".into(), v6.encode()),
        ("verify-ok".into(), case(b"key", 50, Some([10, 0, 0, 1].into()), &v4)),
        ("verify-wrong-master".into(), case(b"key", 50, Some([10, 0, 0, 2].into()), &v4)),
        ("verify-expired".into(), case(b"key", 101, None, &v6)),
    ]
}

fn manifests() -> Vec<(String, Vec<u8>)> {
    let empty = Manifest::new(4096, Vec::new()).expect("empty tree");
    let mut big = Vec::new();
    for d in 0..8 {
        big.push(entry(&format!("d{d}"), Kind::Dir));
        for f in 0..16 {
            big.push(entry(&format!("d{d}/f{f}"), Kind::File { size: (d * 16 + f) * 1000 }));
        }
        big.push(entry(&format!("d{d}/l"), Kind::Symlink { target: "f0".into() }));
    }
    let mut sparse = entry("s", Kind::File { size: 1 << 20 });
    sparse.sparse = Some(vec![(0, 4096), (65536, 8192)].into_boxed_slice());
    vec![
        ("empty".into(), empty.encode()),
        ("small".into(), small_manifest().encode()),
        ("big".into(), Manifest::new(65536, big).expect("a valid tree").encode()),
        ("sparse".into(), Manifest::new(4096, vec![sparse]).expect("a valid tree").encode()),
    ]
}

/// Choice sequences for `po_machine` (see its `World::step`). A prelude (class flags, the two
/// file sizes, the swarm key byte), then steps, each a step byte and the choices it reads.
mod po {
    /// Class flags: bit 0 p2p, bits 1-2 verify (md5 crc32 none blake3), bit 3 publish each,
    /// bit 4 block size auto, bit 5 hook, bit 6 rate limit, bit 7 a dest outside allow_dest.
    /// File sizes 42*97 and 200*31 bytes: three blocks of 4 KiB.
    pub fn prelude(flags: u8) -> Vec<u8> {
        vec![flags, 42, 200, 9]
    }
    /// A connection accepted on the po's own address (open accepted connections grow by one).
    pub const ACCEPT: &[u8] = &[0, 1, 2];
    /// The first connection the po is dialling comes up.
    pub const CONNECT: &[u8] = &[1, 0, 0];
    /// `pick_on`: the `i`th open connection of the frame's side (of `n` there).
    fn on(i: u8) -> [u8; 2] {
        [0, i]
    }
    /// OFFER with the real token, id and length, on accepted connection `i`.
    pub fn offer(i: u8) -> Vec<u8> {
        [&[3, 0, 0, 0][..], &on(i)].concat()
    }
    /// The CAC vouches (VERIFY_OK for the token's transfer) on the first CAC connection.
    pub fn verify_ok() -> Vec<u8> {
        [&[4, 0, 0][..], &on(0)].concat()
    }
    /// The CAC refuses.
    pub fn denied(reason: u8) -> Vec<u8> {
        [&[5, reason][..], &on(0)].concat()
    }
    /// The announced MANIFEST on accepted connection `i`.
    pub fn manifest(i: u8) -> Vec<u8> {
        [&[8, 0, 0][..], &on(i)].concat()
    }
    /// Block `b` with its right bytes and class sum, on accepted connection `i`.
    pub fn block(b: u8, i: u8) -> Vec<u8> {
        [&[9, 0, b, 3, 1, 0, 0, 0][..], &on(i)].concat()
    }
    /// PEERS: this po is 0, one neighbour (1) at 10.0.2.1:5000.
    pub fn peers(i: u8) -> Vec<u8> {
        [&[6, 0, 0, 1, 0, 1, 1, 0][..], &on(i)].concat()
    }
    /// PEER_HELLO from the master's data link with the right proof and token.
    pub fn hello_master(i: u8) -> Vec<u8> {
        [&[7, 1, 0, 0][..], &on(i)].concat()
    }
    /// PUSH block `b` to peer 1.
    pub fn push(b: u8, i: u8) -> Vec<u8> {
        [&[12, 0, 0, b, 0, 1][..], &on(i)].concat()
    }
    /// SUMS with the right swarm sums of blocks 0-2 (a block from a peer or the data link waits
    /// for its sum).
    pub fn sums(i: u8) -> Vec<u8> {
        [&[10, 1, 3, 0, 0, 0, 0, 1, 0, 0, 2, 0, 0][..], &on(i)].concat()
    }
    /// CHECKSUMS with the right digest of block `b`.
    pub fn check_sums(b: u8, i: u8) -> Vec<u8> {
        [&[11, 1, 0, b, 0, 0][..], &on(i)].concat()
    }
    pub fn commit(i: u8) -> Vec<u8> {
        [&[13, 0, 0][..], &on(i)].concat()
    }
    pub fn abort(i: u8) -> Vec<u8> {
        [&[13, 0, 1][..], &on(i)].concat()
    }
    pub fn stat_query(i: u8) -> Vec<u8> {
        [&[13, 0, 2][..], &on(i)].concat()
    }
    /// The first known connection closes (EOF).
    pub const CLOSE_FIRST: &[u8] = &[2, 0, 0];
    /// The first hook started ends with exit 0.
    pub const HOOK_DONE: &[u8] = &[15, 0, 0];
    /// The store finds the tree published already from now on.
    pub const UNCHANGED: &[u8] = &[15, 2];
    /// `secs` seconds pass.
    pub fn wait(secs: u8) -> Vec<u8> {
        vec![15, 3, 1, secs]
    }
    /// Block checks (`Action::Verify`) wait from now on (or no longer).
    pub const HOLD_CHECKS: &[u8] = &[15, 5];
    /// A worker answers held check `i`: its verdict, or lost.
    pub fn answer(i: u8, lost: bool) -> Vec<u8> {
        vec![15, 6, i, if lost { 255 } else { 0 }]
    }
}

fn po_machine() -> Vec<(String, Vec<u8>)> {
    use po::*;
    let handshake = |flags: u8| -> Vec<u8> {
        [prelude(flags), ACCEPT.to_vec(), offer(0), CONNECT.to_vec(), verify_ok(), manifest(0)].concat()
    };
    let blocks = |i: u8| -> Vec<u8> { [block(0, i), block(1, i), block(2, i)].concat() };
    vec![
        // p2p off, md5: offer, CAC, VERIFIED, MANIFEST, three blocks, READY, COMMIT, DONE.
        ("01-control-link-p2p-off".into(), [handshake(0), blocks(0), commit(0), stat_query(0)].concat()),
        // publish each, a hook, and the dest holds the tree already: an unchanged DONE after the hook.
        (
            "02-publish-each-hook-unchanged".into(),
            [handshake(0x28), UNCHANGED.to_vec(), blocks(0), HOOK_DONE.to_vec(), commit(0)].concat(),
        ),
        // p2p on (blake3, the swarm's block check): PEERS, the neighbour dialled, the master's
        // data link, SUMS, blocks on it, PUSH.
        (
            "03-swarm-data-link-and-peer".into(),
            [
                handshake(7),
                peers(0),
                CONNECT.to_vec(),
                ACCEPT.to_vec(),
                hello_master(1),
                sums(0),
                blocks(1),
                push(0, 0),
                commit(0),
            ]
            .concat(),
        ),
        // One block, ABORT, the same tree again: CHECK on the staged block, CHECKSUMS, the rest.
        (
            "04-abort-then-check".into(),
            [
                handshake(0),
                block(0, 0),
                abort(0),
                // The old control link stays open: the new master's is accepted connection 1.
                ACCEPT.to_vec(),
                offer(1),
                CONNECT.to_vec(),
                verify_ok(),
                manifest(1),
                check_sums(0, 1),
                block(1, 1),
                block(2, 1),
                commit(1),
            ]
            .concat(),
        ),
        // The master goes away mid-transfer; the po lets go of the files after release_after,
        // then the master comes back and resumes.
        (
            "05-master-gone-release-resume".into(),
            [
                handshake(0),
                block(0, 0),
                CLOSE_FIRST.to_vec(),
                wait(40),
                ACCEPT.to_vec(),
                offer(0),
                CONNECT.to_vec(),
                verify_ok(),
                block(1, 0),
                block(2, 0),
                commit(0),
            ]
            .concat(),
        ),
        // Block checks answered out of order, one lost, then the rest at once.
        (
            "07-checks-out-of-order-and-lost".into(),
            [
                handshake(0),
                HOLD_CHECKS.to_vec(),
                blocks(0),
                answer(2, false),
                answer(0, true),
                HOLD_CHECKS.to_vec(),
                block(0, 0),
                commit(0),
            ]
            .concat(),
        ),
        // The first CAC refuses the connection, the second says no.
        (
            "06-cac-refused-then-denied".into(),
            [prelude(0), ACCEPT.to_vec(), offer(0), vec![1, 0, 255], CONNECT.to_vec(), denied(3)].concat(),
        ),
    ]
}

/// Choice sequences for `master_machine` (see its `World::step`).
mod master {
    /// Class: flags (bit 0 p2p, bits 1-2 verify, bit 3 publish each, bits 4-5 quorum, bit 6
    /// delta off) and g (retries, timeout, peers); the number of pos less one; a bad address
    /// (no); file sizes (three blocks); secret; dry run; wait (0 none, 3: 600 s).
    pub fn prelude(flags: u8, g: u8, pos_less_one: u8, secret: bool, dry_run: bool, wait: u8) -> Vec<u8> {
        vec![flags, g, pos_less_one, 0, 42, 200, secret as u8, if dry_run { 255 } else { 0 }, wait]
    }
    /// The first connection being dialled comes up.
    pub const CONNECT: &[u8] = &[0, 0, 0];
    fn on(i: u8) -> [u8; 2] {
        [0, i]
    }
    /// AUTH_GRANT with the real token, on the CAC connection.
    pub fn grant() -> Vec<u8> {
        [&[3, 0, 0][..], &on(0)].concat()
    }
    /// The CAC says another push of the class runs.
    pub fn busy() -> Vec<u8> {
        [&[4, 2, 0][..], &on(0)].concat()
    }
    pub fn challenge() -> Vec<u8> {
        [&[4, 0, 9, 0][..], &on(0)].concat()
    }
    /// Po connection `i` (of the open connections to pos) says VERIFIED.
    pub fn verified(i: u8) -> Vec<u8> {
        [&[5, 0, 1][..], &on(i)].concat()
    }
    /// CHECK of block 0.
    pub fn check(i: u8) -> Vec<u8> {
        [&[5, 0, 0, 1, 0, 0][..], &on(i)].concat()
    }
    /// ACCEPT holding nothing (one bitmap byte for three blocks).
    pub fn accept(i: u8) -> Vec<u8> {
        [&[6, 0, 2, 1, 0][..], &on(i)].concat()
    }
    pub fn have(b: u8, i: u8) -> Vec<u8> {
        [&[8, 0, 1, 0, b][..], &on(i)].concat()
    }
    pub fn ready(i: u8) -> Vec<u8> {
        [&[10, 0, 0][..], &on(i)].concat()
    }
    pub fn done(unchanged: bool, i: u8) -> Vec<u8> {
        [&[10, 0, 1, 0, unchanged as u8][..], &on(i)].concat()
    }
    pub fn failed(i: u8) -> Vec<u8> {
        [&[10, 0, 2][..], &on(i)].concat()
    }
    /// UNSENT block `b` to po 1.
    pub fn unsent(b: u8, i: u8) -> Vec<u8> {
        [&[11, 0, 0, b, 0, 1][..], &on(i)].concat()
    }
    pub fn bad(b: u8, i: u8) -> Vec<u8> {
        [&[12, 0, 0, b, 0, 1][..], &on(i)].concat()
    }
    /// SIGINT: `MasterMachine::abort`.
    pub const ABORT: &[u8] = &[14, 230];
    /// `secs` seconds pass (timeouts: PROGRESS to the CAC, pings, a busy retry).
    pub fn wait(secs: u8) -> Vec<u8> {
        vec![15, 1, secs]
    }
}

fn master_machine() -> Vec<(String, Vec<u8>)> {
    use master::*;
    // Class g = 3: no retries, timeout 60 s, 1 peer; 12: 2 peers.
    vec![
        (
            "01-one-po-p2p-off".into(),
            [
                prelude(0, 3, 0, false, false, 0),
                CONNECT.to_vec(),
                grant(),
                CONNECT.to_vec(),
                verified(0),
                accept(0),
                wait(2),
                ready(0),
                done(false, 0),
            ]
            .concat(),
        ),
        // The class is busy: with --wait the master asks again; two pos, one fails, the other
        // reports an unchanged DONE.
        (
            "02-busy-wait-two-pos-one-fails".into(),
            [
                prelude(0x10, 3, 1, false, false, 3),
                CONNECT.to_vec(),
                busy(),
                wait(2),
                CONNECT.to_vec(),
                grant(),
                CONNECT.to_vec(),
                CONNECT.to_vec(),
                verified(0),
                verified(1),
                accept(0),
                accept(1),
                failed(1),
                wait(2),
                ready(0),
                done(true, 0),
            ]
            .concat(),
        ),
        // p2p on, two pos: PEERS, data links, HAVE, UNSENT, BAD, READY, DONE.
        (
            "03-swarm-two-pos".into(),
            [
                prelude(1, 12, 1, false, false, 0),
                CONNECT.to_vec(),
                grant(),
                CONNECT.to_vec(),
                CONNECT.to_vec(),
                verified(0),
                verified(1),
                accept(0),
                accept(1),
                CONNECT.to_vec(),
                CONNECT.to_vec(),
                have(0, 0),
                have(1, 1),
                unsent(2, 0),
                bad(1, 1),
                wait(2),
                have(2, 1),
                have(1, 0),
                have(2, 0),
                ready(0),
                ready(1),
                done(false, 0),
                done(true, 1),
            ]
            .concat(),
        ),
        // A challenge for the master secret; the po checks block 0 first; then SIGINT.
        (
            "04-challenge-check-then-abort".into(),
            [
                prelude(0, 3, 0, true, false, 0),
                CONNECT.to_vec(),
                challenge(),
                grant(),
                CONNECT.to_vec(),
                verified(0),
                check(0),
                accept(0),
                wait(2),
                ABORT.to_vec(),
            ]
            .concat(),
        ),
        ("05-dry-run".into(), [prelude(0, 3, 2, false, true, 0), CONNECT.to_vec(), grant()].concat()),
    ]
}
