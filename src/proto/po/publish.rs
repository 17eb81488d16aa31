//! The end of a transfer: sealed once every block is held, published (at once with
//! `publish = each`, else on COMMIT), its hook run, DONE reported; or failed. A push that
//! changes nothing publishes nothing, runs the hook only with `hook_on_unchanged`, and says
//! so in DONE.

use super::*;
use crate::proto::Published;

impl<S: Store> PoMachine<S> {
    /// Seals a transfer that holds every block, and publishes it at once with `publish = each`.
    pub(super) fn maybe_ready(&mut self, transfer: u64) {
        let Some(t) = self.transfers.get_mut(&transfer) else { return };
        if !matches!(t.state, TState::Receiving { .. }) || t.nheld < t.manifest.blocks() || t.disk.is_some() {
            return;
        }
        // Sealing (attributes of every entry, syncfs) takes seconds for a big tree: off the loop.
        if let Some(job) = self.store.seal_job(transfer) {
            log::info!("event=disk_job transfer={transfer} job={} kind=seal", job.id);
            t.disk = Some(job.id);
            return self.out.push_back(Action::Disk(job));
        }
        if let Err(e) = self.store.seal(transfer) {
            return self.fail(transfer, e.to_string());
        }
        self.sealed(transfer);
    }

    /// The resume record's checkpoint (a syncfs), when due, off the loop. Its `DiskDone`
    /// concerns only the store: the transfer waits for nothing.
    pub(super) fn checkpoint(&mut self, transfer: u64) {
        if let Some(job) = self.store.checkpoint_job(transfer) {
            self.out.push_back(Action::Disk(job));
        }
    }

    /// The stage is sealed: READY, and with `publish = each` publish at once.
    pub(super) fn sealed(&mut self, transfer: u64) {
        let Some(t) = self.transfers.get_mut(&transfer) else { return };
        t.state = TState::Ready;
        log::info!("event=po_ready transfer={transfer} class={} bytes={}", t.class.name, t.bytes);
        let (master, each) = (t.master, t.class.publish == Publish::Each && !t.hold);
        // Every HAVE before READY: the master takes none after DONE.
        self.flush_haves();
        if let Some(m) = master {
            self.send(m, Msg::Ready { transfer });
        }
        if each {
            self.publish(transfer);
        }
    }

    pub(super) fn publish(&mut self, transfer: u64) {
        let Some(t) = self.transfers.get(&transfer) else { return };
        if !matches!(t.state, TState::Ready) {
            return;
        }
        if let Some(why) = self.fence_publish(transfer, &t.dest) {
            return self.fail(transfer, why);
        }
        let Some(t) = self.transfers.get_mut(&transfer) else { return };
        match self.store.publish(transfer, t.class.flag_file.as_deref(), t.class.mirror) {
            Ok(Published { files, bytes, unchanged }) => {
                // The fence: nothing older goes to this dest from now on (an unchanged push too).
                let last = self.published.entry(t.dest.clone()).or_insert(transfer);
                *last = (*last).max(transfer);
                let class = &t.class.name;
                if unchanged {
                    self.stats.transfers_unchanged += 1;
                    log::info!("event=unchanged transfer={transfer} class={class} files={files} bytes={bytes}");
                } else {
                    self.stats.transfers_published += 1;
                    log::info!("event=publish transfer={transfer} class={class} files={files} bytes={bytes}");
                }
                let published = |hook| TState::Published { hook, unchanged };
                let Some(name) = t.class.hook.clone() else {
                    t.state = published(Hook::Absent);
                    return self.report_done(transfer);
                };
                if unchanged && !t.class.hook_on_unchanged {
                    t.state = published(Hook::Skipped);
                    return self.report_done(transfer);
                }
                let Some(dir) = self.settings.hook_dir.clone() else {
                    let tail = format!("hook {name}: this po has no hook_dir");
                    t.state = published(Hook::Ran { exit: -1, tail });
                    return self.report_done(transfer);
                };
                t.state = published(Hook::Running);
                let env = vec![
                    ("WUGUI_TRANSFER".to_string(), transfer.to_string()),
                    ("WUGUI_CLASS".to_string(), t.class.name.clone()),
                    ("WUGUI_DEST".to_string(), t.dest.clone()),
                    ("WUGUI_FILES".to_string(), files.to_string()),
                    ("WUGUI_BYTES".to_string(), bytes.to_string()),
                ];
                let timeout = Duration::from_secs(t.class.hook_timeout);
                self.out.push_back(Action::RunHook { id: transfer, dir, name, env, timeout });
            }
            Err(e) => self.fail(transfer, format!("publish: {e}")),
        }
    }

    /// DONE to the master, with the hook's result when there was one.
    pub(super) fn report_done(&mut self, transfer: u64) {
        let Some(t) = self.transfers.get(&transfer) else { return };
        let (files, bytes) = (t.manifest.files() as u64, t.manifest.bytes());
        let (hook_exit, hook_tail) = match &t.state {
            TState::Published { hook: Hook::Ran { exit, tail }, .. } => (Some(*exit), tail.clone()),
            _ => (None, String::new()),
        };
        let unchanged = matches!(t.state, TState::Published { unchanged: true, .. });
        if let Some(m) = t.master {
            self.send(m, Msg::Done { transfer, files, bytes, hook_exit, hook_tail, unchanged });
        }
    }

    pub(super) fn on_hook_done(&mut self, transfer: u64, exit: i32, tail: String) {
        // A canary rolled back while its hook ran has reported already.
        let Some(t) = self.transfers.get_mut(&transfer).filter(|t| matches!(t.state, TState::Published { .. })) else {
            return;
        };
        let name = t.class.hook.clone().unwrap_or_default();
        if exit == 0 {
            log::info!("event=hook_done transfer={transfer} hook={name} exit=0");
        } else {
            let last = tail.lines().last().unwrap_or("").replace('"', "'");
            log::warn!(
                "event=hook_failed transfer={transfer} hook={name} exit={exit} tail={}",
                crate::proto::text::quoted(&last)
            );
            self.stats.hook_failures += 1;
        }
        if let TState::Published { hook, .. } = &mut t.state {
            *hook = Hook::Ran { exit, tail };
        }
        self.report_done(transfer);
    }

    /// This po gives up on `transfer`; what was published before stays.
    pub(super) fn fail(&mut self, transfer: u64, error: String) {
        let Some(t) = self.transfers.get_mut(&transfer) else { return };
        log::error!(
            "event=po_failed transfer={transfer} class={} error={}",
            t.class.name,
            crate::proto::text::quoted(&error)
        );
        if t.state.live() {
            self.stats.transfers_failed += 1;
        }
        t.state = TState::Failed;
        self.store.abort(transfer, true);
        if let Some(m) = t.master.take() {
            self.send(m, Msg::Failed { transfer, error });
        }
    }
}
