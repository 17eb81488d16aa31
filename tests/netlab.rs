//! wugui in the network lab (../shared/bench): real namespaces and shaped links. Root only;
//! elsewhere each test prints why it skipped. The lab's harness checks every copy itself.

mod common;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

fn lab() -> Option<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let bench = root.parent()?.join("shared/bench");
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: network-namespace tests need root");
        return None;
    }
    if !bench.join("run.sh").exists() {
        eprintln!("skipped: no network lab at {}", bench.display());
        return None;
    }
    for tool in ["ip", "tc", "ping"] {
        if Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {tool}"))
            .output()
            .map(|o| !o.status.success())
            .unwrap_or(true)
        {
            eprintln!("skipped: {tool} is not installed (apt-get install iproute2 iputils-ping)");
            return None;
        }
    }
    Some(bench)
}

/// One lab cell; returns the harness's result line.
fn cell(bench: &std::path::Path, n: u32, size_mb: u32, rate: &str, extra: &str, host_rates: &str) -> String {
    let root = env!("CARGO_MANIFEST_DIR");
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_masterwugui")).parent().unwrap().to_path_buf();
    let mut c = Command::new(bench.join("run.sh"));
    c.args(["wugui", &n.to_string(), &size_mb.to_string(), rate])
        .current_dir(root)
        .env("WUGUI_ROOT", root)
        .env("WUGUI_BIN", bin)
        .env("WUGUI_CLASS_EXTRA", extra)
        .env("NETLAB_PREFIX", format!("wgt{}", std::process::id() % 10000))
        .env("BENCH_TIMEOUT", "120");
    if !host_rates.is_empty() {
        c.env("NETLAB_HOST_RATES", host_rates);
    }
    let o = common::run_bounded(c, Duration::from_secs(300));
    let out = common::text(&o.stdout);
    let line = out.lines().rev().find(|l| l.starts_with("contender=")).unwrap_or("").to_string();
    assert!(o.status.success(), "lab run failed: {line}\nstderr: {}", common::text(&o.stderr));
    eprintln!("{line}");
    line
}

fn field(line: &str, key: &str) -> f64 {
    line.split(' ').find_map(|f| f.strip_prefix(key)).and_then(|v| v.parse().ok()).unwrap_or(f64::NAN)
}

#[test]
fn swarm_and_direct_push_in_the_lab() {
    let Some(bench) = lab() else { return };
    // A swarm of 4: every copy checked by the harness, and the source sends about one copy.
    let line = cell(&bench, 4, 16, "100mbit", "", "");
    assert!(line.contains(" ok=1"), "{line}");
    assert!(field(&line, "src_copies=") < 2.0, "the source uploaded too much: {line}");
    // The direct 1-to-N push passes the same check.
    let line = cell(&bench, 2, 8, "100mbit", "p2p = off", "");
    assert!(line.contains(" ok=1"), "{line}");
}
