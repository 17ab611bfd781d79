//! Open-time recovery: torn tails are cut, corruption is reported with file and offset,
//! gaps and foreign segments are refused.

mod common;

use std::path::PathBuf;

use common::*;
use duplex_wal::sim::SimStorage;
use duplex_wal::{CorruptKind, Entry, Error, RecoveryMode, WalOptions};

/// Writes `n` records (tags 1..=n) and closes the log; returns the last segment's path.
fn write_records(sim: &SimStorage, n: u64, opts: &WalOptions) -> PathBuf {
    let wal = sim_open(sim, "/wal", opts.clone()).expect("open");
    for tag in 1..=n {
        assert_eq!(
            wal.append(1, &payload(tag, (tag as usize * 7) % 300))
                .expect("append"),
            tag
        );
    }
    let last = last_segment(&wal);
    wal.close().expect("close");
    last
}

#[test]
fn torn_last_record_is_cut_and_reported() {
    let sim = SimStorage::new();
    let opts = WalOptions {
        segment_size: 1 << 20,
        ..small_opts()
    };
    let seg = write_records(&sim, 20, &opts);
    let image = sim.contents(&seg).expect("segment");
    let offs = record_offsets(&image, 4096);
    let (last_off, last_size) = offs[19];
    // Damage the middle of the last record: nothing valid follows, so it is a torn tail.
    sim.corrupt(&seg, last_off + last_size as u64 / 2, 0xFF)
        .expect("corrupt");
    let wal = sim_open(&sim, "/wal", opts.clone()).expect("torn tail must open");
    let rep = wal.recovery_report().clone();
    let t = rep.truncated.expect("a truncation is reported");
    assert_eq!(t.file, seg);
    assert_eq!(t.offset, last_off);
    assert!(
        t.bytes > 0 && t.bytes <= last_size as u64,
        "cut {} bytes",
        t.bytes
    );
    assert_eq!(rep.last_lsn, 19);
    // The log continues at LSN 20, and the cut bytes were erased.
    assert_eq!(wal.append(1, &payload(99, 10)).expect("append"), 20);
    wal.close().expect("close");
    let recs = read_dir(&sim, "/wal");
    assert_eq!(recs.len(), 20);
    assert_eq!(check_payload(&recs[19].payload), Some(99));
}

#[test]
fn corruption_followed_by_valid_records_is_a_hard_error_naming_file_and_offset() {
    let sim = SimStorage::new();
    let opts = WalOptions {
        segment_size: 1 << 20,
        ..small_opts()
    };
    let seg = write_records(&sim, 20, &opts);
    let image = sim.contents(&seg).expect("segment");
    let offs = record_offsets(&image, 4096);
    let (off, _) = offs[7];
    sim.corrupt(&seg, off + 30, 0x01).expect("corrupt");
    match sim_open(&sim, "/wal", opts.clone()) {
        Err(Error::Corrupt { file, offset, kind }) => {
            assert_eq!(file, seg);
            assert_eq!(offset, off);
            assert!(matches!(kind, CorruptKind::CrcMismatch { .. }), "{kind:?}");
        }
        other => panic!("expected corruption, got {other:?}"),
    }
    // The reader reports the same place.
    let err = common::read_all(std::sync::Arc::new(sim.clone()), &["/wal".into()])
        .expect_err("reader must fail");
    assert!(
        matches!(err, Error::Corrupt { offset, .. } if offset == off),
        "{err}"
    );
    // A message an operator can act on.
    let msg = err.to_string();
    assert!(
        msg.contains("00000000000000000001.wal") && msg.contains(&off.to_string()),
        "{msg}"
    );
}

#[test]
fn zeroed_record_in_the_middle_is_corruption_not_the_end() {
    let sim = SimStorage::new();
    let opts = WalOptions {
        segment_size: 1 << 20,
        ..small_opts()
    };
    let seg = write_records(&sim, 10, &opts);
    let image = sim.contents(&seg).expect("segment");
    let (off, size) = record_offsets(&image, 4096)[4];
    for i in 0..size as u64 {
        let b = image[(off + i) as usize];
        if b != 0 {
            sim.corrupt(&seg, off + i, b).expect("zero");
        }
    }
    match sim_open(&sim, "/wal", opts) {
        Err(Error::Corrupt { offset, kind, .. }) => {
            assert_eq!(offset, off);
            assert_eq!(kind, CorruptKind::Zeroed);
        }
        other => panic!("expected corruption, got {other:?}"),
    }
}

#[test]
fn damage_in_a_closed_segment_is_corruption_even_at_its_end() {
    let sim = SimStorage::new();
    let opts = small_opts();
    write_records(&sim, 300, &opts);
    let wal = sim_open(&sim, "/wal", opts.clone()).expect("open");
    let segs = wal.segments();
    drop(wal);
    assert!(segs.len() >= 3, "{segs:?}");
    let first = &segs[0];
    let image = sim.contents(&first.path).expect("segment");
    let offs = record_offsets(&image, 4096);
    let (off, _) = *offs.last().expect("records");
    sim.corrupt(&first.path, off + 8, 0x80).expect("corrupt");
    match sim_open(&sim, "/wal", opts) {
        Err(Error::Corrupt { file, offset, .. }) => {
            assert_eq!(file, first.path);
            assert_eq!(offset, off);
        }
        other => panic!("expected corruption, got {other:?}"),
    }
}

#[test]
fn missing_segment_is_a_gap() {
    let sim = SimStorage::new();
    let opts = small_opts();
    write_records(&sim, 300, &opts);
    let wal = sim_open(&sim, "/wal", opts.clone()).expect("open");
    let segs = wal.segments();
    drop(wal);
    duplex_wal::Storage::remove_file(&sim, &segs[1].path).expect("remove");
    match sim_open(&sim, "/wal", opts.clone()) {
        Err(Error::Gap {
            after_lsn,
            next_first_lsn,
            ..
        }) => {
            assert_eq!(after_lsn, segs[0].last_lsn.expect("closed"));
            assert_eq!(next_first_lsn, segs[2].first_lsn);
        }
        other => panic!("expected a gap, got {other:?}"),
    }
    let err = common::read_all(std::sync::Arc::new(sim.clone()), &["/wal".into()])
        .expect_err("reader must see the gap");
    assert!(matches!(err, Error::Gap { .. }), "{err}");
}

#[test]
fn truncate_corrupt_tail_mode_keeps_a_copy_and_continues() {
    let sim = SimStorage::new();
    let opts = WalOptions {
        segment_size: 1 << 20,
        ..small_opts()
    };
    let seg = write_records(&sim, 20, &opts);
    let image = sim.contents(&seg).expect("segment");
    let (off, _) = record_offsets(&image, 4096)[12];
    sim.corrupt(&seg, off + 2, 0x04).expect("corrupt");
    let wal = sim_open(
        &sim,
        "/wal",
        WalOptions {
            recovery: RecoveryMode::TruncateCorruptTail,
            ..opts.clone()
        },
    )
    .expect("repair mode opens");
    let t = wal.recovery_report().truncated.clone().expect("cut");
    let broken = t.broken_copy.expect("copy kept");
    assert_eq!(
        sim.contents(&broken).expect("broken copy")[..image.len().min(64)],
        image[..64]
    );
    assert_eq!(t.offset, off);
    assert_eq!(wal.last_lsn(), 12);
    assert_eq!(wal.append(1, &payload(500, 3)).expect("append"), 13);
    wal.close().expect("close");
    let recs = read_dir(&sim, "/wal");
    assert_eq!(recs.len(), 13);
    assert_eq!(check_payload(&recs[12].payload), Some(500));
}

#[test]
fn incomplete_batch_at_the_tail_is_cut_whole() {
    let sim = SimStorage::new();
    let opts = WalOptions {
        segment_size: 1 << 20,
        // The file is cut short by hand, which only a file that was not preallocated may be.
        preallocate: false,
        ..small_opts()
    };
    let wal = sim_open(&sim, "/wal", opts.clone()).expect("open");
    wal.append(1, b"before").expect("append");
    let bodies: Vec<Vec<u8>> = (0..5).map(|i| payload(i, 100)).collect();
    let entries: Vec<Entry<'_>> = bodies
        .iter()
        .map(|b| Entry {
            kind: 2,
            payload: b,
        })
        .collect();
    assert_eq!(wal.append_batch(&entries).expect("batch"), 6);
    let seg = last_segment(&wal);
    wal.close().expect("close");
    let image = sim.contents(&seg).expect("segment");
    let offs = record_offsets(&image, 4096);
    // Drop the batch's last record: the first four are valid records but the batch is not.
    let (off, size) = offs[5];
    sim.truncate(&seg, off + size as u64 / 3).expect("truncate");
    let wal = sim_open(&sim, "/wal", opts).expect("open");
    assert_eq!(wal.last_lsn(), 1);
    let t = wal.recovery_report().truncated.clone().expect("cut");
    assert_eq!(t.offset, offs[1].0);
    assert_eq!(t.reason, CorruptKind::Truncated);
    drop(wal);
    assert_eq!(read_dir(&sim, "/wal").len(), 1);
}

#[test]
fn segment_of_another_node_is_refused() {
    let sim = SimStorage::new();
    write_records(&sim, 3, &small_opts());
    let err = sim_open(
        &sim,
        "/wal",
        WalOptions {
            node_id: 2,
            ..small_opts()
        },
    )
    .expect_err("foreign node");
    assert!(
        matches!(
            err,
            Error::NodeMismatch {
                expected: 2,
                found: 1,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn segment_whose_header_never_reached_disk_is_removed() {
    let sim = SimStorage::new();
    let opts = small_opts();
    write_records(&sim, 5, &opts);
    // A later segment file that exists but holds only zeros (created, header lost).
    let path = PathBuf::from("/wal").join(duplex_wal::format::segment_file_name(6));
    {
        use duplex_wal::{OpenMode, Storage};
        let f = sim.open(&path, OpenMode::CreateNew).expect("create");
        f.set_len(8192).expect("len");
        f.sync_data().expect("sync");
        sim.sync_dir(std::path::Path::new("/wal"))
            .expect("sync dir");
    }
    let wal = sim_open(&sim, "/wal", opts).expect("open");
    assert_eq!(wal.recovery_report().removed_segments, vec![path.clone()]);
    assert_eq!(wal.last_lsn(), 5);
    assert_eq!(wal.append(1, b"x").expect("append"), 6);
}

#[test]
fn bad_header_is_reported() {
    let sim = SimStorage::new();
    let seg = write_records(&sim, 5, &small_opts());
    sim.corrupt(&seg, 20, 0x01).expect("corrupt");
    match sim_open(&sim, "/wal", small_opts()) {
        Err(Error::Corrupt {
            offset: 0, kind, ..
        }) => {
            assert!(matches!(kind, CorruptKind::HeaderCrc { .. }), "{kind:?}")
        }
        other => panic!("expected header corruption, got {other:?}"),
    }
}

#[test]
fn stray_bytes_after_empty_space_are_a_torn_tail_and_are_erased() {
    let sim = SimStorage::new();
    let opts = WalOptions {
        segment_size: 1 << 20,
        ..small_opts()
    };
    let seg = write_records(&sim, 5, &opts);
    let wal = sim_open(&sim, "/wal", opts.clone()).expect("open");
    let end = wal.segments().last().expect("segment").end_offset;
    drop(wal);
    for i in 0..25 {
        sim.corrupt(&seg, end + 64 + i, 0xFF).expect("junk");
    }
    let wal = sim_open(&sim, "/wal", opts.clone()).expect("open");
    let t = wal
        .recovery_report()
        .truncated
        .clone()
        .expect("the junk is reported");
    assert_eq!((t.offset, t.bytes), (end, 64 + 25));
    assert_eq!(t.reason, CorruptKind::TrailingGarbage);
    wal.append(1, b"next").expect("append");
    wal.close().expect("close");
    let wal = sim_open(&sim, "/wal", opts).expect("reopen");
    assert_eq!(
        wal.recovery_report().truncated,
        None,
        "nothing left to cut after a clean close"
    );
    assert_eq!(wal.last_lsn(), 6);
}

#[test]
fn a_header_naming_lsn_zero_is_corruption() {
    use duplex_wal::format::SegmentHeader;
    let sim = SimStorage::new();
    let seg = write_records(&sim, 3, &small_opts());
    let bytes = SegmentHeader {
        node_id: 1,
        first_lsn: 0,
        created_ms: 0,
        ..SegmentHeader::default()
    }
    .encode();
    // A consistent header (its CRC is valid) that names LSN 0.
    let image = sim.contents(&seg).expect("segment");
    for (i, b) in bytes.iter().enumerate() {
        let x = image[i] ^ b;
        if x != 0 {
            sim.corrupt(&seg, i as u64, x).expect("rewrite header");
        }
    }
    match sim_open(&sim, "/wal", small_opts()) {
        Err(Error::Corrupt {
            offset: 0, kind, ..
        }) => {
            assert_eq!(kind, CorruptKind::BadFirstLsn(0))
        }
        other => panic!("expected a bad first LSN, got {other:?}"),
    }
}

#[test]
fn a_zeroed_header_with_records_after_it_is_corruption_not_an_empty_segment() {
    let sim = SimStorage::new();
    let seg = write_records(&sim, 5, &small_opts());
    let image = sim.contents(&seg).expect("segment");
    for (i, b) in image.iter().enumerate().take(64) {
        if *b != 0 {
            sim.corrupt(&seg, i as u64, *b).expect("zero the header");
        }
    }
    match sim_open(&sim, "/wal", small_opts()) {
        Err(Error::Corrupt {
            file, offset: 0, ..
        }) => assert_eq!(file, seg),
        other => panic!("expected corruption of the header, got {other:?}"),
    }
    assert!(
        sim.contents(&seg).is_some(),
        "the damaged segment must not be removed"
    );
}
