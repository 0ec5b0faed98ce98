//! The discrete-event engine: every endpoint runs the product's own fetch machine
//! ([`scheduler::fetch::Fetch`], which the daemon's `net::fetch` drives too) against a
//! model of the network, chunk by chunk, fed only what that endpoint was told, with the
//! real initial seeding ([`scheduler::seeding`]), shaping gates and window cache.
//!
//! # What is modelled, and how
//!
//! * **Time** is integer nanoseconds. Nothing reads a clock or an unseeded random source, so a
//!   seed gives one run, bit for bit, whatever the number of threads; a 128-bit fold of every
//!   event is the run's fingerprint.
//! * **Links** are FIFO servers at their capacity: per node a LAN link each way, per site a
//!   WAN uplink and downlink shared by all its members, the origin's uplink. A chunk crossing
//!   the WAN queues at the sender site's uplink when its request arrives there, then at the
//!   receiving site's downlink when it arrives there (store and forward, one event per hop,
//!   so a busy link never holds time on another). A LAN transfer is booked on both node links
//!   when its request arrives (LAN links are ten times the WAN's and rarely queue).
//!   Latency is one-way per hop: LAN, site to WAN, WAN to site (the origin has its own).
//! * **The fetch** is the machine: its budgets, when it plans (an answer that frees a starved
//!   peer, a failure, announcements coalesced over [`PLAN_COALESCE`], its endgame, reserve
//!   and liveness timers), who counts as a site member (liveness from chunks delivered and
//!   claims that grow, snubs), its strikes. The engine gives it what the endpoint was told:
//!   its site's members' announced chunks, its WAN peers' announcements, the origin's share
//!   during seeding; it books the requests the machine returns on the links and reports
//!   their answers. Chunks are announced at checkpoints
//!   ([`scheduler::fetch::Checkpoint`]). WAN peers are picked as the daemon picks them
//!   ([`scheduler::control::pick_across_site_groups`]) among every endpoint.
//! * **Same-site availability** is one [`Availability`] per site counting every member's
//!   announced chunks (the daemon counts its peers'; for the chunks a node lacks, which are
//!   the only ones it plans, the two are equal).
//! * **Announcements across the WAN** go out in batches at most every
//!   [`scheduler::control::WAN_HAVE_INTERVAL`] per peer, as the daemon sends them, and
//!   reach the peer after the one-way latency; a node plans
//!   WAN requests when one names a chunk it is designated for and lacks, or a WAN answer
//!   arrives (`PlanInput::plan_wan`, `PlanInput::wan_held`).
//! * **Shaping** is the daemon's: each endpoint of a site with a `[shaping]` has its four
//!   [`scheduler::shaper::Gate`]s (first come, first served), on simulated time. A request
//!   waits for its class's ingress gate and `total` before it leaves; the sender's egress
//!   gate and `total` grant the chunk before it goes onto the link; each chunk is charged
//!   the daemon's wire overhead.
//! * **Download windows**: an endpoint outside its site's `[windows]` (and the release's own
//!   download windows) plans nothing (what is in flight lands) until they open, unless the
//!   release is an emergency; it still serves. Both read the wall clock through the daemon's
//!   [`WindowCache`]: the scenario's `start` plus simulated time, in each site's zone.
//! * **Initial seeding** at the origin shows each site its share until every chunk has left
//!   its link once, or no new chunk was asked for in 5 s, exactly as the daemon.
//!
//! # Parallel, and still deterministic
//!
//! Each site is a partition: everything inside it (its LAN, its WAN links, its members'
//! state, its event queue) belongs to it alone, and sites meet only over the WAN, where every
//! message takes at least the smallest WAN latency `L`. So the run advances in windows of
//! `L`: each site runs its own events of the window alone, and at the window's end the
//! messages between sites are delivered in a fixed order (source site, source order) and WAN
//! views are brought up to date. Threads (as many as the machine has) take the
//! window's sites a few at a time until none are left; the events do not depend on which
//! thread ran a site, nor on how many there are.
//!
//! A site at a time is also what makes the run fast: a window's events of one site touch
//! only its 50 members' state, which stays in the CPU's caches, where one queue for many
//! sites would jump between them at every event.
//!
//! * **The control plane** ([`super::control`]): bitmaps, offers, wants, announcements
//!   (batched across the WAN as the daemon batches them), status records to the site's
//!   aggregators and site summaries, sized by the product's encoders, sent at its cadence
//!   and charged on the sender's links.
//!
//! Not modelled: CPU and disk (the daemon's own benchmarks cover them), packet loss and
//! congestion control (a link is shared FIFO by chunk), serving slots (`Busy`: a slot is
//! held only until a chunk is handed to QUIC).

use super::control::{self as ctl, Costs, WAN_HAVE_INTERVAL_NS};
use super::scenario::{SimScenario, SiteLinks};
use jiff::{SignedDuration, Timestamp};
use protocol::wire::Bitmap;
use protocol::{ChunkId, ChunkRef};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use scheduler::control::{Cadence, News};
use scheduler::fetch::{
    Answer, Event, Fetch, FetchConfig, FetchScratch, PLAN_COALESCE, Phase, Request, SharedLan,
    World,
};
use scheduler::planner::{self, Availability, Designations, PeerView};
use scheduler::rate::{Rate, RateSchedule};
use scheduler::seeding::{self, Seeding};
use scheduler::shaper::{BLOCKED_HORIZON, Gate};
use scheduler::strikes::{Strikes, Verdict};
use scheduler::window::{Window, WindowCache, WindowState};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::hash::{BuildHasherDefault, Hasher};
use std::time::Duration;

/// The daemon's [`PLAN_COALESCE`] in nanoseconds.
const PLAN_COALESCE_NS: u64 = PLAN_COALESCE.as_nanos() as u64;

/// Sites a thread takes at a time in a window: few enough that the threads finish together,
/// enough that taking them costs nothing next to running them (a window of a 50-node site is
/// hundreds of events).
const SITES_PER_TAKE: usize = 4;

/// Mixed into the scenario's seed for the draw of the faults (garbage peers, churn).
const FAULTS_STREAM: u64 = 0x6661_756c_7473_0001;

/// Index of the origin among nodes, and of its site among sites.
pub const ORIGIN: u32 = 0;

const NS: f64 = 1e9;
const NONE: u64 = u64::MAX;
/// `plan_at` of a node that never plans (the origin, complete endpoints): below every time.
const DONE: u64 = 0;

/// The epochs of a transfer's two ends (a node's epoch grows each time it leaves), so that a
/// transfer that outlived either end is recognised: requester in the high half.
fn epochs(requester: u32, sender: u32) -> u32 {
    (requester & 0xffff) << 16 | (sender & 0xffff)
}

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

/// A fetch with the fixed hasher.
type SimFetch = Fetch<BuildHasherDefault<IndexHasher>>;

/// Simulated nanoseconds as the fetch machine's time.
fn at(t: u64) -> Duration {
    Duration::from_nanos(t)
}

/// The machine's time in simulated nanoseconds.
fn ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(NONE)
}

/// `start` plus `t` ns.
fn wall(start: Timestamp, t: u64) -> Timestamp {
    start
        .checked_add(SignedDuration::from_nanos(t as i64))
        .unwrap_or(Timestamp::MAX)
}

/// Nanoseconds from `start` to `ts` (0 if before).
fn since(start: Timestamp, ts: Timestamp) -> u64 {
    let ns = ts.duration_since(start).as_nanos();
    u64::try_from(ns.max(0)).unwrap_or(NONE)
}

/// When `bytes` asked of `gate` at `t` pass (a class blocked for good: past any run's end).
fn take(gate: &mut Gate, t: u64, bytes: u64, start: Timestamp) -> u64 {
    gate.take(at(t), wall(start, t), bytes)
        .map_or(t + ns(BLOCKED_HORIZON), ns)
}

/// An endpoint's shapers (`net::shape::Shapers`): the daemon's gates on simulated
/// time.
struct Shapers {
    wan_ingress: Gate,
    wan_egress: Gate,
    lan_egress: Gate,
    total: Gate,
}

impl Shapers {
    /// The shapers of `policy`, or `None` when it limits nothing (the daemon's shapers then
    /// grant every request at once).
    fn of(policy: &scheduler::policy::RateSchedules, start: Timestamp) -> Option<Box<Self>> {
        let limits = |s: &RateSchedule| !s.rules.is_empty() || s.default != Rate::Unlimited;
        let all = [
            &policy.wan_ingress,
            &policy.wan_egress,
            &policy.lan_egress,
            &policy.total,
        ];
        if !policy.enabled || !all.into_iter().any(limits) {
            return None;
        }
        Some(Box::new(Self {
            wan_ingress: Gate::new(policy.wan_ingress.clone(), start),
            wan_egress: Gate::new(policy.wan_egress.clone(), start),
            lan_egress: Gate::new(policy.lan_egress.clone(), start),
            total: Gate::new(policy.total.clone(), start),
        }))
    }

    /// When a chunk of `len` bytes asked for at `t` passes the class's own gate (if it has
    /// one) and `total`, charged with the wire overhead as the daemon charges it.
    fn pass(&mut self, wan: bool, ingress: bool, t: u64, len: u32, start: Timestamp) -> u64 {
        let bytes = scheduler::shaper::on_wire(u64::from(len));
        let own = match (wan, ingress) {
            (true, true) => Some(&mut self.wan_ingress),
            (true, false) => Some(&mut self.wan_egress),
            (false, false) => Some(&mut self.lan_egress),
            // LAN ingress has no bucket of its own: the sender's egress covers it.
            (false, true) => None,
        };
        let t = match own {
            Some(g) => take(g, t, bytes, start),
            None => t,
        };
        take(&mut self.total, t, bytes, start)
    }
}

/// A site's download windows (its endpoints' and the release's, which must both be open),
/// read through the daemon's [`WindowCache`].
struct SiteWindows {
    node: Vec<Window>,
    release: Vec<Window>,
    cache: WindowCache,
}

impl SiteWindows {
    /// Whether downloads may go on at `now`, and when that next changes (ns).
    fn check(&mut self, now: u64, start: Timestamp) -> (bool, Option<u64>) {
        let edge = |e: Option<Timestamp>| e.map(|e| since(start, e).max(now + 1));
        match self
            .cache
            .state(&[&self.node, &self.release], wall(start, now))
        {
            WindowState::Open { closes } => (true, edge(closes)),
            WindowState::Closed { opens } => (false, edge(opens)),
        }
    }
}

/// What a node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The publisher: has every chunk from the start, fetches nothing.
    Origin,
    /// An endpoint that fetches the release.
    Endpoint,
    /// A peer that serves garbage: it claims every chunk, fetches nothing, and every chunk it
    /// sends fails verification.
    Garbage,
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

/// One node's state, owned by its site's partition.
struct Node {
    /// Global index.
    id: u32,
    site: u32,
    /// Position in its site's member list.
    slot: u32,
    role: Role,
    /// The fetch, the product's own machine ([`scheduler::fetch`]); an endpoint's while it
    /// is up (a crash loses it, and a return starts a new one from what was durable).
    fetch: Option<Box<SimFetch>>,
    /// Announced chunks (made durable by a checkpoint): what same-site peers see.
    shown: Bitmap,
    /// Received since the last checkpoint, and when the checkpoint is due.
    pending: Vec<u32>,
    checkpoint: scheduler::fetch::Checkpoint,
    checkpoint_at: u64,
    nic_up: Link,
    nic_down: Link,
    /// Of the chunks this node is designated for, those its WAN peers (other than the
    /// reserve) have announced (`PlanInput::wan_held`).
    wan_held: Bitmap,
    done_at: Option<u64>,
    /// Chunks received from a peer and verified (what completion is checked against).
    received: Bitmap,
    /// The chunks some WAN peer other than the origin is designated for, by
    /// `Shared::designated`: a checkpoint asks each WAN peer only about these (most chunks
    /// concern none of them, and each peer's bitmap is a read from far away in memory).
    wan_interest: Bitmap,
    /// Bad chunks per peer, and the peers banned ([`scheduler::strikes`]).
    strikes: Strikes<u32>,
    /// Whether it is up, and how many times it has left.
    alive: bool,
    epoch: u32,
    /// Its shapers, if its site's `[shaping]` limits anything.
    shapers: Option<Box<Shapers>>,
    /// When its status record goes out ([`Cadence::status`]).
    status: Cadence,
    /// When the last announcement to each WAN peer went (or goes) out, by `Shared::wan`
    /// order (`NONE`: never): they are batched per [`WAN_HAVE_INTERVAL_NS`].
    wan_have_at: Vec<u64>,
    /// Control-frame bytes it sent, LAN and WAN.
    ctl: u64,
}

impl Node {
    /// The chunks it holds: its fetch's verified chunks, or (origin, garbage peer, a node
    /// that is down) what it shows.
    fn have(&self) -> &Bitmap {
        self.fetch.as_ref().map_or(&self.shown, |f| f.have())
    }
}

struct Site {
    links: SiteLinks,
    /// Members, global indices.
    members: Vec<u32>,
    /// Members that serve garbage (not counted in `lan`), and their slots.
    garbage: Vec<u32>,
    garbage_slots: Vec<u32>,
    /// The designations of the member sets its members count ([`Designations`]): one
    /// computation per set, not per member.
    designations: Designations,
    lan: Availability,
    up: Link,
    down: Link,
    /// One-way LAN latency, ns.
    lan_ns: u64,
    wan_in: u64,
    wan_out: u64,
    /// Its download windows, if any hold its endpoints back.
    windows: Option<SiteWindows>,
    /// Its aggregators (global indices), the first publishing its summaries.
    aggregators: Vec<u32>,
    /// When its members' records brought the aggregator news, and what (for the summaries).
    news: Vec<(u64, News)>,
}

/// What every partition reads during a window and nobody writes until its end.
struct Shared {
    /// The release's units: its chunks, then its patches' pieces.
    chunks: std::sync::Arc<[ChunkRef]>,
    /// What each unit weighs on a WAN link (compressed where the daemon would send it so).
    wire: Vec<u32>,
    /// The release's patches, where it has some.
    patches: Option<Patches>,
    keys: Vec<[u8; 32]>,
    site_of: Vec<u32>,
    /// Partition of each site, and each node's index in its partition's node list.
    part_of_site: Vec<u32>,
    local: Vec<u32>,
    /// Index of each site in its partition's site list.
    site_local: Vec<u32>,
    /// One-way latency of each site to the WAN, ns.
    site_wan_ns: Vec<u64>,
    /// The smallest of those among branch sites.
    nearest_site_ns: u64,
    /// WAN peers of each node (sorted; the origin's are every endpoint).
    wan: Vec<Vec<u32>>,
    /// The chunks rendezvous hashing names each node for.
    designated: Vec<Bitmap>,
    /// Each node's announced chunks as WAN peers see them (brought up to date at the end of
    /// each window).
    wan_view: Vec<Bitmap>,
    /// The origin's seeding share for each site.
    shares: Vec<Bitmap>,
    /// Whether each node serves garbage.
    garbage: Vec<bool>,
    /// Whether each node is up, as WAN peers know it (brought up to date at each window's
    /// end).
    alive: Vec<bool>,
    /// Per site, the intervals (ns) during which its WAN links are cut.
    cuts: Vec<Vec<(u64, u64)>>,
    /// The wall clock at simulated time 0.
    start: Timestamp,
    /// Sizes of control messages.
    costs: Costs,
}

impl Shared {
    /// Whether the site of `node` is cut off from the WAN at `t`.
    fn cut(&self, node: u32, t: u64) -> bool {
        self.cuts[self.site_of[node as usize] as usize]
            .iter()
            .any(|&(a, b)| a <= t && t < b)
    }

    fn part_of(&self, node: u32) -> usize {
        self.part_of_site[self.site_of[node as usize] as usize] as usize
    }

    /// What `unit` weighs on the link from `from`'s site to `to`'s: compressed across the
    /// WAN where the daemon sends it so.
    fn hop_len(&self, unit: u32, from: u32, to: u32) -> u32 {
        if self.site_of[from as usize] == self.site_of[to as usize] {
            self.chunks[unit as usize].len
        } else {
            self.wire[unit as usize]
        }
    }

    /// One-way latency between two nodes of different sites.
    fn wan_ns(&self, a: u32, b: u32) -> u64 {
        self.site_wan_ns[self.site_of[a as usize] as usize]
            + self.site_wan_ns[self.site_of[b as usize] as usize]
    }
}

#[derive(Debug, Clone, Copy)]
enum Ev {
    Plan(u32),
    Checkpoint(u32),
    /// LAN transfer done: (to, from, chunk).
    LanDone(u32, u32, u32, u32),
    /// A WAN request reached the sender's site.
    WanAtSender(u32, u32, u32, u32),
    /// The sender's shapers granted a WAN chunk: it goes onto the site's uplink.
    WanGranted(u32, u32, u32, u32),
    /// A WAN chunk reached the receiver's site.
    WanAtSite(u32, u32, u32, u32),
    /// A WAN transfer done.
    WanDone(u32, u32, u32, u32),
    /// A WAN request found its sender gone (or its link cut): (to, from, chunk, epochs).
    WanFail(u32, u32, u32, u32),
    /// A node leaves (crashes), and comes back.
    Leave(u32),
    Join(u32),
    /// A node's site is back on the WAN.
    Reconnect(u32),
    /// A chunk left the origin's uplink.
    Served(u32),
    /// The origin checks whether initial seeding stalled.
    SeedCheck,
    /// A WAN peer announced a chunk this node is designated for: (node, chunk).
    Announced(u32, u32),
    /// The origin's full bitmap, as a reserve, reached this partition.
    Reveal,
    /// A node's designation changed: re-read its WAN peers' holdings of its chunks.
    Resync(u32),
}

impl Ev {
    fn fingerprint(&self) -> (u64, u64) {
        let w = |k: u64, a: u32, b: u32, c: u32| {
            (k | u64::from(a) << 8, u64::from(b) | u64::from(c) << 32)
        };
        match *self {
            Self::Plan(n) => w(1, n, 0, 0),
            Self::Checkpoint(n) => w(2, n, 0, 0),
            Self::LanDone(a, b, c, _) => w(3, a, b, c),
            Self::WanAtSender(a, b, c, _) => w(4, a, b, c),
            Self::WanAtSite(a, b, c, _) => w(5, a, b, c),
            Self::WanDone(a, b, c, _) => w(6, a, b, c),
            Self::WanFail(a, b, c, _) => w(12, a, b, c),
            Self::WanGranted(a, b, c, _) => w(16, a, b, c),
            Self::Leave(n) => w(13, n, 0, 0),
            Self::Join(n) => w(14, n, 0, 0),
            Self::Reconnect(n) => w(15, n, 0, 0),
            Self::SeedCheck => w(7, 0, 0, 0),
            Self::Served(c) => w(8, c, 0, 0),
            Self::Announced(a, c) => w(9, a, c, 0),
            Self::Reveal => w(10, 0, 0, 0),
            Self::Resync(n) => w(11, n, 0, 0),
        }
    }
}

/// One partition: a site, its nodes, its queue and its counters.
struct Part {
    id: usize,
    nodes: Vec<Node>,
    sites: Vec<Site>,
    queue: Calendar,
    seq: u64,
    now: u64,
    /// When each node's next plan is due (NONE: none; DONE: never again), by local index.
    plan_at: Vec<u64>,
    /// Times in the future for which a plan event is queued, per node (`NONE`: a free
    /// place): a machine whose timers stay put asks for the same instants after every
    /// input, and one event serves them all.
    queued_at: Vec<[u64; 4]>,
    config: FetchConfig,
    /// The origin's seeding (partition 0 only).
    seeding: Option<Seeding>,
    /// Whether the origin's reveal has reached this partition.
    revealed: bool,
    reveal_at: Option<u64>,
    /// Events for other partitions, delivered at the window's end: (partition, entry).
    outbox: Vec<(usize, Entry)>,
    /// End of the window being run: nothing may be sent to another partition before it.
    window_end: u64,
    /// Chunks announced this window: (node, chunk), for the WAN views.
    shown_log: Vec<(u32, u32)>,
    /// Designations changed this window, for `Shared::designated`.
    designation_log: Vec<(u32, Bitmap)>,
    /// Nodes that left or came back this window, for `Shared::alive`.
    alive_log: Vec<(u32, bool)>,
    remaining: usize,
    hash: (u64, u64),
    events: u64,
    plans: u64,
    /// Same-site peers snubbed by a fetch (a stall or failures in a row).
    snubs: u64,
    sent: u64,
    received: u64,
    lost: u64,
    rebuilt: u64,
    origin_egress: u64,
    origin_seeding: u64,
    /// Buffers each plan reuses (see [`PlanBufs`]).
    bufs: PlanBufs,
    /// Control bytes this partition's nodes put across the WAN, by global site: (into the
    /// site, out of it), acknowledgements included.
    ctl_wan: Vec<(u64, u64)>,
}

/// What a plan allocates, kept from one plan to the next: the machine's buffers, its
/// requests, and the peer views and their targets (the views borrow node state, so only
/// their allocation is kept, see [`recycle`]).
#[derive(Default)]
struct PlanBufs {
    fetch: FetchScratch,
    out: Vec<Request>,
    targets: Vec<u32>,
    views: Vec<PeerView<'static>>,
}

/// An empty vector with `v`'s allocation, for items that differ only in a lifetime: the
/// standard library collects a `map` over a vector's own `into_iter` in place.
fn recycle<T, U>(mut v: Vec<T>) -> Vec<U> {
    v.clear();
    v.into_iter().map(|_| unreachable!("cleared")).collect()
}

/// Runs `scenario`; `progress` is called about once per simulated second with (simulated
/// seconds, endpoints complete, endpoints).
pub fn run(
    scenario: &SimScenario,
    progress: impl FnMut(f64, usize, usize),
) -> anyhow::Result<Outcome> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    run_on(scenario, threads, progress)
}

/// [`run`] on `threads` threads (at most one per site is used). The outcome does not depend
/// on the number.
pub fn run_on(
    scenario: &SimScenario,
    threads: usize,
    mut progress: impl FnMut(f64, usize, usize),
) -> anyhow::Result<Outcome> {
    scenario.check()?;
    let (mut shared, mut parts) = build(scenario)?;
    let lookahead = lookahead(&shared);
    let limit = (scenario.limit_s * NS) as u64;
    let endpoints = shared.keys.len() - 1 - shared.garbage.iter().filter(|g| **g).count();
    let threads = threads.clamp(1, parts.len());
    let mut start = 0u64;
    let mut next_report = 0u64;
    loop {
        let end = start.saturating_add(lookahead);
        if threads == 1 {
            for p in &mut parts {
                p.run_until(&shared, end);
            }
        } else {
            let sh = &shared;
            // Each thread takes the next few sites until none are left: sites differ in how
            // much happens in a window (the origin's most of all), and a fixed share would
            // leave threads waiting at the window's end.
            let next = std::sync::Mutex::new(parts.chunks_mut(SITES_PER_TAKE));
            std::thread::scope(|s| {
                for _ in 0..threads {
                    s.spawn(|| {
                        loop {
                            let taken = next.lock().expect("not poisoned").next();
                            let Some(group) = taken else { break };
                            for p in group {
                                p.run_until(sh, end);
                            }
                        }
                    });
                }
            });
        }
        // The window's end: deliver messages in a fixed order (source site, then the order
        // it sent them in; the queues order them by time), update the WAN views.
        for k in 0..parts.len() {
            let mut outbox = std::mem::take(&mut parts[k].outbox);
            for (to, e) in outbox.drain(..) {
                parts[to].push(e.at, e.ev);
            }
            parts[k].outbox = outbox;
        }
        let mut redesignated = Vec::new();
        for p in &mut parts {
            for &(node, chunk) in &p.shown_log {
                shared.wan_view[node as usize].set(chunk);
            }
            p.shown_log.clear();
            for (node, d) in p.designation_log.drain(..) {
                shared.designated[node as usize] = d;
                redesignated.push(node);
            }
            for (node, up) in p.alive_log.drain(..) {
                shared.alive[node as usize] = up;
            }
        }
        // WAN links go both ways: the nodes that care about a node's designation are its
        // own WAN peers.
        let mut stale: Vec<u32> = redesignated
            .iter()
            .flat_map(|&w| shared.wan[w as usize].iter().copied())
            .filter(|&m| m != ORIGIN)
            .collect();
        stale.sort_unstable();
        stale.dedup();
        for m in stale {
            let interest = wan_interest(&shared, m);
            parts[shared.part_of(m)].nodes[shared.local[m as usize] as usize].wan_interest =
                interest;
        }
        let done = endpoints - parts.iter().map(|p| p.remaining).sum::<usize>();
        if end >= next_report {
            progress(end as f64 / NS, done, endpoints);
            next_report = end + 1_000_000_000;
        }
        // Skip windows with nothing to do.
        let next = parts.iter_mut().filter_map(|p| p.queue.peek_at()).min();
        match next {
            Some(t) if t <= limit => start = end.max(t),
            _ => break,
        }
    }
    Ok(outcome(scenario, &shared, &parts))
}

/// The longest window that keeps partitions independent: the smallest one-way latency
/// between two sites (every cross-partition message crosses the WAN), and at most the plan
/// coalescing delay (announcements wake peers that much later).
fn lookahead(shared: &Shared) -> u64 {
    let mut lat = shared.site_wan_ns.clone();
    lat.sort_unstable();
    let pair = match lat.as_slice() {
        [a, b, ..] => a + b,
        _ => PLAN_COALESCE_NS,
    };
    pair.clamp(1, PLAN_COALESCE_NS)
}

/// A release's patches, as the simulator gives them to each endpoint's fetch.
struct Patches {
    /// The first unit that is a piece (the release's chunk count).
    pieces_from: u32,
    /// Whether each node holds the version the patches start from.
    holds_base: Vec<bool>,
    /// What [`scheduler::patches::choose`] picks for a node that holds the base and nothing
    /// of the release yet.
    fresh: Vec<scheduler::patches::Chosen>,
    /// The release as a manifest: its files and their patches (for nodes that choose again
    /// holding part of the release, after a restart).
    manifest: protocol::Manifest,
}

/// Mixed into the scenario's seed for the draw of the nodes that hold the version before.
const BASES_STREAM: u64 = 0x6261_7365_7300_0001;

/// The release's units and its patches: with `[release.patches]`, the chunks are cut into
/// files of `file_mib`, the first `share` of which carry a patch of `ratio` times their
/// bytes in pieces of [`protocol::manifest::PATCH_PIECE_BYTES_MAX`], and the units are the
/// chunks then the pieces, as [`protocol::Manifest::units`] orders them. Which nodes hold
/// the base is drawn later ([`draw_bases`]).
fn release_units(sc: &SimScenario, chunks: Vec<ChunkRef>) -> (Vec<ChunkRef>, Option<Patches>) {
    use protocol::manifest::PATCH_PIECE_BYTES_MAX;
    use protocol::{Entry, EntryKind, FilePatch, Manifest, ReleaseId};
    let Some(spec) = &sc.release.patches else {
        return (chunks, None);
    };
    let chunk = u64::from(sc.chunk_bytes());
    let per_file = ((spec.file_mib * 1024.0 * 1024.0) as u64 / chunk).max(1) as usize;
    let files: Vec<&[ChunkRef]> = chunks.chunks(per_file).collect();
    let patched = (spec.share * files.len() as f64).round() as usize;
    let mut entries = Vec::new();
    let mut patches = Vec::new();
    for (f, file) in files.iter().enumerate() {
        let path = format!("f{f:05}");
        let size: u64 = file.iter().map(|c| u64::from(c.len)).sum();
        entries.push(Entry {
            path: path.clone(),
            kind: EntryKind::File {
                mode: 0o644,
                size,
                chunks: file.to_vec(),
            },
        });
        if f >= patched {
            continue;
        }
        let mut left = ((size as f64 * spec.ratio).ceil() as u64).max(1);
        let mut pieces = Vec::new();
        while left > 0 {
            let len = left.min(u64::from(PATCH_PIECE_BYTES_MAX)) as u32;
            let mut seed = [0u8; 24];
            seed[..8].copy_from_slice(&sc.seed.to_le_bytes());
            seed[8..16].copy_from_slice(&(f as u64).to_le_bytes());
            seed[16..20].copy_from_slice(&(pieces.len() as u32).to_le_bytes());
            seed[20..].copy_from_slice(b"pce!");
            pieces.push(ChunkRef {
                id: ChunkId::of(&seed),
                len,
            });
            left -= u64::from(len);
        }
        patches.push(FilePatch {
            path: path.clone(),
            base: ReleaseId([1; 32]),
            base_path: path,
            base_size: size,
            pieces,
        });
    }
    let manifest = Manifest {
        format_version: protocol::MANIFEST_FORMAT_VERSION,
        channel: "sim".into(),
        version: 2,
        created_unix_s: 0,
        expires_unix_s: i64::MAX,
        severity: protocol::Severity::Low,
        cvss: None,
        emergency: sc.release.emergency,
        download_windows: Vec::new(),
        install_windows: Vec::new(),
        chunking: Default::default(),
        total_bytes: sc.release_bytes(),
        rollout: Default::default(),
        entries,
        patches,
    };
    let units = manifest.units();
    let pieces_from = chunks.len() as u32;
    let fresh = scheduler::patches::choose(&manifest, &Bitmap::new(units.len() as u32), |_| true);
    (
        units,
        Some(Patches {
            pieces_from,
            holds_base: Vec::new(),
            fresh,
            manifest,
        }),
    )
}

/// Draws which of `total` nodes hold the version the patches start from (`base_share` of
/// the endpoints), from a stream of its own so that the other draws stay as they were.
fn draw_bases(sc: &SimScenario, total: usize) -> Vec<bool> {
    let share = sc.release.patches.as_ref().map_or(0.0, |p| p.base_share);
    let mut rng = ChaCha20Rng::seed_from_u64(sc.seed ^ BASES_STREAM);
    (0..total)
        .map(|id| id != ORIGIN as usize && rng.random_bool(share))
        .collect()
}

/// What each unit weighs on a WAN link: the daemon's rule ([`net::compress::sends_compressed`])
/// sends chunks compressed to other sites, where they shrink to `wan_wire_ratio` of their
/// length if that saves what [`chunking::compress::pays`] asks; pieces are zstd output and
/// do not shrink.
fn wire_lengths(sc: &SimScenario, units: &[ChunkRef], chunk_count: u32) -> Vec<u32> {
    let compressed = net::compress::sends_compressed(
        net::config::Compression::default(),
        protocol::PROTOCOL_VERSION,
        net::shape::Class::Wan,
    );
    units
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let z = (f64::from(c.len) * sc.release.wan_wire_ratio).ceil() as u32;
            if compressed
                && (i as u32) < chunk_count
                && chunking::compress::pays(c.len as usize, z as usize)
            {
                z
            } else {
                c.len
            }
        })
        .collect()
}

fn build(sc: &SimScenario) -> anyhow::Result<(Shared, Vec<Part>)> {
    let mut rng = ChaCha20Rng::seed_from_u64(sc.seed);
    let start = sc.start()?;
    // Each branch site's policy, after the origin's site (which has none).
    let policies = sc.site_policies()?;
    let release_windows = sc.release_windows()?;
    let release_bytes = sc.release_bytes();
    let chunk = u64::from(sc.chunk_bytes());
    let chunk_count = sc.chunk_count() as u32;
    let chunks: Vec<ChunkRef> = (0..chunk_count)
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
    // The release's units: its chunks, then its patches' pieces (`Manifest::units`).
    let (chunks, mut patches) = release_units(sc, chunks);
    let n = chunks.len() as u32;
    let wire = wire_lengths(sc, &chunks, chunk_count);

    let origin_links = SiteLinks {
        name: "origin".into(),
        nodes: 1,
        down: sc.origin_up(),
        up: sc.origin_up(),
        wan_latency: sc.origin.latency_ms / 1e3,
        lan: f64::INFINITY,
        lan_latency: 0.0,
    };
    let links: Vec<SiteLinks> = std::iter::once(origin_links)
        .chain(sc.site_links())
        .collect();
    let part_of_site: Vec<u32> = (0..links.len() as u32).collect();
    let mut parts: Vec<Part> = (0..links.len()).map(Part::new).collect();
    let mut site_local = Vec::new();
    let mut site_of = Vec::new();
    let mut local = Vec::new();
    let mut keys = Vec::new();
    for (s, l) in links.iter().enumerate() {
        let part = &mut parts[part_of_site[s] as usize];
        site_local.push(part.sites.len() as u32);
        let policy = s.checked_sub(1).map(|b| &policies[b]);
        let mut members = Vec::new();
        for k in 0..l.nodes {
            let id = keys.len() as u32;
            let mut key = [0u8; 32];
            rng.fill(&mut key);
            keys.push(key);
            site_of.push(s as u32);
            local.push(part.nodes.len() as u32);
            members.push(id);
            let role = if s == 0 { Role::Origin } else { Role::Endpoint };
            let full = role == Role::Origin;
            part.nodes.push(Node {
                id,
                site: s as u32,
                slot: k as u32,
                role,
                fetch: None,
                shown: if full {
                    Bitmap::full(n)
                } else {
                    Bitmap::new(n)
                },
                pending: Vec::new(),
                checkpoint: Default::default(),
                checkpoint_at: NONE,
                nic_up: Link::new(l.lan),
                nic_down: Link::new(l.lan),
                wan_held: Bitmap::new(n),
                done_at: None,
                received: Bitmap::new(n),
                wan_interest: Bitmap::new(n),
                strikes: Strikes::default(),
                alive: true,
                epoch: 0,
                shapers: policy.and_then(|p| Shapers::of(&p.shaping, start)),
                status: Cadence::status(),
                wan_have_at: Vec::new(),
                ctl: 0,
            });
            part.plan_at.push(if full { DONE } else { NONE });
            part.queued_at.push([NONE; 4]);
            if !full {
                part.remaining += 1;
            }
        }
        part.sites.push(Site {
            garbage: Vec::new(),
            garbage_slots: Vec::new(),
            designations: Designations::default(),
            up: Link::new(l.up),
            down: Link::new(l.down),
            lan_ns: (l.lan_latency * NS).round() as u64,
            aggregators: {
                let keys: Vec<[u8; 32]> = members.iter().map(|&m| keys[m as usize]).collect();
                let site_key = scheduler::control::site_key(&l.name);
                scheduler::control::aggregators(site_key, &keys)
                    .iter()
                    .filter_map(|a| keys.iter().position(|k| k == a))
                    .map(|k| members[k])
                    .collect()
            },
            news: Vec::new(),
            members,
            lan: Availability::new(n),
            wan_in: 0,
            wan_out: 0,
            links: l.clone(),
            windows: match policy {
                Some(p) if !sc.release.emergency => {
                    let release = release_windows
                        .iter()
                        .map(|w| Window::from_release(w, &p.windows.zone))
                        .collect::<Result<Vec<_>, _>>()?;
                    (!p.windows.download.is_empty() || !release.is_empty()).then(|| SiteWindows {
                        node: p.windows.download.clone(),
                        release,
                        cache: WindowCache::default(),
                    })
                }
                _ => None,
            },
        });
    }

    // WAN peers: each endpoint dials `wan_peers` endpoints of other sites, picked as the
    // daemon picks them ([`scheduler::control::pick_across_site_groups`]) among every
    // endpoint, and the origin.
    let total = keys.len();
    if let Some(p) = &mut patches {
        p.holds_base = draw_bases(sc, total);
    }
    let endpoints = total as u32 - 1;
    let want = sc.swarm.wan_peers.min(endpoints.saturating_sub(1) as usize);
    let site_members: Vec<Vec<u32>> = (0..links.len())
        .map(|s| {
            (1..total as u32)
                .filter(|&m| site_of[m as usize] == s as u32)
                .collect()
        })
        .collect();
    let site_keys: Vec<Vec<[u8; 32]>> = site_members
        .iter()
        .map(|m| m.iter().map(|&k| keys[k as usize]).collect())
        .collect();
    let groups: Vec<(u64, &[[u8; 32]])> = links
        .iter()
        .zip(&site_keys)
        .skip(1)
        .map(|(l, k)| (scheduler::control::site_key(&l.name), k.as_slice()))
        .collect();
    let mut wan: Vec<Vec<u32>> = vec![Vec::new(); total];
    for a in 1..total as u32 {
        let mine = scheduler::control::site_key(&links[site_of[a as usize] as usize].name);
        let picks =
            scheduler::control::pick_across_site_groups(&keys[a as usize], mine, &groups, want);
        for (g, m) in picks {
            let b = site_members[g + 1][m];
            wan[a as usize].push(b);
            wan[b as usize].push(a);
        }
        wan[a as usize].push(ORIGIN);
        wan[ORIGIN as usize].push(a);
    }
    for peers in &mut wan {
        peers.sort_unstable();
        peers.dedup();
    }

    // Garbage-serving peers, and churn: drawn from a stream of their own, so that how the
    // network is built does not change which nodes fail.
    let mut rng = ChaCha20Rng::seed_from_u64(sc.seed ^ FAULTS_STREAM);
    let mut garbage = vec![false; total];
    let bad = ((sc.faults.garbage * f64::from(endpoints)).round() as u32).min(endpoints);
    let mut marked = 0;
    while marked < bad {
        let g = rng.random_range(1..=endpoints) as usize;
        if !garbage[g] {
            garbage[g] = true;
            marked += 1;
        }
    }
    for (id, &g) in garbage.iter().enumerate() {
        if !g {
            continue;
        }
        let s = site_of[id] as usize;
        let part = &mut parts[part_of_site[s] as usize];
        let l = local[id] as usize;
        let node = &mut part.nodes[l];
        node.role = Role::Garbage;
        node.shown = Bitmap::full(n);
        let slot = node.slot;
        part.plan_at[l] = DONE;
        part.remaining -= 1;
        let site = &mut part.sites[site_local[s] as usize];
        site.garbage.push(id as u32);
        site.garbage_slots.push(slot);
    }

    // Churn: a share of the honest endpoints leaves once, at a time within the window, and
    // comes back after a while.
    let honest: Vec<u32> = (1..=endpoints).filter(|&i| !garbage[i as usize]).collect();
    let leaving = ((sc.faults.churn * honest.len() as f64).round() as usize).min(honest.len());
    let mut churners: Vec<u32> = Vec::new();
    while churners.len() < leaving {
        let c = honest[rng.random_range(0..honest.len())];
        if !churners.contains(&c) {
            churners.push(c);
        }
    }
    let [w0, w1] = sc.faults.churn_window_s;
    let [d0, d1] = sc.faults.churn_down_s;
    let mut churn_events = Vec::new();
    for &c in &churners {
        let leave = rng.random_range(w0..=w1);
        let back = leave + rng.random_range(d0..=d1);
        churn_events.push((c, (leave * NS) as u64, (back * NS) as u64));
    }

    // Origin seeding: each branch site's share.
    let site_keys: Vec<u64> = links[1..]
        .iter()
        .map(|l| seeding::site_key(&l.name))
        .collect();
    let owners = seeding::shares(&site_keys, &chunks);
    let mut shares = vec![Bitmap::new(n)];
    shares.extend((0..site_keys.len()).map(|s| seeding::share_bitmap(owners.as_deref(), s, n)));

    // Designation: per site, over all its members (garbage peers too: they claim every
    // chunk, so a fetch counts them until it bans them). Each fetch counts the same set at
    // its first plan, and finds it in its site's `designations`.
    let chunks: std::sync::Arc<[ChunkRef]> = chunks.into();
    let mut designated = vec![Bitmap::new(n); total];
    for part in &mut parts {
        for site in &mut part.sites {
            let mut members: Vec<[u8; 32]> =
                site.members.iter().map(|&m| keys[m as usize]).collect();
            members.sort_unstable();
            for &m in &site.members {
                designated[m as usize] =
                    site.designations
                        .designated_chunks(&keys[m as usize], &members, &chunks);
            }
        }
    }
    let wan_view: Vec<Bitmap> = (0..total)
        .map(|i| {
            if i == ORIGIN as usize || garbage[i] {
                Bitmap::full(n)
            } else {
                Bitmap::new(n)
            }
        })
        .collect();
    let shared = Shared {
        nearest_site_ns: links[1..]
            .iter()
            .map(|l| (l.wan_latency * NS).round() as u64)
            .min()
            .unwrap_or(0),
        site_wan_ns: links
            .iter()
            .map(|l| (l.wan_latency * NS).round() as u64)
            .collect(),
        chunks,
        wire,
        patches,
        keys,
        site_of,
        part_of_site,
        local,
        site_local,
        wan,
        designated,
        wan_view,
        shares,
        alive: vec![true; total],
        cuts: links
            .iter()
            .map(|l| {
                sc.faults
                    .cut
                    .iter()
                    .filter(|c| c.site == l.name)
                    .map(|c| ((c.at_s * NS) as u64, ((c.at_s + c.for_s) * NS) as u64))
                    .collect()
            })
            .collect(),
        garbage,
        start,
        costs: Costs::new(n),
    };
    let config = FetchConfig::default();
    for part in &mut parts {
        for k in 0..part.nodes.len() {
            let id = part.nodes[k].id as usize;
            let peers = shared.wan[id].len();
            let node = &mut part.nodes[k];
            node.wan_have_at = vec![NONE; peers];
            if node.role == Role::Endpoint {
                let mut fetch = Fetch::new(
                    config,
                    shared.keys[id],
                    shared.chunks.clone(),
                    Bitmap::new(n),
                    Duration::ZERO,
                );
                if let Some(p) = &shared.patches {
                    // Nothing held yet: the choice of every node that holds the base is
                    // the one made for an empty bitmap.
                    let chosen = if p.holds_base[id] {
                        p.fresh.clone()
                    } else {
                        Vec::new()
                    };
                    fetch.use_patches(p.pieces_from, chosen);
                }
                node.fetch = Some(Box::new(fetch));
            }
            if id != ORIGIN as usize {
                node.wan_interest = wan_interest(&shared, id as u32);
            }
            if node.role == Role::Endpoint {
                // Before seeding ends, only the origin holds anything (this site's share),
                // and the garbage peers claim everything.
                let share = &shared.shares[node.site as usize];
                let liar = shared.wan[id].iter().any(|&w| shared.garbage[w as usize]);
                for i in shared.designated[id].ones() {
                    if liar || share.get(i) {
                        node.wan_held.set(i);
                    }
                }
            }
        }
        for k in 0..part.nodes.len() {
            let id = part.nodes[k].id;
            part.wake(&shared, id, 0);
        }
        part.ctl_wan = vec![(0, 0); links.len()];
        for k in 0..part.nodes.len() {
            let id = part.nodes[k].id;
            part.control_start(&shared, id);
        }
    }
    for (c, leave, back) in churn_events {
        let part = &mut parts[shared.part_of(c)];
        part.push(leave, Ev::Leave(c));
        part.push(back, Ev::Join(c));
    }
    // When a cut ends, the site's members plan again at once.
    for (s, cuts) in shared.cuts.iter().enumerate() {
        for &(_, end) in cuts {
            let part = &mut parts[shared.part_of_site[s] as usize];
            let site = &part.sites[shared.site_local[s] as usize];
            for m in site.members.clone() {
                part.push(end, Ev::Reconnect(m));
            }
        }
    }
    parts[0].seeding = Some(Seeding::new(n, 0));
    parts[0].push(1_000_000_000, Ev::SeedCheck);
    Ok((shared, parts))
}

impl Part {
    fn new(id: usize) -> Self {
        Self {
            id,
            nodes: Vec::new(),
            sites: Vec::new(),
            queue: Calendar::new(),
            seq: 0,
            now: 0,
            plan_at: Vec::new(),
            queued_at: Vec::new(),
            config: FetchConfig::default(),
            seeding: None,
            revealed: false,
            reveal_at: None,
            outbox: Vec::new(),
            window_end: 0,
            shown_log: Vec::new(),
            designation_log: Vec::new(),
            alive_log: Vec::new(),
            remaining: 0,
            hash: (0x7032_7064_7369_6d31 ^ id as u64, 0),
            events: 0,
            plans: 0,
            snubs: 0,
            bufs: PlanBufs::default(),
            sent: 0,
            received: 0,
            lost: 0,
            rebuilt: 0,
            origin_egress: 0,
            origin_seeding: 0,
            ctl_wan: Vec::new(),
        }
    }

    fn run_until(&mut self, sh: &Shared, end: u64) {
        self.window_end = end;
        while let Some(entry) = self.queue.pop_before(end) {
            self.now = entry.at;
            self.events += 1;
            let (a, b) = entry.ev.fingerprint();
            self.hash.0 = planner::mix(self.hash.0 ^ entry.at ^ a);
            self.hash.1 = planner::mix(self.hash.1 ^ b ^ self.hash.0);
            self.handle(sh, entry.ev);
        }
    }

    fn push(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        self.queue.push(Entry {
            at,
            seq: self.seq,
            ev,
        });
    }

    /// Sends `ev` to the partition of `node` (this one, or another at the window's end).
    fn send(&mut self, sh: &Shared, node: u32, at: u64, ev: Ev) {
        let to = sh.part_of(node);
        if to == self.id {
            self.push(at, ev);
        } else {
            debug_assert!(
                at >= self.window_end,
                "a message into another partition's past"
            );
            self.seq += 1;
            self.outbox.push((
                to,
                Entry {
                    at,
                    seq: self.seq,
                    ev,
                },
            ));
        }
    }

    fn node(&self, sh: &Shared, id: u32) -> &Node {
        &self.nodes[sh.local[id as usize] as usize]
    }

    fn node_mut(&mut self, sh: &Shared, id: u32) -> &mut Node {
        &mut self.nodes[sh.local[id as usize] as usize]
    }

    fn site_mut(&mut self, sh: &Shared, site: u32) -> &mut Site {
        &mut self.sites[sh.site_local[site as usize] as usize]
    }

    /// Schedules a plan of `node` (of this partition) at `at` unless one is due sooner.
    fn wake(&mut self, sh: &Shared, node: u32, at: u64) {
        let l = sh.local[node as usize] as usize;
        let due = &mut self.plan_at[l];
        if *due <= at {
            return;
        }
        *due = at;
        // An event for this instant still in the queue (in the future) serves.
        let now = self.now;
        let queued = &mut self.queued_at[l];
        if at > now && queued.contains(&at) {
            return;
        }
        // Its place: one whose event has run (or none), else the latest.
        let k = (0..queued.len())
            .find(|&k| queued[k] == NONE || queued[k] <= now)
            .unwrap_or_else(|| (0..queued.len()).max_by_key(|&k| queued[k]).unwrap_or(0));
        queued[k] = at;
        self.push(at, Ev::Plan(node));
    }

    fn handle(&mut self, sh: &Shared, ev: Ev) {
        match ev {
            Ev::Plan(node) => {
                let l = sh.local[node as usize] as usize;
                if self.plan_at[l] == self.now {
                    self.plan_at[l] = NONE;
                    self.plan(sh, node);
                }
            }
            Ev::Checkpoint(node) => {
                if self.node(sh, node).checkpoint_at == self.now {
                    self.checkpoint(sh, node);
                }
            }
            Ev::LanDone(to, from, chunk, ep) => {
                let sender = self.node(sh, from);
                if !sender.alive || sender.epoch & 0xffff != ep & 0xffff {
                    // The sender went away before the chunk was through.
                    self.lost += u64::from(sh.chunks[chunk as usize].len);
                    self.failed(sh, to, from, chunk, ep);
                } else {
                    self.arrive(sh, to, from, chunk, ep);
                }
            }
            Ev::WanAtSender(to, from, chunk, ep) | Ev::WanGranted(to, from, chunk, ep) => {
                if !self.node(sh, from).alive || sh.cut(from, self.now) || sh.cut(to, self.now) {
                    let at = self.now + sh.wan_ns(from, to);
                    self.send(sh, to, at, Ev::WanFail(to, from, chunk, ep));
                    return;
                }
                let len = sh.hop_len(chunk, from, to);
                let now = self.now;
                if let (Ev::WanAtSender(..), Some(g)) = (ev, &mut self.node_mut(sh, from).shapers) {
                    // The sender's egress buckets grant the chunk before it goes on the link.
                    let granted = g.pass(true, false, now, len, sh.start);
                    if granted > now {
                        self.push(granted, Ev::WanGranted(to, from, chunk, ep));
                        return;
                    }
                }
                let fs = sh.site_of[from as usize];
                let site = self.site_mut(sh, fs);
                let left = site.up.send(now, len);
                site.wan_out += u64::from(len);
                self.sent += u64::from(len);
                if from == ORIGIN {
                    self.origin_egress += u64::from(len);
                    // Seeding counts a chunk as served once it has left the origin's link.
                    self.push(left, Ev::Served(chunk));
                }
                let at = left + sh.wan_ns(from, to);
                self.send(sh, to, at, Ev::WanAtSite(to, from, chunk, ep));
            }
            Ev::WanAtSite(to, from, chunk, ep) if sh.cut(to, self.now) => {
                // The link into the site is down: the chunk is lost on the way.
                self.lost += u64::from(sh.hop_len(chunk, from, to));
                self.failed(sh, to, from, chunk, ep);
            }
            Ev::WanAtSite(to, from, chunk, ep) => {
                let len = sh.hop_len(chunk, from, to);
                let now = self.now;
                let site = self.site_mut(sh, sh.site_of[to as usize]);
                let left = site.down.send(now, len);
                site.wan_in += u64::from(len);
                let at = left + site.lan_ns;
                self.push(at, Ev::WanDone(to, from, chunk, ep));
            }
            Ev::WanDone(to, from, chunk, ep) => self.arrive(sh, to, from, chunk, ep),
            Ev::WanFail(to, from, chunk, ep) => self.failed(sh, to, from, chunk, ep),
            Ev::Reconnect(node) => {
                let n = self.node(sh, node);
                if n.alive && n.role == Role::Endpoint && n.done_at.is_none() {
                    self.tell(sh, node, true);
                }
            }
            Ev::Leave(node) => self.leave(sh, node),
            Ev::Join(node) => self.join(sh, node),
            Ev::Served(chunk) => {
                let now_ms = self.now / 1_000_000;
                let seeding = self.seeding.as_mut().expect("the origin's partition");
                if !seeding.revealed() {
                    self.origin_seeding += u64::from(sh.chunks[chunk as usize].len);
                }
                if seeding.served(chunk, now_ms) {
                    self.reveal(sh);
                }
            }
            Ev::SeedCheck => {
                let now_ms = self.now / 1_000_000;
                let seeding = self.seeding.as_mut().expect("the origin's partition");
                if seeding.check_stall(now_ms) {
                    self.reveal(sh);
                } else if !seeding.revealed() {
                    self.push(self.now + 1_000_000_000, Ev::SeedCheck);
                }
            }
            Ev::Announced(node, chunk) => {
                let n = self.node_mut(sh, node);
                if n.done_at.is_none() && !n.have().get(chunk) {
                    // Noted even while it is down: it learns the peer's bitmap on return.
                    n.wan_held.set(chunk);
                    self.tell(sh, node, true);
                }
            }
            Ev::Resync(node) => self.resync(sh, node),
            Ev::Reveal => {
                self.revealed = true;
                for k in 0..self.nodes.len() {
                    let id = self.nodes[k].id;
                    if self.nodes[k].role == Role::Endpoint {
                        self.tell(sh, id, true);
                    }
                }
            }
        }
    }

    /// Initial seeding ended at the origin: its full bitmap, marked as a reserve, goes to
    /// every peer (every partition) with the origin's latency.
    fn reveal(&mut self, sh: &Shared) {
        self.reveal_at = Some(self.now);
        // Every site is at least the nearest site's latency away from the origin.
        let at = self.now + sh.site_wan_ns[ORIGIN as usize] + sh.nearest_site_ns;
        for part in 0..sh.part_of_site.len() {
            if part == self.id {
                self.push(self.now, Ev::Reveal);
            } else {
                debug_assert!(
                    at >= self.window_end,
                    "a message into another partition's past"
                );
                self.seq += 1;
                self.outbox.push((
                    part,
                    Entry {
                        at,
                        seq: self.seq,
                        ev: Ev::Reveal,
                    },
                ));
            }
        }
    }

    /// `me`'s fetch was told something changed (`wan`: on the WAN side): it plans when its
    /// machine says.
    fn tell(&mut self, sh: &Shared, me: u32, wan: bool) {
        let now = self.now;
        if let Some(f) = self.node_mut(sh, me).fetch.as_mut() {
            f.handle_peers(at(now), wan);
        }
        self.rearm(sh, me);
    }

    /// Schedules `me`'s next plan when its machine asks for one.
    fn rearm(&mut self, sh: &Shared, me: u32) {
        let node = self.node(sh, me);
        if !node.alive || node.done_at.is_some() {
            return;
        }
        if let Some(t) = node.fetch.as_ref().and_then(|f| f.poll_timeout()) {
            let t = ns(t).max(self.now);
            self.wake(sh, me, t);
        }
    }

    /// `me`'s slot for `peer` in its fetch: a same-site peer's place among the members, a
    /// WAN peer's place among `me`'s WAN peers after them.
    fn slot_of(&self, sh: &Shared, me: u32, peer: u32) -> u32 {
        if sh.site_of[me as usize] == sh.site_of[peer as usize] {
            self.node(sh, peer).slot
        } else {
            let site = &self.sites[sh.site_local[sh.site_of[me as usize] as usize] as usize];
            (site.members.len() + wan_index(sh, me, peer)) as u32
        }
    }

    /// The peer in `me`'s `slot` ([`Self::slot_of`]).
    fn peer_of_slot(&self, sh: &Shared, me: u32, slot: u32) -> u32 {
        let site = &self.sites[sh.site_local[sh.site_of[me as usize] as usize] as usize];
        match site.members.get(slot as usize) {
            Some(&m) => m,
            None => sh.wan[me as usize][slot as usize - site.members.len()],
        }
    }

    /// Acts on what `me`'s fetch asks.
    fn fetch_events(&mut self, sh: &Shared, me: u32) {
        loop {
            let l = sh.local[me as usize] as usize;
            let Some(e) = self.nodes[l].fetch.as_mut().and_then(|f| f.poll_event()) else {
                return;
            };
            match e {
                Event::Designated => {
                    let mine = self.nodes[l]
                        .fetch
                        .as_ref()
                        .map(|f| f.designated().clone())
                        .expect("a fetch");
                    self.designation_log.push((me, mine));
                    // Announcements of this window went out against the old designation;
                    // once the window ends the WAN views hold them all.
                    let end = self.window_end;
                    self.push(end, Ev::Resync(me));
                }
                Event::Strike { slot } => {
                    let peer = self.peer_of_slot(sh, me, slot);
                    self.strike(sh, me, peer);
                }
                Event::Snubbed { .. } => self.snubs += 1,
                Event::Rebuild { k } => self.rebuild(sh, me, k),
                Event::Verified | Event::Superseded | Event::Paused { .. } | Event::Resumed => {}
            }
        }
    }

    /// `me`'s plan: the machine's requests, given what its peers showed it.
    fn plan(&mut self, sh: &Shared, me: u32) {
        let now = self.now;
        let l = sh.local[me as usize] as usize;
        let site_l = sh.site_local[sh.site_of[me as usize] as usize] as usize;
        let Some(mut fetch) = self.nodes[l].fetch.take() else {
            return;
        };
        let (open, edge) = match &mut self.sites[site_l].windows {
            Some(w) => w.check(now, sh.start),
            None => (true, None),
        };
        fetch.handle_window(at(now), open, edge.map(at));
        let before = fetch.passes();
        let mut bufs = std::mem::take(&mut self.bufs);
        self.poll(sh, me, &mut fetch, &mut bufs);
        self.plans += fetch.passes() - before;
        self.nodes[l].fetch = Some(fetch);
        for r in &bufs.out {
            self.request(sh, me, bufs.targets[r.peer], r.chunk);
        }
        self.bufs = bufs;
        self.fetch_events(sh, me);
        self.rearm(sh, me);
    }

    /// Builds `me`'s view of its peers (what they showed it, as it may ask them) and polls its
    /// fetch into `bufs.out`.
    fn poll(&mut self, sh: &Shared, me: u32, fetch: &mut SimFetch, bufs: &mut PlanBufs) {
        let now = self.now;
        let Self { nodes, sites, .. } = self;
        let node = &nodes[sh.local[me as usize] as usize];
        let site = &mut sites[sh.site_local[node.site as usize] as usize];
        let revealed = self.revealed;
        let wan = &sh.wan[me as usize];
        let banned = |p: u32| !node.strikes.is_empty() && node.strikes.is_banned(&p, at(now));
        bufs.targets.clear();
        let mut views: Vec<PeerView<'_>> = recycle(std::mem::take(&mut bufs.views));
        for (k, &m) in site.members.iter().enumerate() {
            let peer = &nodes[sh.local[m as usize] as usize];
            if m == me || banned(m) || !peer.alive {
                continue;
            }
            bufs.targets.push(m);
            views.push(PeerView {
                id: sh.keys[m as usize],
                slot: k as u32,
                same_site: true,
                have: Some(&peer.shown),
                in_flight_bytes: 0,
                budget_bytes: 0,
                usable: true,
                reserve: false,
            });
        }
        let cut = sh.cut(me, now);
        for (k, &w) in wan.iter().enumerate() {
            if cut || banned(w) || !sh.alive[w as usize] || sh.cut(w, now) {
                continue;
            }
            let have = if w == ORIGIN && !revealed {
                &sh.shares[node.site as usize]
            } else {
                &sh.wan_view[w as usize]
            };
            bufs.targets.push(w);
            views.push(PeerView {
                id: sh.keys[w as usize],
                slot: (site.members.len() + k) as u32,
                same_site: false,
                have: Some(have),
                in_flight_bytes: 0,
                budget_bytes: 0,
                usable: true,
                reserve: w == ORIGIN && revealed,
            });
        }
        let Site {
            lan,
            garbage_slots,
            designations,
            ..
        } = site;
        let mut world = World {
            peers: &mut views,
            lan: Some(SharedLan {
                counts: lan,
                uncounted: garbage_slots,
            }),
            wan_held: Some(&node.wan_held),
            outranked: false,
            elsewhere: None,
            write_backlog_bytes: 0,
            designations: Some(designations),
            scratch: &mut bufs.fetch,
        };
        fetch.poll_requests(at(now), &mut world, &mut bufs.out);
        bufs.views = recycle(views);
    }

    fn request(&mut self, sh: &Shared, me: u32, peer: u32, chunk: u32) {
        // The daemon reserves a chunk's length and is refunded what compression saved;
        // charging the wire length at once comes to the same rate.
        let len = sh.hop_len(chunk, peer, me);
        let now = self.now;
        let (ms, ps) = (sh.site_of[me as usize], sh.site_of[peer as usize]);
        // The request leaves once the requester's ingress buckets grant the chunk.
        let lan = ms == ps;
        let depart = match &mut self.node_mut(sh, me).shapers {
            Some(g) => g.pass(!lan, true, now, len, sh.start),
            None => now,
        };
        if lan {
            let lat = self.site_mut(sh, ms).lan_ns;
            let started = {
                let p = self.node_mut(sh, peer);
                let granted = match &mut p.shapers {
                    Some(g) => g.pass(false, false, depart + lat, len, sh.start),
                    None => depart + lat,
                };
                p.nic_up.send(granted, len)
            };
            let begin = started - self.node(sh, peer).nic_up.time(len);
            let down = &mut self.node_mut(sh, me).nic_down;
            let landed = down.send(begin, len).max(started);
            down.free = landed;
            self.sent += u64::from(len);
            let ep = epochs(self.node(sh, me).epoch, self.node(sh, peer).epoch);
            self.push(landed + lat, Ev::LanDone(me, peer, chunk, ep));
        } else {
            let at = depart + sh.wan_ns(me, peer);
            let ep = epochs(self.node(sh, me).epoch, 0);
            self.send(sh, peer, at, Ev::WanAtSender(me, peer, chunk, ep));
        }
    }

    /// A chunk from `from` reached `to`.
    fn arrive(&mut self, sh: &Shared, to: u32, from: u32, chunk: u32, ep: u32) {
        let len = sh.chunks[chunk as usize].len;
        let wire = sh.hop_len(chunk, from, to);
        let node = self.node(sh, to);
        if !node.alive || node.epoch & 0xffff != ep >> 16 {
            // Its requester went away meanwhile: the bytes crossed the links for nothing.
            self.lost += u64::from(wire);
            return;
        }
        self.received += u64::from(wire);
        // A chunk from a garbage peer does not match its id.
        let answer = if sh.garbage[from as usize] {
            Answer::Bad
        } else {
            Answer::Delivered
        };
        let slot = self.slot_of(sh, to, from);
        let now = self.now;
        let l = sh.local[to as usize] as usize;
        let node = &mut self.nodes[l];
        let fetch = node.fetch.as_mut().expect("an endpoint that is up");
        if fetch.handle_answer(at(now), slot, chunk, answer) {
            let verified = fetch.phase() == Phase::Verified;
            self.newly_held(to, l, &[chunk], u64::from(len), verified);
        }
        self.fetch_events(sh, to);
        self.rearm(sh, to);
    }

    /// `me` (local index `l`) newly holds `units`, `bytes` of them: they are shown at its
    /// next checkpoint, and it is done once its fetch is `verified`.
    fn newly_held(&mut self, me: u32, l: usize, units: &[u32], bytes: u64, verified: bool) {
        let now = self.now;
        let node = &mut self.nodes[l];
        for &c in units {
            node.received.set(c);
            node.pending.push(c);
        }
        let due = ns(node.checkpoint.stage(at(now), bytes, verified));
        if verified && node.done_at.is_none() {
            node.done_at = Some(now);
            self.plan_at[l] = DONE;
            self.remaining -= 1;
        }
        if due < node.checkpoint_at {
            node.checkpoint_at = due;
            self.push(due, Ev::Checkpoint(me));
        }
    }

    /// `me` holds every piece of its `k`th patch: it rebuilds the file (at once: CPU is not
    /// modelled, and a rebuilt file always verifies here) and holds the chunks the patch
    /// stands for, which it announces at its next checkpoint like chunks received.
    fn rebuild(&mut self, sh: &Shared, me: u32, k: usize) {
        let now = self.now;
        let l = sh.local[me as usize] as usize;
        let node = &mut self.nodes[l];
        let fetch = node.fetch.as_mut().expect("an endpoint that is up");
        let covers = fetch.patch_covers(k).to_vec();
        fetch.handle_rebuilt(at(now), k, true);
        let verified = fetch.phase() == Phase::Verified;
        let bytes = covers
            .iter()
            .map(|&c| u64::from(sh.chunks[c as usize].len))
            .sum();
        self.rebuilt += bytes;
        self.newly_held(me, l, &covers, bytes, verified);
    }

    /// A request of `to` for `chunk` from `from` failed: it is asked again (elsewhere).
    fn failed(&mut self, sh: &Shared, to: u32, from: u32, chunk: u32, ep: u32) {
        let node = self.node(sh, to);
        if !node.alive || node.epoch & 0xffff != ep >> 16 {
            return;
        }
        let slot = self.slot_of(sh, to, from);
        let now = self.now;
        if let Some(f) = self.node_mut(sh, to).fetch.as_mut() {
            f.handle_answer(at(now), slot, chunk, Answer::Failed);
        }
        self.fetch_events(sh, to);
        self.rearm(sh, to);
    }

    /// `me` crashes: what it had not made durable is lost (its fetch with it), its peers lose
    /// it, and its site counts one member fewer.
    fn leave(&mut self, sh: &Shared, me: u32) {
        let l = sh.local[me as usize] as usize;
        let node = &mut self.nodes[l];
        node.alive = false;
        node.epoch += 1;
        for c in std::mem::take(&mut node.pending) {
            node.received.clear(c);
        }
        node.checkpoint.taken();
        node.checkpoint_at = NONE;
        node.fetch = None;
        self.plan_at[l] = DONE;
        let site = sh.site_local[self.nodes[l].site as usize] as usize;
        for c in self.nodes[l].shown.ones() {
            self.sites[site].lan.remove(c);
        }
        self.alive_log.push((me, false));
        self.site_changed(sh, site);
    }

    /// `me` is back with what it had made durable: a new fetch starts from that.
    fn join(&mut self, sh: &Shared, me: u32) {
        let l = sh.local[me as usize] as usize;
        let now = self.now;
        let config = self.config;
        let node = &mut self.nodes[l];
        node.alive = true;
        let mut fetch = Fetch::new(
            config,
            sh.keys[me as usize],
            sh.chunks.clone(),
            node.shown.clone(),
            at(now),
        );
        while fetch.poll_event().is_some() {}
        if let Some(p) = &sh.patches {
            // As the daemon's fetch at a restart: the patches chosen from what is held.
            let chosen = if p.holds_base[me as usize] {
                scheduler::patches::choose(&p.manifest, &node.shown, |_| true)
            } else {
                Vec::new()
            };
            fetch.use_patches(p.pieces_from, chosen);
            if fetch.phase() == Phase::Verified && node.done_at.is_none() {
                node.done_at = Some(now);
                self.remaining -= 1;
            }
        }
        node.fetch = Some(Box::new(fetch));
        let done = node.done_at.is_some();
        let site = sh.site_local[node.site as usize] as usize;
        for c in self.nodes[l].shown.ones() {
            self.sites[site].lan.add(c);
        }
        self.plan_at[l] = if done { DONE } else { NONE };
        self.alive_log.push((me, true));
        self.site_changed(sh, site);
        self.fetch_events(sh, me);
        self.rearm(sh, me);
        self.control_start(sh, me);
    }

    /// A member of site `site` (local index) left or came back: every member's fetch counts
    /// its members again at its next plan.
    fn site_changed(&mut self, sh: &Shared, site: usize) {
        let members = self.sites[site].members.clone();
        for m in members {
            let n = self.node(sh, m);
            if n.alive && n.role == Role::Endpoint {
                self.tell(sh, m, true);
            }
        }
    }

    /// Records a bad chunk from `from` ([`scheduler::strikes`]); a banned peer is no longer
    /// shown to `to`'s fetch (a same-site one leaves its member set at its next plan).
    fn strike(&mut self, sh: &Shared, to: u32, from: u32) {
        let now = self.now;
        let verdict = self.node_mut(sh, to).strikes.strike(from, at(now));
        if let Verdict::Banned { .. } = verdict {
            self.tell(sh, to, sh.site_of[from as usize] != sh.site_of[to as usize]);
        }
    }

    /// Re-reads what the WAN peers (not the reserve, not banned) hold of `me`'s designated
    /// chunks.
    fn resync(&mut self, sh: &Shared, me: u32) {
        let now = self.now;
        let node = self.node(sh, me);
        let Some(fetch) = node.fetch.as_ref() else {
            return;
        };
        let mut held = node.wan_held.clone();
        for &w in &sh.wan[me as usize] {
            if w == ORIGIN || node.strikes.is_banned(&w, at(now)) {
                continue;
            }
            for i in fetch.designated().ones_and_not(fetch.have()) {
                if sh.wan_view[w as usize].get(i) {
                    held.set(i);
                }
            }
        }
        self.node_mut(sh, me).wan_held = held;
        self.tell(sh, me, true);
    }

    /// Chunks received since the last checkpoint become durable and are announced.
    fn checkpoint(&mut self, sh: &Shared, me: u32) {
        let l = sh.local[me as usize] as usize;
        let node = &mut self.nodes[l];
        node.checkpoint_at = NONE;
        node.checkpoint.taken();
        let mut pending = std::mem::take(&mut node.pending);
        // In chunk order, so the scans of peers' bitmaps below run front to back.
        pending.sort_unstable();
        let site = sh.site_local[node.site as usize] as usize;
        for &c in &pending {
            if self.nodes[l].shown.set(c) {
                self.sites[site].lan.add(c);
                self.shown_log.push((me, c));
            }
        }
        let mut fetching = 0;
        for k in 0..self.sites[site].members.len() {
            let m = self.sites[site].members[k];
            let peer = self.node(sh, m);
            if m != me && peer.alive && peer.done_at.is_none() && peer.role == Role::Endpoint {
                fetching += 1;
                self.tell(sh, m, false);
            }
        }
        // Announced on the LAN to the members still fetching, a record if one is due.
        if !pending.is_empty() && fetching > 0 {
            let have = sh.costs.have(pending.iter().copied());
            self.ctl_lan(sh, me, have, fetching);
        }
        let complete = self.nodes[l].done_at.is_some();
        self.record(
            sh,
            me,
            if complete {
                News::State
            } else {
                News::Progress
            },
        );
        if complete {
            // Complete: its WAN peers need announce nothing more to it.
            for &w in &sh.wan[me as usize] {
                self.ctl_wan(sh, me, w, sh.costs.want_done);
            }
        }
        // A WAN peer plans again only for a chunk it is designated for: nothing else in
        // this announcement can give it a WAN request. The daemon batches what each peer
        // is told ([`WAN_HAVE_INTERVAL_NS`]); the peer hears of it after the latency.
        let interest = &self.nodes[l].wan_interest;
        pending.retain(|&c| interest.get(c));
        let now = self.now;
        for (k, &w) in sh.wan[me as usize].iter().enumerate() {
            if w == ORIGIN {
                continue;
            }
            let mine = &sh.designated[w as usize];
            let mut count = 0u64;
            let mut index_bytes = 0u64;
            for &c in &pending {
                if mine.get(c) {
                    count += 1;
                    index_bytes += ctl::varint_len(u64::from(c));
                }
            }
            if count == 0 {
                continue;
            }
            let last = self.nodes[l].wan_have_at[k];
            let send = if last != NONE && last > now {
                // A batch waits to go: these join it.
                last
            } else {
                let last = (last != NONE).then_some(last);
                now.max(scheduler::control::next_batch_at(
                    last,
                    WAN_HAVE_INTERVAL_NS,
                ))
            };
            if send == last {
                self.ctl_wan_more(sh, me, w, index_bytes);
            } else {
                self.nodes[l].wan_have_at[k] = send;
                let bytes =
                    sh.costs.have(std::iter::empty()) - 1 + index_bytes + ctl::varint_len(count);
                self.ctl_wan(sh, me, w, bytes);
            }
            let heard = send + sh.wan_ns(me, w);
            for &c in &pending {
                if mine.get(c) {
                    self.send(sh, w, heard, Ev::Announced(w, c));
                }
            }
        }
        pending.clear();
        self.nodes[l].pending = pending;
    }

    /// What a node sends when it starts on the release (or comes back): a bitmap to each
    /// other member, an offer and a want of its designated chunks to each WAN peer, a
    /// record to its site's aggregators.
    fn control_start(&mut self, sh: &Shared, me: u32) {
        let node = self.node(sh, me);
        if node.role == Role::Garbage {
            return;
        }
        let origin = node.role == Role::Origin;
        let want = if origin {
            0
        } else {
            sh.costs.want(sh.designated[me as usize].ones())
        };
        let site = sh.site_local[node.site as usize] as usize;
        let others = self.sites[site].members.len() as u64 - 1;
        self.ctl_lan(sh, me, sh.costs.bitmap, others);
        for &w in &sh.wan[me as usize] {
            self.ctl_wan(sh, me, w, sh.costs.offer);
            if !origin {
                self.ctl_wan(sh, me, w, want);
            }
        }
        self.record(sh, me, News::State);
    }

    /// `me` has `news` for its status record: it goes to the site's aggregators when
    /// [`Cadence::status`] says (a change of state always goes, progress maybe not).
    fn record(&mut self, sh: &Shared, me: u32, news: News) {
        let l = sh.local[me as usize] as usize;
        let now_ms = self.now / 1_000_000;
        let node = &mut self.nodes[l];
        if node.role != Role::Endpoint {
            return;
        }
        let at = if node.status.poll(now_ms, news) {
            now_ms
        } else if news == News::State {
            // It goes when the least interval has passed.
            let due = node.status.due_at(News::State);
            node.status.poll(due, News::State);
            due
        } else {
            return;
        };
        let site = sh.site_local[node.site as usize] as usize;
        let copies = self.sites[site]
            .aggregators
            .iter()
            .filter(|&&a| a != me)
            .count() as u64;
        self.ctl_lan(sh, me, sh.costs.record, copies);
        self.sites[site].news.push((at, news));
    }

    /// `copies` control messages of `frame` bytes from `from` to members of its site.
    fn ctl_lan(&mut self, sh: &Shared, from: u32, frame: u64, copies: u64) {
        let now = self.now;
        let node = self.node_mut(sh, from);
        let bytes = frame * copies;
        node.ctl += bytes;
        node.nic_up
            .send(now, u32::try_from(bytes).unwrap_or(u32::MAX));
    }

    /// A control message of `frame` bytes from `from` to `to`, of another site, in a
    /// packet of its own, acknowledged.
    fn ctl_wan(&mut self, sh: &Shared, from: u32, to: u32, frame: u64) {
        let ack = protocol::wire::ACK_PACKET_BYTES;
        self.ctl_wan_bytes(sh, from, to, frame, ctl::on_wan(frame), ack);
    }

    /// `frame` more bytes in a message from `from` to `to` that waits to go.
    fn ctl_wan_more(&mut self, sh: &Shared, from: u32, to: u32, frame: u64) {
        self.ctl_wan_bytes(sh, from, to, frame, frame, 0);
    }

    fn ctl_wan_bytes(&mut self, sh: &Shared, from: u32, to: u32, frame: u64, wire: u64, ack: u64) {
        let now = self.now;
        let (a, b) = (
            sh.site_of[from as usize] as usize,
            sh.site_of[to as usize] as usize,
        );
        self.node_mut(sh, from).ctl += frame;
        self.site_mut(sh, a as u32)
            .up
            .send(now, u32::try_from(wire).unwrap_or(u32::MAX));
        self.ctl_wan[a].1 += wire;
        self.ctl_wan[a].0 += ack;
        self.ctl_wan[b].0 += wire;
        self.ctl_wan[b].1 += ack;
    }
}

/// The chunks some WAN peer of `me` other than the origin is designated for
/// (`Node::wan_interest`).
fn wan_interest(sh: &Shared, me: u32) -> Bitmap {
    let mut bytes = vec![0u8; sh.chunks.len().div_ceil(8)];
    for &w in &sh.wan[me as usize] {
        if w != ORIGIN {
            for (x, y) in bytes.iter_mut().zip(sh.designated[w as usize].as_bytes()) {
                *x |= *y;
            }
        }
    }
    Bitmap::from_bytes(sh.chunks.len() as u32, bytes).expect("the release's length")
}

/// The control plane's figures: what the engine counted, and the summaries its members'
/// news gave each site (replayed at the daemon's cadence up to `end`).
fn control_outcome(sh: &Shared, parts: &[Part], end: u64) -> ControlOutcome {
    let sites = sh.site_wan_ns.len();
    let mut wan = vec![(0u64, 0u64); sites];
    for p in parts {
        for (s, &(i, o)) in p.ctl_wan.iter().enumerate() {
            wan[s].0 += i;
            wan[s].1 += o;
        }
    }
    // Summaries: each site's publications reach every other site once.
    let mut flood = vec![0u64; sites];
    let mut summaries = 0;
    let mut biggest_summary = 0;
    for p in parts {
        for site in &p.sites {
            let mut news = site.news.clone();
            // What is published after the last event is published all the same.
            let until = end / 1_000_000 + super::control::SUMMARY_FLUSH_MS;
            let published = super::control::summaries_published(&mut news, sites, until);
            let bytes = sh
                .costs
                .summary(&site.links.name, site.members.len() as u32);
            biggest_summary = biggest_summary.max(bytes);
            let g = sh.site_of[site.members[0] as usize] as usize;
            flood[g] = published * super::control::flood_bytes(&sh.costs, bytes, sites);
            summaries += published;
        }
    }
    let flood_total: u64 = flood.iter().sum();
    for (s, w) in wan.iter_mut().enumerate() {
        w.0 += flood_total - flood[s];
        w.1 += flood_total - flood[s];
    }
    let mut steady = None::<super::control::SteadyState>;
    let mut entries = 0;
    for p in parts {
        for site in &p.sites {
            let members = site.members.len() as u64;
            let wan_conns: u64 = site
                .members
                .iter()
                .map(|&m| sh.wan[m as usize].len() as u64)
                .sum();
            let node_conns = site
                .members
                .iter()
                .map(|&m| sh.wan[m as usize].len() as u64 + members - 1)
                .max()
                .unwrap_or(0);
            let s = super::control::steady_state(
                &sh.costs,
                wan_conns,
                node_conns,
                biggest_summary,
                sites,
            );
            entries = entries.max(site.members.len() + sites - 1);
            if site.members[0] == ORIGIN {
                // The origin is one node, connected to every endpoint: not a branch.
                continue;
            }
            steady = Some(match steady {
                None => s,
                Some(t) => super::control::SteadyState {
                    site_wan_in_bit_s: t.site_wan_in_bit_s.max(s.site_wan_in_bit_s),
                    site_wan_out_bit_s: t.site_wan_out_bit_s.max(s.site_wan_out_bit_s),
                    site_wan_keepalive_bit_s: t
                        .site_wan_keepalive_bit_s
                        .max(s.site_wan_keepalive_bit_s),
                    node_bit_s: t.node_bit_s.max(s.node_bit_s),
                    node_keepalive_bit_s: t.node_keepalive_bit_s.max(s.node_keepalive_bit_s),
                },
            });
        }
    }
    let mut per_endpoint = Vec::new();
    let mut total = 0;
    for p in parts {
        for n in &p.nodes {
            total += n.ctl;
            if n.role == Role::Endpoint {
                per_endpoint.push(n.ctl);
            }
        }
    }
    ControlOutcome {
        bytes_total: total,
        per_endpoint,
        site_wan_in: wan[1..].iter().map(|w| w.0).collect(),
        site_wan_out: wan[1..].iter().map(|w| w.1).collect(),
        summaries,
        status_entries_max: entries,
        steady: steady.unwrap_or(super::control::SteadyState {
            site_wan_in_bit_s: 0.0,
            site_wan_out_bit_s: 0.0,
            site_wan_keepalive_bit_s: 0.0,
            node_bit_s: 0.0,
            node_keepalive_bit_s: 0.0,
        }),
    }
}

fn wan_index(sh: &Shared, me: u32, peer: u32) -> usize {
    sh.wan[me as usize]
        .binary_search(&peer)
        .expect("a WAN peer")
}

fn outcome(sc: &SimScenario, sh: &Shared, parts: &[Part]) -> Outcome {
    let total = sh.keys.len();
    let node = |id: usize| &parts[sh.part_of(id as u32)].nodes[sh.local[id] as usize];
    let site = |s: usize| &parts[sh.part_of_site[s] as usize].sites[sh.site_local[s] as usize];
    let sites = sh.site_wan_ns.len();
    let honest: Vec<usize> = (1..total).filter(|&id| !sh.garbage[id]).collect();
    let mut unreceived = 0;
    for &id in &honest {
        let n = node(id);
        let skipped = n.fetch.as_ref().map(|f| f.skipped());
        if n.have()
            .ones_and_not(&n.received)
            .any(|i| !skipped.is_some_and(|s| s.len() > i && s.get(i)))
        {
            unreceived += 1;
        }
    }
    let mut hash = (0u64, 0u64);
    for p in parts {
        hash.0 = planner::mix(hash.0 ^ p.hash.0);
        hash.1 = planner::mix(hash.1 ^ p.hash.1 ^ hash.0);
    }
    let sum = |f: fn(&Part) -> u64| parts.iter().map(f).sum::<u64>();
    let control = control_outcome(sh, parts, parts.iter().map(|p| p.now).max().unwrap_or(0));
    Outcome {
        control,
        completed_s: honest
            .iter()
            .map(|&id| node(id).done_at.map(|t| t as f64 / NS))
            .collect(),
        endpoint_site: honest.iter().map(|&id| sh.site_of[id] - 1).collect(),
        garbage_nodes: total - 1 - honest.len(),
        site_names: (1..sites).map(|s| site(s).links.name.clone()).collect(),
        release_bytes: sc.release_bytes(),
        origin_egress: sum(|p| p.origin_egress),
        origin_egress_seeding: sum(|p| p.origin_seeding),
        seeding_ended_s: parts[0].reveal_at.map(|t| t as f64 / NS),
        site_wan_in: (1..sites).map(|s| site(s).wan_in).collect(),
        site_wan_out: (1..sites).map(|s| site(s).wan_out).collect(),
        bytes_sent: sum(|p| p.sent),
        bytes_received: sum(|p| p.received),
        bytes_lost: sum(|p| p.lost),
        bytes_rebuilt: sum(|p| p.rebuilt),
        unreceived_chunks: unreceived,
        events: sum(|p| p.events),
        plans: sum(|p| p.plans),
        snubs: sum(|p| p.snubs),
        log_hash: (u128::from(hash.0) << 64) | u128::from(hash.1),
        end_s: parts.iter().map(|p| p.now).max().unwrap_or(0) as f64 / NS,
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

/// Emptied bucket vectors a calendar keeps for reuse: about as many buckets as fill while
/// one drains, so that filling a bucket does not allocate, and no more, so that a burst's
/// buckets are not held for the rest of the run.
const POOL: usize = 64;

/// Buckets in the calendar's ring: 2^13 × 131 µs ≈ 1.07 s ahead (a transfer, a checkpoint, a
/// plan); later events wait in a heap. One ring per site: 196 KiB each.
const RING: u64 = 1 << 13;

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
    /// Emptied buckets' vectors (at most [`POOL`]), handed to the next bucket that fills: a
    /// bucket is filled and drained every 131 µs, and keeping every bucket's allocation would
    /// hold the ring's peak forever.
    pool: Vec<Vec<Entry>>,
}

impl Calendar {
    fn new() -> Self {
        Self {
            ring: (0..RING).map(|_| Vec::new()).collect(),
            cur: 0,
            draining: BinaryHeap::new(),
            far: BinaryHeap::new(),
            in_ring: 0,
            pool: Vec::new(),
        }
    }

    fn push(&mut self, e: Entry) {
        let b = e.at >> BUCKET_SHIFT;
        if b <= self.cur {
            self.draining.push(Reverse(e));
        } else if b - self.cur < RING {
            let slot = &mut self.ring[(b % RING) as usize];
            if slot.capacity() == 0 {
                if let Some(v) = self.pool.pop() {
                    *slot = v;
                }
            }
            slot.push(e);
            self.in_ring += 1;
        } else {
            self.far.push(Reverse(e));
        }
    }

    /// The time of the next event, if any (loads the buckets up to it).
    fn peek_at(&mut self) -> Option<u64> {
        loop {
            if let Some(Reverse(e)) = self.draining.peek() {
                return Some(e.at);
            }
            self.advance()?;
        }
    }

    /// The next event if it is before `end`.
    fn pop_before(&mut self, end: u64) -> Option<Entry> {
        if self.peek_at()? < end {
            self.draining.pop().map(|Reverse(e)| e)
        } else {
            None
        }
    }

    /// Moves to the next bucket that holds events; `None` when there are none left.
    fn advance(&mut self) -> Option<()> {
        loop {
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
                if self.pool.len() < POOL {
                    self.pool.push(std::mem::take(slot));
                } else {
                    *slot = Vec::new();
                }
                self.draining = BinaryHeap::from(spare);
                return Some(());
            }
            // After a jump, the far event that was jumped to lands in `draining` itself.
            if !self.draining.is_empty() {
                return Some(());
            }
        }
    }
}

/// What the control plane cost in a run (see [`super::control`]).
#[derive(Debug, Clone)]
pub struct ControlOutcome {
    /// Control-frame bytes every node sent, LAN and WAN (as the testnet's
    /// `control_bytes_total` counts them).
    pub bytes_total: u64,
    /// Per honest endpoint, what it sent.
    pub per_endpoint: Vec<u64>,
    /// Per branch site, control bytes into and out of it across the WAN, with QUIC's packet
    /// overhead and acknowledgements (as the testnet's relay counts them).
    pub site_wan_in: Vec<u64>,
    /// See `site_wan_in`.
    pub site_wan_out: Vec<u64>,
    /// Site summaries published, all sites.
    pub summaries: u64,
    /// Status entries the busiest node holds: the records of its site's members and a
    /// summary per other site (its view of the fleet).
    pub status_entries_max: usize,
    /// The fleet when no release moves.
    pub steady: super::control::SteadyState,
}

/// What a run produced.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The control plane.
    pub control: ControlOutcome,
    /// Seconds at which each honest endpoint completed (`None`: not within the limit).
    pub completed_s: Vec<Option<f64>>,
    /// Endpoints that served garbage (not in `completed_s`).
    pub garbage_nodes: usize,
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
    /// Bytes of chunks endpoints rebuilt from patches instead of receiving them.
    pub bytes_rebuilt: u64,
    /// Endpoints that hold a chunk they never received (must be 0).
    pub unreceived_chunks: u64,
    /// Events processed.
    pub events: u64,
    /// Planner passes.
    pub plans: u64,
    /// Same-site peers snubbed by a fetch: a stall, or failures in a row.
    pub snubs: u64,
    /// Fingerprint of the event log (every event's time, kind and fields, in order).
    pub log_hash: u128,
    /// Simulated seconds when the last event ran.
    pub end_s: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(at: u64, seq: u64) -> Entry {
        Entry {
            at,
            seq,
            ev: Ev::SeedCheck,
        }
    }

    #[test]
    fn the_calendar_finds_an_event_past_its_ring_when_nothing_else_is_queued() {
        let mut q = Calendar::new();
        let far = (RING + 10) << BUCKET_SHIFT;
        q.push(entry(far, 1));
        assert_eq!(q.peek_at(), Some(far));
        assert_eq!(q.pop_before(far + 1).map(|e| e.at), Some(far));
        assert_eq!(q.peek_at(), None);
    }

    #[test]
    fn the_calendar_pops_in_the_order_of_one_heap() {
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        let mut q = Calendar::new();
        let mut heap = BinaryHeap::new();
        let mut now = 0u64;
        for seq in 0..20_000u64 {
            // Mostly near, sometimes far past the ring, as transfers and rejoins are.
            let ahead = if rng.random_bool(0.05) {
                rng.random_range(RING << BUCKET_SHIFT..(3 * RING) << BUCKET_SHIFT)
            } else {
                rng.random_range(0..1u64 << 30)
            };
            q.push(entry(now + ahead, seq));
            heap.push(Reverse((now + ahead, seq)));
            if rng.random_bool(0.5) {
                let Reverse((at, s)) = heap.pop().expect("pushed");
                let e = q.pop_before(u64::MAX).expect("same length");
                assert_eq!((e.at, e.seq), (at, s));
                now = at;
            }
        }
        while let Some(Reverse((at, s))) = heap.pop() {
            assert_eq!(q.peek_at(), Some(at));
            let e = q.pop_before(u64::MAX).expect("same length");
            assert_eq!((e.at, e.seq), (at, s));
        }
        assert_eq!(q.peek_at(), None);
    }
}
