//! Site summaries: what one site's aggregator says of the whole site, so that status crosses
//! the WAN once per site instead of once per node.
//!
//! Inside a site every node keeps every member's signed status record
//! ([`crate::status`]); two members, chosen by rendezvous hashing over the live members,
//! aggregate them. A [`SiteSummary`] is that aggregate for each release the site's records
//! name: nodes by state, chunks held, the nodes that failed (a few, with their errors), the
//! earliest window opening, and when the site's installing nodes installed it. It is signed
//! by the aggregator's node key and carries a sequence number, so a replayed older summary
//! never replaces a newer one ([`SummaryBody::supersedes`]).
//!
//! [`site_releases`] is the one aggregation of records: the aggregator builds its summary
//! with it, and a node builds its own site's figures with it, so a site reads the same
//! whether its figures came from records or from a summary.
//!
//! What a summary cannot do: it names no node's state but the failed ones, so it cannot be
//! checked against the records (those are pulled on demand from the site, signed by each
//! node); a lying aggregator can misstate its own site's counts, within the bounds checked
//! here, and nothing else.

use crate::codec;
use crate::ids::{NodeId, ReleaseId};
use crate::manifest::Severity;
use crate::status::{
    ReleaseState, ReleaseStatus, STATUS_ERROR_BYTES_MAX, STATUS_RELEASES_MAX, StatusBody,
    StatusError,
};
use crate::wire::valid_name;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::SocketAddr;

/// Largest encoded [`SignedSummary`]. [`SUMMARY_RELEASES_MAX`] releases with
/// [`SUMMARY_FAILED_MAX`] failures each of the longest error fit; a typical summary is a few
/// hundred bytes.
pub const SUMMARY_BYTES_MAX: usize = 32 << 10;

/// Most releases one summary reports (the site's newest).
pub const SUMMARY_RELEASES_MAX: usize = STATUS_RELEASES_MAX;

/// Most failed nodes one summary names per release (all are counted): enough to see which
/// error it is; `p2pctl fleet --site` lists them all.
pub const SUMMARY_FAILED_MAX: usize = 3;

/// Most contacts (aggregators) one summary names.
pub const SUMMARY_CONTACTS_MAX: usize = 2;

/// Most nodes one summary may count: larger than any branch (a site's members are all
/// connected to each other, and a node connects to at most 4096 peers).
pub const SITE_NODES_MAX: u32 = 4096;

/// Installation delays are counted in buckets: bucket 0 is under [`INSTALL_BUCKET_FIRST_S`]
/// after publishing, and each later bucket ends [`INSTALL_BUCKET_RATIO`] times later than the
/// one before (so a delay read back from a bucket is at most 25 % late).
pub const INSTALL_BUCKET_FIRST_S: f64 = 60.0;

/// See [`INSTALL_BUCKET_FIRST_S`].
pub const INSTALL_BUCKET_RATIO: f64 = 1.25;

/// Buckets of installation delays: the last ends after about 60 days; later installs count
/// in it too.
pub const INSTALL_BUCKETS: usize = 52;

/// The deadline critical releases are held to: 72 hours from publishing.
pub const CRITICAL_DEADLINE_S: i64 = 72 * 3600;

/// Domain separation of the signature.
const SUMMARY_CONTEXT: &[u8] = b"p2pd site summary v4\0";

/// The bucket of an installation `delay_s` after publishing.
pub fn install_bucket(delay_s: i64) -> usize {
    let mut end = INSTALL_BUCKET_FIRST_S;
    for k in 0..INSTALL_BUCKETS {
        if (delay_s as f64) < end {
            return k;
        }
        end *= INSTALL_BUCKET_RATIO;
    }
    INSTALL_BUCKETS - 1
}

/// The end of bucket `k`, seconds after publishing: a delay read back from the bucket.
pub fn install_bucket_end_s(k: usize) -> i64 {
    (INSTALL_BUCKET_FIRST_S * INSTALL_BUCKET_RATIO.powi(k.min(INSTALL_BUCKETS - 1) as i32)).ceil()
        as i64
}

/// A member of a site that other sites can reach: an aggregator, at its WAN data address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contact {
    /// Its node id.
    pub node: NodeId,
    /// Where peers of other sites dial its data plane.
    pub wan: SocketAddr,
}

/// A node of the site whose fetch or installation failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedEntry {
    /// The node.
    pub node: NodeId,
    /// Since when, unix seconds.
    pub since_unix_s: i64,
    /// What it said went wrong (at most [`STATUS_ERROR_BYTES_MAX`] bytes).
    pub error: String,
}

/// One release across one site.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteRelease {
    /// The release.
    pub release: ReleaseId,
    /// Its channel (empty if no node of the site read its manifest).
    pub channel: String,
    /// Its version.
    pub version: u64,
    /// When it was published, unix seconds (0 if unknown).
    pub published_unix_s: i64,
    /// Its severity (`Low` if unknown).
    pub severity: Severity,
    /// Unique chunks in the release.
    pub chunks_total: u32,
    /// Nodes by state, in [`ReleaseState::ALL`] order. Every node counts once: in
    /// `Activated` if it installed this release, else in `covered` if it installed (or, not
    /// installing, holds) a newer version of the channel, else in the state its record gives,
    /// else nowhere (it does not know the release yet).
    pub states: Vec<u32>,
    /// Nodes covered by a newer version of the channel (see `states`).
    pub covered: u32,
    /// Nodes that have not applied it and sent no record for longer than the bound the
    /// aggregator holds them to (`scheduler::control::SILENT_AFTER`): counted here, not in
    /// the state their last record gave, and left out of every estimate.
    pub silent: u32,
    /// Chunks of it held, summed over the site's nodes; a node done with it (installed, or
    /// covered or superseded by a newer version) counts as holding all of them.
    pub chunks_have: u64,
    /// Installing nodes that installed it or a newer version of its channel, by the delay
    /// from publishing ([`install_bucket`]); trailing empty buckets are left out.
    pub installed_after: Vec<u32>,
    /// Of those, the ones that installed within [`CRITICAL_DEADLINE_S`] of publishing.
    pub installed_by_deadline: u32,
    /// The earliest time a paused node's download window opens, unix seconds.
    pub opens_unix_s: Option<i64>,
    /// Failed nodes, the newest failures first, at most [`SUMMARY_FAILED_MAX`].
    pub failed: Vec<FailedEntry>,
    /// Why nodes failed or refused it, the commonest first, at most
    /// [`SUMMARY_REASONS_MAX`]: every failed and refused node's error counted, so an
    /// operator sees the top reasons across the fleet without asking each site.
    pub reasons: Vec<Reason>,
    /// For a release with rings: each ring's nodes of the site, by the ring each node's
    /// record gives (at most [`crate::rollout::RINGS_MAX`]; trailing empty rings left
    /// out; the last ring, which gates nothing, is never counted). What every node
    /// evaluates the rings' gate from.
    pub rings: Vec<RingCount>,
}

/// One ring's nodes of a site for a release: those that are not silent and not held by an
/// exception, and of them those that installed it (or a newer version) and those that
/// failed, and when the latest of those installs or failures happened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RingCount {
    /// Nodes counted.
    pub nodes: u32,
    /// Of those, installed.
    pub installed: u32,
    /// Of those, failed.
    pub failed: u32,
    /// The latest install or failure among them, unix seconds (0: none): a gate's soak
    /// counts from the ring's latest change, the same on every node.
    pub last_unix_s: i64,
}

/// Most reasons a site's figures of a release carry ([`SiteRelease::reasons`]).
pub const SUMMARY_REASONS_MAX: usize = 4;

/// A reason nodes of a site failed, refused, hold a release (an exception) or wait on its
/// rollout, and how many gave it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reason {
    /// `Failed`, `Refused`, `Held` or `Waiting`.
    pub state: ReleaseState,
    /// The error the nodes' records give (at most [`STATUS_ERROR_BYTES_MAX`] bytes).
    pub reason: String,
    /// How many nodes give it.
    pub nodes: u32,
}

impl Reason {
    /// Sorts `list` the commonest first (then by state and text, so every node lists them
    /// alike) and keeps the first `max`.
    pub fn keep_commonest(list: &mut Vec<Self>, max: usize) {
        list.sort_by(|a, b| {
            b.nodes
                .cmp(&a.nodes)
                .then(a.state.index().cmp(&b.state.index()))
                .then_with(|| a.reason.cmp(&b.reason))
        });
        list.truncate(max);
    }
}

impl SiteRelease {
    /// Nodes in `state`.
    pub fn count(&self, state: ReleaseState) -> u32 {
        self.states.get(state.index()).copied().unwrap_or(0)
    }

    /// Nodes counted in some state, covered or silent.
    pub fn known(&self) -> u32 {
        self.states.iter().sum::<u32>() + self.covered + self.silent
    }
}

/// What a site's aggregator says of the site.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SummaryBody {
    /// The site.
    pub site: String,
    /// The aggregator (its ed25519 key): the key that signs the summary.
    pub aggregator: NodeId,
    /// Grows with every summary of the site (the aggregator's wall clock in milliseconds),
    /// so that the newest of two aggregators' summaries wins.
    pub seq: u64,
    /// When it was made, unix seconds.
    pub at_unix_s: i64,
    /// Nodes of the site with a record.
    pub nodes: u32,
    /// Of those, nodes that install releases.
    pub installers: u32,
    /// Where other sites reach the site: its aggregators (at most [`SUMMARY_CONTACTS_MAX`]).
    pub contacts: Vec<Contact>,
    /// Releases, the newest first (at most [`SUMMARY_RELEASES_MAX`]).
    pub releases: Vec<SiteRelease>,
}

impl SummaryBody {
    /// Whether this summary replaces `held` (same site, higher number).
    pub fn supersedes(&self, held: &Self) -> bool {
        self.site == held.site && self.seq > held.seq
    }

    /// The release's entry, if the summary has one.
    pub fn release(&self, id: &ReleaseId) -> Option<&SiteRelease> {
        self.releases.iter().find(|r| r.release == *id)
    }

    fn check(&self) -> Result<(), StatusError> {
        if !valid_name(&self.site) {
            return Err(StatusError::Invalid("site name"));
        }
        if self.nodes > SITE_NODES_MAX || self.installers > self.nodes {
            return Err(StatusError::Invalid("node counts"));
        }
        if self.contacts.len() > SUMMARY_CONTACTS_MAX {
            return Err(StatusError::Invalid("too many contacts"));
        }
        if self.releases.len() > SUMMARY_RELEASES_MAX {
            return Err(StatusError::Invalid("too many releases"));
        }
        for r in &self.releases {
            r.check(self.nodes, self.installers)?;
        }
        Ok(())
    }
}

impl SiteRelease {
    /// Checks the figures against a site of `nodes` nodes, `installers` of which install.
    pub fn check(&self, nodes: u32, installers: u32) -> Result<(), StatusError> {
        let r = self;
        if r.states.len() != ReleaseState::ALL.len() {
            return Err(StatusError::Invalid("state counts"));
        }
        if u64::from(r.known()) > u64::from(nodes)
            || r.installed_after.iter().map(|&n| u64::from(n)).sum::<u64>() > u64::from(installers)
            || r.installed_after.len() > INSTALL_BUCKETS
            || u64::from(r.installed_by_deadline) > u64::from(installers)
        {
            return Err(StatusError::Invalid("more nodes counted than the site has"));
        }
        if r.chunks_have > u64::from(r.chunks_total) * u64::from(nodes) {
            return Err(StatusError::Invalid(
                "more chunks held than the site can hold",
            ));
        }
        if !r.channel.is_empty() && !crate::manifest::is_valid_channel(&r.channel) {
            return Err(StatusError::Invalid("channel name"));
        }
        if r.rings.len() > crate::rollout::RINGS_MAX
            || r.rings
                .iter()
                .any(|c| c.installed.saturating_add(c.failed) > c.nodes)
            || r.rings.iter().map(|c| u64::from(c.nodes)).sum::<u64>() > u64::from(nodes)
        {
            return Err(StatusError::Invalid("ring counts"));
        }
        if r.failed.len() > SUMMARY_FAILED_MAX
            || r.failed.len() as u32 > r.count(ReleaseState::Failed)
            || r.failed
                .iter()
                .any(|f| f.error.len() > STATUS_ERROR_BYTES_MAX)
        {
            return Err(StatusError::Invalid("failed nodes"));
        }
        let given = |state: ReleaseState| -> u64 {
            r.reasons
                .iter()
                .filter(|x| x.state == state)
                .map(|x| u64::from(x.nodes))
                .sum()
        };
        if r.reasons.len() > SUMMARY_REASONS_MAX
            || r.reasons.iter().any(|x| {
                !matches!(
                    x.state,
                    ReleaseState::Failed
                        | ReleaseState::Refused
                        | ReleaseState::Held
                        | ReleaseState::Waiting
                        | ReleaseState::RolledBack
                ) || x.reason.len() > STATUS_ERROR_BYTES_MAX
            })
            || given(ReleaseState::Failed) > u64::from(r.count(ReleaseState::Failed))
            || given(ReleaseState::Refused) > u64::from(r.count(ReleaseState::Refused))
            || given(ReleaseState::Held) > u64::from(r.count(ReleaseState::Held))
            || given(ReleaseState::Waiting) > u64::from(r.count(ReleaseState::Waiting))
            || given(ReleaseState::RolledBack) > u64::from(r.count(ReleaseState::RolledBack))
        {
            return Err(StatusError::Invalid("reasons"));
        }
        Ok(())
    }
}

/// One entry of a site's ledger as the site's first aggregator hands it to a member of its
/// site ([`LedgerPage`]): a member that shows the fleet rarely, or just joined, learns every
/// release's figures the aggregator merged from summaries it never heard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// The site.
    pub site: String,
    /// The number of the summary that gave the figures (for this site's own figures, the
    /// aggregator's clock in milliseconds when it made them).
    pub seq: u64,
    /// The figures.
    pub figures: SiteRelease,
}

/// The entries of an aggregator's ledgers that changed after a point, oldest change first
/// (`protocol::wire::Request::Ledger`). The points are the aggregator's own numbering, which
/// starts again when it restarts (`epoch`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerPage {
    /// Which numbering `through` is in: another epoch than the one asked for means the
    /// page starts from the beginning.
    pub epoch: u64,
    /// The point the page reaches: ask again after it.
    pub through: u64,
    /// Whether more changed entries are left for the next page.
    pub more: bool,
    /// The entries.
    pub entries: Vec<LedgerEntry>,
}

impl LedgerPage {
    /// The page's bytes.
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(self)
    }

    /// Decodes a page from the network, bounded, with every entry checked (a site's
    /// figures against the most nodes a site may have).
    pub fn decode(bytes: &[u8]) -> Result<Self, StatusError> {
        let page: Self =
            codec::decode::<_, { crate::wire::SITE_RECORDS_BYTES_MAX }>(bytes, "ledger page")?;
        for e in &page.entries {
            if !valid_name(&e.site) {
                return Err(StatusError::Invalid("site name"));
            }
            e.figures.check(SITE_NODES_MAX, SITE_NODES_MAX)?;
        }
        Ok(page)
    }
}

/// A summary as it travels and as receivers keep it: the body's canonical encoding and the
/// aggregator's signature over it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedSummary {
    /// [`SummaryBody`], encoded.
    pub body: Vec<u8>,
    /// Ed25519 signature of [`SummaryBody::aggregator`] over the context and `body`.
    pub signature: Vec<u8>,
}

impl SignedSummary {
    /// Signs `body` with `key`, which must be the key of `body.aggregator`.
    pub fn sign(body: &SummaryBody, key: &SigningKey) -> Self {
        debug_assert_eq!(body.aggregator.0, key.verifying_key().to_bytes());
        let body = codec::encode(body);
        let signature = key
            .sign(&crate::codec::with_context(SUMMARY_CONTEXT, &body))
            .to_bytes()
            .to_vec();
        Self { body, signature }
    }

    /// The summary's bytes.
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(self)
    }

    /// Decodes a summary from the network or the store, bounded.
    pub fn decode(bytes: &[u8]) -> Result<Self, StatusError> {
        Ok(codec::decode::<Self, SUMMARY_BYTES_MAX>(
            bytes,
            "site summary",
        )?)
    }

    /// The body, if the signature is the named aggregator's and every field is in bounds.
    pub fn verify(&self) -> Result<SummaryBody, StatusError> {
        let body: SummaryBody =
            codec::decode::<_, SUMMARY_BYTES_MAX>(&self.body, "site summary body")?;
        let key =
            VerifyingKey::from_bytes(&body.aggregator.0).map_err(|_| StatusError::BadSignature)?;
        let sig = <[u8; 64]>::try_from(self.signature.as_slice())
            .map_err(|_| StatusError::BadSignature)?;
        key.verify(
            &crate::codec::with_context(SUMMARY_CONTEXT, &self.body),
            &Signature::from_bytes(&sig),
        )
        .map_err(|_| StatusError::BadSignature)?;
        body.check()?;
        Ok(body)
    }
}

/// One node's record, indexed: its entries by release, and per channel the versions it
/// installed (or, for a node that does not install, holds) and since when. A ledger holds up
/// to a thousand releases per node, so the figures look entries up instead of scanning.
struct Indexed<'a> {
    installs: bool,
    /// When its latest record was made.
    at_unix_s: i64,
    node: NodeId,
    by_id: HashMap<ReleaseId, &'a ReleaseStatus>,
    /// Per channel, (version, since) of every version done.
    done: HashMap<&'a str, Vec<(u64, i64)>>,
}

impl Indexed<'_> {
    /// When a version of `channel` newer than `version` was first done on this node: the
    /// time an older release counts as covered from (a node that installed v2 on time and v3
    /// a week later had v1 covered on time).
    fn covered_since(&self, channel: &str, version: u64) -> Option<i64> {
        self.done
            .get(channel)?
            .iter()
            .filter(|(v, _)| *v > version)
            .map(|(_, since)| *since)
            .min()
    }
}

fn index<'a>(records: &[&'a StatusBody]) -> Vec<Indexed<'a>> {
    records
        .iter()
        .map(|b| index_node(&NodeEntries::of(b)))
        .collect()
}

fn index_node<'a>(b: &NodeEntries<'a>) -> Indexed<'a> {
    let mut done: HashMap<&str, Vec<(u64, i64)>> = HashMap::new();
    for r in &b.releases {
        let is_done = if b.installs {
            r.state == ReleaseState::Activated
        } else {
            r.state.has_release()
        };
        if is_done && !r.channel.is_empty() {
            done.entry(r.channel.as_str())
                .or_default()
                .push((r.version, r.since_unix_s));
        }
    }
    Indexed {
        installs: b.installs,
        at_unix_s: b.at_unix_s,
        node: b.node,
        by_id: b.releases.iter().map(|r| (r.release, *r)).collect(),
        done,
    }
}

/// One node's entries as the figures read them: its latest record's header and entries of
/// its ledger (all, or those of some channels: a release's figures read its entries and
/// those of its channel only).
#[derive(Debug, Clone)]
pub struct NodeEntries<'a> {
    /// The node.
    pub node: NodeId,
    /// Whether it installs releases.
    pub installs: bool,
    /// When its latest record was made.
    pub at_unix_s: i64,
    /// Its entries.
    pub releases: Vec<&'a ReleaseStatus>,
}

impl<'a> NodeEntries<'a> {
    /// Every entry of a record.
    pub fn of(b: &'a StatusBody) -> Self {
        Self {
            node: b.node,
            installs: b.installs,
            at_unix_s: b.at_unix_s,
            releases: b.releases.iter().collect(),
        }
    }
}

/// What is known of a release apart from where it stands: the fields a record or a summary
/// repeats for every release it names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    /// Its channel (empty if unknown).
    pub channel: String,
    /// Its version (0 if unknown).
    pub version: u64,
    /// When it was published, unix seconds (0 if unknown).
    pub published_unix_s: i64,
    /// Its severity (`None`: unknown, taken as `Low`).
    pub severity: Option<Severity>,
    /// Unique chunks in it.
    pub chunks_total: u32,
}

impl Facts {
    /// The facts a node's entry gives.
    pub fn of_status(r: &ReleaseStatus) -> Self {
        Self {
            channel: r.channel.clone(),
            version: r.version,
            published_unix_s: r.published_unix_s,
            severity: (!r.channel.is_empty()).then_some(r.severity),
            chunks_total: r.chunks_total,
        }
    }

    /// The facts a site's entry gives.
    pub fn of_site(r: &SiteRelease) -> Self {
        Self {
            channel: r.channel.clone(),
            version: r.version,
            published_unix_s: r.published_unix_s,
            severity: (!r.channel.is_empty()).then_some(r.severity),
            chunks_total: r.chunks_total,
        }
    }

    /// Fills what is unknown here from `other`: the first entry with a channel gives the
    /// channel, version, time and severity; the chunk count is the largest seen.
    pub fn merge(&mut self, other: &Self) {
        if self.channel.is_empty() && !other.channel.is_empty() {
            let chunks = self.chunks_total;
            *self = other.clone();
            self.chunks_total = chunks.max(other.chunks_total);
        } else {
            self.chunks_total = self.chunks_total.max(other.chunks_total);
        }
    }
}

/// The figures of every release the `records` of one site name, the newest published first
/// ([`sort_site_releases`]):
/// the one aggregation behind a site summary (whose aggregator picks the at most
/// [`SUMMARY_RELEASES_MAX`] it carries) and a node's view of its own site.
///
/// With `silent_before`, a node whose latest record was made before it counts as silent for
/// every release it has not applied ([`SiteRelease::silent`]).
pub fn site_releases(records: &[&StatusBody], silent_before: Option<i64>) -> Vec<SiteRelease> {
    let nodes: Vec<NodeEntries<'_>> = records.iter().map(|b| NodeEntries::of(b)).collect();
    site_releases_of(&nodes, silent_before)
}

/// [`site_releases`] over nodes' entries as given (every release they name).
pub fn site_releases_of(nodes: &[NodeEntries<'_>], silent_before: Option<i64>) -> Vec<SiteRelease> {
    // Each release once, with what the records know of it.
    let mut known: HashMap<ReleaseId, Facts> = HashMap::new();
    for b in nodes {
        for r in &b.releases {
            known
                .entry(r.release)
                .or_default()
                .merge(&Facts::of_status(r));
        }
    }
    let indexed: Vec<Indexed<'_>> = nodes.iter().map(index_node).collect();
    let mut out: Vec<SiteRelease> = known
        .into_iter()
        .map(|(id, facts)| figures(&indexed, id, &facts, silent_before))
        .collect();
    sort_site_releases(&mut out);
    out
}

/// Sorts a site's figures as [`site_releases`] gives them: the newest published first, then
/// by channel, version (newest first) and id.
pub fn sort_site_releases(list: &mut [SiteRelease]) {
    list.sort_by(|a, b| {
        b.published_unix_s
            .cmp(&a.published_unix_s)
            .then_with(|| a.channel.cmp(&b.channel))
            .then(b.version.cmp(&a.version))
            .then_with(|| a.release.cmp(&b.release))
    });
}

/// The figures of one release across the `records` of one site.
pub fn site_release(records: &[&StatusBody], release: ReleaseId, facts: &Facts) -> SiteRelease {
    figures(&index(records), release, facts, None)
}

/// The records of one site indexed once, for the figures of many releases (the compliance
/// report asks for every release of a month).
pub struct SiteIndex<'a>(Vec<Indexed<'a>>, Option<i64>);

impl<'a> SiteIndex<'a> {
    /// Indexes `records`.
    pub fn new(records: &[&'a StatusBody]) -> Self {
        Self(index(records), None)
    }

    /// Indexes `records`, counting a node whose latest record was made before
    /// `silent_before_unix_s` as silent for every release it has not applied.
    pub fn with_silence(records: &[&'a StatusBody], silent_before_unix_s: i64) -> Self {
        Self(index(records), Some(silent_before_unix_s))
    }

    /// [`site_release`] over the indexed records.
    pub fn figures(&self, release: ReleaseId, facts: &Facts) -> SiteRelease {
        figures(&self.0, release, facts, self.1)
    }
}

fn figures(
    records: &[Indexed<'_>],
    release: ReleaseId,
    facts: &Facts,
    silent_before: Option<i64>,
) -> SiteRelease {
    let Facts {
        channel,
        version,
        published_unix_s,
        severity,
        chunks_total,
    } = facts;
    let (channel, version, published_unix_s, chunks_total) =
        (channel.as_str(), *version, *published_unix_s, *chunks_total);
    let mut out = SiteRelease {
        release,
        channel: channel.to_owned(),
        version,
        published_unix_s,
        severity: severity.unwrap_or(Severity::Low),
        chunks_total,
        states: vec![0; ReleaseState::ALL.len()],
        covered: 0,
        silent: 0,
        chunks_have: 0,
        installed_after: Vec::new(),
        installed_by_deadline: 0,
        opens_unix_s: None,
        failed: Vec::new(),
        reasons: Vec::new(),
        rings: Vec::new(),
    };
    let mut failed = Vec::new();
    let mut reasons: HashMap<(ReleaseState, &str), u32> = HashMap::new();
    let installed = |at: i64, out: &mut SiteRelease| {
        let delay = at.saturating_sub(published_unix_s);
        if delay <= CRITICAL_DEADLINE_S {
            out.installed_by_deadline += 1;
        }
        let k = install_bucket(delay);
        if out.installed_after.len() <= k {
            out.installed_after.resize(k + 1, 0);
        }
        out.installed_after[k] += 1;
    };
    for b in records {
        let own = b.by_id.get(&release).copied();
        let newer = (!channel.is_empty())
            .then(|| b.covered_since(channel, version))
            .flatten();
        let silent = silent_before.is_some_and(|t| b.at_unix_s < t);
        if let Some(r) = own.filter(|r| r.ring > 0 && r.state != ReleaseState::Held) {
            let applied = r.state == ReleaseState::Activated || newer.is_some();
            if !silent || applied {
                let k = usize::from(r.ring - 1);
                if out.rings.len() <= k {
                    out.rings.resize(k + 1, RingCount::default());
                }
                let c = &mut out.rings[k];
                c.nodes += 1;
                let at = if applied {
                    c.installed += 1;
                    newer.unwrap_or(r.since_unix_s)
                } else if r.state == ReleaseState::Failed {
                    c.failed += 1;
                    r.since_unix_s
                } else {
                    0
                };
                c.last_unix_s = c.last_unix_s.max(at);
            }
        }
        match (own, newer) {
            (Some(r), _) if r.state == ReleaseState::Activated => {
                out.states[r.state.index()] += 1;
                out.chunks_have += u64::from(chunks_total);
                if b.installs {
                    installed(r.since_unix_s, &mut out);
                }
            }
            (_, Some(since)) => {
                out.covered += 1;
                out.chunks_have += u64::from(chunks_total);
                if b.installs {
                    installed(since, &mut out);
                }
            }
            (Some(_), None) | (None, None) if silent => out.silent += 1,
            (Some(r), None) => {
                out.states[r.state.index()] += 1;
                out.chunks_have += if r.state == ReleaseState::Superseded {
                    u64::from(chunks_total)
                } else {
                    u64::from(r.chunks_have.min(chunks_total))
                };
                if matches!(
                    r.state,
                    ReleaseState::Failed
                        | ReleaseState::Refused
                        | ReleaseState::Held
                        | ReleaseState::Waiting
                        | ReleaseState::RolledBack
                ) {
                    let why = r.error.as_deref().unwrap_or_default();
                    *reasons.entry((r.state, why)).or_default() += 1;
                }
                match r.state {
                    ReleaseState::Failed => failed.push(FailedEntry {
                        node: b.node,
                        since_unix_s: r.since_unix_s,
                        error: r.error.clone().unwrap_or_default(),
                    }),
                    ReleaseState::PausedByWindow => {
                        if let Some(t) = r.until_unix_s {
                            out.opens_unix_s = Some(out.opens_unix_s.map_or(t, |o| o.min(t)));
                        }
                    }
                    _ => {}
                }
            }
            (None, None) => {}
        }
    }
    failed.sort_by(|a: &FailedEntry, b| {
        b.since_unix_s
            .cmp(&a.since_unix_s)
            .then_with(|| a.node.cmp(&b.node))
    });
    failed.truncate(SUMMARY_FAILED_MAX);
    out.failed = failed;
    let mut reasons: Vec<Reason> = reasons
        .into_iter()
        .map(|((state, reason), nodes)| Reason {
            state,
            reason: reason.to_owned(),
            nodes,
        })
        .collect();
    Reason::keep_commonest(&mut reasons, SUMMARY_REASONS_MAX);
    out.reasons = reasons;
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_795_392_000;

    fn key(b: u8) -> SigningKey {
        SigningKey::from_bytes(&[b; 32])
    }

    fn status(id: u8, version: u64, state: ReleaseState, since: i64) -> ReleaseStatus {
        ReleaseStatus {
            release: ReleaseId([id; 32]),
            channel: "security/x".into(),
            version,
            published_unix_s: NOW,
            severity: Severity::High,
            state,
            chunks_have: if state.has_release() { 10 } else { 4 },
            chunks_total: 10,
            since_unix_s: since,
            until_unix_s: (state == ReleaseState::PausedByWindow).then_some(NOW + 600),
            error: (state == ReleaseState::Failed).then(|| "apply exited 3".into()),
            ring: 0,
        }
    }

    fn record(k: u8, installs: bool, releases: Vec<ReleaseStatus>) -> StatusBody {
        StatusBody {
            node: NodeId(key(k).verifying_key().to_bytes()),
            site: "branch-1".into(),
            installs,
            seq: 1,
            at_unix_s: NOW,
            releases,
        }
    }

    #[test]
    fn each_gating_ring_counts_its_nodes_installs_failures_and_latest_change() {
        use ReleaseState::*;
        let in_ring = |ring: u8, state, since| ReleaseStatus {
            ring,
            ..status(1, 1, state, since)
        };
        let mut silent = record(5, true, vec![in_ring(1, Complete, 0)]);
        silent.at_unix_s = NOW - 3600;
        let records = [
            record(1, true, vec![in_ring(1, Activated, NOW + 60)]),
            record(2, true, vec![in_ring(1, Failed, NOW + 90)]),
            record(3, true, vec![in_ring(1, Downloading, 0)]),
            // Held by an exception, silent, or in the last ring (0): not counted.
            record(4, true, vec![in_ring(1, Held, 0)]),
            silent,
            record(6, true, vec![in_ring(0, Activated, NOW + 10)]),
            record(7, true, vec![in_ring(2, Activated, NOW + 30)]),
            // Covered by a newer version it installed: counts as installed, then.
            record(
                8,
                true,
                vec![
                    in_ring(1, Superseded, 0),
                    status(2, 2, Activated, NOW + 120),
                ],
            ),
        ];
        let refs: Vec<&StatusBody> = records.iter().collect();
        let all = site_releases(&refs, Some(NOW - 60));
        let r = all
            .iter()
            .find(|r| r.release == ReleaseId([1; 32]))
            .unwrap();
        assert_eq!(
            r.rings,
            vec![
                RingCount {
                    nodes: 4,
                    installed: 2,
                    failed: 1,
                    last_unix_s: NOW + 120
                },
                RingCount {
                    nodes: 1,
                    installed: 1,
                    failed: 0,
                    last_unix_s: NOW + 30
                },
            ]
        );
        r.check(8, 8).unwrap();
        let mut lying = r.clone();
        lying.rings[0].installed = 9;
        assert!(lying.check(8, 8).is_err());
    }

    #[test]
    fn every_node_counts_once_and_a_newer_install_covers_an_older_release() {
        use ReleaseState::*;
        let records = [
            // Installed v1 an hour after publishing.
            record(1, true, vec![status(1, 1, Activated, NOW + 3600)]),
            // v1 complete, v2 installed: covered.
            record(
                2,
                true,
                vec![
                    status(1, 1, Complete, NOW),
                    status(2, 2, Activated, NOW + 7200),
                ],
            ),
            // Never heard of v1, runs v2: covered.
            record(3, true, vec![status(2, 2, Activated, NOW + 60)]),
            record(4, true, vec![status(1, 1, Failed, NOW + 10)]),
            record(5, false, vec![status(1, 1, PausedByWindow, NOW)]),
            record(6, false, vec![]),
            // Does not install: holding v2 covers v1.
            record(7, false, vec![status(2, 2, Complete, NOW)]),
        ];
        let refs: Vec<&StatusBody> = records.iter().collect();
        let r = site_release(
            &refs,
            ReleaseId([1; 32]),
            &Facts {
                channel: "security/x".into(),
                version: 1,
                published_unix_s: NOW,
                severity: Some(Severity::High),
                chunks_total: 10,
            },
        );
        assert_eq!(r.count(Activated), 1);
        assert_eq!(r.covered, 3);
        assert_eq!(r.count(Failed), 1);
        assert_eq!(r.count(PausedByWindow), 1);
        assert_eq!(r.known(), 6, "node 6 knows nothing of it");
        assert_eq!(r.opens_unix_s, Some(NOW + 600));
        assert_eq!(r.failed.len(), 1);
        assert_eq!(r.failed[0].error, "apply exited 3");
        assert_eq!(
            r.reasons,
            vec![Reason {
                state: Failed,
                reason: "apply exited 3".into(),
                nodes: 1
            }]
        );
        // The three installers that installed it or v2, by delay: 1 h, 2 h, 1 min.
        let total: u32 = r.installed_after.iter().sum();
        assert_eq!(total, 3);
        assert_eq!(r.installed_after[install_bucket(60)], 1);
        assert_eq!(r.installed_after[install_bucket(3600)], 1);
        assert_eq!(r.installed_by_deadline, 3);
        // The newest release first; both named.
        let all = site_releases(&refs, None);
        assert_eq!(all.len(), 2);
    }

    #[test]
    fn an_older_release_is_covered_from_the_first_newer_install_not_the_newest() {
        use ReleaseState::*;
        // v1 superseded; v2 installed within the 72 hours, v3 a week later.
        let records = [record(
            1,
            true,
            vec![
                status(1, 1, Superseded, NOW),
                status(2, 2, Activated, NOW + 3600),
                status(3, 3, Activated, NOW + 7 * 86_400),
            ],
        )];
        let refs: Vec<&StatusBody> = records.iter().collect();
        let facts = |version| Facts {
            channel: "security/x".into(),
            version,
            published_unix_s: NOW,
            severity: Some(Severity::Critical),
            chunks_total: 10,
        };
        let v1 = site_release(&refs, ReleaseId([1; 32]), &facts(1));
        assert_eq!(v1.covered, 1);
        assert_eq!(v1.installed_by_deadline, 1, "covered by v2 on time");
        assert_eq!(v1.installed_after[install_bucket(3600)], 1);
        let v2 = site_release(&refs, ReleaseId([2; 32]), &facts(2));
        assert_eq!(v2.count(Activated), 1);
        assert_eq!(v2.installed_by_deadline, 1);
    }

    #[test]
    fn install_buckets_read_back_at_most_a_quarter_late() {
        for delay in [0i64, 59, 60, 61, 3599, 86_400, 72 * 3600] {
            let k = install_bucket(delay);
            let end = install_bucket_end_s(k);
            assert!(end > delay, "{delay} in bucket {k} ending {end}");
            if delay >= 60 {
                assert!(end as f64 <= delay as f64 * INSTALL_BUCKET_RATIO + 1.0);
            }
        }
        assert_eq!(install_bucket(i64::MAX), INSTALL_BUCKETS - 1);
    }

    fn body(k: &SigningKey, seq: u64) -> SummaryBody {
        let records = [record(
            1,
            true,
            vec![status(1, 1, ReleaseState::Failed, NOW)],
        )];
        let refs: Vec<&StatusBody> = records.iter().collect();
        SummaryBody {
            site: "branch-1".into(),
            aggregator: NodeId(k.verifying_key().to_bytes()),
            seq,
            at_unix_s: NOW,
            nodes: 1,
            installers: 1,
            contacts: vec![Contact {
                node: NodeId(k.verifying_key().to_bytes()),
                wan: "203.0.113.7:7402".parse().unwrap(),
            }],
            releases: site_releases(&refs, None),
        }
    }

    #[test]
    fn a_signed_summary_round_trips_and_forged_or_inflated_ones_are_refused() {
        let k = key(9);
        let signed = SignedSummary::sign(&body(&k, 3), &k);
        let bytes = signed.encode();
        assert!(bytes.len() < 400, "{} bytes", bytes.len());
        assert_eq!(
            SignedSummary::decode(&bytes).unwrap().verify().unwrap(),
            body(&k, 3)
        );
        let mut tampered = signed.clone();
        tampered.body[3] ^= 1;
        assert!(tampered.verify().is_err());
        // Signed, but counting more nodes than the site has.
        let mut inflated = body(&k, 4);
        inflated.releases[0].states[0] = 5;
        assert!(SignedSummary::sign(&inflated, &k).verify().is_err());
        let mut many = body(&k, 4);
        many.nodes = SITE_NODES_MAX + 1;
        assert!(SignedSummary::sign(&many, &k).verify().is_err());
        assert!(SignedSummary::decode(&vec![0u8; SUMMARY_BYTES_MAX + 1]).is_err());
        assert!(body(&k, 4).supersedes(&body(&k, 3)));
        assert!(!body(&k, 3).supersedes(&body(&k, 3)));
    }
}
