//! `cac.conf`: the `[cac]` section, and a `[class NAME]` section for each class it serves.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use super::ini::{self, At, Section};
use super::values::{parse_addr, parse_cidr_list, parse_path, read_secret};
use super::{Cidr, ConfigError, DEFAULT_TOKEN_TTL};
use crate::proto::class::parse_num;
use crate::proto::sites::{check_label, Sites};
use crate::proto::ClassCfg;

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
    /// Each of `pos` as written (`host:port`, without its site), so that a name can be asked
    /// again.
    pub po_names: Vec<String>,
    /// Each po's site label (`po = host:port@site`, or a po_file's second column); `""`:
    /// unlabelled, the master's site.
    pub sites: Vec<String>,
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

// The secrets never reach a log line.
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
            .field("sites", &self.sites)
            .field("masters", &self.masters)
            .field("master_secret_file", &self.master_secret_file)
            .field("master_secret", &self.master_secret.as_ref().map(|s| format!("<{} bytes>", s.len())))
            .finish()
    }
}

pub fn load_cac(path: &Path) -> Result<CacConfig, ConfigError> {
    ini::load(path, parse_cac)
}

pub fn parse_cac(text: &str, file: &str, base_dir: &Path) -> Result<CacConfig, ConfigError> {
    let sections = ini::read_ini(text, file, &["cac", "class"])?;
    let main = ini::only_section(&sections, file, "cac")?;

    let mut listen = None;
    let mut secret_file: Option<(PathBuf, usize)> = None;
    let mut log = None;
    let mut metrics_listen = None;
    let mut token_ttl = DEFAULT_TOKEN_TTL;
    main.read_keys(file, &[], |k| {
        let v = k.value();
        match k.name() {
            "listen" => listen = Some(parse_addr(v, true).at(k)?),
            "secret_file" => secret_file = Some((parse_path(v, base_dir).at(k)?, k.line())),
            "log" => log = Some(parse_path(v, base_dir).at(k)?),
            "metrics_listen" => metrics_listen = Some(parse_addr(v, true).at(k)?),
            "token_ttl" => token_ttl = parse_num(v, 1, 366 * 86400).at(k)?,
            _ => return Err(k.unknown()),
        }
        Ok(())
    })?;
    let listen = listen.ok_or_else(|| main.missing(file, "listen"))?;
    let (secret_file, secret_line) = secret_file.ok_or_else(|| main.missing(file, "secret_file"))?;
    let secret =
        read_secret(&secret_file).map_err(|m| ConfigError::new(file, secret_line, format!("secret_file: {m}")))?;

    let mut classes: Vec<CacClass> = Vec::new();
    for s in sections.iter().filter(|s| s.kind == "class") {
        let class = parse_class(s, file, base_dir)?;
        if classes.iter().any(|c| c.cfg.name == class.cfg.name) {
            return Err(s.error(file, format!("duplicate class {:?}", class.cfg.name)));
        }
        classes.push(class);
    }
    Ok(CacConfig { listen, secret_file, secret, log, metrics_listen, classes, token_ttl })
}

fn parse_class(s: &Section, file: &str, base_dir: &Path) -> Result<CacClass, ConfigError> {
    let name = match &s.arg {
        Some(n) if is_class_name(n) => n.clone(),
        Some(n) => return Err(s.error(file, format!("bad class name {n:?} (letters, digits, _ . - only)"))),
        None => return Err(s.error(file, "a class section needs a name: [class NAME]")),
    };
    let mut cfg = ClassCfg::new(&name);
    let mut pos: Vec<SocketAddr> = Vec::new();
    let mut po_names: Vec<String> = Vec::new();
    let mut sites: Vec<String> = Vec::new();
    let mut masters = None;
    let mut master_secret = None;
    let mut master_secret_file = None;
    let seen = s.read_keys(file, &["exclude"], |k| {
        let v = k.value();
        if k.name() == "dest" {
            normalised_dest(v).at(k)?;
        }
        if cfg.set(k.name(), v).at(k)? {
            return Ok(());
        }
        match k.name() {
            "po" => {
                for item in v.split(',') {
                    let (name, a, site) = parse_po(item.trim()).at(k)?;
                    add_po(&mut pos, a).at(k)?;
                    po_names.push(name);
                    sites.push(site);
                }
            }
            "po_file" => {
                for (name, a, site) in read_po_file(&parse_path(v, base_dir).at(k)?)? {
                    add_po(&mut pos, a).at(k)?;
                    po_names.push(name);
                    sites.push(site);
                }
            }
            "masters" => masters = Some(parse_cidr_list(v).at(k)?),
            "master_secret_file" => {
                let p = parse_path(v, base_dir).at(k)?;
                master_secret = Some(read_secret(&p).at(k)?);
                master_secret_file = Some(p);
            }
            _ => return Err(k.unknown()),
        }
        Ok(())
    })?;
    if cfg.dest.is_empty() {
        return Err(s.missing(file, "dest"));
    }
    if !seen.has("po") && !seen.has("po_file") {
        return Err(s.missing(file, "po (or po_file)"));
    }
    if pos.is_empty() {
        return Err(s.error(file, format!("{} lists no po", s.title())));
    }
    let masters = masters.ok_or_else(|| s.missing(file, "masters"))?;
    Sites::from_labels(&sites).map_err(|e| s.error(file, format!("{}: {e}", s.title())))?;
    Ok(CacClass { cfg, pos, po_names, sites, masters, master_secret_file, master_secret })
}

/// A dest names one directory one way: no `.`, `..` or empty components (a trailing `/` is
/// fine), so the po's `allow_dest` check and the operator read it alike.
fn normalised_dest(v: &str) -> Result<(), String> {
    let inner = v.strip_prefix('/').unwrap_or(v).trim_end_matches('/');
    match inner.split('/').find(|c| matches!(*c, "" | "." | "..")) {
        Some("..") => Err(format!("must not contain `..`: {v:?}")),
        Some(_) if !inner.is_empty() => Err(format!("not normalised (no `.` or `//` in it): {v:?}")),
        _ => Ok(()),
    }
}

fn is_class_name(n: &str) -> bool {
    !n.is_empty()
        && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-')
        && !n.chars().all(|c| c == '.')
}

fn add_po(pos: &mut Vec<SocketAddr>, a: SocketAddr) -> Result<(), String> {
    if pos.contains(&a) {
        return Err(format!("po {a} is listed twice"));
    }
    pos.push(a);
    Ok(())
}

/// One po of a class: `host:port` or `host:port@site` (an IPv6 literal in brackets, as
/// `[::1]:7200@bj`): the address as written, the address, and the site label (`""`: none).
fn parse_po(item: &str) -> Result<(String, SocketAddr, String), String> {
    if item.is_empty() {
        return Err("empty entry in the address list".into());
    }
    let (addr, site) = match item.rsplit_once('@') {
        Some((a, s)) => {
            check_label(s).map_err(|e| format!("po {item:?}: {e}"))?;
            (a.trim_end(), s)
        }
        None => (item, ""),
    };
    Ok((addr.to_owned(), parse_addr(addr, false)?, site.to_owned()))
}

/// The pos of a `po_file`: one a line, `host:port` and an optional site label after white
/// space (or `host:port@site`); `#` comment lines and blank lines skipped. Errors name the
/// po_file and its line.
fn read_po_file(path: &Path) -> Result<Vec<(String, SocketAddr, String)>, ConfigError> {
    let name = path.display().to_string();
    let text =
        std::fs::read_to_string(path).map_err(|e| ConfigError::new(&name, 0, format!("cannot read po_file: {e}")))?;
    let mut out: Vec<(String, SocketAddr, String)> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let t = raw.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let err = |m: String| ConfigError::new(&name, i + 1, m);
        let mut cols = t.split_whitespace();
        let (first, site) = (cols.next().unwrap_or(""), cols.next());
        if cols.next().is_some() {
            return Err(err(format!("expected `host:port [site]`, not {t:?}")));
        }
        let (po, a, mut label) = parse_po(first).map_err(err)?;
        if let Some(site) = site {
            if !label.is_empty() {
                return Err(err(format!("{t:?} names its site twice")));
            }
            check_label(site).map_err(|e| err(format!("po {po:?}: {e}")))?;
            label = site.to_owned();
        }
        if out.iter().any(|(_, b, _)| *b == a) {
            return Err(err(format!("{a} is listed twice")));
        }
        out.push((po, a, label));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::class::{Publish, Quorum};
    use crate::proto::Verify;
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
    fn site_labels_in_po_and_po_file() {
        let d = cac_dir();
        let head = "[cac]\nlisten = 127.0.0.1:0\nsecret_file = cluster.key\n[class c1]\ndest = /d\nmasters = ::1\n";
        let text = format!(
            "{head}po = 10.1.0.5:7200@bj, 10.2.0.7:7200@sh , [::1]:7201@bj, 10.0.0.9:7200, localhost:7202@sh\n"
        );
        let c = parse_cac(&text, "cac.conf", &d.0).unwrap();
        let k = &c.classes[0];
        assert_eq!(k.sites, ["bj", "sh", "bj", "", "sh"]);
        // A name is kept as written, without its label, so that it can be asked again.
        assert_eq!(k.po_names, ["10.1.0.5:7200", "10.2.0.7:7200", "[::1]:7201", "10.0.0.9:7200", "localhost:7202"]);
        assert_eq!(k.pos[2], "[::1]:7201".parse().unwrap());
        assert!(k.pos[4].ip().is_loopback() && k.pos[4].port() == 7202);

        // A po_file: a second column, or host:port@site; comments and blank lines as before.
        std::fs::write(d.0.join("pos.txt"), "# pos\n10.0.0.2:7200   bj\n\n10.0.0.3:7200@sh\n[::1]:7202\n").unwrap();
        let c = parse_cac(&format!("{head}po_file = pos.txt\npo = 10.0.0.4:7200@bj\n"), "cac.conf", &d.0).unwrap();
        assert_eq!(c.classes[0].sites, ["bj", "sh", "", "bj"]);

        // Bad labels, in po: the line of the key; in a po_file: the file's line.
        for (po, needle) in [
            ("10.0.0.1:7200@", "1 to 32"),
            ("10.0.0.1:7200@b j", "letters, digits"),
            ("10.0.0.1:7200@master", "reserved"),
            ("10.0.0.1:7200@unknown", "reserved"),
            (&format!("10.0.0.1:7200@{}", "x".repeat(33)), "1 to 32"),
            ("10.0.0.1@bj", "10.0.0.1"),
        ] {
            let e = parse_cac(&format!("{head}po = {po}\n"), "cac.conf", &d.0).unwrap_err();
            assert_eq!(e.line, 7, "{po}: {e}");
            assert!(e.msg.contains(needle), "{po}: {e}");
        }
        for (line, needle) in [
            ("10.0.0.2:7200 b/j", "letters, digits"),
            ("10.0.0.2:7200@bj sh", "names its site twice"),
            ("10.0.0.2:7200 bj sh", "host:port [site]"),
        ] {
            std::fs::write(d.0.join("bad.txt"), format!("10.0.0.3:7200 ok\n{line}\n")).unwrap();
            let e = parse_cac(&format!("{head}po_file = bad.txt\n"), "cac.conf", &d.0).unwrap_err();
            assert_eq!((e.line, e.file.clone()), (2, d.0.join("bad.txt").display().to_string()), "{line}: {e}");
            assert!(e.msg.contains(needle), "{line}: {e}");
        }
        // At most 63 labels besides the master's site.
        let many: Vec<String> = (1..=64).map(|i| format!("10.0.1.{i}:7200@s{i}")).collect();
        let e = parse_cac(&format!("{head}po = {}\n", many.join(",")), "cac.conf", &d.0).unwrap_err();
        assert!(e.msg.contains("more than 63 site labels"), "{e}");
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
            ("[class c2]\ndest = /x/../etc\n", 9, "must not contain `..`"),
            ("[class c2]\ndest = /x//y\n", 9, "not normalised"),
            ("[class c2]\ndest = /x/./y/\n", 9, "not normalised"),
        ];
        for (extra, line, needle) in cases {
            let e = cac_err(&cac_with(extra));
            assert_eq!(e.line, *line, "{extra:?} gave {e}");
            assert!(e.msg.contains(needle), "{extra:?} gave {e}");
        }
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
    fn sizes() {
        let d = cac_dir();
        let c = parse_cac(&cac_with("rate_limit = 10M\nblock_size = 64K\n"), "c", &d.0).unwrap();
        assert_eq!(c.classes[0].cfg.rate_limit, 10 * 1024 * 1024);
        assert_eq!(c.classes[0].cfg.block_size, 64 * 1024);
    }
}
