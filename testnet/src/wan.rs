//! The emulated WAN: a UDP relay in the harness process through which every cross-site
//! packet of both planes passes, shaped per site.
//!
//! Each node gets two ports on the relay: a *WAN port* for its data plane, which it
//! advertises as its `advertise_wan` address, and a *control port* for its libp2p control
//! plane, which it advertises as `advertise_control` (and other nodes bootstrap to). Peers of
//! other sites dial the relay; peers of its own site dial its data plane directly (the LAN,
//! unshaped), and reach its control plane through the relay's control port too, which passes
//! same-site packets straight through and counts them as the site's LAN control traffic. A
//! packet from node A (site a) to node B (site b) leaves through site a's uplink and enters
//! through site b's downlink, each a FIFO link with a rate, a bounded queue (packets that
//! would wait longer than [`QUEUE_DELAY_MAX`] are dropped, like a router tail-drop, so QUIC's
//! congestion control sees a real bottleneck) and, on the downlink, a one-way latency.
//!
//! The relay counts the bytes each site sends and receives, by [`Kind`]: libp2p packets,
//! data-plane handshake packets (QUIC long headers) and the rest of the data plane. These are
//! the WAN figures the testnet reports, measured outside the nodes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Longest a packet may wait in a link's queue before it is dropped.
pub const QUEUE_DELAY_MAX: Duration = Duration::from_millis(60);

/// Largest datagram relayed.
const DATAGRAM_MAX: usize = 65_536;

/// One site's WAN link.
#[derive(Debug, Clone, Copy)]
pub struct SiteLink {
    /// Uplink rate in bytes/s (`None`: unlimited).
    pub up_bytes_per_s: Option<f64>,
    /// Downlink rate in bytes/s (`None`: unlimited).
    pub down_bytes_per_s: Option<f64>,
    /// One-way latency added on the downlink.
    pub latency: Duration,
}

/// Which of a node's planes a relay port carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plane {
    /// libp2p (discovery, identify, gossip).
    Control,
    /// The QUIC data plane (chunks and their control stream).
    Data,
}

/// What a relayed datagram is, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A libp2p datagram.
    Libp2p,
    /// A data-plane datagram with a QUIC long header: connection setup (Initial, Handshake,
    /// 0-RTT, Retry).
    DataHandshake,
    /// Any other data-plane datagram (chunks, the control stream, acknowledgements,
    /// keep-alives).
    Data,
}

impl Kind {
    /// Every kind, in counter order.
    pub const ALL: [Self; 3] = [Self::Libp2p, Self::DataHandshake, Self::Data];

    fn of(plane: Plane, datagram: &[u8]) -> Self {
        match plane {
            Plane::Control => Self::Libp2p,
            // RFC 9000 §17.2: the high bit of the first byte marks a long header.
            Plane::Data if datagram.first().is_some_and(|b| b & 0x80 != 0) => Self::DataHandshake,
            Plane::Data => Self::Data,
        }
    }
}

/// Bytes counted per site.
#[derive(Debug, Default)]
pub struct SiteCounters {
    /// UDP payload bytes that left the site over the WAN.
    pub sent: AtomicU64,
    /// UDP payload bytes that entered the site over the WAN.
    pub received: AtomicU64,
    /// Packets dropped at this site's links.
    pub dropped: AtomicU64,
    /// `sent` and `received` by [`Kind`] (`[kind][0]` sent, `[kind][1]` received).
    by_kind: [[AtomicU64; 2]; 3],
    /// libp2p bytes between nodes of this site (through the relay's control ports, not over
    /// the WAN), counted once per datagram.
    pub lan_control: AtomicU64,
    /// Data-plane bytes between nodes of this site that came through the relay: none unless
    /// a node dialed a same-site peer at its WAN address (a bug the report shows).
    pub lan_data: AtomicU64,
}

impl SiteCounters {
    /// Bytes of `kind` that left (`sent`) or entered the site over the WAN.
    pub fn of(&self, kind: Kind, sent: bool) -> u64 {
        self.by_kind[kind as usize][usize::from(!sent)].load(Ordering::Relaxed)
    }
}

struct Packet {
    data: Vec<u8>,
    out: Arc<UdpSocket>,
    to: SocketAddr,
    dst_site: usize,
    kind: Kind,
}

/// A FIFO link: departure times are assigned on entry, so order is kept and the long-run
/// rate is exact whatever the timer granularity.
struct Link {
    rate: Option<f64>,
    latency: Duration,
    next_free: Mutex<Instant>,
    tx: mpsc::UnboundedSender<(Instant, Packet)>,
}

impl Link {
    /// Queues `p`; false if the queue is full (dropped).
    fn offer(&self, p: Packet) -> bool {
        let now = Instant::now();
        let departure = match self.rate {
            None => now,
            Some(rate) => {
                let mut next = self.next_free.lock().unwrap_or_else(|e| e.into_inner());
                let start = (*next).max(now);
                if start - now > QUEUE_DELAY_MAX {
                    return false;
                }
                *next = start + Duration::from_secs_f64(p.data.len() as f64 / rate);
                *next
            }
        };
        self.tx.send((departure + self.latency, p)).is_ok()
    }
}

/// The relay.
pub struct Wan {
    counters: Vec<Arc<SiteCounters>>,
    /// Node data address -> site index.
    site_of: Arc<HashMap<SocketAddr, usize>>,
    up: Vec<Arc<Link>>,
    down: Vec<Arc<Link>>,
}

impl Wan {
    /// Starts the links for `sites`; `nodes` maps every node's control- and data-plane
    /// addresses to its site index.
    pub fn new(sites: &[SiteLink], nodes: HashMap<SocketAddr, usize>) -> Arc<Self> {
        let counters: Vec<Arc<SiteCounters>> = sites
            .iter()
            .map(|_| Arc::new(SiteCounters::default()))
            .collect();
        let mut up = Vec::new();
        let mut down = Vec::new();
        let mut down_rx = Vec::new();
        let mut up_rx = Vec::new();
        for s in sites {
            let (tx, rx) = mpsc::unbounded_channel();
            up.push(Arc::new(Link {
                rate: s.up_bytes_per_s,
                latency: Duration::ZERO,
                next_free: Mutex::new(Instant::now()),
                tx,
            }));
            up_rx.push(rx);
            let (tx, rx) = mpsc::unbounded_channel();
            down.push(Arc::new(Link {
                rate: s.down_bytes_per_s,
                latency: s.latency,
                next_free: Mutex::new(Instant::now()),
                tx,
            }));
            down_rx.push(rx);
        }
        // Uplink stage: after its departure a packet enters the destination's downlink.
        for (site, mut rx) in up_rx.into_iter().enumerate() {
            let down = down.clone();
            let counters = counters.clone();
            tokio::spawn(async move {
                while let Some((at, p)) = rx.recv().await {
                    wait_until(at).await;
                    let dst = p.dst_site;
                    let len = p.data.len() as u64;
                    counters[site].sent.fetch_add(len, Ordering::Relaxed);
                    counters[site].by_kind[p.kind as usize][0].fetch_add(len, Ordering::Relaxed);
                    if !down[dst].offer(p) {
                        counters[dst].dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
        // Downlink stage: deliver.
        for (site, mut rx) in down_rx.into_iter().enumerate() {
            let counters = counters.clone();
            tokio::spawn(async move {
                while let Some((at, p)) = rx.recv().await {
                    wait_until(at).await;
                    let len = p.data.len() as u64;
                    counters[site].received.fetch_add(len, Ordering::Relaxed);
                    counters[site].by_kind[p.kind as usize][1].fetch_add(len, Ordering::Relaxed);
                    let _ = p.out.send_to(&p.data, p.to).await;
                }
            });
        }
        Arc::new(Self {
            counters,
            site_of: Arc::new(nodes),
            up,
            down,
        })
    }

    /// Opens the relay port of `plane` for the node whose socket of that plane is
    /// `node_addr` (site `site`); returns the port's address.
    pub async fn open_port(
        self: &Arc<Self>,
        node_addr: SocketAddr,
        site: usize,
        plane: Plane,
    ) -> anyhow::Result<SocketAddr> {
        let public = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
        let addr = public.local_addr()?;
        let wan = self.clone();
        tokio::spawn(async move {
            let mut flows: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
            let mut buf = vec![0u8; DATAGRAM_MAX];
            loop {
                let Ok((n, src)) = public.recv_from(&mut buf).await else {
                    return;
                };
                let Some(&src_site) = wan.site_of.get(&src) else {
                    continue; // not a node of the testnet
                };
                let flow = match flows.get(&src) {
                    Some(f) => f.clone(),
                    None => {
                        let Ok(f) = UdpSocket::bind("127.0.0.1:0").await else {
                            continue;
                        };
                        let f = Arc::new(f);
                        flows.insert(src, f.clone());
                        // Replies from the node go back to `src` from the public port.
                        let (wan2, f2, public2) = (wan.clone(), f.clone(), public.clone());
                        tokio::spawn(async move {
                            let mut buf = vec![0u8; DATAGRAM_MAX];
                            while let Ok((n, _)) = f2.recv_from(&mut buf).await {
                                let data = buf[..n].to_vec();
                                wan2.send(site, src_site, plane, data, public2.clone(), src)
                                    .await;
                            }
                        });
                        f
                    }
                };
                wan.send(src_site, site, plane, buf[..n].to_vec(), flow, node_addr)
                    .await;
            }
        });
        Ok(addr)
    }

    /// Carries `data` from site `from` to `addr` in site `to`, sending it from `out`: over
    /// the sites' links, or straight through between nodes of one site.
    async fn send(
        &self,
        from: usize,
        to: usize,
        plane: Plane,
        data: Vec<u8>,
        out: Arc<UdpSocket>,
        addr: SocketAddr,
    ) {
        if from == to {
            let c = &self.counters[from];
            let counter = match plane {
                Plane::Control => &c.lan_control,
                Plane::Data => &c.lan_data,
            };
            counter.fetch_add(data.len() as u64, Ordering::Relaxed);
            let _ = out.send_to(&data, addr).await;
            return;
        }
        let p = Packet {
            kind: Kind::of(plane, &data),
            data,
            out,
            to: addr,
            dst_site: to,
        };
        if !self.up[from].offer(p) {
            self.counters[from].dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counters of site `i`.
    pub fn counters(&self, i: usize) -> &SiteCounters {
        &self.counters[i]
    }

    /// Number of sites.
    pub fn sites(&self) -> usize {
        self.down.len()
    }
}

async fn wait_until(at: Instant) {
    // Sleeping for less than a timer tick is not worth it: the link's clock runs ahead
    // anyway, so the long-run rate stays exact.
    if at > Instant::now() + Duration::from_millis(1) {
        tokio::time::sleep_until(at).await;
    }
}
