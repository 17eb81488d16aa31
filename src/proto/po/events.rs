//! Events by connection kind: connections established and closed, frames, and timeouts.

use super::*;

impl<S: Store> PoMachine<S> {
    pub(super) fn on_master_frame(&mut self, now: Instant, conn: ConnId, transfer: Option<u64>, msg: Msg) {
        match msg {
            Msg::Block { head, data } if Some(head.transfer) == transfer => {
                self.on_block(now, conn, From::Control, head, data)
            }
            Msg::Peers { transfer: t, me, master_key, links } if Some(t) == transfer => {
                self.on_peers(now, t, me, master_key, links)
            }
            Msg::Push { transfer: t, block, to } if Some(t) == transfer => self.on_push(now, t, block, to),
            Msg::Sums { transfer: t, sums } if Some(t) == transfer => self.on_sums(now, t, sums),
            Msg::Chain { transfer: t, next, set } if Some(t) == transfer => self.on_chain(t, next, set),
            Msg::CheckSums { transfer: t, sums } if Some(t) == transfer => self.on_check_sums(t, sums),
            Msg::Commit { transfer: t } if Some(t) == transfer => match self.transfers.get(&t).map(|x| &x.state) {
                Some(TState::Ready) => self.publish(t),
                Some(TState::Published { .. }) => {}
                _ => self.fail(t, "COMMIT before every block was held".into()),
            },
            Msg::Wave { transfer: t, step } if Some(t) == transfer => self.on_wave(t, step),
            // Before ACCEPT: the stage being built for it is aborted.
            Msg::Abort { transfer: t, reason } if transfer.is_none() && self.staging(conn) == Some(t) => {
                log::warn!("event=transfer_abort transfer={t} reason={}", crate::proto::text::quoted(&reason));
                self.drop_pending(conn);
            }
            Msg::Abort { transfer: t, reason } if Some(t) == transfer => {
                log::warn!("event=transfer_abort transfer={t} reason={}", crate::proto::text::quoted(&reason));
                if let Some(x) = self.transfers.remove(&t) {
                    if !matches!(x.state, TState::Published { .. }) {
                        self.store.abort(t, true);
                    } else {
                        // A canary keeps the new tree: the old one kept aside goes.
                        self.store.decide(t);
                    }
                }
            }
            // The master counts a po that never answers as lost (its `silent_timeout`).
            Msg::Ping if transfer.is_some() => self.send(conn, Msg::Ping),
            Msg::Ping => {}
            Msg::StatQuery => self.stat_reply(conn),
            other => {
                log::warn!("event=protocol_error role=po error=\"unexpected {:?} from master\"", other.ty());
                self.refuse(conn, Reason::Protocol, format!("unexpected {:?}", other.ty()));
            }
        }
    }

    /// An outbound connection is up: a neighbour gets our hello, a CAC our question.
    pub(super) fn on_connected(&mut self, now: Instant, conn: ConnId) {
        if let Some(Conn { kind: ConnKind::Peer { transfer, idx, .. }, .. }) = self.conns.get(&conn) {
            let (transfer, idx) = (*transfer, *idx);
            let Some(t) = self.transfers.get(&transfer) else { return };
            // Peer links are dialled only once PEERS came.
            let Some(j) = t.swarm.joined() else { return };
            let proof = j.link_keys.get(&idx).copied().unwrap_or_default();
            let msg = Msg::PeerHello { token: t.token.clone(), me: j.me, proof };
            self.send(conn, msg);
            self.out.push_back(Action::ShortQueue { conn });
            if let Some(c) = self.conns.get_mut(&conn) {
                c.deadline = None;
            }
            return self.flush_waiting(now, transfer, idx);
        }
        let Some(Conn { kind: ConnKind::Cac { master, .. }, .. }) = self.conns.get(&conn) else { return };
        let master = *master;
        let presenter = self.conns.get(&master).and_then(|c| c.peer).map(|p| p.ip().to_string());
        let (Some(p), Some(presenter)) = (self.pending.get(&master), presenter) else { return };
        let msg = Msg::Verify { token: p.token.clone(), po: p.po.clone(), presenter };
        self.send(conn, msg);
    }

    pub(super) fn on_frame(&mut self, now: Instant, conn: ConnId, msg: Msg) {
        let Some(c) = self.conns.get_mut(&conn) else { return };
        match (&c.kind, msg) {
            // What the master calls us (`po`) is only its business.
            (ConnKind::New, Msg::Offer { token, po: _, manifest_id, manifest_len, mode }) => {
                self.on_offer(now, conn, token, Announced { id: manifest_id, len: manifest_len, mode })
            }
            (ConnKind::Master { transfer: None }, Msg::Manifest { transfer, manifest }) => {
                self.on_manifest(now, conn, transfer, &manifest)
            }
            (ConnKind::Master { transfer: None }, Msg::CheckSums { transfer, sums }) => {
                self.on_dry_run_sums(conn, transfer, sums)
            }
            // A master whose `cac =` lists this po: say what we are.
            (ConnKind::New, Msg::AuthRequest { .. }) => {
                log::warn!("event=protocol_error role=po error=\"AuthRequest: a master takes this po for a CAC\"");
                let text = "unexpected AuthRequest: this address is a po (wugui-po), not a CAC";
                self.refuse(conn, Reason::Protocol, text.into());
            }
            (ConnKind::New, Msg::PeerHello { token, me, proof }) => self.on_peer_hello(now, conn, &token, me, proof),
            (ConnKind::Peer { transfer, idx, .. }, Msg::Block { head, data }) if head.transfer == *transfer => {
                let idx = *idx;
                self.on_block(now, conn, From::Peer(idx), head, data)
            }
            (ConnKind::MasterData { transfer }, Msg::Block { head, data }) if head.transfer == *transfer => {
                self.on_block(now, conn, From::MasterData, head, data)
            }
            (ConnKind::Peer { .. } | ConnKind::MasterData { .. }, Msg::Ping) => {}
            // Anything else from a neighbour is its fault; no block of ours can be named.
            (ConnKind::Peer { transfer, idx }, other) => {
                let (transfer, idx) = (*transfer, *idx);
                let why = match &other {
                    Msg::Block { head, .. } => format!("block for transfer {}", head.transfer),
                    m => format!("unexpected {:?}", m.ty()),
                };
                self.peer_fault(conn, transfer, None, idx, &why)
            }
            (ConnKind::New | ConnKind::Stat, Msg::StatQuery) => {
                c.kind = ConnKind::Stat;
                c.deadline = Some(now + MASTER_IDLE);
                self.stat_reply(conn);
            }
            (ConnKind::Master { transfer }, msg) => {
                let transfer = *transfer;
                if transfer.is_some() {
                    c.deadline = Some(now + MASTER_IDLE);
                }
                self.on_master_frame(now, conn, transfer, msg)
            }
            (ConnKind::Cac { master, .. }, Msg::VerifyOk { transfer, class_name, class }) => {
                let master = *master;
                self.conns.remove(&conn);
                self.out.push_back(Action::Close { conn });
                self.on_verified(now, master, transfer, &class, &class_name);
            }
            (ConnKind::Cac { master, .. }, Msg::Denied { reason, text }) => {
                // The CAC has spoken: pass its refusal on, don't ask another.
                let master = *master;
                self.conns.remove(&conn);
                log::warn!("event=offer_refused reason={} error={}", reason.name(), crate::proto::text::quoted(&text));
                self.refuse(master, reason, text);
            }
            (_, other) => {
                let ty = other.ty();
                log::warn!("event=protocol_error role=po error=\"unexpected {ty:?}\"");
                if matches!(c.kind, ConnKind::Cac { .. }) {
                    self.cac_failed(now, conn, "CAC sent an unexpected message");
                } else {
                    self.refuse(conn, Reason::Protocol, format!("unexpected {ty:?}"));
                }
            }
        }
    }

    pub(super) fn on_closed(&mut self, now: Instant, conn: ConnId, reason: Close) {
        let Some(c) = self.conns.get(&conn) else { return };
        match c.kind {
            ConnKind::Cac { .. } => {
                self.cac_failed(now, conn, &reason.or("closed"));
            }
            ConnKind::Master { transfer } => {
                self.conns.remove(&conn);
                self.drop_pending(conn);
                self.dry.remove(&conn);
                // Staged blocks stay for a master that comes back; what was published stays.
                // The swarm's links go: only this master could schedule them.
                if let Some(id) = transfer.filter(|t| self.transfers.get(t).is_some_and(|x| x.master == Some(conn))) {
                    self.close_swarm_links(id);
                }
                if let Some(t) = transfer.and_then(|t| self.transfers.get_mut(&t)) {
                    if t.master == Some(conn) {
                        t.master = None;
                        if t.state.live() {
                            t.release_at = Some(now + self.settings.release_after);
                            log::warn!(
                                "event=master_lost transfer={} class={} held={}/{} error={}",
                                transfer.unwrap_or(0),
                                t.class.name,
                                t.nheld,
                                t.manifest.blocks(),
                                crate::proto::text::quoted(&reason)
                            );
                        }
                    }
                }
            }
            // A neighbour's undecodable bytes (`Close::Decode`) name no block, so the master
            // is not told: the link just goes.
            ConnKind::Peer { transfer, idx, .. } => {
                self.conns.remove(&conn);
                let receiving =
                    self.transfers.get(&transfer).is_some_and(|t| matches!(t.state, TState::Receiving { .. }));
                if receiving || reason != Close::Eof {
                    log::info!(
                        "event=peer_lost transfer={transfer} peer=po#{idx} error={}",
                        crate::proto::text::quoted(&reason)
                    );
                }
                if reason != Close::Eof {
                    self.stats.peer_errors += 1;
                }
                self.peer_lost(transfer, idx, conn);
            }
            ConnKind::New | ConnKind::Stat => {
                // A stranger that sent garbage: one line saying who and why.
                if let (false, Some(c)) = (reason == Close::Eof, self.conns.remove(&conn)) {
                    let peer = c.peer.map(|p| p.to_string()).unwrap_or_default();
                    log::warn!(
                        "event=protocol_error role=po peer={peer} error={}",
                        crate::proto::text::quoted(&reason)
                    );
                    self.stats.protocol_errors += 1;
                }
                self.conns.remove(&conn);
            }
            ConnKind::MasterData { .. } => {
                self.conns.remove(&conn);
            }
        }
    }

    /// Connections past their deadline: a CAC that does not answer is failed over, the rest close.
    pub(super) fn conn_timeouts(&mut self, now: Instant) {
        let due: Vec<ConnId> =
            self.conns.iter().filter(|(_, c)| c.deadline.is_some_and(|d| d <= now)).map(|(k, _)| *k).collect();
        for conn in due {
            match self.conns.get(&conn).map(|c| matches!(c.kind, ConnKind::Cac { .. })) {
                Some(true) => self.cac_failed(now, conn, "timed out"),
                Some(false) => {
                    log::info!("event=conn_timeout role=po conn={conn}");
                    self.handle_event(now, Event::Closed { conn, reason: Close::TimedOut });
                    self.out.push_back(Action::Close { conn });
                }
                None => {}
            }
        }
    }

    /// Transfers whose master stayed away past `release_after`: the store closes their files.
    pub(super) fn release_timeouts(&mut self, now: Instant) {
        for (id, t) in self.transfers.iter_mut().filter(|(_, t)| t.release_at.is_some_and(|d| d <= now)) {
            t.release_at = None;
            log::info!(
                "event=transfer_released transfer={id} class={} held={}/{}",
                t.class.name,
                t.nheld,
                t.manifest.blocks()
            );
            self.store.release(*id);
        }
    }

    /// Pushes whose link never came up go back to the master.
    pub(super) fn link_wait_timeouts(&mut self, now: Instant) {
        let ids: Vec<u64> = self.transfers.keys().copied().collect();
        for id in ids {
            let Some(t) = self.transfers.get_mut(&id) else { continue };
            let mut expired = Vec::new();
            for (idx, list) in t.waiting.iter_mut() {
                list.retain(|(b, at)| {
                    let keep = now.duration_since(*at) < LINK_WAIT;
                    if !keep {
                        expired.push((*idx, *b));
                    }
                    keep
                });
            }
            t.waiting.retain(|_, l| !l.is_empty());
            if let Some(m) = t.master {
                for (to, block) in expired {
                    self.send(m, Msg::Unsent { transfer: id, block, to, why: "no link to that peer".into() });
                }
            }
        }
    }

    /// Whole-transfer timeout: a transfer nobody finished is dropped, its blocks kept.
    /// Finished ones are forgotten then too.
    pub(super) fn transfer_timeouts(&mut self, now: Instant) {
        let stale: Vec<u64> = self
            .transfers
            .iter()
            .filter(|(_, t)| t.master.is_none() && now.duration_since(t.started) > Duration::from_secs(t.class.timeout))
            .map(|(k, _)| *k)
            .collect();
        for id in stale {
            if let Some(t) = self.transfers.remove(&id) {
                if t.state.live() {
                    log::warn!("event=transfer_expired transfer={id} class={}", t.class.name);
                }
                // Whatever the store still holds for it (a published one's folder too) goes.
                self.store.abort(id, true);
            }
        }
    }
}
