//! Have-bitmaps: bit `i` (least significant first within each byte) says block `i` is held.
//! The same layout goes on the wire (`Msg::Accept`) and into the po's resume record.

/// The bitmap of `held`.
pub fn bitmap(held: &[bool]) -> Vec<u8> {
    let mut v = vec![0u8; held.len().div_ceil(8)];
    for (i, h) in held.iter().enumerate() {
        if *h {
            v[i / 8] |= 1 << (i % 8);
        }
    }
    v
}

/// Bit `i` of `map`; false beyond its end.
pub fn bit(map: &[u8], i: u64) -> bool {
    map.get((i / 8) as usize).is_some_and(|b| b & (1 << (i % 8)) != 0)
}

/// The first `n` bits of `map`.
pub fn unpack(map: &[u8], n: usize) -> Vec<bool> {
    (0..n as u64).map(|i| bit(map, i)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let held: Vec<bool> = (0..21).map(|i| i % 3 == 0 || i == 20).collect();
        let map = bitmap(&held);
        assert_eq!(map, [0b0100_1001, 0b1001_0010, 0b0001_0100]);
        assert_eq!(unpack(&map, held.len()), held);
        assert!(!bit(&map, 1000));
        assert!(bitmap(&[]).is_empty());
    }
}
