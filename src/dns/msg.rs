//! DNS messages (RFC 1035 §4.1): the query wugui sends and the answer it accepts. Pure: bytes in,
//! values out; no sockets, no clock, no randomness (the caller brings the query id).
//!
//! The layout, big-endian throughout:
//!
//! ```text
//! header    0..12   id u16 | flags u16 | qdcount u16 | ancount u16 | nscount u16 | arcount u16
//!           flags:  QR(15) opcode(14..11) AA(10) TC(9) RD(8) RA(7) Z(6..4) RCODE(3..0)
//! question  name | qtype u16 | qclass u16
//! record    name | type u16 | class u16 | ttl u32 | rdlength u16 | rdata[rdlength]
//! name      labels (a length byte 1..=63, then that many bytes) ending in a zero byte, or
//!           ending in a pointer: two bytes 0b11xxxxxx xxxxxxxx, a 14-bit offset in the message
//! ```
//!
//! Every byte of an answer is hostile. [`decode_answer`] reads it with a cursor that checks each
//! field against the bytes left before it looks, so it never panics and never indexes past the
//! end. It allocates nothing that the message sizes (at most [`MAX_ADDRS`] addresses; names are
//! compared in a fixed 255-byte buffer). A compression pointer must point to a byte *before* the
//! name (or pointer) that led to it, so every chain of pointers ends: no loops, no forward
//! references, no pointers outside the message. A successful decode guarantees: the id, the
//! question (name, type, class) and the QR bit match the query; every address came from an
//! `IN` record of the asked type owned by the asked name or by a CNAME chain that starts there
//! (at most [`MAX_CNAMES`] links); the TTL is the smallest of the records used.
//!
//! Only the header, the question and the answer section are read; the authority and additional
//! sections are not needed to find addresses and are not looked at.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::fmt;

pub const HEADER_LEN: usize = 12;
/// The largest message over UDP without EDNS0 (RFC 1035 §4.2.1); a longer answer comes with TC
/// set and is asked again over TCP.
pub const MAX_UDP: usize = 512;
/// The largest message at all (TCP's two-byte length prefix).
pub const MAX_MESSAGE: usize = 65535;
/// A name on the wire: length bytes, labels and the final zero byte (RFC 1035 §2.3.4).
pub const MAX_NAME: usize = 255;
pub const MAX_LABEL: usize = 63;
/// Addresses kept from one answer; more are ignored.
pub const MAX_ADDRS: usize = 32;
/// CNAME links followed from the asked name.
pub const MAX_CNAMES: usize = 8;
/// Pointers followed inside one name (backward-only pointers end anyway; this bounds the work).
pub const MAX_POINTERS: usize = 64;
/// TTLs above this are read as 0 (RFC 2181 §8).
pub const MAX_TTL: u32 = i32::MAX as u32;

const FLAG_QR: u16 = 1 << 15;
const FLAG_TC: u16 = 1 << 9;
const FLAG_RD: u16 = 1 << 8;
const CLASS_IN: u16 = 1;
const TYPE_CNAME: u16 = 5;
/// The smallest record: a one-byte name (root or half a pointer, so count 1), then 10 bytes.
const MIN_RECORD: usize = 11;

/// The address types wugui asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qtype {
    A,
    Aaaa,
}

impl Qtype {
    pub fn code(self) -> u16 {
        match self {
            Qtype::A => 1,
            Qtype::Aaaa => 28,
        }
    }
}

impl fmt::Display for Qtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Qtype::A => "A",
            Qtype::Aaaa => "AAAA",
        })
    }
}

/// The server's response code (RFC 1035 §4.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rcode {
    NoError,
    FormErr,
    ServFail,
    NxDomain,
    NotImp,
    Refused,
    Other(u8),
}

impl Rcode {
    fn from_u4(v: u8) -> Rcode {
        match v {
            0 => Rcode::NoError,
            1 => Rcode::FormErr,
            2 => Rcode::ServFail,
            3 => Rcode::NxDomain,
            4 => Rcode::NotImp,
            5 => Rcode::Refused,
            n => Rcode::Other(n),
        }
    }
}

impl fmt::Display for Rcode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rcode::NoError => f.write_str("NOERROR"),
            Rcode::FormErr => f.write_str("FORMERR"),
            Rcode::ServFail => f.write_str("SERVFAIL"),
            Rcode::NxDomain => f.write_str("NXDOMAIN"),
            Rcode::NotImp => f.write_str("NOTIMP"),
            Rcode::Refused => f.write_str("REFUSED"),
            Rcode::Other(n) => write!(f, "RCODE{n}"),
        }
    }
}

/// A decoded answer to one of our queries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub rcode: Rcode,
    /// TC: the answer did not fit in UDP; ask again over TCP. The records are not read.
    pub truncated: bool,
    /// The addresses of the asked type, in the server's order.
    pub addrs: Vec<IpAddr>,
    /// The smallest TTL of the records used, in seconds (0 when there are none).
    pub ttl: u32,
}

/// Why an answer was refused. Every variant is the server's fault, or an answer that is not ours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The message ended inside `what`.
    Truncated { what: &'static str },
    /// Longer than any DNS message can be.
    TooLong { len: usize },
    /// The id is not the one we sent (a stray or forged answer).
    WrongId { sent: u16, got: u16 },
    /// QR is 0, or the opcode is not QUERY.
    NotAnAnswer,
    /// The question is not the one we asked (count, name, type or class).
    WrongQuestion { why: &'static str },
    /// A length byte of type 0b01 or 0b10 (extended or reserved label types).
    BadLabel { at: usize, byte: u8 },
    /// A compression pointer to `to`, at or after the `limit` it had to stay below (a loop or a
    /// forward reference) or past the end of the message.
    BadPointer { at: usize, to: usize, limit: usize },
    /// More than [`MAX_POINTERS`] pointers in one name.
    TooManyPointers { at: usize },
    /// A name longer than [`MAX_NAME`] bytes.
    NameTooLong { at: usize },
    /// `count` records of at least 11 bytes cannot fit in the `left` bytes.
    CountTooLarge { count: u16, left: usize },
    /// An A record not 4 bytes long, an AAAA record not 16, or a CNAME whose name overruns its
    /// rdata.
    BadRdata { rtype: u16, len: u16 },
    /// A CNAME chain longer than [`MAX_CNAMES`].
    TooManyCnames,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use DecodeError::*;
        match self {
            Truncated { what } => write!(f, "server sent an answer that ends inside the {what}"),
            TooLong { len } => write!(f, "server sent {len} bytes, more than a DNS message can hold"),
            WrongId { sent, got } => write!(f, "answer has id {got}, the query had {sent}"),
            NotAnAnswer => f.write_str("server sent a message that is not an answer to a query"),
            WrongQuestion { why } => write!(f, "server answered another question ({why})"),
            BadLabel { at, byte } => write!(f, "server sent a label of unknown type 0x{byte:02x} at byte {at}"),
            BadPointer { at, to, limit } => write!(
                f,
                "server sent a compression pointer at byte {at} to byte {to} (it must point below {limit}: a loop or a pointer out of range)"
            ),
            TooManyPointers { at } => write!(f, "server sent a name with more than {MAX_POINTERS} pointers at byte {at}"),
            NameTooLong { at } => write!(f, "server sent a name longer than {MAX_NAME} bytes at byte {at}"),
            CountTooLarge { count, left } => {
                write!(f, "server claims {count} records but only {left} bytes follow")
            }
            BadRdata { rtype, len } => write!(f, "server sent a type-{rtype} record with {len} bytes of data"),
            TooManyCnames => write!(f, "server sent a CNAME chain longer than {MAX_CNAMES}"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Why a name cannot be asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameError {
    Empty,
    EmptyLabel,
    LabelTooLong(usize),
    TooLong(usize),
    BadChar(char),
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NameError::Empty => f.write_str("empty host name"),
            NameError::EmptyLabel => f.write_str("host name has an empty label (`..`, or a leading dot)"),
            NameError::LabelTooLong(n) => write!(f, "host name has a label of {n} bytes (at most {MAX_LABEL})"),
            NameError::TooLong(n) => write!(f, "host name takes {n} bytes on the wire (at most {MAX_NAME})"),
            NameError::BadChar(c) => write!(f, "host name holds {c:?} (letters, digits, `-`, `_` and `.` only)"),
        }
    }
}

impl std::error::Error for NameError {}

/// `name` in wire form, lowercased: `po1.example` => `\x03po1\x07example\x00`. One trailing dot
/// (the root) is allowed. Letters, digits, `-` and `_` only: a host name, not any DNS name.
pub fn name_to_wire(name: &str) -> Result<Vec<u8>, NameError> {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    let mut out = Vec::with_capacity(name.len() + 2);
    for label in name.split('.') {
        if label.is_empty() {
            return Err(NameError::EmptyLabel);
        }
        if label.len() > MAX_LABEL {
            return Err(NameError::LabelTooLong(label.len()));
        }
        if let Some(c) = label.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_')) {
            return Err(NameError::BadChar(c));
        }
        out.push(label.len() as u8);
        out.extend(label.bytes().map(|b| b.to_ascii_lowercase()));
    }
    out.push(0);
    if out.len() > MAX_NAME {
        return Err(NameError::TooLong(out.len()));
    }
    Ok(out)
}

/// A standard query (RD set, one question, class IN) for `qtype` records of `name`.
pub fn encode_query(id: u16, name: &str, qtype: Qtype) -> Result<Vec<u8>, NameError> {
    let wire = name_to_wire(name)?;
    let mut out = Vec::with_capacity(HEADER_LEN + wire.len() + 4);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&FLAG_RD.to_be_bytes());
    out.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]); // qdcount 1; an, ns, ar 0
    out.extend_from_slice(&wire);
    out.extend_from_slice(&qtype.code().to_be_bytes());
    out.extend_from_slice(&CLASS_IN.to_be_bytes());
    Ok(out)
}

/// The id of a message, if it has one (for telling which of our queries an answer is for).
pub fn message_id(msg: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes([*msg.first()?, *msg.get(1)?]))
}

/// Decodes `msg` as the answer to the query `encode_query(id, name, qtype)` made, where `qname`
/// is `name_to_wire(name)`. See the module doc for what `Ok` guarantees.
pub fn decode_answer(msg: &[u8], id: u16, qname: &[u8], qtype: Qtype) -> Result<Answer, DecodeError> {
    if msg.len() > MAX_MESSAGE {
        return Err(DecodeError::TooLong { len: msg.len() });
    }
    let mut r = Cursor { msg, pos: 0 };
    let got = r.u16("header")?;
    if got != id {
        return Err(DecodeError::WrongId { sent: id, got });
    }
    let flags = r.u16("header")?;
    let (qd, an) = (r.u16("header")?, r.u16("header")?);
    r.take(4, "header")?; // nscount, arcount: those sections are not read
    if flags & FLAG_QR == 0 || (flags >> 11) & 0xf != 0 {
        return Err(DecodeError::NotAnAnswer);
    }
    if qd != 1 {
        return Err(DecodeError::WrongQuestion { why: "question count is not 1" });
    }
    let mut name = NameBuf::new();
    r.pos = read_name(msg, r.pos, &mut name)?;
    if name.as_slice() != qname {
        return Err(DecodeError::WrongQuestion { why: "another name" });
    }
    if r.u16("question")? != qtype.code() {
        return Err(DecodeError::WrongQuestion { why: "another type" });
    }
    if r.u16("question")? != CLASS_IN {
        return Err(DecodeError::WrongQuestion { why: "another class" });
    }
    let rcode = Rcode::from_u4((flags & 0xf) as u8);
    let truncated = flags & FLAG_TC != 0;
    let mut answer = Answer { rcode, truncated, addrs: Vec::new(), ttl: 0 };
    if truncated || rcode != Rcode::NoError {
        return Ok(answer);
    }
    let left = msg.len() - r.pos;
    if an as usize * MIN_RECORD > left {
        return Err(DecodeError::CountTooLarge { count: an, left });
    }
    // `owner` is the name whose records count: the asked name, then each CNAME's target.
    let mut owner = name;
    let mut cnames = 0;
    let mut ttl = u32::MAX;
    for _ in 0..an {
        let mut rname = NameBuf::new();
        r.pos = read_name(msg, r.pos, &mut rname)?;
        let rtype = r.u16("record")?;
        let class = r.u16("record")?;
        let rttl = r.u32("record")?;
        let rttl = if rttl > MAX_TTL { 0 } else { rttl };
        let len = r.u16("record")?;
        let start = r.pos;
        let data = r.take(len as usize, "record data")?;
        if class != CLASS_IN || rname.as_slice() != owner.as_slice() {
            continue; // not about our name: ignored, never believed
        }
        match rtype {
            // The name moved: from here on the target's records count.
            TYPE_CNAME => {
                cnames += 1;
                if cnames > MAX_CNAMES {
                    return Err(DecodeError::TooManyCnames);
                }
                let mut target = NameBuf::new();
                if read_name(msg, start, &mut target)? != start + data.len() {
                    return Err(DecodeError::BadRdata { rtype, len });
                }
                owner = target;
                ttl = ttl.min(rttl);
            }
            t if t == qtype.code() => {
                let ip = match (qtype, data.len()) {
                    (Qtype::A, 4) => IpAddr::V4(Ipv4Addr::new(data[0], data[1], data[2], data[3])),
                    (Qtype::Aaaa, 16) => {
                        let mut b = [0u8; 16];
                        b.copy_from_slice(data);
                        IpAddr::V6(Ipv6Addr::from(b))
                    }
                    _ => return Err(DecodeError::BadRdata { rtype, len }),
                };
                if answer.addrs.len() < MAX_ADDRS && !answer.addrs.contains(&ip) {
                    answer.addrs.push(ip);
                }
                ttl = ttl.min(rttl);
            }
            // Another type for our name (a DNAME, an RRSIG, ...): not needed.
            _ => {}
        }
    }
    answer.ttl = if answer.addrs.is_empty() { 0 } else { ttl };
    Ok(answer)
}

/// A name in wire form, lowercased, without pointers; at most [`MAX_NAME`] bytes, on the stack.
#[derive(Clone)]
struct NameBuf {
    buf: [u8; MAX_NAME],
    len: usize,
}

impl NameBuf {
    fn new() -> NameBuf {
        NameBuf { buf: [0; MAX_NAME], len: 0 }
    }
    fn as_slice(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// Reads the name that starts at `start` into `out`; returns the offset just past the name as
/// it stands at `start` (after its zero byte, or after its first pointer).
fn read_name(msg: &[u8], start: usize, out: &mut NameBuf) -> Result<usize, DecodeError> {
    out.len = 0;
    let mut pos = start;
    // Pointers must go strictly below this: the start of the name, then each pointer's target.
    let mut limit = start;
    let mut end = None;
    let mut pointers = 0;
    loop {
        let len = *msg.get(pos).ok_or(DecodeError::Truncated { what: "name" })?;
        match len >> 6 {
            0 if len == 0 => {
                if out.len + 1 > MAX_NAME {
                    return Err(DecodeError::NameTooLong { at: start });
                }
                out.buf[out.len] = 0;
                out.len += 1;
                return Ok(end.unwrap_or(pos + 1));
            }
            0 => {
                let n = len as usize;
                let label = msg.get(pos + 1..pos + 1 + n).ok_or(DecodeError::Truncated { what: "name" })?;
                // This label, and at least the final zero byte, must still fit.
                if out.len + 1 + n + 1 > MAX_NAME {
                    return Err(DecodeError::NameTooLong { at: start });
                }
                out.buf[out.len] = len;
                for (d, s) in out.buf[out.len + 1..out.len + 1 + n].iter_mut().zip(label) {
                    *d = s.to_ascii_lowercase();
                }
                out.len += 1 + n;
                pos += 1 + n;
            }
            3 => {
                let low = *msg.get(pos + 1).ok_or(DecodeError::Truncated { what: "name pointer" })?;
                let to = ((len as usize & 0x3f) << 8) | low as usize;
                if to >= limit || to >= msg.len() {
                    return Err(DecodeError::BadPointer { at: pos, to, limit });
                }
                pointers += 1;
                if pointers > MAX_POINTERS {
                    return Err(DecodeError::TooManyPointers { at: pos });
                }
                end.get_or_insert(pos + 2);
                limit = to;
                pos = to;
            }
            _ => return Err(DecodeError::BadLabel { at: pos, byte: len }),
        }
    }
}

/// A read position in a message; every read checks the bytes left first.
struct Cursor<'a> {
    msg: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let s = self.msg.get(self.pos..self.pos.saturating_add(n)).ok_or(DecodeError::Truncated { what })?;
        self.pos += n;
        Ok(s)
    }
    fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        let b = self.take(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
}

#[cfg(test)]
#[path = "msg_tests.rs"]
mod tests;
