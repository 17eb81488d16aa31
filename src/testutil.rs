//! Helpers for the tests: a seeded generator and a scratch directory.
//!
//! The unit tests reach this file as `crate::testutil`; the integration tests include the same
//! file from `tests/common` (`#[path]`), so it uses `std` only.
#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// xorshift64: the same seed gives the same numbers on every run and every machine.
pub struct Rng(u64);

impl Rng {
    /// Seeds are spread by a golden-ratio multiply, so that 1, 2, 3 start far apart.
    pub fn new(seed: u64) -> Rng {
        Rng::from_state(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    /// Starts at `state` as given, for sequences that tests fixed before this helper existed.
    pub fn from_state(state: u64) -> Rng {
        assert_ne!(state, 0, "xorshift never leaves 0");
        Rng(state)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number below `n` (n > 0); the modulo bias does not matter to a test.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Fills `buf` with the low byte of one step per byte.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            *b = self.next_u64() as u8;
        }
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut v = vec![0; len];
        self.fill(&mut v);
        v
    }
}

/// `len` bytes that differ from block to block and from seed to seed.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    Rng::new(seed).bytes(len)
}

/// A fresh directory, removed with everything in it (read-only directories too) on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// Below the system temp dir.
    pub fn new(tag: &str) -> TempDir {
        TempDir::new_in(&std::env::temp_dir(), tag)
    }

    /// Below `base`; the name carries the tag, the process and a counter, so tests running in
    /// parallel never share one.
    pub fn new_in(base: &Path, tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let p = base.join(format!("wugui-test-{tag}-{}-{n}", std::process::id()));
        let _ = remove_tree(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.0.join(rel)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = remove_tree(&self.0);
    }
}

/// `remove_dir_all`, first making every directory writable: tests leave read-only ones behind.
fn remove_tree(p: &Path) -> std::io::Result<()> {
    fn open_up(dir: &Path) {
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                open_up(&e.path());
            }
        }
    }
    if std::fs::symlink_metadata(p).is_err() {
        return Ok(());
    }
    std::fs::remove_dir_all(p).or_else(|_| {
        open_up(p);
        std::fs::remove_dir_all(p)
    })
}
