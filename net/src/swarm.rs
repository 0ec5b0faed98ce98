//! The libp2p layer: finding peers. mDNS finds same-site peers on the LAN, static bootstrap
//! peers are dialed at start, and identify tells each connected peer where this node's data
//! plane listens. Everything else between nodes — chunks, bitmaps, status records, site
//! summaries, peer lists — travels on the data plane ([`super::peer`]), where every message
//! is this node's own, bounded and counted.
//!
//! Why no gossipsub and no Kademlia: measured in the testnet (`testnet run
//! testnet/scenarios/control-3x4.toml`, 8 MiB release), libp2p with a fleet-wide gossipsub
//! topic and a Kademlia DHT sent 1.7 MiB across the WAN per release for 13 nodes and 9.7 MiB
//! for 25 (mesh upkeep, IHAVE gossip, every record flooded to every node, DHT refreshes and
//! provider records): it grew with the square of the fleet. The data plane already connects
//! every node to its site and to a few peers elsewhere, so announcements travel as bitmaps
//! and status in two levels (records in the site, summaries across the WAN).
//!
//! Identify's agent string carries what the data plane needs to dial a peer:
//! `p2pd/<version> site=<site> region=<region> data=<ip:port> wan=<ip:port>`. An unspecified
//! IP (`0.0.0.0`) means "the address you reach my control plane at". The data plane then
//! proves the peer id in its own TLS handshake and learns the site again in its hello, so a
//! lie here only makes a dial fail. In a fleet with a root the agent string also carries the
//! node certificate (`cert=<hex>`): a peer without one that verifies for its key is
//! disconnected at once and never enters the table of known peers (so it is never dialed
//! and never counted as a member of the site it claims), and a peer's site is its
//! certificate's. A libp2p connection has nothing to do once identify is
//! done, and closes after [`IDLE_CONNECTION_TIMEOUT`].

use super::{KnownPeer, Net, parse_bootstrap};
use futures_util::StreamExt;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, identify, mdns};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Identify protocol family.
const IDENTIFY_PROTOCOL: &str = "/p2pd/id/1.0.0";

/// A libp2p connection with nothing to do (identify exchanged, no dial pending) closes after
/// this long.
pub const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(20);

/// Addresses remembered of peers seen on the control plane (for the data plane's address
/// fix-up below); past it the oldest are forgotten.
const SEEN_PEERS_MAX: usize = 4096;

/// How often bootstrap peers are dialed again while none is connected on the data plane (a
/// bootstrap node that was down at start, or restarted).
const BOOTSTRAP_RETRY: Duration = Duration::from_secs(30);

/// Control-plane connections at once. A connection carries one identify exchange and
/// closes after [`IDLE_CONNECTION_TIMEOUT`], so even a bootstrap node that a whole region
/// joins through holds far fewer; past it new ones are refused (they retry), so a crowd of
/// made-up identities cannot grow this node's tables or sockets without bound.
pub const CONTROL_CONNECTIONS_MAX: u32 = 1024;

/// Control-plane handshakes under way at once, incoming: bounds what a stranger sending
/// QUIC handshakes costs.
pub const CONTROL_PENDING_IN_MAX: u32 = 128;

/// Control-plane dials under way at once: what mDNS or bootstrap addresses (true or made
/// up) can make this node send.
pub const CONTROL_PENDING_OUT_MAX: u32 = 32;

/// Control-plane connections per peer: two, for when both ends dial at once.
pub const CONTROL_CONNECTIONS_PER_PEER_MAX: u32 = 2;

#[derive(NetworkBehaviour)]
struct Behaviour {
    limits: libp2p::connection_limits::Behaviour,
    identify: identify::Behaviour,
    mdns: Toggle<mdns::tokio::Behaviour>,
}

/// The agent string advertised by identify.
fn agent(net: &Net) -> String {
    let data = net
        .config()
        .advertise_data
        .unwrap_or_else(|| net.data_addr());
    let wan = net.config().advertise_wan.unwrap_or(data);
    let mut agent = format!(
        "p2pd/{} site={} region={} data={} wan={}",
        env!("CARGO_PKG_VERSION"),
        net.local.site,
        net.local.region,
        data,
        wan
    );
    if let Some(m) = net.membership() {
        agent.push_str(" cert=");
        agent.push_str(&hex::encode(&m.cert));
    }
    agent
}

/// Parses a peer's agent string; `seen_ip` replaces unspecified addresses. Returns the
/// peer and the certificate it shows (encoded; empty if none).
fn parse_agent(agent: &str, seen_ip: Option<IpAddr>) -> Option<(KnownPeer, Vec<u8>)> {
    let mut parts = agent.split(' ');
    if !parts.next()?.starts_with("p2pd/") {
        return None;
    }
    let (mut site, mut data, mut wan, mut cert) = (None, None, None, Vec::new());
    for kv in parts {
        let (k, v) = kv.split_once('=')?;
        match k {
            "site" if protocol::wire::valid_name(v) => site = Some(v.to_string()),
            "data" => data = v.parse::<SocketAddr>().ok(),
            "wan" => wan = v.parse::<SocketAddr>().ok(),
            "cert" if v.len() <= 2 * protocol::cert::CERT_BYTES_MAX => {
                cert = hex::decode(v).unwrap_or_default();
            }
            _ => {}
        }
    }
    let fix = |mut a: SocketAddr| {
        if a.ip().is_unspecified() {
            if let Some(ip) = seen_ip {
                a.set_ip(ip);
            }
        }
        a
    };
    let lan = fix(data?);
    Some((
        KnownPeer {
            told: super::peers::Told::Itself,
            lan_known: true,
            site: site?,
            lan,
            wan: wan.map(fix).unwrap_or(lan),
        },
        cert,
    ))
}

/// The QUIC multiaddr of a UDP socket address.
fn quic_addr(addr: SocketAddr) -> Multiaddr {
    let mut m = Multiaddr::from(addr.ip());
    m.push(Protocol::Udp(addr.port()));
    m.push(Protocol::QuicV1);
    m
}

fn ip_of(addr: &Multiaddr) -> Option<IpAddr> {
    addr.iter().find_map(|p| match p {
        Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
        Protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
        _ => None,
    })
}

/// Builds the swarm (identify showing this node's agent string as of now) and starts it
/// listening.
fn build(net: &Net) -> crate::Result<libp2p::Swarm<Behaviour>> {
    let mdns_on = net.config().mdns;
    let agent = agent(net);
    let advertised = net.config().advertise_control.map(quic_addr);
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(net.keypair().clone())
        .with_tokio()
        .with_quic()
        .with_behaviour(|key| {
            let identify = identify::Behaviour::new(
                identify::Config::new(IDENTIFY_PROTOCOL.into(), key.public())
                    .with_agent_version(agent.clone())
                    // With an advertised address, peers must dial that one only.
                    .with_hide_listen_addrs(advertised.is_some()),
            );
            let mdns = if mdns_on {
                Some(mdns::tokio::Behaviour::new(
                    mdns::Config::default(),
                    key.public().to_peer_id(),
                )?)
            } else {
                None
            };
            let limits = libp2p::connection_limits::Behaviour::new(
                libp2p::connection_limits::ConnectionLimits::default()
                    .with_max_established(Some(CONTROL_CONNECTIONS_MAX))
                    .with_max_pending_incoming(Some(CONTROL_PENDING_IN_MAX))
                    .with_max_pending_outgoing(Some(CONTROL_PENDING_OUT_MAX))
                    .with_max_established_per_peer(Some(CONTROL_CONNECTIONS_PER_PEER_MAX)),
            );
            Ok(Behaviour {
                limits,
                identify,
                mdns: Toggle::from(mdns),
            })
        })
        .map_err(crate::Error::setup)?
        .with_swarm_config(|c| c.with_idle_connection_timeout(IDLE_CONNECTION_TIMEOUT))
        .build();
    swarm
        .listen_on(quic_addr(net.config().listen))
        .map_err(crate::Error::setup)?;
    if let Some(addr) = advertised {
        swarm.add_external_address(addr);
    }
    Ok(swarm)
}

/// How long a control plane that is starting again (after a certificate renewal) waits
/// between tries to bind its port, which the one before may hold for a moment.
const REBUILD_RETRY: Duration = Duration::from_millis(500);

/// Why [`run`] returned.
enum Stop {
    Shutdown,
    /// This node's certificate changed: identify must show the new one.
    CertChanged,
}

/// Builds the swarm and runs it until shutdown. When this node's certificate is renewed
/// ([`Net::set_own_cert`]) the swarm is built again with the new agent string (identify
/// has no way to change it on a running swarm); the data plane is not touched.
pub fn spawn(
    net: Arc<Net>,
    mut shutdown: watch::Receiver<bool>,
) -> crate::Result<(PeerId, tokio::task::JoinHandle<()>)> {
    let local_peer_id = net.keypair().public().to_peer_id();
    let mut bootstrap = Vec::new();
    for b in &net.config().bootstrap {
        let (addr, peer) = parse_bootstrap(b).map_err(crate::Error::setup)?;
        bootstrap.push((addr, peer));
    }
    net.set_bootstrap(bootstrap.iter().map(|(_, p)| *p).collect());
    let mut swarm = build(&net)?;
    let handle = tokio::spawn(async move {
        loop {
            match run(&net, &mut swarm, &bootstrap, &mut shutdown).await {
                Stop::Shutdown => return,
                Stop::CertChanged => {
                    tracing::info!(
                        "certificate renewed: the control plane starts again to show it"
                    );
                    drop(swarm);
                    swarm = loop {
                        match build(&net) {
                            Ok(s) => break s,
                            Err(e) => {
                                tracing::warn!(error = %e, "control plane not started again yet");
                                tokio::select! {
                                    _ = shutdown.changed() => return,
                                    _ = tokio::time::sleep(REBUILD_RETRY) => {}
                                }
                            }
                        }
                    };
                }
            }
        }
    });
    Ok((local_peer_id, handle))
}

/// Dials the bootstrap peers not connected on the control plane.
fn dial_bootstrap(swarm: &mut libp2p::Swarm<Behaviour>, bootstrap: &[(Multiaddr, PeerId)]) {
    for (addr, peer) in bootstrap {
        if !swarm.is_connected(peer) {
            if let Err(e) = swarm.dial(addr.clone()) {
                tracing::warn!(bootstrap = %addr, error = %e, "cannot dial bootstrap peer");
            }
        }
    }
}

/// Runs `swarm` until shutdown or until this node's certificate changes.
async fn run(
    net: &Arc<Net>,
    swarm: &mut libp2p::Swarm<Behaviour>,
    bootstrap: &[(Multiaddr, PeerId)],
    shutdown: &mut watch::Receiver<bool>,
) -> Stop {
    let local_peer_id = *swarm.local_peer_id();
    dial_bootstrap(swarm, bootstrap);
    let mut seen_ip: HashMap<PeerId, IpAddr> = HashMap::new();
    let mut retry = tokio::time::interval(BOOTSTRAP_RETRY);
    retry.tick().await;
    loop {
        tokio::select! {
            _ = shutdown.changed() => return Stop::Shutdown,
            _ = net.own_cert_changed.notified() => return Stop::CertChanged,
            _ = retry.tick() => {
                if !net.bootstrap_connected() {
                    dial_bootstrap(swarm, bootstrap);
                }
            }
            event = swarm.select_next_some() => match event {
                SwarmEvent::NewListenAddr { address, .. } => {
                    tracing::info!(%address, peer = %local_peer_id, "control plane listening");
                }
                SwarmEvent::ConnectionEstablished { peer_id, endpoint, .. } => {
                    if let Some(ip) = ip_of(endpoint.get_remote_address()) {
                        if seen_ip.len() >= SEEN_PEERS_MAX {
                            seen_ip.clear();
                        }
                        seen_ip.insert(peer_id, ip);
                    }
                }
                SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                    peer_id, info, ..
                })) => {
                    let seen = seen_ip.get(&peer_id).copied();
                    match parse_agent(&info.agent_version, seen) {
                        Some((mut known, cert)) => {
                            // In a fleet with a root: a peer without a valid certificate is
                            // dropped before anything it says is used (never dialed, never
                            // counted in its claimed site), and its site is its
                            // certificate's.
                            let now = jiff::Timestamp::now().as_second();
                            match super::peer::certified_place(net, &peer_id, &cert, now) {
                                Ok(place) => {
                                    if let Some(p) = place {
                                        known.site = p.site;
                                    }
                                    net.on_identified(peer_id, known);
                                }
                                Err(why) => {
                                    tracing::warn!(%peer_id, reason = %why,
                                        "control-plane peer refused: no valid certificate");
                                    let addr = SocketAddr::new(
                                        seen.unwrap_or(IpAddr::from([0, 0, 0, 0])),
                                        0,
                                    );
                                    net.peers.note_refused(peer_id, addr, why);
                                    let _ = swarm.disconnect_peer_id(peer_id);
                                }
                            }
                        }
                        None => tracing::debug!(%peer_id, agent = %info.agent_version,
                            "not a p2pd peer"),
                    }
                }
                SwarmEvent::Behaviour(BehaviourEvent::Mdns(mdns::Event::Discovered(list))) => {
                    for (peer, addr) in list {
                        if !swarm.is_connected(&peer) && !net.is_connected(&peer) {
                            let _ = swarm.dial(addr);
                        }
                    }
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_strings_parse_and_unspecified_addresses_take_the_seen_ip() {
        let (k, cert) = parse_agent(
            "p2pd/0.1.0 site=b-1 region=eu data=0.0.0.0:7402 wan=203.0.113.7:9000",
            Some("10.0.0.9".parse().unwrap()),
        )
        .unwrap();
        assert!(cert.is_empty());
        assert_eq!(k.site, "b-1");
        assert_eq!(k.lan, "10.0.0.9:7402".parse().unwrap());
        assert_eq!(k.wan, "203.0.113.7:9000".parse().unwrap());
        assert!(parse_agent("rust-libp2p/0.1", None).is_none());
        assert!(parse_agent("p2pd/0.1.0 site=a b region=x data=1.2.3.4:5", None).is_none());
        assert!(parse_agent("p2pd/0.1.0 site=../x data=1.2.3.4:5", None).is_none());
        // A certificate in hex comes out as bytes (what they are is checked elsewhere).
        let (_, cert) =
            parse_agent("p2pd/0.1.0 site=b region=r data=1.2.3.4:5 cert=0aff", None).unwrap();
        assert_eq!(cert, vec![0x0a, 0xff]);
    }
}
