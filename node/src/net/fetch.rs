//! Fetching one verified release: the loop that asks the [`scheduler::planner`] what to request,
//! sends the requests, verifies and stores what comes back, and tells peers what it now has.
//!
//! Durability: verified chunks go to a writer (a blocking task that owns the store session),
//! which appends them to a pack and makes them durable by a checkpoint every
//! [`CHECKPOINT_BYTES`] or [`CHECKPOINT_INTERVAL`]; only then are they advertised to peers.
//! The network side never waits for the disk unless the writer is [`WRITE_BACKLOG_BYTES`]
//! behind. A crash loses at most the chunks since the last checkpoint; a restart finds the
//! release in the store's pending table and every checkpointed chunk in its index, so
//! verified chunks are never fetched twice. The last checkpoint commits the release itself.

use super::peer::{Peer, RequestError};
use super::{Class, Net, Release, ReleaseState, lock, now_unix_s};
use protocol::VerifiedRelease;
use protocol::wire::Control;
use scheduler::planner::{
    self, Availability, InFlightSet, PeerView, PlanInput, PlanScratch, PlannerConfig,
};
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Staged bytes that trigger a checkpoint: bounds what a crash can lose and how long a chunk
/// waits before peers can fetch it from us.
pub const CHECKPOINT_BYTES: u64 = 32 << 20;

/// Longest a received chunk waits for its checkpoint.
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(250);

/// Verified chunk bytes waiting for the writer. Past it no new request is sent until the
/// disk catches up: this bounds memory when the disk is slower than the network.
pub const WRITE_BACKLOG_BYTES: u64 = 32 << 20;

/// Bytes in flight to one same-site peer: a LAN bandwidth-delay product with room to spare
/// (1 Gbit/s × 20 ms ≈ 2.5 MB).
pub const LAN_IN_FLIGHT_BYTES: u64 = 8 << 20;

/// Bytes in flight to one peer of another site. Smaller than the LAN budget: WAN peers are
/// slow, and a long queue at one of them only delays chunks another could serve.
pub const WAN_IN_FLIGHT_BYTES: u64 = 2 << 20;

/// Re-plan at least this often even when nothing happened (stalls, timeouts).
const PLAN_TICK: Duration = Duration::from_millis(100);

/// Peers' announcements of new chunks cause at most one plan per this interval: in a site of
/// 50 members each announcing four times a second, a plan per announcement would be 200
/// plans a second that mostly find nothing new. A finished request that leaves a busy peer
/// room plans at once; this only paces the announcements.
pub const PLAN_COALESCE: Duration = Duration::from_millis(50);

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
    // Verified and handed to the writer (not necessarily durable yet).
    let mut got = lock(&release.have).clone();
    let mut writer = Writer::start(net.store.begin_ingest(), release.chunks.clone());
    let mut in_flight: InFlightSet = InFlightSet::new(chunks.len() as u32);
    let (tx, mut rx) = mpsc::unbounded_channel::<Done>();
    let mut shutdown = net.shutdown.clone();
    let epoch = Instant::now();
    let started = Instant::now();
    let me = net.local.node_id.0;
    let config = PlannerConfig::default();
    // The chunks rendezvous hashing names this node for and, of those, the ones it lacked
    // then, kept until the member set changes.
    let mut designation: Option<(
        Vec<[u8; 32]>,
        protocol::wire::Bitmap,
        protocol::wire::Bitmap,
    )> = None;

    // Whether something happened that can change the plan. A finished request only counts
    // when its peer was filled to within a quarter of its budget by the last plan and now
    // has a quarter free (`starved`): otherwise the plan had nothing more for that peer, and
    // planning after every chunk would cost as much CPU as receiving them. Announcements
    // (`net.wake`) plan at most every PLAN_COALESCE.
    let mut replan = true;
    let mut starved: HashSet<[u8; 32]> = HashSet::new();
    let mut announced = false;
    let mut last_plan = Instant::now();
    // When a request to a WAN peer other than a reserve (the origin after seeding) was last
    // out: the planner asks the reserve only after a while without one.
    let mut wan_busy = Instant::now();
    // The planner's buffers and answer, kept from one pass to the next.
    let mut scratch = PlanScratch::default();
    let mut assignments = Vec::new();
    loop {
        if got.is_full() {
            // Any duplicate (endgame) requests still out are not needed; their tasks end on
            // their own and release their peers' in-flight budget.
            break;
        }
        tokio::select! {
            Some(done) = rx.recv() => {
                match handle(net, release, &mut writer, &mut got, &mut in_flight, &mut starved, done) {
                    Handled::Replan => replan = true,
                    Handled::Wait => {}
                    Handled::WriterGone => return Err(writer.failure().await),
                }
            }
            durable = writer.durable.recv() => match durable {
                Some(indices) => {
                    advertise(net, release, &indices);
                    replan = true;
                }
                None => return Err(writer.failure().await),
            },
            () = net.wake.notified() => announced = true,
            () = tokio::time::sleep(if announced {
                PLAN_COALESCE.saturating_sub(last_plan.elapsed())
            } else {
                PLAN_TICK
            }) => replan = !announced,
            _ = shutdown.changed() => {
                writer.finish(None).await?;
                return Ok(false);
            }
        }
        while let Ok(done) = rx.try_recv() {
            match handle(
                net,
                release,
                &mut writer,
                &mut got,
                &mut in_flight,
                &mut starved,
                done,
            ) {
                Handled::Replan => replan = true,
                Handled::Wait => {}
                Handled::WriterGone => return Err(writer.failure().await),
            }
        }
        while let Ok(indices) = writer.durable.try_recv() {
            advertise(net, release, &indices);
        }
        release.sample_rate();
        if announced && last_plan.elapsed() >= PLAN_COALESCE {
            replan = true;
        }
        if !replan || got.is_full() || writer.backlog() >= WRITE_BACKLOG_BYTES {
            continue;
        }
        if let Some(newer) = net.newer_complete(release) {
            writer.finish(None).await?;
            let store = net.store.clone();
            let id = release.id;
            tokio::task::spawn_blocking(move || store.remove_pending(&id)).await??;
            tracing::info!(release = %release.id, newer, "a newer version completed: fetch stopped");
            *lock(&release.state) = ReleaseState::Superseded(newer);
            return Ok(true);
        }
        // Outside the download window nothing new is requested (what is in flight lands and
        // stays); the tick re-checks.
        if !net.download_allowed(release) {
            let mut state = lock(&release.state);
            if *state == ReleaseState::Fetching {
                tracing::info!(release = %release.id, "paused: outside the download window");
                *state = ReleaseState::Paused;
            }
            continue;
        }
        {
            let mut state = lock(&release.state);
            if *state == ReleaseState::Paused {
                tracing::info!(release = %release.id, "download window open: resuming");
                *state = ReleaseState::Fetching;
            }
        }
        replan = false;
        announced = false;
        last_plan = Instant::now();

        // Plan. A fetch outranked by a running one keeps a small share of each peer's budget.
        let running = net.running_fetches_except(&release.id);
        let policy = net.windows.policy;
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
                budget_bytes: policy.budget_for(budget(p.class), &release.urgency, &running),
                usable: true,
                reserve: v.as_ref().is_some_and(|v| v.reserve),
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
        members.sort_unstable();
        if designation.as_ref().is_none_or(|(m, _, _)| *m != members) {
            let mine = planner::designated_chunks(&me, &members, chunks);
            // What this node fetches across the WAN and lacks: peers of other sites announce
            // only that to it.
            let mut wanted = mine.clone();
            for i in got.ones() {
                wanted.clear(i);
            }
            designation = Some((members, mine, wanted));
        }
        let (_, designated, wanted) = designation.as_ref().expect("just set");
        // Only peers that offered the release: another hears of it when it does (and this
        // loop plans again then).
        for (p, _) in peers
            .iter()
            .zip(&views)
            .filter(|(p, v)| p.class == Class::Wan && v.is_some())
        {
            let Some(slot) = p.their_slot(&release.id) else {
                continue;
            };
            let more = p.new_wants(release.id, wanted);
            if !more.is_empty() {
                p.send_control(Control::want(slot, more));
            }
        }
        let lan = Availability::from_bitmaps(
            chunks.len() as u32,
            peers
                .iter()
                .zip(&views)
                .filter(|(p, _)| p.class == Class::Lan)
                .filter_map(|(_, v)| v.as_ref().map(|v| &v.bits)),
        );
        if planner_peers
            .iter()
            .any(|v| !v.same_site && !v.reserve && v.in_flight_bytes > 0)
        {
            wan_busy = Instant::now();
        }
        let input = PlanInput {
            me,
            chunks,
            have: &got,
            in_flight: &in_flight,
            peers: &planner_peers,
            lan: &lan,
            lan_extra: &[],
            designated,
            now_ms: epoch.elapsed().as_millis() as u64,
            wan_idle_ms: wan_busy.elapsed().as_millis() as u64,
            plan_wan: true,
            wan_held: None,
        };
        planner::plan_with(&input, &config, &mut scratch, &mut assignments);
        let now_ms = epoch.elapsed().as_millis() as u64;
        // Peers this plan leaves with less than a quarter of their budget: a finished request
        // from one of them plans again.
        let mut assigned = vec![0u64; peers.len()];
        for a in &assignments {
            assigned[a.peer] += u64::from(chunks[a.chunk as usize].len);
        }
        for (k, v) in planner_peers.iter().enumerate() {
            if v.budget_bytes
                .saturating_sub(v.in_flight_bytes + assigned[k])
                < v.budget_bytes / 4
            {
                starved.insert(v.id);
            }
        }
        for a in assignments.drain(..) {
            let peer = peers[a.peer].clone();
            let chunk = chunks[a.chunk as usize];
            in_flight.request(a.chunk, peer.node_key, now_ms);
            peer.add_in_flight(u64::from(chunk.len));
            let tx = tx.clone();
            let net = net.clone();
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
                let _ = tx.send(Done {
                    index: a.chunk,
                    peer,
                    result,
                });
            });
        }
    }

    // Every chunk is verified: peers of other sites need announce nothing more to this node.
    for p in net.peer_list().iter().filter(|p| p.class == Class::Wan) {
        if let Some(slot) = p.their_slot(&release.id) {
            if p.take_wanted(&release.id) {
                p.send_control(Control::want(slot, []));
            }
        }
    }
    // Make the rest durable and commit the release.
    writer.finish(Some(verified.clone())).await?;
    while let Ok(indices) = writer.durable.try_recv() {
        advertise(net, release, &indices);
    }
    *lock(&release.state) = ReleaseState::Complete;
    *lock(&release.finished) = Some(Instant::now());
    net.completed.notify_one();
    tracing::info!(release = %release.id, channel = %release.channel, version = release.version,
        from_lan = release.from_lan.load(Ordering::Relaxed),
        from_wan = release.from_wan.load(Ordering::Relaxed),
        seconds = started.elapsed().as_secs_f64(), "release complete");
    Ok(true)
}

/// Bytes that may be in flight to one peer of `class`.
fn budget(class: Class) -> u64 {
    match class {
        Class::Lan => LAN_IN_FLIGHT_BYTES,
        Class::Wan => WAN_IN_FLIGHT_BYTES,
    }
}

/// What a finished request means for the fetch loop.
enum Handled {
    /// Plan again: the chunk must be asked elsewhere, or the peer has room for more.
    Replan,
    /// Nothing to plan yet.
    Wait,
    /// The writer stopped on an error: the fetch must stop.
    WriterGone,
}

/// Accounts for one finished request.
fn handle(
    net: &Arc<Net>,
    release: &Arc<Release>,
    writer: &mut Writer,
    got: &mut protocol::wire::Bitmap,
    in_flight: &mut InFlightSet,
    starved: &mut HashSet<[u8; 32]>,
    done: Done,
) -> Handled {
    let room = budget(done.peer.class).saturating_sub(done.peer.in_flight_bytes());
    let refill = if room >= budget(done.peer.class) / 4 && starved.remove(&done.peer.node_key) {
        Handled::Replan
    } else {
        Handled::Wait
    };
    in_flight.answered(done.index, &done.peer.node_key);
    match done.result {
        Ok(bytes) => {
            let class = done.peer.class;
            let len = bytes.len() as u64;
            net.traffic.add_recv(class, len);
            if got.get(done.index) {
                return refill; // the other endgame request won
            }
            in_flight.remove(done.index);
            if !writer.put(done.index, bytes) {
                return Handled::WriterGone;
            }
            got.set(done.index);
            net.traffic.chunks_verified.fetch_add(1, Ordering::Relaxed);
            match class {
                Class::Lan => release.from_lan.fetch_add(len, Ordering::Relaxed),
                Class::Wan => release.from_wan.fetch_add(len, Ordering::Relaxed),
            };
            return refill;
        }
        Err(RequestError::BadChunk) => {
            net.traffic.chunks_failed.fetch_add(1, Ordering::Relaxed);
            net.strike(&done.peer.id, "sent a chunk that does not match its id");
        }
        Err(RequestError::Protocol(e)) => {
            net.traffic.chunks_failed.fetch_add(1, Ordering::Relaxed);
            net.strike(&done.peer.id, &e);
        }
        Err(RequestError::NotFound) => {
            done.peer.forget_chunk(&release.id, done.index);
        }
        Err(e) => {
            tracing::debug!(peer = %done.peer.id, error = %e, "chunk request failed");
        }
    }
    // The chunk must be asked again, elsewhere or later.
    Handled::Replan
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
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Writer {
    fn start(session: crate::store::IngestSession, chunks: Vec<protocol::ChunkRef>) -> Self {
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
    async fn finish(&mut self, release: Option<VerifiedRelease>) -> anyhow::Result<()> {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(ToWriter::Finish(release.map(Box::new)));
        }
        match self.task.take() {
            Some(task) => task.await?,
            None => Ok(()),
        }
    }

    /// The writer's error, once it has stopped on one.
    async fn failure(&mut self) -> anyhow::Error {
        self.tx = None;
        match self.task.take() {
            Some(task) => match task.await {
                Ok(Err(e)) => e,
                Ok(Ok(())) => anyhow::anyhow!("the store writer stopped"),
                Err(e) => e.into(),
            },
            None => anyhow::anyhow!("the store writer stopped"),
        }
    }
}

fn write_loop(
    mut session: crate::store::IngestSession,
    chunks: &[protocol::ChunkRef],
    rx: &std::sync::mpsc::Receiver<ToWriter>,
    durable: &mpsc::UnboundedSender<Vec<u32>>,
    backlog: &std::sync::atomic::AtomicU64,
) -> anyhow::Result<()> {
    use std::sync::mpsc::RecvTimeoutError;
    let mut staged: Vec<u32> = Vec::new();
    let mut staged_bytes = 0u64;
    let mut last_checkpoint = Instant::now();
    loop {
        let wait = if staged.is_empty() {
            Duration::from_secs(3600)
        } else {
            CHECKPOINT_INTERVAL.saturating_sub(last_checkpoint.elapsed())
        };
        match rx.recv_timeout(wait) {
            Ok(ToWriter::Chunk(index, bytes)) => {
                let len = bytes.len() as u64;
                let id = chunks[index as usize].id;
                let result = session.put_chunk(id, &bytes);
                backlog.fetch_sub(len, Ordering::Relaxed);
                result?;
                staged.push(index);
                staged_bytes += len;
            }
            Ok(ToWriter::Finish(release)) => {
                match release {
                    Some(v) => {
                        session.audit_on_commit(crate::audit::AuditEvent::completed(&v));
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
        if staged_bytes >= CHECKPOINT_BYTES
            || (!staged.is_empty() && last_checkpoint.elapsed() >= CHECKPOINT_INTERVAL)
        {
            session.checkpoint()?;
            let _ = durable.send(std::mem::take(&mut staged));
            staged_bytes = 0;
            last_checkpoint = Instant::now();
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
