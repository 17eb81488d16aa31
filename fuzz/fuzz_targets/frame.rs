//! Frames: `wire::parse_header`, `Msg::from_frame` and `Msg::decode` on arbitrary bytes.
//!
//! Properties: no panic; allocation bounded by the input; a decoded frame re-encodes to the
//! very same bytes (the encoding is canonical) and decodes again to an equal message; strict
//! prefixes of a whole frame ask for more bytes; class settings carried by AuthGrant/VerifyOk
//! go through `ClassCfg::from_pairs` without panicking.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use wugui::proto::class::ClassCfg;
use wugui::proto::msg::{Msg, Payload};
use wugui::proto::wire::{self, MsgType, HEADER_LEN};

/// Block data compares by its bytes, wherever its payload starts.
fn norm(m: Msg) -> Msg {
    match m {
        Msg::Block { head, data } => Msg::Block { head, data: Payload::from_vec(data.bytes().to_vec()) },
        m => m,
    }
}

/// `m` was decoded from `frame` (a whole frame, header included).
fn round_trip(m: Msg, frame: &[u8]) {
    let again = m.to_frame();
    assert_eq!(again, frame, "re-encoding {m:?} changed the bytes");
    let (back, used) = Msg::from_frame(&again)
        .unwrap_or_else(|e| panic!("re-encoded {m:?} does not decode: {e}"))
        .unwrap_or_else(|| panic!("re-encoded {m:?} decodes as incomplete"));
    assert_eq!(used, again.len());
    let m = norm(m);
    assert_eq!(norm(back), m);
    for cut in [0, 1, HEADER_LEN - 1, HEADER_LEN, again.len() / 2, again.len() - 1] {
        if cut < again.len() {
            assert_eq!(Msg::from_frame(&again[..cut]), Ok(None), "{m:?} cut at {cut}");
        }
    }
    class_pairs(&m);
}

fn class_pairs(m: &Msg) {
    let (name, pairs) = match m {
        Msg::AuthGrant { class, .. } => ("c", class),
        Msg::VerifyOk { class_name, class, .. } => (class_name.as_str(), class),
        _ => return,
    };
    if let Ok(c) = ClassCfg::from_pairs(name, pairs) {
        if common::strict() {
            let back = ClassCfg::from_pairs(name, &c.to_pairs());
            assert_eq!(back.as_ref(), Ok(&c), "class settings {pairs:?} do not round-trip");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    // 1. The header alone.
    let h = wire::parse_header(data);
    match &h {
        Ok(None) => assert!(data.len() < HEADER_LEN),
        Ok(Some(h)) => assert!(h.len <= h.ty.max_payload()),
        Err(_) => {}
    }

    // 2. The whole frame.
    let (r, used) = common::measure(|| Msg::from_frame(data));
    common::check_alloc("Msg::from_frame", data.len(), used);
    match (&h, r) {
        (Err(e), r) => assert_eq!(r.as_ref().err(), Some(e), "header error not passed on"),
        (Ok(None), r) => assert_eq!(r, Ok(None)),
        (Ok(Some(h)), Ok(None)) => assert!(data.len() < HEADER_LEN + h.len as usize),
        (Ok(Some(h)), Ok(Some((m, n)))) => {
            assert_eq!(n, HEADER_LEN + h.len as usize);
            assert!(n <= data.len());
            assert_eq!(m.ty(), h.ty);
            round_trip(m, &data[..n]);
        }
        (Ok(Some(_)), Err(_)) => {}
    }

    // 3. `Msg::decode` straight from a payload: byte 0 picks the type, byte 1 how far into the
    //    buffer the payload starts (the reactor reads blocks into buffers with a head room).
    if let [tb, off, rest @ ..] = data {
        let Some(ty) = MsgType::from_u8(*tb) else { return };
        let start = (*off as usize).min(rest.len());
        let mut payload = Payload::from_vec(rest.to_vec());
        payload.start = start;
        let body = rest[start..].to_vec();
        let (r, used) = common::measure(move || Msg::decode(ty, payload));
        common::check_alloc("Msg::decode", rest.len(), used);
        if let Ok(m) = r {
            assert_eq!(m.ty(), ty);
            if body.len() as u64 <= ty.max_payload() as u64 {
                let mut frame = Vec::with_capacity(HEADER_LEN + body.len());
                wire::write_header(&mut frame, ty, body.len() as u32);
                frame.extend_from_slice(&body);
                round_trip(m, &frame);
            }
        }
    }
});
