//! Fleet membership on real nodes: a fleet made with a root (`p2pctl root init`), every node
//! enrolled by the fleet CA. Only peers with a certificate from the root's CA are admitted on
//! the data plane, and a peer's site is its certificate's, never its hello's.

use net::quic::codes;
use protocol::PublisherKey;
use protocol::cert::{CERT_FORMAT_VERSION, NodeCert, SignedCert};
use protocol::status::{ReleaseState, ReleaseStatus, SignedStatus, StatusBody};
use protocol::wire::{self, Control, Hello};
use std::time::Duration;
use testnet::fleet::{Fleet, workdir};
use testnet::rogue::Rogue;
use testnet::scenario::Scenario;

/// A certificate for `rogue` in `site`, signed with the key in `ca`.
fn certify(rogue: &Rogue, site: &str, ca: &std::path::Path) -> Vec<u8> {
    let key = store::identity::read_key(ca).unwrap();
    let now = jiff::Timestamp::now().as_second();
    SignedCert::sign(
        NodeCert {
            format_version: CERT_FORMAT_VERSION,
            fleet: "testnet".into(),
            node: rogue.node_id(),
            site: site.into(),
            region: "elsewhere".into(),
            labels: Vec::new(),
            not_before_unix_s: now - 60,
            expires_unix_s: now + 86_400,
            issuer: PublisherKey([0; 32]),
        },
        &key,
    )
    .encode()
}

/// The application code the node closes `rogue`'s connection with, once its hello (which
/// claims site `branch` and shows `rogue.cert`) is sent.
async fn refusal(rogue: &Rogue, peer: &str, addr: std::net::SocketAddr) -> u64 {
    let conn = rogue.connect_raw(peer, addr).await.unwrap();
    let (mut send, _recv) = conn.open_bi().await.unwrap();
    let hello = Control::Hello(Hello {
        protocol_version: protocol::PROTOCOL_VERSION,
        site: "branch".into(),
        region: "testnet".into(),
        instance: 7,
        cert: rogue.cert.clone(),
        root_version: 0,
        revocations: (0, 0),
        orders: (0, 0),
        now_unix_ms: 0,
    });
    send.write_all(&wire::frame(&hello)).await.unwrap();
    match tokio::time::timeout(Duration::from_secs(15), conn.closed())
        .await
        .unwrap()
    {
        quinn::ConnectionError::ApplicationClosed(c) => c.error_code.into_inner(),
        other => panic!("the refusal ended the connection with {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_peers_certified_by_the_fleet_ca_are_admitted_and_where_their_certificate_says() {
    let (_guard, dir) = workdir();
    let s = Scenario::parse(
        "name = 'membership'\nseed = 3\ntimeout_s = 120\nmembership = true\n\
         [release]\nsize_mib = 2\n[origin]\nup_mbit = 200\n[wan]\nlatency_ms = 2\n\
         [[sites]]\nname = 'branch'\nnodes = 2\n",
    )
    .unwrap();
    let fleet = Fleet::start(s, &dir, true).await.unwrap();
    fleet.wait_connected(Duration::from_secs(60)).await.unwrap();
    let (_, ca) = fleet.membership.clone().unwrap();

    // Certified nodes fetch a release from each other as in any fleet.
    let d = fleet.distribute(1, |_| {}).await.unwrap();
    assert_eq!(d.completion_s.len(), fleet.nodes.len() - 1, "{d:?}");

    let target = 1;
    let st = fleet.status(target).await.unwrap();
    let addr = fleet.nodes[target].data_addr;

    // A stranger with its own key and no certificate: refused before the node says anything.
    let stranger = Rogue::new().unwrap();
    assert_eq!(
        refusal(&stranger, &st.peer_id, addr).await,
        u64::from(codes::UNCERTIFIED)
    );
    // A certificate from a CA the root does not name: refused.
    let mut forged = Rogue::new().unwrap();
    let other_ca = dir.join("other-ca.pem");
    let key = store::identity::generate().unwrap();
    store::identity::write_key(&other_ca, &key).unwrap();
    forged.cert = certify(&forged, "branch", &other_ca);
    assert_eq!(
        refusal(&forged, &st.peer_id, addr).await,
        u64::from(codes::UNCERTIFIED)
    );
    // Another node's certificate, replayed: refused (it is not for this key).
    let mut replay = Rogue::new().unwrap();
    replay.cert = certify(&stranger, "branch", &ca);
    assert_eq!(
        refusal(&replay, &st.peer_id, addr).await,
        u64::from(codes::UNCERTIFIED)
    );

    // A node certified for another site that claims this one in its hello: admitted, and
    // treated as its certificate's site (a WAN peer, not a same-site one).
    let mut elsewhere = Rogue::new().unwrap();
    elsewhere.cert = certify(&elsewhere, "far-away", &ca);
    // Its clock is two hours behind: the node sees it, and says it is the peer's.
    elsewhere.clock_offset_ms = -2 * 3_600_000;
    let link = elsewhere
        .connect(&st.peer_id, addr, "branch")
        .await
        .expect("a certified peer is admitted");
    assert_eq!(link.hello.site, "branch");
    assert!(
        !link.hello.cert.is_empty(),
        "the node shows its certificate"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let seen = loop {
        let peers = fleet.peers(target).await.unwrap();
        if let Some(p) = peers
            .iter()
            .find(|p| p.peer_id == elsewhere.peer_id.to_string())
        {
            break p.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the certified peer is not listed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(seen.site, "far-away");
    assert!(!seen.lan);
    assert!(
        (seen.clock_offset_s + 7200.0).abs() < 60.0,
        "{}",
        seen.clock_offset_s
    );
    let own = fleet.status(target).await.unwrap().clock_offset_s.unwrap();
    assert!(
        own.abs() < 60.0,
        "the node's clock against its peers' median: {own}"
    );

    // Status records: a certified member's own record is taken; one it makes up for another
    // node is not (each node's record comes from itself).
    let mut member = Rogue::new().unwrap();
    member.cert = certify(&member, "branch", &ca);
    let mut mlink = member
        .connect(&st.peer_id, addr, "branch")
        .await
        .expect("a certified member is admitted");
    let release: protocol::ReleaseId = d.release.parse().unwrap();
    let now = jiff::Timestamp::now().as_second();
    let record = |node: protocol::NodeId, key: &ed25519_dalek::SigningKey| {
        let body = StatusBody {
            node,
            site: "branch".into(),
            installs: true,
            seq: 1,
            at_unix_s: now,
            releases: vec![ReleaseStatus {
                release,
                channel: String::new(),
                version: 1,
                published_unix_s: 0,
                severity: protocol::Severity::Low,
                state: ReleaseState::Activated,
                chunks_have: 0,
                chunks_total: 0,
                since_unix_s: now,
                until_unix_s: None,
                error: None,
                ring: 0,
            }],
        };
        Control::Status(SignedStatus::sign(&body, key).encode())
    };
    let made_up = ed25519_dalek::SigningKey::from_bytes(&[42; 32]);
    let made_up_id = protocol::NodeId(made_up.verifying_key().to_bytes());
    mlink
        .send(&record(member.node_id(), &member.signing_key()))
        .await
        .unwrap();
    mlink.send(&record(made_up_id, &made_up)).await.unwrap();
    let detail = |fleet: &Fleet| {
        let out = ctl(
            fleet,
            target,
            &["--json", "fleet", &d.release, "--site", "branch"],
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        v["nodes_detail"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter_map(|n| n["node"].as_str().map(str::to_owned))
            .collect::<Vec<String>>()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let listed = loop {
        let listed = detail(&fleet);
        if listed.contains(&member.node_id().to_hex()) {
            break listed;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the member's own record was not taken: {listed:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert!(!listed.contains(&made_up_id.to_hex()), "{listed:?}");

    // On the control plane: a stranger that claims the site in identify is disconnected and
    // never becomes a known peer.
    let gossip = testnet::rogue::identify_as(
        std::net::SocketAddr::from(([127, 0, 0, 1], fleet.nodes[target].control_port)),
        "p2pd/0.1.0 site=branch region=testnet data=127.0.0.1:9 wan=127.0.0.1:9",
        Duration::from_secs(10),
    )
    .await
    .unwrap();

    // `p2pctl peers --refused` names each refusal and why; so does the log.
    let out = ctl(&fleet, target, &["--json", "peers", "--refused"]);
    let refused: Vec<api::RefusedPeerView> = serde_json::from_slice(&out.stdout).unwrap();
    let why = |r: &Rogue| {
        refused
            .iter()
            .find(|x| x.peer_id == r.peer_id.to_string())
            .map(|x| x.reason.clone())
            .unwrap_or_default()
    };
    assert_eq!(refused.len(), 4, "{refused:?}");
    assert!(
        refused
            .iter()
            .any(|x| x.peer_id == gossip.to_string() && x.reason.contains("no certificate")),
        "{refused:?}"
    );
    assert!(why(&stranger).contains("no certificate"), "{refused:?}");
    assert!(why(&forged).contains("not a CA key"), "{refused:?}");
    assert!(why(&replay).contains("is for node"), "{refused:?}");
    let log = std::fs::read_to_string(fleet.nodes[target].data.join("p2pd.log")).unwrap();
    assert_eq!(log.matches("peer refused: no valid certificate").count(), 4);
}

/// Runs p2pctl against node `i` with `args`; its output, whether it succeeded.
fn ctl(fleet: &Fleet, i: usize, args: &[&str]) -> std::process::Output {
    fleet.ctl(i, args).unwrap()
}

/// Node `i`'s view of itself (`p2pctl --json node`).
fn node_json(fleet: &Fleet, i: usize) -> serde_json::Value {
    serde_json::from_slice(&ctl(fleet, i, &["--json", "node"]).stdout).unwrap_or_default()
}

/// The CI bar of the revocation: every node drops a revoked node within this long of
/// `p2pctl node revoke` (the bar is 10 s; the margin is for a loaded CI machine).
const REVOCATION_DEADLINE: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_node_is_dropped_everywhere_in_seconds_and_a_new_root_spreads_from_node_to_node()
{
    let (_guard, dir) = workdir();
    let s = Scenario::parse(
        "name = 'revoke'\nseed = 5\ntimeout_s = 120\nmembership = true\n\
         [release]\nsize_mib = 1\n[origin]\nup_mbit = 200\n[wan]\nlatency_ms = 5\n\
         [[sites]]\nname = 'tokyo'\nnodes = 4\n[[sites]]\nname = 'frankfurt'\nnodes = 4\n\
         [[sites]]\nname = 'saopaulo'\nnodes = 4\n",
    )
    .unwrap();
    let fleet = Fleet::start(s, &dir, true).await.unwrap();
    fleet.wait_connected(Duration::from_secs(90)).await.unwrap();
    let (root_file, ca) = fleet.membership.clone().unwrap();
    let n = fleet.nodes.len();

    // Revoke a frankfurt node from the origin, with the CA key.
    let victim = 6;
    let victim_st = fleet.status(victim).await.unwrap();
    assert!(
        fleet.peers(victim).await.unwrap().len() >= 3,
        "the victim is connected before"
    );
    let t0 = std::time::Instant::now();
    let out = ctl(
        &fleet,
        0,
        &[
            "node",
            "revoke",
            &victim_st.node_id,
            "--reason",
            "key stolen",
            "--key",
            &ca.display().to_string(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Every other node holds the list and has no connection to the victim.
    let mut dropped_by = vec![false; n];
    dropped_by[victim] = true;
    while dropped_by.iter().any(|d| !d) {
        for (i, dropped) in dropped_by.iter_mut().enumerate() {
            if *dropped {
                continue;
            }
            let holds = node_json(&fleet, i)["membership"]["revocations_version"] == 1;
            let connected = fleet
                .peers(i)
                .await
                .unwrap()
                .iter()
                .any(|p| p.node_id == victim_st.node_id);
            *dropped = holds && !connected;
        }
        assert!(
            t0.elapsed() < REVOCATION_DEADLINE,
            "not dropped by {:?} after {:?}",
            (0..n)
                .filter(|&i| !dropped_by[i])
                .map(|i| &fleet.nodes[i].name)
                .collect::<Vec<_>>(),
            t0.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = t0.elapsed();
    eprintln!(
        "revocation: every node dropped the revoked node {:.2} s after p2pctl node revoke",
        took.as_secs_f64()
    );
    // It stays out: a few seconds on, it has no peer, and its site-mates name it refused.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(
        fleet.peers(victim).await.unwrap().len(),
        0,
        "the revoked node is connected again"
    );
    let refused = ctl(&fleet, 5, &["--json", "peers", "--refused"]);
    let refused: Vec<api::RefusedPeerView> = serde_json::from_slice(&refused.stdout).unwrap();
    assert!(
        refused
            .iter()
            .any(|r| r.peer_id == victim_st.peer_id && r.reason.contains("key stolen")),
        "{refused:?}"
    );
    let listed = ctl(&fleet, 11, &["--json", "node", "revoked"]);
    let listed: api::RevocationsView = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(listed.entries.len(), 1);
    assert_eq!(listed.entries[0].node, victim_st.node_id);
    // An older list (the same version again) is refused by the daemon.
    let again = ctl(
        &fleet,
        3,
        &[
            "node",
            "revoke",
            &victim_st.node_id,
            "--reason",
            "x",
            "--key",
            &dir.join("root.pem").display().to_string(),
        ],
    );
    assert!(
        !again.status.success(),
        "a list signed by a key that may not revoke is refused"
    );

    // Root rotation: v2 drops the publisher key and names a new one, signed by v1's root
    // key; handed to one branch node, it reaches every node.
    let v2 = dir.join("root-v2.json");
    let ok = |out: std::process::Output| {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    ok(std::process::Command::new(&fleet.bins.p2pctl)
        .args(["root", "next"])
        .arg(&root_file)
        .arg("--out")
        .arg(&v2)
        .output()
        .unwrap());
    let second = dir.join("second.pem");
    let second_key = store::identity::generate().unwrap();
    store::identity::write_key(&second, &second_key).unwrap();
    let mut next =
        protocol::root::SignedRoot::from_json(&std::fs::read_to_string(&v2).unwrap()).unwrap();
    next.signed.publishers = vec![protocol::root::ScopedKey {
        name: "second".into(),
        key: PublisherKey(second_key.verifying_key().to_bytes()),
        channels: Vec::new(),
    }];
    std::fs::write(&v2, next.to_json()).unwrap();
    ok(std::process::Command::new(&fleet.bins.p2pctl)
        .args(["root", "sign"])
        .arg(&v2)
        .arg("--key")
        .arg(dir.join("root.pem"))
        .output()
        .unwrap());
    let t1 = std::time::Instant::now();
    ok(ctl(
        &fleet,
        2,
        &["root", "publish", &v2.display().to_string()],
    ));
    for i in 0..n {
        while node_json(&fleet, i)["membership"]["root_version"] != 2 {
            if i == victim {
                break;
            }
            assert!(
                t1.elapsed() < REVOCATION_DEADLINE,
                "{} did not take root v2",
                fleet.nodes[i].name
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    eprintln!(
        "root v2 reached every node {:.2} s after p2pctl root publish",
        t1.elapsed().as_secs_f64()
    );
    assert_eq!(
        node_json(&fleet, 9)["trusted_publishers"],
        serde_json::json!(["second"])
    );
    // A v3 signed only by a key v2 does not name is refused, and so is v2 again.
    let v3 = dir.join("root-v3.json");
    ok(std::process::Command::new(&fleet.bins.p2pctl)
        .args(["root", "next"])
        .arg(&v2)
        .arg("--out")
        .arg(&v3)
        .output()
        .unwrap());
    ok(std::process::Command::new(&fleet.bins.p2pctl)
        .args(["root", "sign"])
        .arg(&v3)
        .arg("--key")
        .arg(&second)
        .output()
        .unwrap());
    for file in [&v3, &v2] {
        let out = ctl(&fleet, 4, &["root", "publish", &file.display().to_string()]);
        assert_eq!(
            out.status.code(),
            Some(4),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(node_json(&fleet, 4)["membership"]["root_version"], 2);

    // A certificate renewed while the node runs: installed at once, the node stays admitted,
    // and its control plane starts again to show the new one in identify.
    let control = std::net::SocketAddr::from(([127, 0, 0, 1], fleet.nodes[1].control_port));
    let agent_before = testnet::rogue::agent_of(control, Duration::from_secs(10))
        .await
        .unwrap();
    assert!(agent_before.contains(" cert="), "{agent_before}");
    let before = node_json(&fleet, 1)["membership"]["cert_expires_unix_s"].clone();
    ok(ctl(
        &fleet,
        1,
        &[
            "node",
            "renew",
            "--ca-key",
            &ca.display().to_string(),
            "--ttl",
            "30d",
        ],
    ));
    let after = node_json(&fleet, 1)["membership"]["cert_expires_unix_s"].clone();
    assert_ne!(before, after);
    assert!(
        after.as_i64().unwrap() < before.as_i64().unwrap(),
        "30 days, not 90"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        match testnet::rogue::agent_of(control, Duration::from_secs(5)).await {
            Ok(agent) if agent != agent_before => {
                assert!(agent.contains(" cert="), "{agent}");
                break;
            }
            other => assert!(
                std::time::Instant::now() < deadline,
                "identify still shows the old certificate: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // The old publisher key no longer publishes; the new one does, and the fleet takes it.
    let payload = fleet.make_payload(1).unwrap();
    assert!(
        fleet.publish(&payload, 1).is_err(),
        "a key the new root dropped still publishes"
    );
    let id = fleet
        .publish_as("testnet/revoke", &payload, 1, &second, &[])
        .unwrap();
    // The new publisher's release reaches the far end of the fleet.
    fleet
        .wait_complete(11, &id, Duration::from_secs(60))
        .await
        .unwrap();

    // Unrevoked under root v2: that list starts its numbering again (v1 under root v2) and
    // still replaces v1 under root v1 everywhere; the node is admitted again and catches up.
    let t2 = std::time::Instant::now();
    ok(ctl(
        &fleet,
        3,
        &[
            "node",
            "unrevoke",
            &victim_st.node_id,
            "--key",
            &ca.display().to_string(),
        ],
    ));
    for i in (0..n).filter(|&i| i != victim) {
        loop {
            let out = ctl(&fleet, i, &["--json", "node", "revoked"]);
            let held: api::RevocationsView = serde_json::from_slice(&out.stdout).unwrap();
            if held.list_root_version == 2 && held.entries.is_empty() {
                break;
            }
            assert!(
                t2.elapsed() < REVOCATION_DEADLINE,
                "{} still revokes the node: {held:?}",
                fleet.nodes[i].name
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while fleet.peers(victim).await.unwrap().is_empty()
        || node_json(&fleet, victim)["membership"]["root_version"] != 2
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the node taken off the list is not admitted again, or did not catch up"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_held_for_approval_goes_nowhere_until_an_approver_on_another_node_signs() {
    let (_guard, dir) = workdir();
    let s = Scenario::parse(
        "name = 'approve'\nseed = 9\ntimeout_s = 120\nmembership = true\n\
         [release]\nsize_mib = 1\n[origin]\nup_mbit = 200\n[wan]\nlatency_ms = 5\n\
         [[sites]]\nname = 'a'\nnodes = 2\n[[sites]]\nname = 'b'\nnodes = 2\n",
    )
    .unwrap();
    let fleet = Fleet::start(s, &dir, true).await.unwrap();
    fleet.wait_connected(Duration::from_secs(90)).await.unwrap();
    let (root_file, _) = fleet.membership.clone().unwrap();
    let n = fleet.nodes.len();
    let ok = testnet::fleet::ok;

    // Root v2 names an approver and asks for two signatures on the testnet channels (one
    // in an emergency).
    let approver = dir.join("approver.pem");
    let approver_key = store::identity::generate().unwrap();
    store::identity::write_key(&approver, &approver_key).unwrap();
    let v2 = dir.join("root-v2.json");
    ok(std::process::Command::new(&fleet.bins.p2pctl)
        .args(["root", "next"])
        .arg(&root_file)
        .arg("--out")
        .arg(&v2)
        .output()
        .unwrap());
    let mut next =
        protocol::root::SignedRoot::from_json(&std::fs::read_to_string(&v2).unwrap()).unwrap();
    next.signed.approvers = vec![protocol::root::ScopedKey {
        name: "ciso".into(),
        key: PublisherKey(approver_key.verifying_key().to_bytes()),
        channels: vec!["testnet".into()],
    }];
    next.signed.approvals = vec![protocol::root::ApprovalRule {
        channels: "testnet".into(),
        threshold: 2,
        emergency_threshold: 1,
    }];
    std::fs::write(&v2, next.to_json()).unwrap();
    ok(std::process::Command::new(&fleet.bins.p2pctl)
        .args(["root", "sign"])
        .arg(&v2)
        .arg("--key")
        .arg(dir.join("root.pem"))
        .output()
        .unwrap());
    ok(ctl(
        &fleet,
        0,
        &["root", "publish", &v2.display().to_string()],
    ));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    for i in 0..n {
        while node_json(&fleet, i)["membership"]["root_version"] != 2 {
            assert!(std::time::Instant::now() < deadline, "root v2 not taken");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // One signature is not enough to publish; held, it is stored on the origin only.
    let payload = fleet.make_payload(1).unwrap();
    let refused = fleet.publish(&payload, 1).unwrap_err();
    assert!(refused.to_string().contains("needs 2"), "{refused}");
    let id = fleet
        .publish_with(&payload, 1, &["--hold-for-approval"])
        .unwrap();
    let show: serde_json::Value =
        serde_json::from_slice(&ok(ctl(&fleet, 0, &["--json", "show", &id])).stdout).unwrap();
    assert_eq!(
        show["release"]["held"],
        serde_json::json!({"have": 1, "need": 2})
    );
    tokio::time::sleep(Duration::from_secs(4)).await;
    for i in 1..n {
        let st = fleet.status(i).await.unwrap();
        assert!(
            !st.releases.iter().any(|r| r.id == id),
            "{} heard of the held release",
            fleet.nodes[i].name
        );
    }
    // A key the root does not name cannot approve it.
    let stranger = dir.join("stranger.pem");
    store::identity::write_key(&stranger, &store::identity::generate().unwrap()).unwrap();
    let out = ctl(
        &fleet,
        3,
        &["approve", &id, "--key", &stranger.display().to_string()],
    );
    assert!(!out.status.success());

    // The approver signs on a node of another site; the release goes out and every node
    // fetches it.
    let done: api::HeldView = serde_json::from_slice(
        &ok(ctl(
            &fleet,
            3,
            &[
                "--json",
                "approve",
                &id,
                "--key",
                &approver.display().to_string(),
            ],
        ))
        .stdout,
    )
    .unwrap();
    assert!(done.released, "{done:?}");
    assert_eq!((done.approval.have, done.approval.need), (2, 2));
    // Every node fetches the approved release, all within one minute.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    for i in 1..n {
        fleet
            .wait_complete(
                i,
                &id,
                deadline.saturating_duration_since(std::time::Instant::now()),
            )
            .await
            .unwrap();
    }
    // Who signed: in the release on every node, and in the origin's audit log.
    let show: serde_json::Value =
        serde_json::from_slice(&ok(ctl(&fleet, 2, &["--json", "show", &id])).stdout).unwrap();
    let signers = show["release"]["signers"].as_array().unwrap().len();
    assert_eq!(signers, 2, "{show}");
    assert!(show["release"]["held"].is_null());
    let audit = String::from_utf8(ok(ctl(&fleet, 0, &["audit"])).stdout).unwrap();
    assert!(audit.contains("held for approval"), "{audit}");
    assert!(audit.contains("approved by key"), "{audit}");
    assert!(audit.contains("released"), "{audit}");
}

/// A crowd of certified peers of another site takes at most three quarters of a node's
/// `max_peers` (128): the rest is kept for the node's own site, so a site-mate that
/// restarts gets back in; and when members of the site take every slot, crowd peers that
/// never served give theirs up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crowd_from_other_sites_cannot_take_the_slots_kept_for_site_mates() {
    let (_guard, dir) = workdir();
    let s = Scenario::parse(
        "name = 'slots'\nseed = 4\ntimeout_s = 120\nmembership = true\n\
         [release]\nsize_mib = 1\n[origin]\nup_mbit = 200\n[wan]\nlatency_ms = 2\n\
         [[sites]]\nname = 'branch'\nnodes = 2\n",
    )
    .unwrap();
    let mut fleet = Fleet::start(s, &dir, true).await.unwrap();
    fleet.wait_connected(Duration::from_secs(60)).await.unwrap();
    let (_, ca) = fleet.membership.clone().unwrap();
    let target = 1;
    let st = fleet.status(target).await.unwrap();
    let addr = fleet.nodes[target].data_addr;

    // Certified peers of another site connect until the node refuses one.
    let mut crowd = Vec::new();
    let refused_at = loop {
        let mut r = Rogue::new().unwrap();
        r.cert = certify(&r, "far-away", &ca);
        match r.connect(&st.peer_id, addr, "far-away").await {
            Ok(link) => crowd.push((r, link)),
            Err(_) => break fleet.peers(target).await.unwrap().len(),
        }
        assert!(
            crowd.len() <= 128,
            "no peer of another site was ever refused"
        );
    };
    let crowd_in = std::time::Instant::now();
    assert_eq!(refused_at, 96, "three quarters of max_peers (128)");

    // A site-mate that restarts gets back in.
    let mate = 2;
    let mate_id = fleet.status(mate).await.unwrap().node_id;
    fleet.kill(mate);
    fleet.start_node(mate).unwrap();
    fleet.wait_ready(mate).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    while !fleet
        .peers(target)
        .await
        .unwrap()
        .iter()
        .any(|p| p.node_id == mate_id && p.lan)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the restarted site-mate did not get back in"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Members of the site take the slots kept for them, then more come: each takes the slot
    // of a crowd peer that never served (once it has been connected long enough to show).
    tokio::time::sleep(net::EVICTABLE_AFTER.saturating_sub(crowd_in.elapsed())).await;
    let member = || {
        let mut r = Rogue::new().unwrap();
        r.cert = certify(&r, "branch", &ca);
        r
    };
    let mut mates = Vec::new();
    while fleet.peers(target).await.unwrap().len() < 128 {
        let r = member();
        let link = r.connect(&st.peer_id, addr, "branch").await.unwrap();
        mates.push((r, link));
        assert!(
            mates.len() <= 32,
            "more members than the reserve went in without evicting"
        );
    }
    for _ in 0..3 {
        let r = member();
        let link = r
            .connect(&st.peer_id, addr, "branch")
            .await
            .expect("a member of the site gets a slot when every slot is taken");
        mates.push((r, link));
    }
    assert_eq!(fleet.peers(target).await.unwrap().len(), 128);
    let mut evicted = 0;
    for (_, link) in &crowd {
        if let Ok(code) = tokio::time::timeout(Duration::from_millis(20), link.closed_code()).await
        {
            assert_eq!(code, Some(u64::from(codes::SURPLUS)));
            evicted += 1;
        }
    }
    assert_eq!(
        evicted, 3,
        "one crowd peer gives its slot to each member that came"
    );
    drop(crowd);
}

/// A certified member that names made-up site-mates at someone else's address (peer lists
/// of identities nobody holds, all at one victim's UDP port, sent over and over) gets each
/// dialled at most `HEARSAY_DIALS_MAX` times, by the node it told only (hearsay is not
/// passed on), with at most `HEARSAY_PER_SOURCE_MAX` of them held at once, and the fleet completes a release during the attack within twice its quiet
/// time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_up_peers_cost_a_few_handshakes_each_and_go_no_further() {
    use net::peers::{HEARSAY_DIALS_MAX, HEARSAY_PER_SOURCE_MAX};
    let (_guard, dir) = workdir();
    let s = Scenario::parse(
        "name = 'amplify'\nseed = 5\ntimeout_s = 120\nmembership = true\n\
         [release]\nsize_mib = 8\n[origin]\nup_mbit = 200\n[wan]\nlatency_ms = 2\n\
         [[sites]]\nname = 'branch'\nnodes = 2\n",
    )
    .unwrap();
    let fleet = Fleet::start(s, &dir, true).await.unwrap();
    fleet.wait_connected(Duration::from_secs(60)).await.unwrap();
    let (_, ca) = fleet.membership.clone().unwrap();
    let slowest = |d: &testnet::fleet::Distribution| {
        d.completion_s.iter().map(|(_, s)| *s).fold(0.0, f64::max)
    };
    fleet.distribute(1, |_| {}).await.unwrap();
    let base = slowest(&fleet.distribute(2, |_| {}).await.unwrap());

    let victim = testnet::rogue::Victim::new().unwrap();
    let made_up: Vec<wire::PeerEntry> = (0..wire::PEERS_PER_MESSAGE_MAX)
        .map(|_| {
            let mut secret = [0u8; 32];
            rand::RngCore::fill_bytes(&mut rand::rng(), &mut secret);
            let key = ed25519_dalek::SigningKey::from_bytes(&secret);
            wire::PeerEntry {
                node: protocol::NodeId(key.verifying_key().to_bytes()),
                site: "branch".into(),
                lan: victim.addr,
                wan: victim.addr,
            }
        })
        .collect();
    let mut member = Rogue::new().unwrap();
    member.cert = certify(&member, "elsewhere", &ca);
    let target = 1;
    let st = fleet.status(target).await.unwrap();
    let mut link = member
        .connect(&st.peer_id, fleet.nodes[target].data_addr, "elsewhere")
        .await
        .unwrap();
    let attack = async {
        // Long enough for six redials of every entry without the bound.
        let until = std::time::Instant::now() + Duration::from_secs(32);
        while std::time::Instant::now() < until {
            link.send(&Control::Peers(made_up.clone())).await.unwrap();
            link.drain_control();
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    };
    let (during, ()) = tokio::join!(
        async { slowest(&fleet.distribute(3, |_| {}).await.unwrap()) },
        attack
    );
    let attempts = victim.attempts();
    eprintln!(
        "amplification: {attempts} handshakes for {} made-up peers; a release in {during:.2} s \
         during the attack, {base:.2} s without",
        made_up.len()
    );
    assert!(
        attempts > 0,
        "the made-up peers were never dialled: the test sees nothing"
    );
    assert!(
        attempts <= HEARSAY_PER_SOURCE_MAX as u64 * u64::from(HEARSAY_DIALS_MAX),
        "{attempts} handshakes sent to the victim for {} made-up peers",
        made_up.len()
    );
    assert!(
        during <= 2.0 * base + 1.0,
        "{during:.2} s during the attack against {base:.2} s without"
    );
}
