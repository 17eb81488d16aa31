//! Dests inside dests: class B's dest may lie inside class A's (a supported layout). A push of
//! A must never remove or replace B's dest, nor a directory that holds it: the po knows its
//! dests (those it prepared lately, `<state_dir>/dests`, and those of live transfers) and
//! - refuses, before the first rename, to publish a tree of A that puts a non-directory where
//!   the dest of B is or at any directory on the way to it (`move_in` would first remove the
//!   directory there, with all of B's tree and stages in it);
//! - keeps the mirror walk of A out of B's dest, and never lets it remove a directory that
//!   holds B's dest (it still removes the other entries beside it that A's tree lacks).
//!
//! Entries of A's tree below B's dest are not refused here: the published files are then A's.

use std::collections::{HashMap, HashSet};
use std::os::fd::AsFd;
use std::path::{Component, Path, PathBuf};

use super::at::open_dir_path;
use super::staged::Staged;
use super::DiskStore;
use crate::logging::kv_quote;
use crate::proto::manifest::Kind;
use crate::proto::StoreError;

/// Another dest below a transfer's dest: its path relative to the dest (`/`-separated), and
/// as the po knows it.
#[derive(Debug, Clone)]
pub struct Nested {
    pub rel: String,
    pub dest: PathBuf,
}

/// `inner` relative to `outer` when it lies strictly below it (by path components), as a
/// `/`-separated UTF-8 path (manifest paths are UTF-8; another name cannot clash with one).
fn below(outer: &Path, inner: &Path) -> Option<String> {
    let rest = inner.strip_prefix(outer).ok()?;
    let parts: Option<Vec<&str>> = rest
        .components()
        .filter(|c| *c != Component::CurDir)
        .map(|c| match c {
            Component::Normal(n) => n.to_str(),
            _ => None,
        })
        .collect();
    let parts = parts?;
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// `rel` and every directory on the way to it (`a`, `a/b`, `a/b/c` for `a/b/c`).
fn ancestors_and_self(rel: &str) -> impl Iterator<Item = &str> {
    rel.match_indices('/').map(|(i, _)| &rel[..i]).chain(std::iter::once(rel))
}

impl DiskStore {
    /// The dests this po knows (remembered, or of a live transfer) strictly below `dest`.
    pub(super) fn nested_in(&self, dest: &Path) -> Vec<Nested> {
        let known = self.dests.iter().map(PathBuf::from);
        let live = self.live().map(|(d, _, _)| d.to_path_buf());
        let mut v: Vec<Nested> =
            known.chain(live).filter_map(|d| Some(Nested { rel: below(dest, &d)?, dest: d })).collect();
        v.sort_by(|a, b| a.rel.cmp(&b.rel));
        v.dedup_by(|a, b| a.rel == b.rel);
        v
    }
}

/// What the mirror walk must leave alone: other dests (never entered) and the directories
/// that hold them (entered, never removed).
#[derive(Default)]
pub struct Guard<'a> {
    dests: HashSet<&'a str>,
    holders: HashSet<&'a str>,
}

impl<'a> Guard<'a> {
    pub fn new(nested: &'a [Nested]) -> Guard<'a> {
        let mut g = Guard::default();
        for n in nested {
            g.dests.insert(n.rel.as_str());
            g.holders.extend(ancestors_and_self(&n.rel).filter(|a| *a != n.rel));
        }
        g
    }

    /// `rel` is another class's dest.
    pub fn is_dest(&self, rel: &str) -> bool {
        self.dests.contains(rel)
    }

    /// `rel` is a directory on the way to another class's dest.
    pub fn holds_dest(&self, rel: &str) -> bool {
        self.holders.contains(rel)
    }
}

impl Staged {
    /// Before the first rename: the tree puts no non-directory where another dest that is in
    /// this dest (a directory, reached without following a symlink) lies, nor on its way.
    pub(super) fn check_nested(&self, transfer: u64) -> Result<(), StoreError> {
        if self.nested.is_empty() {
            return Ok(());
        }
        let dest = self.dest_fd.as_fd();
        let present: Vec<&Nested> = self.nested.iter().filter(|n| open_dir_path(dest, &n.rel).is_ok()).collect();
        let mut guarded: HashMap<&str, &Nested> = HashMap::new();
        for n in &present {
            for a in ancestors_and_self(&n.rel) {
                guarded.entry(a).or_insert(n);
            }
        }
        if guarded.is_empty() {
            return Ok(());
        }
        for e in self.manifest.entries() {
            // Nothing of this tree goes into another class's dest: that tree is its class's.
            let inside = present
                .iter()
                .find(|n| e.path.as_bytes().strip_prefix(n.rel.as_bytes()).is_some_and(|r| r.starts_with(b"/")));
            // Other dests are named in the config, so they are UTF-8.
            let (n, verb, detail) = match (inside, e.path.to_str().and_then(|p| guarded.get(p))) {
                (Some(n), _) => (*n, "write into", format!("the tree has {}", e.path)),
                (None, Some(n)) if e.kind != Kind::Dir => {
                    (*n, "replace", format!("the tree has a non-directory at {}", e.path))
                }
                _ => continue,
            };
            let other = n.dest.display().to_string();
            log::warn!(
                "event=nested_dest_refused transfer={transfer} dest={} path={} other_dest={}",
                kv_quote(&self.dest.display().to_string()),
                kv_quote(&e.path.to_string()),
                kv_quote(&other)
            );
            return Err(StoreError::Refused(format!(
                "publish: would {verb} the dest of another class: {other} ({detail})"
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dests_below_by_components() {
        let p = Path::new;
        assert_eq!(below(p("/d/a"), p("/d/a/b/c")).as_deref(), Some("b/c"));
        assert_eq!(below(p("/d/a/"), p("/d/a//b/./c/")).as_deref(), Some("b/c"));
        assert_eq!(below(p("/d/a"), p("/d/a")), None);
        assert_eq!(below(p("/d/a"), p("/d/ab/c")), None);
        assert_eq!(below(p("/d/a/b"), p("/d/a")), None);
        assert_eq!(ancestors_and_self("a/b/c").collect::<Vec<_>>(), ["a", "a/b", "a/b/c"]);
        assert_eq!(ancestors_and_self("a").collect::<Vec<_>>(), ["a"]);
    }
}
