//! Shared by the fuzz targets: an allocator that measures how much a decode call allocates.
//!
//! The decoders promise never to allocate more than the bytes they were given justify
//! (`codec::Reader::count` and the per-field limits). `measure` runs a closure and returns the
//! peak of live heap bytes above the level at its start; `check_alloc` panics (which libFuzzer
//! reports as a crash, with the input) when that peak exceeds a generous multiple of the input.

#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

pub struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(n: usize) {
    let now = LIVE.fetch_add(n, Relaxed) + n;
    PEAK.fetch_max(now, Relaxed);
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = System.alloc(l);
        if !p.is_null() {
            grew(l.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(l);
        if !p.is_null() {
            grew(l.size());
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        System.dealloc(p, l);
        LIVE.fetch_sub(l.size(), Relaxed);
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new_size: usize) -> *mut u8 {
        let q = System.realloc(p, l, new_size);
        if !q.is_null() {
            if new_size >= l.size() {
                grew(new_size - l.size());
            } else {
                LIVE.fetch_sub(l.size() - new_size, Relaxed);
            }
        }
        q
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Runs `f`; returns its result and the peak heap bytes it held above the starting level.
pub fn measure<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let base = LIVE.load(Relaxed);
    PEAK.store(base, Relaxed);
    let r = f();
    (r, PEAK.load(Relaxed).saturating_sub(base))
}

/// Per input byte, what a decoder may hold at its peak: every item of a counted list takes
/// at least 4 input bytes, and the biggest decoded item (three `String`s and a u64, 80 bytes)
/// is 20x that; error messages quote at most a few KiB. So 64x plus 64 KiB is generous, and
/// still catches any allocation sized by an untrusted length field.
pub const BYTES_PER_INPUT_BYTE: usize = 64;
pub const SLACK: usize = 64 << 10;

pub fn check_alloc(what: &str, input_len: usize, used: usize) {
    let limit = input_len.saturating_mul(BYTES_PER_INPUT_BYTE).saturating_add(SLACK);
    assert!(used <= limit, "{what} allocated {used} bytes at its peak for {input_len} input bytes (limit {limit})");
}

/// Off by default: checks that are known to fail (listed in scripts/fuzz.sh) and would stop the run.
pub fn strict() -> bool {
    static S: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *S.get_or_init(|| std::env::var_os("WUGUI_FUZZ_STRICT").is_some_and(|v| v == "1"))
}
