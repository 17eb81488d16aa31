//! `RelPath`: a path of the tree relative to its root, as the bytes the filesystem holds.
//!
//! Linux names are bytes: any byte but `/` and NUL. A tree may hold names that are not UTF-8
//! (`b"\xff\xfe.bin"`), and they travel unchanged: on the wire, in the manifest, on every po.
//! The path rules (`manifest::check_path`) are checked on the bytes.
//!
//! Shown to people (`Display`, so logs, stderr and error texts) the valid UTF-8 runs stay as
//! they are and every other byte is written `\xNN` (`text::from_bytes`); control characters
//! are then escaped by the same rules as any text from the network (`proto::text`, which log
//! lines and stderr go through). `Debug` quotes that text.

use std::ffi::OsStr;
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RelPath(Vec<u8>);

impl RelPath {
    pub fn from_bytes(b: Vec<u8>) -> RelPath {
        RelPath(b)
    }
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }
    pub fn as_os_str(&self) -> &OsStr {
        OsStr::from_bytes(&self.0)
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// The path as text, when it is UTF-8.
    pub fn to_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }
    pub fn starts_with(&self, prefix: &str) -> bool {
        self.0.starts_with(prefix.as_bytes())
    }
    /// `self/name` (`name` alone when `self` is empty).
    pub fn join(&self, name: &[u8]) -> RelPath {
        let mut b = Vec::with_capacity(self.0.len() + 1 + name.len());
        if !self.0.is_empty() {
            b.extend_from_slice(&self.0);
            b.push(b'/');
        }
        b.extend_from_slice(name);
        RelPath(b)
    }
}

/// (parent, name) of a `/`-separated relative path; the parent of a top-level name is empty.
pub fn split(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|&c| c == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (&[], path),
    }
}

/// `b` for people: valid UTF-8 as it is, any other byte as `\xNN`.
pub fn show(b: &[u8]) -> String {
    super::text::from_bytes(b)
}

impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.to_str() {
            Some(s) => f.write_str(s),
            None => f.write_str(&show(&self.0)),
        }
    }
}

impl fmt::Debug for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{}\"", show(&self.0).escape_debug().to_string().replace("\\\\x", "\\x"))
    }
}

impl From<&str> for RelPath {
    fn from(s: &str) -> RelPath {
        RelPath(s.as_bytes().to_vec())
    }
}
impl From<String> for RelPath {
    fn from(s: String) -> RelPath {
        RelPath(s.into_bytes())
    }
}
impl From<&[u8]> for RelPath {
    fn from(b: &[u8]) -> RelPath {
        RelPath(b.to_vec())
    }
}
impl PartialEq<str> for RelPath {
    fn eq(&self, o: &str) -> bool {
        self.0 == o.as_bytes()
    }
}
impl PartialEq<&str> for RelPath {
    fn eq(&self, o: &&str) -> bool {
        self.0 == o.as_bytes()
    }
}
impl AsRef<[u8]> for RelPath {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}
impl AsRef<Path> for RelPath {
    fn as_ref(&self) -> &Path {
        Path::new(self.as_os_str())
    }
}
impl std::borrow::Borrow<[u8]> for RelPath {
    fn borrow(&self) -> &[u8] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_bytes_and_shown_escaped() {
        let p = RelPath::from_bytes(b"d/\xff\xfe.bin".to_vec());
        assert_eq!(p.to_string(), "d/\\xff\\xfe.bin");
        assert_eq!(format!("{p:?}"), "\"d/\\xff\\xfe.bin\"");
        assert_eq!(split(p.as_bytes()), (&b"d"[..], &b"\xff\xfe.bin"[..]));
        assert_eq!(split(b"top"), (&b""[..], &b"top"[..]));
        assert_eq!(RelPath::from("é").to_string(), "é");
        assert_eq!(RelPath::default().join(b"a").join(b"\x01"), RelPath::from_bytes(b"a/\x01".to_vec()));
    }
}
