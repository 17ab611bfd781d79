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

use crate::backup::{verify_backup, BackupManifest};
use crate::config::MAX_RECORD_SIZE;
use crate::db::WAL_DIR;
use crate::format::{store_file_name, Manifest, StoreHeader, FILE_HEADER_LEN};
use crate::store::{open_store_readonly, read_manifest};
use crate::tree::TreeView;

mod problem;

pub use problem::{wal_error_file, ChainEnd, Problem};

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
    /// The Duplex formats of its segments ([`crate::format_of_segment`]; a log of an older
    /// build that went on writing holds two).
    pub formats: std::collections::BTreeSet<u32>,
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
        formats: segments
            .iter()
            .filter_map(|(_, p)| crate::version_field(&**storage, p))
            .map(crate::format_of_segment)
            .collect(),
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
            timeline: None,
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
    crate::backup::verify_backup_wal(storage, dir, &m).map_err(Problem::Engine)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Config, Database};
    use duplex_wal::sim::SimStorage;

    /// A database in the simulation with a checkpoint, a full backup and records after
    /// both; closed without a final checkpoint so its WAL holds records to replay.
    fn fixture() -> (SimStorage, Arc<dyn Storage>, u64) {
        let sim = SimStorage::new();
        let storage: Arc<dyn Storage> = Arc::new(sim.clone());
        let cfg = Config {
            background: false,
            ..Config::default()
        };
        let db = Database::open_with(storage.clone(), "/db", cfg).expect("open");
        for i in 0..300u32 {
            db.put(format!("key{i:05}").as_bytes(), &[1u8; 40])
                .expect("put");
        }
        db.backup(Path::new("/full"), None).expect("backup");
        for i in 0..50u32 {
            db.put(format!("late{i:05}").as_bytes(), b"v").expect("put");
        }
        let last = db.stats().last_lsn;
        drop(db);
        (sim, storage, last)
    }

    #[test]
    fn a_healthy_directory_and_backup_report_what_was_checked() {
        let (_sim, storage, last) = fixture();
        let r = verify_data_dir(&storage, Path::new("/db"));
        assert!(r.is_ok(), "{:?}", r.problem);
        assert_eq!(r.checkpoint_lsn(), Some(300));
        assert_eq!(r.wal_range().map(|(_, l)| l), Some(last));
        let entries = r.checked.iter().find_map(|c| match c {
            Checked::Store(s) => Some(s.entries),
            _ => None,
        });
        assert_eq!(entries, Some(300));
        assert_eq!(r.notes, vec![Note::MaybeRunning]);

        let b = verify_backup_dir(&storage, Path::new("/full"), None);
        assert!(b.is_ok(), "{:?}", b.problem);
        assert_eq!(b.checkpoint_lsn(), Some(300));
        assert!(b.backup_manifest().is_some_and(|m| !m.is_incremental()));
        assert!(matches!(b.checked.last(), Some(Checked::Store(s)) if s.entries == 300));
    }

    /// A flipped byte in a tree block is reported with the store file and the block's
    /// offset; the facts checked before it stay in the report.
    #[test]
    fn damage_in_the_tree_names_the_file_and_offset() {
        let (sim, storage, _) = fixture();
        let store = Path::new("/db").join(store_file_name(1));
        sim.corrupt(&store, FILE_HEADER_LEN as u64 + 100, 0x40)
            .expect("corrupt");
        let r = verify_data_dir(&storage, Path::new("/db"));
        let p = r.problem.as_ref().expect("damage found");
        assert!(matches!(p, Problem::Engine(e) if e.is_corruption()), "{p}");
        assert_eq!(p.file(), Some(store.as_path()));
        assert!(
            p.offset().is_some_and(|o| o >= FILE_HEADER_LEN as u64),
            "{p}"
        );
        assert!(matches!(r.checked.as_slice(), [Checked::Manifest(_)]));
    }

    #[test]
    fn a_lost_wal_is_a_typed_problem() {
        let (_sim, storage, _) = fixture();
        let wal_dir = Path::new("/db").join(WAL_DIR);
        for (_, seg) in
            duplex_wal::list_segments(&*storage, std::slice::from_ref(&wal_dir)).expect("list")
        {
            storage.remove_file(&seg).expect("remove");
        }
        let r = verify_data_dir(&storage, Path::new("/db"));
        match r.problem {
            Some(Problem::WalMissing {
                wal_dir: ref d,
                checkpoint_lsn: 300,
            }) => assert_eq!(d, &wal_dir),
            other => panic!("expected a lost WAL, got {other:?}"),
        }
    }
}
