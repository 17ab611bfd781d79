//! Backups that restore on their own: the drill in process (write, back up online while
//! writing, keep writing, lose the data directory, restore from the backup alone and from
//! backup + archive), incremental chains, point-in-time targets inside a write group,
//! failed backups, and fencing epochs carried by the WAL.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use duplex_engine::{
    backup_dir, restore_chain, roll_forward, verify_backup, verify_backup_wal, BackupOptions,
    BackupRate, Config, Database, RollForwardOptions, RollForwardReport, Target, WriteBatch,
    RESTORE_WAL_DIR,
};
use duplex_wal::sim::SimStorage;
use duplex_wal::{StdStorage, Storage};

type Contents = BTreeMap<Vec<u8>, Vec<u8>>;

fn cfg(archive: &Path) -> Config {
    Config {
        segment_size: 64 << 10,
        checkpoint_wal_bytes: 256 << 10,
        archive_dir: Some(archive.to_path_buf()),
        ..Config::default()
    }
}

fn storage() -> Arc<dyn Storage> {
    Arc::new(StdStorage)
}

fn contents(db: &Database) -> Contents {
    db.scan(Bound::Unbounded, Bound::Unbounded)
        .expect("scan")
        .collect::<Result<_, _>>()
        .expect("items")
}

/// Every acknowledged write, in LSN order: (lsn, key, value).
type Log = Arc<Mutex<Vec<(u64, Vec<u8>, Vec<u8>)>>>;

/// The contents after applying the acknowledged writes with LSN at most `upto`.
fn model(log: &Log, upto: u64) -> Contents {
    let mut l = log.lock().expect("log").clone();
    l.sort_by_key(|(lsn, _, _)| *lsn);
    let mut m = Contents::new();
    for (lsn, k, v) in l {
        if lsn <= upto {
            m.insert(k, v);
        }
    }
    m
}

fn put(db: &Database, log: &Log, k: String, v: String) {
    let lsn = db.put(k.as_bytes(), v.as_bytes()).expect("put");
    log.lock()
        .expect("log")
        .push((lsn, k.into_bytes(), v.into_bytes()));
}

/// Restores `chain` into `into` and rolls forward `archive` (none: the backup alone).
fn restore(
    chain: &[PathBuf],
    into: &Path,
    archive: &[PathBuf],
    target: Target,
    scratch: &Path,
) -> (RollForwardReport, Contents) {
    restore_chain(&storage(), chain, into).expect("restore");
    let r = roll_forward(
        storage(),
        into,
        archive,
        &RollForwardOptions {
            target,
            config: cfg(scratch),
            ..RollForwardOptions::default()
        },
        &mut |_| {},
    )
    .expect("roll forward");
    assert!(
        !into.join(RESTORE_WAL_DIR).exists(),
        "the staged backup WAL is removed once applied"
    );
    let db = Database::open(into, cfg(scratch)).expect("open restored");
    let c = contents(&db);
    db.close().expect("close");
    (r, c)
}

/// Writes from a thread until told to stop, logging every acknowledged put.
fn writer(db: &Arc<Database>, log: &Log, stop: &Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    let (db, log, stop) = (db.clone(), log.clone(), stop.clone());
    std::thread::spawn(move || {
        let mut i = 0u32;
        while !stop.load(Ordering::Relaxed) {
            put(&db, &log, format!("w{:05}", i % 3000), format!("v{i}"));
            i += 1;
        }
    })
}

#[test]
fn the_drill_restores_a_backup_alone_to_its_end_lsn_and_with_the_archive_to_the_end() {
    let t = duplex_testkit::temp_dir();
    let (data, archive) = (t.path().join("data"), t.path().join("archive"));
    let db = Arc::new(Database::open(&data, cfg(&archive)).expect("open"));
    let log: Log = Arc::default();
    for i in 0..2000 {
        put(&db, &log, format!("a{i:05}"), "x".repeat(50));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let w = writer(&db, &log, &stop);
    std::thread::sleep(std::time::Duration::from_millis(50));
    let backup = t.path().join("b1");
    // Every write acknowledged before the backup started is in it (and those acknowledged
    // while it copied, up to its end LSN).
    let acked_before = log.lock().expect("log").iter().map(|e| e.0).max();
    let rep = db.backup(&backup, None).expect("backup");
    std::thread::sleep(std::time::Duration::from_millis(50));
    stop.store(true, Ordering::Relaxed);
    w.join().expect("writer");
    for i in 0..500 {
        put(&db, &log, format!("after{i:04}"), "y".repeat(30));
    }
    let m = rep.manifest.clone();
    assert!(
        m.end_lsn > m.checkpoint_lsn,
        "the backup holds WAL past its checkpoint"
    );
    assert!(acked_before.is_some_and(|a| a <= m.end_lsn));
    assert!(m.files.iter().any(|f| f.name.ends_with(".wal")));
    verify_backup(&StdStorage, &backup).expect("verify files");
    verify_backup_wal(&storage(), &backup, &m).expect("verify WAL");
    let last = db.wal().last_lsn();
    db.wal().rotate().expect("rotate");
    db.wal().archive_closed().expect("archive");
    drop(db);
    // The data disk is lost.
    std::fs::remove_dir_all(&data).expect("drop the data directory");

    let (r, alone) = restore(
        std::slice::from_ref(&backup),
        &t.path().join("alone"),
        &[],
        Target::End,
        &t.path().join("s1"),
    );
    assert_eq!(r.to_lsn, m.end_lsn, "the backup alone reaches its end LSN");
    assert_eq!(
        alone,
        model(&log, m.end_lsn),
        "byte for byte, up to the end LSN"
    );

    let (r, all) = restore(
        std::slice::from_ref(&backup),
        &t.path().join("all"),
        std::slice::from_ref(&archive),
        Target::End,
        &t.path().join("s2"),
    );
    assert_eq!(r.to_lsn, last, "with the archive: everything archived");
    assert_eq!(all, model(&log, last));
}

#[test]
fn an_incremental_chain_restores_alone_to_the_last_backups_end_and_on_with_the_archive() {
    let t = duplex_testkit::temp_dir();
    let (data, archive) = (t.path().join("data"), t.path().join("archive"));
    let db = Database::open(&data, cfg(&archive)).expect("open");
    let log: Log = Arc::default();
    for i in 0..1500 {
        put(&db, &log, format!("a{i:05}"), "x".repeat(40));
    }
    let full = t.path().join("full");
    db.backup(&full, None).expect("full");
    for i in 0..1500 {
        put(&db, &log, format!("b{i:05}"), "y".repeat(40));
    }
    let inc = t.path().join("inc");
    let m = db.backup(&inc, Some(&full)).expect("incremental").manifest;
    assert!(m.is_incremental());
    for i in 0..300 {
        put(&db, &log, format!("c{i:05}"), "z".repeat(40));
    }
    let last = db.wal().last_lsn();
    db.wal().rotate().expect("rotate");
    db.wal().archive_closed().expect("archive");
    drop(db);
    std::fs::remove_dir_all(&data).expect("drop the data directory");
    let chain = [full, inc];
    let (r, alone) = restore(
        &chain,
        &t.path().join("alone"),
        &[],
        Target::End,
        &t.path().join("s1"),
    );
    assert_eq!(r.to_lsn, m.end_lsn);
    assert_eq!(alone, model(&log, m.end_lsn));
    let (r, all) = restore(
        &chain,
        &t.path().join("all"),
        std::slice::from_ref(&archive),
        Target::End,
        &t.path().join("s2"),
    );
    assert_eq!(r.to_lsn, last);
    assert_eq!(all, model(&log, last));
}

#[test]
fn a_point_in_time_inside_a_write_group_applies_exactly_the_records_up_to_it() {
    let t = duplex_testkit::temp_dir();
    let (data, archive) = (t.path().join("data"), t.path().join("archive"));
    let db = Database::open(&data, cfg(&archive)).expect("open");
    for i in 0..100 {
        db.put(format!("a{i}").as_bytes(), b"x").expect("put");
    }
    let backup = t.path().join("b");
    db.backup(&backup, None).expect("backup");
    let batches: Vec<WriteBatch> = (0..5)
        .map(|i| {
            let mut b = WriteBatch::new();
            b.put(format!("g{i}"), format!("v{i}"));
            b
        })
        .collect();
    let lsns = db.write_many(batches).expect("write_many");
    db.put(b"after", b"group").expect("put");
    db.wal().rotate().expect("rotate");
    db.wal().archive_closed().expect("archive");
    drop(db);
    for (n, target) in [(3, lsns[2]), (1, lsns[0]), (5, lsns[4])] {
        let (r, c) = restore(
            std::slice::from_ref(&backup),
            &t.path().join(format!("r{n}")),
            std::slice::from_ref(&archive),
            Target::Lsn(target),
            &t.path().join(format!("s{n}")),
        );
        assert_eq!(
            r.to_lsn, target,
            "--until-lsn is inclusive, record by record"
        );
        for i in 0..5 {
            assert_eq!(
                c.contains_key(format!("g{i}").as_bytes()),
                i < n,
                "target {target}: record g{i}"
            );
        }
        assert!(!c.contains_key(&b"after"[..]));
    }
}

#[test]
fn a_backup_of_a_directory_from_outside_carries_its_wal_tail() {
    let t = duplex_testkit::temp_dir();
    let (data, archive) = (t.path().join("data"), t.path().join("archive"));
    let db = Database::open(&data, cfg(&archive)).expect("open");
    let log: Log = Arc::default();
    for i in 0..800 {
        put(&db, &log, format!("k{i:04}"), "v".repeat(64));
    }
    db.checkpoint().expect("checkpoint");
    // Written after the last checkpoint: only in the WAL.
    for i in 0..200 {
        put(&db, &log, format!("tail{i:03}"), "t".repeat(10));
    }
    let acked = db.wal().last_lsn();
    let dest = t.path().join("outside");
    let r = backup_dir(&storage(), &data, &dest, None).expect("backup_dir");
    assert_eq!(r.manifest.end_lsn, acked, "the WAL tail is in the backup");
    db.put(b"later", b"x").expect("put");
    let (rf, c) = restore(
        std::slice::from_ref(&dest),
        &t.path().join("r"),
        &[],
        Target::End,
        &t.path().join("s"),
    );
    assert_eq!(rf.to_lsn, acked);
    assert_eq!(c, model(&log, acked));
}

#[test]
fn a_failed_backup_leaves_nothing_that_looks_like_a_backup() {
    for nth in [1, 2, 3] {
        let sim = Arc::new(SimStorage::new());
        let st: Arc<dyn Storage> = sim.clone();
        let db = Database::open_with(
            st.clone(),
            "/d",
            Config {
                background: false,
                segment_size: 64 << 10,
                ..Config::default()
            },
        )
        .expect("open");
        for i in 0..500 {
            db.put(format!("k{i:04}").as_bytes(), &[7u8; 100])
                .expect("put");
        }
        st.create_dir_all(Path::new("/backups")).expect("mkdir");
        // The checkpoint the backup takes writes first: count from after it.
        db.checkpoint().expect("checkpoint");
        sim.fail_sync_after(nth);
        let err = db
            .backup_with(
                Path::new("/backups/b1"),
                None,
                &BackupOptions {
                    rate: BackupRate::Unlimited,
                    ..BackupOptions::default()
                },
            )
            .expect_err("the backup fails midway");
        assert!(!err.to_string().is_empty());
        assert!(!st.exists(Path::new("/backups/b1")), "nth={nth}");
        assert!(
            !st.exists(Path::new("/backups/b1.tmp")),
            "nth={nth}: the half-written copy is removed"
        );
    }
}

#[test]
fn verify_refuses_a_directory_without_a_complete_manifest() {
    let t = duplex_testkit::temp_dir();
    let (data, archive) = (t.path().join("data"), t.path().join("archive"));
    let db = Database::open(&data, cfg(&archive)).expect("open");
    for i in 0..300 {
        db.put(format!("k{i}").as_bytes(), b"v").expect("put");
    }
    db.checkpoint().expect("checkpoint");
    for i in 0..300 {
        db.put(format!("after{i}").as_bytes(), b"v").expect("put");
    }
    let b = t.path().join("b");
    backup_dir(&storage(), &data, &b, None).expect("backup");
    // A copy whose manifest never got written: a backup cut off midway.
    let half = t.path().join("half");
    std::fs::create_dir_all(&half).expect("mkdir");
    for e in std::fs::read_dir(&b).expect("list") {
        let p = e.expect("entry").path();
        if p.is_file() && p.file_name().is_some_and(|n| n != "BACKUP") {
            std::fs::copy(&p, half.join(p.file_name().expect("name"))).expect("copy");
        }
    }
    let err = verify_backup(&StdStorage, &half).expect_err("no manifest");
    assert!(err.to_string().contains("not a complete backup"), "{err}");
    let report = duplex_engine::verify::verify_backup_dir(&storage(), &half, None);
    assert!(!report.is_ok(), "verify never calls it OK");
    // A backup whose WAL segment was cut short fails too.
    let seg = std::fs::read_dir(&b)
        .expect("list")
        .map(|e| e.expect("entry").path())
        .find(|p| p.extension().is_some_and(|e| e == "wal"))
        .expect("a segment");
    let len = std::fs::metadata(&seg).expect("stat").len();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .expect("open");
    f.set_len(len - 1).expect("truncate");
    assert!(verify_backup(&StdStorage, &b).is_err());
    assert!(!duplex_engine::verify::verify_backup_dir(&storage(), &b, None).is_ok());
}

#[test]
fn the_highest_epoch_survives_checkpoints_restarts_backups_and_the_archive() {
    let t = duplex_testkit::temp_dir();
    let (data, archive) = (t.path().join("data"), t.path().join("archive"));
    let db = Database::open(&data, cfg(&archive)).expect("open");
    assert_eq!(db.max_epoch(), 0);
    db.put(b"a", b"1").expect("put");
    db.log_epoch(5).expect("epoch");
    db.log_epoch(3)
        .expect("a lower epoch is logged but does not lower the maximum");
    assert_eq!(db.max_epoch(), 5);
    db.close().expect("close");
    let db = Database::open(&data, cfg(&archive)).expect("reopen");
    assert_eq!(db.max_epoch(), 5, "kept by the checkpoint");
    db.log_epoch(6).expect("epoch");
    drop(db);
    let db = Database::open(&data, cfg(&archive)).expect("reopen after a crash");
    assert_eq!(db.max_epoch(), 6, "replayed from the WAL");
    let backup = t.path().join("b");
    db.backup(&backup, None).expect("backup");
    db.log_epoch(9).expect("epoch");
    db.put(b"b", b"2").expect("put");
    db.wal().rotate().expect("rotate");
    db.wal().archive_closed().expect("archive");
    drop(db);
    let (r, _) = restore(
        std::slice::from_ref(&backup),
        &t.path().join("alone"),
        &[],
        Target::End,
        &t.path().join("s1"),
    );
    assert_eq!(r.max_epoch, 6);
    let (r, _) = restore(
        std::slice::from_ref(&backup),
        &t.path().join("all"),
        std::slice::from_ref(&archive),
        Target::End,
        &t.path().join("s2"),
    );
    assert_eq!(r.max_epoch, 9, "the archive's epoch record is seen");
    let db = Database::open(t.path().join("all"), cfg(&t.path().join("s2"))).expect("open");
    assert_eq!(db.max_epoch(), 9, "and kept by the restored database");
}
