//! Consistent reads: a [`Snapshot`] pins the memtables and the tree as they were at one
//! moment (cheap: the memtables are persistent maps, the tree is immutable below its
//! committed length), and [`ScanIter`] merges them in key order.
//!
//! Layer rule: a key's current version is the one in the newest layer that has it
//! (active memtable, then the frozen one being checkpointed, then the tree). Writes keep
//! this true by applying last-writer-wins against the older layers before they land.

use std::ops::Bound;
use std::sync::Arc;

use xxhash_rust::xxh3::xxh3_128;

use crate::error::Result;
use crate::hlc::Stamp;
use crate::memtable::{MemTable, MemVersion};
use crate::tree::{TreeCursor, TreeView};

/// A key's current version, as reported by [`Snapshot::version`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    /// Timestamp and origin of the write.
    pub stamp: Stamp,
    /// The value, `None` if the key is deleted (a tombstone).
    pub value: Option<Vec<u8>>,
}

/// A consistent read view of the database.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub(crate) active: Arc<MemTable>,
    pub(crate) frozen: Option<Arc<MemTable>>,
    pub(crate) tree: Arc<TreeView>,
    /// Sequence number of the last batch visible.
    pub(crate) seq: u64,
}

impl Snapshot {
    /// The value of `key`, `None` if absent or deleted.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.version(key)?.and_then(|v| v.value))
    }

    /// Calls `f` with the value of `key` (`None` if absent or deleted) without copying it:
    /// borrowed from the memtable's version or the mapped store file. What a server's GET
    /// uses to write the value straight into its reply.
    pub fn get_with<R>(&self, key: &[u8], f: impl FnOnce(Option<&[u8]>) -> R) -> Result<R> {
        for m in std::iter::once(&self.active).chain(self.frozen.as_ref()) {
            if let Some(v) = m.get_shared(key, self.seq) {
                return Ok(f(v.value.as_deref()));
            }
        }
        Ok(f(self.tree.get_ref(key)?.and_then(|(_, v)| v)))
    }

    /// The current version of `key`, tombstones included.
    pub fn version(&self, key: &[u8]) -> Result<Option<Version>> {
        for m in std::iter::once(&self.active).chain(self.frozen.as_ref()) {
            if let Some(v) = m.get(key, self.seq) {
                return Ok(Some(Version {
                    stamp: v.stamp,
                    value: v.value,
                }));
            }
        }
        Ok(self
            .tree
            .get(key)?
            .map(|(stamp, value)| Version { stamp, value }))
    }

    /// Live key/value pairs with keys in `[start, end)`-style bounds, in key order.
    pub fn scan(&self, start: Bound<&[u8]>, end: Bound<&[u8]>) -> Result<ScanIter> {
        self.scan_all(start, end, false)
    }

    /// Like [`Snapshot::scan`], but also yields tombstones (value `None`) with stamps.
    pub fn scan_versions(&self, start: Bound<&[u8]>, end: Bound<&[u8]>) -> Result<ScanIter> {
        self.scan_all(start, end, true)
    }

    fn scan_all(
        &self,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        tombstones: bool,
    ) -> Result<ScanIter> {
        let owned = |b: Bound<&[u8]>| match b {
            Bound::Included(k) => Bound::Included(k.to_vec()),
            Bound::Excluded(k) => Bound::Excluded(k.to_vec()),
            Bound::Unbounded => Bound::Unbounded,
        };
        let mut it = ScanIter {
            layers: vec![self.active.clone()],
            peeked: Vec::new(),
            seq: self.seq,
            tree: self.tree.cursor(start)?,
            tree_peek: None,
            end: owned(end),
            tombstones,
        };
        it.layers.extend(self.frozen.clone());
        for m in &it.layers {
            it.peeked.push(m.next_visible(start, self.seq));
        }
        it.tree_peek = it.tree.next_entry()?;
        Ok(it)
    }

    /// An order-independent digest of the live contents in the bounds: the sum (mod 2^128)
    /// of a hash of every (key, value) pair. Equal contents give equal digests however they
    /// were built; digests of disjoint ranges add up to the digest of their union.
    pub fn digest(&self, start: Bound<&[u8]>, end: Bound<&[u8]>) -> Result<Digest> {
        let mut sum = 0u128;
        let mut count = 0u64;
        for item in self.scan(start, end)? {
            let (k, v) = item?;
            sum = sum.wrapping_add(entry_hash(&k, &v));
            count += 1;
        }
        Ok(Digest { sum, count })
    }

    /// Like [`Snapshot::digest`], but over versions: every key's stamp (timestamp and
    /// origin) and its value, tombstones included (`count` counts them too). Two replicas
    /// with equal stamped digests hold the same versions, not just the same values, and
    /// agree on every delete.
    pub fn stamped_digest(&self, start: Bound<&[u8]>, end: Bound<&[u8]>) -> Result<Digest> {
        let mut sum = 0u128;
        let mut count = 0u64;
        let mut it = self.scan_versions(start, end)?;
        while let Some((k, v)) = it.next_version()? {
            sum = sum.wrapping_add(version_hash(&k, &v));
            count += 1;
        }
        Ok(Digest { sum, count })
    }
}

/// Hash of one version (key, stamp, value or tombstone) for a stamped digest.
pub fn version_hash(key: &[u8], v: &Version) -> u128 {
    let value = v.value.as_deref().unwrap_or_default();
    let mut b = Vec::with_capacity(8 + key.len() + 17 + value.len());
    b.extend_from_slice(&(key.len() as u64).to_le_bytes());
    b.extend_from_slice(key);
    b.extend_from_slice(&v.stamp.ts.0.to_le_bytes());
    b.extend_from_slice(&v.stamp.origin.to_le_bytes());
    b.push(u8::from(v.value.is_some()));
    b.extend_from_slice(value);
    xxh3_128(&b)
}

/// Hash of one (key, value) pair for [`Digest`].
pub fn entry_hash(key: &[u8], value: &[u8]) -> u128 {
    let mut b = Vec::with_capacity(8 + key.len() + value.len());
    b.extend_from_slice(&(key.len() as u64).to_le_bytes());
    b.extend_from_slice(key);
    b.extend_from_slice(value);
    xxh3_128(&b)
}

/// A content digest: comparable across replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Digest {
    /// Sum of entry hashes, mod 2^128.
    pub sum: u128,
    /// Number of live keys.
    pub count: u64,
}

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:032x}/{}", self.sum, self.count)
    }
}

/// Iterator over a snapshot's entries in key order. Yields `Result<(key, value)>`; for
/// [`Snapshot::scan_versions`] use [`ScanIter::next_version`].
#[derive(Debug)]
pub struct ScanIter {
    layers: Vec<Arc<MemTable>>,
    peeked: Vec<Option<(Vec<u8>, MemVersion)>>,
    seq: u64,
    tree: TreeCursor,
    tree_peek: Option<(Vec<u8>, crate::tree::TreeVersion)>,
    end: Bound<Vec<u8>>,
    tombstones: bool,
}

impl ScanIter {
    fn before_end(&self, k: &[u8]) -> bool {
        match &self.end {
            Bound::Included(e) => k <= e.as_slice(),
            Bound::Excluded(e) => k < e.as_slice(),
            Bound::Unbounded => true,
        }
    }

    /// The next entry with its version (tombstones only if the iterator yields them).
    pub fn next_version(&mut self) -> Result<Option<(Vec<u8>, Version)>> {
        loop {
            // The smallest key among the sources; the newest layer holding it wins.
            let mut best: Option<&[u8]> = None;
            for (k, _) in self.peeked.iter().flatten() {
                if best.is_none_or(|b| k.as_slice() < b) {
                    best = Some(k);
                }
            }
            if let Some((k, _)) = &self.tree_peek {
                if best.is_none_or(|b| k.as_slice() < b) {
                    best = Some(k);
                }
            }
            let Some(key) = best.map(<[u8]>::to_vec) else {
                return Ok(None);
            };
            if !self.before_end(&key) {
                return Ok(None);
            }
            let mut found: Option<Version> = None;
            for i in 0..self.peeked.len() {
                if matches!(&self.peeked[i], Some((k, _)) if *k == key) {
                    if let Some((_, v)) = self.peeked[i].take() {
                        if found.is_none() {
                            found = Some(Version {
                                stamp: v.stamp,
                                value: v.value,
                            });
                        }
                    }
                    self.peeked[i] = self.layers[i].next_visible(Bound::Excluded(&key), self.seq);
                }
            }
            if matches!(&self.tree_peek, Some((k, _)) if *k == key) {
                if let Some((_, (stamp, value))) = self.tree_peek.take() {
                    if found.is_none() {
                        found = Some(Version { stamp, value });
                    }
                }
                self.tree_peek = self.tree.next_entry()?;
            }
            match found {
                Some(v) if v.value.is_some() || self.tombstones => return Ok(Some((key, v))),
                _ => continue,
            }
        }
    }
}

impl Iterator for ScanIter {
    type Item = Result<(Vec<u8>, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.next_version() {
            Ok(Some((k, v))) => Some(Ok((k, v.value.unwrap_or_default()))),
            Ok(None) => None,
            Err(e) => Some(Err(e)),
        }
    }
}
