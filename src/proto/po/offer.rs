//! An offer from a master: the CAC's word on its token (asking the CACs in order), the new or
//! resumed transfer it starts, and the delta/resume CHECK that may come before ACCEPT.

use super::super::disk::{DiskOutput, JobDone, StageOptions, StoreError};
use super::*;

impl<S: Store> PoMachine<S> {
    /// Asks CAC number `cac` (or gives up when the list is exhausted).
    pub(super) fn ask_cac(&mut self, now: Instant, master: ConnId, cac: Failover) {
        let Some(addr) = cac.cac(&self.settings.cacs) else {
            log::error!("event=cac_unreachable role=po error=\"no CAC of {} answered\"", self.settings.cacs.len());
            return self.refuse(master, Reason::NoCac, "the po could reach no CAC to verify the token".into());
        };
        let conn = self.next_conn;
        self.next_conn += 1;
        self.conns.insert(
            conn,
            Conn {
                peer: Some(addr),
                local: None,
                kind: ConnKind::Cac { master, cac },
                deadline: Some(now + self.settings.cac_timeout),
            },
        );
        self.out.push_back(Action::Connect { conn, addr });
    }

    /// The CAC at `conn` failed us: try the next one.
    pub(super) fn cac_failed(&mut self, now: Instant, conn: ConnId, why: &str) {
        if let Some(Conn { kind: ConnKind::Cac { master, cac }, .. }) = self.conns.remove(&conn) {
            self.out.push_back(Action::Close { conn });
            let next = cac.next("po", &self.settings.cacs, why);
            if self.pending.contains_key(&master) {
                self.ask_cac(now, master, next);
            }
        }
    }

    /// A master offers a transfer: nothing big is read until a CAC vouched for its token.
    pub(super) fn on_offer(&mut self, now: Instant, conn: ConnId, token: Vec<u8>, announced: Announced) {
        if announced.len > MAX_MANIFEST as u64 {
            let text = format!("a manifest of {} bytes is over the limit of {MAX_MANIFEST}", announced.len);
            log::warn!("event=offer_refused reason=bad_manifest error={}", crate::proto::text::quoted(&text));
            return self.refuse(conn, Reason::BadManifest, text);
        }
        if self.pending.len() + self.dry.len() >= MAX_PENDING {
            log::warn!("event=offer_refused reason=busy pending={MAX_PENDING}");
            let text = format!("this po has {MAX_PENDING} offers waiting for verification; try again later");
            return self.refuse(conn, Reason::Busy, text);
        }
        let po = self.identity(conn);
        self.pending.insert(conn, Pending { token, po, announced, step: Step::Cac });
        // Each CAC is given `cac_timeout` in turn; this only backs that up.
        let cacs = self.settings.cacs.len().max(1) as u32;
        if let Some(c) = self.conns.get_mut(&conn) {
            c.kind = ConnKind::Master { transfer: None };
            c.deadline = Some(now + HANDSHAKE + self.settings.cac_timeout * cacs);
        }
        self.ask_cac(now, conn, Failover::first());
    }

    /// Who this po says it is to the CAC about the offer on `conn`: its `advertise` address (or
    /// its bound one), else the address the master reached here with our listen port; never
    /// the address the master wrote in the offer, or a master could borrow another po's class.
    fn identity(&self, conn: ConnId) -> String {
        if let Some(a) = &self.settings.advertise {
            return a.clone();
        }
        let local = self.conns.get(&conn).and_then(|c| c.local);
        local.map(|l| SocketAddr::new(l.ip().to_canonical(), self.settings.listen_port).to_string()).unwrap_or_default()
    }

    /// The CAC vouched for the offer on `master`: resume the transfer, or ask for its manifest.
    pub(super) fn on_verified(
        &mut self,
        now: Instant,
        master: ConnId,
        transfer: u64,
        pairs: &[(String, String)],
        class_name: &str,
    ) {
        let Some(mut p) = self.pending.remove(&master) else { return };
        let Some((class, dest)) = self.judge_offer(master, transfer, &p.token, pairs, class_name) else { return };
        // The master is who its token says: the manifest and blocks may come.
        self.out.push_back(Action::FrameLimit { conn: master, max: NO_FRAME_LIMIT });
        let dry = p.announced.mode & crate::proto::msg::OFFER_DRY_RUN != 0;
        if dry {
            // A dry run is refused as the real push would be, and changes nothing here.
            if let Some(why) = self.newer_than(transfer, &dest) {
                log::warn!("event=offer_refused transfer={transfer} reason=superseded dry_run=1 dest={dest}");
                return self.refuse(master, Reason::Busy, why);
            }
        } else if self.resume(now, master, transfer, &p.announced.id) {
            return;
        }
        // An older push than the one this dest last published, or than one staging there now,
        // is refused before its manifest travels (README "Concurrent pushes").
        if !dry && !self.fence_offer(master, transfer, &dest) {
            return;
        }
        p.step = Step::Manifest { transfer, class: Box::new(class), dest };
        self.pending.insert(master, p);
        if let Some(c) = self.conns.get_mut(&master) {
            c.deadline = Some(now + MASTER_IDLE);
        }
        self.send(master, Msg::Verified { transfer });
    }

    /// The manifest we asked for: it must be the one the offer announced.
    pub(super) fn on_manifest(&mut self, now: Instant, master: ConnId, transfer: u64, bytes: &[u8]) {
        let Some(Pending { token, announced, step: Step::Manifest { transfer: t, class, dest }, .. }) =
            self.pending.remove(&master)
        else {
            return self.refuse(master, Reason::Protocol, "MANIFEST before the CAC vouched for the token".into());
        };
        if t != transfer {
            return self.refuse(master, Reason::Protocol, format!("MANIFEST for transfer {transfer}, not {t}"));
        }
        let manifest = match Self::check_manifest(bytes, &announced, &class) {
            Ok(m) => m,
            Err(e) => {
                log::warn!(
                    "event=offer_refused transfer={transfer} reason=bad_manifest error={}",
                    crate::proto::text::quoted(&e)
                );
                return self.refuse(master, Reason::BadManifest, e);
            }
        };
        if announced.mode & crate::proto::msg::OFFER_DRY_RUN != 0 {
            let itemize = announced.mode & crate::proto::msg::OFFER_ITEMIZE != 0;
            return self.dry_run(now, master, transfer, manifest, (*class, dest), itemize);
        }
        self.replace_stale(transfer, &manifest, &dest);
        let hold = announced.mode & crate::proto::msg::OFFER_HOLD != 0;
        self.start(now, master, transfer, (token, manifest, hold), *class, dest);
    }

    /// Decodes a manifest (its decoder allocates no more than `bytes` warrant) and checks it
    /// against the offer and the class.
    fn check_manifest(bytes: &[u8], announced: &Announced, class: &ClassCfg) -> Result<Manifest, String> {
        if bytes.len() as u64 != announced.len {
            return Err(format!("a manifest of {} bytes, the offer said {}", bytes.len(), announced.len));
        }
        let manifest = Manifest::decode(bytes).map_err(|e| e.to_string())?;
        if manifest.id() != announced.id {
            return Err("the manifest is not the one the offer named".into());
        }
        if class.block_size != 0 && class.block_size != manifest.block_size {
            return Err("manifest block size differs from the class".into());
        }
        Ok(manifest)
    }

    /// The class the CAC sent and where it lands here, or None once the offer is refused.
    fn judge_offer(
        &mut self,
        master: ConnId,
        transfer: u64,
        token: &[u8],
        pairs: &[(String, String)],
        class_name: &str,
    ) -> Option<(ClassCfg, String)> {
        // The token names the transfer; the CAC has checked its MAC.
        if Token::decode(token).map(|t| t.transfer) != Ok(transfer) {
            self.refuse(master, Reason::BadToken, "CAC answered for another transfer".into());
            return None;
        }
        let class = match ClassCfg::from_pairs(class_name, pairs) {
            Ok(c) => c,
            Err(e) => {
                self.refuse(master, Reason::Protocol, format!("CAC sent a bad class: {e}"));
                return None;
            }
        };
        let Some(dest) = self.dest_for(&class.dest) else {
            log::warn!(
                "event=offer_refused transfer={transfer} class={} reason=dest_not_allowed dest={}",
                class.name,
                class.dest
            );
            let text = format!("dest {} is outside allow_dest on this po", class.dest);
            self.refuse(master, Reason::DestNotAllowed, text);
            return None;
        };
        Some((class, dest))
    }

    /// A master that reconnects to a live transfer keeps its progress (true: done here). A
    /// failed transfer, or another tree under the same id, is dropped.
    fn resume(&mut self, now: Instant, master: ConnId, transfer: u64, manifest_id: &[u8; 16]) -> bool {
        let Some(t) = self.transfers.get_mut(&transfer) else { return false };
        // What to say again: CHECK still open, READY, DONE.
        let again = match &t.state {
            _ if t.manifest.id() != *manifest_id => None,
            TState::Receiving { checking } => Some((checking.clone(), false, false)),
            TState::Ready => Some((Vec::new(), true, false)),
            // A published transfer answers DONE again once its hook (if any) has run.
            TState::Published { hook, .. } => Some((Vec::new(), true, !matches!(hook, Hook::Running))),
            TState::Failed => None,
        };
        let Some((checking, ready, done)) = again else {
            // Nothing stays open for it while the new manifest is on its way.
            self.transfers.remove(&transfer);
            self.store.abort(transfer, true);
            return false;
        };
        t.master = Some(master);
        t.release_at = None;
        let have = bitmap(&t.held);
        let (busy, sealing) = (t.disk.is_some(), t.nheld == t.manifest.blocks());
        self.set_master(master, transfer, now);
        if busy && !sealing {
            return true; // ACCEPT goes out when the check ends
        }
        if !checking.is_empty() {
            self.send(master, Msg::Check { transfer, blocks: checking });
            return true;
        }
        self.send(master, Msg::Accept { transfer, have });
        if ready {
            self.send(master, Msg::Ready { transfer });
        }
        if done {
            self.report_done(transfer);
        }
        true
    }

    /// A rerun of the same tree to the same dest by a new master replaces a transfer whose
    /// master is gone. The same tree bound for another dest (another class) is another push.
    fn replace_stale(&mut self, transfer: u64, manifest: &Manifest, dest: &str) {
        let id = manifest.id();
        let stale: Vec<u64> = self
            .transfers
            .iter()
            .filter(|(_, t)| t.master.is_none() && t.manifest.id() == id && t.dest == dest)
            .map(|(k, _)| *k)
            .collect();
        for old in stale {
            log::info!("event=transfer_replaced transfer={old} by={transfer}");
            self.transfers.remove(&old);
            self.store.abort(old, true);
        }
    }

    /// A new transfer: stage it (keeping what an earlier stage holds), then CHECK or ACCEPT.
    fn start(
        &mut self,
        now: Instant,
        master: ConnId,
        transfer: u64,
        (token, manifest, hold): (Vec<u8>, Manifest, bool),
        class: ClassCfg,
        dest: String,
    ) {
        // Building the stage takes seconds for a big tree: off the loop; the offer waits.
        if let Some(job) = self.store.prepare_job(transfer, &dest, &manifest, class.delta) {
            log::info!("event=disk_job transfer={transfer} job={} kind=stage", job.id);
            let mode = if hold { crate::proto::msg::OFFER_HOLD } else { 0 };
            let (id, announced) = (job.id, Announced { id: manifest.id(), len: 0, mode });
            let step = Step::Stage { transfer, job: id, class: Box::new(class), dest, manifest: Box::new(manifest) };
            self.pending.insert(master, Pending { token, po: String::new(), announced, step });
            return self.out.push_back(Action::Disk(job));
        }
        let held = self.store.prepare(transfer, &dest, &manifest, class.delta);
        self.staged(now, master, transfer, (token, manifest, hold), class, dest, held);
    }

    /// The stage of a new transfer is prepared (or could not be): CHECK or ACCEPT.
    #[allow(clippy::too_many_arguments)]
    fn staged(
        &mut self,
        now: Instant,
        master: ConnId,
        transfer: u64,
        (token, manifest, hold): (Vec<u8>, Manifest, bool),
        class: ClassCfg,
        dest: String,
        held: Result<Vec<bool>, StoreError>,
    ) {
        let held = match held {
            Ok(h) if h.len() as u64 == manifest.blocks() => h,
            Ok(_) => vec![false; manifest.blocks() as usize],
            Err(e) => {
                log::error!(
                    "event=po_failed transfer={transfer} class={} error={}",
                    class.name,
                    crate::proto::text::quoted(&e)
                );
                return self.refuse(master, Reason::Disk, e.to_string());
            }
        };
        self.store.set_options(transfer, StageOptions::of(&class));
        if class.rate_limit > 0 {
            // The class caps what this host uploads to peers for the transfer.
            let cap = self.settings.max_upload_rate;
            let upload = if cap == 0 { class.rate_limit } else { cap.min(class.rate_limit) };
            self.out.push_back(Action::SetRates { upload, download: self.settings.max_download_rate });
        }
        let mut t = Transfer::new(class, manifest, held, token, dest, master, now);
        t.hold = hold;
        log::info!(
            "event=transfer_accept transfer={transfer} class={} dest={} files={} bytes={} held={} manifest={}",
            t.class.name,
            t.dest,
            t.manifest.files(),
            t.manifest.bytes(),
            t.nheld,
            hex(&t.manifest.id()[..6])
        );
        let have = bitmap(&t.held);
        self.transfers.insert(transfer, t);
        self.set_master(master, transfer, now);
        let mut check = self.store.candidates(transfer);
        // The master's answer (24 bytes a block) must fit one frame; the rest just travels.
        check.truncate((MAX_CONTROL as usize - 64) / 40);
        if !check.is_empty() {
            // Delta: the published copy may hold these; their digests decide, then ACCEPT.
            if let Some(t) = self.transfers.get_mut(&transfer) {
                t.state = TState::Receiving { checking: check.clone() };
            }
            return self.send(master, Msg::Check { transfer, blocks: check });
        }
        self.send(master, Msg::Accept { transfer, have });
        self.maybe_ready(transfer);
    }

    /// The master's digests for the blocks of our CHECK: keep what matches, then ACCEPT.
    pub(super) fn on_check_sums(&mut self, transfer: u64, sums: Vec<(u64, Digest)>) {
        let Some(t) = self.transfers.get_mut(&transfer) else { return };
        let TState::Receiving { checking } = &mut t.state else { return };
        if checking.is_empty() {
            return;
        }
        let asked: std::collections::HashSet<u64> = std::mem::take(checking).into_iter().collect();
        let mut sums: Vec<(u64, Digest)> = sums.into_iter().filter(|(b, _)| asked.contains(b)).collect();
        // One digest a block: a repeated block keeps its first.
        sums.sort_by_key(|(b, _)| *b);
        sums.dedup_by_key(|(b, _)| *b);
        // Reading and hashing old copies takes long (up to `REUSE_BUDGET`): off the loop.
        if let Some(job) = self.store.check_job(transfer, &sums) {
            log::info!("event=disk_job transfer={transfer} job={} kind=check blocks={}", job.id, sums.len());
            t.disk = Some(job.id);
            return self.out.push_back(Action::Disk(job));
        }
        let taken = self.store.check(transfer, &sums);
        self.checked(transfer, taken);
    }

    /// Disk job `id` ended. The store hears of it whatever became of the transfer meanwhile;
    /// the transfer goes on only if it still waits for this job.
    pub(super) fn on_disk_done(&mut self, now: Instant, transfer: u64, id: u64, out: Option<DiskOutput>) {
        let done = self.store.job_done(id, out);
        if let Some(master) = self.dry_run_of_job(id) {
            return self.on_dry_run_job(master, done);
        }
        let waiting = self.pending.iter().find(|(_, p)| matches!(p.step, Step::Stage { job, .. } if job == id));
        if let Some(master) = waiting.map(|(c, _)| *c) {
            let Some(p) = self.pending.remove(&master) else { return };
            let Step::Stage { class, dest, manifest, .. } = p.step else { return };
            let held = match done {
                Ok(Some(JobDone::Prepared(held))) => Ok(held),
                Ok(_) => Err(StoreError::Refused("the stage was taken over while it was built".into())),
                Err(e) => Err(e),
            };
            let hold = p.announced.mode & crate::proto::msg::OFFER_HOLD != 0;
            return self.staged(now, master, transfer, (p.token, *manifest, hold), *class, dest, held);
        }
        if let Ok(Some(JobDone::Prepared(_))) = done {
            // Its master went away while the stage was built: the stage stays for a resume.
            if !self.transfers.contains_key(&transfer) {
                self.store.abort(transfer, true);
            }
            return;
        }
        let Some(t) = self.transfers.get_mut(&transfer) else { return };
        if t.disk != Some(id) {
            return;
        }
        t.disk = None;
        if !matches!(t.state, TState::Receiving { .. }) {
            return;
        }
        match done {
            Ok(Some(JobDone::Checked(taken))) => self.checked(transfer, taken),
            Ok(Some(JobDone::Sealed)) => self.sealed(transfer),
            Ok(None | Some(JobDone::Prepared(_) | JobDone::Previewed(..) | JobDone::PreviewHeld(_))) => {}
            Err(e) => self.fail(transfer, e.to_string()),
        }
    }

    /// The blocks of our CHECK that this po holds after all: they count; then ACCEPT.
    fn checked(&mut self, transfer: u64, taken: Vec<u64>) {
        let Some(t) = self.transfers.get_mut(&transfer) else { return };
        for b in taken {
            t.hold(b);
        }
        let have = bitmap(&t.held);
        if let Some(m) = t.master {
            self.send(m, Msg::Accept { transfer, have });
        }
        self.maybe_ready(transfer);
    }

    pub(super) fn set_master(&mut self, conn: ConnId, transfer: u64, now: Instant) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.kind = ConnKind::Master { transfer: Some(transfer) };
            c.deadline = Some(now + MASTER_IDLE);
        }
    }

    /// Where class dest `dest` lands here, if it is allowed.
    pub(super) fn dest_for(&self, dest: &str) -> Option<String> {
        let inside = self.settings.allow_dest.iter().any(|a| {
            let a = a.trim_end_matches('/');
            dest == a || dest.strip_prefix(a).is_some_and(|rest| rest.starts_with('/')) || a.is_empty()
        });
        if !inside || dest.split('/').any(|c| c == "..") {
            return None;
        }
        Some(match &self.settings.root {
            Some(r) => format!("{}{dest}", r.trim_end_matches('/')),
            None => dest.to_owned(),
        })
    }
}
