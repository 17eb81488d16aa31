//! Address ranges such as `10.0.0.0/24`: the masters a class lets push.

use core::fmt;
use core::net::IpAddr;

/// An address range; a plain address is `/32` or `/128`. An IPv4-mapped IPv6 address
/// (`::ffff:a.b.c.d`, what a dual-stack socket reports) counts as IPv4, in the range and in the
/// address tested.
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

    /// Whether `ip` lies in the range. The fields are public, so a range not made by `parse`
    /// is taken as it comes: a mapped `addr` as IPv4, a `prefix` past the width as the width.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr.to_canonical(), ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let p = u32::from(self.prefix.min(32));
                let mask = if p == 0 { 0 } else { u32::MAX << (32 - p) };
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let p = u32::from(self.prefix.min(128));
                let mask = if p == 0 { 0 } else { u128::MAX << (128 - p) };
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

#[cfg(test)]
mod tests {
    use super::*;
    use core::net::{Ipv4Addr, Ipv6Addr};

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

    /// What the CAC did before `Cidr` was shared: ranges built field by field are taken as
    /// they come.
    #[test]
    fn built_ranges() {
        let mapped = Cidr { addr: "::ffff:10.0.0.0".parse().unwrap(), prefix: 24 };
        assert!(mapped.contains("10.0.0.0".parse().unwrap()));
        let wide = Cidr { addr: "10.0.0.0".parse().unwrap(), prefix: 200 };
        assert!(wide.contains("10.0.0.0".parse().unwrap()));
        assert!(!wide.contains("10.0.0.1".parse().unwrap()));
    }
}
