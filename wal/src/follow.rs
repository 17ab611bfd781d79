//! The archiver's work: completing closed segments in the archive and following the
//! segment being written as a growing `.partial` (the model is PostgreSQL's
//! `pg_receivewal`), and the archive's status.
//!
//! One step ([`Shared::archive_step`]) copies, oldest first, every closed segment not yet
//! archived (completing its `.partial` if it was followed), then appends the newly durable
//! bytes of the segment being written to its `.partial` and fsyncs it. Only that fsync
//! advances the archive position (`archived_lsn`): the archive never claims bytes it could
//! still lose.
//!
//! Policy when the archive fails (disk full, permissions, a conflicting file):
//! - with `archive_lag_ms` > 0 the archive is best effort with an alarm: local writes go on
//!   (the local log is the truth, and stopping the writers would turn an archive outage into
//!   a database outage), the error is kept in [`ArchiveStatus`] with the time it started
//!   failing, and every wake-up tries again; the lag in the status grows until it succeeds;
//! - with `archive_lag_ms` = 0 (synchronous) the operator asked that no commit be
//!   acknowledged before the archive holds it: a commit whose archive copy fails returns
//!   [`Error::ArchiveFailed`] (its records stay durable in the local log, which is not
//!   poisoned), and every later commit tries the archive again.

use std::path::{Path, PathBuf};

use parking_lot::MutexGuard;

use crate::archive::{archive_segment, archive_subdir, PartialCopy};
use crate::error::{Error, Result};
use crate::format::{segment_file_name, SegmentHeader, SEGMENT_HEADER_LEN};
use crate::storage::OpenMode;
use crate::writer::{Shared, State};

/// Where the durable part of the log ends: the segment being written, the offset just past
/// its last durable byte, and the last durable LSN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DurablePos {
    pub(crate) seg: u64,
    pub(crate) off: u64,
    pub(crate) lsn: u64,
}

/// The archiver's own state, under `Shared::follower`: held while copying, so that the
/// background archiver, `archive_closed` and a synchronous commit never copy at once.
#[derive(Debug, Default)]
pub(crate) struct Follower {
    /// The `.partial` of the segment being written, once the archiver has opened it.
    pub(crate) partial: Option<PartialCopy>,
}

/// The archive's position and health, for monitoring (INFO, `DUPLEX.STATE`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ArchiveStatus {
    /// Every record up to this LSN is fsynced in the archive (closed segments and the
    /// `.partial` of the segment being written).
    pub archived_lsn: u64,
    /// Every record up to this LSN is fsynced in the local log.
    pub durable_lsn: u64,
    /// Milliseconds since the oldest durable record not yet in the archive became durable
    /// (an upper bound); 0 when the archive has caught up.
    pub lag_ms: u64,
    /// The last archive failure, while it lasts (cleared by the next success).
    pub last_error: Option<String>,
    /// When the archive started failing (ms since the Unix epoch), while it fails.
    pub failing_since_ms: Option<u64>,
}

impl Shared {
    /// The archive directory of the segment at `path`: the subdirectory of the lineage its
    /// header names (a segment written before a change of `WalOptions::timeline` keeps its
    /// own, created here if needed); `None` without an archive.
    pub(crate) fn archive_dir_of(&self, path: &Path) -> Result<Option<PathBuf>> {
        let Some(root) = self.opts.archive_dir.as_ref() else {
            return Ok(None);
        };
        let f = self
            .storage
            .open(path, OpenMode::Read)
            .map_err(|e| Error::io("open", path, e))?;
        let mut b = [0u8; SEGMENT_HEADER_LEN as usize];
        f.read_exact_at(&mut b, 0)
            .map_err(|e| Error::io("read", path, e))?;
        let h = SegmentHeader::decode(&b).map_err(|kind| Error::Corrupt {
            file: path.to_path_buf(),
            offset: 0,
            kind,
        })?;
        let dir = archive_subdir(root, h.node_id, h.timeline);
        // The log's own lineage directory was made at open: if it is gone (an unmounted or
        // wiped archive disk) that is a failure to report, not something to paper over.
        let own = (h.node_id, h.timeline) == (self.opts.node_id, self.opts.timeline);
        if !own && !self.storage.exists(&dir) {
            self.storage
                .create_dir_all(&dir)
                .map_err(|e| Error::io("create directory", &dir, e))?;
        }
        Ok(Some(dir))
    }

    /// True when commits wait for the archive (`archive_lag_ms` = 0).
    pub(crate) fn archive_is_synchronous(&self) -> bool {
        self.opts.archive_dir.is_some() && self.opts.archive_lag_ms == 0
    }

    /// One wake-up of the archiver: completes every closed segment not yet archived, then
    /// follows the segment being written up to the durable position. Returns how many
    /// closed segments were completed. Failures are kept in the status and returned.
    pub(crate) fn archive_pending(&self) -> Result<usize> {
        if self.opts.archive_dir.is_none() {
            return Ok(0);
        }
        let pos = self.state.lock().durable_pos;
        let mut f = self.follower.lock();
        self.archive_step(&mut f, pos)
    }

    /// [`Shared::archive_pending`] with the follower held and the durable position given
    /// (the synchronous commit path knows it before it is published).
    pub(crate) fn archive_step(&self, f: &mut Follower, pos: DurablePos) -> Result<usize> {
        let started = self.opts.clock.now_ms();
        self.segs.lock().archive_queue.clear();
        let res = self
            .archive_closed_locked(f)
            .and_then(|n| self.follow_active(f, pos).map(|reached| (n, reached)));
        let mut st = self.state.lock();
        match &res {
            Ok((_, reached)) => {
                if *reached {
                    st.archived_lsn = st.archived_lsn.max(pos.lsn);
                }
                st.unarchived_since_ms = (st.durable_lsn > st.archived_lsn).then_some(started);
                st.archive_error = None;
                st.archive_failing_since_ms = None;
            }
            Err(e) => {
                st.archive_error = Some(e.to_string());
                st.archive_failing_since_ms.get_or_insert(started);
                if st.durable_lsn > st.archived_lsn {
                    st.unarchived_since_ms.get_or_insert(started);
                }
            }
        }
        res.map(|(n, _)| n)
    }

    /// Copies every closed, unarchived segment, oldest first, stopping at the first
    /// failure (the archive must stay contiguous; the next step retries). Returns how many
    /// were copied.
    pub(crate) fn archive_closed_locked(&self, f: &mut Follower) -> Result<usize> {
        if self.opts.archive_dir.is_none() {
            return Ok(0);
        }
        let todo: Vec<_> = {
            let segs = self.segs.lock();
            segs.list
                .iter()
                .filter(|s| s.closed && !s.archived)
                .cloned()
                .collect()
        };
        for info in &todo {
            let res = self.archive_dir_of(&info.path).and_then(|dir| {
                let dir = dir.unwrap_or_default();
                match f.partial.take() {
                    Some(mut p) if p.first_lsn == info.first_lsn => {
                        p.extend(info.end_offset).and_then(|_| {
                            p.complete(&*self.storage, &dir.join(segment_file_name(info.first_lsn)))
                        })
                    }
                    other => {
                        f.partial = other;
                        archive_segment(&*self.storage, &info.path, info.end_offset, &dir)
                    }
                }
            });
            let mut segs = self.segs.lock();
            match res {
                Ok(_) => {
                    if let Some(s) = segs.list.iter_mut().find(|s| s.first_lsn == info.first_lsn) {
                        s.archived = true;
                    }
                    self.segs_cond.notify_all();
                }
                Err(e) => {
                    segs.archive_error = Some(e.to_string());
                    self.segs_cond.notify_all();
                    return Err(e);
                }
            }
        }
        Ok(todo.len())
    }

    /// Appends the durable bytes of the segment being written, up to `pos`, to its
    /// `.partial` in the archive and fsyncs it. Returns whether the archive now holds
    /// everything up to `pos`: true also when the segment holds no record; false when it
    /// closed since `pos` was taken (the next closed-segment pass completes it).
    fn follow_active(&self, f: &mut Follower, pos: DurablePos) -> Result<bool> {
        if self.opts.archive_dir.is_none() {
            return Ok(true);
        }
        if pos.off <= SEGMENT_HEADER_LEN {
            return Ok(true);
        }
        let path = {
            let segs = self.segs.lock();
            match segs.list.iter().find(|s| s.first_lsn == pos.seg) {
                Some(s) if !s.closed => s.path.clone(),
                _ => return Ok(false),
            }
        };
        if f.partial.as_ref().is_some_and(|p| p.first_lsn != pos.seg) {
            f.partial = None;
        }
        let partial = match f.partial.as_mut() {
            Some(p) => p,
            None => {
                let dir = self.archive_dir_of(&path)?.unwrap_or_default();
                f.partial.insert(PartialCopy::open(
                    &*self.storage,
                    &path,
                    pos.seg,
                    &dir,
                    pos.off,
                )?)
            }
        };
        partial.extend(pos.off)?;
        Ok(true)
    }

    /// The synchronous archive of one commit group (`archive_lag_ms` = 0), called by the
    /// flusher after the group's fsync and before it is published; records the outcome in
    /// `st` once the caller holds the state lock again.
    pub(crate) fn archive_group(&self, pos: DurablePos) -> Result<()> {
        let mut f = self.follower.lock();
        self.archive_step(&mut f, pos).map(|_| ())
    }

    /// The status, read under the state lock; without an archive only `durable_lsn` is set.
    pub(crate) fn archive_status(&self) -> ArchiveStatus {
        let st = self.state.lock();
        if self.opts.archive_dir.is_none() {
            return ArchiveStatus {
                durable_lsn: st.durable_lsn,
                ..ArchiveStatus::default()
            };
        }
        status_of(&st, self.opts.clock.now_ms())
    }
}

/// The status held in `st` at time `now_ms`.
fn status_of(st: &MutexGuard<'_, State>, now_ms: u64) -> ArchiveStatus {
    let lag_ms = match st.unarchived_since_ms {
        Some(t) if st.durable_lsn > st.archived_lsn => now_ms.saturating_sub(t),
        _ => 0,
    };
    ArchiveStatus {
        archived_lsn: st.archived_lsn,
        durable_lsn: st.durable_lsn,
        lag_ms,
        last_error: st.archive_error.clone(),
        failing_since_ms: st.archive_failing_since_ms,
    }
}

/// The error a commit waiting for the synchronous archive gets when its group's copy
/// failed.
pub(crate) fn archive_failed(st: &State) -> Error {
    Error::ArchiveFailed {
        reason: st
            .archive_error
            .clone()
            .unwrap_or_else(|| "the archive copy failed".into()),
    }
}
