//! Fleet status through the daemon: records in the store are loaded (forged ones are not)
//! and `p2pctl fleet` aggregates them.

use super::*;
use ed25519_dalek::SigningKey;
use protocol::status::{ReleaseState, ReleaseStatus, SignedStatus, StatusBody};
use protocol::{NodeId, ReleaseId};

fn record(k: u8, site: &str, state: ReleaseState, error: Option<&str>) -> (NodeId, Vec<u8>) {
    let key = SigningKey::from_bytes(&[k; 32]);
    let body = StatusBody {
        node: NodeId(key.verifying_key().to_bytes()),
        site: site.into(),
        seq: 1,
        at_unix_s: 1_795_392_000,
        releases: vec![ReleaseStatus {
            release: ReleaseId([7; 32]),
            state,
            chunks_have: if state.has_release() { 10 } else { 4 },
            chunks_total: 10,
            since_unix_s: 1_795_392_000,
            error: error.map(str::to_owned),
        }],
    };
    (body.node, SignedStatus::sign(&body, &key).encode())
}

#[test]
fn stored_records_are_aggregated_and_forged_ones_dropped() {
    let mut node = Node::init();
    let mut records = vec![
        record(1, "hq", ReleaseState::Activated, None),
        record(2, "branch-1", ReleaseState::Downloading, None),
        record(3, "branch-1", ReleaseState::Failed, Some("apply exited 3")),
    ];
    // A record whose bytes were changed after signing: never counted.
    let (forged_node, mut forged) = record(4, "hq", ReleaseState::Activated, None);
    let last = forged.len() - 70;
    forged[last] ^= 1;
    records.push((forged_node, forged));
    {
        let store = node::store::Store::open(&node.data().join("store")).unwrap();
        store.put_fleet_records(&records).unwrap();
    }
    node.start();
    let id = ReleaseId([7; 32]).to_hex();
    // The node's own record joins within a second or two: it knows nothing of the release.
    let mut r = node.ctl_json(&["fleet", &id]);
    for _ in 0..100 {
        if r["nodes"] == 4 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        r = node.ctl_json(&["fleet", &id]);
    }
    assert_eq!(r["nodes"], 4, "{r}");
    assert_eq!(r["states"]["unknown"], 1);
    assert_eq!(r["states"]["activated"], 1);
    assert_eq!(r["states"]["downloading"], 1);
    assert_eq!(r["states"]["failed"], 1);
    assert_eq!(r["sites"][0]["site"], "branch-1");
    assert_eq!(r["sites"][0]["nodes"], 2);
    assert_eq!(r["failed"][0]["error"], "apply exited 3");
    let text = node.ctl(&["fleet", &id]);
    assert!(text.status.success());
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("4 nodes, 1 hold it"), "{text}");
    assert!(text.contains("apply exited 3"), "{text}");
    assert!(node.stop());
}

#[test]
fn the_compliance_report_lists_share_times_and_missing_nodes_in_three_formats() {
    let mut node = Node::init();
    node.start();
    let src = node.dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("patch.bin"), random_bytes(8, 50_000)).unwrap();
    let out = node.publish(&src, "security/report", 1);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id: ReleaseId =
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["release"]["id"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
    assert!(node.stop());
    // Three nodes installed it, one is still downloading.
    let now = jiff::Timestamp::now().as_second();
    let records: Vec<(NodeId, Vec<u8>)> = (10..14u8)
        .map(|k| {
            let key = SigningKey::from_bytes(&[k; 32]);
            let body = StatusBody {
                node: NodeId(key.verifying_key().to_bytes()),
                site: format!("branch-{k}"),
                seq: 1,
                at_unix_s: now,
                releases: vec![ReleaseStatus {
                    release: id,
                    state: if k < 13 {
                        ReleaseState::Activated
                    } else {
                        ReleaseState::Downloading
                    },
                    chunks_have: 1,
                    chunks_total: 1,
                    since_unix_s: now,
                    error: None,
                }],
            };
            (body.node, SignedStatus::sign(&body, &key).encode())
        })
        .collect();
    node::store::Store::open(&node.data().join("store"))
        .unwrap()
        .put_fleet_records(&records)
        .unwrap();
    node.start();

    // The node itself (its own record: complete, not installed) and the four.
    let rows = node.ctl_json(&["report", "--since", "1d"]);
    let row = &rows[0];
    assert_eq!(row["release"], id.to_hex());
    assert_eq!(row["nodes"], 5);
    assert_eq!(row["activated"], 3);
    assert_eq!(row["missing_total"], 2);
    assert_eq!(row["deadline"], "n/a", "a medium release");
    assert!(row["to_50_s"].is_number() && row["to_90_s"].is_null());
    let csv = node.ctl(&["report", "--since", "1d", "--format", "csv"]);
    let csv = String::from_utf8_lossy(&csv.stdout).into_owned();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 2, "{csv}");
    assert!(lines[0].starts_with("release,channel,version,severity"));
    assert!(
        lines[1].contains(",security/report,1,medium,") && lines[1].ends_with(",n/a,2"),
        "{csv}"
    );
    let md = node.ctl(&["report", "--since", "1d"]);
    let md = String::from_utf8_lossy(&md.stdout).into_owned();
    assert!(md.contains("| 3/5 (60.0 %) |"), "{md}");
    assert!(
        md.contains("2 nodes missing") && md.contains("(branch-13): downloading"),
        "{md}"
    );
    // Since an instant after the release was published: nothing to report.
    let old = node.ctl_json(&["report", "--since", "2030-01-01T00:00:00Z"]);
    assert_eq!(old.as_array().unwrap().len(), 0);
    assert!(node.stop());
}
