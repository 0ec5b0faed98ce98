//! The bank's month in minutes (`testnet month SCENARIO`): hundreds of sites of tens of
//! endpoints, hundreds of releases over weeks, install windows per site, failed installs,
//! endpoints silent for a day and endpoints that join late; the control plane that carries
//! their state to one node's compliance report, run with the product's code; and the report
//! compared, release by release, with what every endpoint really did.
//!
//! What is the product's code here, and what is modelled:
//!
//! * **Which versions an endpoint fetches and installs** is [`scheduler::versions`]: an
//!   endpoint that learns several versions of a channel at once (it joined late, or was away)
//!   fetches and installs only the newest; the others are `superseded`.
//! * **When an install may run** is the site's `[windows] install`, read through
//!   [`scheduler::window::WindowCache`] as the daemon reads it.
//! * **Status records**: each endpoint's [`Publisher::status`] decides when a record goes out
//!   and which releases it carries ([`Publisher::pick_statuses`]); the site's aggregator
//!   merges it ([`Fleet::keep_record`], every check the daemon makes but the signature's).
//! * **Site summaries**: the aggregator's figures ([`Fleet::own_figures`]) and its
//!   [`Publisher::summary`] ([`Publisher::pick_site_releases`]) make each summary, signed;
//!   the observing node (the first site's aggregator) takes every other site's summaries
//!   with [`Fleet::offer_summary`], verifying each, and makes the report with
//!   [`Fleet::releases_since`] and [`Fleet::compliance`], as `p2pctl report` does.
//!
//! Modelled: when an endpoint hears of a release (seconds after publishing), how long a
//! download takes (the release over the site's WAN share, then the LAN), how long an
//! install takes, and which installs fail. A status heartbeat that carries no change is not
//! composed: before each summary the aggregator is given, for every endpoint that is up, a
//! record at its latest heartbeat that names no release (merging the settled entries a real
//! heartbeat repeats changes nothing), so liveness and silence are exact without composing
//! millions of records that change nothing. A site's two aggregators hold the same records;
//! one publisher stands for both.
//!
//! What crosses each site's WAN for status is counted from the product's encoders
//! ([`super::control`]): every summary reaches every other site once over the overlay of
//! aggregators, with its announcements and acknowledgements, and the overlay's connections
//! send keep-alives when idle (QUIC sends one only after `KEEP_ALIVE` with nothing sent, so
//! they are counted over the gaps between the floods each link carries). The release traffic's own control messages (offers, wants, haves) are
//! estimated per release from the same encoders.
//!
//! Sites are independent but for the summaries the observer takes, so they run on every
//! core; the observer's table is the product's, behind its own lock.

use super::control::{Costs, flood_bytes, keepalive_bytes_per_s, on_wan, overlay_neighbours};
use protocol::status::{ReleaseState, ReleaseStatus, StatusBody};
use protocol::summary::{CRITICAL_DEADLINE_S, Contact, SignedSummary, SiteRelease, SummaryBody};
use protocol::wire::ACK_PACKET_BYTES;
use protocol::{NodeId, ReleaseId, Severity};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use scheduler::control::{
    KEEP_ALIVE, News, STATUS_HEARTBEAT, SUMMARY_FORWARD_DELAY, aggregators, site_key,
};
use scheduler::ledger::{Publisher, SummaryContent};
use scheduler::policy::WindowsSection;
use scheduler::versions::{Standing, superseded_by, to_install};
use scheduler::window::{Window, WindowCache, WindowState};
use serde::{Deserialize, Serialize};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use store::fleet::{ComplianceRow, Fleet};

/// A month scenario.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonthScenario {
    /// Name, for reports.
    pub name: String,
    /// Seed of everything random.
    #[serde(default)]
    pub seed: u64,
    /// The wall clock at the start (RFC 3339); windows read it.
    #[serde(default = "default_start")]
    pub start: String,
    /// Sites.
    pub sites: usize,
    /// Endpoints per site (every one installs).
    pub nodes_per_site: usize,
    /// Releases published over `days`.
    pub releases: usize,
    /// Days of publishing; the report is made `report_after_s` after the last day ends.
    pub days: f64,
    /// Channels the releases are spread over (a release is the next version of its channel).
    #[serde(default = "default_channels")]
    pub channels: usize,
    /// Share of releases that are critical (the 72-hour rule).
    #[serde(default = "default_critical")]
    pub critical_share: f64,
    /// Share of releases that are large.
    #[serde(default = "default_large")]
    pub large_share: f64,
    /// Size of a small release, MiB.
    #[serde(default = "default_small_mib")]
    pub small_mib: f64,
    /// Size of a large release, MiB.
    #[serde(default = "default_large_mib")]
    pub large_mib: f64,
    /// Share of installs that fail.
    #[serde(default = "default_fail")]
    pub install_fail_share: f64,
    /// Share of endpoints that are off for `silent_days` once, at a random time.
    #[serde(default = "default_silent")]
    pub silent_share: f64,
    /// How long a silent endpoint is off, days.
    #[serde(default = "default_silent_days")]
    pub silent_days: f64,
    /// Share of endpoints that join at a random time of the month instead of at its start.
    #[serde(default = "default_late")]
    pub late_share: f64,
    /// The WAN share a site's downloads get, Mbit/s.
    #[serde(default = "default_wan")]
    pub site_wan_mbit: f64,
    /// Each endpoint's LAN link, Mbit/s.
    #[serde(default = "default_lan")]
    pub lan_mbit: f64,
    /// Each site's `[windows]`, as in p2pd.toml; sites take the zones of `zones` in turn.
    #[serde(default)]
    pub windows: WindowsSection,
    /// Zones the sites are in, in turn (empty: every site in `windows.zone`).
    #[serde(default)]
    pub zones: Vec<String>,
    /// How long after the month the report is made; nothing changes on the endpoints in
    /// between, the control plane settles.
    #[serde(default = "default_report_after")]
    pub report_after_s: i64,
    /// Seconds without a record after which an endpoint is silent (`[node] silent_after_s`).
    #[serde(default = "default_silent_after")]
    pub silent_after_s: i64,
}

fn default_start() -> String {
    "2026-11-02T00:00:00Z".into()
}
fn default_channels() -> usize {
    60
}
fn default_critical() -> f64 {
    0.1
}
fn default_large() -> f64 {
    0.05
}
fn default_small_mib() -> f64 {
    4.0
}
fn default_large_mib() -> f64 {
    600.0
}
fn default_fail() -> f64 {
    0.002
}
fn default_silent() -> f64 {
    0.01
}
fn default_silent_days() -> f64 {
    1.0
}
fn default_late() -> f64 {
    0.02
}
fn default_wan() -> f64 {
    20.0
}
fn default_lan() -> f64 {
    1000.0
}
fn default_report_after() -> i64 {
    600
}
fn default_silent_after() -> i64 {
    store::fleet::SILENT_AFTER.as_secs() as i64
}

impl MonthScenario {
    /// Reads a scenario file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        crate::scenario::load_with(path, Self::parse)
    }

    /// Parses and checks a scenario.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let s: Self = toml::from_str(text)?;
        anyhow::ensure!(s.sites >= 1 && s.sites <= 10_000, "sites: 1 to 10,000");
        anyhow::ensure!(
            s.nodes_per_site >= 1 && s.nodes_per_site <= 1_000,
            "nodes_per_site: 1 to 1,000"
        );
        anyhow::ensure!(
            s.releases >= 1 && s.releases <= scheduler::ledger::RELEASES_KEPT_MAX,
            "releases: 1 to {}",
            scheduler::ledger::RELEASES_KEPT_MAX
        );
        anyhow::ensure!(s.days > 0.0 && s.days <= 90.0, "days: above 0, at most 90");
        anyhow::ensure!(s.channels >= 1, "channels: at least 1");
        for (name, v) in [
            ("critical_share", s.critical_share),
            ("large_share", s.large_share),
            ("install_fail_share", s.install_fail_share),
            ("silent_share", s.silent_share),
            ("late_share", s.late_share),
        ] {
            anyhow::ensure!((0.0..=1.0).contains(&v), "{name}: from 0 to 1");
        }
        anyhow::ensure!(
            s.site_wan_mbit > 0.0 && s.lan_mbit > 0.0,
            "site_wan_mbit, lan_mbit: above 0"
        );
        anyhow::ensure!(s.silent_after_s >= 10, "silent_after_s: at least 10");
        s.start
            .parse::<jiff::Timestamp>()
            .map_err(|e| anyhow::anyhow!("start: {e}"))?;
        for z in &s.zones {
            scheduler::zone(z).map_err(|e| anyhow::anyhow!("zones: {e}"))?;
        }
        s.windows
            .windows()
            .map_err(|(k, e)| anyhow::anyhow!("{k}: {e}"))?;
        Ok(s)
    }

    fn start_unix_s(&self) -> i64 {
        self.start
            .parse::<jiff::Timestamp>()
            .map(|t| t.as_second())
            .unwrap_or(0)
    }
}

/// A release of the month.
#[derive(Debug, Clone)]
struct Rel {
    id: ReleaseId,
    channel: usize,
    channel_name: String,
    version: u64,
    severity: Severity,
    /// Seconds from the start.
    published_s: i64,
    bytes: u64,
    chunks: u32,
}

fn releases(sc: &MonthScenario) -> Vec<Rel> {
    let mut rng = ChaCha8Rng::seed_from_u64(sc.seed ^ 0x006d_6f6e_7468);
    let span = (sc.days * 86_400.0) as i64;
    let mut times: Vec<i64> = (0..sc.releases)
        .map(|_| rng.random_range(0..span))
        .collect();
    times.sort_unstable();
    let mut versions = vec![0u64; sc.channels];
    times
        .into_iter()
        .enumerate()
        .map(|(i, published_s)| {
            let channel = rng.random_range(0..sc.channels);
            versions[channel] += 1;
            let severity = if rng.random_bool(sc.critical_share) {
                Severity::Critical
            } else {
                [Severity::Low, Severity::Medium, Severity::High][rng.random_range(0..3)]
            };
            let mib = if rng.random_bool(sc.large_share) {
                sc.large_mib
            } else {
                sc.small_mib
            };
            let bytes = (mib * 1_048_576.0) as u64;
            let mut id = [0u8; 32];
            id.copy_from_slice(
                blake3::hash(format!("{}-{}-{i}", sc.name, sc.seed).as_bytes()).as_bytes(),
            );
            Rel {
                id: ReleaseId(id),
                channel,
                channel_name: format!("security/channel-{channel:03}"),
                version: versions[channel],
                severity,
                published_s,
                bytes,
                chunks: bytes.div_ceil(64 << 10) as u32,
            }
        })
        .collect()
}

/// One endpoint's plan: when it joins, when it is away.
#[derive(Debug, Clone)]
struct Plan {
    /// Its signing key (its summaries, when it aggregates), and its id.
    key: ed25519_dalek::SigningKey,
    id: NodeId,
    /// Seconds from the start.
    joins_s: i64,
    /// Seconds from the start: off from, back at.
    away: Option<(i64, i64)>,
    /// Per release: whether its install fails.
    fails: Vec<bool>,
}

/// What the simulation keeps beside an endpoint's status entry of a release.
#[derive(Debug, Clone)]
struct Meta {
    /// The release's index in the month.
    rel: usize,
    /// A download's start and end, ms from the start; bumped `generation` cancels events.
    download: Option<(u64, u64)>,
    generation: u32,
    /// An install is under way or waiting for the window.
    install_pending: bool,
}

#[derive(Debug)]
struct Node {
    plan: Plan,
    up: bool,
    joined: bool,
    /// By release index: the entry's place in `statuses` and `meta`.
    entries: Vec<Option<usize>>,
    /// What the endpoint's status lists: every release it knows, in the order it learnt them.
    statuses: Vec<ReleaseStatus>,
    meta: Vec<Meta>,
    /// Per channel, its entries.
    by_channel: Vec<Vec<usize>>,
    publisher: Publisher<ReleaseId, (ReleaseState, u32)>,
    state_news: bool,
    check_at: Option<u64>,
    /// The latest record's time, unix seconds.
    last_record_s: Option<i64>,
    seq: u64,
}

/// What happens to a site at an instant (events of the same instant run in the order they
/// were queued).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    /// An endpoint hears of a release (verified).
    Learn { node: u32, rel: u32 },
    /// A download ends (ignored if its generation was cancelled).
    DownloadDone {
        node: u32,
        entry: u32,
        generation: u32,
    },
    /// An install may start if the window is open (else it waits for the window).
    InstallTry { node: u32, entry: u32 },
    /// An install ends: installed, or failed.
    InstallDone { node: u32, entry: u32 },
    /// An endpoint goes off (silent for a while).
    Away { node: u32 },
    /// It comes back.
    Back { node: u32 },
    /// It joins the fleet.
    Join { node: u32 },
    /// Its status publisher looks whether a record is due.
    NodeCheck { node: u32 },
    /// The site's aggregator looks whether a summary is due.
    SiteCheck,
}

/// What the month's control plane cost one site, and what it did.
#[derive(Debug, Clone, Default)]
struct SiteCost {
    summaries: u64,
    /// Of those, by the news they carried: heartbeats (nothing new), progress, a state.
    summaries_by_news: [u64; 3],
    summary_bytes: u64,
    /// Bytes of [`flood_bytes`] over this site's summaries: what each other site's WAN
    /// carries for them, each way.
    flood_bytes: u64,
    records: u64,
    record_bytes: u64,
    /// When each of its summaries went out, ms from the start: the overlay's links are idle
    /// (and send keep-alives) only between summaries ([`keepalives_per_link`]).
    summary_ms: Vec<u64>,
}

/// Keep-alives one overlay link of a site sends until `end_ms` (ms from the start), given
/// when every site's summaries went out (sorted): QUIC sends one after [`KEEP_ALIVE`] with
/// nothing sent, and every summary's flood crosses about half a site's links (an Ihave or
/// the summary: [`flood_bytes`]), which link by a hash of the link and the summary.
fn keepalives_per_link(flood_ms: &[u64], link: u64, end_ms: u64) -> u64 {
    let every = KEEP_ALIVE.as_millis() as u64;
    let mut last = 0u64;
    let mut pings = 0u64;
    for (i, &t) in flood_ms.iter().enumerate() {
        if scheduler::planner::mix(link << 40 ^ i as u64) & 1 == 0 {
            pings += t.saturating_sub(last) / every;
            last = t;
        }
    }
    pings + end_ms.saturating_sub(last) / every
}

/// The ground truth of one release on each endpoint of a site: when it was applied
/// (installed, or a newer version of its channel installed), seconds from the start, and
/// whether it was this release itself that was installed.
type Applied = Vec<(Option<i64>, bool)>;

/// One site's month: its index, the ground truth per release, its endpoints that joined,
/// what its control plane cost.
type SiteOutcome = (usize, Vec<Applied>, usize, SiteCost);

/// What the month scenario found.
#[derive(Debug, Clone, Serialize)]
pub struct MonthReport {
    /// Scenario name.
    pub name: String,
    /// Sites, endpoints, releases.
    pub sites: usize,
    /// See `sites`.
    pub endpoints: usize,
    /// See `sites`.
    pub releases: usize,
    /// Days of the month.
    pub days: f64,
    /// Releases whose report row matches the ground truth (installers, applied, installed
    /// itself, the verdict from those applied within 72 hours).
    pub rows_matching: usize,
    /// Rows the report has (every release of the month, if it is right).
    pub rows: usize,
    /// The releases whose row differs, described (at most 20).
    pub mismatches: Vec<String>,
    /// Critical releases, and how many of their verdicts are right.
    pub critical: usize,
    /// See `critical`.
    pub verdicts_right: usize,
    /// Critical releases met / missed / open, per the report.
    pub verdicts: (usize, usize, usize),
    /// Share applied over every release and endpoint, per the report.
    pub applied_share: f64,
    /// The lowest share applied of a release, per the report.
    pub applied_share_min: f64,
    /// Status records composed (a heartbeat that changes nothing aside), and their bytes:
    /// they stay on each site's LAN.
    pub records: u64,
    /// See `records`.
    pub record_bytes: u64,
    /// Site summaries published, and their bytes.
    pub summaries: u64,
    /// Of those: heartbeats (nothing new), progress only, a change of state.
    pub summaries_by_news: [u64; 3],
    /// See `summaries`.
    pub summary_bytes: u64,
    /// Bytes per day into the busiest site across its WAN for status: the other sites'
    /// summaries with their announcements and acknowledgements, and the overlay's
    /// keep-alives (about as much goes out).
    pub status_wan_bytes_per_day: f64,
    /// Of which keep-alives.
    pub keepalive_bytes_per_day: f64,
    /// The release traffic's own control messages per site per day (estimate).
    pub release_control_bytes_per_day: f64,
    /// The month's release bytes: what each site receives across its WAN.
    pub release_bytes: u64,
    /// Control per site over the month (status and release control) / the month's release
    /// bytes.
    pub control_share: f64,
    /// Seconds the report took on the observing node.
    pub report_s: f64,
    /// Seconds the whole run took.
    pub wall_s: f64,
    /// The report itself.
    #[serde(skip)]
    pub rows_out: Vec<ComplianceRow>,
}

impl MonthReport {
    /// Whether every row matches and every verdict is right.
    pub fn exact(&self) -> bool {
        self.rows == self.releases
            && self.rows_matching == self.releases
            && self.verdicts_right == self.critical
    }

    /// A table for people.
    pub fn table(&self) -> String {
        let (met, missed, open) = self.verdicts;
        let mut out = format!(
            "month {}: {} sites, {} endpoints, {} releases over {} days\n",
            self.name, self.sites, self.endpoints, self.releases, self.days
        );
        out += &format!(
            "report vs ground truth: {}/{} rows exact, {}/{} critical verdicts right ({met} met, {missed} missed, {open} open)\n",
            self.rows_matching, self.releases, self.verdicts_right, self.critical
        );
        out += &format!(
            "share applied: {:.4} over all, lowest release {:.4}\n",
            self.applied_share, self.applied_share_min
        );
        out += &format!(
            "records: {} ({:.1} MiB, site LANs); summaries: {} ({:.1} MiB; {} heartbeats, {} progress, {} changes of state)\n",
            self.records,
            self.record_bytes as f64 / 1_048_576.0,
            self.summaries,
            self.summary_bytes as f64 / 1_048_576.0,
            self.summaries_by_news[0],
            self.summaries_by_news[1],
            self.summaries_by_news[2]
        );
        out += &format!(
            "status across the busiest site's WAN: {:.2} MiB/day in (keep-alives {:.2}); release control {:.2} MiB/day (estimate)\n",
            self.status_wan_bytes_per_day / 1_048_576.0,
            self.keepalive_bytes_per_day / 1_048_576.0,
            self.release_control_bytes_per_day / 1_048_576.0
        );
        out += &format!(
            "the month's release bytes per site: {:.1} MiB; control / release bytes: {:.4} %\n",
            self.release_bytes as f64 / 1_048_576.0,
            self.control_share * 100.0
        );
        out += &format!(
            "report on the observing node: {:.3} s; run: {:.1} s\n",
            self.report_s, self.wall_s
        );
        for m in &self.mismatches {
            out += &format!("  mismatch: {m}\n");
        }
        out
    }
}

/// The endpoints' plans, every site's, from the seed.
fn plans(sc: &MonthScenario, rels: &[Rel]) -> Vec<Vec<Plan>> {
    let span = (sc.days * 86_400.0) as i64;
    (0..sc.sites)
        .map(|s| {
            let mut rng = ChaCha8Rng::seed_from_u64(sc.seed ^ ((s as u64 + 1) << 20));
            (0..sc.nodes_per_site)
                .map(|n| {
                    let key = ed25519_dalek::SigningKey::from_bytes(
                        blake3::hash(format!("key-{}-{s}-{n}", sc.seed).as_bytes()).as_bytes(),
                    );
                    let joins_s = if rng.random_bool(sc.late_share) {
                        rng.random_range(0..span)
                    } else {
                        0
                    };
                    let away = rng.random_bool(sc.silent_share).then(|| {
                        let from = rng.random_range(joins_s..span.max(joins_s + 1));
                        (from, from + (sc.silent_days * 86_400.0) as i64)
                    });
                    Plan {
                        id: NodeId(key.verifying_key().to_bytes()),
                        key,
                        joins_s,
                        away,
                        fails: rels
                            .iter()
                            .map(|_| rng.random_bool(sc.install_fail_share))
                            .collect(),
                    }
                })
                .collect()
        })
        .collect()
}

/// One site's month.
struct SiteSim<'a> {
    sc: &'a MonthScenario,
    rels: &'a [Rel],
    start_s: i64,
    /// ms from the start when endpoints stop changing (the month's end).
    freeze_ms: u64,
    end_ms: u64,
    name: String,
    nodes: Vec<Node>,
    fleet: &'a Fleet,
    observer: &'a Fleet,
    is_observer: bool,
    windows: Vec<Window>,
    window_cache: WindowCache,
    queue: BinaryHeap<Reverse<(u64, u64, Ev)>>,
    order: u64,
    rng: ChaCha8Rng,
    publisher: Publisher<ReleaseId, SiteRelease>,
    last_summary: Option<SummaryContent>,
    /// A change of state waits for the summary's cadence: until it is due, looking again
    /// finds the same (the daemon looks every half second and finds it pending).
    state_pending: bool,
    site_check_at: Option<u64>,
    /// The sizes of the overlay's announcements.
    costs: Costs,
    summary_seq: u64,
    cost: SiteCost,
}

impl SiteSim<'_> {
    fn push(&mut self, at_ms: u64, ev: Ev) {
        if at_ms > self.end_ms {
            return;
        }
        self.order += 1;
        self.queue.push(Reverse((at_ms, self.order, ev)));
    }

    fn unix(&self, ms: u64) -> i64 {
        self.start_s + (ms / 1000) as i64
    }

    fn changing(&self, ms: u64) -> bool {
        ms <= self.freeze_ms
    }

    /// The node's entries of a channel, as the versions rule reads them.
    fn known(&self, node: usize, channel: usize) -> Vec<(usize, u64, Standing)> {
        let n = &self.nodes[node];
        n.by_channel[channel]
            .iter()
            .filter_map(|&i| {
                let e = &n.statuses[i];
                let standing = match e.state {
                    ReleaseState::Announced | ReleaseState::Downloading => Standing::Running,
                    ReleaseState::PausedByWindow => Standing::Waiting,
                    ReleaseState::Complete | ReleaseState::Activated => Standing::Complete,
                    ReleaseState::Superseded => Standing::Superseded,
                    ReleaseState::Failed => Standing::Failed,
                    _ => return None,
                };
                Some((i, e.version, standing))
            })
            .collect()
    }

    fn set_state(&mut self, node: usize, entry: usize, state: ReleaseState, now_ms: u64) {
        let now_s = self.unix(now_ms);
        let e = &mut self.nodes[node].statuses[entry];
        if e.state == state {
            return;
        }
        e.state = state;
        e.since_unix_s = now_s;
        if state != ReleaseState::Failed {
            e.error = None;
        }
        self.nodes[node].state_news = true;
        self.wake(node, now_ms);
    }

    /// Schedules the node's record check now (its publisher says when it may go).
    fn wake(&mut self, node: usize, now_ms: u64) {
        let n = &self.nodes[node];
        if n.check_at.is_some_and(|t| t <= now_ms) {
            return;
        }
        self.nodes[node].check_at = Some(now_ms);
        self.push(now_ms, Ev::NodeCheck { node: node as u32 });
    }

    /// The versions rule over one channel of one node, at `now_ms`: supersede, start
    /// downloads, install the newest complete.
    fn apply_rule(&mut self, node: usize, channel: usize, now_ms: u64) {
        if !self.nodes[node].up || !self.changing(now_ms) {
            return;
        }
        let known = self.known(node, channel);
        let list: Vec<(u64, Standing)> = known.iter().map(|k| (k.1, k.2)).collect();
        for &(i, version, standing) in &known {
            let state = self.nodes[node].statuses[i].state;
            let open = matches!(
                state,
                ReleaseState::Announced | ReleaseState::Downloading | ReleaseState::Complete
            ) && !self.nodes[node].meta[i].install_pending;
            if open && superseded_by(version, standing, list.iter().copied()).is_some() {
                let e = &mut self.nodes[node].meta[i];
                e.generation += 1;
                e.download = None;
                self.set_state(node, i, ReleaseState::Superseded, now_ms);
            }
        }
        let known = self.known(node, channel);
        let list: Vec<(u64, Standing)> = known.iter().map(|k| (k.1, k.2)).collect();
        for &(i, _, _) in &known {
            if self.nodes[node].statuses[i].state == ReleaseState::Announced {
                self.start_download(node, i, now_ms);
            }
        }
        if let Some(v) = to_install(&list) {
            let &(i, _, _) = known.iter().find(|k| k.1 == v).expect("listed");
            if self.nodes[node].statuses[i].state == ReleaseState::Complete
                && !self.nodes[node].meta[i].install_pending
            {
                self.nodes[node].meta[i].install_pending = true;
                self.push(
                    now_ms,
                    Ev::InstallTry {
                        node: node as u32,
                        entry: i as u32,
                    },
                );
            }
        }
    }

    fn start_download(&mut self, node: usize, entry: usize, now_ms: u64) {
        let rel = &self.rels[self.nodes[node].meta[entry].rel];
        let bits = rel.bytes as f64 * 8.0;
        let wan_s = bits / (self.sc.site_wan_mbit * 1e6);
        let lan_s = bits / (self.sc.lan_mbit * 1e6);
        let jitter = self.rng.random_range(0.5..1.5);
        let took = ((wan_s + lan_s * jitter) * 1000.0) as u64 + 500;
        let e = &mut self.nodes[node].meta[entry];
        e.generation += 1;
        e.download = Some((now_ms, now_ms + took));
        let generation = e.generation;
        self.set_state(node, entry, ReleaseState::Downloading, now_ms);
        self.push(
            now_ms + took,
            Ev::DownloadDone {
                node: node as u32,
                entry: entry as u32,
                generation,
            },
        );
    }

    /// The node learns release `rel` (verified) at `now_ms`.
    fn learn(&mut self, node: usize, rel: usize, now_ms: u64) -> bool {
        if self.nodes[node].entries[rel].is_some() {
            return false;
        }
        let r = &self.rels[rel];
        let status = ReleaseStatus {
            release: r.id,
            channel: r.channel_name.clone(),
            version: r.version,
            published_unix_s: self.start_s + r.published_s,
            severity: r.severity,
            state: ReleaseState::Announced,
            chunks_have: 0,
            chunks_total: r.chunks,
            since_unix_s: self.unix(now_ms),
            until_unix_s: None,
            error: None,
            ring: 0,
        };
        let n = &mut self.nodes[node];
        let i = n.statuses.len();
        n.entries[rel] = Some(i);
        n.statuses.push(status);
        n.meta.push(Meta {
            rel,
            download: None,
            generation: 0,
            install_pending: false,
        });
        n.by_channel[r.channel].push(i);
        n.state_news = true;
        self.wake(node, now_ms);
        true
    }

    /// The node comes up (joins, or is back): it hears of every release published so far,
    /// restarts its downloads and applies the rule to every channel.
    fn come_up(&mut self, node: usize, now_ms: u64) {
        self.nodes[node].up = true;
        let now_rel_s = (now_ms / 1000) as i64;
        for rel in 0..self.rels.len() {
            if self.rels[rel].published_s <= now_rel_s {
                self.learn(node, rel, now_ms);
            }
        }
        let n = &mut self.nodes[node];
        for (status, meta) in n.statuses.iter_mut().zip(&mut n.meta) {
            meta.install_pending = false;
            meta.download = None;
            if status.state == ReleaseState::Downloading {
                status.state = ReleaseState::Announced;
            }
        }
        for c in 0..self.sc.channels {
            if !self.nodes[node].by_channel[c].is_empty() {
                self.apply_rule(node, c, now_ms);
            }
        }
        self.nodes[node].state_news = true;
        self.wake(node, now_ms);
    }

    fn handle(&mut self, now_ms: u64, ev: Ev) {
        match ev {
            Ev::Learn { node, rel } => {
                let (node, rel) = (node as usize, rel as usize);
                let n = &self.nodes[node];
                if n.up && n.joined && self.changing(now_ms) && self.learn(node, rel, now_ms) {
                    self.apply_rule(node, self.rels[rel].channel, now_ms);
                }
            }
            Ev::DownloadDone {
                node,
                entry,
                generation,
            } => {
                let (node, entry) = (node as usize, entry as usize);
                let n = &self.nodes[node];
                if !n.up
                    || n.meta[entry].generation != generation
                    || n.statuses[entry].state != ReleaseState::Downloading
                    || !self.changing(now_ms)
                {
                    return;
                }
                let n = &mut self.nodes[node];
                n.meta[entry].download = None;
                n.statuses[entry].chunks_have = n.statuses[entry].chunks_total;
                let channel = self.rels[n.meta[entry].rel].channel;
                self.set_state(node, entry, ReleaseState::Complete, now_ms);
                self.apply_rule(node, channel, now_ms);
            }
            Ev::InstallTry { node, entry } => {
                let (node, entry) = (node as usize, entry as usize);
                if !self.nodes[node].up
                    || self.nodes[node].statuses[entry].state != ReleaseState::Complete
                    || !self.changing(now_ms)
                {
                    self.nodes[node].meta[entry].install_pending = false;
                    return;
                }
                let now = jiff::Timestamp::from_second(self.unix(now_ms)).expect("in range");
                match self.window_cache.state(&[&self.windows], now) {
                    WindowState::Open { .. } => {
                        let took = self.rng.random_range(20_000..180_000);
                        self.push(
                            now_ms + took,
                            Ev::InstallDone {
                                node: node as u32,
                                entry: entry as u32,
                            },
                        );
                    }
                    WindowState::Closed { opens } => {
                        if let Some(opens) = opens {
                            let at = (opens.as_second() - self.start_s).max(0) as u64 * 1000;
                            self.push(
                                at.max(now_ms + 1000),
                                Ev::InstallTry {
                                    node: node as u32,
                                    entry: entry as u32,
                                },
                            );
                        }
                    }
                }
            }
            Ev::InstallDone { node, entry } => {
                let (node, entry) = (node as usize, entry as usize);
                self.nodes[node].meta[entry].install_pending = false;
                if !self.nodes[node].up
                    || self.nodes[node].statuses[entry].state != ReleaseState::Complete
                    || !self.changing(now_ms)
                {
                    return;
                }
                let rel = self.nodes[node].meta[entry].rel;
                if self.nodes[node].plan.fails[rel] {
                    self.set_state(node, entry, ReleaseState::Failed, now_ms);
                    self.nodes[node].statuses[entry].error =
                        Some("install command exited with status 1".into());
                } else {
                    self.set_state(node, entry, ReleaseState::Activated, now_ms);
                }
                self.apply_rule(node, self.rels[rel].channel, now_ms);
            }
            Ev::Away { node } => {
                let node = node as usize;
                if !self.changing(now_ms) {
                    return;
                }
                self.nodes[node].up = false;
                for e in &mut self.nodes[node].meta {
                    e.generation += 1;
                }
                // The aggregator notices the silence once the bound passes.
                if let Some(last) = self.nodes[node].last_record_s {
                    let heartbeat = STATUS_HEARTBEAT.as_secs() as i64;
                    let last = last.max(self.unix(now_ms) - heartbeat);
                    let at = (last + self.sc.silent_after_s + 1 - self.start_s).max(0) as u64;
                    self.site_check(at * 1000);
                }
            }
            Ev::Back { node } => {
                let node = node as usize;
                if self.changing(now_ms) {
                    self.come_up(node, now_ms);
                }
            }
            Ev::Join { node } => {
                let node = node as usize;
                self.nodes[node].joined = true;
                self.come_up(node, now_ms);
            }
            Ev::NodeCheck { node } => self.node_check(node as usize, now_ms),
            Ev::SiteCheck => self.summary_check(now_ms),
        }
    }

    /// The node's status publisher, at `now_ms`.
    fn node_check(&mut self, node: usize, now_ms: u64) {
        if self.nodes[node].check_at != Some(now_ms) {
            return;
        }
        self.nodes[node].check_at = None;
        let n = &self.nodes[node];
        if !n.up || !n.joined {
            return;
        }
        let moving = n.meta.iter().any(|e| e.download.is_some());
        let news = n.publisher.news(n.state_news, moving);
        if news == News::None {
            return;
        }
        let now_s = self.unix(now_ms);
        if !self.nodes[node].publisher.poll(now_ms, news) {
            let due = self.nodes[node].publisher.due_at(news).max(now_ms + 1);
            self.nodes[node].check_at = Some(due);
            self.push(due, Ev::NodeCheck { node: node as u32 });
            return;
        }
        // Progress of the downloads under way.
        let n = &mut self.nodes[node];
        for (status, meta) in n.statuses.iter_mut().zip(&n.meta) {
            if let Some((from, to)) = meta.download {
                let done = (now_ms.saturating_sub(from)) as f64 / (to - from).max(1) as f64;
                status.chunks_have = (f64::from(status.chunks_total) * done.min(1.0)) as u32;
            }
        }
        let picked = n.publisher.pick_statuses(&n.statuses, now_s);
        n.seq = (n.seq + 1).max(now_s as u64 * 1000 + now_ms % 1000);
        let body = StatusBody {
            node: n.plan.id,
            site: self.name.clone(),
            installs: true,
            seq: n.seq,
            at_unix_s: now_s,
            releases: picked,
        };
        n.state_news = false;
        n.last_record_s = Some(now_s);
        self.cost.records += 1;
        // Signed, the record is its body and a 64-byte signature in a control frame.
        self.cost.record_bytes += protocol::codec::encode(&body).len() as u64 + 64 + 8;
        if let Err(e) = self.fleet.keep_record(body, Vec::new()) {
            panic!("the aggregator refused a record: {e}");
        }
        if moving {
            let due = self.nodes[node].publisher.due_at(News::Progress);
            self.nodes[node].check_at = Some(due);
            self.push(due, Ev::NodeCheck { node: node as u32 });
        }
        // The aggregator looks at its figures every half second.
        let step = SUMMARY_FORWARD_DELAY.as_millis() as u64;
        self.site_check(now_ms.div_ceil(step) * step);
    }

    fn site_check(&mut self, at_ms: u64) {
        if self.site_check_at.is_some_and(|t| t <= at_ms) {
            return;
        }
        self.site_check_at = Some(at_ms);
        self.push(at_ms, Ev::SiteCheck);
    }

    /// The records of the heartbeats that changed nothing, up to `now_ms`: each endpoint that
    /// is up and sent its last record a heartbeat or more ago has sent one since.
    fn heartbeats(&mut self, now_ms: u64) {
        let now_s = self.unix(now_ms);
        let beat = STATUS_HEARTBEAT.as_secs() as i64;
        for n in &mut self.nodes {
            let Some(last) = n.last_record_s else {
                continue;
            };
            if !n.up || !n.joined || now_s - last < beat {
                continue;
            }
            let at = last + (now_s - last) / beat * beat;
            n.seq = (n.seq + 1).max(at as u64 * 1000);
            n.last_record_s = Some(at);
            let body = StatusBody {
                node: n.plan.id,
                site: self.name.clone(),
                installs: true,
                seq: n.seq,
                at_unix_s: at,
                releases: Vec::new(),
            };
            if let Err(e) = self.fleet.keep_record(body, Vec::new()) {
                panic!("the aggregator refused a heartbeat: {e}");
            }
        }
    }

    /// The aggregator's summary publisher, at `now_ms`.
    fn summary_check(&mut self, now_ms: u64) {
        if self.site_check_at != Some(now_ms) {
            return;
        }
        self.site_check_at = None;
        let step = SUMMARY_FORWARD_DELAY.as_millis() as u64;
        if self.state_pending {
            let due = self.publisher.due_at(News::State);
            if due > now_ms {
                self.site_check(due.div_ceil(step) * step);
                return;
            }
        }
        self.heartbeats(now_ms);
        let now_s = self.unix(now_ms);
        let (nodes, installers, releases) = self.fleet.own_figures(now_s);
        // Who aggregates: the product's rendezvous over the endpoints that are up.
        let up: Vec<[u8; 32]> = self
            .nodes
            .iter()
            .filter(|n| n.up && n.joined)
            .map(|n| n.plan.id.0)
            .collect();
        let first = aggregators(site_key(&self.name), &up).first().copied();
        let k = self
            .nodes
            .iter()
            .position(|n| Some(n.plan.id.0) == first)
            .unwrap_or(0);
        let aggregator = self.nodes[k].plan.id;
        let contacts = vec![Contact {
            node: aggregator,
            wan: std::net::SocketAddr::from(([203, 0, 113, (k % 250) as u8 + 1], 4433)),
        }];
        let content = SummaryContent::new(nodes, installers, contacts, &releases);
        let news = self
            .publisher
            .summary_news(&content, self.last_summary.as_ref());
        if !self.publisher.poll(now_ms, news) {
            self.state_pending = news == News::State;
            let due = self.publisher.due_at(news).max(now_ms + 1).div_ceil(step) * step;
            self.site_check(due);
            return;
        }
        self.state_pending = false;
        self.summary_seq = (self.summary_seq + 1).max(now_s as u64 * 1000 + now_ms % 1000);
        let body = SummaryBody {
            site: self.name.clone(),
            aggregator,
            seq: self.summary_seq,
            at_unix_s: now_s,
            nodes,
            installers,
            contacts: content.contacts().to_vec(),
            releases: self.publisher.pick_site_releases(releases, now_s),
        };
        let signed = SignedSummary::sign(&body, &self.nodes[k].plan.key).encode();
        self.cost.summaries += 1;
        // Gate news (rings; none in this scenario) counts with state news.
        self.cost.summaries_by_news[(news as usize).min(2)] += 1;
        self.cost.summary_bytes += signed.len() as u64;
        self.cost.summary_ms.push(now_ms);
        let framed =
            protocol::wire::frame(&protocol::wire::Control::Summaries(vec![signed.clone()])).len()
                as u64;
        self.cost.flood_bytes += flood_bytes(&self.costs, framed, self.sc.sites);
        if !self.is_observer {
            if let Err(e) = self.observer.offer_summary(&signed, now_s) {
                panic!("the observer refused {}'s summary: {e}", self.name);
            }
        }
        self.last_summary = Some(content);
        // The next heartbeat.
        let due = self.publisher.due_at(News::None).div_ceil(step) * step;
        self.site_check(due);
    }

    fn run(&mut self) {
        while let Some(Reverse((t, _, ev))) = self.queue.pop() {
            self.handle(t, ev);
        }
    }
}

/// Ground truth: per release, per endpoint of a site, when it was applied (seconds from the
/// start), as of the month's end.
fn applied(nodes: &[Node], rels: &[Rel], start_s: i64) -> Vec<Applied> {
    let mut out = vec![Vec::new(); rels.len()];
    for n in nodes.iter().filter(|n| n.joined) {
        // Per channel, the versions installed and when.
        let mut installed: HashMap<usize, Vec<(u64, i64)>> = HashMap::new();
        for (status, meta) in n.statuses.iter().zip(&n.meta) {
            if status.state == ReleaseState::Activated {
                let r = &rels[meta.rel];
                installed
                    .entry(r.channel)
                    .or_default()
                    .push((r.version, status.since_unix_s - start_s));
            }
        }
        for (i, r) in rels.iter().enumerate() {
            let list = installed.get(&r.channel);
            let t = list.and_then(|list| {
                list.iter()
                    .filter(|(v, _)| *v >= r.version)
                    .map(|(_, t)| *t)
                    .min()
            });
            let own = list.is_some_and(|list| list.iter().any(|(v, _)| *v == r.version));
            out[i].push((t, own));
        }
    }
    out
}

/// Runs the month; `progress` is told each site as it finishes.
pub fn run(
    sc: &MonthScenario,
    progress: impl Fn(usize, usize) + Sync,
) -> anyhow::Result<MonthReport> {
    let wall = std::time::Instant::now();
    let rels = releases(sc);
    let plans = plans(sc, &rels);
    let windows = sc
        .windows
        .windows()
        .map_err(|(k, e)| anyhow::anyhow!("{k}: {e}"))?;
    let start_s = sc.start_unix_s();
    let freeze_ms = (sc.days * 86_400_000.0) as u64;
    let end_ms = freeze_ms + sc.report_after_s as u64 * 1000;
    let report_s = start_s + (end_ms / 1000) as i64;
    let name_of = |s: usize| format!("site-{s:04}");
    let observer = Fleet::new(&name_of(0));
    observer.set_aggregating(true);
    observer.set_silent_after(std::time::Duration::from_secs(sc.silent_after_s as u64));
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    // Per site: ground truth and costs.
    let results: Mutex<Vec<SiteOutcome>> = Mutex::new(Vec::new());
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(sc.sites);
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                loop {
                    let s = next.fetch_add(1, Ordering::Relaxed);
                    if s >= sc.sites {
                        break;
                    }
                    let name = name_of(s);
                    let own_fleet;
                    let fleet = if s == 0 {
                        &observer
                    } else {
                        own_fleet = Fleet::new(&name);
                        own_fleet.set_aggregating(true);
                        own_fleet.set_silent_after(std::time::Duration::from_secs(
                            sc.silent_after_s as u64,
                        ));
                        &own_fleet
                    };
                    let zone = if sc.zones.is_empty() {
                        sc.windows.zone.clone()
                    } else {
                        sc.zones[s % sc.zones.len()].clone()
                    };
                    let section = WindowsSection {
                        zone,
                        ..sc.windows.clone()
                    };
                    let site_windows = section
                        .windows()
                        .map(|w| w.install)
                        .unwrap_or_else(|_| windows.install.clone());
                    let mut sim = SiteSim {
                        sc,
                        rels: &rels,
                        start_s,
                        freeze_ms,
                        end_ms,
                        name: name.clone(),
                        nodes: plans[s]
                            .iter()
                            .map(|p| Node {
                                plan: p.clone(),
                                up: false,
                                joined: false,
                                entries: vec![None; rels.len()],
                                statuses: Vec::new(),
                                meta: Vec::new(),
                                by_channel: vec![Vec::new(); sc.channels],
                                publisher: Publisher::status(),
                                state_news: false,
                                check_at: None,
                                last_record_s: None,
                                seq: 0,
                            })
                            .collect(),
                        fleet,
                        observer: &observer,
                        is_observer: s == 0,
                        windows: site_windows,
                        window_cache: WindowCache::default(),
                        queue: BinaryHeap::new(),
                        order: 0,
                        rng: ChaCha8Rng::seed_from_u64(sc.seed ^ ((s as u64 + 1) << 40)),
                        publisher: Publisher::summary(sc.sites),
                        last_summary: None,
                        state_pending: false,
                        site_check_at: None,
                        costs: Costs::new(1),
                        summary_seq: 0,
                        cost: SiteCost::default(),
                    };
                    for (i, p) in plans[s].iter().enumerate() {
                        let node = i as u32;
                        sim.push(p.joins_s as u64 * 1000, Ev::Join { node });
                        if let Some((from, to)) = p.away {
                            sim.push(from as u64 * 1000, Ev::Away { node });
                            sim.push(to as u64 * 1000, Ev::Back { node });
                        }
                        for (r, rel) in rels.iter().enumerate() {
                            let heard = sim.rng.random_range(1_000..20_000);
                            sim.push(
                                rel.published_s as u64 * 1000 + heard,
                                Ev::Learn {
                                    node,
                                    rel: r as u32,
                                },
                            );
                        }
                    }
                    sim.run();
                    // The report is made at the end: the last heartbeats, the last summary.
                    sim.site_check(end_ms);
                    sim.run();
                    let truth = applied(&sim.nodes, &rels, start_s);
                    let joined = sim.nodes.iter().filter(|n| n.joined).count();
                    results
                        .lock()
                        .expect("results")
                        .push((s, truth, joined, sim.cost));
                    progress(done.fetch_add(1, Ordering::Relaxed) + 1, sc.sites);
                }
            });
        }
    });
    let results = results.into_inner().expect("results");

    // The observer's report, as `p2pctl report` makes it.
    let report_clock = std::time::Instant::now();
    let mut facts = observer.releases_since(start_s - 1);
    store::fleet::sort_for_report(&mut facts);
    let rows = observer.compliance(&facts, report_s);
    let report_took = report_clock.elapsed().as_secs_f64();

    // Ground truth, release by release.
    let installers: usize = results.iter().map(|r| r.2).sum();
    let mut rows_matching = 0;
    let mut mismatches = Vec::new();
    let mut critical = 0;
    let mut verdicts_right = 0;
    let mut verdicts = (0, 0, 0);
    let mut applied_total = 0u64;
    let mut share_min = 1.0f64;
    let by_id: HashMap<String, &ComplianceRow> =
        rows.iter().map(|r| (r.release.clone(), r)).collect();
    for (i, r) in rels.iter().enumerate() {
        let mut applied_n = 0u64;
        let mut installed_n = 0u64;
        let mut in_time = 0u64;
        for (_, truth, _, _) in &results {
            for (t, own) in &truth[i] {
                installed_n += u64::from(*own);
                if let Some(t) = t {
                    applied_n += 1;
                    if t - r.published_s <= CRITICAL_DEADLINE_S {
                        in_time += 1;
                    }
                }
            }
        }
        let need = (store::fleet::CRITICAL_SHARE * installers as f64).ceil() as u64;
        let verdict = if r.severity != Severity::Critical {
            "n/a"
        } else if need > 0 && in_time >= need {
            "met"
        } else if report_s - (start_s + r.published_s) > CRITICAL_DEADLINE_S {
            "missed"
        } else {
            "open"
        };
        let Some(row) = by_id.get(&r.id.to_hex()) else {
            if mismatches.len() < 20 {
                mismatches.push(format!(
                    "{} v{}: not in the report",
                    r.channel_name, r.version
                ));
            }
            continue;
        };
        applied_total += row.activated;
        share_min = share_min.min(row.activated_share);
        if r.severity == Severity::Critical {
            critical += 1;
            if row.deadline == verdict {
                verdicts_right += 1;
            }
            match row.deadline.as_str() {
                "met" => verdicts.0 += 1,
                "missed" => verdicts.1 += 1,
                _ => verdicts.2 += 1,
            }
        }
        if row.installers == installers as u64
            && row.activated == applied_n
            && row.installed == installed_n
            && row.deadline == verdict
        {
            rows_matching += 1;
        } else if mismatches.len() < 20 {
            mismatches.push(format!(
                "{} v{} ({}): report {} installers, {} applied ({} installed), {}; truth {installers}, {applied_n} ({installed_n} installed, {in_time} within 72 h), {verdict}",
                r.channel_name,
                r.version,
                row.release,
                row.installers,
                row.activated,
                row.installed,
                row.deadline
            ));
        }
    }

    // What crossed each site's WAN for status.
    let days = sc.days + sc.report_after_s as f64 / 86_400.0;
    let flood_total: u64 = results.iter().map(|r| r.3.flood_bytes).sum();
    let busiest_in = results
        .iter()
        .map(|r| flood_total - r.3.flood_bytes)
        .max()
        .unwrap_or(0) as f64;
    let mut flood_ms: Vec<u64> = results
        .iter()
        .flat_map(|r| r.3.summary_ms.iter().copied())
        .collect();
    flood_ms.sort_unstable();
    let end_ms = (days * 86_400_000.0) as u64;
    let keepalive_per_day = (0..overlay_neighbours(sc.sites))
        .map(|link| keepalives_per_link(&flood_ms, link, end_ms))
        .sum::<u64>() as f64
        * keepalive_bytes_per_s()
        * KEEP_ALIVE.as_secs_f64()
        / days;
    let status_per_day = busiest_in / days + keepalive_per_day;
    // Each release's own control across a site's WAN: an offer and a final want to each WAN
    // peer, and a want and a have of every chunk once, each on the wire with its
    // acknowledgement.
    let release_control: u64 = rels
        .iter()
        .map(|r| {
            let c = Costs::new(r.chunks);
            let peers = scheduler::control::WAN_PEERS_DEFAULT as u64;
            peers * (on_wan(c.offer) + on_wan(c.want_done) + 2 * ACK_PACKET_BYTES)
                + on_wan(c.want(0..r.chunks))
                + on_wan(c.have(0..r.chunks))
                + 2 * ACK_PACKET_BYTES
        })
        .sum();
    let release_bytes: u64 = rels.iter().map(|r| r.bytes).sum();
    let control_month = status_per_day * days + release_control as f64;
    Ok(MonthReport {
        name: sc.name.clone(),
        sites: sc.sites,
        endpoints: sc.sites * sc.nodes_per_site,
        releases: rels.len(),
        days: sc.days,
        rows_matching,
        rows: rows.len(),
        mismatches,
        critical,
        verdicts_right,
        verdicts,
        applied_share: applied_total as f64 / (installers as f64 * rels.len() as f64),
        applied_share_min: share_min,
        records: results.iter().map(|r| r.3.records).sum(),
        record_bytes: results.iter().map(|r| r.3.record_bytes).sum(),
        summaries: results.iter().map(|r| r.3.summaries).sum(),
        summaries_by_news: results.iter().fold([0; 3], |mut acc, r| {
            for (a, n) in acc.iter_mut().zip(r.3.summaries_by_news) {
                *a += n;
            }
            acc
        }),
        summary_bytes: results.iter().map(|r| r.3.summary_bytes).sum(),
        status_wan_bytes_per_day: status_per_day,
        keepalive_bytes_per_day: keepalive_per_day,
        release_control_bytes_per_day: release_control as f64 / days,
        release_bytes,
        control_share: control_month / release_bytes as f64,
        report_s: report_took,
        wall_s: wall.elapsed().as_secs_f64(),
        rows_out: rows,
    })
}
