//! A month of the bank's releases in one node's fleet ledgers: `fleet_month STORE_DIR SITES
//! NODES_PER_SITE RELEASES DAYS`. The node is a member of site `bench`; it is fed what a month
//! brings it: its site-mates' records (each naming at most 32 releases, as
//! `scheduler::ledger::pick` sends them) and every other site's summaries (at most 32
//! releases each, so a site's month takes many). Every node installs every release an hour
//! after it is published but a few: one node in 500 fails each, and every tenth release is
//! critical. Then it times the compliance report over all the releases (the work behind
//! `p2pctl report`), checks its counts against what was fed, writes the ledgers to the store
//! and loads them back, and prints the figures with the process's peak memory.
//!
//! `cargo run --release -p benches --bin fleet_month -- /tmp/month 500 50 300 30` is the
//! bank's month (issue bar: the report ≤ 2 s and ≤ 200 MiB on one node).

use ed25519_dalek::SigningKey;
use protocol::status::{
    ReleaseState, ReleaseStatus, STATUS_RELEASES_MAX, SignedStatus, StatusBody,
};
use protocol::summary::{SUMMARY_RELEASES_MAX, SignedSummary, SummaryBody, site_releases};
use protocol::{NodeId, ReleaseId, Severity};
use std::path::PathBuf;
use std::time::Instant;
use store::Store;
use store::fleet::Fleet;

/// A line of `/proc/self/status`, in KiB (0 where there is none).
fn proc_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn key(i: u32) -> SigningKey {
    let mut seed = [0u8; 32];
    seed[..4].copy_from_slice(&i.to_le_bytes());
    seed[31] = 7;
    SigningKey::from_bytes(&seed)
}

/// Where release `r` ends on node `i`: installed an hour after publishing, or failed for
/// one node in 500.
fn entry(r: u32, i: u32, start: i64, spacing: i64) -> ReleaseStatus {
    let published = start + i64::from(r) * spacing;
    let failed = (i + r * 7) % 500 == 0;
    ReleaseStatus {
        release: ReleaseId(*blake3::hash(&r.to_le_bytes()).as_bytes()),
        channel: format!("security/c{}", r % 40),
        // Each channel's versions in order; a node that installed a newer one is covered.
        version: u64::from(r / 40) + 1,
        published_unix_s: published,
        severity: if r % 10 == 0 {
            Severity::Critical
        } else {
            Severity::Medium
        },
        state: if failed {
            ReleaseState::Failed
        } else {
            ReleaseState::Activated
        },
        chunks_have: 100,
        chunks_total: 100,
        since_unix_s: published + 3600,
        until_unix_s: None,
        error: failed.then(|| "apply command exited with status 3".to_string()),
        ring: 0,
    }
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, dir, sites, per_site, releases, days] = args.as_slice() else {
        anyhow::bail!("usage: fleet_month STORE_DIR SITES NODES_PER_SITE RELEASES DAYS");
    };
    let dir = PathBuf::from(dir);
    let (sites, per_site, releases, days): (u32, u32, u32, i64) = (
        sites.parse()?,
        per_site.parse()?,
        releases.parse()?,
        days.parse()?,
    );
    let now = jiff::Timestamp::now().as_second();
    let start = now - days * 86_400;
    let spacing = days * 86_400 / i64::from(releases.max(1));
    let fleet = Fleet::new("bench");
    let fed = Instant::now();
    let (mut record_bytes, mut summary_bytes) = (0usize, 0usize);
    for s in 0..sites {
        let site = if s == 0 {
            "bench".to_string()
        } else {
            format!("branch-{s:03}")
        };
        let bodies: Vec<StatusBody> = (0..per_site)
            .map(|n| {
                let i = s * per_site + n;
                StatusBody {
                    node: NodeId(key(i).verifying_key().to_bytes()),
                    site: site.clone(),
                    installs: true,
                    seq: 0,
                    at_unix_s: now,
                    releases: (0..releases).map(|r| entry(r, i, start, spacing)).collect(),
                }
            })
            .collect();
        if s == 0 {
            // The site's records, 32 releases at a time, in the order they settled.
            for (n, b) in bodies.iter().enumerate() {
                let k = key(n as u32);
                for (c, chunk) in b.releases.chunks(STATUS_RELEASES_MAX).enumerate() {
                    let body = StatusBody {
                        seq: c as u64 + 1,
                        at_unix_s: chunk[chunk.len() - 1].since_unix_s,
                        releases: chunk.to_vec(),
                        ..b.clone()
                    };
                    let signed = SignedStatus::sign(&body, &k).encode();
                    record_bytes += signed.len();
                    fleet.offer_record(&signed)?;
                }
            }
            continue;
        }
        // The site's summaries over the month, 32 releases at a time.
        let refs: Vec<&StatusBody> = bodies.iter().collect();
        let mut all = site_releases(&refs, None);
        all.sort_by_key(|r| r.published_unix_s);
        let agg = key(s * per_site);
        for (c, chunk) in all.chunks(SUMMARY_RELEASES_MAX).enumerate() {
            let body = SummaryBody {
                site: site.clone(),
                aggregator: NodeId(agg.verifying_key().to_bytes()),
                seq: c as u64 + 1,
                at_unix_s: chunk[chunk.len() - 1].published_unix_s + 3600,
                nodes: per_site,
                installers: per_site,
                contacts: Vec::new(),
                releases: chunk.to_vec(),
            };
            let signed = SignedSummary::sign(&body, &agg).encode();
            summary_bytes += signed.len();
            fleet.offer_summary(&signed, now)?;
        }
    }
    let fed_s = fed.elapsed().as_secs_f64();
    let rss_fed = proc_kib("VmRSS:");

    let t = Instant::now();
    let facts = fleet.releases_since(start);
    let rows = fleet.compliance(&facts, now);
    let report_s = t.elapsed().as_secs_f64();
    let (rss_report, peak_report) = (proc_kib("VmRSS:"), proc_kib("VmHWM:"));
    let json = serde_json::to_vec(&rows)?;
    anyhow::ensure!(rows.len() == releases as usize, "{} rows", rows.len());
    let nodes = u64::from(sites * per_site);
    for (r, row) in rows.iter().enumerate() {
        let failed = (0..sites * per_site)
            .filter(|i| (i + r as u32 * 7) % 500 == 0)
            .count() as u64;
        // A node whose install failed is covered by the channel's next version when it has
        // one (the next release of the channel comes 40 releases later).
        let covered_later = r as u32 + 40 < releases;
        let want = if covered_later { nodes } else { nodes - failed };
        anyhow::ensure!(
            row.installers == nodes && row.activated == want,
            "release {r}: {} of {} applied, expected {want} of {nodes}",
            row.activated,
            row.installers
        );
    }

    let std = Instant::now();
    let json_len = json.len();
    let store = Store::open(&dir)?;
    store.put_fleet(&fleet.take_dirty())?;
    drop(store);
    let stored_s = std.elapsed().as_secs_f64();
    let file = std::fs::metadata(dir.join("index.redb"))?.len();
    let t = Instant::now();
    let again = Fleet::from_stored("bench", Store::open(&dir)?.fleet()?);
    let load_s = t.elapsed().as_secs_f64();
    let rows_again = again.compliance(&again.releases_since(start), now);
    anyhow::ensure!(
        serde_json::to_vec(&rows_again)? == json,
        "the report differs after loading the store"
    );
    println!(
        "fleet of {sites} sites x {per_site} nodes, {releases} releases over {days} days: \
         records {:.1} MiB and summaries {:.1} MiB fed in {fed_s:.1} s; \
         report over {} releases {:.3} s ({} KiB of JSON), every count exact; \
         RSS after feeding {:.0} MiB, after the report {:.0} MiB, peak until then {:.0} MiB; \
         store {:.1} MiB written in {stored_s:.1} s, loaded in {load_s:.1} s, the same report \
         after loading (peak with both copies {:.0} MiB)",
        record_bytes as f64 / 1048576.0,
        summary_bytes as f64 / 1048576.0,
        rows.len(),
        report_s,
        json_len / 1024,
        rss_fed as f64 / 1024.0,
        rss_report as f64 / 1024.0,
        peak_report as f64 / 1024.0,
        file as f64 / 1048576.0,
        proc_kib("VmHWM:") as f64 / 1024.0,
    );
    Ok(())
}
