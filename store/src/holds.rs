//! Install holds, the exceptions of a patch policy (`p2pctl hold`): a system that cannot be
//! patched yet, with the reason and until when. A hold names a channel (covering those
//! under it by whole segments, as `follow` does) or one release. The node keeps fetching
//! and serving what a hold covers, so its site loses nothing, but installs none of it until
//! the hold ends: at its `until` by itself, or when lifted (`p2pctl unhold`). Setting and
//! lifting are audited; the fleet view and the compliance report list held nodes as
//! exceptions, apart from failures.

use crate::audit::AuditEvent;
use crate::{HOLDS, Store, StoreError, append_audit_in};
use protocol::{ReleaseId, codec};
use redb::{ReadableDatabase, ReadableTable};
use serde::{Deserialize, Serialize};

/// Holds a node keeps at once: far more than the channels a node follows, bounded so that
/// the table and every activation check stay small.
pub const HOLDS_MAX: usize = 256;

/// Longest reason, bytes: a sentence and a ticket number.
pub const HOLD_REASON_BYTES_MAX: usize = 200;

/// Longest hold, seconds (a year): an exception is reviewed and set again, never forever.
pub const HOLD_DURATION_MAX_S: i64 = 366 * 86_400;

/// Largest encoded hold.
const HOLD_BYTES_MAX: usize = 1024;

/// One install hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstallHold {
    /// A channel (and those under it) or a release id, 64 hex digits.
    pub target: String,
    /// Why, for the fleet view and the report.
    pub reason: String,
    /// When it ends by itself, unix seconds.
    pub until_unix_s: i64,
    /// When it was set, unix seconds.
    pub at_unix_s: i64,
}

/// Why a hold was not set.
#[derive(Debug, thiserror::Error)]
pub enum HoldError {
    /// The target is neither a channel name nor a release id.
    #[error("{0:?} is neither a channel name nor a release id (64 hex digits)")]
    BadTarget(String),
    /// The reason is empty or too long.
    #[error("the reason must be 1 to {HOLD_REASON_BYTES_MAX} bytes")]
    BadReason,
    /// The end is not in the future, or too far in it.
    #[error("a hold must end in the future and within a year")]
    BadUntil,
    /// [`HOLDS_MAX`] holds are in force.
    #[error("{HOLDS_MAX} holds are in force already; lift one first")]
    Full,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The hold of `holds` that covers release `id` of `channel`, if any.
pub fn covering<'a>(
    holds: &'a [InstallHold],
    id: &ReleaseId,
    channel: &str,
) -> Option<&'a InstallHold> {
    holds.iter().find(|h| h.covers(id, channel))
}

impl InstallHold {
    /// Whether it covers release `id` of `channel`.
    pub fn covers(&self, id: &ReleaseId, channel: &str) -> bool {
        self.target == id.to_hex() || protocol::root::channel_in_scope(&self.target, channel)
    }

    /// Whether it is in force at `now_unix_s`.
    pub fn in_force(&self, now_unix_s: i64) -> bool {
        now_unix_s < self.until_unix_s
    }

    fn check(&self, now_unix_s: i64) -> Result<(), HoldError> {
        let is_id = self.target.len() == 64 && self.target.parse::<ReleaseId>().is_ok();
        if !is_id && !protocol::manifest::is_valid_channel(&self.target) {
            return Err(HoldError::BadTarget(self.target.clone()));
        }
        if self.reason.trim().is_empty() || self.reason.len() > HOLD_REASON_BYTES_MAX {
            return Err(HoldError::BadReason);
        }
        if self.until_unix_s <= now_unix_s
            || self.until_unix_s > now_unix_s.saturating_add(HOLD_DURATION_MAX_S)
        {
            return Err(HoldError::BadUntil);
        }
        Ok(())
    }
}

impl Store {
    /// Sets `hold` (replacing one on the same target), audited as `hold_set`. Holds that
    /// ended by `hold.at_unix_s` leave the table first.
    pub fn set_hold(&self, hold: &InstallHold) -> Result<(), HoldError> {
        hold.check(hold.at_unix_s)?;
        let txn = self.db.begin_write().map_err(StoreError::from)?;
        {
            let mut table = txn.open_table(HOLDS).map_err(StoreError::from)?;
            let mut ended = Vec::new();
            let mut count = 0;
            for row in table.iter().map_err(StoreError::from)? {
                let (k, v) = row.map_err(StoreError::from)?;
                match decode(v.value()) {
                    Ok(h) if h.in_force(hold.at_unix_s) => count += 1,
                    _ => ended.push(k.value().to_owned()),
                }
            }
            for k in ended {
                table.remove(k.as_str()).map_err(StoreError::from)?;
            }
            let replaces = table
                .get(hold.target.as_str())
                .map_err(StoreError::from)?
                .is_some();
            if !replaces && count >= HOLDS_MAX {
                return Err(HoldError::Full);
            }
            table
                .insert(hold.target.as_str(), codec::encode(hold).as_slice())
                .map_err(StoreError::from)?;
        }
        append_audit_in(
            &txn,
            AuditEvent::HoldSet {
                target: hold.target.clone(),
                reason: hold.reason.clone(),
                until_unix_s: hold.until_unix_s,
            },
        )?;
        txn.commit().map_err(StoreError::from)?;
        Ok(())
    }

    /// Lifts the hold on `target`, audited as `hold_lifted`. Whether there was one.
    pub fn lift_hold(&self, target: &str) -> Result<bool, StoreError> {
        let txn = self.db.begin_write()?;
        let had = txn.open_table(HOLDS)?.remove(target)?.is_some();
        if had {
            append_audit_in(
                &txn,
                AuditEvent::HoldLifted {
                    target: target.to_owned(),
                },
            )?;
        }
        txn.commit()?;
        Ok(had)
    }

    /// The holds in force at `now_unix_s` (a damaged row is left out, and logged).
    pub fn holds(&self, now_unix_s: i64) -> Result<Vec<InstallHold>, StoreError> {
        let read = self.db.begin_read()?;
        let table = read.open_table(HOLDS)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            let (k, v) = row?;
            match decode(v.value()) {
                Ok(h) if h.in_force(now_unix_s) => out.push(h),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(target = k.value(), error = %e, "install hold damaged; ignored")
                }
            }
        }
        Ok(out)
    }
}

fn decode(bytes: &[u8]) -> Result<InstallHold, StoreError> {
    codec::decode::<InstallHold, HOLD_BYTES_MAX>(bytes, "install hold")
        .map_err(|e| StoreError::Damaged(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_795_392_000;

    fn hold(target: &str, until: i64) -> InstallHold {
        InstallHold {
            target: target.into(),
            reason: "vendor certification pending (CHG-1234)".into(),
            until_unix_s: until,
            at_unix_s: NOW,
        }
    }

    #[test]
    fn holds_cover_channels_by_segment_or_one_release_and_end_by_themselves() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let id = ReleaseId([7; 32]);
        store.set_hold(&hold("security", NOW + 60)).unwrap();
        store.set_hold(&hold(&id.to_hex(), NOW + 3600)).unwrap();
        let held = store.holds(NOW).unwrap();
        assert_eq!(held.len(), 2);
        let covers = |channel: &str, rid: &ReleaseId| held.iter().any(|h| h.covers(rid, channel));
        assert!(covers("security/openssl", &ReleaseId([1; 32])));
        assert!(!covers("security-evil/x", &ReleaseId([1; 32])));
        assert!(covers("apps/x", &id));
        // The channel hold ends by itself; the release hold stays until lifted.
        assert_eq!(store.holds(NOW + 60).unwrap().len(), 1);
        assert!(store.lift_hold(&id.to_hex()).unwrap());
        assert!(!store.lift_hold(&id.to_hex()).unwrap());
        assert!(
            store
                .holds(NOW)
                .unwrap()
                .iter()
                .all(|h| h.target == "security")
        );
        let (audit, _) = store.audit_entries(None).unwrap();
        let kinds: Vec<&str> = audit.iter().map(|e| e.event.kind()).collect();
        assert_eq!(kinds, ["hold_set", "hold_set", "hold_lifted"]);
    }

    #[test]
    fn bad_holds_are_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert!(matches!(
            store.set_hold(&hold("../etc", NOW + 60)),
            Err(HoldError::BadTarget(_))
        ));
        assert!(matches!(
            store.set_hold(&hold("security", NOW)),
            Err(HoldError::BadUntil)
        ));
        assert!(matches!(
            store.set_hold(&hold("security", NOW + HOLD_DURATION_MAX_S + 1)),
            Err(HoldError::BadUntil)
        ));
        let mut h = hold("security", NOW + 60);
        h.reason = " ".into();
        assert!(matches!(store.set_hold(&h), Err(HoldError::BadReason)));
        for i in 0..HOLDS_MAX {
            store.set_hold(&hold(&format!("c/{i}"), NOW + 60)).unwrap();
        }
        assert!(matches!(
            store.set_hold(&hold("one-more", NOW + 60)),
            Err(HoldError::Full)
        ));
        // Replacing one in force is fine, and ended ones make room.
        store.set_hold(&hold("c/0", NOW + 120)).unwrap();
        let later = InstallHold {
            at_unix_s: NOW + 61,
            ..hold("one-more", NOW + 600)
        };
        store.set_hold(&later).unwrap();
        assert_eq!(store.holds(NOW + 61).unwrap().len(), 2);
    }
}
