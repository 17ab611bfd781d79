//! Configuration of a [`crate::Wal`], every field with its default and its bounds.
//!
//! [`WalOptions::validate`] is the one place the bounds are checked; [`crate::Wal::open`]
//! calls it before touching the directory, so a log never runs on options it refuses.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::{system_clock, Clock};
use crate::error::{Error, Result};
use crate::format::{MAX_RECORD_SIZE_LIMIT, SEGMENT_HEADER_LEN};

/// When an append is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncPolicy {
    /// Acknowledge after the record is fsynced (default). Concurrent appends share one
    /// write and one fsync (group commit).
    #[default]
    Always,
    /// Acknowledge once the record is handed to the operating system; a background thread
    /// fsyncs at this interval (or [`crate::Wal::sync_due`] does, when
    /// [`WalOptions::background_threads`] is off). A power loss may lose up to one interval
    /// of acknowledged records; a process crash loses none.
    Interval(Duration),
    /// Acknowledge once the record is encoded in the log's memory buffer; the buffer goes
    /// to the operating system when 1 MiB has gathered or 100 ms have passed, and is
    /// fsynced only on rotation, `sync()` and close. A process crash may lose the last
    /// 100 ms of acknowledged records, a power loss everything since the last fsync. For
    /// bulk loads and logs that can be rebuilt.
    Never,
}

/// What opening does with a damaged record that valid records follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RecoveryMode {
    /// Refuse to open and report file and offset (default). A torn tail is still cut.
    #[default]
    Strict,
    /// Keep a copy of the segment as `<name>.broken`, then cut the log at the damaged
    /// record, losing every record after it. For an operator who has decided so.
    TruncateCorruptTail,
}

/// Options for [`crate::Wal::open`].
#[derive(Debug, Clone)]
pub struct WalOptions {
    /// Node id written into every segment header; opening a directory written by another
    /// node fails. Default 1.
    pub node_id: u64,
    /// Maximum segment file size in bytes; a segment rotates when the next batch would not
    /// fit (a single batch larger than this gets a segment of its own). Default 64 MiB,
    /// minimum 4 KiB.
    pub segment_size: u64,
    /// Maximum payload of one record in bytes. Default 16 MiB, at most 1 GiB. A length field
    /// above it on disk is corruption, and nothing is allocated from it.
    pub max_record_size: u32,
    /// When appends are acknowledged. Default [`SyncPolicy::Always`].
    pub sync: SyncPolicy,
    /// Reserve each new segment's full size up front (fallocate), so that appends overwrite
    /// allocated blocks and fdatasync has no allocation metadata to write. Default true.
    pub preallocate: bool,
    /// Free space the log leaves on its file system, in bytes: a new segment is created only
    /// while at least its size plus this reserve is free (checked through
    /// [`crate::Storage::available_space`] before each rotation), so that the log refuses
    /// writes ([`crate::Error::Resource`], not a disk failure) before the disk is actually
    /// full and a checkpoint and the server's own small files still have room. `None` (the
    /// default) reserves one segment size; `Some(0)` turns the check off. The first segment
    /// of an empty log is created at open without this check.
    pub reserve_bytes: Option<u64>,
    /// Handling of mid-log damage at open. Default [`RecoveryMode::Strict`].
    pub recovery: RecoveryMode,
    /// If set, the archive root: the log's segments are copied into its lineage
    /// subdirectory [`crate::archive_subdir`]`(root, node_id, timeline)` by the archiver (a
    /// background thread, or [`crate::Wal::archive_pending`] when
    /// [`WalOptions::background_threads`] is off): the durable part of the segment being
    /// written as `<name>.partial`, growing, and every closed segment under its own name
    /// (file and directory fsynced). Several logs (nodes, timelines) may share one root.
    /// Default none.
    pub archive_dir: Option<PathBuf>,
    /// How far the archive may fall behind the durable log, in milliseconds: the archiver
    /// copies newly durable bytes at least this often. 0 makes the archive synchronous: an
    /// append is acknowledged only once its bytes are fsynced in the archive too (one
    /// archive write and fsync per group commit), and fails if the archive cannot be
    /// written (the record stays durable in the local log). Default 1000.
    pub archive_lag_ms: u64,
    /// Timeline written into every new segment header: 1 for a log that was never
    /// restored; a restore starts a new one (as PostgreSQL's timelines), so that its
    /// segments never pass for the original's. An existing log continues on the timeline
    /// of its newest segment when that is higher (so a restored database keeps its
    /// timeline across opens with the default; [`crate::Wal::options`] shows the one in
    /// force). Default 1, at least 1.
    pub timeline: u64,
    /// LSN of the first record when the directory holds no segment. Default 1.
    pub initial_lsn: u64,
    /// Where the log reads the wall clock (the creation time in each new segment's
    /// header). Default the system clock; a [`crate::ManualClock`] for tests and
    /// simulations.
    pub clock: Arc<dyn Clock>,
    /// Start the background threads: the sync thread under [`SyncPolicy::Interval`] and
    /// [`SyncPolicy::Never`], the archiver with an [`WalOptions::archive_dir`]. Default
    /// true. Off, no thread is started and the owner drives that work with
    /// [`crate::Wal::sync_due`] and [`crate::Wal::archive_pending`] (a test or a
    /// simulation that wants no hidden threads); until it does, appends under `Interval`
    /// are not fsynced, under `Never` stay in memory, and closed segments are not archived.
    pub background_threads: bool,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            node_id: 1,
            segment_size: 64 << 20,
            max_record_size: 16 << 20,
            sync: SyncPolicy::Always,
            preallocate: true,
            reserve_bytes: None,
            recovery: RecoveryMode::Strict,
            archive_dir: None,
            archive_lag_ms: 1000,
            timeline: 1,
            initial_lsn: 1,
            clock: system_clock(),
            background_threads: true,
        }
    }
}

impl WalOptions {
    /// The reserve in force: [`WalOptions::reserve_bytes`], or one segment size when unset.
    pub fn effective_reserve(&self) -> u64 {
        self.reserve_bytes.unwrap_or(self.segment_size)
    }

    /// Checks the options; the message names the field and its bounds.
    pub fn validate(&self) -> Result<()> {
        if self.segment_size < 4096 {
            return Err(Error::Config(format!(
                "segment_size {} is below the minimum of 4096 bytes",
                self.segment_size
            )));
        }
        if self.max_record_size == 0 || self.max_record_size > MAX_RECORD_SIZE_LIMIT {
            return Err(Error::Config(format!(
                "max_record_size {} must be between 1 and {MAX_RECORD_SIZE_LIMIT}",
                self.max_record_size
            )));
        }
        if self.initial_lsn == 0 || self.initial_lsn > crate::format::MAX_LSN {
            return Err(Error::Config(format!(
                "initial_lsn {} must be between 1 and {}",
                self.initial_lsn,
                crate::format::MAX_LSN
            )));
        }
        if self.timeline == 0 {
            return Err(Error::Config(
                "timeline 0 is reserved; timelines start at 1".into(),
            ));
        }
        if let SyncPolicy::Interval(d) = self.sync {
            if d.is_zero() {
                return Err(Error::Config(
                    "SyncPolicy::Interval needs a non-zero interval (use Always for an fsync per commit)"
                        .into(),
                ));
            }
        }
        debug_assert!(self.segment_size > SEGMENT_HEADER_LEN);
        Ok(())
    }
}
