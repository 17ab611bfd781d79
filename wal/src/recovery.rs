//! Recovery at open: scanning the segments of a directory, classifying how the last one
//! ends, cutting a torn tail, and the report of what was found and repaired.
//!
//! Invariants kept here:
//! - segments are checked in LSN order: each header must name the LSN its file name does,
//!   carry this node's id, and start right after the previous segment's last record;
//! - only the last segment may end in a torn tail, and only a torn tail (or, with
//!   [`RecoveryMode::TruncateCorruptTail`], corruption in the last segment, after a
//!   `.broken` copy is kept) is cut; anything else is refused with file and offset;
//! - a cut is made durable by overwriting the cut bytes with zeros and fsyncing, so no later
//!   reader can see them again;
//! - a last segment whose header never reached the disk held nothing: it is removed, and
//!   so is a segment whose creation never finished (`<name>.tmp`, module `rotation`).
//!
//! How a segment's records stop (clean end, torn tail, corruption) is decided by
//! [`crate::segment`], the one classification shared with readers.

use std::path::{Path, PathBuf};

use crate::archive::archive_subdir;
use crate::error::{CorruptKind, Error, Result};
use crate::format::{parse_segment_file_name, SegmentHeader};
use crate::options::{RecoveryMode, WalOptions};
use crate::rotation::CREATING_SUFFIX;
use crate::segment::{header_never_written, scan_segment, SegmentScan, Tail};
use crate::storage::{OpenMode, Storage};

/// What opening the log found and repaired.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segments found.
    pub segments: usize,
    /// LSN of the first record the log holds (or will hold).
    pub first_lsn: u64,
    /// LSN of the last record recovered; `first_lsn - 1` when the log is empty.
    pub last_lsn: u64,
    /// The tail that was cut, if any.
    pub truncated: Option<Truncation>,
    /// Segment files removed because their header was never completely written, or their
    /// creation never finished (`<name>.tmp`, left by a crash or a failed creation).
    pub removed_segments: Vec<PathBuf>,
}

/// A cut made at open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truncation {
    /// The segment that was cut.
    pub file: PathBuf,
    /// Offset of the cut; records from here on are gone.
    pub offset: u64,
    /// Non-zero bytes cut away.
    pub bytes: u64,
    /// What was wrong at the cut.
    pub reason: CorruptKind,
    /// Copy of the segment kept before cutting corruption (not for a plain torn tail).
    pub broken_copy: Option<PathBuf>,
}

/// Description of one segment of the log. Recovery builds the list at open; the writer
/// keeps it up to date as segments are created, closed, archived and removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    /// The segment file.
    pub path: PathBuf,
    /// LSN of its first record.
    pub first_lsn: u64,
    /// LSN of its last record; `None` while it is being written or if it is empty.
    pub last_lsn: Option<u64>,
    /// Bytes of header and records (the logical end; the file may be pre-allocated longer).
    pub end_offset: u64,
    /// True once the segment is complete and fsynced: no record will be added.
    pub closed: bool,
    /// True once a copy is in the archive directory.
    pub archived: bool,
}

/// Scans every segment in `dir`, checks continuity, and cuts a torn tail.
pub(crate) fn recover(
    storage: &dyn Storage,
    dir: &Path,
    opts: &WalOptions,
) -> Result<(Vec<SegmentInfo>, RecoveryReport)> {
    let names = segment_names(storage, dir)?;
    let mut report = RecoveryReport {
        segments: names.len(),
        removed_segments: remove_unfinished(storage, dir)?,
        ..RecoveryReport::default()
    };
    let mut list: Vec<SegmentInfo> = Vec::new();
    let count = names.len();
    for (i, (name_lsn, name)) in names.into_iter().enumerate() {
        let path = dir.join(&name);
        let is_last = i + 1 == count;
        let scan = match scan_segment(storage, &path, opts.max_record_size) {
            Err(Error::Corrupt { offset: 0, .. })
                if is_last && header_never_written(storage, &path)? =>
            {
                // Created but its header never reached the disk: nothing was ever in it.
                remove_headerless(storage, dir, &path)?;
                report.removed_segments.push(path);
                break;
            }
            r => r?,
        };
        check_header(&scan.header, name_lsn, &path, opts, list.last())?;
        check_length(&scan, &path)?;
        if let Some(cut) = settle_tail(storage, dir, &path, &scan, is_last, opts)? {
            report.truncated = Some(cut);
        }
        let archived = match &opts.archive_dir {
            // In the lineage's subdirectory, or flat in the root (an older build's layout).
            Some(root) => {
                let h = &scan.header;
                storage.exists(&archive_subdir(root, h.node_id, h.timeline).join(&name))
                    || storage.exists(&root.join(&name))
            }
            None => false,
        };
        list.push(SegmentInfo {
            path,
            first_lsn: scan.header.first_lsn,
            last_lsn: scan.last_lsn,
            end_offset: scan.end,
            closed: !is_last,
            archived,
        });
    }
    if let Some(last) = list.last_mut() {
        // The segment removed as torn (if any) was after this one; this is now the tail.
        last.closed = false;
        last.archived = false;
    }
    report.segments = list.len();
    report.first_lsn = list
        .first()
        .map(|s| s.first_lsn)
        .unwrap_or(opts.initial_lsn);
    report.last_lsn = list
        .last()
        .map(|s| s.last_lsn.unwrap_or(s.first_lsn - 1))
        .unwrap_or(opts.initial_lsn - 1);
    Ok((list, report))
}

/// The segment files of `dir` (first LSN by name, file name), in LSN order.
fn segment_names(storage: &dyn Storage, dir: &Path) -> Result<Vec<(u64, String)>> {
    let mut names: Vec<(u64, String)> = storage
        .list(dir)
        .map_err(|e| Error::io("list directory", dir, e))?
        .into_iter()
        .filter_map(|n| parse_segment_file_name(&n).map(|l| (l, n)))
        .collect();
    names.sort();
    Ok(names)
}

/// Removes, durably, the segments whose creation never finished (`<name>.tmp`): they were
/// never part of the log. Returns their paths.
fn remove_unfinished(storage: &dyn Storage, dir: &Path) -> Result<Vec<PathBuf>> {
    let unfinished: Vec<PathBuf> = storage
        .list(dir)
        .map_err(|e| Error::io("list directory", dir, e))?
        .into_iter()
        .filter(|n| {
            n.strip_suffix(CREATING_SUFFIX)
                .is_some_and(|seg| parse_segment_file_name(seg).is_some())
        })
        .map(|n| dir.join(n))
        .collect();
    for p in &unfinished {
        storage
            .remove_file(p)
            .map_err(|e| Error::io("remove unfinished segment", p, e))?;
    }
    if !unfinished.is_empty() {
        storage
            .sync_dir(dir)
            .map_err(|e| Error::io("fsync directory", dir, e))?;
    }
    Ok(unfinished)
}

/// Removes a last segment whose header was never completely written, durably.
fn remove_headerless(storage: &dyn Storage, dir: &Path, path: &Path) -> Result<()> {
    storage
        .remove_file(path)
        .map_err(|e| Error::io("remove torn segment", path, e))?;
    storage
        .sync_dir(dir)
        .map_err(|e| Error::io("fsync directory", dir, e))
}

/// Checks a segment's header against its file name, this node, and the segment before it.
fn check_header(
    h: &SegmentHeader,
    name_lsn: u64,
    path: &Path,
    opts: &WalOptions,
    prev: Option<&SegmentInfo>,
) -> Result<()> {
    if h.first_lsn != name_lsn {
        return Err(Error::Corrupt {
            file: path.to_path_buf(),
            offset: 0,
            kind: CorruptKind::NameMismatch {
                name_lsn,
                header_lsn: h.first_lsn,
            },
        });
    }
    if h.node_id != opts.node_id {
        return Err(Error::NodeMismatch {
            file: path.to_path_buf(),
            expected: opts.node_id,
            found: h.node_id,
        });
    }
    if let Some(prev) = prev {
        let expected = prev.last_lsn.map(|l| l + 1).unwrap_or(prev.first_lsn);
        if h.first_lsn != expected {
            return Err(Error::Gap {
                after_lsn: expected - 1,
                next_first_lsn: h.first_lsn,
                next_file: path.to_path_buf(),
            });
        }
    }
    Ok(())
}

/// Refuses a live segment shorter than the size it was preallocated to (its header's
/// intended length): a crash cannot shrink a preallocated file, so its end is not a torn
/// tail but damage done by something else.
fn check_length(scan: &SegmentScan, path: &Path) -> Result<()> {
    let expected = scan.header.intended_len;
    if expected > 0 && scan.file_len < expected {
        return Err(Error::ShortSegment {
            file: path.to_path_buf(),
            expected,
            actual: scan.file_len,
        });
    }
    Ok(())
}

/// Acts on how a segment's records end: nothing for a clean end, a cut for a torn tail of
/// the last segment (or its corruption, when the options allow cutting it), an error for
/// anything else. Returns the cut made, if any.
fn settle_tail(
    storage: &dyn Storage,
    dir: &Path,
    path: &Path,
    scan: &SegmentScan,
    is_last: bool,
    opts: &WalOptions,
) -> Result<Option<Truncation>> {
    match &scan.tail {
        Tail::Clean => Ok(None),
        Tail::Torn {
            cut,
            junk_end,
            kind,
            ..
        } if is_last => {
            zero_range(storage, path, *cut, *junk_end)?;
            Ok(Some(Truncation {
                file: path.to_path_buf(),
                offset: *cut,
                bytes: junk_end.saturating_sub(*cut),
                reason: kind.clone(),
                broken_copy: None,
            }))
        }
        Tail::Corrupt { kind, .. }
            if is_last && opts.recovery == RecoveryMode::TruncateCorruptTail =>
        {
            cut_corrupt_tail(storage, dir, path, scan.end, kind.clone()).map(Some)
        }
        Tail::Torn {
            at: offset, kind, ..
        }
        | Tail::Corrupt { offset, kind } => Err(Error::Corrupt {
            file: path.to_path_buf(),
            offset: *offset,
            kind: kind.clone(),
        }),
    }
}

/// Keeps a copy of the segment as `<name>.broken` (fsynced, name too), then cuts it at
/// `cut`, the end of its last complete batch before the damage.
fn cut_corrupt_tail(
    storage: &dyn Storage,
    dir: &Path,
    path: &Path,
    cut: u64,
    kind: CorruptKind,
) -> Result<Truncation> {
    let broken = path.with_extension("wal.broken");
    let len = storage
        .open(path, OpenMode::Read)
        .and_then(|f| f.len())
        .map_err(|e| Error::io("stat", path, e))?;
    let _ = storage.remove_file(&broken);
    storage
        .copy_prefix(path, &broken, len)
        .and_then(|_| storage.open(&broken, OpenMode::ReadWrite))
        .and_then(|f| f.sync_data())
        .and_then(|_| storage.sync_dir(dir))
        .map_err(|e| Error::io("copy broken segment", &broken, e))?;
    zero_range(storage, path, cut, len)?;
    Ok(Truncation {
        file: path.to_path_buf(),
        offset: cut,
        bytes: len - cut,
        reason: kind,
        broken_copy: Some(broken),
    })
}

/// Overwrites `[from, to)` with zeros and fsyncs, so cut bytes can never be read again.
fn zero_range(storage: &dyn Storage, path: &Path, from: u64, to: u64) -> Result<()> {
    if to <= from {
        return Ok(());
    }
    let f = storage
        .open(path, OpenMode::ReadWrite)
        .map_err(|e| Error::io("open", path, e))?;
    let zeros = vec![0u8; (to - from).min(1 << 20) as usize];
    let mut off = from;
    while off < to {
        let n = (to - off).min(zeros.len() as u64) as usize;
        f.write_all_at(&zeros[..n], off)
            .map_err(|e| Error::io("write", path, e))?;
        off += n as u64;
    }
    f.sync_data().map_err(|e| Error::io("fsync", path, e))
}
