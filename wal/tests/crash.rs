//! Simulated power loss and failing fsyncs: every acknowledged record survives, in order,
//! and nothing after a torn record is ever returned.
//!
//! `DUPLEX_CRASH_SEEDS` sets how many seeded runs each test makes (default: enough for CI).

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::*;
use duplex_wal::sim::{CrashMode, SimStorage};
use duplex_wal::{Entry, Error, SyncPolicy, WalOptions};
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn seeds(default: u64) -> u64 {
    std::env::var("DUPLEX_CRASH_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Tag layout: thread in the high 16 bits, per-thread sequence below.
fn tag(thread: u64, seq: u64) -> u64 {
    (thread << 48) | seq
}

/// One seeded run: `threads` writers append (single records and batches) until the power
/// goes off at a random operation; then the machine crashes with torn writes and the log is
/// reopened and checked against what was acknowledged.
fn power_loss_run(seed: u64, threads: u64, sync: SyncPolicy) {
    let mut rng = StdRng::seed_from_u64(seed);
    let sim = SimStorage::new();
    let opts = WalOptions {
        segment_size: rng.gen_range(4096..16384),
        max_record_size: 2048,
        sync,
        ..WalOptions::default()
    };
    let wal = Arc::new(sim_open(&sim, "/wal", opts.clone()).expect("open"));
    sim.power_off_after(rng.gen_range(5..400));
    // lsn -> tag of every acknowledged record; plus the durable LSN last observed.
    let acked: Arc<Mutex<BTreeMap<u64, u64>>> = Arc::default();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let wal = wal.clone();
            let acked = acked.clone();
            let mut rng = StdRng::seed_from_u64(seed ^ (t + 1).wrapping_mul(0x51ED));
            std::thread::spawn(move || {
                let mut seq = 0u64;
                loop {
                    let n = if rng.gen_bool(0.2) {
                        rng.gen_range(2..5)
                    } else {
                        1
                    };
                    let bodies: Vec<Vec<u8>> = (0..n)
                        .map(|i| payload(tag(t, seq + i), rng.gen_range(0..300)))
                        .collect();
                    let entries: Vec<Entry<'_>> = bodies
                        .iter()
                        .map(|b| Entry {
                            kind: 7,
                            payload: b,
                        })
                        .collect();
                    match wal.append_batch(&entries) {
                        Ok(last) => {
                            let mut a = acked.lock();
                            for i in 0..n {
                                a.insert(last + 1 - n + i, tag(t, seq + i));
                            }
                        }
                        Err(Error::Poisoned { .. }) => return,
                        Err(e) => panic!("seed {seed}: unexpected error {e}"),
                    }
                    seq += n;
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("writer thread");
    }
    let durable_before_crash = wal.durable_lsn();
    drop(wal);
    sim.crash(CrashMode::Torn { seed });

    let wal = sim_open(&sim, "/wal", opts.clone())
        .unwrap_or_else(|e| panic!("seed {seed}: reopen failed: {e}"));
    let recs = read_dir(&sim, "/wal");
    let acked = acked.lock();
    // Contiguous from 1, every payload intact.
    let mut by_lsn = BTreeMap::new();
    for (i, r) in recs.iter().enumerate() {
        assert_eq!(r.lsn, i as u64 + 1, "seed {seed}: LSNs not contiguous");
        let t = check_payload(&r.payload)
            .unwrap_or_else(|| panic!("seed {seed}: garbage payload at LSN {}", r.lsn));
        by_lsn.insert(r.lsn, t);
    }
    // Every acknowledged record is there, unchanged, when the policy promised durability.
    let promised: Vec<(&u64, &u64)> = match sync {
        SyncPolicy::Always => acked.iter().collect(),
        _ => acked.range(..=durable_before_crash).collect(),
    };
    for (lsn, t) in promised {
        assert_eq!(
            by_lsn.get(lsn),
            Some(t),
            "seed {seed}: acknowledged LSN {lsn} lost or changed"
        );
    }
    // Per writer, sequence numbers appear in order with no holes: a batch is whole.
    let mut next: BTreeMap<u64, u64> = BTreeMap::new();
    for t in by_lsn.values() {
        let (th, seq) = (t >> 48, t & ((1 << 48) - 1));
        let want = next.entry(th).or_insert(0);
        assert_eq!(seq, *want, "seed {seed}: writer {th} skipped or reordered");
        *want += 1;
    }
    // The log continues after recovery.
    let last = recs.len() as u64;
    assert_eq!(
        wal.append(1, b"after").expect("append after recovery"),
        last + 1
    );
    wal.close().expect("close");
    assert_eq!(read_dir(&sim, "/wal").len() as u64, last + 1);
}

#[test]
fn power_loss_single_writer_is_deterministic_and_loses_nothing_acknowledged() {
    for seed in 0..seeds(1500) {
        power_loss_run(seed, 1, SyncPolicy::Always);
    }
}

#[test]
fn power_loss_concurrent_writers_lose_nothing_acknowledged() {
    for seed in 0..seeds(1500) / 4 {
        power_loss_run(10_000 + seed, 4, SyncPolicy::Always);
    }
}

#[test]
fn power_loss_under_never_keeps_what_was_synced_and_a_clean_prefix() {
    for seed in 0..seeds(1500) / 4 {
        power_loss_run(20_000 + seed, 2, SyncPolicy::Never);
    }
}

#[test]
fn failed_fsync_poisons_the_log_and_names_the_file() {
    for k in 1..8 {
        let sim = SimStorage::new();
        let wal = sim_open(&sim, "/wal", small_opts()).expect("open");
        let mut acked = Vec::new();
        sim.fail_sync_after(k);
        let mut failed_at = None;
        for i in 0..200u64 {
            match wal.append(1, &payload(i, 500)) {
                Ok(lsn) => acked.push((lsn, i)),
                Err(Error::Poisoned { op, file, .. }) => {
                    assert!(op.contains("fsync"), "k={k}: op {op}");
                    assert!(file.starts_with("/wal"), "k={k}: file {file:?}");
                    failed_at = Some(i);
                    break;
                }
                Err(e) => panic!("k={k}: unexpected {e}"),
            }
        }
        let at = failed_at.unwrap_or_else(|| panic!("k={k}: the fsync failure was not reported"));
        assert!(wal.is_poisoned());
        // Fail-stop: every later call fails too, even though the disk "works" again.
        let err = wal
            .append(1, b"later")
            .expect_err("poisoned log must refuse");
        assert!(matches!(err, Error::Poisoned { .. }), "{err}");
        assert!(wal.sync().is_err());
        assert!(err.to_string().contains("restart"), "{err}");
        drop(wal);
        sim.crash(CrashMode::Torn { seed: k });
        let recs = read_dir(&sim, "/wal");
        for (lsn, i) in &acked {
            let r = &recs[*lsn as usize - 1];
            assert_eq!(check_payload(&r.payload), Some(*i), "k={k}");
        }
        assert!(recs.len() as u64 <= at + 1);
    }
}

#[test]
fn failed_write_poisons_the_log() {
    let sim = SimStorage::new();
    let wal = sim_open(&sim, "/wal", small_opts()).expect("open");
    wal.append(1, b"one").expect("append");
    sim.fail_write_after(1);
    let err = wal.append(1, b"two").expect_err("write fails");
    assert!(matches!(err, Error::Poisoned { op: "write", .. }), "{err}");
    assert!(wal.append(1, b"three").is_err());
    drop(wal);
    sim.crash(CrashMode::LoseUnsynced);
    let recs = read_dir(&sim, "/wal");
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].payload, b"one");
}
