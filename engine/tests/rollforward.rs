//! Roll-forward against the archive's structure: targets and damage inside an atomic WAL
//! group (what `write_many` logs), and last-writer-wins with out-of-order stamps from
//! several origins, in one chunk and in many.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::{cfg, contents, storage, Contents};
use duplex_engine::batch::encode_batch;
use duplex_engine::{
    restore_chain, roll_forward, Database, RollForwardOptions, Stamp, Target, Timestamp, WriteBatch,
};
use duplex_wal::Entry;

fn put_payload(ts_ms: u64, key: &str) -> Vec<u8> {
    let mut b = WriteBatch::new();
    b.put(key, "v");
    encode_batch(
        Stamp {
            ts: Timestamp::from_parts(ts_ms, 0),
            origin: 1,
        },
        0,
        &b,
    )
}

/// Builds: a backup, 2000 single puts after it, then ONE atomic WAL group of three
/// batches (as `write_many` logs them) whose middle one is `middle` (a payload), then more
/// puts. Returns (tempdir, backup dir, archive dir, wall ms of the group's first batch).
fn setup(
    middle: impl Fn(u64) -> Vec<u8>,
) -> (
    duplex_testkit::TempDir,
    std::path::PathBuf,
    std::path::PathBuf,
    u64,
) {
    let t = duplex_testkit::temp_dir();
    let (data, archive) = (t.path().join("data"), t.path().join("archive"));
    let db = Database::open(&data, cfg(&archive)).expect("open");
    for i in 0..50 {
        db.put(format!("a{i}").as_bytes(), b"x").expect("put");
    }
    let backup = t.path().join("backup");
    db.backup(&backup, None).expect("backup");
    for i in 0..2000 {
        db.put(format!("k{i:05}").as_bytes(), &[7u8; 40])
            .expect("put");
    }
    // An atomic group of three batches, stamped one millisecond apart: what write_many
    // logs when the wall clock ticks while it stamps its batches.
    let w = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64
        + 10_000;
    let p1 = put_payload(w, "g1");
    let p2 = middle(w + 1);
    let p3 = put_payload(w + 2, "g3");
    db.wal()
        .append_batch(&[
            Entry {
                kind: 1,
                payload: &p1,
            },
            Entry {
                kind: 1,
                payload: &p2,
            },
            Entry {
                kind: 1,
                payload: &p3,
            },
        ])
        .expect("group");
    for i in 0..20 {
        db.put(format!("z{i}").as_bytes(), b"z").expect("put");
    }
    db.wal().rotate().expect("rotate");
    db.wal().archive_closed().expect("archive");
    drop(db);
    (t, backup, archive, w)
}

fn rf(
    t: &duplex_testkit::TempDir,
    backup: &Path,
    archive: &Path,
    name: &str,
    target: Target,
    stop_at_last_good: bool,
    chunk_bytes: u64,
) -> duplex_engine::Result<(u64, Contents)> {
    let into = t.path().join(name);
    restore_chain(&storage(), &[backup.to_path_buf()], &into).expect("restore");
    let other = t.path().join(format!("{name}-archive"));
    let r = roll_forward(
        storage(),
        &into,
        &[archive.to_path_buf()],
        &RollForwardOptions {
            target,
            stop_at_last_good,
            config: cfg(&other),
            chunk_bytes,
        },
        &mut |_| {},
    )?;
    let db = Database::open(&into, cfg(&other)).expect("open restored");
    Ok((r.to_lsn, contents(&db)))
}

/// A time target that falls inside a complete atomic group applies the group's records
/// stamped at or before it and none after (the point-in-time unit is one record: one
/// client command or MULTI/EXEC), whatever the chunk size.
#[test]
fn a_time_target_inside_an_atomic_group_applies_the_records_up_to_it() {
    let (t, backup, archive, w) = setup(|ms| put_payload(ms, "g2"));
    let one = rf(
        &t,
        &backup,
        &archive,
        "one",
        Target::TimeMs(w),
        false,
        1 << 30,
    )
    .expect("one chunk");
    assert!(
        one.1.contains_key(&b"g1"[..]),
        "the group's record stamped at the target is applied"
    );
    assert!(
        !one.1.contains_key(&b"g2"[..]) && !one.1.contains_key(&b"g3"[..]),
        "its records stamped after the target are not"
    );
    assert!(
        one.1.contains_key(&b"k01999"[..]),
        "everything before it is"
    );
    let many = rf(
        &t,
        &backup,
        &archive,
        "many",
        Target::TimeMs(w),
        false,
        4 << 10,
    );
    match many {
        Ok(m) => assert_eq!(m, one),
        Err(e) => panic!("many chunks failed where one chunk succeeded: {e}"),
    }
}

/// A batch that does not decode inside an atomic group, with stop_at_last_good: the
/// roll-forward stops before the group, whatever the chunk size; without the flag it fails.
#[test]
fn damage_inside_an_atomic_group_stops_before_the_group() {
    let (t, backup, archive, _) = setup(|_| vec![0xEE; 40]);
    let one = rf(&t, &backup, &archive, "one", Target::End, true, 1 << 30).expect("one chunk");
    assert!(
        !one.1.contains_key(&b"g1"[..]),
        "no part of the group is applied"
    );
    assert!(
        one.1.contains_key(&b"k01999"[..]),
        "everything before it is"
    );
    let err = rf(&t, &backup, &archive, "strict", Target::End, false, 1 << 30)
        .expect_err("damage without stop_at_last_good fails");
    assert!(err.is_corruption(), "{err}");
    let many = rf(&t, &backup, &archive, "many", Target::End, true, 4 << 10);
    match many {
        Ok(m) => assert_eq!(m, one),
        Err(e) => panic!("many chunks failed where one chunk succeeded: {e}"),
    }
}

/// Crafted archive with out-of-order stamps from three origins, short keys sharing
/// prefixes, deletes, values over 1 KiB and repeated keys within a batch: one chunk and
/// many chunks (copy-on-write merges and rebuilds) must both equal a last-writer-wins model.
#[test]
fn roll_forward_matches_a_lww_model_in_one_and_many_chunks() {
    use rand::{Rng, SeedableRng};
    let t = duplex_testkit::temp_dir();
    let (data, archive) = (t.path().join("data"), t.path().join("archive"));
    let db = Database::open(&data, cfg(&archive)).expect("open");
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let alphabet = [b'a', b'b', 0u8];
    let key = |rng: &mut rand::rngs::StdRng| -> Vec<u8> {
        let n = rng.gen_range(1..=11);
        (0..n).map(|_| alphabet[rng.gen_range(0..3)]).collect()
    };
    let mut keys = Vec::new();
    for i in 0..400u32 {
        let k = key(&mut rng);
        if i % 9 == 0 {
            db.delete(&k).expect("delete");
        } else {
            db.put(&k, &vec![i as u8; if i % 4 == 0 { 1500 } else { 30 }])
                .expect("put");
        }
        keys.push(k);
    }
    let backup = t.path().join("backup");
    db.backup(&backup, None).expect("backup");
    // The model starts from the backup's versions.
    let mut model: BTreeMap<Vec<u8>, (Stamp, Option<Vec<u8>>)> = BTreeMap::new();
    for k in &keys {
        if let Some(v) = db.version(k).expect("version") {
            model.insert(k.clone(), (v.stamp, v.value));
        }
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    for i in 0..3000u64 {
        let stamp = Stamp {
            ts: Timestamp(((now - 2000 + rng.gen_range(0..4000)) << 16) | (i & 0xffff)),
            origin: rng.gen_range(1..=3),
        };
        let mut b = WriteBatch::new();
        let mut ops = Vec::new();
        for _ in 0..rng.gen_range(1..=4) {
            let k = if rng.gen_bool(0.3) {
                key(&mut rng)
            } else {
                keys[rng.gen_range(0..keys.len())].clone()
            };
            if rng.gen_bool(0.2) {
                b.delete(k.clone());
                ops.push((k, None));
            } else {
                let v = vec![
                    (i % 251) as u8;
                    if rng.gen_bool(0.2) {
                        1100 + (i as usize % 300)
                    } else {
                        20
                    }
                ];
                b.put(k.clone(), v.clone());
                ops.push((k, Some(v)));
            }
        }
        let p = encode_batch(stamp, 0, &b);
        db.wal()
            .append_batch(&[Entry {
                kind: 1,
                payload: &p,
            }])
            .expect("append");
        for (k, v) in ops {
            match model.get(&k) {
                Some((s, _)) if s.wins_over(&stamp) => {}
                _ => {
                    model.insert(k, (stamp, v));
                }
            }
        }
    }
    db.wal().rotate().expect("rotate");
    db.wal().archive_closed().expect("archive");
    drop(db);
    let want: BTreeMap<Vec<u8>, Vec<u8>> = model
        .into_iter()
        .filter_map(|(k, (_, v))| v.map(|v| (k, v)))
        .collect();
    for (n, chunk) in [(1u32, 1u64 << 30), (2, 50_000), (3, 5_000), (4, 700)] {
        let got = rf(
            &t,
            &backup,
            &archive,
            &format!("m{n}"),
            Target::End,
            false,
            chunk,
        )
        .expect("roll forward");
        let diff: Vec<_> = want
            .iter()
            .filter(|(k, v)| got.1.get(*k) != Some(*v))
            .map(|(k, _)| k.clone())
            .chain(got.1.keys().filter(|k| !want.contains_key(*k)).cloned())
            .take(5)
            .collect();
        assert!(
            diff.is_empty(),
            "chunk {chunk}: {} keys differ, e.g. {diff:?}",
            diff.len()
        );
    }
}

/// A time before writes the restored database already holds (the backup's, or an
/// interrupted earlier roll-forward's) cannot be reached by rolling forward: refused.
#[test]
fn a_time_target_before_what_the_database_holds_is_refused() {
    let (t, backup, archive, _) = setup(|ms| put_payload(ms, "g2"));
    let err = rf(
        &t,
        &backup,
        &archive,
        "early",
        Target::TimeMs(1),
        false,
        1 << 30,
    )
    .expect_err("a target before the backup's writes");
    assert!(
        err.to_string()
            .contains("already holds writes stamped after"),
        "{err}"
    );
}

/// A roll-forward takes the directory's lock: refused while someone else holds it (an
/// open database, another roll-forward).
#[test]
fn a_roll_forward_is_refused_on_a_locked_directory() {
    let (t, backup, archive, _) = setup(|ms| put_payload(ms, "g2"));
    let into = t.path().join("held");
    restore_chain(&storage(), std::slice::from_ref(&backup), &into).expect("restore");
    let other = t.path().join("held-archive");
    let held = storage()
        .lock(&into.join(duplex_engine::LOCK_NAME))
        .expect("hold the lock");
    let err = roll_forward(
        storage(),
        &into,
        &[archive],
        &RollForwardOptions {
            config: cfg(&other),
            ..RollForwardOptions::default()
        },
        &mut |_| {},
    )
    .expect_err("the directory is locked");
    assert!(matches!(err, duplex_engine::Error::Locked { .. }), "{err}");
    drop(held);
}
