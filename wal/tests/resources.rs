//! Running out of disk space or file descriptors while the log needs a new segment: the
//! write is refused with [`Error::Resource`] (not a disk failure), nothing of it is logged,
//! the log is not poisoned and reads go on; once the resource is back, writes resume by
//! themselves, and after close (or a crash) and reopen every acknowledged record is there
//! with consecutive LSNs and nothing refused is.
//!
//! Every fault point of segment creation (create, preallocate, header write, fsync, rename,
//! directory fsync) is tried with `ENOSPC` and `EMFILE`, in process, on the simulated
//! storage. A failed fsync of the log and a failed write of record bytes still poison it,
//! whatever the errno.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use common::*;
use duplex_wal::format::record_size;
use duplex_wal::sim::{CrashMode, Exhaustion, SimOp, SimStorage};
use duplex_wal::{Error, ResourceKind, SyncPolicy, Wal, WalOptions};
use parking_lot::Mutex;

const DIR: &str = "/wal";
const BODY: usize = 500;

fn opts() -> WalOptions {
    WalOptions {
        segment_size: 8192,
        max_record_size: 4096,
        background_threads: false,
        ..WalOptions::default()
    }
}

/// Appends records until the next one would not fit in the segment being written; returns
/// the (LSN, tag) of each. `next_tag` numbers the payloads.
fn fill_segment(wal: &Wal, next_tag: &mut u64) -> Vec<(u64, u64)> {
    let size = record_size(BODY + 8) as u64;
    let mut tail = wal.segments().last().expect("a segment").end_offset;
    let mut acked = Vec::new();
    // The segment list's end offset of the segment being written is its state at open or
    // creation; what this helper appended itself is counted here.
    while tail + size <= wal.options().segment_size {
        let lsn = wal.append(1, &payload(*next_tag, BODY)).expect("append");
        acked.push((lsn, *next_tag));
        *next_tag += 1;
        tail += size;
    }
    acked
}

/// Checks that the log in `sim` holds exactly `acked` (LSN -> tag), from LSN 1, in order.
fn assert_log_is(sim: &SimStorage, acked: &BTreeMap<u64, u64>, what: &str) {
    let recs = read_dir(sim, DIR);
    let got: BTreeMap<u64, u64> = recs
        .iter()
        .enumerate()
        .map(|(i, r)| {
            assert_eq!(r.lsn, i as u64 + 1, "{what}: LSNs not consecutive");
            let tag = check_payload(&r.payload)
                .unwrap_or_else(|| panic!("{what}: damaged payload at LSN {}", r.lsn));
            (r.lsn, tag)
        })
        .collect();
    assert_eq!(&got, acked, "{what}: the log is not what was acknowledged");
}

fn no_unfinished_segment(sim: &SimStorage, what: &str) {
    let names = sim.list_names(Path::new(DIR));
    assert!(
        names.iter().all(|n| n.ends_with(".wal")),
        "{what}: stray files in the log directory: {names:?}"
    );
}

/// The step of segment creation a fault of kind `op` stops, as the error names it.
fn op_name(op: SimOp) -> &'static str {
    match op {
        SimOp::Create => "create segment",
        SimOp::Preallocate => "preallocate",
        SimOp::Write => "write segment header",
        SimOp::SyncFile => "fsync",
        SimOp::Rename => "rename segment",
        SimOp::SyncDir => "fsync directory",
        other => panic!("not a creation step: {other:?}"),
    }
}

fn expected_kind(e: Exhaustion) -> ResourceKind {
    match e {
        Exhaustion::NoDescriptors | Exhaustion::SystemDescriptors => ResourceKind::OutOfDescriptors,
        _ => ResourceKind::OutOfSpace,
    }
}

/// One fault point: fill a segment, make `op` fail with `error` from now on, check the
/// refusal, give the resource back, check that writes resume, then close/crash and reopen.
fn refusal_then_resume(op: SimOp, error: Exhaustion, crash: bool) {
    let what = format!("{op:?} {error:?} crash={crash}");
    let sim = SimStorage::new();
    let wal = sim_open(&sim, DIR, opts()).expect("open");
    let mut tag = 0u64;
    let acked: BTreeMap<u64, u64> = fill_segment(&wal, &mut tag).into_iter().collect();
    let last = wal.last_lsn();
    let segments = wal.segments().len();

    sim.fail_op(op, error, 1);
    for attempt in 0..3 {
        let err = wal
            .append(1, &payload(1_000_000 + attempt, BODY))
            .expect_err("the segment cannot be created");
        match &err {
            Error::Resource { kind, op: at, .. } => {
                assert_eq!(*kind, expected_kind(error), "{what}");
                assert_eq!(*at, op_name(op), "{what}");
            }
            other => panic!("{what}: expected a resource refusal, got {other}"),
        }
        assert!(
            err.is_resource() && !err.is_fatal() && !err.outcome_unknown(),
            "{what}"
        );
        let msg = err.to_string();
        assert!(msg.contains("resume by themselves"), "{what}: {msg}");
        assert!(
            msg.contains("nothing of this write was logged"),
            "{what}: {msg}"
        );
    }
    assert!(!wal.is_poisoned(), "{what}");
    assert_eq!(wal.last_lsn(), last, "{what}: a refused write used an LSN");
    assert_eq!(wal.durable_lsn(), last, "{what}");
    assert_eq!(wal.segments().len(), segments, "{what}");
    let status = wal.space_status();
    assert!(status.refused.is_some(), "{what}: {status:?}");
    no_unfinished_segment(&sim, &what);
    // Reads go on.
    let read: Vec<_> = wal
        .read_from(1)
        .expect("reader")
        .collect::<duplex_wal::Result<_>>()
        .expect("read");
    assert_eq!(read.len() as u64, last, "{what}");

    if crash {
        // Stopped while refusing: everything acknowledged is there, nothing refused.
        drop(wal);
        sim.crash(CrashMode::LoseUnsynced);
        sim.give_back();
        assert_log_is(&sim, &acked, &format!("{what}, crashed while refusing"));
        let wal = sim_open(&sim, DIR, opts()).expect("reopen");
        assert_eq!(wal.last_lsn(), last, "{what}");
        resumes(&sim, wal, acked, tag, &what, crash);
    } else {
        sim.give_back();
        resumes(&sim, wal, acked, tag, &what, crash);
    }
}

/// After the resource is back: the next append creates the segment by itself and writes
/// go on; then close (or crash) and reopen: every acknowledged record is there.
fn resumes(
    sim: &SimStorage,
    wal: Wal,
    mut acked: BTreeMap<u64, u64>,
    mut tag: u64,
    what: &str,
    crash: bool,
) {
    let before = wal.segments().len();
    for _ in 0..30 {
        let lsn = wal.append(1, &payload(tag, BODY)).expect("writes resume");
        assert_eq!(lsn, acked.len() as u64 + 1, "{what}: LSNs not consecutive");
        acked.insert(lsn, tag);
        tag += 1;
    }
    assert!(wal.segments().len() > before, "{what}: no new segment");
    assert_eq!(wal.space_status().refused, None, "{what}");
    if crash {
        drop(wal);
        sim.crash(CrashMode::LoseUnsynced);
    } else {
        wal.close().expect("close");
    }
    let wal = sim_open(sim, DIR, opts()).expect("reopen");
    assert_eq!(wal.last_lsn(), acked.len() as u64, "{what}");
    drop(wal);
    assert_log_is(sim, &acked, what);
    no_unfinished_segment(sim, what);
}

const FAULT_POINTS: [SimOp; 6] = [
    SimOp::Create,
    SimOp::Preallocate,
    SimOp::Write,
    SimOp::SyncFile,
    SimOp::Rename,
    SimOp::SyncDir,
];

#[test]
fn running_out_at_every_step_of_segment_creation_refuses_and_then_resumes() {
    for op in FAULT_POINTS {
        for error in [Exhaustion::NoSpace, Exhaustion::NoDescriptors] {
            refusal_then_resume(op, error, false);
        }
    }
}

#[test]
fn a_crash_while_refusing_loses_nothing_acknowledged() {
    for op in FAULT_POINTS {
        for error in [Exhaustion::NoSpace, Exhaustion::NoDescriptors] {
            refusal_then_resume(op, error, true);
        }
    }
}

#[test]
fn quota_and_system_wide_descriptor_limits_are_refusals_too() {
    refusal_then_resume(SimOp::Create, Exhaustion::Quota, false);
    refusal_then_resume(SimOp::Create, Exhaustion::SystemDescriptors, false);
}

#[test]
fn under_never_the_records_buffered_before_a_refused_rotation_are_kept() {
    let sim = SimStorage::new();
    let o = WalOptions {
        sync: SyncPolicy::Never,
        ..opts()
    };
    let wal = sim_open(&sim, DIR, o.clone()).expect("open");
    let mut tag = 0;
    // Acknowledged while only in memory: the refused rotation must not drop them.
    let mut acked: BTreeMap<u64, u64> = fill_segment(&wal, &mut tag).into_iter().collect();
    assert!(wal.written_lsn() < wal.last_lsn(), "still buffered");
    sim.fail_op(SimOp::Create, Exhaustion::NoSpace, 1);
    let err = wal.append(1, &payload(99, BODY)).expect_err("refused");
    assert!(err.is_resource(), "{err}");
    assert_eq!(
        wal.durable_lsn(),
        wal.last_lsn(),
        "made durable before the rotation"
    );
    sim.give_back();
    let lsn = wal.append(1, &payload(tag, BODY)).expect("resumes");
    acked.insert(lsn, tag);
    wal.close().expect("close");
    assert_log_is(&sim, &acked, "never");
}

#[test]
fn an_explicit_rotation_is_refused_the_same_way() {
    let sim = SimStorage::new();
    let wal = sim_open(&sim, DIR, opts()).expect("open");
    wal.append(1, &payload(0, BODY)).expect("append");
    sim.fail_op(SimOp::Create, Exhaustion::NoSpace, 1);
    let err = wal.rotate().expect_err("refused");
    assert!(err.is_resource(), "{err}");
    assert!(!wal.is_poisoned());
    // The rotation is still due: the next append retries it first, and is refused too.
    let err = wal.append(1, &payload(1, BODY)).expect_err("refused");
    assert!(err.is_resource(), "{err}");
    sim.give_back();
    assert_eq!(wal.append(1, &payload(1, BODY)).expect("resumes"), 2);
    assert_eq!(wal.segments().len(), 2, "the due rotation happened");
    wal.close().expect("close");
    let acked = BTreeMap::from([(1, 0), (2, 1)]);
    assert_log_is(&sim, &acked, "explicit rotation");
}

#[test]
fn a_real_descriptor_limit_refuses_and_resumes() {
    let sim = SimStorage::new();
    let wal = sim_open(&sim, DIR, opts()).expect("open");
    let mut tag = 0;
    let mut acked: BTreeMap<u64, u64> = fill_segment(&wal, &mut tag).into_iter().collect();
    // Every descriptor is taken (by, say, client connections).
    sim.set_max_open_files(Some(sim.open_files()));
    let err = wal
        .append(1, &payload(99, BODY))
        .expect_err("no descriptor");
    assert!(
        matches!(
            &err,
            Error::Resource {
                kind: ResourceKind::OutOfDescriptors,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("ulimit"), "{err}");
    sim.set_max_open_files(None);
    let lsn = wal.append(1, &payload(tag, BODY)).expect("resumes");
    acked.insert(lsn, tag);
    wal.close().expect("close");
    assert_log_is(&sim, &acked, "descriptor limit");
}

#[test]
fn a_preallocation_cut_short_by_a_full_disk_leaves_no_segment_behind() {
    let sim = SimStorage::new();
    let o = WalOptions {
        reserve_bytes: Some(0),
        ..opts()
    };
    let wal = sim_open(&sim, DIR, o.clone()).expect("open");
    let mut tag = 0;
    let mut acked: BTreeMap<u64, u64> = fill_segment(&wal, &mut tag).into_iter().collect();
    // Room for half a segment: fallocate extends the file as far as it can, then fails.
    sim.set_free_space(Some(o.segment_size / 2));
    let err = wal.append(1, &payload(99, BODY)).expect_err("disk full");
    assert!(
        matches!(
            &err,
            Error::Resource {
                op: "preallocate",
                kind: ResourceKind::OutOfSpace,
                ..
            }
        ),
        "{err}"
    );
    no_unfinished_segment(&sim, "partial preallocation");
    assert_eq!(wal.segments().len(), 1);
    // Power lost now: the half-allocated file is not there to pass for a short segment.
    drop(wal);
    sim.crash(CrashMode::LoseUnsynced);
    let wal = sim_open(&sim, DIR, o.clone()).expect("reopen: no ShortSegment");
    sim.set_free_space(None);
    let lsn = wal.append(1, &payload(tag, BODY)).expect("resumes");
    acked.insert(lsn, tag);
    wal.close().expect("close");
    sim_open(&sim, DIR, o)
        .expect("reopen")
        .close()
        .expect("close");
    assert_log_is(&sim, &acked, "partial preallocation");
}

#[test]
fn free_space_below_the_reserve_refuses_rotation_before_the_disk_is_full() {
    let sim = SimStorage::new();
    let o = WalOptions {
        reserve_bytes: Some(16384),
        ..opts()
    };
    let wal = sim_open(&sim, DIR, o.clone()).expect("open");
    let mut tag = 0;
    let mut acked: BTreeMap<u64, u64> = fill_segment(&wal, &mut tag).into_iter().collect();
    let needed = o.segment_size + 16384;
    sim.set_free_space(Some(needed - 1));
    let status = wal.space_status();
    assert_eq!(status.available_bytes, Some(needed - 1));
    assert_eq!((status.reserve_bytes, status.needed_bytes), (16384, needed));
    let ops_before = sim.op_count();
    let err = wal
        .append(1, &payload(99, BODY))
        .expect_err("below the reserve");
    match &err {
        Error::Resource {
            kind:
                ResourceKind::BelowReserve {
                    available,
                    needed: n,
                },
            source: None,
            ..
        } => assert_eq!((*available, *n), (needed - 1, needed)),
        other => panic!("expected a reserve refusal, got {other}"),
    }
    assert!(!err.is_fatal() && !err.outcome_unknown());
    // Refused before touching the disk: the space is still there for others.
    assert_eq!(wal.space_status().available_bytes, Some(needed - 1));
    assert!(
        sim.op_count() - ops_before <= 3,
        "the refusal wrote nothing"
    );
    no_unfinished_segment(&sim, "reserve");
    let status = wal.space_status();
    assert!(
        status
            .refused
            .as_deref()
            .is_some_and(|r| r.contains("reserve")),
        "{status:?}"
    );
    assert!(status.refused_since_ms.is_some());

    sim.set_free_space(Some(needed));
    let lsn = wal
        .append(1, &payload(tag, BODY))
        .expect("enough space again");
    acked.insert(lsn, tag);
    assert_eq!(wal.space_status().refused, None);
    wal.close().expect("close");
    assert_log_is(&sim, &acked, "reserve");
}

#[test]
fn the_default_reserve_is_one_segment() {
    let o = opts();
    assert_eq!(o.reserve_bytes, None);
    assert_eq!(o.effective_reserve(), o.segment_size);
    let sim = SimStorage::new();
    let wal = sim_open(&sim, DIR, o.clone()).expect("open");
    let status = wal.space_status();
    assert_eq!(status.available_bytes, None, "the simulation is unlimited");
    assert_eq!(status.reserve_bytes, o.segment_size);
    assert_eq!(status.needed_bytes, 2 * o.segment_size);
}

#[test]
fn the_real_file_system_reports_its_free_space() {
    let dir = tempfile::tempdir().expect("tempdir");
    let o = WalOptions {
        reserve_bytes: Some(0),
        ..WalOptions::default()
    };
    let wal = Wal::open(dir.path().join("wal"), o).expect("open");
    let status = wal.space_status();
    assert!(status.available_bytes.is_some_and(|b| b > 0), "{status:?}");
    assert_eq!(status.needed_bytes, 0, "reserve off");
}

#[test]
fn an_unfinished_segment_left_by_a_crash_is_removed_at_open() {
    let sim = SimStorage::new();
    let wal = sim_open(&sim, DIR, opts()).expect("open");
    wal.append(1, &payload(0, BODY)).expect("append");
    wal.close().expect("close");
    // A crash in the middle of creating the next segment left its temporary file, named.
    let tmp = Path::new(DIR).join("00000000000000000002.wal.tmp");
    {
        use duplex_wal::{OpenMode, Storage};
        let f = sim.open(&tmp, OpenMode::CreateNew).expect("create");
        f.set_len(100).expect("len");
        f.sync_data().expect("sync");
        sim.sync_dir(Path::new(DIR)).expect("sync dir");
    }
    let wal = sim_open(&sim, DIR, opts()).expect("open");
    assert_eq!(wal.recovery_report().removed_segments, vec![tmp.clone()]);
    assert!(!duplex_wal::Storage::exists(&sim, &tmp));
    assert_eq!(wal.append(1, &payload(1, BODY)).expect("append"), 2);
}

#[test]
fn a_failed_fsync_of_the_log_still_poisons_even_when_the_disk_is_full() {
    // Interval: the records are written but not fsynced when the rotation needs them
    // durable; that fsync fails with ENOSPC. The page cache may have dropped them: fail-stop.
    let sim = SimStorage::new();
    let o = WalOptions {
        sync: SyncPolicy::Interval(std::time::Duration::from_secs(3600)),
        ..opts()
    };
    let wal = sim_open(&sim, DIR, o).expect("open");
    let mut tag = 0;
    fill_segment(&wal, &mut tag);
    sim.fail_op(SimOp::SyncFile, Exhaustion::NoSpace, 1);
    let err = wal.append(1, &payload(99, BODY)).expect_err("fsync fails");
    assert!(matches!(err, Error::Poisoned { op: "fsync", .. }), "{err}");
    assert!(err.is_fatal() && err.outcome_unknown());
    assert!(wal.is_poisoned());
    sim.give_back();
    assert!(wal.append(1, b"later").is_err(), "fail-stop stays");
}

#[test]
fn a_failed_write_of_record_bytes_still_poisons_even_when_the_disk_is_full() {
    // Without preallocation a record write allocates blocks and may fail half done.
    let sim = SimStorage::new();
    let o = WalOptions {
        preallocate: false,
        ..opts()
    };
    let wal = sim_open(&sim, DIR, o).expect("open");
    wal.append(1, b"one").expect("append");
    sim.fail_op(SimOp::Write, Exhaustion::NoSpace, 1);
    let err = wal.append(1, b"two").expect_err("write fails");
    assert!(matches!(err, Error::Poisoned { op: "write", .. }), "{err}");
    assert!(err.outcome_unknown());
    sim.give_back();
    assert!(wal.append(1, b"three").is_err(), "fail-stop stays");
}

#[test]
fn concurrent_writers_refused_mid_group_commit_keep_lsns_consecutive() {
    let sim = SimStorage::new();
    let wal = Arc::new(sim_open(&sim, DIR, opts()).expect("open"));
    // lsn -> tag of every acknowledged record; tags of refused ones.
    let acked: Arc<Mutex<BTreeMap<u64, u64>>> = Arc::default();
    let refused: Arc<Mutex<Vec<u64>>> = Arc::default();
    let run = |phase: u64| {
        let handles: Vec<_> = (0..4u64)
            .map(|t| {
                let (wal, acked, refused) = (wal.clone(), acked.clone(), refused.clone());
                std::thread::spawn(move || {
                    for i in 0..40u64 {
                        let tag = (phase << 32) | (t << 16) | i;
                        match wal.append(1, &payload(tag, BODY)) {
                            Ok(lsn) => assert!(acked.lock().insert(lsn, tag).is_none()),
                            Err(e) if e.is_resource() => refused.lock().push(tag),
                            Err(e) => panic!("unexpected {e}"),
                        }
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().expect("writer");
        }
    };
    run(0);
    // The second creation from now on fails: some writers are refused, none poisoned.
    sim.fail_op(SimOp::Create, Exhaustion::NoSpace, 2);
    run(1);
    assert!(!refused.lock().is_empty(), "the fault was never hit");
    assert!(!wal.is_poisoned());
    sim.give_back();
    run(2);
    assert_eq!(wal.last_lsn(), acked.lock().len() as u64);
    let wal = Arc::try_unwrap(wal).expect("sole owner");
    wal.close().expect("close");
    let acked = acked.lock().clone();
    assert_log_is(&sim, &acked, "concurrent writers");
    let logged: std::collections::BTreeSet<u64> = acked.values().copied().collect();
    for t in refused.lock().iter() {
        assert!(!logged.contains(t), "refused record {t:#x} is in the log");
    }
}

#[test]
fn a_full_archive_disk_never_poisons_the_local_log() {
    let sim = SimStorage::new();
    let archive = Path::new("/archive");
    let o = WalOptions {
        archive_dir: Some(archive.to_path_buf()),
        archive_lag_ms: 1000,
        ..opts()
    };
    let wal = sim_open(&sim, DIR, o).expect("open");
    // The archive's disk is full: copies fail with ENOSPC, the local disk is fine.
    sim.fail_op_under(archive, SimOp::Create, Exhaustion::NoSpace, 1);
    sim.fail_op_under(archive, SimOp::Write, Exhaustion::NoSpace, 1);
    let mut tag = 0;
    let mut acked: BTreeMap<u64, u64> = BTreeMap::new();
    for _ in 0..3 {
        acked.extend(fill_segment(&wal, &mut tag));
        wal.rotate().expect("local rotation goes on");
        assert!(wal.archive_pending().is_err(), "the archive is full");
    }
    let status = wal.archive_status();
    assert!(status.last_error.is_some(), "{status:?}");
    assert!(status.durable_lsn > status.archived_lsn);
    assert!(!wal.is_poisoned());
    assert_eq!(
        wal.space_status().refused,
        None,
        "the local log refuses nothing"
    );
    sim.give_back();
    assert!(wal.archive_pending().expect("catches up") >= 3);
    assert_eq!(wal.archive_status().last_error, None);
    wal.close().expect("close");
    assert_log_is(&sim, &acked, "archive full");
}

#[test]
fn the_simulated_exhaustions_behave_as_the_kernel_reports_them() {
    use duplex_wal::{OpenMode, Storage};
    let sim = SimStorage::new();
    sim.create_dir_all(Path::new("/d")).expect("dir");
    let errno = |r: std::io::Result<()>| r.expect_err("fails").raw_os_error();

    // Only the second create fails, once.
    sim.fail_op_once(SimOp::Create, Exhaustion::NoSpace, 2);
    let a = sim
        .open(Path::new("/d/a"), OpenMode::CreateNew)
        .expect("first");
    let second = sim.open(Path::new("/d/b"), OpenMode::CreateNew).map(|_| ());
    assert_eq!(errno(second), Some(libc::ENOSPC));
    let b = sim
        .open(Path::new("/d/b"), OpenMode::CreateNew)
        .expect("third");

    // A capacity: growth past it fails, overwrites do not; removal gives space back.
    a.write_all_at(&[1; 100], 0).expect("write");
    sim.set_free_space(Some(50));
    assert_eq!(sim.available_space(Path::new("/d")).expect("df"), Some(50));
    assert_eq!(errno(b.write_all_at(&[1; 51], 0)), Some(libc::ENOSPC));
    a.write_all_at(&[2; 100], 0)
        .expect("an overwrite needs no space");
    assert_eq!(errno(b.preallocate(80)), Some(libc::ENOSPC));
    assert_eq!(b.len().expect("len"), 50, "fallocate kept what it could");
    drop(a);
    sim.remove_file(Path::new("/d/a")).expect("remove");
    assert_eq!(sim.available_space(Path::new("/d")).expect("df"), Some(100));

    // A descriptor limit: opening past it fails with EMFILE until a handle closes.
    sim.set_max_open_files(Some(sim.open_files()));
    let third = sim.open(Path::new("/d/b"), OpenMode::Read).map(|_| ());
    assert_eq!(errno(third), Some(libc::EMFILE));
    assert_eq!(errno(sim.sync_dir(Path::new("/d"))), Some(libc::EMFILE));
    drop(b);
    sim.sync_dir(Path::new("/d"))
        .expect("a descriptor is free again");

    // Faults under one directory leave the others alone; give_back lifts everything.
    sim.create_dir_all(Path::new("/e")).expect("dir");
    sim.fail_op_under(Path::new("/e"), SimOp::Create, Exhaustion::Quota, 1);
    sim.open(Path::new("/d/c"), OpenMode::CreateNew)
        .expect("other disk");
    let quota = sim.open(Path::new("/e/c"), OpenMode::CreateNew).map(|_| ());
    assert_eq!(errno(quota), Some(libc::EDQUOT));
    sim.give_back();
    sim.open(Path::new("/e/c"), OpenMode::CreateNew)
        .expect("lifted");
    assert_eq!(sim.available_space(Path::new("/d")).expect("df"), None);
}

/// A small tmpfs mounted for one test, unmounted (and its mount point removed) on drop.
struct SmallFs {
    dir: tempfile::TempDir,
}

impl SmallFs {
    /// Mounts a tmpfs of `size` bytes, or says why it cannot (not root, no permission to
    /// mount in this sandbox).
    fn mount(size: u64) -> Result<SmallFs, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}")])
            .arg("tmpfs")
            .arg(dir.path())
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
        }
        Ok(SmallFs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.dir.path())
            .status();
    }
}

#[test]
fn a_real_full_file_system_refuses_then_resumes_when_space_is_freed() {
    let fs = match SmallFs::mount(1 << 20) {
        Ok(fs) => fs,
        Err(why) => {
            eprintln!("skipped: a small tmpfs cannot be mounted here ({why})");
            return;
        }
    };
    // Another program's file takes a third of the disk.
    let filler = fs.path().join("filler");
    std::fs::write(&filler, vec![7u8; 340 << 10]).expect("filler");
    let dir = fs.path().join("wal");
    let o = WalOptions {
        segment_size: 64 << 10,
        max_record_size: 4096,
        reserve_bytes: Some(0),
        ..WalOptions::default()
    };
    let wal = Wal::open(&dir, o.clone()).expect("open");
    let mut acked = BTreeMap::new();
    let mut tag = 0u64;
    let err = loop {
        match wal.append(1, &payload(tag, BODY)) {
            Ok(lsn) => {
                acked.insert(lsn, tag);
                tag += 1;
            }
            Err(e) => break e,
        }
        assert!(tag < 10_000, "the disk never filled");
    };
    assert!(
        matches!(
            err,
            Error::Resource {
                kind: ResourceKind::OutOfSpace,
                ..
            }
        ),
        "{err}"
    );
    assert!(!wal.is_poisoned());
    assert!(wal.append(1, b"still full").is_err());
    let names: Vec<String> = std::fs::read_dir(&dir)
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| n.ends_with(".wal")), "{names:?}");

    // The operator frees space: writes resume by themselves.
    std::fs::remove_file(&filler).expect("free space");
    for _ in 0..200 {
        let lsn = wal.append(1, &payload(tag, BODY)).expect("resumes");
        acked.insert(lsn, tag);
        tag += 1;
    }
    wal.close().expect("close");

    // Reopened with a reserve larger than what is left: the next rotation is refused
    // before the disk is full.
    let o = WalOptions {
        reserve_bytes: Some(1 << 20),
        ..o
    };
    let wal = Wal::open(&dir, o).expect("reopen");
    assert_eq!(wal.last_lsn(), acked.len() as u64);
    let err = loop {
        match wal.append(1, &payload(tag, BODY)) {
            Ok(lsn) => {
                acked.insert(lsn, tag);
                tag += 1;
            }
            Err(e) => break e,
        }
    };
    assert!(
        matches!(
            err,
            Error::Resource {
                kind: ResourceKind::BelowReserve { .. },
                ..
            }
        ),
        "{err}"
    );
    let status = wal.space_status();
    assert!(
        status
            .available_bytes
            .is_some_and(|a| a < status.needed_bytes),
        "{status:?}"
    );
    wal.close().expect("close");
    let recs =
        read_all(Arc::new(duplex_wal::StdStorage), std::slice::from_ref(&dir)).expect("read");
    let got: BTreeMap<u64, u64> = recs
        .iter()
        .map(|r| (r.lsn, check_payload(&r.payload).expect("intact")))
        .collect();
    assert_eq!(got, acked);
}
