//! `Manifest::decode` on arbitrary bytes.
//!
//! Properties: no panic; allocation bounded by the input; a decoded manifest re-encodes and
//! decodes to an equal value (decode sorts the entries, so the bytes may differ from the input
//! once, then are stable); the path rules hold for every entry; the block map is consistent
//! (blocks slice the stream of file bytes; a block's segments tile it exactly).
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use wugui::proto::class::auto_block_size;
use wugui::proto::manifest::{check_path, BlockRef, Kind, Manifest, Segment};

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
        check_path(e.path.as_bytes()).unwrap_or_else(|why| panic!("decoded a bad path: {why}"));
        assert!(e.mode <= 0o7777);
        if i > 0 {
            assert!(entries[i - 1].path.as_bytes() < e.path.as_bytes(), "entries not sorted or repeated");
        }
        if let Some(slash) = e.path.as_bytes().iter().rposition(|&c| c == b'/') {
            let parent = &e.path.as_bytes()[..slash];
            assert!(
                entries[..i].iter().any(|p| p.path.as_bytes() == parent && p.kind == Kind::Dir),
                "parent of {:?} is not an earlier directory",
                e.path
            );
        }
        // A hard link names a file entry before it: a po links inside its stage only.
        if let Kind::Link { to } = &e.kind {
            assert!(
                entries[..i].iter().any(|p| &p.path == to && matches!(p.kind, Kind::File { .. })),
                "hard link {:?} names {to:?}, not an earlier file",
                e.path
            );
        }
    }

    // The block map: blocks are fixed slices of the stream of every file's bytes in entry
    // order; `segments` says which file bytes a block holds.
    let bs = m.block_size as u64;
    let mut stream = 0u64;
    let mut checked = 0;
    for (i, e) in entries.iter().enumerate() {
        let (first, count) = m.entry_blocks(i as u32);
        let size = match e.kind {
            Kind::File { size } if size > 0 => size,
            _ => {
                assert_eq!((first, count), (0, 0), "{:?} holds no bytes but has blocks", e.path);
                continue;
            }
        };
        assert_eq!(first, stream / bs, "first block of {:?}", e.path);
        assert_eq!(first + count, (stream + size).div_ceil(bs), "block count of {:?}", e.path);
        // Where the file starts and ends, a segment of it must say so (a few files per input).
        if checked < 64 {
            checked += 1;
            let head = segments_of(&m, first, i as u32);
            assert_eq!(head.first().map(|s| s.offset), Some(0), "no segment starts {:?}", e.path);
            let tail = segments_of(&m, first + count - 1, i as u32);
            let end = tail.last().map(|s| s.offset + s.len as u64);
            assert_eq!(end, Some(size), "no segment ends {:?}", e.path);
        }
        stream += size;
    }
    assert_eq!(m.bytes(), stream);
    assert_eq!(m.blocks(), stream.div_ceil(bs));
    assert_eq!(m.block(m.blocks()), None);
    assert_eq!(m.block(u64::MAX), None);
    if m.blocks() > 0 {
        let last = m.block(m.blocks() - 1).unwrap();
        assert_eq!(last.offset + last.len as u64, stream);
        check_segments(&m, &last);
    }

    let auto = auto_block_size(m.bytes());
    assert!(auto.is_power_of_two() && ((256 << 10)..=(16 << 20)).contains(&auto));
});

/// The segments of block `index` that belong to entry `entry`, after checking the whole block.
fn segments_of(m: &Manifest, index: u64, entry: u32) -> Vec<Segment> {
    let b = m.block(index).unwrap_or_else(|| panic!("block {index} of {} is missing", m.blocks()));
    let segs = check_segments(m, &b);
    segs.into_iter().filter(|s| s.entry == entry).collect()
}

/// A block's segments tile it: in order, no gaps, each inside a non-empty file.
fn check_segments(m: &Manifest, b: &BlockRef) -> Vec<Segment> {
    assert!(b.len > 0 && b.len <= m.block_size);
    assert_eq!(b.offset, b.index * m.block_size as u64);
    let segs = m.segments(b);
    let mut at = 0u32;
    let mut prev_entry = None;
    for s in &segs {
        assert_eq!(s.at, at, "segments of block {} leave a gap or overlap: {segs:?}", b.index);
        assert!(s.len > 0, "empty segment in block {}: {segs:?}", b.index);
        assert!(prev_entry < Some(s.entry), "segments out of entry order: {segs:?}");
        prev_entry = Some(s.entry);
        let Kind::File { size } = m.entries()[s.entry as usize].kind else { panic!("segment of a non-file: {segs:?}") };
        assert!(s.offset + s.len as u64 <= size, "segment past the end of its file: {segs:?}");
        at += s.len;
    }
    assert_eq!(at, b.len, "segments of block {} do not cover it: {segs:?}", b.index);
    segs
}
