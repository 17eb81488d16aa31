//! What each binary does: argument parsing, config loading, then the reactor. The files in
//! `src/bin/` only call `main` here.

pub mod cac;
pub mod check;
mod glob;
pub mod master;
pub mod names;
pub mod outcome;
pub mod po;
pub mod stat;

use std::net::TcpListener;
use std::process::ExitCode;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Parses `args` with `o` plus `-h` and `-v`. `Err` is the exit code to use: 0 after the help
/// (`brief`, the options, then `tail`) or the version, 1 after a usage error.
pub fn parse_args(
    mut o: getopts::Options,
    tool: &str,
    brief: &str,
    tail: &str,
    args: &[String],
) -> Result<getopts::Matches, ExitCode> {
    o.optflag("h", "help", "this help");
    o.optflag("v", "version", "print the version");
    let m = o.parse(args).map_err(|e| usage_error(tool, &e.to_string()))?;
    if m.opt_present("h") {
        print!("{}{tail}", o.usage(brief));
        return Err(ExitCode::SUCCESS);
    }
    if m.opt_present("v") {
        println!("{tool} {VERSION}");
        return Err(ExitCode::SUCCESS);
    }
    Ok(m)
}

/// One line naming the tool and the mistake; exit code 1.
pub fn usage_error(tool: &str, e: &str) -> ExitCode {
    eprintln!("{tool}: {e} (try -h)");
    ExitCode::from(outcome::exit::USAGE)
}

/// `-f FILE`, `-t`, `-h`, `-v` for the daemons; returns the config path, or the exit code to
/// use (after `-t` too: `check` then says whether the config is good).
pub fn daemon_args(
    role: &str,
    about: &str,
    check: fn(&std::path::Path) -> Result<Vec<String>, String>,
) -> Result<std::path::PathBuf, ExitCode> {
    let mut o = getopts::Options::new();
    let default = format!("config file (default: $WUGUI_CONF, then /etc/wugui/{role}.conf)");
    o.optopt("f", "", &default, "FILE");
    o.optflag("t", "", "check the config (and the files it names), print ok or the errors, and exit");
    let brief = format!(
        "Usage: wugui-{role} [-f FILE] [-t]\n\n{about}\nStays in the foreground. SIGHUP reloads the config (a bad one is refused and the old one\nstays), SIGUSR1 reopens the log file, SIGTERM stops."
    );
    let args: Vec<String> = std::env::args().skip(1).collect();
    let tool = format!("wugui-{role}");
    let m = parse_args(o, &tool, &brief, "", &args)?;
    if !m.free.is_empty() {
        return Err(usage_error(&tool, &format!("unexpected argument {:?}", m.free[0])));
    }
    let path = crate::config::config_path(role, m.opt_str("f").as_deref());
    if m.opt_present("t") {
        return Err(check::report(&tool, check(&path)));
    }
    Ok(path)
}

/// Raises the soft limit on open files to the hard one; returns the limit in force.
pub fn raise_fd_limit() -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() => hard,
        Ok((soft, _)) => soft,
        Err(_) => 1024,
    }
}

/// Reactor options for a daemon: the soft fd limit is raised to the hard one, and accepted
/// connections are capped below it, leaving room for files, peers and the CACs.
pub fn daemon_options(role: &str) -> crate::reactor::Options {
    let limit = raise_fd_limit();
    let max_conns = (limit.saturating_sub(256) as usize).clamp(64, 100_000);
    log::info!("event=limits role={role} nofile={limit} max_conns={max_conns}");
    crate::reactor::Options { max_conns, ..Default::default() }
}

/// What a daemon's `reload` is asked to do.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Reload {
    /// SIGHUP: read the config file again.
    Config,
    /// SIGUSR2: take the addresses that names of the config have moved to (`names::Names`).
    Names,
}

/// The tail of every daemon's main: the metrics endpoint if configured, then the event loop.
/// SIGHUP calls `reload(m, Reload::Config)` (Ok: a detail for the log line; Err: the config's
/// file:line error, and the old config stays), SIGUSR2 `reload(m, Reload::Names)` (names that
/// moved; `None`: nothing to do), SIGUSR1 reopens the log, SIGTERM and SIGINT stop.
pub fn run_daemon<M: crate::proto::Machine>(
    role: &'static str,
    machine: &mut M,
    listener: TcpListener,
    metrics: Option<std::net::SocketAddr>,
    workers: usize,
    mut reload: impl FnMut(&mut M, Reload) -> Result<Option<String>, String>,
) -> ExitCode {
    use crate::reactor::{self, Control};
    use nix::sys::signal::Signal;
    let opts = crate::reactor::Options { workers, ..daemon_options(role) };
    let metrics = match metrics.map(|addr| listen_metrics(role, addr)) {
        None => None,
        Some(Ok(l)) => Some((l, role)),
        Some(Err(code)) => return code,
    };
    let mut on_signal = |m: &mut M, sig: Signal| match sig {
        Signal::SIGHUP => {
            match reload(m, Reload::Config) {
                Ok(detail) => log::info!("event=config_reload role={role} {}", detail.unwrap_or_default()),
                Err(e) => log::error!("event=config_refused role={role} error={}", crate::proto::text::quoted(&e)),
            }
            Control::Continue
        }
        Signal::SIGUSR2 => {
            match reload(m, Reload::Names) {
                Ok(Some(detail)) => log::info!("event=names_refreshed role={role} {detail}"),
                Ok(None) => {}
                Err(e) => log::warn!("event=names_refused role={role} error={}", crate::proto::text::quoted(&e)),
            }
            Control::Continue
        }
        Signal::SIGUSR1 => {
            let _ = crate::logging::reopen();
            Control::Continue
        }
        _ => {
            log::info!("event=stop role={role} signal={sig}");
            Control::Stop
        }
    };
    let listeners = reactor::Listeners { peers: Some(listener), metrics };
    match reactor::run(machine, listeners, &opts, &signals(), &mut on_signal) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("event=fatal role={role} error={}", crate::proto::text::quoted(&e));
            eprintln!("wugui-{role}: {e}");
            ExitCode::from(1)
        }
    }
}

/// The system clock and the kernel's random source, for the machines.
pub fn real_env() -> crate::proto::Env {
    crate::proto::Env {
        unix_ms: Box::new(|| {
            let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
            d.map(|d| d.as_millis() as u64).unwrap_or(0)
        }),
        fill_random: Box::new(|b| getrandom::getrandom(b).expect("the kernel's random source is available")),
    }
}

/// Seconds since the epoch by the system clock (0 if it is set before 1970).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Binds the metrics port (the reactor serves it) and announces it.
fn listen_metrics(role: &str, addr: std::net::SocketAddr) -> Result<TcpListener, ExitCode> {
    match TcpListener::bind(addr).and_then(|l| Ok((l.local_addr()?, l))) {
        Ok((bound, l)) => {
            announce(&format!("metrics={bound}"));
            log::info!("event=metrics_listen role={role} addr={bound}");
            Ok(l)
        }
        Err(e) => {
            eprintln!("wugui-{role}: cannot serve metrics on {addr}: {e}");
            Err(ExitCode::from(1))
        }
    }
}

/// A line on stdout for whoever started the daemon. A daemon must not die because its stdout
/// was closed (println! panics on EPIPE), so errors are ignored.
pub fn announce(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|_| out.flush());
}

/// Binds the daemon's port and announces it on stdout (tests bind port 0 and read it back).
pub fn listen(role: &str, addr: std::net::SocketAddr) -> Result<TcpListener, ExitCode> {
    match TcpListener::bind(addr) {
        Ok(l) => {
            let local = l.local_addr().unwrap_or(addr);
            announce(&format!("listening={local}"));
            log::info!("event=listen role={role} addr={local} version={VERSION}");
            Ok(l)
        }
        Err(e) => {
            eprintln!("wugui-{role}: cannot listen on {addr}: {e}");
            log::error!("event=listen_failed role={role} addr={addr} error={}", crate::proto::text::quoted(&e));
            Err(ExitCode::from(1))
        }
    }
}

pub fn init_log(role: &str, path: Option<&std::path::Path>) -> Result<(), ExitCode> {
    crate::logging::init_from_env_or(path, log::LevelFilter::Info).map_err(|e| {
        let p = path.map(|p| p.display().to_string()).unwrap_or_default();
        eprintln!("wugui-{role}: cannot open log {p}: {e}");
        ExitCode::from(1)
    })
}

/// 1.5G, 12.0M, 512K, 100B.
pub fn human(n: u64) -> String {
    const U: [&str; 5] = ["B", "K", "M", "G", "T"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < U.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n}B")
    } else {
        format!("{v:.1}{}", U[u])
    }
}

/// The time `left` bytes take at `rate` bytes/s: `45s`, `3m20s`, `2h05m`; `-` when nothing is
/// left or nothing moves.
pub fn eta(left: u64, rate: u64) -> String {
    let Some(s) = left.checked_div(rate).filter(|_| left > 0) else { return "-".into() };
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s / 60 % 60),
    }
}

/// Blocks the daemon signals in this thread before anything else happens: the reactor reads
/// them from a signalfd, and a signal that came before it (right after `listening=`), or that the
/// kernel gave to a thread that did not block it, would otherwise take its default action and
/// kill the daemon. Threads spawned later inherit the mask.
pub fn block_signals() {
    let mut set = nix::sys::signal::SigSet::empty();
    for s in signals() {
        set.add(s);
    }
    if let Err(e) = set.thread_block() {
        eprintln!("wugui: cannot block signals: {e}");
    }
}

pub fn signals() -> [nix::sys::signal::Signal; 5] {
    use nix::sys::signal::Signal::*;
    [SIGHUP, SIGUSR1, SIGUSR2, SIGTERM, SIGINT]
}
