//! The config files of the three roles: hand-parsed INI whose every error names `file:line`.
//!
//! Syntax: `[section]` headers, one `key = value` a line (split at the first `=`, both sides
//! trimmed), blank lines, and comment lines whose first non-blank character is `#`. Nothing else
//! is a comment: a `#` or `,` inside a value is kept, since exclude regexes may hold both.
//!
//! Addresses are `host:port`, where host is an IP literal (`10.0.0.1`, `[::1]`) or a name that
//! `crate::dns` looks up (`/etc/hosts`, then DNS; static binaries have no NSS). Names are looked
//! up each time a file is loaded: at start and on every reload. Relative file paths
//! (`secret_file`, `po_file`, `log`, `state_dir`, ...) are resolved against the directory of
//! the config file, so a daemon finds them whatever its working directory.
//!
//! `ini` reads the syntax and words the errors, `values` and `addr` parse single values, and
//! `cac`, `po` and `master` each know one role's sections and keys.

mod addr;
mod cac;
mod ini;
mod master;
mod po;
mod values;

use std::fmt;
use std::path::{Path, PathBuf};

pub use crate::proto::cidr::Cidr;
pub use addr::{resolve, resolve_in};
pub use cac::{load_cac, parse_cac, CacClass, CacConfig};
pub use master::{load_master, parse_master, MasterConfig};
pub use po::{load_po, parse_po, PoConfig};
pub use values::read_secret;

/// Where the default config files live: `/etc/wugui/<role>.conf`.
pub const DEFAULT_DIR: &str = "/etc/wugui";
/// The environment variable naming a config file (below `-f`, above the default).
pub const CONF_ENV: &str = "WUGUI_CONF";
pub const DEFAULT_TOKEN_TTL: u64 = 86400;
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 3000;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_path_order() {
        assert_eq!(config_path_from("po", Some("/x.conf"), Some("/y".into())), PathBuf::from("/x.conf"));
        assert_eq!(config_path_from("po", None, Some("/y".into())), PathBuf::from("/y"));
        assert_eq!(config_path_from("po", None, Some("".into())), PathBuf::from("/etc/wugui/po.conf"));
        assert_eq!(config_path_from("cac", None, None), PathBuf::from("/etc/wugui/cac.conf"));
    }
}
