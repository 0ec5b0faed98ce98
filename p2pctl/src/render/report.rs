//! The compliance report as text, CSV or Markdown.

use crate::when;

pub(crate) fn render_report(rows: &[store::fleet::ComplianceRow], format: &str) -> String {
    use std::fmt::Write;
    let dur = within;
    let secs = |s: Option<i64>| s.map_or_else(String::new, |s| s.to_string());
    let mut out = String::new();
    match format {
        "json" => {
            out = serde_json::to_string_pretty(rows).unwrap_or_default();
            out.push('\n');
        }
        "csv" => {
            out.push_str("release,channel,version,severity,published,nodes,installers,activated,activated_share,to_50_s,to_90_s,to_99_s,deadline_72h,missing,installed,covered,exceptions\n");
            for r in rows {
                let _ = writeln!(
                    out,
                    "{},{},{},{},{},{},{},{},{:.4},{},{},{},{},{},{},{},{}",
                    r.release,
                    csv_field(&r.channel),
                    r.version,
                    r.severity,
                    when(r.published_unix_s.saturating_mul(1000)),
                    r.nodes,
                    r.installers,
                    r.activated,
                    r.activated_share,
                    secs(r.to_50_s),
                    secs(r.to_90_s),
                    secs(r.to_99_s),
                    r.deadline,
                    r.missing_total,
                    r.installed,
                    r.covered,
                    r.exceptions
                );
            }
        }
        _ => {
            out.push_str("| release | channel | version | severity | published | applied | covered | 50 % | 90 % | 99 % | 72 h rule | missing | exceptions |\n");
            out.push_str("|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
            for r in rows {
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} | {} | {}/{} ({:.1} %) | {} | {} | {} | {} | {} | {} | {} |",
                    &r.release[..12.min(r.release.len())],
                    r.channel,
                    r.version,
                    r.severity,
                    when(r.published_unix_s.saturating_mul(1000)),
                    r.activated,
                    r.installers,
                    r.activated_share * 100.0,
                    r.covered,
                    dur(r.to_50_s),
                    dur(r.to_90_s),
                    dur(r.to_99_s),
                    r.deadline,
                    r.missing_total,
                    r.exceptions
                );
            }
            for r in rows.iter().filter(|r| r.missing_total > 0) {
                let _ = writeln!(
                    out,
                    "\n### {} v{} ({}): {} missing\n",
                    r.channel,
                    r.version,
                    &r.release[..12.min(r.release.len())],
                    api::cli::count(r.missing_total, "node")
                );
                if r.exceptions > 0 {
                    let _ = writeln!(
                        out,
                        "{} of them held back by an exception (deferred, not failed):",
                        r.exceptions
                    );
                    for x in &r.exception_reasons {
                        let _ = writeln!(
                            out,
                            "- {}: {}",
                            api::cli::count(u64::from(x.nodes), "node"),
                            x.reason
                        );
                    }
                    out.push('\n');
                }
                for m in &r.missing {
                    let _ = writeln!(out, "- {} ({}): {}", m.node, m.site, m.state);
                }
                for m in &r.missing_sites {
                    let _ = writeln!(
                        out,
                        "- {} of site {} (p2pctl fleet {} --site {} names them)",
                        api::cli::count(m.nodes, "node"),
                        m.site,
                        &r.release[..12.min(r.release.len())],
                        m.site
                    );
                }
            }
        }
    }
    out
}

/// A time to reach a share, at the precision the data has: it is read from install-delay
/// buckets ([`protocol::summary::install_bucket`]), so it is an upper bound, and the first
/// bucket only says "under a minute".
pub(crate) fn within(s: Option<i64>) -> String {
    let first = protocol::summary::INSTALL_BUCKET_FIRST_S as i64;
    match s {
        None => "-".into(),
        Some(s) if s <= first => format!("< {}", humantime::format_duration(secs(first))),
        Some(s) => format!("≤ {}", humantime::format_duration(secs(s))),
    }
}

fn secs(s: i64) -> std::time::Duration {
    std::time::Duration::from_secs(s.max(0) as u64)
}

/// A CSV field, quoted when it holds a comma, a quote or a line break.
pub(crate) fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_from_buckets_say_how_precise_they_are() {
        use protocol::summary::{install_bucket, install_bucket_end_s};
        // An install 1 s after publishing is in the first bucket: "under a minute", not "1m".
        assert_eq!(
            within(Some(install_bucket_end_s(install_bucket(1)))),
            "< 1m"
        );
        assert_eq!(within(Some(3600)), "≤ 1h");
        assert_eq!(within(None), "-");
    }

    #[test]
    fn csv_fields_are_quoted_only_when_they_must_be() {
        assert_eq!(csv_field("security/x"), "security/x");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
    }
}
