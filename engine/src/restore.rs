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

use duplex_wal::{Entry, ReadOptions, Storage, SyncPolicy, Wal, WalReader};

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
    let wal_opts = duplex_wal::WalOptions {
        sync: SyncPolicy::Never,
        ..cfg.wal_options(from)
    };
    let wal = Wal::open_with(storage.clone(), dir.join(WAL_DIR), wal_opts)?;
    if wal.last_lsn() >= from {
        return Err(Error::Config(format!(
            "{} already has WAL records after its checkpoint (LSN {}); roll forward only onto a fresh restore",
            dir.display(),
            wal.last_lsn()
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
    let mut total_bytes = 0;
    for (_, p) in &segments {
        if let Ok(f) = storage.open(p, duplex_wal::OpenMode::Read) {
            total_bytes += f.len().unwrap_or(0);
        }
    }
    let until = match opts.target {
        Target::Lsn(l) => Some(l),
        _ => None,
    };
    let mut p = Progress {
        total_bytes,
        ..Progress::default()
    };
    let mut stopped_early = None;
    let mut last = from - 1;
    let nothing_to_do = segments.is_empty() || until.is_some_and(|u| u < from);
    if !nothing_to_do {
        let res = copy_records(
            &storage,
            &wal,
            archive_dirs,
            from,
            until,
            opts,
            cfg,
            &mut p,
            &mut last,
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
    wal.close()?;
    p.seconds = start.elapsed().as_secs_f64();
    progress(&p);
    // Opening replays the copied records; the checkpoint makes the result self-contained.
    let db = Database::open_with(storage, dir, cfg.clone())?;
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

#[allow(clippy::too_many_arguments)]
fn copy_records(
    storage: &Arc<dyn Storage>,
    wal: &Wal,
    archive_dirs: &[PathBuf],
    from: u64,
    until: Option<u64>,
    opts: &RollForwardOptions,
    cfg: &Config,
    p: &mut Progress,
    last: &mut u64,
    start: Instant,
    progress: &mut dyn FnMut(&Progress),
) -> Result<()> {
    let reader = WalReader::open(
        storage.clone(),
        archive_dirs,
        from,
        ReadOptions {
            max_record_size: wal.options().max_record_size,
            until_lsn: until,
            strict_tail: false,
            node_id: Some(cfg.node_id),
        },
    )?;
    // Copy in groups to save system calls; LSNs stay those of the archive.
    let mut group: Vec<duplex_wal::Record> = Vec::with_capacity(512);
    let flush = |group: &mut Vec<duplex_wal::Record>, last: &mut u64| -> Result<()> {
        if group.is_empty() {
            return Ok(());
        }
        let entries: Vec<Entry<'_>> = group
            .iter()
            .map(|r| Entry {
                kind: r.kind,
                payload: &r.payload,
            })
            .collect();
        let lsn = wal.append_batch(&entries)?;
        let want = group.last().map(|r| r.lsn).unwrap_or(lsn);
        if lsn != want {
            return Err(Error::Config(format!(
                "the restored WAL is at LSN {lsn} but the archive record is {want}"
            )));
        }
        *last = lsn;
        group.clear();
        Ok(())
    };
    let res = copy_all(
        reader,
        &mut group,
        &flush,
        opts,
        cfg,
        archive_dirs,
        p,
        last,
        start,
        progress,
    );
    // Whatever was read before a failure is good: keep it, then report the failure.
    flush(&mut group, last)?;
    res
}

#[allow(clippy::too_many_arguments)]
fn copy_all(
    reader: WalReader,
    group: &mut Vec<duplex_wal::Record>,
    flush: &dyn Fn(&mut Vec<duplex_wal::Record>, &mut u64) -> Result<()>,
    opts: &RollForwardOptions,
    cfg: &Config,
    archive_dirs: &[PathBuf],
    p: &mut Progress,
    last: &mut u64,
    start: Instant,
    progress: &mut dyn FnMut(&Progress),
) -> Result<()> {
    for rec in reader {
        let rec = rec?;
        if rec.kind == KIND_BATCH {
            let b = decode_batch(&rec.payload, cfg.max_key_size, cfg.max_value_size).map_err(
                |kind| Error::Corrupt {
                    file: archive_dirs.first().cloned().unwrap_or_default(),
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
        group.push(rec);
        if group.len() == 512 {
            flush(group, last)?;
        }
        if p.records.is_multiple_of(8192) {
            p.seconds = start.elapsed().as_secs_f64();
            progress(p);
        }
    }
    Ok(())
}
