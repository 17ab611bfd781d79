//! The replication core's speed against the write path it follows (issue 11, "Speed"),
//! every figure from the same run so the ratios are fair.
//!
//! Run: `cargo run --release -p duplex-benches --bin repl_compare`.
//!
//! - **accept**: 16 threads of durable single-key puts (`SyncPolicy::Always`, 16-byte keys,
//!   100-byte values) on the origin for `DUPLEX_SECS`: the rate the origin accepts writes.
//! - **apply-only**: a second database applies everything the origin logged, read from the
//!   origin's change feed in frames of up to 256 batches (`FeedCursor::read`, then
//!   `Database::apply_remote`, which makes each frame durable before counting it): batches/s,
//!   and its ratio to the accept rate (the issue asks for >= 1.2x).
//! - **together**: the same puts while a follower thread reads the feed and applies it to a
//!   second database as it goes: the accept rate with a follower (ratio to the accept rate
//!   alone: what replication costs the write path, both sharing the machine's cores), and
//!   the lag from the commit of each batch (its stamp's wall time) to its apply, p50 / p99.
//! - **read-only follower**: the same puts while a thread reads the feed as it grows and
//!   throws it away (a peer that acknowledges without applying): the accept rate's ratio
//!   to the accept rate alone is what the backlog and the feed cost the write path (the
//!   issue asks for >= 0.9x).
//!
//! Environment: `DUPLEX_SECS` (default 5), `DUPLEX_ROUNDS` (default 3, medians reported),
//! `DUPLEX_BENCH_DIR` (where the databases go).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use duplex_benches::engines::{fresh_dir, XorShift};
use duplex_engine::{Config, Database, FeedCursor, RemoteBatch, SyncPolicy, Timestamp};

const THREADS: usize = 16;
const FRAME: usize = 256;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn cfg(node: u64) -> Config {
    Config {
        node_id: node,
        sync: SyncPolicy::Always,
        replication_backlog_bytes: 64 << 20,
        ..Config::default()
    }
}

/// 16 threads of puts for `secs`; returns puts/s.
fn put_load(db: &Arc<Database>, secs: f64) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let (db, stop, done) = (db.clone(), stop.clone(), done.clone());
            std::thread::spawn(move || {
                let mut rng = XorShift(0x9e37_79b9 + t as u64);
                let value = [b'v'; 100];
                while !stop.load(Ordering::Relaxed) {
                    let key = rng.next_u64().to_le_bytes().repeat(2);
                    db.put(&key, &value).expect("put");
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(secs));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().expect("writer");
    }
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

/// Applies `origin`'s feed after `after` to `to` until caught up (or `stop`); returns the
/// batches applied and the lags (ms) seen.
fn follow(origin: &Database, to: &Database, stop: Option<&AtomicBool>, lags: &mut Vec<u64>) -> u64 {
    let mut cursor = FeedCursor::new();
    let mut applied = 0u64;
    loop {
        let after = to.origin_hwm(origin.node_id());
        let got = cursor.read(origin, after, FRAME, 1 << 20).expect("feed");
        if got.is_empty() {
            match stop {
                Some(s) if !s.load(Ordering::Relaxed) => {
                    origin.wait_for_commit(Duration::from_millis(5));
                    continue;
                }
                _ => return applied,
            }
        }
        let batches: Vec<RemoteBatch<'_>> = got
            .iter()
            .map(|f| RemoteBatch {
                origin_lsn: f.origin_lsn,
                prev_origin_lsn: f.prev_origin_lsn,
                stamp: f.stamp,
                payload: &f.payload,
            })
            .collect();
        let rep = to.apply_remote(origin.node_id(), &batches).expect("apply");
        assert_eq!(rep.refused, None);
        applied += rep.applied as u64;
        let now = duplex_wal::now_ms();
        lags.extend(
            got.iter()
                .map(|f| now.saturating_sub(Timestamp(f.stamp).wall_ms())),
        );
    }
}

fn pct(v: &mut [u64], p: f64) -> u64 {
    if v.is_empty() {
        return 0;
    }
    v.sort_unstable();
    v[((v.len() - 1) as f64 * p) as usize]
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Reads the feed as it grows without applying it, until `stop`; returns batches read.
fn read_only(origin: &Database, stop: &AtomicBool) -> u64 {
    let mut cursor = FeedCursor::new();
    let (mut after, mut read) = (0u64, 0u64);
    while !stop.load(Ordering::Relaxed) {
        let got = cursor.read(origin, after, FRAME, 1 << 20).expect("feed");
        match got.last() {
            Some(l) => {
                after = l.origin_lsn;
                read += got.len() as u64;
            }
            None => origin.wait_for_commit(Duration::from_millis(5)),
        }
    }
    read
}

struct Round {
    accept: f64,
    apply: f64,
    together: f64,
    read_only: f64,
    lag_p50: u64,
    lag_p99: u64,
}

fn round(secs: f64) -> Round {
    let (d1, d2, d3, d4) = (
        fresh_dir("repl-o"),
        fresh_dir("repl-r"),
        fresh_dir("repl-o2"),
        fresh_dir("repl-r2"),
    );
    let origin = Arc::new(Database::open(d1.path(), cfg(1)).expect("open"));
    let accept = put_load(&origin, secs);
    let receiver = Database::open(d2.path(), cfg(2)).expect("open");
    let t = Instant::now();
    let applied = follow(&origin, &receiver, None, &mut Vec::new());
    let apply = applied as f64 / t.elapsed().as_secs_f64();
    drop((origin, receiver));

    let origin = Arc::new(Database::open(d3.path(), cfg(1)).expect("open"));
    let receiver = Arc::new(Database::open(d4.path(), cfg(2)).expect("open"));
    let stop = Arc::new(AtomicBool::new(false));
    let follower = {
        let (o, r, s) = (origin.clone(), receiver.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut lags = Vec::new();
            follow(&o, &r, Some(&s), &mut lags);
            lags
        })
    };
    let together = put_load(&origin, secs);
    stop.store(true, Ordering::Relaxed);
    let mut lags = follower.join().expect("follower");
    drop((origin, receiver));

    let d5 = fresh_dir("repl-o3");
    let origin = Arc::new(Database::open(d5.path(), cfg(1)).expect("open"));
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (o, s) = (origin.clone(), stop.clone());
        std::thread::spawn(move || read_only(&o, &s))
    };
    let read_only = put_load(&origin, secs);
    stop.store(true, Ordering::Relaxed);
    reader.join().expect("reader");
    Round {
        accept,
        apply,
        together,
        read_only,
        lag_p50: pct(&mut lags, 0.5),
        lag_p99: pct(&mut lags, 0.99),
    }
}

fn main() {
    let secs = env_u64("DUPLEX_SECS", 5) as f64;
    let rounds = env_u64("DUPLEX_ROUNDS", 3).max(1);
    let mut all = Vec::new();
    for r in 0..rounds {
        let x = round(secs);
        println!(
            "round {}: accept {:.0}/s, apply-only {:.0}/s ({:.2}x), accept with a follower {:.0}/s ({:.2}x), with a read-only follower {:.0}/s ({:.2}x), lag p50 {} ms p99 {} ms",
            r + 1,
            x.accept,
            x.apply,
            x.apply / x.accept,
            x.together,
            x.together / x.accept,
            x.read_only,
            x.read_only / x.accept,
            x.lag_p50,
            x.lag_p99
        );
        all.push(x);
    }
    let m = |f: &dyn Fn(&Round) -> f64| median(all.iter().map(f).collect());
    println!(
        "median of {rounds}: apply-only / accept {:.2}x, accept with a follower / alone {:.2}x, with a read-only follower / alone {:.2}x, lag p50 {:.0} ms p99 {:.0} ms",
        m(&|r| r.apply / r.accept),
        m(&|r| r.together / r.accept),
        m(&|r| r.read_only / r.accept),
        m(&|r| r.lag_p50 as f64),
        m(&|r| r.lag_p99 as f64)
    );
}
