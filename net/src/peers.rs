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
    known: Mutex<HashMap<PeerId, KnownPeer>>,
    redials: Mutex<HashMap<PeerId, Instant>>,
    strikes: Mutex<Strikes<PeerId>>,
    bootstrap: Mutex<HashSet<PeerId>>,
    /// Per site, how many of its members this node knew when it last told that site's peers
    /// of them, and when.
    shared: Mutex<HashMap<String, (usize, Option<Instant>)>>,
    /// The latest peers refused for want of a valid certificate, newest last.
    refused: Mutex<std::collections::VecDeque<RefusedPeer>>,
}

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
        lock(&self.known).get(id).cloned()
    }

    /// Forgets where `id` is (it is no longer dialled, unless learnt again).
    pub(crate) fn forget_known(&self, id: &PeerId) {
        lock(&self.known).remove(id);
    }

    /// Every known peer.
    pub(crate) fn known_list(&self) -> Vec<(PeerId, KnownPeer)> {
        lock(&self.known)
            .iter()
            .map(|(p, k)| (*p, k.clone()))
            .collect()
    }

    /// Runs `f` over the known peers, under their lock (for choices over all of them).
    pub(crate) fn with_known<R>(&self, f: impl FnOnce(&HashMap<PeerId, KnownPeer>) -> R) -> R {
        f(&lock(&self.known))
    }

    /// Remembers where `id` is (bounded by [`KNOWN_PEERS_MAX`]). What the peer said of itself
    /// (`own`) replaces what others said of it; what others said only fills a gap, or gives
    /// a LAN address where only a WAN one was known.
    pub(crate) fn learn(&self, id: PeerId, known: KnownPeer, own: bool) {
        let mut k = lock(&self.known);
        if let Some(held) = k.get(&id) {
            if own || (known.lan_known && !held.lan_known) {
                k.insert(id, known);
            }
        } else if k.len() < KNOWN_PEERS_MAX {
            k.insert(id, known);
        }
    }

    /// Members known per site (those whose LAN address is known).
    pub(crate) fn members_per_site(&self) -> HashMap<String, usize> {
        let mut counts: HashMap<String, usize> = HashMap::new();
        for k in lock(&self.known).values().filter(|k| k.lan_known) {
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

    fn at(site: &str, lan_known: bool, port: u16) -> KnownPeer {
        KnownPeer {
            site: site.into(),
            lan: SocketAddr::from(([10, 0, 0, 1], port)),
            wan: SocketAddr::from(([192, 0, 2, 1], port)),
            lan_known,
        }
    }

    #[test]
    fn a_peer_s_own_word_replaces_and_hearsay_only_fills_gaps() {
        let t = PeerTable::default();
        let p = PeerId::random();
        t.learn(p, at("a", false, 1), false);
        // Hearsay with a LAN address beats hearsay without one.
        t.learn(p, at("a", true, 2), false);
        assert_eq!(t.known(&p).unwrap().lan.port(), 2);
        // More hearsay does not replace it.
        t.learn(p, at("a", true, 3), false);
        assert_eq!(t.known(&p).unwrap().lan.port(), 2);
        // The peer's own word does.
        t.learn(p, at("b", false, 4), true);
        assert_eq!(t.known(&p).unwrap().site, "b");
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
