//! Canary waves (README "Canary waves"): every po stages as usual; then the first K live pos
//! in class order publish first (keeping their old tree aside), and the rest are committed
//! only once every canary has published and its hook succeeded. A canary that fails rolls the
//! canaries back, and the rest are told to abort (they keep their old tree and their stage).
//!
//! `Wave` is the pure part (who is a canary, what the wave says now); the `MasterMachine`
//! part sends what it decides.

use super::outcome::TransferResult;
use super::state::{PoState, State};
use super::MasterMachine;
use crate::proto::class::Publish;
use crate::proto::msg::WaveStep;
use crate::proto::{Action, Msg};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WavePhase {
    /// No canary has been committed yet.
    Staging,
    /// Canaries publish and run their hooks.
    Canary,
    /// Every canary succeeded: the rest are committed.
    Rest,
    /// A canary failed: the canaries roll back, the rest abort.
    Failed,
}

impl WavePhase {
    /// What `wugui-stat` shows for the transfer in this phase.
    pub fn name(self) -> &'static str {
        match self {
            WavePhase::Staging => "staging",
            WavePhase::Canary => "canary",
            WavePhase::Rest => "rest",
            WavePhase::Failed => "decided",
        }
    }
}

/// One po as the wave sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Not failed, not published.
    Live {
        ready: bool,
    },
    /// Published; `ok`: its hook (if any) succeeded.
    Done {
        ok: bool,
    },
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wave {
    /// How many canaries (0: no wave).
    pub k: usize,
    pub canaries: Vec<usize>,
    pub phase: WavePhase,
}

/// What the wave says after a look at the pos.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Commit these pos as canaries.
    Canaries(Vec<usize>),
    /// Every canary succeeded.
    Go,
    /// This canary failed (the first in class order).
    Failed(usize),
    Wait,
}

impl Wave {
    pub fn new(k: usize) -> Wave {
        Wave { k, canaries: Vec::new(), phase: WavePhase::Staging }
    }

    pub fn on(&self) -> bool {
        self.k > 0
    }

    /// The first `k` pos in class order that are not failed, or (before the first canary
    /// commits) only ready ones with `ready_only`. Committed canaries stay canaries.
    fn pick(&self, pos: &[Seen], ready_only: bool) -> Vec<usize> {
        let mut out = self.canaries.clone();
        for (i, s) in pos.iter().enumerate() {
            if out.len() >= self.k {
                break;
            }
            let take = match s {
                Seen::Live { ready } => *ready || !ready_only,
                _ => false,
            };
            if take && !out.contains(&i) {
                out.push(i);
            }
        }
        out.sort_unstable();
        out
    }

    /// What to do now. `commit`: with `publish = together`, the master would commit now (every
    /// live po is ready, or a quorum at the deadline); with `each`, canaries go as they are
    /// ready.
    pub fn look(&self, pos: &[Seen], each: bool, commit: bool) -> Verdict {
        match self.phase {
            WavePhase::Staging | WavePhase::Canary => {}
            WavePhase::Rest | WavePhase::Failed => return Verdict::Wait,
        }
        if let Some(&i) = self.canaries.iter().find(|&&i| matches!(pos[i], Seen::Failed | Seen::Done { ok: false })) {
            return Verdict::Failed(i);
        }
        // With `together` the canaries are chosen once, among the ready pos, when the master
        // would commit; with `each`, the first K live pos, each as it is ready.
        let chosen = if each {
            self.pick(pos, false)
        } else if self.phase == WavePhase::Staging {
            if !commit {
                return Verdict::Wait;
            }
            self.pick(pos, true)
        } else {
            self.canaries.clone()
        };
        let new: Vec<usize> = chosen
            .iter()
            .copied()
            .filter(|i| !self.canaries.contains(i) && matches!(pos[*i], Seen::Live { ready: true }))
            .collect();
        if !new.is_empty() {
            return Verdict::Canaries(new);
        }
        let all_done = chosen.iter().all(|i| self.canaries.contains(i) && pos[*i] == Seen::Done { ok: true });
        if all_done && !self.canaries.is_empty() {
            return Verdict::Go;
        }
        Verdict::Wait
    }
}

impl MasterMachine {
    fn seen(&self) -> Vec<Seen> {
        self.pos
            .iter()
            .map(|p| match &p.state {
                State::Failed { .. } => Seen::Failed,
                State::Done { hook, .. } => Seen::Done { ok: hook.as_ref().is_none_or(|(c, _)| *c == 0) },
                s => Seen::Live { ready: s.kind() == PoState::Ready },
            })
            .collect()
    }

    /// Whether po `i` is a canary the master still needs to hear from (its link stays open).
    pub(super) fn wave_holds(&self, i: usize) -> bool {
        self.wave.canaries.contains(&i) && matches!(self.wave.phase, WavePhase::Canary | WavePhase::Failed)
    }

    /// Steps the wave: commit canaries, give the go, or fail it. `commit`: with `together`,
    /// the master would commit now.
    pub(super) fn wave_step(&mut self, commit: bool) {
        if !self.wave.on() {
            return;
        }
        let Some(plan) = self.plan.as_ref() else { return };
        let (transfer, each) = (plan.transfer, plan.class.publish == Publish::Each);
        // After the go, the rest publish as they are ready (`each`), or when the master
        // would commit (`together`: a po ready late, as without a wave).
        if self.wave.phase == WavePhase::Rest {
            if each || commit {
                self.commit_rest();
            }
            return;
        }
        loop {
            let seen = self.seen();
            match self.wave.look(&seen, each, commit) {
                Verdict::Wait => break,
                Verdict::Canaries(new) => {
                    for i in new {
                        let p = &mut self.pos[i];
                        log::info!("event=canary_commit transfer={transfer} po={}", p.name);
                        if let Some(conn) = p.conn {
                            self.out
                                .push_back(Action::Send { conn, msg: Msg::Wave { transfer, step: WaveStep::Canary } });
                            p.state = State::Committing;
                        }
                        self.wave.canaries.push(i);
                    }
                    self.wave.canaries.sort_unstable();
                    self.wave.phase = WavePhase::Canary;
                }
                Verdict::Go => {
                    let names: Vec<&str> = self.wave.canaries.iter().map(|&i| self.pos[i].name.as_str()).collect();
                    log::info!("event=wave_go transfer={transfer} canaries={}", names.join(","));
                    self.wave.phase = WavePhase::Rest;
                    for &i in &self.wave.canaries {
                        if let Some(conn) = self.pos[i].conn {
                            let msg = Msg::Wave { transfer, step: WaveStep::Decided };
                            self.out.push_back(Action::Send { conn, msg });
                        }
                    }
                    self.commit_rest();
                    break;
                }
                Verdict::Failed(i) => {
                    self.wave_failed(transfer, i);
                    break;
                }
            }
        }
    }

    /// After the go: COMMIT every ready po that is no canary.
    pub(super) fn commit_rest(&mut self) {
        let Some(transfer) = self.plan.as_ref().map(|p| p.transfer) else { return };
        for (i, p) in self.pos.iter_mut().enumerate() {
            if self.wave.canaries.contains(&i) || p.kind() != PoState::Ready {
                continue;
            }
            if let Some(conn) = p.conn {
                self.out.push_back(Action::Send { conn, msg: Msg::Commit { transfer } });
                p.state = State::Committing;
            }
        }
    }

    /// Canary `i` failed: the canaries that published roll back, the rest abort.
    fn wave_failed(&mut self, transfer: u64, i: usize) {
        let why = match &self.pos[i].state {
            State::Done { hook: Some((c, _)), .. } => format!("hook_exit={c}"),
            State::Failed { error } => crate::proto::text::quoted(error),
            _ => String::new(),
        };
        log::error!("event=canary_failed transfer={transfer} po={} error={why}", self.pos[i].name);
        self.wave.phase = WavePhase::Failed;
        for j in 0..self.pos.len() {
            let canary = self.wave.canaries.contains(&j);
            let p = &mut self.pos[j];
            match (canary, p.kind(), p.conn) {
                (_, PoState::Failed, _) => {}
                // Published or publishing: put the old tree back (the po answers FAILED).
                (true, PoState::Done | PoState::Committing, Some(conn)) => {
                    self.out.push_back(Action::Send { conn, msg: Msg::Wave { transfer, step: WaveStep::Rollback } });
                    p.state = State::Committing;
                }
                (true, ..) => p.state = State::Failed { error: "canary lost before its rollback".into() },
                (false, _, conn) => {
                    if let Some(conn) = conn {
                        let reason = "the canary wave failed".to_string();
                        self.out.push_back(Action::Send { conn, msg: Msg::Abort { transfer, reason } });
                    }
                    p.state = State::Failed { error: "not committed: the canary wave failed".into() };
                }
            }
        }
    }

    /// The result, turned into `canary_failed` when the wave failed.
    pub(super) fn wave_result(&self, result: TransferResult) -> TransferResult {
        match result {
            TransferResult::Ok(r) | TransferResult::Partial(r) | TransferResult::Failed(r)
                if self.wave.phase == WavePhase::Failed =>
            {
                TransferResult::CanaryFailed(r)
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const R: Seen = Seen::Live { ready: true };
    const S: Seen = Seen::Live { ready: false };
    const OK: Seen = Seen::Done { ok: true };

    #[test]
    fn together_picks_the_first_k_ready_pos_when_the_master_would_commit() {
        let w = Wave::new(2);
        assert_eq!(w.look(&[R, R, R], false, false), Verdict::Wait);
        assert_eq!(w.look(&[Seen::Failed, R, R, R], false, true), Verdict::Canaries(vec![1, 2]));
    }

    #[test]
    fn go_only_when_every_canary_published_with_a_good_hook() {
        let mut w = Wave::new(2);
        w.canaries = vec![0, 1];
        w.phase = WavePhase::Canary;
        assert_eq!(w.look(&[OK, S, R], false, true), Verdict::Wait);
        assert_eq!(w.look(&[OK, OK, R], false, true), Verdict::Go);
        assert_eq!(w.look(&[OK, Seen::Done { ok: false }, R], false, true), Verdict::Failed(1));
        assert_eq!(w.look(&[Seen::Failed, OK, R], false, true), Verdict::Failed(0));
        // A po that is no canary failing does not fail the wave.
        assert_eq!(w.look(&[OK, OK, Seen::Failed], false, true), Verdict::Go);
    }

    #[test]
    fn each_waits_for_the_first_k_live_pos_and_skips_failed_ones() {
        let mut w = Wave::new(2);
        // Po 2 is ready first, but pos 0 and 1 are the canaries.
        assert_eq!(w.look(&[S, S, R], true, false), Verdict::Wait);
        assert_eq!(w.look(&[R, S, R], true, false), Verdict::Canaries(vec![0]));
        w.canaries = vec![0];
        w.phase = WavePhase::Canary;
        assert_eq!(w.look(&[OK, S, R], true, false), Verdict::Wait, "po 1 is a canary still staging");
        // Po 1 fails before it is committed: po 2 takes its place.
        assert_eq!(w.look(&[OK, Seen::Failed, R], true, false), Verdict::Canaries(vec![2]));
        w.canaries = vec![0, 2];
        assert_eq!(w.look(&[OK, Seen::Failed, OK], true, false), Verdict::Go);
    }

    #[test]
    fn a_decided_wave_says_nothing_more() {
        let mut w = Wave::new(1);
        w.canaries = vec![0];
        w.phase = WavePhase::Failed;
        assert_eq!(w.look(&[Seen::Failed, R], false, true), Verdict::Wait);
        w.phase = WavePhase::Rest;
        assert_eq!(w.look(&[OK, R], false, true), Verdict::Wait);
    }
}
