//! The archive follows the WAL: the durable part of the segment being written is copied
//! into `<name>.partial` in the archive, completed when the segment closes; with
//! `archive_lag_ms` 0 a commit waits for it; a failing archive is loud and (with a lag)
//! never stops local writes.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use duplex_wal::format::{partial_file_name, segment_file_name};
use duplex_wal::sim::{CrashMode, SimStorage};
use duplex_wal::{
    archive_subdir, Error, ManualClock, OpenMode, ReadOptions, Record, Storage, SyncPolicy, Wal,
    WalOptions, WalReader,
};

const ROOT: &str = "/archive";

fn lineage_dir(node: u64) -> PathBuf {
    archive_subdir(Path::new(ROOT), node, 1)
}

fn opts(lag_ms: u64) -> WalOptions {
    WalOptions {
        segment_size: 8192,
        max_record_size: 1024,
        sync: SyncPolicy::Always,
        archive_dir: Some(ROOT.into()),
        archive_lag_ms: lag_ms,
        background_threads: false,
        ..WalOptions::default()
    }
}

fn open(sim: &SimStorage, dir: &str, opts: WalOptions) -> Wal {
    Wal::open_with(Arc::new(sim.clone()), dir, opts).expect("open")
}

/// Every record the archive root holds for `node`, read through a reader of the archive
/// alone.
fn archived(sim: &SimStorage, node: u64) -> Vec<Record> {
    WalReader::open(
        Arc::new(sim.clone()),
        &[PathBuf::from(ROOT)],
        0,
        ReadOptions {
            node_id: Some(node),
            ..ReadOptions::default()
        },
    )
    .expect("archive reader")
    .collect::<duplex_wal::Result<_>>()
    .expect("read the archive")
}

fn payloads(recs: &[Record]) -> Vec<Vec<u8>> {
    recs.iter().map(|r| r.payload.clone()).collect()
}

fn body(i: u64) -> Vec<u8> {
    format!("record {i:05}").repeat(8).into_bytes()
}

#[test]
fn a_durable_record_is_in_the_partial_after_a_step_and_reads_back_from_the_archive_alone() {
    let sim = SimStorage::new();
    let wal = open(&sim, "/wal", opts(1000));
    let lsn = wal.append(1, b"first").expect("append");
    let partial = lineage_dir(1).join(partial_file_name(1));
    assert!(!sim.exists(&partial), "copied with no archive step");
    assert_eq!(wal.archive_status().archived_lsn, 0);

    assert_eq!(wal.archive_pending().expect("step"), 0, "no closed segment");
    assert!(sim.exists(&partial));
    let recs = archived(&sim, 1);
    assert_eq!(payloads(&recs), [b"first".to_vec()]);
    let st = wal.archive_status();
    assert_eq!((st.archived_lsn, st.durable_lsn, st.lag_ms), (lsn, lsn, 0));
    assert_eq!(st.last_error, None);

    // The partial grows by appends at each step.
    wal.append(1, b"second").expect("append");
    assert_eq!(archived(&sim, 1).len(), 1);
    wal.archive_pending().expect("step");
    assert_eq!(
        payloads(&archived(&sim, 1)),
        [b"first".to_vec(), b"second".to_vec()]
    );
    // A clean close leaves the archive holding everything, the last segment as a partial.
    wal.append(1, b"third").expect("append");
    wal.close().expect("close");
    assert_eq!(archived(&sim, 1).len(), 3);
    assert!(sim.exists(&partial));
}

#[test]
fn rotation_completes_the_partial_under_the_segment_name() {
    let sim = SimStorage::new();
    let wal = open(&sim, "/wal", opts(1000));
    for i in 1..=10 {
        wal.append(1, &body(i)).expect("append");
    }
    wal.archive_pending().expect("step");
    let dir = lineage_dir(1);
    assert!(sim.exists(&dir.join(partial_file_name(1))));
    for i in 11..=20 {
        wal.append(1, &body(i)).expect("append");
    }
    wal.rotate().expect("rotate");
    for i in 21..=25 {
        wal.append(1, &body(i)).expect("append");
    }
    assert_eq!(wal.archive_pending().expect("step"), 1);
    let first = wal.segments()[0].clone();
    let complete = dir.join(segment_file_name(1));
    assert!(!sim.exists(&dir.join(partial_file_name(1))), "renamed");
    let copy = sim.contents(&complete).expect("complete copy");
    assert_eq!(copy.len() as u64, first.end_offset);
    assert_eq!(
        copy[..],
        sim.contents(&first.path).expect("live")[..copy.len()]
    );
    // The next segment is followed in its turn.
    assert!(sim.exists(&dir.join(partial_file_name(21))));
    let recs = archived(&sim, 1);
    assert_eq!(payloads(&recs), (1..=25).map(body).collect::<Vec<_>>());
    assert!(wal.segments()[0].archived);
}

#[test]
fn with_lag_zero_every_acknowledged_append_is_already_in_the_archive() {
    let sim = SimStorage::new();
    let wal = open(&sim, "/wal", opts(0));
    for i in 1..=80u64 {
        assert_eq!(wal.append(1, &body(i)).expect("append"), i);
        // No archive step: the commit itself copied its group.
        let recs = archived(&sim, 1);
        assert_eq!(recs.len() as u64, i, "after append {i}");
        assert_eq!(recs.last().map(|r| r.payload.clone()), Some(body(i)));
        assert_eq!(wal.archive_status().archived_lsn, i);
    }
    assert!(wal.segments().len() > 1, "the test crosses a rotation");
    wal.close().expect("close");
}

#[test]
fn a_crash_of_the_archiver_mid_copy_is_resumed_without_loss_or_duplication() {
    for ops in 1..16u64 {
        let sim = SimStorage::new();
        let wal = open(&sim, "/wal", opts(1000));
        for i in 1..=5 {
            wal.append(1, &body(i)).expect("append");
        }
        wal.archive_pending().expect("step");
        for i in 6..=12 {
            wal.append(1, &body(i)).expect("append");
        }
        // Power is lost somewhere inside the next copy.
        sim.power_off_after(ops);
        let res = wal.archive_pending();
        sim.crash(CrashMode::Torn { seed: ops });
        drop(wal);
        let wal = open(&sim, "/wal", opts(1000));
        assert_eq!(
            wal.last_lsn(),
            12,
            "ops={ops}: acknowledged records survive"
        );
        let before = archived(&sim, 1);
        assert!(before.len() >= 5, "ops={ops} res={res:?}: synced copy lost");
        wal.append(1, &body(13)).expect("append");
        wal.archive_pending().expect("resumed step");
        let recs = archived(&sim, 1);
        assert_eq!(
            payloads(&recs),
            (1..=13).map(body).collect::<Vec<_>>(),
            "ops={ops}"
        );
        assert_eq!(wal.archive_status().archived_lsn, 13);
        wal.close().expect("close");
    }
}

#[test]
fn a_partial_that_differs_from_the_log_is_refused_never_overwritten() {
    let sim = SimStorage::new();
    let wal = open(&sim, "/wal", opts(1000));
    for i in 1..=5 {
        wal.append(1, &body(i)).expect("append");
    }
    wal.archive_pending().expect("step");
    wal.close().expect("close");
    let partial = lineage_dir(1).join(partial_file_name(1));
    sim.corrupt(&partial, 100, 0x40).expect("corrupt");
    let damaged = sim.contents(&partial).expect("partial");

    let wal = open(&sim, "/wal", opts(1000));
    wal.append(1, &body(6)).expect("local writes go on");
    let err = wal.archive_pending().expect_err("differing partial");
    match &err {
        Error::ArchiveConflict {
            archived,
            source_file,
            ..
        } => {
            assert_eq!(archived, &partial);
            assert_eq!(source_file, &wal.segments()[0].path);
        }
        other => panic!("expected an archive conflict, got {other:?}"),
    }
    assert!(err.to_string().contains("differ"), "{err}");
    assert_eq!(sim.contents(&partial), Some(damaged), "left as it was");
    let st = wal.archive_status();
    assert!(
        st.last_error.is_some() && st.failing_since_ms.is_some(),
        "{st:?}"
    );
    drop(wal);

    // A partial longer than the durable log: another log's, never this one's.
    let sim = SimStorage::new();
    let wal = open(&sim, "/wal", opts(1000));
    wal.append(1, &body(1)).expect("append");
    wal.archive_pending().expect("step");
    wal.close().expect("close");
    let f = sim.open(&partial, OpenMode::ReadWrite).expect("open");
    let len = f.len().expect("len");
    f.write_all_at(&[7u8; 64], len).expect("grow");
    f.sync_data().expect("sync");
    let wal = open(&sim, "/wal", opts(1000));
    let err = wal.archive_pending().expect_err("longer partial");
    assert!(matches!(err, Error::ArchiveConflict { .. }), "{err}");
}

/// Removes the log's (empty) lineage directory, so that nothing can be created in it.
fn break_archive(sim: &SimStorage) {
    sim.remove_dir(&lineage_dir(1))
        .expect("remove the lineage dir");
}

#[test]
fn a_failing_archive_with_a_lag_is_loud_but_never_stops_local_writes() {
    let sim = SimStorage::new();
    let clock = Arc::new(ManualClock::new(1_000_000));
    let o = WalOptions {
        clock: clock.clone(),
        ..opts(1000)
    };
    let wal = open(&sim, "/wal", o);
    break_archive(&sim);
    for i in 1..=5 {
        wal.append(1, &body(i)).expect("local writes go on");
    }
    clock.advance(250);
    let err = wal.archive_pending().expect_err("the archive fails");
    assert!(matches!(err, Error::Io { .. }), "{err}");
    clock.advance(3_000);
    wal.append(1, &body(6)).expect("local writes go on");
    assert!(wal.archive_pending().is_err(), "retried, still failing");
    let st = wal.archive_status();
    assert_eq!((st.archived_lsn, st.durable_lsn), (0, 6));
    assert_eq!(st.failing_since_ms, Some(1_000_250));
    assert!(st.lag_ms >= 3_000, "{st:?}");
    assert!(
        st.last_error
            .as_deref()
            .is_some_and(|e| e.contains("n1-t1")),
        "{st:?}"
    );
    assert!(!wal.is_poisoned());

    // Once the directory is back, the next step catches up and the alarm clears.
    sim.create_dir_all(&lineage_dir(1)).expect("repair");
    wal.archive_pending().expect("recovered");
    let st = wal.archive_status();
    assert_eq!(
        (st.archived_lsn, st.lag_ms, st.last_error.clone()),
        (6, 0, None)
    );
    assert_eq!(st.failing_since_ms, None);
    assert_eq!(archived(&sim, 1).len(), 6);
}

#[test]
fn a_failing_archive_with_lag_zero_fails_the_commit_but_not_the_log() {
    let sim = SimStorage::new();
    let wal = open(&sim, "/wal", opts(0));
    break_archive(&sim);
    let err = wal
        .append(1, &body(1))
        .expect_err("the synchronous archive fails");
    assert!(matches!(err, Error::ArchiveFailed { .. }), "{err}");
    assert!(
        err.to_string().contains("durable in the local log"),
        "{err}"
    );
    assert!(!wal.is_poisoned());
    assert_eq!(wal.durable_lsn(), 1, "the record is durable locally");
    assert!(wal.archive_status().last_error.is_some());
    assert!(wal.append(1, &body(2)).is_err(), "still failing");

    sim.create_dir_all(&lineage_dir(1)).expect("repair");
    assert_eq!(wal.append(1, &body(3)).expect("append after repair"), 3);
    assert_eq!(
        payloads(&archived(&sim, 1)),
        (1..=3).map(body).collect::<Vec<_>>(),
        "the records of the failed commits reach the archive with the next one"
    );
    assert_eq!(wal.archive_status().last_error, None);
    wal.close().expect("close");
}

#[test]
fn two_nodes_share_one_archive_root_each_in_its_own_subdirectory() {
    let sim = SimStorage::new();
    let a = open(&sim, "/wal-a", opts(1000));
    let b = open(
        &sim,
        "/wal-b",
        WalOptions {
            node_id: 2,
            ..opts(1000)
        },
    );
    for i in 1..=30 {
        a.append(1, format!("a{i}").as_bytes()).expect("append a");
        b.append(1, format!("b{i}").as_bytes()).expect("append b");
        if i % 10 == 0 {
            a.rotate().expect("rotate a");
        }
    }
    a.close().expect("close a");
    b.close().expect("close b");
    let mut names = sim.list(Path::new(ROOT)).expect("list");
    names.sort();
    assert_eq!(names, ["n1-t1", "n2-t1"]);
    let recs_a = archived(&sim, 1);
    let recs_b = archived(&sim, 2);
    assert_eq!(recs_a.len(), 30);
    assert_eq!(recs_b.len(), 30);
    assert!(recs_a.iter().all(|r| r.payload.starts_with(b"a")));
    assert!(recs_b.iter().all(|r| r.payload.starts_with(b"b")));
    // Without a node, a root of two lineages is refused rather than guessed.
    let err = WalReader::open(
        Arc::new(sim.clone()),
        &[PathBuf::from(ROOT)],
        0,
        ReadOptions::default(),
    )
    .expect_err("ambiguous root");
    assert!(matches!(err, Error::ArchiveLineage { .. }), "{err}");
}

#[test]
fn with_background_threads_the_archive_follows_within_the_lag() {
    let t = tempfile::tempdir().expect("tempdir");
    let root = t.path().join("archive");
    let wal = Wal::open(
        t.path().join("wal"),
        WalOptions {
            archive_dir: Some(root.clone()),
            archive_lag_ms: 20,
            ..WalOptions::default()
        },
    )
    .expect("open");
    let lsn = wal.append(1, b"followed").expect("append");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while wal.archive_status().archived_lsn < lsn {
        assert!(
            std::time::Instant::now() < deadline,
            "{:?}",
            wal.archive_status()
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let recs: Vec<Record> = WalReader::open_dir(Arc::new(duplex_wal::StdStorage), &root)
        .expect("reader")
        .collect::<duplex_wal::Result<_>>()
        .expect("read");
    assert_eq!(payloads(&recs), [b"followed".to_vec()]);
    wal.close().expect("close");
}

#[test]
fn when_both_a_segment_and_its_partial_exist_the_complete_one_wins() {
    let sim = SimStorage::new();
    let wal = open(&sim, "/wal", opts(1000));
    for i in 1..=3 {
        wal.append(1, &body(i)).expect("append");
    }
    wal.archive_pending().expect("step");
    let dir = lineage_dir(1);
    let partial = dir.join(partial_file_name(1));
    let early = sim.contents(&partial).expect("partial");
    for i in 4..=6 {
        wal.append(1, &body(i)).expect("append");
    }
    wal.rotate().expect("rotate");
    wal.archive_pending().expect("step");
    // A stale partial beside the complete copy (an interrupted cleanup, a copy put back).
    let f = sim.open(&partial, OpenMode::CreateNew).expect("create");
    f.write_all_at(&early, 0).expect("write");
    f.sync_data().expect("sync");
    assert_eq!(
        payloads(&archived(&sim, 1)),
        (1..=6).map(body).collect::<Vec<_>>(),
        "the reader takes the complete segment"
    );
    // Archiving the segment again checks the partial is a prefix of it and removes it.
    let seg = wal.segments()[0].clone();
    duplex_wal::archive_segment(&sim, &seg.path, seg.end_offset, &dir).expect("again");
    assert!(!sim.exists(&partial));
    wal.close().expect("close");
}
