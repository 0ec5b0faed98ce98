//! Node certificates: a fleet CA key ([`crate::root::Root::ca_keys`]) binds a node's key to
//! its site, region and labels for a while. A peer's site and region come from its
//! certificate, never from what it says of itself; the labels are what rollout targeting
//! selects on.
//!
//! A certificate is signed over `CERT_SIGNING_CONTEXT || canonical bytes` with ed25519, like
//! a root. [`SignedCert::verify`] checks it against the fleet's root at a given time and for
//! a given node: issued by one of the root's CA keys, for this fleet, to this node, valid
//! now.

use crate::codec;
use crate::envelope::SignatureBytes;
use crate::error::ManifestError;
use crate::ids::{NodeId, PublisherKey};
use crate::root::Root;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

/// Version of the certificate format this build reads and writes.
pub const CERT_FORMAT_VERSION: u16 = 1;

/// Domain separation for certificate signatures.
pub const CERT_SIGNING_CONTEXT: &[u8] = b"p2pd/node-cert/v1\n";

/// Largest encoded certificate: names and a few labels fit in a fraction of it.
pub const CERT_BYTES_MAX: usize = 4096;

/// Most labels on a certificate.
pub const LABELS_MAX: usize = 16;

/// Longest site, region, label key or label value, in bytes: a site or region name's
/// ([`crate::wire::valid_name`]), as hellos and status records carry them.
pub const CERT_NAME_BYTES_MAX: usize = crate::wire::NAME_BYTES_MAX;

/// Longest validity a CA may give: a year. Shorter is better (renewal is routine and a
/// stolen node key expires with its certificate); 90 days is the default.
pub const CERT_TTL_MAX_S: i64 = 366 * 86_400;

/// How far ahead of the verifier's clock a certificate may start: clocks on a fleet drift.
pub const CERT_SKEW_MAX_S: i64 = 3600;

/// Renew a certificate this long before it expires (status and metrics warn from then).
pub const CERT_RENEW_BEFORE_S: i64 = 14 * 86_400;

/// First line of a certificate file.
pub const CERT_BEGIN: &str = "-----BEGIN P2PD NODE CERTIFICATE-----";
/// Last line of a certificate file.
pub const CERT_END: &str = "-----END P2PD NODE CERTIFICATE-----";

/// What a fleet CA says of a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeCert {
    /// [`CERT_FORMAT_VERSION`].
    pub format_version: u16,
    /// The fleet (the root's `fleet`).
    pub fleet: String,
    /// The node's key.
    pub node: NodeId,
    /// Its site.
    pub site: String,
    /// Its site's region.
    pub region: String,
    /// Labels, sorted by key, keys distinct (`role=atm`, `impact=high`).
    pub labels: Vec<(String, String)>,
    /// Valid from, unix seconds.
    pub not_before_unix_s: i64,
    /// Valid until, unix seconds.
    pub expires_unix_s: i64,
    /// The CA key that issued it.
    pub issuer: PublisherKey,
}

/// A certificate and its issuer's signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedCert {
    /// The certificate.
    pub cert: NodeCert,
    /// The issuer's signature over [`CERT_SIGNING_CONTEXT`] and its canonical bytes.
    pub signature: SignatureBytes,
}

/// Why a certificate was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertError {
    /// It does not decode.
    #[error("{0}")]
    Decode(#[from] ManifestError),
    /// A format this build does not read.
    #[error(
        "certificate format version {0} is not supported (this build reads {CERT_FORMAT_VERSION})"
    )]
    UnsupportedFormat(u16),
    /// A rule of its structure is broken.
    #[error("certificate is not valid: {0}")]
    Invalid(String),
    /// Not issued by a CA key of the root.
    #[error("certificate issued by {0}, which is not a CA key of this fleet's root")]
    UnknownIssuer(PublisherKey),
    /// The signature does not verify.
    #[error("certificate signature does not verify: altered, or not signed by its issuer")]
    BadSignature,
    /// For another fleet.
    #[error("certificate is for fleet {found:?}, not {expected:?}")]
    OtherFleet {
        /// This fleet.
        expected: String,
        /// The certificate's.
        found: String,
    },
    /// For another node.
    #[error("certificate is for node {found}, not {expected}")]
    OtherNode {
        /// The node that showed it.
        expected: NodeId,
        /// The certificate's.
        found: NodeId,
    },
    /// Not valid yet.
    #[error("certificate is valid only from unix {not_before} (now {now})")]
    NotYetValid {
        /// Start.
        not_before: i64,
        /// Now.
        now: i64,
    },
    /// Expired.
    #[error("certificate expired at unix {expires} (now {now}): renew it with `p2pctl node renew`")]
    Expired {
        /// End.
        expires: i64,
        /// Now.
        now: i64,
    },
}

impl NodeCert {
    /// Checks its own rules: format, names, labels, a validity of at most
    /// [`CERT_TTL_MAX_S`].
    pub fn validate(&self) -> Result<(), CertError> {
        if self.format_version != CERT_FORMAT_VERSION {
            return Err(CertError::UnsupportedFormat(self.format_version));
        }
        let bad = |why: String| Err(CertError::Invalid(why));
        for (what, v) in [("site", &self.site), ("region", &self.region)] {
            if !crate::wire::valid_name(v) {
                return bad(format!(
                    "{what} {v:?} must be 1 to {CERT_NAME_BYTES_MAX} bytes of a-z, A-Z, 0-9, '.', '_', '-'"
                ));
            }
        }
        if self.labels.len() > LABELS_MAX {
            return bad(format!("more than {LABELS_MAX} labels"));
        }
        for pair in self.labels.windows(2) {
            if pair[0].0 >= pair[1].0 {
                return bad("labels must be sorted by key, keys distinct".into());
            }
        }
        if let Some((k, v)) = self
            .labels
            .iter()
            .find(|(k, v)| !crate::wire::valid_name(k) || !crate::wire::valid_name(v))
        {
            return bad(format!("label {k}={v} is not a name"));
        }
        let ttl = self.expires_unix_s.saturating_sub(self.not_before_unix_s);
        if ttl <= 0 || ttl > CERT_TTL_MAX_S {
            return bad(format!(
                "valid for {ttl} s; it must be 1 s to {CERT_TTL_MAX_S} s"
            ));
        }
        Ok(())
    }

    /// The label `key`, if it has one.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .binary_search_by(|(k, _)| k.as_str().cmp(key))
            .ok()
            .map(|i| self.labels[i].1.as_str())
    }
}

impl SignedCert {
    /// Signs `cert` with the CA key `ca` (its `issuer` is set to `ca`'s public key).
    pub fn sign(mut cert: NodeCert, ca: &SigningKey) -> Self {
        cert.issuer = PublisherKey(ca.verifying_key().to_bytes());
        cert.labels.sort();
        let signature = ca.sign(&codec::with_context(
            CERT_SIGNING_CONTEXT,
            &codec::encode(&cert),
        ));
        Self {
            cert,
            signature: SignatureBytes(signature.to_bytes()),
        }
    }

    /// The wire and file form.
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(self)
    }

    /// Decodes it (at most [`CERT_BYTES_MAX`]); nothing is verified yet.
    pub fn decode(bytes: &[u8]) -> Result<Self, CertError> {
        Ok(codec::decode::<Self, CERT_BYTES_MAX>(
            bytes,
            "node certificate",
        )?)
    }

    /// Checks it for `node` under `root` at `now_unix_s`: its rules, issued by one of the
    /// root's CA keys for the root's fleet, signed by it, to `node`, and valid now.
    pub fn verify(&self, root: &Root, node: &NodeId, now_unix_s: i64) -> Result<(), CertError> {
        let c = &self.cert;
        c.validate()?;
        if c.fleet != root.fleet {
            return Err(CertError::OtherFleet {
                expected: root.fleet.clone(),
                found: c.fleet.clone(),
            });
        }
        if !root.is_ca(&c.issuer) {
            return Err(CertError::UnknownIssuer(c.issuer));
        }
        let key = VerifyingKey::from_bytes(&c.issuer.0).map_err(|_| CertError::BadSignature)?;
        key.verify(
            &codec::with_context(CERT_SIGNING_CONTEXT, &codec::encode(c)),
            &Signature::from_bytes(&self.signature.0),
        )
        .map_err(|_| CertError::BadSignature)?;
        if c.node != *node {
            return Err(CertError::OtherNode {
                expected: *node,
                found: c.node,
            });
        }
        if c.not_before_unix_s > now_unix_s.saturating_add(CERT_SKEW_MAX_S) {
            return Err(CertError::NotYetValid {
                not_before: c.not_before_unix_s,
                now: now_unix_s,
            });
        }
        if c.expires_unix_s <= now_unix_s {
            return Err(CertError::Expired {
                expires: c.expires_unix_s,
                now: now_unix_s,
            });
        }
        Ok(())
    }

    /// The file form: the encoded certificate in hex between armor lines, so that it can be
    /// mailed or pasted.
    pub fn to_text(&self) -> String {
        let hex = hex::encode(self.encode());
        let mut out = String::from(CERT_BEGIN);
        out.push('\n');
        for line in hex.as_bytes().chunks(64) {
            out.push_str(std::str::from_utf8(line).expect("hex is ASCII"));
            out.push('\n');
        }
        out.push_str(CERT_END);
        out.push('\n');
        out
    }

    /// Reads the file form ([`SignedCert::to_text`]); nothing is verified yet.
    pub fn from_text(text: &str) -> Result<Self, CertError> {
        let bad = |why: &str| CertError::Invalid(why.to_owned());
        if text.len() > 4 * CERT_BYTES_MAX {
            return Err(bad("the file is larger than any certificate"));
        }
        let body = text
            .trim()
            .strip_prefix(CERT_BEGIN)
            .and_then(|t| t.strip_suffix(CERT_END))
            .ok_or_else(|| bad("not a p2pd node certificate (armor lines missing)"))?;
        let hex: String = body.split_whitespace().collect();
        let bytes = hex::decode(hex).map_err(|_| bad("the certificate is not hex"))?;
        Self::decode(&bytes)
    }

    /// Whether it is due for renewal at `now_unix_s` ([`CERT_RENEW_BEFORE_S`]).
    pub fn renewal_due(&self, now_unix_s: i64) -> bool {
        self.cert.expires_unix_s - now_unix_s <= CERT_RENEW_BEFORE_S
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::root::{NamedKey, ROOT_FORMAT_VERSION};

    const NOW: i64 = 1_800_000_000;

    fn key(i: u8) -> SigningKey {
        SigningKey::from_bytes(&[i; 32])
    }

    fn root() -> Root {
        Root {
            format_version: ROOT_FORMAT_VERSION,
            fleet: "bank".into(),
            version: 1,
            expires_unix_s: NOW + 86_400,
            root_keys: vec![NamedKey {
                name: "r".into(),
                key: PublisherKey(key(1).verifying_key().to_bytes()),
            }],
            root_threshold: 1,
            ca_keys: vec![NamedKey {
                name: "ca".into(),
                key: PublisherKey(key(50).verifying_key().to_bytes()),
            }],
            publishers: Vec::new(),
            approvers: Vec::new(),
            approvals: Vec::new(),
            operators: Vec::new(),
        }
    }

    fn node(i: u8) -> NodeId {
        NodeId(key(i).verifying_key().to_bytes())
    }

    fn cert(ca: u8) -> SignedCert {
        SignedCert::sign(
            NodeCert {
                format_version: CERT_FORMAT_VERSION,
                fleet: "bank".into(),
                node: node(9),
                site: "branch-042".into(),
                region: "emea".into(),
                labels: vec![
                    ("role".into(), "atm".into()),
                    ("impact".into(), "high".into()),
                ],
                not_before_unix_s: NOW - 60,
                expires_unix_s: NOW + 90 * 86_400,
                issuer: PublisherKey([0; 32]),
            },
            &key(ca),
        )
    }

    #[test]
    fn a_certificate_binds_a_node_to_its_site_under_the_fleet_ca_only() {
        let c = cert(50);
        assert_eq!(c.verify(&root(), &node(9), NOW), Ok(()));
        assert_eq!(c.cert.label("role"), Some("atm"));
        assert_eq!(
            c.cert.label("impact"),
            Some("high"),
            "labels sorted on signing"
        );
        assert_eq!(SignedCert::decode(&c.encode()).unwrap(), c);
        assert_eq!(SignedCert::from_text(&c.to_text()).unwrap(), c);
        assert!(SignedCert::from_text("hello").is_err());
        // Another node showing it, another CA, another fleet, an altered site: refused.
        assert!(matches!(
            c.verify(&root(), &node(8), NOW),
            Err(CertError::OtherNode { .. })
        ));
        assert!(matches!(
            cert(51).verify(&root(), &node(9), NOW),
            Err(CertError::UnknownIssuer(_))
        ));
        let mut other = root();
        other.fleet = "other".into();
        assert!(matches!(
            c.verify(&other, &node(9), NOW),
            Err(CertError::OtherFleet { .. })
        ));
        let mut moved = c.clone();
        moved.cert.site = "hq".into();
        assert_eq!(
            moved.verify(&root(), &node(9), NOW),
            Err(CertError::BadSignature)
        );
        // Time: expired, not yet valid (beyond the skew), and renewal due 14 days before.
        assert!(matches!(
            c.verify(&root(), &node(9), c.cert.expires_unix_s),
            Err(CertError::Expired { .. })
        ));
        assert!(matches!(
            c.verify(&root(), &node(9), NOW - 60 - CERT_SKEW_MAX_S - 1),
            Err(CertError::NotYetValid { .. })
        ));
        assert!(!c.renewal_due(NOW));
        assert!(c.renewal_due(c.cert.expires_unix_s - CERT_RENEW_BEFORE_S));
    }

    #[test]
    fn a_certificate_that_breaks_its_rules_is_refused() {
        let ok = cert(50).cert;
        let broken = |f: &dyn Fn(&mut NodeCert)| {
            let mut c = ok.clone();
            f(&mut c);
            assert!(matches!(c.validate(), Err(CertError::Invalid(_))), "{c:?}");
        };
        broken(&|c| c.site = String::new());
        broken(&|c| c.region = "a b".into());
        broken(&|c| c.labels.reverse());
        broken(&|c| c.labels = vec![("k".into(), "v".into()); 2]);
        broken(&|c| c.expires_unix_s = c.not_before_unix_s + CERT_TTL_MAX_S + 1);
        broken(&|c| c.expires_unix_s = c.not_before_unix_s);
        assert!(matches!(
            SignedCert::decode(&vec![1u8; CERT_BYTES_MAX + 1]),
            Err(CertError::Decode(_))
        ));
    }
}
