//! [`Problem`]: the first failure verification finds in a directory, typed, with the file
//! (and, for damaged bytes, the offset) it is in. Its `Display` is the line an operator
//! reads: what is wrong and what to do.

use std::path::{Path, PathBuf};

use crate::backup::BACKUP_MANIFEST;
use crate::error::{CorruptKind, Error};
use crate::store::MANIFEST_NAME;

/// The first failure verification found in a directory.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Problem {
    /// The engine could not read something, or found it damaged.
    #[error("{0}")]
    Engine(Error),
    /// The WAL could not be read, or is damaged, has a gap or another node's segment.
    #[error("{0}")]
    Wal(duplex_wal::Error),
    /// The store file the manifest names cannot be opened.
    #[error("cannot open the store file {}: {source}", .file.display())]
    StoreOpen {
        /// The store file.
        file: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The store file's header cannot be read (the file is too short).
    #[error("cannot read the header of {}: {source}", .file.display())]
    StoreHeaderUnreadable {
        /// The store file.
        file: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The store file's header fails its checks.
    #[error("the store header of {} is damaged: {kind}", .file.display())]
    StoreHeaderDamaged {
        /// The store file.
        file: PathBuf,
        /// What is wrong (the header is at offset 0).
        kind: CorruptKind,
    },
    /// The store header names another node or generation than the manifest.
    #[error("the store header of {} says node {header_node} generation {header_generation}, the manifest node {manifest_node} generation {manifest_generation}", .file.display())]
    StoreHeaderMismatch {
        /// The store file.
        file: PathBuf,
        /// Node in the header.
        header_node: u64,
        /// Generation in the header.
        header_generation: u64,
        /// Node in the manifest.
        manifest_node: u64,
        /// Generation in the manifest.
        manifest_generation: u64,
    },
    /// The checkpoint covers another LSN than the manifest says.
    #[error("the checkpoint in {} covers LSN {checkpoint_lsn}, the manifest says {manifest_lsn}", .file.display())]
    CheckpointLsnMismatch {
        /// The store file.
        file: PathBuf,
        /// Offset of the checkpoint block.
        offset: u64,
        /// LSN in the checkpoint.
        checkpoint_lsn: u64,
        /// LSN in the manifest.
        manifest_lsn: u64,
    },
    /// The tree's keys are not in strictly ascending order.
    #[error("the tree in {} has keys out of order after entry {after_entry} (restore it with `duplex-recover restore --backup DIR --archive DIR --into NEW_DIR` from a backup plus the archive, then start the server on the new directory)", .file.display())]
    KeysOutOfOrder {
        /// The store file.
        file: PathBuf,
        /// Offset of the leaf holding the entry out of order.
        offset: u64,
        /// Entries in order before it.
        after_entry: u64,
    },
    /// The tree holds another number of entries than its checkpoint records.
    #[error("the checkpoint in {} records {recorded} tree entries but the tree holds {found} (restore it with `duplex-recover restore --backup DIR --archive DIR --into NEW_DIR` from a backup plus the archive, then start the server on the new directory)", .file.display())]
    EntryCountMismatch {
        /// The store file.
        file: PathBuf,
        /// Offset of the checkpoint block.
        offset: u64,
        /// Entries the checkpoint records.
        recorded: u64,
        /// Entries walked.
        found: u64,
    },
    /// A backup's engine `MANIFEST` does not agree with its `BACKUP` manifest.
    #[error("{} does not agree with {} in {}: the backup is inconsistent", MANIFEST_NAME, BACKUP_MANIFEST, .dir.display())]
    ManifestsDisagree {
        /// The backup directory.
        dir: PathBuf,
    },
    /// A backup's manifest lists no store file.
    #[error("{} lists no store file", .dir.display())]
    NoStorePart {
        /// The backup directory.
        dir: PathBuf,
    },
    /// A full backup's store file does not match the length and CRC its manifest records.
    #[error("{name} in {} does not match the store length and CRC the manifest records", .dir.display())]
    StorePartMismatch {
        /// The backup directory.
        dir: PathBuf,
        /// The store file's name in it.
        name: String,
    },
    /// An incremental backup does not continue the backup given before it.
    #[error("{} does not continue the chain after {}: its base is node {} generation {}, {} bytes with CRC {:#010x}; the previous backup is node {} generation {}, {} bytes with CRC {:#010x} (give the chain oldest first, or find the right base backup)",
        .dir.display(), .base_dir.display(), .base.node_id, .base.generation, .base.committed_len,
        .base.store_crc, .prev.node_id, .prev.generation, .prev.committed_len, .prev.store_crc)]
    ChainBroken {
        /// The incremental backup.
        dir: PathBuf,
        /// The backup given before it.
        base_dir: PathBuf,
        /// The base the increment was taken on, as it records it.
        base: ChainEnd,
        /// The backup given before it, as its manifest records it.
        prev: ChainEnd,
    },
    /// A data directory has no `MANIFEST`.
    #[error("{} has no MANIFEST", .dir.display())]
    NoManifest {
        /// The data directory.
        dir: PathBuf,
    },
    /// The WAL belongs to another node than the database.
    #[error("the WAL in {} belongs to node {wal_node:?}, the database to node {node}", .wal_dir.display())]
    WalNodeMismatch {
        /// The WAL directory.
        wal_dir: PathBuf,
        /// Node in its first segment.
        wal_node: Option<u64>,
        /// Node of the database.
        node: u64,
    },
    /// The WAL holds no segment although the store has a checkpoint.
    #[error("{} holds no WAL segment although the store has a checkpoint at LSN {checkpoint_lsn}: the log was lost (restore it with `duplex-recover restore --backup DIR --archive DIR --into NEW_DIR` from a backup plus the archive, then start the server on the new directory)", .wal_dir.display())]
    WalMissing {
        /// The WAL directory.
        wal_dir: PathBuf,
        /// The checkpoint's LSN.
        checkpoint_lsn: u64,
    },
    /// The WAL starts after the first LSN the checkpoint does not cover.
    #[error("the WAL in {} starts at LSN {first_lsn}, after the checkpoint's LSN {checkpoint_lsn}: records {} to {} are lost (restore it with `duplex-recover restore --backup DIR --archive DIR --into NEW_DIR` from a backup plus the archive, then start the server on the new directory)", .wal_dir.display(), .checkpoint_lsn + 1, .first_lsn - 1)]
    WalStartsAfterCheckpoint {
        /// The WAL directory.
        wal_dir: PathBuf,
        /// First LSN of its first segment.
        first_lsn: u64,
        /// The checkpoint's LSN.
        checkpoint_lsn: u64,
    },
    /// The WAL ends before the checkpoint's LSN.
    #[error("the WAL in {} ends at LSN {last_lsn} before the checkpoint's LSN {checkpoint_lsn}: segments were lost (restore it with `duplex-recover restore --backup DIR --archive DIR --into NEW_DIR` from a backup plus the archive, then start the server on the new directory)", .wal_dir.display())]
    WalEndsBeforeCheckpoint {
        /// The WAL directory.
        wal_dir: PathBuf,
        /// Last LSN read.
        last_lsn: u64,
        /// The checkpoint's LSN.
        checkpoint_lsn: u64,
    },
}

/// One end of a backup chain link: the store image a backup holds or builds on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainEnd {
    /// Node.
    pub node_id: u64,
    /// Store generation.
    pub generation: u64,
    /// Committed length of the store image.
    pub committed_len: u64,
    /// CRC32C of the store image.
    pub store_crc: u32,
}

impl Problem {
    /// The file (or directory) the problem is in.
    pub fn file(&self) -> Option<&Path> {
        match self {
            Problem::Engine(Error::Corrupt { file, .. }) => Some(file),
            Problem::Engine(Error::Io { path, .. }) => Some(path),
            Problem::Engine(Error::Wal(e)) | Problem::Wal(e) => wal_error_file(e),
            Problem::Engine(_) => None,
            Problem::StoreOpen { file, .. }
            | Problem::StoreHeaderUnreadable { file, .. }
            | Problem::StoreHeaderDamaged { file, .. }
            | Problem::StoreHeaderMismatch { file, .. }
            | Problem::CheckpointLsnMismatch { file, .. }
            | Problem::KeysOutOfOrder { file, .. }
            | Problem::EntryCountMismatch { file, .. } => Some(file),
            Problem::ManifestsDisagree { dir }
            | Problem::NoStorePart { dir }
            | Problem::StorePartMismatch { dir, .. }
            | Problem::ChainBroken { dir, .. }
            | Problem::NoManifest { dir } => Some(dir),
            Problem::WalNodeMismatch { wal_dir, .. }
            | Problem::WalMissing { wal_dir, .. }
            | Problem::WalStartsAfterCheckpoint { wal_dir, .. }
            | Problem::WalEndsBeforeCheckpoint { wal_dir, .. } => Some(wal_dir),
        }
    }

    /// The offset in [`Problem::file`] of the damaged structure, when there is one.
    pub fn offset(&self) -> Option<u64> {
        match self {
            Problem::Engine(Error::Corrupt { offset, .. })
            | Problem::Engine(Error::Wal(duplex_wal::Error::Corrupt { offset, .. }))
            | Problem::Wal(duplex_wal::Error::Corrupt { offset, .. })
            | Problem::CheckpointLsnMismatch { offset, .. }
            | Problem::KeysOutOfOrder { offset, .. }
            | Problem::EntryCountMismatch { offset, .. } => Some(*offset),
            Problem::StoreHeaderDamaged { .. } | Problem::StoreHeaderMismatch { .. } => Some(0),
            _ => None,
        }
    }
}

/// The file an error of the WAL is about, if it names one.
pub fn wal_error_file(e: &duplex_wal::Error) -> Option<&Path> {
    match e {
        duplex_wal::Error::Corrupt { file, .. } => Some(file),
        duplex_wal::Error::Gap { next_file, .. } => Some(next_file),
        duplex_wal::Error::NodeMismatch { file, .. } => Some(file),
        duplex_wal::Error::Io { path, .. } => Some(path),
        _ => None,
    }
}
