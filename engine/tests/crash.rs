//! Simulated power loss at a random storage operation, during writes, checkpoints and
//! compactions: every acknowledged write is present after reopening, no batch is partly
//! visible, and the digest matches a model of the acknowledged writes.
//!
//! `DUPLEX_CRASH_SEEDS` sets the number of seeded runs (default: a CI-sized few hundred).

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

use duplex_engine::{entry_hash, Config, Database, Digest, WriteBatch};
use duplex_wal::sim::{CrashMode, SimStorage};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

type Model = BTreeMap<Vec<u8>, Vec<u8>>;

fn seeds(default: u64) -> u64 {
    std::env::var("DUPLEX_CRASH_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn cfg(background: bool) -> Config {
    Config {
        background,
        segment_size: 8 << 10,
        checkpoint_wal_bytes: 4 << 10,
        // Long replays merge into the tree in chunks: exercise that too.
        replay_chunk_bytes: 8 << 10,
        compaction_min_bytes: 16 << 10,
        ..Config::default()
    }
}

fn contents(db: &Database) -> Model {
    db.scan(Bound::Unbounded, Bound::Unbounded)
        .expect("scan")
        .collect::<Result<_, _>>()
        .expect("scan items")
}

fn model_digest(m: &Model) -> Digest {
    Digest {
        sum: m
            .iter()
            .fold(0u128, |s, (k, v)| s.wrapping_add(entry_hash(k, v))),
        count: m.len() as u64,
    }
}

fn apply(model: &mut Model, b: &WriteBatch) {
    for op in b.ops() {
        match op.value() {
            Some(v) => model.insert(op.key().to_vec(), v.to_vec()),
            None => model.remove(op.key()),
        };
    }
}

fn run(seed: u64, background: bool) {
    let mut rng = StdRng::seed_from_u64(seed);
    let sim = SimStorage::new();
    let db = Database::open_with(Arc::new(sim.clone()), "/db", cfg(background)).expect("open");
    let mut model = Model::new();
    sim.power_off_after(rng.gen_range(10..1500));
    let mut in_flight: Option<WriteBatch> = None;
    for i in 0..2000u32 {
        let roll = rng.gen_range(0..100);
        if roll < 6 {
            if db.checkpoint().is_err() {
                break;
            }
            continue;
        }
        if roll < 7 {
            if db.compact().is_err() {
                break;
            }
            continue;
        }
        let mut b = WriteBatch::new();
        let n = if roll < 25 { rng.gen_range(2..6) } else { 1 };
        for _ in 0..n {
            let k = format!("k{:03}", rng.gen_range(0..150)).into_bytes();
            if rng.gen_bool(0.2) {
                b.delete(k);
            } else {
                let len = if rng.gen_bool(0.05) {
                    1500
                } else {
                    rng.gen_range(0..120)
                };
                let v: Vec<u8> = (0..len)
                    .map(|j| (j as u32 ^ i ^ seed as u32) as u8)
                    .collect();
                b.put(k, v);
            }
        }
        match db.write(b.clone()) {
            Ok(_) => apply(&mut model, &b),
            Err(_) => {
                in_flight = Some(b);
                break;
            }
        }
    }
    drop(db);
    sim.crash(CrashMode::Torn { seed });

    let db = Database::open_with(Arc::new(sim.clone()), "/db", cfg(false))
        .unwrap_or_else(|e| panic!("seed {seed}: reopen failed: {e}"));
    let got = contents(&db);
    // The write in flight at the crash may or may not have landed, but only whole.
    let mut with_in_flight = model.clone();
    if let Some(b) = &in_flight {
        apply(&mut with_in_flight, b);
    }
    assert!(
        got == model || got == with_in_flight,
        "seed {seed}: recovered {} keys; acknowledged model has {}, with the in-flight batch {}",
        got.len(),
        model.len(),
        with_in_flight.len()
    );
    assert_eq!(
        db.digest().expect("digest"),
        model_digest(&got),
        "seed {seed}"
    );
    // The database keeps working after recovery, through a checkpoint and a reopen.
    db.put(b"after", b"crash").expect("write after recovery");
    db.checkpoint().expect("checkpoint after recovery");
    db.close().expect("close");
    let db = Database::open_with(Arc::new(sim.clone()), "/db", cfg(false)).expect("reopen");
    assert_eq!(db.get(b"after").expect("get"), Some(b"crash".to_vec()));
    let mut want = got;
    want.insert(b"after".to_vec(), b"crash".to_vec());
    assert_eq!(contents(&db), want, "seed {seed}: second reopen");
}

#[test]
fn power_loss_during_writes_checkpoints_and_compactions() {
    for seed in 0..seeds(300) {
        run(seed, false);
    }
}

#[test]
fn power_loss_with_background_checkpoints() {
    for seed in 0..seeds(300) / 3 {
        run(100_000 + seed, true);
    }
}
