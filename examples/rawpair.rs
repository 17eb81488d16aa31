//! The baseline for `scripts/bench-core.sh`: the fastest plain copy of one file over loopback
//! that the data path of wugui could hope to match. A sender `sendfile(2)`s FILE into a TCP
//! connection on 127.0.0.1; a receiver thread reads it into a 1 MiB buffer and writes it to
//! OUTDIR/copy (as a po writes blocks to its staging file). No framing, no checksums.
//!
//! Usage: `rawpair FILE OUTDIR [--fsync]`. Prints `rawpair bytes=N seconds=S rate=BYTES_PER_S`,
//! where the time runs from the connect to the receiver's last write. With `--fsync` the
//! receiver also `fdatasync`s the copy before the clock stops (as a po does when it seals a
//! transfer), for a baseline that pays for the disk too.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::thread;
use std::time::Instant;

const BUF: usize = 1 << 20;
const CHUNK: usize = 1 << 30;

fn receive(listener: TcpListener, out: PathBuf, sync: bool) -> io::Result<u64> {
    let (mut sock, _) = listener.accept()?;
    let mut file = File::create(out)?;
    let mut buf = vec![0u8; BUF];
    let mut total = 0u64;
    loop {
        let n = match sock.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        file.write_all(&buf[..n])?;
        total += n as u64;
    }
    if sync {
        file.sync_data()?;
    }
    Ok(total)
}

fn send(addr: std::net::SocketAddr, path: &Path) -> io::Result<u64> {
    let file = File::open(path)?;
    let len = file.metadata()?.len();
    let sock = TcpStream::connect(addr)?;
    let mut off: i64 = 0;
    while (off as u64) < len {
        let want = usize::try_from(len - off as u64).unwrap_or(CHUNK).min(CHUNK);
        match nix::sys::sendfile::sendfile64(&sock, &file, Some(&mut off), want) {
            Ok(0) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "file shrank")),
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(io::Error::from(e)),
        }
    }
    sock.shutdown(std::net::Shutdown::Write)?;
    Ok(len)
}

fn run(file: &Path, outdir: &Path, sync: bool) -> io::Result<(u64, f64)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let out = outdir.join("copy");
    let start = Instant::now();
    let receiver = thread::spawn(move || receive(listener, out, sync));
    let sent = send(addr, file)?;
    let got = receiver.join().map_err(|_| io::Error::other("receiver panicked"))??;
    let secs = start.elapsed().as_secs_f64();
    if got != sent {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, format!("sent {sent} bytes, received {got}")));
    }
    Ok((got, secs))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let sync = args.len() == 4 && args[3] == "--fsync";
    if args.len() != 3 && !sync {
        eprintln!("usage: rawpair FILE OUTDIR [--fsync]");
        return ExitCode::from(2);
    }
    match run(Path::new(&args[1]), Path::new(&args[2]), sync) {
        Ok((bytes, secs)) => {
            let rate = bytes as f64 / secs.max(1e-9);
            println!("rawpair bytes={bytes} seconds={secs:.3} rate={rate:.0}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("rawpair: {e}");
            ExitCode::FAILURE
        }
    }
}
