//! What a new user meets first, with real processes: `-t` config checks, `wugui-stat -t ID`,
//! errors that name the next step, and a README that lists every log event.

mod common;
use common::*;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// `bin -t -f conf`: (exit code, stdout, stderr).
fn check(bin_name: &str, conf: &Path) -> (Option<i32>, String, String) {
    let mut c = Command::new(bin(bin_name));
    c.arg("-t").arg("-f").arg(conf);
    let o = run_bounded(c, Duration::from_secs(10));
    (o.status.code(), text(&o.stdout), text(&o.stderr))
}

fn write_key(p: &Path, key: &str, mode: u32) {
    fs::write(p, key).unwrap();
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn cac_t_checks_the_config_and_every_class_file() {
    let d = TempDir::new("check-cac");
    let dir = d.path();
    write_key(&dir.join("cluster.key"), "0123456789abcdef0123456789abcdef0123456789\n", 0o600);
    write_key(&dir.join("m.secret"), "0123456789abcdef0123456789abcdef0123456789\n", 0o600);
    let class = |dest: &str| {
        format!(
            "[cac]\nlisten = 127.0.0.1:0\nsecret_file = cluster.key\n[class c1]\npo = 127.0.0.1:7200\nmasters = 127.0.0.1\nmaster_secret_file = m.secret\ndest = {dest}\n"
        )
    };
    let conf = dir.join("cac.conf");
    fs::write(&conf, class("/srv/data")).unwrap();
    assert_eq!(check("wugui-cac", &conf), (Some(0), "ok\n".into(), String::new()));

    for (dest, needle) in [("/srv/../etc", "must not contain `..`"), ("srv", "absolute"), ("/srv//x", "not normalised")]
    {
        fs::write(&conf, class(dest)).unwrap();
        let (code, out, err) = check("wugui-cac", &conf);
        assert_eq!((code, out.as_str()), (Some(1), ""), "{dest}: {err}");
        assert!(err.starts_with(&format!("{}:8: dest", conf.display())) && err.contains(needle), "{dest}: {err}");
    }

    // An unreadable class secret is named with its line.
    fs::write(&conf, class("/srv/data").replace("m.secret", "missing.secret")).unwrap();
    let (code, _, err) = check("wugui-cac", &conf);
    assert_eq!(code, Some(1));
    assert!(err.contains("cac.conf:7: master_secret_file") && err.contains("missing.secret"), "{err}");

    // A world-readable, short cluster key is still ok, with two warnings.
    write_key(&dir.join("cluster.key"), "short\n", 0o644);
    fs::write(&conf, class("/srv/data")).unwrap();
    let (code, out, err) = check("wugui-cac", &conf);
    assert_eq!((code, out.as_str()), (Some(0), "ok\n"), "{err}");
    assert!(err.contains("warning: secret_file") && err.contains("world-readable (mode 644"), "{err}");
    assert!(err.contains("holds 5 bytes, fewer than 32"), "{err}");

    // A missing config file.
    let (code, _, err) = check("wugui-cac", &dir.join("nope.conf"));
    assert_eq!(code, Some(1));
    assert!(err.contains("nope.conf: cannot read config"), "{err}");
}

#[test]
fn po_t_and_master_t_check_their_configs() {
    let d = TempDir::new("check-po");
    let dir = d.path();
    let po = dir.join("po.conf");
    let good = "[po]\nlisten = 127.0.0.1:0\ncac = 127.0.0.1:7100\nstate_dir = state\nallow_dest = /srv\n";
    fs::write(&po, good).unwrap();
    assert_eq!(check("wugui-po", &po), (Some(0), "ok\n".into(), String::new()));
    fs::write(&po, good.replace("allow_dest = /srv\n", "allow_dest = srv\n")).unwrap();
    let (code, out, err) = check("wugui-po", &po);
    assert_eq!((code, out.as_str()), (Some(1), ""), "{err}");
    assert!(err.starts_with(&format!("{}:5: allow_dest", po.display())), "{err}");
    fs::write(&po, good).unwrap();
    fs::write(dir.join("state"), "a file").unwrap();
    let (code, _, err) = check("wugui-po", &po);
    assert_eq!(code, Some(1));
    assert!(err.contains("state_dir") && err.contains("not a directory"), "{err}");

    // masterwugui -t needs no -c or -p, and prints no summary line.
    let m = dir.join("master.conf");
    fs::write(&m, "[master]\ncac = 127.0.0.1:7100\n").unwrap();
    assert_eq!(check("masterwugui", &m), (Some(0), "ok\n".into(), String::new()));
    fs::write(&m, "[master]\ncac = 127.0.0.1:7100\nconnect_timeout = soon\n").unwrap();
    let (code, out, err) = check("masterwugui", &m);
    assert_eq!((code, out.as_str()), (Some(1), ""), "{err}");
    assert!(err.starts_with(&format!("{}:3: connect_timeout", m.display())), "{err}");
    fs::write(&m, "[master]\n").unwrap();
    let (code, _, err) = check("masterwugui", &m);
    assert_eq!(code, Some(1));
    assert!(err.contains("lacks the required key \"cac\""), "{err}");
}

#[test]
fn errors_name_the_next_step() {
    let c = Cluster::start("errors", Opts { pos: 1, ..Default::default() });
    let src = c.seeded_src();
    let s = src.to_str().unwrap();
    let push = |conf: &Path, args: &[&str]| master_with(conf, &[&["-c", "base1", "-p", s], args].concat());

    // A po where master.conf wants a CAC: the po says what it is.
    let conf = c.master_conf_for("po-as-cac", &c.pos[0].addr);
    let o = push(&conf, &[]);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains(&format!("{}: not a CAC", c.pos[0].addr)), "{err}");
    assert!(err.contains("this address is a po (wugui-po), not a CAC"), "{err}");
    assert!(summary(&o).starts_with("transfer=0 class=base1 result=denied pos=0/0"), "{}", summary(&o));

    // Nothing listens: every address tried, with its errno.
    let closed = format!("127.0.0.1:{}", free_port());
    let conf = c.master_conf_for("closed", &closed);
    let o = push(&conf, &[]);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!("no CAC reachable (tried 1: {closed}: connect: Connection refused (os error 111))")),
        "{err}"
    );
    assert!(summary(&o).contains("result=denied"), "{}", summary(&o));

    // An unknown class: the classes this master may push.
    let o = c.master(&["-c", "nope", "-p", s]);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("no class \"nope\" on this CAC; 127.0.0.1 may push base1"), "{err}");
    assert!(summary(&o).starts_with("transfer=0 class=nope result=denied"), "{}", summary(&o));

    // A glob given as a regex: patterns are regexes, and --exclude-glob takes globs.
    let o = c.master(&["-c", "base1", "-x", "**/*.tmp", "-p", s]);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("bad exclude pattern \"**/*.tmp\": repetition operator missing expression"), "{err}");
    assert!(err.contains("Patterns are regexes") && err.contains("--exclude-glob \"**/*.tmp\""), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(summary(&o).starts_with("transfer=0 class=base1 result=failed pos=0/0"), "{}", summary(&o));

    // A CAC where a class lists a po: the CAC says what it is. (A second CAC, on port 0.)
    let d = c.dir.path();
    let conf = d.join("cac-b.conf");
    fs::write(
        &conf,
        format!(
            "[cac]\nlisten = 127.0.0.1:0\nsecret_file = cluster.key\nlog = cac-b.log\n[class base1]\npo = {}\ndest = /home/work/data/base\nmasters = 127.0.0.0/8\n",
            c.cac.addr
        ),
    )
    .unwrap();
    let cac_b = Daemon::start("wugui-cac", &conf, d.join("cac-b.log"));
    let o = push(&c.master_conf_for("b", &cac_b.addr), &[]);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(4), "{err}");
    let line = err.lines().find(|l| l.starts_with(&format!("po={} result=failed", c.cac.addr))).unwrap_or_default();
    assert!(line.contains("this address is a CAC (wugui-cac), not a po"), "{err}");
}

#[test]
fn exclude_glob_drops_what_the_shell_would() {
    let c = Cluster::start("glob", Opts { pos: 1, ..Default::default() });
    let src = c.seeded_src();
    let s = src.to_str().unwrap();
    let o = c.master(&["-c", "base1", "-p", s, "--exclude-glob", "*.txt", "--exclude-glob", "index/**/*.bin"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let got = snapshot(&c.po_dest(0));
    for gone in ["a.txt", "b.txt", "sub/c.txt", "data.txt", "index/deep/er/still.bin"] {
        assert!(!got.contains_key(gone), "{gone} was pushed: {got:?}");
    }
    for kept in ["keep.dat", "index/part-0000", "index/deep/er", "conf/base.conf"] {
        assert!(got.contains_key(kept), "{kept} was not pushed: {got:?}");
    }
    // A glob the regex parser refuses is named as typed, not as the regex it became.
    let o = c.master(&["-c", "base1", "-p", s, "--exclude-glob", "[z-a]"]);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("bad --exclude-glob \"[z-a]\"") && !err.contains("(^|/)"), "{err}");
}

/// `wugui-stat -s ADDR ARGS`: (exit code, stdout, stderr).
fn stat(addr: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let mut c = Command::new(bin("wugui-stat"));
    c.arg("-s").arg(addr).args(args);
    let o = run_bounded(c, Duration::from_secs(10));
    (o.status.code(), text(&o.stdout), text(&o.stderr))
}

#[test]
fn stat_lists_newest_first_one_by_id_with_the_json_totals() {
    let c = Cluster::start("statid", Opts { pos: 2, ..Default::default() });
    let src = c.seeded_src();
    let first = c.push(&src);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first.stderr));
    fs::write(src.join("keep.dat"), "changed").unwrap();
    let second = c.push(&src);
    assert_eq!(second.status.code(), Some(0), "{}", text(&second.stderr));
    let (id1, id2) = (transfer_id_in(&summary(&first)).to_string(), transfer_id_in(&summary(&second)).to_string());

    let (code, table, _) = stat(&c.cac.addr, &[]);
    assert_eq!(code, Some(0));
    let head = table.lines().next().unwrap();
    assert!(head.starts_with("TRANSFER") && head.contains(" START ") && !head.contains("AGE"), "{table}");
    let rows: Vec<&str> = table.lines().filter(|l| !l.starts_with(' ')).skip(1).collect();
    assert!(rows[0].starts_with(&id2) && rows[1].starts_with(&id1), "newest first: {table}");

    let (code, one, _) = stat(&c.cac.addr, &["-t", &id1]);
    assert_eq!(code, Some(0));
    let rows: Vec<&str> = one.lines().filter(|l| !l.starts_with(' ')).skip(1).collect();
    assert_eq!(rows.len(), 1, "{one}");
    let cols: Vec<&str> = rows[0].split_whitespace().collect();
    // TRANSFER CLASS STATE START POS PCT TOTAL DONE RATE ETA MASTER
    assert_eq!((cols[0], cols[1], cols[2], cols[4], cols[5]), (id1.as_str(), "base1", "ok", "2", "100%"), "{one}");
    let start = cols[3];
    assert!(start.len() == 20 && start.ends_with('Z') && start.as_bytes()[10] == b'T', "{one}");
    assert_eq!(one.lines().filter(|l| l.starts_with("    po ")).count(), 2, "{one}");

    let (code, js, _) = stat(&c.cac.addr, &["-t", &id1, "--json"]);
    assert_eq!(code, Some(0));
    assert_eq!(js.matches("\"transfer\":").count(), 1, "{js}");
    let num = |k: &str| -> u64 {
        let at = js.find(&format!("\"{k}\":")).unwrap() + k.len() + 3;
        js[at..].split(|c: char| !c.is_ascii_digit()).next().unwrap().parse().unwrap()
    };
    assert_eq!(num("done"), 2 * num("total"), "{js}");
    assert_eq!((cols[6], cols[7]), (wugui::app::human(num("total")).as_str(), wugui::app::human(num("done")).as_str()));
    // The start the table shows is the JSON's, as log lines write time.
    assert_eq!(start, wugui::logging::format_unix_secs(num("started_unix")));

    let (code, out, err) = stat(&c.cac.addr, &["-t", "12345"]);
    assert_eq!((code, out.as_str()), (Some(1), ""));
    assert!(err.contains(&format!("{} knows no transfer 12345", c.cac.addr)), "{err}");
    let (code, _, err) = stat(&c.cac.addr, &["-t", "last"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("-t takes a transfer id"), "{err}");
}

/// `script` (util-linux) runs a command on a pseudo-terminal. CI runs as root on a clean Debian:
/// install it there; elsewhere, or if that fails, the caller skips and says why.
fn terminal() -> Result<(), String> {
    let have = || Command::new("script").arg("--version").output().is_ok_and(|o| o.status.success());
    if have() {
        return Ok(());
    }
    if !nix::unistd::Uid::effective().is_root() {
        return Err("no `script` (util-linux) and not root to install it".into());
    }
    let mut c = Command::new("sh");
    c.args(["-c", "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bsdutils"]);
    let o = run_bounded(c, Duration::from_secs(300));
    if have() {
        Ok(())
    } else {
        Err(format!("`script` missing and apt-get install bsdutils failed: {}", text(&o.stderr)))
    }
}

/// `CMD` on a terminal, as `script` records it (bounded by `timeout` inside and by `limit`).
fn on_terminal(cmd: &str, limit: Duration) -> String {
    let mut c = Command::new("script");
    c.args(["-q", "-e", "-c", cmd, "/dev/null"]).stdin(std::process::Stdio::null());
    text(&run_bounded(c, limit).stdout)
}

fn quoted(p: &Path) -> String {
    format!("'{}'", p.display())
}

#[test]
fn the_progress_bar_and_the_stat_screen_on_a_terminal() {
    if let Err(why) = terminal() {
        eprintln!("skipped: {why}");
        return;
    }
    // A class slow enough for the bar to show (it appears after a second).
    let o = Opts { pos: 1, class_extra: vec!["rate_limit = 200K".into()], ..Default::default() };
    let c = Cluster::start("tty", o);
    let src = c.seeded_src();
    let cmd = format!("{} -f {} -c base1 -p {}", quoted(&bin("masterwugui")), quoted(&c.master_conf), quoted(&src));
    let screen = on_terminal(&cmd, Duration::from_secs(60));
    let bar = screen.split('\r').find(|l| l.starts_with('[') && l.contains("% ")).unwrap_or_default();
    assert!(bar.contains("/s eta ") && bar.contains("pos ready"), "{screen:?}");
    assert!(screen.contains("result=ok pos=1/1"), "{screen:?}");

    // wugui-stat -w: the screen is cleared and redrawn, newest first, with START.
    let cmd = format!("timeout 2 {} -s {} -w -i 0.3", quoted(&bin("wugui-stat")), c.cac.addr);
    let screen = on_terminal(&cmd, Duration::from_secs(20));
    let frames: Vec<&str> = screen.split("\x1b[H\x1b[2J").skip(1).collect();
    assert!(frames.len() >= 2, "{screen:?}");
    let last = frames[frames.len() - 2];
    assert!(last.contains(&format!("{}  every 0.3s", c.cac.addr)), "{last:?}");
    assert!(last.contains("START") && last.contains("base1") && last.contains(" ok "), "{last:?}");
}

#[test]
fn every_logged_event_is_in_the_readme() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = fs::read_to_string(root.join("README.md")).unwrap();
    let logs = readme.split("\n## Logs\n").nth(1).expect("a Logs section").split("\n## ").next().unwrap();
    let listed: std::collections::BTreeSet<&str> = logs
        .lines()
        .filter(|l| l.starts_with("| `"))
        .flat_map(|l| l.split('|').nth(1).unwrap_or_default().split('`').skip(1).step_by(2))
        .collect();
    let mut missing = std::collections::BTreeSet::new();
    for (file, code) in code_files(&root.join("src")) {
        for name in code
            .split("event=")
            .skip(1)
            .map(|t| t.split(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')).next().unwrap())
        {
            if !name.is_empty() && !listed.contains(name) {
                missing.insert(format!("{name} ({file})"));
            }
        }
    }
    assert!(missing.is_empty(), "README's Logs table lacks {missing:?}");
}

/// Every `.rs` file below `dir` without its unit tests (from `#[cfg(test)]` on), and not the
/// test-only files.
fn code_files(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if p.is_dir() {
            if name != "sim" {
                out.extend(code_files(&p));
            }
        } else if name.ends_with(".rs") && !matches!(name.as_str(), "tests.rs" | "testutil.rs") {
            let code = fs::read_to_string(&p).unwrap();
            let code = code.split("#[cfg(test)]\nmod tests").next().unwrap().to_owned();
            out.push((p.display().to_string(), code));
        }
    }
    out
}

#[test]
fn help_texts_print_what_they_mean() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for script in ["scripts/install.sh", "scripts/build-static.sh"] {
        let mut c = Command::new(root.join(script));
        c.arg("-h");
        let o = run_bounded(c, Duration::from_secs(10));
        let h = text(&o.stdout);
        assert_eq!(o.status.code(), Some(0), "{script}");
        assert!(["Install", "Build", "Usage"].iter().any(|w| h.starts_with(w)), "{script}: {h}");
        assert!(!h.contains("set -e") && !h.contains("#!"), "{script} -h prints code: {h}");
    }
    for role in ["po", "cac"] {
        let mut c = Command::new(bin(&format!("wugui-{role}")));
        c.arg("--help");
        let h = text(&run_bounded(c, Duration::from_secs(10)).stdout);
        assert!(!h.contains("<role>") && h.contains(&format!("/etc/wugui/{role}.conf")), "{h}");
        assert!(h.contains("-t") && h.contains("check the config"), "{h}");
    }
    let mut c = Command::new(bin("masterwugui"));
    c.arg("-h");
    let h = text(&run_bounded(c, Duration::from_secs(10)).stdout);
    assert!(h.contains("--exclude-glob") && h.contains("masterwugui -t [-f FILE]"), "{h}");
}
