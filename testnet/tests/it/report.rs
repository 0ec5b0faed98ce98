//! The compliance report on real nodes: the same from any node once the summaries settle,
//! and still complete after more releases than a record or a summary names.

use std::time::{Duration, Instant};
use testnet::fleet::{Fleet, workdir};
use testnet::scenario::Scenario;

/// Releases published: more than a record or a summary names (32).
const RELEASES: u64 = 40;

/// Channels they are spread over (so newer versions cover older ones too).
const CHANNELS: u64 = 8;

/// `p2pctl --json report --since 1d` on node `i`.
fn report(fleet: &Fleet, i: usize) -> serde_json::Value {
    let out = fleet
        .ctl(i, &["--json", "report", "--since", "1d"])
        .unwrap();
    assert!(
        out.status.success(),
        "p2pctl report on node {i}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `p2pctl --json fleet RELEASE` on node `i`, cut to its states and its sites' figures.
fn fleet_view(fleet: &Fleet, i: usize, release: &str) -> String {
    let v = fleet_json(fleet, i, release);
    let sites: Vec<String> = v["sites"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| {
                    format!(
                        "{} {} nodes, {} holding, {} superseded, from {} age {}",
                        s["site"], s["nodes"], s["holding"], s["superseded"], s["from"], s["age_s"]
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    format!("node {i}: states {}; {sites:?}", v["states"])
}

/// What differs from complete in each report: its row count and its rows short of 12 of 12.
fn short(reports: &[serde_json::Value]) -> String {
    reports
        .iter()
        .map(|r| {
            let rows = r.as_array().unwrap();
            let behind: Vec<String> = rows
                .iter()
                .filter(|row| row["installers"] != 12 || row["activated"] != 12)
                .map(|row| {
                    format!(
                        "{} v{} {}/{} nodes {}",
                        row["channel"],
                        row["version"],
                        row["activated"],
                        row["installers"],
                        row["nodes"]
                    )
                })
                .collect();
            format!("{} rows; short: {behind:?}", rows.len())
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Three sites of four installing nodes; 40 small releases over 8 channels, the first of
/// them critical and installed everywhere before the other 39 come. Then
/// `p2pctl --json report --since 1d` on a node of each site prints the same report, with a
/// row for each of the 40: the first too, though no record or summary has named it since;
/// and so does a node asked for the first time at the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_is_the_same_from_every_site_and_keeps_the_first_of_forty_releases() {
    let (_guard, dir) = workdir();
    let sites: String = ["tokyo", "frankfurt", "saopaulo"]
        .iter()
        .map(|s| format!("[[sites]]\nname = '{s}'\nnodes = 4\ninstall = true\n"))
        .collect();
    let s = Scenario::parse(&format!(
        "name = 'report'\nseed = 9\ntimeout_s = 300\n[release]\nsize_mib = 1\n\
         [origin]\nup_mbit = 200\n[wan]\nlatency_ms = 2\n{sites}"
    ))
    .unwrap();
    let fleet = Fleet::start(s, &dir, true).await.unwrap();
    fleet
        .wait_connected(Duration::from_secs(120))
        .await
        .unwrap();
    let publish = |k: u64| {
        let payload = dir.join(format!("small-{k}"));
        std::fs::create_dir_all(&payload).unwrap();
        std::fs::write(
            payload.join("patch.txt"),
            format!("patch {k}\n").repeat(512),
        )
        .unwrap();
        let channel = format!("security/c{}", k % CHANNELS);
        let severity = if k == 0 { "critical" } else { "medium" };
        fleet
            .publish_on(
                &channel,
                &payload,
                1 + k / CHANNELS,
                &["--severity", severity],
            )
            .unwrap()
    };
    let first = publish(0);
    let members = [1, 6, 11]; // tokyo-1, frankfurt-2, saopaulo-3
    let complete = |r: &serde_json::Value, n: usize| {
        let rows = r.as_array().unwrap();
        rows.len() == n
            && rows
                .iter()
                .all(|row| row["installers"] == 12 && row["activated"] == 12)
    };
    let deadline = Instant::now() + Duration::from_secs(180);
    while !members.iter().all(|&i| complete(&report(&fleet, i), 1)) {
        assert!(
            Instant::now() < deadline,
            "the first release was not installed everywhere:\n{}",
            short(&members.map(|i| report(&fleet, i)))
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    for k in 1..RELEASES {
        publish(k);
    }
    let deadline = Instant::now() + Duration::from_secs(240);
    let reports = loop {
        let reports: Vec<serde_json::Value> = members.iter().map(|&i| report(&fleet, i)).collect();
        if reports.iter().all(|r| complete(r, RELEASES as usize))
            && reports.iter().all(|r| *r == reports[0])
        {
            break reports;
        }
        if Instant::now() >= deadline {
            let behind = reports[0]
                .as_array()
                .unwrap()
                .iter()
                .find(|row| row["activated"] != 12)
                .map(|row| row["release"].as_str().unwrap_or_default().to_owned());
            let views: Vec<String> = match &behind {
                Some(id) => members.iter().map(|&i| fleet_view(&fleet, i, id)).collect(),
                None => Vec::new(),
            };
            // The first row in which a report differs from the first one's.
            let differ: Vec<String> = reports
                .iter()
                .zip(members)
                .skip(1)
                .filter_map(|(r, i)| {
                    let a = reports[0].as_array()?;
                    let b = r.as_array()?;
                    a.iter()
                        .zip(b)
                        .find(|(x, y)| x != y)
                        .map(|(x, y)| format!("node {}: {x}\nnode {i}: {y}", members[0]))
                })
                .collect();
            panic!(
                "the reports did not settle on 40 complete rows:\n{}\n{behind:?}:\n{}\n{}",
                short(&reports),
                views.join("\n"),
                differ.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    // Nodes never asked before print the same at once: their first report reads their
    // aggregator's ledgers, not only the latest summaries (which name a few releases each).
    for i in [2, 3, 4, 7, 12] {
        let r = report(&fleet, i);
        assert!(
            r == reports[0],
            "node {i}, asked once:\n{}",
            short(std::slice::from_ref(&r))
        );
    }
    let rows = reports[0].as_array().unwrap();
    let row = rows
        .iter()
        .find(|r| r["release"] == first.as_str())
        .unwrap();
    assert_eq!(row["severity"], "critical");
    assert_eq!(row["deadline"], "met", "{row:#}");
    eprintln!(
        "{} rows, identical on tokyo-1, frankfurt-2 and saopaulo-3; the first: {row}",
        rows.len()
    );
}

/// `p2pctl --json fleet RELEASE` on node `i`, parsed.
fn fleet_json(fleet: &Fleet, i: usize, release: &str) -> serde_json::Value {
    let out = fleet.ctl(i, &["--json", "fleet", release]).unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "p2pctl fleet on node {i}: {e}: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// A node stopped before a release comes is counted silent once it has sent no record for
/// the bound (`[node] silent_after_s`, 20 s here), not "not yet known"; the estimate leaves
/// it out, and the report names it silent. `p2pctl node forget` then retires it from the
/// view and the report on every node of its site (and refuses a node that is not silent).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_node_turns_silent_after_the_bound_and_leaves_the_estimate() {
    let (_guard, dir) = workdir();
    let s = Scenario::parse(
        "name = 'silent'\nseed = 5\ntimeout_s = 120\nsilent_after_s = 20\n\
         [release]\nsize_mib = 1\n[origin]\nup_mbit = 200\n[wan]\nlatency_ms = 2\n\
         [[sites]]\nname = 'branch'\nnodes = 3\ninstall = true\n",
    )
    .unwrap();
    let mut fleet = Fleet::start(s, &dir, true).await.unwrap();
    fleet.wait_connected(Duration::from_secs(60)).await.unwrap();
    // Every member's first record has reached the others before one of them stops.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let stopped = 3;
    fleet.kill(stopped);
    let payload = fleet.make_payload(1).unwrap();
    let id = fleet.publish(&payload, 1).unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    let view = loop {
        let v = fleet_json(&fleet, 1, &id);
        let s = &v["states"];
        // The origin's site summary comes too: every node then counted.
        if s["activated"] == 2 && s["silent"] == 1 && s["unknown"] == 0 {
            break v;
        }
        assert!(Instant::now() < deadline, "never silent: {:#}", v["states"]);
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    // Silent because its last record is older than the bound (the bound counts from the
    // record, which may be older than the stop), and only that node.
    let out = fleet
        .ctl(1, &["--json", "fleet", &id, "--site", "branch"])
        .unwrap();
    let detail: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let silent: Vec<&serde_json::Value> = detail["nodes_detail"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["state"] == "silent")
        .collect();
    assert_eq!(silent.len(), 1, "{:#}", detail["nodes_detail"]);
    let age = now - silent[0]["record_at_unix_s"].as_i64().unwrap();
    assert!(age >= 20, "silent with a record {age} s old");
    assert!(
        view["eta_s"].is_null(),
        "a silent node is left out of the estimate"
    );
    let rows = report(&fleet, 1);
    let row = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["release"] == id.as_str())
        .unwrap()
        .clone();
    assert_eq!(row["activated"], 2, "{row:#}");
    assert_eq!(row["missing_total"], 1, "{row:#}");
    assert_eq!(row["missing"][0]["state"], "silent", "{row:#}");
    let installers = row["installers"].as_u64().unwrap();
    let nodes = view["nodes"].as_u64().unwrap();

    // `p2pctl node forget`: refused for a node that is not silent, done for the silent
    // one, which then leaves the view and the report on every node of the site.
    let ctl = |i: usize, args: &[&str]| fleet.ctl(i, args).unwrap();
    let live = detail["nodes_detail"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["state"] == "activated")
        .unwrap()["node"]
        .as_str()
        .unwrap()
        .to_owned();
    let refused = ctl(1, &["node", "forget", &live]);
    assert!(!refused.status.success());
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(why.contains("silent"), "{why}");
    let gone = silent[0]["node"].as_str().unwrap().to_owned();
    // Refused while node 1's connection to it has not timed out yet (`IDLE_TIMEOUT`).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let done = ctl(1, &["--json", "node", "forget", &gone]);
        if done.status.success() {
            break;
        }
        let why = String::from_utf8_lossy(&done.stderr);
        assert!(why.contains("is up"), "{why}");
        assert!(Instant::now() < deadline, "never forgotten: {why}");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let views: Vec<serde_json::Value> =
            [1, 2].iter().map(|&i| fleet_json(&fleet, i, &id)).collect();
        let reports: Vec<serde_json::Value> = [1, 2].iter().map(|&i| report(&fleet, i)).collect();
        let row_of = |r: &serde_json::Value| {
            r.as_array()
                .unwrap()
                .iter()
                .find(|x| x["release"] == id.as_str())
                .cloned()
                .unwrap()
        };
        let left = views
            .iter()
            .all(|v| v["nodes"].as_u64() == Some(nodes - 1) && v["states"]["silent"] == 0)
            && reports.iter().map(row_of).all(|r| {
                r["installers"].as_u64() == Some(installers - 1) && r["missing_total"] == 0
            });
        if left {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the forgotten node is still counted: {:#} {:#}",
            views[1]["states"],
            row_of(&reports[1])
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let audit = ctl(1, &["--json", "audit"]);
    assert!(
        String::from_utf8_lossy(&audit.stdout).contains("node_forgotten"),
        "the retirement is audited"
    );
}
