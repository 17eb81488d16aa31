//! The system calls the crate needs beyond std: descriptors opened below a directory
//! descriptor, positioned reads, mapped reads of file ranges, and `sendfile(2)`.
//!
//! This is the only module of the crate allowed `unsafe` (see `lib.rs`). Its signatures speak
//! of descriptors and bytes only, never of protocol types: the callers turn bytes into
//! checksums and bodies. A file that changes while it is mapped or sent is the caller's risk
//! to detect: every function here checks lengths where it can (a range beyond the end of the
//! file is an `UnexpectedEof` error, never a SIGBUS or a short frame), and the master compares
//! a file's size and mtime with the manifest after sending its blocks (`Source::unchanged`).

pub mod fd;
pub mod map;
pub mod sendfile;
pub mod sock;

use std::io;

/// The error for a file found shorter than a range the manifest promised.
fn source_changed(what: &str, offset: u64, len: u64, size: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!("source file changed: {what} of {len} bytes at {offset} but the file has {size}"),
    )
}

#[cfg(test)]
mod testfile {
    use crate::testutil::TempDir;
    use std::fs::File;
    use std::os::fd::OwnedFd;

    /// A file `name` holding `data`, open for reading and writing; it goes with the directory.
    pub fn temp_file(name: &str, data: &[u8]) -> (TempDir, OwnedFd) {
        let dir = TempDir::new("sys");
        std::fs::write(dir.join(name), data).unwrap();
        let f = File::options().read(true).write(true).open(dir.join(name)).unwrap();
        (dir, OwnedFd::from(f))
    }

    pub fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
    }
}
