//! Bandwidth shaping with real nodes and real time: a WAN ingress cap holds the transfer to
//! its rate; the same cap does not slow a same-site (LAN) transfer.

use std::time::{Duration, Instant};
use testnet::fleet::{Fleet, workdir};
use testnet::scenario::Scenario;

/// The cap under test: 4 MB/s from other sites.
const CAP_BYTES_PER_S: f64 = 4e6;

/// Two nodes: the origin and one receiver in site "branch", the receiver capped at 4 MB/s
/// WAN ingress; `lan`: the origin says it is in "branch" too. Returns (seconds the fetch
/// took, release bytes).
async fn transfer(lan: bool) -> (f64, u64) {
    let origin_site = if lan { "site = 'branch'" } else { "" };
    let s = Scenario::parse(&format!(
        "name = 'shaping'\nseed = 21\ntimeout_s = 120\n[release]\nsize_mib = 24\n\
         [origin]\n{origin_site}\n[wan]\nlatency_ms = 1\n\
         [[sites]]\nname = 'branch'\nnodes = 1\n\
         node_config = '''\n[shaping]\nwan_ingress = {{ default = \"4MB/s\" }}\n'''\n"
    ))
    .unwrap();
    let (_guard, dir) = workdir();
    let fleet = Fleet::start(s, &dir, true).await.unwrap();
    fleet.wait_connected(Duration::from_secs(60)).await.unwrap();
    let payload = fleet.make_payload(1).unwrap();
    let id = fleet.publish(&payload, 1).unwrap();
    let deadline = Instant::now() + Duration::from_secs(100);
    loop {
        let st = fleet.status(1).await.unwrap();
        if let Some(r) = st
            .releases
            .iter()
            .find(|r| r.id == id && r.state == "complete")
        {
            return (r.elapsed_s.unwrap(), r.bytes_total);
        }
        assert!(
            Instant::now() < deadline,
            "no completion: {:?}",
            st.releases
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wan_ingress_cap_holds_the_rate_and_lan_is_not_slowed() {
    let (wan_s, bytes) = transfer(false).await;
    let ideal = bytes as f64 / CAP_BYTES_PER_S;
    assert!(
        (0.9 * ideal..=1.15 * ideal).contains(&wan_s),
        "WAN transfer of {bytes} bytes took {wan_s:.2} s; ideal at 4 MB/s is {ideal:.2} s"
    );
    let (lan_s, _) = transfer(true).await;
    eprintln!(
        "WAN-capped transfer {wan_s:.2} s = {:.3} x ideal {ideal:.2} s; LAN transfer {lan_s:.2} s",
        wan_s / ideal
    );
    assert!(
        lan_s < 0.5 * ideal,
        "LAN transfer took {lan_s:.2} s; the WAN cap must not apply (ideal WAN {ideal:.2} s)"
    );
}
