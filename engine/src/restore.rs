//! Roll-forward: applying archived WAL records onto a restored backup, to the end, to an
//! LSN, or to a wall-clock time, with progress reporting.
//!
//! The archived records are copied, LSN for LSN, into the restored database's own WAL
//! (checked on the way: every CRC, consecutive LSNs, valid batch payloads), then the
//! database is opened, which replays them, and checkpointed. A gap or a damaged record
//! stops the roll-forward with an error naming what is missing or damaged; nothing past it
//! is applied, and only when the operator asks for it is the database left at the last
//! good record.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use duplex_wal::{ReadOptions, Storage, Wal, WalReader};

use crate::batch::{decode_batch, KIND_BATCH};
use crate::db::{Config, Database, WAL_DIR};
use crate::error::{Error, Result};
use crate::store::read_manifest;

/// Where a roll-forward stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Apply everything the archive holds.
    End,
    /// Apply records up to and including this LSN.
    Lsn(u64),
    /// Apply batches written at or before this wall-clock time (ms since the Unix epoch).
    TimeMs(u64),
}

/// Progress of a roll-forward, reported to the caller's callback.
#[derive(Debug, Clone, Copy, Default)]
pub struct Progress {
    /// Records applied so far.
    pub records: u64,
    /// Payload bytes applied so far.
    pub bytes: u64,
    /// Bytes of archived segments to read in all (an upper bound).
    pub total_bytes: u64,
    /// Seconds since the start.
    pub seconds: f64,
}

impl Progress {
    /// Records per second so far.
    pub fn rate(&self) -> f64 {
        if self.seconds > 0.0 {
            self.records as f64 / self.seconds
        } else {
            0.0
        }
    }
}

/// What a roll-forward did.
#[derive(Debug, Clone)]
pub struct RollForwardReport {
    /// First LSN applied (the checkpoint LSN + 1).
    pub from_lsn: u64,
    /// Last LSN applied; `from_lsn - 1` if none was.
    pub to_lsn: u64,
    /// Records applied.
    pub records: u64,
    /// Payload bytes applied.
    pub bytes: u64,
    /// Seconds taken, applying and checkpointing.
    pub seconds: f64,
    /// When the operator allowed stopping at the last good record: the error that stopped
    /// the roll-forward early.
    pub stopped_early: Option<String>,
}

/// Options of [`roll_forward`].
#[derive(Debug, Clone)]
pub struct RollForwardOptions {
    /// Where to stop. Default: the end of the archive.
    pub target: Target,
    /// On a gap or damaged record, keep what was applied before it instead of failing.
    /// Default false.
    pub stop_at_last_good: bool,
    /// Configuration to open the restored database with (its node id must match).
    pub config: Config,
}

impl Default for RollForwardOptions {
    fn default() -> Self {
        RollForwardOptions {
            target: Target::End,
            stop_at_last_good: false,
            config: Config::default(),
        }
    }
}

/// Rolls the archived WAL in `archive_dirs` forward onto the restored database in `dir`
/// (see [`crate::restore_chain`]), then opens it, checkpoints and closes it. `progress` is
/// called every few thousand records and at the end.
///
/// Two passes: the first reads the archive from the checkpoint on, checking every record
/// (CRC, LSN order, node, batch payload) and finding where to stop; the second copies the
/// archived segments up to that point into the database's WAL directory (copy_file_range),
/// cutting the last one after the last record to apply. Opening the database then replays
/// them.
pub fn roll_forward(
    storage: Arc<dyn Storage>,
    dir: &Path,
    archive_dirs: &[PathBuf],
    opts: &RollForwardOptions,
    progress: &mut dyn FnMut(&Progress),
) -> Result<RollForwardReport> {
    let start = Instant::now();
    let manifest = read_manifest(&*storage, dir)?.ok_or_else(|| {
        Error::Config(format!(
            "{} holds no database manifest; restore a backup into it first",
            dir.display()
        ))
    })?;
    let from = manifest.checkpoint_lsn + 1;
    let cfg = &opts.config;
    let wal_dir = dir.join(WAL_DIR);
    if !duplex_wal::list_segments(&*storage, std::slice::from_ref(&wal_dir))?.is_empty() {
        return Err(Error::Config(format!(
            "{} already has WAL segments; roll forward only onto a fresh restore",
            wal_dir.display()
        )));
    }
    if let Target::Lsn(n) = opts.target {
        if n < manifest.checkpoint_lsn {
            return Err(Error::Config(format!(
                "the backup already holds records up to LSN {}; it cannot be rolled back to LSN {n} (use an older backup)",
                manifest.checkpoint_lsn
            )));
        }
    }
    for a in archive_dirs {
        if !storage.exists(a) {
            return Err(Error::Config(format!(
                "archive directory {} does not exist (check the path)",
                a.display()
            )));
        }
    }
    let segments = duplex_wal::list_segments(&*storage, archive_dirs)?;
    let mut p = Progress::default();
    for (_, path) in &segments {
        if let Ok(f) = storage.open(path, duplex_wal::OpenMode::Read) {
            p.total_bytes += f.len().unwrap_or(0);
        }
    }
    let until = match opts.target {
        Target::Lsn(l) => Some(l),
        _ => None,
    };
    let mut stopped_early = None;
    let mut cut: Option<(PathBuf, u64)> = None;
    let mut last = from - 1;
    if !segments.is_empty() && until.is_none_or(|u| u >= from) {
        let res = check_records(
            &storage,
            archive_dirs,
            from,
            until,
            opts,
            &mut p,
            &mut last,
            &mut cut,
            start,
            progress,
        );
        if let Err(e) = res {
            if opts.stop_at_last_good && e.is_corruption() {
                stopped_early = Some(e.to_string());
            } else {
                return Err(e);
            }
        }
    }
    storage
        .create_dir_all(&wal_dir)
        .map_err(|e| Error::io("create directory", &wal_dir, e))?;
    match &cut {
        Some((cut_path, cut_off)) if last >= from => {
            copy_segments(&*storage, &segments, from, cut_path, *cut_off, &wal_dir)?
        }
        _ => {
            // Nothing to apply: an empty log that continues after the checkpoint.
            Wal::open_with(storage.clone(), &wal_dir, cfg.wal_options(from))?.close()?;
        }
    }
    p.seconds = start.elapsed().as_secs_f64();
    progress(&p);
    // Opening replays the copied records; the checkpoint makes the result self-contained.
    let db = Database::open_with(storage, dir, cfg.clone())?;
    if db.wal().last_lsn() != last {
        return Err(Error::Config(format!(
            "the restored WAL ends at LSN {} but the archive was checked up to {last}",
            db.wal().last_lsn()
        )));
    }
    db.checkpoint()?;
    db.close()?;
    Ok(RollForwardReport {
        from_lsn: from,
        to_lsn: last,
        records: p.records,
        bytes: p.bytes,
        seconds: start.elapsed().as_secs_f64(),
        stopped_early,
    })
}

/// Copies the archived segments that hold LSNs `from..` up to the one named `cut_path`,
/// which is cut at `cut_off`; fsyncs them and the directory.
fn copy_segments(
    storage: &dyn Storage,
    segments: &[(u64, PathBuf)],
    from: u64,
    cut_path: &Path,
    cut_off: u64,
    wal_dir: &Path,
) -> Result<()> {
    // The segment holding `from` is the last one that starts at or before it.
    let first = segments.iter().rposition(|(l, _)| *l <= from).unwrap_or(0);
    for (_, src) in &segments[first..] {
        let name = src
            .file_name()
            .ok_or_else(|| Error::Config(format!("{} has no file name", src.display())))?;
        let dest = wal_dir.join(name);
        let is_cut = src == cut_path;
        let len = if is_cut {
            cut_off
        } else {
            storage
                .open(src, duplex_wal::OpenMode::Read)
                .and_then(|f| f.len())
                .map_err(|e| Error::io("stat", src, e))?
        };
        let copied = storage
            .copy_prefix(src, &dest, len)
            .map_err(|e| Error::io("copy archived segment", &dest, e))?;
        if copied != len {
            return Err(Error::io(
                "copy archived segment",
                src,
                std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "short copy"),
            ));
        }
        storage
            .open(&dest, duplex_wal::OpenMode::ReadWrite)
            .and_then(|f| f.sync_data())
            .map_err(|e| Error::io("fsync", &dest, e))?;
        if is_cut {
            break;
        }
    }
    storage
        .sync_dir(wal_dir)
        .map_err(|e| Error::io("fsync directory", wal_dir, e))
}

/// Reads and checks every record to apply; sets `last` and `cut` (segment and offset just
/// past the last good record) as it goes, so a failure leaves them at the last good one.
#[allow(clippy::too_many_arguments)]
fn check_records(
    storage: &Arc<dyn Storage>,
    archive_dirs: &[PathBuf],
    from: u64,
    until: Option<u64>,
    opts: &RollForwardOptions,
    p: &mut Progress,
    last: &mut u64,
    cut: &mut Option<(PathBuf, u64)>,
    start: Instant,
    progress: &mut dyn FnMut(&Progress),
) -> Result<()> {
    let cfg = &opts.config;
    let mut reader = WalReader::open(
        storage.clone(),
        archive_dirs,
        from,
        ReadOptions {
            max_record_size: cfg.wal_options(from).max_record_size,
            until_lsn: until,
            strict_tail: false,
            node_id: Some(cfg.node_id),
        },
    )?;
    while let Some(rec) = reader.next_record()? {
        if rec.kind == KIND_BATCH {
            let b = decode_batch(&rec.payload, cfg.max_key_size, cfg.max_value_size).map_err(
                |kind| Error::Corrupt {
                    file: reader
                        .position()
                        .map(|(p, _)| p.to_path_buf())
                        .unwrap_or_default(),
                    offset: rec.lsn,
                    kind,
                },
            )?;
            if let Target::TimeMs(t) = opts.target {
                if b.stamp.ts.wall_ms() > t {
                    break;
                }
            }
        }
        p.records += 1;
        p.bytes += rec.payload.len() as u64;
        *last = rec.lsn;
        if let Some((path, off)) = reader.position() {
            *cut = Some((path.to_path_buf(), off));
        }
        if p.records.is_multiple_of(8192) {
            p.seconds = start.elapsed().as_secs_f64();
            progress(p);
        }
    }
    Ok(())
}
