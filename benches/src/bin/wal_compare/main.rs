//! Fixed-time side-by-side runner: every WAL workload of issue 2 ("Speed"), interleaved in
//! rounds, then the ratios the issue sets as targets, with a verdict for each.
//!
//! ```text
//! cargo run --release -p duplex-benches --bin wal_compare            # everything
//! cargo run --release -p duplex-benches --bin wal_compare -- always  # only names containing "always"
//! ```
//!
//! The workloads run in rounds: in each round every workload runs for one short slice, so
//! that slow drifts of the (shared, virtualised) disk hit every workload alike, and the two
//! sides of each target ratio run back to back. Rates are medians over the rounds; a ratio is
//! the median of the per-round ratios.
//!
//! Environment: `DUPLEX_BENCH_SLICE` (seconds per slice, default 0.25), `DUPLEX_BENCH_ROUNDS`
//! (default 20), `DUPLEX_BENCH_FULL=1` (replay a 1 GiB log instead of 256 MiB),
//! `DUPLEX_BENCH_DIR` (where the files go; default `target/duplex-bench-tmp`, which must not
//! be tmpfs).

mod report;

use report::{print_figures, print_ratios, print_replay_rates, Stats};

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use duplex_benches::{
    build_duplex_log, build_okaywal_log, describe_bench_root, reader_tail_log, records_for,
    replay_duplex, replay_log_bytes, replay_okaywal, run_for, thread_payloads, DuplexLog, OkayLog,
    RawLoop, RawMode, ReplayLog, LARGE, OKAYWAL_CHUNKS_PER_ENTRY, SMALL,
};
use duplex_wal::{Entry, SyncPolicy};

/// One run of one workload.
#[derive(Debug, Clone, Copy)]
struct Sample {
    /// Records (or commits) per second.
    ops: f64,
    /// Payload bytes per second.
    bytes: f64,
}

/// A workload that is set up: each call runs it for about the given time and returns the
/// records (or commits) completed and the time they took. Untimed clean-up (such as
/// syncing what a `Never` slice left dirty) happens inside, after the timing.
/// A phase-1 round is on the "fast disk" when the raw 100 B fallocate loop made at least
/// this many commits per second in it.
const FAST_DISK: f64 = 3000.0;

/// Payload of the bulk raw loops.
const BULK: usize = 64 << 10;

type Slice = Box<dyn FnMut(Duration) -> (u64, Duration)>;

struct Workload {
    name: String,
    what: String,
    len: usize,
    open: Box<dyn Fn() -> Slice>,
}

fn sample(ops: u64, len: usize, elapsed: Duration) -> Sample {
    let s = elapsed.as_secs_f64();
    Sample {
        ops: ops as f64 / s,
        bytes: (ops * len as u64) as f64 / s,
    }
}

fn raw_workload(mode: RawMode, len: usize) -> Workload {
    Workload {
        name: format!("raw/{}/{len}B", mode.name()),
        what: format!("pwrite {len} B + fdatasync, {} file", mode.name()),
        len,
        open: Box::new(move || {
            let mut l = RawLoop::new(mode, len).expect("raw loop file");
            Box::new(move |d| {
                let start = Instant::now();
                let mut n = 0u64;
                while start.elapsed() < d {
                    l.commit().expect("pwrite + fdatasync");
                    n += 1;
                }
                (n, start.elapsed())
            })
        }),
    }
}

fn duplex_workload(
    name: String,
    what: String,
    sync: SyncPolicy,
    threads: usize,
    len: usize,
) -> Workload {
    Workload {
        name,
        what,
        len,
        open: Box::new(move || {
            let log = DuplexLog::open("cmp-duplex", sync);
            let pays = thread_payloads(threads, len);
            Box::new(move |d| {
                let r = run_for(threads, d, |t, _| log.append(&pays[t]));
                // Leave nothing dirty for the next workload's fsyncs to trip over.
                log.wal().sync().expect("sync");
                r
            })
        }),
    }
}

fn okaywal_workload(threads: usize) -> Workload {
    Workload {
        name: format!("always/okaywal/{threads}"),
        what: format!("okaywal commit, 100 B, {threads} thread(s)"),
        len: SMALL,
        open: Box::new(move || {
            let log = OkayLog::open("cmp-okaywal");
            let pays = thread_payloads(threads, SMALL);
            Box::new(move |d| run_for(threads, d, |t, _| log.commit(&pays[t])))
        }),
    }
}

/// The workloads, ordered so that the two sides of each target ratio run next to each other
/// (the disk's fsync latency drifts a lot on a shared host).
fn workloads() -> Vec<Workload> {
    let mut w: Vec<Workload> = vec![
        raw_workload(RawMode::Growing, SMALL),
        raw_workload(RawMode::Zeroed, SMALL),
        raw_workload(RawMode::Fallocated, SMALL),
    ];
    for threads in [1usize, 4, 8, 16, 64] {
        w.push(duplex_workload(
            format!("always/duplex/{threads}"),
            format!("duplex-wal Always, 100 B, {threads} thread(s)"),
            SyncPolicy::Always,
            threads,
            SMALL,
        ));
        w.push(okaywal_workload(threads));
    }
    for mode in [RawMode::Growing, RawMode::Zeroed, RawMode::Fallocated] {
        w.push(raw_workload(mode, LARGE));
    }
    // Bulk commits (what a group commit or a batch writes): where fallocate'd, unwritten
    // extents cost the most against written (zero-filled or recycled) blocks.
    for mode in [RawMode::Zeroed, RawMode::Fallocated] {
        w.push(raw_workload(mode, BULK));
    }
    for preallocate in [true, false] {
        let tag = if preallocate {
            "prealloc"
        } else {
            "no-prealloc"
        };
        w.push(Workload {
            name: format!("reader-tail/{tag}"),
            what: format!(
                "open a WalReader on a 1-record log ({}) and read to the end",
                if preallocate {
                    "64 MiB pre-allocated segment"
                } else {
                    "segment not pre-allocated"
                }
            ),
            len: 0,
            open: Box::new(move || {
                let log = reader_tail_log(preallocate);
                Box::new(move |d| {
                    let start = Instant::now();
                    let mut n = 0u64;
                    while start.elapsed() < d {
                        assert_eq!(replay_duplex(&log.path()).records, 1);
                        n += 1;
                    }
                    (n, start.elapsed())
                })
            }),
        });
    }
    let k = OKAYWAL_CHUNKS_PER_ENTRY;
    for len in [SMALL, LARGE] {
        for threads in [1usize, 4] {
            w.push(duplex_workload(
                format!("never/duplex/{len}B/{threads}"),
                format!("duplex-wal Never, {len} B, {threads} thread(s)"),
                SyncPolicy::Never,
                threads,
                len,
            ));
        }
        w.push(Workload {
            name: format!("never/okaywal-{k}/{len}B/1"),
            what: format!("okaywal {k} chunks per entry (1 fsync / {k} records), {len} B"),
            len,
            open: Box::new(move || {
                let log = OkayLog::open("cmp-okaywal-chunks");
                let pay = thread_payloads(1, len).remove(0);
                Box::new(move |d| {
                    let (n, e) = run_for(1, d, |_, _| log.commit_chunks(&pay, k));
                    (n * k as u64, e)
                })
            }),
        });
        w.push(Workload {
            name: format!("batch/duplex-{k}/{len}B/1"),
            what: format!(
                "duplex-wal Always, append_batch of {k} (1 fsync / {k} records), {len} B"
            ),
            len,
            open: Box::new(move || {
                let log = DuplexLog::open("cmp-duplex-batch", SyncPolicy::Always);
                let pay = thread_payloads(1, len).remove(0);
                Box::new(move |d| {
                    let entries: Vec<Entry<'_>> = (0..k)
                        .map(|_| Entry {
                            kind: 1,
                            payload: &pay,
                        })
                        .collect();
                    let (n, e) = run_for(1, d, |_, _| {
                        log.wal().append_batch(&entries).expect("append_batch");
                    });
                    (n * k as u64, e)
                })
            }),
        });
    }
    w
}

/// fdatasync latency percentiles of the raw 100 B fallocate loop, to show how steady the
/// disk is while we measure.
fn latency_probe(label: &str) {
    let mut l = RawLoop::new(RawMode::Fallocated, SMALL).expect("raw loop file");
    let mut v: Vec<f64> = (0..1000)
        .map(|_| {
            let t = Instant::now();
            l.commit().expect("pwrite + fdatasync");
            t.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    v.sort_by(f64::total_cmp);
    let p = |q: f64| v[((v.len() - 1) as f64 * q) as usize];
    println!(
        "- pwrite 100 B + fdatasync latency {label} (1000 in a row): p50 {:.0} us, p90 {:.0} us, \
         p99 {:.0} us, max {:.0} us",
        p(0.5),
        p(0.9),
        p(0.99),
        p(1.0)
    );
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn env_num(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal"))
                .map(|l| l.split_whitespace().nth(1).unwrap_or("0").to_string())
        })
        .and_then(|kb| kb.parse::<u64>().ok())
        .map(|kb| format!("{:.1} GiB", kb as f64 / (1 << 20) as f64))
        .unwrap_or_default();
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    format!("{cpus} CPU(s) ({cpu}), {mem} RAM, Linux {kernel}")
}

fn fmt_rate(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2} M", v / 1e6)
    } else if v >= 1e4 {
        format!("{:.1} k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

struct Replays {
    name: String,
    log: ReplayLog,
    duplex: bool,
}

/// Which phase a workload runs in: 1 durable commits, 2 bulk writes, 3 reads.
fn phase_of(name: &str) -> u8 {
    if name.starts_with("always/")
        || (name.starts_with("raw/") && !name.ends_with(&format!("/{BULK}B")))
    {
        1
    } else if name.starts_with("reader-tail/") || name.starts_with("replay/") {
        3
    } else {
        2
    }
}

/// Writes the replay logs (once) and reads each one untimed, so they are in the page cache.
fn build_replays(wanted: &dyn Fn(&str) -> bool) -> Vec<Replays> {
    let log_bytes = replay_log_bytes();
    let mut replays: Vec<Replays> = Vec::new();
    for len in [SMALL, LARGE] {
        let n = records_for(len, log_bytes);
        for duplex in [true, false] {
            let name = format!(
                "replay/{}/{len}B",
                if duplex { "duplex" } else { "okaywal" }
            );
            if !wanted(&name) {
                continue;
            }
            let t = Instant::now();
            let log = if duplex {
                build_duplex_log(len, n)
            } else {
                build_okaywal_log(len, n)
            };
            eprintln!(
                "built {name}: {n} records, {} MiB of payload in {:.1} s",
                log.payload_bytes >> 20,
                t.elapsed().as_secs_f64()
            );
            let _ = if duplex {
                replay_duplex(&log.path())
            } else {
                replay_okaywal(&log.path())
            };
            replays.push(Replays { name, log, duplex });
        }
    }
    replays
}

/// Per-workload samples, indexed by round.
type Results = BTreeMap<String, Vec<Sample>>;

/// What the rounds measured.
#[derive(Default)]
struct Run {
    results: Results,
    /// Log bytes each replay read (Duplex's reader reports them).
    replay_log_bytes_read: BTreeMap<String, u64>,
    /// Name and description of every replay workload run.
    replay_info: Vec<(String, String)>,
}

fn main() {
    let filters: Vec<String> = std::env::args().skip(1).collect();
    let wanted =
        |name: &str| filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str()));
    let slice_secs = env_num("DUPLEX_BENCH_SLICE", 0.25);
    let rounds = env_num("DUPLEX_BENCH_ROUNDS", 20.0).max(1.0) as usize;
    let slice = Duration::from_secs_f64(slice_secs);

    println!("# wal_compare");
    println!();
    println!("- machine: {}", machine());
    println!("- bench files: {}", describe_bench_root());
    println!(
        "- three phases (1: durable commits, 2: bulk writes, 3: reads), each of {rounds} \
         rounds; in a round every workload of the phase runs for {slice_secs} s (a replay: one \
         pass), in the order of the table below; rates are medians over the rounds \
         (min..max); a ratio is the median of its per-round ratios"
    );

    let all = workloads();
    let run = run_phases(&all, &wanted, rounds, slice);
    latency_probe("at the end");
    println!();

    let stats = Stats::new(&run.results);
    let mut names: Vec<(String, String)> = all
        .iter()
        .filter(|w| wanted(&w.name))
        .map(|w| (w.name.clone(), w.what.clone()))
        .collect();
    names.extend(run.replay_info.iter().cloned());
    print_figures(&stats, &names);
    print_ratios(&stats);
    println!();
    print_replay_rates(&stats, &run);
}

/// Phase 1: durable commits (fsync-bound); phase 2: bulk writes; phase 3: reads. Bulk
/// writes never run between the two sides of an fsync-bound ratio, and the replay logs are
/// written only after the write phases.
fn run_phases(
    all: &[Workload],
    wanted: &dyn Fn(&str) -> bool,
    rounds: usize,
    slice: Duration,
) -> Run {
    let mut run = Run::default();
    for phase in 1..=3 {
        let mut chosen: Vec<(&Workload, Slice)> = all
            .iter()
            .filter(|w| wanted(&w.name) && phase_of(&w.name) == phase)
            .map(|w| (w, (w.open)()))
            .collect();
        let mut replays: Vec<Replays> = Vec::new();
        if phase == 3 {
            replays = build_replays(wanted);
        }
        if chosen.is_empty() && replays.is_empty() {
            continue;
        }
        latency_probe(&format!("at the start of phase {phase}"));
        for round in 0..rounds {
            for (w, slice_run) in chosen.iter_mut() {
                let (n, e) = slice_run(slice);
                record(
                    &mut run.results,
                    &w.name,
                    sample(n, w.len, e),
                    round,
                    rounds,
                );
            }
            for r in &replays {
                replay_once(&mut run, r, round, rounds);
            }
        }
        for r in &replays {
            run.replay_info.push((
                r.name.clone(),
                format!(
                    "read {} records ({} MiB payload) from the page cache",
                    r.log.records,
                    r.log.payload_bytes >> 20
                ),
            ));
        }
    }
    run
}

/// Notes one sample of `name` and says so on stderr.
fn record(results: &mut Results, name: &str, s: Sample, round: usize, rounds: usize) {
    eprintln!(
        "round {}/{rounds} {:<28} {:>12} rec/s {:>9.1} MB/s",
        round + 1,
        name,
        fmt_rate(s.ops),
        s.bytes / 1e6
    );
    results.entry(name.to_string()).or_default().push(s);
}

/// One pass of a replay workload, checked to return every record and byte.
fn replay_once(run: &mut Run, r: &Replays, round: usize, rounds: usize) {
    let t = Instant::now();
    let got = if r.duplex {
        replay_duplex(&r.log.path())
    } else {
        replay_okaywal(&r.log.path())
    };
    let e = t.elapsed();
    assert_eq!(got.records, r.log.records, "{}: records lost", r.name);
    assert_eq!(
        got.payload_bytes, r.log.payload_bytes,
        "{}: bytes lost",
        r.name
    );
    if got.log_bytes > 0 {
        run.replay_log_bytes_read
            .insert(r.name.clone(), got.log_bytes);
    }
    let s = sample(got.records, r.log.record_len, e);
    record(&mut run.results, &r.name, s, round, rounds);
}
