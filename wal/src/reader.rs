//! Reading the log from any LSN, across segments and across directories (live + archive),
//! as one stream.
//!
//! Checks made while reading: every segment header, every record CRC, consecutive LSNs
//! within and across segments (a missing segment is a [`Error::Gap`]), and complete batches.
//! Only the last segment of the stream may end in a torn tail; the records of an incomplete
//! batch there are never returned.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{CorruptKind, Error, Result};
use crate::format::{parse_partial_file_name, parse_segment_file_name, FLAG_BATCH_CONTINUES};
use crate::segment::{classify_stop, header_never_written, SegmentCursor, Step, Stop};
use crate::storage::{Mapped, Storage};

/// One record read back from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Log sequence number.
    pub lsn: u64,
    /// Caller-defined kind, 1..=255.
    pub kind: u8,
    /// The payload.
    pub payload: Vec<u8>,
}

/// A record read from a mapped segment (see [`ReadOptions::map_segments`]): its payload
/// stays in the mapping, which the record keeps alive; cheap to clone.
#[derive(Debug, Clone)]
pub struct SharedRecord {
    /// Log sequence number.
    pub lsn: u64,
    /// Caller-defined kind, 1..=255.
    pub kind: u8,
    map: Mapped,
    start: usize,
    len: usize,
}

impl SharedRecord {
    /// A record whose payload is held in memory of its own.
    pub fn from_vec(lsn: u64, kind: u8, payload: Vec<u8>) -> SharedRecord {
        SharedRecord {
            lsn,
            kind,
            start: 0,
            len: payload.len(),
            map: Mapped::from_vec(payload),
        }
    }

    /// The payload.
    pub fn payload(&self) -> &[u8] {
        &self.map.bytes()[self.start..self.start + self.len]
    }

    /// The mapping holding the payload, and the payload's offset in it.
    pub fn source(&self) -> (&Mapped, usize) {
        (&self.map, self.start)
    }
}

/// A record between being read and being returned.
#[derive(Debug)]
enum Pending {
    Owned(Record),
    Shared(SharedRecord),
}

impl Pending {
    fn into_record(self) -> Record {
        match self {
            Pending::Owned(r) => r,
            Pending::Shared(r) => Record {
                lsn: r.lsn,
                kind: r.kind,
                payload: r.payload().to_vec(),
            },
        }
    }

    fn into_shared(self) -> SharedRecord {
        match self {
            Pending::Shared(r) => r,
            Pending::Owned(r) => SharedRecord::from_vec(r.lsn, r.kind, r.payload),
        }
    }
}

/// Options for [`WalReader::open`].
#[derive(Debug, Clone)]
pub struct ReadOptions {
    /// Largest payload accepted; a larger length field is corruption. Default 16 MiB.
    pub max_record_size: u32,
    /// Stop after this LSN (inclusive). Default: read to the end.
    pub until_lsn: Option<u64>,
    /// Treat a torn tail in the last segment as an error instead of the end of the log.
    /// Verification of an archive wants this. Default false.
    pub strict_tail: bool,
    /// If set, every segment must have been written by this node, and an archive root
    /// given as a directory is read in this node's lineage subdirectory
    /// ([`crate::resolve_archive_dirs`]). Default none.
    pub node_id: Option<u64>,
    /// If set, every segment must be of this timeline, and an archive root given as a
    /// directory is read in the lineage subdirectory of this node and timeline
    /// ([`crate::resolve_archive_dirs`]), never in that of a later timeline (a restored
    /// copy's) it may also hold. A mismatch is [`Error::ArchiveLineage`]. Default none.
    pub timeline: Option<u64>,
    /// Map each segment whole and read records in place instead of copying them through a
    /// buffer; [`WalReader::next_shared`] then returns payloads without copying them. Only
    /// for segments that are not being written (an archive, a log before it is reopened for
    /// writing): a mapped file must not be truncated while mapped. Default false.
    pub map_segments: bool,
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions {
            max_record_size: 16 << 20,
            until_lsn: None,
            strict_tail: false,
            node_id: None,
            timeline: None,
            map_segments: false,
        }
    }
}

/// Where a torn tail was found by a reader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    /// The segment.
    pub file: PathBuf,
    /// Offset of the first byte that is not part of a complete batch.
    pub offset: u64,
    /// What was wrong there.
    pub kind: CorruptKind,
}

/// An iterator over records from a starting LSN. Yields `Result<Record>`; after an error
/// it yields nothing more.
#[derive(Debug)]
pub struct WalReader {
    storage: Arc<dyn Storage>,
    segments: Vec<(u64, PathBuf)>,
    next_segment: usize,
    cursor: Option<SegmentCursor>,
    /// LSN the next record must carry.
    expected: u64,
    from: u64,
    opts: ReadOptions,
    /// Records of a batch whose end has not been seen yet.
    batch: Vec<Pending>,
    /// The last record read had the batch-continues flag.
    in_batch: bool,
    ready: VecDeque<Pending>,
    /// The mapping of the segment `cursor` reads, when segments are mapped.
    cur_map: Option<Mapped>,
    done: bool,
    torn: Option<TornTail>,
    bytes_read: u64,
    /// Segment index and offset just past the last complete batch moved to `ready`.
    ready_end: Option<(usize, u64)>,
}

/// Lists the segments in `dirs`, sorted by first LSN. Each directory is resolved as
/// [`crate::resolve_archive_dirs`] does for any node and timeline (an archive root with one
/// lineage subdirectory reads that subdirectory; with several it is refused). A complete
/// segment wins over a `.partial` of the same name wherever each is; otherwise the first
/// directory wins when two hold the same segment. A directory that does not exist holds
/// nothing.
pub fn list_segments(storage: &dyn Storage, dirs: &[PathBuf]) -> Result<Vec<(u64, PathBuf)>> {
    list_segments_of(storage, dirs, None, None)
}

/// [`list_segments`], resolving archive roots to the lineage of `node_id` and `timeline`
/// where given (as a reader with those [`ReadOptions`] does).
pub fn list_segments_of(
    storage: &dyn Storage,
    dirs: &[PathBuf],
    node_id: Option<u64>,
    timeline: Option<u64>,
) -> Result<Vec<(u64, PathBuf)>> {
    // First LSN -> (is a partial copy, path).
    let mut found = Found::new();
    for root in dirs {
        for dir in crate::archive::resolve_archive_dirs(storage, root, node_id, timeline)? {
            collect_dir(storage, &dir, &mut found)?;
        }
    }
    Ok(found.into_iter().map(|(l, (_, p))| (l, p)).collect())
}

/// Segments found so far: first LSN -> (is a partial copy, path).
type Found = std::collections::BTreeMap<u64, (bool, PathBuf)>;

/// The segments of `dir` itself, not resolved (its lineage subdirectories are not read).
pub(crate) fn list_dir_segments(storage: &dyn Storage, dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    list_dirs_unresolved(storage, std::slice::from_ref(&dir.to_path_buf()))
}

/// The segments of each of `dirs` itself (already resolved), merged as [`list_segments`]
/// merges them.
pub(crate) fn list_dirs_unresolved(
    storage: &dyn Storage,
    dirs: &[PathBuf],
) -> Result<Vec<(u64, PathBuf)>> {
    let mut found = Found::new();
    for dir in dirs {
        collect_dir(storage, dir, &mut found)?;
    }
    Ok(found.into_iter().map(|(l, (_, p))| (l, p)).collect())
}

/// Adds the segments and partial copies of `dir` to `found`: a complete segment replaces a
/// partial one, otherwise what was found first stays.
fn collect_dir(storage: &dyn Storage, dir: &Path, found: &mut Found) -> Result<()> {
    if !storage.exists(dir) {
        return Ok(());
    }
    let names = storage
        .list(dir)
        .map_err(|e| Error::io("list directory", dir, e))?;
    for n in names {
        if let Some(lsn) = parse_segment_file_name(&n) {
            if !matches!(found.get(&lsn), Some((false, _))) {
                found.insert(lsn, (false, dir.join(&n)));
            }
        } else if let Some(lsn) = parse_partial_file_name(&n) {
            found.entry(lsn).or_insert_with(|| (true, dir.join(&n)));
        }
    }
    Ok(())
}

impl WalReader {
    /// Opens a reader over the segments of `dirs` starting at `from_lsn` (0 means the first
    /// record there is).
    pub fn open(
        storage: Arc<dyn Storage>,
        dirs: &[PathBuf],
        from_lsn: u64,
        opts: ReadOptions,
    ) -> Result<Self> {
        let segments = list_segments_of(&*storage, dirs, opts.node_id, opts.timeline)?;
        Self::over_segments(storage, segments, from_lsn, opts)
    }

    /// A reader over exactly these segments (first LSN, path), sorted by first LSN.
    pub(crate) fn over_segments(
        storage: Arc<dyn Storage>,
        segments: Vec<(u64, PathBuf)>,
        from_lsn: u64,
        opts: ReadOptions,
    ) -> Result<Self> {
        let first = segments.first().map(|s| s.0).unwrap_or(1);
        let from = if from_lsn == 0 { first } else { from_lsn };
        if from < first {
            return Err(Error::LsnUnavailable {
                requested: from,
                first,
                last: first - 1,
            });
        }
        // Start at the last segment that begins at or before `from`.
        let start = segments.iter().rposition(|s| s.0 <= from).unwrap_or(0);
        let expected = segments.get(start).map(|s| s.0).unwrap_or(from);
        Ok(WalReader {
            storage,
            segments,
            next_segment: start,
            cursor: None,
            expected,
            from,
            opts,
            batch: Vec::new(),
            in_batch: false,
            ready: VecDeque::new(),
            cur_map: None,
            done: false,
            torn: None,
            bytes_read: 0,
            ready_end: None,
        })
    }

    /// Opens a reader over one directory (or one segment file's directory) from the start.
    pub fn open_dir(storage: Arc<dyn Storage>, dir: &Path) -> Result<Self> {
        Self::open(storage, &[dir.to_path_buf()], 0, ReadOptions::default())
    }

    /// The torn tail that ended the stream, if it ended in one.
    pub fn torn_tail(&self) -> Option<&TornTail> {
        self.torn.as_ref()
    }

    /// Bytes of records (headers, payloads, padding) read so far.
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read
    }

    /// The segment and the offset just past the last record returned, once every record
    /// of its batch has been returned: where a copy of the log must be cut to end there.
    pub fn position(&self) -> Option<(&Path, u64)> {
        if !self.ready.is_empty() {
            return None;
        }
        let (i, off) = self.ready_end?;
        self.segments.get(i).map(|(_, p)| (p.as_path(), off))
    }

    /// LSN of the last record returned or skipped so far.
    pub fn last_lsn(&self) -> u64 {
        self.expected - 1
    }

    /// The next record, `None` at the end of the log.
    pub fn next_record(&mut self) -> Result<Option<Record>> {
        Ok(self.next_pending()?.map(Pending::into_record))
    }

    /// The next record, its payload left in the segment's mapping if the reader maps
    /// segments ([`ReadOptions::map_segments`]; otherwise it is moved into one of its own).
    pub fn next_shared(&mut self) -> Result<Option<SharedRecord>> {
        Ok(self.next_pending()?.map(Pending::into_shared))
    }

    fn next_pending(&mut self) -> Result<Option<Pending>> {
        loop {
            if let Some(r) = self.ready.pop_front() {
                return Ok(Some(r));
            }
            if self.done {
                return Ok(None);
            }
            if let Err(e) = self.advance() {
                self.done = true;
                self.ready.clear();
                return Err(e);
            }
        }
    }

    fn corrupt(path: &Path, offset: u64, kind: CorruptKind) -> Error {
        Error::Corrupt {
            file: path.to_path_buf(),
            offset,
            kind,
        }
    }

    /// Opens the next segment and checks its header against the stream (file name, node,
    /// continuity). Returns false, having ended the stream, when there is no next segment
    /// or it is a last segment whose header never reached the disk.
    fn open_next_segment(&mut self) -> Result<bool> {
        let Some((first, path)) = self.segments.get(self.next_segment).cloned() else {
            self.finish()?;
            return Ok(false);
        };
        let open = if self.opts.map_segments {
            SegmentCursor::open_mapped
        } else {
            SegmentCursor::open
        };
        let cur = match open(&*self.storage, &path, self.opts.max_record_size) {
            // A last segment whose header never reached the disk holds nothing: the log
            // ends before it (opening the log removes such a file).
            Err(Error::Corrupt { offset: 0, .. })
                if self.next_segment + 1 == self.segments.len()
                    && header_never_written(&*self.storage, &path)? =>
            {
                self.next_segment += 1;
                self.finish()?;
                return Ok(false);
            }
            r => r?,
        };
        let h = *cur.header();
        if h.first_lsn != first {
            return Err(Self::corrupt(
                &path,
                0,
                CorruptKind::NameMismatch {
                    name_lsn: first,
                    header_lsn: h.first_lsn,
                },
            ));
        }
        if let Some(node) = self.opts.node_id.filter(|n| *n != h.node_id) {
            return Err(Error::NodeMismatch {
                file: path,
                expected: node,
                found: h.node_id,
            });
        }
        if let Some(t) = self.opts.timeline.filter(|t| *t != h.timeline) {
            let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
            return Err(Error::ArchiveLineage {
                dir,
                detail: format!(
                    "{} is of timeline {}, but the reader was asked for timeline {t} (another history: give the archive directory of timeline {t})",
                    path.display(),
                    h.timeline
                ),
            });
        }
        if h.first_lsn != self.expected {
            return Err(Error::Gap {
                after_lsn: self.expected - 1,
                next_first_lsn: h.first_lsn,
                next_file: path,
            });
        }
        self.next_segment += 1;
        self.cur_map = cur.mapped().cloned();
        self.cursor = Some(cur);
        Ok(true)
    }

    /// Reads until at least one record is ready or the stream ends.
    fn advance(&mut self) -> Result<()> {
        if self.cursor.is_none() && !self.open_next_segment()? {
            return Ok(());
        }
        let is_last = self.next_segment == self.segments.len();
        let until = self.opts.until_lsn.unwrap_or(u64::MAX);
        let Some(cur) = self.cursor.as_mut() else {
            return Ok(());
        };
        let path = &self.segments[self.next_segment - 1].1;
        loop {
            // Everything up to the bound has been read: stop without looking further (past
            // it may lie a record being written, or megabytes of pre-allocated zeros).
            if self.expected > until && !self.in_batch {
                return self.finish();
            }
            let (stop, kind) = match cur.next_step()? {
                Step::Record(r, off) if r.lsn != self.expected => (
                    off,
                    Some(CorruptKind::BadLsn {
                        expected: self.expected,
                        found: r.lsn,
                    }),
                ),
                Step::Record(r, off) => {
                    if r.lsn > until {
                        self.batch.clear();
                        self.done = true;
                        return Ok(());
                    }
                    self.expected += 1;
                    self.bytes_read += r.size as u64;
                    if r.lsn >= self.from {
                        let (lsn, kind, len) = (r.lsn, r.kind, r.payload.len());
                        self.batch.push(match &self.cur_map {
                            Some(map) => Pending::Shared(SharedRecord {
                                lsn,
                                kind,
                                map: map.clone(),
                                start: usize::try_from(off).unwrap_or(usize::MAX)
                                    + crate::format::RECORD_HEADER_LEN,
                                len,
                            }),
                            None => Pending::Owned(Record {
                                lsn,
                                kind,
                                payload: r.payload.to_vec(),
                            }),
                        });
                    }
                    self.in_batch = r.flags & FLAG_BATCH_CONTINUES != 0;
                    if !self.in_batch {
                        self.ready_end = Some((self.next_segment - 1, off + r.size as u64));
                        self.ready.extend(self.batch.drain(..));
                        if !self.ready.is_empty() {
                            return Ok(());
                        }
                    }
                    continue;
                }
                Step::End(off) => (off, None),
                Step::Bad(off, kind) => (off, Some(kind)),
            };
            let stopped = classify_stop(cur, stop, kind, self.in_batch, self.expected)?;
            return match stopped {
                Stop::Clean if is_last => self.finish(),
                // A partial copy is not preallocated and grows by appends: the end of its
                // last whole batch is its clean end.
                Stop::Torn(_) if is_last && crate::archive::is_partial(path) => {
                    self.batch.clear();
                    self.finish()
                }
                Stop::Clean => {
                    self.cursor = None;
                    Ok(())
                }
                Stop::Torn(kind) if is_last && !self.opts.strict_tail => {
                    self.torn = Some(TornTail {
                        file: path.clone(),
                        offset: stop,
                        kind,
                    });
                    self.batch.clear();
                    self.finish()
                }
                Stop::Torn(kind) | Stop::Corrupt(kind) => Err(Self::corrupt(path, stop, kind)),
            };
        }
    }

    fn finish(&mut self) -> Result<()> {
        self.done = true;
        if self.from > self.expected {
            let first = self.segments.first().map(|s| s.0).unwrap_or(self.from);
            return Err(Error::LsnUnavailable {
                requested: self.from,
                first,
                last: self.expected - 1,
            });
        }
        Ok(())
    }
}

impl Iterator for WalReader {
    type Item = Result<Record>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_record().transpose()
    }
}
