//! Whether a node may install a complete release now, as far as the release's rollout
//! rules ([`protocol::rollout`]) and the node's holds go: the one decision the daemon's
//! installer and the simulator both ask, each feeding it only what that node knows.
//!
//! The order of the questions is the order an operator reads the answer in:
//!
//! 1. **Target**: a node the release's selector leaves out never installs it
//!    ([`Verdict::NotTargeted`]); it still fetches and serves it for its site.
//! 2. **Orders**: an operator's fleet order ([`protocol::orders`]) that pauses or aborts the
//!    release, or rolled its channel back past its version, stops it
//!    ([`Verdict::Ordered`]).
//! 3. **Hold**: an exception on the node (`p2pctl hold`, or a fleet-wide hold that takes
//!    it) keeps it from installing until the hold ends ([`Verdict::Held`]).
//! 4. **Requirements**: each `channel>=version` the release names must be installed on this
//!    node first ([`Verdict::Requires`]). A requirement no release this node knows could
//!    meet *for this node* (every satisfying version known targets other nodes) is met:
//!    there is nothing to wait for.
//! 5. **Rings**: a node in ring k installs only once each earlier ring met the gate (at
//!    least the installed share, at most the failed share) and has soaked: no install or
//!    failure in it for the soak, counted from the ring's latest one ([`RingStats`]), so
//!    every node that sees the same figures computes the same instant, and a late install
//!    restarts the soak. A failed share over the limit in an earlier ring halts it
//!    ([`Verdict::Halted`]) unless its own ring had already started when this node last
//!    looked. There is no coordinator: every node evaluates the gate from the fleet status
//!    it sees.
//!
//! Nothing here reads a clock or a store: the caller passes the time, what this node has
//! installed, what it knows of the channel's other releases, the ring figures of its fleet
//! view and whether it saw its own ring start (which it keeps across restarts).

use protocol::NodeId;
use protocol::rollout::{Gate, Place, Requirement, RingMembers, Rollout};

/// How a halted node's reason begins ([`Verdict::reason`]): the fleet view and the alert
/// tell a halt from other waits by it.
pub const HALTED: &str = "rollout halted";

/// A release this node knows, as the requirement rule needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Known<'a> {
    /// Its channel.
    pub channel: &'a str,
    /// Its version.
    pub version: u64,
    /// Whether its target takes this node.
    pub targeted: bool,
    /// Whether this node installed it (successfully).
    pub installed: bool,
}

/// One ring's figures for a release, from the fleet view: nodes the ring takes that this
/// node has heard of, and of them those that installed and those that failed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RingStats {
    /// Nodes counted (targeted, in the ring, not silent, not held by an exception).
    pub nodes: u64,
    /// Of those, installed.
    pub installed: u64,
    /// Of those, failed.
    pub failed: u64,
    /// The latest install or failure among them, unix seconds: the soak counts from it.
    pub last_unix_s: i64,
}

/// How long after publishing a ring of which no node has reported is waited for, at the
/// least (the gate's soak if longer): its nodes report within seconds of learning the
/// release, so a ring still empty after this takes nobody (a 1 % ring of a small fleet) or
/// only nodes that are off, and the next ring goes on without it.
pub const EMPTY_RING_WAIT_S: i64 = 600;

impl RingStats {
    /// Whether the counts meet `gate` (the soak aside); an empty ring does not.
    pub fn meets(&self, gate: &Gate) -> bool {
        self.nodes > 0
            && self.installed * 1000 >= u64::from(gate.installed_min_permille) * self.nodes
            && !self.over_failure_limit(gate)
    }

    /// Whether more of its nodes failed than the gate allows.
    pub fn over_failure_limit(&self, gate: &Gate) -> bool {
        self.failed * 1000 > u64::from(gate.failed_max_permille) * self.nodes
    }
}

/// Each ring's figures summed over the sites' (`RingCount`s from site summaries or a site's
/// records), the latest change of any: the fleet as one node sees it.
pub fn sum_ring_counts<'a>(
    sites: impl IntoIterator<Item = &'a [protocol::summary::RingCount]>,
) -> Vec<protocol::summary::RingCount> {
    let mut out: Vec<protocol::summary::RingCount> = Vec::new();
    for rings in sites {
        for (k, c) in rings.iter().enumerate() {
            if out.len() <= k {
                out.resize(k + 1, protocol::summary::RingCount::default());
            }
            out[k].nodes += c.nodes;
            out[k].installed += c.installed;
            out[k].failed += c.failed;
            out[k].last_unix_s = out[k].last_unix_s.max(c.last_unix_s);
        }
    }
    out
}

/// The figures of the rings before `ring` (what [`ring_gate`] reads) from the fleet's
/// counts.
pub fn stats_before(ring: usize, counts: &[protocol::summary::RingCount]) -> Vec<RingStats> {
    (0..ring)
        .map(|k| {
            let c = counts.get(k).copied().unwrap_or_default();
            RingStats {
                nodes: u64::from(c.nodes),
                installed: u64::from(c.installed),
                failed: u64::from(c.failed),
                last_unix_s: c.last_unix_s,
            }
        })
        .collect()
}

/// Whether a node's ring `ring` opens now (every ring before it met the gate and soaked,
/// none failed over the limit): from then on it counts as started, and a later halt no
/// longer stops it.
pub fn opens(
    ring: usize,
    gate: &Gate,
    stats: &[RingStats],
    published_unix_s: i64,
    now_unix_s: i64,
) -> bool {
    ring_gate(ring, gate, stats, false, published_unix_s, now_unix_s) == Verdict::Go
}

/// The answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Install it (inside the install windows, which the caller checks).
    Go,
    /// The target leaves this node out.
    NotTargeted,
    /// An operator's fleet order stops it.
    Ordered(protocol::orders::Stop),
    /// A hold on the node.
    Held,
    /// This requirement is not installed yet.
    Requires(Requirement),
    /// Ring `ring` waits for ring `on` (by index) to reach the installed share.
    RingWaits {
        /// This node's ring.
        ring: usize,
        /// The earlier ring it waits for.
        on: usize,
        /// That ring's figures.
        stats: RingStats,
    },
    /// Ring `ring` waits for ring `on`'s soak, until `until_unix_s`.
    Soaking {
        /// This node's ring.
        ring: usize,
        /// The earlier ring soaking.
        on: usize,
        /// When the soak ends.
        until_unix_s: i64,
    },
    /// Ring `on` failed over the gate's limit: the rollout is halted for this node's ring.
    Halted {
        /// This node's ring.
        ring: usize,
        /// The ring that failed.
        on: usize,
        /// Its figures.
        stats: RingStats,
    },
}

impl Verdict {
    /// Why the node waits, in words (with ring names from `rollout`), for status and the
    /// fleet view; `None` for [`Verdict::Go`].
    pub fn reason(&self, rollout: &Rollout) -> Option<String> {
        let name = |i: usize| rollout.rings.get(i).map_or("?", |r| r.name.as_str());
        Some(match self {
            Self::Go => return None,
            Self::NotTargeted => format!("not targeted ({})", rollout.target),
            Self::Ordered(stop) => stop.to_string(),
            Self::Held => "held".into(),
            Self::Requires(r) => format!("waits for {r}"),
            Self::RingWaits { ring, on, stats } if stats.nodes == 0 => format!(
                "ring {} waits for ring {}: no node of it has reported yet",
                name(*ring),
                name(*on)
            ),
            Self::RingWaits { ring, on, stats } => format!(
                "ring {} waits for ring {}: {}/{} installed, {} needed",
                name(*ring),
                name(*on),
                stats.installed,
                stats.nodes,
                needed(stats.nodes, rollout.gate.installed_min_permille)
            ),
            Self::Soaking {
                ring,
                on,
                until_unix_s,
            } => format!(
                "ring {} waits for ring {} to soak until unix {until_unix_s}",
                name(*ring),
                name(*on)
            ),
            Self::Halted { ring, on, stats } => format!(
                "{HALTED} for ring {}: ring {} has {}/{} failed, over the gate's {}",
                name(*ring),
                name(*on),
                stats.failed,
                stats.nodes,
                protocol::rollout::permille_text(rollout.gate.failed_max_permille)
            ),
        })
    }
}

fn needed(nodes: u64, permille: u16) -> u64 {
    (nodes * u64::from(permille)).div_ceil(1000)
}

/// What a node's status record says of its ring ([`protocol::status::ReleaseStatus::ring`]):
/// its ring plus one when that ring gates a later one, else 0 (no ring, or the last, which
/// gates nothing and is never counted).
pub fn reported_ring(ring: Option<usize>, rings: usize) -> u8 {
    ring.filter(|&k| k + 1 < rings)
        .and_then(|k| u8::try_from(k + 1).ok())
        .unwrap_or(0)
}

/// Whether ring `ring` of `rings` gates a later one.
pub fn gates_later(ring: usize, rings: usize) -> bool {
    reported_ring(Some(ring), rings) > 0
}

/// Where in the hash space `node` falls for `channel`'s share rings: 0 to 999. The same for
/// every version of a channel, independent across channels.
pub fn share_slot(channel: &str, node: &NodeId) -> u16 {
    let mut h = blake3::Hasher::new();
    h.update(b"p2pd ring slot\0");
    h.update(channel.as_bytes());
    h.update(&[0]);
    h.update(&node.0);
    let b = h.finalize();
    let x = u64::from_le_bytes(b.as_bytes()[..8].try_into().expect("8 bytes"));
    (x % 1000) as u16
}

/// The ring (index into `rollout.rings`) that takes the node, or `None` without rings. See
/// [`protocol::rollout`]: the first ring that takes it.
pub fn ring_of(
    rollout: &Rollout,
    channel: &str,
    node: &NodeId,
    place: &Place<'_>,
) -> Option<usize> {
    if rollout.rings.is_empty() {
        return None;
    }
    let slot = share_slot(channel, node);
    let mut below = 0u16;
    for (i, ring) in rollout.rings.iter().enumerate() {
        match &ring.members {
            RingMembers::Labels(s) if s.matches(place) => return Some(i),
            RingMembers::Labels(_) => {}
            RingMembers::Share { permille } => {
                below = below.saturating_add(*permille);
                if slot < below {
                    return Some(i);
                }
            }
            RingMembers::Rest => return Some(i),
        }
    }
    Some(rollout.rings.len() - 1)
}

/// The first requirement of `requires` not met on this node, given the releases it knows.
pub fn unmet<'r>(requires: &'r [Requirement], known: &[Known<'_>]) -> Option<&'r Requirement> {
    requires.iter().find(|r| {
        let satisfying = known
            .iter()
            .filter(|k| r.satisfied_by(k.channel, k.version));
        let mut any = false;
        for k in satisfying {
            if k.installed {
                return false;
            }
            any |= k.targeted;
        }
        // Unmet while some satisfying version is for this node, or none is known yet.
        any || !known.iter().any(|k| r.satisfied_by(k.channel, k.version))
    })
}

/// Where this node's ring stands: `stats` is indexed by ring, `started` says whether this
/// node already saw its own ring start (then nothing stops it any more), and
/// `published_unix_s` when the release was published (an empty ring is waited for until
/// [`EMPTY_RING_WAIT_S`] or the soak after it, whichever is longer).
pub fn ring_gate(
    ring: usize,
    gate: &Gate,
    stats: &[RingStats],
    started: bool,
    published_unix_s: i64,
    now_unix_s: i64,
) -> Verdict {
    if ring == 0 || started {
        return Verdict::Go;
    }
    let stat = |j: usize| stats.get(j).copied().unwrap_or_default();
    if let Some(on) = (0..ring).find(|&j| stat(j).over_failure_limit(gate)) {
        return Verdict::Halted {
            ring,
            on,
            stats: stat(on),
        };
    }
    for on in 0..ring {
        let s = stat(on);
        if s.nodes == 0 {
            let wait = EMPTY_RING_WAIT_S.max(i64::from(gate.soak_s));
            if now_unix_s < published_unix_s.saturating_add(wait) {
                return Verdict::RingWaits { ring, on, stats: s };
            }
            continue;
        }
        if !s.meets(gate) {
            return Verdict::RingWaits { ring, on, stats: s };
        }
        let until = s.last_unix_s.saturating_add(i64::from(gate.soak_s));
        if now_unix_s < until {
            return Verdict::Soaking {
                ring,
                on,
                until_unix_s: until,
            };
        }
    }
    Verdict::Go
}

/// Everything [`verdict`] weighs for one complete release on one node.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    /// The release's rules.
    pub rollout: &'a Rollout,
    /// Whether its target takes this node.
    pub targeted: bool,
    /// What the fleet orders say of it on this node ([`protocol::orders::Orders::stop_for`]).
    pub ordered: Option<&'a protocol::orders::Stop>,
    /// Whether a hold covers it.
    pub held: bool,
    /// The releases this node knows (for requirements).
    pub known: &'a [Known<'a>],
    /// This node's ring, if the release has rings.
    pub ring: Option<usize>,
    /// Each ring's figures in this node's fleet view.
    pub stats: &'a [RingStats],
    /// Whether this node already saw its own ring start.
    pub started: bool,
    /// When the release was published, unix seconds.
    pub published_unix_s: i64,
    /// Now, unix seconds.
    pub now_unix_s: i64,
}

/// Whether the node may install the release now, and if not, why ([module docs](self)).
pub fn verdict(i: &Inputs<'_>) -> Verdict {
    if !i.targeted {
        return Verdict::NotTargeted;
    }
    if let Some(stop) = i.ordered {
        return Verdict::Ordered(stop.clone());
    }
    if i.held {
        return Verdict::Held;
    }
    if let Some(r) = unmet(&i.rollout.requires, i.known) {
        return Verdict::Requires(r.clone());
    }
    match i.ring {
        None => Verdict::Go,
        Some(ring) => ring_gate(
            ring,
            &i.rollout.gate,
            i.stats,
            i.started,
            i.published_unix_s,
            i.now_unix_s,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::rollout::{Ring, Selector};

    fn node(i: u8) -> NodeId {
        NodeId([i; 32])
    }

    #[test]
    fn share_rings_take_their_share_and_labels_rings_their_nodes() {
        let rollout = Rollout {
            rings: Ring::parse_list("canary: labels ring=0; pilot: 10%; broad: rest").unwrap(),
            ..Rollout::default()
        };
        let canary = vec![("ring".to_string(), "0".to_string())];
        let plain: Vec<(String, String)> = Vec::new();
        let at = |labels| Place {
            site: "s",
            region: "r",
            labels,
        };
        let mut counts = [0usize; 3];
        for i in 0..2000u32 {
            let mut id = [0u8; 32];
            id[..4].copy_from_slice(&i.to_le_bytes());
            let n = NodeId(id);
            assert_eq!(ring_of(&rollout, "c", &n, &at(&canary)), Some(0));
            counts[ring_of(&rollout, "c", &n, &at(&plain)).unwrap()] += 1;
        }
        assert_eq!(counts[0], 0);
        assert!((150..250).contains(&counts[1]), "10 % of 2000: {counts:?}");
        assert_eq!(counts[1] + counts[2], 2000);
        // The same node, another channel: an independent slot.
        let differs =
            (0..64u8).any(|i| share_slot("a", &node(i)) / 100 != share_slot("b", &node(i)) / 100);
        assert!(differs);
        assert_eq!(
            ring_of(&Rollout::default(), "c", &node(1), &at(&plain)),
            None
        );
    }

    #[test]
    fn a_record_reports_only_rings_that_gate_a_later_one() {
        assert_eq!(reported_ring(None, 3), 0);
        assert_eq!(reported_ring(Some(0), 3), 1);
        assert_eq!(reported_ring(Some(1), 3), 2);
        assert_eq!(reported_ring(Some(2), 3), 0, "the last ring gates nothing");
        assert!(gates_later(0, 2) && !gates_later(1, 2));
    }

    fn known<'a>(channel: &'a str, version: u64, targeted: bool, installed: bool) -> Known<'a> {
        Known {
            channel,
            version,
            targeted,
            installed,
        }
    }

    #[test]
    fn a_requirement_is_met_by_an_installed_version_at_least_as_high() {
        let req = Requirement::parse_list("a>=2").unwrap();
        assert_eq!(unmet(&req, &[]), Some(&req[0]), "nothing known yet: wait");
        assert_eq!(unmet(&req, &[known("a", 1, true, true)]), Some(&req[0]));
        assert_eq!(unmet(&req, &[known("a", 2, true, false)]), Some(&req[0]));
        assert_eq!(unmet(&req, &[known("a", 3, true, true)]), None);
        assert_eq!(
            unmet(&req, &[known("a", 2, false, false)]),
            None,
            "no version of a is for this node: nothing to wait for"
        );
        assert_eq!(
            unmet(
                &req,
                &[known("a", 2, false, false), known("a", 3, true, false)]
            ),
            Some(&req[0])
        );
    }

    #[test]
    fn the_gate_waits_soaks_halts_and_opens() {
        let gate = Gate::parse("installed>=75%,failed<=25%,soak=1h").unwrap();
        let s = |nodes, installed, failed, last_unix_s| RingStats {
            nodes,
            installed,
            failed,
            last_unix_s,
        };
        // Ring 0 always goes.
        assert_eq!(ring_gate(0, &gate, &[], false, 0, 0), Verdict::Go);
        // Ring 1: ring 0 at 2 of 4 installed waits.
        assert!(matches!(
            ring_gate(1, &gate, &[s(4, 2, 0, 100)], false, 0, 0),
            Verdict::RingWaits { on: 0, .. }
        ));
        // 3 of 4: met; it soaks for an hour from its latest install.
        assert_eq!(
            ring_gate(1, &gate, &[s(4, 3, 0, 100)], false, 0, 200),
            Verdict::Soaking {
                ring: 1,
                on: 0,
                until_unix_s: 3700
            }
        );
        assert_eq!(
            ring_gate(1, &gate, &[s(4, 3, 0, 100)], false, 0, 3700),
            Verdict::Go
        );
        // A later install restarts the soak.
        assert!(matches!(
            ring_gate(1, &gate, &[s(4, 4, 0, 3000)], false, 0, 3700),
            Verdict::Soaking {
                until_unix_s: 6600,
                ..
            }
        ));
        // 2 of 4 failed: over 25 %, halted for rings 1 and 2.
        for ring in [1, 2] {
            assert!(matches!(
                ring_gate(
                    ring,
                    &gate,
                    &[s(4, 2, 2, 0), s(10, 10, 0, 0)],
                    false,
                    0,
                    1 << 20
                ),
                Verdict::Halted { on: 0, .. }
            ));
        }
        // A ring that had started goes on whatever happens after.
        assert_eq!(
            ring_gate(1, &gate, &[s(4, 2, 2, 0)], true, 0, 1 << 20),
            Verdict::Go
        );
        // Ring 2 also waits for ring 1; a ring of which no node reported is waited for
        // 10 minutes after publishing (or the soak if longer), then passed over.
        assert!(matches!(
            ring_gate(
                2,
                &gate,
                &[s(4, 4, 0, 0), s(10, 1, 0, 0)],
                false,
                0,
                1 << 20
            ),
            Verdict::RingWaits { on: 1, .. }
        ));
        assert_eq!(
            ring_gate(2, &gate, &[s(4, 4, 0, 0), s(0, 0, 0, 0)], false, 0, 1 << 20),
            Verdict::Go
        );
        let empty = ring_gate(1, &gate, &[s(0, 0, 0, 0)], false, 1000, 1000 + 599);
        assert!(
            matches!(empty, Verdict::RingWaits { on: 0, .. }),
            "{empty:?}"
        );
        let rollout = Rollout {
            rings: protocol::rollout::Ring::parse_list("c: 1%; r: rest").unwrap(),
            ..Rollout::default()
        };
        assert_eq!(
            empty.reason(&rollout).unwrap(),
            "ring r waits for ring c: no node of it has reported yet"
        );
        assert_eq!(
            ring_gate(1, &gate, &[s(0, 0, 0, 0)], false, 1000, 1000 + 3600),
            Verdict::Go,
            "the soak (an hour) is longer than 10 minutes"
        );
    }

    #[test]
    fn the_verdict_asks_target_hold_requirements_then_rings() {
        let rollout = Rollout {
            target: Selector::parse("os=debian12", "target").unwrap(),
            requires: Requirement::parse_list("a>=1").unwrap(),
            rings: Ring::parse_list("c: 50%; r: rest").unwrap(),
            gate: Gate::default(),
        };
        let installed_a = [known("a", 1, true, true)];
        let base = Inputs {
            rollout: &rollout,
            targeted: true,
            ordered: None,
            held: false,
            known: &installed_a,
            ring: Some(1),
            stats: &[RingStats {
                nodes: 2,
                installed: 2,
                failed: 0,
                last_unix_s: 0,
            }],
            started: false,
            published_unix_s: 0,
            now_unix_s: 7200,
        };
        assert_eq!(verdict(&base), Verdict::Go);
        let not = Inputs {
            targeted: false,
            held: true,
            ..base
        };
        assert_eq!(verdict(&not), Verdict::NotTargeted);
        assert_eq!(
            verdict(&not).reason(&rollout).unwrap(),
            "not targeted (os=debian12)"
        );
        assert_eq!(verdict(&Inputs { held: true, ..base }), Verdict::Held);
        // An order comes before a hold, and says what stopped it.
        let paused = protocol::orders::Stop::Paused {
            reason: "INC-4".into(),
            at_unix_s: 60,
        };
        let ordered = verdict(&Inputs {
            ordered: Some(&paused),
            held: true,
            ..base
        });
        assert_eq!(ordered, Verdict::Ordered(paused.clone()));
        assert_eq!(
            ordered.reason(&rollout).unwrap(),
            "paused by an operator at unix 60: INC-4"
        );
        let waits = verdict(&Inputs { known: &[], ..base });
        assert_eq!(waits.reason(&rollout).unwrap(), "waits for a>=1");
        let soaking = verdict(&Inputs {
            now_unix_s: 10,
            ..base
        });
        assert_eq!(
            soaking.reason(&rollout).unwrap(),
            "ring r waits for ring c to soak until unix 7200"
        );
        let halted = verdict(&Inputs {
            stats: &[RingStats {
                nodes: 2,
                installed: 1,
                failed: 1,
                last_unix_s: 0,
            }],
            ..base
        });
        assert_eq!(
            halted.reason(&rollout).unwrap(),
            "rollout halted for ring r: ring c has 1/2 failed, over the gate's 1%"
        );
    }
}
