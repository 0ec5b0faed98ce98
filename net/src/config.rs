//! `[network]` of the daemon's configuration: addresses, discovery, which channels to
//! follow, peer limits. The daemon's config file embeds it; this crate owns it because only
//! the network reads it.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// `[network]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkSection {
    /// Control plane (libp2p over QUIC) UDP address.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Data plane (chunk transfers over QUIC) UDP address.
    #[serde(default = "default_data_listen")]
    pub data_listen: SocketAddr,
    /// The data-plane address peers of this site dial, if not the one they see this node at.
    #[serde(default)]
    pub advertise_data: Option<SocketAddr>,
    /// The data-plane address peers of other sites dial (e.g. a branch gateway's forwarded
    /// port); defaults to `advertise_data`.
    #[serde(default)]
    pub advertise_wan: Option<SocketAddr>,
    /// The control-plane (libp2p) address peers dial, if not the one this node listens on
    /// (a port forwarded on the gateway): identify then gives peers this address only.
    #[serde(default)]
    pub advertise_control: Option<SocketAddr>,
    /// Discover same-site peers with mDNS on the local network.
    #[serde(default = "default_true")]
    pub mdns: bool,
    /// Peers to join at start-up, as libp2p multiaddrs with the peer id:
    /// `/ip4/10.1.0.5/udp/7401/quic-v1/p2p/12D3KooW...`.
    #[serde(default)]
    pub bootstrap: Vec<String>,
    /// Channels this node fetches releases of, each with the channels under it by whole
    /// segments (`security` covers `security/openssl`, not `security-evil`); `"*"` follows
    /// every channel its trust policy allows. Releases on other channels are ignored
    /// unfetched.
    #[serde(default = "default_follow")]
    pub follow: Vec<String>,
    /// Most peers connected on the data plane at once.
    #[serde(default = "default_max_peers")]
    pub max_peers: usize,
    /// Peers of other sites this node dials for chunks, besides its bootstrap peers (more
    /// dial it): picked by rendezvous hashing, spread over as many sites as there are.
    #[serde(default = "default_wan_peers")]
    pub wan_peers: usize,
    /// Which peers this node sends chunks compressed to (`wan`, `always`, `off`; see
    /// [`Compression`]).
    #[serde(default)]
    pub compression: Compression,
    /// Fetch a changed file as a patch against the version of it this node holds, where the
    /// release offers one that is smaller than the file's chunks (`false`: chunks only).
    #[serde(default = "default_true")]
    pub patches: bool,
}

/// Where chunks move compressed (zstd, `chunking::compress`), the rule measured per link
/// class: zstd compresses text and code at about 180 MB/s and decompresses at about 600 MB/s
/// on one core, ten times what a branch WAN link carries but slower than a gigabit LAN,
/// where a same-site transfer would wait for the compressor. A chunk that does not shrink by
/// a sixteenth moves raw anyway (already compressed data).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// To peers of other sites.
    #[default]
    Wan,
    /// To every peer, same-site ones too: a site whose LAN is slow (Wi-Fi, a shared
    /// office line).
    Always,
    /// Never: the node neither sends nor takes compressed chunks, and speaks
    /// [`protocol::PROTOCOL_VERSION_MIN`] on the wire, as nodes before compression did.
    Off,
}

impl Default for NetworkSection {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            data_listen: default_data_listen(),
            advertise_data: None,
            advertise_wan: None,
            advertise_control: None,
            mdns: true,
            bootstrap: Vec::new(),
            follow: default_follow(),
            max_peers: default_max_peers(),
            wan_peers: default_wan_peers(),
            compression: Compression::default(),
            patches: true,
        }
    }
}

impl NetworkSection {
    /// Whether releases on `channel` are fetched: a `follow` entry covers its channel and
    /// those under it by whole segments (`security` covers `security/openssl`, never
    /// `security-evil`); `*` covers every channel.
    pub fn follows(&self, channel: &str) -> bool {
        self.follow
            .iter()
            .any(|p| protocol::root::channel_in_scope(p, channel))
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 7401))
}

fn default_data_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 7402))
}

fn default_true() -> bool {
    true
}

fn default_follow() -> Vec<String> {
    vec!["*".into()]
}

/// Default of `network.max_peers`: every member of a large branch plus a few peers per other
/// site it draws from, with memory per peer bounded by the data plane's windows.
fn default_max_peers() -> usize {
    128
}

fn default_wan_peers() -> usize {
    scheduler::control::WAN_PEERS_DEFAULT
}

/// Parses a bootstrap entry: a multiaddr ending in `/p2p/<peer id>`.
pub fn parse_bootstrap(s: &str) -> Result<(libp2p::Multiaddr, libp2p::PeerId), String> {
    let addr: libp2p::Multiaddr = s.parse().map_err(|e| format!("{s:?}: {e}"))?;
    match addr.iter().last() {
        Some(libp2p::multiaddr::Protocol::P2p(peer)) => Ok((addr, peer)),
        _ => Err(format!("{s:?}: must end in /p2p/<peer id>")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follow_covers_whole_segments_only() {
        let s = NetworkSection {
            follow: vec!["security".into(), "apps/office/".into()],
            ..NetworkSection::default()
        };
        assert!(s.follows("security"));
        assert!(s.follows("security/openssl"));
        assert!(!s.follows("security-evil"));
        assert!(!s.follows("securityx/openssl"));
        assert!(s.follows("apps/office/word"));
        assert!(!s.follows("apps/officetools"));
        let all = NetworkSection {
            follow: vec!["*".into()],
            ..NetworkSection::default()
        };
        assert!(all.follows("anything/at/all"));
    }
}
