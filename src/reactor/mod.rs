//! The reactor: one mio `Poll` loop per process, driving one [`Machine`].
//!
//! It owns every socket, the signal fd, the token buckets and the timers; the machine owns the
//! protocol. One loop turn is:
//!
//! 1. `poll`, with the timeout of the nearest deadline (the machine's, the buckets', closing
//!    connections', a paused accept), rounded up to a whole millisecond, or zero when some
//!    connection still has readiness it did not use up (its budget ran out);
//! 2. readiness events: accept, connect completions, signals; the readiness flags they carry
//!    are recorded and the connection is put in the work list; `/metrics` scrapes are served
//!    at once (`scrape.rs`);
//! 3. reactor timers that are due (compared with `now`, never inferred from an empty event
//!    list): refilled buckets put their waiting connections back in the work list; hooks that
//!    ended and checks the workers finished (`checks.rs`; the workers' waker ends the poll)
//!    become events;
//! 4. the work list: each connection reads (frames go to the machine at once) and writes, each
//!    within a per-wakeup budget;
//! 5. `Machine::handle_timeout` when `now` has reached `Machine::poll_timeout`;
//! 6. `Machine::end_turn`: what the machine batched over the turn (a po's HAVEs).
//!
//! After every machine call, its actions are drained and applied. Readiness we *have*
//! (`Conn::readable`/`writable`) is set by events and cleared only on `WouldBlock`; readiness
//! we *want* is derived (something queued, a bucket with tokens), and every socket is
//! registered once, edge-triggered, for both. When a bucket runs dry the connection simply
//! stops and waits for the bucket's timer; as the socket never stopped being ready, no event
//! would wake it, so the timer puts it back in the work list.

mod actions;
#[cfg(test)]
mod backpressure_tests;
mod bucket;
mod checks;
#[cfg(test)]
mod checks_tests;
mod conn;
mod disk_jobs;
mod hooks;
mod lane;
mod pool;
mod ready;
mod scrape;
mod service;
#[cfg(test)]
mod tests;

pub use bucket::TokenBucket;

use std::collections::{HashMap, HashSet, VecDeque};
use std::io;

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use crate::proto::{Close, ConnId, Event, Machine, Msg, ACCEPTED};
use conn::{Conn, State, STAGING};
use lane::{Dir, Lane};

const LISTENER: Token = Token(0);
const SIGNALS: Token = Token(1);
// Token 2 is the metrics listener (`scrape::LISTENER`).
/// The worker pool's waker: a check is done.
const WAKER: Token = Token(scrape::FIRST - 1);
/// Tokens of connections are `FIRST_CONN + slot`.
const FIRST_CONN: usize = 3;

/// A closing connection whose queue makes no progress for this long is dropped.
const CLOSE_STALL: Duration = Duration::from_secs(10);
/// How long a closed connection waits for the peer's EOF after our FIN.
const DRAIN_LINGER: Duration = Duration::from_secs(1);
/// How long a finished machine's last frames get to go out.
const FINISH_FLUSH: Duration = Duration::from_secs(5);
/// How long accepting pauses when the process is out of file descriptors.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);
/// How long a short-queue link with output waits for a writable edge before it tries anyway.
const SHORT_NUDGE: Duration = Duration::from_millis(50);
/// A connection stops being read while its out-queue holds this much memory, so a peer that
/// pipelines requests and never reads the answers costs at most this (plus one answer). Above
/// the master's 32 MiB window of in-memory blocks per po, so a transfer never pauses on it.
pub const OUT_PAUSE: usize = 48 << 20;

#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Informational: the machines do their own timeouts.
    pub idle_timeout: Option<Duration>,
    /// Accepted connections beyond this many open ones are closed at once (0 = no limit).
    pub max_conns: usize,
    /// Worker threads for block checks (`Action::Verify`); 0: none, checks run on the loop.
    pub workers: usize,
}

/// The sockets a process listens on.
#[derive(Debug, Default)]
pub struct Listeners {
    /// Where masters, pos and peers connect (a master has none).
    pub peers: Option<std::net::TcpListener>,
    /// `GET /metrics`, answered from `Machine::stats` with this `role` label.
    pub metrics: Option<(std::net::TcpListener, &'static str)>,
}

/// What a signal handler tells the loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Continue,
    /// Flush what is queued (for at most a few seconds) and return.
    Stop,
}

/// Runs `machine` until `machine.is_finished()` or `on_signal` returns `Control::Stop`; then
/// writes out what is queued (bounded by a few seconds) and returns.
///
/// `signals` are blocked in the calling thread and read through a signalfd, so call this from
/// the main thread before spawning threads. They stay blocked after `run` returns.
pub fn run<M: Machine>(
    machine: &mut M,
    listeners: Listeners,
    opts: &Options,
    signals: &[Signal],
    on_signal: &mut dyn FnMut(&mut M, Signal) -> Control,
) -> io::Result<()> {
    let poll = Poll::new()?;
    let metrics = match listeners.metrics {
        Some((l, role)) => Some(scrape::Metrics::new(l, role, poll.registry())?),
        None => None,
    };
    let listener = match listeners.peers {
        Some(l) => {
            l.set_nonblocking(true)?;
            let mut l = TcpListener::from_std(l);
            poll.registry().register(&mut l, LISTENER, Interest::READABLE)?;
            Some(l)
        }
        None => None,
    };
    let sigfd = if signals.is_empty() {
        None
    } else {
        let mut set = SigSet::empty();
        for s in signals {
            set.add(*s);
        }
        set.thread_block()?;
        let fd = SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)?;
        // mio's `SourceFd` needs its `os-ext` feature, which this crate does not enable. Any mio
        // source whose fd is a duplicate of the signalfd registers it just as well: epoll only
        // looks at the file. The wrapper is never used for I/O; signals are read from `fd`.
        let dup = fd.as_fd().try_clone_to_owned()?;
        let mut src = mio::net::UnixStream::from_std(std::os::unix::net::UnixStream::from(dup));
        poll.registry().register(&mut src, SIGNALS, Interest::READABLE)?;
        Some((fd, src))
    };
    let checks = match opts.workers {
        0 => None,
        n => {
            let waker = std::sync::Arc::new(mio::Waker::new(poll.registry(), WAKER)?);
            let lanes = [n, disk_jobs::DISK_JOBS];
            let pool = crate::work::Workers::with_lanes(&lanes, checks::CHECK_JOBS, move || drop(waker.wake()))?;
            log::info!("event=workers threads={}", pool.threads());
            Some(pool)
        }
    };
    log::debug!("event=reactor_start listen={} idle_timeout={:?}", listener.is_some(), opts.idle_timeout);
    let mut r = Reactor {
        poll,
        listener,
        sigfd,
        max_conns: opts.max_conns,
        slots: Vec::new(),
        free: Vec::new(),
        ids: HashMap::new(),
        accepted: 0,
        next_accepted: 0,
        events: VecDeque::new(),
        work: Vec::new(),
        closing: HashSet::new(),
        short: HashMap::new(),
        stage: vec![0u8; STAGING],
        pool: pool::BufferPool::new(),
        frames: Vec::new(),
        lanes: Default::default(),
        rate_limit_waits: 0,
        metrics,
        accept_resume: None,
        emfile_logged: None,
        finishing: None,
        hooks: Vec::new(),
        checks,
        checks_out: HashMap::new(),
        next_check: 0,
        check_bytes: 0,
        read_waiting: Vec::new(),
        disk_out: HashMap::new(),
        disk_waiting: VecDeque::new(),
    };
    r.run(machine, on_signal)
}

struct Reactor {
    poll: Poll,
    listener: Option<TcpListener>,
    /// The signalfd, and the mio source that registers it (see `run`).
    sigfd: Option<(SignalFd, mio::net::UnixStream)>,
    max_conns: usize,
    /// Connections by slot (token `FIRST_CONN + slot`); `free` lists empty slots.
    slots: Vec<Option<Conn>>,
    free: Vec<usize>,
    ids: HashMap<ConnId, usize>,
    /// Accepted connections open now, and the counter that names the next one.
    accepted: usize,
    next_accepted: u64,
    /// Events waiting for the machine, in order.
    events: VecDeque<Event>,
    /// Slots to service in the next turn (each at most once: `Conn::queued`).
    work: Vec<usize>,
    /// Slots whose connections are closing (they have a deadline).
    closing: HashSet<usize>,
    /// Slots of short-queue links (`Action::ShortQueue`), and when each was last tried while
    /// it had output and no write room (`nudge_short`).
    short: HashMap<usize, Option<Instant>>,
    /// The staging buffer every connection reads small frames into.
    stage: Vec<u8>,
    /// Buffers for frames too big for `stage`, back from the machine once it drops them.
    pool: std::sync::Arc<pool::BufferPool>,
    frames: Vec<Msg>,
    /// The upload and download limits, by `Dir::i`.
    lanes: [Lane; 2],
    /// Times a connection was parked on a bucket, for `/metrics`.
    rate_limit_waits: u64,
    metrics: Option<scrape::Metrics>,
    accept_resume: Option<Instant>,
    emfile_logged: Option<Instant>,
    /// Set once the machine is finished (or a signal said stop): the deadline for flushing.
    finishing: Option<Instant>,
    /// Running hooks, checked every `hooks::POLL`.
    hooks: Vec<hooks::Hook>,
    /// The worker pool for block checks (`checks.rs`), when there is one.
    checks: Option<crate::work::Workers<Event>>,
    /// Checks on the pool, by key: the transfer and the machine's id (to report a check that
    /// never finished), and the bytes it holds.
    checks_out: HashMap<u64, (u64, u64, usize)>,
    next_check: u64,
    check_bytes: usize,
    /// Connections not read while the checks were at their bound.
    read_waiting: Vec<usize>,
    /// Disk jobs on the pool, by key: the transfer and the store's job id (`disk_jobs.rs`).
    disk_out: HashMap<u64, (u64, u64)>,
    /// Disk jobs waiting for a worker.
    disk_waiting: VecDeque<crate::proto::DiskJob>,
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

/// The time until `deadline`, rounded up to a whole millisecond so that poll never wakes
/// just before it and spins.
fn timeout_until(now: Instant, deadline: Instant) -> Duration {
    let d = deadline.saturating_duration_since(now);
    Duration::from_millis(d.as_nanos().div_ceil(1_000_000).min(u64::MAX as u128) as u64)
}

fn is_fd_limit(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(c) if c == nix::libc::EMFILE || c == nix::libc::ENFILE)
}

impl Reactor {
    fn run<M: Machine>(&mut self, m: &mut M, on_signal: &mut dyn FnMut(&mut M, Signal) -> Control) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        let mut stop = false;
        // The machine may have work before any I/O (a master's connects).
        self.drain_actions(m);
        self.deliver(m);
        loop {
            if self.finishing.is_none() && (stop || m.is_finished()) {
                self.begin_finish(Instant::now());
            }
            if let Some(until) = self.finishing {
                if self.slots.iter().all(Option::is_none) {
                    return Ok(());
                }
                if Instant::now() >= until {
                    let left = self.slots.iter().flatten().count();
                    log::warn!("event=reactor_exit conns_left={left} error=\"queued frames not flushed in time\"");
                    return Ok(());
                }
            }

            // 1. Poll until the nearest deadline.
            let now = Instant::now();
            let mut timeout = if !self.work.is_empty() {
                Some(Duration::ZERO)
            } else {
                self.next_deadline(m).map(|d| timeout_until(now, d))
            };
            // The workers wake the poll only when it may block (a wake is a system call each).
            let pool = self.checks.as_mut().filter(|_| timeout != Some(Duration::ZERO));
            if pool.is_some_and(|p| !p.will_sleep()) {
                timeout = Some(Duration::ZERO);
            }
            let polled = self.poll.poll(&mut events, timeout);
            if let Some(p) = &self.checks {
                p.awake();
            }
            if let Err(e) = polled {
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
                events.clear();
            }

            // 2. Readiness.
            if self.readiness(m, &events, on_signal) == Control::Stop {
                stop = true;
            }

            // 3. Reactor timers.
            let now = Instant::now();
            self.fire_timers(now);
            self.nudge_short(now);
            self.poll_hooks(now);
            self.collect_checks();
            self.deliver(m);

            // 4. Connections with work.
            for slot in std::mem::take(&mut self.work) {
                self.service(m, slot);
            }

            // 5. The machine's timer.
            if self.finishing.is_none() {
                if let Some(d) = m.poll_timeout() {
                    let now = Instant::now();
                    if now >= d {
                        m.handle_timeout(now);
                        self.drain_actions(m);
                        self.deliver(m);
                    }
                }
            }

            // 6. What the machine batched over this turn's events.
            m.end_turn();
            self.drain_actions(m);
        }
    }

    /// Step 2 of a turn: what `poll` reported. `Stop` if a signal handler said so.
    fn readiness<M: Machine>(
        &mut self,
        m: &mut M,
        events: &Events,
        on_signal: &mut dyn FnMut(&mut M, Signal) -> Control,
    ) -> Control {
        let (mut accept, mut sigs, mut metrics_accept) = (false, false, false);
        let mut scrapes = Vec::new();
        for ev in events.iter() {
            match ev.token() {
                LISTENER => accept = true,
                SIGNALS => sigs = true,
                WAKER => {} // verdicts are collected every turn
                scrape::LISTENER => metrics_accept = true,
                Token(t) if t >= scrape::FIRST => scrapes.push(t - scrape::FIRST),
                Token(t) => self.on_ready(t - FIRST_CONN, ev),
            }
        }
        if accept {
            self.accept_all(Instant::now());
        }
        if metrics_accept || !scrapes.is_empty() {
            self.serve_metrics(m, metrics_accept, &scrapes);
        }
        self.deliver(m);
        let mut control = Control::Continue;
        if sigs {
            for sig in self.read_signals() {
                log::debug!("event=signal signal={sig}");
                if on_signal(m, sig) == Control::Stop {
                    control = Control::Stop;
                }
                self.drain_actions(m);
                self.deliver(m);
            }
        }
        control
    }

    /// Accepts scrapes (`accept`) and serves the ones in `ready`.
    fn serve_metrics<M: Machine>(&mut self, m: &M, accept: bool, ready: &[usize]) {
        let Some(x) = &mut self.metrics else { return };
        let waits = self.rate_limit_waits;
        let sample = || crate::metrics::Sample { machine: m.stats(), rate_limit_waits: waits, sites: m.site_bytes() };
        let (registry, now) = (self.poll.registry(), Instant::now());
        if accept {
            x.accept(registry, now, &sample);
        }
        for &i in ready {
            x.ready(registry, i, now, &sample);
        }
    }

    fn poll_hooks(&mut self, now: Instant) {
        let mut i = 0;
        while i < self.hooks.len() {
            if let Some((exit, tail)) = self.hooks[i].poll(now) {
                let h = self.hooks.swap_remove(i);
                self.events.push_back(Event::HookDone { id: h.id, exit, tail });
            } else {
                i += 1;
            }
        }
    }

    fn next_deadline<M: Machine>(&self, m: &M) -> Option<Instant> {
        let mut d = if self.finishing.is_none() { m.poll_timeout() } else { self.finishing };
        for lane in &self.lanes {
            d = earliest(d, lane.wake);
        }
        d = earliest(d, self.accept_resume);
        d = earliest(d, self.metrics.as_ref().and_then(scrape::Metrics::deadline));
        if !self.hooks.is_empty() {
            d = earliest(d, Some(Instant::now() + hooks::POLL));
        }
        for &slot in &self.closing {
            if let Some(c) = &self.slots[slot] {
                d = earliest(d, c.deadline());
            }
        }
        for (&slot, since) in &self.short {
            if self.slots[slot].as_ref().is_some_and(|c| !c.writable && !c.out.is_empty()) {
                d = earliest(d, Some(since.unwrap_or_else(Instant::now) + SHORT_NUDGE));
            }
        }
        d
    }

    /// A short-queue link that has output but no write room tries again every `SHORT_NUDGE`:
    /// with `TCP_NOTSENT_LOWAT` the lab showed a link's last blocks waiting for a writable
    /// edge that never came (6 s, until the master's stall limit), and a try that finds no
    /// room costs one syscall.
    fn nudge_short(&mut self, now: Instant) {
        let mut due = Vec::new();
        for (&slot, since) in self.short.iter_mut() {
            let Some(c) = self.slots.get(slot).and_then(Option::as_ref) else { continue };
            if c.writable || c.out.is_empty() {
                *since = None;
            } else if since.is_none_or(|t| now >= t + SHORT_NUDGE) {
                if since.is_some() {
                    due.push(slot);
                }
                *since = Some(now);
            }
        }
        for slot in due {
            if let Some(c) = self.conn(slot) {
                c.writable = true;
            }
            self.mark(slot);
        }
    }

    fn conn(&mut self, slot: usize) -> Option<&mut Conn> {
        self.slots.get_mut(slot).and_then(Option::as_mut)
    }

    fn mark(&mut self, slot: usize) {
        if let Some(c) = self.conn(slot) {
            if !c.queued {
                c.queued = true;
                self.work.push(slot);
            }
        }
    }

    fn insert(&mut self, mut c: Conn) -> io::Result<usize> {
        let slot = self.free.pop().unwrap_or_else(|| {
            self.slots.push(None);
            self.slots.len() - 1
        });
        if let Err(e) = self.poll.registry().register(
            &mut c.stream,
            Token(FIRST_CONN + slot),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            self.free.push(slot);
            return Err(e);
        }
        self.ids.insert(c.id, slot);
        if c.id & ACCEPTED != 0 {
            self.accepted += 1;
        }
        if c.deadline().is_some() {
            self.closing.insert(slot);
        }
        self.slots[slot] = Some(c);
        Ok(slot)
    }

    /// Drops a connection (closing its socket). No event is queued here.
    fn remove(&mut self, slot: usize) -> Option<Conn> {
        let mut c = self.slots.get_mut(slot)?.take()?;
        let _ = self.poll.registry().deregister(&mut c.stream);
        self.ids.remove(&c.id);
        self.closing.remove(&slot);
        self.short.remove(&slot);
        self.free.push(slot);
        if c.id & ACCEPTED != 0 {
            self.accepted -= 1;
        }
        log::debug!("event=conn_drop conn={} peer={}", c.id, c.peer_str());
        Some(c)
    }

    /// Drops a connection the peer or the network ended, and tells the machine (unless it
    /// closed the connection itself, in which case nothing more is said).
    fn fail(&mut self, slot: usize, reason: Close) {
        let Some(c) = self.remove(slot) else { return };
        let told = matches!(c.state, State::Open | State::Connecting { close_since: None });
        if reason != Close::Eof {
            let e = reason.to_string();
            log::debug!(
                "event=conn_error conn={} peer={} error={}",
                c.id,
                c.peer_str(),
                crate::proto::text::quoted(e.escape_debug().to_string())
            );
        }
        if told && self.finishing.is_none() {
            self.events.push_back(Event::Closed { conn: c.id, reason });
        }
    }

    fn set_state(&mut self, slot: usize, state: State) {
        let Some(c) = self.conn(slot) else { return };
        log::debug!("event=conn_state conn={} state={:?}=>{:?}", c.id, c.state, state);
        c.state = state;
        let closing = c.deadline().is_some();
        if closing {
            self.closing.insert(slot);
        } else {
            self.closing.remove(&slot);
        }
    }

    fn fire_timers(&mut self, now: Instant) {
        for dir in Dir::BOTH {
            for slot in self.lanes[dir.i()].due(now) {
                if let Some(c) = self.conn(slot) {
                    c.parked[dir.i()] = false;
                }
                self.mark(slot);
            }
        }
        if let Some(x) = &mut self.metrics {
            x.expire(self.poll.registry(), now);
        }
        if self.accept_resume.is_some_and(|t| now >= t) {
            self.accept_resume = None;
            self.accept_all(now);
        }
        let due: Vec<usize> = self
            .closing
            .iter()
            .copied()
            .filter(|&s| self.slots[s].as_ref().and_then(Conn::deadline).is_some_and(|d| now >= d))
            .collect();
        for slot in due {
            let Some(c) = self.conn(slot) else { continue };
            if !matches!(c.state, State::Draining { .. }) {
                log::warn!(
                    "event=conn_error conn={} peer={} error=\"closing: queue stalled for {}s, dropped\"",
                    c.id,
                    c.peer_str(),
                    CLOSE_STALL.as_secs()
                );
            }
            self.remove(slot);
        }
    }

    /// The `dir` bucket ran dry for `slot`: park it until the bucket's timer.
    fn wait(&mut self, dir: Dir, slot: usize, now: Instant) {
        let lane = &mut self.lanes[dir.i()];
        lane.arm(now);
        if let Some(c) = self.slots.get_mut(slot).and_then(Option::as_mut) {
            if !c.parked[dir.i()] {
                c.parked[dir.i()] = true;
                lane.park(slot);
                self.rate_limit_waits += 1;
            }
        }
    }

    fn drain_actions<M: Machine>(&mut self, m: &mut M) {
        while let Some(a) = m.poll_action() {
            self.apply(a);
        }
    }

    /// Hands queued events to the machine, applying its actions after each.
    fn deliver<M: Machine>(&mut self, m: &mut M) {
        while let Some(ev) = self.events.pop_front() {
            if self.finishing.is_none() && m.is_finished() {
                self.begin_finish(Instant::now());
            }
            if self.finishing.is_some() {
                self.events.clear();
                return;
            }
            m.handle_event(Instant::now(), ev);
            self.drain_actions(m);
        }
    }
}
