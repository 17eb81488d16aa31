//! Dest containment, enforced while opening: a dest is opened from the `allow_dest` root
//! that holds it (compared by path components, never as strings), and no symlink is
//! followed from that root down. One class's tree may hold a symlink where another class's
//! dest lies; a push to that dest is refused rather than written where the link points.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};

use nix::errno::Errno;
use nix::sys::stat::mkdirat;

use super::at::{dir_flags, is_dir, lstat_at, mode};
use crate::proto::StoreError;
use crate::sys::fd::{open_dir_beneath, openat};

/// The roots every dest must lie below, as paths on this host (po.conf `allow_dest`, with
/// `root` in front when set). Clones share the list, so a config reload can replace it.
#[derive(Debug, Clone)]
pub struct Roots(Arc<Mutex<Vec<PathBuf>>>);

impl Roots {
    pub fn new(roots: Vec<PathBuf>) -> Roots {
        Roots(Arc::new(Mutex::new(roots)))
    }

    /// Replaces the list (SIGHUP: po.conf read again).
    pub fn set(&self, roots: Vec<PathBuf>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = roots;
    }

    /// The deepest root that holds `path`: the operator trusts each root as written.
    fn root_of(&self, path: &Path) -> Option<PathBuf> {
        let roots = self.0.lock().unwrap_or_else(|e| e.into_inner());
        roots.iter().filter(|r| path.starts_with(r)).max_by_key(|r| r.components().count()).cloned()
    }

    /// Opens `dest` (creating the missing part when `create`), refusing a dest outside every
    /// root and any symlink between its root and itself. The root itself is the operator's
    /// and opened as configured.
    pub fn open(&self, dest: &str, create: bool) -> Result<OwnedFd, StoreError> {
        let refuse = |why: String| Err(StoreError::Refused(format!("dest {dest}: {why}")));
        let path = Path::new(dest);
        if !path.is_absolute() {
            return refuse("not an absolute path".into());
        }
        if path.components().any(|c| c == Component::ParentDir) {
            return refuse("has a .. component".into());
        }
        let Some(root) = self.root_of(path) else {
            return refuse("outside allow_dest".into());
        };
        let root = root.as_path();
        let rest = path.strip_prefix(root).expect("starts_with above");
        let err = |what: &Path, e: io::Error| StoreError::io(format!("dest {dest}: {}", what.display()), &e);
        if create {
            std::fs::DirBuilder::new().recursive(true).mode(0o755).create(root).map_err(|e| err(root, e))?;
        }
        let root_fd = std::fs::File::open(root).map(OwnedFd::from).map_err(|e| err(root, e))?;
        if rest.as_os_str().is_empty() {
            return Ok(root_fd);
        }
        // The kernel's confined lookup when it has one; the walk tells what is wrong, and
        // creates what is missing.
        if let Ok(fd) = open_dir_beneath(root_fd.as_fd(), rest) {
            return Ok(fd);
        }
        let mut cur = root_fd;
        let mut at = root.to_path_buf();
        for c in rest.components() {
            at.push(c);
            let name = c.as_os_str();
            let next = match openat(cur.as_fd(), name, dir_flags(), mode(0)) {
                Err(e) if create && e.raw_os_error() == Some(nix::libc::ENOENT) => {
                    match mkdirat(Some(cur.as_raw_fd()), name, mode(0o755)) {
                        Ok(()) | Err(Errno::EEXIST) => {}
                        Err(e) => return Err(err(&at, e.into())),
                    }
                    openat(cur.as_fd(), name, dir_flags(), mode(0))
                }
                r => r,
            };
            cur = match next {
                Ok(fd) => fd,
                Err(e) => {
                    return match lstat_at(cur.as_fd(), name) {
                        Ok(Some(st)) if st.st_mode & nix::libc::S_IFMT == nix::libc::S_IFLNK => refuse(format!(
                            "{} is a symlink (no symlink below allow_dest {} is followed)",
                            at.display(),
                            root.display()
                        )),
                        Ok(Some(st)) if !is_dir(&st) => refuse(format!("{} is not a directory", at.display())),
                        _ => Err(err(&at, e)),
                    }
                }
            };
        }
        Ok(cur)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::{cleanup, scratch};

    #[test]
    fn dests_open_by_components_without_symlinks() {
        let base = scratch("roots");
        let allowed = base.join("data");
        std::fs::create_dir_all(allowed.join("a")).unwrap();
        std::fs::create_dir_all(base.join("outside")).unwrap();
        std::fs::create_dir_all(base.join("database")).unwrap();
        std::os::unix::fs::symlink(base.join("outside"), allowed.join("a/link")).unwrap();
        let roots = Roots::new(vec![allowed.clone()]);
        let s = |p: PathBuf| p.display().to_string();
        assert!(roots.open(&s(allowed.join("a/new/deep")), true).is_ok());
        assert!(allowed.join("a/new/deep").is_dir());
        assert!(roots.open(&s(allowed.clone()), false).is_ok());
        // a string prefix is not a parent
        let e = roots.open(&s(base.join("database")), true).unwrap_err().to_string();
        assert!(e.contains("outside allow_dest"), "{e}");
        let e = roots.open(&s(allowed.join("a/link/x")), true).unwrap_err();
        assert!(matches!(&e, StoreError::Refused(t) if t.contains("is a symlink")), "{e}");
        let e = roots.open(&s(allowed.join("a/link")), true).unwrap_err();
        assert!(matches!(&e, StoreError::Refused(t) if t.contains("is a symlink")), "{e}");
        assert!(roots.open(&format!("{}/a/../../outside", s(allowed.clone())), true).is_err());
        assert!(roots.open("relative/x", true).is_err());
        // a reload that adds a root reaches every clone
        roots.clone().set(vec![allowed.clone(), base.join("database")]);
        assert!(roots.open(&s(base.join("database")), false).is_ok());
        assert!(std::fs::read_dir(base.join("outside")).unwrap().next().is_none());
        cleanup(&base);
    }
}
