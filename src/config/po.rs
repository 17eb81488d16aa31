//! `po.conf`: the one `[po]` section.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::ini::{self, At};
use super::values::{parse_abs_path, parse_addr, parse_addr_list, parse_path, parse_seconds_ms};
use super::ConfigError;
use crate::proto::class::{parse_bool, parse_num, parse_size};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoConfig {
    pub listen: SocketAddr,
    pub cac: Vec<SocketAddr>,
    pub state_dir: PathBuf,
    /// Absolute roots; every dest must lie below one of them.
    pub allow_dest: Vec<PathBuf>,
    pub hook_dir: Option<PathBuf>,
    pub log: Option<PathBuf>,
    /// Bytes/s over all transfers of this host; 0 = none.
    pub max_upload_rate: u64,
    pub max_download_rate: u64,
    /// Make staged data durable before publish and for resume records (default on).
    pub fsync: bool,
    /// Demos and tests: every dest is taken below this absolute directory.
    pub root: Option<PathBuf>,
    pub metrics_listen: Option<SocketAddr>,
    /// The address this po presents to the CAC; see `advertise_addr`.
    pub advertise: Option<SocketAddr>,
    /// Seconds a stage or resume record no transfer uses is kept (default a week).
    pub stage_retention: u64,
    /// Key `release_after`, in seconds: how long a transfer whose master is gone keeps its
    /// files open (default 30 s).
    pub release_after_ms: u64,
    /// Threads that check blocks beside the event loop; 0 (unset): one a core, at most 4.
    pub workers: usize,
}

impl PoConfig {
    /// The address this po presents to the CAC, given the address it bound (port 0 made real):
    /// `advertise`, else the bound address. `None` for a wildcard bind: the po then presents
    /// the local address each master's connection reached, with the listen port.
    pub fn advertise_addr(&self, bound: SocketAddr) -> Option<SocketAddr> {
        self.advertise.or((!bound.ip().is_unspecified()).then_some(bound))
    }
}

/// `stage_retention` when unset: a week.
pub const STAGE_RETENTION: u64 = 7 * 86400;

pub fn load_po(path: &Path) -> Result<PoConfig, ConfigError> {
    ini::load(path, parse_po)
}

pub fn parse_po(text: &str, file: &str, base_dir: &Path) -> Result<PoConfig, ConfigError> {
    let s = ini::read_single(text, file, "po")?;
    let mut listen = None;
    let mut cac = None;
    let mut state_dir = None;
    let mut allow_dest = None;
    let mut hook_dir = None;
    let mut log = None;
    let mut max_upload_rate = 0;
    let mut max_download_rate = 0;
    let mut fsync = true;
    let mut root = None;
    let mut metrics_listen = None;
    let mut advertise = None;
    let mut stage_retention = STAGE_RETENTION;
    let mut release_after_ms = 30_000;
    let mut workers = 0;
    s.read_keys(file, &[], |k| {
        let v = k.value();
        match k.name() {
            "listen" => listen = Some(parse_addr(v, true).at(k)?),
            "cac" => cac = Some(parse_addr_list(v).at(k)?),
            "state_dir" => state_dir = Some(parse_path(v, base_dir).at(k)?),
            "allow_dest" => {
                allow_dest = Some(v.split(',').map(|i| parse_abs_path(i.trim())).collect::<Result<_, _>>().at(k)?)
            }
            "hook_dir" => hook_dir = Some(parse_path(v, base_dir).at(k)?),
            "log" => log = Some(parse_path(v, base_dir).at(k)?),
            "max_upload_rate" => max_upload_rate = parse_size(v).at(k)?,
            "max_download_rate" => max_download_rate = parse_size(v).at(k)?,
            "fsync" => fsync = parse_bool(v).at(k)?,
            "root" => root = Some(parse_abs_path(v).at(k)?),
            "stage_retention" => stage_retention = parse_num(v, 0, 3650 * 86400).at(k)?,
            "metrics_listen" => metrics_listen = Some(parse_addr(v, true).at(k)?),
            "advertise" => {
                let a = parse_addr(v, false).at(k)?;
                if a.ip().is_unspecified() {
                    return Err(k.bad(format!("{a} is not an address others can reach")));
                }
                advertise = Some(a);
            }
            "release_after" => release_after_ms = parse_seconds_ms(v).at(k)?,
            "workers" => workers = parse_num(v, 1, 64).at(k)? as usize,
            _ => return Err(k.unknown()),
        }
        Ok(())
    })?;
    Ok(PoConfig {
        listen: listen.ok_or_else(|| s.missing(file, "listen"))?,
        cac: cac.ok_or_else(|| s.missing(file, "cac"))?,
        state_dir: state_dir.ok_or_else(|| s.missing(file, "state_dir"))?,
        allow_dest: allow_dest.ok_or_else(|| s.missing(file, "allow_dest"))?,
        hook_dir,
        log,
        max_upload_rate,
        max_download_rate,
        fsync,
        root,
        metrics_listen,
        advertise,
        stage_retention,
        release_after_ms,
        workers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE_PO: &str = "# po.conf
[po]
listen = 0.0.0.0:7200
cac = 10.0.0.1:7100, 10.0.0.2:7100
state_dir = /var/lib/wugui
# dests must lie below one of these
allow_dest = /home/work/data, /data
hook_dir = /etc/wugui/hooks
log = /var/log/wugui/po.log
# caps over all transfers of this host; 0 = none
max_upload_rate = 50M
max_download_rate = 0
# optional, for demos and tests: several pos on one host, each taking every dest below its own root
root = /tmp/po3
";

    const BASE: &str = "[po]\nlisten = 127.0.0.1:0\ncac = 10.0.0.1:7100\nstate_dir = st\nallow_dest = /data\n";

    #[test]
    fn sample_po_parses() {
        let p = parse_po(SAMPLE_PO, "po.conf", Path::new("/etc/wugui")).unwrap();
        assert_eq!(p.listen, "0.0.0.0:7200".parse().unwrap());
        assert_eq!(p.cac.len(), 2);
        assert_eq!(p.allow_dest, vec![PathBuf::from("/home/work/data"), PathBuf::from("/data")]);
        assert_eq!(p.max_upload_rate, 50 << 20);
        assert_eq!(p.max_download_rate, 0);
        assert_eq!(p.root, Some(PathBuf::from("/tmp/po3")));
        assert_eq!(p.stage_retention, 7 * 86400);
        let p = parse_po(&format!("{BASE}stage_retention = 3600\n"), "po.conf", Path::new("/")).unwrap();
        assert_eq!(p.stage_retention, 3600);
        assert_eq!(p.workers, 0, "unset: from the cores");
        let p = parse_po(&format!("{BASE}workers = 2\n"), "po.conf", Path::new("/")).unwrap();
        assert_eq!(p.workers, 2);
        assert!(parse_po(&format!("{BASE}workers = 0\n"), "po.conf", Path::new("/")).is_err());
        assert!(parse_po(&format!("{BASE}stage_retention = 1h\n"), "po.conf", Path::new("/")).is_err());
    }

    #[test]
    fn advertise_addr() {
        // A wildcard listen and no advertise: the po presents the address the master dialled.
        let p = parse_po(SAMPLE_PO, "po.conf", Path::new("/etc/wugui")).unwrap();
        assert_eq!(p.advertise_addr(p.listen), None);
        let bound = "127.0.0.1:7201".parse().unwrap();
        assert_eq!(p.advertise_addr(bound), Some(bound));
        let p = parse_po(&format!("{BASE}advertise = 127.0.0.1:7200\n"), "po.conf", Path::new("/")).unwrap();
        assert_eq!(p.advertise_addr(bound), Some("127.0.0.1:7200".parse().unwrap()));
        assert_eq!(p.advertise_addr("0.0.0.0:7201".parse().unwrap()), Some("127.0.0.1:7200".parse().unwrap()));
    }

    #[test]
    fn po_errors() {
        let p = parse_po(BASE, "po.conf", Path::new("/etc/wugui")).unwrap();
        assert_eq!(p.state_dir, PathBuf::from("/etc/wugui/st"));
        let cases: &[(&str, usize, &str)] = &[
            ("allow_dest = data\n", 6, "duplicate key"),
            ("root = tmp/po\n", 6, "absolute"),
            ("root = /tmp/../po\n", 6, ".."),
            ("max_upload_rate = fast\n", 6, "max_upload_rate:"),
            ("advertise = 0.0.0.0:7200\n", 6, "advertise:"),
            ("cac = 10.0.0.1:7100\n", 6, "duplicate key"),
            ("[master]\n", 6, "unknown section"),
        ];
        for (extra, line, needle) in cases {
            let e = parse_po(&format!("{BASE}{extra}"), "po.conf", Path::new("/")).unwrap_err();
            assert_eq!(e.line, *line, "{extra:?} gave {e}");
            assert!(e.msg.contains(needle), "{extra:?} gave {e}");
        }
        let e = parse_po(
            "[po]\nlisten = 127.0.0.1:0\ncac = 1.2.3.4:5\nstate_dir = /s\nallow_dest = /a, b\n",
            "p",
            Path::new("/"),
        )
        .unwrap_err();
        assert_eq!(e.line, 5);
        let e = parse_po("[po]\nlisten = 127.0.0.1:0\n", "p", Path::new("/")).unwrap_err();
        assert_eq!(e.line, 1);
    }

    #[test]
    fn rate_sizes() {
        let base = "[po]\nlisten = 127.0.0.1:0\ncac = 10.0.0.1:7100\nstate_dir = /s\nallow_dest = /data\n";
        let p =
            parse_po(&format!("{base}max_upload_rate = 1G\nmax_download_rate = 512k\n"), "p", Path::new("/")).unwrap();
        assert_eq!((p.max_upload_rate, p.max_download_rate), (1 << 30, 512 << 10));
    }
}
