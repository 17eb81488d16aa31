//! A dry-run offer (`OFFER_DRY_RUN`): the same checks as a real offer (the CAC's word, the
//! dest, the fence, the manifest), then the store says what a push would change, with no
//! stage, no dest and no state made; the delta CHECK goes to the master as for a real push, so
//! that the bytes said to travel leave out what the published copy holds. PREVIEW answers.

use super::*;
use crate::proto::msg::Preview;

/// A dry run waiting for the digests of its CHECK.
pub(super) struct DryRun {
    transfer: u64,
    manifest: Manifest,
    dest: String,
    preview: Preview,
    check: Vec<u64>,
}

impl<S: Store> PoMachine<S> {
    pub(super) fn dry_run(
        &mut self,
        now: Instant,
        master: ConnId,
        transfer: u64,
        manifest: Manifest,
        (class, dest): (ClassCfg, String),
        itemize: bool,
    ) {
        // The master's answer must fit one frame, as for a real CHECK.
        let max_check = if class.delta { (MAX_CONTROL as usize - 64) / 40 } else { 0 };
        let (mut preview, check) = match self.store.preview(&dest, &manifest, class.mirror, itemize, max_check) {
            Ok(p) => p,
            Err(e) => {
                log::warn!(
                    "event=offer_refused transfer={transfer} dry_run=1 class={} error={}",
                    class.name,
                    crate::proto::text::quoted(e.to_string())
                );
                return self.refuse(master, Reason::Disk, e.to_string());
            }
        };
        preview.transfer = transfer;
        // Nothing more is taken from this master but the digests (or the close).
        if let Some(c) = self.conns.get_mut(&master) {
            c.deadline = Some(now + MASTER_IDLE);
        }
        if check.is_empty() {
            return self.send_preview(master, preview);
        }
        self.send(master, Msg::Check { transfer, blocks: check.clone() });
        self.dry.insert(master, DryRun { transfer, manifest, dest, preview, check });
    }

    /// The master's digests for a dry run's CHECK: blocks the published copy holds do not travel.
    pub(super) fn on_dry_run_sums(&mut self, master: ConnId, transfer: u64, sums: Vec<(u64, Digest)>) {
        let Some(d) = self.dry.remove(&master).filter(|d| d.transfer == transfer) else {
            return self.refuse(master, Reason::Protocol, "CHECKSUMS with no CHECK asked".into());
        };
        // Only blocks we asked about, each once.
        let mut sums: Vec<(u64, Digest)> = sums.into_iter().filter(|(b, _)| d.check.binary_search(b).is_ok()).collect();
        sums.sort_by_key(|(b, _)| *b);
        sums.dedup_by_key(|(b, _)| *b);
        let held = self.store.preview_check(&d.dest, &d.manifest, &sums);
        let mut preview = d.preview;
        let kept: u64 = held.iter().filter_map(|&b| d.manifest.block(b)).map(|r| r.len as u64).sum();
        preview.bytes = preview.bytes.saturating_sub(kept);
        self.send_preview(master, preview);
    }

    fn send_preview(&mut self, master: ConnId, p: Preview) {
        log::info!(
            "event=dry_run transfer={} create={} change={} delete={} bytes={}",
            p.transfer,
            p.create,
            p.change,
            p.delete,
            p.bytes
        );
        self.send(master, Msg::Preview(Box::new(p)));
    }
}
