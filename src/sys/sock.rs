//! Socket options std and nix do not cover.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// `TCP_NOTSENT_LOWAT`: the socket takes more only while fewer than `bytes` of what was written
/// are still unsent, so a sender's queue stays short (what was sent but not yet acknowledged
/// is not counted, so the link stays full).
pub fn set_notsent_lowat(sock: BorrowedFd, bytes: u32) -> io::Result<()> {
    let v = bytes as nix::libc::c_int;
    // SAFETY: `sock` is a live descriptor for the duration of the call, and the option value
    // points to a c_int on our stack whose size is passed with it.
    let r = unsafe {
        nix::libc::setsockopt(
            sock.as_raw_fd(),
            nix::libc::IPPROTO_TCP,
            nix::libc::TCP_NOTSENT_LOWAT,
            (&v as *const nix::libc::c_int).cast(),
            std::mem::size_of::<nix::libc::c_int>() as nix::libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
