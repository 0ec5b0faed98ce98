//! Retention: removing releases and compacting the store reclaims the chunks only they
//! named, keeps every chunk a kept release names, and survives kill -9 at any instant.

use super::store::publish;
use super::*;
use ::store::Store;
use rand::{Rng, SeedableRng};
use std::fs;
use std::sync::Arc;

/// A tree of a shared 6 MiB file and `unique_mib` MiB of its own (random, seeded by
/// `version`), written to `dir`.
fn tree(dir: &Path, version: u64, unique_mib: usize) {
    let _ = fs::remove_dir_all(dir);
    fs::create_dir_all(dir).unwrap();
    fs::write(dir.join("base.bin"), random_bytes(0xba5e, 6 << 20)).unwrap();
    fs::write(
        dir.join("own.bin"),
        random_bytes(1000 + version, unique_mib << 20),
    )
    .unwrap();
}

/// Every chunk of every stored release reads back and verifies.
fn all_releases_whole(store: &Store) -> usize {
    let releases = store.releases().unwrap();
    for r in &releases {
        let id = r.id;
        let m = store.manifest(&id).unwrap().unwrap();
        for c in m.unique_chunks() {
            assert!(
                store.read_chunk(&c.id).unwrap().is_some(),
                "release {} lost chunk {}",
                r.id,
                c.id
            );
        }
    }
    releases.len()
}

#[test]
fn removing_releases_and_compacting_reclaims_the_chunks_only_they_named() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&dir.path().join("store")).unwrap());
    let src = dir.path().join("src");
    let mut ids = Vec::new();
    for v in 1..=4 {
        tree(&src, v, 4);
        ids.push(publish(&store, &src, v).id);
    }
    let before = store.stats().unwrap();
    // Nothing dead yet: nothing to do.
    let idle = store.compact().unwrap();
    assert_eq!(idle.packs_rewritten, 0, "{idle:?}");

    assert!(store.remove_release(&ids[0]).unwrap());
    assert!(store.remove_release(&ids[2]).unwrap());
    assert!(!store.remove_release(&ids[2]).unwrap(), "already removed");
    assert_eq!(all_releases_whole(&store), 2);
    // A chunk located before the compaction still reads after it, from its new place.
    let kept = store.manifest(&ids[3]).unwrap().unwrap().unique_chunks()[0].id;
    let located = store.locate(&kept).unwrap().unwrap();
    let done = store.compact().unwrap();
    assert_ne!(store.locate(&kept).unwrap().unwrap(), located);
    assert!(kept.matches(&store.read_located(&kept, located).unwrap()));
    let after = store.stats().unwrap();
    // What only v1 and v3 named: their 4 MiB files, chunk headers included.
    let only_removed = 2 * (4 << 20) as u64;
    assert!(
        done.bytes_reclaimed >= only_removed * 95 / 100,
        "{done:?} of {only_removed}"
    );
    assert_eq!(
        before.pack_bytes - after.pack_bytes,
        done.bytes_reclaimed,
        "{done:?}"
    );
    assert_eq!(done.pack_bytes_after, after.pack_bytes);
    assert_eq!(all_releases_whole(&store), 2);
    // Reopened: the same, and the removed releases' versions stay taken.
    drop(store);
    let store = Arc::new(Store::open(&dir.path().join("store")).unwrap());
    assert_eq!(all_releases_whole(&store), 2);
    assert_eq!(store.stats().unwrap().pack_bytes, after.pack_bytes);
    assert_eq!(store.highest_version("security/store").unwrap(), Some(4));
    assert_eq!(store.compact().unwrap().packs_rewritten, 0);
    let (audit, _) = store.audit_entries(None).unwrap();
    let removed: Vec<_> = audit
        .iter()
        .filter(|e| e.event.kind() == "release_removed")
        .collect();
    assert_eq!(removed.len(), 2, "{audit:?}");
    // A new version after compaction stores and reads as any.
    tree(&src, 5, 2);
    publish(&store, &src, 5);
    assert_eq!(all_releases_whole(&store), 3);
}

/// Rounds of compaction killed by SIGKILL. Set `P2PD_COMPACT_CRASH_ROUNDS` for a soak.
fn rounds() -> u64 {
    std::env::var("P2PD_COMPACT_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16)
}

/// Run by [`kill_9_during_compaction_loses_no_kept_chunk`] in a child process: compacts the
/// store named by `P2PD_COMPACT_CHILD` until killed.
#[test]
#[ignore = "the child of kill_9_during_compaction_loses_no_kept_chunk"]
fn compaction_child() {
    let Some(dir) = std::env::var_os("P2PD_COMPACT_CHILD") else {
        return;
    };
    let store = Store::open(Path::new(&dir)).unwrap();
    println!("opened");
    store.compact().unwrap();
    println!("compacted");
}

#[test]
fn kill_9_during_compaction_loses_no_kept_chunk() {
    let seed = 0xc0_u64;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let src = dir.path().join("src");
    let mut ids = Vec::new();
    let mut finished = 0;
    for round in 0..rounds() {
        // Two new versions, and the oldest removed past three: new work for the compaction.
        {
            let store = Arc::new(Store::open(&path).unwrap());
            assert!(all_releases_whole(&store) <= 3, "round {round}");
            for k in 0..2 {
                let v = round * 2 + k + 1;
                tree(&src, v, rng.random_range(2..6));
                ids.push(publish(&store, &src, v).id);
            }
            while ids.len() > 3 {
                let old = ids.remove(0);
                assert!(store.remove_release(&old).unwrap());
            }
        }
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--ignored",
                "--exact",
                "retention::compaction_child",
                "--nocapture",
            ])
            .env("P2PD_COMPACT_CHILD", &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(rng.random_range(0..120)));
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        if String::from_utf8_lossy(&out.stdout).contains("compacted") {
            finished += 1;
        }
        // Whatever the instant: every kept release is whole.
        let store = Store::open(&path).unwrap();
        assert_eq!(
            all_releases_whole(&store),
            ids.len(),
            "round {round} (seed {seed})"
        );
    }
    // A last compaction reclaims everything the removed releases alone named.
    let store = Store::open(&path).unwrap();
    store.compact().unwrap();
    let stats = store.stats().unwrap();
    let named: u64 = stats.chunk_bytes + stats.chunks * ::store::RECORD_HEADER_BYTES;
    assert_eq!(
        stats.pack_bytes, named,
        "only live records are left: {stats:?}"
    );
    assert_eq!(all_releases_whole(&store), ids.len());
    eprintln!(
        "{} rounds, {finished} compactions finished before the kill",
        rounds()
    );
}

#[test]
fn p2pctl_release_remove_reclaims_the_space_and_the_node_stops_listing_it() {
    let mut node = Node::init();
    node.start();
    let src = node.dir.path().join("src");
    tree(&src, 1, 3);
    let out = node.publish(&src, "security/keep", 1);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    tree(&src, 2, 3);
    let out = node.publish(&src, "security/keep", 2);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ids = node.release_ids();
    assert_eq!(ids.len(), 2);
    let v1 = node
        .ctl_json(&["releases"])
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["version"] == 1)
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .unwrap();
    let report = node.ctl_json(&["release", "remove", &v1[..12]]);
    assert_eq!(report["release"], v1.as_str());
    let reclaimed = report["reclaimed"]["bytes_reclaimed"].as_u64().unwrap();
    assert!(reclaimed >= (3 << 20) * 95 / 100, "{report}");
    assert_eq!(node.release_ids().len(), 1);
    // The kept version verifies whole; the removed one is gone, and a second removal says so.
    let v2 = node.release_ids().remove(0);
    let verified = node.ctl_json(&["verify", &v2]);
    assert!(
        verified["missing"].as_array().unwrap().is_empty(),
        "{verified}"
    );
    let again = node.ctl(&["release", "remove", &v1]);
    assert!(!again.status.success());
    let audit = String::from_utf8_lossy(&node.ctl(&["audit"]).stdout).to_string();
    assert!(audit.contains("removed"), "{audit}");
    // Text output names what came back.
    tree(&src, 3, 1);
    assert!(node.publish(&src, "security/keep", 3).status.success());
    let text = node.ctl(&["release", "remove", &v2[..12]]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.starts_with(&format!("removed {}: reclaimed", &v2[..12])),
        "{text}"
    );
    assert!(node.stop());
}

#[test]
fn keep_versions_removes_the_oldest_beyond_the_newest_and_protects_what_it_must() {
    use ::store::ReleaseSummary;
    use ::store::retention::beyond_keep;
    use std::collections::HashSet;
    let summary = |i: u8, channel: &str, version: u64| ReleaseSummary {
        id: protocol::ReleaseId([i; 32]),
        channel: channel.into(),
        version,
        severity: protocol::Severity::Low,
        cvss_tenths: None,
        emergency: false,
        download_windows: Vec::new(),
        install_windows: Vec::new(),
        created_unix_s: 0,
        expires_unix_s: 0,
        files: 0,
        total_bytes: 0,
        unique_chunks: 0,
        stored_unix_s: 0,
        signers: Vec::new(),
    };
    let all = vec![
        summary(1, "a", 1),
        summary(2, "a", 2),
        summary(3, "a", 3),
        summary(4, "b", 7),
    ];
    let none = HashSet::new();
    assert!(beyond_keep(&all, 0, &none).is_empty(), "0 keeps everything");
    assert_eq!(
        beyond_keep(&all, 2, &none),
        vec![protocol::ReleaseId([1; 32])]
    );
    assert_eq!(
        beyond_keep(&all, 1, &none),
        vec![protocol::ReleaseId([1; 32]), protocol::ReleaseId([2; 32])]
    );
    let protected: HashSet<_> = [protocol::ReleaseId([1; 32])].into();
    assert_eq!(
        beyond_keep(&all, 1, &protected),
        vec![protocol::ReleaseId([2; 32])]
    );
}

#[test]
fn keep_versions_keeps_the_newest_of_each_channel_in_a_running_daemon() {
    let mut node = Node::init();
    let config = node.data().join("p2pd.toml");
    let text = fs::read_to_string(&config)
        .unwrap()
        .replace("keep_versions = 0", "keep_versions = 2");
    fs::write(&config, text).unwrap();
    node.start();
    let src = node.dir.path().join("src");
    for v in 1..=4 {
        tree(&src, v, 1);
        let out = node.publish(&src, "security/kept", v);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let deadline = Instant::now() + Duration::from_secs(40);
    let versions = loop {
        let list = node.ctl_json(&["releases"]);
        let mut versions: Vec<u64> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["version"].as_u64().unwrap())
            .collect();
        versions.sort_unstable();
        if versions.len() <= 2 || Instant::now() > deadline {
            break versions;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(versions, vec![3, 4]);
    for id in node.release_ids() {
        let v = node.ctl_json(&["verify", &id]);
        assert!(v["missing"].as_array().unwrap().is_empty(), "{v}");
    }
    let audit = String::from_utf8_lossy(&node.ctl(&["audit"]).stdout).to_string();
    assert_eq!(audit.matches("removed").count(), 2, "{audit}");
    assert!(node.stop());
}
