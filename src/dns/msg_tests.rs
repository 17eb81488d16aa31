use super::*;
use crate::testutil::Rng;

const ID: u16 = 0x4a21;

/// An answer written out by hand: header, the question for `name`/`qtype`, then `records`
/// (already encoded), with `ancount` = `an`.
fn answer(id: u16, flags: u16, name: &str, qtype: Qtype, an: u16, records: &[u8]) -> Vec<u8> {
    let mut m = Vec::new();
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&flags.to_be_bytes());
    m.extend_from_slice(&[0, 1]);
    m.extend_from_slice(&an.to_be_bytes());
    m.extend_from_slice(&[0, 0, 0, 0]);
    m.extend_from_slice(&name_to_wire(name).unwrap());
    m.extend_from_slice(&qtype.code().to_be_bytes());
    m.extend_from_slice(&[0, 1]);
    m.extend_from_slice(records);
    m
}

/// A record: `owner` bytes (wire name or pointer), type, class IN, ttl, rdata.
fn rr(owner: &[u8], rtype: u16, ttl: u32, rdata: &[u8]) -> Vec<u8> {
    let mut r = owner.to_vec();
    r.extend_from_slice(&rtype.to_be_bytes());
    r.extend_from_slice(&[0, 1]);
    r.extend_from_slice(&ttl.to_be_bytes());
    r.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
    r.extend_from_slice(rdata);
    r
}

/// Header and the question for "po1.example": where the records start.
const HEAD_AND_QUESTION: usize = HEADER_LEN + 13 + 4;
const OK: u16 = 0x8180; // QR, RD, RA, NOERROR
const QNAME_PTR: [u8; 2] = [0xc0, 12];

fn decode(m: &[u8], name: &str, qtype: Qtype) -> Result<Answer, DecodeError> {
    decode_answer(m, ID, &name_to_wire(name).unwrap(), qtype)
}

fn a_answer() -> Vec<u8> {
    let mut recs = rr(&QNAME_PTR, 1, 300, &[10, 0, 0, 5]);
    recs.extend(rr(&QNAME_PTR, 1, 60, &[10, 0, 0, 6]));
    answer(ID, OK, "po1.example", Qtype::A, 2, &recs)
}

#[test]
fn a_query_is_laid_out_as_rfc_1035_says() {
    let q = encode_query(0xbeef, "Po1.Example.", Qtype::Aaaa).unwrap();
    let mut want = vec![0xbe, 0xef, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    want.extend_from_slice(b"\x03po1\x07example\x00");
    want.extend_from_slice(&[0, 28, 0, 1]);
    assert_eq!(q, want);
    assert_eq!(message_id(&q), Some(0xbeef));
    assert_eq!(message_id(&[1]), None);
}

#[test]
fn names_that_cannot_be_asked() {
    assert_eq!(name_to_wire(""), Err(NameError::Empty));
    assert_eq!(name_to_wire("."), Err(NameError::Empty));
    assert_eq!(name_to_wire("a..b"), Err(NameError::EmptyLabel));
    assert_eq!(name_to_wire(".a"), Err(NameError::EmptyLabel));
    assert_eq!(name_to_wire(&"x".repeat(64)), Err(NameError::LabelTooLong(64)));
    assert!(name_to_wire(&"x".repeat(63)).is_ok());
    let long = vec!["abcdefghi"; 26].join("."); // 26 * 10 + 1 bytes on the wire
    assert_eq!(name_to_wire(&long), Err(NameError::TooLong(261)));
    assert_eq!(name_to_wire("a b"), Err(NameError::BadChar(' ')));
    assert_eq!(name_to_wire("a\0b"), Err(NameError::BadChar('\0')));
}

#[test]
fn addresses_and_the_smallest_ttl() {
    let got = decode(&a_answer(), "PO1.example", Qtype::A).unwrap();
    assert_eq!(got.rcode, Rcode::NoError);
    assert!(!got.truncated);
    assert_eq!(got.addrs, vec![IpAddr::from([10, 0, 0, 5]), IpAddr::from([10, 0, 0, 6])]);
    assert_eq!(got.ttl, 60);

    let v6: Ipv6Addr = "fd00::5".parse().unwrap();
    let m = answer(ID, OK, "po1.example", Qtype::Aaaa, 1, &rr(&QNAME_PTR, 28, 1 << 31, &v6.octets()));
    let got = decode(&m, "po1.example", Qtype::Aaaa).unwrap();
    assert_eq!((got.addrs, got.ttl), (vec![IpAddr::V6(v6)], 0), "a TTL above 2^31-1 counts as 0");
}

#[test]
fn a_cname_chain_is_followed_and_other_owners_are_ignored() {
    // po1.example CNAME host7.example (the target written out in the rdata), then host7's A,
    // then an A for a name nobody asked about.
    let mut recs = rr(&QNAME_PTR, TYPE_CNAME, 100, b"\x05host7\xc0\x10");
    let target_at = (HEAD_AND_QUESTION + 12) as u8; // where "host7" starts in the message
    recs.extend(rr(&[0xc0, target_at], 1, 50, &[10, 1, 1, 7]));
    recs.extend(rr(b"\x05other\x00", 1, 5, &[6, 6, 6, 6]));
    let m = answer(ID, OK, "po1.example", Qtype::A, 3, &recs);
    let got = decode(&m, "po1.example", Qtype::A).unwrap();
    assert_eq!((got.addrs, got.ttl), (vec![IpAddr::from([10, 1, 1, 7])], 50));

    // An A record for the first name after the chain moved on is not believed either.
    let mut recs = rr(&QNAME_PTR, TYPE_CNAME, 100, b"\x05host7\xc0\x10");
    recs.extend(rr(&QNAME_PTR, 1, 50, &[6, 6, 6, 6]));
    let got = decode(&answer(ID, OK, "po1.example", Qtype::A, 2, &recs), "po1.example", Qtype::A).unwrap();
    assert!(got.addrs.is_empty());
}

#[test]
fn rcodes_and_truncation_come_back_without_records() {
    let nx = answer(ID, 0x8183, "gone.example", Qtype::A, 0, &[]);
    let got = decode(&nx, "gone.example", Qtype::A).unwrap();
    assert_eq!((got.rcode, got.addrs.len()), (Rcode::NxDomain, 0));
    let tc = answer(ID, OK | FLAG_TC, "big.example", Qtype::A, 40, &[0xc0]);
    let got = decode(&tc, "big.example", Qtype::A).unwrap();
    assert!(got.truncated && got.addrs.is_empty());
    assert_eq!(Rcode::from_u4(9).to_string(), "RCODE9");
}

#[test]
fn hostile_answers_are_refused() {
    let good = a_answer();
    let q = |m: &[u8]| decode(m, "po1.example", Qtype::A);

    // Not ours: another id, a query instead of an answer, another question.
    let mut m = good.clone();
    m[1] ^= 1;
    assert_eq!(q(&m), Err(DecodeError::WrongId { sent: ID, got: ID ^ 1 }));
    let mut m = good.clone();
    m[2] &= 0x7f;
    assert_eq!(q(&m), Err(DecodeError::NotAnAnswer));
    assert!(matches!(decode(&good, "po2.example", Qtype::A), Err(DecodeError::WrongQuestion { .. })));
    assert!(matches!(decode(&good, "po1.example", Qtype::Aaaa), Err(DecodeError::WrongQuestion { .. })));
    let mut m = good.clone();
    m[5] = 2;
    assert!(matches!(q(&m), Err(DecodeError::WrongQuestion { .. })));

    // Truncated anywhere: every proper prefix is an error, never a panic.
    for n in 0..good.len() {
        assert!(q(&good[..n]).is_err(), "prefix of {n} bytes");
    }
    assert!(matches!(q(&good[..5]), Err(DecodeError::Truncated { what: "header" })));

    // A pointer to itself, a loop of two, a forward pointer, one past the end.
    let at = HEAD_AND_QUESTION as u8;
    let selfp = answer(ID, OK, "po1.example", Qtype::A, 1, &rr(&[0xc0, at], 1, 1, &[1, 2, 3, 4]));
    assert_eq!(q(&selfp), Err(DecodeError::BadPointer { at: at as usize, to: at as usize, limit: at as usize }));
    let base = HEAD_AND_QUESTION as u8;
    // Record 1's owner (at `base`) is label "x" then a pointer to record 2's owner (18 bytes on),
    // which points back to record 1's.
    let mut recs = rr(&[1, b'x', 0xc0, base + 18], 1, 1, &[1, 2, 3, 4]);
    recs.extend(rr(&[0xc0, base], 1, 1, &[1, 2, 3, 4]));
    let loop2 = answer(ID, OK, "po1.example", Qtype::A, 2, &recs);
    assert!(matches!(q(&loop2), Err(DecodeError::BadPointer { .. })), "{:?}", q(&loop2));
    let far = answer(ID, OK, "po1.example", Qtype::A, 1, &rr(&[0xff, 0xff], 1, 1, &[1, 2, 3, 4]));
    assert!(matches!(q(&far), Err(DecodeError::BadPointer { to: 0x3fff, .. })));
    // A CNAME whose rdata (at byte 41) points to byte 42, inside itself.
    let cname_fwd = rr(&QNAME_PTR, TYPE_CNAME, 1, &[0xc0, 42]);
    let m = answer(ID, OK, "po1.example", Qtype::A, 1, &cname_fwd);
    assert!(matches!(q(&m), Err(DecodeError::BadPointer { .. })), "{:?}", q(&m));

    // Label types 01 and 10; a name over 255 bytes built from pointers back into labels.
    let m = answer(ID, OK, "po1.example", Qtype::A, 1, &rr(&[0x40, 0], 1, 1, &[1, 2, 3, 4]));
    assert!(matches!(q(&m), Err(DecodeError::BadLabel { byte: 0x40, .. })));
    let mut recs = Vec::new();
    let mut prev: Option<usize> = None;
    let mut pos = HEAD_AND_QUESTION;
    for _ in 0..5 {
        // Each owner is a 63-byte label followed by a pointer to the previous owner.
        let mut owner = vec![63];
        owner.extend_from_slice(&[b'a'; 63]);
        match prev {
            Some(p) => owner.extend_from_slice(&[0xc0 | (p >> 8) as u8, p as u8]),
            None => owner.push(0),
        }
        let rec = rr(&owner, 99, 1, &[]);
        prev = Some(pos);
        pos += rec.len();
        recs.extend(rec);
    }
    let m = answer(ID, OK, "po1.example", Qtype::A, 5, &recs);
    assert!(matches!(q(&m), Err(DecodeError::NameTooLong { .. })), "{:?}", q(&m));

    // Counts that cannot fit, A records of the wrong size, an endless CNAME chain.
    let mut m = good.clone();
    m[6..8].copy_from_slice(&[0xff, 0xff]);
    assert_eq!(q(&m), Err(DecodeError::CountTooLarge { count: 0xffff, left: good.len() - 29 }));
    let m = answer(ID, OK, "po1.example", Qtype::A, 1, &rr(&QNAME_PTR, 1, 1, &[1, 2, 3, 4, 5]));
    assert_eq!(q(&m), Err(DecodeError::BadRdata { rtype: 1, len: 5 }));
    let mut recs = Vec::new();
    for _ in 0..=MAX_CNAMES {
        recs.extend(rr(&QNAME_PTR, TYPE_CNAME, 1, &QNAME_PTR)); // po1 CNAME po1 CNAME ...
    }
    let m = answer(ID, OK, "po1.example", Qtype::A, MAX_CNAMES as u16 + 1, &recs);
    assert_eq!(q(&m), Err(DecodeError::TooManyCnames));
    // A CNAME whose name runs past its rdata.
    let m = answer(ID, OK, "po1.example", Qtype::A, 1, &rr(&QNAME_PTR, TYPE_CNAME, 1, b"\x03abc\x00\x00"));
    assert_eq!(q(&m), Err(DecodeError::BadRdata { rtype: TYPE_CNAME, len: 6 }));
    assert_eq!(q(&vec![0; MAX_MESSAGE + 1]), Err(DecodeError::TooLong { len: MAX_MESSAGE + 1 }));
    // Every error says it was the server.
    assert!(DecodeError::BadPointer { at: 40, to: 40, limit: 40 }.to_string().contains("loop"));
}

#[test]
fn more_addresses_than_kept_are_dropped() {
    let mut recs = Vec::new();
    for i in 0..40u8 {
        recs.extend(rr(&QNAME_PTR, 1, 10, &[10, 0, 0, i]));
    }
    let got = decode(&answer(ID, OK, "po1.example", Qtype::A, 40, &recs), "po1.example", Qtype::A).unwrap();
    assert_eq!(got.addrs.len(), MAX_ADDRS);
}

/// Bit flips, cuts, splices and pure noise over valid answers: the decoder returns, never panics,
/// and what it returns keeps its bounds.
#[test]
fn randomized_answers_never_panic() {
    let mut rng = Rng::new(0xd5);
    let mut cname = rr(&QNAME_PTR, TYPE_CNAME, 100, b"\x05host7\xc0\x10");
    cname.extend(rr(&[0xc0, 41], 1, 50, &[10, 1, 1, 7]));
    let seeds = [a_answer(), answer(ID, OK, "po1.example", Qtype::A, 2, &cname)];
    let mut oks = 0;
    for i in 0..20_000u32 {
        let mut m = seeds[(i % 2) as usize].clone();
        match rng.below(4) {
            0 => {
                for _ in 0..=rng.below(4) {
                    let at = rng.below(m.len() as u64) as usize;
                    m[at] ^= 1 << rng.below(8);
                }
            }
            1 => m.truncate(rng.below(m.len() as u64) as usize),
            2 => {
                let at = rng.below(m.len() as u64) as usize;
                let n = rng.below(40) as usize;
                let b = rng.bytes(n);
                m.splice(at..at, b);
            }
            _ => {
                let keep = 12.min(m.len());
                m.truncate(keep);
                let n = rng.below(600) as usize;
                m.extend(rng.bytes(n));
            }
        }
        if let Ok(a) = decode(&m, "po1.example", Qtype::A) {
            assert!(a.addrs.len() <= MAX_ADDRS);
            oks += 1;
        }
    }
    assert!(oks > 0, "some mutations (TTL bits, addresses) still decode");
}
