//! The .deb (`scripts/build-deb.sh`), installed with dpkg into a scratch root, never into the
//! machine running the test: `dpkg --root=SCRATCH --force-script-chrootless` keeps dpkg's
//! database and every file below SCRATCH, and the maintainer scripts honour `DPKG_ROOT`
//! (`useradd --prefix`, numeric owners). The test checks the files and what the maintainer
//! scripts made, that an edited config survives a reinstall, runs a push with the installed
//! binaries started from the units' `ExecStart` lines (as their `User=`; no systemd needed),
//! the SysV init script as its `RUN_AS` user, and `scripts/demo.sh` against the installed
//! binaries; then removes and purges the package and checks what is left.
//!
//! Needs root and dpkg, dpkg-deb and useradd; it prints why it skips where they are absent.
//! With `WUGUI_TEST_STATIC=1`, or in CI as root, the package holds a fresh static build
//! (shared with tests/static_build.rs through target/static); otherwise it holds the
//! binaries cargo built for the tests, which is all the packaging checks need.

mod common;
use common::package::{is_root, repo, run_limited, scratch, static_skip_reason, static_target_dir, tail, BUILD_LIMIT};
use common::{bin, listening, seed_tree, snapshot, text, wait_for, TempDir};
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const BINS: [&str; 4] = ["masterwugui", "wugui-po", "wugui-cac", "wugui-stat"];
const VERSION: &str = env!("CARGO_PKG_VERSION");
const DPKG_LIMIT: Duration = Duration::from_secs(120);

/// `Some(reason)` when this machine cannot run the test.
fn skip_reason() -> Option<String> {
    if !is_root() {
        return Some("needs root (dpkg --root installs files owned by root and a system user)".into());
    }
    for tool in ["dpkg", "dpkg-deb", "dpkg-query", "useradd"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            return Some(format!("needs {tool} (Debian's dpkg and passwd packages)"));
        }
    }
    None
}

/// The files the package installs, with their modes.
const PACKAGED: [(&str, u32); 20] = [
    ("usr/bin/masterwugui", 0o755),
    ("usr/bin/wugui-po", 0o755),
    ("usr/bin/wugui-cac", 0o755),
    ("usr/bin/wugui-stat", 0o755),
    ("usr/share/doc/wugui/README.md", 0o644),
    ("usr/share/doc/wugui/copyright", 0o644),
    ("lib/systemd/system/wugui-po.service", 0o644),
    ("lib/systemd/system/wugui-cac.service", 0o644),
    ("lib/systemd/system/wugui-cac.service.d/wugui-user.conf", 0o644),
    ("etc/init.d/wugui-po", 0o755),
    ("etc/init.d/wugui-cac", 0o755),
    ("etc/init.d/wugui-common", 0o644),
    ("etc/default/wugui-cac", 0o644),
    ("etc/logrotate.d/wugui", 0o644),
    ("etc/wugui/cac.conf", 0o640),
    ("etc/wugui/po.conf", 0o640),
    ("etc/wugui/master.conf", 0o640),
    ("etc/wugui/hooks/reload.sh", 0o755),
    ("etc/wugui/secrets", 0o750),
    ("etc/wugui/cluster.key", 0o640),
];

/// Builds the .deb into `s/out`: from a fresh static build, or from the test binaries.
fn build_deb(s: &TempDir) -> PathBuf {
    let mut cmd = Command::new("bash");
    cmd.arg(repo().join("scripts/build-deb.sh")).arg("--out").arg(s.join("out")).current_dir(repo());
    cmd.env("TMPDIR", s.path());
    match static_skip_reason() {
        None => {
            eprintln!("deb: packaging a static build (target/static)");
            cmd.env("CARGO_TARGET_DIR", static_target_dir());
        }
        Some(why) => {
            eprintln!("deb: packaging the test binaries, not a static build: {why}");
            let from = s.join("bins");
            fs::create_dir_all(&from).unwrap();
            for name in BINS {
                fs::copy(bin(name), from.join(name)).unwrap();
            }
            // gzip: xz takes half a minute over unstripped binaries.
            cmd.arg("--from").arg(from).args(["--compress", "gzip"]);
        }
    }
    let (status, out, err) = run_limited(cmd, s.path(), "build-deb", BUILD_LIMIT);
    assert!(status.success(), "build-deb.sh: {status:?}\n{out}\nstderr tail:\n{}", tail(&err, 40));
    let deb = out.lines().find_map(|l| l.strip_prefix("deb=")).unwrap_or_else(|| panic!("no deb= in {out}"));
    assert!(deb.ends_with(&format!("/wugui_{VERSION}-1_amd64.deb")), "{deb}");
    PathBuf::from(deb)
}

/// A scratch root with an empty dpkg database and the passwd files of a system with only root.
fn scratch_root(root: &Path) {
    for d in ["etc", "var/lib/dpkg/info", "var/lib/dpkg/updates", "var/lib/dpkg/triggers"] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    fs::write(root.join("var/lib/dpkg/status"), "").unwrap();
    for (f, body, mode) in [
        ("passwd", "root:x:0:0:root:/root:/bin/sh\n", 0o644),
        ("group", "root:x:0:\n", 0o644),
        ("shadow", "root:*:19000:0:99999:7:::\n", 0o640),
        ("gshadow", "root:*::\n", 0o640),
    ] {
        fs::write(root.join("etc").join(f), body).unwrap();
        fs::set_permissions(root.join("etc").join(f), fs::Permissions::from_mode(mode)).unwrap();
    }
}

/// `dpkg --root=ROOT ARGS`: its exit status and output.
fn dpkg(root: &Path, s: &Path, tag: &str, args: &[&str]) -> (bool, String) {
    let mut c = Command::new("dpkg");
    c.arg(format!("--root={}", root.display()))
        .arg(format!("--log={}", s.join("dpkg.log").display()))
        .arg("--force-script-chrootless")
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .env_remove("DPKG_ROOT");
    let (status, out, err) = run_limited(c, s, tag, DPKG_LIMIT);
    (status.success(), format!("{out}{err}"))
}

/// dpkg's status of wugui in the database at `admindir` (empty when it has none).
fn dpkg_status(admindir: &Path) -> String {
    let o = Command::new("dpkg-query")
        .arg(format!("--admindir={}", admindir.display()))
        .args(["-W", "-f=${Status} ${Version}", "wugui"])
        .output()
        .unwrap();
    text(&o.stdout)
}

/// The `NAME:` line of the file `path` (passwd or group), split at `:`.
fn entry(path: &Path, name: &str) -> Option<Vec<String>> {
    let t = fs::read_to_string(path).unwrap();
    t.lines().find(|l| l.starts_with(&format!("{name}:"))).map(|l| l.split(':').map(str::to_owned).collect())
}

/// What systemd would run for `unit` below `root`: its `ExecStart` (the last one, with its
/// absolute paths moved below `root`) and its `User=`, reading the unit, then its drop-ins
/// in name order (a later value wins, an empty one resets).
fn unit_command(root: &Path, unit: &str) -> (Vec<String>, Option<String>) {
    let dir = root.join("lib/systemd/system");
    let mut files = vec![dir.join(unit)];
    let mut drop_ins: Vec<PathBuf> = fs::read_dir(dir.join(format!("{unit}.d")))
        .map(|d| d.map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|e| e == "conf")).collect())
        .unwrap_or_default();
    drop_ins.sort();
    files.extend(drop_ins);
    let (mut exec, mut user) = (None, None);
    for f in files {
        for line in fs::read_to_string(&f).unwrap().lines() {
            if let Some(v) = line.strip_prefix("ExecStart=") {
                exec = Some(v.trim().to_owned());
            } else if let Some(v) = line.strip_prefix("User=") {
                user = Some(v.trim().to_owned()).filter(|u| !u.is_empty());
            }
        }
    }
    let exec = exec.unwrap_or_else(|| panic!("{unit}: no ExecStart"));
    // Systemd's prefixes (-, @, +, !, :) are not part of the path.
    let exec = exec.trim_start_matches(['-', '@', '+', '!', ':']);
    let argv = exec
        .split_whitespace()
        .map(|w| if w.starts_with('/') { format!("{}{w}", root.display()) } else { w.to_owned() })
        .collect();
    (argv, user)
}

/// A daemon started from an argv; it prints `listening=ADDR`. Killed by PID when dropped.
struct Running {
    child: Child,
    addr: String,
}

impl Running {
    fn start(argv: &[String], uid: Option<(u32, u32)>, env: &[(&str, &Path)], err: &Path) -> Running {
        let mut c = Command::new(&argv[0]);
        c.args(&argv[1..]).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(fs::File::create(err).unwrap());
        for (k, v) in env {
            c.env(k, v);
        }
        if let Some((u, g)) = uid {
            c.uid(u).gid(g);
        }
        let mut child = c.spawn().unwrap_or_else(|e| panic!("{argv:?}: {e}"));
        match listening(&mut child) {
            Some(addr) => Running { child, addr },
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{argv:?} did not listen: stderr {}", fs::read_to_string(err).unwrap_or_default());
            }
        }
    }

    fn pid(&self) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(self.child.id() as i32)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The real uid of process `pid` (from /proc).
fn uid_of(pid: u32) -> u32 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Whether process `pid` runs (exists and is not a zombie: an orphan's reaper may be slow).
fn alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .is_ok_and(|st| st.lines().any(|l| l.starts_with("State:") && !l.contains("Z (zombie)")))
}

/// Whether a user other than root can reach `p` (every ancestor searchable by others).
fn reachable_by_others(p: &Path) -> bool {
    p.ancestors().all(|a| fs::metadata(a).is_ok_and(|m| m.permissions().mode() & 0o001 != 0))
}

fn write(path: &Path, body: &str) {
    fs::write(path, body).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// Every file left below `root`, except dpkg's database and the passwd files.
fn leftovers(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    fn go(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            if rel == "var/lib/dpkg" {
                continue;
            }
            if p.is_dir() && !p.is_symlink() {
                go(root, &p, out);
            } else if !["passwd", "group", "shadow", "gshadow"]
                .iter()
                .any(|f| rel.trim_end_matches('-') == format!("etc/{f}"))
            {
                out.push(rel);
            }
        }
    }
    go(root, root, &mut out);
    out.sort();
    out
}

#[test]
fn deb_installs_runs_and_purges_in_a_scratch_root() {
    if let Some(why) = skip_reason() {
        eprintln!("deb_installs_runs_and_purges_in_a_scratch_root: skipped: {why}");
        return;
    }
    let s = scratch("deb");
    // The CAC runs as the package's user: it must reach its files below the scratch dir.
    fs::set_permissions(s.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let deb = build_deb(&s);
    let deb_arg = deb.to_str().unwrap();
    let root = s.join("root");
    scratch_root(&root);
    let r = |p: &str| root.join(p.trim_start_matches('/'));
    // This machine's users and packages, which nothing here may change.
    let host_before =
        (fs::read("/etc/passwd").unwrap(), fs::read("/etc/group").unwrap(), dpkg_status(Path::new("/var/lib/dpkg")));

    // --- install ---------------------------------------------------------------------------
    let (ok, out) = dpkg(&root, s.path(), "install", &["-i", deb_arg]);
    assert!(ok, "dpkg -i:\n{out}");
    assert!(out.contains("created the system user wugui"), "{out}");
    assert_eq!(dpkg_status(&r("var/lib/dpkg")), format!("install ok installed {VERSION}-1"));

    // The postinst's user and group, in the scratch root's files.
    let user = entry(&r("etc/passwd"), "wugui").unwrap_or_else(|| panic!("no user wugui:\n{out}"));
    let (uid, gid): (u32, u32) = (user[2].parse().unwrap(), user[3].parse().unwrap());
    assert!((1..1000).contains(&uid), "a system uid: {user:?}");
    assert_eq!(entry(&r("etc/group"), "wugui").unwrap()[2], gid.to_string());
    assert!(entry(&r("etc/shadow"), "wugui").is_some());

    for (f, mode) in PACKAGED {
        let m = fs::metadata(r(f)).unwrap_or_else(|e| panic!("{f}: {e}\n{out}"));
        assert_eq!(m.mode() & 0o7777, mode, "{f}");
        assert_eq!(m.uid(), 0, "{f}");
    }
    for name in BINS {
        let o = Command::new(r("usr/bin").join(name)).arg("-v").output().unwrap();
        assert_eq!(text(&o.stdout).trim(), format!("{name} {VERSION}"));
    }
    // Owners: the CAC's files are the wugui group's, the po's are root's.
    let owner = |p: &str| {
        let m = fs::metadata(r(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
        (m.uid(), m.gid(), m.mode() & 0o7777)
    };
    assert_eq!(owner("etc/wugui/cluster.key"), (0, gid, 0o640));
    assert_eq!(owner("etc/wugui/cac.conf"), (0, gid, 0o640));
    assert_eq!(owner("etc/wugui/master.conf"), (0, gid, 0o640));
    assert_eq!(owner("etc/wugui/secrets"), (0, gid, 0o750));
    assert_eq!(owner("etc/wugui/po.conf"), (0, 0, 0o640));
    assert_eq!(owner("var/lib/wugui"), (0, 0, 0o755));
    assert_eq!(owner("var/log/wugui"), (0, gid, 0o750));
    assert_eq!(owner("var/log/wugui/cac.log"), (uid, gid, 0o640));
    let key = fs::read_to_string(r("etc/wugui/cluster.key")).unwrap();
    assert!(key.len() == 64 && key.bytes().all(|b| b.is_ascii_hexdigit()), "{key:?}");
    // Every file in /etc is a conffile.
    let o = Command::new("dpkg-query")
        .arg(format!("--admindir={}", r("var/lib/dpkg").display()))
        .args(["-W", "-f=${Conffiles}", "wugui"])
        .output()
        .unwrap();
    let conffiles = text(&o.stdout);
    for f in PACKAGED.iter().map(|(f, _)| *f).filter(|f| f.starts_with("etc/") && r(f).is_file()) {
        let listed = f != "etc/wugui/cluster.key";
        assert_eq!(conffiles.contains(&format!(" /{f} ")), listed, "{f} in:\n{conffiles}");
    }
    // The units name the installed paths; the CAC runs as wugui, the po as root.
    let (cac_argv, cac_user) = unit_command(&root, "wugui-cac.service");
    let (po_argv, po_user) = unit_command(&root, "wugui-po.service");
    assert_eq!(
        cac_argv,
        [r("usr/bin/wugui-cac").display().to_string(), "-f".into(), r("etc/wugui/cac.conf").display().to_string()]
    );
    assert_eq!(
        po_argv,
        [r("usr/bin/wugui-po").display().to_string(), "-f".into(), r("etc/wugui/po.conf").display().to_string()]
    );
    assert_eq!((cac_user.as_deref(), po_user.as_deref()), (Some("wugui"), None));
    // dpkg --verify: every file as shipped (the md5sums hold all but the conffiles).
    let o =
        Command::new("dpkg").arg(format!("--root={}", root.display())).args(["--verify", "wugui"]).output().unwrap();
    assert!(o.status.success() && o.stdout.is_empty(), "dpkg --verify: {} {}", text(&o.stdout), text(&o.stderr));
    let init = fs::read_to_string(r("etc/init.d/wugui-po")).unwrap();
    assert!(init.lines().any(|l| l == "DAEMON=/usr/bin/wugui-po"), "{init}");

    // --- an edited config survives a reinstall; the key is not made again -----------------
    let edited = fs::read_to_string(r("etc/wugui/po.conf")).unwrap() + "# edited by the admin\n";
    write(&r("etc/wugui/po.conf"), &edited);
    let (ok, again) = dpkg(&root, s.path(), "reinstall", &["-i", deb_arg]);
    assert!(ok, "dpkg -i again:\n{again}");
    assert!(!again.contains("created the system user"), "{again}");
    assert_eq!(fs::read_to_string(r("etc/wugui/po.conf")).unwrap(), edited);
    assert_eq!(fs::read_to_string(r("etc/wugui/cluster.key")).unwrap(), key);
    assert_eq!(owner("etc/wugui/secrets"), (0, gid, 0o750));

    // --- a push through the installed binaries, started as the units start them -----------
    let cac_as = if reachable_by_others(&root) {
        Some((uid, gid))
    } else {
        eprintln!("deb: {} is not reachable by other users: the CAC runs as root", root.display());
        None
    };
    push_through_the_units(&s, &root, (&cac_argv, cac_as), &po_argv);
    if cac_as.is_some() {
        sysv_cac_runs_as_its_user(&s, &root, uid, gid);
    }
    demo_script_with_the_installed_binaries(&s, &root);

    // --- remove: programs gone, configs, key, state and logs kept --------------------------
    let po_conf = fs::read_to_string(r("etc/wugui/po.conf")).unwrap();
    let (ok, out) = dpkg(&root, s.path(), "remove", &["-r", "wugui"]);
    assert!(ok, "dpkg -r:\n{out}");
    assert_eq!(dpkg_status(&r("var/lib/dpkg")), format!("deinstall ok config-files {VERSION}-1"));
    for f in ["usr/bin/wugui-po", "lib/systemd/system/wugui-cac.service", "usr/share/doc/wugui/README.md"] {
        assert!(!r(f).exists(), "{f} after remove");
    }
    for f in ["etc/wugui/po.conf", "etc/wugui/cluster.key", "var/lib/wugui", "var/log/wugui/cac.log"] {
        assert!(r(f).exists(), "{f} gone after remove");
    }
    assert_eq!(fs::read_to_string(r("etc/wugui/po.conf")).unwrap(), po_conf);

    // --- purge: nothing of the package is left, but the user ------------------------------
    let (ok, out) = dpkg(&root, s.path(), "purge", &["--purge", "wugui"]);
    assert!(ok, "dpkg --purge:\n{out}");
    assert_eq!(dpkg_status(&r("var/lib/dpkg")), "");
    assert_eq!(leftovers(&root), Vec::<String>::new(), "{out}");
    for d in ["etc/wugui", "var/lib/wugui", "var/log/wugui", "etc/init.d", "usr/bin"] {
        assert!(!r(d).exists(), "{d} after purge:\n{out}");
    }
    assert!(entry(&r("etc/passwd"), "wugui").is_some(), "the user stays (see postrm)");

    let host_after =
        (fs::read("/etc/passwd").unwrap(), fs::read("/etc/group").unwrap(), dpkg_status(Path::new("/var/lib/dpkg")));
    assert!(host_before == host_after, "this machine's users or dpkg database changed");
}

/// The demo's push, with the installed binaries: the CAC and a po from their units'
/// `ExecStart` (the CAC as the unit's user when `cac.1` is set), a second po from the
/// installed binary; configs on 127.0.0.1 port 0 where the admin keeps them (the CAC's and
/// the first po's in the scratch /etc/wugui, logging into the postinst's /var/log/wugui).
fn push_through_the_units(s: &TempDir, root: &Path, cac: (&[String], Option<(u32, u32)>), po_argv: &[String]) {
    let r = |p: &str| root.join(p.trim_start_matches('/'));
    let cac_conf = r("etc/wugui/cac.conf");
    let cac_head = format!(
        "[cac]\nlisten = 127.0.0.1:0\nsecret_file = {}\nlog = {}\n",
        r("etc/wugui/cluster.key").display(),
        r("var/log/wugui/cac.log").display()
    );
    write(&cac_conf, &cac_head);
    let cac_d = Running::start(cac.0, cac.1, &[], &s.join("cac.err"));
    if let Some((uid, _)) = cac.1 {
        assert_eq!(uid_of(cac_d.child.id()), uid, "the CAC runs as wugui");
    }

    // The hook the package ships runs on both pos; it writes a marker into TMPDIR.
    let po_conf = |p: &Path, name: &str, state: &Path, log: &Path| {
        write(
            p,
            &format!(
                "[po]\nlisten = 127.0.0.1:0\ncac = {}\nstate_dir = {}\nallow_dest = /home/work/data\nhook_dir = {}\nlog = {}\nroot = {}\n",
                cac_d.addr,
                state.display(),
                r("etc/wugui/hooks").display(),
                log.display(),
                s.join(name).display()
            ),
        )
    };
    let hook_tmp = s.join("hook-tmp");
    fs::create_dir_all(&hook_tmp).unwrap();
    po_conf(&r("etc/wugui/po.conf"), "po0", &r("var/lib/wugui"), &r("var/log/wugui/po.log"));
    let po0 = Running::start(po_argv, None, &[("TMPDIR", &hook_tmp)], &s.join("po0.err"));
    fs::create_dir_all(s.join("po1/state")).unwrap();
    po_conf(&s.join("po1.conf"), "po1", &s.join("po1/state"), &s.join("po1/po.log"));
    let po1_argv = [r("usr/bin/wugui-po").display().to_string(), "-f".into(), s.join("po1.conf").display().to_string()];
    let po1 = Running::start(&po1_argv, None, &[("TMPDIR", &hook_tmp)], &s.join("po1.err"));

    // Now that the pos have ports, the class, and a reload as `systemctl reload` sends it.
    write(
        &cac_conf,
        &format!(
            "{cac_head}\n[class base1]\npo = {}, {}\ndest = /home/work/data/base\nmasters = 127.0.0.0/8\nhook = reload.sh\nflag_file = data.done\n",
            po0.addr, po1.addr
        ),
    );
    nix::sys::signal::kill(cac_d.pid(), nix::sys::signal::Signal::SIGHUP).unwrap();
    let cac_log = r("var/log/wugui/cac.log");
    wait_for("the CAC's config_reload", Duration::from_secs(10), || {
        fs::read_to_string(&cac_log).unwrap_or_default().contains("event=config_reload")
    });

    let src = s.join("src");
    seed_tree(&src);
    let mut want = snapshot(&src);
    for d in ["a.txt", "b.txt", "sub/c.txt", "data.txt"] {
        want.remove(d);
    }
    write(
        &r("etc/wugui/master.conf"),
        &format!("[master]\ncac = {}\nlog = {}\n", cac_d.addr, s.join("master.log").display()),
    );
    let mut m = Command::new(r("usr/bin/masterwugui"));
    m.args(["-c", "base1", "-x", "a.txt", "b.txt", "c.txt", "-p"]).arg(&src);
    m.env("WUGUI_CONF", r("etc/wugui/master.conf"));
    let o = common::run_bounded(m, Duration::from_secs(120));
    let (out, err) = (text(&o.stdout), text(&o.stderr));
    assert_eq!(o.status.code(), Some(0), "stdout {out} stderr {err}");
    assert!(out.lines().last().unwrap_or("").contains(" class=base1 result=ok pos=2/2 "), "{out}");
    for name in ["po0", "po1"] {
        let mut got: BTreeMap<String, String> = snapshot(&s.join(name).join("home/work/data/base"));
        assert!(got.remove("data.done").is_some(), "{name}: no flag file");
        assert_eq!(got, want, "{name}");
    }
    let marker = fs::read_to_string(hook_tmp.join("wugui-hook-base1.last")).unwrap();
    assert!(marker.contains("transfer="), "{marker}");
    let log = fs::read_to_string(&cac_log).unwrap();
    assert!(log.contains("event=cac_start") && log.contains("event=auth_grant"), "{log}");
    assert!(fs::read_to_string(r("var/log/wugui/po.log")).unwrap().contains("event=publish"));

    let mut stat = Command::new(r("usr/bin/wugui-stat"));
    stat.args(["-s", &cac_d.addr, "--json"]);
    let js = text(&common::run_bounded(stat, Duration::from_secs(10)).stdout);
    assert!(js.contains("\"class\":\"base1\"") && js.contains("\"state\":\"ok\""), "{js}");
}

/// /etc/init.d/wugui-cac start, status and stop, with its paths moved below `root`: the CAC
/// runs as the user /etc/default/wugui-cac names (by number: this machine does not know the
/// scratch root's users).
fn sysv_cac_runs_as_its_user(s: &TempDir, root: &Path, uid: u32, gid: u32) {
    let r = |p: &str| root.join(p.trim_start_matches('/'));
    let init = s.join("init");
    fs::create_dir_all(init.join("run")).unwrap();
    let default = fs::read_to_string(r("etc/default/wugui-cac")).unwrap();
    assert!(default.lines().any(|l| l == "RUN_AS=wugui"), "{default}");
    write(&init.join("default-wugui-cac"), &default.replace("RUN_AS=wugui", &format!("RUN_AS={uid}:{gid}")));
    let script = fs::read_to_string(r("etc/init.d/wugui-cac"))
        .unwrap()
        .replace("DAEMON=/usr/bin/", &format!("DAEMON={}/", r("usr/bin").display()))
        .replace("CONF=/etc/wugui/", &format!("CONF={}/", r("etc/wugui").display()))
        .replace("/etc/init.d/wugui-common", &init.join("wugui-common").display().to_string());
    let common = fs::read_to_string(r("etc/init.d/wugui-common"))
        .unwrap()
        .replace("/etc/default/$NAME", &init.join("default-$NAME").display().to_string())
        .replace("/etc/sysconfig/$NAME", &init.join("sysconfig-$NAME").display().to_string())
        .replace("PIDFILE=/var/run/", &format!("PIDFILE={}/", init.join("run").display()))
        .replace("OUTPUT=/var/log/wugui/", &format!("OUTPUT={}/", r("var/log/wugui").display()));
    write(&init.join("wugui-cac"), &script);
    write(&init.join("wugui-common"), &common);
    let run = |arg: &str| {
        let mut c = Command::new("sh");
        c.arg(init.join("wugui-cac")).arg(arg);
        run_limited(c, s.path(), &format!("init-{arg}"), Duration::from_secs(60))
    };
    let (st, out, err) = run("start");
    let pidfile = init.join("run/wugui-cac.pid");
    let pid: Option<u32> = fs::read_to_string(&pidfile).ok().and_then(|p| p.trim().parse().ok());
    // Whatever fails below, the daemon is stopped by its PID.
    struct Stop(Option<u32>);
    impl Drop for Stop {
        fn drop(&mut self) {
            if let Some(p) = self.0 {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(p as i32), nix::sys::signal::Signal::SIGKILL);
            }
        }
    }
    let guard = Stop(pid);
    assert!(st.success() && out.contains("ok (pid ") && out.contains("listening on 127.0.0.1:"), "{out} {err}");
    let pid = pid.expect("a pidfile");
    assert_eq!(uid_of(pid), uid, "the SysV CAC runs as RUN_AS");
    let (st, out, _) = run("status");
    assert!(st.success() && out.contains("is running"), "{out}");
    let (st, out, err) = run("stop");
    assert!(st.success() && out.contains("ok"), "{out} {err}");
    assert!(!alive(pid), "pid {pid} still runs after stop");
    drop(guard);
}

/// scripts/demo.sh (a CAC, 3 pos and a push on 127.0.0.1) with WUGUI_BIN at the installed
/// binaries. It picks its ports with python3: without python3 this part is skipped.
fn demo_script_with_the_installed_binaries(s: &TempDir, root: &Path) {
    if !Command::new("python3").arg("-c").arg("pass").status().is_ok_and(|st| st.success()) {
        eprintln!("deb: no python3, so scripts/demo.sh is not run against the package");
        return;
    }
    let mut c = Command::new("bash");
    c.arg(repo().join("scripts/demo.sh")).arg("4").env("WUGUI_BIN", root.join("usr/bin"));
    let (st, out, err) = run_limited(c, s.path(), "demo", Duration::from_secs(180));
    assert!(st.success() && out.contains("== demo OK"), "demo.sh: {st:?}\n{out}\n{}", tail(&err, 20));
}
