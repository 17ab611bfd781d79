//! Shared workloads for the Duplex WAL benchmarks.
//!
//! The criterion bench (`benches/wal.rs`) and the fixed-time ratio runner
//! (`src/bin/wal_compare/`) both drive the code here, so they measure the same thing:
//!
//! - [`RawLoop`]: the disk's own limit, a plain `pwrite` + `fdatasync` loop on a growing
//!   file, on a file pre-allocated with `fallocate` (unwritten extents, what `duplex-wal`
//!   does for its segments) and on a file pre-filled with zeros (written blocks, what
//!   okaywal does and what a recycled segment would be);
//! - [`DuplexLog`] and [`OkayLog`]: a fresh `duplex-wal` or okaywal log in a temp directory;
//! - [`run_iters`] and [`run_for`]: many threads doing one operation, timed together;
//! - [`build_duplex_log`], [`replay_duplex`], [`build_okaywal_log`], [`replay_okaywal`]:
//!   write a large log once, then read it back from the page cache.
//!
//! The engine comparison (`src/bin/engine_compare.rs`) and its criterion twin
//! (`benches/engine.rs`) share [`engines`] (Duplex, redb and fjall behind one `Store`); the
//! engine and backup runners share [`kv`] (the test kit's key/value generators and the engine
//! loads).
//!
//! The process-level replication benchmark (`src/bin/repl_bench.rs`) drives real
//! `duplexd`s through [`resp_load`] (a small RESP client, paced and unpaced SET loads) and
//! measures the sender's cost against [`peer_sink`] (a fake peer that acknowledges without
//! applying).
//!
//! Every file lives under [`bench_root`] (on the real file system, never tmpfs unless asked),
//! and every payload is random non-zero bytes.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use duplex_wal::format::record_size;
use duplex_wal::{Entry, ReadOptions, StdStorage, SyncPolicy, Wal, WalOptions, WalReader};
use okaywal::{
    Configuration, EntryId, LogManager, LogVoid, ReadChunkResult, SegmentReader, WriteAheadLog,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

pub mod engines;
pub mod peer_sink;
pub mod resp_load;

/// Payload of the small-record workloads.
pub const SMALL: usize = 100;
/// Payload of the large-record workloads.
pub const LARGE: usize = 4096;
/// Records per `append_batch` / per okaywal entry when a large log is written for replay.
pub const BUILD_BATCH: usize = 1000;
/// Records per okaywal entry in the okaywal "no fsync per record" workload.
pub const OKAYWAL_CHUNKS_PER_ENTRY: usize = 1000;

/// Directory under which every benchmark file is created: `$DUPLEX_BENCH_DIR`, or
/// `target/duplex-bench-tmp` of this workspace (on the same file system as the checkout).
pub fn bench_root() -> PathBuf {
    if let Some(d) = std::env::var_os("DUPLEX_BENCH_DIR") {
        return d.into();
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/duplex-bench-tmp")
}

/// A fresh, empty directory under [`bench_root`], removed on drop.
pub fn temp_dir(tag: &str) -> tempfile::TempDir {
    temp_dir_in(&bench_root(), tag)
}

/// A fresh, empty directory `<tag>-*` under `root` (created if needed), removed on drop.
pub fn temp_dir_in(root: &Path, tag: &str) -> tempfile::TempDir {
    std::fs::create_dir_all(root).unwrap_or_else(|e| panic!("create {}: {e}", root.display()));
    tempfile::Builder::new()
        .prefix(&format!("{tag}-"))
        .tempdir_in(root)
        .unwrap_or_else(|e| panic!("temp dir in {}: {e}", root.display()))
}

/// Where the files of one comparison runner go: `$DUPLEX_BENCH_DIR/<sub>`, or
/// `target/<default>` of this workspace.
pub fn runner_root(sub: &str, default: &str) -> PathBuf {
    if let Some(d) = std::env::var_os("DUPLEX_BENCH_DIR") {
        return PathBuf::from(d).join(sub);
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target")
        .join(default)
}

/// Name of the file system holding `path` (from `statfs`), e.g. `ext4`, `tmpfs`.
pub fn fs_type(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return "unknown".into();
    };
    // SAFETY: `c` is a valid NUL-terminated string; `st` is a plain C struct that statfs
    // fills in, and all-zero bytes are a valid value for it.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are valid for the duration of the call.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return "unknown".into();
    }
    #[allow(clippy::unnecessary_cast)]
    match st.f_type as i64 {
        0xEF53 => "ext4".into(),
        0x0102_1994 => "tmpfs".into(),
        0x5846_5342 => "xfs".into(),
        0x9123_683E => "btrfs".into(),
        0x794C_7630 => "overlayfs".into(),
        0x2FC1_2FC1 => "zfs".into(),
        0xF2F5_2010 => "f2fs".into(),
        other => format!("0x{other:x}"),
    }
}

/// Prints where the bench files go and warns if that is a RAM file system (where fsync
/// costs nothing and every figure would be meaningless).
pub fn describe_bench_root() -> String {
    let root = bench_root();
    let _ = std::fs::create_dir_all(&root);
    let fs = fs_type(&root);
    if fs == "tmpfs" {
        eprintln!(
            "WARNING: {} is on tmpfs; fsync is free there. Set DUPLEX_BENCH_DIR to a real disk.",
            root.display()
        );
    }
    let root = root.canonicalize().unwrap_or(root);
    format!("{} ({fs})", root.display())
}

/// True when `DUPLEX_BENCH_FULL=1`: replay a 1 GiB log instead of 256 MiB.
pub fn full_mode() -> bool {
    std::env::var("DUPLEX_BENCH_FULL").is_ok_and(|v| v == "1")
}

/// Size of the log the replay workloads read: 1 GiB in full mode, else 256 MiB.
pub fn replay_log_bytes() -> u64 {
    if full_mode() {
        1 << 30
    } else {
        256 << 20
    }
}

/// `len` random bytes, none of them zero, reproducible from `seed`.
pub fn payload(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5EED_D00F);
    (0..len).map(|_| rng.gen_range(1..=255u8)).collect()
}

// ---------------------------------------------------------------------------------------
// The disk's own limit.

/// How the raw loop's file is prepared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawMode {
    /// Empty file; every write extends it (block allocation + size change per fdatasync).
    Growing,
    /// `fallocate`d up front: the blocks are reserved but *unwritten*, so the first write to
    /// each one still converts the extent (a metadata change the fdatasync must commit).
    /// This is how `duplex-wal` prepares its segments.
    Fallocated,
    /// Filled with zeros and fsynced up front: every write overwrites written blocks and
    /// fdatasync has only data to flush. This is how okaywal prepares (and recycles) its
    /// files.
    Zeroed,
}

impl RawMode {
    /// Short name for tables.
    pub fn name(self) -> &'static str {
        match self {
            RawMode::Growing => "growing",
            RawMode::Fallocated => "fallocate",
            RawMode::Zeroed => "zero-filled",
        }
    }
}

/// A `pwrite` + `fdatasync` loop at consecutive offsets: the fastest a single writer can make
/// a record durable on this file system.
#[derive(Debug)]
pub struct RawLoop {
    file: File,
    mode: RawMode,
    buf: Vec<u8>,
    off: u64,
    cap: u64,
    _dir: tempfile::TempDir,
}

impl RawLoop {
    /// Bytes reserved in the `Fallocated` mode (wraps around and re-reserves past this).
    pub const FALLOCATE_BYTES: u64 = 1 << 30;
    /// Bytes pre-written in the `Zeroed` mode (wraps around past this; blocks stay written).
    pub const ZEROED_BYTES: u64 = 64 << 20;

    /// A new loop writing `len`-byte non-zero payloads.
    pub fn new(mode: RawMode, len: usize) -> io::Result<Self> {
        let dir = temp_dir(&format!("raw-{}", mode.name()));
        let path = dir.path().join("raw.dat");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        let cap = match mode {
            RawMode::Growing => u64::MAX,
            RawMode::Fallocated => {
                fallocate(&file, Self::FALLOCATE_BYTES)?;
                Self::FALLOCATE_BYTES
            }
            RawMode::Zeroed => {
                let zeros = vec![0u8; 1 << 20];
                let mut off = 0;
                while off < Self::ZEROED_BYTES {
                    file.write_all_at(&zeros, off)?;
                    off += zeros.len() as u64;
                }
                Self::ZEROED_BYTES
            }
        };
        file.sync_all()?;
        File::open(dir.path())?.sync_all()?;
        Ok(RawLoop {
            file,
            mode,
            buf: payload(len, 7),
            off: 0,
            cap,
            _dir: dir,
        })
    }

    /// One commit: write the payload after the previous one, then fdatasync.
    pub fn commit(&mut self) -> io::Result<()> {
        let len = self.buf.len() as u64;
        if self.off + len > self.cap {
            self.off = 0;
            if self.mode == RawMode::Fallocated {
                // Start over on fresh unwritten extents, as a new segment would.
                self.file.set_len(0)?;
                fallocate(&self.file, self.cap)?;
                self.file.sync_all()?;
            }
        }
        self.file.write_all_at(&self.buf, self.off)?;
        self.off += len;
        self.file.sync_data()
    }
}

fn fallocate(file: &File, len: u64) -> io::Result<()> {
    let len = libc::off_t::try_from(len)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "length too large"))?;
    // SAFETY: the descriptor is open for the duration of the call.
    if unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The logs under test.

/// A `duplex-wal` log in a fresh temp directory (closed, then removed, on drop).
#[derive(Debug)]
pub struct DuplexLog {
    wal: Option<Arc<Wal>>,
    dir: tempfile::TempDir,
}

impl DuplexLog {
    /// Opens a new log with the given policy and otherwise default options.
    pub fn open(tag: &str, sync: SyncPolicy) -> Self {
        let dir = temp_dir(tag);
        let opts = WalOptions {
            sync,
            ..WalOptions::default()
        };
        let wal = Wal::open(dir.path().join("wal"), opts).expect("open duplex-wal");
        DuplexLog {
            wal: Some(Arc::new(wal)),
            dir,
        }
    }

    /// The log.
    pub fn wal(&self) -> &Arc<Wal> {
        self.wal.as_ref().expect("open")
    }

    /// Appends one record (kind 1); panics on error.
    pub fn append(&self, payload: &[u8]) {
        self.wal().append(1, payload).expect("duplex-wal append");
    }

    /// The directory holding the segments.
    pub fn wal_dir(&self) -> PathBuf {
        self.dir.path().join("wal")
    }
}

impl Drop for DuplexLog {
    fn drop(&mut self) {
        if let Some(w) = self.wal.take() {
            match Arc::try_unwrap(w) {
                Ok(w) => {
                    let _ = w.close();
                }
                Err(w) => drop(w),
            }
        }
    }
}

/// An okaywal log in a fresh temp directory (shut down, then removed, on drop).
#[derive(Debug)]
pub struct OkayLog {
    log: Option<WriteAheadLog>,
    _dir: tempfile::TempDir,
}

impl OkayLog {
    /// Opens a new log with okaywal's default configuration (1 MiB files pre-filled with
    /// zeros, checkpoint after 768 KiB) and a manager that discards checkpoints, as the
    /// crate's own `LogVoid` does.
    pub fn open(tag: &str) -> Self {
        let dir = temp_dir(tag);
        let log = WriteAheadLog::recover(dir.path().join("wal"), LogVoid).expect("open okaywal");
        OkayLog {
            log: Some(log),
            _dir: dir,
        }
    }

    /// The log.
    pub fn log(&self) -> &WriteAheadLog {
        self.log.as_ref().expect("open")
    }

    /// One durable commit of one record: an entry with one chunk.
    pub fn commit(&self, payload: &[u8]) {
        let mut e = self.log().begin_entry().expect("okaywal begin_entry");
        e.write_chunk(payload).expect("okaywal write_chunk");
        e.commit().expect("okaywal commit");
    }

    /// `n` records as the chunks of one entry, one commit (one fsync) for all of them: the
    /// cheapest way okaywal offers to log many records, since it has no policy that skips
    /// the fsync of a commit.
    pub fn commit_chunks(&self, payload: &[u8], n: usize) {
        let mut e = self.log().begin_entry().expect("okaywal begin_entry");
        for _ in 0..n {
            e.write_chunk(payload).expect("okaywal write_chunk");
        }
        e.commit().expect("okaywal commit");
    }
}

impl Drop for OkayLog {
    fn drop(&mut self) {
        if let Some(l) = self.log.take() {
            let _ = l.shutdown();
        }
    }
}

// ---------------------------------------------------------------------------------------
// Threads.

/// Runs `op(thread_index, n)` for `n` in `0..iters` on each of `threads` threads, all
/// released at once; returns the time from the release until the last thread finished.
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

/// Runs `op(thread_index, n)` in a loop on each of `threads` threads for about `dur` (`n`
/// counts that thread's operations from 0); returns the number of operations completed and
/// the time they took (release to last join).
pub fn run_for<F: Fn(usize, u64) + Sync>(threads: usize, dur: Duration, op: F) -> (u64, Duration) {
    let barrier = Barrier::new(threads + 1);
    let stop = AtomicBool::new(false);
    let count = AtomicU64::new(0);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (op, barrier, stop, count) = (&op, &barrier, &stop, &count);
                s.spawn(move || {
                    barrier.wait();
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        op(t, n);
                        n += 1;
                    }
                    count.fetch_add(n, Ordering::Relaxed);
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        std::thread::sleep(dur);
        stop.store(true, Ordering::Relaxed);
        for h in handles {
            h.join().expect("bench thread panicked");
        }
        (count.load(Ordering::Relaxed), start.elapsed())
    })
}

/// One payload per thread (different random bytes for each).
pub fn thread_payloads(threads: usize, len: usize) -> Vec<Vec<u8>> {
    (0..threads).map(|t| payload(len, t as u64 + 1)).collect()
}

// ---------------------------------------------------------------------------------------
// Replay.

/// A large log written once for the replay workloads.
#[derive(Debug)]
pub struct ReplayLog {
    dir: tempfile::TempDir,
    /// Records written.
    pub records: u64,
    /// Payload bytes written.
    pub payload_bytes: u64,
    /// Payload size of each record.
    pub record_len: usize,
}

impl ReplayLog {
    /// The directory the log is in.
    pub fn path(&self) -> PathBuf {
        self.dir.path().join("wal")
    }
}

/// What a replay read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replayed {
    /// Records returned.
    pub records: u64,
    /// Payload bytes returned.
    pub payload_bytes: u64,
    /// Log bytes read (record headers, payloads, padding), where the reader reports them.
    pub log_bytes: u64,
}

/// Number of `len`-byte records that fill `log_bytes` of `duplex-wal` records.
pub fn records_for(len: usize, log_bytes: u64) -> u64 {
    log_bytes / record_size(len) as u64
}

/// Writes `records` records of `len` bytes into a new `duplex-wal` log (policy `Never`,
/// batches of [`BUILD_BATCH`], default 64 MiB segments) and closes it (fsynced).
pub fn build_duplex_log(len: usize, records: u64) -> ReplayLog {
    build_duplex_log_with(
        len,
        records,
        WalOptions {
            sync: SyncPolicy::Never,
            ..WalOptions::default()
        },
    )
}

/// A log of one small record without fsyncs, its segment pre-allocated or not: what the
/// reader-tail workloads read to the end of.
pub fn reader_tail_log(preallocate: bool) -> ReplayLog {
    build_duplex_log_with(
        SMALL,
        1,
        WalOptions {
            sync: SyncPolicy::Never,
            preallocate,
            ..WalOptions::default()
        },
    )
}

/// As [`build_duplex_log`], with the given options.
pub fn build_duplex_log_with(len: usize, records: u64, opts: WalOptions) -> ReplayLog {
    let dir = temp_dir(&format!("replay-duplex-{len}"));
    let wal = Wal::open(dir.path().join("wal"), opts).expect("open duplex-wal");
    let pays = thread_payloads(16, len);
    let mut left = records;
    let mut i = 0usize;
    while left > 0 {
        let n = left.min(BUILD_BATCH as u64) as usize;
        let entries: Vec<Entry<'_>> = (0..n)
            .map(|j| Entry {
                kind: 1,
                payload: &pays[(i + j) % pays.len()],
            })
            .collect();
        wal.append_batch(&entries).expect("append_batch");
        left -= n as u64;
        i += n;
    }
    wal.close().expect("close");
    ReplayLog {
        dir,
        records,
        payload_bytes: records * len as u64,
        record_len: len,
    }
}

/// Reads every record of a `duplex-wal` log with [`WalReader`] (checksums checked).
pub fn replay_duplex(dir: &Path) -> Replayed {
    let mut reader = WalReader::open(
        Arc::new(StdStorage),
        &[dir.to_path_buf()],
        0,
        ReadOptions::default(),
    )
    .expect("open reader");
    let mut records = 0u64;
    let mut payload_bytes = 0u64;
    for r in reader.by_ref() {
        let r = r.expect("read record");
        records += 1;
        payload_bytes += r.payload.len() as u64;
    }
    Replayed {
        records,
        payload_bytes,
        log_bytes: reader.bytes_read(),
    }
}

fn okaywal_replay_config(dir: &Path) -> Configuration {
    // Never checkpoint: a checkpointed file is not replayed, and we want the whole log back.
    Configuration::default_for(dir).checkpoint_after_bytes(u64::MAX)
}

/// Writes `records` records of `len` bytes into a new okaywal log, [`BUILD_BATCH`] chunks
/// per entry, with checkpointing disabled so that recovery replays all of it.
pub fn build_okaywal_log(len: usize, records: u64) -> ReplayLog {
    let dir = temp_dir(&format!("replay-okaywal-{len}"));
    let log = okaywal_replay_config(&dir.path().join("wal"))
        .open(LogVoid)
        .expect("open okaywal");
    let pays = thread_payloads(16, len);
    let mut left = records;
    let mut i = 0usize;
    while left > 0 {
        let n = left.min(BUILD_BATCH as u64) as usize;
        let mut e = log.begin_entry().expect("begin_entry");
        for j in 0..n {
            e.write_chunk(&pays[(i + j) % pays.len()])
                .expect("write_chunk");
        }
        e.commit().expect("commit");
        left -= n as u64;
        i += n;
    }
    log.shutdown().expect("shutdown");
    ReplayLog {
        dir,
        records,
        payload_bytes: records * len as u64,
        record_len: len,
    }
}

#[derive(Debug, Default)]
struct ReplayCounters {
    records: AtomicU64,
    payload_bytes: AtomicU64,
}

/// An okaywal manager that reads every chunk of every recovered entry (CRC checked).
#[derive(Debug)]
struct ReplayManager(Arc<ReplayCounters>);

impl LogManager for ReplayManager {
    fn recover(&mut self, entry: &mut okaywal::Entry<'_>) -> io::Result<()> {
        let (mut records, mut bytes) = (0u64, 0u64);
        // EndOfEntry ends the loop; so does AbortedEntry (an entry torn by a crash).
        while let ReadChunkResult::Chunk(mut chunk) = entry.read_chunk()? {
            let data = chunk.read_all()?;
            if !chunk.check_crc()? {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "chunk crc"));
            }
            records += 1;
            bytes += data.len() as u64;
        }
        self.0.records.fetch_add(records, Ordering::Relaxed);
        self.0.payload_bytes.fetch_add(bytes, Ordering::Relaxed);
        Ok(())
    }

    fn checkpoint_to(
        &mut self,
        _last_checkpointed_id: EntryId,
        _checkpointed_entries: &mut SegmentReader,
        _wal: &WriteAheadLog,
    ) -> io::Result<()> {
        Ok(())
    }
}

/// Replays an okaywal log: `WriteAheadLog` recovery hands every entry to a manager that
/// reads all its chunks. Includes opening (and shutting down) the log.
pub fn replay_okaywal(dir: &Path) -> Replayed {
    let counters = Arc::new(ReplayCounters::default());
    let log = okaywal_replay_config(dir)
        .open(ReplayManager(counters.clone()))
        .expect("recover okaywal");
    log.shutdown().expect("shutdown");
    Replayed {
        records: counters.records.load(Ordering::Relaxed),
        payload_bytes: counters.payload_bytes.load(Ordering::Relaxed),
        log_bytes: 0,
    }
}

/// Keys and values shared by the engine and backup comparisons: the generators are the
/// test kit's (`duplex_testkit::kv`), the engine loads are here.
pub mod kv {
    pub use duplex_testkit::kv::{key, mix, value, KEY_LEN, VALUE_LEN};

    /// Operations per batch in [`load_sorted`], batches per `write_many` in
    /// [`write_records`].
    pub const BATCH: u64 = 1000;

    /// Loads keys `0..n` in key order (the keys are random, the insertion order sorted: the
    /// memtable and the checkpoints then append instead of touching the whole tree, so a 1 GiB
    /// store loads in seconds; the resulting tree holds the same keys as a random-order load),
    /// [`BATCH`] puts per WAL record.
    pub fn load_sorted(db: &duplex_engine::Database, n: u64) {
        let mut order: Vec<([u8; KEY_LEN], u64)> = (0..n).map(|i| (key(i), i)).collect();
        order.sort_unstable();
        for chunk in order.chunks(BATCH as usize) {
            let mut b = duplex_engine::WriteBatch::new();
            for (k, i) in chunk {
                b.put(*k, value(*i));
            }
            db.write(b).expect("load batch");
        }
    }

    /// Writes keys `from..to` as one SET per WAL record, [`BATCH`] records per `write_many`.
    pub fn write_records(db: &duplex_engine::Database, from: u64, to: u64) {
        let mut i = from;
        while i < to {
            let end = (i + BATCH).min(to);
            let batches = (i..end)
                .map(|k| {
                    let mut b = duplex_engine::WriteBatch::new();
                    b.put(key(k), value(k));
                    b
                })
                .collect();
            db.write_many(batches).expect("write_many");
            i = end;
        }
    }
}
