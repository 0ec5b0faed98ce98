//! The fleet's status in two levels, on the data plane: every member sends its signed record
//! to its site's two aggregators (the daemon's status publisher, [`site_aggregators`]); the
//! first turns the site's records into a signed summary and exchanges summaries with the
//! other sites' aggregators over the WAN overlay; a member asks it for the site's records and
//! the summaries when it shows the fleet ([`refresh`]). So a record costs each member the
//! same whatever the size of its site.
//!
//! Every half second ([`scheduler::control::SUMMARY_FORWARD_DELAY`]) [`tick`] asks
//! [`scheduler::control::aggregators`] where this node stands among its site's two
//! aggregators (rendezvous hashing over itself and its connected same-site peers). The
//! first:
//!
//! * publishes the site's summary when [`scheduler::control::Cadence`] says so (a change of
//!   state after the least interval for the fleet's size, progress after a minute, a
//!   heartbeat every hour), with the releases [`scheduler::ledger::pick`] chooses from every
//!   release of the site's ledgers: changes not sent yet, those that move or just changed,
//!   and two settled ones in turn; receivers merge them into their ledger of the site;
//! * keeps [`scheduler::control::OVERLAY_DEGREE`] neighbours among other sites' aggregators
//!   (their contacts come with their summaries; before any is known, the bootstrap peers),
//!   tells them with [`Control::Overlay`], and announces to every neighbour — those it
//!   picked and those that picked it — the summaries it may lack ([`Control::Ihave`], a
//!   site key and a number each; [`scheduler::control::Flood`] remembers who has what); a
//!   neighbour asks for those it lacks ([`Control::Iwant`]) and gets them. So a summary's
//!   bytes reach each aggregator once, however many links the overlay has; pushing them on
//!   every link cost each aggregator five copies (control-6x4).
//!
//! The second holds the site's records like every member and takes over the moment the
//! first leaves the live members: it is then first. So a site crosses the WAN through one
//! member at a time, and each summary reaches each site about once. A node that stops being
//! first leaves the overlay. The simulator models the same cadence and shape from the same
//! constants.

use super::{Class, KnownPeer, Net, lock, peer::Peer};
use libp2p::PeerId;
use protocol::summary::{Contact, SignedSummary, SiteRelease, SummaryBody};
use protocol::wire::{
    CONTROL_FRAME_BYTES_MAX, Control, DIGEST_ENTRIES_MAX, SUMMARIES_PER_MESSAGE_MAX,
};
use protocol::{NodeId, ReleaseId};
use scheduler::control::{
    Candidate, Flood, OVERLAY_DEGREE, SUMMARY_FORWARD_DELAY, aggregators, pick_across_sites,
    site_key,
};
use scheduler::ledger;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use store::fleet::Fleet;

/// A member that shows the fleet asks its aggregator for the summaries at most this often;
/// in between it answers from those it holds.
pub(crate) const SUMMARY_PULL_TTL: std::time::Duration = std::time::Duration::from_secs(5);

/// A summary asked of one neighbour is asked of another that announces it after this long
/// without an answer.
pub(crate) const ASK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Bytes of summaries gathered into one [`Control::Summaries`] before another is started:
/// with one more summary (at most [`protocol::summary::SUMMARY_BYTES_MAX`]) a message stays
/// under the control stream's frame limit.
const SUMMARIES_MESSAGE_BYTES: usize = CONTROL_FRAME_BYTES_MAX / 2;

/// What this node publishes and forwards.
#[derive(Debug)]
struct State {
    /// This node's rank among its site's aggregators (0: first), if it is one.
    rank: Option<usize>,
    /// When a summary goes out and which releases it carries.
    publisher: ledger::Publisher<ReleaseId, SiteRelease>,
    /// The content of the last summary published.
    last: Option<ledger::SummaryContent>,
    /// The last summary published: its number and bytes.
    own: Option<(u64, Vec<u8>)>,
    /// Overlay neighbours this node picked.
    picks: Vec<PeerId>,
    /// Which summaries each neighbour has, or was told of.
    flood: Flood<PeerId>,
    /// Summaries asked for and not come yet: site key -> (number, when asked).
    asked: HashMap<u64, (u64, Instant)>,
    epoch: Instant,
    /// When this node (not first) last asked its aggregator for summaries.
    pulled: Option<Instant>,
    /// When this node (not first) last read its aggregator's ledgers for a ring's gate
    /// ([`refresh_ledger`]).
    ledger_pulled: Option<Instant>,
    /// How far this node read its aggregator's ledgers: the aggregator, its numbering and
    /// the point reached ([`refresh`]).
    ledger_read: Option<([u8; 32], u64, u64)>,
}

impl Default for State {
    fn default() -> Self {
        Self {
            rank: None,
            publisher: ledger::Publisher::summary(1),
            last: None,
            own: None,
            picks: Vec::new(),
            flood: Flood::default(),
            asked: HashMap::new(),
            epoch: Instant::now(),
            pulled: None,
            ledger_pulled: None,
            ledger_read: None,
        }
    }
}

/// The site's aggregation and the WAN overlay, as far as this node takes part.
#[derive(Debug, Default)]
pub(crate) struct Aggregate(Mutex<State>);

impl Aggregate {
    /// Whether this node wants a connection to `peer` as an overlay neighbour.
    pub(crate) fn wants(&self, peer: &PeerId) -> bool {
        lock(&self.0).picks.contains(peer)
    }

    /// The last summary this node published as its site's first aggregator, signed.
    pub(crate) fn own_summary(&self) -> Option<Vec<u8>> {
        lock(&self.0).own.as_ref().map(|(_, s)| s.clone())
    }

    /// Whether this node aggregates its site (and its rank).
    pub(crate) fn rank(&self) -> Option<usize> {
        lock(&self.0).rank
    }

    /// Notes a pull of summaries now; false if one was made within [`SUMMARY_PULL_TTL`].
    fn pull_turn(&self) -> bool {
        turn(&mut lock(&self.0).pulled, SUMMARY_PULL_TTL)
    }

    /// Notes a read of the aggregator's ledger for a ring's gate now; false if one was made
    /// within [`RING_PULL_INTERVAL`].
    fn ledger_turn(&self) -> bool {
        turn(&mut lock(&self.0).ledger_pulled, RING_PULL_INTERVAL)
    }

    /// `peer` has the summary of `site` numbered `seq` (it sent it).
    pub(crate) fn heard(&self, peer: PeerId, site: &str, seq: u64) {
        let mut st = lock(&self.0);
        let key = site_key(site);
        st.flood.knows(peer, key, seq);
        if st.asked.get(&key).is_some_and(|a| a.0 <= seq) {
            st.asked.remove(&key);
        }
    }

    /// `peer` announced summaries: those newer than held and not asked of another peer in
    /// the last [`ASK_TIMEOUT`] are asked of it.
    pub(crate) fn on_ihave(&self, peer: &Peer, fleet: &Fleet, entries: &[(u64, u64)]) {
        if self.rank() != Some(0) {
            // Only the first aggregator takes part; the rest ask it when they need to.
            return;
        }
        let held: HashMap<u64, u64> = fleet
            .summaries()
            .into_iter()
            .map(|(site, seq, _)| (site_key(&site), seq))
            .collect();
        let mut st = lock(&self.0);
        let mut want = Vec::new();
        for &(key, seq) in entries {
            st.flood.knows(peer.id, key, seq);
            if key == site_key(fleet.site()) || held.get(&key).is_some_and(|&h| h >= seq) {
                continue;
            }
            let fresh = st
                .asked
                .get(&key)
                .is_some_and(|a| a.0 >= seq && a.1.elapsed() < ASK_TIMEOUT);
            if fresh {
                continue;
            }
            if !st.asked.contains_key(&key) && st.asked.len() >= store::fleet::SITES_MAX {
                st.asked.clear();
            }
            st.asked.insert(key, (seq, Instant::now()));
            want.push((key, seq));
        }
        drop(st);
        for part in want.chunks(DIGEST_ENTRIES_MAX) {
            peer.send_control(Control::Iwant(part.to_vec()));
        }
    }

    /// `peer` asked for summaries this node announced: it gets those it holds.
    pub(crate) fn on_iwant(&self, peer: &Peer, fleet: &Fleet, entries: &[(u64, u64)]) {
        let wanted: HashMap<u64, u64> = entries.iter().copied().collect();
        let mut held: Vec<(String, u64, Vec<u8>)> = fleet
            .summaries()
            .into_iter()
            .filter(|(site, seq, _)| wanted.get(&site_key(site)).is_some_and(|w| seq >= w))
            .collect();
        let st = lock(&self.0);
        if let Some((seq, bytes)) = &st.own {
            if wanted
                .get(&site_key(fleet.site()))
                .is_some_and(|w| seq >= w)
            {
                held.push((fleet.site().to_owned(), *seq, bytes.clone()));
            }
        }
        drop(st);
        send_batches(peer, held.into_iter().map(|(_, _, b)| b));
    }

    /// A new connection to `peer`: it may have lost what it had (a restart).
    pub(crate) fn connected(&self, peer: &PeerId) {
        lock(&self.0).flood.forget(peer);
    }
}

/// Runs [`tick`] until shutdown.
pub async fn run(net: Arc<Net>, fleet: Arc<Fleet>) {
    let mut shutdown = net.shutdown.clone();
    let mut every = tokio::time::interval(SUMMARY_FORWARD_DELAY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = every.tick() => tick(&net, &fleet),
        }
    }
}

/// This node's data-plane address for other sites, if one they can dial.
fn own_contact(net: &Net) -> Option<Contact> {
    let c = net.config();
    let wan = c
        .advertise_wan
        .or(c.advertise_data)
        .unwrap_or(net.data_addr());
    (!wan.ip().is_unspecified()).then_some(Contact {
        node: net.local.node_id,
        wan,
    })
}

/// This site's aggregators, best first, over this node and its connected same-site peers.
pub fn site_aggregators(net: &Net) -> Vec<[u8; 32]> {
    let mut members: Vec<[u8; 32]> = net
        .peer_list()
        .iter()
        .filter(|p| p.class == Class::Lan)
        .map(|p| p.node_key)
        .collect();
    members.push(net.local.node_id.0);
    aggregators(site_key(&net.local.site), &members)
}

/// One round: who aggregates, publish, keep the overlay, forward.
pub(crate) fn tick(net: &Arc<Net>, fleet: &Fleet) {
    let peers = net.peer_list();
    let site = site_key(&net.local.site);
    let aggs = site_aggregators(net);
    let rank = aggs.iter().position(|a| *a == net.local.node_id.0);
    let mut st = lock(&net.aggregate.0);
    if st.rank == Some(0) && rank != Some(0) {
        tracing::info!("no longer a site aggregator; leaving the WAN overlay");
        for p in &peers {
            if p.overlay_sent.swap(false, Ordering::Relaxed) {
                p.send_control(Control::Overlay(false));
            }
        }
        st.picks.clear();
    }
    if rank.is_some() && st.rank != rank {
        tracing::info!(rank = rank.unwrap_or(0), "aggregating this site's status");
    }
    st.rank = rank;
    // The first aggregator makes the site's summary from its records; every other node,
    // the second aggregator too (it may have missed records before it took its rank),
    // figures the site from that summary.
    fleet.set_aggregating(rank == Some(0));
    if rank != Some(0) {
        return;
    }
    let now_s = jiff::Timestamp::now().as_second();
    publish(net, fleet, &mut st, &aggs, now_s);

    // The overlay: neighbours among other sites' aggregators.
    let mut candidates: Vec<(PeerId, KnownPeer, Candidate)> = Vec::new();
    for (s, c) in fleet.publishers() {
        let Some(peer) = super::peer_id_of(&c.node) else {
            continue;
        };
        if c.wan.ip().is_unspecified() || peer == net.local.peer_id {
            continue;
        }
        let known = KnownPeer {
            told: super::peers::Told::Summary,
            lan_known: false,
            site: s.clone(),
            lan: c.wan,
            wan: c.wan,
        };
        candidates.push((
            peer,
            known,
            Candidate {
                node: c.node.0,
                site: site_key(&s),
            },
        ));
    }
    if candidates.is_empty() {
        // Nobody known yet: the bootstrap peers (which aggregate their own sites, or know
        // who does) hold the overlay together until summaries name the aggregators.
        let bootstrap: Vec<PeerId> = net.peers.bootstrap().into_iter().collect();
        for p in &bootstrap {
            if let (Some(k), Some(n)) = (net.known(p), super::node_id_of(p)) {
                let key = site_key(&k.site);
                candidates.push((*p, k, Candidate { node: n, site: key }));
            }
        }
    }
    let list: Vec<Candidate> = candidates.iter().map(|c| c.2).collect();
    let picked = pick_across_sites(&net.local.node_id.0, site, &list, OVERLAY_DEGREE);
    st.picks = picked.iter().map(|&i| candidates[i].0).collect();
    for &i in &picked {
        let (peer, known, _) = &candidates[i];
        net.learn_peer(*peer, known.clone());
    }
    let mut neighbours: Vec<&Arc<Peer>> = Vec::new();
    for p in peers.iter().filter(|p| p.class == Class::Wan) {
        let picked = st.picks.contains(&p.id);
        if picked && !p.overlay_sent.swap(true, Ordering::Relaxed) {
            p.send_control(Control::Overlay(true));
        } else if !picked && p.overlay_sent.swap(false, Ordering::Relaxed) {
            p.send_control(Control::Overlay(false));
        }
        if picked || p.overlay_chosen.load(Ordering::Relaxed) {
            neighbours.push(p);
        }
    }

    // Announce to each neighbour the summaries it may lack (not its own site's).
    let mut held: Vec<(String, u64)> = fleet
        .summaries()
        .into_iter()
        .map(|(site, seq, _)| (site, seq))
        .collect();
    if let Some((seq, _)) = &st.own {
        held.push((net.local.site.clone(), *seq));
    }
    let st = &mut *st;
    for n in neighbours {
        let mut list = Vec::new();
        for (site, seq) in &held {
            let key = site_key(site);
            if *site != n.site && st.flood.needs(&n.id, key, *seq) {
                st.flood.knows(n.id, key, *seq);
                list.push((key, *seq));
            }
        }
        for part in list.chunks(DIGEST_ENTRIES_MAX) {
            n.send_control(Control::Ihave(part.to_vec()));
        }
    }
}

/// How long a member waits for its site's aggregator in one refresh, all requests together:
/// on the LAN the pages take well under a second, and an aggregator that does not answer
/// (hung, or a hostile member that won the rendezvous) must not hold `p2pctl fleet` for the
/// requests' own timeouts (minutes); the view is then made from what is held.
pub const REFRESH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// On a node that is not its site's first aggregator: asks the first for its site's records
/// and the other sites' summaries (at most every [`SUMMARY_PULL_TTL`]), before a fleet view
/// is made, for at most [`REFRESH_TIMEOUT`]. The view is made from what is held if the
/// aggregator cannot be asked.
pub async fn refresh(net: &Arc<Net>) {
    if tokio::time::timeout(REFRESH_TIMEOUT, refresh_from_aggregator(net))
        .await
        .is_err()
    {
        tracing::warn!(
            "the site's aggregator did not answer within {} s; the fleet view is made from what is held",
            REFRESH_TIMEOUT.as_secs()
        );
    }
}

/// A member's read of its aggregator's ledger for a ring's gate happens at most this often:
/// as often as the installer looks again ([`scheduler::rollout`]'s figures are the
/// ledger's), and each read carries only the entries changed since the last.
pub const RING_PULL_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);

/// On a node that is not its site's first aggregator and has a release waiting on a ring:
/// reads the entries of the aggregator's ledgers changed since the last read (at most every
/// [`RING_PULL_INTERVAL`]), so that every site's ring figures are current here. A member
/// otherwise holds the fleet's figures only when it shows the fleet ([`refresh`]).
pub async fn refresh_ledger(net: &Arc<Net>) {
    let Some(fleet) = net.fleet.get() else {
        return;
    };
    if net.aggregate.rank() == Some(0) || !net.aggregate.ledger_turn() {
        return;
    }
    let Some(first) = first_aggregator(net) else {
        return;
    };
    let _ = tokio::time::timeout(REFRESH_TIMEOUT, read_ledger(net, &first, fleet)).await;
}

/// True, noting now in `last`, unless `last` is within `every` of now.
fn turn(last: &mut Option<Instant>, every: std::time::Duration) -> bool {
    if last.is_some_and(|t| t.elapsed() < every) {
        return false;
    }
    *last = Some(Instant::now());
    true
}

/// The connection to this site's first aggregator, if there is one.
fn first_aggregator(net: &Net) -> Option<Arc<Peer>> {
    let first = *site_aggregators(net).first()?;
    net.peer_list()
        .into_iter()
        .find(|p| p.class == Class::Lan && p.node_key == first)
}

/// Reads the entries of `first`'s ledgers changed since this node's last read, a page at a
/// time (at most [`LEDGER_PAGES_PER_REFRESH`]).
async fn read_ledger(net: &Arc<Net>, first: &Arc<Peer>, fleet: &Arc<Fleet>) {
    let (mut epoch, mut after) = match lock(&net.aggregate.0).ledger_read {
        Some((agg, epoch, after)) if agg == first.node_key => (epoch, after),
        _ => (0, 0),
    };
    for _ in 0..LEDGER_PAGES_PER_REFRESH {
        match first.request_ledger(epoch, after).await {
            Ok(page) => {
                let fleet = fleet.clone();
                let more = page.more;
                (epoch, after) = (page.epoch, page.through);
                let _ = tokio::task::spawn_blocking(move || fleet.merge_ledger_page(&page)).await;
                lock(&net.aggregate.0).ledger_read = Some((first.node_key, epoch, after));
                if !more {
                    break;
                }
            }
            Err(e) => {
                tracing::debug!(peer = %first.id, error = %e, "ledger not fetched");
                break;
            }
        }
    }
}

/// Whether a record of `node` that the site's aggregator relays may be kept: always in a
/// fleet without a root; with one, only for this node or a member whose certificate this
/// node verified itself and which still holds (not expired, not revoked, its CA still in
/// the root). An aggregator, hostile or not, cannot add nodes to a member's view.
fn relayed_member(net: &Net, node: &protocol::NodeId) -> Result<(), String> {
    let Some(m) = net.membership() else {
        return Ok(());
    };
    if *node == net.local.node_id {
        return Ok(());
    }
    let cert = net
        .peers
        .certified(&node.0)
        .ok_or_else(|| "no certificate of it was verified here".to_string())?;
    m.check(&cert, node, jiff::Timestamp::now().as_second())
}

async fn refresh_from_aggregator(net: &Arc<Net>) {
    let Some(fleet) = net.fleet.get() else {
        return;
    };
    if net.aggregate.rank() == Some(0) || !net.aggregate.pull_turn() {
        return;
    }
    let Some(first) = first_aggregator(net) else {
        return;
    };
    match first.request_site_records().await {
        Ok(list) => {
            for bytes in list {
                let Ok(body) =
                    protocol::status::SignedStatus::decode(&bytes).and_then(|s| s.verify())
                else {
                    continue;
                };
                if let Err(why) = relayed_member(net, &body.node) {
                    tracing::debug!(node = %body.node.to_hex(), reason = %why,
                        "record relayed by the aggregator not kept");
                    continue;
                }
                let _ = fleet.keep_record(body, bytes);
            }
        }
        Err(e) => tracing::debug!(peer = %first.id, error = %e, "site records not fetched"),
    }
    match first.request_summaries().await {
        Ok(list) => {
            let now = jiff::Timestamp::now().as_second();
            for bytes in list {
                // The aggregator's own summary comes first: this site's figures.
                if let Err(store::fleet::OfferError::OwnSite) = fleet.offer_summary(&bytes, now) {
                    let _ = fleet.offer_own_summary(&bytes, now);
                }
            }
        }
        Err(e) => tracing::debug!(peer = %first.id, error = %e, "summaries not fetched"),
    }
    // The history: every entry of the aggregator's ledgers that changed since the last
    // read, a page at a time, so a member that shows the fleet rarely, or just came, has
    // the figures of every release the aggregator heard of, not only what the latest
    // summaries carry.
    read_ledger(net, &first, fleet).await;
}

/// Most ledger pages a member reads in one refresh (each at most
/// [`protocol::wire::SITE_RECORDS_BYTES_MAX`]): a month of a 500-site fleet's history is
/// about 30 MiB, read once; after that a page holds what changed since the last read.
const LEDGER_PAGES_PER_REFRESH: usize = 16;

/// Sends `to` these summaries, several to a message.
fn send_batches(to: &Peer, summaries: impl IntoIterator<Item = Vec<u8>>) {
    let mut batch: Vec<Vec<u8>> = Vec::new();
    let mut bytes = 0;
    for signed in summaries {
        if !batch.is_empty()
            && (bytes + signed.len() > SUMMARIES_MESSAGE_BYTES
                || batch.len() == SUMMARIES_PER_MESSAGE_MAX)
        {
            to.send_control(Control::Summaries(std::mem::take(&mut batch)));
            bytes = 0;
        }
        bytes += signed.len();
        batch.push(signed);
    }
    if !batch.is_empty() {
        to.send_control(Control::Summaries(batch));
    }
}

/// Publishes this site's summary when its cadence says so.
fn publish(net: &Net, fleet: &Fleet, st: &mut State, aggs: &[[u8; 32]], now_s: i64) {
    let (nodes, installers, releases) = fleet.own_figures(now_s);
    let mut contacts: Vec<Contact> = own_contact(net).into_iter().collect();
    for a in aggs.iter().filter(|a| **a != net.local.node_id.0) {
        let node = NodeId(*a);
        let wan = super::peer_id_of(&node)
            .and_then(|p| net.known(&p))
            .map(|k| k.wan)
            .filter(|w| !w.ip().is_unspecified());
        if let Some(wan) = wan {
            contacts.push(Contact { node, wan });
        }
    }
    let content = ledger::SummaryContent::new(nodes, installers, contacts, &releases);
    let news = st.publisher.summary_news(&content, st.last.as_ref());
    st.publisher.set_sites(fleet.sites());
    let now_ms = st.epoch.elapsed().as_millis() as u64;
    if !st.publisher.poll(now_ms, news) {
        return;
    }
    let seq = st
        .own
        .as_ref()
        .map_or(0, |(s, _)| s + 1)
        .max(u64::try_from(now_s.saturating_mul(1000)).unwrap_or(0));
    let body = SummaryBody {
        site: net.local.site.clone(),
        aggregator: net.local.node_id,
        seq,
        at_unix_s: now_s,
        nodes,
        installers,
        contacts: content.contacts().to_vec(),
        releases: st.publisher.pick_site_releases(releases, now_s),
    };
    let signed = SignedSummary::sign(&body, &net.signing).encode();
    tracing::debug!(seq, bytes = signed.len(), ?news, "site summary");
    st.own = Some((seq, signed));
    st.last = Some(content);
}
