//! The release registry: the releases this node serves or fetches, each with its state and
//! the one function that changes it ([`ReleaseState::after`], applied by
//! [`Release::transition`]); the releases it refused and why; the manifests being learned;
//! the chunks its fetches claimed ([`Claims`]) and the notices of those they stored; and the
//! signal that a release completed.
//!
//! ```text
//!            ┌── Pause ──▶ Paused ── Resume ──┐
//! Fetching ◀─┴────────────────────────────────┘
//!    │ (and Paused)
//!    ├── Complete ──▶ Complete      settled: no transition leaves
//!    ├── Supersede ─▶ Superseded    a settled state
//!    └── Fail ──────▶ Failed
//! ```

use crate::lock;
use crate::shape::Class;
use crate::window::WindowGate;
use api::ReleaseProgress;
use protocol::wire::{Bitmap, Control};
use protocol::{ChunkRef, Manifest, ReleaseId, VerifiedRelease};
use scheduler::versions::Standing;
use scheduler::window::Window;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, broadcast};

/// Releases whose refusal is remembered, so a peer repeating a bad announcement costs nothing
/// and the node's status keeps saying why it refused them (past it, the oldest refusal goes).
const REFUSED_MAX: usize = 1024;

/// How long a refused release is not looked at again (one of a channel this node does not
/// follow is not looked at again at all, until `[trust]` is read again). The refusal itself
/// is reported for as long as it is remembered: the fleet view shows the node as refusing the
/// release, with the reason, not as not knowing it.
pub(crate) const REFUSED_TTL: Duration = Duration::from_secs(600);

/// Most releases this node serves and advertises (newest first). Older ones stay in the store
/// and exportable; they are just not offered to peers.
pub const SERVED_RELEASES_MAX: usize = 64;

/// Chunks claimed by fetches at once ([`Claims::claim`]): more than the in-flight budgets of
/// every fetch allow; past it a request is sent unclaimed (another fetch may then ask too).
const CLAIMS_MAX: usize = 1 << 16;

/// Notices of stored chunks waiting for a slow fetch loop; one that falls further behind
/// misses some and fetches those chunks itself (the store keeps one copy either way).
const STORED_NOTICES_MAX: usize = 1024;

/// Severity, score and age of `v`, for ordering and the emergency policy.
pub(crate) fn urgency_of(v: &VerifiedRelease) -> scheduler::priority::Urgency {
    let m = &v.manifest;
    scheduler::priority::Urgency {
        severity: m.severity,
        cvss: m.cvss,
        emergency: m.emergency,
        created_unix_s: m.created_unix_s,
        tie: u64::from_le_bytes(v.id.as_bytes()[..8].try_into().expect("8 bytes")),
    }
}

/// Chunks a fetch made durable: the release and the chunks.
pub(crate) type StoredNotice = Arc<(ReleaseId, Vec<protocol::ChunkId>)>;

/// The chunks fetches of this node have asked for and not yet stored ([`Registry::claims`]).
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

/// Manifests learnt at once from releases one peer announced ([`Registry::start_learning`]):
/// an honest peer's burst (40 releases published at once) is learnt a few at a time as each
/// ends, and a peer that announces made-up releases holds at most this many learns (of the
/// node's [`crate::MANIFEST_FETCHES_MAX`]), each ended quickly when it says it has no such
/// manifest.
pub(crate) const LEARNS_PER_PEER_MAX: usize = 2;

/// How long a release whose manifest no peer served (made up, or gone) is not learnt again
/// when announced: the flood of a peer that announces made-up releases is read once.
pub(crate) const UNSERVABLE_TTL: Duration = Duration::from_secs(120);

/// Most releases remembered as unservable; past it the expired ones leave, then the oldest.
const UNSERVABLE_MAX: usize = 4096;

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
    /// Severity.
    pub severity: protocol::Severity,
    /// Unique chunks.
    pub chunks_total: u32,
}

/// What happens to a release's fetch: the only ways its state changes
/// ([`ReleaseState::after`], applied by [`Release::transition`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// The download window closed.
    Pause,
    /// The download window opened again.
    Resume,
    /// Every chunk is stored and the release committed.
    Complete,
    /// A newer version of the channel completed first.
    Supersede(u64),
    /// The fetch stopped on an error.
    Fail(String),
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
    /// The state after `t`, or `None` where `t` does not apply: a settled release
    /// (complete, superseded, failed) stays so, and only a running or paused fetch pauses,
    /// resumes, completes, is superseded or fails.
    pub fn after(&self, t: &Transition) -> Option<Self> {
        if self.is_settled() {
            return None;
        }
        Some(match t {
            Transition::Pause => Self::Paused,
            Transition::Resume => Self::Fetching,
            Transition::Complete => Self::Complete,
            Transition::Supersede(newer) => Self::Superseded(*newer),
            Transition::Fail(why) => Self::Failed(why.clone()),
        })
    }

    /// Whether the release is done with: complete, superseded or failed.
    pub fn is_settled(&self) -> bool {
        matches!(self, Self::Complete | Self::Superseded(_) | Self::Failed(_))
    }

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
    /// What peers exchange of it, in bitmap order ([`Manifest::units`]): its unique chunks,
    /// then its patches' pieces.
    pub chunks: Vec<ChunkRef>,
    /// How many of `chunks` are the release's chunks (the rest are pieces of patches,
    /// which a node need not hold).
    pub chunk_units: u32,
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
    /// What crossed the wire for the chunks received from same-site peers (less than
    /// `from_lan` where they moved compressed).
    pub wire_lan: AtomicU64,
    /// What crossed the wire for the chunks received from other sites.
    pub wire_wan: AtomicU64,
    /// Bytes of chunks the store already had when the fetch started (delta savings).
    pub reused: AtomicU64,
    /// Bytes of chunks rebuilt from patches by this fetch.
    pub rebuilt: AtomicU64,
    /// Bytes of the patches they were rebuilt from.
    pub patch_bytes: AtomicU64,
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
    /// Who installs it, after what, in which rings ([`protocol::rollout`]).
    pub rollout: protocol::Rollout,
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
    pub(crate) fn new(
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
            chunk_units: m.unique_chunks().len() as u32,
            chunks: m.units(),
            envelope: verified.envelope.encode(),
            have: Mutex::new(have),
            state: Mutex::new(state),
            from_lan: AtomicU64::new(0),
            from_wan: AtomicU64::new(0),
            wire_lan: AtomicU64::new(0),
            wire_wan: AtomicU64::new(0),
            reused: AtomicU64::new(0),
            rebuilt: AtomicU64::new(0),
            patch_bytes: AtomicU64::new(0),
            started: started.then(Instant::now),
            finished: Mutex::new(None),
            urgency: urgency_of(verified),
            windows: ReleaseWindows::of(m, zone),
            download_gate: WindowGate::default(),
            install_gate: WindowGate::default(),
            samples: Mutex::new(VecDeque::new()),
            seeding: None,
            rollout: m.rollout.clone(),
        }
    }

    pub(crate) fn with_seeding(mut self) -> Self {
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
    /// [`crate::Net::on_want`]).
    pub(crate) fn first_message(&self, class: Class, slot: protocol::wire::Slot) -> Control {
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
    pub(crate) fn visible_to(&self, site: &str, wan_sites: &[String]) -> Option<Bitmap> {
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
    pub(crate) fn seeding_stalled(&self) -> bool {
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

    /// Where the release stands, as the choice of versions needs it.
    pub fn standing(&self) -> Standing {
        match *lock(&self.state) {
            ReleaseState::Fetching => Standing::Running,
            ReleaseState::Paused => Standing::Waiting,
            ReleaseState::Complete => Standing::Complete,
            ReleaseState::Superseded(_) => Standing::Superseded,
            ReleaseState::Failed(_) => Standing::Failed,
        }
    }

    /// Whether nothing of it is held and it will not be fetched: peers need not hear of it.
    pub(crate) fn is_empty_and_superseded(&self) -> bool {
        matches!(*lock(&self.state), ReleaseState::Superseded(_)) && lock(&self.have).count() == 0
    }

    /// Applies `t` to the release's state: the one writer of it ([`ReleaseState::after`]).
    /// False when `t` does not apply (a fetch that ends late cannot undo a commit).
    pub(crate) fn transition(&self, t: Transition) -> bool {
        let mut state = lock(&self.state);
        match state.after(&t) {
            Some(next) => {
                *state = next;
                true
            }
            None => {
                tracing::debug!(release = %self.id, from = ?*state, transition = ?t,
                    "state change refused: the release is settled");
                false
            }
        }
    }

    fn received(&self) -> u64 {
        self.from_lan.load(Ordering::Relaxed) + self.from_wan.load(Ordering::Relaxed)
    }

    pub(crate) fn sample_rate(&self) {
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
        // The release's chunks; pieces of patches are a way to some of them.
        let chunks = &self.chunks[..(self.chunk_units as usize).min(self.chunks.len())];
        let bytes_total: u64 = chunks.iter().map(|c| u64::from(c.len)).sum();
        let bytes_have: u64 = chunks
            .iter()
            .enumerate()
            .filter(|(i, _)| have.get(*i as u32))
            .map(|(_, c)| u64::from(c.len))
            .sum();
        let chunks_have = if chunks.len() as u32 == have.len() {
            have.count()
        } else {
            (0..chunks.len() as u32).filter(|&i| have.get(i)).count() as u32
        };
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
            chunks_have,
            chunks_total: chunks.len() as u32,
            bytes_have,
            bytes_total,
            bytes_from_lan: self.from_lan.load(Ordering::Relaxed),
            bytes_from_wan: self.from_wan.load(Ordering::Relaxed),
            bytes_wire_lan: self.wire_lan.load(Ordering::Relaxed),
            bytes_wire_wan: self.wire_wan.load(Ordering::Relaxed),
            bytes_reused: self.reused.load(Ordering::Relaxed),
            bytes_rebuilt: self.rebuilt.load(Ordering::Relaxed),
            bytes_patches: self.patch_bytes.load(Ordering::Relaxed),
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
            severity: self.urgency.severity.to_string(),
            install: None,
        }
    }
}

/// A release whose manifest is verified and whose fetch is about to begin: its channel,
/// version, and how it would start.
type Learned = (String, u64, Standing);

/// Where learning one release's manifest stands.
enum Learning {
    /// Its manifest is being fetched.
    Fetching,
    /// Being fetched, but the peer that announced it said it has no such manifest: likely
    /// made up, so a release learnt meanwhile does not wait for it
    /// ([`Registry::manifests_pending_except`]).
    Denied,
    /// Verified, about to be fetched.
    Verified(Learned),
}

/// The releases of this node; see the module docs.
pub struct Registry {
    releases: RwLock<HashMap<ReleaseId, Arc<Release>>>,
    refused: Mutex<HashMap<ReleaseId, Refusal>>,
    /// Releases whose manifest is being fetched, or is verified and about to be fetched (its
    /// channel, version and standing): versions of a channel learned together are ranked
    /// before any of them is fetched.
    learning: Mutex<HashMap<ReleaseId, Learning>>,
    /// Learns in progress per announcing peer ([`LEARNS_PER_PEER_MAX`]).
    learning_from: Mutex<HashMap<libp2p::PeerId, usize>>,
    /// Releases announced whose manifest no peer served, and when ([`UNSERVABLE_TTL`]):
    /// not reported as refusals (they may be made up), only not learnt again for a while.
    unservable: Mutex<HashMap<ReleaseId, Instant>>,
    /// Chunks a fetch of this node has asked for and not had back, and the release whose
    /// fetch asked: another fetch that needs the same chunk waits for it rather than ask
    /// again, so a chunk two releases share crosses the WAN once.
    claims: Mutex<Claims>,
    /// Chunks a fetch made durable, for the other fetches that need them too.
    stored: broadcast::Sender<StoredNotice>,
    /// Signalled when a release completes (fetched or published); activation looks again.
    completed: Notify,
}

impl Default for Registry {
    fn default() -> Self {
        Self {
            releases: RwLock::default(),
            refused: Mutex::default(),
            learning: Mutex::default(),
            learning_from: Mutex::default(),
            unservable: Mutex::default(),
            claims: Mutex::default(),
            stored: broadcast::channel(STORED_NOTICES_MAX).0,
            completed: Notify::new(),
        }
    }
}

impl Registry {
    /// Adds `release`; past [`SERVED_RELEASES_MAX`], a settled one is forgotten: one that
    /// was superseded or failed first, else the oldest complete one (it stays in the store).
    pub(crate) fn insert(&self, release: Arc<Release>) {
        let mut releases = self.releases.write().unwrap_or_else(|e| e.into_inner());
        releases.insert(release.id, release);
        if releases.len() > SERVED_RELEASES_MAX {
            if let Some(old) = releases
                .values()
                .filter(|r| lock(&r.state).is_settled())
                .min_by_key(|r| (*lock(&r.state) == ReleaseState::Complete, r.version))
                .map(|r| r.id)
            {
                releases.remove(&old);
            }
        }
    }

    /// Stops serving release `id` (it was removed from the store); false if it is being
    /// fetched (or not known), when it stays.
    pub fn remove_settled(&self, id: &ReleaseId) -> bool {
        let mut releases = self.releases.write().unwrap_or_else(|e| e.into_inner());
        match releases.get(id) {
            Some(r) if lock(&r.state).is_settled() => {
                releases.remove(id);
                true
            }
            _ => false,
        }
    }

    /// A release this node serves or fetches.
    pub fn get(&self, id: &ReleaseId) -> Option<Arc<Release>> {
        self.releases
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }

    /// All releases this node serves or fetches, by channel, newest version first.
    pub fn all(&self) -> Vec<Arc<Release>> {
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

    /// The releases this node published and still seeds.
    pub(crate) fn seeding(&self) -> Vec<Arc<Release>> {
        self.releases
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|r| r.seeding.is_some())
            .cloned()
            .collect()
    }

    /// The known versions of `channel` and where each stands
    /// ([`scheduler::versions::Standing`]).
    pub fn versions_of(&self, channel: &str) -> Vec<(u64, Standing)> {
        let mut versions: Vec<(u64, Standing)> = self
            .all()
            .iter()
            .filter(|r| r.channel == channel)
            .map(|r| (r.version, r.standing()))
            .collect();
        // Verified, about to be fetched: as it would start.
        versions.extend(
            lock(&self.learning)
                .values()
                .filter_map(|l| match l {
                    Learning::Verified(learned) => Some(learned),
                    Learning::Fetching | Learning::Denied => None,
                })
                .filter(|(c, _, _)| c == channel)
                .map(|&(_, v, s)| (v, s)),
        );
        versions
    }

    /// The version of `channel` that supersedes `version`, standing `own`, if one is known
    /// ([`scheduler::versions::superseded_by`]): such a version is not fetched, its fetch
    /// stops, and it is never installed.
    pub fn superseded_by(&self, channel: &str, version: u64, own: Standing) -> Option<u64> {
        scheduler::versions::superseded_by(version, own, self.versions_of(channel))
    }

    /// Urgencies of the fetches running now (not paused, not done) other than `id`'s.
    pub(crate) fn running_fetches_except(
        &self,
        id: &ReleaseId,
    ) -> Vec<scheduler::priority::Urgency> {
        self.all()
            .iter()
            .filter(|r| r.id != *id && *lock(&r.state) == ReleaseState::Fetching)
            .map(|r| r.urgency)
            .collect()
    }

    /// Remembers that `id` was refused, and why (bounded by [`REFUSED_MAX`]).
    pub(crate) fn refuse(&self, id: ReleaseId, reason: String, facts: Option<RefusedFacts>) {
        let mut refused = lock(&self.refused);
        let now = Instant::now();
        if refused.len() >= REFUSED_MAX && !refused.contains_key(&id) {
            refused.retain(|_, r| r.is_live(now));
            if refused.len() >= REFUSED_MAX {
                if let Some(oldest) = refused.iter().min_by_key(|(_, r)| r.at).map(|(k, _)| *k) {
                    refused.remove(&oldest);
                }
            }
        }
        refused.insert(
            id,
            Refusal {
                at: now,
                reason,
                facts,
            },
        );
    }

    /// Whether `id` was refused and that still holds.
    pub(crate) fn is_refused(&self, id: &ReleaseId) -> bool {
        lock(&self.refused)
            .get(id)
            .is_some_and(|r| r.is_live(Instant::now()))
    }

    /// Forgets that `id` was refused: it was accepted since (the trust policy changed).
    pub(crate) fn forget_refusal(&self, id: &ReleaseId) {
        lock(&self.refused).remove(id);
    }

    /// Forgets every refusal: the trust policy or what the node follows changed, and the
    /// releases refused under the old one are looked at again when next announced.
    pub fn forget_refusals(&self) {
        lock(&self.refused).clear();
    }

    /// The releases refused and remembered (at most [`REFUSED_MAX`]), newest first, with the
    /// reason.
    pub fn refused(&self) -> Vec<Refused> {
        let mut list: Vec<_> = lock(&self.refused)
            .iter()
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

    /// Notes that the manifest of `id` is being learned; false if it already is.
    pub(crate) fn start_learning(&self, id: ReleaseId, from: Option<libp2p::PeerId>) -> bool {
        let mut learning = lock(&self.learning);
        if learning.contains_key(&id) {
            return false;
        }
        if let Some(peer) = from {
            let mut per_peer = lock(&self.learning_from);
            let n = per_peer.entry(peer).or_default();
            if *n >= LEARNS_PER_PEER_MAX {
                return false;
            }
            *n += 1;
        }
        learning.insert(id, Learning::Fetching);
        true
    }

    /// Whether `id` was announced lately and no peer served its manifest.
    pub(crate) fn is_unservable(&self, id: &ReleaseId) -> bool {
        lock(&self.unservable)
            .get(id)
            .is_some_and(|at| at.elapsed() < UNSERVABLE_TTL)
    }

    /// No peer served the manifest of `id` ([`UNSERVABLE_TTL`]).
    pub(crate) fn note_unservable(&self, id: ReleaseId) {
        let mut u = lock(&self.unservable);
        if u.len() >= UNSERVABLE_MAX {
            u.retain(|_, at| at.elapsed() < UNSERVABLE_TTL);
            if u.len() >= UNSERVABLE_MAX {
                if let Some(oldest) = u.iter().min_by_key(|(_, at)| **at).map(|(id, _)| *id) {
                    u.remove(&oldest);
                }
            }
        }
        u.insert(id, Instant::now());
    }

    /// The manifest of `id` verified: version `version` of `channel`, which would start
    /// `own` (running, or waiting for its window).
    pub(crate) fn learned(&self, id: ReleaseId, channel: &str, version: u64, own: Standing) {
        if let Some(entry) = lock(&self.learning).get_mut(&id) {
            *entry = Learning::Verified((channel.to_string(), version, own));
        }
    }

    /// Whether a manifest other than `id`'s is still being fetched (leaving out those
    /// whose announcer denied having it).
    pub(crate) fn manifests_pending_except(&self, id: &ReleaseId) -> bool {
        lock(&self.learning)
            .iter()
            .any(|(other, entry)| other != id && matches!(entry, Learning::Fetching))
    }

    /// The peer that announced `id` said it has no such manifest.
    pub(crate) fn note_denied(&self, id: ReleaseId) {
        if let Some(entry @ Learning::Fetching) = lock(&self.learning).get_mut(&id) {
            *entry = Learning::Denied;
        }
    }

    /// Learning the manifest of `id` ended.
    pub(crate) fn end_learning(&self, id: &ReleaseId, from: Option<libp2p::PeerId>) {
        lock(&self.learning).remove(id);
        if let Some(peer) = from {
            let mut per_peer = lock(&self.learning_from);
            if let Some(n) = per_peer.get_mut(&peer) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    per_peer.remove(&peer);
                }
            }
        }
    }

    /// The chunks fetches of this node have asked for and not yet stored, with the release
    /// whose fetch asked. A fetch holds the lock from reading the others' claims to making
    /// its own, so two fetches that start together do not both ask for the same chunks.
    pub(crate) fn claims(&self) -> MutexGuard<'_, Claims> {
        lock(&self.claims)
    }

    /// The request of `release`'s fetch for `chunk` came back without it, or the chunk is
    /// stored now.
    pub(crate) fn unclaim(&self, chunk: &protocol::ChunkId, release: &ReleaseId) {
        self.unclaim_stored([chunk], release);
    }

    /// [`Registry::unclaim`] for several chunks, under one lock.
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

    /// The fetch of `release` stopped: its claims go (the caller wakes the fetches that
    /// waited on them).
    pub(crate) fn unclaim_all(&self, release: &ReleaseId) {
        lock(&self.claims).0.retain(|_, r| r != release);
    }

    /// Tells the other fetches that `release`'s fetch stored `chunks`.
    pub(crate) fn announce_stored(&self, release: ReleaseId, chunks: Vec<protocol::ChunkId>) {
        // No receiver (no other fetch running) is not an error.
        let _ = self.stored.send(Arc::new((release, chunks)));
    }

    /// Whether a fetch other than the caller's listens for stored chunks (the caller holds
    /// one receiver).
    pub(crate) fn others_listen(&self) -> bool {
        self.stored.receiver_count() > 1
    }

    /// Notices of chunks other fetches store from now on.
    pub(crate) fn subscribe_stored(&self) -> broadcast::Receiver<StoredNotice> {
        self.stored.subscribe()
    }

    /// Signalled when a release completes (fetched or published).
    pub fn completed(&self) -> &Notify {
        &self.completed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_running_fetch_pauses_resumes_and_settles_once() {
        let s = ReleaseState::Fetching;
        let paused = s.after(&Transition::Pause).unwrap();
        assert_eq!(paused, ReleaseState::Paused);
        assert_eq!(
            paused.after(&Transition::Resume),
            Some(ReleaseState::Fetching)
        );
        assert_eq!(
            paused.after(&Transition::Supersede(7)),
            Some(ReleaseState::Superseded(7))
        );
        let done = s.after(&Transition::Complete).unwrap();
        for t in [
            Transition::Pause,
            Transition::Resume,
            Transition::Complete,
            Transition::Supersede(9),
            Transition::Fail("late".into()),
        ] {
            assert_eq!(done.after(&t), None, "{t:?} left a complete release");
            assert_eq!(
                ReleaseState::Failed("x".into()).after(&t),
                None,
                "{t:?} left a failed release"
            );
            assert_eq!(
                ReleaseState::Superseded(3).after(&t),
                None,
                "{t:?} left a superseded release"
            );
        }
    }

    #[test]
    fn refusals_are_bounded_and_listed_newest_first() {
        let r = Registry::default();
        for i in 0..(REFUSED_MAX as u32 + 10) {
            let mut id = [0u8; 32];
            id[..4].copy_from_slice(&i.to_le_bytes());
            r.refuse(ReleaseId(id), format!("bad {i}"), None);
        }
        let list = r.refused();
        assert!(list.len() <= REFUSED_MAX);
        assert_eq!(list[0].reason, format!("bad {}", REFUSED_MAX + 9));
    }

    #[test]
    fn a_claim_is_released_only_by_the_fetch_that_made_it() {
        let r = Registry::default();
        let (a, b) = (ReleaseId([1; 32]), ReleaseId([2; 32]));
        let chunk = protocol::ChunkId([9; 32]);
        r.claims().claim(chunk, a);
        r.claims().claim(chunk, b);
        let index: HashMap<protocol::ChunkId, u32> = [(chunk, 0)].into();
        assert!(r.claims().of_others(&b, &index, 1).is_some());
        assert!(r.claims().of_others(&a, &index, 1).is_none());
        r.unclaim(&chunk, &b);
        assert!(r.claims().of_others(&b, &index, 1).is_some());
        r.unclaim_all(&a);
        assert!(r.claims().of_others(&b, &index, 1).is_none());
    }
}
