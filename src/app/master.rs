//! `masterwugui`: one transfer, from a shell script.

use super::outcome::{self, exit};
use crate::config;
use crate::logging::{kv_quote, printable};
use crate::proto::master::TransferResult;
use crate::proto::master::{MasterMachine, MasterSettings, Planner, PoState};
use crate::proto::{Action, ClassCfg, Event, Machine, Msg, Source};
use crate::reactor::{self, Control};
use crate::tree;
use std::collections::VecDeque;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

const HELP_TAIL: &str = "\
Pushes the tree under DIR to every po of CLASS, as the class config on the CAC says.

Exclude patterns (-x, and the class's exclude lines) are regexes SEARCHED in each path
relative to DIR, with / separators, as grep does: `a.txt` also drops `data.txt`; write
'(^|/)a\\.txt$' for one exact name. A matching directory drops its whole subtree. Every
word after -x up to the next flag is a pattern: -x a.txt b.txt c.txt
--exclude-glob takes a shell glob instead, matched against the whole relative path: `*` and
`?` stay within a directory, `**/` is any number of directories, a glob without `/` matches
a name at any depth: --exclude-glob '*.tmp' --exclude-glob 'logs/**/*.gz'
Names are bytes, and so is what patterns match: `(?-u:\\xff)` is the byte 0xff of a name
that is not UTF-8 (such names show as \\xff in logs and messages).

A file or directory that cannot be read stops the push before anything is sent (exit 1).
--skip-unreadable leaves each one out instead, with a warning on stderr; if every po then
commits, the summary ends in skipped=K and the exit code is 8. With the class's mirror = on
it is refused, since the pos would delete their copies of what was skipped.

SIGINT or SIGTERM aborts the push: every po that has not published is told to abort and
keeps its old tree, the CAC shows the transfer as aborted, and the exit code is 6.

--canary K (or the class's canary = K): every po stages; the first K live pos in class order
publish first and run their hooks; the rest publish only if all K succeeded. Otherwise the
canaries roll back to their old tree, the rest keep theirs: result=canary_failed, exit 7.

One push of a class at a time: while another master pushes CLASS the CAC refuses this one
(exit 2, naming the running transfer and its master); with --wait the master asks again every
second until it may go (at most SECS, default 600).
";

/// After the exit codes in `-h`.
const HELP_SUMMARY: &str = "
The last stdout line is the summary (also after a usage or config error; not after -h, -v or -t):
  transfer=ID class=C result=RESULT pos=OK/N bytes=N seconds=S rate=B/S
Before it, stderr has one `po=ADDR result=... error=...` line per failed po or hook.
";

struct Args {
    class: String,
    dir: PathBuf,
    excludes: Vec<String>,
    conf: PathBuf,
    dry_run: bool,
    itemize: bool,
    canary: Option<u32>,
    wait: Option<Duration>,
    skip_unreadable: bool,
}

/// The seed's `-x a b c`: every word after -x up to the next flag is a pattern. Rewritten to
/// repeated `-x PAT` before getopts sees it.
fn expand_x(args: Vec<String>) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut it = args.into_iter().peekable();
    while let Some(a) = it.next() {
        if a == "-x" {
            let mut n = 0;
            while let Some(p) = it.next_if(|w| !w.starts_with('-') || w == "-") {
                out.push("-x".into());
                out.push(p);
                n += 1;
            }
            if n == 0 {
                return Err("-x needs at least one pattern".into());
            }
        } else {
            out.push(a);
        }
    }
    Ok(out)
}

/// What the command line asks for: a push, or an exit with no summary (`-h`, `-v`, `-t`).
/// `Err` is a usage error, which prints the summary.
enum Parsed {
    Push(Args),
    Done(ExitCode),
}

fn parse_args() -> Result<Parsed, ExitCode> {
    let mut o = getopts::Options::new();
    o.optopt("c", "", "the class to push (configured on the CAC)", "CLASS");
    o.optopt("p", "", "the source directory", "DIR");
    o.optmulti("x", "", "exclude regexes (every word up to the next flag)", "PAT...");
    o.optmulti("", "exclude-glob", "exclude a shell glob (`**` for any depth); repeat for more", "GLOB");
    o.optopt("f", "", "config file (default: $WUGUI_CONF, then /etc/wugui/master.conf)", "FILE");
    o.optflag("", "skip-unreadable", "leave out files that cannot be read (one warning each; exit 8)");
    o.optflag("n", "dry-run", "ask the CAC and every po what a push would change, send nothing");
    o.optflag("i", "itemize", "with --dry-run, one line per path each po would change");
    o.optopt(
        "",
        "canary",
        "commit K pos first, the rest only if all K succeed (0: off; default: the class's canary)",
        "K",
    );
    o.optflagopt("", "wait", "if another push of the class runs, wait for it (at most SECS, default 600)", "SECS");
    o.optflag("t", "", "check the config file, print ok or the errors, and exit (no -c or -p needed)");
    let usage_err = |e: String| super::usage_error("masterwugui", &e);
    let args = expand_x(std::env::args().skip(1).collect()).map_err(usage_err)?;
    let brief = "Usage: masterwugui -c CLASS -p DIR [-x PAT...] [--exclude-glob GLOB] [-f FILE] [--dry-run [-i]] [--canary K] [--skip-unreadable] [--wait[=SECS]]\n       masterwugui -t [-f FILE]";
    let tail = format!("\n{HELP_TAIL}\n{}{}", outcome::help(), HELP_SUMMARY.replace("RESULT", outcome::RESULTS));
    let m = match super::parse_args(o, "masterwugui", brief, &tail, &args) {
        Ok(m) => m,
        Err(code) if code == ExitCode::SUCCESS => return Ok(Parsed::Done(code)),
        Err(code) => return Err(code),
    };
    if !m.free.is_empty() {
        return Err(usage_err(format!("unexpected argument {:?}", m.free[0])));
    }
    let conf = config::config_path("master", m.opt_str("f").as_deref());
    if m.opt_present("t") {
        return Ok(Parsed::Done(super::check::report("masterwugui", super::check::master(&conf))));
    }
    let class = m.opt_str("c").ok_or_else(|| usage_err("-c CLASS is required".into()))?;
    let dir = m.opt_str("p").ok_or_else(|| usage_err("-p DIR is required".into()))?;
    let wait = match (m.opt_present("wait"), m.opt_str("wait")) {
        (false, _) => None,
        (true, None) => Some(Duration::from_secs(600)),
        (true, Some(s)) => {
            Some(Duration::from_secs(s.parse().map_err(|_| usage_err(format!("--wait={s}: not a number of seconds")))?))
        }
    };
    let canary = match m.opt_str("canary") {
        None => None,
        Some(k) => Some(k.parse::<u32>().map_err(|_| usage_err(format!("--canary {k}: not a number of pos")))?),
    };
    let globs: Vec<String> = m
        .opt_strs("exclude-glob")
        .iter()
        .map(|g| super::glob::checked_regex(g))
        .collect::<Result<_, _>>()
        .map_err(usage_err)?;
    Ok(Parsed::Push(Args {
        class,
        dir: PathBuf::from(dir),
        excludes: m.opt_strs("x").into_iter().chain(globs).collect(),
        conf,
        dry_run: m.opt_present("n"),
        itemize: m.opt_present("i"),
        canary,
        wait,
        skip_unreadable: m.opt_present("skip-unreadable"),
    }))
}

/// The machine plus the progress display: a bar on a TTY, a line every few seconds otherwise.
struct Cli {
    m: MasterMachine,
    tty: bool,
    next: Instant,
    shown: bool,
    hold: Option<HoldCommit>,
}

/// Fault injection for tests (`WUGUI_FAILPOINT=hold_commit_ms=N`): from the first COMMIT on,
/// everything the master sends waits N ms, as a COMMIT slow to arrive would. It makes a late
/// COMMIT, and the race of two pushes of a class, happen every time.
struct HoldCommit {
    hold: Duration,
    until: Option<Instant>,
    held: VecDeque<Action>,
}

/// Fault injection for tests (`WUGUI_FAILPOINT=unreadable=PATH`): the walk finds the file or
/// directory PATH (relative to -p, as bytes) unreadable, as a file root cannot read would be.
fn unreadable_failpoint() -> Option<Vec<u8>> {
    use std::os::unix::ffi::OsStringExt;
    let fp = std::env::var_os("WUGUI_FAILPOINT")?.into_vec();
    let path = fp.strip_prefix(b"unreadable=")?.to_vec();
    log::warn!("event=failpoint name=unreadable path={}", kv_quote(&crate::proto::relpath::show(&path)));
    Some(path)
}

impl HoldCommit {
    fn from_env() -> Option<HoldCommit> {
        let fp = std::env::var("WUGUI_FAILPOINT").ok()?;
        let ms: u64 = fp.strip_prefix("hold_commit_ms=")?.parse().ok()?;
        Some(HoldCommit { hold: Duration::from_millis(ms), until: None, held: VecDeque::new() })
    }

    fn next(&mut self, m: &mut MasterMachine, now: Instant) -> Option<Action> {
        if self.until.is_none() {
            let a = m.poll_action()?;
            if !matches!(a, Action::Send { msg: Msg::Commit { .. }, .. }) {
                return Some(a);
            }
            log::warn!("event=failpoint name=hold_commit_ms ms={}", self.hold.as_millis());
            self.until = Some(now + self.hold);
            self.held.push_back(a);
        }
        if self.until.is_some_and(|t| now < t) {
            self.held.extend(std::iter::from_fn(|| m.poll_action()));
            return None;
        }
        self.held.pop_front().or_else(|| m.poll_action())
    }
}

impl Cli {
    fn show(&mut self, now: Instant) {
        let s = self.m.stat(now, None);
        if s.total == 0 && s.pos.is_empty() {
            return;
        }
        let n = s.pos.len().max(1) as u64;
        let want = s.total * n;
        let pct = (s.done * 100).checked_div(want).unwrap_or(100);
        let states = self.m.po_states();
        let ready = states.iter().filter(|p| matches!(p, PoState::Ready | PoState::Committing | PoState::Done)).count();
        let failed = states.iter().filter(|p| **p == PoState::Failed).count();
        let secs = s.elapsed_ms as f64 / 1000.0;
        let rate = if secs > 0.0 { (s.done as f64 / secs) as u64 } else { 0 };
        if self.tty {
            let w = 30;
            let fill = (pct as usize * w / 100).min(w);
            eprint!(
                "\r[{}{}] {pct:3}% {}/{} {}/s eta {} pos ready {ready}/{} failed {failed}  ",
                "#".repeat(fill),
                " ".repeat(w - fill),
                super::human(s.done),
                super::human(want),
                super::human(rate),
                super::eta(want.saturating_sub(s.done), rate),
                s.pos.len()
            );
            self.shown = true;
        } else {
            eprintln!(
                "progress transfer={} pct={pct} bytes={} of={want} rate={rate} ready={ready}/{} failed={failed} secs={secs:.1} eta={}",
                s.transfer,
                s.done,
                s.pos.len(),
                super::eta(want.saturating_sub(s.done), rate)
            );
        }
        let _ = std::io::stderr().flush();
    }
}

impl Machine for Cli {
    fn handle_event(&mut self, now: Instant, ev: Event) {
        self.m.handle_event(now, ev)
    }
    fn handle_timeout(&mut self, now: Instant) {
        if now >= self.next {
            self.show(now);
            self.next = now + if self.tty { Duration::from_millis(250) } else { Duration::from_secs(5) };
        }
        if self.m.poll_timeout().is_some_and(|t| t <= now) {
            self.m.handle_timeout(now)
        }
    }
    fn poll_action(&mut self) -> Option<Action> {
        match self.hold.as_mut() {
            Some(h) => h.next(&mut self.m, Instant::now()),
            None => self.m.poll_action(),
        }
    }
    fn poll_timeout(&self) -> Option<Instant> {
        let held = self.hold.as_ref().and_then(|h| h.until.filter(|_| !h.held.is_empty()));
        crate::proto::earliest([self.m.poll_timeout(), (!self.m.is_finished()).then_some(self.next), held])
    }
    fn is_finished(&self) -> bool {
        self.m.is_finished() && self.hold.as_ref().is_none_or(|h| h.held.is_empty())
    }
    fn stats(&self) -> crate::proto::Stats {
        self.m.stats()
    }
}

pub fn main() -> ExitCode {
    // SIGINT or SIGTERM before the event loop reads them waits for it (and aborts there)
    // rather than killing the master without a summary.
    use nix::sys::signal::{SigSet, Signal};
    let _ = SigSet::from_iter([Signal::SIGINT, Signal::SIGTERM]).thread_block();
    let args = match parse_args() {
        Ok(Parsed::Push(a)) => a,
        // -h, -v and -t print no summary; a usage error does.
        Ok(Parsed::Done(code)) => return code,
        Err(code) => {
            println!("{}", usage_summary(&class_arg(std::env::args().skip(1))));
            return code;
        }
    };
    let class = args.class.clone();
    match run(args) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("masterwugui: {e}");
            println!("{}", usage_summary(&class));
            ExitCode::from(exit::USAGE)
        }
    }
}

/// The summary after a usage, config or source error: nothing was granted or sent.
fn usage_summary(class: &str) -> String {
    outcome::summary_line(0, class, "failed", (0, 0), 0, 0.0)
}

/// The `-c` value of a command line getopts refused (`-` if there is none), for the summary.
fn class_arg(mut args: impl Iterator<Item = String>) -> String {
    while let Some(a) = args.next() {
        if a == "-c" {
            return args.next().unwrap_or_else(|| "-".into());
        }
        if let Some(c) = a.strip_prefix("-c").filter(|c| !c.is_empty()) {
            return c.to_owned();
        }
    }
    "-".into()
}

fn run(a: Args) -> Result<u8, String> {
    let cfg = config::load_master(&a.conf).map_err(|e| e.to_string())?;
    if let Some(p) = &cfg.log {
        crate::logging::init_from_env_or(Some(p), log::LevelFilter::Info)
            .map_err(|e| format!("cannot open log {}: {e}", p.display()))?;
    } else {
        crate::logging::init_from_env_or(None, log::LevelFilter::Warn).map_err(|e| e.to_string())?;
    }
    super::raise_fd_limit();
    // Check what we can before asking a CAC, so a typo costs nothing.
    let meta = std::fs::metadata(&a.dir).map_err(|e| format!("source {}: {e}", a.dir.display()))?;
    if !meta.is_dir() {
        return Err(format!("source {} is not a directory", a.dir.display()));
    }
    std::fs::read_dir(&a.dir).map_err(|e| format!("source {}: {e}", a.dir.display()))?;
    tree::compile_excludes(&a.excludes)?;
    let secret = match cfg.class_secret_file(&a.class) {
        Some(p) if p.exists() => Some(config::read_secret(&p)?),
        _ => None,
    };
    let root = a.dir.clone();
    let cli_excludes = a.excludes.clone();
    let walk_opts = tree::WalkOptions {
        skip_unreadable: a.skip_unreadable,
        failpoint_unreadable: unreadable_failpoint(),
        chains: false,
    };
    let skipped = std::rc::Rc::new(std::cell::Cell::new(0u64));
    let skipped_in_plan = skipped.clone();
    let planner: Planner = Box::new(move |class: &ClassCfg| {
        let mut pats = cli_excludes.clone();
        pats.extend(class.exclude.iter().cloned());
        let ex = tree::compile_excludes(&pats)?;
        let opts = tree::WalkOptions { chains: class.p2p && class.chains, ..walk_opts.clone() };
        let w = tree::walk_with(&root, &ex, class.block_size, &opts)?;
        for (p, why) in &w.skipped {
            eprintln!("masterwugui: skipped {}: {why}", printable(&p.to_string()));
        }
        for (p, why) in &w.unreadable {
            eprintln!("masterwugui: warning: skipped unreadable {}: {why}", printable(&p.to_string()));
        }
        if !w.unreadable.is_empty() && class.mirror {
            return Err(format!(
                "{} unreadable source files or directories, and class {} has mirror = on: its pos would \
                 delete their copies of them, so nothing is pushed",
                w.unreadable.len(),
                class.name
            ));
        }
        skipped_in_plan.set(w.unreadable.len() as u64);
        // Checksums are computed ahead of sending, beside the loop.
        let src = tree::FsSource::new(root.clone(), &w.manifest)
            .with_workers(crate::work::default_size())
            .map_err(|e| format!("worker threads: {e}"))?;
        Ok((w.manifest, Box::new(src) as Box<dyn Source>))
    });
    let settings = MasterSettings {
        class: a.class.clone(),
        cacs: cfg.cac.clone(),
        secret,
        connect_timeout: Duration::from_millis(cfg.connect_timeout_ms),
        unix_start: super::unix_now(),
        dry_run: a.dry_run,
        wait: a.wait,
        canary: a.canary,
        itemize: a.itemize,
        transfer_key: {
            let mut k = [0u8; 32];
            getrandom::getrandom(&mut k).expect("the kernel's random source is available");
            k
        },
    };
    let now = Instant::now();
    let tty = std::io::stderr().is_terminal();
    let mut cli = Cli {
        m: MasterMachine::new(settings, planner, now),
        tty,
        next: now + Duration::from_secs(1),
        shown: false,
        hold: HoldCommit::from_env(),
    };
    // The first signal aborts the push everywhere (the machine then finishes once its ABORTs
    // are queued); a second one stops at once.
    let mut on_signal = |cli: &mut Cli, sig: nix::sys::signal::Signal| {
        log::warn!("event=stop role=master signal={sig}");
        if cli.m.outcome().is_some() {
            return Control::Stop;
        }
        cli.m.abort(Instant::now(), &format!("aborted by {sig}"));
        Control::Continue
    };
    use nix::sys::signal::Signal::*;
    let opts = reactor::Options::default();
    reactor::run(&mut cli, reactor::Listeners::default(), &opts, &[SIGINT, SIGTERM], &mut on_signal)
        .map_err(|e| format!("event loop: {e}"))?;
    if cli.shown {
        cli.show(Instant::now());
        eprintln!();
    }
    let Some(o) = cli.m.outcome() else {
        return Err("the event loop ended before the transfer did".into());
    };
    let mut o = o.clone();
    if let TransferResult::Ok(ran) | TransferResult::Partial(ran) = &mut o.result {
        ran.skipped = skipped.get();
    }
    let r = outcome::report(&o);
    for l in &r.stderr {
        eprintln!("{l}");
    }
    for l in &r.stdout {
        println!("{l}");
    }
    Ok(r.code)
}

#[cfg(test)]
mod tests {
    use super::expand_x;

    #[test]
    fn seed_exclude_syntax() {
        let a = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            expand_x(a(&["-c", "base1", "-x", "a.txt", "b.txt", "c.txt", "-p", "/d"])).unwrap(),
            a(&["-c", "base1", "-x", "a.txt", "-x", "b.txt", "-x", "c.txt", "-p", "/d"])
        );
        assert!(expand_x(a(&["-x", "-p", "/d"])).is_err());
    }
}
