//! Properties of the planner over random fetch states.

use proptest::prelude::*;
use protocol::wire::Bitmap;
use protocol::{ChunkId, ChunkRef};
use scheduler::planner::{
    self, Availability, InFlightSet, PeerView, PlanInput, PlannerConfig, designated_chunks,
};

/// A bitmap of `n` bits from `bits` (cycled).
fn bitmap(n: u32, bits: &[bool]) -> Bitmap {
    let mut b = Bitmap::new(n);
    for i in 0..n {
        if bits[i as usize % bits.len()] {
            b.set(i);
        }
    }
    b
}

/// A fetch state: chunks, what this node has and has in flight, same-site and WAN peers'
/// bitmaps (the last WAN peer may be a reserve), and the site's members.
#[derive(Debug, Clone)]
struct State {
    n: u32,
    have: Vec<bool>,
    asked: Vec<bool>,
    lan: Vec<Vec<bool>>,
    wan: Vec<Vec<bool>>,
    reserve: bool,
    members: u8,
    wan_idle_ms: u64,
    wan_busy: Vec<u64>,
}

fn state() -> impl Strategy<Value = State> {
    let bits = || prop::collection::vec(any::<bool>(), 1..64);
    (
        1u32..300,
        bits(),
        bits(),
        prop::collection::vec(bits(), 0..4),
        prop::collection::vec(bits(), 1..6),
        any::<bool>(),
        1u8..5,
        prop_oneof![Just(0u64), Just(10_000u64)],
        prop::collection::vec(prop_oneof![Just(0u64), Just(3_000u64)], 6),
    )
        .prop_map(
            |(n, have, asked, lan, wan, reserve, members, wan_idle_ms, wan_busy)| State {
                n,
                have,
                asked,
                lan,
                wan,
                reserve,
                members,
                wan_idle_ms,
                wan_busy,
            },
        )
}

proptest! {
    /// The simulator tells the planner what its WAN peers hold (`wan_held`, kept from their
    /// announcements); the daemon lets it read their bitmaps (`None`). Given the same
    /// holdings, both plan the same requests.
    #[test]
    fn wan_holdings_kept_or_read_plan_the_same(s in state()) {
        let chunks: Vec<ChunkRef> = (0..s.n)
            .map(|i| ChunkRef { id: ChunkId::of(&i.to_le_bytes()), len: 1000 + i % 7 })
            .collect();
        let have = bitmap(s.n, &s.have);
        let mut in_flight: InFlightSet = InFlightSet::new(s.n);
        for i in (0..s.n).filter(|&i| s.asked[i as usize % s.asked.len()] && !have.get(i)) {
            in_flight.request(i, 100, 0);
        }
        let lan: Vec<Bitmap> = s.lan.iter().map(|b| bitmap(s.n, b)).collect();
        let wan: Vec<Bitmap> = s.wan.iter().map(|b| bitmap(s.n, b)).collect();
        let me = [0u8; 32];
        let mut views = Vec::new();
        for (k, b) in lan.iter().enumerate() {
            views.push(PeerView {
                id: [1 + k as u8; 32],
                slot: k as u32,
                same_site: true,
                have: Some(b),
                in_flight_bytes: 0,
                budget_bytes: 8_000,
                usable: true,
                reserve: false,
            });
        }
        for (k, b) in wan.iter().enumerate() {
            views.push(PeerView {
                id: [10 + k as u8; 32],
                slot: 10 + k as u32,
                same_site: false,
                have: Some(b),
                in_flight_bytes: s.wan_busy[k],
                budget_bytes: 6_000,
                usable: true,
                reserve: s.reserve && k + 1 == wan.len(),
            });
        }
        let members: Vec<[u8; 32]> = std::iter::once(me)
            .chain((0..s.members.min(lan.len() as u8)).map(|k| [1 + k; 32]))
            .collect();
        let designated = designated_chunks(&me, &members, &chunks);
        let counts = Availability::from_bitmaps(s.n, &lan);
        // What the WAN peers that are not a reserve hold.
        let mut held = Bitmap::new(s.n);
        for v in views.iter().filter(|v| !v.same_site && !v.reserve) {
            for i in v.have.unwrap().ones() {
                held.set(i);
            }
        }
        let input = |wan_held| PlanInput {
            me,
            chunks: &chunks,
            have: &have,
            in_flight: &in_flight,
            peers: &views,
            lan: &counts,
            lan_extra: &[],
            designated: &designated,
            now_ms: 5_000,
            wan_idle_ms: s.wan_idle_ms,
            plan_wan: true,
            wan_held,
        };
        let config = PlannerConfig::default();
        let read = planner::plan(&input(None), &config);
        let kept = planner::plan(&input(Some(&held)), &config);
        prop_assert_eq!(read, kept);
    }
}
