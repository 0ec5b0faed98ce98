//! The tables printed after a distribution.

use crate::fleet::Distribution;
use api::cli::human_bytes;
use std::fmt::Write;

/// A distribution as a text report: per-node completion, WAN and LAN bytes, the bound.
pub fn render(title: &str, d: &Distribution) -> String {
    let mut out = String::new();
    let f = d.bytes.max(1) as f64;
    let _ = writeln!(
        out,
        "== {title}: release {} ({})",
        &d.release[..12],
        human_bytes(d.bytes)
    );
    if d.new_bytes < d.bytes {
        let _ = writeln!(
            out,
            "   new chunks in this version: {}",
            human_bytes(d.new_bytes)
        );
    }
    let _ = writeln!(out, "{:<14} {:>10} {:>12}", "NODE", "DONE (s)", "RECEIVED");
    for ((name, t), (_, r)) in d.completion_s.iter().zip(d.received.iter().skip(1)) {
        let _ = writeln!(out, "{name:<14} {t:>10.2} {:>12}", human_bytes(*r));
    }
    let all = d.all_complete_s();
    let _ = writeln!(
        out,
        "all complete after {all:.2} s; lower bound {:.2} s; ratio {:.2}",
        d.lower_bound_s,
        if d.lower_bound_s > 0.0 {
            all / d.lower_bound_s
        } else {
            0.0
        }
    );
    let _ = writeln!(
        out,
        "origin WAN egress {} ({:.2} x release)",
        human_bytes(d.origin_egress),
        d.origin_egress as f64 / f
    );
    for (site, bytes) in &d.site_wan_ingress {
        let _ = writeln!(
            out,
            "site {site:<10} WAN ingress {:>10} ({:.2} x release)",
            human_bytes(*bytes),
            *bytes as f64 / f
        );
    }
    for ((site, peak), (_, cap)) in d
        .site_wan_ingress_peak_10s
        .iter()
        .zip(&d.site_wan_ingress_cap)
    {
        let vs_cap = cap
            .map(|c| format!(" = {:.3} x its cap {}/s", peak / c, human_bytes(c as u64)))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "site {site:<10} WAN ingress, highest 10 s average {:>8}/s{vs_cap}",
            human_bytes(*peak as u64)
        );
    }
    let _ = writeln!(
        out,
        "LAN chunk bytes, all nodes: {}",
        human_bytes(d.lan_bytes)
    );
    let _ = writeln!(
        out,
        "control bytes, all planes, all nodes: {} ({} per node, {:.3} % of the release); by carrier:",
        human_bytes(d.control_bytes_total),
        human_bytes(d.control_bytes_per_node as u64),
        d.control_bytes_total as f64 * 100.0 / f
    );
    for (kind, bytes) in d.control_by_kind.iter().filter(|(_, b)| *b > 0) {
        let _ = writeln!(out, "  {kind:<20} {:>10}", human_bytes(*bytes));
    }
    let payload_max = d
        .chunk_payload_wan_ingress
        .iter()
        .map(|(_, b)| *b)
        .max()
        .unwrap_or(0);
    let dropped: u64 = d.wan_dropped_packets.iter().map(|(_, n)| n).sum();
    let _ = writeln!(
        out,
        "chunk payload from other sites, most any site took: {} ({:.3} x release); WAN packets dropped {dropped}; this machine's {} cores {:.0} % busy until the last completion",
        human_bytes(payload_max),
        payload_max as f64 / f,
        d.cpus,
        d.cpu_busy * 100.0
    );
    if d.lan_data_via_relay > 0 {
        let _ = writeln!(
            out,
            "WARNING: {} of data-plane traffic between nodes of one site went through the relay",
            human_bytes(d.lan_data_via_relay)
        );
    }
    for (((site, chunks), (_, cin)), (_, cout)) in d
        .chunk_wan_ingress
        .iter()
        .zip(&d.control_wan_ingress)
        .zip(&d.control_wan_egress)
    {
        let _ = writeln!(
            out,
            "site {site:<10} WAN: chunks in {:>10} ({:.3} x release); control in {:>9} ({:.3} %), out {:>9} ({:.3} %)",
            human_bytes(*chunks),
            *chunks as f64 / f,
            human_bytes(*cin),
            *cin as f64 * 100.0 / f,
            human_bytes(*cout),
            *cout as f64 * 100.0 / f
        );
    }
    out
}
