//! Writes the fleet status a node of site `bench` holds in a fleet of SITES × NODES nodes:
//! the records of its own site's NODES members, and the signed summary of every other site
//! (made from that site's records, as its aggregator would), into the node's store:
//! `fleet_records STORE_DIR RELEASE_HEX SITES NODES_PER_SITE`. States are spread as in a
//! distribution under way (most sites done, a few downloading or held back by their window, a
//! few with a failed installation, one not yet told). Prints the bytes written, the store
//! file's growth and the in-process aggregation time (the figure `benches/fleet.sh` measures
//! end to end).

use ed25519_dalek::SigningKey;
use protocol::status::{ReleaseState, ReleaseStatus, SignedStatus, StatusBody};
use protocol::summary::{Contact, SignedSummary, SummaryBody, site_releases};
use protocol::{NodeId, ReleaseId};
use std::path::PathBuf;
use std::time::Instant;
use store::Store;
use store::fleet::Fleet;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, dir, release, sites, per_site] = args.as_slice() else {
        anyhow::bail!("usage: fleet_records STORE_DIR RELEASE_HEX SITES NODES_PER_SITE");
    };
    let dir = PathBuf::from(dir);
    let release: ReleaseId = release.parse()?;
    let (sites, per_site): (u32, u32) = (sites.parse()?, per_site.parse()?);
    let file = dir.join("index.redb");
    let before = std::fs::metadata(&file).map_or(0, |m| m.len());
    let store = Store::open(&dir)?;
    let now = jiff::Timestamp::now().as_second();
    let mut records = Vec::new();
    let mut summaries = Vec::new();
    for s in 0..sites {
        // Site 0 is the node's own: its records are kept; every other site is a summary.
        let site = if s == 0 {
            "bench".to_string()
        } else {
            format!("branch-{s:03}")
        };
        let mut bodies = Vec::new();
        let mut aggregator = None;
        for n in 0..per_site {
            let i = s * per_site + n;
            let mut seed = [0u8; 32];
            seed[..4].copy_from_slice(&i.to_le_bytes());
            seed[31] = 1;
            let key = SigningKey::from_bytes(&seed);
            // Sites differ as they would: a few behind (still downloading, or held back by
            // their window), a few with a node whose installation failed, one that has not
            // heard of it yet; most done.
            let (state, have, error) = if s % 61 == 7 && n == 0 {
                (
                    Some(ReleaseState::Failed),
                    16_384,
                    Some("apply command exited with status 3".to_string()),
                )
            } else if s % 17 == 3 && n < 30 {
                (Some(ReleaseState::Downloading), 4_000 + 300 * n, None)
            } else if s % 43 == 11 {
                (Some(ReleaseState::PausedByWindow), 1_000, None)
            } else if s == sites / 2 {
                (None, 0, None)
            } else if n % 7 == 0 {
                (Some(ReleaseState::Complete), 16_384, None)
            } else {
                (Some(ReleaseState::Activated), 16_384, None)
            };
            let body = StatusBody {
                node: NodeId(key.verifying_key().to_bytes()),
                site: site.clone(),
                installs: true,
                seq: 1,
                at_unix_s: now,
                releases: state
                    .map(|state| ReleaseStatus {
                        release,
                        channel: "security/openssl".into(),
                        version: 1,
                        published_unix_s: now - 3600,
                        severity: protocol::Severity::Critical,
                        state,
                        chunks_have: have,
                        chunks_total: 16_384,
                        since_unix_s: now - i64::from(i % 600),
                        until_unix_s: (state == ReleaseState::PausedByWindow).then_some(now + 7200),
                        error,
                        ring: 0,
                    })
                    .into_iter()
                    .collect(),
            };
            if s == 0 {
                records.push((body.node, SignedStatus::sign(&body, &key).encode()));
            }
            aggregator.get_or_insert(key);
            bodies.push(body);
        }
        if s > 0 {
            let key = aggregator.expect("a site has nodes");
            let refs: Vec<&StatusBody> = bodies.iter().collect();
            let node = NodeId(key.verifying_key().to_bytes());
            let body = SummaryBody {
                site: site.clone(),
                aggregator: node,
                seq: 1,
                at_unix_s: now,
                nodes: bodies.len() as u32,
                installers: bodies.len() as u32,
                contacts: vec![Contact {
                    node,
                    wan: "192.0.2.1:7402".parse()?,
                }],
                releases: site_releases(&refs, None),
            };
            summaries.push((site, SignedSummary::sign(&body, &key).encode()));
        }
    }
    let record_bytes: usize = records.iter().map(|(_, b)| b.len()).sum();
    let summary_bytes: usize = summaries.iter().map(|(_, b)| b.len()).sum();
    let counts = (records.len(), summaries.len());
    store.put_fleet(&store::fleet::Stored {
        records,
        summaries,
        ..Default::default()
    })?;
    drop(store);
    let after = std::fs::metadata(&file)?.len();
    let store = Store::open(&dir)?;
    let fleet = Fleet::from_stored("bench", store.fleet()?);
    let start = Instant::now();
    let report = fleet.report(&release, None, now);
    let took = start.elapsed();
    println!(
        "{} records ({record_bytes} bytes encoded) and {} summaries ({summary_bytes} bytes) for {} nodes; store grew {} bytes; in-process report {:.2} ms ({} hold it)",
        counts.0,
        counts.1,
        report.nodes,
        after.saturating_sub(before),
        took.as_secs_f64() * 1e3,
        report.states.holding()
    );
    Ok(())
}
