//! Rate schedules and maintenance windows at fixed instants, including both DST transitions
//! of America/New_York in 2026 (spring forward 8 March, fall back 1 November) and Asia/Tokyo.

mod planner;
mod rate;
mod shaper;
mod window;

use jiff::Timestamp;

/// An instant from an RFC 3339 string with an offset or `Z`.
pub(crate) fn at(s: &str) -> Timestamp {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}
