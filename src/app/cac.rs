//! `wugui-cac`: the Config & Auth Center daemon.

use crate::config::{self, CacConfig};
use crate::proto::cac::{CacMachine, CacSettings, ClassAuth};
use crate::proto::Env;
use crate::reactor::{self, Control};
use nix::sys::signal::Signal;
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
                masters: k.masters.iter().map(|m| (m.addr, m.prefix)).collect(),
                master_secret: k.master_secret.clone(),
            })
            .collect(),
    }
}

pub fn main() -> ExitCode {
    super::block_signals();
    let path = match super::daemon_args("cac", "The Config & Auth Center: authorises masters, issues and verifies transfer tokens,\nserves class configs and live transfer status.") {
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
    let mut machine = CacMachine::new(settings(&cfg), Env::real());
    let opts = super::daemon_options("cac");
    if let Some(addr) = cfg.metrics_listen {
        match crate::metrics::serve(addr, "cac") {
            Ok(bound) => super::announce(&format!("metrics={bound}")),
            Err(e) => {
                eprintln!("wugui-cac: cannot serve metrics on {addr}: {e}");
                return ExitCode::from(1);
            }
        }
    }
    let mut on_signal = |m: &mut CacMachine, sig: Signal| match sig {
        Signal::SIGHUP => {
            match config::load_cac(&path) {
                Ok(c) => {
                    log::info!("event=config_reload role=cac config={} classes={}", path.display(), c.classes.len());
                    m.reload(settings(&c));
                }
                Err(e) => log::error!("event=config_refused role=cac error=\"{e}\""),
            }
            Control::Continue
        }
        Signal::SIGUSR1 => {
            let _ = crate::logging::reopen();
            Control::Continue
        }
        _ => {
            log::info!("event=stop role=cac signal={sig}");
            Control::Stop
        }
    };
    match reactor::run(&mut machine, Some(listener), &opts, &super::signals(), &mut on_signal) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("event=fatal role=cac error=\"{e}\"");
            eprintln!("wugui-cac: {e}");
            ExitCode::from(1)
        }
    }
}
