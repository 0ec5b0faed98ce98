//! The p2pd protocol: identifiers, the release manifest, its signature envelope and the
//! bounded wire encoding shared by every part of the system.
//!
//! This crate decides, it never does: no IO, no async, no clock. Every function that needs
//! the time takes it as an argument, so the same code runs in the daemon, in `p2pctl` and in
//! the simulator, and is tested at any instant.
//!
//! # Layout
//!
//! * [`ids`]: [`ChunkId`] (BLAKE3 of chunk bytes), [`ReleaseId`] (BLAKE3 of the canonical
//!   manifest bytes), [`NodeId`] and [`PublisherKey`] (ed25519 public keys).
//! * [`manifest`]: the [`Manifest`] of a release and its structural validation (paths,
//!   symlinks, sizes, limits).
//! * [`path`]: the rules a path or a symlink target inside a release must follow.
//! * [`envelope`]: the [`SignedManifest`] and [`verify_release`], the one gate every manifest
//!   passes before anything else is done with it.
//! * [`rollout`]: who installs a release, after what, in which stages (targets,
//!   requirements, rings and their gate).
//! * [`root`]: the fleet root (TUF-style): root, CA, publisher, approver and operator keys,
//!   threshold-signed and rotated version by version; channel scopes by whole segments.
//! * [`cert`]: node certificates: a fleet CA key binds a node's key to its site, region and
//!   labels for a while.
//! * [`codec`]: bincode 2 encoding with an explicit size limit on every decode.
//! * [`status`]: the signed status record a node keeps its site informed with;
//!   [`summary`]: the signed site summary an aggregator sends across the WAN instead.
//! * [`wire`]: the node-to-node messages: announcements, the data-plane control stream,
//!   chunk and manifest requests, framing and chunk bitmaps.
//! * [`error`]: [`ManifestError`], one variant per rule, naming what broke it.
//!
//! # Wire stability
//!
//! Every encoded structure starts with a format or protocol version ([`PROTOCOL_VERSION`],
//! [`MANIFEST_FORMAT_VERSION`]); a decoder refuses versions it does not know.

pub mod cert;
pub mod codec;
pub mod envelope;
pub mod error;
pub mod ids;
pub mod manifest;
pub mod orders;
pub mod path;
pub mod revoke;
pub mod rollout;
pub mod root;
pub mod status;
pub mod summary;
#[doc(hidden)]
pub mod testkeys;
pub mod time;
pub mod wire;

pub use envelope::{
    ManifestSignature, Signed, SignedManifest, ThresholdRule, TrustPolicy, TrustedPublisher,
    VerifiedRelease, check_signatures, sign_manifest, verify_release,
};
pub use error::ManifestError;
pub use ids::{ChunkId, IdParseError, NodeId, PublisherKey, ReleaseId};
pub use manifest::{
    ChunkRef, ChunkingParams, Cvss, Entry, EntryKind, FilePatch, MANIFEST_FORMAT_VERSION, Manifest,
    ReleaseWindow, Severity,
};
pub use rollout::{Gate, Place, Requirement, Ring, RingMembers, Rollout, Selector};

/// Version of the node-to-node protocol this node speaks best. Bumped on any change of the
/// data plane; the connection's version is agreed in the QUIC handshake
/// ([`wire::DATA_ALPNS`]) and stated again in each side's hello.
///
/// * 10: chunks may move compressed ([`wire::ReplyHeader::ChunkZstd`]).
/// * 9: patches' pieces, manifest deltas.
pub const PROTOCOL_VERSION: u16 = 10;

/// The oldest protocol version this node still speaks: a node of that version and this one
/// agree on it and fetch from each other, without what came after.
pub const PROTOCOL_VERSION_MIN: u16 = 9;
