//! Online backup, incremental chains, restore and roll-forward of the archive, on the real
//! file system.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::{cfg, contents, storage};
use duplex_engine::{
    restore_chain, roll_forward, verify_backup, Config, Database, Error, Phase, Progress,
    RollForwardOptions, Target,
};
use duplex_wal::StdStorage;

#[test]
fn backup_while_writing_then_restore_and_roll_forward_matches_the_live_database() {
    let t = duplex_testkit::temp_dir();
    let (data, archive) = (t.path().join("data"), t.path().join("archive"));
    let db = Arc::new(Database::open(&data, cfg(&archive)).expect("open"));
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..3u32)
        .map(|w| {
            let (db, stop) = (db.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut i = 0u32;
                while !stop.load(Ordering::Relaxed) || i < 300 {
                    let k = format!("w{w}-{:04}", i % 700);
                    if i.is_multiple_of(11) {
                        db.delete(k.as_bytes()).expect("delete");
                    } else {
                        db.put(k.as_bytes(), format!("{w}:{i}").repeat(5).as_bytes())
                            .expect("put");
                    }
                    i += 1;
                }
            })
        })
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(150));
    let report = db
        .backup(&t.path().join("backup-1"), None)
        .expect("backup while writing");
    assert!(report.bytes_copied > 0);
    std::thread::sleep(std::time::Duration::from_millis(150));
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().expect("writer");
    }
    db.wal().rotate().expect("rotate");
    db.wal().archive_closed().expect("archive");
    let live = contents(&db);
    let live_digest = db.digest().expect("digest");
    let last = db.wal().last_lsn();
    assert!(
        last > report.manifest.checkpoint_lsn,
        "writes after the backup"
    );

    let into = t.path().join("restored");
    restore_chain(&storage(), &[t.path().join("backup-1")], &into).expect("restore");
    let mut reports: Vec<Progress> = Vec::new();
    let rf = roll_forward(
        storage(),
        &into,
        std::slice::from_ref(&archive),
        &RollForwardOptions {
            config: cfg(&t.path().join("archive-of-restored")),
            ..RollForwardOptions::default()
        },
        &mut |p| reports.push(*p),
    )
    .expect("roll forward");
    // Checking, then the merge into the tree, then done; the last report counts every
    // record applied.
    let phases: Vec<Phase> = reports.iter().map(|p| p.phase).collect();
    let first_merge = phases.iter().position(|p| *p == Phase::Merge);
    assert_eq!(phases.first(), Some(&Phase::Check), "{phases:?}");
    assert!(first_merge.is_some(), "{phases:?}");
    assert!(
        !phases[first_merge.unwrap_or(0)..].contains(&Phase::Check),
        "{phases:?}"
    );
    let end = reports.last().expect("reports");
    assert_eq!(
        (end.phase, end.records, end.to_apply),
        (Phase::Apply, rf.records, rf.records)
    );
    assert_eq!(rf.from_lsn, report.manifest.checkpoint_lsn + 1);
    assert_eq!(rf.to_lsn, last);
    assert_eq!(rf.records, last - report.manifest.checkpoint_lsn);
    let restored =
        Database::open(&into, cfg(&t.path().join("archive-of-restored"))).expect("open restored");
    assert_eq!(restored.digest().expect("digest"), live_digest);
    assert_eq!(contents(&restored), live);
    assert_eq!(restored.wal().last_lsn(), last);
}

#[test]
fn point_in_time_restore_gives_exactly_the_state_after_record_n() {
    let t = duplex_testkit::temp_dir();
    let (data, archive) = (t.path().join("data"), t.path().join("archive"));
    let db = Database::open(&data, cfg(&archive)).expect("open");
    let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    let mut states: BTreeMap<u64, BTreeMap<Vec<u8>, Vec<u8>>> = BTreeMap::new();
    let mut write = |db: &Database, i: u32, model: &mut BTreeMap<Vec<u8>, Vec<u8>>| {
        let k = format!("key{:03}", i % 97).into_bytes();
        let lsn = if i.is_multiple_of(7) {
            model.remove(&k);
            db.delete(&k).expect("delete")
        } else {
            let v = format!("v{i}").into_bytes();
            model.insert(k.clone(), v.clone());
            db.put(&k, &v).expect("put")
        };
        states.insert(lsn, model.clone());
    };
    for i in 0..400 {
        write(&db, i, &mut model);
    }
    let backup = t.path().join("backup");
    let m = db.backup(&backup, None).expect("backup").manifest;
    for i in 400..1200 {
        write(&db, i, &mut model);
    }
    db.wal().rotate().expect("rotate");
    db.wal().archive_closed().expect("archive");
    let last = db.wal().last_lsn();
    let targets = [
        (m.checkpoint_lsn, Target::Lsn(m.checkpoint_lsn)),
        (m.checkpoint_lsn + 1, Target::Lsn(m.checkpoint_lsn + 1)),
        (m.checkpoint_lsn + 333, Target::Lsn(m.checkpoint_lsn + 333)),
        (last, Target::End),
    ];
    // One chunk (the whole archive gathered while checking it), and many small ones.
    for chunk_bytes in [RollForwardOptions::default().chunk_bytes, 2 << 10] {
        for (n, target) in targets {
            let into = t.path().join(format!("pitr-{n}-{chunk_bytes}"));
            restore_chain(&storage(), std::slice::from_ref(&backup), &into).expect("restore");
            let other_archive = t.path().join(format!("a-{n}-{chunk_bytes}"));
            let rf = roll_forward(
                storage(),
                &into,
                std::slice::from_ref(&archive),
                &RollForwardOptions {
                    target,
                    config: cfg(&other_archive),
                    chunk_bytes,
                    ..RollForwardOptions::default()
                },
                &mut |_| {},
            )
            .expect("roll forward");
            assert_eq!(rf.to_lsn, n);
            let restored = Database::open(&into, cfg(&other_archive)).expect("open");
            assert_eq!(&contents(&restored), &states[&n], "state after LSN {n}");
            assert_eq!(restored.wal().last_lsn(), n);
        }
    }
}

#[test]
fn an_incremental_chain_restores_the_same_bytes_as_a_full_backup() {
    let t = duplex_testkit::temp_dir();
    let (data, archive) = (t.path().join("data"), t.path().join("archive"));
    let db = Database::open(&data, cfg(&archive)).expect("open");
    for i in 0..2000u32 {
        db.put(format!("a{i:05}").as_bytes(), &[i as u8; 150])
            .expect("put");
    }
    let full = t.path().join("full");
    db.backup(&full, None).expect("full backup");
    for i in 0..800u32 {
        db.put(format!("a{:05}", i * 2).as_bytes(), b"changed")
            .expect("put");
    }
    let inc = t.path().join("inc");
    let inc_report = db.backup(&inc, Some(&full)).expect("incremental backup");
    assert!(inc_report.manifest.is_incremental());
    let full2 = t.path().join("full2");
    let full2_report = db.backup(&full2, None).expect("second full backup");
    assert!(
        inc_report.bytes_copied < full2_report.bytes_copied,
        "an increment copies only what was appended"
    );
    let (a, b) = (t.path().join("r-chain"), t.path().join("r-full"));
    restore_chain(&storage(), &[full.clone(), inc.clone()], &a).expect("restore chain");
    restore_chain(&storage(), std::slice::from_ref(&full2), &b).expect("restore full");
    let name = format!("store-{:06}.dpx", full2_report.manifest.generation);
    let (ba, bb) = (
        std::fs::read(a.join(&name)).expect("read"),
        std::fs::read(b.join(&name)).expect("read"),
    );
    assert!(ba == bb, "chain and full restore differ");
    // A chain in the wrong order, or an increment without its base, is refused.
    let err = restore_chain(
        &storage(),
        std::slice::from_ref(&inc),
        &t.path().join("bad1"),
    )
    .expect_err("no base");
    assert!(err.to_string().contains("incremental"), "{err}");
    let err =
        restore_chain(&storage(), &[full2, inc], &t.path().join("bad2")).expect_err("wrong base");
    assert!(
        err.to_string().contains("does not continue the chain"),
        "{err}"
    );
}

#[test]
fn damaged_backups_and_archives_are_reported() {
    let t = duplex_testkit::temp_dir();
    let (data, archive) = (t.path().join("data"), t.path().join("archive"));
    let db = Database::open(&data, cfg(&archive)).expect("open");
    for i in 0..500u32 {
        db.put(format!("k{i:04}").as_bytes(), &[7u8; 100])
            .expect("put");
    }
    let backup = t.path().join("backup");
    let m = db.backup(&backup, None).expect("backup").manifest;
    for i in 0..3000u32 {
        db.put(format!("k{:04}", i % 500).as_bytes(), &[i as u8; 100])
            .expect("put");
    }
    db.wal().rotate().expect("rotate");
    db.wal().archive_closed().expect("archive");

    // A flipped byte in the backup's store file.
    let store = backup.join(m.store_part_name());
    let mut bytes = std::fs::read(&store).expect("read");
    bytes[100] ^= 1;
    std::fs::write(&store, &bytes).expect("write");
    match verify_backup(&StdStorage, &backup) {
        Err(Error::Corrupt { file, .. }) => assert_eq!(file, store),
        other => panic!("expected corruption, got {other:?}"),
    }
    assert!(restore_chain(
        &storage(),
        std::slice::from_ref(&backup),
        &t.path().join("r1")
    )
    .is_err());
    bytes[100] ^= 1;
    std::fs::write(&store, &bytes).expect("write");
    verify_backup(&StdStorage, &backup).expect("repaired backup verifies");

    // A missing archive segment in the middle: a gap, and nothing applied past it.
    let mut segs: Vec<PathBuf> = std::fs::read_dir(duplex_wal::archive_subdir(&archive, 1, 1))
        .expect("list")
        .map(|e| e.expect("entry").path())
        .collect();
    segs.sort();
    assert!(segs.len() >= 4, "{segs:?}");
    let hole = segs[segs.len() / 2].clone();
    let saved = std::fs::read(&hole).expect("read");
    std::fs::remove_file(&hole).expect("remove");
    let into = t.path().join("r2");
    restore_chain(&storage(), std::slice::from_ref(&backup), &into).expect("restore");
    let opts = RollForwardOptions {
        config: cfg(&t.path().join("a2")),
        ..RollForwardOptions::default()
    };
    let err = roll_forward(
        storage(),
        &into,
        std::slice::from_ref(&archive),
        &opts,
        &mut |_| {},
    )
    .expect_err("gap");
    assert!(err.is_corruption(), "{err}");
    assert!(err.to_string().contains("gap"), "{err}");
    // The operator may choose to stop at the last good record.
    let into = t.path().join("r3");
    restore_chain(&storage(), std::slice::from_ref(&backup), &into).expect("restore");
    let rf = roll_forward(
        storage(),
        &into,
        std::slice::from_ref(&archive),
        &RollForwardOptions {
            stop_at_last_good: true,
            ..opts.clone()
        },
        &mut |_| {},
    )
    .expect("stop at the last good record");
    assert!(rf.stopped_early.is_some());
    let first_missing = duplex_wal::format::parse_segment_file_name(
        hole.file_name().and_then(|n| n.to_str()).expect("name"),
    )
    .expect("segment name");
    assert_eq!(rf.to_lsn, first_missing - 1);
    std::fs::write(&hole, saved).expect("restore segment");

    // An archive of another node does not fit this backup.
    let other = t.path().join("other");
    let other_archive = t.path().join("other-archive");
    {
        let db2 = Database::open(
            &other,
            Config {
                node_id: 2,
                ..cfg(&other_archive)
            },
        )
        .expect("open other");
        for i in 0..2000u32 {
            db2.put(format!("x{i}").as_bytes(), b"y").expect("put");
        }
        db2.wal().rotate().expect("rotate");
        db2.wal().archive_closed().expect("archive");
    }
    let into = t.path().join("r4");
    restore_chain(&storage(), std::slice::from_ref(&backup), &into).expect("restore");
    let err = roll_forward(storage(), &into, &[other_archive], &opts, &mut |_| {})
        .expect_err("wrong archive");
    assert!(!err.to_string().is_empty());
}

#[test]
fn a_directory_held_by_a_running_database_can_be_backed_up_from_outside() {
    let t = duplex_testkit::temp_dir();
    let (data, archive) = (t.path().join("data"), t.path().join("archive"));
    let db = Database::open(&data, cfg(&archive)).expect("open");
    for i in 0..1000u32 {
        db.put(format!("k{i:04}").as_bytes(), &[3u8; 64])
            .expect("put");
    }
    db.checkpoint().expect("checkpoint");
    db.put(b"after", b"checkpoint").expect("put");
    // The backup carries the WAL from its checkpoint to the durable end it could read, so it
    // restores alone to every acknowledged write before the copy, not only the checkpoint.
    let before_backup = contents(&db);
    let dest = t.path().join("outside");
    let r = duplex_engine::backup_dir(&storage(), &data, &dest, None).expect("backup_dir");
    assert_eq!(r.manifest.checkpoint_lsn, 1000);
    // The running database was not disturbed.
    db.put(b"still", b"writing").expect("put");
    assert_eq!(db.get(b"after").expect("get"), Some(b"checkpoint".to_vec()));
    let into = t.path().join("r");
    restore_chain(&storage(), std::slice::from_ref(&dest), &into).expect("restore");
    roll_forward(
        storage(),
        &into,
        &[],
        &RollForwardOptions {
            config: cfg(&t.path().join("a2")),
            ..RollForwardOptions::default()
        },
        &mut |_| {},
    )
    .expect("no archive to apply");
    let restored = Database::open(&into, cfg(&t.path().join("a2"))).expect("open");
    assert_eq!(contents(&restored), before_backup);
}
