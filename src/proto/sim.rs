//! A socket-free network for whole transfers between real state machines: every frame is
//! encoded and decoded, time is simulated, and faults (dead hosts, refused or blackholed
//! addresses, corrupted frames, failing disks) are injected at will.

use super::cac::{CacMachine, CacSettings, ClassAuth};
use super::manifest::{Entry, Kind};
use super::master::{MasterMachine, MasterSettings, Outcome, TransferResult};
use super::po::{PoMachine, PoSettings};
use super::*;
use core::net::IpAddr;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

#[derive(Default, Clone)]
pub struct MemSource {
    files: HashMap<u32, Arc<Vec<u8>>>,
    manifest: Option<Manifest>,
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
type Tree = BTreeMap<String, String>;

type Staged = (String, Manifest, HashMap<u32, Vec<u8>>);

fn refused(s: &str) -> StoreError {
    StoreError::Refused(s.into())
}

#[derive(Default)]
pub struct MemStore {
    staged: HashMap<u64, Staged>,
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

fn tree_of(m: &Manifest, content: impl Fn(u32) -> Vec<u8>) -> Tree {
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

#[allow(clippy::large_enum_variant)]
enum Node {
    Cac(CacMachine),
    Po(PoMachine<MemStore>),
    Master(MasterMachine),
}

impl Node {
    fn m(&mut self) -> &mut dyn Machine {
        match self {
            Node::Cac(m) => m,
            Node::Po(m) => m,
            Node::Master(m) => m,
        }
    }
}

/// (from node, to node, frame): false drops the frame.
type Tamper = Box<dyn FnMut(usize, usize, &mut Msg) -> bool>;

pub struct Net {
    now: Instant,
    nodes: Vec<(SocketAddr, Node, bool)>,
    links: HashMap<(usize, ConnId), (usize, ConnId)>,
    queue: VecDeque<(usize, Event)>,
    next_accept: ConnId,
    pub blackholed: HashSet<SocketAddr>,
    /// Called on every frame in flight; returning false drops the frame.
    pub tamper: Option<Tamper>,
    pub frames: u64,
    pub block_frames: u64,
    /// Block frames by sending node.
    pub blocks_from: HashMap<usize, u64>,
    /// Frames by type, to explain a livelock.
    pub by_type: BTreeMap<String, u64>,
}

impl Net {
    fn new() -> Net {
        Net {
            now: Instant::now(),
            nodes: Vec::new(),
            links: HashMap::new(),
            queue: VecDeque::new(),
            next_accept: 0,
            blackholed: HashSet::new(),
            tamper: None,
            frames: 0,
            block_frames: 0,
            blocks_from: HashMap::new(),
            by_type: BTreeMap::new(),
        }
    }

    fn add(&mut self, addr: &str, n: Node) -> usize {
        self.nodes.push((addr.parse().unwrap(), n, true));
        self.nodes.len() - 1
    }

    /// The host dies: its connections close on the other side, and it answers nothing more.
    pub fn kill(&mut self, node: usize) {
        self.nodes[node].2 = false;
        let dead: Vec<_> = self.links.keys().filter(|(n, _)| *n == node).copied().collect();
        for k in dead {
            if let Some(peer) = self.links.remove(&k) {
                self.links.remove(&peer);
                self.queue.push_back((
                    peer.0,
                    Event::Closed { conn: peer.1, reason: Close::Io("connection reset by peer".into()) },
                ));
            }
        }
    }

    fn apply(&mut self, from: usize, a: Action) {
        match a {
            Action::Connect { conn, addr } => {
                let target = self.nodes.iter().position(|(a, _, alive)| *a == addr && *alive);
                match target {
                    _ if self.blackholed.contains(&addr) => {}
                    Some(to) => {
                        self.next_accept += 1;
                        let acc = ACCEPTED | self.next_accept;
                        self.links.insert((from, conn), (to, acc));
                        self.links.insert((to, acc), (from, conn));
                        let peer = SocketAddr::new(self.nodes[from].0.ip(), 40000 + (self.next_accept % 20000) as u16);
                        self.queue.push_back((to, Event::Accepted { conn: acc, peer }));
                        self.queue.push_back((from, Event::Connected { conn }));
                    }
                    None => self
                        .queue
                        .push_back((from, Event::Closed { conn, reason: Close::Connect("connection refused".into()) })),
                }
            }
            Action::Send { conn, msg } => self.transmit(from, conn, msg),
            Action::SendBlock { conn, head, body } => {
                let Body::Bytes(data) = body else { panic!("the simulator's bodies are in memory") };
                self.transmit(from, conn, Msg::Block { head, data: Payload::from_vec(data.to_vec()) });
            }
            Action::Close { conn } => {
                if let Some(peer) = self.links.remove(&(from, conn)) {
                    self.links.remove(&peer);
                    self.queue.push_back((peer.0, Event::Closed { conn: peer.1, reason: Close::Eof }));
                }
            }
            Action::SetRates { .. } => {}
            // The simulator's hooks succeed at once, saying what they would run.
            Action::RunHook { id, name, .. } => {
                self.queue.push_back((from, Event::HookDone { id, exit: 0, tail: format!("ran {name}") }))
            }
        }
    }

    fn transmit(&mut self, from: usize, conn: ConnId, msg: Msg) {
        let Some(&(to, peer_conn)) = self.links.get(&(from, conn)) else { return };
        // Through the real codec, as on a socket.
        let frame = msg.to_frame();
        let (mut msg, used) = Msg::from_frame(&frame).unwrap().unwrap();
        assert_eq!(used, frame.len());
        self.frames += 1;
        *self.by_type.entry(format!("{:?}", msg.ty())).or_default() += 1;
        if matches!(msg, Msg::Block { .. }) {
            self.block_frames += 1;
            *self.blocks_from.entry(from).or_default() += 1;
        }
        if let Some(t) = self.tamper.as_mut() {
            if !t(from, to, &mut msg) {
                return;
            }
        }
        self.queue.push_back((to, Event::Frame { conn: peer_conn, msg }));
    }

    fn drain(&mut self) {
        for i in 0..self.nodes.len() {
            while let Some(a) = self.nodes[i].1.m().poll_action() {
                if self.nodes[i].2 {
                    self.apply(i, a);
                }
            }
        }
    }

    /// One event or timer step at most `n` times.
    fn drive_steps(&mut self, n: usize) {
        for _ in 0..n {
            self.drain();
            if let Some((to, ev)) = self.queue.pop_front() {
                if self.nodes[to].2 {
                    let now = self.now;
                    self.nodes[to].1.m().handle_event(now, ev);
                }
            }
        }
    }

    /// Runs until node `until` finishes; panics on livelock.
    fn drive(&mut self, until: usize, max_steps: usize) {
        for _ in 0..max_steps {
            self.drain();
            if self.nodes[until].1.m().is_finished() {
                return;
            }
            if let Some((to, ev)) = self.queue.pop_front() {
                if self.nodes[to].2 {
                    let now = self.now;
                    self.nodes[to].1.m().handle_event(now, ev);
                }
                continue;
            }
            let next = self.nodes.iter_mut().filter(|n| n.2).filter_map(|n| n.1.m().poll_timeout()).min();
            let Some(t) = next else { panic!("nothing to do and node {until} is not finished") };
            self.now = self.now.max(t);
            let now = self.now;
            for n in self.nodes.iter_mut().filter(|n| n.2) {
                if n.1.m().poll_timeout().is_some_and(|d| d <= now) {
                    n.1.m().handle_timeout(now);
                }
            }
        }
        panic!("no end after {max_steps} steps: livelock; frames {:?}", self.by_type);
    }
}

struct Setup {
    pos: usize,
    class: ClassCfg,
    masters: Vec<(IpAddr, u8)>,
    cacs_for_master: Vec<&'static str>,
    cacs_for_po: Vec<&'static str>,
    class_name: &'static str,
}

impl Default for Setup {
    fn default() -> Self {
        let mut class = ClassCfg::new("base1");
        class.set("dest", "/home/work/data/base").unwrap();
        class.set("block_size", "4K").unwrap();
        Setup {
            pos: 5,
            class,
            masters: vec![("10.0.0.0".parse().unwrap(), 24)],
            cacs_for_master: vec!["10.0.0.2:7100"],
            cacs_for_po: vec!["10.0.0.2:7100"],
            class_name: "base1",
        }
    }
}

fn sample_tree(block_size: u32) -> (Manifest, MemSource, Tree) {
    let mk =
        |p: &str, kind| Entry { path: p.into(), kind, mode: 0o644, mtime: 1_700_000_000, mtime_nsec: 5, sparse: None };
    let sizes =
        [("a/big.bin", 50_000u64), ("a/b/small.txt", 10), ("a/b/exact", 8192), ("empty.txt", 0), ("top.dat", 4097)];
    let mut entries = vec![mk("a", Kind::Dir), mk("a/b", Kind::Dir), mk("a/emptydir", Kind::Dir)];
    entries.push(mk("link", Kind::Symlink { target: "a/b/small.txt".into() }));
    for (p, s) in sizes {
        entries.push(mk(p, Kind::File { size: s }));
    }
    // A sparse file: 100 bytes of data 20,000 bytes in, holes around them.
    let mut img = mk("vm.img", Kind::File { size: 40_960 });
    img.sparse = Some(vec![(20_000, 100)].into());
    entries.push(img);
    let m = Manifest::new(block_size, entries).unwrap();
    let mut src = MemSource::default();
    for (i, e) in m.entries().iter().enumerate() {
        if let Kind::File { size } = e.kind {
            let data: Vec<u8> = (0..size)
                .map(|x| if m.in_hole(i as u32, x, 1) { 0 } else { (x * 31 + i as u64 * 7) as u8 | 1 })
                .collect();
            src.files.insert(i as u32, Arc::new(data));
        }
    }
    src.manifest = Some(m.clone());
    let files = src.files.clone();
    let tree = tree_of(&m, |e| files.get(&e).map(|d| d.to_vec()).unwrap_or_default());
    (m, src, tree)
}

struct World {
    net: Net,
    master: usize,
    pos: Vec<usize>,
    tree: Tree,
    dest: String,
}

fn world(s: Setup) -> World {
    let mut net = Net::new();
    let po_addrs: Vec<SocketAddr> = (0..s.pos).map(|i| format!("10.0.1.{}:7200", i + 1).parse().unwrap()).collect();
    let settings = CacSettings {
        key: b"cluster-key".to_vec(),
        classes: vec![ClassAuth {
            cfg: s.class.clone(),
            pos: po_addrs.clone(),
            masters: s.masters.clone(),
            master_secret: None,
        }],
        token_ttl: 3600,
    };
    net.add("10.0.0.2:7100", Node::Cac(CacMachine::new(settings.clone(), Env::fixed(1_800_000_000, 1))));
    net.add("10.0.0.3:7100", Node::Cac(CacMachine::new(settings, Env::fixed(1_800_000_000, 2))));
    let mut pos = Vec::new();
    for a in &po_addrs {
        let ps = PoSettings {
            advertise: Some(a.to_string()),
            cacs: s.cacs_for_po.iter().map(|c| c.parse().unwrap()).collect(),
            allow_dest: vec!["/home/work/data".into()],
            root: None,
            cac_timeout: Duration::from_secs(3),
            hook_dir: Some("/etc/wugui/hooks".into()),
            max_upload_rate: 0,
            max_download_rate: 0,
        };
        pos.push(net.add(&a.to_string(), Node::Po(PoMachine::new(ps, MemStore::default()))));
    }
    let (m, src, tree) = sample_tree(if s.class.block_size == 0 { 4096 } else { s.class.block_size });
    let mut planned = Some((m, src));
    let planner: master::Planner = Box::new(move |c: &ClassCfg| {
        let (m, src) = planned.take().ok_or("planned twice")?;
        assert!(c.block_size == 0 || c.block_size == m.block_size);
        Ok((m, Box::new(src) as Box<dyn Source>))
    });
    let ms = MasterSettings {
        class: s.class_name.into(),
        cacs: s.cacs_for_master.iter().map(|c| c.parse().unwrap()).collect(),
        secret: None,
        connect_timeout: Duration::from_secs(3),
        unix_start: 0,
        dry_run: false,
        transfer_key: [0x5a; 32],
    };
    let now = net.now;
    let master = net.add("10.0.0.1:1", Node::Master(MasterMachine::new(ms, planner, now)));
    World { net, master, pos, tree, dest: s.class.dest.clone() }
}

impl World {
    fn run(&mut self) -> Outcome {
        self.net.drive(self.master, 200_000);
        match &self.net.nodes[self.master].1 {
            Node::Master(m) => m.outcome().cloned().expect("finished master has an outcome"),
            _ => unreachable!(),
        }
    }
    fn store(&mut self, i: usize) -> &mut MemStore {
        match &mut self.net.nodes[self.pos[i]].1 {
            Node::Po(p) => p.store_mut(),
            _ => unreachable!(),
        }
    }
    fn published(&mut self, i: usize) -> Option<Tree> {
        let d = self.dest.clone();
        self.store(i).published.get(&d).cloned()
    }
}

/// The `result=` word, the pos that committed, and all pos (`app::outcome` turns these into
/// the exit code and the summary line).
fn tally(o: &Outcome) -> (&'static str, usize, usize) {
    match &o.result {
        TransferResult::Ok(r) | TransferResult::Partial(r) | TransferResult::Failed(r) => {
            (o.result.name(), r.pos.iter().filter(|p| p.failed.is_none()).count(), r.pos.len())
        }
        _ => (o.result.name(), 0, 0),
    }
}

/// "name: error" for every po that failed, in order.
fn failures(o: &Outcome) -> Vec<String> {
    let (TransferResult::Ok(r) | TransferResult::Partial(r) | TransferResult::Failed(r)) = &o.result else {
        return Vec::new();
    };
    r.pos.iter().filter_map(|p| p.failed.as_ref().map(|e| format!("{}: {e}", p.name))).collect()
}

/// Why the CAC refused.
fn refusal(o: &Outcome) -> &str {
    match &o.result {
        TransferResult::Denied(e) => e,
        other => panic!("not denied: {other:?}"),
    }
}

#[test]
fn one_to_n_delivers_identical_trees() {
    let mut w = world(Setup::default());
    let o = w.run();
    assert!(matches!(o.result, TransferResult::Ok(_)), "{o:?}");
    assert_eq!(tally(&o), ("ok", 5, 5), "{o:?}");
    for i in 0..5 {
        assert_eq!(w.published(i).as_ref(), Some(&w.tree), "po {i}");
    }
    // every block went to every po exactly once, except those wholly in holes
    let (m, _, _) = sample_tree(4096);
    let holes = (0..m.blocks()).filter(|&i| m.is_hole(&m.block(i).unwrap())).count() as u64;
    assert!(holes >= 8, "{holes} hole blocks");
    assert_eq!(w.net.block_frames, (m.blocks() - holes) * 5);
}

#[test]
fn every_verify_mode_and_publish_each() {
    for (verify, publish) in [("none", "each"), ("crc32", "together"), ("md5", "each")] {
        let mut s = Setup::default();
        s.class.set("verify", verify).unwrap();
        s.class.set("publish", publish).unwrap();
        s.class.set("flag_file", "data.done").unwrap();
        let mut w = world(s);
        let o = w.run();
        assert!(matches!(o.result, TransferResult::Ok(_)), "{verify} {publish}: {o:?}");
        let mut want = w.tree.clone();
        want.insert("data.done".into(), "flag".into());
        for i in 0..5 {
            assert_eq!(w.published(i), Some(want.clone()));
        }
    }
}

#[test]
fn unknown_class_and_foreign_master_are_denied() {
    let mut w = world(Setup { class_name: "nope", ..Default::default() });
    let o = w.run();
    assert!(refusal(&o).contains("unknown_class"), "{o:?}");
    let mut w = world(Setup { masters: vec![("192.168.0.0".parse().unwrap(), 16)], ..Default::default() });
    let o = w.run();
    assert!(matches!(o.result, TransferResult::Denied(_)), "{o:?}");
    assert_eq!(tally(&o).0, "denied");
    assert!(w.published(0).is_none());
}

#[test]
fn master_and_pos_fail_over_to_the_next_cac() {
    // The first CAC refuses connections for the master and swallows them for the pos.
    let mut s = Setup { cacs_for_master: vec!["10.0.0.9:7100", "10.0.0.3:7100"], ..Default::default() };
    s.cacs_for_po = vec!["10.0.0.8:7100", "10.0.0.3:7100"];
    let mut w = world(s);
    w.net.blackholed.insert("10.0.0.8:7100".parse().unwrap());
    let o = w.run();
    assert!(matches!(o.result, TransferResult::Ok(_)), "{o:?}");
    assert_eq!(w.published(4), Some(w.tree.clone()));
    let mut w = world(Setup { cacs_for_master: vec!["10.0.0.9:7100"], ..Default::default() });
    let o = w.run();
    assert!(refusal(&o).contains("no CAC reachable"), "{o:?}");
}

#[test]
fn a_failing_disk_fails_one_po_and_keeps_its_old_files() {
    let mut w = world(Setup::default());
    let dest = w.dest.clone();
    let old: Tree = [("old.txt".to_string(), "file 644 x".to_string())].into();
    w.store(2).published.insert(dest, old.clone());
    w.store(2).fail_writes = true;
    let o = w.run();
    assert_eq!(tally(&o), ("partial", 4, 5), "{o:?}");
    let f = failures(&o);
    assert_eq!(f.len(), 1);
    assert!(f[0].starts_with("10.0.1.3:7200: ") && f[0].contains("No space left"), "{f:?}");
    assert_eq!(w.published(2), Some(old));
    assert_eq!(w.published(0), Some(w.tree.clone()));
}

#[test]
fn a_po_that_dies_is_reported_and_the_rest_complete() {
    let mut w = world(Setup::default());
    let victim = w.pos[1];
    let mut seen = 0;
    w.net.tamper = Some(Box::new(move |_, to, m| {
        if to == victim && matches!(m, Msg::Block { .. }) {
            seen += 1;
        }
        seen != 3
    }));
    // Run until the victim has had some blocks, then kill it.
    for _ in 0..2000 {
        w.net.drive_steps(1);
    }
    w.net.kill(victim);
    let o = w.run();
    assert!(matches!(o.result, TransferResult::Partial(_)), "{o:?}");
    assert!(failures(&o)[0].contains("10.0.1.2:7200"), "{:?}", failures(&o));
    for i in [0, 2, 3, 4] {
        assert_eq!(w.published(i), Some(w.tree.clone()));
    }
}

#[test]
fn corrupted_blocks_are_caught_by_the_checksum() {
    for verify in ["crc32", "md5"] {
        let mut s = Setup::default();
        s.class.set("verify", verify).unwrap();
        let mut w = world(s);
        let victim = w.pos[0];
        w.net.tamper = Some(Box::new(move |_, to, m| {
            if let (true, Msg::Block { data, .. }) = (to == victim, m) {
                let at = data.start + 7 % data.len();
                data.buf[at] ^= 0x10;
            }
            true
        }));
        let o = w.run();
        assert!(matches!(o.result, TransferResult::Partial(_)), "{o:?}");
        assert!(failures(&o)[0].contains(&format!("failed its {verify} check")), "{:?}", failures(&o));
        assert_eq!(w.published(0), None);
    }
}

#[test]
fn a_tampered_token_is_refused_and_nothing_is_staged() {
    let mut w = world(Setup::default());
    w.net.tamper = Some(Box::new(|_, _, m| {
        if let Msg::Offer { token, .. } = m {
            let n = token.len();
            token[n - 1] ^= 1;
        }
        true
    }));
    let o = w.run();
    assert!(matches!(o.result, TransferResult::Failed(_)), "{o:?}");
    assert_eq!(failures(&o).len(), 5);
    assert!(failures(&o)[0].contains("bad_token"), "{:?}", failures(&o));
    for i in 0..5 {
        assert!(w.store(i).staged.is_empty());
    }
}

#[test]
fn quorum_commits_at_the_timeout_without_a_stalled_po() {
    let mut s = Setup::default();
    s.class.set("quorum", "3").unwrap();
    s.class.set("timeout", "60").unwrap();
    let mut w = world(s);
    // po 4 accepts but never receives its blocks.
    let stalled = w.pos[4];
    w.net.tamper = Some(Box::new(move |_, to, m| !(to == stalled && matches!(m, Msg::Block { .. }))));
    let o = w.run();
    assert!(matches!(o.result, TransferResult::Partial(_)), "{o:?}");
    assert!(failures(&o)[0].contains("timeout"), "{:?}", failures(&o));
    assert_eq!(w.published(0), Some(w.tree.clone()));
    assert_eq!(w.published(4), None);
    // without quorum, nobody publishes: all or nothing
    let mut s = Setup::default();
    s.class.set("timeout", "60").unwrap();
    let mut w = world(s);
    let stalled = w.pos[4];
    w.net.tamper = Some(Box::new(move |_, to, m| !(to == stalled && matches!(m, Msg::Block { .. }))));
    let o = w.run();
    assert!(matches!(o.result, TransferResult::Failed(_)), "{o:?}");
    for i in 0..5 {
        assert_eq!(w.published(i), None);
    }
}

fn p2p_setup(pos: usize) -> Setup {
    let mut s = Setup { pos, ..Default::default() };
    s.class.set("p2p", "on").unwrap();
    s.class.set("verify", "crc32").unwrap();
    s
}

#[test]
fn p2p_delivers_identical_trees_and_the_master_sends_each_block_about_once() {
    for (n, publish) in [(1, "together"), (4, "each"), (8, "together"), (12, "each")] {
        let mut s = p2p_setup(n);
        s.class.set("publish", publish).unwrap();
        let mut w = world(s);
        let o = w.run();
        assert!(matches!(o.result, TransferResult::Ok(_)), "n={n}: {o:?}");
        for i in 0..n {
            assert_eq!(w.published(i).as_ref(), Some(&w.tree), "n={n} po {i}");
        }
        let (m, _, _) = sample_tree(4096);
        let data = (0..m.blocks()).filter(|&i| !m.is_hole(&m.block(i).unwrap())).count() as u64;
        let from_master = w.net.blocks_from.get(&w.master).copied().unwrap_or(0);
        let total = w.net.block_frames;
        // The simulated network is instant, so the master end-game is generous; a direct push
        // would send n copies. The lab measures src_copies under real bandwidth.
        assert!(from_master <= m.blocks() * 2, "n={n}: master sent {from_master} of {} blocks", m.blocks());
        assert!(total >= data * n as u64, "n={n}: {total} block frames");
    }
}

#[test]
fn p2p_routes_around_a_dead_po() {
    let mut w = world(p2p_setup(8));
    let victim = w.pos[5];
    for _ in 0..600 {
        w.net.drive_steps(1);
    }
    w.net.kill(victim);
    let o = w.run();
    assert!(matches!(o.result, TransferResult::Partial(_)), "{o:?}");
    assert!(failures(&o).iter().any(|l| l.contains("10.0.1.6:7200")), "{:?}", failures(&o));
    for i in [0, 1, 2, 3, 4, 6, 7] {
        assert_eq!(w.published(i), Some(w.tree.clone()), "po {i}");
    }
}

#[test]
fn p2p_a_peer_serving_corrupt_blocks_is_caught_and_avoided() {
    let mut w = world(p2p_setup(6));
    let liar = w.pos[2];
    let corrupted = std::rc::Rc::new(std::cell::Cell::new(0u32));
    let c2 = corrupted.clone();
    w.net.tamper = Some(Box::new(move |from, _, m| {
        if let (true, Msg::Block { data, .. }) = (from == liar, m) {
            let at = data.start + 3 % data.len();
            data.buf[at] ^= 0x55;
            c2.set(c2.get() + 1);
        }
        true
    }));
    let o = w.run();
    assert!(matches!(o.result, TransferResult::Ok(_)), "{o:?}");
    assert!(corrupted.get() > 0, "the liar never served anything");
    // MAX_FAULTS, plus what its links had queued when it was excluded (3 links, 2 deep).
    assert!(corrupted.get() <= 3 + 3 * 2, "the liar kept serving: {}", corrupted.get());
    for i in 0..6 {
        assert_eq!(w.published(i), Some(w.tree.clone()), "po {i}");
    }
}

#[test]
fn p2p_without_verification_still_delivers() {
    let mut s = p2p_setup(5);
    s.class.set("verify", "none").unwrap();
    let mut w = world(s);
    assert!(matches!(w.run().result, TransferResult::Ok(_)));
    for i in 0..5 {
        assert_eq!(w.published(i), Some(w.tree.clone()));
    }
}

#[test]
fn every_machine_counts_its_own_stats() {
    let mut w = world(Setup::default());
    let victim = w.pos[0];
    let mut corrupted = false;
    // One corrupted block for po 0 (crc32 catches it; it fails that po).
    w.net.tamper = Some(Box::new(move |_, to, m| {
        if let (false, true, Msg::Block { data, .. }) = (corrupted, to == victim, m) {
            data.buf[data.start] ^= 0x10;
            corrupted = true;
        }
        true
    }));
    w.run();
    let (m, _, _) = sample_tree(4096);
    let data: Vec<_> = (0..m.blocks()).map(|i| m.block(i).unwrap()).filter(|b| !m.is_hole(b)).collect();
    let data_bytes: u64 = data.iter().map(|b| b.len as u64).sum();
    let stats = |w: &mut World, node: usize| w.net.nodes[node].1.m().stats();
    for i in 1..5 {
        let po = w.pos[i];
        let s = stats(&mut w, po);
        assert_eq!(s.blocks_received, data.len() as u64, "po {i}: {s:?}");
        assert_eq!(s.bytes_received, data_bytes, "po {i}");
        assert_eq!((s.transfers_published, s.transfers_active, s.verify_failures), (1, 0, 0), "po {i}: {s:?}");
    }
    let s = stats(&mut w, victim);
    assert_eq!((s.verify_failures, s.transfers_failed, s.transfers_published), (1, 1, 0), "{s:?}");
    assert_eq!(s.transfers_active, 0, "{s:?}");
    let at = w.master;
    let master = stats(&mut w, at);
    assert_eq!(master.blocks_sent, w.net.block_frames, "{master:?}");
    // The first CAC answered the master and the pos; the second saw nothing.
    let cac = stats(&mut w, 0);
    assert_eq!((cac.auth_granted, cac.tokens_verified, cac.auth_denied), (1, 5, 0), "{cac:?}");
    assert_eq!(stats(&mut w, 1), Stats::default());
}
