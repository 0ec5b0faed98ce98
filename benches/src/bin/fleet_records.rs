//! Writes the status records of a simulated fleet into a node's store, as gossip would have
//! left them: `fleet_records STORE_DIR RELEASE_HEX SITES NODES_PER_SITE`. States are spread
//! as in a distribution under way (most sites done, a few downloading or held back by their
//! window, a few with a failed installation, one not yet told). Prints the store file's growth in bytes and
//! the in-process aggregation time (the figure `benches/fleet.sh` measures end to end).

use ed25519_dalek::SigningKey;
use node::fleet::Fleet;
use node::store::Store;
use protocol::status::{ReleaseState, ReleaseStatus, SignedStatus, StatusBody};
use protocol::{NodeId, ReleaseId};
use std::path::PathBuf;
use std::time::Instant;

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
    for s in 0..sites {
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
                site: format!("branch-{s:03}"),
                seq: 1,
                at_unix_s: now,
                releases: state
                    .map(|state| ReleaseStatus {
                        release,
                        state,
                        chunks_have: have,
                        chunks_total: 16_384,
                        since_unix_s: now - i64::from(i % 600),
                        error,
                    })
                    .into_iter()
                    .collect(),
            };
            let signed = SignedStatus::sign(&body, &key).encode();
            records.push((body.node, signed));
        }
    }
    let record_bytes: usize = records.iter().map(|(_, b)| b.len()).sum();
    store.put_fleet_records(&records)?;
    drop(store);
    let after = std::fs::metadata(&file)?.len();
    let store = Store::open(&dir)?;
    let fleet = Fleet::from_stored(store.fleet_records()?);
    let start = Instant::now();
    let report = fleet.report(&release, now);
    let took = start.elapsed();
    println!(
        "records {} ({record_bytes} bytes encoded); store grew {} bytes; in-process report {:.2} ms ({} hold it)",
        records.len(),
        after.saturating_sub(before),
        took.as_secs_f64() * 1e3,
        report.states.holding()
    );
    Ok(())
}
