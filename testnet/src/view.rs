//! The fleet view's own bar, measured on a running fleet (`testnet run --fleet-view`): how
//! soon `p2pctl fleet` on a branch node of another site shows a change, and how soon a site
//! whose two aggregators were killed is shown again, by a new aggregator.
//!
//! * **Lag**: after a release is distributed, the observer (a plain member of the last
//!   site, so that its view is pulled from its own aggregator as an operator's would be) is
//!   asked every [`POLL`] until it shows every node of a site holding the release; the lag
//!   of the site is that moment less the site's last completion (times from before the
//!   publish, so the lag is never understated). The bar is 30 s.
//! * **Failover**: the first branch site's two aggregators are killed; the observer is
//!   asked until it shows that site from a summary made by another member, at most as old
//!   as the time since the kill. The bar is 60 s.

use crate::fleet::Fleet;
use serde::Serialize;
use std::time::{Duration, Instant};
use store::fleet::FleetReport;

/// How often the observer is asked.
pub const POLL: Duration = Duration::from_millis(500);

/// How long either measurement waits before it gives up.
pub const WAIT_MAX: Duration = Duration::from_secs(300);

/// What was measured.
#[derive(Debug, Clone, Serialize)]
pub struct ViewFigures {
    /// The observer's node name.
    pub observer: String,
    /// Per site, seconds from its last completion until the observer showed every node of
    /// it holding the release (`None`: not within [`WAIT_MAX`]).
    pub lag_s: Vec<(String, Option<f64>)>,
    /// The site whose aggregators were killed, and their node names.
    pub failover_site: String,
    /// See `failover_site`.
    pub killed: Vec<String>,
    /// Seconds from the kill until the observer showed the site from a new aggregator's
    /// summary (`None`: not within [`WAIT_MAX`]).
    pub failover_s: Option<f64>,
    /// Nodes that summary counts.
    pub failover_nodes: Option<u64>,
}

async fn ask(fleet: &Fleet, i: usize, release: &str) -> anyhow::Result<FleetReport> {
    let out = tokio::process::Command::new(&fleet.bins.p2pctl)
        .arg("--socket")
        .arg(&fleet.nodes[i].socket)
        .args(["--json", "fleet", release])
        .output()
        .await?;
    // Exit 6 (nodes failed) still prints the report.
    serde_json::from_slice(&out.stdout).map_err(|e| {
        anyhow::anyhow!(
            "p2pctl fleet on {}: {e}: {}",
            fleet.nodes[i].name,
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Measures both on `fleet`, which just distributed `release`: `started` is before its
/// publish, `completion_s` each node's completion from then.
pub async fn measure(
    fleet: &mut Fleet,
    release: &str,
    started: Instant,
    completion_s: &[(String, f64)],
) -> anyhow::Result<ViewFigures> {
    let sites = fleet.site_names.len();
    anyhow::ensure!(
        sites >= 3,
        "the fleet view needs two branch sites besides the origin's"
    );
    // The observer: a member of the last site that is not its first aggregator.
    let last = sites - 1;
    let mut observer = None;
    for i in 0..fleet.nodes.len() {
        if fleet.nodes[i].site == last && fleet.status(i).await?.aggregator_rank != Some(0) {
            observer = Some(i);
            break;
        }
    }
    let observer = observer.ok_or_else(|| anyhow::anyhow!("no observer in the last site"))?;

    // Lag: each branch site's last completion against when the observer shows it done.
    let mut done_at: Vec<Option<Instant>> = vec![None; sites];
    for (name, t) in completion_s {
        if let Some(n) = fleet.nodes.iter().find(|n| n.name == *name) {
            let at = started + Duration::from_secs_f64(*t);
            let d = &mut done_at[n.site];
            *d = Some(d.map_or(at, |x| x.max(at)));
        }
    }
    let mut seen: Vec<Option<Instant>> = vec![None; sites];
    let deadline = Instant::now() + WAIT_MAX;
    while Instant::now() < deadline && (1..sites).any(|s| seen[s].is_none()) {
        let r = ask(fleet, observer, release).await?;
        let now = Instant::now();
        for (s, seen) in seen.iter_mut().enumerate().skip(1) {
            let name = &fleet.site_names[s];
            let size = fleet.nodes.iter().filter(|n| n.site == s).count() as u64;
            let shown = r
                .sites
                .iter()
                .any(|p| p.site == *name && p.holding + p.superseded >= size);
            if shown && seen.is_none() {
                *seen = Some(now);
            }
        }
        tokio::time::sleep(POLL).await;
    }
    let lag_s = (1..sites)
        .map(|s| {
            let lag = match (seen[s], done_at[s]) {
                (Some(a), Some(d)) => Some(a.saturating_duration_since(d).as_secs_f64()),
                _ => None,
            };
            (fleet.site_names[s].clone(), lag)
        })
        .collect();

    // Failover: kill the first branch site's aggregators.
    let target = 1;
    let mut killed = Vec::new();
    let mut killed_ids = Vec::new();
    for i in 0..fleet.nodes.len() {
        if fleet.nodes[i].site != target || !fleet.nodes[i].is_running() {
            continue;
        }
        let st = fleet.status(i).await?;
        if st.aggregator_rank.is_some() {
            killed.push(i);
            killed_ids.push(st.node_id);
        }
    }
    for &i in &killed {
        fleet.kill(i);
    }
    let t_kill = Instant::now();
    let name = fleet.site_names[target].clone();
    let mut failover_s = None;
    let mut failover_nodes = None;
    let deadline = t_kill + WAIT_MAX;
    while Instant::now() < deadline {
        let r = ask(fleet, observer, release).await?;
        let since = t_kill.elapsed().as_secs_f64();
        if let Some(p) = r.sites.iter().find(|p| p.site == name) {
            let fresh = p.age_s.is_some_and(|a| (a as f64) <= since);
            let new = p
                .aggregator
                .as_ref()
                .is_some_and(|a| !killed_ids.contains(a));
            if fresh && new {
                failover_s = Some(since);
                failover_nodes = Some(p.nodes);
                break;
            }
        }
        tokio::time::sleep(POLL).await;
    }
    Ok(ViewFigures {
        observer: fleet.nodes[observer].name.clone(),
        lag_s,
        failover_site: name,
        killed: killed
            .iter()
            .map(|&i| fleet.nodes[i].name.clone())
            .collect(),
        failover_s,
        failover_nodes,
    })
}

/// The figures as text.
pub fn render(v: &ViewFigures) -> String {
    let worst = v
        .lag_s
        .iter()
        .filter_map(|(_, l)| *l)
        .fold(0.0f64, f64::max);
    let missing: Vec<&str> = v
        .lag_s
        .iter()
        .filter(|(_, l)| l.is_none())
        .map(|(s, _)| s.as_str())
        .collect();
    let mut out = format!(
        "fleet view on {}: every site shown complete at most {worst:.1} s after its last completion (bar 30 s)",
        v.observer
    );
    if !missing.is_empty() {
        out += &format!("; never shown complete: {}", missing.join(", "));
    }
    out += &format!(
        "\nfleet view after killing {} ({}'s aggregators): {} (bar 60 s)",
        v.killed.join(" and "),
        v.failover_site,
        match (v.failover_s, v.failover_nodes) {
            (Some(s), Some(n)) =>
                format!("shown again by a new aggregator after {s:.1} s, {n} nodes"),
            _ => format!("not shown again within {} s", WAIT_MAX.as_secs()),
        }
    );
    out
}
