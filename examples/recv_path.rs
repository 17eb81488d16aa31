//! Issue 18 item 3, measured outside the daemon: what a block payload costs the receiver in CPU
//! on its way from a TCP socket to a file, with and without a CRC-32 of the block.
//!
//! A sender thread pushes MIB MiB over 127.0.0.1 in frames of BLOCK bytes, as wugui's master
//! does: a 16-byte header (length, CRC-32, offset; sent with `MSG_MORE`) and the payload by
//! `sendfile(2)` from a file in BENCH_TMP. The main thread receives with one of:
//!
//! - `read`: `read(2)` the payload into a reused buffer, `pwrite(2)` it at the block's offset,
//!   CRC-32 of the buffer (the po today, minus the worker pool);
//! - `splice-pread`: `splice(2)` socket → pipe (1 MiB) → file at the offset, then `pread(2)`
//!   the block back from the page cache into a reused buffer for the CRC-32;
//! - `splice-chunk`: the same splice in pieces of at most 256 KiB, each read back by `pread(2)`
//!   and hashed right after it lands, while it is still in the CPU's cache;
//! - `splice-map`: the same splice, then the CRC-32 over the block through
//!   `wugui::sys::map::read_ranges` (an mmap per block above 64 KiB, as the master hashes);
//! - `read-nocrc`, `splice-nocrc`: the same copies without the checksum, to separate copy cost
//!   from hash cost.
//!
//! Every method writes a fresh file of the full size (as a po stages a transfer) and the
//! checksummed ones check each block's CRC against the header. CPU is `getrusage(RUSAGE_THREAD)`
//! user + system, taken in the receiving thread (accept to last block) and in the sender (connect
//! to shutdown) separately. Runs interleave the methods (the order rotates each run) and block
//! sizes, since on a shared VM a run can cost several times another at random.
//!
//! Usage: `recv_path [--mib N] [--runs R] [--blocks 2M,256K,64K] [--methods a,b,..]`.
//! The files go to `$BENCH_TMP` (default `/dev/shm`) and are removed at the end.
//! Prints one line per run to stderr, and to stdout two lines per (method, block):
//! `stat=best` (each figure's best over the runs) and `stat=median`, each with
//! `method=.. block=.. runs=.. mib_s=.. recv_cpu_s_per_gib=.. send_cpu_s_per_gib=..`.

use std::fs::File;
use std::io::{self, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::thread;
use std::time::{Duration, Instant};

use nix::fcntl::{splice, FcntlArg, SpliceFFlags};
use nix::sys::resource::{getrusage, UsageWho};
use nix::sys::socket::MsgFlags;

const HEADER: usize = 16;
const PIPE: usize = 1 << 20;
const MAX_MIB: u64 = 16 << 10;
const MAX_BLOCK: usize = 64 << 20;
const MAX_RUNS: usize = 50;
/// Most bytes `splice-chunk` moves before it hashes them (small enough to stay in the L2 cache).
const CHUNK: usize = 256 << 10;
const METHODS: [&str; 6] = ["read", "splice-pread", "splice-chunk", "splice-map", "read-nocrc", "splice-nocrc"];

#[derive(Clone, Copy, PartialEq)]
enum Move {
    Read,
    Splice,
}

#[derive(Clone, Copy, PartialEq)]
enum Crc {
    None,
    Buffer,
    Pread,
    Chunk,
    Map,
}

fn method(name: &str) -> Option<(Move, Crc)> {
    Some(match name {
        "read" => (Move::Read, Crc::Buffer),
        "read-nocrc" => (Move::Read, Crc::None),
        "splice-pread" => (Move::Splice, Crc::Pread),
        "splice-chunk" => (Move::Splice, Crc::Chunk),
        "splice-map" => (Move::Splice, Crc::Map),
        "splice-nocrc" => (Move::Splice, Crc::None),
        _ => return None,
    })
}

/// This thread's CPU time so far (user + system), in seconds.
fn thread_cpu() -> io::Result<f64> {
    let u = getrusage(UsageWho::RUSAGE_THREAD).map_err(io::Error::from)?;
    let s = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 * 1e-6;
    Ok(s(u.user_time()) + s(u.system_time()))
}

/// The blocks of a `total`-byte file in `block`-byte frames: (offset, len).
fn blocks(total: u64, block: usize) -> impl Iterator<Item = (u64, usize)> {
    (0..total.div_ceil(block as u64)).map(move |i| {
        let off = i * block as u64;
        (off, (total - off).min(block as u64) as usize)
    })
}

/// The source: `total` bytes of xorshift noise.
fn make_source(path: &Path, total: u64) -> io::Result<()> {
    let file = File::create(path)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut off = 0u64;
    while off < total {
        for w in buf.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            w.copy_from_slice(&x.to_le_bytes());
        }
        let n = (total - off).min(buf.len() as u64) as usize;
        file.write_all_at(&buf[..n], off)?;
        off += n as u64;
    }
    Ok(())
}

/// The sender: header with `MSG_MORE`, payload by sendfile, as the master sends a block.
/// Returns its CPU seconds from connect to shutdown.
fn send(addr: SocketAddr, src: &Path, block: usize, crcs: &[u32]) -> io::Result<f64> {
    let file = File::open(src)?;
    let total = file.metadata()?.len();
    let cpu0 = thread_cpu()?;
    let sock = TcpStream::connect(addr)?;
    sock.set_nodelay(true)?;
    sock.set_write_timeout(Some(Duration::from_secs(30)))?;
    for ((off, len), crc) in blocks(total, block).zip(crcs) {
        let mut hdr = [0u8; HEADER];
        hdr[..4].copy_from_slice(&(len as u32).to_le_bytes());
        hdr[4..8].copy_from_slice(&crc.to_le_bytes());
        hdr[8..].copy_from_slice(&off.to_le_bytes());
        let mut done = 0;
        while done < HEADER {
            let flags = MsgFlags::from_bits_retain(nix::libc::MSG_MORE);
            match nix::sys::socket::send(sock.as_raw_fd(), &hdr[done..], flags) {
                Ok(n) => done += n,
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let mut pos = off as i64;
        let end = (off + len as u64) as i64;
        while pos < end {
            let want = (end - pos) as usize;
            match nix::sys::sendfile::sendfile64(&sock, &file, Some(&mut pos), want) {
                Ok(0) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "source shrank")),
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    sock.shutdown(std::net::Shutdown::Write)?;
    // Wait for the receiver to close, so the sender's CPU includes all of its sending.
    let mut b = [0u8; 1];
    let _ = (&sock).read(&mut b);
    Ok(thread_cpu()? - cpu0)
}

fn bad_crc(off: u64) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("CRC mismatch in the block at {off}"))
}

/// Moves `len` bytes from `sock` to `file` at `off` through the pipe (`pr`, `pw`). With `hash`,
/// reads each piece back from the page cache into `buf` (at most `CHUNK` bytes at a time, while it
/// is still in the CPU's cache) and adds it to the hasher.
fn splice_block(
    sock: &TcpStream,
    (pr, pw): (&OwnedFd, &OwnedFd),
    file: &File,
    off: u64,
    len: usize,
    mut hash: Option<(&mut crc32fast::Hasher, &mut [u8])>,
) -> io::Result<()> {
    let mut left = len;
    let mut pos = off as i64;
    let most = if hash.is_some() { CHUNK } else { PIPE };
    while left > 0 {
        let start = pos as u64;
        let n = match splice(
            sock,
            None,
            pw,
            None,
            left.min(most),
            SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_MORE,
        ) {
            Ok(0) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "sender closed mid-block")),
            Ok(n) => n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        };
        let mut in_pipe = n;
        while in_pipe > 0 {
            match splice(pr, None, file, Some(&mut pos), in_pipe, SpliceFFlags::SPLICE_F_MOVE) {
                Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "splice to the file wrote nothing")),
                Ok(m) => in_pipe -= m,
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        if let Some((h, buf)) = hash.as_mut() {
            file.read_exact_at(&mut buf[..n], start)?;
            h.update(&buf[..n]);
        }
        left -= n;
    }
    Ok(())
}

/// The receiver: one connection, every block to `dst`. Returns its CPU seconds from the accept
/// to the last block, and the bytes received.
fn receive(
    listener: &TcpListener,
    dst: &Path,
    total: u64,
    block: usize,
    copy: Move,
    crc: Crc,
) -> io::Result<(f64, u64)> {
    let file = File::options().read(true).write(true).create(true).truncate(true).open(dst)?;
    file.set_len(total)?;
    // Reused and already touched, as a po's pooled buffer is.
    let mut buf = vec![1u8; block];
    let (pr, pw) = nix::unistd::pipe()?;
    if copy == Move::Splice {
        nix::fcntl::fcntl(pw.as_raw_fd(), FcntlArg::F_SETPIPE_SZ(PIPE as i32))?;
    }
    let cpu0 = thread_cpu()?;
    let (mut sock, _) = listener.accept()?;
    sock.set_nodelay(true)?;
    sock.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut got = 0u64;
    loop {
        let mut hdr = [0u8; HEADER];
        match sock.read(&mut hdr[..1]) {
            Ok(0) => break,
            Ok(_) => sock.read_exact(&mut hdr[1..])?,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        let len = u32::from_le_bytes(hdr[..4].try_into().unwrap()) as usize;
        let want = u32::from_le_bytes(hdr[4..8].try_into().unwrap());
        let off = u64::from_le_bytes(hdr[8..].try_into().unwrap());
        if len > buf.len() || off + len as u64 > total {
            return Err(io::Error::new(io::ErrorKind::InvalidData, format!("bad frame: {len} bytes at {off}")));
        }
        let mut chunked = None;
        match copy {
            Move::Read => {
                sock.read_exact(&mut buf[..len])?;
                file.write_all_at(&buf[..len], off)?;
            }
            Move::Splice if crc == Crc::Chunk => {
                let mut h = crc32fast::Hasher::new();
                splice_block(&sock, (&pr, &pw), &file, off, len, Some((&mut h, &mut buf)))?;
                chunked = Some(h.finalize());
            }
            Move::Splice => splice_block(&sock, (&pr, &pw), &file, off, len, None)?,
        }
        let sum = match crc {
            Crc::Chunk => chunked,
            Crc::None => None,
            Crc::Buffer => Some(crc32fast::hash(&buf[..len])),
            Crc::Pread => {
                file.read_exact_at(&mut buf[..len], off)?;
                Some(crc32fast::hash(&buf[..len]))
            }
            Crc::Map => {
                let mut h = crc32fast::Hasher::new();
                wugui::sys::map::read_ranges(&[(file.as_fd(), off, len as u64)], |b| h.update(b))?;
                Some(h.finalize())
            }
        };
        if sum.is_some_and(|s| s != want) {
            return Err(bad_crc(off));
        }
        got += len as u64;
    }
    let cpu = thread_cpu()? - cpu0;
    Ok((cpu, got))
}

/// Checks every block of `dst` against `crcs` (outside the measured window).
fn check_copy(dst: &Path, block: usize, crcs: &[u32]) -> io::Result<()> {
    let file = File::open(dst)?;
    let total = file.metadata()?.len();
    let mut buf = vec![0u8; block];
    for ((off, len), want) in blocks(total, block).zip(crcs) {
        file.read_exact_at(&mut buf[..len], off)?;
        if crc32fast::hash(&buf[..len]) != *want {
            return Err(bad_crc(off));
        }
    }
    Ok(())
}

struct Sample {
    mib_s: f64,
    recv: f64,
    send: f64,
}

struct Cleanup(Vec<PathBuf>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn parse_size(s: &str) -> Option<usize> {
    let (num, mul) = match s.as_bytes().last()? {
        b'K' | b'k' => (&s[..s.len() - 1], 1 << 10),
        b'M' | b'm' => (&s[..s.len() - 1], 1 << 20),
        _ => (s, 1),
    };
    num.parse::<usize>().ok()?.checked_mul(mul).filter(|b| (4096..=MAX_BLOCK).contains(b))
}

struct Opts {
    mib: u64,
    runs: usize,
    blocks: Vec<usize>,
    methods: Vec<String>,
}

fn parse_args() -> Result<Opts, String> {
    let mut o = Opts {
        mib: 1024,
        runs: 5,
        blocks: vec![2 << 20, 256 << 10, 64 << 10],
        methods: METHODS.iter().map(|s| s.to_string()).collect(),
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let v = it.next().ok_or_else(|| format!("{a} needs a value"))?;
        match a.as_str() {
            "--mib" => o.mib = v.parse().ok().filter(|&m| m > 0 && m <= MAX_MIB).ok_or("bad --mib")?,
            "--runs" => o.runs = v.parse().ok().filter(|&r| r > 0 && r <= MAX_RUNS).ok_or("bad --runs")?,
            "--blocks" => o.blocks = v.split(',').map(parse_size).collect::<Option<_>>().ok_or("bad --blocks")?,
            "--methods" => {
                o.methods = v.split(',').map(str::to_string).collect();
                if let Some(m) = o.methods.iter().find(|m| method(m).is_none()) {
                    return Err(format!("unknown method {m} (known: {})", METHODS.join(",")));
                }
            }
            _ => return Err(format!("unknown option {a}")),
        }
    }
    Ok(o)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn run(o: &Opts) -> io::Result<()> {
    let tmp = PathBuf::from(std::env::var_os("BENCH_TMP").unwrap_or_else(|| "/dev/shm".into()));
    let pid = std::process::id();
    let src = tmp.join(format!("recv_path-{pid}.src"));
    let dst = tmp.join(format!("recv_path-{pid}.dst"));
    let _cleanup = Cleanup(vec![src.clone(), dst.clone()]);
    let total = o.mib << 20;
    make_source(&src, total)?;
    // The master computes digests ahead of sending: the CRCs are known before the clock starts.
    let mut crcs_by_block = Vec::new();
    {
        let file = File::open(&src)?;
        for &b in &o.blocks {
            let mut buf = vec![0u8; b];
            let mut v = Vec::new();
            for (off, len) in blocks(total, b) {
                file.read_exact_at(&mut buf[..len], off)?;
                v.push(crc32fast::hash(&buf[..len]));
            }
            crcs_by_block.push(v);
        }
    }
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let gib = total as f64 / (1u64 << 30) as f64;
    let mut samples: Vec<Vec<Vec<Sample>>> =
        o.blocks.iter().map(|_| o.methods.iter().map(|_| Vec::new()).collect()).collect();
    for r in 0..o.runs {
        for (bi, &block) in o.blocks.iter().enumerate() {
            for k in 0..o.methods.len() {
                let mi = (k + r) % o.methods.len();
                let name = &o.methods[mi];
                let (copy, crc) = method(name).expect("checked in parse_args");
                let crcs = crcs_by_block[bi].clone();
                let src2 = src.clone();
                let start = Instant::now();
                let sender = thread::spawn(move || send(addr, &src2, block, &crcs));
                let received = receive(&listener, &dst, total, block, copy, crc);
                let secs = start.elapsed().as_secs_f64();
                let sent = sender.join().map_err(|_| io::Error::other("sender panicked"))?;
                let (recv_cpu, got) = received?;
                let send_cpu = sent?;
                if got != total {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, format!("received {got} of {total}")));
                }
                if r == 0 {
                    check_copy(&dst, block, &crcs_by_block[bi])?;
                }
                std::fs::remove_file(&dst)?;
                let s = Sample { mib_s: o.mib as f64 / secs, recv: recv_cpu / gib, send: send_cpu / gib };
                eprintln!(
                    "run={r} method={name} block={block} mib_s={:.0} recv_cpu_s_per_gib={:.3} send_cpu_s_per_gib={:.3}",
                    s.mib_s, s.recv, s.send
                );
                samples[bi][mi].push(s);
            }
        }
    }
    for (bi, &block) in o.blocks.iter().enumerate() {
        for (mi, name) in o.methods.iter().enumerate() {
            let v = &samples[bi][mi];
            let col = |f: fn(&Sample) -> f64| v.iter().map(f).collect::<Vec<f64>>();
            let (rate, recv, send) = (col(|s| s.mib_s), col(|s| s.recv), col(|s| s.send));
            let best = |v: &[f64], hi: bool| {
                v.iter().copied().fold(if hi { 0.0 } else { f64::MAX }, if hi { f64::max } else { f64::min })
            };
            println!(
                "stat=best method={name} block={block} runs={} mib_s={:.0} recv_cpu_s_per_gib={:.3} send_cpu_s_per_gib={:.3}",
                v.len(),
                best(&rate, true),
                best(&recv, false),
                best(&send, false)
            );
            println!(
                "stat=median method={name} block={block} runs={} mib_s={:.0} recv_cpu_s_per_gib={:.3} send_cpu_s_per_gib={:.3}",
                v.len(),
                median(rate),
                median(recv),
                median(send)
            );
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let o = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!(
                "recv_path: {e}\nusage: recv_path [--mib N] [--runs R] [--blocks 2M,256K,64K] [--methods {}]",
                METHODS.join(",")
            );
            return ExitCode::from(2);
        }
    };
    match run(&o) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("recv_path: {e}");
            ExitCode::FAILURE
        }
    }
}
