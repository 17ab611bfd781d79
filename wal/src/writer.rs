//! The write path: records queued by appenders, written and fsynced by one flusher at a
//! time (group commit), into the segment being written. Rotation to the next segment is
//! module `rotation`.
//!
//! Invariants:
//! - LSNs are assigned under the state lock in append order; the bytes of a batch are
//!   contiguous in one segment, so a batch is durable whole or (after recovery) not at all.
//! - Exactly one thread at a time writes and fsyncs (the *flusher*, `State::flushing`); every
//!   other appender waits on the condition variable. One write + one fsync covers everything
//!   queued meanwhile (group commit).
//! - Every queued chunk belongs to the segment being written: a batch that does not fit
//!   rotates first (module `rotation`), before it gets its LSNs. A segment is fsynced
//!   before the next one is created, so a damaged record in any segment but the last is
//!   corruption, never a torn tail.
//! - After a failed write or fsync the log is poisoned and accepts nothing more: the page
//!   cache may have dropped the data the failed fsync was for, so retrying would lie. A
//!   segment that cannot be created for want of space or descriptors is a refusal, not a
//!   poison (module `rotation`).
//! - With a synchronous archive ([`WalOptions::archive_lag_ms`] = 0) the flusher copies
//!   each group into the archive after its fsync and before publishing it (module
//!   `follow`); a failed copy fails the group's waiters with [`Error::ArchiveFailed`] but
//!   does not poison the log. `durable_pos` tells the archiver how far it may copy.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::{Condvar, Mutex, MutexGuard};

use crate::error::{Error, Result};
use crate::follow::{archive_failed, DurablePos, Follower};
use crate::format::{segment_file_name, SEGMENT_HEADER_LEN};
use crate::options::WalOptions;
use crate::recovery::SegmentInfo;
use crate::rotation::{create_segment, Refusal};
use crate::storage::{OpenMode, Storage, StorageFile};

/// Unsynced writes at least this large start their write-back at once.
const WRITEBACK_MIN_BYTES: usize = 256 << 10;

/// Encoded records waiting for the flusher.
#[derive(Debug)]
pub(crate) struct Chunk {
    /// First LSN of the segment these bytes belong to.
    pub(crate) seg: u64,
    /// File offset of `buf[0]`.
    pub(crate) off: u64,
    pub(crate) buf: Vec<u8>,
    pub(crate) last_lsn: u64,
}

/// Why the log stopped accepting appends: the failed operation, on which file.
#[derive(Debug, Clone)]
pub(crate) struct Poison {
    pub(crate) op: &'static str,
    pub(crate) file: PathBuf,
    pub(crate) reason: String,
}

impl Poison {
    pub(crate) fn to_error(&self) -> Error {
        Error::Poisoned {
            op: self.op,
            file: self.file.clone(),
            reason: self.reason.clone(),
        }
    }
}

/// The appenders' shared state, under `Shared::state`.
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) next_lsn: u64,
    /// Segment (by first LSN) and offset where the next record goes.
    pub(crate) tail_seg: u64,
    pub(crate) tail_off: u64,
    pub(crate) pending: Vec<Chunk>,
    /// Every record up to here has been handed to the OS.
    pub(crate) written_lsn: u64,
    /// Every record up to here has been fsynced.
    pub(crate) durable_lsn: u64,
    pub(crate) flushing: bool,
    /// A rotation is under way: appenders wait for it before queueing.
    pub(crate) rotating: bool,
    /// The last rotation was refused for want of space or descriptors: it is still due,
    /// and the next append retries it before queueing anything.
    pub(crate) refused: Option<Refusal>,
    pub(crate) poisoned: Option<Poison>,
    pub(crate) closed: bool,
    /// Where the durable bytes end (segment, offset, LSN): how far the archiver may copy.
    pub(crate) durable_pos: DurablePos,
    /// Every record up to here is fsynced in the archive.
    pub(crate) archived_lsn: u64,
    /// Since when (ms) durable records have been waiting for the archive; `None` when it
    /// has caught up.
    pub(crate) unarchived_since_ms: Option<u64>,
    /// The last archive failure and since when the archive fails, while it does.
    pub(crate) archive_error: Option<String>,
    pub(crate) archive_failing_since_ms: Option<u64>,
    /// With a synchronous archive: the last LSN of the latest group whose archive copy
    /// failed (its waiters fail with [`Error::ArchiveFailed`]).
    pub(crate) archive_failed_upto: u64,
}

/// The segment being written; only the flusher touches it.
#[derive(Debug)]
pub(crate) struct Current {
    pub(crate) file: Box<dyn StorageFile>,
    pub(crate) seg: u64,
    pub(crate) path: PathBuf,
    pub(crate) end: u64,
    pub(crate) last_lsn: Option<u64>,
    pub(crate) synced: bool,
}

/// The segment list, and the segments closed but not yet handed to the archiver.
#[derive(Debug, Default)]
pub(crate) struct Segments {
    pub(crate) list: Vec<SegmentInfo>,
    pub(crate) archive_error: Option<String>,
    /// First LSNs of closed segments waiting to be archived, oldest first.
    pub(crate) archive_queue: VecDeque<u64>,
    /// Set at shutdown: the archive thread drains the queue and ends.
    pub(crate) archiver_stopping: bool,
}

/// Everything the log's threads share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) storage: Arc<dyn Storage>,
    pub(crate) dir: PathBuf,
    pub(crate) opts: WalOptions,
    pub(crate) state: Mutex<State>,
    pub(crate) cond: Condvar,
    pub(crate) current: Mutex<Current>,
    pub(crate) segs: Mutex<Segments>,
    /// Notified when the archive queue grows, when a segment is archived, and at shutdown.
    pub(crate) segs_cond: Condvar,
    /// The archiver's state, held while copying, so the background archiver,
    /// `archive_closed` and a synchronous commit never copy at once.
    pub(crate) follower: Mutex<Follower>,
}

impl State {
    /// Fails if the log is poisoned or closed.
    pub(crate) fn check_open(&self) -> Result<()> {
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
    /// Notes, as the durable position advances, since when records wait for the archive.
    fn note_unarchived(&self, st: &mut State) {
        if self.opts.archive_dir.is_some()
            && st.unarchived_since_ms.is_none()
            && st.archived_lsn < st.durable_lsn
        {
            st.unarchived_since_ms = Some(self.opts.clock.now_ms());
        }
    }

    /// Waits until `lsn` is written (or durable), becoming the flusher when nobody is.
    pub(crate) fn wait_for<'a>(
        &'a self,
        mut st: MutexGuard<'a, State>,
        lsn: u64,
        durable: bool,
    ) -> Result<()> {
        let sync_archive = durable && self.archive_is_synchronous();
        loop {
            let done = if durable {
                st.durable_lsn >= lsn
            } else {
                st.written_lsn >= lsn
            };
            if done && sync_archive && st.archived_lsn < lsn {
                if st.archive_failed_upto >= lsn {
                    return Err(archive_failed(&st));
                }
                // Durable, not yet archived: the next flush (this thread's, if nobody
                // else's) copies it.
            } else if done {
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
    pub(crate) fn flush_locked<'a>(
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
        let durable_pos = match (&res, sync) {
            (Ok(()), true) => {
                let cur = self.current.lock();
                Some(DurablePos {
                    seg: cur.seg,
                    off: cur.end,
                    lsn: target,
                })
            }
            _ => None,
        };
        // A synchronous archive copies the group before anyone is told it is durable.
        let archived = match durable_pos {
            Some(pos) if self.archive_is_synchronous() => Some(self.archive_group(pos)),
            _ => None,
        };
        let mut st = self.state.lock();
        st.flushing = false;
        match res {
            Ok(()) => {
                st.written_lsn = st.written_lsn.max(target);
                if let Some(pos) = durable_pos {
                    st.durable_lsn = st.durable_lsn.max(target);
                    st.durable_pos = pos;
                    self.note_unarchived(&mut st);
                }
                if let Some(Err(_)) = archived {
                    st.archive_failed_upto = target;
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
            debug_assert_eq!(c.seg, cur.seg, "chunks are queued for the current segment");
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
}

/// Opens the last segment for appending, or creates the first one.
pub(crate) fn open_current(
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
                match file.preallocate(opts.segment_size) {
                    // Opening needs no free space: a segment that cannot be extended now
                    // goes on as one made without preallocation (its header says which
                    // length it must have, and recovery checks only that).
                    Err(e) if crate::error::ResourceKind::of(&e).is_some() => {}
                    r => r.map_err(|e| Error::io("preallocate", &s.path, e))?,
                }
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
            // At open a failure is the open's, whatever the cause: Io, as any other.
            let file = create_segment(storage, &path, opts, opts.initial_lsn)
                .map_err(|f| Error::io(f.op, f.path, f.error))?;
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

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use crate::clock::ManualClock;
    use crate::format::{SegmentHeader, SEGMENT_HEADER_LEN};
    use crate::sim::SimStorage;
    use crate::{Wal, WalOptions};

    fn header_of(sim: &SimStorage, path: &Path) -> SegmentHeader {
        let bytes = sim.contents(path).expect("segment exists");
        SegmentHeader::decode(&bytes[..SEGMENT_HEADER_LEN as usize]).expect("header decodes")
    }

    #[test]
    fn a_new_segment_header_carries_the_time_of_the_log_clock() {
        let sim = SimStorage::new();
        let clock = Arc::new(ManualClock::new(1_234_567));
        let opts = WalOptions {
            segment_size: 8192,
            clock: clock.clone(),
            ..WalOptions::default()
        };
        let wal = Wal::open_with(Arc::new(sim.clone()), "/wal", opts).expect("open");
        let first = wal.segments()[0].path.clone();
        assert_eq!(header_of(&sim, &first).created_ms, 1_234_567);

        clock.advance(1_000);
        wal.append(1, b"x").expect("append");
        wal.rotate().expect("rotate");
        let second = wal.segments()[1].path.clone();
        assert_eq!(header_of(&sim, &second).created_ms, 1_235_567);
        // The first segment's header was written once, at its creation.
        assert_eq!(header_of(&sim, &first).created_ms, 1_234_567);
    }
}
