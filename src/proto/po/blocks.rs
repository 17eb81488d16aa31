//! Blocks: each one is checked against a digest the master gave us before it counts; blocks
//! from peers wait (bounded) for the master's `Sums`; a peer's bad frame is the peer's fault.
//!
//! The check itself runs off the loop: a block goes out as `Action::Verify` and is staged when
//! `Event::Verified` says it is good, so the loop keeps receiving while blocks are hashed.

use super::*;

impl<S: Store> PoMachine<S> {
    /// A block from the master's control connection, its data link, or neighbour `p`. Only
    /// control blocks carry their own checksum; the rest are checked against the master's `Sums`.
    /// A peer's bad frame is the peer's fault: its link closes and the master refetches the block.
    pub(super) fn on_block(&mut self, now: Instant, conn: ConnId, from: From, head: BlockHead, data: Payload) {
        let Some(t) = self.transfers.get_mut(&head.transfer) else {
            return self.refuse(conn, Reason::Protocol, format!("block for unknown transfer {}", head.transfer));
        };
        let shape = match t.manifest.block(head.index) {
            None => Err(format!("block {} is past the end of the manifest", head.index)),
            Some(b) if data.len() != b.len as usize => {
                Err(format!("block {} has {} bytes, expected {}", b.index, data.len(), b.len))
            }
            Some(b) => Ok(b),
        };
        let b = match (shape, from) {
            (Ok(b), _) => b,
            (Err(e), From::Peer(p)) => return self.peer_fault(conn, head.transfer, Some(head.index), p, &e),
            (Err(e), _) => return self.fail(head.transfer, e),
        };
        // While a disk job has the stage, no block is taken (none is due before ACCEPT).
        if !matches!(t.state, TState::Receiving { .. }) || t.held[b.index as usize] || t.disk.is_some() {
            return;
        }
        let check = t.class.block_check();
        let want = match (from, t.sums.get(&b.index).copied()) {
            // The master's own word, on the connection its token proved.
            (From::Control, _) => head.sum,
            (_, Some(s)) => s,
            (_, None) if t.parked.len() < MAX_PARKED => return t.parked.push((conn, from, head, data)),
            (_, None) => {
                // Give the assignment back; the master will send it again later.
                let (transfer, block, master, me) =
                    (head.transfer, b.index, t.master, t.swarm.joined().map_or(0, |j| j.me));
                if let Some(m) = master {
                    self.send(m, Msg::Unsent { transfer, block, to: me, why: "no checksum yet".into() });
                }
                return;
            }
        };
        let kind = if from == From::Control { t.class.verify } else { check };
        if kind == Verify::None {
            return self.keep_block(now, head.transfer, b, from, data.bytes());
        }
        // A copy already being checked settles this block either way: a bad one is fetched
        // again (a peer's) or fails the transfer (the master's).
        if t.checking.values().any(|c| c.1 == b.index) {
            return;
        }
        let id = self.next_check;
        self.next_check += 1;
        t.checking.insert(id, (from, b.index));
        self.out.push_back(Action::Verify(Check { transfer: head.transfer, id, kind, want, data }));
    }

    /// Check `id` of `transfer` is done. It counts only if the transfer still waits for it: a
    /// transfer that was aborted, failed, expired or replaced meanwhile forgot its checks.
    pub(super) fn on_checked(&mut self, now: Instant, transfer: u64, id: u64, verdict: Verdict) {
        let Some(t) = self.transfers.get_mut(&transfer) else { return };
        let Some((from, block)) = t.checking.remove(&id) else { return };
        if !matches!(t.state, TState::Receiving { .. }) || t.held[block as usize] {
            return;
        }
        let b = t.manifest.block(block).expect("checked when the block came");
        let data = match verdict {
            Verdict::Good(data) => data,
            Verdict::Lost(why) => {
                log::error!("event=check_lost transfer={transfer} block={block} error=\"{why}\"");
                return self.fail(transfer, format!("block {block}: its check did not finish: {why}"));
            }
            Verdict::Bad => {
                let kind = if from == From::Control { t.class.verify } else { t.class.block_check() };
                let first = t.manifest.segments(&b).first().map(|s| s.entry).unwrap_or(0);
                let path = t.manifest.entries()[first as usize].path.clone();
                let source = match from {
                    From::Peer(p) => format!("po#{p}"),
                    _ => "master".into(),
                };
                log::warn!("event=block_bad transfer={transfer} block={block} path={path} source={source}");
                self.stats.verify_failures += 1;
                return match (from, t.master) {
                    // A bad peer: fetch the block elsewhere, and let the master count the fault.
                    (From::Peer(p), Some(m)) => self.send(m, Msg::Bad { transfer, block, from: p }),
                    _ => self.fail(transfer, format!("block {block} of {path} failed its {kind} check")),
                };
            }
        };
        self.keep_block(now, transfer, b, from, data.bytes());
    }

    /// Block `b`, verified (or of a class that verifies nothing), is staged; only now does it
    /// count: HAVE, READY, serving and publish all come after this.
    fn keep_block(&mut self, now: Instant, transfer: u64, b: BlockRef, from: From, data: &[u8]) {
        if let Err(e) = self.store.write_block(transfer, &b, data) {
            return self.fail(transfer, e.to_string());
        }
        let Some(t) = self.transfers.get_mut(&transfer) else { return };
        t.hold(b.index);
        self.stats.bytes_received += b.len as u64;
        self.stats.blocks_received += 1;
        // HAVEs go out together (`end_turn`): with small blocks one frame each would cost the
        // master a wake-up per block. A chain block's HAVE may wait `HAVE_DELAY` for company:
        // its successor has it from us without the master. The master's feed of a chain's head
        // waits for the head's HAVEs: they go once half of what it keeps queued has landed.
        if t.master.is_some() {
            let chained = t.chained(b.index);
            t.haves.push(b.index);
            t.haves_since.get_or_insert(now);
            t.haves_fed += usize::from(chained && !matches!(from, From::Peer(_)));
            let half_fed = 2 * t.haves_fed >= crate::proto::chain::head_depth(t.manifest.block_size) as usize;
            t.haves_now |= !chained || half_fed;
        }
        self.checkpoint(transfer);
        self.forward(now, transfer, b.index);
        self.maybe_ready(transfer);
    }

    /// Neighbour `p` sent a frame that cannot be a block of ours: close its link (only that
    /// link: the transfer goes on). When the frame names a block of ours, tell the master, which
    /// charges `p` a fault and sends the block from elsewhere; otherwise there is nothing honest
    /// to report.
    pub(super) fn peer_fault(&mut self, conn: ConnId, transfer: u64, block: Option<u64>, p: u32, why: &str) {
        log::warn!("event=peer_fault transfer={transfer} peer=po#{p} error={}", crate::proto::text::quoted(why));
        self.stats.peer_errors += 1;
        self.conns.remove(&conn);
        self.out.push_back(Action::Close { conn });
        self.peer_lost(transfer, p, conn);
        let Some(t) = self.transfers.get(&transfer) else { return };
        let block = block.filter(|&b| b < t.manifest.blocks());
        if let (Some(m), Some(block)) = (t.master, block) {
            self.send(m, Msg::Bad { transfer, block, from: p });
        }
    }

    /// Checksums from the master; parked peer blocks can be checked now.
    pub(super) fn on_sums(&mut self, now: Instant, transfer: u64, sums: Vec<(u64, Sum)>) {
        let Some(t) = self.transfers.get_mut(&transfer) else { return };
        let blocks = t.manifest.blocks();
        t.sums.extend(sums.into_iter().filter(|(b, _)| *b < blocks));
        let parked = std::mem::take(&mut t.parked);
        for (conn, from, head, data) in parked {
            self.on_block(now, conn, from, head, data);
        }
    }
}
