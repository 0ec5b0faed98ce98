//! Rate schedules: what a traffic class may use at a given instant.
//!
//! A schedule is a list of rules, each "on these weekdays, between these local times, at most
//! this rate", in one IANA time zone, and a default for when no rule matches. Where rules
//! overlap **the lowest rate wins**: the operator's tightest limit always holds, whichever rule
//! is more specific, and adding a rule can never loosen a limit.
//!
//! A range whose end is before its start crosses midnight and belongs to the weekday it
//! starts on: `Fri 22:00-05:00` covers Friday 22:00 to Saturday 05:00. A range whose start
//! equals its end covers the whole day. Local times are wall-clock times: on the day clocks
//! spring forward, a range that starts in the skipped hour starts when the clock jumps past
//! it; on the day they fall back, the repeated hour is in the range both times.

use crate::ScheduleError;
use jiff::Timestamp;
use jiff::civil::Weekday;
use jiff::tz::TimeZone;
use std::fmt;
use std::str::FromStr;

/// A rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rate {
    /// At most this many bytes per second; 0 blocks the class entirely.
    BytesPerSec(u64),
    /// No limit.
    Unlimited,
}

impl Rate {
    /// The lower (more restrictive) of two rates.
    pub fn min(self, other: Self) -> Self {
        match (self, other) {
            (Self::Unlimited, r) | (r, Self::Unlimited) => r,
            (Self::BytesPerSec(a), Self::BytesPerSec(b)) => Self::BytesPerSec(a.min(b)),
        }
    }

    /// Bytes per second, `None` when unlimited.
    pub fn bytes_per_sec(self) -> Option<u64> {
        match self {
            Self::BytesPerSec(b) => Some(b),
            Self::Unlimited => None,
        }
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unlimited => f.write_str("unlimited"),
            Self::BytesPerSec(0) => f.write_str("0 (blocked)"),
            Self::BytesPerSec(b) => {
                let bits = *b as f64 * 8.0;
                if bits >= 1e9 {
                    write!(f, "{:.2} Gbit/s", bits / 1e9)
                } else if bits >= 1e6 {
                    write!(f, "{:.2} Mbit/s", bits / 1e6)
                } else {
                    write!(f, "{:.0} kbit/s", bits / 1e3)
                }
            }
        }
    }
}

impl FromStr for Rate {
    type Err = ScheduleError;

    /// `unlimited`, `0`, or a number and a unit: bits per second in decimal units
    /// (`bit/s`, `kbit/s`, `Mbit/s`, `Gbit/s`, `kbps`, `Mbps`, `Gbps`) or bytes per second
    /// (`B/s`, `kB/s`, `MB/s`, `GB/s` decimal; `KiB/s`, `MiB/s`, `GiB/s` binary).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ScheduleError::BadRate(s.to_string());
        let t = s.trim();
        if t.eq_ignore_ascii_case("unlimited") {
            return Ok(Self::Unlimited);
        }
        if t == "0" {
            return Ok(Self::BytesPerSec(0));
        }
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let (num, unit) = t.split_at(split);
        let value: f64 = num.parse().map_err(|_| bad())?;
        let per_sec = match unit.trim() {
            "bit/s" | "bps" => value / 8.0,
            "kbit/s" | "kbps" | "Kbps" => value * 1e3 / 8.0,
            "Mbit/s" | "mbit/s" | "Mbps" | "mbps" => value * 1e6 / 8.0,
            "Gbit/s" | "gbit/s" | "Gbps" | "gbps" => value * 1e9 / 8.0,
            "B/s" => value,
            "kB/s" | "KB/s" => value * 1e3,
            "MB/s" => value * 1e6,
            "GB/s" => value * 1e9,
            "KiB/s" => value * 1024.0,
            "MiB/s" => value * 1024.0 * 1024.0,
            "GiB/s" => value * 1024.0 * 1024.0 * 1024.0,
            _ => return Err(bad()),
        };
        if !per_sec.is_finite() || per_sec < 0.0 || per_sec > u64::MAX as f64 {
            return Err(bad());
        }
        Ok(Self::BytesPerSec(per_sec.round() as u64))
    }
}

/// A set of weekdays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Days(u8);

const DAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

impl Days {
    /// Every day.
    pub const ALL: Self = Self(0x7f);

    /// Whether `day` is in the set.
    pub fn contains(self, day: Weekday) -> bool {
        self.0 & (1 << day.to_monday_zero_offset()) != 0
    }

    fn day_index(name: &str) -> Option<u8> {
        let n = name.trim().to_ascii_lowercase();
        DAY_NAMES
            .iter()
            .position(|d| n == *d || (n.len() > 3 && d.len() == 3 && n.starts_with(d)))
            .map(|i| i as u8)
    }
}

impl FromStr for Days {
    type Err = ScheduleError;

    /// `*`, `daily`, a day (`Mon`, `monday`), a range (`Mon-Fri`, `Fri-Mon` wraps) or a
    /// comma-separated list of those.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ScheduleError::BadDays(s.to_string());
        let t = s.trim();
        if t == "*" || t.eq_ignore_ascii_case("daily") {
            return Ok(Self::ALL);
        }
        let mut bits = 0u8;
        for part in t.split(',') {
            match part.split_once('-') {
                Some((a, b)) => {
                    let (a, b) = (
                        Self::day_index(a).ok_or_else(bad)?,
                        Self::day_index(b).ok_or_else(bad)?,
                    );
                    let mut d = a;
                    loop {
                        bits |= 1 << d;
                        if d == b {
                            break;
                        }
                        d = (d + 1) % 7;
                    }
                }
                None => bits |= 1 << Self::day_index(part).ok_or_else(bad)?,
            }
        }
        if bits == 0 {
            return Err(bad());
        }
        Ok(Self(bits))
    }
}

/// A range of local time of day, in minutes after midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimeRange {
    /// First minute in the range.
    pub from: u16,
    /// First minute after the range (before `from`: the range crosses midnight; equal: the
    /// whole day).
    pub to: u16,
}

impl FromStr for TimeRange {
    type Err = ScheduleError;

    /// `HH:MM-HH:MM`, 24-hour; `24:00` is accepted as an end.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ScheduleError::BadTimeRange(s.to_string());
        let minute = |t: &str, end: bool| -> Option<u16> {
            let (h, m) = t.trim().split_once(':')?;
            let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
            match (h, m) {
                (24, 0) if end => Some(0),
                (0..=23, 0..=59) => Some(h * 60 + m),
                _ => None,
            }
        };
        let (a, b) = s.split_once('-').ok_or_else(bad)?;
        Ok(Self {
            from: minute(a, false).ok_or_else(bad)?,
            to: minute(b, true).ok_or_else(bad)?,
        })
    }
}

/// One rule: on `days`, during `range` (local time), at most `rate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RateRule {
    /// Weekdays the range starts on.
    pub days: Days,
    /// Local time range.
    pub range: TimeRange,
    /// The limit while it applies.
    pub rate: Rate,
}

impl FromStr for RateRule {
    type Err = ScheduleError;

    /// `DAYS HH:MM-HH:MM RATE`, e.g. `Mon-Fri 08:00-20:00 10Mbit/s`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = s.split_whitespace();
        let (Some(days), Some(range)) = (parts.next(), parts.next()) else {
            return Err(ScheduleError::BadRule(s.to_string()));
        };
        let rate: String = parts.collect::<Vec<_>>().join(" ");
        if rate.is_empty() {
            return Err(ScheduleError::BadRule(s.to_string()));
        }
        Ok(Self {
            days: days.parse()?,
            range: range.parse()?,
            rate: rate.parse()?,
        })
    }
}

impl RateRule {
    /// Whether the rule applies at local weekday `day`, minute of day `minute`.
    fn applies(&self, day: Weekday, minute: u16) -> bool {
        let TimeRange { from, to } = self.range;
        if from == to {
            return self.days.contains(day);
        }
        if from < to {
            return self.days.contains(day) && (from..to).contains(&minute);
        }
        // Crosses midnight: the evening part today, the morning part from yesterday's rule.
        (self.days.contains(day) && minute >= from)
            || (self.days.contains(day.previous()) && minute < to)
    }
}

/// A traffic class's rates over the week, in one time zone.
#[derive(Debug, Clone, PartialEq)]
pub struct RateSchedule {
    /// The zone the rules' local times are in.
    pub zone: TimeZone,
    /// The rules; where several apply, the lowest rate wins.
    pub rules: Vec<RateRule>,
    /// The rate when no rule applies.
    pub default: Rate,
}

/// How far ahead [`RateSchedule::next_change`] looks: a weekly schedule repeats within it.
const LOOKAHEAD_DAYS: i64 = 8;

impl RateSchedule {
    /// A schedule with no rules: `rate` always.
    pub fn constant(rate: Rate) -> Self {
        Self {
            zone: TimeZone::UTC,
            rules: Vec::new(),
            default: rate,
        }
    }

    /// The rate at instant `t`.
    pub fn rate_at(&self, t: Timestamp) -> Rate {
        let local = self.zone.to_datetime(t);
        let minute = local.hour() as u16 * 60 + local.minute() as u16;
        let day = local.date().weekday();
        self.rules
            .iter()
            .filter(|r| r.applies(day, minute))
            .map(|r| r.rate)
            .reduce(Rate::min)
            .unwrap_or(self.default)
    }

    /// The first instant after `t` at which the rate differs from the rate at `t`, if it
    /// changes within the next week. The rate can only change where a rule starts or ends
    /// on the wall clock, or where the clock itself jumps (a DST transition), so only those
    /// instants are examined.
    pub fn next_change(&self, t: Timestamp) -> Option<Timestamp> {
        let now = self.rate_at(t);
        let mut candidates: Vec<Timestamp> = Vec::new();
        let start = self.zone.to_datetime(t).date();
        for offset in 0..=LOOKAHEAD_DAYS {
            let Ok(date) = start.checked_add(jiff::Span::new().days(offset)) else {
                continue;
            };
            for rule in &self.rules {
                for minute in [rule.range.from, rule.range.to] {
                    let dt = date.at((minute / 60) as i8, (minute % 60) as i8, 0, 0);
                    // In a gap, the wall clock reaches `minute` when it jumps: the transition
                    // is also a candidate (below), so `compatible` (after the gap) is enough.
                    if let Ok(ts) = self.zone.to_ambiguous_timestamp(dt).compatible() {
                        candidates.push(ts);
                    }
                }
            }
        }
        let horizon = t
            .checked_add(jiff::SignedDuration::from_hours(24 * LOOKAHEAD_DAYS))
            .ok()?;
        for transition in self.zone.following(t) {
            let ts = transition.timestamp();
            if ts > horizon {
                break;
            }
            candidates.push(ts);
        }
        candidates.retain(|c| *c > t);
        candidates.sort();
        candidates.into_iter().find(|c| self.rate_at(*c) != now)
    }
}
