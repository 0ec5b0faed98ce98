//! The simulator: deterministic from its seed, conserving bytes, and at CI scale (50 sites ×
//! 10 endpoints, about 20 s in a debug build) within its bars.

use testnet::sim::engine;
use testnet::sim::scenario::SimScenario;

fn scenario(name: &str) -> SimScenario {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scenarios/sim")
        .join(name);
    SimScenario::load(&path).unwrap()
}

#[test]
fn the_same_seed_gives_the_same_event_log_and_another_seed_another() {
    let sc = scenario("small-5x4.toml");
    let a = engine::run(&sc, |_, _, _| {}).unwrap();
    let b = engine::run(&sc, |_, _, _| {}).unwrap();
    assert_eq!(a.log_hash, b.log_hash);
    assert_eq!(a.events, b.events);
    assert_eq!(a.completed_s, b.completed_s);
    assert_eq!(a.site_wan_in, b.site_wan_in);
    // One thread or several: the same run.
    let one = engine::run_on(&sc, 1, |_, _, _| {}).unwrap();
    let four = engine::run_on(&sc, 4, |_, _, _| {}).unwrap();
    assert_eq!((one.log_hash, four.log_hash), (a.log_hash, a.log_hash));
    let mut other = sc.clone();
    other.seed += 1;
    let c = engine::run(&other, |_, _, _| {}).unwrap();
    assert_ne!(a.log_hash, c.log_hash, "the seed must matter");
}

#[test]
fn bytes_sent_are_bytes_received_and_every_chunk_held_was_received() {
    let sc = scenario("small-5x4.toml");
    let o = engine::run(&sc, |_, _, _| {}).unwrap();
    assert!(
        o.completed_s.iter().all(Option::is_some),
        "every endpoint completes"
    );
    assert_eq!(o.bytes_sent, o.bytes_received + o.bytes_lost);
    assert_eq!(o.unreceived_chunks, 0);
    // Each endpoint received at least the release, and each site at least one copy over
    // the WAN (nobody had it before).
    let endpoints = o.completed_s.len() as u64;
    assert!(o.bytes_received >= endpoints * o.release_bytes);
    for (site, &b) in o.site_wan_in.iter().enumerate() {
        assert!(
            b >= o.release_bytes,
            "site {site} received {b} over the WAN"
        );
    }
    // WAN bytes out of all sites and the origin are the WAN bytes into all sites.
    let wan_in: u64 = o.site_wan_in.iter().sum();
    let wan_out: u64 = o.site_wan_out.iter().sum::<u64>() + o.origin_egress;
    assert_eq!(wan_in, wan_out);
}

#[test]
fn fifty_sites_of_ten_complete_near_the_lower_bound_with_one_copy_per_site() {
    let sc = scenario("fleet-50x10.toml");
    let (report, outcome, _) = testnet::sim::simulate(&sc, false).unwrap();
    eprintln!("{}", report.table());
    assert!(outcome.completed_s.iter().all(Option::is_some));
    let p = &report.product;
    let ratio = p.ratio_to_bound.expect("all complete");
    assert!(ratio <= 1.3, "completion at {ratio:.3} × T_min");
    assert!(
        p.origin_egress_f <= 3.0,
        "origin sent {:.2} F",
        p.origin_egress_f
    );
    assert!(
        p.site_wan_in_f.p99 <= 1.05,
        "site WAN ingress p99 {:.3} F",
        p.site_wan_in_f.p99
    );
    // The baselines are far behind, in the order the closed forms say.
    let branch = report.relay_per_branch.completion.all_s.unwrap();
    let single = report.single_relay.completion.all_s.unwrap();
    assert!(report.product.completion.all_s.unwrap() * 4.0 < branch && branch < single);
}

#[test]
fn crashes_garbage_and_a_cut_off_site_do_not_stop_honest_endpoints() {
    let sc = scenario("fleet-50x10-faults.toml");
    let (report, o, _) = testnet::sim::simulate(&sc, false).unwrap();
    eprintln!("{}", report.table());
    assert_eq!(o.garbage_nodes, 5);
    assert!(
        o.completed_s.iter().all(Option::is_some),
        "every honest endpoint completes"
    );
    assert_eq!(
        o.unreceived_chunks, 0,
        "nothing held that was not received and verified"
    );
    assert!(o.bytes_lost > 0, "crashes cut transfers short");
    assert_eq!(o.bytes_sent, o.bytes_received + o.bytes_lost);
    // The site cut off for 8 s finishes about that much behind; the others near the bound.
    // Not every site equally near: with the faults drawn for seed 1 (five of site-38's ten
    // members crash in the first 20 s), the slowest other site, site-39, finishes at
    // 1.67 × T_min; the engine before the fetch machine gave 1.68 on the same draw.
    let t_min = report.lower_bound.t_min_s;
    let p90 = report.product.completion.p90_s.unwrap();
    assert!(p90 <= 1.6 * t_min, "90 % at {:.3} × T_min", p90 / t_min);
    let cut = o.site_names.iter().position(|s| s == "site-7").unwrap() as u32;
    let (mut in_cut, mut others) = (0.0f64, 0.0f64);
    for (t, &site) in o.completed_s.iter().zip(&o.endpoint_site) {
        let t = t.unwrap();
        if site == cut {
            in_cut = in_cut.max(t);
        } else {
            others = others.max(t);
        }
    }
    assert!(
        others <= 1.75 * t_min,
        "all but the cut site at {:.3} × T_min",
        others / t_min
    );
    assert!(in_cut <= 1.6 * t_min + 8.0, "the cut site at {in_cut:.1} s");
}

/// Four sites of three endpoints, published on a Monday at 09:00 UTC: one may download only
/// from 20:00 Tokyo time (two hours later), one takes at most 8 Mbit/s per endpoint from the
/// WAN, one takes nothing from the WAN in the first minute, one is unrestricted.
const POLICIES: &str = r#"
name = "policies"
seed = 3
start = "2026-11-23T09:00:00Z"
limit_s = 10800
[release]
size_mib = 16
[origin]
up_mbit = 1000
[sites]
nodes = 3
[[site]]
name = "tokyo"
zone = "Asia/Tokyo"
windows = { download = [{ start = "0 20 * * *", duration = "10:00" }] }
[[site]]
name = "capped"
shaping = { wan_ingress = { default = "8Mbit/s" } }
[[site]]
name = "paused"
zone = "UTC"
shaping = { wan_ingress = { rules = ["Mon 09:00-09:01 0"] } }
[[site]]
name = "free"
"#;

/// When each named site's endpoints completed: (first, last).
fn site_times(o: &engine::Outcome, name: &str) -> (f64, f64) {
    let site = o.site_names.iter().position(|s| s == name).unwrap() as u32;
    let times: Vec<f64> = o
        .completed_s
        .iter()
        .zip(&o.endpoint_site)
        .filter(|(_, s)| **s == site)
        .map(|(t, _)| t.unwrap_or_else(|| panic!("an endpoint of {name} never completed")))
        .collect();
    (
        times.iter().copied().fold(f64::INFINITY, f64::min),
        times.iter().copied().fold(0.0, f64::max),
    )
}

#[test]
fn download_windows_and_rate_schedules_hold_sites_back_in_their_own_zones() {
    let sc = SimScenario::parse(POLICIES).unwrap();
    let o = engine::run(&sc, |_, _, _| {}).unwrap();
    assert_eq!(o.bytes_sent, o.bytes_received + o.bytes_lost);
    assert_eq!(o.unreceived_chunks, 0);
    // Tokyo's window opens at 20:00 JST = 11:00 UTC, two hours after publish.
    let (first, last) = site_times(&o, "tokyo");
    assert!(
        (7200.0..7260.0).contains(&first) && last < 7260.0,
        "tokyo completed from {first} s to {last} s"
    );
    // 8 Mbit/s per endpoint, chunks charged 1/32 for the wire: the site takes at least
    // F · 33/32 / (3 · 1 MB/s) to bring in one copy.
    let f = o.release_bytes as f64;
    let floor = f * 33.0 / 32.0 / 3e6;
    let (_, capped) = site_times(&o, "capped");
    assert!(
        capped >= floor,
        "capped site done at {capped} s, floor {floor} s"
    );
    // Nothing from the WAN during the first minute (rate 0 from 09:00 to 09:01 UTC).
    let (paused_first, paused_last) = site_times(&o, "paused");
    assert!(
        paused_first >= 60.0 && paused_last < 120.0,
        "paused site completed from {paused_first} s to {paused_last} s"
    );
    let (_, free) = site_times(&o, "free");
    assert!(
        free < capped && free < paused_first,
        "free site done at {free} s"
    );

    // An emergency downloads outside the window.
    let mut urgent = sc.clone();
    urgent.release.emergency = true;
    let o = engine::run(&urgent, |_, _, _| {}).unwrap();
    let (_, tokyo) = site_times(&o, "tokyo");
    assert!(tokyo < 60.0, "an emergency reached tokyo at {tokyo} s");
    // The release's own window (10:00 to 16:00 UTC) must be open as well as the site's.
    let mut later = sc.clone();
    later.release.download_windows = vec!["0 10 * * * for 06:00 in UTC".into()];
    let o = engine::run(&later, |_, _, _| {}).unwrap();
    let (free_first, _) = site_times(&o, "free");
    assert!(free_first >= 3600.0, "free site done at {free_first} s");
    let (tokyo_first, _) = site_times(&o, "tokyo");
    assert!(tokyo_first >= 7200.0, "tokyo done at {tokyo_first} s");
}

/// The control plane in the simulator: what an endpoint sends follows its own site's size,
/// not the fleet's (records stay in the site; across the WAN only summaries, which every
/// site gets once per publication, and announcements of what each peer fetches there); each
/// node holds its site's records and a summary per other site; every site publishes.
#[test]
fn control_bytes_per_endpoint_follow_the_site_not_the_fleet() {
    let run = |sites: usize| {
        let mut s = scenario("small-5x4.toml");
        s.sites.count = sites;
        engine::run(&s, |_, _, _| {}).unwrap()
    };
    let (small, big) = (run(5), run(40));
    let per_endpoint = |o: &engine::Outcome| {
        o.control.per_endpoint.iter().sum::<u64>() as f64 / o.control.per_endpoint.len() as f64
    };
    let (a, b) = (per_endpoint(&small), per_endpoint(&big));
    assert!(a > 0.0);
    assert!(
        b <= 1.2 * a,
        "per endpoint {a:.0} B at 5 sites, {b:.0} B at 40"
    );
    for (o, sites) in [(&small, 5), (&big, 40)] {
        assert_eq!(
            o.control.status_entries_max,
            4 + sites,
            "4 records and a summary per other site"
        );
        assert!(o.control.summaries > sites as u64, "every site publishes");
        let release = o.release_bytes as f64;
        let wan = o.control.site_wan_in.iter().copied().max().unwrap() as f64;
        assert!(
            wan > 0.0 && wan < 0.01 * release,
            "{sites} sites: {wan} B of control into a site"
        );
    }
    // Summaries reach every site: a site's WAN control grows with the sites, a little.
    let wan_max = |o: &engine::Outcome| o.control.site_wan_in.iter().copied().max().unwrap();
    assert!(wan_max(&big) > wan_max(&small));
}

/// A release that is the next version of one every endpoint holds, with patches for three
/// files in four and chunks that compress to half across the WAN: each endpoint fetches
/// the patches' pieces and rebuilds the patched files (the product's choice,
/// `scheduler::patches::choose`, and its fetch machine), and what crosses each site's WAN
/// link is about one copy of the pieces and of the other files' chunks compressed. An
/// endpoint that does not hold the version before fetches chunks, and completes too.
#[test]
fn a_patched_release_crosses_each_site_as_its_patches_and_its_other_chunks_compressed() {
    let mut sc = scenario("small-5x4.toml");
    sc.release.wan_wire_ratio = 0.5;
    sc.release.patches = Some(testnet::sim::scenario::SimPatches {
        share: 0.75,
        ratio: 0.05,
        file_mib: 4.0,
        base_share: 1.0,
    });
    let o = engine::run(&sc, |_, _, _| {}).unwrap();
    assert!(o.completed_s.iter().all(Option::is_some));
    assert_eq!(o.bytes_sent, o.bytes_received + o.bytes_lost);
    assert_eq!(o.unreceived_chunks, 0);
    // 16 files of 4 MiB, 12 patched: 12 patches of 0.2 MiB, and 16 MiB of chunks at half.
    let f = o.release_bytes;
    let endpoints = o.completed_s.len() as u64;
    assert_eq!(o.bytes_rebuilt, endpoints * f * 3 / 4);
    let expected = f * 3 / 4 / 20 + f / 4 / 2;
    for (site, &b) in o.site_wan_in.iter().enumerate() {
        assert!(
            b >= expected && b <= expected + expected / 4,
            "site {site}: {b} bytes over the WAN, about {expected} expected"
        );
    }
    // The same release to endpoints that do not hold its base: chunks, compressed, and
    // nothing rebuilt.
    if let Some(p) = sc.release.patches.as_mut() {
        p.base_share = 0.0;
    }
    let o = engine::run(&sc, |_, _, _| {}).unwrap();
    assert!(o.completed_s.iter().all(Option::is_some));
    assert_eq!((o.bytes_rebuilt, o.unreceived_chunks), (0, 0));
    for &b in &o.site_wan_in {
        assert!(b >= f / 2 && b <= f / 2 + f / 8, "{b}");
    }
}
