//! Rate schedules.

use super::at;
use scheduler::rate::{Days, Rate, RateRule, RateSchedule, TimeRange};
use scheduler::{ScheduleError, zone};

fn rule(days: &str, range: &str, rate: &str) -> RateRule {
    RateRule {
        days: days.parse().unwrap(),
        range: range.parse().unwrap(),
        rate: rate.parse().unwrap(),
    }
}

fn schedule(tz: &str, rules: &[(&str, &str, &str)], default: &str) -> RateSchedule {
    RateSchedule {
        zone: zone(tz).unwrap(),
        rules: rules.iter().map(|(d, r, x)| rule(d, r, x)).collect(),
        default: default.parse().unwrap(),
    }
}

const MBIT: u64 = 125_000;

#[test]
fn rates_parse_in_bits_and_bytes() {
    let cases = [
        ("10Mbit/s", Rate::BytesPerSec(10 * MBIT)),
        ("80 Mbps", Rate::BytesPerSec(80 * MBIT)),
        ("1.5Gbit/s", Rate::BytesPerSec(187_500_000)),
        ("5MB/s", Rate::BytesPerSec(5_000_000)),
        ("512KiB/s", Rate::BytesPerSec(512 * 1024)),
        ("4 MiB/s", Rate::BytesPerSec(4 << 20)),
        ("unlimited", Rate::Unlimited),
        ("0", Rate::BytesPerSec(0)),
    ];
    for (s, want) in cases {
        assert_eq!(s.parse::<Rate>().unwrap(), want, "{s}");
    }
    for bad in ["", "fast", "10", "10 furlongs/s", "-5MB/s", "1e400MB/s"] {
        assert!(
            matches!(bad.parse::<Rate>(), Err(ScheduleError::BadRate(_))),
            "{bad:?} accepted"
        );
    }
    assert_eq!(
        Rate::Unlimited.min(Rate::BytesPerSec(5)),
        Rate::BytesPerSec(5)
    );
    assert_eq!(
        Rate::BytesPerSec(9).min(Rate::BytesPerSec(5)),
        Rate::BytesPerSec(5)
    );
}

#[test]
fn rules_parse_from_one_line() {
    let r: RateRule = "Mon-Fri 08:00-20:00 10 Mbit/s".parse().unwrap();
    assert_eq!(r.rate, Rate::BytesPerSec(10 * MBIT));
    assert_eq!(
        r.range,
        TimeRange {
            from: 480,
            to: 1200
        }
    );
    for bad in [
        "Mon-Fri 08:00-20:00",
        "08:00-20:00 10Mbit/s",
        "Mon-Fri 8-20 10Mbit/s",
        "",
    ] {
        assert!(bad.parse::<RateRule>().is_err(), "{bad:?} accepted");
    }
}

#[test]
fn days_and_ranges_parse() {
    let weekdays: Days = "Mon-Fri".parse().unwrap();
    let weekend: Days = "Sat,Sun".parse().unwrap();
    let wrap: Days = "Fri-Mon".parse().unwrap();
    use jiff::civil::Weekday::*;
    assert!(weekdays.contains(Monday) && weekdays.contains(Friday) && !weekdays.contains(Saturday));
    assert!(weekend.contains(Sunday) && !weekend.contains(Monday));
    assert!(wrap.contains(Saturday) && wrap.contains(Monday) && !wrap.contains(Tuesday));
    assert_eq!("*".parse::<Days>().unwrap(), Days::ALL);
    assert!("Funday".parse::<Days>().is_err());
    assert_eq!(
        "22:00-05:00".parse::<TimeRange>().unwrap(),
        TimeRange {
            from: 1320,
            to: 300
        }
    );
    assert_eq!("00:00-24:00".parse::<TimeRange>().unwrap().to, 0);
    for bad in ["25:00-01:00", "08:00", "8-9", "08:60-09:00", "24:00-01:00"] {
        assert!(bad.parse::<TimeRange>().is_err(), "{bad:?} accepted");
    }
}

/// "At most 10 Mbit/s from 08:00 to 20:00 Tokyo time on weekdays, 80 Mbit/s otherwise."
#[test]
fn tokyo_business_hours() {
    let s = schedule(
        "Asia/Tokyo",
        &[("Mon-Fri", "08:00-20:00", "10Mbit/s")],
        "80Mbit/s",
    );
    // Monday 2026-11-23, Tokyo is UTC+9 all year.
    assert_eq!(
        s.rate_at(at("2026-11-23T12:00+09:00")),
        Rate::BytesPerSec(10 * MBIT)
    );
    assert_eq!(
        s.rate_at(at("2026-11-23T07:59+09:00")),
        Rate::BytesPerSec(80 * MBIT)
    );
    assert_eq!(
        s.rate_at(at("2026-11-23T08:00+09:00")),
        Rate::BytesPerSec(10 * MBIT)
    );
    assert_eq!(
        s.rate_at(at("2026-11-23T20:00+09:00")),
        Rate::BytesPerSec(80 * MBIT)
    );
    assert_eq!(
        s.rate_at(at("2026-11-28T12:00+09:00")),
        Rate::BytesPerSec(80 * MBIT)
    );
    // The same instant read in UTC is the same answer.
    assert_eq!(
        s.rate_at(at("2026-11-23T03:00Z")),
        Rate::BytesPerSec(10 * MBIT)
    );
    assert_eq!(
        s.next_change(at("2026-11-23T12:00+09:00")),
        Some(at("2026-11-23T20:00+09:00"))
    );
    // Friday evening: the next change is Monday 08:00.
    assert_eq!(
        s.next_change(at("2026-11-27T21:00+09:00")),
        Some(at("2026-11-30T08:00+09:00"))
    );
}

#[test]
fn a_range_crossing_midnight_belongs_to_the_day_it_starts() {
    let s = schedule("Asia/Tokyo", &[("Fri", "22:00-05:00", "0")], "unlimited");
    assert_eq!(s.rate_at(at("2026-11-27T21:59+09:00")), Rate::Unlimited); // Fri
    assert_eq!(
        s.rate_at(at("2026-11-27T23:00+09:00")),
        Rate::BytesPerSec(0)
    ); // Fri
    assert_eq!(
        s.rate_at(at("2026-11-28T04:59+09:00")),
        Rate::BytesPerSec(0)
    ); // Sat
    assert_eq!(s.rate_at(at("2026-11-28T05:00+09:00")), Rate::Unlimited);
    assert_eq!(s.rate_at(at("2026-11-27T03:00+09:00")), Rate::Unlimited); // Fri morning
    assert_eq!(
        s.next_change(at("2026-11-27T23:00+09:00")),
        Some(at("2026-11-28T05:00+09:00"))
    );
}

/// Overlapping rules: the lowest rate wins, whichever rule is more specific.
#[test]
fn where_rules_overlap_the_lowest_rate_wins() {
    let s = schedule(
        "Europe/Berlin",
        &[
            ("Mon-Fri", "08:00-20:00", "10Mbit/s"),
            ("Mon", "12:00-13:00", "50Mbit/s"),
            ("*", "12:30-12:45", "2Mbit/s"),
            ("*", "00:00-00:00", "unlimited"),
        ],
        "80Mbit/s",
    );
    // 2026-11-23 is a Monday; Berlin is UTC+1 in November.
    assert_eq!(
        s.rate_at(at("2026-11-23T12:15+01:00")),
        Rate::BytesPerSec(10 * MBIT)
    );
    assert_eq!(
        s.rate_at(at("2026-11-23T12:40+01:00")),
        Rate::BytesPerSec(2 * MBIT)
    );
    // An all-day "unlimited" rule cannot raise another rule's limit (above); where it is
    // the only match it applies instead of the default.
    assert_eq!(s.rate_at(at("2026-11-23T23:00+01:00")), Rate::Unlimited);
}

/// Spring forward in New York: 2026-03-08 02:00 EST becomes 03:00 EDT.
#[test]
fn spring_forward_rule_starting_in_the_skipped_hour() {
    let s = schedule(
        "America/New_York",
        &[("*", "02:30-03:30", "1MB/s")],
        "unlimited",
    );
    let before = at("2026-03-08T01:59-05:00");
    assert_eq!(s.rate_at(before), Rate::Unlimited);
    // The clock jumps from 01:59:59 EST to 03:00 EDT, inside the range: the limit starts at
    // the jump (07:00 UTC), not at 03:30 EDT.
    assert_eq!(s.next_change(before), Some(at("2026-03-08T07:00Z")));
    assert_eq!(
        s.rate_at(at("2026-03-08T03:00-04:00")),
        Rate::BytesPerSec(1_000_000)
    );
    assert_eq!(
        s.next_change(at("2026-03-08T03:00-04:00")),
        Some(at("2026-03-08T03:30-04:00"))
    );
    // The next day, the range is a normal hour in EDT.
    assert_eq!(
        s.next_change(at("2026-03-08T12:00-04:00")),
        Some(at("2026-03-09T02:30-04:00"))
    );
}

/// Fall back in New York: 2026-11-01 02:00 EDT becomes 01:00 EST; 01:00-02:00 happens twice.
#[test]
fn fall_back_repeated_hour_is_in_the_range_both_times() {
    let s = schedule(
        "America/New_York",
        &[("*", "01:00-02:00", "1MB/s")],
        "unlimited",
    );
    let limited = Rate::BytesPerSec(1_000_000);
    assert_eq!(s.rate_at(at("2026-11-01T01:30-04:00")), limited); // first 01:30 (EDT)
    assert_eq!(s.rate_at(at("2026-11-01T01:30-05:00")), limited); // second 01:30 (EST)
    assert_eq!(s.rate_at(at("2026-11-01T02:00-05:00")), Rate::Unlimited);
    // From the first 01:30 the rate holds through the repeated hour: the clock going back
    // at 06:00 UTC is not a change.
    assert_eq!(
        s.next_change(at("2026-11-01T01:30-04:00")),
        Some(at("2026-11-01T02:00-05:00"))
    );
}

#[test]
fn a_constant_schedule_never_changes() {
    let s = RateSchedule::constant(Rate::BytesPerSec(7));
    assert_eq!(s.rate_at(at("2026-01-01T00:00Z")), Rate::BytesPerSec(7));
    assert_eq!(s.next_change(at("2026-01-01T00:00Z")), None);
}

#[test]
fn unknown_zones_are_refused_and_the_database_is_embedded() {
    assert!(matches!(
        zone("Mars/Olympus"),
        Err(ScheduleError::UnknownZone(_))
    ));
    // These come from the bundled database, whatever the host has.
    for z in [
        "Asia/Tokyo",
        "America/New_York",
        "Europe/Berlin",
        "UTC",
        "Australia/Lord_Howe",
    ] {
        assert!(zone(z).is_ok(), "{z}");
    }
}
