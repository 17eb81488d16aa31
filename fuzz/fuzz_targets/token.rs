//! `Token::decode` and `Token::verify` on arbitrary bytes.
//!
//! Properties: no panic; allocation bounded by the input; a decoded token re-encodes to the
//! same bytes; `verify` reports a malformed token exactly as `decode` does; and for a token
//! properly signed under the fuzzed key, `verify` gives the documented verdict (expired,
//! wrong master, or the token), while any other key gives `BadSignature`.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use std::net::IpAddr;
use wugui::proto::auth::{same_host, Token, TokenError};

/// Input layout for the verify half: key length (0..=63), key, `now` (8 bytes), presenter
/// kind (0 none, 4 IPv4 + 4 bytes, 6 IPv6 + 16 bytes, anything else none), then the token.
struct Case<'a> {
    key: &'a [u8],
    now: u64,
    presenter: Option<IpAddr>,
    token: &'a [u8],
}

fn split(data: &[u8]) -> Option<Case<'_>> {
    let (&klen, rest) = data.split_first()?;
    let klen = (klen & 63) as usize;
    let key = rest.get(..klen)?;
    let rest = &rest[klen..];
    let now = u64::from_be_bytes(rest.get(..8)?.try_into().ok()?);
    let (&kind, rest) = rest[8..].split_first()?;
    let (presenter, token) = match kind {
        4 => (Some(IpAddr::from(<[u8; 4]>::try_from(rest.get(..4)?).ok()?)), &rest[4..]),
        6 => (Some(IpAddr::from(<[u8; 16]>::try_from(rest.get(..16)?).ok()?)), &rest[16..]),
        _ => (None, rest),
    };
    Some(Case { key, now, presenter, token })
}

fuzz_target!(|data: &[u8]| {
    // Decode the whole input.
    let (r, used) = common::measure(|| Token::decode(data));
    common::check_alloc("Token::decode", data.len(), used);
    if let Ok(t) = &r {
        let enc = t.encode();
        assert_eq!(enc, data, "re-encoding {t:?} changed the bytes");
        assert_eq!(Token::decode(&enc).as_ref(), Ok(t));
    }

    // Verify a token under a fuzzed key, clock and presenter.
    let Some(c) = split(data) else { return };
    let (v, used) = common::measure(|| Token::verify(c.token, c.key, c.now, c.presenter));
    common::check_alloc("Token::verify", data.len(), used);
    let t = match Token::decode(c.token) {
        Err(e) => {
            assert_eq!(v, Err(TokenError::Malformed(e)));
            return;
        }
        Ok(t) => t,
    };
    if let Ok(ok) = &v {
        assert_eq!(ok, &t);
        assert!(c.now <= t.expiry);
    }

    // The same fields, signed under the key: now only expiry and presenter may refuse it.
    let signed = Token::issue(c.key, t.transfer, &t.class, t.master, t.expiry, t.nonce);
    let enc = signed.encode();
    let want = if c.now > t.expiry {
        Err(TokenError::Expired { expiry: t.expiry, now: c.now })
    } else {
        match c.presenter {
            Some(p) if !same_host(p, t.master) => Err(TokenError::WrongMaster { token: t.master, presenter: p }),
            _ => Ok(signed.clone()),
        }
    };
    assert_eq!(Token::verify(&enc, c.key, c.now, c.presenter), want);
    // HMAC pads keys of up to 64 bytes with zeros, so a key with 1 appended is a different key.
    let mut other = c.key.to_vec();
    other.push(1);
    assert_eq!(Token::verify(&enc, &other, c.now, c.presenter), Err(TokenError::BadSignature));
});
