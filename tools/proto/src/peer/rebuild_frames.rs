//! The frames of a rebuild over the peer link (`docs/FORMAT.md` section 29): the backup's
//! files (REBUILD, FILE, FILES_END) and the write hold that ends it (HOLD, HELD, RELEASE),
//! with the checks the encoder and the decoder share.

use super::error::FrameFault;

/// A REBUILD: sent by a lost server right after the handshake, instead of data; the
/// acceptor answers with the files of one backup (FILE frames) and FILES_END.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RebuildRequest {
    /// Whether the acceptor must take a new backup (`true`) or may send its newest
    /// complete one (`false`).
    pub fresh: bool,
}

/// A FILE: `data` is the bytes at `offset` of the backup file `name`, `total_len` bytes
/// long. A file's chunks come in order, each at most [`MAX_FILE_CHUNK`] bytes; an empty
/// file is one chunk with no data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileChunk {
    /// The file's path inside the backup directory: relative, `/`-separated, no empty,
    /// `.` or `..` component, at most [`MAX_FILE_NAME`] bytes ([`check_file_name`]).
    pub name: String,
    /// Where `data` goes in the file.
    pub offset: u64,
    /// The file's whole length; `offset + data.len()` is at most this.
    pub total_len: u64,
    /// The bytes.
    pub data: Vec<u8>,
}

/// A FILES_END: every file of the backup was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FilesEnd {
    /// Files sent.
    pub files: u32,
    /// Bytes of file data sent.
    pub bytes: u64,
    /// The node whose backup it is (the acceptor).
    pub source_node: u64,
    /// The timeline of the backup's log (from its BACKUP manifest).
    pub source_timeline: u64,
    /// The acceptor's high-water mark of the initiator's own batches (a position: its
    /// incarnation in the high bits), 0 if it holds none.
    pub lost_node_mark: u64,
}

/// A HOLD: the initiator (a rebuilt server) holds the acceptor's batches up to `mark` and
/// asks it to delay new writes for at most `max_ms` and name the position to reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hold {
    /// The initiator's high-water mark of the acceptor's own batches.
    pub mark: u64,
    /// Longest the acceptor may hold its writes, ms: 1 to [`MAX_HOLD_MS`].
    pub max_ms: u32,
}

/// A HELD: the acceptor's answer to a HOLD.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    /// The position of the acceptor's last own batch at the cut-off (the HOLD's `mark` if
    /// it has none after it): the initiator holds everything the acceptor held at the
    /// cut-off once its mark reaches it.
    pub cutoff: u64,
    /// The acceptor's own batches after the HOLD's `mark` up to the cut-off.
    pub pending: u64,
    /// Whether writes are held (until RELEASE or `max_ms`): not when `pending` was too
    /// many to ship within the hold (ask again once closer).
    pub granted: bool,
}

/// A RELEASE: the initiator ends the hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Release {
    /// Whether the initiator's mark reached the cut-off.
    pub reached: bool,
}

/// A HOLD_ENDED: the acceptor's account of a hold once it ended (after RELEASE, or when
/// it expired), so the rebuilt server can report the pause its clients saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HoldEnded {
    /// How long new writes were held, µs (HOLD to RELEASE or expiry).
    pub pause_us: u64,
    /// Client writes that waited.
    pub writes_held: u64,
    /// Median wait of those writes, µs (0 when none waited).
    pub held_p50_us: u64,
    /// Longest wait of those writes, µs.
    pub held_max_us: u64,
}

/// Longest write hold a HOLD may ask for, ms.
pub const MAX_HOLD_MS: u32 = 1000;

/// Longest file name a FILE frame carries, bytes.
pub const MAX_FILE_NAME: usize = 1024;
/// Most data bytes in one FILE frame (1 MiB).
pub const MAX_FILE_CHUNK: usize = 1 << 20;

/// Checks a FILE name: what a receiver may join to its staging directory without leaving
/// it. Shared by the encoder and the decoder.
pub fn check_file_name(name: &str) -> Result<(), FrameFault> {
    let bad = |why| Err(FrameFault::BadFileName { why });
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > MAX_FILE_NAME {
        return bad("longer than 1024 bytes");
    }
    if name.starts_with('/') {
        return bad("absolute");
    }
    if name.contains('\\') || name.contains('\0') {
        return bad("holds a backslash or a NUL byte");
    }
    if name
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return bad("has an empty, '.' or '..' component");
    }
    Ok(())
}

/// Checks a HOLD's `max_ms`, shared by the encoder and the decoder.
pub(crate) fn check_hold_ms(max_ms: u32) -> Result<(), FrameFault> {
    if max_ms == 0 || max_ms > MAX_HOLD_MS {
        return Err(FrameFault::OutOfRange {
            field: "max_ms",
            value: u64::from(max_ms),
            min: 1,
            max: u64::from(MAX_HOLD_MS),
        });
    }
    Ok(())
}

/// Checks a FILE chunk's placement and size, shared by the encoder and the decoder.
pub(crate) fn check_file_chunk(offset: u64, len: usize, total_len: u64) -> Result<(), FrameFault> {
    if len > MAX_FILE_CHUNK {
        return Err(FrameFault::FileChunkTooLarge {
            len,
            max: MAX_FILE_CHUNK,
        });
    }
    let end = offset.checked_add(len as u64);
    if end.is_none_or(|e| e > total_len) {
        return Err(FrameFault::ChunkBeyondFile {
            offset,
            len,
            total_len,
        });
    }
    Ok(())
}
