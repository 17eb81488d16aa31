//! What a po says on its control link (or the master's data link to it), one handler per
//! message. A message that does not fit the po's state, or names another transfer, is a
//! protocol error that fails the po.

use super::state::{PoState, State};
use super::MasterMachine;
use crate::proto::bitmap::bit;
use crate::proto::class::{Publish, Verify};
use crate::proto::msg::{PeerLink, Reason};
use crate::proto::swarm::{self, Src};
use crate::proto::wire::MAX_CONTROL;
use crate::proto::{auth, Action, Msg, Sum};
use std::time::Instant;

/// The most blocks one CHECKSUMS answer carries (40 bytes each).
const MAX_CHECK: usize = (MAX_CONTROL as usize - 64) / 40;

impl MasterMachine {
    pub(super) fn on_po_frame(&mut self, now: Instant, i: usize, msg: Msg) {
        let Some(plan) = self.plan.as_ref() else { return };
        let transfer = plan.transfer;
        match (self.pos[i].kind(), msg) {
            // A po still deciding cannot be the last to finish, so nothing more to do.
            (PoState::Offered, Msg::Check { transfer: t, blocks }) if t == transfer => {
                return self.on_check(now, i, blocks)
            }
            (PoState::Offered, Msg::Verified { transfer: t }) if t == transfer => self.on_verified(now, i),
            (PoState::Offered, Msg::Preview(p)) if p.transfer == transfer && self.dry.is_some() => {
                self.on_preview(i, p)
            }
            (PoState::Offered, Msg::Accept { transfer: t, have }) if t == transfer => self.on_accept(i, &have),
            (PoState::Sending | PoState::Ready, Msg::Have { transfer: t, blocks }) if t == transfer => {
                self.on_have(now, i, blocks)
            }
            (_, Msg::Unsent { transfer: t, block, to, why }) if t == transfer => {
                self.on_unsent(now, i, block, to, &why)
            }
            (_, Msg::Bad { transfer: t, block, from }) if t == transfer => self.on_bad(now, i, block, from),
            (_, Msg::Chain { transfer: t, set, .. }) if t == transfer && set.is_empty() => self.on_chain_ack(i),
            (PoState::Sending | PoState::Offered, Msg::Ready { transfer: t }) if t == transfer => self.on_ready(i),
            (
                PoState::Ready | PoState::Committing | PoState::Sending,
                Msg::Done { transfer: t, files, bytes, hook_exit, hook_tail, unchanged },
            ) if t == transfer => self.on_done(i, (files, bytes, unchanged), hook_exit, hook_tail),
            (_, Msg::Failed { transfer: t, error }) if t == transfer => self.on_failed(i, error),
            (_, Msg::Denied { reason, text }) => {
                let e = format!("refused ({}): {text}", reason.name());
                // Both pass: the po could not ask a CAC, or had too many offers waiting.
                if matches!(reason, Reason::NoCac | Reason::Busy) {
                    self.po_lost(now, i, e)
                } else {
                    self.po_fail(i, e)
                }
            }
            (_, Msg::Ping) => {}
            (s, other) => {
                let e = format!("protocol: unexpected {:?} in state {}", other.ty(), s.name());
                self.po_fail(i, e)
            }
        }
        self.maybe_finish(now);
    }

    /// Delta or resume: the po may hold these blocks already; their digests decide.
    fn on_check(&mut self, now: Instant, i: usize, mut blocks: Vec<u64>) {
        let Some(plan) = self.plan.as_mut() else { return };
        let transfer = plan.transfer;
        // Each block once, and only real ones, and no more than the answer can carry in one
        // frame (the po asks no more; a po that does gets the first ones).
        blocks.sort_unstable();
        blocks.dedup();
        blocks.retain(|&b| b < plan.manifest.blocks());
        blocks.truncate(MAX_CHECK);
        let mut sums = Vec::with_capacity(blocks.len());
        for (k, &b) in blocks.iter().enumerate() {
            // The next ones are hashed beside this one.
            let unknown = blocks[k..].iter().copied().filter(|b| !plan.digests.contains_key(b));
            let next: Vec<u64> = unknown.take(super::plan::AHEAD).collect();
            plan.ahead(next.into_iter(), Verify::Blake3);
            match plan.digest_of(b) {
                Ok(d) => sums.push((b, d)),
                Err(e) => return self.abort_all(e),
            }
        }
        let p = &mut self.pos[i];
        log::info!("event=delta_check transfer={transfer} po={} blocks={}", p.name, sums.len());
        p.state = State::Offered { deadline: now + super::OFFER_TIMEOUT };
        if let Some(conn) = p.conn {
            self.out.push_back(Action::Send { conn, msg: Msg::CheckSums { transfer, sums } });
        }
    }

    /// The CAC vouched for our token to the po: now it reads the manifest.
    fn on_verified(&mut self, now: Instant, i: usize) {
        let Some(plan) = self.plan.as_mut() else { return };
        let (transfer, manifest) = (plan.transfer, plan.encoded_manifest());
        let p = &mut self.pos[i];
        p.state = State::Offered { deadline: now + super::OFFER_TIMEOUT };
        if let Some(conn) = p.conn {
            self.out.push_back(Action::Send { conn, msg: Msg::Manifest { transfer, manifest } });
        }
    }

    /// A dry run's answer: what this po would change. Nothing more is asked of it.
    fn on_preview(&mut self, i: usize, p: Box<crate::proto::msg::Preview>) {
        let Some(plan) = self.plan.as_ref() else { return };
        let po = &mut self.pos[i];
        log::info!(
            "event=dry_run transfer={} po={} create={} change={} delete={} bytes={}",
            plan.transfer,
            po.name,
            p.create,
            p.change,
            p.delete,
            p.bytes
        );
        po.state = State::Done { hook: None, unchanged: p.create + p.change + p.delete == 0 };
        if let Some(c) = po.conn.take() {
            self.out.push_back(Action::Close { conn: c });
        }
        if let Some(slot) = self.previews.get_mut(i) {
            *slot = Some(p);
        }
    }

    /// The po knows the token is good and says what it holds already.
    fn on_accept(&mut self, i: usize, have: &[u8]) {
        let Some(plan) = self.plan.as_ref() else { return };
        let nb = plan.manifest.blocks();
        if have.len() as u64 != nb.div_ceil(8) {
            let e = format!("protocol: ACCEPT bitmap of {} bytes for {nb} blocks", have.len());
            return self.po_fail(i, e);
        }
        let p = &mut self.pos[i];
        p.bytes = 0;
        for b in 0..nb {
            p.have[b as usize] = bit(have, b);
            if p.have[b as usize] {
                p.bytes += plan.manifest.block(b).map(|x| x.len as u64).unwrap_or(0);
            }
        }
        p.state = State::Sending { cursor: 0, inflight: 0 };
        log::info!("event=po_accept transfer={} po={} held_bytes={}", plan.transfer, p.name, p.bytes);
        if plan.swarm.is_some() {
            self.join_swarm(i);
        } else {
            self.pump(i);
        }
    }

    /// Po `i` accepted in a swarm: its neighbours and link keys, every checksum so far, and
    /// the master's data link to it (it joins the swarm once that is up).
    fn join_swarm(&mut self, i: usize) {
        let Some(plan) = self.plan.as_ref() else { return };
        let Some(sw) = plan.swarm.as_ref() else { return };
        let transfer = plan.transfer;
        // Every neighbour with the key of its link: we dial those that accepted before (an
        // address); later ones dial us (none).
        let key = &self.settings.transfer_key;
        let me = i as u32;
        let links = sw
            .neighbours(me)
            .iter()
            .filter(|&&j| j != me)
            .map(|&j| {
                let p = &self.pos[j as usize];
                let addr = if p.kind().joined() { p.name.clone() } else { String::new() };
                PeerLink { idx: j, addr, key: auth::link_key(key, me, j) }
            })
            .collect();
        let master_key = auth::link_key(key, me, swarm::MASTER_PEER);
        let (Some(conn), Some(addr)) = (self.pos[i].conn, self.pos[i].addr) else { return };
        self.out.push_back(Action::Send { conn, msg: Msg::Peers { transfer, me, master_key, links } });
        // A late joiner needs every checksum sent so far, in frames a po can read.
        let sums: Vec<(u64, Sum)> =
            plan.sums.iter().enumerate().filter_map(|(b, s)| s.map(|s| (b as u64, s))).collect();
        if plan.class.block_check() != Verify::None {
            for chunk in sums.chunks(SUMS_PER_FRAME) {
                self.out.push_back(Action::Send { conn, msg: Msg::Sums { transfer, sums: chunk.to_vec() } });
            }
        }
        let data = self.po_conn_id(i);
        self.pos[i].data = Some(data);
        self.out.push_back(Action::Connect { conn: data, addr });
    }

    /// Acks free window space, or swarm slots.
    fn on_have(&mut self, now: Instant, i: usize, blocks: Vec<u64>) {
        let Some(plan) = self.plan.as_mut() else { return };
        let p = &mut self.pos[i];
        let nb = plan.manifest.blocks();
        for b in blocks.into_iter().filter(|&b| b < nb) {
            // Who sent it: the swarm's assignment, or the master itself without a swarm.
            // A chain block may come before its forwarder's HAVE: then it is from the forwarder.
            let from = match plan.swarm.as_mut() {
                Some(sw) => {
                    let chained = sw.chain_source(i as u32, b).map(Src::Po);
                    sw.have(i as u32, b, now).or(chained).ok_or(()).map(|s| match s {
                        Src::Master => None,
                        Src::Po(s) => Some(s),
                    })
                }
                None => Ok(None),
            };
            if let Some(h) = p.have.get_mut(b as usize) {
                if !*h {
                    *h = true;
                    let len = plan.manifest.block(b).map(|x| x.len as u64).unwrap_or(0);
                    p.bytes += len;
                    plan.site_bytes.add(from, i as u32, len);
                    if let State::Sending { inflight, .. } = &mut p.state {
                        *inflight = inflight.saturating_sub(1);
                    }
                }
            }
        }
        if plan.swarm.is_some() {
            self.schedule(now);
        } else {
            self.pump(i);
        }
    }

    /// A push that could not happen: the slots are free again. Only the po that was to send it
    /// may say so (the one the master had asked, for the master's own link).
    fn on_unsent(&mut self, now: Instant, i: usize, block: u64, to: u32, why: &str) {
        let transfer = self.plan.as_ref().map_or(0, |p| p.transfer);
        log::debug!(
            "event=push_unsent transfer={transfer} po={} block={block} to={to} why={}",
            self.pos[i].name,
            crate::proto::text::quoted(why)
        );
        if let Some(sw) = self.plan.as_mut().and_then(|p| p.swarm.as_mut()) {
            let from = sw.source_of(to, block);
            let unsent_by_sender = from == Some(Src::Po(i as u32));
            // A po that cannot check a block on the master's data link gives it back.
            let unsent_to_itself = to == i as u32 && from == Some(Src::Master);
            // A sender that could not serve (its link broke, a read failed) counts a stall, as a
            // push that never lands does: one that keeps failing stops being a source in
            // seconds, and what only it holds comes from the master.
            if unsent_by_sender {
                sw.stall(to, block, now);
            } else if unsent_to_itself {
                sw.cancel(to, block, now);
            }
        }
        self.schedule(now);
    }

    /// A peer served a corrupt block: fetch it elsewhere; repeated faults exclude it.
    fn on_bad(&mut self, now: Instant, i: usize, block: u64, from: u32) {
        let transfer = self.plan.as_ref().map_or(0, |p| p.transfer);
        let src = self.pos.get(from as usize).map(|p| p.name.clone()).unwrap_or_default();
        log::warn!("event=block_bad transfer={transfer} po={} block={block} source={src}", self.pos[i].name);
        if let Some(sw) = self.plan.as_mut().and_then(|p| p.swarm.as_mut()) {
            let before = sw.faults(from);
            sw.bad(i as u32, block, Src::Po(from));
            if before < swarm::MAX_FAULTS && sw.faults(from) == swarm::MAX_FAULTS {
                log::error!("event=peer_excluded transfer={transfer} po={src} faults={}", swarm::MAX_FAULTS);
            }
        }
        self.schedule(now);
    }

    fn on_ready(&mut self, i: usize) {
        let Some(plan) = self.plan.as_ref() else { return };
        let p = &mut self.pos[i];
        p.state = State::Ready;
        log::info!("event=po_ready transfer={} po={}", plan.transfer, p.name);
        if plan.class.publish == Publish::Together {
            self.maybe_commit(false);
        }
    }

    /// The po published (`unchanged`: it held the tree already, which counts as committed).
    fn on_done(&mut self, i: usize, (files, bytes, unchanged): (u64, u64, bool), hook: Option<i32>, tail: String) {
        let Some(plan) = self.plan.as_ref() else { return };
        let p = &mut self.pos[i];
        p.state = State::Done { hook: hook.map(|c| (c, tail)), unchanged };
        let same = if unchanged { " unchanged=1" } else { "" };
        log::info!("event=po_done transfer={} po={} files={files} bytes={bytes}{same}", plan.transfer, p.name);
        // In a swarm a finished po still serves its neighbours; a canary hears how its wave ends.
        let holds = self.wave_holds(i);
        let p = &mut self.pos[i];
        if plan.swarm.is_none() && !holds {
            if let Some(c) = p.conn.take() {
                self.out.push_back(Action::Close { conn: c });
            }
        }
    }

    fn on_failed(&mut self, i: usize, error: String) {
        let together = self.plan.as_ref().is_some_and(|p| p.class.publish == Publish::Together);
        // A po's checksum failure is most often a source file changing under us: then no po
        // can get a good copy, and the error should say so.
        match self.changed_source() {
            Some(e) => self.abort_all(e),
            None => {
                self.po_fail(i, error);
                // The ready pos may have been waiting only for this one.
                if together {
                    self.maybe_commit(false);
                }
            }
        }
    }
}

/// Checksums one SUMS frame carries: a BLAKE3 entry is 41 bytes, and a frame holds 4 MiB.
pub(super) const SUMS_PER_FRAME: usize = 65_536;
