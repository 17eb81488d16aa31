//! Packaging: the static build (`scripts/build-static.sh`), the install script
//! (`scripts/install.sh`) and the example configs (`scripts/examples/`).
//!
//! `static_build_makes_four_static_binaries` runs a full release build, so it runs only with
//! `WUGUI_TEST_STATIC=1`, or in CI (`CI=true`) as root; otherwise it prints why it skips. The
//! other tests are quick and always run, with the binaries cargo built for the tests.

mod common;
use common::package::{repo, run_limited, scratch, static_skip_reason, static_target_dir, tail, BUILD_LIMIT};
use common::{bin, spawn_daemon, text, Daemon, TempDir};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const BINS: [&str; 4] = ["masterwugui", "wugui-po", "wugui-cac", "wugui-stat"];
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Whether `path` is an ELF executable without a program interpreter (PT_INTERP): a static
/// or static-pie binary, which no dynamic loader or shared library is needed to run.
fn elf_is_static(path: &Path) -> Result<bool, String> {
    let mut head = Vec::new();
    fs::File::open(path).and_then(|f| f.take(1 << 20).read_to_end(&mut head)).map_err(|e| e.to_string())?;
    if head.len() < 64 || &head[..4] != b"\x7fELF" {
        return Err("not an ELF file".into());
    }
    if head[4] != 2 || head[5] != 1 {
        return Err("not a 64-bit little-endian ELF".into());
    }
    let u16_at = |o: usize| u16::from_le_bytes([head[o], head[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(head[0x20..0x28].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    let mut saw_load = false;
    for i in 0..phnum {
        let o = phoff + i * phentsize;
        let Some(ph) = head.get(o..o + 4) else { return Err("program headers beyond the first MiB".into()) };
        match u32::from_le_bytes(ph.try_into().unwrap()) {
            1 => saw_load = true,  // PT_LOAD
            3 => return Ok(false), // PT_INTERP: needs ld-linux.so
            _ => {}
        }
    }
    if !saw_load {
        return Err("no PT_LOAD segment".into());
    }
    Ok(true)
}

/// `-v` of `bin` prints `NAME VERSION`.
fn check_version(bin: &Path, name: &str) {
    let o = Command::new(bin).arg("-v").output().unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
    let out = text(&o.stdout);
    assert!(o.status.success(), "{} -v: {:?} {out} {}", bin.display(), o.status, text(&o.stderr));
    assert_eq!(out.trim(), format!("{name} {VERSION}"), "{} -v", bin.display());
}

#[test]
fn static_build_makes_four_static_binaries() {
    if let Some(why) = static_skip_reason() {
        eprintln!("static_build_makes_four_static_binaries: skipped: {why}");
        return;
    }
    let s = scratch("build");
    let dist = s.join("dist");
    let mut cmd = Command::new("bash");
    cmd.arg(repo().join("scripts/build-static.sh")).arg("--out").arg(&dist).current_dir(repo());
    // Its own target dir: the release build of this very test run holds the lock of the normal one.
    cmd.env("CARGO_TARGET_DIR", static_target_dir());
    let (status, out, err) = run_limited(cmd, s.path(), "build-static", BUILD_LIMIT);
    assert!(status.success(), "build-static.sh: {status:?}\nstdout:\n{out}\nstderr tail:\n{}", tail(&err, 40));

    for name in BINS {
        let line = out
            .lines()
            .find(|l| l.starts_with(&format!("binary={name} ")))
            .unwrap_or_else(|| panic!("no binary={name} line in:\n{out}"));
        let bytes: u64 = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("bytes="))
            .and_then(|b| b.parse().ok())
            .unwrap_or_else(|| panic!("no bytes= in {line:?}"));
        assert!(line.split_whitespace().any(|w| w == "static=1"), "{line}");
        let bin = dist.join(name);
        assert_eq!(fs::metadata(&bin).unwrap().len(), bytes, "{line}");
        assert_eq!(elf_is_static(&bin), Ok(true), "{} has a PT_INTERP header", bin.display());
        check_version(&bin, name);
    }

    // And install.sh puts them (and the rest) into a staging root, the same way twice.
    let root = s.join("root");
    install(&root, &dist, s.path(), "install1", &[]);
    let again = install(&root, &dist, s.path(), "install2", &[]);
    assert!(!again.lines().any(|l| l.starts_with("installed ") || l.starts_with("updated ")), "{again}");
    for name in BINS {
        let bin = root.join("usr/local/bin").join(name);
        assert_eq!(elf_is_static(&bin), Ok(true), "{}", bin.display());
        check_version(&bin, name);
    }
}

// ---------------------------------------------------------------------------------------------
// The example configs parse: each daemon starts with them and listens.

/// The example config `name`, with its system paths moved into `dir` and `listen` on port 0.
fn example_conf(name: &str, dir: &Path) -> PathBuf {
    let text = fs::read_to_string(repo().join("scripts/examples").join(name)).unwrap();
    let etc = dir.join("etc");
    let text = text
        .replace("/etc/wugui", etc.to_str().unwrap())
        .replace("/var/log/wugui", dir.join("log").to_str().unwrap())
        .replace("/var/lib/wugui", dir.join("state").to_str().unwrap());
    let text: Vec<String> = text
        .lines()
        .map(|l| if l.starts_with("listen =") { "listen = 127.0.0.1:0".to_owned() } else { l.to_owned() })
        .collect();
    let path = dir.join(name);
    fs::write(&path, text.join("\n") + "\n").unwrap();
    path
}

/// Replaces the value of `key` (a line `key = ...`) in the config at `path`.
fn set_key(path: &Path, key: &str, value: &str) {
    let text = fs::read_to_string(path).unwrap();
    let mut found = false;
    let lines: Vec<String> = text
        .lines()
        .map(|l| match l.split_once('=') {
            Some((k, _)) if k.trim() == key && !l.trim_start().starts_with('#') => {
                found = true;
                format!("{key} = {value}")
            }
            _ => l.to_owned(),
        })
        .collect();
    assert!(found, "no {key} in {}", path.display());
    fs::write(path, lines.join("\n") + "\n").unwrap();
}

#[test]
fn example_configs_parse_and_the_daemons_listen() {
    let s = scratch("examples");
    let dir = s.path();
    for d in ["etc/secrets", "etc/hooks", "log", "state", "src/sub"] {
        fs::create_dir_all(dir.join(d)).unwrap();
    }
    fs::write(dir.join("etc/cluster.key"), "0123456789abcdef0123456789abcdef\n").unwrap();
    fs::write(dir.join("etc/secrets/base1"), "base1-secret\n").unwrap();
    fs::write(dir.join("src/sub/f.txt"), "hello\n").unwrap();

    let cac = Daemon::start("wugui-cac", &example_conf("cac.conf", dir), dir.join("log/cac.log"));
    let po_conf = example_conf("po.conf", dir);
    set_key(&po_conf, "cac", &cac.addr);
    let po = Daemon::start("wugui-po", &po_conf, dir.join("log/po.log"));
    assert!(po.addr.starts_with("127.0.0.1:"), "{}", po.addr);

    // master.conf parses if the master gets as far as asking the CAC: the example class lets
    // only 10.0.0.0/24 and 10.1.2.3 push, so 127.0.0.1 is refused (exit 2), not a config
    // error (exit 1).
    let master_conf = example_conf("master.conf", dir);
    set_key(&master_conf, "cac", &cac.addr);
    let mut cmd = Command::new(bin("masterwugui"));
    cmd.arg("-f").arg(&master_conf).args(["-c", "base1", "-p"]).arg(dir.join("src"));
    let (status, out, err) = run_limited(cmd, dir, "master", Duration::from_secs(60));
    assert_eq!(status.code(), Some(2), "stdout {out} stderr {err}");
    assert!(out.lines().last().unwrap_or("").contains("class=base1 result=denied"), "stdout {out} stderr {err}");
    let cac_log = fs::read_to_string(dir.join("log/cac.log")).unwrap_or_default();
    assert!(cac_log.contains("event=cac_start") && cac_log.contains("classes=2"), "{cac_log}");
}

#[test]
fn example_hook_reads_its_environment_and_exits_0() {
    let s = scratch("hook");
    let o = Command::new(repo().join("scripts/examples/hooks/reload.sh"))
        .env("TMPDIR", s.path())
        .env("WUGUI_TRANSFER", "42")
        .env("WUGUI_CLASS", "base1")
        .env("WUGUI_DEST", s.path())
        .env("WUGUI_FILES", "3")
        .env("WUGUI_BYTES", "1024")
        .output()
        .unwrap();
    assert!(o.status.success(), "{:?} {}", o.status, text(&o.stderr));
    let out = text(&o.stdout);
    assert!(out.contains("transfer=42 class=base1") && out.contains("files=3 bytes=1024"), "{out}");
    let marker = fs::read_to_string(s.join("wugui-hook-base1.last")).unwrap();
    assert!(marker.contains("transfer=42"), "{marker}");
}

// ---------------------------------------------------------------------------------------------
// install.sh into a scratch DESTDIR, with the test binaries standing in for the static ones.

/// `DESTDIR=destdir scripts/install.sh --configs --from FROM ARGS...`: its stdout.
fn install(destdir: &Path, from: &Path, dir: &Path, tag: &str, args: &[&str]) -> String {
    let mut c = Command::new("bash");
    c.arg(repo().join("scripts/install.sh")).args(["--configs", "--from"]).arg(from).args(args);
    c.env("DESTDIR", destdir);
    let (status, out, err) = run_limited(c, dir, tag, Duration::from_secs(60));
    assert!(status.success(), "install.sh: {status:?}\n{out}\n{err}");
    out
}

/// The init script `path`, with the shared part it sources taken from `common`, runs: `status`
/// of a daemon that is not running, and the usage line.
fn check_init_script(path: &Path, common: &Path, name: &str) {
    let script = fs::read_to_string(path).unwrap();
    assert!(script.lines().any(|l| l == ". /etc/init.d/wugui-common"), "{script}");
    let local = path.with_extension("test");
    fs::write(&local, script.replace(". /etc/init.d/wugui-common", &format!(". {}", common.display()))).unwrap();
    let run = |arg: &str| Command::new("sh").arg(&local).arg(arg).stdin(Stdio::null()).output().unwrap();
    if !Path::new(&format!("/var/run/{name}.pid")).exists() {
        let o = run("status");
        assert_eq!(o.status.code(), Some(3), "{} {}", text(&o.stdout), text(&o.stderr));
        assert_eq!(text(&o.stdout).trim(), format!("{name} is not running"));
    }
    let o = run("bogus");
    assert_eq!(o.status.code(), Some(2), "{} {}", text(&o.stdout), text(&o.stderr));
    assert!(text(&o.stderr).contains("{start|stop|restart|force-reload|reload|status}"), "{}", text(&o.stderr));
    fs::remove_file(local).unwrap();
}

/// The files a `--configs` install makes below DESTDIR, with their modes.
const INSTALLED: [(&str, u32); 17] = [
    ("usr/local/bin/masterwugui", 0o755),
    ("usr/local/bin/wugui-po", 0o755),
    ("usr/local/bin/wugui-cac", 0o755),
    ("usr/local/bin/wugui-stat", 0o755),
    ("usr/local/share/doc/wugui/README.md", 0o644),
    ("etc/wugui/cac.conf", 0o640),
    ("etc/wugui/po.conf", 0o640),
    ("etc/wugui/master.conf", 0o640),
    ("etc/wugui/hooks/reload.sh", 0o755),
    ("etc/logrotate.d/wugui", 0o644),
    ("etc/systemd/system/wugui-po.service", 0o644),
    ("etc/systemd/system/wugui-cac.service", 0o644),
    ("etc/init.d/wugui-po", 0o755),
    ("etc/init.d/wugui-cac", 0o755),
    ("etc/init.d/wugui-common", 0o644),
    ("etc/wugui/secrets", 0o700),
    ("var/log/wugui", 0o750),
];

fn test_dist(s: &TempDir) -> PathBuf {
    let from = s.join("dist");
    fs::create_dir_all(&from).unwrap();
    for name in BINS {
        fs::copy(bin(name), from.join(name)).unwrap();
    }
    from
}

#[test]
fn install_script_follows_the_fhs_in_a_destdir_and_is_idempotent() {
    use std::os::unix::fs::PermissionsExt;
    let s = scratch("install");
    let from = test_dist(&s);
    let root = s.join("root");
    let first = install(&root, &from, s.path(), "install1", &[]);
    for (f, mode) in INSTALLED {
        let p = root.join(f);
        let m = fs::metadata(&p).unwrap_or_else(|e| panic!("{}: {e} after:\n{first}", p.display()));
        assert_eq!(m.permissions().mode() & 0o7777, mode, "{f}");
    }
    assert!(root.join("var/lib/wugui").is_dir(), "{first}");
    // A staged package carries no cluster key: every install would share it.
    assert!(!root.join("etc/wugui/cluster.key").exists(), "{first}");
    // Nothing lands below PREFIX/etc, where nothing reads it.
    assert!(!root.join("usr/local/etc").exists(), "{first}");
    check_version(&root.join("usr/local/bin/wugui-cac"), "wugui-cac");

    // The units and init scripts name the final paths, not DESTDIR.
    let unit = fs::read_to_string(root.join("etc/systemd/system/wugui-po.service")).unwrap();
    assert!(unit.lines().any(|l| l == "ExecStart=/usr/local/bin/wugui-po -f /etc/wugui/po.conf"), "{unit}");
    assert!(unit.contains("Documentation=file:///usr/local/share/doc/wugui/README.md"), "{unit}");
    let init = fs::read_to_string(root.join("etc/init.d/wugui-cac")).unwrap();
    assert!(init.lines().any(|l| l == "DAEMON=/usr/local/bin/wugui-cac"), "{init}");
    let common = root.join("etc/init.d/wugui-common");
    check_init_script(&root.join("etc/init.d/wugui-po"), &common, "wugui-po");

    // Again: nothing changes.
    let second = install(&root, &from, s.path(), "install2", &[]);
    let changed: Vec<&str> =
        second.lines().filter(|l| l.starts_with("installed ") || l.starts_with("updated ")).collect();
    assert!(changed.is_empty(), "second run changed {changed:?}");

    // An edited config is kept; the new example goes beside it.
    let po_conf = root.join("etc/wugui/po.conf");
    let edited = fs::read_to_string(&po_conf).unwrap() + "# edited by the admin\n";
    fs::write(&po_conf, &edited).unwrap();
    let third = install(&root, &from, s.path(), "install3", &[]);
    assert_eq!(fs::read_to_string(&po_conf).unwrap(), edited, "{third}");
    let example = fs::read_to_string(root.join("etc/wugui/po.conf.example")).unwrap();
    assert!(!example.contains("edited by the admin") && example.contains("[po]"), "{example}");
    assert!(third.lines().any(|l| l.starts_with("kept ") && l.contains("po.conf")), "{third}");

    // PREFIX=/usr (a package): units in /lib/systemd/system, naming /usr/bin.
    let pkg = s.join("pkg");
    install(&pkg, &from, s.path(), "install-usr", &["/usr"]);
    let unit = fs::read_to_string(pkg.join("lib/systemd/system/wugui-cac.service")).unwrap();
    assert!(unit.lines().any(|l| l == "ExecStart=/usr/bin/wugui-cac -f /etc/wugui/cac.conf"), "{unit}");
    assert!(pkg.join("usr/share/doc/wugui/README.md").is_file());
}

#[test]
fn install_script_dry_run_changes_nothing_and_usage_is_text() {
    let s = scratch("install-dry");
    let from = test_dist(&s);
    // Into an empty DESTDIR: it says what it would do, and the DESTDIR stays absent.
    let root = s.join("root");
    let out = install(&root, &from, s.path(), "dry1", &["--dry-run"]);
    assert!(!root.exists(), "{out}");
    assert!(out.lines().any(|l| l == format!("would-installed {}/usr/local/bin/wugui-po", root.display())), "{out}");
    assert!(out.lines().any(|l| l.starts_with("would-installed ") && l.ends_with("/etc/wugui/cac.conf")), "{out}");
    // Over an install with a changed binary and an edited config: nothing moves.
    install(&root, &from, s.path(), "real", &[]);
    fs::write(root.join("etc/wugui/po.conf"), "# mine\n").unwrap();
    fs::write(root.join("usr/local/bin/wugui-stat"), "old").unwrap();
    let before = common::snapshot(&root);
    let out = install(&root, &from, s.path(), "dry2", &["--dry-run"]);
    assert_eq!(common::snapshot(&root), before, "{out}");
    assert!(out.lines().any(|l| l.starts_with("would-updated ") && l.ends_with("/bin/wugui-stat")), "{out}");

    // -h: the usage text, no code.
    let o = Command::new("bash").arg(repo().join("scripts/install.sh")).arg("-h").output().unwrap();
    let help = text(&o.stdout);
    assert!(o.status.success() && help.starts_with("Usage: scripts/install.sh"), "{help}");
    for bad in ["set -", "$(", "#!/", "esac"] {
        assert!(!help.contains(bad), "-h prints code ({bad}):\n{help}");
    }
}

/// The installed example config `name` below `root`, with its system paths moved into `root`
/// and `listen` on port 0.
fn installed_conf(root: &Path, name: &str) -> PathBuf {
    let path = root.join("etc/wugui").join(name);
    let mut text = fs::read_to_string(&path).unwrap();
    for p in ["/etc/wugui", "/var/log/wugui", "/var/lib/wugui"] {
        text = text.replace(&format!("= {p}"), &format!("= {}{p}", root.display()));
    }
    let text: Vec<String> = text
        .lines()
        .map(|l| if l.starts_with("listen =") { "listen = 127.0.0.1:0".to_owned() } else { l.to_owned() })
        .collect();
    let out = root.join(format!("{name}.local"));
    fs::write(&out, text.join("\n") + "\n").unwrap();
    out
}

#[test]
fn a_fresh_install_starts_with_the_shipped_configs() {
    let s = scratch("install-start");
    let from = test_dist(&s);
    let root = s.join("root");
    install(&root, &from, s.path(), "install", &[]);
    // What the system install (no DESTDIR) or the package's postinst makes: the cluster key.
    fs::write(root.join("etc/wugui/cluster.key"), "0123456789abcdef0123456789abcdef").unwrap();
    let run = |name: &str, conf: &Path| {
        let mut child = spawn_daemon(&root.join("usr/local/bin").join(name), conf, &[]);
        let mut line = String::new();
        let mut r = std::io::BufReader::new(child.stdout.take().unwrap());
        std::io::BufRead::read_line(&mut r, &mut line).unwrap();
        let _ = child.kill();
        let o = child.wait_with_output().unwrap();
        assert!(line.starts_with("listening=127.0.0.1:"), "{name}: {line:?} stderr {}", text(&o.stderr));
        line.trim().trim_start_matches("listening=").to_owned()
    };
    let cac = run("wugui-cac", &installed_conf(&root, "cac.conf"));
    let po_conf = installed_conf(&root, "po.conf");
    set_key(&po_conf, "cac", &cac);
    run("wugui-po", &po_conf);
}
