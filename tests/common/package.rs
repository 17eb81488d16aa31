//! Helpers of the packaging tests (tests/static_build.rs, tests/deb.rs): scripts run with a
//! time limit in their own process group, and the rule for when the slow static build runs.

use super::TempDir;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A full release build of the four binaries from scratch, with room for a slow machine.
pub const BUILD_LIMIT: Duration = Duration::from_secs(15 * 60);

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A scratch dir below cargo's per-test temp dir (under target/, room for release binaries).
pub fn scratch(tag: &str) -> TempDir {
    TempDir::new_in(Path::new(env!("CARGO_TARGET_TMPDIR")), tag)
}

/// Runs `cmd` in its own process group with stdout and stderr in files of `dir`; after
/// `limit` the whole group (the script and the cargo it started) is killed.
pub fn run_limited(mut cmd: Command, dir: &Path, tag: &str, limit: Duration) -> (ExitStatus, String, String) {
    use std::os::unix::process::CommandExt;
    let (out_path, err_path) = (dir.join(format!("{tag}.out")), dir.join(format!("{tag}.err")));
    cmd.stdin(Stdio::null())
        .stdout(fs::File::create(&out_path).unwrap())
        .stderr(fs::File::create(&err_path).unwrap())
        .process_group(0);
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("{tag}: cannot start: {e}"));
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > limit {
            kill_group(&mut child);
            let err = fs::read_to_string(&err_path).unwrap_or_default();
            panic!("{tag}: still running after {limit:?}, killed; stderr tail:\n{}", tail(&err, 40));
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    (status, fs::read_to_string(&out_path).unwrap_or_default(), fs::read_to_string(&err_path).unwrap_or_default())
}

fn kill_group(child: &mut Child) {
    let _ = Command::new("kill").args(["-KILL", "--", &format!("-{}", child.id())]).status();
    let _ = child.kill();
    let _ = child.wait();
}

pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// `Some(reason)` when the slow static build (a full release build into target/static)
/// should not run here: it runs with `WUGUI_TEST_STATIC=1`, or in CI (`CI=true`) as root.
/// Every test that needs it calls scripts/build-static.sh with the same target dir, so the
/// first one builds and the others find cargo's output fresh.
pub fn static_skip_reason() -> Option<String> {
    if std::env::var("WUGUI_TEST_STATIC").as_deref() == Ok("1") {
        return None;
    }
    let ci = std::env::var("CI").as_deref() == Ok("true");
    if ci && is_root() {
        return None;
    }
    Some(format!(
        "the static build is a full release build; set WUGUI_TEST_STATIC=1 to run it \
         (it also runs in CI as root; here CI={} root={})",
        ci,
        is_root()
    ))
}

/// The target dir of the static build, shared by every test that runs it.
pub fn static_target_dir() -> PathBuf {
    repo().join("target/static")
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}
