//! Archiving closed segments, retention, and reading live + archive as one stream; the
//! sync policies on the real file system.

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use duplex_wal::sim::{CrashMode, SimStorage};
use duplex_wal::{
    archive_segment, Error, ReadOptions, StdStorage, Storage, SyncPolicy, Wal, WalOptions,
    WalReader,
};

fn archived_opts() -> WalOptions {
    WalOptions {
        archive_dir: Some("/archive".into()),
        ..small_opts()
    }
}

#[test]
fn closed_segments_reach_the_archive_and_read_back_with_live_ones() {
    let sim = SimStorage::new();
    let wal = sim_open(&sim, "/wal", archived_opts()).expect("open");
    for i in 1..=400u64 {
        wal.append(1, &payload(i, 100)).expect("append");
    }
    assert!(wal.rotate().expect("rotate").is_some());
    let n = wal.segments().len();
    wal.archive_closed().expect("archive");
    let segs = wal.segments();
    assert!(segs.len() >= 4);
    for s in &segs[..n - 1] {
        assert!(s.closed && s.archived, "{s:?}");
        let name = s.path.file_name().expect("name");
        let copy = sim
            .contents(&duplex_wal::archive_subdir("/archive".as_ref(), 1, 1).join(name))
            .expect("archived copy");
        // The archive holds header + records, not the pre-allocated tail, byte for byte.
        assert_eq!(copy.len() as u64, s.end_offset);
        let live = sim.contents(&s.path).expect("live");
        assert_eq!(copy[..], live[..copy.len()]);
    }
    // Retention: drop archived segments below LSN 300 from the live directory.
    let removed = wal.remove_segments_below(300).expect("remove");
    assert!(removed >= 2, "removed {removed}");
    assert!(wal.segments()[0].first_lsn > 1);
    for i in 401..=450u64 {
        wal.append(1, &payload(i, 100)).expect("append");
    }
    // Live alone no longer starts at 1; live + archive is the whole log.
    let err = WalReader::open(
        Arc::new(sim.clone()),
        &["/wal".into()],
        1,
        ReadOptions::default(),
    )
    .expect_err("LSN 1 is only in the archive");
    assert!(
        matches!(err, Error::LsnUnavailable { requested: 1, .. }),
        "{err}"
    );
    let all: Vec<u64> = wal
        .read_from(1)
        .expect("reader")
        .map(|r| check_payload(&r.expect("record").payload).expect("payload"))
        .collect();
    assert_eq!(all, (1..=450).collect::<Vec<_>>());
    wal.close().expect("close");
}

#[test]
fn unarchived_segments_are_never_removed_and_are_archived_after_restart() {
    let sim = SimStorage::new();
    {
        let wal = sim_open(&sim, "/wal", archived_opts()).expect("open");
        for i in 1..=300u64 {
            wal.append(1, &payload(i, 100)).expect("append");
        }
        wal.rotate().expect("rotate");
        wal.close().expect("close");
    }
    // A crash that loses the archive's (unsynced) state is not possible: copies are synced
    // before rename. Simulate an archive that was wiped instead.
    for name in sim_list(&sim, "/archive/n1-t1") {
        sim.remove_file(&PathBuf::from("/archive/n1-t1").join(name))
            .expect("wipe");
    }
    let wal = sim_open(&sim, "/wal", archived_opts()).expect("reopen");
    // The background archiver starts on them at once; whatever removal takes must already
    // be in the archive, whichever of the two runs first.
    let before = wal.segments();
    assert!(before.iter().filter(|s| s.closed).count() >= 2);
    wal.remove_segments_below(u64::MAX).expect("remove");
    let after = wal.segments();
    for s in &before {
        if !after.iter().any(|a| a.first_lsn == s.first_lsn) {
            let name = s.path.file_name().expect("name");
            assert!(
                sim.contents(&duplex_wal::archive_subdir("/archive".as_ref(), 1, 1).join(name))
                    .is_some(),
                "{s:?} was removed before it was archived"
            );
        }
    }
    wal.archive_closed().expect("archive");
    wal.remove_segments_below(u64::MAX).expect("remove");
    assert!(
        wal.segments().iter().all(|s| !s.closed),
        "{:?}",
        wal.segments()
    );
    for s in before.iter().filter(|s| s.closed) {
        let name = s.path.file_name().expect("name");
        assert!(sim
            .contents(&duplex_wal::archive_subdir("/archive".as_ref(), 1, 1).join(name))
            .is_some());
    }
    let all = wal.read_from(1).expect("reader").count();
    assert_eq!(all, 300);
}

fn sim_list(sim: &SimStorage, dir: &str) -> Vec<String> {
    sim.list(std::path::Path::new(dir)).expect("list")
}

#[test]
fn a_crash_mid_copy_never_leaves_a_partial_segment_under_its_final_name() {
    let sim = SimStorage::new();
    let wal = sim_open(&sim, "/wal", small_opts()).expect("open");
    for i in 1..=300u64 {
        wal.append(1, &payload(i, 100)).expect("append");
    }
    wal.rotate().expect("rotate");
    let seg = wal.segments()[0].clone();
    drop(wal);
    sim.create_dir_all("/archive".as_ref()).expect("dir");
    for ops in 1..12 {
        sim.power_off_after(ops);
        let res = archive_segment(&sim, &seg.path, seg.end_offset, "/archive".as_ref());
        sim.crash(CrashMode::Torn { seed: ops });
        let dest = PathBuf::from("/archive").join(seg.path.file_name().expect("name"));
        match sim.contents(&dest) {
            Some(copy) => {
                assert_eq!(copy.len() as u64, seg.end_offset, "ops={ops} res={res:?}");
                assert_eq!(
                    copy[..],
                    sim.contents(&seg.path).expect("live")[..copy.len()]
                );
            }
            None => assert!(
                res.is_err(),
                "ops={ops}: reported success but no copy survived"
            ),
        }
        if res.is_ok() {
            break;
        }
    }
    // A retry after a crash completes.
    let dest =
        archive_segment(&sim, &seg.path, seg.end_offset, "/archive".as_ref()).expect("retry");
    assert_eq!(
        sim.contents(&dest).expect("copy").len() as u64,
        seg.end_offset
    );
}

#[test]
fn real_files_all_policies_round_trip_and_interval_syncs_in_the_background() {
    for sync in [
        SyncPolicy::Always,
        SyncPolicy::Interval(Duration::from_millis(20)),
        SyncPolicy::Never,
    ] {
        let dir = duplex_testkit::temp_dir();
        let archive = duplex_testkit::temp_dir();
        let opts = WalOptions {
            sync,
            segment_size: 64 << 10,
            archive_dir: Some(archive.path().to_path_buf()),
            ..WalOptions::default()
        };
        let wal = Arc::new(Wal::open(dir.path(), opts.clone()).expect("open"));
        let handles: Vec<_> = (0..4u64)
            .map(|t| {
                let wal = wal.clone();
                std::thread::spawn(move || {
                    for i in 0..250u64 {
                        wal.append(1, &payload(t << 32 | i, 200)).expect("append");
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().expect("thread");
        }
        if sync == SyncPolicy::Never {
            // Buffered appends reach the OS by the background flush.
            let start = Instant::now();
            while wal.written_lsn() < 1000 {
                assert!(
                    start.elapsed() < Duration::from_secs(10),
                    "buffer never flushed"
                );
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        assert_eq!(wal.written_lsn(), 1000);
        if let SyncPolicy::Interval(_) = sync {
            let start = Instant::now();
            while wal.durable_lsn() < 1000 {
                assert!(
                    start.elapsed() < Duration::from_secs(10),
                    "interval sync never ran"
                );
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        wal.rotate().expect("rotate");
        wal.archive_closed().expect("archive");
        drop(wal);
        let wal = Wal::open(dir.path(), opts).expect("reopen");
        assert_eq!(wal.recovery_report().truncated, None);
        assert_eq!(wal.last_lsn(), 1000);
        let mut seen: Vec<u64> = wal
            .read_from(1)
            .expect("reader")
            .map(|r| check_payload(&r.expect("record").payload).expect("payload"))
            .collect();
        seen.sort_unstable();
        let mut want: Vec<u64> = (0..4u64)
            .flat_map(|t| (0..250).map(move |i| t << 32 | i))
            .collect();
        want.sort_unstable();
        assert_eq!(seen, want, "{sync:?}");
        // The archive alone is a readable, complete log too.
        let from_archive = common::read_all(Arc::new(StdStorage), &[archive.path().to_path_buf()])
            .expect("archive reads");
        assert_eq!(from_archive.len(), 1000);
    }
}

#[test]
fn limits_are_enforced_before_anything_is_written() {
    let sim = SimStorage::new();
    let wal = sim_open(&sim, "/wal", small_opts()).expect("open");
    let big = vec![1u8; 4097];
    assert!(matches!(
        wal.append(1, &big),
        Err(Error::RecordTooLarge {
            len: 4097,
            max: 4096
        })
    ));
    assert!(matches!(wal.append(0, b"x"), Err(Error::ReservedKind)));
    assert!(matches!(wal.append_batch(&[]), Err(Error::EmptyBatch)));
    assert_eq!(wal.last_lsn(), 0);
    assert_eq!(wal.append(1, &vec![2u8; 4096]).expect("max size fits"), 1);
    let bad = WalOptions {
        segment_size: 100,
        ..WalOptions::default()
    };
    assert!(matches!(
        sim_open(&sim, "/other", bad),
        Err(Error::Config(_))
    ));
}
