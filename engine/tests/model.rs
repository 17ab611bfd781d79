//! Model-based tests: random sequences of put / delete / batch / get / scan / checkpoint /
//! compact / reopen against a `BTreeMap` give identical results.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

use duplex_engine::{Config, Database, WriteBatch};
use duplex_wal::sim::SimStorage;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Action {
    Put(u16, u16),
    Delete(u16),
    Batch(Vec<(u16, Option<u16>)>),
    Get(u16),
    Scan(u16, u16),
    Checkpoint,
    Compact,
    Reopen,
}

fn key(k: u16) -> Vec<u8> {
    format!("key-{:05}", k % 600).into_bytes()
}

/// Values of varied sizes, some large enough to be stored out of line.
fn value(v: u16) -> Vec<u8> {
    let len = match v % 7 {
        0 => 0,
        1 => 2000,
        _ => (v as usize * 13) % 300,
    };
    let mut out = format!("v{v}:").into_bytes();
    out.extend((0..len).map(|i| (i as u16 ^ v) as u8));
    out
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        30 => (any::<u16>(), any::<u16>()).prop_map(|(k, v)| Action::Put(k, v)),
        8 => any::<u16>().prop_map(Action::Delete),
        6 => prop::collection::vec((any::<u16>(), prop::option::of(any::<u16>())), 1..12)
            .prop_map(Action::Batch),
        10 => any::<u16>().prop_map(Action::Get),
        4 => (any::<u16>(), any::<u16>()).prop_map(|(a, b)| Action::Scan(a, b)),
        3 => Just(Action::Checkpoint),
        1 => Just(Action::Compact),
        2 => Just(Action::Reopen),
    ]
}

fn cfg() -> Config {
    Config {
        background: false,
        segment_size: 16 << 10,
        compaction_min_bytes: 32 << 10,
        replay_chunk_bytes: 16 << 10,
        ..Config::default()
    }
}

fn open(sim: &SimStorage) -> Database {
    Database::open_with(Arc::new(sim.clone()), "/db", cfg()).expect("open")
}

fn check_all(db: &Database, model: &BTreeMap<Vec<u8>, Vec<u8>>) {
    let got: Vec<(Vec<u8>, Vec<u8>)> = db
        .scan(Bound::Unbounded, Bound::Unbounded)
        .expect("scan")
        .collect::<Result<_, _>>()
        .expect("scan items");
    let want: Vec<(Vec<u8>, Vec<u8>)> = model.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    if got != want {
        let show = |k: &[u8]| String::from_utf8_lossy(k).into_owned();
        let first = got
            .iter()
            .zip(&want)
            .position(|(a, b)| a != b)
            .unwrap_or(got.len().min(want.len()));
        panic!(
            "scan differs from the model: {} entries vs {}; first difference at #{first}: got {:?} want {:?}",
            got.len(),
            want.len(),
            got.get(first).map(|(k, v)| (show(k), v.len())),
            want.get(first).map(|(k, v)| (show(k), v.len())),
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn engine_matches_a_btreemap(actions in prop::collection::vec(action(), 1..250)) {
        let sim = SimStorage::new();
        let mut db = open(&sim);
        let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        for a in actions {
            match a {
                Action::Put(k, v) => {
                    db.put(&key(k), &value(v)).expect("put");
                    model.insert(key(k), value(v));
                }
                Action::Delete(k) => {
                    db.delete(&key(k)).expect("delete");
                    model.remove(&key(k));
                }
                Action::Batch(ops) => {
                    let mut b = WriteBatch::new();
                    for (k, v) in &ops {
                        match v {
                            Some(v) => { b.put(key(*k), value(*v)); model.insert(key(*k), value(*v)); }
                            None => { b.delete(key(*k)); model.remove(&key(*k)); }
                        }
                    }
                    db.write(b).expect("batch");
                }
                Action::Get(k) => {
                    prop_assert_eq!(db.get(&key(k)).expect("get"), model.get(&key(k)).cloned());
                }
                Action::Scan(a, b) => {
                    let (a, b) = (a % 600, b % 600);
                    let (lo, hi) = (key(a.min(b)), key(a.max(b)));
                    let got: Vec<Vec<u8>> = db
                        .scan(Bound::Included(&lo), Bound::Excluded(&hi))
                        .expect("scan")
                        .map(|r| r.expect("item").0)
                        .collect();
                    let want: Vec<Vec<u8>> = model.range(lo.clone()..hi.clone()).map(|(k, _)| k.clone()).collect();
                    prop_assert_eq!(got, want);
                }
                Action::Checkpoint => db.checkpoint().expect("checkpoint"),
                Action::Compact => db.compact().expect("compact"),
                Action::Reopen => {
                    if model.len().is_multiple_of(2) {
                        db.close().expect("close");
                    } else {
                        drop(db);
                    }
                    db = open(&sim);
                }
            }
        }
        check_all(&db, &model);
        let digest = db.digest().expect("digest");
        prop_assert_eq!(digest.count, model.len() as u64);
        db.compact().expect("compact");
        check_all(&db, &model);
        prop_assert_eq!(db.digest().expect("digest"), digest);
        drop(db);
        let db = open(&sim);
        check_all(&db, &model);
        prop_assert_eq!(db.digest().expect("digest"), digest);
    }
}

#[test]
fn digest_is_independent_of_history() {
    let a = SimStorage::new();
    let b = SimStorage::new();
    let da = open(&a);
    let db = open(&b);
    for i in 0..300u16 {
        da.put(&key(i), &value(i)).expect("put");
    }
    for i in (0..300u16).rev() {
        db.put(&key(i), &value(i + 1)).expect("put");
        if i % 3 == 0 {
            db.checkpoint().expect("checkpoint");
        }
    }
    for i in 0..300u16 {
        db.put(&key(i), &value(i)).expect("put");
    }
    db.delete(&key(1000)).expect("delete of a missing key");
    assert_eq!(da.digest().expect("digest"), db.digest().expect("digest"));
    da.put(&key(5), b"different").expect("put");
    assert_ne!(da.digest().expect("digest"), db.digest().expect("digest"));
    let lo = key(100);
    let hi = key(200);
    let r = (Bound::Included(&lo[..]), Bound::Excluded(&hi[..]));
    assert_eq!(
        da.digest_range(r.0, r.1).expect("range digest"),
        db.digest_range(r.0, r.1).expect("range digest")
    );
}

#[test]
fn second_open_of_the_same_directory_is_refused() {
    let sim = SimStorage::new();
    let db = open(&sim);
    let err = Database::open_with(Arc::new(sim.clone()), "/db", cfg()).expect_err("locked");
    assert!(matches!(err, duplex_engine::Error::Locked { .. }), "{err}");
    drop(db);
    let _again = open(&sim);
}

#[test]
fn limits_are_enforced_and_nothing_is_written() {
    let sim = SimStorage::new();
    let db = Database::open_with(
        Arc::new(sim.clone()),
        "/db",
        Config {
            max_key_size: 8,
            max_value_size: 16,
            ..cfg()
        },
    )
    .expect("open");
    assert!(matches!(
        db.put(b"123456789", b"v"),
        Err(duplex_engine::Error::KeyTooLarge { len: 9, max: 8 })
    ));
    assert!(matches!(
        db.put(b"", b"v"),
        Err(duplex_engine::Error::KeyTooLarge { .. })
    ));
    assert!(matches!(
        db.put(b"k", &[0u8; 17]),
        Err(duplex_engine::Error::ValueTooLarge { .. })
    ));
    let mut b = WriteBatch::new();
    b.put("ok", "fine").put("toolongkey", "x");
    assert!(db.write(b).is_err());
    assert_eq!(db.get(b"ok").expect("get"), None);
    assert_eq!(db.wal().last_lsn(), 0);
}

#[test]
fn write_many_logs_batches_together_and_applies_them_in_order() {
    let sim = SimStorage::new();
    let db = open(&sim);
    let mut a = WriteBatch::new();
    a.put("x", "1").put("y", "1");
    let mut b = WriteBatch::new();
    b.put("x", "2").delete("y");
    let lsns = db
        .write_many(vec![a, WriteBatch::new(), b])
        .expect("write_many");
    assert_eq!(lsns, vec![1, 2]);
    assert_eq!(db.get(b"x").expect("get"), Some(b"2".to_vec()));
    assert_eq!(db.get(b"y").expect("get"), None);
    drop(db);
    let db = open(&sim);
    assert_eq!(db.get(b"x").expect("get"), Some(b"2".to_vec()));
    assert_eq!(db.get(b"y").expect("get"), None);
    assert_eq!(db.wal().last_lsn(), 2);
}
