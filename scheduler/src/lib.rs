//! Scheduling decisions, pure: no tokio, no sockets, no files, no clock. Every function takes
//! the time as an argument, so the daemon and the simulator ask the same questions and a test
//! can ask them at any instant (02:00 on a DST change included).
//!
//! * [`control`]: the control plane's cadence and shape: when records and site summaries go
//!   out, which members aggregate a site, which sites a node talks to across the WAN.
//! * [`fetch`]: the fetch of one release as a state machine (inputs with `now`, requests,
//!   timers and events out) that the daemon and the simulator both drive: when to plan,
//!   budgets, who counts as a site member, snubbing, checkpoints.
//! * [`ledger`]: compliance state for a month and more in bounded messages: what a status
//!   record or a site summary carries of the longer table its receivers keep, and how long
//!   they keep it.
//! * [`planner`]: the fetch planner: which missing chunk to request from which peer
//!   (same site first, one WAN crossing per site, rarest first, endgame).
//! * [`policy`]: the `[windows]` and `[shaping]` sections of `p2pd.toml` and what they
//!   parse into, read by the daemon and the simulator alike.
//! * [`priority`]: which release goes first, and which may fetch outside the download window.
//! * [`rate`]: per-class rate schedules: rules by weekday and time of day in an IANA zone,
//!   "the lowest rate wins" where rules overlap, and when the rate next changes.
//! * [`rollout`]: whether a node may install a complete release: its target, holds,
//!   requirements, and its ring's gate as the node sees the fleet.
//! * [`seeding`]: the origin's initial seeding: each site is shown only its share of a new
//!   release until every chunk has left the origin once.
//! * [`shaper`]: a token bucket (governor) per class whose rate follows its schedule, and
//!   the first-come-first-served gate in front of it.
//! * [`strikes`]: strikes for bad chunks, and bans, per peer, bounded.
//! * [`window`]: maintenance windows, hawkBit style: a cron expression for the start, a
//!   duration and a zone; is it open, when does it next open, when does it close.
//!
//! Time zones come from the IANA database embedded in the binary ([`zone`]), not from the
//! host: a minimal host with no `/usr/share/zoneinfo` computes the same windows, and every
//! node of a fleet agrees on them whatever its host's copy is.

pub mod control;
pub mod fetch;
pub mod ledger;
pub mod patches;
pub mod planner;
pub mod policy;
pub mod priority;
pub mod rate;
pub mod rollout;
pub mod seeding;
pub mod shaper;
pub mod strikes;
pub mod versions;
pub mod window;

use jiff::tz::{TimeZone, TimeZoneDatabase};
use std::sync::OnceLock;

/// The time zone `name` (an IANA name such as `Asia/Tokyo`, or `UTC`) from the embedded
/// database.
pub fn zone(name: &str) -> Result<TimeZone, ScheduleError> {
    static DB: OnceLock<TimeZoneDatabase> = OnceLock::new();
    DB.get_or_init(TimeZoneDatabase::bundled)
        .get(name)
        .map_err(|_| ScheduleError::UnknownZone(name.to_string()))
}

/// A schedule or window that cannot be used, with what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// Not a time zone of the embedded IANA database.
    #[error("unknown time zone {0:?} (use an IANA name such as \"Europe/Berlin\" or \"UTC\")")]
    UnknownZone(String),
    /// A rate that does not parse.
    #[error(
        "rate {0:?}: expected \"unlimited\", \"0\" or a number with a unit such as 10Mbit/s, 80mbps, 5MB/s, 512KiB/s"
    )]
    BadRate(String),
    /// A rate rule that is not `DAYS HH:MM-HH:MM RATE`.
    #[error("rule {0:?}: expected DAYS HH:MM-HH:MM RATE, e.g. \"Mon-Fri 08:00-20:00 10Mbit/s\"")]
    BadRule(String),
    /// A weekday list that does not parse.
    #[error("days {0:?}: expected \"*\", a day (Mon), a range (Mon-Fri) or a list (Sat,Sun)")]
    BadDays(String),
    /// A time range that does not parse.
    #[error("time range {0:?}: expected HH:MM-HH:MM (24-hour; 22:00-05:00 crosses midnight)")]
    BadTimeRange(String),
    /// A cron expression that does not parse.
    #[error("cron expression {expr:?}: {why}")]
    BadCron {
        /// The expression.
        expr: String,
        /// What is wrong.
        why: String,
    },
    /// A window duration that is zero or too long.
    #[error("window duration {0:?}: expected HH:MM or HH:MM:SS, above zero and at most 7 days")]
    BadDuration(String),
}
