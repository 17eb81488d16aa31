//! The worker pool: a few threads for CPU work (a po checking blocks against their digests,
//! a master computing checksums ahead of sending), so that hashing runs beside the event loop
//! instead of on it. Threads here never touch a connection; they take a job, run it, and send
//! its result back to the loop, which a wake callback (the reactor's `mio::Waker`) tells to
//! look, or which waits for it (`wait`). It names nothing else of the crate.
//!
//! Lanes: a pool may have several, each with threads of its own that take only its jobs, so
//! that long jobs in one (a po's disk work) never hold up short ones in another (block
//! checks), and the threads of each lane cap what it uses.
//!
//! Wake-ups cost more than a small job (a 64 KiB block's check): a submit wakes one idle thread
//! of its lane, none when all are busy, and a result wakes the owner only when it said it is
//! about to sleep (`will_sleep`; until it calls `awake` again).
//!
//! Bounds: at most `capacity` jobs are submitted and not yet collected; `submit` hands a job
//! back rather than queue more (the reactor then runs it itself, and stops reading before it
//! gets there). A job that panics is caught: its thread lives on and its result is the panic
//! message, so the loop hears of it and the daemon does not die silently. Dropping the pool
//! drops the jobs not started and waits for the running ones.

use std::collections::VecDeque;
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

/// A unit of work: runs once, on some worker.
pub type Job<R> = Box<dyn FnOnce() -> R + Send>;

/// What became of a job: its result, or the message of its panic.
pub type Outcome<R> = (u64, Result<R, String>);

struct Queue<R> {
    /// By lane.
    jobs: Vec<VecDeque<(u64, Job<R>)>>,
    /// By lane: threads waiting for a job.
    idle: Vec<usize>,
    closed: bool,
}

struct Shared<R> {
    queue: Mutex<Queue<R>>,
    /// By lane, so that a submit wakes a thread that can take the job.
    ready: Vec<Condvar>,
    /// The owner may be waiting for a result: a worker that sends one calls `wake`.
    asleep: AtomicBool,
}

pub struct Workers<R> {
    shared: Arc<Shared<R>>,
    results: Receiver<Outcome<R>>,
    threads: Vec<JoinHandle<()>>,
    capacity: usize,
    /// Submitted and not yet collected.
    pending: usize,
    /// Results taken off the channel by `will_sleep`, not collected yet.
    early: VecDeque<Outcome<R>>,
}

/// The pool size when the config says nothing: one worker a core, at most 4.
pub fn default_size() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get()).min(4)
}

impl<R: Send + 'static> Workers<R> {
    /// `n` threads (at least one), holding at most `capacity` jobs; `wake` is called after
    /// each result is sent.
    pub fn new(n: usize, capacity: usize, wake: impl Fn() + Send + Sync + 'static) -> io::Result<Workers<R>> {
        Workers::with_lanes(&[n.max(1)], capacity, wake)
    }

    /// `lanes[i]` threads for lane `i` (`submit_to`), holding at most `capacity` jobs over all
    /// lanes.
    pub fn with_lanes(
        lanes: &[usize],
        capacity: usize,
        wake: impl Fn() + Send + Sync + 'static,
    ) -> io::Result<Workers<R>> {
        let queue =
            Queue { jobs: lanes.iter().map(|_| VecDeque::new()).collect(), idle: vec![0; lanes.len()], closed: false };
        let ready = lanes.iter().map(|_| Condvar::new()).collect();
        let shared = Arc::new(Shared { queue: Mutex::new(queue), ready, asleep: AtomicBool::new(true) });
        let (tx, results) = channel();
        let wake = Arc::new(wake);
        let early = VecDeque::new();
        let mut pool = Workers { shared, results, threads: Vec::new(), capacity: capacity.max(1), pending: 0, early };
        for (lane, &n) in lanes.iter().enumerate() {
            for i in 0..n {
                let (shared, tx, wake) = (pool.shared.clone(), tx.clone(), wake.clone());
                let name = if lane == 0 { format!("wugui-worker-{i}") } else { format!("wugui-worker-{lane}.{i}") };
                let t = std::thread::Builder::new().name(name).spawn(move || work(&shared, lane, &tx, &*wake))?;
                pool.threads.push(t);
            }
        }
        Ok(pool)
    }

    pub fn threads(&self) -> usize {
        self.threads.len()
    }

    /// Jobs submitted whose outcome has not been collected.
    pub fn pending(&self) -> usize {
        self.pending
    }

    /// Whether `submit` would take a job now.
    pub fn has_room(&self) -> bool {
        self.pending < self.capacity
    }

    /// Queues `job` under `key` in lane 0, or hands it back when `capacity` jobs are pending.
    pub fn submit(&mut self, key: u64, job: Job<R>) -> Result<(), Job<R>> {
        self.submit_to(0, key, job)
    }

    /// Queues `job` under `key` in `lane`, or hands it back when `capacity` jobs are pending.
    pub fn submit_to(&mut self, lane: usize, key: u64, job: Job<R>) -> Result<(), Job<R>> {
        if self.pending >= self.capacity {
            return Err(job);
        }
        self.pending += 1;
        let mut q = lock(&self.shared.queue);
        q.jobs[lane].push_back((key, job));
        if q.idle[lane] > 0 {
            self.shared.ready[lane].notify_one();
        }
        Ok(())
    }

    /// One finished job's outcome, if any is there (never blocks).
    pub fn collect(&mut self) -> Option<Outcome<R>> {
        let done = self.early.pop_front().or_else(|| self.results.try_recv().ok())?;
        self.pending -= 1;
        Some(done)
    }

    /// The owner is about to wait for something (a poll) and wants `wake` when a result comes.
    /// False when a result is already there: collect it instead of sleeping.
    pub fn will_sleep(&mut self) -> bool {
        self.shared.asleep.store(true, Ordering::SeqCst);
        // Pairs with the worker's fence between sending and reading `asleep`: either it sees
        // the flag and wakes us, or we see its result here.
        fence(Ordering::SeqCst);
        match self.results.try_recv() {
            Ok(done) => {
                self.early.push_back(done);
                self.awake();
                false
            }
            Err(_) => true,
        }
    }

    /// The owner is running and will collect results before it next sleeps: no wakes needed.
    pub fn awake(&self) {
        self.shared.asleep.store(false, Ordering::SeqCst);
    }

    /// The next job to finish, waiting for it; `None` when no job is pending.
    pub fn wait(&mut self) -> Option<Outcome<R>> {
        if self.pending == 0 {
            return None;
        }
        let done = match self.early.pop_front() {
            Some(d) => d,
            None => self.results.recv().ok()?,
        };
        self.pending -= 1;
        Some(done)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A job panics outside the lock, so a poisoned lock still holds a whole queue.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One worker of `lane`: its jobs until the pool closes.
fn work<R>(shared: &Shared<R>, lane: usize, tx: &Sender<Outcome<R>>, wake: &(dyn Fn() + Send + Sync)) {
    loop {
        let (key, job) = {
            let mut q = lock(&shared.queue);
            loop {
                if q.closed {
                    return;
                }
                if let Some(j) = q.jobs[lane].pop_front() {
                    break j;
                }
                q.idle[lane] += 1;
                q = shared.ready[lane].wait(q).unwrap_or_else(|e| e.into_inner());
                q.idle[lane] -= 1;
            }
        };
        let outcome = catch_unwind(AssertUnwindSafe(job)).map_err(|p| {
            p.downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a job panicked".into())
        });
        if tx.send((key, outcome)).is_err() {
            return; // the pool is gone
        }
        fence(Ordering::SeqCst);
        if shared.asleep.swap(false, Ordering::SeqCst) {
            wake();
        }
    }
}

impl<R> Drop for Workers<R> {
    fn drop(&mut self) {
        {
            let mut q = lock(&self.shared.queue);
            q.closed = true;
            q.jobs.iter_mut().for_each(VecDeque::clear);
        }
        self.shared.ready.iter().for_each(Condvar::notify_all);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    /// Collects `n` outcomes, waiting at most a few seconds.
    fn collect_n<R: Send + 'static>(w: &mut Workers<R>, n: usize) -> Vec<Outcome<R>> {
        let until = Instant::now() + Duration::from_secs(10);
        let mut out = Vec::new();
        while out.len() < n {
            assert!(Instant::now() < until, "only {} of {n} outcomes came", out.len());
            match w.collect() {
                Some(o) => out.push(o),
                None => std::thread::sleep(Duration::from_millis(1)),
            }
        }
        out
    }

    #[test]
    fn runs_jobs_in_parallel_and_wakes_for_each() {
        let woken = Arc::new(AtomicUsize::new(0));
        let w2 = woken.clone();
        let mut w = Workers::new(2, 8, move || {
            w2.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
        assert_eq!(w.threads(), 2);
        // Two jobs that each wait for the other: they finish only if both run at once.
        let gate = Arc::new(std::sync::Barrier::new(2));
        for k in 0..2 {
            let g = gate.clone();
            w.submit(
                k,
                Box::new(move || {
                    g.wait();
                    k + 10
                }),
            )
            .ok()
            .unwrap();
        }
        let mut out: Vec<(u64, u64)> = collect_n(&mut w, 2).into_iter().map(|(k, r)| (k, r.unwrap())).collect();
        out.sort();
        assert_eq!(out, [(0, 10), (1, 11)]);
        assert_eq!(w.pending(), 0);
        assert!(woken.load(Ordering::SeqCst) >= 1, "an owner that never said it is awake is woken");
    }

    #[test]
    fn results_wake_the_owner_only_when_it_is_about_to_sleep() {
        let woken = Arc::new(AtomicUsize::new(0));
        let w2 = woken.clone();
        let mut w: Workers<u64> = Workers::new(1, 8, move || {
            w2.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
        w.awake();
        w.submit(1, Box::new(|| 1)).ok().unwrap();
        assert_eq!(w.wait(), Some((1, Ok(1))));
        assert_eq!(woken.load(Ordering::SeqCst), 0, "an awake owner collects without a wake");

        // Waits (bounded) until the owner was woken more than `before` times.
        let woken_past = |before: usize| {
            let until = Instant::now() + Duration::from_secs(10);
            while woken.load(Ordering::SeqCst) == before {
                assert!(Instant::now() < until, "a sleeping owner was not woken");
                std::thread::sleep(Duration::from_millis(1));
            }
        };
        assert!(w.will_sleep(), "nothing there: sleep");
        w.submit(2, Box::new(|| 2)).ok().unwrap();
        woken_past(0);
        assert_eq!(w.collect(), Some((2, Ok(2))));

        // A result that came while the owner was awake: it does not sleep past it, and needs
        // no wake. (On a loaded machine the result may not be there after the pause: then the
        // owner sleeps and must be woken; try again, a bounded number of times.)
        let mut found = false;
        for k in 3..23u64 {
            w.awake();
            let before = woken.load(Ordering::SeqCst);
            w.submit(k, Box::new(move || k)).ok().unwrap();
            std::thread::sleep(Duration::from_millis(50));
            if !w.will_sleep() {
                assert_eq!(w.collect(), Some((k, Ok(k))));
                assert_eq!(woken.load(Ordering::SeqCst), before, "a result found before sleeping needs no wake");
                found = true;
                break;
            }
            woken_past(before);
            assert_eq!(w.collect(), Some((k, Ok(k))));
        }
        assert!(found, "no result was ever there before the owner slept");
    }

    #[test]
    fn a_lane_busy_with_long_jobs_holds_up_no_other() {
        let mut w: Workers<u64> = Workers::with_lanes(&[1, 1], 8, || {}).unwrap();
        assert_eq!(w.threads(), 2);
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        // Lane 1's only thread waits for a word that comes after lane 0's jobs are done.
        w.submit_to(1, 1, Box::new(move || rx.recv().map_or(0, |()| 1))).ok().unwrap();
        w.submit_to(1, 2, Box::new(|| 2)).ok().unwrap();
        for k in 10..13 {
            w.submit(k, Box::new(move || k)).ok().unwrap();
        }
        let mut first: Vec<u64> = collect_n(&mut w, 3).into_iter().map(|(k, _)| k).collect();
        first.sort();
        assert_eq!(first, [10, 11, 12], "lane 0 ran while lane 1 was held");
        tx.send(()).unwrap();
        let rest: Vec<(u64, u64)> = collect_n(&mut w, 2).into_iter().map(|(k, r)| (k, r.unwrap())).collect();
        assert_eq!(rest, [(1, 1), (2, 2)], "in order, on lane 1's thread");
    }

    #[test]
    fn the_queue_is_bounded() {
        let mut w: Workers<u64> = Workers::new(1, 3, || {}).unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let rx = Arc::new(Mutex::new(rx));
        for k in 0..3 {
            let rx = rx.clone();
            w.submit(
                k,
                Box::new(move || {
                    let _ = rx.lock().unwrap().recv();
                    k
                }),
            )
            .ok()
            .unwrap();
        }
        // Full: the job comes back, and runs where the caller likes.
        let back = w.submit(9, Box::new(|| 9)).expect_err("a fourth job is refused");
        assert_eq!(back(), 9);
        assert_eq!(w.pending(), 3);
        for _ in 0..3 {
            tx.send(()).unwrap();
        }
        let mut keys: Vec<u64> = collect_n(&mut w, 3).into_iter().map(|(k, r)| k + r.unwrap()).collect();
        keys.sort();
        assert_eq!(keys, [0, 2, 4]);
        assert!(w.submit(4, Box::new(|| 4)).is_ok(), "room again once outcomes are collected");
    }

    #[test]
    fn a_panicking_job_is_reported_and_the_worker_lives_on() {
        let mut w: Workers<u32> = Workers::new(1, 4, || {}).unwrap();
        w.submit(1, Box::new(|| panic!("bad block {}", 7))).ok().unwrap();
        w.submit(2, Box::new(|| 5)).ok().unwrap();
        assert_eq!(w.wait(), Some((1, Err("bad block 7".to_string()))));
        assert_eq!(w.wait(), Some((2, Ok(5))), "the same (only) worker ran the next job");
        assert_eq!(w.wait(), None, "nothing pending: no wait");
    }

    #[test]
    fn dropping_the_pool_drops_queued_jobs_and_joins() {
        let ran = Arc::new(AtomicUsize::new(0));
        let mut w: Workers<()> = Workers::new(1, 16, || {}).unwrap();
        let (started_tx, started) = std::sync::mpsc::channel();
        let r = ran.clone();
        w.submit(
            0,
            Box::new(move || {
                started_tx.send(()).unwrap();
                std::thread::sleep(Duration::from_millis(100));
                r.fetch_add(1, Ordering::SeqCst);
            }),
        )
        .ok()
        .unwrap();
        started.recv().unwrap();
        for k in 1..10 {
            let r = ran.clone();
            w.submit(
                k,
                Box::new(move || {
                    r.fetch_add(1, Ordering::SeqCst);
                }),
            )
            .ok()
            .unwrap();
        }
        let t = Instant::now();
        drop(w);
        assert_eq!(ran.load(Ordering::SeqCst), 1, "the running job finished, the queued ones never ran");
        assert!(t.elapsed() < Duration::from_secs(5));
    }
}
