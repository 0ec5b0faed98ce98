//! Rollout control with real p2pd processes: release targets, requirements between releases,
//! and rings whose gate each node evaluates from the fleet status it sees.

use api::{InstallState, InstallView};
use std::time::{Duration, Instant};
use testnet::fleet::{Fleet, ok, workdir};
use testnet::scenario::Scenario;

/// Node `i`'s installation of release `id`, if it knows it.
async fn install_of(fleet: &Fleet, i: usize, id: &str) -> Option<InstallView> {
    fleet
        .status(i)
        .await
        .ok()?
        .releases
        .into_iter()
        .find(|r| r.id == id)
        .and_then(|r| r.install)
}

/// Waits until node `i`'s installation of `id` satisfies `done` (at most `secs`).
async fn wait_install(
    fleet: &Fleet,
    i: usize,
    id: &str,
    secs: u64,
    done: impl Fn(&InstallView) -> bool,
) -> InstallView {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let v = install_of(fleet, i, id).await;
        if let Some(v) = v.as_ref().filter(|v| done(v)) {
            return v.clone();
        }
        if Instant::now() >= deadline {
            let view = fleet.ctl(i, &["--json", "fleet", id]).unwrap();
            panic!(
                "node {i}, release {id}: {v:?}\nits fleet view: {}",
                String::from_utf8_lossy(&view.stdout)
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The unix second an installation finished.
fn at_s(v: &InstallView) -> i64 {
    v.at.as_deref()
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        .map(|t| t.as_second())
        .unwrap_or_else(|| panic!("no install time: {v:?}"))
}

/// One branch of three installing nodes: a Debian 12 server, a Debian 11 server and a
/// Debian 12 ATM. A library release targets Debian 12; an application release requires the
/// library and leaves ATMs out. The application, complete first on the Debian 12 server
/// (the library is held there), waits for the library and installs right after it; the
/// Debian 11 server, which the library is not for, installs the application at once; the
/// ATM never installs it, and the fleet view and the report count only targeted nodes.
/// Publishing a requirement that does not exist, or one that makes a cycle, is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_installs_only_where_targeted_and_after_what_it_requires() {
    let s = Scenario::parse(
        "name = 'targets'\nseed = 8\ntimeout_s = 120\n[release]\nsize_mib = 1\n\
         [origin]\nup_mbit = 200\n[wan]\nlatency_ms = 2\n[[sites]]\nname = 'branch'\nnodes = 3\n",
    )
    .unwrap();
    let (_guard, dir) = workdir();
    let mut fleet = Fleet::start(s, &dir, true).await.unwrap();
    let labels: [&[(&str, &str)]; 3] = [
        &[("os", "debian12"), ("role", "server")],
        &[("os", "debian11"), ("role", "server")],
        &[("os", "debian12"), ("role", "atm")],
    ];
    let mut logs = Vec::new();
    for (k, l) in labels.iter().enumerate() {
        let log = fleet.nodes[k + 1].data.join("applied.log");
        let apply = format!("echo \"$P2PD_CHANNEL $P2PD_VERSION\" >> {}", log.display());
        fleet.make_installer(k + 1, &apply, l).await.unwrap();
        logs.push(log);
    }
    fleet.wait_connected(Duration::from_secs(60)).await.unwrap();
    let (server12, server11, atm) = (1, 2, 3);
    let (lib, app) = ("testnet/lib", "testnet/app");

    // A requirement must be published first.
    let payload = fleet.make_payload(1).unwrap();
    let refused = fleet
        .publish_on(app, &payload, 1, &["--requires", "testnet/lib>=1"])
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains("requires testnet/lib>=1: no release of testnet/lib is published here"),
        "{refused}"
    );

    // The library is held on the Debian 12 server, so the application completes first there.
    ok(fleet
        .ctl(
            server12,
            &["hold", lib, "--reason", "maintenance", "--until", "1h"],
        )
        .unwrap());
    let lib1 = fleet
        .publish_on(lib, &payload, 1, &["--target", "os=debian12"])
        .unwrap();
    let payload2 = fleet.make_payload(2).unwrap();
    let app1 = fleet
        .publish_on(
            app,
            &payload2,
            1,
            &["--requires", "testnet/lib>=1", "--target", "role!=atm"],
        )
        .unwrap();

    let waits = wait_install(&fleet, server12, &app1, 60, |v| {
        v.state == InstallState::Blocked
    })
    .await;
    assert_eq!(waits.reason.as_deref(), Some("waits for testnet/lib>=1"));
    let text = ok(fleet.ctl(server12, &["status"]).unwrap());
    assert!(
        String::from_utf8_lossy(&text.stdout)
            .contains("waiting on the rollout: waits for testnet/lib>=1"),
        "{}",
        String::from_utf8_lossy(&text.stdout)
    );
    // The Debian 11 server: the library is not for it, so nothing to wait for.
    let not_for = wait_install(&fleet, server11, &lib1, 60, |v| {
        v.state == InstallState::NotTargeted
    })
    .await;
    assert_eq!(
        not_for.reason.as_deref(),
        Some("the release targets os=debian12")
    );
    wait_install(&fleet, server11, &app1, 60, |v| {
        v.state == InstallState::Installed
    })
    .await;
    fleet
        .wait_complete(server11, &lib1, Duration::from_secs(30))
        .await
        .unwrap();
    // The ATM installs the library, never the application, and holds both.
    wait_install(&fleet, atm, &lib1, 60, |v| {
        v.state == InstallState::Installed
    })
    .await;
    wait_install(&fleet, atm, &app1, 60, |v| {
        v.state == InstallState::NotTargeted
    })
    .await;
    fleet
        .wait_complete(atm, &app1, Duration::from_secs(30))
        .await
        .unwrap();

    // Lifted: the library installs, then the application, in that order.
    ok(fleet.ctl(server12, &["unhold", lib]).unwrap());
    wait_install(&fleet, server12, &app1, 60, |v| {
        v.state == InstallState::Installed
    })
    .await;
    let applied = |k: usize| std::fs::read_to_string(&logs[k]).unwrap();
    assert_eq!(applied(0), "testnet/lib 1\ntestnet/app 1\n");
    assert_eq!(applied(1), "testnet/app 1\n");
    assert_eq!(applied(2), "testnet/lib 1\n");

    // The fleet view counts only the nodes a release targets: the application is for the
    // two servers (and the origin, which installs nothing), not the ATM.
    // (The ATM's record reaches this member's view with its aggregator's next relay.)
    let view = fleet
        .fleet_view(server12, &app1, |r| {
            r.states.activated == 2 && r.states.not_targeted == 1
        })
        .await;
    assert_eq!(view.nodes, 3, "{view:?}");
    let report = ok(fleet.ctl(server12, &["--json", "report"]).unwrap());
    let rows: Vec<store::fleet::ComplianceRow> = serde_json::from_slice(&report.stdout).unwrap();
    let row = rows.iter().find(|r| r.release == app1).unwrap();
    assert_eq!(
        (row.installers, row.activated, row.missing_total),
        (2, 2, 0),
        "{row:?}"
    );

    // A cycle: the library's next version requiring the application, whose newest
    // version requires the library.
    let payload3 = fleet.make_payload(3).unwrap();
    let cycle = fleet
        .publish_on(lib, &payload3, 2, &["--requires", "testnet/app>=1"])
        .unwrap_err()
        .to_string();
    assert!(
        cycle.contains("a cycle, testnet/lib -> testnet/app -> testnet/lib"),
        "{cycle}"
    );
    // A selector that does not parse is refused before any byte is read.
    let bad = fleet
        .publish_on(lib, &payload3, 2, &["--target", "os"])
        .unwrap_err()
        .to_string();
    assert!(bad.contains("target: \"os\" is not key=value"), "{bad}");
}

/// Waits until every node of `nodes` holds fleet orders of at least `version`; returns
/// how long the last took.
async fn wait_orders(fleet: &Fleet, nodes: &[usize], version: u64, since: Instant) -> Duration {
    let mut last = Duration::ZERO;
    for &i in nodes {
        loop {
            let out = fleet.ctl(i, &["--json", "rollout", "orders"]).unwrap();
            let v: api::OrdersView = serde_json::from_slice(&out.stdout).unwrap();
            if v.version >= version {
                last = last.max(since.elapsed());
                break;
            }
            assert!(
                since.elapsed() < Duration::from_secs(60),
                "node {i} holds orders v{} still",
                v.version
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    last
}

/// Three sites of four installing nodes, in a fleet with a root; in each, one canary
/// (`ring=0`), one pilot (`ring=1`), two in the broad ring. With a gate of every node
/// installed, none failed and a 10 s soak: the pilots install only once every canary
/// installed and the soak passed, the broad ring once every pilot did; each ring opens on
/// every node within 10 s of its gate's instant. Then a canary whose apply command fails
/// halts the next version on every pilot and broad node, within 10 s, and the fleet view
/// says so. Once the canary is fixed, an operator's `rollout resume` reaches every node
/// within 10 s, the failed canary tries once more and installs, and the rings go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rings_open_in_order_on_every_node_and_a_failing_canary_halts_the_rest() {
    const SOAK_S: i64 = 10;
    let s = Scenario::parse(
        "name = 'rings'\nseed = 9\ntimeout_s = 240\nmembership = true\n[release]\nsize_mib = 1\n\
         [origin]\nup_mbit = 200\n[wan]\nlatency_ms = 5\n\
         [[sites]]\nname = 's1'\nnodes = 4\n[[sites]]\nname = 's2'\nnodes = 4\n\
         [[sites]]\nname = 's3'\nnodes = 4\n",
    )
    .unwrap();
    let (_guard, dir) = workdir();
    let mut fleet = Fleet::start(s, &dir, true).await.unwrap();
    let n = fleet.nodes.len();
    // Node k of each site (k = 0..4): ring=0 for k = 0, ring=1 for k = 1.
    let ring_of = |i: usize| (i - 1) % 4;
    for i in 1..n {
        let data = fleet.nodes[i].data.clone();
        // A broken node's apply command fails once `go` is there: the test first sees every
        // later ring hold the release and wait, so that what it times is the halt alone.
        let apply = format!(
            "if [ -e {0}/broken ]; then while [ ! -e {0}/go ]; do sleep 0.1; done; \
             echo 'service would not restart' >&2; exit 4; fi",
            data.display()
        );
        let label = match ring_of(i) {
            0 => vec![("ring", "0")],
            1 => vec![("ring", "1")],
            _ => vec![],
        };
        fleet.make_installer(i, &apply, &label).await.unwrap();
    }
    fleet.wait_connected(Duration::from_secs(90)).await.unwrap();
    let canaries: Vec<usize> = (1..n).filter(|&i| ring_of(i) == 0).collect();
    let pilots: Vec<usize> = (1..n).filter(|&i| ring_of(i) == 1).collect();
    let broad: Vec<usize> = (1..n).filter(|&i| ring_of(i) >= 2).collect();
    let rings = "canary: labels ring=0; pilot: labels ring=1; broad: rest";
    let gate = format!("installed>=100%,failed<=0%,soak={SOAK_S}s");

    let payload = fleet.make_payload(1).unwrap();
    let v1 = fleet
        .publish_with(&payload, 1, &["--rings", rings, "--gate", &gate])
        .unwrap();
    let installed = |v: &InstallView| v.state == InstallState::Installed;
    let mut canary_at = 0;
    for &i in &canaries {
        canary_at = canary_at.max(at_s(&wait_install(&fleet, i, &v1, 90, installed).await));
    }
    // A pilot knows its ring, and has not installed before the canaries' soak.
    let pilot = install_of(&fleet, pilots[0], &v1).await.unwrap();
    assert_eq!(pilot.ring.as_deref(), Some("pilot"));
    assert!(
        pilot.state != InstallState::Installed || at_s(&pilot) >= canary_at + SOAK_S - 1,
        "{pilot:?}"
    );
    let mut pilot_at = 0;
    let mut pilot_first = i64::MAX;
    for &i in &pilots {
        let at = at_s(&wait_install(&fleet, i, &v1, 90, installed).await);
        pilot_at = pilot_at.max(at);
        pilot_first = pilot_first.min(at);
    }
    let mut broad_at = 0;
    let mut broad_first = i64::MAX;
    for &i in &broad {
        let at = at_s(&wait_install(&fleet, i, &v1, 90, installed).await);
        broad_at = broad_at.max(at);
        broad_first = broad_first.min(at);
    }
    // Each ring after the one before soaked (install times are whole seconds)...
    assert!(
        pilot_first >= canary_at + SOAK_S - 1,
        "{pilot_first} vs {canary_at}"
    );
    assert!(
        broad_first >= pilot_at + SOAK_S - 1,
        "{broad_first} vs {pilot_at}"
    );
    // ...and on every node within 10 s of the gate's instant.
    let pilot_lag = pilot_at - (canary_at + SOAK_S);
    let broad_lag = broad_at - (pilot_at + SOAK_S);
    eprintln!(
        "ring gates took effect on every node within {pilot_lag} s (pilot) and {broad_lag} s (broad)"
    );
    assert!(
        pilot_lag <= 10 && broad_lag <= 10,
        "{pilot_lag} s, {broad_lag} s"
    );

    // Version 2: one canary's apply command fails; a failure share over 0 % halts the rest.
    std::fs::write(fleet.nodes[canaries[0]].data.join("broken"), b"").unwrap();
    let payload2 = fleet.make_payload(2).unwrap();
    let v2 = fleet
        .publish_with(&payload2, 2, &["--rings", rings, "--gate", &gate])
        .unwrap();
    for &i in pilots.iter().chain(&broad) {
        wait_install(&fleet, i, &v2, 90, |v| {
            v.reason
                .as_deref()
                .is_some_and(|r| r.contains("waits for ring"))
        })
        .await;
    }
    std::fs::write(fleet.nodes[canaries[0]].data.join("go"), b"").unwrap();
    let failed = wait_install(&fleet, canaries[0], &v2, 90, |v| {
        v.state == InstallState::Failed
    })
    .await;
    let failed_at = at_s(&failed);
    // Every later-ring node is watched at once, from the failure on: when each first says
    // the rollout halted (whole seconds, as the failure's time is).
    let seen = futures_util::future::join_all(pilots.iter().chain(&broad).map(|&i| {
        let v2 = v2.clone();
        let fleet = &fleet;
        async move {
            let v = wait_install(fleet, i, &v2, 60, |v| {
                v.reason
                    .as_deref()
                    .is_some_and(|r| r.starts_with("rollout halted"))
            })
            .await;
            (i, v, jiff::Timestamp::now().as_second())
        }
    }))
    .await;
    let mut halt_lag = 0;
    for (i, v, at) in seen {
        assert_eq!(v.state, InstallState::Blocked, "node {i}: {v:?}");
        halt_lag = halt_lag.max(at - failed_at);
    }
    eprintln!("the halt reached every node within {halt_lag} s");
    assert!(halt_lag <= 10, "{halt_lag} s");
    for &i in &canaries[1..] {
        wait_install(&fleet, i, &v2, 90, installed).await;
    }
    // It stays halted: nothing of rings pilot and broad installs.
    tokio::time::sleep(Duration::from_secs(SOAK_S as u64 + 2)).await;
    for &i in pilots.iter().chain(&broad) {
        let v = install_of(&fleet, i, &v2).await.unwrap();
        assert_eq!(v.state, InstallState::Blocked, "node {i}: {v:?}");
        // The figures a halted node holds are read again every 30 s: one canary failed, of
        // two or three counted.
        assert!(v.reason.unwrap().contains("ring canary has 1/"), "node {i}");
    }
    // The fleet view says so.
    let stopped = (pilots.len() + broad.len()) as u64;
    let view = fleet
        .fleet_view(pilots[1], &v2, |r| {
            r.states.waiting == stopped && r.states.failed == 1
        })
        .await;
    assert_eq!(view.rings[0].failed, 1, "{view:?}");
    assert!(
        view.reasons
            .iter()
            .any(|x| x.state == "waiting" && x.reason.starts_with("rollout halted")),
        "{view:?}"
    );
    assert!(
        view.warnings.iter().any(|w| w.contains("halted")),
        "{:?}",
        view.warnings
    );

    // The fix: the canary's service restarts again. An operator resumes the release on a
    // broad node; the order reaches every node, the canary tries once more.
    std::fs::remove_file(fleet.nodes[canaries[0]].data.join("broken")).unwrap();
    let key = fleet.operator_key();
    let key = key.to_str().unwrap();
    let resumed = Instant::now();
    ok(fleet
        .ctl(
            broad[0],
            &[
                "rollout",
                "resume",
                &v2,
                "--reason",
                "CHG-12 service fixed",
                "--key",
                key,
            ],
        )
        .unwrap());
    let all: Vec<usize> = (0..n).collect();
    let spread = wait_orders(&fleet, &all, 1, resumed).await;
    let retried = wait_install(&fleet, canaries[0], &v2, 30, installed).await;
    let took = resumed.elapsed();
    eprintln!(
        "rollout resume reached all {n} nodes within {:.1} s; the failed canary installed {:.1} s after the command",
        spread.as_secs_f64(),
        took.as_secs_f64()
    );
    assert!(spread <= Duration::from_secs(10), "{spread:?}");
    assert!(took <= Duration::from_secs(10), "{took:?}");
    // The rings go on: pilots after the canary ring soaked again, then the broad ring.
    let fixed_at = at_s(&retried);
    for &i in &pilots {
        let v = wait_install(&fleet, i, &v2, 90, installed).await;
        assert!(at_s(&v) >= fixed_at + SOAK_S - 1, "node {i}: {v:?}");
    }
    for &i in &broad {
        wait_install(&fleet, i, &v2, 90, installed).await;
    }
    // Every node's audit log has the order, and the canary's has its second try.
    let audit = fleet.ctl(pilots[2], &["--json", "audit"]).unwrap();
    assert!(String::from_utf8_lossy(&audit.stdout).contains("orders_taken"));
    let audit = fleet.ctl(canaries[0], &["--json", "audit"]).unwrap();
    assert!(String::from_utf8_lossy(&audit.stdout).contains("install_retried"));
}

/// Two sites of three installing nodes in a fleet with a root, one of them an ATM
/// (`role=atm`). Version 2 of a channel installed everywhere goes bad: an operator's fleet
/// rollback to version 1 switches every running node's `current` back within 10 s, each
/// node's status says "rolled back", and so does the fleet view; a node that was down during
/// the command does it when it returns. Then a fleet-wide hold keeps the fix (version 3)
/// off the ATM, which shows it held with the operator's reason while the servers install
/// it; and a rollback on one node alone takes it back to the version installed before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_rollback_and_a_fleet_hold_reach_every_node_and_one_that_was_down() {
    let s = Scenario::parse(
        "name = 'rollback'\nseed = 11\ntimeout_s = 240\nmembership = true\n\
         [release]\nsize_mib = 1\n[origin]\nup_mbit = 200\n[wan]\nlatency_ms = 5\n\
         [[sites]]\nname = 's1'\nnodes = 3\n[[sites]]\nname = 's2'\nnodes = 3\n",
    )
    .unwrap();
    let (_guard, dir) = workdir();
    let mut fleet = Fleet::start(s, &dir, true).await.unwrap();
    let n = fleet.nodes.len();
    let atm = 1;
    let mut targets = vec![std::path::PathBuf::new()];
    for i in 1..n {
        let role = if i == atm { "atm" } else { "server" };
        let target = fleet.make_installer(i, "true", &[("role", role)]).await;
        targets.push(target.unwrap());
    }
    fleet.wait_connected(Duration::from_secs(90)).await.unwrap();
    let channel = "testnet/rollback";
    let installed = |v: &InstallView| v.state == InstallState::Installed;
    let v1 = fleet.publish(&fleet.make_payload(1).unwrap(), 1).unwrap();
    for i in 1..n {
        wait_install(&fleet, i, &v1, 90, installed).await;
    }
    let v2 = fleet.publish(&fleet.make_payload(2).unwrap(), 2).unwrap();
    for i in 1..n {
        wait_install(&fleet, i, &v2, 90, installed).await;
    }
    let current = |i: usize| {
        std::fs::read_link(targets[i].join("testnet+rollback").join("current"))
            .unwrap()
            .display()
            .to_string()
    };
    assert!(current(2).starts_with("2-"), "{}", current(2));

    // The last node is down when the operator rolls the channel back.
    let down = n - 1;
    fleet.kill(down);
    let key = fleet.operator_key();
    let key = key.to_str().unwrap();
    let command = Instant::now();
    ok(fleet
        .ctl(
            2,
            &[
                "rollback",
                channel,
                "--to",
                "1",
                "--reason",
                "INC-77 v2 breaks logins",
                "--key",
                key,
            ],
        )
        .unwrap());
    let rolled_back = |v: &InstallView| v.state == InstallState::RolledBack;
    for i in 1..down {
        let v = wait_install(&fleet, i, &v2, 30, rolled_back).await;
        assert!(
            v.reason
                .as_deref()
                .unwrap()
                .contains("by a fleet order: INC-77"),
            "node {i}: {v:?}"
        );
        assert!(current(i).starts_with("1-"), "node {i}: {}", current(i));
    }
    let took = command.elapsed();
    eprintln!(
        "the fleet rollback took effect on all {} running nodes within {:.1} s",
        down - 1,
        took.as_secs_f64()
    );
    assert!(took <= Duration::from_secs(10), "{took:?}");
    assert_eq!(
        install_of(&fleet, 2, &v1).await.unwrap().state,
        InstallState::Installed
    );
    // The node that was down rolls back when it returns.
    fleet.start_node(down).unwrap();
    fleet.wait_ready(down).await.unwrap();
    wait_install(&fleet, down, &v2, 60, rolled_back).await;
    assert!(current(down).starts_with("1-"), "{}", current(down));
    let view = fleet
        .fleet_view(2, &v2, |r| r.states.rolled_back == (n - 1) as u64)
        .await;
    assert!(
        view.reasons
            .iter()
            .any(|x| x.state == "rolled back" && x.reason.contains("INC-77")),
        "{view:?}"
    );
    let audit = ok(fleet.ctl(down, &["--json", "audit"]).unwrap());
    let audit = String::from_utf8_lossy(&audit.stdout);
    assert!(audit.contains("orders_taken") && audit.contains("rolled_back"));

    // A fleet-wide hold for the ATMs; the fix, version 3, installs on the servers only.
    ok(fleet
        .ctl(
            2,
            &[
                "hold",
                channel,
                "--reason",
                "ATM vendor certification CHG-9",
                "--until",
                "2h",
                "--fleet",
                "role=atm",
                "--key",
                key,
            ],
        )
        .unwrap());
    let all: Vec<usize> = (0..n).collect();
    wait_orders(&fleet, &all, 2, Instant::now()).await;
    let v3 = fleet.publish(&fleet.make_payload(3).unwrap(), 3).unwrap();
    for i in 2..n {
        wait_install(&fleet, i, &v3, 90, installed).await;
    }
    let held = wait_install(&fleet, atm, &v3, 30, |v| v.state == InstallState::Held).await;
    assert!(
        held.reason
            .as_deref()
            .unwrap()
            .contains("fleet hold: ATM vendor certification"),
        "{held:?}"
    );
    // On one node alone, back to the version installed before the newest: version 1.
    ok(fleet
        .ctl(3, &["rollback", channel, "--reason", "local check"])
        .unwrap());
    let v = install_of(&fleet, 3, &v3).await.unwrap();
    assert_eq!(v.state, InstallState::RolledBack, "{v:?}");
    assert!(
        v.reason
            .as_deref()
            .unwrap()
            .contains("on this node: local check")
    );
    assert!(current(3).starts_with("1-"), "{}", current(3));
    assert!(current(4).starts_with("3-"), "{}", current(4));
}
