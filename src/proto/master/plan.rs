//! The transfer's plan: the manifest, its source, the checksums and digests computed so far,
//! and the blocks this master sent itself.

use crate::proto::class::Verify;
use crate::proto::disk::AHEAD_BYTES;
use crate::proto::msg::Digest;
use crate::proto::sites::{SiteBytes, Sites};
use crate::proto::swarm::Swarm;
use crate::proto::{Action, Body, ClassCfg, ConnId, Manifest, Source, Sum};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Bytes in flight to one po: enough to keep a fast link full between acks.
const WINDOW_BYTES: u64 = 32 << 20;
/// Blocks named to the source at most in one hint (`Plan::ahead`); it holds fewer.
pub(super) const AHEAD: usize = 16;

pub(super) struct Plan {
    pub(super) transfer: u64,
    pub(super) token: Vec<u8>,
    pub(super) class: ClassCfg,
    pub(super) manifest: Manifest,
    /// The encoded manifest, shared by the MANIFEST frames in flight, and held (`pinned`)
    /// while some po was offered the transfer and may still ask for it; made again for a
    /// later one (a retry), so that it does not stay in memory for the whole transfer.
    pub(super) offer: std::sync::Weak<Vec<u8>>,
    pub(super) pinned: Option<Arc<Vec<u8>>>,
    /// The manifest's id and encoded length, as offers name it (computed once).
    announced: Option<([u8; 16], u64)>,
    /// Blocks read into memory, while some connection still holds them.
    pub(super) in_memory: std::collections::HashMap<u64, std::sync::Weak<Vec<u8>>>,
    /// Digests of the blocks pos asked about with CHECK (delta or resume), computed once.
    pub(super) digests: std::collections::HashMap<u64, Digest>,
    pub(super) source: Box<dyn Source>,
    pub(super) sums: Vec<Option<Sum>>,
    pub(super) started: Instant,
    pub(super) deadline: Instant,
    pub(super) window: u64,
    /// With `p2p = on`: who holds what, and who sends what next.
    pub(super) swarm: Option<Swarm>,
    /// The chain plan went out (later CHAINs are re-plans).
    pub(super) chain_told: bool,
    /// Blocks this master uploaded itself, and their bytes.
    pub(super) sent_blocks: u64,
    pub(super) sent_bytes: u64,
    /// Bytes that landed per site link (all in one site when the class has no labels).
    pub(super) site_bytes: SiteBytes,
    /// Blocks whose checksum the source computed ahead (`Source::ready`) and whose bodies it
    /// still holds for the send; they stay named in `hash_ahead` until read.
    held: HashSet<u64>,
    /// One past the highest block the swarm assigned so far: hashing runs ahead from there.
    ahead_hi: u64,
    /// Checksums known but not yet sent to the pos in a SUMS (with a swarm), and which ones
    /// went out.
    pub(super) untold: Vec<(u64, Sum)>,
    pub(super) told: Vec<bool>,
}

impl Plan {
    pub(super) fn new(
        transfer: u64,
        token: Vec<u8>,
        class: ClassCfg,
        manifest: Manifest,
        source: Box<dyn Source>,
        now: Instant,
    ) -> Plan {
        let nb = manifest.blocks() as usize;
        Plan {
            transfer,
            token,
            window: (WINDOW_BYTES / manifest.block_size as u64).max(2),
            deadline: now + Duration::from_secs(class.timeout),
            class,
            offer: std::sync::Weak::new(),
            pinned: None,
            announced: None,
            digests: std::collections::HashMap::new(),
            in_memory: std::collections::HashMap::new(),
            manifest,
            source,
            sums: vec![None; nb],
            started: now,
            swarm: None,
            chain_told: false,
            sent_blocks: 0,
            sent_bytes: 0,
            site_bytes: SiteBytes::new(Sites::one(0)),
            held: HashSet::new(),
            ahead_hi: 0,
            untold: Vec::new(),
            told: vec![false; nb],
        }
    }

    /// Block `idx` from the source with its checksum, computed on the first read and cached
    /// after; `fresh` says that this read computed it.
    pub(super) fn read_block(&mut self, idx: u64) -> Result<(Body, Sum, bool), String> {
        let b = self.manifest.block(idx).expect("block indices come from the manifest");
        let cached = self.sums[idx as usize];
        let held = self.held.remove(&idx);
        // A block read into memory (many small files) and still queued for some po is sent
        // to the next one from the same buffer: memory stays about one window, not one per po.
        if let (Some(sum), Some(bytes)) = (cached, self.in_memory.get(&idx).and_then(|w| w.upgrade())) {
            return Ok((Body::Bytes(bytes), sum, false));
        }
        // A block hashed ahead is taken from the source with its kind (the same checksum).
        let verify = if cached.is_some() && !held { Verify::None } else { self.class.block_check() };
        let (body, sum) = self.source.block(&b, verify, self.class.sendfile).map_err(|e| format!("source: {e}"))?;
        if let Body::Bytes(bytes) = &body {
            if self.in_memory.len() >= 4096 {
                self.in_memory.retain(|_, w| w.strong_count() > 0);
            }
            self.in_memory.insert(idx, Arc::downgrade(bytes));
        }
        let sum = cached.unwrap_or(sum);
        self.sums[idx as usize] = Some(sum);
        Ok((body, sum, cached.is_none()))
    }

    /// Tells the source which blocks come next (the first `AHEAD` of `blocks`), so that it
    /// computes their checksums of kind `verify` on its workers meanwhile.
    pub(super) fn ahead(&mut self, blocks: impl Iterator<Item = u64>, verify: Verify) {
        if verify == Verify::None {
            return;
        }
        let refs: Vec<_> = blocks.take(AHEAD).filter_map(|i| self.manifest.block(i)).collect();
        if !refs.is_empty() {
            self.source.ahead(&refs, verify, self.class.sendfile);
        }
    }

    /// Keeps the source's workers hashing ahead of the swarm: the blocks `assigned` now, then
    /// the next ones after the highest assigned so far, in index order, as far as the source
    /// holds (`AHEAD_BYTES`). Checksums done by now are recorded (and queued for the pos in
    /// `untold`) without waiting; the source's bodies for them wait for the send.
    pub(super) fn hash_ahead(&mut self, assigned: &[u64]) {
        let verify = self.class.block_check();
        if verify == Verify::None {
            return;
        }
        let nb = self.manifest.blocks();
        let hi = assigned.iter().map(|&b| b + 1).max().unwrap_or(0).max(self.ahead_hi).min(nb);
        self.ahead_hi = hi;
        let len = (AHEAD_BYTES / self.manifest.block_size.max(1) as usize).max(AHEAD) as u64;
        let (sums, held) = (&self.sums, &self.held);
        let wanted = |&i: &u64| sums.get(i as usize).is_some_and(Option::is_none) || held.contains(&i);
        let mut list: Vec<u64> = assigned.iter().copied().filter(wanted).collect();
        list.extend((hi..nb.min(hi + len)).filter(wanted));
        let named: HashSet<u64> = list.iter().copied().collect();
        // The source drops what is no longer named; so does this mirror of it.
        self.held.retain(|i| named.contains(i));
        let refs: Vec<_> = list.iter().filter_map(|&i| self.manifest.block(i)).collect();
        if !refs.is_empty() {
            self.source.ahead(&refs, verify, self.class.sendfile);
        }
        for (i, sum) in self.source.ready() {
            // Only the class's kind (a CHECK's digests are hashed ahead too), only named blocks.
            let unknown = self.sums.get(i as usize).is_some_and(Option::is_none);
            if unknown && named.contains(&i) && sum.kind() == verify {
                self.sums[i as usize] = Some(sum);
                self.held.insert(i);
                self.untold.push((i, sum));
            }
        }
    }

    /// The first `AHEAD` blocks of `blocks` whose checksum is not known yet.
    pub(super) fn unsummed(&self, blocks: impl Iterator<Item = u64>) -> Vec<u64> {
        blocks.filter(|&i| self.sums.get(i as usize).is_some_and(Option::is_none)).take(AHEAD).collect()
    }

    /// Block `idx`'s digest for a po's CHECK (delta or resume); computed once.
    pub(super) fn digest_of(&mut self, idx: u64) -> Result<Digest, String> {
        if let Some(d) = self.digests.get(&idx) {
            return Ok(*d);
        }
        let b = self.manifest.block(idx).expect("block indices come from the manifest");
        let (_, sum) = self.source.block(&b, Verify::Blake3, false).map_err(|e| format!("source: {e}"))?;
        let Sum::Blake3(d) = sum else { return Err(format!("source: no digest for block {idx}")) };
        self.digests.insert(idx, d);
        if self.class.block_check() == Verify::Blake3 {
            self.sums[idx as usize] = Some(sum);
        }
        Ok(d)
    }

    /// The encoded manifest for a MANIFEST frame: the one in flight if there is one. It stays
    /// pinned until no po waits to ask for it (`unpin`).
    pub(super) fn encoded_manifest(&mut self) -> Arc<Vec<u8>> {
        let m = self.offer.upgrade().unwrap_or_else(|| {
            let m = Arc::new(self.manifest.encode());
            self.offer = Arc::downgrade(&m);
            m
        });
        self.pinned = Some(m.clone());
        m
    }

    /// What an offer names: the manifest's id and encoded length.
    pub(super) fn announced(&mut self) -> ([u8; 16], u64) {
        if let Some(a) = self.announced {
            return a;
        }
        let m = self.encoded_manifest();
        let a = (Manifest::id_of(&m), m.len() as u64);
        self.announced = Some(a);
        a
    }

    /// A block frame from the master to `conn`, counted as sent. Also returns the checksum
    /// when this read computed it (the swarm sends it to every po).
    pub(super) fn send_block(&mut self, conn: ConnId, idx: u64) -> Result<(Action, Option<(u64, Sum)>), String> {
        let (body, sum, fresh) = self.read_block(idx)?;
        self.sent_blocks += 1;
        self.sent_bytes += body.len();
        let head = crate::proto::BlockHead { transfer: self.transfer, index: idx, sum };
        Ok((Action::SendBlock { conn, head, body }, fresh.then_some((idx, sum))))
    }
}
