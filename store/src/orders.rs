//! The fleet orders this node took ([`protocol::orders`]): one row, replaced only by newer
//! orders that verify under the newest root held, checked inside the write transaction (two
//! arriving at once cannot step back) and audited with what changed.

use crate::audit::AuditEvent;
use crate::{ORDERS, Store, StoreError, append_audit_in};
use protocol::orders::{Orders, OrdersError, SignedOrders};
use redb::{ReadableDatabase, ReadableTable};

/// The key of the one row of the orders table.
pub const ORDERS_ROW: &str = "current";

/// Most lines of change an audit entry lists; the rest are counted. With each line cut to
/// [`AUDITED_CHANGE_BYTES_MAX`] the entry stays well inside
/// [`crate::audit::ENTRY_BYTES_MAX`].
pub const AUDITED_CHANGES_MAX: usize = 16;

/// Longest line of change an audit entry keeps, bytes.
pub const AUDITED_CHANGE_BYTES_MAX: usize = 300;

/// Why orders were not taken.
#[derive(Debug, thiserror::Error)]
pub enum TakeOrdersError {
    /// No root is held to check them with.
    #[error("this node holds no fleet root: fleet orders need one (its operator keys sign them)")]
    NoRoot,
    /// They do not verify under the root held, or are not newer than those held.
    #[error(transparent)]
    Orders(#[from] OrdersError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn decode(bytes: &[u8]) -> Result<SignedOrders, StoreError> {
    SignedOrders::decode(bytes)
        .map_err(|e| StoreError::Damaged(format!("stored fleet orders: {e}")))
}

impl Store {
    /// The fleet orders this node holds, if it took any.
    pub fn orders(&self) -> Result<Option<SignedOrders>, StoreError> {
        let read = self.db.begin_read()?;
        let table = read.open_table(ORDERS)?;
        table
            .get(ORDERS_ROW)?
            .map(|v| decode(v.value()))
            .transpose()
    }

    /// Takes `signed` in place of the orders held: they must verify under the newest root
    /// held and be newer. Returns what changed, one line each (also audited).
    pub fn take_orders(&self, signed: &SignedOrders) -> Result<Vec<String>, TakeOrdersError> {
        let root = self.root()?.ok_or(TakeOrdersError::NoRoot)?;
        let txn = self.db.begin_write().map_err(StoreError::from)?;
        let held = {
            let mut table = txn.open_table(ORDERS).map_err(StoreError::from)?;
            let held = table
                .get(ORDERS_ROW)
                .map_err(StoreError::from)?
                .map(|v| decode(v.value()))
                .transpose()?;
            signed.verify_after(&root.signed, held.as_ref().map(|h| &h.orders))?;
            table
                .insert(ORDERS_ROW, signed.encode().as_slice())
                .map_err(StoreError::from)?;
            held
        };
        let before = held
            .map(|h| h.orders)
            .unwrap_or_else(|| Orders::empty(&signed.orders.fleet));
        let changes = signed.orders.changes_from(&before);
        let mut audited: Vec<String> = changes
            .iter()
            .take(AUDITED_CHANGES_MAX)
            .map(|c| protocol::wire::truncate_text(c, AUDITED_CHANGE_BYTES_MAX))
            .collect();
        if changes.len() > AUDITED_CHANGES_MAX {
            audited.push(format!("and {} more", changes.len() - AUDITED_CHANGES_MAX));
        }
        append_audit_in(
            &txn,
            AuditEvent::OrdersTaken {
                fleet: signed.orders.fleet.clone(),
                from_version: before.version,
                to_version: signed.orders.version,
                changes: audited,
                signer: signed.signer.to_hex(),
            },
        )?;
        txn.commit().map_err(StoreError::from)?;
        Ok(changes)
    }
}
