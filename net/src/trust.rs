//! The fleet root, the revocation list and the fleet orders, spreading from node to node.
//!
//! Every hello carries the versions of the newest root, of the revocation list and of the
//! fleet orders ([`protocol::orders`]) the sender holds; a node that takes a newer one (from
//! `p2pctl root publish`, `p2pctl node revoke`, `p2pctl rollout …`, or a peer) tells every
//! connected peer its new versions ([`Control::Trust`], a few bytes). A peer that is behind
//! asks the one that told it ([`Request::Roots`] from its own version, then
//! [`Request::Revocations`], then [`Request::Orders`]), takes what verifies (a root only as
//! the next step of the chain, signed by the one before's threshold and its own; a list
//! only newer and signed by an operator or CA key of the root; orders only newer and signed
//! by an operator key), and tells its own peers in turn. So a revocation or an operator's
//! command crosses the fleet in one round trip per hop of the connection graph, and a node
//! that was away catches up at its first connection. One catch-up runs at a time; when it
//! ends, any peer still ahead starts the next.
//!
//! What a new root or list changes at once: the trust policy (the root's publishers), the
//! membership every admission checks, and the connected peers, each checked again; one whose
//! certificate no longer verifies or is revoked is disconnected (`UNCERTIFIED`), listed in
//! `p2pctl peers --refused`, forgotten as a known peer (so it is not dialled again) and, when
//! revoked, its status record leaves the fleet view.
//!
//! A rotation that replaces the CA key should keep the old one in the root until every node
//! holds a certificate from the new one: a node that has not taken the new root yet refuses
//! a certificate from a CA it does not know (and learns the root from its other peers).

use crate::Net;
use crate::peer::Peer;
use crate::quic::codes;
use protocol::orders::SignedOrders;
use protocol::revoke::SignedRevocations;
use protocol::root::SignedRoot;
use protocol::wire::{Control, Request};
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// Why a root or list handed to [`Net::take_roots`] or [`Net::take_revocations`] was not taken.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// This node holds no fleet root.
    #[error("this node holds no fleet root (`p2pd init --root`)")]
    NoRoot,
    /// It does not verify or does not follow what is held.
    #[error("{0}")]
    Refused(String),
    /// The store failed.
    #[error("store: {0}")]
    Store(String),
}

impl Net {
    /// The version of the newest root this node holds, and of its revocation list as (root
    /// version it was made under, version), the order lists replace each other in; zeros:
    /// none.
    pub fn trust_versions(&self) -> (u64, (u64, u64)) {
        self.membership().map_or((0, (0, 0)), |m| {
            (m.root.version, (m.revoked.root_version, m.revoked.version))
        })
    }

    /// The fleet orders this node holds, as (root version they were made under, version);
    /// zeros: none.
    pub fn orders_version(&self) -> (u64, u64) {
        let o = self.orders();
        (o.root_version, o.version)
    }

    /// Takes `signed` if they verify under the root held and are newer than the orders
    /// held; then the installer and the rollback of this node act on them, and peers are
    /// told. Returns what changed, one line each.
    pub fn take_orders(self: &Arc<Self>, signed: &SignedOrders) -> Result<Vec<String>, TrustError> {
        if self.membership().is_none() {
            return Err(TrustError::NoRoot);
        }
        let from = self.orders_version();
        let changes = self.store.take_orders(signed).map_err(|e| match e {
            store::orders::TakeOrdersError::Store(e) => TrustError::Store(e.to_string()),
            e => TrustError::Refused(e.to_string()),
        })?;
        let o = &signed.orders;
        tracing::info!(fleet = %o.fleet, from = from.1, to = o.version, changes = %changes.join("; "),
            "fleet orders taken");
        self.orders.send_replace(Arc::new(o.clone()));
        self.trust_changed();
        Ok(changes)
    }

    /// Takes what of `chain` follows the root held (each step verified in the store); then
    /// the trust policy and membership follow the newest, connected peers are checked again,
    /// and peers are told. Returns the version held afterwards.
    pub fn take_roots(self: &Arc<Self>, chain: &[SignedRoot]) -> Result<u64, TrustError> {
        let Some(m) = self.membership() else {
            return Err(TrustError::NoRoot);
        };
        let now = jiff::Timestamp::now().as_second();
        let (taken, err) = self
            .store
            .take_roots(chain, now)
            .map_err(|e| TrustError::Store(e.to_string()))?;
        let Some(newest) = taken.last() else {
            return match err {
                Some(e) => Err(TrustError::Refused(e.to_string())),
                None => Ok(m.root.version),
            };
        };
        let root = newest.signed.clone();
        tracing::info!(fleet = %root.fleet, from = m.root.version, to = root.version,
            publishers = root.publishers.len(), "fleet root taken");
        if let Some(e) = &err {
            tracing::warn!(error = %e, "a later root of the chain was refused");
        }
        let own = protocol::cert::SignedCert::decode(&m.cert)
            .map_err(|e| e.to_string())
            .and_then(|c| {
                c.verify(&root, &self.local.node_id, now)
                    .map_err(|e| e.to_string())
            });
        if let Err(e) = own {
            tracing::error!(error = %e, "this node's certificate does not verify under the new root: peers will refuse it; enroll it again");
        }
        self.policy.set(root.trust_policy());
        let version = root.version;
        self.set_membership(crate::Membership {
            root,
            cert: m.cert.clone(),
            revoked: m.revoked.clone(),
        });
        self.trust_changed();
        Ok(version)
    }

    /// Takes `list` if it verifies under the root held and is newer than the list held;
    /// then revoked peers are disconnected and their records dropped, and peers are told.
    pub fn take_revocations(self: &Arc<Self>, list: &SignedRevocations) -> Result<u64, TrustError> {
        let Some(m) = self.membership() else {
            return Err(TrustError::NoRoot);
        };
        self.store.take_revocations(list).map_err(|e| match e {
            store::roots::TakeRevocationsError::Store(e) => TrustError::Store(e.to_string()),
            e => TrustError::Refused(e.to_string()),
        })?;
        let revoked = list.list.clone();
        tracing::info!(fleet = %revoked.fleet, from = m.revoked.version, to = revoked.version,
            revoked = revoked.entries.len(), "revocation list taken");
        if let Some(fleet) = self.fleet.get() {
            for e in &revoked.entries {
                if m.revoked.entry(&e.node) != Some(e) && fleet.drop_revoked(&e.node, e.at_unix_s) {
                    tracing::info!(node = %e.node.to_hex(), "revoked node's record dropped");
                }
            }
        }
        let version = revoked.version;
        self.set_membership(crate::Membership {
            root: m.root.clone(),
            cert: m.cert.clone(),
            revoked,
        });
        self.trust_changed();
        Ok(version)
    }

    /// Replaces this node's own certificate (a renewal, `p2pctl node renew`): the store has
    /// verified it. Hellos from now on show it.
    pub fn set_own_cert(&self, cert: Vec<u8>) {
        if let Some(m) = self.membership() {
            self.set_membership(crate::Membership {
                root: m.root.clone(),
                cert,
                revoked: m.revoked.clone(),
            });
            self.own_cert_changed.notify_one();
        }
    }

    /// After a newer root or list: every connected peer checked again (disconnected if it
    /// fails), and every peer that is behind told the new versions.
    fn trust_changed(self: &Arc<Self>) {
        let Some(m) = self.membership() else {
            return;
        };
        let now = jiff::Timestamp::now().as_second();
        let (root_version, revocations) = self.trust_versions();
        let orders = self.orders_version();
        for peer in self.peer_list() {
            if let Some(cert) = &peer.cert {
                let node = protocol::NodeId(peer.node_key);
                if let Err(why) = m.check(cert, &node, now) {
                    self.refuse(&peer, why);
                    continue;
                }
            }
            if peer.behind(root_version, revocations, orders) {
                peer.send_control(Control::Trust {
                    root_version,
                    revocations,
                    orders,
                });
            }
        }
        self.wake.notify();
    }

    /// Disconnects a connected peer that no longer passes the membership check.
    fn refuse(&self, peer: &Arc<Peer>, why: String) {
        tracing::warn!(peer = %peer.id, site = %peer.site, reason = %why,
            "peer disconnected: its certificate no longer admits it");
        self.peers.note_refused(peer.id, peer.addr, why);
        self.peers.forget_known(&peer.id);
        peer.close(codes::UNCERTIFIED, "certificate revoked or no longer valid");
        self.peers.unregister(peer);
    }

    /// A peer's hello or [`Control::Trust`] gave the versions it holds: if it is ahead and no
    /// catch-up is under way, catch up from it.
    pub(crate) fn on_trust_versions(self: &Arc<Self>, peer: &Arc<Peer>) {
        let (root, revocations) = self.trust_versions();
        let orders = self.orders_version();
        if self.membership().is_none() || !peer.ahead(root, revocations, orders) {
            return;
        }
        if self.trust_fetching.swap(true, Ordering::AcqRel) {
            return;
        }
        let net = self.clone();
        let peer = peer.clone();
        tokio::spawn(async move {
            let mut from = Some(peer);
            while let Some(peer) = from.take() {
                net.catch_up(&peer).await;
                // Another peer may be ahead still (it told us while this one ran).
                let (root, revocations) = net.trust_versions();
                let orders = net.orders_version();
                from = net
                    .peer_list()
                    .into_iter()
                    .find(|p| !Arc::ptr_eq(p, &peer) && p.ahead(root, revocations, orders));
            }
            net.trust_fetching.store(false, Ordering::Release);
        });
    }

    /// Asks `peer` for the roots after ours, then for its revocation list, then for its
    /// fleet orders, taking what verifies. A peer that answers with something that does not
    /// verify is struck.
    async fn catch_up(self: &Arc<Self>, peer: &Arc<Peer>) {
        let held = self.trust_versions().0;
        if peer.root_version.load(Ordering::Relaxed) > held {
            let list = match peer.request_roots(held).await {
                Ok(list) => list,
                Err(e) => {
                    tracing::debug!(peer = %peer.id, error = %e, "fleet roots not fetched");
                    return;
                }
            };
            let chain = match list
                .iter()
                .map(|b| SignedRoot::decode(b))
                .collect::<Result<Vec<_>, _>>()
            {
                Ok(chain) => chain,
                Err(e) => {
                    self.strike(&peer.id, &format!("fleet roots do not decode: {e}"));
                    return;
                }
            };
            let net = self.clone();
            match tokio::task::spawn_blocking(move || net.take_roots(&chain)).await {
                Ok(Ok(v)) if v > held => {}
                Ok(Ok(_)) => tracing::debug!(peer = %peer.id, "peer's roots add nothing"),
                Ok(Err(TrustError::Refused(e))) => {
                    self.strike(&peer.id, &format!("fleet root refused: {e}"));
                }
                // This node's store, not the peer's answer.
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "fleet roots from a peer not taken");
                    return;
                }
                Err(_) => return,
            }
        }
        let revocations = Document {
            what: "revocation list",
            theirs: *crate::lock(&peer.revocations),
            held: |net| net.trust_versions().1,
            request: Request::Revocations,
            take: |net, bytes| {
                let list =
                    SignedRevocations::decode(bytes).map_err(|e| Taken::Garbled(e.to_string()))?;
                net.take_revocations(&list).map(|_| ()).map_err(Taken::Not)
            },
            excused: |_| false,
        };
        if !self.catch_up_document(peer, revocations).await {
            return;
        }
        let orders = Document {
            what: "fleet orders",
            theirs: *crate::lock(&peer.orders),
            held: Self::orders_version,
            request: Request::Orders,
            take: |net, bytes| {
                let signed =
                    SignedOrders::decode(bytes).map_err(|e| Taken::Garbled(e.to_string()))?;
                net.take_orders(&signed).map(|_| ()).map_err(Taken::Not)
            },
            // Made under a root this node does not hold yet: the next catch-up brings it.
            excused: |e| e.contains("newer than root"),
        };
        self.catch_up_document(peer, orders).await;
    }

    /// One step of [`Net::catch_up`] for a whole, versioned document: when `peer` holds a
    /// newer one than this node, asks for it and takes it if it verifies. A peer whose answer
    /// does not decode or is refused is struck, unless it was taken meanwhile from another
    /// peer or `excused` says the refusal is not the peer's fault. `false` when the catch-up
    /// should stop here (the answer did not come, or did not decode).
    async fn catch_up_document(self: &Arc<Self>, peer: &Arc<Peer>, doc: Document) -> bool {
        let held = (doc.held)(self);
        if doc.theirs <= held {
            return true;
        }
        let bytes = match peer.request_records(doc.request).await {
            Ok(bytes) => bytes,
            Err(e) => {
                tracing::debug!(peer = %peer.id, error = %e, what = doc.what, "not fetched");
                return false;
            }
        };
        let net = self.clone();
        let take = doc.take;
        match tokio::task::spawn_blocking(move || take(&net, &bytes)).await {
            Ok(Ok(())) => {}
            Ok(Err(Taken::Garbled(e))) => {
                self.strike(&peer.id, &format!("{} does not decode: {e}", doc.what));
                return false;
            }
            // Taken meanwhile from another peer, or excused: not the peer's fault.
            Ok(Err(Taken::Not(TrustError::Refused(e))))
                if (doc.held)(self) > held || (doc.excused)(&e) =>
            {
                tracing::debug!(peer = %peer.id, error = %e, what = doc.what, "not taken now");
            }
            Ok(Err(Taken::Not(TrustError::Refused(e)))) => {
                self.strike(&peer.id, &format!("{} refused: {e}", doc.what));
            }
            Ok(Err(Taken::Not(e))) => {
                tracing::error!(error = %e, what = doc.what, "not taken from a peer");
            }
            Err(_) => {}
        }
        true
    }
}

/// A whole, versioned document a catch-up asks a peer for ([`Net::catch_up_document`]).
struct Document {
    /// What it is, for the log and strikes.
    what: &'static str,
    /// The version the peer holds.
    theirs: (u64, u64),
    /// The version this node holds.
    held: fn(&Net) -> (u64, u64),
    /// The request for it.
    request: Request,
    /// Decodes and takes the answer (blocking: the store).
    take: fn(&Arc<Net>, &[u8]) -> Result<(), Taken>,
    /// Whether a refusal (its reason) is not the peer's fault.
    excused: fn(&str) -> bool,
}

/// Why an answer was not taken.
enum Taken {
    /// It does not decode.
    Garbled(String),
    /// It decoded and was not taken.
    Not(TrustError),
}

impl Peer {
    /// Whether it holds a newer root, revocation list or fleet orders than these.
    fn ahead(&self, root: u64, revocations: (u64, u64), orders: (u64, u64)) -> bool {
        self.root_version.load(Ordering::Relaxed) > root
            || *crate::lock(&self.revocations) > revocations
            || *crate::lock(&self.orders) > orders
    }

    /// Whether it holds an older root, revocation list or fleet orders than these.
    fn behind(&self, root: u64, revocations: (u64, u64), orders: (u64, u64)) -> bool {
        self.root_version.load(Ordering::Relaxed) < root
            || *crate::lock(&self.revocations) < revocations
            || *crate::lock(&self.orders) < orders
    }
}
