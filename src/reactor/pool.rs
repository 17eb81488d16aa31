//! Block-sized read buffers, reused. A big frame is read straight into a buffer of its own,
//! and the payload made of it returns the buffer here when the machine drops it: fresh
//! allocations of megabytes cost page faults and zeroing on every block, a reused one neither.

use std::sync::{Arc, Mutex};

use crate::proto::msg::Recycle;

/// Smaller buffers are cheap to allocate, and not kept.
const POOL_MIN: usize = 64 << 10;
/// Buffers kept at most: enough for the blocks a po has in hand at once.
const POOL_KEEP: usize = 16;

/// One per reactor. The lock is never contended (the reactor and its machine share a thread);
/// it only makes the pool `Sync`, as payloads inside a machine must be `Send`.
#[derive(Default)]
pub struct BufferPool {
    free: Mutex<Vec<Vec<u8>>>,
}

impl BufferPool {
    pub fn new() -> Arc<BufferPool> {
        Arc::new(BufferPool::default())
    }

    /// A buffer of exactly `len` bytes; its contents are unspecified (the caller overwrites them).
    pub fn take(&self, len: usize) -> Vec<u8> {
        if len >= POOL_MIN {
            let reused = {
                let mut p = self.free.lock().unwrap_or_else(|e| e.into_inner());
                p.iter().position(|b| b.capacity() >= len).map(|i| p.swap_remove(i))
            };
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
}

impl Recycle for BufferPool {
    fn recycle(&self, buf: Vec<u8>) {
        if buf.capacity() >= POOL_MIN {
            let mut p = self.free.lock().unwrap_or_else(|e| e.into_inner());
            if p.len() < POOL_KEEP {
                p.push(buf);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::Payload;

    #[test]
    fn a_dropped_payload_returns_its_big_buffer() {
        let pool = BufferPool::new();
        let buf = pool.take(1 << 20);
        let at = buf.as_ptr();
        drop(Payload::lent(buf, pool.clone()));
        let again = pool.take(512 << 10);
        assert_eq!((again.as_ptr(), again.len()), (at, 512 << 10), "the same allocation, cut to size");
        drop(Payload::lent(vec![0; 100], pool.clone()));
        assert!(pool.free.lock().unwrap().is_empty(), "small buffers are not kept");
    }
}
