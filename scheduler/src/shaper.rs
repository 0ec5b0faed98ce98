//! Token-bucket shaping of one traffic class, with a rate that follows a [`RateSchedule`].
//!
//! The bucket is governor's GCRA limiter, driven by a clock the caller supplies (governor's
//! `Clock` trait): the daemon passes a real monotonic clock, tests and the simulator a fake
//! one they advance themselves. The shaper never sleeps and never loops: [`Shaper::reserve`]
//! answers "send now" or "ask again after this long", and the caller waits that long.
//!
//! Tokens are [`CELL_BYTES`]-byte cells rather than bytes, so that the limiter's per-cell
//! interval (whole nanoseconds) stays exact to 0.1 % up to several GB/s. The burst is
//! [`BURST_TIME`] of the current rate (at least [`BURST_BYTES_MIN`]), which bounds the
//! queueing delay the shaper adds in front of a thin link; one grant is at most a burst, so a
//! sender asks again for the rest of a large write.
//!
//! When the schedule's rate changes, the next call after the change builds a new bucket at
//! the new rate: a change takes effect on the first request after the boundary.
//!
//! [`Gate`] puts a first-come-first-served queue in front of a shaper and answers, for bytes
//! asked at an instant, when they pass: the daemon sleeps until then, the simulator
//! schedules the transfer then. Both charge the same wire overhead ([`on_wire`]).

use crate::rate::{Rate, RateSchedule};
use governor::clock::{Clock, FakeRelativeClock};
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use jiff::Timestamp;
use std::num::NonZeroU32;
use std::time::Duration;

/// Bytes per token.
pub const CELL_BYTES: u64 = 256;

/// Burst allowance, as time at the current rate.
pub const BURST_TIME: Duration = Duration::from_millis(50);

/// Smallest burst: a few full-size packets, so a slow class still sends whole datagrams.
pub const BURST_BYTES_MIN: u64 = 4 << 10;

/// Each chunk is charged 1/32 (3.1 %) more than its length, for what QUIC adds on the wire
/// (packet and frame headers, AEAD tags, acknowledgements, the request itself): the
/// testnet's relay counts 1.03 × the chunk bytes at a site's WAN link. Operators set caps on
/// links, so the shaper counts what the link carries.
pub const WIRE_OVERHEAD_DIVISOR: u64 = 32;

/// Longest a class at rate 0 waits before it looks at its schedule again, when the schedule
/// names no change: a blocked class then passes at the first look after the change.
pub const RECHECK: Duration = Duration::from_secs(1);

/// How far ahead [`Gate::take`] looks for a class at rate 0 to open: past it the bytes are
/// refused (`None`), and the caller asks again later.
pub const BLOCKED_HORIZON: Duration = Duration::from_secs(7 * 24 * 3_600);

/// What `bytes` of chunk data cost on the wire, as every shaper counts them.
pub fn on_wire(bytes: u64) -> u64 {
    bytes + bytes / WIRE_OVERHEAD_DIVISOR
}

/// What the caller may do with the bytes it asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Send this many of them now (at most what was asked; ask again for the rest).
    Go(u32),
    /// Ask again after this long.
    Wait(Duration),
    /// The class is at rate 0 until `until` (`None`: no change in the coming week).
    Blocked {
        /// When the schedule next changes.
        until: Option<Timestamp>,
    },
}

type Limiter<C> = RateLimiter<NotKeyed, InMemoryState, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// The shaper of one class.
pub struct Shaper<C: Clock + Clone> {
    schedule: RateSchedule,
    clock: C,
    rate: Rate,
    limiter: Option<Limiter<C>>,
    burst_cells: u32,
    next_change: Option<Timestamp>,
}

impl<C: Clock + Clone> Shaper<C> {
    /// A shaper for `schedule`, reading elapsed time from `clock`, at wall time `now`.
    pub fn new(schedule: RateSchedule, clock: C, now: Timestamp) -> Self {
        let mut s = Self {
            schedule,
            clock,
            rate: Rate::Unlimited,
            limiter: None,
            burst_cells: 1,
            next_change: None,
        };
        s.retune(now);
        s
    }

    /// The schedule it follows.
    pub fn schedule(&self) -> &RateSchedule {
        &self.schedule
    }

    /// The rate in force.
    pub fn rate(&self) -> Rate {
        self.rate
    }

    /// When the schedule next changes the rate, if within a week.
    pub fn next_change(&self) -> Option<Timestamp> {
        self.next_change
    }

    fn retune(&mut self, now: Timestamp) {
        self.rate = self.schedule.rate_at(now);
        self.next_change = self.schedule.next_change(now);
        self.limiter = match self.rate {
            Rate::Unlimited | Rate::BytesPerSec(0) => None,
            Rate::BytesPerSec(b) => {
                let cells_per_sec = (b / CELL_BYTES).clamp(1, u64::from(u32::MAX)) as u32;
                let burst_bytes =
                    ((b as f64 * BURST_TIME.as_secs_f64()) as u64).max(BURST_BYTES_MIN);
                let burst_cells = (burst_bytes / CELL_BYTES).clamp(1, u64::from(u32::MAX)) as u32;
                self.burst_cells = burst_cells;
                let quota = Quota::per_second(NonZeroU32::new(cells_per_sec).expect("at least 1"))
                    .allow_burst(NonZeroU32::new(burst_cells).expect("at least 1"));
                Some(RateLimiter::direct_with_clock(quota, self.clock.clone()))
            }
        };
    }

    /// Asks to send `bytes` at wall time `now`.
    pub fn reserve(&mut self, bytes: u32, now: Timestamp) -> Decision {
        if self.next_change.is_some_and(|c| now >= c) {
            self.retune(now);
        }
        let bytes = bytes.max(1);
        let limiter = match (&self.limiter, self.rate) {
            (_, Rate::BytesPerSec(0)) => {
                return Decision::Blocked {
                    until: self.next_change,
                };
            }
            (Some(l), Rate::BytesPerSec(_)) => l,
            _ => return Decision::Go(bytes),
        };
        let cells = (u64::from(bytes).div_ceil(CELL_BYTES) as u32).min(self.burst_cells);
        let granted = (u64::from(cells) * CELL_BYTES).min(u64::from(bytes)) as u32;
        let cells = NonZeroU32::new(cells).expect("at least one cell");
        match limiter.check_n(cells) {
            Ok(Ok(())) => Decision::Go(granted),
            Ok(Err(not_until)) => Decision::Wait(not_until.wait_time_from(self.clock.now())),
            // Never more than the burst, by construction.
            Err(_) => Decision::Wait(BURST_TIME),
        }
    }
}

/// One class's shaper and the queue in front of it: bytes asked for pass one request after
/// another, in the order they were asked, each as the bucket allows. Without the queue a
/// large request would starve (a token bucket refills a little at a time, and small requests
/// arriving meanwhile would take every refill before it held enough for the large one); with
/// it, the order in which fetches plan their requests (urgent releases first) is the order
/// in which the link carries them.
///
/// Pure: the caller gives the instant as time since its own epoch (`at`) and the wall time
/// at that instant; the bucket runs on a clock of its own that [`Gate::take`] moves forward.
/// The answer is a reservation: the bytes count as sent at the returned instant, and the next
/// request queues behind them.
pub struct Gate {
    shaper: Shaper<FakeRelativeClock>,
    clock: FakeRelativeClock,
    /// The instant the bucket's clock reads.
    clock_at: Duration,
    /// When the request served last is through: the next one starts then.
    free: Duration,
    /// Bytes charged without waiting ([`Gate::charge`]): the next request waits for them too.
    debt: u64,
    /// Bytes taken and given back ([`Gate::refund`]): the next requests wait for that much
    /// less.
    credit: u64,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate")
            .field("rate", &self.shaper.rate())
            .field("free", &self.free)
            .field("debt", &self.debt)
            .field("credit", &self.credit)
            .finish()
    }
}

impl Gate {
    /// A gate for `schedule`, whose epoch is wall time `start`.
    pub fn new(schedule: RateSchedule, start: Timestamp) -> Self {
        let clock = FakeRelativeClock::default();
        Self {
            shaper: Shaper::new(schedule, clock.clone(), start),
            clock,
            clock_at: Duration::ZERO,
            free: Duration::ZERO,
            debt: 0,
            credit: 0,
        }
    }

    /// The shaper behind the gate.
    pub fn shaper(&self) -> &Shaper<FakeRelativeClock> {
        &self.shaper
    }

    /// Counts `bytes` (control messages) against the bucket without waiting: the next request
    /// through the gate waits for them as well as for its own.
    pub fn charge(&mut self, bytes: u64) {
        self.debt = self.debt.saturating_add(bytes);
    }

    /// Gives back `bytes` taken and not used: they are taken off what the next requests
    /// wait for (never more than was taken, so a refund cannot raise the rate beyond the
    /// schedule's).
    pub fn refund(&mut self, bytes: u64) {
        let from_debt = bytes.min(self.debt);
        self.debt -= from_debt;
        self.credit = self.credit.saturating_add(bytes - from_debt);
    }

    /// `bytes` asked for at `at` (wall time `wall_at`) pass at the returned instant, after
    /// everything asked before. `None`: the class is at rate 0 with no opening within
    /// [`BLOCKED_HORIZON`]; nothing was reserved.
    pub fn take(&mut self, at: Duration, wall_at: Timestamp, bytes: u64) -> Option<Duration> {
        let mut t = at.max(self.free);
        let mut left = bytes.saturating_add(self.debt);
        let credit = self.credit.min(left);
        left -= credit;
        let wall = |t: Duration| {
            let ahead = jiff::SignedDuration::try_from(t.saturating_sub(at)).unwrap_or_default();
            wall_at.checked_add(ahead).unwrap_or(Timestamp::MAX)
        };
        while left > 0 {
            self.clock.advance(t.saturating_sub(self.clock_at));
            self.clock_at = self.clock_at.max(t);
            let ask = left.min(u64::from(u32::MAX)) as u32;
            match self.shaper.reserve(ask, wall(t)) {
                Decision::Go(n) => left -= u64::from(n),
                Decision::Wait(d) => t += d.clamp(Duration::from_nanos(1), RECHECK),
                Decision::Blocked { until } => {
                    let now = wall(t);
                    let wait = until
                        .and_then(|u| Duration::try_from(u.duration_since(now)).ok())
                        .filter(|w| *w <= BLOCKED_HORIZON);
                    let wait = wait?;
                    // Checked every RECHECK: it passes at the first check after the change.
                    let checks = wait.as_nanos().div_ceil(RECHECK.as_nanos()).max(1);
                    t += RECHECK * checks as u32;
                }
            }
        }
        self.debt = 0;
        self.credit -= credit;
        self.free = t;
        Some(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn a_gate_passes_requests_in_order_at_the_rate() {
        let start = at("2026-03-02T12:00:00Z");
        let mbyte = || RateSchedule::constant("8Mbit/s".parse().unwrap());
        let mut g = Gate::new(mbyte(), start);
        // 1 MB/s: a burst of 50 ms is free, then a megabyte a second.
        let first = g.take(Duration::ZERO, start, 1_000_000).unwrap();
        assert!(first > Duration::from_millis(900) && first < Duration::from_millis(1_000));
        // Asked at the same instant, the second waits for the first.
        let second = g.take(Duration::ZERO, start, 1_000_000).unwrap();
        assert!(second >= first + Duration::from_millis(990), "{second:?}");
        // Charged control bytes delay the next request.
        let mut h = Gate::new(mbyte(), start);
        h.charge(1_000_000);
        let third = h.take(Duration::ZERO, start, 1).unwrap();
        assert!(third > Duration::from_millis(900), "{third:?}");
        // Bytes given back (a chunk that moved compressed) are taken off the next request:
        // 1 MB asked after 0.6 MB of the last came back waits for 0.4 MB only.
        let mut r = Gate::new(mbyte(), start);
        let first = r.take(Duration::ZERO, start, 1_000_000).unwrap();
        r.refund(600_000);
        let next = r.take(first, start, 1_000_000).unwrap();
        let waited = next - first;
        assert!(
            waited > Duration::from_millis(340) && waited < Duration::from_millis(420),
            "{waited:?}"
        );
        // A refund pays a charged debt off first.
        let mut d = Gate::new(mbyte(), start);
        d.charge(500_000);
        d.refund(500_000);
        let free = d.take(Duration::ZERO, start, 1).unwrap();
        assert!(free < Duration::from_millis(10), "{free:?}");
    }

    #[test]
    fn a_blocked_class_passes_at_its_next_change_or_never() {
        let start = at("2026-03-02T12:00:00Z"); // a Monday
        let s = RateSchedule::constant(Rate::BytesPerSec(0));
        assert_eq!(Gate::new(s, start).take(Duration::ZERO, start, 10), None);
        let mut s = RateSchedule::constant(Rate::Unlimited);
        s.rules.push("Mon 08:00-13:00 0".parse().unwrap());
        let pass = Gate::new(s, start).take(Duration::ZERO, start, 10).unwrap();
        assert_eq!(pass, Duration::from_secs(3_600));
    }
}
