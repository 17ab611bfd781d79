//! FLUSHDB/FLUSHALL under replication (issue 15): a flush is one stamped marker ordered by
//! last-writer-wins. In process, two engines exchange their change feeds by hand, so a
//! write stamped before a flush can be made to arrive after it; then two real `duplexd`
//! servers flush, write and converge; and a backup restored and rolled forward over the
//! archive keeps the flush and the expiry times.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::cluster::{conn, converge, digest_count, mesh, secret_file, wait_for, CONVERGE};
use duplex_engine::{Config, Database, FeedCursor, RemoteBatch, WriteBatch};
use duplex_server::keyspace::{marker_key, stored_key, Entry, Reader};
use duplex_wal::ManualClock;

fn open(dir: &std::path::Path, node: u64, clock: Arc<ManualClock>) -> Database {
    Database::open(
        dir,
        Config {
            node_id: node,
            background: false,
            clock,
            ..Config::default()
        },
    )
    .unwrap()
}

/// Sends every batch of `from` after `after` to `to`; returns the new position.
fn ship(from: &Database, to: &Database, after: u64) -> u64 {
    let got = FeedCursor::new().read(from, after, 1000, 1 << 20).unwrap();
    let Some(last) = got.last().map(|f| f.origin_lsn) else {
        return after;
    };
    let batches: Vec<RemoteBatch<'_>> = got
        .iter()
        .map(|f| RemoteBatch {
            origin_lsn: f.origin_lsn,
            prev_origin_lsn: f.prev_origin_lsn,
            stamp: f.stamp,
            payload: &f.payload,
        })
        .collect();
    let rep = to.apply_remote(from.node_id(), &batches).unwrap();
    assert_eq!(rep.refused, None);
    last
}

fn read(db: &Database, key: &str) -> Option<Vec<u8>> {
    Reader::new(db.snapshot(), 0)
        .get(0, key.as_bytes())
        .unwrap()
        .map(|e| e.data)
}

fn put(db: &Database, key: &str, v: &str) {
    db.put(
        &stored_key(0, key.as_bytes()),
        &Entry::plain(v.into()).encode(),
    )
    .unwrap();
}

#[test]
fn a_write_stamped_before_a_flush_is_hidden_even_when_it_arrives_after_it() {
    let t = duplex_testkit::temp_dir();
    let (ca, cb) = (
        Arc::new(ManualClock::new(1_000_000)),
        Arc::new(ManualClock::new(1_000_000)),
    );
    let a = open(&t.path().join("a"), 1, ca.clone());
    let b = open(&t.path().join("b"), 2, cb.clone());
    // A writes at 1000.000 s; B flushes at 1000.500 s without having seen it.
    put(&a, "early", "1");
    cb.set(1_000_500);
    put(&b, "b-before", "x");
    let mut flush = WriteBatch::new();
    flush.put(marker_key(0).to_vec(), vec![0]);
    b.write(flush).unwrap();
    assert_eq!(read(&b, "b-before"), None);
    // A's earlier write reaches B after the flush: hidden there too.
    let pa = ship(&a, &b, 0);
    assert_eq!(
        read(&b, "early"),
        None,
        "an older write survived a newer flush"
    );
    // The flush reaches A: A's own earlier write goes.
    let pb = ship(&b, &a, 0);
    assert_eq!(read(&a, "early"), None);
    assert_eq!(read(&a, "b-before"), None);
    // A writes after it has seen the flush (its clock is behind B's: the HLC stamps the
    // write after the flush anyway): it survives everywhere.
    put(&a, "late", "2");
    ship(&a, &b, pa);
    assert_eq!(read(&a, "late").as_deref(), Some(&b"2"[..]));
    assert_eq!(read(&b, "late").as_deref(), Some(&b"2"[..]));
    // Same stored versions on both, flush marker included.
    ship(&b, &a, pb);
    assert_eq!(
        a.stamped_digest(std::ops::Bound::Unbounded, std::ops::Bound::Unbounded)
            .unwrap(),
        b.stamped_digest(std::ops::Bound::Unbounded, std::ops::Bound::Unbounded)
            .unwrap()
    );
}

fn dbsize(port: u16, db: u8) -> i64 {
    let mut c = conn(port);
    let _: () = redis::cmd("SELECT").arg(db).query(&mut c).unwrap();
    redis::cmd("DBSIZE").query(&mut c).unwrap()
}

#[test]
fn flushes_replicate_and_later_writes_survive_them_on_both_servers() {
    let t = duplex_testkit::temp_dir();
    let secret = secret_file(t.path(), "secret", "factory-floor-secret");
    let nodes = mesh(t.path(), 2, &secret);
    let _ds: Vec<_> = nodes.iter().map(|n| n.start()).collect();
    let (p1, p2) = (nodes[0].port, nodes[1].port);
    let mut c1 = conn(p1);
    let mut c2 = conn(p2);
    for i in 0..50 {
        let _: () = redis::cmd("SET")
            .arg(format!("one{i}"))
            .arg(i)
            .query(&mut c1)
            .unwrap();
        let _: () = redis::cmd("SET")
            .arg(format!("two{i}"))
            .arg(i)
            .query(&mut c2)
            .unwrap();
    }
    let _: () = redis::cmd("SELECT").arg(4).query(&mut c2).unwrap();
    let _: () = redis::cmd("SET")
        .arg("four")
        .arg("4")
        .query(&mut c2)
        .unwrap();
    converge(&[p1, p2], CONVERGE);
    assert_eq!(dbsize(p1, 0), 100);
    assert_eq!(dbsize(p1, 4), 1);
    // FLUSHDB on server 2 (database 4) and FLUSHALL on server 1, then a write on each.
    let _: () = redis::cmd("FLUSHDB").query(&mut c2).unwrap();
    let _: () = redis::cmd("FLUSHALL").query(&mut c1).unwrap();
    wait_for("the flush on server 2", Duration::from_secs(20), || {
        dbsize(p2, 0) == 0
    });
    let _: () = redis::cmd("SET")
        .arg("after")
        .arg("2")
        .query(&mut c2)
        .unwrap();
    let _: () = redis::cmd("SELECT").arg(0).query(&mut c2).unwrap();
    let _: () = redis::cmd("SET")
        .arg("after")
        .arg("1")
        .query(&mut c1)
        .unwrap();
    let d = converge(&[p1, p2], CONVERGE);
    // DUPLEX.DIGEST counts stored keys: the hidden ones, the markers and the new keys.
    assert!(digest_count(&d) >= 3, "{d}");
    for p in [p1, p2] {
        assert_eq!(dbsize(p, 0), 1, "server {p}");
        assert_eq!(dbsize(p, 4), 1, "server {p}");
        let mut c = conn(p);
        let v: Option<String> = redis::cmd("GET").arg("after").query(&mut c).unwrap();
        assert_eq!(v.as_deref(), Some("1"));
        let _: () = redis::cmd("SELECT").arg(4).query(&mut c).unwrap();
        let v: Option<String> = redis::cmd("GET").arg("after").query(&mut c).unwrap();
        assert_eq!(v.as_deref(), Some("2"));
    }
}

/// A backup taken before a flush and before keys with expiry times were written, restored
/// and rolled forward over the archive: the flush still hides what it hid, the expiry times
/// are the ones written, and a key that had expired stays expired.
#[test]
fn flushes_and_expiry_times_survive_a_restore_and_roll_forward() {
    use duplex_engine::{restore_chain, roll_forward, RollForwardOptions, Target};
    let t = duplex_testkit::temp_dir();
    let (data, archive) = (t.path().join("data"), t.path().join("archive"));
    let cfg = |archive: &std::path::Path| Config {
        archive_dir: Some(archive.to_path_buf()),
        ..Config::default()
    };
    let db = Database::open(&data, cfg(&archive)).unwrap();
    put(&db, "old", "1");
    db.put(&stored_key(2, b"keep"), b"2").unwrap();
    let backup = t.path().join("backup");
    db.backup(&backup, None).unwrap();
    let mut flush = WriteBatch::new();
    flush.put(marker_key(0).to_vec(), vec![0]);
    db.write(flush).unwrap();
    put(&db, "new", "3");
    let now = duplex_wal::now_ms();
    for (k, at) in [("ttl", now + 60_000), ("gone", now + 10)] {
        let e = Entry {
            data: b"v".to_vec(),
            expire_ms: Some(at),
        };
        db.put(&stored_key(0, k.as_bytes()), &e.encode()).unwrap();
    }
    db.wal().rotate().unwrap();
    db.wal().archive_closed().unwrap();
    drop(db);
    let into = t.path().join("restored");
    let storage: Arc<dyn duplex_wal::Storage> = Arc::new(duplex_wal::StdStorage);
    restore_chain(&storage, &[backup], &into).unwrap();
    roll_forward(
        storage,
        &into,
        &[archive],
        &RollForwardOptions {
            target: Target::End,
            stop_at_last_good: false,
            config: cfg(&t.path().join("archive2")),
            chunk_bytes: 1 << 20,
        },
        &mut |_| {},
    )
    .unwrap();
    let db = Database::open(&into, cfg(&t.path().join("archive2"))).unwrap();
    let mut r = Reader::new(db.snapshot(), now + 100);
    assert_eq!(
        r.get(0, b"old").unwrap(),
        None,
        "the flush was rolled forward"
    );
    assert_eq!(
        r.get(0, b"new").unwrap().map(|e| e.data),
        Some(b"3".to_vec())
    );
    assert_eq!(
        r.get(2, b"keep").unwrap().map(|e| e.data),
        Some(b"2".to_vec())
    );
    assert_eq!(
        r.get(0, b"ttl").unwrap().and_then(|e| e.expire_ms),
        Some(now + 60_000)
    );
    assert_eq!(r.get(0, b"gone").unwrap(), None, "expired stays expired");
    let mut later = Reader::new(db.snapshot(), now + 61_000);
    assert_eq!(later.get(0, b"ttl").unwrap(), None);
}
