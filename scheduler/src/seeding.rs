//! Initial seeding: BitTorrent's "super-seeding", per site. While a release its origin
//! published exists nowhere else, the origin shows each other site only that site's share of
//! the chunks (rendezvous hashing of each chunk over the connected sites, [`shares`]), so
//! every chunk leaves the origin about once and the sites trade the rest among themselves.
//! Once every chunk has crossed the WAN at least once, or no new chunk was asked for in
//! [`SEED_STALL_MS`], the origin shows everyone everything ([`Seeding`]), so that a site that
//! vanished cannot strand its share.
//!
//! Pure, like the rest of the crate: the daemon and the simulator make the same choices.

use crate::planner::mix;
use protocol::ChunkRef;
use protocol::wire::Bitmap;

/// How long the origin waits for a request of a chunk that has not yet crossed the WAN
/// before it shows every site every chunk: long enough for sites to trade what they have
/// (a few seconds of WAN round trips), short enough that a vanished site costs little.
pub const SEED_STALL_MS: u64 = 5_000;

/// The rendezvous key of a site name (FNV-1a, then mixed: stable across platforms and
/// releases, which is all it needs to be).
pub fn site_key(site: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in site.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix(h)
}

/// For each chunk, the index in `sites` (site keys) of the site whose share it is; `None`
/// when there are no sites.
pub fn shares(sites: &[u64], chunks: &[ChunkRef]) -> Option<Vec<u32>> {
    if sites.is_empty() {
        return None;
    }
    Some(
        chunks
            .iter()
            .map(|c| {
                let w = mix(u64::from_le_bytes(
                    c.id.as_bytes()[..8].try_into().expect("8 bytes"),
                ));
                (0..sites.len())
                    .max_by_key(|&s| (mix(sites[s] ^ w), sites[s]))
                    .expect("at least one site") as u32
            })
            .collect(),
    )
}

/// The share of `site` as a bitmap, given the owners from [`shares`] (every chunk when
/// there is no owner list).
pub fn share_bitmap(owners: Option<&[u32]>, site: usize, n: u32) -> Bitmap {
    match owners {
        None => Bitmap::full(n),
        Some(o) => {
            let mut b = Bitmap::new(n);
            for (i, &s) in o.iter().enumerate() {
                if s as usize == site {
                    b.set(i as u32);
                }
            }
            b
        }
    }
}

/// The origin's record of initial seeding for one release.
#[derive(Debug, Clone)]
pub struct Seeding {
    served: Bitmap,
    last_growth_ms: u64,
    revealed: bool,
}

impl Seeding {
    /// Seeding of `n` chunks, starting at `now_ms`.
    pub fn new(n: u32, now_ms: u64) -> Self {
        Self {
            served: Bitmap::new(n),
            last_growth_ms: now_ms,
            revealed: false,
        }
    }

    /// Whether every site is now shown every chunk.
    pub fn revealed(&self) -> bool {
        self.revealed
    }

    /// Notes that chunk `i` crossed the WAN; true when seeding just ended.
    pub fn served(&mut self, i: u32, now_ms: u64) -> bool {
        if self.revealed {
            return false;
        }
        if self.served.set(i) {
            self.last_growth_ms = now_ms;
        }
        if self.served.is_full() {
            self.revealed = true;
            return true;
        }
        false
    }

    /// Ends seeding if no new chunk crossed the WAN for [`SEED_STALL_MS`]; true if it just
    /// ended.
    pub fn check_stall(&mut self, now_ms: u64) -> bool {
        if !self.revealed && now_ms.saturating_sub(self.last_growth_ms) >= SEED_STALL_MS {
            self.revealed = true;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::ChunkId;

    #[test]
    fn shares_partition_the_chunks_evenly_and_seeding_ends_when_all_left_once() {
        let chunks: Vec<ChunkRef> = (0..6000u32)
            .map(|i| ChunkRef {
                id: ChunkId::of(&i.to_le_bytes()),
                len: 1,
            })
            .collect();
        let sites: Vec<u64> = ["tokyo", "berlin", "lima"]
            .iter()
            .map(|s| site_key(s))
            .collect();
        let owners = shares(&sites, &chunks).unwrap();
        let maps: Vec<Bitmap> = (0..3)
            .map(|s| share_bitmap(Some(&owners), s, 6000))
            .collect();
        for m in &maps {
            assert!((1700..2300).contains(&m.count()), "share {}", m.count());
        }
        assert_eq!(maps.iter().map(Bitmap::count).sum::<u32>(), 6000);
        assert!(share_bitmap(None, 0, 10).is_full());
        assert!(shares(&[], &chunks).is_none());

        let mut s = Seeding::new(3, 0);
        assert!(!s.served(0, 10));
        assert!(!s.served(0, 20));
        assert!(!s.check_stall(4_999 + 10));
        assert!(!s.served(1, 6_000));
        assert!(s.served(2, 6_001));
        assert!(s.revealed());
        let mut stalled = Seeding::new(3, 0);
        stalled.served(0, 100);
        assert!(stalled.check_stall(5_100));
        assert!(!stalled.check_stall(9_000), "ends once");
    }
}
