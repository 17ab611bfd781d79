//! The memtable: recent versions in a concurrent skip list, multi-versioned by sequence
//! number so that readers take consistent snapshots without locks or copies.
//!
//! Entries are ordered by key ascending, then sequence number descending, so the newest
//! version of a key comes first. A batch's operations share one sequence number; a snapshot
//! at sequence `s` sees, per key, the newest version with a sequence number `<= s`.
//! Writers insert under the engine's apply lock and publish the batch's sequence number
//! afterwards, so no reader ever sees part of a batch.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::ops::Bound;
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};

use crossbeam_skiplist::SkipMap;
use smallvec::SmallVec;

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

/// A multi-versioned sorted table of recent writes.
#[derive(Debug, Default)]
pub struct MemTable {
    map: SkipMap<MemKey, MemVersion>,
    bytes: AtomicUsize,
}

impl MemTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
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
        let n = key.len() + v.value.as_ref().map_or(0, Vec::len) + 48;
        self.bytes.fetch_add(n, AtomicOrdering::Relaxed);
        self.map.insert(
            MemKey {
                key: SmallVec::from_vec(key),
                seq,
            },
            v,
        );
    }

    /// The newest version of `key` visible at sequence `seq`.
    pub fn get(&self, key: &[u8], seq: u64) -> Option<MemVersion> {
        let probe = Probe(key, seq);
        let e = self
            .map
            .lower_bound(Bound::Included(&probe as &dyn KeyView))?;
        (e.key().key.as_slice() == key).then(|| e.value().clone())
    }

    /// The stamp of the newest version of `key`, whatever its sequence number.
    pub fn latest_stamp(&self, key: &[u8]) -> Option<Stamp> {
        let probe = Probe(key, u64::MAX);
        let e = self
            .map
            .lower_bound(Bound::Included(&probe as &dyn KeyView))?;
        (e.key().key.as_slice() == key).then(|| e.value().stamp)
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
                    return Some((key, c.value().clone()));
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
            out.push((e.key().key.to_vec(), e.value().clone()));
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
}
