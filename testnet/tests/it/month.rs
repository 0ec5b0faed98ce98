//! The bank's month at the size CI runs (`testnet/scenarios/month/month-20x10.toml`): the
//! compliance report of one node, made from the status records and site summaries the
//! product's code composed and merged, equals what every endpoint did, release by release,
//! and every critical release's 72-hour verdict is right. The full month (500 × 50, 300
//! releases) runs by hand: `cargo run --release -p testnet -- month
//! testnet/scenarios/month/month-500x50.toml`.

use testnet::sim::month::{MonthScenario, run};

#[test]
fn a_month_of_releases_reports_exactly_what_every_endpoint_did() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scenarios/month/month-20x10.toml"
    );
    let scenario = MonthScenario::load(std::path::Path::new(path)).unwrap();
    let report = run(&scenario, |_, _| {}).unwrap();
    eprintln!("{}", report.table());
    assert_eq!(report.rows, 60, "every release of the month is reported");
    assert_eq!(report.rows_matching, 60, "{:#?}", report.mismatches);
    assert_eq!(report.verdicts_right, report.critical);
    assert!(report.critical > 0, "the month has critical releases");
    // The month has what makes the report hard: failed installs, endpoints that were away,
    // late joiners, versions that cover older ones.
    let rows = &report.rows_out;
    assert!(
        rows.iter()
            .any(|r| r.missing_total > 0 && r.activated_share > 0.5),
        "some releases are not applied everywhere"
    );
    assert!(
        report.applied_share > 0.8 && report.applied_share < 1.0,
        "{}",
        report.applied_share
    );
}

#[test]
fn a_scenario_that_makes_no_sense_is_refused() {
    let bad = "name = 'x'\nsites = 0\nnodes_per_site = 10\nreleases = 5\ndays = 1\n";
    let err = MonthScenario::parse(bad).unwrap_err().to_string();
    assert!(err.contains("sites"), "{err}");
    let bad = "name = 'x'\nsites = 2\nnodes_per_site = 10\nreleases = 5\ndays = 1\nzones = ['Mars/Olympus']\n";
    let err = MonthScenario::parse(bad).unwrap_err().to_string();
    assert!(err.contains("zones"), "{err}");
}
