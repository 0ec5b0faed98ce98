//! Fleet status through the daemon: records of its site and summaries of other sites in the
//! store are loaded (forged ones, and records of other sites, are not) and `p2pctl fleet`
//! and `p2pctl report` aggregate them.

use super::*;
use ed25519_dalek::SigningKey;
use protocol::status::{ReleaseState, ReleaseStatus, SignedStatus, StatusBody};
use protocol::summary::{SignedSummary, SummaryBody, site_releases};
use protocol::{NodeId, ReleaseId};

fn body(k: u8, site: &str, state: ReleaseState, error: Option<&str>, at: i64) -> StatusBody {
    let key = SigningKey::from_bytes(&[k; 32]);
    StatusBody {
        node: NodeId(key.verifying_key().to_bytes()),
        site: site.into(),
        installs: true,
        seq: 1,
        at_unix_s: at,
        releases: vec![ReleaseStatus {
            release: ReleaseId([7; 32]),
            channel: "security/x".into(),
            version: 1,
            published_unix_s: at,
            severity: protocol::Severity::Critical,
            state,
            chunks_have: if state.has_release() { 10 } else { 4 },
            chunks_total: 10,
            since_unix_s: at,
            until_unix_s: None,
            error: error.map(str::to_owned),
            ring: 0,
        }],
    }
}

fn record(b: &StatusBody, k: u8) -> (NodeId, Vec<u8>) {
    (
        b.node,
        SignedStatus::sign(b, &SigningKey::from_bytes(&[k; 32])).encode(),
    )
}

/// The summary node `k` (the first of `bodies`) makes of its site.
fn summary(k: u8, bodies: &[StatusBody]) -> (String, Vec<u8>) {
    let key = SigningKey::from_bytes(&[k; 32]);
    let refs: Vec<&StatusBody> = bodies.iter().collect();
    let b = SummaryBody {
        site: bodies[0].site.clone(),
        aggregator: NodeId(key.verifying_key().to_bytes()),
        seq: 1,
        at_unix_s: bodies[0].at_unix_s,
        nodes: bodies.len() as u32,
        installers: bodies.len() as u32,
        contacts: Vec::new(),
        releases: site_releases(&refs, None),
    };
    (b.site.clone(), SignedSummary::sign(&b, &key).encode())
}

/// `p2pctl --json fleet ARGS`, whatever it exits with (6 when nodes failed).
fn fleet_json(node: &Node, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["--json", "fleet"];
    all.extend_from_slice(args);
    let out = node.ctl(&all);
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn stored_records_and_summaries_are_aggregated_and_forged_ones_dropped() {
    let mut node = Node::init();
    let t = 1_795_392_000;
    let hq = body(1, "hq", ReleaseState::Activated, None, t);
    let b1 = [
        body(2, "branch-1", ReleaseState::Downloading, None, t),
        body(
            3,
            "branch-1",
            ReleaseState::Failed,
            Some("apply exited 3"),
            t,
        ),
    ];
    let mut records = vec![record(&hq, 1), record(&b1[0], 2)];
    // A record whose bytes were changed after signing: never counted.
    let (forged_node, mut forged) = record(&body(4, "hq", ReleaseState::Activated, None, t), 4);
    let last = forged.len() - 70;
    forged[last] ^= 1;
    records.push((forged_node, forged));
    {
        let store = ::store::Store::open(&node.data().join("store")).unwrap();
        store
            .put_fleet(&::store::fleet::Stored {
                records,
                summaries: vec![summary(2, &b1)],
                ..Default::default()
            })
            .unwrap();
    }
    node.start();
    let id = ReleaseId([7; 32]).to_hex();
    // The node's own record joins within a second or two: it knows nothing of the release.
    let mut r = fleet_json(&node, &[&id]);
    for _ in 0..100 {
        if r["nodes"] == 4 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        r = fleet_json(&node, &[&id]);
    }
    // hq: this node and node 1 (the branch-1 record and the forged one are not counted);
    // branch-1: its summary's two.
    assert_eq!(r["nodes"], 4, "{r}");
    assert_eq!(r["states"]["unknown"], 1);
    assert_eq!(r["states"]["activated"], 1);
    assert_eq!(r["states"]["downloading"], 1);
    assert_eq!(r["states"]["failed"], 1);
    assert_eq!(r["sites"][0]["site"], "branch-1");
    assert_eq!(r["sites"][0]["nodes"], 2);
    assert_eq!(r["sites"][0]["from"], "summary");
    assert_eq!(r["failed"][0]["error"], "apply exited 3");
    let text = node.ctl(&["fleet", &id]);
    assert_eq!(
        text.status.code(),
        Some(api::cli::ExitCode::NodesFailed.code()),
        "a failed node makes `fleet` exit 6"
    );
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("4 nodes, 1 hold it (25.0 %)"), "{text}");
    assert!(
        text.contains("activated 1 · downloading 1 · not yet known 1 · failed 1"),
        "{text}"
    );
    assert!(!text.contains("every node holds it"), "{text}");
    assert!(text.contains("apply exited 3"), "{text}");
    // The own site node by node.
    let own = fleet_json(&node, &[&id, "--site", "hq"]);
    assert_eq!(own["nodes_detail"].as_array().unwrap().len(), 2, "{own}");
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
    // Four installing nodes in four other sites: three installed it, one is downloading.
    let now = jiff::Timestamp::now().as_second();
    let summaries: Vec<(String, Vec<u8>)> = (10..14u8)
        .map(|k| {
            let mut b = body(
                k,
                &format!("branch-{k}"),
                if k < 13 {
                    ReleaseState::Activated
                } else {
                    ReleaseState::Downloading
                },
                None,
                now,
            );
            b.releases[0].release = id;
            b.releases[0].channel = "security/report".into();
            summary(k, &[b])
        })
        .collect();
    ::store::Store::open(&node.data().join("store"))
        .unwrap()
        .put_fleet(&::store::fleet::Stored {
            summaries,
            ..Default::default()
        })
        .unwrap();
    node.start();

    // The node itself (it published it and installs nothing: not held to it) and the four.
    let rows = node.ctl_json(&["report", "--since", "1d"]);
    let row = &rows[0];
    assert_eq!(row["release"], id.to_hex());
    assert_eq!(row["nodes"], 5);
    assert_eq!(row["installers"], 4);
    assert_eq!(row["activated"], 3);
    assert_eq!(row["missing_total"], 1);
    assert_eq!(row["deadline"], "n/a", "a medium release");
    assert!(row["to_50_s"].is_number() && row["to_90_s"].is_null());
    let csv = node.ctl(&["report", "--since", "1d", "--format", "csv"]);
    let csv = String::from_utf8_lossy(&csv.stdout).into_owned();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 2, "{csv}");
    assert!(lines[0].starts_with("release,channel,version,severity"));
    assert!(
        // Installed 3 of them itself, none covered by a newer version, no exception.
        lines[1].contains(",security/report,1,medium,") && lines[1].ends_with(",n/a,1,3,0,0"),
        "{csv}"
    );
    let md = node.ctl(&["report", "--since", "1d"]);
    let md = String::from_utf8_lossy(&md.stdout).into_owned();
    assert!(md.contains("| 3/4 (75.0 %) | 0 |"), "{md}");
    assert!(
        md.contains("1 node missing") && md.contains("1 node of site branch-13"),
        "{md}"
    );
    // Since an instant after the release was published: nothing to report.
    let old = node.ctl_json(&["report", "--since", "2030-01-01T00:00:00Z"]);
    assert_eq!(old.as_array().unwrap().len(), 0);
    assert!(node.stop());
}
