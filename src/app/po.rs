//! `wugui-po`: the daemon on every downstream host.

use crate::config::{self, PoConfig};
use crate::proto::po::{PoMachine, PoSettings};
use crate::proto::StoreError;
use crate::store::DiskStore;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

/// `bound` is the address actually bound (port 0 becomes a real port).
pub fn settings(c: &PoConfig, bound: SocketAddr) -> PoSettings {
    PoSettings {
        advertise: c.advertise_addr(bound).map(|a| a.to_string()),
        listen_port: bound.port(),
        release_after: Duration::from_millis(c.release_after_ms),
        cacs: c.cac.clone(),
        allow_dest: c.allow_dest.iter().map(|p| p.display().to_string()).collect(),
        root: c.root.as_ref().map(|p| p.display().to_string()),
        cac_timeout: Duration::from_secs(3),
        hook_dir: c.hook_dir.as_ref().map(|p| p.display().to_string()),
        max_upload_rate: c.max_upload_rate,
        max_download_rate: c.max_download_rate,
    }
}

/// `allow_dest` as paths on this host: below `root` when set, as the po maps every dest.
pub fn dest_roots(c: &PoConfig) -> Vec<std::path::PathBuf> {
    let on_host = |a: &std::path::PathBuf| match &c.root {
        Some(r) => r.join(a.strip_prefix("/").unwrap_or(a)),
        None => a.clone(),
    };
    c.allow_dest.iter().map(on_host).collect()
}

pub fn main() -> ExitCode {
    super::block_signals();
    let path = match super::daemon_args(
        "po",
        "The po: receives transfers, verifies, stages and publishes them.",
        super::check::po,
    ) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let cfg = match config::load_po(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("wugui-po: {e}");
            return ExitCode::from(1);
        }
    };
    if let Err(code) = super::init_log("po", cfg.log.as_deref()) {
        return code;
    }
    let retention = Duration::from_secs(cfg.stage_retention);
    let store = match DiskStore::new(cfg.state_dir.clone(), dest_roots(&cfg), retention) {
        Ok(s) if cfg.fsync => s,
        Ok(s) => s.without_sync(),
        Err(e) => {
            eprintln!("wugui-po: state_dir {}: {e}", cfg.state_dir.display());
            return ExitCode::from(1);
        }
    };
    if let Some(why) = crate::store::state_file::unsafe_dir(&cfg.state_dir) {
        log::warn!("event=state_dir_unsafe error={}", crate::proto::text::quoted(&why));
    }
    // A reload replaces the roots the store opens dests from, as it replaces the po's settings.
    let roots = store.roots();
    let listener = match super::listen("po", cfg.listen) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let bound = listener.local_addr().unwrap_or(cfg.listen);
    log::info!("event=po_start config={} cacs={}", path.display(), cfg.cac.len());
    let failpoint = std::env::var("WUGUI_FAILPOINT").unwrap_or_default();
    let fault = match failpoint.as_str() {
        "corrupt_serve" => Some(ServeFault::Corrupt),
        "cut_serve" => Some(ServeFault::Cut),
        _ => None,
    };
    if let Some(fault) = fault {
        log::warn!("event=failpoint name={failpoint}: this po breaks every block it serves to peers");
        return serve(FaultyServe(store, fault), roots, &cfg, &path, (bound, listener));
    }
    // `hold_delta:PATH`: a delta/resume check waits before each block it reads until PATH
    // exists, so a test can watch other transfers while one check is in the middle.
    if let Some(gate) = failpoint.strip_prefix("hold_delta:") {
        log::warn!("event=failpoint name=hold_delta: checks of old copies wait for {gate}");
        return serve(store.hold_checks(gate.into()), roots, &cfg, &path, (bound, listener));
    }
    // `hold_stage:PATH`: a stage build waits likewise before each block of the published copy.
    if let Some(gate) = failpoint.strip_prefix("hold_stage:") {
        log::warn!("event=failpoint name=hold_stage: stage builds wait for {gate}");
        return serve(store.hold_stages(gate.into()), roots, &cfg, &path, (bound, listener));
    }
    serve(store, roots, &cfg, &path, (bound, listener))
}

/// The po's event loop over `store`, listening on `listener` (bound to `bound`); SIGHUP reads
/// the config at `path` again and hands its `allow_dest` to `roots`.
fn serve<S: crate::proto::Store>(
    store: S,
    roots: crate::store::dest::Roots,
    cfg: &PoConfig,
    path: &std::path::Path,
    (bound, listener): (SocketAddr, std::net::TcpListener),
) -> ExitCode {
    let mut machine = PoMachine::new(settings(cfg, bound), store);
    // Block checks run on this many threads beside the loop (po.conf `workers`).
    let workers = match cfg.workers {
        0 => crate::work::default_size(),
        n => n,
    };
    super::run_daemon("po", &mut machine, listener, cfg.metrics_listen, workers, |m, what| {
        if what != super::Reload::Config {
            return Ok(None);
        }
        let c = config::load_po(path).map_err(|e| e.to_string())?;
        roots.set(dest_roots(&c));
        m.reload(settings(&c, bound));
        Ok(Some(format!("config={}", path.display())))
    })
}

/// Fault injection for tests: how a po breaks every block it serves to a peer.
#[derive(Debug, Clone, Copy)]
enum ServeFault {
    /// `WUGUI_FAILPOINT=corrupt_serve`: one byte flipped, as bad memory or a bad disk would.
    Corrupt,
    /// `WUGUI_FAILPOINT=cut_serve`: the body's file ends at once, as a file shorter than its
    /// block would: the frame is cut off and the link breaks mid-block.
    Cut,
}

struct FaultyServe(DiskStore, ServeFault);

impl crate::proto::Store for FaultyServe {
    fn prepare(
        &mut self,
        t: u64,
        dest: &str,
        m: &crate::proto::Manifest,
        delta: bool,
    ) -> Result<Vec<bool>, StoreError> {
        self.0.prepare(t, dest, m, delta)
    }
    fn candidates(&mut self, t: u64) -> Vec<u64> {
        self.0.candidates(t)
    }
    fn check(&mut self, t: u64, sums: &[(u64, crate::proto::msg::Digest)]) -> Vec<u64> {
        self.0.check(t, sums)
    }
    fn check_job(&mut self, t: u64, sums: &[(u64, crate::proto::msg::Digest)]) -> Option<crate::proto::DiskJob> {
        self.0.check_job(t, sums)
    }
    fn prepare_job(
        &mut self,
        t: u64,
        dest: &str,
        m: &crate::proto::Manifest,
        delta: bool,
    ) -> Option<crate::proto::DiskJob> {
        self.0.prepare_job(t, dest, m, delta)
    }
    fn checkpoint_job(&mut self, t: u64) -> Option<crate::proto::DiskJob> {
        self.0.checkpoint_job(t)
    }
    fn seal_job(&mut self, t: u64) -> Option<crate::proto::DiskJob> {
        self.0.seal_job(t)
    }
    fn job_done(
        &mut self,
        id: u64,
        out: Option<crate::proto::DiskOutput>,
    ) -> Result<Option<crate::proto::JobDone>, StoreError> {
        self.0.job_done(id, out)
    }
    fn set_options(&mut self, t: u64, options: crate::proto::disk::StageOptions) {
        self.0.set_options(t, options)
    }
    fn write_block(&mut self, t: u64, b: &crate::proto::BlockRef, data: &[u8]) -> Result<(), StoreError> {
        self.0.write_block(t, b, data)
    }
    fn seal(&mut self, t: u64) -> Result<(), StoreError> {
        self.0.seal(t)
    }
    fn publish(&mut self, t: u64, flag: Option<&str>, mirror: bool) -> Result<crate::proto::Published, StoreError> {
        self.0.publish(t, flag, mirror)
    }
    fn abort(&mut self, t: u64, keep: bool) {
        self.0.abort(t, keep)
    }
    fn release(&mut self, t: u64) {
        self.0.release(t)
    }
    fn block_body(&mut self, t: u64, b: &crate::proto::BlockRef) -> Result<crate::proto::Body, StoreError> {
        let body = self.0.block_body(t, b)?;
        if let ServeFault::Cut = self.1 {
            let null = std::fs::File::open("/dev/null").map_err(|e| StoreError::Refused(e.to_string()))?;
            let file = std::sync::Arc::new(std::os::fd::OwnedFd::from(null));
            return Ok(crate::proto::Body::File { file, offset: 0, len: body.len(), sendfile: false });
        }
        let mut bytes = crate::store::files::body_bytes(&body).map_err(|e| StoreError::Refused(e.to_string()))?;
        if let Some(x) = bytes.first_mut() {
            *x ^= 0xff;
        }
        Ok(crate::proto::Body::Bytes(std::sync::Arc::new(bytes)))
    }
}
