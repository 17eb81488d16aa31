//! `/etc/hosts` lookups, done by wugui itself (static binaries have no NSS).

use core::net::IpAddr;

/// The addresses of `name` in hosts-file text, in file order: IPv4 ones first, then IPv6.
pub fn lookup(hosts: &str, name: &str) -> Vec<IpAddr> {
    let name = name.trim_end_matches('.');
    let (mut v4, mut v6) = (Vec::new(), Vec::new());
    for line in hosts.lines() {
        let line = line.split('#').next().unwrap_or("");
        let mut fields = line.split_whitespace();
        let Some(Ok(ip)) = fields.next().map(str::parse::<IpAddr>) else { continue };
        if fields.any(|n| n.trim_end_matches('.').eq_ignore_ascii_case(name)) {
            let list = if ip.is_ipv4() { &mut v4 } else { &mut v6 };
            if !list.contains(&ip) {
                list.push(ip);
            }
        }
    }
    v4.extend(v6);
    v4
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_addresses_and_comments() {
        let hosts = "127.0.0.1 localhost\n::1 localhost ip6-localhost\n# 10.9.9.9 po1\n\
                     fd00::5 po1 # v6 first\n10.0.0.5\tpo1 po1.example\n10.0.0.6 po1\nnot-an-ip po9\n";
        let ips = |v: &[&str]| v.iter().map(|s| s.parse().unwrap()).collect::<Vec<IpAddr>>();
        assert_eq!(lookup(hosts, "PO1."), ips(&["10.0.0.5", "10.0.0.6", "fd00::5"]));
        assert_eq!(lookup(hosts, "localhost"), ips(&["127.0.0.1", "::1"]));
        assert_eq!(lookup(hosts, "po1.example"), ips(&["10.0.0.5"]));
        assert!(lookup(hosts, "po9").is_empty());
    }
}
