//! The restore drill (`drill_backup`): a backup taken while a writer goes on, restored and
//! rolled forward to its end LSN, equals the live snapshot taken at exactly that LSN,
//! version for version; compared with a later state it names the first key that differs;
//! a backup whose file was damaged fails the drill with the file named.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use std::ops::Bound;

use duplex_engine::{drill_backup, first_difference, BackupOptions, Config, Database, DrillSpec};
use duplex_wal::{StdStorage, Storage};

fn config(archive: PathBuf) -> Config {
    Config {
        node_id: 4,
        archive_dir: Some(archive),
        ..Config::default()
    }
}

#[test]
fn a_backup_restored_equals_the_live_snapshot_at_its_end_lsn() {
    let t = tempfile::tempdir().unwrap();
    let storage: Arc<dyn Storage> = Arc::new(StdStorage);
    let db = Database::open(t.path().join("data"), config(t.path().join("archive"))).unwrap();
    for i in 0..2_000u32 {
        db.put(format!("k{i:05}").as_bytes(), &i.to_le_bytes().repeat(20))
            .unwrap();
    }
    for i in (0..2_000u32).step_by(7) {
        db.delete(format!("k{i:05}").as_bytes()).unwrap();
    }
    db.checkpoint().unwrap();
    let stop = AtomicBool::new(false);
    let (report, written) = std::thread::scope(|s| {
        let w = s.spawn(|| {
            let mut n = 0u32;
            while !stop.load(Ordering::Relaxed) {
                db.put(format!("w{n:06}").as_bytes(), b"during the backup")
                    .unwrap();
                n += 1;
            }
            n
        });
        let opts = BackupOptions {
            snapshot_at_end: true,
            ..BackupOptions::default()
        };
        let r = db.backup_with(&t.path().join("b1"), None, &opts).unwrap();
        stop.store(true, Ordering::Relaxed);
        (r, w.join().unwrap())
    });
    assert!(written > 0, "the writer wrote during the backup");
    let live = report.snapshot.as_ref().expect("a snapshot at the end LSN");
    let chain = [report.dir.clone()];
    let archive = [t.path().join("archive")];
    let scratch = t.path().join(".drill");
    let spec = DrillSpec {
        chain: &chain,
        archive: &archive,
        scratch: &scratch,
        node_id: 4,
        until: None,
        live: Some(live),
    };
    let d = drill_backup(&storage, &spec).unwrap();
    assert_eq!(d.lsn, report.manifest.end_lsn);
    assert!(d.passed(), "{d:?}");
    assert_eq!(d.first_difference, None);
    assert!(!t.path().join(".drill").exists(), "scratch removed");

    // Compared with the state after more writes, the drill fails and names the first key
    // the backup does not hold.
    db.put(b"a-later-key", b"x").unwrap();
    let later = db.snapshot();
    let alone = DrillSpec {
        archive: &[],
        ..spec
    };
    let d = drill_backup(
        &storage,
        &DrillSpec {
            live: Some(&later),
            ..alone
        },
    )
    .unwrap();
    assert!(!d.passed());
    assert_eq!(d.first_difference.as_deref(), Some(&b"a-later-key"[..]));

    // A damaged store part: the drill fails with the file named.
    let part = std::fs::read_dir(&report.dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "dpx"))
        .expect("store part");
    let mut bytes = std::fs::read(&part).unwrap();
    bytes[100] ^= 0xff;
    std::fs::write(&part, bytes).unwrap();
    let e = drill_backup(&storage, &alone).expect_err("a damaged backup fails the drill");
    assert!(e.to_string().contains(".dpx"), "{e}");
    db.close().unwrap();
}

/// A version reclaimed on one side (a tombstone of the value's own stamp) is the same
/// version to the drill's comparison; any other change is a difference.
#[test]
fn a_reclaimed_version_is_no_difference() {
    let t = tempfile::tempdir().unwrap();
    let db = Database::open(t.path().join("data"), config(t.path().join("archive"))).unwrap();
    db.put(b"expired", b"value").unwrap();
    db.put(b"kept", b"value").unwrap();
    let before = db.snapshot();
    let stamp = before.version(b"expired").unwrap().unwrap().stamp;
    db.reclaim(vec![(b"expired".to_vec(), stamp)]).unwrap();
    let after = db.snapshot();
    assert_eq!(after.get(b"expired").unwrap(), None);
    assert_ne!(
        before
            .stamped_digest(Bound::Unbounded, Bound::Unbounded)
            .unwrap(),
        after
            .stamped_digest(Bound::Unbounded, Bound::Unbounded)
            .unwrap()
    );
    assert_eq!(first_difference(&before, &after).unwrap(), None);
    assert_eq!(first_difference(&after, &before).unwrap(), None);
    db.put(b"kept", b"changed").unwrap();
    assert_eq!(
        first_difference(&before, &db.snapshot())
            .unwrap()
            .as_deref(),
        Some(&b"kept"[..])
    );
    db.close().unwrap();
}
