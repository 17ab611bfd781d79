//! Segment format version 2: version 1 segments still open and read, the timeline and the
//! intended length round-trip, a live segment cut below its intended length is damage, and
//! a header of a newer version is refused as such.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use duplex_wal::format::{
    encode_record, segment_file_name, SegmentHeader, FORMAT_VERSION, SEGMENT_HEADER_LEN,
};
use duplex_wal::sim::SimStorage;
use duplex_wal::{CorruptKind, Error, OpenMode, Record, Storage, Wal, WalOptions};

fn opts() -> WalOptions {
    WalOptions {
        segment_size: 8192,
        max_record_size: 1024,
        background_threads: false,
        ..WalOptions::default()
    }
}

fn open(sim: &SimStorage, opts: WalOptions) -> duplex_wal::Result<Wal> {
    Wal::open_with(Arc::new(sim.clone()), "/wal", opts)
}

fn read_all(wal: &Wal) -> Vec<Record> {
    wal.read_from(1)
        .expect("reader")
        .collect::<duplex_wal::Result<_>>()
        .expect("read")
}

fn write_file(sim: &SimStorage, path: &Path, bytes: &[u8]) {
    let f = sim.open(path, OpenMode::CreateNew).expect("create");
    f.write_all_at(bytes, 0).expect("write");
    f.sync_data().expect("sync");
    sim.sync_dir(path.parent().expect("parent"))
        .expect("sync dir");
}

/// A segment as version 1 wrote it: header, three records, zeros to 8 KiB.
fn v1_segment(sim: &SimStorage) -> PathBuf {
    sim.create_dir_all(Path::new("/wal")).expect("mkdir");
    let header = SegmentHeader {
        node_id: 1,
        first_lsn: 1,
        created_ms: 1_000,
        ..SegmentHeader::default()
    };
    let mut bytes = header.encode_v1().to_vec();
    for lsn in 1..=3u64 {
        encode_record(&mut bytes, lsn, 1, 0, format!("old {lsn}").as_bytes());
    }
    bytes.resize(8192, 0);
    let path = PathBuf::from("/wal").join(segment_file_name(1));
    write_file(sim, &path, &bytes);
    path
}

#[test]
fn a_version_1_segment_opens_reads_and_takes_appends() {
    let sim = SimStorage::new();
    let path = v1_segment(&sim);
    let wal = open(&sim, opts()).expect("a version 1 log opens");
    assert_eq!(wal.last_lsn(), 3);
    assert_eq!(wal.append(1, b"new").expect("append"), 4);
    wal.rotate().expect("rotate");
    wal.append(1, b"in a v2 segment").expect("append");
    let recs = read_all(&wal);
    let payloads: Vec<&[u8]> = recs.iter().map(|r| r.payload.as_slice()).collect();
    assert_eq!(
        payloads,
        [
            &b"old 1"[..],
            b"old 2",
            b"old 3",
            b"new",
            b"in a v2 segment"
        ]
    );
    // The old segment keeps its version 1 header; the new one is version 2.
    let old = sim.contents(&path).expect("old segment");
    assert_eq!(old[8..12], 1u32.to_le_bytes());
    let new_path = wal.segments()[1].path.clone();
    let new = sim.contents(&new_path).expect("new segment");
    assert_eq!(new[8..12], FORMAT_VERSION.to_le_bytes());
    wal.close().expect("close");
}

#[test]
fn a_new_segment_header_carries_timeline_and_intended_length() {
    let sim = SimStorage::new();
    let wal = open(
        &sim,
        WalOptions {
            timeline: 4,
            ..opts()
        },
    )
    .expect("open");
    let path = wal.segments()[0].path.clone();
    let bytes = sim.contents(&path).expect("segment");
    let h = SegmentHeader::decode(&bytes[..SEGMENT_HEADER_LEN as usize]).expect("header");
    assert_eq!((h.timeline, h.intended_len, h.node_id), (4, 8192, 1));
    assert_eq!(SegmentHeader::decode(&h.encode()), Ok(h));
    drop(wal);

    let sim = SimStorage::new();
    let wal = open(
        &sim,
        WalOptions {
            preallocate: false,
            ..opts()
        },
    )
    .expect("open");
    let bytes = sim.contents(&wal.segments()[0].path).expect("segment");
    let h = SegmentHeader::decode(&bytes[..SEGMENT_HEADER_LEN as usize]).expect("header");
    assert_eq!(
        (h.timeline, h.intended_len),
        (1, 0),
        "not preallocated: length unknown"
    );
}

#[test]
fn a_live_segment_cut_below_its_intended_length_is_damage_not_a_torn_tail() {
    let sim = SimStorage::new();
    let wal = open(&sim, opts()).expect("open");
    for i in 0..5u8 {
        wal.append(1, &[i; 100]).expect("append");
    }
    let path = wal.segments()[0].path.clone();
    wal.close().expect("close");
    sim.truncate(&path, 300).expect("cut");
    match open(&sim, opts()) {
        Err(Error::ShortSegment {
            file,
            expected,
            actual,
        }) => {
            assert_eq!(
                (file.as_path(), expected, actual),
                (path.as_path(), 8192, 300)
            );
        }
        other => panic!("expected a short segment, got {other:?}"),
    }
    let msg = open(&sim, opts()).expect_err("still refused").to_string();
    assert!(
        msg.contains("8192") && msg.contains("300") && msg.contains(&*path.to_string_lossy()),
        "{msg}"
    );
    // Nothing was cut: the file is as the damage left it.
    assert_eq!(sim.contents(&path).expect("kept").len(), 300);
}

#[test]
fn a_segment_of_a_newer_format_is_refused_as_such() {
    let sim = SimStorage::new();
    let path = v1_segment(&sim);
    let mut head = SegmentHeader::default().encode();
    head[8..12].copy_from_slice(&3u32.to_le_bytes());
    let crc = crc32c_of(&head[..60]);
    head[60..64].copy_from_slice(&crc.to_le_bytes());
    let f = sim.open(&path, OpenMode::ReadWrite).expect("open");
    f.write_all_at(&head, 0).expect("write");
    f.sync_data().expect("sync");
    match open(&sim, opts()) {
        Err(Error::Corrupt {
            file,
            offset: 0,
            kind,
        }) => {
            assert_eq!(file, path);
            assert_eq!(
                kind,
                CorruptKind::NewerVersion {
                    found: 3,
                    supported: 2
                }
            );
            assert!(
                kind.to_string()
                    .contains("written by a newer Duplex (format 3, this build reads up to 2)"),
                "{kind}"
            );
        }
        other => panic!("expected a newer-version refusal, got {other:?}"),
    }
}

/// CRC-32C, bitwise (the test does not depend on the crate's checksum library).
fn crc32c_of(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}
