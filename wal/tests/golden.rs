//! Golden files: WAL segments written by today's format, committed under `fixtures/wal/`,
//! must read back exactly; the damaged copies must fail with the typed corruption error
//! naming the damaged segment and the offset of the damaged record. A change that cannot
//! read yesterday's segments fails here. `write_fixtures` (ignored) made them; see
//! `fixtures/README.md`.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::{read_all, record_offsets};
use duplex_testkit::fixtures::{self, cut, flip_byte, replace_dir, scratch_copy};
use duplex_wal::format::RECORD_HEADER_LEN;
use duplex_wal::{
    list_segments, CorruptKind, Entry, Error, StdStorage, SyncPolicy, Wal, WalOptions,
};

/// Small segments, so that 70 records span several.
const SEGMENT_SIZE: u64 = 4096;
const NODE_ID: u64 = 7;
const RECORDS: u64 = 70;
/// The records written as one `append_batch` each (first LSN, count).
const BATCHES: [(u64, u64); 2] = [(10, 5), (25, 4)];
/// The damaged record of `flipped-byte/` and `cut-segment/`: the third record of the
/// second segment.
const DAMAGED_SEGMENT: usize = 1;
const DAMAGED_RECORD: usize = 2;
/// Where the damage lands in that segment (the offset of that record), as the
/// generator found it: the reader must name exactly this offset.
const DAMAGED_OFFSET: u64 = 656;

fn options() -> WalOptions {
    WalOptions {
        node_id: NODE_ID,
        segment_size: SEGMENT_SIZE,
        sync: SyncPolicy::Always,
        ..WalOptions::default()
    }
}

/// Kind of the record at `lsn`.
fn kind(lsn: u64) -> u8 {
    1 + (lsn % 5) as u8
}

/// Payload of the record at `lsn`: `lsn * 37 % 300` bytes (some empty),
/// each a function of the LSN and its index.
fn payload(lsn: u64) -> Vec<u8> {
    let len = (lsn * 37 % 300) as usize;
    (0..len)
        .map(|i| (lsn as usize * 31 + i * 7) as u8)
        .collect()
}

fn fixture(name: &str) -> PathBuf {
    fixtures::dir("wal").join(name)
}

/// The segments of `dir`, oldest first.
fn segments(dir: &Path) -> Vec<PathBuf> {
    list_segments(&StdStorage, &[dir.to_path_buf()])
        .expect("list segments")
        .into_iter()
        .map(|(_, p)| p)
        .collect()
}

/// The damaged record's offset in the damaged segment of `dir`, and its size.
fn damaged_record(dir: &Path) -> (u64, usize) {
    let seg = &segments(dir)[DAMAGED_SEGMENT];
    let image = std::fs::read(seg).expect("read segment");
    record_offsets(&image, 1 << 20)[DAMAGED_RECORD]
}

#[test]
fn intact_segments_read_back_exactly() {
    let (_t, dir) = scratch_copy(&fixture("intact"));
    assert!(
        segments(&dir).len() >= 3,
        "the fixture spans several segments"
    );
    let records =
        read_all(Arc::new(StdStorage), std::slice::from_ref(&dir)).expect("read the fixture");
    let got: Vec<(u64, u8, Vec<u8>)> = records
        .into_iter()
        .map(|r| (r.lsn, r.kind, r.payload))
        .collect();
    let want: Vec<(u64, u8, Vec<u8>)> = (1..=RECORDS).map(|l| (l, kind(l), payload(l))).collect();
    assert_eq!(got, want);

    let wal = Wal::open(&dir, options()).expect("recovery of an intact log");
    let report = wal.recovery_report().clone();
    assert_eq!((report.first_lsn, report.last_lsn), (1, RECORDS));
    assert!(report.truncated.is_none() && report.removed_segments.is_empty());
    assert_eq!(wal.append(1, b"next").expect("append"), RECORDS + 1);
    wal.close().expect("close");
}

/// The file, offset and kind of a typed corruption; fails on any other error.
fn corruption(err: Error) -> (PathBuf, u64, CorruptKind) {
    if let Error::Corrupt { file, offset, kind } = err {
        return (file, offset, kind);
    }
    panic!("expected a typed corruption, got {err}");
}

#[test]
fn a_flipped_byte_is_corruption_naming_segment_and_offset() {
    let (_t, dir) = scratch_copy(&fixture("flipped-byte"));
    let seg = segments(&dir)[DAMAGED_SEGMENT].clone();
    let err =
        read_all(Arc::new(StdStorage), std::slice::from_ref(&dir)).expect_err("damage must show");
    let (file, offset, kind) = corruption(err);
    assert_eq!((file, offset), (seg.clone(), DAMAGED_OFFSET));
    assert!(matches!(kind, CorruptKind::CrcMismatch { .. }), "{kind}");
    // Recovery refuses too: good records follow the damage, so it is no torn tail.
    let err = Wal::open(&dir, options()).expect_err("recovery must refuse");
    let (file, offset, kind) = corruption(err);
    assert_eq!((file, offset), (seg.clone(), DAMAGED_OFFSET));
    assert!(matches!(kind, CorruptKind::CrcMismatch { .. }), "{kind}");
}

#[test]
fn a_cut_segment_before_the_last_is_corruption_naming_it() {
    let (_t, dir) = scratch_copy(&fixture("cut-segment"));
    let seg = segments(&dir)[DAMAGED_SEGMENT].clone();
    let err =
        read_all(Arc::new(StdStorage), std::slice::from_ref(&dir)).expect_err("damage must show");
    let (file, offset, kind) = corruption(err);
    assert_eq!((file, offset), (seg.clone(), DAMAGED_OFFSET));
    assert!(matches!(kind, CorruptKind::Truncated), "{kind}");
    let err = Wal::open(&dir, options()).expect_err("recovery must refuse");
    let (file, offset, _) = corruption(err);
    assert_eq!((file, offset), (seg, DAMAGED_OFFSET));
}

/// Writes `fixtures/wal/`: `intact/` (70 records, two of them batches, over several
/// 4 KiB segments), `flipped-byte/` (one payload byte of the third record of the second
/// segment inverted) and `cut-segment/` (the second segment cut in the middle of that
/// record). Run on purpose only: the committed bytes are the truth, and a change that
/// cannot read them must fail the tests above, not rewrite them.
#[test]
#[ignore = "regenerates the committed golden files"]
fn write_fixtures() {
    let t = duplex_testkit::temp_dir();
    let dir = t.path().join("intact");
    let wal = Wal::open(&dir, options()).expect("open");
    let mut lsn = 1;
    while lsn <= RECORDS {
        let n = BATCHES.iter().find(|b| b.0 == lsn).map_or(1, |b| b.1);
        let payloads: Vec<Vec<u8>> = (lsn..lsn + n).map(payload).collect();
        let entries: Vec<Entry<'_>> = (lsn..lsn + n)
            .zip(&payloads)
            .map(|(l, p)| Entry {
                kind: kind(l),
                payload: p,
            })
            .collect();
        assert_eq!(wal.append_batch(&entries).expect("append"), lsn + n - 1);
        lsn += n;
    }
    wal.close().expect("close");
    let (offset, size) = damaged_record(&dir);
    assert_eq!(
        offset, DAMAGED_OFFSET,
        "the damaged record moved: set DAMAGED_OFFSET to {offset}"
    );

    replace_dir(&dir, &fixture("intact")).expect("write intact/");
    let flipped = fixture("flipped-byte");
    replace_dir(&dir, &flipped).expect("write flipped-byte/");
    let seg = &segments(&flipped)[DAMAGED_SEGMENT];
    flip_byte(seg, offset + RECORD_HEADER_LEN as u64 + 1).expect("flip");
    let cut_dir = fixture("cut-segment");
    replace_dir(&dir, &cut_dir).expect("write cut-segment/");
    cut(
        &segments(&cut_dir)[DAMAGED_SEGMENT],
        offset + size as u64 / 2,
    )
    .expect("cut");
}
