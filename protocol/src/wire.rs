//! The node-to-node messages: release announcements on the control plane (gossipsub) and the
//! chunk protocol on the data plane (QUIC streams).
//!
//! # Data plane
//!
//! A connection between two nodes carries:
//!
//! * **one control stream** (bidirectional, opened by the dialer). Each side first sends a
//!   [`Control::Hello`], then a [`Control::Bitmap`] for every release it holds or is fetching,
//!   then [`Control::Have`] as chunks arrive and further bitmaps when it starts on a release.
//! * **one stream per request** (bidirectional, opened by the requester): one [`Request`]
//!   frame, then the sender finishes its half. The server answers with one [`ReplyHeader`]
//!   frame, followed for [`ReplyHeader::Chunk`], [`ReplyHeader::ChunkZstd`] and
//!   [`ReplyHeader::Manifest`] by exactly `len` bytes. Requests are pipelined by keeping
//!   many streams open at once.
//!
//! The two ends agree on a protocol version in the QUIC handshake ([`DATA_ALPNS`]): a node
//! speaks the newest its peer does, down to [`crate::PROTOCOL_VERSION_MIN`].
//!
//! Every frame is a 4-byte little-endian length then a bincode body ([`crate::codec`]).
//! [`FrameHeader::parse`] refuses a length over the limit of the stream's kind before any
//! allocation, and every body is decoded with its limit: a malformed frame closes its stream
//! with an error code, never the node.
//!
//! Chunk bitmaps index the release's chunks in [`crate::Manifest::unique_chunks`] order, so
//! they mean nothing until the manifest is verified; a node keeps a peer's bitmap for a
//! release it has not verified (bounded) and checks its length once it has.
//!
//! # Control plane
//!
//! [`Announcement`] is the body of a gossipsub message (signed by the sending node's key,
//! which gossipsub checks). It only names a release: the receiver fetches the signed manifest
//! from the announcer over the data plane and runs the full verification gate
//! ([`crate::verify_release`]) before it fetches anything else.

use crate::codec;
use crate::error::ManifestError;
use crate::ids::{ChunkId, ReleaseId};
use crate::manifest::CHUNK_BYTES_MAX;
use serde::{Deserialize, Serialize};

/// ALPN protocol names of the data plane, newest first, with the protocol version each one
/// stands for. The dialer offers the ones it speaks, the server takes the first of its own
/// the dialer offered (rustls's order), and both then speak that version: a node of
/// [`crate::PROTOCOL_VERSION_MIN`] offers only its own name and is answered in its terms.
/// A node configured not to compress chunks offers only the older name, and is a node of
/// that version on the wire.
pub const DATA_ALPNS: [(&[u8], u16); 2] = [(b"p2pd-chunks/2", 10), (b"p2pd-chunks/1", 9)];

/// The protocol version an agreed ALPN name stands for.
pub fn alpn_version(alpn: &[u8]) -> Option<u16> {
    DATA_ALPNS
        .iter()
        .find(|(name, _)| *name == alpn)
        .map(|&(_, v)| v)
}

/// The first protocol version with compressed chunks ([`ReplyHeader::ChunkZstd`]).
pub const COMPRESSED_CHUNKS_VERSION: u16 = 10;

/// Version of [`Announcement`]'s format, which protocol 10 left as 9 had it, so that nodes of
/// both versions take each other's announcements.
pub const ANNOUNCEMENT_VERSION: u16 = 9;

/// Gossipsub topic of release announcements.
pub const ANNOUNCE_TOPIC: &str = "p2pd/releases/1";

/// Gossipsub topic of fleet status records ([`crate::status::SignedStatus`]).
pub const STATUS_TOPIC: &str = "p2pd/status/1";

/// Largest control-stream frame: a bitmap of the largest release (2^20 chunks, 128 KiB) with
/// room for its header. Anything larger is an attack or a bug.
pub const CONTROL_FRAME_BYTES_MAX: usize = 160 << 10;

/// Largest request or reply-header frame. Both are a few dozen bytes.
pub const REQUEST_FRAME_BYTES_MAX: usize = 1 << 10;

/// Largest announcement. It is a few dozen bytes.
pub const ANNOUNCEMENT_BYTES_MAX: usize = 1 << 10;

/// Largest site or region name on the wire.
pub const NAME_BYTES_MAX: usize = 64;

/// Largest number of chunk indices in one [`Control::Have`].
pub const HAVE_INDICES_MAX: usize = 4096;

/// Frame header length.
pub const FRAME_HEADER_BYTES: usize = 4;

/// A wire error: what arrived is not a frame of the protocol.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    /// A length prefix above the limit for this stream.
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    FrameTooLarge {
        /// Announced length.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// The body did not decode.
    #[error("malformed frame: {0}")]
    Malformed(#[from] ManifestError),
    /// A protocol version this node does not speak.
    #[error("protocol version {found}, this node speaks {supported}")]
    Version {
        /// What the peer sent.
        found: u16,
        /// What this node speaks.
        supported: u16,
    },
    /// A well-formed message that breaks a rule (names it).
    #[error("invalid message: {0}")]
    Invalid(&'static str),
}

/// A parsed frame length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Body length in bytes.
    pub len: usize,
}

impl FrameHeader {
    /// Parses a length prefix, refusing one above `max`.
    pub fn parse(bytes: [u8; FRAME_HEADER_BYTES], max: usize) -> Result<Self, WireError> {
        let len = u32::from_le_bytes(bytes) as usize;
        if len > max {
            return Err(WireError::FrameTooLarge { len, max });
        }
        Ok(Self { len })
    }
}

/// Encodes `value` as one frame (length prefix and body).
pub fn frame<T: Serialize>(value: &T) -> Vec<u8> {
    let body = codec::encode(value);
    let mut out = Vec::with_capacity(FRAME_HEADER_BYTES + body.len());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// The first message on a control stream, in each direction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The protocol version of the connection, as the QUIC handshake agreed it
    /// ([`DATA_ALPNS`]); a hello that states another closes the connection.
    pub protocol_version: u16,
    /// The sender's site.
    pub site: String,
    /// The sender's region.
    pub region: String,
    /// Random per start of the sender's process: a peer whose instance changed has
    /// restarted, and any older connection to it is stale.
    pub instance: u64,
    /// The sender's node certificate ([`crate::cert::SignedCert`], encoded); empty in a
    /// fleet without a root. In a fleet with one, a peer's site and region are its
    /// certificate's, and a peer without a valid one is refused.
    pub cert: Vec<u8>,
    /// The version of the newest fleet root the sender holds (0: none): a receiver that
    /// holds an older one asks for the rest of the chain ([`Request::Roots`]).
    pub root_version: u64,
    /// The fleet's revocation list the sender holds, as (root version it was made under,
    /// version) ((0, 0): none), the order lists replace each other in
    /// ([`crate::revoke::Revocations::replaces`]): a receiver that holds an older one asks
    /// for it ([`Request::Revocations`]).
    pub revocations: (u64, u64),
    /// The fleet orders the sender holds, as (root version they were made under, version)
    /// ((0, 0): none), ordered like revocation lists ([`crate::orders::Orders::replaces`]):
    /// a receiver that holds older ones asks for them ([`Request::Orders`]).
    pub orders: (u64, u64),
    /// The sender's clock when it sent the hello, unix milliseconds: a node compares its
    /// own with its peers' (a clock far off refuses valid releases, or takes expired ones
    /// for current) and says so in its status and metrics.
    pub now_unix_ms: i64,
}

/// A message on the control stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Control {
    /// Who the sender is. First message, exactly once.
    Hello(Hello),
    /// The chunks of `release` the sender has, one bit per chunk (bit `i % 8` of byte
    /// `i / 8`), replacing any earlier bitmap for it.
    Bitmap {
        /// The release.
        release: ReleaseId,
        /// The number the sender's [`Control::Have`]s of this release carry on this
        /// connection instead of its id (see [`Slot`]).
        slot: Slot,
        /// Number of unique chunks in the release.
        chunk_count: u32,
        /// `ceil(chunk_count / 8)` bytes.
        bits: Vec<u8>,
        /// The sender is the release's origin and has finished initial seeding: fetch from it
        /// across the WAN only what no other peer has.
        reserve: bool,
    },
    /// The sender now also has these chunks of the release its bitmap or offer gave `slot`.
    Have {
        /// The release's [`Slot`] on this connection.
        slot: Slot,
        /// Chunk indices.
        indices: Vec<u32>,
    },
    /// The sender no longer serves `release`.
    Drop {
        /// The release.
        release: ReleaseId,
    },
    /// The sender's own signed status record ([`crate::status::SignedStatus`]), sent to
    /// same-site peers.
    Status(Vec<u8>),
    /// Signed site summaries ([`crate::summary::SignedSummary`]): from an aggregator to its
    /// site's members and to its neighbours in the WAN overlay of aggregators.
    Summaries(Vec<Vec<u8>>),
    /// Peers the sender knows: members of the receiver's site, and contacts in other sites.
    Peers(Vec<PeerEntry>),
    /// Whether the sender takes the receiver as a neighbour in the WAN overlay of site
    /// aggregators (summaries are exchanged between neighbours).
    Overlay(bool),
    /// Between overlay neighbours: the site summaries the sender holds and the receiver may
    /// not, as (site key, number) pairs; the receiver asks for those it lacks
    /// ([`Control::Iwant`]). A summary is announced on every link but crosses each link to
    /// an aggregator that lacks it once.
    Ihave(Vec<(u64, u64)>),
    /// Between overlay neighbours: the summaries (site key, number) the sender wants, of
    /// those the receiver announced; the answer is a [`Control::Summaries`].
    Iwant(Vec<(u64, u64)>),
    /// To a peer of another site, instead of a [`Control::Bitmap`]: the sender serves
    /// `release` and will announce, with [`Control::Have`], the chunks of it the receiver
    /// says it wants ([`Control::Want`]) as the sender comes to hold them. Across the WAN a
    /// member fetches only the chunks rendezvous hashing names it for, so that is all it
    /// needs to hear of.
    Offer {
        /// The release.
        release: ReleaseId,
        /// As in [`Control::Bitmap`].
        slot: Slot,
        /// Number of unique chunks in the release.
        chunk_count: u32,
        /// As in [`Control::Bitmap`]: the release's origin, past initial seeding.
        reserve: bool,
    },
    /// To a peer of another site, about the release its offer gave `slot` (the receiver's
    /// slot, see [`Slot`]): more chunks of it the sender fetches across the WAN (those
    /// rendezvous hashing names it for and it lacks), added to those it named before;
    /// an empty list: it needs none any more. Chunks it named once stay named: announcing
    /// one too many costs a few bytes, asking again would cost a message per change of the
    /// site's members.
    Want {
        /// The receiver's slot of the release.
        slot: Slot,
        /// The chunk indices in increasing order, each written as its distance from the one
        /// before (the first from 0): a sparse set costs about a byte per chunk.
        gaps: Vec<u32>,
    },
    /// To same-site peers: an operator retired `node` (`p2pctl node forget`), which has
    /// sent no record since `last_at_unix_s`. A receiver that also finds it silent drops it
    /// from its fleet table and keeps a tombstone: only a record made after that time
    /// brings the node back.
    Forget {
        /// The node retired.
        node: crate::ids::NodeId,
        /// When its last record was made, as the sender held it.
        last_at_unix_s: i64,
    },
    /// The sender took a newer fleet root, revocation list or fleet orders: the versions it
    /// now holds (as in [`Hello`]). A receiver that is behind asks the sender for what it
    /// lacks, takes it, and tells its own peers, so a revocation or an operator's command
    /// crosses the fleet in a few round trips.
    Trust {
        /// The newest root's version.
        root_version: u64,
        /// The revocation list's (root version, version), as in [`Hello`].
        revocations: (u64, u64),
        /// The fleet orders' (root version, version), as in [`Hello`].
        orders: (u64, u64),
    },
}

impl Control {
    /// A [`Control::Want`] of `indices` (increasing) of the release the receiver gave `slot`.
    pub fn want(slot: Slot, indices: impl IntoIterator<Item = u32>) -> Self {
        let mut last = 0u32;
        let mut first = true;
        let gaps = indices
            .into_iter()
            .map(|i| {
                let g = if first { i } else { i - last };
                first = false;
                last = i;
                g
            })
            .collect();
        Self::Want { slot, gaps }
    }
}

/// The indices a [`Control::Want`]'s gaps stand for (checked by [`Control::decode`]: each
/// after the first at least 1, all below the largest release's chunk count).
pub fn want_indices(gaps: &[u32]) -> impl Iterator<Item = u32> + '_ {
    let mut at = 0u32;
    gaps.iter().enumerate().map(move |(k, &g)| {
        at = if k == 0 { g } else { at.saturating_add(g) };
        at
    })
}

/// A small number a sender gives each release on one connection, in the bitmap or offer that
/// introduces it, so that its announcements ([`Control::Have`], the most frequent control
/// message) carry two bytes instead of the release's 32-byte id. A slot is the sender's,
/// one direction of one connection; a bitmap or offer with a slot already given rebinds it.
pub type Slot = u16;

/// A peer as [`Control::Peers`] describes it: who it is and where its data plane listens.
/// Claims only: the dialer's TLS handshake proves the node, its hello states its site.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerEntry {
    /// Its node id.
    pub node: crate::ids::NodeId,
    /// Its site.
    pub site: String,
    /// Its data-plane address for same-site peers.
    pub lan: std::net::SocketAddr,
    /// Its data-plane address for peers of other sites.
    pub wan: std::net::SocketAddr,
}

/// Most entries in one [`Control::Peers`].
pub const PEERS_PER_MESSAGE_MAX: usize = 256;

/// Most entries in one [`Control::Ihave`] or [`Control::Iwant`] (a site key and a number, at
/// most 20 bytes): more than a fleet has sites.
pub const DIGEST_ENTRIES_MAX: usize = 4096;

/// Most summaries in one [`Control::Summaries`]; more are sent in several messages.
pub const SUMMARIES_PER_MESSAGE_MAX: usize = 64;

/// Largest [`ReplyHeader::Records`] body: a site's records (a few hundred bytes each for
/// sites of hundreds of nodes; the server leaves out what does not fit).
pub const SITE_RECORDS_BYTES_MAX: usize = 4 << 20;

/// What a [`Control`] message is, for byte counters (a message's bytes are counted under its
/// kind on both ends).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ControlKind {
    /// [`Control::Hello`].
    Hello,
    /// [`Control::Bitmap`].
    Bitmap,
    /// [`Control::Have`].
    Have,
    /// [`Control::Drop`].
    Drop,
    /// [`Control::Status`].
    Status,
    /// [`Control::Summaries`].
    Summaries,
    /// [`Control::Peers`].
    Peers,
    /// [`Control::Overlay`].
    Overlay,
    /// [`Control::Offer`].
    Offer,
    /// [`Control::Want`].
    Want,
    /// [`Control::Ihave`].
    Ihave,
    /// [`Control::Iwant`].
    Iwant,
    /// [`Control::Forget`].
    Forget,
    /// [`Control::Trust`].
    Trust,
}

impl ControlKind {
    /// Every kind, in counter order ([`ControlKind::index`]).
    pub const ALL: [Self; 14] = [
        Self::Hello,
        Self::Bitmap,
        Self::Have,
        Self::Drop,
        Self::Status,
        Self::Summaries,
        Self::Peers,
        Self::Overlay,
        Self::Offer,
        Self::Want,
        Self::Ihave,
        Self::Iwant,
        Self::Forget,
        Self::Trust,
    ];

    /// Position in [`ControlKind::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// The kind's name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Hello => "hello",
            Self::Bitmap => "bitmap",
            Self::Have => "have",
            Self::Drop => "drop",
            Self::Status => "status",
            Self::Summaries => "summaries",
            Self::Peers => "peers",
            Self::Overlay => "overlay",
            Self::Offer => "offer",
            Self::Want => "want",
            Self::Ihave => "ihave",
            Self::Iwant => "iwant",
            Self::Forget => "forget",
            Self::Trust => "trust",
        }
    }
}

impl Control {
    /// What kind of message this is.
    pub fn kind(&self) -> ControlKind {
        match self {
            Self::Hello(_) => ControlKind::Hello,
            Self::Bitmap { .. } => ControlKind::Bitmap,
            Self::Have { .. } => ControlKind::Have,
            Self::Drop { .. } => ControlKind::Drop,
            Self::Status(_) => ControlKind::Status,
            Self::Summaries(_) => ControlKind::Summaries,
            Self::Peers(_) => ControlKind::Peers,
            Self::Overlay(_) => ControlKind::Overlay,
            Self::Offer { .. } => ControlKind::Offer,
            Self::Want { .. } => ControlKind::Want,
            Self::Ihave(_) => ControlKind::Ihave,
            Self::Iwant(_) => ControlKind::Iwant,
            Self::Forget { .. } => ControlKind::Forget,
            Self::Trust { .. } => ControlKind::Trust,
        }
    }

    /// Decodes and checks a control-stream body.
    pub fn decode(body: &[u8]) -> Result<Self, WireError> {
        let msg: Self = codec::decode::<_, CONTROL_FRAME_BYTES_MAX>(body, "control message")?;
        match &msg {
            Self::Hello(h) => {
                if !(crate::PROTOCOL_VERSION_MIN..=crate::PROTOCOL_VERSION)
                    .contains(&h.protocol_version)
                {
                    return Err(WireError::Version {
                        found: h.protocol_version,
                        supported: crate::PROTOCOL_VERSION,
                    });
                }
                if !valid_name(&h.site) || !valid_name(&h.region) {
                    return Err(WireError::Invalid("site or region name"));
                }
            }
            Self::Bitmap {
                chunk_count, bits, ..
            } => {
                if *chunk_count as usize > crate::manifest::CHUNKS_PER_RELEASE_MAX
                    || bits.len() != (*chunk_count as usize).div_ceil(8)
                {
                    return Err(WireError::Invalid("bitmap length does not match its count"));
                }
            }
            Self::Have { indices, .. } => {
                if indices.is_empty() || indices.len() > HAVE_INDICES_MAX {
                    return Err(WireError::Invalid("have list empty or too long"));
                }
            }
            Self::Drop { .. } | Self::Overlay(_) | Self::Forget { .. } | Self::Trust { .. } => {}
            Self::Status(r) => {
                if r.len() > crate::status::STATUS_RECORD_BYTES_MAX {
                    return Err(WireError::Invalid("status record too large"));
                }
            }
            Self::Summaries(list) => {
                if list.is_empty()
                    || list.len() > SUMMARIES_PER_MESSAGE_MAX
                    || list
                        .iter()
                        .any(|x| x.len() > crate::summary::SUMMARY_BYTES_MAX)
                {
                    return Err(WireError::Invalid("summaries empty, too many or too large"));
                }
            }
            Self::Offer { chunk_count, .. } => {
                if *chunk_count as usize > crate::manifest::CHUNKS_PER_RELEASE_MAX {
                    return Err(WireError::Invalid(
                        "offer of more chunks than a release has",
                    ));
                }
            }
            Self::Want { gaps, .. } => {
                let max = crate::manifest::CHUNKS_PER_RELEASE_MAX as u64;
                let mut at = 0u64;
                for (k, &g) in gaps.iter().enumerate() {
                    if k > 0 && g == 0 {
                        return Err(WireError::Invalid("want list not increasing"));
                    }
                    at += u64::from(g);
                    if at >= max {
                        return Err(WireError::Invalid("want list past the largest release"));
                    }
                }
            }
            Self::Ihave(list) | Self::Iwant(list) => {
                if list.is_empty() || list.len() > DIGEST_ENTRIES_MAX {
                    return Err(WireError::Invalid("digest empty or too long"));
                }
            }
            Self::Peers(list) => {
                if list.len() > PEERS_PER_MESSAGE_MAX || list.iter().any(|p| !valid_name(&p.site)) {
                    return Err(WireError::Invalid("peer list too long or a bad site name"));
                }
            }
        }
        Ok(msg)
    }
}

/// `text` cut to at most `max_bytes` bytes at a character boundary: for free text a bounded
/// record carries (an error, a reason).
pub fn truncate_text(text: &str, max_bytes: usize) -> String {
    let mut end = text.len().min(max_bytes);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// Whether `name` is acceptable as a site or region name: 1 to [`NAME_BYTES_MAX`] bytes of
/// ASCII letters, digits, `-`, `_` and `.`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= NAME_BYTES_MAX
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// A request, the only frame the requester sends on its stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// The bytes of a chunk.
    Chunk(ChunkId),
    /// The signed manifest (envelope) of a release.
    Manifest(ReleaseId),
    /// The signed status records of every member of the server's site it holds (an encoded
    /// `Vec<Vec<u8>>` follows the [`ReplyHeader::Records`] header).
    SiteRecords,
    /// The signed summaries the server holds (as for `SiteRecords`): its own site's last,
    /// if it is the site's aggregator, then the other sites'. A member asks its site's
    /// aggregator when it shows the fleet.
    Summaries,
    /// The entries of the server's site ledgers that changed after `after` in its numbering
    /// `epoch` (another epoch: from the start): an encoded
    /// [`crate::summary::LedgerPage`] follows the [`ReplyHeader::Records`] header. A member
    /// asks its site's first aggregator, so its ledgers hold what the aggregator heard.
    Ledger {
        /// The numbering the member's point is in.
        epoch: u64,
        /// The point the member reached.
        after: u64,
    },
    /// The fleet roots the server holds after version `after`, oldest first (an encoded
    /// `Vec<Vec<u8>>` of [`crate::root::SignedRoot`]s follows [`ReplyHeader::Records`]): the
    /// chain a node that holds `after` takes one step at a time.
    Roots {
        /// The version the requester holds.
        after: u64,
    },
    /// The fleet's revocation list the server holds (an encoded
    /// [`crate::revoke::SignedRevocations`] follows [`ReplyHeader::Records`]).
    Revocations,
    /// The fleet orders the server holds (an encoded [`crate::orders::SignedOrders`] follows
    /// [`ReplyHeader::Records`]).
    Orders,
    /// An approver's signature for `release`, which the server holds for approval
    /// (`p2pctl approve` on another node). Answered with the release's envelope as it now
    /// stands ([`ReplyHeader::Manifest`]), `NotFound` if the server does not hold it, or the
    /// reason it refused the signature ([`ReplyHeader::Records`]: at most
    /// [`APPROVAL_REASON_BYTES_MAX`] bytes of UTF-8).
    Approve {
        /// The release held.
        release: ReleaseId,
        /// The approver's signature over the manifest bytes.
        signature: crate::envelope::ManifestSignature,
    },
    /// The signed manifest of a release as a patch against the manifest of the newest
    /// earlier release of its channel the server holds: a [`ManifestDelta`] follows
    /// [`ReplyHeader::Records`]; or the whole envelope ([`ReplyHeader::Manifest`]) when the
    /// server holds no earlier release or the patch is not smaller. A new version's
    /// manifest repeats every unchanged chunk id of the last one; its delta moves what
    /// changed. A requester that lacks the base asks with [`Request::Manifest`].
    ManifestDelta(ReleaseId),
}

/// Largest encoded [`ManifestDelta`]: an envelope, and the base and length beside it.
pub const MANIFEST_DELTA_BYTES_MAX: usize = crate::envelope::ENVELOPE_BYTES_MAX + 64;

/// [`Request::ManifestDelta`]'s answer: the envelope of the release with its manifest
/// bytes replaced by a patch (`chunking::patch`) against the manifest bytes of `base`. The
/// receiver rebuilds the manifest bytes, at most `manifest_len`, and checks that they hash
/// to the release id it asked for before anything else is done with them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestDelta {
    /// The release whose manifest bytes the patch starts from.
    pub base: ReleaseId,
    /// The length of the manifest bytes the patch rebuilds.
    pub manifest_len: u32,
    /// The [`crate::SignedManifest`], its manifest bytes replaced by the patch.
    pub envelope: Vec<u8>,
}

impl ManifestDelta {
    /// Encodes it.
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(self)
    }

    /// Decodes and checks one (at most [`MANIFEST_DELTA_BYTES_MAX`], a manifest length of
    /// at most [`crate::manifest::MANIFEST_BYTES_MAX`]).
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        let d: Self = codec::decode::<_, MANIFEST_DELTA_BYTES_MAX>(bytes, "manifest delta")?;
        if d.manifest_len as usize > crate::manifest::MANIFEST_BYTES_MAX {
            return Err(WireError::Invalid(
                "manifest delta rebuilds too large a manifest",
            ));
        }
        Ok(d)
    }
}

/// Longest reason a server gives for refusing an approval ([`Request::Approve`]).
pub const APPROVAL_REASON_BYTES_MAX: usize = 512;

impl Request {
    /// Decodes a request body.
    pub fn decode(body: &[u8]) -> Result<Self, WireError> {
        Ok(codec::decode::<_, REQUEST_FRAME_BYTES_MAX>(
            body, "request",
        )?)
    }
}

/// The server's answer to one [`Request`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReplyHeader {
    /// `len` bytes of the chunk follow.
    Chunk {
        /// Length of the chunk.
        len: u32,
    },
    /// `len` bytes of the encoded signed manifest follow.
    Manifest {
        /// Length of the envelope.
        len: u32,
    },
    /// `len` bytes of an encoded list of signed records or summaries follow (for
    /// [`Request::SiteRecords`] and [`Request::Summaries`]), or of a ledger page (for
    /// [`Request::Ledger`]).
    Records {
        /// Length of the encoded list.
        len: u32,
    },
    /// The server does not have it (any more).
    NotFound,
    /// The server is at its limit of concurrent requests; try another peer or later.
    Busy,
    /// `len` bytes of the chunk compressed follow (`chunking::compress`): one zstd frame
    /// that states `raw_len`, the chunk's length. Only on connections of protocol
    /// [`COMPRESSED_CHUNKS_VERSION`] or later, and only smaller than the chunk.
    ChunkZstd {
        /// Length of the compressed bytes.
        len: u32,
        /// Length of the chunk.
        raw_len: u32,
    },
}

impl ReplyHeader {
    /// Decodes a reply header and checks the announced length against what `request` allows.
    pub fn decode(body: &[u8], request: &Request) -> Result<Self, WireError> {
        let reply: Self = codec::decode::<_, REQUEST_FRAME_BYTES_MAX>(body, "reply")?;
        match (reply, request) {
            (Self::Chunk { len }, Request::Chunk(_)) if len <= CHUNK_BYTES_MAX => {}
            (Self::ChunkZstd { len, raw_len }, Request::Chunk(_))
                if raw_len <= CHUNK_BYTES_MAX && len < raw_len => {}
            (
                Self::Manifest { len },
                Request::Manifest(_) | Request::Approve { .. } | Request::ManifestDelta(_),
            ) if len as usize <= crate::envelope::ENVELOPE_BYTES_MAX => {}
            (Self::Records { len }, Request::ManifestDelta(_))
                if len as usize <= MANIFEST_DELTA_BYTES_MAX => {}
            (Self::Records { len }, Request::Approve { .. })
                if len as usize <= APPROVAL_REASON_BYTES_MAX => {}
            (
                Self::Records { len },
                Request::SiteRecords
                | Request::Summaries
                | Request::Ledger { .. }
                | Request::Roots { .. },
            ) if len as usize <= SITE_RECORDS_BYTES_MAX => {}
            (Self::Records { len }, Request::Revocations)
                if len as usize <= crate::revoke::REVOCATIONS_BYTES_MAX => {}
            (Self::Records { len }, Request::Orders)
                if len as usize <= crate::orders::ORDERS_BYTES_MAX => {}
            (Self::NotFound | Self::Busy, _) => {}
            _ => return Err(WireError::Invalid("reply does not fit the request")),
        }
        Ok(reply)
    }
}

/// A release announcement (gossipsub message body).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Announcement {
    /// [`ANNOUNCEMENT_VERSION`].
    pub protocol_version: u16,
    /// The release (BLAKE3 of its manifest bytes).
    pub release: ReleaseId,
    /// Its channel, so a node that does not follow it can ignore it unfetched.
    pub channel: String,
    /// Its version, so a node that has a newer one can ignore it unfetched.
    pub version: u64,
}

impl Announcement {
    /// Encodes the announcement.
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(self)
    }

    /// Decodes and checks an announcement.
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        let a: Self = codec::decode::<_, ANNOUNCEMENT_BYTES_MAX>(bytes, "announcement")?;
        if a.protocol_version != ANNOUNCEMENT_VERSION {
            return Err(WireError::Version {
                found: a.protocol_version,
                supported: ANNOUNCEMENT_VERSION,
            });
        }
        if !crate::manifest::is_valid_channel(&a.channel) {
            return Err(WireError::Invalid("channel name"));
        }
        Ok(a)
    }
}

/// Bytes a QUIC packet adds to the frames it carries, as an emulated WAN counts them (UDP
/// payload): a short header with the 8-byte connection id and a packet number (up to 13),
/// a STREAM frame's header (up to 8) and the AEAD tag (16). What a control message costs on
/// a link beyond its frame; the simulator charges it per message.
pub const PACKET_OVERHEAD_BYTES: u64 = 37;

/// Bytes of a QUIC packet that only acknowledges: the short header, an ACK frame of one
/// range (about 6) and the tag.
pub const ACK_PACKET_BYTES: u64 = 35;

/// A fixed-length bit set over a release's chunks.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Bitmap {
    len: u32,
    bits: Vec<u8>,
    ones: u32,
}

impl Bitmap {
    /// All zeros.
    pub fn new(len: u32) -> Self {
        Self {
            len,
            bits: vec![0; (len as usize).div_ceil(8)],
            ones: 0,
        }
    }

    /// All ones.
    pub fn full(len: u32) -> Self {
        let mut b = Self::new(len);
        for i in 0..len {
            b.set(i);
        }
        b
    }

    /// From wire bytes; bits past `len` are ignored (cleared).
    pub fn from_bytes(len: u32, mut bits: Vec<u8>) -> Option<Self> {
        if bits.len() != (len as usize).div_ceil(8) {
            return None;
        }
        if len % 8 != 0 {
            if let Some(last) = bits.last_mut() {
                *last &= (1u8 << (len % 8)) - 1;
            }
        }
        let ones = bits.iter().map(|b| b.count_ones()).sum();
        Some(Self { len, bits, ones })
    }

    /// Number of bits.
    #[inline]
    pub fn len(&self) -> u32 {
        self.len
    }

    /// Whether it has no bits.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of set bits.
    #[inline]
    pub fn count(&self) -> u32 {
        self.ones
    }

    /// Whether every bit is set.
    #[inline]
    pub fn is_full(&self) -> bool {
        self.ones == self.len
    }

    /// Bit `i` (false past the end).
    #[inline]
    pub fn get(&self, i: u32) -> bool {
        i < self.len && self.bits[(i / 8) as usize] & (1 << (i % 8)) != 0
    }

    /// Sets bit `i`; returns whether it was clear. Ignores indices past the end.
    #[inline]
    pub fn set(&mut self, i: u32) -> bool {
        if i >= self.len || self.get(i) {
            return false;
        }
        self.bits[(i / 8) as usize] |= 1 << (i % 8);
        self.ones += 1;
        true
    }

    /// Clears bit `i`; returns whether it was set. Ignores indices past the end.
    #[inline]
    pub fn clear(&mut self, i: u32) -> bool {
        if !self.get(i) {
            return false;
        }
        self.bits[(i / 8) as usize] &= !(1 << (i % 8));
        self.ones -= 1;
        true
    }

    /// The wire bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bits
    }

    /// Number of 64-bit words ([`Bitmap::word`]).
    #[inline]
    pub fn word_count(&self) -> usize {
        self.bits.len().div_ceil(8)
    }

    /// Bits `64k..64k + 64` as a little-endian word (bit `i` of the word is chunk `64k + i`);
    /// zero past the end.
    #[inline]
    pub fn word(&self, k: usize) -> u64 {
        word_at(&self.bits, k)
    }

    /// The indices of the set bits, in order. Skips 64 clear bits at a time.
    pub fn ones(&self) -> impl Iterator<Item = u32> + '_ {
        self.words(|w, _| w)
    }

    /// The indices of the clear bits, in order.
    pub fn zeros(&self) -> impl Iterator<Item = u32> + '_ {
        self.words(|w, _| !w)
    }

    /// The indices set here and clear in `other` (a bitmap of the same length; where the
    /// lengths differ, `other` reads as clear past its end).
    pub fn ones_and_not<'a>(&'a self, other: &'a Self) -> impl Iterator<Item = u32> + 'a {
        self.words(move |w, k| w & !word_at(&other.bits, k))
    }

    /// Iterates the bits of `f(word, k)` over the 64-bit words of this bitmap, within `len`.
    fn words<'a>(&'a self, f: impl Fn(u64, usize) -> u64 + 'a) -> impl Iterator<Item = u32> + 'a {
        let len = self.len;
        (0..self.bits.len().div_ceil(8)).flat_map(move |k| {
            let mut w = f(word_at(&self.bits, k), k);
            let base = (k * 64) as u32;
            if len - base < 64 {
                w &= (1u64 << (len - base)) - 1;
            }
            std::iter::from_fn(move || {
                (w != 0).then(|| {
                    let i = w.trailing_zeros();
                    w &= w - 1;
                    base + i
                })
            })
        })
    }
}

/// The `k`th little-endian 64-bit word of `bytes`, zero past the end.
#[inline]
fn word_at(bytes: &[u8], k: usize) -> u64 {
    if let Some(w) = bytes.get(k * 8..k * 8 + 8) {
        return u64::from_le_bytes(w.try_into().expect("8 bytes"));
    }
    let start = (k * 8).min(bytes.len());
    let end = (k * 8 + 8).min(bytes.len());
    let mut w = [0u8; 8];
    w[..end - start].copy_from_slice(&bytes[start..end]);
    u64::from_le_bytes(w)
}
