//! Releases held for approval (k of n signatures, the fleet root's approval rules).
//!
//! `p2pctl publish --hold-for-approval` commits a release on its publishing node with the
//! publisher's signature only (`store::held`): stored, not served, not announced, so no node
//! fetches it. An approver runs `p2pctl approve RELEASE --key KEY` on any node: that node
//! gets the held envelope (its own, or from the peer that holds it, [`Net::held_release`]),
//! `p2pctl` shows what it is and signs the manifest bytes, and the signature goes to the
//! holder ([`Net::approve`]: locally, or as [`Request::Approve`] to it). The holder checks
//! the signature and the key's right to sign on the channel, adds it, and when the channel's
//! threshold is met (the emergency one for an emergency release) releases it: served and
//! announced like any release just published, and fetched by the fleet, which checks the
//! full threshold again. Every step is in the holder's audit log (`held`, `approved`).

use crate::Net;
use protocol::envelope::{ManifestSignature, check_signatures, signature_verifies};
use protocol::{ReleaseId, SignedManifest, codec};
use std::sync::Arc;

/// Where a held release stands after an approval ([`Net::approve`]) or when looked up
/// ([`Net::held_release`]).
#[derive(Debug, Clone)]
pub struct HeldRelease {
    /// The envelope with the signatures it has.
    pub envelope: Vec<u8>,
    /// Valid signatures by keys allowed on its channel.
    pub have: usize,
    /// Signatures it needs.
    pub need: usize,
    /// Their names.
    pub signers: Vec<String>,
    /// It has what it needs and was released.
    pub released: bool,
    /// Held on this node (else on a peer).
    pub local: bool,
}

/// Why an approval was not taken.
#[derive(Debug, thiserror::Error)]
pub enum ApproveError {
    /// No node this one can reach holds the release for approval.
    #[error(
        "release {0} is not held for approval here or by any connected peer (run p2pctl approve on the node it was published on, or one connected to it)"
    )]
    NotHeld(ReleaseId),
    /// The holder refused the signature.
    #[error("approval refused: {0}")]
    Refused(String),
    /// The store failed.
    #[error("store: {0}")]
    Store(String),
}

impl Net {
    /// The held release `id`: this node's, or else the first connected peer's that serves
    /// its envelope and the envelope is short of its threshold.
    pub async fn held_release(
        self: &Arc<Self>,
        id: ReleaseId,
    ) -> Result<HeldRelease, ApproveError> {
        let store = self.store.clone();
        let local = tokio::task::spawn_blocking(move || store.held_envelope(&id))
            .await
            .map_err(|e| ApproveError::Store(e.to_string()))?
            .map_err(|e| ApproveError::Store(e.to_string()))?;
        if let Some(envelope) = local {
            return self.standing(envelope, true);
        }
        for peer in self.peer_list() {
            let Ok(bytes) = peer.request_manifest(id).await else {
                continue;
            };
            if let Ok(held) = self.standing(bytes, false) {
                if held.have < held.need && envelope_id(&held.envelope) == Some(id) {
                    return Ok(held);
                }
            }
        }
        Err(ApproveError::NotHeld(id))
    }

    /// Adds `signature` to held release `id`: here if this node holds it, else at the
    /// connected peer that does.
    pub async fn approve(
        self: &Arc<Self>,
        id: ReleaseId,
        signature: ManifestSignature,
    ) -> Result<HeldRelease, ApproveError> {
        let store = self.store.clone();
        let held_here = tokio::task::spawn_blocking(move || store.held_envelope(&id))
            .await
            .map_err(|e| ApproveError::Store(e.to_string()))?
            .map_err(|e| ApproveError::Store(e.to_string()))?
            .is_some();
        if held_here {
            let net = self.clone();
            return tokio::task::spawn_blocking(move || net.approve_held(id, signature))
                .await
                .map_err(|e| ApproveError::Store(e.to_string()))?;
        }
        for peer in self.peer_list() {
            match peer.request_approve(id, signature).await {
                Ok(Ok(envelope)) => return self.standing(envelope, false),
                Ok(Err(reason)) => return Err(ApproveError::Refused(reason)),
                Err(_) => continue,
            }
        }
        Err(ApproveError::NotHeld(id))
    }

    /// The holder's side: checks `signature` against the held manifest and the trust
    /// policy, adds it, and releases the release once it has the signatures it needs.
    /// Blocking (the store).
    pub(crate) fn approve_held(
        self: &Arc<Self>,
        id: ReleaseId,
        signature: ManifestSignature,
    ) -> Result<HeldRelease, ApproveError> {
        let refused = |why: String| ApproveError::Refused(why);
        let store_err = |e: store::StoreError| ApproveError::Store(e.to_string());
        let envelope = self
            .store
            .held_envelope(&id)
            .map_err(store_err)?
            .ok_or(ApproveError::NotHeld(id))?;
        let mut env: SignedManifest =
            codec::decode::<_, { protocol::envelope::ENVELOPE_BYTES_MAX }>(
                &envelope,
                "held envelope",
            )
            .map_err(|e| ApproveError::Store(e.to_string()))?;
        if !signature_verifies(&env.manifest_bytes, &signature) {
            return Err(refused(format!(
                "the signature by {} is not over release {id}'s manifest",
                signature.key.to_hex()
            )));
        }
        let policy = self.policy();
        let Some(signer) = policy.publisher(&signature.key) else {
            return Err(refused(format!(
                "key {} is not a publisher or approver of this fleet",
                signature.key.to_hex()
            )));
        };
        env.add_signature(signature);
        if env.signatures.len() > protocol::envelope::SIGNATURES_MAX {
            return Err(refused(
                "the release has as many signatures as it can carry".into(),
            ));
        }
        let signed =
            check_signatures(&env.encode(), &policy).map_err(|e| refused(e.to_string()))?;
        if !signer.allows_channel(&signed.release.manifest.channel) {
            return Err(refused(format!(
                "key {} may not sign on channel {}",
                signature.key.to_hex(),
                signed.release.manifest.channel
            )));
        }
        let (have, need) = (signed.have, signed.need);
        let released = have >= need;
        let release = if released {
            let v = signed.complete().map_err(|e| refused(e.to_string()))?;
            // Past its expiry it cannot go out; the version was taken when it was held.
            v.check_fresh(crate::now_unix_s(), None)
                .map_err(|e| refused(e.to_string()))?;
            v
        } else {
            signed.release
        };
        let event = store::audit::AuditEvent::Approved {
            release: id.to_hex(),
            key: signature.key.to_hex(),
            signers: release.signers.clone(),
            have: have as u64,
            need: need as u64,
            released,
        };
        self.store
            .approve(&release, released, event)
            .map_err(store_err)?;
        tracing::info!(release = %id, key = %signature.key.to_hex(), have, need, released,
            "approval added to a held release");
        if released {
            self.published(&release);
            tracing::info!(release = %id, channel = %release.manifest.channel,
                version = release.manifest.version, signers = ?release.signers,
                "held release released");
        }
        Ok(HeldRelease {
            envelope: release.envelope.encode(),
            have,
            need,
            signers: release.signers,
            released,
            local: true,
        })
    }

    /// Where `envelope` stands under this node's trust policy (released once it has the
    /// signatures it needs).
    fn standing(&self, envelope: Vec<u8>, local: bool) -> Result<HeldRelease, ApproveError> {
        let s = check_signatures(&envelope, &self.policy())
            .map_err(|e| ApproveError::Refused(e.to_string()))?;
        Ok(HeldRelease {
            have: s.have,
            need: s.need,
            released: s.have >= s.need,
            signers: s.release.signers,
            envelope,
            local,
        })
    }
}

/// The release id of an encoded envelope.
fn envelope_id(envelope: &[u8]) -> Option<ReleaseId> {
    codec::decode::<SignedManifest, { protocol::envelope::ENVELOPE_BYTES_MAX }>(
        envelope, "envelope",
    )
    .ok()
    .map(|e| e.release_id())
}
