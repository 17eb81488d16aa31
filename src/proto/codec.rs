//! Big-endian reader and writer over byte slices.
//!
//! `Reader` never panics and never allocates more than the bytes it was given: every
//! variable-length field is checked against both its declared maximum and the bytes left
//! before anything is copied. Decoders finish with `Reader::finish`, which rejects trailing
//! bytes, so that one encoding has exactly one meaning.

use std::fmt;

/// Why a byte string could not be decoded. Every variant is the peer's fault (or a truncated
/// input); our own misuse panics in tests instead of returning one of these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The input ended inside field `what`.
    Truncated { what: &'static str },
    /// Field `what` declared `len`, above its limit `max`.
    TooLong { what: &'static str, len: u64, max: u64 },
    /// Field `what` holds a value that has no meaning here.
    Invalid { what: &'static str, why: String },
    /// Bytes were left over after the last field.
    Trailing { left: usize },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Truncated { what } => write!(f, "peer sent a truncated {what}"),
            DecodeError::TooLong { what, len, max } => {
                write!(f, "peer sent {what} of {len} bytes/items, limit {max}")
            }
            DecodeError::Invalid { what, why } => write!(f, "peer sent a bad {what}: {why}"),
            DecodeError::Trailing { left } => write!(f, "peer sent {left} trailing bytes"),
        }
    }
}

impl std::error::Error for DecodeError {}

pub fn invalid(what: &'static str, why: impl Into<String>) -> DecodeError {
    DecodeError::Invalid { what, why: why.into() }
}

pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub fn left(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.left() < n {
            return Err(DecodeError::Truncated { what });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    pub fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], DecodeError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, what)?);
        Ok(a)
    }

    pub fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take(1, what)?[0])
    }
    pub fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array(what)?))
    }
    pub fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }
    pub fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array(what)?))
    }
    pub fn i64(&mut self, what: &'static str) -> Result<i64, DecodeError> {
        Ok(i64::from_be_bytes(self.array(what)?))
    }
    pub fn bool(&mut self, what: &'static str) -> Result<bool, DecodeError> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(invalid(what, format!("boolean byte {v}"))),
        }
    }

    /// A LEB128 varint (at most 10 bytes, no overflow).
    pub fn var(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        let mut v = 0u64;
        for i in 0..10 {
            let b = self.u8(what)?;
            if i == 9 && b > 1 {
                return Err(invalid(what, "varint overflows 64 bits"));
            }
            v |= ((b & 0x7f) as u64) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(invalid(what, "varint longer than 10 bytes"))
    }

    /// A u32 length prefix followed by that many bytes, at most `max`.
    pub fn bytes(&mut self, max: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let len = self.u32(what)? as usize;
        if len > max {
            return Err(DecodeError::TooLong { what, len: len as u64, max: max as u64 });
        }
        self.take(len, what)
    }

    /// Length-prefixed UTF-8 without NUL bytes.
    pub fn str(&mut self, max: usize, what: &'static str) -> Result<String, DecodeError> {
        let b = self.bytes(max, what)?;
        let s = std::str::from_utf8(b).map_err(|_| invalid(what, "not UTF-8"))?;
        if s.contains('\0') {
            return Err(invalid(what, "contains NUL"));
        }
        Ok(s.to_owned())
    }

    /// A u32 item count, at most `max`, and also no more than the bytes left could hold when
    /// each item takes at least `min_item` bytes: a huge count never causes a huge allocation.
    pub fn count(&mut self, max: usize, min_item: usize, what: &'static str) -> Result<usize, DecodeError> {
        let n = self.u32(what)? as usize;
        if n > max {
            return Err(DecodeError::TooLong { what, len: n as u64, max: max as u64 });
        }
        if n.saturating_mul(min_item.max(1)) > self.left() {
            return Err(DecodeError::Truncated { what });
        }
        Ok(n)
    }

    pub fn finish(self) -> Result<(), DecodeError> {
        match self.left() {
            0 => Ok(()),
            left => Err(DecodeError::Trailing { left }),
        }
    }
}

#[derive(Default)]
pub struct Writer {
    pub buf: Vec<u8>,
}

impl Writer {
    pub fn new() -> Self {
        Writer { buf: Vec::new() }
    }
    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    pub fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    pub fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    pub fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    pub fn i64(&mut self, v: i64) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    pub fn bool(&mut self, v: bool) {
        self.u8(v as u8);
    }
    /// A LEB128 varint: small numbers take one byte.
    pub fn var(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.buf.push(v as u8 | 0x80);
            v >>= 7;
        }
        self.buf.push(v as u8);
    }
    pub fn raw(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
    }
    pub fn bytes(&mut self, b: &[u8]) {
        self.u32(b.len() as u32);
        self.raw(b);
    }
    pub fn str(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_count_is_refused_before_allocation() {
        let mut w = Writer::new();
        w.u32(u32::MAX);
        let mut r = Reader::new(&w.buf);
        assert!(matches!(r.count(1 << 20, 1, "x"), Err(DecodeError::TooLong { .. })));
        let mut w = Writer::new();
        w.u32(1000);
        let mut r = Reader::new(&w.buf);
        assert!(matches!(r.count(1 << 20, 8, "x"), Err(DecodeError::Truncated { .. })));
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let r = Reader::new(&[1]);
        assert_eq!(r.finish(), Err(DecodeError::Trailing { left: 1 }));
    }
}
