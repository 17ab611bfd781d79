//! The archive: where its files live (one subdirectory per lineage under a shared root),
//! how a closed segment is copied into it, how the segment being written is followed as a
//! growing `.partial`, and retention.
//!
//! Invariants:
//! - the archive never holds a half-written segment under its final name: a closed
//!   segment's copy is written as `<name>.tmp` (or completed from `<name>.partial`),
//!   fsynced, renamed to `<name>`, and the directory is fsynced;
//! - a `.partial` only ever holds bytes that were durable in the live segment, appended in
//!   order; its length only grows, and it is fsynced before the archive position advances;
//! - a file already in the archive under a segment's name (complete or partial) is never
//!   overwritten: it must be a copy of the same bytes (checked by CRC32C against the
//!   source), else [`Error::ArchiveConflict`] names both files;
//! - the log writes into `<root>/n<node>-t<timeline>/` ([`archive_subdir`]), so that logs
//!   of several nodes and timelines share one root without meeting; readers resolve a root
//!   to the lineage they are asked for ([`resolve_archive_dirs`]) and read a directory
//!   without lineage subdirectories (the old flat layout, or a subdirectory itself) as it is.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::format::{partial_file_name, SegmentHeader, PARTIAL_SUFFIX, SEGMENT_HEADER_LEN};
use crate::storage::{OpenMode, Storage, StorageFile};

/// Bytes read or written at a time when copying or comparing.
const COPY_CHUNK: usize = 1 << 20;

/// The archive subdirectory of one lineage under an archive root:
/// `<root>/n<node_id>-t<timeline>`.
pub fn archive_subdir(root: &Path, node_id: u64, timeline: u64) -> PathBuf {
    root.join(format!("n{node_id}-t{timeline}"))
}

/// Parses a lineage subdirectory name (`n<node>-t<timeline>`) into node and timeline.
pub fn parse_archive_subdir(name: &str) -> Option<(u64, u64)> {
    let rest = name.strip_prefix('n')?;
    let (node, timeline) = rest.split_once("-t")?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
    if !digits(node) || !digits(timeline) {
        return None;
    }
    Some((node.parse().ok()?, timeline.parse().ok()?))
}

/// The directories to read for `root`: a root holding lineage subdirectories
/// ([`archive_subdir`]) resolves to the one of `node_id` (and `timeline`, if given), and
/// also to the root itself if it holds segments of its own (an archive written flat by an
/// older build and continued per lineage); a directory without lineage subdirectories
/// resolves to itself.
///
/// With both `node_id` and `timeline` given, the subdirectory is returned even if it does
/// not exist yet. Otherwise a single matching subdirectory is taken; if none matches and
/// the root holds exactly one, that one is taken (its segment headers then tell a reader
/// whose it is); several matches, or several others and none matching, are
/// [`Error::ArchiveLineage`]: reading one of them by guess could mix two histories.
pub fn resolve_archive_dirs(
    storage: &dyn Storage,
    root: &Path,
    node_id: Option<u64>,
    timeline: Option<u64>,
) -> Result<Vec<PathBuf>> {
    if !storage.exists(root) {
        return Ok(vec![root.to_path_buf()]);
    }
    let names = storage
        .list(root)
        .map_err(|e| Error::io("list directory", root, e))?;
    let mut lineages: Vec<(u64, u64, String)> = names
        .iter()
        .filter_map(|n| parse_archive_subdir(n).map(|(a, b)| (a, b, n.clone())))
        .collect();
    lineages.sort();
    let flat = names.iter().any(|n| is_segment_or_partial(n));
    if lineages.is_empty() {
        return Ok(vec![root.to_path_buf()]);
    }
    let chosen = match (node_id, timeline) {
        (Some(n), Some(t)) => archive_subdir(root, n, t),
        _ => {
            let matching: Vec<&(u64, u64, String)> = lineages
                .iter()
                .filter(|(n, t, _)| {
                    node_id.is_none_or(|x| x == *n) && timeline.is_none_or(|x| x == *t)
                })
                .collect();
            match (matching.as_slice(), lineages.as_slice()) {
                ([one], _) => root.join(&one.2),
                ([], [one]) => root.join(&one.2),
                _ => {
                    let all: Vec<&str> = lineages.iter().map(|l| l.2.as_str()).collect();
                    return Err(Error::ArchiveLineage {
                        dir: root.to_path_buf(),
                        detail: format!(
                            "it holds the histories {} and the reader was asked for {}; give the subdirectory of the one to read (for example {})",
                            all.join(", "),
                            describe(node_id, timeline),
                            root.join(all[0]).display()
                        ),
                    });
                }
            }
        }
    };
    let mut dirs = vec![chosen];
    if flat {
        dirs.push(root.to_path_buf());
    }
    Ok(dirs)
}

fn describe(node_id: Option<u64>, timeline: Option<u64>) -> String {
    match (node_id, timeline) {
        (None, None) => "no node and no timeline".into(),
        (Some(n), None) => format!("node {n}, any timeline"),
        (None, Some(t)) => format!("timeline {t}, any node"),
        (Some(n), Some(t)) => format!("node {n}, timeline {t}"),
    }
}

fn is_segment_or_partial(name: &str) -> bool {
    crate::format::parse_segment_file_name(name).is_some()
        || crate::format::parse_partial_file_name(name).is_some()
}

/// True if `path` names a partial segment (`<name>.partial`).
pub(crate) fn is_partial(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.ends_with(PARTIAL_SUFFIX))
}

/// Copies the first `len` bytes of the closed segment `src` (its header and records, not
/// its pre-allocated tail) into `archive_dir` under the same name; returns the archived
/// path. If the archive already holds the segment, it must be the same bytes (then
/// nothing is done) or [`Error::ArchiveConflict`] is returned; a `<name>.partial` there
/// (the segment followed while it was written) must be a prefix of it, and is completed
/// and renamed.
pub fn archive_segment(
    storage: &dyn Storage,
    src: &Path,
    len: u64,
    archive_dir: &Path,
) -> Result<PathBuf> {
    let name = src
        .file_name()
        .ok_or_else(|| Error::Config(format!("{} has no file name", src.display())))?;
    let dest = archive_dir.join(name);
    let mut partial_name = name.to_os_string();
    partial_name.push(PARTIAL_SUFFIX);
    let partial = archive_dir.join(partial_name);
    if storage.exists(&dest) {
        check_copy(storage, src, &dest, len, true)?;
        if storage.exists(&partial) {
            // The complete copy wins; a partial beside it is a prefix of the same bytes.
            check_copy(storage, src, &partial, len, false)?;
            remove_durably(storage, &partial, archive_dir)?;
        }
        return Ok(dest);
    }
    if storage.exists(&partial) {
        let mut p = PartialCopy::resume(storage, src, &partial, len)?;
        p.extend(len)?;
        return p.complete(storage, &dest);
    }
    copy_via_tmp(storage, src, len, archive_dir, &dest)?;
    Ok(dest)
}

/// Writes `<name>.tmp`, fsyncs it, renames it to `dest` and fsyncs the directory.
fn copy_via_tmp(
    storage: &dyn Storage,
    src: &Path,
    len: u64,
    archive_dir: &Path,
    dest: &Path,
) -> Result<()> {
    let mut tmp_name = dest.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = archive_dir.join(tmp_name);
    if storage.exists(&tmp) {
        storage
            .remove_file(&tmp)
            .map_err(|e| Error::io("remove stale copy", &tmp, e))?;
    }
    let copied = storage
        .copy_prefix(src, &tmp, len)
        .map_err(|e| Error::io("copy to archive", &tmp, e))?;
    if copied != len {
        return Err(Error::io(
            "copy to archive",
            src,
            std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("copied {copied} of {len} bytes"),
            ),
        ));
    }
    storage
        .open(&tmp, OpenMode::ReadWrite)
        .and_then(|f| f.sync_data())
        .map_err(|e| Error::io("fsync", &tmp, e))?;
    storage
        .rename(&tmp, dest)
        .map_err(|e| Error::io("rename", dest, e))?;
    storage
        .sync_dir(archive_dir)
        .map_err(|e| Error::io("fsync directory", archive_dir, e))
}

fn remove_durably(storage: &dyn Storage, path: &Path, dir: &Path) -> Result<()> {
    storage
        .remove_file(path)
        .map_err(|e| Error::io("remove", path, e))?;
    storage
        .sync_dir(dir)
        .map_err(|e| Error::io("fsync directory", dir, e))
}

/// Checks that the archived file `copy` is a copy of `src`: the same lineage in its
/// header, and its bytes (all of them, which must be `len` when `whole`, else at most
/// `len`) equal to `src`'s first bytes by CRC32C. Returns the copy's length.
fn check_copy(
    storage: &dyn Storage,
    src: &Path,
    copy: &Path,
    len: u64,
    whole: bool,
) -> Result<u64> {
    let conflict = |reason: String| Error::ArchiveConflict {
        archived: copy.to_path_buf(),
        source_file: src.to_path_buf(),
        reason,
    };
    let c = storage
        .open(copy, OpenMode::Read)
        .map_err(|e| Error::io("open", copy, e))?;
    let s = storage
        .open(src, OpenMode::Read)
        .map_err(|e| Error::io("open", src, e))?;
    let have = c.len().map_err(|e| Error::io("stat", copy, e))?;
    let theirs = read_header(&*c);
    let ours = read_header(&*s);
    if let (Some(a), Some(b)) = (theirs, ours) {
        if (a.node_id, a.timeline) != (b.node_id, b.timeline) {
            return Err(conflict(format!(
                "the archived file belongs to node {} timeline {}, the segment to node {} timeline {} (another server, or a restored copy, wrote into this archive)",
                a.node_id, a.timeline, b.node_id, b.timeline
            )));
        }
    }
    if (whole && have != len) || have > len {
        return Err(conflict(format!(
            "the archived file holds {have} bytes, the segment {len}"
        )));
    }
    let crc_copy = crc_prefix(&*c, have).map_err(|e| Error::io("read", copy, e))?;
    let crc_src = crc_prefix(&*s, have).map_err(|e| Error::io("read", src, e))?;
    if crc_copy != crc_src {
        return Err(conflict(format!(
            "its first {have} bytes differ (CRC32C {crc_copy:#010x} in the archive, {crc_src:#010x} in the segment)"
        )));
    }
    Ok(have)
}

/// The lineage (node id, timeline) in the header of the segment file `path`; `None` for a
/// file too short to hold a header or whose header does not decode (a segment created but
/// never written, or damaged: the reader reports that one when it gets there).
pub fn segment_lineage(storage: &dyn Storage, path: &Path) -> Result<Option<(u64, u64)>> {
    let f = storage
        .open(path, OpenMode::Read)
        .map_err(|e| Error::io("open", path, e))?;
    Ok(read_header(&*f).map(|h| (h.node_id, h.timeline)))
}

/// The timeline of the log whose segments are `segments` (sorted by first LSN): that of
/// the newest one with a readable header. A log takes it up at open when it is higher than
/// [`crate::WalOptions::timeline`], so that a restored database stays on the timeline its
/// restore started without anything else remembering it.
pub(crate) fn log_timeline(storage: &dyn Storage, segments: &[PathBuf]) -> Result<Option<u64>> {
    for path in segments.iter().rev() {
        if let Some((_, t)) = segment_lineage(storage, path)? {
            return Ok(Some(t));
        }
    }
    Ok(None)
}

fn read_header(f: &dyn StorageFile) -> Option<SegmentHeader> {
    let mut b = [0u8; SEGMENT_HEADER_LEN as usize];
    f.read_exact_at(&mut b, 0).ok()?;
    SegmentHeader::decode(&b).ok()
}

/// CRC32C of a file's first `len` bytes.
fn crc_prefix(f: &dyn StorageFile, len: u64) -> std::io::Result<u32> {
    let mut buf = vec![0u8; COPY_CHUNK];
    let (mut off, mut crc) = (0u64, 0u32);
    while off < len {
        let n = usize::try_from((len - off).min(COPY_CHUNK as u64)).unwrap_or(COPY_CHUNK);
        f.read_exact_at(&mut buf[..n], off)?;
        crc = crc32c::crc32c_append(crc, &buf[..n]);
        off += n as u64;
    }
    Ok(crc)
}

/// The growing copy of a segment still being written: `<name>.partial` in the archive.
#[derive(Debug)]
pub(crate) struct PartialCopy {
    /// First LSN of the segment followed.
    pub(crate) first_lsn: u64,
    src_path: PathBuf,
    src: Box<dyn StorageFile>,
    path: PathBuf,
    file: Box<dyn StorageFile>,
    /// Bytes of the partial this process wrote and fsynced (0 for a partial taken up from
    /// before: its bytes are written again).
    pub(crate) len: u64,
}

impl PartialCopy {
    /// The partial copy of `src` in `archive_dir`: an existing one is checked to be a copy
    /// of `src`'s first bytes, no longer than `durable` (else [`Error::ArchiveConflict`]);
    /// a missing one is created empty (name fsynced).
    pub(crate) fn open(
        storage: &dyn Storage,
        src: &Path,
        first_lsn: u64,
        archive_dir: &Path,
        durable: u64,
    ) -> Result<PartialCopy> {
        let path = archive_dir.join(partial_file_name(first_lsn));
        if storage.exists(&path) {
            let mut p = Self::resume(storage, src, &path, durable)?;
            p.first_lsn = first_lsn;
            return Ok(p);
        }
        let file = storage
            .open(&path, OpenMode::CreateNew)
            .map_err(|e| Error::io("create", &path, e))?;
        storage
            .sync_dir(archive_dir)
            .map_err(|e| Error::io("fsync directory", archive_dir, e))?;
        let src_file = storage
            .open(src, OpenMode::Read)
            .map_err(|e| Error::io("open", src, e))?;
        Ok(PartialCopy {
            first_lsn,
            src_path: src.to_path_buf(),
            src: src_file,
            path,
            file,
            len: 0,
        })
    }

    /// Takes up an existing partial copy after checking it against `src` (at most `limit`
    /// bytes long, the same bytes). Its bytes are not trusted to be durable: an earlier
    /// fsync of them may have failed (the page cache then shows bytes the disk does not
    /// hold, and a later fsync may not write them), so the next [`PartialCopy::extend`]
    /// writes them again from the start and fsyncs. (Issue 13, campaign seed 1013 with the
    /// archive: a partial whose fsync failed under EIO was resumed at its full length,
    /// renamed complete without another fsync, and a power loss left a segment cut short
    /// under its complete name; the live WAL then released the segment: a hole.)
    fn resume(storage: &dyn Storage, src: &Path, path: &Path, limit: u64) -> Result<PartialCopy> {
        check_copy(storage, src, path, limit, false)?;
        let len = 0;
        let file = storage
            .open(path, OpenMode::ReadWrite)
            .map_err(|e| Error::io("open", path, e))?;
        let src_file = storage
            .open(src, OpenMode::Read)
            .map_err(|e| Error::io("open", src, e))?;
        Ok(PartialCopy {
            first_lsn: 0,
            src_path: src.to_path_buf(),
            src: src_file,
            path: path.to_path_buf(),
            file,
            len,
        })
    }

    /// Appends the source's bytes from the partial's end up to `upto` and fsyncs the
    /// partial. Returns whether anything was appended.
    pub(crate) fn extend(&mut self, upto: u64) -> Result<bool> {
        if upto <= self.len {
            return Ok(false);
        }
        let mut buf = vec![
            0u8;
            usize::try_from((upto - self.len).min(COPY_CHUNK as u64))
                .unwrap_or(COPY_CHUNK)
        ];
        let mut off = self.len;
        while off < upto {
            let n = usize::try_from((upto - off).min(buf.len() as u64)).unwrap_or(buf.len());
            self.src
                .read_exact_at(&mut buf[..n], off)
                .map_err(|e| Error::io("read", &self.src_path, e))?;
            self.file
                .write_all_at(&buf[..n], off)
                .map_err(|e| Error::io("write to archive", &self.path, e))?;
            off += n as u64;
        }
        self.file
            .sync_data()
            .map_err(|e| Error::io("fsync", &self.path, e))?;
        self.len = upto;
        Ok(true)
    }

    /// Renames the (complete, fsynced) partial to `dest` and fsyncs the directory.
    pub(crate) fn complete(self, storage: &dyn Storage, dest: &Path) -> Result<PathBuf> {
        storage
            .rename(&self.path, dest)
            .map_err(|e| Error::io("rename", dest, e))?;
        let dir = dest.parent().unwrap_or(Path::new("."));
        storage
            .sync_dir(dir)
            .map_err(|e| Error::io("fsync directory", dir, e))?;
        Ok(dest.to_path_buf())
    }
}

/// Removes archived segments whose records all lie below `below_lsn` (a segment goes when
/// the next one starts at or below `below_lsn`); the newest segment always stays. For
/// retention: call it with the checkpoint LSN + 1 of the oldest backup still kept, after a
/// newer backup has completed. `archive_dir` is resolved as readers resolve it
/// ([`resolve_archive_dirs`], any node and timeline: a root holding several lineages is
/// refused; pass the lineage's subdirectory, or use [`prune_archive_lineage`]). Returns
/// the removed files.
pub fn prune_archive(
    storage: &dyn Storage,
    archive_dir: &Path,
    below_lsn: u64,
) -> Result<Vec<PathBuf>> {
    prune_archive_lineage(storage, archive_dir, None, below_lsn)
}

/// [`prune_archive`] of one lineage: `archive_dir` resolved to the subdirectory of
/// `lineage` (node id, timeline) when given, so that the segments of another node or
/// timeline sharing the root are never touched. The root's own flat segments (an archive
/// written by an older build, all of timeline 1) are pruned only for a timeline-1 lineage,
/// and the reader checks each segment's header against the lineage before anything goes.
pub fn prune_archive_lineage(
    storage: &dyn Storage,
    archive_dir: &Path,
    lineage: Option<(u64, u64)>,
    below_lsn: u64,
) -> Result<Vec<PathBuf>> {
    let segs = match lineage {
        None => crate::reader::list_segments(storage, &[archive_dir.to_path_buf()])?,
        Some((node, timeline)) => {
            let mut dirs = resolve_archive_dirs(storage, archive_dir, Some(node), Some(timeline))?;
            if timeline != 1 && dirs.len() > 1 {
                dirs.truncate(1);
            }
            let segs = crate::reader::list_dirs_unresolved(storage, &dirs)?;
            for (_, path) in &segs {
                match segment_lineage(storage, path)? {
                    Some(l) if l != (node, timeline) => {
                        return Err(Error::ArchiveLineage {
                            dir: archive_dir.to_path_buf(),
                            detail: format!(
                                "{} belongs to node {} timeline {}, not to node {node} timeline {timeline} whose segments retention was asked to prune; nothing was removed (check the archive with duplex-recover verify)",
                                path.display(),
                                l.0,
                                l.1
                            ),
                        })
                    }
                    _ => {}
                }
            }
            segs
        }
    };
    let mut removed = Vec::new();
    for pair in segs.windows(2) {
        let ((_, path), (next_first, _)) = (&pair[0], &pair[1]);
        if *next_first <= below_lsn {
            storage
                .remove_file(path)
                .map_err(|e| Error::io("remove archived segment", path, e))?;
            removed.push(path.clone());
        }
    }
    let mut dirs: Vec<&Path> = removed.iter().filter_map(|p| p.parent()).collect();
    dirs.dedup();
    for dir in dirs {
        storage
            .sync_dir(dir)
            .map_err(|e| Error::io("fsync directory", dir, e))?;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lineage_subdirectory_names_round_trip() {
        let p = archive_subdir(Path::new("/a"), 7, 3);
        assert_eq!(p, Path::new("/a/n7-t3"));
        assert_eq!(parse_archive_subdir("n7-t3"), Some((7, 3)));
        for bad in ["n7", "n-t3", "n7-t", "x7-t3", "n7-t3x", "n+7-t3"] {
            assert_eq!(parse_archive_subdir(bad), None, "{bad}");
        }
    }

    /// Campaign seed 1013 of the simulation with the archive: a `.partial` whose last bytes
    /// were written but never made durable (their fsync failed under EIO) was taken up at
    /// its full length, renamed complete without another fsync, and a power loss left the
    /// archive holding the segment cut short under its complete name.
    #[test]
    fn a_partial_whose_bytes_were_never_fsynced_is_written_again_before_it_is_complete() {
        use crate::sim::{CrashMode, SimStorage};
        let sim = SimStorage::new();
        let dir = Path::new("/archive");
        sim.create_dir_all(dir).expect("mkdir");
        let src = Path::new("/00000000000000000001.wal");
        let bytes: Vec<u8> = (0..4000u32).map(|i| (i % 251) as u8).collect();
        let f = sim.open(src, OpenMode::CreateNew).expect("create");
        f.write_all_at(&bytes, 0).expect("write");
        f.sync_data().expect("sync");
        let partial = dir.join("00000000000000000001.wal.partial");
        let p = sim.open(&partial, OpenMode::CreateNew).expect("create");
        p.write_all_at(&bytes[..1000], 0).expect("write");
        p.sync_data().expect("sync");
        sim.sync_dir(dir).expect("sync dir");
        // The rest reached the page cache only: its fsync failed.
        p.write_all_at(&bytes[1000..], 1000).expect("write");
        drop(p);
        let dest = archive_segment(&sim, src, 4000, dir).expect("archive");
        sim.crash(CrashMode::LoseUnsynced);
        assert_eq!(
            sim.contents(&dest).as_deref(),
            Some(&bytes[..]),
            "the archived segment must hold every byte after a power loss"
        );
    }

    #[test]
    fn a_log_keeps_the_timeline_of_its_newest_segment_and_archives_there() {
        use crate::{Wal, WalOptions};
        let sim = crate::sim::SimStorage::new();
        let storage: std::sync::Arc<dyn Storage> = std::sync::Arc::new(sim.clone());
        let opts = |timeline| WalOptions {
            timeline,
            segment_size: 4096,
            archive_dir: Some(PathBuf::from("/archive")),
            background_threads: false,
            ..WalOptions::default()
        };
        // A restore started timeline 3.
        let wal = Wal::open_with(storage.clone(), "/wal", opts(3)).expect("open");
        wal.append(1, b"restored").expect("append");
        wal.close().expect("close");
        // Opened again with the default, it stays on 3; a higher one still wins.
        let wal = Wal::open_with(storage.clone(), "/wal", opts(1)).expect("reopen");
        assert_eq!(wal.options().timeline, 3);
        wal.append(1, b"more").expect("append");
        wal.rotate().expect("rotate");
        wal.archive_closed().expect("archive");
        wal.close().expect("close");
        let archived =
            crate::reader::list_dir_segments(&sim, &archive_subdir(Path::new("/archive"), 1, 3))
                .expect("list");
        assert!(!archived.is_empty());
        for (_, p) in &archived {
            assert_eq!(segment_lineage(&sim, p).expect("header"), Some((1, 3)));
        }
        assert!(!sim.exists(&archive_subdir(Path::new("/archive"), 1, 1)));
        let wal = Wal::open_with(storage, "/wal", opts(5)).expect("reopen higher");
        assert_eq!(wal.options().timeline, 5);
        wal.close().expect("close");
    }
}
