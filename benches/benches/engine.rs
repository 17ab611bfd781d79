//! Criterion benchmarks of the Duplex engine against `redb` and `fjall` (issue 3).
//!
//! The engine adapters and workloads are those of the ratio runner
//! (`src/bin/engine_compare.rs`; both take them from the library's `engines` module), so
//! both measure the same code:
//! durable puts from 1 and 16 threads, batched puts (1000 per batch, durable per batch),
//! random gets and a full scan on a loaded and settled store, and the open time after a
//! clean close. The crash-replay and RSS workloads need child processes and run only in
//! `engine_compare`.
//!
//! Run: `cargo bench -p duplex-benches --bench engine` (a few minutes: 10 samples, short
//! measurement times). `DUPLEX_KEYS` sets the keys loaded for reads (default 1,000,000).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{criterion_main, BenchmarkId, Criterion, Throughput};
use duplex_benches::engines::{
    fresh_dir, key, load, mix, thread_base, value, Store, BATCH, KINDS, THREADS,
};
use duplex_benches::run_iters;

fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
}

fn read_keys() -> u64 {
    std::env::var("DUPLEX_KEYS")
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(1_000_000)
}

fn puts(c: &mut Criterion) {
    let mut g = c.benchmark_group("engine/durable_put");
    g.throughput(Throughput::Elements(1));
    for kind in KINDS {
        let dir = fresh_dir(&format!("crit-put-{}", kind.name()));
        let s = kind.open(dir.path(), false);
        let next = AtomicU64::new(0);
        g.bench_function(BenchmarkId::new("1_thread", kind.name()), |b| {
            b.iter(|| {
                let i = thread_base(0) + next.fetch_add(1, Ordering::Relaxed);
                s.put(&key(i), &value(i));
            })
        });
        g.bench_function(BenchmarkId::new("16_threads", kind.name()), |b| {
            b.iter_custom(|iters| {
                // `iters` puts in all, spread over the threads.
                let per = iters.div_ceil(THREADS as u64);
                let base = next.fetch_add(per, Ordering::Relaxed);
                let el = run_iters(THREADS, per, |t, n| {
                    let i = thread_base(t + 1) + base + n;
                    s.put(&key(i), &value(i));
                });
                el.mul_f64(iters as f64 / (per * THREADS as u64) as f64)
            })
        });
        s.close();
    }
    g.finish();
}

fn batches(c: &mut Criterion) {
    let mut g = c.benchmark_group("engine/batched_put_1000");
    g.throughput(Throughput::Elements(BATCH as u64));
    for kind in KINDS {
        let dir = fresh_dir(&format!("crit-batch-{}", kind.name()));
        let s = kind.open(dir.path(), false);
        let mut next = 0u64;
        g.bench_function(kind.name(), |b| {
            b.iter(|| {
                s.put_batch(next, BATCH);
                next += BATCH as u64;
            })
        });
        s.close();
    }
    g.finish();
}

fn reads(c: &mut Criterion) {
    let keys = read_keys();
    for kind in KINDS {
        let dir = fresh_dir(&format!("crit-read-{}", kind.name()));
        let s = kind.open(dir.path(), false);
        load(&*s, keys);
        s.settle();
        {
            let mut g = c.benchmark_group("engine/random_get");
            g.throughput(Throughput::Elements(1));
            let mut n = 0u64;
            g.bench_function(kind.name(), |b| {
                b.iter(|| {
                    n += 1;
                    s.get(&key(mix(n) % keys)).expect("loaded key")
                })
            });
            g.finish();
        }
        {
            let mut g = c.benchmark_group("engine/full_scan");
            g.throughput(Throughput::Elements(keys));
            g.bench_function(kind.name(), |b| {
                b.iter(|| assert_eq!(s.scan(), keys));
            });
            g.finish();
        }
        s.close();
        {
            let mut g = c.benchmark_group("engine/open_after_clean_close");
            let mut store: Option<Box<dyn Store>> = None;
            g.bench_function(kind.name(), |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        if let Some(s) = store.take() {
                            s.close();
                        }
                        let t = Instant::now();
                        store = Some(kind.open(dir.path(), false));
                        total += t.elapsed();
                    }
                    total
                })
            });
            if let Some(s) = store.take() {
                s.close();
            }
            g.finish();
        }
        drop(dir);
    }
}

/// The group, in a private module: `criterion_group!` defines an undocumented `pub fn`.
mod group {
    use super::{batches, config, puts, reads};
    use criterion::criterion_group;

    criterion_group! {
        name = engine;
        config = config();
        targets = puts, batches, reads
    }
}
criterion_main!(group::engine);
