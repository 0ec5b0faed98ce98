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

#[derive(NetworkBehaviour)]
struct Behaviour {
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

/// Builds the swarm and runs it until shutdown.
pub fn spawn(
    net: Arc<Net>,
    mut shutdown: watch::Receiver<bool>,
) -> crate::Result<(PeerId, tokio::task::JoinHandle<()>)> {
    let keypair = net.keypair().clone();
    let local_peer_id = keypair.public().to_peer_id();
    let mdns_on = net.config().mdns;
    let agent = agent(&net);
    let advertised = net.config().advertise_control.map(quic_addr);
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
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
            Ok(Behaviour {
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
    let mut bootstrap = Vec::new();
    for b in &net.config().bootstrap {
        let (addr, peer) = parse_bootstrap(b).map_err(crate::Error::setup)?;
        bootstrap.push((addr, peer));
    }
    net.set_bootstrap(bootstrap.iter().map(|(_, p)| *p).collect());
    let dial_bootstrap = move |swarm: &mut libp2p::Swarm<Behaviour>| {
        for (addr, peer) in &bootstrap {
            if !swarm.is_connected(peer) {
                if let Err(e) = swarm.dial(addr.clone()) {
                    tracing::warn!(bootstrap = %addr, error = %e, "cannot dial bootstrap peer");
                }
            }
        }
    };
    dial_bootstrap(&mut swarm);

    let handle = tokio::spawn(async move {
        let mut seen_ip: HashMap<PeerId, IpAddr> = HashMap::new();
        let mut retry = tokio::time::interval(BOOTSTRAP_RETRY);
        retry.tick().await;
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = retry.tick() => {
                    if !net.bootstrap_connected() {
                        dial_bootstrap(&mut swarm);
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
                                // In a fleet with a root: a peer without a valid certificate
                                // is dropped before anything it says is used (never dialed,
                                // never counted in its claimed site), and its site is its
                                // certificate's.
                                let now = jiff::Timestamp::now().as_second();
                                match super::peer::certified_place(&net, &peer_id, &cert, now) {
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
    });
    Ok((local_peer_id, handle))
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
