//! Side-by-side comparison of the Duplex engine with `redb` and `fjall` (issue 3, "Speed and
//! memory"), every workload in one process run so the ratios are fair.
//!
//! Run: `cargo run --release -p duplex-benches --bin engine_compare`.
//!
//! Each engine runs with its strongest durability setting that matches ours
//! (`SyncPolicy::Always`: a write is acknowledged once `fdatasync`ed):
//! - Duplex: `SyncPolicy::Always` (group-committed WAL, `fdatasync`);
//! - redb: every write transaction commits with the default `Durability::Immediate`;
//! - fjall: a single put is `insert` + `Database::persist(PersistMode::SyncData)` (the persist
//!   runs after the journal lock is released, so concurrent writers share fsyncs); a batch is
//!   a `WriteBatch` with `durability(Some(PersistMode::SyncData))`.
//!
//! Workloads (16-byte random keys, 100-byte random non-zero values):
//! - durable random puts from 1 and 16 threads, for a fixed time (writes/s);
//! - batched puts, 1000 per batch, durable per batch, one thread (keys/s);
//! - a load of 1M keys in batches of 1000, then "settling" (Duplex: `checkpoint`; fjall:
//!   memtable flush + major compaction; redb: nothing, its commits are already the tree),
//!   then random gets from one thread (gets/s; for redb also with one read transaction per
//!   1000 gets), a full scan (keys/s) and the open time after a clean close;
//! - open after a crash: a child process writes 64 MiB of WAL (Duplex, with
//!   `checkpoint_wal_bytes` out of reach) or the same keys (peers: fjall with a memtable
//!   large enough that its whole journal is replayed, redb committing every batch), is killed
//!   with SIGKILL, and the parent times the reopen and checks the last key;
//! - RSS per key: a fresh child process reads `VmRSS` before opening and after loading 1M
//!   keys (after settling too), and another fresh child after reopening (and after a full
//!   scan, which maps the whole tree for Duplex). 10M keys once per run (see
//!   `DUPLEX_RSS_10M`).
//!
//! Environment: `DUPLEX_ROUNDS` (default 3: every workload runs that many times, engines in
//! rotating order, medians reported), `DUPLEX_SECS` (seconds per timed workload, default 5),
//! `DUPLEX_KEYS` (keys for gets/scan, default 1,000,000), `DUPLEX_RSS_10M` (0 to skip the
//! 10M-key RSS run, default 1), `DUPLEX_ONLY` (comma-separated workloads to run: put, batch, read, crash, rss),
//! `DUPLEX_ENGINES` (comma-separated engines, default `duplex,redb,fjall`),
//! `DUPLEX_BENCH_DIR` (where the databases go; default `target/engine-bench`).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Barrier;
use std::time::{Duration, Instant};

pub use duplex_benches::kv::{key, mix, value, KEY_LEN};
use duplex_benches::run_for;

/// Puts per batch in the batched workloads and in every load.
pub const BATCH: usize = 1000;
/// Threads of the concurrent put workload.
pub const THREADS: usize = 16;
/// WAL bytes the crash workload leaves to replay.
pub const CRASH_WAL_BYTES: u64 = 64 << 20;

// ---------------------------------------------------------------------------------------
// Keys and values.

/// Key numbers used by thread `t` of a put workload: disjoint from each other and from the
/// loaded keys `0..n`.
pub fn thread_base(t: usize) -> u64 {
    (t as u64 + 1) << 40
}

/// A small xorshift generator for random get indices.
#[derive(Debug, Clone)]
pub struct XorShift(pub u64);

impl XorShift {
    /// Next value.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

// ---------------------------------------------------------------------------------------
// The engines behind one interface.

/// The engines under comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// `duplex-engine`.
    Duplex,
    /// `redb`.
    Redb,
    /// `fjall`.
    Fjall,
}

/// Every engine, Duplex first.
pub const KINDS: [Kind; 3] = [Kind::Duplex, Kind::Redb, Kind::Fjall];

impl Kind {
    /// Short name.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Duplex => "duplex",
            Kind::Redb => "redb",
            Kind::Fjall => "fjall",
        }
    }

    /// Parses [`Kind::name`].
    pub fn parse(s: &str) -> Option<Kind> {
        KINDS.into_iter().find(|k| k.name() == s)
    }

    /// Opens (or creates) this engine's database in `dir`. `crash_prep` keeps everything
    /// written in the log (Duplex: no checkpoint; fjall: no memtable flush).
    pub fn open(self, dir: &Path, crash_prep: bool) -> Box<dyn Store> {
        std::fs::create_dir_all(dir).expect("create db dir");
        match self {
            Kind::Duplex => Box::new(DuplexStore::open(dir, crash_prep)),
            Kind::Redb => Box::new(RedbStore::open(dir)),
            Kind::Fjall => Box::new(FjallStore::open(dir, crash_prep)),
        }
    }
}

/// What every workload needs from an engine. Every write is durable when it returns.
pub trait Store: Send + Sync {
    /// One durable put.
    fn put(&self, k: &[u8], v: &[u8]);
    /// Keys `first..first + n` (with their values) as one durable, atomic batch.
    fn put_batch(&self, first: u64, n: usize);
    /// The length of the value of `k`, if present.
    fn get(&self, k: &[u8]) -> Option<usize>;
    /// Gets of all `keys` (as a user would do them in bulk); returns how many were found.
    fn get_many(&self, keys: &[[u8; KEY_LEN]]) -> usize {
        keys.iter().filter(|k| self.get(&k[..]).is_some()).count()
    }
    /// A full scan in key order (keys and values read); returns the count.
    fn scan(&self) -> u64;
    /// Brings the store to its read-optimized state after a load.
    fn settle(&self);
    /// Bytes the engine keeps on disk (all files).
    fn disk_bytes(&self) -> u64;
    /// A one-line description of internal state, for the log.
    fn describe(&self) -> String;
    /// Bytes logged since the last checkpoint, where the engine reports it.
    fn wal_bytes(&self) -> Option<u64> {
        None
    }
    /// Clean close.
    fn close(self: Box<Self>);
}

/// Loads keys `0..n` in durable batches of [`BATCH`].
pub fn load(s: &dyn Store, n: u64) {
    let mut i = 0;
    while i < n {
        let m = (n - i).min(BATCH as u64) as usize;
        s.put_batch(i, m);
        i += m as u64;
    }
}

/// Total size of the regular files under `dir`.
pub fn dir_bytes(dir: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Duplex with `SyncPolicy::Always`.
pub struct DuplexStore {
    db: duplex_engine::Database,
    dir: PathBuf,
}

impl DuplexStore {
    fn open(dir: &Path, crash_prep: bool) -> Self {
        let mut cfg = duplex_engine::Config {
            sync: duplex_engine::SyncPolicy::Always,
            ..duplex_engine::Config::default()
        };
        if crash_prep {
            cfg.checkpoint_wal_bytes = u64::MAX;
            cfg.checkpoint_interval = None;
        }
        let db = duplex_engine::Database::open(dir, cfg).expect("open duplex");
        DuplexStore {
            db,
            dir: dir.to_path_buf(),
        }
    }

    /// The database.
    pub fn db(&self) -> &duplex_engine::Database {
        &self.db
    }
}

impl Store for DuplexStore {
    fn put(&self, k: &[u8], v: &[u8]) {
        self.db.put(k, v).expect("duplex put");
    }
    fn put_batch(&self, first: u64, n: usize) {
        let mut b = duplex_engine::WriteBatch::new();
        for i in first..first + n as u64 {
            b.put(key(i), value(i));
        }
        self.db.write(b).expect("duplex write");
    }
    fn get(&self, k: &[u8]) -> Option<usize> {
        self.db.get(k).expect("duplex get").map(|v| v.len())
    }
    fn scan(&self) -> u64 {
        let mut n = 0;
        for item in self
            .db
            .scan(Bound::Unbounded, Bound::Unbounded)
            .expect("duplex scan")
        {
            let (k, v) = item.expect("duplex scan item");
            std::hint::black_box((k, v));
            n += 1;
        }
        n
    }
    fn settle(&self) {
        self.db.checkpoint().expect("duplex checkpoint");
    }
    fn disk_bytes(&self) -> u64 {
        dir_bytes(&self.dir)
    }
    fn describe(&self) -> String {
        format!("{:?}", self.db.stats())
    }
    fn wal_bytes(&self) -> Option<u64> {
        Some(self.db.stats().wal_bytes_since_checkpoint)
    }
    fn close(self: Box<Self>) {
        self.db.close().expect("duplex close");
    }
}

const REDB_TABLE: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("kv");

/// redb with default settings (1 GiB cache, `Durability::Immediate` commits).
pub struct RedbStore {
    db: redb::Database,
    dir: PathBuf,
}

impl RedbStore {
    fn open(dir: &Path) -> Self {
        let db = redb::Database::create(dir.join("data.redb")).expect("open redb");
        let tx = db.begin_write().expect("redb begin_write");
        tx.open_table(REDB_TABLE).expect("redb open_table");
        tx.commit().expect("redb commit");
        RedbStore {
            db,
            dir: dir.to_path_buf(),
        }
    }
}

impl Store for RedbStore {
    fn put(&self, k: &[u8], v: &[u8]) {
        let tx = self.db.begin_write().expect("redb begin_write");
        {
            let mut t = tx.open_table(REDB_TABLE).expect("redb open_table");
            t.insert(k, v).expect("redb insert");
        }
        tx.commit().expect("redb commit");
    }
    fn put_batch(&self, first: u64, n: usize) {
        let tx = self.db.begin_write().expect("redb begin_write");
        {
            let mut t = tx.open_table(REDB_TABLE).expect("redb open_table");
            for i in first..first + n as u64 {
                t.insert(&key(i)[..], &value(i)[..]).expect("redb insert");
            }
        }
        tx.commit().expect("redb commit");
    }
    fn get(&self, k: &[u8]) -> Option<usize> {
        use redb::ReadableDatabase;
        let tx = self.db.begin_read().expect("redb begin_read");
        let t = tx.open_table(REDB_TABLE).expect("redb open_table");
        let r = t.get(k).expect("redb get").map(|g| g.value().len());
        r
    }
    fn get_many(&self, keys: &[[u8; KEY_LEN]]) -> usize {
        use redb::ReadableDatabase;
        let tx = self.db.begin_read().expect("redb begin_read");
        let t = tx.open_table(REDB_TABLE).expect("redb open_table");
        keys.iter()
            .filter(|k| t.get(&k[..]).expect("redb get").is_some())
            .count()
    }
    fn scan(&self) -> u64 {
        use redb::{ReadableDatabase, ReadableTable};
        let tx = self.db.begin_read().expect("redb begin_read");
        let t = tx.open_table(REDB_TABLE).expect("redb open_table");
        let mut n = 0;
        for item in t.iter().expect("redb iter") {
            let (k, v) = item.expect("redb iter item");
            std::hint::black_box((k.value(), v.value()));
            n += 1;
        }
        n
    }
    fn settle(&self) {}
    fn disk_bytes(&self) -> u64 {
        dir_bytes(&self.dir)
    }
    fn describe(&self) -> String {
        "redb".into()
    }
    fn close(self: Box<Self>) {
        self.db.close().expect("redb close");
    }
}

/// fjall with default settings (32 MiB block cache, 64 MiB memtable, LZ4), `SyncData`
/// persistence on every write.
pub struct FjallStore {
    db: fjall::Database,
    ks: fjall::Keyspace,
    dir: PathBuf,
}

impl FjallStore {
    fn open(dir: &Path, crash_prep: bool) -> Self {
        let db = fjall::Database::builder(dir).open().expect("open fjall");
        let ks = db
            .keyspace("kv", || {
                let o = fjall::KeyspaceCreateOptions::default();
                if crash_prep {
                    // Keep the whole crash workload in the journal (no flush to a table).
                    o.max_memtable_size(512 << 20)
                } else {
                    o
                }
            })
            .expect("fjall keyspace");
        FjallStore {
            db,
            ks,
            dir: dir.to_path_buf(),
        }
    }
}

impl Store for FjallStore {
    fn put(&self, k: &[u8], v: &[u8]) {
        self.ks.insert(k, v).expect("fjall insert");
        self.db
            .persist(fjall::PersistMode::SyncData)
            .expect("fjall persist");
    }
    fn put_batch(&self, first: u64, n: usize) {
        let mut b = self
            .db
            .batch()
            .durability(Some(fjall::PersistMode::SyncData));
        for i in first..first + n as u64 {
            b.insert(&self.ks, &key(i)[..], &value(i)[..]);
        }
        b.commit().expect("fjall commit");
    }
    fn get(&self, k: &[u8]) -> Option<usize> {
        self.ks.get(k).expect("fjall get").map(|v| v.len())
    }
    fn scan(&self) -> u64 {
        let mut n = 0;
        for g in self.ks.iter() {
            let (k, v) = g.into_inner().expect("fjall iter item");
            std::hint::black_box((k, v));
            n += 1;
        }
        n
    }
    fn settle(&self) {
        self.ks
            .rotate_memtable_and_wait()
            .expect("fjall rotate_memtable_and_wait");
        self.ks.major_compact().expect("fjall major_compact");
    }
    fn disk_bytes(&self) -> u64 {
        dir_bytes(&self.dir)
    }
    fn describe(&self) -> String {
        format!(
            "tables {} (L0 {}), journals {}",
            self.ks.table_count(),
            self.ks.l0_table_count(),
            self.db.journal_count()
        )
    }
    fn close(self: Box<Self>) {
        let FjallStore { db, ks, .. } = *self;
        drop(ks);
        db.persist(fjall::PersistMode::SyncAll)
            .expect("fjall persist");
        drop(db);
    }
}

// ---------------------------------------------------------------------------------------
// Timing helpers.

/// Runs `op(thread, n)` `iters` times on each of `threads` threads; returns the time.
pub fn run_iters<F: Fn(usize, u64) + Sync>(threads: usize, iters: u64, op: F) -> Duration {
    let barrier = Barrier::new(threads + 1);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (op, barrier) = (&op, &barrier);
                s.spawn(move || {
                    barrier.wait();
                    for n in 0..iters {
                        op(t, n);
                    }
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        for h in handles {
            h.join().expect("bench thread panicked");
        }
        start.elapsed()
    })
}

/// Memory figures of this process from `/proc/self/status`, in bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rss {
    /// `VmRSS`.
    pub total: u64,
    /// `RssAnon` (heap, stacks).
    pub anon: u64,
    /// `RssFile` (mapped files, binary).
    pub file: u64,
}

/// Reads [`Rss`] now.
pub fn rss() -> Rss {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| -> u64 {
        s.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    Rss {
        total: field("VmRSS:"),
        anon: field("RssAnon:"),
        file: field("RssFile:"),
    }
}

/// Directory under which the databases go.
pub fn bench_root() -> PathBuf {
    if let Some(d) = std::env::var_os("DUPLEX_BENCH_DIR") {
        return PathBuf::from(d).join("engine");
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/engine-bench")
}

/// A fresh empty directory under [`bench_root`] (removed on drop).
pub fn fresh_dir(tag: &str) -> tempfile::TempDir {
    let root = bench_root();
    std::fs::create_dir_all(&root).expect("create bench root");
    tempfile::Builder::new()
        .prefix(&format!("{tag}-"))
        .tempdir_in(&root)
        .expect("temp dir")
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------
// Child processes: crash and RSS.

fn child_main(args: &[String]) {
    match args.first().map(String::as_str) {
        // crash KIND DIR KEYS: write KEYS keys (0 = until 64 MiB of Duplex WAL), say READY,
        // then wait to be killed.
        Some("crash") => {
            let kind = Kind::parse(&args[1]).expect("kind");
            let dir = PathBuf::from(&args[2]);
            let target: u64 = args[3].parse().expect("keys");
            let s = kind.open(&dir, true);
            let mut i = 0u64;
            loop {
                if target > 0 && i >= target {
                    break;
                }
                // Without a target (Duplex only), stop on the engine's own WAL figure.
                if target == 0 && s.wal_bytes().unwrap_or(u64::MAX) >= CRASH_WAL_BYTES {
                    break;
                }
                s.put_batch(i, BATCH);
                i += BATCH as u64;
            }
            let wal = s.wal_bytes().unwrap_or(0);
            println!(
                "READY keys={i} wal={wal} disk={} state={}",
                s.disk_bytes(),
                s.describe().replace(' ', "_")
            );
            std::mem::forget(s);
            loop {
                std::thread::sleep(Duration::from_secs(60));
            }
        }
        // rss KIND DIR N load|reopen
        Some("rss") => {
            let kind = Kind::parse(&args[1]).expect("kind");
            let dir = PathBuf::from(&args[2]);
            let n: u64 = args[3].parse().expect("n");
            let phase = args[4].as_str();
            let base = rss();
            let t = Instant::now();
            let s = kind.open(&dir, false);
            let opened = rss();
            let open_s = t.elapsed().as_secs_f64();
            let mut out = vec![("base", base), ("open", opened)];
            let extra = if phase == "load" {
                let t = Instant::now();
                load(&*s, n);
                let load_s = t.elapsed().as_secs_f64();
                out.push(("loaded", rss()));
                let t = Instant::now();
                s.settle();
                let settle_s = t.elapsed().as_secs_f64();
                out.push(("settled", rss()));
                // What is live, as opposed to what the allocator kept after the peak.
                // SAFETY: malloc_trim only releases free heap memory back to the OS.
                unsafe {
                    libc::malloc_trim(0);
                }
                out.push(("trimmed", rss()));
                format!(
                    "load_s={load_s:.2} settle_s={settle_s:.2} disk={}",
                    s.disk_bytes()
                )
            } else {
                let t = Instant::now();
                let c = s.scan();
                assert_eq!(c, n, "{} scan after reopen", kind.name());
                out.push(("scanned", rss()));
                let mut rng = XorShift(0x1234_5678);
                for _ in 0..200_000 {
                    let i = rng.next_u64() % n;
                    assert!(s.get(&key(i)).is_some());
                }
                out.push(("got", rss()));
                format!("open_s={open_s:.3} read_s={:.2}", t.elapsed().as_secs_f64())
            };
            s.close();
            let mut line = String::from("RSS");
            for (name, r) in out {
                line.push_str(&format!(" {name}={},{},{}", r.total, r.anon, r.file));
            }
            println!("{line} {extra}");
        }
        _ => panic!("unknown child command {args:?}"),
    }
}

/// Runs this executable as a child with `args`; returns its stdout.
fn run_child(args: &[&str]) -> String {
    let exe = std::env::current_exe().expect("current_exe");
    let out = Command::new(exe)
        .arg("child")
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .expect("spawn child");
    assert!(out.status.success(), "child {args:?} failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Crash workload: a child writes, then is SIGKILLed; returns (keys written, child's
/// report line, open time in seconds after the kill).
fn crash_once(kind: Kind, keys: u64) -> (u64, String, f64) {
    let dir = fresh_dir(&format!("crash-{}", kind.name()));
    let exe = std::env::current_exe().expect("current_exe");
    let mut child = Command::new(exe)
        .arg("child")
        .arg("crash")
        .arg(kind.name())
        .arg(dir.path())
        .arg(keys.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn crash child");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read READY");
    assert!(line.starts_with("READY"), "crash child said {line:?}");
    // SAFETY: kill(2) on the pid of our own child, which has not been reaped yet.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGKILL);
    }
    let _ = child.wait();
    let n: u64 = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("keys="))
        .and_then(|v| v.parse().ok())
        .expect("keys=");
    let t = Instant::now();
    let s = kind.open(dir.path(), false);
    let open_s = t.elapsed().as_secs_f64();
    assert!(
        s.get(&key(n - 1)).is_some() && s.get(&key(0)).is_some(),
        "{}: acknowledged keys lost after the crash",
        kind.name()
    );
    s.close();
    (n, line.trim().to_string(), open_s)
}

fn parse_rss(line: &str) -> BTreeMap<String, Rss> {
    let mut m = BTreeMap::new();
    for w in line.split_whitespace().skip(1) {
        let Some((name, v)) = w.split_once('=') else {
            continue;
        };
        let parts: Vec<u64> = v.split(',').filter_map(|x| x.parse().ok()).collect();
        if parts.len() == 3 {
            m.insert(
                name.to_string(),
                Rss {
                    total: parts[0],
                    anon: parts[1],
                    file: parts[2],
                },
            );
        }
    }
    m
}

// ---------------------------------------------------------------------------------------
// Results.

/// Whether a figure is better high (throughput) or low (time, memory).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    /// Throughput.
    High,
    /// Time or memory.
    Low,
}

#[derive(Default)]
struct Results {
    /// (workload, engine variant) -> samples; workloads keep first-seen order.
    samples: BTreeMap<(usize, String), Vec<f64>>,
    workloads: Vec<(String, &'static str, Better)>,
}

impl Results {
    fn add(&mut self, workload: &str, unit: &'static str, better: Better, engine: &str, v: f64) {
        let idx = match self.workloads.iter().position(|(w, _, _)| w == workload) {
            Some(i) => i,
            None => {
                self.workloads.push((workload.to_string(), unit, better));
                self.workloads.len() - 1
            }
        };
        self.samples
            .entry((idx, engine.to_string()))
            .or_default()
            .push(v);
        eprintln!("  {workload:<28} {engine:<22} {}", fmt_num(v, unit));
    }

    fn median(&self, idx: usize, engine: &str) -> Option<f64> {
        let v = self.samples.get(&(idx, engine.to_string()))?;
        let mut v = v.clone();
        v.sort_by(f64::total_cmp);
        Some(v[v.len() / 2])
    }

    fn print(&self) {
        println!(
            "\n| workload | unit | duplex | redb | fjall | duplex/redb | duplex/fjall | duplex/best peer |"
        );
        println!("|---|---|---:|---:|---:|---:|---:|---:|");
        for (idx, (w, unit, better)) in self.workloads.iter().enumerate() {
            let engines: Vec<String> = self
                .samples
                .keys()
                .filter(|(i, _)| *i == idx)
                .map(|(_, e)| e.clone())
                .collect();
            let pick = |prefix: &str| -> Option<(String, f64)> {
                engines
                    .iter()
                    .filter(|e| e.split(' ').next() == Some(prefix))
                    .filter_map(|e| self.median(idx, e).map(|m| (e.clone(), m)))
                    .reduce(|a, b| {
                        let a_better = match better {
                            Better::High => a.1 >= b.1,
                            Better::Low => a.1 <= b.1,
                        };
                        if a_better {
                            a
                        } else {
                            b
                        }
                    })
            };
            let d = pick("duplex");
            let r = pick("redb");
            let f = pick("fjall");
            let cell = |x: &Option<(String, f64)>| match x {
                Some((e, v)) if e.contains(' ') => {
                    format!(
                        "{} ({})",
                        fmt_num(*v, unit),
                        &e[e.find(' ').unwrap_or(0) + 1..]
                    )
                }
                Some((_, v)) => fmt_num(*v, unit),
                None => "-".into(),
            };
            let ratio = |a: &Option<(String, f64)>, b: &Option<(String, f64)>| match (a, b) {
                (Some((_, a)), Some((_, b))) if *b > 0.0 => format!("{:.2}x", a / b),
                _ => "-".into(),
            };
            let best = [&r, &f]
                .into_iter()
                .flatten()
                .cloned()
                .reduce(|a, b| match better {
                    Better::High if b.1 > a.1 => b,
                    Better::Low if b.1 < a.1 => b,
                    _ => a,
                });
            println!(
                "| {w} | {unit} | {} | {} | {} | {} | {} | {} |",
                cell(&d),
                cell(&r),
                cell(&f),
                ratio(&d, &r),
                ratio(&d, &f),
                ratio(&d, &best)
            );
        }
        println!(
            "\nRatios are Duplex / peer of the medians: above 1 is better for Duplex in rates, \
             below 1 is better for Duplex in times and bytes."
        );
    }
}

fn fmt_num(v: f64, unit: &str) -> String {
    match unit {
        "s" => format!("{v:.3}"),
        "B/key" => format!("{v:.0}"),
        _ if v >= 100.0 => {
            // Thousands separators.
            let s = format!("{:.0}", v);
            let mut out = String::new();
            for (i, c) in s.chars().enumerate() {
                if i > 0 && (s.len() - i) % 3 == 0 {
                    out.push(',');
                }
                out.push(c);
            }
            out
        }
        _ => format!("{v:.2}"),
    }
}

// ---------------------------------------------------------------------------------------
// The workloads.

fn wants(only: &Option<Vec<String>>, name: &str) -> bool {
    only.as_ref().is_none_or(|o| o.iter().any(|x| x == name))
}

fn bench_puts(res: &mut Results, kind: Kind, threads: usize, dur: Duration, round: u64) {
    let dir = fresh_dir(&format!("put{threads}-{}", kind.name()));
    let s = kind.open(dir.path(), false);
    let val = value(round);
    // Warm-up: a few puts (first segment, first table file).
    for i in 0..50 {
        s.put(&key(thread_base(99) + i), &val);
    }
    let (n, el) = run_for(threads, dur, |t, n| {
        let i = thread_base(t) + (round << 32) + n;
        s.put(&key(i), &value(i));
    });
    s.close();
    res.add(
        &format!(
            "durable put, {threads} thread{}",
            if threads > 1 { "s" } else { "" }
        ),
        "writes/s",
        Better::High,
        kind.name(),
        n as f64 / el.as_secs_f64(),
    );
}

fn bench_batches(res: &mut Results, kind: Kind, dur: Duration) {
    let dir = fresh_dir(&format!("batch-{}", kind.name()));
    let s = kind.open(dir.path(), false);
    let (n, el) = run_for(1, dur, |_, n| {
        s.put_batch(n * BATCH as u64, BATCH);
    });
    s.close();
    res.add(
        "batched put (1000/batch)",
        "keys/s",
        Better::High,
        kind.name(),
        (n * BATCH as u64) as f64 / el.as_secs_f64(),
    );
}

/// "1M", "10M", "100k": how many keys, for workload names.
pub fn keys_label(n: u64) -> String {
    if n >= 1_000_000 && n.is_multiple_of(1_000_000) {
        format!("{}M", n / 1_000_000)
    } else if n >= 1000 && n.is_multiple_of(1000) {
        format!("{}k", n / 1000)
    } else {
        n.to_string()
    }
}

fn bench_reads(res: &mut Results, kind: Kind, keys: u64, dur: Duration, round: u64) {
    let kl = keys_label(keys);
    let dir = fresh_dir(&format!("read-{}", kind.name()));
    let s = kind.open(dir.path(), false);
    let t = Instant::now();
    load(&*s, keys);
    let load_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    s.settle();
    let settle_s = t.elapsed().as_secs_f64();
    eprintln!(
        "  [{}] loaded {keys} in {load_s:.1} s, settled in {settle_s:.1} s, disk {:.1} MiB, {}",
        kind.name(),
        s.disk_bytes() as f64 / (1 << 20) as f64,
        s.describe()
    );
    res.add(
        &format!("load {kl} (1000/batch) + settle"),
        "s",
        Better::Low,
        kind.name(),
        load_s + settle_s,
    );
    res.add(
        "disk after load + settle",
        "B/key",
        Better::Low,
        kind.name(),
        s.disk_bytes() as f64 / keys as f64,
    );
    // Warm-up pass over a slice of the keys, then random gets.
    let mut rng = XorShift(0x9E37_79B9 ^ (round + 1));
    for _ in 0..10_000 {
        assert!(s.get(&key(rng.next_u64() % keys)).is_some());
    }
    let seed = mix(round + 0xABC);
    let (n, el) = run_for(1, dur, |_, n| {
        let i = mix(n ^ seed) % keys;
        assert!(s.get(&key(i)).is_some(), "missing key {i}");
    });
    res.add(
        &format!("random get, {kl} keys"),
        "gets/s",
        Better::High,
        kind.name(),
        n as f64 / el.as_secs_f64(),
    );
    if kind == Kind::Redb {
        // redb's read transaction per get is most of its cost: also one per 1000 gets.
        let (n, el) = run_for(1, dur, |_, n| {
            let ks: Vec<[u8; KEY_LEN]> = (0..1000)
                .map(|j| key(mix((n * 1000 + j) ^ seed) % keys))
                .collect();
            assert_eq!(s.get_many(&ks), 1000);
        });
        res.add(
            &format!("random get, {kl} keys"),
            "gets/s",
            Better::High,
            "redb 1 txn/1000 gets",
            (n * 1000) as f64 / el.as_secs_f64(),
        );
    }
    let mut best = f64::MAX;
    for _ in 0..3 {
        let t = Instant::now();
        let c = s.scan();
        let el = t.elapsed().as_secs_f64();
        assert_eq!(c, keys, "{} scan count", kind.name());
        best = best.min(el);
    }
    res.add(
        &format!("full scan, {kl} keys"),
        "keys/s",
        Better::High,
        kind.name(),
        keys as f64 / best,
    );
    s.close();
    let t = Instant::now();
    let s = kind.open(dir.path(), false);
    let open_s = t.elapsed().as_secs_f64();
    assert!(s.get(&key(keys / 2)).is_some());
    let first_get_s = t.elapsed().as_secs_f64();
    s.close();
    res.add(
        &format!("open after clean close, {kl}"),
        "s",
        Better::Low,
        kind.name(),
        open_s,
    );
    res.add(
        &format!("open + first get, {kl}"),
        "s",
        Better::Low,
        kind.name(),
        first_get_s,
    );
}

/// One crash-and-reopen of `k` with `keys` keys (0: as many as 64 MiB of WAL hold),
/// recorded; returns the key count the child wrote.
fn crash_and_record(res: &mut Results, k: Kind, keys: u64) -> u64 {
    let (n, line, open_s) = crash_once(k, keys);
    eprintln!("  [{}] crash child: {line}", k.name());
    res.add(
        "open after crash, 64 MiB WAL",
        "s",
        Better::Low,
        k.name(),
        open_s,
    );
    n
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("child") {
        child_main(&args[1..]);
        return;
    }
    let rounds = env_u64("DUPLEX_ROUNDS", 3);
    let dur = Duration::from_secs(env_u64("DUPLEX_SECS", 5));
    let keys = env_u64("DUPLEX_KEYS", 1_000_000);
    let rss_10m = env_u64("DUPLEX_RSS_10M", 1) != 0;
    let only: Option<Vec<String>> = std::env::var("DUPLEX_ONLY")
        .ok()
        .map(|s| s.split(',').map(str::to_string).collect());
    let kinds: Vec<Kind> = match std::env::var("DUPLEX_ENGINES") {
        Ok(s) => s
            .split(',')
            .map(|n| Kind::parse(n).unwrap_or_else(|| panic!("unknown engine {n}")))
            .collect(),
        Err(_) => KINDS.to_vec(),
    };
    let root = bench_root();
    std::fs::create_dir_all(&root).expect("bench root");
    println!(
        "engine_compare: {rounds} rounds, {}s per timed workload, {keys} keys for reads, in {}",
        dur.as_secs(),
        root.canonicalize().unwrap_or(root.clone()).display()
    );
    println!("load average at start: {}", loadavg());
    let mut res = Results::default();
    let mut crash_keys = 0u64;
    let mut loads = Vec::new();
    for round in 0..rounds {
        let mut order = kinds.clone();
        order.rotate_left(round as usize % kinds.len());
        eprintln!(
            "round {} (order {:?}), load {}",
            round + 1,
            order,
            loadavg()
        );
        loads.push(loadavg());
        if wants(&only, "put") {
            for &k in &order {
                bench_puts(&mut res, k, 1, dur, round);
            }
            for &k in &order {
                bench_puts(&mut res, k, THREADS, dur, round);
            }
        }
        if wants(&only, "batch") {
            for &k in &order {
                bench_batches(&mut res, k, dur);
            }
        }
        if wants(&only, "read") {
            for &k in &order {
                bench_reads(&mut res, k, keys, dur, round);
            }
        }
        if wants(&only, "crash") {
            // Duplex decides how many keys make 64 MiB of its WAL; peers write the same
            // (without Duplex in this run: the key count 64 MiB of its WAL holds).
            let duplex_first = crash_keys == 0 && kinds.contains(&Kind::Duplex);
            if duplex_first {
                crash_keys = crash_and_record(&mut res, Kind::Duplex, 0);
            }
            let target = if crash_keys == 0 { 537_000 } else { crash_keys };
            for &k in order
                .iter()
                .filter(|k| !(duplex_first && **k == Kind::Duplex))
            {
                crash_and_record(&mut res, k, target);
            }
        }
        if wants(&only, "rss") && round == 0 {
            for &k in &order {
                rss_run(&mut res, k, keys, &keys_label(keys));
            }
        }
    }
    if wants(&only, "rss") && rss_10m {
        for &k in &kinds {
            rss_run(&mut res, k, 10 * keys, &keys_label(10 * keys));
        }
    }
    res.print();
    println!("\nload average per round: {}", loads.join(" | "));
    println!("load average at end: {}", loadavg());
}

/// RSS per key: a child loads `n` keys (RSS before/after, after settling), another child
/// reopens (RSS after open, after a full scan and 200k gets).
fn rss_run(res: &mut Results, kind: Kind, n: u64, label: &str) {
    let dir = fresh_dir(&format!("rss-{}", kind.name()));
    let d = dir.path().to_string_lossy().into_owned();
    let ns = n.to_string();
    let load_line = run_child(&["rss", kind.name(), &d, &ns, "load"]);
    let load_line = load_line
        .lines()
        .find(|l| l.starts_with("RSS"))
        .expect("RSS line")
        .to_string();
    let reopen_line = run_child(&["rss", kind.name(), &d, &ns, "reopen"]);
    let reopen_line = reopen_line
        .lines()
        .find(|l| l.starts_with("RSS"))
        .expect("RSS line")
        .to_string();
    eprintln!("  [{}] {label} load: {load_line}", kind.name());
    eprintln!("  [{}] {label} reopen: {reopen_line}", kind.name());
    let l = parse_rss(&load_line);
    let r = parse_rss(&reopen_line);
    let per = |a: &Rss, b: &Rss| (b.total as f64 - a.total as f64) / n as f64;
    let per_anon = |a: &Rss, b: &Rss| (b.anon as f64 - a.anon as f64) / n as f64;
    let name = kind.name();
    res.add(
        &format!("RSS after load, {label}"),
        "B/key",
        Better::Low,
        name,
        per(&l["base"], &l["loaded"]),
    );
    res.add(
        &format!("RSS after settle, {label}"),
        "B/key",
        Better::Low,
        name,
        per(&l["base"], &l["settled"]),
    );
    res.add(
        &format!("RSS settle+malloc_trim, {label}"),
        "B/key",
        Better::Low,
        name,
        per(&l["base"], &l["trimmed"]),
    );
    res.add(
        &format!("RSS after reopen, {label}"),
        "B/key",
        Better::Low,
        name,
        per(&r["base"], &r["open"]),
    );
    res.add(
        &format!("RSS reopen+scan+gets, {label}"),
        "B/key",
        Better::Low,
        name,
        per(&r["base"], &r["got"]),
    );
    res.add(
        &format!("anon RSS reopen+scan+gets, {label}"),
        "B/key",
        Better::Low,
        name,
        per_anon(&r["base"], &r["got"]),
    );
    let disk = load_line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("disk="))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    res.add(
        &format!("disk after settle, {label}"),
        "B/key",
        Better::Low,
        name,
        disk / n as f64,
    );
}
