//! Shared pieces of the Duplex fuzz targets.
//!
//! - An allocation ceiling: any single allocation above [`ALLOC_LIMIT`] aborts the process,
//!   which libFuzzer reports as a crash. Inputs are a few KiB and records at most
//!   [`MAX_RECORD`] bytes, so a bigger allocation means a length field was trusted.
//! - [`fix_crcs`]: recomputes the segment-header and record checksums of a byte string, so
//!   that the fuzzer also reaches the checks that sit behind a CRC (LSN order, batch flags,
//!   reserved bytes, torn tail versus corruption) instead of stopping at the checksum.
//! - [`check_dir`]: the oracle over a WAL directory in simulated storage: read it, open it
//!   (recovery), and if it opens, append, close, reopen and read everything back.
//! - [`engine`]: the oracle of the `engine_open` target, over the small databases of
//!   [`engine_base`] (which `fuzz/seedgen` uses through this library).

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use duplex_wal::format::{
    record_size, segment_file_name, SegmentHeader, RECORD_ALIGN, RECORD_HEADER_LEN,
    SEGMENT_HEADER_LEN, SEGMENT_MAGIC,
};
use duplex_wal::le::{u32_at, u64_at};
use duplex_wal::sim::SimStorage;
use duplex_wal::{
    Entry, Error, OpenMode, ReadOptions, Record, RecoveryMode, Storage, SyncPolicy, TornTail, Wal,
    WalOptions, WalReader,
};

pub mod engine;
pub mod engine_base;
pub mod model;

/// Largest record payload the targets accept (`max_record_size`).
pub const MAX_RECORD: u32 = 1 << 20;

/// Largest single allocation allowed while a target runs.
pub const ALLOC_LIMIT: usize = 8 << 20;

/// The live directory every target writes its segments into.
pub const DIR: &str = "/wal";

struct CappedAlloc;

// SAFETY: every call is forwarded unchanged to the system allocator; the only addition is an
// abort (never an unwind) before an oversized request.
unsafe impl GlobalAlloc for CappedAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > ALLOC_LIMIT {
            std::process::abort();
        }
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() > ALLOC_LIMIT {
            std::process::abort();
        }
        System.alloc_zeroed(layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > ALLOC_LIMIT {
            std::process::abort();
        }
        System.realloc(ptr, layout, new_size)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static GLOBAL: CappedAlloc = CappedAlloc;

/// The first LSN a segment's header bytes claim (bytes 24..32), if that many bytes exist.
pub fn claimed_first_lsn(seg: &[u8]) -> Option<u64> {
    seg.get(24..32).map(|b| u64_at(b, 0))
}

/// Rewrites the record checksum of the record at the start of `rec` (if its length field is
/// plausible and the record fits). Returns true if a byte changed.
pub fn fix_record_crc(rec: &mut [u8]) -> bool {
    if rec.len() < RECORD_HEADER_LEN {
        return false;
    }
    let len = u32_at(rec, 4);
    if len > MAX_RECORD {
        return false;
    }
    let end = RECORD_HEADER_LEN + len as usize;
    if end > rec.len() {
        return false;
    }
    let crc = crc32c::crc32c(&rec[4..end]).to_le_bytes();
    let changed = rec[0..4] != crc;
    rec[0..4].copy_from_slice(&crc);
    changed
}

/// Rewrites the header checksum (if the magic is there) and the checksum of every record
/// found by walking the length fields from the end of the header; zeroed headers and
/// implausible lengths are stepped over 8 bytes at a time, so records after damage get valid
/// checksums too. Returns true if a byte changed.
pub fn fix_crcs(seg: &mut [u8]) -> bool {
    let mut changed = false;
    let hl = SEGMENT_HEADER_LEN as usize;
    if seg.len() >= hl && seg[0..8] == SEGMENT_MAGIC {
        let crc = crc32c::crc32c(&seg[0..hl - 4]).to_le_bytes();
        changed |= seg[hl - 4..hl] != crc;
        seg[hl - 4..hl].copy_from_slice(&crc);
    }
    let mut p = hl;
    // Bounded: p grows by at least RECORD_ALIGN every turn.
    while p + RECORD_HEADER_LEN <= seg.len() {
        let h = &seg[p..p + RECORD_HEADER_LEN];
        let len = u32_at(h, 4);
        if h.iter().all(|&b| b == 0) || len > MAX_RECORD {
            p += RECORD_ALIGN;
            continue;
        }
        let size = record_size(len as usize);
        if p + size > seg.len() {
            break;
        }
        changed |= fix_record_crc(&mut seg[p..p + size]);
        p += size;
    }
    changed
}

/// A fresh simulated file system holding `files` (name, bytes) in [`DIR`], every file and
/// the directory fsynced.
pub fn storage_with(files: &[(String, &[u8])]) -> SimStorage {
    let sim = SimStorage::new();
    let dir = Path::new(DIR);
    sim.create_dir_all(dir).expect("create dir in sim");
    for (name, bytes) in files {
        let f = sim
            .open(&dir.join(name), OpenMode::CreateNew)
            .expect("create file in sim");
        f.write_all_at(bytes, 0).expect("write in sim");
        f.sync_data().expect("fsync in sim");
    }
    sim.sync_dir(dir).expect("fsync dir in sim");
    sim
}

/// What reading [`DIR`] from the start showed.
struct ReadAll {
    /// The records returned before the stream ended.
    records: Vec<Record>,
    /// The error that ended it, if any.
    error: Option<Error>,
    /// The torn tail the stream ended at, if any.
    torn: Option<TornTail>,
}

/// Reads every record of [`DIR`] from the start, as node `node_id`.
fn read_all(sim: &SimStorage, node_id: u64) -> ReadAll {
    read_all_with(sim, node_id, false)
}

/// [`read_all`], the segments mapped or not.
fn read_all_with(sim: &SimStorage, node_id: u64, map_segments: bool) -> ReadAll {
    let opts = ReadOptions {
        max_record_size: MAX_RECORD,
        node_id: Some(node_id),
        map_segments,
        ..ReadOptions::default()
    };
    let mut reader = match WalReader::open(Arc::new(sim.clone()), &[PathBuf::from(DIR)], 0, opts) {
        Ok(r) => r,
        Err(e) => {
            return ReadAll {
                records: Vec::new(),
                error: Some(e),
                torn: None,
            }
        }
    };
    let mut records = Vec::new();
    // Bounded: every record takes at least RECORD_HEADER_LEN bytes of a finite directory,
    // and the reader yields nothing after its first error.
    let error = loop {
        match reader.next_record() {
            Ok(Some(rec)) => records.push(rec),
            Ok(None) => break None,
            Err(e) => break Some(e),
        }
    };
    ReadAll {
        records,
        error,
        torn: reader.torn_tail().cloned(),
    }
}

/// Records must carry consecutive LSNs, a non-zero kind and a bounded payload.
fn assert_well_formed(recs: &[Record], what: &str) {
    for w in recs.windows(2) {
        assert_eq!(w[0].lsn + 1, w[1].lsn, "{what}: LSNs not consecutive");
    }
    for r in recs {
        assert_ne!(r.kind, 0, "{what}: record of kind 0 returned");
        assert!(
            r.payload.len() <= MAX_RECORD as usize,
            "{what}: oversized payload"
        );
    }
}

fn options(node_id: u64, recovery: RecoveryMode) -> WalOptions {
    WalOptions {
        node_id,
        segment_size: 1 << 16,
        max_record_size: MAX_RECORD,
        sync: SyncPolicy::Always,
        preallocate: false,
        recovery,
        archive_dir: None,
        initial_lsn: 1,
        ..WalOptions::default()
    }
}

/// The oracle over the segments already in `sim`'s [`DIR`]. `node_id` is the node the log is
/// opened as (the one a segment header claims, so that the fuzzer gets past that check).
///
/// Properties checked (beyond "no panic, no huge allocation"):
/// - every record a reader returns is well formed, and a reader that maps the segments
///   returns the same records, error and torn tail as one that copies them;
/// - if a plain read of the directory (as node `node_id`) succeeds, the log opens (unless a
///   segment is shorter than its intended length, which only opening checks), recovers
///   exactly those records, and reports the last one's LSN; and recovery cuts a torn tail
///   exactly when the reader ended at one, for the same reason (they share one
///   classification of how a segment's records stop);
/// - if the log opens (strictly, or by cutting a corrupt tail), a reader then sees no damage
///   and no torn tail, and returns a prefix of what the first read returned; appended
///   records get the next LSNs, and after close and reopen everything reads back, with
///   nothing cut (stray bytes after empty space were cut and zeroed by the first open).
pub fn check_dir(sim: &SimStorage, node_id: u64) {
    let first = read_all(sim, node_id);
    let (before, before_err) = (&first.records, &first.error);
    assert_well_formed(before, "first read");
    // Reading the segments mapped, in place, sees exactly the same.
    let mapped = read_all_with(sim, node_id, true);
    assert_eq!(&mapped.records, before, "mapped read: records differ");
    assert_eq!(
        mapped.error.as_ref().map(ToString::to_string),
        before_err.as_ref().map(ToString::to_string),
        "mapped read: errors differ"
    );
    assert_eq!(mapped.torn, first.torn, "mapped read: torn tails differ");

    let storage: Arc<dyn Storage> = Arc::new(sim.clone());
    let (wal, strict) =
        match Wal::open_with(storage.clone(), DIR, options(node_id, RecoveryMode::Strict)) {
            Ok(w) => (w, true),
            // A live segment shorter than its header's intended length is refused at open
            // (a crash cannot shrink a preallocated file), while a reader, which also reads
            // archived copies that are never that long, reads it: nothing more to compare.
            Err(Error::ShortSegment { .. }) => return,
            Err(e) => {
                assert!(
                    before_err.is_some(),
                    "the directory reads cleanly ({} records) but the log does not open: {e}",
                    before.len()
                );
                let again = Wal::open_with(
                    storage.clone(),
                    DIR,
                    options(node_id, RecoveryMode::TruncateCorruptTail),
                );
                match again {
                    Ok(w) => (w, false),
                    Err(_) => return,
                }
            }
        };
    let report = wal.recovery_report().clone();
    let last = wal.last_lsn();
    assert_eq!(
        report.last_lsn, last,
        "recovery report and log disagree on the last LSN"
    );
    if before_err.is_none() {
        // Reader and recovery share one classification of how a segment's records stop:
        // the reader ends at a torn tail exactly when recovery cuts one, for the same reason.
        match (&first.torn, &report.truncated) {
            (None, None) => {}
            (Some(t), Some(cut)) => {
                assert_eq!(
                    t.file, cut.file,
                    "reader and recovery see the tail in different files"
                );
                assert_eq!(
                    t.kind, cut.reason,
                    "reader and recovery disagree on why the tail is torn"
                );
                assert!(
                    cut.offset <= t.offset,
                    "recovery cut at {} after the reader's torn tail at {}",
                    cut.offset,
                    t.offset
                );
            }
            (t, cut) => {
                panic!("reader and recovery disagree on the tail: reader {t:?}, recovery {cut:?}")
            }
        }
    }

    let second = read_all(sim, node_id);
    if let Some(e) = second.error {
        panic!("the log opened (strict: {strict}) but a reader then fails: {e}");
    }
    assert_eq!(
        second.torn, None,
        "the log opened (strict: {strict}) but a reader still finds a torn tail"
    );
    let after = second.records;
    assert_well_formed(&after, "read after open");
    if before_err.is_none() {
        assert_eq!(
            &after, before,
            "recovery changed the records of a cleanly read log"
        );
    } else {
        assert!(
            after.len() <= before.len() && after[..] == before[..after.len()],
            "recovery kept records the first read did not return"
        );
    }
    if let Some(r) = after.last() {
        assert_eq!(
            r.lsn, last,
            "the last record read is not the log's last LSN"
        );
    }

    if last.checked_add(3).is_none() {
        // LSNs must never wrap: an append past u64::MAX has to fail.
        assert!(
            wal.append(7, b"fuzz").is_err() || wal.append(7, b"fuzz").is_err(),
            "appends past LSN u64::MAX succeeded"
        );
        return;
    }
    let one = wal.append(7, b"fuzz").expect("append to a recovered log");
    assert_eq!(one, last + 1, "append did not take the next LSN");
    let batch = [
        Entry {
            kind: 1,
            payload: b"batch-a",
        },
        Entry {
            kind: 2,
            payload: b"",
        },
    ];
    let two = wal
        .append_batch(&batch)
        .expect("append a batch to a recovered log");
    assert_eq!(two, last + 3, "batch did not take the next LSNs");
    wal.close().expect("close a recovered log");

    let wal = Wal::open_with(storage, DIR, options(node_id, RecoveryMode::Strict))
        .expect("reopen after a clean close");
    assert_eq!(
        wal.recovery_report().truncated,
        None,
        "reopen after a clean close cut something"
    );
    assert_eq!(wal.last_lsn(), last + 3, "reopen lost appended records");
    drop(wal);

    let third = read_all(sim, node_id);
    if let Some(e) = third.error {
        panic!("reading after append and reopen fails: {e}");
    }
    let reread = third.records;
    let n = after.len();
    assert!(reread.len() >= 3, "appended records missing after reopen");
    assert_eq!(reread[..n], after[..], "records before the append changed");
    let tail: Vec<(u64, u8, &[u8])> = reread[n..]
        .iter()
        .map(|r| (r.lsn, r.kind, &r.payload[..]))
        .collect();
    assert_eq!(
        tail,
        vec![
            (last + 1, 7, &b"fuzz"[..]),
            (last + 2, 1, &b"batch-a"[..]),
            (last + 3, 2, &b""[..]),
        ],
        "appended records read back wrong"
    );
}

/// Node id to open as: the one the first decodable header claims, else 1.
pub fn node_id_of(segments: &[&[u8]]) -> u64 {
    segments
        .iter()
        .find_map(|s| SegmentHeader::decode(s).ok())
        .map(|h| h.node_id)
        .unwrap_or(1)
}

/// Runs [`check_dir`] on one segment stored under `name`.
pub fn check_one_segment(name: String, seg: &[u8]) {
    let sim = storage_with(&[(name, seg)]);
    check_dir(&sim, node_id_of(&[seg]));
}

/// Names a segment file may be given: the first LSN 1 and the one its header claims.
pub fn candidate_names(seg: &[u8]) -> Vec<String> {
    let mut names = vec![segment_file_name(1)];
    if let Some(lsn) = claimed_first_lsn(seg) {
        let n = segment_file_name(lsn);
        if n != names[0] {
            names.push(n);
        }
    }
    names
}
