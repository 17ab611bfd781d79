//! The [`Database`]: open with WAL replay, the write path, and reads through snapshots.
//! Checkpoints and their schedule (the background thread, or steps the caller runs) are in
//! [`crate::checkpoint`]; the settings in [`crate::config`].
//!
//! Write path: validate, stamp with the HLC, append one WAL record (group-committed, durable
//! under the sync policy), then apply to the active memtable under last-writer-wins. A
//! reader therefore never sees a write that is not yet durable.

use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use duplex_wal::{StdStorage, Storage, Wal};
use parking_lot::{Mutex, RwLock};

use crate::batch::{
    encode_batch_seen, encode_epoch, Op, WriteBatch, KIND_BATCH, KIND_EPOCH, TS_OFFSET,
};
use crate::checkpoint::Schedule;
use crate::config::Config;
use crate::error::{CorruptKind, Error, Result};
use crate::hlc::{Hlc, Stamp, Timestamp};
use crate::lock::DirLock;
use crate::memtable::{MemTable, MemVersion};
use crate::repl::{position, Backlog, ConflictJournal, ReplState};
use crate::replay::{gather, ReplayLimits, VersionBuffer};
use crate::scrub::{ScrubStatus, Scrubber};
use crate::snapshot::{Digest, ScanIter, Snapshot, Version};
use crate::store::{open_or_create_store, StoreDir};
use crate::tree::TreeView;

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

/// The memtables and the tree reads go through.
#[derive(Debug)]
pub(crate) struct Mem {
    /// Takes the writes.
    pub(crate) active: Arc<MemTable>,
    /// Being merged into the tree by a checkpoint.
    pub(crate) frozen: Option<Arc<MemTable>>,
    /// The current checkpoint's tree.
    pub(crate) tree: Arc<TreeView>,
}

#[derive(Debug, Default)]
struct ApplyState {
    seq: u64,
    max_ts: u64,
}

/// The state of an open database, shared with its background thread.
#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) storage: Arc<dyn Storage>,
    pub(crate) dir: PathBuf,
    pub(crate) cfg: Config,
    pub(crate) wal: Wal,
    /// Stamps local writes; its wall time comes from `cfg.clock`.
    pub(crate) hlc: Hlc,
    pub(crate) mem: RwLock<Mem>,
    /// Shared by writers from WAL append to memtable apply; taken exclusively to freeze.
    pub(crate) gate: RwLock<()>,
    /// One checkpoint or compaction at a time.
    pub(crate) ckpt_lock: Mutex<()>,
    /// Serializes memtable inserts; holds the last sequence number assigned and the
    /// largest timestamp applied.
    apply_lock: Mutex<ApplyState>,
    /// Sequence number of the last batch fully applied: what new snapshots see.
    visible: AtomicU64,
    /// Payload bytes logged since the last checkpoint.
    pub(crate) wal_bytes: AtomicU64,
    pub(crate) checkpoints: AtomicU64,
    /// Highest fencing epoch logged (checkpoint, replay, [`Database::log_epoch`]).
    pub(crate) max_epoch: AtomicU64,
    pub(crate) compactions: AtomicU64,
    /// Why writes are refused, once a checkpoint failed.
    pub(crate) poisoned: Mutex<Option<String>>,
    /// The last failure of background maintenance that did not poison the database (a
    /// checkpoint refused for want of space or descriptors, a failed archive copy);
    /// cleared by the next checkpoint.
    pub(crate) maintenance_error: Mutex<Option<String>>,
    /// The check of every store block after open.
    pub(crate) scrub: Scrubber,
    /// When the next checkpoint is due; wakes and stops the background thread.
    pub(crate) schedule: Schedule,
    /// High-water marks, the backlog, the conflict journal ([`crate::repl`]).
    pub(crate) repl: ReplState,
    _lock: DirLock,
}

/// An embedded Duplex database. Share it between threads with an `Arc`.
#[derive(Debug)]
pub struct Database {
    inner: Arc<Inner>,
    bg: Option<JoinHandle<()>>,
}

/// Name of the WAL directory inside the data directory.
pub const WAL_DIR: &str = "wal";

impl Database {
    /// Opens (or creates) the database in `dir` on the real file system, locking the
    /// directory first ([`DirLock::acquire`]).
    pub fn open(dir: impl Into<PathBuf>, cfg: Config) -> Result<Database> {
        cfg.validate()?;
        Self::open_with_lock(DirLock::acquire(dir)?, cfg)
    }

    /// Opens (or creates) the database in the directory `lock` holds, on the real file
    /// system: for a server that locks its data directory before writing its own files.
    pub fn open_with_lock(lock: DirLock, cfg: Config) -> Result<Database> {
        Self::open_locked(Arc::new(StdStorage), lock, cfg)
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
        let lock = DirLock::acquire_with(&*storage, &dir)?;
        Self::open_locked(storage, lock, cfg)
    }

    /// Opens the database in the directory `lock` holds. Opening writes no more than a new
    /// database's first files: the WAL's replay goes to memory (a long log in chunks
    /// merged into the tree; a chunk refused for want of space stays in memory).
    fn open_locked(storage: Arc<dyn Storage>, lock: DirLock, cfg: Config) -> Result<Database> {
        cfg.validate()?;
        let dir = lock.dir().to_path_buf();
        let view = open_or_create_store(&StoreDir {
            storage: &storage,
            dir: &dir,
            node_id: cfg.node_id,
            clock: &*cfg.clock,
        })?;
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
        let hlc = Hlc::with_clock(Timestamp(view.ckpt.max_ts), cfg.clock.clone());
        let epoch = view.ckpt.max_epoch;
        let schedule = Schedule::new(cfg.clock.now_ms());
        let scrub = Scrubber::new(cfg.scrub_bytes_per_sec);
        let repl = ReplState {
            conflicts: Mutex::new(ConflictJournal::new(cfg.conflict_journal_entries)),
            ..ReplState::default()
        };
        repl.raise(view.ckpt.origins.iter().map(|(o, l)| (*o, *l, 0)));
        repl.anchor(view.ckpt.lsn, view.ckpt.origins.clone());
        let inner = Arc::new(Inner {
            storage,
            dir,
            cfg,
            wal,
            hlc,
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
            max_epoch: AtomicU64::new(epoch),
            compactions: AtomicU64::new(0),
            poisoned: Mutex::new(None),
            maintenance_error: Mutex::new(None),
            scrub,
            schedule,
            repl,
            _lock: lock,
        });
        inner.replay()?;
        *inner.repl.backlog.lock() = Backlog::new(
            usize::try_from(inner.cfg.replication_backlog_bytes).unwrap_or(usize::MAX),
            position(inner.wal.options().timeline, inner.wal.last_lsn()),
        );
        // The interval counts from the end of the replay, which can take a while.
        inner.schedule.restart(inner.cfg.clock.now_ms());
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

    pub(crate) fn inner(&self) -> &Inner {
        &self.inner
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

    /// The stamped digest of a key range (see [`Snapshot::stamped_digest`]), to compare
    /// replicas version for version.
    pub fn stamped_digest(&self, start: Bound<&[u8]>, end: Bound<&[u8]>) -> Result<Digest> {
        self.snapshot().stamped_digest(start, end)
    }

    /// Digest of the live contents within the bounds.
    pub fn digest_range(&self, start: Bound<&[u8]>, end: Bound<&[u8]>) -> Result<Digest> {
        self.snapshot().digest(start, end)
    }

    /// Takes a checkpoint now (compacting if the dead-space threshold is passed).
    pub fn checkpoint(&self) -> Result<()> {
        self.inner.checkpoint(false)
    }

    /// One step of background maintenance, exactly what one wake-up of the background
    /// thread does: a checkpoint if `checkpoint_wal_bytes` were logged since the last one,
    /// or if `checkpoint_interval` passed by the configured clock and anything was logged.
    /// Returns whether it took a checkpoint. With `Config::background` off, this (with
    /// [`Database::checkpoint`] and [`Database::close`]) is the only way checkpoints happen.
    pub fn run_maintenance(&self) -> Result<bool> {
        self.inner.run_maintenance()
    }

    /// Rewrites the store into a new generation now, whatever its dead space.
    pub fn compact(&self) -> Result<()> {
        self.inner.checkpoint(true)
    }

    /// Logs a change of the server's fencing epoch as a WAL record of its own
    /// ([`crate::batch::KIND_EPOCH`]) and returns its LSN once durable, so that a backup
    /// and the archive carry the epoch and a restore can start above the highest one.
    /// [`Database::max_epoch`] is at least `epoch` afterwards.
    pub fn log_epoch(&self, epoch: u64) -> Result<u64> {
        let i = &*self.inner;
        i.check_poisoned()?;
        let _g = i.gate.read();
        let lsn = i.wal.append(KIND_EPOCH, &encode_epoch(epoch))?;
        i.max_epoch.fetch_max(epoch, Ordering::AcqRel);
        Ok(lsn)
    }

    /// The highest fencing epoch the database has logged ([`Database::log_epoch`]), kept
    /// across checkpoints (in the checkpoint block) and restarts; 0 if none.
    pub fn max_epoch(&self) -> u64 {
        self.inner.max_epoch.load(Ordering::Acquire)
    }

    /// The last failure of background maintenance that left the database running (a
    /// checkpoint refused for want of disk space or descriptors, retried by itself; a
    /// failed archive copy), for INFO and the log; `None` once a checkpoint succeeds.
    pub fn maintenance_error(&self) -> Option<String> {
        self.inner.maintenance_error.lock().clone()
    }

    /// Where the scrub of the store's blocks stands, and the first damage it found (file
    /// and offset).
    pub fn scrub_status(&self) -> ScrubStatus {
        self.inner.scrub.status()
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
        self.inner.schedule.stop();
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

impl Inner {
    pub(crate) fn check_poisoned(&self) -> Result<()> {
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
                    ts: self.hlc.now(),
                    origin: self.cfg.node_id,
                };
                (stamp, b)
            })
            .collect();
        if stamped.is_empty() {
            return Ok(Vec::new());
        }
        let seen = self.repl.seen();
        let payloads: Vec<Vec<u8>> = stamped
            .iter()
            .map(|(s, b)| encode_batch_seen(*s, 0, b, &seen))
            .collect();
        let total: usize = payloads.iter().map(Vec::len).sum();
        let entries: Vec<duplex_wal::Entry<'_>> = payloads
            .iter()
            .map(|p| duplex_wal::Entry {
                kind: KIND_BATCH,
                payload: p,
            })
            .collect();
        let mut ts = Vec::with_capacity(stamped.len());
        let appended = self.wal.append_stamped(&entries, TS_OFFSET, &mut |lsn, p| {
            let t = self.stamp_locked(lsn, p);
            ts.push(t);
            t
        });
        let stamped: Vec<(Stamp, WriteBatch)> = stamped
            .into_iter()
            .zip(ts.iter().copied().chain(std::iter::repeat(0)))
            .map(|((s, b), t)| {
                (
                    Stamp {
                        ts: Timestamp(t),
                        ..s
                    },
                    b,
                )
            })
            .collect();
        let last = match appended {
            Ok(last) => last,
            Err(e @ duplex_wal::Error::ArchiveFailed { .. }) => {
                // Durable in the local log, only the synchronous archive copy failed: the
                // memtable must hold what the log holds, or a checkpoint past these LSNs
                // would drop them while the log still has them.
                for (stamp, b) in stamped {
                    self.apply(stamp, b.ops)?;
                }
                self.note_logged(total as u64);
                return Err(e.into());
            }
            Err(e) => return Err(e.into()),
        };
        let first = last + 1 - stamped.len() as u64;
        let mut lsns = Vec::with_capacity(stamped.len());
        for (i, (stamp, b)) in stamped.into_iter().enumerate() {
            self.apply(stamp, b.ops)?;
            lsns.push(first + i as u64);
        }
        self.note_logged(total as u64);
        self.repl.commit_cv.notify_all();
        Ok(lsns)
    }

    pub(crate) fn note_logged(&self, bytes: u64) {
        let logged = self.wal_bytes.fetch_add(bytes, Ordering::Relaxed) + bytes;
        if logged >= self.cfg.checkpoint_wal_bytes {
            self.schedule.wake();
        }
    }

    fn write_local(&self, batch: WriteBatch) -> Result<u64> {
        self.validate(&batch)?;
        self.check_poisoned()?;
        if batch.is_empty() {
            return Ok(self.wal.last_lsn());
        }
        let _g = self.gate.read();
        let mut stamp = Stamp {
            ts: Timestamp(0),
            origin: self.cfg.node_id,
        };
        let payload = encode_batch_seen(stamp, 0, &batch, &self.repl.seen());
        let entry = duplex_wal::Entry {
            kind: KIND_BATCH,
            payload: &payload,
        };
        let appended = self.wal.append_stamped(&[entry], TS_OFFSET, &mut |lsn, p| {
            stamp.ts = Timestamp(self.stamp_locked(lsn, p));
            stamp.ts.0
        });
        let lsn = match appended {
            Ok(lsn) => lsn,
            Err(e @ duplex_wal::Error::ArchiveFailed { .. }) => {
                // Durable locally (see write_local_many): applied, then reported.
                self.apply(stamp, batch.ops)?;
                self.note_logged(payload.len() as u64);
                return Err(e.into());
            }
            Err(e) => return Err(e.into()),
        };
        self.apply(stamp, batch.ops)?;
        self.note_logged(payload.len() as u64);
        self.repl.commit_cv.notify_all();
        Ok(lsn)
    }

    /// Applies operations with one stamp to the active memtable, last writer wins against
    /// every layer, then makes the batch visible. The tree is consulted only when it may
    /// hold a newer version.
    pub(crate) fn apply(&self, stamp: Stamp, ops: Vec<Op>) -> Result<()> {
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
        self.hlc.observe(stamp.ts);
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
        // Once a chunk could not be merged for want of space or descriptors, it and every
        // later chunk stay in memory (a later chunk's checkpoint would claim the earlier
        // one's LSNs): open never fails for want of space, the next checkpoint merges them.
        let mut in_memory = false;
        // This node's own updates of an earlier incarnation recovered from a peer
        // (`apply_own_recovered`) are logged with their position: never a mark.
        let node = self.cfg.node_id;
        let mut on_chunk = |buf: &mut VersionBuffer| -> Result<()> {
            self.hlc.observe(Timestamp(buf.max_ts));
            self.max_epoch.fetch_max(buf.max_epoch, Ordering::AcqRel);
            self.repl.raise(
                buf.origins
                    .iter()
                    .filter(|(o, _)| **o != node)
                    .map(|(o, (l, t))| (*o, *l, *t)),
            );
            if !in_memory {
                let tree = self.mem.read().tree.clone();
                let _one = self.ckpt_lock.lock();
                let lsn = buf.last_lsn;
                let origins = self.repl.hwms();
                match self.write_tree(&tree, &buf.sorted_newest()?, lsn, false, origins) {
                    Err(e) if e.is_resource() => {
                        *self.maintenance_error.lock() = Some(e.to_string());
                        in_memory = true;
                    }
                    other => return other,
                }
            }
            let (bytes, max_ts) = (buf.payload_bytes, buf.max_ts);
            self.load_replayed(buf.sorted_newest()?, max_ts)?;
            self.wal_bytes.fetch_add(bytes, Ordering::Relaxed);
            Ok(())
        };
        let mut buf = gather(
            reader,
            &self.dir.join(WAL_DIR),
            limits,
            buf,
            &mut on_chunk,
            &mut |_, _| {},
        )?;
        self.hlc.observe(Timestamp(buf.max_ts));
        self.max_epoch.fetch_max(buf.max_epoch, Ordering::AcqRel);
        self.repl.raise(
            buf.origins
                .iter()
                .filter(|(o, _)| **o != node)
                .map(|(o, (l, t))| (*o, *l, *t)),
        );
        // The rest (at most one chunk) goes to the memtable, in key order: the skip list
        // takes sorted keys fast, and open does not wait for a checkpoint.
        let (tail_bytes, max_ts) = (buf.payload_bytes, buf.max_ts);
        self.load_replayed(buf.sorted_newest()?, max_ts)?;
        self.wal_bytes.fetch_add(tail_bytes, Ordering::Relaxed);
        Ok(())
    }

    /// Puts replayed versions (sorted, one per key) into the active memtable as one
    /// batch, each unless a version already there or in the tree wins over it.
    fn load_replayed(&self, newest: Vec<crate::tree::Update<'_>>, max_ts: u64) -> Result<()> {
        let (active, tree) = {
            let m = self.mem.read();
            (m.active.clone(), m.tree.clone())
        };
        let mut st = self.apply_lock.lock();
        st.seq += 1;
        st.max_ts = st.max_ts.max(max_ts);
        // Empty unless earlier chunks stayed in memory: then they are older in the log.
        let check_active = !active.is_empty();
        for (k, stamp, v) in newest {
            if check_active && active.latest_stamp(k).is_some_and(|s| s.wins_over(&stamp)) {
                continue;
            }
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
        Ok(())
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
        let far = db.inner.hlc.now().0 + 1_000_000;
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
