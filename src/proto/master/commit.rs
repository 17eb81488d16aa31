//! The end of a transfer: COMMIT when the ready pos may publish, and the outcome once every
//! po is done or failed.

use super::outcome::{Outcome, PoOutcome, Ran, TransferResult};
use super::state::{Phase, PoState, State};
use super::MasterMachine;
use crate::proto::manifest::Kind;
use crate::proto::sites;
use crate::proto::{Action, Msg};
use std::time::Instant;

impl MasterMachine {
    /// The first source file whose size or mtime differs from the manifest.
    pub(super) fn changed_source(&mut self) -> Option<String> {
        let plan = self.plan.as_mut()?;
        let files: Vec<u32> = (0..plan.manifest.entries().len() as u32)
            .filter(|&e| matches!(plan.manifest.entries()[e as usize].kind, Kind::File { .. }))
            .collect();
        files.into_iter().find_map(|e| plan.source.unchanged(e).err().map(|e| e.to_string()))
    }

    /// With `publish = together`: COMMIT once every live po is READY, or at the deadline when
    /// `quorum` of them are.
    pub(super) fn maybe_commit(&mut self, deadline: bool) {
        let Some(plan) = self.plan.as_mut() else { return };
        let ready = self.pos.iter().filter(|p| p.kind() == PoState::Ready).count();
        let waiting = self.pos.iter().filter(|p| p.kind().live() && p.kind() != PoState::Ready).count();
        if ready == 0 || (waiting > 0 && !deadline) {
            return;
        }
        if deadline && ready < plan.class.quorum.needed(self.pos.len()) {
            return;
        }
        // Never publish a copy of a file that changed while it was read.
        if let Some(err) = self.changed_source() {
            return self.abort_all(err);
        }
        // A canary wave commits its canaries first, the rest on its go.
        if self.wave.on() {
            return self.wave_step(true);
        }
        let Some(plan) = self.plan.as_ref() else { return };
        let transfer = plan.transfer;
        log::info!("event=commit transfer={transfer} ready={ready} total={}", self.pos.len());
        for p in self.pos.iter_mut().filter(|p| p.kind() == PoState::Ready) {
            if let Some(conn) = p.conn {
                self.out.push_back(Action::Send { conn, msg: Msg::Commit { transfer } });
                p.state = State::Committing;
            }
        }
    }

    pub(super) fn maybe_finish(&mut self, now: Instant) {
        if matches!(self.phase, Phase::Transfer { .. }) {
            self.wave_step(false);
        }
        if matches!(self.phase, Phase::Transfer { .. })
            && self.pos.iter().all(|p| matches!(p.kind(), PoState::Done | PoState::Failed))
        {
            self.finish(now);
        }
    }

    pub(super) fn finish(&mut self, now: Instant) {
        self.end(now, false)
    }

    /// The outcome, the last report to the CAC, and every connection closed. `aborted`: a
    /// signal ended it (the pos not done were told to abort).
    pub(super) fn end(&mut self, now: Instant, aborted: bool) {
        let Some(plan) = self.plan.as_ref() else { return };
        let pos: Vec<PoOutcome> = self
            .pos
            .iter()
            .map(|p| PoOutcome {
                name: p.name.clone(),
                failed: match &p.state {
                    State::Done { .. } => None,
                    State::Failed { error } => Some(error.clone()),
                    _ => Some(String::new()),
                },
                hook: match &p.state {
                    State::Done { hook, .. } => hook.clone(),
                    _ => None,
                },
                unchanged: matches!(p.state, State::Done { unchanged: true, .. }),
            })
            .collect();
        let ok = pos.iter().filter(|p| p.failed.is_none()).count();
        let dry = self.dry.take().map(|mut d| {
            d.answers = self
                .pos
                .iter()
                .zip(&self.previews)
                .zip(&pos)
                .map(|((p, preview), o)| {
                    let answer = match (preview, &o.failed) {
                        (Some(pv), None) => Ok((**pv).clone()),
                        (_, f) => Err(f.clone().unwrap_or_default()),
                    };
                    (p.name.clone(), answer)
                })
                .collect();
            d
        });
        let ran = Ran {
            bytes: plan.manifest.bytes(),
            blocks: plan.manifest.blocks(),
            elapsed: now.duration_since(plan.started),
            master_blocks: plan.sent_blocks,
            master_bytes: plan.sent_bytes,
            pos,
            skipped: 0,
            site_links: Vec::new(),
            site_in: Vec::new(),
        };
        let sb = &plan.site_bytes;
        let ran = match sb.sites().labelled() {
            true => Ran { site_in: sites::entered(sb.sites(), &sb.links()), site_links: sb.links(), ..ran },
            false => ran,
        };
        let result = self.wave_result(match ok {
            _ if dry.is_some() && !aborted => TransferResult::DryRun(dry.expect("checked")),
            _ if aborted => TransferResult::Aborted(ran),
            0 => TransferResult::Failed(ran),
            ok if ok < self.pos.len() => TransferResult::Partial(ran),
            _ => TransferResult::Ok(ran),
        });
        if let Some(sw) = plan.swarm.as_ref() {
            log::debug!("event=swarm_diag {}", sw.diag_line());
        }
        let (transfer, class) = (plan.transfer, plan.class.name.clone());
        self.report(now, Some(result.name()));
        if let Some(c) = self.cac_conn.take() {
            self.out.push_back(Action::Close { conn: c });
        }
        for p in &mut self.pos {
            for c in [p.conn.take(), p.data.take()].into_iter().flatten() {
                self.out.push_back(Action::Close { conn: c });
            }
        }
        self.outcome = Some(Outcome { transfer, class, result });
        self.phase = Phase::Finished;
    }
}
