//! The fleet-scale simulator (`testnet sim SCENARIO`): a deterministic discrete-event model of
//! hundreds of sites and tens of thousands of endpoints in which every fetch decision is made
//! by the product's own code ([`scheduler::planner`], [`scheduler::seeding`]), beside the two
//! baselines and the lower bound, all from the same scenario in one run.
//!
//! * [`scenario`]: the scenario TOML.
//! * [`engine`]: the chunk-level event engine for the product.
//! * [`fluid`]: the flow-level model that runs the baselines.
//! * [`report`]: figures, the table, JSON and the SVG plot.
//! * [`rollout`]: staged rollouts at fleet scale (`testnet rollout`): rings and their gate
//!   with the product's decision, records and summaries.

pub mod control;
pub mod engine;
pub mod fluid;
pub mod month;
pub mod report;
pub mod rollout;
pub mod scenario;

use scenario::SimScenario;

/// The lower bound on the time for every endpoint to hold the release, and its terms.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LowerBound {
    /// The bound, seconds: the largest term.
    pub t_min_s: f64,
    /// F/u_0: the origin must send every byte once.
    pub origin_s: f64,
    /// F/min_s D_s: the slowest site downlink must carry every byte once.
    pub site_down_s: f64,
    /// S·F/(u_0 + Σ_s U_s): every site must receive F over the WAN, from the origin's and
    /// the sites' uplinks together.
    pub wan_upload_s: f64,
    /// max_s N_s·F/(D_s + Σ_{i∈s} u_i): every node of a site must receive F, from the site's
    /// downlink and its nodes' LAN uplinks.
    pub site_swarm_s: f64,
    /// F/d_min: the slowest node's own link.
    pub node_down_s: f64,
}

/// Kumar & Ross applied at two levels (sites as peers over the WAN, nodes as peers inside a
/// site), see docs/DESIGN.md, "The numbers".
pub fn lower_bound(sc: &SimScenario) -> LowerBound {
    let f = sc.release_bytes() as f64;
    let sites = sc.site_links();
    let u0 = sc.origin_up();
    let d_min = sites.iter().map(|s| s.down).fold(f64::INFINITY, f64::min);
    let sum_up: f64 = sites.iter().map(|s| s.up).sum();
    let site_swarm = sites
        .iter()
        .map(|s| s.nodes as f64 * f / (s.down + s.nodes as f64 * s.lan))
        .fold(0.0, f64::max);
    let node_min = sites.iter().map(|s| s.lan).fold(f64::INFINITY, f64::min);
    let b = LowerBound {
        t_min_s: 0.0,
        origin_s: f / u0,
        site_down_s: f / d_min,
        wan_upload_s: sites.len() as f64 * f / (u0 + sum_up),
        site_swarm_s: site_swarm,
        node_down_s: f / node_min,
    };
    LowerBound {
        t_min_s: [
            b.origin_s,
            b.site_down_s,
            b.wan_upload_s,
            b.site_swarm_s,
            b.node_down_s,
        ]
        .into_iter()
        .fold(0.0, f64::max),
        ..b
    }
}

/// A baseline's completion times (seconds, per endpoint) and its closed form.
#[derive(Debug, Clone)]
pub struct Baseline {
    /// When each endpoint completes.
    pub completed_s: Vec<f64>,
    /// The closed form (exact when all sites are alike).
    pub closed_form_s: f64,
    /// Bytes the origin sends.
    pub origin_egress: f64,
}

/// Single relay: every endpoint downloads the release from the origin. Links: the origin's
/// uplink, each site's downlink, each endpoint's LAN link. Closed form:
/// max(N·F/u_0, max_s N_s·F/D_s, F/d_min).
pub fn single_relay(sc: &SimScenario) -> Baseline {
    let f = sc.release_bytes() as f64;
    let sites = sc.site_links();
    let mut capacity = vec![sc.origin_up()];
    let mut flows = Vec::new();
    for s in &sites {
        let down = capacity.len();
        capacity.push(s.down);
        for _ in 0..s.nodes {
            capacity.push(s.lan);
            flows.push(fluid::Flow {
                path: vec![0, down, capacity.len() - 1],
                bytes: f,
                after: None,
            });
        }
    }
    let n: usize = sites.iter().map(|s| s.nodes).sum();
    let closed = [
        n as f64 * f / sc.origin_up(),
        sites
            .iter()
            .map(|s| s.nodes as f64 * f / s.down)
            .fold(0.0, f64::max),
        sites.iter().map(|s| f / s.lan).fold(0.0, f64::max),
    ]
    .into_iter()
    .fold(0.0, f64::max);
    Baseline {
        completed_s: fluid::run(&capacity, &flows),
        closed_form_s: closed,
        origin_egress: n as f64 * f,
    }
}

/// One relay per branch (WSUS style): each site's relay downloads the release from the
/// origin, then its endpoints download it from the relay over the LAN (a downstream server
/// serves an update once it holds it). Closed form, with all sites alike:
/// max(S·F/u_0, F/D) + N_s·F/r, r the relay's LAN link.
pub fn relay_per_branch(sc: &SimScenario) -> Baseline {
    let f = sc.release_bytes() as f64;
    let sites = sc.site_links();
    let mut capacity = vec![sc.origin_up()];
    let mut flows = Vec::new();
    let mut relay_flows = Vec::new();
    for s in &sites {
        capacity.push(s.down);
        flows.push(fluid::Flow {
            path: vec![0, capacity.len() - 1],
            bytes: f,
            after: None,
        });
        relay_flows.push(flows.len() - 1);
    }
    let mut endpoint_flows = Vec::new();
    for (s, site) in sites.iter().enumerate() {
        capacity.push(site.lan);
        let relay_up = capacity.len() - 1;
        for _ in 0..site.nodes {
            capacity.push(site.lan);
            flows.push(fluid::Flow {
                path: vec![relay_up, capacity.len() - 1],
                bytes: f,
                after: Some(relay_flows[s]),
            });
            endpoint_flows.push(flows.len() - 1);
        }
    }
    let done = fluid::run(&capacity, &flows);
    let closed = sites
        .iter()
        .map(|s| {
            (sites.len() as f64 * f / sc.origin_up()).max(f / s.down) + s.nodes as f64 * f / s.lan
        })
        .fold(0.0, f64::max);
    Baseline {
        completed_s: endpoint_flows.iter().map(|&k| done[k]).collect(),
        closed_form_s: closed,
        origin_egress: sites.len() as f64 * f,
    }
}

/// The simulator's version of a real-node testnet scenario, for the cross-check: the same
/// sites, nodes, WAN rates and release size. The testnet delays a packet by the receiving
/// site's latency and none at the origin; the simulator adds both ends' latencies, so each
/// site gets half its testnet latency and the origin none (the same round trips). Links the
/// testnet leaves unlimited (loopback LAN, an uncapped WAN) get 10 Gbit/s.
pub fn from_testnet(t: &crate::scenario::Scenario) -> SimScenario {
    const UNLIMITED_MBIT: f64 = 10_000.0;
    let mbit = |bytes_per_s: Option<f64>| bytes_per_s.map_or(UNLIMITED_MBIT, |b| b * 8.0 / 1e6);
    SimScenario {
        name: format!("{} (simulated)", t.name),
        seed: t.seed,
        start: None,
        release: scenario::SimRelease {
            size_mib: t.release.size_mib as f64,
            chunk_kib: 64,
            emergency: false,
            download_windows: Vec::new(),
            // The testnet's payloads are random bytes, and one version of them.
            wan_wire_ratio: 1.0,
            patches: None,
        },
        origin: scenario::SimOrigin {
            up_mbit: t.origin.up_mbit.unwrap_or(UNLIMITED_MBIT),
            latency_ms: 0.0,
        },
        sites: scenario::SiteDefaults {
            count: t.sites.len(),
            lan_mbit: UNLIMITED_MBIT,
            ..scenario::SiteDefaults::default()
        },
        site: t
            .sites
            .iter()
            .map(|s| scenario::SiteSpec {
                name: s.name.clone(),
                nodes: Some(s.nodes),
                wan_down_mbit: Some(mbit(match (s.down(&t.wan), s.ingress_cap()) {
                    (Some(d), Some(c)) => Some(d.min(c)),
                    (d, c) => d.or(c),
                })),
                wan_up_mbit: Some(mbit(s.up(&t.wan))),
                wan_latency_ms: Some((s.latency(&t.wan).as_secs_f64() * 1e3 / 2.0).max(0.1)),
                lan_mbit: None,
                lan_latency_ms: Some(0.05),
                ..scenario::SiteSpec::default()
            })
            .collect(),
        swarm: scenario::SwarmSpec::default(),
        faults: scenario::FaultSpec::default(),
        limit_s: t.timeout_s as f64,
    }
}

/// Runs `sc` (the product by the engine, the baselines by the flow model), reports progress
/// on stderr when `progress` is set, and returns the report.
pub fn simulate(
    sc: &SimScenario,
    progress: bool,
) -> anyhow::Result<(report::Report, engine::Outcome, [Baseline; 2])> {
    let started = std::time::Instant::now();
    let mut last = std::time::Instant::now();
    let outcome = engine::run(sc, |t, done, all| {
        if progress && last.elapsed() >= std::time::Duration::from_secs(5) {
            last = std::time::Instant::now();
            eprintln!(
                "  simulated {t:>8.1} s: {done}/{all} endpoints complete ({:.0} s wall)",
                started.elapsed().as_secs_f64()
            );
        }
    })?;
    let single = single_relay(sc);
    let branch = relay_per_branch(sc);
    let wall = started.elapsed().as_secs_f64();
    let report = report::Report::new(
        sc,
        lower_bound(sc),
        &outcome,
        &single,
        &branch,
        wall,
        peak_rss_bytes(),
    );
    Ok((report, outcome, [single, branch]))
}

/// Writes `report.json` and `completion.svg` into `dir`.
pub fn write_outputs(
    dir: &std::path::Path,
    report: &report::Report,
    outcome: &engine::Outcome,
    baselines: &[Baseline; 2],
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("report.json"), serde_json::to_vec_pretty(report)?)?;
    let product: Vec<f64> = outcome
        .completed_s
        .iter()
        .map(|t| t.unwrap_or(f64::INFINITY))
        .collect();
    report::plot(
        &dir.join("completion.svg"),
        &format!(
            "{}: {} endpoints in {} sites",
            report.scenario, report.endpoints, report.sites
        ),
        report.lower_bound.t_min_s,
        &[
            ("p2pd", product),
            ("relay per branch", baselines[1].completed_s.clone()),
            ("single relay", baselines[0].completed_s.clone()),
        ],
    )
}

/// The process's peak resident memory (Linux `VmHWM`), or 0 where unknown.
pub fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario(extra: &str) -> SimScenario {
        SimScenario::parse(&format!(
            "name='t'\n[release]\nsize_mib=8\n[origin]\nup_mbit=100\n\
             [sites]\ncount=5\nnodes=4\nwan_down_mbit=20\nwan_up_mbit=20\nlan_mbit=1000\n{extra}"
        ))
        .unwrap()
    }

    #[test]
    fn baselines_reproduce_their_closed_forms_where_those_are_exact() {
        // Origin-bound single relay: 20 endpoints share 100 Mbit/s, sites' 20 Mbit/s links
        // carry 4 copies at 5 Mbit/s each: N·F/u_0.
        for sc in [scenario(""), scenario("[[site]]\nname='big'\nnodes=10\n")] {
            for b in [single_relay(&sc), relay_per_branch(&sc)] {
                let last = b.completed_s.iter().copied().fold(0.0, f64::max);
                let err = (last - b.closed_form_s).abs() / b.closed_form_s;
                assert!(
                    err < 0.02,
                    "simulated {last} s vs closed form {}",
                    b.closed_form_s
                );
            }
        }
        let sc = scenario("");
        let f = sc.release_bytes() as f64;
        assert!((single_relay(&sc).closed_form_s - 20.0 * f / 12.5e6).abs() < 1e-6);
        // Per branch: 5 relays share 100 Mbit/s (20 each, = D): S·F/u_0, then 4·F at 1 Gbit/s.
        let expect = 5.0 * f / 12.5e6 + 4.0 * f / 125e6;
        assert!((relay_per_branch(&sc).closed_form_s - expect).abs() < 1e-6);
    }

    #[test]
    fn every_testnet_scenario_has_a_simulated_twin() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
        for name in [
            "ci-3x4.toml",
            "bar-3x4.toml",
            "demo.toml",
            "bar-shaping.toml",
        ] {
            let t = crate::scenario::Scenario::load(&dir.join(name)).unwrap();
            let sim = from_testnet(&t);
            sim.check().unwrap();
            assert_eq!(sim.site_links().len(), t.sites.len());
            assert_eq!(
                sim.site_links().iter().map(|s| s.nodes).sum::<usize>(),
                t.node_count()
            );
            let o = engine::run(&sim, |_, _, _| {}).unwrap();
            assert!(o.completed_s.iter().all(Option::is_some), "{name}");
        }
    }

    #[test]
    fn lower_bound_is_the_largest_term_and_matches_the_design_example() {
        let sc = SimScenario::parse(
            "name='t'\n[release]\nsize_mib=1024\n[origin]\nup_mbit=1000\n\
             [sites]\ncount=500\nnodes=50\n",
        )
        .unwrap();
        let b = lower_bound(&sc);
        // docs/DESIGN.md: ≈ 86 s, the branch WAN term F/D.
        assert!((b.t_min_s - 85.9).abs() < 0.1, "{b:?}");
        assert_eq!(b.t_min_s, b.site_down_s);
        let single = single_relay(&sc).closed_form_s;
        assert!((single / 3600.0 - 59.7).abs() < 0.1, "{single}");
        assert!((relay_per_branch(&sc).closed_form_s / 60.0 - 78.7).abs() < 0.1);
    }
}
