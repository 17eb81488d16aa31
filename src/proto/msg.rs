//! Messages, and their payload encodings (the frame header is in `wire`).

use super::codec::{invalid, DecodeError, Reader, Writer};
use super::wire::{self, MsgType, MAX_ADDRS, MAX_CLASS_PAIRS, MAX_NAME, MAX_PATH, MAX_TEXT, MAX_TOKEN};
use std::sync::Arc;

/// A block's checksum, as the master computed it from the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Sum {
    None,
    Crc32(u32),
    Md5([u8; 16]),
}

impl Sum {
    pub fn of(kind: super::class::Verify, data: &[u8]) -> Sum {
        let mut h = super::checksum::Hasher::new(kind);
        h.update(data);
        h.finish()
    }

    fn encode(&self, w: &mut Writer) {
        match self {
            Sum::None => w.u8(0),
            Sum::Crc32(c) => {
                w.u8(1);
                w.u32(*c);
            }
            Sum::Md5(m) => {
                w.u8(2);
                w.raw(m);
            }
        }
    }

    fn decode(r: &mut Reader) -> Result<Sum, DecodeError> {
        Ok(match r.u8("checksum kind")? {
            0 => Sum::None,
            1 => Sum::Crc32(r.u32("crc32")?),
            2 => Sum::Md5(r.array("md5")?),
            k => return Err(invalid("checksum kind", k.to_string())),
        })
    }
}

/// What precedes the raw bytes of a block frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockHead {
    pub transfer: u64,
    pub index: u64,
    pub sum: Sum,
}

/// An owned frame body that may start past the front of its buffer, so a block read straight
/// into one allocation is never copied again.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Payload {
    pub buf: Vec<u8>,
    pub start: usize,
}

/// Block-sized buffers are recycled: a dropped payload gives its buffer back, and the reactor
/// takes one for the next big frame. Fresh allocations of megabytes cost page faults and
/// zeroing on every block; a recycled buffer costs neither.
const POOL_MIN: usize = 64 << 10;
const POOL_KEEP: usize = 16;

thread_local! {
    static POOL: std::cell::RefCell<Vec<Vec<u8>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A buffer of exactly `len` bytes; its contents are unspecified (the caller overwrites them).
pub fn take_buffer(len: usize) -> Vec<u8> {
    if len >= POOL_MIN {
        let reused = POOL.with(|p| {
            let mut p = p.borrow_mut();
            let i = p.iter().position(|b| b.capacity() >= len)?;
            Some(p.swap_remove(i))
        });
        if let Some(mut b) = reused {
            if b.len() >= len {
                b.truncate(len);
            } else {
                b.resize(len, 0);
            }
            return b;
        }
    }
    vec![0; len]
}

impl Drop for Payload {
    fn drop(&mut self) {
        if self.buf.capacity() >= POOL_MIN {
            let b = std::mem::take(&mut self.buf);
            POOL.with(|p| {
                let mut p = p.borrow_mut();
                if p.len() < POOL_KEEP {
                    p.push(b);
                }
            });
        }
    }
}

impl Payload {
    pub fn from_vec(buf: Vec<u8>) -> Payload {
        Payload { buf, start: 0 }
    }
    pub fn bytes(&self) -> &[u8] {
        &self.buf[self.start..]
    }
    pub fn len(&self) -> usize {
        self.buf.len() - self.start
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
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

/// One po's line in a status report.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PoStat {
    pub addr: String,
    pub state: String,
    pub bytes: u64,
    pub error: String,
}

/// A transfer as `wugui-stat` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TransferStat {
    pub transfer: u64,
    pub class: String,
    pub master: String,
    pub state: String,
    /// Bytes of the tree.
    pub total: u64,
    /// Bytes held, summed over pos (so a finished transfer shows total × pos).
    pub done: u64,
    pub started_unix: u64,
    pub elapsed_ms: u64,
    /// Bytes/s over the last report interval, summed over pos.
    pub rate: u64,
    pub pos: Vec<PoStat>,
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
    /// master -> po. The encoded manifest is shared by every po's offer, so 1,000 pos do not
    /// cost 1,000 copies.
    Offer {
        token: Vec<u8>,
        po: String,
        manifest: Arc<Vec<u8>>,
    },
    /// po -> master, before ACCEPT (delta): my published copy may hold these blocks; send
    /// their MD5s.
    Check {
        transfer: u64,
        blocks: Vec<u64>,
    },
    /// master -> po: the MD5s asked for by CHECK.
    CheckSums {
        transfer: u64,
        sums: Vec<(u64, [u8; 16])>,
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
    /// po -> master: published.
    Done {
        transfer: u64,
        files: u64,
        bytes: u64,
        hook_exit: Option<i32>,
        hook_tail: String,
    },
    /// po -> master: this po gives up on the transfer.
    Failed {
        transfer: u64,
        error: String,
    },
    /// master -> cac, about once a second.
    Progress {
        stat: TransferStat,
    },
    StatQuery,
    StatReply {
        transfers: Vec<TransferStat>,
    },
    Ping,
    /// master -> po: you are po `me` of the swarm; dial these neighbours (index, address).
    Peers {
        transfer: u64,
        me: u32,
        dial: Vec<(u32, String)>,
    },
    /// po -> po, first on a peer connection: the transfer token, and who I am.
    PeerHello {
        token: Vec<u8>,
        me: u32,
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
}

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
        }
    }

    /// The whole frame, header included. A block frame includes its data.
    pub fn to_frame(&self) -> Vec<u8> {
        let mut w = Writer::new();
        wire::write_header(&mut w.buf, self.ty(), 0);
        self.encode_payload(&mut w);
        let len = (w.buf.len() - wire::HEADER_LEN) as u32;
        w.buf[4..8].copy_from_slice(&len.to_be_bytes());
        w.buf
    }

    /// The whole frame as buffers to send one after another. An offer's shared parts are
    /// not copied.
    pub fn to_frame_parts(&self) -> Vec<Arc<Vec<u8>>> {
        let Msg::Offer { token, po, manifest } = self else { return vec![Arc::new(self.to_frame())] };
        let mut w = Writer::new();
        let len = 4 + token.len() + 4 + po.len() + 4 + manifest.len();
        wire::write_header(&mut w.buf, self.ty(), len as u32);
        w.bytes(token);
        w.str(po);
        w.u32(manifest.len() as u32);
        vec![Arc::new(w.buf), manifest.clone()]
    }

    fn encode_payload(&self, w: &mut Writer) {
        match self {
            Msg::AuthRequest { class } => w.str(class),
            Msg::AuthChallenge { nonce } => w.raw(nonce),
            Msg::AuthResponse { mac } => w.raw(mac),
            Msg::AuthGrant { transfer, token, pos, class } => {
                w.u64(*transfer);
                w.bytes(token);
                w.u32(pos.len() as u32);
                pos.iter().for_each(|p| w.str(p));
                encode_pairs(w, class);
            }
            Msg::Denied { reason, text } => {
                w.u16(*reason as u16);
                w.str(text);
            }
            Msg::Verify { token, po, presenter } => {
                w.bytes(token);
                w.str(po);
                w.str(presenter);
            }
            Msg::VerifyOk { transfer, class_name, class } => {
                w.u64(*transfer);
                w.str(class_name);
                encode_pairs(w, class);
            }
            Msg::Offer { token, po, manifest } => {
                w.bytes(token);
                w.str(po);
                w.bytes(manifest);
            }
            Msg::Check { transfer, blocks } => {
                w.u64(*transfer);
                w.u32(blocks.len() as u32);
                blocks.iter().for_each(|b| w.u64(*b));
            }
            Msg::CheckSums { transfer, sums } => {
                w.u64(*transfer);
                w.u32(sums.len() as u32);
                for (b, d) in sums {
                    w.u64(*b);
                    w.raw(d);
                }
            }
            Msg::Accept { transfer, have } => {
                w.u64(*transfer);
                w.bytes(have);
            }
            Msg::Block { head, data } => {
                encode_block_head(w, head);
                w.raw(data.bytes());
            }
            Msg::Have { transfer, blocks } => {
                w.u64(*transfer);
                w.u32(blocks.len() as u32);
                blocks.iter().for_each(|b| w.u64(*b));
            }
            Msg::Ready { transfer } | Msg::Commit { transfer } => w.u64(*transfer),
            Msg::Abort { transfer, reason } | Msg::Failed { transfer, error: reason } => {
                w.u64(*transfer);
                w.str(reason);
            }
            Msg::Done { transfer, files, bytes, hook_exit, hook_tail } => {
                w.u64(*transfer);
                w.u64(*files);
                w.u64(*bytes);
                match hook_exit {
                    None => w.u8(0),
                    Some(c) => {
                        w.u8(1);
                        w.u32(*c as u32);
                    }
                }
                w.str(hook_tail);
            }
            Msg::Progress { stat } => encode_stat(w, stat),
            Msg::StatQuery | Msg::Ping => {}
            Msg::StatReply { transfers } => {
                w.u32(transfers.len() as u32);
                transfers.iter().for_each(|t| encode_stat(w, t));
            }
            Msg::Peers { transfer, me, dial } => {
                w.u64(*transfer);
                w.u32(*me);
                w.u32(dial.len() as u32);
                for (i, a) in dial {
                    w.u32(*i);
                    w.str(a);
                }
            }
            Msg::PeerHello { token, me } => {
                w.bytes(token);
                w.u32(*me);
            }
            Msg::Sums { transfer, sums } => {
                w.u64(*transfer);
                w.u32(sums.len() as u32);
                for (b, s) in sums {
                    w.u64(*b);
                    s.encode(w);
                }
            }
            Msg::Push { transfer, block, to } => {
                w.u64(*transfer);
                w.u64(*block);
                w.u32(*to);
            }
            Msg::Unsent { transfer, block, to, why } => {
                w.u64(*transfer);
                w.u64(*block);
                w.u32(*to);
                w.str(why);
            }
            Msg::Bad { transfer, block, from } => {
                w.u64(*transfer);
                w.u64(*block);
                w.u32(*from);
            }
        }
    }

    /// Decodes a payload whose header said `ty`. Takes the buffer so that a block's data is
    /// kept in place.
    pub fn decode(ty: MsgType, payload: Payload) -> Result<Msg, DecodeError> {
        if ty == MsgType::Block {
            let mut r = Reader::new(payload.bytes());
            let head = decode_block_head(&mut r)?;
            let used = payload.len() - r.left();
            if r.left() == 0 {
                return Err(invalid("block", "no data"));
            }
            let start = payload.start + used;
            let mut payload = payload;
            let buf = std::mem::take(&mut payload.buf);
            return Ok(Msg::Block { head, data: Payload { buf, start } });
        }
        let mut r = Reader::new(payload.bytes());
        let m = match ty {
            MsgType::AuthRequest => Msg::AuthRequest { class: r.str(MAX_NAME, "class")? },
            MsgType::AuthChallenge => Msg::AuthChallenge { nonce: r.array("nonce")? },
            MsgType::AuthResponse => Msg::AuthResponse { mac: r.array("mac")? },
            MsgType::AuthGrant => {
                let transfer = r.u64("transfer")?;
                let token = r.bytes(MAX_TOKEN, "token")?.to_vec();
                let n = r.count(MAX_ADDRS, 4, "po list")?;
                let mut pos = Vec::with_capacity(n);
                for _ in 0..n {
                    pos.push(r.str(MAX_NAME, "po address")?);
                }
                Msg::AuthGrant { transfer, token, pos, class: decode_pairs(&mut r)? }
            }
            MsgType::Denied => {
                let code = r.u16("reason")?;
                let reason = Reason::from_u16(code).ok_or_else(|| invalid("reason", code.to_string()))?;
                Msg::Denied { reason, text: r.str(MAX_TEXT, "reason text")? }
            }
            MsgType::Verify => Msg::Verify {
                token: r.bytes(MAX_TOKEN, "token")?.to_vec(),
                po: r.str(MAX_NAME, "po address")?,
                presenter: r.str(MAX_NAME, "presenter address")?,
            },
            MsgType::VerifyOk => Msg::VerifyOk {
                transfer: r.u64("transfer")?,
                class_name: r.str(MAX_NAME, "class")?,
                class: decode_pairs(&mut r)?,
            },
            MsgType::Offer => Msg::Offer {
                token: r.bytes(MAX_TOKEN, "token")?.to_vec(),
                po: r.str(MAX_NAME, "po address")?,
                manifest: Arc::new(r.bytes(wire::MAX_OFFER as usize, "manifest")?.to_vec()),
            },
            MsgType::Check => {
                let transfer = r.u64("transfer")?;
                let n = r.count(wire::MAX_CONTROL as usize / 8, 8, "check list")?;
                let mut blocks = Vec::with_capacity(n);
                for _ in 0..n {
                    blocks.push(r.u64("block index")?);
                }
                Msg::Check { transfer, blocks }
            }
            MsgType::CheckSums => {
                let transfer = r.u64("transfer")?;
                let n = r.count(wire::MAX_CONTROL as usize / 24, 24, "check sums")?;
                let mut sums = Vec::with_capacity(n);
                for _ in 0..n {
                    sums.push((r.u64("block index")?, r.array("md5")?));
                }
                Msg::CheckSums { transfer, sums }
            }
            MsgType::Accept => Msg::Accept {
                transfer: r.u64("transfer")?,
                have: r.bytes(wire::MAX_CONTROL as usize, "have bitmap")?.to_vec(),
            },
            MsgType::Have => {
                let transfer = r.u64("transfer")?;
                let n = r.count(wire::MAX_CONTROL as usize / 8, 8, "have list")?;
                let mut blocks = Vec::with_capacity(n);
                for _ in 0..n {
                    blocks.push(r.u64("block index")?);
                }
                Msg::Have { transfer, blocks }
            }
            MsgType::Ready => Msg::Ready { transfer: r.u64("transfer")? },
            MsgType::Commit => Msg::Commit { transfer: r.u64("transfer")? },
            MsgType::Abort => Msg::Abort { transfer: r.u64("transfer")?, reason: r.str(MAX_TEXT, "abort reason")? },
            MsgType::Failed => Msg::Failed { transfer: r.u64("transfer")?, error: r.str(MAX_TEXT, "error")? },
            MsgType::Done => {
                let transfer = r.u64("transfer")?;
                let files = r.u64("files")?;
                let bytes = r.u64("bytes")?;
                let hook_exit = match r.u8("hook flag")? {
                    0 => None,
                    1 => Some(r.u32("hook exit")? as i32),
                    v => return Err(invalid("hook flag", v.to_string())),
                };
                Msg::Done { transfer, files, bytes, hook_exit, hook_tail: r.str(MAX_TEXT, "hook tail")? }
            }
            MsgType::Progress => Msg::Progress { stat: decode_stat(&mut r)? },
            MsgType::StatQuery => Msg::StatQuery,
            MsgType::StatReply => {
                let n = r.count(10_000, 8, "transfers")?;
                let mut transfers = Vec::with_capacity(n);
                for _ in 0..n {
                    transfers.push(decode_stat(&mut r)?);
                }
                Msg::StatReply { transfers }
            }
            MsgType::Ping => Msg::Ping,
            MsgType::Peers => {
                let transfer = r.u64("transfer")?;
                let me = r.u32("po index")?;
                let n = r.count(1024, 8, "peer list")?;
                let mut dial = Vec::with_capacity(n);
                for _ in 0..n {
                    dial.push((r.u32("peer index")?, r.str(MAX_NAME, "peer address")?));
                }
                Msg::Peers { transfer, me, dial }
            }
            MsgType::PeerHello => {
                Msg::PeerHello { token: r.bytes(MAX_TOKEN, "token")?.to_vec(), me: r.u32("po index")? }
            }
            MsgType::Sums => {
                let transfer = r.u64("transfer")?;
                let n = r.count(wire::MAX_CONTROL as usize / 9, 9, "checksums")?;
                let mut sums = Vec::with_capacity(n);
                for _ in 0..n {
                    sums.push((r.u64("block index")?, Sum::decode(&mut r)?));
                }
                Msg::Sums { transfer, sums }
            }
            MsgType::Push => Msg::Push { transfer: r.u64("transfer")?, block: r.u64("block")?, to: r.u32("po index")? },
            MsgType::Unsent => Msg::Unsent {
                transfer: r.u64("transfer")?,
                block: r.u64("block")?,
                to: r.u32("po index")?,
                why: r.str(MAX_TEXT, "reason")?,
            },
            MsgType::Bad => Msg::Bad { transfer: r.u64("transfer")?, block: r.u64("block")?, from: r.u32("po index")? },
            MsgType::Block => unreachable!("handled above"),
        };
        r.finish()?;
        Ok(m)
    }

    /// Decodes one whole frame (header and payload); for tests and simple clients.
    pub fn from_frame(frame: &[u8]) -> Result<Option<(Msg, usize)>, DecodeError> {
        let Some(h) = wire::parse_header(frame)? else { return Ok(None) };
        let end = wire::HEADER_LEN + h.len as usize;
        if frame.len() < end {
            return Ok(None);
        }
        let m = Msg::decode(h.ty, Payload::from_vec(frame[wire::HEADER_LEN..end].to_vec()))?;
        Ok(Some((m, end)))
    }
}

/// Header + block head for a block frame whose `data_len` raw bytes follow separately.
pub fn block_frame_head(head: &BlockHead, data_len: u32) -> Vec<u8> {
    let mut w = Writer::new();
    wire::write_header(&mut w.buf, MsgType::Block, 0);
    encode_block_head(&mut w, head);
    let len = (w.buf.len() - wire::HEADER_LEN) as u32 + data_len;
    w.buf[4..8].copy_from_slice(&len.to_be_bytes());
    w.buf
}

fn encode_block_head(w: &mut Writer, h: &BlockHead) {
    w.u64(h.transfer);
    w.u64(h.index);
    h.sum.encode(w);
}

fn decode_block_head(r: &mut Reader) -> Result<BlockHead, DecodeError> {
    Ok(BlockHead { transfer: r.u64("transfer")?, index: r.u64("block index")?, sum: Sum::decode(r)? })
}

fn encode_pairs(w: &mut Writer, pairs: &[(String, String)]) {
    w.u32(pairs.len() as u32);
    for (k, v) in pairs {
        w.str(k);
        w.str(v);
    }
}

fn decode_pairs(r: &mut Reader) -> Result<Vec<(String, String)>, DecodeError> {
    let n = r.count(MAX_CLASS_PAIRS, 8, "class settings")?;
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        v.push((r.str(MAX_NAME, "class key")?, r.str(MAX_PATH, "class value")?));
    }
    Ok(v)
}

fn encode_stat(w: &mut Writer, t: &TransferStat) {
    w.u64(t.transfer);
    w.str(&t.class);
    w.str(&t.master);
    w.str(&t.state);
    w.u64(t.total);
    w.u64(t.done);
    w.u64(t.started_unix);
    w.u64(t.elapsed_ms);
    w.u64(t.rate);
    w.u32(t.pos.len() as u32);
    for p in &t.pos {
        w.str(&p.addr);
        w.str(&p.state);
        w.u64(p.bytes);
        w.str(&p.error);
    }
}

fn decode_stat(r: &mut Reader) -> Result<TransferStat, DecodeError> {
    let mut t = TransferStat {
        transfer: r.u64("transfer")?,
        class: r.str(MAX_NAME, "class")?,
        master: r.str(MAX_NAME, "master")?,
        state: r.str(MAX_NAME, "state")?,
        total: r.u64("total")?,
        done: r.u64("done")?,
        started_unix: r.u64("started")?,
        elapsed_ms: r.u64("elapsed")?,
        rate: r.u64("rate")?,
        pos: Vec::new(),
    };
    let n = r.count(MAX_ADDRS, 20, "po stats")?;
    t.pos.reserve(n);
    for _ in 0..n {
        t.pos.push(PoStat {
            addr: r.str(MAX_NAME, "po address")?,
            state: r.str(MAX_NAME, "po state")?,
            bytes: r.u64("po bytes")?,
            error: r.str(MAX_TEXT, "po error")?,
        });
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
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
            },
            Msg::Denied { reason: Reason::BadToken, text: "no".into() },
            Msg::Verify { token: vec![1], po: "p".into(), presenter: "1.2.3.4".into() },
            Msg::VerifyOk { transfer: 1, class_name: "c".into(), class: vec![] },
            Msg::Offer { token: vec![1], po: "p".into(), manifest: Arc::new(vec![0; 10]) },
            Msg::Check { transfer: 1, blocks: vec![3, 9] },
            Msg::CheckSums { transfer: 1, sums: vec![(3, [7; 16]), (9, [8; 16])] },
            Msg::Accept { transfer: 1, have: vec![0xff] },
            Msg::Block {
                head: BlockHead { transfer: 1, index: 2, sum: Sum::Md5([7; 16]) },
                data: Payload::from_vec(vec![1, 2, 3]),
            },
            Msg::Have { transfer: 1, blocks: vec![1, 5] },
            Msg::Ready { transfer: 1 },
            Msg::Commit { transfer: 1 },
            Msg::Abort { transfer: 1, reason: "x".into() },
            Msg::Done { transfer: 1, files: 2, bytes: 3, hook_exit: Some(-1), hook_tail: "t".into() },
            Msg::Failed { transfer: 1, error: "disk full".into() },
            Msg::Progress { stat: stat.clone() },
            Msg::StatQuery,
            Msg::StatReply { transfers: vec![stat] },
            Msg::Ping,
            Msg::Peers { transfer: 1, me: 2, dial: vec![(3, "127.0.0.1:9".into())] },
            Msg::PeerHello { token: vec![9; 40], me: 4 },
            Msg::Sums { transfer: 1, sums: vec![(0, Sum::Crc32(5)), (7, Sum::Md5([1; 16])), (9, Sum::None)] },
            Msg::Push { transfer: 1, block: 2, to: 3 },
            Msg::Unsent { transfer: 1, block: 2, to: 3, why: "no link".into() },
            Msg::Bad { transfer: 1, block: 2, from: 3 },
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
        let mut x: u64 = 0x9e3779b97f4a7c15;
        let mut rnd = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
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
}
