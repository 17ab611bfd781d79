//! Verification of backups, backup chains, WAL archives, segments and data directories, as
//! the operator reads it.
//!
//! Every check reads; none writes. Results are [`Report`]s (facts, notes and at most one
//! failure per path) rather than errors, so that one damaged path does not hide the state
//! of the others. The checks of backups and data directories are the engine's
//! ([`duplex_engine::verify`], which says what each checks); this module decides what each
//! path is, checks consecutive backups as a chain, reads archives and single segments
//! ([`ScopedReader`]), and words the engine's typed findings as report lines.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use duplex_engine::backup::{read_backup_manifest, BACKUP_MANIFEST};
use duplex_engine::verify::{
    scan_wal_dir, segment_node_id, verify_backup_dir, verify_data_dir, wal_error_file, Checked,
    Note, VerifyReport, WalSummary,
};
use duplex_engine::{BackupManifest, MAX_RECORD_SIZE};
use duplex_wal::format::parse_segment_file_name;
use duplex_wal::{ArchiveReport, ReadOptions, Record, Storage, TornTail, WalReader};

use crate::exit::{problem_code, verify_code, Code, ToolError};
use crate::identify::{has_lineage_dirs, identify, wal_dir_of, Kind};
use crate::text::{format_time_ms, human_bytes};

/// Which records of a WAL directory to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalScope {
    /// The directory holding the segments.
    pub dir: PathBuf,
    /// When set, only this segment of `dir`: its records, checked to its end.
    pub file: Option<PathBuf>,
    /// A torn tail at the end of the last segment is an error (archives), not the end of
    /// the log (the WAL of a data directory).
    pub strict_tail: bool,
}

impl WalScope {
    /// The scope for a path of the given kind: a segment file alone, a WAL directory or
    /// archive whole, the `wal/` of a data directory. A backup holds no WAL.
    pub fn for_path(path: &Path, kind: &Kind) -> Result<WalScope, ToolError> {
        let dir = wal_dir_of(path, kind).ok_or_else(|| {
            ToolError::usage(format!(
                "{} is a backup: it holds no WAL records (the records after it are in the archive; give the archive directory)",
                path.display()
            ))
        })?;
        let file = match kind {
            Kind::Segment => {
                let name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                if parse_segment_file_name(&name).is_none() {
                    return Err(ToolError::usage(format!(
                        "{} is not named like a WAL segment (20 digits of its first LSN, then .wal, e.g. 00000000000000000001.wal): copy it under its proper name into an empty directory and give that directory",
                        path.display()
                    )));
                }
                Some(dir.join(name))
            }
            _ => None,
        };
        let strict_tail = match kind {
            Kind::DataDir | Kind::WalDir { live: true } => false,
            Kind::Segment => !crate::identify::is_live_wal_dir(&dir),
            _ => true,
        };
        Ok(WalScope {
            dir,
            file,
            strict_tail,
        })
    }
}

/// A reader over the records of a [`WalScope`], every check of [`WalReader`] applied.
#[derive(Debug)]
pub struct ScopedReader {
    reader: Option<WalReader>,
    /// For a one-segment scope: the segment and the last LSN it can hold.
    file: Option<(PathBuf, Option<u64>)>,
    segments: Vec<(u64, PathBuf)>,
    node_id: Option<u64>,
    /// The caller's last LSN (inclusive), applied record by record.
    until: Option<u64>,
    /// A record past `until` was met: the scope ends.
    done: bool,
}

impl ScopedReader {
    /// Opens a reader over `scope` from `from` (0: the first record there) up to `until`
    /// (inclusive: of an atomic batch that straddles it, the records up to it are
    /// returned). Every segment must carry the node id of the first one.
    pub fn open(
        storage: &Arc<dyn Storage>,
        scope: &WalScope,
        from: u64,
        until: Option<u64>,
    ) -> Result<ScopedReader, duplex_wal::Error> {
        let all = duplex_wal::list_segments(&**storage, std::slice::from_ref(&scope.dir))?;
        let (segments, file) = match &scope.file {
            None => (all, None),
            Some(path) => {
                let i = all.iter().position(|(_, p)| p == path).ok_or_else(|| {
                    duplex_wal::Error::Io {
                        op: "find segment",
                        path: path.clone(),
                        source: std::io::ErrorKind::NotFound.into(),
                    }
                })?;
                let bound = all.get(i + 1).map(|(next, _)| next - 1);
                (vec![all[i].clone()], Some((path.clone(), bound)))
            }
        };
        let node_id = segments
            .first()
            .and_then(|(_, p)| segment_node_id(&**storage, p));
        let mut from = from;
        // The reader is bounded only by the segment of a one-segment scope; the caller's
        // bound is applied to the records it returns, so that a batch straddling it is
        // read whole.
        let mut bound = None;
        if let Some((_, b)) = &file {
            let first = segments.first().map(|s| s.0).unwrap_or(1);
            from = from.max(first);
            bound = *b;
        }
        let last = match (until, bound) {
            (Some(u), Some(b)) => Some(u.min(b)),
            (u, b) => u.or(b),
        };
        let empty = segments.is_empty() || last.is_some_and(|u| from > u && from > 0);
        let reader = if empty {
            None
        } else {
            Some(WalReader::open(
                storage.clone(),
                std::slice::from_ref(&scope.dir),
                from,
                ReadOptions {
                    max_record_size: MAX_RECORD_SIZE,
                    until_lsn: bound,
                    strict_tail: scope.strict_tail,
                    node_id,
                    timeline: None,
                    // The directory may be a running database's WAL: read, do not map.
                    map_segments: false,
                },
            )?)
        };
        Ok(ScopedReader {
            reader,
            file,
            segments,
            node_id,
            until,
            done: false,
        })
    }

    /// The next record, `None` at the end of the scope.
    pub fn next_record(&mut self) -> Result<Option<Record>, duplex_wal::Error> {
        let Some(reader) = self.reader.as_mut().filter(|_| !self.done) else {
            return Ok(None);
        };
        match reader.next_record() {
            Ok(Some(rec)) if self.until.is_some_and(|u| rec.lsn > u) => {
                self.done = true;
                Ok(None)
            }
            Err(e) => {
                // One segment's records were all read and checked to its end; what went
                // wrong is in the segment after it, outside the scope.
                if let Some((path, Some(bound))) = &self.file {
                    if reader.last_lsn() >= *bound && wal_error_file(&e).is_some_and(|f| f != path)
                    {
                        return Ok(None);
                    }
                }
                Err(e)
            }
            ok => ok,
        }
    }

    /// The segments in the scope, by first LSN.
    pub fn segments(&self) -> &[(u64, PathBuf)] {
        &self.segments
    }

    /// The node id in the first segment's header.
    pub fn node_id(&self) -> Option<u64> {
        self.node_id
    }

    /// Bytes of records (headers, payloads, padding) read so far.
    pub fn bytes_read(&self) -> u64 {
        self.reader.as_ref().map_or(0, |r| r.bytes_read())
    }

    /// The torn tail that ended the stream (never with a strict tail).
    pub fn torn_tail(&self) -> Option<&TornTail> {
        self.reader.as_ref().and_then(|r| r.torn_tail())
    }
}

/// Reads every record of `scope`, checking everything [`WalReader`] checks: a whole
/// directory through the engine's [`scan_wal_dir`], one segment through a
/// [`ScopedReader`] bounded to its LSNs.
pub fn scan_wal(
    storage: &Arc<dyn Storage>,
    scope: &WalScope,
) -> Result<WalSummary, duplex_wal::Error> {
    if scope.file.is_none() {
        return scan_wal_dir(storage, &scope.dir, scope.strict_tail);
    }
    let mut r = ScopedReader::open(storage, scope, 0, None)?;
    let mut s = WalSummary {
        segments: r.segments().len(),
        node_id: r.node_id(),
        ..WalSummary::default()
    };
    while let Some(rec) = r.next_record()? {
        s.add(&rec);
    }
    s.record_bytes = r.bytes_read();
    s.torn_tail = r.torn_tail().cloned();
    Ok(s)
}

/// The outcome of verifying one path.
#[derive(Debug, Clone)]
pub struct Report {
    /// The path given.
    pub path: PathBuf,
    /// What it is, once known.
    pub kind: Option<Kind>,
    /// What was checked and found good.
    pub facts: Vec<String>,
    /// Things the operator should know that are not failures.
    pub notes: Vec<String>,
    /// The failure, if any.
    pub error: Option<ToolError>,
}

impl Report {
    fn new(path: &Path) -> Self {
        Report {
            path: path.to_path_buf(),
            kind: None,
            facts: Vec::new(),
            notes: Vec::new(),
            error: None,
        }
    }

    /// The exit code this report calls for.
    pub fn code(&self) -> Code {
        self.error.as_ref().map_or(Code::Ok, |e| e.code)
    }
}

fn engine_err(e: duplex_engine::Error) -> ToolError {
    ToolError::new(verify_code(&e), e.to_string())
}

/// Words the engine's findings about one directory as report lines.
fn render(v: VerifyReport, report: &mut Report) -> Result<(), ToolError> {
    for c in &v.checked {
        match c {
            Checked::BackupFiles(m) => backup_facts(m, report),
            Checked::Manifest(m) => report.facts.push(format!(
                "MANIFEST decodes: node {}, generation {}, checkpoint LSN {}",
                m.node_id, m.generation, m.checkpoint_lsn
            )),
            Checked::Store(s) => report.facts.push(format!(
                "store {}: header, checkpoint and every tree block checked ({} entries, {})",
                s.file.display(),
                s.entries,
                human_bytes(s.committed_len)
            )),
            Checked::Increment { len, base_len } => report.facts.push(format!(
                "increment of {} on a base of {}",
                human_bytes(*len),
                human_bytes(*base_len)
            )),
            Checked::ChainLink { base_dir } => report.facts.push(format!(
                "chain link to {} checked: base length and CRC match, base + increment assemble to the recorded CRC",
                base_dir.display()
            )),
            Checked::Wal(s) => wal_facts(s, report),
        }
    }
    for n in &v.notes {
        report.notes.push(match n {
            Note::ChainNotChecked => format!(
                "its base backup was not given just before it, so the chain link was not checked: give the whole chain, oldest first (e.g. verify FULL INC1 {})",
                v.dir.display()
            ),
            Note::MaybeRunning => "verified read-only: if a database runs on this directory, its WAL tail was changing meanwhile".into(),
        });
    }
    match v.problem {
        Some(p) => Err(ToolError::new(problem_code(&p), p.to_string())),
        None => Ok(()),
    }
}

fn backup_facts(m: &BackupManifest, report: &mut Report) {
    let manifest = report.path.join(duplex_engine::backup::BACKUP_MANIFEST);
    if let Some(v) = duplex_engine::version_field(&duplex_wal::StdStorage, &manifest) {
        let f = duplex_engine::format_of_backup_manifest(v);
        report.facts.push(format!(
            "manifest version {v}: {}",
            duplex_engine::describe_format(f)
        ));
    }
    report.facts.push(format!(
        "{} backup of node {} timeline {} (its archive: n{}-t{}), generation {}, checkpoint LSN {} (roll forward from LSN {}), taken {}",
        if m.is_incremental() { "incremental" } else { "full" },
        m.node_id,
        m.timeline,
        m.node_id,
        m.timeline,
        m.generation,
        m.checkpoint_lsn,
        m.checkpoint_lsn + 1,
        format_time_ms(m.created_ms)
    ));
    report.facts.push(format!(
        "{} files checked (length and CRC32C): {}",
        m.files.len(),
        m.files
            .iter()
            .map(|f| format!("{} {}", f.name, human_bytes(f.len)))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    if m.end_lsn > m.checkpoint_lsn {
        report.facts.push(format!(
            "its WAL, LSN {} to {}: every record whole and of node {}; the backup restores on its own to LSN {}",
            m.checkpoint_lsn + 1,
            m.end_lsn,
            m.node_id,
            m.end_lsn
        ));
    } else {
        report.facts.push(format!(
            "no WAL after its checkpoint: the backup restores on its own to LSN {}",
            m.end_lsn
        ));
    }
}

fn wal_facts(s: &WalSummary, report: &mut Report) {
    match (s.first_lsn, s.last_lsn) {
        (Some(first), Some(last)) => report.facts.push(format!(
            "{} segment(s) of node {}, LSN {first} to {last}: {} records, {} of records ({} of payload); every header, CRC and LSN checked, no gap",
            s.segments,
            s.node_id.map_or_else(|| "?".to_owned(), |n| n.to_string()),
            s.records,
            human_bytes(s.record_bytes),
            human_bytes(s.payload_bytes)
        )),
        _ => report.facts.push(format!(
            "{} segment(s), no records; every header checked",
            s.segments
        )),
    }
    for f in &s.formats {
        report.facts.push(format!(
            "segments of {}",
            duplex_engine::describe_format(*f)
        ));
    }
    if let Some(t) = &s.torn_tail {
        report.notes.push(format!(
            "the log ends in a torn tail in {} at offset {} ({}): what a crash leaves; the database cuts it when it opens",
            t.file.display(),
            t.offset,
            t.kind
        ));
    }
}

/// Verifies every path, in order. Consecutive backup directories are checked as a chain
/// (each incremental against the backup just before it). When backups and WAL archives are
/// given together, each backup's lineage must be one the archives hold a history of.
pub fn verify_paths(storage: &Arc<dyn Storage>, paths: &[PathBuf]) -> Vec<Report> {
    let mut reports = Vec::with_capacity(paths.len());
    let mut prev: Option<(PathBuf, BackupManifest)> = None;
    // Verified backups (report index, manifest) and archives (their histories).
    let mut backups: Vec<(usize, BackupManifest)> = Vec::new();
    let mut archives: Vec<(PathBuf, ArchiveReport)> = Vec::new();
    for path in paths {
        let mut report = Report::new(path);
        let res = identify(path).and_then(|kind| {
            report.kind = Some(kind.clone());
            match kind {
                Kind::Backup => {
                    let before = prev.take();
                    let v = verify_backup_dir(
                        storage,
                        path,
                        before.as_ref().map(|(d, m)| (d.as_path(), m)),
                    );
                    if let (true, Some(m)) = (v.is_ok(), v.backup_manifest()) {
                        prev = Some((path.clone(), m.clone()));
                        backups.push((reports.len(), m.clone()));
                    }
                    render(v, &mut report)
                }
                Kind::DataDir => {
                    prev = None;
                    render(verify_data_dir(storage, path), &mut report)?;
                    state_facts(path, &mut report)
                }
                Kind::WalDir { live: false } if has_lineage_dirs(path) => {
                    prev = None;
                    let a = verify_archive(storage, path, &mut report)?;
                    archives.push((path.clone(), a));
                    Ok(())
                }
                Kind::WalDir { .. } | Kind::Segment => {
                    prev = None;
                    let scope = WalScope::for_path(path, &kind)?;
                    let s = scan_wal(storage, &scope).map_err(ToolError::from)?;
                    wal_facts(&s, &mut report);
                    if let Some(f) = &scope.file {
                        report.notes.push(format!(
                            "only {} was read (its records, to its end)",
                            f.display()
                        ));
                    } else if kind == (Kind::WalDir { live: false }) {
                        // A flat archive, or one lineage's directory: one history too.
                        let a = duplex_wal::check_archive(storage.clone(), path)
                            .map_err(ToolError::from)?;
                        archives.push((path.clone(), a));
                    }
                    Ok(())
                }
            }
        });
        if let Err(e) = res {
            if !matches!(report.kind, Some(Kind::Backup)) {
                prev = None;
            }
            report.error = Some(e);
        }
        reports.push(report);
    }
    check_lineages(&backups, &archives, &mut reports);
    reports
}

/// The Duplex formats of the segment files (complete and partial) directly in `dir`.
fn segment_formats(storage: &dyn Storage, dir: &Path) -> std::collections::BTreeSet<u32> {
    let Ok(names) = storage.list(dir) else {
        return Default::default();
    };
    names
        .iter()
        .filter(|n| n.ends_with(".wal") || n.ends_with(".wal.partial"))
        .filter_map(|n| duplex_engine::version_field(storage, &dir.join(n)))
        .map(duplex_engine::format_of_segment)
        .collect()
}

/// Checks an archive root with [`duplex_wal::check_archive`]: one history (one node, one
/// timeline, contiguous LSNs, every record intact) per lineage directory; a fact per
/// lineage found.
fn verify_archive(
    storage: &Arc<dyn Storage>,
    root: &Path,
    report: &mut Report,
) -> Result<ArchiveReport, ToolError> {
    let a = duplex_wal::check_archive(storage.clone(), root).map_err(ToolError::from)?;
    for h in &a.histories {
        let timelines: Vec<String> = h.timelines.iter().map(u64::to_string).collect();
        report.facts.push(format!(
            "{}: one history of node {}, timeline {}, {} segment(s), LSN {} to {}; every header, CRC and LSN checked, no gap{}",
            h.dir.display(),
            h.node_id,
            timelines.join(" then "),
            h.segments,
            h.first_lsn,
            h.last_lsn,
            h.partial.as_ref().map_or_else(String::new, |p| format!(
                " (the last one, {}, is the partial copy of the segment being written)",
                p.file_name().unwrap_or_default().to_string_lossy()
            ))
        ));
        for f in segment_formats(&**storage, &h.dir) {
            report
                .facts
                .push(format!("segments of {}", duplex_engine::describe_format(f)));
        }
    }
    if a.histories.is_empty() {
        report
            .facts
            .push("no segments in any lineage directory yet".into());
    }
    Ok(a)
}

/// The STATE file of a verified data directory, if it has one.
fn state_facts(dir: &Path, report: &mut Report) -> Result<(), ToolError> {
    if let Some(s) = crate::state::check_state_file(dir)? {
        report.facts.push(format!(
            "{} decodes: {}, fencing epoch {}, node {}, set {}",
            dir.join(crate::state::STATE_FILE).display(),
            s.state,
            s.epoch,
            s.node_id,
            format_time_ms(s.updated_ms)
        ));
    }
    Ok(())
}

/// When backups and archives were verified together: each backup's lineage (node,
/// timeline) must have a history in one of the archives, else the archive given cannot
/// continue it (it is another server's, or another timeline's: the original's archive for
/// a restored copy's backup, or the other way round). A failure goes on the backup's
/// report.
fn check_lineages(
    backups: &[(usize, BackupManifest)],
    archives: &[(PathBuf, ArchiveReport)],
    reports: &mut [Report],
) {
    if archives.is_empty() {
        return;
    }
    let found: Vec<String> = archives
        .iter()
        .flat_map(|(_, a)| a.histories.iter())
        .map(|h| {
            let t: Vec<String> = h.timelines.iter().map(u64::to_string).collect();
            format!("node {} timeline {}", h.node_id, t.join("+"))
        })
        .collect();
    for (i, m) in backups {
        let matches = archives.iter().any(|(_, a)| {
            a.histories
                .iter()
                .any(|h| h.node_id == m.node_id && h.timelines.contains(&m.timeline))
        });
        let Some(report) = reports.get_mut(*i) else {
            continue;
        };
        if matches {
            report.facts.push(format!(
                "its lineage (node {} timeline {}) has a history in the archive given",
                m.node_id, m.timeline
            ));
        } else if report.error.is_none() {
            report.error = Some(ToolError::damaged(format!(
                "the backup is of node {} timeline {}, but the archive given holds {}: it cannot continue this backup (give the archive root that holds n{}-t{}, or restore without --archive to the backup's own end LSN {})",
                m.node_id,
                m.timeline,
                if found.is_empty() { "no history".to_owned() } else { found.join(", ") },
                m.node_id,
                m.timeline,
                m.end_lsn
            )));
        }
    }
}

/// Reads the `BACKUP` manifests of a chain (oldest first) and checks the links between them
/// without reading the files: cheap, to refuse a wrong chain before a long restore.
pub fn check_chain_links(
    storage: &dyn Storage,
    chain: &[PathBuf],
) -> Result<Vec<BackupManifest>, ToolError> {
    let mut ms: Vec<BackupManifest> = Vec::with_capacity(chain.len());
    for dir in chain {
        if !dir.join(BACKUP_MANIFEST).is_file() {
            return Err(ToolError::usage(format!(
                "{} is not a backup directory (it has no {} file)",
                dir.display(),
                BACKUP_MANIFEST
            )));
        }
        let m = read_backup_manifest(storage, dir).map_err(engine_err)?;
        match ms.last() {
            None if m.is_incremental() => {
                return Err(ToolError::usage(format!(
                    "{} is an incremental backup: a chain starts with a full backup (give --backup FULL --backup INC1 ..., oldest first)",
                    dir.display()
                )))
            }
            Some(p)
                if !m.is_incremental()
                    || m.node_id != p.node_id
                    || m.generation != p.generation
                    || m.base_len != p.committed_len
                    || m.base_crc != p.store_crc =>
            {
                return Err(ToolError::damaged(format!(
                    "{} does not continue the chain (its base is {} bytes with CRC {:#010x}; the backup before it has {} bytes with CRC {:#010x}): give the chain oldest first, each incremental after its base",
                    dir.display(),
                    m.base_len,
                    m.base_crc,
                    p.committed_len,
                    p.store_crc
                )))
            }
            _ => {}
        }
        ms.push(m);
    }
    Ok(ms)
}
