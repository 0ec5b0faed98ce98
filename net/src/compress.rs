//! Chunks compressed on the wire ([`chunking::compress`]): which peers get them, and what
//! each chunk compressed to, kept so that a chunk sent to many sites is compressed once.
//!
//! A chunk is sent compressed to a peer when the connection's protocol has compressed
//! chunks ([`protocol::wire::COMPRESSED_CHUNKS_VERSION`], agreed in the QUIC handshake) and
//! this node's [`Compression`] rule names the peer's class (by default: peers of other
//! sites). Whether a chunk shrinks is learnt once, the first time it is sent compressed,
//! and kept in the [`WireCache`] with the compressed bytes, or with nothing where it does
//! not shrink: an origin that sends a release to 500 sites compresses each chunk once, and
//! tries an incompressible one once.

use crate::config::Compression;
use crate::shape::Class;
use bytes::Bytes;
use protocol::ChunkId;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// Most compressed bytes the [`WireCache`] keeps: a few hundred chunks, the ones a server is
/// sending to its WAN peers now (the sites of a release ask for the same chunks within
/// minutes of each other).
pub const WIRE_CACHE_BYTES: usize = 16 << 20;

/// Most chunks the [`WireCache`] knows of, compressed or found incompressible (an entry
/// without bytes costs about 60 bytes).
pub const WIRE_CACHE_ENTRIES: usize = 16_384;

/// Whether chunks go compressed to a peer of `class` on a connection of protocol `version`
/// under rule `rule`.
pub fn sends_compressed(rule: Compression, version: u16, class: Class) -> bool {
    version >= protocol::wire::COMPRESSED_CHUNKS_VERSION
        && match rule {
            Compression::Off => false,
            Compression::Always => true,
            Compression::Wan => class == Class::Wan,
        }
}

/// What chunks compressed to, first in first out within [`WIRE_CACHE_BYTES`] and
/// [`WIRE_CACHE_ENTRIES`].
#[derive(Default)]
pub struct WireCache(Mutex<Inner>);

#[derive(Default)]
struct Inner {
    /// A chunk's compressed bytes, or `None`: it does not shrink.
    map: HashMap<ChunkId, Option<Bytes>>,
    order: VecDeque<ChunkId>,
    bytes: usize,
}

impl WireCache {
    /// What `id` compresses to: `Some(Some(bytes))`, `Some(None)` if it does not shrink,
    /// `None` if not known.
    pub fn get(&self, id: &ChunkId) -> Option<Option<Bytes>> {
        crate::lock(&self.0).map.get(id).cloned()
    }

    /// Keeps what `id` compressed to.
    pub fn put(&self, id: ChunkId, z: Option<Bytes>) {
        let len = z.as_ref().map_or(0, Bytes::len);
        if len > WIRE_CACHE_BYTES {
            return;
        }
        let mut s = crate::lock(&self.0);
        if s.map.contains_key(&id) {
            return;
        }
        while s.bytes + len > WIRE_CACHE_BYTES || s.map.len() >= WIRE_CACHE_ENTRIES {
            let Some(old) = s.order.pop_front() else {
                break;
            };
            if let Some(Some(b)) = s.map.remove(&old) {
                s.bytes -= b.len();
            }
        }
        s.bytes += len;
        s.map.insert(id, z);
        s.order.push_back(id);
    }

    /// Compressed bytes kept.
    pub fn bytes(&self) -> usize {
        crate::lock(&self.0).bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule_follows_the_class_and_the_agreed_version() {
        let new = protocol::wire::COMPRESSED_CHUNKS_VERSION;
        let old = protocol::PROTOCOL_VERSION_MIN;
        assert!(sends_compressed(Compression::Wan, new, Class::Wan));
        assert!(!sends_compressed(Compression::Wan, new, Class::Lan));
        assert!(sends_compressed(Compression::Always, new, Class::Lan));
        assert!(!sends_compressed(Compression::Off, new, Class::Wan));
        // A peer that speaks the protocol before compression never gets it.
        assert!(!sends_compressed(Compression::Always, old, Class::Wan));
    }

    #[test]
    fn the_cache_stays_within_its_bounds_oldest_out_first() {
        let c = WireCache::default();
        let id = |i: u32| ChunkId::of(&i.to_le_bytes());
        let piece = WIRE_CACHE_BYTES / 4;
        for i in 0..4 {
            c.put(id(i), Some(Bytes::from(vec![0u8; piece])));
        }
        assert_eq!(c.bytes(), WIRE_CACHE_BYTES);
        c.put(id(4), Some(Bytes::from(vec![0u8; piece])));
        assert_eq!(c.get(&id(0)), None);
        assert!(c.get(&id(1)).is_some() && c.get(&id(4)).is_some());
        assert_eq!(c.bytes(), WIRE_CACHE_BYTES);
        // Too large to keep at all.
        c.put(id(9), Some(Bytes::from(vec![0u8; WIRE_CACHE_BYTES + 1])));
        assert_eq!(c.get(&id(9)), None);
        // Known not to shrink; and the entry bound holds.
        for i in 10..10 + WIRE_CACHE_ENTRIES as u32 {
            c.put(id(i), None);
        }
        assert_eq!(c.get(&id(10 + WIRE_CACHE_ENTRIES as u32 - 1)), Some(None));
        assert_eq!(c.get(&id(4)), None);
        assert_eq!(c.bytes(), 0);
    }
}
