//! The [`Database`]: open with WAL replay, the write path, reads through snapshots, and
//! checkpoints (with compaction) on a background thread.
//!
//! Write path: validate, stamp with the HLC, append one WAL record (group-committed, durable
//! under the sync policy), then apply to the active memtable under last-writer-wins. A
//! reader therefore never sees a write that is not yet durable.
//!
//! Checkpoint: freeze the active memtable (the `gate` lock makes sure every WAL record up to
//! the frozen LSN has been applied), merge it into the tree by appending blocks and a
//! checkpoint record, fsync, switch the manifest, then drop WAL segments below the
//! checkpoint. Writers keep going into a new active memtable meanwhile.

use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use duplex_wal::{LockGuard, StdStorage, Storage, SyncPolicy, Wal, WalOptions};
use parking_lot::{Condvar, Mutex, RwLock};

use crate::backup::{read_backup_manifest, write_backup, BackupReport};
use crate::batch::{encode_batch, Op, WriteBatch, KIND_BATCH};
use crate::error::{CorruptKind, Error, Result};
use crate::format::{parse_store_file_name, Checkpoint, Manifest, FILE_HEADER_LEN};
use crate::hlc::{Hlc, Stamp, Timestamp};
use crate::memtable::{MemTable, MemVersion};
use crate::replay::{gather, ReplayLimits, VersionBuffer};
use crate::snapshot::{Digest, ScanIter, Snapshot, Version};
use crate::store::{
    create_store, open_store, read_manifest, view_at, write_checkpoint, write_manifest,
};
use crate::tree::{TreeView, TreeWriter, Update};

/// Configuration of a [`Database`]; every field has a default.
#[derive(Debug, Clone)]
pub struct Config {
    /// This node's id, stamped on every local write. Default 1.
    pub node_id: u64,
    /// When writes are acknowledged. Default [`SyncPolicy::Always`].
    pub sync: SyncPolicy,
    /// WAL segment size in bytes. Default 64 MiB.
    pub segment_size: u64,
    /// Longest key in bytes (1..=65535). Default 4 KiB.
    pub max_key_size: usize,
    /// Longest value in bytes (at most 256 MiB). Default 16 MiB.
    pub max_value_size: usize,
    /// Checkpoint once this many bytes were logged since the last one. Default 64 MiB.
    pub checkpoint_wal_bytes: u64,
    /// Checkpoint at least this often when anything changed; `None` for never by time.
    /// Default 5 minutes.
    pub checkpoint_interval: Option<Duration>,
    /// Compact (rewrite into a new generation) when dead bytes exceed this share of the
    /// store file. Default 0.5.
    pub compaction_dead_ratio: f64,
    /// Never compact a store file smaller than this. Default 64 MiB.
    pub compaction_min_bytes: u64,
    /// Copy every closed WAL segment here (see the WAL). Default none.
    pub archive_dir: Option<PathBuf>,
    /// While replaying a long WAL at open, merge into the tree once the operations gathered
    /// take this much memory (about 100 bytes per operation plus its key and value; the
    /// records themselves are read in place from the page cache), so memory stays bounded.
    /// Default 256 MiB.
    pub replay_chunk_bytes: u64,
    /// Run checkpoints on a background thread. Default true; tests turn it off to
    /// checkpoint only when they say so.
    pub background: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            node_id: 1,
            sync: SyncPolicy::Always,
            segment_size: 64 << 20,
            max_key_size: 4096,
            max_value_size: 16 << 20,
            checkpoint_wal_bytes: 64 << 20,
            checkpoint_interval: Some(Duration::from_secs(300)),
            compaction_dead_ratio: 0.5,
            compaction_min_bytes: 64 << 20,
            archive_dir: None,
            replay_chunk_bytes: 256 << 20,
            background: true,
        }
    }
}

impl Config {
    pub(crate) fn validate(&self) -> Result<()> {
        if self.max_key_size == 0 || self.max_key_size > u16::MAX as usize {
            return Err(Error::Config(format!(
                "max_key_size {} must be between 1 and 65535",
                self.max_key_size
            )));
        }
        if self.max_value_size > 256 << 20 {
            return Err(Error::Config(format!(
                "max_value_size {} exceeds 256 MiB",
                self.max_value_size
            )));
        }
        if !(0.0..1.0).contains(&self.compaction_dead_ratio) {
            return Err(Error::Config(
                "compaction_dead_ratio must be in [0, 1)".into(),
            ));
        }
        Ok(())
    }

    pub(crate) fn wal_options(&self, initial_lsn: u64) -> WalOptions {
        WalOptions {
            node_id: self.node_id,
            segment_size: self.segment_size,
            // One batch is one record: room for the largest key and value plus headers.
            max_record_size: (self.max_value_size + self.max_key_size + (1 << 20)) as u32,
            sync: self.sync,
            archive_dir: self.archive_dir.clone(),
            initial_lsn,
            ..WalOptions::default()
        }
    }
}

/// Counters and sizes, for INFO-style reporting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stats {
    /// Last LSN appended to the WAL.
    pub last_lsn: u64,
    /// LSN covered by the current checkpoint.
    pub checkpoint_lsn: u64,
    /// Store generation.
    pub generation: u64,
    /// Committed bytes of the store file.
    pub store_bytes: u64,
    /// Bytes of the store reachable from the current root.
    pub live_bytes: u64,
    /// Entries in the tree (tombstones included).
    pub tree_entries: u64,
    /// Entries in the active memtable.
    pub memtable_entries: usize,
    /// Bytes logged since the last checkpoint.
    pub wal_bytes_since_checkpoint: u64,
    /// Checkpoints taken since open.
    pub checkpoints: u64,
    /// Compactions done since open.
    pub compactions: u64,
}

#[derive(Debug)]
struct Mem {
    active: Arc<MemTable>,
    frozen: Option<Arc<MemTable>>,
    tree: Arc<TreeView>,
}

#[derive(Debug, Default)]
struct ApplyState {
    seq: u64,
    max_ts: u64,
}

#[derive(Debug, Default)]
struct Bg {
    stop: bool,
    wake: bool,
}

#[derive(Debug)]
struct Inner {
    storage: Arc<dyn Storage>,
    dir: PathBuf,
    cfg: Config,
    wal: Wal,
    clock: Hlc,
    mem: RwLock<Mem>,
    /// Shared by writers from WAL append to memtable apply; taken exclusively to freeze.
    gate: RwLock<()>,
    /// One checkpoint or compaction at a time.
    ckpt_lock: Mutex<()>,
    /// Serializes memtable inserts; holds the last sequence number assigned and the
    /// largest timestamp applied.
    apply_lock: Mutex<ApplyState>,
    /// Sequence number of the last batch fully applied: what new snapshots see.
    visible: AtomicU64,
    wal_bytes: AtomicU64,
    checkpoints: AtomicU64,
    compactions: AtomicU64,
    poisoned: Mutex<Option<String>>,
    bg: Mutex<Bg>,
    bg_cond: Condvar,
    _lock: LockGuard,
}

/// An embedded Duplex database. Share it between threads with an `Arc`.
#[derive(Debug)]
pub struct Database {
    inner: Arc<Inner>,
    bg: Option<JoinHandle<()>>,
}

/// Name of the lock file in the data directory.
pub const LOCK_NAME: &str = "LOCK";
/// Name of the WAL directory inside the data directory.
pub const WAL_DIR: &str = "wal";

impl Database {
    /// Opens (or creates) the database in `dir` on the real file system.
    pub fn open(dir: impl Into<PathBuf>, cfg: Config) -> Result<Database> {
        Self::open_with(Arc::new(StdStorage), dir, cfg)
    }

    /// Opens (or creates) the database in `dir` on the given storage.
    pub fn open_with(
        storage: Arc<dyn Storage>,
        dir: impl Into<PathBuf>,
        cfg: Config,
    ) -> Result<Database> {
        cfg.validate()?;
        let dir = dir.into();
        storage
            .create_dir_all(&dir)
            .map_err(|e| Error::io("create directory", &dir, e))?;
        let lock = lock_dir(&*storage, &dir)?;
        let view = open_or_create_store(&storage, &dir, cfg.node_id)?;
        let wal_dir = dir.join(WAL_DIR);
        // The segment holding the first LSN after the checkpoint is never removed, so a
        // checkpointed database without WAL segments has lost its log: say so rather than
        // start a new one and silently drop what the lost log held.
        if view.ckpt.lsn > 0
            && duplex_wal::list_segments(&*storage, std::slice::from_ref(&wal_dir))?.is_empty()
        {
            return Err(Error::Corrupt {
                file: wal_dir,
                offset: 0,
                kind: CorruptKind::Invalid(
                    "the WAL directory holds no segment although the store has a checkpoint (the log was lost)",
                ),
            });
        }
        let wal = Wal::open_with(
            storage.clone(),
            dir.join(WAL_DIR),
            cfg.wal_options(view.ckpt.lsn + 1),
        )?;
        if wal.last_lsn() < view.ckpt.lsn {
            return Err(Error::Corrupt {
                file: dir.join(WAL_DIR),
                offset: 0,
                kind: CorruptKind::Invalid(
                    "the WAL ends before the checkpoint LSN (WAL segments were lost)",
                ),
            });
        }
        let clock = Hlc::new(Timestamp(view.ckpt.max_ts));
        let inner = Arc::new(Inner {
            storage,
            dir,
            cfg,
            wal,
            clock,
            mem: RwLock::new(Mem {
                active: Arc::new(MemTable::new()),
                frozen: None,
                tree: Arc::new(view),
            }),
            gate: RwLock::new(()),
            ckpt_lock: Mutex::new(()),
            apply_lock: Mutex::new(ApplyState::default()),
            visible: AtomicU64::new(0),
            wal_bytes: AtomicU64::new(0),
            checkpoints: AtomicU64::new(0),
            compactions: AtomicU64::new(0),
            poisoned: Mutex::new(None),
            bg: Mutex::new(Bg::default()),
            bg_cond: Condvar::new(),
            _lock: lock,
        });
        inner.replay()?;
        let bg = if inner.cfg.background {
            let i = inner.clone();
            Some(
                std::thread::Builder::new()
                    .name("duplex-checkpoint".into())
                    .spawn(move || i.background())
                    .map_err(|e| Error::io("spawn checkpoint thread", &inner.dir, e))?,
            )
        } else {
            None
        };
        Ok(Database { inner, bg })
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.inner.cfg
    }

    /// The write-ahead log (for backup, archive and replication code).
    pub fn wal(&self) -> &Wal {
        &self.inner.wal
    }

    /// The value of `key`, `None` if absent or deleted.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.snapshot().get(key)
    }

    /// The current version of `key` (stamp and value), tombstones included.
    pub fn version(&self, key: &[u8]) -> Result<Option<Version>> {
        self.snapshot().version(key)
    }

    /// Sets `key` to `value`; returns the WAL LSN once durable.
    pub fn put(&self, key: &[u8], value: &[u8]) -> Result<u64> {
        let mut b = WriteBatch::new();
        b.put(key, value);
        self.write(b)
    }

    /// Deletes `key` (a tombstone); returns the WAL LSN once durable.
    pub fn delete(&self, key: &[u8]) -> Result<u64> {
        let mut b = WriteBatch::new();
        b.delete(key);
        self.write(b)
    }

    /// Applies a batch atomically: one WAL record, all operations visible at once. Returns
    /// its LSN once durable. An empty batch writes nothing and returns the last LSN.
    pub fn write(&self, batch: WriteBatch) -> Result<u64> {
        self.inner.write_local(batch)
    }

    /// Applies several batches with one WAL append and one wait for durability (for a
    /// server answering a pipeline of writes). Each batch keeps its own stamp and is
    /// applied in order; the group is logged atomically. Returns the LSN of each non-empty
    /// batch, in order; empty batches are skipped and get no LSN.
    pub fn write_many(&self, batches: Vec<WriteBatch>) -> Result<Vec<u64>> {
        self.inner.write_local_many(batches)
    }

    /// A consistent read view.
    pub fn snapshot(&self) -> Snapshot {
        let m = self.inner.mem.read();
        Snapshot {
            active: m.active.clone(),
            frozen: m.frozen.clone(),
            tree: m.tree.clone(),
            seq: self.inner.visible.load(Ordering::Acquire),
        }
    }

    /// Live pairs with keys within the bounds, in key order, from a snapshot taken now.
    pub fn scan(&self, start: Bound<&[u8]>, end: Bound<&[u8]>) -> Result<ScanIter> {
        self.snapshot().scan(start, end)
    }

    /// Digest of the whole database's live contents (see [`Snapshot::digest`]).
    pub fn digest(&self) -> Result<Digest> {
        self.snapshot().digest(Bound::Unbounded, Bound::Unbounded)
    }

    /// Digest of the live contents within the bounds.
    pub fn digest_range(&self, start: Bound<&[u8]>, end: Bound<&[u8]>) -> Result<Digest> {
        self.snapshot().digest(start, end)
    }

    /// Takes a checkpoint now (compacting if the dead-space threshold is passed).
    pub fn checkpoint(&self) -> Result<()> {
        self.inner.checkpoint(false)
    }

    /// Rewrites the store into a new generation now, whatever its dead space.
    pub fn compact(&self) -> Result<()> {
        self.inner.checkpoint(true)
    }

    /// Takes an online backup into the new directory `dest` by file copy, while writers go
    /// on: a checkpoint, then a copy of the store's committed bytes (only those appended
    /// since `base` for an incremental backup) and the manifests. With an archive
    /// configured, the WAL segment in progress is closed and everything is archived, so
    /// the archive continues the backup without a gap.
    pub fn backup(&self, dest: &Path, base: Option<&Path>) -> Result<BackupReport> {
        let i = &*self.inner;
        i.checkpoint(false)?;
        // Holding the view keeps its store file alive even if a compaction retires it.
        let view = i.mem.read().tree.clone();
        let base = match base {
            Some(b) => Some(read_backup_manifest(&*i.storage, b)?),
            None => None,
        };
        let report = write_backup(&i.storage, &view, i.cfg.node_id, dest, base.as_ref())?;
        if i.cfg.archive_dir.is_some() {
            i.wal.rotate()?;
            i.wal.archive_closed()?;
        }
        Ok(report)
    }

    /// Counters and sizes.
    pub fn stats(&self) -> Stats {
        let i = &*self.inner;
        let m = i.mem.read();
        Stats {
            last_lsn: i.wal.last_lsn(),
            checkpoint_lsn: m.tree.ckpt.lsn,
            generation: m.tree.file.generation,
            store_bytes: m.tree.committed,
            live_bytes: m.tree.ckpt.live_bytes,
            tree_entries: m.tree.ckpt.entries,
            memtable_entries: m.active.len(),
            wal_bytes_since_checkpoint: i.wal_bytes.load(Ordering::Relaxed),
            checkpoints: i.checkpoints.load(Ordering::Relaxed),
            compactions: i.compactions.load(Ordering::Relaxed),
        }
    }

    /// Checkpoints, closes the WAL and stops the background thread. Reopening after a
    /// clean close replays nothing.
    pub fn close(mut self) -> Result<()> {
        self.stop_background();
        let res = self.inner.checkpoint(false);
        let sync = self.inner.wal.sync().map(|_| ());
        res.and(sync.map_err(Error::from))
    }

    fn stop_background(&mut self) {
        {
            let mut bg = self.inner.bg.lock();
            bg.stop = true;
            self.inner.bg_cond.notify_all();
        }
        if let Some(h) = self.bg.take() {
            let _ = h.join();
        }
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        self.stop_background();
    }
}

/// Takes the data directory's lock (held by an open database or a roll-forward).
pub(crate) fn lock_dir(storage: &dyn Storage, dir: &Path) -> Result<LockGuard> {
    storage.lock(&dir.join(LOCK_NAME)).map_err(|e| {
        if e.kind() == std::io::ErrorKind::WouldBlock {
            Error::Locked {
                dir: dir.to_path_buf(),
            }
        } else {
            Error::io("lock", dir.join(LOCK_NAME), e)
        }
    })
}

/// Opens the current store, or creates generation 1 with an empty checkpoint; removes
/// store files of other generations (leftovers of an interrupted or finished compaction).
fn open_or_create_store(storage: &Arc<dyn Storage>, dir: &Path, node_id: u64) -> Result<TreeView> {
    let names = storage
        .list(dir)
        .map_err(|e| Error::io("list directory", dir, e))?;
    let gens: Vec<u64> = names
        .iter()
        .filter_map(|n| parse_store_file_name(n))
        .collect();
    let view = match read_manifest(&**storage, dir)? {
        Some(m) => {
            if m.node_id != node_id {
                return Err(Error::Config(format!(
                    "{} belongs to node {}, but this database was opened as node {node_id}",
                    dir.display(),
                    m.node_id
                )));
            }
            open_store(storage, dir, &m, node_id)?
        }
        None if !gens.is_empty() => {
            return Err(Error::Corrupt {
                file: dir.join(crate::store::MANIFEST_NAME),
                offset: 0,
                kind: CorruptKind::Invalid("manifest missing but store files exist"),
            })
        }
        None => {
            let f = create_store(storage, dir, node_id, 1)?;
            let ckpt = Checkpoint::default();
            let (off, committed) = TreeWriter::new(&f, FILE_HEADER_LEN as u64).finish(&ckpt)?;
            write_manifest(
                &**storage,
                dir,
                &Manifest {
                    node_id,
                    generation: 1,
                    checkpoint_offset: off,
                    committed_len: committed,
                    checkpoint_lsn: 0,
                },
            )?;
            view_at(f, off, committed)?
        }
    };
    for g in gens {
        if g != view.file.generation {
            let p = dir.join(crate::format::store_file_name(g));
            storage
                .remove_file(&p)
                .map_err(|e| Error::io("remove old store", &p, e))?;
        }
    }
    Ok(view)
}

impl Inner {
    fn check_poisoned(&self) -> Result<()> {
        match &*self.poisoned.lock() {
            Some(why) => Err(Error::Poisoned(why.clone())),
            None => Ok(()),
        }
    }

    fn validate(&self, batch: &WriteBatch) -> Result<()> {
        for op in batch.ops() {
            let k = op.key().len();
            if k == 0 || k > self.cfg.max_key_size {
                return Err(Error::KeyTooLarge {
                    len: k,
                    max: self.cfg.max_key_size,
                });
            }
            if let Some(v) = op.value() {
                if v.len() > self.cfg.max_value_size {
                    return Err(Error::ValueTooLarge {
                        len: v.len(),
                        max: self.cfg.max_value_size,
                    });
                }
            }
        }
        let max = self.wal.options().max_record_size as usize;
        if batch.encoded_len() > max {
            return Err(Error::BatchTooLarge {
                len: batch.encoded_len(),
                max,
            });
        }
        Ok(())
    }

    fn write_local_many(&self, batches: Vec<WriteBatch>) -> Result<Vec<u64>> {
        for b in &batches {
            self.validate(b)?;
        }
        self.check_poisoned()?;
        let _g = self.gate.read();
        let stamped: Vec<(Stamp, WriteBatch)> = batches
            .into_iter()
            .filter(|b| !b.is_empty())
            .map(|b| {
                let stamp = Stamp {
                    ts: self.clock.now(),
                    origin: self.cfg.node_id,
                };
                (stamp, b)
            })
            .collect();
        if stamped.is_empty() {
            return Ok(Vec::new());
        }
        let payloads: Vec<Vec<u8>> = stamped
            .iter()
            .map(|(s, b)| encode_batch(*s, 0, b))
            .collect();
        let total: usize = payloads.iter().map(Vec::len).sum();
        let entries: Vec<duplex_wal::Entry<'_>> = payloads
            .iter()
            .map(|p| duplex_wal::Entry {
                kind: KIND_BATCH,
                payload: p,
            })
            .collect();
        let last = self.wal.append_batch(&entries)?;
        let first = last + 1 - stamped.len() as u64;
        let mut lsns = Vec::with_capacity(stamped.len());
        for (i, (stamp, b)) in stamped.into_iter().enumerate() {
            self.apply(stamp, b.ops)?;
            lsns.push(first + i as u64);
        }
        self.note_logged(total as u64);
        Ok(lsns)
    }

    fn note_logged(&self, bytes: u64) {
        let logged = self.wal_bytes.fetch_add(bytes, Ordering::Relaxed) + bytes;
        if logged >= self.cfg.checkpoint_wal_bytes {
            let mut bg = self.bg.lock();
            bg.wake = true;
            self.bg_cond.notify_all();
        }
    }

    fn write_local(&self, batch: WriteBatch) -> Result<u64> {
        self.validate(&batch)?;
        self.check_poisoned()?;
        if batch.is_empty() {
            return Ok(self.wal.last_lsn());
        }
        let _g = self.gate.read();
        let stamp = Stamp {
            ts: self.clock.now(),
            origin: self.cfg.node_id,
        };
        let payload = encode_batch(stamp, 0, &batch);
        let lsn = self.wal.append(KIND_BATCH, &payload)?;
        self.apply(stamp, batch.ops)?;
        self.note_logged(payload.len() as u64);
        Ok(lsn)
    }

    /// Applies operations with one stamp to the active memtable, last writer wins against
    /// every layer, then makes the batch visible. The tree is consulted only when it may
    /// hold a newer version.
    fn apply(&self, stamp: Stamp, ops: Vec<Op>) -> Result<()> {
        let (active, frozen, tree) = {
            let m = self.mem.read();
            (m.active.clone(), m.frozen.clone(), m.tree.clone())
        };
        let check_tree = stamp.ts.0 <= tree.ckpt.max_ts;
        let mut st = self.apply_lock.lock();
        st.seq += 1;
        let seq = st.seq;
        // A stamp newer than everything applied so far and than the tree wins over any
        // existing version: skip the lookups (the common case for local writes and replay).
        let newest = !check_tree && stamp.ts.0 > st.max_ts;
        for op in ops {
            let (key, value) = match op {
                Op::Put { key, value } => (key, Some(value)),
                Op::Delete { key } => (key, None),
            };
            let older = if newest {
                None
            } else {
                match active.latest_stamp(&key) {
                    Some(s) => Some(s),
                    None => match frozen.as_ref().and_then(|f| f.latest_stamp(&key)) {
                        Some(s) => Some(s),
                        None if check_tree => tree.get(&key)?.map(|(s, _)| s),
                        None => None,
                    },
                }
            };
            // Equal stamps mean the same batch (stamps are unique per batch): its later
            // operation on a key replaces the earlier one.
            if older.is_some_and(|c| c.wins_over(&stamp)) {
                continue;
            }
            active.insert(key, seq, MemVersion { stamp, value });
        }
        st.max_ts = st.max_ts.max(stamp.ts.0);
        // The HLC receive rule: local time moves past every stamp applied, so a local write
        // after this one always wins over it.
        self.clock.observe(stamp.ts);
        self.visible.store(seq, Ordering::Release);
        Ok(())
    }

    /// Replays the WAL after the checkpoint (see [`crate::replay`]): every
    /// `replay_chunk_bytes` of records are sorted, reduced to the winner per key and merged
    /// into the tree as a checkpoint at the last LSN gathered (bounded memory for a long
    /// log); what remains goes into the memtable in key order.
    fn replay(&self) -> Result<()> {
        let from = self.mem.read().tree.ckpt.lsn + 1;
        let last = self.wal.last_lsn();
        if from > last {
            return Ok(());
        }
        // Nothing is appended before the replay ends: the segments can be read in place.
        let reader = self.wal.read_from_mapped(from)?;
        let limits = ReplayLimits {
            max_key: self.cfg.max_key_size,
            max_value: self.cfg.max_value_size,
            chunk_bytes: self.cfg.replay_chunk_bytes,
        };
        // Room for the log held (an upper bound of what there is to replay), up to a chunk.
        let held: u64 = self.wal.segments().iter().map(|s| s.end_offset).sum();
        let buf = VersionBuffer::with_capacity(held.min(limits.chunk_bytes));
        let mut on_chunk = |buf: &mut VersionBuffer| -> Result<()> {
            self.clock.observe(Timestamp(buf.max_ts));
            let tree = self.mem.read().tree.clone();
            let _one = self.ckpt_lock.lock();
            let lsn = buf.last_lsn;
            self.write_tree(&tree, &buf.sorted_newest()?, lsn, false)
        };
        let mut buf = gather(
            reader,
            &self.dir.join(WAL_DIR),
            limits,
            buf,
            &mut on_chunk,
            &mut |_, _| {},
        )?;
        self.clock.observe(Timestamp(buf.max_ts));
        // The rest (at most one chunk) goes to the memtable, in key order: the skip list
        // takes sorted keys fast, and open does not wait for a checkpoint.
        let (tail_bytes, max_ts) = (buf.payload_bytes, buf.max_ts);
        let newest = buf.sorted_newest()?;
        let (active, tree) = {
            let m = self.mem.read();
            (m.active.clone(), m.tree.clone())
        };
        let mut st = self.apply_lock.lock();
        st.seq += 1;
        st.max_ts = st.max_ts.max(max_ts);
        for (k, stamp, v) in newest {
            if stamp.ts.0 <= tree.ckpt.max_ts {
                if let Some((s, _)) = tree.get(k)? {
                    if s.wins_over(&stamp) {
                        continue;
                    }
                }
            }
            let version = MemVersion {
                stamp,
                value: v.map(<[u8]>::to_vec),
            };
            active.insert(k.to_vec(), st.seq, version);
        }
        self.visible.store(st.seq, Ordering::Release);
        self.wal_bytes.store(tail_bytes, Ordering::Relaxed);
        Ok(())
    }

    fn background(&self) {
        let mut last = Instant::now();
        loop {
            {
                let mut bg = self.bg.lock();
                if bg.stop {
                    return;
                }
                if !bg.wake {
                    self.bg_cond.wait_for(&mut bg, Duration::from_millis(200));
                }
                bg.wake = false;
                if bg.stop {
                    return;
                }
            }
            let due_bytes = self.wal_bytes.load(Ordering::Relaxed) >= self.cfg.checkpoint_wal_bytes;
            let due_time = self
                .cfg
                .checkpoint_interval
                .is_some_and(|d| last.elapsed() >= d)
                && self.wal_bytes.load(Ordering::Relaxed) > 0;
            if due_bytes || due_time {
                last = Instant::now();
                if self.checkpoint(false).is_err() {
                    // The error poisoned the database; writers report it.
                    return;
                }
            }
        }
    }

    fn checkpoint(&self, force_compact: bool) -> Result<()> {
        let _one = self.ckpt_lock.lock();
        self.check_poisoned()?;
        let (frozen, lsn, tree) = {
            let _g = self.gate.write();
            let mut m = self.mem.write();
            let f = std::mem::replace(&mut m.active, Arc::new(MemTable::new()));
            m.frozen = Some(f.clone());
            (f, self.wal.last_lsn(), m.tree.clone())
        };
        self.wal_bytes.store(0, Ordering::Relaxed);
        if frozen.is_empty() && lsn == tree.ckpt.lsn && !force_compact {
            self.mem.write().frozen = None;
            return Ok(());
        }
        let newest = frozen.newest();
        let updates: Vec<Update<'_>> = newest
            .iter()
            .map(|(k, v)| (k.as_slice(), v.stamp, v.value.as_deref()))
            .collect();
        self.write_tree(&tree, &updates, lsn, force_compact)
    }

    /// Merges `updates` (sorted, one version per key) into `tree` as a checkpoint at `lsn`
    /// (compacting into a new generation if forced or due), installs the new tree, drops
    /// the frozen memtable and releases WAL segments below the checkpoint. A failure
    /// poisons the database.
    fn write_tree(
        &self,
        tree: &Arc<TreeView>,
        updates: &[Update<'_>],
        lsn: u64,
        force_compact: bool,
    ) -> Result<()> {
        let compact = force_compact || self.should_compact(tree);
        let res = write_checkpoint(
            &self.storage,
            &self.dir,
            self.cfg.node_id,
            tree,
            updates,
            lsn,
            self.clock.last().0,
            compact,
        );
        let view = match res {
            Ok(v) => v,
            Err(e) => {
                // The store may hold a half-written checkpoint and its fsync state is
                // unknown: stop writes. Reads keep working from the frozen memtable.
                *self.poisoned.lock() = Some(format!("checkpoint failed: {e}"));
                return Err(e);
            }
        };
        {
            let mut m = self.mem.write();
            m.tree = Arc::new(view);
            m.frozen = None;
        }
        self.checkpoints.fetch_add(1, Ordering::Relaxed);
        if compact {
            self.compactions.fetch_add(1, Ordering::Relaxed);
            tree.file.retire();
        }
        self.wal.remove_segments_below(lsn + 1)?;
        Ok(())
    }

    fn should_compact(&self, tree: &TreeView) -> bool {
        let size = tree.committed;
        size >= self.cfg.compaction_min_bytes
            && (tree.ckpt.live_bytes as f64) < size as f64 * (1.0 - self.cfg.compaction_dead_ratio)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use duplex_wal::sim::SimStorage;

    fn stamp(ts: u64, origin: u64) -> Stamp {
        Stamp {
            ts: Timestamp(ts),
            origin,
        }
    }

    fn put(k: &str, v: &str) -> Vec<Op> {
        vec![Op::Put {
            key: k.into(),
            value: v.into(),
        }]
    }

    /// Versions from another node arrive in any order; every layer (active memtable,
    /// frozen memtable, tree) keeps the greater (timestamp, origin).
    #[test]
    fn last_writer_wins_against_every_layer_whatever_the_arrival_order() {
        let sim = SimStorage::new();
        let db = Database::open_with(
            Arc::new(sim),
            "/db",
            Config {
                background: false,
                ..Config::default()
            },
        )
        .expect("open");
        let far = db.inner.clock.now().0 + 1_000_000;
        let i = &db.inner;
        i.apply(stamp(far + 10, 2), put("k", "new")).expect("apply");
        i.apply(stamp(far + 5, 3), put("k", "older"))
            .expect("apply");
        assert_eq!(db.get(b"k").expect("get"), Some(b"new".to_vec()));
        // Same timestamp: the larger origin wins.
        i.apply(stamp(far + 10, 1), put("k", "same-ts-lower-origin"))
            .expect("apply");
        assert_eq!(db.get(b"k").expect("get"), Some(b"new".to_vec()));
        i.apply(stamp(far + 10, 3), put("k", "same-ts-higher-origin"))
            .expect("apply");
        assert_eq!(
            db.get(b"k").expect("get"),
            Some(b"same-ts-higher-origin".to_vec())
        );
        // Into the tree, then an older version arrives: the tree's wins.
        db.checkpoint().expect("checkpoint");
        i.apply(stamp(far + 7, 9), put("k", "late")).expect("apply");
        assert_eq!(
            db.get(b"k").expect("get"),
            Some(b"same-ts-higher-origin".to_vec())
        );
        // An older delete loses; a newer one wins and leaves a tombstone with its stamp.
        i.apply(stamp(far + 8, 9), vec![Op::Delete { key: "k".into() }])
            .expect("apply");
        assert!(db.get(b"k").expect("get").is_some());
        i.apply(stamp(far + 20, 2), vec![Op::Delete { key: "k".into() }])
            .expect("apply");
        assert_eq!(db.get(b"k").expect("get"), None);
        let v = db.version(b"k").expect("version").expect("tombstone");
        assert_eq!((v.stamp, v.value), (stamp(far + 20, 2), None));
        db.checkpoint().expect("checkpoint");
        i.apply(stamp(far + 15, 5), put("k", "resurrect?"))
            .expect("apply");
        assert_eq!(
            db.get(b"k").expect("get"),
            None,
            "an older put must not undo a delete"
        );
    }
}
