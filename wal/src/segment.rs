//! Reading one segment file: a buffered cursor over its records, and the scan that tells a
//! clean end, a torn tail and real corruption apart.
//!
//! The rule (from etcd and PostgreSQL, made strict): a record that fails its checks is a
//! *torn tail* when no valid record with a later LSN follows it in the file, and *corruption*
//! when one does. A torn tail is cut; corruption is reported with file and offset.

use std::path::{Path, PathBuf};

use crate::error::{CorruptKind, Error, Result};
use crate::format::{
    decode_record, Decoded, RawRecord, SegmentHeader, FLAG_BATCH_CONTINUES, RECORD_ALIGN,
    RECORD_HEADER_LEN, SEGMENT_HEADER_LEN,
};
use crate::storage::{Mapped, OpenMode, Storage, StorageFile};

/// Bytes read from the file at a time.
const CHUNK: usize = 1 << 20;

/// A buffered, forward-only reader of one segment's records.
#[derive(Debug)]
pub(crate) struct SegmentCursor {
    file: Box<dyn StorageFile>,
    path: PathBuf,
    header: SegmentHeader,
    file_len: u64,
    buf: Vec<u8>,
    /// File offset of `buf[0]`.
    buf_off: u64,
    /// File offset of the next record.
    pos: u64,
    max_record: u32,
    /// The whole file mapped (a closed segment read without copying); `buf` is unused then.
    map: Option<Mapped>,
}

/// One step of a [`SegmentCursor`].
#[derive(Debug)]
pub(crate) enum Step<'a> {
    /// A valid record starting at `offset`.
    Record(RawRecord<'a>, u64),
    /// End of file or zeroed space at `offset`.
    End(u64),
    /// Bytes at `offset` are not a valid record.
    Bad(u64, CorruptKind),
}

impl SegmentCursor {
    /// Opens a segment and checks its header.
    pub(crate) fn open(storage: &dyn Storage, path: &Path, max_record: u32) -> Result<Self> {
        let file = storage
            .open(path, OpenMode::Read)
            .map_err(|e| Error::io("open", path, e))?;
        Self::from_file(file, path, max_record)
    }

    /// Wraps an already open segment file and checks its header.
    pub(crate) fn from_file(
        file: Box<dyn StorageFile>,
        path: &Path,
        max_record: u32,
    ) -> Result<Self> {
        let file_len = file.len().map_err(|e| Error::io("stat", path, e))?;
        let mut head = [0u8; SEGMENT_HEADER_LEN as usize];
        let n = read_up_to(&*file, &mut head, 0).map_err(|e| Error::io("read", path, e))?;
        let header = SegmentHeader::decode(&head[..n]).map_err(|kind| Error::Corrupt {
            file: path.to_path_buf(),
            offset: 0,
            kind,
        })?;
        Ok(SegmentCursor {
            file,
            path: path.to_path_buf(),
            header,
            file_len,
            buf: Vec::new(),
            buf_off: 0,
            pos: SEGMENT_HEADER_LEN,
            max_record,
            map: None,
        })
    }

    /// Opens a segment that no longer grows (archived, or a log not being written), maps
    /// it whole and checks its header: records are then read in place, without copying.
    pub(crate) fn open_mapped(storage: &dyn Storage, path: &Path, max_record: u32) -> Result<Self> {
        let mut cur = Self::open(storage, path, max_record)?;
        let map = cur
            .file
            .map(cur.file_len)
            .map_err(|e| Error::io("map", path, e))?;
        cur.file_len = map.bytes().len() as u64;
        cur.map = Some(map);
        Ok(cur)
    }

    /// The mapped file, if the cursor reads one.
    pub(crate) fn mapped(&self) -> Option<&Mapped> {
        self.map.as_ref()
    }

    pub(crate) fn header(&self) -> &SegmentHeader {
        &self.header
    }

    /// Makes `buf` hold the bytes from `off` on, at least `n` of them unless the file ends
    /// first, and returns them.
    fn window(&mut self, off: u64, n: usize) -> Result<&[u8]> {
        if let Some(m) = &self.map {
            let start = usize::try_from(off).unwrap_or(usize::MAX);
            return Ok(m.bytes().get(start..).unwrap_or(&[]));
        }
        let have_start = off >= self.buf_off;
        let end_wanted = (off + n as u64).min(self.file_len);
        if !(have_start && self.buf_off + self.buf.len() as u64 >= end_wanted) {
            let avail = self.file_len.saturating_sub(off);
            let want = usize::try_from(avail.min(n.max(CHUNK) as u64)).unwrap_or(CHUNK);
            self.buf.resize(want, 0);
            let got = read_up_to(&*self.file, &mut self.buf, off)
                .map_err(|e| Error::io("read", &self.path, e))?;
            self.buf.truncate(got);
            self.buf_off = off;
        }
        let start = usize::try_from(off - self.buf_off).unwrap_or(usize::MAX);
        Ok(self.buf.get(start..).unwrap_or(&[]))
    }

    /// The next record, or where and why the records stop.
    pub(crate) fn next_step(&mut self) -> Result<Step<'_>> {
        let off = self.pos;
        if off >= self.file_len && self.map.is_none() {
            // The file may have grown (a live segment); look once more.
            self.file_len = self
                .file
                .len()
                .map_err(|e| Error::io("stat", &self.path, e))?;
            if off >= self.file_len {
                return Ok(Step::End(off));
            }
        }
        if off >= self.file_len {
            return Ok(Step::End(off));
        }
        let max = self.max_record;
        let mut need = RECORD_HEADER_LEN;
        loop {
            let file_len = self.file_len;
            let w = self.window(off, need)?;
            match decode_record(w, max) {
                Decoded::Record(r) => {
                    let (lsn, kind, flags, size) = (r.lsn, r.kind, r.flags, r.size);
                    let payload_len = r.payload.len();
                    self.pos = off + size as u64;
                    let payload = match &self.map {
                        Some(m) => {
                            let start = usize::try_from(off).unwrap_or(0) + RECORD_HEADER_LEN;
                            &m.bytes()[start..start + payload_len]
                        }
                        None => {
                            let start = usize::try_from(off - self.buf_off).unwrap_or(0)
                                + RECORD_HEADER_LEN;
                            &self.buf[start..start + payload_len]
                        }
                    };
                    let r = RawRecord {
                        lsn,
                        kind,
                        flags,
                        payload,
                        size,
                    };
                    return Ok(Step::Record(r, off));
                }
                Decoded::Short { needed } if needed > need && off + needed as u64 <= file_len => {
                    need = needed;
                }
                Decoded::Short { .. } => return Ok(Step::Bad(off, CorruptKind::Truncated)),
                Decoded::Empty => return Ok(Step::End(off)),
                Decoded::Bad(kind) => return Ok(Step::Bad(off, kind)),
            }
        }
    }

    /// Finds the first valid record at or after `from` whose LSN is at least `min_lsn`;
    /// returns its offset. Used to tell corruption (something valid follows) from a torn
    /// tail (nothing does).
    pub(crate) fn valid_record_after(&mut self, from: u64, min_lsn: u64) -> Result<Option<u64>> {
        let mut p = from.next_multiple_of(RECORD_ALIGN as u64);
        let max = self.max_record;
        while p + RECORD_HEADER_LEN as u64 <= self.file_len {
            let file_len = self.file_len;
            let w = self.window(p, RECORD_HEADER_LEN)?;
            // Skip zeroed space quickly: a header must contain a non-zero byte within its
            // first RECORD_HEADER_LEN bytes.
            match w.iter().position(|&b| b != 0) {
                None => {
                    p += (w.len() as u64).max(RECORD_ALIGN as u64);
                    p = p.next_multiple_of(RECORD_ALIGN as u64);
                    continue;
                }
                Some(q) if q >= RECORD_HEADER_LEN => {
                    p += (q - RECORD_HEADER_LEN + 1) as u64;
                    p = p.next_multiple_of(RECORD_ALIGN as u64);
                    continue;
                }
                Some(_) => {}
            }
            let candidate = match decode_record(w, max) {
                Decoded::Record(r) => Some(r.lsn),
                Decoded::Short { needed } if p + needed as u64 <= file_len => {
                    match decode_record(self.window(p, needed)?, max) {
                        Decoded::Record(r) => Some(r.lsn),
                        _ => None,
                    }
                }
                _ => None,
            };
            if matches!(candidate, Some(lsn) if lsn >= min_lsn) {
                return Ok(Some(p));
            }
            p += RECORD_ALIGN as u64;
        }
        Ok(None)
    }

    /// Offset just past the last non-zero byte at or after `from` (or `from` if none).
    pub(crate) fn nonzero_end(&mut self, from: u64) -> Result<u64> {
        let mut end = from;
        let mut p = from;
        while p < self.file_len {
            let w = self.window(p, CHUNK)?;
            if w.is_empty() {
                break;
            }
            if let Some(i) = w.iter().rposition(|&b| b != 0) {
                end = p + i as u64 + 1;
            }
            p += w.len() as u64;
        }
        Ok(end)
    }
}

fn read_up_to(file: &dyn StorageFile, buf: &mut [u8], off: u64) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        let n = file.read_at(&mut buf[got..], off + got as u64)?;
        if n == 0 {
            break;
        }
        got += n;
    }
    Ok(got)
}

/// How a segment's records end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Tail {
    /// End of file or zeroed space: nothing to cut.
    Clean,
    /// Damaged bytes at `at` with nothing valid after them: a torn write. The log is cut at
    /// `cut` (the end of the last complete batch); `junk_end` is the end of the non-zero
    /// bytes to erase.
    Torn {
        cut: u64,
        at: u64,
        junk_end: u64,
        kind: CorruptKind,
    },
    /// Damaged bytes at `offset` followed by a valid record: corruption.
    Corrupt { offset: u64, kind: CorruptKind },
}

/// The result of scanning a whole segment.
#[derive(Debug, Clone)]
pub(crate) struct SegmentScan {
    pub header: SegmentHeader,
    /// LSN of the last record of the last complete batch, if any.
    pub last_lsn: Option<u64>,
    /// Offset just past the last complete batch: where the next record goes.
    pub end: u64,
    pub tail: Tail,
    /// Length of the file when it was scanned.
    pub file_len: u64,
}

/// Scans every record of a segment, checking LSN order and batch completeness.
pub(crate) fn scan_segment(
    storage: &dyn Storage,
    path: &Path,
    max_record: u32,
) -> Result<SegmentScan> {
    let mut cur = SegmentCursor::open(storage, path, max_record)?;
    let header = *cur.header();
    let mut expected = header.first_lsn;
    let mut last_lsn = None;
    let mut end = SEGMENT_HEADER_LEN;
    let mut batch_open = false;
    let (stop, kind) = loop {
        match cur.next_step()? {
            Step::Record(r, off) => {
                if r.lsn != expected {
                    break (
                        off,
                        Some(CorruptKind::BadLsn {
                            expected,
                            found: r.lsn,
                        }),
                    );
                }
                expected += 1;
                batch_open = r.flags & FLAG_BATCH_CONTINUES != 0;
                if !batch_open {
                    last_lsn = Some(r.lsn);
                    end = off + r.size as u64;
                }
            }
            Step::End(off) => break (off, None),
            Step::Bad(off, kind) => break (off, Some(kind)),
        }
    };
    let tail = match classify_stop(&mut cur, stop, kind, batch_open, expected)? {
        Stop::Clean => Tail::Clean,
        Stop::Corrupt(kind) => Tail::Corrupt { offset: stop, kind },
        Stop::Torn(kind) => Tail::Torn {
            cut: end,
            at: stop,
            junk_end: cur.nonzero_end(end)?,
            kind,
        },
    };
    Ok(SegmentScan {
        header,
        last_lsn,
        end,
        tail,
        file_len: cur.file_len,
    })
}

/// How a segment's records stop, once the cursor reached `stop`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Stop {
    /// Only zeros (or nothing) follow, and no batch is open: the end of the records.
    Clean,
    /// Damage, an open batch or stray bytes with no valid record after them: a torn write.
    Torn(CorruptKind),
    /// A valid record with a later LSN follows the damage: corruption.
    Corrupt(CorruptKind),
}

/// Classifies the stop point. `kind` is what was wrong there (`None` for zeros or end of
/// file), `expected` the LSN the next record had to carry.
pub(crate) fn classify_stop(
    cur: &mut SegmentCursor,
    stop: u64,
    kind: Option<CorruptKind>,
    batch_open: bool,
    expected: u64,
) -> Result<Stop> {
    // One pass over the rest of the file in the common case (all zeros); the search for a
    // valid record only runs when there is something non-zero to search.
    let junk = cur.nonzero_end(stop)? > stop;
    let follows = if junk {
        cur.valid_record_after(stop + RECORD_ALIGN as u64, expected)?
    } else {
        None
    };
    let fallback = if batch_open {
        CorruptKind::IncompleteBatch
    } else {
        CorruptKind::Zeroed
    };
    Ok(match (follows, kind) {
        (Some(_), kind) => Stop::Corrupt(kind.unwrap_or(fallback)),
        (None, None) if !junk && !batch_open => Stop::Clean,
        (None, kind) => Stop::Torn(kind.unwrap_or(if batch_open {
            CorruptKind::IncompleteBatch
        } else {
            CorruptKind::TrailingGarbage
        })),
    })
}

/// True if the segment holds nothing: shorter than a header, or zeros throughout (created,
/// but its header never reached the disk).
pub(crate) fn header_never_written(storage: &dyn Storage, path: &Path) -> Result<bool> {
    let f = storage
        .open(path, OpenMode::Read)
        .map_err(|e| Error::io("open", path, e))?;
    let len = f.len().map_err(|e| Error::io("stat", path, e))?;
    if len < SEGMENT_HEADER_LEN {
        // Too short to hold even the header: nothing was ever in it.
        return Ok(true);
    }
    // A zeroed header with records after it is damage, not an unfinished creation: only a
    // file that is zeros throughout counts as never written.
    let mut buf = vec![0u8; CHUNK];
    let mut off = 0u64;
    while off < len {
        let n = read_up_to(&*f, &mut buf, off).map_err(|e| Error::io("read", path, e))?;
        if n == 0 {
            break;
        }
        if buf[..n].iter().any(|&x| x != 0) {
            return Ok(false);
        }
        off += n as u64;
    }
    Ok(true)
}
