//! Control-plane decisions shared by the daemon and the simulator: when a status record or a
//! site summary goes out, which members of a site aggregate its records, which other sites a
//! node talks to across the WAN, and which summaries a neighbour still needs.
//!
//! The control plane has two levels, like the data plane (and like Serf's LAN and WAN
//! pools): inside a site every member sends its signed status record to every other member;
//! across the WAN only site summaries travel, made by the site's [`AGGREGATORS_PER_SITE`]
//! aggregators (rendezvous hashing over the live members, [`aggregators`]) and flooded
//! between the aggregators of all sites over a sparse overlay ([`OVERLAY_DEGREE`] neighbours
//! each, [`pick_across_sites`]), each summary at most once per link ([`Flood`]). So a record
//! costs its site's LAN and nothing else, and what crosses a branch's WAN grows with the
//! number of sites, not of nodes.
//!
//! Every interval is a constant here, so that the daemon and the simulator keep the same
//! cadence; times are milliseconds on any monotonic clock the caller keeps.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Duration;

use crate::planner::mix;

/// How often a node looks whether its status changed.
pub const STATUS_CHECK: Duration = Duration::from_secs(1);

/// A node's record goes out at most this often: changes in quick succession (announced,
/// then downloading a second later) travel as one record.
pub const STATUS_MIN_INTERVAL: Duration = Duration::from_secs(5);

/// A record whose only news is progress (chunks held) goes out at most this often.
pub const STATUS_PROGRESS_INTERVAL: Duration = Duration::from_secs(60);

/// With no news a record goes out this often anyway: it keeps the site's view of the node
/// alive, and a member that joined learns the others' state within this time.
pub const STATUS_HEARTBEAT: Duration = Duration::from_secs(300);

/// Heartbeats a node may miss before its site counts it silent: the default silence bound
/// is this many [`STATUS_HEARTBEAT`]s, and a shorter bound shortens the heartbeat to keep
/// the ratio ([`status_heartbeat`]).
pub const HEARTBEATS_BEFORE_SILENT: u32 = 3;

/// A node's heartbeat under a site's silence bound (`[node] silent_after_s`): the bound
/// over [`HEARTBEATS_BEFORE_SILENT`], at most [`STATUS_HEARTBEAT`] and at least
/// [`STATUS_MIN_INTERVAL`]. A node with nothing new still speaks often enough that its
/// site never counts it silent while it runs.
pub fn status_heartbeat(silent_after: Duration) -> Duration {
    (silent_after / HEARTBEATS_BEFORE_SILENT).clamp(STATUS_MIN_INTERVAL, STATUS_HEARTBEAT)
}

/// Members of a site that aggregate its records into summaries: two, so that one can fail.
pub const AGGREGATORS_PER_SITE: usize = 2;

/// A summary whose only news is progress goes out at most this often.
pub const SUMMARY_PROGRESS_INTERVAL: Duration = Duration::from_secs(60);

/// With no news a summary goes out this often anyway (it tells other sites the site is
/// still there). Every site receives every site's heartbeats, so this is what the control
/// plane costs a branch's WAN when no release moves: 500 sites' summaries of a few hundred
/// bytes, hourly, are well under 1 kbit/s.
pub const SUMMARY_HEARTBEAT: Duration = Duration::from_secs(3600);

/// Least and most time between two summaries of a site with news of a state change.
pub const SUMMARY_MIN_INTERVAL_BOUNDS: (Duration, Duration) =
    (Duration::from_secs(10), Duration::from_secs(60));

/// Time between two summaries of a site per site in the fleet: every summary reaches every
/// site, so the interval grows with the number of sites to keep what a branch receives
/// bounded (500 sites: a summary per site every 20 s).
pub const SUMMARY_INTERVAL_PER_SITE: Duration = Duration::from_millis(40);

/// Neighbours each aggregator keeps in the WAN overlay: a random graph of degree 3 is
/// connected with high probability and has a diameter of about log2(sites).
pub const OVERLAY_DEGREE: usize = 3;

/// Summaries an aggregator receives wait this long before it forwards them, so that several
/// travel in one message, and a neighbour that sends the same one meanwhile is not sent it.
pub const SUMMARY_FORWARD_DELAY: Duration = Duration::from_millis(500);

/// A data-plane connection with no traffic for this long is closed; keep-alives are sent
/// well within.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// A data-plane connection with nothing to send for this long sends a PING (which the peer
/// acknowledges), so that the idle timeout does not close it and NAT bindings stay open
/// (common UDP binding timeouts are 30 s and more). A third of [`IDLE_TIMEOUT`]: two lost
/// PINGs in a row still leave the connection up. It is what an idle fleet's connections
/// cost: per connection and interval, a PING and an acknowledgement each way
/// (`protocol::wire::PACKET_OVERHEAD_BYTES`, `ACK_PACKET_BYTES`); at 5 s it was twice as
/// much.
pub const KEEP_ALIVE: Duration = Duration::from_secs(10);

// Two PINGs may be lost before the idle timeout closes a connection.
const _: () = assert!(KEEP_ALIVE.as_secs() * 3 <= IDLE_TIMEOUT.as_secs());

/// Peers of other sites each node dials for chunks (besides its bootstrap peers).
pub const WAN_PEERS_DEFAULT: usize = 4;

/// New chunks announced to a peer of another site wait at most this long, so that those of
/// several checkpoints travel in one message: a member announces to each of its WAN peers
/// only the chunks that peer fetches across the WAN, but a message of one chunk still costs
/// a packet and its acknowledgement.
pub const WAN_HAVE_INTERVAL: Duration = Duration::from_secs(1);

/// The least time between two summaries of a site with a change of state, in a fleet of
/// `sites` sites.
pub fn summary_min_interval(sites: usize) -> Duration {
    let (lo, hi) = SUMMARY_MIN_INTERVAL_BOUNDS;
    (SUMMARY_INTERVAL_PER_SITE * sites.min(u32::MAX as usize) as u32).clamp(lo, hi)
}

/// What changed since the last record (or summary) went out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum News {
    /// Nothing.
    None,
    /// Only progress (chunks held).
    Progress,
    /// A state (a release's state, its error, a release added or gone, a new peer to tell).
    State,
    /// A change a ring's gate reads (an install or a failure in a ring that gates a later
    /// one): it goes out without waiting for the settle and at most [`GATE_MIN_INTERVAL`]
    /// after the last message, so that rings open and halts spread within seconds. Its cost
    /// is bounded by the gating rings' nodes: each installs once per release.
    Gate,
}

/// The least interval before a message with [`News::Gate`].
pub const GATE_MIN_INTERVAL: Duration = Duration::from_secs(2);

/// A summary's news of a change of state waits this long after it was first seen, for the
/// changes that follow it: the members of a site go from one state to the next within
/// seconds of each other (their records arrive a status interval apart), and one summary
/// can carry them all.
pub const SUMMARY_SETTLE: Duration = Duration::from_secs(10);

/// When a record or a summary is due: a change of state after the least interval (and, for
/// a summary, once it settled), progress after a longer one, and a heartbeat when nothing
/// changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cadence {
    min_ms: u64,
    progress_ms: u64,
    heartbeat_ms: u64,
    settle_ms: u64,
    last_ms: Option<u64>,
    /// Since when the news not yet sent has been a change of state.
    news_since: Option<u64>,
}

impl Cadence {
    /// A node's status record.
    pub fn status() -> Self {
        Self::status_within(STATUS_HEARTBEAT * HEARTBEATS_BEFORE_SILENT)
    }

    /// A node's status record in a site whose silence bound is `silent_after`: its
    /// heartbeat is [`status_heartbeat`].
    pub fn status_within(silent_after: Duration) -> Self {
        Self::new(
            STATUS_MIN_INTERVAL,
            STATUS_PROGRESS_INTERVAL,
            status_heartbeat(silent_after),
            Duration::ZERO,
        )
    }

    /// A site summary in a fleet of `sites` sites.
    pub fn summary(sites: usize) -> Self {
        Self::new(
            summary_min_interval(sites),
            SUMMARY_PROGRESS_INTERVAL.max(summary_min_interval(sites)),
            SUMMARY_HEARTBEAT,
            SUMMARY_SETTLE,
        )
    }

    fn new(min: Duration, progress: Duration, heartbeat: Duration, settle: Duration) -> Self {
        Self {
            min_ms: min.as_millis() as u64,
            progress_ms: progress.as_millis() as u64,
            heartbeat_ms: heartbeat.as_millis() as u64,
            settle_ms: settle.as_millis() as u64,
            last_ms: None,
            news_since: None,
        }
    }

    /// The least interval for `sites` sites (a summary's cadence follows the fleet's size).
    pub fn set_sites(&mut self, sites: usize) {
        let (last, since) = (self.last_ms, self.news_since);
        *self = Self::summary(sites);
        self.last_ms = last;
        self.news_since = since;
    }

    /// When something with `news` may go out (0: now), given the news seen so far.
    pub fn due_at(&self, news: News) -> u64 {
        let settled = match (news, self.news_since) {
            (News::State, Some(since)) => since + self.settle_ms,
            (News::State, None) => self.settle_ms,
            _ => 0,
        };
        let Some(last) = self.last_ms else {
            return settled.min(if news == News::State { u64::MAX } else { 0 });
        };
        let paced = last
            + match news {
                News::Gate => self.min_ms.min(GATE_MIN_INTERVAL.as_millis() as u64),
                News::State => self.min_ms,
                News::Progress => self.progress_ms,
                News::None => self.heartbeat_ms,
            };
        paced.max(settled)
    }

    /// Whether something with `news` goes out at `now_ms`; if it does, the cadence counts
    /// from now.
    pub fn poll(&mut self, now_ms: u64, news: News) -> bool {
        match news {
            News::State | News::Gate => {
                self.news_since.get_or_insert(now_ms);
            }
            _ => self.news_since = None,
        }
        let due = self.due_at(news) <= now_ms;
        if due {
            self.last_ms = Some(now_ms);
            self.news_since = None;
        }
        due
    }

    /// When the last one went out.
    pub fn last_ms(&self) -> Option<u64> {
        self.last_ms
    }
}

/// The rendezvous key of a site's name (FNV-1a, mixed).
pub fn site_key(site: &str) -> u64 {
    crate::seeding::site_key(site)
}

/// Salt of the aggregator weights, so that they are independent of chunk designations.
const AGGREGATOR_SALT: u64 = 0x6167_6772_6567_6174;

fn word(id: &[u8; 32]) -> u64 {
    u64::from_le_bytes(id[..8].try_into().expect("8 bytes"))
}

/// The aggregators of a site among its live `members` (node keys, the asking node among
/// them): the [`AGGREGATORS_PER_SITE`] of highest rendezvous weight for the site, best first.
/// Every member that sees the same members names the same aggregators; when one leaves, the
/// next in weight takes its place and the other stays.
pub fn aggregators(site: u64, members: &[[u8; 32]]) -> Vec<[u8; 32]> {
    let mut ranked: Vec<(u64, [u8; 32])> = members
        .iter()
        .map(|m| (mix(word(m) ^ mix(site ^ AGGREGATOR_SALT)), *m))
        .collect();
    ranked.sort_unstable_by(|a, b| b.cmp(a));
    ranked.dedup_by(|a, b| a.1 == b.1);
    ranked
        .into_iter()
        .take(AGGREGATORS_PER_SITE)
        .map(|(_, m)| m)
        .collect()
}

/// A node another site's member could talk to: its key and its site's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// Node key.
    pub node: [u8; 32],
    /// [`site_key`] of its site.
    pub site: u64,
}

/// `n` of `candidates` for `me` (of site `my_site`), in sites other than its own, spread over
/// as many sites as there are: [`pick_across_site_groups`] over the candidates grouped by
/// site. Returns indices into `candidates`.
pub fn pick_across_sites(
    me: &[u8; 32],
    my_site: u64,
    candidates: &[Candidate],
    n: usize,
) -> Vec<usize> {
    // Per site: its members and their indices in `candidates`.
    type Members = (Vec<[u8; 32]>, Vec<usize>);
    let mut by_site: HashMap<u64, Members> = HashMap::new();
    for (i, c) in candidates.iter().enumerate() {
        let (nodes, index) = by_site.entry(c.site).or_default();
        nodes.push(c.node);
        index.push(i);
    }
    let sites: Vec<(u64, Members)> = by_site.into_iter().collect();
    let groups: Vec<(u64, &[[u8; 32]])> = sites
        .iter()
        .map(|(site, (nodes, _))| (*site, nodes.as_slice()))
        .collect();
    pick_across_site_groups(me, my_site, &groups, n)
        .into_iter()
        .map(|(g, m)| sites[g].1.1[m])
        .collect()
}

/// `n` nodes of `groups` (each a site's key and its members' keys) for `me` (of site
/// `my_site`), in sites other than its own, spread over as many sites as there are: the
/// sites in the order of their rendezvous weight for `me`, the best member of each first,
/// then the second best of each, and so on. Returns (group, member) indices. Every node
/// picks differently, so the picks spread over the sites and their members; a member that
/// goes away moves only the picks that named it. A group's members are ranked only when it
/// is reached, so picking a few of a large fleet costs a weight per site, not per node.
pub fn pick_across_site_groups(
    me: &[u8; 32],
    my_site: u64,
    groups: &[(u64, &[[u8; 32]])],
    n: usize,
) -> Vec<(usize, usize)> {
    // A member as ranked: (weight, node, index in its group).
    type Ranked = (u64, [u8; 32], usize);
    let me_word = mix(word(me));
    let mut sites: Vec<(u64, u64, usize)> = groups
        .iter()
        .enumerate()
        .filter(|(_, (site, _))| *site != my_site)
        .map(|(g, (site, _))| (mix(site ^ me_word), *site, g))
        .collect();
    sites.sort_unstable_by_key(|s| std::cmp::Reverse((s.0, s.1)));
    let mut ranked: Vec<Option<Vec<Ranked>>> = vec![None; sites.len()];
    let mut out = Vec::with_capacity(n);
    let mut round = 0;
    while out.len() < n {
        let mut any = false;
        for (k, &(_, _, g)) in sites.iter().enumerate() {
            let members = ranked[k].get_or_insert_with(|| {
                let mut v: Vec<Ranked> = groups[g]
                    .1
                    .iter()
                    .enumerate()
                    .filter(|(_, m)| *m != me)
                    .map(|(i, m)| (mix(word(m) ^ me_word), *m, i))
                    .collect();
                v.sort_unstable_by(|a, b| b.cmp(a));
                v.dedup_by(|a, b| a.1 == b.1);
                v
            });
            if let Some(m) = members.get(round) {
                any = true;
                out.push((g, m.2));
                if out.len() == n {
                    break;
                }
            }
        }
        if !any {
            break;
        }
        round += 1;
    }
    out
}

/// The earliest time a batch may go to a peer whose last went at `last` (`None`: never),
/// `interval` after it, in the caller's unit: [`Batch`] keeps milliseconds, the simulator
/// nanoseconds.
pub fn next_batch_at(last: Option<u64>, interval: u64) -> u64 {
    last.map_or(0, |l| l.saturating_add(interval))
}

/// Chunk indices waiting to be announced to one peer: they go out together, at most every
/// interval ([`WAN_HAVE_INTERVAL`] across the WAN); the first after a quiet spell at once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    pending: Vec<u32>,
    last_ms: Option<u64>,
}

impl Batch {
    /// Adds `indices` to what waits.
    pub fn extend(&mut self, indices: impl IntoIterator<Item = u32>) {
        self.pending.extend(indices);
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// When what waits may go (`None`: nothing waits).
    pub fn due_at(&self, interval: Duration) -> Option<u64> {
        if self.pending.is_empty() {
            return None;
        }
        Some(next_batch_at(self.last_ms, interval.as_millis() as u64))
    }

    /// What goes out at `now_ms`, sorted and without repeats, if it is due.
    pub fn poll(&mut self, now_ms: u64, interval: Duration) -> Option<Vec<u32>> {
        if self.due_at(interval)? > now_ms {
            return None;
        }
        self.last_ms = Some(now_ms);
        let mut out = std::mem::take(&mut self.pending);
        out.sort_unstable();
        out.dedup();
        Some(out)
    }
}

/// Which summaries each neighbour still needs: a summary is sent to a neighbour at most once,
/// and not at all to one that sent it (or a newer one of its site) first. Memory: one number
/// per site per neighbour.
#[derive(Debug, Clone)]
pub struct Flood<P: Copy + Eq + Hash> {
    known: HashMap<P, HashMap<u64, u64>>,
}

impl<P: Copy + Eq + Hash> Default for Flood<P> {
    fn default() -> Self {
        Self {
            known: HashMap::new(),
        }
    }
}

impl<P: Copy + Eq + Hash> Flood<P> {
    /// Notes that `peer` has the summary of `site` numbered `seq` (it sent it, or we did).
    pub fn knows(&mut self, peer: P, site: u64, seq: u64) {
        let e = self.known.entry(peer).or_default().entry(site).or_insert(0);
        *e = (*e).max(seq);
    }

    /// Whether `peer` still needs the summary of `site` numbered `seq`.
    pub fn needs(&self, peer: &P, site: u64, seq: u64) -> bool {
        self.known
            .get(peer)
            .and_then(|k| k.get(&site))
            .is_none_or(|&s| s < seq)
    }

    /// Forgets `peer` (it is no longer a neighbour).
    pub fn forget(&mut self, peer: &P) {
        self.known.remove(peer);
    }

    /// Neighbours remembered.
    pub fn peers(&self) -> usize {
        self.known.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u32) -> [u8; 32] {
        let mut k = [0u8; 32];
        k[..8].copy_from_slice(&mix(u64::from(i) + 1).to_le_bytes());
        k
    }

    #[test]
    fn a_record_waits_its_interval_by_news_and_heartbeats_without() {
        let mut c = Cadence::status();
        assert!(c.poll(0, News::State), "the first goes at once");
        assert!(!c.poll(4_999, News::State));
        assert!(c.poll(5_000, News::State));
        assert!(!c.poll(60_000, News::Progress), "progress waits a minute");
        assert!(c.poll(65_000, News::Progress));
        assert!(!c.poll(300_000, News::None));
        assert_eq!(c.due_at(News::None), 365_000);
        assert!(c.poll(365_000, News::None));
    }

    #[test]
    fn a_short_silence_bound_shortens_the_heartbeat_so_a_running_node_never_turns_silent() {
        let s = Duration::from_secs;
        assert_eq!(status_heartbeat(s(900)), s(300));
        assert_eq!(status_heartbeat(s(86_400)), s(300), "at most the heartbeat");
        assert_eq!(status_heartbeat(s(60)), s(20));
        assert_eq!(status_heartbeat(s(10)), s(5), "at least the least interval");
        // With a 60 s bound a node with no news speaks every 20 s.
        let mut c = Cadence::status_within(s(60));
        assert!(c.poll(0, News::State));
        assert!(!c.poll(19_999, News::None));
        assert!(c.poll(20_000, News::None));
        assert_eq!(c.due_at(News::None), 40_000);
    }

    #[test]
    fn the_summary_interval_grows_with_the_fleet_within_its_bounds() {
        assert_eq!(summary_min_interval(3), Duration::from_secs(10));
        assert_eq!(summary_min_interval(500), Duration::from_secs(20));
        assert_eq!(summary_min_interval(100_000), Duration::from_secs(60));
        let mut c = Cadence::summary(500);
        assert!(!c.poll(0, News::State), "a change of state settles first");
        assert!(!c.poll(9_999, News::State));
        assert!(c.poll(10_000, News::State));
        assert!(!c.poll(15_000, News::State), "new news, settling");
        assert!(
            !c.poll(29_999, News::State),
            "settled, but the interval is 20 s"
        );
        assert!(c.poll(30_000, News::State));
        // News that came after a long quiet spell still waits to settle.
        assert!(!c.poll(100_000, News::State));
        assert!(c.poll(110_000, News::State));
    }

    #[test]
    fn members_agree_on_two_aggregators_and_a_leaver_moves_only_its_place() {
        let site = site_key("branch-7");
        let members: Vec<[u8; 32]> = (0..50).map(key).collect();
        let agg = aggregators(site, &members);
        assert_eq!(agg.len(), AGGREGATORS_PER_SITE);
        let mut shuffled = members.clone();
        shuffled.reverse();
        assert_eq!(aggregators(site, &shuffled), agg, "order does not matter");
        // The first leaves: the second stays, the third in weight joins.
        let rest: Vec<[u8; 32]> = members.iter().copied().filter(|m| *m != agg[0]).collect();
        let after = aggregators(site, &rest);
        assert_eq!(after[0], agg[1]);
        assert!(!after.contains(&agg[0]));
        // Another site elects others.
        assert_ne!(aggregators(site_key("branch-8"), &members), agg);
        assert_eq!(aggregators(site, &members[..1]), vec![members[0]]);
    }

    #[test]
    fn picks_are_in_distinct_other_sites_and_spread_over_them() {
        let candidates: Vec<Candidate> = (0..200)
            .map(|i| Candidate {
                node: key(i),
                site: site_key(&format!("s{}", i % 40)),
            })
            .collect();
        let mine = candidates[0].site;
        let mut hits = vec![0u32; candidates.len()];
        for me in 1000..1400 {
            let picked = pick_across_sites(&key(me), mine, &candidates, 4);
            assert_eq!(picked.len(), 4);
            let mut sites: Vec<u64> = picked.iter().map(|&i| candidates[i].site).collect();
            sites.sort_unstable();
            sites.dedup();
            assert_eq!(sites.len(), 4, "distinct sites");
            assert!(!sites.contains(&mine));
            for i in picked {
                hits[i] += 1;
            }
        }
        // 400 nodes × 4 picks over 195 candidates: about 8 each; none takes a crowd.
        assert!(*hits.iter().max().unwrap() < 30, "{hits:?}");
        assert!(hits.iter().filter(|&&h| h > 0).count() > 150);
        // Fewer sites than picks: the second best of each site next.
        let few = pick_across_sites(&key(999), mine, &candidates[..5], 4);
        assert_eq!(few.len(), 4);
        let mut sites: Vec<u64> = few.iter().map(|&i| candidates[i].site).collect();
        sites.sort_unstable();
        sites.dedup();
        assert_eq!(
            sites.len(),
            4,
            "5 candidates in 4 other sites: one from each"
        );
        assert_eq!(
            pick_across_sites(&key(999), mine, &candidates[..3], 4).len(),
            2,
            "all there are, but those of its own site"
        );
    }

    #[test]
    fn announcements_wait_their_interval_and_travel_together() {
        let i = WAN_HAVE_INTERVAL;
        let mut b = Batch::default();
        assert_eq!(b.poll(0, i), None, "nothing waits");
        b.extend([5, 3]);
        assert_eq!(b.poll(10, i), Some(vec![3, 5]), "the first goes at once");
        b.extend([9]);
        assert_eq!(b.poll(900, i), None);
        b.extend([7, 9]);
        assert_eq!(b.due_at(i), Some(1010));
        assert_eq!(b.poll(1010, i), Some(vec![7, 9]));
        assert!(b.is_empty());
    }

    #[test]
    fn a_summary_goes_once_per_link_and_not_back_to_its_sender() {
        let mut f: Flood<u8> = Flood::default();
        f.knows(1, 7, 10);
        assert!(!f.needs(&1, 7, 10), "the sender has it");
        assert!(!f.needs(&1, 7, 9), "and anything older");
        assert!(f.needs(&1, 7, 11));
        assert!(f.needs(&2, 7, 10));
        f.knows(2, 7, 10);
        assert!(!f.needs(&2, 7, 10), "told once");
        f.forget(&2);
        assert!(f.needs(&2, 7, 10));
        assert_eq!(f.peers(), 1);
    }
}
