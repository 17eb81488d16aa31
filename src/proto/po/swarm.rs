//! The swarm: our place and link keys from PEERS, neighbours that dial us (and prove it), the
//! master's pushes to neighbours, and links that go.

use super::*;

/// Blocks remembered per link as served lately: more than the master ever queues on one.
const SERVED_KEPT: usize = 16;

impl<S: Store> PoMachine<S> {
    /// The master gave us our place in the swarm and the keys of our links: dial the neighbours
    /// it named, then judge the hellos that came before it.
    pub(super) fn on_peers(&mut self, now: Instant, transfer: u64, me: u32, master_key: Digest, links: Vec<PeerLink>) {
        let Some(t) = self.transfers.get_mut(&transfer) else { return };
        let links = valid_links(transfer, me, links);
        // A second PEERS brings new keys; the links already made stay.
        let link_keys = links.iter().map(|l| (l.idx, l.key)).collect();
        use std::mem::take;
        let (peers, served, lost) = (t.swarm.joined_mut())
            .map(|j| (take(&mut j.peers), take(&mut j.served), take(&mut j.lost)))
            .unwrap_or_default();
        let (chain, forwarded) = t.swarm.joined_mut().map(|j| (j.chain.take(), j.forwarded)).unwrap_or_default();
        let joined =
            Swarm::Joined(Box::new(Joined { me, master_key, link_keys, peers, served, lost, chain, forwarded }));
        let hellos = match std::mem::replace(&mut t.swarm, joined) {
            Swarm::Awaiting { hellos } => hellos,
            Swarm::Joined(_) => Vec::new(),
        };
        for l in links.into_iter().filter(|l| !l.addr.is_empty()) {
            let Ok(addr) = l.addr.parse::<SocketAddr>() else { continue };
            let conn = self.next_conn;
            self.next_conn += 1;
            if let Some(j) = self.transfers.get_mut(&transfer).and_then(|t| t.swarm.joined_mut()) {
                j.peers.insert(l.idx, conn);
                j.lost.remove(&l.idx);
            }
            let kind = ConnKind::Peer { transfer, idx: l.idx };
            let deadline = Some(now + self.settings.cac_timeout);
            self.conns.insert(conn, Conn { peer: Some(addr), local: None, kind, deadline });
            self.out.push_back(Action::Connect { conn, addr });
        }
        for (conn, idx, proof) in hellos {
            if self.conns.get(&conn).is_some_and(|c| matches!(c.kind, ConnKind::New)) {
                self.admit_peer(now, conn, transfer, idx, proof);
            }
        }
    }

    /// A neighbour (or the master's data link) dialled us: the token names the transfer, and
    /// the proof must be the key the master gave us for that link. An index alone proves nothing.
    pub(super) fn on_peer_hello(&mut self, now: Instant, conn: ConnId, token: &[u8], idx: u32, proof: Digest) {
        let found = self.transfers.iter().find(|(_, t)| ct_eq(&t.token, token)).map(|(id, _)| *id);
        let Some(transfer) = found else {
            log::warn!("event=peer_refused reason=bad_token");
            self.stats.peer_errors += 1;
            return self.refuse(conn, Reason::BadToken, "no transfer here has that token".into());
        };
        let t = self.transfers.get_mut(&transfer).expect("found above");
        // Without p2p no PEERS ever comes, so no link key exists: no hello can prove anything.
        let awaiting = t.class.p2p && matches!(t.swarm, Swarm::Awaiting { .. });
        if let (true, Swarm::Awaiting { hellos }) = (awaiting, &mut t.swarm) {
            // Our PEERS is still on its way: judge the hello when it comes (bounded).
            if hellos.len() >= MAX_HELLOS {
                return self.refuse(conn, Reason::Protocol, "too many early hellos".into());
            }
            return hellos.push((conn, idx, proof));
        }
        self.admit_peer(now, conn, transfer, idx, proof);
    }

    pub(super) fn admit_peer(&mut self, now: Instant, conn: ConnId, transfer: u64, idx: u32, proof: Digest) {
        let Some(t) = self.transfers.get_mut(&transfer) else { return };
        let master = idx == MASTER_PEER;
        let joined = t.swarm.joined();
        let key = joined.and_then(|j| if master { Some(j.master_key) } else { j.link_keys.get(&idx).copied() });
        if !key.is_some_and(|k| ct_eq(&k, &proof)) {
            let who = if master { "master".to_owned() } else { format!("po#{idx}") };
            log::warn!("event=peer_refused transfer={transfer} reason=bad_credential claimed={who}");
            self.stats.peer_errors += 1;
            return self.refuse(conn, Reason::BadToken, "that link's credential does not match".into());
        }
        if let Some(c) = self.conns.get_mut(&conn) {
            c.kind = if master { ConnKind::MasterData { transfer } } else { ConnKind::Peer { transfer, idx } };
            c.deadline = None;
        }
        // The link is proven: blocks may come on it.
        self.out.push_back(Action::FrameLimit { conn, max: NO_FRAME_LIMIT });
        if master {
            return;
        }
        // Chain forwards go out on it: a short socket queue keeps each hop's latency low.
        self.out.push_back(Action::ShortQueue { conn });
        if let Some(j) = self.transfers.get_mut(&transfer).and_then(|t| t.swarm.joined_mut()) {
            j.peers.insert(idx, conn);
            j.lost.remove(&idx);
        }
        self.flush_waiting(now, transfer, idx);
    }

    /// The master asks us to send `block` to neighbour `to`.
    pub(super) fn on_push(&mut self, now: Instant, transfer: u64, block: u64, to: u32) {
        let Some(t) = self.transfers.get_mut(&transfer) else { return };
        if block >= t.manifest.blocks() {
            return log::warn!(
                "event=protocol_error role=po transfer={transfer} error=\"push of block {block} past the end\""
            );
        }
        let why = match t.swarm.joined() {
            // Not a neighbour of ours: no link will ever come up for it.
            Some(j) if !j.link_keys.contains_key(&to) => Some("no link to that peer"),
            // Its link broke: waiting for it would only stall the block.
            Some(j) if j.lost.contains(&to) && !j.peers.contains_key(&to) => Some("peer link lost"),
            _ => None,
        };
        if let Some(why) = why {
            if let Some(m) = t.master {
                self.send(m, Msg::Unsent { transfer, block, to, why: why.into() });
            }
            return;
        }
        let linked = peer_linked(&self.conns, t.swarm.peer(to));
        if !linked {
            // The link is still coming up (we dial, or they will): hold the push a while.
            t.waiting.entry(to).or_default().push((block, now));
            return;
        }
        self.serve(transfer, block, to);
    }

    pub(super) fn serve(&mut self, transfer: u64, block: u64, to: u32) {
        let Some(t) = self.transfers.get_mut(&transfer) else { return };
        let (Some(conn), Some(b)) = (t.swarm.peer(to), t.manifest.block(block)) else { return };
        let unsent = |why: String| Msg::Unsent { transfer, block, to, why };
        if !t.held.get(block as usize).copied().unwrap_or(false) {
            if let Some(m) = t.master {
                self.send(m, unsent("not held".into()));
            }
            return;
        }
        let sum = t.sums.get(&block).copied().unwrap_or(Sum::None);
        let master = t.master;
        match self.store.block_body(transfer, &b) {
            Ok(body) => {
                let head = BlockHead { transfer, index: block, sum };
                if let Some(j) = t.swarm.joined_mut() {
                    let served = j.served.entry(to).or_default();
                    if served.len() >= SERVED_KEPT {
                        served.pop_front();
                    }
                    served.push_back(block);
                }
                self.stats.bytes_sent += body.len();
                self.stats.blocks_sent += 1;
                self.out.push_back(Action::SendBlock { conn, head, body });
            }
            Err(e) => {
                log::warn!(
                    "event=serve_failed transfer={transfer} block={block} error={}",
                    crate::proto::text::quoted(&e)
                );
                if let Some(m) = master {
                    self.send(m, unsent(e.to_string()));
                }
            }
        }
    }

    pub(super) fn flush_waiting(&mut self, _now: Instant, transfer: u64, idx: u32) {
        let Some(t) = self.transfers.get_mut(&transfer) else { return };
        for (block, _) in t.waiting.remove(&idx).unwrap_or_default() {
            self.serve(transfer, block, idx);
        }
    }

    /// Closes the peer links and the master's data link of `transfer`.
    pub(super) fn close_swarm_links(&mut self, transfer: u64) {
        let links: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| match c.kind {
                ConnKind::Peer { transfer: t, .. } | ConnKind::MasterData { transfer: t } => t == transfer,
                _ => false,
            })
            .map(|(k, _)| *k)
            .collect();
        for conn in links {
            self.conns.remove(&conn);
            self.out.push_back(Action::Close { conn });
        }
        if let Some(t) = self.transfers.get_mut(&transfer) {
            if let Some(j) = t.swarm.joined_mut() {
                j.peers.clear();
                j.served.clear();
            }
            t.waiting.clear();
            t.parked.clear();
        }
    }

    /// A neighbour's link is gone: pushes to it go back to the master, those waiting for the
    /// link and those served on it lately (the master takes back only those still under way
    /// from us; the rest it ignores), so that a link broken mid-block is mended in a round
    /// trip, not by the master's stall check.
    pub(super) fn peer_lost(&mut self, transfer: u64, idx: u32, conn: ConnId) {
        // The HAVEs of blocks forwarded on it go first: the master takes a forward back only
        // once it counts it.
        self.flush_haves();
        let Some(t) = self.transfers.get_mut(&transfer) else { return };
        let mut back: Vec<u64> = t.waiting.remove(&idx).unwrap_or_default().into_iter().map(|(b, _)| b).collect();
        if let Some(j) = t.swarm.joined_mut().filter(|j| j.peers.get(&idx) == Some(&conn)) {
            j.peers.remove(&idx);
            j.lost.insert(idx);
            back.extend(j.served.remove(&idx).unwrap_or_default());
        }
        let Some(m) = t.master else { return };
        for block in back {
            self.send(m, Msg::Unsent { transfer, block, to: idx, why: "peer link lost".into() });
        }
    }
}

/// The links of a PEERS that can be: none to ourselves or to the master's index, and each
/// neighbour once (the first wins).
fn valid_links(transfer: u64, me: u32, links: Vec<PeerLink>) -> Vec<PeerLink> {
    let mut seen = std::collections::HashSet::new();
    let (good, bad): (Vec<PeerLink>, Vec<PeerLink>) =
        links.into_iter().partition(|l| l.idx != me && l.idx != MASTER_PEER && seen.insert(l.idx));
    if !bad.is_empty() {
        log::warn!(
            "event=protocol_error role=po transfer={transfer} error=\"PEERS has {} links to itself, the master or a neighbour named twice\"",
            bad.len()
        );
    }
    good
}

/// Whether `peer`'s link is up: a peer connection past its handshake.
pub(super) fn peer_linked(conns: &HashMap<ConnId, Conn>, peer: Option<ConnId>) -> bool {
    peer.and_then(|c| conns.get(&c)).is_some_and(|c| matches!(c.kind, ConnKind::Peer { .. }) && c.deadline.is_none())
}
