//! kill -9 the daemon at seeded random points during publishes; after each restart the store
//! opens, every listed release verifies, and no partial release is listed.

use super::*;
use rand::{Rng, SeedableRng};
use std::collections::HashSet;
use std::fs;

/// Rounds of publish-then-kill. Set `P2PD_CRASH_ROUNDS` for a longer soak.
fn rounds() -> u64 {
    std::env::var("P2PD_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24)
}

#[test]
fn kill_9_during_publish_never_lists_a_partial_release() {
    let seed = std::env::var("P2PD_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed_u64);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut node = Node::init();
    let src = node.dir.path().join("src");
    fs::create_dir(&src).unwrap();
    // A shared base file (dedup across versions) plus per-round files.
    fs::write(src.join("base.bin"), random_bytes(seed, 8 << 20)).unwrap();
    let mut committed: HashSet<String> = HashSet::new();
    let mut killed_mid_publish = 0;

    for round in 0..rounds() {
        node.start();
        // The store opened; everything listed must be whole.
        let listed: HashSet<String> = node.release_ids().into_iter().collect();
        assert!(
            committed.is_subset(&listed),
            "round {round} (seed {seed}): a release whose publish succeeded is gone"
        );
        for id in &listed {
            let v = node.ctl_json(&["verify", id]);
            assert_eq!(v["signature_ok"], true, "round {round}: {v}");
            assert!(
                v["missing"].as_array().unwrap().is_empty()
                    && v["corrupt"].as_array().unwrap().is_empty(),
                "round {round} (seed {seed}): listed release {id} is partial: {v}"
            );
        }

        // Change part of the tree so each round writes new chunks.
        let len = rng.random_range(1usize..24) << 20;
        fs::write(
            src.join(format!("r{round}.bin")),
            random_bytes(seed ^ round, len),
        )
        .unwrap();
        let version = round + 1;
        let publisher = Command::new(env!("CARGO_BIN_EXE_p2pctl"))
            .arg("--socket")
            .arg(node.socket())
            .args(["--json", "publish"])
            .arg(&src)
            .args([
                "--channel",
                "security/crash",
                "--version",
                &version.to_string(),
                "--key",
            ])
            .arg(node.key())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let delay_ms = rng.random_range(0..600);
        std::thread::sleep(Duration::from_millis(delay_ms));
        node.kill9();
        let out = publisher.wait_with_output().unwrap();
        if out.status.success() {
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            committed.insert(v["release"]["id"].as_str().unwrap().to_owned());
        } else {
            killed_mid_publish += 1;
        }
    }
    // The final state too.
    node.start();
    let listed: HashSet<String> = node.release_ids().into_iter().collect();
    assert!(committed.is_subset(&listed));
    for id in &listed {
        let v = node.ctl_json(&["verify", id]);
        assert!(v["missing"].as_array().unwrap().is_empty(), "{v}");
    }
    // The test must really have interrupted publishes, or it tested nothing.
    assert!(
        killed_mid_publish >= 5,
        "only {killed_mid_publish} publishes were interrupted"
    );
    // No pack bytes beyond what the index knows survive a restart.
    let store = node.ctl_json(&["node"])["store"].clone();
    let packs_on_disk: u64 = fs::read_dir(node.data().join("store/packs"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert_eq!(packs_on_disk, store["pack_bytes"].as_u64().unwrap());
}
