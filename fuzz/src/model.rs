//! The oracle of the `engine_model` target: a random list of operations against a database
//! on simulated storage and a `BTreeMap` model of what it must hold, with I/O faults.
//!
//! Each input byte pair is one operation (the first byte its kind, the second its argument):
//! put, delete, a two-key batch, checkpoint, compaction, a backup (restored at once into a
//! scratch directory and compared with the model as it was), a power loss (unsynced writes
//! torn or lost) and reopen, a clean reopen, a failing fsync or write armed a few operations
//! ahead, and batches of a second node applied through `apply_remote` (last writer wins by
//! stamp, resends skipped). Properties: no panic; every acknowledged write is there after
//! any crash (the model keeps, per key, the winning version by stamp); a write that failed
//! leaves the key at its old or its new version, nothing else; a resent remote batch
//! changes nothing; a backup restores to exactly the model at the time it was taken.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use duplex_engine::{
    restore_chain, roll_forward, Config, Database, FeedCursor, RemoteBatch, RollForwardOptions,
    Stamp, SyncPolicy, WriteBatch,
};
use duplex_wal::sim::{CrashMode, SimStorage};
use duplex_wal::{ManualClock, Storage};

/// A version in the model: stamp and value (`None`: deleted).
type Version = (Stamp, Option<Vec<u8>>);

struct Model {
    /// Per key, the versions it may hold: one when certain, two after a failed write.
    keys: BTreeMap<Vec<u8>, Vec<Version>>,
}

impl Model {
    fn certain(&mut self, key: Vec<u8>, v: Version) {
        let entry = self.keys.entry(key).or_default();
        let best = entry
            .iter()
            .cloned()
            .chain([v.clone()])
            .max_by(|a, b| (a.0.ts, a.0.origin).cmp(&(b.0.ts, b.0.origin)));
        *entry = best.into_iter().collect();
    }

    /// A write whose outcome is unknown: the key holds what it held (nothing, for a key
    /// never written), or the new version.
    fn maybe(&mut self, key: &[u8], value: Option<Vec<u8>>) {
        self.keys
            .entry(key.to_vec())
            .or_insert_with(|| vec![(Stamp::default(), None)])
            .push((Stamp::default(), value));
    }

    /// Checks `db` against the model; then makes the model certain of what `db` holds.
    fn check(&mut self, db: &Database, when: &str) {
        for (key, versions) in self.keys.iter_mut() {
            let got = db.get(key).expect("get");
            let ok = versions.iter().any(|(_, v)| *v == got);
            assert!(
                ok,
                "{when}: {key:?} holds {got:?}, the model allows {versions:?}"
            );
            if versions.len() > 1 {
                let v = db.version(key).expect("version");
                *versions = vec![v.map_or((Stamp::default(), None), |v| (v.stamp, v.value))];
            }
        }
    }

    fn snapshot(&self) -> BTreeMap<Vec<u8>, Option<Vec<u8>>> {
        self.keys
            .iter()
            .filter_map(|(k, v)| (v.len() == 1).then(|| (k.clone(), v[0].1.clone())))
            .collect()
    }
}

fn cfg(node: u64, clock: &Arc<ManualClock>) -> Config {
    Config {
        node_id: node,
        sync: SyncPolicy::Always,
        background: false,
        scrub_bytes_per_sec: 0,
        segment_size: 32 << 10,
        checkpoint_wal_bytes: 8 << 10,
        replication_backlog_bytes: 64 << 10,
        clock: clock.clone(),
        ..Config::default()
    }
}

fn open(sim: &SimStorage, dir: &str, node: u64, clock: &Arc<ManualClock>) -> Option<Database> {
    let s: Arc<dyn Storage> = Arc::new(sim.clone());
    Database::open_with(s, dir, cfg(node, clock)).ok()
}

/// Runs one input (see the module doc).
pub fn check_model(data: &[u8]) {
    let clock = Arc::new(ManualClock::new(1_750_000_000_000));
    let sim = SimStorage::new();
    let peer_sim = SimStorage::new();
    let (Some(mut db), Some(peer)) = (
        open(&sim, "/db", 1, &clock),
        open(&peer_sim, "/peer", 2, &clock),
    ) else {
        return;
    };
    let mut model = Model {
        keys: BTreeMap::new(),
    };
    let (mut backups, mut armed) = (0u32, false);
    for (i, op) in data.chunks_exact(2).take(200).enumerate() {
        clock.advance(1);
        let key = vec![b'k', op[1] % 16];
        let value = vec![op[1], i as u8];
        let ok = match op[0] % 11 {
            0 | 1 => write(&db, &mut model, &key, Some(value)),
            2 => write(&db, &mut model, &key, None),
            3 => batch(&db, &mut model, key, vec![b'k', op[1] / 16], value),
            4 => db.checkpoint().is_ok(),
            5 => db.compact().is_ok(),
            6 => {
                // Only with no fault armed: the restore shares the simulated disk.
                if !armed {
                    backups += 1;
                    backup_and_restore(&db, &sim, &clock, &model, backups);
                }
                true
            }
            7 => {
                let mode = if op[1] % 2 == 0 {
                    CrashMode::LoseUnsynced
                } else {
                    CrashMode::Torn { seed: op[1] as u64 }
                };
                db = reopen(db, &sim, &clock, mode, &mut model);
                armed = false;
                true
            }
            8 => {
                sim.fail_sync_after(1 + u64::from(op[1] % 4));
                armed = true;
                true
            }
            9 => {
                sim.fail_write_after(1 + u64::from(op[1] % 8));
                armed = true;
                true
            }
            _ => remote(&db, &peer, &mut model, &key, value, op[1] % 3 == 0),
        };
        if !ok {
            // A failed step may have poisoned the database: a crash and a reopen, checked.
            db = reopen(db, &sim, &clock, CrashMode::LoseUnsynced, &mut model);
            armed = false;
        }
    }
    db = reopen(db, &sim, &clock, CrashMode::LoseUnsynced, &mut model);
    model.check(&db, "at the end");
}

/// A put or delete; false if it failed (the model then allows both outcomes).
fn write(db: &Database, model: &mut Model, key: &[u8], value: Option<Vec<u8>>) -> bool {
    let res = match &value {
        Some(v) => db.put(key, v),
        None => db.delete(key),
    };
    match res {
        Ok(_) => {
            let v = db.version(key).expect("version").expect("written");
            assert_eq!(v.value, value, "a write reads back");
            model.certain(key.to_vec(), (v.stamp, v.value));
            true
        }
        Err(_) => {
            model.maybe(key, value);
            false
        }
    }
}

/// A put of `key` and a delete of `key2` in one batch: both or neither.
fn batch(db: &Database, model: &mut Model, key: Vec<u8>, key2: Vec<u8>, value: Vec<u8>) -> bool {
    let mut b = WriteBatch::new();
    b.put(key.clone(), value.clone()).delete(key2.clone());
    match db.write(b) {
        Ok(_) => {
            for k in [key, key2] {
                let v = db.version(&k).expect("version").expect("written");
                model.certain(k, (v.stamp, v.value));
            }
            true
        }
        Err(_) => {
            if key != key2 {
                model.maybe(&key, Some(value));
            }
            model.maybe(&key2, None);
            false
        }
    }
}

/// Drops the database (poisoned or not), loses what was not synced, reopens, checks.
fn reopen(
    db: Database,
    sim: &SimStorage,
    clock: &Arc<ManualClock>,
    mode: CrashMode,
    model: &mut Model,
) -> Database {
    drop(db);
    sim.crash(mode);
    let db = open(sim, "/db", 1, clock).expect("a crashed database reopens");
    model.check(&db, "after a crash");
    db
}

/// A write on the peer, shipped to `db` (twice when `resend`): last writer wins by stamp.
/// False if the apply failed (the model then allows both outcomes).
fn remote(
    db: &Database,
    peer: &Database,
    model: &mut Model,
    key: &[u8],
    value: Vec<u8>,
    resend: bool,
) -> bool {
    peer.put(key, &value).expect("the peer has no faults");
    let after = db.origin_hwm(2);
    let batches = FeedCursor::new()
        .read(peer, after, 64, 1 << 20)
        .expect("the peer's feed");
    let remote: Vec<RemoteBatch<'_>> = batches
        .iter()
        .map(|b| RemoteBatch {
            origin_lsn: b.origin_lsn,
            prev_origin_lsn: b.prev_origin_lsn,
            stamp: b.stamp,
            payload: &b.payload,
        })
        .collect();
    let rounds = if resend { 2 } else { 1 };
    for _ in 0..rounds {
        match db.apply_remote(2, &remote) {
            Ok(rep) => {
                assert!(rep.refused.is_none(), "a valid batch refused: {rep:?}");
                for b in &batches {
                    let ops = duplex_engine::batch::decode_batch(&b.payload, 4096, 1 << 20)
                        .expect("the peer's batch");
                    for op in ops.ops {
                        model.certain(
                            op.key().to_vec(),
                            (ops.stamp, op.value().map(<[u8]>::to_vec)),
                        );
                    }
                }
            }
            Err(_) => {
                for b in &batches {
                    let ops = duplex_engine::batch::decode_batch(&b.payload, 4096, 1 << 20)
                        .expect("the peer's batch");
                    for op in ops.ops {
                        model.maybe(op.key(), op.value().map(<[u8]>::to_vec));
                    }
                }
                return false;
            }
        }
    }
    true
}

/// Backs `db` up, restores the backup into a scratch directory and compares it with the
/// model (only the keys the model is certain of).
fn backup_and_restore(
    db: &Database,
    sim: &SimStorage,
    clock: &Arc<ManualClock>,
    model: &Model,
    n: u32,
) {
    let dest = PathBuf::from(format!("/backup-{n}"));
    if db.backup(&dest, None).is_err() {
        return;
    }
    let storage: Arc<dyn Storage> = Arc::new(sim.clone());
    let into = PathBuf::from(format!("/restore-{n}"));
    restore_chain(&storage, &[dest], &into).expect("a backup that completed restores");
    roll_forward(
        storage.clone(),
        &into,
        &[],
        &RollForwardOptions {
            config: cfg(1, clock),
            ..RollForwardOptions::default()
        },
        &mut |_| {},
    )
    .expect("a backup's own WAL rolls forward");
    let restored = Database::open_with(storage, &into, cfg(1, clock)).expect("restored opens");
    let got: BTreeMap<Vec<u8>, Option<Vec<u8>>> = restored
        .scan(Bound::Unbounded, Bound::Unbounded)
        .expect("scan")
        .map(|kv| kv.map(|(k, v)| (k, Some(v))))
        .collect::<Result<_, _>>()
        .expect("items");
    for (k, want) in model.snapshot() {
        assert_eq!(got.get(&k).cloned().flatten(), want, "the backup's {k:?}");
    }
    drop(restored);
    let _ = remove_all(sim, &into);
}

fn remove_all(sim: &SimStorage, dir: &Path) -> std::io::Result<()> {
    for name in sim.list(dir)? {
        let p = dir.join(&name);
        if sim.remove_file(&p).is_err() {
            let _ = remove_all(sim, &p);
            let _ = sim.remove_dir(&p);
        }
    }
    sim.remove_dir(dir)
}
