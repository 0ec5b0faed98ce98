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
//! [`Net`] ties the parts together and holds no lock of its own: the releases this node
//! serves or fetches are in its [`Registry`] ([`registry`]: their states and the one
//! function that changes them, refusals, the fetches' claims), peers and their reputation in
//! its `PeerTable` ([`peers`]: connections, where known peers are, dials, strikes and bans),
//! the windows in its [`Gates`] ([`window`]), traffic classes, counters and shapers in
//! [`shape`]. Peers are classed LAN (same site) or WAN (another site) from the site they
//! declare in their data-plane hello (or their certificate states). Chunks move compressed
//! where the class and the agreed protocol version say so ([`compress`]).
//!
//! Who a node connects to on the data plane: every peer of its own site it learns of (from
//! mDNS, its bootstrap peers, and the peer lists peers send, [`Control::Peers`]); its
//! bootstrap peers; [`NetworkSection::wan_peers`] peers of other sites picked by rendezvous
//! hashing ([`scheduler::control::pick_across_sites`]); and, on a site aggregator, its WAN
//! overlay neighbours. So a node's WAN connections do not grow with the fleet.

pub mod aggregate;
pub mod approve;
pub mod compress;
pub mod config;
pub mod error;
pub mod fetch;
pub mod peer;
pub mod peers;
pub mod quic;
pub mod registry;
pub mod shape;
pub mod swarm;
pub mod tls;
pub mod trust;
pub mod window;

pub use error::{Error, Result};
pub use peers::{KnownPeer, Told};
pub use registry::{
    Refused, RefusedFacts, Registry, Release, ReleaseState, ReleaseWindows, SERVED_RELEASES_MAX,
    Transition,
};
pub use shape::{Class, ControlBytes, Traffic};
pub use window::Gates;

use crate::config::NetworkSection;
use api::PeerView as ApiPeer;
use libp2p::PeerId;
use libp2p::identity::Keypair;
use peer::Peer;
use protocol::wire::{Bitmap, Control, PeerEntry};
use protocol::{NodeId, ReleaseId, TrustPolicy, VerifiedRelease};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use store::Store;
use tokio::sync::watch;

pub use scheduler::strikes::{BAN_DURATION, STRIKES_TO_BAN};

/// How long the node with the larger peer id waits for the smaller to dial before it dials.
const DIAL_FALLBACK: Duration = Duration::from_secs(3);

/// Peers of other sites a peer list names at most: enough for the receiver to pick its WAN
/// peers from, few enough to cost nothing.
const PEX_OTHERS_MAX: usize = 16;

/// How often announcements waiting for peers of other sites are looked at (they go at most
/// every [`scheduler::control::WAN_HAVE_INTERVAL`]).
const WAN_FLUSH_TICK: Duration = Duration::from_millis(100);

/// How long asking another site for its records may take to reach a member of it.
const SITE_QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// A quarter of `max_peers` is kept for this node's own site ([`Net::has_room_for`]): with
/// the default 128, 96 peers of other sites at most, and 32 slots a crowd of them cannot take
/// from the site's members.
pub(crate) const SAME_SITE_RESERVE_DIVISOR: usize = 4;

/// A peer of another site connected this long that never sent this node a chunk byte may
/// give its slot to a member of this site when every slot is taken
/// ([`Net::evict_for_site_mate`]): long enough for a peer that just came to show it serves.
pub const EVICTABLE_AFTER: Duration = Duration::from_secs(30);

/// Manifests fetched at once (each can be up to 64 MiB).
pub(crate) const MANIFEST_FETCHES_MAX: usize = 4;

/// What learning a release came to ([`Net::learn_release`]).
enum Learnt {
    /// Its manifest verified.
    Verified(Box<VerifiedRelease>),
    /// It is stored already.
    Stored,
    /// No peer served its manifest; `hint_denied`: the peer that announced it said it has
    /// no such manifest.
    Unserved {
        /// See above.
        hint_denied: bool,
    },
}

/// While no copy of a manifest has come, one more peer is asked this often: a manifest of
/// a few hundred KiB crosses even a thin link in that time, and a peer that does not answer
/// holds learning a release back no longer.
const MANIFEST_HEDGE: Duration = Duration::from_secs(2);

/// How long a verified release waits for the other manifests being learned at the same time
/// before its fetch begins (see [`Net::learn_release`]): a manifest crosses even a thin link
/// in that time, and one that takes longer does not hold the others back.
const LEARN_SETTLE: Duration = MANIFEST_HEDGE;

/// How often a verified release looks whether the others have been learned.
const LEARN_SETTLE_POLL: Duration = Duration::from_millis(20);

/// How long learning a release waits for a peer to offer it at all.
const MANIFEST_PATIENCE: Duration = Duration::from_secs(30);

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
    /// Labels from the configuration, sorted by key (a certificate's win where there is one:
    /// [`Net::labels`]).
    pub labels: Vec<(String, String)>,
    /// Random per process start, sent in hellos (a restart is told from a duplicate).
    pub instance: u64,
}

/// What a fleet with a root asks of every peer: the root that names the fleet CA, the
/// revocation list, and this node's own certificate to show (`Hello::cert`). Replaced as a
/// whole when a newer root or list is taken ([`trust`]).
#[derive(Debug, Clone)]
pub struct Membership {
    /// The newest root this node holds.
    pub root: protocol::root::Root,
    /// This node's certificate, encoded.
    pub cert: Vec<u8>,
    /// The fleet's revocation list this node holds (version 0, empty: none taken yet).
    pub revoked: protocol::revoke::Revocations,
}

impl Membership {
    /// Checks a peer's certificate for `node` at `now_unix_s`: valid under the root, and not
    /// revoked. The reason otherwise, for the log and `p2pctl peers --refused`.
    pub fn check(
        &self,
        cert: &protocol::cert::SignedCert,
        node: &NodeId,
        now_unix_s: i64,
    ) -> Result<(), String> {
        cert.verify(&self.root, node, now_unix_s)
            .map_err(|e| e.to_string())?;
        match self.revoked.revokes(&cert.cert) {
            Some(e) => Err(format!(
                "node revoked at unix {} (revocation list v{}): {}",
                e.at_unix_s, self.revoked.version, e.reason
            )),
            None => Ok(()),
        }
    }
}

/// The trust policy (which publisher keys sign which channels), shared by the daemon's API
/// and the network and replaced when a newer fleet root is taken.
#[derive(Clone)]
pub struct SharedPolicy(Arc<std::sync::RwLock<Arc<TrustPolicy>>>);

impl SharedPolicy {
    /// A policy to share.
    pub fn new(policy: TrustPolicy) -> Self {
        Self(Arc::new(std::sync::RwLock::new(Arc::new(policy))))
    }

    /// The policy now.
    pub fn get(&self) -> Arc<TrustPolicy> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces it.
    pub fn set(&self, policy: TrustPolicy) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(policy);
    }
}

/// The shared network state.
pub struct Net {
    /// Who this node is.
    pub local: Local,
    keypair: Keypair,
    /// The node key (signs site summaries when this node aggregates).
    pub(crate) signing: ed25519_dalek::SigningKey,
    config: NetworkSection,
    policy: SharedPolicy,
    pub(crate) store: Arc<Store>,
    endpoint: quinn::Endpoint,
    /// Peers and their reputation: connections, where known peers are, dials, bans.
    pub(crate) peers: peers::PeerTable,
    /// The releases this node serves or fetches, refused, learns; the fetches' claims.
    pub registry: Registry,
    /// The fleet's records and summaries, where those from peers are offered (set by the
    /// daemon).
    pub fleet: std::sync::OnceLock<Arc<store::fleet::Fleet>>,
    /// The site's aggregation and the WAN overlay.
    pub(crate) aggregate: aggregate::Aggregate,
    /// When this node started (the clock of the announcement batches and of bans).
    epoch: Instant,
    /// Woken when peers or their bitmaps change; fetchers re-plan.
    pub(crate) wake: Wake,
    /// Set when the daemon shuts down.
    pub shutdown: watch::Receiver<bool>,
    /// Chunk traffic of this node.
    pub traffic: Traffic,
    /// Bandwidth shapers per traffic class, used by serving and fetching.
    pub shapers: shape::Shapers,
    /// Download and install windows, and the emergency policy, used by the fetches and
    /// activation.
    pub gates: Gates,
    /// Serving concurrency (reads from the store in flight).
    pub(crate) serve_slots: Arc<tokio::sync::Semaphore>,
    manifest_slots: Arc<tokio::sync::Semaphore>,
    /// Files rebuilt from patches at once ([`fetch::REBUILDS_AT_ONCE`]).
    pub(crate) rebuild_slots: Arc<tokio::sync::Semaphore>,
    /// Manifest deltas made for peers ([`protocol::wire::Request::ManifestDelta`]).
    pub(crate) manifest_deltas: peer::ManifestDeltas,
    /// What chunks sent compressed compressed to ([`compress`]).
    pub(crate) wire_cache: compress::WireCache,
    /// The fleet root, revocation list and this node's certificate, in a fleet with a root.
    membership: std::sync::RwLock<Option<Arc<Membership>>>,
    /// A catch-up of the root or revocation list from a peer is under way ([`trust`]).
    pub(crate) trust_fetching: std::sync::atomic::AtomicBool,
    /// The fleet orders this node holds ([`protocol::orders`]; empty, version 0: none):
    /// what operators told the fleet. Subscribers ([`Net::watch_orders`]) hear of newer.
    orders: watch::Sender<Arc<protocol::orders::Orders>>,
    /// This node's certificate was replaced ([`Net::set_own_cert`]): the control plane
    /// starts again so that identify shows the new one.
    pub(crate) own_cert_changed: tokio::sync::Notify,
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
        labels: Vec<(String, String)>,
        config: NetworkSection,
        schedules: scheduler::policy::RateSchedules,
        windows: scheduler::policy::Windows,
        policy: SharedPolicy,
        store: Arc<Store>,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Arc<Self>> {
        let keypair = keypair_of(key);
        let endpoint = quic::endpoint(
            &keypair,
            &key.to_bytes(),
            config.data_listen,
            quic::alpns(config.compression),
        )?;
        let local = Local {
            peer_id: keypair.public().to_peer_id(),
            node_id: NodeId(key.verifying_key().to_bytes()),
            site,
            region,
            labels,
            instance: {
                let mut b = [0u8; 8];
                getrandom::fill(&mut b).map_err(|e| Error::setup(format!("no randomness: {e}")))?;
                u64::from_le_bytes(b)
            },
        };
        let orders = store
            .orders()
            .map_err(|e| Error::setup(format!("fleet orders: {e}")))?
            .map_or_else(|| protocol::orders::Orders::empty(""), |o| o.orders);
        let net = Arc::new(Self {
            local,
            keypair,
            signing: key.clone(),
            config,
            policy,
            store,
            endpoint,
            peers: peers::PeerTable::default(),
            registry: Registry::default(),
            fleet: std::sync::OnceLock::new(),
            aggregate: aggregate::Aggregate::default(),
            epoch: Instant::now(),
            wake: Wake::new(),
            shutdown,
            traffic: Traffic::default(),
            shapers: shape::Shapers::new(schedules),
            gates: Gates::new(windows),
            serve_slots: Arc::new(tokio::sync::Semaphore::new(peer::SERVE_CONCURRENCY_MAX)),
            manifest_slots: Arc::new(tokio::sync::Semaphore::new(MANIFEST_FETCHES_MAX)),
            rebuild_slots: Arc::new(tokio::sync::Semaphore::new(fetch::REBUILDS_AT_ONCE)),
            manifest_deltas: Default::default(),
            wire_cache: compress::WireCache::default(),
            membership: std::sync::RwLock::new(None),
            trust_fetching: std::sync::atomic::AtomicBool::new(false),
            orders: watch::Sender::new(Arc::new(orders)),
            own_cert_changed: tokio::sync::Notify::new(),
        });
        Ok(net)
    }

    /// Puts this node in a fleet with a root: from now on a peer is admitted only with a
    /// certificate from the root's CA, and its site and region are the certificate's. Set
    /// before [`Net::start`]; later changes come through [`trust`].
    pub fn set_membership(&self, membership: Membership) {
        *self.membership.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(membership));
    }

    /// This node's labels, as rollout selectors and rings read them: its certificate's in a
    /// fleet with a root (a CA vouches for them), else its configuration's.
    pub fn labels(&self) -> Vec<(String, String)> {
        self.membership()
            .and_then(|m| protocol::cert::SignedCert::decode(&m.cert).ok())
            .map_or_else(|| self.local.labels.clone(), |c| c.cert.labels)
    }

    /// The fleet orders this node holds (empty, version 0: none taken).
    pub fn orders(&self) -> Arc<protocol::orders::Orders> {
        self.orders.borrow().clone()
    }

    /// A receiver that sees each newer fleet orders this node takes.
    pub fn watch_orders(&self) -> watch::Receiver<Arc<protocol::orders::Orders>> {
        self.orders.subscribe()
    }

    /// The fleet membership, if this node has a root.
    pub fn membership(&self) -> Option<Arc<Membership>> {
        self.membership
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The trust policy now (the fleet root's publishers, or `[trust]` without a root).
    pub fn policy(&self) -> Arc<TrustPolicy> {
        self.policy.get()
    }

    /// Peers refused lately on the data plane for want of a valid certificate, newest last.
    pub fn refused_peers(&self) -> Vec<peers::RefusedPeer> {
        self.peers.refused()
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
    pub async fn start(self: &Arc<Self>) -> Result<()> {
        let store = self.store.clone();
        let policy = self.policy();
        let (committed, pending) = tokio::task::spawn_blocking(move || {
            let mut committed = Vec::new();
            let held = store.held_releases()?;
            for summary in store.releases()?.into_iter().take(SERVED_RELEASES_MAX) {
                // A release held for approval is served once approved, not before.
                if held.contains(&summary.id) {
                    continue;
                }
                if let Some(bytes) = store.signed_manifest(&summary.id)? {
                    match protocol::envelope::verify_signed(&bytes, &policy) {
                        Ok(v) => {
                            let have = committed_units(&store, &v.manifest)?;
                            committed.push((v, have));
                        }
                        Err(e) => tracing::warn!(release = %summary.id, error = %e,
                            "stored release no longer verifies under the trust policy; not serving it"),
                    }
                }
            }
            let pending = store.pending()?;
            Ok::<_, Error>((committed, pending))
        })
        .await??;
        for (v, have) in committed {
            let release = Release::new(&v, have, ReleaseState::Complete, false, self.gates.zone());
            self.insert_release(Arc::new(release));
        }
        // Newest first: an unfinished fetch that a newer one supersedes is then dropped at
        // once rather than started and stopped.
        let mut resumed: Vec<VerifiedRelease> = Vec::new();
        for (id, bytes) in pending {
            let verified =
                protocol::envelope::verify_signed(&bytes, &self.policy()).and_then(|v| {
                    let highest = self
                        .store
                        .highest_version(&v.manifest.channel)
                        .ok()
                        .flatten();
                    v.check_fresh(now_unix_s(), highest).map(|()| v)
                });
            match verified {
                Ok(v) if v.id == id => resumed.push(v),
                Ok(_) => {
                    self.store.remove_pending(&id)?;
                }
                // A time check that fails may be this node's clock (ahead: the manifest looks
                // expired; behind: not yet made): the chunks fetched stay, and the release
                // is checked again when a peer announces it or at the next start.
                Err(
                    e @ (protocol::ManifestError::Expired { .. }
                    | protocol::ManifestError::CreatedInFuture { .. }),
                ) => {
                    tracing::warn!(release = %id, error = %e, clock_offset_s = ?self.clock_offset_ms().map(|m| m / 1000),
                        "unfinished fetch kept but not resumed: its time check fails (is this node's clock right?)");
                }
                // A newer version was taken meanwhile: this one was accepted and superseded.
                Err(protocol::ManifestError::VersionNotNewer {
                    version, highest, ..
                }) => {
                    tracing::info!(release = %id, version, highest,
                        "unfinished fetch dropped: a newer version of its channel was taken");
                    self.store.supersede_pending(&id, version)?;
                }
                Err(e) => {
                    tracing::warn!(release = %id, error = %e, "dropping unfinished fetch");
                    self.store.remove_pending(&id)?;
                }
            }
        }
        resumed.sort_by_key(|v| std::cmp::Reverse(v.manifest.version));
        for v in resumed {
            tracing::info!(release = %v.id, channel = %v.manifest.channel,
                version = v.manifest.version, "resuming fetch");
            self.begin_fetch(v).await?;
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
        self.registry.insert(release.clone());
        self.send_bitmaps(&release);
        // A fetch of an older version of its channel stops at its next look.
        self.wake.notify();
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
        if release.is_empty_and_superseded() {
            return;
        }
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
        for r in self.registry.seeding() {
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
        self.registry.get(id)
    }

    /// All releases this node serves or fetches.
    pub fn releases(&self) -> Vec<Arc<Release>> {
        self.registry.all()
    }

    /// Connected peers.
    pub fn peer_list(&self) -> Vec<Arc<Peer>> {
        self.peers.list()
    }

    /// Sends `msg` to every connected peer of this node's site.
    pub fn tell_site(&self, msg: protocol::wire::Control) {
        for p in self.peer_list().iter().filter(|p| p.class == Class::Lan) {
            p.send_control(msg.clone());
        }
    }

    /// The median of the connected peers' clocks minus this node's, milliseconds (`None`
    /// without peers): a node whose clock is far from its peers' says so.
    pub fn clock_offset_ms(&self) -> Option<i64> {
        let mut offsets: Vec<i64> = self.peer_list().iter().map(|p| p.clock_offset_ms).collect();
        if offsets.is_empty() {
            return None;
        }
        offsets.sort_unstable();
        Some(offsets[offsets.len() / 2])
    }

    /// Whether a connection to a peer of `site` may be added: one of this node's site up to
    /// `max_peers`, one of another site only while a [`SAME_SITE_RESERVE_DIVISOR`]th of the
    /// slots stays free for this site's members (which fetch and serve on the LAN; a site's
    /// peer is certified in a fleet with a root, claimed without one).
    pub(crate) fn has_room_for(&self, site: &str) -> bool {
        let (n, max) = (self.peers.count(), self.config.max_peers);
        if site == self.local.site {
            n < max
        } else {
            n < max - max / SAME_SITE_RESERVE_DIVISOR
        }
    }

    /// Whether a peer of `site` may connect ([`Net::has_room_for`]), giving it the slot of
    /// an idle peer of another site if it is of this site and none is free
    /// ([`Net::evict_for_site_mate`]).
    pub(crate) fn make_room_for(&self, site: &str) -> bool {
        self.has_room_for(site) || (site == self.local.site && self.evict_for_site_mate())
    }

    /// Every slot is taken and a member of this site wants one: the peer of another site
    /// connected longest among those that never sent this node a chunk byte, have been
    /// connected [`EVICTABLE_AFTER`] and that this node does not want (a bootstrap peer, a
    /// WAN pick, an overlay neighbour) is disconnected. Whether one was.
    fn evict_for_site_mate(&self) -> bool {
        let picks = self.wan_picks();
        let now = Instant::now();
        let victim = self
            .peer_list()
            .into_iter()
            .filter(|p| {
                p.site != self.local.site
                    && p.bytes_in.load(Ordering::Relaxed) == 0
                    && now.duration_since(p.connected) >= EVICTABLE_AFTER
                    && !self.peers.is_bootstrap(&p.id)
                    && !picks.contains(&p.id)
                    && !self.aggregate.wants(&p.id)
                    && !p.overlay_chosen.load(Ordering::Relaxed)
            })
            .min_by_key(|p| p.connected);
        let Some(victim) = victim else {
            return false;
        };
        tracing::info!(peer = %victim.id, site = %victim.site,
            "peer of another site that never served disconnected: a member of this site needs its slot");
        self.peers.remove(&victim.id);
        victim.close(quic::codes::SURPLUS, "slot given to a member of the site");
        true
    }

    /// The peers report for `p2pctl peers`.
    pub fn peer_views(&self) -> Vec<ApiPeer> {
        let mut v: Vec<ApiPeer> = self.peer_list().iter().map(|p| p.view()).collect();
        v.sort_by(|a, b| a.site.cmp(&b.site).then(a.peer_id.cmp(&b.peer_id)));
        v
    }

    /// A release the local operator just published: serve it, announce it, provide it.
    pub fn published(&self, verified: &VerifiedRelease) {
        let n = verified.manifest.units().len() as u32;
        let release = Release::new(
            verified,
            Bitmap::full(n),
            ReleaseState::Complete,
            false,
            self.gates.zone(),
        )
        .with_seeding();
        // Every connected peer hears of it through its bitmap (`insert_release`).
        self.insert_release(Arc::new(release));
        self.registry.completed().notify_one();
    }

    /// The control plane identified a p2pd peer (its own word, [`peers::Told::Itself`]).
    pub fn on_identified(self: &Arc<Self>, peer: PeerId, known: KnownPeer) {
        self.learn_peer(peer, known.clone());
        if self.wanted(&peer, &known) {
            self.maybe_dial(peer, known);
        }
    }

    /// Remembers where `peer` is ([`peers::PeerTable::learn`]: what the peer said of itself
    /// replaces what others said; hearsay only fills a gap, and is bounded).
    pub(crate) fn learn_peer(&self, peer: PeerId, known: KnownPeer) {
        if peer != self.local.peer_id {
            self.peers.learn(peer, known, Instant::now());
        }
    }

    /// Peers that connected peer `from` told us of ([`Control::Peers`]).
    pub(crate) fn on_peers(self: &Arc<Self>, from: PeerId, list: Vec<PeerEntry>) {
        for e in list {
            let Some(peer) = peer_id_of(&e.node) else {
                continue;
            };
            self.learn_peer(
                peer,
                KnownPeer {
                    told: peers::Told::By(from),
                    // Members of this site are vouched for by the peer that names them (it
                    // lists only those it knows the LAN address of).
                    lan_known: e.site == self.local.site,
                    site: e.site,
                    lan: e.lan,
                    wan: e.wan,
                },
            );
        }
    }

    /// What this node tells a newly connected peer of `site` about other peers: the members
    /// of that site it knows, and a few peers of other sites it could pick across the WAN.
    pub(crate) fn peers_for(&self, site: &str) -> Vec<PeerEntry> {
        self.peers.with_known(|known| Self::peers_of(known, site))
    }

    fn peers_of(known: &HashMap<PeerId, KnownPeer>, site: &str) -> Vec<PeerEntry> {
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
        for (p, k) in known.iter().filter(|(_, k)| k.shareable()) {
            if k.site == site && k.lan_known && out.len() < own_max {
                out.extend(entry(p, k));
            }
        }
        // Others: a sample by rendezvous, so that every asker gets different ones.
        let others: Vec<(&PeerId, &KnownPeer)> = known
            .iter()
            .filter(|(_, k)| k.site != site && k.shareable())
            .collect();
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
        let peers = self.peer_list();
        let now = Instant::now();
        for (site, n) in self.peers.members_per_site() {
            if !self.peers.share_due(&site, n, now) {
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
            self.peers.shared(site, n, now);
        }
    }

    /// Notes the bootstrap peers (dialed by the swarm, connected to on the data plane).
    pub fn set_bootstrap(&self, peers: Vec<PeerId>) {
        self.peers.set_bootstrap(peers);
    }

    /// Whether some bootstrap peer (or none is configured) has a data-plane connection.
    pub fn bootstrap_connected(&self) -> bool {
        let b = self.peers.bootstrap();
        b.is_empty() || b.iter().any(|p| self.peers.is_connected(p))
    }

    /// Whether `peer` has a data-plane connection.
    pub fn is_connected(&self, peer: &PeerId) -> bool {
        self.peers.is_connected(peer)
    }

    /// Whether `node` is up as far as this node can tell: this node itself, or a peer with
    /// a live connection. Such a node is never retired (`p2pctl node forget`), whatever the
    /// age of its last status record.
    pub fn reachable(&self, node: &NodeId) -> bool {
        node.0 == self.local.node_id.0
            || peer_id_of(node).is_some_and(|p| self.peers.is_connected(&p))
    }

    /// Whether this node wants a data-plane connection to `peer`: same site, bootstrap, or
    /// among its picks of other sites' peers.
    fn wanted(&self, peer: &PeerId, known: &KnownPeer) -> bool {
        known.site == self.local.site
            || self.peers.is_bootstrap(peer)
            || self.wan_picks().contains(peer)
            || self.aggregate.wants(peer)
    }

    /// The peers of other sites this node dials for chunks: [`NetworkSection::wan_peers`] of
    /// those it knows, by rendezvous hashing ([`scheduler::control::pick_across_sites`]).
    pub(crate) fn wan_picks(&self) -> Vec<PeerId> {
        // One lock at a time: the aggregator's round takes them in another order.
        let bootstrap = self.peers.bootstrap();
        let list: Vec<(PeerId, scheduler::control::Candidate)> = self.peers.with_known(|known| {
            known
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
                .collect()
        });
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
        self.peers.known(peer)
    }

    fn maybe_dial(self: &Arc<Self>, peer: PeerId, known: KnownPeer) {
        // One connection per pair: the smaller peer id dials at once, the larger only if no
        // connection came after DIAL_FALLBACK (the smaller may not know it, or be stuck).
        if self.local.peer_id > peer {
            let net = self.clone();
            tokio::spawn(async move {
                tokio::time::sleep(DIAL_FALLBACK).await;
                if !net.peers.is_connected(&peer) {
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
        let known = self.peers.known_list();
        let connected = self.peers.connected_ids();
        let now = Instant::now();
        let picks: HashSet<PeerId> = self.wan_picks().into_iter().collect();
        let bootstrap = self.peers.bootstrap();
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
            if self.peers.redial_due(peer, now) {
                self.dial_now(peer, k);
            }
        }
    }

    fn dial_now(self: &Arc<Self>, peer: PeerId, known: KnownPeer) {
        if self.local.peer_id == peer || self.is_banned(&peer) {
            return;
        }
        if self.peers.is_connected(&peer) {
            return;
        }
        if !self.make_room_for(&known.site) {
            tracing::debug!(%peer, site = %known.site, "no peer slot left for it; not connecting");
            return;
        }
        if !self.peers.start_dial(peer) {
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
                if net.peers.dial_failed(&peer, Instant::now()) {
                    tracing::debug!(%peer, %addr, "peer forgotten: its dials keep failing");
                }
            }
            net.peers.end_dial(&peer);
        });
    }

    /// Fetches, verifies and starts fetching release `id`, unless known, refused, unservable
    /// lately or in progress. `hint` is the peer that announced it: at most
    /// [`registry::LEARNS_PER_PEER_MAX`] of its announcements are learnt at once, the rest
    /// as those end ([`Net::learn_announced`]), so a peer that floods made-up releases holds
    /// a bounded share of learning, and a hint that denies having the manifest it announced
    /// is struck (three strikes ban it).
    pub(crate) fn learn_release(self: &Arc<Self>, id: ReleaseId, hint: Option<PeerId>) {
        if self.release(&id).is_some()
            || self.registry.is_refused(&id)
            || self.registry.is_unservable(&id)
        {
            return;
        }
        if !self.registry.start_learning(id, hint) {
            return;
        }
        let net = self.clone();
        tokio::spawn(async move {
            let result = net.fetch_manifest(id, hint).await;
            match result {
                Ok(Learnt::Verified(v)) => {
                    // Releases learned together (a node joining late, or back after a
                    // while) are all verified before any is fetched, so the newest version
                    // of a channel supersedes the older ones before they move a byte.
                    let own = net.standing_for(&v);
                    net.registry
                        .learned(id, &v.manifest.channel, v.manifest.version, own);
                    let settle = Instant::now() + LEARN_SETTLE;
                    while net.registry.manifests_pending_except(&id) && Instant::now() < settle {
                        tokio::time::sleep(LEARN_SETTLE_POLL).await;
                    }
                    if let Err(e) = net.begin_fetch(*v).await {
                        tracing::error!(release = %id, error = %e, "cannot start fetch");
                    }
                }
                Ok(Learnt::Stored) => {}
                Ok(Learnt::Unserved { hint_denied }) => {
                    tracing::debug!(release = %id, ?hint, hint_denied,
                        "no peer served the manifest of an announced release");
                    net.registry.note_unservable(id);
                    if let (Some(h), true) = (hint, hint_denied) {
                        net.strike(&h, "announced a release whose manifest it does not have");
                    }
                }
                Err(Error::Older { release, newer }) => {
                    if let Err(e) = net.supersede_unfetched(*release, newer).await {
                        tracing::warn!(release = %id, error = %e, "cannot note a superseded release");
                    }
                }
                Err(e) => {
                    let facts = match &e {
                        Error::NotFollowed(facts) => Some(facts.clone()),
                        _ => None,
                    };
                    match &facts {
                        Some(_) => {
                            tracing::info!(release = %id, error = %e, "not fetching release")
                        }
                        None => tracing::warn!(release = %id, error = %e, "refusing release"),
                    }
                    net.registry.refuse(id, e.to_string(), facts);
                }
            }
            net.registry.end_learning(&id, hint);
            if let Some(h) = hint {
                net.learn_announced(h);
            }
        });
    }

    /// Learns what `peer` announced that this node does not know yet (as many as its share
    /// allows): the releases skipped while it was at [`registry::LEARNS_PER_PEER_MAX`].
    fn learn_announced(self: &Arc<Self>, peer: PeerId) {
        let Some(p) = self.peers.get(&peer) else {
            return;
        };
        for id in p.announced() {
            if self.release(&id).is_none() {
                self.learn_release(id, Some(peer));
            }
        }
    }

    /// Gets the manifest of `id` from a peer and runs the full verification gate.
    async fn fetch_manifest(
        self: &Arc<Self>,
        id: ReleaseId,
        hint: Option<PeerId>,
    ) -> Result<Learnt> {
        let _slot = self.manifest_slots.clone().acquire_owned().await?;
        if self.store.has_release(&id)? {
            return Ok(Learnt::Stored);
        }
        // The hinted peer is asked first; while no copy has come, one more peer is asked
        // every MANIFEST_HEDGE, and the first good copy wins. A copy that fails the gate is
        // set aside while another peer may have a good one. So one hostile peer can neither
        // stall nor poison learning a release. A peer that says it has no such manifest is
        // not asked again; once every peer asked has said so and none other announced it
        // for a hedge interval, the release is unserved (made up, or gone).
        let deadline = Instant::now() + MANIFEST_PATIENCE;
        let mut asked: HashSet<PeerId> = HashSet::new();
        let mut denied: HashSet<PeerId> = HashSet::new();
        let mut pending = futures_util::stream::FuturesUnordered::new();
        let mut refusal: Option<Error> = None;
        let mut hedge = Instant::now();
        loop {
            let now = Instant::now();
            let next = (pending.is_empty() || now >= hedge)
                .then(|| self.manifest_candidates(id, hint))
                .and_then(|c| c.into_iter().find(|p| !asked.contains(&p.id)));
            if let Some(p) = next {
                asked.insert(p.id);
                hedge = now + MANIFEST_HEDGE;
                let net = self.clone();
                pending.push(async move {
                    let answer = net.manifest_from(&p, id).await;
                    (p.id, answer)
                });
            }
            if pending.is_empty() {
                let all_denied = !asked.is_empty() && asked.iter().all(|p| denied.contains(p));
                if let Some(e) = refusal.take() {
                    return Err(e);
                }
                if now >= deadline || (all_denied && now >= hedge) {
                    let hint_denied = hint.is_some_and(|h| denied.contains(&h));
                    return Ok(Learnt::Unserved { hint_denied });
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
                continue;
            }
            // No busy wait: with every candidate asked, look for new ones four times a second.
            let wake = hedge.max(now + Duration::from_millis(250));
            tokio::select! {
                Some((peer, answer)) = futures_util::StreamExt::next(&mut pending) => {
                    match answer.map(|bytes| self.verify_manifest(id, &bytes)) {
                        Ok(Ok(v)) => return Ok(Learnt::Verified(Box::new(v))),
                        Ok(Err(e)) => {
                            tracing::debug!(release = %id, %peer, error = %e,
                                "manifest copy refused; asking another peer");
                            refusal = Some(e);
                        }
                        Err(peer::RequestError::NotFound) => {
                            denied.insert(peer);
                            if Some(peer) == hint {
                                self.registry.note_denied(id);
                            }
                        }
                        // A manifest delta that does not rebuild the manifest: like a bad
                        // copy, the peer is not asked again.
                        Err(e @ peer::RequestError::Protocol(_)) => {
                            tracing::debug!(release = %id, %peer, error = %e,
                                "bad manifest answer; asking another peer");
                        }
                        Err(e) => {
                            // It may answer later (busy, not up yet): it can be asked again.
                            tracing::debug!(release = %id, %peer, error = %e,
                                "manifest request failed");
                            asked.remove(&peer);
                        }
                    }
                }
                () = tokio::time::sleep_until(wake.into()) => {}
            }
        }
    }

    /// The envelope of `id` from peer `p`: as a delta against an earlier manifest of its
    /// channel, rebuilt here and checked against the id, or whole when the peer has no
    /// earlier one or this node lacks the one it used. A delta that does not rebuild the
    /// manifest is the peer's protocol error.
    async fn manifest_from(
        &self,
        p: &Arc<Peer>,
        id: ReleaseId,
    ) -> std::result::Result<Vec<u8>, peer::RequestError> {
        let delta = match p.request_manifest_delta(id).await? {
            peer::ManifestAnswer::Whole(bytes) => return Ok(bytes),
            peer::ManifestAnswer::Delta(d) => d,
        };
        let store = self.store.clone();
        let (base, moved) = (delta.base, delta.envelope.len());
        let rebuilt = tokio::task::spawn_blocking(move || rebuild_manifest(&store, id, &delta))
            .await
            .map_err(|e| peer::RequestError::Transport(e.to_string()))?;
        match rebuilt {
            Ok(Some(bytes)) => {
                self.traffic
                    .manifest_deltas
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::info!(release = %id, %base, moved, whole = bytes.len(),
                    "manifest learnt as a delta against one held");
                Ok(bytes)
            }
            Ok(None) => p.request_manifest(id).await,
            Err(why) => Err(peer::RequestError::Protocol(why)),
        }
    }

    /// Who may serve the manifest of `id`: the hinted peer first, then every connected peer
    /// that announced the release.
    fn manifest_candidates(&self, id: ReleaseId, hint: Option<PeerId>) -> Vec<Arc<Peer>> {
        let mut candidates: Vec<Arc<Peer>> = Vec::new();
        if let Some(h) = hint.and_then(|h| self.peers.get(&h)) {
            candidates.push(h);
        }
        for p in self.peer_list() {
            if p.has_bitmap(&id) && !candidates.iter().any(|c| c.id == p.id) {
                candidates.push(p);
            }
        }
        candidates
    }

    fn verify_manifest(&self, id: ReleaseId, bytes: &[u8]) -> Result<VerifiedRelease> {
        let store = &self.store;
        let policy = self.policy();
        let (v, newer) = match protocol::verify_release(bytes, &policy, now_unix_s(), |channel| {
            store.highest_version(channel).ok().flatten()
        }) {
            // One this node accepted and saw superseded (a restarted node hears of them again):
            // superseded still, not refused. Any other older version is refused (a replay).
            Err(protocol::ManifestError::VersionNotNewer { highest, .. })
                if store.was_superseded(&id).unwrap_or(false) =>
            {
                (
                    protocol::verify_release(bytes, &policy, now_unix_s(), |_| None)?,
                    Some(highest),
                )
            }
            other => (other?, None),
        };
        if v.id != id {
            return Err(Error::WrongManifest {
                asked: id,
                got: v.id,
            });
        }
        if !self.config.follows(&v.manifest.channel) {
            let m = &v.manifest;
            return Err(Error::NotFollowed(RefusedFacts {
                channel: m.channel.clone(),
                version: m.version,
                published_unix_s: m.created_unix_s,
                severity: m.severity,
                chunks_total: m.unique_chunks().len() as u32,
            }));
        }
        ReleaseWindows::of(&v.manifest, self.gates.zone()).map_err(Error::Windows)?;
        match newer {
            Some(newer) => Err(Error::Older {
                release: Box::new(v),
                newer,
            }),
            None => Ok(v),
        }
    }

    async fn begin_fetch(self: &Arc<Self>, v: VerifiedRelease) -> Result<()> {
        self.registry.forget_refusal(&v.id);
        let own = self.standing_for(&v);
        let (channel, version) = (&v.manifest.channel, v.manifest.version);
        if let Some(newer) = self.registry.superseded_by(channel, version, own) {
            return self.supersede_unfetched(v, newer).await;
        }
        let store = self.store.clone();
        let v2 = v.clone();
        let (have, already) = tokio::task::spawn_blocking(move || {
            store.add_pending(&v2)?;
            let chunks = v2.manifest.units();
            let have = store.have_bitmap(&chunks)?;
            let already: u64 = chunks[..v2.manifest.unique_chunks().len()]
                .iter()
                .enumerate()
                .filter(|(i, _)| have.get(*i as u32))
                .map(|(_, c)| u64::from(c.len))
                .sum();
            Ok::<_, Error>((have, already))
        })
        .await??;
        tracing::info!(release = %v.id, channel = %v.manifest.channel, version = v.manifest.version,
            chunks = have.len(), already_have = have.count(), "fetching release");
        // It starts as it stands: a release that waits for its window must not look, even
        // for an instant, like one that runs (it would supersede an older one that runs).
        let state = match own {
            scheduler::versions::Standing::Waiting => ReleaseState::Paused,
            _ => ReleaseState::Fetching,
        };
        let release = Arc::new(Release::new(&v, have, state, true, self.gates.zone()));
        release.reused.store(already, Ordering::Relaxed);
        self.insert_release(release.clone());
        let net = self.clone();
        tokio::spawn(async move { fetch::run(net, release, v).await });
        Ok(())
    }

    /// How a fetch of `v` would start: running, or waiting for its download window. It
    /// decides what the release may be superseded by (scheduler::versions): a newer version
    /// that waits for its window does not hold back one that may go.
    fn standing_for(&self, v: &VerifiedRelease) -> scheduler::versions::Standing {
        let own = ReleaseWindows::of(&v.manifest, self.gates.zone());
        if self.gates.may_download_new(&registry::urgency_of(v), &own) {
            scheduler::versions::Standing::Running
        } else {
            scheduler::versions::Standing::Waiting
        }
    }

    /// `v` is superseded by version `newer` of its channel, which this node knows already:
    /// it is not fetched (an unfinished fetch of it is dropped; what it verified stays in
    /// the store for the newer version to reuse), and it is reported superseded.
    async fn supersede_unfetched(self: &Arc<Self>, v: VerifiedRelease, newer: u64) -> Result<()> {
        let store = self.store.clone();
        let (id, version) = (v.id, v.manifest.version);
        tokio::task::spawn_blocking(move || store.supersede_pending(&id, version)).await??;
        tracing::info!(release = %v.id, channel = %v.manifest.channel, version = v.manifest.version,
            newer, "not fetching: a newer version of the channel is known");
        let n = v.manifest.units().len() as u32;
        let release = Release::new(
            &v,
            Bitmap::new(n),
            ReleaseState::Superseded(newer),
            true,
            self.gates.zone(),
        );
        self.insert_release(Arc::new(release));
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
                peer = self.peers.get(&id);
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

    /// The fetch of `release` stopped: its claims go, and the fetches that waited on them
    /// look again.
    pub(crate) fn unclaim_all(&self, release: &ReleaseId) {
        self.registry.unclaim_all(release);
        self.wake.notify();
    }

    /// Records a bad chunk from `peer`; bans it at [`STRIKES_TO_BAN`].
    pub(crate) fn strike(&self, peer: &PeerId, why: &str) {
        let verdict = self.peers.strike(*peer, self.epoch.elapsed());
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
        if let Some(p) = self.peers.remove(peer) {
            p.close(quic::codes::BANNED, "banned");
        }
        self.wake.notify();
    }

    /// Whether `peer` is banned now.
    pub fn is_banned(&self, peer: &PeerId) -> bool {
        self.peers.is_banned(peer, self.epoch.elapsed())
    }

    /// Peers banned now.
    pub fn banned(&self) -> Vec<PeerId> {
        self.peers.banned(self.epoch.elapsed())
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

/// The envelope of `id` rebuilt from a manifest delta against a manifest this node holds
/// (`None`: it does not hold the delta's base), checked against the id. Blocking.
fn rebuild_manifest(
    store: &Store,
    id: ReleaseId,
    delta: &protocol::wire::ManifestDelta,
) -> std::result::Result<Option<Vec<u8>>, String> {
    let Some(base_env) = store
        .signed_manifest(&delta.base)
        .map_err(|e| e.to_string())?
    else {
        return Ok(None);
    };
    let base = protocol::SignedManifest::decode(&base_env)
        .map_err(|e| format!("stored manifest of the base: {e}"))?
        .manifest_bytes;
    let mut env = protocol::SignedManifest::decode(&delta.envelope).map_err(|e| e.to_string())?;
    let bytes = chunking::patch::apply(&base, &env.manifest_bytes, u64::from(delta.manifest_len))
        .map_err(|e| format!("manifest delta: {e}"))?;
    if ReleaseId::of_manifest_bytes(&bytes) != id {
        return Err("the manifest delta does not rebuild the release's manifest".into());
    }
    env.manifest_bytes = bytes;
    Ok(Some(env.encode()))
}

/// What a committed release's bitmap shows: every chunk (its commit checked them all), and
/// the pieces of its patches the store holds (a node that fetched the chunks has none).
fn committed_units(store: &Store, m: &protocol::Manifest) -> Result<Bitmap> {
    let units = m.units();
    let chunks = m.unique_chunks().len();
    let mut have = Bitmap::new(units.len() as u32);
    for i in 0..chunks as u32 {
        have.set(i);
    }
    if units.len() > chunks {
        for i in store.have_bitmap(&units[chunks..])?.ones() {
            have.set(chunks as u32 + i);
        }
    }
    Ok(have)
}
