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

#[test]
fn retention_keeps_what_a_peer_still_needs_up_to_its_bound() {
    use duplex_engine::{apply_retention_for_peers, PeerFloor};
    let run = |floor_lsn: Option<u64>, max_bytes: u64| {
        let sim = SimStorage::new();
        let db = open(&sim);
        sim.create_dir_all(Path::new("/backups")).expect("dir");
        for b in 0..3u32 {
            for i in 0..400u32 {
                db.put(format!("k{i:04}").as_bytes(), &[b as u8; 100])
                    .expect("put");
            }
            db.backup(&PathBuf::from(format!("/backups/b{b}")), None)
                .expect("backup");
            std::thread::sleep(std::time::Duration::from_millis(3));
        }
        let floor = floor_lsn.map(|lsn| PeerFloor {
            node: db.node_id(),
            timeline: db.incarnation(),
            lsn,
            max_bytes,
        });
        let r = apply_retention_for_peers(
            &sim,
            Path::new("/backups"),
            Some(Path::new("/archive")),
            1,
            floor,
        )
        .expect("retention");
        let left = duplex_wal::list_segments(&sim, &["/archive".into()]).expect("list");
        (r, left.first().map_or(0, |s| s.0))
    };
    let (plain, plain_first) = run(None, 0);
    assert!(!plain.segments_removed.is_empty() && !plain.peer_floor_dropped);
    // A peer that acknowledged only up to LSN 10 keeps the archive from there on.
    let (kept, kept_first) = run(Some(10), u64::MAX);
    assert!(
        kept_first <= 11 && kept_first < plain_first,
        "{kept_first} vs {plain_first}"
    );
    assert!(kept.segments_removed.len() < plain.segments_removed.len());
    assert!(!kept.peer_floor_dropped);
    // Past the bound the archive is pruned as if no peer needed it, and the report says so.
    let (dropped, dropped_first) = run(Some(10), 1);
    assert!(dropped.peer_floor_dropped);
    assert_eq!(dropped_first, plain_first);
}

/// A roll-forward cut by a power loss at any point, then run again, ends in exactly the
/// state of the live database: chunks merged before the cut stay (the manifest names their
/// checkpoint), a half-written store generation is discarded, and the rest is applied.
#[test]
fn a_roll_forward_cut_by_a_power_loss_resumes_to_the_same_state() {
    use duplex_engine::{restore_chain, roll_forward, Error, RollForwardOptions};
    let sim = SimStorage::new();
    let storage: Arc<dyn Storage> = Arc::new(sim.clone());
    let db = open(&sim);
    let put = |db: &Database, i: u32| {
        let k = format!("k{:04}", (i * 7919) % 1500);
        if i.is_multiple_of(13) {
            db.delete(k.as_bytes()).expect("delete");
        } else {
            // Some values are stored outside the leaves (over 1 KiB).
            let len = if i.is_multiple_of(5) { 1500 } else { 60 };
            db.put(k.as_bytes(), &vec![(i % 251) as u8; len])
                .expect("put");
        }
    };
    for i in 0..600u32 {
        put(&db, i);
    }
    db.checkpoint().expect("checkpoint");
    sim.create_dir_all(Path::new("/backups")).expect("dir");
    db.backup(Path::new("/backups/b"), None).expect("backup");
    for i in 600..2400u32 {
        put(&db, i);
    }
    db.wal().rotate().expect("rotate");
    db.wal().archive_closed().expect("archive");
    let live = db.digest().expect("digest");
    let last = db.wal().last_lsn();
    drop(db);
    let opts = RollForwardOptions {
        config: Config {
            archive_dir: None,
            ..cfg()
        },
        // Many chunks: the cut lands between chunk checkpoints as well as inside them.
        chunk_bytes: 24 << 10,
        ..RollForwardOptions::default()
    };
    let mut cut = 0;
    for ops in (1..1200).step_by(23) {
        let into = PathBuf::from(format!("/r{ops}"));
        restore_chain(&storage, &[PathBuf::from("/backups/b")], &into).expect("restore");
        sim.power_off_after(ops);
        let first = roll_forward(
            storage.clone(),
            &into,
            &["/archive".into()],
            &opts,
            &mut |_| {},
        );
        sim.crash(CrashMode::Torn { seed: ops });
        if first.is_err() {
            cut += 1;
            match roll_forward(
                storage.clone(),
                &into,
                &["/archive".into()],
                &opts,
                &mut |_| {},
            ) {
                Ok(r) => assert_eq!(r.to_lsn, last, "ops={ops}"),
                // Cut after the tree was complete and the new WAL begun: nothing is left to do.
                Err(Error::Config(m)) if m.contains("already has WAL segments") => {}
                Err(e) => panic!("ops={ops}: the second roll-forward failed: {e}"),
            }
        }
        let restored = Database::open_with(storage.clone(), &into, opts.config.clone())
            .unwrap_or_else(|e| panic!("ops={ops}: open after the roll-forward: {e}"));
        assert_eq!(restored.digest().expect("digest"), live, "ops={ops}");
        assert_eq!(restored.wal().last_lsn(), last, "ops={ops}");
    }
    assert!(cut > 10, "only {cut} runs were cut");
}
