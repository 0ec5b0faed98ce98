//! `testnet`: run a fleet of real p2pd nodes on loopback.

use api::ReleaseProgress;
use api::cli::human_bytes;
use clap::{Parser, Subcommand};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use std::path::PathBuf;
use std::time::Duration;
use testnet::fleet::{Distribution, Fleet};
use testnet::report;
use testnet::scenario::Scenario;

#[derive(Parser)]
#[command(
    name = "testnet",
    about = "Run a fleet of real p2pd nodes on 127.0.0.1 in several sites, with an emulated WAN between sites",
    after_help = "Examples:\n  cargo run --release -p testnet -- demo\n  \
        cargo run --release -p testnet -- run testnet/scenarios/bar-3x4.toml --json report.json\n  \
        cargo run --release -p testnet -- sim testnet/scenarios/sim/fleet-500x50.toml --out sim-report"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// 3 sites × 4 nodes + origin: publish a release, watch it spread, then publish v2 with a
    /// small change and show that only the changed chunks moved.
    Demo {
        /// Keep the fleet's files (data directories, logs) here instead of a temporary dir.
        #[arg(long)]
        keep: Option<PathBuf>,
    },
    /// Run a scenario file: v1 (and v2 if the scenario has one), verify every export, report.
    Run {
        /// Scenario TOML.
        scenario: PathBuf,
        /// Keep the fleet's files here.
        #[arg(long)]
        keep: Option<PathBuf>,
        /// Also write the results as JSON to this file.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Then measure the fleet view: how soon a branch node of another site shows each
        /// site complete, and how soon a site whose two aggregators are killed is shown again.
        #[arg(long)]
        fleet_view: bool,
    },
    /// Simulate a fleet (hundreds of sites, thousands of endpoints) with the product's own
    /// planner, beside a single relay, one relay per branch and the lower bound. Prints a
    /// table; with --out, also writes report.json and completion.svg there.
    Sim {
        /// Simulator scenario TOML (testnet/scenarios/sim/).
        scenario: PathBuf,
        /// Directory for report.json and completion.svg.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Override the scenario's seed.
        #[arg(long)]
        seed: Option<u64>,
    },
    /// Simulate a month of releases across a fleet (testnet/scenarios/month/): which
    /// versions endpoints install, their status records and site summaries, all with the
    /// product's code; then one node's compliance report, compared release by release with
    /// what every endpoint did. Exits 1 if any row or 72-hour verdict is wrong.
    Month {
        /// Month scenario TOML.
        scenario: PathBuf,
        /// Also write the figures as JSON to this file.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Simulate a staged rollout across a fleet (testnet/scenarios/rollout/): rings and
    /// their gate decided by the product's code from the status records and site summaries
    /// each site holds, over several seeds. Exits 1 if in any run a node of a ring after one
    /// that failed over the gate's limit started installing after those failures.
    Rollout {
        /// Rollout scenario TOML.
        scenario: PathBuf,
        /// Also write the figures as JSON to this file.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// The WAN bytes of a new version between two real nodes: an origin and a branch node
    /// in another site fetch OLD as version 1, then NEW as version 2; prints what crossed
    /// the WAN for version 2 (the relay's count of every datagram, both ways: manifest,
    /// chunks, requests, control), the new chunk bytes, and checks the branch node's export
    /// of NEW byte for byte. `benches/delta.sh` runs it beside its anchors.
    Delta {
        /// The old version's directory (or file).
        old: PathBuf,
        /// The new version's directory (or file).
        new: PathBuf,
        /// Print the figures as JSON.
        #[arg(long)]
        json: bool,
    },
}

fn main() {
    let cli = Cli::parse();
    if let Cmd::Sim {
        scenario,
        out,
        seed,
    } = &cli.command
    {
        if let Err(e) = sim(scenario, out.as_deref(), *seed) {
            eprintln!("testnet: error: {e:#}");
            std::process::exit(1);
        }
        return;
    }
    if let Cmd::Rollout { scenario, json } = &cli.command {
        match rollout(scenario, json.as_deref()) {
            Ok(true) => return,
            Ok(false) => std::process::exit(1),
            Err(e) => {
                eprintln!("testnet: error: {e:#}");
                std::process::exit(1);
            }
        }
    }
    if let Cmd::Month { scenario, json } = &cli.command {
        match month(scenario, json.as_deref()) {
            Ok(true) => return,
            Ok(false) => std::process::exit(1),
            Err(e) => {
                eprintln!("testnet: error: {e:#}");
                std::process::exit(1);
            }
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = runtime.block_on(async {
        match cli.command {
            Cmd::Demo { keep } => {
                let scenario = Scenario::parse(include_str!("../scenarios/demo.toml"))?;
                run(scenario, keep, None, true, false).await
            }
            Cmd::Run {
                scenario,
                keep,
                json,
                fleet_view,
            } => run(Scenario::load(&scenario)?, keep, json, false, fleet_view).await,
            Cmd::Delta { old, new, json } => delta(&old, &new, json).await,
            Cmd::Sim { .. } | Cmd::Month { .. } | Cmd::Rollout { .. } => {
                unreachable!("handled before the runtime starts")
            }
        }
    });
    if let Err(e) = result {
        eprintln!("testnet: error: {e:#}");
        std::process::exit(1);
    }
}

/// `testnet delta OLD NEW`.
async fn delta(old: &std::path::Path, new: &std::path::Path, json: bool) -> anyhow::Result<()> {
    let scenario = Scenario::parse(
        "name = 'delta'\nseed = 1\ntimeout_s = 900\n[release]\nsize_mib = 1\n[origin]\n\
         [[sites]]\nname = 'branch'\nnodes = 1\n",
    )?;
    let temp = tempfile::tempdir()?;
    let mut fleet = Fleet::start(scenario, temp.path(), true).await?;
    fleet.wait_connected(Duration::from_secs(90)).await?;
    let d1 = fleet.distribute_path(old, 1, |_| {}).await?;
    let peak_v1 = fleet.nodes[0].peak_rss().unwrap_or(0);
    let d2 = fleet.distribute_path(new, 2, |_| {}).await?;
    let peak_v2 = fleet.nodes[0].peak_rss().unwrap_or(0);
    let receiver_peak = fleet.nodes[1].peak_rss().unwrap_or(0);
    let out = temp.path().join("export-v2");
    let exported = fleet.ctl(1, &["export", &d2.release, &out.display().to_string()])?;
    anyhow::ensure!(
        exported.status.success(),
        "export: {}",
        String::from_utf8_lossy(&exported.stderr)
    );
    let same = testnet::fleet::tree_digest(&out)? == testnet::fleet::tree_digest(new)?;
    fleet.stop();
    anyhow::ensure!(
        same,
        "the branch node's export of version 2 differs from {}",
        new.display()
    );
    let sum = |v: &[(String, u64)]| v.iter().map(|(_, b)| b).sum::<u64>();
    let figures = serde_json::json!({
        "v1_bytes": d1.bytes,
        "v2_bytes": d2.bytes,
        "p2pd_new_raw_bytes": d2.new_bytes,
        "p2pd_wan_bytes": sum(&d2.site_wan_ingress) + sum(&d2.site_wan_egress),
        "p2pd_wan_in_bytes": sum(&d2.site_wan_ingress),
        "p2pd_wan_out_bytes": sum(&d2.site_wan_egress),
        "p2pd_publish_v1_s": d1.publish_s,
        "p2pd_publish_s": d2.publish_s,
        "p2pd_patch_s": d2.publish_report["patch_s"].as_f64().unwrap_or(0.0),
        "p2pd_patches": d2.publish_report["patches"].as_u64().unwrap_or(0),
        "p2pd_publisher_peak_rss_v1_bytes": peak_v1,
        "p2pd_publisher_peak_rss_bytes": peak_v2,
        "p2pd_receiver_peak_rss_bytes": receiver_peak,
        "export_identical": same,
    });
    if json {
        println!("{}", serde_json::to_string_pretty(&figures)?);
    } else {
        println!(
            "version 2: {} in its tree, {} in chunks new to version 1; {} crossed the WAN \
             ({} in, {} out); the branch node's export is identical",
            human_bytes(d2.bytes),
            human_bytes(d2.new_bytes),
            human_bytes(sum(&d2.site_wan_ingress) + sum(&d2.site_wan_egress)),
            human_bytes(sum(&d2.site_wan_ingress)),
            human_bytes(sum(&d2.site_wan_egress))
        );
    }
    Ok(())
}

async fn run(
    scenario: Scenario,
    keep: Option<PathBuf>,
    json: Option<PathBuf>,
    demo: bool,
    fleet_view: bool,
) -> anyhow::Result<()> {
    let temp = tempfile::tempdir()?;
    let dir = keep.unwrap_or_else(|| temp.path().to_path_buf());
    println!(
        "starting {} nodes in {} sites + origin under {}",
        scenario.node_count(),
        scenario.sites.len(),
        dir.display()
    );
    let has_v2 = scenario.release.v2_changed_mib > 0;
    let mut fleet = Fleet::start(scenario, &dir, true).await?;
    // The overlay of site aggregators forms once their first summaries (10 s after they
    // start) name them; a hundred nodes on a small machine take longer.
    fleet
        .wait_connected(Duration::from_secs(90 + fleet.nodes.len() as u64))
        .await?;
    println!("all nodes connected; publishing v1");
    let d1 = distribute_with_bars(&fleet, 1).await?;
    let n1 = fleet.check_exports(&d1.release, 1).await?;
    println!("{}", report::render("v1", &d1));
    println!("exports checked byte for byte on {n1} nodes");
    // The cross-check: the same scenario in the simulator.
    let sim = testnet::sim::from_testnet(&fleet.scenario);
    let simulated = testnet::sim::engine::run(&sim, |_, _, _| {})?;
    let sim_all = simulated
        .completed_s
        .iter()
        .map(|t| t.unwrap_or(f64::INFINITY))
        .fold(0.0, f64::max);
    let real_all = d1.all_complete_s();
    println!(
        "simulator on the same scenario: all complete after {sim_all:.2} s, testnet {real_all:.2} s (simulated / real = {:.2}); origin {:.2} F simulated, {:.2} F real\n",
        sim_all / real_all,
        simulated.origin_egress as f64 / simulated.release_bytes as f64,
        d1.origin_egress as f64 / d1.bytes.max(1) as f64
    );
    let mut results = vec![d1];
    if has_v2 {
        println!(
            "publishing v2: {} MiB of the first file rewritten",
            fleet.scenario.release.v2_changed_mib
        );
        let d2 = distribute_with_bars(&fleet, 2).await?;
        let n2 = fleet.check_exports(&d2.release, 2).await?;
        println!("{}", report::render("v2", &d2));
        println!("exports checked byte for byte on {n2} nodes\n");
        results.push(d2);
    }
    if demo || has_v2 {
        summary(&fleet, &results);
    }
    let view = if fleet_view {
        let started = std::time::Instant::now();
        let d = distribute_with_bars(&fleet, 3).await?;
        println!("published v3 for the fleet view");
        let v = testnet::view::measure(&mut fleet, &d.release, started, &d.completion_s).await?;
        println!("{}", testnet::view::render(&v));
        Some(v)
    } else {
        None
    };
    if let Some(path) = json {
        let body = match &view {
            Some(v) => serde_json::json!({ "releases": results, "fleet_view": v }),
            None => serde_json::to_value(&results)?,
        };
        std::fs::write(&path, serde_json::to_vec_pretty(&body)?)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

fn sim(
    path: &std::path::Path,
    out: Option<&std::path::Path>,
    seed: Option<u64>,
) -> anyhow::Result<()> {
    let mut scenario = testnet::sim::scenario::SimScenario::load(path)?;
    if let Some(seed) = seed {
        scenario.seed = seed;
    }
    eprintln!(
        "simulating {}: {} sites, {} endpoints",
        scenario.name,
        scenario.site_links().len(),
        scenario.site_links().iter().map(|s| s.nodes).sum::<usize>()
    );
    let (report, outcome, baselines) = testnet::sim::simulate(&scenario, true)?;
    println!("{}", report.table());
    if let Some(dir) = out {
        testnet::sim::write_outputs(dir, &report, &outcome, &baselines)?;
        println!(
            "wrote {} and {}",
            dir.join("report.json").display(),
            dir.join("completion.svg").display()
        );
    }
    Ok(())
}

/// `testnet month`: runs the scenario, prints the figures; false if the report is not exact.
fn month(path: &std::path::Path, json: Option<&std::path::Path>) -> anyhow::Result<bool> {
    let scenario = testnet::sim::month::MonthScenario::load(path)?;
    eprintln!(
        "simulating {}: {} sites of {} endpoints, {} releases over {} days",
        scenario.name, scenario.sites, scenario.nodes_per_site, scenario.releases, scenario.days
    );
    let report = testnet::sim::month::run(&scenario, |done, all| {
        if done % 50 == 0 || done == all {
            eprintln!("  {done}/{all} sites");
        }
    })?;
    println!("{}", report.table());
    if let Some(path) = json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)?;
    }
    Ok(report.exact())
}

/// `testnet rollout`: runs every seed, prints each run's figures; false if a halt failed.
fn rollout(path: &std::path::Path, json: Option<&std::path::Path>) -> anyhow::Result<bool> {
    let scenario = testnet::sim::rollout::RolloutScenario::load(path)?;
    eprintln!(
        "simulating {}: {} sites of {} endpoints, rings {:?}, gate {}, {} seeds",
        scenario.name,
        scenario.sites,
        scenario.nodes_per_site,
        scenario.rings,
        scenario.gate,
        scenario.seeds
    );
    let report = testnet::sim::rollout::run(&scenario)?;
    println!("{}", report.table());
    if let Some(path) = json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)?;
    }
    Ok(report.halts_held())
}

async fn distribute_with_bars(fleet: &Fleet, version: u64) -> anyhow::Result<Distribution> {
    let multi = MultiProgress::new();
    let style = ProgressStyle::with_template("{prefix:>10} {bar:40} {percent:>3}%  {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    let sites = fleet.site_names.len();
    let bars: Vec<ProgressBar> = (1..sites)
        .map(|s| {
            let b = multi.add(ProgressBar::new(1000));
            b.set_style(style.clone());
            b.set_prefix(fleet.site_names[s].clone());
            b
        })
        .collect();
    let nodes_site: Vec<usize> = fleet.nodes.iter().map(|n| n.site).collect();
    let d = fleet
        .distribute(version, |progress: &[Option<ReleaseProgress>]| {
            for s in 1..sites {
                let mut have = 0u64;
                let mut total = 0u64;
                let mut complete = 0;
                let mut members = 0;
                let mut rate = 0;
                for (i, p) in progress.iter().enumerate() {
                    if nodes_site[i] != s {
                        continue;
                    }
                    members += 1;
                    if let Some(p) = p {
                        have += p.bytes_have;
                        total += p.bytes_total;
                        rate += p.rate_bytes_per_s;
                        if p.state == api::FetchState::Complete {
                            complete += 1;
                        }
                    }
                }
                let bar = &bars[s - 1];
                if total > 0 {
                    bar.set_position(have * 1000 / total.max(1));
                }
                bar.set_message(format!(
                    "{complete}/{members} nodes complete, {}/s",
                    human_bytes(rate)
                ));
            }
        })
        .await;
    for b in &bars {
        b.finish();
    }
    let _ = multi.clear();
    d
}

fn summary(fleet: &Fleet, results: &[Distribution]) {
    println!(
        "== summary ({} nodes in {} sites + origin)",
        fleet.scenario.node_count(),
        fleet.scenario.sites.len()
    );
    println!(
        "{:<8} {:>10} {:>11} {:>10} {:>11} {:>13} {:>14}",
        "VERSION", "SIZE", "NEW CHUNKS", "ALL DONE", "BOUND", "ORIGIN OUT", "MAX PER NODE"
    );
    for (i, d) in results.iter().enumerate() {
        println!(
            "{:<8} {:>10} {:>11} {:>9.1}s {:>10.1}s {:>13} {:>14}",
            format!("v{}", i + 1),
            human_bytes(d.bytes),
            human_bytes(d.new_bytes),
            d.all_complete_s(),
            d.lower_bound_s,
            human_bytes(d.origin_egress),
            human_bytes(d.max_received())
        );
    }
    if let [v1, v2] = results {
        let max2 = v2.max_received();
        println!(
            "\nv2 moved at most {} per node for a {} release: only the changed chunks crossed the network ({:.1}% of v1's bytes).",
            human_bytes(max2),
            human_bytes(v2.bytes),
            100.0 * max2 as f64 / v1.bytes.max(1) as f64
        );
    }
}
