//! Verification of backups, backup chains, WAL archives, segments and data directories.
//!
//! Every check reads; none writes. Results are [`Report`]s (facts, notes and at most one
//! failure per path) rather than errors, so that one damaged path does not hide the state
//! of the others.
//!
//! What is checked, by kind:
//! - a backup: the `BACKUP` manifest's own CRC, every file's presence, length and CRC32C
//!   ([`duplex_engine::verify_backup`]), that the engine `MANIFEST` inside agrees with it; for
//!   a full backup also the store header and every block of the tree from the checkpoint's
//!   root (each block's CRC, key order, the entry count the checkpoint records); for an
//!   incremental backup that directly follows its base on the command line, the chain link
//!   (node, generation, base length and CRC) and that base + increment assemble to the CRC
//!   the increment records;
//! - a WAL archive or segment: every segment header, every record CRC, consecutive LSNs
//!   within and across segments (a missing segment is a gap), complete batches, one node id
//!   throughout, and (strict tail) that the last segment ends cleanly;
//! - a data directory: its `MANIFEST`, store header, checkpoint and tree as for a full
//!   backup, and its `wal/` as for an archive except that a torn tail of the last segment
//!   (what a crash leaves, cut by the next open) is a note, not a failure; and that the WAL
//!   reaches back to the checkpoint. A running database's directory can be verified (the
//!   store below its committed length never changes), but the WAL tail moves meanwhile.

use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use duplex_engine::backup::read_backup_manifest;
use duplex_engine::format::{StoreHeader, FILE_HEADER_LEN};
use duplex_engine::store::{open_store_readonly, read_manifest};
use duplex_engine::tree::TreeView;
use duplex_engine::BackupManifest;
use duplex_wal::format::{parse_segment_file_name, SegmentHeader, SEGMENT_HEADER_LEN};
use duplex_wal::{OpenMode, ReadOptions, Record, Storage, TornTail, WalReader};

use crate::exit::{verify_code, Code, ToolError};
use crate::identify::{identify, wal_dir_of, Kind};
use crate::text::{format_time_ms, human_bytes};

/// Largest record the engine can ever have written (largest key and value a configuration
/// allows, plus headers): reading with this limit accepts every valid log.
pub const MAX_ENGINE_RECORD: u32 = (256 << 20) + (64 << 10) + (1 << 20);
/// Largest key a configuration allows.
pub const MAX_KEY: usize = u16::MAX as usize;
/// Largest value a configuration allows.
pub const MAX_VALUE: usize = 256 << 20;

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

/// Reads the header of a segment file, if it decodes.
fn segment_header(storage: &dyn Storage, path: &Path) -> Option<SegmentHeader> {
    let f = storage.open(path, OpenMode::Read).ok()?;
    let mut b = [0u8; SEGMENT_HEADER_LEN as usize];
    f.read_exact_at(&mut b, 0).ok()?;
    SegmentHeader::decode(&b).ok()
}

/// The file an error of the WAL is about, if it names one.
fn error_file(e: &duplex_wal::Error) -> Option<&Path> {
    match e {
        duplex_wal::Error::Corrupt { file, .. } => Some(file),
        duplex_wal::Error::Gap { next_file, .. } => Some(next_file),
        duplex_wal::Error::NodeMismatch { file, .. } => Some(file),
        duplex_wal::Error::Io { path, .. } => Some(path),
        _ => None,
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
}

impl ScopedReader {
    /// Opens a reader over `scope` from `from` (0: the first record there) up to `until`
    /// (inclusive). Every segment must carry the node id of the first one.
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
            .and_then(|(_, p)| segment_header(&**storage, p))
            .map(|h| h.node_id);
        let mut from = from;
        let mut until = until;
        if let Some((_, bound)) = &file {
            let first = segments.first().map(|s| s.0).unwrap_or(1);
            from = from.max(first);
            until = match (until, bound) {
                (Some(u), Some(b)) => Some(u.min(*b)),
                (u, b) => u.or(*b),
            };
        }
        let empty = segments.is_empty() || until.is_some_and(|u| from > u && from > 0);
        let reader = if empty {
            None
        } else {
            Some(WalReader::open(
                storage.clone(),
                std::slice::from_ref(&scope.dir),
                from,
                ReadOptions {
                    max_record_size: MAX_ENGINE_RECORD,
                    until_lsn: until,
                    strict_tail: scope.strict_tail,
                    node_id,
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
        })
    }

    /// The next record, `None` at the end of the scope.
    pub fn next_record(&mut self) -> Result<Option<Record>, duplex_wal::Error> {
        let Some(reader) = self.reader.as_mut() else {
            return Ok(None);
        };
        match reader.next_record() {
            Err(e) => {
                // One segment's records were all read and checked to its end; what went
                // wrong is in the segment after it, outside the scope.
                if let Some((path, Some(bound))) = &self.file {
                    if reader.last_lsn() >= *bound && error_file(&e).is_some_and(|f| f != path) {
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

/// Reads every record of `scope`, checking everything [`WalReader`] checks.
pub fn scan_wal(
    storage: &Arc<dyn Storage>,
    scope: &WalScope,
) -> Result<WalSummary, duplex_wal::Error> {
    let mut r = ScopedReader::open(storage, scope, 0, None)?;
    let mut s = WalSummary {
        segments: r.segments().len(),
        node_id: r.node_id(),
        ..WalSummary::default()
    };
    while let Some(rec) = r.next_record()? {
        s.first_lsn.get_or_insert(rec.lsn);
        s.last_lsn = Some(rec.lsn);
        s.records += 1;
        s.payload_bytes += rec.payload.len() as u64;
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

/// Walks every entry of the tree a view shows (checking each block's CRC on the way) and
/// compares the count with what the checkpoint records. Returns the count.
fn walk_tree(view: TreeView, what: &Path) -> Result<u64, ToolError> {
    let expected = view.ckpt.entries;
    let view = Arc::new(view);
    let mut cursor = view.cursor(Bound::Unbounded).map_err(engine_err)?;
    let mut count = 0u64;
    let mut prev: Option<Vec<u8>> = None;
    while let Some((key, _)) = cursor.next_entry().map_err(engine_err)? {
        if prev.as_ref().is_some_and(|p| *p >= key) {
            return Err(ToolError::damaged(format!(
                "the tree in {} has keys out of order after entry {count} (restore this node from a backup plus archive, or rebuild it from a peer)",
                what.display()
            )));
        }
        prev = Some(key);
        count += 1;
    }
    if count != expected {
        return Err(ToolError::damaged(format!(
            "the checkpoint in {} records {expected} tree entries but the tree holds {count} (restore from a backup plus archive, or rebuild from a peer)",
            what.display()
        )));
    }
    Ok(count)
}

/// Checks the store header of a directory's store file against its manifest, then the
/// checkpoint and the whole tree. Returns a fact line.
fn check_store(
    storage: &Arc<dyn Storage>,
    dir: &Path,
    m: &duplex_engine::format::Manifest,
) -> Result<String, ToolError> {
    let path = dir.join(duplex_engine::format::store_file_name(m.generation));
    let f = storage.open(&path, OpenMode::Read).map_err(|e| {
        ToolError::new(
            if e.kind() == std::io::ErrorKind::NotFound {
                Code::Damaged
            } else {
                Code::Operational
            },
            format!("cannot open the store file {}: {e}", path.display()),
        )
    })?;
    let mut hb = [0u8; FILE_HEADER_LEN];
    f.read_exact_at(&mut hb, 0).map_err(|e| {
        ToolError::damaged(format!("cannot read the header of {}: {e}", path.display()))
    })?;
    let h = StoreHeader::decode(&hb).map_err(|k| {
        ToolError::damaged(format!(
            "the store header of {} is damaged: {k}",
            path.display()
        ))
    })?;
    if h.node_id != m.node_id || h.generation != m.generation {
        return Err(ToolError::damaged(format!(
            "the store header of {} says node {} generation {}, the manifest node {} generation {}",
            path.display(),
            h.node_id,
            h.generation,
            m.node_id,
            m.generation
        )));
    }
    let view = open_store_readonly(storage, dir, m).map_err(engine_err)?;
    if view.ckpt.lsn != m.checkpoint_lsn {
        return Err(ToolError::damaged(format!(
            "the checkpoint in {} covers LSN {}, the manifest says {}",
            path.display(),
            view.ckpt.lsn,
            m.checkpoint_lsn
        )));
    }
    let entries = walk_tree(view, &path)?;
    Ok(format!(
        "store {}: header, checkpoint and every tree block checked ({entries} entries, {})",
        path.display(),
        human_bytes(m.committed_len)
    ))
}

/// Verifies one backup directory. `prev` is the backup given just before it on the command
/// line (already verified), against which an incremental backup's chain link is checked.
pub fn verify_backup_dir(
    storage: &Arc<dyn Storage>,
    dir: &Path,
    prev: Option<&(PathBuf, BackupManifest)>,
    report: &mut Report,
) -> Result<BackupManifest, ToolError> {
    let m = duplex_engine::verify_backup(&**storage, dir).map_err(engine_err)?;
    report.facts.push(format!(
        "{} backup of node {}, generation {}, checkpoint LSN {} (roll forward from LSN {}), taken {}",
        if m.is_incremental() { "incremental" } else { "full" },
        m.node_id,
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
    let em = read_manifest(&**storage, dir).map_err(engine_err)?;
    if em != Some(m.engine_manifest()) {
        return Err(ToolError::damaged(format!(
            "{} does not agree with {} in {}: the backup is inconsistent",
            duplex_engine::store::MANIFEST_NAME,
            duplex_engine::backup::BACKUP_MANIFEST,
            dir.display()
        )));
    }
    let part_name = m.store_part_name();
    let part = m
        .files
        .iter()
        .find(|f| f.name == part_name)
        .ok_or_else(|| ToolError::damaged(format!("{} lists no store file", dir.display())))?;
    if !m.is_incremental() {
        if part.len != m.committed_len || part.crc != m.store_crc {
            return Err(ToolError::damaged(format!(
                "{} in {} does not match the store length and CRC the manifest records",
                part.name,
                dir.display()
            )));
        }
        report
            .facts
            .push(check_store(storage, dir, &m.engine_manifest())?);
        return Ok(m);
    }
    report.facts.push(format!(
        "increment of {} on a base of {}",
        human_bytes(part.len),
        human_bytes(m.base_len)
    ));
    let Some((pdir, pm)) = prev else {
        report.notes.push(format!(
            "its base backup was not given just before it, so the chain link was not checked: give the whole chain, oldest first (e.g. verify FULL INC1 {})",
            dir.display()
        ));
        return Ok(m);
    };
    let assembled = crc32c::crc32c_combine(pm.store_crc, part.crc, part.len as usize);
    if pm.node_id != m.node_id
        || pm.generation != m.generation
        || m.base_len != pm.committed_len
        || m.base_crc != pm.store_crc
        || m.committed_len != m.base_len + part.len
        || assembled != m.store_crc
    {
        return Err(ToolError::damaged(format!(
            "{} does not continue the chain after {}: its base is node {} generation {}, {} bytes with CRC {:#010x}; the previous backup is node {} generation {}, {} bytes with CRC {:#010x} (give the chain oldest first, or find the right base backup)",
            dir.display(),
            pdir.display(),
            m.node_id,
            m.generation,
            m.base_len,
            m.base_crc,
            pm.node_id,
            pm.generation,
            pm.committed_len,
            pm.store_crc
        )));
    }
    report.facts.push(format!(
        "chain link to {} checked: base length and CRC match, base + increment assemble to the recorded CRC",
        pdir.display()
    ));
    Ok(m)
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
    if let Some(t) = &s.torn_tail {
        report.notes.push(format!(
            "the log ends in a torn tail in {} at offset {} ({}): what a crash leaves; the database cuts it when it opens",
            t.file.display(),
            t.offset,
            t.kind
        ));
    }
}

fn verify_data_dir(
    storage: &Arc<dyn Storage>,
    dir: &Path,
    report: &mut Report,
) -> Result<(), ToolError> {
    let m = read_manifest(&**storage, dir)
        .map_err(engine_err)?
        .ok_or_else(|| ToolError::damaged(format!("{} has no MANIFEST", dir.display())))?;
    report.facts.push(format!(
        "MANIFEST decodes: node {}, generation {}, checkpoint LSN {}",
        m.node_id, m.generation, m.checkpoint_lsn
    ));
    report.facts.push(check_store(storage, dir, &m)?);
    let scope = WalScope::for_path(dir, &Kind::DataDir)?;
    let s = scan_wal(storage, &scope).map_err(ToolError::from)?;
    wal_facts(&s, report);
    if s.node_id.is_some_and(|n| n != m.node_id) {
        return Err(ToolError::damaged(format!(
            "the WAL in {} belongs to node {:?}, the database to node {}",
            scope.dir.display(),
            s.node_id,
            m.node_id
        )));
    }
    let first_seg = duplex_wal::list_segments(&**storage, std::slice::from_ref(&scope.dir))?
        .first()
        .map(|s| s.0);
    match first_seg {
        None if m.checkpoint_lsn > 0 => {
            return Err(ToolError::damaged(format!(
                "{} holds no WAL segment although the store has a checkpoint at LSN {}: the log was lost (restore from a backup plus archive)",
                scope.dir.display(),
                m.checkpoint_lsn
            )))
        }
        Some(first) if first > m.checkpoint_lsn + 1 => {
            return Err(ToolError::damaged(format!(
                "the WAL in {} starts at LSN {first}, after the checkpoint's LSN {}: records {} to {} are lost (restore from a backup plus archive)",
                scope.dir.display(),
                m.checkpoint_lsn,
                m.checkpoint_lsn + 1,
                first - 1
            )))
        }
        _ => {}
    }
    if s.last_lsn.unwrap_or(0) < m.checkpoint_lsn && first_seg.is_some() {
        return Err(ToolError::damaged(format!(
            "the WAL in {} ends at LSN {} before the checkpoint's LSN {} (segments were lost)",
            scope.dir.display(),
            s.last_lsn.unwrap_or(0),
            m.checkpoint_lsn
        )));
    }
    report.notes.push(
        "verified read-only: if a database runs on this directory, its WAL tail was changing meanwhile".into(),
    );
    Ok(())
}

/// Verifies every path, in order. Consecutive backup directories are checked as a chain
/// (each incremental against the backup just before it).
pub fn verify_paths(storage: &Arc<dyn Storage>, paths: &[PathBuf]) -> Vec<Report> {
    let mut reports = Vec::with_capacity(paths.len());
    let mut prev: Option<(PathBuf, BackupManifest)> = None;
    for path in paths {
        let mut report = Report::new(path);
        let res = identify(path).and_then(|kind| {
            report.kind = Some(kind.clone());
            match kind {
                Kind::Backup => {
                    let before = prev.take();
                    let m = verify_backup_dir(storage, path, before.as_ref(), &mut report);
                    if let Ok(m) = &m {
                        prev = Some((path.clone(), m.clone()));
                    }
                    m.map(|_| ())
                }
                Kind::DataDir => {
                    prev = None;
                    verify_data_dir(storage, path, &mut report)
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
    reports
}

/// Reads the `BACKUP` manifests of a chain (oldest first) and checks the links between them
/// without reading the files: cheap, to refuse a wrong chain before a long restore.
pub fn check_chain_links(
    storage: &dyn Storage,
    chain: &[PathBuf],
) -> Result<Vec<BackupManifest>, ToolError> {
    let mut ms: Vec<BackupManifest> = Vec::with_capacity(chain.len());
    for dir in chain {
        if !dir.join(duplex_engine::backup::BACKUP_MANIFEST).is_file() {
            return Err(ToolError::usage(format!(
                "{} is not a backup directory (it has no {} file)",
                dir.display(),
                duplex_engine::backup::BACKUP_MANIFEST
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
