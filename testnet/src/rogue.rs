//! A hostile peer for tests: it proves a real identity (TLS with its own ed25519 key, like any
//! node) and speaks the data-plane protocol, but says and serves whatever the test tells it:
//! chunks whose bytes do not match their ids, manifests that are unsigned, signed by the
//! wrong key, expired or older than what a node has, and raw bytes that are no frame at all.
//!
//! It only ever dials; a node answers its hello, reads its bitmaps and sends it requests on
//! the connection it opened, like with any peer.

use libp2p::PeerId;
use libp2p::identity::Keypair;
use net::quic::{self, read_frame, write_frame};
use protocol::wire::{
    self, CONTROL_FRAME_BYTES_MAX, Control, Hello, REQUEST_FRAME_BYTES_MAX, ReplyHeader, Request,
};
use protocol::{ChunkId, ReleaseId};
use quinn::{Connection, RecvStream, SendStream};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long the rogue waits for any one answer from a node.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(15);

/// The largest reply the rogue reads (a manifest with its frame).
const REPLY_BYTES_MAX: usize = protocol::envelope::ENVELOPE_BYTES_MAX + 64;

/// A peer with its own key and QUIC endpoint.
pub struct Rogue {
    endpoint: quinn::Endpoint,
    keypair: Keypair,
    /// Its peer id.
    pub peer_id: PeerId,
    /// The certificate its hello shows (encoded `protocol::cert::SignedCert`; empty: none).
    pub cert: Vec<u8>,
    /// How far its hello's clock is from the real one, milliseconds (a node with a wrong
    /// clock, which a test cannot make of a real process).
    pub clock_offset_ms: i64,
}

/// What a node did with one stream the rogue opened.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It answered with these bytes and ended the stream.
    Reply(Vec<u8>),
    /// It reset the stream with this application error code.
    Reset(u64),
    /// The connection closed (with this reason).
    Closed(String),
    /// No answer within the rogue's patience.
    Silent,
}

impl Rogue {
    /// A fresh identity with an endpoint on an ephemeral loopback port.
    pub fn new() -> anyhow::Result<Self> {
        let keypair = Keypair::generate_ed25519();
        let mut secret = [0u8; 32];
        getrandom_fill(&mut secret);
        let endpoint = quic::endpoint(&keypair, &secret, ([127, 0, 0, 1], 0).into(), alpns())?;
        Ok(Self {
            peer_id: keypair.public().to_peer_id(),
            endpoint,
            keypair,
            cert: Vec::new(),
            clock_offset_ms: 0,
        })
    }

    /// Its node key, to sign what a node signs (status records).
    pub fn signing_key(&self) -> ed25519_dalek::SigningKey {
        let kp = self
            .keypair
            .clone()
            .try_into_ed25519()
            .expect("the rogue's key is ed25519");
        let secret: [u8; 32] = kp
            .secret()
            .as_ref()
            .try_into()
            .expect("an ed25519 secret is 32 bytes");
        ed25519_dalek::SigningKey::from_bytes(&secret)
    }

    /// Its node id (the key its peer id carries).
    pub fn node_id(&self) -> protocol::NodeId {
        protocol::NodeId(net::node_id_of(&self.peer_id).expect("an ed25519 peer id"))
    }

    /// A QUIC connection to the node `peer` at `addr`, without any hello.
    pub async fn connect_raw(&self, peer: &str, addr: SocketAddr) -> anyhow::Result<Connection> {
        let peer: PeerId = peer.parse()?;
        let config = quic::client_config(&self.keypair, peer, alpns())?;
        let conn = tokio::time::timeout(
            ANSWER_TIMEOUT,
            self.endpoint.connect_with(config, addr, "p2pd")?,
        )
        .await??;
        Ok(conn)
    }

    /// Connects and exchanges hellos, claiming to be in `site`, in the protocol version the
    /// handshake agreed on.
    pub async fn connect(&self, peer: &str, addr: SocketAddr, site: &str) -> anyhow::Result<Link> {
        let conn = self.connect_raw(peer, addr).await?;
        let version = quic::version_of(&conn)
            .ok_or_else(|| anyhow::anyhow!("no protocol agreed with the node"))?;
        let (mut send, mut recv) = conn.open_bi().await?;
        let ours = Hello {
            protocol_version: version,
            site: site.to_string(),
            region: "rogue".to_string(),
            instance: rand::random(),
            cert: self.cert.clone(),
            root_version: 0,
            revocations: (0, 0),
            orders: (0, 0),
            now_unix_ms: jiff::Timestamp::now().as_millisecond() + self.clock_offset_ms,
        };
        write_frame(&mut send, &Control::Hello(ours)).await?;
        let body = tokio::time::timeout(
            ANSWER_TIMEOUT,
            read_frame(&mut recv, CONTROL_FRAME_BYTES_MAX),
        )
        .await??
        .ok_or_else(|| anyhow::anyhow!("node closed the control stream before its hello"))?;
        let Control::Hello(hello) = Control::decode(&body)? else {
            anyhow::bail!("the node's first control message is not a hello");
        };
        Ok(Link {
            conn,
            control: send,
            control_recv: Some(recv),
            hello,
        })
    }
}

/// Every data-plane protocol version there is, newest first: the rogue speaks them all.
fn alpns() -> Vec<Vec<u8>> {
    quic::alpns(net::config::Compression::Always)
}

fn getrandom_fill(buf: &mut [u8]) {
    use rand::RngCore;
    rand::rng().fill_bytes(buf);
}

/// One connection of the rogue to a node, after the hellos.
pub struct Link {
    /// The QUIC connection.
    pub conn: Connection,
    control: SendStream,
    control_recv: Option<RecvStream>,
    /// The node's hello.
    pub hello: Hello,
}

impl Link {
    /// Sends a control message.
    pub async fn send(&mut self, msg: &Control) -> anyhow::Result<()> {
        write_frame(&mut self.control, msg).await?;
        Ok(())
    }

    /// Writes raw bytes on the control stream.
    pub async fn send_raw_control(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        self.control.write_all(bytes).await?;
        Ok(())
    }

    /// Reads and discards the node's control messages in the background, so the node
    /// never finds this peer's control queue full.
    pub fn drain_control(&mut self) {
        if let Some(mut recv) = self.control_recv.take() {
            tokio::spawn(async move {
                while let Ok(Some(_)) = read_frame(&mut recv, CONTROL_FRAME_BYTES_MAX).await {}
            });
        }
    }

    /// Asks the node for the signed manifest of `release`.
    pub async fn request_manifest(&self, release: ReleaseId) -> anyhow::Result<Vec<u8>> {
        let req = Request::Manifest(release);
        match self.exchange(&wire::frame(&req), true).await {
            Outcome::Reply(bytes) => {
                anyhow::ensure!(bytes.len() >= wire::FRAME_HEADER_BYTES, "short reply");
                let (head, rest) = bytes.split_at(wire::FRAME_HEADER_BYTES);
                let len = wire::FrameHeader::parse(
                    head.try_into().expect("4 bytes"),
                    REQUEST_FRAME_BYTES_MAX,
                )?
                .len;
                anyhow::ensure!(rest.len() >= len, "reply shorter than its header");
                match ReplyHeader::decode(&rest[..len], &req)? {
                    ReplyHeader::Manifest { len: m } if rest.len() - len == m as usize => {
                        Ok(rest[len..].to_vec())
                    }
                    other => anyhow::bail!("unexpected reply {other:?}"),
                }
            }
            other => anyhow::bail!("manifest request: {other:?}"),
        }
    }

    /// Opens a stream, writes `bytes` (finishing the stream if `finish`) and reports what
    /// the node did with it.
    pub async fn exchange(&self, bytes: &[u8], finish: bool) -> Outcome {
        exchange(&self.conn, bytes, finish).await
    }

    /// Closes the connection.
    pub fn close(&self) {
        self.conn.close(0u32.into(), b"done");
    }

    /// Answers the node's requests from `offer` until the connection closes.
    pub fn serve(&self, offer: Arc<Offer>) -> tokio::task::JoinHandle<()> {
        let conn = self.conn.clone();
        tokio::spawn(async move {
            while let Ok((send, recv)) = conn.accept_bi().await {
                tokio::spawn(offer.clone().answer(send, recv));
            }
        })
    }

    /// Waits until the node closes the connection; the application error code it gave.
    pub async fn closed_code(&self) -> Option<u64> {
        match self.conn.closed().await {
            quinn::ConnectionError::ApplicationClosed(c) => Some(c.error_code.into_inner()),
            _ => None,
        }
    }
}

/// Opens a stream on `conn`, writes `bytes` (finishing the stream if `finish`) and reports
/// what the node did with it.
pub async fn exchange(conn: &Connection, bytes: &[u8], finish: bool) -> Outcome {
    let work = async {
        let (mut send, mut recv) = match conn.open_bi().await {
            Ok(s) => s,
            Err(e) => return Outcome::Closed(e.to_string()),
        };
        if send.write_all(bytes).await.is_err() {
            return match conn.close_reason() {
                Some(r) => Outcome::Closed(r.to_string()),
                None => Outcome::Closed("write failed".into()),
            };
        }
        if finish {
            let _ = send.finish();
        }
        match recv.read_to_end(REPLY_BYTES_MAX).await {
            Ok(reply) => Outcome::Reply(reply),
            Err(quinn::ReadToEndError::Read(quinn::ReadError::Reset(code))) => {
                Outcome::Reset(code.into_inner())
            }
            Err(e) => Outcome::Closed(e.to_string()),
        }
    };
    tokio::time::timeout(ANSWER_TIMEOUT, work)
        .await
        .unwrap_or(Outcome::Silent)
}

/// What the rogue serves: manifests and chunk bytes by id (which need not match the id),
/// and a count of what it was asked for.
#[derive(Default)]
pub struct Offer {
    manifests: Mutex<HashMap<ReleaseId, Vec<u8>>>,
    chunks: Mutex<HashMap<ChunkId, Vec<u8>>>,
    compressed: Mutex<HashMap<ChunkId, (u32, Vec<u8>)>>,
    /// Manifest requests received.
    pub manifest_requests: AtomicU64,
    /// Chunk requests received.
    pub chunk_requests: AtomicU64,
}

impl Offer {
    /// Serves `envelope` (encoded signed manifest) as the manifest of `release`.
    pub fn add_manifest(&self, release: ReleaseId, envelope: Vec<u8>) {
        lock(&self.manifests).insert(release, envelope);
    }

    /// Serves `bytes` as chunk `id`.
    pub fn add_chunk(&self, id: ChunkId, bytes: Vec<u8>) {
        lock(&self.chunks).insert(id, bytes);
    }

    /// Serves `bytes` as chunk `id` compressed ([`ReplyHeader::ChunkZstd`]), announcing
    /// `raw_len` as the chunk's length (which `bytes` need not decompress to: a bomb).
    pub fn add_compressed(&self, id: ChunkId, raw_len: u32, bytes: Vec<u8>) {
        lock(&self.compressed).insert(id, (raw_len, bytes));
    }

    async fn answer(self: Arc<Self>, mut send: SendStream, mut recv: RecvStream) {
        let Ok(Some(body)) = read_frame(&mut recv, REQUEST_FRAME_BYTES_MAX).await else {
            return;
        };
        let Ok(req) = Request::decode(&body) else {
            return;
        };
        let (header, bytes) = match req {
            // A delta is answered whole, as a peer without an earlier manifest does.
            Request::Manifest(id) | Request::ManifestDelta(id) => {
                self.manifest_requests.fetch_add(1, Ordering::Relaxed);
                match lock(&self.manifests).get(&id) {
                    Some(b) => (
                        ReplyHeader::Manifest {
                            len: b.len() as u32,
                        },
                        b.clone(),
                    ),
                    None => (ReplyHeader::NotFound, Vec::new()),
                }
            }
            Request::Chunk(id) => {
                self.chunk_requests.fetch_add(1, Ordering::Relaxed);
                let compressed = lock(&self.compressed).get(&id).cloned();
                match (compressed, lock(&self.chunks).get(&id)) {
                    (Some((raw_len, z)), _) => (
                        ReplyHeader::ChunkZstd {
                            len: z.len() as u32,
                            raw_len,
                        },
                        z,
                    ),
                    (None, Some(b)) => (
                        ReplyHeader::Chunk {
                            len: b.len() as u32,
                        },
                        b.clone(),
                    ),
                    (None, None) => (ReplyHeader::NotFound, Vec::new()),
                }
            }
            Request::SiteRecords
            | Request::Summaries
            | Request::Ledger { .. }
            | Request::Roots { .. }
            | Request::Revocations
            | Request::Orders
            | Request::Approve { .. } => (ReplyHeader::NotFound, Vec::new()),
        };
        if write_frame(&mut send, &header).await.is_ok() && send.write_all(&bytes).await.is_ok() {
            let _ = send.finish();
            // Keep the stream until the node has read it all.
            let _ = send.stopped().await;
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A stranger on the control plane: a libp2p peer with its own key that dials a node's
/// control address and says, in identify's agent string, whatever `agent` is (a p2pd agent
/// claiming a site, without a certificate). Returns its peer id once the node's identify
/// reached it or the connection ended, within `patience`.
pub async fn identify_as(
    control: SocketAddr,
    agent: &str,
    patience: Duration,
) -> anyhow::Result<PeerId> {
    use futures_util::StreamExt;
    use libp2p::swarm::SwarmEvent;
    let keypair = Keypair::generate_ed25519();
    let peer_id = keypair.public().to_peer_id();
    let mut swarm = identify_dial(keypair, agent, control)?;
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        let event = tokio::time::timeout_at(deadline, swarm.select_next_some()).await;
        match event {
            Err(_) => break,
            Ok(SwarmEvent::ConnectionClosed { .. }) => break,
            Ok(SwarmEvent::OutgoingConnectionError { error, .. }) => {
                anyhow::bail!("could not reach the node's control plane: {error}")
            }
            Ok(_) => {}
        }
    }
    Ok(peer_id)
}

/// A control-plane swarm of `keypair` that speaks identify only (with `agent`, which may be
/// empty), dialling the node at `control`.
fn identify_dial(
    keypair: Keypair,
    agent: &str,
    control: SocketAddr,
) -> anyhow::Result<libp2p::Swarm<libp2p::identify::Behaviour>> {
    let agent = agent.to_owned();
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_quic()
        .with_behaviour(|key| {
            let config = libp2p::identify::Config::new("/p2pd/id/1.0.0".into(), key.public());
            libp2p::identify::Behaviour::new(if agent.is_empty() {
                config
            } else {
                config.with_agent_version(agent.clone())
            })
        })?
        .build();
    swarm.dial(
        format!("/ip4/{}/udp/{}/quic-v1", control.ip(), control.port())
            .parse::<libp2p::Multiaddr>()?,
    )?;
    Ok(swarm)
}

/// The agent string the node at control-plane address `control` shows in identify, asked
/// with a fresh key (a node of a fleet with a root disconnects such a stranger right after).
pub async fn agent_of(control: SocketAddr, patience: Duration) -> anyhow::Result<String> {
    use futures_util::StreamExt;
    use libp2p::swarm::SwarmEvent;
    let mut swarm = identify_dial(Keypair::generate_ed25519(), "", control)?;
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        match tokio::time::timeout_at(deadline, swarm.select_next_some()).await {
            Err(_) => anyhow::bail!("no identify from {control} in {patience:?}"),
            Ok(SwarmEvent::Behaviour(libp2p::identify::Event::Received { info, .. })) => {
                return Ok(info.agent_version);
            }
            Ok(SwarmEvent::OutgoingConnectionError { error, .. }) => {
                anyhow::bail!("could not reach the node's control plane: {error}")
            }
            Ok(_) => {}
        }
    }
}

/// A loopback address that counts the QUIC connections attempted to it and refuses each:
/// where a test points made-up peer entries, to see how many handshakes honest nodes can be
/// made to send to someone else.
pub struct Victim {
    /// Where it listens.
    pub addr: SocketAddr,
    attempts: Arc<AtomicU64>,
    endpoint: quinn::Endpoint,
}

impl Victim {
    /// Listens on an ephemeral loopback port.
    pub fn new() -> anyhow::Result<Self> {
        let keypair = Keypair::generate_ed25519();
        let mut secret = [0u8; 32];
        getrandom_fill(&mut secret);
        let endpoint = quic::endpoint(&keypair, &secret, ([127, 0, 0, 1], 0).into(), alpns())?;
        let attempts = Arc::new(AtomicU64::new(0));
        let (ep, count) = (endpoint.clone(), attempts.clone());
        tokio::spawn(async move {
            while let Some(incoming) = ep.accept().await {
                count.fetch_add(1, Ordering::Relaxed);
                incoming.refuse();
            }
        });
        Ok(Self {
            addr: endpoint.local_addr()?,
            attempts,
            endpoint,
        })
    }

    /// Connections attempted so far.
    pub fn attempts(&self) -> u64 {
        self.attempts.load(Ordering::Relaxed)
    }
}

impl Drop for Victim {
    fn drop(&mut self) {
        self.endpoint.close(0u32.into(), b"");
    }
}
