//! The engines of the engine comparison (`src/bin/engine_compare.rs`) and of its criterion
//! twin (`benches/engine.rs`) behind one [`Store`] interface, so both measure the same code:
//! Duplex (`SyncPolicy::Always`), redb (`Durability::Immediate`) and fjall (`SyncData`
//! persists); the loads, key numbering, memory readings and directories they share.

use std::ops::Bound;
use std::path::{Path, PathBuf};

pub use crate::kv::{key, mix, value, KEY_LEN};

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
pub fn engine_root() -> PathBuf {
    crate::runner_root("engine", "engine-bench")
}

/// A fresh empty directory under [`engine_root`] (removed on drop).
pub fn fresh_dir(tag: &str) -> tempfile::TempDir {
    crate::temp_dir_in(&engine_root(), tag)
}
