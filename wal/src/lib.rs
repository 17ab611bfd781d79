//! `duplex-wal`: the segmented write-ahead log under every Duplex server.
//!
//! A tour of the main types:
//! - [`Wal`] is the log: [`Wal::append`] and [`Wal::append_batch`] from any number of
//!   threads, acknowledged under a [`SyncPolicy`] with group commit (one write and one fsync
//!   for everything queued meanwhile). A failed write or fsync poisons the log.
//! - [`Wal::open`] recovers: it checks every segment, cuts a torn tail (reported in a
//!   [`RecoveryReport`]) and refuses mid-log corruption with [`Error::Corrupt`], naming file
//!   and offset.
//! - [`WalReader`] iterates [`Record`]s from any LSN across the live directory and the
//!   archive as one stream, checking every checksum and LSN on the way.
//! - [`archive_segment`] copies a closed segment into an archive directory atomically; a
//!   [`Wal`] with [`WalOptions::archive_dir`] does it for every segment it closes.
//! - [`Storage`] is the file-system trait every byte goes through: [`StdStorage`] for real,
//!   [`sim::SimStorage`] for crash, torn-write and fsync-failure tests.
//!
//! The byte layouts are specified in `docs/FORMAT.md` and implemented in [`format`].
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

mod archive;
pub mod clock;
mod error;
pub mod format;
pub mod le;
mod options;
mod reader;
mod segment;
pub mod sim;
mod storage;
mod wal;

pub use archive::{archive_segment, prune_archive};
pub use clock::{now_ms, Clock, ManualClock, SystemClock};
pub use error::{CorruptKind, Error, Result};
pub use options::{RecoveryMode, SyncPolicy, WalOptions};
pub use reader::{list_segments, ReadOptions, Record, SharedRecord, TornTail, WalReader};
pub use storage::{
    sync_file_and_dir, LockGuard, Mapped, OpenMode, StdStorage, Storage, StorageFile,
};
pub use wal::{Entry, RecoveryReport, SegmentInfo, Truncation, Wal};
