//! The network's errors, typed: why setting up the network, a dial, an accepted connection,
//! learning a release or a fetch failed. The daemon tells them apart (a release whose
//! channel is not followed is not an attack); the binaries add their context on top.

use crate::registry::RefusedFacts;
use protocol::ReleaseId;

/// Why an operation of the network failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A local file or socket.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The store refused or failed.
    #[error(transparent)]
    Store(#[from] store::StoreError),
    /// A manifest failed the verification gate (signature, trust, version, expiry, paths).
    #[error(transparent)]
    Manifest(#[from] protocol::ManifestError),
    /// The release's channel is not one this node follows.
    #[error("channel {} is not followed", .0.channel)]
    NotFollowed(RefusedFacts),
    /// A validly signed release, in date, of an older version of its channel than this node
    /// has taken: superseded, not refused (a node that restarts hears of versions it
    /// accepted and saw superseded; a replay of an old version is no more than that).
    #[error("version {} of channel {} is older than version {newer}, taken already", .release.manifest.version, .release.manifest.channel)]
    Older {
        /// The release, verified but for its version.
        release: Box<protocol::VerifiedRelease>,
        /// The newest version of its channel taken here.
        newer: u64,
    },
    /// A peer served the manifest of another release than the one asked for.
    #[error("the manifest served for {asked} is release {got}")]
    WrongManifest {
        /// The release asked for.
        asked: ReleaseId,
        /// The release served.
        got: ReleaseId,
    },
    /// The release's own windows cannot be read.
    #[error("{0}")]
    Windows(String),
    /// Dialing a peer failed before a connection existed.
    #[error(transparent)]
    Connect(#[from] quinn::ConnectError),
    /// The connection failed or was closed.
    #[error(transparent)]
    Connection(#[from] quinn::ConnectionError),
    /// Writing to a stream failed.
    #[error(transparent)]
    Write(#[from] quinn::WriteError),
    /// Reading a frame failed (too large, truncated, the stream broke).
    #[error(transparent)]
    Frame(#[from] crate::quic::FrameError),
    /// A message did not decode.
    #[error(transparent)]
    Wire(#[from] protocol::wire::WireError),
    /// The peer broke the handshake: no id in its certificate, banned, no or a bad hello.
    #[error("{0}")]
    Handshake(String),
    /// A step did not finish in time.
    #[error("timed out")]
    Timeout(#[from] tokio::time::error::Elapsed),
    /// A blocking task panicked or was cancelled.
    #[error(transparent)]
    Task(#[from] tokio::task::JoinError),
    /// The node is shutting down.
    #[error("shutting down")]
    Closed(#[from] tokio::sync::AcquireError),
    /// The store writer of a fetch stopped.
    #[error("the store writer stopped")]
    WriterStopped,
    /// Setting up the network (TLS, QUIC, the libp2p swarm, randomness).
    #[error("{0}")]
    Setup(String),
}

impl Error {
    /// A set-up error from anything that says what went wrong.
    pub(crate) fn setup(e: impl std::fmt::Display) -> Self {
        Self::Setup(e.to_string())
    }
}

/// A result of the network.
pub type Result<T, E = Error> = std::result::Result<T, E>;
