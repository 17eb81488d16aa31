//! `host:port` addresses: IP literals, or names looked up in `/etc/hosts` by this code.

use std::net::{IpAddr, SocketAddr};

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
