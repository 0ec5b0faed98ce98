//! The daemon's side of [`scheduler::rollout`]: it gathers what this node knows (its place
//! and labels, the releases it knows and those it installed, the fleet view's ring figures,
//! what it saw of each ring's gate) and asks the one pure decision. The installer asks it
//! before each install and `p2pctl status` shows its answer, so what the status says a
//! release waits for is what the installer waits for.
//!
//! Once this node's own ring of a release opens, it is noted in the store
//! ([`store::gates`]): a later failure elsewhere no longer stops it (a halt stops the rings
//! not yet started), across restarts too.

use crate::activate::{ActivationRecord, Outcome};
use net::Net;
use protocol::rollout::Place;
use protocol::{NodeId, ReleaseId};
use scheduler::rollout::{Known, RingStats, Verdict};
use std::collections::HashMap;
use store::Store;

/// How often the installer looks again while a release waits for another ring: a gate
/// that opens takes effect within this (plus the fleet view's own delay).
pub const RING_RECHECK: std::time::Duration = std::time::Duration::from_secs(2);

/// How often the installer reads the figures again while a release's rollout is halted: a
/// halt ends only by an operator's action, and the status's figures stay current.
pub const HALT_RECHECK: std::time::Duration = std::time::Duration::from_secs(30);

/// Where this node stands for selectors: its site, region and labels (the certificate's in
/// a fleet with a root, [`Net::labels`]).
pub struct Here {
    site: String,
    region: String,
    labels: Vec<(String, String)>,
}

impl Here {
    /// This node's.
    pub fn of(net: &Net) -> Self {
        Self {
            site: net.local.site.clone(),
            region: net.local.region.clone(),
            labels: net.labels(),
        }
    }

    /// As selectors read it.
    pub fn place(&self) -> Place<'_> {
        Place {
            site: &self.site,
            region: &self.region,
            labels: &self.labels,
        }
    }
}

/// What this node knows, gathered once for many releases.
pub struct View {
    node: NodeId,
    here: Here,
    /// (channel, version, targeted, installed) of each release known or installed.
    known: Vec<(String, u64, bool, bool)>,
}

impl View {
    /// Gathers it from the network's releases and the activation records.
    pub fn new(net: &Net, records: &HashMap<ReleaseId, ActivationRecord>) -> Self {
        let mut view = Self {
            node: net.local.node_id,
            here: Here::of(net),
            known: Vec::new(),
        };
        let installed = |id: &ReleaseId| {
            records
                .get(id)
                .is_some_and(|r| r.outcome == Outcome::Installed)
        };
        let mut seen = std::collections::HashSet::new();
        for r in net.releases() {
            seen.insert(r.id);
            let targeted = view.targeted(&r.rollout);
            view.known
                .push((r.channel.clone(), r.version, targeted, installed(&r.id)));
        }
        for (id, r) in records {
            if !seen.contains(id) && r.outcome == Outcome::Installed {
                view.known.push((r.channel.clone(), r.version, true, true));
            }
        }
        view
    }

    /// This node as selectors see it.
    pub fn place(&self) -> Place<'_> {
        self.here.place()
    }

    /// Whether `rollout`'s target takes this node.
    pub fn targeted(&self, rollout: &protocol::Rollout) -> bool {
        rollout.target.matches(&self.place())
    }

    /// This node's ring for `release`, if it has rings and targets this node.
    pub fn ring(&self, release: &net::Release) -> Option<usize> {
        if !self.targeted(&release.rollout) {
            return None;
        }
        scheduler::rollout::ring_of(
            &release.rollout,
            &release.channel,
            &self.node,
            &self.place(),
        )
    }

    /// Whether this node may install the complete `release` now (`held`: a hold covers it),
    /// keeping what it saw of the ring gates in `store`. Blocking (store IO).
    pub fn verdict(
        &self,
        net: &Net,
        store: &Store,
        release: &net::Release,
        held: bool,
        now_unix_s: i64,
    ) -> Verdict {
        let known: Vec<Known<'_>> = self
            .known
            .iter()
            .map(|(channel, version, targeted, installed)| Known {
                channel,
                version: *version,
                targeted: *targeted,
                installed: *installed,
            })
            .collect();
        let orders = net.orders();
        let ordered = orders.stop_for(
            &release.id,
            &release.channel,
            release.version,
            &self.place(),
        );
        let ring = self.ring(release);
        let mut stats: Vec<RingStats> = Vec::new();
        let mut started = false;
        if let Some(ring) = ring.filter(|&k| k > 0) {
            started = store.ring_started(&release.id).unwrap_or(false);
            if !started {
                let counts = net
                    .fleet
                    .get()
                    .map(|f| f.ring_counts(&release.id, now_unix_s))
                    .unwrap_or_default();
                stats = scheduler::rollout::stats_before(ring, &counts);
                let gate = &release.rollout.gate;
                let published = release.urgency.created_unix_s;
                if scheduler::rollout::opens(ring, gate, &stats, published, now_unix_s) {
                    started = true;
                    tracing::info!(release = %release.id, ring = %release.rollout.rings[ring].name,
                        "ring started: the rings before met the gate and soaked");
                    if let Err(e) = store.note_ring_started(&release.id, now_unix_s) {
                        tracing::warn!(error = %e, "cannot note that the ring started");
                    }
                }
            }
        }
        scheduler::rollout::verdict(&scheduler::rollout::Inputs {
            rollout: &release.rollout,
            targeted: self.targeted(&release.rollout),
            ordered: ordered.as_ref(),
            held,
            known: &known,
            ring,
            stats: &stats,
            started,
            published_unix_s: release.urgency.created_unix_s,
            now_unix_s,
        })
    }
}

/// The install holds in force on this node at `now_unix_s`: its own (`local`, from the
/// store) and the fleet-wide holds of the fleet orders that take it, shown the same way
/// (their reason marked as a fleet hold).
pub fn holds_in_force(
    net: &Net,
    local: Vec<store::holds::InstallHold>,
    now_unix_s: i64,
) -> Vec<store::holds::InstallHold> {
    let orders = net.orders();
    let here = Here::of(net);
    let place = here.place();
    let mut holds = local;
    holds.extend(
        orders
            .holds_for(&place, now_unix_s)
            .map(|h| store::holds::InstallHold {
                target: h.what.clone(),
                reason: format!("{FLEET_HOLD}: {}", h.reason),
                until_unix_s: h.until_unix_s,
                at_unix_s: h.at_unix_s,
            }),
    );
    holds
}

/// How the reason of a fleet-wide hold begins, as status and the fleet view show it.
pub const FLEET_HOLD: &str = "fleet hold";
