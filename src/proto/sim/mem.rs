//! The in-memory source and store of the simulated machines: what the master reads, what each
//! po stages, publishes and serves to its peers.

use super::super::manifest::{self, Kind};
use super::super::*;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

#[derive(Default, Clone)]
pub struct MemSource {
    pub files: HashMap<u32, Arc<Vec<u8>>>,
    pub manifest: Option<Manifest>,
}

impl Source for MemSource {
    fn block(&mut self, b: &BlockRef, verify: Verify, _sendfile: bool) -> Result<(Body, Sum), SourceError> {
        let refused = |s: &str| SourceError::Refused(s.into());
        let mut data = Vec::new();
        for seg in self.manifest.as_ref().ok_or_else(|| refused("no manifest"))?.segments(b) {
            let f = self.files.get(&seg.entry).ok_or_else(|| refused("no such file"))?;
            data.extend_from_slice(&f[seg.offset as usize..seg.offset as usize + seg.len as usize]);
        }
        let sum = Sum::of(verify, &data);
        Ok((Body::Bytes(Arc::new(data)), sum))
    }
    fn unchanged(&mut self, _entry: u32) -> Result<(), SourceError> {
        Ok(())
    }
}

/// What a tree looks like, for comparing copies.
pub type Tree = BTreeMap<String, String>;

type Staged = (String, Manifest, HashMap<u32, Vec<u8>>);

fn refused(s: &str) -> StoreError {
    StoreError::Refused(s.into())
}

#[derive(Default)]
pub struct MemStore {
    pub staged: HashMap<u64, Staged>,
    /// Published files stay readable for serving peers.
    served: HashMap<u64, (Manifest, HashMap<u32, Vec<u8>>)>,
    /// dest -> tree
    pub published: HashMap<String, Tree>,
    pub fail_writes: bool,
}

impl Store for MemStore {
    /// Delta is left out here: the disk store's tests cover it.
    fn prepare(&mut self, transfer: u64, dest: &str, m: &Manifest, _delta: bool) -> Result<Vec<bool>, StoreError> {
        self.staged.insert(transfer, (dest.to_owned(), m.clone(), HashMap::new()));
        Ok((0..m.blocks()).map(|i| m.is_hole(&m.block(i).unwrap())).collect())
    }
    fn write_block(&mut self, transfer: u64, b: &BlockRef, data: &[u8]) -> Result<(), StoreError> {
        if self.fail_writes {
            return Err(StoreError::io("write x", &std::io::Error::from_raw_os_error(28)));
        }
        let (_, m, files) = self.staged.get_mut(&transfer).ok_or_else(|| refused("not prepared"))?;
        for seg in m.segments(b) {
            let Kind::File { size } = m.entries()[seg.entry as usize].kind else { return Err(refused("not a file")) };
            let f = files.entry(seg.entry).or_insert_with(|| vec![0; size as usize]);
            let piece = &data[seg.at as usize..seg.at as usize + seg.len as usize];
            f[seg.offset as usize..seg.offset as usize + seg.len as usize].copy_from_slice(piece);
        }
        Ok(())
    }
    fn seal(&mut self, _transfer: u64) -> Result<(), StoreError> {
        Ok(())
    }
    fn publish(&mut self, transfer: u64, flag_file: Option<&str>, _mirror: bool) -> Result<(u64, u64), StoreError> {
        let (dest, m, files) = self.staged.remove(&transfer).ok_or_else(|| refused("not prepared"))?;
        // A file that no block reached is empty, or all holes.
        let size = |e: u32| match m.entries()[e as usize].kind {
            Kind::File { size } => size as usize,
            _ => 0,
        };
        let tree = tree_of(&m, |e| files.get(&e).cloned().unwrap_or_else(|| vec![0; size(e)]));
        self.served.insert(transfer, (m.clone(), files));
        let out = self.published.entry(dest).or_default();
        out.extend(tree);
        if let Some(f) = flag_file {
            out.insert(f.to_owned(), "flag".into());
        }
        Ok((m.files() as u64, m.bytes()))
    }
    fn abort(&mut self, transfer: u64, _keep: bool) {
        self.staged.remove(&transfer);
    }
    fn block_body(&mut self, transfer: u64, b: &BlockRef) -> Result<Body, StoreError> {
        let (m, files) = match self.staged.get(&transfer) {
            Some((_, m, f)) => (m, f),
            None => self.served.get(&transfer).map(|(m, f)| (m, f)).ok_or_else(|| refused("unknown transfer"))?,
        };
        let mut data = Vec::new();
        for seg in m.segments(b) {
            let f = files.get(&seg.entry).ok_or_else(|| refused("block not held"))?;
            data.extend_from_slice(&f[seg.offset as usize..seg.offset as usize + seg.len as usize]);
        }
        Ok(Body::Bytes(Arc::new(data)))
    }
}

pub fn tree_of(m: &Manifest, content: impl Fn(u32) -> Vec<u8>) -> Tree {
    m.entries()
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let v = match &e.kind {
                Kind::Dir => format!("dir {:o}", e.mode),
                Kind::File { .. } => format!("file {:o} {}", e.mode, manifest::hex(&Sum::md5(&content(i as u32)))),
                Kind::Symlink { target } => format!("link {target}"),
            };
            (e.path.clone(), v)
        })
        .collect()
}

impl Sum {
    fn md5(d: &[u8]) -> [u8; 16] {
        match Sum::of(Verify::Md5, d) {
            Sum::Md5(m) => m,
            _ => unreachable!(),
        }
    }
}
