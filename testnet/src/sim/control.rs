//! What the control plane costs in the simulator: every control message the daemon sends
//! during a release, sized by the product's own encoders ([`protocol::wire::frame`] of a
//! real [`Control`], real signed status records and site summaries made by
//! [`protocol::summary::site_releases`]), sent at the daemon's cadence
//! ([`scheduler::control`]), with the QUIC overhead the WAN sees per message
//! ([`protocol::wire::PACKET_OVERHEAD_BYTES`], an acknowledgement back).
//!
//! What the engine sends, and when:
//! * **At the start** (and when a node comes back): a [`Control::Bitmap`] to every other
//!   member of its site, a [`Control::Offer`] and a [`Control::Want`] of its designated
//!   chunks to each WAN peer, its status record to its site's aggregators.
//! * **At each checkpoint**: a [`Control::Have`] of the new chunks to every member still
//!   fetching (an upper bound: the daemon skips members that said they hold them); to each
//!   WAN peer the new chunks it is designated for, batched as the daemon batches them
//!   ([`WAN_HAVE_INTERVAL`]); a progress record when [`Cadence::status`] says one is due.
//! * **At completion**: a state record, and an empty [`Control::Want`] to each WAN peer.
//! * **Site summaries**: each site's first aggregator publishes when
//!   [`Cadence::summary`] says so, polled every [`SUMMARY_FORWARD_DELAY`] over the news its
//!   members' records brought (replayed after the run: nothing in the data plane waits for
//!   a summary). Each publication reaches every other site once over the overlay of
//!   aggregators ([`OVERLAY_DEGREE`]): the summary itself, an [`Control::Ihave`] on each
//!   overlay link and one [`Control::Iwant`].
//!
//! Control bytes are charged on the sender's links (its NIC on the LAN, its site's uplink
//! across the WAN), so they delay chunks behind them; the receiving side's links are not
//! charged (they belong to another partition), which at under 0.1 % of the bytes changes
//! nothing measurable.
//!
//! The steady state (no release moving) is computed from the same constants
//! ([`steady_state`]): status heartbeats on the LAN, summary heartbeats across the WAN, and
//! the QUIC keep-alives of every connection the fleet holds open.

use protocol::status::{ReleaseState, ReleaseStatus, SignedStatus, StatusBody};
use protocol::summary::{Contact, SignedSummary, SummaryBody, site_releases};
use protocol::wire::{ACK_PACKET_BYTES, PACKET_OVERHEAD_BYTES};
use protocol::wire::{Control, frame};
use protocol::{NodeId, ReleaseId};
use scheduler::control::KEEP_ALIVE;
use scheduler::control::{
    Cadence, News, OVERLAY_DEGREE, STATUS_HEARTBEAT, SUMMARY_FORWARD_DELAY, SUMMARY_HEARTBEAT,
    WAN_HAVE_INTERVAL,
};
use serde::Serialize;

/// The daemon's [`WAN_HAVE_INTERVAL`] in nanoseconds.
pub const WAN_HAVE_INTERVAL_NS: u64 = WAN_HAVE_INTERVAL.as_nanos() as u64;

/// Bytes of a bincode variable-length integer (the control stream's encoding).
pub fn varint_len(v: u64) -> u64 {
    match v {
        0..=250 => 1,
        251..=0xffff => 3,
        0x1_0000..=0xffff_ffff => 5,
        _ => 9,
    }
}

/// Sizes of the control messages of one release, in frame bytes (length prefix included).
#[derive(Debug, Clone)]
pub struct Costs {
    /// A bitmap of the release (its bits do not change its size).
    pub bitmap: u64,
    /// An offer of the release.
    pub offer: u64,
    /// A have of no index (what each index adds is its [`varint_len`]).
    have_empty: u64,
    /// An empty want (a member that is complete).
    pub want_done: u64,
    /// A status record of one release, signed, in a [`Control::Status`].
    pub record: u64,
    /// An [`Control::Ihave`] and an [`Control::Iwant`] of one summary.
    pub ihave: u64,
    /// See `ihave`.
    pub iwant: u64,
    /// A release's number of chunks.
    chunks: u32,
}

fn release_status(chunks: u32, state: ReleaseState) -> ReleaseStatus {
    ReleaseStatus {
        release: ReleaseId([7; 32]),
        channel: "security/windows-2025".into(),
        version: 2_026_120_301,
        published_unix_s: 1_796_000_000,
        severity: protocol::Severity::Critical,
        state,
        chunks_have: chunks / 2,
        chunks_total: chunks,
        since_unix_s: 1_796_000_100,
        until_unix_s: None,
        error: None,
        ring: 0,
    }
}

fn record(node: u8, site: &str, chunks: u32, state: ReleaseState) -> (StatusBody, SignedStatus) {
    let key = ed25519_dalek::SigningKey::from_bytes(&[node.max(1); 32]);
    let body = StatusBody {
        node: NodeId(key.verifying_key().to_bytes()),
        site: site.into(),
        installs: true,
        seq: 1_796_000_100_000,
        at_unix_s: 1_796_000_100,
        releases: vec![release_status(chunks, state)],
    };
    let signed = SignedStatus::sign(&body, &key);
    (body, signed)
}

impl Costs {
    /// The sizes for a release of `chunks` chunks.
    pub fn new(chunks: u32) -> Self {
        let len = |c: &Control| frame(c).len() as u64;
        let (_, signed) = record(1, "branch-000", chunks, ReleaseState::Downloading);
        Self {
            bitmap: len(&Control::Bitmap {
                release: ReleaseId([7; 32]),
                slot: 1,
                chunk_count: chunks,
                bits: vec![0; chunks.div_ceil(8) as usize],
                reserve: false,
            }),
            offer: len(&Control::Offer {
                release: ReleaseId([7; 32]),
                slot: 1,
                chunk_count: chunks,
                reserve: false,
            }),
            have_empty: len(&Control::Have {
                slot: 1,
                indices: Vec::new(),
            }),
            want_done: len(&Control::want(1, [])),
            record: len(&Control::Status(signed.encode())),
            ihave: len(&Control::Ihave(vec![(u64::MAX / 3, 1_796_000_100_000)])),
            iwant: len(&Control::Iwant(vec![(u64::MAX / 3, 1_796_000_100_000)])),
            chunks,
        }
    }

    /// A have of `indices`.
    pub fn have(&self, indices: impl IntoIterator<Item = u32>) -> u64 {
        let mut n = 0u64;
        let mut bytes = self.have_empty - 1;
        for i in indices {
            n += 1;
            bytes += varint_len(u64::from(i));
        }
        bytes + varint_len(n)
    }

    /// A want of `indices` (sorted).
    pub fn want(&self, indices: impl IntoIterator<Item = u32>) -> u64 {
        frame(&Control::want(1, indices)).len() as u64
    }

    /// A site summary of a site of `members` nodes, one release, signed, in a
    /// [`Control::Summaries`], as the aggregator makes it from its members' records.
    pub fn summary(&self, site: &str, members: u32) -> u64 {
        let states = [
            ReleaseState::Downloading,
            ReleaseState::Complete,
            ReleaseState::Activated,
        ];
        let bodies: Vec<StatusBody> = (0..members.min(protocol::summary::SITE_NODES_MAX))
            .map(|k| record(k as u8, site, self.chunks, states[k as usize % 3]).0)
            .collect();
        let refs: Vec<&StatusBody> = bodies.iter().collect();
        let key = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
        let contact = Contact {
            node: NodeId(key.verifying_key().to_bytes()),
            wan: "203.0.113.17:4433".parse().expect("an address"),
        };
        let body = SummaryBody {
            site: site.into(),
            aggregator: contact.node,
            seq: 1_796_000_100_000,
            at_unix_s: 1_796_000_100,
            nodes: members,
            installers: members,
            contacts: vec![contact.clone(), contact],
            releases: site_releases(&refs, None),
        };
        let signed = SignedSummary::sign(&body, &key);
        frame(&Control::Summaries(vec![signed.encode()])).len() as u64
    }
}

/// How long after the run's last event summaries are still counted: the news of the last
/// completions goes out once it settled and the least interval passed.
pub const SUMMARY_FLUSH_MS: u64 = (scheduler::control::SUMMARY_SETTLE.as_millis()
    + scheduler::control::SUMMARY_MIN_INTERVAL_BOUNDS
        .1
        .as_millis()) as u64;

/// A message of `frame` bytes as the WAN carries it: the packet it travels in.
pub fn on_wan(frame: u64) -> u64 {
    frame + PACKET_OVERHEAD_BYTES
}

/// Overlay neighbours of an aggregator in a fleet of `sites` sites: the
/// [`OVERLAY_DEGREE`] it picks and about as many that pick it.
pub fn overlay_neighbours(sites: usize) -> u64 {
    (2 * OVERLAY_DEGREE).min(sites.saturating_sub(1)) as u64
}

/// What one publication of a site's summary costs each other site's WAN, each way (about
/// as much goes out as comes in: every site forwards about one copy): the summary, an
/// Ihave on half its overlay links, its Iwant, and their acknowledgements.
pub fn flood_bytes(costs: &Costs, summary: u64, sites: usize) -> u64 {
    let links = overlay_neighbours(sites).div_ceil(2);
    on_wan(summary)
        + links * on_wan(costs.ihave)
        + on_wan(costs.iwant)
        + (2 + links) * ACK_PACKET_BYTES
}

/// How many summaries a site with its members' news at `news` (milliseconds, with what
/// each was) publishes until `end_ms`, polled as the daemon polls
/// ([`SUMMARY_FORWARD_DELAY`]).
pub fn summaries_published(news: &mut [(u64, News)], sites: usize, end_ms: u64) -> u64 {
    news.sort_unstable();
    let step = SUMMARY_FORWARD_DELAY.as_millis() as u64;
    let mut cadence = Cadence::summary(sites);
    let mut published = 0;
    let mut next = 0;
    let mut pending = News::None;
    let mut t = 0;
    while t <= end_ms {
        while next < news.len() && news[next].0 <= t {
            pending = pending.max(news[next].1);
            next += 1;
        }
        if cadence.poll(t, pending) {
            published += 1;
            pending = News::None;
        }
        if next == news.len() && pending == News::None {
            if let Some(last) = cadence.last_ms() {
                // Only heartbeats from here on.
                published += end_ms.saturating_sub(last) / SUMMARY_HEARTBEAT.as_millis() as u64;
                break;
            }
        }
        t += step;
    }
    published
}

/// Bytes per second one open connection's keep-alives cost each way: per keep-alive
/// interval, each end sends a PING and acknowledges the other's.
pub fn keepalive_bytes_per_s() -> f64 {
    (on_wan(1) + ACK_PACKET_BYTES) as f64 / KEEP_ALIVE.as_secs_f64()
}

/// The control plane of an idle fleet (no release moving), per site and per node.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct SteadyState {
    /// Bits per second into the busiest site across its WAN, and out of it.
    pub site_wan_in_bit_s: f64,
    /// See `site_wan_in_bit_s`.
    pub site_wan_out_bit_s: f64,
    /// Of the WAN figure, the keep-alives of the connections members hold to other sites.
    pub site_wan_keepalive_bit_s: f64,
    /// Bits per second the busiest node sends (LAN and WAN).
    pub node_bit_s: f64,
    /// Of which keep-alives.
    pub node_keepalive_bit_s: f64,
}

/// The steady state of a site whose members hold `wan_connections` connections to other
/// sites between them, whose busiest member holds `node_connections` (LAN and
/// WAN), in a fleet of `sites` sites whose summaries are `summary` bytes.
pub fn steady_state(
    costs: &Costs,
    wan_connections: u64,
    node_connections: u64,
    summary: u64,
    sites: usize,
) -> SteadyState {
    let per_conn_each_way = keepalive_bytes_per_s() * 8.0;
    let summaries =
        sites.saturating_sub(1) as f64 * flood_bytes(costs, summary, sites) as f64 * 8.0
            / SUMMARY_HEARTBEAT.as_secs_f64();
    let keep_site = wan_connections as f64 * per_conn_each_way;
    // A member sends its record to the two aggregators every heartbeat; the first aggregator
    // (the busiest node) also takes in and passes on every site's summary heartbeat.
    let records = 2.0 * costs.record as f64 * 8.0 / STATUS_HEARTBEAT.as_secs_f64();
    let keep_node = node_connections as f64 * per_conn_each_way;
    SteadyState {
        site_wan_in_bit_s: keep_site + summaries,
        site_wan_out_bit_s: keep_site + summaries,
        site_wan_keepalive_bit_s: keep_site,
        node_bit_s: keep_node + records + summaries,
        node_keepalive_bit_s: keep_node,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_have_model_is_the_encoder() {
        let c = Costs::new(16_384);
        for indices in [vec![0u32], vec![5, 250, 251, 16_000], (0..300).collect()] {
            let real = frame(&Control::Have {
                slot: 1,
                indices: indices.clone(),
            })
            .len() as u64;
            assert_eq!(c.have(indices.iter().copied()), real, "{indices:?}");
        }
    }

    #[test]
    fn a_summary_is_a_few_hundred_bytes_whatever_the_site_size() {
        let c = Costs::new(16_384);
        let small = c.summary("branch-001", 10);
        let big = c.summary("branch-001", 50);
        assert!(small < 1024, "{small}");
        assert!(big < small + 64, "counts, not nodes: {small} then {big}");
        assert!(c.record > 150 && c.record < 600, "{}", c.record);
    }

    #[test]
    fn summaries_follow_the_cadence_and_heartbeat_when_idle() {
        // Ten members change state within 20 s, once: the first summary waits to settle,
        // and the changes after it come in the next one.
        let mut news: Vec<(u64, News)> = (0..10).map(|k| (k * 2_000, News::State)).collect();
        let n = summaries_published(&mut news, 500, 600_000);
        assert_eq!(n, 2, "{n}");
        // Nothing at all for ten hours: a heartbeat an hour (the first at once).
        let idle = summaries_published(&mut [], 500, 10 * 3_600_000);
        assert!((10..=11).contains(&idle), "{idle}");
    }
}
