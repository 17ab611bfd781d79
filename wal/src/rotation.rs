//! Segment rotation and creation, and the log's free-space status.
//!
//! A new segment is built under a temporary name (`<name>.tmp`: created, preallocated,
//! header written, fsynced) and only then renamed to its segment name and the directory
//! fsynced, so a segment file under a segment name is always complete; a failed creation
//! removes its `.tmp`, and recovery removes any `.tmp` a crash left (docs/FORMAT.md §2).
//! The header carries the creation time read from [`WalOptions::clock`], the timeline of
//! [`WalOptions::timeline`] and, when preallocated, the intended length.
//!
//! Rotation happens *before* any record is queued for the new segment: the appender whose
//! batch does not fit (or [`crate::Wal::rotate`]) first has everything queued written and
//! fsynced into the current segment, then creates the next one while other appenders wait.
//! So a creation that fails touches no queued record:
//! - running out of space or descriptors (`ENOSPC`, `EDQUOT`, `EMFILE`, `ENFILE`) at any
//!   step of the creation, or free space below the reserve, refuses the append with
//!   [`Error::Resource`]: it used no LSN, the log is not poisoned, reads go on, and the
//!   rotation stays due, so the next append retries it (and no record goes into the old
//!   segment meanwhile, whose records end where the refused segment would have started);
//! - any other failure, and any failure to fsync the old segment, poisons the log as
//!   before (fail-stop).

use std::path::{Path, PathBuf};

use parking_lot::MutexGuard;

use crate::error::{Error, ResourceKind, Result};
use crate::follow::DurablePos;
use crate::format::{segment_file_name, SegmentHeader, SEGMENT_HEADER_LEN};
use crate::options::WalOptions;
use crate::recovery::SegmentInfo;
use crate::storage::{OpenMode, Storage, StorageFile};
use crate::writer::{Current, Poison, Shared, State};

/// Suffix of a segment being created (docs/FORMAT.md §2).
pub(crate) const CREATING_SUFFIX: &str = ".tmp";

/// Free space on the log's file system, for INFO and monitoring ([`crate::Wal::space_status`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SpaceStatus {
    /// Bytes available on the file system of the log's directory; `None` where the storage
    /// cannot tell (then the reserve is not checked).
    pub available_bytes: Option<u64>,
    /// The reserve in force ([`WalOptions::reserve_bytes`], one segment size by default).
    pub reserve_bytes: u64,
    /// Bytes that must be free for the next segment to be created: its size plus the
    /// reserve (0 when the reserve is off: then only the creation itself can fail).
    pub needed_bytes: u64,
    /// While writes are refused for want of space or descriptors: the refusal, as the
    /// refused appends were told. Cleared by the next segment created.
    pub refused: Option<String>,
    /// Since when writes are refused (ms since the Unix epoch), while they are.
    pub refused_since_ms: Option<u64>,
}

/// The last rotation refused for want of a resource, while the rotation is still due.
#[derive(Debug, Clone)]
pub(crate) struct Refusal {
    pub(crate) message: String,
    pub(crate) since_ms: u64,
}

/// How creating the next segment failed.
enum SwitchError {
    /// A resource ran out before any record was involved: refuse, do not poison.
    Refused(Error),
    /// Anything else: poison.
    Fatal(Poison),
}

/// A failed step of [`create_segment`]: what it was doing, on which file.
#[derive(Debug)]
pub(crate) struct CreateFailure {
    pub(crate) op: &'static str,
    pub(crate) path: PathBuf,
    pub(crate) error: std::io::Error,
}

impl CreateFailure {
    fn new(op: &'static str, path: &Path, error: std::io::Error) -> Self {
        CreateFailure {
            op,
            path: path.to_path_buf(),
            error,
        }
    }

    /// The error for a caller: [`Error::Resource`] when a resource ran out, else
    /// [`Error::Io`].
    pub(crate) fn into_error(self) -> Error {
        Error::io_or_resource(self.op, self.path, self.error)
    }
}

/// The temporary name under which the segment at `path` is built.
pub(crate) fn creating_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(CREATING_SUFFIX);
    path.with_file_name(name)
}

/// Creates a complete segment file at `path`: builds it as `<name>.tmp` (create,
/// preallocate, header, fsync), renames it to `path` and fsyncs the directory. On failure
/// nothing is left under either name (removal is best effort; recovery removes a `.tmp`
/// left by a crash, and a segment whose rename is not durable is complete and empty).
pub(crate) fn create_segment(
    storage: &dyn Storage,
    path: &Path,
    opts: &WalOptions,
    first_lsn: u64,
) -> std::result::Result<Box<dyn StorageFile>, CreateFailure> {
    let tmp = creating_path(path);
    if storage.exists(&tmp) {
        // Left by an earlier attempt whose removal failed.
        storage
            .remove_file(&tmp)
            .map_err(|e| CreateFailure::new("remove unfinished segment", &tmp, e))?;
    }
    let file = match build_segment(storage, &tmp, opts, first_lsn) {
        Ok(f) => f,
        Err(e) => {
            let _ = storage.remove_file(&tmp);
            return Err(e);
        }
    };
    if let Err(e) = storage.rename(&tmp, path) {
        let _ = storage.remove_file(&tmp);
        return Err(CreateFailure::new("rename segment", path, e));
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    if let Err(e) = storage.sync_dir(dir) {
        // Complete but its name may not be durable: withdraw it, so the directory holds
        // what the log believes; the retry creates it again.
        let _ = storage.remove_file(path);
        return Err(CreateFailure::new("fsync directory", dir, e));
    }
    Ok(file)
}

/// Creates, preallocates, writes the header of and fsyncs the file at `tmp`.
fn build_segment(
    storage: &dyn Storage,
    tmp: &Path,
    opts: &WalOptions,
    first_lsn: u64,
) -> std::result::Result<Box<dyn StorageFile>, CreateFailure> {
    let fail = |op| move |e| CreateFailure::new(op, tmp, e);
    let file = storage
        .open(tmp, OpenMode::CreateNew)
        .map_err(fail("create segment"))?;
    if opts.preallocate {
        file.preallocate(opts.segment_size)
            .map_err(fail("preallocate"))?;
    }
    let header = SegmentHeader {
        node_id: opts.node_id,
        first_lsn,
        created_ms: opts.clock.now_ms(),
        timeline: opts.timeline,
        intended_len: if opts.preallocate {
            opts.segment_size
        } else {
            0
        },
    };
    file.write_all_at(&header.encode(), 0)
        .map_err(fail("write segment header"))?;
    file.sync_data().map_err(fail("fsync"))?;
    Ok(file)
}

impl Shared {
    /// Closes the segment being written and creates the next, starting at the next LSN.
    /// Called with no rotation running; sets `rotating` so that appenders wait, has every
    /// queued record written and fsynced first, then creates the segment. Returns the state
    /// with the new segment as the tail, or the refusal or poison.
    pub(crate) fn rotate_locked<'a>(
        &'a self,
        mut st: MutexGuard<'a, State>,
    ) -> Result<MutexGuard<'a, State>> {
        debug_assert!(!st.rotating);
        st.rotating = true;
        st = self.drain_durable(st);
        if let Err(e) = st.check_open() {
            st.rotating = false;
            self.cond.notify_all();
            return Err(e);
        }
        let first_lsn = st.next_lsn;
        st.flushing = true;
        drop(st);
        let res = self.switch_segment(first_lsn);
        let mut st = self.state.lock();
        st.flushing = false;
        st.rotating = false;
        self.cond.notify_all();
        match res {
            Ok(()) => {
                st.tail_seg = first_lsn;
                st.tail_off = SEGMENT_HEADER_LEN;
                st.refused = None;
                st.durable_pos = DurablePos {
                    seg: first_lsn,
                    off: SEGMENT_HEADER_LEN,
                    lsn: first_lsn - 1,
                };
                Ok(st)
            }
            Err(SwitchError::Refused(e)) => {
                let since_ms = match &st.refused {
                    Some(r) => r.since_ms,
                    None => self.opts.clock.now_ms(),
                };
                st.refused = Some(Refusal {
                    message: e.to_string(),
                    since_ms,
                });
                Err(e)
            }
            Err(SwitchError::Fatal(p)) => {
                let p = st.poisoned.get_or_insert(p).clone();
                Err(p.to_error())
            }
        }
    }

    /// Writes and fsyncs everything queued (becoming the flusher when nobody is); returns
    /// once nothing is pending and all of it is durable, or the log is poisoned.
    fn drain_durable<'a>(&'a self, mut st: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        loop {
            let drained = st.pending.is_empty() && st.durable_lsn + 1 >= st.next_lsn;
            if st.poisoned.is_some() || (drained && !st.flushing && self.current.lock().synced) {
                return st;
            }
            if st.flushing {
                self.cond.wait(&mut st);
            } else {
                st = self.flush_locked(st, true);
            }
        }
    }

    /// Finishes the current segment (fsync, mark closed, hand to the archiver) and creates
    /// the segment that starts at `first_lsn`. Only the caller, as the flusher, runs this.
    fn switch_segment(&self, first_lsn: u64) -> std::result::Result<(), SwitchError> {
        let mut cur = self.current.lock();
        if !cur.synced {
            cur.file.sync_data().map_err(|e| {
                SwitchError::Fatal(Poison {
                    op: "fsync",
                    file: cur.path.clone(),
                    reason: e.to_string(),
                })
            })?;
            cur.synced = true;
        }
        let path = self.dir.join(segment_file_name(first_lsn));
        if let Some(kind) = self.below_reserve() {
            return Err(SwitchError::Refused(Error::Resource {
                op: "create segment",
                path,
                kind,
                source: None,
            }));
        }
        let file = create_segment(&*self.storage, &path, &self.opts, first_lsn).map_err(|f| {
            if ResourceKind::of(&f.error).is_some() {
                SwitchError::Refused(f.into_error())
            } else {
                SwitchError::Fatal(Poison {
                    op: f.op,
                    file: f.path,
                    reason: f.error.to_string(),
                })
            }
        })?;
        let old = std::mem::replace(
            &mut *cur,
            Current {
                file,
                seg: first_lsn,
                path: path.clone(),
                end: SEGMENT_HEADER_LEN,
                last_lsn: None,
                synced: true,
            },
        );
        drop(cur);
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
        if self.opts.archive_dir.is_some() {
            segs.archive_queue.push_back(old.seg);
            self.segs_cond.notify_all();
        }
        Ok(())
    }

    /// The bytes that must be free for a new segment: its size plus the reserve; 0 when
    /// the reserve is off.
    fn needed_bytes(&self) -> u64 {
        match self.opts.effective_reserve() {
            0 => 0,
            r => self.opts.segment_size.saturating_add(r),
        }
    }

    /// `Some` when the file system's free space is known and below what a new segment
    /// and the reserve need.
    fn below_reserve(&self) -> Option<ResourceKind> {
        let needed = self.needed_bytes();
        if needed == 0 {
            return None;
        }
        // A file system that cannot tell its free space is not refused for it.
        let available = self.storage.available_space(&self.dir).ok().flatten()?;
        (available < needed).then_some(ResourceKind::BelowReserve { available, needed })
    }

    /// Free space, the reserve and any refusal in force.
    pub(crate) fn space_status(&self) -> SpaceStatus {
        let available_bytes = self.storage.available_space(&self.dir).ok().flatten();
        let st = self.state.lock();
        SpaceStatus {
            available_bytes,
            reserve_bytes: self.opts.effective_reserve(),
            needed_bytes: self.needed_bytes(),
            refused: st.refused.as_ref().map(|r| r.message.clone()),
            refused_since_ms: st.refused.as_ref().map(|r| r.since_ms),
        }
    }
}
