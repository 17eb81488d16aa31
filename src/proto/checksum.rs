//! The block checksum a class asks for, computed over bytes that may arrive in pieces, and the
//! project's one block digest.

use super::msg::Digest;
use super::{Sum, Verify};

/// The block digest: BLAKE3. It is what a block is checked against whenever the bytes did not
/// come from the master itself (peers in a swarm, a resumed stage, a delta copy), because CRC32
/// can be forged by choosing 4 bytes and MD5 is slow. The one place this choice is made.
pub fn digest(data: &[u8]) -> Digest {
    *blake3::hash(data).as_bytes()
}

/// A running checksum of kind `Verify`.
pub enum Hasher {
    None,
    Crc32(crc32fast::Hasher),
    Md5(md5::Md5),
    Blake3(Box<blake3::Hasher>),
}

impl Hasher {
    pub fn new(kind: Verify) -> Hasher {
        use md5::Digest;
        match kind {
            Verify::None => Hasher::None,
            Verify::Crc32 => Hasher::Crc32(crc32fast::Hasher::new()),
            Verify::Md5 => Hasher::Md5(md5::Md5::new()),
            Verify::Blake3 => Hasher::Blake3(Box::new(blake3::Hasher::new())),
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        use md5::Digest;
        match self {
            Hasher::None => {}
            Hasher::Crc32(h) => h.update(data),
            Hasher::Md5(h) => h.update(data),
            Hasher::Blake3(h) => {
                h.update(data);
            }
        }
    }

    pub fn finish(self) -> Sum {
        use md5::Digest;
        match self {
            Hasher::None => Sum::None,
            Hasher::Crc32(h) => Sum::Crc32(h.finalize()),
            Hasher::Md5(h) => Sum::Md5(h.finalize().into()),
            Hasher::Blake3(h) => Sum::Blake3(*h.finalize().as_bytes()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_sum_like_the_whole() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 13 + i / 7) as u8).collect();
        for kind in [Verify::None, Verify::Crc32, Verify::Md5, Verify::Blake3] {
            let mut h = Hasher::new(kind);
            for piece in data.chunks(7777) {
                h.update(piece);
            }
            assert_eq!(h.finish(), Sum::of(kind, &data));
        }
        assert_eq!(Sum::of(Verify::Crc32, b"abc"), Sum::Crc32(crc32fast::hash(b"abc")));
        // The published BLAKE3 test vector for "abc".
        let abc = "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85";
        let hex: String = digest(b"abc").iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, abc);
        assert_eq!(Sum::of(Verify::Blake3, b"abc"), Sum::Blake3(digest(b"abc")));
    }
}
