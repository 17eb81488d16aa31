//! `wugui-cac`: the Config & Auth Center daemon.

use crate::config::{self, CacConfig};
use crate::proto::cac::{CacMachine, CacSettings, ClassAuth};
use std::process::ExitCode;

pub fn settings(c: &CacConfig) -> CacSettings {
    CacSettings {
        key: c.secret.clone(),
        token_ttl: c.token_ttl,
        classes: c
            .classes
            .iter()
            .map(|k| ClassAuth {
                cfg: k.cfg.clone(),
                pos: k.pos.clone(),
                masters: k.masters.clone(),
                master_secret: k.master_secret.clone(),
            })
            .collect(),
    }
}

pub fn main() -> ExitCode {
    super::block_signals();
    let path = match super::daemon_args("cac", "The Config & Auth Center: authorises masters, issues and verifies transfer tokens,\nserves class configs and live transfer status.", super::check::cac) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let cfg = match config::load_cac(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("wugui-cac: {e}");
            return ExitCode::from(1);
        }
    };
    if let Err(code) = super::init_log("cac", cfg.log.as_deref()) {
        return code;
    }
    let listener = match super::listen("cac", cfg.listen) {
        Ok(l) => l,
        Err(code) => return code,
    };
    log::info!("event=cac_start config={} classes={}", path.display(), cfg.classes.len());
    let mut machine = CacMachine::new(settings(&cfg), super::real_env());
    super::run_daemon("cac", &mut machine, listener, cfg.metrics_listen, |m| {
        let c = config::load_cac(&path).map_err(|e| e.to_string())?;
        m.reload(settings(&c));
        Ok(format!("config={} classes={}", path.display(), c.classes.len()))
    })
}
