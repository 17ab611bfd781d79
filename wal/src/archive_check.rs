//! Verification of an archive: that each directory holds one history.
//!
//! A history is the segments of one node, in one timeline or a sequence of timelines
//! rising with the LSNs (a flat archive continued after a restore), with contiguous LSNs,
//! every record readable (CRC, LSN, whole batches), a `.partial` only as its last segment.
//! A lineage subdirectory (`n<node>-t<timeline>`) must hold that node and timeline only.
//! [`check_archive`] reads every record; it is what `duplex-recover verify` runs on an
//! archive.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::archive::{is_partial, parse_archive_subdir};
use crate::error::{Error, Result};
use crate::format::{SegmentHeader, SEGMENT_HEADER_LEN};
use crate::reader::{list_dir_segments, ReadOptions, WalReader};
use crate::storage::{OpenMode, Storage};

/// What [`check_archive`] found: one history per directory that holds segments.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ArchiveReport {
    /// The histories, the root's own (flat) first if it has one, then its lineage
    /// subdirectories by name.
    pub histories: Vec<ArchiveHistory>,
}

/// One directory's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveHistory {
    /// The directory.
    pub dir: PathBuf,
    /// The node that wrote every segment.
    pub node_id: u64,
    /// The timelines met, in LSN order (one, unless a flat archive was continued after a
    /// restore).
    pub timelines: Vec<u64>,
    /// Segment files read (complete and partial).
    pub segments: usize,
    /// The last segment when it is a `.partial` (the segment being written when it was
    /// copied, or at the last clean stop).
    pub partial: Option<PathBuf>,
    /// LSN of the first record.
    pub first_lsn: u64,
    /// LSN of the last record; `first_lsn - 1` if there is none.
    pub last_lsn: u64,
}

/// Checks that `dir` (an archive root or one lineage subdirectory) holds one history per
/// directory: one node, timelines rising with the LSNs, contiguous LSNs, every record
/// intact, and in a lineage subdirectory only its own node and timeline. Fails with
/// [`Error::ArchiveLineage`] for a mixed history, the reader's errors ([`Error::Corrupt`],
/// [`Error::Gap`]) for damage.
pub fn check_archive(storage: Arc<dyn Storage>, dir: &Path) -> Result<ArchiveReport> {
    let names = storage
        .list(dir)
        .map_err(|e| Error::io("list directory", dir, e))?;
    let mut lineages: Vec<(String, (u64, u64))> = names
        .iter()
        .filter_map(|n| parse_archive_subdir(n).map(|l| (n.clone(), l)))
        .collect();
    lineages.sort();
    let mut report = ArchiveReport::default();
    if let Some(h) = check_history(&storage, dir, None)? {
        report.histories.push(h);
    }
    for (name, lineage) in lineages {
        if let Some(h) = check_history(&storage, &dir.join(name), Some(lineage))? {
            report.histories.push(h);
        }
    }
    Ok(report)
}

/// Checks the segments directly in `dir` (none: `None`), which must be of `lineage` when
/// given.
fn check_history(
    storage: &Arc<dyn Storage>,
    dir: &Path,
    lineage: Option<(u64, u64)>,
) -> Result<Option<ArchiveHistory>> {
    // `dir` read flat: the root's subdirectories are checked on their own.
    let segs = list_dir_segments(&**storage, dir)?;
    let Some((first, _)) = segs.first().cloned() else {
        return Ok(None);
    };
    let mixed = |detail: String| Error::ArchiveLineage {
        dir: dir.to_path_buf(),
        detail,
    };
    let mut node = None;
    let mut timelines: Vec<u64> = Vec::new();
    for (_, path) in &segs {
        let Some(h) = header_of(&**storage, path)? else {
            continue;
        };
        if let Some((n, t)) = lineage {
            if (h.node_id, h.timeline) != (n, t) {
                return Err(mixed(format!(
                    "{} belongs to node {} timeline {}, but the directory is that of node {n} timeline {t}",
                    path.display(),
                    h.node_id,
                    h.timeline
                )));
            }
        }
        match node {
            Some(n) if n != h.node_id => {
                return Err(mixed(format!(
                    "{} belongs to node {}, the segments before it to node {n}",
                    path.display(),
                    h.node_id
                )))
            }
            _ => node = Some(h.node_id),
        }
        match timelines.last() {
            Some(&t) if h.timeline < t => {
                return Err(mixed(format!(
                    "{} is of timeline {}, after segments of timeline {t} (timelines only rise)",
                    path.display(),
                    h.timeline
                )))
            }
            Some(&t) if h.timeline == t => {}
            _ => timelines.push(h.timeline),
        }
    }
    // Lineage first (the graver finding), then the place of partial copies.
    if let Some((_, path)) = segs[..segs.len() - 1].iter().find(|(_, p)| is_partial(p)) {
        return Err(mixed(format!(
            "{} is a partial copy but later segments follow it (a copy was interrupted; re-run the archiver of that log, or move the partial aside if the complete segment is elsewhere)",
            path.display()
        )));
    }
    let mut reader = WalReader::over_segments(
        storage.clone(),
        segs.clone(),
        first,
        ReadOptions {
            strict_tail: true,
            node_id: node,
            max_record_size: crate::format::MAX_RECORD_SIZE_LIMIT,
            ..ReadOptions::default()
        },
    )?;
    while reader.next_record()?.is_some() {}
    Ok(Some(ArchiveHistory {
        dir: dir.to_path_buf(),
        node_id: node.unwrap_or(0),
        timelines,
        segments: segs.len(),
        partial: segs.last().map(|s| s.1.clone()).filter(|p| is_partial(p)),
        first_lsn: first,
        last_lsn: reader.last_lsn(),
    }))
}

/// The header of a segment file; `None` for a partial too short to hold one (created, not
/// yet written).
fn header_of(storage: &dyn Storage, path: &Path) -> Result<Option<SegmentHeader>> {
    let f = storage
        .open(path, OpenMode::Read)
        .map_err(|e| Error::io("open", path, e))?;
    let len = f.len().map_err(|e| Error::io("stat", path, e))?;
    if len < SEGMENT_HEADER_LEN && is_partial(path) {
        return Ok(None);
    }
    let mut b = [0u8; SEGMENT_HEADER_LEN as usize];
    f.read_exact_at(&mut b, 0)
        .map_err(|e| Error::io("read", path, e))?;
    SegmentHeader::decode(&b)
        .map(Some)
        .map_err(|kind| Error::Corrupt {
            file: path.to_path_buf(),
            offset: 0,
            kind,
        })
}
