//! The simulator's report: the figures of the product and the baselines side by side, as a
//! text table, as JSON (for the benchmark history) and as an SVG plot of the completion
//! curves.

use super::engine::Outcome;
use super::{Baseline, LowerBound};
use serde::Serialize;
use std::fmt::Write;

/// Completion times of one way of distributing: when a share of the endpoints is done.
#[derive(Debug, Clone, Serialize)]
pub struct Completion {
    /// Seconds until 50 % of the endpoints are complete (`None`: never, within the limit).
    pub p50_s: Option<f64>,
    /// Until 90 %.
    pub p90_s: Option<f64>,
    /// Until 99 %.
    pub p99_s: Option<f64>,
    /// Until every endpoint.
    pub all_s: Option<f64>,
}

impl Completion {
    /// From per-endpoint completion times (`None` or infinite: not complete).
    pub fn of(times: &[Option<f64>]) -> Self {
        let mut done: Vec<f64> = times
            .iter()
            .filter_map(|t| t.filter(|t| t.is_finite()))
            .collect();
        done.sort_by(f64::total_cmp);
        let n = times.len();
        let at = |share: f64| {
            let need = ((share * n as f64).ceil() as usize).max(1);
            done.get(need - 1).copied()
        };
        Self {
            p50_s: at(0.5),
            p90_s: at(0.9),
            p99_s: at(0.99),
            all_s: at(1.0).filter(|_| done.len() == n),
        }
    }
}

/// p50, p99 and max of per-site figures, as multiples of the release size.
#[derive(Debug, Clone, Serialize)]
pub struct Spread {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
}

impl Spread {
    fn of(values: &[u64], unit: f64) -> Self {
        let mut v: Vec<f64> = values.iter().map(|&b| b as f64 / unit).collect();
        v.sort_by(f64::total_cmp);
        let at = |q: f64| {
            if v.is_empty() {
                0.0
            } else {
                v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1]
            }
        };
        Self {
            p50: at(0.5),
            p99: at(0.99),
            max: at(1.0),
        }
    }
}

/// The product's figures.
#[derive(Debug, Clone, Serialize)]
pub struct Product {
    /// Completion of honest endpoints.
    pub completion: Completion,
    /// All complete, as a multiple of the lower bound.
    pub ratio_to_bound: Option<f64>,
    /// Origin egress as a multiple of F.
    pub origin_egress_f: f64,
    /// Of which before initial seeding ended, × F.
    pub origin_seeding_f: f64,
    /// When initial seeding ended, seconds.
    pub seeding_ended_s: Option<f64>,
    /// WAN ingress per site as multiples of F.
    pub site_wan_in_f: Spread,
    /// WAN egress per site as multiples of F.
    pub site_wan_out_f: Spread,
    /// Chunk bytes put on links, received, lost with a peer that went away.
    pub bytes_sent: u64,
    /// See `bytes_sent`.
    pub bytes_received: u64,
    /// See `bytes_sent`.
    pub bytes_lost: u64,
    /// Bytes of chunks endpoints rebuilt from patches instead of receiving them.
    pub bytes_rebuilt: u64,
    /// Events processed, and planner passes.
    pub events: u64,
    /// See `events`.
    pub plans: u64,
    /// Same-site peers snubbed by a fetch (a stall, or failures in a row).
    pub snubs: u64,
    /// Fingerprint of the event log.
    pub log_hash: String,
    /// The control plane.
    pub control: ControlFigures,
}

/// The control plane's figures.
#[derive(Debug, Clone, Serialize)]
pub struct ControlFigures {
    /// Control-frame bytes all nodes sent (LAN and WAN).
    pub bytes_total: u64,
    /// Per endpoint: the median and the most one sent.
    pub per_endpoint_p50: u64,
    /// See `per_endpoint_p50`.
    pub per_endpoint_max: u64,
    /// The most control bytes any site took in across the WAN, and sent out (QUIC packets,
    /// acknowledgements included).
    pub site_wan_in_max: u64,
    /// See `site_wan_in_max`.
    pub site_wan_out_max: u64,
    /// The larger of the two, as a share of the release.
    pub site_wan_share_max: f64,
    /// Site summaries published.
    pub summaries: u64,
    /// Status entries the busiest node holds (its site's records, a summary per other site).
    pub status_entries_max: usize,
    /// No release moving.
    pub steady: super::control::SteadyState,
}

impl ControlFigures {
    fn of(c: &super::engine::ControlOutcome, release_bytes: u64) -> Self {
        let mut per = c.per_endpoint.clone();
        per.sort_unstable();
        let max_in = c.site_wan_in.iter().copied().max().unwrap_or(0);
        let max_out = c.site_wan_out.iter().copied().max().unwrap_or(0);
        Self {
            bytes_total: c.bytes_total,
            per_endpoint_p50: per.get(per.len() / 2).copied().unwrap_or(0),
            per_endpoint_max: per.last().copied().unwrap_or(0),
            site_wan_in_max: max_in,
            site_wan_out_max: max_out,
            site_wan_share_max: max_in.max(max_out) as f64 / release_bytes.max(1) as f64,
            summaries: c.summaries,
            status_entries_max: c.status_entries_max,
            steady: c.steady,
        }
    }
}

/// When one site's endpoints completed.
#[derive(Debug, Clone, Serialize)]
pub struct SiteCompletion {
    /// Site name.
    pub name: String,
    /// Honest endpoints.
    pub endpoints: usize,
    /// When the first and the last of them completed (`None`: not all did).
    pub first_s: Option<f64>,
    /// See `first_s`.
    pub all_s: Option<f64>,
}

/// How many sites the text table lists one by one; beyond it, only the slowest this many.
const SITES_LISTED: usize = 12;

/// A baseline's figures.
#[derive(Debug, Clone, Serialize)]
pub struct BaselineFigures {
    /// Completion of every endpoint.
    pub completion: Completion,
    /// Its closed form, seconds.
    pub closed_form_s: f64,
    /// All complete, as a multiple of the lower bound.
    pub ratio_to_bound: Option<f64>,
    /// Origin egress as a multiple of F.
    pub origin_egress_f: f64,
}

/// Everything one `testnet sim` run reports.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Scenario name.
    pub scenario: String,
    /// Seed.
    pub seed: u64,
    /// Branch sites.
    pub sites: usize,
    /// Endpoints.
    pub endpoints: usize,
    /// Release size, bytes.
    pub release_bytes: u64,
    /// Chunks.
    pub chunks: u64,
    /// The lower bound and its terms.
    pub lower_bound: LowerBound,
    /// p2pd.
    pub product: Product,
    /// Each site's completion, slowest first.
    pub sites_by_completion: Vec<SiteCompletion>,
    /// Whether rate schedules or download windows hold endpoints back (the lower bound and
    /// the baselines leave them out).
    pub policies: bool,
    /// Every endpoint from the origin.
    pub single_relay: BaselineFigures,
    /// One relay per branch.
    pub relay_per_branch: BaselineFigures,
    /// Wall-clock seconds the simulation took.
    pub wall_s: f64,
    /// Peak resident memory of the process, bytes (Linux; 0 elsewhere).
    pub peak_rss_bytes: u64,
}

impl Report {
    /// Assembles the report.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        scenario: &super::scenario::SimScenario,
        bound: LowerBound,
        outcome: &Outcome,
        single: &Baseline,
        branch: &Baseline,
        wall_s: f64,
        peak_rss_bytes: u64,
    ) -> Self {
        let f = outcome.release_bytes as f64;
        let t_min = bound.t_min_s;
        let ratio = |c: &Completion| c.all_s.map(|t| t / t_min);
        let product = {
            let completion = Completion::of(&outcome.completed_s);
            Product {
                ratio_to_bound: ratio(&completion),
                completion,
                origin_egress_f: outcome.origin_egress as f64 / f,
                origin_seeding_f: outcome.origin_egress_seeding as f64 / f,
                seeding_ended_s: outcome.seeding_ended_s,
                site_wan_in_f: Spread::of(&outcome.site_wan_in, f),
                site_wan_out_f: Spread::of(&outcome.site_wan_out, f),
                bytes_sent: outcome.bytes_sent,
                bytes_received: outcome.bytes_received,
                bytes_lost: outcome.bytes_lost,
                bytes_rebuilt: outcome.bytes_rebuilt,
                events: outcome.events,
                plans: outcome.plans,
                snubs: outcome.snubs,
                log_hash: format!("{:032x}", outcome.log_hash),
                control: ControlFigures::of(&outcome.control, outcome.release_bytes),
            }
        };
        let baseline = |b: &Baseline| {
            let times: Vec<Option<f64>> = b.completed_s.iter().map(|&t| Some(t)).collect();
            let completion = Completion::of(&times);
            BaselineFigures {
                ratio_to_bound: ratio(&completion),
                completion,
                closed_form_s: b.closed_form_s,
                origin_egress_f: b.origin_egress / f,
            }
        };
        let mut sites: Vec<SiteCompletion> = outcome
            .site_names
            .iter()
            .map(|name| SiteCompletion {
                name: name.clone(),
                endpoints: 0,
                first_s: None,
                all_s: Some(0.0),
            })
            .collect();
        for (t, &site) in outcome.completed_s.iter().zip(&outcome.endpoint_site) {
            let s = &mut sites[site as usize];
            s.endpoints += 1;
            s.all_s = match (s.all_s, t) {
                (Some(a), Some(t)) => Some(a.max(*t)),
                _ => None,
            };
            if let Some(t) = t {
                s.first_s = Some(s.first_s.map_or(*t, |f: f64| f.min(*t)));
            }
        }
        sites.sort_by(|a, b| {
            let key = |s: &SiteCompletion| s.all_s.unwrap_or(f64::INFINITY);
            key(b).total_cmp(&key(a)).then(a.name.cmp(&b.name))
        });
        let policies = !scenario.release.download_windows.is_empty()
            || scenario.site_policies().is_ok_and(|p| {
                p.iter().any(|p| {
                    !p.windows.download.is_empty()
                        || (p.shaping.enabled
                            && [
                                &p.shaping.wan_ingress,
                                &p.shaping.wan_egress,
                                &p.shaping.lan_egress,
                                &p.shaping.total,
                            ]
                            .iter()
                            .any(|s| {
                                !s.rules.is_empty() || s.default != scheduler::rate::Rate::Unlimited
                            }))
                })
            });
        Self {
            sites_by_completion: sites,
            policies,
            scenario: scenario.name.clone(),
            seed: scenario.seed,
            sites: outcome.site_names.len(),
            endpoints: outcome.completed_s.len(),
            release_bytes: outcome.release_bytes,
            chunks: scenario.chunk_count(),
            lower_bound: bound,
            product,
            single_relay: baseline(single),
            relay_per_branch: baseline(branch),
            wall_s,
            peak_rss_bytes,
        }
    }

    /// The report as a text table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "== {} (seed {}): {} sites, {} endpoints, release {} in {} chunks",
            self.scenario,
            self.seed,
            self.sites,
            self.endpoints,
            api::cli::human_bytes(self.release_bytes),
            self.chunks
        );
        let b = &self.lower_bound;
        let _ = writeln!(
            out,
            "lower bound T_min = {} (F/u0 {}, F/D_min {}, S·F/(u0+ΣU) {}, max N·F/(D+Σu) {}, F/d_min {})",
            dur(b.t_min_s),
            dur(b.origin_s),
            dur(b.site_down_s),
            dur(b.wan_upload_s),
            dur(b.site_swarm_s),
            dur(b.node_down_s)
        );
        let _ = writeln!(
            out,
            "{:<18} {:>10} {:>10} {:>10} {:>10} {:>9} {:>10}",
            "", "50 %", "90 %", "99 %", "100 %", "÷ T_min", "ORIGIN"
        );
        let row = |out: &mut String, name: &str, c: &Completion, r: Option<f64>, o: f64| {
            let t = |v: Option<f64>| v.map_or("—".to_string(), dur);
            let _ = writeln!(
                out,
                "{name:<18} {:>10} {:>10} {:>10} {:>10} {:>9} {:>8.2} F",
                t(c.p50_s),
                t(c.p90_s),
                t(c.p99_s),
                t(c.all_s),
                r.map_or("—".to_string(), |r| format!("{r:.3}")),
                o
            );
        };
        let p = &self.product;
        row(
            &mut out,
            "p2pd",
            &p.completion,
            p.ratio_to_bound,
            p.origin_egress_f,
        );
        for (name, b) in [
            ("relay per branch", &self.relay_per_branch),
            ("single relay", &self.single_relay),
        ] {
            row(
                &mut out,
                name,
                &b.completion,
                b.ratio_to_bound,
                b.origin_egress_f,
            );
        }
        if self.policies {
            let _ = writeln!(
                out,
                "rate schedules and download windows hold p2pd back here; T_min and the baselines leave them out"
            );
        }
        let listed = if self.sites_by_completion.len() > SITES_LISTED {
            let _ = writeln!(out, "slowest {SITES_LISTED} sites:");
            &self.sites_by_completion[..SITES_LISTED]
        } else {
            &self.sites_by_completion[..]
        };
        for s in listed {
            let t = |v: Option<f64>| v.map_or("—".to_string(), dur);
            let _ = writeln!(
                out,
                "  site {:<16} {:>4} endpoints complete from {:>10} to {:>10}",
                s.name,
                s.endpoints,
                t(s.first_s),
                t(s.all_s)
            );
        }
        let _ = writeln!(
            out,
            "baseline closed forms: relay per branch {}, single relay {}",
            dur(self.relay_per_branch.closed_form_s),
            dur(self.single_relay.closed_form_s)
        );
        let _ = writeln!(
            out,
            "p2pd WAN per site, × F: ingress p50 {:.3} p99 {:.3} max {:.3}; egress p50 {:.3} p99 {:.3} max {:.3}",
            p.site_wan_in_f.p50,
            p.site_wan_in_f.p99,
            p.site_wan_in_f.max,
            p.site_wan_out_f.p50,
            p.site_wan_out_f.p99,
            p.site_wan_out_f.max
        );
        if p.bytes_rebuilt > 0 {
            let _ = writeln!(
                out,
                "patches: endpoints rebuilt {} of chunks from patches instead of fetching them",
                api::cli::human_bytes(p.bytes_rebuilt)
            );
        }
        let _ = writeln!(
            out,
            "p2pd origin: {:.3} F during initial seeding (ended at {}), {:.3} F after",
            p.origin_seeding_f,
            p.seeding_ended_s.map_or("never".into(), dur),
            p.origin_egress_f - p.origin_seeding_f
        );
        let c = &p.control;
        let _ = writeln!(
            out,
            "p2pd control plane: {} in all ({} per endpoint, most {}); per site across the WAN at most {} in, {} out ({:.4} % of the release); {} site summaries; at most {} status entries per node",
            api::cli::human_bytes(c.bytes_total),
            api::cli::human_bytes(c.per_endpoint_p50),
            api::cli::human_bytes(c.per_endpoint_max),
            api::cli::human_bytes(c.site_wan_in_max),
            api::cli::human_bytes(c.site_wan_out_max),
            c.site_wan_share_max * 100.0,
            c.summaries,
            c.status_entries_max
        );
        let _ = writeln!(
            out,
            "p2pd control plane, no release moving: per site WAN {:.0} bit/s in, {:.0} out (keep-alives {:.0}); per node {:.0} bit/s (keep-alives {:.0})",
            c.steady.site_wan_in_bit_s,
            c.steady.site_wan_out_bit_s,
            c.steady.site_wan_keepalive_bit_s,
            c.steady.node_bit_s,
            c.steady.node_keepalive_bit_s
        );
        let _ = writeln!(
            out,
            "chunk bytes sent {} = received {} + lost {}; {} events, {} planner passes, {} snubs; log {}",
            p.bytes_sent, p.bytes_received, p.bytes_lost, p.events, p.plans, p.snubs, p.log_hash
        );
        let _ = writeln!(
            out,
            "simulated in {:.1} s wall, peak RSS {}",
            self.wall_s,
            api::cli::human_bytes(self.peak_rss_bytes)
        );
        out
    }
}

/// Seconds as a short human duration.
fn dur(s: f64) -> String {
    if !s.is_finite() {
        "never".into()
    } else if s < 120.0 {
        format!("{s:.1} s")
    } else if s < 7200.0 {
        format!("{:.1} min", s / 60.0)
    } else {
        format!("{:.1} h", s / 3600.0)
    }
}

/// Writes the completion curves (share of endpoints complete over time, log time axis) of
/// the product and the baselines as an SVG file.
pub fn plot(
    path: &std::path::Path,
    title: &str,
    t_min_s: f64,
    curves: &[(&str, Vec<f64>)],
) -> anyhow::Result<()> {
    use plotters::prelude::*;
    let finite = curves
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .filter(|t| t.is_finite() && *t > 0.0);
    let (lo, hi) = finite.fold((f64::INFINITY, 0.0f64), |(a, b), t| (a.min(t), b.max(t)));
    let lo = (lo.min(t_min_s) / 2.0).max(1e-3);
    let hi = (hi.max(t_min_s) * 1.5).max(lo * 10.0);
    let root = SVGBackend::new(path, (960, 540)).into_drawing_area();
    let e = |e: DrawingAreaErrorKind<_>| anyhow::anyhow!("plot: {e:?}");
    root.fill(&WHITE).map_err(e)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(56)
        .build_cartesian_2d((lo..hi).log_scale(), 0f64..100f64)
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc("seconds since publish (log scale)")
        .y_desc("% of endpoints complete")
        .draw()
        .map_err(e)?;
    let colours = [
        RGBColor(0, 114, 178),
        RGBColor(230, 159, 0),
        RGBColor(204, 121, 167),
    ];
    for (k, (name, times)) in curves.iter().enumerate() {
        let mut t: Vec<f64> = times.iter().copied().filter(|t| t.is_finite()).collect();
        t.sort_by(f64::total_cmp);
        let n = times.len().max(1) as f64;
        // A step curve: at each completion the share rises by one endpoint.
        let mut points = vec![(lo, 0.0)];
        let step = (t.len() / 2000).max(1);
        let mut below = 0.0;
        for (i, &x) in t.iter().enumerate() {
            if i % step == 0 || i + 1 == t.len() {
                let y = 100.0 * (i + 1) as f64 / n;
                points.push((x.max(lo), below));
                points.push((x.max(lo), y));
                below = y;
            }
        }
        if let Some(&(_, y)) = points.last() {
            points.push((hi, y));
        }
        let colour = colours[k % colours.len()];
        chart
            .draw_series(LineSeries::new(points, colour.stroke_width(2)))
            .map_err(e)?
            .label(*name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
            });
    }
    chart
        .draw_series(DashedLineSeries::new(
            vec![(t_min_s, 0.0), (t_min_s, 100.0)],
            6,
            4,
            BLACK.stroke_width(2),
        ))
        .map_err(e)?
        .label("lower bound T_min")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.stroke_width(2)));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()
        .map_err(e)?;
    root.present().map_err(e)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completion_shares_count_endpoints_that_never_finish() {
        let t: Vec<Option<f64>> = (1..=100).map(|i| Some(f64::from(i))).collect();
        let c = Completion::of(&t);
        assert_eq!(
            (c.p50_s, c.p90_s, c.p99_s, c.all_s),
            (Some(50.0), Some(90.0), Some(99.0), Some(100.0))
        );
        let mut t = t;
        t[99] = None;
        let c = Completion::of(&t);
        assert_eq!((c.p99_s, c.all_s), (Some(99.0), None));
        let s = Spread::of(&[1, 2, 3, 4], 2.0);
        assert_eq!((s.p50, s.max), (1.0, 2.0));
    }
}
