//! The network: peer discovery over libp2p ([`swarm`]), the quinn data plane ([`peer`],
//! [`quic`]), the fetcher ([`fetch`]) that turns bitmaps into verified chunks, and the
//! fleet's status in two levels ([`aggregate`]: records in the site, summaries across the
//! WAN).
//!
//! ```text
//!  peer bitmap of unknown release ──► Net::learn_release ──► manifest over the data plane
//!                                                     │ verify_release (trust, version, expiry)
//!                                                     ▼
//!                              store.add_pending ──► fetch::run (planner ► requests ► verify
//!                                                     ► pack ► checkpoint ► Have to peers)
//!                                                     ▼
//!                                                commit release, serve it
//! ```
//!
//! [`Net`] is the shared state: connected peers and what they have, the releases this node
//! serves or fetches, strikes and bans, traffic counters. Peers are classed LAN (same site)
//! or WAN (another site) from the site they declare in their data-plane hello.
//!
//! Who a node connects to on the data plane: every peer of its own site it learns of (from
//! mDNS, its bootstrap peers, and the peer lists peers send, [`Control::Peers`]); its
//! bootstrap peers; [`NetworkSection::wan_peers`] peers of other sites picked by rendezvous
//! hashing ([`scheduler::control::pick_across_sites`]); and, on a site aggregator, its WAN
//! overlay neighbours. So a node's WAN connections do not grow with the fleet.

pub mod aggregate;
pub mod config;
pub mod fetch;
pub mod peer;
pub mod quic;
pub mod shape;
pub mod swarm;
pub mod tls;

use crate::config::NetworkSection;
use api::{PeerView as ApiPeer, ReleaseProgress};
use libp2p::PeerId;
use libp2p::identity::Keypair;
use peer::Peer;
use protocol::wire::{Bitmap, Control, ControlKind, PeerEntry};
use protocol::{ChunkRef, Manifest, NodeId, ReleaseId, TrustPolicy, VerifiedRelease};
use scheduler::window::{Window, WindowState};
use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use store::Store;
use tokio::sync::{Notify, watch};

pub use scheduler::strikes::{BAN_DURATION, STRIKES_TO_BAN};

/// Releases whose refusal is remembered, so a peer repeating a bad announcement costs nothing.
const REFUSED_MAX: usize = 1024;

/// How long a refused release is not looked at again (one of a channel this node does not
/// follow is not looked at again at all: the configuration does not change while it runs).
const REFUSED_TTL: Duration = Duration::from_secs(600);

/// Most releases this node serves and advertises (newest first). Older ones stay in the store
/// and exportable; they are just not offered to peers.
pub const SERVED_RELEASES_MAX: usize = 64;

/// How long the node with the larger peer id waits for the smaller to dial before it dials.
const DIAL_FALLBACK: Duration = Duration::from_secs(3);

/// Least time between two dials of the same disconnected peer.
const REDIAL_INTERVAL: Duration = Duration::from_secs(5);

/// Peers remembered from the control plane (where to dial them). Past it, new ones are not
/// remembered; they can still dial us.
const KNOWN_PEERS_MAX: usize = 4096;

/// Least time between two peer lists this node sends a site's peers unprompted.
const PEX_INTERVAL: Duration = Duration::from_secs(5);

/// Peers of other sites a peer list names at most: enough for the receiver to pick its WAN
/// peers from, few enough to cost nothing.
const PEX_OTHERS_MAX: usize = 16;

/// How often announcements waiting for peers of other sites are looked at (they go at most
/// every [`scheduler::control::WAN_HAVE_INTERVAL`]).
const WAN_FLUSH_TICK: Duration = Duration::from_millis(100);

/// How long asking another site for its records may take to reach a member of it.
const SITE_QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// Manifests fetched at once (each can be up to 64 MiB).
const MANIFEST_FETCHES_MAX: usize = 4;

/// While no copy of a manifest has come, one more peer is asked this often: a manifest of
/// a few hundred KiB crosses even a thin link in that time, and a peer that does not answer
/// holds learning a release back no longer.
const MANIFEST_HEDGE: Duration = Duration::from_secs(2);

/// Chunks claimed by fetches at once ([`Claims::claim`]): more than the in-flight budgets of
/// every fetch allow; past it a request is sent unclaimed (another fetch may then ask too).
const CLAIMS_MAX: usize = 1 << 16;

/// Notices of stored chunks waiting for a slow fetch loop; one that falls further behind
/// misses some and fetches those chunks itself (the store keeps one copy either way).
const STORED_NOTICES_MAX: usize = 1024;

/// How long learning a release waits for a peer to offer it at all.
const MANIFEST_PATIENCE: Duration = Duration::from_secs(30);

/// The state of a set of windows that must all be open, kept until it can change
/// ([`scheduler::window::WindowCache`], shared by the fetch loop and activation).
#[derive(Debug, Default)]
pub(crate) struct WindowGate(Mutex<scheduler::window::WindowCache>);

impl WindowGate {
    /// The state at `now` of `sets`, which must all be open; the sets must be the same on
    /// every call.
    pub(crate) fn state(&self, sets: &[&[Window]], now: jiff::Timestamp) -> WindowState {
        lock(&self.0).state(sets, now)
    }
}

/// Wakes the fetch loops when peers or their bitmaps change: a generation counter in a
/// watch channel, so a change made while a loop is busy is seen at its next wait, never lost.
pub(crate) struct Wake(watch::Sender<u64>);

impl Wake {
    fn new() -> Self {
        Self(watch::Sender::new(0))
    }

    /// Something changed.
    pub(crate) fn notify(&self) {
        self.0.send_modify(|g| *g = g.wrapping_add(1));
    }

    /// A receiver that sees every change from now on.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.0.subscribe()
    }
}

/// The chunks fetches of this node have asked for and not yet stored ([`Net::claims`]).
#[derive(Debug, Default)]
pub(crate) struct Claims(HashMap<protocol::ChunkId, ReleaseId>);

impl Claims {
    /// Notes that the fetch of `release` asked for `chunk` (unless another fetch did first).
    pub(crate) fn claim(&mut self, chunk: protocol::ChunkId, release: ReleaseId) {
        if self.0.len() < CLAIMS_MAX {
            self.0.entry(chunk).or_insert(release);
        }
    }

    /// Of the chunks `index` numbers, those fetches other than `release`'s have asked for
    /// (`None`: none).
    pub(crate) fn of_others(
        &self,
        release: &ReleaseId,
        index: &HashMap<protocol::ChunkId, u32>,
        n: u32,
    ) -> Option<Bitmap> {
        let mut out: Option<Bitmap> = None;
        for (chunk, _) in self.0.iter().filter(|(_, r)| *r != release) {
            if let Some(&i) = index.get(chunk) {
                out.get_or_insert_with(|| Bitmap::new(n)).set(i);
            }
        }
        out
    }
}

/// Why and when a release was refused.
struct Refusal {
    at: Instant,
    reason: String,
    /// What the manifest said, when it was read (a release of a channel not followed).
    facts: Option<RefusedFacts>,
}

impl Refusal {
    /// Whether it still holds at `now` (see [`REFUSED_TTL`]).
    fn is_live(&self, now: Instant) -> bool {
        self.facts.is_some() || now.duration_since(self.at) < REFUSED_TTL
    }
}

/// A release this node read and would not fetch, as its status record reports it.
#[derive(Debug, Clone)]
pub struct Refused {
    /// The release.
    pub id: ReleaseId,
    /// Why.
    pub reason: String,
    /// What its manifest says, if it was read: the node does not follow its channel.
    pub facts: Option<RefusedFacts>,
}

/// A refused release's channel, version, publishing time and size, from its manifest.
#[derive(Debug, Clone)]
pub struct RefusedFacts {
    /// Channel.
    pub channel: String,
    /// Version.
    pub version: u64,
    /// Manifest creation time, unix seconds.
    pub published_unix_s: i64,
    /// Unique chunks.
    pub chunks_total: u32,
}

/// The error of a manifest whose channel this node does not follow.
#[derive(Debug, thiserror::Error)]
#[error("channel {} is not followed", .0.channel)]
struct NotFollowed(RefusedFacts);

/// A traffic class: same site or another site.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Same site.
    Lan,
    /// Another site.
    Wan,
}

/// Byte counters by class and direction.
#[derive(Debug, Default)]
pub struct Traffic {
    /// Chunk bytes received from same-site peers.
    pub recv_lan: AtomicU64,
    /// Chunk bytes received from peers of other sites.
    pub recv_wan: AtomicU64,
    /// Chunk bytes sent to same-site peers.
    pub sent_lan: AtomicU64,
    /// Chunk bytes sent to peers of other sites.
    pub sent_wan: AtomicU64,
    /// Chunks received and verified against their ids.
    pub chunks_verified: AtomicU64,
    /// Chunks received that did not match their ids (or could not be read).
    pub chunks_failed: AtomicU64,
    /// Peers banned since start.
    pub bans: AtomicU64,
    /// Data-plane control-stream bytes, by message kind, class and direction.
    pub control: ControlBytes,
}

/// Bytes of data-plane control-stream frames (length prefix included), by message kind,
/// class and direction: what the control messages themselves weigh, without the QUIC
/// packets around them.
#[derive(Debug, Default)]
pub struct ControlBytes([[AtomicU64; 4]; ControlKind::ALL.len()]);

impl ControlBytes {
    fn slot(class: Class, sent: bool) -> usize {
        usize::from(class == Class::Wan) * 2 + usize::from(sent)
    }

    /// Counts `n` bytes of a `kind` message sent (or received) to a peer of `class`.
    pub fn add(&self, kind: ControlKind, class: Class, sent: bool, n: u64) {
        self.0[kind.index()][Self::slot(class, sent)].fetch_add(n, Ordering::Relaxed);
    }

    /// Bytes of `kind` messages sent (or received) with peers of `class`.
    pub fn get(&self, kind: ControlKind, class: Class, sent: bool) -> u64 {
        self.0[kind.index()][Self::slot(class, sent)].load(Ordering::Relaxed)
    }
}

impl Traffic {
    fn add_recv(&self, class: Class, n: u64) {
        match class {
            Class::Lan => self.recv_lan.fetch_add(n, Ordering::Relaxed),
            Class::Wan => self.recv_wan.fetch_add(n, Ordering::Relaxed),
        };
    }

    fn add_sent(&self, class: Class, n: u64) {
        match class {
            Class::Lan => self.sent_lan.fetch_add(n, Ordering::Relaxed),
            Class::Wan => self.sent_wan.fetch_add(n, Ordering::Relaxed),
        };
    }
}

/// Where a release stands on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReleaseState {
    /// Chunks are being fetched.
    Fetching,
    /// Waiting for the download window to open (what is verified stays).
    Paused,
    /// A newer version of the channel completed first; the fetch stopped (what was verified
    /// stays in the store for later versions to reuse).
    Superseded(u64),
    /// Every chunk is stored and the release is committed.
    Complete,
    /// The fetch stopped on an error (the message says which).
    Failed(String),
}

impl ReleaseState {
    /// The state as the API shows it.
    pub fn api(&self) -> api::FetchState {
        use api::FetchState;
        match self {
            Self::Fetching => FetchState::Fetching,
            Self::Paused => FetchState::Paused,
            Self::Superseded(_) => FetchState::Superseded,
            Self::Complete => FetchState::Complete,
            Self::Failed(_) => FetchState::Failed,
        }
    }
}

/// A release this node serves or fetches.
pub struct Release {
    /// Its id.
    pub id: ReleaseId,
    /// Channel.
    pub channel: String,
    /// Version.
    pub version: u64,
    /// Unique chunks in bitmap order.
    pub chunks: Vec<ChunkRef>,
    /// Encoded signed manifest, served to peers that ask.
    pub envelope: Vec<u8>,
    /// Chunks stored and readable (what bitmaps advertise).
    pub have: Mutex<Bitmap>,
    /// State.
    pub state: Mutex<ReleaseState>,
    /// Bytes of chunks received from same-site peers by this fetch.
    pub from_lan: AtomicU64,
    /// Bytes of chunks received from other sites by this fetch.
    pub from_wan: AtomicU64,
    /// Bytes of chunks the store already had when the fetch started (delta savings).
    pub reused: AtomicU64,
    /// When this node learned of it (verified), if in this run.
    pub started: Option<Instant>,
    /// When it completed, if in this run.
    pub finished: Mutex<Option<Instant>>,
    /// Severity, score and age, for ordering and the emergency policy.
    pub urgency: scheduler::priority::Urgency,
    /// The release's own windows, read in the node's zone where they name none; `Err`: they
    /// could not be read (the release then never downloads or installs outside an emergency).
    pub windows: Result<ReleaseWindows, String>,
    /// Node and release download windows together.
    pub(crate) download_gate: WindowGate,
    /// Node and release install windows together.
    pub(crate) install_gate: WindowGate,
    /// (time, bytes received) samples for the rate.
    samples: Mutex<VecDeque<(Instant, u64)>>,
    /// Initial seeding, for a release this node published: see [`Seeding`].
    seeding: Option<Mutex<Seeding>>,
}

/// Initial seeding of a release this node published ([`scheduler::seeding`]): each other site
/// is shown only its share until every chunk has crossed the WAN once.
#[derive(Debug)]
struct Seeding {
    index: HashMap<protocol::ChunkId, u32>,
    state: scheduler::seeding::Seeding,
    epoch: Instant,
}

impl Seeding {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }
}

/// A release's own download and install windows.
#[derive(Debug, Clone, Default)]
pub struct ReleaseWindows {
    /// When it may download (besides the node's windows); empty: no restriction.
    pub download: Vec<Window>,
    /// When it may be installed (besides the node's windows); empty: no restriction.
    pub install: Vec<Window>,
}

impl ReleaseWindows {
    /// Reads the windows of `m`; those without a zone are read in `zone`.
    pub fn of(m: &Manifest, zone: &jiff::tz::TimeZone) -> Result<Self, String> {
        let read = |kind: &str, list: &[protocol::ReleaseWindow]| {
            list.iter()
                .map(|w| Window::from_release(w, zone).map_err(|e| format!("{kind} window: {e}")))
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(Self {
            download: read("download", &m.download_windows)?,
            install: read("install", &m.install_windows)?,
        })
    }
}

impl Release {
    fn new(
        verified: &VerifiedRelease,
        have: Bitmap,
        state: ReleaseState,
        started: bool,
        zone: &jiff::tz::TimeZone,
    ) -> Self {
        let m: &Manifest = &verified.manifest;
        Self {
            id: verified.id,
            channel: m.channel.clone(),
            version: m.version,
            chunks: m.unique_chunks(),
            envelope: verified.envelope.encode(),
            have: Mutex::new(have),
            state: Mutex::new(state),
            from_lan: AtomicU64::new(0),
            from_wan: AtomicU64::new(0),
            reused: AtomicU64::new(0),
            started: started.then(Instant::now),
            finished: Mutex::new(None),
            urgency: scheduler::priority::Urgency {
                severity: m.severity,
                cvss: m.cvss,
                emergency: m.emergency,
                created_unix_s: m.created_unix_s,
                tie: u64::from_le_bytes(verified.id.as_bytes()[..8].try_into().expect("8 bytes")),
            },
            windows: ReleaseWindows::of(m, zone),
            download_gate: WindowGate::default(),
            install_gate: WindowGate::default(),
            samples: Mutex::new(VecDeque::new()),
            seeding: None,
        }
    }

    fn with_seeding(mut self) -> Self {
        let n = self.chunks.len() as u32;
        self.seeding = Some(Mutex::new(Seeding {
            index: self
                .chunks
                .iter()
                .enumerate()
                .map(|(i, c)| (c.id, i as u32))
                .collect(),
            state: scheduler::seeding::Seeding::new(n, 0),
            epoch: Instant::now(),
        }));
        self
    }

    /// What a peer of `class` hears of this release first: a same-site peer its bitmap, a
    /// peer of another site an offer (it hears of chunks as it asks for them, see
    /// [`Net::on_want`]).
    fn first_message(&self, class: Class, slot: protocol::wire::Slot) -> Control {
        let have = lock(&self.have);
        match class {
            Class::Lan => Control::Bitmap {
                release: self.id,
                slot,
                chunk_count: have.len(),
                bits: have.as_bytes().to_vec(),
                reserve: false,
            },
            Class::Wan => Control::Offer {
                release: self.id,
                slot,
                chunk_count: have.len(),
                reserve: self.revealed() == Some(true),
            },
        }
    }

    /// Whether initial seeding is over, for a release this node published (`None`: it did
    /// not publish it).
    fn revealed(&self) -> Option<bool> {
        self.seeding.as_ref().map(|s| lock(s).state.revealed())
    }

    /// The chunks a peer of another site, of `site`, may hear of now (`None`: every chunk
    /// held): during initial seeding, only its site's share, given the sites of all
    /// connected WAN peers.
    fn visible_to(&self, site: &str, wan_sites: &[String]) -> Option<Bitmap> {
        if self.revealed() != Some(false) {
            return None;
        }
        use scheduler::seeding::{share_bitmap, shares, site_key};
        let keys: Vec<u64> = wan_sites.iter().map(|s| site_key(s)).collect();
        let me = wan_sites.iter().position(|s| s == site)?;
        let n = self.chunks.len() as u32;
        Some(share_bitmap(shares(&keys, &self.chunks).as_deref(), me, n))
    }

    /// Notes that `chunk` was sent across the WAN; true when initial seeding just ended.
    pub(crate) fn served_wan(&self, chunk: &protocol::ChunkId) -> bool {
        let Some(seeding) = &self.seeding else {
            return false;
        };
        let mut s = lock(seeding);
        let now = s.now_ms();
        match s.index.get(chunk).copied() {
            Some(i) => s.state.served(i, now),
            None => false,
        }
    }

    /// Ends initial seeding if it stalled; true if it just ended.
    fn seeding_stalled(&self) -> bool {
        let Some(seeding) = &self.seeding else {
            return false;
        };
        let mut s = lock(seeding);
        let now = s.now_ms();
        s.state.check_stall(now)
    }

    /// Where the release stands.
    pub fn state(&self) -> ReleaseState {
        lock(&self.state).clone()
    }

    /// Moves the release to `next`: the one writer of its state. A release that is complete,
    /// superseded or failed stays so (a fetch that ends late cannot undo a commit).
    pub(crate) fn set_state(&self, next: ReleaseState) {
        let mut state = lock(&self.state);
        let settled = matches!(
            *state,
            ReleaseState::Complete | ReleaseState::Superseded(_) | ReleaseState::Failed(_)
        );
        if settled && *state != next {
            tracing::debug!(release = %self.id, from = ?*state, to = ?next,
                "state change refused: the release is settled");
            return;
        }
        *state = next;
    }

    fn received(&self) -> u64 {
        self.from_lan.load(Ordering::Relaxed) + self.from_wan.load(Ordering::Relaxed)
    }

    fn sample_rate(&self) {
        let now = Instant::now();
        let mut s = lock(&self.samples);
        s.push_back((now, self.received()));
        while s.len() > 2 && now.duration_since(s[0].0) > Duration::from_secs(3) {
            s.pop_front();
        }
    }

    fn rate(&self) -> u64 {
        let s = lock(&self.samples);
        match (s.front(), s.back()) {
            (Some(a), Some(b)) if b.0 > a.0 => {
                ((b.1 - a.1) as f64 / b.0.duration_since(a.0).as_secs_f64()) as u64
            }
            _ => 0,
        }
    }

    /// The progress report for `p2pctl status`.
    pub fn progress(&self) -> ReleaseProgress {
        let have = lock(&self.have);
        let bytes_total: u64 = self.chunks.iter().map(|c| u64::from(c.len)).sum();
        let bytes_have: u64 = self
            .chunks
            .iter()
            .enumerate()
            .filter(|(i, _)| have.get(*i as u32))
            .map(|(_, c)| u64::from(c.len))
            .sum();
        let state = lock(&self.state).clone();
        let finished = *lock(&self.finished);
        ReleaseProgress {
            id: self.id.to_hex(),
            channel: self.channel.clone(),
            version: self.version,
            state: state.api(),
            error: match state {
                ReleaseState::Failed(e) => Some(e),
                _ => None,
            },
            chunks_have: have.count(),
            chunks_total: have.len(),
            bytes_have,
            bytes_total,
            bytes_from_lan: self.from_lan.load(Ordering::Relaxed),
            bytes_from_wan: self.from_wan.load(Ordering::Relaxed),
            bytes_reused: self.reused.load(Ordering::Relaxed),
            rate_bytes_per_s: if finished.is_some() { 0 } else { self.rate() },
            elapsed_s: self.started.map(|s| {
                finished
                    .unwrap_or_else(Instant::now)
                    .duration_since(s)
                    .as_secs_f64()
            }),
            download_opens: None,
            download_opens_unix_s: None,
            published_unix_s: self.urgency.created_unix_s,
            install: None,
        }
    }
}

/// A peer the control plane told us about: where to dial its data plane.
#[derive(Debug, Clone)]
pub struct KnownPeer {
    /// Its site.
    pub site: String,
    /// Data-plane address for same-site peers.
    pub lan: SocketAddr,
    /// Data-plane address for peers of other sites.
    pub wan: SocketAddr,
    /// Whether `lan` is the peer's own word (identify) or a same-site peer's: an address
    /// learned from another site (a summary's contact, a peer list of another site's
    /// members) is only its WAN address, and is never dialed, nor passed on, as a LAN one.
    pub lan_known: bool,
}

/// This node's identity and place.
#[derive(Debug, Clone)]
pub struct Local {
    /// libp2p peer id (same key as the node id).
    pub peer_id: PeerId,
    /// Node id.
    pub node_id: NodeId,
    /// Site.
    pub site: String,
    /// Region.
    pub region: String,
    /// Random per process start, sent in hellos (a restart is told from a duplicate).
    pub instance: u64,
}

/// The shared network state.
pub struct Net {
    /// Who this node is.
    pub local: Local,
    keypair: Keypair,
    /// The node key (signs site summaries when this node aggregates).
    pub(crate) signing: ed25519_dalek::SigningKey,
    config: NetworkSection,
    policy: TrustPolicy,
    store: Arc<Store>,
    endpoint: quinn::Endpoint,
    peers: Mutex<HashMap<PeerId, Arc<Peer>>>,
    dialing: Mutex<HashSet<PeerId>>,
    known: Mutex<HashMap<PeerId, KnownPeer>>,
    redials: Mutex<HashMap<PeerId, Instant>>,
    /// Strikes and bans ([`scheduler::strikes`]), on the clock of `epoch`.
    strikes: Mutex<scheduler::strikes::Strikes<PeerId>>,
    releases: RwLock<HashMap<ReleaseId, Arc<Release>>>,
    refused: Mutex<HashMap<ReleaseId, Refusal>>,
    learning: Mutex<HashSet<ReleaseId>>,
    /// The bootstrap peers (libp2p peer ids of `network.bootstrap`).
    bootstrap: Mutex<HashSet<PeerId>>,
    /// Per site, how many of its members this node knew when it last told that site's peers
    /// of them, and when ([`Net::share_members`]).
    shared: Mutex<HashMap<String, (usize, Option<Instant>)>>,
    /// The fleet's records and summaries, where those from peers are offered (set by the
    /// daemon).
    pub fleet: std::sync::OnceLock<Arc<store::fleet::Fleet>>,
    /// The site's aggregation and the WAN overlay.
    pub(crate) aggregate: aggregate::Aggregate,
    /// When this node started (the clock of the announcement batches).
    epoch: Instant,
    /// Woken when peers or their bitmaps change; fetchers re-plan.
    pub(crate) wake: Wake,
    /// Chunks a fetch of this node has asked for and not had back, and the release whose
    /// fetch asked: another fetch that needs the same chunk waits for it rather than ask
    /// again, so a chunk two releases share crosses the WAN once ([`Net::claims`]).
    claims: Mutex<Claims>,
    /// Chunks a fetch made durable, for the other fetches that need them too.
    pub(crate) stored: tokio::sync::broadcast::Sender<Arc<(ReleaseId, Vec<protocol::ChunkId>)>>,
    /// Signalled when a release completes (fetched or published); activation looks again.
    pub completed: Notify,
    /// Set when the daemon shuts down.
    pub shutdown: watch::Receiver<bool>,
    /// Chunk traffic of this node.
    pub traffic: Traffic,
    /// Bandwidth shapers per traffic class.
    pub shapers: shape::Shapers,
    /// Download and install windows, and the emergency policy.
    pub windows: scheduler::policy::Windows,
    /// Serving concurrency (reads from the store in flight).
    pub(crate) serve_slots: Arc<tokio::sync::Semaphore>,
    manifest_slots: Arc<tokio::sync::Semaphore>,
}

fn wan_sites(peers: &[Arc<Peer>]) -> Vec<String> {
    let mut sites: Vec<String> = peers
        .iter()
        .filter(|p| p.class == Class::Wan)
        .map(|p| p.site.clone())
        .collect();
    sites.sort();
    sites.dedup();
    sites
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Current unix time in seconds (0 before 1970).
pub fn now_unix_s() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

pub use config::parse_bootstrap;

/// The peer id of a node id (its ed25519 key), if the bytes are a valid key.
pub fn peer_id_of(node: &NodeId) -> Option<PeerId> {
    let key = libp2p::identity::ed25519::PublicKey::try_from_bytes(&node.0).ok()?;
    Some(libp2p::identity::PublicKey::from(key).to_peer_id())
}

/// The node id (ed25519 key bytes) a peer id carries.
pub fn node_id_of(peer: &PeerId) -> Option<[u8; 32]> {
    let mh = multihash_digest(peer)?;
    let key = libp2p::identity::PublicKey::try_decode_protobuf(&mh).ok()?;
    Some(key.try_into_ed25519().ok()?.to_bytes())
}

fn multihash_digest(peer: &PeerId) -> Option<Vec<u8>> {
    // An ed25519 peer id is the identity multihash of the protobuf-encoded key:
    // 0x00 (identity), varint length, key.
    let bytes = peer.to_bytes();
    if bytes.first() != Some(&0x00) {
        return None;
    }
    let len = *bytes.get(1)? as usize;
    let digest = bytes.get(2..)?;
    (digest.len() == len).then(|| digest.to_vec())
}

/// The libp2p keypair of a node key.
pub fn keypair_of(key: &ed25519_dalek::SigningKey) -> Keypair {
    Keypair::ed25519_from_bytes(key.to_bytes()).expect("32 bytes are a valid ed25519 secret")
}

impl Net {
    /// Binds the data plane and loads what the store holds. The swarm is started separately
    /// ([`swarm::spawn`]) with the receiving end of `swarm`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        key: &ed25519_dalek::SigningKey,
        site: String,
        region: String,
        config: NetworkSection,
        schedules: scheduler::policy::RateSchedules,
        windows: scheduler::policy::Windows,
        policy: TrustPolicy,
        store: Arc<Store>,
        shutdown: watch::Receiver<bool>,
    ) -> anyhow::Result<Arc<Self>> {
        let keypair = keypair_of(key);
        let endpoint = quic::endpoint(&keypair, &key.to_bytes(), config.data_listen)?;
        let local = Local {
            peer_id: keypair.public().to_peer_id(),
            node_id: NodeId(key.verifying_key().to_bytes()),
            site,
            region,
            instance: {
                let mut b = [0u8; 8];
                getrandom::fill(&mut b).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
                u64::from_le_bytes(b)
            },
        };
        let net = Arc::new(Self {
            local,
            keypair,
            signing: key.clone(),
            config,
            policy,
            store,
            endpoint,
            peers: Mutex::new(HashMap::new()),
            dialing: Mutex::new(HashSet::new()),
            known: Mutex::new(HashMap::new()),
            redials: Mutex::new(HashMap::new()),
            strikes: Mutex::new(scheduler::strikes::Strikes::default()),
            releases: RwLock::new(HashMap::new()),
            refused: Mutex::new(HashMap::new()),
            learning: Mutex::new(HashSet::new()),
            bootstrap: Mutex::new(HashSet::new()),
            shared: Mutex::new(HashMap::new()),
            fleet: std::sync::OnceLock::new(),
            aggregate: aggregate::Aggregate::default(),
            epoch: Instant::now(),
            wake: Wake::new(),
            claims: Mutex::new(Claims::default()),
            stored: tokio::sync::broadcast::channel(STORED_NOTICES_MAX).0,
            completed: Notify::new(),
            shutdown,
            traffic: Traffic::default(),
            shapers: shape::Shapers::new(schedules),
            windows,
            serve_slots: Arc::new(tokio::sync::Semaphore::new(peer::SERVE_CONCURRENCY_MAX)),
            manifest_slots: Arc::new(tokio::sync::Semaphore::new(MANIFEST_FETCHES_MAX)),
        });
        Ok(net)
    }

    /// Whether this node aggregates its site's status, and its rank among the site's
    /// aggregators (0 first).
    pub fn aggregator_rank(&self) -> Option<usize> {
        self.aggregate.rank()
    }

    /// The data plane's bound address.
    pub fn data_addr(&self) -> SocketAddr {
        self.endpoint
            .local_addr()
            .unwrap_or(self.config.data_listen)
    }

    /// The network config.
    pub fn config(&self) -> &NetworkSection {
        &self.config
    }

    /// The node's libp2p keypair.
    pub fn keypair(&self) -> &Keypair {
        &self.keypair
    }

    /// Loads committed releases (served) and resumes pending ones (fetched). Call once after
    /// [`Self::new`], inside the runtime.
    pub async fn start(self: &Arc<Self>) -> anyhow::Result<()> {
        let store = self.store.clone();
        let policy = self.policy.clone();
        let (committed, pending) = tokio::task::spawn_blocking(move || {
            let mut committed = Vec::new();
            for summary in store.releases()?.into_iter().take(SERVED_RELEASES_MAX) {
                if let Some(bytes) = store.signed_manifest(&summary.id)? {
                    match protocol::envelope::verify_signed(&bytes, &policy) {
                        Ok(v) => committed.push(v),
                        Err(e) => tracing::warn!(release = %summary.id, error = %e,
                            "stored release no longer verifies under the trust policy; not serving it"),
                    }
                }
            }
            let pending = store.pending()?;
            anyhow::Ok((committed, pending))
        })
        .await??;
        for v in committed {
            let n = v.manifest.unique_chunks().len() as u32;
            let release = Release::new(
                &v,
                Bitmap::full(n),
                ReleaseState::Complete,
                false,
                &self.windows.zone,
            );
            self.insert_release(Arc::new(release));
        }
        for (id, bytes) in pending {
            let verified = protocol::envelope::verify_signed(&bytes, &self.policy).and_then(|v| {
                let highest = self
                    .store
                    .highest_version(&v.manifest.channel)
                    .ok()
                    .flatten();
                v.check_fresh(now_unix_s(), highest).map(|()| v)
            });
            match verified {
                Ok(v) if v.id == id => {
                    tracing::info!(release = %id, channel = %v.manifest.channel,
                        version = v.manifest.version, "resuming fetch");
                    self.begin_fetch(v).await?;
                }
                Ok(_) => {
                    self.store.remove_pending(&id)?;
                }
                Err(e) => {
                    tracing::warn!(release = %id, error = %e, "dropping unfinished fetch");
                    self.store.remove_pending(&id)?;
                }
            }
        }
        let net = self.clone();
        tokio::spawn(async move { peer::accept_loop(net).await });
        let net = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(WAN_FLUSH_TICK);
            loop {
                tick.tick().await;
                match net.upgrade() {
                    Some(net) => {
                        for p in net.peer_list().iter().filter(|p| p.class == Class::Wan) {
                            net.flush_wan(p);
                        }
                    }
                    None => return,
                }
            }
        });
        let net = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                match net.upgrade() {
                    Some(net) => {
                        net.check_seeding();
                        net.reconcile();
                    }
                    None => return,
                }
            }
        });
        Ok(())
    }

    fn insert_release(&self, release: Arc<Release>) {
        {
            let mut releases = self.releases.write().unwrap_or_else(|e| e.into_inner());
            releases.insert(release.id, release.clone());
            if releases.len() > SERVED_RELEASES_MAX {
                // Forget the oldest complete release (by version order within insertion).
                if let Some(old) = releases
                    .values()
                    .filter(|r| *lock(&r.state) == ReleaseState::Complete)
                    .min_by_key(|r| r.version)
                    .map(|r| r.id)
                {
                    releases.remove(&old);
                }
            }
        }
        self.send_bitmaps(&release);
    }

    /// Tells every peer of `release`: same-site peers its bitmap, peers of other sites an
    /// offer (again, after seeding, with the reserve flag, and the chunks they want that
    /// they could not see during it).
    pub(crate) fn send_bitmaps(&self, release: &Release) {
        for p in self.peer_list() {
            self.tell(&p, release);
        }
    }

    fn tell(&self, p: &Peer, release: &Release) {
        p.send_control(release.first_message(p.class, p.slot_for(release.id)));
        if p.class == Class::Wan {
            // What it asked for before (before this node knew the release, or before seeding
            // ended) and this node can show it now; chunks told before are skipped.
            let visible = release.visible_to(&p.site, &self.wan_sites_with(&p.site));
            let have = lock(&release.have).clone();
            p.wan_release(release.id, |out| out.queue_wanted(&have, visible.as_ref()));
            self.flush_wan(p);
        }
    }

    /// The sites of the connected peers of other sites, and `site`, sorted.
    fn wan_sites_with(&self, site: &str) -> Vec<String> {
        let mut sites = wan_sites(&self.peer_list());
        if !sites.iter().any(|s| s == site) {
            sites.push(site.to_string());
            sites.sort();
        }
        sites
    }

    /// What a newly connected peer hears first: every release's bitmap, or offer.
    pub(crate) fn greet(&self, p: &Peer) {
        for r in self.releases() {
            self.tell(p, &r);
        }
    }

    /// A peer of another site said which chunks of `release` it wants: it is told those this
    /// node holds (and may show it) now, and the rest as they come.
    pub(crate) fn on_want(&self, p: &Peer, release: ReleaseId, gaps: &[u32]) {
        let more: Vec<u32> = protocol::wire::want_indices(gaps).collect();
        let r = self.release(&release);
        let visible = r
            .as_ref()
            .and_then(|r| r.visible_to(&p.site, &self.wan_sites_with(&p.site)));
        let have = r.as_ref().map(|r| lock(&r.have).clone());
        p.wan_release(release, |out| {
            if more.is_empty() {
                // It needs nothing more.
                out.want.clear();
                out.batch = Default::default();
                return;
            }
            out.want.extend(more);
            out.want.sort_unstable();
            out.want.dedup();
            out.want
                .truncate(protocol::manifest::CHUNKS_PER_RELEASE_MAX);
            if let Some(have) = &have {
                out.queue_wanted(have, visible.as_ref());
            }
        });
        self.flush_wan(p);
    }

    /// Chunks of `release` this node now holds durably: queued for the peers of other sites
    /// that want them.
    pub(crate) fn queue_wan_haves(&self, release: &Release, indices: &[u32]) {
        for p in self.peer_list().iter().filter(|p| p.class == Class::Wan) {
            p.wan_release(release.id, |out| {
                let wanted = indices
                    .iter()
                    .copied()
                    .filter(|i| out.want.binary_search(i).is_ok() && !out.told.get(*i));
                let wanted: Vec<u32> = wanted.collect();
                out.batch.extend(wanted);
            });
        }
    }

    /// Sends `p` the announcements that are due.
    fn flush_wan(&self, p: &Peer) {
        let now = self.epoch.elapsed().as_millis() as u64;
        for (release, indices) in p.due_haves(now) {
            p.send_have(release, &indices);
        }
    }

    /// Notes a chunk sent across the WAN (ends initial seeding when all were).
    pub(crate) fn note_served_wan(&self, chunk: &protocol::ChunkId) {
        let seeding: Vec<Arc<Release>> = self
            .releases
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|r| r.seeding.is_some())
            .cloned()
            .collect();
        for r in seeding {
            if r.served_wan(chunk) {
                tracing::info!(release = %r.id, "every chunk has left this node once; offering every chunk to every site");
                self.send_bitmaps(&r);
            }
        }
    }

    /// Ends stalled initial seeding (called every second).
    fn check_seeding(&self) {
        for r in self.releases() {
            if r.seeding_stalled() {
                tracing::info!(release = %r.id, "initial seeding stalled; offering every chunk to every site");
                self.send_bitmaps(&r);
            }
        }
    }

    /// A release this node serves or fetches.
    pub fn release(&self, id: &ReleaseId) -> Option<Arc<Release>> {
        self.releases
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }

    /// All releases this node serves or fetches.
    pub fn releases(&self) -> Vec<Arc<Release>> {
        let mut v: Vec<_> = self
            .releases
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        v.sort_by(|a, b| a.channel.cmp(&b.channel).then(b.version.cmp(&a.version)));
        v
    }

    /// Connected peers.
    pub fn peer_list(&self) -> Vec<Arc<Peer>> {
        lock(&self.peers).values().cloned().collect()
    }

    /// The peers report for `p2pctl peers`.
    pub fn peer_views(&self) -> Vec<ApiPeer> {
        let mut v: Vec<ApiPeer> = self.peer_list().iter().map(|p| p.view()).collect();
        v.sort_by(|a, b| a.site.cmp(&b.site).then(a.peer_id.cmp(&b.peer_id)));
        v
    }

    /// A release the local operator just published: serve it, announce it, provide it.
    pub fn published(&self, verified: &VerifiedRelease) {
        let n = verified.manifest.unique_chunks().len() as u32;
        let release = Release::new(
            verified,
            Bitmap::full(n),
            ReleaseState::Complete,
            false,
            &self.windows.zone,
        )
        .with_seeding();
        // Every connected peer hears of it through its bitmap (`insert_release`).
        self.insert_release(Arc::new(release));
        self.completed.notify_one();
    }

    /// The control plane identified a p2pd peer.
    pub fn on_identified(self: &Arc<Self>, peer: PeerId, known: KnownPeer) {
        self.learn_peer(peer, known.clone(), true);
        if self.wanted(&peer, &known) {
            self.maybe_dial(peer, known);
        }
    }

    /// Remembers where `peer` is (bounded by [`KNOWN_PEERS_MAX`]). What the peer said of
    /// itself (identify, `own`) replaces what others said of it; what others said (peer
    /// lists, summaries' contacts) only fills a gap.
    pub(crate) fn learn_peer(&self, peer: PeerId, known: KnownPeer, own: bool) {
        if peer == self.local.peer_id {
            return;
        }
        let mut k = lock(&self.known);
        if let Some(held) = k.get(&peer) {
            // A same-site peer's word on its LAN address beats a contact's WAN one.
            if own || (known.lan_known && !held.lan_known) {
                k.insert(peer, known);
            }
        } else if k.len() < KNOWN_PEERS_MAX {
            k.insert(peer, known);
        }
    }

    /// Peers a peer told us of ([`Control::Peers`]).
    pub(crate) fn on_peers(self: &Arc<Self>, list: Vec<PeerEntry>) {
        for e in list {
            let Some(peer) = peer_id_of(&e.node) else {
                continue;
            };
            self.learn_peer(
                peer,
                KnownPeer {
                    // Members of this site are vouched for by the peer that names them (it
                    // lists only those it knows the LAN address of).
                    lan_known: e.site == self.local.site,
                    site: e.site,
                    lan: e.lan,
                    wan: e.wan,
                },
                false,
            );
        }
    }

    /// What this node tells a newly connected peer of `site` about other peers: the members
    /// of that site it knows, and a few peers of other sites it could pick across the WAN.
    pub(crate) fn peers_for(&self, site: &str) -> Vec<PeerEntry> {
        let known = lock(&self.known);
        let entry = |p: &PeerId, k: &KnownPeer| {
            node_id_of(p).map(|n| PeerEntry {
                node: NodeId(n),
                site: k.site.clone(),
                lan: k.lan,
                wan: k.wan,
            })
        };
        let mut out: Vec<PeerEntry> = Vec::new();
        // The members of its site: without mDNS, same-site peers find each other through
        // anyone who knows them (a bootstrap node knows every node that joined through it).
        let own_max = protocol::wire::PEERS_PER_MESSAGE_MAX - PEX_OTHERS_MAX;
        for (p, k) in known.iter() {
            if k.site == site && k.lan_known && out.len() < own_max {
                out.extend(entry(p, k));
            }
        }
        // Others: a sample by rendezvous, so that every asker gets different ones.
        let others: Vec<(&PeerId, &KnownPeer)> =
            known.iter().filter(|(_, k)| k.site != site).collect();
        let mut ranked: Vec<(u64, &PeerId, &KnownPeer)> = others
            .into_iter()
            .map(|(p, k)| {
                let w = node_id_of(p).map_or(0, |n| {
                    scheduler::planner::mix(
                        u64::from_le_bytes(n[..8].try_into().expect("8 bytes"))
                            ^ scheduler::control::site_key(site),
                    )
                });
                (w, p, k)
            })
            .collect();
        ranked.sort_unstable_by_key(|r| std::cmp::Reverse(r.0));
        for (_, p, k) in ranked.into_iter().take(PEX_OTHERS_MAX) {
            out.extend(entry(p, k));
        }
        out
    }

    /// Tells the connected peers of each site of the members of that site this node came to
    /// know since it last did (at most every [`PEX_INTERVAL`] per site): peer lists are
    /// sent when a connection opens, and two members that joined at the same instant could
    /// otherwise each miss the other. Quiet once the sites' membership settles.
    fn share_members(&self) {
        let mut counts: HashMap<String, usize> = HashMap::new();
        for k in lock(&self.known).values().filter(|k| k.lan_known) {
            *counts.entry(k.site.clone()).or_default() += 1;
        }
        let peers = self.peer_list();
        let mut shared = lock(&self.shared);
        let now = Instant::now();
        for (site, n) in counts {
            let (told, at) = shared.get(&site).copied().unwrap_or((0, None));
            if n <= told || at.is_some_and(|t| now.duration_since(t) < PEX_INTERVAL) {
                continue;
            }
            let targets: Vec<&Arc<Peer>> = peers.iter().filter(|p| p.site == site).collect();
            if targets.is_empty() {
                continue;
            }
            let list = self.peers_for(&site);
            for p in targets {
                p.send_control(Control::Peers(list.clone()));
            }
            if shared.len() >= KNOWN_PEERS_MAX && !shared.contains_key(&site) {
                shared.clear();
            }
            shared.insert(site, (n, Some(now)));
        }
    }

    /// Notes the bootstrap peers (dialed by the swarm, connected to on the data plane).
    pub fn set_bootstrap(&self, peers: Vec<PeerId>) {
        *lock(&self.bootstrap) = peers.into_iter().collect();
    }

    /// Whether some bootstrap peer (or none is configured) has a data-plane connection.
    pub fn bootstrap_connected(&self) -> bool {
        let b = lock(&self.bootstrap).clone();
        let peers = lock(&self.peers);
        b.is_empty() || b.iter().any(|p| peers.contains_key(p))
    }

    /// Whether `peer` has a data-plane connection.
    pub fn is_connected(&self, peer: &PeerId) -> bool {
        lock(&self.peers).contains_key(peer)
    }

    /// Whether this node wants a data-plane connection to `peer`: same site, bootstrap, or
    /// among its picks of other sites' peers.
    fn wanted(&self, peer: &PeerId, known: &KnownPeer) -> bool {
        known.site == self.local.site
            || lock(&self.bootstrap).contains(peer)
            || self.wan_picks().contains(peer)
            || self.aggregate.wants(peer)
    }

    /// The peers of other sites this node dials for chunks: [`NetworkSection::wan_peers`] of
    /// those it knows, by rendezvous hashing ([`scheduler::control::pick_across_sites`]).
    pub(crate) fn wan_picks(&self) -> Vec<PeerId> {
        // One lock at a time: the aggregator's round takes them in another order.
        let bootstrap = lock(&self.bootstrap).clone();
        let known = lock(&self.known);
        let list: Vec<(PeerId, scheduler::control::Candidate)> = known
            .iter()
            .filter(|(p, k)| k.site != self.local.site && !bootstrap.contains(*p))
            .filter_map(|(p, k)| {
                Some((
                    *p,
                    scheduler::control::Candidate {
                        node: node_id_of(p)?,
                        site: scheduler::control::site_key(&k.site),
                    },
                ))
            })
            .collect();
        let candidates: Vec<scheduler::control::Candidate> = list.iter().map(|(_, c)| *c).collect();
        scheduler::control::pick_across_sites(
            &self.local.node_id.0,
            scheduler::control::site_key(&self.local.site),
            &candidates,
            self.config.wan_peers,
        )
        .into_iter()
        .map(|i| list[i].0)
        .collect()
    }

    /// Where `peer` is, if known.
    pub(crate) fn known(&self, peer: &PeerId) -> Option<KnownPeer> {
        lock(&self.known).get(peer).cloned()
    }

    fn maybe_dial(self: &Arc<Self>, peer: PeerId, known: KnownPeer) {
        // One connection per pair: the smaller peer id dials at once, the larger only if no
        // connection came after DIAL_FALLBACK (the smaller may not know it, or be stuck).
        if self.local.peer_id > peer {
            let net = self.clone();
            tokio::spawn(async move {
                tokio::time::sleep(DIAL_FALLBACK).await;
                if !lock(&net.peers).contains_key(&peer) {
                    net.dial_now(peer, known);
                }
            });
            return;
        }
        self.dial_now(peer, known);
    }

    /// Redials known peers that have no data-plane connection (a peer restarted, a
    /// duplicate was refused, a dial failed), at most every [`REDIAL_INTERVAL`] each.
    fn reconcile(self: &Arc<Self>) {
        self.share_members();
        let known: Vec<(PeerId, KnownPeer)> = lock(&self.known)
            .iter()
            .map(|(p, k)| (*p, k.clone()))
            .collect();
        let connected: HashSet<PeerId> = lock(&self.peers).keys().copied().collect();
        let now = Instant::now();
        let picks: HashSet<PeerId> = self.wan_picks().into_iter().collect();
        let bootstrap = lock(&self.bootstrap).clone();
        for (peer, k) in known {
            if connected.contains(&peer) {
                continue;
            }
            let wanted = k.site == self.local.site
                || bootstrap.contains(&peer)
                || picks.contains(&peer)
                || self.aggregate.wants(&peer);
            if !wanted {
                continue;
            }
            let due = {
                let mut attempts = lock(&self.redials);
                match attempts.get(&peer) {
                    Some(t) if now.duration_since(*t) < REDIAL_INTERVAL => false,
                    _ => {
                        attempts.insert(peer, now);
                        true
                    }
                }
            };
            if due {
                self.dial_now(peer, k);
            }
        }
    }

    fn dial_now(self: &Arc<Self>, peer: PeerId, known: KnownPeer) {
        if self.local.peer_id == peer || self.is_banned(&peer) {
            return;
        }
        if lock(&self.peers).contains_key(&peer) {
            return;
        }
        if lock(&self.peers).len() >= self.config.max_peers {
            tracing::debug!(%peer, "at max_peers; not connecting");
            return;
        }
        if !lock(&self.dialing).insert(peer) {
            return;
        }
        let addr = if known.site == self.local.site {
            if !known.lan_known {
                return;
            }
            known.lan
        } else {
            known.wan
        };
        let net = self.clone();
        tokio::spawn(async move {
            if let Err(e) = peer::dial(&net, peer, addr).await {
                tracing::debug!(%peer, %addr, error = %e, "data-plane dial failed");
            }
            lock(&net.dialing).remove(&peer);
        });
    }

    fn refuse(&self, id: ReleaseId, reason: String, facts: Option<RefusedFacts>) {
        let mut refused = lock(&self.refused);
        if refused.len() >= REFUSED_MAX {
            let now = Instant::now();
            refused.retain(|_, r| r.is_live(now));
            if refused.len() >= REFUSED_MAX {
                refused.clear();
            }
        }
        refused.insert(
            id,
            Refusal {
                at: Instant::now(),
                reason,
                facts,
            },
        );
    }

    fn is_refused(&self, id: &ReleaseId) -> bool {
        lock(&self.refused)
            .get(id)
            .is_some_and(|r| r.is_live(Instant::now()))
    }

    /// Whether `release` may download now: an emergency under the node's policy, or inside
    /// both the node's download windows and the release's own.
    pub fn download_allowed(&self, release: &Release) -> bool {
        self.windows.policy.is_emergency(&release.urgency)
            || matches!(
                self.download_state(release, jiff::Timestamp::now()),
                WindowState::Open { .. }
            )
    }

    /// The node's download windows and `release`'s own, together, at `now` (emergencies
    /// aside). A release whose windows could not be read never downloads outside one.
    pub(crate) fn download_state(&self, release: &Release, now: jiff::Timestamp) -> WindowState {
        match &release.windows {
            Ok(own) => release
                .download_gate
                .state(&[&self.windows.download, &own.download], now),
            Err(_) => WindowState::Closed { opens: None },
        }
    }

    /// The node's install windows and `release`'s own, together, at `now`. A release whose
    /// windows could not be read is never installed.
    pub fn install_state(&self, release: &Release, now: jiff::Timestamp) -> WindowState {
        match &release.windows {
            Ok(own) => release
                .install_gate
                .state(&[&self.windows.install, &own.install], now),
            Err(_) => WindowState::Closed { opens: None },
        }
    }

    /// The version of a newer complete release of `release`'s channel, if one exists: the
    /// node can never commit `release` then (versions only go up).
    pub fn newer_complete(&self, release: &Release) -> Option<u64> {
        self.releases()
            .iter()
            .filter(|r| r.channel == release.channel && r.version > release.version)
            .filter(|r| *lock(&r.state) == ReleaseState::Complete)
            .map(|r| r.version)
            .max()
    }

    /// Urgencies of the other fetches running now (not paused, not done).
    pub(crate) fn running_fetches_except(
        &self,
        id: &ReleaseId,
    ) -> Vec<scheduler::priority::Urgency> {
        self.releases()
            .iter()
            .filter(|r| r.id != *id && *lock(&r.state) == ReleaseState::Fetching)
            .map(|r| r.urgency)
            .collect()
    }

    /// When `release` may next download, if it may not now (`None`: now, or never found).
    pub fn download_opens(&self, release: &Release) -> Option<jiff::Timestamp> {
        match self.download_state(release, jiff::Timestamp::now()) {
            WindowState::Closed { opens } => opens,
            WindowState::Open { .. } => None,
        }
    }

    /// Releases refused in the last [`REFUSED_TTL`], newest first, with the reason.
    pub fn refused(&self) -> Vec<Refused> {
        let mut list: Vec<_> = lock(&self.refused)
            .iter()
            .filter(|(_, r)| r.is_live(Instant::now()))
            .map(|(id, r)| {
                (
                    r.at,
                    Refused {
                        id: *id,
                        reason: r.reason.clone(),
                        facts: r.facts.clone(),
                    },
                )
            })
            .collect();
        list.sort_by_key(|r| std::cmp::Reverse(r.0));
        list.into_iter().map(|(_, r)| r).collect()
    }

    /// Fetches, verifies and starts fetching release `id`, unless known, refused or in
    /// progress. `hint` is a peer believed to have its manifest.
    pub(crate) fn learn_release(self: &Arc<Self>, id: ReleaseId, hint: Option<PeerId>) {
        if self.release(&id).is_some() || self.is_refused(&id) {
            return;
        }
        if !lock(&self.learning).insert(id) {
            return;
        }
        let net = self.clone();
        tokio::spawn(async move {
            let result = net.fetch_manifest(id, hint).await;
            match result {
                Ok(Some(v)) => {
                    if let Err(e) = net.begin_fetch(v).await {
                        tracing::error!(release = %id, error = %e, "cannot start fetch");
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    let facts = e.downcast_ref::<NotFollowed>().map(|n| n.0.clone());
                    match &facts {
                        Some(_) => {
                            tracing::info!(release = %id, error = %e, "not fetching release")
                        }
                        None => tracing::warn!(release = %id, error = %e, "refusing release"),
                    }
                    net.refuse(id, format!("{e:#}"), facts);
                }
            }
            lock(&net.learning).remove(&id);
        });
    }

    /// Gets the manifest of `id` from a peer and runs the full verification gate.
    /// `Ok(None)`: nobody could serve it (yet).
    async fn fetch_manifest(
        self: &Arc<Self>,
        id: ReleaseId,
        hint: Option<PeerId>,
    ) -> anyhow::Result<Option<VerifiedRelease>> {
        let _slot = self.manifest_slots.clone().acquire_owned().await?;
        if self.store.has_release(&id)? {
            return Ok(None);
        }
        // The hinted peer is asked first; while no copy has come, one more peer is asked
        // every MANIFEST_HEDGE, and the first good copy wins. A copy that fails the gate is
        // set aside while another peer may have a good one. So one hostile peer can neither
        // stall nor poison learning a release.
        let deadline = Instant::now() + MANIFEST_PATIENCE;
        let mut asked: HashSet<PeerId> = HashSet::new();
        let mut pending = futures_util::stream::FuturesUnordered::new();
        let mut refusal: Option<anyhow::Error> = None;
        let mut hedge = Instant::now();
        loop {
            let now = Instant::now();
            let next = (pending.is_empty() || now >= hedge)
                .then(|| self.manifest_candidates(id, hint))
                .and_then(|c| c.into_iter().find(|p| !asked.contains(&p.id)));
            if let Some(p) = next {
                asked.insert(p.id);
                hedge = now + MANIFEST_HEDGE;
                pending.push(async move {
                    let answer = p.request_manifest(id).await;
                    (p.id, answer)
                });
            }
            if pending.is_empty() {
                if now >= deadline || refusal.is_some() {
                    return refusal.map_or(Ok(None), Err);
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
                continue;
            }
            tokio::select! {
                Some((peer, answer)) = futures_util::StreamExt::next(&mut pending) => {
                    match answer.map(|bytes| self.verify_manifest(id, &bytes)) {
                        Ok(Ok(v)) => return Ok(Some(v)),
                        Ok(Err(e)) => {
                            tracing::debug!(release = %id, %peer, error = %e,
                                "manifest copy refused; asking another peer");
                            refusal = Some(e);
                        }
                        Err(e) => {
                            // It may answer later (not up yet): it can be asked again.
                            tracing::debug!(release = %id, %peer, error = %e,
                                "manifest request failed");
                            asked.remove(&peer);
                        }
                    }
                }
                () = tokio::time::sleep_until(hedge.into()) => {}
            }
        }
    }

    /// Who may serve the manifest of `id`: the hinted peer first, then every connected peer
    /// that announced the release.
    fn manifest_candidates(&self, id: ReleaseId, hint: Option<PeerId>) -> Vec<Arc<Peer>> {
        let mut candidates: Vec<Arc<Peer>> = Vec::new();
        if let Some(h) = hint.and_then(|h| lock(&self.peers).get(&h).cloned()) {
            candidates.push(h);
        }
        for p in self.peer_list() {
            if p.has_bitmap(&id) && !candidates.iter().any(|c| c.id == p.id) {
                candidates.push(p);
            }
        }
        candidates
    }

    fn verify_manifest(&self, id: ReleaseId, bytes: &[u8]) -> anyhow::Result<VerifiedRelease> {
        let store = &self.store;
        let v = protocol::verify_release(bytes, &self.policy, now_unix_s(), |channel| {
            store.highest_version(channel).ok().flatten()
        })?;
        if v.id != id {
            anyhow::bail!("the manifest served for {id} is release {}", v.id);
        }
        if !self.config.follows(&v.manifest.channel) {
            let m = &v.manifest;
            return Err(NotFollowed(RefusedFacts {
                channel: m.channel.clone(),
                version: m.version,
                published_unix_s: m.created_unix_s,
                chunks_total: m.unique_chunks().len() as u32,
            })
            .into());
        }
        ReleaseWindows::of(&v.manifest, &self.windows.zone).map_err(anyhow::Error::msg)?;
        Ok(v)
    }

    async fn begin_fetch(self: &Arc<Self>, v: VerifiedRelease) -> anyhow::Result<()> {
        let store = self.store.clone();
        let v2 = v.clone();
        let (have, already) = tokio::task::spawn_blocking(move || {
            store.add_pending(&v2)?;
            store.append_audit(store::audit::AuditEvent::announced(&v2))?;
            let chunks = v2.manifest.unique_chunks();
            let have = store.have_bitmap(&chunks)?;
            let already: u64 = chunks
                .iter()
                .enumerate()
                .filter(|(i, _)| have.get(*i as u32))
                .map(|(_, c)| u64::from(c.len))
                .sum();
            anyhow::Ok((have, already))
        })
        .await??;
        tracing::info!(release = %v.id, channel = %v.manifest.channel, version = v.manifest.version,
            chunks = have.len(), already_have = have.count(), "fetching release");
        let release = Arc::new(Release::new(
            &v,
            have,
            ReleaseState::Fetching,
            true,
            &self.windows.zone,
        ));
        release.reused.store(already, Ordering::Relaxed);
        self.insert_release(release.clone());
        let net = self.clone();
        tokio::spawn(async move { fetch::run(net, release, v).await });
        Ok(())
    }

    /// The status records of every member of `site`: this site's from the fleet table,
    /// another's asked from a connected peer of that site or from a contact its summary
    /// names (dialed if need be). Every record is verified and must be of that site.
    pub async fn site_records(
        self: &Arc<Self>,
        site: &str,
    ) -> Result<Vec<protocol::status::StatusBody>, String> {
        let fleet = self
            .fleet
            .get()
            .ok_or_else(|| "the fleet table is not up yet".to_string())?;
        if site == self.local.site {
            return Ok(fleet.own_records());
        }
        let mut peer = self.peer_list().into_iter().find(|p| p.site == site);
        if peer.is_none() {
            let contacts: Vec<_> = fleet
                .contacts()
                .into_iter()
                .filter(|(s, _)| s == site)
                .map(|(_, c)| c)
                .collect();
            if contacts.is_empty() {
                return Err(format!(
                    "no summary of site {site} is held here, so no member of it is known"
                ));
            }
            for c in contacts {
                let Some(id) = peer_id_of(&c.node) else {
                    continue;
                };
                match tokio::time::timeout(SITE_QUERY_TIMEOUT, peer::dial(self, id, c.wan)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::debug!(%id, error = %e, "contact not reached"),
                    Err(_) => tracing::debug!(%id, "contact not reached in time"),
                }
                peer = lock(&self.peers).get(&id).cloned();
                if peer.is_some() {
                    break;
                }
            }
        }
        let peer = peer.ok_or_else(|| format!("no member of site {site} could be reached"))?;
        let list = peer
            .request_site_records()
            .await
            .map_err(|e| format!("{} of site {site}: {e}", peer.id))?;
        let mut out = Vec::new();
        for bytes in list.iter().take(store::fleet::SITE_RECORDS_MAX) {
            match protocol::status::SignedStatus::decode(bytes).and_then(|s| s.verify()) {
                Ok(b) if b.site == site => out.push(b),
                Ok(b) => tracing::debug!(site = %b.site, "a record of another site; left out"),
                Err(e) => tracing::debug!(error = %e, "a bad record; left out"),
            }
        }
        Ok(out)
    }

    /// The chunks fetches of this node have asked for and not yet stored, with the release
    /// whose fetch asked. A fetch holds the lock from reading the others' claims to making
    /// its own, so two fetches that start together do not both ask for the same chunks.
    pub(crate) fn claims(&self) -> std::sync::MutexGuard<'_, Claims> {
        lock(&self.claims)
    }

    /// The request of `release`'s fetch for `chunk` came back without it, or the chunk is
    /// stored now.
    pub(crate) fn unclaim(&self, chunk: &protocol::ChunkId, release: &ReleaseId) {
        self.unclaim_stored([chunk], release);
    }

    /// [`Net::unclaim`] for several chunks, under one lock.
    pub(crate) fn unclaim_stored<'c>(
        &self,
        chunks: impl IntoIterator<Item = &'c protocol::ChunkId>,
        release: &ReleaseId,
    ) {
        let mut claims = lock(&self.claims);
        if claims.0.is_empty() {
            return;
        }
        for chunk in chunks {
            if claims.0.get(chunk) == Some(release) {
                claims.0.remove(chunk);
            }
        }
    }

    /// The fetch of `release` stopped: its claims go, and the fetches that waited on them
    /// look again.
    pub(crate) fn unclaim_all(&self, release: &ReleaseId) {
        lock(&self.claims).0.retain(|_, r| r != release);
        self.wake.notify();
    }

    /// Records a bad chunk from `peer`; bans it at [`STRIKES_TO_BAN`].
    pub(crate) fn strike(&self, peer: &PeerId, why: &str) {
        let verdict = lock(&self.strikes).strike(*peer, self.epoch.elapsed());
        match verdict {
            scheduler::strikes::Verdict::Counted(n) => {
                tracing::warn!(%peer, strikes = n, reason = why, "peer strike");
            }
            scheduler::strikes::Verdict::Banned { .. } => self.ban(peer, why),
            // Replies in flight when the ban fell, or a table full of live bans.
            scheduler::strikes::Verdict::AlreadyBanned
            | scheduler::strikes::Verdict::NotRecorded => {}
        }
    }

    /// `peer` was just banned: recorded in the audit log, disconnected, forgotten by the
    /// fetches.
    fn ban(&self, peer: &PeerId, why: &str) {
        tracing::warn!(%peer, for_s = BAN_DURATION.as_secs(), reason = why, "peer banned");
        self.traffic.bans.fetch_add(1, Ordering::Relaxed);
        let store = self.store.clone();
        let event = store::audit::AuditEvent::PeerBanned {
            peer: peer.to_string(),
            reason: store::audit::bounded_reason(&format!(
                "{STRIKES_TO_BAN} strikes, the last: {why}"
            )),
            for_s: BAN_DURATION.as_secs(),
        };
        tokio::task::spawn_blocking(move || {
            if let Err(e) = store.append_audit(event) {
                tracing::error!(error = %e, "cannot record the ban in the audit log");
            }
        });
        if let Some(p) = lock(&self.peers).remove(peer) {
            p.close(quic::codes::BANNED, "banned");
        }
        self.wake.notify();
    }

    /// Whether `peer` is banned now.
    pub fn is_banned(&self, peer: &PeerId) -> bool {
        lock(&self.strikes).is_banned(peer, self.epoch.elapsed())
    }

    /// Peers banned now.
    pub fn banned(&self) -> Vec<PeerId> {
        lock(&self.strikes).banned(self.epoch.elapsed()).collect()
    }

    pub(crate) fn class_of(&self, site: &str) -> Class {
        if site == self.local.site {
            Class::Lan
        } else {
            Class::Wan
        }
    }

    /// Closes the data plane.
    pub fn close(&self) {
        self.endpoint
            .close(quinn::VarInt::from_u32(quic::codes::SHUTDOWN), b"shutdown");
    }
}
