use super::*;
use ed25519_dalek::SigningKey;
use protocol::status::ReleaseStatus;
use protocol::summary::{Contact, LedgerEntry, LedgerPage, SignedSummary, SummaryBody};

const NOW: i64 = 1_795_392_000;
const R1: ReleaseId = ReleaseId([1; 32]);
const R2: ReleaseId = ReleaseId([2; 32]);

fn key(k: u8) -> SigningKey {
    SigningKey::from_bytes(&[k; 32])
}

fn node(k: u8) -> NodeId {
    NodeId(key(k).verifying_key().to_bytes())
}

/// Release `id` (version `v` of `security/x`, 100 chunks) in `state` since `since`.
fn rel(id: ReleaseId, v: u64, state: ReleaseState, since: i64) -> ReleaseStatus {
    ReleaseStatus {
        release: id,
        channel: "security/x".into(),
        version: v,
        published_unix_s: NOW,
        severity: protocol::Severity::High,
        state,
        chunks_have: if state.has_release() { 100 } else { 40 },
        chunks_total: 100,
        since_unix_s: since,
        until_unix_s: (state == ReleaseState::PausedByWindow).then_some(NOW + 3600),
        error: (state == ReleaseState::Failed).then(|| "apply command exited with status 3".into()),
        ring: 0,
    }
}

fn body(k: u8, site: &str, installs: bool, seq: u64, releases: Vec<ReleaseStatus>) -> StatusBody {
    StatusBody {
        node: node(k),
        site: site.into(),
        installs,
        seq,
        at_unix_s: NOW,
        releases,
    }
}

fn record(k: u8, site: &str, installs: bool, seq: u64, releases: Vec<ReleaseStatus>) -> Vec<u8> {
    SignedStatus::sign(&body(k, site, installs, seq, releases), &key(k)).encode()
}

/// The summary aggregator `k` makes of `records` (all of `site`).
fn summary(k: u8, site: &str, seq: u64, at: i64, records: &[StatusBody]) -> Vec<u8> {
    let refs: Vec<&StatusBody> = records.iter().collect();
    let b = SummaryBody {
        site: site.into(),
        aggregator: node(k),
        seq,
        at_unix_s: at,
        nodes: records.len() as u32,
        installers: records.iter().filter(|b| b.installs).count() as u32,
        contacts: vec![Contact {
            node: node(k),
            wan: "192.0.2.1:7402".parse().unwrap(),
        }],
        releases: protocol::summary::site_releases(&refs, None),
    };
    SignedSummary::sign(&b, &key(k)).encode()
}

fn facts(id: ReleaseId, version: u64, critical: bool) -> ReleaseFacts {
    ReleaseFacts {
        id,
        channel: "security/x".into(),
        version,
        severity: if critical { "critical" } else { "high" }.into(),
        critical,
        published_unix_s: NOW,
        chunks_total: 100,
    }
}

#[test]
fn only_newer_verified_records_of_this_site_are_kept() {
    use ReleaseState::*;
    let fleet = Fleet::new("hq");
    fleet
        .offer_record(&record(
            1,
            "hq",
            true,
            5,
            vec![rel(R1, 1, Downloading, NOW)],
        ))
        .unwrap();
    assert_eq!(
        fleet.offer_record(&record(1, "hq", true, 4, vec![rel(R1, 1, Complete, NOW)])),
        Err(OfferError::NotNewer)
    );
    assert_eq!(
        fleet.offer_record(&record(1, "hq", true, 5, vec![])),
        Err(OfferError::NotNewer)
    );
    assert_eq!(
        fleet.offer_record(&record(2, "branch-1", true, 1, vec![])),
        Err(OfferError::OtherSite("branch-1".into()))
    );
    let mut forged = SignedStatus::decode(&record(1, "hq", true, 9, vec![])).unwrap();
    forged.body.push(0);
    assert!(matches!(
        fleet.offer_record(&forged.encode()),
        Err(OfferError::Invalid(_))
    ));
    assert_eq!(fleet.report(&R1, None, NOW).states.downloading, 1);
    fleet
        .offer_record(&record(1, "hq", true, 6, vec![rel(R1, 1, Complete, NOW)]))
        .unwrap();
    let dirty = fleet.take_dirty();
    assert_eq!((dirty.records.len(), dirty.summaries.len()), (1, 0));
    assert_eq!(
        dirty.node_ledgers.len(),
        1,
        "the node's ledger goes with its record"
    );
    assert!(fleet.take_dirty().is_empty());
    let again = Fleet::from_stored("hq", dirty);
    assert_eq!(again.report(&R1, None, NOW).states.complete, 1);
}

#[test]
fn summaries_of_other_sites_only_newer_and_not_from_the_future() {
    use ReleaseState::*;
    let fleet = Fleet::new("hq");
    let site = [body(
        10,
        "branch-1",
        true,
        1,
        vec![rel(R1, 1, Complete, NOW)],
    )];
    fleet
        .offer_summary(&summary(10, "branch-1", 5, NOW, &site), NOW)
        .unwrap();
    assert_eq!(
        fleet.offer_summary(&summary(10, "branch-1", 5, NOW, &site), NOW),
        Err(OfferError::NotNewer)
    );
    assert_eq!(
        fleet.offer_summary(&summary(11, "branch-1", 4, NOW, &site), NOW),
        Err(OfferError::NotNewer),
        "the other aggregator's older summary"
    );
    assert_eq!(
        fleet.offer_summary(&summary(11, "hq", 9, NOW, &site), NOW),
        Err(OfferError::OwnSite)
    );
    assert!(matches!(
        fleet.offer_summary(&summary(11, "branch-2", 9, NOW + 3600, &site), NOW),
        Err(OfferError::FromTheFuture(_))
    ));
    // A number far ahead of the clock would keep the site's real summaries out for good.
    assert!(matches!(
        fleet.offer_summary(&summary(12, "branch-1", u64::MAX, NOW, &site), NOW),
        Err(OfferError::FromTheFuture(_))
    ));
    // The other aggregator's newer one replaces it.
    fleet
        .offer_summary(&summary(11, "branch-1", 6, NOW, &site), NOW)
        .unwrap();
    let r = fleet.report(&R1, None, NOW + 30);
    let b1 = r.sites.iter().find(|s| s.site == "branch-1").unwrap();
    assert_eq!(b1.aggregator.as_deref(), Some(node(11).to_hex().as_str()));
    assert_eq!((b1.from.as_str(), b1.age_s), ("summary", Some(30)));
    assert_eq!(fleet.contacts().len(), 1);
}

/// A fleet of three sites: `hq` (this node's, records), `branch-1` and `branch-2`
/// (summaries).
fn three_sites() -> Fleet {
    use ReleaseState::*;
    let fleet = Fleet::new("hq");
    for (k, installs, rels) in [
        (1, true, vec![rel(R1, 1, Activated, NOW + 600)]),
        (2, true, vec![rel(R1, 1, Complete, NOW + 300)]),
        // The origin: publishes, never installs.
        (3, false, vec![rel(R1, 1, Complete, NOW)]),
    ] {
        fleet
            .offer_record(&record(k, "hq", installs, 1, rels))
            .unwrap();
    }
    let b1 = [
        body(10, "branch-1", true, 1, vec![rel(R1, 1, Downloading, NOW)]),
        body(11, "branch-1", true, 1, vec![]),
        body(12, "branch-1", true, 1, vec![rel(R1, 1, Failed, NOW + 900)]),
        body(
            13,
            "branch-1",
            true,
            1,
            vec![rel(R1, 1, PausedByWindow, NOW)],
        ),
    ];
    fleet
        .offer_summary(&summary(10, "branch-1", 1, NOW, &b1), NOW)
        .unwrap();
    let b2 = [
        body(
            20,
            "branch-2",
            true,
            1,
            vec![rel(R1, 1, Activated, NOW + 60)],
        ),
        body(21, "branch-2", true, 1, vec![rel(R1, 1, Refused, NOW)]),
        body(22, "branch-2", true, 1, vec![rel(R1, 1, NotFollowed, NOW)]),
    ];
    fleet
        .offer_summary(&summary(20, "branch-2", 1, NOW, &b2), NOW)
        .unwrap();
    fleet
}

#[test]
fn a_report_counts_every_node_once_across_records_and_summaries() {
    let fleet = three_sites();
    // Within SILENT_AFTER of the records: every node still speaks.
    let r = fleet.report(&R1, None, NOW + 600);
    assert_eq!(r.nodes, 10);
    assert_eq!(r.states.total(), r.nodes, "{:?}", r.states);
    let s = &r.states;
    assert_eq!(
        (
            s.activated,
            s.complete,
            s.downloading,
            s.unknown,
            s.failed,
            s.paused
        ),
        (2, 2, 1, 1, 1, 1)
    );
    assert_eq!((s.refused, s.not_followed), (1, 1));
    assert_eq!(r.channel, "security/x");
    let order: Vec<&str> = r.sites.iter().map(|x| x.site.as_str()).collect();
    assert_eq!(order, ["branch-1", "branch-2", "hq"]);
    assert_eq!(r.sites[2].from, "records");
    assert_eq!(r.failed.len(), 1);
    assert_eq!(r.failed[0].site, "branch-1");
    assert_eq!(r.failed[0].node, node(12).to_hex());
    // The paused node waits for its window, which opens in an hour; nodes that failed,
    // refused it or do not follow it are not waited for: the ETA waits for 2 nodes.
    assert_eq!(r.window_opens_unix_s, Some(NOW + 3600));
    assert_eq!(s.moving(), 2);
}

#[test]
fn a_newer_installed_version_covers_an_older_release_in_the_view_and_the_report() {
    use ReleaseState::*;
    let fleet = Fleet::new("hq");
    // Three installing nodes: one installed v1, two went straight to v2 (one of them
    // completed v1 first); one node publishes and never installs.
    fleet
        .offer_record(&record(
            1,
            "hq",
            true,
            1,
            vec![rel(R1, 1, Activated, NOW + 3600)],
        ))
        .unwrap();
    fleet
        .offer_record(&record(
            2,
            "hq",
            true,
            1,
            vec![rel(R1, 1, Complete, NOW), rel(R2, 2, Activated, NOW + 7200)],
        ))
        .unwrap();
    fleet
        .offer_record(&record(
            3,
            "hq",
            true,
            1,
            vec![rel(R2, 2, Activated, NOW + 60)],
        ))
        .unwrap();
    fleet
        .offer_record(&record(4, "hq", false, 1, vec![rel(R1, 1, Complete, NOW)]))
        .unwrap();
    let r = fleet.report(&R1, Some(&facts(R1, 1, true)), NOW + 10_000);
    assert_eq!((r.states.activated, r.states.superseded), (1, 2));
    assert_eq!(
        r.states.unknown, 0,
        "a node running v2 does not read as not knowing v1"
    );
    assert_eq!(r.states.moving(), 0);
    assert_eq!(r.eta_s, None);
    let rows = fleet.compliance(&[facts(R1, 1, true)], NOW + 80 * 3600);
    let c = &rows[0];
    assert_eq!((c.nodes, c.installers, c.activated), (4, 3, 3));
    assert_eq!(
        (c.installed, c.covered),
        (1, 2),
        "applied: one installed, two covered"
    );
    assert_eq!(
        c.missing_total, 0,
        "the node that never installs is not missing it"
    );
    assert!(c.missing.is_empty());
    assert_eq!(
        c.deadline, "met",
        "every installing node runs v1 or v2 within 72 h"
    );
    // 50 % of 3 is the second install (1 h after publishing), read back at most 25 % late.
    let to_50 = c.to_50_s.unwrap();
    assert!((3600..=4500).contains(&to_50), "{to_50}");
}

#[test]
fn a_critical_release_not_installed_in_time_reads_missed_and_names_the_missing() {
    use ReleaseState::*;
    let fleet = Fleet::new("hq");
    fleet
        .offer_record(&record(
            1,
            "hq",
            true,
            1,
            vec![rel(R1, 1, Activated, NOW + 3600)],
        ))
        .unwrap();
    fleet
        .offer_record(&record(
            2,
            "hq",
            true,
            1,
            vec![rel(R1, 1, Downloading, NOW)],
        ))
        .unwrap();
    let early = fleet.compliance(&[facts(R1, 1, true)], NOW + 3600 * 10);
    assert_eq!(early[0].deadline, "open");
    let late = fleet.compliance(&[facts(R1, 1, true), facts(R1, 1, false)], NOW + 3600 * 73);
    assert_eq!(late[0].deadline, "missed");
    assert_eq!(late[1].deadline, "n/a");
    assert_eq!(late[0].missing_total, 1);
    assert_eq!(late[0].missing[0].node, node(2).to_hex());
    // Its last record, 73 hours old, said downloading: it is silent now.
    assert_eq!(late[0].missing[0].state, "silent");
    // Other sites' missing nodes are counted by site.
    let b1 = [
        body(10, "branch-1", true, 1, vec![]),
        body(11, "branch-1", true, 1, vec![]),
    ];
    fleet
        .offer_summary(&summary(10, "branch-1", 1, NOW, &b1), NOW)
        .unwrap();
    let rows = fleet.compliance(&[facts(R1, 1, true)], NOW + 3600 * 73);
    assert_eq!(rows[0].missing_total, 3);
    assert_eq!(
        rows[0].missing_sites,
        vec![MissingSite {
            site: "branch-1".into(),
            nodes: 2
        }]
    );
}

#[test]
fn the_rate_and_eta_come_from_progress_seen_over_time() {
    use ReleaseState::*;
    let fleet = Fleet::new("hq");
    for k in 1..=10u8 {
        fleet
            .offer_record(&record(
                k,
                "hq",
                false,
                1,
                vec![rel(R1, 1, Downloading, NOW)],
            ))
            .unwrap();
    }
    assert_eq!(fleet.report(&R1, None, NOW).holding_per_min, 0.0);
    // Two minutes later four nodes hold it: two per minute, the six left in three minutes.
    for k in 1..=4u8 {
        fleet
            .offer_record(&record(
                k,
                "hq",
                false,
                2,
                vec![rel(R1, 1, Complete, NOW + 100)],
            ))
            .unwrap();
    }
    let r = fleet.report(&R1, None, NOW + 120);
    assert!(
        (r.holding_per_min - 2.0).abs() < 1e-9,
        "{}",
        r.holding_per_min
    );
    assert!((r.eta_s.unwrap() - 180.0).abs() < 1e-6);
}

#[test]
fn a_site_asked_for_its_records_is_listed_node_by_node() {
    use ReleaseState::*;
    let fleet = three_sites();
    let asked = [
        body(10, "branch-1", true, 2, vec![rel(R1, 1, Complete, NOW)]),
        body(11, "branch-1", true, 2, vec![rel(R1, 1, Downloading, NOW)]),
        body(12, "branch-1", true, 2, vec![rel(R1, 1, Failed, NOW + 900)]),
        body(
            13,
            "branch-1",
            true,
            2,
            vec![rel(R1, 1, PausedByWindow, NOW)],
        ),
    ];
    let r = fleet.report_with(&R1, None, Some(("branch-1", &asked)), NOW + 600);
    assert_eq!(r.nodes_detail.len(), 4);
    let states: Vec<&str> = r.nodes_detail.iter().map(|d| d.state.as_str()).collect();
    assert!(states.contains(&"complete") && states.contains(&"failed"));
    let b1 = r.sites.iter().find(|s| s.site == "branch-1").unwrap();
    assert_eq!((b1.from.as_str(), b1.holding), ("records", 1));
    assert_eq!(r.states.total(), r.nodes);
}

#[test]
fn a_prefix_finds_releases_named_only_by_records_or_summaries() {
    use ReleaseState::*;
    let fleet = three_sites();
    // R2 is named only by another site's summary.
    let b3 = [body(
        30,
        "branch-3",
        true,
        1,
        vec![rel(R2, 2, Downloading, NOW)],
    )];
    fleet
        .offer_summary(&summary(30, "branch-3", 1, NOW, &b3), NOW)
        .unwrap();
    assert_eq!(fleet.releases_matching("0101"), vec![R1]);
    assert_eq!(fleet.releases_matching("0202"), vec![R2]);
    assert_eq!(fleet.releases_matching("0"), vec![R1, R2]);
    assert!(fleet.releases_matching("ffff").is_empty());
}

/// Release number `i` (its id's bytes all `i`), version 1 of a channel of its own, published
/// `i` hours after `NOW`, installed (`Activated`) an hour after that.
fn installed(i: u8) -> ReleaseStatus {
    let published = NOW + i64::from(i) * 3600;
    ReleaseStatus {
        release: ReleaseId([i; 32]),
        channel: format!("security/c{i}"),
        version: 1,
        published_unix_s: published,
        severity: if i % 10 == 0 {
            protocol::Severity::Critical
        } else {
            protocol::Severity::Medium
        },
        state: ReleaseState::Activated,
        chunks_have: 100,
        chunks_total: 100,
        since_unix_s: published + 3600,
        until_unix_s: None,
        error: None,
        ring: 0,
    }
}

/// A month's worth in miniature: 40 releases installed one after another, each record
/// naming only the newest 32 (as a record's picks would once the first ones settled).
fn forty_records(k: u8, site: &str) -> Vec<Vec<u8>> {
    (0..40u8)
        .map(|i| {
            let releases = (i.saturating_sub(31)..=i).rev().map(installed).collect();
            let mut b = body(k, site, true, u64::from(i) + 1, releases);
            b.at_unix_s = NOW + i64::from(i) * 3600 + 3600;
            SignedStatus::sign(&b, &key(k)).encode()
        })
        .collect()
}

#[test]
fn a_release_no_longer_in_any_record_keeps_its_figures() {
    let fleet = Fleet::new("hq");
    for r in forty_records(1, "hq") {
        fleet.offer_record(&r).unwrap();
    }
    let first = ReleaseId([0; 32]);
    let latest = SignedStatus::decode(&forty_records(1, "hq")[39])
        .unwrap()
        .verify()
        .unwrap();
    assert!(
        latest.release(&first).is_none(),
        "the newest record left it out"
    );
    let report = fleet.report(&first, None, NOW + 100 * 3600);
    assert_eq!(
        report.states.activated, 1,
        "installed, as the older records said"
    );
    assert_eq!(report.channel, "security/c0");
    // The compliance report lists all forty from the ledger, with their severity.
    let listed = fleet.releases_since(NOW);
    assert_eq!(listed.len(), 40);
    let facts0 = listed.iter().find(|f| f.id == first).unwrap();
    assert!(facts0.critical, "release 0 is critical");
    let rows = fleet.compliance(&listed, NOW + 100 * 3600);
    assert!(rows.iter().all(|r| r.activated == 1 && r.installers == 1));
    let row0 = rows.iter().find(|r| r.release == first.to_hex()).unwrap();
    assert_eq!(row0.deadline, "met");
    // The ledger survives a restart, through the store's form.
    let again = Fleet::from_stored("hq", fleet.take_dirty());
    assert_eq!(again.report(&first, None, NOW).states.activated, 1);
    assert_eq!(again.releases_since(NOW).len(), 40);
}

/// Site branch-2: three installing nodes that installed releases 0 to 39, as figures.
fn branch2_installed_all() -> Vec<SiteRelease> {
    let nodes: Vec<StatusBody> = (0..3u8)
        .map(|k| {
            body(
                20 + k,
                "branch-2",
                true,
                1,
                (0..40u8).map(installed).collect(),
            )
        })
        .collect();
    let refs: Vec<&StatusBody> = nodes.iter().collect();
    protocol::summary::site_releases(&refs, None)
}

/// A summary of branch-2 (three installing nodes) numbered `seq`, made at `at`, naming
/// `releases`, signed by its aggregator (node 20).
fn branch2_summary(seq: u64, at: i64, releases: Vec<SiteRelease>) -> Vec<u8> {
    let b = SummaryBody {
        site: "branch-2".into(),
        aggregator: node(20),
        seq,
        at_unix_s: at,
        nodes: 3,
        installers: 3,
        contacts: Vec::new(),
        releases,
    };
    SignedSummary::sign(&b, &key(20)).encode()
}

#[test]
fn another_sites_ledger_keeps_every_release_its_summaries_named() {
    let fleet = Fleet::new("hq");
    let all = branch2_installed_all();
    // Each summary names only the release that changed.
    for (n, i) in (0..40u8).enumerate() {
        let releases = all
            .iter()
            .filter(|r| r.release == ReleaseId([i; 32]))
            .cloned()
            .collect();
        fleet
            .offer_summary(
                &branch2_summary(n as u64 + 1, NOW + i64::from(i) * 3600 + 3600, releases),
                NOW + 200 * 3600,
            )
            .unwrap();
    }
    let first = ReleaseId([0; 32]);
    let r = fleet.report(&first, None, NOW + 100 * 3600);
    assert_eq!((r.nodes, r.states.activated), (3, 3));
    let rows = fleet.compliance(&fleet.releases_since(NOW), NOW + 100 * 3600);
    assert_eq!(rows.len(), 40);
    assert!(rows.iter().all(|r| r.activated == 3 && r.installers == 3));
    let again = Fleet::from_stored("hq", fleet.take_dirty());
    let rows_again = again.compliance(&again.releases_since(NOW), NOW + 100 * 3600);
    let json = |r: &[ComplianceRow]| serde_json::to_string(r).unwrap();
    assert!(
        json(&rows) == json(&rows_again),
        "the same report after a restart"
    );
}

#[test]
fn ledgers_drop_releases_past_the_horizon() {
    let fleet = Fleet::new("hq");
    fleet
        .offer_record(&record(1, "hq", true, 1, vec![installed(0)]))
        .unwrap();
    let horizon = scheduler::ledger::HORIZON.as_secs() as i64;
    let mut later = body(1, "hq", true, 2, vec![installed(1)]);
    later.at_unix_s = NOW + horizon + 1800;
    fleet
        .offer_record(&SignedStatus::sign(&later, &key(1)).encode())
        .unwrap();
    let ids: Vec<ReleaseId> = fleet.releases_since(0).iter().map(|f| f.id).collect();
    assert_eq!(
        ids,
        vec![ReleaseId([1; 32])],
        "release 0 is past the horizon"
    );
}

#[test]
fn a_member_figures_its_own_site_from_the_sites_summary_and_an_aggregator_from_records() {
    use ReleaseState::*;
    let fleet = Fleet::new("hq");
    // The member holds only its own record and one site-mate's latest (which no longer names
    // R1); the aggregator's summary says both installed R1.
    fleet
        .offer_record(&record(1, "hq", true, 1, vec![rel(R1, 1, Activated, NOW)]))
        .unwrap();
    fleet
        .offer_record(&record(
            2,
            "hq",
            true,
            5,
            vec![rel(R2, 2, Downloading, NOW)],
        ))
        .unwrap();
    let truth = [
        body(1, "hq", true, 1, vec![rel(R1, 1, Activated, NOW)]),
        body(2, "hq", true, 4, vec![rel(R1, 1, Activated, NOW)]),
    ];
    let own = summary(2, "hq", 10, NOW, &truth);
    assert_eq!(
        fleet.offer_summary(&own, NOW).unwrap_err(),
        OfferError::OwnSite,
        "not among the other sites' summaries"
    );
    fleet.offer_own_summary(&own, NOW).unwrap();
    assert_eq!(fleet.sites(), 1, "its own site is not another site");
    let r = fleet.report(&R1, None, NOW);
    assert_eq!(r.states.activated, 2, "from the site's summary");
    assert_eq!(r.sites[0].from, "summary");
    fleet.set_aggregating(true);
    let r = fleet.report(&R1, None, NOW);
    assert_eq!(r.states.activated, 1, "an aggregator counts its records");
    assert_eq!(r.sites[0].from, "records");
    // Kept across a restart.
    let again = Fleet::from_stored("hq", fleet.take_dirty());
    assert_eq!(again.report(&R1, None, NOW).states.activated, 2);
}

#[test]
fn a_node_without_a_record_for_the_bound_is_silent_unless_it_applied_the_release() {
    use ReleaseState::*;
    let fleet = Fleet::new("hq");
    let silent_after = SILENT_AFTER.as_secs() as i64;
    // Node 1 installed R1 and then went quiet; node 2 was downloading R1 and went quiet;
    // node 3 is downloading and speaks.
    let quiet = |k: u8, state: ReleaseState| {
        let mut b = body(k, "hq", true, 1, vec![rel(R1, 1, state, NOW)]);
        b.at_unix_s = NOW - silent_after - 1;
        fleet
            .offer_record(&SignedStatus::sign(&b, &key(k)).encode())
            .unwrap();
    };
    quiet(1, Activated);
    quiet(2, Downloading);
    fleet
        .offer_record(&record(
            3,
            "hq",
            true,
            1,
            vec![rel(R1, 1, Downloading, NOW)],
        ))
        .unwrap();
    let r = fleet.report(&R1, None, NOW);
    assert_eq!(
        (r.states.activated, r.states.silent, r.states.downloading),
        (1, 1, 1),
        "installed stays installed; the quiet downloader is silent"
    );
    assert_eq!(r.states.moving(), 1, "a silent node is left out of the ETA");
    assert_eq!(r.states.total(), 3);
    assert_eq!(r.sites[0].silent, 1, "the dashboard's site cell knows it");
    let rows = fleet.compliance(&[facts(R1, 1, true)], NOW);
    let states: Vec<&str> = rows[0].missing.iter().map(|m| m.state.as_str()).collect();
    assert_eq!(states.len(), 2);
    assert!(states.contains(&"silent") && states.contains(&"downloading"));
    // The summary an aggregator makes of the same records says so too.
    let (_, _, releases) = fleet.own_figures(NOW);
    assert_eq!(releases[0].silent, 1);
    // A record from the quiet downloader makes it count again.
    fleet
        .offer_record(&record(
            2,
            "hq",
            true,
            2,
            vec![rel(R1, 1, Downloading, NOW)],
        ))
        .unwrap();
    assert_eq!(fleet.report(&R1, None, NOW).states.silent, 0);
}

/// The site's figures kept between summaries (only the changed channels made again) are
/// always the figures made from every ledger from scratch: through new nodes, entries that
/// change state or lose their channel, nodes that turn silent and come back.
#[test]
fn kept_figures_equal_figures_made_from_scratch() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let fleet = Fleet::new("branch");
    fleet.set_silent_after(std::time::Duration::from_secs(900));
    let states = [
        ReleaseState::Announced,
        ReleaseState::Downloading,
        ReleaseState::Complete,
        ReleaseState::Activated,
        ReleaseState::Failed,
        ReleaseState::Superseded,
    ];
    let mut seq = [0u64; 8];
    let mut clock = NOW;
    for step in 0..3000 {
        clock += rng.random_range(0..200);
        let k = rng.random_range(0..8usize);
        seq[k] += 1;
        let releases: Vec<ReleaseStatus> = (0..rng.random_range(0..4))
            .map(|_| {
                let id = rng.random_range(0..12u8);
                let mut r = rel(
                    ReleaseId([id; 32]),
                    u64::from(id % 4) + 1,
                    states[rng.random_range(0..states.len())],
                    clock - rng.random_range(0..3600),
                );
                // Three channels of four versions; now and then a node that does not know
                // a release's channel (it refused it).
                r.channel = if rng.random_range(0..20) == 0 {
                    String::new()
                } else {
                    format!("security/c{}", id % 3)
                };
                r
            })
            .collect();
        let b = StatusBody {
            at_unix_s: clock,
            ..body(k as u8 + 1, "branch", k % 3 != 0, seq[k], releases)
        };
        fleet.keep_record(b, Vec::new()).unwrap();
        if step % 2 == 0 {
            let now = clock + rng.random_range(0..2000);
            let (_, _, kept) = fleet.own_figures(now);
            let inner = lock(&fleet.inner);
            let bodies: Vec<&StatusBody> = inner.records.values().map(|r| &r.merged).collect();
            let fresh = site_releases(&bodies, Some(silent_before(&inner, now)));
            assert_eq!(kept, fresh, "step {step}");
        }
    }
}

/// A member that heard only the latest summary of another site learns every release that
/// site's earlier summaries named from its aggregator's ledger pages, and then prints the
/// aggregator's report; later pages carry only what changed, and a restarted aggregator
/// (another epoch) hands everything again.
#[test]
fn a_member_reads_its_aggregators_ledgers_page_by_page() {
    let aggregator = Fleet::new("hq");
    aggregator.set_aggregating(true);
    let member = Fleet::new("hq");
    let all = branch2_installed_all();
    let signed = |n: u64, only: &[u8]| {
        let releases = all
            .iter()
            .filter(|r| only.contains(&r.release.0[0]))
            .cloned()
            .collect();
        branch2_summary(n, NOW + 3600 + n as i64, releases)
    };
    let later = NOW + 200 * 3600;
    for i in 0..40u8 {
        aggregator
            .offer_summary(&signed(u64::from(i) + 1, &[i]), later)
            .unwrap();
    }
    // The member heard the last summary only.
    member.offer_summary(&signed(40, &[39]), later).unwrap();
    assert_eq!(member.releases_since(NOW).len(), 1);
    // Pages of about 1 KiB: several of them, each going further.
    let (mut epoch, mut after, mut pages) = (0, 0, 0);
    loop {
        let page = aggregator.ledger_page(epoch, after, 0, 1024);
        assert!(page.through > after || page.entries.is_empty());
        let bytes = page.encode();
        let page = LedgerPage::decode(&bytes).unwrap();
        member.merge_ledger_page(&page);
        (epoch, after) = (page.epoch, page.through);
        pages += 1;
        if !page.more {
            break;
        }
    }
    assert!(pages > 2, "{pages} pages");
    let report =
        |f: &Fleet| serde_json::to_string(&f.compliance(&f.releases_since(NOW), later)).unwrap();
    assert_eq!(member.releases_since(NOW).len(), 40);
    assert_eq!(report(&member), report(&aggregator));
    // Nothing changed: an empty page. One release changes: a page of it alone.
    let page = aggregator.ledger_page(epoch, after, 0, 1 << 20);
    assert!(page.entries.is_empty() && !page.more);
    let mut changed = all.iter().find(|r| r.release.0[0] == 5).unwrap().clone();
    changed.states[ReleaseState::Activated.index()] = 2;
    changed.states[ReleaseState::Failed.index()] = 1;
    changed.installed_after = vec![2];
    aggregator
        .offer_summary(&branch2_summary(41, NOW + 3700, vec![changed]), later)
        .unwrap();
    let page = aggregator.ledger_page(epoch, after, 0, 1 << 20);
    assert_eq!(page.entries.len(), 1);
    assert_eq!(page.entries[0].figures.release, ReleaseId([5; 32]));
    // A lower number than the member holds never overwrites.
    let stale = LedgerPage {
        entries: vec![LedgerEntry {
            seq: 3,
            ..page.entries[0].clone()
        }],
        ..page.clone()
    };
    member.merge_ledger_page(&page);
    assert_eq!(member.merge_ledger_page(&stale), 0);
    // Another numbering (a restart): every entry again.
    let again = aggregator.ledger_page(epoch ^ 1, after, 0, 1 << 20);
    assert_eq!(again.entries.len(), 40);
}

/// `p2pctl node forget`: only a silent node is retired; it leaves the figures; records it
/// made before stay out, after a restart too; a record it makes later brings it back.
#[test]
fn a_silent_node_is_forgotten_until_it_sends_a_newer_record() {
    let fleet = Fleet::new("branch");
    fleet.set_silent_after(std::time::Duration::from_secs(900));
    let at = |k: u8, seq: u64, t: i64| {
        let b = StatusBody {
            at_unix_s: t,
            ..body(k, "branch", true, seq, vec![installed(1)])
        };
        SignedStatus::sign(&b, &key(k)).encode()
    };
    fleet.offer_record(&at(1, 1, NOW)).unwrap();
    fleet.offer_record(&at(2, 1, NOW - 3600)).unwrap();
    let now = NOW + 60;
    assert_eq!(fleet.own_figures(now).0, 2);
    assert!(matches!(
        fleet.forget(&node(1), now, false),
        Err(ForgetError::NotSilent { .. })
    ));
    // Up and connected, however old its record: refused.
    assert!(matches!(
        fleet.forget(&node(2), now, true),
        Err(ForgetError::Reachable(_))
    ));
    assert!(matches!(
        fleet.forget(&node(9), now, false),
        Err(ForgetError::Unknown(_))
    ));
    assert_eq!(fleet.forget(&node(2), now, false), Ok(NOW - 3600));
    let (nodes, _, releases) = fleet.own_figures(now);
    assert_eq!(nodes, 1);
    assert_eq!(releases[0].count(ReleaseState::Activated), 1);
    // An old record of it, still travelling, does not bring it back, after a restart too.
    assert_eq!(
        fleet.offer_record(&at(2, 0, NOW - 4000)).map(|_| ()),
        Err(OfferError::Forgotten)
    );
    let again = Fleet::from_stored("branch", fleet.take_dirty());
    assert_eq!(again.own_figures(now).0, 1);
    assert_eq!(
        again.offer_record(&at(2, 2, NOW - 3600)).map(|_| ()),
        Err(OfferError::Forgotten)
    );
    // A newer one does.
    again.offer_record(&at(2, 3, now)).unwrap();
    assert_eq!(again.own_figures(now).0, 2);
    let stored = again.take_dirty();
    assert_eq!(stored.forgotten, vec![(node(2), None)]);
}

/// The commonest reasons nodes failed or refused a release, counted across this site's
/// records and other sites' summaries, for `p2pctl fleet`'s default view.
#[test]
fn failure_and_refusal_reasons_add_up_across_sites() {
    use ReleaseState::*;
    let failed = |k: u8| {
        let mut r = rel(R1, 1, Failed, NOW);
        r.error = Some("apply command exited with status 3".into());
        body(k, "branch-2", true, 1, vec![r])
    };
    let mut refused = rel(R1, 1, Refused, NOW);
    refused.error = Some("version 1 is not above the highest stored, 2".into());
    let others: Vec<StatusBody> = (20..23).map(failed).collect();
    let fleet = Fleet::new("hq");
    fleet
        .offer_summary(&summary(20, "branch-2", 1, NOW, &others), NOW + 60)
        .unwrap();
    let mine = |k: u8, r: ReleaseStatus| record(k, "hq", true, 1, vec![r]);
    let mut f = rel(R1, 1, Failed, NOW);
    f.error = Some("apply command exited with status 3".into());
    fleet.offer_record(&mine(1, f)).unwrap();
    fleet.offer_record(&mine(2, refused)).unwrap();
    fleet
        .offer_record(&mine(3, rel(R1, 1, Activated, NOW)))
        .unwrap();
    let r = fleet.report(&R1, Some(&facts(R1, 1, false)), NOW + 60);
    let got: Vec<(String, String, u64)> = r
        .reasons
        .iter()
        .map(|x| (x.state.clone(), x.reason.clone(), x.nodes))
        .collect();
    assert_eq!(
        got,
        vec![
            (
                "failed".into(),
                "apply command exited with status 3".into(),
                4
            ),
            (
                "refused".into(),
                "version 1 is not above the highest stored, 2".into(),
                1
            ),
        ]
    );
}

#[test]
fn a_full_site_table_makes_room_for_a_reporting_node_by_retiring_the_longest_silent() {
    let fleet = Fleet::new("hq");
    let made_up = |i: usize, at: i64| StatusBody {
        node: NodeId({
            let mut b = [0xee; 32];
            b[..8].copy_from_slice(&(i as u64).to_le_bytes());
            b
        }),
        at_unix_s: at,
        ..body(
            0,
            "hq",
            true,
            1,
            vec![rel(R1, 1, ReleaseState::Activated, at)],
        )
    };
    // The table is full: the first record is the oldest, the rest a minute younger.
    for i in 0..SITE_RECORDS_MAX {
        let at = if i == 0 { NOW - 60 } else { NOW };
        fleet.keep_record(made_up(i, at), Vec::new()).unwrap();
    }
    let live = |at: i64| StatusBody {
        at_unix_s: at,
        ..body(1, "hq", true, 1, vec![])
    };
    // None is silent yet by the newcomer's time: it is refused, nothing is dropped.
    assert!(matches!(
        fleet.keep_record(live(NOW + 1), Vec::new()),
        Err(OfferError::Full)
    ));
    // Once the oldest is silent, it leaves (with a tombstone) and the newcomer is kept.
    let later = NOW - 60 + SILENT_AFTER.as_secs() as i64 + 1;
    fleet.keep_record(live(later), Vec::new()).unwrap();
    let inner = lock(&fleet.inner);
    assert_eq!(inner.records.len(), SITE_RECORDS_MAX);
    assert!(inner.records.contains_key(&node(1)));
    assert!(!inner.records.contains_key(&made_up(0, NOW).node));
    assert_eq!(
        inner.forgotten.get(&made_up(0, NOW).node),
        Some(&(NOW - 60))
    );
    drop(inner);
    // Its old record does not bring it back.
    assert!(matches!(
        fleet.keep_record(made_up(0, NOW - 60), Vec::new()),
        Err(OfferError::Forgotten)
    ));
}

#[test]
fn the_fleet_view_warns_of_failures_silence_and_a_critical_release_past_48_hours() {
    let fleet = three_sites();
    // 1 of 10 nodes failed (over 1 %); the release is not critical: no 72-hour warning.
    let r = fleet.report(&R1, Some(&facts(R1, 1, false)), NOW + 600);
    assert!(
        r.warnings
            .iter()
            .any(|w| w.starts_with("1 node (10.0 %) failed it")),
        "{:?}",
        r.warnings
    );
    assert!(
        !r.warnings.iter().any(|w| w.contains("72-hour")),
        "{:?}",
        r.warnings
    );
    // Critical, 49 hours on, with 2 of the installing nodes applied: at risk; the records of
    // this site are silent by then.
    let r = fleet.report(&R1, Some(&facts(R1, 1, true)), NOW + 49 * 3600);
    assert!(
        r.warnings
            .iter()
            .any(|w| w.contains("the 72-hour rule is at risk")),
        "{:?}",
        r.warnings
    );
    assert!(
        r.warnings.iter().any(|w| w.contains("nodes silent")),
        "{:?}",
        r.warnings
    );
    let r = fleet.report(&R1, Some(&facts(R1, 1, true)), NOW + 73 * 3600);
    assert!(
        r.warnings
            .iter()
            .any(|w| w.contains("the 72-hour rule is missed")),
        "{:?}",
        r.warnings
    );
}
