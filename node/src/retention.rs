//! `[store] keep_versions`: of each channel, the store keeps the newest versions and removes
//! the older ones ([`store::retention::beyond_keep`]), then compacts. Never removed: a
//! release held for approval, one being fetched, or the version installed here; the one
//! still to install is the channel's newest, always kept. Removals are audited
//! (`release_removed`).

use crate::activate::Outcome;
use crate::server::AppState;
use net::Net;
use protocol::ReleaseId;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

/// How often the store is checked against `keep_versions`: soon after a newer version
/// completed, and the check reads only the store's catalog (its releases and activation
/// records); the compaction runs only when something was removed.
pub const RETENTION_RECHECK: Duration = Duration::from_secs(10);

/// Checks the store every [`RETENTION_RECHECK`] until shutdown.
pub async fn run(state: Arc<AppState>, net: Arc<Net>, keep: u32) {
    let mut shutdown = net.shutdown.clone();
    loop {
        tokio::select! {
            () = tokio::time::sleep(RETENTION_RECHECK) => {}
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() {
            return;
        }
        if let Err(e) = once(&state, &net, keep).await {
            tracing::warn!(error = %e, "retention check failed");
        }
    }
}

/// Removes what `keep` versions per channel leave out, then compacts.
pub async fn once(
    state: &Arc<AppState>,
    net: &Arc<Net>,
    keep: u32,
) -> Result<u64, store::StoreError> {
    let store = state.store.clone();
    let (releases, held, records) = tokio::task::spawn_blocking(move || {
        Ok::<_, store::StoreError>((
            store.releases()?,
            store.held_releases()?,
            store.activations()?,
        ))
    })
    .await
    .map_err(|e| store::StoreError::Damaged(e.to_string()))??;
    let mut protected: HashSet<ReleaseId> = held.into_iter().collect();
    // Of each channel, the newest version installed here. The one still to install is the
    // channel's newest (scheduler::versions), which keep_versions always keeps.
    let mut installed: HashMap<&str, u64> = HashMap::new();
    for (_, r) in &records {
        if r.outcome == Outcome::Installed {
            let v = installed.entry(r.channel.as_str()).or_insert(0);
            *v = (*v).max(r.version);
        }
    }
    for r in &releases {
        if installed.get(r.channel.as_str()) == Some(&r.version) {
            protected.insert(r.id);
        }
    }
    let remove = store::retention::beyond_keep(&releases, keep as usize, &protected);
    let (removed, reclaimed) = remove_and_compact(state, Some(net), remove).await?;
    if !removed.is_empty() {
        tracing::info!(
            removed = removed.len(),
            reclaimed = reclaimed.bytes_reclaimed,
            packs = reclaimed.packs_rewritten,
            "releases past [store] keep_versions removed, store compacted"
        );
    }
    Ok(reclaimed.bytes_reclaimed)
}

/// Removes the releases of `ids` the store holds and the network does not fetch (it stops
/// serving them), then compacts if any was removed: what `p2pctl release remove` and
/// `keep_versions` both do. Returns those removed and what the compaction reclaimed.
pub async fn remove_and_compact(
    state: &Arc<AppState>,
    net: Option<&Arc<Net>>,
    ids: Vec<ReleaseId>,
) -> Result<(Vec<ReleaseId>, store::retention::Reclaimed), store::StoreError> {
    let ids: Vec<ReleaseId> = ids
        .into_iter()
        .filter(|id| {
            net.is_none_or(|n| n.registry.get(id).is_none() || n.registry.remove_settled(id))
        })
        .collect();
    if ids.is_empty() {
        return Ok((ids, store::retention::Reclaimed::default()));
    }
    let store = state.store.clone();
    tokio::task::spawn_blocking(move || {
        let mut removed = Vec::new();
        for id in ids {
            if store.remove_release(&id)? {
                tracing::info!(release = %id, "release removed");
                removed.push(id);
            }
        }
        let reclaimed = if removed.is_empty() {
            store::retention::Reclaimed::default()
        } else {
            store.compact()?
        };
        Ok((removed, reclaimed))
    })
    .await
    .map_err(|e| store::StoreError::Damaged(e.to_string()))?
}
