//! The discrete-event engine: every endpoint runs the daemon's fetch loop against a model of
//! the network, chunk by chunk, with the real planner ([`scheduler::planner::plan`]) and the
//! real initial seeding ([`scheduler::seeding`]) making every decision.
//!
//! # What is modelled, and how
//!
//! * **Time** is integer nanoseconds; events at the same instant run in the order they were
//!   scheduled. Nothing reads a clock or an unseeded random source, so a seed gives one run,
//!   bit for bit; a 128-bit fold of every event is the run's fingerprint.
//! * **Links** are FIFO servers at their capacity: per node a LAN link each way, per site a
//!   WAN uplink and downlink shared by all its members, the origin's uplink. A chunk crossing
//!   the WAN queues at the sender site's uplink when its request arrives there, then at the
//!   receiving site's downlink when it arrives there (store and forward, one event per hop,
//!   so a busy link never holds time on another). A LAN transfer is booked on both node links
//!   when its request arrives (LAN links are ten times the WAN's and rarely queue).
//!   Latency is one-way per hop: LAN, site to WAN, WAN to site (the origin has its own).
//! * **The fetch loop** follows `node::net::fetch`: the same in-flight budgets per peer
//!   (LAN and WAN), a new plan when a finished request leaves a peer a quarter of its budget
//!   free, a plan shortly after peers announce new chunks (coalesced over
//!   [`PLAN_COALESCE_NS`]), chunks announced at checkpoints (every 250 ms or 32 MiB), the
//!   endgame's re-plan tick. Site members are every connected member (the daemon's "live"
//!   members: working on the release, or complete).
//! * **Same-site availability** is one [`Availability`] per site counting every member's
//!   announced chunks (the daemon counts its peers'; for the chunks a node lacks, which are
//!   the only ones it plans, the two are equal).
//! * **Initial seeding** at the origin shows each site its share until every chunk has left
//!   once, or no new chunk was asked for in 5 s, exactly as the daemon.
//!
//! Not modelled: CPU and disk (the daemon's own benchmarks cover them), packet loss and
//! congestion control (a link is shared FIFO by chunk), the control plane (announcements
//! arrive with the data plane's latency).

use super::scenario::{SimScenario, SiteLinks};
use node::net::fetch::{
    CHECKPOINT_BYTES, CHECKPOINT_INTERVAL, LAN_IN_FLIGHT_BYTES, PLAN_COALESCE, WAN_IN_FLIGHT_BYTES,
};
use protocol::wire::Bitmap;
use protocol::{ChunkId, ChunkRef};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use scheduler::planner::{
    self, Assignment, Availability, InFlightSet, PeerView, PlanInput, PlannerConfig,
};
use scheduler::seeding::{self, Seeding};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::hash::{BuildHasherDefault, Hasher};

/// The daemon's [`PLAN_COALESCE`] in nanoseconds.
const PLAN_COALESCE_NS: u64 = PLAN_COALESCE.as_nanos() as u64;

/// Index of the origin among nodes, and of its site among sites.
pub const ORIGIN: u32 = 0;

const NS: f64 = 1e9;
const NONE: u64 = u64::MAX;
/// `plan_at` of a node that never plans (the origin, complete endpoints): below every time.
const DONE: u64 = 0;

/// A fast, fixed hasher for the per-node in-flight maps (keys are chunk indices): the std
/// hasher is randomly seeded, and the planner sorts what it reads from the map anyway, but a
/// fixed one keeps every run's memory layout identical too.
#[derive(Default, Clone, Copy)]
pub struct IndexHasher(u64);

impl Hasher for IndexHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }
    fn write_u32(&mut self, v: u32) {
        self.write_u64(u64::from(v));
    }
    fn write_u64(&mut self, v: u64) {
        // FxHash's step: one multiply; the keys are small dense integers.
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

type InFlightMap = InFlightSet<BuildHasherDefault<IndexHasher>>;

/// What a node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The publisher: has every chunk from the start, fetches nothing.
    Origin,
    /// An endpoint that fetches the release.
    Endpoint,
}

/// A FIFO link: its rate and when it is next free.
#[derive(Debug, Clone, Copy)]
struct Link {
    /// Nanoseconds per byte.
    ns_per_byte: f64,
    free: u64,
}

impl Link {
    fn new(bytes_per_s: f64) -> Self {
        Self {
            ns_per_byte: NS / bytes_per_s,
            free: 0,
        }
    }

    fn time(&self, bytes: u32) -> u64 {
        (f64::from(bytes) * self.ns_per_byte).round() as u64
    }

    /// Queues `bytes` arriving at `at`; returns when the last byte leaves.
    fn send(&mut self, at: u64, bytes: u32) -> u64 {
        let start = at.max(self.free);
        self.free = start + self.time(bytes);
        self.free
    }
}

struct Node {
    site: u32,
    /// Position in its site's member list.
    slot: u32,
    key: [u8; 32],
    role: Role,
    /// Verified chunks.
    have: Bitmap,
    /// Announced chunks (made durable by a checkpoint): what peers see.
    shown: Bitmap,
    /// Received since the last checkpoint.
    pending: Vec<u32>,
    pending_bytes: u64,
    checkpoint_at: u64,
    /// The chunks rendezvous hashing names this node for.
    designated: Bitmap,
    in_flight: InFlightMap,
    /// Bytes in flight to each member of the site, by slot, and whether the last plan left
    /// that member under a quarter of its budget (a finished request from it plans again).
    lan_in_flight: Vec<u64>,
    lan_starved: Vec<bool>,
    /// WAN peers (node indices, sorted), the bytes in flight to each, and whether starved.
    wan: Vec<u32>,
    wan_in_flight: Vec<u64>,
    wan_starved: Vec<bool>,
    nic_up: Link,
    nic_down: Link,
    /// When a request to a WAN peer other than the reserve was last out.
    wan_busy_at: u64,
    /// Something on the WAN side changed since the last WAN pass (see
    /// `PlanInput::plan_wan`): a WAN peer announced a chunk this node is designated for and
    /// lacks, a WAN answer arrived, the members or the origin's seeding changed, or the
    /// reserve's idle time ran out.
    wan_dirty: bool,
    /// Of the chunks this node is designated for, those its WAN peers (other than the
    /// reserve) have announced (`PlanInput::wan_held`).
    wan_held: Bitmap,
    done_at: Option<u64>,
    /// Chunks received from a peer (what completion is checked against).
    received: Bitmap,
}

struct Site {
    links: SiteLinks,
    members: Vec<u32>,
    lan: Availability,
    up: Link,
    down: Link,
    /// One-way latency to the WAN, ns.
    wan_ns: u64,
    /// One-way LAN latency, ns.
    lan_ns: u64,
    wan_in: u64,
    wan_out: u64,
}

#[derive(Debug, Clone, Copy)]
enum Ev {
    Plan(u32),
    Checkpoint(u32),
    /// LAN transfer done: (to, from, chunk).
    LanDone(u32, u32, u32),
    /// A WAN request reached the sender's site.
    WanAtSender(u32, u32, u32),
    /// A WAN chunk reached the receiver's site.
    WanAtSite(u32, u32, u32),
    /// A WAN transfer done.
    WanDone(u32, u32, u32),
    /// A chunk left the origin's uplink.
    Served(u32),
    /// The origin checks whether initial seeding stalled.
    SeedCheck,
}

impl Ev {
    fn fingerprint(&self) -> (u64, u64) {
        let w = |k: u64, a: u32, b: u32, c: u32| {
            (k | u64::from(a) << 8, u64::from(b) | u64::from(c) << 32)
        };
        match *self {
            Self::Plan(n) => w(1, n, 0, 0),
            Self::Checkpoint(n) => w(2, n, 0, 0),
            Self::LanDone(a, b, c) => w(3, a, b, c),
            Self::WanAtSender(a, b, c) => w(4, a, b, c),
            Self::WanAtSite(a, b, c) => w(5, a, b, c),
            Self::WanDone(a, b, c) => w(6, a, b, c),
            Self::SeedCheck => w(7, 0, 0, 0),
            Self::Served(c) => w(8, c, 0, 0),
        }
    }
}

struct Entry {
    at: u64,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Entry {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Entry {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

/// Width of a calendar bucket: 2^17 ns ≈ 131 µs.
const BUCKET_SHIFT: u32 = 17;

/// Buckets in the calendar's ring: 2^19 × 131 µs ≈ 69 s ahead; later events wait in a heap.
const RING: u64 = 1 << 19;

/// The event queue: a calendar of time buckets for the near future (pushing is a vector
/// push), the bucket being drained as a small heap, and a heap for events past the ring. It
/// pops in exactly the order one heap would ((time, sequence) is a total order), at a
/// fraction of the cost: a heap of millions of pending transfers misses the cache on every
/// pop.
struct Calendar {
    ring: Vec<Vec<Entry>>,
    /// Absolute number of the bucket being drained.
    cur: u64,
    draining: BinaryHeap<Reverse<Entry>>,
    far: BinaryHeap<Reverse<Entry>>,
    /// Entries in `ring`.
    in_ring: usize,
}

impl Calendar {
    fn new() -> Self {
        Self {
            ring: (0..RING).map(|_| Vec::new()).collect(),
            cur: 0,
            draining: BinaryHeap::new(),
            far: BinaryHeap::new(),
            in_ring: 0,
        }
    }

    fn push(&mut self, e: Entry) {
        let b = e.at >> BUCKET_SHIFT;
        if b <= self.cur {
            self.draining.push(Reverse(e));
        } else if b - self.cur < RING {
            self.ring[(b % RING) as usize].push(e);
            self.in_ring += 1;
        } else {
            self.far.push(Reverse(e));
        }
    }

    fn pop(&mut self) -> Option<Entry> {
        loop {
            if let Some(Reverse(e)) = self.draining.pop() {
                return Some(e);
            }
            if self.in_ring == 0 {
                // Jump to the next far event's bucket.
                let Reverse(next) = self.far.peek()?;
                self.cur = (next.at >> BUCKET_SHIFT).max(self.cur + 1) - 1;
            }
            self.cur += 1;
            while self
                .far
                .peek()
                .is_some_and(|Reverse(e)| (e.at >> BUCKET_SHIFT) < self.cur + RING)
            {
                let Reverse(e) = self.far.pop().expect("peeked");
                self.push(e);
            }
            let slot = &mut self.ring[(self.cur % RING) as usize];
            if !slot.is_empty() {
                self.in_ring -= slot.len();
                let mut spare = std::mem::take(&mut self.draining).into_vec();
                spare.extend(slot.drain(..).map(Reverse));
                *slot = Vec::new();
                self.draining = BinaryHeap::from(spare);
            }
        }
    }
}

/// What a run produced.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Seconds at which each endpoint completed (`None`: not within the limit), by node index
    /// minus one (the origin is not an endpoint).
    pub completed_s: Vec<Option<f64>>,
    /// Site of each endpoint (index into `site_names`).
    pub endpoint_site: Vec<u32>,
    /// Site names (branch sites; the origin's site is not listed).
    pub site_names: Vec<String>,
    /// Release size, bytes.
    pub release_bytes: u64,
    /// Bytes the origin sent.
    pub origin_egress: u64,
    /// Of which before initial seeding ended.
    pub origin_egress_seeding: u64,
    /// When initial seeding ended.
    pub seeding_ended_s: Option<f64>,
    /// WAN bytes into each branch site.
    pub site_wan_in: Vec<u64>,
    /// WAN bytes out of each branch site.
    pub site_wan_out: Vec<u64>,
    /// Chunk bytes put on a link, received, and lost (a transfer whose end went away).
    pub bytes_sent: u64,
    /// See `bytes_sent`.
    pub bytes_received: u64,
    /// See `bytes_sent`.
    pub bytes_lost: u64,
    /// Endpoints that hold a chunk they never received (must be 0).
    pub unreceived_chunks: u64,
    /// Events processed.
    pub events: u64,
    /// Planner passes.
    pub plans: u64,
    /// Fingerprint of the event log (every event's time, kind and fields, in order).
    pub log_hash: u128,
    /// Simulated seconds when the last event ran.
    pub end_s: f64,
}

/// The simulator's state.
pub struct Engine {
    chunks: Vec<ChunkRef>,
    nodes: Vec<Node>,
    sites: Vec<Site>,
    /// Per branch site (index = site), the origin's seeding share.
    shares: Vec<Bitmap>,
    seeding: Seeding,
    queue: Calendar,
    /// When each node's next plan is due (NONE: none; DONE: never again), kept apart from
    /// the nodes: every announcement touches dozens of them.
    plan_at: Vec<u64>,
    seq: u64,
    now: u64,
    config: PlannerConfig,
    limit: u64,
    remaining: usize,
    hash: (u64, u64),
    events: u64,
    plans: u64,
    sent: u64,
    received: u64,
    lost: u64,
    origin_egress: u64,
    origin_seeding: u64,
    reveal_at: Option<u64>,
    release_bytes: u64,
}

/// Runs `scenario`; `progress` is called about once per simulated second with (simulated
/// seconds, endpoints complete, endpoints).
pub fn run(scenario: &SimScenario, mut progress: impl FnMut(f64, usize, usize)) -> Outcome {
    let mut e = Engine::new(scenario);
    let mut next_report = 0u64;
    while let Some(entry) = e.queue.pop() {
        if entry.at > e.limit {
            break;
        }
        e.now = entry.at;
        e.events += 1;
        let (a, b) = entry.ev.fingerprint();
        e.hash.0 = planner::mix(e.hash.0 ^ entry.at ^ a);
        e.hash.1 = planner::mix(e.hash.1 ^ b ^ e.hash.0);
        e.handle(entry.ev);
        if e.now >= next_report {
            progress(
                e.now as f64 / NS,
                e.nodes.len() - 1 - e.remaining,
                e.nodes.len() - 1,
            );
            next_report = e.now + 1_000_000_000;
        }
    }
    e.outcome()
}

impl Engine {
    fn new(sc: &SimScenario) -> Self {
        let mut rng = ChaCha20Rng::seed_from_u64(sc.seed);
        let release_bytes = sc.release_bytes();
        let chunk = u64::from(sc.chunk_bytes());
        let n = sc.chunk_count() as u32;
        let chunks: Vec<ChunkRef> = (0..n)
            .map(|i| {
                let len = (release_bytes - u64::from(i) * chunk).min(chunk) as u32;
                let mut seed = [0u8; 16];
                seed[..8].copy_from_slice(&sc.seed.to_le_bytes());
                seed[8..12].copy_from_slice(&i.to_le_bytes());
                ChunkRef {
                    id: ChunkId::of(&seed),
                    len,
                }
            })
            .collect();

        let branch = sc.site_links();
        let origin_links = SiteLinks {
            name: "origin".into(),
            nodes: 1,
            down: sc.origin_up(),
            up: sc.origin_up(),
            wan_latency: sc.origin.latency_ms / 1e3,
            lan: f64::INFINITY,
            lan_latency: 0.0,
        };
        let mut sites: Vec<Site> = std::iter::once(origin_links)
            .chain(branch)
            .map(|l| Site {
                up: Link::new(l.up),
                down: Link::new(l.down),
                wan_ns: (l.wan_latency * NS).round() as u64,
                lan_ns: (l.lan_latency * NS).round() as u64,
                members: Vec::new(),
                lan: Availability::new(n),
                wan_in: 0,
                wan_out: 0,
                links: l,
            })
            .collect();

        let mut nodes = Vec::new();
        for (s, site) in sites.iter_mut().enumerate() {
            for k in 0..site.links.nodes {
                let mut key = [0u8; 32];
                rng.fill(&mut key);
                let role = if s == 0 { Role::Origin } else { Role::Endpoint };
                let full = role == Role::Origin;
                nodes.push(Node {
                    site: s as u32,
                    slot: k as u32,
                    key,
                    role,
                    have: if full {
                        Bitmap::full(n)
                    } else {
                        Bitmap::new(n)
                    },
                    shown: if full {
                        Bitmap::full(n)
                    } else {
                        Bitmap::new(n)
                    },
                    pending: Vec::new(),
                    pending_bytes: 0,
                    checkpoint_at: NONE,
                    designated: Bitmap::new(n),
                    in_flight: InFlightMap::new(n),
                    lan_in_flight: vec![0; site.links.nodes],
                    lan_starved: vec![false; site.links.nodes],
                    wan: Vec::new(),
                    wan_in_flight: Vec::new(),
                    wan_starved: Vec::new(),
                    nic_up: Link::new(site.links.lan),
                    nic_down: Link::new(site.links.lan),
                    wan_busy_at: 0,
                    wan_dirty: true,
                    wan_held: Bitmap::new(n),
                    done_at: None,
                    received: Bitmap::new(n),
                });
                site.members.push((nodes.len() - 1) as u32);
            }
        }

        // WAN peers: each endpoint dials `wan_peers` endpoints of other sites, and the origin.
        let endpoints = nodes.len() as u32 - 1;
        let want = sc.swarm.wan_peers.min(endpoints as usize - 1);
        let mut adjacency: Vec<Vec<u32>> = vec![Vec::new(); nodes.len()];
        for a in 1..nodes.len() as u32 {
            let mut picked = 0;
            let mut tries = 0;
            while picked < want && tries < want * 20 {
                tries += 1;
                let b = rng.random_range(1..=endpoints);
                if nodes[b as usize].site == nodes[a as usize].site
                    || adjacency[a as usize].contains(&b)
                {
                    continue;
                }
                adjacency[a as usize].push(b);
                adjacency[b as usize].push(a);
                picked += 1;
            }
            adjacency[a as usize].push(ORIGIN);
            adjacency[ORIGIN as usize].push(a);
        }
        for (node, mut peers) in nodes.iter_mut().zip(adjacency) {
            peers.sort_unstable();
            peers.dedup();
            node.wan_in_flight = vec![0; peers.len()];
            node.wan_starved = vec![false; peers.len()];
            node.wan = peers;
        }

        // Origin seeding: each branch site's share.
        let keys: Vec<u64> = sites[1..]
            .iter()
            .map(|s| seeding::site_key(&s.links.name))
            .collect();
        let owners = seeding::shares(&keys, &chunks);
        let mut shares = vec![Bitmap::new(n)];
        shares.extend((0..keys.len()).map(|s| seeding::share_bitmap(owners.as_deref(), s, n)));

        let mut e = Self {
            chunks,
            nodes,
            sites,
            shares,
            seeding: Seeding::new(n, 0),
            queue: Calendar::new(),
            plan_at: Vec::new(),
            seq: 0,
            now: 0,
            config: PlannerConfig::default(),
            limit: (sc.limit_s * NS) as u64,
            remaining: endpoints as usize,
            hash: (0x7032_7064_7369_6d31, 0),
            events: 0,
            plans: 0,
            sent: 0,
            received: 0,
            lost: 0,
            origin_egress: 0,
            origin_seeding: 0,
            reveal_at: None,
            release_bytes,
        };
        e.plan_at = e
            .nodes
            .iter()
            .map(|n| if n.role == Role::Endpoint { NONE } else { DONE })
            .collect();
        for s in 1..e.sites.len() {
            e.designate(s as u32);
        }
        for node in 1..e.nodes.len() as u32 {
            e.wake(node, 0);
        }
        e.push(1_000_000_000, Ev::SeedCheck);
        e
    }

    fn push(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        self.queue.push(Entry {
            at,
            seq: self.seq,
            ev,
        });
    }

    /// Schedules a plan of `node` at `at` unless one is due sooner.
    fn wake(&mut self, node: u32, at: u64) {
        let due = &mut self.plan_at[node as usize];
        if *due <= at {
            return;
        }
        *due = at;
        self.push(at, Ev::Plan(node));
    }

    /// Recomputes which member of site `s` fetches each chunk across the WAN.
    fn designate(&mut self, s: u32) {
        let members: Vec<[u8; 32]> = self.sites[s as usize]
            .members
            .iter()
            .map(|&m| self.nodes[m as usize].key)
            .collect();
        let owner = planner::designation(&members, &self.chunks);
        let n = self.chunks.len() as u32;
        for (k, &m) in self.sites[s as usize].members.iter().enumerate() {
            let mut mine = Bitmap::new(n);
            for (i, &o) in owner.iter().enumerate() {
                if o as usize == k {
                    mine.set(i as u32);
                }
            }
            // What its WAN peers (not the reserve) hold among those chunks.
            let mut held = Bitmap::new(n);
            for &w in &self.nodes[m as usize].wan {
                let view = if w == ORIGIN {
                    if self.seeding.revealed() {
                        continue;
                    }
                    &self.shares[s as usize]
                } else {
                    &self.nodes[w as usize].shown
                };
                for i in view.ones() {
                    if mine.get(i) {
                        held.set(i);
                    }
                }
            }
            let node = &mut self.nodes[m as usize];
            node.designated = mine;
            node.wan_held = held;
            node.wan_dirty = true;
        }
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Plan(node) => {
                if self.plan_at[node as usize] == self.now {
                    self.plan_at[node as usize] = NONE;
                    let n = &mut self.nodes[node as usize];
                    if self.seeding.revealed()
                        && self.now - n.wan_busy_at >= self.config.reserve_after_ms * 1_000_000
                    {
                        n.wan_dirty = true;
                    }
                    self.plan(node);
                }
            }
            Ev::Checkpoint(node) => {
                if self.nodes[node as usize].checkpoint_at == self.now {
                    self.checkpoint(node);
                }
            }
            Ev::LanDone(to, from, chunk) => self.arrive(to, from, chunk),
            Ev::WanAtSender(to, from, chunk) => {
                let len = self.chunks[chunk as usize].len;
                let fs = self.nodes[from as usize].site as usize;
                let ts = self.nodes[to as usize].site as usize;
                let left = self.sites[fs].up.send(self.now, len);
                self.sites[fs].wan_out += u64::from(len);
                self.sent += u64::from(len);
                if from == ORIGIN {
                    self.origin_egress += u64::from(len);
                    // Seeding counts a chunk as served once it has left the origin's link.
                    self.push(left, Ev::Served(chunk));
                }
                let at = left + self.sites[fs].wan_ns + self.sites[ts].wan_ns;
                self.push(at, Ev::WanAtSite(to, from, chunk));
            }
            Ev::WanAtSite(to, from, chunk) => {
                let len = self.chunks[chunk as usize].len;
                let ts = self.nodes[to as usize].site as usize;
                let left = self.sites[ts].down.send(self.now, len);
                self.sites[ts].wan_in += u64::from(len);
                let at = left + self.sites[ts].lan_ns;
                self.push(at, Ev::WanDone(to, from, chunk));
            }
            Ev::WanDone(to, from, chunk) => {
                self.nodes[to as usize].wan_dirty = true;
                self.arrive(to, from, chunk);
            }
            Ev::Served(chunk) => {
                if !self.seeding.revealed() {
                    self.origin_seeding += u64::from(self.chunks[chunk as usize].len);
                }
                if self.seeding.served(chunk, self.now / 1_000_000) {
                    self.reveal();
                }
            }
            Ev::SeedCheck => {
                if self.seeding.check_stall(self.now / 1_000_000) {
                    self.reveal();
                } else if !self.seeding.revealed() {
                    self.push(self.now + 1_000_000_000, Ev::SeedCheck);
                }
            }
        }
    }

    /// Initial seeding ended: every endpoint sees the origin's full bitmap.
    fn reveal(&mut self) {
        self.reveal_at = Some(self.now);
        for n in &mut self.nodes {
            n.wan_dirty = true;
        }
        for node in 1..self.nodes.len() as u32 {
            self.wake(node, self.now + PLAN_COALESCE_NS);
        }
    }

    fn plan(&mut self, me: u32) {
        self.plans += 1;
        let node = &self.nodes[me as usize];
        let site = &self.sites[node.site as usize];
        let revealed = self.seeding.revealed();
        let mut targets: Vec<u32> = Vec::with_capacity(site.members.len() + node.wan.len());
        let mut views: Vec<PeerView<'_>> = Vec::with_capacity(targets.capacity());
        for (k, &m) in site.members.iter().enumerate() {
            if m == me {
                continue;
            }
            targets.push(m);
            views.push(PeerView {
                id: self.nodes[m as usize].key,
                same_site: true,
                have: Some(&self.nodes[m as usize].shown),
                in_flight_bytes: node.lan_in_flight[k],
                budget_bytes: LAN_IN_FLIGHT_BYTES,
                usable: true,
                reserve: false,
            });
        }
        for (k, &w) in node.wan.iter().enumerate() {
            let have = if w == ORIGIN && !revealed {
                &self.shares[node.site as usize]
            } else {
                &self.nodes[w as usize].shown
            };
            targets.push(w);
            views.push(PeerView {
                id: self.nodes[w as usize].key,
                same_site: false,
                have: Some(have),
                in_flight_bytes: node.wan_in_flight[k],
                budget_bytes: WAN_IN_FLIGHT_BYTES,
                usable: true,
                reserve: w == ORIGIN && revealed,
            });
        }
        let wan_busy = views
            .iter()
            .any(|v| !v.same_site && !v.reserve && v.in_flight_bytes > 0);
        let wan_busy_at = if wan_busy { self.now } else { node.wan_busy_at };
        let input = PlanInput {
            me: node.key,
            chunks: &self.chunks,
            have: &node.have,
            in_flight: &node.in_flight,
            peers: &views,
            lan: &site.lan,
            designated: &node.designated,
            now_ms: self.now / 1_000_000,
            wan_idle_ms: (self.now - wan_busy_at) / 1_000_000,
            plan_wan: node.wan_dirty,
            wan_held: Some(&node.wan_held),
        };
        let assignments: Vec<Assignment> = planner::plan(&input, &self.config);
        let wan_assigned = assignments.iter().any(|a| a.wan && !views[a.peer].reserve);
        let mut room: Vec<i64> = views
            .iter()
            .map(|v| v.budget_bytes as i64 - v.in_flight_bytes as i64)
            .collect();
        drop(views);
        for a in &assignments {
            room[a.peer] -= i64::from(self.chunks[a.chunk as usize].len);
        }
        let lan_peers = self.sites[self.nodes[me as usize].site as usize]
            .members
            .len()
            - 1;
        let node = &mut self.nodes[me as usize];
        node.wan_busy_at = if wan_assigned { self.now } else { wan_busy_at };
        node.wan_dirty = false;
        for (k, r) in room.iter().enumerate() {
            let starved = if k < lan_peers {
                *r < (LAN_IN_FLIGHT_BYTES / 4) as i64
            } else {
                *r < (WAN_IN_FLIGHT_BYTES / 4) as i64
            };
            if starved {
                if k < lan_peers {
                    let slot = k + usize::from(k >= node.slot as usize);
                    node.lan_starved[slot] = true;
                } else {
                    node.wan_starved[k - lan_peers] = true;
                }
            }
        }
        for a in assignments {
            self.request(me, targets[a.peer], a.chunk);
        }
        // The daemon also plans every 100 ms when nothing else happens; two of its reasons
        // have no other wake-up here: the endgame, and asking the reserve once the WAN has
        // been idle long enough.
        let node = &self.nodes[me as usize];
        let missing = node.have.len() - node.have.count();
        if missing > 0 && missing <= self.config.endgame_chunks && !node.in_flight.is_empty() {
            let at = self.now + self.config.endgame_after_ms * 1_000_000 / 4;
            self.wake(me, at);
        }
        let node = &self.nodes[me as usize];
        if self.seeding.revealed() && node.done_at.is_none() && node.wan_busy_at < self.now {
            let at = node.wan_busy_at + self.config.reserve_after_ms * 1_000_000;
            self.wake(me, at.max(self.now + 100_000_000));
        }
    }

    fn request(&mut self, me: u32, peer: u32, chunk: u32) {
        let len = self.chunks[chunk as usize].len;
        let now = self.now;
        let (ms, ps) = (self.nodes[me as usize].site, self.nodes[peer as usize].site);
        let key = self.nodes[peer as usize].key;
        self.nodes[me as usize]
            .in_flight
            .request(chunk, key, now / 1_000_000);
        if ms == ps {
            let slot = self.nodes[peer as usize].slot as usize;
            self.nodes[me as usize].lan_in_flight[slot] += u64::from(len);
            let lat = self.sites[ms as usize].lan_ns;
            let started = self.nodes[peer as usize].nic_up.send(now + lat, len);
            let begin = started - self.nodes[peer as usize].nic_up.time(len);
            let down = &mut self.nodes[me as usize].nic_down;
            let landed = down.send(begin, len).max(started);
            down.free = landed;
            self.sent += u64::from(len);
            self.push(landed + lat, Ev::LanDone(me, peer, chunk));
        } else {
            let k = self.wan_index(me, peer);
            self.nodes[me as usize].wan_in_flight[k] += u64::from(len);
            let at = now + self.sites[ms as usize].wan_ns + self.sites[ps as usize].wan_ns;
            self.push(at, Ev::WanAtSender(me, peer, chunk));
        }
    }

    fn wan_index(&self, me: u32, peer: u32) -> usize {
        self.nodes[me as usize]
            .wan
            .binary_search(&peer)
            .expect("a WAN peer")
    }

    /// A chunk from `from` reached `to`.
    fn arrive(&mut self, to: u32, from: u32, chunk: u32) {
        let len = self.chunks[chunk as usize].len;
        self.received += u64::from(len);
        let same_site = self.nodes[to as usize].site == self.nodes[from as usize].site;
        let from_key = self.nodes[from as usize].key;
        let refill = if same_site {
            let slot = self.nodes[from as usize].slot as usize;
            let node = &mut self.nodes[to as usize];
            node.lan_in_flight[slot] -= u64::from(len);
            let room = LAN_IN_FLIGHT_BYTES.saturating_sub(node.lan_in_flight[slot]);
            let refill = room >= LAN_IN_FLIGHT_BYTES / 4 && node.lan_starved[slot];
            if refill {
                node.lan_starved[slot] = false;
            }
            refill
        } else {
            let k = self.wan_index(to, from);
            let node = &mut self.nodes[to as usize];
            node.wan_in_flight[k] -= u64::from(len);
            let room = WAN_IN_FLIGHT_BYTES.saturating_sub(node.wan_in_flight[k]);
            let refill = room >= WAN_IN_FLIGHT_BYTES / 4 && node.wan_starved[k];
            if refill {
                node.wan_starved[k] = false;
            }
            refill
        };
        let now = self.now;
        let node = &mut self.nodes[to as usize];
        node.in_flight.answered(chunk, &from_key);
        node.received.set(chunk);
        if node.have.set(chunk) {
            node.in_flight.remove(chunk);
            node.pending.push(chunk);
            node.pending_bytes += u64::from(len);
            if node.have.is_full() {
                node.done_at = Some(now);
                self.plan_at[to as usize] = DONE;
                self.remaining -= 1;
                node.checkpoint_at = now;
                self.push(now, Ev::Checkpoint(to));
            } else if node.pending_bytes >= CHECKPOINT_BYTES {
                node.checkpoint_at = now;
                self.push(now, Ev::Checkpoint(to));
            } else if node.checkpoint_at == NONE {
                let at = now + CHECKPOINT_INTERVAL.as_nanos() as u64;
                node.checkpoint_at = at;
                self.push(at, Ev::Checkpoint(to));
            }
        }
        if refill {
            self.wake(to, now);
        }
    }

    /// Chunks received since the last checkpoint become durable and are announced.
    fn checkpoint(&mut self, me: u32) {
        let node = &mut self.nodes[me as usize];
        node.checkpoint_at = NONE;
        node.pending_bytes = 0;
        let pending = std::mem::take(&mut node.pending);
        let site = node.site as usize;
        for &c in &pending {
            if node.shown.set(c) {
                self.sites[site].lan.add(c);
            }
        }
        let at = self.now + PLAN_COALESCE_NS;
        for k in 0..self.sites[site].members.len() {
            let m = self.sites[site].members[k];
            if m != me {
                self.wake(m, at);
            }
        }
        // A WAN peer plans again only for a chunk it is designated for and lacks: nothing
        // else in this announcement can give it a WAN request.
        let me_node = &self.nodes[me as usize];
        let mut relevant = Vec::new();
        for &w in &me_node.wan {
            let peer = &self.nodes[w as usize];
            if peer.role == Role::Endpoint && peer.done_at.is_none() {
                for &c in &pending {
                    if peer.designated.get(c) && !peer.have.get(c) {
                        relevant.push((w, c));
                    }
                }
            }
        }
        for (w, c) in relevant {
            let peer = &mut self.nodes[w as usize];
            peer.wan_held.set(c);
            peer.wan_dirty = true;
            self.wake(w, at);
        }
        let mut pending = pending;
        pending.clear();
        self.nodes[me as usize].pending = pending;
    }

    fn outcome(&self) -> Outcome {
        let mut unreceived = 0;
        for n in &self.nodes[1..] {
            if n.have.ones_and_not(&n.received).next().is_some() {
                unreceived += 1;
            }
        }
        Outcome {
            completed_s: self.nodes[1..]
                .iter()
                .map(|n| n.done_at.map(|t| t as f64 / NS))
                .collect(),
            endpoint_site: self.nodes[1..].iter().map(|n| n.site - 1).collect(),
            site_names: self.sites[1..]
                .iter()
                .map(|s| s.links.name.clone())
                .collect(),
            release_bytes: self.release_bytes,
            origin_egress: self.origin_egress,
            origin_egress_seeding: self.origin_seeding,
            seeding_ended_s: self.reveal_at.map(|t| t as f64 / NS),
            site_wan_in: self.sites[1..].iter().map(|s| s.wan_in).collect(),
            site_wan_out: self.sites[1..].iter().map(|s| s.wan_out).collect(),
            bytes_sent: self.sent,
            bytes_received: self.received,
            bytes_lost: self.lost,
            unreceived_chunks: unreceived,
            events: self.events,
            plans: self.plans,
            log_hash: (u128::from(self.hash.0) << 64) | u128::from(self.hash.1),
            end_s: self.now as f64 / NS,
        }
    }
}
