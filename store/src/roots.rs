//! The fleet roots a node took ([`protocol::root`]): the first, given out of band
//! (`p2pd init --root`), and every later one of the chain, each verified against the one
//! before in the transaction that stores it, with an audit entry.
//!
//! This node's certificate from the fleet CA is kept beside them ([`Store::install_cert`]):
//! only one that verifies under the newest root, for this node's key.
//!
//! The whole chain is kept (at most [`ROOTS_KEPT_MAX`] versions), so that a node can hand a
//! peer that is behind every step it lacks: a root is taken only one version at a time.

use crate::audit::AuditEvent;
use crate::{NODE_CERT, REVOCATIONS, ROOTS, Store, StoreError, append_audit_in};
use protocol::NodeId;
use protocol::cert::{CertError, SignedCert};
use protocol::revoke::{RevokeError, SignedRevocations};
use protocol::root::{RootError, SignedRoot, update_chain};
use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata};

/// Most roots kept: the newest ones; a peer further behind than this many versions is given
/// the oldest kept and refuses it (a root rotates a few times a year, so this is decades).
pub const ROOTS_KEPT_MAX: usize = 64;

/// Why a root was not taken.
#[derive(Debug, thiserror::Error)]
pub enum TakeRootError {
    /// It does not verify, or does not follow the root held.
    #[error(transparent)]
    Root(#[from] RootError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A first root was given to a node that holds one of another content.
    #[error(
        "this node holds root v{held} of fleet {fleet:?} already; a newer root comes by rotation, not by init"
    )]
    HasRoot {
        /// The fleet.
        fleet: String,
        /// The version held.
        held: u64,
    },
}

/// The key of the one row of the certificate table.
pub const OWN_CERT: &str = "own";

/// The key of the one row of the revocations table.
pub const REVOCATIONS_ROW: &str = "current";

/// Why a revocation list was not taken.
#[derive(Debug, thiserror::Error)]
pub enum TakeRevocationsError {
    /// No root is held to check it with.
    #[error("this node holds no fleet root: revocation needs one")]
    NoRoot,
    /// It does not verify under the root held, or is not newer than the list held.
    #[error(transparent)]
    Revoke(#[from] RevokeError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a certificate was not installed.
#[derive(Debug, thiserror::Error)]
pub enum InstallCertError {
    /// No root is held to check it with.
    #[error("this node holds no fleet root: initialise it with `p2pd init --root root.json` first")]
    NoRoot,
    /// It does not verify for this node under the root held.
    #[error(transparent)]
    Cert(#[from] CertError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Store {
    /// This node's certificate, if one was installed.
    pub fn node_cert(&self) -> Result<Option<SignedCert>, StoreError> {
        let read = self.db.begin_read()?;
        let table = read.open_table(NODE_CERT)?;
        table
            .get(OWN_CERT)?
            .map(|v| {
                SignedCert::decode(v.value())
                    .map_err(|e| StoreError::Damaged(format!("stored certificate: {e}")))
            })
            .transpose()
    }

    /// Installs `cert` as this node's (`node`) certificate: it must verify under the newest
    /// root held at `now_unix_s`. It replaces the one before (a renewal, or a move to
    /// another site); audited.
    pub fn install_cert(
        &self,
        cert: &SignedCert,
        node: &NodeId,
        now_unix_s: i64,
    ) -> Result<(), InstallCertError> {
        let root = self.root()?.ok_or(InstallCertError::NoRoot)?;
        cert.verify(&root.signed, node, now_unix_s)?;
        let txn = self.db.begin_write().map_err(StoreError::from)?;
        {
            let mut table = txn.open_table(NODE_CERT).map_err(StoreError::from)?;
            table
                .insert(OWN_CERT, cert.encode().as_slice())
                .map_err(StoreError::from)?;
        }
        let c = &cert.cert;
        append_audit_in(
            &txn,
            AuditEvent::CertInstalled {
                site: c.site.clone(),
                region: c.region.clone(),
                expires_unix_s: c.expires_unix_s,
                issuer: c.issuer.to_hex(),
            },
        )?;
        txn.commit().map_err(StoreError::from)?;
        Ok(())
    }

    /// The fleet's revocation list this node holds, if it took one.
    pub fn revocations(&self) -> Result<Option<SignedRevocations>, StoreError> {
        let read = self.db.begin_read()?;
        let table = read.open_table(REVOCATIONS)?;
        table
            .get(REVOCATIONS_ROW)?
            .map(|v| {
                SignedRevocations::decode(v.value())
                    .map_err(|e| StoreError::Damaged(format!("stored revocation list: {e}")))
            })
            .transpose()
    }

    /// Takes `list` in place of the one held: it must verify under the newest root held
    /// and be newer (checked inside the write transaction, so two arriving at once cannot
    /// step back); audited with the nodes it newly revokes.
    pub fn take_revocations(&self, list: &SignedRevocations) -> Result<(), TakeRevocationsError> {
        let root = self.root()?.ok_or(TakeRevocationsError::NoRoot)?;
        let txn = self.db.begin_write().map_err(StoreError::from)?;
        let held = {
            let mut table = txn.open_table(REVOCATIONS).map_err(StoreError::from)?;
            let held = table
                .get(REVOCATIONS_ROW)
                .map_err(StoreError::from)?
                .map(|v| {
                    SignedRevocations::decode(v.value())
                        .map_err(|e| StoreError::Damaged(format!("stored revocation list: {e}")))
                })
                .transpose()?;
            list.verify_after(&root.signed, held.as_ref().map(|h| &h.list))?;
            table
                .insert(REVOCATIONS_ROW, list.encode().as_slice())
                .map_err(StoreError::from)?;
            held
        };
        let before = held.as_ref().map(|h| &h.list);
        let revoked = list
            .list
            .entries
            .iter()
            .filter(|e| before.and_then(|b| b.entry(&e.node)) != Some(e))
            .map(|e| e.node.to_hex())
            .collect();
        let restored = before
            .map(|b| {
                b.entries
                    .iter()
                    .filter(|e| list.list.entry(&e.node).is_none())
                    .map(|e| e.node.to_hex())
                    .collect()
            })
            .unwrap_or_default();
        append_audit_in(
            &txn,
            AuditEvent::RevocationsTaken {
                fleet: list.list.fleet.clone(),
                from_version: before.map_or(0, |b| b.version),
                to_version: list.list.version,
                revoked,
                restored,
                signer: list.signer.to_hex(),
            },
        )?;
        txn.commit().map_err(StoreError::from)?;
        Ok(())
    }

    /// The newest root this node took, if any.
    pub fn root(&self) -> Result<Option<SignedRoot>, StoreError> {
        let read = self.db.begin_read()?;
        let table = read.open_table(ROOTS)?;
        match table.last()? {
            Some((_, v)) => Ok(Some(decode(v.value())?)),
            None => Ok(None),
        }
    }

    /// The roots after `version`, oldest first, at most [`protocol::root::ROOT_CHAIN_MAX`]:
    /// what a peer that holds `version` needs to catch up.
    pub fn roots_after(&self, version: u64) -> Result<Vec<SignedRoot>, StoreError> {
        let read = self.db.begin_read()?;
        let table = read.open_table(ROOTS)?;
        let mut out = Vec::new();
        for row in table.range(version.saturating_add(1)..)? {
            let (_, v) = row?;
            out.push(decode(v.value())?);
            if out.len() == protocol::root::ROOT_CHAIN_MAX {
                break;
            }
        }
        Ok(out)
    }

    /// Takes `first` as this node's first root: valid, signed by its own threshold, not
    /// expired at `now_unix_s`. Taking the same root again changes nothing; another one, once
    /// a root is held, is refused.
    pub fn take_first_root(
        &self,
        first: &SignedRoot,
        now_unix_s: i64,
    ) -> Result<bool, TakeRootError> {
        let root = first.verify_first()?;
        protocol::root::check_expiry(root, now_unix_s)?;
        let txn = self.db.begin_write().map_err(StoreError::from)?;
        {
            let mut table = txn.open_table(ROOTS).map_err(StoreError::from)?;
            if let Some((k, v)) = table.last().map_err(StoreError::from)? {
                let held = decode(v.value())?;
                if held.signed == *root {
                    return Ok(false);
                }
                return Err(TakeRootError::HasRoot {
                    fleet: held.signed.fleet,
                    held: k.value(),
                });
            }
            table
                .insert(root.version, first.encode().as_slice())
                .map_err(StoreError::from)?;
        }
        append_audit_in(
            &txn,
            AuditEvent::RootTaken {
                fleet: root.fleet.clone(),
                from_version: 0,
                to_version: root.version,
                root_blake3: root.digest_hex(),
            },
        )?;
        txn.commit().map_err(StoreError::from)?;
        Ok(true)
    }

    /// Takes what of `chain` follows the root held ([`update_chain`]): each version signed
    /// by the one before's threshold and its own, the newest not expired at `now_unix_s`.
    /// Returns the roots taken (empty when none is newer, or no root is held: a node without
    /// a root takes none from peers) and the error that stopped the walk, if one did; what
    /// was taken before it is kept.
    pub fn take_roots(
        &self,
        chain: &[SignedRoot],
        now_unix_s: i64,
    ) -> Result<(Vec<SignedRoot>, Option<RootError>), StoreError> {
        let txn = self.db.begin_write()?;
        let (taken, err, from) = {
            let mut table = txn.open_table(ROOTS)?;
            let Some(held) = table.last()?.map(|(_, v)| decode(v.value())).transpose()? else {
                return Ok((Vec::new(), None));
            };
            let (taken, err) = update_chain(&held.signed, chain, now_unix_s);
            for r in &taken {
                table.insert(r.signed.version, r.encode().as_slice())?;
            }
            while table.len()? > ROOTS_KEPT_MAX as u64 {
                table.pop_first()?;
            }
            (taken, err, held.signed.version)
        };
        if let Some(last) = taken.last() {
            append_audit_in(
                &txn,
                AuditEvent::RootTaken {
                    fleet: last.signed.fleet.clone(),
                    from_version: from,
                    to_version: last.signed.version,
                    root_blake3: last.signed.digest_hex(),
                },
            )?;
        }
        txn.commit()?;
        Ok((taken, err))
    }
}

fn decode(bytes: &[u8]) -> Result<SignedRoot, StoreError> {
    SignedRoot::decode(bytes).map_err(|e| StoreError::Damaged(format!("stored root: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;
    use protocol::PublisherKey;
    use protocol::root::{NamedKey, ROOT_FORMAT_VERSION, Root};

    const NOW: i64 = 1_800_000_000;

    fn key(i: u8) -> SigningKey {
        SigningKey::from_bytes(&[i; 32])
    }

    fn named(i: u8) -> NamedKey {
        NamedKey {
            name: format!("k{i}"),
            key: PublisherKey(key(i).verifying_key().to_bytes()),
        }
    }

    fn root(version: u64, k: u8) -> SignedRoot {
        let r = Root {
            format_version: ROOT_FORMAT_VERSION,
            fleet: "bank".into(),
            version,
            expires_unix_s: NOW + 86_400,
            root_keys: vec![named(k)],
            root_threshold: 1,
            ca_keys: vec![named(50)],
            publishers: Vec::new(),
            approvers: Vec::new(),
            approvals: Vec::new(),
            operators: vec![named(60)],
        };
        SignedRoot::sign(r, &[&key(k - 1), &key(k)])
    }

    #[test]
    fn roots_are_taken_in_order_kept_across_a_restart_and_audited() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.root().unwrap(), None);
        // Without a root, nothing comes from peers.
        assert_eq!(store.take_roots(&[root(2, 2)], NOW).unwrap().0.len(), 0);
        let v1 = root(1, 1);
        assert!(store.take_first_root(&v1, NOW).unwrap());
        assert!(!store.take_first_root(&v1, NOW).unwrap(), "the same again");
        assert!(matches!(
            store.take_first_root(&root(1, 7), NOW),
            Err(TakeRootError::HasRoot { held: 1, .. })
        ));
        // v2 (key 2, signed by 1 and 2), v3 (key 3, signed by 2 and 3); v4 signed wrongly.
        let mut v4 = root(4, 4);
        v4.signatures.remove(0);
        let (taken, err) = store
            .take_roots(&[root(2, 2), root(3, 3), v4], NOW)
            .unwrap();
        assert_eq!(taken.len(), 2);
        assert!(err.is_some());
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.root().unwrap().unwrap().signed.version, 3);
        let after: Vec<u64> = store
            .roots_after(1)
            .unwrap()
            .iter()
            .map(|r| r.signed.version)
            .collect();
        assert_eq!(after, vec![2, 3]);
        // An old one again changes nothing.
        assert_eq!(
            store.take_roots(&[root(2, 2)], NOW).unwrap(),
            (Vec::new(), None)
        );
        let (log, _) = store.audit_entries(None).unwrap();
        let kinds: Vec<String> = log
            .iter()
            .filter(|e| matches!(e.event, AuditEvent::RootTaken { .. }))
            .map(|e| e.event.describe())
            .collect();
        assert_eq!(kinds.len(), 2, "{kinds:?}");
        assert!(kinds[1].contains("v1 rotated to v3"), "{kinds:?}");
    }

    #[test]
    fn a_certificate_is_installed_only_under_the_root_for_this_node() {
        use protocol::cert::{CERT_FORMAT_VERSION, NodeCert};
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let me = NodeId(key(9).verifying_key().to_bytes());
        let cert = |ca: u8, node: NodeId| {
            SignedCert::sign(
                NodeCert {
                    format_version: CERT_FORMAT_VERSION,
                    fleet: "bank".into(),
                    node,
                    site: "branch-7".into(),
                    region: "emea".into(),
                    labels: Vec::new(),
                    not_before_unix_s: NOW,
                    expires_unix_s: NOW + 86_400,
                    issuer: PublisherKey([0; 32]),
                },
                &key(ca),
            )
        };
        assert!(matches!(
            store.install_cert(&cert(50, me), &me, NOW),
            Err(InstallCertError::NoRoot)
        ));
        store.take_first_root(&root(1, 1), NOW).unwrap();
        assert!(matches!(
            store.install_cert(&cert(51, me), &me, NOW),
            Err(InstallCertError::Cert(CertError::UnknownIssuer(_)))
        ));
        let other = NodeId(key(8).verifying_key().to_bytes());
        assert!(matches!(
            store.install_cert(&cert(50, other), &me, NOW),
            Err(InstallCertError::Cert(CertError::OtherNode { .. }))
        ));
        assert_eq!(store.node_cert().unwrap(), None);
        store.install_cert(&cert(50, me), &me, NOW).unwrap();
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.node_cert().unwrap().unwrap().cert.site, "branch-7");
    }

    #[test]
    fn a_revocation_list_is_taken_only_newer_and_signed_under_the_root_and_audited() {
        use protocol::revoke::Revocations;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let node = |i: u8| NodeId(key(i).verifying_key().to_bytes());
        let v1 = Revocations::empty("bank")
            .next(1, node(9), "stolen", NOW)
            .unwrap();
        // The CA of the test roots is key 50.
        let signed_v1 = SignedRevocations::sign(v1.clone(), &key(50));
        assert!(matches!(
            store.take_revocations(&signed_v1),
            Err(TakeRevocationsError::NoRoot)
        ));
        store.take_first_root(&root(1, 1), NOW).unwrap();
        assert!(matches!(
            store.take_revocations(&SignedRevocations::sign(v1.clone(), &key(51))),
            Err(TakeRevocationsError::Revoke(RevokeError::UnknownSigner(_)))
        ));
        assert_eq!(store.revocations().unwrap(), None);
        store.take_revocations(&signed_v1).unwrap();
        assert!(matches!(
            store.take_revocations(&signed_v1),
            Err(TakeRevocationsError::Revoke(RevokeError::NotNewer {
                held: 1,
                found: 1
            }))
        ));
        let v2 = v1.next(1, node(8), "lost", NOW + 5).unwrap();
        store
            .take_revocations(&SignedRevocations::sign(v2, &key(50)))
            .unwrap();
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        let held = store.revocations().unwrap().unwrap();
        assert_eq!(held.list.version, 2);
        assert!(held.list.entry(&node(9)).is_some() && held.list.entry(&node(8)).is_some());
        let (log, _) = store.audit_entries(None).unwrap();
        let taken: Vec<&AuditEvent> = log
            .iter()
            .map(|e| &e.event)
            .filter(|e| matches!(e, AuditEvent::RevocationsTaken { .. }))
            .collect();
        assert_eq!(taken.len(), 2);
        assert!(
            matches!(taken[1], AuditEvent::RevocationsTaken { from_version: 1, to_version: 2, revoked, .. } if *revoked == vec![node(8).to_hex()]),
            "only the newly revoked node is named: {:?}",
            taken[1]
        );
    }

    #[test]
    fn fleet_orders_are_taken_only_newer_and_signed_by_an_operator_and_audited() {
        use crate::orders::TakeOrdersError;
        use protocol::orders::{Orders, OrdersError, ReleaseCommand, SignedOrders};
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let release = protocol::ReleaseId([7; 32]);
        let v1 =
            Orders::empty("bank").with_release(1, release, ReleaseCommand::Pause, "INC-9", NOW);
        let signed_v1 = SignedOrders::sign(v1.clone(), &key(60));
        assert!(matches!(
            store.take_orders(&signed_v1),
            Err(TakeOrdersError::NoRoot)
        ));
        store.take_first_root(&root(1, 1), NOW).unwrap();
        // The CA (key 50) is not an operator.
        assert!(matches!(
            store.take_orders(&SignedOrders::sign(v1.clone(), &key(50))),
            Err(TakeOrdersError::Orders(OrdersError::UnknownSigner(_)))
        ));
        assert_eq!(store.orders().unwrap(), None);
        let changes = store.take_orders(&signed_v1).unwrap();
        assert_eq!(
            changes,
            vec![format!("pause release {}: INC-9", release.to_hex())]
        );
        assert!(matches!(
            store.take_orders(&signed_v1),
            Err(TakeOrdersError::Orders(OrdersError::NotNewer {
                held: 1,
                found: 1
            }))
        ));
        let v2 = v1.with_release(1, release, ReleaseCommand::Resume, "fixed", NOW + 5);
        store
            .take_orders(&SignedOrders::sign(v2, &key(60)))
            .unwrap();
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        let held = store.orders().unwrap().unwrap();
        assert_eq!(held.orders.version, 2);
        assert_eq!(held.orders.resumed_at(&release), Some(NOW + 5));
        let (log, _) = store.audit_entries(None).unwrap();
        let taken: Vec<&AuditEvent> = log
            .iter()
            .map(|e| &e.event)
            .filter(|e| matches!(e, AuditEvent::OrdersTaken { .. }))
            .collect();
        assert_eq!(taken.len(), 2);
        assert!(
            matches!(taken[1], AuditEvent::OrdersTaken { from_version: 1, to_version: 2, changes, .. } if changes[0].starts_with("resume release")),
            "{:?}",
            taken[1]
        );
    }
}
