//! Encoding: a message to the bytes of its frame.

use super::stat::encode_stat;
use super::{BlockHead, Msg, Sum};
use crate::proto::codec::Writer;
use crate::proto::wire::{self, MsgType};
use std::sync::Arc;

impl Sum {
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
            Sum::Blake3(d) => {
                w.u8(3);
                w.raw(d);
            }
        }
    }
}

impl Msg {
    /// The whole frame, header included. A block frame includes its data.
    pub fn to_frame(&self) -> Vec<u8> {
        let mut w = Writer::new();
        wire::write_header(&mut w.buf, self.ty(), 0);
        self.encode_payload(&mut w);
        let len = (w.buf.len() - wire::HEADER_LEN) as u32;
        w.buf[4..8].copy_from_slice(&len.to_be_bytes());
        w.buf
    }

    /// The whole frame as buffers to send one after another. A manifest's shared bytes are
    /// not copied.
    pub fn to_frame_parts(&self) -> Vec<Arc<Vec<u8>>> {
        let Msg::Manifest { transfer, manifest } = self else { return vec![Arc::new(self.to_frame())] };
        let mut w = Writer::new();
        let len = 8 + 4 + manifest.len();
        wire::write_header(&mut w.buf, self.ty(), len as u32);
        w.u64(*transfer);
        w.u32(manifest.len() as u32);
        vec![Arc::new(w.buf), manifest.clone()]
    }

    fn encode_payload(&self, w: &mut Writer) {
        match self {
            Msg::AuthRequest { class } => w.str(class),
            Msg::AuthChallenge { nonce } => w.raw(nonce),
            Msg::AuthResponse { mac } => w.raw(mac),
            Msg::AuthGrant { transfer, token, pos, class, sites } => {
                w.u64(*transfer);
                w.bytes(token);
                w.u32(pos.len() as u32);
                pos.iter().for_each(|p| w.str(p));
                encode_pairs(w, class);
                w.u32(sites.len() as u32);
                sites.iter().for_each(|s| w.str(s));
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
            Msg::Offer { token, po, manifest_id, manifest_len, mode } => {
                w.bytes(token);
                w.str(po);
                w.raw(manifest_id);
                w.u64(*manifest_len);
                w.u8(*mode);
            }
            Msg::Wave { transfer, step } => {
                w.u64(*transfer);
                w.u8(*step as u8);
            }
            Msg::Preview(p) => {
                for n in [p.transfer, p.create, p.change, p.delete, p.bytes, p.more] {
                    w.u64(n);
                }
                w.u32(p.items.len() as u32);
                for (k, path) in &p.items {
                    w.u8(*k as u8);
                    w.bytes(path);
                }
            }
            Msg::Manifest { transfer, manifest } => {
                w.u64(*transfer);
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
            Msg::Ready { transfer } | Msg::Commit { transfer } | Msg::Verified { transfer } => w.u64(*transfer),
            Msg::Abort { transfer, reason } | Msg::Failed { transfer, error: reason } => {
                w.u64(*transfer);
                w.str(reason);
            }
            Msg::Done { transfer, files, bytes, hook_exit, hook_tail, unchanged } => {
                w.u64(*transfer);
                w.u64(*files);
                w.u64(*bytes);
                // Flags: bit 0 a hook exit code follows, bit 1 the push changed nothing.
                w.u8(u8::from(hook_exit.is_some()) | u8::from(*unchanged) << 1);
                if let Some(c) = hook_exit {
                    w.u32(*c as u32);
                }
                w.str(hook_tail);
            }
            Msg::Progress { stat, token } => {
                encode_stat(w, stat);
                w.bytes(token);
            }
            Msg::StatQuery | Msg::Ping => {}
            Msg::StatReply { transfers } => {
                w.u32(transfers.len() as u32);
                transfers.iter().for_each(|t| encode_stat(w, t));
            }
            Msg::Peers { transfer, me, master_key, links } => {
                w.u64(*transfer);
                w.u32(*me);
                w.raw(master_key);
                w.u32(links.len() as u32);
                for l in links {
                    w.u32(l.idx);
                    w.str(&l.addr);
                    w.raw(&l.key);
                }
            }
            Msg::PeerHello { token, me, proof } => {
                w.bytes(token);
                w.u32(*me);
                w.raw(proof);
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
            Msg::Chain { transfer, next, set } => {
                w.u64(*transfer);
                w.u32(next.len() as u32);
                next.iter().for_each(|n| w.u32(*n));
                w.bytes(set);
            }
            Msg::Bad { transfer, block, from } => {
                w.u64(*transfer);
                w.u64(*block);
                w.u32(*from);
            }
        }
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

fn encode_pairs(w: &mut Writer, pairs: &[(String, String)]) {
    w.u32(pairs.len() as u32);
    for (k, v) in pairs {
        w.str(k);
        w.str(v);
    }
}
