//! The WAL a backup carries, so that it restores on its own: copying the log from the
//! backup's checkpoint to the end of what is durable into the backup directory (segment
//! files beside the store, under their own names), checking it, and reading it back at
//! restore time, followed by the archive, as one log.
//!
//! A backup's log is a byte prefix of each live segment it needs (from the one holding
//! `checkpoint_lsn + 1`), cut just past a whole atomic batch, so the copied segments are
//! ordinary segments whose last one simply ends there. The manifest's `end_lsn` is the last
//! record copied; nothing beyond it is in the backup.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use duplex_wal::{OpenMode, ReadOptions, SharedRecord, Storage, WalReader};

use crate::backup::{BackupFile, BackupManifest};
use crate::error::{CorruptKind, Error, Result};
use crate::ratelimit::RateLimit;

/// The directory inside a restored database where `restore_chain` puts the last backup's
/// WAL for `roll_forward`, which removes it when done.
pub const RESTORE_WAL_DIR: &str = "restore-wal";

/// Where a backup reads its WAL from.
#[derive(Debug, Clone)]
pub(crate) struct WalSource {
    /// The live WAL directory.
    pub dir: PathBuf,
    /// Copy records up to this LSN (the durable end, when the database is open in this
    /// process); `None`: every whole record the files hold.
    pub until: Option<u64>,
    /// Fsync each segment before reading it, so that what is copied is durable (a running
    /// server in another process may not have synced its last writes yet).
    pub sync_first: bool,
}

/// The timeline of the log in `wal_dir`: that of its newest segment with a readable header
/// (the log continues it at every open, see [`duplex_wal::WalOptions::timeline`]); 1 for a
/// directory without segments. What a backup records as its lineage with the node id.
pub(crate) fn log_timeline(storage: &Arc<dyn Storage>, wal_dir: &Path) -> Result<u64> {
    let segments =
        duplex_wal::list_segments(&**storage, std::slice::from_ref(&wal_dir.to_path_buf()))?;
    for (_, path) in segments.iter().rev() {
        // A segment removed meanwhile (a checkpoint of a running server) is skipped.
        if let Ok(Some((_, t))) = duplex_wal::segment_lineage(&**storage, path) {
            return Ok(t);
        }
    }
    Ok(1)
}

/// Copies the WAL of `src` from `from` on into `dest` (created), as byte prefixes of the
/// segments cut after the last whole batch; returns the manifest entries (named as the
/// segments) and the last LSN copied (`from - 1` if none).
pub(crate) fn copy_wal(
    storage: &Arc<dyn Storage>,
    src: &WalSource,
    from: u64,
    node_id: u64,
    dest: &Path,
    limit: &mut RateLimit,
) -> Result<(Vec<BackupFile>, u64)> {
    let segments = duplex_wal::list_segments(&**storage, std::slice::from_ref(&src.dir))?;
    if src.sync_first {
        for (_, path) in &segments {
            // A segment removed meanwhile shows up below as a gap or a missing LSN.
            if let Ok(f) = storage.open(path, OpenMode::Read) {
                f.sync_data().map_err(|e| Error::io("fsync", path, e))?;
            }
        }
    }
    let mut reader = WalReader::open(
        storage.clone(),
        std::slice::from_ref(&src.dir),
        from,
        ReadOptions {
            until_lsn: src.until,
            node_id: Some(node_id),
            ..ReadOptions::default()
        },
    )?;
    let mut ends: BTreeMap<PathBuf, u64> = BTreeMap::new();
    let mut last = from - 1;
    while let Some(rec) = reader.next_shared()? {
        last = rec.lsn;
        if let Some((path, off)) = reader.position() {
            ends.insert(path.to_path_buf(), off);
        }
    }
    let mut files = Vec::with_capacity(ends.len());
    for (path, len) in ends {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| Error::Config(format!("{} has no file name", path.display())))?;
        let to = dest.join(&name);
        let copied = storage
            .copy_prefix(&path, &to, len)
            .map_err(|e| Error::io("copy WAL segment", &to, e))?;
        if copied != len {
            return Err(Error::io(
                "copy WAL segment",
                &path,
                std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "short copy"),
            ));
        }
        limit.take(len);
        let f = storage
            .open(&to, OpenMode::ReadWrite)
            .map_err(|e| Error::io("open", &to, e))?;
        f.sync_data().map_err(|e| Error::io("fsync", &to, e))?;
        let crc = crate::backup::file_crc(&*f, &to, len)?;
        files.push(BackupFile { name, len, crc });
    }
    Ok((files, last))
}

/// Checks the WAL of a verified backup: every record from `checkpoint_lsn + 1` to exactly
/// `end_lsn` is there, whole, of the backup's node.
pub(crate) fn check_wal(storage: &Arc<dyn Storage>, dir: &Path, m: &BackupManifest) -> Result<()> {
    let wal = dir.to_path_buf();
    let has_wal = m.files.iter().any(|f| is_segment(&f.name));
    if !has_wal {
        if m.end_lsn > m.checkpoint_lsn {
            return Err(Error::corrupt(
                &wal,
                0,
                CorruptKind::Invalid(
                    "the manifest's end LSN is past its checkpoint but it lists no WAL segment",
                ),
            ));
        }
        return Ok(());
    }
    let mut reader = WalReader::open(
        storage.clone(),
        std::slice::from_ref(&wal),
        m.checkpoint_lsn + 1,
        ReadOptions {
            strict_tail: true,
            node_id: Some(m.node_id),
            ..ReadOptions::default()
        },
    )?;
    let mut last = m.checkpoint_lsn;
    while let Some(rec) = reader.next_shared()? {
        last = rec.lsn;
    }
    if last != m.end_lsn {
        return Err(Error::corrupt(
            &wal,
            0,
            CorruptKind::Invalid("the backup's WAL does not end at the manifest's end LSN"),
        ));
    }
    Ok(())
}

/// True for the name of a WAL segment file (what a backup's WAL files are named).
pub(crate) fn is_segment(name: &str) -> bool {
    duplex_wal::format::parse_segment_file_name(name).is_some()
}

/// Where a roll-forward reads records: the restored backup's own WAL up to its end, then
/// the archive from the next LSN, as one log; records past `until` are not returned.
///
/// The archive is opened only once the backup's WAL is exhausted, from the LSN after it,
/// so it adds what it has beyond the backup and nothing else; an archive that ends before
/// that LSN adds nothing.
pub(crate) struct LogReader {
    storage: Arc<dyn Storage>,
    first: Option<WalReader>,
    archive_dirs: Vec<PathBuf>,
    rest: Option<WalReader>,
    /// The next LSN expected: where the archive is read from.
    next: u64,
    until: Option<u64>,
    opts: ReadOptions,
    done: bool,
}

impl std::fmt::Debug for LogReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogReader")
            .field("next", &self.next)
            .field("until", &self.until)
            .finish()
    }
}

impl LogReader {
    /// A reader from `from` over `staged` (a restored backup's WAL, if any), then
    /// `archive_dirs`. Each source is read without a bound, so that a batch that straddles
    /// `until` is read whole and its records up to `until` are returned.
    pub(crate) fn open(
        storage: &Arc<dyn Storage>,
        staged: Option<&Path>,
        archive_dirs: &[PathBuf],
        from: u64,
        until: Option<u64>,
        opts: ReadOptions,
    ) -> Result<LogReader> {
        let opts = ReadOptions {
            until_lsn: None,
            ..opts
        };
        let first = match staged {
            Some(dir) if storage.exists(dir) => Some(WalReader::open(
                storage.clone(),
                &[dir.to_path_buf()],
                from,
                opts.clone(),
            )?),
            _ => None,
        };
        Ok(LogReader {
            storage: storage.clone(),
            first,
            archive_dirs: archive_dirs.to_vec(),
            rest: None,
            next: from,
            until,
            opts,
            done: false,
        })
    }

    /// The next record, `None` at the end of the log or past `until`.
    pub(crate) fn next_shared(&mut self) -> Result<Option<SharedRecord>> {
        if self.done {
            return Ok(None);
        }
        let rec = self.next_any()?;
        match rec {
            Some(r) if self.until.is_none_or(|u| r.lsn <= u) => {
                self.next = r.lsn + 1;
                Ok(Some(r))
            }
            _ => {
                self.done = true;
                Ok(None)
            }
        }
    }

    /// True when the last record returned ended its atomic WAL batch.
    pub(crate) fn at_group_end(&self) -> bool {
        self.first
            .as_ref()
            .or(self.rest.as_ref())
            .is_none_or(|r| r.position().is_some())
    }

    fn next_any(&mut self) -> Result<Option<SharedRecord>> {
        if let Some(r) = &mut self.first {
            match ended(r.next_shared())? {
                Some(rec) => return Ok(Some(rec)),
                None => {
                    // The torn tail the backup's WAL cannot have (it is cut after a whole
                    // batch) would be refused by verification; here it just ends it.
                    self.first = None;
                }
            }
        }
        if self.rest.is_none() {
            if self.archive_dirs.is_empty() {
                return Ok(None);
            }
            let segs = duplex_wal::list_segments_of(
                &*self.storage,
                &self.archive_dirs,
                self.opts.node_id,
                self.opts.timeline,
            )?;
            if segs.is_empty() {
                return Ok(None);
            }
            let r = WalReader::open(
                self.storage.clone(),
                &self.archive_dirs,
                self.next,
                self.opts.clone(),
            )?;
            self.rest = Some(r);
        }
        match &mut self.rest {
            Some(r) => ended(r.next_shared()),
            None => Ok(None),
        }
    }
}

/// A source that ends before the LSN asked for holds nothing more for this log: the end,
/// not an error (a source that starts after it is a gap, reported as one).
fn ended(r: duplex_wal::Result<Option<SharedRecord>>) -> Result<Option<SharedRecord>> {
    match r {
        Err(duplex_wal::Error::LsnUnavailable {
            requested, last, ..
        }) if last < requested => Ok(None),
        r => Ok(r?),
    }
}
