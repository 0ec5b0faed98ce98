//! Compliance state for a month and more, in bounded messages.
//!
//! A node's status record and a site's summary each carry at most
//! [`protocol::status::STATUS_RELEASES_MAX`] releases, but a bank publishes about 300 a month
//! and reports on [`HORIZON`]. So neither message is a snapshot of the newest few: each is a
//! change set over a longer table that its receivers keep. A receiver merges what a message
//! names into its table (an entry the message does not name keeps its last value) and drops
//! entries only past the horizon or past [`RELEASES_KEPT_MAX`]. [`pick`] chooses what a
//! message carries:
//!
//! 1. every entry whose last change it has not sent yet, the oldest change first, so no
//!    change waits behind newer ones for long (a message holds 32, and 40 releases may
//!    change within a minute);
//! 2. the entries that move (fetching), the latest change first;
//! 3. the entries changed within [`LINGER`] that went out already, the least sent first. A
//!    receiver can miss messages (a site's summaries flood, and a receiver that was behind
//!    gets only the newest), so an entry keeps travelling for a while after its last change,
//!    and its final value arrives;
//! 4. in the room left, up to `rotate` settled entries in turn ([`Rotation`]), so that a
//!    receiver that joined late, or was away longer than the linger, converges on the whole
//!    table: records fill their room (they cost the site's LAN), summaries take
//!    [`SUMMARY_ROTATION`] (they cross every branch's WAN).
//!
//! The sender keeps [`Changes`]: when each entry last changed and how often it went out
//! since.
//!
//! [`Publisher`] puts the cadence and the pick together for one sender: the daemon's record
//! and summary publishers and the simulator's month scenario drive it alike.

use crate::control::{Cadence, News};
use protocol::ReleaseId;
use protocol::status::{ReleaseState, ReleaseStatus};
use protocol::summary::{Contact, SiteRelease};
use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::time::Duration;

/// How long compliance state is kept: a release published longer ago leaves every table.
/// 90 days covers a quarter's audit; at 300 releases a month that is 900 releases.
pub const HORIZON: Duration = Duration::from_secs(90 * 24 * 3600);

/// Most releases a table keeps per node or per site: 300 a month over [`HORIZON`] with room
/// to spare. Past it the release published longest ago goes first. Measured on a member of a
/// 500 × 50 fleet (`benches/src/bin/fleet_month.rs`): 94 MiB of process for a month of 300
/// releases, 323 MiB for 900 (a settled site entry costs about 400 bytes in memory).
pub const RELEASES_KEPT_MAX: usize = 1024;

/// An entry travels in every message for this long after its last change of state: longer
/// than a summary's flood takes to reach every site (seconds) and than a record's heartbeat
/// ([`crate::control::STATUS_HEARTBEAT`]), so a receiver that missed the message with the
/// change gets a later one with it.
pub const LINGER: Duration = Duration::from_secs(15 * 60);

/// Settled entries a summary carries in turn: two per summary reach a site that was away
/// within a day of summaries during a month's releases, at about 300 bytes each.
pub const SUMMARY_ROTATION: usize = 2;

/// One entry of a table, as [`pick`] weighs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry<K> {
    /// The entry's key (a release).
    pub key: K,
    /// When its state last changed, unix seconds (progress alone is not a change).
    pub changed_unix_s: i64,
    /// Whether it has stopped moving (installed, covered, failed, refused, not followed).
    pub settled: bool,
    /// Messages that carried it since its last change.
    pub sent: u32,
}

/// Where the turn of settled entries stands: the last key sent in turn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotation<K>(Option<K>);

impl<K> Default for Rotation<K> {
    fn default() -> Self {
        Self(None)
    }
}

/// When each entry of a table last changed and how many messages carried it since, as the
/// one who sends it sees it: the publishers of records and of summaries each keep one, and
/// give [`pick`] its [`Entry::changed_unix_s`] and [`Entry::sent`].
#[derive(Debug, Clone)]
pub struct Changes<K, V> {
    seen: HashMap<K, (V, i64, u32)>,
}

impl<K, V> Default for Changes<K, V> {
    fn default() -> Self {
        Self {
            seen: HashMap::new(),
        }
    }
}

impl<K: Eq + Hash + Copy, V: PartialEq> Changes<K, V> {
    /// Notes `value` for `key` at `now_unix_s`; returns when it last changed (now, if it is
    /// new or differs from the value noted before) and how many messages carried it since.
    pub fn note(&mut self, key: K, value: V, now_unix_s: i64) -> (i64, u32) {
        match self.seen.get_mut(&key) {
            Some((held, at, sent)) if *held == value => (*at, *sent),
            Some(slot) => {
                *slot = (value, now_unix_s, 0);
                (now_unix_s, 0)
            }
            None => {
                self.seen.insert(key, (value, now_unix_s, 0));
                (now_unix_s, 0)
            }
        }
    }

    /// Notes that a message carried `keys`.
    pub fn sent(&mut self, keys: &[K]) {
        for k in keys {
            if let Some((_, _, sent)) = self.seen.get_mut(k) {
                *sent = sent.saturating_add(1);
            }
        }
    }

    /// Forgets every key for which `keep` is false (entries that left the table).
    pub fn retain(&mut self, mut keep: impl FnMut(&K) -> bool) {
        self.seen.retain(|k, _| keep(k));
    }
}

/// One sender of a ledger's messages (a node's status records, a site's summaries): when
/// the next one goes out ([`Cadence`]) and which entries it carries ([`pick`]), with what it
/// remembers between messages ([`Changes`], the [`Rotation`], whether changes were left out
/// for want of room).
#[derive(Debug, Clone)]
pub struct Publisher<K, V> {
    cadence: Cadence,
    changes: Changes<K, V>,
    rotation: Rotation<K>,
    /// Most entries a message carries.
    cap: usize,
    /// Most settled entries a message carries in turn.
    rotate: usize,
    /// Whether the last message left changes out for want of room: the next one is news.
    unsent_left: bool,
}

impl<K: Ord + Hash + Copy, V: PartialEq> Publisher<K, V> {
    /// A node's status records: [`Cadence::status`], up to
    /// [`protocol::status::STATUS_RELEASES_MAX`] entries, filling the room with settled ones.
    pub fn status() -> Self {
        let cap = protocol::status::STATUS_RELEASES_MAX;
        Self::new(Cadence::status(), cap, cap)
    }

    /// A node's status records in a site whose silence bound is `silent_after`
    /// ([`Cadence::status_within`]).
    pub fn status_within(silent_after: Duration) -> Self {
        let cap = protocol::status::STATUS_RELEASES_MAX;
        Self::new(Cadence::status_within(silent_after), cap, cap)
    }

    /// A site's summaries in a fleet of `sites` sites: [`Cadence::summary`], up to
    /// [`protocol::summary::SUMMARY_RELEASES_MAX`] entries, [`SUMMARY_ROTATION`] settled
    /// ones in turn.
    pub fn summary(sites: usize) -> Self {
        Self::new(
            Cadence::summary(sites),
            protocol::summary::SUMMARY_RELEASES_MAX,
            SUMMARY_ROTATION,
        )
    }

    fn new(cadence: Cadence, cap: usize, rotate: usize) -> Self {
        Self {
            cadence,
            changes: Changes::default(),
            rotation: Rotation::default(),
            cap,
            rotate,
            unsent_left: false,
        }
    }

    /// Follows the fleet's size (a summary's least interval does).
    pub fn set_sites(&mut self, sites: usize) {
        self.cadence.set_sites(sites);
    }

    /// What is news since the last message, given whether a state changed (an entry's
    /// state, an entry added or gone, or the message's own fields) and whether only
    /// progress did: the first message, and the one after a message that left changes out,
    /// are news of state.
    pub fn news(&self, state_changed: bool, progress_changed: bool) -> News {
        if self.cadence.last_ms().is_none() || state_changed || self.unsent_left {
            News::State
        } else if progress_changed {
            News::Progress
        } else {
            News::None
        }
    }

    /// When a message with `news` may go out (see [`Cadence::due_at`]).
    pub fn due_at(&self, news: News) -> u64 {
        self.cadence.due_at(news)
    }

    /// Whether a message with `news` goes out at `now_ms` (a monotonic clock); if it does,
    /// [`Publisher::pick`] must choose its entries now.
    pub fn poll(&mut self, now_ms: u64, news: News) -> bool {
        self.cadence.poll(now_ms, news)
    }

    /// Of every entry of the table (key, value, whether it is settled), the positions of
    /// those the message going out at `now_unix_s` carries; they count as sent. A change is
    /// a value that differs from the one noted before.
    pub fn pick(
        &mut self,
        entries: impl IntoIterator<Item = (K, V, bool)>,
        now_unix_s: i64,
    ) -> Vec<usize> {
        let list: Vec<Entry<K>> = entries
            .into_iter()
            .map(|(key, value, settled)| {
                let (changed_unix_s, sent) = self.changes.note(key, value, now_unix_s);
                Entry {
                    key,
                    changed_unix_s,
                    settled,
                    sent,
                }
            })
            .collect();
        // Every key of the list is noted now: more noted means some left the table.
        if self.changes.seen.len() > list.len() {
            let named: HashSet<K> = list.iter().map(|e| e.key).collect();
            self.changes.retain(|k| named.contains(k));
        }
        let picked = pick_positions(&list, now_unix_s, self.cap, self.rotate, &mut self.rotation);
        let keys: Vec<K> = picked.iter().map(|&i| list[i].key).collect();
        self.changes.sent(&keys);
        // Changes not sent yet go first, so some were left out only if more than fit.
        self.unsent_left = list.iter().filter(|e| e.sent == 0).count() > self.cap;
        picked
    }
}

impl Publisher<ReleaseId, (ReleaseState, u32)> {
    /// The news of a node's record of `now`, given the releases of the last one that went
    /// out (`None`: none yet): a change of state is a release, its state or its error; an
    /// install or a failure in a ring that gates a later one is gate news
    /// ([`News::Gate`]); more chunks held is progress.
    pub fn status_news(&self, last: Option<&[ReleaseStatus]>, now: &[ReleaseStatus]) -> News {
        let Some(prev) = last else {
            return self.news(true, false);
        };
        let gate = now.iter().any(|r| {
            r.ring > 0
                && matches!(r.state, ReleaseState::Activated | ReleaseState::Failed)
                && prev
                    .iter()
                    .find(|p| p.release == r.release)
                    .is_none_or(|p| p.state != r.state)
        });
        if gate {
            return News::Gate;
        }
        let same_states = prev.len() == now.len()
            && prev
                .iter()
                .zip(now)
                .all(|(x, y)| (x.release, x.state, &x.error) == (y.release, y.state, &y.error));
        self.news(!same_states, prev != now)
    }

    /// The entries of a node's record going out at `now_unix_s`, of every release it
    /// follows: a change is a new state or more chunks held; an entry is settled unless
    /// announced or downloading.
    pub fn pick_statuses(
        &mut self,
        releases: &[ReleaseStatus],
        now_unix_s: i64,
    ) -> Vec<ReleaseStatus> {
        let picked = self.pick(
            releases.iter().map(|r| {
                (
                    r.release,
                    (r.state, r.chunks_have),
                    !matches!(r.state, ReleaseState::Announced | ReleaseState::Downloading),
                )
            }),
            now_unix_s,
        );
        let mut picked = picked;
        picked.sort_unstable();
        picked.into_iter().map(|i| releases[i].clone()).collect()
    }
}

/// A site summary's content as its news is judged: its state (every field but progress)
/// and its progress (chunks held per release). A change of state is news of state; a change
/// of progress alone, of progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SummaryContent {
    nodes: u32,
    installers: u32,
    contacts: Vec<Contact>,
    releases: Vec<SiteRelease>,
    progress: Vec<u64>,
}

impl SummaryContent {
    /// The content of a summary of these figures.
    pub fn new(
        nodes: u32,
        installers: u32,
        contacts: Vec<Contact>,
        releases: &[SiteRelease],
    ) -> Self {
        Self {
            nodes,
            installers,
            contacts,
            progress: releases.iter().map(|r| r.chunks_have).collect(),
            releases: releases
                .iter()
                .map(|r| SiteRelease {
                    chunks_have: 0,
                    ..r.clone()
                })
                .collect(),
        }
    }

    /// The contacts it names.
    pub fn contacts(&self) -> &[Contact] {
        &self.contacts
    }
}

/// Whether a ring's installs or failures of some release differ between `last` and `now`:
/// news a gate reads ([`News::Gate`]). Nodes joining a ring's count travel as state news.
fn gate_news(last: &[SiteRelease], now: &[SiteRelease]) -> bool {
    let moved = |r: &SiteRelease| -> Vec<(u32, u32)> {
        r.rings.iter().map(|c| (c.installed, c.failed)).collect()
    };
    now.iter().any(|r| {
        let had = last
            .iter()
            .find(|l| l.release == r.release)
            .map_or_else(Vec::new, moved);
        let has = moved(r);
        has.iter().any(|&(i, f)| i + f > 0) && has != had
    })
}

impl Publisher<ReleaseId, SiteRelease> {
    /// The news of a summary of `content`, given the content of the last one that went out.
    pub fn summary_news(&self, content: &SummaryContent, last: Option<&SummaryContent>) -> News {
        match last {
            None => self.news(true, false),
            Some(l) if gate_news(&l.releases, &content.releases) => News::Gate,
            Some(l) => {
                let state = (l.nodes, l.installers, &l.contacts, &l.releases)
                    != (
                        content.nodes,
                        content.installers,
                        &content.contacts,
                        &content.releases,
                    );
                self.news(state, l.progress != content.progress)
            }
        }
    }

    /// The entries of a site's summary going out at `now_unix_s`, of every release the
    /// site's ledgers name, the newest published first: a change is any figure that
    /// differs; an entry is settled when no node of the site announces or fetches it.
    pub fn pick_site_releases(
        &mut self,
        releases: Vec<SiteRelease>,
        now_unix_s: i64,
    ) -> Vec<SiteRelease> {
        let settled = |r: &SiteRelease| {
            r.count(ReleaseState::Announced) + r.count(ReleaseState::Downloading) == 0
        };
        let picked = self.pick(
            releases.iter().map(|r| (r.release, r.clone(), settled(r))),
            now_unix_s,
        );
        let mut keep = vec![false; releases.len()];
        for i in picked {
            keep[i] = true;
        }
        let mut out: Vec<SiteRelease> = releases
            .into_iter()
            .zip(keep)
            .filter_map(|(r, k)| k.then_some(r))
            .collect();
        out.sort_by_key(|r| std::cmp::Reverse(r.published_unix_s));
        out
    }
}

/// Whether an entry of a release published at `published_unix_s` (0: unknown, then
/// `seen_unix_s`, when it was first seen) is still within [`HORIZON`] at `now_unix_s`.
pub fn within_horizon(published_unix_s: i64, seen_unix_s: i64, now_unix_s: i64) -> bool {
    let at = if published_unix_s > 0 {
        published_unix_s
    } else {
        seen_unix_s
    };
    now_unix_s.saturating_sub(at) <= HORIZON.as_secs() as i64
}

/// The keys a message of at most `cap` entries carries from `entries` at `now_unix_s`, in
/// the order of the module docs: changes not yet sent (oldest first), moving entries (latest
/// change first), lingering ones (least sent first), then up to `rotate` settled ones in
/// turn after `rotation`, which moves on.
pub fn pick<K: Ord + Copy>(
    entries: &[Entry<K>],
    now_unix_s: i64,
    cap: usize,
    rotate: usize,
    rotation: &mut Rotation<K>,
) -> Vec<K> {
    pick_positions(entries, now_unix_s, cap, rotate, rotation)
        .into_iter()
        .map(|i| entries[i].key)
        .collect()
}

/// A key and its position in the entries.
type Keyed<K> = (K, usize);

/// [`pick`], as positions in `entries`.
pub fn pick_positions<K: Ord + Copy>(
    entries: &[Entry<K>],
    now_unix_s: i64,
    cap: usize,
    rotate: usize,
    rotation: &mut Rotation<K>,
) -> Vec<usize> {
    let linger = LINGER.as_secs() as i64;
    let tier = |e: &Entry<K>| -> Option<u8> {
        if e.sent == 0 {
            Some(0)
        } else if !e.settled {
            Some(1)
        } else if now_unix_s.saturating_sub(e.changed_unix_s) < linger {
            Some(2)
        } else {
            None
        }
    };
    let mut first: Vec<(u8, usize)> = entries
        .iter()
        .enumerate()
        .filter_map(|(i, e)| tier(e).map(|t| (t, i)))
        .collect();
    first.sort_by(|&(ta, a), &(tb, b)| {
        let (a, b) = (&entries[a], &entries[b]);
        ta.cmp(&tb)
            .then_with(|| match ta {
                0 => a.changed_unix_s.cmp(&b.changed_unix_s),
                1 => b.changed_unix_s.cmp(&a.changed_unix_s),
                _ => a
                    .sent
                    .cmp(&b.sent)
                    .then(b.changed_unix_s.cmp(&a.changed_unix_s)),
            })
            .then(a.key.cmp(&b.key))
    });
    let mut out: Vec<usize> = first.iter().take(cap).map(|&(_, i)| i).collect();
    let room = cap.saturating_sub(out.len()).min(rotate);
    if room == 0 {
        return out;
    }
    // The settled keys after the last one sent in turn, in order, going round to the first:
    // the `room` smallest above it, then the smallest from the start (no sort of the whole
    // table: a record goes out every few seconds and a table holds hundreds).
    let (mut after, mut before): (Vec<Keyed<K>>, Vec<Keyed<K>>) = entries
        .iter()
        .enumerate()
        .filter(|(_, e)| tier(e).is_none())
        .map(|(i, e)| (e.key, i))
        .partition(|(k, _)| rotation.0.is_none_or(|last| *k > last));
    let smallest = |v: &mut Vec<Keyed<K>>, n: usize| {
        if v.len() > n {
            v.select_nth_unstable(n);
            v.truncate(n);
        }
        v.sort_unstable();
    };
    smallest(&mut after, room);
    let mut turn = after;
    if turn.len() < room {
        smallest(&mut before, room - turn.len());
        turn.extend(before);
    }
    if let Some(&(last, _)) = turn.last() {
        rotation.0 = Some(last);
    }
    out.extend(turn.into_iter().map(|(_, i)| i));
    out
}

/// Of a table's entries (key, published, first seen), the keys to drop at `now_unix_s`:
/// those past [`HORIZON`], then the published longest ago beyond [`RELEASES_KEPT_MAX`].
pub fn evict<K: Ord + Copy>(entries: &[(K, i64, i64)], now_unix_s: i64) -> Vec<K> {
    let mut out: Vec<K> = Vec::new();
    let mut kept: Vec<(i64, K)> = Vec::new();
    for &(key, published, seen) in entries {
        if within_horizon(published, seen, now_unix_s) {
            kept.push((if published > 0 { published } else { seen }, key));
        } else {
            out.push(key);
        }
    }
    if kept.len() > RELEASES_KEPT_MAX {
        kept.sort_unstable();
        let over = kept.len() - RELEASES_KEPT_MAX;
        out.extend(kept[..over].iter().map(|(_, k)| *k));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 10_000_000;

    fn settled(key: u32, ago: i64) -> Entry<u32> {
        Entry {
            key,
            changed_unix_s: NOW - ago,
            settled: true,
            sent: 1,
        }
    }

    fn moving(key: u32, ago: i64) -> Entry<u32> {
        Entry {
            key,
            changed_unix_s: NOW - ago,
            settled: false,
            sent: 1,
        }
    }

    fn unsent(key: u32, ago: i64) -> Entry<u32> {
        Entry {
            key,
            changed_unix_s: NOW - ago,
            settled: true,
            sent: 0,
        }
    }

    #[test]
    fn unsent_changes_first_then_moving_then_lingering_then_in_turn() {
        let old = LINGER.as_secs() as i64 + 1;
        let mut lingering = settled(3, 10);
        lingering.sent = 2;
        let entries = [
            settled(1, old),
            moving(2, old * 5),
            lingering,
            moving(4, 5),
            unsent(5, 1),
            unsent(6, 30),
            settled(7, 20),
        ];
        let mut rot = Rotation::default();
        assert_eq!(pick(&entries, NOW, 2, 0, &mut rot), vec![6, 5]);
        assert_eq!(pick(&entries, NOW, 4, 0, &mut rot), vec![6, 5, 4, 2]);
        assert_eq!(
            pick(&entries, NOW, 6, 0, &mut rot),
            vec![6, 5, 4, 2, 7, 3],
            "the least sent lingering entry first"
        );
        // Settled for longer than the linger: only in turn.
        assert_eq!(pick(&entries, NOW, 10, 0, &mut rot).len(), 6);
        assert_eq!(pick(&entries, NOW, 10, 1, &mut rot).last(), Some(&1));
    }

    #[test]
    fn forty_changes_in_messages_of_32_all_go_out() {
        let mut changes: Changes<u32, u8> = Changes::default();
        let mut rot = Rotation::default();
        let mut carried = std::collections::BTreeSet::new();
        for k in 0..40u32 {
            changes.note(k, 1, NOW + i64::from(k));
        }
        for m in 0..2 {
            let now = NOW + 60 + m;
            let entries: Vec<Entry<u32>> = (0..40u32)
                .map(|k| {
                    let (changed_unix_s, sent) = changes.note(k, 1, now);
                    Entry {
                        key: k,
                        changed_unix_s,
                        settled: true,
                        sent,
                    }
                })
                .collect();
            let got = pick(&entries, now, 32, 0, &mut rot);
            changes.sent(&got);
            carried.extend(got);
        }
        assert_eq!(
            carried.len(),
            40,
            "every change went out within two messages"
        );
    }

    #[test]
    fn settled_entries_come_in_turn_and_every_one_comes() {
        let old = LINGER.as_secs() as i64 * 2;
        let entries: Vec<Entry<u32>> = (0..7).map(|k| settled(k, old)).collect();
        let mut rot = Rotation::default();
        let mut seen = std::collections::BTreeSet::new();
        let mut turns = 0;
        while seen.len() < entries.len() {
            let got = pick(&entries, NOW, 32, 2, &mut rot);
            assert_eq!(got.len(), 2, "two in turn per message");
            seen.extend(got);
            turns += 1;
            assert!(turns <= 4, "seven entries two at a time take four messages");
        }
        // The turn wraps around.
        assert_eq!(pick(&entries, NOW, 32, 2, &mut rot), vec![1, 2]);
    }

    #[test]
    fn the_turn_takes_only_the_room_left() {
        let old = LINGER.as_secs() as i64 * 2;
        let mut entries: Vec<Entry<u32>> = (0..5).map(|k| settled(k, old)).collect();
        entries.push(moving(100, 1));
        entries.push(moving(101, 2));
        let mut rot = Rotation::default();
        assert_eq!(pick(&entries, NOW, 3, 5, &mut rot), vec![100, 101, 0]);
        assert_eq!(pick(&entries, NOW, 2, 5, &mut rot), vec![100, 101]);
        assert_eq!(pick(&entries, NOW, 4, 5, &mut rot), vec![100, 101, 1, 2]);
    }

    #[test]
    fn a_removed_key_does_not_stop_the_turn() {
        let old = LINGER.as_secs() as i64 * 2;
        let entries: Vec<Entry<u32>> = [1, 3, 5].iter().map(|&k| settled(k, old)).collect();
        let mut rot = Rotation(Some(4));
        assert_eq!(pick(&entries, NOW, 8, 2, &mut rot), vec![5, 1]);
    }

    #[test]
    fn a_change_is_dated_when_the_value_differs() {
        let mut c: Changes<u32, u8> = Changes::default();
        assert_eq!(c.note(1, 5, 100), (100, 0));
        c.sent(&[1]);
        assert_eq!(c.note(1, 5, 200), (100, 1), "the same value keeps its date");
        assert_eq!(c.note(1, 6, 300), (300, 0), "a change is unsent");
        c.retain(|k| *k != 1);
        assert_eq!(c.note(1, 6, 400), (400, 0), "a forgotten key is new again");
    }

    #[test]
    fn eviction_keeps_the_horizon_and_the_cap() {
        let day = 24 * 3600;
        let mut entries: Vec<(u32, i64, i64)> = vec![
            (1, NOW - 91 * day, NOW),
            (2, NOW - 89 * day, NOW),
            (3, 0, NOW - 91 * day),
            (4, 0, NOW - day),
        ];
        assert_eq!(evict(&entries, NOW), vec![1, 3]);
        entries.clear();
        for k in 0..(RELEASES_KEPT_MAX as u32 + 3) {
            entries.push((k, NOW - i64::from(k), NOW));
        }
        let mut gone = evict(&entries, NOW);
        gone.sort_unstable();
        let top = RELEASES_KEPT_MAX as u32;
        assert_eq!(gone, vec![top, top + 1, top + 2], "the oldest published go");
    }
}
