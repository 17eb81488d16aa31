//! A frame body that owns its buffer, and hands the buffer back to its lender when dropped.

use std::fmt;
use std::sync::Arc;

/// Takes back the buffers of dropped payloads, so that the next big frame reuses one: fresh
/// allocations of megabytes cost page faults and zeroing on every block, a reused buffer
/// neither. The reactor lends its pool this way; proto keeps no pool of its own.
pub trait Recycle: Send + Sync {
    fn recycle(&self, buf: Vec<u8>);
}

/// An owned frame body that may start past the front of its buffer, so a block read straight
/// into one allocation is never copied again.
#[derive(Default)]
pub struct Payload {
    pub buf: Vec<u8>,
    pub start: usize,
    /// Where `buf` goes when the payload is dropped; `None` frees it.
    home: Option<Arc<dyn Recycle>>,
}

impl Payload {
    pub fn from_vec(buf: Vec<u8>) -> Payload {
        Payload { buf, start: 0, home: None }
    }
    /// A payload whose buffer goes back to `home` when it is dropped.
    pub fn lent(buf: Vec<u8>, home: Arc<dyn Recycle>) -> Payload {
        Payload { buf, start: 0, home: Some(home) }
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

impl Drop for Payload {
    fn drop(&mut self) {
        if let Some(home) = self.home.take() {
            home.recycle(std::mem::take(&mut self.buf));
        }
    }
}

/// A copy goes back to the same lender.
impl Clone for Payload {
    fn clone(&self) -> Payload {
        Payload { buf: self.buf.clone(), start: self.start, home: self.home.clone() }
    }
}

/// Equal bytes at equal offsets; the lender does not count.
impl PartialEq for Payload {
    fn eq(&self, other: &Payload) -> bool {
        self.buf == other.buf && self.start == other.start
    }
}

impl Eq for Payload {}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Payload").field("buf", &self.buf).field("start", &self.start).finish()
    }
}
