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
