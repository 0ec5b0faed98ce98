//! The fetch planner: which missing chunk to request from which peer. Pure: no IO, no clock
//! (times are arguments), no randomness (ties break by hashes of ids), so the daemon and the
//! simulator make the same decisions from the same state.
//!
//! # Rules, in order
//!
//! 1. **Same site first.** A chunk some same-site peer has is only ever requested on the LAN,
//!    from the same-site peer with the least bytes in flight. If all of them are at their
//!    in-flight limit, the chunk waits: it never goes to the WAN for lack of LAN capacity.
//! 2. **One WAN crossing per site.** A chunk no same-site peer has is fetched across the WAN by
//!    exactly one member of the site: the one that rendezvous hashing (highest random weight,
//!    a 64-bit mix of the member's and the chunk's ids) names among the site's *live members for this release*.
//!    The others wait for it to appear on the LAN. Who is live is the caller's decision
//!    (connected same-site peers working on the release that made progress recently); a
//!    member that goes away or stalls drops out of the set, and its chunks move to the next
//!    highest-weight member: that is the timeout fallback.
//! 3. **Rarest first** across the fleet (fewest peers holding it), ties broken by a hash of
//!    the node and the chunk so that members start on different chunks.
//! 4. **Endgame**: once every missing chunk is in flight and few remain, a chunk whose only
//!    request is older than [`PlannerConfig::endgame_after_ms`] is requested again from a
//!    second peer (same-site rule still applies); the first answer wins.
//!
//! Bytes in flight per peer are bounded by the caller's per-peer budget, which is what keeps
//! memory per peer bounded and a slow peer from holding many chunks.

use protocol::ChunkRef;
use protocol::wire::Bitmap;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

/// Tuning of the planner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlannerConfig {
    /// Endgame starts when at most this many chunks are missing.
    pub endgame_chunks: u32,
    /// In endgame, a request older than this gets a duplicate on another peer.
    pub endgame_after_ms: u64,
}

impl Default for PlannerConfig {
    fn default() -> Self {
        Self {
            // A few round trips' worth of chunks at LAN speed: enough to hide one slow peer at
            // the end without doubling much traffic.
            endgame_chunks: 16,
            endgame_after_ms: 2_000,
        }
    }
}

/// What the planner knows of one connected peer, for one release.
#[derive(Debug, Clone)]
pub struct PeerView<'a> {
    /// The peer's node id (its ed25519 key).
    pub id: [u8; 32],
    /// Whether the peer is in this node's site.
    pub same_site: bool,
    /// The chunks of the release it has, if it sent a bitmap for it.
    pub have: Option<&'a Bitmap>,
    /// Bytes requested from it and not yet received (all releases).
    pub in_flight_bytes: u64,
    /// Most bytes that may be in flight to it.
    pub budget_bytes: u64,
    /// Whether requests to it are allowed at all (not banned, not draining).
    pub usable: bool,
}

/// A chunk requested and not yet answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InFlight {
    /// Node ids of the peers asked; usually one, two in endgame.
    pub peers: Vec<[u8; 32]>,
    /// When the first request was sent.
    pub since_ms: u64,
}

/// The state of one release's fetch.
#[derive(Debug, Clone)]
pub struct PlanInput<'a> {
    /// This node's id.
    pub me: [u8; 32],
    /// The release's unique chunks, in manifest order (bitmap order).
    pub chunks: &'a [ChunkRef],
    /// What this node has.
    pub have: &'a Bitmap,
    /// Chunks in flight, by index.
    pub in_flight: &'a HashMap<u32, InFlight>,
    /// Connected peers.
    pub peers: &'a [PeerView<'a>],
    /// Live members of this node's site working on this release, including this node.
    pub site_members: &'a [[u8; 32]],
    /// Now, in the caller's monotonic milliseconds.
    pub now_ms: u64,
}

/// One decision: request chunk `chunk` from `peers[peer]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Assignment {
    /// Chunk index.
    pub chunk: u32,
    /// Index into [`PlanInput::peers`].
    pub peer: usize,
    /// Whether the peer is in another site.
    pub wan: bool,
}

/// The member of `members` that rendezvous hashing names for `chunk`.
pub fn designated_member<'m>(members: &'m [[u8; 32]], chunk: &ChunkRef) -> Option<&'m [u8; 32]> {
    members.iter().max_by_key(|m| hrw_weight(m, chunk))
}

fn hrw_weight(member: &[u8; 32], chunk: &ChunkRef) -> (u64, [u8; 32]) {
    (mix(word(member) ^ mix(word(chunk.id.as_bytes()))), *member)
}

/// A per-node order of chunks, so that the members of a site start on different chunks.
fn tie_break(me: &[u8; 32], chunk: &ChunkRef) -> u64 {
    mix(word(me) ^ mix(word(chunk.id.as_bytes()) ^ ORDER_SALT))
}

/// Keeps the chunk order independent of the rendezvous weights.
const ORDER_SALT: u64 = 0x7032_7064_6f72_6472;

/// The first 8 bytes of an id. Chunk ids are BLAKE3 outputs and node ids ed25519 keys, so
/// these are already uniform; [`mix`] makes the combination of two of them uniform too.
fn word(id: &[u8; 32]) -> u64 {
    u64::from_le_bytes(id[..8].try_into().expect("8 bytes"))
}

/// splitmix64's finalizer: a bijection on 64 bits with full avalanche. The planner evaluates
/// weights for every missing chunk on every pass (thousands of times per release), so this
/// replaces a cryptographic hash: the weights only need to be uniform and agreed on, and a
/// node that games them only gives itself more chunks to fetch across the WAN.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Decides the next requests. Returns them in the order they should be sent.
pub fn plan(input: &PlanInput<'_>, config: &PlannerConfig) -> Vec<Assignment> {
    let n = input.chunks.len() as u32;
    let mut room: Vec<i64> = input
        .peers
        .iter()
        .map(|p| {
            if p.usable {
                p.budget_bytes as i64 - p.in_flight_bytes as i64
            } else {
                0
            }
        })
        .collect();
    if room.iter().all(|r| *r <= 0) {
        return Vec::new();
    }
    let holders = |i: u32| {
        input
            .peers
            .iter()
            .enumerate()
            .filter(move |(_, p)| p.have.is_some_and(|b| b.len() == n && b.get(i)))
    };

    // Missing and not requested, rarest first. A heap, not a sort: a pass usually has room
    // for a few chunks out of thousands, and popping stops when the room is used up.
    let mut wanted: BinaryHeap<Reverse<(u32, u64, u32)>> = (0..n)
        .filter(|&i| !input.have.get(i) && !input.in_flight.contains_key(&i))
        .filter_map(|i| {
            let rarity = holders(i).count() as u32;
            (rarity > 0)
                .then(|| Reverse((rarity, tie_break(&input.me, &input.chunks[i as usize]), i)))
        })
        .collect();
    let any_wanted = !wanted.is_empty();

    let mut out = Vec::new();
    let mut assign = |i: u32, exclude: &[[u8; 32]], room: &mut Vec<i64>| -> bool {
        let len = i64::from(input.chunks[i as usize].len);
        let lan = holders(i)
            .filter(|(_, p)| p.same_site && !exclude.contains(&p.id))
            .collect::<Vec<_>>();
        let pick = |cands: Vec<(usize, &PeerView<'_>)>, room: &Vec<i64>| {
            cands
                .into_iter()
                .filter(|(k, _)| room[*k] > 0)
                .max_by_key(|(k, p)| (room[*k], Reverse(p.id)))
                .map(|(k, _)| k)
        };
        let any_lan_holder = holders(i).any(|(_, p)| p.same_site);
        let (chosen, wan) = if any_lan_holder {
            (pick(lan, room), false)
        } else {
            let me_designated = designated_member(input.site_members, &input.chunks[i as usize])
                .is_none_or(|d| *d == input.me);
            if !me_designated {
                return false;
            }
            let wan = holders(i)
                .filter(|(_, p)| !p.same_site && !exclude.contains(&p.id))
                .collect::<Vec<_>>();
            (pick(wan, room), true)
        };
        match chosen {
            Some(k) => {
                room[k] -= len;
                out.push(Assignment {
                    chunk: i,
                    peer: k,
                    wan,
                });
                true
            }
            None => false,
        }
    };

    while let Some(Reverse((_, _, i))) = wanted.pop() {
        assign(i, &[], &mut room);
        if room.iter().all(|r| *r <= 0) {
            break;
        }
    }

    // Endgame.
    let missing = n - input.have.count();
    if !any_wanted && missing > 0 && missing <= config.endgame_chunks {
        let mut stale: Vec<(&u32, &InFlight)> = input
            .in_flight
            .iter()
            .filter(|(_, f)| {
                f.peers.len() == 1
                    && input.now_ms.saturating_sub(f.since_ms) >= config.endgame_after_ms
            })
            .collect();
        stale.sort_unstable_by_key(|(i, f)| (f.since_ms, **i));
        for (&i, f) in stale {
            assign(i, &f.peers, &mut room);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::ChunkId;

    fn chunks(n: u32) -> Vec<ChunkRef> {
        (0..n)
            .map(|i| ChunkRef {
                id: ChunkId::of(&i.to_le_bytes()),
                len: 1000,
            })
            .collect()
    }

    fn id(b: u8) -> [u8; 32] {
        [b; 32]
    }

    fn peer<'a>(b: u8, same_site: bool, have: &'a Bitmap) -> PeerView<'a> {
        PeerView {
            id: id(b),
            same_site,
            have: Some(have),
            in_flight_bytes: 0,
            budget_bytes: 1 << 30,
            usable: true,
        }
    }

    #[test]
    fn same_site_holder_is_always_preferred_over_wan() {
        let cs = chunks(50);
        let full = Bitmap::full(50);
        let mut half = Bitmap::new(50);
        for i in 0..25 {
            half.set(i);
        }
        let have = Bitmap::new(50);
        let in_flight = HashMap::new();
        let peers = [peer(1, false, &full), peer(2, true, &half)];
        let members = [id(0)];
        let input = PlanInput {
            me: id(0),
            chunks: &cs,
            have: &have,
            in_flight: &in_flight,
            peers: &peers,
            site_members: &members,
            now_ms: 0,
        };
        let plan = plan(&input, &PlannerConfig::default());
        assert_eq!(plan.len(), 50);
        for a in plan {
            if a.chunk < 25 {
                assert_eq!((a.peer, a.wan), (1, false), "chunk {}", a.chunk);
            } else {
                assert_eq!((a.peer, a.wan), (0, true), "chunk {}", a.chunk);
            }
        }
    }

    #[test]
    fn each_wan_chunk_is_fetched_by_exactly_one_live_site_member() {
        let cs = chunks(400);
        let full = Bitmap::full(400);
        let empty = Bitmap::new(400);
        let members = [id(0), id(1), id(2), id(3)];
        let in_flight = HashMap::new();
        let mut owners = vec![0u32; 400];
        for me in 0..4u8 {
            // Every member sees the origin (WAN) and the other three members (LAN, empty).
            let mut peers = vec![peer(9, false, &full)];
            for other in 0..4u8 {
                if other != me {
                    peers.push(peer(other, true, &empty));
                }
            }
            let input = PlanInput {
                me: id(me),
                chunks: &cs,
                have: &empty,
                in_flight: &in_flight,
                peers: &peers,
                site_members: &members,
                now_ms: 0,
            };
            for a in plan(&input, &PlannerConfig::default()) {
                assert!(a.wan);
                owners[a.chunk as usize] += 1;
            }
        }
        assert!(owners.iter().all(|&o| o == 1), "{owners:?}");

        // A member that leaves the live set hands its chunks to the others.
        let live = [id(0), id(1), id(2)];
        let mut owners = vec![0u32; 400];
        for me in 0..3u8 {
            let peers = vec![peer(9, false, &full)];
            let input = PlanInput {
                me: id(me),
                chunks: &cs,
                have: &empty,
                in_flight: &in_flight,
                peers: &peers,
                site_members: &live,
                now_ms: 0,
            };
            for a in plan(&input, &PlannerConfig::default()) {
                owners[a.chunk as usize] += 1;
            }
        }
        assert!(owners.iter().all(|&o| o == 1));
    }

    #[test]
    fn rendezvous_spreads_chunks_evenly_and_moves_only_a_leavers_share() {
        let cs = chunks(8000);
        let members: Vec<[u8; 32]> = (10..14u8).map(|b| *blake3::hash(&[b]).as_bytes()).collect();
        let owner = |ms: &[[u8; 32]], c: &ChunkRef| *designated_member(ms, c).unwrap();
        let mut counts = HashMap::new();
        for c in &cs {
            *counts.entry(owner(&members, c)).or_insert(0u32) += 1;
        }
        for m in &members {
            let share = f64::from(counts[m]) / 8000.0;
            assert!((0.22..0.28).contains(&share), "member share {share}");
        }
        // Without the last member, only its chunks change hands.
        let three = &members[..3];
        for c in &cs {
            let before = owner(&members, c);
            if before != members[3] {
                assert_eq!(owner(three, c), before);
            }
        }
    }

    #[test]
    fn rarest_chunks_come_first_and_budgets_are_respected() {
        let cs = chunks(10);
        let full = Bitmap::full(10);
        let mut rare = Bitmap::new(10);
        rare.set(7);
        let have = Bitmap::new(10);
        let in_flight = HashMap::new();
        let mut a = peer(1, false, &full);
        a.budget_bytes = 3000;
        let mut b = peer(2, false, &rare);
        b.budget_bytes = 0;
        let peers = [a, b];
        let members = [id(0)];
        let input = PlanInput {
            me: id(0),
            chunks: &cs,
            have: &have,
            in_flight: &in_flight,
            peers: &peers,
            site_members: &members,
            now_ms: 0,
        };
        let p = plan(&input, &PlannerConfig::default());
        // Chunk 7 is held by two peers, the rest by one: 7 is the most common, so it is last;
        // only 3 chunks fit the budget.
        assert_eq!(p.len(), 3);
        assert!(p.iter().all(|a| a.peer == 0 && a.chunk != 7));
    }

    #[test]
    fn endgame_duplicates_only_stale_requests_on_another_peer() {
        let cs = chunks(4);
        let full = Bitmap::full(4);
        let mut have = Bitmap::new(4);
        have.set(0);
        have.set(1);
        let mut in_flight = HashMap::new();
        in_flight.insert(
            2,
            InFlight {
                peers: vec![id(1)],
                since_ms: 0,
            },
        );
        in_flight.insert(
            3,
            InFlight {
                peers: vec![id(1)],
                since_ms: 9_000,
            },
        );
        let peers = [peer(1, true, &full), peer(2, true, &full)];
        let members = [id(0)];
        let input = PlanInput {
            me: id(0),
            chunks: &cs,
            have: &have,
            in_flight: &in_flight,
            peers: &peers,
            site_members: &members,
            now_ms: 10_000,
        };
        let p = plan(&input, &PlannerConfig::default());
        assert_eq!(
            p,
            vec![Assignment {
                chunk: 2,
                peer: 1,
                wan: false
            }]
        );
    }

    #[test]
    fn nothing_is_planned_from_a_bitmap_of_the_wrong_length_or_an_unusable_peer() {
        let cs = chunks(4);
        let wrong = Bitmap::full(5);
        let full = Bitmap::full(4);
        let have = Bitmap::new(4);
        let in_flight = HashMap::new();
        let mut banned = peer(2, true, &full);
        banned.usable = false;
        let peers = [peer(1, true, &wrong), banned];
        let members = [id(0)];
        let input = PlanInput {
            me: id(0),
            chunks: &cs,
            have: &have,
            in_flight: &in_flight,
            peers: &peers,
            site_members: &members,
            now_ms: 0,
        };
        assert!(plan(&input, &PlannerConfig::default()).is_empty());
    }
}
