//! Asking the CACs of a list in order. The master asks for its grant this way and a po for a
//! token check: each CAC gets one try, bounded by the caller's timeout, and a failure logs one
//! `cac_failover` line and moves on to the next.

use core::net::SocketAddr;

/// Which CAC of the list is being asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failover {
    at: usize,
}

impl Failover {
    pub fn first() -> Failover {
        Failover { at: 0 }
    }

    /// The CAC to ask now, or None once every one has failed.
    pub fn cac(self, list: &[SocketAddr]) -> Option<SocketAddr> {
        list.get(self.at).copied()
    }

    /// The CAC asked now failed (`role` and `why` for the log line): the next one to ask.
    pub fn next(self, role: &str, list: &[SocketAddr], why: &str) -> Failover {
        let cac = self.cac(list).map(|a| a.to_string()).unwrap_or_default();
        log::warn!("event=cac_failover role={role} cac={cac} error={}", crate::proto::text::quoted(why));
        Failover { at: self.at + 1 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_cac_once_in_order() {
        let list: Vec<SocketAddr> = vec!["127.0.0.1:1".parse().unwrap(), "127.0.0.1:2".parse().unwrap()];
        let f = Failover::first();
        assert_eq!(f.cac(&list), Some(list[0]));
        let f = f.next("po", &list, "timed out");
        assert_eq!(f.cac(&list), Some(list[1]));
        assert_eq!(f.next("po", &list, "closed").cac(&list), None);
        assert_eq!(Failover::first().cac(&[]), None);
    }
}
