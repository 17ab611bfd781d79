//! The operator's drill with the real `duplex-recover` binary: a database takes writes, is
//! backed up from outside while a writer goes on, takes more writes, then its data
//! directory is lost; it is restored from the backup alone (to the backup's end LSN, byte
//! for byte what was acknowledged before the backup ended), from backup + archive
//! (everything archived), from an incremental chain, and to a point inside a write group.

mod common;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use common::{run, Out};
use duplex_engine::{BackupManifest, Config, Database, SyncPolicy, WriteBatch};

type Contents = BTreeMap<Vec<u8>, Vec<u8>>;
/// Acknowledged writes: (lsn, key, value).
type Log = Arc<Mutex<Vec<(u64, Vec<u8>, Vec<u8>)>>>;

fn cfg(archive: &Path) -> Config {
    Config {
        archive_dir: Some(archive.to_path_buf()),
        segment_size: 64 << 10,
        checkpoint_wal_bytes: 256 << 10,
        sync: SyncPolicy::Always,
        ..Config::default()
    }
}

fn put(db: &Database, log: &Log, k: String, v: String) {
    let lsn = db.put(k.as_bytes(), v.as_bytes()).expect("put");
    log.lock()
        .expect("log")
        .push((lsn, k.into_bytes(), v.into_bytes()));
}

fn model(log: &Log, upto: u64) -> Contents {
    let mut l = log.lock().expect("log").clone();
    l.sort_by_key(|e| e.0);
    l.into_iter()
        .filter(|e| e.0 <= upto)
        .map(|(_, k, v)| (k, v))
        .collect()
}

fn restored(dir: &Path) -> (Contents, u64) {
    let db = Database::open(dir, Config::default()).expect("open restored");
    let c = db
        .scan(Bound::Unbounded, Bound::Unbounded)
        .expect("scan")
        .collect::<Result<_, _>>()
        .expect("items");
    let last = db.wal().last_lsn();
    db.close().expect("close");
    (c, last)
}

fn manifest(dir: &Path) -> BackupManifest {
    let b = std::fs::read(dir.join("BACKUP")).expect("read BACKUP");
    BackupManifest::decode(&b).expect("manifest")
}

fn backup(data: &Path, into: &Path, base: Option<&Path>) -> Out {
    let mut args = vec![
        OsStr::new("backup"),
        OsStr::new("--data"),
        data.as_os_str(),
        OsStr::new("--into"),
        into.as_os_str(),
    ];
    if let Some(b) = base {
        args.push(OsStr::new("--incremental-from"));
        args.push(b.as_os_str());
    }
    run(&args)
}

fn restore(chain: &[PathBuf], archive: Option<&Path>, into: &Path, extra: &[&str]) -> Out {
    let mut args: Vec<&OsStr> = vec![OsStr::new("restore")];
    for b in chain {
        args.push(OsStr::new("--backup"));
        args.push(b.as_os_str());
    }
    if let Some(a) = archive {
        args.push(OsStr::new("--archive"));
        args.push(a.as_os_str());
    }
    args.push(OsStr::new("--into"));
    args.push(into.as_os_str());
    args.extend(extra.iter().map(OsStr::new));
    run(&args)
}

/// What the drill left: two backups (a full one taken while a writer ran, an incremental
/// on it), an archive of everything, the write group's LSNs, and every write acknowledged.
struct Drill {
    t: duplex_testkit::TempDir,
    archive: PathBuf,
    b1: PathBuf,
    b2: PathBuf,
    lsns: Vec<u64>,
    last: u64,
    log: Log,
}

/// Writes, backs up online while a writer goes on, keeps writing (an incremental backup,
/// more writes, a write group), archives, and loses the data directory.
fn drill() -> Drill {
    let t = duplex_testkit::temp_dir();
    let (data, archive) = (t.path().join("data"), t.path().join("archive"));
    let db = Arc::new(Database::open(&data, cfg(&archive)).expect("open"));
    let log: Log = Arc::default();
    for i in 0..1500 {
        put(&db, &log, format!("a{i:05}"), format!("{i}").repeat(8));
    }
    db.checkpoint().expect("checkpoint");
    let stop = Arc::new(AtomicBool::new(false));
    let w = {
        let (db, log, stop) = (db.clone(), log.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut i = 0u32;
            while !stop.load(Ordering::Relaxed) {
                put(&db, &log, format!("w{:05}", i % 2000), format!("v{i}"));
                i += 1;
            }
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(30));
    let b1 = t.path().join("b1");
    let out = backup(&data, &b1, None);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(out.stdout.contains("restores on its own"), "{}", out.stdout);
    let acked_before = log.lock().expect("log").iter().map(|e| e.0).max();
    stop.store(true, Ordering::Relaxed);
    w.join().expect("writer");
    let m1 = manifest(&b1);
    assert!(
        m1.end_lsn > m1.checkpoint_lsn,
        "the WAL tail is in the backup"
    );
    // The backup ended after the writes acknowledged before it started copying, at least.
    assert!(acked_before.is_some_and(|a| a + 1 >= m1.checkpoint_lsn));

    // Keep writing; an incremental backup on b1; more writes.
    for i in 0..800 {
        put(&db, &log, format!("b{i:05}"), "y".repeat(20));
    }
    db.checkpoint().expect("checkpoint");
    for i in 0..200 {
        put(&db, &log, format!("c{i:05}"), "z".repeat(20));
    }
    let b2 = t.path().join("b2");
    let out = backup(&data, &b2, Some(&b1));
    assert_eq!(out.code, 0, "{}", out.all());
    for i in 0..300 {
        put(&db, &log, format!("d{i:05}"), "w".repeat(20));
    }
    let lsns = db
        .write_many(
            (0..4)
                .map(|i| {
                    let mut b = WriteBatch::new();
                    b.put(format!("g{i}"), format!("group{i}"));
                    b
                })
                .collect(),
        )
        .expect("write_many");
    for (i, lsn) in lsns.iter().enumerate() {
        log.lock().expect("log").push((
            *lsn,
            format!("g{i}").into_bytes(),
            format!("group{i}").into_bytes(),
        ));
    }
    let last = db.wal().last_lsn();
    db.wal().rotate().expect("rotate");
    db.wal().archive_closed().expect("archive");
    drop(db);
    // The data disk is lost.
    std::fs::remove_dir_all(&data).expect("lose the data directory");
    Drill {
        t,
        archive,
        b1,
        b2,
        lsns,
        last,
        log,
    }
}

#[test]
fn the_drill_backup_online_lose_the_disk_restore_alone_and_with_the_archive() {
    let d = drill();
    let (t, archive, b1, last, log) = (&d.t, &d.archive, &d.b1, d.last, &d.log);
    let m1 = manifest(b1);
    let out = run([OsStr::new("verify"), b1.as_os_str(), d.b2.as_os_str()]);
    assert_eq!(out.code, 0, "{}", out.all());

    // The backup alone: its end LSN, byte for byte.
    let into = t.path().join("alone");
    let out = restore(std::slice::from_ref(b1), None, &into, &[]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(
        out.stdout.contains(&format!(
            "restored the backup alone (no --archive): to LSN {}",
            m1.end_lsn
        )),
        "{}",
        out.stdout
    );
    let (c, l) = restored(&into);
    assert_eq!(l, m1.end_lsn);
    assert_eq!(c, model(log, m1.end_lsn));

    // Backup + archive: everything archived.
    let into = t.path().join("all");
    let out = restore(std::slice::from_ref(b1), Some(archive), &into, &[]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(!out.stdout.contains("backup alone"), "{}", out.stdout);
    let (c, l) = restored(&into);
    assert_eq!(l, last);
    assert_eq!(c, model(log, last));
}

#[test]
fn the_drill_with_an_incremental_chain_and_a_point_in_time_inside_a_write_group() {
    let d = drill();
    let (t, archive, last, log, lsns) = (&d.t, &d.archive, d.last, &d.log, &d.lsns);
    let m2 = manifest(&d.b2);
    // The incremental chain alone, and with the archive.
    let chain = [d.b1.clone(), d.b2.clone()];
    let into = t.path().join("chain-alone");
    let out = restore(&chain, None, &into, &[]);
    assert_eq!(out.code, 0, "{}", out.all());
    let (c, l) = restored(&into);
    assert_eq!(l, m2.end_lsn);
    assert_eq!(c, model(log, m2.end_lsn));
    let into = t.path().join("chain-all");
    let out = restore(&chain, Some(archive), &into, &[]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(restored(&into).0, model(log, last));

    // A point in time inside the write group: exactly the records up to it.
    let target = lsns[1];
    let into = t.path().join("pitr");
    let out = restore(
        &chain,
        Some(archive),
        &into,
        &["--until-lsn", &target.to_string()],
    );
    assert_eq!(out.code, 0, "{}", out.all());
    let (c, l) = restored(&into);
    assert_eq!(l, target);
    assert_eq!(c, model(log, target));
    assert!(c.contains_key(&b"g1"[..]) && !c.contains_key(&b"g2"[..]));

    // dump prints the records of a range inside the group.
    let out = run([
        OsStr::new("dump"),
        archive.as_os_str(),
        OsStr::new("--from"),
        OsStr::new(&lsns[1].to_string()),
        OsStr::new("--until"),
        OsStr::new(&lsns[2].to_string()),
    ]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(out.stdout.lines().count(), 2, "{}", out.stdout);
    assert!(
        out.stdout.contains("g1") && out.stdout.contains("g2"),
        "{}",
        out.stdout
    );
}

#[test]
fn verify_never_calls_a_half_written_backup_ok() {
    let t = duplex_testkit::temp_dir();
    let (data, archive) = (t.path().join("data"), t.path().join("archive"));
    let db = Database::open(&data, cfg(&archive)).expect("open");
    for i in 0..500 {
        db.put(format!("k{i}").as_bytes(), b"v").expect("put");
    }
    let b = t.path().join("b");
    let out = backup(&data, &b, None);
    assert_eq!(out.code, 0, "{}", out.all());
    // What a backup cut off before its manifest leaves (under any name).
    let half = t.path().join("half");
    std::fs::create_dir_all(&half).expect("mkdir");
    for e in std::fs::read_dir(&b).expect("list") {
        let p = e.expect("entry").path();
        if p.is_file() && p.file_name().is_some_and(|n| n != "BACKUP") {
            std::fs::copy(&p, half.join(p.file_name().expect("name"))).expect("copy");
        }
    }
    let out = run([OsStr::new("verify"), half.as_os_str()]);
    assert_ne!(out.code, 0, "{}", out.all());
    // A backup into a destination that cannot be written leaves nothing.
    let blocked = t.path().join("blocked");
    std::fs::write(&blocked, b"a file, not a directory").expect("write");
    let out = backup(&data, &blocked.join("b2"), None);
    assert_ne!(out.code, 0, "{}", out.all());
    assert!(!blocked.join("b2").exists() && !blocked.join("b2.tmp").exists());
    drop(db);
}

#[test]
fn dump_shows_epoch_records_and_restore_reports_nothing_lost() {
    let t = duplex_testkit::temp_dir();
    let (data, archive) = (t.path().join("data"), t.path().join("archive"));
    let db = Database::open(&data, cfg(&archive)).expect("open");
    db.put(b"a", b"1").expect("put");
    let e = db.log_epoch(42).expect("epoch");
    db.wal().rotate().expect("rotate");
    db.wal().archive_closed().expect("archive");
    drop(db);
    let out = run([
        OsStr::new("dump"),
        archive.as_os_str(),
        OsStr::new("--from"),
        OsStr::new(&e.to_string()),
    ]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(
        out.stdout.contains("kind=epoch") && out.stdout.contains("epoch=42"),
        "{}",
        out.stdout
    );
    let out = run([OsStr::new("verify"), archive.as_os_str()]);
    assert_eq!(out.code, 0, "{}", out.all());
}
