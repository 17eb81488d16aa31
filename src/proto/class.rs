//! A class's transfer settings: what the CAC hands to the master and to every po.
//!
//! One parser (`ClassCfg::set`) serves both the INI file on the CAC and the key/value pairs on
//! the wire, so a value means the same thing wherever it is read.

use std::fmt;

pub use super::attrs::{Chmod, Owner};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verify {
    None,
    Crc32,
    Md5,
    /// The block digest (BLAKE3): cryptographic and faster than MD5.
    Blake3,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Publish {
    /// Two-phase: publish on COMMIT.
    Together,
    /// Each po publishes as soon as it holds everything.
    Each,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quorum {
    All,
    Count(u32),
    Percent(u32),
}

impl Quorum {
    /// How many READY pos out of `n` may still commit at the timeout.
    pub fn needed(self, n: usize) -> usize {
        match self {
            Quorum::All => n,
            Quorum::Count(c) => (c as usize).min(n),
            Quorum::Percent(p) => (n * p as usize).div_ceil(100),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassCfg {
    pub name: String,
    pub dest: String,
    pub p2p: bool,
    pub peers: u32,
    /// With `p2p`: the blocks every po needs go down pipelined chains (issue 16); off, every
    /// block move is the master's push order.
    pub chains: bool,
    /// Bytes; 0 = auto (`auto_block_size`).
    pub block_size: u32,
    /// Bytes/s per sending host and transfer; 0 = none.
    pub rate_limit: u64,
    pub verify: Verify,
    pub sendfile: bool,
    pub retries: u32,
    /// Seconds for the whole transfer.
    pub timeout: u64,
    pub hook: Option<String>,
    pub hook_timeout: u64,
    pub exclude: Vec<String>,
    pub flag_file: Option<String>,
    pub publish: Publish,
    pub quorum: Quorum,
    pub mirror: bool,
    /// Incremental transfer: a po keeps the blocks its published copy already has.
    pub delta: bool,
    /// Keep setuid, setgid and sticky bits of the pushed modes (default off: dropped, since
    /// a po runs as root and a master must not plant setuid-root programs).
    pub keep_special_bits: bool,
    /// Who owns what a po publishes (`owner = root|keep|USER:GROUP`, default root).
    pub owner: Owner,
    /// Mode changes applied after the special bits rule (`chmod = u+rwX,go-w`; default none).
    pub chmod: Chmod,
    /// Run the hook after a push that changed nothing on a po too (default off: an unchanged
    /// tree publishes nothing, so there is nothing new to act on).
    pub hook_on_unchanged: bool,
    /// Canary waves: commit this many pos first, the rest only if all of them succeed
    /// (0: off; `masterwugui --canary K` overrides it).
    pub canary: u32,
    /// Seconds a po may say nothing (not even the answer to a ping) while it is sent blocks or
    /// is ready, before the master counts it lost (0: wait for `timeout`).
    pub silent_timeout: u64,
}

/// The default `silent_timeout`: a po answers a ping at once (its long disk work runs off its
/// loop), so a minute of silence is a po that is stopped, hung or cut off.
pub const SILENT_TIMEOUT: u64 = 60;

impl ClassCfg {
    /// The checksum every block of this class is checked against on a po. With `p2p = on`,
    /// blocks travel between pos, and a po could forge a CRC32 (or spend MD5's cost), so the
    /// block digest (BLAKE3) is used whatever `verify` says; `verify` rules the master's links.
    pub fn block_check(&self) -> Verify {
        if self.p2p {
            Verify::Blake3
        } else {
            self.verify
        }
    }

    pub fn new(name: &str) -> ClassCfg {
        ClassCfg {
            name: name.to_owned(),
            dest: String::new(),
            p2p: false,
            peers: 8,
            chains: true,
            block_size: 0,
            rate_limit: 0,
            verify: Verify::Md5,
            sendfile: true,
            retries: 3,
            timeout: 3600,
            hook: None,
            hook_timeout: 300,
            exclude: Vec::new(),
            flag_file: None,
            publish: Publish::Together,
            quorum: Quorum::All,
            mirror: false,
            delta: true,
            keep_special_bits: false,
            owner: Owner::Po,
            chmod: Chmod::default(),
            hook_on_unchanged: false,
            canary: 0,
            silent_timeout: SILENT_TIMEOUT,
        }
    }

    /// Set one key. `Ok(false)`: the key is not a transfer setting (the caller may know it).
    pub fn set(&mut self, key: &str, value: &str) -> Result<bool, String> {
        let v = value.trim();
        match key {
            "dest" => {
                if !v.starts_with('/') {
                    return Err(format!("dest must be an absolute path, not {v:?}"));
                }
                let d = v.trim_end_matches('/');
                if d.ends_with(char::is_whitespace) {
                    // "/a /" would be "/a " here and "/a" once trimmed again on a po.
                    return Err(format!("dest {v:?} has white space before a trailing /"));
                }
                if d.is_empty() {
                    return Err("dest must not be /".into());
                }
                self.dest = d.to_owned();
            }
            "p2p" => self.p2p = parse_bool(v)?,
            "peers" => self.peers = parse_num(v, 1, 64)? as u32,
            "chains" => self.chains = parse_bool(v)?,
            "block_size" if v == "auto" => self.block_size = 0,
            "block_size" => {
                let b = parse_size(v)?;
                if !(4096..=super::wire::MAX_BLOCK as u64).contains(&b) {
                    return Err(format!("block_size must be between 4K and 64M, not {v}"));
                }
                self.block_size = b as u32;
            }
            "rate_limit" => self.rate_limit = parse_size(v)?,
            "verify" => {
                self.verify = match v {
                    "md5" => Verify::Md5,
                    "crc32" => Verify::Crc32,
                    "none" => Verify::None,
                    "blake3" => Verify::Blake3,
                    _ => return Err(format!("verify must be md5, blake3, crc32 or none, not {v:?}")),
                }
            }
            "sendfile" => self.sendfile = parse_bool(v)?,
            "retries" => self.retries = parse_num(v, 0, 100)? as u32,
            "timeout" => self.timeout = parse_num(v, 1, 365 * 86400)?,
            "hook" => {
                self.hook = if v.is_empty() {
                    None
                } else if v.contains('/') || v == "." || v == ".." || v.contains('\0') {
                    return Err(format!("hook must be a plain file name inside hook_dir, not {v:?}"));
                } else {
                    Some(v.to_owned())
                }
            }
            "hook_timeout" => self.hook_timeout = parse_num(v, 1, 86400)?,
            "exclude" => {
                regex::bytes::Regex::new(v).map_err(|e| format!("bad exclude regex {v:?}: {e}"))?;
                self.exclude.push(v.to_owned());
            }
            "flag_file" => {
                self.flag_file = if v.is_empty() {
                    None
                } else if v.contains('/') || v == "." || v == ".." {
                    return Err(format!("flag_file must be a plain file name, not {v:?}"));
                } else {
                    Some(v.to_owned())
                }
            }
            "publish" => {
                self.publish = match v {
                    "together" => Publish::Together,
                    "each" => Publish::Each,
                    _ => return Err(format!("publish must be together or each, not {v:?}")),
                }
            }
            "quorum" => {
                self.quorum = if v == "all" {
                    Quorum::All
                } else if let Some(p) = v.strip_suffix('%') {
                    Quorum::Percent(parse_num(p, 0, 100)? as u32)
                } else {
                    Quorum::Count(parse_num(v, 0, 1_000_000)? as u32)
                }
            }
            "mirror" => self.mirror = parse_bool(v)?,
            "delta" => self.delta = parse_bool(v)?,
            "keep_special_bits" => self.keep_special_bits = parse_bool(v)?,
            "hook_on_unchanged" => self.hook_on_unchanged = parse_bool(v)?,
            "canary" => self.canary = parse_num(v, 0, 1_000_000)? as u32,
            "silent_timeout" => {
                self.silent_timeout = parse_num(v, 0, 86_400)?;
                if (1..3).contains(&self.silent_timeout) {
                    return Err("silent_timeout must be 0 (off) or at least 3 seconds".into());
                }
            }
            "owner" => self.owner = Owner::parse(v)?,
            "chmod" => self.chmod = Chmod::parse(v)?,
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Key/value pairs that rebuild this config through `set`.
    pub fn to_pairs(&self) -> Vec<(String, String)> {
        let mut p: Vec<(String, String)> = vec![
            ("dest".into(), self.dest.clone()),
            ("p2p".into(), onoff(self.p2p)),
            ("peers".into(), self.peers.to_string()),
            ("chains".into(), onoff(self.chains)),
            ("block_size".into(), if self.block_size == 0 { "auto".into() } else { self.block_size.to_string() }),
            ("rate_limit".into(), self.rate_limit.to_string()),
            ("verify".into(), self.verify.to_string()),
            ("sendfile".into(), onoff(self.sendfile)),
            ("retries".into(), self.retries.to_string()),
            ("timeout".into(), self.timeout.to_string()),
            ("hook".into(), self.hook.clone().unwrap_or_default()),
            ("hook_timeout".into(), self.hook_timeout.to_string()),
            ("flag_file".into(), self.flag_file.clone().unwrap_or_default()),
            ("publish".into(), if self.publish == Publish::Each { "each" } else { "together" }.into()),
            ("quorum".into(), self.quorum.to_string()),
            ("mirror".into(), onoff(self.mirror)),
            ("delta".into(), onoff(self.delta)),
        ];
        // Only when on: the default travels as before, so pos that predate the key accept it.
        if self.keep_special_bits {
            p.push(("keep_special_bits".into(), onoff(true)));
        }
        if self.hook_on_unchanged {
            p.push(("hook_on_unchanged".into(), onoff(true)));
        }
        if self.canary > 0 {
            p.push(("canary".into(), self.canary.to_string()));
        }
        if self.silent_timeout != SILENT_TIMEOUT {
            p.push(("silent_timeout".into(), self.silent_timeout.to_string()));
        }
        if self.owner != Owner::Po {
            p.push(("owner".into(), self.owner.to_string()));
        }
        if !self.chmod.is_empty() {
            p.push(("chmod".into(), self.chmod.to_string()));
        }
        p.extend(self.exclude.iter().map(|e| ("exclude".to_string(), e.clone())));
        p
    }

    pub fn from_pairs(name: &str, pairs: &[(String, String)]) -> Result<ClassCfg, String> {
        let mut c = ClassCfg::new(name);
        for (k, v) in pairs {
            if !c.set(k, v)? {
                return Err(format!("unknown class key {k:?}"));
            }
        }
        if c.dest.is_empty() {
            return Err("class has no dest".into());
        }
        Ok(c)
    }
}

fn onoff(b: bool) -> String {
    if b { "on" } else { "off" }.into()
}

impl fmt::Display for Verify {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verify::None => "none",
            Verify::Crc32 => "crc32",
            Verify::Md5 => "md5",
            Verify::Blake3 => "blake3",
        })
    }
}

impl fmt::Display for Quorum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Quorum::All => f.write_str("all"),
            Quorum::Count(c) => write!(f, "{c}"),
            Quorum::Percent(p) => write!(f, "{p}%"),
        }
    }
}

/// The block size for a tree of `bytes` when the class says `auto`: about 512 blocks, so a
/// swarm pipelines well, within 256 KiB..16 MiB, so per-block costs stay small.
pub fn auto_block_size(bytes: u64) -> u32 {
    auto_block_size_for(bytes, false)
}

/// `block_size = auto` for a tree of `bytes`: 1/512 of it (256 KiB..16 MiB); with chains
/// (`p2p` and `chains`), 1/2048 (64 KiB..16 MiB), since a block is forwarded only once
/// verified and the pipeline's fill costs N·K blocks' time.
pub fn auto_block_size_for(bytes: u64, chains: bool) -> u32 {
    match chains {
        false => (bytes / 512).next_power_of_two().clamp(256 << 10, 16 << 20) as u32,
        true => (bytes / 2048).next_power_of_two().clamp(64 << 10, 16 << 20) as u32,
    }
}

pub fn parse_bool(v: &str) -> Result<bool, String> {
    match v {
        "on" | "yes" | "true" | "1" => Ok(true),
        "off" | "no" | "false" | "0" => Ok(false),
        _ => Err(format!("expected on or off, not {v:?}")),
    }
}

pub fn parse_num(v: &str, min: u64, max: u64) -> Result<u64, String> {
    let n: u64 = v.parse().map_err(|_| format!("expected a whole number, not {v:?}"))?;
    if n < min || n > max {
        return Err(format!("{n} is outside {min}..={max}"));
    }
    Ok(n)
}

/// Plain bytes, or a K, M or G suffix in powers of 2: `10M` is 10 MiB.
pub fn parse_size(v: &str) -> Result<u64, String> {
    let v = v.trim();
    let (num, mult) = match v.chars().last() {
        Some('K' | 'k') => (&v[..v.len() - 1], 1u64 << 10),
        Some('M' | 'm') => (&v[..v.len() - 1], 1 << 20),
        Some('G' | 'g') => (&v[..v.len() - 1], 1 << 30),
        _ => (v, 1),
    };
    let n: u64 = num.trim().parse().map_err(|_| format!("expected a size like 4096, 64K, 10M or 1G, not {v:?}"))?;
    n.checked_mul(mult).ok_or_else(|| format!("size {v:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_round_trip() {
        let mut c = ClassCfg::new("base1");
        for (k, v) in [
            ("dest", "/data/x/"),
            ("block_size", "1M"),
            ("exclude", r"\.tmp$"),
            ("exclude", "#a,b"),
            ("quorum", "50%"),
            ("hook", "reload.sh"),
        ] {
            assert!(c.set(k, v).unwrap());
        }
        assert_eq!(c.dest, "/data/x");
        let back = ClassCfg::from_pairs("base1", &c.to_pairs()).unwrap();
        assert_eq!(back, c);
        assert!(!c.keep_special_bits && !c.to_pairs().iter().any(|(k, _)| k == "keep_special_bits"));
        assert!(c.set("keep_special_bits", "on").unwrap());
        let back = ClassCfg::from_pairs("base1", &c.to_pairs()).unwrap();
        assert!(back.keep_special_bits);
        assert_eq!(back, c);
        assert!(!c.to_pairs().iter().any(|(k, _)| k == "hook_on_unchanged"));
        assert!(c.set("hook_on_unchanged", "on").unwrap());
        let back = ClassCfg::from_pairs("base1", &c.to_pairs()).unwrap();
        assert!(back.hook_on_unchanged);
        assert_eq!(back, c);
        assert!(c.set("canary", "2").unwrap());
        assert_eq!(ClassCfg::from_pairs("base1", &c.to_pairs()).unwrap().canary, 2);
        assert!(c.set("canary", "x").is_err());
        assert_eq!(c.silent_timeout, SILENT_TIMEOUT);
        assert!(c.set("silent_timeout", "2").is_err(), "a limit below the ping cadence");
        assert!(c.set("silent_timeout", "0").unwrap());
        assert_eq!(ClassCfg::from_pairs("base1", &c.to_pairs()).unwrap().silent_timeout, 0);
        assert!(c.set("silent_timeout", "90").unwrap());
        assert_eq!(ClassCfg::from_pairs("base1", &c.to_pairs()).unwrap().silent_timeout, 90);
    }

    #[test]
    fn bad_values_are_refused() {
        let mut c = ClassCfg::new("x");
        assert!(c.set("hook", "../bin/sh").is_err());
        assert!(c.set("block_size", "1").is_err());
        assert!(c.set("verify", "sha1").is_err());
        assert!(c.set("dest", "rel/path").is_err());
        assert!(c.set("dest", "/a /").is_err(), "found by the config fuzz target");
        assert!(c.set("exclude", "(").is_err());
        assert_eq!(c.set("nonsense", "1"), Ok(false));
        assert_eq!(parse_size("10M"), Ok(10 << 20));
        assert_eq!(Quorum::Percent(50).needed(3), 2);
        assert_eq!(auto_block_size(64 << 20), 256 << 10);
        assert_eq!(auto_block_size_for(64 << 20, true), 64 << 10);
        assert_eq!(auto_block_size_for(1 << 30, true), 512 << 10);
        assert_eq!(auto_block_size_for(200 << 30, true), 16 << 20);
        // Never more blocks than a manifest may have.
        let most = crate::proto::manifest::MAX_BLOCKS * (16 << 20);
        assert!(most / auto_block_size_for(most, true) as u64 <= crate::proto::manifest::MAX_BLOCKS);
        assert_eq!(auto_block_size(1 << 30), 2 << 20);
        assert_eq!(auto_block_size(200 << 30), 16 << 20);
        assert!(c.set("block_size", "auto").is_ok() && c.block_size == 0);
    }
}
