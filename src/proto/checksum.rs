//! The block checksum a class asks for, computed over bytes that may arrive in pieces, and the
//! project's one block digest.

use super::msg::Digest;
use super::{Event, Payload, Sum, Verify};

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

/// A received block to check against the digest it must have, away from the event loop:
/// `Action::Verify` hands it out, and whoever runs it (a worker thread of the reactor; the
/// simulator, at its next step) hands `run`'s event back to the machine. The bytes travel with
/// it and come back with a good verdict, so checking never copies a block.
#[derive(Debug)]
pub struct Check {
    pub transfer: u64,
    /// The machine's name for this check, unique among its checks.
    pub id: u64,
    pub kind: Verify,
    pub want: Sum,
    pub data: Payload,
}

/// What came of a [`Check`].
#[derive(Debug)]
pub enum Verdict {
    /// The bytes match; here they are back, to be staged.
    Good(Payload),
    Bad,
    /// The check did not run to its end (the worker running it panicked: a bug of ours, never
    /// the sender's fault); the text says why.
    Lost(String),
}

impl Check {
    /// Hashes the bytes and says whether they match.
    pub fn run(self) -> Event {
        let verdict =
            if Sum::of(self.kind, self.data.bytes()) == self.want { Verdict::Good(self.data) } else { Verdict::Bad };
        Event::Verified { transfer: self.transfer, id: self.id, verdict }
    }

    /// The event for check `id` of `transfer` that never ran to its end.
    pub fn lost(transfer: u64, id: u64, why: String) -> Event {
        Event::Verified { transfer, id, verdict: Verdict::Lost(why) }
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

    #[test]
    fn a_check_gives_its_bytes_back_only_when_they_match() {
        let data = Payload::from_vec(b"block".to_vec());
        let at = data.bytes().as_ptr();
        let want = Sum::of(Verify::Md5, b"block");
        let good = Check { transfer: 1, id: 2, kind: Verify::Md5, want, data }.run();
        let Event::Verified { transfer: 1, id: 2, verdict: Verdict::Good(back) } = good else { panic!("{good:?}") };
        assert_eq!(back.bytes().as_ptr(), at, "the same buffer, not a copy");
        let bad =
            Check { transfer: 1, id: 3, kind: Verify::Md5, want, data: Payload::from_vec(b"blocc".to_vec()) }.run();
        assert!(matches!(bad, Event::Verified { id: 3, verdict: Verdict::Bad, .. }), "{bad:?}");
    }
}
