//! The config files of the three roles: hand-parsed INI whose every error names `file:line`.
//!
//! Syntax: `[section]` headers, one `key = value` a line (split at the first `=`, both sides
//! trimmed), blank lines, and comment lines whose first non-blank character is `#`. Nothing else
//! is a comment: a `#` or `,` inside a value is kept, since exclude regexes may hold both.
//!
//! Addresses are `host:port`, where host is an IP literal (`10.0.0.1`, `[::1]`) or a name found
//! in `/etc/hosts`; wugui ships static binaries, which have no NSS. Relative file paths
//! (`secret_file`, `po_file`, `log`, `state_dir`, ...) are resolved against the directory of
//! the config file, so a daemon finds them whatever its working directory.

use std::collections::HashSet;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Component, Path, PathBuf};

use crate::proto::class::{parse_num, parse_size};
use crate::proto::ClassCfg;

/// Where the default config files live: `/etc/wugui/<role>.conf`.
pub const DEFAULT_DIR: &str = "/etc/wugui";
/// The environment variable naming a config file (below `-f`, above the default).
pub const CONF_ENV: &str = "WUGUI_CONF";
pub const DEFAULT_TOKEN_TTL: u64 = 86400;
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 3000;

// ---------------------------------------------------------------------------------------------
// Errors

/// A config problem. `line` is 1-based; 0 means the whole file (unreadable, a section missing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    pub msg: String,
}

impl ConfigError {
    pub fn new(file: &str, line: usize, msg: impl Into<String>) -> ConfigError {
        ConfigError { file: file.to_owned(), line, msg: msg.into() }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file, self.msg)
        } else {
            write!(f, "{}:{}: {}", self.file, self.line, self.msg)
        }
    }
}

impl std::error::Error for ConfigError {}

// ---------------------------------------------------------------------------------------------
// Config types

#[derive(Clone, PartialEq)]
pub struct CacConfig {
    pub listen: SocketAddr,
    pub secret_file: PathBuf,
    /// The cluster key, read from `secret_file` (trailing newline removed, never empty).
    pub secret: Vec<u8>,
    pub log: Option<PathBuf>,
    pub metrics_listen: Option<SocketAddr>,
    pub classes: Vec<CacClass>,
    /// Seconds a transfer token stays valid.
    pub token_ttl: u64,
}

impl CacConfig {
    pub fn class(&self, name: &str) -> Option<&CacClass> {
        self.classes.iter().find(|c| c.cfg.name == name)
    }
}

#[derive(Clone, PartialEq)]
pub struct CacClass {
    pub cfg: ClassCfg,
    /// From `po = a:p, b:p` and/or `po_file` (one address a line), in file order.
    pub pos: Vec<SocketAddr>,
    /// Who may push this class.
    pub masters: Vec<Cidr>,
    pub master_secret_file: Option<PathBuf>,
    /// The contents of `master_secret_file`, read at load time (same rules as the cluster key).
    pub master_secret: Option<Vec<u8>>,
}

impl CacClass {
    /// Whether a master connecting from `ip` may push this class.
    pub fn master_allowed(&self, ip: IpAddr) -> bool {
        self.masters.iter().any(|c| c.contains(ip))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoConfig {
    pub listen: SocketAddr,
    pub cac: Vec<SocketAddr>,
    pub state_dir: PathBuf,
    /// Absolute roots; every dest must lie below one of them.
    pub allow_dest: Vec<PathBuf>,
    pub hook_dir: Option<PathBuf>,
    pub log: Option<PathBuf>,
    /// Bytes/s over all transfers of this host; 0 = none.
    pub max_upload_rate: u64,
    pub max_download_rate: u64,
    /// Make staged data durable before publish and for resume records (default on).
    pub fsync: bool,
    /// Demos and tests: every dest is taken below this absolute directory.
    pub root: Option<PathBuf>,
    pub metrics_listen: Option<SocketAddr>,
    /// The address this po presents to the CAC; `None` = `listen`.
    pub advertise: Option<SocketAddr>,
}

impl PoConfig {
    /// `advertise`, or else `listen`.
    pub fn advertise_addr(&self) -> SocketAddr {
        self.advertise.unwrap_or(self.listen)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasterConfig {
    pub cac: Vec<SocketAddr>,
    /// Per-class secrets: the file named after the class.
    pub secret_dir: Option<PathBuf>,
    pub log: Option<PathBuf>,
    /// Key `connect_timeout`, in seconds (fractions allowed); default 3 s.
    pub connect_timeout_ms: u64,
}

impl MasterConfig {
    /// The secret file of `class` inside `secret_dir`, if one is configured.
    pub fn class_secret_file(&self, class: &str) -> Option<PathBuf> {
        self.secret_dir.as_ref().map(|d| d.join(class))
    }
}

impl fmt::Debug for CacConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacConfig")
            .field("listen", &self.listen)
            .field("secret_file", &self.secret_file)
            .field("secret", &format_args!("<{} bytes>", self.secret.len()))
            .field("log", &self.log)
            .field("metrics_listen", &self.metrics_listen)
            .field("classes", &self.classes)
            .field("token_ttl", &self.token_ttl)
            .finish()
    }
}

impl fmt::Debug for CacClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacClass")
            .field("cfg", &self.cfg)
            .field("pos", &self.pos)
            .field("masters", &self.masters)
            .field("master_secret_file", &self.master_secret_file)
            .field("master_secret", &self.master_secret.as_ref().map(|s| format!("<{} bytes>", s.len())))
            .finish()
    }
}

// ---------------------------------------------------------------------------------------------
// CIDR

/// An address range such as `10.0.0.0/24`; a plain address is `/32` or `/128`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let s = s.trim();
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a.trim(), Some(p.trim())),
            None => (s, None),
        };
        let addr: IpAddr = a.parse().map_err(|_| format!("expected an address or CIDR like 10.0.0.0/24, not {s:?}"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n <= max && !p.starts_with('+') => n,
                _ => return Err(format!("bad prefix length in {s:?}: expected 0..={max}")),
            },
        };
        // `::ffff:10.0.0.0/120` is the IPv4 range 10.0.0.0/24.
        if let IpAddr::V6(v6) = addr {
            if let (Some(v4), true) = (v6.to_ipv4_mapped(), prefix >= 96) {
                return Ok(Cidr { addr: IpAddr::V4(v4), prefix: prefix - 96 });
            }
        }
        Ok(Cidr { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical_ip(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = if self.prefix == 0 { 0 } else { u32::MAX << (32 - u32::from(self.prefix)) };
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = if self.prefix == 0 { 0 } else { u128::MAX << (128 - u32::from(self.prefix)) };
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, what a dual-stack socket reports) as IPv4.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => ip,
        },
        v4 => v4,
    }
}

// ---------------------------------------------------------------------------------------------
// Addresses

/// Parse `host:port`: an IP literal (`10.0.0.1:7100`, `[::1]:7100`), or a name looked up in
/// `/etc/hosts` by this code (first match, IPv4 preferred). No DNS: static binaries have no NSS.
pub fn resolve(host_port: &str) -> Result<SocketAddr, String> {
    resolve_with(host_port, || std::fs::read_to_string("/etc/hosts").unwrap_or_default())
}

/// `resolve` against the given hosts-file text (for tests).
pub fn resolve_in(host_port: &str, hosts: &str) -> Result<SocketAddr, String> {
    resolve_with(host_port, || hosts.to_owned())
}

fn resolve_with(host_port: &str, hosts: impl FnOnce() -> String) -> Result<SocketAddr, String> {
    let s = host_port.trim();
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Ok(sa);
    }
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err(format!("expected host:port, not {s:?}"));
    };
    let port: u16 = port.parse().map_err(|_| format!("bad port in {s:?}"))?;
    if host.is_empty() {
        return Err(format!("missing host in {s:?}"));
    }
    let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    if bare.contains(':') || host.starts_with('[') {
        return Err(format!("bad address {s:?} (an IPv6 address is written [::1]:7100)"));
    }
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    if !bare.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_') {
        return Err(format!("bad host name {host:?} in {s:?}"));
    }
    match lookup_hosts(&hosts(), bare) {
        Some(ip) => Ok(SocketAddr::new(ip, port)),
        None => Err(format!(
            "cannot resolve {bare}: wugui resolves names only through /etc/hosts (static binaries have no NSS); use an IP address"
        )),
    }
}

/// The address of `name` in hosts-file text: the first IPv4 match, else the first IPv6 one.
fn lookup_hosts(hosts: &str, name: &str) -> Option<IpAddr> {
    let name = name.trim_end_matches('.');
    let mut v6 = None;
    for line in hosts.lines() {
        let line = line.split('#').next().unwrap_or("");
        let mut fields = line.split_whitespace();
        let Some(Ok(ip)) = fields.next().map(str::parse::<IpAddr>) else { continue };
        if fields.any(|n| n.trim_end_matches('.').eq_ignore_ascii_case(name)) {
            match ip {
                IpAddr::V4(_) => return Some(ip),
                IpAddr::V6(_) if v6.is_none() => v6 = Some(ip),
                IpAddr::V6(_) => {}
            }
        }
    }
    v6
}

/// Where a role's config file is: `-f FILE`, else `$WUGUI_CONF`, else `/etc/wugui/<role>.conf`.
pub fn config_path(role: &str, flag: Option<&str>) -> PathBuf {
    config_path_from(role, flag, std::env::var_os(CONF_ENV))
}

fn config_path_from(role: &str, flag: Option<&str>, env: Option<std::ffi::OsString>) -> PathBuf {
    if let Some(f) = flag.filter(|f| !f.is_empty()) {
        return PathBuf::from(f);
    }
    if let Some(e) = env.filter(|e| !e.is_empty()) {
        return PathBuf::from(e);
    }
    Path::new(DEFAULT_DIR).join(format!("{role}.conf"))
}

// ---------------------------------------------------------------------------------------------
// INI reader

struct Entry {
    key: String,
    value: String,
    line: usize,
}

struct Section {
    /// `cac`, `po`, `master`, `class`, or whatever the file says (checked by the caller).
    kind: String,
    /// The name in `[class NAME]`.
    arg: Option<String>,
    line: usize,
    entries: Vec<Entry>,
}

/// Split the text into sections. Checks the syntax only; which sections and keys are known is
/// up to each role.
fn read_ini(text: &str, file: &str) -> Result<Vec<Section>, ConfigError> {
    let mut sections: Vec<Section> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let t = raw.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        if let Some(rest) = t.strip_prefix('[') {
            let Some(inner) = rest.strip_suffix(']') else {
                return Err(ConfigError::new(file, line, format!("bad section header {t:?} (expected [name])")));
            };
            let mut words = inner.split_whitespace();
            let Some(kind) = words.next() else {
                return Err(ConfigError::new(file, line, "empty section header []"));
            };
            let arg = words.next().map(str::to_owned);
            if words.next().is_some() {
                return Err(ConfigError::new(file, line, format!("bad section header {t:?}")));
            }
            sections.push(Section { kind: kind.to_owned(), arg, line, entries: Vec::new() });
            continue;
        }
        let Some((k, v)) = t.split_once('=') else {
            return Err(ConfigError::new(file, line, format!("expected `key = value`, not {t:?}")));
        };
        let key = k.trim();
        if key.is_empty() {
            return Err(ConfigError::new(file, line, "missing key before `=`"));
        }
        let Some(sec) = sections.last_mut() else {
            return Err(ConfigError::new(file, line, format!("key {key:?} outside any section")));
        };
        sec.entries.push(Entry { key: key.to_owned(), value: v.trim().to_owned(), line });
    }
    Ok(sections)
}

/// Per-section bookkeeping: duplicate keys, and the line of each key for later messages.
struct Seen {
    keys: HashSet<String>,
}

impl Seen {
    fn new() -> Seen {
        Seen { keys: HashSet::new() }
    }

    /// Error if `e.key` was already set in this section (unless it may repeat).
    fn check(&mut self, file: &str, e: &Entry, repeatable: bool) -> Result<(), ConfigError> {
        if !repeatable && !self.keys.insert(e.key.clone()) {
            return Err(ConfigError::new(file, e.line, format!("duplicate key {:?}", e.key)));
        }
        Ok(())
    }

    fn has(&self, key: &str) -> bool {
        self.keys.contains(key)
    }
}

fn section_title(s: &Section) -> String {
    match &s.arg {
        Some(a) => format!("[{} {}]", s.kind, a),
        None => format!("[{}]", s.kind),
    }
}

/// Error at `e`'s line, prefixed with the key.
fn bad(file: &str, e: &Entry, msg: impl fmt::Display) -> ConfigError {
    ConfigError::new(file, e.line, format!("{}: {}", e.key, msg))
}

fn unknown_key(file: &str, e: &Entry, s: &Section) -> ConfigError {
    ConfigError::new(file, e.line, format!("unknown key {:?} in {}", e.key, section_title(s)))
}

fn missing(file: &str, s: &Section, key: &str) -> ConfigError {
    ConfigError::new(file, s.line, format!("{} lacks the required key {key:?}", section_title(s)))
}

/// The single `[kind]` section with no argument, refusing duplicates and arguments.
fn only_section<'a>(sections: &'a [Section], file: &str, kind: &str) -> Result<&'a Section, ConfigError> {
    let mut found: Option<&Section> = None;
    for s in sections.iter().filter(|s| s.kind == kind) {
        if s.arg.is_some() {
            return Err(ConfigError::new(file, s.line, format!("section [{kind}] takes no name")));
        }
        if found.is_some() {
            return Err(ConfigError::new(file, s.line, format!("duplicate section [{kind}]")));
        }
        found = Some(s);
    }
    found.ok_or_else(|| ConfigError::new(file, 0, format!("no [{kind}] section")))
}

fn check_sections(sections: &[Section], file: &str, allowed: &[&str], what: &str) -> Result<(), ConfigError> {
    for s in sections {
        if !allowed.contains(&s.kind.as_str()) {
            return Err(ConfigError::new(
                file,
                s.line,
                format!("unknown section {} (a {what} config has {})", section_title(s), allowed_list(allowed)),
            ));
        }
    }
    Ok(())
}

fn allowed_list(allowed: &[&str]) -> String {
    allowed
        .iter()
        .map(|k| if *k == "class" { "[class NAME]".to_owned() } else { format!("[{k}]") })
        .collect::<Vec<_>>()
        .join(" and ")
}

// ---------------------------------------------------------------------------------------------
// Value parsers (errors without the location; the caller adds it)

fn parse_addr(v: &str, allow_port0: bool) -> Result<SocketAddr, String> {
    if v.is_empty() {
        return Err("expected host:port, got nothing".into());
    }
    let a = resolve(v)?;
    if !allow_port0 && a.port() == 0 {
        return Err(format!("port 0 in {v:?} (only a listen address may use port 0)"));
    }
    Ok(a)
}

/// A comma-separated, non-empty list of addresses without repeats.
fn parse_addr_list(v: &str) -> Result<Vec<SocketAddr>, String> {
    let mut out: Vec<SocketAddr> = Vec::new();
    for item in v.split(',') {
        let item = item.trim();
        if item.is_empty() {
            return Err("empty entry in the address list".into());
        }
        let a = parse_addr(item, false)?;
        if out.contains(&a) {
            return Err(format!("{a} is listed twice"));
        }
        out.push(a);
    }
    Ok(out)
}

fn parse_cidr_list(v: &str) -> Result<Vec<Cidr>, String> {
    let mut out = Vec::new();
    for item in v.split(',') {
        let item = item.trim();
        if item.is_empty() {
            return Err("empty entry in the list".into());
        }
        out.push(Cidr::parse(item)?);
    }
    Ok(out)
}

/// A path; relative ones are taken below `base`.
fn parse_path(v: &str, base: &Path) -> Result<PathBuf, String> {
    if v.is_empty() {
        return Err("expected a path, got nothing".into());
    }
    if v.contains('\0') {
        return Err("path contains NUL".into());
    }
    let p = Path::new(v);
    Ok(if p.is_absolute() { p.to_path_buf() } else { base.join(p) })
}

/// An absolute path without `..`, trailing slashes removed.
fn parse_abs_path(v: &str) -> Result<PathBuf, String> {
    let p = Path::new(v);
    if !p.is_absolute() {
        return Err(format!("must be an absolute path, not {v:?}"));
    }
    if p.components().any(|c| c == Component::ParentDir) || v.contains('\0') {
        return Err(format!("must not contain `..`: {v:?}"));
    }
    Ok(p.components().collect())
}

fn parse_seconds_ms(v: &str) -> Result<u64, String> {
    let s: f64 = v.parse().map_err(|_| format!("expected seconds like 3 or 0.5, not {v:?}"))?;
    if !s.is_finite() || s <= 0.0 || s > 3600.0 {
        return Err(format!("{v} seconds is outside (0, 3600]"));
    }
    Ok(((s * 1000.0).round() as u64).max(1))
}

fn is_class_name(n: &str) -> bool {
    !n.is_empty()
        && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-')
        && !n.chars().all(|c| c == '.')
}

/// Read a secret: the whole file less trailing newlines, refusing an empty one.
pub fn read_secret(path: &Path) -> Result<Vec<u8>, String> {
    let mut s = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    while matches!(s.last(), Some(b'\n' | b'\r')) {
        s.pop();
    }
    if s.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    Ok(s)
}

/// The addresses of a `po_file`: one a line, `#` comment lines and blank lines skipped. Errors
/// name the po_file and its line.
fn read_po_file(path: &Path) -> Result<Vec<SocketAddr>, ConfigError> {
    let name = path.display().to_string();
    let text =
        std::fs::read_to_string(path).map_err(|e| ConfigError::new(&name, 0, format!("cannot read po_file: {e}")))?;
    let mut out: Vec<SocketAddr> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let t = raw.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let a = parse_addr(t, false).map_err(|m| ConfigError::new(&name, i + 1, m))?;
        if out.contains(&a) {
            return Err(ConfigError::new(&name, i + 1, format!("{a} is listed twice")));
        }
        out.push(a);
    }
    Ok(out)
}

fn base_dir_of(path: &Path) -> PathBuf {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if parent.is_absolute() {
        parent
    } else {
        std::env::current_dir().map(|d| d.join(&parent)).unwrap_or(parent)
    }
}

fn read_config(path: &Path) -> Result<(String, String, PathBuf), ConfigError> {
    let file = path.display().to_string();
    let text =
        std::fs::read_to_string(path).map_err(|e| ConfigError::new(&file, 0, format!("cannot read config: {e}")))?;
    Ok((text, file, base_dir_of(path)))
}

// ---------------------------------------------------------------------------------------------
// cac.conf

pub fn load_cac(path: &Path) -> Result<CacConfig, ConfigError> {
    let (text, file, base) = read_config(path)?;
    parse_cac(&text, &file, &base)
}

pub fn parse_cac(text: &str, file: &str, base_dir: &Path) -> Result<CacConfig, ConfigError> {
    let sections = read_ini(text, file)?;
    check_sections(&sections, file, &["cac", "class"], "cac")?;
    let main = only_section(&sections, file, "cac")?;

    let mut seen = Seen::new();
    let mut listen = None;
    let mut secret_file: Option<(PathBuf, usize)> = None;
    let mut log = None;
    let mut metrics_listen = None;
    let mut token_ttl = DEFAULT_TOKEN_TTL;
    for e in &main.entries {
        seen.check(file, e, false)?;
        let v = e.value.as_str();
        match e.key.as_str() {
            "listen" => listen = Some(parse_addr(v, true).map_err(|m| bad(file, e, m))?),
            "secret_file" => secret_file = Some((parse_path(v, base_dir).map_err(|m| bad(file, e, m))?, e.line)),
            "log" => log = Some(parse_path(v, base_dir).map_err(|m| bad(file, e, m))?),
            "metrics_listen" => metrics_listen = Some(parse_addr(v, true).map_err(|m| bad(file, e, m))?),
            "token_ttl" => token_ttl = parse_num(v, 1, 366 * 86400).map_err(|m| bad(file, e, m))?,
            _ => return Err(unknown_key(file, e, main)),
        }
    }
    let listen = listen.ok_or_else(|| missing(file, main, "listen"))?;
    let (secret_file, secret_line) = secret_file.ok_or_else(|| missing(file, main, "secret_file"))?;
    let secret =
        read_secret(&secret_file).map_err(|m| ConfigError::new(file, secret_line, format!("secret_file: {m}")))?;

    let mut classes: Vec<CacClass> = Vec::new();
    for s in sections.iter().filter(|s| s.kind == "class") {
        let class = parse_class(s, file, base_dir)?;
        if classes.iter().any(|c| c.cfg.name == class.cfg.name) {
            return Err(ConfigError::new(file, s.line, format!("duplicate class {:?}", class.cfg.name)));
        }
        classes.push(class);
    }
    Ok(CacConfig { listen, secret_file, secret, log, metrics_listen, classes, token_ttl })
}

fn parse_class(s: &Section, file: &str, base_dir: &Path) -> Result<CacClass, ConfigError> {
    let name = match &s.arg {
        Some(n) if is_class_name(n) => n.clone(),
        Some(n) => {
            return Err(ConfigError::new(file, s.line, format!("bad class name {n:?} (letters, digits, _ . - only)")));
        }
        None => return Err(ConfigError::new(file, s.line, "a class section needs a name: [class NAME]")),
    };
    let mut cfg = ClassCfg::new(&name);
    let mut seen = Seen::new();
    let mut pos: Vec<SocketAddr> = Vec::new();
    let mut masters = None;
    let mut master_secret = None;
    let mut master_secret_file = None;
    for e in &s.entries {
        seen.check(file, e, e.key == "exclude")?;
        let v = e.value.as_str();
        if cfg.set(&e.key, v).map_err(|m| bad(file, e, m))? {
            continue;
        }
        match e.key.as_str() {
            "po" => {
                for a in parse_addr_list(v).map_err(|m| bad(file, e, m))? {
                    add_po(&mut pos, a).map_err(|m| bad(file, e, m))?;
                }
            }
            "po_file" => {
                let p = parse_path(v, base_dir).map_err(|m| bad(file, e, m))?;
                for a in read_po_file(&p)? {
                    add_po(&mut pos, a).map_err(|m| bad(file, e, m))?;
                }
            }
            "masters" => masters = Some(parse_cidr_list(v).map_err(|m| bad(file, e, m))?),
            "master_secret_file" => {
                let p = parse_path(v, base_dir).map_err(|m| bad(file, e, m))?;
                master_secret = Some(read_secret(&p).map_err(|m| bad(file, e, m))?);
                master_secret_file = Some(p);
            }
            _ => return Err(unknown_key(file, e, s)),
        }
    }
    if cfg.dest.is_empty() {
        return Err(missing(file, s, "dest"));
    }
    if !seen.has("po") && !seen.has("po_file") {
        return Err(missing(file, s, "po (or po_file)"));
    }
    if pos.is_empty() {
        return Err(ConfigError::new(file, s.line, format!("{} lists no po", section_title(s))));
    }
    let masters = masters.ok_or_else(|| missing(file, s, "masters"))?;
    Ok(CacClass { cfg, pos, masters, master_secret_file, master_secret })
}

fn add_po(pos: &mut Vec<SocketAddr>, a: SocketAddr) -> Result<(), String> {
    if pos.contains(&a) {
        return Err(format!("po {a} is listed twice"));
    }
    pos.push(a);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// po.conf

pub fn load_po(path: &Path) -> Result<PoConfig, ConfigError> {
    let (text, file, base) = read_config(path)?;
    parse_po(&text, &file, &base)
}

pub fn parse_po(text: &str, file: &str, base_dir: &Path) -> Result<PoConfig, ConfigError> {
    let sections = read_ini(text, file)?;
    check_sections(&sections, file, &["po"], "po")?;
    let s = only_section(&sections, file, "po")?;

    let mut seen = Seen::new();
    let mut listen = None;
    let mut cac = None;
    let mut state_dir = None;
    let mut allow_dest = None;
    let mut hook_dir = None;
    let mut log = None;
    let mut max_upload_rate = 0;
    let mut max_download_rate = 0;
    let mut fsync = true;
    let mut root = None;
    let mut metrics_listen = None;
    let mut advertise = None;
    for e in &s.entries {
        seen.check(file, e, false)?;
        let v = e.value.as_str();
        let err = |m: String| bad(file, e, m);
        match e.key.as_str() {
            "listen" => listen = Some(parse_addr(v, true).map_err(err)?),
            "cac" => cac = Some(parse_addr_list(v).map_err(err)?),
            "state_dir" => state_dir = Some(parse_path(v, base_dir).map_err(err)?),
            "allow_dest" => {
                let mut list = Vec::new();
                for item in v.split(',') {
                    list.push(parse_abs_path(item.trim()).map_err(err)?);
                }
                allow_dest = Some(list);
            }
            "hook_dir" => hook_dir = Some(parse_path(v, base_dir).map_err(err)?),
            "log" => log = Some(parse_path(v, base_dir).map_err(err)?),
            "max_upload_rate" => max_upload_rate = parse_size(v).map_err(err)?,
            "max_download_rate" => max_download_rate = parse_size(v).map_err(err)?,
            "fsync" => fsync = crate::proto::class::parse_bool(v).map_err(err)?,
            "root" => root = Some(parse_abs_path(v).map_err(err)?),
            "metrics_listen" => metrics_listen = Some(parse_addr(v, true).map_err(err)?),
            "advertise" => {
                let a = parse_addr(v, false).map_err(err)?;
                if a.ip().is_unspecified() {
                    return Err(bad(file, e, format!("{a} is not an address others can reach")));
                }
                advertise = Some(a);
            }
            _ => return Err(unknown_key(file, e, s)),
        }
    }
    Ok(PoConfig {
        listen: listen.ok_or_else(|| missing(file, s, "listen"))?,
        cac: cac.ok_or_else(|| missing(file, s, "cac"))?,
        state_dir: state_dir.ok_or_else(|| missing(file, s, "state_dir"))?,
        allow_dest: allow_dest.ok_or_else(|| missing(file, s, "allow_dest"))?,
        hook_dir,
        log,
        max_upload_rate,
        max_download_rate,
        fsync,
        root,
        metrics_listen,
        advertise,
    })
}

// ---------------------------------------------------------------------------------------------
// master.conf

pub fn load_master(path: &Path) -> Result<MasterConfig, ConfigError> {
    let (text, file, base) = read_config(path)?;
    parse_master(&text, &file, &base)
}

pub fn parse_master(text: &str, file: &str, base_dir: &Path) -> Result<MasterConfig, ConfigError> {
    let sections = read_ini(text, file)?;
    check_sections(&sections, file, &["master"], "master")?;
    let s = only_section(&sections, file, "master")?;

    let mut seen = Seen::new();
    let mut cac = None;
    let mut secret_dir = None;
    let mut log = None;
    let mut connect_timeout_ms = DEFAULT_CONNECT_TIMEOUT_MS;
    for e in &s.entries {
        seen.check(file, e, false)?;
        let v = e.value.as_str();
        let err = |m: String| bad(file, e, m);
        match e.key.as_str() {
            "cac" => cac = Some(parse_addr_list(v).map_err(err)?),
            "secret_dir" => secret_dir = Some(parse_path(v, base_dir).map_err(err)?),
            "log" => log = Some(parse_path(v, base_dir).map_err(err)?),
            "connect_timeout" => connect_timeout_ms = parse_seconds_ms(v).map_err(err)?,
            _ => return Err(unknown_key(file, e, s)),
        }
    }
    Ok(MasterConfig { cac: cac.ok_or_else(|| missing(file, s, "cac"))?, secret_dir, log, connect_timeout_ms })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::class::{Publish, Quorum};
    use crate::proto::Verify;
    use std::net::{Ipv4Addr, Ipv6Addr};

    use crate::testutil::TempDir;

    const SAMPLE_CAC: &str = r"# cac.conf
[cac]
listen = 0.0.0.0:7100
# the cluster key: the same file on every CAC replica
secret_file = cluster.key
log = /var/log/wugui/cac.log

[class base1]
# host:port list (or po_file = PATH, one a line)
po = 10.0.0.11:7200, 10.0.0.12:7200
# where the tree lands on every po
dest = /home/work/data/base
# addresses (CIDR) allowed to push this class
masters = 10.0.0.0/24, 10.1.2.3
# optional: the master must also prove it knows this secret (challenge-response)
master_secret_file = base1.secret
p2p = on
# how many peers each po talks to
peers = 8
block_size = 4M
# bytes/s each sending host may use for this transfer; 0 = none
rate_limit = 10M
# md5 | crc32 | none
verify = md5
sendfile = on
retries = 3
# seconds for the whole transfer
timeout = 3600
# a name inside each po's hook_dir, never a command line
hook = reload.sh
hook_timeout = 300
exclude = \.tmp$
exclude = (^|/)cache/
# written in the dest after publish
flag_file = data.done
# together (two-phase commit) | each (a po publishes when it is READY)
publish = together
# with together: the fewest READY pos that may still commit at the timeout (a count, N%, or all)
quorum = all
# on: remove what the tree lacks at publish
mirror = off
";

    const SAMPLE_PO: &str = "# po.conf
[po]
listen = 0.0.0.0:7200
cac = 10.0.0.1:7100, 10.0.0.2:7100
state_dir = /var/lib/wugui
# dests must lie below one of these
allow_dest = /home/work/data, /data
hook_dir = /etc/wugui/hooks
log = /var/log/wugui/po.log
# caps over all transfers of this host; 0 = none
max_upload_rate = 50M
max_download_rate = 0
# optional, for demos and tests: several pos on one host, each taking every dest below its own root
root = /tmp/po3
";

    const SAMPLE_MASTER: &str = "# master.conf
[master]
cac = 10.0.0.1:7100, 10.0.0.2:7100
# per-class secrets for master_secret_file: a file named after the class
secret_dir = /etc/wugui/secrets
log = /var/log/wugui/master.log
";

    fn cac_dir() -> TempDir {
        let d = TempDir::new("config");
        std::fs::write(d.0.join("cluster.key"), "s3cret\n").unwrap();
        std::fs::write(d.0.join("base1.secret"), "m\r\n").unwrap();
        d
    }

    fn cac_err(text: &str) -> ConfigError {
        let d = cac_dir();
        parse_cac(text, "cac.conf", &d.0).unwrap_err()
    }

    /// A minimal valid cac config, then `extra` appended to its class section.
    fn cac_with(extra: &str) -> String {
        format!(
            "[cac]\nlisten = 127.0.0.1:0\nsecret_file = cluster.key\n[class c1]\ndest = /d\npo = 10.0.0.1:7200\nmasters = 10.0.0.0/8\n{extra}"
        )
    }

    #[test]
    fn sample_cac_parses() {
        let d = cac_dir();
        let c = parse_cac(SAMPLE_CAC, "cac.conf", &d.0).unwrap();
        assert_eq!(c.listen, "0.0.0.0:7100".parse().unwrap());
        assert_eq!(c.secret, b"s3cret");
        assert_eq!(c.secret_file, d.0.join("cluster.key"));
        assert_eq!(c.log, Some(PathBuf::from("/var/log/wugui/cac.log")));
        assert_eq!(c.token_ttl, 86400);
        assert_eq!(c.metrics_listen, None);
        assert_eq!(c.classes.len(), 1);
        let k = c.class("base1").unwrap();
        assert_eq!(k.pos, vec!["10.0.0.11:7200".parse().unwrap(), "10.0.0.12:7200".parse().unwrap()]);
        assert_eq!(k.masters, vec![Cidr::parse("10.0.0.0/24").unwrap(), Cidr::parse("10.1.2.3/32").unwrap()]);
        assert_eq!(k.master_secret.as_deref(), Some(&b"m"[..]));
        assert!(k.master_allowed("10.0.0.77".parse().unwrap()));
        assert!(k.master_allowed("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!k.master_allowed("10.1.2.4".parse().unwrap()));
        let cfg = &k.cfg;
        assert_eq!(cfg.name, "base1");
        assert_eq!(cfg.dest, "/home/work/data/base");
        assert!(cfg.p2p);
        assert_eq!(cfg.peers, 8);
        assert_eq!(cfg.block_size, 4 << 20);
        assert_eq!(cfg.rate_limit, 10 << 20);
        assert_eq!(cfg.verify, Verify::Md5);
        assert_eq!(cfg.hook.as_deref(), Some("reload.sh"));
        assert_eq!(cfg.exclude, vec![r"\.tmp$".to_string(), "(^|/)cache/".to_string()]);
        assert_eq!(cfg.flag_file.as_deref(), Some("data.done"));
        assert_eq!(cfg.publish, Publish::Together);
        assert_eq!(cfg.quorum, Quorum::All);
        assert!(!cfg.mirror);
        assert!(!format!("{c:?}").contains("s3cret"));
    }

    #[test]
    fn sample_po_and_master_parse() {
        let p = parse_po(SAMPLE_PO, "po.conf", Path::new("/etc/wugui")).unwrap();
        assert_eq!(p.listen, "0.0.0.0:7200".parse().unwrap());
        assert_eq!(p.cac.len(), 2);
        assert_eq!(p.allow_dest, vec![PathBuf::from("/home/work/data"), PathBuf::from("/data")]);
        assert_eq!(p.max_upload_rate, 50 << 20);
        assert_eq!(p.max_download_rate, 0);
        assert_eq!(p.root, Some(PathBuf::from("/tmp/po3")));
        assert_eq!(p.advertise_addr(), p.listen);

        let m = parse_master(SAMPLE_MASTER, "master.conf", Path::new("/etc/wugui")).unwrap();
        assert_eq!(m.cac, vec!["10.0.0.1:7100".parse().unwrap(), "10.0.0.2:7100".parse().unwrap()]);
        assert_eq!(m.connect_timeout_ms, 3000);
        assert_eq!(m.class_secret_file("base1"), Some(PathBuf::from("/etc/wugui/secrets/base1")));
        let m = parse_master("[master]\ncac = [::1]:7100\nconnect_timeout = 0.25\n", "m", Path::new("/")).unwrap();
        assert_eq!(m.cac, vec!["[::1]:7100".parse().unwrap()]);
        assert_eq!(m.connect_timeout_ms, 250);
    }

    #[test]
    fn hash_and_comma_survive_in_values() {
        let d = cac_dir();
        let text = cac_with("exclude = a#b,c\n  # a comment\nexclude = x = y\n");
        let c = parse_cac(&text, "cac.conf", &d.0).unwrap();
        assert_eq!(c.classes[0].cfg.exclude, vec!["a#b,c".to_string(), "x = y".to_string()]);
    }

    #[test]
    fn relative_po_file_and_its_errors() {
        let d = cac_dir();
        std::fs::write(d.0.join("pos.txt"), "# the pos\n10.0.0.2:7200\n\n  [::1]:7201\n").unwrap();
        let c = parse_cac(&cac_with("po_file = pos.txt\n"), "cac.conf", &d.0).unwrap();
        assert_eq!(c.classes[0].pos.len(), 3);
        assert_eq!(c.classes[0].pos[2], "[::1]:7201".parse().unwrap());

        std::fs::write(d.0.join("bad.txt"), "10.0.0.2:7200\nnot an address\n").unwrap();
        let e = parse_cac(&cac_with("po_file = bad.txt\n"), "cac.conf", &d.0).unwrap_err();
        assert_eq!(e.file, d.0.join("bad.txt").display().to_string());
        assert_eq!(e.line, 2);

        // The same po in po and po_file.
        std::fs::write(d.0.join("dup.txt"), "10.0.0.1:7200\n").unwrap();
        let e = parse_cac(&cac_with("po_file = dup.txt\n"), "cac.conf", &d.0).unwrap_err();
        assert_eq!((e.line, e.file.as_str()), (8, "cac.conf"), "{e}");

        // A po_file alone is enough.
        let text = "[cac]\nlisten = 127.0.0.1:0\nsecret_file = cluster.key\n[class c1]\ndest = /d\npo_file = pos.txt\nmasters = ::1\n";
        assert_eq!(parse_cac(text, "cac.conf", &d.0).unwrap().classes[0].pos.len(), 2);
    }

    #[test]
    fn errors_name_the_line() {
        let cases: &[(&str, usize, &str)] = &[
            // key outside a section
            ("listen = 1.2.3.4:5\n[cac]\n", 1, "outside any section"),
            // not key = value
            ("[cac]\nlisten = 127.0.0.1:0\nsecret_file = cluster.key\njunk\n", 4, "key = value"),
            // unknown key in [cac]
            ("[cac]\nlisten = 127.0.0.1:0\nsecret_file = cluster.key\nlisen = 1\n", 4, "unknown key \"lisen\""),
            // unknown section
            ("[cac]\nlisten = 127.0.0.1:0\nsecret_file = cluster.key\n\n[clas x]\n", 5, "unknown section"),
            // duplicate key
            ("[cac]\nlisten = 127.0.0.1:0\nlisten = 127.0.0.1:1\n", 3, "duplicate key"),
            // bad address
            ("[cac]\n# c\nlisten = 127.0.0.1\n", 3, "listen:"),
            // duplicate section
            ("[cac]\nlisten = 127.0.0.1:0\nsecret_file = cluster.key\n[cac]\n", 4, "duplicate section"),
            // missing secret file: the secret_file line
            ("[cac]\nlisten = 127.0.0.1:0\nsecret_file = nope.key\n", 3, "cannot read"),
            // missing required key: the section header
            ("\n[cac]\nsecret_file = cluster.key\n", 2, "\"listen\""),
            // no [cac] at all: the whole file
            ("# nothing\n", 0, "no [cac] section"),
            // bad header
            ("[cac\n", 1, "bad section header"),
        ];
        for (text, line, needle) in cases {
            let e = cac_err(text);
            assert_eq!(e.line, *line, "{text:?} gave {e}");
            assert!(e.msg.contains(needle), "{text:?} gave {e}");
        }
        let e = cac_err("# nothing\n");
        assert_eq!(e.to_string(), "cac.conf: no [cac] section");
        let e = cac_err("[cac]\nbogus = 1\n");
        assert_eq!(e.to_string(), "cac.conf:2: unknown key \"bogus\" in [cac]");
    }

    #[test]
    fn class_errors_name_the_line() {
        // The class section starts at line 4; its fixed keys take lines 5..=7, extras start at 8.
        let cases: &[(&str, usize, &str)] = &[
            ("peers = 0\n", 8, "peers:"),
            ("block_size = 10Q\n", 8, "block_size:"),
            ("exclude = (\n", 8, "exclude:"),
            ("\n\nverify = sha1\n", 10, "verify:"),
            ("colour = red\n", 8, "unknown key \"colour\" in [class c1]"),
            ("dest = /e\n", 8, "duplicate key"),
            ("masters = 10.0.0.0/33\n", 8, "duplicate key"),
            ("po_file = missing.txt\n", 0, "cannot read po_file"),
            ("master_secret_file = missing\n", 8, "master_secret_file:"),
            ("[class c1]\ndest = /x\npo = 1.2.3.4:5\nmasters = 1.2.3.4\n", 8, "duplicate class"),
            ("[class bad/name]\n", 8, "bad class name"),
            ("[class]\n", 8, "needs a name"),
            ("[class c2]\npo = 1.2.3.4:5\nmasters = 1.2.3.4\n", 8, "\"dest\""),
            ("[class c2]\ndest = /x\nmasters = 1.2.3.4\n", 8, "po"),
            ("[class c2]\ndest = /x\npo = 1.2.3.4:5\n", 8, "\"masters\""),
            ("[class c2]\ndest = /x\npo = 1.2.3.4:0\n", 10, "port 0"),
            ("[class c2]\ndest = /x\npo = 1.2.3.4:5, ,1.2.3.5:5\n", 10, "empty entry"),
            ("[class c2]\ndest = /x\npo = 1.2.3.4:5\nmasters = 10.0.0.0/33\n", 11, "prefix"),
            ("[class ..]\n", 8, "bad class name"),
        ];
        for (extra, line, needle) in cases {
            let e = cac_err(&cac_with(extra));
            assert_eq!(e.line, *line, "{extra:?} gave {e}");
            assert!(e.msg.contains(needle), "{extra:?} gave {e}");
        }
    }

    #[test]
    fn po_and_master_errors() {
        let base = "[po]\nlisten = 127.0.0.1:0\ncac = 10.0.0.1:7100\nstate_dir = st\nallow_dest = /data\n";
        let p = parse_po(base, "po.conf", Path::new("/etc/wugui")).unwrap();
        assert_eq!(p.state_dir, PathBuf::from("/etc/wugui/st"));
        let p = parse_po(&format!("{base}advertise = 127.0.0.1:7200\n"), "po.conf", Path::new("/")).unwrap();
        assert_eq!(p.advertise_addr(), "127.0.0.1:7200".parse().unwrap());
        let cases: &[(&str, usize, &str)] = &[
            ("allow_dest = data\n", 6, "duplicate key"),
            ("root = tmp/po\n", 6, "absolute"),
            ("root = /tmp/../po\n", 6, ".."),
            ("max_upload_rate = fast\n", 6, "max_upload_rate:"),
            ("advertise = 0.0.0.0:7200\n", 6, "advertise:"),
            ("cac = 10.0.0.1:7100\n", 6, "duplicate key"),
            ("[master]\n", 6, "unknown section"),
        ];
        for (extra, line, needle) in cases {
            let e = parse_po(&format!("{base}{extra}"), "po.conf", Path::new("/")).unwrap_err();
            assert_eq!(e.line, *line, "{extra:?} gave {e}");
            assert!(e.msg.contains(needle), "{extra:?} gave {e}");
        }
        let e = parse_po(
            "[po]\nlisten = 127.0.0.1:0\ncac = 1.2.3.4:5\nstate_dir = /s\nallow_dest = /a, b\n",
            "p",
            Path::new("/"),
        )
        .unwrap_err();
        assert_eq!(e.line, 5);
        let e = parse_po("[po]\nlisten = 127.0.0.1:0\n", "p", Path::new("/")).unwrap_err();
        assert_eq!(e.line, 1);

        let e = parse_master("[master]\nconnect_timeout = -1\ncac = 1.2.3.4:5\n", "m", Path::new("/")).unwrap_err();
        assert_eq!(e.line, 2);
        let e = parse_master("[master]\nsecret_dir = /s\n", "m", Path::new("/")).unwrap_err();
        assert_eq!((e.line, e.to_string()), (1, "m:1: [master] lacks the required key \"cac\"".to_string()));
    }

    #[test]
    fn load_reads_files_and_reports_unreadable() {
        let d = cac_dir();
        let p = d.0.join("cac.conf");
        std::fs::write(&p, cac_with("")).unwrap();
        let c = load_cac(&p).unwrap();
        assert_eq!(c.secret_file, d.0.join("cluster.key"));
        let e = load_cac(&d.0.join("missing.conf")).unwrap_err();
        assert_eq!(e.line, 0);
        assert!(e.to_string().starts_with(&format!("{}: cannot read config", d.0.join("missing.conf").display())));
        std::fs::write(d.0.join("empty.key"), "\n").unwrap();
        let e = parse_cac("[cac]\nlisten = 127.0.0.1:0\nsecret_file = empty.key\n", "c", &d.0).unwrap_err();
        assert_eq!(e.line, 3);
        assert!(e.msg.contains("empty"), "{e}");
    }

    #[test]
    fn cidr() {
        let c = Cidr::parse("10.0.0.0/24").unwrap();
        assert!(c.contains(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 255))));
        assert!(!c.contains(IpAddr::V4(Ipv4Addr::new(10, 0, 1, 0))));
        assert!(c.contains("::ffff:10.0.0.9".parse().unwrap()));
        assert!(!c.contains("::1".parse().unwrap()));
        let one = Cidr::parse("10.1.2.3").unwrap();
        assert_eq!(one.prefix, 32);
        assert!(one.contains("10.1.2.3".parse().unwrap()));
        assert!(!one.contains("10.1.2.4".parse().unwrap()));
        let all = Cidr::parse("0.0.0.0/0").unwrap();
        assert!(all.contains("192.168.1.1".parse().unwrap()));
        assert!(!all.contains("2001:db8::1".parse().unwrap()));
        let v6 = Cidr::parse("2001:db8::/32").unwrap();
        assert!(v6.contains("2001:db8:ffff::1".parse().unwrap()));
        assert!(!v6.contains("2001:db9::1".parse().unwrap()));
        let lo = Cidr::parse("::1").unwrap();
        assert_eq!(lo.prefix, 128);
        assert!(lo.contains(IpAddr::V6(Ipv6Addr::LOCALHOST)));
        assert!(Cidr::parse("::/0").unwrap().contains("fe80::1".parse().unwrap()));
        // A mapped range is an IPv4 range.
        let mapped = Cidr::parse("::ffff:10.0.0.0/120").unwrap();
        assert_eq!(mapped, c);
        assert!(mapped.contains("10.0.0.3".parse().unwrap()));
        for bad in ["10.0.0.0/33", "::/129", "10.0.0/8", "x", "", "10.0.0.0/", "10.0.0.0/+8"] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(c.to_string(), "10.0.0.0/24");
    }

    #[test]
    fn resolve_literals_and_hosts() {
        let hosts = "127.0.0.1 localhost\n::1 localhost ip6-localhost\n# 10.9.9.9 po1\n\
                     fd00::5 po1 # v6 first\n10.0.0.5\tpo1 po1.example\n10.0.0.6 po1\n";
        assert_eq!(resolve_in("10.0.0.1:7100", hosts), Ok("10.0.0.1:7100".parse().unwrap()));
        assert_eq!(resolve_in("[::1]:7100", hosts), Ok("[::1]:7100".parse().unwrap()));
        assert_eq!(resolve_in("localhost:1", hosts), Ok("127.0.0.1:1".parse().unwrap()));
        assert_eq!(resolve_in("PO1:7200", hosts), Ok("10.0.0.5:7200".parse().unwrap()));
        assert_eq!(resolve_in("ip6-localhost:7", hosts), Ok("[::1]:7".parse().unwrap()));
        let e = resolve_in("nowhere:7100", hosts).unwrap_err();
        assert_eq!(
            e,
            "cannot resolve nowhere: wugui resolves names only through /etc/hosts (static binaries have no NSS); use an IP address"
        );
        for bad in ["10.0.0.1", "::1:7100", "10.0.0.1:70000", ":7100", "[::1:7", "a b:1", "host:"] {
            assert!(resolve_in(bad, hosts).is_err(), "{bad}");
        }
    }

    #[test]
    fn config_path_order() {
        assert_eq!(config_path_from("po", Some("/x.conf"), Some("/y".into())), PathBuf::from("/x.conf"));
        assert_eq!(config_path_from("po", None, Some("/y".into())), PathBuf::from("/y"));
        assert_eq!(config_path_from("po", None, Some("".into())), PathBuf::from("/etc/wugui/po.conf"));
        assert_eq!(config_path_from("cac", None, None), PathBuf::from("/etc/wugui/cac.conf"));
    }

    #[test]
    fn sizes() {
        let d = cac_dir();
        let c = parse_cac(&cac_with("rate_limit = 10M\nblock_size = 64K\n"), "c", &d.0).unwrap();
        assert_eq!(c.classes[0].cfg.rate_limit, 10 * 1024 * 1024);
        assert_eq!(c.classes[0].cfg.block_size, 64 * 1024);
        let base = "[po]\nlisten = 127.0.0.1:0\ncac = 10.0.0.1:7100\nstate_dir = /s\nallow_dest = /data\n";
        let p =
            parse_po(&format!("{base}max_upload_rate = 1G\nmax_download_rate = 512k\n"), "p", Path::new("/")).unwrap();
        assert_eq!((p.max_upload_rate, p.max_download_rate), (1 << 30, 512 << 10));
    }
}
