//! The fetch machine at fixed instants: no sockets, no clock, no tasks.

use super::*;
use protocol::ChunkId;

const MS: Duration = Duration::from_millis(1);

fn secs(x: u64) -> Duration {
    Duration::from_secs(x)
}

fn chunks(n: u32) -> Arc<[ChunkRef]> {
    (0..n)
        .map(|i| ChunkRef {
            id: ChunkId::of(&i.to_le_bytes()),
            len: 1000,
        })
        .collect()
}

/// A peer as the driver knows it.
struct P {
    id: [u8; 32],
    same_site: bool,
    have: Option<Bitmap>,
    reserve: bool,
}

/// One node's fetch and the peers it was told of; a peer's slot is its place in `peers`.
struct Node {
    fetch: Fetch,
    peers: Vec<P>,
    scratch: FetchScratch,
}

const ME: [u8; 32] = [1; 32];

fn node(n: u32, config: FetchConfig) -> Node {
    Node {
        fetch: Fetch::new(config, ME, chunks(n), Bitmap::new(n), Duration::ZERO),
        peers: Vec::new(),
        scratch: FetchScratch::default(),
    }
}

/// Budgets of `lan` and `wan` chunks of 1000 bytes.
fn budgets(lan: u64, wan: u64) -> FetchConfig {
    FetchConfig {
        lan_budget_bytes: lan * 1000,
        wan_budget_bytes: wan * 1000,
        ..FetchConfig::default()
    }
}

impl Node {
    fn add(&mut self, id: u8, same_site: bool, have: Option<Bitmap>) -> u32 {
        self.peers.push(P {
            id: [id; 32],
            same_site,
            have,
            reserve: false,
        });
        self.peers.len() as u32 - 1
    }

    fn poll(&mut self, now: Duration) -> Vec<Request> {
        let mut views: Vec<PeerView<'_>> = self
            .peers
            .iter()
            .enumerate()
            .map(|(k, p)| PeerView {
                id: p.id,
                slot: k as u32,
                same_site: p.same_site,
                have: p.have.as_ref(),
                in_flight_bytes: 0,
                budget_bytes: 0,
                usable: true,
                reserve: p.reserve,
            })
            .collect();
        let mut world = World {
            peers: &mut views,
            lan: None,
            wan_held: None,
            outranked: false,
            elsewhere: None,
            write_backlog_bytes: 0,
            designations: None,
            scratch: &mut self.scratch,
        };
        let mut out = Vec::new();
        self.fetch.poll_requests(now, &mut world, &mut out);
        out
    }

    fn events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.fetch.poll_event()).collect()
    }

    /// Answers every request in `reqs` at `now` with `answer`.
    fn answer(&mut self, now: Duration, reqs: &[Request], answer: Answer) {
        for r in reqs {
            self.fetch.handle_answer(now, r.slot, r.chunk, answer);
        }
    }
}

fn slots(reqs: &[Request]) -> Vec<u32> {
    let mut s: Vec<u32> = reqs.iter().map(|r| r.slot).collect();
    s.sort_unstable();
    s.dedup();
    s
}

#[test]
fn a_member_that_claims_everything_and_never_answers_is_snubbed_after_the_source_stall() {
    let mut n = node(20, budgets(64, 64));
    let liar = n.add(2, true, Some(Bitmap::full(20)));
    let far = n.add(9, false, Some(Bitmap::full(20)));
    let first = n.poll(Duration::ZERO);
    assert_eq!(first.len(), 20, "everything is on the LAN");
    assert_eq!(slots(&first), vec![liar]);
    assert_eq!(n.fetch.poll_timeout(), Some(SOURCE_STALL));
    assert!(n.poll(SOURCE_STALL - MS).is_empty());
    let again = n.poll(SOURCE_STALL);
    let events = n.events();
    assert!(events.contains(&Event::Snubbed {
        slot: liar,
        until: SOURCE_STALL + SNUB_BASE,
        reason: SnubReason::Stalled
    }));
    assert!(events.contains(&Event::Designated));
    // Alone in its site now, this node fetches every chunk across the WAN.
    assert_eq!((again.len(), slots(&again)), (20, vec![far]));
    n.answer(SOURCE_STALL + secs(1), &again, Answer::Delivered);
    assert_eq!(n.fetch.phase(), Phase::Verified);
    assert!(n.events().contains(&Event::Verified));
}

#[test]
fn a_member_that_resends_an_empty_bitmap_leaves_the_rendezvous_set_after_the_stall() {
    let mut n = node(40, budgets(64, 64));
    let idle = n.add(2, true, Some(Bitmap::new(40)));
    let far = n.add(9, false, Some(Bitmap::full(40)));
    let mine = n.poll(Duration::ZERO);
    assert!(
        !mine.is_empty() && mine.len() < 40,
        "the idle member has a share"
    );
    assert!(mine.iter().all(|r| r.slot == far));
    n.answer(secs(1), &mine, Answer::Delivered);
    // The bitmap comes again, as empty as before: no progress.
    for t in [5, 10] {
        n.peers[idle as usize].have = Some(Bitmap::new(40));
        n.fetch.handle_peers(secs(t), false);
        assert!(n.poll(secs(t)).is_empty(), "its share waits for it");
    }
    assert_eq!(n.fetch.poll_timeout(), Some(MEMBER_STALL));
    let rest = n.poll(MEMBER_STALL);
    assert!(n.events().contains(&Event::Designated));
    assert_eq!(rest.len() + mine.len(), 40);
    assert!(n.fetch.designated().is_full());
}

#[test]
fn a_member_that_claims_more_stays_and_one_that_delivers_stays() {
    let mut n = node(40, budgets(64, 64));
    let busy = n.add(2, true, Some(Bitmap::new(40)));
    n.add(9, false, Some(Bitmap::full(40)));
    let mine = n.poll(Duration::ZERO);
    let theirs: Vec<u32> = n.fetch.designated().zeros().collect();
    n.answer(secs(1), &mine, Answer::Delivered);
    // It claims one of its chunks at 10 s: still a member at 15 s.
    let mut b = Bitmap::new(40);
    b.set(theirs[0]);
    n.peers[busy as usize].have = Some(b);
    n.fetch.handle_peers(secs(10), false);
    assert!(
        n.poll(secs(10)).is_empty(),
        "announcements wait to travel together"
    );
    let lan = n.poll(secs(10) + PLAN_COALESCE);
    assert_eq!((lan.len(), lan[0].slot), (1, busy));
    n.events();
    assert!(n.poll(MEMBER_STALL).is_empty());
    assert!(!n.events().contains(&Event::Designated));
    // It delivers at 20 s (no new claim): a member until 35 s.
    n.answer(secs(20), &lan, Answer::Delivered);
    assert!(n.poll(secs(34)).is_empty());
    assert!(!n.fetch.designated().is_full());
    assert!(!n.poll(secs(35)).is_empty());
    assert!(n.fetch.designated().is_full());
}

#[test]
fn three_failures_in_a_row_snub_a_member_and_its_chunks_go_elsewhere() {
    let mut n = node(3, budgets(1, 64));
    let flaky = n.add(2, true, Some(Bitmap::full(3)));
    let good = n.add(3, true, Some(Bitmap::full(3)));
    let reqs = n.poll(Duration::ZERO);
    assert_eq!(reqs.len(), 2, "one chunk per peer");
    let to_flaky: Vec<Request> = reqs.iter().copied().filter(|r| r.slot == flaky).collect();
    for (t, answer) in [(1, Answer::Busy), (2, Answer::Timeout)] {
        n.answer(t * MS, &to_flaky, answer);
        let again = n.poll(t * MS);
        assert!(again.iter().any(|r| r.slot == flaky), "asked again");
    }
    n.answer(3 * MS, &to_flaky, Answer::NotFound);
    assert!(n.events().iter().any(|e| matches!(
        e,
        Event::Snubbed {
            slot,
            reason: SnubReason::Failing,
            ..
        } if *slot == flaky
    )));
    assert!(n.fetch.is_snubbed(flaky, 3 * MS));
    let to_good: Vec<Request> = reqs.iter().copied().filter(|r| r.slot == good).collect();
    n.answer(4 * MS, &to_good, Answer::Delivered);
    let later = n.poll(4 * MS);
    assert!(!later.is_empty() && later.iter().all(|r| r.slot == good));
}

#[test]
fn a_bad_chunk_is_a_strike_and_a_banned_member_leaves_the_designation() {
    let mut n = node(40, budgets(64, 64));
    let bad = n.add(2, true, Some(Bitmap::full(40)));
    n.add(9, false, Some(Bitmap::full(40)));
    let reqs = n.poll(Duration::ZERO);
    assert!(!n.fetch.designated().is_full());
    n.fetch.handle_answer(MS, bad, reqs[0].chunk, Answer::Bad);
    assert!(n.events().contains(&Event::Strike { slot: bad }));
    // The driver's strikes table banned it: it is no longer shown.
    n.peers.remove(bad as usize);
    n.peers.insert(
        bad as usize,
        P {
            id: [0xee; 32],
            same_site: false,
            have: None,
            reserve: false,
        },
    );
    n.fetch.handle_peers(2 * MS, true);
    n.poll(60 * MS);
    assert!(n.fetch.designated().is_full());
}

#[test]
fn the_reserve_is_asked_only_once_the_wan_was_idle_for_a_while() {
    let mut n = node(5, budgets(64, 64));
    let origin = n.add(9, false, Some(Bitmap::full(5)));
    n.peers[origin as usize].reserve = true;
    assert!(n.poll(Duration::ZERO).is_empty());
    let after = Duration::from_millis(PlannerConfig::default().reserve_after_ms);
    assert_eq!(n.fetch.poll_timeout(), Some(after));
    assert!(n.poll(after - MS).is_empty());
    let reqs = n.poll(after);
    assert_eq!((reqs.len(), slots(&reqs)), (5, vec![origin]));
}

#[test]
fn the_endgame_asks_a_second_peer_for_a_request_that_is_late() {
    let mut n = node(3, budgets(64, 64));
    n.add(2, true, Some(Bitmap::full(3)));
    n.add(3, true, Some(Bitmap::full(3)));
    let reqs = n.poll(Duration::ZERO);
    assert_eq!(reqs.len(), 3);
    let late = reqs[2];
    n.answer(100 * MS, &reqs[..2], Answer::Delivered);
    assert!(n.poll(100 * MS).is_empty(), "the last chunk is in flight");
    let endgame = Duration::from_millis(PlannerConfig::default().endgame_after_ms);
    assert_eq!(n.fetch.poll_timeout(), Some(endgame));
    let dup = n.poll(endgame);
    assert_eq!(dup.len(), 1);
    assert_eq!(dup[0].chunk, late.chunk);
    assert_ne!(dup[0].slot, late.slot);
    // The first answer wins; the other is a duplicate.
    assert!(
        n.fetch
            .handle_answer(endgame + MS, dup[0].slot, late.chunk, Answer::Delivered)
    );
    assert!(
        !n.fetch
            .handle_answer(endgame + 2 * MS, late.slot, late.chunk, Answer::Delivered)
    );
    assert_eq!(n.fetch.phase(), Phase::Verified);
}

#[test]
fn a_superseded_fetch_asks_nothing_more() {
    let mut n = node(4, budgets(1, 1));
    n.add(2, true, Some(Bitmap::full(4)));
    let reqs = n.poll(Duration::ZERO);
    n.fetch.handle_superseded();
    assert_eq!(n.events(), vec![Event::Designated, Event::Superseded]);
    assert!(
        !n.fetch
            .handle_answer(MS, reqs[0].slot, reqs[0].chunk, Answer::Delivered)
    );
    assert!(n.poll(secs(1)).is_empty());
    assert_eq!(n.fetch.poll_timeout(), None);
}

#[test]
fn a_window_that_closes_mid_fetch_pauses_it_until_it_opens() {
    let mut n = node(4, budgets(2, 2));
    n.add(2, true, Some(Bitmap::full(4)));
    let reqs = n.poll(Duration::ZERO);
    assert_eq!(reqs.len(), 2);
    n.fetch.handle_window(secs(1), false, Some(secs(3_600)));
    assert!(n.events().contains(&Event::Paused {
        opens: Some(secs(3_600))
    }));
    // What was in flight lands and stays; nothing new is asked.
    n.answer(secs(2), &reqs, Answer::Delivered);
    assert_eq!(n.fetch.have().count(), 2);
    assert!(n.poll(secs(2)).is_empty());
    assert_eq!(n.fetch.poll_timeout(), Some(secs(3_600)));
    n.fetch.handle_window(secs(3_600), true, None);
    assert!(n.events().contains(&Event::Resumed));
    assert_eq!(n.poll(secs(3_600)).len(), 2);
}

#[test]
fn an_answer_that_frees_a_starved_peer_plans_at_once_announcements_wait() {
    let mut n = node(10, budgets(64, 2));
    let far = n.add(9, false, Some(Bitmap::full(10)));
    let reqs = n.poll(Duration::ZERO);
    assert_eq!(reqs.len(), 2, "the WAN budget is two chunks");
    n.fetch
        .handle_answer(200 * MS, far, reqs[0].chunk, Answer::Delivered);
    assert_eq!(
        n.poll(200 * MS).len(),
        1,
        "a quarter of the budget came back"
    );
    // An announcement waits for the coalescing interval.
    n.fetch.handle_peers(210 * MS, false);
    assert!(n.poll(210 * MS).is_empty());
    assert_eq!(n.fetch.poll_timeout(), Some(210 * MS + PLAN_COALESCE));
}

#[test]
fn an_outranked_fetch_keeps_a_quarter_of_each_budget() {
    let mut n = node(64, budgets(8, 8));
    n.add(2, true, Some(Bitmap::full(64)));
    let mut views = vec![PeerView {
        id: [2; 32],
        slot: 0,
        same_site: true,
        have: n.peers[0].have.as_ref(),
        in_flight_bytes: 0,
        budget_bytes: 0,
        usable: true,
        reserve: false,
    }];
    let mut world = World {
        peers: &mut views,
        lan: None,
        wan_held: None,
        outranked: true,
        elsewhere: None,
        write_backlog_bytes: 0,
        designations: None,
        scratch: &mut n.scratch,
    };
    let mut out = Vec::new();
    n.fetch.poll_requests(Duration::ZERO, &mut world, &mut out);
    assert_eq!(out.len(), 2, "8 chunks / 4");
}

#[test]
fn a_write_backlog_holds_requests_until_a_checkpoint() {
    let mut n = node(8, budgets(8, 8));
    n.add(2, true, Some(Bitmap::full(8)));
    let have = n.peers[0].have.clone();
    let mut views = vec![PeerView {
        id: [2; 32],
        slot: 0,
        same_site: true,
        have: have.as_ref(),
        in_flight_bytes: 0,
        budget_bytes: 0,
        usable: true,
        reserve: false,
    }];
    let mut out = Vec::new();
    let mut world = World {
        peers: &mut views,
        lan: None,
        wan_held: None,
        outranked: false,
        elsewhere: None,
        write_backlog_bytes: WRITE_BACKLOG_BYTES,
        designations: None,
        scratch: &mut n.scratch,
    };
    n.fetch.poll_requests(Duration::ZERO, &mut world, &mut out);
    assert!(out.is_empty());
    assert_eq!(n.fetch.poll_timeout(), None, "it waits for the writer");
    n.fetch.handle_durable(MS);
    world.write_backlog_bytes = 0;
    n.fetch.poll_requests(MS, &mut world, &mut out);
    assert_eq!(out.len(), 8);
}

#[test]
fn checkpoints_come_at_the_interval_the_size_or_the_end() {
    let mut c = Checkpoint::default();
    assert_eq!(c.due(), None);
    assert_eq!(c.stage(MS, 1000, false), MS + CHECKPOINT_INTERVAL);
    assert_eq!(c.stage(2 * MS, 1000, false), MS + CHECKPOINT_INTERVAL);
    assert_eq!(c.stage(3 * MS, CHECKPOINT_BYTES, false), 3 * MS);
    c.taken();
    assert_eq!((c.due(), c.staged_bytes()), (None, 0));
    assert_eq!(c.stage(4 * MS, 1, true), 4 * MS);
}

#[test]
fn the_shared_designations_agree_with_designating_alone() {
    let cs = chunks(500);
    let members: Vec<[u8; 32]> = (1..=7u8).map(|b| [b; 32]).collect();
    let mut cache = planner::Designations::default();
    for m in &members {
        assert_eq!(
            cache.designated_chunks(m, &members, &cs),
            planner::designated_chunks(m, &members, &cs)
        );
    }
}

#[test]
fn chunks_another_fetch_has_in_flight_are_waited_for_not_asked_again() {
    let mut n = node(6, budgets(64, 64));
    n.add(2, true, Some(Bitmap::full(6)));
    let mut elsewhere = Bitmap::new(6);
    for i in 0..4 {
        elsewhere.set(i);
    }
    let have = n.peers[0].have.clone();
    let poll = |n: &mut Node, now: Duration, elsewhere: Option<&Bitmap>| {
        let mut views = vec![PeerView {
            id: [2; 32],
            slot: 0,
            same_site: true,
            have: have.as_ref(),
            in_flight_bytes: 0,
            budget_bytes: 0,
            usable: true,
            reserve: false,
        }];
        let mut world = World {
            peers: &mut views,
            lan: None,
            wan_held: None,
            outranked: false,
            elsewhere,
            write_backlog_bytes: 0,
            designations: None,
            scratch: &mut n.scratch,
        };
        let mut out = Vec::new();
        n.fetch.poll_requests(now, &mut world, &mut out);
        out
    };
    let first = poll(&mut n, Duration::ZERO, Some(&elsewhere));
    let asked: Vec<u32> = first.iter().map(|r| r.chunk).collect();
    assert_eq!(asked.len(), 2);
    assert!(asked.iter().all(|&i| i >= 4), "{asked:?}");
    // The other fetch stored two of them; it gave up on the other two.
    assert!(n.fetch.handle_held(MS, 0));
    assert!(n.fetch.handle_held(MS, 1));
    assert!(!n.fetch.handle_held(MS, 1), "once");
    let mut still = Bitmap::new(6);
    still.set(3);
    n.fetch.handle_peers(MS, false);
    let second = poll(&mut n, 60 * MS, Some(&still));
    assert_eq!(second.iter().map(|r| r.chunk).collect::<Vec<_>>(), vec![2]);
    n.answer(70 * MS, &first, Answer::Delivered);
    n.answer(70 * MS, &second, Answer::Delivered);
    assert!(n.fetch.handle_held(80 * MS, 3));
    assert_eq!(n.fetch.phase(), Phase::Verified);
}

/// Ten chunks (units 0..10) and four pieces (units 10..14): a patch of pieces 10 and 11
/// stands for chunks 0..6.
fn patched() -> crate::patches::Chosen {
    crate::patches::Chosen {
        patch: 0,
        pieces: vec![10, 11],
        covers: (0..6).collect(),
    }
}

#[test]
fn a_patch_is_fetched_instead_of_the_chunks_it_stands_for_and_the_file_rebuilt() {
    let mut n = node(14, budgets(64, 64));
    let far = n.add(9, false, Some(Bitmap::full(14)));
    n.fetch.use_patches(10, vec![patched()]);
    let reqs = n.poll(Duration::ZERO);
    let mut asked: Vec<u32> = reqs.iter().map(|r| r.chunk).collect();
    asked.sort_unstable();
    // The pieces, and the chunks no patch stands for; not the other pieces.
    assert_eq!(asked, [6, 7, 8, 9, 10, 11]);
    assert!(reqs.iter().all(|r| r.slot == far));
    n.answer(secs(1), &reqs, Answer::Delivered);
    // Everything asked came: the file is rebuilt, and the fetch is not verified before.
    assert_eq!(n.events(), [Event::Designated, Event::Rebuild { k: 0 }]);
    assert_eq!(n.fetch.phase(), Phase::Fetching);
    assert_eq!(n.fetch.patch_covers(0), (0..6).collect::<Vec<u32>>());
    n.fetch.handle_rebuilt(secs(2), 0, true);
    assert_eq!(n.fetch.phase(), Phase::Verified);
    assert!(n.events().contains(&Event::Verified));
}

#[test]
fn a_patch_that_does_not_rebuild_its_file_gives_way_to_its_chunks() {
    let mut n = node(14, budgets(64, 64));
    n.add(9, false, Some(Bitmap::full(14)));
    n.fetch.use_patches(10, vec![patched()]);
    let reqs = n.poll(Duration::ZERO);
    n.answer(secs(1), &reqs, Answer::Delivered);
    assert!(n.events().contains(&Event::Rebuild { k: 0 }));
    n.fetch.handle_rebuilt(secs(2), 0, false);
    // The WAN peers are told of the chunks wanted now.
    assert!(n.events().contains(&Event::Designated));
    // The chunks it stood for are asked now; the unused pieces still are not.
    let again = n.poll(secs(2));
    let mut asked: Vec<u32> = again.iter().map(|r| r.chunk).collect();
    asked.sort_unstable();
    assert_eq!(asked, [0, 1, 2, 3, 4, 5]);
    n.answer(secs(3), &again, Answer::Delivered);
    assert_eq!(n.fetch.phase(), Phase::Verified);
}

#[test]
fn a_node_without_a_patch_fetches_chunks_only_and_a_chunk_stored_elsewhere_counts() {
    let mut n = node(14, budgets(64, 64));
    n.add(9, false, Some(Bitmap::full(14)));
    n.fetch.use_patches(10, vec![]);
    // Another fetch of this node brought chunk 3.
    assert!(n.fetch.handle_held(Duration::ZERO, 3));
    let reqs = n.poll(Duration::ZERO);
    let mut asked: Vec<u32> = reqs.iter().map(|r| r.chunk).collect();
    asked.sort_unstable();
    assert_eq!(asked, [0, 1, 2, 4, 5, 6, 7, 8, 9]);
    n.answer(secs(1), &reqs, Answer::Delivered);
    assert_eq!(n.fetch.phase(), Phase::Verified);
    // A chunk a pending patch stands for, stored by another fetch, is held at once.
    let mut m = node(14, budgets(64, 64));
    m.fetch.use_patches(10, vec![patched()]);
    assert!(m.fetch.handle_held(Duration::ZERO, 2));
    assert!(!m.fetch.handle_held(Duration::ZERO, 2));
}
