//! `duplex-engine`: the database each Duplex server embeds.
//!
//! A tour of the main types:
//! - [`Database`] opens a data directory (WAL + append-only page store), takes puts,
//!   deletes and atomic [`WriteBatch`]es (each one WAL record, acknowledged once durable),
//!   and serves gets and ordered scans through consistent [`Snapshot`]s. Every setting is
//!   in [`Config`], including the [`Clock`](duplex_wal::Clock) the engine takes its wall
//!   time from and whether it runs a background thread.
//! - Every version carries a [`Stamp`]: a hybrid-logical-clock [`Timestamp`] and its origin
//!   node. [`Stamp::wins_over`] is the last-writer-wins rule replicas converge with; deletes
//!   are tombstones with their own stamp.
//! - Checkpoints merge recent writes into a copy-on-write B+tree appended to the store file;
//!   bytes below the committed length never change, so a backup is a plain copy.
//!   Compaction rewrites the live tree into a new generation file. Checkpoints run on a
//!   background thread, or, with `Config::background` off, only when the caller steps
//!   [`Database::run_maintenance`] (a test on simulated time, with no hidden thread).
//! - [`Digest`] summarizes contents independently of history, to compare replicas.
//! - [`backup`] takes and restores backups, each carrying the WAL from its checkpoint to
//!   the end of its copy so it restores on its own (`backup_wal`), the copy paced so
//!   writers keep the disk (`ratelimit`); [`roll_forward`] applies the backup's WAL and
//!   then an archived WAL onto a restored backup; [`verify`] checks a data directory or a backup and reports what it
//!   found as a typed [`VerifyReport`].
//!
//! Where things live:
//! - `db`: the [`Database`], its open (WAL replay) and write path; `lock`: the data
//!   directory's [`DirLock`], taken before anything in the directory is written; `config`: [`Config`] and
//!   the limits no configuration exceeds ([`MAX_KEY_SIZE`], [`MAX_VALUE_SIZE`],
//!   [`MAX_RECORD_SIZE`]); `checkpoint`: checkpoints and their schedule; `scrub`: the
//!   rate-bounded check of every store block after open ([`ScrubStatus`]);
//! - `memtable`, `snapshot`: the in-memory layers and reads across all layers; `replay`:
//!   sorting logged operations into tree updates (open and roll-forward);
//! - `store`: the manifest and the current store generation; `store_file`: one store file
//!   and its lifetime; `tree`: reading (`tree::read`) and writing (`tree::write`) the
//!   on-disk B+tree;
//! - [`format`](mod@format) and [`batch`]: the byte layouts specified in `docs/FORMAT.md`; `hlc`: the
//!   clock and the last-writer-wins rule; `error`: the one [`Error`] type.
//!
//! The engine needs no `unsafe` code except one CPU prefetch hint (in `tree::prefetch`).
#![deny(missing_docs)]
#![deny(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

mod adopt;
pub mod backup;
mod backup_wal;
pub mod batch;
mod checkpoint;
mod config;
mod db;
mod db_backup;
mod drill;
mod error;
pub mod format;
mod format_version;
mod hlc;
mod lock;
mod memtable;
mod ratelimit;
mod reclaim;
mod repl;
mod replay;
mod restore;
mod scrub;
mod snapshot;
mod store;
mod store_file;
#[doc(hidden)]
pub mod testing;
mod tree;
mod verified;
pub mod verify;

pub use adopt::{adopt_restored, AdoptReport};
pub use backup::{
    apply_retention, apply_retention_for_peers, backup_dir, backup_dir_with, restore_chain,
    verify_backup, verify_backup_wal, BackupManifest, BackupOptions, BackupRate, BackupReport,
    PeerFloor, RetentionReport,
};
pub use backup_wal::RESTORE_WAL_DIR;
pub use batch::{Op, WriteBatch};
pub use config::{Config, MAX_KEY_SIZE, MAX_RECORD_SIZE, MAX_VALUE_SIZE};
pub use db::{Database, Stats, WAL_DIR};
pub use drill::{drill_backup, first_difference, DrillReport, DrillSpec};
pub use duplex_wal::SyncPolicy;
pub use error::{CorruptKind, Error, Result};
pub use format_version::{
    describe_format, format_of_backup_manifest, format_of_segment, version_field, FORMAT_VERSION,
    OLDEST_FORMAT_READ,
};
pub use hlc::{Hlc, Stamp, Timestamp};
pub use lock::{DirLock, LOCK_NAME};
pub use memtable::{MemTable, MemVersion};
pub use repl::{
    position, split_position, ApplyReport, ArchiveTakeBack, Conflict, ConflictJournal, FeedBatch,
    FeedCursor, OriginState, RemoteBatch, ReplError, ReplMemory, Stranded, EMPTY_BASE, LSN_BITS,
    MAX_INCARNATION,
};
pub use restore::{
    roll_forward, Phase, PhaseTimes, Progress, RollForwardOptions, RollForwardReport, Target,
};
pub use scrub::{ScrubDamage, ScrubStatus};
pub use snapshot::{entry_hash, version_hash, Digest, ScanIter, Snapshot, Version};
pub use store::MANIFEST_NAME;
pub use verify::VerifyReport;
