//! A restored copy is a new lineage: a restore starts a new WAL timeline, which the
//! restored database keeps at every later open; the original and its restored copy share
//! one archive root without meeting (`n1-t1`, `n1-t2`); backups record their lineage and
//! restore from their own archive; retention prunes each lineage's archive and nobody
//! else's.

mod common;

use std::path::{Path, PathBuf};

use common::{cfg, contents, storage, Contents};
use duplex_engine::backup::read_backup_manifest;
use duplex_engine::{
    apply_retention, restore_chain, roll_forward, Database, RollForwardOptions, RollForwardReport,
};
use duplex_wal::{archive_subdir, check_archive};

fn write(db: &Database, prefix: &str, n: u32) {
    for i in 0..n {
        db.put(
            format!("{prefix}{i:04}").as_bytes(),
            format!("{prefix}-value-{i}-{}", "x".repeat(64)).as_bytes(),
        )
        .expect("put");
    }
}

/// Restores `backup` into `into`, rolling `archive` forward with the configuration of a
/// server archiving into the same root.
fn restore(backup: &Path, into: &Path, archive: &Path) -> RollForwardReport {
    restore_chain(&storage(), &[backup.to_path_buf()], into).expect("restore");
    roll_forward(
        storage(),
        into,
        &[archive.to_path_buf()],
        &RollForwardOptions {
            config: cfg(archive),
            ..RollForwardOptions::default()
        },
        &mut |_| {},
    )
    .expect("roll forward")
}

fn restored_contents(dir: &Path, archive: &Path) -> (Contents, u64) {
    let db = Database::open(dir, cfg(archive)).expect("open restored");
    let c = contents(&db);
    let t = db.wal().options().timeline;
    db.close().expect("close");
    (c, t)
}

#[test]
fn a_restored_copy_archives_beside_its_original_on_a_timeline_of_its_own() {
    let t = duplex_testkit::temp_dir();
    let archive = t.path().join("archive");
    let (orig_dir, copy_dir) = (t.path().join("orig"), t.path().join("copy"));
    let orig = Database::open(&orig_dir, cfg(&archive)).expect("open original");
    assert_eq!(orig.wal().options().timeline, 1);
    write(&orig, "a", 1500);
    let b1 = t.path().join("b1");
    let m1 = orig.backup(&b1, None).expect("backup").manifest;
    assert_eq!((m1.node_id, m1.timeline), (1, 1));
    write(&orig, "b", 1500);
    orig.backup(&t.path().join("b1-bis"), None)
        .expect("archive the original");

    // The restore starts timeline 2, read from the original's archive n1-t1.
    let r = restore(&b1, &copy_dir, &archive);
    assert_eq!((r.from_timeline, r.timeline), (1, 2));
    // Started with the SAME archive root, with the default timeline: it stays on 2.
    let copy = Database::open(&copy_dir, cfg(&archive)).expect("open copy");
    assert_eq!(copy.wal().options().timeline, 2);
    write(&copy, "c", 1500);
    let b2 = t.path().join("b2");
    let m2 = copy.backup(&b2, None).expect("backup of the copy").manifest;
    assert_eq!((m2.node_id, m2.timeline), (1, 2));
    let copy_state = contents(&copy);
    copy.close().expect("close copy");

    // The original goes on archiving and backing up into n1-t1, without conflict.
    write(&orig, "d", 1500);
    let b3 = t.path().join("b3");
    let m3 = orig
        .backup(&b3, None)
        .expect("the original's next backup")
        .manifest;
    assert_eq!(m3.timeline, 1);
    let orig_state = contents(&orig);
    orig.close().expect("close original");

    let report = check_archive(storage(), &archive).expect("one history per lineage");
    let found: Vec<(PathBuf, u64, Vec<u64>)> = report
        .histories
        .iter()
        .map(|h| (h.dir.clone(), h.node_id, h.timelines.clone()))
        .collect();
    assert_eq!(
        found,
        vec![
            (archive_subdir(&archive, 1, 1), 1, vec![1]),
            (archive_subdir(&archive, 1, 2), 1, vec![2]),
        ]
    );

    // A backup of the restored copy restores (timeline 3) from n1-t2.
    let r2 = restore(&b2, &t.path().join("copy2"), &archive);
    assert_eq!((r2.from_timeline, r2.timeline), (2, 3));
    let (c2, tl2) = restored_contents(&t.path().join("copy2"), &archive);
    assert_eq!(tl2, 3);
    assert_eq!(
        c2, copy_state,
        "the copy's backup restores the copy's writes"
    );

    // The original's backup still restores from n1-t1, onto a timeline no one has used.
    let r3 = restore(&b3, &t.path().join("orig2"), &archive);
    assert_eq!((r3.from_timeline, r3.timeline), (1, 4));
    let (c3, tl3) = restored_contents(&t.path().join("orig2"), &archive);
    assert_eq!(tl3, 4);
    assert_eq!(c3, orig_state, "the original's writes, none of the copy's");

    // The restored copy reopened later still writes timeline 2.
    let (_, tl) = restored_contents(&copy_dir, &archive);
    assert_eq!(tl, 2);
    check_archive(storage(), &archive).expect("still one history per lineage");
}

#[test]
fn retention_prunes_each_lineage_in_its_own_archive_directory() {
    let t = duplex_testkit::temp_dir();
    let archive = t.path().join("archive");
    let backups = t.path().join("backups");
    std::fs::create_dir_all(&backups).expect("mkdir");
    let orig = Database::open(t.path().join("orig"), cfg(&archive)).expect("open");
    write(&orig, "a", 1500);
    orig.backup(&backups.join("o1"), None).expect("o1");
    write(&orig, "b", 1500);
    orig.backup(&backups.join("o2"), None).expect("o2");
    let copy_dir = t.path().join("copy");
    restore(&backups.join("o1"), &copy_dir, &archive);
    let copy = Database::open(&copy_dir, cfg(&archive)).expect("open copy");
    write(&copy, "c", 1500);
    copy.backup(&backups.join("c1"), None).expect("c1");
    write(&copy, "e", 1500);
    copy.backup(&backups.join("c2"), None).expect("c2");
    write(&orig, "d", 1500);
    orig.backup(&backups.join("o3"), None).expect("o3");
    let (orig_state, copy_state) = (contents(&orig), contents(&copy));
    orig.close().expect("close");
    copy.close().expect("close");

    let r = apply_retention(&*storage(), &backups, Some(&archive), 1).expect("retention");
    let mut removed = r.backups_removed.clone();
    removed.sort();
    assert_eq!(
        removed,
        vec![backups.join("c1"), backups.join("o1"), backups.join("o2")],
        "each lineage keeps its newest backup"
    );
    assert!(!r.segments_removed.is_empty(), "old segments were pruned");
    let (t1, t2) = (
        archive_subdir(&archive, 1, 1),
        archive_subdir(&archive, 1, 2),
    );
    let o3 = read_backup_manifest(&*storage(), &backups.join("o3")).expect("o3");
    let c2 = read_backup_manifest(&*storage(), &backups.join("c2")).expect("c2");
    for p in &r.segments_removed {
        let first: u64 = p
            .file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| s.parse().ok())
            .expect("segment name");
        let dir = p.parent().expect("parent");
        assert!(
            dir == t1 || dir == t2,
            "{} outside the two lineages",
            p.display()
        );
        let kept = if dir == t1 { &o3 } else { &c2 };
        assert!(
            first <= kept.checkpoint_lsn,
            "{} is still needed",
            p.display()
        );
    }
    // Both kept backups still restore from what is left of their own archive.
    restore(&backups.join("o3"), &t.path().join("r-orig"), &archive);
    assert_eq!(
        restored_contents(&t.path().join("r-orig"), &archive).0,
        orig_state
    );
    restore(&backups.join("c2"), &t.path().join("r-copy"), &archive);
    assert_eq!(
        restored_contents(&t.path().join("r-copy"), &archive).0,
        copy_state
    );
    check_archive(storage(), &archive).expect("the archive is still whole");
}
