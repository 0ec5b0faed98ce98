//! Maintenance windows.

use super::at;
use scheduler::ScheduleError;
use scheduler::window::{Cron, Window, WindowState, all_open_state, parse_duration, union_state};

fn open(closes: &str) -> WindowState {
    WindowState::Open {
        closes: Some(at(closes)),
    }
}

fn closed(opens: &str) -> WindowState {
    WindowState::Closed {
        opens: Some(at(opens)),
    }
}

/// hawkBit's example shape: Saturdays 02:00 for four hours, Quartz syntax.
#[test]
fn tokyo_saturday_install_window() {
    let w = Window::parse("0 0 2 ? * SAT", "04:00", "Asia/Tokyo").unwrap();
    // 2026-11-28 is a Saturday.
    assert_eq!(
        w.state_at(at("2026-11-28T03:00+09:00")),
        open("2026-11-28T06:00+09:00")
    );
    assert_eq!(
        w.state_at(at("2026-11-28T02:00+09:00")),
        open("2026-11-28T06:00+09:00")
    );
    assert_eq!(
        w.state_at(at("2026-11-28T06:00+09:00")),
        closed("2026-12-05T02:00+09:00")
    );
    assert_eq!(
        w.state_at(at("2026-11-23T12:00+09:00")),
        closed("2026-11-28T02:00+09:00")
    );
    assert!(w.is_open(at("2026-11-27T18:30Z"))); // Saturday 03:30 in Tokyo
}

/// "Download only between 22:00 and 05:00": a window crossing midnight, classic cron.
#[test]
fn nightly_download_window_crosses_midnight() {
    let w = Window::parse("0 22 * * *", "07:00", "America/New_York").unwrap();
    assert_eq!(
        w.state_at(at("2026-11-23T23:00-05:00")),
        open("2026-11-24T05:00-05:00")
    );
    assert_eq!(
        w.state_at(at("2026-11-24T04:59-05:00")),
        open("2026-11-24T05:00-05:00")
    );
    assert_eq!(
        w.state_at(at("2026-11-24T05:00-05:00")),
        closed("2026-11-24T22:00-05:00")
    );
    assert_eq!(
        w.state_at(at("2026-11-24T21:59-05:00")),
        closed("2026-11-24T22:00-05:00")
    );
}

/// A start in the hour skipped on 2026-03-08 happens when the clock jumps past it.
#[test]
fn spring_forward_start_in_the_skipped_hour() {
    let w = Window::parse("30 2 * * *", "01:00", "America/New_York").unwrap();
    let before = at("2026-03-08T01:00-05:00");
    // 02:30 does not exist that night; "compatible" puts the start at 03:30 EDT.
    assert_eq!(w.state_at(before), closed("2026-03-08T03:30-04:00"));
    assert_eq!(
        w.state_at(at("2026-03-08T03:45-04:00")),
        open("2026-03-08T04:30-04:00")
    );
    // The day after, 02:30 EDT.
    assert_eq!(
        w.state_at(at("2026-03-08T12:00-04:00")),
        closed("2026-03-09T02:30-04:00")
    );
}

/// A start in the hour repeated on 2026-11-01 happens once, the first time; the duration is
/// elapsed time.
#[test]
fn fall_back_start_in_the_repeated_hour_happens_once() {
    let w = Window::parse("30 1 * * *", "01:00", "America/New_York").unwrap();
    // Opens at the first 01:30 (EDT, 05:30 UTC), open one real hour: until 01:30 EST.
    assert_eq!(
        w.state_at(at("2026-11-01T01:30-04:00")),
        open("2026-11-01T01:30-05:00")
    );
    // At the second 01:45 (EST) it is closed: it does not open again at the second 01:30.
    assert_eq!(
        w.state_at(at("2026-11-01T01:45-05:00")),
        closed("2026-11-02T01:30-05:00")
    );
    // A 4-hour window over the change is open 4 real hours (3 on the wall clock).
    let long = Window::parse("0 0 * * *", "04:00", "America/New_York").unwrap();
    assert_eq!(
        long.state_at(at("2026-11-01T00:30-04:00")),
        open("2026-11-01T03:00-05:00")
    );
}

#[test]
fn day_of_week_numbering_follows_each_syntax() {
    // Saturday: Quartz 7, cron 6; Sunday: Quartz 1, cron 0 and 7.
    let z = "UTC";
    let sat = [
        ("0 0 2 ? * 7", "04:00"),
        ("0 2 * * 6", "04:00"),
        ("0 0 2 ? * SAT", "04:00"),
    ];
    for (expr, d) in sat {
        let w = Window::parse(expr, d, z).unwrap();
        assert_eq!(
            w.state_at(at("2026-11-23T00:00Z")),
            closed("2026-11-28T02:00Z"),
            "{expr}"
        );
    }
    for expr in ["0 0 2 ? * 1", "0 2 * * 0", "0 2 * * 7", "0 2 * * SUN"] {
        let w = Window::parse(expr, "01:00", z).unwrap();
        assert_eq!(
            w.state_at(at("2026-11-23T00:00Z")),
            closed("2026-11-29T02:00Z"),
            "{expr}"
        );
    }
    // Weekdays at 22:30 with a step in the hour field of a second expression.
    let w = Window::parse("30 22 * * MON-FRI", "00:30", z).unwrap();
    assert_eq!(
        w.state_at(at("2026-11-27T23:30Z")),
        closed("2026-11-30T22:30Z")
    );
    let every_6h = Window::parse("0 */6 * * *", "01:00", z).unwrap();
    assert_eq!(
        every_6h.state_at(at("2026-11-23T07:00Z")),
        closed("2026-11-23T12:00Z")
    );
}

#[test]
fn overlapping_windows_merge_and_rare_dates_are_found() {
    // 01:00 and 02:00, 90 minutes each: one stretch 01:00-03:30.
    let w = Window::parse("0 1,2 * * *", "01:30", "UTC").unwrap();
    assert_eq!(
        w.state_at(at("2026-11-23T01:45Z")),
        open("2026-11-23T03:30Z")
    );
    assert_eq!(
        w.state_at(at("2026-11-23T02:45Z")),
        open("2026-11-23T03:30Z")
    );
    // 29 February: the next one is in 2028.
    let leap = Window::parse("0 0 29 2 *", "01:00", "UTC").unwrap();
    assert_eq!(
        leap.state_at(at("2026-03-01T00:00Z")),
        closed("2028-02-29T00:00Z")
    );
    // 31 February never comes.
    let never = Window::parse("0 0 31 2 *", "01:00", "UTC").unwrap();
    assert_eq!(
        never.state_at(at("2026-03-01T00:00Z")),
        WindowState::Closed { opens: None }
    );
    // Both day fields restricted: either matches (the 1st, or any Monday).
    let either = Window::parse("0 3 1 * MON", "01:00", "UTC").unwrap();
    assert_eq!(
        either.state_at(at("2026-11-24T00:00Z")),
        closed("2026-11-30T03:00Z")
    );
    assert_eq!(
        either.state_at(at("2026-11-30T04:00Z")),
        closed("2026-12-01T03:00Z")
    );
}

#[test]
fn bad_windows_are_refused_with_the_reason() {
    for expr in [
        "61 * * * *",
        "* * *",
        "0 0 0 * *",
        "0 0 * 13 *",
        "0 0 * * FUNDAY",
        "*/0 * * * *",
    ] {
        assert!(
            matches!(expr.parse::<Cron>(), Err(ScheduleError::BadCron { .. })),
            "{expr:?} accepted"
        );
    }
    assert_eq!(parse_duration("04:00").unwrap().as_secs(), 4 * 3600);
    assert_eq!(parse_duration("00:30:15").unwrap().as_secs(), 1815);
    for bad in ["0:00", "00:00:00", "169:00", "ab", "4h", "01:60"] {
        assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
    }
    assert!(matches!(
        Window::parse("0 2 * * *", "01:00", "Nowhere/Town"),
        Err(ScheduleError::UnknownZone(_))
    ));
}

#[test]
fn a_set_of_windows_is_open_when_any_is_and_none_means_always() {
    assert_eq!(
        union_state(&[], at("2026-11-23T00:00Z")),
        WindowState::Open { closes: None }
    );
    let nights = Window::parse("0 22 * * *", "07:00", "UTC").unwrap();
    let saturday = Window::parse("0 0 10 ? * SAT", "08:00", "UTC").unwrap();
    let both = [nights, saturday];
    // Monday noon: closed until 22:00.
    assert_eq!(
        union_state(&both, at("2026-11-23T12:00Z")),
        closed("2026-11-23T22:00Z")
    );
    // Saturday 11:00: the Saturday window is open until 18:00.
    assert_eq!(
        union_state(&both, at("2026-11-28T11:00Z")),
        open("2026-11-28T18:00Z")
    );
    // Friday 23:00: the night window.
    assert_eq!(
        union_state(&both, at("2026-11-27T23:00Z")),
        open("2026-11-28T05:00Z")
    );
}

#[test]
fn node_and_release_windows_must_both_be_open() {
    // The node downloads at night, 22:00-05:00 Tokyo; the release only on weekends, in UTC.
    let node = [Window::parse("0 22 * * *", "07:00", "Asia/Tokyo").unwrap()];
    let release = [Window::parse("0 0 * * SAT", "48:00", "UTC").unwrap()];
    let both: [&[Window]; 2] = [&node, &release];
    // Monday 2026-11-23 14:00Z is 23:00 Tokyo: the node window is open, the release's is
    // not. At Saturday 00:00Z (09:00 Tokyo) the release window opens but the node's is
    // closed; both are next open at Saturday 13:00Z (22:00 Tokyo), until 20:00Z (05:00).
    assert_eq!(
        all_open_state(&both, at("2026-11-23T14:00Z")),
        closed("2026-11-28T13:00Z")
    );
    assert_eq!(
        all_open_state(&both, at("2026-11-28T15:00Z")),
        open("2026-11-28T20:00Z")
    );
    // Sunday 23:00 Tokyo (14:00Z): open until the node window closes at 20:00Z.
    assert_eq!(
        all_open_state(&both, at("2026-11-29T14:00Z")),
        open("2026-11-29T20:00Z")
    );
    // A release window that closes first ends the open stretch: Saturday 06:00Z-08:00Z
    // inside a node window of 05:00Z-10:00Z.
    let node = [Window::parse("0 5 * * *", "05:00", "UTC").unwrap()];
    let short = [Window::parse("0 6 * * SAT", "02:00", "UTC").unwrap()];
    assert_eq!(
        all_open_state(&[&node, &short], at("2026-11-28T07:00Z")),
        open("2026-11-28T08:00Z")
    );
    // An empty set holds nothing back; no sets at all is always open.
    let none: [&[Window]; 2] = [&node, &[]];
    assert_eq!(
        all_open_state(&none, at("2026-11-23T14:00Z")),
        union_state(&node, at("2026-11-23T14:00Z"))
    );
    assert_eq!(
        all_open_state(&[], at("2026-11-23T14:00Z")),
        WindowState::Open { closes: None }
    );
    // Windows that never overlap: closed, with no opening in sight.
    let mornings = [Window::parse("0 6 * * *", "01:00", "UTC").unwrap()];
    let evenings = [Window::parse("0 18 * * *", "01:00", "UTC").unwrap()];
    assert_eq!(
        all_open_state(&[&mornings, &evenings], at("2026-11-23T00:00Z")),
        WindowState::Closed { opens: None }
    );
}

#[test]
fn release_windows_read_the_node_zone_unless_they_name_one() {
    let tokyo = scheduler::zone("Asia/Tokyo").unwrap();
    let local = protocol::ReleaseWindow {
        cron: "0 2 * * SAT".into(),
        duration_s: 4 * 3600,
        zone: None,
    };
    let w = Window::from_release(&local, &tokyo).unwrap();
    // Saturday 02:00 Tokyo is Friday 17:00Z.
    assert_eq!(
        w.state_at(at("2026-11-27T16:00Z")),
        closed("2026-11-27T17:00Z")
    );
    let utc = protocol::ReleaseWindow {
        zone: Some("UTC".into()),
        ..local.clone()
    };
    assert_eq!(
        Window::from_release(&utc, &tokyo)
            .unwrap()
            .state_at(at("2026-11-27T16:00Z")),
        closed("2026-11-28T02:00Z")
    );
    let bad_zone = protocol::ReleaseWindow {
        zone: Some("Nowhere/Town".into()),
        ..local.clone()
    };
    assert!(matches!(
        Window::from_release(&bad_zone, &tokyo),
        Err(ScheduleError::UnknownZone(_))
    ));
    let bad_cron = protocol::ReleaseWindow {
        cron: "every saturday".into(),
        ..local
    };
    assert!(Window::from_release(&bad_cron, &tokyo).is_err());
}

#[test]
fn release_windows_are_written_cron_for_duration_in_zone() {
    use scheduler::window::{format_release_window, parse_release_window};
    let w = parse_release_window("0 2 * * SAT for 04:00 in Europe/Berlin").unwrap();
    assert_eq!(w.cron, "0 2 * * SAT");
    assert_eq!(w.duration_s, 4 * 3600);
    assert_eq!(w.zone.as_deref(), Some("Europe/Berlin"));
    assert_eq!(
        format_release_window(&w),
        "0 2 * * SAT for 04:00 in Europe/Berlin"
    );
    let local = parse_release_window("0 0 22 ? * * for 07:00:30").unwrap();
    assert_eq!(local.zone, None);
    assert_eq!(format_release_window(&local), "0 0 22 ? * * for 07:00:30");
    for bad in [
        "0 2 * * SAT",
        "0 2 * * SAT for 4h",
        "0 2 * * FUNDAY for 04:00",
        "0 2 * * SAT for 04:00 in Nowhere/Town",
        "0 2 * * SAT for 200:00",
    ] {
        assert!(parse_release_window(bad).is_err(), "{bad:?} accepted");
    }
}
