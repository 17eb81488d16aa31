//! The po's own files in `state_dir` (resume records, the list of dests): written through a
//! fresh temporary that is never a link, then renamed over the old file. The po runs as root, so
//! a symlink someone planted in `state_dir` must never lead a write elsewhere.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

/// Replaces `path` with `bytes` (`sync`: on disk before the rename). The temporary beside it
/// (`.tmp`) is removed first and created anew with `O_EXCL | O_NOFOLLOW`, mode 0600: a link
/// there, or one planted in the meantime, fails the write instead of being followed; the rename
/// replaces a link at `path` itself, never its target.
pub fn replace(path: &Path, bytes: &[u8], sync: bool) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut f =
        OpenOptions::new().write(true).create_new(true).mode(0o600).custom_flags(nix::libc::O_NOFOLLOW).open(&tmp)?;
    f.write_all(bytes)?;
    if sync {
        f.sync_data()?;
    }
    std::fs::rename(&tmp, path)
}

/// What makes `state_dir` unsafe for a root daemon's records: owned by another user, or
/// writable by group or others (who could then plant links and records there).
pub fn unsafe_dir(dir: &Path) -> Option<String> {
    let m = std::fs::symlink_metadata(dir).ok()?;
    let me = nix::unistd::geteuid().as_raw();
    if m.uid() != me {
        return Some(format!("state_dir {} is owned by uid {}, not this user (uid {me})", dir.display(), m.uid()));
    }
    if m.mode() & 0o022 != 0 {
        return Some(format!(
            "state_dir {} is writable by group or others (mode {:o})",
            dir.display(),
            m.mode() & 0o7777
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_planted_link_is_never_written_through() {
        let d = crate::store::tests::scratch("state-file");
        let victim = d.join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        let record = d.join("dests");
        // A link at the temporary's name: removed, not followed.
        std::os::unix::fs::symlink(&victim, d.join("dests.tmp")).unwrap();
        replace(&record, b"a\n", true).unwrap();
        // A link at the file's own name: replaced, not followed.
        std::os::unix::fs::symlink(&victim, d.join("dests2")).unwrap();
        replace(&d.join("dests2"), b"b\n", false).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        assert_eq!(std::fs::read(&record).unwrap(), b"a\n");
        assert!(!std::fs::symlink_metadata(d.join("dests2")).unwrap().file_type().is_symlink());
        assert_eq!(std::fs::metadata(&record).unwrap().permissions().mode() & 0o777, 0o600);

        assert_eq!(unsafe_dir(&d), None);
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(unsafe_dir(&d).unwrap().contains("writable by group or others"));
        crate::store::tests::cleanup(&d);
    }
}
