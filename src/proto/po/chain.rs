//! Chains (issue 16): the master names our successor in each stripe and the blocks that go
//! down the chains; each such block we verified goes on to that successor at once, served from
//! the staged file like a push, with no word to the master (it counts the forward as an
//! assignment when our HAVE comes). HAVEs of chain blocks wait up to `HAVE_DELAY` for company
//! (the master names the chain predecessor as the sender of a block whose HAVE overtakes its
//! forwarder's: `Swarm::chain_source`), a head's until half the master's feed to it landed;
//! any other block's HAVE goes at the end of the turn.

use super::swarm::peer_linked;
use super::*;
use crate::proto::bitmap::bit;
use crate::proto::chain::stripe_of;
use crate::proto::msg::NO_NEXT;

/// Block indices one HAVE frame carries at most (8 bytes each).
const HAVES_PER_FRAME: usize = 65_536;
/// Chain blocks' HAVEs wait at most this long for company, or until this many are pending.
/// The chains do not wait for them; the master's repairs and laggard checks (every 200 ms) do.
pub(super) const HAVE_DELAY: Duration = Duration::from_millis(20);
pub(super) const HAVE_BATCH: usize = 32;

impl<S: Store> PoMachine<S> {
    /// The master's chain plan. Only the master's control link gets here (a neighbour's CHAIN
    /// is its fault); a successor we have no link key for is nobody.
    pub(super) fn on_chain(&mut self, transfer: u64, mut next: Vec<u32>, set: Vec<u8>) {
        let Some(t) = self.transfers.get_mut(&transfer) else { return };
        let blocks = t.manifest.blocks();
        let Some(j) = t.swarm.joined_mut() else {
            return log::warn!("event=protocol_error role=po transfer={transfer} error=\"CHAIN before PEERS\"");
        };
        if set.len() as u64 != blocks.div_ceil(8) {
            return log::warn!(
                "event=protocol_error role=po transfer={transfer} error=\"CHAIN set of {} bytes for {blocks} blocks\"",
                set.len()
            );
        }
        for n in next.iter_mut() {
            if *n != NO_NEXT && (*n == j.me || !j.link_keys.contains_key(n)) {
                log::warn!(
                    "event=protocol_error role=po transfer={transfer} error=\"CHAIN names po#{n}, not a neighbour\""
                );
                *n = NO_NEXT;
            }
        }
        let shown: Vec<String> = next.iter().map(|n| if *n == NO_NEXT { "-".into() } else { n.to_string() }).collect();
        log::info!("event=chain_next transfer={transfer} me={} next={}", j.me, shown.join(","));
        j.chain = Some((next.clone(), set));
        // The acknowledgement (the same successors, no set) follows every HAVE of a block
        // forwarded by the old plan, so the master knows which plan the later ones followed.
        let master = t.master;
        self.flush_haves();
        if let Some(m) = master {
            self.send(m, Msg::Chain { transfer, next, set: Vec::new() });
        }
    }

    /// Block `b` is verified and staged: a chain block goes on to our successor in its stripe.
    pub(super) fn forward(&mut self, now: Instant, transfer: u64, b: u64) {
        let Some(t) = self.transfers.get(&transfer) else { return };
        let Some((next, set)) = t.swarm.joined().and_then(|j| j.chain.as_ref()) else { return };
        if !bit(set, b) {
            return;
        }
        let to = next[stripe_of(b, next.len())];
        if to == NO_NEXT {
            return;
        }
        let linked = peer_linked(&self.conns, t.swarm.peer(to));
        if let Some(j) = self.transfers.get_mut(&transfer).and_then(|t| t.swarm.joined_mut()) {
            if std::mem::replace(&mut j.forwarded, true) {
                log::debug!("event=chain_forward transfer={transfer} block={b} to=po#{to}");
            } else {
                log::info!("event=chain_forward transfer={transfer} block={b} to=po#{to} first=1");
            }
        }
        if linked {
            return self.serve(transfer, b, to);
        }
        // The master hears of the forward with our HAVE: that goes first, then the push's fate.
        self.flush_haves();
        self.on_push(now, transfer, b, to);
    }

    /// Sends the HAVEs batched since the last call.
    pub(super) fn flush_haves(&mut self) {
        let mut frames = Vec::new();
        for (&transfer, t) in self.transfers.iter_mut().filter(|(_, t)| !t.haves.is_empty()) {
            let haves = std::mem::take(&mut t.haves);
            (t.haves_since, t.haves_now, t.haves_fed) = (None, false, 0);
            if let Some(m) = t.master {
                frames.extend(haves.chunks(HAVES_PER_FRAME).map(|c| (m, Msg::Have { transfer, blocks: c.to_vec() })));
            }
        }
        for (m, msg) in frames {
            self.send(m, msg);
        }
    }
}
