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

use crate::rate::{Rate, RateSchedule};
use governor::clock::Clock;
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
