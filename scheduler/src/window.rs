//! Maintenance windows, the way hawkBit defines them: a cron expression says when a window
//! starts, a duration how long it stays open, a time zone which clock the expression reads.
//!
//! The expression is either classic cron (5 fields: minute hour day-of-month month
//! day-of-week, Sunday 0 or 7) or Quartz as hawkBit writes it (6 or 7 fields: second minute
//! hour day-of-month month day-of-week \[year\], Sunday 1, `?` for "no value"). Fields take
//! `*`, numbers, names (`JAN`, `MON`), ranges `a-b`, lists `a,b` and steps `*/n`, `a-b/n`.
//! When both day fields are restricted, a day matching either counts (as in cron).
//!
//! Start times are wall-clock times. A start in the hour skipped when clocks spring forward
//! happens when the clock jumps past it (jiff's "compatible" rule, as in RFC 5545); a start in
//! the hour repeated when clocks fall back happens once, the first time. Durations are
//! elapsed time, so a 4-hour window across a DST change is open 4 real hours.

use crate::ScheduleError;
use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use std::str::FromStr;

/// Longest window: a week. Longer would be "always open" said in a way that is hard to check.
pub const WINDOW_DURATION_MAX: SignedDuration = SignedDuration::from_hours(24 * 7);

/// How many days ahead a start is looked for: four years, so a window on 29 February is found.
const SEARCH_DAYS: i64 = 4 * 366 + 1;

/// A parsed cron expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    seconds: u64,
    minutes: u64,
    hours: u32,
    days_of_month: u32,
    months: u16,
    /// Bit 0 = Monday.
    days_of_week: u8,
    dom_restricted: bool,
    dow_restricted: bool,
    years: Option<(i16, i16)>,
    text: String,
}

const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const DAYS_SUN_FIRST: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

impl FromStr for Cron {
    type Err = ScheduleError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: String| ScheduleError::BadCron {
            expr: s.to_string(),
            why,
        };
        let fields: Vec<&str> = s.split_whitespace().collect();
        let (sec, rest, quartz) = match fields.len() {
            5 => ("0", &fields[..], false),
            6 | 7 => (fields[0], &fields[1..], true),
            n => {
                return Err(bad(format!(
                    "{n} fields; expected 5 (cron) or 6-7 (Quartz)"
                )));
            }
        };
        let seconds = field(sec, 0, 59, &[], 0).map_err(|e| bad(format!("seconds: {e}")))?;
        let minutes = field(rest[0], 0, 59, &[], 0).map_err(|e| bad(format!("minutes: {e}")))?;
        let hours = field(rest[1], 0, 23, &[], 0).map_err(|e| bad(format!("hours: {e}")))?;
        let dom = field(rest[2], 1, 31, &[], 0).map_err(|e| bad(format!("day of month: {e}")))?;
        let months = field(rest[3], 1, 12, &MONTHS, 1).map_err(|e| bad(format!("month: {e}")))?;
        // Day of week, normalised to Sunday = 0.
        let dow_raw = if quartz {
            field(rest[4], 1, 7, &DAYS_SUN_FIRST, 1)
                .map(|bits| bits >> 1)
                .map_err(|e| bad(format!("day of week: {e}")))?
        } else {
            field(rest[4], 0, 7, &DAYS_SUN_FIRST, 0)
                .map(|bits| (bits | (bits >> 7)) & 0x7f)
                .map_err(|e| bad(format!("day of week: {e}")))?
        };
        // Sunday-first bits to Monday-first bits.
        let days_of_week = (((dow_raw >> 1) | ((dow_raw & 1) << 6)) & 0x7f) as u8;
        let years = match rest.get(5) {
            None | Some(&"*") => None,
            Some(y) => Some(
                year_range(y).ok_or_else(|| bad("year: expected * or YYYY or YYYY-YYYY".into()))?,
            ),
        };
        let dom_restricted = !matches!(rest[2], "*" | "?");
        let dow_restricted = !matches!(rest[4], "*" | "?");
        if dom == 0 || months == 0 || days_of_week == 0 || hours == 0 || minutes == 0 {
            return Err(bad("a field matches nothing".into()));
        }
        Ok(Self {
            seconds,
            minutes,
            hours: hours as u32,
            days_of_month: dom as u32,
            months: months as u16,
            days_of_week,
            dom_restricted,
            dow_restricted,
            years,
            text: s.trim().to_string(),
        })
    }
}

fn year_range(s: &str) -> Option<(i16, i16)> {
    match s.split_once('-') {
        Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
        None => {
            let y = s.parse().ok()?;
            Some((y, y))
        }
    }
}

/// Parses one cron field into a bit set over `min..=max` (bit i = value i).
fn field(s: &str, min: u32, max: u32, names: &[&str], name_base: u32) -> Result<u64, String> {
    if s == "?" {
        return Ok(range_bits(min, max, 1));
    }
    let value = |v: &str| -> Result<u32, String> {
        if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(v)) {
            return Ok(i as u32 + name_base);
        }
        let n: u32 = v
            .parse()
            .map_err(|_| format!("{v:?} is not a number or name"))?;
        if n < min || n > max {
            return Err(format!("{n} is outside {min}-{max}"));
        }
        Ok(n)
    };
    let mut bits = 0u64;
    for part in s.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, st)) => {
                let st: u32 = st.parse().map_err(|_| format!("step {st:?}"))?;
                if st == 0 {
                    return Err("step 0".into());
                }
                (r, st)
            }
            None => (part, 1),
        };
        let (lo, hi) = if range == "*" {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            (value(a)?, value(b)?)
        } else {
            let v = value(range)?;
            (v, if step > 1 { max } else { v })
        };
        if lo > hi {
            return Err(format!("range {lo}-{hi} runs backwards"));
        }
        bits |= range_bits(lo, hi, step);
    }
    Ok(bits)
}

fn range_bits(lo: u32, hi: u32, step: u32) -> u64 {
    (lo..=hi)
        .step_by(step as usize)
        .fold(0, |b, v| b | (1 << v))
}

impl Cron {
    fn day_matches(&self, date: Date) -> bool {
        if self.months & (1 << date.month()) == 0 {
            return false;
        }
        if let Some((a, b)) = self.years {
            if !(a..=b).contains(&date.year()) {
                return false;
            }
        }
        let dom = self.days_of_month & (1 << date.day()) != 0;
        let dow = self.days_of_week & (1 << date.weekday().to_monday_zero_offset()) != 0;
        match (self.dom_restricted, self.dow_restricted) {
            (true, true) => dom || dow,
            (true, false) => dom,
            (false, true) => dow,
            (false, false) => true,
        }
    }

    /// The first start at or after `t` (`inclusive`) or strictly after it, read on `zone`'s
    /// clock; `None` if none in the next four years.
    pub fn next_start(&self, zone: &TimeZone, t: Timestamp, inclusive: bool) -> Option<Timestamp> {
        let after = |ts: Timestamp| if inclusive { ts >= t } else { ts > t };
        let local = zone.to_datetime(t);
        let first_day = local.date();
        for offset in 0..SEARCH_DAYS {
            let date = first_day.checked_add(jiff::Span::new().days(offset)).ok()?;
            if !self.day_matches(date) {
                continue;
            }
            for h in bits_of(u64::from(self.hours), 23) {
                // On the first day, hours well before now cannot be after `t` (a DST shift is
                // at most a few hours).
                if offset == 0 && (h as i8) < local.hour() - 3 {
                    continue;
                }
                for m in bits_of(self.minutes, 59) {
                    for s in bits_of(self.seconds, 59) {
                        let dt = DateTime::from_parts(
                            date,
                            jiff::civil::time(h as i8, m as i8, s as i8, 0),
                        );
                        if let Ok(ts) = zone.to_ambiguous_timestamp(dt).compatible() {
                            if after(ts) {
                                return Some(ts);
                            }
                        }
                    }
                }
            }
        }
        None
    }

    /// The expression as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

fn bits_of(bits: u64, max: u32) -> impl Iterator<Item = u32> {
    (0..=max).filter(move |i| bits & (1 << i) != 0)
}

/// Parses a window duration: `HH:MM` or `HH:MM:SS` (hawkBit's format), above zero and at most
/// [`WINDOW_DURATION_MAX`].
pub fn parse_duration(s: &str) -> Result<SignedDuration, ScheduleError> {
    let bad = || ScheduleError::BadDuration(s.to_string());
    let parts: Vec<&str> = s.trim().split(':').collect();
    if !(2..=3).contains(&parts.len()) {
        return Err(bad());
    }
    let mut secs: i64 = 0;
    for (i, p) in parts.iter().enumerate() {
        let v: i64 = p.parse().map_err(|_| bad())?;
        if v < 0 || (i > 0 && v > 59) {
            return Err(bad());
        }
        secs = secs * 60 + v;
    }
    if parts.len() == 2 {
        secs *= 60;
    }
    let d = SignedDuration::from_secs(secs);
    if d.is_zero() || d > WINDOW_DURATION_MAX {
        return Err(bad());
    }
    Ok(d)
}

/// Reads a release window written as `CRON for DURATION [in ZONE]`, the form `p2pctl publish
/// --install-window` takes: `"0 2 * * SAT for 04:00 in Europe/Berlin"`. Without `in ZONE` the
/// window is read in each node's own zone. Every part is checked here, so a publisher learns
/// of a mistake before anything is signed.
pub fn parse_release_window(text: &str) -> Result<protocol::ReleaseWindow, ScheduleError> {
    let bad = || ScheduleError::BadCron {
        expr: text.to_owned(),
        why: "write a window as CRON for HH:MM[:SS] [in ZONE], \
                  such as \"0 2 * * SAT for 04:00 in Europe/Berlin\""
            .into(),
    };
    let (cron, rest) = text.split_once(" for ").ok_or_else(bad)?;
    let (duration, zone) = match rest.split_once(" in ") {
        Some((d, z)) => (d.trim(), Some(z.trim())),
        None => (rest.trim(), None),
    };
    let cron = cron.trim();
    cron.parse::<Cron>()?;
    let duration = parse_duration(duration)?;
    if let Some(zone) = zone {
        crate::zone(zone)?;
    }
    let w = protocol::ReleaseWindow {
        cron: cron.to_owned(),
        duration_s: u32::try_from(duration.as_secs()).map_err(|_| bad())?,
        zone: zone.map(str::to_owned),
    };
    Ok(w)
}

/// Writes a release window back in the form [`parse_release_window`] reads.
pub fn format_release_window(w: &protocol::ReleaseWindow) -> String {
    let s = w.duration_s;
    let duration = if s % 60 == 0 {
        format!("{:02}:{:02}", s / 3600, s % 3600 / 60)
    } else {
        format!("{:02}:{:02}:{:02}", s / 3600, s % 3600 / 60, s % 60)
    };
    match &w.zone {
        Some(zone) => format!("{} for {duration} in {zone}", w.cron),
        None => format!("{} for {duration}", w.cron),
    }
}

/// A recurring maintenance window.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    /// When it opens.
    pub start: Cron,
    /// How long it stays open.
    pub duration: SignedDuration,
    /// Whose clock `start` reads.
    pub zone: TimeZone,
}

/// Whether a window is open at an instant, and until or from when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowState {
    /// Open; it closes at `closes` (`None`: not within the search horizon, i.e. windows
    /// follow each other without a gap).
    Open {
        /// When it closes.
        closes: Option<Timestamp>,
    },
    /// Closed; it next opens at `opens` (`None`: never within four years).
    Closed {
        /// When it opens.
        opens: Option<Timestamp>,
    },
}

/// Most back-to-back windows followed when looking for where an open stretch ends.
const CHAIN_MAX: usize = 10_000;

impl Window {
    /// A window from its three parts as written in a config or manifest.
    pub fn parse(start: &str, duration: &str, zone: &str) -> Result<Self, ScheduleError> {
        Ok(Self {
            start: start.parse()?,
            duration: parse_duration(duration)?,
            zone: crate::zone(zone)?,
        })
    }

    /// A window a release carries; one without a zone reads `node_zone` (the node's own
    /// windows zone).
    pub fn from_release(
        w: &protocol::ReleaseWindow,
        node_zone: &TimeZone,
    ) -> Result<Self, ScheduleError> {
        let duration = SignedDuration::from_secs(i64::from(w.duration_s));
        if duration.is_zero() || duration > WINDOW_DURATION_MAX {
            return Err(ScheduleError::BadDuration(format!("{} s", w.duration_s)));
        }
        Ok(Self {
            start: w.cron.parse()?,
            duration,
            zone: match &w.zone {
                Some(name) => crate::zone(name)?,
                None => node_zone.clone(),
            },
        })
    }

    /// Whether the window is open at `t`, and when it closes or next opens.
    pub fn state_at(&self, t: Timestamp) -> WindowState {
        let Ok(since) = t.checked_sub(self.duration) else {
            return WindowState::Closed { opens: None };
        };
        // Windows that started within one duration before `t` (exclusive) may cover it.
        let mut end: Option<Timestamp> = None;
        let mut s = self.start.next_start(&self.zone, since, false);
        while let Some(start) = s {
            if start > t {
                break;
            }
            let e = start.checked_add(self.duration).ok();
            end = end.max(e);
            s = self.start.next_start(&self.zone, start, false);
        }
        let Some(mut closes) = end.filter(|e| *e > t) else {
            return WindowState::Closed {
                opens: self.start.next_start(&self.zone, t, true),
            };
        };
        // Windows that start before this one ends extend it.
        let mut cursor = t;
        for _ in 0..CHAIN_MAX {
            match self.start.next_start(&self.zone, cursor, false) {
                Some(start) if start <= closes => {
                    if let Ok(e) = start.checked_add(self.duration) {
                        closes = closes.max(e);
                    }
                    cursor = start;
                }
                _ => {
                    return WindowState::Open {
                        closes: Some(closes),
                    };
                }
            }
        }
        WindowState::Open { closes: None }
    }

    /// Whether the window is open at `t`.
    pub fn is_open(&self, t: Timestamp) -> bool {
        matches!(self.state_at(t), WindowState::Open { .. })
    }
}

/// The state of a set of windows at `t`: open if any is open (until the latest close among
/// those open), else closed until the earliest next opening. No windows at all means always
/// open: a node without a download window configured may always download.
pub fn union_state(windows: &[Window], t: Timestamp) -> WindowState {
    if windows.is_empty() {
        return WindowState::Open { closes: None };
    }
    let states: Vec<WindowState> = windows.iter().map(|w| w.state_at(t)).collect();
    let open: Vec<Option<Timestamp>> = states
        .iter()
        .filter_map(|s| match s {
            WindowState::Open { closes } => Some(*closes),
            WindowState::Closed { .. } => None,
        })
        .collect();
    if !open.is_empty() {
        // Any window that stays open past the horizon keeps the union open past it.
        let closes = if open.iter().any(Option::is_none) {
            None
        } else {
            open.into_iter().flatten().max()
        };
        return WindowState::Open { closes };
    }
    WindowState::Closed {
        opens: states
            .iter()
            .filter_map(|s| match s {
                WindowState::Closed { opens } => *opens,
                WindowState::Open { .. } => None,
            })
            .min(),
    }
}

/// Most candidate instants tried when looking for the next time every set is open at once.
const INTERSECT_STEPS_MAX: usize = 1_000;

/// The state at `t` of several sets of windows that must all be open at once (a node's
/// windows and a release's, say). Each set is a union as in [`union_state`], so an empty set
/// never holds anything back. Open: until the first set closes. Closed: until the next
/// instant at which every set is open (`None`: none found within the search horizon).
pub fn all_open_state(sets: &[&[Window]], t: Timestamp) -> WindowState {
    let mut cursor = t;
    for _ in 0..INTERSECT_STEPS_MAX {
        let states: Vec<WindowState> = sets.iter().map(|s| union_state(s, cursor)).collect();
        let mut next_open: Option<Timestamp> = None;
        let mut all_open = true;
        for state in &states {
            if let WindowState::Closed { opens } = state {
                all_open = false;
                match opens {
                    // A set that never opens again closes the intersection for good.
                    None => return WindowState::Closed { opens: None },
                    Some(o) => next_open = next_open.max(Some(*o)),
                }
            }
        }
        if all_open {
            if cursor > t {
                return WindowState::Closed {
                    opens: Some(cursor),
                };
            }
            let closes = states
                .iter()
                .filter_map(|s| match s {
                    WindowState::Open { closes } => *closes,
                    WindowState::Closed { .. } => None,
                })
                .min();
            return WindowState::Open { closes };
        }
        match next_open {
            Some(o) if o > cursor => cursor = o,
            _ => break,
        }
    }
    WindowState::Closed { opens: None }
}

/// The state of a set of windows that must all be open ([`all_open_state`]), kept until it
/// can change: a fetch asks on every planning pass, and the answer changes only at a window
/// edge. Recomputed at the next edge, at once if the wall clock went backwards, and at least
/// every [`WINDOW_RECHECK`] when no edge is in sight (the daemon and the simulator both read
/// windows through it).
#[derive(Debug, Clone, Default)]
pub struct WindowCache {
    cached: Option<CachedState>,
}

#[derive(Debug, Clone, Copy)]
struct CachedState {
    state: WindowState,
    computed: Timestamp,
    /// When the state next changes (`None`: never; the sets are all empty).
    until: Option<Timestamp>,
}

/// Longest a cached window state is trusted when no edge is in sight.
pub const WINDOW_RECHECK: SignedDuration = SignedDuration::from_hours(24);

impl WindowCache {
    /// The state at `now` of `sets`, which must all be open; the sets must be the same on
    /// every call.
    pub fn state(&mut self, sets: &[&[Window]], now: Timestamp) -> WindowState {
        if let Some(c) = self.cached {
            if c.computed <= now && c.until.is_none_or(|u| now < u) {
                return c.state;
            }
        }
        let state = all_open_state(sets, now);
        let until = match state {
            WindowState::Open { closes } => closes,
            WindowState::Closed { opens } => opens,
        }
        .or_else(|| {
            sets.iter()
                .any(|s| !s.is_empty())
                .then(|| now.checked_add(WINDOW_RECHECK).ok())
                .flatten()
        });
        self.cached = Some(CachedState {
            state,
            computed: now,
            until,
        });
        state
    }

    /// When the cached state must next be looked at again (`None`: never).
    pub fn next_check(&self) -> Option<Timestamp> {
        self.cached.and_then(|c| c.until)
    }
}
