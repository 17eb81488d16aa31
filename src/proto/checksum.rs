//! The block checksum a class asks for, computed over bytes that may arrive in pieces.

use super::{Sum, Verify};

/// A running checksum of kind `Verify`.
pub enum Hasher {
    None,
    Crc32(crc32fast::Hasher),
    Md5(md5::Md5),
}

impl Hasher {
    pub fn new(kind: Verify) -> Hasher {
        use md5::Digest;
        match kind {
            Verify::None => Hasher::None,
            Verify::Crc32 => Hasher::Crc32(crc32fast::Hasher::new()),
            Verify::Md5 => Hasher::Md5(md5::Md5::new()),
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        use md5::Digest;
        match self {
            Hasher::None => {}
            Hasher::Crc32(h) => h.update(data),
            Hasher::Md5(h) => h.update(data),
        }
    }

    pub fn finish(self) -> Sum {
        use md5::Digest;
        match self {
            Hasher::None => Sum::None,
            Hasher::Crc32(h) => Sum::Crc32(h.finalize()),
            Hasher::Md5(h) => Sum::Md5(h.finalize().into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_sum_like_the_whole() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 13 + i / 7) as u8).collect();
        for kind in [Verify::None, Verify::Crc32, Verify::Md5] {
            let mut h = Hasher::new(kind);
            for piece in data.chunks(7777) {
                h.update(piece);
            }
            assert_eq!(h.finish(), Sum::of(kind, &data));
        }
        assert_eq!(Sum::of(Verify::Crc32, b"abc"), Sum::Crc32(crc32fast::hash(b"abc")));
    }
}
