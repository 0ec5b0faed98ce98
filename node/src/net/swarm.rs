//! The libp2p control plane: identify (who a peer is and where its data plane listens), mDNS
//! (same-site discovery), static bootstrap peers, Kademlia (peer routing and provider records
//! per release) and gossipsub (signed release announcements).
//!
//! Identify's agent string carries what the data plane needs to dial a peer:
//! `p2pd/<version> site=<site> region=<region> data=<ip:port> wan=<ip:port>`. An unspecified
//! IP (`0.0.0.0`) means "the address you reach my control plane at". The data plane then
//! proves the peer id in its own TLS handshake and learns the site again in its hello, so a
//! lie here only makes a dial fail.

use super::{KnownPeer, Net, SwarmCommand, parse_bootstrap};
use futures_util::StreamExt;
use libp2p::kad::{self, GetProvidersOk, QueryResult, RecordKey, store::MemoryStore};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, StreamProtocol, gossipsub, identify, mdns};
use protocol::status::STATUS_RECORD_BYTES_MAX;
use protocol::wire::{ANNOUNCE_TOPIC, ANNOUNCEMENT_BYTES_MAX, Announcement, STATUS_TOPIC};
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// Identify protocol family.
const IDENTIFY_PROTOCOL: &str = "/p2pd/id/1.0.0";

/// Kademlia protocol of the fleet (a private DHT, not the public IPFS one).
const KAD_PROTOCOL: &str = "/p2pd/kad/1.0.0";

/// Control-plane connections dialed because Kademlia told us of a peer, at most, so a large
/// routing table does not turn into thousands of connections.
const ROUTING_DIALS_MAX: usize = 256;

/// How often to refresh the Kademlia routing table.
const KAD_BOOTSTRAP_INTERVAL: Duration = Duration::from_secs(60);

#[derive(NetworkBehaviour)]
struct Behaviour {
    identify: identify::Behaviour,
    mdns: Toggle<mdns::tokio::Behaviour>,
    kad: kad::Behaviour<MemoryStore>,
    gossipsub: gossipsub::Behaviour,
}

/// The agent string advertised by identify.
fn agent(net: &Net) -> String {
    let data = net
        .config()
        .advertise_data
        .unwrap_or_else(|| net.data_addr());
    let wan = net.config().advertise_wan.unwrap_or(data);
    format!(
        "p2pd/{} site={} region={} data={} wan={}",
        env!("CARGO_PKG_VERSION"),
        net.local.site,
        net.local.region,
        data,
        wan
    )
}

/// Parses a peer's agent string; `seen_ip` replaces unspecified addresses.
fn parse_agent(agent: &str, seen_ip: Option<IpAddr>) -> Option<KnownPeer> {
    let mut parts = agent.split(' ');
    if !parts.next()?.starts_with("p2pd/") {
        return None;
    }
    let (mut site, mut data, mut wan) = (None, None, None);
    for kv in parts {
        let (k, v) = kv.split_once('=')?;
        match k {
            "site" if protocol::wire::valid_name(v) => site = Some(v.to_string()),
            "data" => data = v.parse::<SocketAddr>().ok(),
            "wan" => wan = v.parse::<SocketAddr>().ok(),
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
    Some(KnownPeer {
        site: site?,
        lan,
        wan: wan.map(fix).unwrap_or(lan),
    })
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
    mut commands: mpsc::Receiver<SwarmCommand>,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<(PeerId, tokio::task::JoinHandle<()>)> {
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
            let mut kad = kad::Behaviour::with_config(
                key.public().to_peer_id(),
                MemoryStore::new(key.public().to_peer_id()),
                kad::Config::new(StreamProtocol::new(KAD_PROTOCOL)),
            );
            // Fleet addresses are private (loopback, RFC 1918): without this a node would
            // stay a DHT client and never answer provider queries.
            kad.set_mode(Some(kad::Mode::Server));
            let gossip_config = gossipsub::ConfigBuilder::default()
                .heartbeat_interval(Duration::from_millis(500))
                .validation_mode(gossipsub::ValidationMode::Strict)
                .max_transmit_size((ANNOUNCEMENT_BYTES_MAX * 4).max(STATUS_RECORD_BYTES_MAX * 2))
                .build()
                .map_err(|e| anyhow::anyhow!("gossipsub config: {e}"))?;
            let gossipsub = gossipsub::Behaviour::new(
                gossipsub::MessageAuthenticity::Signed(key.clone()),
                gossip_config,
            )
            .map_err(|e| anyhow::anyhow!("gossipsub: {e}"))?
            .with_metrics(
                &mut super::lock(&net.gossip_metrics),
                gossipsub::MetricsConfig::default(),
            );
            Ok(Behaviour {
                identify,
                mdns: Toggle::from(mdns),
                kad,
                gossipsub,
            })
        })?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(120)))
        .build();

    let topic = gossipsub::IdentTopic::new(ANNOUNCE_TOPIC);
    swarm.behaviour_mut().gossipsub.subscribe(&topic)?;
    let status_topic = gossipsub::IdentTopic::new(STATUS_TOPIC);
    swarm.behaviour_mut().gossipsub.subscribe(&status_topic)?;
    swarm.listen_on(quic_addr(net.config().listen))?;
    if let Some(addr) = advertised {
        swarm.add_external_address(addr);
    }
    for b in &net.config().bootstrap {
        let (addr, peer) = parse_bootstrap(b).map_err(anyhow::Error::msg)?;
        swarm.behaviour_mut().kad.add_address(&peer, addr.clone());
        if let Err(e) = swarm.dial(addr) {
            tracing::warn!(bootstrap = %b, error = %e, "cannot dial bootstrap peer");
        }
    }

    let handle = tokio::spawn(async move {
        let mut seen_ip: HashMap<PeerId, IpAddr> = HashMap::new();
        let mut routed: HashSet<PeerId> = HashSet::new();
        let mut refresh = tokio::time::interval(KAD_BOOTSTRAP_INTERVAL);
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = refresh.tick() => {
                    let _ = swarm.behaviour_mut().kad.bootstrap();
                }
                Some(cmd) = commands.recv() => match cmd {
                    SwarmCommand::Announce(a) => {
                        match swarm.behaviour_mut().gossipsub.publish(topic.clone(), a.encode()) {
                            Ok(_) => tracing::info!(release = %a.release, "announced"),
                            Err(e) => tracing::info!(release = %a.release, error = %e,
                                "announcement not gossiped; peers will learn it from bitmaps"),
                        }
                    }
                    SwarmCommand::Status(record) => {
                        // Nobody subscribed yet (a lone node) is not an error worth a line.
                        if let Err(e) = swarm.behaviour_mut().gossipsub.publish(status_topic.clone(), record) {
                            tracing::debug!(error = %e, "status record not gossiped");
                        }
                    }
                    SwarmCommand::Provide(id) => {
                        let _ = swarm.behaviour_mut().kad.start_providing(RecordKey::new(&id.0));
                    }
                    SwarmCommand::FindProviders(id) => {
                        swarm.behaviour_mut().kad.get_providers(RecordKey::new(&id.0));
                    }
                },
                event = swarm.select_next_some() => match event {
                    SwarmEvent::NewListenAddr { address, .. } => {
                        tracing::info!(%address, peer = %local_peer_id, "control plane listening");
                    }
                    SwarmEvent::ConnectionEstablished { peer_id, endpoint, .. } => {
                        if let Some(ip) = ip_of(endpoint.get_remote_address()) {
                            seen_ip.insert(peer_id, ip);
                        }
                    }
                    SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                        peer_id, info, ..
                    })) => {
                        match parse_agent(&info.agent_version, seen_ip.get(&peer_id).copied()) {
                            Some(known) => {
                                for addr in info.listen_addrs {
                                    swarm.behaviour_mut().kad.add_address(&peer_id, addr);
                                }
                                net.on_identified(peer_id, known);
                            }
                            None => tracing::debug!(%peer_id, agent = %info.agent_version,
                                "not a p2pd peer"),
                        }
                    }
                    SwarmEvent::Behaviour(BehaviourEvent::Mdns(mdns::Event::Discovered(list))) => {
                        for (peer, addr) in list {
                            if !swarm.is_connected(&peer) {
                                let _ = swarm.dial(addr);
                            }
                        }
                    }
                    SwarmEvent::Behaviour(BehaviourEvent::Kad(kad::Event::RoutingUpdated {
                        peer, addresses, ..
                    })) => {
                        let wanted = !swarm.is_connected(&peer)
                            && routed.len() < ROUTING_DIALS_MAX
                            && routed.insert(peer);
                        if wanted {
                            let _ = swarm.dial(addresses.first().clone());
                        }
                    }
                    SwarmEvent::Behaviour(BehaviourEvent::Kad(kad::Event::OutboundQueryProgressed {
                        result: QueryResult::GetProviders(Ok(GetProvidersOk::FoundProviders {
                            providers, ..
                        })),
                        ..
                    })) => {
                        for p in providers {
                            if p != local_peer_id && !swarm.is_connected(&p) {
                                let _ = swarm.dial(p);
                            }
                        }
                    }
                    SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                        propagation_source, message, ..
                    })) if message.topic == status_topic.hash() => {
                        let t = &net.traffic;
                        t.status_received.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        t.status_received_bytes.fetch_add(
                            message.data.len() as u64,
                            std::sync::atomic::Ordering::Relaxed,
                        );
                        if let Some(fleet) = net.fleet.get() {
                            if let Err(e) = fleet.offer(&message.data) {
                                tracing::debug!(peer = %propagation_source, error = %e,
                                    "status record not kept");
                            }
                        }
                    }
                    SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                        propagation_source, message, ..
                    })) => {
                        match Announcement::decode(&message.data) {
                            Ok(a) => {
                                let from = message.source.unwrap_or(propagation_source);
                                net.on_announcement(a, from);
                            }
                            Err(e) => tracing::debug!(peer = %propagation_source, error = %e,
                                "ignoring malformed announcement"),
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
        let k = parse_agent(
            "p2pd/0.1.0 site=b-1 region=eu data=0.0.0.0:7402 wan=203.0.113.7:9000",
            Some("10.0.0.9".parse().unwrap()),
        )
        .unwrap();
        assert_eq!(k.site, "b-1");
        assert_eq!(k.lan, "10.0.0.9:7402".parse().unwrap());
        assert_eq!(k.wan, "203.0.113.7:9000".parse().unwrap());
        assert!(parse_agent("rust-libp2p/0.1", None).is_none());
        assert!(parse_agent("p2pd/0.1.0 site=a b region=x data=1.2.3.4:5", None).is_none());
        assert!(parse_agent("p2pd/0.1.0 site=../x data=1.2.3.4:5", None).is_none());
    }
}
