//! Fetching one verified release: the loop that asks the [`crate::planner`] what to request,
//! sends the requests, verifies and stores what comes back, and tells peers what it now has.
//!
//! Durability: received chunks are staged in a pack and made durable by a checkpoint every
//! [`CHECKPOINT_BYTES`] or [`CHECKPOINT_INTERVAL`]; only then are they advertised to peers.
//! A crash loses at most the chunks since the last checkpoint; a restart finds the release
//! in the store's pending table and every checkpointed chunk in its index, so verified
//! chunks are never fetched twice. The last checkpoint commits the release itself.

use super::peer::{Peer, RequestError};
use super::{Class, Net, Release, ReleaseState, lock, now_unix_s};
use crate::planner::{self, InFlight, PeerView, PlanInput, PlannerConfig};
use protocol::VerifiedRelease;
use protocol::wire::{Control, HAVE_INDICES_MAX};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Staged bytes that trigger a checkpoint: bounds what a crash can lose and how long a chunk
/// waits before peers can fetch it from us.
pub const CHECKPOINT_BYTES: u64 = 8 << 20;

/// Longest a received chunk waits for its checkpoint.
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(250);

/// Bytes in flight to one same-site peer: a LAN bandwidth-delay product with room to spare
/// (1 Gbit/s × 20 ms ≈ 2.5 MB).
pub const LAN_IN_FLIGHT_BYTES: u64 = 8 << 20;

/// Bytes in flight to one peer of another site. Smaller than the LAN budget: WAN peers are
/// slow, and a long queue at one of them only delays chunks another could serve.
pub const WAN_IN_FLIGHT_BYTES: u64 = 2 << 20;

/// Re-plan at least this often even when nothing happened (stalls, timeouts).
const PLAN_TICK: Duration = Duration::from_millis(100);

/// For this long after a fetch starts, every connected same-site peer counts as a site
/// member for rendezvous hashing, whether or not its bitmap has arrived yet: announcements
/// reach members a few hundred milliseconds apart, and a member that planned alone in that
/// gap would fetch the whole release across the WAN.
const MEMBER_GRACE: Duration = Duration::from_secs(2);

/// A same-site member working on the release that made no progress for this long is taken
/// out of the rendezvous set; its share of WAN chunks moves to the others.
const MEMBER_STALL: Duration = Duration::from_secs(15);

/// One finished request.
struct Done {
    index: u32,
    peer: Arc<Peer>,
    result: Result<Vec<u8>, RequestError>,
}

/// Runs the fetch of `release` to completion (or shutdown).
pub(crate) async fn run(net: Arc<Net>, release: Arc<Release>, verified: VerifiedRelease) {
    match fetch(&net, &release, &verified).await {
        Ok(true) => {}
        Ok(false) => tracing::info!(release = %release.id, "fetch paused for shutdown"),
        Err(e) => {
            tracing::error!(release = %release.id, error = %e, "fetch failed");
            *lock(&release.state) = ReleaseState::Failed(e.to_string());
        }
    }
}

async fn fetch(
    net: &Arc<Net>,
    release: &Arc<Release>,
    verified: &VerifiedRelease,
) -> anyhow::Result<bool> {
    let chunks = &release.chunks;
    let mut got = lock(&release.have).clone();
    let mut session = net.store.begin_ingest();
    let mut staged: Vec<u32> = Vec::new();
    let mut staged_bytes = 0u64;
    let mut last_checkpoint = Instant::now();
    let mut in_flight: HashMap<u32, InFlight> = HashMap::new();
    let (tx, mut rx) = mpsc::unbounded_channel::<Done>();
    let mut shutdown = net.shutdown.clone();
    let epoch = Instant::now();
    let started = Instant::now();
    let me = net.local.node_id.0;
    let config = PlannerConfig::default();

    loop {
        if got.is_full() {
            // Any duplicate (endgame) requests still out are not needed; their tasks end on
            // their own and release their peers' in-flight budget.
            break;
        }
        tokio::select! {
            Some(done) = rx.recv() => {
                handle(net, release, &mut session, &mut got, &mut staged, &mut staged_bytes,
                    &mut in_flight, done)?;
            }
            () = net.wake.notified() => {}
            () = tokio::time::sleep(PLAN_TICK) => {}
            _ = shutdown.changed() => {
                checkpoint(net, release, &mut session, &mut staged).await?;
                return Ok(false);
            }
        }
        while let Ok(done) = rx.try_recv() {
            handle(
                net,
                release,
                &mut session,
                &mut got,
                &mut staged,
                &mut staged_bytes,
                &mut in_flight,
                done,
            )?;
        }
        if staged_bytes >= CHECKPOINT_BYTES
            || (!staged.is_empty() && last_checkpoint.elapsed() >= CHECKPOINT_INTERVAL)
        {
            checkpoint(net, release, &mut session, &mut staged).await?;
            staged_bytes = 0;
            last_checkpoint = Instant::now();
        }
        release.sample_rate();
        if got.is_full() {
            continue;
        }

        // Plan.
        let peers: Vec<Arc<Peer>> = net
            .peer_list()
            .into_iter()
            .filter(|p| !net.is_banned(&p.id))
            .collect();
        let views: Vec<Option<super::peer::PeerRelease>> =
            peers.iter().map(|p| p.release_view(&release.id)).collect();
        let planner_peers: Vec<PeerView<'_>> = peers
            .iter()
            .zip(&views)
            .map(|(p, v)| PeerView {
                id: p.node_key,
                same_site: p.class == Class::Lan,
                have: v.as_ref().map(|v| &v.bits),
                in_flight_bytes: p.in_flight_bytes(),
                budget_bytes: match p.class {
                    Class::Lan => LAN_IN_FLIGHT_BYTES,
                    Class::Wan => WAN_IN_FLIGHT_BYTES,
                },
                usable: true,
            })
            .collect();
        let in_grace = started.elapsed() < MEMBER_GRACE;
        let mut members: Vec<[u8; 32]> = vec![me];
        for (p, v) in peers.iter().zip(&views) {
            if p.class != Class::Lan {
                continue;
            }
            let live = match v {
                Some(v) => v.bits.is_full() || v.last_progress.elapsed() < MEMBER_STALL,
                None => in_grace,
            };
            if live {
                members.push(p.node_key);
            }
        }
        let input = PlanInput {
            me,
            chunks,
            have: &got,
            in_flight: &in_flight,
            peers: &planner_peers,
            site_members: &members,
            now_ms: epoch.elapsed().as_millis() as u64,
        };
        let assignments = planner::plan(&input, &config);
        let now_ms = epoch.elapsed().as_millis() as u64;
        for a in assignments {
            let peer = peers[a.peer].clone();
            let chunk = chunks[a.chunk as usize];
            in_flight
                .entry(a.chunk)
                .or_insert_with(|| InFlight {
                    peers: Vec::new(),
                    since_ms: now_ms,
                })
                .peers
                .push(peer.node_key);
            peer.add_in_flight(u64::from(chunk.len));
            let tx = tx.clone();
            tokio::spawn(async move {
                let result = peer.request_chunk(chunk.id, chunk.len).await;
                peer.sub_in_flight(u64::from(chunk.len));
                let _ = tx.send(Done {
                    index: a.chunk,
                    peer,
                    result,
                });
            });
        }
    }

    // Every chunk is staged or stored: make it durable and commit the release.
    let store_session = session;
    let v = verified.clone();
    let now = now_unix_s();
    tokio::task::spawn_blocking(move || store_session.commit(Some(&v), now)).await??;
    *lock(&release.have) = got;
    if !staged.is_empty() {
        send_haves(net, release, &staged);
    }
    *lock(&release.state) = ReleaseState::Complete;
    *lock(&release.finished) = Some(Instant::now());
    tracing::info!(release = %release.id, channel = %release.channel, version = release.version,
        from_lan = release.from_lan.load(Ordering::Relaxed),
        from_wan = release.from_wan.load(Ordering::Relaxed),
        seconds = started.elapsed().as_secs_f64(), "release complete");
    let _ = net.swarm.try_send(super::SwarmCommand::Provide(release.id));
    Ok(true)
}

#[allow(clippy::too_many_arguments)]
fn handle(
    net: &Arc<Net>,
    release: &Arc<Release>,
    session: &mut crate::store::IngestSession,
    got: &mut protocol::wire::Bitmap,
    staged: &mut Vec<u32>,
    staged_bytes: &mut u64,
    in_flight: &mut HashMap<u32, InFlight>,
    done: Done,
) -> anyhow::Result<()> {
    if let Some(f) = in_flight.get_mut(&done.index) {
        f.peers.retain(|p| *p != done.peer.node_key);
        if f.peers.is_empty() {
            in_flight.remove(&done.index);
        }
    }
    match done.result {
        Ok(bytes) => {
            let class = done.peer.class;
            net.traffic.add_recv(class, bytes.len() as u64);
            if got.get(done.index) {
                return Ok(()); // the other endgame request won
            }
            in_flight.remove(&done.index);
            let id = release.chunks[done.index as usize].id;
            tokio::task::block_in_place(|| session.put_chunk(id, &bytes))?;
            got.set(done.index);
            staged.push(done.index);
            *staged_bytes += bytes.len() as u64;
            match class {
                Class::Lan => release
                    .from_lan
                    .fetch_add(bytes.len() as u64, Ordering::Relaxed),
                Class::Wan => release
                    .from_wan
                    .fetch_add(bytes.len() as u64, Ordering::Relaxed),
            };
        }
        Err(RequestError::BadChunk) => {
            net.strike(&done.peer.id, "sent a chunk that does not match its id");
        }
        Err(RequestError::Protocol(e)) => {
            net.strike(&done.peer.id, &e);
        }
        Err(RequestError::NotFound) => {
            done.peer.forget_chunk(&release.id, done.index);
        }
        Err(e) => {
            tracing::debug!(peer = %done.peer.id, error = %e, "chunk request failed");
        }
    }
    Ok(())
}

async fn checkpoint(
    net: &Arc<Net>,
    release: &Arc<Release>,
    session: &mut crate::store::IngestSession,
    staged: &mut Vec<u32>,
) -> anyhow::Result<()> {
    if staged.is_empty() {
        return Ok(());
    }
    tokio::task::block_in_place(|| session.checkpoint())?;
    {
        let mut have = lock(&release.have);
        for &i in staged.iter() {
            have.set(i);
        }
    }
    send_haves(net, release, staged);
    staged.clear();
    Ok(())
}

fn send_haves(net: &Net, release: &Release, indices: &[u32]) {
    for part in indices.chunks(HAVE_INDICES_MAX) {
        net.broadcast(Control::Have {
            release: release.id,
            indices: part.to_vec(),
        });
    }
}
