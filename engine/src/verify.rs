//! Read-only verification of a data directory or a backup directory, as a typed report.
//!
//! Every check reads; none writes. A [`VerifyReport`] lists what was checked and found good
//! (in the order it was checked), notes the operator should know, and at most one
//! [`Problem`]: the first failure, after which that directory is not checked further (what
//! follows would be read through the damage).
//!
//! - [`verify_backup_dir`]: the `BACKUP` manifest's own CRC, every file's presence, length
//!   and CRC32C, that the engine `MANIFEST` inside agrees with it; for a full backup the
//!   store header and every block of the tree from the checkpoint's root (each block's CRC,
//!   key order, the entry count the checkpoint records); for an incremental backup given
//!   the backup before it, the chain link (node, generation, base length and CRC) and that
//!   base + increment assemble to the CRC the increment records.
//! - [`verify_data_dir`]: its `MANIFEST`, store header, checkpoint and tree as for a full
//!   backup, and its `wal/`: every segment header, record CRC and LSN, one node throughout,
//!   reaching back to the checkpoint. A torn tail of the last segment (what a crash leaves,
//!   cut by the next open) ends the log rather than failing it. A running database's
//!   directory can be verified (the store below its committed length never changes), but
//!   the WAL tail moves meanwhile.
//! - [`scan_wal_dir`]: the WAL part alone, for any directory of segments.
//!
//! The limits records are read with are the largest any configuration allows
//! ([`crate::MAX_RECORD_SIZE`]), so every valid log is accepted.

use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use duplex_wal::format::{SegmentHeader, SEGMENT_HEADER_LEN};
use duplex_wal::{OpenMode, ReadOptions, Record, Storage, TornTail, WalReader};

use crate::backup::{verify_backup, BackupManifest, BACKUP_MANIFEST};
use crate::config::MAX_RECORD_SIZE;
use crate::db::WAL_DIR;
use crate::error::{CorruptKind, Error};
use crate::format::{store_file_name, Manifest, StoreHeader, FILE_HEADER_LEN};
use crate::store::{open_store_readonly, read_manifest, MANIFEST_NAME};
use crate::tree::TreeView;

/// What verification found about one directory.
#[derive(Debug)]
pub struct VerifyReport {
    /// The directory verified.
    pub dir: PathBuf,
    /// What was checked and found good, in the order it was checked.
    pub checked: Vec<Checked>,
    /// What the operator should know that is not a failure.
    pub notes: Vec<Note>,
    /// The first failure, if any; nothing after it was checked.
    pub problem: Option<Problem>,
}

impl VerifyReport {
    fn new(dir: &Path) -> Self {
        VerifyReport {
            dir: dir.to_path_buf(),
            checked: Vec::new(),
            notes: Vec::new(),
            problem: None,
        }
    }

    /// True when no problem was found.
    pub fn is_ok(&self) -> bool {
        self.problem.is_none()
    }

    /// The `BACKUP` manifest, once it and the files it lists were checked.
    pub fn backup_manifest(&self) -> Option<&BackupManifest> {
        self.checked.iter().find_map(|c| match c {
            Checked::BackupFiles(m) => Some(m),
            _ => None,
        })
    }

    /// The LSN the checked checkpoint covers (a data directory's `MANIFEST`, or a backup's).
    pub fn checkpoint_lsn(&self) -> Option<u64> {
        self.checked.iter().find_map(|c| match c {
            Checked::BackupFiles(m) => Some(m.checkpoint_lsn),
            Checked::Manifest(m) => Some(m.checkpoint_lsn),
            _ => None,
        })
    }

    /// First and last LSN of the WAL records read, when some were.
    pub fn wal_range(&self) -> Option<(u64, u64)> {
        self.checked.iter().find_map(|c| match c {
            Checked::Wal(s) => s.first_lsn.zip(s.last_lsn),
            _ => None,
        })
    }

    /// Runs one check: its findings go to `checked`, its failure to `problem`.
    fn run(&mut self, check: impl FnOnce(&mut Self) -> Result<(), Problem>) {
        if let Err(p) = check(self) {
            self.problem = Some(p);
        }
    }
}

/// One thing verification checked and found good. Exhaustive on purpose: a tool that words
/// these must word every new kind of check.
#[derive(Debug, Clone)]
pub enum Checked {
    /// A `BACKUP` manifest (its CRC) and every file it lists (presence, length, CRC32C).
    BackupFiles(BackupManifest),
    /// A data directory's `MANIFEST` decodes.
    Manifest(Manifest),
    /// A store: its header, its checkpoint and every block of its tree.
    Store(StoreCheck),
    /// An incremental backup's increment, on a base of `base_len` bytes (its tree can only
    /// be read once assembled with the base).
    Increment {
        /// Bytes in the increment.
        len: u64,
        /// Committed length of the base it continues.
        base_len: u64,
    },
    /// The link of an incremental backup to the backup before it: node, generation, base
    /// length and CRC match, and base + increment assemble to the recorded CRC.
    ChainLink {
        /// The backup before it.
        base_dir: PathBuf,
    },
    /// A directory of WAL segments: every header, record CRC and LSN, no gap, one node.
    Wal(WalSummary),
}

/// What a store check read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreCheck {
    /// The store file.
    pub file: PathBuf,
    /// Entries in its tree (tombstones included), as walked and as the checkpoint records.
    pub entries: u64,
    /// Its committed length.
    pub committed_len: u64,
}

/// What a WAL scan found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WalSummary {
    /// Segments in the scope.
    pub segments: usize,
    /// Node id of the segments.
    pub node_id: Option<u64>,
    /// First LSN read.
    pub first_lsn: Option<u64>,
    /// Last LSN read.
    pub last_lsn: Option<u64>,
    /// Records read.
    pub records: u64,
    /// Payload bytes read.
    pub payload_bytes: u64,
    /// Bytes of records on disk (headers, payloads, padding).
    pub record_bytes: u64,
    /// Where a torn tail ended the log (only for a lenient tail).
    pub torn_tail: Option<TornTail>,
}

impl WalSummary {
    /// Counts one record read.
    pub fn add(&mut self, rec: &Record) {
        self.first_lsn.get_or_insert(rec.lsn);
        self.last_lsn = Some(rec.lsn);
        self.records += 1;
        self.payload_bytes += rec.payload.len() as u64;
    }
}

/// Something the operator should know that is not a failure (exhaustive, as [`Checked`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// An incremental backup was verified without the backup before it, so its chain link
    /// was not checked.
    ChainNotChecked,
    /// A data directory was verified read-only; if a database runs on it, its WAL tail was
    /// changing meanwhile.
    MaybeRunning,
}

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
    #[error("the tree in {} has keys out of order after entry {after_entry} (restore this node from a backup plus archive, or rebuild it from a peer)", .file.display())]
    KeysOutOfOrder {
        /// The store file.
        file: PathBuf,
        /// Offset of the leaf holding the entry out of order.
        offset: u64,
        /// Entries in order before it.
        after_entry: u64,
    },
    /// The tree holds another number of entries than its checkpoint records.
    #[error("the checkpoint in {} records {recorded} tree entries but the tree holds {found} (restore from a backup plus archive, or rebuild from a peer)", .file.display())]
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
    #[error("{} holds no WAL segment although the store has a checkpoint at LSN {checkpoint_lsn}: the log was lost (restore from a backup plus archive)", .wal_dir.display())]
    WalMissing {
        /// The WAL directory.
        wal_dir: PathBuf,
        /// The checkpoint's LSN.
        checkpoint_lsn: u64,
    },
    /// The WAL starts after the first LSN the checkpoint does not cover.
    #[error("the WAL in {} starts at LSN {first_lsn}, after the checkpoint's LSN {checkpoint_lsn}: records {} to {} are lost (restore from a backup plus archive)", .wal_dir.display(), .checkpoint_lsn + 1, .first_lsn - 1)]
    WalStartsAfterCheckpoint {
        /// The WAL directory.
        wal_dir: PathBuf,
        /// First LSN of its first segment.
        first_lsn: u64,
        /// The checkpoint's LSN.
        checkpoint_lsn: u64,
    },
    /// The WAL ends before the checkpoint's LSN.
    #[error("the WAL in {} ends at LSN {last_lsn} before the checkpoint's LSN {checkpoint_lsn} (segments were lost)", .wal_dir.display())]
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

/// The node id in a WAL segment's header, if the header reads and decodes.
pub fn segment_node_id(storage: &dyn Storage, path: &Path) -> Option<u64> {
    let f = storage.open(path, OpenMode::Read).ok()?;
    let mut b = [0u8; SEGMENT_HEADER_LEN as usize];
    f.read_exact_at(&mut b, 0).ok()?;
    SegmentHeader::decode(&b).ok().map(|h| h.node_id)
}

/// Reads every record of the segments in `dir`, checking everything [`WalReader`] checks
/// with every segment required to carry the first one's node id. With `strict_tail`, a
/// torn tail at the end of the last segment is an error (an archive); without, it ends the
/// log and is reported in the summary (the WAL of a data directory).
pub fn scan_wal_dir(
    storage: &Arc<dyn Storage>,
    dir: &Path,
    strict_tail: bool,
) -> Result<WalSummary, duplex_wal::Error> {
    let segments = duplex_wal::list_segments(&**storage, &[dir.to_path_buf()])?;
    let node_id = segments
        .first()
        .and_then(|(_, p)| segment_node_id(&**storage, p));
    let mut s = WalSummary {
        segments: segments.len(),
        node_id,
        ..WalSummary::default()
    };
    if segments.is_empty() {
        return Ok(s);
    }
    let mut reader = WalReader::open(
        storage.clone(),
        &[dir.to_path_buf()],
        0,
        ReadOptions {
            max_record_size: MAX_RECORD_SIZE,
            until_lsn: None,
            strict_tail,
            node_id,
            // The directory may be a running database's WAL: read, do not map.
            map_segments: false,
        },
    )?;
    while let Some(rec) = reader.next_record()? {
        s.add(&rec);
    }
    s.record_bytes = reader.bytes_read();
    s.torn_tail = reader.torn_tail().cloned();
    Ok(s)
}

/// Verifies one backup directory. `prev` is the backup given just before it (already
/// verified), against which an incremental backup's chain link is checked.
pub fn verify_backup_dir(
    storage: &Arc<dyn Storage>,
    dir: &Path,
    prev: Option<(&Path, &BackupManifest)>,
) -> VerifyReport {
    let mut report = VerifyReport::new(dir);
    report.run(|r| check_backup(storage, dir, prev, r));
    report
}

fn check_backup(
    storage: &Arc<dyn Storage>,
    dir: &Path,
    prev: Option<(&Path, &BackupManifest)>,
    report: &mut VerifyReport,
) -> Result<(), Problem> {
    let m = verify_backup(&**storage, dir).map_err(Problem::Engine)?;
    report.checked.push(Checked::BackupFiles(m.clone()));
    let em = read_manifest(&**storage, dir).map_err(Problem::Engine)?;
    if em != Some(m.engine_manifest()) {
        return Err(Problem::ManifestsDisagree {
            dir: dir.to_path_buf(),
        });
    }
    let part_name = m.store_part_name();
    let part = m
        .files
        .iter()
        .find(|f| f.name == part_name)
        .ok_or_else(|| Problem::NoStorePart {
            dir: dir.to_path_buf(),
        })?;
    if !m.is_incremental() {
        if part.len != m.committed_len || part.crc != m.store_crc {
            return Err(Problem::StorePartMismatch {
                dir: dir.to_path_buf(),
                name: part.name.clone(),
            });
        }
        let store = check_store(storage, dir, &m.engine_manifest())?;
        report.checked.push(Checked::Store(store));
        return Ok(());
    }
    report.checked.push(Checked::Increment {
        len: part.len,
        base_len: m.base_len,
    });
    let Some((pdir, pm)) = prev else {
        report.notes.push(Note::ChainNotChecked);
        return Ok(());
    };
    let assembled = crc32c::crc32c_combine(pm.store_crc, part.crc, part.len as usize);
    if pm.node_id != m.node_id
        || pm.generation != m.generation
        || m.base_len != pm.committed_len
        || m.base_crc != pm.store_crc
        || m.committed_len != m.base_len + part.len
        || assembled != m.store_crc
    {
        return Err(Problem::ChainBroken {
            dir: dir.to_path_buf(),
            base_dir: pdir.to_path_buf(),
            base: ChainEnd {
                node_id: m.node_id,
                generation: m.generation,
                committed_len: m.base_len,
                store_crc: m.base_crc,
            },
            prev: ChainEnd {
                node_id: pm.node_id,
                generation: pm.generation,
                committed_len: pm.committed_len,
                store_crc: pm.store_crc,
            },
        });
    }
    report.checked.push(Checked::ChainLink {
        base_dir: pdir.to_path_buf(),
    });
    Ok(())
}

/// Verifies a data directory: its `MANIFEST`, store and tree, and its WAL.
pub fn verify_data_dir(storage: &Arc<dyn Storage>, dir: &Path) -> VerifyReport {
    let mut report = VerifyReport::new(dir);
    report.run(|r| check_data_dir(storage, dir, r));
    report
}

fn check_data_dir(
    storage: &Arc<dyn Storage>,
    dir: &Path,
    report: &mut VerifyReport,
) -> Result<(), Problem> {
    let m = read_manifest(&**storage, dir)
        .map_err(Problem::Engine)?
        .ok_or_else(|| Problem::NoManifest {
            dir: dir.to_path_buf(),
        })?;
    report.checked.push(Checked::Manifest(m));
    report
        .checked
        .push(Checked::Store(check_store(storage, dir, &m)?));
    let wal_dir = dir.join(WAL_DIR);
    let s = scan_wal_dir(storage, &wal_dir, false).map_err(Problem::Wal)?;
    let (wal_node, last_lsn) = (s.node_id, s.last_lsn);
    report.checked.push(Checked::Wal(s));
    if wal_node.is_some_and(|n| n != m.node_id) {
        return Err(Problem::WalNodeMismatch {
            wal_dir,
            wal_node,
            node: m.node_id,
        });
    }
    check_wal_reaches_checkpoint(storage, &wal_dir, m.checkpoint_lsn, last_lsn)?;
    report.notes.push(Note::MaybeRunning);
    Ok(())
}

/// Checks that the WAL in `wal_dir` (whose records end at `last_lsn`) holds every record
/// after the checkpoint at `checkpoint_lsn`: what an open of the database requires.
fn check_wal_reaches_checkpoint(
    storage: &Arc<dyn Storage>,
    wal_dir: &Path,
    checkpoint_lsn: u64,
    last_lsn: Option<u64>,
) -> Result<(), Problem> {
    let first_seg = duplex_wal::list_segments(&**storage, &[wal_dir.to_path_buf()])
        .map_err(Problem::Wal)?
        .first()
        .map(|s| s.0);
    let wal_dir = wal_dir.to_path_buf();
    match first_seg {
        None if checkpoint_lsn > 0 => {
            return Err(Problem::WalMissing {
                wal_dir,
                checkpoint_lsn,
            })
        }
        Some(first_lsn) if first_lsn > checkpoint_lsn + 1 => {
            return Err(Problem::WalStartsAfterCheckpoint {
                wal_dir,
                first_lsn,
                checkpoint_lsn,
            })
        }
        _ => {}
    }
    if last_lsn.unwrap_or(0) < checkpoint_lsn && first_seg.is_some() {
        return Err(Problem::WalEndsBeforeCheckpoint {
            wal_dir,
            last_lsn: last_lsn.unwrap_or(0),
            checkpoint_lsn,
        });
    }
    Ok(())
}

/// Checks the store header of a directory's store file against its manifest, then the
/// checkpoint and the whole tree.
fn check_store(
    storage: &Arc<dyn Storage>,
    dir: &Path,
    m: &Manifest,
) -> Result<StoreCheck, Problem> {
    let file = dir.join(store_file_name(m.generation));
    let f = storage
        .open(&file, OpenMode::Read)
        .map_err(|source| Problem::StoreOpen {
            file: file.clone(),
            source,
        })?;
    let mut hb = [0u8; FILE_HEADER_LEN];
    f.read_exact_at(&mut hb, 0)
        .map_err(|source| Problem::StoreHeaderUnreadable {
            file: file.clone(),
            source,
        })?;
    let h = StoreHeader::decode(&hb).map_err(|kind| Problem::StoreHeaderDamaged {
        file: file.clone(),
        kind,
    })?;
    if h.node_id != m.node_id || h.generation != m.generation {
        return Err(Problem::StoreHeaderMismatch {
            file,
            header_node: h.node_id,
            header_generation: h.generation,
            manifest_node: m.node_id,
            manifest_generation: m.generation,
        });
    }
    let view = open_store_readonly(storage, dir, m).map_err(Problem::Engine)?;
    if view.ckpt.lsn != m.checkpoint_lsn {
        return Err(Problem::CheckpointLsnMismatch {
            file,
            offset: view.ckpt_offset,
            checkpoint_lsn: view.ckpt.lsn,
            manifest_lsn: m.checkpoint_lsn,
        });
    }
    let entries = walk_tree(view, &file)?;
    Ok(StoreCheck {
        file,
        entries,
        committed_len: m.committed_len,
    })
}

/// Walks every entry of the tree a view shows (checking each block's CRC on the way) and
/// compares the count with what the checkpoint records. Returns the count.
fn walk_tree(view: TreeView, file: &Path) -> Result<u64, Problem> {
    let (recorded, ckpt_offset) = (view.ckpt.entries, view.ckpt_offset);
    let view = Arc::new(view);
    let mut cursor = view.cursor(Bound::Unbounded).map_err(Problem::Engine)?;
    let mut count = 0u64;
    let mut prev: Option<Vec<u8>> = None;
    while let Some((key, _)) = cursor.next_entry().map_err(Problem::Engine)? {
        if prev.as_ref().is_some_and(|p| *p >= key) {
            return Err(Problem::KeysOutOfOrder {
                file: file.to_path_buf(),
                offset: cursor.leaf_offset().unwrap_or(0),
                after_entry: count,
            });
        }
        prev = Some(key);
        count += 1;
    }
    if count != recorded {
        return Err(Problem::EntryCountMismatch {
            file: file.to_path_buf(),
            offset: ckpt_offset,
            recorded,
            found: count,
        });
    }
    Ok(count)
}
