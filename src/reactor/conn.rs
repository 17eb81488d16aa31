//! One connection: its state, the readiness it has, its frame reader and its out-queue.
//!
//! Reading and writing are free functions over a `Conn` plus the process-wide pieces they
//! share (the staging buffer, the token buckets), so the reactor can lend them out while it
//! holds other borrows.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Read};
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Instant;

use mio::net::TcpStream;
use nix::sys::socket::{sendmsg, MsgFlags};

use super::bucket::TokenBucket;
use super::pool::BufferPool;
use crate::proto::wire::{self, MsgType, HEADER_LEN};
use crate::proto::{Close, ConnId, Msg, Payload};
use crate::sys::sendfile;

/// Size of the reactor's staging buffer for reads.
pub const STAGING: usize = 64 << 10;
/// Per connection and wakeup: at most this many read or write calls ...
const OPS_BUDGET: usize = 64;
/// ... and at most this many bytes, so one fast connection cannot starve the others.
const BYTES_BUDGET: u64 = 16 << 20;
/// Frames one read pass hands over at most, so the machine's answers reach the out-queue, and
/// `OUT_PAUSE` can stop a peer that never reads, in small steps. A staging read holds up to 8,192
/// small frames; what is over waits in `carry`, else each could ask a reply of up to 4 MiB.
const FRAMES_BUDGET: usize = 64;
/// Most buffers gathered into one `sendmsg`.
const MAX_IOV: usize = 64;

/// One item of the out-queue, with a cursor.
pub enum Out {
    /// `buf[pos..]` is still to be written. Invariant: `pos < buf.len()` (empty buffers are
    /// never queued, and an item is popped as soon as its last byte is written).
    Bytes { buf: Arc<Vec<u8>>, pos: usize },
    /// `remaining` bytes of `file` starting at `offset` are still to be written. Invariant:
    /// `remaining > 0`. `sendfile` false asks for the pread/write path.
    File { file: Arc<OwnedFd>, offset: u64, remaining: u64, sendfile: bool },
}

/// Where a connection is in its life. Every transition is logged at debug level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// `connect(2)` is in progress; the first writable event settles it. `close_since` is set
    /// when the machine closed it meanwhile (then it is flushed and closed, without events).
    Connecting { close_since: Option<Instant> },
    /// Established: frames flow both ways and events go to the machine.
    Open,
    /// The machine closed it (or finished): the queue is written out, then our FIN is sent.
    /// Nothing is read and no event follows. `progress` is when bytes last moved.
    Flushing { progress: Instant },
    /// Our FIN is sent; input is discarded until the peer's EOF or `until`, so that closing
    /// with unread input does not reset the connection under data the peer has yet to read.
    Draining { until: Instant },
}

/// A frame whose payload did not fit what was buffered: read straight into its own buffer.
struct Partial {
    ty: MsgType,
    /// Exactly the payload length.
    buf: Vec<u8>,
    filled: usize,
}

pub struct Conn {
    pub id: ConnId,
    pub stream: TcpStream,
    pub peer: Option<SocketAddr>,
    pub state: State,
    /// Readiness we have: set by events, cleared only on `WouldBlock`.
    pub readable: bool,
    pub writable: bool,
    /// In the reactor's work list.
    pub queued: bool,
    /// Parked on the bucket of a direction (`Dir::i`); in that lane's waiting list.
    pub parked: [bool; 2],
    pub out: VecDeque<Out>,
    /// Bytes of memory the out-queue holds (`Bytes` items; file ranges cost none). Reading
    /// pauses while it is over `OUT_PAUSE`, so a peer that asks and never reads cannot grow it.
    pub out_mem: usize,
    /// Items ever queued, and the number (in that count) of each queued frame's first item:
    /// `drop_unbegun` cuts only there.
    pushed: u64,
    frame_starts: VecDeque<u64>,
    /// False once the kernel refused sendfile for this connection: use pread/write for good.
    pub sendfile_ok: bool,
    /// The largest payload a frame may declare here (`Action::FrameLimit`).
    pub max_frame: u32,
    /// The frame types taken here (`Action::FrameTypes`).
    pub types: wire::TypeSet,
    /// A frame was decoded here: the peer said who it claims to be.
    spoke: bool,
    /// Reading waits for the machine: the next frame is over `max_frame`, and the machine has
    /// not judged what the peer said yet. A raise (or the machine's own deadline) ends it.
    pub held: bool,
    scratch: Vec<u8>,
    /// Bytes read but not parsed yet: a frame header cut off at the end of a read, or (on a
    /// limited connection) what follows a frame the machine must see before the next header
    /// is judged. At most one staging buffer.
    carry: Vec<u8>,
    partial: Option<Partial>,
}

/// Why a read pass stopped.
#[derive(Debug)]
pub enum ReadEnd {
    /// `WouldBlock`: the readable flag is cleared.
    Drained,
    /// The per-wakeup budget ran out while still readable.
    Budget,
    /// The download bucket is empty.
    Throttled,
    /// The next frame is over the connection's limit: see `Conn::held`.
    Held,
    /// EOF, a read error, or bytes that are not our protocol.
    Closed(Close),
}

/// Why a write pass stopped.
#[derive(Debug)]
pub enum WriteEnd {
    /// The out-queue is empty.
    Empty,
    /// `WouldBlock`: the writable flag is cleared.
    Blocked,
    Budget,
    /// The upload bucket is empty.
    Throttled,
    Failed(String),
}

impl Conn {
    /// `max_frame`: see `Action::FrameLimit`.
    pub fn new(id: ConnId, stream: TcpStream, peer: Option<SocketAddr>, state: State, max_frame: u32) -> Conn {
        Conn {
            id,
            stream,
            peer,
            state,
            readable: false,
            writable: false,
            queued: false,
            parked: [false; 2],
            out: VecDeque::new(),
            out_mem: 0,
            pushed: 0,
            frame_starts: VecDeque::new(),
            sendfile_ok: true,
            max_frame,
            types: wire::TypeSet::ALL,
            spoke: false,
            held: false,
            scratch: Vec::new(),
            carry: Vec::new(),
            partial: None,
        }
    }

    pub fn peer_str(&self) -> String {
        self.peer.map_or_else(|| "-".to_string(), |p| p.to_string())
    }

    pub fn push_bytes(&mut self, buf: Arc<Vec<u8>>) {
        if !buf.is_empty() {
            self.out_mem += buf.len();
            self.out.push_back(Out::Bytes { buf, pos: 0 });
            self.pushed += 1;
        }
    }

    pub fn push_file(&mut self, file: Arc<OwnedFd>, offset: u64, len: u64, sendfile: bool) {
        if len > 0 {
            self.out.push_back(Out::File { file, offset, remaining: len, sendfile });
            self.pushed += 1;
        }
    }

    /// The next item pushed begins a frame.
    pub fn begin_frame(&mut self) {
        let front = self.pushed - self.out.len() as u64;
        while self.frame_starts.front().is_some_and(|&s| s < front) {
            self.frame_starts.pop_front();
        }
        self.frame_starts.push_back(self.pushed);
    }

    /// Drops every queued frame that begins after the queue's first item: none of their bytes
    /// went out. The first item's frame is kept whole, as it may be half written.
    pub fn drop_unbegun(&mut self) {
        let front = self.pushed - self.out.len() as u64;
        let Some(&cut) = self.frame_starts.iter().find(|&&s| s > front) else { return };
        for item in self.out.drain((cut - front) as usize..) {
            if let Out::Bytes { buf, .. } = item {
                self.out_mem -= buf.len();
            }
        }
        self.pushed = cut;
        self.frame_starts.retain(|&s| s < cut);
    }

    /// When this connection gives up waiting, if it is closing.
    pub fn deadline(&self) -> Option<Instant> {
        match self.state {
            State::Connecting { close_since: Some(t) } => Some(t + super::CLOSE_STALL),
            State::Flushing { progress } => Some(progress + super::CLOSE_STALL),
            State::Draining { until } => Some(until),
            _ => None,
        }
    }
}

fn take(bucket: &mut Option<TokenBucket>, now: Instant, want: u64) -> u64 {
    match bucket {
        Some(b) => b.take(now, want),
        None => want,
    }
}

fn refund(bucket: &mut Option<TokenBucket>, n: u64) {
    if let Some(b) = bucket {
        b.refund(n);
    }
}

/// One read into `buf`, at most what the download bucket grants (unused tokens go back).
/// `Ok(None)`: interrupted, read again; `Err`: how this turn's reading ends.
fn read_metered(
    stream: &TcpStream,
    readable: &mut bool,
    buf: &mut [u8],
    down: &mut Option<TokenBucket>,
    now: Instant,
) -> Result<Option<usize>, ReadEnd> {
    let granted = take(down, now, buf.len() as u64);
    if granted == 0 {
        return Err(ReadEnd::Throttled);
    }
    match (&*stream).read(&mut buf[..granted as usize]) {
        Ok(n) => {
            refund(down, granted - n as u64);
            Ok(Some(n))
        }
        Err(e) => {
            refund(down, granted);
            match e.kind() {
                io::ErrorKind::WouldBlock => {
                    *readable = false;
                    Err(ReadEnd::Drained)
                }
                io::ErrorKind::Interrupted => Ok(None),
                _ => Err(ReadEnd::Closed(Close::Io(e.to_string()))),
            }
        }
    }
}

/// Reads and decodes frames into `frames` until `WouldBlock`, the budget (at most `room`
/// bytes, give or take one read), the bucket, EOF or an error. Complete frames read before an
/// EOF or error are still in `frames`.
pub fn read_frames(
    c: &mut Conn,
    stage: &mut [u8],
    pool: &Arc<BufferPool>,
    (down, now): (&mut Option<TokenBucket>, Instant),
    room: u64,
    frames: &mut Vec<Msg>,
) -> ReadEnd {
    let mut bytes = 0u64;
    let budget = BYTES_BUDGET.min(room);
    for _ in 0..OPS_BUDGET {
        if bytes >= budget || frames.len() >= FRAMES_BUDGET {
            return ReadEnd::Budget;
        }
        if let Some(p) = &mut c.partial {
            // Read the rest of a big payload straight into its own buffer: no second copy.
            let n = match read_metered(&c.stream, &mut c.readable, &mut p.buf[p.filled..], down, now) {
                Ok(Some(n)) => n,
                Ok(None) => continue,
                Err(end) => return end,
            };
            if n == 0 {
                let (filled, len) = (p.filled, p.buf.len());
                let e = format!("peer closed the connection inside a frame ({filled} of {len} bytes)");
                return ReadEnd::Closed(Close::Io(e));
            }
            bytes += n as u64;
            p.filled += n;
            if p.filled == p.buf.len() {
                let p = c.partial.take().expect("partial frame present");
                match Msg::decode(p.ty, Payload::lent(p.buf, pool.clone())) {
                    Ok(m) => {
                        c.spoke = true;
                        frames.push(m);
                    }
                    Err(e) => return ReadEnd::Closed(Close::Decode(e.to_string())),
                }
            }
            continue;
        }

        // Small frames: read into the staging buffer behind what was carried over; a whole
        // header carried over is parsed before reading more.
        let cl = c.carry.len();
        stage[..cl].copy_from_slice(&c.carry);
        c.carry.clear();
        let end = if cl >= HEADER_LEN {
            cl
        } else {
            let n = match read_metered(&c.stream, &mut c.readable, &mut stage[cl..], down, now) {
                Ok(Some(n)) => n,
                Ok(None) => {
                    c.carry.extend_from_slice(&stage[..cl]);
                    continue;
                }
                Err(end) => {
                    c.carry.extend_from_slice(&stage[..cl]);
                    return end;
                }
            };
            if n == 0 {
                return ReadEnd::Closed(if cl > 0 {
                    Close::Io(format!("peer closed the connection inside a frame header ({cl} bytes)"))
                } else {
                    Close::Eof
                });
            }
            bytes += n as u64;
            cl + n
        };
        if let Some(end) = parse_frames(c, &stage[..end], pool, frames) {
            return end;
        }
    }
    ReadEnd::Budget
}

/// Decodes the frames in `buf`, keeping a cut-off header in `c.carry` and starting a `Partial`
/// for a payload that goes past it. `Some` when reading must stop here.
/// `frames` holds what this read pass decoded so far, which the machine has not seen yet.
fn parse_frames(c: &mut Conn, buf: &[u8], pool: &Arc<BufferPool>, frames: &mut Vec<Msg>) -> Option<ReadEnd> {
    let mut pos = 0;
    loop {
        if frames.len() >= FRAMES_BUDGET && pos < buf.len() {
            c.carry.extend_from_slice(&buf[pos..]);
            return Some(ReadEnd::Budget);
        }
        let h = match wire::parse_header(&buf[pos..]) {
            Ok(Some(h)) => h,
            Ok(None) => {
                // A header cut off by the end of the read: keep it for the next one.
                c.carry.extend_from_slice(&buf[pos..]);
                return None;
            }
            Err(e) => return Some(ReadEnd::Closed(Close::Decode(e.to_string()))),
        };
        if !c.types.contains(h.ty) {
            let e = format!("a {:?} frame: this process takes none ({} bytes declared)", h.ty, h.len);
            return Some(ReadEnd::Closed(Close::Decode(e)));
        }
        if h.len > c.max_frame {
            if c.spoke || !frames.is_empty() {
                // What the peer said may raise the limit (a hello whose proof can be checked
                // only once the master's word comes): wait for the machine, holding at most
                // what this read brought.
                c.carry.extend_from_slice(&buf[pos..]);
                c.held = true;
                return Some(ReadEnd::Held);
            }
            let e = format!(
                "a {:?} frame of {} bytes is over this connection's limit of {} bytes (not authenticated yet)",
                h.ty, h.len, c.max_frame
            );
            return Some(ReadEnd::Closed(Close::Decode(e)));
        }
        let body = pos + HEADER_LEN;
        let len = h.len as usize;
        if buf.len() - body >= len {
            match Msg::decode(h.ty, Payload::from_vec(buf[body..body + len].to_vec())) {
                Ok(m) => {
                    c.spoke = true;
                    frames.push(m);
                }
                Err(e) => return Some(ReadEnd::Closed(Close::Decode(e.to_string()))),
            }
            pos = body + len;
        } else {
            // `len` was checked against the type's and the connection's limits.
            let mut pb = pool.take(len);
            let have = buf.len() - body;
            pb[..have].copy_from_slice(&buf[body..]);
            c.partial = Some(Partial { ty: h.ty, buf: pb, filled: have });
            return None;
        }
    }
}

/// Reads and throws away input (a connection we are closing). `Closed` on EOF or error.
pub fn discard_input(c: &mut Conn, stage: &mut [u8]) -> ReadEnd {
    for _ in 0..OPS_BUDGET {
        match (&c.stream).read(stage) {
            Ok(0) => return ReadEnd::Closed(Close::Eof),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                c.readable = false;
                return ReadEnd::Drained;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return ReadEnd::Closed(Close::Io(e.to_string())),
        }
    }
    ReadEnd::Budget
}

/// Writes the out-queue until it is empty, `WouldBlock`, the budget or the bucket. Returns
/// also how many bytes went out.
pub fn write_out(c: &mut Conn, up: &mut Option<TokenBucket>, now: Instant) -> (WriteEnd, u64) {
    let mut total = 0u64;
    for _ in 0..OPS_BUDGET {
        if total >= BYTES_BUDGET {
            return (WriteEnd::Budget, total);
        }
        let Some(front) = c.out.front_mut() else { return (WriteEnd::Empty, total) };
        let res = match front {
            Out::Bytes { .. } => {
                // Gather the run of byte buffers at the front into one sendmsg.
                let mut want = 0u64;
                let mut items = 0;
                for o in c.out.iter().take(MAX_IOV) {
                    match o {
                        Out::Bytes { buf, pos } => want += (buf.len() - pos) as u64,
                        Out::File { .. } => break,
                    }
                    items += 1;
                }
                let granted = take(up, now, want);
                if granted == 0 {
                    return (WriteEnd::Throttled, total);
                }
                let mut iov = Vec::with_capacity(items);
                let mut left = granted as usize;
                for o in c.out.iter().take(items) {
                    if left == 0 {
                        break;
                    }
                    if let Out::Bytes { buf, pos } = o {
                        let s = &buf[*pos..(*pos + left).min(buf.len())];
                        left -= s.len();
                        iov.push(IoSlice::new(s));
                    }
                }
                // More follows (a block body, or bytes the bucket held back): let the kernel
                // put it in the same segments.
                let more = granted < want || c.out.len() > items;
                let mut flags = MsgFlags::MSG_NOSIGNAL;
                if more {
                    flags |= MsgFlags::from_bits_retain(nix::libc::MSG_MORE);
                }
                let r = sendmsg::<()>(c.stream.as_raw_fd(), &iov, &[], flags, None).map_err(io::Error::from);
                (granted, r, false)
            }
            Out::File { file, offset, remaining, sendfile } => {
                let want = (*remaining).min(BYTES_BUDGET);
                let granted = take(up, now, want);
                if granted == 0 {
                    return (WriteEnd::Throttled, total);
                }
                let count = granted as usize;
                let mut r = None;
                if *sendfile && c.sendfile_ok {
                    match sendfile::send_file(c.stream.as_fd(), file.as_fd(), offset, count) {
                        Err(e) if sendfile::is_unsupported(&e) => {
                            log::debug!(
                                "event=sendfile_fallback conn={} peer={} error={}",
                                c.id,
                                c.peer.map_or_else(|| "-".to_string(), |p| p.to_string()),
                                crate::proto::text::quoted(&e)
                            );
                            c.sendfile_ok = false;
                        }
                        other => r = Some(other),
                    }
                }
                let r = match r {
                    Some(r) => r,
                    None => sendfile::copy_file_rw(c.stream.as_fd(), file.as_fd(), offset, count, &mut c.scratch),
                };
                (granted, r, true)
            }
        };
        let (granted, r, is_file) = res;
        match r {
            Ok(0) => {
                refund(up, granted);
                let why = if is_file {
                    "source file ended before the block did (it changed)"
                } else {
                    "socket took no bytes"
                };
                return (WriteEnd::Failed(why.into()), total);
            }
            Ok(n) => {
                refund(up, granted - n as u64);
                total += n as u64;
                c.out_mem -= advance(&mut c.out, n);
            }
            Err(e) => {
                refund(up, granted);
                match e.kind() {
                    io::ErrorKind::WouldBlock => {
                        c.writable = false;
                        return (WriteEnd::Blocked, total);
                    }
                    io::ErrorKind::Interrupted => {}
                    _ => return (WriteEnd::Failed(e.to_string()), total),
                }
            }
        }
    }
    (WriteEnd::Budget, total)
}

/// Moves the queue's cursors past `n` written bytes. A `File` item's offset was advanced by
/// the send itself; only its `remaining` is counted down here. Returns the memory freed (the
/// lengths of the `Bytes` items written out).
fn advance(out: &mut VecDeque<Out>, mut n: usize) -> usize {
    let mut freed = 0;
    while n > 0 {
        let Some(front) = out.front_mut() else { break };
        match front {
            Out::Bytes { buf, pos } => {
                let left = buf.len() - *pos;
                if n < left {
                    *pos += n;
                    break;
                }
                n -= left;
                freed += buf.len();
                out.pop_front();
            }
            Out::File { remaining, .. } => {
                debug_assert!(n as u64 <= *remaining);
                *remaining -= (n as u64).min(*remaining);
                if *remaining == 0 {
                    out.pop_front();
                }
                break;
            }
        }
    }
    freed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_unbegun_keeps_the_frame_in_flight_whole() {
        let mut c = Conn::new(1, local_stream(), None, State::Open, wire::NO_FRAME_LIMIT);
        for f in 0..3u8 {
            c.begin_frame();
            c.push_bytes(Arc::new(vec![f; 4]));
            c.push_bytes(Arc::new(vec![f; 6]));
        }
        // Half of frame 0's first item is out.
        c.out_mem -= advance(&mut c.out, 2);
        c.drop_unbegun();
        assert_eq!(c.out.len(), 2);
        assert_eq!(c.out_mem, 10);
        c.begin_frame();
        c.push_bytes(Arc::new(vec![9; 3]));
        assert_eq!((c.out.len(), c.out_mem), (3, 13));
        // Frame 0 is written out: the abort frame is all that is left, and is begun.
        c.out_mem -= advance(&mut c.out, 8);
        c.drop_unbegun();
        assert_eq!((c.out.len(), c.out_mem), (1, 3));
    }

    /// A connected TCP stream on 127.0.0.1, for a `Conn` that is never written.
    fn local_stream() -> TcpStream {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let s = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        TcpStream::from_std(s)
    }

    #[test]
    fn advance_moves_cursors() {
        let mut q = VecDeque::new();
        q.push_back(Out::Bytes { buf: Arc::new(vec![1, 2, 3]), pos: 0 });
        q.push_back(Out::Bytes { buf: Arc::new(vec![4, 5]), pos: 0 });
        assert_eq!(advance(&mut q, 4), 3);
        assert_eq!(q.len(), 1);
        assert!(matches!(q.front(), Some(Out::Bytes { pos: 1, .. })));
        assert_eq!(advance(&mut q, 1), 2);
        assert!(q.is_empty());
    }
}
