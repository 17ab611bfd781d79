//! Faults at the edges, on simulated storage: disk space and file descriptors running out
//! at every write, preallocation, rename and fsync of the engine's own operations, a WAL
//! that fails mid-load, a creation interrupted at every step, a newer format. Whatever
//! happens, once the resource is back the database opens with every acknowledged write.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use duplex_engine::{Config, Database, Error};
use duplex_wal::sim::{CrashMode, Exhaustion, SimOp, SimStorage};
use duplex_wal::Storage;

const DIR: &str = "/db";

fn cfg() -> Config {
    Config {
        background: false,
        segment_size: 16 << 10,
        checkpoint_wal_bytes: 4 << 10,
        ..Config::default()
    }
}

fn open(sim: &SimStorage, cfg: Config) -> Result<Database, Error> {
    Database::open_with(Arc::new(sim.clone()), DIR, cfg)
}

/// Writes acknowledged so far, key to value.
type Acked = BTreeMap<Vec<u8>, Vec<u8>>;

/// Puts `n` keys from `from`; records those acknowledged. Errors are allowed (the fault
/// under test), but a refused write must say why.
fn load(db: &Database, acked: &mut Acked, from: u32, n: u32) {
    for i in from..from + n {
        let k = format!("key{:05}", i % 700).into_bytes();
        let v = vec![(i % 251) as u8; 100 + (i as usize % 300)];
        if db.put(&k, &v).is_ok() {
            acked.insert(k, v);
        }
    }
}

fn assert_holds(db: &Database, acked: &Acked, what: &str) {
    for (k, v) in acked {
        let got = db.get(k).unwrap_or_else(|e| panic!("{what}: get: {e}"));
        assert_eq!(
            got.as_ref(),
            Some(v),
            "{what}: {}",
            String::from_utf8_lossy(k)
        );
    }
}

/// Reopens after the resource is back: it opens, holds every acknowledged write, takes
/// writes, and closes and opens again.
fn reopen_and_check(sim: &SimStorage, acked: &mut Acked, what: &str) {
    sim.give_back();
    let db = open(sim, cfg()).unwrap_or_else(|e| panic!("{what}: reopen: {e}"));
    assert_holds(&db, acked, what);
    load(&db, acked, 5_000, 50);
    db.close()
        .unwrap_or_else(|e| panic!("{what}: close after reopen: {e}"));
    let db = open(sim, cfg()).unwrap_or_else(|e| panic!("{what}: second reopen: {e}"));
    assert_holds(&db, acked, what);
}

const OPS: [SimOp; 8] = [
    SimOp::Create,
    SimOp::Write,
    SimOp::SetLen,
    SimOp::Preallocate,
    SimOp::SyncFile,
    SimOp::SyncDir,
    SimOp::Rename,
    SimOp::Open,
];
const ERRORS: [Exhaustion; 2] = [Exhaustion::NoSpace, Exhaustion::NoDescriptors];

/// Every kind of operation failing with ENOSPC or EMFILE from its n-th occurrence on,
/// during writes, checkpoints, a compaction and a backup; then the resource comes back and
/// the database is stopped: it opens again with every acknowledged write.
#[test]
fn space_or_descriptors_running_out_anywhere_loses_no_acknowledged_write() {
    for op in OPS {
        for err in ERRORS {
            for n in 1..=6u64 {
                let what = format!("{op:?} {err:?} from the {n}th");
                let sim = SimStorage::new();
                sim.create_dir_all(Path::new("/backups")).expect("dir");
                let mut acked = Acked::new();
                let db = open(&sim, cfg()).expect("open");
                load(&db, &mut acked, 0, 200);
                db.checkpoint().expect("first checkpoint");
                sim.fail_op(op, err, n);
                load(&db, &mut acked, 200, 200);
                let _ = db.run_maintenance();
                let _ = db.checkpoint();
                let _ = db.compact();
                let _ = db.backup(Path::new("/backups/b"), None);
                load(&db, &mut acked, 400, 100);
                sim.give_back();
                // Writes resume by themselves unless the log itself was poisoned.
                load(&db, &mut acked, 500, 100);
                let _ = db.close();
                reopen_and_check(&sim, &mut acked, &what);
            }
        }
    }
}

/// A WAL fsync or record write fails mid-load (the outcome of the writes in flight is
/// unknown); the final checkpoint at close must not record an LSN past the WAL's durable
/// end: the database opens with every acknowledged write.
#[test]
fn a_checkpoint_after_a_failed_wal_write_stays_within_the_durable_log() {
    for (sync_fault, n) in [(true, 40), (true, 3), (false, 40), (false, 3)] {
        let what = format!(
            "fail {} after {n}",
            if sync_fault { "fsync" } else { "write" }
        );
        let sim = SimStorage::new();
        let mut acked = Acked::new();
        let db = open(&sim, cfg()).expect("open");
        load(&db, &mut acked, 0, 50);
        if sync_fault {
            sim.fail_sync_after(n);
        } else {
            sim.fail_write_after(n);
        }
        load(&db, &mut acked, 50, 300);
        assert!(
            db.wal().is_poisoned(),
            "{what}: the fault must have hit the log"
        );
        // The final checkpoint, as a SIGTERM makes it.
        let _ = db.close();
        let sim2 = sim.clone();
        sim2.crash(CrashMode::LoseUnsynced);
        reopen_and_check(&sim, &mut acked, &what);
    }
}

/// A checkpoint refused for want of space is cut back, does not poison the database, and
/// is retried; writes go on into the WAL meanwhile.
#[test]
fn a_checkpoint_out_of_space_is_cut_back_and_retried() {
    let sim = SimStorage::new();
    let mut acked = Acked::new();
    let db = open(&sim, cfg()).expect("open");
    load(&db, &mut acked, 0, 300);
    let store = Path::new(DIR).join("store-000001.dpx");
    let before = sim.contents(&store).expect("store").len();
    sim.fail_op_under(&store, SimOp::Write, Exhaustion::NoSpace, 1);
    let e = db.checkpoint().expect_err("the checkpoint cannot write");
    assert!(e.is_resource() && !e.is_fatal(), "{e}");
    assert!(e.to_string().contains("retried by itself"), "{e}");
    assert_eq!(
        sim.contents(&store).expect("store").len(),
        before,
        "the partial append was cut back"
    );
    load(&db, &mut acked, 300, 100);
    assert_eq!(acked.len(), 400, "writes go on into the WAL");
    assert_holds(&db, &acked, "while the checkpoint is refused");
    sim.give_back();
    assert!(
        db.run_maintenance().expect("retried"),
        "the checkpoint is due again"
    );
    assert_eq!(db.stats().checkpoint_lsn, db.stats().last_lsn);
    assert_eq!(db.maintenance_error(), None);
    db.close().expect("close");
    reopen_and_check(&sim, &mut acked, "after the retry");
}

/// Opening a database whose WAL holds more than a replay chunk needs no free space: the
/// chunks that cannot be merged stay in memory.
#[test]
fn opening_needs_no_free_space() {
    let sim = SimStorage::new();
    let mut acked = Acked::new();
    let db = open(&sim, cfg()).expect("open");
    load(&db, &mut acked, 0, 600);
    drop(db); // No final checkpoint: the next open replays the whole log.
    let small = Config {
        replay_chunk_bytes: 16 << 10,
        ..cfg()
    };
    sim.fail_op(SimOp::Write, Exhaustion::NoSpace, 1);
    sim.fail_op(SimOp::Create, Exhaustion::NoSpace, 1);
    let db = open(&sim, small).expect("open without free space");
    assert_holds(&db, &acked, "opened without space");
    assert!(
        db.maintenance_error().is_some(),
        "the refused merge is reported"
    );
    drop(db);
    reopen_and_check(&sim, &mut acked, "after an open without space");
}

/// A failed archive copy is reported by the maintenance step, never returned, and never
/// stops the local database.
#[test]
fn an_archive_failure_never_stops_the_database() {
    let sim = SimStorage::new();
    let cfg = Config {
        archive_dir: Some("/archive".into()),
        ..cfg()
    };
    let db = open(&sim, cfg.clone()).expect("open");
    let mut acked = Acked::new();
    sim.fail_op_under(Path::new("/archive"), SimOp::Create, Exhaustion::NoSpace, 1);
    sim.fail_op_under(Path::new("/archive"), SimOp::Write, Exhaustion::NoSpace, 1);
    for round in 0..5 {
        load(&db, &mut acked, round * 200, 200);
        db.run_maintenance().expect("maintenance goes on");
    }
    assert_eq!(acked.len(), 700, "{:?}", db.put(b"x", b"y"));
    // Reported by the maintenance step or by the log's archive status.
    assert!(
        db.maintenance_error().is_some_and(|e| e.contains("archiv"))
            || db.wal().archive_status().last_error.is_some(),
        "{:?}",
        db.maintenance_error()
    );
    db.put(b"after", b"v").expect("writes go on");
    db.close().expect("close");
}

/// A kill at every step of creating a database leaves a directory that opens (the
/// creation is redone) and works.
#[test]
fn a_creation_killed_at_any_step_opens() {
    let mut finished = false;
    for ops in 1..200 {
        let sim = SimStorage::new();
        sim.power_off_after(ops);
        let res = open(&sim, cfg());
        let done = res.is_ok();
        drop(res);
        sim.crash(CrashMode::Torn { seed: ops });
        let mut acked = Acked::new();
        let db = open(&sim, cfg()).unwrap_or_else(|e| panic!("killed after {ops} ops: {e}"));
        load(&db, &mut acked, 0, 50);
        db.close().expect("close");
        reopen_and_check(&sim, &mut acked, &format!("killed after {ops} ops"));
        if done {
            finished = true;
            break;
        }
    }
    assert!(finished, "the creation never completed within the budget");
}

/// A manifest lost after the database held data is never taken for an interrupted
/// creation: the open refuses and wipes nothing.
#[test]
fn a_lost_manifest_with_data_is_refused_not_wiped() {
    let sim = SimStorage::new();
    let db = open(&sim, cfg()).expect("open");
    let mut acked = Acked::new();
    load(&db, &mut acked, 0, 100);
    db.close().expect("close");
    let store = Path::new(DIR).join("store-000001.dpx");
    let bytes = sim.contents(&store).expect("store");
    sim.remove_file(&Path::new(DIR).join("MANIFEST"))
        .expect("rm");
    let e = open(&sim, cfg())
        .map(|_| sim.list_names(Path::new(DIR)))
        .expect_err("must refuse");
    assert!(e.to_string().contains("manifest was lost"), "{e}");
    assert_eq!(sim.contents(&store), Some(bytes), "nothing wiped");
}

/// A manifest of a newer format is reported as such, not as corruption.
#[test]
fn a_newer_format_is_not_called_corrupt() {
    let sim = SimStorage::new();
    open(&sim, cfg()).expect("open").close().expect("close");
    let path = Path::new(DIR).join("MANIFEST");
    let mut b = sim.contents(&path).expect("manifest");
    b[8..12].copy_from_slice(&7u32.to_le_bytes());
    let crc = crc32c::crc32c(&b[0..60]);
    b[60..64].copy_from_slice(&crc.to_le_bytes());
    let f = sim
        .open(&path, duplex_wal::OpenMode::CreateTruncate)
        .expect("open");
    f.write_all_at(&b, 0).expect("write");
    drop(f);
    let e = open(&sim, cfg()).expect_err("newer format");
    assert!(e.is_newer_format() && !e.is_corruption(), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("written by a newer Duplex (format 7, this build reads up to 1)"),
        "{msg}"
    );
    assert!(!msg.contains("restore"), "{msg}");
}

/// The scrub checks every block of the store at its rate: a clean store is found clean,
/// and a flipped byte in a block no read touches (the first, long superseded checkpoint)
/// is reported with file and offset.
#[test]
fn the_scrub_finds_damage_no_read_touches() {
    let scrubbing = || Config {
        scrub_bytes_per_sec: 64 << 10,
        ..cfg()
    };
    let sim = SimStorage::new();
    let db = open(&sim, scrubbing()).expect("open");
    let mut acked = Acked::new();
    for round in 0..4 {
        load(&db, &mut acked, round * 700, 700);
        db.checkpoint().expect("checkpoint");
    }
    let committed = db.stats().store_bytes;
    let mut steps = 0;
    while !db.scrub_status().done {
        db.run_maintenance().expect("step");
        steps += 1;
    }
    let st = db.scrub_status();
    assert_eq!(st.damage, None);
    assert_eq!(
        st.bytes_checked,
        committed - 64,
        "every block after the header"
    );
    // 64 KiB a second, 200 ms a step: about 13 KiB a step (the block that crosses the
    // budget is checked whole).
    assert!(
        steps as u64 >= committed / (32 << 10),
        "{steps} steps for {committed} bytes"
    );
    db.close().expect("close");

    let store = Path::new(DIR).join("store-000001.dpx");
    sim.corrupt(&store, 64 + 20, 0x40).expect("flip");
    let db = open(&sim, scrubbing()).expect("a damaged dead block does not stop the open");
    assert_holds(&db, &acked, "reads do not touch the damaged block");
    assert_eq!(
        db.scrub_status().damage,
        None,
        "not found before the scrub runs"
    );
    while !db.scrub_status().done {
        db.run_maintenance().expect("step");
    }
    let damage = db.scrub_status().damage.expect("found");
    assert_eq!((damage.file, damage.offset), (store, 64));
    assert!(damage.problem.contains("checksum"), "{}", damage.problem);
}

/// With the background thread, a checkpoint refused for want of space neither poisons nor
/// stops the thread: writes go on, and once space is back the thread checkpoints by itself.
#[test]
fn the_background_thread_retries_a_checkpoint_once_space_is_back() {
    let sim = SimStorage::new();
    let cfg = || Config {
        background: true,
        ..cfg()
    };
    let db = open(&sim, cfg()).expect("open");
    let store = Path::new(DIR).join("store-000001.dpx");
    sim.fail_op_under(&store, SimOp::Write, Exhaustion::NoSpace, 1);
    let mut acked = Acked::new();
    load(&db, &mut acked, 0, 300);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while db.maintenance_error().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "no checkpoint was tried"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(db.stats().checkpoints, 0);
    load(&db, &mut acked, 300, 100);
    assert_eq!(
        acked.len(),
        400,
        "writes go on while the checkpoint is refused"
    );
    sim.give_back();
    while db.stats().checkpoints == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the thread never retried"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_holds(&db, &acked, "after the retry");
    db.close().expect("close");
    reopen_and_check(&sim, &mut acked, "background retry");
}
