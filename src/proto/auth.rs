//! Per-transfer tokens and the master's challenge-response.
//!
//! A token is the transfer id, class, master address, expiry and a random nonce, signed with
//! HMAC-SHA256 under the cluster key that every CAC replica holds. Any replica verifies it
//! alone. The MAC comparison is constant time (`Mac::verify_slice`).

use super::codec::{invalid, DecodeError, Reader, Writer};
use super::wire::MAX_NAME;
use core::net::IpAddr;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fmt;

type HmacSha256 = Hmac<Sha256>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub transfer: u64,
    pub class: String,
    pub master: IpAddr,
    /// Unix seconds.
    pub expiry: u64,
    pub nonce: [u8; 16],
    pub mac: [u8; 32],
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    Malformed(DecodeError),
    BadSignature,
    Expired { expiry: u64, now: u64 },
    WrongClass { token: String, wanted: String },
    WrongMaster { token: IpAddr, presenter: IpAddr },
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenError::Malformed(e) => write!(f, "malformed token: {e}"),
            TokenError::BadSignature => f.write_str("token signature does not verify"),
            TokenError::Expired { expiry, now } => write!(f, "token expired at {expiry} (now {now})"),
            TokenError::WrongClass { token, wanted } => write!(f, "token is for class {token}, not {wanted}"),
            TokenError::WrongMaster { token, presenter } => {
                write!(f, "token was issued to master {token} but presented by {presenter}")
            }
        }
    }
}

impl Token {
    fn body(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u64(self.transfer);
        w.str(&self.class);
        match self.master {
            IpAddr::V4(a) => {
                w.u8(4);
                w.raw(&a.octets());
            }
            IpAddr::V6(a) => {
                w.u8(6);
                w.raw(&a.octets());
            }
        }
        w.u64(self.expiry);
        w.raw(&self.nonce);
        w.buf
    }

    pub fn issue(key: &[u8], transfer: u64, class: &str, master: IpAddr, expiry: u64, nonce: [u8; 16]) -> Token {
        let mut t = Token { transfer, class: class.to_owned(), master, expiry, nonce, mac: [0; 32] };
        t.mac = mac(key, &t.body());
        t
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut b = self.body();
        b.extend_from_slice(&self.mac);
        b
    }

    pub fn decode(buf: &[u8]) -> Result<Token, DecodeError> {
        let mut r = Reader::new(buf);
        let transfer = r.u64("token transfer")?;
        let class = r.str(MAX_NAME, "token class")?;
        let master = match r.u8("token address family")? {
            4 => IpAddr::from(r.array::<4>("token address")?),
            6 => IpAddr::from(r.array::<16>("token address")?),
            f => return Err(invalid("token address family", f.to_string())),
        };
        let expiry = r.u64("token expiry")?;
        let nonce = r.array("token nonce")?;
        let mac = r.array("token mac")?;
        r.finish()?;
        Ok(Token { transfer, class, master, expiry, nonce, mac })
    }

    /// Checks signature first, so an attacker learns nothing from the other checks.
    pub fn verify(buf: &[u8], key: &[u8], now_unix: u64, presenter: Option<IpAddr>) -> Result<Token, TokenError> {
        let t = Token::decode(buf).map_err(TokenError::Malformed)?;
        let mut m = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
        m.update(&t.body());
        m.verify_slice(&t.mac).map_err(|_| TokenError::BadSignature)?;
        if now_unix > t.expiry {
            return Err(TokenError::Expired { expiry: t.expiry, now: now_unix });
        }
        if let Some(p) = presenter {
            if !same_host(p, t.master) {
                return Err(TokenError::WrongMaster { token: t.master, presenter: p });
            }
        }
        Ok(t)
    }
}

/// IPv4-mapped IPv6 addresses count as their IPv4 address.
pub fn same_host(a: IpAddr, b: IpAddr) -> bool {
    a.to_canonical() == b.to_canonical()
}

pub fn mac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut m = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    m.update(data);
    m.finalize().into_bytes().into()
}

/// The key of the swarm link between pos `a` and `b` (either order; `MASTER_PEER` names the
/// master's data link), derived from the master's secret `transfer_key`. The master hands each
/// po the keys of its own links only, so no po can prove an identity it does not have.
pub fn link_key(transfer_key: &[u8; 32], a: u32, b: u32) -> [u8; 32] {
    let (lo, hi) = (a.min(b), a.max(b));
    let mut data = b"wugui-link-v1".to_vec();
    data.extend_from_slice(&lo.to_be_bytes());
    data.extend_from_slice(&hi.to_be_bytes());
    mac(transfer_key, &data)
}

/// Compares two byte strings in time that depends only on their lengths.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Constant-time check of a challenge response.
pub fn verify_mac(key: &[u8], data: &[u8], tag: &[u8]) -> bool {
    let mut m = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    m.update(data);
    m.verify_slice(tag).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens() {
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let t = Token::issue(b"key", 5, "base1", ip, 100, [1; 16]);
        let b = t.encode();
        assert_eq!(Token::verify(&b, b"key", 50, Some(ip)), Ok(t.clone()));
        assert_eq!(Token::verify(&b, b"other", 50, Some(ip)), Err(TokenError::BadSignature));
        assert!(matches!(Token::verify(&b, b"key", 101, Some(ip)), Err(TokenError::Expired { .. })));
        assert!(matches!(
            Token::verify(&b, b"key", 50, Some("10.0.0.2".parse().unwrap())),
            Err(TokenError::WrongMaster { .. })
        ));
        assert!(matches!(Token::verify(&b[..b.len() - 1], b"key", 50, None), Err(TokenError::Malformed(_))));
        let mut forged = t.clone();
        forged.class = "other".into();
        assert_eq!(Token::verify(&forged.encode(), b"key", 50, None), Err(TokenError::BadSignature));
        for i in 0..b.len() {
            let mut f = b.clone();
            f[i] ^= 0x40;
            assert!(Token::verify(&f, b"key", 50, Some(ip)).is_err(), "flip at {i}");
        }
    }
}
