//! Bandwidth shaping of the data plane: every chunk byte sent or received passes the shaper
//! of its class ([`scheduler::shaper`]) and the `total` shaper.
//!
//! * Sending: a chunk is written to a peer only as its class's egress shaper grants it.
//! * Receiving: bytes cannot be refused once they arrive, so a chunk request is sent only
//!   once the ingress shaper has granted the chunk's length: a node never asks for more
//!   than its ingress rate, which is what keeps the link below it.
//!
//! LAN ingress is not shaped on its own (a LAN sender's egress already is); `total` covers
//! it. Waiting never spins: the class's [`Gate`] (the arithmetic the simulator runs too)
//! says when the bytes pass, and the task sleeps until then.
//!
//! Waiters are served first come, first served: a gate reserves the bytes behind everything
//! asked before. Without the queue a large request would starve: a token bucket refills a
//! little at a time, and small requests arriving meanwhile would take every refill before
//! the bucket ever held enough for the large one. First come, first served also makes the
//! order in which fetches plan their requests (urgent releases first, see
//! [`scheduler::priority`]) the order in which the link carries them.

use jiff::Timestamp;
use protocol::wire::ControlKind;
use scheduler::policy::RateSchedules;
use scheduler::shaper::Gate;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub use scheduler::shaper::{RECHECK, WIRE_OVERHEAD_DIVISOR};

/// How long a transfer whose class is at rate 0 with no opening in sight waits before it
/// asks again.
const BLOCKED_RETRY: Duration = Duration::from_secs(60);

/// Direction of a transfer, from this node's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Bytes this node receives.
    Ingress,
    /// Bytes this node sends.
    Egress,
}

/// The node's shapers: one [`Gate`] per class, on the clock of `epoch`.
pub struct Shapers {
    /// `[shaping] enabled`; changed by [`Shapers::reschedule`].
    enabled: std::sync::atomic::AtomicBool,
    epoch: Instant,
    wan_ingress: Mutex<Gate>,
    wan_egress: Mutex<Gate>,
    lan_egress: Mutex<Gate>,
    total: Mutex<Gate>,
    /// Nanoseconds transfers spent waiting for tokens, by [`Shapers::wait_index`].
    waited_ns: [std::sync::atomic::AtomicU64; 4],
}

impl Shapers {
    /// Shapers for `schedules`, starting now.
    pub fn new(schedules: RateSchedules) -> Self {
        let now = Timestamp::now();
        let make = |s| Mutex::new(Gate::new(s, now));
        Self {
            enabled: std::sync::atomic::AtomicBool::new(schedules.enabled),
            epoch: Instant::now(),
            wan_ingress: make(schedules.wan_ingress),
            wan_egress: make(schedules.wan_egress),
            lan_egress: make(schedules.lan_egress),
            total: make(schedules.total),
            waited_ns: Default::default(),
        }
    }

    fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// Replaces the schedules (`[shaping]` read again on SIGHUP). Each class starts a new
    /// gate on the same clock: transfers already granted keep their turn, the next ones are
    /// shaped at the new rates.
    pub fn reschedule(&self, schedules: RateSchedules) {
        let now = Timestamp::now();
        for (gate, schedule) in [
            (&self.wan_ingress, schedules.wan_ingress),
            (&self.wan_egress, schedules.wan_egress),
            (&self.lan_egress, schedules.lan_egress),
            (&self.total, schedules.total),
        ] {
            *super::lock(gate) = Gate::new(schedule, now);
        }
        self.enabled.store(schedules.enabled, Ordering::Relaxed);
    }

    fn wait_index(class: Class, direction: Direction) -> usize {
        match (class, direction) {
            (Class::Lan, Direction::Ingress) => 0,
            (Class::Lan, Direction::Egress) => 1,
            (Class::Wan, Direction::Ingress) => 2,
            (Class::Wan, Direction::Egress) => 3,
        }
    }

    /// Seconds transfers of `class` in `direction` have waited for the shapers since start.
    pub fn waited_s(&self, class: Class, direction: Direction) -> f64 {
        let ns = self.waited_ns[Self::wait_index(class, direction)]
            .load(std::sync::atomic::Ordering::Relaxed);
        ns as f64 / 1e9
    }

    /// Waits until `bytes` of `class` traffic in `direction` may pass: the class's own gate
    /// (if it has one) and `total` reserve them in turn, and the task sleeps until then.
    pub async fn acquire(&self, class: Class, direction: Direction, bytes: u64) {
        if !self.enabled() {
            return;
        }
        let bytes = scheduler::shaper::on_wire(bytes);
        let start = Instant::now();
        loop {
            let at = self.epoch.elapsed();
            let wall = Timestamp::now();
            let own = match self.gate(class, direction) {
                Some(g) => super::lock(g).take(at, wall, bytes),
                None => Some(at),
            };
            let pass = own.and_then(|t| {
                let ahead =
                    jiff::SignedDuration::try_from(t.saturating_sub(at)).unwrap_or_default();
                let wall_t = wall.checked_add(ahead).unwrap_or(wall);
                super::lock(&self.total).take(t, wall_t, bytes)
            });
            match pass {
                // Granted now: no timer, no yield (the common case at unlimited rates).
                Some(t) if t <= at => break,
                Some(t) => {
                    tokio::time::sleep_until((self.epoch + t).into()).await;
                    break;
                }
                None => tokio::time::sleep(BLOCKED_RETRY).await,
            }
        }
        let waited = start.elapsed().as_nanos().min(u128::from(u64::MAX)) as u64;
        if waited > 0 {
            self.waited_ns[Self::wait_index(class, direction)]
                .fetch_add(waited, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Counts `bytes` of control messages of `class` in `direction` against the budget
    /// without waiting: a control message never queues behind chunks, and the next chunk of
    /// the class waits for its bytes instead.
    pub fn charge(&self, class: Class, direction: Direction, bytes: u64) {
        if !self.enabled() {
            return;
        }
        if let Some(gate) = self.gate(class, direction) {
            super::lock(gate).charge(bytes);
        }
        super::lock(&self.total).charge(bytes);
    }

    /// Gives back `bytes` of what an [`Shapers::acquire`] of `class` in `direction` took
    /// and the wire did not carry (a chunk reserved at its length that moved compressed):
    /// the next transfers through the gates pass that much sooner.
    pub fn refund(&self, class: Class, direction: Direction, bytes: u64) {
        if !self.enabled() || bytes == 0 {
            return;
        }
        let bytes = scheduler::shaper::on_wire(bytes);
        if let Some(gate) = self.gate(class, direction) {
            super::lock(gate).refund(bytes);
        }
        super::lock(&self.total).refund(bytes);
    }

    fn gate(&self, class: Class, direction: Direction) -> Option<&Mutex<Gate>> {
        match (class, direction) {
            (Class::Wan, Direction::Ingress) => Some(&self.wan_ingress),
            (Class::Wan, Direction::Egress) => Some(&self.wan_egress),
            (Class::Lan, Direction::Egress) => Some(&self.lan_egress),
            (Class::Lan, Direction::Ingress) => None,
        }
    }

    /// Each class's name, rate at `now` and next change.
    pub fn rates(
        &self,
        now: Timestamp,
    ) -> [(&'static str, scheduler::rate::Rate, Option<Timestamp>); 4] {
        [
            ("wan_ingress", &self.wan_ingress),
            ("wan_egress", &self.wan_egress),
            ("lan_egress", &self.lan_egress),
            ("total", &self.total),
        ]
        .map(|(name, g)| {
            let g = super::lock(g);
            let schedule = g.shaper().schedule();
            (name, schedule.rate_at(now), schedule.next_change(now))
        })
    }
}

/// A traffic class: same site or another site.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Same site.
    Lan,
    /// Another site.
    Wan,
}

/// Byte counters by class and direction.
#[derive(Debug, Default)]
pub struct Traffic {
    /// Chunk bytes received from same-site peers, as they crossed the wire (compressed
    /// where they moved compressed).
    pub recv_lan: AtomicU64,
    /// Chunk bytes received from peers of other sites, as they crossed the wire.
    pub recv_wan: AtomicU64,
    /// Chunk bytes sent to same-site peers, as they crossed the wire.
    pub sent_lan: AtomicU64,
    /// Chunk bytes sent to peers of other sites, as they crossed the wire.
    pub sent_wan: AtomicU64,
    /// Bytes compression kept off the wire, of chunks received.
    pub recv_saved: AtomicU64,
    /// Bytes compression kept off the wire, of chunks sent.
    pub sent_saved: AtomicU64,
    /// Chunks received and verified against their ids.
    pub chunks_verified: AtomicU64,
    /// Chunks received that did not match their ids (or could not be read).
    pub chunks_failed: AtomicU64,
    /// Files a patch did not rebuild (their chunks were fetched instead).
    pub rebuilds_failed: AtomicU64,
    /// Files rebuilt from patches.
    pub rebuilds: AtomicU64,
    /// Manifests learnt as deltas against one held.
    pub manifest_deltas: AtomicU64,
    /// Peers banned since start.
    pub bans: AtomicU64,
    /// Data-plane control-stream bytes, by message kind, class and direction.
    pub control: ControlBytes,
}

/// Bytes of data-plane control-stream frames (length prefix included), by message kind,
/// class and direction: what the control messages themselves weigh, without the QUIC
/// packets around them.
#[derive(Debug, Default)]
pub struct ControlBytes([[AtomicU64; 4]; ControlKind::ALL.len()]);

impl ControlBytes {
    fn slot(class: Class, sent: bool) -> usize {
        usize::from(class == Class::Wan) * 2 + usize::from(sent)
    }

    /// Counts `n` bytes of a `kind` message sent (or received) to a peer of `class`.
    pub fn add(&self, kind: ControlKind, class: Class, sent: bool, n: u64) {
        self.0[kind.index()][Self::slot(class, sent)].fetch_add(n, Ordering::Relaxed);
    }

    /// Bytes of `kind` messages sent (or received) with peers of `class`.
    pub fn get(&self, kind: ControlKind, class: Class, sent: bool) -> u64 {
        self.0[kind.index()][Self::slot(class, sent)].load(Ordering::Relaxed)
    }
}

impl Traffic {
    pub(crate) fn add_recv(&self, class: Class, n: u64) {
        match class {
            Class::Lan => self.recv_lan.fetch_add(n, Ordering::Relaxed),
            Class::Wan => self.recv_wan.fetch_add(n, Ordering::Relaxed),
        };
    }

    pub(crate) fn add_sent(&self, class: Class, n: u64) {
        match class {
            Class::Lan => self.sent_lan.fetch_add(n, Ordering::Relaxed),
            Class::Wan => self.sent_wan.fetch_add(n, Ordering::Relaxed),
        };
    }
}
