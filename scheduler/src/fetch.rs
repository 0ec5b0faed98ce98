//! The fetch of one release as a deterministic state machine, in the style of quinn-proto:
//! no IO, no clock, no tasks. The daemon (`node::net::fetch`) and the simulator
//! (`testnet::sim`) each drive one [`Fetch`] per release a node fetches, feeding it only
//! what that node was told, so a figure from the simulator is a figure about this code.
//!
//! # Driving it
//!
//! * Inputs, each with `now` (the driver's time since its own epoch):
//!   [`handle_answer`](Fetch::handle_answer) (a request came back, with what),
//!   [`handle_peers`](Fetch::handle_peers) (a peer came or went, a bitmap or an announcement
//!   arrived), [`handle_durable`](Fetch::handle_durable) (a checkpoint made chunks durable),
//!   [`handle_window`](Fetch::handle_window) (the download window's state).
//! * Outputs: [`poll_requests`](Fetch::poll_requests) (what to ask of whom now, given what
//!   the peers hold: the [`World`]), [`poll_timeout`](Fetch::poll_timeout) (when to poll
//!   again if nothing happens), [`poll_event`](Fetch::poll_event) (what the driver must act
//!   on: the designation changed, every chunk is verified, paused, resumed, a peer snubbed
//!   or owed a strike).
//!
//! The machine records a request as sent when it returns it; the driver sends it, and
//! reports its answer, whatever it is, exactly once.
//!
//! # What it decides
//!
//! * **When to plan**: at once when an answer frees a quarter of the budget of a peer the
//!   last plan filled, or when a request failed; [`PLAN_COALESCE`] after announcements,
//!   together; at the timers below. Planning after every chunk would cost as
//!   much CPU as receiving them.
//! * **Budgets**: bytes in flight per peer, [`LAN_IN_FLIGHT_BYTES`] or
//!   [`WAN_IN_FLIGHT_BYTES`]; an outranked fetch a quarter of that
//!   ([`crate::priority::OUTRANKED_BUDGET_DIVISOR`]).
//! * **The reserve** (the origin after seeding) is asked only after the WAN has been idle
//!   for [`PlannerConfig::reserve_after_ms`].
//! * **Site members** for rendezvous hashing, and so which chunks this node fetches across
//!   the WAN ([`Fetch::designated`]). Liveness comes from chunks delivered and claims that
//!   grow, never from messages alone (BitTorrent's snubbing is the anchor):
//!   - a same-site peer with no bitmap yet counts for [`MEMBER_GRACE`] after the fetch
//!     starts (or resumes), so that members starting together do not each fetch everything;
//!   - a member counts while it delivered a chunk to this node, or claimed more chunks than
//!     ever before, within [`MEMBER_STALL`] (an empty bitmap sent again and again is no
//!     progress), or while it claims every chunk and is not snubbed;
//!   - a same-site peer is **snubbed** when requests to it are outstanding and nothing came
//!     back for [`SOURCE_STALL`], or when [`FAILURES_TO_SNUB`] requests in a row failed
//!     (timeout, busy, not found, bad); its outstanding requests are asked elsewhere,
//!     its claims no longer count, and it leaves the rendezvous set for [`SNUB_BASE`],
//!     doubling with each snub in a row up to [`SNUB_MAX`]; a chunk it delivers ends the
//!     snub. A chunk only it claimed falls back to another member or to the WAN.
//! * **Strikes**: a chunk that fails verification is a [`Event::Strike`]; the driver keeps
//!   the node's [`crate::strikes::Strikes`] and stops showing a banned peer.

use crate::planner::{
    self, Assignment, Availability, InFlightSet, PeerView, PlanInput, PlanScratch, PlannerConfig,
};
use protocol::ChunkRef;
use protocol::wire::Bitmap;
use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::Duration;

/// Bytes in flight to one same-site peer: a LAN bandwidth-delay product with room to spare
/// (1 Gbit/s × 20 ms ≈ 2.5 MB).
pub const LAN_IN_FLIGHT_BYTES: u64 = 8 << 20;

/// Bytes in flight to one peer of another site. Smaller than the LAN budget: WAN peers are
/// slow, and a long queue at one of them only delays chunks another could serve.
pub const WAN_IN_FLIGHT_BYTES: u64 = 2 << 20;

/// A plan follows peers' announcements of new chunks this much later, together with every
/// announcement that came meanwhile: in a site of 50 members each announcing four times a
/// second, a plan per announcement would be 200 plans a second that mostly find nothing
/// new. A finished request that leaves a busy peer room plans at once; this only paces the
/// announcements. (Planning on the first announcement of a burst at once and pacing only
/// the rest cut a 50 × 10 simulation's completion by 5 % but took 41 % more planner passes,
/// and gained nothing at 500 × 50.)
pub const PLAN_COALESCE: Duration = Duration::from_millis(50);

/// For this long after a fetch starts (or resumes), every connected same-site peer counts as
/// a site member for rendezvous hashing, whether or not its bitmap has arrived yet:
/// announcements reach members a few hundred milliseconds apart, and a member that planned
/// alone in that gap would fetch the whole release across the WAN.
pub const MEMBER_GRACE: Duration = Duration::from_secs(2);

/// A same-site member that neither delivered a chunk to this node nor claimed more chunks
/// for this long is taken out of the rendezvous set; its share of WAN chunks moves to the
/// others. Long against a chunk's time on a LAN or a site's share of its WAN (a 256 KiB
/// chunk at 1 Mbit/s is 2 s), short against the 72-hour deadline.
pub const MEMBER_STALL: Duration = Duration::from_secs(15);

/// A same-site peer with requests outstanding that returned nothing for this long is
/// snubbed. A LAN answers in milliseconds; a peer that lets 15 s pass without one is hung,
/// overloaded past use, or lying about what it holds.
pub const SOURCE_STALL: Duration = Duration::from_secs(15);

/// Requests to a same-site peer that fail in a row (timed out, busy, not found, a bad
/// chunk) before it is snubbed: one failure is a hiccup, three without a chunk between are
/// a peer that cannot serve now. A broken connection does not count: the peer is gone, and
/// a crashed node that returns is not held to what its crash did.
pub const FAILURES_TO_SNUB: u8 = 3;

/// How long a first snub lasts; each further snub in a row doubles it.
pub const SNUB_BASE: Duration = Duration::from_secs(15);

/// The longest snub: a peer that keeps failing is tried again at least this often, so a
/// node that recovered is used again within minutes.
pub const SNUB_MAX: Duration = Duration::from_secs(300);

/// Staged bytes that trigger a checkpoint: bounds what a crash can lose and how long a chunk
/// waits before peers can fetch it from this node.
pub const CHECKPOINT_BYTES: u64 = 32 << 20;

/// Longest a verified chunk waits for its checkpoint.
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(250);

/// Verified chunk bytes waiting for the disk. Past it no new request is planned until a
/// checkpoint: this bounds memory when the disk is slower than the network.
pub const WRITE_BACKLOG_BYTES: u64 = 32 << 20;

// A backlog smaller than a checkpoint would stop the fetch before the writer checkpoints.
const _: () = assert!(WRITE_BACKLOG_BYTES >= CHECKPOINT_BYTES);
// A snub must outlast the grace that lets members start together.
const _: () = assert!(SNUB_BASE.as_nanos() >= MEMBER_GRACE.as_nanos());
const _: () = assert!(SNUB_MAX.as_nanos() >= SNUB_BASE.as_nanos());

/// "No time": a timer that is not set.
const NEVER: u64 = u64::MAX;

/// The machine's tuning; [`FetchConfig::default`] is the product's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchConfig {
    /// The planner's own tuning (endgame, reserve).
    pub planner: PlannerConfig,
    /// [`LAN_IN_FLIGHT_BYTES`].
    pub lan_budget_bytes: u64,
    /// [`WAN_IN_FLIGHT_BYTES`].
    pub wan_budget_bytes: u64,
    /// [`PLAN_COALESCE`].
    pub plan_coalesce: Duration,
    /// [`MEMBER_GRACE`].
    pub member_grace: Duration,
    /// [`MEMBER_STALL`].
    pub member_stall: Duration,
    /// [`SOURCE_STALL`].
    pub source_stall: Duration,
    /// [`FAILURES_TO_SNUB`].
    pub failures_to_snub: u8,
    /// [`SNUB_BASE`].
    pub snub_base: Duration,
    /// [`SNUB_MAX`].
    pub snub_max: Duration,
}

impl Default for FetchConfig {
    fn default() -> Self {
        Self {
            planner: PlannerConfig::default(),
            lan_budget_bytes: LAN_IN_FLIGHT_BYTES,
            wan_budget_bytes: WAN_IN_FLIGHT_BYTES,
            plan_coalesce: PLAN_COALESCE,
            member_grace: MEMBER_GRACE,
            member_stall: MEMBER_STALL,
            source_stall: SOURCE_STALL,
            failures_to_snub: FAILURES_TO_SNUB,
            snub_base: SNUB_BASE,
            snub_max: SNUB_MAX,
        }
    }
}

/// How a request came back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// The chunk, verified against its id.
    Delivered,
    /// Bytes that do not match the chunk's id, or a reply that breaks the protocol.
    Bad,
    /// The peer says it does not hold the chunk.
    NotFound,
    /// The peer has no serving slot free.
    Busy,
    /// No answer within the request timeout.
    Timeout,
    /// The connection or stream failed.
    Failed,
}

/// Why a peer was snubbed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnubReason {
    /// Requests were outstanding and nothing came back for [`SOURCE_STALL`].
    Stalled,
    /// [`FAILURES_TO_SNUB`] requests in a row failed.
    Failing,
}

/// What the driver must act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The chunks this node fetches across the WAN changed ([`Fetch::designated`]): tell the
    /// WAN peers what it wants.
    Designated,
    /// Every chunk is verified: make the rest durable and commit the release.
    Verified,
    /// A newer version of the channel completed first: the fetch stopped for good.
    Superseded,
    /// The download window closed: nothing new is requested (what is in flight lands).
    Paused {
        /// When it opens again, if known.
        opens: Option<Duration>,
    },
    /// The download window opened again.
    Resumed,
    /// A same-site peer is no longer asked, nor counted as a member, until `until`.
    Snubbed {
        /// The peer's slot.
        slot: u32,
        /// When the snub ends.
        until: Duration,
        /// Why.
        reason: SnubReason,
    },
    /// The peer in `slot` sent a bad chunk: it earns a strike.
    Strike {
        /// The peer's slot.
        slot: u32,
    },
    /// Every piece of the `k`th patch [`Fetch::use_patches`] was given is verified: rebuild
    /// its file, verify its chunks and report with [`Fetch::handle_rebuilt`].
    Rebuild {
        /// The patch, by its place in the list given.
        k: usize,
    },
}

/// Where the fetch stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Requesting chunks.
    Fetching,
    /// The download window is closed.
    Paused,
    /// Every chunk is verified.
    Verified,
    /// Stopped for good: a newer version completed first.
    Superseded,
}

/// One request to send: chunk `chunk` to the peer at `peer` in [`World::peers`] (slot
/// `slot`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// Chunk index.
    pub chunk: u32,
    /// Index into [`World::peers`].
    pub peer: usize,
    /// The peer's slot.
    pub slot: u32,
    /// Whether the peer is in another site.
    pub wan: bool,
}

/// Same-site availability kept by the caller for a whole site (the simulator's), instead of
/// counted by the machine from the peers' bitmaps on every pass (the daemon's).
#[derive(Debug, Clone, Copy)]
pub struct SharedLan<'a> {
    /// How many of the site's members hold each chunk.
    pub counts: &'a Availability,
    /// Slots of same-site peers `counts` leaves out (they are counted per node).
    pub uncounted: &'a [u32],
}

/// What the peers hold, as this node was told, at one poll.
pub struct World<'a, 'b> {
    /// The connected peers that may be asked (banned ones left out). The driver fills `id`,
    /// `slot`, `same_site`, `have`, `reserve`, `usable` (false to hold a peer back), and
    /// `in_flight_bytes` with what *other* fetches have in flight to the peer; the machine
    /// sets budgets, adds its own bytes in flight, and holds snubbed peers back.
    pub peers: &'b mut [PeerView<'a>],
    /// Same-site counts kept by the caller; `None`: counted from `peers`.
    pub lan: Option<SharedLan<'a>>,
    /// What the WAN peers that are not a reserve hold, among this node's designated chunks
    /// it lacks, if the caller keeps it (see [`PlanInput::wan_held`]).
    pub wan_held: Option<&'a Bitmap>,
    /// Whether another running fetch outranks this one.
    pub outranked: bool,
    /// Chunks another fetch of this node has in flight (two releases that share chunks,
    /// fetched at once): this one waits for them instead of asking again
    /// ([`Fetch::handle_held`] when they are stored). `None`: no other fetch runs.
    pub elsewhere: Option<&'a Bitmap>,
    /// Verified bytes not yet written.
    pub write_backlog_bytes: u64,
    /// Designations the caller shares between the fetches of a site (the simulator's).
    pub designations: Option<&'b mut planner::Designations>,
    /// Buffers reused from one poll to the next.
    pub scratch: &'b mut FetchScratch,
}

/// Buffers [`Fetch::poll_requests`] reuses; one per driver thread is enough.
#[derive(Debug, Default)]
pub struct FetchScratch {
    plan: PlanScratch,
    assignments: Vec<Assignment>,
    assigned: Vec<u64>,
    members: Vec<[u8; 32]>,
    lan: Option<Availability>,
}

/// What the machine keeps per peer slot.
#[derive(Debug, Clone, Copy)]
struct PeerState {
    /// This fetch's bytes in flight to it.
    in_flight_bytes: u64,
    /// Its budget and other fetches' bytes at the last plan.
    budget_bytes: u64,
    others_bytes: u64,
    same_site: bool,
    /// The last plan left it under a quarter of its budget: an answer from it plans again.
    starved: bool,
    /// [`member_hash`] of its id, once seen (0: not yet).
    id_hash: u64,
    /// Whether a bitmap of it was seen, the most chunks it ever claimed, and when it last
    /// progressed (claimed more, or delivered).
    seen: bool,
    claimed_high: u32,
    progress_at: u64,
    /// Since when requests to it are outstanding with nothing back (`NEVER`: none).
    waiting_since: u64,
    failures: u8,
    snubs: u8,
    snubbed_until: u64,
}

impl Default for PeerState {
    fn default() -> Self {
        Self {
            in_flight_bytes: 0,
            budget_bytes: 0,
            others_bytes: 0,
            same_site: false,
            starved: false,
            id_hash: 0,
            seen: false,
            claimed_high: 0,
            progress_at: 0,
            waiting_since: NEVER,
            failures: 0,
            snubs: 0,
            snubbed_until: 0,
        }
    }
}

impl PeerState {
    fn snubbed(&self, now: u64) -> bool {
        now < self.snubbed_until
    }
}

/// Most peer slots a fetch keeps state for: more than a node's connection limit.
pub const PEER_SLOTS_MAX: u32 = 1 << 16;

/// The slot under which a chunk another fetch of this node has in flight is recorded.
pub const ELSEWHERE_SLOT: u32 = u32::MAX;

/// The fetch of one release. `S` hashes the in-flight table (the simulator passes a fixed
/// hasher so that every run lays out memory alike).
#[derive(Debug)]
pub struct Fetch<S = std::collections::hash_map::RandomState> {
    config: FetchConfig,
    me: [u8; 32],
    /// [`member_hash`] of `me`.
    me_hash: u64,
    chunks: Arc<[ChunkRef]>,
    /// Verified (handed to the writer, not necessarily durable).
    have: Bitmap,
    in_flight: InFlightSet<S>,
    peers: Vec<PeerState>,
    /// A hash of the member set the designation was made over (0: none yet).
    members_key: u64,
    designated: Bitmap,
    phase: Phase,
    /// Members without a bitmap count until this much after it (start or resume).
    grace_from: u64,
    /// When a request to a WAN peer that is not a reserve was last out.
    wan_busy_at: u64,
    /// Whether the WAN side changed since the last WAN pass.
    wan_dirty: bool,
    /// A plan is due at this instant (`NEVER`: none).
    due: u64,
    /// The write backlog held the last plan back: a checkpoint plans again.
    backlogged: bool,
    /// A reserve was among the peers at the last plan.
    reserve_seen: bool,
    /// The earliest liveness timer (grace, stall, snub) found at the last pass, and the
    /// earliest clock timer (endgame, reserve): the first plans when it fires, the second
    /// only if the pass finds a change.
    timer: u64,
    clock: u64,
    /// When the window must be looked at again.
    window_edge: u64,
    /// Planner passes run.
    passes: u64,
    /// Chunks recorded in flight under [`ELSEWHERE_SLOT`] (sized on first use).
    elsewhere: Bitmap,
    /// Units set in `have` that are not held: pieces of patches not used, and chunks a
    /// patch being fetched stands for (sized on first use).
    skipped: Bitmap,
    /// The patches being fetched ([`Self::use_patches`]).
    patches: Vec<PatchUse>,
    events: VecDeque<Event>,
}

/// A patch a fetch uses, and where it stands.
#[derive(Debug)]
struct PatchUse {
    chosen: crate::patches::Chosen,
    state: PatchState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PatchState {
    /// Its pieces are being fetched.
    Fetching,
    /// Its file is being rebuilt.
    Rebuilding,
    /// Rebuilt, or given up (its file's chunks are fetched).
    Done,
}

fn ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(NEVER - 1)
}

fn dur(t: u64) -> Duration {
    Duration::from_nanos(t)
}

/// Liveness timers (a stall, the end of a grace or a snub) and the reserve's turn fire on a
/// grid of this step: every pass moves the earliest of them a little (members progress,
/// WAN requests go out), and a driver then needs one wake-up per step, not one per pass. A
/// member is dropped, or the reserve asked, at most this much late; against a 15 s stall
/// and a 3 s wait, nothing.
pub const TIMER_GRAIN: Duration = Duration::from_secs(1);

/// `t` rounded up to the [`TIMER_GRAIN`] grid (`NEVER` stays).
fn on_grid(t: u64) -> u64 {
    let grain = ns(TIMER_GRAIN);
    if t == NEVER {
        return t;
    }
    t.div_ceil(grain).saturating_mul(grain)
}

/// An order-free hash of a node id, summed over a member set.
fn member_hash(id: &[u8; 32]) -> u64 {
    id.chunks_exact(8).fold(0x7032_7064_6d65_6d62, |h, w| {
        planner::mix(h ^ u64::from_le_bytes(w.try_into().expect("8 bytes")))
    })
}

impl<S: BuildHasher + Default> Fetch<S> {
    /// The fetch by node `me` of a release of `chunks`, holding `have` already, started at
    /// `now`. Call [`handle_window`](Self::handle_window) before the first poll if a
    /// download window applies.
    pub fn new(
        config: FetchConfig,
        me: [u8; 32],
        chunks: Arc<[ChunkRef]>,
        have: Bitmap,
        now: Duration,
    ) -> Self {
        let n = chunks.len() as u32;
        let now = ns(now);
        let mut f = Self {
            config,
            me,
            me_hash: member_hash(&me),
            in_flight: InFlightSet::new(n),
            designated: Bitmap::new(n),
            chunks,
            have,
            peers: Vec::new(),
            members_key: 0,
            phase: Phase::Fetching,
            grace_from: now,
            wan_busy_at: now,
            wan_dirty: true,
            due: now,
            backlogged: false,
            reserve_seen: false,
            timer: NEVER,
            clock: NEVER,
            window_edge: NEVER,
            passes: 0,
            elsewhere: Bitmap::default(),
            skipped: Bitmap::default(),
            patches: Vec::new(),
            events: VecDeque::new(),
        };
        if f.have.len() != n {
            f.have = Bitmap::new(n);
        }
        if f.have.is_full() {
            f.phase = Phase::Verified;
            f.events.push_back(Event::Verified);
        }
        f
    }
}

impl<S: BuildHasher> Fetch<S> {
    /// The chunks verified so far.
    pub fn have(&self) -> &Bitmap {
        &self.have
    }

    /// The chunks in flight.
    pub fn in_flight(&self) -> &InFlightSet<S> {
        &self.in_flight
    }

    /// The chunks rendezvous hashing names this node for among the members it counts: the
    /// only ones it fetches across the WAN.
    pub fn designated(&self) -> &Bitmap {
        &self.designated
    }

    /// How many planner passes it ran.
    pub fn passes(&self) -> u64 {
        self.passes
    }

    /// Where the fetch stands.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The release's chunks.
    pub fn chunks(&self) -> &Arc<[ChunkRef]> {
        &self.chunks
    }

    /// This fetch's bytes in flight to the peer in `slot`.
    pub fn in_flight_to(&self, slot: u32) -> u64 {
        self.peers
            .get(slot as usize)
            .map_or(0, |p| p.in_flight_bytes)
    }

    /// Whether the peer in `slot` is snubbed at `now`.
    pub fn is_snubbed(&self, slot: u32, now: Duration) -> bool {
        self.peers
            .get(slot as usize)
            .is_some_and(|p| p.snubbed(ns(now)))
    }

    /// The next event to act on.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`poll_requests`](Self::poll_requests) must next be called if no input comes
    /// (`None`: not before an input).
    pub fn poll_timeout(&self) -> Option<Duration> {
        if matches!(self.phase, Phase::Verified | Phase::Superseded) {
            return None;
        }
        let t = if self.phase == Phase::Paused {
            self.window_edge
        } else {
            self.due
                .min(self.timer)
                .min(self.clock)
                .min(self.window_edge)
        };
        (t != NEVER).then(|| dur(t))
    }

    fn plan_at(&mut self, t: u64) {
        self.due = self.due.min(t);
    }

    /// Peers changed: one came or went, a bitmap or an announcement arrived. A plan follows
    /// [`PLAN_COALESCE`] later, with whatever else arrives meanwhile (unless one is due
    /// sooner); `wan` when the change is on the WAN side (a WAN peer's announcement, offer,
    /// arrival or departure).
    pub fn handle_peers(&mut self, now: Duration, wan: bool) {
        self.wan_dirty |= wan;
        self.plan_at(ns(now + self.config.plan_coalesce));
    }

    /// A checkpoint made chunks durable: a plan held back by the write backlog goes ahead.
    pub fn handle_durable(&mut self, now: Duration) {
        if self.backlogged {
            self.backlogged = false;
            self.plan_at(ns(now));
        }
    }

    /// `chunk` is in the store: another fetch of this node brought it (a chunk two releases
    /// share). True when it is new to this fetch: the driver shows it to peers.
    pub fn handle_held(&mut self, now: Duration, chunk: u32) -> bool {
        if matches!(self.phase, Phase::Verified | Phase::Superseded) {
            return false;
        }
        let unskipped = self.skipped.len() > chunk && self.skipped.clear(chunk);
        if !self.have.set(chunk) && !unskipped {
            return false;
        }
        self.in_flight.remove(chunk);
        self.elsewhere.clear(chunk);
        self.held_changed();
        self.plan_at(ns(now));
        true
    }

    /// Uses `chosen` patches ([`crate::patches::choose`]): their pieces are fetched, and
    /// the chunks each stands for are not, until it is rebuilt or given up; the release's
    /// other pieces, those at units `pieces_from..`, are never fetched. Call once, before
    /// the first poll.
    pub fn use_patches(&mut self, pieces_from: u32, chosen: Vec<crate::patches::Chosen>) {
        let n = self.have.len();
        if pieces_from >= n && chosen.is_empty() {
            return;
        }
        self.skipped = Bitmap::new(n);
        let used: std::collections::HashSet<u32> = chosen
            .iter()
            .flat_map(|c| c.pieces.iter().copied())
            .collect();
        for i in pieces_from..n {
            if !used.contains(&i) && self.have.set(i) {
                self.skipped.set(i);
            }
        }
        for c in &chosen {
            for &i in &c.covers {
                if i < n && self.have.set(i) {
                    self.skipped.set(i);
                }
            }
        }
        self.patches = chosen
            .into_iter()
            .map(|chosen| PatchUse {
                chosen,
                state: PatchState::Fetching,
            })
            .collect();
        self.held_changed();
    }

    /// The `k`th patch's file was rebuilt and its chunks verified and handed to the writer
    /// (`ok`), or not: then the chunks it stood for and this node lacks are fetched.
    pub fn handle_rebuilt(&mut self, now: Duration, k: usize, ok: bool) {
        let Some(p) = self.patches.get_mut(k) else {
            return;
        };
        if p.state != PatchState::Rebuilding {
            return;
        }
        p.state = PatchState::Done;
        let covers = std::mem::take(&mut p.chosen.covers);
        for i in covers {
            if self.skipped.len() > i && self.skipped.clear(i) && !ok {
                self.have.clear(i);
            }
        }
        if !ok {
            // More chunks to fetch: those designated here are asked of the WAN peers too.
            self.events.push_back(Event::Designated);
        }
        self.wan_dirty = true;
        self.held_changed();
        self.plan_at(ns(now));
    }

    /// The units held without being received: pieces of patches not used, and the chunks
    /// of patches not rebuilt yet ([`Fetch::use_patches`]).
    pub fn skipped(&self) -> &Bitmap {
        &self.skipped
    }

    /// The chunks that the `k`th patch stands for.
    pub fn patch_covers(&self, k: usize) -> &[u32] {
        self.patches.get(k).map_or(&[], |p| &p.chosen.covers)
    }

    /// After units became held: a patch whose pieces are all held is rebuilt; the fetch is
    /// verified once every unit is held or skipped and no patch is pending.
    fn held_changed(&mut self) {
        for (k, p) in self.patches.iter_mut().enumerate() {
            if p.state == PatchState::Fetching
                && p.chosen
                    .pieces
                    .iter()
                    .all(|&i| self.have.get(i) && !(self.skipped.len() > i && self.skipped.get(i)))
            {
                p.state = PatchState::Rebuilding;
                self.events.push_back(Event::Rebuild { k });
            }
        }
        if self.phase != Phase::Verified
            && self.phase != Phase::Superseded
            && self.have.is_full()
            && self.patches.iter().all(|p| p.state == PatchState::Done)
        {
            self.phase = Phase::Verified;
            self.events.push_back(Event::Verified);
        }
    }

    /// Records the chunks another fetch has in flight as in flight here (and forgets those
    /// it no longer has), so that the planner does not ask for them again.
    fn mark_elsewhere(&mut self, now: u64, elsewhere: Option<&Bitmap>) {
        if elsewhere.is_none() && self.elsewhere.count() == 0 {
            return;
        }
        let n = self.have.len();
        if self.elsewhere.len() != n {
            self.elsewhere = Bitmap::new(n);
        }
        let empty = Bitmap::new(0);
        let now_ms = now / 1_000_000;
        let theirs = elsewhere.unwrap_or(&empty);
        let gone: Vec<u32> = self.elsewhere.ones_and_not(theirs).collect();
        for i in gone {
            self.in_flight.answered(i, ELSEWHERE_SLOT);
            self.elsewhere.clear(i);
        }
        let new: Vec<u32> = theirs
            .ones_and_not(&self.elsewhere)
            .filter(|&i| i < n && !self.have.get(i) && !self.in_flight.contains(i))
            .collect();
        for i in new {
            self.in_flight.request(i, ELSEWHERE_SLOT, now_ms);
            self.elsewhere.set(i);
        }
    }

    /// A newer version of the release's channel completed: the fetch stops for good (what
    /// is verified stays for later versions to reuse).
    pub fn handle_superseded(&mut self) {
        if self.phase != Phase::Superseded {
            self.phase = Phase::Superseded;
            self.events.push_back(Event::Superseded);
        }
    }

    /// The download window's state at `now`: open or not, and when that next changes
    /// (`None`: not in sight). Call before polling, whenever the state may have changed.
    pub fn handle_window(&mut self, now: Duration, open: bool, edge: Option<Duration>) {
        let now = ns(now);
        self.window_edge = edge.map_or(NEVER, ns);
        match (self.phase, open) {
            (Phase::Fetching, false) => {
                self.phase = Phase::Paused;
                self.events.push_back(Event::Paused { opens: edge });
            }
            (Phase::Paused, true) => {
                self.phase = Phase::Fetching;
                self.events.push_back(Event::Resumed);
                // Nobody progressed while the window was shut: every member starts afresh.
                self.grace_from = now;
                for p in &mut self.peers {
                    p.progress_at = now;
                }
                self.wan_busy_at = now;
                self.wan_dirty = true;
                self.plan_at(now);
            }
            _ => {}
        }
    }

    fn peer_mut(&mut self, slot: u32) -> &mut PeerState {
        let k = slot.min(PEER_SLOTS_MAX - 1) as usize;
        if k >= self.peers.len() {
            self.peers.resize(k + 1, PeerState::default());
        }
        &mut self.peers[k]
    }

    /// A request for `chunk` to the peer in `slot` came back at `now` with `answer`. True
    /// when the chunk is new: the driver keeps the bytes (a duplicate from the endgame, or a
    /// late answer, is dropped).
    pub fn handle_answer(&mut self, now: Duration, slot: u32, chunk: u32, answer: Answer) -> bool {
        let now = ns(now);
        let Some(len) = self.chunks.get(chunk as usize).map(|c| u64::from(c.len)) else {
            return false;
        };
        self.in_flight.answered(chunk, slot);
        let failures_to_snub = self.config.failures_to_snub;
        let p = self.peer_mut(slot);
        p.in_flight_bytes = p.in_flight_bytes.saturating_sub(len);
        p.waiting_since = if p.in_flight_bytes > 0 { now } else { NEVER };
        let room = p
            .budget_bytes
            .saturating_sub(p.in_flight_bytes + p.others_bytes);
        let refill = p.starved && room >= p.budget_bytes / 4;
        if refill {
            p.starved = false;
        }
        let same_site = p.same_site;
        if answer == Answer::Delivered {
            p.failures = 0;
            p.snubs = 0;
            p.snubbed_until = 0;
            p.progress_at = now;
            self.wan_dirty |= !same_site;
            if refill {
                self.plan_at(now);
            }
            if matches!(self.phase, Phase::Verified | Phase::Superseded) || !self.have.set(chunk) {
                return false;
            }
            // An endgame request to another peer may still be out: moot now.
            self.in_flight.remove(chunk);
            self.elsewhere.clear(chunk);
            self.held_changed();
            return true;
        }
        // A broken connection says nothing about the peer's will to serve (it crashed, or its
        // link did): the chunk is asked again, and the peer is not held to it.
        if answer != Answer::Failed {
            p.failures = p.failures.saturating_add(1);
        }
        let snub = same_site && p.failures >= failures_to_snub && !p.snubbed(now);
        self.wan_dirty |= !same_site;
        if answer == Answer::Bad {
            self.events.push_back(Event::Strike { slot });
        }
        if snub {
            self.snub(now, slot, SnubReason::Failing);
        }
        // The chunk must be asked again, elsewhere or later.
        self.plan_at(now);
        false
    }

    /// Snubs the peer in `slot`: its requests are asked elsewhere, and it is neither asked
    /// nor counted as a member until the snub ends.
    fn snub(&mut self, now: u64, slot: u32, reason: SnubReason) {
        let (base, max) = (ns(self.config.snub_base), ns(self.config.snub_max));
        let p = self.peer_mut(slot);
        let length = base.saturating_mul(1 << p.snubs.min(16)).min(max);
        p.snubs = p.snubs.saturating_add(1);
        p.snubbed_until = now.saturating_add(length);
        p.failures = 0;
        p.waiting_since = NEVER;
        let until = p.snubbed_until;
        let asked: Vec<u32> = self
            .in_flight
            .iter()
            .filter(|(_, f)| f.peers().contains(&slot))
            .map(|(i, _)| i)
            .collect();
        for i in asked {
            self.in_flight.answered(i, slot);
        }
        self.events.push_back(Event::Snubbed {
            slot,
            until: dur(until),
            reason,
        });
        self.wan_dirty = true;
        self.plan_at(now);
    }
}

/// What one pass over the peers found.
struct Pass {
    members_key: u64,
    timer: u64,
}

impl<S: BuildHasher> Fetch<S> {
    /// The requests to send now, given what the peers hold (`world`); the machine counts
    /// them as sent. Cheap when nothing is due: call it after every input.
    pub fn poll_requests(
        &mut self,
        now: Duration,
        world: &mut World<'_, '_>,
        out: &mut Vec<Request>,
    ) {
        out.clear();
        let now = ns(now);
        if self.phase != Phase::Fetching || (now < self.due && now < self.timer && now < self.clock)
        {
            return;
        }
        if now >= self.clock {
            // The endgame's turn, or the reserve's.
            self.plan_at(now);
        }
        let pass = self.pass(now, world);
        if pass.members_key != self.members_key {
            self.members_key = pass.members_key;
            self.redesignate(now, world);
            self.plan_at(now);
        }
        self.timer = pass.timer;
        self.clock = self.clock_timers(now);
        if now < self.due {
            return;
        }
        if world.write_backlog_bytes >= WRITE_BACKLOG_BYTES {
            self.backlogged = true;
            self.due = NEVER;
            return;
        }
        self.plan(now, world, out);
    }

    /// Whether the same-site peer `v` counts as a site member at `now`, from what the last
    /// pass saw of it.
    fn counts_as_member(&self, v: &PeerView<'_>, now: u64) -> bool {
        self.peers
            .get(v.slot as usize)
            .is_some_and(|p| self.is_member(p, v, now))
    }

    /// [`Self::counts_as_member`], given the peer's state.
    fn is_member(&self, p: &PeerState, v: &PeerView<'_>, now: u64) -> bool {
        if !v.same_site || !v.usable || v.id == self.me || p.snubbed(now) {
            return false;
        }
        match v.have {
            None => now < self.grace_from.saturating_add(ns(self.config.member_grace)),
            Some(b) => {
                b.is_full() || now < p.progress_at.saturating_add(ns(self.config.member_stall))
            }
        }
    }

    /// One look at every peer: budgets and what is in flight to it, stalls (snubs), progress,
    /// who counts as a member, and the next liveness timer.
    fn pass(&mut self, now: u64, world: &mut World<'_, '_>) -> Pass {
        let c = self.config;
        let grace_end = self.grace_from.saturating_add(ns(c.member_grace));
        let (source, stall) = (ns(c.source_stall), ns(c.member_stall));
        let budget = |class: u64| {
            if world.outranked {
                class / crate::priority::OUTRANKED_BUDGET_DIVISOR
            } else {
                class
            }
        };
        let (lan_budget, wan_budget) = (budget(c.lan_budget_bytes), budget(c.wan_budget_bytes));
        if let Some(top) = world.peers.iter().map(|v| v.slot).max() {
            self.peer_mut(top);
        }
        let mut key = self.me_hash;
        let mut timer = NEVER;
        self.reserve_seen = false;
        for v in world.peers.iter_mut() {
            v.budget_bytes = if v.same_site { lan_budget } else { wan_budget };
            self.reserve_seen |= v.reserve;
            let k = v.slot.min(PEER_SLOTS_MAX - 1) as usize;
            let p = &mut self.peers[k];
            p.same_site = v.same_site;
            p.budget_bytes = v.budget_bytes;
            p.others_bytes = v.in_flight_bytes;
            v.in_flight_bytes += p.in_flight_bytes;
            if !v.same_site {
                continue;
            }
            if p.waiting_since != NEVER && !p.snubbed(now) {
                let stalled_at = p.waiting_since.saturating_add(source);
                if now >= stalled_at {
                    self.snub(now, v.slot, SnubReason::Stalled);
                } else {
                    timer = timer.min(stalled_at);
                }
            }
            let p = &mut self.peers[k];
            if p.snubbed(now) {
                v.usable = false;
                timer = timer.min(p.snubbed_until);
                continue;
            }
            let unsnubbed = p.snubbed_until != 0;
            // A snub that ended: it may be asked again.
            p.snubbed_until = 0;
            match v.have {
                // It counts until the grace ends, unless its bitmap comes first.
                None if now < grace_end => timer = timer.min(grace_end),
                None => {}
                Some(b) => {
                    let claimed = b.count();
                    if !p.seen || claimed > p.claimed_high {
                        p.seen = true;
                        p.claimed_high = p.claimed_high.max(claimed);
                        p.progress_at = p.progress_at.max(now);
                    }
                    let until = p.progress_at.saturating_add(stall);
                    if !b.is_full() && now < until {
                        timer = timer.min(until);
                    }
                }
            }
            if p.id_hash == 0 {
                p.id_hash = member_hash(&v.id);
            }
            let p = &self.peers[k];
            if self.is_member(p, v, now) {
                key = key.wrapping_add(p.id_hash);
            }
            if unsnubbed {
                self.plan_at(now);
            }
        }
        if self.reserve_seen && now >= self.reserve_at() {
            self.wan_dirty = true;
        }
        Pass {
            members_key: key,
            timer: on_grid(timer),
        }
    }

    /// The members are those the last pass counted: this node's WAN share follows them.
    fn redesignate(&mut self, now: u64, world: &mut World<'_, '_>) {
        let mut members = std::mem::take(&mut world.scratch.members);
        members.clear();
        members.push(self.me);
        members.extend(
            world
                .peers
                .iter()
                .filter(|v| self.counts_as_member(v, now))
                .map(|v| v.id),
        );
        members.sort_unstable();
        members.dedup();
        self.designated = match world.designations.as_deref_mut() {
            Some(cache) => cache.designated_chunks(&self.me, &members, &self.chunks),
            None => planner::designated_chunks(&self.me, &members, &self.chunks),
        };
        world.scratch.members = members;
        self.wan_dirty = true;
        self.events.push_back(Event::Designated);
    }

    /// Plans and records the requests.
    fn plan(&mut self, now: u64, world: &mut World<'_, '_>, out: &mut Vec<Request>) {
        self.due = NEVER;
        self.passes += 1;
        self.mark_elsewhere(now, world.elsewhere);
        let FetchScratch {
            plan: plan_scratch,
            assignments,
            assigned,
            lan: lan_buf,
            ..
        } = &mut *world.scratch;
        let views: &[PeerView<'_>] = world.peers;
        let mut extra: Vec<&Bitmap> = Vec::new();
        let lan: &Availability = match world.lan {
            None => {
                let n = self.chunks.len() as u32;
                let usable = views.iter().filter(|v| v.same_site && v.usable);
                *lan_buf = Some(Availability::from_bitmaps(n, usable.filter_map(|v| v.have)));
                lan_buf.as_ref().expect("just set")
            }
            Some(shared) => {
                let uncounted = |v: &PeerView<'_>| shared.uncounted.contains(&v.slot);
                let same = views.iter().filter(|v| v.same_site);
                extra.extend(
                    same.clone()
                        .filter(|v| v.usable && uncounted(v))
                        .filter_map(|v| v.have),
                );
                let mut held_back = same.filter(|v| !v.usable && !uncounted(v)).peekable();
                if held_back.peek().is_none() {
                    shared.counts
                } else {
                    // Peers the site's counts include and this node may not ask now.
                    let mut own = shared.counts.clone();
                    for b in held_back.filter_map(|v| v.have) {
                        for i in b.ones() {
                            own.remove(i);
                        }
                    }
                    *lan_buf = Some(own);
                    lan_buf.as_ref().expect("just set")
                }
            }
        };
        if views
            .iter()
            .any(|v| !v.same_site && !v.reserve && v.in_flight_bytes > 0)
        {
            self.wan_busy_at = now;
        }
        let input = PlanInput {
            me: self.me,
            chunks: &self.chunks,
            have: &self.have,
            in_flight: &self.in_flight,
            peers: views,
            lan,
            lan_extra: &extra,
            designated: &self.designated,
            now_ms: now / 1_000_000,
            wan_idle_ms: now.saturating_sub(self.wan_busy_at) / 1_000_000,
            plan_wan: self.wan_dirty,
            wan_held: world.wan_held,
        };
        planner::plan_with(&input, &self.config.planner, plan_scratch, assignments);
        self.wan_dirty = false;
        self.record(now, views, assignments, assigned, out);
    }

    /// Counts `assignments` as sent, marks the peers they leave starved, and sets the timers
    /// that only time can fire (endgame, a new request's stall).
    fn record(
        &mut self,
        now: u64,
        views: &[PeerView<'_>],
        assignments: &[Assignment],
        assigned: &mut Vec<u64>,
        out: &mut Vec<Request>,
    ) {
        let chunks = self.chunks.clone();
        let len = |i: u32| u64::from(chunks[i as usize].len);
        assigned.clear();
        assigned.resize(views.len(), 0);
        for a in assignments {
            assigned[a.peer] += len(a.chunk);
        }
        // Peers this plan leaves with less than a quarter of their budget: a finished request
        // from one of them plans again.
        for (v, &more) in views.iter().zip(assigned.iter()) {
            let room = v.budget_bytes.saturating_sub(v.in_flight_bytes + more);
            if room < v.budget_bytes / 4 {
                self.peer_mut(v.slot).starved = true;
            }
        }
        let now_ms = now / 1_000_000;
        let source = ns(self.config.source_stall);
        for a in assignments {
            let v = &views[a.peer];
            let bytes = len(a.chunk);
            self.in_flight.request(a.chunk, v.slot, now_ms);
            let p = self.peer_mut(v.slot);
            p.in_flight_bytes += bytes;
            if p.waiting_since == NEVER {
                p.waiting_since = now;
                if v.same_site {
                    self.timer = self.timer.min(on_grid(now + source));
                }
            }
            if a.wan && !v.reserve {
                self.wan_busy_at = now;
            }
            out.push(Request {
                chunk: a.chunk,
                peer: a.peer,
                slot: v.slot,
                wan: a.wan,
            });
        }
        self.clock = self.clock_timers(now);
    }

    /// When the reserve may be asked: the WAN idle for the planner's `reserve_after_ms`.
    fn reserve_at(&self) -> u64 {
        let after = self
            .config
            .planner
            .reserve_after_ms
            .saturating_mul(1_000_000);
        self.wan_busy_at.saturating_add(after)
    }

    /// The timers only time fires, after `now`: the reserve's turn, the endgame's.
    fn clock_timers(&self, now: u64) -> u64 {
        let mut t = NEVER;
        if self.reserve_seen && self.reserve_at() > now {
            // On the grid too: it moves with every plan while WAN requests are out.
            t = on_grid(self.reserve_at());
        }
        let p = &self.config.planner;
        let missing = self.have.len() - self.have.count();
        if missing > 0 && missing <= p.endgame_chunks {
            let oldest = self
                .in_flight
                .iter()
                .filter(|(_, f)| f.peers().len() == 1)
                .map(|(_, f)| f.since_ms)
                .min();
            if let Some(since) = oldest {
                let at = (since + p.endgame_after_ms).saturating_mul(1_000_000);
                // A request already old enough found no second peer last time: look again
                // at a quarter of the endgame's delay, not at once.
                let again = now + p.endgame_after_ms.saturating_mul(1_000_000) / 4;
                t = t.min(if at > now { at } else { again });
            }
        }
        t
    }
}

/// When verified chunks are made durable: once [`CHECKPOINT_BYTES`] are staged, or
/// [`CHECKPOINT_INTERVAL`] after the first of them, or at once for the last chunk. The
/// daemon's writer and the simulator both ask it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Checkpoint {
    staged_bytes: u64,
    due: Option<Duration>,
}

impl Checkpoint {
    /// Stages `bytes` at `now` (`last`: the fetch's last chunk); returns when the checkpoint
    /// is due.
    pub fn stage(&mut self, now: Duration, bytes: u64, last: bool) -> Duration {
        self.staged_bytes += bytes;
        let due = if last || self.staged_bytes >= CHECKPOINT_BYTES {
            now
        } else {
            now + CHECKPOINT_INTERVAL
        };
        let due = self.due.map_or(due, |d| d.min(due));
        self.due = Some(due);
        due
    }

    /// When the checkpoint is due (`None`: nothing staged).
    pub fn due(&self) -> Option<Duration> {
        self.due
    }

    /// Bytes staged since the last checkpoint.
    pub fn staged_bytes(&self) -> u64 {
        self.staged_bytes
    }

    /// A checkpoint was taken: nothing is staged.
    pub fn taken(&mut self) {
        *self = Self::default();
    }
}

#[cfg(test)]
mod tests;
