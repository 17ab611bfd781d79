//! Backups under simulated power loss, and retention of backups and their archive.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use duplex_engine::{apply_retention, verify_backup, Config, Database};
use duplex_wal::sim::{CrashMode, SimStorage};
use duplex_wal::Storage;

fn cfg() -> Config {
    Config {
        background: false,
        segment_size: 16 << 10,
        archive_dir: Some("/archive".into()),
        ..Config::default()
    }
}

fn open(sim: &SimStorage) -> Database {
    Database::open_with(Arc::new(sim.clone()), "/db", cfg()).expect("open")
}

#[test]
fn a_crash_during_a_backup_never_leaves_a_directory_that_looks_whole() {
    let mut completed = 0;
    for ops in (1..400).step_by(7) {
        let sim = SimStorage::new();
        let db = open(&sim);
        for i in 0..300u32 {
            db.put(format!("k{i:04}").as_bytes(), &[i as u8; 200])
                .expect("put");
        }
        sim.create_dir_all(Path::new("/backups")).expect("dir");
        sim.power_off_after(ops);
        let res = db.backup(Path::new("/backups/b1"), None);
        drop(db);
        sim.crash(CrashMode::Torn { seed: ops });
        if sim.exists(Path::new("/backups/b1")) {
            let m = verify_backup(&sim, Path::new("/backups/b1")).unwrap_or_else(|e| {
                panic!("ops={ops}: a backup under its final name must verify: {e}")
            });
            assert!(m.committed_len > 0);
            completed += 1;
        } else {
            assert!(
                res.is_err(),
                "ops={ops}: reported success but the backup is gone"
            );
        }
        // The database itself survives the crash.
        let db = open(&sim);
        assert_eq!(db.get(b"k0299").expect("get"), Some(vec![43u8; 200]));
    }
    assert!(completed > 0, "no run got far enough to complete a backup");
}

#[test]
fn retention_keeps_the_newest_backups_and_the_archive_they_need() {
    let sim = SimStorage::new();
    let db = open(&sim);
    sim.create_dir_all(Path::new("/backups")).expect("dir");
    let mut lsns = Vec::new();
    for b in 0..4u32 {
        for i in 0..400u32 {
            db.put(format!("k{i:04}").as_bytes(), &[b as u8; 100])
                .expect("put");
        }
        let r = db
            .backup(&PathBuf::from(format!("/backups/b{b}")), None)
            .expect("backup");
        lsns.push(r.manifest.checkpoint_lsn);
        // Distinct creation times order the backups.
        std::thread::sleep(std::time::Duration::from_millis(3));
    }
    let before = duplex_wal::list_segments(&sim, &["/archive".into()]).expect("list");
    let r = apply_retention(&sim, Path::new("/backups"), Some(Path::new("/archive")), 2)
        .expect("retention");
    assert_eq!(
        r.backups_removed,
        vec![PathBuf::from("/backups/b0"), PathBuf::from("/backups/b1")]
    );
    assert!(!r.segments_removed.is_empty());
    assert!(!sim.exists(Path::new("/backups/b0")));
    verify_backup(&sim, Path::new("/backups/b2")).expect("kept");
    // Every record from the oldest kept backup's checkpoint on is still archived.
    let after = duplex_wal::list_segments(&sim, &["/archive".into()]).expect("list");
    assert!(after.len() < before.len());
    assert!(
        after[0].0 <= lsns[2] + 1,
        "archive starts at {} > {}",
        after[0].0,
        lsns[2] + 1
    );
    let reader = duplex_wal::WalReader::open(
        Arc::new(sim.clone()),
        &["/archive".into()],
        lsns[2] + 1,
        duplex_wal::ReadOptions::default(),
    )
    .expect("the archive covers the kept backups");
    assert!(reader.count() as u64 >= lsns[3] - lsns[2]);
}
