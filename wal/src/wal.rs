//! The log's public face, [`Wal`]: open (recovery, then the segment to append to),
//! appends and their acknowledgement under the sync policy, rotation, readers, archiving
//! and retention, and close.
//!
//! The work is done in the modules below it: [`crate::recovery`] checks and repairs the
//! directory at open, [`crate::writer`] encodes, writes and fsyncs (group commit, rotation,
//! fail-stop), [`crate::background`] holds the interval sync and the archiver as steps that
//! threads (or the owner) call. Invariants kept here: a batch gets consecutive LSNs and is
//! queued whole in one segment (so it is durable whole or not at all), and an append
//! returns only once its records are as durable as the policy promises.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::{Condvar, Mutex};

use crate::archive::{archive_subdir, log_timeline, resolve_archive_dirs};
use crate::background::Background;
use crate::error::{Error, Result};
use crate::follow::{ArchiveStatus, DurablePos, Follower};
use crate::format::{encode_record_patched, record_size, FLAG_BATCH_CONTINUES, SEGMENT_HEADER_LEN};
use crate::options::{SyncPolicy, WalOptions};
use crate::reader::{ReadOptions, WalReader};
use crate::recovery::{recover, RecoveryReport, SegmentInfo};
use crate::rotation::SpaceStatus;
use crate::std_storage::StdStorage;
use crate::storage::Storage;
use crate::writer::{open_current, Chunk, Segments, Shared, State};

/// Under [`SyncPolicy::Never`], appends return once encoded in memory; the bytes go to
/// the OS when this many are pending (or when the sync step runs: see
/// [`Wal::sync_due`]).
const NEVER_BUFFER_BYTES: usize = 1 << 20;

/// What [`Wal::append_stamped`] calls under the append lock: (LSN, payload) -> the 8 bytes
/// to write at the stamp offset.
pub type StampFn<'a> = dyn FnMut(u64, &[u8]) -> u64 + 'a;

/// One record of a batch passed to [`Wal::append_batch`].
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    /// Caller-defined kind, 1..=255 (0 is reserved).
    pub kind: u8,
    /// The payload.
    pub payload: &'a [u8],
}

/// A segmented write-ahead log. Cheap to share: wrap it in an `Arc`; every method takes
/// `&self` and is safe to call from many threads.
#[derive(Debug)]
pub struct Wal {
    shared: Arc<Shared>,
    report: RecoveryReport,
    background: Background,
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
        let mut opts = opts;
        let dir = dir.into();
        storage
            .create_dir_all(&dir)
            .map_err(|e| Error::io("create directory", &dir, e))?;
        let (list, report) = recover(&*storage, &dir, &opts)?;
        // A log stays on the timeline of its newest segment (a restore starts a new one).
        let paths: Vec<PathBuf> = list.iter().map(|s| s.path.clone()).collect();
        if let Some(t) = log_timeline(&*storage, &paths)? {
            opts.timeline = opts.timeline.max(t);
        }
        if let Some(root) = &opts.archive_dir {
            let a = archive_subdir(root, opts.node_id, opts.timeline);
            storage
                .create_dir_all(&a)
                .map_err(|e| Error::io("create directory", &a, e))?;
        }
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
        // Segments closed in an earlier run that never reached the archive go first.
        let archive_queue = match &opts.archive_dir {
            Some(_) => list
                .iter()
                .filter(|s| s.closed && !s.archived)
                .map(|s| s.first_lsn)
                .collect(),
            None => Default::default(),
        };
        // The archive is known to hold the segments found archived, up to the first that
        // is not; the first archiver step finds out about the rest.
        let archived_lsn = list
            .iter()
            .take_while(|s| s.archived)
            .filter_map(|s| s.last_lsn)
            .last()
            .unwrap_or(report.first_lsn.saturating_sub(1));
        let state = State {
            next_lsn,
            tail_seg: current.seg,
            tail_off: current.end,
            pending: Vec::new(),
            written_lsn: next_lsn - 1,
            durable_lsn: next_lsn - 1,
            flushing: false,
            rotating: false,
            refused: None,
            poisoned: None,
            closed: false,
            durable_pos: DurablePos {
                seg: current.seg,
                off: current.end,
                lsn: next_lsn - 1,
            },
            archived_lsn,
            unarchived_since_ms: None,
            archive_error: None,
            archive_failing_since_ms: None,
            archive_failed_upto: 0,
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
                archive_queue,
                ..Segments::default()
            }),
            segs_cond: Condvar::new(),
            follower: Mutex::new(Follower::default()),
        });
        let background = Background::start(&shared)?;
        Ok(Wal {
            shared,
            report,
            background,
        })
    }

    /// One wake-up of the background sync thread, for a log opened without background
    /// threads ([`WalOptions::background_threads`] off): under [`SyncPolicy::Interval`]
    /// writes and fsyncs every record appended so far, under [`SyncPolicy::Never`] hands
    /// them to the operating system; under [`SyncPolicy::Always`] there is nothing to do.
    /// With threads on, the sync thread calls this every interval (calling it too is
    /// harmless). Fails if the log is closed or poisoned, or the write or fsync fails.
    pub fn sync_due(&self) -> Result<()> {
        self.shared.sync_due()
    }

    /// One wake-up of the background archiver, for a log opened without background
    /// threads: copies every closed segment not yet in the archive, oldest first
    /// (completing its `.partial` if it was followed), then appends the newly durable bytes
    /// of the segment being written to its `.partial` in the archive and fsyncs it. Returns
    /// how many closed segments were copied (0 without an archive directory). Stops at the
    /// first failure and returns it (also kept in [`Wal::archive_status`]); the next step
    /// tries again. With threads on, the archiver calls this on its own schedule (calling
    /// it too is harmless).
    pub fn archive_pending(&self) -> Result<usize> {
        self.shared.archive_pending()
    }

    /// The archive's position, lag and health, for INFO and monitoring (without an
    /// archive, only `durable_lsn` is set). A failing archive shows here (`last_error`,
    /// `failing_since_ms`, a growing `lag_ms`) while local writes go on; see
    /// [`WalOptions::archive_lag_ms`] for the policy.
    pub fn archive_status(&self) -> ArchiveStatus {
        self.shared.archive_status()
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
        self.append_inner(entries, None)
    }

    /// Like [`Wal::append_batch`], but each record's payload has the 8 bytes at
    /// `stamp_at` replaced by what `stamp(lsn, payload)` returns, called under the lock that
    /// orders appends, in LSN order, once each record's LSN is assigned. A value read from
    /// a monotonic clock there rises with LSN (the engine's batch timestamps), and what
    /// `stamp` records of the payloads is in log order. `stamp` must be quick and must not
    /// touch the log. Payloads shorter than `stamp_at + 8` are written as they are.
    pub fn append_stamped(
        &self,
        entries: &[Entry<'_>],
        stamp_at: usize,
        stamp: &mut StampFn<'_>,
    ) -> Result<u64> {
        self.append_inner(entries, Some((stamp_at, stamp)))
    }

    /// Runs `f` with the next LSN to be assigned, under the lock that orders appends:
    /// nothing is appended while it runs, so whatever `f` reads of state that appends
    /// update under [`Wal::append_stamped`] is consistent with that LSN.
    pub fn with_append_lock<R>(&self, f: impl FnOnce(u64) -> R) -> R {
        let st = self.shared.state.lock();
        f(st.next_lsn)
    }

    fn append_inner(
        &self,
        entries: &[Entry<'_>],
        mut stamp: Option<(usize, &mut StampFn<'_>)>,
    ) -> Result<u64> {
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
        // A batch that does not fit (or any batch while a refused rotation is still due)
        // rotates first, so that it gets its LSNs only once its segment exists.
        loop {
            st.check_open()?;
            if st.rotating {
                sh.cond.wait(&mut st);
                continue;
            }
            let full = st.tail_off + size > sh.opts.segment_size;
            if !(full || st.refused.is_some()) || st.tail_off <= SEGMENT_HEADER_LEN {
                break;
            }
            st = sh.rotate_locked(st)?;
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
                let lsn = first + i as u64;
                let patch = stamp.as_mut().map(|(at, f)| (*at, f(lsn, e.payload)));
                encode_record_patched(&mut chunk.buf, lsn, e.kind, flags, e.payload, patch);
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
    ///
    /// Fails with [`Error::Resource`] if the new segment cannot be created for want of
    /// space or descriptors (the log is not poisoned; the next append retries the
    /// rotation).
    pub fn rotate(&self) -> Result<Option<u64>> {
        let sh = &*self.shared;
        let mut st = sh.state.lock();
        loop {
            st.check_open()?;
            if !st.rotating {
                break;
            }
            sh.cond.wait(&mut st);
        }
        if st.tail_off == SEGMENT_HEADER_LEN {
            return Ok(None);
        }
        let last = st.next_lsn - 1;
        drop(sh.rotate_locked(st)?);
        Ok(Some(last))
    }

    /// Free space on the log's file system, the reserve kept there
    /// ([`WalOptions::reserve_bytes`]) and, while writes are refused for want of space or
    /// descriptors, why and since when: for INFO and monitoring. Reads the file system's
    /// free space (one `statvfs`) on every call.
    pub fn space_status(&self) -> SpaceStatus {
        self.shared.space_status()
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

    /// True after a failed write or fsync: no append will succeed again. (A write refused
    /// for want of space or descriptors does not poison the log: see
    /// [`Wal::space_status`].)
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
        let opts = &self.shared.opts;
        let mut dirs = vec![self.shared.dir.clone()];
        if let Some(root) = &opts.archive_dir {
            dirs.extend(resolve_archive_dirs(
                &*self.shared.storage,
                root,
                Some(opts.node_id),
                Some(opts.timeline),
            )?);
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
        let mut f = sh.follower.lock();
        sh.segs.lock().archive_error = None;
        sh.archive_closed_locked(&mut f)
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
        self.background.stop(&self.shared);
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        if self.background.is_running() || !self.shared.state.lock().closed {
            let _ = self.sync();
            self.shutdown();
        }
    }
}
