//! How a transfer ended, as data: `app::outcome` turns it into the exit code, the summary line
//! and the per-po lines.

use crate::proto::msg::Preview;
use crate::proto::sites::SiteLink;
use crate::proto::ClassCfg;
use std::time::Duration;

/// How the transfer ended, as data: `app::outcome` turns it into the exit code, the summary
/// line and the per-po lines.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// 0 when the CAC granted none.
    pub transfer: u64,
    pub class: String,
    pub result: TransferResult,
}

#[derive(Debug, Clone)]
pub enum TransferResult {
    /// No CAC answered, or the CAC refused this master or the class.
    Denied(String),
    /// The source could not be planned; nothing was offered.
    SourceFailed(String),
    DryRun(Box<DryRun>),
    /// Every po committed (a hook may still have failed).
    Ok(Ran),
    /// Some pos committed and some failed.
    Partial(Ran),
    /// No po committed (or the class timeout came first).
    Failed(Ran),
    /// SIGINT or SIGTERM: the pos that had not published were told to abort (with
    /// `publish = each`, those that had count as committed).
    Aborted(Ran),
    /// A canary failed (its publish or its hook): the canaries rolled back, and no other po
    /// published.
    CanaryFailed(Ran),
}

impl TransferResult {
    /// The `result=` word: the transfer's final state as the CAC shows it.
    pub fn name(&self) -> &'static str {
        match self {
            TransferResult::Denied(_) => "denied",
            TransferResult::SourceFailed(_) | TransferResult::Failed(_) => "failed",
            TransferResult::DryRun(_) => "dry-run",
            TransferResult::Ok(_) => "ok",
            TransferResult::Partial(_) => "partial",
            TransferResult::Aborted(_) => "aborted",
            TransferResult::CanaryFailed(_) => "canary_failed",
        }
    }

    /// What ran, for the results of a transfer that offered its tree.
    pub fn ran(&self) -> Option<&Ran> {
        match self {
            TransferResult::Ok(r)
            | TransferResult::Partial(r)
            | TransferResult::Failed(r)
            | TransferResult::Aborted(r)
            | TransferResult::CanaryFailed(r) => Some(r),
            TransferResult::Denied(_) | TransferResult::SourceFailed(_) | TransferResult::DryRun(_) => None,
        }
    }
}

/// What a dry run found: the class, the tree and the pos it would go to.
#[derive(Debug, Clone)]
pub struct DryRun {
    pub class: ClassCfg,
    pub files: usize,
    pub dirs: usize,
    pub symlinks: usize,
    pub bytes: u64,
    pub blocks: u64,
    pub block_size: u32,
    pub pos: Vec<String>,
    /// Each po's answer, in class order: what it would change, or why it failed as the real
    /// push would.
    pub answers: Vec<(String, Result<Preview, String>)>,
}

/// A transfer that ran.
#[derive(Debug, Clone)]
pub struct Ran {
    /// The manifest's bytes and blocks.
    pub bytes: u64,
    pub blocks: u64,
    pub elapsed: Duration,
    /// Blocks (bytes) this master uploaded itself.
    pub master_blocks: u64,
    pub master_bytes: u64,
    pub pos: Vec<PoOutcome>,
    /// Source files left out because they could not be read. Reserved: always 0 until the
    /// opt-in skip of unreadable files exists.
    pub skipped: u64,
    /// With site labels (issue 17): bytes per site link, and bytes that entered each remote
    /// site from outside it. Empty without labels.
    pub site_links: Vec<SiteLink>,
    pub site_in: Vec<(String, u64)>,
}

/// How one po ended: every po has committed or failed when a transfer ends.
#[derive(Debug, Clone)]
pub struct PoOutcome {
    pub name: String,
    /// `None` if it committed; otherwise why it failed.
    pub failed: Option<String>,
    /// The hook's exit code and the tail of its output, if the po ran one.
    pub hook: Option<(i32, String)>,
    /// It committed by holding the tree already: nothing was written there.
    pub unchanged: bool,
}
