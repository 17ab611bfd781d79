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

use crate::batch::{decode_epoch, BatchRef, KIND_BATCH, KIND_EPOCH};
use crate::error::{Error, Result};
use crate::hlc::{Stamp, Timestamp};
use crate::tree::Update;

/// Memory per gathered operation: its entry, and its update once sorted.
const PER_OP: u64 = (std::mem::size_of::<Entry>() + std::mem::size_of::<Update<'static>>()) as u64;

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

/// Entries per run: each full run is sorted on another thread while the next one fills,
/// so the sort costs the gathering thread nothing and the end only merges sorted runs.
const RUN: usize = 1 << 18;

/// Versions gathered from the log: references into mapped segments.
#[derive(Debug, Default)]
pub(crate) struct VersionBuffer {
    maps: Vec<Mapped>,
    /// The run being filled, in log order.
    entries: Vec<Entry>,
    /// Full runs, in log order, each sorted by (key, log order) once it comes back from
    /// the sorting thread.
    runs: Vec<Vec<Entry>>,
    sorter: Option<Sorter>,
    /// The winners' keys and values copied in key order (see [`VersionBuffer::sorted_newest`]).
    sorted: Vec<Vec<u8>>,
    /// Entries per run (0 means [`RUN`]; tests use short runs).
    run_len: usize,
    /// Payload bytes of the records gathered since the last [`VersionBuffer::clear`].
    pub payload_bytes: u64,
    /// Operations gathered since the last clear.
    ops: u64,
    /// Bytes of their keys and values.
    kv_bytes: u64,
    /// Largest timestamp gathered (ever).
    pub max_ts: u64,
    /// Highest fencing epoch among the records gathered since the buffer was made (not
    /// reset by [`VersionBuffer::clear`]).
    pub max_epoch: u64,
    /// LSN of the last record gathered (ever); 0 if none.
    pub last_lsn: u64,
    /// Records gathered (ever).
    pub records: u64,
    /// Per remote origin: the largest origin position and timestamp of its batches
    /// gathered (ever): the high-water marks the log holds.
    pub origins: std::collections::BTreeMap<u64, (u64, u64)>,
}

impl VersionBuffer {
    /// An empty buffer with room for the operations of about `bytes` of payload.
    pub fn with_capacity(bytes: u64) -> Self {
        let bytes = usize::try_from(bytes).unwrap_or(usize::MAX);
        VersionBuffer {
            entries: Vec::with_capacity((bytes / 128).min(RUN)),
            sorter: Sorter::start(),
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
            self.ops += 1;
            self.kv_bytes += (op.key.len() + op.value.map_or(0, <[u8]>::len)) as u64;
        }
        self.max_ts = self.max_ts.max(ts.0);
        if b.origin_lsn != 0 {
            let e = self.origins.entry(origin).or_insert((0, 0));
            *e = (e.0.max(b.origin_lsn), e.1.max(ts.0));
        }
        self.payload_bytes += rec.payload().len() as u64;
        let run_len = if self.run_len == 0 { RUN } else { self.run_len };
        if self.entries.len() >= run_len {
            let run = std::mem::replace(&mut self.entries, Vec::with_capacity(run_len));
            match self.sorter.as_mut() {
                Some(s) => s.submit(run, &self.maps),
                None => {
                    let mut run = run;
                    let segs: Vec<&[u8]> = self.maps.iter().map(Mapped::bytes).collect();
                    sort_run(&mut run, &segs);
                    self.runs.push(run);
                }
            }
        }
    }

    /// Forgets the versions gathered (keeps the counters that say "ever").
    pub fn clear(&mut self) {
        if let Some(s) = self.sorter.as_mut() {
            // Whatever it still sorts is of no use any more.
            let _ = s.collect(&mut self.runs);
        }
        self.runs.clear();
        self.sorted.clear();
        self.maps.clear();
        self.entries.clear();
        self.payload_bytes = 0;
        self.ops = 0;
        self.kv_bytes = 0;
    }

    /// Memory the gathered operations take once sorted, at most: an entry and an update
    /// each, and a copy of their keys and values (the records stay in the mapped segments).
    pub fn memory_bytes(&self) -> u64 {
        self.ops * PER_OP + self.kv_bytes
    }

    fn key<'a>(segs: &[&'a [u8]], e: &Entry) -> &'a [u8] {
        &segs[e.src as usize][e.off..e.off + e.klen as usize]
    }

    /// Sorts the versions by key and returns the winner per key (last writer wins; of
    /// equal stamps, the later operation), in key order, borrowing the segments.
    pub fn sorted_newest(&mut self) -> Result<Vec<Update<'_>>> {
        if let Some(s) = self.sorter.as_mut() {
            s.collect(&mut self.runs)?;
        }
        // The segments' bytes, looked up once (not through the mapping per key).
        let segs: Vec<&[u8]> = self.maps.iter().map(Mapped::bytes).collect();
        if !self.entries.is_empty() {
            let mut last = std::mem::take(&mut self.entries);
            sort_run(&mut last, &segs);
            self.runs.push(last);
        }
        let ups = merge_newest(&self.runs, &segs);
        // Copy the winners' keys and values in key order, on both cores: the merge into the
        // tree then reads memory in order instead of at random places in the segments. (The
        // rebuild reading them in place took 0.3 s for 2M updates, and 0.5-1.2 s when the
        // machine's memory was slow; this copy takes ~0.13 s, and the rebuild ~0.2 s.)
        let mid = ups.len() / 2;
        let (l, r) = ups.split_at(mid);
        let ((la, li), (ra, ri)) = std::thread::scope(|s| {
            let h = s.spawn(|| copy_in_order(l));
            let right = copy_in_order(r);
            (h.join().unwrap_or_else(|_| copy_in_order(l)), right)
        });
        self.sorted = vec![la, ra];
        let mut out = Vec::with_capacity(ups.len());
        for (arena, idx, part) in [(&self.sorted[0], li, l), (&self.sorted[1], ri, r)] {
            for ((off, klen, vlen), u) in idx.into_iter().zip(part) {
                let kend = off + klen;
                let value = (vlen != TOMBSTONE).then(|| &arena[kend..kend + vlen as usize]);
                out.push((&arena[off..kend], u.1, value));
            }
        }
        Ok(out)
    }
}

/// Copies the keys and values of `ups` into one buffer, in order; returns it and, per
/// update, (offset, key length, value length or [`TOMBSTONE`]).
fn copy_in_order(ups: &[Update<'_>]) -> (Vec<u8>, Vec<(usize, usize, u32)>) {
    let bytes: usize = ups
        .iter()
        .map(|(k, _, v)| k.len() + v.map_or(0, <[u8]>::len))
        .sum();
    let mut arena = Vec::with_capacity(bytes);
    let mut idx = Vec::with_capacity(ups.len());
    for (i, (k, _, v)) in ups.iter().enumerate() {
        crate::tree::prefetch(ups, i + 16);
        let off = arena.len();
        arena.extend_from_slice(k);
        let vlen = match v {
            Some(v) => {
                arena.extend_from_slice(v);
                v.len() as u32
            }
            None => TOMBSTONE,
        };
        idx.push((off, k.len(), vlen));
    }
    (arena, idx)
}

/// Orders entries by key, then log order.
fn entry_cmp(segs: &[&[u8]], a: &Entry, b: &Entry) -> std::cmp::Ordering {
    a.prefix
        .cmp(&b.prefix)
        .then_with(|| VersionBuffer::key(segs, a).cmp(VersionBuffer::key(segs, b)))
        .then((a.src, a.off).cmp(&(b.src, b.off)))
}

fn sort_run(run: &mut [Entry], segs: &[&[u8]]) {
    run.sort_unstable_by(|a, b| entry_cmp(segs, a, b));
}

/// Merges sorted runs (runs in log order) and keeps the winner per key. With two or more
/// cores and many entries, splits the key space at a sampled median prefix (a key falls on
/// one side by its prefix alone) and merges the two sides in parallel.
fn merge_newest<'a>(runs: &[Vec<Entry>], segs: &[&'a [u8]]) -> Vec<Update<'a>> {
    let total: usize = runs.iter().map(Vec::len).sum();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let all: Vec<&[Entry]> = runs.iter().map(Vec::as_slice).collect();
    if cores < 2 || total < 1 << 16 {
        return merge_runs(&all, segs);
    }
    let step = (total / 1024).max(1);
    let mut sample: Vec<u64> = runs
        .iter()
        .flat_map(|r| r.iter().step_by(step).map(|e| e.prefix))
        .collect();
    sample.sort_unstable();
    let pivot = sample[sample.len() / 2];
    let (left, right): (Vec<&[Entry]>, Vec<&[Entry]>) = all
        .iter()
        .map(|r| r.split_at(r.partition_point(|e| e.prefix < pivot)))
        .unzip();
    let (mut out, rest) = std::thread::scope(|s| {
        let l = s.spawn(|| merge_runs(&left, segs));
        let r = merge_runs(&right, segs);
        (l.join(), r)
    });
    match out.as_mut() {
        Ok(o) => {
            o.extend(rest);
            std::mem::take(o)
        }
        // The merging thread panicked (a bug): do its half here.
        Err(_) => {
            let mut o = merge_runs(&left, segs);
            o.extend(rest);
            o
        }
    }
}

/// Merges sorted runs (in log order) through a small binary heap and keeps the winner per
/// key.
fn merge_runs<'a>(runs: &[&[Entry]], segs: &[&'a [u8]]) -> Vec<Update<'a>> {
    let mut out: Vec<Update<'a>> = Vec::with_capacity(runs.iter().map(|r| r.len()).sum());
    let mut pos = vec![0usize; runs.len()];
    let less = |pos: &[usize], a: usize, b: usize| {
        entry_cmp(segs, &runs[a][pos[a]], &runs[b][pos[b]]).is_lt()
    };
    // A min-heap of run indices, ordered by each run's next entry.
    let mut heap: Vec<usize> = (0..runs.len()).filter(|&r| !runs[r].is_empty()).collect();
    let sift_down = |heap: &mut [usize], pos: &[usize], mut i: usize| loop {
        let (l, r) = (2 * i + 1, 2 * i + 2);
        let mut m = i;
        if l < heap.len() && less(pos, heap[l], heap[m]) {
            m = l;
        }
        if r < heap.len() && less(pos, heap[r], heap[m]) {
            m = r;
        }
        if m == i {
            return;
        }
        heap.swap(i, m);
        i = m;
    };
    for i in (0..heap.len() / 2).rev() {
        sift_down(&mut heap, &pos, i);
    }
    let mut winner: Option<&Entry> = None;
    while let Some(&r) = heap.first() {
        let e = &runs[r][pos[r]];
        match winner {
            // Different prefixes are different keys: no look into the segment.
            Some(w)
                if w.prefix == e.prefix
                    && VersionBuffer::key(segs, w) == VersionBuffer::key(segs, e) =>
            {
                if !stamp_of(w).wins_over(&stamp_of(e)) {
                    winner = Some(e);
                }
            }
            _ => {
                if let Some(w) = winner {
                    out.push(update_of(segs, w));
                }
                winner = Some(e);
            }
        }
        pos[r] += 1;
        if pos[r] == runs[r].len() {
            let last = heap.len() - 1;
            heap.swap(0, last);
            heap.pop();
        }
        sift_down(&mut heap, &pos, 0);
    }
    if let Some(w) = winner {
        out.push(update_of(segs, w));
    }
    out
}

/// The thread that sorts full runs while the next one is gathered.
#[derive(Debug)]
struct Sorter {
    tx: Option<std::sync::mpsc::Sender<(Vec<Entry>, Vec<Mapped>)>>,
    rx: std::sync::mpsc::Receiver<Vec<Entry>>,
    /// Runs sent and not yet received back.
    pending: usize,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Sorter {
    /// A sorting thread, if there is a second core to run it on.
    fn start() -> Option<Sorter> {
        if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
            return None;
        }
        let (tx, in_rx) = std::sync::mpsc::channel::<(Vec<Entry>, Vec<Mapped>)>();
        let (out_tx, rx) = std::sync::mpsc::channel();
        let handle = std::thread::Builder::new()
            .name("duplex-replay-sort".into())
            .spawn(move || {
                for (mut run, maps) in in_rx {
                    let segs: Vec<&[u8]> = maps.iter().map(Mapped::bytes).collect();
                    sort_run(&mut run, &segs);
                    if out_tx.send(run).is_err() {
                        return;
                    }
                }
            })
            .ok()?;
        Some(Sorter {
            tx: Some(tx),
            rx,
            pending: 0,
            handle: Some(handle),
        })
    }

    fn submit(&mut self, run: Vec<Entry>, maps: &[Mapped]) {
        if let Some(tx) = &self.tx {
            if tx.send((run, maps.to_vec())).is_ok() {
                self.pending += 1;
            }
        }
        // A failed send means the thread is gone; `collect` reports it.
    }

    /// Receives every run sent, sorted, in the order sent.
    fn collect(&mut self, runs: &mut Vec<Vec<Entry>>) -> Result<()> {
        while self.pending > 0 {
            let run = self.rx.recv().map_err(|_| {
                Error::Config("the replay's sorting thread stopped (a bug: see the log); open the database again, or run the restore again".into())
            })?;
            self.pending -= 1;
            runs.push(run);
        }
        if self.tx.is_none() || self.handle.as_ref().is_some_and(|h| h.is_finished()) {
            return Err(Error::Config(
                "the replay's sorting thread stopped (a bug: see the log); open the database again, or run the restore again".into(),
            ));
        }
        Ok(())
    }
}

impl Drop for Sorter {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
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

/// The epoch an epoch record carries; a payload of the wrong length is corruption in
/// `source` (offset = its LSN).
pub(crate) fn epoch_of(rec: &SharedRecord, source: &Path) -> Result<u64> {
    decode_epoch(rec.payload()).map_err(|kind| Error::Corrupt {
        file: source.to_path_buf(),
        offset: rec.lsn,
        kind,
    })
}

/// Limits and sizes of a replay.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReplayLimits {
    /// Longest key accepted.
    pub max_key: usize,
    /// Longest value accepted.
    pub max_value: usize,
    /// Hand the buffer to `on_chunk` once its operations take this much memory
    /// ([`VersionBuffer::memory_bytes`]).
    pub chunk_bytes: u64,
}

/// A stream of WAL records: the live log's reader, or a roll-forward's (a backup's WAL
/// followed by the archive).
pub(crate) trait RecordSource {
    /// The next record, `None` at the end.
    fn next_shared(&mut self) -> Result<Option<SharedRecord>>;
}

impl RecordSource for WalReader {
    fn next_shared(&mut self) -> Result<Option<SharedRecord>> {
        Ok(WalReader::next_shared(self)?)
    }
}

impl RecordSource for crate::backup_wal::LogReader {
    fn next_shared(&mut self) -> Result<Option<SharedRecord>> {
        crate::backup_wal::LogReader::next_shared(self)
    }
}

/// Hands the records of `reader`, in order, to `f`. Stops at the first error, the
/// reader's (after every record before it was handed over) or `f`'s, or when `f` returns
/// `Ok(false)`.
///
/// One thread: a reading thread handing records over (tried with owned records, then with
/// shared buffers) was slower than this, the reader being the larger half of the work and
/// the hand-over costing more than what it let run in parallel.
pub(crate) fn for_each_record(
    mut reader: impl RecordSource,
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
/// checks and gathers the batches into `buf` (empty, its capacity reused). Each time the
/// gathered operations take `chunk_bytes` of memory, calls `on_chunk` with the buffer (its `last_lsn` is the last record in it)
/// and clears it; `progress` gets the records and payload bytes gathered so far, every few
/// thousand records. Returns the buffer with what remains. A batch that does not decode is
/// corruption in `source` (offset = its LSN).
pub(crate) fn gather(
    reader: impl RecordSource,
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
        } else if rec.kind == KIND_EPOCH {
            buf.max_epoch = buf.max_epoch.max(epoch_of(&rec, source)?);
        }
        buf.last_lsn = rec.lsn;
        buf.records += 1;
        records += 1;
        bytes += rec.payload().len() as u64;
        if buf.memory_bytes() >= limits.chunk_bytes {
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

    fn gather_batches_in_runs(
        run_len: usize,
        batches: &[(u64, u64, WriteBatch)],
    ) -> Vec<(Vec<u8>, Stamp, Option<Vec<u8>>)> {
        let mut buf = VersionBuffer {
            run_len,
            ..VersionBuffer::with_capacity(1 << 20)
        };
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
            .expect("sorted")
            .into_iter()
            .map(|(k, s, v)| (k.to_vec(), s, v.map(<[u8]>::to_vec)))
            .collect()
    }

    fn gather_batches(
        batches: &[(u64, u64, WriteBatch)],
    ) -> Vec<(Vec<u8>, Stamp, Option<Vec<u8>>)> {
        gather_batches_in_runs(0, batches)
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
        let want: Vec<(Vec<u8>, Stamp, Option<Vec<u8>>)> = model
            .into_iter()
            .map(|(k, (s, i))| (k, s, Some(i.to_le_bytes().to_vec())))
            .collect();
        // One run; runs sorted on the sorting thread and merged (on two threads, as there
        // are more than 65536 entries), with versions of one key spread over many runs.
        for run_len in [0, 997, 40_000] {
            let got = gather_batches_in_runs(run_len, &batches);
            assert_eq!(got, want, "run length {run_len}");
        }
    }
}
