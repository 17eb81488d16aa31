//! The resume record: which blocks of a manifest a stage holds durably, kept in the state dir
//! so that a po that restarts (or a master that is run again) fetches only the rest.
//!
//! Layout: `WGH1`, the manifest id (16 bytes), the block count (u64 BE), the have-bitmap.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::staged::Staged;
use crate::proto::bitmap::{bitmap, unpack};
use crate::proto::Manifest;

/// How often a po makes its held blocks durable for a resume.
pub const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);
const RECORD_MAGIC: &[u8; 4] = b"WGH1";

/// Where the record of the stage folder `stage` lives.
pub fn record_path(state_dir: &Path, stage: &str) -> PathBuf {
    state_dir.join(format!("{}.held", stage.trim_start_matches('.')))
}

/// The held blocks recorded for `manifest`, if a record of that exact manifest exists.
pub fn read_record(path: &Path, manifest: &Manifest) -> Option<Vec<bool>> {
    let b = std::fs::read(path).ok()?;
    let blocks = manifest.blocks() as usize;
    if b.len() != 4 + 16 + 8 + blocks.div_ceil(8) || &b[..4] != RECORD_MAGIC || b[4..20] != manifest.id() {
        return None;
    }
    if u64::from_be_bytes(b[20..28].try_into().ok()?) != blocks as u64 {
        return None;
    }
    Some(unpack(&b[28..], blocks))
}

impl Staged {
    /// Makes the staged data durable, then records which blocks it holds: a block in the
    /// record is always on disk. The record is replaced atomically.
    pub fn checkpoint(&mut self) -> io::Result<()> {
        self.checkpointed = Instant::now();
        if !self.dirty || !self.sync {
            return Ok(());
        }
        nix::unistd::syncfs(self.stage_fd.as_raw_fd())?;
        let mut b = Vec::with_capacity(28 + self.held.len() / 8 + 1);
        b.extend_from_slice(RECORD_MAGIC);
        b.extend_from_slice(&self.manifest.id());
        b.extend_from_slice(&(self.held.len() as u64).to_be_bytes());
        b.extend_from_slice(&bitmap(&self.held));
        let tmp = self.record.with_extension("tmp");
        let mut f = File::create(&tmp)?;
        f.write_all(&b)?;
        f.sync_data()?;
        std::fs::rename(&tmp, &self.record)?;
        self.dirty = false;
        Ok(())
    }

    /// Checkpoints, logging a failure (the transfer goes on; a resume just fetches more).
    pub fn checkpoint_or_warn(&mut self, transfer: u64) {
        if let Err(e) = self.checkpoint() {
            log::warn!(
                "event=checkpoint_failed transfer={transfer} error={}",
                crate::logging::kv_quote(&e.to_string())
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_read_for_its_own_manifest_only() {
        let base = crate::store::tests::scratch("record");
        let src = base.join("src");
        std::fs::create_dir(&src).unwrap();
        std::fs::write(src.join("f"), vec![3u8; 10_000]).unwrap();
        let m = crate::tree::walk(&src, &[], 1000).unwrap().manifest;
        let held: Vec<bool> = (0..m.blocks()).map(|i| i % 3 == 1).collect();
        let path = base.join("rec.held");
        let mut b = RECORD_MAGIC.to_vec();
        b.extend_from_slice(&m.id());
        b.extend_from_slice(&m.blocks().to_be_bytes());
        b.extend_from_slice(&bitmap(&held));
        std::fs::write(&path, &b).unwrap();
        assert_eq!(read_record(&path, &m), Some(held));
        let other = crate::tree::walk(&src, &[], 500).unwrap().manifest;
        assert_eq!(read_record(&path, &other), None);
        std::fs::write(&path, &b[..b.len() - 1]).unwrap();
        assert_eq!(read_record(&path, &m), None);
        crate::store::tests::cleanup(&base);
    }
}
