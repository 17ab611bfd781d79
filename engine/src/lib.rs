//! `duplex-engine`: the database each Duplex server embeds.
//!
//! A tour of the main types:
//! - [`Database`] opens a data directory (WAL + append-only page store), takes puts,
//!   deletes and atomic [`WriteBatch`]es (each one WAL record, acknowledged once durable),
//!   and serves gets and ordered scans through consistent [`Snapshot`]s.
//! - Every version carries a [`Stamp`]: a hybrid-logical-clock [`Timestamp`] and its origin
//!   node. [`Stamp::wins_over`] is the last-writer-wins rule replicas converge with; deletes
//!   are tombstones with their own stamp.
//! - Checkpoints merge recent writes into a copy-on-write B+tree appended to the store file
//!   ([`tree`]); bytes below the committed length never change, so a backup is a plain copy.
//!   Compaction rewrites the live tree into a new generation file.
//! - [`Digest`] summarizes contents independently of history, to compare replicas.
//!
//! Byte layouts are specified in `docs/FORMAT.md` and implemented in [`format`] and
//! [`batch`].
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod backup;
pub mod batch;
mod checkpoint;
mod config;
mod db;
mod error;
pub mod format;
mod hlc;
mod memtable;
mod replay;
mod restore;
mod snapshot;
mod store;
mod store_file;
mod tree;
pub mod verify;

pub use backup::{
    apply_retention, backup_dir, restore_chain, verify_backup, BackupManifest, BackupReport,
    RetentionReport,
};
pub use batch::{Op, WriteBatch};
pub use config::{Config, MAX_KEY_SIZE, MAX_RECORD_SIZE, MAX_VALUE_SIZE};
pub use db::{Database, Stats, LOCK_NAME, WAL_DIR};
pub use duplex_wal::SyncPolicy;
pub use error::{CorruptKind, Error, Result};
pub use hlc::{Hlc, Stamp, Timestamp};
pub use memtable::{MemTable, MemVersion};
pub use restore::{
    roll_forward, Phase, PhaseTimes, Progress, RollForwardOptions, RollForwardReport, Target,
};
pub use snapshot::{entry_hash, Digest, ScanIter, Snapshot, Version};
pub use store::MANIFEST_NAME;
