//! The emulated WAN: a UDP relay in the harness process through which every cross-site
//! data-plane packet passes, shaped per site.
//!
//! Each node gets a *WAN port* on the relay and advertises it as its `advertise_wan` address,
//! so peers of other sites dial the relay while peers of its own site dial the node directly
//! (the LAN, unshaped). A packet from node A (site a) to node B (site b) leaves through site
//! a's uplink and enters through site b's downlink, each a FIFO link with a rate, a bounded
//! queue (packets that would wait longer than [`QUEUE_DELAY_MAX`] are dropped, like a router
//! tail-drop, so QUIC's congestion control sees a real bottleneck) and, on the downlink, a
//! one-way latency. The relay counts the bytes each site sends and receives: these are the
//! WAN figures the testnet reports, measured outside the nodes.

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

/// Bytes counted per site.
#[derive(Debug, Default)]
pub struct SiteCounters {
    /// UDP payload bytes that left the site over the WAN.
    pub sent: AtomicU64,
    /// UDP payload bytes that entered the site over the WAN.
    pub received: AtomicU64,
    /// Packets dropped at this site's links.
    pub dropped: AtomicU64,
}

struct Packet {
    data: Vec<u8>,
    out: Arc<UdpSocket>,
    to: SocketAddr,
    dst_site: usize,
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
    /// Starts the links for `sites`; `nodes` maps every node's data-plane address to its site
    /// index.
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
                    counters[site]
                        .received
                        .fetch_add(p.data.len() as u64, Ordering::Relaxed);
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

    /// Opens the WAN port of the node at `node_addr` (site `site`); returns its address.
    pub async fn open_port(
        self: &Arc<Self>,
        node_addr: SocketAddr,
        site: usize,
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
                                wan2.send(site, src_site, buf[..n].to_vec(), public2.clone(), src);
                            }
                        });
                        f
                    }
                };
                wan.send(src_site, site, buf[..n].to_vec(), flow, node_addr);
            }
        });
        Ok(addr)
    }

    fn send(&self, from: usize, to: usize, data: Vec<u8>, out: Arc<UdpSocket>, addr: SocketAddr) {
        let p = Packet {
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
