//! The fleet as this node knows it, in two levels: the signed status record of every member
//! of its own site ([`protocol::status`]), and the signed summary of every other site
//! ([`protocol::summary`]). Every fleet figure this node gives — `p2pctl fleet`, the
//! compliance report, the dashboard, the metrics — is computed here from that one model, so
//! they never disagree.
//!
//! Records arrive from same-site peers, summaries from the site's aggregators (or, on an
//! aggregator, from its WAN neighbours); [`Fleet::offer_record`] and [`Fleet::offer_summary`]
//! keep one only if it verifies (signature, bounds) and is newer than the one held, so
//! forged, oversized and replayed input changes nothing. A record of another site and a
//! summary of this one are refused: a site's figures come from its records where they are at
//! hand. Both are held in memory and written to the store in batches ([`Fleet::take_dirty`]).
//!
//! A record or a summary names at most 32 releases, the ones that move or just changed and a
//! few settled ones in turn ([`scheduler::ledger`]), so neither is the whole story. Each is
//! merged into a ledger: per node of this site, every release its records named, the latest
//! entry each ([`HeldRecord::merged`], [`merge_into`]); per other site, every release its summaries named,
//! the latest figures each with the number of the summary that gave them. An entry a newer
//! message does not name keeps its value; entries leave only past
//! [`scheduler::ledger::HORIZON`] or [`scheduler::ledger::RELEASES_KEPT_MAX`]. So a release
//! published at the start of a month of 300 still has its exact per-site figures at the end.
//! The ledgers are the node's own computation from verified messages and are stored beside
//! the signed messages ([`Dirty`]).
//!
//! Own site and other sites are aggregated by the same function
//! ([`protocol::summary::site_releases`]): the aggregator's summary of a site and a member's
//! view of it are the same figures. Per-node detail of another site is not held; `p2pctl
//! fleet RELEASE --site NAME` asks that site for its records ([`Fleet::report_with`]).

use protocol::status::ReleaseStatus;
use protocol::status::{ReleaseState, SignedStatus, StatusBody, StatusError};
use protocol::summary::{
    CRITICAL_DEADLINE_S, Facts, LedgerEntry, LedgerPage, NodeEntries, RingCount, SignedSummary,
    SiteIndex, SiteRelease, SummaryBody, install_bucket_end_s, site_release, site_releases,
};
use protocol::{NodeId, ReleaseId};
use scheduler::ledger;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;

/// Most records kept: those of this node's site, which is never larger than this.
pub const SITE_RECORDS_MAX: usize = protocol::summary::SITE_NODES_MAX as usize;

/// Most sites whose summaries are kept: twenty times the fleet this is built for (500
/// sites). Beyond it a summary of a site not yet known is dropped, so a flood of summaries of
/// made-up sites cannot take the memory.
pub const SITES_MAX: usize = 10_000;

/// Most failed nodes one report lists (all are counted).
pub const FAILED_LISTED_MAX: usize = 1000;

/// How often changed records and summaries are written to the store.
pub const PERSIST_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// The window over which the completion rate is measured, seconds.
pub const RATE_WINDOW_S: i64 = 300;

/// Samples of fleet-wide progress kept per release for the rate, one per this many seconds
/// at most: [`RATE_WINDOW_S`] of them at [`SAMPLE_INTERVAL_S`] apart.
pub const SAMPLE_INTERVAL_S: i64 = 10;

/// Releases whose progress is sampled (the newest; a fleet rolls out a handful at a time).
pub const SAMPLED_RELEASES_MAX: usize = 64;

/// A summary made later than this after this node's clock is refused: it would outrank
/// every honest summary of its site for that long.
pub const CLOCK_SKEW_MAX_S: i64 = 600;

/// A site whose latest summary is older than this is shown as stale: its aggregators have
/// been silent for three heartbeats.
pub const SUMMARY_STALE_S: i64 = 3 * scheduler::control::SUMMARY_HEARTBEAT.as_secs() as i64;

/// The share of installing nodes a critical release must reach by its deadline.
pub const CRITICAL_SHARE: f64 = 0.99;

/// Most missing nodes one compliance row lists (all are counted).
pub const MISSING_LISTED_MAX: usize = 1000;

#[derive(Debug, Clone)]
struct HeldRecord {
    /// The latest record.
    body: StatusBody,
    signed: Vec<u8>,
    /// The latest record with every release any of the node's records named (the latest
    /// entry each) in place of its own list: what the figures are computed from.
    merged: StatusBody,
    /// Per channel, the (published, id) of the merged entries of it: what the figures of a
    /// channel need ([`OwnFigures`]).
    by_channel: HashMap<String, Vec<(i64, ReleaseId)>>,
}

impl HeldRecord {
    /// The node's ledger with only the entries of `channels` (and those of no channel).
    fn only_channels(&self, channels: &HashSet<String>) -> NodeEntries<'_> {
        let order = |x: &ReleaseStatus, published: i64, id: &ReleaseId| {
            published.cmp(&x.published_unix_s).then(x.release.cmp(id))
        };
        let mut releases = Vec::new();
        let list = &self.merged.releases;
        let named = channels
            .iter()
            .map(String::as_str)
            .filter(|c| !c.is_empty());
        for c in named.chain([""]) {
            for (published, id) in self.by_channel.get(c).into_iter().flatten() {
                if let Ok(i) = list.binary_search_by(|x| order(x, *published, id)) {
                    releases.push(&list[i]);
                }
            }
        }
        NodeEntries {
            node: self.merged.node,
            installs: self.merged.installs,
            at_unix_s: self.merged.at_unix_s,
            releases,
        }
    }
}

/// A node's entries by channel ([`HeldRecord::by_channel`]).
fn channel_index(merged: &StatusBody) -> HashMap<String, Vec<(i64, ReleaseId)>> {
    let mut out: HashMap<String, Vec<(i64, ReleaseId)>> = HashMap::new();
    for r in &merged.releases {
        out.entry(r.channel.clone())
            .or_default()
            .push((r.published_unix_s, r.release));
    }
    out
}

#[derive(Debug, Clone)]
struct HeldSummary {
    body: SummaryBody,
    signed: Vec<u8>,
}

/// Per release of another site: the number of the summary that gave its figures, the
/// figures, and the point in this node's numbering at which they changed
/// ([`Fleet::ledger_page`]).
type SiteLedger = HashMap<ReleaseId, (u64, SiteRelease, u64)>;

#[derive(Debug, Default)]
struct Inner {
    records: HashMap<NodeId, HeldRecord>,
    summaries: HashMap<String, HeldSummary>,
    /// This site's latest summary, as its aggregator published it (a member asks for it
    /// with the other sites'; its ledger is `ledgers[site]`).
    own_summary: Option<HeldSummary>,
    /// Per site, every release its summaries named within the horizon.
    ledgers: HashMap<String, SiteLedger>,
    /// Seconds without a record after which a node is silent ([`SILENT_AFTER`] unless set).
    silent_after_s: Option<i64>,
    /// Whether this node is its site's first aggregator: it makes the site's summary from
    /// the site's records and figures its own site from them; every other node figures it
    /// from that summary.
    aggregating: bool,
    /// This site's figures as last made from the records, and what changed since.
    own_figures: OwnFigures,
    /// The last point of this node's numbering of ledger changes ([`Fleet::ledger_page`]).
    generation: u64,
    /// Nodes an operator retired, with the time of the last record they had sent: a record
    /// made later brings a node back.
    forgotten: HashMap<NodeId, i64>,
    dirty_forgotten: HashSet<NodeId>,
    dirty_records: HashSet<NodeId>,
    dirty_summaries: HashSet<String>,
    /// Per release: (unix s, nodes done fleet-wide) samples, oldest first.
    history: HashMap<ReleaseId, VecDeque<(i64, u64)>>,
}

/// A site's figures from its records, kept between summaries: an aggregator publishes every
/// few seconds while a release moves, and figuring every release of a month across every
/// node each time cost more than everything else it does (the month scenario measured it).
/// A new record changes the figures of its entries' channels only ([`merge_into`] says
/// which); a node turning silent, or back, and entries leaving a ledger change any.
#[derive(Debug)]
struct OwnFigures {
    figures: HashMap<ReleaseId, SiteRelease>,
    /// Channels whose entries changed since the figures were made.
    dirty: HashSet<String>,
    /// Every figure must be made again.
    all: bool,
    /// The nodes that were silent when the figures were made.
    silent: Vec<NodeId>,
    /// Per release, the point of the ledger numbering at which its figures last changed.
    changed: HashMap<ReleaseId, u64>,
}

impl Default for OwnFigures {
    fn default() -> Self {
        Self {
            figures: HashMap::new(),
            dirty: HashSet::new(),
            all: true,
            silent: Vec::new(),
            changed: HashMap::new(),
        }
    }
}

/// This node's view of the fleet: its site's records and the other sites' summaries.
#[derive(Debug)]
pub struct Fleet {
    site: String,
    /// This run's numbering of ledger changes ([`Fleet::ledger_page`]): a member that asks
    /// with another epoch gets every entry again.
    epoch: u64,
    inner: Mutex<Inner>,
}

/// Most reasons [`FleetReport::reasons`] lists.
pub const REASONS_LISTED_MAX: usize = 10;

/// A reason nodes failed or refused a release, and how many gave it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReasonCount {
    /// `failed` or `refused`.
    pub state: String,
    /// The error their records give.
    pub reason: String,
    /// How many nodes give it.
    pub nodes: u64,
}

/// Why a node could not be retired from the fleet view ([`Fleet::forget`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ForgetError {
    /// No record of it is held: it is not of this site, or unknown.
    #[error("no record of node {0} is held here: run this on a node of its site")]
    Unknown(String),
    /// It sent a record within the silence bound.
    #[error(
        "node {node} sent its last record {ago_s} s ago; only a node silent for {after_s} s may be forgotten"
    )]
    NotSilent {
        /// The node, hex.
        node: String,
        /// Seconds since its last record.
        ago_s: i64,
        /// The silence bound, seconds.
        after_s: i64,
    },
    /// It is this node, or one with a live connection to it: up, whatever its records say
    /// (a node that has nothing new sends a record only at its heartbeat).
    #[error(
        "node {0} is up (this node, or connected to it now): only a stopped node may be forgotten; it is silent only while it sends no record"
    )]
    Reachable(String),
}

/// Most retired nodes remembered: as many as a site may have; past it the one retired
/// longest ago is forgotten for good (its records were dropped already).
pub const FORGOTTEN_MAX: usize = SITE_RECORDS_MAX;

/// Why a record or a summary was not kept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OfferError {
    /// It does not verify.
    #[error(transparent)]
    Invalid(#[from] StatusError),
    /// As new or newer is held (a replay, or a duplicate).
    #[error("not newer than the one held")]
    NotNewer,
    /// The limit of records or sites is reached.
    #[error("no room for another node or site")]
    Full,
    /// A record of another site: only summaries of other sites are kept.
    #[error("a record of site {0}, not this node's")]
    OtherSite(String),
    /// A summary of this node's own site: its figures come from the records.
    #[error("a summary of this node's own site")]
    OwnSite,
    /// Made too far in the future.
    #[error("made {0} s after this node's clock")]
    FromTheFuture(i64),
    /// A record of a node an operator retired, made before it was ([`Fleet::forget`]).
    #[error("a record of a node retired from the fleet view")]
    Forgotten,
}

/// Largest stored ledger, encoded: [`scheduler::ledger::RELEASES_KEPT_MAX`] entries of at most
/// about 1.3 KiB (a site's entry with three failed nodes' errors and every delay bucket).
pub const LEDGER_BYTES_MAX: usize = 2 << 20;

/// What the store keeps of the fleet: the signed records and summaries, and the ledgers made
/// from them ([`Fleet::take_dirty`] gives what changed, [`Fleet::from_stored`] takes it all).
#[derive(Debug, Default, Clone)]
pub struct Stored {
    /// Each node's latest signed record.
    pub records: Vec<(NodeId, Vec<u8>)>,
    /// Each other site's latest signed summary.
    pub summaries: Vec<(String, Vec<u8>)>,
    /// Each node's ledger: every release its records named, encoded (at most
    /// [`LEDGER_BYTES_MAX`]).
    pub node_ledgers: Vec<(NodeId, Vec<u8>)>,
    /// Each other site's ledger: (summary number, figures) per release, encoded.
    pub site_ledgers: Vec<(String, Vec<u8>)>,
    /// Nodes retired ([`Fleet::forget`]): the time of their last record (their record and
    /// ledger are dropped), or `None` for a node that came back (its tombstone is dropped).
    pub forgotten: Vec<(NodeId, Option<i64>)>,
}

impl Stored {
    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
            && self.summaries.is_empty()
            && self.node_ledgers.is_empty()
            && self.site_ledgers.is_empty()
            && self.forgotten.is_empty()
    }
}

/// A node of this site with no record for this long is silent: counted apart, left out of
/// the ETA. [`scheduler::control::HEARTBEATS_BEFORE_SILENT`] of a node's heartbeats
/// ([`scheduler::control::STATUS_HEARTBEAT`]).
pub const SILENT_AFTER: std::time::Duration = std::time::Duration::from_secs(
    scheduler::control::HEARTBEATS_BEFORE_SILENT as u64
        * scheduler::control::STATUS_HEARTBEAT.as_secs(),
);

/// Takes `node`'s record out of the view and keeps a tombstone at `last` (the oldest
/// tombstone leaves past [`FORGOTTEN_MAX`]).
fn retire(inner: &mut Inner, node: &NodeId, last: i64) {
    inner.records.remove(node);
    inner.dirty_records.remove(node);
    if inner.forgotten.len() >= FORGOTTEN_MAX && !inner.forgotten.contains_key(node) {
        if let Some(oldest) = inner
            .forgotten
            .iter()
            .min_by_key(|(_, at)| **at)
            .map(|(n, _)| *n)
        {
            inner.forgotten.remove(&oldest);
            inner.dirty_forgotten.insert(oldest);
        }
    }
    inner.forgotten.insert(*node, last);
    inner.dirty_forgotten.insert(*node);
    inner.own_figures.all = true;
}

/// Records made before this are silent at `now_unix_s`.
fn silent_before(inner: &Inner, now_unix_s: i64) -> i64 {
    now_unix_s.saturating_sub(
        inner
            .silent_after_s
            .unwrap_or(SILENT_AFTER.as_secs() as i64),
    )
}

/// Nodes by state. Every node counts once (see [`SiteRelease::states`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateCounts {
    /// Nodes that do not know the release yet.
    pub unknown: u64,
    /// Nodes that have not applied it and sent no record for [`SILENT_AFTER`].
    #[serde(default)]
    pub silent: u64,
    /// Known and verified, nothing fetched.
    pub announced: u64,
    /// Fetching.
    pub downloading: u64,
    /// Held back by a closed download window.
    pub paused: u64,
    /// Holding the whole release, not installed.
    pub complete: u64,
    /// Installed.
    pub activated: u64,
    /// Failed.
    pub failed: u64,
    /// Covered by a newer version of the channel (installed or held), or stopped because one
    /// completed first.
    pub superseded: u64,
    /// Refused before anything was fetched (signature, version, expiry).
    pub refused: u64,
    /// Not following the release's channel.
    pub not_followed: u64,
    /// Holding it, held from installing by an exception (`p2pctl hold`).
    #[serde(default)]
    pub held: u64,
    /// Left out by the release's target: they fetch and serve it, never install it, and
    /// count nowhere else (not in [`StateCounts::total`]).
    #[serde(default)]
    pub not_targeted: u64,
    /// Holding it, waiting on its rollout (a requirement, an earlier ring's gate, a halt,
    /// an operator's pause or abort).
    #[serde(default)]
    pub waiting: u64,
    /// Installed, then rolled back (a fleet order or the node's operator).
    #[serde(default)]
    pub rolled_back: u64,
}

impl StateCounts {
    fn add(&mut self, r: &SiteRelease, nodes: u32) {
        use ReleaseState::*;
        let c = |s| u64::from(r.count(s));
        self.announced += c(Announced);
        self.downloading += c(Downloading);
        self.paused += c(PausedByWindow);
        self.complete += c(Complete);
        self.activated += c(Activated);
        self.failed += c(Failed);
        self.superseded += c(Superseded) + u64::from(r.covered);
        self.refused += c(Refused);
        self.not_followed += c(NotFollowed);
        self.held += c(Held);
        self.not_targeted += c(NotTargeted);
        self.waiting += c(Waiting);
        self.rolled_back += c(RolledBack);
        self.silent += u64::from(r.silent);
        self.unknown += u64::from(nodes.saturating_sub(r.known()));
    }

    /// Nodes holding the whole release (complete, installed, held from installing,
    /// waiting on the rollout, or rolled back).
    pub fn holding(&self) -> u64 {
        self.complete + self.activated + self.held + self.waiting + self.rolled_back
    }

    /// Nodes done with it: holding it, or covered by a newer version.
    pub fn done(&self) -> u64 {
        self.holding() + self.superseded
    }

    /// Nodes still expected to come to hold it without anyone's help, now: not done, not
    /// failed, not refused, not following elsewhere, not waiting for a window, not silent.
    pub fn moving(&self) -> u64 {
        self.unknown + self.announced + self.downloading
    }

    /// Every node counted.
    pub fn total(&self) -> u64 {
        self.done()
            + self.moving()
            + self.paused
            + self.failed
            + self.refused
            + self.not_followed
            + self.silent
    }
}

/// One site's figures for a release.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SiteProgress {
    /// Site.
    pub site: String,
    /// Nodes of the site.
    pub nodes: u64,
    /// Of those, holding the whole release.
    pub holding: u64,
    /// Covered by a newer version.
    pub superseded: u64,
    /// Failed.
    pub failed: u64,
    /// Its nodes counted silent (no record for the bound, the release not applied).
    #[serde(default)]
    pub silent: u64,
    /// Chunks held over chunks wanted, across the site's nodes (0 to 1; done nodes count as
    /// holding every chunk).
    pub progress: f64,
    /// `records` (this node's site, or a site asked with `--site`) or `summary`.
    pub from: String,
    /// For a summary: how old it is, seconds.
    pub age_s: Option<i64>,
    /// For a summary: the aggregator that made it, hex.
    pub aggregator: Option<String>,
    /// For a summary: older than [`SUMMARY_STALE_S`].
    pub stale: bool,
}

/// A node whose fetch or installation failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedNode {
    /// Node id, hex.
    pub node: String,
    /// Its site.
    pub site: String,
    /// The release, hex.
    #[serde(default)]
    pub release: String,
    /// What it said went wrong.
    pub error: String,
    /// Since when, unix seconds.
    pub since_unix_s: i64,
}

/// One node of a site whose records are at hand (`--site`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeDetail {
    /// Node id, hex.
    pub node: String,
    /// Where the release stands on it (`unknown`, a state name, or `superseded` when a newer
    /// version covers it).
    pub state: String,
    /// Chunks held.
    pub chunks_have: u32,
    /// Since when, unix seconds (0: unknown).
    pub since_unix_s: i64,
    /// The error, if any.
    pub error: Option<String>,
    /// When its record was made, unix seconds.
    pub record_at_unix_s: i64,
}

/// Where one release stands across the fleet (`GET /v1/fleet/{release}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FleetReport {
    /// Release id, hex.
    pub release: String,
    /// Its channel (empty if unknown here).
    #[serde(default)]
    pub channel: String,
    /// Its version.
    #[serde(default)]
    pub version: u64,
    /// Nodes in the fleet (sites with a record or a summary).
    pub nodes: u64,
    /// Of those, nodes that install releases.
    #[serde(default)]
    pub installers: u64,
    /// Nodes by state; they add up to `nodes`.
    pub states: StateCounts,
    /// Sites, the furthest behind first (most nodes not done, then least progress).
    pub sites: Vec<SiteProgress>,
    /// Failed nodes listed (at most [`FAILED_LISTED_MAX`]; summaries name a few per site),
    /// newest failure first. `states.failed` counts them all.
    pub failed: Vec<FailedNode>,
    /// Why nodes failed or refused it, the commonest first (at most [`REASONS_LISTED_MAX`]):
    /// each site's commonest reasons, summed across sites.
    #[serde(default)]
    pub reasons: Vec<ReasonCount>,
    /// Nodes that came to be done with it per minute, over the last [`RATE_WINDOW_S`].
    pub holding_per_min: f64,
    /// At that rate, seconds until the moving nodes are done (none when nothing moved, or
    /// no node is moving). Nodes waiting for a window, failed, refused or not following the
    /// channel are not waited for.
    pub eta_s: Option<f64>,
    /// When the earliest closed window of a paused node opens, unix seconds.
    #[serde(default)]
    pub window_opens_unix_s: Option<i64>,
    /// For `--site`: every node of that site.
    #[serde(default)]
    pub nodes_detail: Vec<NodeDetail>,
    /// What an operator should look at, in words: the conditions the alerting rules
    /// (`deploy/prometheus/p2pd.rules.yml`) page on, as far as this view shows them.
    #[serde(default)]
    pub warnings: Vec<String>,
    /// For a release with rings: each gating ring's nodes across the fleet (the last ring,
    /// which gates nothing, is not counted), what every node's gate reads.
    #[serde(default)]
    pub rings: Vec<RingCount>,
    /// Nodes a ring's failures halted (waiting, their reason a halt): the
    /// `P2pdRolloutHalted` alert's figure.
    #[serde(default)]
    pub halted: u64,
    /// When the report was made, unix seconds.
    pub at_unix_s: i64,
}

/// A release the compliance report covers, as the store describes it.
#[derive(Debug, Clone)]
pub struct ReleaseFacts {
    /// The release.
    pub id: ReleaseId,
    /// Channel.
    pub channel: String,
    /// Version.
    pub version: u64,
    /// Its severity's name.
    pub severity: String,
    /// Whether it is critical (the 72-hour rule applies).
    pub critical: bool,
    /// When it was published (created), unix seconds.
    pub published_unix_s: i64,
    /// Unique chunks in it.
    pub chunks_total: u32,
}

/// A node that has not installed a release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MissingNode {
    /// Node id, hex.
    pub node: String,
    /// Its site.
    pub site: String,
    /// Where the release stands on it (`unknown`: its record does not name it).
    pub state: String,
}

/// A site, other than this node's, with nodes that have not installed a release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MissingSite {
    /// The site.
    pub site: String,
    /// Its installing nodes that have not installed it.
    pub nodes: u64,
}

/// One release in the compliance report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComplianceRow {
    /// Release id, hex.
    pub release: String,
    /// Channel.
    pub channel: String,
    /// Version.
    pub version: u64,
    /// Severity.
    pub severity: String,
    /// Published, unix seconds.
    pub published_unix_s: i64,
    /// Nodes in the fleet.
    pub nodes: u64,
    /// Of those, nodes that install releases: the ones the report holds to it.
    pub installers: u64,
    /// Installing nodes that installed it or a newer version of its channel.
    pub activated: u64,
    /// `activated / installers`: the share applied.
    pub activated_share: f64,
    /// Of `activated`, the nodes that installed this release itself.
    #[serde(default)]
    pub installed: u64,
    /// Of `activated`, the nodes covered by a newer version of its channel they installed
    /// (`activated` = `installed` + `covered`: the share applied counts both).
    #[serde(default)]
    pub covered: u64,
    /// Seconds from publishing until 50, 90 and 99 % of the installing nodes had installed it
    /// (`None`: not reached). Read from delay buckets: at most a quarter late.
    pub to_50_s: Option<i64>,
    /// See `to_50_s`.
    pub to_90_s: Option<i64>,
    /// See `to_50_s`.
    pub to_99_s: Option<i64>,
    /// For a critical release: `met` (99 % installed within 72 hours), `missed`, or `open`
    /// (not yet 72 hours old, not yet at 99 %); `n/a` otherwise.
    pub deadline: String,
    /// Nodes of this node's site that have not installed it (at most [`MISSING_LISTED_MAX`]):
    /// on a member that does not aggregate, those whose records it holds say so (a node none
    /// of them named the release for is counted in `missing_total`, not named).
    pub missing: Vec<MissingNode>,
    /// Other sites with installing nodes that have not, most first.
    #[serde(default)]
    pub missing_sites: Vec<MissingSite>,
    /// How many installing nodes have not, fleet-wide.
    pub missing_total: u64,
    /// Of `missing_total`, the nodes that hold it back by an exception (`p2pctl hold`):
    /// deferred with a reason and an end, not failed.
    #[serde(default)]
    pub exceptions: u64,
    /// Their reasons, the commonest first (at most [`REASONS_LISTED_MAX`]).
    #[serde(default)]
    pub exception_reasons: Vec<protocol::summary::Reason>,
}

/// One site's figures for a release, and where they came from.
struct Row {
    site: String,
    nodes: u32,
    installers: u32,
    figures: SiteRelease,
    summary: Option<(i64, NodeId)>,
}

fn lock(m: &Mutex<Inner>) -> std::sync::MutexGuard<'_, Inner> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Of signed items (when made, bytes), the newest first, as many as fit in `max_bytes` of a
/// message: each costs its bytes and a length prefix of at most 5.
fn newest_within<'a>(
    items: impl Iterator<Item = (i64, &'a Vec<u8>)>,
    max_bytes: usize,
) -> Vec<Vec<u8>> {
    let mut list: Vec<(i64, &Vec<u8>)> = items.collect();
    list.sort_by_key(|(at, _)| std::cmp::Reverse(*at));
    let mut used = 0;
    let mut out = Vec::new();
    for (_, signed) in list {
        used += signed.len() + 5;
        if used > max_bytes {
            break;
        }
        out.push(signed.clone());
    }
    out
}

impl Fleet {
    /// An empty view for a node of `site`.
    pub fn new(site: &str) -> Self {
        // Any number that differs between runs: the clock's nanoseconds and this table's
        // address.
        let clock = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let inner = Mutex::new(Inner::default());
        let epoch = clock ^ (&inner as *const _ as u64).rotate_left(32);
        Self {
            site: site.to_owned(),
            epoch,
            inner,
        }
    }

    /// The view from what a store held: records and summaries (each verified again; those of
    /// the wrong level for `site` are left out), then the ledgers of the nodes and sites kept
    /// (a ledger that does not decode or breaks a bound is left out, and is rebuilt from the
    /// messages that come).
    pub fn from_stored(site: &str, stored: Stored) -> Self {
        let fleet = Self::new(site);
        lock(&fleet.inner).forgotten = stored
            .forgotten
            .iter()
            .filter_map(|(n, at)| at.map(|at| (*n, at)))
            .take(FORGOTTEN_MAX)
            .collect();
        for (_, r) in &stored.records {
            let _ = fleet.offer_record(r);
        }
        for (_, s) in &stored.summaries {
            if let Err(OfferError::OwnSite) = fleet.offer_summary(s, i64::MAX - CLOCK_SKEW_MAX_S) {
                let _ = fleet.offer_own_summary(s, i64::MAX - CLOCK_SKEW_MAX_S);
            }
        }
        {
            let mut guard = lock(&fleet.inner);
            let inner = &mut *guard;
            for (node, bytes) in &stored.node_ledgers {
                let Some(held) = inner.records.get_mut(node) else {
                    continue;
                };
                let Some(entries) = decode_node_ledger(bytes) else {
                    continue;
                };
                let mut merged = StatusBody {
                    releases: Vec::new(),
                    ..held.body.clone()
                };
                let old = StatusBody {
                    releases: entries,
                    ..held.body.clone()
                };
                merge_into(&mut merged, &old);
                merge_into(&mut merged, &held.body);
                held.by_channel = channel_index(&merged);
                held.merged = merged;
            }
            inner.own_figures.all = true;
            for (site, bytes) in &stored.site_ledgers {
                let held = if *site == fleet.site {
                    inner.own_summary.is_some()
                } else {
                    inner.summaries.contains_key(site)
                };
                if !held {
                    continue;
                }
                let Some(entries) = decode_site_ledger(bytes) else {
                    continue;
                };
                let ledger = inner.ledgers.entry(site.clone()).or_default();
                for (seq, r) in entries {
                    merge_site_entry(ledger, seq, r, &mut inner.generation);
                }
            }
        }
        let _ = fleet.take_dirty();
        fleet
    }

    /// The site this view is from.
    pub fn site(&self) -> &str {
        &self.site
    }

    /// Keeps `bytes` as its node's record if it verifies, is of this site and is newer than
    /// the one held. Returns the body kept.
    pub fn offer_record(&self, bytes: &[u8]) -> Result<StatusBody, OfferError> {
        let body = SignedStatus::decode(bytes)?.verify()?;
        self.keep_record(body.clone(), bytes.to_vec())?;
        Ok(body)
    }

    /// [`Fleet::offer_record`] for a record whose signature was checked already (`signed`:
    /// its bytes as they came, served to members that ask; the simulator, which makes the
    /// bodies itself, passes none).
    pub fn keep_record(&self, body: StatusBody, signed: Vec<u8>) -> Result<(), OfferError> {
        if body.site != self.site {
            return Err(OfferError::OtherSite(body.site));
        }
        let mut guard = lock(&self.inner);
        let inner = &mut *guard;
        if inner
            .forgotten
            .get(&body.node)
            .is_some_and(|&last| body.at_unix_s <= last)
        {
            return Err(OfferError::Forgotten);
        }
        match inner.records.get(&body.node) {
            Some(held) if !body.supersedes(&held.body) => return Err(OfferError::NotNewer),
            None if inner.records.len() >= SITE_RECORDS_MAX => {
                // Room for a node that reports: the one silent longest (by the newcomer's
                // time) leaves, as `p2pctl node forget` would retire it, so records that
                // stopped coming (made up, or of nodes long gone) cannot keep a live node
                // out of a full table.
                let silent = silent_before(inner, body.at_unix_s);
                let oldest = inner
                    .records
                    .iter()
                    .min_by_key(|(_, h)| h.body.at_unix_s)
                    .map(|(n, h)| (*n, h.body.at_unix_s));
                match oldest {
                    Some((node, last)) if last < silent => retire(inner, &node, last),
                    _ => return Err(OfferError::Full),
                }
            }
            _ => {}
        }
        if inner.forgotten.remove(&body.node).is_some() {
            // It is back.
            inner.dirty_forgotten.insert(body.node);
        }
        inner.dirty_records.insert(body.node);
        let (mut merged, mut by_channel) = inner
            .records
            .remove(&body.node)
            .map(|h| (h.merged, h.by_channel))
            .unwrap_or_else(|| {
                let empty = StatusBody {
                    releases: Vec::new(),
                    ..body.clone()
                };
                (empty, HashMap::new())
            });
        let merge = merge_into(&mut merged, &body);
        if merge.moved {
            by_channel = channel_index(&merged);
        } else {
            for (channel, published, id) in merge.added {
                by_channel.entry(channel).or_default().push((published, id));
            }
        }
        match merge.channels {
            Some(channels) => inner.own_figures.dirty.extend(channels),
            None => inner.own_figures.all = true,
        }
        inner.records.insert(
            body.node,
            HeldRecord {
                body,
                signed,
                merged,
                by_channel,
            },
        );
        Ok(())
    }

    /// Keeps `bytes` as its site's summary if it verifies, is of another site, is not made
    /// (nor numbered) after `now_unix_s` plus [`CLOCK_SKEW_MAX_S`] and is newer than the one
    /// held.
    pub fn offer_summary(&self, bytes: &[u8], now_unix_s: i64) -> Result<SummaryBody, OfferError> {
        let body = SignedSummary::decode(bytes)?.verify()?;
        if body.site == self.site {
            return Err(OfferError::OwnSite);
        }
        self.keep_summary(body, bytes, now_unix_s)
    }

    /// Keeps `bytes` as this site's own summary (what its aggregator published) if it
    /// verifies, is of this site, is not from the future and is newer than the one held:
    /// a member that does not aggregate figures its own site from it, as other nodes do.
    pub fn offer_own_summary(
        &self,
        bytes: &[u8],
        now_unix_s: i64,
    ) -> Result<SummaryBody, OfferError> {
        let body = SignedSummary::decode(bytes)?.verify()?;
        if body.site != self.site {
            return Err(OfferError::OtherSite(body.site));
        }
        self.keep_summary(body, bytes, now_unix_s)
    }

    /// How long a node of this site may send no record before it counts as silent (`[node]
    /// silent_after_s`).
    pub fn set_silent_after(&self, after: std::time::Duration) {
        lock(&self.inner).silent_after_s = Some(i64::try_from(after.as_secs()).unwrap_or(i64::MAX));
    }

    /// Whether this node is its site's first aggregator (the daemon says so as its rank
    /// changes).
    pub fn set_aggregating(&self, yes: bool) {
        lock(&self.inner).aggregating = yes;
    }

    fn keep_summary(
        &self,
        body: SummaryBody,
        bytes: &[u8],
        now_unix_s: i64,
    ) -> Result<SummaryBody, OfferError> {
        if body.at_unix_s > now_unix_s + CLOCK_SKEW_MAX_S {
            return Err(OfferError::FromTheFuture(body.at_unix_s - now_unix_s));
        }
        // The number is the aggregator's clock in milliseconds: one far ahead of this
        // node's would keep every later summary of the site out as "not newer".
        let latest_seq = u64::try_from(now_unix_s.saturating_add(CLOCK_SKEW_MAX_S))
            .unwrap_or(0)
            .saturating_mul(1000);
        if body.seq > latest_seq {
            return Err(OfferError::FromTheFuture(
                i64::try_from(body.seq / 1000).unwrap_or(i64::MAX) - now_unix_s,
            ));
        }
        let mut guard = lock(&self.inner);
        let inner = &mut *guard;
        let own = body.site == self.site;
        let held = if own {
            inner.own_summary.as_ref()
        } else {
            inner.summaries.get(&body.site)
        };
        match held {
            Some(held) if !body.supersedes(&held.body) => return Err(OfferError::NotNewer),
            None if !own && inner.summaries.len() >= SITES_MAX => return Err(OfferError::Full),
            _ => {}
        }
        inner.dirty_summaries.insert(body.site.clone());
        let ledger = inner.ledgers.entry(body.site.clone()).or_default();
        for r in &body.releases {
            merge_site_entry(ledger, body.seq, r.clone(), &mut inner.generation);
        }
        let keys: Vec<(ReleaseId, i64, i64)> = ledger
            .values()
            .map(|(_, r, _)| (r.release, r.published_unix_s, body.at_unix_s))
            .collect();
        for gone in ledger::evict(&keys, body.at_unix_s) {
            ledger.remove(&gone);
        }
        let held = HeldSummary {
            body: body.clone(),
            signed: bytes.to_vec(),
        };
        if own {
            inner.own_summary = Some(held);
        } else {
            inner.summaries.insert(body.site.clone(), held);
        }
        Ok(body)
    }

    /// Records held (this site's nodes).
    pub fn len(&self) -> usize {
        lock(&self.inner).records.len()
    }

    /// Whether no record is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The releases a held record or summary names whose id starts with the hex `prefix`
    /// (any case), sorted: what `p2pctl fleet PREFIX` may mean on a node that does not
    /// store the release.
    pub fn releases_matching(&self, prefix: &str) -> Vec<ReleaseId> {
        let prefix = prefix.to_ascii_lowercase();
        let inner = lock(&self.inner);
        let mut out: Vec<ReleaseId> = Self::named(&inner)
            .into_iter()
            .filter(|id| id.to_hex().starts_with(&prefix))
            .collect();
        out.sort_unstable();
        out
    }

    /// Every release a ledger names, once each.
    fn named(inner: &Inner) -> Vec<ReleaseId> {
        let in_records = inner
            .records
            .values()
            .flat_map(|r| r.merged.releases.iter().map(|s| s.release));
        let in_summaries = inner.ledgers.values().flat_map(|l| l.keys().copied());
        let set: HashSet<ReleaseId> = in_records.chain(in_summaries).collect();
        set.into_iter().collect()
    }

    /// Every release a record or summary named that was published at or after `since_unix_s`,
    /// with what is known of it: the releases of the compliance report, whether this node
    /// stores them or not, oldest first. A release whose publishing time no message gave is
    /// left out.
    pub fn releases_since(&self, since_unix_s: i64) -> Vec<ReleaseFacts> {
        let inner = lock(&self.inner);
        let mut out: Vec<ReleaseFacts> = Self::named(&inner)
            .into_iter()
            .filter_map(|id| {
                let f = Self::facts(&inner, &id, None);
                (f.published_unix_s > 0 && f.published_unix_s >= since_unix_s).then(|| {
                    let severity = f.severity.unwrap_or(protocol::Severity::Low);
                    ReleaseFacts {
                        id,
                        channel: f.channel,
                        version: f.version,
                        severity: severity.to_string(),
                        critical: severity == protocol::Severity::Critical,
                        published_unix_s: f.published_unix_s,
                        chunks_total: f.chunks_total,
                    }
                })
            })
            .collect();
        sort_for_report(&mut out);
        out
    }

    /// Sites known: this one and those with a summary.
    pub fn sites(&self) -> usize {
        lock(&self.inner).summaries.len() + 1
    }

    /// The signed records of this site (what `Request::SiteRecords` answers), newest first,
    /// at most `max_bytes` of them.
    pub fn site_records(&self, max_bytes: usize) -> Vec<Vec<u8>> {
        let inner = lock(&self.inner);
        newest_within(
            inner
                .records
                .values()
                .map(|r| (r.body.at_unix_s, &r.signed)),
            max_bytes,
        )
    }

    /// The summaries held, signed, at most `max_bytes` of them (newest first).
    pub fn summaries_signed(&self, max_bytes: usize) -> Vec<Vec<u8>> {
        let inner = lock(&self.inner);
        newest_within(
            inner
                .summaries
                .values()
                .map(|s| (s.body.at_unix_s, &s.signed)),
            max_bytes,
        )
    }

    /// The records of this site, verified bodies.
    pub fn own_records(&self) -> Vec<StatusBody> {
        lock(&self.inner)
            .records
            .values()
            .map(|r| r.body.clone())
            .collect()
    }

    /// The record held for `node`, signed.
    pub fn record_of(&self, node: &NodeId) -> Option<Vec<u8>> {
        lock(&self.inner)
            .records
            .get(node)
            .map(|r| r.signed.clone())
    }

    /// The summaries held, signed, with their site and number.
    pub fn summaries(&self) -> Vec<(String, u64, Vec<u8>)> {
        lock(&self.inner)
            .summaries
            .values()
            .map(|s| (s.body.site.clone(), s.body.seq, s.signed.clone()))
            .collect()
    }

    /// The aggregator that made each other site's summary, where it can be reached: the
    /// overlay's candidates.
    pub fn publishers(&self) -> Vec<(String, protocol::summary::Contact)> {
        lock(&self.inner)
            .summaries
            .values()
            .filter_map(|s| {
                s.body
                    .contacts
                    .iter()
                    .find(|c| c.node == s.body.aggregator)
                    .map(|c| (s.body.site.clone(), c.clone()))
            })
            .collect()
    }

    /// The contacts other sites' summaries name, with their site.
    pub fn contacts(&self) -> Vec<(String, protocol::summary::Contact)> {
        lock(&self.inner)
            .summaries
            .values()
            .flat_map(|s| {
                s.body
                    .contacts
                    .iter()
                    .map(|c| (s.body.site.clone(), c.clone()))
            })
            .collect()
    }

    /// The figures of this site's records for a summary at `now_unix_s`: nodes, installing
    /// nodes, releases (a node with no record for [`SILENT_AFTER`] counted silent).
    pub fn own_figures(&self, now_unix_s: i64) -> (u32, u32, Vec<SiteRelease>) {
        let mut guard = lock(&self.inner);
        let inner = &mut *guard;
        let before = silent_before(inner, now_unix_s);
        let bodies: Vec<&StatusBody> = inner.records.values().map(|r| &r.merged).collect();
        let installers = bodies.iter().filter(|b| b.installs).count() as u32;
        let mut silent: Vec<NodeId> = bodies
            .iter()
            .filter(|b| b.at_unix_s < before)
            .map(|b| b.node)
            .collect();
        silent.sort_unstable();
        let cache = &mut inner.own_figures;
        let generation = &mut inner.generation;
        // Notes the figures of a release, and the point at which they changed.
        let mut keep = |cache: &mut OwnFigures, r: SiteRelease| {
            if cache.figures.get(&r.release) != Some(&r) {
                *generation += 1;
                cache.changed.insert(r.release, *generation);
                cache.figures.insert(r.release, r);
            }
        };
        if cache.all || silent != cache.silent {
            let fresh = site_releases(&bodies, Some(before));
            let named: HashSet<ReleaseId> = fresh.iter().map(|r| r.release).collect();
            cache.figures.retain(|id, _| named.contains(id));
            cache.changed.retain(|id, _| named.contains(id));
            for r in fresh {
                keep(cache, r);
            }
        } else if !cache.dirty.is_empty() {
            // The figures of the changed channels, from each node's entries of them. An
            // entry of no channel (its node refused the release) counts with the entries of
            // the release's channel: that channel is made again too.
            let mut dirty = std::mem::take(&mut cache.dirty);
            for h in inner.records.values() {
                for (_, id) in h.by_channel.get("").into_iter().flatten() {
                    if let Some(f) = cache.figures.get(id).filter(|f| !f.channel.is_empty()) {
                        dirty.insert(f.channel.clone());
                    }
                }
            }
            let parts: Vec<NodeEntries<'_>> = inner
                .records
                .values()
                .map(|h| h.only_channels(&dirty))
                .collect();
            for r in protocol::summary::site_releases_of(&parts, Some(before)) {
                keep(cache, r);
            }
        }
        cache.all = false;
        cache.dirty.clear();
        cache.silent = silent;
        let mut out: Vec<SiteRelease> = cache.figures.values().cloned().collect();
        protocol::summary::sort_site_releases(&mut out);
        (bodies.len() as u32, installers, out)
    }

    /// Retires `node` from the fleet view and the report (`p2pctl node forget`): only a node
    /// of this site that has sent no record for the silence bound. Its record and ledger are
    /// dropped and a tombstone kept, so records it made before do not bring it back (they
    /// still travel in the site for a while); one made later does. Returns the time of its
    /// last record. `reachable`: the node is this one or has a live connection to it, which
    /// refuses whatever the age of its record.
    pub fn forget(
        &self,
        node: &NodeId,
        now_unix_s: i64,
        reachable: bool,
    ) -> Result<i64, ForgetError> {
        let mut guard = lock(&self.inner);
        let inner = &mut *guard;
        let Some(held) = inner.records.get(node) else {
            return Err(ForgetError::Unknown(node.to_hex()));
        };
        if reachable {
            return Err(ForgetError::Reachable(node.to_hex()));
        }
        let last = held.body.at_unix_s;
        if last >= silent_before(inner, now_unix_s) {
            return Err(ForgetError::NotSilent {
                node: node.to_hex(),
                ago_s: now_unix_s - last,
                after_s: now_unix_s - silent_before(inner, now_unix_s),
            });
        }
        retire(inner, node, last);
        Ok(last)
    }

    /// Drops a node the fleet revoked (`p2pctl node revoke`) at `at_unix_s`: its record and
    /// entries leave at once, whatever their age, and a tombstone at that time keeps out the
    /// records it made before (a node enrolled again afterwards comes back with its new
    /// records). Whether it had a record.
    pub fn drop_revoked(&self, node: &NodeId, at_unix_s: i64) -> bool {
        let mut guard = lock(&self.inner);
        let inner = &mut *guard;
        let had = inner.records.contains_key(node);
        let last = inner
            .records
            .get(node)
            .map_or(at_unix_s, |h| h.body.at_unix_s.max(at_unix_s));
        retire(inner, node, last);
        had
    }

    /// The entries of this node's site ledgers that changed after `after` in numbering
    /// `epoch` (every entry if `epoch` is not this run's), oldest change first, as many as
    /// fit in `max_bytes` encoded: what this site's first aggregator hands a member that
    /// asks (`Request::Ledger`). An aggregator's own site is its figures from the records
    /// (as of its last summary check), numbered `now_ms`; every other node's, the ledger its
    /// own site's summaries built.
    pub fn ledger_page(&self, epoch: u64, after: u64, now_ms: u64, max_bytes: usize) -> LedgerPage {
        let after = if epoch == self.epoch { after } else { 0 };
        let inner = lock(&self.inner);
        let mut changed: Vec<(u64, &str, u64, &SiteRelease)> = Vec::new();
        for (site, l) in &inner.ledgers {
            if *site == self.site && inner.aggregating {
                continue;
            }
            for (seq, r, at) in l.values() {
                if *at > after {
                    changed.push((*at, site.as_str(), *seq, r));
                }
            }
        }
        if inner.aggregating {
            let own = &inner.own_figures;
            for (id, at) in &own.changed {
                if let (true, Some(r)) = (*at > after, own.figures.get(id)) {
                    changed.push((*at, self.site.as_str(), now_ms, r));
                }
            }
        }
        changed.sort_unstable_by_key(|(at, _, _, r)| (*at, r.release));
        let mut page = LedgerPage {
            epoch: self.epoch,
            through: after,
            more: false,
            entries: Vec::new(),
        };
        // The list's length and the page's other fields take a few bytes.
        let mut used = 64;
        for (at, site, seq, r) in changed {
            let entry = LedgerEntry {
                site: site.to_owned(),
                seq,
                figures: r.clone(),
            };
            let bytes = protocol::codec::encode(&entry).len();
            if used + bytes > max_bytes {
                page.more = true;
                break;
            }
            used += bytes;
            page.through = at;
            page.entries.push(entry);
        }
        page
    }

    /// Merges a page of this site's first aggregator's ledgers ([`Fleet::ledger_page`]):
    /// each entry as a summary of its number would give it (a lower number never
    /// overwrites), this site's own too unless this node aggregates it. Returns the entries
    /// merged.
    pub fn merge_ledger_page(&self, page: &LedgerPage) -> usize {
        let mut guard = lock(&self.inner);
        let inner = &mut *guard;
        let mut merged = 0;
        for e in &page.entries {
            if e.site == self.site && inner.aggregating {
                continue;
            }
            if !inner.ledgers.contains_key(&e.site) && inner.ledgers.len() >= SITES_MAX {
                continue;
            }
            let ledger = inner.ledgers.entry(e.site.clone()).or_default();
            if !ledger.contains_key(&e.figures.release) && ledger.len() >= ledger::RELEASES_KEPT_MAX
            {
                continue;
            }
            if merge_site_entry(ledger, e.seq, e.figures.clone(), &mut inner.generation) {
                merged += 1;
                inner.dirty_summaries.insert(e.site.clone());
            }
        }
        merged
    }

    /// The records, summaries and ledgers changed since the last call, to be written to the
    /// store.
    pub fn take_dirty(&self) -> Stored {
        let mut inner = lock(&self.inner);
        let mut out = Stored::default();
        for n in std::mem::take(&mut inner.dirty_forgotten) {
            out.forgotten.push((n, inner.forgotten.get(&n).copied()));
        }
        for n in std::mem::take(&mut inner.dirty_records) {
            if let Some(h) = inner.records.get(&n) {
                out.records.push((n, h.signed.clone()));
                out.node_ledgers
                    .push((n, protocol::codec::encode(&h.merged.releases)));
            }
        }
        for s in std::mem::take(&mut inner.dirty_summaries) {
            let held = if s == self.site {
                inner.own_summary.as_ref()
            } else {
                inner.summaries.get(&s)
            };
            if let Some(h) = held {
                out.summaries.push((s.clone(), h.signed.clone()));
            }
            if let Some(l) = inner.ledgers.get(&s) {
                let mut entries: Vec<(u64, &SiteRelease)> =
                    l.values().map(|(seq, r, _)| (*seq, r)).collect();
                entries.sort_by_key(|(_, r)| r.release);
                out.site_ledgers
                    .push((s, protocol::codec::encode(&entries)));
            }
        }
        out
    }

    /// What the model knows of `release`: `known` (from the store) if given, else what the
    /// ledgers of this site's nodes, then of other sites, say.
    fn facts(inner: &Inner, release: &ReleaseId, known: Option<&ReleaseFacts>) -> Facts {
        let mut out = known.map_or_else(Facts::default, |f| Facts {
            channel: f.channel.clone(),
            version: f.version,
            published_unix_s: f.published_unix_s,
            severity: f.severity.parse().ok(),
            chunks_total: f.chunks_total,
        });
        for r in inner.records.values() {
            if let Some(e) = r.merged.release(release) {
                out.merge(&Facts::of_status(e));
            }
        }
        for l in inner.ledgers.values() {
            if let Some((_, e, _)) = l.get(release) {
                out.merge(&Facts::of_site(e));
            }
        }
        out
    }

    /// Every site's figures for `release`: this site's from its records (or `site_records`,
    /// another site's records asked for, in place of its summary).
    fn rows(
        inner: &Inner,
        own_site: &str,
        release: &ReleaseId,
        info: &Facts,
        asked: Option<(&str, &[StatusBody])>,
        own_index: &SiteIndex<'_>,
    ) -> Vec<Row> {
        let from_records = |site: &str, bodies: &[&StatusBody]| Row {
            site: site.to_owned(),
            nodes: bodies.len() as u32,
            installers: bodies.iter().filter(|b| b.installs).count() as u32,
            figures: site_release(bodies, *release, info),
            summary: None,
        };
        // A member that does not aggregate holds the latest record of each site-mate, not
        // every record: its own site's figures are the site's summary, as on every other
        // node, with the records' figures for a release the summary never named.
        let own_row = match (&inner.own_summary, inner.ledgers.get(own_site)) {
            (Some(s), Some(l)) if !inner.aggregating && asked.is_none_or(|a| a.0 != own_site) => {
                l.get(release).map(|(_, f, _)| Row {
                    site: own_site.to_owned(),
                    nodes: s.body.nodes,
                    installers: s.body.installers,
                    figures: f.clone(),
                    summary: Some((s.body.at_unix_s, s.body.aggregator)),
                })
            }
            _ => None,
        };
        let mut rows = vec![own_row.unwrap_or_else(|| Row {
            site: own_site.to_owned(),
            nodes: inner.records.len() as u32,
            installers: inner.records.values().filter(|r| r.body.installs).count() as u32,
            figures: own_index.figures(*release, info),
            summary: None,
        })];
        for s in inner.summaries.values() {
            if let Some((site, bodies)) = asked {
                if site == s.body.site {
                    let refs: Vec<&StatusBody> = bodies.iter().collect();
                    rows.push(from_records(site, &refs));
                    continue;
                }
            }
            let b = &s.body;
            let figures = inner
                .ledgers
                .get(&b.site)
                .and_then(|l| l.get(release))
                .map(|(_, f, _)| f.clone())
                .unwrap_or_else(|| site_release(&[], *release, info));
            rows.push(Row {
                site: b.site.clone(),
                nodes: b.nodes,
                installers: b.installers,
                figures,
                summary: Some((b.at_unix_s, b.aggregator)),
            });
        }
        if let Some((site, bodies)) = asked {
            if site != own_site && !rows.iter().any(|r| r.site == site) {
                let refs: Vec<&StatusBody> = bodies.iter().collect();
                rows.push(from_records(site, &refs));
            }
        }
        rows
    }

    /// Where `release` stands across the fleet at `now_unix_s`.
    pub fn report(
        &self,
        release: &ReleaseId,
        known: Option<&ReleaseFacts>,
        now_unix_s: i64,
    ) -> FleetReport {
        self.report_with(release, known, None, now_unix_s)
    }

    /// [`Fleet::report`], with the records of `site` (asked from that site) in place of its
    /// summary, and every one of its nodes listed.
    pub fn report_with(
        &self,
        release: &ReleaseId,
        known: Option<&ReleaseFacts>,
        site: Option<(&str, &[StatusBody])>,
        now_unix_s: i64,
    ) -> FleetReport {
        let mut inner = lock(&self.inner);
        let info = Self::facts(&inner, release, known);
        let own: Vec<&StatusBody> = inner.records.values().map(|r| &r.merged).collect();
        let rows = Self::rows(
            &inner,
            &self.site,
            release,
            &info,
            site,
            &SiteIndex::with_silence(&own, silent_before(&inner, now_unix_s)),
        );
        let mut states = StateCounts::default();
        let mut failed: Vec<FailedNode> = Vec::new();
        let mut reasons: HashMap<(ReleaseState, &str), u32> = HashMap::new();
        let mut opens: Option<i64> = None;
        let mut sites = Vec::with_capacity(rows.len());
        let mut installers = 0u64;
        for row in &rows {
            let f = &row.figures;
            states.add(f, row.nodes);
            installers += u64::from(row.installers);
            if let Some(t) = f.opens_unix_s {
                opens = Some(opens.map_or(t, |o| o.min(t)));
            }
            for x in &f.reasons {
                let n = reasons.entry((x.state, x.reason.as_str())).or_default();
                *n = n.saturating_add(x.nodes);
            }
            for e in &f.failed {
                failed.push(FailedNode {
                    node: e.node.to_hex(),
                    site: row.site.clone(),
                    release: release.to_hex(),
                    error: e.error.clone(),
                    since_unix_s: e.since_unix_s,
                });
            }
            let done = f.count(ReleaseState::Complete)
                + f.count(ReleaseState::Activated)
                + f.count(ReleaseState::Held)
                + f.count(ReleaseState::Waiting)
                + f.count(ReleaseState::RolledBack)
                + f.count(ReleaseState::Superseded)
                + f.covered;
            let held = f.chunks_have;
            let wanted = u64::from(row.nodes) * u64::from(f.chunks_total);
            sites.push(SiteProgress {
                site: row.site.clone(),
                nodes: u64::from(row.nodes),
                holding: u64::from(
                    f.count(ReleaseState::Complete)
                        + f.count(ReleaseState::Activated)
                        + f.count(ReleaseState::Held)
                        + f.count(ReleaseState::Waiting)
                        + f.count(ReleaseState::RolledBack),
                ),
                superseded: u64::from(f.covered + f.count(ReleaseState::Superseded)),
                failed: u64::from(f.count(ReleaseState::Failed)),
                silent: u64::from(f.silent),
                progress: if wanted == 0 {
                    if row.nodes > 0 && done == row.nodes {
                        1.0
                    } else {
                        0.0
                    }
                } else {
                    (held as f64 / wanted as f64).min(1.0)
                },
                from: if row.summary.is_some() {
                    "summary"
                } else {
                    "records"
                }
                .into(),
                age_s: row.summary.map(|(at, _)| (now_unix_s - at).max(0)),
                aggregator: row.summary.map(|(_, a)| a.to_hex()),
                stale: row
                    .summary
                    .is_some_and(|(at, _)| now_unix_s - at > SUMMARY_STALE_S),
            });
        }
        sites.sort_by(|a, b| {
            let behind = |s: &SiteProgress| s.nodes - (s.holding + s.superseded).min(s.nodes);
            behind(b)
                .cmp(&behind(a))
                .then(a.progress.total_cmp(&b.progress))
                .then_with(|| a.site.cmp(&b.site))
        });
        failed.sort_by(|a, b| {
            b.since_unix_s
                .cmp(&a.since_unix_s)
                .then_with(|| a.node.cmp(&b.node))
        });
        failed.truncate(FAILED_LISTED_MAX);
        // Nodes a ring's halt stops, and the commonest such reason.
        let halted = reasons
            .iter()
            .filter(|((state, why), _)| {
                *state == ReleaseState::Waiting && why.starts_with(scheduler::rollout::HALTED)
            })
            .fold(None::<(u64, &str, u32)>, |acc, ((_, why), &n)| {
                let total = acc.map_or(0, |a| a.0) + u64::from(n);
                match acc {
                    Some((_, w, most)) if most >= n => Some((total, w, most)),
                    _ => Some((total, why, n)),
                }
            })
            .map(|(nodes, why, _)| (nodes, why.to_owned()));
        let mut reasons: Vec<protocol::summary::Reason> = reasons
            .into_iter()
            .map(|((state, reason), nodes)| protocol::summary::Reason {
                state,
                reason: reason.into(),
                nodes,
            })
            .collect();
        protocol::summary::Reason::keep_commonest(&mut reasons, REASONS_LISTED_MAX);
        let reasons: Vec<ReasonCount> = reasons
            .into_iter()
            .map(|x| ReasonCount {
                state: x.state.name().into(),
                reason: x.reason,
                nodes: u64::from(x.nodes),
            })
            .collect();
        let nodes_detail = match site {
            Some((_, bodies)) => node_detail(
                bodies,
                release,
                &info,
                self::silent_before(&inner, now_unix_s),
            ),
            None => Vec::new(),
        };
        // Nodes the release's target leaves out are not counted: it is not for them.
        let nodes: u64 = rows
            .iter()
            .map(|r| u64::from(r.nodes))
            .sum::<u64>()
            .saturating_sub(states.not_targeted);
        let per_min = Self::sample(&mut inner, release, now_unix_s, states.done());
        let left = states.moving();
        let eta_s = (per_min > 0.0 && left > 0).then(|| left as f64 / per_min * 60.0);
        let applied: u64 = rows
            .iter()
            .flat_map(|r| &r.figures.installed_after)
            .map(|&n| u64::from(n))
            .sum();
        let warnings = warnings(&Warned {
            states: &states,
            nodes,
            installers,
            applied,
            critical: info.severity == Some(protocol::Severity::Critical),
            age_s: (info.published_unix_s > 0).then(|| now_unix_s - info.published_unix_s),
            stalled: left > 0 && per_min == 0.0 && Self::sampled_for(&inner, release, now_unix_s),
            halted: halted.clone(),
        });
        FleetReport {
            release: release.to_hex(),
            channel: info.channel,
            version: info.version,
            nodes,
            installers,
            states,
            sites,
            failed,
            reasons,
            holding_per_min: per_min,
            eta_s,
            window_opens_unix_s: opens,
            nodes_detail,
            at_unix_s: now_unix_s,
            warnings,
            rings: sum_rings(rows.iter().map(|r| &r.figures)),
            halted: halted.map_or(0, |(n, _)| n),
        }
    }

    /// Whether `release` has been sampled for a whole [`RATE_WINDOW_S`]: only then does a
    /// rate of zero mean that nothing moved.
    fn sampled_for(inner: &Inner, release: &ReleaseId, now_unix_s: i64) -> bool {
        inner
            .history
            .get(release)
            .and_then(|h| h.front())
            .is_some_and(|&(at, _)| now_unix_s - at >= RATE_WINDOW_S)
    }

    /// Notes that `done` nodes are done with `release` at `now`, and returns how many per
    /// minute became so over the last [`RATE_WINDOW_S`] (0 before a minute of samples).
    fn sample(inner: &mut Inner, release: &ReleaseId, now: i64, done: u64) -> f64 {
        if !inner.history.contains_key(release) && inner.history.len() >= SAMPLED_RELEASES_MAX {
            // Forget the release sampled longest ago.
            if let Some(old) = inner
                .history
                .iter()
                .min_by_key(|(_, h)| h.back().map_or(i64::MIN, |s| s.0))
                .map(|(id, _)| *id)
            {
                inner.history.remove(&old);
            }
        }
        let h = inner.history.entry(*release).or_default();
        if h.back()
            .is_none_or(|s| now - s.0 >= SAMPLE_INTERVAL_S || now < s.0)
        {
            if h.back().is_some_and(|s| now < s.0) {
                h.clear(); // the clock went back
            }
            h.push_back((now, done));
        }
        while h.len() > 1 && now - h[1].0 >= RATE_WINDOW_S {
            h.pop_front();
        }
        match h.front() {
            Some(&(t, d)) if now - t >= 60 => {
                done.saturating_sub(d) as f64 * 60.0 / (now - t) as f64
            }
            _ => 0.0,
        }
    }

    /// Samples the progress of every release the model names (the daemon calls this every
    /// [`PERSIST_INTERVAL`], so that the rate is known when a report is first asked for).
    pub fn sample_all(&self, now_unix_s: i64) {
        let ids: Vec<ReleaseId> = {
            let inner = lock(&self.inner);
            let mut ids: Vec<ReleaseId> = inner
                .records
                .values()
                .flat_map(|r| r.body.releases.iter().map(|x| x.release))
                .chain(
                    inner
                        .summaries
                        .values()
                        .flat_map(|s| s.body.releases.iter().map(|x| x.release)),
                )
                .collect();
            ids.sort_unstable();
            ids.dedup();
            ids
        };
        for id in ids.iter().take(SAMPLED_RELEASES_MAX) {
            self.report(id, None, now_unix_s);
        }
    }

    /// Each ring's nodes of `release` across the fleet as this node sees it, indexed by
    /// ring: what [`scheduler::rollout`]'s gate reads. Every site's figures come from the
    /// ledgers (summaries, and a member's reads of its aggregator's ledgers); this site's
    /// from its records on the aggregator, or on a member that holds no figures of it yet.
    pub fn ring_counts(&self, release: &ReleaseId, now_unix_s: i64) -> Vec<RingCount> {
        let inner = lock(&self.inner);
        let from_ledger = !inner.aggregating
            && inner
                .ledgers
                .get(&self.site)
                .is_some_and(|l| l.get(release).is_some());
        let own = (!from_ledger).then(|| {
            let bodies: Vec<&StatusBody> = inner.records.values().map(|r| &r.merged).collect();
            let info = Self::facts(&inner, release, None);
            SiteIndex::with_silence(&bodies, silent_before(&inner, now_unix_s))
                .figures(*release, &info)
        });
        let others = inner
            .ledgers
            .iter()
            .filter(|(site, _)| from_ledger || **site != self.site)
            .filter_map(|(_, l)| l.get(release).map(|(_, f, _)| f));
        sum_rings(own.iter().chain(others))
    }

    /// The compliance report's rows for `releases`, at `now_unix_s`: how many installing
    /// nodes installed each (or a newer version), how fast, whether critical ones met the
    /// 72-hour rule, who is missing.
    pub fn compliance(&self, releases: &[ReleaseFacts], now_unix_s: i64) -> Vec<ComplianceRow> {
        let inner = lock(&self.inner);
        // Indexed once for every release.
        let own: Vec<&StatusBody> = inner.records.values().map(|r| &r.merged).collect();
        let own_index = SiteIndex::with_silence(&own, silent_before(&inner, now_unix_s));
        let installing: Vec<(&StatusBody, SiteIndex<'_>)> = own
            .iter()
            .filter(|b| b.installs)
            .map(|b| {
                (
                    *b,
                    SiteIndex::with_silence(&[*b], silent_before(&inner, now_unix_s)),
                )
            })
            .collect();
        releases
            .iter()
            .map(|f| {
                let info = Self::facts(&inner, &f.id, Some(f));
                let rows = Self::rows(&inner, &self.site, &f.id, &info, None, &own_index);
                let nodes: u64 = rows.iter().map(|r| u64::from(r.nodes)).sum();
                // Installing nodes its target leaves out are not held to it (only installing
                // nodes say "not targeted").
                let installers: u64 = rows
                    .iter()
                    .map(|r| {
                        u64::from(r.installers)
                            .saturating_sub(u64::from(r.figures.count(ReleaseState::NotTargeted)))
                    })
                    .sum();
                let mut buckets: Vec<u64> = Vec::new();
                let mut by_deadline = 0u64;
                let mut missing_sites = Vec::new();
                for r in &rows {
                    for (k, &n) in r.figures.installed_after.iter().enumerate() {
                        if buckets.len() <= k {
                            buckets.resize(k + 1, 0);
                        }
                        buckets[k] += u64::from(n);
                    }
                    by_deadline += u64::from(r.figures.installed_by_deadline);
                    let installed: u32 = r.figures.installed_after.iter().sum();
                    let short = r.installers.saturating_sub(installed);
                    if short > 0 && r.site != self.site {
                        missing_sites.push(MissingSite {
                            site: r.site.clone(),
                            nodes: u64::from(short),
                        });
                    }
                }
                let activated: u64 = buckets.iter().sum();
                let installed: u64 = rows
                    .iter()
                    .map(|r| u64::from(r.figures.count(ReleaseState::Activated)))
                    .sum::<u64>()
                    .min(activated);
                let at = |share: f64| -> Option<i64> {
                    let need = (share * installers as f64).ceil() as u64;
                    if need == 0 || need > activated {
                        return None;
                    }
                    let mut seen = 0;
                    for (k, n) in buckets.iter().enumerate() {
                        seen += n;
                        if seen >= need {
                            return Some(install_bucket_end_s(k));
                        }
                    }
                    None
                };
                let need_99 = (CRITICAL_SHARE * installers as f64).ceil() as u64;
                let deadline = if !f.critical {
                    "n/a"
                } else if need_99 > 0 && by_deadline >= need_99 {
                    "met"
                } else if now_unix_s - f.published_unix_s > CRITICAL_DEADLINE_S {
                    "missed"
                } else {
                    "open"
                };
                // This site's missing nodes by name.
                let mut missing: Vec<MissingNode> = installing
                    .iter()
                    .map(|(b, index)| (b, node_state(index, &f.id, &info)))
                    .filter(|(_, state)| {
                        !matches!(*state, "activated" | "superseded" | "not targeted")
                    })
                    // A member holds each site-mate's latest record, not every one: a node
                    // its records never named the release for may have it; only an
                    // aggregator, which holds every record, names such a node.
                    .filter(|(_, state)| inner.aggregating || *state != "unknown")
                    .map(|(b, state)| MissingNode {
                        node: b.node.to_hex(),
                        site: self.site.clone(),
                        state: state.into(),
                    })
                    .collect();
                missing.sort_by(|a, b| a.node.cmp(&b.node));
                missing.truncate(MISSING_LISTED_MAX);
                missing_sites
                    .sort_by(|a, b| b.nodes.cmp(&a.nodes).then_with(|| a.site.cmp(&b.site)));
                ComplianceRow {
                    release: f.id.to_hex(),
                    channel: f.channel.clone(),
                    version: f.version,
                    severity: f.severity.clone(),
                    published_unix_s: f.published_unix_s,
                    nodes,
                    installers,
                    activated,
                    activated_share: if installers == 0 {
                        0.0
                    } else {
                        activated as f64 / installers as f64
                    },
                    installed,
                    covered: activated - installed,
                    to_50_s: at(0.5),
                    to_90_s: at(0.9),
                    to_99_s: at(CRITICAL_SHARE),
                    deadline: deadline.into(),
                    missing,
                    missing_sites,
                    missing_total: installers.saturating_sub(activated),
                    exceptions: rows
                        .iter()
                        .map(|r| u64::from(r.figures.count(ReleaseState::Held)))
                        .sum(),
                    exception_reasons: {
                        let mut by_text: HashMap<&str, u32> = HashMap::new();
                        for x in rows
                            .iter()
                            .flat_map(|r| &r.figures.reasons)
                            .filter(|x| x.state == ReleaseState::Held)
                        {
                            *by_text.entry(x.reason.as_str()).or_default() += x.nodes;
                        }
                        let mut list: Vec<protocol::summary::Reason> = by_text
                            .into_iter()
                            .map(|(reason, nodes)| protocol::summary::Reason {
                                state: ReleaseState::Held,
                                reason: reason.to_owned(),
                                nodes,
                            })
                            .collect();
                        protocol::summary::Reason::keep_commonest(&mut list, REASONS_LISTED_MAX);
                        list
                    },
                }
            })
            .collect()
    }
}

/// Each ring's counts summed over sites ([`scheduler::rollout::sum_ring_counts`]).
fn sum_rings<'a>(sites: impl Iterator<Item = &'a SiteRelease>) -> Vec<RingCount> {
    scheduler::rollout::sum_ring_counts(sites.map(|f| f.rings.as_slice()))
}

/// Share of nodes failed past which the fleet view warns (and `P2pdReleaseFailing` pages).
pub const FAILED_SHARE_WARN: f64 = 0.01;

/// Age of a critical release under [`CRITICAL_SHARE`] applied past which the 72-hour rule is
/// at risk (`P2pdCriticalReleaseAtRisk`).
pub const CRITICAL_AT_RISK_AFTER_S: i64 = 48 * 3600;

/// What [`warnings`] looks at.
struct Warned<'a> {
    states: &'a StateCounts,
    nodes: u64,
    installers: u64,
    applied: u64,
    critical: bool,
    age_s: Option<i64>,
    stalled: bool,
    /// Nodes a ring's halt stops, and the commonest reason.
    halted: Option<(u64, String)>,
}

/// `1 node`, `2 nodes`.
fn nodes(n: u64) -> String {
    if n == 1 {
        "1 node".into()
    } else {
        format!("{n} nodes")
    }
}

/// The fleet view's warnings: a failure share over [`FAILED_SHARE_WARN`], a critical release
/// at risk of or past the 72-hour rule, silent nodes, a rollout that stopped moving, a
/// rollout its gate halted.
fn warnings(w: &Warned) -> Vec<String> {
    let mut out = Vec::new();
    let s = w.states;
    if w.nodes > 0 && s.failed as f64 > FAILED_SHARE_WARN * w.nodes as f64 {
        out.push(format!(
            "{} ({:.1} %) failed it, over {:.0} %: see why below",
            nodes(s.failed),
            s.failed as f64 * 100.0 / w.nodes as f64,
            FAILED_SHARE_WARN * 100.0
        ));
    }
    if let (true, Some(age)) = (w.critical && w.installers > 0, w.age_s) {
        let share = w.applied as f64 / w.installers as f64;
        if share < CRITICAL_SHARE && age > protocol::summary::CRITICAL_DEADLINE_S {
            out.push(format!(
                "critical: {:.1} % applied after {} h, the 72-hour rule is missed",
                share * 100.0,
                age / 3600
            ));
        } else if share < CRITICAL_SHARE && age > CRITICAL_AT_RISK_AFTER_S {
            out.push(format!(
                "critical: {:.1} % applied after {} h, the 72-hour rule is at risk",
                share * 100.0,
                age / 3600
            ));
        }
    }
    if s.silent > 0 {
        out.push(format!(
            "{} silent: no status record for the silence bound (p2pctl fleet RELEASE --site SITE names them)",
            nodes(s.silent)
        ));
    }
    if w.stalled {
        out.push(format!(
            "stalled: {} still to fetch it, and none came to hold it in {} min",
            nodes(s.moving()),
            RATE_WINDOW_S / 60
        ));
    }
    if let Some((halted, why)) = &w.halted {
        out.push(format!(
            "halted: {} stopped by the rollout's gate ({why}); fix what failed, then `p2pctl rollout resume RELEASE` (the failed installs are tried once more), or abort it and publish a new version",
            nodes(*halted)
        ));
    }
    out
}

/// Puts releases in the compliance report's order: oldest published first, then by channel,
/// version and id, so two nodes list the same releases alike.
pub fn sort_for_report(releases: &mut [ReleaseFacts]) {
    releases.sort_by(|a, b| {
        a.published_unix_s
            .cmp(&b.published_unix_s)
            .then_with(|| a.channel.cmp(&b.channel))
            .then(a.version.cmp(&b.version))
            .then(a.id.cmp(&b.id))
    });
}

/// What [`merge_into`] changed.
struct Merge {
    /// The channels whose entries changed, or `None` if entries left the ledger (any figure
    /// may change).
    channels: Option<HashSet<String>>,
    /// Whether entries left, or changed channel or publishing time (the channel index must
    /// be made again).
    moved: bool,
    /// Entries added: channel, published, id.
    added: Vec<(String, i64, ReleaseId)>,
}

/// Merges `body` into `merged` (a node's ledger, as a record): the record's metadata, and
/// each entry it names in place of the one held (the entries stay sorted newest published
/// first), less those [`ledger::evict`] drops at the record's time.
fn merge_into(merged: &mut StatusBody, body: &StatusBody) -> Merge {
    merged.node = body.node;
    merged.site.clone_from(&body.site);
    merged.installs = body.installs;
    merged.seq = body.seq;
    merged.at_unix_s = body.at_unix_s;
    let order = |a: &ReleaseStatus, b: &ReleaseStatus| {
        b.published_unix_s
            .cmp(&a.published_unix_s)
            .then(a.release.cmp(&b.release))
    };
    let list = &mut merged.releases;
    let mut added = Vec::new();
    let mut changed = HashSet::new();
    let mut moved = false;
    for r in &body.releases {
        match list.binary_search_by(|x| order(x, r)) {
            Ok(i) => {
                if list[i] != *r {
                    if list[i].channel != r.channel {
                        changed.insert(list[i].channel.clone());
                        moved = true;
                    }
                    changed.insert(r.channel.clone());
                    list[i] = r.clone();
                }
            }
            Err(i) => {
                changed.insert(r.channel.clone());
                match list.iter().position(|x| x.release == r.release) {
                    // Held under another publishing time: moved to its place.
                    Some(j) => {
                        moved = true;
                        changed.insert(list.remove(j).channel);
                        let i = list.binary_search_by(|x| order(x, r)).unwrap_or_else(|i| i);
                        list.insert(i, r.clone());
                    }
                    None => {
                        added.push((r.channel.clone(), r.published_unix_s, r.release));
                        list.insert(i, r.clone());
                    }
                }
            }
        }
    }
    let stale = list.len() > ledger::RELEASES_KEPT_MAX
        || list
            .iter()
            .any(|r| !ledger::within_horizon(r.published_unix_s, r.since_unix_s, body.at_unix_s));
    if stale {
        let keys: Vec<(ReleaseId, i64, i64)> = list
            .iter()
            .map(|r| (r.release, r.published_unix_s, r.since_unix_s))
            .collect();
        let gone: HashSet<ReleaseId> = ledger::evict(&keys, body.at_unix_s).into_iter().collect();
        if !gone.is_empty() {
            list.retain(|r| !gone.contains(&r.release));
            return Merge {
                channels: None,
                moved: true,
                added,
            };
        }
    }
    Merge {
        channels: Some(changed),
        moved,
        added,
    }
}

/// Keeps `figures` in a site's ledger unless a summary numbered above `seq` gave its
/// release's figures already.
/// Returns whether it did (the figures then change at the next point of `generation`).
fn merge_site_entry(
    ledger: &mut SiteLedger,
    seq: u64,
    figures: SiteRelease,
    generation: &mut u64,
) -> bool {
    match ledger.get_mut(&figures.release) {
        Some((held, _, _)) if *held > seq => false,
        Some((held_seq, held, _)) if *held == figures => {
            *held_seq = seq;
            false
        }
        _ => {
            *generation += 1;
            ledger.insert(figures.release, (seq, figures, *generation));
            true
        }
    }
}

/// A stored node ledger, if it decodes within its bounds.
fn decode_node_ledger(bytes: &[u8]) -> Option<Vec<ReleaseStatus>> {
    let entries: Vec<ReleaseStatus> =
        protocol::codec::decode::<_, LEDGER_BYTES_MAX>(bytes, "fleet ledger").ok()?;
    let sane = entries.len() <= ledger::RELEASES_KEPT_MAX
        && entries.iter().all(|r| {
            r.chunks_have <= r.chunks_total
                && r.error
                    .as_ref()
                    .is_none_or(|e| e.len() <= protocol::status::STATUS_ERROR_BYTES_MAX)
        });
    sane.then_some(entries)
}

/// A stored site ledger, if it decodes within its bounds.
fn decode_site_ledger(bytes: &[u8]) -> Option<Vec<(u64, SiteRelease)>> {
    let entries: Vec<(u64, SiteRelease)> =
        protocol::codec::decode::<_, LEDGER_BYTES_MAX>(bytes, "fleet ledger").ok()?;
    let sane = entries.len() <= ledger::RELEASES_KEPT_MAX
        && entries.iter().all(|(_, r)| {
            r.states.len() == ReleaseState::ALL.len()
                && r.installed_after.len() <= protocol::summary::INSTALL_BUCKETS
                && r.failed.len() <= protocol::summary::SUMMARY_FAILED_MAX
                && r.reasons.len() <= protocol::summary::SUMMARY_REASONS_MAX
        });
    sane.then_some(entries)
}

/// Where `release` stands on the node whose record `b` indexes: `superseded` when a newer
/// version covers it, `silent` when it sent no record for [`SILENT_AFTER`], else its state's
/// name, else `unknown`.
fn node_state(b: &SiteIndex<'_>, release: &ReleaseId, info: &Facts) -> &'static str {
    let one = b.figures(*release, info);
    if one.covered > 0 {
        return "superseded";
    }
    if one.silent > 0 {
        return "silent";
    }
    ReleaseState::ALL
        .iter()
        .find(|s| one.count(**s) > 0)
        .map_or("unknown", |s| s.name())
}

/// Every node of a site (`bodies`, its records) and where `release` stands on it, in node
/// order.
fn node_detail(
    bodies: &[StatusBody],
    release: &ReleaseId,
    info: &Facts,
    silent_before: i64,
) -> Vec<NodeDetail> {
    let mut out: Vec<NodeDetail> = bodies
        .iter()
        .map(|b| {
            let own = b.release(release);
            NodeDetail {
                node: b.node.to_hex(),
                state: node_state(&SiteIndex::with_silence(&[b], silent_before), release, info)
                    .into(),
                chunks_have: own.map_or(0, |r| r.chunks_have),
                since_unix_s: own.map_or(0, |r| r.since_unix_s),
                error: own.and_then(|r| r.error.clone()),
                record_at_unix_s: b.at_unix_s,
            }
        })
        .collect();
    out.sort_by(|a, b| a.node.cmp(&b.node));
    out
}

#[cfg(test)]
mod tests;
