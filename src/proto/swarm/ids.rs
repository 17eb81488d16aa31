//! The hash of the swarm's maps. Their keys are the master's own indices (pos, blocks, links),
//! which no peer chooses beyond naming blocks of the manifest, so SipHash's resistance to chosen
//! keys buys nothing here, and it was about a tenth of the master's work per HAVE'd block.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A map keyed by indices.
pub(super) type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

/// Multiply-rotate over the key's integers (FxHash's scheme): the high bits of the product,
/// which hashbrown's control bytes read, and the low ones, which pick the bucket, both mix.
#[derive(Default, Clone, Copy)]
pub(super) struct IdHasher(u64);

const K: u64 = 0x517c_c1b7_2722_0a95;

impl IdHasher {
    fn add(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(K);
    }
}

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        // The low bits choose the bucket: fold the well-mixed high half into them.
        self.0 ^ (self.0 >> 32)
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.add(u64::from(b));
        }
    }
    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n))
    }
    fn write_u32(&mut self, n: u32) {
        self.add(u64::from(n))
    }
    fn write_u64(&mut self, n: u64) {
        self.add(n)
    }
    fn write_usize(&mut self, n: usize) {
        self.add(n as u64)
    }
}
