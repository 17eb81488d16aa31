//! A socket-free network for whole transfers between real state machines: every frame is
//! encoded and decoded, time is simulated, and faults (dead hosts, refused or blackholed
//! addresses, corrupted frames, failing disks) are injected at will.
//!
//! - `mem`: the in-memory source and store the machines read and write.
//! - `transfer`: whole transfers between a master, two CACs and many pos on this network.
//! - `probe`: one machine driven by hand, the test playing every other party; `cac`, `po` and
//!   `master` use it to reach every message arm of each machine.
//! - `bounds`: what a connection, an offer or an abandoned transfer may cost a daemon.
//! - `chain`: pipelined chains (issue 16) unit by unit over links with rates and latency, held
//!   against the flow model (`fluid::chain`).

mod bounds;
mod cac;
mod chain;
mod checks;
mod master;
mod mem;
mod po;
mod probe;
mod transfer;

use super::cac::{CacMachine, CacSettings, ClassAuth};
use super::cidr::Cidr;
use super::manifest::{Entry, Kind};
use super::master::{MasterMachine, MasterSettings, Outcome, TransferResult};
use super::po::{PoMachine, PoSettings};
use super::*;
use mem::{tree_of, MemSource, MemStore, Tree};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

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
    /// Frame limits of accepted connections, as the reactor keeps them (`Action::FrameLimit`).
    limits: HashMap<(usize, ConnId), u32>,
    /// Frame types of accepted connections (`Action::FrameTypes`); all when absent.
    types: HashMap<(usize, ConnId), wire::TypeSet>,
    /// Receiving ends that were sent a frame, and those sent one over their limit after that:
    /// the reactor then holds reading until the machine has seen the earlier frames (which may
    /// raise the limit), so those frames are judged as they are delivered.
    spoke: HashSet<(usize, ConnId)>,
    late: HashSet<(usize, ConnId)>,
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
            limits: HashMap::new(),
            types: HashMap::new(),
            spoke: HashSet::new(),
            late: HashSet::new(),
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
                        self.limits.insert((to, acc), wire::MAX_PREAUTH);
                        let peer = SocketAddr::new(self.nodes[from].0.ip(), 40000 + (self.next_accept % 20000) as u16);
                        let local = self.nodes[to].0;
                        self.queue.push_back((to, Event::Accepted { conn: acc, peer, local }));
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
            Action::Abandon { conn, last } => {
                if let Some(msg) = last {
                    self.transmit(from, conn, msg);
                }
                self.apply(from, Action::Close { conn });
            }
            Action::FrameLimit { conn, max } => {
                self.limits.insert((from, conn), max);
            }
            Action::FrameTypes { conn, types } => {
                self.types.insert((from, conn), types);
            }
            Action::SetRates { .. } | Action::ShortQueue { .. } => {}
            // The simulator's hooks succeed at once, saying what they would run.
            // Checks are done at the node's next turn in the queue, after what is queued already.
            Action::Verify(check) => self.queue.push_back((from, check.run())),
            Action::Disk(job) => self.queue.push_back((from, job.run())),
            Action::RunHook { id, name, .. } => {
                self.queue.push_back((from, Event::HookDone { id, exit: 0, tail: format!("ran {name}") }))
            }
        }
    }

    /// The receiving end (`to`, `conn`) cuts its connection off at a frame's header.
    fn cut(&mut self, to: usize, conn: ConnId, why: String) {
        self.spoke.remove(&(to, conn));
        if let Some(peer) = self.links.remove(&(to, conn)) {
            self.links.remove(&peer);
            self.queue.push_back((peer.0, Event::Closed { conn: peer.1, reason: Close::Io("reset".into()) }));
        }
        self.queue.push_back((to, Event::Closed { conn, reason: Close::Decode(why) }));
    }

    /// Whether `ev` reaches node `to`: a frame held for the machine (`late`) is judged by its
    /// connection's limit now; after a cut nothing more of that connection is read.
    fn admit(&mut self, to: usize, ev: &Event) -> bool {
        let Event::Frame { conn, msg } = ev else { return true };
        if !self.late.contains(&(to, *conn)) {
            return true;
        }
        if !self.spoke.contains(&(to, *conn)) {
            return false; // cut off already
        }
        let limit = self.limits.get(&(to, *conn)).copied().unwrap_or(wire::NO_FRAME_LIMIT);
        if msg.to_frame().len() - wire::HEADER_LEN <= limit as usize {
            return true;
        }
        self.cut(to, *conn, format!("{:?} frame over the limit of {limit}", msg.ty()));
        false
    }

    fn transmit(&mut self, from: usize, conn: ConnId, msg: Msg) {
        let Some(&(to, peer_conn)) = self.links.get(&(from, conn)) else { return };
        // Through the real codec, as on a socket.
        let frame = msg.to_frame();
        let (mut msg, used) = Msg::from_frame(&frame).unwrap().unwrap();
        assert_eq!(used, frame.len());
        let limit = self.limits.get(&(to, peer_conn)).copied().unwrap_or(wire::NO_FRAME_LIMIT);
        let taken = self.types.get(&(to, peer_conn)).is_none_or(|t| t.contains(msg.ty()));
        let over = frame.len() - wire::HEADER_LEN > limit as usize;
        if over && self.spoke.contains(&(to, peer_conn)) && taken {
            self.late.insert((to, peer_conn));
        } else if over || !taken {
            // The receiving reactor cuts the connection off at the header.
            return self.cut(
                to,
                peer_conn,
                format!("{:?} frame over the limit of {limit} or of a type not taken", msg.ty()),
            );
        }
        self.spoke.insert((to, peer_conn));
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
                if self.nodes[to].2 && self.admit(to, &ev) {
                    let now = self.now;
                    self.nodes[to].1.m().handle_event(now, ev);
                    self.nodes[to].1.m().end_turn();
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
                if self.nodes[to].2 && self.admit(to, &ev) {
                    let now = self.now;
                    self.nodes[to].1.m().handle_event(now, ev);
                    self.nodes[to].1.m().end_turn();
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

/// The master's secret of the transfer in every test: the swarm's link keys derive from it.
const TRANSFER_KEY: [u8; 32] = [0x5a; 32];

/// The class every test pushes: `base1` into /home/work/data/base, in 4 KiB blocks.
fn base_class() -> ClassCfg {
    let mut class = ClassCfg::new("base1");
    class.set("dest", "/home/work/data/base").unwrap();
    class.set("block_size", "4K").unwrap();
    class
}

/// `base1` with crc32 and `extra`, as a CAC sends it.
fn class_pairs(extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut c = base_class();
    c.set("verify", "crc32").unwrap();
    for (k, v) in extra {
        c.set(k, v).unwrap();
    }
    c.to_pairs()
}

/// A po advertising `addr`, asking `cacs` in order, taking dests below /home/work/data.
fn po_settings(addr: &str, cacs: &[&str]) -> PoSettings {
    PoSettings {
        advertise: Some(addr.into()),
        listen_port: 7200,
        release_after: Duration::from_secs(30),
        cacs: cacs.iter().map(|c| c.parse().unwrap()).collect(),
        allow_dest: vec!["/home/work/data".into()],
        root: None,
        cac_timeout: Duration::from_secs(3),
        hook_dir: Some("/etc/wugui/hooks".into()),
        max_upload_rate: 0,
        max_download_rate: 0,
    }
}

/// A master pushing `class`, asking `cacs` in order.
fn master_settings(class: &str, cacs: &[&str]) -> MasterSettings {
    MasterSettings {
        class: class.into(),
        cacs: cacs.iter().map(|c| c.parse().unwrap()).collect(),
        secret: None,
        connect_timeout: Duration::from_secs(3),
        unix_start: 0,
        dry_run: false,
        wait: None,
        transfer_key: TRANSFER_KEY,
        canary: None,
        itemize: false,
    }
}

struct Setup {
    pos: usize,
    class: ClassCfg,
    masters: Vec<Cidr>,
    cacs_for_master: Vec<&'static str>,
    cacs_for_po: Vec<&'static str>,
    class_name: &'static str,
    /// One file of this many blocks (of the class's size) instead of the sample tree (0: the
    /// sample tree).
    file_blocks: u64,
    /// The source hashes ahead (`MemSource::hash_ahead`).
    hash_ahead: bool,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            pos: 5,
            class: base_class(),
            masters: vec![Cidr::parse("10.0.0.0/24").unwrap()],
            cacs_for_master: vec!["10.0.0.2:7100"],
            cacs_for_po: vec!["10.0.0.2:7100"],
            class_name: "base1",
            file_blocks: 0,
            hash_ahead: false,
        }
    }
}

fn sample_tree(block_size: u32) -> (Manifest, MemSource, Tree) {
    let mk = |p: &str, kind| Entry {
        path: p.into(),
        kind,
        mode: 0o644,
        uid: 0,
        gid: 0,
        mtime: 1_700_000_000,
        mtime_nsec: 5,
        sparse: None,
    };
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
            sites: Vec::new(),
            masters: s.masters.clone(),
            master_secret: None,
        }],
        token_ttl: 3600,
    };
    net.add("10.0.0.2:7100", Node::Cac(CacMachine::new(settings.clone(), Env::fixed(1_800_000_000, 1))));
    net.add("10.0.0.3:7100", Node::Cac(CacMachine::new(settings, Env::fixed(1_800_000_000, 2))));
    let mut pos = Vec::new();
    for a in &po_addrs {
        let ps = po_settings(&a.to_string(), &s.cacs_for_po);
        pos.push(net.add(&a.to_string(), Node::Po(PoMachine::new(ps, MemStore::default()))));
    }
    let (m, mut src, tree) = match s.file_blocks {
        0 => sample_tree(if s.class.block_size == 0 { 4096 } else { s.class.block_size }),
        n => {
            let (m, src) = MemSource::one_file_of(n, s.class.block_size.max(4096));
            let tree = tree_of(&m, |e| src.files.get(&e).map(|d| d.to_vec()).unwrap_or_default());
            (m, src, tree)
        }
    };
    src.hash_ahead = s.hash_ahead;
    let mut planned = Some((m, src));
    let planner: super::master::Planner = Box::new(move |c: &ClassCfg| {
        let (m, src) = planned.take().ok_or("planned twice")?;
        assert!(c.block_size == 0 || c.block_size == m.block_size);
        Ok((m, Box::new(src) as Box<dyn Source>))
    });
    let ms = master_settings(s.class_name, &s.cacs_for_master);
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
    /// A new master pushes the same tree again.
    fn push_again(&mut self) -> Outcome {
        let (m, src, _) = sample_tree(4096);
        let mut planned = Some((m, src));
        let planner: super::master::Planner = Box::new(move |_: &ClassCfg| {
            let (m, src) = planned.take().ok_or("planned twice")?;
            Ok((m, Box::new(src) as Box<dyn Source>))
        });
        let ms = master_settings("base1", &["10.0.0.2:7100"]);
        let addr = format!("10.0.0.1:{}", self.net.nodes.len());
        self.master = self.net.add(&addr, Node::Master(MasterMachine::new(ms, planner, self.net.now)));
        self.run()
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
