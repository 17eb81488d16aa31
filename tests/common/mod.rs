//! Real processes on 127.0.0.1: a CAC and some pos with generated configs in a temp dir.
//! Children are killed by PID when the cluster is dropped.
#![allow(dead_code)]

pub mod dns_server;
pub mod package;
pub mod rogue;
#[path = "../../src/testutil.rs"]
mod testutil;
#[allow(unused_imports)]
pub use testutil::{noise, Rng, TempDir};

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub fn bin(name: &str) -> PathBuf {
    match name {
        "masterwugui" => env!("CARGO_BIN_EXE_masterwugui").into(),
        "wugui-po" => env!("CARGO_BIN_EXE_wugui-po").into(),
        "wugui-cac" => env!("CARGO_BIN_EXE_wugui-cac").into(),
        "wugui-stat" => env!("CARGO_BIN_EXE_wugui-stat").into(),
        _ => panic!("no binary {name}"),
    }
}

/// A port nothing listens on, for a config that must name it before its daemon starts. It is
/// taken from below the kernel's ephemeral range (`ip_local_port_range`), where no outgoing
/// connection and no bind to port 0 lands, so nothing else can take it before the daemon binds
/// it (a port bound to 0 and released could be, and was: "Address already in use"). Each call
/// in this process gets a different port; processes start at different places.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const LOW: u32 = 10_000;
    let high = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u32>().ok())
        .filter(|&h| h > LOW + 1000)
        .unwrap_or(32_768);
    let span = high - LOW;
    let start = std::process::id().wrapping_mul(7919) % span;
    for _ in 0..span {
        let p = (LOW + (start + NEXT.fetch_add(1, Ordering::Relaxed)) % span) as u16;
        if TcpListener::bind(("0.0.0.0", p)).is_ok() && TcpListener::bind(("127.0.0.1", p)).is_ok() {
            return p;
        }
    }
    panic!("no free port in {LOW}..{high}");
}

/// Starts the daemon binary `exe -f conf` with extra environment, stdout and stderr piped.
pub fn spawn_daemon(exe: &Path, conf: &Path, env: &[(&str, &str)]) -> Child {
    Command::new(exe)
        .envs(env.iter().copied())
        .arg("-f")
        .arg(conf)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The address a daemon prints as `listening=ADDR` on stdout (10 s at most), or `None`. A
/// thread drains stdout after that, so a daemon that writes more never blocks on the pipe.
pub fn listening(child: &mut Child) -> Option<String> {
    let stdout = child.stdout.take()?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(a) = line.strip_prefix("listening=") {
                let _ = tx.send(a.to_owned());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(10)).ok()
}

pub struct Daemon {
    pub child: Child,
    pub addr: String,
    pub log: PathBuf,
}

impl Daemon {
    /// Starts `bin -f conf` and waits for its `listening=` line.
    pub fn start(name: &str, conf: &Path, log: PathBuf) -> Daemon {
        Daemon::start_env(name, conf, log, &[])
    }

    /// Starts a daemon with extra environment (failpoints), and waits (10 s at most) for the
    /// address it prints as `listening=ADDR`.
    pub fn start_env(name: &str, conf: &Path, log: PathBuf, env: &[(&str, &str)]) -> Daemon {
        let mut child = spawn_daemon(&bin(name), conf, env);
        match listening(&mut child) {
            Some(addr) => Daemon { child, addr, log },
            None => {
                let _ = child.kill();
                let mut err = String::new();
                child.stderr.take().unwrap().read_to_string(&mut err).ok();
                let _ = child.wait();
                panic!("{name} -f {} did not listen: stderr {err:?}", conf.display());
            }
        }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

pub struct Cluster {
    pub dir: TempDir,
    pub cac: Daemon,
    pub pos: Vec<Daemon>,
    pub po_roots: Vec<PathBuf>,
    pub master_conf: PathBuf,
    pub dest: String,
}

pub struct Opts {
    pub pos: usize,
    /// Extra `key = value` lines for class base1.
    pub class_extra: Vec<String>,
    pub masters: String,
    pub allow_dest: String,
    /// A hook script (name, body) put in every po's hook_dir.
    pub hook: Option<(&'static str, String)>,
    /// CAC addresses each po asks before the real one (failover tests).
    pub po_cacs_before: Vec<String>,
    /// Extra `key = value` lines for every po.conf.
    pub po_extra: Vec<String>,
    /// Each po's site label in the class (`po = ADDR@SITE`; `""` or missing: none).
    pub po_sites: Vec<&'static str>,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            pos: 3,
            class_extra: vec![],
            masters: "127.0.0.0/8".into(),
            allow_dest: "/home/work/data".into(),
            hook: None,
            po_cacs_before: vec![],
            po_extra: vec![],
            po_sites: vec![],
        }
    }
}

impl Cluster {
    pub fn start(tag: &str, o: Opts) -> Cluster {
        let dir = TempDir::new(tag);
        let d = dir.path().to_path_buf();
        fs::write(d.join("cluster.key"), "test-cluster-key\n").unwrap();
        let cac_port = free_port();
        // Distinct ports: a port just released may be handed out again at once.
        let mut po_ports: Vec<u16> = Vec::new();
        for _ in 0..1000 {
            if po_ports.len() == o.pos {
                break;
            }
            let p = free_port();
            if p != cac_port && !po_ports.contains(&p) {
                po_ports.push(p);
            }
        }
        assert_eq!(po_ports.len(), o.pos, "no {} distinct free ports", o.pos);
        let site = |i: usize| o.po_sites.get(i).filter(|s| !s.is_empty()).map(|s| format!("@{s}")).unwrap_or_default();
        let po_list: Vec<String> =
            po_ports.iter().enumerate().map(|(i, p)| format!("127.0.0.1:{p}{}", site(i))).collect();
        let dest = "/home/work/data/base".to_string();
        let mut cac = format!(
            "[cac]\nlisten = 127.0.0.1:{cac_port}\nsecret_file = {}\nlog = {}\n\n[class base1]\npo = {}\ndest = {dest}\nmasters = {}\n",
            d.join("cluster.key").display(),
            d.join("cac.log").display(),
            po_list.join(", "),
            o.masters
        );
        for l in &o.class_extra {
            cac += l;
            cac += "\n";
        }
        fs::write(d.join("cac.conf"), &cac).unwrap();
        let cac_d = Daemon::start("wugui-cac", &d.join("cac.conf"), d.join("cac.log"));
        let mut pos = Vec::new();
        let mut po_roots = Vec::new();
        for (i, port) in po_ports.iter().enumerate() {
            let root = d.join(format!("po{i}"));
            fs::create_dir_all(root.join("state")).unwrap();
            fs::create_dir_all(root.join("hooks")).unwrap();
            if let Some((name, body)) = &o.hook {
                let h = root.join("hooks").join(name);
                fs::write(&h, body).unwrap();
                fs::set_permissions(&h, fs::Permissions::from_mode(0o755)).unwrap();
            }
            let conf = format!(
                "[po]\nlisten = 127.0.0.1:{port}\ncac = {}\nstate_dir = {}\nallow_dest = {}\nlog = {}\nroot = {}\nhook_dir = {}\n",
                o.po_cacs_before.iter().chain([&cac_d.addr]).cloned().collect::<Vec<_>>().join(", "),
                root.join("state").display(),
                o.allow_dest,
                root.join("po.log").display(),
                root.display(),
                root.join("hooks").display()
            );
            let cp = d.join(format!("po{i}.conf"));
            fs::write(&cp, conf + &o.po_extra.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
            pos.push(Daemon::start("wugui-po", &cp, root.join("po.log")));
            po_roots.push(root);
        }
        let master_conf = d.join("master.conf");
        fs::write(&master_conf, format!("[master]\ncac = {}\nlog = {}\n", cac_d.addr, d.join("master.log").display()))
            .unwrap();
        Cluster { dir, cac: cac_d, pos, po_roots, master_conf, dest }
    }

    /// Where po `i` puts the class dest.
    pub fn po_dest(&self, i: usize) -> PathBuf {
        self.po_roots[i].join(self.dest.trim_start_matches('/'))
    }

    pub fn master(&self, args: &[&str]) -> Output {
        master_with(&self.master_conf, args)
    }

    /// `seed_tree` in `src` of the cluster's dir; returns that path.
    pub fn seeded_src(&self) -> PathBuf {
        let src = self.dir.join("src");
        seed_tree(&src);
        src
    }

    /// The plain push of `src` to class base1.
    pub fn push(&self, src: &Path) -> Output {
        self.master(&["-c", "base1", "-p", src.to_str().unwrap()])
    }
}

pub fn master_with(conf: &Path, args: &[&str]) -> Output {
    let mut c = Command::new(bin("masterwugui"));
    c.arg("-f").arg(conf).args(args).stdin(Stdio::null());
    run_bounded(c, Duration::from_secs(120))
}

/// Runs a command to completion, killing it after `limit`.
pub fn run_bounded(mut c: Command, limit: Duration) -> Output {
    let mut child = c.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let o = child.wait_with_output().unwrap();
            panic!("command ran over {limit:?}: stderr {}", String::from_utf8_lossy(&o.stderr));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The last stdout line: `masterwugui`'s summary.
pub fn summary(o: &Output) -> String {
    text(&o.stdout).lines().last().unwrap_or_default().to_owned()
}

/// The `transfer=ID` of a summary or log line.
pub fn transfer_id_in(line: &str) -> u64 {
    let v = line.split("transfer=").nth(1).and_then(|s| s.split(' ').next()).unwrap_or("");
    v.parse().unwrap_or_else(|_| panic!("no transfer id in {line}"))
}

/// Every entry below `root`: type, mode, mtime (files and dirs), content hash, link target.
pub fn snapshot(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    fn go(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        let mut names: Vec<_> = fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
        names.sort();
        for p in names {
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let m = fs::symlink_metadata(&p).unwrap();
            let mode = m.permissions().mode() & 0o7777;
            let v = if m.file_type().is_symlink() {
                format!("link {}", fs::read_link(&p).unwrap().display())
            } else if m.is_dir() {
                go(root, &p, out);
                format!("dir {mode:o} {}", m.mtime())
            } else {
                let data = fs::read(&p).unwrap();
                format!("file {mode:o} {} {} {:x}", m.mtime(), data.len(), crc(&data))
            };
            out.insert(rel, v);
        }
    }
    go(root, root, &mut out);
    out
}

fn crc(d: &[u8]) -> u64 {
    // FNV-1a: enough to tell copies apart in a test.
    d.iter().fold(0xcbf29ce484222325u64, |h, b| (h ^ *b as u64).wrapping_mul(0x100000001b3))
}

/// The seed's data dir: nested dirs, an empty dir, a symlink, assorted modes and mtimes,
/// a multi-block file, and the files the seed command excludes.
pub fn seed_tree(root: &Path) {
    let w = |p: &str, data: &[u8], mode: u32| {
        let f = root.join(p);
        fs::create_dir_all(f.parent().unwrap()).unwrap();
        fs::write(&f, data).unwrap();
        fs::set_permissions(&f, fs::Permissions::from_mode(mode)).unwrap();
    };
    w("index/part-0000", &noise(300_000, 1), 0o644);
    w("index/part-0001", &noise(65_536, 2), 0o600);
    w("index/deep/er/still.bin", &noise(70_001, 3), 0o755);
    w("conf/base.conf", b"threads = 8\n", 0o640);
    w("empty.file", b"", 0o644);
    w("a.txt", b"excluded", 0o644);
    w("b.txt", b"excluded", 0o644);
    w("sub/c.txt", b"excluded", 0o644);
    w("data.txt", b"excluded too: a.txt is searched, not anchored", 0o644);
    w("keep.dat", b"kept", 0o644);
    fs::create_dir_all(root.join("empty/dir")).unwrap();
    std::os::unix::fs::symlink("index/part-0000", root.join("latest")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/target", root.join("dangling")).unwrap();
    fs::set_permissions(root.join("index/deep"), fs::Permissions::from_mode(0o750)).unwrap();
    // Fixed mtimes, so the copy's must match.
    for p in ["index/part-0000", "conf/base.conf", "keep.dat"] {
        let t = nix::sys::time::TimeSpec::new(1_600_000_000, 0);
        nix::sys::stat::utimensat(None, &root.join(p), &t, &t, nix::sys::stat::UtimensatFlags::NoFollowSymlink)
            .unwrap();
    }
}

/// A po in `d/po` (its `root`; dests under `/home/work/data`) listening on `listen`, asking
/// the CAC at `cac`. Returns the daemon and its root.
pub fn start_po(d: &Path, listen: &str, cac: &str) -> (Daemon, PathBuf) {
    let root = d.join("po");
    fs::create_dir_all(root.join("state")).unwrap();
    let po_conf = format!(
        "[po]\nlisten = {listen}\ncac = {cac}\nstate_dir = {}\nallow_dest = /home/work/data\nlog = {}\nroot = {}\n",
        root.join("state").display(),
        root.join("po.log").display(),
        root.display()
    );
    fs::write(d.join("po.conf"), po_conf).unwrap();
    (Daemon::start("wugui-po", &d.join("po.conf"), root.join("po.log")), root)
}

/// A `/proc/PID/status` field in KiB (`VmRSS`, `VmHWM`).
pub fn status_kib(pid: u32, key: &str) -> u64 {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = s.lines().find(|l| l.starts_with(key)).unwrap_or_else(|| panic!("no {key}"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

pub fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Cluster {
    /// A second CAC replica (same key and classes, its own port and log; it shares no state
    /// with the first), and a master config `master-NAME.conf` that asks only it.
    pub fn replica(&self, name: &str) -> (Daemon, PathBuf) {
        let d = self.dir.path();
        let conf = fs::read_to_string(d.join("cac.conf")).unwrap();
        let port = free_port();
        let log = d.join(format!("cac-{name}.log"));
        let conf: Vec<String> = conf
            .lines()
            .map(|l| match l.split_once(" = ") {
                Some(("listen", _)) => format!("listen = 127.0.0.1:{port}"),
                Some(("log", _)) => format!("log = {}", log.display()),
                _ => l.to_owned(),
            })
            .collect();
        let path = d.join(format!("cac-{name}.conf"));
        fs::write(&path, conf.join("\n") + "\n").unwrap();
        let cac = Daemon::start("wugui-cac", &path, log);
        let master = self.master_conf_for(name, &cac.addr);
        (cac, master)
    }

    /// `master-NAME.conf`: a master that asks the CAC at `cac` and logs to `master-NAME.log`.
    pub fn master_conf_for(&self, name: &str, cac: &str) -> PathBuf {
        let d = self.dir.path();
        let path = d.join(format!("master-{name}.conf"));
        fs::write(&path, format!("[master]\ncac = {cac}\nlog = {}\n", d.join(format!("master-{name}.log")).display()))
            .unwrap();
        path
    }
}

/// `masterwugui -f conf ARGS` with extra environment, running in the background.
pub fn spawn_master(conf: &Path, args: &[&str], env: &[(&str, &str)]) -> Child {
    Command::new(bin("masterwugui"))
        .envs(env.iter().copied())
        .arg("-f")
        .arg(conf)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits (at most `limit`) for `child` to exit and returns its output.
pub fn wait_output(mut child: Child, limit: Duration) -> Output {
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            let o = child.wait_with_output().unwrap();
            panic!("command ran over {limit:?}: stderr {}", text(&o.stderr));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// A frame over a blocking socket, for rogue clients.
pub fn send(s: &mut TcpStream, m: &wugui::proto::Msg) {
    s.write_all(&m.to_frame()).unwrap();
}

/// The next frame from a blocking socket (10 s at most); `None` when it closed or timed out.
pub fn recv(s: &mut TcpStream) -> Option<wugui::proto::Msg> {
    rogue::recv_within(s, Duration::from_secs(10))
}

/// How many `event=` fields a key=value monitor sees in `line`: fields split on spaces outside
/// double quotes, where `\"` inside quotes is an escaped quote (as `kv_quote` writes it).
pub fn events_in(line: &str) -> usize {
    let mut fields = Vec::new();
    let (mut cur, mut quoted, mut esc) = (String::new(), false, false);
    for ch in line.chars() {
        match ch {
            _ if esc => esc = false,
            '\\' if quoted => esc = true,
            '"' => quoted = !quoted,
            ' ' if !quoted => {
                fields.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(ch);
    }
    fields.push(cur);
    fields.iter().filter(|f| f.starts_with("event=")).count()
}

/// A connection to `addr` from the loopback address 127.1.x.y numbered `n` (Linux routes all of
/// 127.0.0.0/8 to lo): a master host of its own, as the CAC counts them (`cac::MAX_PER_MASTER`).
pub fn connect_from(n: usize, addr: &str) -> TcpStream {
    use socket2::{Domain, Socket, Type};
    assert!(n < 1 << 16);
    let ip = std::net::Ipv4Addr::new(127, 1, (n >> 8) as u8, n as u8);
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    s.bind(&std::net::SocketAddr::new(ip.into(), 0).into()).unwrap();
    let to: std::net::SocketAddr = addr.parse().unwrap();
    s.connect(&to.into()).unwrap();
    s.into()
}

impl Cluster {
    /// Adds `[class NAME]` (base1's pos, dest `dest`, masters 127.0.0.0/8) to the CAC and
    /// reloads it, waiting (10 s at most) for the reload.
    pub fn add_class(&self, name: &str, dest: &str) {
        use nix::sys::signal::{kill, Signal};
        let path = self.dir.path().join("cac.conf");
        let mut conf = fs::read_to_string(&path).unwrap();
        let po = conf.lines().find(|l| l.starts_with("po = ")).unwrap().to_owned();
        conf += &format!("\n[class {name}]\n{po}\ndest = {dest}\nmasters = 127.0.0.0/8\n");
        fs::write(&path, conf).unwrap();
        let before = self.cac.log_text().matches("event=config_reload").count();
        kill(nix::unistd::Pid::from_raw(self.cac.child.id() as i32), Signal::SIGHUP).unwrap();
        wait_for("the CAC's reload", Duration::from_secs(10), || {
            self.cac.log_text().matches("event=config_reload").count() > before
        });
    }
}

/// Every entry below `root` as file fidelity sees it, keyed by its name's bytes (the key
/// shows bytes that are not UTF-8 as `\xNN`): type, mode, uid:gid, mtime, content hash or
/// link target (as bytes), and for a file with several links the first of its names below
/// `root` (so a hard-linked pair shows as one group on both sides). Names in `ignore` (top
/// level) are left out.
pub fn fidelity(root: &Path, ignore: &[&str]) -> BTreeMap<String, String> {
    use std::os::unix::ffi::OsStrExt;
    let show = |b: &[u8]| {
        b.iter()
            .map(|&c| if c.is_ascii_graphic() && c != b'\\' { (c as char).to_string() } else { format!("\\x{c:02x}") })
            .collect::<String>()
    };
    let mut out = BTreeMap::new();
    let mut groups: BTreeMap<(u64, u64), String> = BTreeMap::new();
    let mut todo = vec![root.to_path_buf()];
    let mut all = Vec::new();
    while let Some(dir) = todo.pop() {
        for e in fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap();
            if dir == root && ignore.iter().any(|i| rel.as_os_str() == *i) {
                continue;
            }
            let m = fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                todo.push(p.clone());
            }
            all.push((show(rel.as_os_str().as_bytes()), p, m));
        }
    }
    all.sort_by(|a, b| a.0.cmp(&b.0));
    for (rel, _, m) in &all {
        if m.is_file() && m.nlink() > 1 {
            groups.entry((m.dev(), m.ino())).or_insert_with(|| rel.clone());
        }
    }
    for (rel, p, m) in all {
        let head = format!("{:o} {}:{}", m.mode() & 0o7777, m.uid(), m.gid());
        let v = if m.file_type().is_symlink() {
            format!("symlink {}:{} -> {}", m.uid(), m.gid(), show(fs::read_link(&p).unwrap().as_os_str().as_bytes()))
        } else if m.is_dir() {
            format!("dir {head} {}", m.mtime())
        } else {
            let group = groups.get(&(m.dev(), m.ino())).map(|g| format!(" links={} group={g}", m.nlink()));
            format!("file {head} {} {:x}{}", m.mtime(), crc(&fs::read(&p).unwrap()), group.unwrap_or_default())
        };
        out.insert(rel, v);
    }
    out
}
