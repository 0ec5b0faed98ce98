//! Prometheus metrics (`[control] metrics_listen`): a read-only `GET /metrics` on its own TCP
//! listener, in the OpenMetrics text format, through `prometheus-client` (the crate
//! libp2p's own metrics use).
//!
//! Nothing is kept for metrics alone: each scrape reads the counters the daemon already keeps
//! (`Net::traffic`, the shapers' wait times, peers, bans, releases, windows, the store's
//! activation records) into a [`Snapshot`] and encodes it. Names follow Prometheus
//! conventions: a `p2pd_` prefix, base units (bytes, seconds) in the name, `_total` on
//! counters, labels for class and direction.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `p2pd_transfer_bytes_total` | counter | `class` (lan, wan), `direction` (sent, received) |
//! | `p2pd_chunks_verified_total`, `p2pd_chunks_failed_total` | counter | |
//! | `p2pd_patch_rebuilds_total` | counter | `outcome` (rebuilt, failed) |
//! | `p2pd_compression_saved_bytes_total` | counter | `direction` (sent, received): chunk bytes compression kept off the wire |
//! | `p2pd_peers` | gauge | `class` |
//! | `p2pd_peer_bans_total` | counter | |
//! | `p2pd_peers_banned` | gauge | |
//! | `p2pd_shaper_wait_seconds_total` | counter | `class`, `direction` |
//! | `p2pd_window_open` | gauge | `window` (download, install) |
//! | `p2pd_release_size_bytes`, `p2pd_release_stored_bytes` | gauge | `release`, `channel`, `version` |
//! | `p2pd_release_info` | gauge (1) | `release`, `channel`, `version`, `state`, `install` |
//! | `p2pd_activations` | gauge | `result` (installed, failed): releases whose last install ended so |
//! | `p2pd_cert_expiry_seconds` | gauge | | in a fleet with a root: until this node's certificate ends |
//! | `p2pd_clock_offset_seconds` | gauge | | the median of the peers' clocks minus this node's (alert beyond minutes) |
//! | `p2pd_fleet_nodes` | gauge | `release`, `state` | the fleet by state, as this node sees it |
//! | `p2pd_fleet_release_applied_ratio` | gauge | `release`, `channel`, `severity` | share of installing nodes that applied it |
//! | `p2pd_fleet_release_published_timestamp_seconds` | gauge | `release`, `channel`, `severity` | when it was published |
//! | `p2pd_fleet_release_halted_nodes` | gauge | `release`, `channel`, `severity` | nodes a ring's failures halted (the rings not started yet) |
//!
//! `deploy/prometheus/p2pd.rules.yml` holds the alerting rules over these (failures, a
//! stalled rollout, silent nodes, a critical release at risk of or past the 72-hour rule,
//! certificate expiry, a wrong clock), unit-tested with `promtool test rules`.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};

/// The OpenMetrics text format's content type: what Prometheus asks for first.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The classic Prometheus text format's content type: for every other client (`curl`,
/// `promtool check metrics`, older scrapers).
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Whether an `Accept` header asks for OpenMetrics.
pub fn wants_openmetrics(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| a.contains("application/openmetrics-text"))
}

/// OpenMetrics text as the classic Prometheus text format: a counter family is named with
/// its `_total` suffix in `# HELP` and `# TYPE` (as its samples are), and the `# UNIT` and
/// `# EOF` lines, which that format lacks, are dropped.
pub fn to_classic_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
        match meta {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                let suffix = if counters.contains(name) {
                    "_total"
                } else {
                    ""
                };
                out.push_str(&format!("{prefix}{name}{suffix} {tail}\n"));
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

/// Largest number of releases one scrape lists: a node serves a few dozen; this bounds the
/// answer if a store ever held many more.
pub const RELEASES_MAX: usize = 1000;

/// One release's figures.
#[derive(Debug, Clone)]
pub struct ReleaseSample {
    /// Release id, hex.
    pub release: String,
    /// Channel.
    pub channel: String,
    /// Version.
    pub version: u64,
    /// `fetching`, `paused`, `complete` or `failed`.
    pub state: String,
    /// Installation state, or `none` when the node does not install.
    pub install: String,
    /// Bytes of its unique chunks.
    pub size_bytes: u64,
    /// Of those, bytes stored.
    pub stored_bytes: u64,
}

/// One release's compliance figures, fleet-wide as this node sees them: what the alerting
/// rules (`deploy/prometheus/p2pd.rules.yml`) hold a critical release to.
#[derive(Debug, Clone)]
pub struct FleetReleaseSample {
    /// Release id, hex.
    pub release: String,
    /// Channel.
    pub channel: String,
    /// Severity.
    pub severity: String,
    /// When it was published, unix seconds.
    pub published_unix_s: i64,
    /// The share of the installing nodes that applied it (or a newer version).
    pub applied_ratio: f64,
    /// Installing nodes (with none the ratio says nothing and is not exported).
    pub installers: u64,
    /// Nodes its rollout's gate halted.
    pub halted_nodes: u64,
}

/// What one scrape reports.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Chunk bytes: (class, direction, bytes).
    pub transfer: Vec<(&'static str, &'static str, u64)>,
    /// Chunks verified.
    pub chunks_verified: u64,
    /// Chunks that failed verification.
    pub chunks_failed: u64,
    /// Files rebuilt from patches, and those a patch did not rebuild.
    pub rebuilds: (u64, u64),
    /// Bytes compression kept off the wire: (sent, received).
    pub compression_saved: (u64, u64),
    /// Connected data-plane peers: (class, count).
    pub peers: Vec<(&'static str, u64)>,
    /// Bans since start.
    pub bans: u64,
    /// Peers banned now.
    pub banned: u64,
    /// Time spent waiting for the shapers: (class, direction, seconds).
    pub shaper_wait: Vec<(&'static str, &'static str, f64)>,
    /// Windows: (name, open).
    pub windows: Vec<(&'static str, bool)>,
    /// Releases.
    pub releases: Vec<ReleaseSample>,
    /// Releases by the result of their last installation: (result, count).
    pub activations: Vec<(&'static str, u64)>,
    /// Data-plane control message bytes: (kind, class, direction, bytes).
    pub control: Vec<(&'static str, &'static str, &'static str, u64)>,
    /// The fleet, for the releases this node knows (the newest): (release, state, nodes).
    pub fleet: Vec<(String, &'static str, u64)>,
    /// The same releases' compliance figures.
    pub fleet_releases: Vec<FleetReleaseSample>,
    /// This node's rank among its site's aggregators (0 first), -1 if it does not aggregate.
    pub aggregator_rank: i64,
    /// Sites this node has figures of (its own and those with a summary).
    pub fleet_sites: u64,
    /// In a fleet with a root: seconds until this node's certificate ends (negative once it
    /// has); alert below 14 days (`protocol::cert::CERT_RENEW_BEFORE_S`).
    pub cert_expiry_s: Option<i64>,
    /// The median of the connected peers' clocks minus this node's, seconds (none without
    /// peers).
    pub clock_offset_s: Option<i64>,
}

impl Snapshot {
    /// The snapshot in the OpenMetrics text format.
    pub fn render(self) -> String {
        let mut registry = Registry::with_prefix("p2pd");
        registry.register_collector(Box::new(self));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry)
            .expect("writing to a String cannot fail");
        out
    }
}

type Labels = Vec<(&'static str, String)>;

fn family<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    kind: MetricType,
    samples: impl IntoIterator<Item = (Labels, M)>,
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, unit, kind)?;
    for (labels, m) in samples {
        m.encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

/// A family of one sample without labels.
fn single<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    m: M,
) -> Result<(), std::fmt::Error> {
    m.encode(encoder.encode_descriptor(name, help, None, kind)?)
}

impl Collector for Snapshot {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        self.encode_node(&mut e)?;
        self.encode_releases(&mut e)?;
        self.encode_fleet(&mut e)
    }
}

/// The labels of a sample by peer class and direction.
fn class_dir(c: &'static str, d: &'static str) -> Labels {
    vec![("class", c.to_string()), ("direction", d.to_string())]
}

/// The labels that name a release.
fn release_labels(r: &ReleaseSample) -> Labels {
    vec![
        ("release", r.release.clone()),
        ("channel", r.channel.clone()),
        ("version", r.version.to_string()),
    ]
}

impl Snapshot {
    /// The data plane's traffic, peers, bans, shaping and windows.
    fn encode_node(&self, e: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        use MetricType::{Counter, Gauge};
        family(
            e,
            "transfer",
            "Chunk bytes moved by the data plane as they crossed the wire (compressed where \
             they moved compressed), by peer class and direction.",
            Some(&Unit::Bytes),
            Counter,
            self.transfer
                .iter()
                .map(|&(c, d, v)| (class_dir(c, d), ConstCounter::new(v))),
        )?;
        single(
            e,
            "chunks_verified",
            "Chunks received whose bytes matched their id.",
            Counter,
            ConstCounter::new(self.chunks_verified),
        )?;
        single(
            e,
            "chunks_failed",
            "Chunks received that did not match their id or broke the protocol.",
            Counter,
            ConstCounter::new(self.chunks_failed),
        )?;
        family(
            e,
            "patch_rebuilds",
            "Files rebuilt from patches against earlier versions (rebuilt), and those whose \
             patch did not rebuild them, fetched as chunks instead (failed).",
            None,
            Counter,
            [("rebuilt", self.rebuilds.0), ("failed", self.rebuilds.1)]
                .into_iter()
                .map(|(outcome, n)| (vec![("outcome", outcome.to_string())], ConstCounter::new(n))),
        )?;
        family(
            e,
            "compression_saved",
            "Chunk bytes that compression kept off the wire (p2pd_transfer_bytes_total counts \
             what crossed it).",
            Some(&Unit::Bytes),
            Counter,
            [
                ("sent", self.compression_saved.0),
                ("received", self.compression_saved.1),
            ]
            .into_iter()
            .map(|(d, n)| (vec![("direction", d.to_string())], ConstCounter::new(n))),
        )?;
        family(
            e,
            "peers",
            "Connected data-plane peers, by class.",
            None,
            Gauge,
            self.peers
                .iter()
                .map(|&(c, n)| (vec![("class", c.to_string())], ConstGauge::new(n as i64))),
        )?;
        single(
            e,
            "peer_bans",
            "Peers banned for bad chunks since the daemon started.",
            Counter,
            ConstCounter::new(self.bans),
        )?;
        single(
            e,
            "peers_banned",
            "Peers banned now.",
            Gauge,
            ConstGauge::new(self.banned as i64),
        )?;
        family(
            e,
            "shaper_wait",
            "Time transfers waited for bandwidth tokens, by class and direction.",
            Some(&Unit::Seconds),
            Counter,
            self.shaper_wait
                .iter()
                .map(|&(c, d, s)| (class_dir(c, d), ConstCounter::new(s))),
        )?;
        family(
            e,
            "window_open",
            "Whether the node's download or install window is open now (1) or closed (0).",
            None,
            Gauge,
            self.windows.iter().map(|&(w, open)| {
                (
                    vec![("window", w.to_string())],
                    ConstGauge::new(i64::from(open)),
                )
            }),
        )?;
        Ok(())
    }

    /// The releases and installations.
    fn encode_releases(&self, e: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        use MetricType::Gauge;
        family(
            e,
            "release_size",
            "Bytes of a release's unique chunks.",
            Some(&Unit::Bytes),
            Gauge,
            self.releases
                .iter()
                .map(|r| (release_labels(r), ConstGauge::new(r.size_bytes as i64))),
        )?;
        family(
            e,
            "release_stored",
            "Bytes of a release's unique chunks this node has verified and stored.",
            Some(&Unit::Bytes),
            Gauge,
            self.releases
                .iter()
                .map(|r| (release_labels(r), ConstGauge::new(r.stored_bytes as i64))),
        )?;
        family(
            e,
            "release_info",
            "A release on this node, with its fetch and install state as labels (always 1).",
            None,
            Gauge,
            self.releases.iter().map(|r| {
                let mut l = release_labels(r);
                l.push(("state", r.state.clone()));
                l.push(("install", r.install.clone()));
                (l, ConstGauge::new(1))
            }),
        )?;
        family(
            e,
            "activations",
            "Releases whose last installation on this node ended with this result.",
            None,
            Gauge,
            self.activations
                .iter()
                .map(|&(r, n)| (vec![("result", r.to_string())], ConstGauge::new(n as i64))),
        )?;
        Ok(())
    }

    /// The control plane and the fleet.
    fn encode_fleet(&self, e: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        use MetricType::{Counter, Gauge};
        family(
            e,
            "control",
            "Bytes of data-plane control messages (frames, without their QUIC packets), by \
             message kind, peer class and direction.",
            Some(&Unit::Bytes),
            Counter,
            self.control.iter().map(|&(k, c, d, v)| {
                let mut l = class_dir(c, d);
                l.insert(0, ("kind", k.to_string()));
                (l, ConstCounter::new(v))
            }),
        )?;
        family(
            e,
            "fleet_nodes",
            "Nodes of the fleet by where a release stands on them (this node's view: its \
             site's records and the other sites' summaries).",
            None,
            Gauge,
            self.fleet.iter().map(|(r, st, n)| {
                (
                    vec![("release", r.clone()), ("state", st.to_string())],
                    ConstGauge::new(*n as i64),
                )
            }),
        )?;
        let labels = |r: &FleetReleaseSample| {
            vec![
                ("release", r.release.clone()),
                ("channel", r.channel.clone()),
                ("severity", r.severity.clone()),
            ]
        };
        family(
            e,
            "fleet_release_applied_ratio",
            "The share of the fleet's installing nodes that applied a release or a newer \
             version of its channel (the compliance report's figure; a critical release is \
             held to 99 % within 72 hours of publishing).",
            None,
            Gauge,
            self.fleet_releases
                .iter()
                .filter(|r| r.installers > 0)
                .map(|r| (labels(r), ConstGauge::new(r.applied_ratio))),
        )?;
        family(
            e,
            "fleet_release_halted_nodes",
            "Nodes a release's rollout halted: a ring failed over its gate's limit, and the \
             rings not started yet wait.",
            None,
            Gauge,
            self.fleet_releases
                .iter()
                .map(|r| (labels(r), ConstGauge::new(r.halted_nodes as i64))),
        )?;
        family(
            e,
            "fleet_release_published_timestamp_seconds",
            "When a release was published (its manifest's creation time), unix seconds.",
            None,
            Gauge,
            self.fleet_releases
                .iter()
                .map(|r| (labels(r), ConstGauge::new(r.published_unix_s))),
        )?;
        single(
            e,
            "site_aggregator_rank",
            "This node's rank among its site's aggregators (0 publishes the site's summary), \
             -1 when it does not aggregate.",
            Gauge,
            ConstGauge::new(self.aggregator_rank),
        )?;
        single(
            e,
            "fleet_sites",
            "Sites this node has figures of: its own and those whose summary it holds.",
            Gauge,
            ConstGauge::new(self.fleet_sites as i64),
        )?;
        if let Some(s) = self.cert_expiry_s {
            single(
                e,
                "cert_expiry_seconds",
                "Seconds until this node's certificate from the fleet CA ends (renew it 14 days before).",
                Gauge,
                ConstGauge::new(s),
            )?;
        }
        if let Some(s) = self.clock_offset_s {
            single(
                e,
                "clock_offset_seconds",
                "The median of the connected peers' clocks minus this node's (minutes off: fix the clock; releases look expired or not yet made).",
                Gauge,
                ConstGauge::new(s),
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_renders_conventional_names_with_labels_and_an_end() {
        let s = Snapshot {
            transfer: vec![("lan", "received", 1024), ("wan", "sent", 7)],
            chunks_verified: 16,
            shaper_wait: vec![("wan", "received", 1.5)],
            windows: vec![("download", true), ("install", false)],
            releases: vec![ReleaseSample {
                release: "ab".repeat(32),
                channel: "security/openssl".into(),
                version: 3,
                state: "complete".into(),
                install: "installed".into(),
                size_bytes: 100,
                stored_bytes: 100,
            }],
            cert_expiry_s: Some(86_400),
            clock_offset_s: Some(-3600),
            fleet_releases: vec![
                FleetReleaseSample {
                    release: "cd".repeat(32),
                    channel: "security/openssl".into(),
                    severity: "critical".into(),
                    published_unix_s: 1_795_392_000,
                    applied_ratio: 0.5,
                    halted_nodes: 3,
                    installers: 4,
                },
                // No installing node: no share to speak of.
                FleetReleaseSample {
                    release: "ef".repeat(32),
                    channel: "apps/x".into(),
                    severity: "low".into(),
                    published_unix_s: 1_795_392_000,
                    applied_ratio: 0.0,
                    halted_nodes: 0,
                    installers: 0,
                },
            ],
            ..Snapshot::default()
        };
        let text = s.render();
        let cd = "cd".repeat(32);
        assert!(
            text.contains(&format!(
                "p2pd_fleet_release_applied_ratio{{release=\"{cd}\",channel=\"security/openssl\",severity=\"critical\"}} 0.5"
            )),
            "{text}"
        );
        assert!(!text.contains(&format!("applied_ratio{{release=\"{}\"", "ef".repeat(32))));
        assert!(
            text.contains("p2pd_fleet_release_published_timestamp_seconds{release=\""),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "p2pd_fleet_release_halted_nodes{{release=\"{cd}\",channel=\"security/openssl\",severity=\"critical\"}} 3"
            )),
            "{text}"
        );
        assert!(text.contains("p2pd_cert_expiry_seconds 86400"), "{text}");
        assert!(text.contains("p2pd_clock_offset_seconds -3600"), "{text}");
        let classic = to_classic_text(&text);
        for line in [
            "# HELP p2pd_transfer_bytes_total Chunk bytes moved",
            "# TYPE p2pd_transfer_bytes_total counter",
            "p2pd_transfer_bytes_total{class=\"lan\",direction=\"received\"} 1024",
            "# TYPE p2pd_window_open gauge",
        ] {
            assert!(classic.contains(line), "{line:?} missing from:\n{classic}");
        }
        assert!(!classic.contains("# EOF") && !classic.contains("# UNIT"));
        assert!(wants_openmetrics(Some(
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
        )));
        assert!(!wants_openmetrics(Some("*/*")) && !wants_openmetrics(None));
        for line in [
            "# TYPE p2pd_transfer_bytes counter",
            "p2pd_transfer_bytes_total{class=\"lan\",direction=\"received\"} 1024",
            "p2pd_chunks_verified_total 16",
            "p2pd_shaper_wait_seconds_total{class=\"wan\",direction=\"received\"} 1.5",
            "p2pd_window_open{window=\"install\"} 0",
            "p2pd_release_stored_bytes{release=\"",
            "state=\"complete\",install=\"installed\"} 1",
            "# EOF",
        ] {
            assert!(text.contains(line), "{line:?} missing from:\n{text}");
        }
    }
}
