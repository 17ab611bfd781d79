//! The oracle of the `engine_open` target: damage one file of a small, valid engine data
//! directory, open it, read everything, write, checkpoint or compact, close and reopen.
//!
//! Input layout (missing bytes read as zero):
//!
//! ```text
//! byte 0     flags: bits 0-1 base variant (engine_base::VARIANT_NAMES)
//!                   bits 2-3 file: 0 current store, 1 MANIFEST, 2 last WAL segment,
//!                                  3 the stale file (MANIFEST.tmp or an old generation)
//!                   bit 4    truncate the file at the offset instead of writing
//!                   bit 5    recompute every checksum of the file after the damage
//!                   bit 6    compact instead of checkpoint in the write phase
//! bytes 1..5 offset, u32 LE, reduced modulo the interesting length of the file + 64
//! bytes 5..  the bytes written at the offset (at most 4096)
//! ```
//!
//! Without bit 5 ("honest damage": what a bad disk does), the properties are:
//! - no panic, no allocation above `ALLOC_LIMIT`, every read error is a corruption error;
//! - no wrong data: every successful read (get, scans, digest) equals the model after the
//!   last LSN the database recovered; damage to the store, the manifest or the stale file
//!   loses no LSN; damage to the WAL keeps every record that lies wholly before the first
//!   changed byte, and if an intact record lies wholly after the last changed byte, the
//!   open fails (damage followed by valid data is corruption, not a torn tail);
//! - unchanged bytes, or damage to the stale file only, open and read back everything;
//! - after a successful open, the store file is exactly its committed length and store
//!   files of other generations are gone;
//! - if every read succeeded (the damage hit only dead bytes), a write, a checkpoint or
//!   compaction, close and reopen all succeed and read back the model plus the write.
//!
//! With bit 5 the damaged bytes pass their checksums, so the structure checks behind them
//! (block kinds, offsets, child and value pointers, depth, counts) are what stops them;
//! wrong data can then be returned, so only "no panic, no huge allocation, no hang" holds.

use std::ops::Bound;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use duplex_engine::format::{block_size, BLOCK_HEADER_LEN, FILE_HEADER_LEN};
use duplex_engine::{entry_hash, Database, Digest, Error, WriteBatch};
use duplex_wal::format::{decode_record, Decoded, SEGMENT_HEADER_LEN};
use duplex_wal::le;
use duplex_wal::sim::SimStorage;
use duplex_wal::{OpenMode, Storage};

use crate::engine_base::{self, all_keys, key, Base, Model, DB_DIR, VARIANTS};

/// Most bytes of an input written into a file.
pub const MAX_WINDOW: usize = 4096;
/// Most entries a scan of a checksum-fixed (crafted) database reads.
const CRAFTED_SCAN_LIMIT: usize = 1000;

/// The bases, built once per process.
pub fn bases() -> &'static [Base] {
    static BASES: OnceLock<Vec<Base>> = OnceLock::new();
    BASES.get_or_init(|| (0..VARIANTS).map(engine_base::build).collect())
}

/// Which file the damage goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The current store file.
    Store,
    /// `MANIFEST`.
    Manifest,
    /// The last WAL segment.
    Wal,
    /// `MANIFEST.tmp` or an old store generation: never read.
    Stale,
}

/// One decoded input.
#[derive(Debug, Clone)]
pub struct Damage<'a> {
    /// Base variant.
    pub variant: usize,
    /// The damaged file.
    pub target: Target,
    /// Cut the file at the offset instead of writing.
    pub truncate: bool,
    /// Recompute checksums after the damage.
    pub fix: bool,
    /// Compact (rather than checkpoint) in the write phase.
    pub compact: bool,
    /// Raw offset (reduced per file).
    pub offset: u32,
    /// Bytes to write.
    pub window: &'a [u8],
}

impl<'a> Damage<'a> {
    /// Decodes an input; every byte string is a valid input.
    pub fn parse(data: &'a [u8]) -> Self {
        let flags = data.first().copied().unwrap_or(0);
        // Bytes 1..5, zero-padded when the input is shorter.
        let mut off = [0u8; 4];
        for (i, b) in data.iter().skip(1).take(4).enumerate() {
            off[i] = *b;
        }
        let window = data.get(5..).unwrap_or(&[]);
        Damage {
            variant: (flags & 3) as usize,
            target: match (flags >> 2) & 3 {
                0 => Target::Store,
                1 => Target::Manifest,
                2 => Target::Wal,
                _ => Target::Stale,
            },
            truncate: flags & 0x10 != 0,
            fix: flags & 0x20 != 0,
            compact: flags & 0x40 != 0,
            offset: le::u32_at(&off, 0),
            window: &window[..window.len().min(MAX_WINDOW)],
        }
    }
}

/// End of the last non-zero byte (where the written data of a pre-allocated WAL segment
/// ends).
fn nonzero_len(b: &[u8]) -> usize {
    b.iter().rposition(|&x| x != 0).map_or(0, |i| i + 1)
}

/// Length of `b` worth aiming at: the data of a WAL segment, the whole of anything else.
fn hot_len(target: Target, b: &[u8]) -> usize {
    match target {
        Target::Wal => nonzero_len(b).max(SEGMENT_HEADER_LEN as usize),
        _ => b.len(),
    }
}

/// Applies the damage to a copy of `orig`.
pub fn damaged(d: &Damage<'_>, orig: &[u8]) -> Vec<u8> {
    let mut b = orig.to_vec();
    let span = hot_len(d.target, orig) + 64;
    let off = d.offset as usize % span;
    if d.truncate {
        b.truncate(off.min(orig.len()));
    } else {
        let end = off + d.window.len();
        if b.len() < end {
            b.resize(end, 0);
        }
        b[off..end].copy_from_slice(d.window);
    }
    b
}

/// The `u32` length field at `at`, as a length. The caller checked `b` holds `at + 4` bytes.
fn len_at(b: &[u8], at: usize) -> usize {
    le::u32_at(b, at) as usize
}

/// Block starts of a store file, following the length fields from the header on.
pub fn block_starts(b: &[u8]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut p = FILE_HEADER_LEN;
    while p + BLOCK_HEADER_LEN <= b.len() {
        let len = len_at(b, p + 4);
        if len > b.len() || p + BLOCK_HEADER_LEN + len > b.len() {
            break;
        }
        out.push(p);
        p += block_size(len);
    }
    out
}

/// Recomputes the CRC of a 64-byte file header (store header, manifest) in place.
pub fn fix_header_crc(b: &mut [u8]) {
    if b.len() >= FILE_HEADER_LEN {
        let crc = crc32c::crc32c(&b[0..60]).to_le_bytes();
        b[60..64].copy_from_slice(&crc);
    }
}

/// Recomputes the CRC of the block at `p` if its length field fits the file.
fn fix_block_crc(b: &mut [u8], p: usize) {
    if p + BLOCK_HEADER_LEN > b.len() {
        return;
    }
    let len = len_at(b, p + 4);
    if len > b.len() || p + BLOCK_HEADER_LEN + len > b.len() {
        return;
    }
    let crc = crc32c::crc32c(&b[p + 4..p + BLOCK_HEADER_LEN + len]).to_le_bytes();
    b[p..p + 4].copy_from_slice(&crc);
}

/// Recomputes the header CRC and the CRC of every block of a store file: at the block
/// starts of the original file and along the (possibly changed) length fields.
pub fn fix_store_crcs(orig: &[u8], b: &mut [u8]) {
    fix_header_crc(b);
    for p in block_starts(orig) {
        fix_block_crc(b, p);
    }
    for p in block_starts(b) {
        fix_block_crc(b, p);
    }
}

/// The first and one past the last byte where `a` and `b` differ (length changes count).
fn diff_range(a: &[u8], b: &[u8]) -> Option<(usize, usize)> {
    let n = a.len().min(b.len());
    let first = (0..n).find(|&i| a[i] != b[i]);
    let last = (0..n).rev().find(|&i| a[i] != b[i]).map(|i| i + 1);
    match (first, a.len() == b.len()) {
        (None, true) => None,
        (None, false) => Some((n, a.len().max(b.len()))),
        (Some(f), true) => Some((f, last.unwrap_or(f + 1))),
        (Some(f), false) => Some((f, a.len().max(b.len()))),
    }
}

/// The records of a WAL segment: (LSN, start offset, end offset).
pub fn wal_records(seg: &[u8]) -> Vec<(u64, usize, usize)> {
    let mut out = Vec::new();
    let mut p = SEGMENT_HEADER_LEN as usize;
    while p < seg.len() {
        match decode_record(&seg[p..], duplex_wal::format::MAX_RECORD_SIZE_LIMIT) {
            Decoded::Record(r) => {
                out.push((r.lsn, p, p + r.size));
                p += r.size;
            }
            _ => break,
        }
    }
    out
}

/// A fresh simulated file system holding `files`, every file and directory durable.
fn storage_of(files: &[(std::path::PathBuf, Vec<u8>)]) -> SimStorage {
    let sim = SimStorage::new();
    for (p, bytes) in files {
        let dir = p.parent().unwrap_or(Path::new("/"));
        sim.create_dir_all(dir).expect("create dir in sim");
        let f = sim
            .open(p, OpenMode::CreateNew)
            .expect("create file in sim");
        f.write_all_at(bytes, 0).expect("write in sim");
        f.sync_data().expect("fsync in sim");
        sim.sync_dir(dir).expect("fsync dir in sim");
    }
    sim
}

fn open(sim: &SimStorage) -> duplex_engine::Result<Database> {
    Database::open_with(Arc::new(sim.clone()), DB_DIR, engine_base::config())
}

fn digest_of(m: &Model) -> Digest {
    let mut d = Digest::default();
    for (k, v) in m {
        d.sum = d.sum.wrapping_add(entry_hash(k, v));
        d.count += 1;
    }
    d
}

/// What reading a database showed.
#[derive(Debug, Default)]
struct Reads {
    /// Some read failed (with a corruption error).
    errors: bool,
}

/// Checks one failed read: under honest damage it must report corruption.
fn read_error(e: &Error, honest: bool, what: &str, reads: &mut Reads) {
    reads.errors = true;
    if honest {
        assert!(
            e.is_corruption(),
            "{what} failed with an error that is not corruption: {e}"
        );
    }
}

/// Scans `[start, end)`-style bounds, comparing with `expected` (when given).
fn check_scan(
    db: &Database,
    start: Bound<&[u8]>,
    end: Bound<&[u8]>,
    expected: Option<&Model>,
    reads: &mut Reads,
) {
    let honest = expected.is_some();
    let iter = match db.scan(start, end) {
        Ok(it) => it,
        Err(e) => return read_error(&e, honest, "opening a scan", reads),
    };
    let want: Vec<(&Vec<u8>, &Vec<u8>)> = match expected {
        Some(m) => m
            .range::<[u8], _>((start, end))
            .collect::<Vec<(&Vec<u8>, &Vec<u8>)>>(),
        None => Vec::new(),
    };
    let mut n = 0;
    for item in iter {
        match item {
            Ok((k, v)) => {
                if let Some(w) = want.get(n).filter(|_| honest) {
                    assert_eq!(
                        (&k, &v),
                        (w.0, w.1),
                        "scan entry {n} differs from what was written"
                    );
                }
                assert!(
                    !honest || n < want.len(),
                    "scan returned more entries than were written"
                );
            }
            Err(e) => return read_error(&e, honest, "scan", reads),
        }
        n += 1;
        if !honest && n >= CRAFTED_SCAN_LIMIT {
            return;
        }
    }
    if honest {
        assert_eq!(n, want.len(), "scan ended early without an error");
    }
}

/// Reads every key, scans (whole and ranges) and digests. `expected` is `None` for a
/// crafted database (no data to compare with; bounded work).
fn read_all(db: &Database, expected: Option<&Model>) -> Reads {
    let honest = expected.is_some();
    let mut reads = Reads::default();
    for k in all_keys() {
        match db.get(&k) {
            Ok(v) => {
                if let Some(m) = expected {
                    assert_eq!(
                        v.as_ref(),
                        m.get(&k),
                        "get({}) differs from what was written",
                        String::from_utf8_lossy(&k)
                    );
                }
            }
            Err(e) => read_error(&e, honest, "get", &mut reads),
        }
    }
    let (a, b) = (key(37), key(93));
    check_scan(db, Bound::Unbounded, Bound::Unbounded, expected, &mut reads);
    check_scan(
        db,
        Bound::Included(&a),
        Bound::Excluded(&b),
        expected,
        &mut reads,
    );
    check_scan(
        db,
        Bound::Excluded(&a),
        Bound::Included(&b),
        expected,
        &mut reads,
    );
    if let Some(m) = expected {
        match db.digest() {
            Ok(d) => assert_eq!(d, digest_of(m), "digest differs from what was written"),
            Err(e) => read_error(&e, honest, "digest", &mut reads),
        }
    }
    reads
}

/// The write phase's batch and its effect on a model.
fn fresh_batch() -> WriteBatch {
    let mut w = WriteBatch::new();
    w.put(b"new-key".to_vec(), b"fresh".to_vec())
        .delete(key(3))
        .put(key(0), vec![0x5A; 1500]);
    w
}

/// Prints what an input did when `DUPLEX_FUZZ_TRACE` is set (for reading seeds and
/// crashes: `DUPLEX_FUZZ_TRACE=1 cargo fuzz run -s none engine_open <file>`).
fn trace(f: impl FnOnce() -> String) {
    static ON: OnceLock<bool> = OnceLock::new();
    if *ON.get_or_init(|| std::env::var_os("DUPLEX_FUZZ_TRACE").is_some()) {
        eprintln!("engine_open: {}", f());
    }
}

/// Runs the whole oracle on one input.
pub fn check_engine_open(data: &[u8]) {
    let d = Damage::parse(data);
    let base = &bases()[d.variant];
    let path = match d.target {
        Target::Store => base.store.clone(),
        Target::Manifest => base.manifest.clone(),
        Target::Wal => base.wal_last.clone(),
        Target::Stale => base.stale.clone(),
    };
    let orig = base.file(&path);
    let mut bytes = damaged(&d, orig);
    if d.fix {
        match d.target {
            Target::Store => fix_store_crcs(orig, &mut bytes),
            Target::Manifest => fix_header_crc(&mut bytes),
            Target::Wal => {
                crate::fix_crcs(&mut bytes);
            }
            Target::Stale if path.ends_with("MANIFEST.tmp") => {}
            Target::Stale => fix_store_crcs(orig, &mut bytes),
        }
    }
    let changed = diff_range(orig, &bytes);
    let files: Vec<_> = base
        .files
        .iter()
        .map(|(p, b)| {
            if *p == path {
                (p.clone(), bytes.clone())
            } else {
                (p.clone(), b.clone())
            }
        })
        .collect();
    let sim = storage_of(&files);
    let honest = !d.fix || changed.is_none();
    let opened = open(&sim);
    trace(|| {
        format!(
            "{:?} {:?} changed {changed:?} honest {honest}: open {}",
            d.target,
            path,
            match &opened {
                Ok(db) => format!("ok, last LSN {}", db.stats().last_lsn),
                Err(e) => format!("error: {e}"),
            }
        )
    });

    let db = match opened {
        Ok(db) => db,
        Err(e) => {
            if honest {
                assert!(
                    changed.is_some() && d.target != Target::Stale,
                    "an undamaged database (or one with only a stale file damaged) does not open: {e}"
                );
            }
            return;
        }
    };
    if !honest {
        crafted_phase(db, &sim, d.compact);
        return;
    }

    // Honest damage, and the database opened.
    let last = db.stats().last_lsn;
    assert!(
        last <= base.last_lsn,
        "the database recovered LSN {last}, beyond the last written {}",
        base.last_lsn
    );
    match (d.target, changed) {
        (Target::Wal, Some((first, end))) => {
            let recs = wal_records(orig);
            if let Some(must) = recs
                .iter()
                .filter(|r| r.2 <= first && r.1 >= SEGMENT_HEADER_LEN as usize)
                .map(|r| r.0)
                .max()
            {
                assert!(
                    last >= must,
                    "WAL damage at offset {first} lost LSN {must}, which lies wholly before it (recovered up to {last})"
                );
            }
            // (A zeroed header with records after it used to be taken for a segment that
            // was never written, and removed with its records: found here, fixed in 0dd929f.)
            if let Some(after) = recs.iter().find(|r| r.1 >= end) {
                panic!(
                    "WAL damage in {first}..{end} was taken for a torn tail although the intact record of LSN {} follows it at offset {}",
                    after.0, after.1
                );
            }
        }
        _ => assert_eq!(
            last, base.last_lsn,
            "damage outside the WAL changed the recovered LSN"
        ),
    }
    let store_len = sim.contents(&base.store).map_or(0, |c| c.len() as u64);
    assert_eq!(
        store_len,
        db.stats().store_bytes,
        "after open the store file is not exactly its committed length"
    );
    if base.stale != base.store && !base.stale.ends_with("MANIFEST.tmp") {
        assert!(
            !sim.exists(&base.stale),
            "a store file of another generation survived the open"
        );
    }

    let mut model = base.model_at(last);
    let reads = read_all(&db, Some(&model));
    let clean = changed.is_none() || d.target == Target::Stale;
    assert!(
        !(clean && reads.errors),
        "reads of an undamaged database failed"
    );
    trace(|| format!("reads: errors {}", reads.errors));
    if reads.errors {
        // Damage found at read time; the database keeps serving what is intact.
        return;
    }

    // Every read succeeded: the damage, if any, hit dead bytes only. The database must be
    // fully usable.
    let batch = fresh_batch();
    db.write(batch.clone())
        .expect("write to a database whose reads all succeeded");
    engine_base::apply(&mut model, &batch);
    if d.compact {
        db.compact()
            .expect("compact a database whose reads all succeeded");
    } else {
        db.checkpoint()
            .expect("checkpoint a database whose reads all succeeded");
    }
    db.close()
        .expect("close a database whose reads all succeeded");
    let db = open(&sim).expect("reopen after a clean close");
    let reads = read_all(&db, Some(&model));
    assert!(
        !reads.errors,
        "reads after write, checkpoint and reopen failed"
    );
    drop(db);
}

/// The crafted (checksum-fixed) case: exercise every path, trust nothing.
fn crafted_phase(db: Database, sim: &SimStorage, compact: bool) {
    read_all(&db, None);
    let _ = db.version(&key(5));
    if db.write(fresh_batch()).is_ok() {
        let _ = if compact {
            db.compact()
        } else {
            db.checkpoint()
        };
    }
    let _ = db.close();
    if let Ok(db) = open(sim) {
        read_all(&db, None);
    }
}
