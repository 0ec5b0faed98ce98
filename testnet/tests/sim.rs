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
    let a = engine::run(&sc, |_, _, _| {});
    let b = engine::run(&sc, |_, _, _| {});
    assert_eq!(a.log_hash, b.log_hash);
    assert_eq!(a.events, b.events);
    assert_eq!(a.completed_s, b.completed_s);
    assert_eq!(a.site_wan_in, b.site_wan_in);
    // One thread or several: the same run.
    let one = engine::run_on(&sc, 1, |_, _, _| {});
    let four = engine::run_on(&sc, 4, |_, _, _| {});
    assert_eq!((one.log_hash, four.log_hash), (a.log_hash, a.log_hash));
    let mut other = sc.clone();
    other.seed += 1;
    let c = engine::run(&other, |_, _, _| {});
    assert_ne!(a.log_hash, c.log_hash, "the seed must matter");
}

#[test]
fn bytes_sent_are_bytes_received_and_every_chunk_held_was_received() {
    let sc = scenario("small-5x4.toml");
    let o = engine::run(&sc, |_, _, _| {});
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
    let (report, outcome, _) = testnet::sim::simulate(&sc, false);
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
    let (report, o, _) = testnet::sim::simulate(&sc, false);
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
    // The site cut off for 8 s finishes last, about that much behind; the others near the
    // bound.
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
        others <= 1.6 * t_min,
        "all but the cut site at {:.3} × T_min",
        others / t_min
    );
    assert!(in_cut <= 1.6 * t_min + 8.0, "the cut site at {in_cut:.1} s");
}
