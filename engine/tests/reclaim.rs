//! `Database::reclaim`: a version the caller can never read again becomes a tombstone with
//! the version's own stamp, in memory; a newer version is never touched; a checkpoint
//! keeps the tombstone; a crash before it brings the original version back from the WAL.

use duplex_engine::{Config, Database};

fn open(dir: &std::path::Path) -> Database {
    Database::open(
        dir,
        Config {
            background: false,
            ..Config::default()
        },
    )
    .expect("open")
}

#[test]
fn reclaim_reuses_the_stamp_and_never_deletes_a_newer_version() {
    let t = duplex_testkit::temp_dir();
    let dir = t.path().join("db");
    let db = open(&dir);
    db.put(b"old", b"expired").expect("put");
    db.put(b"kept", b"v1").expect("put");
    let old = db.version(b"old").expect("version").expect("old");
    let stale = db.version(b"kept").expect("version").expect("kept");
    db.put(b"kept", b"v2").expect("put");
    let n = db
        .reclaim(vec![
            (b"old".to_vec(), old.stamp),
            (b"kept".to_vec(), stale.stamp),
            (b"absent".to_vec(), old.stamp),
        ])
        .expect("reclaim");
    assert_eq!(n, 3);
    let v = db.version(b"old").expect("version").expect("tombstone");
    assert_eq!((v.stamp, v.value), (old.stamp, None));
    assert_eq!(db.get(b"kept").expect("get").as_deref(), Some(&b"v2"[..]));
    assert_eq!(db.version(b"absent").expect("version"), None);
    // Nothing was logged: after a crash (no close, no checkpoint) the version is back.
    let last = db.wal().last_lsn();
    drop(db);
    let db = open(&dir);
    assert_eq!(db.wal().last_lsn(), last);
    assert_eq!(
        db.get(b"old").expect("get").as_deref(),
        Some(&b"expired"[..])
    );
    // Reclaimed again and checkpointed: the tombstone is what a reopen finds.
    db.reclaim(vec![(b"old".to_vec(), old.stamp)])
        .expect("reclaim");
    db.checkpoint().expect("checkpoint");
    drop(db);
    let db = open(&dir);
    let v = db.version(b"old").expect("version").expect("tombstone");
    assert_eq!((v.stamp, v.value), (old.stamp, None));
}
