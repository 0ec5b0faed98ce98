//! Compaction against the disk's own speed (`benches/compaction.sh`): a store of 8 releases
//! of 128 MiB of their own (plus a shared 16 MiB), half of them removed, compacted; then
//! `dd if=/dev/zero bs=1M conv=fsync` writes as many bytes as the compaction copied, on the
//! same disk. Prints what was reclaimed against what only the removed releases named, and
//! the two speeds side by side.
//!
//! Usage: `compaction DIR [UNIQUE_MIB]` (DIR on the disk to measure; emptied first).

use protocol::{
    ChunkingParams, MANIFEST_FORMAT_VERSION, Manifest, PublisherKey, Severity, TrustPolicy,
    TrustedPublisher, sign_manifest, verify_release,
};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;
use store::Store;
use store::ingest::{self, Progress};

fn random_file(path: &Path, seed: u64, mib: usize) -> anyhow::Result<()> {
    let mut f = std::fs::File::create(path)?;
    let mut state = blake3::Hasher::new_derive_key("p2pd compaction bench");
    state.update(&seed.to_le_bytes());
    let mut xof = state.finalize_xof();
    let mut buf = vec![0u8; 1 << 20];
    for _ in 0..mib {
        xof.fill(&mut buf);
        f.write_all(&buf)?;
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = std::path::PathBuf::from(
        args.next()
            .ok_or_else(|| anyhow::anyhow!("usage: compaction DIR [UNIQUE_MIB]"))?,
    );
    let unique_mib: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(128);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let key = ed25519_dalek::SigningKey::from_bytes(&[5; 32]);
    let policy = TrustPolicy {
        publishers: vec![TrustedPublisher {
            name: "bench".into(),
            key: PublisherKey(key.verifying_key().to_bytes()),
            channel_prefixes: vec![],
            approver: false,
        }],
        threshold: 1,
        rules: Vec::new(),
    };
    let store = Arc::new(Store::open(&dir.join("store"))?);
    let src = dir.join("src");
    let now = jiff::Timestamp::now().as_second();
    let mut ids = Vec::new();
    for v in 1..=8u64 {
        let _ = std::fs::remove_dir_all(&src);
        std::fs::create_dir_all(&src)?;
        random_file(&src.join("shared.bin"), 0, 16)?;
        random_file(&src.join("own.bin"), v, unique_mib)?;
        let tree = ingest::scan(&src)?;
        let mut session = store.begin_ingest();
        let entries = ingest::ingest(
            &tree,
            ChunkingParams::default(),
            &mut session,
            &Arc::new(Progress::default()),
        )?;
        let manifest = Manifest {
            format_version: MANIFEST_FORMAT_VERSION,
            channel: "bench/compaction".into(),
            version: v,
            created_unix_s: now,
            expires_unix_s: now + 86_400,
            severity: Severity::High,
            cvss: None,
            emergency: false,
            download_windows: Vec::new(),
            install_windows: Vec::new(),
            chunking: ChunkingParams::default(),
            entries,
            total_bytes: tree.total_bytes,
            rollout: Default::default(),
            patches: Vec::new(),
        };
        let env = sign_manifest(&manifest, &key).encode();
        let release = verify_release(&env, &policy, now, |c| {
            store.highest_version(c).ok().flatten()
        })?;
        session.commit(Some(&release), now)?;
        ids.push(release.id);
    }
    let _ = std::fs::remove_dir_all(&src);
    for id in ids.iter().step_by(2) {
        store.remove_release(id)?;
    }
    let only_removed = (4 * unique_mib as u64) << 20;
    let t = Instant::now();
    let r = store.compact()?;
    let compact_s = t.elapsed().as_secs_f64();
    let copy_mib_s = r.bytes_copied as f64 / (1 << 20) as f64 / compact_s;

    let dd_mib = (r.bytes_copied >> 20).max(1);
    let t = Instant::now();
    let dd = std::process::Command::new("dd")
        .arg("if=/dev/zero")
        .arg(format!("of={}", dir.join("dd.bin").display()))
        .args(["bs=1M", &format!("count={dd_mib}"), "conv=fsync"])
        .output()?;
    anyhow::ensure!(
        dd.status.success(),
        "dd: {}",
        String::from_utf8_lossy(&dd.stderr)
    );
    let dd_s = t.elapsed().as_secs_f64();
    let dd_mib_s = dd_mib as f64 / dd_s;
    let _ = std::fs::remove_file(dir.join("dd.bin"));
    println!(
        "{}",
        serde_json::json!({
            "only_removed_bytes": only_removed,
            "bytes_reclaimed": r.bytes_reclaimed,
            "reclaimed_share": r.bytes_reclaimed as f64 / only_removed as f64,
            "bytes_copied": r.bytes_copied,
            "compact_s": compact_s,
            "compact_copy_mib_s": copy_mib_s,
            "dd_mib": dd_mib,
            "dd_s": dd_s,
            "dd_mib_s": dd_mib_s,
            "speed_ratio": copy_mib_s / dd_mib_s,
        })
    );
    Ok(())
}
