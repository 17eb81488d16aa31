//! `GET /metrics`, served by the event loop like any other connection: read a bounded request,
//! write the reply, close. A client that sends nothing holds one slot until its deadline and
//! delays nobody else's scrape.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};

use crate::metrics::{self, Sample};

/// The request head is read up to this many bytes ...
const MAX_REQUEST: usize = 8 << 10;
/// ... within this long of the accept; a reply that stalls this long is dropped too.
const TIMEOUT: Duration = Duration::from_secs(2);
/// Scrapes served at once; more are closed at once.
const MAX_SCRAPES: usize = 64;

/// The listener's token, and the base of the scrapes' tokens (far above any connection's).
pub const LISTENER: Token = Token(2);
pub const FIRST: usize = usize::MAX / 2;

struct Scrape {
    stream: TcpStream,
    req: Vec<u8>,
    /// Once the request is in: the reply and how much of it is written.
    reply: Option<(Vec<u8>, usize)>,
    deadline: Instant,
}

enum Step {
    More,
    Done,
}

impl Scrape {
    fn advance(&mut self, now: Instant, sample: &dyn Fn() -> Sample, role: &str) -> io::Result<Step> {
        let mut buf = [0u8; 1024];
        while self.reply.is_none() {
            let room = (MAX_REQUEST - self.req.len()).min(buf.len());
            let n = match (&self.stream).read(&mut buf[..room]) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Step::More),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            self.req.extend_from_slice(&buf[..n]);
            if n == 0 || metrics::request_done(&self.req, MAX_REQUEST) {
                self.reply = Some((metrics::reply(&self.req, role, &sample()), 0));
                self.deadline = now + TIMEOUT;
            }
        }
        let (reply, pos) = self.reply.as_mut().expect("the request is in");
        while *pos < reply.len() {
            match (&self.stream).write(&reply[*pos..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    *pos += n;
                    self.deadline = now + TIMEOUT;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Step::More),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let _ = self.stream.shutdown(Shutdown::Write);
        Ok(Step::Done)
    }
}

/// The metrics listener and the scrapes in progress (slot `i` has token `FIRST + i`).
pub struct Metrics {
    listener: TcpListener,
    role: &'static str,
    scrapes: Vec<Option<Scrape>>,
}

impl Metrics {
    pub fn new(l: std::net::TcpListener, role: &'static str, registry: &Registry) -> io::Result<Metrics> {
        l.set_nonblocking(true)?;
        let mut listener = TcpListener::from_std(l);
        registry.register(&mut listener, LISTENER, Interest::READABLE)?;
        Ok(Metrics { listener, role, scrapes: Vec::new() })
    }

    /// Accepts every waiting client, and serves what each has sent already.
    pub fn accept(&mut self, registry: &Registry, now: Instant, sample: &dyn Fn() -> Sample) {
        loop {
            let mut stream = match self.listener.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    // Out of descriptors, say: the next client's connect wakes us again.
                    log::debug!("event=accept_error listener=metrics error={}", crate::proto::text::quoted(&e));
                    return;
                }
            };
            if self.scrapes.iter().flatten().count() >= MAX_SCRAPES {
                log::debug!("event=conn_refused listener=metrics open={MAX_SCRAPES}");
                continue;
            }
            let i = self.scrapes.iter().position(Option::is_none).unwrap_or_else(|| {
                self.scrapes.push(None);
                self.scrapes.len() - 1
            });
            if registry.register(&mut stream, Token(FIRST + i), Interest::READABLE | Interest::WRITABLE).is_ok() {
                self.scrapes[i] = Some(Scrape { stream, req: Vec::new(), reply: None, deadline: now + TIMEOUT });
                self.ready(registry, i, now, sample);
            }
        }
    }

    /// Scrape `i` may read or write.
    pub fn ready(&mut self, registry: &Registry, i: usize, now: Instant, sample: &dyn Fn() -> Sample) {
        let Some(s) = self.scrapes.get_mut(i).and_then(Option::as_mut) else { return };
        match s.advance(now, sample, self.role) {
            Ok(Step::More) => {}
            Ok(Step::Done) => self.drop_scrape(registry, i),
            Err(e) => {
                log::debug!("event=conn_error listener=metrics error={}", crate::proto::text::quoted(&e));
                self.drop_scrape(registry, i);
            }
        }
    }

    /// Drops the scrapes whose deadline has passed.
    pub fn expire(&mut self, registry: &Registry, now: Instant) {
        for i in 0..self.scrapes.len() {
            if self.scrapes[i].as_ref().is_some_and(|s| now >= s.deadline) {
                self.drop_scrape(registry, i);
            }
        }
    }

    pub fn deadline(&self) -> Option<Instant> {
        self.scrapes.iter().flatten().map(|s| s.deadline).min()
    }

    /// Stops listening and drops every scrape.
    pub fn close(mut self, registry: &Registry) {
        let _ = registry.deregister(&mut self.listener);
        for i in 0..self.scrapes.len() {
            self.drop_scrape(registry, i);
        }
    }

    fn drop_scrape(&mut self, registry: &Registry, i: usize) {
        if let Some(mut s) = self.scrapes[i].take() {
            let _ = registry.deregister(&mut s.stream);
        }
    }
}
