//! Messages and their payload encodings (the frame header is in `wire`): the types here, the
//! codec tables in `encode` and `decode`.

mod decode;
mod encode;
mod payload;
mod stat;
#[cfg(test)]
mod tests;

pub use encode::block_frame_head;
pub use payload::{Payload, Recycle};
pub use stat::{PoStat, TransferStat};

use super::wire::MsgType;
use std::sync::Arc;

/// A block's checksum, as the master computed it from the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Sum {
    None,
    Crc32(u32),
    Md5([u8; 16]),
    Blake3(Digest),
}

/// The project's block digest: BLAKE3, 32 bytes (see [`crate::proto::checksum::digest`]).
pub type Digest = [u8; 32];

/// One neighbour in `Msg::Peers`: its index, its address if we dial it (empty: it dials us),
/// and the key of our link, which the master derived for this pair alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerLink {
    pub idx: u32,
    pub addr: String,
    pub key: Digest,
}

impl Sum {
    pub fn of(kind: super::class::Verify, data: &[u8]) -> Sum {
        let mut h = super::checksum::Hasher::new(kind);
        h.update(data);
        h.finish()
    }

    /// The kind of checksum this is.
    pub fn kind(self) -> super::class::Verify {
        use super::class::Verify;
        match self {
            Sum::None => Verify::None,
            Sum::Crc32(_) => Verify::Crc32,
            Sum::Md5(_) => Verify::Md5,
            Sum::Blake3(_) => Verify::Blake3,
        }
    }
}

/// What precedes the raw bytes of a block frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockHead {
    pub transfer: u64,
    pub index: u64,
    pub sum: Sum,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum Reason {
    UnknownClass = 1,
    MasterNotAllowed = 2,
    BadToken = 3,
    Expired = 4,
    PoNotInClass = 5,
    DestNotAllowed = 6,
    Busy = 7,
    BadManifest = 8,
    Internal = 9,
    ChallengeFailed = 10,
    NoCac = 11,
    Protocol = 12,
    Disk = 13,
    /// Deliberately vague: telling the requester more would help an attacker.
    Refused = 14,
}

impl Reason {
    pub fn from_u16(v: u16) -> Option<Reason> {
        use Reason::*;
        Some(match v {
            1 => UnknownClass,
            2 => MasterNotAllowed,
            3 => BadToken,
            4 => Expired,
            5 => PoNotInClass,
            6 => DestNotAllowed,
            7 => Busy,
            8 => BadManifest,
            9 => Internal,
            10 => ChallengeFailed,
            11 => NoCac,
            12 => Protocol,
            13 => Disk,
            14 => Refused,
            _ => return None,
        })
    }
    pub fn name(self) -> &'static str {
        use Reason::*;
        match self {
            UnknownClass => "unknown_class",
            MasterNotAllowed => "master_not_allowed",
            BadToken => "bad_token",
            Expired => "expired",
            PoNotInClass => "po_not_in_class",
            DestNotAllowed => "dest_not_allowed",
            Busy => "busy",
            BadManifest => "bad_manifest",
            Internal => "internal",
            ChallengeFailed => "challenge_failed",
            NoCac => "no_cac",
            Protocol => "protocol",
            Disk => "disk",
            Refused => "refused",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Msg {
    /// master -> cac: may I push this class?
    AuthRequest {
        class: String,
    },
    /// cac -> master: prove you know the class secret (HMAC of this nonce).
    AuthChallenge {
        nonce: [u8; 32],
    },
    /// master -> cac
    AuthResponse {
        mac: [u8; 32],
    },
    /// cac -> master
    AuthGrant {
        transfer: u64,
        token: Vec<u8>,
        pos: Vec<String>,
        class: Vec<(String, String)>,
        /// Each po's site label (`""`: the master's site), or none when the class has none.
        sites: Vec<String>,
    },
    /// anyone -> anyone, then close.
    Denied {
        reason: Reason,
        text: String,
    },
    /// po -> cac: is this token good, and was it presented by `presenter` to po `po`?
    Verify {
        token: Vec<u8>,
        po: String,
        presenter: String,
    },
    /// cac -> po
    VerifyOk {
        transfer: u64,
        class_name: String,
        class: Vec<(String, String)>,
    },
    /// master -> po: the token, and which manifest (its id and encoded length), so that the po
    /// can recognise a resume and refuse a size before it reads anything big. The manifest
    /// itself comes only once the CAC vouched for the token (`Verified`, then `Manifest`).
    /// `po` is the address the master dialled: the po never presents it to the CAC.
    Offer {
        token: Vec<u8>,
        po: String,
        manifest_id: [u8; 16],
        manifest_len: u64,
        /// `OFFER_DRY_RUN` | `OFFER_HOLD`; any other bit is refused at decoding.
        mode: u8,
    },
    /// po -> master: the CAC vouched for the token; send the manifest.
    Verified {
        transfer: u64,
    },
    /// master -> po, after `Verified`. The encoded manifest is shared by every po's copy, so
    /// 1,000 pos do not cost 1,000 copies.
    Manifest {
        transfer: u64,
        manifest: Arc<Vec<u8>>,
    },
    /// po -> master, before ACCEPT (delta): my published copy may hold these blocks; send
    /// their MD5s.
    Check {
        transfer: u64,
        blocks: Vec<u64>,
    },
    /// master -> po: the block digests (BLAKE3) asked for by CHECK.
    CheckSums {
        transfer: u64,
        sums: Vec<(u64, Digest)>,
    },
    /// po -> master: I take it; these blocks I already hold (a bitmap, bit i = block i).
    Accept {
        transfer: u64,
        have: Vec<u8>,
    },
    Block {
        head: BlockHead,
        data: Payload,
    },
    /// po -> master: verified and written.
    Have {
        transfer: u64,
        blocks: Vec<u64>,
    },
    /// po -> master: every block held.
    Ready {
        transfer: u64,
    },
    Commit {
        transfer: u64,
    },
    Abort {
        transfer: u64,
        reason: String,
    },
    /// po -> master: published; `unchanged`: the dest held the tree already, so nothing
    /// was written (and the hook ran only with `hook_on_unchanged`).
    Done {
        transfer: u64,
        files: u64,
        bytes: u64,
        hook_exit: Option<i32>,
        hook_tail: String,
        unchanged: bool,
    },
    /// po -> master: this po gives up on the transfer.
    Failed {
        transfer: u64,
        error: String,
    },
    /// master -> cac, about once a second, with the transfer's token: a CAC that does not
    /// know the transfer (it restarted, or another replica granted it) adopts it only if the
    /// token vouches for the transfer, class and master.
    Progress {
        stat: TransferStat,
        token: Vec<u8>,
    },
    StatQuery,
    StatReply {
        transfers: Vec<TransferStat>,
    },
    Ping,
    /// master -> po: you are po `me` of the swarm; these are your neighbours, each with the
    /// key of your link (dial those with an address); `master_key` proves the master's data link.
    Peers {
        transfer: u64,
        me: u32,
        master_key: Digest,
        links: Vec<PeerLink>,
    },
    /// po -> po (and the master's data link), first on the connection: the transfer token, who
    /// I am, and the key of our link as the master issued it, which proves it.
    PeerHello {
        token: Vec<u8>,
        me: u32,
        proof: Digest,
    },
    /// master -> every po: checksums of blocks, for verifying what peers send.
    Sums {
        transfer: u64,
        sums: Vec<(u64, Sum)>,
    },
    /// master -> po: send block `block` to po `to`.
    Push {
        transfer: u64,
        block: u64,
        to: u32,
    },
    /// po -> master: that push did not happen.
    Unsent {
        transfer: u64,
        block: u64,
        to: u32,
        why: String,
    },
    /// po -> master: po `from` sent a corrupt `block`.
    Bad {
        transfer: u64,
        block: u64,
        from: u32,
    },
    /// master -> po: a step of a canary wave (README "Canary waves").
    Wave {
        transfer: u64,
        step: WaveStep,
    },
    /// po -> master, for a dry-run offer: what a push would do here.
    Preview(Box<Preview>),
    /// master -> po, when the chains are planned and when they change: the po that gets each
    /// block of stripe `s` (`block % next.len()`) that we verified, if the block is in `set`
    /// (a have-bitmap); `NO_NEXT`: nobody (we are that stripe's tail). po -> master, with an
    /// empty `set`: the po follows it now.
    Chain {
        transfer: u64,
        next: Vec<u32>,
        set: Vec<u8>,
    },
}

/// OFFER mode bit: a dry run; the po stages nothing and answers PREVIEW.
pub const OFFER_DRY_RUN: u8 = 1;
/// OFFER mode bit: publish only on the master's word, even with `publish = each` (a canary
/// wave decides the order).
pub const OFFER_HOLD: u8 = 2;
/// OFFER mode bit, with `OFFER_DRY_RUN`: list the paths (`-i`).
pub const OFFER_ITEMIZE: u8 = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum WaveStep {
    /// Publish as a canary: keep what is replaced aside until the wave is decided.
    Canary = 1,
    /// The canaries failed: put the old tree back.
    Rollback = 2,
    /// The wave is decided: drop what was kept aside.
    Decided = 3,
}

/// What a push would change on one po. `items` holds at most `MAX_PREVIEW_ITEMS` paths
/// (only when the master asked for them); `more` counts the rest.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Preview {
    pub transfer: u64,
    pub create: u64,
    pub change: u64,
    pub delete: u64,
    /// Bytes that would travel to this po (blocks it lacks).
    pub bytes: u64,
    pub items: Vec<(PreviewKind, Vec<u8>)>,
    pub more: u64,
}

/// The most paths one PREVIEW lists (500 paths of 4 KiB fit a control frame); the counts
/// cover the rest.
pub const MAX_PREVIEW_ITEMS: usize = 500;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum PreviewKind {
    CreateFile = 1,
    ChangeFile = 2,
    CreateDir = 3,
    CreateLink = 4,
    ChangeLink = 5,
    Delete = 6,
}

/// `Msg::Chain`'s "no successor in this stripe".
pub const NO_NEXT: u32 = u32::MAX;

impl Msg {
    pub fn ty(&self) -> MsgType {
        match self {
            Msg::AuthRequest { .. } => MsgType::AuthRequest,
            Msg::AuthChallenge { .. } => MsgType::AuthChallenge,
            Msg::AuthResponse { .. } => MsgType::AuthResponse,
            Msg::AuthGrant { .. } => MsgType::AuthGrant,
            Msg::Denied { .. } => MsgType::Denied,
            Msg::Verify { .. } => MsgType::Verify,
            Msg::VerifyOk { .. } => MsgType::VerifyOk,
            Msg::Offer { .. } => MsgType::Offer,
            Msg::Verified { .. } => MsgType::Verified,
            Msg::Manifest { .. } => MsgType::Manifest,
            Msg::Check { .. } => MsgType::Check,
            Msg::CheckSums { .. } => MsgType::CheckSums,
            Msg::Accept { .. } => MsgType::Accept,
            Msg::Block { .. } => MsgType::Block,
            Msg::Have { .. } => MsgType::Have,
            Msg::Ready { .. } => MsgType::Ready,
            Msg::Commit { .. } => MsgType::Commit,
            Msg::Abort { .. } => MsgType::Abort,
            Msg::Done { .. } => MsgType::Done,
            Msg::Failed { .. } => MsgType::Failed,
            Msg::Progress { .. } => MsgType::Progress,
            Msg::StatQuery => MsgType::StatQuery,
            Msg::StatReply { .. } => MsgType::StatReply,
            Msg::Ping => MsgType::Ping,
            Msg::Peers { .. } => MsgType::Peers,
            Msg::PeerHello { .. } => MsgType::PeerHello,
            Msg::Sums { .. } => MsgType::Sums,
            Msg::Push { .. } => MsgType::Push,
            Msg::Unsent { .. } => MsgType::Unsent,
            Msg::Bad { .. } => MsgType::Bad,
            Msg::Wave { .. } => MsgType::Wave,
            Msg::Preview(_) => MsgType::Preview,
            Msg::Chain { .. } => MsgType::Chain,
        }
    }
}
