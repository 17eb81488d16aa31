//! Decoding: a frame's payload to a message, checking every count against its limit before
//! allocating.

use super::stat::decode_stat;
use super::{BlockHead, Msg, Payload, PeerLink, Preview, PreviewKind, Reason, Sum, WaveStep, MAX_PREVIEW_ITEMS};
use crate::proto::codec::{invalid, DecodeError, Reader};
use crate::proto::sites;
use crate::proto::wire::{self, MsgType, MAX_ADDRS, MAX_CLASS_PAIRS, MAX_NAME, MAX_PATH, MAX_TEXT, MAX_TOKEN};
use std::sync::Arc;

impl Sum {
    fn decode(r: &mut Reader) -> Result<Sum, DecodeError> {
        Ok(match r.u8("checksum kind")? {
            0 => Sum::None,
            1 => Sum::Crc32(r.u32("crc32")?),
            2 => Sum::Md5(r.array("md5")?),
            3 => Sum::Blake3(r.array("blake3")?),
            k => return Err(invalid("checksum kind", k.to_string())),
        })
    }
}

impl Msg {
    /// Decodes a payload whose header said `ty`. Takes the buffer so that a block's data is
    /// kept in place.
    pub fn decode(ty: MsgType, payload: Payload) -> Result<Msg, DecodeError> {
        if ty == MsgType::Block {
            return decode_block(payload);
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
                let class = decode_pairs(&mut r)?;
                // None, or one a po, each a label or empty (checked again as labels by the master).
                let k = r.count(MAX_ADDRS, 4, "site list")?;
                if k != 0 && k != n {
                    return Err(invalid("site list", format!("{k} labels for {n} pos")));
                }
                let sites = (0..k).map(|_| r.str(sites::MAX_LABEL, "site label")).collect::<Result<_, _>>()?;
                Msg::AuthGrant { transfer, token, pos, class, sites }
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
                manifest_id: r.array("manifest id")?,
                manifest_len: r.u64("manifest length")?,
                mode: match r.u8("offer mode")? {
                    m if m & !(super::OFFER_DRY_RUN | super::OFFER_HOLD | super::OFFER_ITEMIZE) == 0 => m,
                    m => return Err(invalid("offer mode", m.to_string())),
                },
            },
            MsgType::Wave => {
                let transfer = r.u64("transfer")?;
                let step = match r.u8("wave step")? {
                    1 => WaveStep::Canary,
                    2 => WaveStep::Rollback,
                    3 => WaveStep::Decided,
                    s => return Err(invalid("wave step", s.to_string())),
                };
                Msg::Wave { transfer, step }
            }
            MsgType::Preview => {
                let mut p = Preview::default();
                for n in [&mut p.transfer, &mut p.create, &mut p.change, &mut p.delete, &mut p.bytes, &mut p.more] {
                    *n = r.u64("preview count")?;
                }
                let n = r.count(MAX_PREVIEW_ITEMS, 5, "preview items")?;
                p.items.reserve(n);
                for _ in 0..n {
                    let kind = match r.u8("preview kind")? {
                        1 => PreviewKind::CreateFile,
                        2 => PreviewKind::ChangeFile,
                        3 => PreviewKind::CreateDir,
                        4 => PreviewKind::CreateLink,
                        5 => PreviewKind::ChangeLink,
                        6 => PreviewKind::Delete,
                        k => return Err(invalid("preview kind", k.to_string())),
                    };
                    p.items.push((kind, r.bytes(MAX_PATH, "preview path")?.to_vec()));
                }
                Msg::Preview(Box::new(p))
            }
            MsgType::Verified => Msg::Verified { transfer: r.u64("transfer")? },
            MsgType::Manifest => Msg::Manifest {
                transfer: r.u64("transfer")?,
                manifest: Arc::new(r.bytes(wire::MAX_MANIFEST as usize, "manifest")?.to_vec()),
            },
            MsgType::Check => Msg::Check { transfer: r.u64("transfer")?, blocks: block_list(&mut r, "check list")? },
            MsgType::CheckSums => {
                let transfer = r.u64("transfer")?;
                let n = r.count(wire::MAX_CONTROL as usize / 40, 40, "check sums")?;
                let mut sums = Vec::with_capacity(n);
                for _ in 0..n {
                    sums.push((r.u64("block index")?, r.array("digest")?));
                }
                Msg::CheckSums { transfer, sums }
            }
            MsgType::Accept => Msg::Accept {
                transfer: r.u64("transfer")?,
                have: r.bytes(wire::MAX_CONTROL as usize, "have bitmap")?.to_vec(),
            },
            MsgType::Have => Msg::Have { transfer: r.u64("transfer")?, blocks: block_list(&mut r, "have list")? },
            MsgType::Ready => Msg::Ready { transfer: r.u64("transfer")? },
            MsgType::Commit => Msg::Commit { transfer: r.u64("transfer")? },
            MsgType::Abort => Msg::Abort { transfer: r.u64("transfer")?, reason: r.str(MAX_TEXT, "abort reason")? },
            MsgType::Failed => Msg::Failed { transfer: r.u64("transfer")?, error: r.str(MAX_TEXT, "error")? },
            MsgType::Done => {
                let transfer = r.u64("transfer")?;
                let files = r.u64("files")?;
                let bytes = r.u64("bytes")?;
                let flags = r.u8("hook flag")?;
                if flags > 3 {
                    return Err(invalid("hook flag", flags.to_string()));
                }
                let hook_exit = if flags & 1 != 0 { Some(r.u32("hook exit")? as i32) } else { None };
                let hook_tail = r.str(MAX_TEXT, "hook tail")?;
                Msg::Done { transfer, files, bytes, hook_exit, hook_tail, unchanged: flags & 2 != 0 }
            }
            MsgType::Progress => {
                Msg::Progress { stat: decode_stat(&mut r)?, token: r.bytes(MAX_TOKEN, "token")?.to_vec() }
            }
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
                let master_key = r.array("master key")?;
                let n = r.count(1024, 40, "peer list")?;
                let mut links = Vec::with_capacity(n);
                for _ in 0..n {
                    let idx = r.u32("peer index")?;
                    let addr = r.str(MAX_NAME, "peer address")?;
                    links.push(PeerLink { idx, addr, key: r.array("link key")? });
                }
                Msg::Peers { transfer, me, master_key, links }
            }
            MsgType::PeerHello => Msg::PeerHello {
                token: r.bytes(MAX_TOKEN, "token")?.to_vec(),
                me: r.u32("po index")?,
                proof: r.array("link proof")?,
            },
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
            MsgType::Chain => {
                let transfer = r.u64("transfer")?;
                let k = r.count(wire::MAX_STRIPES, 4, "stripes")?;
                if k == 0 {
                    return Err(invalid("stripes", "0"));
                }
                let next = (0..k).map(|_| r.u32("successor")).collect::<Result<_, _>>()?;
                Msg::Chain { transfer, next, set: r.bytes(wire::MAX_CONTROL as usize, "chain set")?.to_vec() }
            }
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

/// A block frame: its head, then data that stays where it was read.
fn decode_block(mut payload: Payload) -> Result<Msg, DecodeError> {
    let mut r = Reader::new(payload.bytes());
    let head = decode_block_head(&mut r)?;
    let used = payload.len() - r.left();
    if r.left() == 0 {
        return Err(invalid("block", "no data"));
    }
    payload.start += used;
    Ok(Msg::Block { head, data: payload })
}

fn decode_block_head(r: &mut Reader) -> Result<BlockHead, DecodeError> {
    Ok(BlockHead { transfer: r.u64("transfer")?, index: r.u64("block index")?, sum: Sum::decode(r)? })
}

fn decode_pairs(r: &mut Reader) -> Result<Vec<(String, String)>, DecodeError> {
    let n = r.count(MAX_CLASS_PAIRS, 8, "class settings")?;
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        v.push((r.str(MAX_NAME, "class key")?, r.str(MAX_PATH, "class value")?));
    }
    Ok(v)
}

/// A counted list of block indices (CHECK, HAVE), its count checked before allocating.
fn block_list(r: &mut Reader, what: &'static str) -> Result<Vec<u64>, DecodeError> {
    let n = r.count(wire::MAX_CONTROL as usize / 8, 8, what)?;
    (0..n).map(|_| r.u64("block index")).collect()
}
