//! `master.conf`: the one `[master]` section.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::ini::{self, At};
use super::values::{parse_addr_list, parse_path, parse_seconds_ms};
use super::{ConfigError, DEFAULT_CONNECT_TIMEOUT_MS};

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

pub fn load_master(path: &Path) -> Result<MasterConfig, ConfigError> {
    ini::load(path, parse_master)
}

pub fn parse_master(text: &str, file: &str, base_dir: &Path) -> Result<MasterConfig, ConfigError> {
    let s = ini::read_single(text, file, "master")?;
    let mut cac = None;
    let mut secret_dir = None;
    let mut log = None;
    let mut connect_timeout_ms = DEFAULT_CONNECT_TIMEOUT_MS;
    s.read_keys(file, &[], |k| {
        let v = k.value();
        match k.name() {
            "cac" => cac = Some(parse_addr_list(v).at(k)?),
            "secret_dir" => secret_dir = Some(parse_path(v, base_dir).at(k)?),
            "log" => log = Some(parse_path(v, base_dir).at(k)?),
            "connect_timeout" => connect_timeout_ms = parse_seconds_ms(v).at(k)?,
            _ => return Err(k.unknown()),
        }
        Ok(())
    })?;
    Ok(MasterConfig { cac: cac.ok_or_else(|| s.missing(file, "cac"))?, secret_dir, log, connect_timeout_ms })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE_MASTER: &str = "# master.conf
[master]
cac = 10.0.0.1:7100, 10.0.0.2:7100
# per-class secrets for master_secret_file: a file named after the class
secret_dir = /etc/wugui/secrets
log = /var/log/wugui/master.log
";

    #[test]
    fn sample_master_parses() {
        let m = parse_master(SAMPLE_MASTER, "master.conf", Path::new("/etc/wugui")).unwrap();
        assert_eq!(m.cac, vec!["10.0.0.1:7100".parse().unwrap(), "10.0.0.2:7100".parse().unwrap()]);
        assert_eq!(m.connect_timeout_ms, 3000);
        assert_eq!(m.class_secret_file("base1"), Some(PathBuf::from("/etc/wugui/secrets/base1")));
        let m = parse_master("[master]\ncac = [::1]:7100\nconnect_timeout = 0.25\n", "m", Path::new("/")).unwrap();
        assert_eq!(m.cac, vec!["[::1]:7100".parse().unwrap()]);
        assert_eq!(m.connect_timeout_ms, 250);
    }

    #[test]
    fn master_errors() {
        let e = parse_master("[master]\nconnect_timeout = -1\ncac = 1.2.3.4:5\n", "m", Path::new("/")).unwrap_err();
        assert_eq!(e.line, 2);
        let e = parse_master("[master]\nsecret_dir = /s\n", "m", Path::new("/")).unwrap_err();
        assert_eq!((e.line, e.to_string()), (1, "m:1: [master] lacks the required key \"cac\"".to_string()));
    }
}
