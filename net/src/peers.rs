//! Peers and their reputation: the data-plane connections, the peers the control plane told
//! this node of (where to dial them), dials in progress and their pacing, the bootstrap peers,
//! and strikes and bans ([`scheduler::strikes`]).
//!
//! [`PeerTable`] owns these maps, each behind its own lock, and is the only code that locks
//! them; no method holds two of its locks at once, so callers may call it in any order. What
//! to dial and when is decided by [`crate::Net`] from what the table answers.

use crate::lock;
use crate::peer::Peer;
use libp2p::PeerId;
use scheduler::strikes::{Strikes, Verdict};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Peers remembered from the control plane (where to dial them). Past it, new ones are not
/// remembered; they can still dial us.
pub(crate) const KNOWN_PEERS_MAX: usize = 4096;

/// Least time between two dials of the same disconnected peer.
pub(crate) const REDIAL_INTERVAL: Duration = Duration::from_secs(5);

/// Least time between two peer lists this node sends a site's peers unprompted.
pub(crate) const PEX_INTERVAL: Duration = Duration::from_secs(5);

/// Peers learnt from others and not yet confirmed (by a data-plane connection or their own
/// identify) held at once: made-up entries cost a bounded number of dials, whoever sends
/// them. A fleet's honest hearsay is its site's members and a few peers elsewhere, far
/// fewer.
pub const HEARSAY_MAX: usize = 1024;

/// Unconfirmed peers one source (a peer's lists, or the summaries) may have this node hold
/// at once: a quarter of a peer list. A new node hears of a large site's members a share at
/// a time (each confirmed one frees its place, and peer lists come again as members
/// connect), and one member's made-up lists cannot crowd out the others'.
pub const HEARSAY_PER_SOURCE_MAX: usize = protocol::wire::PEERS_PER_MESSAGE_MAX / 4;

/// Failed dials after which an unconfirmed peer is forgotten and, for
/// [`DISPROVED_TTL`], not taken from anyone again: a made-up identity at someone else's
/// address gets at most this many QUIC handshakes sent there per honest node.
pub const HEARSAY_DIALS_MAX: u8 = 3;

/// How long hearsay that failed [`HEARSAY_DIALS_MAX`] dials is refused.
pub const DISPROVED_TTL: Duration = Duration::from_secs(600);

/// A confirmed peer whose every dial failed for this long is forgotten (it left the fleet,
/// or moved): it comes back by its own identify or its own dial.
pub const KNOWN_GONE_AFTER: Duration = Duration::from_secs(3600);

/// Who told this node where a peer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Told {
    /// The peer itself (identify, with a certificate that verified in a fleet with a root):
    /// confirmed.
    Itself,
    /// A connected peer's peer list: hearsay until a connection confirms it, never passed
    /// on before.
    By(PeerId),
    /// A site summary's contacts (signed by that site's aggregator): hearsay until a
    /// connection confirms it.
    Summary,
}

/// A peer the control plane told us about: where to dial its data plane.
#[derive(Debug, Clone)]
pub struct KnownPeer {
    /// Who said so ([`Told::Itself`] once a connection confirmed it).
    pub told: Told,
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

/// The known peers and the bookkeeping of hearsay among them (one lock).
#[derive(Default)]
struct Known {
    peers: HashMap<PeerId, KnownPeer>,
    /// Unconfirmed peers held, per source ([`Told::By`]; summaries count under `None`).
    per_source: HashMap<Option<PeerId>, usize>,
    /// Failed dials: of an unconfirmed peer, how many; of a confirmed one, since when.
    failing: HashMap<PeerId, (u8, Instant)>,
    /// Hearsay that failed its dials, refused until then.
    disproved: HashMap<PeerId, Instant>,
    /// Per source, how many of its entries were disproved since when: a peer with
    /// [`HEARSAY_PER_SOURCE_MAX`] of them within [`DISPROVED_TTL`] is not listened to
    /// until then (the summaries always are).
    disproved_by: HashMap<Option<PeerId>, (usize, Instant)>,
}

impl Known {
    fn source(told: Told) -> Option<Option<PeerId>> {
        match told {
            Told::Itself => None,
            Told::By(p) => Some(Some(p)),
            Told::Summary => Some(None),
        }
    }

    /// Whether `src`'s hearsay is ignored at `now`: too much of it was disproved lately. The
    /// summaries (`None`) never are: they name other sites' aggregators, which come and go
    /// with those sites, and each stale contact is disproved on its own.
    fn discredited(&self, src: &Option<PeerId>, now: Instant) -> bool {
        src.is_some()
            && self.disproved_by.get(src).is_some_and(|(n, since)| {
                *n >= HEARSAY_PER_SOURCE_MAX && now.duration_since(*since) < DISPROVED_TTL
            })
    }

    fn unconfirmed(&self) -> usize {
        self.per_source.values().sum()
    }

    fn remove(&mut self, id: &PeerId) -> Option<KnownPeer> {
        let held = self.peers.remove(id)?;
        self.untally(held.told);
        self.failing.remove(id);
        Some(held)
    }

    fn untally(&mut self, told: Told) {
        if let Some(src) = Self::source(told) {
            if let Some(n) = self.per_source.get_mut(&src) {
                *n -= 1;
                if *n == 0 {
                    self.per_source.remove(&src);
                }
            }
        }
    }

    fn insert(&mut self, id: PeerId, known: KnownPeer) {
        if let Some(held) = self.peers.remove(&id) {
            self.untally(held.told);
        }
        if let Some(src) = Self::source(known.told) {
            *self.per_source.entry(src).or_default() += 1;
        }
        self.peers.insert(id, known);
    }
}

impl KnownPeer {
    /// Whether this node passes it on in its peer lists: not while it is only what a peer
    /// said (a made-up entry goes no further than the node it was sent to).
    pub fn shareable(&self) -> bool {
        !matches!(self.told, Told::By(_))
    }
}

/// Why a new connection was not registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// A live connection to the same instance exists, and it is the one both ends keep.
    Duplicate,
}

/// Peers and their reputation; see the module docs.
#[derive(Default)]
pub(crate) struct PeerTable {
    connected: Mutex<HashMap<PeerId, Arc<Peer>>>,
    dialing: Mutex<HashSet<PeerId>>,
    known: Mutex<Known>,
    redials: Mutex<HashMap<PeerId, Instant>>,
    strikes: Mutex<Strikes<PeerId>>,
    bootstrap: Mutex<HashSet<PeerId>>,
    /// Per site, how many of its members this node knew when it last told that site's peers
    /// of them, and when.
    shared: Mutex<HashMap<String, (usize, Option<Instant>)>>,
    /// The latest peers refused for want of a valid certificate, newest last.
    refused: Mutex<std::collections::VecDeque<RefusedPeer>>,
    /// In a fleet with a root: the certificates of this site's members that this node
    /// verified itself (on either plane), by node key. A status record relayed by the
    /// site's aggregator is taken only for one of them (checked again when used, so a
    /// revoked or expired one no longer counts).
    certified: Mutex<HashMap<[u8; 32], protocol::cert::SignedCert>>,
}

/// Most site members whose certificates are kept ([`PeerTable::note_certified`]): as many
/// nodes as a site's view holds.
pub(crate) const CERTIFIED_MEMBERS_MAX: usize = protocol::summary::SITE_NODES_MAX as usize;

/// Most refusals remembered ([`PeerTable::refused`]): enough to see who knocks, bounded
/// against a stranger that knocks with a new key each time.
pub(crate) const REFUSED_KEPT_MAX: usize = 64;

/// A peer refused on the data plane for want of a valid certificate.
#[derive(Debug, Clone)]
pub struct RefusedPeer {
    /// Its peer id.
    pub peer: PeerId,
    /// Where it came from.
    pub addr: std::net::SocketAddr,
    /// Why.
    pub reason: String,
    /// When, unix seconds.
    pub at_unix_s: i64,
}

impl PeerTable {
    /// Notes a refused peer (the newest [`REFUSED_KEPT_MAX`] are kept).
    pub(crate) fn note_refused(&self, peer: PeerId, addr: std::net::SocketAddr, reason: String) {
        let mut list = lock(&self.refused);
        if list.len() >= REFUSED_KEPT_MAX {
            list.pop_front();
        }
        list.push_back(RefusedPeer {
            peer,
            addr,
            reason,
            at_unix_s: jiff::Timestamp::now().as_second(),
        });
    }

    /// Keeps `cert`, which this node verified, as that of site member `node` (a newer one
    /// replaces it). Past [`CERTIFIED_MEMBERS_MAX`], those expired at `now_unix_s` leave
    /// first; if none has, the newcomer is not kept.
    pub(crate) fn note_certified(
        &self,
        node: [u8; 32],
        cert: protocol::cert::SignedCert,
        now_unix_s: i64,
    ) {
        let mut certified = lock(&self.certified);
        if certified.len() >= CERTIFIED_MEMBERS_MAX && !certified.contains_key(&node) {
            certified.retain(|_, c| c.cert.expires_unix_s > now_unix_s);
            if certified.len() >= CERTIFIED_MEMBERS_MAX {
                return;
            }
        }
        certified.insert(node, cert);
    }

    /// The certificate this node verified for site member `node`, if any.
    pub(crate) fn certified(&self, node: &[u8; 32]) -> Option<protocol::cert::SignedCert> {
        lock(&self.certified).get(node).cloned()
    }

    /// The peers refused lately, newest last.
    pub(crate) fn refused(&self) -> Vec<RefusedPeer> {
        lock(&self.refused).iter().cloned().collect()
    }

    /// Connected peers.
    pub(crate) fn list(&self) -> Vec<Arc<Peer>> {
        lock(&self.connected).values().cloned().collect()
    }

    /// The connected peer `id`.
    pub(crate) fn get(&self, id: &PeerId) -> Option<Arc<Peer>> {
        lock(&self.connected).get(id).cloned()
    }

    /// Whether `id` has a data-plane connection.
    pub(crate) fn is_connected(&self, id: &PeerId) -> bool {
        lock(&self.connected).contains_key(id)
    }

    /// Connected peers, counted.
    pub(crate) fn count(&self) -> usize {
        lock(&self.connected).len()
    }

    /// The ids of the connected peers.
    pub(crate) fn connected_ids(&self) -> HashSet<PeerId> {
        lock(&self.connected).keys().copied().collect()
    }

    /// Registers a new connection to `peer`. Two live connections (both sides dialed at
    /// once): both ends keep the one the smaller peer id dialed, so they agree; a dead one,
    /// or one to an earlier instance of the peer (it restarted), is always replaced, and is
    /// returned to be closed.
    pub(crate) fn register(
        &self,
        peer: Arc<Peer>,
        local: &PeerId,
    ) -> Result<Option<Arc<Peer>>, Refusal> {
        let mut connected = lock(&self.connected);
        if let Some(old) = connected.get(&peer.id) {
            let old_alive = old.conn.close_reason().is_none() && old.instance == peer.instance;
            let new_by_smaller = (*local < peer.id) == peer.dialed;
            let old_by_smaller = (*local < peer.id) == old.dialed;
            if old_alive && old_by_smaller && !new_by_smaller {
                return Err(Refusal::Duplicate);
            }
        }
        Ok(connected.insert(peer.id, peer))
    }

    /// The connection `peer` closed: it leaves the table unless a newer one replaced it.
    pub(crate) fn unregister(&self, peer: &Arc<Peer>) {
        let mut connected = lock(&self.connected);
        if connected
            .get(&peer.id)
            .is_some_and(|p| Arc::ptr_eq(p, peer))
        {
            connected.remove(&peer.id);
        }
    }

    /// Drops `id`'s connection from the table (to be closed by the caller).
    pub(crate) fn remove(&self, id: &PeerId) -> Option<Arc<Peer>> {
        lock(&self.connected).remove(id)
    }

    /// Notes a dial of `id` starting; false if one is already under way.
    pub(crate) fn start_dial(&self, id: PeerId) -> bool {
        lock(&self.dialing).insert(id)
    }

    /// The dial of `id` ended (connected or not).
    pub(crate) fn end_dial(&self, id: &PeerId) {
        lock(&self.dialing).remove(id);
    }

    /// Whether `id` may be redialed at `now` (at most every [`REDIAL_INTERVAL`]); if so, the
    /// attempt is noted.
    pub(crate) fn redial_due(&self, id: PeerId, now: Instant) -> bool {
        let mut attempts = lock(&self.redials);
        match attempts.get(&id) {
            Some(t) if now.duration_since(*t) < REDIAL_INTERVAL => false,
            _ => {
                if attempts.len() >= KNOWN_PEERS_MAX {
                    attempts.retain(|_, t| now.duration_since(*t) < REDIAL_INTERVAL);
                }
                attempts.insert(id, now);
                true
            }
        }
    }

    /// Where `id` is, if known.
    pub(crate) fn known(&self, id: &PeerId) -> Option<KnownPeer> {
        lock(&self.known).peers.get(id).cloned()
    }

    /// Forgets where `id` is (it is no longer dialled, unless learnt again).
    pub(crate) fn forget_known(&self, id: &PeerId) {
        lock(&self.known).remove(id);
    }

    /// Every known peer.
    pub(crate) fn known_list(&self) -> Vec<(PeerId, KnownPeer)> {
        lock(&self.known)
            .peers
            .iter()
            .map(|(p, k)| (*p, k.clone()))
            .collect()
    }

    /// Runs `f` over the known peers, under their lock (for choices over all of them).
    pub(crate) fn with_known<R>(&self, f: impl FnOnce(&HashMap<PeerId, KnownPeer>) -> R) -> R {
        f(&lock(&self.known).peers)
    }

    /// Remembers where `id` is (bounded by [`KNOWN_PEERS_MAX`]). What the peer said of itself
    /// ([`Told::Itself`]) replaces what others said of it; what others said only fills a
    /// gap, or gives a LAN address where only a WAN one was known. New hearsay is bounded
    /// ([`HEARSAY_MAX`] in all, [`HEARSAY_PER_SOURCE_MAX`] per source) and refused for a
    /// while once disproved ([`PeerTable::dial_failed`]). Whether it is held.
    pub(crate) fn learn(&self, id: PeerId, known: KnownPeer, now: Instant) -> bool {
        let mut k = lock(&self.known);
        if known.told == Told::Itself {
            k.disproved.remove(&id);
            k.failing.remove(&id);
            if k.peers.contains_key(&id) || k.peers.len() < KNOWN_PEERS_MAX {
                k.insert(id, known);
                return true;
            }
            return false;
        }
        if let Some(held) = k.peers.get(&id) {
            // Hearsay never changes what a peer or a connection confirmed; it only gives a
            // LAN address to hearsay without one (still hearsay, of the first source).
            if held.told != Told::Itself && known.lan_known && !held.lan_known {
                let told = held.told;
                k.insert(id, KnownPeer { told, ..known });
            }
            return true;
        }
        if k.disproved
            .get(&id)
            .is_some_and(|t| now.duration_since(*t) < DISPROVED_TTL)
        {
            return false;
        }
        let src = Known::source(known.told).expect("hearsay has a source");
        if k.discredited(&src, now)
            || k.peers.len() >= KNOWN_PEERS_MAX
            || k.unconfirmed() >= HEARSAY_MAX
            || k.per_source.get(&src).copied().unwrap_or(0) >= HEARSAY_PER_SOURCE_MAX
        {
            return false;
        }
        k.insert(id, known);
        true
    }

    /// A data-plane connection to `id` was made: where it is is confirmed.
    pub(crate) fn confirm(&self, id: &PeerId) {
        let mut k = lock(&self.known);
        k.failing.remove(id);
        k.disproved.remove(id);
        if let Some(held) = k.peers.get(id).cloned() {
            if held.told != Told::Itself {
                k.insert(
                    *id,
                    KnownPeer {
                        told: Told::Itself,
                        ..held
                    },
                );
            }
        }
    }

    /// A dial of `id` failed at `now`. Unconfirmed, it is forgotten after
    /// [`HEARSAY_DIALS_MAX`] failures and refused for [`DISPROVED_TTL`], and counts against
    /// the source that told of it (one with [`HEARSAY_PER_SOURCE_MAX`] disproved entries
    /// within [`DISPROVED_TTL`] is not listened to until then); confirmed, after
    /// [`KNOWN_GONE_AFTER`] of nothing but failures. Whether it was forgotten.
    pub(crate) fn dial_failed(&self, id: &PeerId, now: Instant) -> bool {
        let mut k = lock(&self.known);
        let Some(told) = k.peers.get(id).map(|h| h.told) else {
            return false;
        };
        let (n, since) = {
            let e = k.failing.entry(*id).or_insert((0, now));
            e.0 = e.0.saturating_add(1);
            *e
        };
        let gone = if told == Told::Itself {
            now.duration_since(since) >= KNOWN_GONE_AFTER
        } else {
            n >= HEARSAY_DIALS_MAX
        };
        if !gone {
            return false;
        }
        k.remove(id);
        if let Some(src) = Known::source(told) {
            if k.disproved_by.len() >= KNOWN_PEERS_MAX && !k.disproved_by.contains_key(&src) {
                k.disproved_by
                    .retain(|_, (_, t)| now.duration_since(*t) < DISPROVED_TTL);
            }
            if k.disproved_by.len() < KNOWN_PEERS_MAX || k.disproved_by.contains_key(&src) {
                let e = k.disproved_by.entry(src).or_insert((0, now));
                if now.duration_since(e.1) >= DISPROVED_TTL {
                    *e = (0, now);
                }
                e.0 += 1;
            }
            if k.disproved.len() >= KNOWN_PEERS_MAX {
                k.disproved
                    .retain(|_, t| now.duration_since(*t) < DISPROVED_TTL);
            }
            if k.disproved.len() < KNOWN_PEERS_MAX {
                k.disproved.insert(*id, now);
            }
        }
        true
    }

    /// Members known per site (those whose LAN address is known).
    pub(crate) fn members_per_site(&self) -> HashMap<String, usize> {
        let mut counts: HashMap<String, usize> = HashMap::new();
        for k in lock(&self.known)
            .peers
            .values()
            .filter(|k| k.lan_known && k.shareable())
        {
            *counts.entry(k.site.clone()).or_default() += 1;
        }
        counts
    }

    /// Whether `site`'s peers should hear of its `members` now: more than when they were
    /// last told, and not within [`PEX_INTERVAL`] of it.
    pub(crate) fn share_due(&self, site: &str, members: usize, now: Instant) -> bool {
        let (told, at) = lock(&self.shared).get(site).copied().unwrap_or((0, None));
        members > told && at.is_none_or(|t| now.duration_since(t) >= PEX_INTERVAL)
    }

    /// `site`'s peers were told of its `members` at `now`.
    pub(crate) fn shared(&self, site: String, members: usize, now: Instant) {
        let mut shared = lock(&self.shared);
        if shared.len() >= KNOWN_PEERS_MAX && !shared.contains_key(&site) {
            shared.clear();
        }
        shared.insert(site, (members, Some(now)));
    }

    /// Notes the bootstrap peers.
    pub(crate) fn set_bootstrap(&self, peers: Vec<PeerId>) {
        *lock(&self.bootstrap) = peers.into_iter().collect();
    }

    /// The bootstrap peers.
    pub(crate) fn bootstrap(&self) -> HashSet<PeerId> {
        lock(&self.bootstrap).clone()
    }

    /// Whether `id` is a bootstrap peer.
    pub(crate) fn is_bootstrap(&self, id: &PeerId) -> bool {
        lock(&self.bootstrap).contains(id)
    }

    /// Records a strike against `id` at `now` (time since the node started).
    pub(crate) fn strike(&self, id: PeerId, now: Duration) -> Verdict {
        lock(&self.strikes).strike(id, now)
    }

    /// Whether `id` is banned at `now`.
    pub(crate) fn is_banned(&self, id: &PeerId, now: Duration) -> bool {
        lock(&self.strikes).is_banned(id, now)
    }

    /// Peers banned at `now`.
    pub(crate) fn banned(&self, now: Duration) -> Vec<PeerId> {
        lock(&self.strikes).banned(now).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(site: &str, lan_known: bool, port: u16, told: Told) -> KnownPeer {
        KnownPeer {
            told,
            site: site.into(),
            lan: SocketAddr::from(([10, 0, 0, 1], port)),
            wan: SocketAddr::from(([192, 0, 2, 1], port)),
            lan_known,
        }
    }

    #[test]
    fn a_peer_s_own_word_replaces_and_hearsay_only_fills_gaps() {
        let t = PeerTable::default();
        let now = Instant::now();
        let (p, src) = (PeerId::random(), Told::By(PeerId::random()));
        assert!(t.learn(p, at("a", false, 1, src), now));
        // Hearsay with a LAN address beats hearsay without one.
        t.learn(p, at("a", true, 2, Told::Summary), now);
        assert_eq!(t.known(&p).unwrap().lan.port(), 2);
        // More hearsay does not replace it.
        t.learn(p, at("a", true, 3, src), now);
        assert_eq!(t.known(&p).unwrap().lan.port(), 2);
        assert!(!t.known(&p).unwrap().shareable());
        // The peer's own word does, and confirms it.
        t.learn(p, at("b", false, 4, Told::Itself), now);
        assert_eq!(t.known(&p).unwrap().site, "b");
        assert!(t.known(&p).unwrap().shareable());
    }

    #[test]
    fn hearsay_is_bounded_per_source_and_in_all() {
        let t = PeerTable::default();
        let now = Instant::now();
        let (a, b) = (PeerId::random(), PeerId::random());
        let held = |src: PeerId, n: usize| {
            (0..n)
                .filter(|_| t.learn(PeerId::random(), at("x", true, 1, Told::By(src)), now))
                .count()
        };
        assert_eq!(held(a, HEARSAY_PER_SOURCE_MAX + 10), HEARSAY_PER_SOURCE_MAX);
        // Another source has its own share, up to the bound on all hearsay.
        let sources = HEARSAY_MAX / HEARSAY_PER_SOURCE_MAX;
        for _ in 1..sources {
            assert_eq!(
                held(PeerId::random(), HEARSAY_PER_SOURCE_MAX),
                HEARSAY_PER_SOURCE_MAX
            );
        }
        assert_eq!(held(b, 1), 0);
        // A peer's own word is not hearsay: it is still taken.
        assert!(t.learn(PeerId::random(), at("x", true, 1, Told::Itself), now));
        // A confirmed entry frees its source's share.
        let one = t
            .known_list()
            .into_iter()
            .find(|(_, k)| k.told == Told::By(a))
            .unwrap()
            .0;
        t.confirm(&one);
        assert_eq!(t.known(&one).unwrap().told, Told::Itself);
        assert_eq!(held(b, 2), 1);
    }

    #[test]
    fn hearsay_that_fails_its_dials_is_forgotten_and_refused_for_a_while() {
        let t = PeerTable::default();
        let now = Instant::now();
        let (p, src) = (PeerId::random(), Told::By(PeerId::random()));
        t.learn(p, at("x", true, 1, src), now);
        for i in 1..HEARSAY_DIALS_MAX {
            assert!(!t.dial_failed(&p, now + REDIAL_INTERVAL * i.into()));
        }
        assert!(t.dial_failed(&p, now + REDIAL_INTERVAL * HEARSAY_DIALS_MAX.into()));
        assert!(t.known(&p).is_none());
        // Told again, from anyone: refused until the time is up.
        assert!(!t.learn(p, at("x", true, 1, Told::Summary), now + DISPROVED_TTL / 2));
        assert!(t.learn(p, at("x", true, 1, src), now + DISPROVED_TTL * 2));
        // Its own word is always taken.
        let q = PeerId::random();
        t.learn(q, at("x", true, 1, src), now);
        for _ in 0..HEARSAY_DIALS_MAX {
            t.dial_failed(&q, now);
        }
        assert!(t.learn(q, at("x", true, 1, Told::Itself), now));
    }

    #[test]
    fn a_source_whose_hearsay_keeps_failing_is_not_listened_to_for_a_while() {
        let t = PeerTable::default();
        let now = Instant::now();
        let (liar, honest) = (Told::By(PeerId::random()), Told::By(PeerId::random()));
        for _ in 0..HEARSAY_PER_SOURCE_MAX {
            let p = PeerId::random();
            assert!(t.learn(p, at("x", true, 1, liar), now));
            for _ in 0..HEARSAY_DIALS_MAX {
                t.dial_failed(&p, now);
            }
            assert!(t.known(&p).is_none());
        }
        assert!(!t.learn(PeerId::random(), at("x", true, 1, liar), now));
        assert!(t.learn(PeerId::random(), at("x", true, 1, honest), now));
        assert!(t.learn(
            PeerId::random(),
            at("x", true, 1, liar),
            now + DISPROVED_TTL
        ));
        // Summaries' contacts are disproved one by one, never all at once.
        for _ in 0..HEARSAY_PER_SOURCE_MAX {
            let p = PeerId::random();
            assert!(t.learn(p, at("y", false, 1, Told::Summary), now));
            for _ in 0..HEARSAY_DIALS_MAX {
                t.dial_failed(&p, now);
            }
        }
        assert!(t.learn(PeerId::random(), at("y", false, 1, Told::Summary), now));
    }

    #[test]
    fn a_confirmed_peer_is_forgotten_only_after_an_hour_of_failed_dials() {
        let t = PeerTable::default();
        let now = Instant::now();
        let p = PeerId::random();
        t.learn(p, at("x", true, 1, Told::Itself), now);
        assert!(!t.dial_failed(&p, now));
        assert!(!t.dial_failed(&p, now + KNOWN_GONE_AFTER / 2));
        // A connection in between starts the count again.
        t.confirm(&p);
        assert!(!t.dial_failed(&p, now + KNOWN_GONE_AFTER));
        assert!(t.known(&p).is_some());
        assert!(t.dial_failed(&p, now + KNOWN_GONE_AFTER * 2));
        assert!(t.known(&p).is_none());
    }

    #[test]
    fn redials_are_paced_per_peer() {
        let t = PeerTable::default();
        let (p, q) = (PeerId::random(), PeerId::random());
        let now = Instant::now();
        assert!(t.redial_due(p, now));
        assert!(!t.redial_due(p, now + REDIAL_INTERVAL / 2));
        assert!(t.redial_due(q, now + REDIAL_INTERVAL / 2));
        assert!(t.redial_due(p, now + REDIAL_INTERVAL));
    }

    #[test]
    fn a_site_hears_of_its_members_when_there_are_more_and_not_too_often() {
        let t = PeerTable::default();
        let now = Instant::now();
        assert!(t.share_due("a", 3, now));
        t.shared("a".into(), 3, now);
        assert!(!t.share_due("a", 3, now + PEX_INTERVAL * 2));
        assert!(!t.share_due("a", 4, now + PEX_INTERVAL / 2));
        assert!(t.share_due("a", 4, now + PEX_INTERVAL));
    }

    #[test]
    fn a_dial_runs_once_at_a_time() {
        let t = PeerTable::default();
        let p = PeerId::random();
        assert!(t.start_dial(p));
        assert!(!t.start_dial(p));
        t.end_dial(&p);
        assert!(t.start_dial(p));
    }
}
