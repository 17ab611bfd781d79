//! `duplex-wal`: the segmented write-ahead log under every Duplex server.
//!
//! A tour of the main types:
//! - [`Wal`] is the log: [`Wal::append`] and [`Wal::append_batch`] from any number of
//!   threads, acknowledged under a [`SyncPolicy`] with group commit (one write and one fsync
//!   for everything queued meanwhile). A failed write or fsync poisons the log. Running out
//!   of space or descriptors while creating the next segment (module `rotation`), or free
//!   space below [`WalOptions::reserve_bytes`], refuses the append with
//!   [`Error::Resource`] instead: nothing logged, not poisoned, writes resume by themselves;
//!   [`Wal::space_status`] shows free space, the reserve and any refusal.
//! - [`Wal::open`] recovers (module `recovery`): it checks every segment, cuts a torn tail
//!   (reported in a [`RecoveryReport`]) and refuses mid-log corruption with
//!   [`Error::Corrupt`], naming file and offset. The write path (group commit, rotation,
//!   fail-stop) is module `writer`.
//! - Background work, the interval sync and the archiver, runs on threads by default; with
//!   [`WalOptions::background_threads`] off, the owner drives it step by step
//!   ([`Wal::sync_due`], [`Wal::archive_pending`]). Wall-clock time comes from the
//!   [`Clock`] in [`WalOptions::clock`].
//! - [`WalReader`] iterates [`Record`]s from any LSN across the live directory and the
//!   archive as one stream, checking every checksum and LSN on the way.
//! - The archive: a [`Wal`] with [`WalOptions::archive_dir`] copies its segments into the
//!   lineage subdirectory [`archive_subdir`] of that root (module `follow`): the durable
//!   part of the segment being written as a growing `.partial`, never more than
//!   [`WalOptions::archive_lag_ms`] behind (0: each commit waits for it), completed under
//!   the segment's name when it closes; [`Wal::archive_status`] shows position, lag and
//!   failures. [`archive_segment`] copies one closed segment (a same-named file must be the
//!   same bytes of the same lineage), [`resolve_archive_dirs`] says which directories of a
//!   shared root a reader reads, [`check_archive`] verifies that an archive holds one
//!   history.
//! - Segment headers are format version 2 (timeline, intended length); version 1 is read.
//! - [`Storage`] is the file-system trait every byte goes through: [`StdStorage`] for real,
//!   [`sim::SimStorage`] for crash, torn-write, fsync-failure and out-of-space or
//!   out-of-descriptor tests. The few calls that need `unsafe` (libc, memmap2) are gathered
//!   in module `sys`, each with its reason; free space comes from `rustix`'s `statvfs`.
//!
//! The byte layouts are specified in `docs/FORMAT.md` and implemented in
//! [`format`](mod@format); every integer is read through [`le`].
#![deny(missing_docs)]
#![deny(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

mod archive;
mod archive_check;
mod background;
pub mod clock;
mod error;
mod follow;
pub mod format;
pub mod le;
mod options;
mod reader;
mod recovery;
mod rotation;
mod segment;
pub mod sim;
mod std_storage;
mod storage;
mod sys;
mod wal;
mod writer;

pub use archive::{
    archive_segment, archive_subdir, parse_archive_subdir, prune_archive, prune_archive_lineage,
    resolve_archive_dirs, segment_lineage,
};
pub use archive_check::{check_archive, ArchiveHistory, ArchiveReport};
pub use clock::{now_ms, Clock, ManualClock, SystemClock};
pub use error::{CorruptKind, Error, ResourceKind, Result};
pub use follow::ArchiveStatus;
pub use options::{RecoveryMode, SyncPolicy, WalOptions};
pub use reader::{
    list_segments, list_segments_of, ReadOptions, Record, SharedRecord, TornTail, WalReader,
};
pub use recovery::{RecoveryReport, SegmentInfo, Truncation};
pub use rotation::SpaceStatus;
pub use std_storage::StdStorage;
pub use storage::{sync_file_and_dir, CopyPace, LockGuard, Mapped, OpenMode, Storage, StorageFile};
pub use sys::background_priority;
pub use wal::{Entry, Wal};
