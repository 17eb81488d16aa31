//! Post-publish hooks: spawned without blocking the loop, their output read and the child
//! reaped on a short timer, killed at their timeout.

use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How much of a hook's output travels back to the master.
pub const TAIL: usize = 4096;
/// How often running hooks are checked.
pub const POLL: Duration = Duration::from_millis(50);

pub struct Hook {
    pub id: u64,
    child: Child,
    out: io::PipeReader,
    tail: Vec<u8>,
    deadline: Instant,
    timeout: Duration,
    killed: bool,
}

/// `dir/name`, if it is a regular file inside `dir` once every symlink is resolved.
pub fn resolve(dir: &Path, name: &str) -> Result<PathBuf, String> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(format!("hook name {name:?} is not a plain file name"));
    }
    let d = dir.canonicalize().map_err(|e| format!("hook_dir {}: {e}", dir.display()))?;
    let p = dir.join(name).canonicalize().map_err(|e| format!("hook {name}: {e}"))?;
    if !p.starts_with(&d) {
        return Err(format!("hook {name} resolves to {}, outside hook_dir {}", p.display(), d.display()));
    }
    if !p.is_file() {
        return Err(format!("hook {name} is not a regular file"));
    }
    Ok(p)
}

pub fn spawn(id: u64, program: &Path, env: &[(String, String)], timeout: Duration, now: Instant) -> io::Result<Hook> {
    let (out, w) = io::pipe()?;
    let mut c = Command::new(program);
    c.stdin(Stdio::null()).stdout(w.try_clone()?).stderr(w).envs(env.iter().map(|(k, v)| (k, v)));
    let child = c.spawn()?;
    // Our copies of the write end are gone with `c`, so EOF comes when the hook exits.
    drop(c);
    nix::fcntl::fcntl(out.as_raw_fd(), nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK))?;
    Ok(Hook { id, child, out, tail: Vec::new(), deadline: now + timeout, timeout, killed: false })
}

impl Hook {
    /// Reads what the hook wrote, and returns (exit code, output tail) once it has ended.
    /// A killed hook reports -1.
    pub fn poll(&mut self, now: Instant) -> Option<(i32, String)> {
        let mut buf = [0u8; 8192];
        loop {
            match self.out.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    self.tail.extend_from_slice(&buf[..n]);
                    if self.tail.len() > TAIL {
                        self.tail.drain(..self.tail.len() - TAIL);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        if now >= self.deadline && !self.killed {
            // A hook that outlives its timeout is killed, and says so in its tail.
            let _ = self.child.kill();
            self.killed = true;
            self.tail.extend_from_slice(format!("\n[killed after {}s]", self.timeout.as_secs()).as_bytes());
        }
        match self.child.try_wait() {
            Ok(Some(status)) => {
                let code = if self.killed { -1 } else { status.code().unwrap_or(-1) };
                Some((code, String::from_utf8_lossy(&self.tail).trim_end().to_owned()))
            }
            Ok(None) => None,
            Err(e) => Some((-1, format!("wait: {e}"))),
        }
    }
}
