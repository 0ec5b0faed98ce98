//! Staged rollouts at fleet scale (`testnet rollout SCENARIO`): one release with rings over
//! hundreds of sites of tens of endpoints, and whether a ring's failures stop the rings
//! after it before any of their nodes installs.
//!
//! What is the product's code here, and what is modelled:
//!
//! * **Which ring a node is in** is [`scheduler::rollout::ring_of`] over the node's id and
//!   the release's rings as `p2pctl publish --rings` parses them.
//! * **Whether a node may install** is [`scheduler::rollout::verdict`] over the ring
//!   figures its site holds ([`scheduler::rollout::sum_ring_counts`],
//!   [`scheduler::rollout::stats_before`]); a ring that opens is started
//!   ([`scheduler::rollout::opens`]), as the daemon notes it.
//! * **Status records**: each node's [`Publisher::status`] decides when its record goes out
//!   ([`Publisher::status_news`]: an install or failure in a gating ring is gate news); the
//!   record carries the node's gating ring as the daemon's does.
//! * **Site summaries**: the aggregator folds its site's records with
//!   [`protocol::summary::site_releases`] (the per-ring counts included) and its
//!   [`Publisher::summary`] decides when a summary goes out ([`Publisher::summary_news`]).
//!
//! Modelled: when a node holds the whole release (learning it and fetching it take a
//! random time), how long an install takes and which fail, how long a summary takes to
//! reach every other site over the overlay (`flood_s`), and a member's reads of its
//! aggregator's ledger (every `RING_PULL_INTERVAL` while it waits: it acts up to that much
//! after its site's figures change). Every node of a site sees what the site's aggregator
//! holds, so a site's verdict per ring is computed once per change and applies to its
//! waiting nodes of that ring.

use protocol::rollout::{Gate, Ring, Rollout};
use protocol::status::{ReleaseState, ReleaseStatus, StatusBody};
use protocol::summary::{RingCount, SiteRelease, site_releases};
use protocol::{NodeId, ReleaseId, Severity};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use scheduler::control::{News, SUMMARY_FORWARD_DELAY};
use scheduler::ledger::{Publisher, SummaryContent};
use scheduler::rollout::{Verdict, ring_of, stats_before, sum_ring_counts};
use serde::{Deserialize, Serialize};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::path::Path;

/// A staged-rollout scenario.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutScenario {
    /// Name, for reports.
    pub name: String,
    /// First seed; `seeds` runs use `seed`, `seed + 1`, ….
    #[serde(default)]
    pub seed: u64,
    /// Runs.
    #[serde(default = "one")]
    pub seeds: u64,
    /// Sites.
    pub sites: usize,
    /// Endpoints per site (every one installs).
    pub nodes_per_site: usize,
    /// Rings, as `p2pctl publish --rings` takes them.
    pub rings: String,
    /// The gate, as `--gate` takes it.
    pub gate: String,
    /// Seconds from publishing until a node holds the whole release: uniform in this range.
    #[serde(default = "default_fetch")]
    pub fetch_s: (f64, f64),
    /// Seconds an install takes: uniform in this range.
    #[serde(default = "default_install")]
    pub install_s: (f64, f64),
    /// The ring (by name) whose installs fail, and the share of its nodes that fail.
    #[serde(default)]
    pub failing_ring: Option<String>,
    /// See `failing_ring`.
    #[serde(default)]
    pub fail_share: f64,
    /// Seconds a summary takes to reach every other site over the overlay of aggregators.
    #[serde(default = "default_flood")]
    pub flood_s: f64,
    /// Simulated time, seconds.
    #[serde(default = "default_horizon")]
    pub horizon_s: f64,
}

fn one() -> u64 {
    1
}
fn default_fetch() -> (f64, f64) {
    (30.0, 900.0)
}
fn default_install() -> (f64, f64) {
    (20.0, 120.0)
}
fn default_flood() -> f64 {
    // A handful of overlay hops, each a forward delay and a WAN round trip.
    6.0 * (SUMMARY_FORWARD_DELAY.as_secs_f64() + 0.1)
}
fn default_horizon() -> f64 {
    12.0 * 3600.0
}

impl RolloutScenario {
    /// Reads a scenario file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)?;
        let sc: Self = toml::from_str(&text)?;
        sc.rollout()?;
        anyhow::ensure!(
            sc.sites > 0 && sc.nodes_per_site > 0,
            "sites and nodes per site"
        );
        Ok(sc)
    }

    fn rollout(&self) -> anyhow::Result<Rollout> {
        let rollout = Rollout {
            rings: Ring::parse_list(&self.rings)?,
            gate: Gate::parse(&self.gate)?,
            ..Rollout::default()
        };
        rollout.validate()?;
        anyhow::ensure!(!rollout.rings.is_empty(), "a rollout scenario needs rings");
        Ok(rollout)
    }
}

/// One run's figures.
#[derive(Debug, Clone, Serialize)]
pub struct RolloutRun {
    /// Its seed.
    pub seed: u64,
    /// Nodes per ring.
    pub ring_nodes: Vec<u64>,
    /// Per ring: nodes that installed.
    pub installed: Vec<u64>,
    /// Per ring: nodes that failed.
    pub failed: Vec<u64>,
    /// Per ring: when its first install started, seconds after publishing.
    pub first_install_s: Vec<Option<f64>>,
    /// Per ring: when its last node installed, seconds after publishing (all of them did).
    pub all_installed_s: Vec<Option<f64>>,
    /// When the first failure over a gate's limit happened in a ring (seconds after
    /// publishing, the ring), if any.
    pub over_limit: Option<(f64, usize)>,
    /// Whether a node of a ring after one over the failure limit started installing after
    /// the failures that put it over (what must never happen).
    pub installed_past_halt: bool,
    /// Summaries sent, all sites.
    pub summaries: u64,
    /// Of those, sent for gate news.
    pub gate_summaries: u64,
}

/// Every run's figures.
#[derive(Debug, Clone, Serialize)]
pub struct RolloutReport {
    /// The scenario's name.
    pub name: String,
    /// Sites × nodes.
    pub nodes: u64,
    /// The runs.
    pub runs: Vec<RolloutRun>,
}

impl RolloutReport {
    /// Whether every run kept every halt.
    pub fn halts_held(&self) -> bool {
        self.runs.iter().all(|r| !r.installed_past_halt)
    }

    /// One line per run: each ring's nodes, installs, failures and timings.
    pub fn table(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{}: {} nodes; per ring: installed/failed of nodes, first install .. all installed (min after publishing)",
            self.name, self.nodes
        );
        let min = |t: Option<f64>| t.map_or("-".to_string(), |t| format!("{:.1}", t / 60.0));
        for r in &self.runs {
            let rings: Vec<String> = (0..r.ring_nodes.len())
                .map(|k| {
                    format!(
                        "{}/{} of {} {}..{}",
                        r.installed[k],
                        r.failed[k],
                        r.ring_nodes[k],
                        min(r.first_install_s[k]),
                        min(r.all_installed_s[k])
                    )
                })
                .collect();
            let halt = match r.over_limit {
                Some((t, ring)) => format!(
                    "ring {ring} over the failure limit at {:.1} min: {}",
                    t / 60.0,
                    if r.installed_past_halt {
                        "NOT HALTED"
                    } else {
                        "halted"
                    }
                ),
                None => "no ring over the failure limit".into(),
            };
            let _ = writeln!(
                out,
                "seed {:>3}  {}  | {halt} | summaries {} ({} gate news)",
                r.seed,
                rings.join("  "),
                r.summaries,
                r.gate_summaries
            );
        }
        let _ = writeln!(
            out,
            "halts held in {} of {} runs",
            self.runs.iter().filter(|r| !r.installed_past_halt).count(),
            self.runs.len()
        );
        out
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    /// The node holds the whole release.
    Complete(usize),
    /// The node's install ends.
    Installed(usize),
    /// The node's record may go out.
    Record(usize),
    /// The site's aggregator looks at its summary.
    Summary(usize),
    /// A summary of site `from` (its index into `sent`) reaches site `to`.
    Arrive { from: usize, sent: usize, to: usize },
    /// The site's members look at their verdicts again.
    Look(usize),
}

struct Node {
    site: usize,
    ring: usize,
    state: ReleaseState,
    since_s: i64,
    fails: bool,
    publisher: Publisher<ReleaseId, (ReleaseState, u32)>,
    last: Option<Vec<ReleaseStatus>>,
    waiting: bool,
}

struct Site {
    /// The latest record of each member sent.
    records: HashMap<usize, StatusBody>,
    publisher: Publisher<ReleaseId, SiteRelease>,
    last: Option<SummaryContent>,
    /// What the site holds of each site's ring figures (its own from its records).
    view: HashMap<usize, Vec<RingCount>>,
    look_at: Option<u64>,
}

const RELEASE: ReleaseId = ReleaseId([7; 32]);
const START_S: i64 = 1_800_000_000;

/// Runs every seed of `sc`.
pub fn run(sc: &RolloutScenario) -> anyhow::Result<RolloutReport> {
    let rollout = sc.rollout()?;
    let runs = (0..sc.seeds)
        .map(|k| run_one(sc, &rollout, sc.seed + k))
        .collect();
    Ok(RolloutReport {
        name: sc.name.clone(),
        nodes: (sc.sites * sc.nodes_per_site) as u64,
        runs,
    })
}

fn run_one(sc: &RolloutScenario, rollout: &Rollout, seed: u64) -> RolloutRun {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let rings = rollout.rings.len();
    let channel = "security/staged";
    let gating = |ring: usize| scheduler::rollout::gates_later(ring, rings);
    let failing = sc
        .failing_ring
        .as_deref()
        .and_then(|name| rollout.rings.iter().position(|r| r.name == name));
    let mut nodes: Vec<Node> = Vec::new();
    let mut queue: BinaryHeap<Reverse<(u64, u64, Ev)>> = BinaryHeap::new();
    let mut seq = 0u64;
    let mut push = |queue: &mut BinaryHeap<Reverse<(u64, u64, Ev)>>, at: u64, ev: Ev| {
        seq += 1;
        queue.push(Reverse((at, seq, ev)));
    };
    let ids: Vec<NodeId> = (0..sc.sites * sc.nodes_per_site)
        .map(|_| NodeId(rng.random()))
        .collect();
    for (i, id) in ids.iter().enumerate() {
        let site = i / sc.nodes_per_site;
        let place = protocol::rollout::Place {
            site: "s",
            region: "r",
            labels: &[],
        };
        let ring = ring_of(rollout, channel, id, &place).expect("rings");
        let fetch = rng.random_range(sc.fetch_s.0..=sc.fetch_s.1);
        let fails = Some(ring) == failing && rng.random_bool(sc.fail_share.clamp(0.0, 1.0));
        nodes.push(Node {
            site,
            ring,
            state: ReleaseState::Downloading,
            since_s: START_S,
            fails,
            publisher: Publisher::status(),
            last: None,
            waiting: false,
        });
        push(&mut queue, (fetch * 1000.0) as u64, Ev::Complete(i));
    }
    let mut sites: Vec<Site> = (0..sc.sites)
        .map(|_| Site {
            records: HashMap::new(),
            publisher: Publisher::summary(sc.sites),
            last: None,
            view: HashMap::new(),
            look_at: None,
        })
        .collect();
    let mut sent: Vec<Vec<RingCount>> = Vec::new();
    let mut out = RolloutRun {
        seed,
        ring_nodes: vec![0; rings],
        installed: vec![0; rings],
        failed: vec![0; rings],
        first_install_s: vec![None; rings],
        all_installed_s: vec![None; rings],
        over_limit: None,
        installed_past_halt: false,
        summaries: 0,
        gate_summaries: 0,
    };
    for n in &nodes {
        out.ring_nodes[n.ring] += 1;
    }
    let pull_ms = net::aggregate::RING_PULL_INTERVAL.as_millis() as u64;
    let flood_ms = (sc.flood_s * 1000.0) as u64;
    let horizon_ms = (sc.horizon_s * 1000.0) as u64;
    let unix = |ms: u64| START_S + (ms / 1000) as i64;
    // The verdict for a node of `ring` at `site` at `now_ms`.
    let verdict = |site: &Site, ring: usize, now_ms: u64| -> Verdict {
        let counts = sum_ring_counts(site.view.values().map(Vec::as_slice));
        scheduler::rollout::verdict(&scheduler::rollout::Inputs {
            rollout,
            targeted: true,
            ordered: None,
            held: false,
            known: &[],
            ring: Some(ring),
            stats: &stats_before(ring, &counts),
            started: false,
            published_unix_s: START_S,
            now_unix_s: unix(now_ms),
        })
    };
    let status_of = |n: &Node| ReleaseStatus {
        release: RELEASE,
        channel: channel.into(),
        version: 1,
        published_unix_s: START_S,
        severity: Severity::High,
        state: n.state,
        chunks_have: if n.state == ReleaseState::Downloading {
            0
        } else {
            1
        },
        chunks_total: 1,
        since_unix_s: n.since_s,
        until_unix_s: None,
        error: (n.state == ReleaseState::Failed).then(|| "apply exited 4".into()),
        ring: scheduler::rollout::reported_ring(Some(n.ring), rings),
    };
    let mut done = 0usize;
    while let Some(Reverse((now, _, ev))) = queue.pop() {
        if now > horizon_ms {
            break;
        }
        match ev {
            Ev::Complete(i) => {
                nodes[i].state = ReleaseState::Complete;
                nodes[i].since_s = unix(now);
                push(&mut queue, now, Ev::Record(i));
                let n = &nodes[i];
                let v = verdict(&sites[n.site], n.ring, now);
                if v == Verdict::Go {
                    start_install(
                        &mut nodes, i, &mut out, &mut rng, sc, now, &mut queue, &mut push,
                    );
                } else {
                    nodes[i].waiting = true;
                    nodes[i].state = ReleaseState::Waiting;
                    if let Verdict::Soaking { until_unix_s, .. } = v {
                        let at = ((until_unix_s - START_S).max(0) as u64) * 1000;
                        let site = nodes[i].site;
                        look(&mut sites[site], site, at, &mut queue, &mut push);
                    }
                }
            }
            Ev::Installed(i) => {
                let n = &mut nodes[i];
                n.state = if n.fails {
                    ReleaseState::Failed
                } else {
                    ReleaseState::Activated
                };
                n.since_s = unix(now);
                let ring = n.ring;
                if n.fails {
                    out.failed[ring] += 1;
                    let limit = u64::from(rollout.gate.failed_max_permille) * out.ring_nodes[ring];
                    if out.over_limit.is_none() && gating(ring) && out.failed[ring] * 1000 > limit {
                        out.over_limit = Some((now as f64 / 1000.0, ring));
                    }
                } else {
                    out.installed[ring] += 1;
                    if out.installed[ring] == out.ring_nodes[ring] {
                        out.all_installed_s[ring] = Some(now as f64 / 1000.0);
                    }
                }
                done += 1;
                push(&mut queue, now, Ev::Record(i));
            }
            Ev::Record(i) => {
                let status = vec![status_of(&nodes[i])];
                let n = &mut nodes[i];
                let news = n.publisher.status_news(n.last.as_deref(), &status);
                if !n.publisher.poll(now, news) {
                    let due = n.publisher.due_at(news).max(now + 1);
                    push(&mut queue, due, Ev::Record(i));
                    continue;
                }
                n.last = Some(status.clone());
                let site = n.site;
                sites[site].records.insert(
                    i,
                    StatusBody {
                        node: ids[i],
                        site: format!("s{site}"),
                        installs: true,
                        seq: now,
                        at_unix_s: unix(now),
                        releases: status,
                    },
                );
                push(&mut queue, now, Ev::Summary(site));
            }
            Ev::Summary(s) => {
                let site = &mut sites[s];
                let (figures, members) = {
                    let bodies: Vec<&StatusBody> = site.records.values().collect();
                    (site_releases(&bodies, None), bodies.len() as u32)
                };
                // The aggregator's own figures are current for its members.
                let own = figures.first().map(|f| f.rings.clone()).unwrap_or_default();
                if site.view.get(&s) != Some(&own) {
                    site.view.insert(s, own.clone());
                    look(site, s, now + pull_ms, &mut queue, &mut push);
                }
                let content = SummaryContent::new(members, members, Vec::new(), &figures);
                let news = site.publisher.summary_news(&content, site.last.as_ref());
                if !site.publisher.poll(now, news) {
                    if news != News::None {
                        let due = site.publisher.due_at(news).max(now + 1);
                        push(&mut queue, due, Ev::Summary(s));
                    }
                    continue;
                }
                site.last = Some(content);
                out.summaries += 1;
                if news == News::Gate {
                    out.gate_summaries += 1;
                }
                sent.push(own);
                let k = sent.len() - 1;
                for to in (0..sc.sites).filter(|&t| t != s) {
                    push(
                        &mut queue,
                        now + flood_ms,
                        Ev::Arrive {
                            from: s,
                            sent: k,
                            to,
                        },
                    );
                }
            }
            Ev::Arrive { from, sent: k, to } => {
                let site = &mut sites[to];
                if site.view.get(&from) != Some(&sent[k]) {
                    site.view.insert(from, sent[k].clone());
                    // Members read it at their next pull.
                    look(site, to, now + pull_ms, &mut queue, &mut push);
                }
            }
            Ev::Look(s) => {
                if sites[s].look_at != Some(now) {
                    continue;
                }
                sites[s].look_at = None;
                let mut soak_until: Option<u64> = None;
                for ring in 1..rings {
                    let v = verdict(&sites[s], ring, now);
                    match v {
                        Verdict::Go => {
                            let waiting: Vec<usize> = (s * sc.nodes_per_site
                                ..(s + 1) * sc.nodes_per_site)
                                .filter(|&i| nodes[i].waiting && nodes[i].ring == ring)
                                .collect();
                            for i in waiting {
                                nodes[i].waiting = false;
                                start_install(
                                    &mut nodes, i, &mut out, &mut rng, sc, now, &mut queue,
                                    &mut push,
                                );
                            }
                        }
                        Verdict::Soaking { until_unix_s, .. } => {
                            let at = ((until_unix_s - START_S).max(0) as u64) * 1000;
                            soak_until = Some(soak_until.map_or(at, |t| t.min(at)));
                        }
                        _ => {}
                    }
                }
                if let Some(at) = soak_until {
                    look(&mut sites[s], s, at.max(now + 1), &mut queue, &mut push);
                }
            }
        }
        if done == nodes.len() {
            break;
        }
    }
    // A ring past one over the failure limit must not have started after that instant.
    if let Some((at_s, ring)) = out.over_limit {
        out.installed_past_halt = out
            .first_install_s
            .iter()
            .enumerate()
            .skip(ring + 1)
            .any(|(_, first)| first.is_some_and(|t| t >= at_s));
    }
    out
}

type Push<'a> = dyn FnMut(&mut BinaryHeap<Reverse<(u64, u64, Ev)>>, u64, Ev) + 'a;

/// Schedules a look at `site` at `at` (the earliest one asked wins).
fn look(
    site: &mut Site,
    index: usize,
    at: u64,
    queue: &mut BinaryHeap<Reverse<(u64, u64, Ev)>>,
    push: &mut Push<'_>,
) {
    if site.look_at.is_some_and(|t| t <= at) {
        return;
    }
    site.look_at = Some(at);
    push(queue, at, Ev::Look(index));
}

/// Node `i` starts installing at `now`.
#[allow(clippy::too_many_arguments)]
fn start_install(
    nodes: &mut [Node],
    i: usize,
    out: &mut RolloutRun,
    rng: &mut ChaCha8Rng,
    sc: &RolloutScenario,
    now: u64,
    queue: &mut BinaryHeap<Reverse<(u64, u64, Ev)>>,
    push: &mut Push<'_>,
) {
    let n = &mut nodes[i];
    let first = &mut out.first_install_s[n.ring];
    if first.is_none() {
        *first = Some(now as f64 / 1000.0);
    }
    n.state = ReleaseState::Complete;
    let took = rng.random_range(sc.install_s.0..=sc.install_s.1);
    push(queue, now + (took * 1000.0) as u64, Ev::Installed(i));
}
