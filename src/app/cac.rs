//! `wugui-cac`: the Config & Auth Center daemon.

use super::names::Names;
use super::Reload;
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
                sites: k.sites.clone(),
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
    let names = Names::watch();
    follow(&names, &cfg);
    let metrics = cfg.metrics_listen;
    let mut cfg = cfg;
    super::run_daemon("cac", &mut machine, listener, metrics, 0, |m, what| match what {
        Reload::Config => {
            let c = config::load_cac(&path).map_err(|e| e.to_string())?;
            m.reload(settings(&c));
            follow(&names, &c);
            let detail = format!("config={} classes={}", path.display(), c.classes.len());
            cfg = c;
            Ok(Some(detail))
        }
        Reload::Names => {
            let moved = moved_pos(&mut cfg, &names);
            if moved.is_empty() {
                return Ok(None);
            }
            m.reload(settings(&cfg));
            Ok(Some(format!("moved={}", moved.join(","))))
        }
    })
}

/// Follows the po names of every class.
fn follow(names: &Names, c: &CacConfig) {
    names.follow(c.classes.iter().flat_map(|k| k.po_names.iter().map(String::as_str).zip(k.pos.iter().copied())));
}

/// Takes the addresses the watch thread found for the po names (no lookup here: the event loop
/// never waits on DNS). A new address another po of the class already has is not taken.
/// Returns `name=address` for each po that moved.
fn moved_pos(c: &mut CacConfig, names: &Names) -> Vec<String> {
    let mut moved = Vec::new();
    for k in &mut c.classes {
        for i in 0..k.pos.len() {
            let Some(now) = names.address(&k.po_names[i]) else { continue };
            if now != k.pos[i] && !k.pos.contains(&now) {
                k.pos[i] = now;
                moved.push(format!("{}={now}", k.po_names[i]));
            }
        }
    }
    moved
}
