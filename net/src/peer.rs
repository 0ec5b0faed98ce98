//! One data-plane connection to a peer: the hello exchange, the control stream (bitmaps and
//! haves in both directions), serving the peer's requests from the store, and this node's
//! requests to it.
//!
//! A malformed or oversized frame on a request stream resets that stream with
//! [`codes::PROTOCOL`]; on the control stream it closes the connection (the peer's view of
//! what we have would be wrong from then on). Neither ever stops the node.

use super::quic::{self, codes, read_frame, write_frame};
use super::{Class, Net, lock};
use api::PeerView;
use libp2p::PeerId;
use protocol::wire::{
    self, Bitmap, CONTROL_FRAME_BYTES_MAX, Control, ControlKind, Hello, REQUEST_FRAME_BYTES_MAX,
    ReplyHeader, Request, Slot,
};
use protocol::{ChunkId, ReleaseId};
use quinn::{Connection, RecvStream, SendStream, VarInt};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Store reads served at once, across all peers. Each holds one chunk in memory (≤ 4 MiB,
/// 256 KiB by default); past it a request gets [`ReplyHeader::Busy`].
pub const SERVE_CONCURRENCY_MAX: usize = 64;

/// Control messages queued for one peer. A peer that does not read its control stream is
/// disconnected rather than buffered for.
const CONTROL_QUEUE_MAX: usize = 4096;

/// A peer whose clock differs from this node's by this much (milliseconds) is logged: one
/// of the two refuses valid releases as expired or not yet made.
const CLOCK_WARN_MS: i64 = 5 * 60 * 1000;

/// Releases whose bitmaps are kept per peer.
const PEER_RELEASES_MAX: usize = 128;

/// Time allowed for the hello exchange and for a request's frame to arrive.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A request (chunk or manifest) must complete within this. Chunks are at most a few MiB;
/// on a thin WAN with many requests queued this is still generous.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// What a peer told us about one release.
#[derive(Debug, Clone)]
pub struct PeerRelease {
    /// Its chunks.
    pub bits: Bitmap,
    /// It is the release's origin, past initial seeding: a last resort across the WAN.
    pub reserve: bool,
}

#[derive(Default)]
struct PeerState {
    releases: HashMap<ReleaseId, PeerRelease>,
    in_flight_bytes: u64,
    /// For a peer of another site: per release, what it wants and what waits to be told.
    wan_out: HashMap<ReleaseId, WanOut>,
    /// Per release, the chunks this node asked it for ([`Control::Want`]).
    want_sent: HashMap<ReleaseId, Bitmap>,
    /// The slots this node gave its releases on this connection (both ways), and the next.
    slots_out: HashMap<ReleaseId, Slot>,
    slot_releases: HashMap<Slot, ReleaseId>,
    next_slot: Slot,
    /// The slots the peer gave its releases.
    slots_in: HashMap<Slot, ReleaseId>,
}

/// What this node announces to one peer of another site about one release.
#[derive(Debug, Default)]
pub(crate) struct WanOut {
    /// The chunks it wants (its latest [`Control::Want`]), in order; kept even before this
    /// node knows the release.
    pub(crate) want: Vec<u32>,
    /// The chunks announced to it already (never twice); sized on first use.
    pub(crate) told: Bitmap,
    /// Chunks waiting to be announced.
    pub(crate) batch: scheduler::control::Batch,
}

impl WanOut {
    /// Queues the wanted chunks that `have` holds and `visible` allows, not told yet.
    pub(crate) fn queue_wanted(&mut self, have: &Bitmap, visible: Option<&Bitmap>) {
        if self.told.len() != have.len() {
            self.told = Bitmap::new(have.len());
        }
        let told = &self.told;
        self.batch.extend(
            self.want
                .iter()
                .copied()
                .filter(|&i| have.get(i) && !told.get(i) && visible.is_none_or(|v| v.get(i))),
        );
    }
}

/// A connected peer.
pub struct Peer {
    /// Its peer id (proved by TLS).
    pub id: PeerId,
    /// Its node id bytes (ed25519 key).
    pub node_key: [u8; 32],
    /// Its site: its certificate's in a fleet with a root, else its hello's.
    pub site: String,
    /// Its region.
    pub region: String,
    /// LAN or WAN.
    pub class: Class,
    /// The protocol version the connection speaks (agreed in the QUIC handshake).
    pub version: u16,
    /// The address of the connection.
    pub addr: SocketAddr,
    pub(crate) conn: Connection,
    /// Whether this node dialed the connection.
    pub(crate) dialed: bool,
    /// The peer process's instance (from its hello).
    pub(crate) instance: u64,
    control: mpsc::Sender<Control>,
    state: Mutex<PeerState>,
    /// Chunk bytes received from it, as they crossed the wire.
    pub bytes_in: AtomicU64,
    /// Chunk bytes sent to it, as they crossed the wire.
    pub bytes_out: AtomicU64,
    pub(crate) connected: Instant,
    /// This node told it on this connection that it is an overlay neighbour.
    pub(crate) overlay_sent: AtomicBool,
    /// It told this node it takes it as an overlay neighbour.
    pub(crate) overlay_chosen: AtomicBool,
    /// The certificate it was admitted with, in a fleet with a root: checked again when a
    /// newer root or revocation list is taken.
    pub(crate) cert: Option<protocol::cert::SignedCert>,
    /// The fleet root version it holds, as its hello or last [`Control::Trust`] said.
    pub(crate) root_version: AtomicU64,
    /// The revocation list it holds, likewise ([`Hello::revocations`]).
    pub(crate) revocations: Mutex<(u64, u64)>,
    /// The fleet orders it holds, likewise ([`Hello::orders`]).
    pub(crate) orders: Mutex<(u64, u64)>,
    /// Its clock minus this node's when its hello came, milliseconds (half the round trip
    /// aside: far below what matters, minutes).
    pub clock_offset_ms: i64,
}

/// A chunk as [`Peer::request_chunk`] received it.
#[derive(Debug)]
pub struct Fetched {
    /// Its bytes, verified against its id.
    pub bytes: Vec<u8>,
    /// What crossed the wire for them: their length, or less where they moved compressed.
    pub wire: u64,
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// The connection or stream failed.
    #[error("transport: {0}")]
    Transport(String),
    /// The peer broke the protocol.
    #[error("protocol: {0}")]
    Protocol(String),
    /// The bytes do not hash to the id asked for.
    #[error("chunk does not match its id")]
    BadChunk,
    /// The peer does not have it.
    #[error("not found")]
    NotFound,
    /// The peer is busy.
    #[error("busy")]
    Busy,
    /// No answer in time.
    #[error("timed out")]
    Timeout,
}

impl From<quinn::ConnectionError> for RequestError {
    fn from(e: quinn::ConnectionError) -> Self {
        Self::Transport(e.to_string())
    }
}

impl From<quinn::WriteError> for RequestError {
    fn from(e: quinn::WriteError) -> Self {
        Self::Transport(e.to_string())
    }
}

impl From<quic::FrameError> for RequestError {
    fn from(e: quic::FrameError) -> Self {
        match e {
            quic::FrameError::Read(e) => Self::Transport(e.to_string()),
            quic::FrameError::Wire(e) => Self::Protocol(e.to_string()),
        }
    }
}

impl Peer {
    /// Queues a control message; a peer whose queue is full is disconnected.
    pub fn send_control(&self, msg: Control) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.control.try_send(msg) {
            tracing::warn!(peer = %self.id, "control queue full; disconnecting slow peer");
            self.close(codes::SURPLUS, "control queue full");
        }
    }

    pub(crate) fn close(&self, code: u32, reason: &str) {
        self.conn.close(VarInt::from_u32(code), reason.as_bytes());
    }

    /// The releases it announced (bitmaps and offers), at most [`PEER_RELEASES_MAX`].
    pub(crate) fn announced(&self) -> Vec<ReleaseId> {
        lock(&self.state).releases.keys().copied().collect()
    }

    /// Whether it sent a bitmap for `release`.
    pub fn has_bitmap(&self, release: &ReleaseId) -> bool {
        lock(&self.state).releases.contains_key(release)
    }

    /// Of `indices`, those it has not said it has of `release`.
    pub(crate) fn lacks(&self, release: &ReleaseId, indices: &[u32]) -> Vec<u32> {
        let s = lock(&self.state);
        match s.releases.get(release) {
            Some(r) => indices
                .iter()
                .copied()
                .filter(|&i| !r.bits.get(i))
                .collect(),
            None => indices.to_vec(),
        }
    }

    /// Its bitmap for `release`.
    pub fn release_view(&self, release: &ReleaseId) -> Option<PeerRelease> {
        lock(&self.state).releases.get(release).cloned()
    }

    /// The slot of `release` on this connection, given now if it has none. Past
    /// [`PEER_RELEASES_MAX`] releases the map starts over (the next bitmaps rebind).
    pub(crate) fn slot_for(&self, release: ReleaseId) -> Slot {
        let mut s = lock(&self.state);
        if let Some(&slot) = s.slots_out.get(&release) {
            return slot;
        }
        if s.slots_out.len() >= PEER_RELEASES_MAX {
            s.slots_out.clear();
            s.slot_releases.clear();
        }
        let slot = s.next_slot;
        s.next_slot = s.next_slot.wrapping_add(1);
        s.slots_out.insert(release, slot);
        s.slot_releases.insert(slot, release);
        slot
    }

    /// The release this node gave `slot` on this connection.
    pub(crate) fn own_slot_release(&self, slot: Slot) -> Option<ReleaseId> {
        lock(&self.state).slot_releases.get(&slot).copied()
    }

    /// The slot the peer gave `release`, if it offered it.
    pub(crate) fn their_slot(&self, release: &ReleaseId) -> Option<Slot> {
        lock(&self.state)
            .slots_in
            .iter()
            .find(|(_, r)| *r == release)
            .map(|(s, _)| *s)
    }

    /// Sends it an announcement of `indices` of `release` (several messages if need be).
    pub(crate) fn send_have(&self, release: ReleaseId, indices: &[u32]) {
        let slot = self.slot_for(release);
        for part in indices.chunks(wire::HAVE_INDICES_MAX) {
            self.send_control(Control::Have {
                slot,
                indices: part.to_vec(),
            });
        }
    }

    /// Runs `f` on what this node announces to the peer about `release` (created empty).
    /// Bounded like the peer's bitmaps: past [`PEER_RELEASES_MAX`] releases the oldest
    /// entry makes room.
    pub(crate) fn wan_release(&self, release: ReleaseId, f: impl FnOnce(&mut WanOut)) {
        let mut s = lock(&self.state);
        if !s.wan_out.contains_key(&release) && s.wan_out.len() >= PEER_RELEASES_MAX {
            if let Some(k) = s.wan_out.keys().next().copied() {
                s.wan_out.remove(&k);
            }
        }
        f(s.wan_out.entry(release).or_default());
    }

    /// The announcements due at `now_ms`, per release; they count as told.
    pub(crate) fn due_haves(&self, now_ms: u64) -> Vec<(ReleaseId, Vec<u32>)> {
        let interval = scheduler::control::WAN_HAVE_INTERVAL;
        let mut s = lock(&self.state);
        let mut out = Vec::new();
        for (id, w) in s.wan_out.iter_mut() {
            if let Some(list) = w.batch.poll(now_ms, interval) {
                let list: Vec<u32> = list.into_iter().filter(|&i| !w.told.get(i)).collect();
                for &i in &list {
                    w.told.set(i);
                }
                if !list.is_empty() {
                    out.push((*id, list));
                }
            }
        }
        out
    }

    /// Of `wanted`, the chunks of `release` not asked of it yet, now noted as asked (a
    /// [`Control::Want`] of them is due; empty: nothing new).
    pub(crate) fn new_wants(&self, release: ReleaseId, wanted: &Bitmap) -> Vec<u32> {
        let mut s = lock(&self.state);
        if !s.want_sent.contains_key(&release) && s.want_sent.len() >= PEER_RELEASES_MAX {
            s.want_sent.clear();
        }
        let sent = s
            .want_sent
            .entry(release)
            .or_insert_with(|| Bitmap::new(wanted.len()));
        let new: Vec<u32> = wanted.ones_and_not(sent).collect();
        for &i in &new {
            sent.set(i);
        }
        new
    }

    /// Whether this node asked it for chunks of `release`; forgets that it did.
    pub(crate) fn take_wanted(&self, release: &ReleaseId) -> bool {
        lock(&self.state).want_sent.remove(release).is_some()
    }

    /// Notes the peer's slot for `release`; bounded like its bitmaps.
    fn bind_slot(&self, slot: Slot, release: ReleaseId) {
        let mut s = lock(&self.state);
        if !s.slots_in.contains_key(&slot) && s.slots_in.len() >= PEER_RELEASES_MAX {
            s.slots_in.clear();
        }
        s.slots_in.insert(slot, release);
    }

    /// Bytes requested from it and not yet received.
    pub fn in_flight_bytes(&self) -> u64 {
        lock(&self.state).in_flight_bytes
    }

    pub(crate) fn add_in_flight(&self, n: u64) {
        lock(&self.state).in_flight_bytes += n;
    }

    pub(crate) fn sub_in_flight(&self, n: u64) {
        let mut s = lock(&self.state);
        s.in_flight_bytes = s.in_flight_bytes.saturating_sub(n);
    }

    /// Forgets that it has chunk `index` of `release` (it answered "not found").
    pub(crate) fn forget_chunk(&self, release: &ReleaseId, index: u32) {
        if let Some(r) = lock(&self.state).releases.get_mut(release) {
            r.bits.clear(index);
        }
    }

    /// The report for `p2pctl peers`.
    pub fn view(&self) -> PeerView {
        PeerView {
            peer_id: self.id.to_string(),
            node_id: hex::encode(self.node_key),
            site: self.site.clone(),
            region: self.region.clone(),
            address: self.addr.to_string(),
            lan: self.class == Class::Lan,
            protocol: self.version,
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            bytes_out: self.bytes_out.load(Ordering::Relaxed),
            connected_s: self.connected.elapsed().as_secs(),
            rtt_ms: self.conn.rtt().as_secs_f64() * 1000.0,
            clock_offset_s: self.clock_offset_ms as f64 / 1000.0,
        }
    }

    /// Asks for chunk `id` of `len` bytes; returns its verified bytes and what crossed the
    /// wire for them. A compressed answer is decompressed within `len` bytes
    /// ([`chunking::compress::decompress`]) before its id is checked; one that does not fit
    /// is a protocol error, as a chunk that does not match its id is a bad one.
    pub async fn request_chunk(&self, id: ChunkId, len: u32) -> Result<Fetched, RequestError> {
        let req = Request::Chunk(id);
        let work = async {
            let (mut send, mut recv) = self.conn.open_bi().await?;
            let header = self.exchange(&mut send, &mut recv, &req).await?;
            let (wire_len, compressed) = match header {
                ReplyHeader::Chunk { len: got } if got == len => (len, false),
                ReplyHeader::Chunk { len: got } => {
                    return Err(RequestError::Protocol(format!(
                        "chunk of {got} bytes, the manifest says {len}"
                    )));
                }
                ReplyHeader::ChunkZstd { len: z, raw_len }
                    if raw_len == len
                        && self.version >= protocol::wire::COMPRESSED_CHUNKS_VERSION =>
                {
                    (z, true)
                }
                ReplyHeader::ChunkZstd { raw_len, .. } => {
                    return Err(RequestError::Protocol(format!(
                        "compressed chunk of {raw_len} bytes on a protocol {} connection, \
                         the manifest says {len}",
                        self.version
                    )));
                }
                ReplyHeader::NotFound => return Err(RequestError::NotFound),
                ReplyHeader::Busy => return Err(RequestError::Busy),
                ReplyHeader::Manifest { .. } | ReplyHeader::Records { .. } => {
                    return Err(RequestError::Protocol("not a chunk".into()));
                }
            };
            // Appended piece by piece as quinn has them: no zero-filled buffer to overwrite.
            let mut buf = Vec::with_capacity(wire_len as usize);
            while buf.len() < wire_len as usize {
                match recv.read_chunk(wire_len as usize - buf.len(), true).await {
                    Ok(Some(piece)) => buf.extend_from_slice(&piece.bytes),
                    Ok(None) => {
                        return Err(RequestError::Transport("chunk cut short".into()));
                    }
                    Err(e) => return Err(RequestError::Transport(e.to_string())),
                }
            }
            if compressed {
                buf = chunking::compress::decompress(&buf, len as usize)
                    .map_err(|e| RequestError::Protocol(e.to_string()))?;
            }
            Ok((buf, u64::from(wire_len)))
        };
        let (bytes, wire) = tokio::time::timeout(REQUEST_TIMEOUT, work)
            .await
            .map_err(|_| RequestError::Timeout)??;
        if !id.matches(&bytes) {
            return Err(RequestError::BadChunk);
        }
        self.bytes_in.fetch_add(wire, Ordering::Relaxed);
        Ok(Fetched { bytes, wire })
    }

    /// Asks for the signed manifest of `release` (verified by the caller).
    pub async fn request_manifest(&self, release: ReleaseId) -> Result<Vec<u8>, RequestError> {
        let req = Request::Manifest(release);
        let work = async {
            let (mut send, mut recv) = self.conn.open_bi().await?;
            match self.exchange(&mut send, &mut recv, &req).await? {
                ReplyHeader::Manifest { len } => {
                    let mut buf = vec![0u8; len as usize];
                    recv.read_exact(&mut buf)
                        .await
                        .map_err(|e| RequestError::Transport(e.to_string()))?;
                    Ok(buf)
                }
                ReplyHeader::NotFound => Err(RequestError::NotFound),
                ReplyHeader::Busy => Err(RequestError::Busy),
                ReplyHeader::Chunk { .. }
                | ReplyHeader::ChunkZstd { .. }
                | ReplyHeader::Records { .. } => {
                    Err(RequestError::Protocol("not a manifest".into()))
                }
            }
        };
        tokio::time::timeout(REQUEST_TIMEOUT, work)
            .await
            .map_err(|_| RequestError::Timeout)?
    }

    /// Asks for the signed manifest of `release` as a delta against an earlier manifest of
    /// its channel ([`Request::ManifestDelta`]); the answer is the delta, or the whole
    /// envelope when the peer has no earlier one.
    pub async fn request_manifest_delta(
        &self,
        release: ReleaseId,
    ) -> Result<ManifestAnswer, RequestError> {
        let req = Request::ManifestDelta(release);
        let work = async {
            let (mut send, mut recv) = self.conn.open_bi().await?;
            let header = self.exchange(&mut send, &mut recv, &req).await?;
            let body = |len: u32| {
                let mut buf = vec![0u8; len as usize];
                async move {
                    recv.read_exact(&mut buf)
                        .await
                        .map_err(|e| RequestError::Transport(e.to_string()))?;
                    Ok::<_, RequestError>(buf)
                }
            };
            match header {
                ReplyHeader::Manifest { len } => Ok(ManifestAnswer::Whole(body(len).await?)),
                ReplyHeader::Records { len } => {
                    let bytes = body(len).await?;
                    protocol::wire::ManifestDelta::decode(&bytes)
                        .map(ManifestAnswer::Delta)
                        .map_err(|e| RequestError::Protocol(e.to_string()))
                }
                ReplyHeader::NotFound => Err(RequestError::NotFound),
                ReplyHeader::Busy => Err(RequestError::Busy),
                ReplyHeader::Chunk { .. } | ReplyHeader::ChunkZstd { .. } => {
                    Err(RequestError::Protocol("not a manifest".into()))
                }
            }
        };
        tokio::time::timeout(REQUEST_TIMEOUT, work)
            .await
            .map_err(|_| RequestError::Timeout)?
    }

    /// Asks for the status records of its site's members (each to be verified by the caller).
    pub async fn request_site_records(&self) -> Result<Vec<Vec<u8>>, RequestError> {
        self.request_list(Request::SiteRecords).await
    }

    /// Asks for the other sites' summaries it holds (each to be verified by the caller).
    pub async fn request_summaries(&self) -> Result<Vec<Vec<u8>>, RequestError> {
        self.request_list(Request::Summaries).await
    }

    /// Asks its site's aggregator for the entries of its ledgers changed after `after` in
    /// its numbering `epoch` (each checked by the decoder).
    pub async fn request_ledger(
        &self,
        epoch: u64,
        after: u64,
    ) -> Result<protocol::summary::LedgerPage, RequestError> {
        let buf = self
            .request_records(Request::Ledger { epoch, after })
            .await?;
        protocol::summary::LedgerPage::decode(&buf)
            .map_err(|e| RequestError::Protocol(e.to_string()))
    }

    /// Asks for the fleet roots it holds after version `after` (each to be verified by the
    /// caller, one step at a time).
    pub async fn request_roots(&self, after: u64) -> Result<Vec<Vec<u8>>, RequestError> {
        self.request_list(Request::Roots { after }).await
    }

    /// Sends an approver's signature for `release`, which it may hold for approval: the
    /// envelope as it now stands, or the reason it refused (`NotFound`: it does not hold it).
    pub async fn request_approve(
        &self,
        release: ReleaseId,
        signature: protocol::ManifestSignature,
    ) -> Result<Result<Vec<u8>, String>, RequestError> {
        let req = Request::Approve { release, signature };
        let work = async {
            let (mut send, mut recv) = self.conn.open_bi().await?;
            let header = self.exchange(&mut send, &mut recv, &req).await?;
            let len = match header {
                ReplyHeader::Manifest { len } | ReplyHeader::Records { len } => len,
                ReplyHeader::NotFound => return Err(RequestError::NotFound),
                ReplyHeader::Busy => return Err(RequestError::Busy),
                ReplyHeader::Chunk { .. } | ReplyHeader::ChunkZstd { .. } => {
                    return Err(RequestError::Protocol("not an approval answer".into()));
                }
            };
            let mut buf = vec![0u8; len as usize];
            recv.read_exact(&mut buf)
                .await
                .map_err(|e| RequestError::Transport(e.to_string()))?;
            Ok(match header {
                ReplyHeader::Manifest { .. } => Ok(buf),
                _ => Err(String::from_utf8_lossy(&buf).into_owned()),
            })
        };
        tokio::time::timeout(REQUEST_TIMEOUT, work)
            .await
            .map_err(|_| RequestError::Timeout)?
    }

    async fn request_list(&self, req: Request) -> Result<Vec<Vec<u8>>, RequestError> {
        let buf = self.request_records(req).await?;
        protocol::codec::decode::<Vec<Vec<u8>>, { wire::SITE_RECORDS_BYTES_MAX }>(
            &buf,
            "records or summaries",
        )
        .map_err(|e| RequestError::Protocol(e.to_string()))
    }

    /// The body of a [`ReplyHeader::Records`] answer to `req` (its length checked against
    /// the request's bound by the header's decoder): the revocation list or fleet orders
    /// it holds, for one (to be verified by the caller).
    pub(crate) async fn request_records(&self, req: Request) -> Result<Vec<u8>, RequestError> {
        let work = async {
            let (mut send, mut recv) = self.conn.open_bi().await?;
            match self.exchange(&mut send, &mut recv, &req).await? {
                ReplyHeader::Records { len } => {
                    let mut buf = vec![0u8; len as usize];
                    recv.read_exact(&mut buf)
                        .await
                        .map_err(|e| RequestError::Transport(e.to_string()))?;
                    Ok(buf)
                }
                ReplyHeader::NotFound => Err(RequestError::NotFound),
                ReplyHeader::Busy => Err(RequestError::Busy),
                _ => Err(RequestError::Protocol("not records".into())),
            }
        };
        tokio::time::timeout(REQUEST_TIMEOUT, work)
            .await
            .map_err(|_| RequestError::Timeout)?
    }

    async fn exchange(
        &self,
        send: &mut SendStream,
        recv: &mut RecvStream,
        req: &Request,
    ) -> Result<ReplyHeader, RequestError> {
        write_frame(send, req).await?;
        let _ = send.finish();
        let body = read_frame(recv, REQUEST_FRAME_BYTES_MAX)
            .await?
            .ok_or_else(|| RequestError::Transport("stream closed before a reply".into()))?;
        ReplyHeader::decode(&body, req).map_err(|e| RequestError::Protocol(e.to_string()))
    }
}

/// Dials `peer` at `addr` and runs the connection.
pub(crate) async fn dial(net: &Arc<Net>, peer: PeerId, addr: SocketAddr) -> crate::Result<()> {
    let config = quic::client_config(net.keypair(), peer, quic::alpns(net.config.compression))?;
    let conn = tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        net.endpoint.connect_with(config, addr, "p2pd")?,
    )
    .await??;
    let version = agreed_version(&conn)?;
    let (mut send, mut recv) = conn.open_bi().await?;
    write_frame(&mut send, &Control::Hello(hello(net, version))).await?;
    let their = tokio::time::timeout(HANDSHAKE_TIMEOUT, read_hello(&mut recv, version)).await??;
    let place = admit_or_close(net, &conn, &peer, &their)?;
    register(net, true, conn, peer, their, place, send, recv);
    Ok(())
}

/// Accepts incoming connections until the endpoint closes.
pub(crate) async fn accept_loop(net: Arc<Net>) {
    while let Some(incoming) = net.endpoint.accept().await {
        let net = net.clone();
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            if let Err(e) = accept(&net, incoming).await {
                tracing::debug!(%remote, error = %e, "incoming data-plane connection failed");
            }
        });
    }
}

async fn accept(net: &Arc<Net>, incoming: quinn::Incoming) -> crate::Result<()> {
    let conn = tokio::time::timeout(HANDSHAKE_TIMEOUT, incoming).await??;
    let Some(peer) = quic::remote_peer_id(&conn) else {
        conn.close(VarInt::from_u32(codes::PROTOCOL), b"no peer id");
        return Err(crate::Error::Handshake(
            "certificate carries no peer id".into(),
        ));
    };
    if net.is_banned(&peer) {
        conn.close(VarInt::from_u32(codes::BANNED), b"banned");
        return Err(crate::Error::Handshake(format!("{peer} is banned")));
    }
    let version = agreed_version(&conn)?;
    // Whether there is room depends on the peer's site (a member of this site may take a
    // slot that an idle peer of another site gives up), known after the hello.
    let (mut send, mut recv) = tokio::time::timeout(HANDSHAKE_TIMEOUT, conn.accept_bi()).await??;
    let their = match tokio::time::timeout(HANDSHAKE_TIMEOUT, read_hello(&mut recv, version)).await
    {
        Ok(Ok(h)) => h,
        Ok(Err(e)) => {
            conn.close(VarInt::from_u32(codes::PROTOCOL), b"bad hello");
            return Err(e);
        }
        Err(_) => {
            conn.close(VarInt::from_u32(codes::PROTOCOL), b"no hello in time");
            return Err(crate::Error::Handshake(format!(
                "{peer} sent no hello in time"
            )));
        }
    };
    // Nothing of this node's is sent to a peer that is refused.
    let place = admit_or_close(net, &conn, &peer, &their)?;
    if !net.make_room_for(&place.site) {
        conn.close(
            VarInt::from_u32(codes::SURPLUS),
            b"slots left are for this site",
        );
        return Err(crate::Error::Handshake(format!(
            "{peer} of site {} refused: the slots left are kept for this site's members",
            place.site
        )));
    }
    write_frame(&mut send, &Control::Hello(hello(net, version))).await?;
    register(net, false, conn, peer, their, place, send, recv);
    Ok(())
}

/// Where a peer is: its site and region ([`admit`]).
pub(crate) struct Place {
    pub(crate) site: String,
    pub(crate) region: String,
    /// The certificate that says so, in a fleet with a root.
    pub(crate) cert: Option<protocol::cert::SignedCert>,
}

/// [`admit`], closing the connection (`codes::UNCERTIFIED`) of a peer refused.
fn admit_or_close(
    net: &Net,
    conn: &Connection,
    peer: &PeerId,
    hello: &Hello,
) -> crate::Result<Place> {
    admit(net, peer, hello, jiff::Timestamp::now().as_second()).map_err(|why| {
        conn.close(VarInt::from_u32(codes::UNCERTIFIED), b"no valid certificate");
        tracing::warn!(%peer, addr = %conn.remote_address(), reason = %why, "peer refused: no valid certificate");
        net.peers.note_refused(*peer, conn.remote_address(), why.clone());
        // Not dialled again: it comes back only by showing a valid certificate itself.
        net.peers.forget_known(peer);
        crate::Error::Handshake(format!("{peer} refused: {why}"))
    })
}

/// Where a peer is: in a fleet with a root ([`Net::set_membership`]), its certificate's
/// site and region, and it is refused without a certificate that verifies for its key under
/// the root at `now_unix_s`; in a fleet without, what its hello says.
pub(crate) fn admit(
    net: &Net,
    peer: &PeerId,
    hello: &Hello,
    now_unix_s: i64,
) -> Result<Place, String> {
    match certified_place(net, peer, &hello.cert, now_unix_s)? {
        Some(place) => Ok(place),
        None => Ok(Place {
            site: hello.site.clone(),
            region: hello.region.clone(),
            cert: None,
        }),
    }
}

/// In a fleet with a root, the site and region of `peer`'s certificate `cert` (encoded), or
/// why it does not verify for the peer's key under the root's CA at `now_unix_s` or is
/// revoked; `None` in a fleet without a root. Both planes ask it.
pub(crate) fn certified_place(
    net: &Net,
    peer: &PeerId,
    cert: &[u8],
    now_unix_s: i64,
) -> Result<Option<Place>, String> {
    let Some(m) = net.membership() else {
        return Ok(None);
    };
    let node = super::node_id_of(peer)
        .map(protocol::NodeId)
        .ok_or_else(|| "not an ed25519 peer id".to_string())?;
    if cert.is_empty() {
        return Err("it showed no certificate".into());
    }
    let cert = protocol::cert::SignedCert::decode(cert).map_err(|e| e.to_string())?;
    m.check(&cert, &node, now_unix_s)?;
    if cert.cert.site == net.local.site {
        net.peers.note_certified(node.0, cert.clone(), now_unix_s);
    }
    Ok(Some(Place {
        site: cert.cert.site.clone(),
        region: cert.cert.region.clone(),
        cert: Some(cert),
    }))
}

/// The protocol version `conn`'s handshake agreed on ([`quic::version_of`]); a connection
/// without one is closed.
fn agreed_version(conn: &Connection) -> crate::Result<u16> {
    quic::version_of(conn).ok_or_else(|| {
        conn.close(VarInt::from_u32(codes::PROTOCOL), b"no protocol agreed");
        crate::Error::Handshake("no data-plane protocol agreed in the handshake".into())
    })
}

fn hello(net: &Net, version: u16) -> Hello {
    let (root_version, revocations) = net.trust_versions();
    Hello {
        protocol_version: version,
        site: net.local.site.clone(),
        region: net.local.region.clone(),
        instance: net.local.instance,
        cert: net.membership().map(|m| m.cert.clone()).unwrap_or_default(),
        root_version,
        revocations,
        orders: net.orders_version(),
        now_unix_ms: jiff::Timestamp::now().as_millisecond(),
    }
}

/// Reads the peer's hello, which must state the connection's protocol `version`.
async fn read_hello(recv: &mut RecvStream, version: u16) -> crate::Result<Hello> {
    let body = read_frame(recv, CONTROL_FRAME_BYTES_MAX)
        .await?
        .ok_or_else(|| crate::Error::Handshake("control stream closed before hello".into()))?;
    match Control::decode(&body)? {
        Control::Hello(h) if h.protocol_version == version => Ok(h),
        Control::Hello(h) => Err(crate::Error::Handshake(format!(
            "hello of protocol {} on a connection that agreed on {version}",
            h.protocol_version
        ))),
        _ => Err(crate::Error::Handshake(
            "first control message is not a hello".into(),
        )),
    }
}

#[allow(clippy::too_many_arguments)]
fn register(
    net: &Arc<Net>,
    dialed: bool,
    conn: Connection,
    id: PeerId,
    hello: Hello,
    place: Place,
    send: SendStream,
    recv: RecvStream,
) {
    let their_hello_len = frame_len(&Control::Hello(hello.clone()));
    let Some(node_key) = super::node_id_of(&id) else {
        conn.close(VarInt::from_u32(codes::PROTOCOL), b"not an ed25519 peer id");
        return;
    };
    let (tx, rx) = mpsc::channel(CONTROL_QUEUE_MAX);
    let peer = Arc::new(Peer {
        id,
        node_key,
        class: net.class_of(&place.site),
        version: hello.protocol_version,
        site: place.site,
        region: place.region,
        addr: conn.remote_address(),
        conn: conn.clone(),
        dialed,
        instance: hello.instance,
        control: tx,
        state: Mutex::new(PeerState::default()),
        bytes_in: AtomicU64::new(0),
        bytes_out: AtomicU64::new(0),
        connected: Instant::now(),
        overlay_sent: AtomicBool::new(false),
        overlay_chosen: AtomicBool::new(false),
        cert: place.cert,
        root_version: AtomicU64::new(hello.root_version),
        revocations: Mutex::new(hello.revocations),
        orders: Mutex::new(hello.orders),
        clock_offset_ms: hello
            .now_unix_ms
            .saturating_sub(jiff::Timestamp::now().as_millisecond()),
    });
    // Our bitmaps (or offers) first, so the peer can plan at once; then who we know, and,
    // to a member of our site, our status record.
    net.greet(&peer);
    let known = net.peers_for(&peer.site);
    if !known.is_empty() {
        peer.send_control(Control::Peers(known));
    }
    net.aggregate.connected(&id);
    if peer.class == Class::Lan {
        if let Some(record) = net
            .fleet
            .get()
            .and_then(|f| f.record_of(&net.local.node_id))
        {
            peer.send_control(Control::Status(record));
        }
    }
    // Two live connections (both sides dialed at once): both ends keep the one the smaller
    // peer id dialed, so they agree. A dead one, or one to an earlier instance of the peer
    // (it restarted, though no packet has told us yet), is replaced.
    match net.peers.register(peer.clone(), &net.local.peer_id) {
        Err(crate::peers::Refusal::Duplicate) => {
            conn.close(VarInt::from_u32(codes::SURPLUS), b"duplicate connection");
            return;
        }
        Ok(Some(old)) => old.close(codes::SURPLUS, "replaced by a newer connection"),
        Ok(None) => {}
    }
    // Where it is is no longer hearsay once a connection shows it: the address this node
    // dialled, or the one it came from (a node dials from the socket it serves on) when
    // that is the address held. A real peer named at someone else's address stays hearsay.
    if peer.dialed
        || net
            .peers
            .known(&id)
            .is_some_and(|k| k.lan == peer.addr || k.wan == peer.addr)
    {
        net.peers.confirm(&id);
    }
    tracing::info!(peer = %id, site = %peer.site, addr = %peer.addr, class = ?peer.class,
        "peer connected");
    if peer.clock_offset_ms.abs() >= CLOCK_WARN_MS {
        tracing::warn!(peer = %id, offset_s = peer.clock_offset_ms / 1000,
            "the peer's clock and this node's differ by minutes: one of them is wrong (p2pctl status shows this node's against its peers')");
    }
    net.wake.notify();
    // A peer that holds a newer root or revocation list: catch up from it.
    net.on_trust_versions(&peer);

    // The hellos went both ways before the connection was registered.
    let t = &net.traffic.control;
    t.add(
        ControlKind::Hello,
        peer.class,
        true,
        frame_len(&Control::Hello(self::hello(net, peer.version))),
    );
    t.add(ControlKind::Hello, peer.class, false, their_hello_len);
    tokio::spawn(control_writer(net.clone(), peer.class, send, rx));
    tokio::spawn(control_reader(net.clone(), peer.clone(), recv));
    tokio::spawn(serve_requests(net.clone(), peer.clone()));
    let net = net.clone();
    tokio::spawn(async move {
        let reason = conn.closed().await;
        net.peers.unregister(&peer);
        tracing::info!(peer = %id, reason = %reason, "peer disconnected");
        net.wake.notify();
    });
}

/// Bytes of `msg` as one frame on the wire (length prefix included).
fn frame_len(msg: &Control) -> u64 {
    wire::frame(msg).len() as u64
}

/// Writes queued control messages to the peer, counting each and charging it to the
/// shapers of the peer's class (see [`super::shape::Shapers::charge`]).
async fn control_writer(
    net: Arc<Net>,
    class: Class,
    mut send: SendStream,
    mut rx: mpsc::Receiver<Control>,
) {
    while let Some(msg) = rx.recv().await {
        let frame = wire::frame(&msg);
        let n = frame.len() as u64;
        net.traffic.control.add(msg.kind(), class, true, n);
        net.shapers
            .charge(class, super::shape::Direction::Egress, n);
        if send.write_all(&frame).await.is_err() {
            return;
        }
    }
}

/// A bitmap or an offer of `release` under `slot` from `peer`: `update` is given what is held
/// of the release and returns what replaces it (`None`: it changed what is held in place).
/// Past [`PEER_RELEASES_MAX`] releases a new one is ignored. A release this node has not
/// heard of is learnt from the peer, whose manifest goes through the full gate like any
/// announcement.
fn note_release(
    net: &Arc<Net>,
    peer: &Arc<Peer>,
    release: ReleaseId,
    slot: Slot,
    update: impl FnOnce(Option<&mut PeerRelease>) -> Option<PeerRelease>,
) {
    peer.bind_slot(slot, release);
    let is_new = {
        let mut s = lock(&peer.state);
        if !s.releases.contains_key(&release) && s.releases.len() >= PEER_RELEASES_MAX {
            return;
        }
        match update(s.releases.get_mut(&release)) {
            Some(r) => s.releases.insert(release, r).is_none(),
            None => false,
        }
    };
    if is_new && net.release(&release).is_none() {
        net.learn_release(release, Some(peer.id));
    }
    net.wake.notify();
}

async fn control_reader(net: Arc<Net>, peer: Arc<Peer>, mut recv: RecvStream) {
    loop {
        let body = match read_frame(&mut recv, CONTROL_FRAME_BYTES_MAX).await {
            Ok(Some(b)) => b,
            Ok(None) => return,
            Err(quic::FrameError::Read(_)) => return,
            Err(quic::FrameError::Wire(e)) => {
                tracing::warn!(peer = %peer.id, error = %e, "bad control frame; closing");
                peer.close(codes::PROTOCOL, "bad control frame");
                return;
            }
        };
        let msg = match Control::decode(&body) {
            Ok(m) => {
                let n = (body.len() + wire::FRAME_HEADER_BYTES) as u64;
                net.traffic.control.add(m.kind(), peer.class, false, n);
                net.shapers
                    .charge(peer.class, super::shape::Direction::Ingress, n);
                m
            }
            Err(e) => {
                tracing::warn!(peer = %peer.id, error = %e, "bad control message; closing");
                peer.close(codes::PROTOCOL, "bad control message");
                return;
            }
        };
        if !on_control(&net, &peer, msg) {
            return;
        }
    }
}

/// Acts on one control message from `peer`; false when the connection must end.
fn on_control(net: &Arc<Net>, peer: &Arc<Peer>, msg: Control) -> bool {
    match msg {
        Control::Hello(_) => {
            peer.close(codes::PROTOCOL, "second hello");
            return false;
        }
        Control::Bitmap {
            release,
            slot,
            chunk_count,
            bits,
            reserve,
        } => {
            let Some(bits) = Bitmap::from_bytes(chunk_count, bits) else {
                return true;
            };
            note_release(net, peer, release, slot, |_| {
                Some(PeerRelease { bits, reserve })
            });
        }
        Control::Offer {
            release,
            slot,
            chunk_count,
            reserve,
        } => {
            if chunk_count == 0 {
                return true;
            }
            note_release(net, peer, release, slot, |held| match held {
                // A second offer (seeding ended): what it said it has stays.
                Some(r) if r.bits.len() == chunk_count => {
                    r.reserve = reserve;
                    None
                }
                _ => Some(PeerRelease {
                    bits: Bitmap::new(chunk_count),
                    reserve,
                }),
            });
        }
        Control::Want { slot, gaps } => {
            if peer.class == Class::Wan {
                if let Some(release) = peer.own_slot_release(slot) {
                    net.on_want(peer, release, &gaps);
                }
            }
        }
        Control::Have { slot, indices } => {
            let mut s = lock(&peer.state);
            let Some(release) = s.slots_in.get(&slot).copied() else {
                return true;
            };
            if let Some(r) = s.releases.get_mut(&release) {
                for i in indices {
                    r.bits.set(i);
                }
            }
            drop(s);
            net.wake.notify();
        }
        Control::Drop { release } => {
            lock(&peer.state).releases.remove(&release);
        }
        Control::Status(record) => {
            // Records stay inside their site.
            if peer.class != Class::Lan {
                return true;
            }
            if let Some(fleet) = net.fleet.get() {
                let body = match protocol::status::SignedStatus::decode(&record)
                    .and_then(|s| s.verify())
                {
                    Ok(body) => body,
                    Err(e) => {
                        tracing::debug!(peer = %peer.id, error = %e, "status record not kept");
                        return true;
                    }
                };
                // A node's record comes from that node only (its own connection; in a fleet
                // with a root, a certified peer of this site): a member cannot make up
                // others. Records of other nodes reach a member only from its site's
                // aggregator ([`crate::aggregate::refresh`]).
                if body.node.0 != peer.node_key {
                    tracing::warn!(peer = %peer.id, node = %body.node.to_hex(),
                        "status record of another node refused: a record comes from its own node");
                    return true;
                }
                if let Err(e) = fleet.keep_record(body, record) {
                    tracing::debug!(peer = %peer.id, error = %e, "status record not kept");
                }
            }
        }
        Control::Forget {
            node,
            last_at_unix_s,
        } => {
            // Only a site-mate retires a node, and only one this node finds silent too (not
            // itself). A connection to it that has not timed out yet does not refuse: the
            // sender found it unreachable, and a node that is up sends a record within the
            // silence bound, which brings it back.
            if peer.class != Class::Lan {
                return true;
            }
            if let Some(fleet) = net.fleet.get() {
                let now = jiff::Timestamp::now().as_second();
                match fleet.forget(&node, now, node == net.local.node_id) {
                    Ok(_) => tracing::info!(node = %node.to_hex(), by = %peer.id,
                        last_record = last_at_unix_s, "node retired from the fleet view"),
                    Err(e) => tracing::debug!(node = %node.to_hex(), by = %peer.id,
                        error = %e, "node not retired"),
                }
            }
        }
        Control::Summaries(list) => {
            let Some(fleet) = net.fleet.get() else {
                return true;
            };
            let now = jiff::Timestamp::now().as_second();
            for bytes in list {
                match fleet.offer_summary(&bytes, now) {
                    Ok(body) => net.aggregate.heard(peer.id, &body.site, body.seq),
                    Err(e) => {
                        // It has it (or better): no need to send it back.
                        if let Ok(body) = protocol::summary::SignedSummary::decode(&bytes)
                            .and_then(|s| s.verify())
                        {
                            net.aggregate.heard(peer.id, &body.site, body.seq);
                        }
                        tracing::debug!(peer = %peer.id, error = %e, "site summary not kept");
                    }
                }
            }
        }
        Control::Peers(list) => net.on_peers(peer.id, list),
        Control::Ihave(list) => {
            if let Some(fleet) = net.fleet.get() {
                net.aggregate.on_ihave(peer, fleet, &list);
            }
        }
        Control::Iwant(list) => {
            if let Some(fleet) = net.fleet.get() {
                net.aggregate.on_iwant(peer, fleet, &list);
            }
        }
        Control::Overlay(join) => peer.overlay_chosen.store(join, Ordering::Relaxed),
        Control::Trust {
            root_version,
            revocations,
            orders,
        } => {
            peer.root_version.store(root_version, Ordering::Relaxed);
            *lock(&peer.revocations) = revocations;
            *lock(&peer.orders) = orders;
            net.on_trust_versions(peer);
        }
    }
    true
}

async fn serve_requests(net: Arc<Net>, peer: Arc<Peer>) {
    loop {
        let (send, recv) = match peer.conn.accept_bi().await {
            Ok(s) => s,
            Err(_) => return,
        };
        let net = net.clone();
        let peer = peer.clone();
        tokio::spawn(async move { serve_one(&net, &peer, send, recv).await });
    }
}

async fn serve_one(net: &Arc<Net>, peer: &Arc<Peer>, mut send: SendStream, mut recv: RecvStream) {
    let body = match tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        read_frame(&mut recv, REQUEST_FRAME_BYTES_MAX),
    )
    .await
    {
        Ok(Ok(Some(body))) => body,
        Ok(Ok(None)) => return,
        // The stream ended inside the frame: as malformed as a bad length.
        Ok(Err(quic::FrameError::Read(quinn::ReadExactError::FinishedEarly(n)))) => {
            tracing::debug!(peer = %peer.id, bytes = n, "request frame cut short");
            reset(&mut send, &mut recv);
            return;
        }
        Ok(Err(quic::FrameError::Read(_))) => return,
        Ok(Err(quic::FrameError::Wire(e))) => {
            tracing::debug!(peer = %peer.id, error = %e, "bad request frame");
            reset(&mut send, &mut recv);
            return;
        }
        Err(_) => {
            reset(&mut send, &mut recv);
            return;
        }
    };
    let req = match Request::decode(&body) {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(peer = %peer.id, error = %e, "bad request");
            reset(&mut send, &mut recv);
            return;
        }
    };
    match req {
        Request::Chunk(id) => serve_chunk(net, peer, id, send).await,
        Request::SiteRecords | Request::Summaries => serve_records(net, &req, send).await,
        Request::Ledger { epoch, after } => serve_ledger(net, peer, epoch, after, send).await,
        Request::Manifest(release) => serve_manifest(net, release, send).await,
        Request::ManifestDelta(release) => serve_manifest_delta(net, release, send).await,
        Request::Roots { .. } | Request::Revocations | Request::Orders => {
            serve_trust(net, &req, send).await;
        }
        Request::Approve { release, signature } => {
            serve_approve(net, release, signature, send).await
        }
    }
}

/// An approver's signature for a release this node holds for approval
/// ([`crate::approve`]): the envelope as it now stands, `NotFound` if it is not held here,
/// or why the signature was refused.
async fn serve_approve(
    net: &Arc<Net>,
    release: ReleaseId,
    signature: protocol::ManifestSignature,
    mut send: SendStream,
) {
    let Some(permit) = serve_slot(net, &mut send).await else {
        return;
    };
    let task = net.clone();
    let outcome = tokio::task::spawn_blocking(move || task.approve_held(release, signature)).await;
    match outcome {
        Ok(Ok(held)) => {
            let header = ReplyHeader::Manifest {
                len: held.envelope.len() as u32,
            };
            reply_with(&mut send, header, &held.envelope).await;
        }
        Ok(Err(crate::approve::ApproveError::NotHeld(_))) => {
            reply_empty(&mut send, ReplyHeader::NotFound).await
        }
        Ok(Err(e)) => {
            let reason = wire::truncate_text(&e.to_string(), wire::APPROVAL_REASON_BYTES_MAX);
            let header = ReplyHeader::Records {
                len: reason.len() as u32,
            };
            reply_with(&mut send, header, reason.as_bytes()).await;
        }
        Err(_) => reply_empty(&mut send, ReplyHeader::NotFound).await,
    }
    drop(permit);
}

/// Serves the fleet roots after a version, or the revocation list: to any admitted peer
/// (they are signed, and every node needs them). `NotFound` when this node has none.
async fn serve_trust(net: &Arc<Net>, req: &Request, mut send: SendStream) {
    let Some(permit) = serve_slot(net, &mut send).await else {
        return;
    };
    let store = net.store.clone();
    let req = *req;
    let body = tokio::task::spawn_blocking(move || match req {
        Request::Roots { after } => {
            // Oldest first, as many as fit (roots are a few KiB; the bound is for a
            // hostile size, and the requester asks again from where it got to).
            let mut room = wire::SITE_RECORDS_BYTES_MAX - 16;
            let list: Vec<Vec<u8>> = store
                .roots_after(after)
                .ok()?
                .into_iter()
                .map(|r| r.encode())
                .take_while(|b| {
                    let fits = b.len() + 5 <= room;
                    room = room.saturating_sub(b.len() + 5);
                    fits
                })
                .collect();
            (!list.is_empty()).then(|| protocol::codec::encode(&list))
        }
        Request::Orders => store.orders().ok().flatten().map(|o| o.encode()),
        _ => store.revocations().ok().flatten().map(|l| l.encode()),
    })
    .await
    .ok()
    .flatten();
    match body {
        Some(bytes) => {
            let header = ReplyHeader::Records {
                len: bytes.len() as u32,
            };
            reply_with(&mut send, header, &bytes).await;
        }
        None => reply_empty(&mut send, ReplyHeader::NotFound).await,
    }
    drop(permit);
}

/// Serves chunk `id`: the egress shaper first, then a serving slot, then the store (or what
/// the chunk compressed to, kept from an earlier send: [`crate::compress`]).
async fn serve_chunk(net: &Arc<Net>, peer: &Arc<Peer>, id: ChunkId, mut send: SendStream) {
    let store = net.store.clone();
    // Shaping first, holding nothing: a chunk waiting for WAN egress tokens must not
    // hold one of the serving slots that same-site peers need. Its length comes from
    // the index, and the read below reuses that lookup.
    let located = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || store.locate(&id)).await
    };
    let loc = match located {
        Ok(Ok(Some(loc))) => loc,
        Ok(Ok(None)) => {
            reply_empty(&mut send, ReplyHeader::NotFound).await;
            return;
        }
        Ok(Err(e)) => {
            tracing::error!(chunk = %id, error = %e, "cannot serve chunk");
            reply_empty(&mut send, ReplyHeader::NotFound).await;
            return;
        }
        Err(_) => return,
    };
    let raw = u64::from(loc.len);
    let compress =
        crate::compress::sends_compressed(net.config.compression, peer.version, peer.class);
    // What is known of the chunk compressed; the shaper is asked for what will cross the
    // wire where that is known, else for the chunk's length and given back the difference.
    let known = if compress {
        net.wire_cache.get(&id)
    } else {
        Some(None)
    };
    let reserved = match &known {
        Some(Some(z)) => z.len() as u64,
        _ => raw,
    };
    net.shapers
        .acquire(peer.class, super::shape::Direction::Egress, reserved)
        .await;
    let Some(permit) = serve_slot(net, &mut send).await else {
        return;
    };
    let body: Result<(bytes::Bytes, bool), store::StoreError> = match known {
        Some(Some(z)) => Ok((z, true)),
        Some(None) => {
            let read = tokio::task::spawn_blocking(move || store.read_located(&id, loc)).await;
            match read {
                Ok(r) => r.map(|b| (bytes::Bytes::from(b), false)),
                Err(_) => return,
            }
        }
        None => {
            let net = net.clone();
            let work = tokio::task::spawn_blocking(move || {
                let bytes = store.read_located(&id, loc)?;
                let z = chunking::compress::compress(&bytes).map(bytes::Bytes::from);
                net.wire_cache.put(id, z.clone());
                Ok(match z {
                    Some(z) => (z, true),
                    None => (bytes::Bytes::from(bytes), false),
                })
            });
            match work.await {
                Ok(r) => r,
                Err(_) => return,
            }
        }
    };
    let (bytes, compressed) = match body {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(chunk = %id, error = %e, "cannot serve chunk");
            reply_empty(&mut send, ReplyHeader::NotFound).await;
            return;
        }
    };
    let n = bytes.len() as u64;
    net.shapers.refund(
        peer.class,
        super::shape::Direction::Egress,
        reserved.saturating_sub(n),
    );
    let header = if compressed {
        ReplyHeader::ChunkZstd {
            len: n as u32,
            raw_len: loc.len,
        }
    } else {
        ReplyHeader::Chunk { len: n as u32 }
    };
    if write_frame(&mut send, &header).await.is_err() {
        return;
    }
    // Handed over as is: `write_all` would copy the chunk into quinn's send buffer.
    if send.write_chunk(bytes).await.is_ok() {
        let _ = send.finish();
        peer.bytes_out.fetch_add(n, Ordering::Relaxed);
        net.traffic.add_sent(peer.class, n);
        net.traffic
            .sent_saved
            .fetch_add(raw.saturating_sub(n), Ordering::Relaxed);
        if peer.class == Class::Wan {
            net.note_served_wan(&id);
        }
    }
    drop(permit);
}

/// Serves this site's records, or the other sites' summaries.
async fn serve_records(net: &Arc<Net>, req: &Request, mut send: SendStream) {
    let Some(permit) = serve_slot(net, &mut send).await else {
        return;
    };
    // Each item is up to its limit plus a length prefix; the list's own prefix takes a
    // few bytes more.
    let max = wire::SITE_RECORDS_BYTES_MAX - 16;
    let records = net
        .fleet
        .get()
        .map(|f| match *req {
            Request::SiteRecords => f.site_records(max),
            _ => {
                // This site's own summary first (a member figures its site from it), then
                // the other sites'.
                let own = net.aggregate.own_summary().filter(|s| s.len() + 5 <= max);
                let room = max - own.as_ref().map_or(0, |s| s.len() + 5);
                own.into_iter().chain(f.summaries_signed(room)).collect()
            }
        })
        .unwrap_or_default();
    let bytes = protocol::codec::encode(&records);
    let header = ReplyHeader::Records {
        len: bytes.len() as u32,
    };
    reply_with(&mut send, header, &bytes).await;
    drop(permit);
}

/// Serves a page of this node's site ledgers to a member of its site (another site's node
/// gets nothing: the page is up to megabytes, for the LAN).
async fn serve_ledger(
    net: &Arc<Net>,
    peer: &Arc<Peer>,
    epoch: u64,
    after: u64,
    mut send: SendStream,
) {
    let fleet = match net.fleet.get() {
        Some(f) if peer.class == Class::Lan => f.clone(),
        _ => return reply_empty(&mut send, ReplyHeader::NotFound).await,
    };
    let Some(permit) = serve_slot(net, &mut send).await else {
        return;
    };
    let now_ms = u64::try_from(jiff::Timestamp::now().as_millisecond()).unwrap_or(0);
    let max = wire::SITE_RECORDS_BYTES_MAX;
    let page =
        tokio::task::spawn_blocking(move || fleet.ledger_page(epoch, after, now_ms, max).encode())
            .await;
    match page {
        Ok(bytes) => {
            let header = ReplyHeader::Records {
                len: bytes.len() as u32,
            };
            reply_with(&mut send, header, &bytes).await;
        }
        Err(_) => reply_empty(&mut send, ReplyHeader::NotFound).await,
    }
    drop(permit);
}

/// Serves the signed manifest of `release`.
async fn serve_manifest(net: &Arc<Net>, release: ReleaseId, mut send: SendStream) {
    let store = net.store.clone();
    let Some(permit) = serve_slot(net, &mut send).await else {
        return;
    };
    let envelope = match net.release(&release) {
        Some(r) => Some(r.envelope.clone()),
        None => tokio::task::spawn_blocking(move || store.signed_manifest(&release))
            .await
            .ok()
            .and_then(|r| r.ok().flatten()),
    };
    match envelope {
        Some(bytes) => {
            let header = ReplyHeader::Manifest {
                len: bytes.len() as u32,
            };
            reply_with(&mut send, header, &bytes).await;
        }
        None => reply_empty(&mut send, ReplyHeader::NotFound).await,
    }
    drop(permit);
}

/// What [`Request::ManifestDelta`] brought.
#[derive(Debug)]
pub enum ManifestAnswer {
    /// The whole envelope.
    Whole(Vec<u8>),
    /// A delta against an earlier manifest.
    Delta(protocol::wire::ManifestDelta),
}

/// Manifest deltas a node keeps made, the newest: every member of a site, and every site,
/// asks for the same one when a release comes out.
const MANIFEST_DELTAS_KEPT: usize = 16;

/// Made deltas, newest last: (release, its answer).
pub(crate) type ManifestDeltas = Mutex<std::collections::VecDeque<(ReleaseId, Arc<ManifestReply>)>>;

/// The answer to a [`Request::ManifestDelta`]: a delta or the whole envelope.
#[derive(Debug)]
pub(crate) enum ManifestReply {
    Delta(Vec<u8>),
    Whole(Vec<u8>),
}

/// Manifests up to this size are patched at zstd level 19, larger ones at 3: a delta is made
/// once per release (and kept), but a 64 MiB manifest at level 19 would hold a serving slot
/// for seconds.
const MANIFEST_DELTA_HIGH_LEVEL_MAX: usize = 1 << 20;

/// The answer to a [`Request::ManifestDelta`] for `release`, made from the store (`None`:
/// the release is not held). Blocking.
fn manifest_delta(net: &Net, release: ReleaseId) -> Option<Arc<ManifestReply>> {
    if let Some((_, made)) = lock(&net.manifest_deltas)
        .iter()
        .find(|(r, _)| *r == release)
    {
        return Some(made.clone());
    }
    let envelope = match net.release(&release) {
        Some(r) => r.envelope.clone(),
        None => net.store.signed_manifest(&release).ok().flatten()?,
    };
    let reply = (|| {
        let env = protocol::SignedManifest::decode(&envelope).ok()?;
        let m = protocol::Manifest::decode(&env.manifest_bytes).ok()?;
        let base = net
            .store
            .releases()
            .ok()?
            .into_iter()
            .filter(|r| r.channel == m.channel && r.version < m.version)
            .max_by_key(|r| r.version)?;
        let base_env = net.store.signed_manifest(&base.id).ok().flatten()?;
        let base_bytes = protocol::SignedManifest::decode(&base_env)
            .ok()?
            .manifest_bytes;
        let level = if env.manifest_bytes.len() <= MANIFEST_DELTA_HIGH_LEVEL_MAX {
            19
        } else {
            3
        };
        let patch = chunking::patch::make(&base_bytes, &env.manifest_bytes, level).ok()?;
        if patch.len() >= env.manifest_bytes.len() {
            return None;
        }
        let delta = protocol::wire::ManifestDelta {
            base: base.id,
            manifest_len: env.manifest_bytes.len() as u32,
            envelope: protocol::SignedManifest {
                manifest_bytes: patch,
                ..env
            }
            .encode(),
        };
        Some(ManifestReply::Delta(delta.encode()))
    })()
    .unwrap_or(ManifestReply::Whole(envelope));
    let reply = Arc::new(reply);
    let mut kept = lock(&net.manifest_deltas);
    if kept.len() >= MANIFEST_DELTAS_KEPT {
        kept.pop_front();
    }
    kept.push_back((release, reply.clone()));
    Some(reply)
}

/// Serves a [`Request::ManifestDelta`].
async fn serve_manifest_delta(net: &Arc<Net>, release: ReleaseId, mut send: SendStream) {
    let Some(permit) = serve_slot(net, &mut send).await else {
        return;
    };
    let task = net.clone();
    let reply = tokio::task::spawn_blocking(move || manifest_delta(&task, release))
        .await
        .ok()
        .flatten();
    match reply.as_deref() {
        Some(ManifestReply::Delta(bytes)) => {
            let header = ReplyHeader::Records {
                len: bytes.len() as u32,
            };
            reply_with(&mut send, header, bytes).await;
        }
        Some(ManifestReply::Whole(bytes)) => {
            let header = ReplyHeader::Manifest {
                len: bytes.len() as u32,
            };
            reply_with(&mut send, header, bytes).await;
        }
        None => reply_empty(&mut send, ReplyHeader::NotFound).await,
    }
    drop(permit);
}

/// One of the [`SERVE_CONCURRENCY_MAX`] serving slots, or `Busy` answered and `None`.
async fn serve_slot(net: &Net, send: &mut SendStream) -> Option<tokio::sync::OwnedSemaphorePermit> {
    let slot = net.serve_slots.clone().try_acquire_owned().ok();
    if slot.is_none() {
        reply_empty(send, ReplyHeader::Busy).await;
    }
    slot
}

/// Answers with `header` and the `body` it announces, and ends the stream.
async fn reply_with(send: &mut SendStream, header: ReplyHeader, body: &[u8]) {
    if write_frame(send, &header).await.is_ok() && send.write_all(body).await.is_ok() {
        let _ = send.finish();
    }
}

/// Answers with a header that has no body, and ends the stream.
async fn reply_empty(send: &mut SendStream, header: ReplyHeader) {
    let _ = write_frame(send, &header).await;
    let _ = send.finish();
}

fn reset(send: &mut SendStream, recv: &mut RecvStream) {
    let _ = send.reset(VarInt::from_u32(codes::PROTOCOL));
    let _ = recv.stop(VarInt::from_u32(codes::PROTOCOL));
}
