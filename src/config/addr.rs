//! `host:port` addresses: IP literals, or names looked up by wugui itself (`crate::dns`:
//! `/etc/hosts` first, then DNS), since static binaries have no NSS.

use std::net::{IpAddr, SocketAddr};

/// Parse `host:port`: an IP literal (`10.0.0.1:7100`, `[::1]:7100`), or a name whose first
/// address (IPv4 preferred) is taken: from `/etc/hosts`, else from DNS per `/etc/resolv.conf`.
/// A name may block for the resolver's bound (timeout x attempts x servers) when DNS is down.
pub fn resolve(host_port: &str) -> Result<SocketAddr, String> {
    resolve_with(host_port, crate::dns::lookup_host)
}

/// `resolve` against the given hosts-file text only, without DNS (for tests).
pub fn resolve_in(host_port: &str, hosts: &str) -> Result<SocketAddr, String> {
    resolve_with(host_port, |name| match crate::dns::hosts::lookup(hosts, name) {
        v if v.is_empty() => Err("not in the hosts file".into()),
        v => Ok(v),
    })
}

fn resolve_with(
    host_port: &str,
    lookup: impl FnOnce(&str) -> Result<Vec<IpAddr>, String>,
) -> Result<SocketAddr, String> {
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
    if let Err(e) = crate::dns::msg::name_to_wire(bare) {
        return Err(format!("bad host name {host:?} in {s:?}: {e}"));
    }
    match lookup(bare) {
        Ok(ips) if !ips.is_empty() => Ok(SocketAddr::new(ips[0], port)),
        Ok(_) => Err(format!("cannot resolve {bare}: no address")),
        Err(e) => Err(format!("cannot resolve {bare}: {e}")),
    }
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
        assert_eq!(e, "cannot resolve nowhere: not in the hosts file");
        for bad in ["10.0.0.1", "::1:7100", "10.0.0.1:70000", ":7100", "[::1:7", "a b:1", "host:", "a..b:1"] {
            assert!(resolve_in(bad, hosts).is_err(), "{bad}");
        }
    }
}
