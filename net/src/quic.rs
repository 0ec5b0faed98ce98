//! The data plane's QUIC endpoint: TLS bound to the node key, transport windows sized for
//! WAN links, and the framing helpers every stream uses.
//!
//! TLS uses libp2p's certificate format ([`super::tls`]): a self-signed certificate carrying
//! the node's ed25519 key in an extension signed by that key. So the peer id a QUIC connection
//! proves is the peer id of the libp2p control plane: one key, one identity on both planes.
//! The client names the peer it expects; the server learns the client's from its certificate.

use libp2p::PeerId;
use libp2p::identity::Keypair;
use protocol::wire::{self, FRAME_HEADER_BYTES, FrameHeader, WireError};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{RecvStream, SendStream, TransportConfig, VarInt};
use std::net::SocketAddr;
use std::sync::Arc;

/// Per-stream receive window. One stream carries one chunk (at most 4 MiB, 256 KiB by
/// default), so a chunk never waits for a window update.
pub const STREAM_WINDOW_BYTES: u32 = 4 << 20;

/// Per-connection receive window: the bandwidth-delay product of a 1 Gbit/s path at 130 ms,
/// so one connection can fill a long fat pipe. quinn's default (~1.25 MB per RTT) would cap a
/// 100 ms WAN path at ~100 Mbit/s. Memory per peer stays bounded by the fetcher's in-flight
/// budget, since a peer only sends what was requested.
pub const CONNECTION_WINDOW_BYTES: u32 = 16 << 20;

/// Send window per connection (bytes the server keeps unacknowledged), same reasoning.
pub const SEND_WINDOW_BYTES: u64 = 16 << 20;

/// Concurrent request streams a peer may open to this node. Requests past it wait in the
/// peer's QUIC stack, not in this node's memory.
pub const REQUEST_STREAMS_MAX: u32 = 256;

pub use protocol::wire::{ACK_PACKET_BYTES, PACKET_OVERHEAD_BYTES};
pub use scheduler::control::{IDLE_TIMEOUT, KEEP_ALIVE};

/// QUIC/UDP socket buffers, sized for a fast LAN burst: the kernel's defaults (about 200 KiB)
/// drop datagrams in bursts at loopback speed.
pub const UDP_BUFFER_BYTES: usize = 4 << 20;

/// QUIC application error codes used when closing streams and connections.
pub mod codes {
    /// A frame broke the protocol.
    pub const PROTOCOL: u32 = 1;
    /// The peer is banned.
    pub const BANNED: u32 = 2;
    /// A duplicate connection, or the node is at its peer limit.
    pub const SURPLUS: u32 = 3;
    /// The node is shutting down.
    pub const SHUTDOWN: u32 = 4;
    /// In a fleet with a root: the peer showed no valid certificate from the fleet CA.
    pub const UNCERTIFIED: u32 = 5;
}

fn transport() -> Arc<TransportConfig> {
    let mut t = TransportConfig::default();
    t.stream_receive_window(VarInt::from_u32(STREAM_WINDOW_BYTES))
        .receive_window(VarInt::from_u32(CONNECTION_WINDOW_BYTES))
        .send_window(SEND_WINDOW_BYTES)
        .max_concurrent_bidi_streams(VarInt::from_u32(REQUEST_STREAMS_MAX))
        .max_concurrent_uni_streams(VarInt::from_u32(0))
        .keep_alive_interval(Some(KEEP_ALIVE))
        .max_idle_timeout(Some(
            IDLE_TIMEOUT
                .try_into()
                .expect("30 s is a valid idle timeout"),
        ));
    Arc::new(t)
}

/// The stateless-reset key, derived from the node key so that it survives a restart: when a
/// node comes back, peers still holding a connection to its previous run get a valid
/// stateless reset on their next packet and drop it at once, instead of waiting for the idle
/// timeout.
struct ResetKey([u8; 32]);

impl quinn::crypto::HmacKey for ResetKey {
    fn sign(&self, data: &[u8], out: &mut [u8]) {
        let tag = blake3::keyed_hash(&self.0, data);
        let n = out.len().min(32);
        out[..n].copy_from_slice(&tag.as_bytes()[..n]);
    }

    fn signature_len(&self) -> usize {
        32
    }

    fn verify(&self, data: &[u8], signature: &[u8]) -> Result<(), quinn::crypto::CryptoError> {
        // `blake3::Hash` equality is constant-time.
        let tag = blake3::keyed_hash(&self.0, data);
        match <[u8; 32]>::try_from(signature) {
            Ok(sig) if tag == blake3::Hash::from_bytes(sig) => Ok(()),
            _ => Err(quinn::crypto::CryptoError),
        }
    }
}

/// The data plane's ALPN names this node speaks, newest first: every one of
/// [`wire::DATA_ALPNS`], or down to the oldest only for a node that does not compress
/// (`compression = "off"`), which then speaks that version's protocol.
pub fn alpns(compression: crate::config::Compression) -> Vec<Vec<u8>> {
    wire::DATA_ALPNS
        .iter()
        .filter(|&&(_, v)| {
            compression != crate::config::Compression::Off || v < wire::COMPRESSED_CHUNKS_VERSION
        })
        .map(|&(name, _)| name.to_vec())
        .collect()
}

/// The protocol version `conn`'s handshake agreed on.
pub fn version_of(conn: &quinn::Connection) -> Option<u16> {
    let data = conn.handshake_data()?;
    let data = data
        .downcast::<quinn::crypto::rustls::HandshakeData>()
        .ok()?;
    wire::alpn_version(data.protocol.as_deref()?)
}

/// The node's endpoint, bound to `addr`, serving and dialing, and agreeing on one of
/// `alpns` ([`alpns`]) with each peer.
pub fn endpoint(
    keypair: &Keypair,
    secret: &[u8; 32],
    addr: SocketAddr,
    alpns: Vec<Vec<u8>>,
) -> crate::Result<quinn::Endpoint> {
    let mut tls = super::tls::server_config(keypair)?;
    tls.alpn_protocols = alpns;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(
        QuicServerConfig::try_from(tls).map_err(crate::Error::setup)?,
    ));
    server.transport_config(transport());
    let socket = std::net::UdpSocket::bind(addr)
        .map_err(|e| crate::Error::setup(format!("data plane cannot bind {addr}: {e}")))?;
    if let Err(e) = raise_udp_buffers(&socket) {
        tracing::debug!(error = %e, "could not raise UDP buffer sizes");
    }
    let runtime =
        quinn::default_runtime().ok_or_else(|| crate::Error::setup("no async runtime"))?;
    let endpoint = quinn::Endpoint::new(
        quinn::EndpointConfig::new(Arc::new(ResetKey(blake3::derive_key(
            "p2pd 2026 quic stateless reset key",
            secret,
        )))),
        Some(server),
        socket,
        runtime,
    )?;
    Ok(endpoint)
}

/// Raises `socket`'s kernel buffers to [`UDP_BUFFER_BYTES`] each way (the kernel caps them
/// at `net.core.rmem_max` / `wmem_max`).
pub fn raise_udp_buffers(socket: &std::net::UdpSocket) -> std::io::Result<()> {
    use rustix::net::sockopt;
    sockopt::set_socket_recv_buffer_size(socket, UDP_BUFFER_BYTES)?;
    sockopt::set_socket_send_buffer_size(socket, UDP_BUFFER_BYTES)?;
    Ok(())
}

/// Client config for dialing `peer`, offering `alpns` ([`alpns`]): the handshake fails
/// unless the server proves that id and speaks one of them.
pub fn client_config(
    keypair: &Keypair,
    peer: PeerId,
    alpns: Vec<Vec<u8>>,
) -> crate::Result<quinn::ClientConfig> {
    let mut tls = super::tls::client_config(keypair, peer)?;
    tls.alpn_protocols = alpns;
    let mut client = quinn::ClientConfig::new(Arc::new(
        QuicClientConfig::try_from(tls).map_err(crate::Error::setup)?,
    ));
    client.transport_config(transport());
    Ok(client)
}

/// The peer id a connection's certificate proves.
pub fn remote_peer_id(conn: &quinn::Connection) -> Option<PeerId> {
    let identity = conn.peer_identity()?;
    let certs = identity
        .downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
        .ok()?;
    let cert = libp2p_tls::certificate::parse(certs.first()?).ok()?;
    Some(cert.peer_id())
}

/// An error reading a frame.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The stream ended or failed.
    #[error("stream: {0}")]
    Read(#[from] quinn::ReadExactError),
    /// The frame broke the protocol.
    #[error(transparent)]
    Wire(#[from] WireError),
}

/// Reads one frame body of at most `max` bytes. `Ok(None)` if the stream ended cleanly
/// before a frame started.
pub async fn read_frame(recv: &mut RecvStream, max: usize) -> Result<Option<Vec<u8>>, FrameError> {
    let mut header = [0u8; FRAME_HEADER_BYTES];
    match recv.read_exact(&mut header).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let FrameHeader { len } = FrameHeader::parse(header, max)?;
    let mut body = vec![0u8; len];
    recv.read_exact(&mut body).await?;
    Ok(Some(body))
}

/// Writes one frame.
pub async fn write_frame<T: serde::Serialize>(
    send: &mut SendStream,
    value: &T,
) -> Result<(), quinn::WriteError> {
    send.write_all(&wire::frame(value)).await
}
