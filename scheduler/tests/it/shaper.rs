//! The shaper against a fake clock: long-run rates, a rate change mid-stream, rate 0.

use super::at;
use governor::clock::FakeRelativeClock;
use jiff::{SignedDuration, Timestamp};
use scheduler::rate::{Rate, RateRule, RateSchedule};
use scheduler::shaper::{Decision, Shaper};
use scheduler::zone;
use std::time::Duration;

/// Sends `piece`-byte pieces as fast as the shaper allows for `secs` seconds of fake time;
/// returns the bytes sent in each whole second.
fn run(
    shaper: &mut Shaper<FakeRelativeClock>,
    clock: &FakeRelativeClock,
    start: Timestamp,
    secs: u64,
    piece: u32,
) -> Vec<u64> {
    let mut per_sec = vec![0u64; secs as usize];
    let mut elapsed = Duration::ZERO;
    let mut guard = 0u64;
    while elapsed < Duration::from_secs(secs) {
        guard += 1;
        assert!(guard < 50_000_000, "the shaper never made the sender wait");
        let now = start + SignedDuration::try_from(elapsed).unwrap();
        match shaper.reserve(piece, now) {
            Decision::Go(n) => {
                assert!(n > 0 && n <= piece);
                per_sec[elapsed.as_secs() as usize] += u64::from(n);
            }
            Decision::Wait(d) => {
                // Never longer than one piece at the rate (the slowest case here: 16 KiB at
                // 100 kbit/s, 1.3 s).
                assert!(
                    d > Duration::ZERO && d <= Duration::from_secs(2),
                    "wait {d:?}"
                );
                clock.advance(d);
                elapsed += d;
            }
            Decision::Blocked { until } => {
                let until = until.expect("blocked for good");
                let d = Duration::try_from(until.duration_since(now)).unwrap();
                clock.advance(d);
                elapsed += d;
            }
        }
    }
    per_sec
}

fn within(got: f64, want: f64, tolerance: f64) -> bool {
    (got - want).abs() <= want * tolerance
}

#[test]
fn long_run_rate_is_within_two_percent() {
    for rate in ["4MB/s", "10Mbit/s", "1Gbit/s", "3MB/s", "100kbit/s"] {
        let r: Rate = rate.parse().unwrap();
        let clock = FakeRelativeClock::default();
        let start = at("2026-11-23T03:00Z");
        let mut s = Shaper::new(RateSchedule::constant(r), clock.clone(), start);
        let piece = 16 << 10;
        let secs = 60;
        let sent: u64 = run(&mut s, &clock, start, secs, piece).iter().sum();
        let want = r.bytes_per_sec().unwrap() as f64 * secs as f64;
        assert!(
            within(sent as f64, want, 0.02),
            "{rate}: sent {sent} in {secs} s, want {want}"
        );
    }
}

/// 4 MB/s until 12:00:30 Tokyo time, then 1 MB/s: the change holds from the next second on.
#[test]
fn a_rate_change_mid_stream_takes_effect() {
    let tokyo = zone("Asia/Tokyo").unwrap();
    let schedule = RateSchedule {
        zone: tokyo,
        rules: vec![RateRule {
            days: "*".parse().unwrap(),
            range: "12:01-13:00".parse().unwrap(),
            rate: "1MB/s".parse().unwrap(),
        }],
        default: "4MB/s".parse().unwrap(),
    };
    let start = at("2026-11-23T12:00:30+09:00");
    let clock = FakeRelativeClock::default();
    let mut s = Shaper::new(schedule, clock.clone(), start);
    assert_eq!(s.next_change(), Some(at("2026-11-23T12:01+09:00")));
    let per_sec = run(&mut s, &clock, start, 60, 16 << 10);
    let before: u64 = per_sec[..30].iter().sum();
    let after: u64 = per_sec[31..].iter().sum();
    assert!(within(before as f64, 4e6 * 30.0, 0.02), "before: {before}");
    assert!(within(after as f64, 1e6 * 29.0, 0.02), "after: {after}");
    assert_eq!(s.rate(), Rate::BytesPerSec(1_000_000));
}

#[test]
fn rate_zero_blocks_until_the_schedule_opens_and_unlimited_never_waits() {
    let schedule = RateSchedule {
        zone: zone("UTC").unwrap(),
        rules: vec![RateRule {
            days: "*".parse().unwrap(),
            range: "08:00-20:00".parse().unwrap(),
            rate: "0".parse().unwrap(),
        }],
        default: "unlimited".parse().unwrap(),
    };
    let clock = FakeRelativeClock::default();
    let mut s = Shaper::new(schedule, clock.clone(), at("2026-11-23T09:00Z"));
    assert_eq!(
        s.reserve(1000, at("2026-11-23T09:00Z")),
        Decision::Blocked {
            until: Some(at("2026-11-23T20:00Z"))
        }
    );
    for _ in 0..1000 {
        assert_eq!(
            s.reserve(64 << 10, at("2026-11-23T20:00Z")),
            Decision::Go(64 << 10)
        );
    }
}
