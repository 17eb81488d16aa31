//! The in-memory source and store of the simulated machines: what the master reads, what each
//! po stages, publishes and serves to its peers.

use super::super::disk::StageOptions;
use super::super::manifest::{self, Entry, Kind};
use super::super::msg::Digest;
use super::super::*;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

#[derive(Default, Clone)]
pub struct MemSource {
    pub files: HashMap<u32, Arc<Vec<u8>>>,
    pub manifest: Option<Manifest>,
    /// A file (by entry) that no longer matches the manifest.
    pub changed: Option<u32>,
    /// Hash the blocks named by `ahead` "on workers" (off: as a source without workers).
    pub hash_ahead: bool,
    /// Blocks named by `ahead` and not reported by `ready` yet (at most `AHEAD_BYTES` of them,
    /// as `FsSource` holds).
    pub hinted: Vec<(BlockRef, Verify)>,
}

impl MemSource {
    /// One file `f.bin` of `blocks` blocks of 4 KiB, the last one short.
    pub fn one_file(blocks: u64) -> (Manifest, MemSource) {
        MemSource::one_file_of(blocks, 4096)
    }

    /// As `one_file`, in blocks of `block_size`.
    pub fn one_file_of(blocks: u64, block_size: u32) -> (Manifest, MemSource) {
        let size = (blocks - 1) * block_size as u64 + 1000;
        let f = Entry::plain("f.bin", Kind::File { size });
        let m = Manifest::new(block_size, vec![f]).unwrap();
        let data = crate::testutil::noise(size as usize, blocks);
        let src = MemSource { files: [(0, Arc::new(data))].into(), manifest: Some(m.clone()), ..Default::default() };
        (m, src)
    }

    /// Block `i` as the master sends it, its checksum made with `verify`.
    pub fn frame(&mut self, transfer: u64, i: u64, verify: Verify) -> Msg {
        let b = self.manifest.as_ref().and_then(|m| m.block(i)).expect("a block of the manifest");
        let (Body::Bytes(data), sum) = self.block(&b, verify, false).unwrap() else { unreachable!() };
        Msg::Block { head: BlockHead { transfer, index: i, sum }, data: Payload::from_vec(data.to_vec()) }
    }
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
    fn ahead(&mut self, blocks: &[BlockRef], verify: Verify, _sendfile: bool) {
        if !self.hash_ahead {
            return;
        }
        let bs = self.manifest.as_ref().map_or(1, |m| m.block_size.max(1) as usize);
        let limit = (super::super::disk::AHEAD_BYTES / bs).max(2);
        self.hinted = blocks.iter().take(limit).map(|&b| (b, verify)).collect();
    }
    /// The workers are slow: a few blocks are done at each look.
    fn ready(&mut self) -> Vec<(u64, Sum)> {
        let done: Vec<_> = self.hinted.drain(..self.hinted.len().min(8)).collect();
        done.into_iter().filter_map(|(b, v)| Some((b.index, self.block(&b, v, false).ok()?.1))).collect()
    }
    fn unchanged(&mut self, entry: u32) -> Result<(), SourceError> {
        match self.changed {
            Some(e) if e == entry => Err(SourceError::Changed { path: format!("entry {e}"), why: "size".into() }),
            _ => Ok(()),
        }
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
    pub served: HashMap<u64, (Manifest, HashMap<u32, Vec<u8>>)>,
    /// dest -> tree
    pub published: HashMap<String, Tree>,
    pub fail_writes: bool,
    pub fail_prepare: bool,
    /// Blocks an earlier attempt left staged, by index: offered with `candidates`, taken by
    /// `check` when they match the master's digest.
    pub resumable: HashMap<u64, Vec<u8>>,
    /// What `set_options` was told, by transfer.
    pub options: HashMap<u64, StageOptions>,
    /// Transfers the po let go of (`release`), in order.
    pub released: Vec<u64>,
    /// dest -> the manifest last published there (its id) and the transfer that did.
    pub holds: HashMap<String, (Vec<u8>, u64)>,
    /// Transfers whose every block was taken from the published copy by delta.
    pub untouched: HashSet<u64>,
    /// Publishes that wrote into the dest (unchanged ones do not).
    pub moved: u64,
    /// Canary publishes to keep the old tree of, and the old trees kept (dest, tree).
    pub aside_wanted: HashSet<u64>,
    pub asides: HashMap<u64, (String, Tree)>,
}

impl Store for MemStore {
    fn set_options(&mut self, transfer: u64, options: StageOptions) {
        self.options.insert(transfer, options);
    }

    /// Delta only as a whole: a dest that holds this very manifest's tree gives every block
    /// (the disk store's tests cover the rest).
    fn prepare(&mut self, transfer: u64, dest: &str, m: &Manifest, delta: bool) -> Result<Vec<bool>, StoreError> {
        if self.fail_prepare {
            return Err(StoreError::io("mkdir stage", &std::io::Error::from_raw_os_error(28)));
        }
        let held = self.holds.get(dest).filter(|(id, _)| delta && *id == m.id()).and_then(|(_, t)| self.served.get(t));
        if let Some((_, files)) = held {
            self.staged.insert(transfer, (dest.to_owned(), m.clone(), files.clone()));
            self.untouched.insert(transfer);
            return Ok(vec![true; m.blocks() as usize]);
        }
        self.staged.insert(transfer, (dest.to_owned(), m.clone(), HashMap::new()));
        Ok((0..m.blocks()).map(|i| m.is_hole(&m.block(i).unwrap())).collect())
    }
    fn candidates(&mut self, _transfer: u64) -> Vec<u64> {
        let mut c: Vec<u64> = self.resumable.keys().copied().collect();
        c.sort_unstable();
        c
    }
    fn check(&mut self, transfer: u64, sums: &[(u64, Digest)]) -> Vec<u64> {
        let Some(m) = self.staged.get(&transfer).map(|s| s.1.clone()) else { return Vec::new() };
        let good: Vec<(u64, Vec<u8>)> = sums
            .iter()
            .filter_map(|(b, d)| self.resumable.get(b).filter(|x| checksum::digest(x) == *d).map(|x| (*b, x.clone())))
            .collect();
        let mut taken = Vec::new();
        for (b, data) in good {
            if m.block(b).is_some_and(|r| self.write_block(transfer, &r, &data).is_ok()) {
                taken.push(b);
            }
        }
        taken
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
    fn publish(&mut self, transfer: u64, flag_file: Option<&str>, _mirror: bool) -> Result<Published, StoreError> {
        let (dest, m, files) = self.staged.remove(&transfer).ok_or_else(|| refused("not prepared"))?;
        let (count, bytes) = (m.files() as u64, m.bytes());
        let has_flag = |t: &Tree| flag_file.is_none_or(|f| t.contains_key(f));
        if self.untouched.remove(&transfer) && self.published.get(&dest).is_some_and(has_flag) {
            self.served.insert(transfer, (m, files));
            return Ok(Published { files: count, bytes, unchanged: true });
        }
        // A file that no block reached is empty, or all holes.
        let size = |e: u32| match m.entries()[e as usize].kind {
            Kind::File { size } => size as usize,
            _ => 0,
        };
        let tree = tree_of(&m, |e| files.get(&e).cloned().unwrap_or_else(|| vec![0; size(e)]));
        self.holds.insert(dest.clone(), (m.id().to_vec(), transfer));
        self.served.insert(transfer, (m, files));
        self.moved += 1;
        if self.aside_wanted.remove(&transfer) {
            let old = self.published.get(&dest).cloned().unwrap_or_default();
            self.asides.insert(transfer, (dest.clone(), old));
        }
        let out = self.published.entry(dest).or_default();
        out.extend(tree);
        if let Some(f) = flag_file {
            out.insert(f.to_owned(), "flag".into());
        }
        Ok(Published { files: count, bytes, unchanged: false })
    }
    fn keep_aside(&mut self, transfer: u64) {
        self.aside_wanted.insert(transfer);
    }
    fn rollback(&mut self, transfer: u64) -> Result<(), StoreError> {
        let (dest, old) = self.asides.remove(&transfer).ok_or_else(|| refused("nothing kept aside"))?;
        self.published.insert(dest, old);
        Ok(())
    }
    fn decide(&mut self, transfer: u64) {
        self.asides.remove(&transfer);
    }
    fn abort(&mut self, transfer: u64, _keep: bool) {
        self.asides.remove(&transfer);
        self.staged.remove(&transfer);
    }
    fn release(&mut self, transfer: u64) {
        self.released.push(transfer);
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
                Kind::Symlink { target } => format!("link {}", String::from_utf8_lossy(target)),
                Kind::Link { to } => format!("hard link {to}"),
            };
            (e.path.to_string(), v)
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
