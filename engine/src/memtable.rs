//! The memtable: recent versions of keys, multi-versioned by sequence number so that
//! readers take consistent snapshots without locks on the write path's structures or
//! copies.
//!
//! A batch's operations share one sequence number; a snapshot at sequence `s` sees, per
//! key, the newest version with a sequence number `<= s`. Writers insert under the
//! engine's apply lock and publish the batch's sequence number afterwards, so no reader
//! ever sees part of a batch.
//!
//! Each key has one chain of versions (oldest first), shared by two structures:
//! - a hash index, sharded under read-write locks, for point reads and for writes: a
//!   skip list of a few hundred thousand entries costs a cache miss per level on every
//!   lookup (58% of duplexd's time in a GET profile at pipeline 16), the index a hash and
//!   about two;
//! - a concurrent skip list with **one node per key**, in key order, for scans and
//!   checkpoints. A new version of a key already held is a push on its chain, found
//!   through the index: only a key new to the table costs a skip-list insert (with a node
//!   per version, every SET searched the whole list: 24% of a SET profile).

use std::ops::Bound;
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::sync::Arc;

use crossbeam_skiplist::SkipMap;
use parking_lot::RwLock;
use smallvec::SmallVec;
use xxhash_rust::xxh3::xxh3_64;

use crate::hlc::Stamp;

/// A version in a memtable: stamp and value (`None` for a tombstone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemVersion {
    /// Timestamp and origin.
    pub stamp: Stamp,
    /// The value, `None` for a tombstone.
    pub value: Option<Vec<u8>>,
}

/// Keys up to 32 bytes live inline (in the skip-list node and the index entry).
type Key = SmallVec<[u8; 32]>;

/// Shards of the hash index (a power of two): readers on two I/O threads rarely meet on
/// one shard's lock.
const SHARDS: usize = 64;
/// Bytes counted per version for the index entry (key copy aside).
const INDEX_OVERHEAD: usize = 32;

/// A key's versions: (sequence number, version), oldest first, so that a new version is a
/// push and a hot key's long chain never moves.
type Chain = SmallVec<[(u64, Arc<MemVersion>); 1]>;
/// A key's chain, shared by the index and the skip list.
type Versions = Arc<RwLock<Chain>>;

/// One entry of the index: the key's hash (kept, so growing the table never hashes again),
/// the key, its versions.
struct IndexEntry {
    hash: u64,
    key: Key,
    versions: Versions,
}

impl std::fmt::Debug for IndexEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "IndexEntry({} versions)", self.versions.read().len())
    }
}

/// One shard of the index: a table searched by the key's XXH3 hash, computed once per
/// lookup (the shard is picked from other bits of the same hash).
type Shard = RwLock<hashbrown::HashTable<IndexEntry>>;

/// The newest version in `chain` at or below sequence `seq`.
fn visible(chain: &Chain, seq: u64) -> Option<&Arc<MemVersion>> {
    chain.iter().rev().find(|(s, _)| *s <= seq).map(|(_, v)| v)
}

/// A multi-versioned sorted table of recent writes.
#[derive(Debug)]
pub struct MemTable {
    /// One node per key, in key order.
    map: SkipMap<Key, Versions>,
    index: Box<[Shard]>,
    bytes: AtomicUsize,
    /// Versions held (every key's chain).
    versions: AtomicUsize,
}

impl Default for MemTable {
    fn default() -> Self {
        MemTable {
            map: SkipMap::new(),
            index: (0..SHARDS).map(|_| Shard::default()).collect(),
            bytes: AtomicUsize::new(0),
            versions: AtomicUsize::new(0),
        }
    }
}

impl MemTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// The key's hash and its shard. The table uses the hash's low bits and top seven;
    /// the shard is picked from bits in between.
    fn shard(&self, key: &[u8]) -> (u64, &Shard) {
        let h = xxh3_64(key);
        (h, &self.index[((h >> 40) as usize) & (SHARDS - 1)])
    }

    /// True if the table holds no version.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Number of versions held.
    pub fn len(&self) -> usize {
        self.versions.load(AtomicOrdering::Relaxed)
    }

    /// Approximate bytes of keys and values held.
    pub fn bytes(&self) -> usize {
        self.bytes.load(AtomicOrdering::Relaxed)
    }

    /// Adds a version written by batch `seq`. A second operation of the same batch on the
    /// same key replaces the first.
    pub(crate) fn insert(&self, key: Vec<u8>, seq: u64, v: MemVersion) {
        let n = 2 * key.len() + v.value.as_ref().map_or(0, Vec::len) + 48 + INDEX_OVERHEAD;
        self.bytes.fetch_add(n, AtomicOrdering::Relaxed);
        let v = Arc::new(v);
        let (hash, shard) = self.shard(&key);
        let mut shard = shard.write();
        if let Some(e) = shard.find(hash, |e| e.key.as_slice() == key.as_slice()) {
            let mut chain = e.versions.write();
            // Batches come in rising sequence order; one out of order (or a second
            // operation of the same batch) goes where it belongs.
            match chain.iter().rposition(|(s, _)| *s <= seq) {
                Some(i) if chain[i].0 == seq => {
                    chain[i].1 = v;
                    return;
                }
                Some(i) => chain.insert(i + 1, (seq, v)),
                None => chain.insert(0, (seq, v)),
            }
            self.versions.fetch_add(1, AtomicOrdering::Relaxed);
            return;
        }
        // A key new to the table: into the index, then the skip list (under the shard's
        // lock, so a second writer of the key finds it in the index). A scan that misses
        // the node meanwhile misses nothing visible: the batch's sequence number is
        // published only after every insert.
        let key = Key::from_vec(key);
        let versions: Versions = Arc::new(RwLock::new(SmallVec::from_buf([(seq, v)])));
        shard.insert_unique(
            hash,
            IndexEntry {
                hash,
                key: key.clone(),
                versions: versions.clone(),
            },
            |e| e.hash,
        );
        self.map.insert(key, versions);
        self.versions.fetch_add(1, AtomicOrdering::Relaxed);
    }

    /// The newest version of `key` visible at sequence `seq`.
    pub fn get(&self, key: &[u8], seq: u64) -> Option<MemVersion> {
        self.get_shared(key, seq).map(|v| MemVersion::clone(&v))
    }

    /// [`MemTable::get`] without copying the value: the version itself, shared.
    pub(crate) fn get_shared(&self, key: &[u8], seq: u64) -> Option<Arc<MemVersion>> {
        let (hash, shard) = self.shard(key);
        let shard = shard.read();
        let e = shard.find(hash, |e| e.key.as_slice() == key)?;
        let chain = e.versions.read();
        visible(&chain, seq).cloned()
    }

    /// The stamp of the newest version of `key`, whatever its sequence number.
    pub fn latest_stamp(&self, key: &[u8]) -> Option<Stamp> {
        let (hash, shard) = self.shard(key);
        let shard = shard.read();
        let e = shard.find(hash, |e| e.key.as_slice() == key)?;
        let chain = e.versions.read();
        chain.last().map(|(_, v)| v.stamp)
    }

    /// The first key at or after `start` (within the bounds' sense) that has a version
    /// visible at `seq`, with that version.
    pub fn next_visible(&self, start: Bound<&[u8]>, seq: u64) -> Option<(Vec<u8>, MemVersion)> {
        let mut e = match start {
            Bound::Unbounded => self.map.front()?,
            Bound::Included(k) => self.map.lower_bound(Bound::Included(k))?,
            Bound::Excluded(k) => self.map.lower_bound(Bound::Excluded(k))?,
        };
        loop {
            if let Some(v) = visible(&e.value().read(), seq) {
                return Some((e.key().to_vec(), MemVersion::clone(v)));
            }
            e = e.next()?;
        }
    }

    /// The newest version of every key, in key order (for a checkpoint of a frozen table,
    /// where every version is visible).
    pub fn newest(&self) -> Vec<(Vec<u8>, MemVersion)> {
        let mut out: Vec<(Vec<u8>, MemVersion)> = Vec::with_capacity(self.map.len());
        for e in self.map.iter() {
            if let Some((_, v)) = e.value().read().last() {
                out.push((e.key().to_vec(), MemVersion::clone(v)));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hlc::Timestamp;

    fn v(ts: u64, val: Option<&[u8]>) -> MemVersion {
        MemVersion {
            stamp: Stamp {
                ts: Timestamp(ts),
                origin: 1,
            },
            value: val.map(<[u8]>::to_vec),
        }
    }

    #[test]
    fn snapshots_see_the_newest_version_at_or_below_their_sequence() {
        let m = MemTable::new();
        m.insert(b"a".to_vec(), 1, v(1, Some(b"a1")));
        m.insert(b"b".to_vec(), 2, v(2, Some(b"b2")));
        m.insert(b"a".to_vec(), 3, v(3, None));
        m.insert(b"ab".to_vec(), 3, v(3, Some(b"ab3")));
        assert_eq!(m.get(b"a", 1), Some(v(1, Some(b"a1"))));
        assert_eq!(m.get(b"a", 2), Some(v(1, Some(b"a1"))));
        assert_eq!(m.get(b"a", 3), Some(v(3, None)));
        assert_eq!(m.get(b"ab", 2), None);
        assert_eq!(m.get(b"c", 9), None);
        assert_eq!(m.latest_stamp(b"a").map(|s| s.ts.0), Some(3));
        // Iteration at sequence 2 skips "ab" (written later) and shows "a" as of seq 1.
        let mut seen = Vec::new();
        let mut start: Option<Vec<u8>> = None;
        loop {
            let b = match &start {
                None => Bound::Unbounded,
                Some(k) => Bound::Excluded(k.as_slice()),
            };
            let Some((k, ver)) = m.next_visible(b, 2) else {
                break;
            };
            seen.push((k.clone(), ver.value));
            start = Some(k);
        }
        assert_eq!(
            seen,
            vec![
                (b"a".to_vec(), Some(b"a1".to_vec())),
                (b"b".to_vec(), Some(b"b2".to_vec()))
            ]
        );
        let newest: Vec<Vec<u8>> = m.newest().into_iter().map(|(k, _)| k).collect();
        assert_eq!(newest, vec![b"a".to_vec(), b"ab".to_vec(), b"b".to_vec()]);
    }

    #[test]
    fn same_batch_same_key_replaces() {
        let m = MemTable::new();
        m.insert(b"k".to_vec(), 5, v(5, None));
        m.insert(b"k".to_vec(), 5, v(5, Some(b"x")));
        assert_eq!(m.len(), 1);
        assert_eq!(m.get(b"k", 5), Some(v(5, Some(b"x"))));
    }

    proptest::proptest! {
        /// Point reads, newest stamps and ordered iteration agree with a model: per key, a
        /// list of (sequence, version) where the newest at or below a snapshot is visible
        /// and a second operation of the same batch replaces the first.
        #[test]
        fn reads_and_scans_agree_with_a_model(
            ops in proptest::collection::vec((0u8..12, 0u64..3, proptest::option::of(0u8..200)), 1..200),
            probes in proptest::collection::vec((0u8..14, 0u64..250), 1..60),
        ) {
            use std::collections::BTreeMap;
            let m = MemTable::new();
            let mut model: BTreeMap<Vec<u8>, Vec<(u64, MemVersion)>> = BTreeMap::new();
            let mut seq = 1u64;
            for (i, (k, step, val)) in ops.iter().enumerate() {
                // Mostly rising sequence numbers, sometimes the same batch again.
                seq += step.min(&1);
                let ver = v(i as u64, val.map(|b| vec![b; 3]).as_deref());
                m.insert(vec![*k], seq, ver.clone());
                let chain = model.entry(vec![*k]).or_default();
                match chain.last_mut() {
                    Some(last) if last.0 == seq => last.1 = ver,
                    _ => chain.push((seq, ver)),
                }
            }
            let at = |k: &[u8], s: u64| {
                model.get(k).and_then(|c| c.iter().rev().find(|(q, _)| *q <= s)).map(|(_, v)| v.clone())
            };
            proptest::prop_assert_eq!(m.len(), model.values().map(Vec::len).sum::<usize>());
            for (k, s) in probes {
                let key = [k];
                proptest::prop_assert_eq!(m.get(&key, s), at(&key, s));
                let newest = model.get(&key[..]).and_then(|c| c.last()).map(|(_, v)| v.stamp);
                proptest::prop_assert_eq!(m.latest_stamp(&key), newest);
                // The first visible key after `key`, as a scan resumes.
                let want = model
                    .range::<[u8], _>((Bound::Excluded(&key[..]), Bound::Unbounded))
                    .find_map(|(mk, _)| at(mk, s).map(|v| (mk.clone(), v)));
                proptest::prop_assert_eq!(m.next_visible(Bound::Excluded(&key), s), want);
            }
            let newest: Vec<(Vec<u8>, MemVersion)> = model
                .iter()
                .map(|(k, c)| (k.clone(), c.last().map(|(_, v)| v.clone()).unwrap()))
                .collect();
            proptest::prop_assert_eq!(m.newest(), newest);
        }
    }
}
