//! Rings this node saw start ([`scheduler::rollout`]): once a node's own ring of a release
//! opened, a failure elsewhere no longer stops it (a halt stops the rings not yet started).
//! Kept so that a restart does not halt a ring that had started.

use crate::{RING_STARTED, Store, StoreError};
use protocol::ReleaseId;
use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata};

/// Releases whose started ring a node remembers: rollouts in flight are a handful; the
/// oldest noted is forgotten first (its rollout long over).
pub const STARTED_KEPT_MAX: usize = 1024;

impl Store {
    /// Whether this node saw its ring of `release` start.
    pub fn ring_started(&self, release: &ReleaseId) -> Result<bool, StoreError> {
        let read = self.db.begin_read()?;
        let table = read.open_table(RING_STARTED)?;
        Ok(table.get(release.as_bytes())?.is_some())
    }

    /// Notes that this node's ring of `release` started at `now_unix_s`, forgetting the
    /// oldest note when [`STARTED_KEPT_MAX`] are kept.
    pub fn note_ring_started(
        &self,
        release: &ReleaseId,
        now_unix_s: i64,
    ) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(RING_STARTED)?;
            if table.get(release.as_bytes())?.is_none() && table.len()? as usize >= STARTED_KEPT_MAX
            {
                let mut oldest: Option<([u8; 32], i64)> = None;
                for row in table.iter()? {
                    let (k, v) = row?;
                    if oldest.is_none_or(|(_, o)| v.value() < o) {
                        oldest = Some((*k.value(), v.value()));
                    }
                }
                if let Some((k, _)) = oldest {
                    table.remove(&k)?;
                }
            }
            table.insert(release.as_bytes(), now_unix_s)?;
        }
        txn.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn started_rings_survive_a_reopen_and_the_oldest_goes_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        let id = |i: u32| {
            let mut b = [0u8; 32];
            b[..4].copy_from_slice(&i.to_le_bytes());
            ReleaseId(b)
        };
        {
            let store = Store::open(&path).unwrap();
            assert!(!store.ring_started(&id(1)).unwrap());
            for i in 0..STARTED_KEPT_MAX as u32 + 1 {
                store.note_ring_started(&id(i), i64::from(i)).unwrap();
            }
        }
        let store = Store::open(&path).unwrap();
        assert!(!store.ring_started(&id(0)).unwrap(), "the oldest went");
        assert!(store.ring_started(&id(7)).unwrap());
        assert!(store.ring_started(&id(STARTED_KEPT_MAX as u32)).unwrap());
    }
}
