//! Roll-forward: applying WAL records onto a restored backup, to the end, to an LSN, or to
//! a wall-clock time, with progress reporting. The records come from the backup's own WAL
//! (staged in the restored directory by [`crate::restore_chain`]), then from the archive
//! after it, read as one log (`backup_wal::LogReader`); without an archive the backup alone
//! is rolled forward to its end LSN. The point-in-time unit is one record (one client
//! command or MULTI/EXEC), also inside an atomic WAL batch that is whole in the log.
//!
//! Two passes over the archive. The first checks every record to apply (CRC, consecutive
//! LSNs, node, valid batch payloads) and finds where to stop; a gap or a damaged record
//! stops the roll-forward with an error naming what is missing or damaged, before anything
//! is applied, and only when the operator asks for it is the database left at the last
//! good record. The second gathers the checked records in memory in large chunks (see
//! [`crate::replay`]), sorts each chunk once, and merges it into the tree as a checkpoint,
//! rebuilding the tree sequentially into a new store generation when the chunk would touch
//! most of its leaves. Finally an empty WAL continuing after the last LSN applied is
//! created, on a new timeline: the restored database is a new lineage whose archive
//! (`n<node>-t<timeline>`) never meets the original's (docs/FORMAT.md section 11). The
//! archive read is the backup's lineage only. Nothing is copied into the WAL and nothing
//! is replayed at the next open.
//!
//! A roll-forward interrupted in the second pass leaves the database at its last chunk
//! checkpoint; running it again continues from there.

use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use duplex_wal::{ReadOptions, SharedRecord, Storage, Wal};

use crate::backup_wal::{LogReader, RESTORE_WAL_DIR};
use crate::batch::{BatchRef, KIND_BATCH, KIND_EPOCH};
use crate::config::Config;
use crate::db::WAL_DIR;
use crate::error::{CorruptKind, Error, Result};
use crate::format::Manifest;
use crate::hlc::Timestamp;
use crate::lock::lock_file;
use crate::replay::{epoch_of, gather, ReplayLimits, VersionBuffer};
use crate::store::{open_store, read_manifest, write_checkpoint, CheckpointJob, StoreDir};
use crate::tree::TreeView;

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

/// What a roll-forward is doing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Phase {
    /// First pass: reading and checking the archived records.
    #[default]
    Check,
    /// Second pass: reading the records of chunks after the first (an archive larger than
    /// one chunk).
    Apply,
    /// Sorting a chunk's records and writing them into the tree (no progress is reported
    /// until it is done).
    Merge,
}

/// Progress of a roll-forward, reported to the caller's callback.
#[derive(Debug, Clone, Copy, Default)]
pub struct Progress {
    /// The pass under way.
    pub phase: Phase,
    /// Records checked (in [`Phase::Check`]) or gathered (in [`Phase::Apply`]) so far.
    pub records: u64,
    /// Payload bytes of those records.
    pub bytes: u64,
    /// Bytes of archived segments to read in all (an upper bound).
    pub total_bytes: u64,
    /// Records the check found to apply (known once [`Phase::Apply`] starts).
    pub to_apply: u64,
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

    /// Estimated seconds left in the current pass at the rate so far: by archive bytes
    /// while checking (record headers counted at 24 bytes each), by records while
    /// applying. `None` until there is a rate to go by.
    pub fn eta_seconds(&self) -> Option<f64> {
        if self.seconds <= 0.0 || self.records == 0 {
            return None;
        }
        let (done, total) = match self.phase {
            Phase::Check => (
                (self.bytes + self.records * 24) as f64,
                self.total_bytes as f64,
            ),
            Phase::Apply | Phase::Merge => (self.records as f64, self.to_apply as f64),
        };
        Some(((total - done).max(0.0)) * self.seconds / done)
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
    /// Seconds taken in all.
    pub seconds: f64,
    /// How those seconds split.
    pub times: PhaseTimes,
    /// When the operator allowed stopping at the last good record: the error that stopped
    /// the roll-forward early.
    pub stopped_early: Option<String>,
    /// Highest fencing epoch the restored database holds: its backup's, or a higher one
    /// logged in the records applied ([`crate::Database::log_epoch`]). A restored server
    /// starts above it.
    pub max_epoch: u64,
    /// Timeline of the backup's log, whose archive (`n<node>-t<timeline>`) was read.
    pub from_timeline: u64,
    /// Timeline the restored database's WAL starts (and keeps at every later open): one
    /// above every timeline of this node the backup and the archive roots show, so that
    /// its segments never pass for those of the original or of another restore.
    pub timeline: u64,
}

/// Where the time of a roll-forward went, in seconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct PhaseTimes {
    /// Reading and checking the archive (and gathering the first chunk).
    pub check: f64,
    /// Reading further chunks, if the archive held more than one.
    pub read: f64,
    /// Sorting the gathered records and keeping the winner per key.
    pub sort: f64,
    /// Merging them into the tree: writing it, fsync, manifest.
    pub merge: f64,
    /// Creating the WAL that continues after the last LSN applied.
    pub finish: f64,
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
    /// Memory for the operations gathered before they are merged into the tree: about 100
    /// bytes per operation (key written) plus its key and value; the archived records
    /// themselves are read in place from the page cache. Fewer, larger chunks mean fewer
    /// passes over the tree. Default 1 GiB (about 5 million 100-byte values).
    pub chunk_bytes: u64,
}

impl Default for RollForwardOptions {
    fn default() -> Self {
        RollForwardOptions {
            target: Target::End,
            stop_at_last_good: false,
            config: Config::default(),
            chunk_bytes: 1 << 30,
        }
    }
}

/// Rolls the restored backup's own WAL, then the archived WAL in `archive_dirs` (none: the
/// backup alone), forward onto the restored database in `dir` (see
/// [`crate::restore_chain`]) and closes it; the result opens with nothing to replay.
/// `progress` is called every few thousand records of each pass and at the end of each.
pub fn roll_forward(
    storage: Arc<dyn Storage>,
    dir: &Path,
    archive_dirs: &[PathBuf],
    opts: &RollForwardOptions,
    progress: &mut dyn FnMut(&Progress),
) -> Result<RollForwardReport> {
    let start = Instant::now();
    opts.config.validate()?;
    // Nobody else may open or roll forward this directory meanwhile.
    let _lock = lock_file(&*storage, dir)?;
    let (manifest, tree) = open_restored(&storage, dir, archive_dirs, opts)?;
    let tree_epoch = tree.ckpt.max_epoch;
    let from = manifest.checkpoint_lsn + 1;
    let cfg = &opts.config;
    let wal_dir = dir.join(WAL_DIR);
    let staged = dir.join(RESTORE_WAL_DIR);
    let from_timeline = crate::backup::staged_timeline(&*storage, &staged)?;
    check_lineage_dirs(&*storage, cfg.node_id, from_timeline, archive_dirs)?;
    let timeline = new_timeline(&*storage, cfg.node_id, from_timeline, archive_dirs)?;
    let sources = log_dirs(&staged, archive_dirs);
    let segments =
        duplex_wal::list_segments_of(&*storage, &sources, Some(cfg.node_id), Some(from_timeline))?;
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
    let log = Log {
        staged: &staged,
        archive_dirs,
        timeline: from_timeline,
    };
    let mut stopped_early = None;
    let mut last = from - 1;
    let mut buf = VersionBuffer::with_capacity(p.total_bytes.min(opts.chunk_bytes.max(1)));
    if !segments.is_empty() && until.is_none_or(|u| u >= from) {
        let res = check_records(
            &storage, &log, from, until, opts, &mut p, &mut last, &mut buf, start, progress,
        );
        if let Err(e) = res {
            if opts.stop_at_last_good && e.is_corruption() {
                stopped_early = Some(e.to_string());
            } else {
                return Err(e);
            }
        }
    }
    let check_s = start.elapsed().as_secs_f64();
    let max_epoch = tree_epoch.max(buf.max_epoch);
    // The check's last report: every record it found to apply.
    p.seconds = check_s;
    progress(&p);
    let (checked, checked_bytes) = (p.records, p.bytes);
    p.phase = Phase::Apply;
    p.to_apply = checked;
    p.records = 0;
    p.bytes = 0;
    progress(&p);
    let mut times = PhaseTimes::default();
    if last >= from {
        times = apply_records(
            &storage, dir, tree, &log, buf, last, opts, &mut p, start, progress,
        )?;
    }
    times.check = check_s;
    let t = Instant::now();
    // An empty log that continues after the last record applied.
    storage
        .create_dir_all(&wal_dir)
        .map_err(|e| Error::io("create directory", &wal_dir, e))?;
    let wal_opts = duplex_wal::WalOptions {
        timeline,
        ..cfg.wal_options(last + 1)
    };
    let wal = Wal::open_with(storage.clone(), &wal_dir, wal_opts)?;
    let wal_last = wal.last_lsn();
    wal.close()?;
    if storage.exists(&staged) {
        // The backup's WAL is applied: the database no longer needs it.
        crate::backup::remove_tree(&*storage, &staged)?;
    }
    let ckpt_lsn = read_manifest(&*storage, dir)?.map_or(0, |m| m.checkpoint_lsn);
    if ckpt_lsn != last || wal_last != last {
        return Err(Error::Config(format!(
            "the restored database ends at checkpoint LSN {ckpt_lsn} / WAL LSN {wal_last} but the archive was checked up to {last}"
        )));
    }
    Ok(RollForwardReport {
        from_lsn: from,
        to_lsn: last,
        records: checked,
        bytes: checked_bytes,
        seconds: start.elapsed().as_secs_f64(),
        times: PhaseTimes {
            finish: t.elapsed().as_secs_f64(),
            ..times
        },
        stopped_early,
        max_epoch,
        from_timeline,
        timeline,
    })
}

/// Every archive root given must hold the history of the backup's lineage: a root of
/// lineage subdirectories without `n<node>-t<timeline>` is another server's or another
/// timeline's archive, which cannot continue this backup (read as empty, it would end the
/// restore at the backup without a word).
fn check_lineage_dirs(
    storage: &dyn Storage,
    node: u64,
    timeline: u64,
    archive_dirs: &[PathBuf],
) -> Result<()> {
    for root in archive_dirs {
        let dirs = duplex_wal::resolve_archive_dirs(storage, root, Some(node), Some(timeline))?;
        if let Some(missing) = dirs.iter().find(|d| !storage.exists(d)) {
            return Err(Error::Config(format!(
                "the archive {} holds no history of node {node} timeline {timeline} ({} is missing), the lineage of the backup: give the archive root its server wrote to, or restore without an archive to the backup's own end",
                root.display(),
                missing.display()
            )));
        }
    }
    Ok(())
}

/// The timeline a restore of a backup of `node` on `from_timeline` starts: one above it
/// and above every timeline of `node` with a lineage subdirectory in the archive roots
/// read (or beside an archive given as a lineage subdirectory), so that two restores of
/// one backup sharing an archive root get timelines of their own.
fn new_timeline(
    storage: &dyn Storage,
    node: u64,
    from_timeline: u64,
    archive_dirs: &[PathBuf],
) -> Result<u64> {
    let mut highest = from_timeline;
    for dir in archive_dirs {
        let mut roots = vec![dir.as_path()];
        let own = dir.file_name().and_then(|n| n.to_str());
        if own.and_then(duplex_wal::parse_archive_subdir).is_some() {
            roots.extend(dir.parent());
        }
        for root in roots {
            if !storage.exists(root) {
                continue;
            }
            for name in storage
                .list(root)
                .map_err(|e| Error::io("list directory", root, e))?
            {
                if let Some((n, t)) = duplex_wal::parse_archive_subdir(&name) {
                    if n == node {
                        highest = highest.max(t);
                    }
                }
            }
        }
    }
    // The timeline is the incarnation in replication positions: it must fit there.
    highest
        .checked_add(1)
        .filter(|t| *t <= crate::repl::MAX_INCARNATION)
        .ok_or_else(|| {
            Error::Config(format!(
                "node {node} has used every timeline up to {highest}; no new one can start (give the rebuilt server a new node id)"
            ))
        })
}

/// The checks before a roll-forward: `dir` holds a restored backup of this node and no
/// WAL yet, the target is not before what it already holds, every archive directory
/// exists. Returns its manifest and a view of its tree.
fn open_restored(
    storage: &Arc<dyn Storage>,
    dir: &Path,
    archive_dirs: &[PathBuf],
    opts: &RollForwardOptions,
) -> Result<(Manifest, TreeView)> {
    let manifest = read_manifest(&**storage, dir)?.ok_or_else(|| {
        Error::Config(format!(
            "{} holds no database manifest; restore a backup into it first",
            dir.display()
        ))
    })?;
    let cfg = &opts.config;
    if cfg.node_id != manifest.node_id {
        return Err(Error::Config(format!(
            "{} belongs to node {}, but the roll-forward was asked for node {}",
            dir.display(),
            manifest.node_id,
            cfg.node_id
        )));
    }
    let wal_dir = dir.join(WAL_DIR);
    if !duplex_wal::list_segments(&**storage, std::slice::from_ref(&wal_dir))?.is_empty() {
        return Err(Error::Config(format!(
            "{} already has WAL segments; roll forward only onto a fresh restore",
            wal_dir.display()
        )));
    }
    let tree = open_store(storage, dir, &manifest, cfg.node_id)?;
    match opts.target {
        Target::Lsn(n) if n < manifest.checkpoint_lsn => {
            return Err(Error::Config(format!(
                "the backup already holds records up to LSN {}; it cannot be rolled back to LSN {n} (use an older backup)",
                manifest.checkpoint_lsn
            )));
        }
        // Also what a re-run with an earlier time than an interrupted first run finds.
        Target::TimeMs(t) if Timestamp(tree.ckpt.max_ts).wall_ms() > t => {
            return Err(Error::Config(format!(
                "{} already holds writes stamped after the target time ({} ms > {t} ms since the epoch); it cannot be rolled back (restore an older backup)",
                dir.display(),
                Timestamp(tree.ckpt.max_ts).wall_ms()
            )));
        }
        _ => {}
    }
    for a in archive_dirs {
        if !storage.exists(a) {
            return Err(Error::Config(format!(
                "archive directory {} does not exist (check the path)",
                a.display()
            )));
        }
    }
    Ok((manifest, tree))
}

/// The second pass: merges `buf` (the records the check gathered) and, if the check
/// stopped gathering before `last`, reads the rest in chunks; each chunk is merged into the
/// tree as a checkpoint at its last LSN.
#[allow(clippy::too_many_arguments)]
fn apply_records(
    storage: &Arc<dyn Storage>,
    dir: &Path,
    mut tree: TreeView,
    log: &Log<'_>,
    mut buf: VersionBuffer,
    last: u64,
    opts: &RollForwardOptions,
    p: &mut Progress,
    start: Instant,
    progress: &mut dyn FnMut(&Progress),
) -> Result<PhaseTimes> {
    // Shared with the merge closure, read between its calls.
    let (sort_s, merge_s) = (Cell::new(0.0), Cell::new(0.0));
    let mut read_s = 0.0;
    let cfg = &opts.config;
    let source = log
        .archive_dirs
        .first()
        .cloned()
        .unwrap_or_else(|| log.staged.to_path_buf());
    // Both the merge and the reading report progress.
    let report = RefCell::new((p, progress));
    let say = |phase: Phase, counts: Option<(u64, u64)>| {
        let mut r = report.borrow_mut();
        let (p, f) = &mut *r;
        p.phase = phase;
        if let Some((records, bytes)) = counts {
            p.records = records;
            p.bytes = bytes;
        }
        p.seconds = start.elapsed().as_secs_f64();
        f(p);
    };
    // The first chunk was gathered by the check.
    say(Phase::Apply, Some((buf.records, buf.payload_bytes)));
    let mut merge = |buf: &mut VersionBuffer| -> Result<()> {
        let lsn = buf.last_lsn;
        if lsn <= tree.ckpt.lsn {
            return Ok(());
        }
        say(Phase::Merge, None);
        let (max_ts, max_epoch) = (buf.max_ts, buf.max_epoch);
        let origins: Vec<(u64, u64)> = buf.origins.iter().map(|(o, (l, _))| (*o, *l)).collect();
        let t = Instant::now();
        let updates = buf.sorted_newest()?;
        sort_s.set(sort_s.get() + t.elapsed().as_secs_f64());
        let t = Instant::now();
        // Rebuild when the updates would touch most leaves anyway (more than one per
        // ~16 entries): one sequential pass, full leaves, no dead copy left behind.
        let rebuild = updates.len() as u64 * 16 >= tree.ckpt.entries;
        let at = StoreDir {
            storage,
            dir,
            node_id: cfg.node_id,
            clock: &*cfg.clock,
        };
        let job = CheckpointJob {
            tree: &tree,
            updates: &updates,
            lsn,
            max_ts,
            max_epoch,
            origins,
            new_generation: rebuild,
        };
        let next = write_checkpoint(&at, &job)?;
        if rebuild {
            tree.file.retire();
        }
        tree = next;
        merge_s.set(merge_s.get() + t.elapsed().as_secs_f64());
        say(Phase::Apply, None);
        Ok(())
    };
    if buf.last_lsn < last {
        // The check gathered a first chunk and went on: merge it, read the rest.
        merge(&mut buf)?;
        let (done, done_bytes) = (buf.records, buf.payload_bytes);
        say(Phase::Apply, Some((done, done_bytes)));
        buf.clear();
        let from = buf.last_lsn + 1;
        let reader = log.reader(storage, from, Some(last), cfg)?;
        let limits = ReplayLimits {
            max_key: cfg.max_key_size,
            max_value: cfg.max_value_size,
            chunk_bytes: opts.chunk_bytes.max(1),
        };
        let t = Instant::now();
        let before = sort_s.get() + merge_s.get();
        buf = gather(
            reader,
            &source,
            limits,
            buf,
            &mut merge,
            &mut |records, bytes| say(Phase::Apply, Some((done + records, done_bytes + bytes))),
        )?;
        read_s = t.elapsed().as_secs_f64() - (sort_s.get() + merge_s.get() - before);
        if buf.last_lsn != last {
            return Err(Error::Config(format!(
                "the archive changed during the roll-forward: it was checked up to LSN {last}, then read up to {}",
                buf.last_lsn
            )));
        }
    }
    // The rest (a no-op if the last chunk ended at `last`).
    merge(&mut buf)?;
    Ok(PhaseTimes {
        read: read_s,
        sort: sort_s.get(),
        merge: merge_s.get(),
        ..PhaseTimes::default()
    })
}

/// The log a roll-forward reads: the restored backup's own WAL (staged by
/// [`crate::restore_chain`]), then the archive.
struct Log<'a> {
    staged: &'a Path,
    archive_dirs: &'a [PathBuf],
    /// The backup's timeline: only its archive is read.
    timeline: u64,
}

impl Log<'_> {
    /// A reader from `from` (to `until` if set, inclusive: a batch that straddles it is
    /// read whole and only its records up to `until` returned), as node `cfg.node_id`, the
    /// segments mapped: neither the staged WAL nor the archive is written meanwhile.
    fn reader(
        &self,
        storage: &Arc<dyn Storage>,
        from: u64,
        until: Option<u64>,
        cfg: &Config,
    ) -> Result<LogReader> {
        LogReader::open(
            storage,
            Some(self.staged),
            self.archive_dirs,
            from,
            until,
            ReadOptions {
                max_record_size: cfg.wal_options(from).max_record_size,
                until_lsn: None,
                strict_tail: false,
                node_id: Some(cfg.node_id),
                timeline: Some(self.timeline),
                map_segments: true,
            },
        )
    }
}

/// Every directory the log is read from, the staged backup WAL first.
fn log_dirs(staged: &Path, archive_dirs: &[PathBuf]) -> Vec<PathBuf> {
    let mut v = vec![staged.to_path_buf()];
    v.extend(archive_dirs.iter().cloned());
    v
}

/// Reads and checks every record to apply; sets `last` as it goes, so a failure leaves it
/// at the last good record. Gathers the records into `buf` while it holds less than a chunk
/// (an archive within one chunk is read once).
///
/// The unit of a point-in-time target is one record (one client command, or one
/// MULTI/EXEC): the reader returns only atomic WAL batches that are whole in the log (one
/// cut by a torn tail is never returned), and within one the records up to the target are
/// taken.
#[allow(clippy::too_many_arguments)]
fn check_records(
    storage: &Arc<dyn Storage>,
    log: &Log<'_>,
    from: u64,
    until: Option<u64>,
    opts: &RollForwardOptions,
    p: &mut Progress,
    last: &mut u64,
    buf: &mut VersionBuffer,
    start: Instant,
    progress: &mut dyn FnMut(&Progress),
) -> Result<()> {
    let cfg = &opts.config;
    let mut gathering = true;
    let mut reader = log.reader(storage, from, until, cfg)?;
    // A batch that does not decode is named by the segment holding its LSN.
    let segments = duplex_wal::list_segments_of(
        &**storage,
        &log_dirs(log.staged, log.archive_dirs),
        Some(cfg.node_id),
        Some(log.timeline),
    )?;
    let locate = |lsn: u64| {
        let i = segments.partition_point(|(first, _)| *first <= lsn);
        segments
            .get(i.saturating_sub(1))
            .map(|s| s.1.clone())
            .unwrap_or_default()
    };
    // The records of an atomic WAL batch are all checked before any is taken: damage
    // anywhere in one stops before it. A target stops within one, after the records up to
    // it.
    let mut group: Vec<SharedRecord> = Vec::new();
    let mut take = |group: &mut Vec<SharedRecord>, buf: &mut VersionBuffer| -> Result<()> {
        for rec in group.drain(..) {
            if gathering && rec.kind == KIND_BATCH {
                let b = BatchRef::checked_before(rec.payload()).ok_or_else(|| Error::Corrupt {
                    file: locate(rec.lsn),
                    offset: rec.lsn,
                    kind: CorruptKind::Truncated,
                })?;
                buf.push_batch(&rec, &b);
            } else if rec.kind == KIND_EPOCH {
                buf.max_epoch = buf.max_epoch.max(epoch_of(&rec, &locate(rec.lsn))?);
            }
            if gathering {
                buf.last_lsn = rec.lsn;
                buf.records += 1;
            }
            p.records += 1;
            p.bytes += rec.payload().len() as u64;
            *last = rec.lsn;
            if p.records.is_multiple_of(8192) {
                p.seconds = start.elapsed().as_secs_f64();
                progress(p);
            }
            gathering = gathering && buf.memory_bytes() < opts.chunk_bytes;
        }
        Ok(())
    };
    while let Some(rec) = reader.next_shared()? {
        if rec.kind == KIND_BATCH {
            let b = BatchRef::decode(rec.payload(), cfg.max_key_size, cfg.max_value_size).map_err(
                |kind| Error::Corrupt {
                    file: locate(rec.lsn),
                    offset: rec.lsn,
                    kind,
                },
            )?;
            if let Target::TimeMs(t) = opts.target {
                if b.stamp.ts.wall_ms() > t {
                    return take(&mut group, buf);
                }
            }
        } else if rec.kind == KIND_EPOCH {
            epoch_of(&rec, &locate(rec.lsn))?;
        }
        group.push(rec);
        if reader.at_group_end() {
            take(&mut group, buf)?;
        }
    }
    // Stopped by an LSN target (or at the end): the records of the group up to it.
    take(&mut group, buf)?;
    Ok(())
}
