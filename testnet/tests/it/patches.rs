//! A new version moves as patches against the files the receiver holds: real p2pd
//! processes on loopback, through the emulated WAN.

use api::ReleaseProgress;
use std::path::{Path, PathBuf};
use std::time::Duration;
use testnet::fleet::{Fleet, tree_digest, workdir};
use testnet::scenario::Scenario;

fn random(seed: u64, len: usize) -> Vec<u8> {
    use rand::{RngCore, SeedableRng};
    let mut v = vec![0u8; len];
    rand_chacha::ChaCha8Rng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

/// A rebuilt library: an insertion near its start (which shifts every later byte, so few
/// chunks after it match its predecessor's), a few bytes changed throughout.
fn rebuilt(old: &[u8], seed: u64) -> Vec<u8> {
    let mut new = old[..5000].to_vec();
    new.extend_from_slice(&random(seed, 3000));
    new.extend_from_slice(&old[5000..]);
    for i in (0..new.len()).step_by(150_000) {
        new[i] ^= 0x5a;
    }
    new
}

/// Writes version `v` of the tree under `dir`: a library (rebuilt each version, under a
/// versioned name), release notes (a line edited), data that never changes.
fn tree(dir: &Path, v: u64, lib: &[u8]) -> PathBuf {
    let root = dir.join(format!("tree-v{v}"));
    std::fs::create_dir_all(root.join("lib")).unwrap();
    std::fs::write(root.join(format!("lib/libfoo.so.1.{v}")), lib).unwrap();
    let notes: String = (0..2000)
        .map(|i| {
            if i == 1000 {
                format!("line {i}: version {v}\n")
            } else {
                format!("line {i} of the release notes\n")
            }
        })
        .collect();
    std::fs::write(root.join("NOTES"), notes).unwrap();
    std::fs::write(root.join("data.bin"), random(7, 400 << 10)).unwrap();
    root
}

/// The origin, site `a` of `a_nodes` nodes and site `b` of one, on a 5 ms WAN.
fn two_sites(name: &str, seed: u64, a_nodes: usize) -> Scenario {
    Scenario::parse(&format!(
        "name = '{name}'\nseed = {seed}\ntimeout_s = 240\n[release]\nsize_mib = 1\n\
         [origin]\nup_mbit = 200\n[wan]\nlatency_ms = 5\n\
         [[sites]]\nname = 'a'\nnodes = {a_nodes}\n[[sites]]\nname = 'b'\nnodes = 1\n"
    ))
    .unwrap()
}

async fn progress(fleet: &Fleet, i: usize, id: &str) -> ReleaseProgress {
    fleet
        .status(i)
        .await
        .unwrap()
        .releases
        .into_iter()
        .find(|r| r.id == id)
        .unwrap()
}

/// Exports `id` from node `i` and compares it with `tree`.
async fn export_matches(fleet: &Fleet, i: usize, id: &str, tree: &Path) {
    let out = fleet.dir.join(format!("export-{i}-{}", &id[..12]));
    let done = fleet
        .ctl(i, &["export", id, &out.display().to_string()])
        .unwrap();
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    assert_eq!(
        tree_digest(&out).unwrap(),
        tree_digest(tree).unwrap(),
        "node {i}"
    );
}

/// Publishes `tree` as `version` of the fleet's channel on node `i`, with more `p2pctl
/// publish` arguments; returns the release id and `p2pctl publish --json`'s report.
fn publish_at(
    fleet: &Fleet,
    i: usize,
    tree: &Path,
    version: u64,
    extra: &[&str],
) -> (String, serde_json::Value) {
    let (tree, channel, version, key) = (
        tree.display().to_string(),
        format!("testnet/{}", fleet.scenario.name),
        version.to_string(),
        fleet.publisher_key().display().to_string(),
    );
    let mut args = vec![
        "--json",
        "publish",
        &tree,
        "--channel",
        &channel,
        "--version",
        &version,
        "--key",
        &key,
    ];
    args.extend_from_slice(extra);
    let published = fleet.ctl(i, &args).unwrap();
    assert!(
        published.status.success(),
        "{}",
        String::from_utf8_lossy(&published.stderr)
    );
    // The JSON output is the stream of events; the last line holds the release.
    let text = String::from_utf8_lossy(&published.stdout);
    let p: serde_json::Value = serde_json::from_str(text.trim())
        .or_else(|_| serde_json::from_str(text.lines().last().unwrap_or_default()))
        .unwrap();
    (p["release"]["id"].as_str().unwrap().to_owned(), p)
}

/// Flips a byte of the first chunk of `bytes` wherever node `i`'s store packs hold it (the
/// node is stopped).
fn corrupt_in_packs(fleet: &Fleet, i: usize, bytes: &[u8]) {
    let needle = &bytes[..64];
    let packs = fleet.nodes[i].data.join("store").join("packs");
    let mut hit = false;
    for e in std::fs::read_dir(&packs).unwrap() {
        let path = e.unwrap().path();
        let mut pack = std::fs::read(&path).unwrap();
        if let Some(at) = pack.windows(needle.len()).position(|w| w == needle) {
            pack[at + 10] ^= 0xff;
            std::fs::write(&path, &pack).unwrap();
            hit = true;
        }
    }
    assert!(hit, "the chunk is in no pack of node {i}");
}

/// One site of three nodes and one of a single node, all holding version 1. Version 2
/// rebuilds the library: a node that holds version 1 fetches patches and rebuilds the
/// files, verifying every chunk; one that removed version 1 fetches the chunks; one whose
/// copy of the old library is damaged on disk tries the patch, finds the rebuilt file
/// wrong and fetches the chunks. A node that was down for versions 2 and 3 comes back and
/// patches from version 1. Every one exports exactly what was published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_version_moves_as_patches_and_every_node_ends_byte_identical() {
    let s = two_sites("patches", 5, 3);
    let (_guard, dir) = workdir();
    let mut fleet = Fleet::start(s, &dir, true).await.unwrap();
    fleet.wait_connected(Duration::from_secs(90)).await.unwrap();
    let wait = Duration::from_secs(120);
    let lib1 = random(1, 3 << 20);
    let t1 = tree(&dir, 1, &lib1);
    let v1 = fleet.publish(&t1, 1).unwrap();
    for i in 1..fleet.nodes.len() {
        fleet.wait_complete(i, &v1, wait).await.unwrap();
    }
    // Node 2's copy of the old library is damaged on disk; node 3 removes version 1;
    // node 4 (site b) goes down.
    fleet.kill(2);
    corrupt_in_packs(&fleet, 2, &lib1);
    fleet.start_node(2).unwrap();
    fleet.wait_ready(2).await.unwrap();
    let removed = fleet.ctl(3, &["release", "remove", &v1]).unwrap();
    assert!(
        removed.status.success(),
        "{}",
        String::from_utf8_lossy(&removed.stderr)
    );
    fleet.kill(4);

    let lib2 = rebuilt(&lib1, 2);
    let t2 = tree(&dir, 2, &lib2);
    let (v2, p) = publish_at(&fleet, 0, &t2, 2, &[]);
    // The library and the notes move as patches; each much smaller than its chunks.
    assert_eq!(p["patches"], 2, "{p}");
    let (patch_bytes, chunk_bytes) = (
        p["patch_bytes"].as_u64().unwrap(),
        p["patched_chunk_bytes"].as_u64().unwrap(),
    );
    assert!(patch_bytes * 20 < chunk_bytes, "{p}");
    for i in 1..=3 {
        fleet.wait_complete(i, &v2, wait).await.unwrap();
        export_matches(&fleet, i, &v2, &t2).await;
    }
    // Node 1 rebuilt both files from patches.
    let r1 = progress(&fleet, 1, &v2).await;
    assert!(r1.bytes_rebuilt >= lib2.len() as u64 / 2, "{r1:?}");
    assert_eq!(r1.bytes_patches, patch_bytes, "{r1:?}");
    // Node 3 had no base: chunks only.
    let r3 = progress(&fleet, 3, &v2).await;
    assert_eq!((r3.bytes_rebuilt, r3.bytes_patches), (0, 0), "{r3:?}");
    // Node 2 tried the library's patch, whose rebuilt file did not verify, and fetched its
    // chunks; the notes' patch rebuilt its file.
    let r2 = progress(&fleet, 2, &v2).await;
    assert!(r2.bytes_rebuilt < lib2.len() as u64 / 2, "{r2:?}");
    let log = |i: usize| std::fs::read_to_string(fleet.nodes[i].data.join("p2pd.log")).unwrap();
    assert!(
        log(2).contains("patch did not rebuild the file"),
        "node 2's log says nothing of the failed patch"
    );
    // Nodes that held version 1 learnt version 2's manifest as a delta against it; node 3,
    // which removed it, whole.
    let delta = |i: usize| {
        log(i)
            .lines()
            .any(|l| l.contains("manifest learnt as a delta") && l.contains(&v2))
    };
    assert!(delta(1) && delta(2), "no manifest delta");
    assert!(!delta(3), "node 3 holds no base for a delta");

    // Version 3 while node 4 is still down: patches from versions 2 and 1.
    let lib3 = rebuilt(&lib2, 3);
    let t3 = tree(&dir, 3, &lib3);
    let v3 = fleet.publish(&t3, 3).unwrap();
    for i in 1..=3 {
        fleet.wait_complete(i, &v3, wait).await.unwrap();
        export_matches(&fleet, i, &v3, &t3).await;
    }
    // Node 4 comes back holding version 1 only: it patches from it.
    fleet.start_node(4).unwrap();
    fleet.wait_ready(4).await.unwrap();
    fleet.wait_complete(4, &v3, wait).await.unwrap();
    export_matches(&fleet, 4, &v3, &t3).await;
    let r4 = progress(&fleet, 4, &v3).await;
    assert!(r4.bytes_rebuilt >= lib3.len() as u64 / 2, "{r4:?}");
    // What crossed into site b for it was about the patches, not the library.
    assert!(r4.bytes_from_wan < lib3.len() as u64 / 4, "{r4:?}");
    fleet.stop();
}

/// Text that compresses (a changelog of `lines` lines naming version `v`).
fn changelog(v: u64, lines: usize) -> String {
    (0..lines)
        .map(|i| {
            format!(
                "{v}.{i}: fixed the handling of request {i} in module {}\n",
                i % 37
            )
        })
        .collect()
}

/// A node configured as nodes before compression and patches were (`compression = "off"`,
/// `patches = false`: protocol 9 on the wire, chunks only) and nodes with both fetch from
/// each other: version 2 reaches the old node as raw chunks and the new one as patches
/// and compressed chunks; version 3, published on the old node while the origin is down,
/// reaches the new one from it as raw chunks and patches; version 4, an emergency, is
/// published without patches. Every export is byte-identical.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_compression_or_patches_fetches_from_one_with_them_and_back() {
    let s = two_sites("mixed", 6, 1);
    let (_guard, dir) = workdir();
    let mut fleet = Fleet::start(s, &dir, true).await.unwrap();
    let (new, old) = (1, 2);
    fleet
        .edit_config(
            old,
            &[
                ("compression = \"wan\"", "compression = \"off\"".into()),
                ("patches = true", "patches = false".into()),
            ],
        )
        .unwrap();
    fleet.start_node(old).unwrap();
    fleet.wait_ready(old).await.unwrap();
    fleet.wait_connected(Duration::from_secs(90)).await.unwrap();
    let wait = Duration::from_secs(120);
    let with_log = |dir: &Path, v: u64, lib: &[u8]| {
        let t = tree(dir, v, lib);
        std::fs::write(t.join("CHANGES"), changelog(v, 20_000)).unwrap();
        t
    };
    let lib1 = random(1, 2 << 20);
    let t1 = with_log(&dir, 1, &lib1);
    let v1 = fleet.publish(&t1, 1).unwrap();
    for i in [new, old] {
        fleet.wait_complete(i, &v1, wait).await.unwrap();
    }
    // Each pair of nodes speaks the newest protocol both do.
    let protocols = |peers: Vec<api::PeerView>| -> Vec<(String, u16)> {
        peers.into_iter().map(|p| (p.site, p.protocol)).collect()
    };
    let seen = protocols(fleet.peers(new).await.unwrap());
    assert!(
        seen.iter().all(|(site, v)| *v
            == if site == "b" {
                9
            } else {
                protocol::PROTOCOL_VERSION
            }),
        "{seen:?}"
    );
    let seen = protocols(fleet.peers(old).await.unwrap());
    assert!(seen.iter().all(|(_, v)| *v == 9), "{seen:?}");

    // Version 2 from the origin: patches and compressed chunks for the new node only.
    let lib2 = rebuilt(&lib1, 2);
    let t2 = with_log(&dir, 2, &lib2);
    let (v2, p) = publish_at(&fleet, 0, &t2, 2, &[]);
    assert!(p["patches"].as_u64().unwrap() >= 2, "{p}");
    for i in [new, old] {
        fleet.wait_complete(i, &v2, wait).await.unwrap();
        export_matches(&fleet, i, &v2, &t2).await;
    }
    let r = progress(&fleet, new, &v2).await;
    assert!(r.bytes_rebuilt >= lib2.len() as u64 / 2, "{r:?}");
    assert!(r.bytes_wire_wan * 2 < r.bytes_from_wan, "{r:?}");
    let r = progress(&fleet, old, &v2).await;
    assert_eq!(r.bytes_rebuilt, 0, "{r:?}");
    assert_eq!(
        (r.bytes_wire_lan, r.bytes_wire_wan),
        (r.bytes_from_lan, r.bytes_from_wan),
        "{r:?}"
    );
    assert!(r.bytes_from_wan >= lib2.len() as u64, "{r:?}");

    // And back: version 3 published on the old node, the origin down. The new node
    // fetches it from the old one, raw, and still as patches (the publisher made them).
    fleet.kill(0);
    let lib3 = rebuilt(&lib2, 3);
    let t3 = with_log(&dir, 3, &lib3);
    let (v3, p) = publish_at(&fleet, old, &t3, 3, &[]);
    assert!(p["patches"].as_u64().unwrap() >= 2, "{p}");
    fleet.wait_complete(new, &v3, wait).await.unwrap();
    export_matches(&fleet, new, &v3, &t3).await;
    export_matches(&fleet, old, &v3, &t3).await;
    let r = progress(&fleet, new, &v3).await;
    assert!(r.bytes_rebuilt >= lib3.len() as u64 / 2, "{r:?}");
    assert!(r.bytes_from_wan > 0, "{r:?}");
    assert_eq!(r.bytes_wire_wan, r.bytes_from_wan, "{r:?}");

    // An emergency is signed without waiting for patches: it moves as chunks at once.
    let lib4 = rebuilt(&lib3, 4);
    let t4 = with_log(&dir, 4, &lib4);
    let (v4, p) = publish_at(&fleet, new, &t4, 4, &["--emergency"]);
    assert_eq!(
        (p["patches"].as_u64(), p["patch_s"].as_f64()),
        (Some(0), Some(0.0)),
        "{p}"
    );
    fleet.wait_complete(old, &v4, wait).await.unwrap();
    export_matches(&fleet, old, &v4, &t4).await;
    fleet.stop();
}
