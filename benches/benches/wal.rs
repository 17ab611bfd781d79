//! Criterion benchmarks of the Duplex WAL against the disk's own limit and against okaywal.
//!
//! One run measures every workload of issue 2 ("Speed"):
//! - `raw/<mode>/<len>`: pwrite + fdatasync loop (growing, fallocate'd, zero-filled file);
//! - `always/duplex/<threads>` and `always/okaywal/<threads>`: durable commits of 100-byte
//!   records from many threads (one criterion iteration = one commit on every thread, so the
//!   reported elements/s are commits/s summed over the threads);
//! - `never/duplex/<len>/<threads>`: `SyncPolicy::Never` appends;
//!   `never/okaywal-1000-per-entry/<len>/1`:
//!   okaywal has no `Never`, so its nearest is 1000 chunks per entry, one fsync per entry;
//! - `replay/<crate>/<len>`: reading a whole log (256 MiB of records, 1 GiB with
//!   `DUPLEX_BENCH_FULL=1`) back from the page cache; throughput in payload bytes;
//! - `reader-tail/<prealloc>`: opening a reader on a one-record log and reading to its end
//!   (what a tailing reader pays per poll), with and without a pre-allocated segment;
//! - `cpu/*`: the per-record CPU cost of encoding (the CRC of header + payload), which the
//!   WAL pays while holding its state lock.
//!
//! Run: `cargo bench -p duplex-benches --bench wal`. Files go under `target/duplex-bench-tmp`
//! (or `$DUPLEX_BENCH_DIR`); it must not be tmpfs.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput};
use duplex_benches::{
    build_duplex_log, build_okaywal_log, describe_bench_root, payload, reader_tail_log,
    records_for, replay_duplex, replay_log_bytes, replay_okaywal, run_iters, thread_payloads,
    DuplexLog, OkayLog, RawLoop, RawMode, LARGE, OKAYWAL_CHUNKS_PER_ENTRY, SMALL,
};
use duplex_wal::format::{encode_record, RECORD_HEADER_LEN};
use duplex_wal::SyncPolicy;

fn config() -> Criterion {
    eprintln!("bench files under {}", describe_bench_root());
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
}

fn raw(c: &mut Criterion) {
    let mut g = c.benchmark_group("raw");
    g.sampling_mode(SamplingMode::Flat);
    g.throughput(Throughput::Elements(1));
    for len in [SMALL, LARGE] {
        for mode in [RawMode::Growing, RawMode::Fallocated, RawMode::Zeroed] {
            let mut l = RawLoop::new(mode, len).expect("raw loop file");
            g.bench_function(BenchmarkId::new(mode.name(), format!("{len}B")), |b| {
                b.iter(|| l.commit().expect("pwrite + fdatasync"))
            });
        }
    }
    g.finish();
}

const ALWAYS_THREADS_DUPLEX: [usize; 5] = [1, 4, 8, 16, 64];
const ALWAYS_THREADS_OKAYWAL: [usize; 3] = [1, 8, 64];

fn always(c: &mut Criterion) {
    let mut g = c.benchmark_group("always");
    g.sampling_mode(SamplingMode::Flat);
    for threads in ALWAYS_THREADS_DUPLEX {
        let log = DuplexLog::open("always-duplex", SyncPolicy::Always);
        let pays = thread_payloads(threads, SMALL);
        g.throughput(Throughput::Elements(threads as u64));
        g.bench_function(BenchmarkId::new("duplex", threads), |b| {
            b.iter_custom(|iters| run_iters(threads, iters, |t, _| log.append(&pays[t])))
        });
    }
    for threads in ALWAYS_THREADS_OKAYWAL {
        let log = OkayLog::open("always-okaywal");
        let pays = thread_payloads(threads, SMALL);
        g.throughput(Throughput::Elements(threads as u64));
        g.bench_function(BenchmarkId::new("okaywal", threads), |b| {
            b.iter_custom(|iters| run_iters(threads, iters, |t, _| log.commit(&pays[t])))
        });
    }
    g.finish();
}

fn never(c: &mut Criterion) {
    let mut g = c.benchmark_group("never");
    g.sampling_mode(SamplingMode::Flat);
    for len in [SMALL, LARGE] {
        for threads in [1usize, 4] {
            let log = DuplexLog::open("never-duplex", SyncPolicy::Never);
            let pays = thread_payloads(threads, len);
            g.throughput(Throughput::Elements(threads as u64));
            g.bench_function(BenchmarkId::new(format!("duplex/{len}B"), threads), |b| {
                b.iter_custom(|iters| run_iters(threads, iters, |t, _| log.append(&pays[t])))
            });
        }
        let log = OkayLog::open("never-okaywal");
        let pay = thread_payloads(1, len).remove(0);
        let n = OKAYWAL_CHUNKS_PER_ENTRY;
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(
            BenchmarkId::new(format!("okaywal-{n}-per-entry/{len}B"), 1),
            |b| b.iter(|| log.commit_chunks(&pay, n)),
        );
    }
    g.finish();
}

fn replay(c: &mut Criterion) {
    let mut g = c.benchmark_group("replay");
    g.sampling_mode(SamplingMode::Flat);
    let log_bytes = replay_log_bytes();
    for len in [SMALL, LARGE] {
        let n = records_for(len, log_bytes);
        g.throughput(Throughput::Bytes(n * len as u64));

        let log = build_duplex_log(len, n);
        let first = replay_duplex(&log.path()); // also warms the page cache
        assert_eq!(first.records, n, "duplex-wal replay lost records");
        eprintln!(
            "replay/duplex/{len}B: {n} records, {} MiB of log",
            first.log_bytes >> 20
        );
        g.bench_function(BenchmarkId::new("duplex", format!("{len}B")), |b| {
            b.iter(|| replay_duplex(&log.path()))
        });
        drop(log);

        let log = build_okaywal_log(len, n);
        let first = replay_okaywal(&log.path());
        assert_eq!(first.records, n, "okaywal replay lost records");
        g.bench_function(BenchmarkId::new("okaywal", format!("{len}B")), |b| {
            b.iter(|| replay_okaywal(&log.path()))
        });
    }
    g.finish();
}

fn reader_tail(c: &mut Criterion) {
    let mut g = c.benchmark_group("reader-tail");
    for preallocate in [true, false] {
        let log = reader_tail_log(preallocate);
        let name = if preallocate {
            "preallocated-64MiB"
        } else {
            "not-preallocated"
        };
        g.bench_function(name, |b| {
            b.iter(|| {
                let r = replay_duplex(&log.path());
                assert_eq!(r.records, 1);
                r
            })
        });
    }
    g.finish();
}

fn cpu(c: &mut Criterion) {
    let mut g = c.benchmark_group("cpu");
    g.measurement_time(Duration::from_secs(2));
    for len in [SMALL, LARGE] {
        let p = payload(len, 3);
        let pcrc = crc32c::crc32c(&p);
        let mut out = Vec::with_capacity(len + 64);
        g.throughput(Throughput::Elements(1));
        g.bench_function(BenchmarkId::new("crc32c", format!("{len}B")), |b| {
            b.iter(|| crc32c::crc32c(black_box(&p)))
        });
        g.bench_function(BenchmarkId::new("crc32c_combine", format!("{len}B")), |b| {
            b.iter(|| crc32c::crc32c_combine(black_box(0x1234_5678), black_box(pcrc), len))
        });
        // What duplex-wal does per record under its state lock.
        g.bench_function(BenchmarkId::new("encode_record", format!("{len}B")), |b| {
            b.iter(|| {
                out.clear();
                encode_record(&mut out, black_box(42), 1, 0, black_box(&p));
                out.len()
            })
        });
        // The same header + payload CRC computed in one streaming pass, for comparison.
        let mut h = [0u8; RECORD_HEADER_LEN];
        h[4..8].copy_from_slice(&(len as u32).to_le_bytes());
        g.bench_function(
            BenchmarkId::new("crc32c_append-header-payload", format!("{len}B")),
            |b| b.iter(|| crc32c::crc32c_append(crc32c::crc32c(black_box(&h[4..])), black_box(&p))),
        );
    }
    g.finish();
}

/// The group, in a private module: `criterion_group!` defines an undocumented `pub fn`.
mod group {
    use super::{always, config, cpu, never, raw, reader_tail, replay};
    use criterion::criterion_group;

    criterion_group! {
        name = benches;
        config = config();
        targets = raw, always, never, replay, reader_tail, cpu
    }
}
criterion_main!(group::benches);
