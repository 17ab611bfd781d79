//! Replaying logged batches in bulk: the records of a long stretch of WAL (an open after a
//! crash, the roll-forward of an archive) are gathered, sorted by key once and reduced to
//! the winning version per key, then merged into the tree in one pass.
//!
//! Sorting once is far cheaper than inserting record by record in log order. The segments
//! are read mapped, and a gathered version is only a reference to its key and value where
//! they lie in the mapped segment: nothing is copied or allocated per key or value, and the
//! memory used is the page cache the segments are in anyway plus 48 bytes per operation.
//! The sort uses every core.

use std::path::Path;

use duplex_wal::{Mapped, SharedRecord, WalReader};

use crate::batch::{BatchRef, KIND_BATCH};
use crate::error::{Error, Result};
use crate::hlc::{Stamp, Timestamp};
use crate::tree::Update;

/// `vlen` of a tombstone.
const TOMBSTONE: u32 = u32::MAX;

/// One gathered version; its key and value lie in one of the buffer's mapped segments.
/// Entries are pushed in log order, so (`src`, `off`) orders them as the log does.
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// The first 8 key bytes, big-endian, zero-padded: ordered like the keys themselves
    /// (ties broken by the whole key), so most comparisons never look at the segment.
    prefix: u64,
    /// Offset of the key in `maps[src]`.
    off: usize,
    ts: u64,
    origin: u64,
    src: u32,
    /// Value length, [`TOMBSTONE`] for a delete.
    vlen: u32,
    /// Key length (keys are at most 65535 bytes).
    klen: u16,
    /// From the end of the key to the value (the value's length field between them).
    vgap: u16,
}

/// Versions gathered from the log: references into mapped segments.
#[derive(Debug, Default)]
pub(crate) struct VersionBuffer {
    maps: Vec<Mapped>,
    entries: Vec<Entry>,
    /// Payload bytes of the records gathered since the last [`VersionBuffer::clear`].
    pub payload_bytes: u64,
    /// Largest timestamp gathered (ever).
    pub max_ts: u64,
    /// LSN of the last record gathered (ever); 0 if none.
    pub last_lsn: u64,
    /// Records gathered (ever).
    pub records: u64,
}

impl VersionBuffer {
    /// An empty buffer with room for the operations of about `bytes` of payload.
    pub fn with_capacity(bytes: u64) -> Self {
        let bytes = usize::try_from(bytes).unwrap_or(usize::MAX);
        VersionBuffer {
            entries: Vec::with_capacity(bytes / 128),
            ..VersionBuffer::default()
        }
    }

    /// Adds every operation of a checked batch `b`, decoded from `rec`'s payload.
    pub fn push_batch(&mut self, rec: &SharedRecord, b: &BatchRef<'_>) {
        let (map, _) = rec.source();
        let base = map.bytes().as_ptr() as usize;
        let same = self
            .maps
            .last()
            .is_some_and(|m| m.bytes().as_ptr() == map.bytes().as_ptr());
        if !same {
            self.maps.push(map.clone());
        }
        let src = (self.maps.len() - 1) as u32;
        let Stamp { ts, origin } = b.stamp;
        for op in b.ops() {
            let mut p = [0u8; 8];
            let n = op.key.len().min(8);
            p[..n].copy_from_slice(&op.key[..n]);
            // The slices lie in the mapping: their offsets are pointer differences.
            let off = op.key.as_ptr() as usize - base;
            let kend = op.key.as_ptr() as usize + op.key.len();
            let (vlen, vgap) = match op.value {
                Some(v) => (v.len() as u32, (v.as_ptr() as usize - kend) as u16),
                None => (TOMBSTONE, 0),
            };
            self.entries.push(Entry {
                prefix: u64::from_be_bytes(p),
                off,
                ts: ts.0,
                origin,
                src,
                vlen,
                klen: op.key.len() as u16,
                vgap,
            });
        }
        self.max_ts = self.max_ts.max(ts.0);
        self.payload_bytes += rec.payload().len() as u64;
    }

    /// Forgets the versions gathered (keeps the counters that say "ever").
    pub fn clear(&mut self) {
        self.maps.clear();
        self.entries.clear();
        self.payload_bytes = 0;
    }

    fn key<'a>(segs: &[&'a [u8]], e: &Entry) -> &'a [u8] {
        &segs[e.src as usize][e.off..e.off + e.klen as usize]
    }

    /// Sorts the versions by key and returns the winner per key (last writer wins; of
    /// equal stamps, the later operation), in key order, borrowing the segments.
    pub fn sorted_newest(&mut self) -> Vec<Update<'_>> {
        // The segments' bytes, looked up once (not through the mapping per key).
        let segs: Vec<&[u8]> = self.maps.iter().map(Mapped::bytes).collect();
        sort_entries(&mut self.entries, &segs);
        let maps = &segs;
        let mut out: Vec<Update<'_>> = Vec::with_capacity(self.entries.len());
        let mut winner: Option<&Entry> = None;
        for e in &self.entries {
            match winner {
                // Different prefixes are different keys: no look into the segment.
                Some(w) if w.prefix == e.prefix && Self::key(maps, w) == Self::key(maps, e) => {
                    if !stamp_of(w).wins_over(&stamp_of(e)) {
                        winner = Some(e);
                    }
                }
                _ => {
                    if let Some(w) = winner {
                        out.push(update_of(maps, w));
                    }
                    winner = Some(e);
                }
            }
        }
        if let Some(w) = winner {
            out.push(update_of(maps, w));
        }
        out
    }
}

fn stamp_of(e: &Entry) -> Stamp {
    Stamp {
        ts: Timestamp(e.ts),
        origin: e.origin,
    }
}

fn update_of<'a>(segs: &[&'a [u8]], e: &Entry) -> Update<'a> {
    let bytes = segs[e.src as usize];
    let kend = e.off + e.klen as usize;
    let value = (e.vlen != TOMBSTONE).then(|| {
        let v = kend + e.vgap as usize;
        &bytes[v..v + e.vlen as usize]
    });
    (&bytes[e.off..kend], stamp_of(e), value)
}

/// Sorts by (key, log order). With two or more cores and many entries, splits them at a
/// sampled median prefix (every key goes to one side by its prefix alone, so the sides
/// sorted apart are the sorted whole) and sorts the sides in parallel.
fn sort_entries(entries: &mut [Entry], maps: &[&[u8]]) {
    let cmp = |a: &Entry, b: &Entry| {
        a.prefix
            .cmp(&b.prefix)
            .then_with(|| VersionBuffer::key(maps, a).cmp(VersionBuffer::key(maps, b)))
            .then((a.src, a.off).cmp(&(b.src, b.off)))
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cores < 2 || entries.len() < 1 << 16 {
        entries.sort_unstable_by(cmp);
        return;
    }
    let mut sample: Vec<u64> = entries
        .iter()
        .step_by(entries.len() / 1024)
        .map(|e| e.prefix)
        .collect();
    sample.sort_unstable();
    let pivot = sample[sample.len() / 2];
    let mut mid = 0;
    for j in 0..entries.len() {
        if entries[j].prefix < pivot {
            entries.swap(mid, j);
            mid += 1;
        }
    }
    let (left, right) = entries.split_at_mut(mid);
    std::thread::scope(|s| {
        s.spawn(|| left.sort_unstable_by(cmp));
        right.sort_unstable_by(cmp);
    });
}

/// Limits and sizes of a replay.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReplayLimits {
    /// Longest key accepted.
    pub max_key: usize,
    /// Longest value accepted.
    pub max_value: usize,
    /// Hand the buffer to `on_chunk` once it holds this many payload bytes.
    pub chunk_bytes: u64,
}

/// Hands the records of `reader`, in order, to `f`. Stops at the first error, the
/// reader's (after every record before it was handed over) or `f`'s, or when `f` returns
/// `Ok(false)`.
///
/// One thread: a reading thread handing records over (tried with owned records, then with
/// shared buffers) was slower than this, the reader being the larger half of the work and
/// the hand-over costing more than what it let run in parallel.
pub(crate) fn for_each_record(
    mut reader: WalReader,
    f: &mut dyn FnMut(SharedRecord) -> Result<bool>,
) -> Result<()> {
    while let Some(rec) = reader.next_shared()? {
        if !f(rec)? {
            break;
        }
    }
    Ok(())
}

/// Reads every record of `reader` (best opened with [`duplex_wal::ReadOptions::map_segments`]),
/// checks and gathers the batches into `buf` (empty, its capacity reused). Each time `chunk_bytes` of payload are
/// gathered, calls `on_chunk` with the buffer (its `last_lsn` is the last record in it)
/// and clears it; `progress` gets the records and payload bytes gathered so far, every few
/// thousand records. Returns the buffer with what remains. A batch that does not decode is
/// corruption in `source` (offset = its LSN).
pub(crate) fn gather(
    reader: WalReader,
    source: &Path,
    limits: ReplayLimits,
    mut buf: VersionBuffer,
    on_chunk: &mut dyn FnMut(&mut VersionBuffer) -> Result<()>,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<VersionBuffer> {
    let (mut records, mut bytes) = (0u64, 0u64);
    for_each_record(reader, &mut |rec| {
        if rec.kind == KIND_BATCH {
            let b = BatchRef::decode(rec.payload(), limits.max_key, limits.max_value).map_err(
                |kind| Error::Corrupt {
                    file: source.to_path_buf(),
                    offset: rec.lsn,
                    kind,
                },
            )?;
            buf.push_batch(&rec, &b);
        }
        buf.last_lsn = rec.lsn;
        buf.records += 1;
        records += 1;
        bytes += rec.payload().len() as u64;
        if buf.payload_bytes >= limits.chunk_bytes {
            on_chunk(&mut buf)?;
            buf.clear();
        }
        if records.is_multiple_of(8192) {
            progress(records, bytes);
        }
        Ok(true)
    })?;
    progress(records, bytes);
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{encode_batch, WriteBatch};

    fn gather_batches(
        batches: &[(u64, u64, WriteBatch)],
    ) -> Vec<(Vec<u8>, Stamp, Option<Vec<u8>>)> {
        let mut buf = VersionBuffer::default();
        let payloads: Vec<Vec<u8>> = batches
            .iter()
            .map(|(ts, origin, b)| {
                encode_batch(
                    Stamp {
                        ts: Timestamp(*ts),
                        origin: *origin,
                    },
                    0,
                    b,
                )
            })
            .collect();
        let records: Vec<SharedRecord> = payloads
            .into_iter()
            .enumerate()
            .map(|(i, p)| SharedRecord::from_vec(i as u64 + 1, KIND_BATCH, p))
            .collect();
        for rec in &records {
            let b = BatchRef::decode(rec.payload(), 1024, 1024).expect("decodes");
            buf.push_batch(rec, &b);
        }
        buf.sorted_newest()
            .into_iter()
            .map(|(k, s, v)| (k.to_vec(), s, v.map(<[u8]>::to_vec)))
            .collect()
    }

    #[test]
    fn keeps_the_winner_per_key_in_key_order() {
        let mut a = WriteBatch::new();
        a.put("k2", "old").put("k1", "first").put("k1", "second");
        let mut b = WriteBatch::new();
        b.delete("k2").put("k3", "x");
        let mut c = WriteBatch::new();
        // Older stamp than `b`, logged later: loses on k3.
        c.put("k3", "stale").put("k10", "y");
        let got = gather_batches(&[(10, 1, a), (20, 1, b), (15, 2, c)]);
        let keys: Vec<&[u8]> = got.iter().map(|(k, _, _)| k.as_slice()).collect();
        assert_eq!(keys, vec![&b"k1"[..], b"k10", b"k2", b"k3"]);
        assert_eq!(got[0].2.as_deref(), Some(&b"second"[..]));
        assert_eq!(got[1].2.as_deref(), Some(&b"y"[..]));
        assert_eq!(got[2].2, None);
        assert_eq!(got[2].1.ts, Timestamp(20));
        assert_eq!(got[3].2.as_deref(), Some(&b"x"[..]));
    }

    #[test]
    fn parallel_sort_matches_a_model() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut model = std::collections::BTreeMap::new();
        let mut batches = Vec::new();
        // Enough entries for the two-sided sort; short keys share prefixes, long ones not.
        for i in 0..100_000u64 {
            let klen = rng.gen_range(1..=12);
            let key: Vec<u8> = (0..klen).map(|_| rng.gen_range(0..4u8)).collect();
            let ts = rng.gen_range(1..1000u64);
            let origin = rng.gen_range(1..3u64);
            let mut b = WriteBatch::new();
            b.put(key.clone(), i.to_le_bytes().to_vec());
            let s = Stamp {
                ts: Timestamp(ts),
                origin,
            };
            let e = model.entry(key).or_insert((s, i));
            if !e.0.wins_over(&s) {
                *e = (s, i);
            }
            batches.push((ts, origin, b));
        }
        let got = gather_batches(&batches);
        let want: Vec<(Vec<u8>, Stamp, Option<Vec<u8>>)> = model
            .into_iter()
            .map(|(k, (s, i))| (k, s, Some(i.to_le_bytes().to_vec())))
            .collect();
        assert_eq!(got, want);
    }
}
