//! The fetch planner: which missing chunk to request from which peer. Pure: no IO, no clock
//! (times are arguments), no randomness (ties break by hashes of ids), so the daemon and the
//! simulator make the same decisions from the same state.
//!
//! # Rules, in order
//!
//! 1. **Same site first.** A chunk some same-site peer has is only ever requested on the LAN,
//!    from the same-site holder with the most room left in its in-flight budget. If all of
//!    them are at their limit, the chunk waits: it never goes to the WAN for lack of LAN
//!    capacity.
//! 2. **One WAN crossing per site.** A chunk no same-site peer has is fetched across the WAN by
//!    exactly one member of the site: the one that rendezvous hashing (highest random weight,
//!    a 64-bit mix of the member's and the chunk's ids) names among the site's *live members
//!    for this release* ([`designated_chunks`]). The others wait for it to appear on the LAN.
//!    Who is live is the caller's decision (connected same-site peers working on the release
//!    that made progress recently); a member that goes away or stalls drops out of the set,
//!    and its chunks move to the next highest-weight member: that is the timeout fallback.
//! 3. **Rarest first, at each level.** On the LAN, chunks held by the fewest same-site peers
//!    come first ([`Availability`]); across the WAN, chunks held by the fewest WAN peers.
//!    Ties break by a hash of the node and the chunk, so members of a site start on
//!    different chunks and trade them.
//! 4. **Endgame**: once every missing chunk is in flight and few remain, a chunk whose only
//!    request is older than [`PlannerConfig::endgame_after_ms`] is requested again from a
//!    second peer (same-site rule still applies); the first answer wins.
//!
//! Bytes in flight per peer are bounded by the caller's per-peer budget, which is what keeps
//! memory per peer bounded and a slow peer from holding many chunks.
//!
//! # Cost
//!
//! A pass costs a scan of a few bitmaps a word (64 chunks) at a time plus what it assigns,
//! not a look at every peer for every chunk: the same-site counts are an index the caller
//! keeps ([`Availability`], O(1) per change), the LAN candidates are `present & !have &
//! !in_flight` taken from a lazy heap, the WAN candidates are this node's designated chunks,
//! and each WAN peer's bitmap is read once, front to back; a caller that keeps a
//! [`PlanScratch`] ([`plan_with`]) has a pass allocate nothing. This is what lets the simulator
//! run the planner for 25,000 nodes, and a daemon in a 50-node site plan on every batch of
//! `Have`s.

use protocol::ChunkRef;
use protocol::wire::Bitmap;
use std::cmp::Reverse;
use std::collections::HashMap;
use std::hash::BuildHasher;

/// Failed LAN assignments in a row after which a pass reads what the peers with room hold
/// (one pass over their bitmaps) and skips the chunks none of them has: cheaper than asking
/// every peer about every remaining chunk once a few dozen have failed.
const OPEN_HOLDERS_AFTER_MISSES: u32 = 64;

/// Tuning of the planner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlannerConfig {
    /// Endgame starts when at most this many chunks are missing.
    pub endgame_chunks: u32,
    /// In endgame, a request older than this gets a duplicate on another peer.
    pub endgame_after_ms: u64,
    /// A reserve (the origin after seeding) is asked only once the node has had nothing out
    /// to any other WAN peer for this long ([`PlanInput::wan_idle_ms`]).
    pub reserve_after_ms: u64,
}

impl Default for PlannerConfig {
    fn default() -> Self {
        Self {
            // A few round trips' worth of chunks at LAN speed: enough to hide one slow peer at
            // the end without doubling much traffic.
            endgame_chunks: 16,
            endgame_after_ms: 2_000,
            // A few hops of a chunk through the sites (announcement, request, a queue at a
            // WAN uplink): a chunk the other sites are passing around reaches a peer of
            // this node in that time, so the origin is asked only for what is stuck.
            reserve_after_ms: 3_000,
        }
    }
}

/// What the planner knows of one connected peer, for one release.
#[derive(Debug, Clone)]
pub struct PeerView<'a> {
    /// The peer's node id (its ed25519 key).
    pub id: [u8; 32],
    /// The caller's stable handle of the peer (what [`InFlightSet`] records requests by):
    /// the same peer has the same slot in every pass.
    pub slot: u32,
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
    /// The release's origin after initial seeding: across the WAN, it is asked only for
    /// chunks no other WAN peer has, and only while no other WAN peer is being asked for
    /// anything (it is the fleet's last resort, not one source among many).
    pub reserve: bool,
}

/// A chunk requested and not yet answered: by whom (the peers' slots, [`PeerView::slot`])
/// and since when. Holds at most two peers (the endgame asks one more), inline, so a fetch
/// with thousands of chunks in flight does not allocate per request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InFlight {
    asked: [u32; 2],
    count: u8,
    /// When the first request was sent.
    pub since_ms: u64,
}

impl InFlight {
    /// A chunk first requested from `peer` at `since_ms`.
    pub fn new(peer: u32, since_ms: u64) -> Self {
        Self {
            asked: [peer, 0],
            count: 1,
            since_ms,
        }
    }

    /// Slots of the peers asked; usually one, two in endgame.
    pub fn peers(&self) -> &[u32] {
        &self.asked[..usize::from(self.count)]
    }

    /// Notes a second request, to `peer`; false if two are already out.
    pub fn add(&mut self, peer: u32) -> bool {
        if usize::from(self.count) == self.asked.len() {
            return false;
        }
        self.asked[usize::from(self.count)] = peer;
        self.count += 1;
        true
    }

    /// Notes that `peer` answered (or failed); true when no request is left out.
    pub fn remove(&mut self, peer: u32) -> bool {
        if let Some(k) = self.peers().iter().position(|&p| p == peer) {
            self.asked.copy_within(k + 1.., k);
            self.count -= 1;
        }
        self.count == 0
    }
}

/// The chunks of a fetch in flight: a bitmap for the planner's scans and the requests' details
/// by chunk.
#[derive(Debug, Clone)]
pub struct InFlightSet<S = std::collections::hash_map::RandomState> {
    bits: Bitmap,
    map: HashMap<u32, InFlight, S>,
}

impl<S: BuildHasher + Default> InFlightSet<S> {
    /// Nothing in flight, for a release of `n` chunks.
    pub fn new(n: u32) -> Self {
        Self {
            bits: Bitmap::new(n),
            map: HashMap::default(),
        }
    }
}

impl<S: BuildHasher> InFlightSet<S> {
    /// Whether chunk `i` is in flight.
    #[inline]
    pub fn contains(&self, i: u32) -> bool {
        self.bits.get(i)
    }

    /// The chunks in flight, as a bitmap.
    #[inline]
    pub fn bits(&self) -> &Bitmap {
        &self.bits
    }

    /// Number of chunks in flight.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether nothing is in flight.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The request of chunk `i`, if any.
    pub fn get(&self, i: u32) -> Option<&InFlight> {
        self.map.get(&i)
    }

    /// Every chunk in flight, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &InFlight)> {
        self.map.iter().map(|(&i, f)| (i, f))
    }

    /// Notes a request of chunk `i` to `peer` at `now_ms` (a second one in endgame).
    pub fn request(&mut self, i: u32, peer: u32, now_ms: u64) {
        match self.map.entry(i) {
            std::collections::hash_map::Entry::Occupied(mut e) => {
                e.get_mut().add(peer);
            }
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(InFlight::new(peer, now_ms));
                self.bits.set(i);
            }
        }
    }

    /// Notes that `peer` answered (or failed) chunk `i`; the chunk leaves the set when no
    /// request for it is left.
    pub fn answered(&mut self, i: u32, peer: u32) {
        // One probe of the map: this runs for every answer a node receives.
        if let std::collections::hash_map::Entry::Occupied(mut e) = self.map.entry(i) {
            if e.get_mut().remove(peer) {
                e.remove();
                self.bits.clear(i);
            }
        }
    }

    /// Forgets chunk `i` (it arrived: any other request for it is moot).
    pub fn remove(&mut self, i: u32) {
        if self.map.remove(&i).is_some() {
            self.bits.clear(i);
        }
    }
}

/// How many same-site peers hold each chunk of a release, and which chunks any of them
/// holds. A count changes in O(1).
///
/// The daemon builds it from its same-site peers' bitmaps ([`Availability::from_bitmaps`]);
/// the simulator keeps one per site up to date with [`add`](Self::add) and
/// [`remove`](Self::remove), counting every member (a node's own chunks then count one
/// higher, which only touches chunks the node already has and so never plans).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Availability {
    count: Vec<u16>,
    /// The chunks with a count above zero.
    present: Bitmap,
}

impl Availability {
    /// `n` chunks that no peer holds.
    pub fn new(n: u32) -> Self {
        Self {
            count: vec![0; n as usize],
            present: Bitmap::new(n),
        }
    }

    /// Counts from peers' bitmaps; a bitmap of another length is ignored.
    pub fn from_bitmaps<'b>(n: u32, bitmaps: impl IntoIterator<Item = &'b Bitmap>) -> Self {
        let mut a = Self::new(n);
        for b in bitmaps {
            if b.len() == n {
                for i in b.ones() {
                    a.add(i);
                }
            }
        }
        a
    }

    /// Number of chunks.
    pub fn len(&self) -> u32 {
        self.count.len() as u32
    }

    /// Whether the release has no chunks.
    pub fn is_empty(&self) -> bool {
        self.count.is_empty()
    }

    /// How many peers hold chunk `i` (0 past the end).
    #[inline]
    pub fn count(&self, i: u32) -> u16 {
        self.count.get(i as usize).copied().unwrap_or(0)
    }

    /// The chunks at least one peer holds.
    #[inline]
    pub fn present(&self) -> &Bitmap {
        &self.present
    }

    /// One more peer holds chunk `i`. Ignores indices past the end.
    pub fn add(&mut self, i: u32) {
        if let Some(c) = self.count.get_mut(i as usize) {
            *c = c.saturating_add(1);
            self.present.set(i);
        }
    }

    /// One peer fewer holds chunk `i`. Ignores indices past the end and counts at zero.
    pub fn remove(&mut self, i: u32) {
        if let Some(c) = self.count.get_mut(i as usize) {
            if *c > 0 {
                *c -= 1;
                if *c == 0 {
                    self.present.clear(i);
                }
            }
        }
    }
}

/// The state of one release's fetch.
#[derive(Debug, Clone)]
pub struct PlanInput<'a, S = std::collections::hash_map::RandomState> {
    /// This node's id.
    pub me: [u8; 32],
    /// The release's unique chunks, in manifest order (bitmap order).
    pub chunks: &'a [ChunkRef],
    /// What this node has.
    pub have: &'a Bitmap,
    /// Chunks in flight.
    pub in_flight: &'a InFlightSet<S>,
    /// Connected peers.
    pub peers: &'a [PeerView<'a>],
    /// How many same-site peers hold each chunk.
    pub lan: &'a Availability,
    /// Bitmaps of same-site peers that `lan` does not count and this node may use (empty for
    /// the daemon, whose `lan` counts exactly its usable same-site peers; the simulator keeps
    /// one count per site of its honest members and passes here the peers only some
    /// members have banned).
    pub lan_extra: &'a [&'a Bitmap],
    /// The chunks rendezvous hashing names this node for among the site's live members
    /// ([`designated_chunks`]): the only ones it fetches across the WAN.
    pub designated: &'a Bitmap,
    /// Now, in the caller's monotonic milliseconds.
    pub now_ms: u64,
    /// How long this node has had no request out to a WAN peer that is not a reserve
    /// (since the fetch started, if never).
    pub wan_idle_ms: u64,
    /// Whether to plan WAN requests in this pass. Only the WAN side can add WAN requests
    /// (a WAN peer announcing a designated chunk, a WAN answer freeing a budget, a change of
    /// members, the reserve's idle time running out): a caller that tracks those may skip the
    /// WAN pass when none happened, with the same outcome. The daemon always plans both.
    pub plan_wan: bool,
    /// What the WAN peers that are not a reserve hold, at least among this node's designated
    /// chunks it lacks, if the caller keeps it (the simulator does, from announcements);
    /// `None`: the planner reads it from the peers' bitmaps.
    pub wan_held: Option<&'a Bitmap>,
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

/// For each chunk, the index in `members` of the member rendezvous hashing names for it
/// (the same choice as [`designated_member`], for every chunk at once); empty when there are
/// no members. One weight per chunk and member.
pub fn designation(members: &[[u8; 32]], chunks: &[ChunkRef]) -> Vec<u32> {
    if members.is_empty() {
        return Vec::new();
    }
    let words: Vec<u64> = members.iter().map(word).collect();
    chunks
        .iter()
        .map(|c| {
            let w = mix(word(c.id.as_bytes()));
            (0..members.len())
                .max_by_key(|&k| (mix(words[k] ^ w), members[k]))
                .expect("at least one member") as u32
        })
        .collect()
}

/// Member sets kept with their designations ([`designation`]), for the fetches of one site
/// that share them: a member set changes for every member at once (one left, one came), and
/// one weight per chunk and member is work worth doing once per site, not once per member.
#[derive(Debug, Default)]
pub struct Designations {
    /// The most recent first: (sorted members, the owner of each chunk).
    kept: std::collections::VecDeque<(Vec<[u8; 32]>, Vec<u32>)>,
}

/// Member sets a [`Designations`] keeps: the set most members agree on, and a few that
/// differ where one member has banned or snubbed another.
pub const DESIGNATIONS_KEPT: usize = 4;

impl Designations {
    /// [`designated_chunks`] for `me` over `members` (sorted, `me` among them), from a kept
    /// designation when this set was seen before.
    pub fn designated_chunks(
        &mut self,
        me: &[u8; 32],
        members: &[[u8; 32]],
        chunks: &[ChunkRef],
    ) -> Bitmap {
        let Ok(pos) = members.binary_search(me) else {
            return designated_chunks(me, members, chunks);
        };
        let k = match self.kept.iter().position(|(m, _)| m == members) {
            Some(k) => k,
            None => {
                self.kept
                    .push_front((members.to_vec(), designation(members, chunks)));
                self.kept.truncate(DESIGNATIONS_KEPT);
                0
            }
        };
        let owner = &self.kept[k].1;
        let mut out = Bitmap::new(chunks.len() as u32);
        for (i, &o) in owner.iter().enumerate() {
            if o as usize == pos {
                out.set(i as u32);
            }
        }
        out
    }
}

/// The chunks that rendezvous hashing over `members` names `me` for (every chunk when
/// `members` is empty). Costs one weight per chunk and member: callers keep it until the
/// member set changes.
pub fn designated_chunks(me: &[u8; 32], members: &[[u8; 32]], chunks: &[ChunkRef]) -> Bitmap {
    let mut out = Bitmap::new(chunks.len() as u32);
    for (i, c) in chunks.iter().enumerate() {
        if designated_member(members, c).is_none_or(|d| d == me) {
            out.set(i as u32);
        }
    }
    out
}

fn hrw_weight(member: &[u8; 32], chunk: &ChunkRef) -> (u64, [u8; 32]) {
    (mix(word(member) ^ mix(word(chunk.id.as_bytes()))), *member)
}

/// A per-node order of chunks, so that the members of a site start on different chunks.
#[inline]
fn tie_break(me: &[u8; 32], chunk: &ChunkRef) -> u64 {
    mix(word(me) ^ mix(word(chunk.id.as_bytes()) ^ ORDER_SALT))
}

/// Keeps the chunk order independent of the rendezvous weights.
const ORDER_SALT: u64 = 0x7032_7064_6f72_6472;

/// The first 8 bytes of an id. Chunk ids are BLAKE3 outputs and node ids ed25519 keys, so
/// these are already uniform; [`mix`] makes the combination of two of them uniform too.
#[inline]
fn word(id: &[u8; 32]) -> u64 {
    u64::from_le_bytes(id[..8].try_into().expect("8 bytes"))
}

/// splitmix64's finalizer: a bijection on 64 bits with full avalanche. Weights are evaluated
/// for every chunk and member, so this replaces a cryptographic hash: the weights only need
/// to be uniform and agreed on, and a node that games them only gives itself more chunks to
/// fetch across the WAN.
#[inline]
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Buffers [`plan_with`] reuses from one pass to the next, so that a fetch loop planning
/// many times a second (the daemon on every batch of announcements, the simulator for 25,000
/// endpoints) does not allocate them each time. What is in them between passes means nothing.
#[derive(Debug, Default)]
pub struct PlanScratch {
    left: Vec<i64>,
    lan_peers: Vec<usize>,
    wan_peers: Vec<usize>,
    reserve: Vec<usize>,
    heap: Vec<Reverse<(u16, u64, u32)>>,
    cands: Vec<(u32, u64, u32)>,
    last_resort: Vec<(u64, u32)>,
    base: Vec<(usize, u64)>,
    normal: Vec<u64>,
    reserved: Vec<u64>,
}

/// Room left in each peer's budget, and how many same-site and WAN peers still have some.
struct Room<'s> {
    left: &'s mut Vec<i64>,
    lan_open: usize,
    wan_open: usize,
}

impl<'s> Room<'s> {
    fn new(peers: &[PeerView<'_>], left: &'s mut Vec<i64>) -> Self {
        left.clear();
        left.extend(peers.iter().map(|p| {
            if p.usable {
                p.budget_bytes as i64 - p.in_flight_bytes as i64
            } else {
                0
            }
        }));
        let open = |lan: bool| {
            peers
                .iter()
                .zip(left.iter())
                .filter(|(p, r)| p.same_site == lan && **r > 0)
                .count()
        };
        Self {
            lan_open: open(true),
            wan_open: open(false),
            left,
        }
    }

    fn take(&mut self, k: usize, lan: bool, bytes: i64) {
        let before = self.left[k];
        self.left[k] -= bytes;
        if before > 0 && self.left[k] <= 0 {
            if lan {
                self.lan_open -= 1;
            } else {
                self.wan_open -= 1;
            }
        }
    }
}

/// Decides the next requests. Returns them in the order they should be sent.
pub fn plan<S: BuildHasher>(input: &PlanInput<'_, S>, config: &PlannerConfig) -> Vec<Assignment> {
    let mut out = Vec::new();
    plan_with(input, config, &mut PlanScratch::default(), &mut out);
    out
}

/// [`plan`], with buffers kept by the caller: replaces `out` with the next requests, in the
/// order they should be sent.
pub fn plan_with<S: BuildHasher>(
    input: &PlanInput<'_, S>,
    config: &PlannerConfig,
    scratch: &mut PlanScratch,
    out: &mut Vec<Assignment>,
) {
    out.clear();
    let n = input.chunks.len() as u32;
    let PlanScratch {
        left,
        lan_peers,
        wan_peers,
        reserve,
        heap,
        cands,
        last_resort,
        base,
        normal,
        reserved,
    } = scratch;
    let room = Room::new(input.peers, left);
    if room.lan_open == 0 && room.wan_open == 0 {
        return;
    }
    lan_peers.clear();
    wan_peers.clear();
    reserve.clear();
    for (k, p) in input.peers.iter().enumerate() {
        if p.have.is_none_or(|b| b.len() != n) {
            continue;
        }
        match (p.same_site, p.reserve) {
            (true, _) => lan_peers.push(k),
            (false, true) => reserve.push(k),
            (false, false) => wan_peers.push(k),
        }
    }
    let mut pass = Pass {
        input,
        config,
        lan_peers,
        wan_peers,
        reserve,
        room,
        out,
    };
    // 1. The LAN, 2. the WAN, 3. the endgame.
    pass.lan(heap);
    pass.wan(WanBufs {
        cands,
        last_resort,
        base,
        normal,
        reserved,
    });
    pass.endgame();
}

/// The WAN step's buffers (see [`PlanScratch`]).
struct WanBufs<'s> {
    cands: &'s mut Vec<(u32, u64, u32)>,
    last_resort: &'s mut Vec<(u64, u32)>,
    base: &'s mut Vec<(usize, u64)>,
    normal: &'s mut Vec<u64>,
    reserved: &'s mut Vec<u64>,
}

/// One planning pass: the input, the peers by kind (indices into `input.peers` of those with
/// a bitmap of the release's length), the room left in their budgets, the answer so far.
struct Pass<'p, 'a, S> {
    input: &'p PlanInput<'a, S>,
    config: &'p PlannerConfig,
    lan_peers: &'p [usize],
    wan_peers: &'p [usize],
    reserve: &'p [usize],
    room: Room<'p>,
    out: &'p mut Vec<Assignment>,
}

impl<S: BuildHasher> Pass<'_, '_, S> {
    #[inline]
    fn holds(&self, k: usize, i: u32) -> bool {
        self.input.peers[k].have.is_some_and(|b| b.get(i))
    }

    /// The holder among `cands` with the most room (ties: the lower id), not in `exclude`.
    /// Rooms are compared first: a peer that could not win is not asked whether it holds the
    /// chunk (a bitmap read, likely a cache miss).
    #[inline]
    fn pick(&self, cands: &[usize], i: u32, exclude: &[u32]) -> Option<usize> {
        let peers = self.input.peers;
        let mut best: Option<(usize, i64)> = None;
        for &k in cands {
            let r = self.room.left[k];
            if r <= 0 {
                continue;
            }
            if let Some((b, rb)) = best {
                if r < rb || (r == rb && peers[k].id > peers[b].id) {
                    continue;
                }
            }
            if self.holds(k, i) && !exclude.contains(&peers[k].slot) {
                best = Some((k, r));
            }
        }
        best.map(|(k, _)| k)
    }

    /// Requests chunk `i` from one of `cands`; false if none can take it.
    #[inline]
    fn assign(&mut self, i: u32, cands: &[usize], exclude: &[u32]) -> bool {
        let Some(k) = self.pick(cands, i, exclude) else {
            return false;
        };
        let wan = !self.input.peers[k].same_site;
        self.room
            .take(k, !wan, i64::from(self.input.chunks[i as usize].len));
        self.out.push(Assignment {
            chunk: i,
            peer: k,
            wan,
        });
        true
    }

    /// The chunks some same-site peer holds, 64 at a time.
    #[inline]
    fn present(&self, w: usize) -> u64 {
        let input = self.input;
        input
            .lan_extra
            .iter()
            .fold(input.lan.present().word(w), |acc, b| acc | b.word(w))
    }

    /// How many same-site peers hold chunk `i`.
    #[inline]
    fn lan_count(&self, i: u32) -> u16 {
        let input = self.input;
        input.lan.count(i) + input.lan_extra.iter().filter(|b| b.get(i)).count() as u16
    }

    /// 1. The LAN: the chunks some same-site peer has and this node lacks and has not asked
    ///    for, rarest first, ties in this node's own order; a lazy heap, since a pass
    ///    usually stops when the peers' budgets are used up.
    fn lan(&mut self, heap_buf: &mut Vec<Reverse<(u16, u64, u32)>>) {
        if self.room.lan_open == 0 || self.lan_peers.is_empty() {
            return;
        }
        let input = self.input;
        let (have, in_flight) = (input.have, input.in_flight.bits());
        heap_buf.clear();
        for w in 0..have.word_count() {
            let mut m = self.present(w) & !have.word(w) & !in_flight.word(w);
            while m != 0 {
                let i = (w * 64) as u32 + m.trailing_zeros();
                m &= m - 1;
                let tie = tie_break(&input.me, &input.chunks[i as usize]);
                heap_buf.push(Reverse((self.lan_count(i), tie, i)));
            }
        }
        let mut heap = std::collections::BinaryHeap::from(std::mem::take(heap_buf));
        // Rooms only shrink during a pass, so a chunk no peer with room holds stays
        // unassignable. After a run of such chunks (a busy peer that alone holds many, or
        // one that claims everything), the pass reads once what the peers with room hold
        // and skips the rest without looking at each peer for each chunk.
        let mut misses = 0u32;
        let mut open: Option<Bitmap> = None;
        let lan_peers = self.lan_peers;
        while let Some(Reverse((_, _, i))) = heap.pop() {
            if open.as_ref().is_some_and(|o| !o.get(i)) {
                continue;
            }
            if self.assign(i, lan_peers, &[]) {
                misses = 0;
            } else {
                misses += 1;
                if misses == OPEN_HOLDERS_AFTER_MISSES && open.is_none() {
                    open = Some(self.open_holders());
                }
            }
            if self.room.lan_open == 0 {
                break;
            }
        }
        *heap_buf = heap.into_vec();
    }

    /// What the same-site peers with room left hold, together.
    fn open_holders(&self) -> Bitmap {
        let have = self.input.have;
        let mut u = vec![0u8; have.as_bytes().len()];
        for &k in self.lan_peers.iter().filter(|&&k| self.room.left[k] > 0) {
            if let Some(b) = self.input.peers[k].have {
                for (x, y) in u.iter_mut().zip(b.as_bytes()) {
                    *x |= *y;
                }
            }
        }
        Bitmap::from_bytes(have.len(), u).expect("the release's length")
    }

    /// 2. The WAN: this node's designated chunks that no same-site peer has and that are not
    ///    in flight, a word of 64 chunks at a time; rarest first among the holders that are
    ///    not a reserve, then the reserve, if the WAN has been idle long enough.
    fn wan(&mut self, bufs: WanBufs<'_>) {
        if !self.input.plan_wan
            || self.room.wan_open == 0
            || (self.wan_peers.is_empty() && self.reserve.is_empty())
        {
            return;
        }
        let WanBufs {
            cands,
            last_resort,
            base,
            normal,
            reserved,
        } = bufs;
        let input = self.input;
        let in_flight = input.in_flight.bits();
        cands.clear();
        last_resort.clear();
        // This node's designated chunks that no same-site peer has and that are not in
        // flight, as (word index, bits).
        base.clear();
        base.extend((0..input.have.word_count()).filter_map(|w| {
            let b = input.designated.word(w)
                & !input.have.word(w)
                & !self.present(w)
                & !in_flight.word(w);
            (b != 0).then_some((w, b))
        }));
        match input.wan_held {
            Some(held) => {
                normal.clear();
                normal.extend(base.iter().map(|&(w, _)| held.word(w)));
            }
            None => self.union(self.wan_peers, base, normal),
        }
        if self.reserve.is_empty() {
            reserved.clear();
        } else {
            self.union(self.reserve, base, reserved);
        }
        for (k, &(w, b)) in base.iter().enumerate() {
            let mut held = b & normal[k];
            while held != 0 {
                let i = (w * 64) as u32 + held.trailing_zeros();
                held &= held - 1;
                let rarity = self.wan_peers.iter().filter(|&&p| self.holds(p, i)).count() as u32;
                cands.push((rarity, tie_break(&input.me, &input.chunks[i as usize]), i));
            }
            if let Some(r) = reserved.get(k) {
                let mut only = b & !normal[k] & r;
                while only != 0 {
                    let i = (w * 64) as u32 + only.trailing_zeros();
                    only &= only - 1;
                    last_resort.push((tie_break(&input.me, &input.chunks[i as usize]), i));
                }
            }
        }
        cands.sort_unstable();
        let mut assigned = false;
        let wan_peers = self.wan_peers;
        for &(_, _, i) in cands.iter() {
            assigned |= self.assign(i, wan_peers, &[]);
            if self.room.wan_open == 0 {
                break;
            }
        }
        // The reserve, only when no other WAN peer has had anything for this node for a while.
        let others_busy = wan_peers
            .iter()
            .any(|&p| input.peers[p].in_flight_bytes > 0);
        if !assigned
            && !others_busy
            && input.wan_idle_ms >= self.config.reserve_after_ms
            && self.room.wan_open > 0
        {
            last_resort.sort_unstable();
            let reserve = self.reserve;
            for &(_, i) in last_resort.iter() {
                self.assign(i, reserve, &[]);
                if self.room.wan_open == 0 {
                    break;
                }
            }
        }
    }

    /// What the peers `which` hold in the words of `base`, one peer at a time (each bitmap is
    /// read front to back; a word-by-word walk across peers would miss the cache every time).
    fn union(&self, which: &[usize], base: &[(usize, u64)], u: &mut Vec<u64>) {
        u.clear();
        u.resize(base.len(), 0);
        for &p in which {
            if let Some(b) = self.input.peers[p].have {
                for (x, &(w, _)) in u.iter_mut().zip(base) {
                    *x |= b.word(w);
                }
            }
        }
    }

    /// 3. Endgame: every missing chunk is in flight (or held by no one this node may ask):
    ///    a request older than `endgame_after_ms` is asked again of another peer.
    fn endgame(&mut self) {
        let input = self.input;
        let n = input.chunks.len() as u32;
        let missing = n - input.have.count();
        if missing == 0 || missing > self.config.endgame_chunks {
            return;
        }
        let in_flight = input.in_flight;
        let all_out = input
            .have
            .zeros()
            .all(|i| in_flight.contains(i) || !self.requestable(i));
        if !all_out {
            return;
        }
        let mut stale: Vec<(u32, &InFlight)> = in_flight
            .iter()
            .filter(|(_, f)| {
                f.peers().len() == 1
                    && input.now_ms.saturating_sub(f.since_ms) >= self.config.endgame_after_ms
            })
            .collect();
        stale.sort_unstable_by_key(|(i, f)| (f.since_ms, *i));
        let (lan_peers, wan_peers, reserve) = (self.lan_peers, self.wan_peers, self.reserve);
        for (i, f) in stale {
            if self.lan_count(i) > 0 {
                self.assign(i, lan_peers, f.peers());
            } else if input.designated.get(i) && !self.assign(i, wan_peers, f.peers()) {
                self.assign(i, reserve, f.peers());
            }
        }
    }

    /// Whether this node may ask anyone for chunk `i` now: a same-site holder if one holds
    /// it, else a WAN holder of a designated chunk.
    fn requestable(&self, i: u32) -> bool {
        if self.lan_count(i) > 0 {
            self.lan_peers.iter().any(|&k| self.holds(k, i))
        } else {
            self.input.designated.get(i)
                && self
                    .wan_peers
                    .iter()
                    .chain(self.reserve.iter())
                    .any(|&k| self.holds(k, i))
        }
    }
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
            slot: u32::from(b),
            same_site,
            have: Some(have),
            in_flight_bytes: 0,
            budget_bytes: 1 << 30,
            usable: true,
            reserve: false,
        }
    }

    /// Plans for `me` as the daemon does: availability from the same-site peers' bitmaps,
    /// designation over `members`.
    fn plan_for(
        me: [u8; 32],
        cs: &[ChunkRef],
        have: &Bitmap,
        in_flight: &InFlightSet,
        peers: &[PeerView<'_>],
        members: &[[u8; 32]],
        now_ms: u64,
    ) -> Vec<Assignment> {
        let n = cs.len() as u32;
        let lan = Availability::from_bitmaps(
            n,
            peers.iter().filter(|p| p.same_site).filter_map(|p| p.have),
        );
        let designated = designated_chunks(&me, members, cs);
        let input = PlanInput {
            me,
            chunks: cs,
            have,
            in_flight,
            peers,
            lan: &lan,
            lan_extra: &[],
            designated: &designated,
            now_ms,
            wan_idle_ms: now_ms,
            plan_wan: true,
            wan_held: None,
        };
        plan(&input, &PlannerConfig::default())
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
        let peers = [peer(1, false, &full), peer(2, true, &half)];
        let plan = plan_for(
            id(0),
            &cs,
            &have,
            &InFlightSet::new(cs.len() as u32),
            &peers,
            &[id(0)],
            0,
        );
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
        let in_flight = InFlightSet::new(400);
        let mut owners = vec![0u32; 400];
        for me in 0..4u8 {
            // Every member sees the origin (WAN) and the other three members (LAN, empty).
            let mut peers = vec![peer(9, false, &full)];
            for other in 0..4u8 {
                if other != me {
                    peers.push(peer(other, true, &empty));
                }
            }
            for a in plan_for(id(me), &cs, &empty, &in_flight, &peers, &members, 0) {
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
            for a in plan_for(id(me), &cs, &empty, &in_flight, &peers, &live, 0) {
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
        // designation and designated_chunks are the same partition.
        let all = designation(&members, &cs);
        for (c, &k) in cs.iter().zip(&all) {
            assert_eq!(members[k as usize], owner(&members, c));
        }
        let mut union = Bitmap::new(8000);
        for m in &members {
            let mine = designated_chunks(m, &members, &cs);
            for i in mine.ones() {
                assert_eq!(owner(&members, &cs[i as usize]), *m);
                assert!(union.set(i));
            }
        }
        assert!(union.is_full());
    }

    #[test]
    fn rarest_chunks_come_first_and_budgets_are_respected() {
        let cs = chunks(10);
        let full = Bitmap::full(10);
        let mut rare = Bitmap::new(10);
        rare.set(7);
        let have = Bitmap::new(10);
        let mut a = peer(1, false, &full);
        a.budget_bytes = 3000;
        let mut b = peer(2, false, &rare);
        b.budget_bytes = 0;
        let peers = [a, b];
        let p = plan_for(
            id(0),
            &cs,
            &have,
            &InFlightSet::new(cs.len() as u32),
            &peers,
            &[id(0)],
            0,
        );
        // Chunk 7 is held by two peers, the rest by one: 7 is the most common, so it is last;
        // only 3 chunks fit the budget.
        assert_eq!(p.len(), 3);
        assert!(p.iter().all(|a| a.peer == 0 && a.chunk != 7));
    }

    #[test]
    fn on_the_lan_the_rarest_chunks_come_first_and_members_start_apart() {
        // Chunks 0..10 are held by three same-site peers, 10..20 by one: with room for ten
        // chunks, a node takes the ten rare ones.
        let cs = chunks(20);
        let full = Bitmap::full(20);
        let mut common = Bitmap::new(20);
        for i in 0..10 {
            common.set(i);
        }
        let have = Bitmap::new(20);
        let mut peers = vec![
            peer(1, true, &full),
            peer(2, true, &common),
            peer(3, true, &common),
        ];
        peers[0].budget_bytes = 10_000;
        peers[1].budget_bytes = 0;
        peers[2].budget_bytes = 0;
        let p = plan_for(
            id(0),
            &cs,
            &have,
            &InFlightSet::new(cs.len() as u32),
            &peers,
            &[id(0)],
            0,
        );
        let mut got: Vec<u32> = p.iter().map(|a| a.chunk).collect();
        got.sort_unstable();
        assert_eq!(got, (10..20).collect::<Vec<_>>());

        // Members of a site with room for one chunk each start on different chunks of a bucket.
        let cs = chunks(64);
        let full = Bitmap::full(64);
        let have = Bitmap::new(64);
        let mut firsts = std::collections::HashSet::new();
        for me in 10..18u8 {
            let mut seed = peer(1, true, &full);
            seed.budget_bytes = 1000;
            let p = plan_for(
                id(me),
                &cs,
                &have,
                &InFlightSet::new(cs.len() as u32),
                &[seed],
                &[id(me)],
                0,
            );
            assert_eq!(p.len(), 1);
            firsts.insert(p[0].chunk);
        }
        assert!(firsts.len() >= 6, "members start on {firsts:?}");
    }

    #[test]
    fn availability_kept_by_add_and_remove_matches_a_recount() {
        let n = 200u32;
        let mut maps = vec![Bitmap::new(n); 6];
        let mut kept = Availability::new(n);
        let mut state = 0x1234_5678_u64;
        for _ in 0..5000 {
            state = mix(state);
            let (m, i) = ((state % 6) as usize, ((state >> 8) % u64::from(n)) as u32);
            if state & (1 << 40) != 0 {
                if maps[m].set(i) {
                    kept.add(i);
                }
            } else if maps[m].clear(i) {
                kept.remove(i);
            }
        }
        assert_eq!(kept, Availability::from_bitmaps(n, &maps));
        for i in 0..n {
            assert_eq!(kept.present().get(i), kept.count(i) > 0);
        }
    }

    #[test]
    fn endgame_duplicates_only_stale_requests_on_another_peer() {
        let cs = chunks(4);
        let full = Bitmap::full(4);
        let mut have = Bitmap::new(4);
        have.set(0);
        have.set(1);
        let mut in_flight = InFlightSet::new(4);
        in_flight.request(2, 1, 0);
        in_flight.request(3, 1, 9_000);
        let peers = [peer(1, true, &full), peer(2, true, &full)];
        let p = plan_for(id(0), &cs, &have, &in_flight, &peers, &[id(0)], 10_000);
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
    fn the_reserve_serves_only_what_no_other_wan_peer_has_and_only_when_they_are_idle() {
        let cs = chunks(20);
        let full = Bitmap::full(20);
        let mut half = Bitmap::new(20);
        for i in 0..10 {
            half.set(i);
        }
        let have = Bitmap::new(20);
        let mut origin = peer(9, false, &full);
        origin.reserve = true;
        let site = peer(1, false, &half);
        // Another site has chunks 0..10: they come from it, and the origin is not asked for
        // the rest while that site is being asked.
        let p = plan_for(
            id(0),
            &cs,
            &have,
            &InFlightSet::new(20),
            &[origin.clone(), site.clone()],
            &[id(0)],
            0,
        );
        assert_eq!(p.len(), 10);
        assert!(p.iter().all(|a| a.peer == 1 && a.chunk < 10 && a.wan));
        let mut busy = site.clone();
        busy.in_flight_bytes = 1000;
        let mut in_flight = InFlightSet::new(20);
        for i in 0..10 {
            in_flight.request(i, 1, 0);
        }
        let p = plan_for(
            id(0),
            &cs,
            &have,
            &in_flight,
            &[origin.clone(), busy],
            &[id(0)],
            0,
        );
        assert!(p.is_empty(), "{p:?}");
        // Once the other site has had nothing more for a while, the origin gets the rest.
        let mut done = have.clone();
        for i in 0..10 {
            done.set(i);
        }
        let peers = [origin, site];
        let idle = InFlightSet::new(20);
        assert!(plan_for(id(0), &cs, &done, &idle, &peers, &[id(0)], 2_999).is_empty());
        let p = plan_for(id(0), &cs, &done, &idle, &peers, &[id(0)], 3_000);
        let mut got: Vec<u32> = p.iter().map(|a| a.chunk).collect();
        got.sort_unstable();
        assert_eq!(got, (10..20).collect::<Vec<_>>());
        assert!(p.iter().all(|a| a.peer == 0));
    }

    #[test]
    fn a_same_site_peer_outside_the_count_is_still_a_lan_holder() {
        // The count knows nothing; an extra same-site bitmap holds chunk 3: it is asked on
        // the LAN (not across the WAN), and not at all once that peer is dropped.
        let cs = chunks(8);
        let full = Bitmap::full(8);
        let mut extra = Bitmap::new(8);
        extra.set(3);
        let have = Bitmap::new(8);
        let in_flight: InFlightSet = InFlightSet::new(8);
        let lan = Availability::new(8);
        let nobody = Bitmap::new(8);
        let peers = [peer(1, true, &extra), peer(9, false, &full)];
        let run = |extras: &[&Bitmap], designated: &Bitmap| {
            let input = PlanInput {
                me: id(0),
                chunks: &cs,
                have: &have,
                in_flight: &in_flight,
                peers: &peers,
                lan: &lan,
                lan_extra: extras,
                designated,
                now_ms: 0,
                wan_idle_ms: 0,
                plan_wan: true,
                wan_held: None,
            };
            plan(&input, &PlannerConfig::default())
        };
        let p = run(&[&extra], &nobody);
        assert_eq!(
            p,
            vec![Assignment {
                chunk: 3,
                peer: 0,
                wan: false
            }]
        );
        // Designated for everything: chunk 3 still goes to the LAN, the rest to the WAN.
        let all = Bitmap::full(8);
        let p = run(&[&extra], &all);
        assert!(p.iter().all(|a| a.wan == (a.chunk != 3)), "{p:?}");
    }

    #[test]
    fn many_chunks_only_a_busy_peer_holds_do_not_hide_one_an_idle_peer_can_serve() {
        // 300 chunks only peer 1 has (it has no room), and chunk 300 that peer 2 has too:
        // the rare ones fail, and chunk 300 is still asked of peer 2.
        let cs = chunks(301);
        let full = Bitmap::full(301);
        let mut one = Bitmap::new(301);
        one.set(300);
        let have = Bitmap::new(301);
        let mut busy = peer(1, true, &full);
        busy.in_flight_bytes = busy.budget_bytes;
        let peers = [busy, peer(2, true, &one)];
        let p = plan_for(
            id(0),
            &cs,
            &have,
            &InFlightSet::new(301),
            &peers,
            &[id(0)],
            0,
        );
        assert_eq!(
            p,
            vec![Assignment {
                chunk: 300,
                peer: 1,
                wan: false
            }]
        );
    }

    #[test]
    fn the_holder_with_most_room_wins_and_ties_go_to_the_lower_id() {
        let cs = chunks(1);
        let (full, none) = (&Bitmap::full(1), &Bitmap::new(1));
        fn with_room(b: u8, have: &Bitmap, room: u64) -> PeerView<'_> {
            PeerView {
                in_flight_bytes: (1 << 20) - room,
                budget_bytes: 1 << 20,
                ..peer(b, true, have)
            }
        }
        let have = Bitmap::new(1);
        let in_flight = InFlightSet::new(1);
        let cases: [(Vec<PeerView<'_>>, usize); 3] = [
            // Most room wins whatever the order and the ids.
            (
                vec![
                    with_room(1, full, 2000),
                    with_room(9, full, 9000),
                    with_room(5, full, 4000),
                ],
                1,
            ),
            // Equal room: the lower id.
            (
                vec![
                    with_room(7, full, 9000),
                    with_room(3, full, 9000),
                    with_room(2, full, 1000),
                ],
                1,
            ),
            // The peer with the most room does not hold it: the next one that does.
            (
                vec![
                    with_room(4, full, 3000),
                    with_room(1, none, 9000),
                    with_room(8, full, 5000),
                ],
                2,
            ),
        ];
        for (peers, want) in cases {
            let p = plan_for(id(0), &cs, &have, &in_flight, &peers, &[id(0)], 0);
            assert_eq!(p.len(), 1);
            assert_eq!(p[0].peer, want);
        }
    }

    #[test]
    fn a_reused_scratch_plans_as_a_fresh_one() {
        // A fetch run pass after pass with one scratch, LAN and WAN peers and a reserve with
        // bitmaps of every density, against a fresh plan each time.
        let n = 300;
        let cs = chunks(n);
        let bits = |seed: u64, keep: u64| {
            let mut b = Bitmap::new(n);
            for i in 0..n {
                if mix(seed ^ u64::from(i)) % 8 < keep {
                    b.set(i);
                }
            }
            b
        };
        let lan: Vec<Bitmap> = (0..6).map(|k| bits(k, k % 5)).collect();
        let wan: Vec<Bitmap> = (0..4).map(|k| bits(100 + k, 2 + k % 4)).collect();
        let origin = Bitmap::full(n);
        let me = id(0);
        let members: Vec<[u8; 32]> = std::iter::once(me).chain((1..7).map(id)).collect();
        let designated = designated_chunks(&me, &members, &cs);
        let availability = Availability::from_bitmaps(n, &lan);
        let config = PlannerConfig::default();
        let mut have = bits(999, 1);
        let mut in_flight: InFlightSet = InFlightSet::new(n);
        let mut scratch = PlanScratch::default();
        let mut out = vec![Assignment {
            chunk: 0,
            peer: 99,
            wan: true,
        }];
        let mut passes = 0;
        while !have.is_full() && passes < 200 {
            let mut peers: Vec<PeerView<'_>> = Vec::new();
            for (k, b) in lan.iter().enumerate() {
                peers.push(PeerView {
                    budget_bytes: 4000 + 1000 * k as u64,
                    ..peer(1 + k as u8, true, b)
                });
            }
            for (k, b) in wan.iter().enumerate() {
                peers.push(PeerView {
                    budget_bytes: 3000,
                    ..peer(20 + k as u8, false, b)
                });
            }
            peers.push(PeerView {
                reserve: true,
                budget_bytes: 2000,
                ..peer(30, false, &origin)
            });
            let input = PlanInput {
                me,
                chunks: &cs,
                have: &have,
                in_flight: &in_flight,
                peers: &peers,
                lan: &availability,
                lan_extra: &[],
                designated: &designated,
                now_ms: passes * 1000,
                wan_idle_ms: passes * 1000,
                plan_wan: passes % 3 != 1,
                wan_held: None,
            };
            planner_reuse_check(&input, &config, &mut scratch, &mut out);
            // Every other pass the requests are answered; the rest stay in flight.
            for a in &out {
                in_flight.request(a.chunk, peers[a.peer].slot, passes * 1000);
            }
            if passes % 2 == 0 {
                for i in in_flight.iter().map(|(i, _)| i).collect::<Vec<_>>() {
                    in_flight.remove(i);
                    have.set(i);
                }
            }
            if out.is_empty() && in_flight.is_empty() {
                // Nobody this node may ask holds the rest: take it as arrived.
                for i in have.zeros().collect::<Vec<_>>() {
                    have.set(i);
                }
            }
            passes += 1;
        }
        assert!(have.is_full());
        assert!(passes > 5, "the run exercises several passes: {passes}");
    }

    fn planner_reuse_check<S: BuildHasher>(
        input: &PlanInput<'_, S>,
        config: &PlannerConfig,
        scratch: &mut PlanScratch,
        out: &mut Vec<Assignment>,
    ) {
        plan_with(input, config, scratch, out);
        assert_eq!(*out, plan(input, config));
    }

    #[test]
    fn in_flight_set_tracks_requests_and_answers() {
        let mut s: InFlightSet = InFlightSet::new(10);
        s.request(3, 1, 5);
        s.request(3, 2, 7);
        assert!(s.contains(3) && !s.contains(4));
        assert_eq!(s.get(3).unwrap().since_ms, 5);
        s.answered(3, 1);
        assert!(s.contains(3));
        s.answered(3, 2);
        assert!(!s.contains(3) && s.is_empty());
        s.request(4, 1, 0);
        s.remove(4);
        assert_eq!((s.len(), s.bits().count()), (0, 0));
    }

    #[test]
    fn in_flight_holds_two_requests_inline() {
        let mut f = InFlight::new(1, 5);
        assert!(f.add(2));
        assert!(!f.add(3));
        assert_eq!(f.peers(), &[1, 2]);
        assert!(!f.remove(1));
        assert_eq!(f.peers(), &[2]);
        assert!(!f.remove(9));
        assert!(f.remove(2));
        assert!(f.peers().is_empty());
    }

    #[test]
    fn nothing_is_planned_from_a_bitmap_of_the_wrong_length_or_an_unusable_peer() {
        let cs = chunks(4);
        let wrong = Bitmap::full(5);
        let full = Bitmap::full(4);
        let have = Bitmap::new(4);
        let mut banned = peer(2, true, &full);
        banned.usable = false;
        let peers = [peer(1, true, &wrong), banned];
        assert!(
            plan_for(
                id(0),
                &cs,
                &have,
                &InFlightSet::new(cs.len() as u32),
                &peers,
                &[id(0)],
                0
            )
            .is_empty()
        );
    }
}
