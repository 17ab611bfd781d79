//! Backup, WAL archive and restore figures for issue 4 ("Speed"), every measurement in one
//! process run so the ratios are fair.
//!
//! Run: `cargo run --release -p duplex-benches --bin backup_compare`.
//!
//! Workloads (16-byte random keys, 100-byte random non-zero values, files on the file
//! system of `target/`, which must not be tmpfs):
//! 1. `rf`: load a base of `DUPLEX_RF_BASE_KEYS` keys, take a backup, write
//!    `DUPLEX_RF_RECORDS` more SETs (one WAL record each, 1000 records per `write_many`) so the
//!    archive holds them; then `restore_chain` + `roll_forward`, timing `roll_forward` alone
//!    (records/s, MB/s, split into its phases: check (read, check and gather the archive),
//!    sort, merge into the tree, finish), against a plain sequential read of the same
//!    archive segment files.
//! 2. `redis`: the same SETs through a pipelined connection into `redis-server` with
//!    `appendonly yes`, `aof-use-rdb-preamble no`, `appendfsync no`, automatic rewrites off;
//!    then restarts it and reads the AOF load time from its log line "DB loaded from append
//!    only file: X seconds" (also the wall time until it answers PING). With `rf`, the
//!    Redis reload runs in every roll-forward round, alternately before and after it, and
//!    the summary also gives the median of the per-round ratios. Skipped, with how to
//!    install it, when `redis-server` is missing (a benchmark never installs packages).
//! 3. `backup`: `Database::backup` of a store of `DUPLEX_STORE_MIB` (default 1024) against `cp`
//!    of the same store file (and `cp` followed by `fsync`, as the backup fsyncs), page cache
//!    warm for both.
//! 4. `latency`: a writer thread doing durable single puts (`SyncPolicy::Always`) records
//!    every latency, once while a backup of that store runs and once without.
//! 5. `restore`: end-to-end restore of a store of each size in `DUPLEX_RESTORE_MIB` (default
//!    `256,512,1024`) with `DUPLEX_ARCHIVE_MIB` (default 256) of archive written after the
//!    backup: `restore_chain` (verify + copy + check), `roll_forward` (check, sort, merge),
//!    then `Database::open`; a linear fit over the sizes
//!    extrapolates to 3 GB (the patent's yardstick).
//!
//! Environment: `DUPLEX_ROUNDS` (repeats of every timed step, medians reported; default 3),
//! `DUPLEX_ONLY` (comma-separated workloads among `rf,redis,backup,latency,restore`),
//! `DUPLEX_RF_RECORDS` (default 2,000,000), `DUPLEX_RF_BASE_KEYS` (default 1,000,000),
//! `DUPLEX_STORE_MIB`, `DUPLEX_RESTORE_MIB`, `DUPLEX_ARCHIVE_MIB`, `DUPLEX_LATENCY_SECS`
//! (baseline window when no backup runs; default: as long as the backup took),
//! `DUPLEX_BENCH_DIR` (files go to `$DUPLEX_BENCH_DIR/backup`, default `target/backup-bench`).

mod redis;
mod summary;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use duplex_benches::kv::{key, load_sorted, value, write_records};
use duplex_engine::{
    restore_chain, roll_forward, Config, Database, PhaseTimes, RollForwardOptions, SyncPolicy,
    Target,
};
use duplex_wal::{StdStorage, Storage};
use redis::RedisBench;

const MIB: u64 = 1 << 20;

// ---------------------------------------------------------------------------------------
// Keys, values, environment, small helpers.

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

fn env_list(name: &str, default: &[u64]) -> Vec<u64> {
    match std::env::var(name) {
        Ok(v) => v
            .split(',')
            .filter_map(|s| s.trim().replace('_', "").parse().ok())
            .collect(),
        Err(_) => default.to_vec(),
    }
}

fn wants(name: &str) -> bool {
    match std::env::var("DUPLEX_ONLY") {
        Ok(v) => v.split(',').any(|s| s.trim() == name),
        Err(_) => true,
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn fmt_all(v: &[f64], digits: usize) -> String {
    v.iter()
        .map(|x| format!("{x:.digits$}"))
        .collect::<Vec<_>>()
        .join(" / ")
}

/// Directory under which every file of this runner goes.
fn bench_root() -> PathBuf {
    duplex_benches::runner_root("backup", "backup-bench")
}

/// A fresh empty directory under [`bench_root`] (removed on drop).
fn fresh_dir(tag: &str) -> tempfile::TempDir {
    duplex_benches::temp_dir_in(&bench_root(), tag)
}

fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

fn dir_bytes(dir: &Path) -> u64 {
    let mut n = 0;
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            n += if p.is_dir() {
                dir_bytes(&p)
            } else {
                file_len(&p)
            };
        }
    }
    n
}

fn storage() -> Arc<dyn Storage> {
    Arc::new(StdStorage)
}

/// The store file of a data directory (`store-*.dpx`).
fn store_file(dir: &Path) -> PathBuf {
    std::fs::read_dir(dir)
        .expect("list data dir")
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("store-") && n.ends_with(".dpx"))
        })
        .expect("a store file")
}

/// Reads a file sequentially with 8 MiB reads; returns the bytes read.
fn read_file(p: &Path, buf: &mut [u8]) -> u64 {
    let mut f = std::fs::File::open(p).expect("open for reading");
    let mut n = 0u64;
    loop {
        let r = f.read(buf).expect("read");
        if r == 0 {
            return n;
        }
        n += r as u64;
    }
}

// ---------------------------------------------------------------------------------------
// Building databases.

/// Configuration of the source database: checkpoints by WAL volume only (every 64 MiB, the
/// default), the archive as given.
fn source_config(sync: SyncPolicy, archive: Option<PathBuf>) -> Config {
    Config {
        sync,
        checkpoint_interval: None,
        archive_dir: archive,
        ..Config::default()
    }
}

/// What `duplex-recover restore` opens a restored database with.
fn restore_config() -> Config {
    Config {
        background: false,
        ..Config::default()
    }
}

/// Store bytes per key after one checkpoint of a fresh load (measured, not assumed).
fn store_bytes_per_key() -> f64 {
    let d = fresh_dir("calib");
    let n = 300_000;
    let db = Database::open(d.path().join("db"), source_config(SyncPolicy::Never, None))
        .expect("open calib");
    load_sorted(&db, n);
    db.checkpoint().expect("checkpoint");
    let b = db.stats().store_bytes as f64 / n as f64;
    db.close().expect("close");
    b
}

/// A source database of about `store_bytes` of store, loaded without an archive, then
/// reopened with `sync` and an archive in `archive`.
struct Source {
    _dir: tempfile::TempDir,
    data: PathBuf,
    archive: PathBuf,
    keys: u64,
    load_s: f64,
}

fn build_source(tag: &str, keys: u64) -> Source {
    let dir = fresh_dir(tag);
    let data = dir.path().join("data");
    let archive = dir.path().join("archive");
    std::fs::create_dir_all(&archive).expect("archive dir");
    let t = Instant::now();
    let db = Database::open(&data, source_config(SyncPolicy::Never, None)).expect("open");
    load_sorted(&db, keys);
    db.close().expect("close after load");
    let load_s = t.elapsed().as_secs_f64();
    Source {
        _dir: dir,
        data,
        archive,
        keys,
        load_s,
    }
}

impl Source {
    fn open(&self, sync: SyncPolicy) -> Database {
        Database::open(&self.data, source_config(sync, Some(self.archive.clone())))
            .expect("reopen with archive")
    }

    fn backups(&self) -> PathBuf {
        let p = self.data.parent().expect("parent").join("backups");
        std::fs::create_dir_all(&p).expect("backups dir");
        p
    }
}

/// Makes sure everything written so far is in the archive.
fn archive_all(db: &Database) {
    db.wal().rotate().expect("rotate");
    db.wal().archive_closed().expect("archive_closed");
}

/// Archive segments a roll-forward from `from_lsn` reads: the one holding it and all after.
fn archive_segments_from(archive: &Path, from_lsn: u64) -> Vec<PathBuf> {
    let segs = duplex_wal::list_segments(&StdStorage, &[archive.to_path_buf()]).expect("list");
    let start = segs
        .iter()
        .rposition(|(first, _)| *first <= from_lsn)
        .unwrap_or(0);
    segs[start..].iter().map(|(_, p)| p.clone()).collect()
}

// ---------------------------------------------------------------------------------------
// Restores.

/// One timed restore: restore_chain, roll_forward (split), open.
#[derive(Debug, Clone, Copy, Default)]
struct RestoreRun {
    chain_s: f64,
    rf_s: f64,
    rf_times: PhaseTimes,
    open_s: f64,
    records: u64,
    payload: u64,
}

impl RestoreRun {
    fn total(&self) -> f64 {
        self.chain_s + self.rf_s + self.open_s
    }
}

fn restore_once(backup: &Path, archive: &Path, target: Target) -> RestoreRun {
    let st = storage();
    let into = fresh_dir("restore");
    let r = into.path().join("db");
    let t = Instant::now();
    restore_chain(&st, &[backup.to_path_buf()], &r).expect("restore_chain");
    let chain_s = t.elapsed().as_secs_f64();
    let opts = RollForwardOptions {
        target,
        config: restore_config(),
        ..RollForwardOptions::default()
    };
    let t = Instant::now();
    let rep = roll_forward(st.clone(), &r, &[archive.to_path_buf()], &opts, &mut |_| {})
        .expect("roll_forward");
    let rf_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let db = Database::open(&r, restore_config()).expect("open restored");
    let open_s = t.elapsed().as_secs_f64();
    db.close().expect("close restored");
    RestoreRun {
        chain_s,
        rf_s,
        rf_times: rep.times,
        open_s,
        records: rep.records,
        payload: rep.bytes,
    }
}

/// The disk's durable write rate right now: 256 MiB written and fdatasynced (this VM's disk
/// switches between ~2 GB/s and ~0.35 GB/s, and a roll-forward writes its new tree
/// durably, so each round says which mode it met).
fn disk_write_mbs() -> f64 {
    let d = fresh_dir("disk");
    let p = d.path().join("probe");
    let buf = vec![0x5Au8; 4 << 20];
    let t = Instant::now();
    let mut f = std::fs::File::create(&p).expect("create disk probe");
    for _ in 0..64 {
        f.write_all(&buf).expect("write disk probe");
    }
    f.sync_data().expect("fdatasync disk probe");
    256.0 / t.elapsed().as_secs_f64()
}

/// A roll-forward's split, for the per-round lines.
fn split(t: &PhaseTimes) -> String {
    format!(
        "check {:.3} s, sort {:.3} s, merge {:.3} s, finish {:.3} s",
        t.check,
        t.sort,
        t.merge + t.read,
        t.finish
    )
}

// ---------------------------------------------------------------------------------------
// 1. Roll-forward rate.

#[derive(Debug, Default)]
struct RfResult {
    records: u64,
    archive_bytes: u64,
    payload: u64,
    rf_rate: Vec<f64>,
    rf_s: Vec<f64>,
    check_s: Vec<f64>,
    sort_s: Vec<f64>,
    merge_s: Vec<f64>,
    read_mbs: Vec<f64>,
    /// Redis AOF reload time / roll-forward time, per round (when Redis ran alongside).
    ratio: Vec<f64>,
    chain_s: Vec<f64>,
    setup_s: f64,
}

fn bench_rf(rounds: u64, base_keys: u64, n: u64, mut redis: Option<&mut RedisBench>) -> RfResult {
    let t = Instant::now();
    let src = build_source("rf", base_keys);
    let db = src.open(SyncPolicy::Never);
    let backup = src.backups().join("full");
    db.backup(&backup, None).expect("backup");
    let from = db.stats().checkpoint_lsn + 1;
    write_records(&db, src.keys, src.keys + n);
    archive_all(&db);
    db.close().expect("close source");
    let setup_s = t.elapsed().as_secs_f64();
    let segs = archive_segments_from(&src.archive, from);
    let archive_bytes: u64 = segs.iter().map(|p| file_len(p)).sum();
    println!(
        "  setup {setup_s:.1} s: base {base_keys} keys, {n} SETs after the backup, {} archive segment(s) to read, {:.1} MiB",
        segs.len(),
        archive_bytes as f64 / MIB as f64
    );
    let mut res = RfResult {
        records: n,
        archive_bytes,
        setup_s,
        ..RfResult::default()
    };
    let mut buf = vec![0u8; 8 << 20];
    for round in 0..rounds {
        // Alternate the order so neither side always gets the fresher page cache.
        let mut read_once = || {
            let t = Instant::now();
            let b: u64 = segs.iter().map(|p| read_file(p, &mut buf)).sum();
            b as f64 / MIB as f64 / t.elapsed().as_secs_f64()
        };
        let read_first = round % 2 == 1;
        if read_first {
            res.read_mbs.push(read_once());
        }
        let disk = disk_write_mbs();
        // Redis reloads in the same round, alternately before and after, so both meet the
        // same machine (its speed drifts over minutes on this VM).
        let mut redis_s = None;
        if let Some(r) = redis.as_deref_mut().filter(|_| read_first) {
            redis_s = Some(r.round(round));
        }
        let run = restore_once(&backup, &src.archive, Target::End);
        assert_eq!(run.records, n, "roll-forward applied every record");
        if let Some(r) = redis.as_deref_mut().filter(|_| !read_first) {
            redis_s = Some(r.round(round));
        }
        if let Some(l) = redis_s {
            res.ratio.push(l / run.rf_s);
        }
        if !read_first {
            res.read_mbs.push(read_once());
        }
        res.payload = run.payload;
        res.rf_rate.push(run.records as f64 / run.rf_s);
        res.rf_s.push(run.rf_s);
        res.check_s.push(run.rf_times.check);
        res.sort_s.push(run.rf_times.sort);
        res.merge_s.push(run.rf_times.merge + run.rf_times.read);
        res.chain_s.push(run.chain_s);
        println!(
            "  round {round}: roll_forward {:.3} s ({:.0} records/s; {}), sequential read {:.0} MiB/s, disk write+fdatasync just before {disk:.0} MiB/s, load {}",
            run.rf_s,
            run.records as f64 / run.rf_s,
            split(&run.rf_times),
            res.read_mbs.last().copied().unwrap_or(0.0),
            loadavg()
        );
    }
    res
}

// ---------------------------------------------------------------------------------------
// 3 + 4. Backup throughput and write latency during a backup.

#[derive(Debug, Default)]
struct BackupResult {
    store_bytes: u64,
    backup_s: Vec<f64>,
    cp_s: Vec<f64>,
    cp_sync_s: Vec<f64>,
}

fn bench_backup(rounds: u64, src: &Source, db: &Database) -> BackupResult {
    let store = store_file(&src.data);
    let mut res = BackupResult {
        store_bytes: db.stats().store_bytes,
        ..BackupResult::default()
    };
    let root = src.backups();
    let mut buf = vec![0u8; 8 << 20];
    for round in 0..rounds {
        // Warm: read the store once so both copies start from the page cache.
        read_file(&store, &mut buf);
        let dest = root.join(format!("tput-{round}"));
        let t = Instant::now();
        let rep = db.backup(&dest, None).expect("backup");
        let b = t.elapsed().as_secs_f64();
        std::fs::remove_dir_all(&dest).expect("remove backup");
        read_file(&store, &mut buf);
        let cp_dest = root.join(format!("cp-{round}"));
        let t = Instant::now();
        let ok = Command::new("cp")
            .arg(&store)
            .arg(&cp_dest)
            .status()
            .expect("cp");
        assert!(ok.success(), "cp failed");
        let c = t.elapsed().as_secs_f64();
        std::fs::File::open(&cp_dest)
            .and_then(|f| f.sync_all())
            .expect("fsync cp");
        let cs = t.elapsed().as_secs_f64();
        std::fs::remove_file(&cp_dest).expect("remove cp");
        println!(
            "  round {round}: backup of {:.0} MiB {b:.3} s ({:.0} MiB/s), cp {c:.3} s ({:.0} MiB/s), cp+fsync {cs:.3} s, load {}",
            rep.bytes_copied as f64 / MIB as f64,
            rep.bytes_copied as f64 / MIB as f64 / b,
            file_len(&store) as f64 / MIB as f64 / c,
            loadavg()
        );
        res.store_bytes = rep.bytes_copied;
        res.backup_s.push(b);
        res.cp_s.push(c);
        res.cp_sync_s.push(cs);
    }
    res
}

/// Latencies (µs) of durable single puts from one writer thread while `during` runs.
fn put_latencies(db: &Database, first_key: u64, during: impl FnOnce()) -> Vec<f64> {
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let h = s.spawn(|| {
            let mut lat = Vec::with_capacity(1 << 16);
            let mut k = first_key;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                db.put(&key(k), &value(k)).expect("put");
                lat.push(t.elapsed().as_secs_f64() * 1e6);
                k += 1;
            }
            lat
        });
        std::thread::sleep(Duration::from_millis(100));
        during();
        stop.store(true, Ordering::Relaxed);
        h.join().expect("writer")
    })
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    v[((v.len() - 1) as f64 * p).round() as usize]
}

#[derive(Debug, Default)]
struct LatencyResult {
    base_max: Vec<f64>,
    base_p99: Vec<f64>,
    base_n: Vec<f64>,
    bk_max: Vec<f64>,
    bk_p99: Vec<f64>,
    bk_n: Vec<f64>,
    bk_s: Vec<f64>,
}

fn bench_latency(rounds: u64, src: &Source, db: &Database) -> LatencyResult {
    let mut res = LatencyResult::default();
    let root = src.backups();
    let mut next_key = 1u64 << 50;
    for round in 0..rounds {
        let dest = root.join(format!("lat-{round}"));
        let mut took = 0.0;
        let mut lat = put_latencies(db, next_key, || {
            let t = Instant::now();
            db.backup(&dest, None).expect("backup");
            took = t.elapsed().as_secs_f64();
        });
        next_key += lat.len() as u64 + 1;
        std::fs::remove_dir_all(&dest).expect("remove backup");
        let window = std::env::var("DUPLEX_LATENCY_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(took);
        let mut base = put_latencies(db, next_key, || {
            std::thread::sleep(Duration::from_secs_f64(window))
        });
        next_key += base.len() as u64 + 1;
        let (bm, bp) = (pct(&mut lat, 1.0), pct(&mut lat, 0.99));
        let (nm, np) = (pct(&mut base, 1.0), pct(&mut base, 0.99));
        println!(
            "  round {round}: during a {took:.2} s backup {} puts, p99 {bp:.0} µs, max {bm:.0} µs; without backup ({window:.2} s) {} puts, p99 {np:.0} µs, max {nm:.0} µs, load {}",
            lat.len(),
            base.len(),
            loadavg()
        );
        res.bk_max.push(bm);
        res.bk_p99.push(bp);
        res.bk_n.push(lat.len() as f64);
        res.bk_s.push(took);
        res.base_max.push(nm);
        res.base_p99.push(np);
        res.base_n.push(base.len() as f64);
    }
    res
}

// ---------------------------------------------------------------------------------------
// 5 + 6. End-to-end restores at several sizes.

#[derive(Debug, Default)]
struct RestoreResult {
    store_mib: f64,
    archive_mib: f64,
    records: u64,
    load_s: f64,
    runs: Vec<RestoreRun>,
}

impl RestoreResult {
    fn med(&self, f: impl Fn(&RestoreRun) -> f64) -> f64 {
        median(self.runs.iter().map(f).collect())
    }
}

/// Everything measured on one source database of `store_mib`.
#[derive(Debug, Default)]
struct SizeResult {
    restore: RestoreResult,
    backup: Option<BackupResult>,
    latency: Option<LatencyResult>,
}

fn bench_size(
    rounds: u64,
    store_mib: u64,
    archive_mib: u64,
    bytes_per_key: f64,
    bytes_per_record: f64,
    with_backup_figures: bool,
) -> SizeResult {
    let keys = (store_mib as f64 * MIB as f64 / bytes_per_key) as u64;
    let src = build_source(&format!("size{store_mib}"), keys);
    let db = src.open(SyncPolicy::Always);
    println!(
        "  store {:.0} MiB ({keys} keys) loaded in {:.1} s",
        db.stats().store_bytes as f64 / MIB as f64,
        src.load_s
    );
    let mut out = SizeResult::default();
    if with_backup_figures && wants("backup") {
        println!("  backup vs cp:");
        out.backup = Some(bench_backup(rounds, &src, &db));
    }
    if with_backup_figures && wants("latency") {
        println!("  durable put latency with and without a concurrent backup:");
        out.latency = Some(bench_latency(rounds, &src, &db));
    }
    if !wants("restore") {
        db.close().expect("close");
        return out;
    }
    let backup = src.backups().join("full");
    let rep = db.backup(&backup, None).expect("backup");
    let from = rep.manifest.checkpoint_lsn + 1;
    let records = (archive_mib as f64 * MIB as f64 / bytes_per_record) as u64;
    let first = 1u64 << 56;
    write_records(&db, first, first + records);
    archive_all(&db);
    let until = db.stats().last_lsn;
    drop(db);
    let archive_bytes: u64 = archive_segments_from(&src.archive, from)
        .iter()
        .map(|p| file_len(p))
        .sum();
    let mut res = RestoreResult {
        store_mib: rep.bytes_copied as f64 / MIB as f64,
        archive_mib: archive_bytes as f64 / MIB as f64,
        records,
        load_s: src.load_s,
        runs: Vec::new(),
    };
    println!(
        "  restore of a {:.0} MiB backup + {:.0} MiB of archive ({records} SETs):",
        res.store_mib, res.archive_mib
    );
    for round in 0..rounds {
        let run = restore_once(&backup, &src.archive, Target::Lsn(until));
        println!(
            "  round {round}: total {:.2} s = restore_chain {:.2} + roll_forward {:.2} ({}) + open {:.3}, load {}",
            run.total(),
            run.chain_s,
            run.rf_s,
            split(&run.rf_times),
            run.open_s,
            loadavg()
        );
        assert_eq!(run.records, until - from + 1, "every record rolled forward");
        res.runs.push(run);
    }
    out.restore = res;
    out
}

/// Least-squares line through (x, y).
fn fit(xs: &[f64], ys: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let mx = xs.iter().sum::<f64>() / n;
    let my = ys.iter().sum::<f64>() / n;
    let sxx: f64 = xs.iter().map(|x| (x - mx) * (x - mx)).sum();
    let sxy: f64 = xs.iter().zip(ys).map(|(x, y)| (x - mx) * (y - my)).sum();
    let b = if sxx > 0.0 { sxy / sxx } else { 0.0 };
    (my - b * mx, b)
}

// ---------------------------------------------------------------------------------------

fn main() {
    let rounds = env_u64("DUPLEX_ROUNDS", 3).max(1);
    let rf_records = env_u64("DUPLEX_RF_RECORDS", 2_000_000);
    let rf_base = env_u64("DUPLEX_RF_BASE_KEYS", 1_000_000);
    let store_mib = env_u64("DUPLEX_STORE_MIB", 1024);
    let mut sizes = env_list("DUPLEX_RESTORE_MIB", &[256, 512, 1024]);
    let archive_mib = env_u64("DUPLEX_ARCHIVE_MIB", 256);
    if !sizes.contains(&store_mib) {
        sizes.push(store_mib);
    }
    sizes.sort_unstable();
    let root = bench_root();
    std::fs::create_dir_all(&root).expect("bench root");
    let fs = duplex_benches::fs_type(&root);
    let started = Instant::now();
    println!("backup_compare: files in {} ({fs})", root.display());
    if fs == "tmpfs" {
        eprintln!("WARNING: tmpfs; set DUPLEX_BENCH_DIR to a real disk");
    }
    println!(
        "rounds {rounds}, roll-forward: {rf_records} SETs onto {rf_base} keys; store {store_mib} MiB; restore sizes {sizes:?} MiB + {archive_mib} MiB archive; load {}",
        loadavg()
    );

    let mut redis_bench = None;
    if wants("redis") {
        println!("\n[2] redis-server reloading a pure AOF of the same SETs (set up first)");
        match RedisBench::setup(rf_records) {
            Ok(r) => redis_bench = Some(r),
            Err(e) => println!("  SKIPPED: {e}"),
        }
    }
    let mut rf = None;
    if wants("rf") || wants("restore") {
        println!("\n[1] roll-forward rate (and the Redis reload in the same rounds)");
        rf = Some(bench_rf(rounds, rf_base, rf_records, redis_bench.as_mut()));
    } else if let Some(r) = redis_bench.as_mut() {
        for round in 0..rounds {
            r.round(round);
        }
    }
    let redis = redis_bench.map(|b| b.res);
    let mut by_size: Vec<(u64, SizeResult)> = Vec::new();
    if wants("backup") || wants("latency") || wants("restore") {
        let bpk = store_bytes_per_key();
        let bpr = rf
            .as_ref()
            .map(|r| r.archive_bytes as f64 / r.records as f64)
            .unwrap_or(150.0);
        println!("\n[3-6] store {bpk:.1} bytes/key, archive {bpr:.1} bytes/SET");
        for &s in &sizes {
            if s != store_mib && !wants("restore") {
                continue;
            }
            println!("\n  --- store of {s} MiB ---");
            let r = bench_size(rounds, s, archive_mib, bpk, bpr, s == store_mib);
            by_size.push((s, r));
        }
    }

    println!(
        "\n==== Summary (medians of {rounds}; load now {}; {:.0} s in all) ====",
        loadavg(),
        started.elapsed().as_secs_f64()
    );
    summary::print(
        rf.as_ref(),
        redis.as_ref(),
        rf_records,
        &by_size,
        archive_mib,
    );
}
