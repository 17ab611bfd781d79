//! The memtable: recent versions in a concurrent skip list, multi-versioned by sequence
//! number so that readers take consistent snapshots without locks or copies.
//!
//! Entries are ordered by key ascending, then sequence number descending, so the newest
//! version of a key comes first. A batch's operations share one sequence number; a snapshot
//! at sequence `s` sees, per key, the newest version with a sequence number `<= s`.
//! Writers insert under the engine's apply lock and publish the batch's sequence number
//! afterwards, so no reader ever sees part of a batch.
//!
//! Point reads do not walk the skip list: a hash index, sharded under read-write locks,
//! maps each key to its versions (oldest first), sharing the skip list's version objects.
//! A skip list of a few hundred thousand entries costs a cache miss per level on every
//! lookup (a profile of GETs at pipeline 16 showed 58% of duplexd's time in the search);
//! the index costs a hash and about two. Scans and checkpoints still use the ordered list.

use std::borrow::Borrow;
use std::cmp::Ordering;
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

/// A key plus the sequence number of the batch that wrote it.
#[derive(Debug, Clone)]
pub(crate) struct MemKey {
    /// Keys up to 32 bytes live in the skip-list node itself: one cache miss less per
    /// comparison, which is most of an insert's cost.
    key: SmallVec<[u8; 32]>,
    seq: u64,
}

/// What the skip list compares: a key and a sequence number, owned or borrowed.
pub(crate) trait KeyView {
    fn parts(&self) -> (&[u8], u64);
}

impl KeyView for MemKey {
    fn parts(&self) -> (&[u8], u64) {
        (&self.key, self.seq)
    }
}

/// A borrowed search key.
struct Probe<'a>(&'a [u8], u64);

impl KeyView for Probe<'_> {
    fn parts(&self) -> (&[u8], u64) {
        (self.0, self.1)
    }
}

impl Ord for dyn KeyView + '_ {
    fn cmp(&self, other: &Self) -> Ordering {
        let (a, s) = self.parts();
        let (b, t) = other.parts();
        // Newest (largest sequence) first within a key.
        a.cmp(b).then(t.cmp(&s))
    }
}

impl PartialOrd for dyn KeyView + '_ {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for dyn KeyView + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for dyn KeyView + '_ {}

impl<'a> Borrow<dyn KeyView + 'a> for MemKey {
    fn borrow(&self) -> &(dyn KeyView + 'a) {
        self
    }
}

impl Ord for MemKey {
    fn cmp(&self, other: &Self) -> Ordering {
        (self as &dyn KeyView).cmp(other as &dyn KeyView)
    }
}

impl PartialOrd for MemKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for MemKey {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for MemKey {}

/// Shards of the hash index (a power of two): readers on two I/O threads rarely meet on
/// one shard's lock.
const SHARDS: usize = 64;
/// Bytes counted per version for the index entry (key copy aside).
const INDEX_OVERHEAD: usize = 32;

/// A key's versions in the index: (sequence number, version), oldest first, so that a new
/// version is a push and a hot key's long chain never moves.
type Chain = SmallVec<[(u64, Arc<MemVersion>); 1]>;
/// One entry of the index: the key's hash (kept, so growing the table never hashes again),
/// the key, its versions.
struct IndexEntry {
    hash: u64,
    key: SmallVec<[u8; 32]>,
    chain: Chain,
}

impl std::fmt::Debug for IndexEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "IndexEntry({} versions)", self.chain.len())
    }
}

/// One shard of the index: a table searched by the key's XXH3 hash, computed once per
/// lookup (the shard is picked from other bits of the same hash).
type Shard = RwLock<hashbrown::HashTable<IndexEntry>>;

/// A multi-versioned sorted table of recent writes.
#[derive(Debug)]
pub struct MemTable {
    map: SkipMap<MemKey, Arc<MemVersion>>,
    index: Box<[Shard]>,
    bytes: AtomicUsize,
}

impl Default for MemTable {
    fn default() -> Self {
        MemTable {
            map: SkipMap::new(),
            index: (0..SHARDS).map(|_| Shard::default()).collect(),
            bytes: AtomicUsize::new(0),
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
        self.map.len()
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
        let key: SmallVec<[u8; 32]> = SmallVec::from_vec(key);
        {
            let (hash, shard) = self.shard(&key);
            let mut shard = shard.write();
            let entry = shard
                .entry(hash, |e| e.key == key, |e| e.hash)
                .or_insert_with(|| IndexEntry {
                    hash,
                    key: key.clone(),
                    chain: Chain::new(),
                })
                .into_mut();
            let chain = &mut entry.chain;
            // Batches come in rising sequence order; one out of order (or a second
            // operation of the same batch) goes where it belongs.
            match chain.iter().rposition(|(s, _)| *s <= seq) {
                Some(i) if chain[i].0 == seq => chain[i].1 = v.clone(),
                Some(i) => chain.insert(i + 1, (seq, v.clone())),
                None => chain.insert(0, (seq, v.clone())),
            }
        }
        self.map.insert(MemKey { key, seq }, v);
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
        e.chain
            .iter()
            .rev()
            .find(|(s, _)| *s <= seq)
            .map(|(_, v)| v.clone())
    }

    /// The stamp of the newest version of `key`, whatever its sequence number.
    pub fn latest_stamp(&self, key: &[u8]) -> Option<Stamp> {
        let (hash, shard) = self.shard(key);
        let shard = shard.read();
        let e = shard.find(hash, |e| e.key.as_slice() == key)?;
        e.chain.last().map(|(_, v)| v.stamp)
    }

    /// The first key at or after `start` (within the bounds' sense) that has a version
    /// visible at `seq`, with that version.
    pub fn next_visible(&self, start: Bound<&[u8]>, seq: u64) -> Option<(Vec<u8>, MemVersion)> {
        // Position on the first entry of the first candidate key.
        let mut e = match start {
            Bound::Unbounded => self.map.front()?,
            Bound::Included(k) => self
                .map
                .lower_bound(Bound::Included(&Probe(k, u64::MAX) as &dyn KeyView))?,
            // Past every version of `k`: sequence 0 is below every real one.
            Bound::Excluded(k) => self
                .map
                .lower_bound(Bound::Excluded(&Probe(k, 0) as &dyn KeyView))?,
        };
        loop {
            let key = e.key().key.to_vec();
            // Skip this key's versions newer than the snapshot.
            let mut cur = Some(e);
            while let Some(c) = cur {
                if c.key().key.as_slice() != key.as_slice() {
                    cur = Some(c);
                    break;
                }
                if c.key().seq <= seq {
                    return Some((key, MemVersion::clone(c.value())));
                }
                cur = c.next();
            }
            e = cur?;
        }
    }

    /// The newest version of every key, in key order (for a checkpoint of a frozen table,
    /// where every version is visible).
    pub fn newest(&self) -> Vec<(Vec<u8>, MemVersion)> {
        let mut out: Vec<(Vec<u8>, MemVersion)> = Vec::with_capacity(self.map.len());
        for e in self.map.iter() {
            if out
                .last()
                .is_some_and(|(k, _)| k.as_slice() == e.key().key.as_slice())
            {
                continue;
            }
            out.push((e.key().key.to_vec(), MemVersion::clone(e.value())));
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
        /// The hash index answers every point read as the ordered list does: the newest
        /// version at or below the snapshot's sequence, and the newest stamp.
        #[test]
        fn point_reads_agree_with_the_ordered_list(
            ops in proptest::collection::vec((0u8..12, 0u64..3, proptest::option::of(0u8..200)), 1..200),
            probes in proptest::collection::vec((0u8..14, 0u64..250), 1..60),
        ) {
            let m = MemTable::new();
            let mut seq = 1u64;
            for (i, (k, step, val)) in ops.iter().enumerate() {
                // Mostly rising sequence numbers, sometimes the same batch again.
                seq += step.min(&1);
                let ver = v(i as u64, val.map(|b| vec![b; 3]).as_deref());
                m.insert(vec![*k], seq, ver);
            }
            for (k, at) in probes {
                let key = [k];
                let from_list = m
                    .map
                    .lower_bound(Bound::Included(&Probe(&key, at) as &dyn KeyView))
                    .filter(|e| e.key().key.as_slice() == key)
                    .map(|e| MemVersion::clone(e.value()));
                proptest::prop_assert_eq!(m.get(&key, at), from_list);
                let newest = m
                    .map
                    .lower_bound(Bound::Included(&Probe(&key, u64::MAX) as &dyn KeyView))
                    .filter(|e| e.key().key.as_slice() == key)
                    .map(|e| e.value().stamp);
                proptest::prop_assert_eq!(m.latest_stamp(&key), newest);
            }
        }
    }
}
