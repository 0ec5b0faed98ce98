//! Strikes and bans: a peer that sends bytes that fail verification (a chunk that does not
//! match its id, a reply that breaks the protocol) gets a strike; at [`STRIKES_TO_BAN`] it is
//! banned for [`BAN_DURATION`]: no request goes to it, its connections are refused, and it
//! leaves the site's rendezvous set. One table per node, across releases: the daemon keys it
//! by libp2p peer id, the simulator by node index.
//!
//! The table is bounded ([`STRIKE_RECORDS_MAX`]): past it, expired bans are forgotten first,
//! then strikes that never became a ban; if every record is a live ban, a new peer's strike is
//! not recorded (its bad chunks are still refused, one at a time).

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Duration;

/// Strikes (bad chunks) after which a peer is banned: one bad chunk can be a bit flip on a
/// peer's disk, three are a pattern.
pub const STRIKES_TO_BAN: u32 = 3;

/// How long a ban lasts: long enough that a hostile peer costs a fetch a few requests per
/// ban, short enough that a peer with a disk fault it since repaired is used again the same
/// day.
pub const BAN_DURATION: Duration = Duration::from_secs(600);

/// Peers whose strikes and bans are remembered: more than a node has connections
/// (`max_peers`), so a full table means a flood of identities, not a busy node.
pub const STRIKE_RECORDS_MAX: usize = 4096;

/// What a strike did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Counted: the peer now has this many strikes.
    Counted(u32),
    /// The peer is banned from now until the given instant.
    Banned {
        /// When the ban ends.
        until: Duration,
    },
    /// It was banned already (answers in flight when the ban fell): nothing changes.
    AlreadyBanned,
    /// The table is full of live bans: not recorded.
    NotRecorded,
}

#[derive(Debug, Default, Clone, Copy)]
struct Record {
    count: u32,
    banned_until: Option<Duration>,
}

/// Strikes and bans per peer. Times are the caller's, as time since its epoch.
#[derive(Debug, Clone)]
pub struct Strikes<K> {
    records: HashMap<K, Record>,
}

impl<K> Default for Strikes<K> {
    fn default() -> Self {
        Self {
            records: HashMap::new(),
        }
    }
}

impl<K: Hash + Eq + Copy> Strikes<K> {
    /// Records a strike against `peer` at `now`.
    pub fn strike(&mut self, peer: K, now: Duration) -> Verdict {
        if self.records.len() >= STRIKE_RECORDS_MAX && !self.records.contains_key(&peer) {
            self.records
                .retain(|_, r| r.banned_until.is_some_and(|t| t > now));
            if self.records.len() >= STRIKE_RECORDS_MAX {
                return Verdict::NotRecorded;
            }
        }
        let r = self.records.entry(peer).or_default();
        if r.banned_until.is_some_and(|t| t > now) {
            return Verdict::AlreadyBanned;
        }
        r.count += 1;
        if r.count < STRIKES_TO_BAN {
            return Verdict::Counted(r.count);
        }
        let until = now + BAN_DURATION;
        r.banned_until = Some(until);
        r.count = 0;
        Verdict::Banned { until }
    }

    /// Whether `peer` is banned at `now`.
    pub fn is_banned(&self, peer: &K, now: Duration) -> bool {
        self.records
            .get(peer)
            .and_then(|r| r.banned_until)
            .is_some_and(|t| t > now)
    }

    /// The peers banned at `now`.
    pub fn banned(&self, now: Duration) -> impl Iterator<Item = K> + '_ {
        self.records
            .iter()
            .filter(move |(_, r)| r.banned_until.is_some_and(|t| t > now))
            .map(|(k, _)| *k)
    }

    /// Peers with a record (strikes or a ban).
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether no peer has a record.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn three_strikes_ban_for_ten_minutes_then_the_count_starts_over() {
        let mut t = Strikes::default();
        assert_eq!(t.strike(7u32, S), Verdict::Counted(1));
        assert_eq!(t.strike(7, S), Verdict::Counted(2));
        assert_eq!(
            t.strike(7, 2 * S),
            Verdict::Banned {
                until: 2 * S + BAN_DURATION
            }
        );
        assert!(t.is_banned(&7, 3 * S));
        assert_eq!(t.strike(7, 3 * S), Verdict::AlreadyBanned);
        assert_eq!(t.banned(3 * S).collect::<Vec<_>>(), vec![7]);
        let later = 2 * S + BAN_DURATION;
        assert!(!t.is_banned(&7, later));
        assert_eq!(t.strike(7, later), Verdict::Counted(1));
        assert!(!t.is_banned(&8, S));
    }

    #[test]
    fn the_table_is_bounded_and_keeps_live_bans() {
        let mut t = Strikes::default();
        for p in 0..STRIKE_RECORDS_MAX as u32 {
            for _ in 0..STRIKES_TO_BAN {
                t.strike(p, S);
            }
        }
        assert_eq!(t.len(), STRIKE_RECORDS_MAX);
        assert_eq!(t.strike(u32::MAX, S), Verdict::NotRecorded);
        // Once the bans expire, a new peer finds room.
        assert_eq!(t.strike(u32::MAX, S + BAN_DURATION), Verdict::Counted(1));
        assert_eq!(t.len(), 1);
    }
}
