//! The staged-rollout simulator: rings open in order from the figures each site holds, and
//! a ring that fails over the gate's limit halts the rings after it.

use testnet::sim::rollout::{RolloutScenario, run};

fn scenario(failing: bool) -> RolloutScenario {
    let mut text = String::from(
        "name = 'rings-60x10'\nseed = 11\nseeds = 3\nsites = 60\nnodes_per_site = 10\n\
         rings = 'canary: 5%; pilot: 20%; broad: rest'\n\
         gate = 'installed>=95%,failed<=1%,soak=20m'\nfetch_s = [10.0, 300.0]\n",
    );
    if failing {
        text.push_str("failing_ring = 'canary'\nfail_share = 0.1\n");
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.toml");
    std::fs::write(&path, text).unwrap();
    RolloutScenario::load(&path).unwrap()
}

#[test]
fn each_ring_opens_a_soak_after_the_ring_before_it_last_changed_on_every_site() {
    let report = run(&scenario(false)).unwrap();
    for r in &report.runs {
        assert!(r.over_limit.is_none(), "{r:?}");
        assert_eq!(r.installed, r.ring_nodes, "everyone installs: {r:?}");
        for k in 1..r.ring_nodes.len() {
            let before = r.all_installed_s[k - 1].unwrap();
            let first = r.first_install_s[k].unwrap();
            // Install times are whole seconds in the records the gate reads.
            assert!(first >= before - 1.0 + 20.0 * 60.0, "ring {k}: {r:?}");
            // Every site opens within a pull and a flood of the instant.
            assert!(first <= before + 20.0 * 60.0 + 10.0, "ring {k}: {r:?}");
        }
        assert!(r.gate_summaries > 0);
    }
}

#[test]
fn a_canary_failing_over_the_limit_halts_every_later_ring_in_every_run() {
    let report = run(&scenario(true)).unwrap();
    assert!(report.halts_held(), "{}", report.table());
    for r in &report.runs {
        assert!(r.failed[0] > 0, "{r:?}");
        assert_eq!(r.over_limit.map(|(_, ring)| ring), Some(0));
        assert_eq!(r.first_install_s[1], None, "no pilot installs: {r:?}");
        assert_eq!(r.first_install_s[2], None, "no broad node installs: {r:?}");
    }
}
