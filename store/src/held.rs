//! Releases held for approval (`p2pctl publish --hold-for-approval`): committed with the
//! signatures they have (chunks stored, version taken, in the audit log as held), not served
//! and not announced until approvers' signatures bring them to the threshold their channel
//! needs ([`Store::approve`]).

use crate::audit::AuditEvent;
use crate::{HELD, RELEASES, ReleaseSummary, SUMMARIES, Store, StoreError, append_audit_in};
use protocol::{ReleaseId, VerifiedRelease, codec};
use redb::{ReadableDatabase, ReadableTable};

impl Store {
    /// The envelope of held release `id` (the signatures it has so far), if it is held.
    pub fn held_envelope(&self, id: &ReleaseId) -> Result<Option<Vec<u8>>, StoreError> {
        let read = self.db.begin_read()?;
        let table = read.open_table(HELD)?;
        Ok(table.get(id.as_bytes())?.map(|v| v.value().to_vec()))
    }

    /// Every release held for approval.
    pub fn held_releases(&self) -> Result<Vec<ReleaseId>, StoreError> {
        let read = self.db.begin_read()?;
        let table = read.open_table(HELD)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            out.push(ReleaseId(*row?.0.value()));
        }
        Ok(out)
    }

    /// Records a held release's new envelope (one more signature, checked by the caller as
    /// far as it goes: `release` is what it verified to). `complete`: it has the signatures
    /// it needs, leaves the held table and is served from now on. The summary's signers
    /// follow, and `event` is appended in the same transaction. An error if it is not held.
    pub fn approve(
        &self,
        release: &VerifiedRelease,
        complete: bool,
        event: AuditEvent,
    ) -> Result<(), StoreError> {
        let id = release.id;
        let envelope = release.envelope.encode();
        let txn = self.db.begin_write()?;
        {
            let mut held = txn.open_table(HELD)?;
            if held.get(id.as_bytes())?.is_none() {
                return Err(StoreError::Damaged(format!(
                    "release {id} is not held for approval"
                )));
            }
            if complete {
                held.remove(id.as_bytes())?;
            } else {
                held.insert(id.as_bytes(), envelope.as_slice())?;
            }
            txn.open_table(RELEASES)?
                .insert(id.as_bytes(), envelope.as_slice())?;
            let mut summaries = txn.open_table(SUMMARIES)?;
            let summary = summaries
                .get(id.as_bytes())?
                .map(|v| ReleaseSummary::decode(v.value()))
                .transpose()?;
            if let Some(mut s) = summary {
                s.signers = release.signers.clone();
                summaries.insert(id.as_bytes(), codec::encode(&s).as_slice())?;
            }
        }
        append_audit_in(&txn, event)?;
        txn.commit()?;
        Ok(())
    }
}
