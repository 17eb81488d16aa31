//! Frame layout: the contract between every two wugui processes.
//!
//! ```text
//! offset  size  field
//!      0     2  magic   b"WG"
//!      2     1  version VERSION
//!      3     1  type    a `MsgType` byte
//!      4     4  length  payload bytes that follow, big-endian
//!      8     -  payload
//! ```
//!
//! A successful `parse_header` guarantees: the magic and version match, the type is known, and
//! `length` is within that type's limit (`max_payload`). The payload itself is checked by
//! `msg::decode`. Block frames carry a `BlockHead` and then the raw block bytes, so a sender can
//! write the head and `sendfile` the body.

use super::codec::DecodeError;

pub const MAGIC: [u8; 2] = *b"WG";
/// 3: OFFER carries the manifest's id and length, the manifest follows the CAC's word (issue 14).
/// 4: DONE's flag byte says whether the push changed nothing (issue 15).
/// 5: PROGRESS ends with the transfer's token (at most `MAX_TOKEN` bytes), so a CAC that does
///    not know the transfer (a restart, another replica) adopts it only on the token's word.
/// 6: manifest paths and symlink targets are bytes (any name Linux allows), every entry carries
///    its uid and gid, and hard links travel as link entries (issue 20).
/// 7: AUTH_GRANT ends with each po's site label (or none), and a transfer's status with its
///    bytes per site link (issue 17).
/// 7: OFFER ends with a mode byte (dry run, hold for COMMIT); WAVE and PREVIEW (issue 19).
pub const VERSION: u8 = 7;
pub const HEADER_LEN: usize = 8;

/// Largest block a class may configure.
pub const MAX_BLOCK: u32 = 64 << 20;
/// Control messages (everything but blocks and manifests).
pub const MAX_CONTROL: u32 = 4 << 20;
/// The encoded manifest (`Msg::Manifest`).
pub const MAX_MANIFEST: u32 = 256 << 20;
/// Frames an accepted connection may send before the machine vouched for it
/// (`Action::FrameLimit`): enough for OFFER, PEER_HELLO, AUTH_REQUEST, VERIFY, STAT_QUERY. So
/// before a token is verified, a connection costs at most this much memory.
pub const MAX_PREAUTH: u32 = 64 << 10;
/// A connection limit that leaves only the per-type ones.
pub const NO_FRAME_LIMIT: u32 = u32::MAX;
/// Limits inside payloads.
pub const MAX_NAME: usize = 255;
pub const MAX_PATH: usize = 4096;
pub const MAX_TOKEN: usize = 512;
pub const MAX_TEXT: usize = 4096;
pub const MAX_ADDRS: usize = 100_000;
pub const MAX_ENTRIES: usize = 10_000_000;
pub const MAX_CLASS_PAIRS: usize = 256;
/// Stripes a chain plan may have (`Msg::Chain`).
pub const MAX_STRIPES: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum MsgType {
    AuthRequest = 1,
    AuthChallenge = 2,
    AuthResponse = 3,
    AuthGrant = 4,
    Denied = 5,
    Verify = 6,
    VerifyOk = 7,
    Offer = 8,
    Accept = 9,
    Block = 10,
    Have = 11,
    Ready = 12,
    Commit = 13,
    Abort = 14,
    Done = 15,
    Failed = 16,
    Progress = 17,
    StatQuery = 18,
    StatReply = 19,
    Ping = 20,
    Peers = 21,
    PeerHello = 22,
    Sums = 23,
    Push = 24,
    Unsent = 25,
    Bad = 26,
    Check = 27,
    CheckSums = 28,
    Manifest = 29,
    Verified = 30,
    Wave = 31,
    Preview = 32,
    Chain = 33,
}

impl MsgType {
    pub const fn from_u8(b: u8) -> Option<MsgType> {
        use MsgType::*;
        Some(match b {
            1 => AuthRequest,
            2 => AuthChallenge,
            3 => AuthResponse,
            4 => AuthGrant,
            5 => Denied,
            6 => Verify,
            7 => VerifyOk,
            8 => Offer,
            9 => Accept,
            10 => Block,
            11 => Have,
            12 => Ready,
            13 => Commit,
            14 => Abort,
            15 => Done,
            16 => Failed,
            17 => Progress,
            18 => StatQuery,
            19 => StatReply,
            20 => Ping,
            21 => Peers,
            22 => PeerHello,
            23 => Sums,
            24 => Push,
            25 => Unsent,
            26 => Bad,
            27 => Check,
            28 => CheckSums,
            29 => Manifest,
            30 => Verified,
            31 => Wave,
            32 => Preview,
            33 => Chain,
            _ => return None,
        })
    }

    pub const fn max_payload(self) -> u32 {
        match self {
            MsgType::Block => MAX_BLOCK + 64,
            MsgType::Manifest => MAX_MANIFEST,
            _ => MAX_CONTROL,
        }
    }
}

/// A set of message types: what a process takes on a connection (`Action::FrameTypes`); a frame
/// of any other type is refused at its header, before its payload is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TypeSet(u64);

// Every type is a bit of a u64.
const _: () = assert!((MsgType::Chain as u8) < 64);

impl TypeSet {
    pub const ALL: TypeSet = TypeSet(u64::MAX);

    pub const fn of(types: &[MsgType]) -> TypeSet {
        let (mut bits, mut i) = (0u64, 0);
        while i < types.len() {
            bits |= 1 << types[i] as u8;
            i += 1;
        }
        TypeSet(bits)
    }

    pub const fn contains(self, ty: MsgType) -> bool {
        self.0 & (1 << ty as u8) != 0
    }

    /// The largest payload a frame of one of these types may have (`MsgType::max_payload`).
    pub const fn max_payload(self) -> u32 {
        let (mut max, mut b) = (0, 0u8);
        while b < 64 {
            if let Some(ty) = MsgType::from_u8(b) {
                if self.contains(ty) && ty.max_payload() > max {
                    max = ty.max_payload();
                }
            }
            b += 1;
        }
        max
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub ty: MsgType,
    pub len: u32,
}

/// `Ok(None)`: fewer than `HEADER_LEN` bytes so far. `Err`: the peer is not speaking our protocol.
pub fn parse_header(buf: &[u8]) -> Result<Option<Header>, DecodeError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    if buf[0..2] != MAGIC {
        return Err(DecodeError::Invalid { what: "frame magic", why: format!("{:02x}{:02x}", buf[0], buf[1]) });
    }
    if buf[2] != VERSION {
        return Err(DecodeError::Invalid { what: "frame version", why: format!("{} (we speak {VERSION})", buf[2]) });
    }
    let ty =
        MsgType::from_u8(buf[3]).ok_or_else(|| DecodeError::Invalid { what: "frame type", why: buf[3].to_string() })?;
    let len = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
    if len > ty.max_payload() {
        return Err(DecodeError::TooLong { what: "frame", len: len as u64, max: ty.max_payload() as u64 });
    }
    Ok(Some(Header { ty, len }))
}

pub fn write_header(out: &mut Vec<u8>, ty: MsgType, len: u32) {
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.push(ty as u8);
    out.extend_from_slice(&len.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_checks() {
        assert_eq!(parse_header(b"WG\x01"), Ok(None));
        let mut b = Vec::new();
        write_header(&mut b, MsgType::Ping, 0);
        assert_eq!(parse_header(&b), Ok(Some(Header { ty: MsgType::Ping, len: 0 })));
        b[0] = b'X';
        assert!(parse_header(&b).is_err());
        let mut b = Vec::new();
        write_header(&mut b, MsgType::Ping, MAX_CONTROL + 1);
        assert!(matches!(parse_header(&b), Err(DecodeError::TooLong { .. })));
        let mut b = Vec::new();
        write_header(&mut b, MsgType::Block, MAX_CONTROL + 1);
        assert!(parse_header(&b).unwrap().is_some());
        b[3] = 200;
        assert!(parse_header(&b).is_err());
    }

    #[test]
    fn type_sets() {
        let s = TypeSet::of(&[MsgType::Ping, MsgType::Progress]);
        assert!(s.contains(MsgType::Ping) && s.contains(MsgType::Progress));
        assert!(!s.contains(MsgType::Manifest) && !s.contains(MsgType::Block));
        assert_eq!(s.max_payload(), MAX_CONTROL);
        assert_eq!(TypeSet::of(&[MsgType::Block]).max_payload(), MAX_BLOCK + 64);
        assert_eq!(TypeSet::ALL.max_payload(), MAX_MANIFEST);
        assert!((1..=32).all(|b| TypeSet::ALL.contains(MsgType::from_u8(b).unwrap())));
    }
}
