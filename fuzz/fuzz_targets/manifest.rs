//! `Manifest::decode` on arbitrary bytes.
//!
//! Properties: no panic; allocation bounded by the input; a decoded manifest re-encodes and
//! decodes to an equal value (decode sorts the entries, so the bytes may differ from the input
//! once, then are stable); the path rules hold for every entry; the block map is consistent
//! (block counts, offsets and lengths add up to the file sizes).
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use wugui::proto::manifest::{check_path, Kind, Manifest};

fuzz_target!(|data: &[u8]| {
    let (r, used) = common::measure(|| Manifest::decode(data));
    common::check_alloc("Manifest::decode", data.len(), used);
    let Ok(m) = r else { return };

    let enc = m.encode();
    let back = Manifest::decode(&enc).unwrap_or_else(|e| panic!("re-encoded manifest does not decode: {e}"));
    assert_eq!(back, m);
    assert_eq!(back.encode(), enc, "encoding is not stable");
    assert_eq!(back.id(), m.id());

    // Entry rules, as `Manifest::new` documents them.
    let entries = m.entries();
    for (i, e) in entries.iter().enumerate() {
        check_path(&e.path).unwrap_or_else(|why| panic!("decoded a bad path: {why}"));
        assert!(e.mode <= 0o7777);
        if i > 0 {
            assert!(entries[i - 1].path.as_bytes() < e.path.as_bytes(), "entries not sorted or repeated");
        }
        if let Some((parent, _)) = e.path.rsplit_once('/') {
            assert!(
                entries[..i].iter().any(|p| p.path == parent && p.kind == Kind::Dir),
                "parent of {:?} is not an earlier directory",
                e.path
            );
        }
    }

    // The block map.
    let mut blocks = 0u64;
    let mut bytes = 0u64;
    for (i, e) in entries.iter().enumerate() {
        let (first, count) = m.entry_blocks(i as u32);
        let Kind::File { size } = e.kind else {
            assert_eq!(count, 0, "a non-file has blocks");
            continue;
        };
        bytes += size;
        let bs = m.block_size as u64;
        assert_eq!(count, size.div_ceil(bs), "block count of {:?}", e.path);
        if count == 0 {
            continue;
        }
        assert_eq!(first, blocks, "blocks of {:?} do not follow the previous file", e.path);
        blocks += count;
        let b0 = m.block(first).expect("first block of a file");
        assert_eq!((b0.index, b0.entry, b0.offset), (first, i as u32, 0));
        assert_eq!(b0.len as u64, size.min(bs));
        let last = m.block(first + count - 1).expect("last block of a file");
        assert_eq!(last.entry, i as u32);
        assert_eq!(last.offset + last.len as u64, size, "last block of {:?} does not end the file", e.path);
        assert!(last.len > 0 && last.len as u64 <= bs);
    }
    assert_eq!(m.blocks(), blocks);
    assert_eq!(m.bytes(), bytes);
    assert_eq!(m.block(blocks), None);
    assert_eq!(m.block(u64::MAX), None);
});
