//! Bandwidth shaping of the data plane: every chunk byte sent or received passes the shaper
//! of its class ([`scheduler::shaper`]) and the `total` shaper.
//!
//! * Sending: a chunk is written to a peer only as its class's egress shaper grants it.
//! * Receiving: bytes cannot be refused once they arrive, so a chunk request is sent only
//!   once the ingress shaper has granted the chunk's length: a node never asks for more
//!   than its ingress rate, which is what keeps the link below it.
//!
//! LAN ingress is not shaped on its own (a LAN sender's egress already is); `total` covers
//! it. Waiting never spins: the shaper says how long to wait, and the task sleeps that long
//! (at most [`RECHECK`], so that a blocked class notices a schedule change).
//!
//! Waiters are served first come, first served (a fair async mutex queues them). Without
//! the queue a large request would starve: a token bucket refills a little at a time, and
//! small requests arriving meanwhile would take every refill before the bucket ever held
//! enough for the large one. First come, first served also makes the order in which fetches
//! plan their requests (urgent releases first, see [`scheduler::priority`]) the order in
//! which the link carries them.

use super::Class;
use crate::config::RateSchedules;
use governor::clock::MonotonicClock;
use jiff::Timestamp;
use scheduler::shaper::{Decision, Shaper};
use std::sync::Mutex;
use std::time::Duration;

/// Each chunk is charged 1/32 (3.1 %) more than its length, for what QUIC adds on the wire
/// (packet and frame headers, AEAD tags, acknowledgements, the request itself): the
/// testnet's relay counts 1.03 × the chunk bytes at a site's WAN link. Operators set caps on
/// links, so the shaper counts what the link carries.
pub const WIRE_OVERHEAD_DIVISOR: u64 = 32;

/// Longest single sleep while waiting for tokens or for a blocked class to open.
pub const RECHECK: Duration = Duration::from_secs(1);

/// Direction of a transfer, from this node's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Bytes this node receives.
    Ingress,
    /// Bytes this node sends.
    Egress,
}

/// One class's shaper and the queue of tasks waiting for it.
struct Gate {
    shaper: Mutex<Shaper<MonotonicClock>>,
    /// Held by the task being served; tokio's mutex hands it over in arrival order.
    queue: tokio::sync::Mutex<()>,
    /// Bytes charged without waiting ([`Shapers::charge`]): the next transfer through the
    /// gate waits for them as well as for its own.
    debt: std::sync::atomic::AtomicU64,
}

/// The node's shapers.
pub struct Shapers {
    enabled: bool,
    wan_ingress: Gate,
    wan_egress: Gate,
    lan_egress: Gate,
    total: Gate,
    /// Nanoseconds transfers spent waiting for tokens, by [`Shapers::wait_index`].
    waited_ns: [std::sync::atomic::AtomicU64; 4],
}

impl Shapers {
    /// Shapers for `schedules`, starting now.
    pub fn new(schedules: RateSchedules) -> Self {
        let now = Timestamp::now();
        let make = |s| Gate {
            shaper: Mutex::new(Shaper::new(s, MonotonicClock, now)),
            queue: tokio::sync::Mutex::new(()),
            debt: std::sync::atomic::AtomicU64::new(0),
        };
        Self {
            enabled: schedules.enabled,
            wan_ingress: make(schedules.wan_ingress),
            wan_egress: make(schedules.wan_egress),
            lan_egress: make(schedules.lan_egress),
            total: make(schedules.total),
            waited_ns: Default::default(),
        }
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

    /// Waits until `bytes` of `class` traffic in `direction` may pass.
    pub async fn acquire(&self, class: Class, direction: Direction, bytes: u64) {
        if !self.enabled {
            return;
        }
        let bytes = bytes + bytes / WIRE_OVERHEAD_DIVISOR;
        let own = self.gate(class, direction);
        let start = std::time::Instant::now();
        if let Some(shaper) = own {
            take(shaper, bytes).await;
        }
        take(&self.total, bytes).await;
        let waited = start.elapsed().as_nanos().min(u128::from(u64::MAX)) as u64;
        self.waited_ns[Self::wait_index(class, direction)]
            .fetch_add(waited, std::sync::atomic::Ordering::Relaxed);
    }

    /// Counts `bytes` of control messages of `class` in `direction` against the budget
    /// without waiting: a control message never queues behind chunks, and the next chunk of
    /// the class waits for its bytes instead.
    pub fn charge(&self, class: Class, direction: Direction, bytes: u64) {
        if !self.enabled {
            return;
        }
        use std::sync::atomic::Ordering::Relaxed;
        if let Some(gate) = self.gate(class, direction) {
            gate.debt.fetch_add(bytes, Relaxed);
        }
        self.total.debt.fetch_add(bytes, Relaxed);
    }

    fn gate(&self, class: Class, direction: Direction) -> Option<&Gate> {
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
        .map(|(name, s)| {
            let s = super::lock(&s.shaper);
            (
                name,
                s.schedule().rate_at(now),
                s.schedule().next_change(now),
            )
        })
    }
}

async fn take(gate: &Gate, bytes: u64) {
    let _turn = gate.queue.lock().await;
    let shaper = &gate.shaper;
    let mut left = bytes + gate.debt.swap(0, std::sync::atomic::Ordering::Relaxed);
    while left > 0 {
        let ask = left.min(u64::from(u32::MAX)) as u32;
        let decision = super::lock(shaper).reserve(ask, Timestamp::now());
        match decision {
            Decision::Go(n) => left -= u64::from(n),
            Decision::Wait(d) => tokio::time::sleep(d.min(RECHECK)).await,
            Decision::Blocked { .. } => tokio::time::sleep(RECHECK).await,
        }
    }
}
