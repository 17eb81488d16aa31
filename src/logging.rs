//! One event per line, for monitors:
//!
//! ```text
//! 2026-11-26T06:21:03.123Z INFO event=transfer_start transfer=42 class=base1
//! ```
//!
//! A UTC timestamp with milliseconds, the level, then the message exactly as the caller formatted
//! it (`log::info!("event=transfer_start transfer={} class={}", ..)`); use [`kv_quote`] for values
//! that may hold spaces. Each line goes out in one `write` on an `O_APPEND` descriptor, so
//! processes sharing a file never interleave inside a line. Newlines inside a message are
//! escaped, so one event stays one line.
//!
//! [`LogSink`] is the writer and works without the global logger; [`init`] installs a logger
//! wrapping one. [`reopen`] (for SIGUSR1 and logrotate) takes a mutex, so call it from the main
//! loop after the signal was noticed, never from inside a signal handler.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use log::{Level, LevelFilter, Log, Metadata, Record};

/// The environment variable that overrides the log level (`error`, `warn`, `info`, `debug`,
/// `trace` or `off`).
pub const LEVEL_ENV: &str = "WUGUI_LOG";

/// Where log lines go: stderr, or a file opened for appending that [`LogSink::reopen`] can
/// replace.
pub struct LogSink {
    path: Option<PathBuf>,
    file: Mutex<Option<File>>,
}

impl LogSink {
    /// A sink writing to stderr.
    pub fn stderr() -> LogSink {
        LogSink { path: None, file: Mutex::new(None) }
    }

    /// A sink appending to `path`, created if absent (its directory must exist).
    pub fn open(path: &Path) -> io::Result<LogSink> {
        let f = open_append(path)?;
        Ok(LogSink { path: Some(path.to_path_buf()), file: Mutex::new(Some(f)) })
    }

    /// The file this sink writes to; `None` for stderr.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Write one event stamped with the current time.
    pub fn log(&self, level: Level, msg: &str) {
        self.write_line(&format_line(SystemTime::now(), level, msg));
    }

    /// Write a finished line (ending in `\n`) with a single write. Errors are dropped: logging
    /// must never take a daemon down.
    pub fn write_line(&self, line: &str) {
        let guard = self.file.lock().unwrap_or_else(|e| e.into_inner());
        match guard.as_ref() {
            Some(mut f) => {
                let _ = f.write_all(line.as_bytes());
            }
            None => {
                let _ = io::stderr().lock().write_all(line.as_bytes());
            }
        }
    }

    /// Open the path again (after logrotate renamed the file) and write there from now on. On
    /// failure the old descriptor stays, a WARN line saying so goes to it, and the error is
    /// returned. A stderr sink has nothing to reopen.
    pub fn reopen(&self) -> io::Result<()> {
        let Some(path) = &self.path else { return Ok(()) };
        match open_append(path) {
            Ok(f) => {
                let mut guard = self.file.lock().unwrap_or_else(|e| e.into_inner());
                *guard = Some(f);
                Ok(())
            }
            Err(e) => {
                self.log(
                    Level::Warn,
                    &format!(
                        "event=log_reopen_failed path={} error={}",
                        kv_quote(&path.display().to_string()),
                        kv_quote(&e.to_string())
                    ),
                );
                Err(e)
            }
        }
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("cannot open log file {}: directory {} does not exist", path.display(), dir.display()),
            ));
        }
    }
    OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot open log file {}: {e}", path.display())))
}

/// `TIMESTAMP LEVEL MESSAGE\n`, with every control character in the message escaped (`\n`,
/// `\r`, `\t`, others as `\xNN`): text a peer sent can neither start a forged log line nor
/// send escape sequences to a terminal that tails the log.
pub fn format_line(t: SystemTime, level: Level, msg: &str) -> String {
    let mut line = String::with_capacity(32 + msg.len());
    line.push_str(&format_timestamp(t));
    line.push(' ');
    line.push_str(level.as_str());
    line.push(' ');
    push_printable(&mut line, msg);
    line.push('\n');
    line
}

use crate::proto::text::push_printable;
pub use crate::proto::text::{kv_quote, printable};

/// `2026-11-26T06:21:03.123Z`: UTC with milliseconds. Times before 1970 print as the epoch.
pub fn format_timestamp(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    format!("{}.{:03}Z", utc_seconds(d.as_secs()), d.subsec_millis())
}

/// `2026-11-26T06:21:03Z`: a Unix time in seconds, as log lines start (without milliseconds).
pub fn format_unix_secs(secs: u64) -> String {
    format!("{}Z", utc_seconds(secs))
}

/// `2026-11-26T06:21:03`.
fn utc_seconds(secs: u64) -> String {
    let (y, m, day) = civil_from_days((secs / 86400) as i64);
    let sod = secs % 86400;
    format!("{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}", sod / 3600, sod / 60 % 60, sod % 60)
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], March-based
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// `error`, `warn`, `info`, `debug`, `trace` or `off`, in any case.
pub fn parse_level(s: &str) -> Option<LevelFilter> {
    match s.trim().to_ascii_lowercase().as_str() {
        "off" => Some(LevelFilter::Off),
        "error" => Some(LevelFilter::Error),
        "warn" | "warning" => Some(LevelFilter::Warn),
        "info" => Some(LevelFilter::Info),
        "debug" => Some(LevelFilter::Debug),
        "trace" => Some(LevelFilter::Trace),
        _ => None,
    }
}

/// The `log::Log` the global logger is: a level and a sink.
pub struct Logger {
    pub sink: LogSink,
    pub level: LevelFilter,
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= self.level
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let msg = match record.args().as_str() {
            Some(s) => std::borrow::Cow::Borrowed(s),
            None => std::borrow::Cow::Owned(record.args().to_string()),
        };
        self.sink.log(record.level(), &msg);
    }

    fn flush(&self) {}
}

static LOGGER: OnceLock<Logger> = OnceLock::new();

/// Install the global logger: append to `path` (created if absent; its directory must exist),
/// or stderr for `None`. Fails if the file cannot be opened or a logger is already installed.
pub fn init(path: Option<&Path>, level: LevelFilter) -> io::Result<()> {
    let sink = match path {
        Some(p) => LogSink::open(p)?,
        None => LogSink::stderr(),
    };
    if LOGGER.set(Logger { sink, level }).is_err() {
        return Err(io::Error::new(io::ErrorKind::AlreadyExists, "the logger is already initialised"));
    }
    let logger = LOGGER.get().expect("just set");
    log::set_logger(logger).map_err(|_| io::Error::new(io::ErrorKind::AlreadyExists, "another logger is installed"))?;
    log::set_max_level(level);
    Ok(())
}

/// [`init`] with the level from `WUGUI_LOG` if it is set, else `default_level`. A value that
/// is not a level is reported as a WARN line once the logger runs, and the default is used.
pub fn init_from_env_or(path: Option<&Path>, default_level: LevelFilter) -> io::Result<()> {
    let env = std::env::var(LEVEL_ENV).ok().filter(|v| !v.trim().is_empty());
    let parsed = env.as_deref().map(parse_level);
    let level = parsed.flatten().unwrap_or(default_level);
    init(path, level)?;
    if let (Some(v), Some(None)) = (&env, parsed) {
        log::warn!("event=bad_log_level {}={} using={}", LEVEL_ENV, kv_quote(v), level.as_str().to_ascii_lowercase());
    }
    Ok(())
}

/// Reopen the global log file (SIGUSR1). A no-op before [`init`] or when logging to stderr.
pub fn reopen() -> io::Result<()> {
    match LOGGER.get() {
        Some(l) => l.sink.reopen(),
        None => Ok(()),
    }
}

/// The global log file, if [`init`] was given one.
pub fn log_path() -> Option<&'static Path> {
    LOGGER.get().and_then(|l| l.sink.path())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(secs: u64, ms: u32) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(ms.into())
    }

    #[test]
    fn timestamps() {
        assert_eq!(format_timestamp(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_timestamp(at(1_700_000_000, 123)), "2023-11-14T22:13:20.123Z");
        // The example in DESIGN.md.
        assert_eq!(format_timestamp(at(1_795_674_063, 123)), "2026-11-26T06:21:03.123Z");
        assert_eq!(format_timestamp(at(951_782_400, 999)), "2000-02-29T00:00:00.999Z");
        assert_eq!(format_timestamp(at(951_868_799, 0)), "2000-02-29T23:59:59.000Z");
        assert_eq!(format_timestamp(at(4_107_542_400, 7)), "2100-03-01T00:00:00.007Z");
        assert_eq!(format_timestamp(at(253_402_300_799, 0)), "9999-12-31T23:59:59.000Z");
        assert_eq!(format_timestamp(UNIX_EPOCH - Duration::from_secs(5)), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_unix_secs(1_795_674_063), "2026-11-26T06:21:03Z");
        // Every day of a span, against a day-by-day count.
        let (mut y, mut m, mut d) = (1970i64, 1u32, 1u32);
        for days in 0..(366 * 60) {
            assert_eq!(civil_from_days(days), (y, m, d));
            let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
            let len = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][m as usize - 1];
            d += 1;
            if d > len {
                d = 1;
                m += 1;
                if m > 12 {
                    m = 1;
                    y += 1;
                }
            }
        }
    }

    #[test]
    fn lines() {
        assert_eq!(
            format_line(at(1_795_674_063, 123), Level::Info, "event=x a=1"),
            "2026-11-26T06:21:03.123Z INFO event=x a=1\n"
        );
        assert_eq!(format_line(UNIX_EPOCH, Level::Warn, "a\nb"), "1970-01-01T00:00:00.000Z WARN a\\nb\n");
        let hostile = "x\x1b[2J\u{9b}31m\tz\0";
        assert_eq!(
            format_line(UNIX_EPOCH, Level::Warn, hostile),
            "1970-01-01T00:00:00.000Z WARN x\\x1b[2J\\x9b31m\\tz\\x00\n"
        );
        assert_eq!(format_line(UNIX_EPOCH, Level::Error, ""), "1970-01-01T00:00:00.000Z ERROR \n");
    }

    #[test]
    fn quoting() {
        assert_eq!(kv_quote("plain"), "plain");
        assert_eq!(kv_quote("/a/b.c:7"), "/a/b.c:7");
        assert_eq!(kv_quote(r"a\b"), r"a\b");
        assert_eq!(kv_quote(""), "\"\"");
        assert_eq!(kv_quote("two words"), "\"two words\"");
        assert_eq!(kv_quote("a=b"), "\"a=b\"");
        assert_eq!(kv_quote(r#"say "hi" \ bye"#), r#""say \"hi\" \\ bye""#);
        assert_eq!(kv_quote("l1\nl2"), "\"l1\\nl2\"");
        assert_eq!(kv_quote("tab\there"), "\"tab\\there\"");
        assert_eq!(kv_quote("bell\x07"), "\"bell\\x07\"");
    }

    #[test]
    fn levels() {
        assert_eq!(parse_level("INFO"), Some(LevelFilter::Info));
        assert_eq!(parse_level(" debug "), Some(LevelFilter::Debug));
        assert_eq!(parse_level("off"), Some(LevelFilter::Off));
        assert_eq!(parse_level("loud"), None);
    }

    use crate::testutil::TempDir;

    fn read_lines(p: &Path) -> Vec<String> {
        std::fs::read_to_string(p).unwrap().lines().map(str::to_owned).collect()
    }

    /// The part after the timestamp.
    fn tail(line: &str) -> &str {
        assert_eq!(line.as_bytes()[23], b'Z', "{line}");
        &line[25..]
    }

    #[test]
    fn append_rename_reopen() {
        let d = TempDir::new("logging");
        let p = d.0.join("po.log");
        std::fs::write(&p, "old line\n").unwrap();
        let sink = LogSink::open(&p).unwrap();
        assert_eq!(sink.path(), Some(p.as_path()));
        sink.log(Level::Info, "event=one n=1");
        let rotated = d.0.join("po.log.1");
        std::fs::rename(&p, &rotated).unwrap();
        sink.log(Level::Info, "event=two n=2"); // still to the renamed file
        sink.reopen().unwrap();
        sink.log(Level::Warn, "event=three n=3");

        let old = read_lines(&rotated);
        assert_eq!(old.len(), 3);
        assert_eq!(old[0], "old line");
        assert_eq!(tail(&old[1]), "INFO event=one n=1");
        assert_eq!(tail(&old[2]), "INFO event=two n=2");
        let new = read_lines(&p);
        assert_eq!(new.len(), 1);
        assert_eq!(tail(&new[0]), "WARN event=three n=3");
    }

    #[test]
    fn failed_reopen_keeps_the_old_file() {
        let d = TempDir::new("logging");
        let sub = d.0.join("logs");
        std::fs::create_dir(&sub).unwrap();
        let p = sub.join("cac.log");
        let sink = LogSink::open(&p).unwrap();
        sink.log(Level::Info, "event=before");
        let moved = d.0.join("moved");
        std::fs::rename(&sub, &moved).unwrap(); // the directory is gone: reopen must fail
        let e = sink.reopen().unwrap_err();
        assert!(e.to_string().contains("does not exist"), "{e}");
        sink.log(Level::Info, "event=after");
        let lines = read_lines(&moved.join("cac.log"));
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert_eq!(tail(&lines[0]), "INFO event=before");
        assert!(tail(&lines[1]).starts_with("WARN event=log_reopen_failed path="), "{}", lines[1]);
        assert_eq!(tail(&lines[2]), "INFO event=after");
    }

    #[test]
    fn open_in_missing_directory_is_a_clear_error() {
        let d = TempDir::new("logging");
        let e = LogSink::open(&d.0.join("nope/x.log")).err().unwrap();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert!(e.to_string().contains("does not exist"), "{e}");
        assert!(!d.0.join("nope").exists());
    }

    #[test]
    fn concurrent_writers_do_not_interleave() {
        let d = TempDir::new("logging");
        let p = d.0.join("shared.log");
        let sinks: Vec<LogSink> = (0..4).map(|_| LogSink::open(&p).unwrap()).collect();
        std::thread::scope(|s| {
            for (i, sink) in sinks.iter().enumerate() {
                s.spawn(move || {
                    let pad = "x".repeat(300 * (i + 1));
                    for n in 0..200 {
                        sink.log(Level::Info, &format!("event=w w={i} n={n} pad={pad}"));
                    }
                });
            }
        });
        let lines = read_lines(&p);
        assert_eq!(lines.len(), 800);
        for l in &lines {
            let t = tail(l);
            let i: usize = t.split(" w=").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
            assert!(t.ends_with(&format!("pad={}", "x".repeat(300 * (i + 1)))), "{l}");
        }
    }

    #[test]
    fn logger_filters_by_level() {
        let d = TempDir::new("logging");
        let p = d.0.join("l.log");
        let logger = Logger { sink: LogSink::open(&p).unwrap(), level: LevelFilter::Info };
        let rec = |level: Level, msg: &str| {
            logger.log(&Record::builder().level(level).args(format_args!("{msg}")).build());
        };
        rec(Level::Debug, "event=hidden");
        rec(Level::Info, "event=shown a=1");
        rec(Level::Error, "event=bad error=\"x y\"");
        let lines = read_lines(&p);
        assert_eq!(lines.len(), 2);
        assert_eq!(tail(&lines[0]), "INFO event=shown a=1");
        assert_eq!(tail(&lines[1]), "ERROR event=bad error=\"x y\"");
    }
}
