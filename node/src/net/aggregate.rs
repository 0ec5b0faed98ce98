//! The fleet's status in two levels, on the data plane: every member sends its signed record
//! to its site's members (the daemon's status publisher, [`Net::broadcast_lan`]); the site's
//! aggregators turn the site's records into a signed summary and exchange summaries with the
//! other sites' aggregators over the WAN overlay; the first aggregator passes the other
//! sites' summaries on to its site's members.
//!
//! Every half second ([`scheduler::control::SUMMARY_FORWARD_DELAY`]) [`tick`] asks
//! [`scheduler::control::aggregators`] whether this node aggregates its site (rendezvous
//! hashing over itself and its connected same-site peers). If it does:
//!
//! * the first of the two publishes the site's summary when [`scheduler::control::Cadence`]
//!   says so (a change of state after the least interval for the fleet's size, progress
//!   after a minute, a heartbeat every hour);
//! * both keep [`scheduler::control::OVERLAY_DEGREE`] neighbours among other sites'
//!   aggregators (their contacts come with their summaries; before any is known, the
//!   bootstrap peers), tell them with [`Control::Overlay`], and send every neighbour — those
//!   it picked and those that picked it — each summary it does not have yet
//!   ([`scheduler::control::Flood`]), several in one message;
//! * the first passes other sites' summaries on to its site's members the same way.
//!
//! A node that stops aggregating (a member with a higher weight came back) leaves the
//! overlay. The simulator models the same cadence and shape from the same constants.

use super::{Class, KnownPeer, Net, lock, peer::Peer};
use crate::fleet::Fleet;
use libp2p::PeerId;
use protocol::NodeId;
use protocol::summary::{Contact, SignedSummary, SiteRelease, SummaryBody};
use protocol::wire::{CONTROL_FRAME_BYTES_MAX, Control, SUMMARIES_PER_MESSAGE_MAX};
use scheduler::control::{
    Cadence, Candidate, Flood, News, OVERLAY_DEGREE, SUMMARY_FORWARD_DELAY, aggregators,
    pick_across_sites, site_key,
};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Bytes of summaries gathered into one [`Control::Summaries`] before another is started:
/// with one more summary (at most [`protocol::summary::SUMMARY_BYTES_MAX`]) a message stays
/// under the control stream's frame limit.
const SUMMARIES_MESSAGE_BYTES: usize = CONTROL_FRAME_BYTES_MAX / 2;

/// What this node publishes and forwards.
#[derive(Debug)]
struct State {
    /// This node's rank among its site's aggregators (0: first), if it is one.
    rank: Option<usize>,
    cadence: Cadence,
    /// The content of the last summary published (progress aside) and its progress.
    last: Option<(SummaryKey, Vec<u64>)>,
    /// The last summary published: its number and bytes.
    own: Option<(u64, Vec<u8>)>,
    /// Overlay neighbours this node picked.
    picks: Vec<PeerId>,
    /// Which summaries each neighbour and member has.
    flood: Flood<PeerId>,
    epoch: Instant,
}

/// A summary's content but for progress (chunks held), to tell news of a state from news of
/// progress.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SummaryKey {
    nodes: u32,
    installers: u32,
    contacts: Vec<Contact>,
    releases: Vec<SiteRelease>,
}

impl Default for State {
    fn default() -> Self {
        Self {
            rank: None,
            cadence: Cadence::summary(1),
            last: None,
            own: None,
            picks: Vec::new(),
            flood: Flood::default(),
            epoch: Instant::now(),
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

    /// Whether this node aggregates its site (and its rank).
    pub(crate) fn rank(&self) -> Option<usize> {
        lock(&self.0).rank
    }

    /// `peer` has the summary of `site` numbered `seq` (it sent it).
    pub(crate) fn heard(&self, peer: PeerId, site: &str, seq: u64) {
        lock(&self.0).flood.knows(peer, site_key(site), seq);
    }

    /// A new connection to `peer`: it may have lost what it had (a restart).
    pub(crate) fn connected(&self, peer: &PeerId) {
        lock(&self.0).flood.forget(peer);
    }
}

/// Runs [`tick`] until shutdown.
pub(crate) async fn run(net: Arc<Net>, fleet: Arc<Fleet>) {
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

/// One round: who aggregates, publish, keep the overlay, forward.
pub(crate) fn tick(net: &Arc<Net>, fleet: &Fleet) {
    let peers = net.peer_list();
    let lan: Vec<&Arc<Peer>> = peers.iter().filter(|p| p.class == Class::Lan).collect();
    let mut members: Vec<[u8; 32]> = lan.iter().map(|p| p.node_key).collect();
    members.push(net.local.node_id.0);
    let site = site_key(&net.local.site);
    let aggs = aggregators(site, &members);
    let rank = aggs.iter().position(|a| *a == net.local.node_id.0);
    let mut st = lock(&net.aggregate.0);
    if st.rank.is_some() && rank.is_none() {
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
    let Some(rank) = rank else { return };
    let now_s = jiff::Timestamp::now().as_second();

    if rank == 0 {
        publish(net, fleet, &mut st, &aggs, now_s);
    }

    // The overlay: neighbours among other sites' aggregators.
    let mut candidates: Vec<(PeerId, KnownPeer, Candidate)> = Vec::new();
    for (s, c) in fleet.contacts() {
        let Some(peer) = super::peer_id_of(&c.node) else {
            continue;
        };
        if c.wan.ip().is_unspecified() || peer == net.local.peer_id {
            continue;
        }
        let known = KnownPeer {
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
        for p in lock(&net.bootstrap).iter() {
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

    // Forward: every summary each neighbour lacks (not its own site's), and to the site's
    // members the other sites' summaries.
    let mut held: Vec<(String, u64, Vec<u8>)> = fleet.summaries();
    let others = held.len();
    if let Some((seq, bytes)) = &st.own {
        held.push((net.local.site.clone(), *seq, bytes.clone()));
    }
    let st = &mut *st;
    for n in neighbours {
        send_needed(&mut st.flood, n, &held, |site| site != n.site);
    }
    if rank == 0 {
        for m in lan {
            send_needed(&mut st.flood, m, &held[..others], |_| true);
        }
    }
}

/// Sends `to` the summaries of `held` it lacks (those `wanted` says it may have), several to
/// a message.
fn send_needed(
    flood: &mut Flood<PeerId>,
    to: &Peer,
    held: &[(String, u64, Vec<u8>)],
    wanted: impl Fn(&str) -> bool,
) {
    let mut batch: Vec<Vec<u8>> = Vec::new();
    let mut bytes = 0;
    for (site, seq, signed) in held {
        let key = site_key(site);
        if !wanted(site) || !flood.needs(&to.id, key, *seq) {
            continue;
        }
        flood.knows(to.id, key, *seq);
        if !batch.is_empty()
            && (bytes + signed.len() > SUMMARIES_MESSAGE_BYTES
                || batch.len() == SUMMARIES_PER_MESSAGE_MAX)
        {
            to.send_control(Control::Summaries(std::mem::take(&mut batch)));
            bytes = 0;
        }
        bytes += signed.len();
        batch.push(signed.clone());
    }
    if !batch.is_empty() {
        to.send_control(Control::Summaries(batch));
    }
}

/// Publishes this site's summary when its cadence says so.
fn publish(net: &Net, fleet: &Fleet, st: &mut State, aggs: &[[u8; 32]], now_s: i64) {
    let (nodes, installers, releases) = fleet.own_figures();
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
    let progress: Vec<u64> = releases.iter().map(|r| r.chunks_have).collect();
    let key = SummaryKey {
        nodes,
        installers,
        contacts,
        releases: releases
            .iter()
            .cloned()
            .map(|mut r| {
                r.chunks_have = 0;
                r
            })
            .collect(),
    };
    let news = match &st.last {
        None => News::State,
        Some((k, _)) if *k != key => News::State,
        Some((_, p)) if *p != progress => News::Progress,
        Some(_) => News::None,
    };
    st.cadence.set_sites(fleet.sites());
    let now_ms = st.epoch.elapsed().as_millis() as u64;
    if !st.cadence.poll(now_ms, news) {
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
        contacts: key.contacts.clone(),
        releases,
    };
    let signed = SignedSummary::sign(&body, &net.signing).encode();
    tracing::debug!(seq, bytes = signed.len(), ?news, "site summary");
    st.own = Some((seq, signed));
    st.last = Some((key, progress));
}
