//! The log itself: open with recovery, group-committed appends, rotation, fail-stop,
//! archiving hand-off and retention.
//!
//! Invariants:
//! - LSNs are assigned under the state lock in append order; the bytes of a batch are
//!   contiguous in one segment, so a batch is durable whole or (after recovery) not at all.
//! - Exactly one thread at a time writes and fsyncs (the *flusher*, `State::flushing`); every
//!   other appender waits on the condition variable. One write + one fsync covers everything
//!   queued meanwhile (group commit).
//! - A segment is fsynced before the next one is created, so a damaged record in any segment
//!   but the last is corruption, never a torn tail.
//! - After a failed write or fsync the log is poisoned and accepts nothing more: the page
//!   cache may have dropped the data the failed fsync was for, so retrying would lie.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::clock::now_ms;

use parking_lot::{Condvar, Mutex, MutexGuard};

use crate::archive::archive_segment;
use crate::error::{CorruptKind, Error, Result};
use crate::format::{
    encode_record, parse_segment_file_name, record_size, segment_file_name, SegmentHeader,
    FLAG_BATCH_CONTINUES, SEGMENT_HEADER_LEN,
};
use crate::options::{RecoveryMode, SyncPolicy, WalOptions};
use crate::reader::{ReadOptions, WalReader};
use crate::segment::{header_never_written, scan_segment, Tail};
use crate::storage::{OpenMode, StdStorage, Storage, StorageFile};

/// Under [`SyncPolicy::Never`], appends return once encoded in memory; the bytes go to
/// the OS when this many are pending...
const NEVER_BUFFER_BYTES: usize = 1 << 20;
/// ...or at the latest after this long.
/// Unsynced writes at least this large start their write-back at once.
const WRITEBACK_MIN_BYTES: usize = 256 << 10;
const NEVER_FLUSH_INTERVAL: Duration = Duration::from_millis(100);

/// One record of a batch passed to [`Wal::append_batch`].
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    /// Caller-defined kind, 1..=255 (0 is reserved).
    pub kind: u8,
    /// The payload.
    pub payload: &'a [u8],
}

/// What opening the log found and repaired.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segments found.
    pub segments: usize,
    /// LSN of the first record the log holds (or will hold).
    pub first_lsn: u64,
    /// LSN of the last record recovered; `first_lsn - 1` when the log is empty.
    pub last_lsn: u64,
    /// The tail that was cut, if any.
    pub truncated: Option<Truncation>,
    /// Segment files removed because their header was never completely written.
    pub removed_segments: Vec<PathBuf>,
}

/// A cut made at open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truncation {
    /// The segment that was cut.
    pub file: PathBuf,
    /// Offset of the cut; records from here on are gone.
    pub offset: u64,
    /// Non-zero bytes cut away.
    pub bytes: u64,
    /// What was wrong at the cut.
    pub reason: CorruptKind,
    /// Copy of the segment kept before cutting corruption (not for a plain torn tail).
    pub broken_copy: Option<PathBuf>,
}

/// Description of one segment of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    /// The segment file.
    pub path: PathBuf,
    /// LSN of its first record.
    pub first_lsn: u64,
    /// LSN of its last record; `None` while it is being written or if it is empty.
    pub last_lsn: Option<u64>,
    /// Bytes of header and records (the logical end; the file may be pre-allocated longer).
    pub end_offset: u64,
    /// True once the segment is complete and fsynced: no record will be added.
    pub closed: bool,
    /// True once a copy is in the archive directory.
    pub archived: bool,
}

/// Encoded records waiting for the flusher.
#[derive(Debug)]
struct Chunk {
    /// First LSN of the segment these bytes belong to.
    seg: u64,
    /// File offset of `buf[0]`.
    off: u64,
    buf: Vec<u8>,
    last_lsn: u64,
}

#[derive(Debug, Clone)]
struct Poison {
    op: &'static str,
    file: PathBuf,
    reason: String,
}

impl Poison {
    fn to_error(&self) -> Error {
        Error::Poisoned {
            op: self.op,
            file: self.file.clone(),
            reason: self.reason.clone(),
        }
    }
}

#[derive(Debug)]
struct State {
    next_lsn: u64,
    /// Segment (by first LSN) and offset where the next record goes.
    tail_seg: u64,
    tail_off: u64,
    pending: Vec<Chunk>,
    /// Every record up to here has been handed to the OS.
    written_lsn: u64,
    /// Every record up to here has been fsynced.
    durable_lsn: u64,
    flushing: bool,
    poisoned: Option<Poison>,
    closed: bool,
}

/// The segment being written; only the flusher touches it.
#[derive(Debug)]
struct Current {
    file: Box<dyn StorageFile>,
    seg: u64,
    path: PathBuf,
    end: u64,
    last_lsn: Option<u64>,
    synced: bool,
}

#[derive(Debug, Default)]
struct Segments {
    list: Vec<SegmentInfo>,
    archive_error: Option<String>,
}

#[derive(Debug)]
struct Shared {
    storage: Arc<dyn Storage>,
    dir: PathBuf,
    opts: WalOptions,
    state: Mutex<State>,
    cond: Condvar,
    current: Mutex<Current>,
    segs: Mutex<Segments>,
    segs_cond: Condvar,
    archive_tx: Mutex<Option<mpsc::Sender<u64>>>,
    /// Held while a segment is copied, so the background archiver and `archive_closed`
    /// never copy the same segment at once.
    archive_lock: Mutex<()>,
}

/// A segmented write-ahead log. Cheap to share: wrap it in an `Arc`; every method takes
/// `&self` and is safe to call from many threads.
#[derive(Debug)]
pub struct Wal {
    shared: Arc<Shared>,
    report: RecoveryReport,
    threads: Vec<JoinHandle<()>>,
    stop: Arc<(Mutex<bool>, Condvar)>,
}

impl Wal {
    /// Opens (or creates) the log in `dir` on the real file system, recovering its tail.
    pub fn open(dir: impl Into<PathBuf>, opts: WalOptions) -> Result<Wal> {
        Self::open_with(Arc::new(StdStorage), dir, opts)
    }

    /// Opens (or creates) the log in `dir` on the given storage.
    pub fn open_with(
        storage: Arc<dyn Storage>,
        dir: impl Into<PathBuf>,
        opts: WalOptions,
    ) -> Result<Wal> {
        opts.validate()?;
        let dir = dir.into();
        storage
            .create_dir_all(&dir)
            .map_err(|e| Error::io("create directory", &dir, e))?;
        if let Some(a) = &opts.archive_dir {
            storage
                .create_dir_all(a)
                .map_err(|e| Error::io("create directory", a, e))?;
        }
        let (list, report) = recover(&*storage, &dir, &opts)?;
        let current = open_current(&*storage, &dir, &opts, &list)?;
        let next_lsn = current
            .last_lsn
            .map(|l| l + 1)
            .unwrap_or(current.seg)
            .max(list.iter().filter_map(|s| s.last_lsn).max().unwrap_or(0) + 1);
        let mut list = list;
        if list.last().map(|s| s.first_lsn) != Some(current.seg) {
            list.push(SegmentInfo {
                path: current.path.clone(),
                first_lsn: current.seg,
                last_lsn: None,
                end_offset: SEGMENT_HEADER_LEN,
                closed: false,
                archived: false,
            });
        }
        let state = State {
            next_lsn,
            tail_seg: current.seg,
            tail_off: current.end,
            pending: Vec::new(),
            written_lsn: next_lsn - 1,
            durable_lsn: next_lsn - 1,
            flushing: false,
            poisoned: None,
            closed: false,
        };
        let shared = Arc::new(Shared {
            storage,
            dir,
            opts,
            state: Mutex::new(state),
            cond: Condvar::new(),
            current: Mutex::new(current),
            segs: Mutex::new(Segments {
                list,
                archive_error: None,
            }),
            segs_cond: Condvar::new(),
            archive_tx: Mutex::new(None),
            archive_lock: Mutex::new(()),
        });
        let mut wal = Wal {
            shared,
            report,
            threads: Vec::new(),
            stop: Arc::new((Mutex::new(false), Condvar::new())),
        };
        wal.start_threads()?;
        Ok(wal)
    }

    fn start_threads(&mut self) -> Result<()> {
        let background = match self.shared.opts.sync {
            SyncPolicy::Interval(every) => Some((every, true)),
            SyncPolicy::Never => Some((NEVER_FLUSH_INTERVAL, false)),
            SyncPolicy::Always => None,
        };
        if let Some((every, fsync)) = background {
            let shared = self.shared.clone();
            let stop = self.stop.clone();
            let h = std::thread::Builder::new()
                .name("duplex-wal-sync".into())
                .spawn(move || interval_syncer(&shared, &stop, every, fsync))
                .map_err(|e| Error::io("spawn sync thread", &self.shared.dir, e))?;
            self.threads.push(h);
        }
        if self.shared.opts.archive_dir.is_some() {
            let (tx, rx) = mpsc::channel();
            // Segments closed before this run that never reached the archive go first.
            for s in self.shared.segs.lock().list.iter() {
                if s.closed && !s.archived {
                    let _ = tx.send(s.first_lsn);
                }
            }
            *self.shared.archive_tx.lock() = Some(tx);
            let shared = self.shared.clone();
            let h = std::thread::Builder::new()
                .name("duplex-wal-archive".into())
                .spawn(move || {
                    while let Ok(first) = rx.recv() {
                        shared.archive_one(first);
                    }
                })
                .map_err(|e| Error::io("spawn archive thread", &self.shared.dir, e))?;
            self.threads.push(h);
        }
        Ok(())
    }

    /// What opening found and repaired.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.report
    }

    /// The directory of the live segments.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// The options the log was opened with.
    pub fn options(&self) -> &WalOptions {
        &self.shared.opts
    }

    /// Appends one record and returns its LSN once it is acknowledged under the sync policy.
    pub fn append(&self, kind: u8, payload: &[u8]) -> Result<u64> {
        self.append_batch(&[Entry { kind, payload }])
    }

    /// Appends records atomically: after a crash either all of them are in the log or none.
    /// Returns the LSN of the last one; the others precede it consecutively.
    pub fn append_batch(&self, entries: &[Entry<'_>]) -> Result<u64> {
        let sh = &*self.shared;
        if entries.is_empty() {
            return Err(Error::EmptyBatch);
        }
        let max = sh.opts.max_record_size as u64;
        let mut size = 0u64;
        for e in entries {
            if e.kind == 0 {
                return Err(Error::ReservedKind);
            }
            if e.payload.len() as u64 > max {
                return Err(Error::RecordTooLarge {
                    len: e.payload.len() as u64,
                    max,
                });
            }
            size += record_size(e.payload.len()) as u64;
        }
        let mut st = sh.state.lock();
        st.check_open()?;
        if st.tail_off + size > sh.opts.segment_size && st.tail_off > SEGMENT_HEADER_LEN {
            st.tail_seg = st.next_lsn;
            st.tail_off = SEGMENT_HEADER_LEN;
        }
        let (seg, off) = (st.tail_seg, st.tail_off);
        let first = st.next_lsn;
        let last = first + entries.len() as u64 - 1;
        let reuse = matches!(st.pending.last(), Some(c) if c.seg == seg && c.off + c.buf.len() as u64 == off);
        if !reuse {
            st.pending.push(Chunk {
                seg,
                off,
                buf: Vec::with_capacity(size as usize),
                last_lsn: last,
            });
        }
        if let Some(chunk) = st.pending.last_mut() {
            for (i, e) in entries.iter().enumerate() {
                let flags = if i + 1 < entries.len() {
                    FLAG_BATCH_CONTINUES
                } else {
                    0
                };
                encode_record(&mut chunk.buf, first + i as u64, e.kind, flags, e.payload);
            }
            chunk.last_lsn = last;
        }
        st.next_lsn = last + 1;
        st.tail_off += size;
        match sh.opts.sync {
            SyncPolicy::Always => sh.wait_for(st, last, true)?,
            SyncPolicy::Interval(_) => sh.wait_for(st, last, false)?,
            // Buffered: hand the bytes to the OS only once enough have gathered (or the
            // background thread, sync, rotate or close does it).
            SyncPolicy::Never => {
                let buffered: usize = st.pending.iter().map(|c| c.buf.len()).sum();
                if buffered >= NEVER_BUFFER_BYTES {
                    sh.wait_for(st, last, false)?;
                }
            }
        }
        Ok(last)
    }

    /// Writes and fsyncs everything appended so far, whatever the policy; returns the LSN
    /// that is now durable.
    pub fn sync(&self) -> Result<u64> {
        let st = self.shared.state.lock();
        let last = st.next_lsn - 1;
        self.shared.wait_for(st, last, true)?;
        Ok(last)
    }

    /// Closes the segment being written (if it holds any record) and starts a new one, so
    /// that everything appended so far is in closed segments (ready to archive). Returns the
    /// last LSN of the closed segment, or `None` if there was nothing to close.
    pub fn rotate(&self) -> Result<Option<u64>> {
        let sh = &*self.shared;
        let mut st = sh.state.lock();
        st.check_open()?;
        if st.tail_off == SEGMENT_HEADER_LEN {
            return Ok(None);
        }
        let last = st.next_lsn - 1;
        st.tail_seg = st.next_lsn;
        st.tail_off = SEGMENT_HEADER_LEN;
        let seg = st.next_lsn;
        st.pending.push(Chunk {
            seg,
            off: SEGMENT_HEADER_LEN,
            buf: Vec::new(),
            last_lsn: last,
        });
        // Our switch chunk is queued; a flush that starts after this point processes it.
        while st.flushing {
            sh.cond.wait(&mut st);
        }
        let st = sh.flush_locked(st, true);
        if let Some(p) = &st.poisoned {
            return Err(p.to_error());
        }
        Ok(Some(last))
    }

    /// LSN of the last record appended (acknowledged or not yet).
    pub fn last_lsn(&self) -> u64 {
        self.shared.state.lock().next_lsn - 1
    }

    /// Every record up to this LSN has been fsynced.
    pub fn durable_lsn(&self) -> u64 {
        self.shared.state.lock().durable_lsn
    }

    /// Every record up to this LSN has been handed to the operating system.
    pub fn written_lsn(&self) -> u64 {
        self.shared.state.lock().written_lsn
    }

    /// True after a failed write or fsync: no append will succeed again.
    pub fn is_poisoned(&self) -> bool {
        self.shared.state.lock().poisoned.is_some()
    }

    /// The log's segments, oldest first.
    pub fn segments(&self) -> Vec<SegmentInfo> {
        self.shared.segs.lock().list.clone()
    }

    /// A reader from `from_lsn` over the live segments and the archive, bounded at the
    /// records written so far.
    pub fn read_from(&self, from_lsn: u64) -> Result<WalReader> {
        self.reader(from_lsn, false)
    }

    /// Like [`Wal::read_from`], but maps the segments and reads records in place
    /// ([`ReadOptions::map_segments`]): for replaying the log right after opening it,
    /// before anything is appended (a mapped segment must not be truncated; a segment being
    /// appended to would not show what is appended after it was mapped).
    pub fn read_from_mapped(&self, from_lsn: u64) -> Result<WalReader> {
        self.reader(from_lsn, true)
    }

    fn reader(&self, from_lsn: u64, map_segments: bool) -> Result<WalReader> {
        let until = self.written_lsn();
        let mut dirs = vec![self.shared.dir.clone()];
        if let Some(a) = &self.shared.opts.archive_dir {
            dirs.push(a.clone());
        }
        WalReader::open(
            self.shared.storage.clone(),
            &dirs,
            from_lsn,
            ReadOptions {
                max_record_size: self.shared.opts.max_record_size,
                until_lsn: Some(until),
                node_id: Some(self.shared.opts.node_id),
                map_segments,
                ..ReadOptions::default()
            },
        )
    }

    /// Archives every closed segment not yet archived and waits until the archive holds
    /// them all (fsynced). Fails if no archive directory is configured or a copy fails.
    pub fn archive_closed(&self) -> Result<usize> {
        let sh = &*self.shared;
        if sh.opts.archive_dir.is_none() {
            return Err(Error::Config(
                "no archive directory is configured (WalOptions::archive_dir)".into(),
            ));
        }
        let todo: Vec<u64> = {
            let mut segs = sh.segs.lock();
            segs.archive_error = None;
            segs.list
                .iter()
                .filter(|s| s.closed && !s.archived)
                .map(|s| s.first_lsn)
                .collect()
        };
        for first in &todo {
            sh.archive_one(*first);
        }
        let segs = sh.segs.lock();
        if let Some(e) = &segs.archive_error {
            return Err(Error::Config(format!("archiving failed: {e}")));
        }
        Ok(todo.len())
    }

    /// Removes closed segments whose records all lie below `lsn`. With an archive
    /// configured, only segments already archived are removed. Returns how many were.
    pub fn remove_segments_below(&self, lsn: u64) -> Result<usize> {
        let sh = &*self.shared;
        let need_archive = sh.opts.archive_dir.is_some();
        let victims: Vec<SegmentInfo> = {
            let segs = sh.segs.lock();
            segs.list
                .iter()
                .filter(|s| s.closed && (s.archived || !need_archive))
                .filter(|s| s.last_lsn.is_some_and(|l| l < lsn))
                .cloned()
                .collect()
        };
        for v in &victims {
            sh.storage
                .remove_file(&v.path)
                .map_err(|e| Error::io("remove segment", &v.path, e))?;
            sh.segs.lock().list.retain(|s| s.first_lsn != v.first_lsn);
        }
        if !victims.is_empty() {
            sh.storage
                .sync_dir(&sh.dir)
                .map_err(|e| Error::io("fsync directory", &sh.dir, e))?;
        }
        Ok(victims.len())
    }

    /// Flushes and fsyncs everything, finishes archiving, and stops the background threads.
    pub fn close(mut self) -> Result<()> {
        let res = self.sync().map(|_| ());
        self.shutdown();
        res
    }

    fn shutdown(&mut self) {
        {
            let mut st = self.shared.state.lock();
            st.closed = true;
        }
        {
            let (lock, cv) = &*self.stop;
            *lock.lock() = true;
            cv.notify_all();
        }
        // Dropping the sender ends the archive thread once its queue is drained.
        self.shared.archive_tx.lock().take();
        for h in self.threads.drain(..) {
            let _ = h.join();
        }
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        if !self.threads.is_empty() || !self.shared.state.lock().closed {
            let _ = self.sync();
            self.shutdown();
        }
    }
}

impl State {
    fn check_open(&self) -> Result<()> {
        if let Some(p) = &self.poisoned {
            return Err(p.to_error());
        }
        if self.closed {
            return Err(Error::Closed);
        }
        Ok(())
    }
}

impl Shared {
    /// Waits until `lsn` is written (or durable), becoming the flusher when nobody is.
    fn wait_for<'a>(
        &'a self,
        mut st: MutexGuard<'a, State>,
        lsn: u64,
        durable: bool,
    ) -> Result<()> {
        loop {
            let done = if durable {
                st.durable_lsn >= lsn
            } else {
                st.written_lsn >= lsn
            };
            if done {
                return Ok(());
            }
            if let Some(p) = &st.poisoned {
                return Err(p.to_error());
            }
            if st.flushing {
                self.cond.wait(&mut st);
            } else {
                st = self.flush_locked(st, durable);
            }
        }
    }

    /// Takes every pending chunk, writes it (and fsyncs if `sync`) without holding the
    /// state lock, then publishes the new written/durable LSNs. Caller checked `!flushing`.
    fn flush_locked<'a>(
        &'a self,
        mut st: MutexGuard<'a, State>,
        sync: bool,
    ) -> MutexGuard<'a, State> {
        debug_assert!(!st.flushing);
        st.flushing = true;
        let chunks = std::mem::take(&mut st.pending);
        let target = st.next_lsn - 1;
        drop(st);
        let res = self.write_chunks(chunks, sync);
        let mut st = self.state.lock();
        st.flushing = false;
        match res {
            Ok(()) => {
                st.written_lsn = st.written_lsn.max(target);
                if sync {
                    st.durable_lsn = st.durable_lsn.max(target);
                }
            }
            Err(p) => {
                if st.poisoned.is_none() {
                    st.poisoned = Some(p);
                }
            }
        }
        self.cond.notify_all();
        st
    }

    fn write_chunks(&self, chunks: Vec<Chunk>, sync: bool) -> Result<(), Poison> {
        let mut cur = self.current.lock();
        for c in chunks {
            if c.seg != cur.seg {
                self.switch_segment(&mut cur, c.seg)?;
            }
            if c.buf.is_empty() {
                continue;
            }
            debug_assert_eq!(c.off, cur.end, "chunks must be contiguous");
            cur.file.write_all_at(&c.buf, c.off).map_err(|e| Poison {
                op: "write",
                file: cur.path.clone(),
                reason: e.to_string(),
            })?;
            if !sync && c.buf.len() >= WRITEBACK_MIN_BYTES {
                // Without an fsync now, start the write-back anyway, so the fsync at the
                // next rotation or sync() does not find a whole segment still to write.
                cur.file
                    .start_writeback(c.off, c.buf.len() as u64)
                    .map_err(|e| Poison {
                        op: "write",
                        file: cur.path.clone(),
                        reason: e.to_string(),
                    })?;
            }
            cur.end = c.off + c.buf.len() as u64;
            cur.last_lsn = Some(c.last_lsn);
            cur.synced = false;
        }
        if sync && !cur.synced {
            cur.file.sync_data().map_err(|e| Poison {
                op: "fsync",
                file: cur.path.clone(),
                reason: e.to_string(),
            })?;
            cur.synced = true;
        }
        Ok(())
    }

    /// Finishes the current segment (fsync, mark closed, hand to the archiver) and creates
    /// the segment that starts at `first_lsn`.
    fn switch_segment(&self, cur: &mut Current, first_lsn: u64) -> Result<(), Poison> {
        let poison = |op: &'static str, file: &Path, e: std::io::Error| Poison {
            op,
            file: file.to_path_buf(),
            reason: e.to_string(),
        };
        if !cur.synced {
            cur.file
                .sync_data()
                .map_err(|e| poison("fsync", &cur.path, e))?;
            cur.synced = true;
        }
        let path = self.dir.join(segment_file_name(first_lsn));
        let file = create_segment(&*self.storage, &path, &self.opts, first_lsn)
            .map_err(|(op, e)| poison(op, &path, e))?;
        let old = std::mem::replace(
            cur,
            Current {
                file,
                seg: first_lsn,
                path: path.clone(),
                end: SEGMENT_HEADER_LEN,
                last_lsn: None,
                synced: true,
            },
        );
        {
            let mut segs = self.segs.lock();
            if let Some(s) = segs.list.iter_mut().find(|s| s.first_lsn == old.seg) {
                s.closed = true;
                s.last_lsn = old.last_lsn;
                s.end_offset = old.end;
            }
            segs.list.push(SegmentInfo {
                path,
                first_lsn,
                last_lsn: None,
                end_offset: SEGMENT_HEADER_LEN,
                closed: false,
                archived: false,
            });
        }
        if let Some(tx) = self.archive_tx.lock().as_ref() {
            let _ = tx.send(old.seg);
        }
        Ok(())
    }

    /// Copies one closed segment into the archive; records failure for `archive_closed`.
    fn archive_one(&self, first_lsn: u64) {
        let Some(archive_dir) = self.opts.archive_dir.as_ref() else {
            return;
        };
        let _copying = self.archive_lock.lock();
        let info = {
            let segs = self.segs.lock();
            segs.list
                .iter()
                .find(|s| s.first_lsn == first_lsn && s.closed && !s.archived)
                .cloned()
        };
        let Some(info) = info else { return };
        let res = archive_segment(&*self.storage, &info.path, info.end_offset, archive_dir);
        let mut segs = self.segs.lock();
        match res {
            Ok(_) => {
                if let Some(s) = segs.list.iter_mut().find(|s| s.first_lsn == first_lsn) {
                    s.archived = true;
                }
            }
            Err(e) => segs.archive_error = Some(e.to_string()),
        }
        self.segs_cond.notify_all();
    }
}

/// Every `every`, writes what is pending, and fsyncs it if `fsync`.
fn interval_syncer(shared: &Shared, stop: &(Mutex<bool>, Condvar), every: Duration, fsync: bool) {
    let (lock, cv) = stop;
    loop {
        {
            let mut stopped = lock.lock();
            if *stopped {
                return;
            }
            cv.wait_for(&mut stopped, every);
            if *stopped {
                return;
            }
        }
        let st = shared.state.lock();
        if st.poisoned.is_some() || st.closed {
            return;
        }
        let last = st.next_lsn - 1;
        let behind = if fsync {
            st.durable_lsn < last
        } else {
            st.written_lsn < last
        };
        if behind && shared.wait_for(st, last, fsync).is_err() {
            return;
        }
    }
}

/// Creates a segment file: pre-allocate, header, fsync file, fsync directory.
fn create_segment(
    storage: &dyn Storage,
    path: &Path,
    opts: &WalOptions,
    first_lsn: u64,
) -> std::result::Result<Box<dyn StorageFile>, (&'static str, std::io::Error)> {
    let file = storage
        .open(path, OpenMode::CreateNew)
        .map_err(|e| ("create segment", e))?;
    if opts.preallocate {
        file.preallocate(opts.segment_size)
            .map_err(|e| ("preallocate", e))?;
    }
    let header = SegmentHeader {
        node_id: opts.node_id,
        first_lsn,
        created_ms: now_ms(),
    };
    file.write_all_at(&header.encode(), 0)
        .map_err(|e| ("write", e))?;
    file.sync_data().map_err(|e| ("fsync", e))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    storage.sync_dir(dir).map_err(|e| ("fsync directory", e))?;
    Ok(file)
}

/// Scans every segment in `dir`, checks continuity, and cuts a torn tail.
fn recover(
    storage: &dyn Storage,
    dir: &Path,
    opts: &WalOptions,
) -> Result<(Vec<SegmentInfo>, RecoveryReport)> {
    let mut names: Vec<(u64, String)> = storage
        .list(dir)
        .map_err(|e| Error::io("list directory", dir, e))?
        .into_iter()
        .filter_map(|n| parse_segment_file_name(&n).map(|l| (l, n)))
        .collect();
    names.sort();
    let mut report = RecoveryReport {
        segments: names.len(),
        ..RecoveryReport::default()
    };
    let mut list: Vec<SegmentInfo> = Vec::new();
    let count = names.len();
    for (i, (name_lsn, name)) in names.into_iter().enumerate() {
        let path = dir.join(&name);
        let is_last = i + 1 == count;
        let scan = match scan_segment(storage, &path, opts.max_record_size) {
            Err(Error::Corrupt { offset: 0, .. })
                if is_last && header_never_written(storage, &path)? =>
            {
                // Created but its header never reached the disk: nothing was ever in it.
                storage
                    .remove_file(&path)
                    .map_err(|e| Error::io("remove torn segment", &path, e))?;
                storage
                    .sync_dir(dir)
                    .map_err(|e| Error::io("fsync directory", dir, e))?;
                report.removed_segments.push(path);
                break;
            }
            r => r?,
        };
        let h = scan.header;
        if h.first_lsn != name_lsn {
            return Err(Error::Corrupt {
                file: path,
                offset: 0,
                kind: CorruptKind::NameMismatch {
                    name_lsn,
                    header_lsn: h.first_lsn,
                },
            });
        }
        if h.node_id != opts.node_id {
            return Err(Error::NodeMismatch {
                file: path,
                expected: opts.node_id,
                found: h.node_id,
            });
        }
        if let Some(prev) = list.last() {
            let expected = prev.last_lsn.map(|l| l + 1).unwrap_or(prev.first_lsn);
            if h.first_lsn != expected {
                return Err(Error::Gap {
                    after_lsn: expected - 1,
                    next_first_lsn: h.first_lsn,
                    next_file: path,
                });
            }
        }
        match scan.tail {
            Tail::Clean => {}
            Tail::Torn {
                cut,
                junk_end,
                kind,
                ..
            } if is_last => {
                zero_range(storage, &path, cut, junk_end)?;
                report.truncated = Some(Truncation {
                    file: path.clone(),
                    offset: cut,
                    bytes: junk_end.saturating_sub(cut),
                    reason: kind,
                    broken_copy: None,
                });
            }
            Tail::Corrupt { kind, .. }
                if is_last && opts.recovery == RecoveryMode::TruncateCorruptTail =>
            {
                let broken = path.with_extension("wal.broken");
                let len = storage
                    .open(&path, OpenMode::Read)
                    .and_then(|f| f.len())
                    .map_err(|e| Error::io("stat", &path, e))?;
                let _ = storage.remove_file(&broken);
                storage
                    .copy_prefix(&path, &broken, len)
                    .and_then(|_| storage.open(&broken, OpenMode::ReadWrite))
                    .and_then(|f| f.sync_data())
                    .and_then(|_| storage.sync_dir(dir))
                    .map_err(|e| Error::io("copy broken segment", &broken, e))?;
                let cut = scan.end;
                let end = len;
                zero_range(storage, &path, cut, end)?;
                report.truncated = Some(Truncation {
                    file: path.clone(),
                    offset: cut,
                    bytes: end - cut,
                    reason: kind,
                    broken_copy: Some(broken),
                });
            }
            Tail::Torn {
                at: offset, kind, ..
            }
            | Tail::Corrupt { offset, kind } => {
                return Err(Error::Corrupt {
                    file: path,
                    offset,
                    kind,
                })
            }
        }
        let archived = match &opts.archive_dir {
            Some(a) => storage.exists(&a.join(&name)),
            None => false,
        };
        list.push(SegmentInfo {
            path,
            first_lsn: h.first_lsn,
            last_lsn: scan.last_lsn,
            end_offset: scan.end,
            closed: !is_last,
            archived,
        });
    }
    if let Some(last) = list.last_mut() {
        // The segment removed as torn (if any) was after this one; this is now the tail.
        last.closed = false;
        last.archived = false;
    }
    report.segments = list.len();
    report.first_lsn = list
        .first()
        .map(|s| s.first_lsn)
        .unwrap_or(opts.initial_lsn);
    report.last_lsn = list
        .last()
        .map(|s| s.last_lsn.unwrap_or(s.first_lsn - 1))
        .unwrap_or(opts.initial_lsn - 1);
    Ok((list, report))
}

/// Overwrites `[from, to)` with zeros and fsyncs, so cut bytes can never be read again.
fn zero_range(storage: &dyn Storage, path: &Path, from: u64, to: u64) -> Result<()> {
    if to <= from {
        return Ok(());
    }
    let f = storage
        .open(path, OpenMode::ReadWrite)
        .map_err(|e| Error::io("open", path, e))?;
    let zeros = vec![0u8; (to - from).min(1 << 20) as usize];
    let mut off = from;
    while off < to {
        let n = (to - off).min(zeros.len() as u64) as usize;
        f.write_all_at(&zeros[..n], off)
            .map_err(|e| Error::io("write", path, e))?;
        off += n as u64;
    }
    f.sync_data().map_err(|e| Error::io("fsync", path, e))
}

/// Opens the last segment for appending, or creates the first one.
fn open_current(
    storage: &dyn Storage,
    dir: &Path,
    opts: &WalOptions,
    list: &[SegmentInfo],
) -> Result<Current> {
    match list.last() {
        Some(s) => {
            let file = storage
                .open(&s.path, OpenMode::ReadWrite)
                .map_err(|e| Error::io("open", &s.path, e))?;
            if opts.preallocate {
                file.preallocate(opts.segment_size)
                    .map_err(|e| Error::io("preallocate", &s.path, e))?;
            }
            // What recovery read may have been only in the page cache (a process crash
            // under Never): make it durable before anything builds on it.
            file.sync_data()
                .map_err(|e| Error::io("fsync", &s.path, e))?;
            Ok(Current {
                file,
                seg: s.first_lsn,
                path: s.path.clone(),
                end: s.end_offset,
                last_lsn: s.last_lsn,
                synced: true,
            })
        }
        None => {
            let path = dir.join(segment_file_name(opts.initial_lsn));
            let file = create_segment(storage, &path, opts, opts.initial_lsn)
                .map_err(|(op, e)| Error::io(op, &path, e))?;
            Ok(Current {
                file,
                seg: opts.initial_lsn,
                path,
                end: SEGMENT_HEADER_LEN,
                last_lsn: None,
                synced: true,
            })
        }
    }
}
