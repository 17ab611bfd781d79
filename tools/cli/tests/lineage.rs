//! `duplex-recover` and lineages: a restore starts a new timeline that shares the archive
//! root with the original; `verify` of an archive root reports one history per lineage, of
//! a backup with an archive checks that the archive holds the backup's lineage, of a data
//! directory checks duplexd's STATE file; a half-written backup never verifies OK.

mod common;

use std::ffi::OsStr;
use std::path::Path;

use common::run;
use duplex_engine::{Config, Database, SyncPolicy};

fn cfg(archive: &Path) -> Config {
    Config {
        archive_dir: Some(archive.to_path_buf()),
        segment_size: 64 << 10,
        sync: SyncPolicy::Never,
        ..Config::default()
    }
}

fn write(db: &Database, prefix: &str, n: u32) {
    for i in 0..n {
        db.put(
            format!("{prefix}{i:04}").as_bytes(),
            format!("{prefix} value {i} ").repeat(8).as_bytes(),
        )
        .expect("put");
    }
}

/// A STATE record as FORMAT.md section 27 lays it out.
fn state_bytes(state: u8, epoch: u64) -> Vec<u8> {
    let mut b = vec![0u8; 44];
    b[0..8].copy_from_slice(b"DPXSTATE");
    b[8..12].copy_from_slice(&1u32.to_le_bytes());
    b[12] = state;
    b[16..24].copy_from_slice(&epoch.to_le_bytes());
    b[24..32].copy_from_slice(&1u64.to_le_bytes());
    b[32..40].copy_from_slice(&1_700_000_000_000u64.to_le_bytes());
    let crc = crc32c::crc32c(&b[..40]);
    b[40..44].copy_from_slice(&crc.to_le_bytes());
    b
}

#[test]
fn a_restored_copy_is_a_new_lineage_that_verify_tells_apart() {
    let t = duplex_testkit::temp_dir();
    let p = |n: &str| t.path().join(n);
    let archive = p("archive");
    let orig = Database::open(p("orig"), cfg(&archive)).expect("open");
    write(&orig, "a", 800);
    orig.backup(&p("b1"), None).expect("backup");
    write(&orig, "b", 800);
    orig.backup(&p("b1-next"), None).expect("archive the rest");

    // Restored with the original's archive root: a new timeline.
    let out = run([
        OsStr::new("restore"),
        OsStr::new("--backup"),
        p("b1").as_os_str(),
        OsStr::new("--archive"),
        archive.as_os_str(),
        OsStr::new("--into"),
        p("copy").as_os_str(),
    ]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(out.all().contains("timeline: 2 "), "{}", out.all());
    // The copy runs on the same archive root, writes and backs up: n1-t2.
    let copy = Database::open(p("copy"), cfg(&archive)).expect("open copy");
    write(&copy, "c", 800);
    copy.backup(&p("b2"), None).expect("backup of the copy");
    copy.close().expect("close");
    write(&orig, "d", 800);
    orig.backup(&p("b3"), None)
        .expect("the original's next backup");
    orig.close().expect("close");

    let out = run([OsStr::new("verify"), archive.as_os_str()]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(
        out.all()
            .contains("n1-t1: one history of node 1, timeline 1,")
            && out
                .all()
                .contains("n1-t2: one history of node 1, timeline 2,"),
        "{}",
        out.all()
    );

    // A backup and the archive that continues it agree; the other lineage's does not.
    let out = run([
        OsStr::new("verify"),
        p("b2").as_os_str(),
        archive.as_os_str(),
    ]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(
        out.all().contains("timeline 2 (its archive: n1-t2)"),
        "{}",
        out.all()
    );
    let t1 = duplex_wal::archive_subdir(&archive, 1, 1);
    let out = run([OsStr::new("verify"), p("b2").as_os_str(), t1.as_os_str()]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(
        out.all().contains(
            "the backup is of node 1 timeline 2, but the archive given holds node 1 timeline 1"
        ),
        "{}",
        out.all()
    );

    // A backup of the copy restores from n1-t2 onto timeline 3.
    let out = run([
        OsStr::new("restore"),
        OsStr::new("--backup"),
        p("b2").as_os_str(),
        OsStr::new("--archive"),
        archive.as_os_str(),
        OsStr::new("--into"),
        p("copy2").as_os_str(),
    ]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(out.all().contains("timeline: 3 "), "{}", out.all());
    assert!(
        !out.all()
            .contains("warning: the archive also holds later timelines"),
        "{}",
        out.all()
    );

    // The original's backup again, now that n1-t2 (and n1-t3's folder, if any) exist: the
    // restore follows timeline 1 and says that the later ones are not in it.
    let out = run([
        OsStr::new("restore"),
        OsStr::new("--backup"),
        p("b1").as_os_str(),
        OsStr::new("--archive"),
        archive.as_os_str(),
        OsStr::new("--into"),
        p("copy3").as_os_str(),
    ]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(
        out.all()
            .contains("warning: the archive also holds later timelines of node 1 (n1-t2")
            && out.all().contains("followed timeline 1 only"),
        "{}",
        out.all()
    );
}

#[test]
fn verify_checks_the_state_file_and_refuses_half_written_backups() {
    let t = duplex_testkit::temp_dir();
    let p = |n: &str| t.path().join(n);
    let archive = p("archive");
    let db = Database::open(p("data"), cfg(&archive)).expect("open");
    write(&db, "a", 500);
    let m = db.backup(&p("b"), None).expect("backup").manifest;
    db.close().expect("close");

    std::fs::write(p("data").join("STATE"), state_bytes(5, 3)).expect("write STATE");
    let out = run([OsStr::new("verify"), p("data").as_os_str()]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(
        out.all().contains("fenced, fencing epoch 3, node 1"),
        "{}",
        out.all()
    );
    let mut bad = state_bytes(2, 3);
    bad[20] ^= 1;
    std::fs::write(p("data").join("STATE"), bad).expect("damage STATE");
    let out = run([OsStr::new("verify"), p("data").as_os_str()]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.all().contains("STATE is damaged"), "{}", out.all());

    // What a backup cut off at each step leaves, under its final name or as *.tmp.
    let steps: [&[&str]; 4] = [
        &[],
        &["BACKUP"],
        &["BACKUP", "MANIFEST"],
        &["BACKUP", "MANIFEST"],
    ];
    for (i, drop) in steps.iter().enumerate() {
        for name in [format!("half{i}"), format!("half{i}.tmp")] {
            if drop.is_empty() && !name.ends_with(".tmp") {
                // Whole and published: that one is a backup.
                continue;
            }
            let dir = p(&name);
            duplex_testkit::copy_tree(&p("b"), &dir).expect("copy");
            for f in *drop {
                std::fs::remove_file(dir.join(f)).expect("remove");
            }
            if i == 3 {
                // Only the store was written.
                for f in &m.files {
                    if f.name.ends_with(".wal") {
                        std::fs::remove_file(dir.join(&f.name)).expect("remove");
                    }
                }
            }
            let out = run([OsStr::new("verify"), dir.as_os_str()]);
            assert_ne!(out.code, 0, "{name} verified OK: {}", out.all());
            assert!(
                out.all().contains("not a complete backup"),
                "{name}: {}",
                out.all()
            );
        }
    }
}
