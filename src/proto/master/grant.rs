//! Before the transfer: a CAC grants the class (CACs in order, with a challenge for a class
//! with a master secret), the planner reads the tree, and the pos are listed. A dry run ends
//! here.

use super::outcome::{DryRun, Outcome, TransferResult};
use super::state::{Phase, Po};
use super::{MasterMachine, Plan};
use crate::proto::auth;
use crate::proto::cac::challenge_data;
use crate::proto::failover::Failover;
use crate::proto::manifest::Kind;
use crate::proto::msg::Reason;
use crate::proto::sites::{SiteBytes, Sites};
use crate::proto::swarm::Swarm;
use crate::proto::{Action, ClassCfg, ConnId, Event, Manifest, Msg};
use std::time::Instant;

impl MasterMachine {
    pub(super) fn ask_cac(&mut self, now: Instant, cac: Failover) {
        if cac == Failover::first() {
            self.cac_tried.clear();
        }
        let Some(addr) = cac.cac(&self.settings.cacs) else {
            let n = self.settings.cacs.len();
            let tried = self.cac_tried.join("; ");
            let e =
                format!("no CAC reachable (tried {n}: {tried}); is wugui-cac running there? (cac = in master.conf)");
            return self.stop_early(TransferResult::Denied(e));
        };
        let conn = self.conn_id();
        self.phase = Phase::Auth { cac, conn, deadline: now + self.settings.connect_timeout };
        self.out.push_back(Action::Connect { conn, addr });
    }

    /// The CAC being asked failed us (`why`, for the log line and the final error): ask the next.
    pub(super) fn cac_failed(&mut self, now: Instant, why: &str) {
        if let Phase::Auth { cac, conn, .. } = self.phase {
            let addr = cac.cac(&self.settings.cacs).map(|a| a.to_string()).unwrap_or_default();
            self.cac_tried.push(format!("{addr}: {why}"));
            self.out.push_back(Action::Close { conn });
            self.ask_cac(now, cac.next("master", &self.settings.cacs, why));
        }
    }

    /// The transfer never started: usage, source or CAC trouble.
    pub(super) fn stop_early(&mut self, result: TransferResult) {
        if let Some(c) = self.cac_conn.take() {
            self.out.push_back(Action::Close { conn: c });
        }
        let transfer = self.plan.as_ref().map(|p| p.transfer).unwrap_or(0);
        self.outcome = Some(Outcome { transfer, class: self.settings.class.clone(), result });
        self.phase = Phase::Finished;
    }

    /// An event while asking the CAC on `cac`: events of other connections do not matter.
    pub(super) fn on_cac_event(&mut self, now: Instant, cac: ConnId, ev: Event) {
        match ev {
            Event::Connected { conn } if conn == cac => {
                self.out.push_back(Action::Send { conn, msg: Msg::AuthRequest { class: self.settings.class.clone() } });
            }
            Event::Frame { conn, msg } if conn == cac => match msg {
                Msg::AuthGrant { transfer, token, pos, class, sites } => {
                    self.on_grant(now, conn, transfer, token, (pos, sites), class)
                }
                Msg::AuthChallenge { nonce } => self.on_challenge(conn, nonce),
                Msg::Denied { reason: Reason::Busy, text } => self.on_busy(now, conn, text),
                // Not a CAC's answer (a po says this to an AuthRequest): ask the next.
                Msg::Denied { reason: Reason::Protocol, text } => {
                    self.cac_failed(now, &format!("not a CAC: it answered \"{}\"", text.escape_debug()))
                }
                // A CAC that answers has spoken for all replicas.
                Msg::Denied { reason, text } => {
                    self.stop_early(TransferResult::Denied(format!("CAC refused ({}): {text}", reason.name())))
                }
                other => self.cac_failed(now, &format!("unexpected {:?}", other.ty())),
            },
            Event::Closed { conn, reason } if conn == cac => {
                self.cac_failed(now, &reason.or("closed before answering"))
            }
            _ => {}
        }
    }

    /// The class has a master secret: prove we hold it.
    fn on_challenge(&mut self, conn: ConnId, nonce: [u8; 32]) {
        match &self.settings.secret {
            Some(s) => {
                let mac = auth::mac(s, &challenge_data(&nonce, &self.settings.class));
                self.out.push_back(Action::Send { conn, msg: Msg::AuthResponse { mac } });
            }
            None => {
                let e =
                    format!("class {} needs the master secret (secret_dir/{0} in master.conf)", self.settings.class);
                self.stop_early(TransferResult::Denied(e))
            }
        }
    }

    fn on_grant(
        &mut self,
        now: Instant,
        conn: ConnId,
        transfer: u64,
        token: Vec<u8>,
        (pos, labels): (Vec<String>, Vec<String>),
        pairs: Vec<(String, String)>,
    ) {
        let mut class = match ClassCfg::from_pairs(&self.settings.class, &pairs) {
            Ok(c) => c,
            Err(e) => return self.stop_early(TransferResult::Denied(format!("CAC sent a bad class: {e}"))),
        };
        let sites = match labels.is_empty() {
            true => Ok(Sites::one(pos.len())),
            false => Sites::from_labels(&labels),
        };
        let sites = match sites {
            Ok(s) => s,
            Err(e) => return self.stop_early(TransferResult::Denied(format!("CAC sent bad sites: {e}"))),
        };
        // Chains that could not pay off are not planned, nor their smaller blocks chosen.
        class.chains &= super::chain::worth_it(pos.len(), super::chain::MOST_AUTO_BLOCKS);
        self.cac_conn = Some(conn);
        let (manifest, source) = match (self.planner)(&class) {
            Ok(p) => p,
            Err(e) => return self.stop_early(TransferResult::SourceFailed(e)),
        };
        if self.settings.dry_run {
            self.dry = Some(Box::new(dry_plan(&class, &manifest, &pos)));
            self.previews = vec![None; pos.len()];
        }
        log::info!(
            "event=transfer_start transfer={transfer} class={} pos={} files={} bytes={} blocks={} verify={} p2p={}{}",
            class.name,
            pos.len(),
            manifest.files(),
            manifest.bytes(),
            manifest.blocks(),
            class.verify,
            if class.p2p { "on" } else { "off" },
            if self.settings.dry_run { " dry_run=1" } else { "" }
        );
        self.out.push_back(Action::SetRates { upload: class.rate_limit, download: 0 });
        self.wave = super::wave::Wave::new(self.settings.canary.unwrap_or(class.canary) as usize);
        let pos = pos.into_iter().map(|name| Po::new(name, manifest.blocks(), now)).collect();
        let mut plan = Plan::new(transfer, token, class, manifest, source, now);
        plan.site_bytes = SiteBytes::new(sites);
        self.start_transfer(now, plan, pos);
    }

    /// Enters the transfer phase: every po is to be dialled now.
    fn start_transfer(&mut self, now: Instant, mut plan: Plan, pos: Vec<Po>) {
        self.pos = pos;
        if plan.class.p2p {
            let depth = crate::proto::chain::head_depth(plan.manifest.block_size);
            let mut sw = Swarm::new(self.pos.len(), plan.manifest.blocks(), plan.class.peers);
            sw.set_sites(plan.site_bytes.sites().clone());
            let chains = plan.class.chains && super::chain::worth_it(self.pos.len(), plan.manifest.blocks());
            plan.swarm = Some(if chains { sw.with_chains(super::chain::STRIPES, depth) } else { sw });
        }
        self.plan = Some(plan);
        self.phase = Phase::Transfer { next_report: now, next_ping: now + self.ping_every(), ticked: now };
        for i in 0..self.pos.len() {
            if self.pos[i].addr.is_none() {
                let e = format!("bad po address {:?} in the class", self.pos[i].name);
                self.po_fail(i, e);
            }
        }
        if self.pos.is_empty() {
            self.finish(now);
        }
    }
}

/// What a dry run would move (`app::outcome` says how long it would take); each po's answer
/// is added as it comes.
fn dry_plan(class: &ClassCfg, m: &Manifest, pos: &[String]) -> DryRun {
    let count = |f: fn(&Kind) -> bool| m.entries().iter().filter(|e| f(&e.kind)).count();
    DryRun {
        class: class.clone(),
        files: count(|k| matches!(k, Kind::File { .. })),
        dirs: count(|k| matches!(k, Kind::Dir)),
        symlinks: count(|k| matches!(k, Kind::Symlink { .. })),
        bytes: m.bytes(),
        blocks: m.blocks(),
        block_size: m.block_size,
        pos: pos.to_vec(),
        answers: Vec::new(),
    }
}
