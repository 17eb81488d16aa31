//! Rogue programs for the trust tests: a fake po that sits in a class's po list (so the master
//! offers to it and it learns the transfer's token) and speaks the real protocol over blocking
//! sockets, and rogue peers that dial a real po with a claimed identity.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};
use wugui::proto::auth::Token;
use wugui::proto::bitmap::bitmap;
use wugui::proto::{wire, BlockHead, Msg, Payload, Sum, Verify};

/// Sends one frame; a peer that already hung up is not an error for a rogue.
pub fn send(s: &mut TcpStream, m: &Msg) -> bool {
    s.write_all(&m.to_frame()).is_ok()
}

/// The next frame, or `None` on EOF, an error or after `limit`.
pub fn recv_within(s: &mut TcpStream, limit: Duration) -> Option<Msg> {
    s.set_read_timeout(Some(limit)).unwrap();
    let mut head = [0u8; wire::HEADER_LEN];
    s.read_exact(&mut head).ok()?;
    let h = wire::parse_header(&head).ok()??;
    let mut body = vec![0u8; h.len as usize];
    s.read_exact(&mut body).ok()?;
    Msg::decode(h.ty, Payload::from_vec(body)).ok()
}

/// Frames until one for which `want` returns `Some`, for at most `limit` in all.
pub fn recv_until<T>(s: &mut TcpStream, limit: Duration, mut want: impl FnMut(Msg) -> Option<T>) -> Option<T> {
    let end = Instant::now() + limit;
    loop {
        let left = end.checked_duration_since(Instant::now()).filter(|d| !d.is_zero())?;
        if let Some(t) = want(recv_within(s, left)?) {
            return Some(t);
        }
    }
}

/// A po of the class that is not a wugui-po: its address goes in the class's `po_file`.
pub struct FakePo {
    pub listener: TcpListener,
    pub addr: SocketAddr,
}

/// The fake po's control connection once the master's OFFER is in.
pub struct Offered {
    pub master: TcpStream,
    pub token: Vec<u8>,
    pub transfer: u64,
}

impl FakePo {
    pub fn bind() -> FakePo {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        FakePo { listener, addr }
    }

    /// Waits (30 s at most) for the master's control connection and its OFFER. Later
    /// connections (the master's data link, real pos dialling their neighbour) are accepted
    /// and drained on a thread, so that nobody blocks on us.
    pub fn offered(self) -> Offered {
        self.listener.set_nonblocking(true).unwrap();
        let end = Instant::now() + Duration::from_secs(30);
        let mut master = loop {
            match self.listener.accept() {
                Ok((s, _)) => break s,
                Err(_) if Instant::now() < end => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => panic!("the master never dialled the fake po: {e}"),
            }
        };
        master.set_nonblocking(false).unwrap();
        let listener = self.listener;
        std::thread::spawn(move || {
            let _ = listener.set_nonblocking(false);
            for s in listener.incoming().map_while(Result::ok) {
                std::thread::spawn(move || {
                    let mut s = s;
                    let _ = s.set_read_timeout(Some(Duration::from_secs(120)));
                    let mut sink = [0u8; 1 << 16];
                    while matches!(s.read(&mut sink), Ok(n) if n > 0) {}
                });
            }
        });
        let Some(Msg::Offer { token, .. }) = recv_within(&mut master, Duration::from_secs(30)) else {
            panic!("the fake po got no OFFER")
        };
        let transfer = Token::decode(&token).unwrap().transfer;
        Offered { master, token, transfer }
    }
}

impl Offered {
    /// ACCEPT, claiming every one of `blocks` blocks (so nobody sends us any, nor asks us to serve).
    pub fn accept_all(&mut self, blocks: u64) {
        let have = bitmap(&vec![true; blocks as usize]);
        assert!(send(&mut self.master, &Msg::Accept { transfer: self.transfer, have }));
    }

    /// READY, then DONE once the master COMMITs (30 s at most): the master sees an honest po.
    pub fn ready_then_done(&mut self) {
        let transfer = self.transfer;
        assert!(send(&mut self.master, &Msg::Ready { transfer }));
        let commit = recv_until(&mut self.master, Duration::from_secs(30), |m| match m {
            Msg::Commit { transfer: t } if t == transfer => Some(()),
            _ => None,
        });
        assert!(commit.is_some(), "the master never committed the fake po");
        let done =
            Msg::Done { transfer, files: 0, bytes: 0, hook_exit: None, hook_tail: String::new(), unchanged: false };
        assert!(send(&mut self.master, &done));
    }
}

/// Forged data for every block of `sizes`, each with a head checksum of kind `kind` that
/// matches the forged bytes (what a rogue writes when the receiver takes the head's word).
pub fn forged_blocks(transfer: u64, sizes: &[usize], kind: Verify) -> Vec<Msg> {
    sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| {
            let data = vec![0xEE; n];
            let head = BlockHead { transfer, index: i as u64, sum: Sum::of(kind, &data) };
            Msg::Block { head, data: Payload::from_vec(data) }
        })
        .collect()
}

/// Dials `po` and says PEER_HELLO { token, me, proof }. If the po says nothing for 1 s (it
/// took the hello), sends `then`. Returns what the po answered: a DENIED, or `None` (it closed,
/// or said nothing).
pub fn rogue_peer(po: &str, token: &[u8], me: u32, proof: [u8; 32], then: &[Msg]) -> Option<Msg> {
    let mut s = TcpStream::connect(po).unwrap();
    send(&mut s, &Msg::PeerHello { token: token.to_vec(), me, proof });
    if let Some(answer) = recv_within(&mut s, Duration::from_secs(1)) {
        return Some(answer);
    }
    for m in then {
        if !send(&mut s, m) {
            break;
        }
    }
    recv_within(&mut s, Duration::from_secs(5))
}
