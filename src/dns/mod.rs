//! Host names to addresses without glibc's NSS (the binaries are static): `/etc/hosts` first,
//! then DNS as `/etc/resolv.conf` says, as the system resolver does.
//!
//! - `msg`: the DNS message codec. Pure and bounds-checked: every byte from the network is
//!   hostile.
//! - `resolv_conf`: the resolver file's `nameserver`, `search`, `domain` and `options` lines.
//! - `hosts`: the hosts file.
//! - `resolve`: the I/O. UDP queries (TCP after a truncated answer), a bounded wait, and a
//!   process-wide cache that keeps answers for their TTL.
//!
//! Test-only: `WUGUI_RESOLV_CONF` names the resolver file to read instead of `/etc/resolv.conf`,
//! and only in that file may a nameserver carry a port (`nameserver 127.0.0.1:5353`).

pub mod hosts;
pub mod msg;
pub mod resolv_conf;
pub mod resolve;

use std::net::IpAddr;
use std::path::PathBuf;

pub use resolv_conf::ResolvConf;

pub const HOSTS_FILE: &str = "/etc/hosts";
pub const RESOLV_CONF: &str = "/etc/resolv.conf";
/// Test-only: the resolver file to read instead of `/etc/resolv.conf` (a nameserver may carry a
/// port there).
pub const RESOLV_CONF_ENV: &str = "WUGUI_RESOLV_CONF";

/// The addresses of host `name`, IPv4 first: from `/etc/hosts` if it is there, else from DNS.
/// Blocks up to the resolver's bound (`ResolvConf::max_wait`) when the servers do not answer.
pub fn lookup_host(name: &str) -> Result<Vec<IpAddr>, String> {
    let in_hosts = hosts::lookup(&std::fs::read_to_string(HOSTS_FILE).unwrap_or_default(), name);
    if !in_hosts.is_empty() {
        return Ok(in_hosts);
    }
    resolve::lookup(name, &system_conf()).map_err(|f| format!("not in {HOSTS_FILE}, and {f}"))
}

/// The resolver file in force: `$WUGUI_RESOLV_CONF` (tests), else `/etc/resolv.conf`. A file
/// that cannot be read counts as empty, as glibc has it: the server is then 127.0.0.1.
pub fn system_conf() -> ResolvConf {
    let (path, test) = match std::env::var_os(RESOLV_CONF_ENV).filter(|p| !p.is_empty()) {
        Some(p) => (PathBuf::from(p), true),
        None => (PathBuf::from(RESOLV_CONF), false),
    };
    resolv_conf::parse(&std::fs::read_to_string(path).unwrap_or_default(), test)
}
