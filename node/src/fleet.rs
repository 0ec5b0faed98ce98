//! The fleet as this node knows it: the latest signed status record of every node
//! ([`protocol::status`]), and the aggregation behind `p2pctl fleet RELEASE`.
//!
//! Records arrive from anywhere (gossip, the store at start); [`Fleet::offer`] keeps one only
//! if it verifies (signature of the node it names, bounds) and is newer than the one held for
//! that node, so forged, oversized and replayed records change nothing. The table is in
//! memory, where the aggregation reads it (25,000 records in a few MiB), and is written to the
//! store in batches ([`Fleet::take_dirty`]): a record is a view of another node, cheap to
//! learn again, not worth an fsync of its own.
//!
//! [`Fleet::report`] answers for one release: nodes by state, sites sorted by how far behind
//! they are, the failed nodes with their errors, the rate at which nodes completed over the
//! last minutes and when, at that rate, the rest will have.

use protocol::status::{ReleaseState, SignedStatus, StatusBody, StatusError};
use protocol::{NodeId, ReleaseId};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

/// Most nodes whose records are kept: four times the fleet this is built for (25,000
/// endpoints). Beyond it a record from a node not yet known is dropped, so a flood of
/// records from made-up nodes cannot take the memory.
pub const FLEET_NODES_MAX: usize = 100_000;

/// Most failed nodes one report lists (all are counted).
pub const FAILED_LISTED_MAX: usize = 1000;

/// How often changed records are written to the store.
pub const PERSIST_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// The window over which the completion rate is measured, seconds.
pub const RATE_WINDOW_S: i64 = 300;

/// A record held for a node.
#[derive(Debug, Clone)]
struct Held {
    body: StatusBody,
    signed: Vec<u8>,
}

#[derive(Debug, Default)]
struct Inner {
    records: HashMap<NodeId, Held>,
    /// Nodes whose record changed since the last [`Fleet::take_dirty`].
    dirty: HashSet<NodeId>,
}

/// The latest status record of every node.
#[derive(Debug, Default)]
pub struct Fleet {
    inner: Mutex<Inner>,
}

/// Why a record was not kept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OfferError {
    /// It does not verify.
    #[error(transparent)]
    Invalid(#[from] StatusError),
    /// A record as new or newer is held for that node (a replay, or a duplicate).
    #[error("not newer than the record held for that node")]
    NotNewer,
    /// [`FLEET_NODES_MAX`] nodes are known already.
    #[error("{FLEET_NODES_MAX} nodes are known already")]
    Full,
}

/// Nodes by state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateCounts {
    /// Nodes whose record does not name the release yet.
    pub unknown: u64,
    /// Known and verified, nothing fetched.
    pub announced: u64,
    /// Fetching.
    pub downloading: u64,
    /// Held back by a closed download window.
    pub paused: u64,
    /// Holding the whole release.
    pub complete: u64,
    /// Installed.
    pub activated: u64,
    /// Failed.
    pub failed: u64,
}

impl StateCounts {
    fn add(&mut self, state: Option<ReleaseState>) {
        let slot = match state {
            None => &mut self.unknown,
            Some(ReleaseState::Announced) => &mut self.announced,
            Some(ReleaseState::Downloading) => &mut self.downloading,
            Some(ReleaseState::PausedByWindow) => &mut self.paused,
            Some(ReleaseState::Complete) => &mut self.complete,
            Some(ReleaseState::Activated) => &mut self.activated,
            Some(ReleaseState::Failed) => &mut self.failed,
        };
        *slot += 1;
    }

    /// Nodes holding the whole release (complete or installed).
    pub fn holding(&self) -> u64 {
        self.complete + self.activated
    }
}

/// One site's figures for a release.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SiteProgress {
    /// Site.
    pub site: String,
    /// Nodes of the site with a record.
    pub nodes: u64,
    /// Of those, holding the whole release.
    pub holding: u64,
    /// Failed.
    pub failed: u64,
    /// Chunks held over chunks wanted, across the site's nodes (0 to 1).
    pub progress: f64,
}

/// A node whose fetch or installation failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedNode {
    /// Node id, hex.
    pub node: String,
    /// Its site.
    pub site: String,
    /// What it said went wrong.
    pub error: String,
    /// Since when, unix seconds.
    pub since_unix_s: i64,
}

/// Where one release stands across the fleet (`GET /v1/fleet/{release}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FleetReport {
    /// Release id, hex.
    pub release: String,
    /// Nodes with a record.
    pub nodes: u64,
    /// Nodes by state.
    pub states: StateCounts,
    /// Sites, the furthest behind first (most nodes not holding it, then least progress).
    pub sites: Vec<SiteProgress>,
    /// Failed nodes (at most [`FAILED_LISTED_MAX`]), newest failure first.
    pub failed: Vec<FailedNode>,
    /// Nodes that came to hold the release in the last [`RATE_WINDOW_S`], per minute.
    pub holding_per_min: f64,
    /// At that rate, seconds until every node with a record that has not failed holds it
    /// (none when nothing moved, or all of them hold it).
    pub eta_s: Option<f64>,
    /// When the report was made, unix seconds.
    pub at_unix_s: i64,
}

/// How long a critical release may take to reach [`CRITICAL_SHARE`] of the nodes: 72 hours.
pub const CRITICAL_DEADLINE_S: i64 = 72 * 3600;

/// The share of nodes a critical release must reach by its deadline.
pub const CRITICAL_SHARE: f64 = 0.99;

/// Most missing nodes one compliance row lists (all are counted).
pub const MISSING_LISTED_MAX: usize = 1000;

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
    /// Nodes with a record.
    pub nodes: u64,
    /// Of those, nodes that installed it.
    pub activated: u64,
    /// `activated / nodes`.
    pub activated_share: f64,
    /// Seconds from publishing until 50, 90 and 99 % of the nodes had installed it (`None`:
    /// not reached).
    pub to_50_s: Option<i64>,
    /// See `to_50_s`.
    pub to_90_s: Option<i64>,
    /// See `to_50_s`.
    pub to_99_s: Option<i64>,
    /// For a critical release: `met` (99 % installed within 72 hours), `missed`, or `open`
    /// (not yet 72 hours old, not yet at 99 %); `n/a` otherwise.
    pub deadline: String,
    /// Nodes that have not installed it (at most [`MISSING_LISTED_MAX`]).
    pub missing: Vec<MissingNode>,
    /// How many that is.
    pub missing_total: u64,
}

/// Seconds after `start` by which `share` of `nodes` had an entry in `times` (sorted).
fn time_to(times: &[i64], nodes: u64, share: f64, start: i64) -> Option<i64> {
    let need = (share * nodes as f64).ceil() as usize;
    if need == 0 || need > times.len() {
        return None;
    }
    Some((times[need - 1] - start).max(0))
}

fn lock(m: &Mutex<Inner>) -> std::sync::MutexGuard<'_, Inner> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Fleet {
    /// The records a store held (each verified when it was first kept).
    pub fn from_stored(records: impl IntoIterator<Item = Vec<u8>>) -> Self {
        let fleet = Self::default();
        let mut inner = lock(&fleet.inner);
        for signed in records {
            let Ok(body) = SignedStatus::decode(&signed).and_then(|s| s.verify()) else {
                continue;
            };
            if inner.records.len() < FLEET_NODES_MAX {
                inner.records.insert(body.node, Held { body, signed });
            }
        }
        drop(inner);
        fleet
    }

    /// Keeps `bytes` as its node's record if it verifies and is newer than the one held.
    /// Returns the body kept.
    pub fn offer(&self, bytes: &[u8]) -> Result<StatusBody, OfferError> {
        let body = SignedStatus::decode(bytes)?.verify()?;
        let mut inner = lock(&self.inner);
        match inner.records.get(&body.node) {
            Some(held) if !body.supersedes(&held.body) => return Err(OfferError::NotNewer),
            None if inner.records.len() >= FLEET_NODES_MAX => return Err(OfferError::Full),
            _ => {}
        }
        inner.dirty.insert(body.node);
        inner.records.insert(
            body.node,
            Held {
                body: body.clone(),
                signed: bytes.to_vec(),
            },
        );
        Ok(body)
    }

    /// Nodes with a record.
    pub fn len(&self) -> usize {
        lock(&self.inner).records.len()
    }

    /// Whether no record is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The records changed since the last call, to be written to the store.
    pub fn take_dirty(&self) -> Vec<(NodeId, Vec<u8>)> {
        let mut inner = lock(&self.inner);
        let dirty = std::mem::take(&mut inner.dirty);
        dirty
            .into_iter()
            .filter_map(|n| inner.records.get(&n).map(|h| (n, h.signed.clone())))
            .collect()
    }

    /// The compliance report's rows for `releases`, at `now_unix_s`: who installed each, how
    /// fast, whether critical ones met the 72-hour rule, who is missing.
    pub fn compliance(&self, releases: &[ReleaseFacts], now_unix_s: i64) -> Vec<ComplianceRow> {
        let inner = lock(&self.inner);
        let nodes = inner.records.len() as u64;
        releases
            .iter()
            .map(|f| {
                let mut times = Vec::new();
                let mut missing = Vec::new();
                let mut missing_total = 0u64;
                for held in inner.records.values() {
                    let b = &held.body;
                    match b.release(&f.id) {
                        Some(r) if r.state == ReleaseState::Activated => times.push(r.since_unix_s),
                        other => {
                            missing_total += 1;
                            if missing.len() < MISSING_LISTED_MAX {
                                missing.push(MissingNode {
                                    node: b.node.to_hex(),
                                    site: b.site.clone(),
                                    state: other.map_or("unknown", |r| r.state.name()).into(),
                                });
                            }
                        }
                    }
                }
                times.sort_unstable();
                missing.sort_by(|a, b| a.site.cmp(&b.site).then_with(|| a.node.cmp(&b.node)));
                let at = |share| time_to(&times, nodes, share, f.published_unix_s);
                let to_99 = at(CRITICAL_SHARE);
                let deadline = if !f.critical {
                    "n/a"
                } else if to_99.is_some_and(|t| t <= CRITICAL_DEADLINE_S) {
                    "met"
                } else if to_99.is_some() || now_unix_s - f.published_unix_s > CRITICAL_DEADLINE_S {
                    "missed"
                } else {
                    "open"
                };
                ComplianceRow {
                    release: f.id.to_hex(),
                    channel: f.channel.clone(),
                    version: f.version,
                    severity: f.severity.clone(),
                    published_unix_s: f.published_unix_s,
                    nodes,
                    activated: times.len() as u64,
                    activated_share: if nodes == 0 {
                        0.0
                    } else {
                        times.len() as f64 / nodes as f64
                    },
                    to_50_s: at(0.5),
                    to_90_s: at(0.9),
                    to_99_s: to_99,
                    deadline: deadline.into(),
                    missing,
                    missing_total,
                }
            })
            .collect()
    }

    /// Where `release` stands across the nodes with a record, at `now_unix_s`.
    pub fn report(&self, release: &ReleaseId, now_unix_s: i64) -> FleetReport {
        let inner = lock(&self.inner);
        let mut states = StateCounts::default();
        // Per site: nodes, holding, failed, chunks held.
        let mut sites: HashMap<&str, (u64, u64, u64, u64)> = HashMap::new();
        let mut failed: Vec<FailedNode> = Vec::new();
        let mut recent = 0u64;
        let mut chunks_total = 0u64;
        for held in inner.records.values() {
            let b = &held.body;
            let r = b.release(release);
            states.add(r.map(|r| r.state));
            if let Some(r) = r {
                chunks_total = chunks_total.max(u64::from(r.chunks_total));
            }
            let site = sites.entry(b.site.as_str()).or_default();
            site.0 += 1;
            if let Some(r) = r {
                site.3 += u64::from(r.chunks_have);
                if r.state.has_release() {
                    site.1 += 1;
                    if now_unix_s - r.since_unix_s <= RATE_WINDOW_S {
                        recent += 1;
                    }
                }
                if r.state == ReleaseState::Failed {
                    site.2 += 1;
                    failed.push(FailedNode {
                        node: b.node.to_hex(),
                        site: b.site.clone(),
                        error: r.error.clone().unwrap_or_default(),
                        since_unix_s: r.since_unix_s,
                    });
                }
            }
        }
        // A node that does not know the release yet wants all of it.
        let mut sites: Vec<SiteProgress> = sites
            .into_iter()
            .map(|(site, (nodes, holding, failed, have))| SiteProgress {
                site: site.to_owned(),
                nodes,
                holding,
                failed,
                progress: if chunks_total == 0 {
                    0.0
                } else {
                    have as f64 / (nodes * chunks_total) as f64
                },
            })
            .collect();
        sites.sort_by(|a, b| {
            (b.nodes - b.holding)
                .cmp(&(a.nodes - a.holding))
                .then(a.progress.total_cmp(&b.progress))
                .then_with(|| a.site.cmp(&b.site))
        });
        failed.sort_by(|a, b| {
            b.since_unix_s
                .cmp(&a.since_unix_s)
                .then_with(|| a.node.cmp(&b.node))
        });
        failed.truncate(FAILED_LISTED_MAX);
        let nodes = inner.records.len() as u64;
        let per_min = recent as f64 * 60.0 / RATE_WINDOW_S as f64;
        // Failed nodes will not come to hold it on their own: they are not waited for.
        let left = nodes - states.holding() - states.failed;
        let eta_s = (per_min > 0.0 && left > 0).then(|| left as f64 / per_min * 60.0);
        FleetReport {
            release: release.to_hex(),
            nodes,
            states,
            sites,
            failed,
            holding_per_min: per_min,
            eta_s,
            at_unix_s: now_unix_s,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;
    use protocol::status::ReleaseStatus;

    const NOW: i64 = 1_795_392_000;

    fn record(k: u8, site: &str, seq: u64, state: Option<ReleaseState>, have: u32) -> Vec<u8> {
        let key = SigningKey::from_bytes(&[k; 32]);
        let body = StatusBody {
            node: NodeId(key.verifying_key().to_bytes()),
            site: site.into(),
            seq,
            at_unix_s: NOW,
            releases: state
                .map(|state| ReleaseStatus {
                    release: ReleaseId([1; 32]),
                    state,
                    chunks_have: have,
                    chunks_total: 100,
                    since_unix_s: NOW - 60 * i64::from(k),
                    error: (state == ReleaseState::Failed).then(|| format!("apply exited {k}")),
                })
                .into_iter()
                .collect(),
        };
        SignedStatus::sign(&body, &key).encode()
    }

    #[test]
    fn only_newer_verified_records_are_kept() {
        let fleet = Fleet::default();
        fleet
            .offer(&record(1, "a", 5, Some(ReleaseState::Downloading), 10))
            .unwrap();
        // Replayed older, or the same again.
        assert_eq!(
            fleet.offer(&record(1, "a", 4, Some(ReleaseState::Complete), 100)),
            Err(OfferError::NotNewer)
        );
        assert_eq!(
            fleet.offer(&record(1, "a", 5, Some(ReleaseState::Complete), 100)),
            Err(OfferError::NotNewer)
        );
        // Tampered: the signature no longer holds.
        let mut forged = SignedStatus::decode(&record(1, "a", 9, None, 0)).unwrap();
        forged.body.push(0);
        assert!(matches!(
            fleet.offer(&forged.encode()),
            Err(OfferError::Invalid(_))
        ));
        let report = fleet.report(&ReleaseId([1; 32]), NOW);
        assert_eq!(report.states.downloading, 1);
        assert_eq!(report.states.holding(), 0);
        // A newer one replaces it, and is the one to persist.
        fleet
            .offer(&record(1, "a", 6, Some(ReleaseState::Complete), 100))
            .unwrap();
        let dirty = fleet.take_dirty();
        assert_eq!(dirty.len(), 1);
        assert!(fleet.take_dirty().is_empty());
        let again = Fleet::from_stored(dirty.into_iter().map(|(_, b)| b));
        assert_eq!(again.report(&ReleaseId([1; 32]), NOW).states.complete, 1);
    }

    #[test]
    fn a_report_counts_states_orders_sites_by_lag_and_lists_failures() {
        let fleet = Fleet::default();
        use ReleaseState::*;
        let rows = [
            (1, "hq", Some(Activated), 100),
            (2, "hq", Some(Complete), 100),
            (3, "branch-1", Some(Downloading), 50),
            (4, "branch-1", None, 0),
            (5, "branch-2", Some(Failed), 100),
            (6, "branch-2", Some(Complete), 100),
            (7, "branch-1", Some(PausedByWindow), 20),
        ];
        for (k, site, state, have) in rows {
            fleet.offer(&record(k, site, 1, state, have)).unwrap();
        }
        let r = fleet.report(&ReleaseId([1; 32]), NOW);
        assert_eq!(r.nodes, 7);
        let s = &r.states;
        assert_eq!(
            (
                s.unknown,
                s.downloading,
                s.paused,
                s.complete,
                s.activated,
                s.failed
            ),
            (1, 1, 1, 2, 1, 1)
        );
        let order: Vec<&str> = r.sites.iter().map(|s| s.site.as_str()).collect();
        assert_eq!(order, ["branch-1", "branch-2", "hq"]);
        assert_eq!((r.sites[0].nodes, r.sites[0].holding), (3, 0));
        assert!((r.sites[0].progress - 70.0 / 300.0).abs() < 1e-9);
        assert_eq!(r.failed.len(), 1);
        assert_eq!(r.failed[0].site, "branch-2");
        assert_eq!(r.failed[0].error, "apply exited 5");
        // Nodes 1, 2 and 6 came to hold it 1, 2 and 6 minutes ago: all within 5 minutes
        // but the last; two in 5 minutes is 0.4 per minute, and 3 are left (the failed
        // node is not waited for).
        assert!((r.holding_per_min - 0.4).abs() < 1e-9);
        assert!((r.eta_s.unwrap() - 450.0).abs() < 1e-6);
    }

    #[test]
    fn compliance_gives_times_to_shares_the_72_hour_rule_and_the_missing() {
        let fleet = Fleet::default();
        // 100 nodes; node k installed it k hours after it was published, but the last.
        for k in 1..=100u8 {
            let key = SigningKey::from_bytes(&[k; 32]);
            let activated = k <= 99;
            let body = StatusBody {
                node: NodeId(key.verifying_key().to_bytes()),
                site: format!("s{}", k % 3),
                seq: 1,
                at_unix_s: NOW,
                releases: vec![ReleaseStatus {
                    release: ReleaseId([1; 32]),
                    state: if activated {
                        ReleaseState::Activated
                    } else {
                        ReleaseState::Downloading
                    },
                    chunks_have: 1,
                    chunks_total: 1,
                    // Installed k hours after publishing.
                    since_unix_s: NOW + 3600 * i64::from(k),
                    error: None,
                }],
            };
            fleet
                .offer(&SignedStatus::sign(&body, &key).encode())
                .unwrap();
        }
        let facts = |critical| ReleaseFacts {
            id: ReleaseId([1; 32]),
            channel: "security/x".into(),
            version: 1,
            severity: if critical { "critical" } else { "high" }.into(),
            critical,
            published_unix_s: NOW,
        };
        let later = NOW + 200 * 3600;
        let rows = fleet.compliance(&[facts(true), facts(false)], later);
        let r = &rows[0];
        assert_eq!((r.nodes, r.activated, r.missing_total), (100, 99, 1));
        assert_eq!(r.to_50_s, Some(50 * 3600));
        assert_eq!(r.to_90_s, Some(90 * 3600));
        assert_eq!(r.to_99_s, Some(99 * 3600));
        assert_eq!(r.deadline, "missed", "99 % took 99 hours");
        assert_eq!(rows[1].deadline, "n/a");
        // Published 30 hours later, the same installs reach 99 % in 69 hours: met.
        let mut sooner = facts(true);
        sooner.published_unix_s = NOW + 30 * 3600;
        let met = fleet.compliance(&[sooner], later);
        assert_eq!(
            (met[0].to_99_s, met[0].deadline.as_str()),
            (Some(69 * 3600), "met")
        );
        assert_eq!(r.missing[0].state, "downloading");
        // Another critical release nobody reports yet: everyone is missing, and the rule is
        // open until 72 hours have passed, missed after.
        let mut other = facts(true);
        other.id = ReleaseId([2; 32]);
        let early = fleet.compliance(std::slice::from_ref(&other), NOW + 10 * 3600);
        assert_eq!(early[0].deadline, "open");
        assert_eq!((early[0].activated, early[0].missing_total), (0, 100));
        assert_eq!(early[0].to_50_s, None);
        assert_eq!(early[0].missing[0].state, "unknown");
        let late = fleet.compliance(&[other], NOW + 73 * 3600);
        assert_eq!(late[0].deadline, "missed");
    }

    #[test]
    fn records_of_unknown_nodes_stop_at_the_limit() {
        // The limit itself is large; the rule is what is checked, on a record past it.
        let fleet = Fleet::default();
        {
            let mut inner = lock(&fleet.inner);
            let held = Fleet::from_stored([record(1, "a", 1, None, 0)]);
            let one = lock(&held.inner).records.values().next().unwrap().clone();
            for i in 0..FLEET_NODES_MAX {
                let mut id = [0u8; 32];
                id[..8].copy_from_slice(&(i as u64).to_le_bytes());
                inner.records.insert(NodeId(id), one.clone());
            }
        }
        assert_eq!(
            fleet.offer(&record(2, "a", 1, None, 0)),
            Err(OfferError::Full)
        );
    }
}
