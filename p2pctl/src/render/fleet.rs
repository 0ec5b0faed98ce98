//! A release across the fleet, as text.

use crate::when;

pub(crate) fn fleet_text(r: &store::fleet::FleetReport, sites: usize) -> String {
    use std::fmt::Write;
    let s = &r.states;
    let pct = |n: u64| {
        if r.nodes == 0 {
            0.0
        } else {
            n as f64 * 100.0 / r.nodes as f64
        }
    };
    let mut out = String::new();
    let name = if r.channel.is_empty() {
        String::new()
    } else {
        format!(" ({} v{})", r.channel, r.version)
    };
    let _ = writeln!(
        out,
        "release {}{name}: {}, {} hold it ({:.1} %), {} covered by a newer version",
        &r.release[..12.min(r.release.len())],
        api::cli::count(r.nodes, "node"),
        s.holding(),
        pct(s.holding()),
        s.superseded
    );
    // Every node once; the parts add up to the total above.
    let parts: Vec<String> = [
        ("activated", s.activated),
        ("complete", s.complete),
        ("held by an exception", s.held),
        ("waiting on the rollout", s.waiting),
        ("rolled back", s.rolled_back),
        ("superseded", s.superseded),
        ("downloading", s.downloading),
        ("announced", s.announced),
        ("not yet known", s.unknown),
        ("paused by its window", s.paused),
        ("failed", s.failed),
        ("refused", s.refused),
        ("not following the channel", s.not_followed),
        ("silent", s.silent),
    ]
    .into_iter()
    .filter(|(_, n)| *n > 0)
    .map(|(k, n)| format!("{k} {n}"))
    .collect();
    let _ = writeln!(out, "  {}", parts.join(" · "));
    if s.not_targeted > 0 {
        let _ = writeln!(
            out,
            "  {} more nodes are not targeted: they fetch and serve it, never install it",
            s.not_targeted
        );
    }
    for w in &r.warnings {
        let _ = writeln!(out, "  WARNING: {w}");
    }
    let moving = s.moving();
    match r.eta_s {
        Some(eta) => {
            let _ = writeln!(
                out,
                "  {:.1} nodes/min over the last 5 min; the {moving} still moving in about {}",
                r.holding_per_min,
                humantime::format_duration(std::time::Duration::from_secs(eta.round() as u64))
            );
        }
        None if moving == 0 && s.paused == 0 => {
            let _ = writeln!(
                out,
                "  done: every node holds it or a newer version, or will not ({} failed, {} refused, {} not following, {} silent)",
                s.failed, s.refused, s.not_followed, s.silent
            );
        }
        None if moving == 0 => {}
        None => {
            let _ = writeln!(
                out,
                "  {moving} still moving; none came to hold it in the last 5 min"
            );
        }
    }
    if s.paused > 0 {
        let opens = r.window_opens_unix_s.map_or_else(
            || "not in sight".to_string(),
            |t| when(t.saturating_mul(1000)),
        );
        let _ = writeln!(
            out,
            "  {} wait for their download window (the first opens {opens}); not counted in the ETA",
            s.paused
        );
    }
    if !r.reasons.is_empty() {
        let _ = writeln!(
            out,
            "\nWHY (nodes that failed, refused, hold it as an exception or wait on the rollout, the commonest reasons)"
        );
        for x in &r.reasons {
            let _ = writeln!(out, "  {:>6} {:<8} {}", x.nodes, x.state, x.reason);
        }
    }
    fleet_sites_text(&mut out, r, sites);
    fleet_nodes_text(&mut out, r);
    out
}

/// The sites furthest behind, at most `sites` of them.
pub(crate) fn fleet_sites_text(out: &mut String, r: &store::fleet::FleetReport, sites: usize) {
    use std::fmt::Write;
    let behind: Vec<_> = r
        .sites
        .iter()
        .filter(|x| x.holding + x.superseded < x.nodes || x.stale)
        .collect();
    if !behind.is_empty() {
        let _ = writeln!(
            out,
            "\n{:<24} {:>6} {:>8} {:>7} {:>9}  FROM",
            "SITE (furthest behind)", "NODES", "HOLDING", "FAILED", "PROGRESS"
        );
        for x in behind.iter().take(sites) {
            let from = match x.age_s {
                Some(age) => format!(
                    "summary {} ago{}",
                    humantime::format_duration(std::time::Duration::from_secs(age as u64)),
                    if x.stale { " (stale)" } else { "" }
                ),
                None => x.from.clone(),
            };
            let _ = writeln!(
                out,
                "{:<24} {:>6} {:>8} {:>7} {:>8.1}%  {from}",
                x.site,
                x.nodes,
                x.holding,
                x.failed,
                x.progress * 100.0
            );
        }
        if behind.len() > sites {
            let _ = writeln!(out, "… and {} more sites behind", behind.len() - sites);
        }
    }
}

/// The nodes listed one by one (`--site`), and the failed ones.
pub(crate) fn fleet_nodes_text(out: &mut String, r: &store::fleet::FleetReport) {
    use std::fmt::Write;
    let s = &r.states;
    if !r.nodes_detail.is_empty() {
        let _ = writeln!(
            out,
            "\n{:<14} {:<14} {:>8}  SINCE",
            "NODE", "STATE", "CHUNKS"
        );
        for d in &r.nodes_detail {
            let since = if d.since_unix_s > 0 {
                when(d.since_unix_s.saturating_mul(1000))
            } else {
                "-".into()
            };
            let _ = writeln!(
                out,
                "{:<14} {:<14} {:>8}  {since}{}",
                &d.node[..12.min(d.node.len())],
                d.state,
                d.chunks_have,
                d.error
                    .as_ref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            );
        }
    }
    if s.failed > 0 {
        let _ = writeln!(
            out,
            "\nFAILED ({}; {} listed, summaries name a few per site: --site NAME lists all)",
            s.failed,
            r.failed.len()
        );
        for f in &r.failed {
            let _ = writeln!(
                out,
                "  {}  {:<20} {}: {}",
                &f.node[..12.min(f.node.len())],
                f.site,
                when(f.since_unix_s.saturating_mul(1000)),
                f.error
            );
        }
    }
}
