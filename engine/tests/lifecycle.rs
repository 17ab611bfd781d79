//! Lifecycle on the real file system: the lock file, WAL segments released by
//! checkpoints, background checkpoints, and compaction that keeps old files alive for
//! snapshots that still read them.

use std::ops::Bound;
use std::time::{Duration, Instant};

use duplex_engine::{Config, Database, Error, WriteBatch};

fn value(i: u32, round: u32) -> Vec<u8> {
    format!("value-{i}-{round}-")
        .repeat(1 + (i % 5) as usize)
        .into_bytes()
}

#[test]
fn a_second_open_of_a_directory_is_refused_until_the_first_closes() {
    let dir = duplex_testkit::temp_dir();
    let db = Database::open(dir.path(), Config::default()).expect("open");
    let err = Database::open(dir.path(), Config::default()).expect_err("locked");
    assert!(matches!(err, Error::Locked { .. }), "{err}");
    assert!(err.to_string().contains("already open"), "{err}");
    db.close().expect("close");
    Database::open(dir.path(), Config::default()).expect("open after close");
}

#[test]
fn checkpoints_release_wal_segments_and_run_in_the_background() {
    let dir = duplex_testkit::temp_dir();
    let cfg = Config {
        segment_size: 64 << 10,
        checkpoint_wal_bytes: 256 << 10,
        ..Config::default()
    };
    let db = Database::open(dir.path(), cfg.clone()).expect("open");
    for round in 0..3u32 {
        let mut b = WriteBatch::new();
        for i in 0..3000u32 {
            b.put(format!("k{i:05}"), value(i, round));
        }
        db.write(b).expect("batch");
    }
    // The background thread notices the WAL passed its threshold and checkpoints.
    let start = Instant::now();
    while db.stats().checkpoints == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no background checkpoint"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    db.checkpoint().expect("checkpoint");
    let stats = db.stats();
    assert_eq!(stats.checkpoint_lsn, stats.last_lsn);
    let segs = db.wal().segments();
    assert!(
        segs.iter().all(|s| !s.closed),
        "closed segments below the checkpoint must be released: {segs:?}"
    );
    db.close().expect("close");
    let db = Database::open(dir.path(), cfg).expect("reopen");
    assert_eq!(db.get(b"k02999").expect("get"), Some(value(2999, 2)));
}

#[test]
fn compaction_keeps_the_old_file_for_open_snapshots_then_deletes_it() {
    let dir = duplex_testkit::temp_dir();
    let cfg = Config {
        background: false,
        ..Config::default()
    };
    let db = Database::open(dir.path(), cfg).expect("open");
    for round in 0..4u32 {
        for i in 0..500u32 {
            db.put(format!("k{i:04}").as_bytes(), &value(i, round))
                .expect("put");
        }
        db.checkpoint().expect("checkpoint");
    }
    let before = db.stats();
    assert!(before.live_bytes < before.store_bytes / 2, "{before:?}");
    let snap = db.snapshot();
    let old = dir
        .path()
        .join(format!("store-{:06}.dpx", before.generation));
    db.compact().expect("compact");
    let after = db.stats();
    assert_eq!(after.generation, before.generation + 1);
    assert!(
        after.store_bytes < before.store_bytes / 2,
        "{before:?} -> {after:?}"
    );
    // Writes go on; the snapshot still reads the old generation, which still exists.
    db.put(b"k0000", b"new").expect("put");
    assert!(old.exists());
    assert_eq!(snap.get(b"k0000").expect("get"), Some(value(0, 3)));
    assert_eq!(
        snap.scan(Bound::Unbounded, Bound::Unbounded)
            .expect("scan")
            .count(),
        500
    );
    drop(snap);
    assert!(
        !old.exists(),
        "the retired generation is deleted with its last reader"
    );
    assert_eq!(db.get(b"k0000").expect("get"), Some(b"new".to_vec()));
    assert_eq!(db.get(b"k0499").expect("get"), Some(value(499, 3)));
}

/// `Snapshot::get_with` hands out the same value `get` copies, from every layer: the
/// memtable, the tree after a checkpoint (small values inline, large ones in value blocks),
/// a deletion on top of the tree, and a key never written.
#[test]
fn get_with_borrows_what_get_copies_from_every_layer() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path(), Config::default()).unwrap();
    let big = vec![9u8; 10_000];
    db.put(b"small", b"in the tree").unwrap();
    db.put(b"big", &big).unwrap();
    db.put(b"gone", b"deleted later").unwrap();
    db.checkpoint().unwrap();
    db.put(b"fresh", b"in the memtable").unwrap();
    db.delete(b"gone").unwrap();
    let snap = db.snapshot();
    for k in [&b"small"[..], b"big", b"gone", b"fresh", b"never"] {
        let borrowed = snap.get_with(k, |v| v.map(<[u8]>::to_vec)).unwrap();
        assert_eq!(
            borrowed,
            snap.get(k).unwrap(),
            "{}",
            String::from_utf8_lossy(k)
        );
    }
    assert_eq!(
        snap.get_with(b"big", |v| v.map(<[u8]>::len)).unwrap(),
        Some(10_000)
    );
    assert!(snap.get_with(b"gone", |v| v.is_none()).unwrap());
    assert_eq!(
        snap.get_with(b"fresh", |v| v.map(<[u8]>::to_vec)).unwrap(),
        Some(b"in the memtable".to_vec())
    );
}
