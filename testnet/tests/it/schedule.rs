//! Scheduling with real nodes and real time: a WAN ingress cap holds a transfer to its rate
//! and leaves LAN transfers alone; a download window holds a release back until it opens,
//! and an emergency release does not wait; an emergency published while a routine release
//! is fetching takes the capped link from it.

use api::FetchState;
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
            .find(|r| r.id == id && r.state == FetchState::Complete)
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

/// A download window that opens 15 s after the branch node (re)starts (a Quartz start with
/// seconds, UTC): a normal release does not move a byte before it opens and completes
/// after; a critical release with CVSS 9.8 (an emergency under the default policy) does not
/// wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloads_wait_for_their_window_and_emergencies_do_not() {
    const PLACEHOLDER: &str = "0 0 0 1 1 ?";
    let s = Scenario::parse(&format!(
        "name = 'window'\nseed = 22\ntimeout_s = 120\n[release]\nsize_mib = 4\n\
         [origin]\n[wan]\nlatency_ms = 1\n\
         [[sites]]\nname = 'branch'\nnodes = 1\n\
         node_config = '''\n[windows]\nzone = \"UTC\"\n\
         download = [{{ start = \"{PLACEHOLDER}\", duration = \"01:00\" }}]\n'''\n"
    ))
    .unwrap();
    let (_guard, dir) = workdir();
    let mut fleet = Fleet::start(s, &dir, true).await.unwrap();
    fleet.wait_connected(Duration::from_secs(60)).await.unwrap();
    // Now that the fleet is up, move the window to open shortly and restart the node.
    // A whole second: the cron start has no fraction.
    let opens = jiff::Timestamp::from_second(jiff::Timestamp::now().as_second() + 15).unwrap();
    let t = opens.to_zoned_datetime(jiff::tz::TimeZone::UTC).datetime();
    let start = format!("{} {} {} * * ?", t.second(), t.minute(), t.hour());
    let config = fleet.nodes[1].data.join("p2pd.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace(PLACEHOLDER, &start)).unwrap();
    fleet.kill(1);
    fleet.start_node(1).unwrap();
    fleet.wait_ready(1).await.unwrap();
    fleet.wait_connected(Duration::from_secs(30)).await.unwrap();
    assert!(
        jiff::Timestamp::now() < opens,
        "the node took too long to restart"
    );

    let urgent = fleet.make_payload(1).unwrap();
    let emergency = fleet
        .publish_with(&urgent, 1, &["--severity", "critical", "--cvss", "9.8"])
        .unwrap();
    let normal_payload = fleet.make_payload(2).unwrap();
    let normal = fleet.publish(&normal_payload, 2).unwrap();
    // On a second channel: a routine v1 that must wait, then a v2 its publisher marked an
    // emergency. v2 does not wait; once it completes, v1 can never be committed (versions
    // only go up), so its fetch stops as superseded without having moved a byte.
    let side = "testnet/window-side";
    let routine_payload = fleet.make_payload(3).unwrap();
    let routine = fleet.publish_on(side, &routine_payload, 1, &[]).unwrap();
    while !fleet
        .status(1)
        .await
        .unwrap()
        .releases
        .iter()
        .any(|r| r.id == routine && r.state == FetchState::Paused)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let marked_payload = fleet.make_payload(4).unwrap();
    let marked = fleet
        .publish_on(side, &marked_payload, 2, &["--emergency"])
        .unwrap();

    let mut saw_paused = false;
    // The critical v1 downloads while the window is closed. If it has not finished when the
    // window opens, the routine v2 of its channel may download too, and supersedes it (only
    // the newest version counts, scheduler::versions): it must then have moved bytes before
    // the window opened, and never fail.
    let mut emergency_done = false;
    let mut emergency_moved_while_closed = false;
    let mut marked_done = false;
    let mut routine_superseded = false;
    loop {
        let st = fleet.status(1).await.unwrap();
        // After the status: what it says was so at an instant before `now`, so a status
        // taken as the window opens is not read as one from before.
        let now = jiff::Timestamp::now();
        let find = |id: &str| st.releases.iter().find(|r| r.id == id).cloned();
        if let Some(r) = find(&emergency) {
            emergency_done |= r.state == FetchState::Complete;
            emergency_moved_while_closed |=
                now < opens && r.bytes_from_lan + r.bytes_from_wan + r.bytes_reused > 0;
            assert_ne!(r.state, FetchState::Failed, "{r:?}");
            if r.state == FetchState::Superseded {
                assert!(
                    jiff::Timestamp::now() >= opens,
                    "the emergency was superseded by a release that waits"
                );
            }
        }
        if let Some(r) = find(&marked) {
            marked_done |= r.state == FetchState::Complete;
        }
        if let Some(r) = find(&routine) {
            if marked_done {
                routine_superseded |= r.state == FetchState::Superseded;
            }
            assert_eq!(r.bytes_from_lan + r.bytes_from_wan, 0, "{r:?}");
        }
        let done = find(&normal).is_some_and(|r| r.state == FetchState::Complete);
        if now < opens {
            if let Some(r) = find(&normal) {
                // v2 shares most chunks with v1: only what v1 did not have must wait.
                assert_eq!(
                    r.bytes_from_lan + r.bytes_from_wan,
                    0,
                    "bytes moved before the window opened: {r:?}"
                );
                if r.state == FetchState::Paused {
                    saw_paused = true;
                    assert_eq!(
                        r.download_opens.as_deref(),
                        Some(opens.to_string().as_str()),
                        "status tells when the window opens"
                    );
                }
            }
            assert!(!done, "completed before its window opened");
        } else if done {
            break;
        }
        assert!(
            now < opens
                .checked_add(jiff::SignedDuration::from_secs(40))
                .unwrap(),
            "not complete 40 s after the window opened: {:?}",
            st.releases
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        emergency_done || emergency_moved_while_closed,
        "the critical CVSS 9.8 release waited for the window"
    );
    assert!(
        marked_done,
        "the release marked --emergency waited for the window"
    );
    assert!(
        routine_superseded,
        "the older routine release was not stopped as superseded"
    );
    assert!(saw_paused, "the normal release was never reported paused");
}

/// Writes a payload of `mib` MiB of seeded random bytes in `dir`.
fn random_payload(dir: &std::path::Path, seed: u64, mib: usize) -> std::path::PathBuf {
    use rand::{RngCore, SeedableRng};
    let path = dir.join(format!("random-{seed}"));
    std::fs::create_dir_all(&path).unwrap();
    let mut bytes = vec![0u8; mib << 20];
    rand_chacha::ChaCha20Rng::seed_from_u64(seed).fill_bytes(&mut bytes);
    std::fs::write(path.join("patch.bin"), bytes).unwrap();
    path
}

/// A routine release is fetching over a 4 MB/s WAN cap when an emergency arrives. Once the
/// requests the routine fetch had queued have landed, the emergency has the link: the
/// routine fetch, outranked, sends nothing while the emergency keeps the one peer busy
/// (equal shares would move one byte of it per byte of the emergency). It completes after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emergency_takes_the_link_from_a_running_routine_fetch() {
    let s = Scenario::parse(
        "name = 'priority'\nseed = 23\ntimeout_s = 120\n[release]\nsize_mib = 1\n\
         [origin]\n[wan]\nlatency_ms = 1\n\
         [[sites]]\nname = 'branch'\nnodes = 1\n\
         node_config = '''\n[shaping]\nwan_ingress = { default = \"4MB/s\" }\n'''\n",
    )
    .unwrap();
    let (_guard, dir) = workdir();
    let fleet = Fleet::start(s, &dir, true).await.unwrap();
    fleet.wait_connected(Duration::from_secs(60)).await.unwrap();
    let routine_payload = random_payload(&dir, 1, 16);
    let urgent_payload = random_payload(&dir, 2, 8);
    let routine = fleet
        .publish_on(
            "testnet/routine",
            &routine_payload,
            1,
            &["--severity", "low"],
        )
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let have = |st: &api::NodeStatus, id: &str| {
        st.releases
            .iter()
            .find(|r| r.id == id)
            .map(|r| (r.bytes_have, r.state))
    };
    loop {
        let st = fleet.status(1).await.unwrap();
        if have(&st, &routine).is_some_and(|(b, _)| b >= 1 << 20) {
            break;
        }
        assert!(Instant::now() < deadline, "routine fetch did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let urgent = fleet
        .publish_on("testnet/urgent", &urgent_payload, 1, &["--emergency"])
        .unwrap();
    // From the moment the emergency has 2 MiB (what the routine fetch had queued before it
    // was outranked has landed by then)...
    let (routine_0, urgent_0) = loop {
        let st = fleet.status(1).await.unwrap();
        if let (Some(r), Some(u)) = (have(&st, &routine), have(&st, &urgent)) {
            if u.0 >= 2 << 20 {
                assert_eq!(
                    r.1,
                    FetchState::Fetching,
                    "the routine release finished too early"
                );
                break (r.0, u.0);
            }
        }
        assert!(Instant::now() < deadline, "the emergency never arrived");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    // ...to the moment the emergency completes.
    let (routine_1, urgent_1) = loop {
        let st = fleet.status(1).await.unwrap();
        let (r, u) = (have(&st, &routine).unwrap(), have(&st, &urgent).unwrap());
        if u.1 == FetchState::Complete {
            assert_eq!(
                r.1,
                FetchState::Fetching,
                "the routine release finished first"
            );
            break (r.0, u.0);
        }
        assert!(Instant::now() < deadline, "the emergency did not complete");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let share = (routine_1 - routine_0) as f64 / (urgent_1 - urgent_0) as f64;
    eprintln!(
        "while both fetched: routine moved {} bytes, emergency {} bytes: ratio {share:.2}",
        routine_1 - routine_0,
        urgent_1 - urgent_0
    );
    assert!(
        share < 0.2,
        "the routine fetch moved {share:.2} x what the emergency moved"
    );
    loop {
        let st = fleet.status(1).await.unwrap();
        if have(&st, &routine).is_some_and(|(_, state)| state == FetchState::Complete) {
            break;
        }
        assert!(
            Instant::now() < deadline + Duration::from_secs(30),
            "the routine release did not complete after the emergency"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Two sites whose nodes share a 16 Mbit/s WAN ingress cap each (the relay's links are
/// faster): over every 10 s of the distribution, each site's WAN ingress as the relay counts
/// it (QUIC overhead included) stays within 5 % of its cap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_site_stays_under_its_wan_ingress_cap_over_every_10_s() {
    let s = Scenario::parse(
        "name = 'caps'\nseed = 24\ntimeout_s = 180\n[release]\nsize_mib = 24\n\
         [origin]\n[wan]\ndown_mbit = 100\nup_mbit = 100\nlatency_ms = 5\n\
         [[sites]]\nname = 'north'\nnodes = 2\nwan_ingress_cap_mbit = 16\n\
         [[sites]]\nname = 'south'\nnodes = 2\nwan_ingress_cap_mbit = 16\n",
    )
    .unwrap();
    let (_guard, dir) = workdir();
    let fleet = Fleet::start(s, &dir, true).await.unwrap();
    fleet.wait_connected(Duration::from_secs(60)).await.unwrap();
    let d = fleet.distribute(1, |_| {}).await.unwrap();
    eprintln!("{}", testnet::report::render("caps", &d));
    assert!(
        d.all_complete_s() >= 10.0,
        "the distribution must last at least one 10 s window"
    );
    for ((site, peak), (_, cap)) in d
        .site_wan_ingress_peak_10s
        .iter()
        .zip(&d.site_wan_ingress_cap)
    {
        let cap = cap.unwrap();
        assert!(
            *peak <= 1.05 * cap,
            "site {site}: {peak:.0} B/s over 10 s against a cap of {cap:.0} B/s"
        );
        assert!(
            *peak >= 0.8 * cap,
            "site {site}: {peak:.0} B/s; the cap, not something else, should set the pace"
        );
    }
}
