//! The IO driver of one release's fetch. Every decision (what to request of whom and when,
//! who counts as a site member, snubs, the endgame, the reserve, pauses) is made by
//! [`scheduler::fetch::Fetch`], the machine the simulator drives too; this module feeds it
//! the node's peers and answers, on tokio's clock, and carries out what it returns: requests
//! to peers, chunks to the store writer, announcements, strikes, state changes.
//!
//! Durability: verified chunks go to a writer (a blocking task that owns the store session),
//! which appends them to a pack and makes them durable by a checkpoint
//! ([`scheduler::fetch::Checkpoint`]: every `CHECKPOINT_BYTES` or `CHECKPOINT_INTERVAL`);
//! only then are they advertised to peers. The network side never waits for the disk unless
//! the writer is `WRITE_BACKLOG_BYTES` behind (the machine then plans nothing until a
//! checkpoint). A crash loses at most the chunks since the last checkpoint; a restart finds
//! the release in the store's pending table and every checkpointed chunk in its index, so
//! verified chunks are never fetched twice. The last checkpoint commits the release itself.

use super::peer::{Peer, PeerRelease, RequestError};
use super::{Class, Net, Release, Transition, lock, now_unix_s};
use libp2p::PeerId;
use protocol::wire::{Bitmap, Control};
use protocol::{ReleaseId, VerifiedRelease};
use scheduler::fetch::{Answer, Event, Fetch, FetchConfig, FetchScratch, Phase, Request, World};
use scheduler::planner::PeerView;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Peers one fetch keeps a slot for (its liveness and in-flight record of them). Past it a
/// newly seen peer is not asked by this fetch: more than `max_peers` distinct peers in one
/// fetch means churn, and the peers already known suffice.
const SLOTS_MAX: usize = 4096;

/// Longest a fetch loop sleeps without looking at the download window again: the window's
/// edges are wall-clock instants, and the wall clock can be stepped while the loop sleeps.
const WALL_CLOCK_RECHECK: Duration = Duration::from_secs(60);

/// Files this node rebuilds from patches at once, over all its fetches: each holds the base
/// file, the patch and the rebuilt file in memory, up to about three times
/// [`protocol::manifest::PATCH_FILE_BYTES_MAX`] (192 MiB), so one at a time keeps a node's
/// memory for patches at that; rebuilding is fast next to fetching the pieces.
pub(crate) const REBUILDS_AT_ONCE: usize = 1;

/// A patch a fetch uses: the patch, and the size and chunks of the file it rebuilds.
struct PatchJob {
    patch: protocol::FilePatch,
    size: u64,
    chunks: Vec<protocol::ChunkRef>,
}

/// A rebuild that ended: the patch (by its place among those used), and the file's chunks
/// or why not.
type Rebuilt = (
    usize,
    Result<Vec<(protocol::ChunkId, Vec<u8>)>, store::patch::RebuildError>,
);

/// One finished request.
struct Done {
    index: u32,
    slot: u32,
    peer: Arc<Peer>,
    result: Result<crate::peer::Fetched, RequestError>,
}

/// Runs the fetch of `release` to completion (or shutdown).
pub(crate) async fn run(net: Arc<Net>, release: Arc<Release>, verified: VerifiedRelease) {
    match fetch(&net, &release, &verified).await {
        Ok(true) => {}
        Ok(false) => tracing::info!(release = %release.id, "fetch paused for shutdown"),
        Err(e) => {
            tracing::error!(release = %release.id, error = %e, "fetch failed");
            release.transition(Transition::Fail(e.to_string()));
        }
    }
    // Whatever ended the fetch, other fetches wait on none of its claims.
    net.unclaim_all(&release.id);
}

/// How a fetch ended its loop.
enum End {
    Verified,
    Superseded(u64),
    Shutdown,
}

async fn fetch(
    net: &Arc<Net>,
    release: &Arc<Release>,
    verified: &VerifiedRelease,
) -> crate::Result<bool> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Done>();
    let (rebuilt_tx, mut rebuilt_rx) = mpsc::unbounded_channel::<Rebuilt>();
    let mut d = Driver::new(net, release, tx, rebuilt_tx);
    d.use_patches(verified).await?;
    let mut wake = net.wake.subscribe();
    let mut stored = net.registry.subscribe_stored();
    let mut shutdown = net.shutdown.clone();
    let end = loop {
        if let Some(end) = d.step() {
            break end;
        }
        // The machine's timers are on the monotonic clock; windows are on the wall clock,
        // which can be stepped: look at them at least every WALL_CLOCK_RECHECK.
        let recheck = d.now() + WALL_CLOCK_RECHECK;
        let deadline = Some(d.epoch + d.fetch.poll_timeout().map_or(recheck, |t| t.min(recheck)));
        tokio::select! {
            Some(done) = rx.recv() => d.answered(done)?,
            Some(rebuilt) = rebuilt_rx.recv() => d.rebuilt(rebuilt)?,
            durable = d.writer.durable.recv() => match durable {
                Some(indices) => d.durable(&indices),
                None => return Err(d.writer.failure().await),
            },
            Ok(()) = wake.changed() => {
                wake.borrow_and_update();
                d.peers_changed();
            }
            notice = stored.recv() => match notice {
                Ok(notice) => d.stored_elsewhere(&notice),
                // Missed notices: those chunks are fetched here too (stored once either way).
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => {}
            },
            () = sleep_until(deadline) => {}
            _ = shutdown.changed() => break End::Shutdown,
        }
        while let Ok(done) = rx.try_recv() {
            d.answered(done)?;
        }
        while let Ok(indices) = d.writer.durable.try_recv() {
            d.durable(&indices);
        }
    };
    match end {
        End::Shutdown => {
            d.writer.finish(None).await?;
            net.unclaim_all(&release.id);
            Ok(false)
        }
        End::Superseded(newer) => {
            d.writer.finish(None).await?;
            net.unclaim_all(&release.id);
            let store = net.store.clone();
            let (id, version) = (release.id, release.version);
            tokio::task::spawn_blocking(move || store.supersede_pending(&id, version)).await??;
            tracing::info!(release = %release.id, newer, "a newer version completed: fetch stopped");
            release.transition(Transition::Supersede(newer));
            Ok(true)
        }
        End::Verified => d.complete(verified).await.map(|()| true),
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}

/// The fetch machine and what it is driven with.
struct Driver<'n> {
    net: &'n Arc<Net>,
    release: &'n Arc<Release>,
    fetch: Fetch,
    writer: Writer,
    /// The machine's time is time since this instant.
    epoch: Instant,
    started: Instant,
    slots: HashMap<PeerId, u32>,
    by_slot: Vec<PeerId>,
    scratch: FetchScratch,
    requests: Vec<Request>,
    /// Designated chunks this node lacked when designated: what WAN peers are asked to
    /// announce ([`Control::Want`]).
    wanted: Bitmap,
    /// Why the last bad answer was bad, for the strike it earns.
    bad: Option<(u32, String)>,
    /// Chunk id to index, built when another fetch first shares chunks with this one.
    index: Option<HashMap<protocol::ChunkId, u32>>,
    tx: mpsc::UnboundedSender<Done>,
    /// The patches this fetch uses, in the machine's numbering.
    patches: Vec<Arc<PatchJob>>,
    /// Patches whose pieces are verified, waiting for them to be durable (the rebuild
    /// reads them from the store).
    to_rebuild: Vec<usize>,
    rebuilt_tx: mpsc::UnboundedSender<Rebuilt>,
}

impl<'n> Driver<'n> {
    fn new(
        net: &'n Arc<Net>,
        release: &'n Arc<Release>,
        tx: mpsc::UnboundedSender<Done>,
        rebuilt_tx: mpsc::UnboundedSender<Rebuilt>,
    ) -> Self {
        let have = lock(&release.have).clone();
        let chunks: Arc<[protocol::ChunkRef]> = release.chunks.clone().into();
        let n = chunks.len() as u32;
        let fetch = Fetch::new(
            FetchConfig::default(),
            net.local.node_id.0,
            chunks,
            have,
            Duration::ZERO,
        );
        Self {
            net,
            release,
            fetch,
            writer: Writer::start(net.store.begin_ingest(), release.chunks.clone()),
            epoch: Instant::now(),
            started: Instant::now(),
            slots: HashMap::new(),
            by_slot: Vec::new(),
            scratch: FetchScratch::default(),
            requests: Vec::new(),
            wanted: Bitmap::new(n),
            bad: None,
            index: None,
            tx,
            patches: Vec::new(),
            to_rebuild: Vec::new(),
            rebuilt_tx,
        }
    }

    /// Chooses the patches to fetch ([`scheduler::patches::choose`]: those whose base file
    /// the store holds) and tells the machine; the pieces of the others are not fetched.
    /// A node configured without patches (`network.patches = false`) takes none.
    async fn use_patches(&mut self, verified: &VerifiedRelease) -> crate::Result<()> {
        let m = &verified.manifest;
        let chunk_units = self.release.chunk_units;
        if m.patches.is_empty() || !self.net.config.patches {
            self.fetch.use_patches(chunk_units, Vec::new());
            return Ok(());
        }
        let (store, v, have) = (
            self.net.store.clone(),
            verified.clone(),
            self.fetch.have().clone(),
        );
        let chosen = tokio::task::spawn_blocking(move || {
            let mut bases: HashMap<ReleaseId, Option<protocol::Manifest>> = HashMap::new();
            scheduler::patches::choose(&v.manifest, &have, |p| {
                let base = bases
                    .entry(p.base)
                    .or_insert_with(|| store.manifest(&p.base).ok().flatten());
                base.as_ref().is_some_and(|b| {
                    b.files()
                        .any(|(path, size, _)| path == p.base_path && size == p.base_size)
                })
            })
        })
        .await?;
        let files: HashMap<&str, (u64, &[protocol::ChunkRef])> =
            m.files().map(|(p, size, c)| (p, (size, c))).collect();
        self.patches = chosen
            .iter()
            .map(|c| {
                let patch = m.patches[c.patch].clone();
                let (size, chunks) = files[patch.path.as_str()];
                Arc::new(PatchJob {
                    patch,
                    size,
                    chunks: chunks.to_vec(),
                })
            })
            .collect();
        if !chosen.is_empty() {
            let bytes: u64 = self.patches.iter().map(|p| p.patch.bytes()).sum();
            tracing::info!(release = %self.release.id, patches = chosen.len(), bytes,
                "fetching patches against earlier versions instead of their files' chunks");
        }
        self.fetch.use_patches(chunk_units, chosen);
        self.events();
        Ok(())
    }

    /// Starts the rebuilds whose pieces are all durable.
    fn start_rebuilds(&mut self) {
        if self.to_rebuild.is_empty() {
            return;
        }
        self.index();
        let ready: Vec<usize> = {
            let index = self.index.as_ref().expect("built above");
            let have = lock(&self.release.have);
            self.to_rebuild
                .iter()
                .copied()
                .filter(|&k| {
                    self.patches[k]
                        .patch
                        .pieces
                        .iter()
                        .all(|p| index.get(&p.id).is_some_and(|&i| have.get(i)))
                })
                .collect()
        };
        self.to_rebuild.retain(|k| !ready.contains(k));
        for k in ready {
            self.rebuild(k);
        }
    }

    /// Rebuilds the file of the `k`th patch used, off the async threads, one node-wide
    /// rebuild at a time ([`REBUILDS_AT_ONCE`]); the result comes back as a [`Rebuilt`].
    fn rebuild(&self, k: usize) {
        let Some(job) = self.patches.get(k).cloned() else {
            return;
        };
        let (store, slots, tx) = (
            self.net.store.clone(),
            self.net.rebuild_slots.clone(),
            self.rebuilt_tx.clone(),
        );
        tokio::spawn(async move {
            let Ok(_permit) = slots.acquire_owned().await else {
                return;
            };
            let result = tokio::task::spawn_blocking(move || {
                store::patch::rebuild(&store, &job.patch, job.size, &job.chunks)
            })
            .await
            .unwrap_or_else(|e| {
                Err(store::patch::RebuildError::Missing(format!(
                    "the rebuild stopped: {e}"
                )))
            });
            let _ = tx.send((k, result));
        });
    }

    /// A rebuild ended: the chunks the patch stood for go to the writer, or, if it failed,
    /// the machine asks for them.
    fn rebuilt(&mut self, (k, result): Rebuilt) -> crate::Result<()> {
        let now = self.now();
        let Some(job) = self.patches.get(k).cloned() else {
            return Ok(());
        };
        match result {
            Ok(chunks) => {
                let covers: std::collections::HashSet<u32> =
                    self.fetch.patch_covers(k).iter().copied().collect();
                let mut bytes = 0u64;
                let mut done = std::collections::HashSet::new();
                for (id, data) in chunks {
                    let Some(&i) = self.index().get(&id) else {
                        continue;
                    };
                    if !covers.contains(&i) || !done.insert(i) {
                        continue;
                    }
                    bytes += data.len() as u64;
                    if !self.writer.put(i, data) {
                        return Err(crate::Error::WriterStopped);
                    }
                }
                self.release.rebuilt.fetch_add(bytes, Ordering::Relaxed);
                self.net.traffic.rebuilds.fetch_add(1, Ordering::Relaxed);
                self.release
                    .patch_bytes
                    .fetch_add(job.patch.bytes(), Ordering::Relaxed);
                tracing::debug!(release = %self.release.id, path = %job.patch.path,
                    base = %job.patch.base, bytes, "file rebuilt from a patch");
                self.fetch.handle_rebuilt(now, k, true);
            }
            Err(e) => {
                tracing::warn!(release = %self.release.id, path = %job.patch.path,
                    base = %job.patch.base, error = %e,
                    "patch did not rebuild the file: fetching its chunks instead");
                self.net
                    .traffic
                    .rebuilds_failed
                    .fetch_add(1, Ordering::Relaxed);
                self.fetch.handle_rebuilt(now, k, false);
            }
        }
        self.events();
        Ok(())
    }

    fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    /// This fetch's slot for `peer`, given now if it has none (`None`: no room).
    fn slot(&mut self, peer: PeerId) -> Option<u32> {
        if let Some(&s) = self.slots.get(&peer) {
            return Some(s);
        }
        if self.by_slot.len() >= SLOTS_MAX {
            return None;
        }
        let s = self.by_slot.len() as u32;
        self.slots.insert(peer, s);
        self.by_slot.push(peer);
        Some(s)
    }

    /// One turn: what the window and the other releases say, the machine's events, and the
    /// requests it wants sent. `Some` when the fetch ends.
    fn step(&mut self) -> Option<End> {
        let now = self.now();
        let superseded = self.net.registry.superseded_by(
            &self.release.channel,
            self.release.version,
            self.release.standing(),
        );
        if let Some(newer) = superseded {
            self.fetch.handle_superseded();
            self.events();
            return Some(End::Superseded(newer));
        }
        let (open, edge) = self.window(now);
        self.fetch.handle_window(now, open, edge);
        self.events();
        self.release.sample_rate();
        if self.fetch.poll_timeout().is_some_and(|t| t <= now) {
            self.poll(now);
        }
        self.events();
        (self.fetch.phase() == Phase::Verified).then_some(End::Verified)
    }

    /// Whether the release may download now, and when that next changes.
    fn window(&self, now: Duration) -> (bool, Option<Duration>) {
        if self.net.gates.is_emergency(self.release) {
            return (true, None);
        }
        let wall = jiff::Timestamp::now();
        let (open, edge) = match self.net.gates.download_state(self.release, wall) {
            scheduler::window::WindowState::Open { closes } => (true, closes),
            scheduler::window::WindowState::Closed { opens } => (false, opens),
        };
        let edge = edge.map(|e| {
            let ahead = e.duration_since(wall).as_nanos().max(0);
            now + Duration::from_nanos(u64::try_from(ahead).unwrap_or(u64::MAX))
        });
        (open, edge)
    }

    /// Something about the peers changed (a connection, a bitmap, an announcement).
    fn peers_changed(&mut self) {
        let now = self.now();
        self.fetch.handle_peers(now, true);
        self.send_wants();
    }

    /// Asks the machine for requests, given the connected peers, and sends them.
    fn poll(&mut self, now: Duration) {
        let net = self.net;
        let peers: Vec<Arc<Peer>> = net
            .peer_list()
            .into_iter()
            .filter(|p| !net.is_banned(&p.id))
            .collect();
        let seen: Vec<(Arc<Peer>, u32, Option<PeerRelease>)> = peers
            .into_iter()
            .filter_map(|p| {
                let slot = self.slot(p.id)?;
                let view = p.release_view(&self.release.id);
                Some((p, slot, view))
            })
            .collect();
        let mut views: Vec<PeerView<'_>> = seen
            .iter()
            .map(|(p, slot, v)| PeerView {
                id: p.node_key,
                slot: *slot,
                same_site: p.class == Class::Lan,
                have: v.as_ref().map(|v| &v.bits),
                in_flight_bytes: p
                    .in_flight_bytes()
                    .saturating_sub(self.fetch.in_flight_to(*slot)),
                budget_bytes: 0,
                usable: true,
                reserve: v.as_ref().is_some_and(|v| v.reserve),
            })
            .collect();
        let running = net.registry.running_fetches_except(&self.release.id);
        // Held from reading the other fetches' claims to making this one's.
        let mut claims = net.registry.claims();
        let elsewhere = if running.is_empty() {
            None
        } else {
            let (release, n) = (self.release, self.release.chunks.len() as u32);
            claims.of_others(&release.id, self.index(), n)
        };
        let mut world = World {
            peers: &mut views,
            lan: None,
            wan_held: None,
            outranked: net
                .gates
                .windows()
                .policy
                .is_outranked(&self.release.urgency, &running),
            elsewhere: elsewhere.as_ref(),
            write_backlog_bytes: self.writer.backlog(),
            designations: None,
            scratch: &mut self.scratch,
        };
        let mut requests = std::mem::take(&mut self.requests);
        self.fetch.poll_requests(now, &mut world, &mut requests);
        drop(views);
        for r in &requests {
            claims.claim(self.release.chunks[r.chunk as usize].id, self.release.id);
        }
        drop(claims);
        let shared = !running.is_empty();
        for r in &requests {
            self.send(seen[r.peer].0.clone(), r, shared);
        }
        self.requests = requests;
    }

    /// The release's chunk ids and their indices.
    fn index(&mut self) -> &HashMap<protocol::ChunkId, u32> {
        let chunks = &self.release.chunks;
        self.index.get_or_insert_with(|| {
            chunks
                .iter()
                .enumerate()
                .map(|(i, c)| (c.id, i as u32))
                .collect()
        })
    }

    /// Another fetch of this node made chunks durable: those this release needs are held.
    fn stored_elsewhere(&mut self, notice: &(ReleaseId, Vec<protocol::ChunkId>)) {
        if notice.0 == self.release.id {
            return;
        }
        let now = self.now();
        let found: Vec<u32> = {
            let index = self.index();
            notice
                .1
                .iter()
                .filter_map(|c| index.get(c).copied())
                .collect()
        };
        let fresh: Vec<u32> = found
            .into_iter()
            .filter(|&i| self.fetch.handle_held(now, i))
            .collect();
        if !fresh.is_empty() {
            let bytes: u64 = fresh
                .iter()
                .map(|&i| u64::from(self.release.chunks[i as usize].len))
                .sum();
            self.release.reused.fetch_add(bytes, Ordering::Relaxed);
            advertise(self.net, self.release, &fresh);
        }
        self.events();
    }

    /// Sends one request in a task of its own; its answer comes back as a [`Done`]. `shared`:
    /// other fetches run, and the budget the answer frees at the peer may let them go on.
    fn send(&self, peer: Arc<Peer>, r: &Request, shared: bool) {
        let chunk = self.release.chunks[r.chunk as usize];
        peer.add_in_flight(u64::from(chunk.len));
        let release = self.release.id;
        let (tx, net, index, slot) = (self.tx.clone(), self.net.clone(), r.chunk, r.slot);
        tokio::spawn(async move {
            // Ask only for what the ingress rate allows (see `shape`).
            net.shapers
                .acquire(
                    peer.class,
                    super::shape::Direction::Ingress,
                    u64::from(chunk.len),
                )
                .await;
            let result = peer.request_chunk(chunk.id, chunk.len).await;
            peer.sub_in_flight(u64::from(chunk.len));
            if let Ok(f) = &result {
                // Reserved at the chunk's length; what compression kept off the link is
                // the next request's.
                net.shapers.refund(
                    peer.class,
                    super::shape::Direction::Ingress,
                    u64::from(chunk.len).saturating_sub(f.wire),
                );
            }
            // A chunk that came stays claimed until it is stored (`Driver::durable`).
            if result.is_err() {
                net.registry.unclaim(&chunk.id, &release);
            }
            if shared {
                net.wake.notify();
            }
            let _ = tx.send(Done {
                index,
                slot,
                peer,
                result,
            });
        });
    }

    /// Reports a finished request to the machine; keeps the chunk if it is new.
    fn answered(&mut self, done: Done) -> crate::Result<()> {
        let net = self.net;
        let class = done.peer.class;
        let (answer, bytes) = match done.result {
            Ok(f) => {
                net.traffic.add_recv(class, f.wire);
                let saved = (f.bytes.len() as u64).saturating_sub(f.wire);
                net.traffic.recv_saved.fetch_add(saved, Ordering::Relaxed);
                match class {
                    Class::Lan => &self.release.wire_lan,
                    Class::Wan => &self.release.wire_wan,
                }
                .fetch_add(f.wire, Ordering::Relaxed);
                (Answer::Delivered, Some(f.bytes))
            }
            Err(e @ (RequestError::BadChunk | RequestError::Protocol(_))) => {
                net.traffic.chunks_failed.fetch_add(1, Ordering::Relaxed);
                let why = match e {
                    RequestError::BadChunk => "sent a chunk that does not match its id".into(),
                    other => other.to_string(),
                };
                self.bad = Some((done.slot, why));
                (Answer::Bad, None)
            }
            Err(RequestError::NotFound) => {
                done.peer.forget_chunk(&self.release.id, done.index);
                (Answer::NotFound, None)
            }
            Err(RequestError::Busy) => (Answer::Busy, None),
            Err(RequestError::Timeout) => (Answer::Timeout, None),
            Err(e @ RequestError::Transport(_)) => {
                tracing::debug!(peer = %done.peer.id, error = %e, "chunk request failed");
                (Answer::Failed, None)
            }
        };
        let now = self.now();
        let fresh = self.fetch.handle_answer(now, done.slot, done.index, answer);
        if !fresh && bytes.is_some() {
            // A duplicate: the claim, if it is this fetch's, was for the copy kept.
            let id = self.release.chunks[done.index as usize].id;
            if !self.fetch.have().get(done.index) {
                net.registry.unclaim(&id, &self.release.id);
            }
        }
        if let (true, Some(bytes)) = (fresh, bytes) {
            let len = bytes.len() as u64;
            if !self.writer.put(done.index, bytes) {
                return Err(crate::Error::WriterStopped);
            }
            net.traffic.chunks_verified.fetch_add(1, Ordering::Relaxed);
            match class {
                Class::Lan => self.release.from_lan.fetch_add(len, Ordering::Relaxed),
                Class::Wan => self.release.from_wan.fetch_add(len, Ordering::Relaxed),
            };
        }
        self.events();
        Ok(())
    }

    /// Chunks the writer made durable: now in the bitmap peers see, and announced; and
    /// held for any other fetch that needs them.
    fn durable(&mut self, indices: &[u32]) {
        advertise(self.net, self.release, indices);
        let chunks = &self.release.chunks;
        self.net.registry.unclaim_stored(
            indices.iter().map(|&i| &chunks[i as usize].id),
            &self.release.id,
        );
        if self.net.registry.others_listen() {
            let ids = indices
                .iter()
                .map(|&i| self.release.chunks[i as usize].id)
                .collect();
            self.net.registry.announce_stored(self.release.id, ids);
        }
        let now = self.now();
        self.fetch.handle_durable(now);
        self.start_rebuilds();
    }

    /// Acts on what the machine asks.
    fn events(&mut self) {
        while let Some(e) = self.fetch.poll_event() {
            match e {
                Event::Designated => {
                    let mut wanted = Bitmap::new(self.fetch.have().len());
                    for i in self.fetch.designated().ones_and_not(self.fetch.have()) {
                        wanted.set(i);
                    }
                    self.wanted = wanted;
                    self.send_wants();
                }
                Event::Paused { .. } => {
                    tracing::info!(release = %self.release.id, "paused: outside the download window");
                    self.release.transition(Transition::Pause);
                }
                Event::Resumed => {
                    tracing::info!(release = %self.release.id, "download window open: resuming");
                    self.release.transition(Transition::Resume);
                }
                Event::Snubbed {
                    slot,
                    until,
                    reason,
                } => {
                    let peer = self.by_slot.get(slot as usize);
                    let for_s = until.saturating_sub(self.now()).as_secs();
                    tracing::warn!(release = %self.release.id, peer = ?peer, ?reason, for_s,
                        "same-site peer snubbed: its chunks are asked elsewhere");
                }
                Event::Strike { slot } => {
                    let why = match self.bad.take() {
                        Some((s, why)) if s == slot => why,
                        _ => "sent a bad chunk".to_string(),
                    };
                    if let Some(peer) = self.by_slot.get(slot as usize) {
                        self.net.strike(peer, &why);
                    }
                }
                Event::Rebuild { k } => {
                    self.to_rebuild.push(k);
                    self.start_rebuilds();
                }
                Event::Verified | Event::Superseded => {}
            }
        }
    }

    /// Asks the peers of other sites that offered the release to announce the designated
    /// chunks this node lacks, those not asked of them yet.
    fn send_wants(&self) {
        for p in self
            .net
            .peer_list()
            .iter()
            .filter(|p| p.class == Class::Wan)
        {
            let Some(slot) = p.their_slot(&self.release.id) else {
                continue;
            };
            let more = p.new_wants(self.release.id, &self.wanted);
            if !more.is_empty() {
                p.send_control(Control::want(slot, more));
            }
        }
    }

    /// Every chunk is verified: peers of other sites need announce nothing more, the rest
    /// becomes durable, and the release is committed.
    async fn complete(mut self, verified: &VerifiedRelease) -> crate::Result<()> {
        let (net, release) = (self.net, self.release);
        for p in net.peer_list().iter().filter(|p| p.class == Class::Wan) {
            if let Some(slot) = p.their_slot(&release.id) {
                if p.take_wanted(&release.id) {
                    p.send_control(Control::want(slot, []));
                }
            }
        }
        self.writer.finish(Some(verified.clone())).await?;
        while let Ok(indices) = self.writer.durable.try_recv() {
            self.durable(&indices);
        }
        net.unclaim_all(&release.id);
        release.transition(Transition::Complete);
        *lock(&release.finished) = Some(Instant::now());
        net.registry.completed().notify_one();
        tracing::info!(release = %release.id, channel = %release.channel, version = release.version,
            from_lan = release.from_lan.load(Ordering::Relaxed),
            from_wan = release.from_wan.load(Ordering::Relaxed),
            seconds = self.started.elapsed().as_secs_f64(), "release complete");
        Ok(())
    }
}

/// Chunks the writer made durable: now they are in the bitmap peers see, and announced.
fn advertise(net: &Net, release: &Release, indices: &[u32]) {
    {
        let mut have = lock(&release.have);
        for &i in indices {
            have.set(i);
        }
    }
    send_haves(net, release, indices);
}

/// What the fetch loop tells the writer.
enum ToWriter {
    /// Append verified chunk `index` (of the release's unique chunks) to the pack.
    Chunk(u32, Vec<u8>),
    /// Make everything durable and stop; with a release, commit it.
    Finish(Option<Box<VerifiedRelease>>),
}

/// The store side of a fetch: a blocking task that owns the ingest session, appends chunks,
/// checkpoints, and reports which chunks became durable.
struct Writer {
    tx: Option<std::sync::mpsc::Sender<ToWriter>>,
    /// Indices made durable by each checkpoint.
    durable: mpsc::UnboundedReceiver<Vec<u32>>,
    backlog: Arc<std::sync::atomic::AtomicU64>,
    task: Option<tokio::task::JoinHandle<crate::Result<()>>>,
}

impl Writer {
    fn start(session: store::IngestSession, chunks: Vec<protocol::ChunkRef>) -> Self {
        let (tx, rx) = std::sync::mpsc::channel();
        let (durable_tx, durable) = mpsc::unbounded_channel();
        let backlog = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let queued = backlog.clone();
        let task = tokio::task::spawn_blocking(move || {
            write_loop(session, &chunks, &rx, &durable_tx, &queued)
        });
        Self {
            tx: Some(tx),
            durable,
            backlog,
            task: Some(task),
        }
    }

    /// Bytes handed over and not yet written.
    fn backlog(&self) -> u64 {
        self.backlog.load(Ordering::Relaxed)
    }

    /// Hands a verified chunk over; false if the writer has stopped (on an error).
    fn put(&mut self, index: u32, bytes: Vec<u8>) -> bool {
        self.backlog
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        self.tx
            .as_ref()
            .is_some_and(|tx| tx.send(ToWriter::Chunk(index, bytes)).is_ok())
    }

    /// Makes everything durable (committing `release` if given) and waits for the writer.
    async fn finish(&mut self, release: Option<VerifiedRelease>) -> crate::Result<()> {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(ToWriter::Finish(release.map(Box::new)));
        }
        match self.task.take() {
            Some(task) => task.await?,
            None => Ok(()),
        }
    }

    /// The writer's error, once it has stopped on one.
    async fn failure(&mut self) -> crate::Error {
        self.tx = None;
        match self.task.take() {
            Some(task) => match task.await {
                Ok(Err(e)) => e,
                Ok(Ok(())) => crate::Error::WriterStopped,
                Err(e) => e.into(),
            },
            None => crate::Error::WriterStopped,
        }
    }
}

/// The writer's loop: appends chunks, and checkpoints when [`scheduler::fetch::Checkpoint`]
/// says so.
fn write_loop(
    mut session: store::IngestSession,
    chunks: &[protocol::ChunkRef],
    rx: &std::sync::mpsc::Receiver<ToWriter>,
    durable: &mpsc::UnboundedSender<Vec<u32>>,
    backlog: &std::sync::atomic::AtomicU64,
) -> crate::Result<()> {
    use std::sync::mpsc::RecvTimeoutError;
    let start = Instant::now();
    let mut staged: Vec<u32> = Vec::new();
    let mut checkpoint = scheduler::fetch::Checkpoint::default();
    loop {
        let wait = checkpoint.due().map_or(Duration::from_secs(3600), |d| {
            d.saturating_sub(start.elapsed())
        });
        match rx.recv_timeout(wait) {
            Ok(ToWriter::Chunk(index, bytes)) => {
                let len = bytes.len() as u64;
                let id = chunks[index as usize].id;
                let result = session.put_chunk(id, &bytes);
                backlog.fetch_sub(len, Ordering::Relaxed);
                result?;
                staged.push(index);
                checkpoint.stage(start.elapsed(), len, false);
            }
            Ok(ToWriter::Finish(release)) => {
                match release {
                    Some(v) => {
                        session.audit_on_commit(store::audit::AuditEvent::completed(&v));
                        session.commit(Some(&v), now_unix_s())?
                    }
                    None => session.checkpoint()?,
                }
                if !staged.is_empty() {
                    let _ = durable.send(staged);
                }
                return Ok(());
            }
            Err(RecvTimeoutError::Timeout) => {}
            // The fetch loop is gone without a word (it failed): keep what is verified.
            Err(RecvTimeoutError::Disconnected) => {
                session.checkpoint()?;
                return Ok(());
            }
        }
        if checkpoint.due().is_some_and(|d| d <= start.elapsed()) {
            session.checkpoint()?;
            let _ = durable.send(std::mem::take(&mut staged));
            checkpoint.taken();
        }
    }
}

/// Announces durable chunks: to same-site peers at once (those they do not say they have),
/// to peers of other sites those they want, in batches ([`Net::queue_wan_haves`]).
fn send_haves(net: &Net, release: &Release, indices: &[u32]) {
    for p in net.peer_list().iter().filter(|p| p.class == Class::Lan) {
        // A peer that said it has a chunk will not ask for it: only the rest.
        let news = p.lacks(&release.id, indices);
        if !news.is_empty() {
            p.send_have(release.id, &news);
        }
    }
    net.queue_wan_haves(release, indices);
}
