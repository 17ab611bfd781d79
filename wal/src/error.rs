//! The WAL's one error type.
//!
//! Corruption is typed (`Corrupt { file, offset, kind }`) so callers and tools can tell a
//! damaged file from an I/O failure without reading message text. Every `Display` says what
//! happened and what an operator can do about it.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// Result alias for the WAL crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the WAL.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system call failed on `path`.
    #[error("I/O error during {op} on {path}: {source} (check the disk, its free space and permissions)")]
    Io {
        /// What the WAL was doing (e.g. "write", "fsync", "open").
        op: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// Bytes on disk fail a check. Nothing past this point was used.
    #[error("corrupt WAL data in {file} at offset {offset}: {kind} (keep the file for analysis: copy it aside; check the rest with `duplex-recover verify`, then restore with `duplex-recover restore --backup DIR --archive DIR --into NEW_DIR` from a backup plus the archive)")]
    Corrupt {
        /// The damaged file.
        file: PathBuf,
        /// Byte offset of the damaged structure within the file.
        offset: u64,
        /// What exactly is wrong.
        kind: CorruptKind,
    },

    /// An earlier write or fsync failed; the log refuses further writes (fail-stop).
    #[error("the WAL is poisoned: an earlier {op} failed on {file}: {reason}; no further writes are accepted. Records acknowledged before the failure are safe; restart the process once the disk is healthy")]
    Poisoned {
        /// The operation that failed first.
        op: &'static str,
        /// The file it failed on.
        file: PathBuf,
        /// The original error, as text (the `io::Error` itself was returned to the first caller).
        reason: String,
    },

    /// A record payload exceeds the configured maximum; nothing was written.
    #[error("record of {len} bytes exceeds the maximum record size of {max} bytes; nothing was written (raise WalOptions::max_record_size or split the data)")]
    RecordTooLarge {
        /// Size of the offending payload.
        len: u64,
        /// Configured maximum.
        max: u64,
    },

    /// A caller passed a record kind that is reserved (0).
    #[error("record kind 0 is reserved for empty space; use a kind between 1 and 255")]
    ReservedKind,

    /// `append_batch` was called with no records.
    #[error("an empty batch cannot be appended")]
    EmptyBatch,

    /// The configuration cannot work.
    #[error("invalid WAL configuration: {0}")]
    Config(String),

    /// A segment in the directory belongs to another node.
    #[error("segment {file} belongs to node {found}, but this WAL was opened as node {expected}; point the WAL at its own directory")]
    NodeMismatch {
        /// The segment file.
        file: PathBuf,
        /// Node id configured by the caller.
        expected: u64,
        /// Node id found in the segment header.
        found: u64,
    },

    /// Records are missing between two segments.
    #[error("gap in the log: records after LSN {after_lsn} are missing; the next segment {next_file} starts at LSN {next_first_lsn} (find the missing segment in the archive or a backup)")]
    Gap {
        /// Last LSN present before the gap.
        after_lsn: u64,
        /// First LSN of the segment after the gap.
        next_first_lsn: u64,
        /// The segment after the gap.
        next_file: PathBuf,
    },

    /// A reader was asked to start at an LSN the log no longer (or not yet) holds.
    #[error("LSN {requested} is not available: the log holds LSNs {first} to {last} (older records may be in the archive)")]
    LsnUnavailable {
        /// The LSN asked for.
        requested: u64,
        /// First LSN held.
        first: u64,
        /// Last LSN held.
        last: u64,
    },

    /// A live segment is shorter than the size it was preallocated to: a crash cannot
    /// shrink a preallocated file, so something else cut it and records may be lost.
    #[error("segment {file} is {actual} bytes long but was created with {expected}: a crash cannot shrink a preallocated segment, so the file was cut by something else (a copy, a tool, a full file system) and records past its end may be lost. Keep the file; restore with `duplex-recover restore` from a backup plus the archive, or copy the archived copy of this segment back if the archive holds it whole")]
    ShortSegment {
        /// The segment file.
        file: PathBuf,
        /// Length the header says it was created with.
        expected: u64,
        /// Length found.
        actual: u64,
    },

    /// The archive holds, under a segment's name, a file that is not a copy of it (another
    /// lineage, or other bytes).
    #[error("the archive file {archived} is not a copy of {source_file}: {reason}. The archive must hold one history; move the archived file aside (or point this log at an archive of its own, see WalOptions::archive_dir) and compare the two")]
    ArchiveConflict {
        /// The file in the archive.
        archived: PathBuf,
        /// The segment that was to be archived.
        source_file: PathBuf,
        /// What differs.
        reason: String,
    },

    /// An archive directory does not hold one history, or a root holds several and the
    /// reader did not say which to read.
    #[error("the archive directory {dir} does not hold one history: {detail}")]
    ArchiveLineage {
        /// The directory.
        dir: PathBuf,
        /// What was found.
        detail: String,
    },

    /// The archive could not be written while a commit waited for it
    /// ([`crate::WalOptions::archive_lag_ms`] = 0). The records are durable in the local
    /// log; only the archive copy is missing.
    #[error("the commit is durable in the local log but the synchronous archive failed: {reason} (fix the archive directory; the log retries on every commit, or set archive_lag_ms above 0 to let commits go on while the archive is down)")]
    ArchiveFailed {
        /// What failed.
        reason: String,
    },

    /// A resource the log needs ran out (disk space, or file descriptors) at a point where
    /// nothing of the refused write had reached the log: the write was refused whole, no
    /// LSN was used, the log is not poisoned and reads go on. The next write tries again, so
    /// writes resume by themselves once the resource is back.
    #[error("{op} on {path} was refused: {kind}; nothing of this write was logged and the log is intact (reads go on). Writes resume by themselves once {}", kind.remedy())]
    Resource {
        /// What the WAL was doing (e.g. "create segment", "preallocate").
        op: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// Which resource ran out.
        kind: ResourceKind,
        /// The operating-system error, when the refusal came from one (none when the log
        /// refused by itself because free space fell below the reserve).
        #[source]
        source: Option<io::Error>,
    },

    /// The WAL was closed.
    #[error("the WAL is closed")]
    Closed,
}

/// The resources whose exhaustion refuses a write without poisoning the log
/// ([`Error::Resource`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ResourceKind {
    /// The file system is full (`ENOSPC`) or the user's disk quota is used up (`EDQUOT`).
    OutOfSpace,
    /// The process (`EMFILE`) or the whole system (`ENFILE`) has no file descriptor left.
    OutOfDescriptors,
    /// Free space on the log's file system is below what a new segment and
    /// [`crate::WalOptions::reserve_bytes`] need: refused before the disk is actually full,
    /// so that a checkpoint and the server's own files still have room.
    BelowReserve {
        /// Bytes free on the file system.
        available: u64,
        /// Bytes a new segment needs free: its size plus the reserve.
        needed: u64,
    },
}

impl ResourceKind {
    /// The resource kind of an operating-system error, if it is one of exhaustion
    /// (`ENOSPC`, `EDQUOT`, `EMFILE`, `ENFILE`).
    pub fn of(e: &io::Error) -> Option<ResourceKind> {
        match e.raw_os_error()? {
            libc::ENOSPC | libc::EDQUOT => Some(ResourceKind::OutOfSpace),
            libc::EMFILE | libc::ENFILE => Some(ResourceKind::OutOfDescriptors),
            _ => None,
        }
    }

    /// What brings writes back, for the error message.
    fn remedy(&self) -> &'static str {
        match self {
            ResourceKind::OutOfSpace | ResourceKind::BelowReserve { .. } => {
                "space is freed on the log's file system (delete other files or grow it; WalOptions::reserve_bytes sets the margin kept free)"
            }
            ResourceKind::OutOfDescriptors => {
                "file descriptors are free again (close connections or files, or raise the open-file limit: ulimit -n)"
            }
        }
    }
}

impl fmt::Display for ResourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResourceKind::OutOfSpace => write!(f, "the file system is out of space"),
            ResourceKind::OutOfDescriptors => {
                write!(f, "no file descriptor is left (the process's or the system's limit)")
            }
            ResourceKind::BelowReserve { available, needed } => write!(
                f,
                "only {available} bytes are free on the log's file system, below the {needed} bytes a new segment and the reserve need"
            ),
        }
    }
}

/// The ways bytes on disk can be wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CorruptKind {
    /// The segment does not start with the WAL magic bytes.
    BadMagic,
    /// The segment was written by a format version this build cannot read (0, never
    /// written by any build).
    UnsupportedVersion(u32),
    /// The segment was written by a newer Duplex, in a format version above the one this
    /// build reads.
    NewerVersion {
        /// Version in the header.
        found: u32,
        /// Highest version this build reads.
        supported: u32,
    },
    /// The segment header fails its checksum.
    HeaderCrc {
        /// CRC stored in the header.
        expected: u32,
        /// CRC computed over the header.
        actual: u32,
    },
    /// A record fails its checksum.
    CrcMismatch {
        /// CRC stored in the record.
        expected: u32,
        /// CRC computed over the record.
        actual: u32,
    },
    /// A record's length field is beyond the configured maximum.
    LengthTooLarge {
        /// Length found.
        len: u64,
        /// Maximum allowed.
        max: u64,
    },
    /// The file ends inside a header or record.
    Truncated,
    /// A record's LSN is not the one that must come next.
    BadLsn {
        /// LSN that must come next.
        expected: u64,
        /// LSN found.
        found: u64,
    },
    /// A record's reserved bytes or padding are not zero.
    NonZeroReserved,
    /// A record of reserved kind 0 with a non-zero body.
    BadKind,
    /// Zeroed bytes where a record must be (valid records follow them).
    Zeroed,
    /// Non-zero bytes after the end of the records, with no valid record among them.
    TrailingGarbage,
    /// A segment header names an LSN the log cannot use (0, or too close to the maximum).
    BadFirstLsn(u64),
    /// A batch that a later record shows must have been complete is cut short.
    IncompleteBatch,
    /// A segment's name does not match the first LSN in its header.
    NameMismatch {
        /// LSN in the file name.
        name_lsn: u64,
        /// LSN in the header.
        header_lsn: u64,
    },
}

impl fmt::Display for CorruptKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CorruptKind::BadMagic => write!(f, "not a Duplex WAL segment (bad magic)"),
            CorruptKind::UnsupportedVersion(v) => {
                write!(f, "unsupported segment format version {v}")
            }
            CorruptKind::NewerVersion { found, supported } => write!(
                f,
                "written by a newer Duplex (format {found}, this build reads up to {supported}); open it with that version or a later one"
            ),
            CorruptKind::HeaderCrc { expected, actual } => write!(
                f,
                "segment header checksum mismatch (stored {expected:#010x}, computed {actual:#010x})"
            ),
            CorruptKind::CrcMismatch { expected, actual } => write!(
                f,
                "record checksum mismatch (stored {expected:#010x}, computed {actual:#010x})"
            ),
            CorruptKind::LengthTooLarge { len, max } => {
                write!(f, "record length {len} exceeds the maximum {max}")
            }
            CorruptKind::Truncated => write!(f, "file ends inside a record"),
            CorruptKind::BadLsn { expected, found } => {
                write!(f, "record has LSN {found}, expected {expected}")
            }
            CorruptKind::NonZeroReserved => write!(f, "reserved bytes or padding are not zero"),
            CorruptKind::BadKind => write!(f, "record of reserved kind 0"),
            CorruptKind::IncompleteBatch => write!(f, "batch cut short"),
            CorruptKind::Zeroed => write!(f, "zeroed bytes where a record must be"),
            CorruptKind::TrailingGarbage => {
                write!(f, "non-zero bytes after the last record")
            }
            CorruptKind::BadFirstLsn(l) => write!(f, "segment header names first LSN {l}, which is out of range"),
            CorruptKind::NameMismatch {
                name_lsn,
                header_lsn,
            } => write!(
                f,
                "segment named for LSN {name_lsn} but its header says {header_lsn}"
            ),
        }
    }
}

impl Error {
    /// Builds an [`Error::Io`].
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// True when this error reports damaged bytes on disk.
    pub fn is_corruption(&self) -> bool {
        matches!(
            self,
            Error::Corrupt { .. } | Error::Gap { .. } | Error::ShortSegment { .. }
        )
    }

    /// Builds an [`Error::Resource`] if `source` is an exhaustion error (no space, no
    /// descriptors), else an [`Error::Io`]: for operations that leave nothing of a record
    /// half written, where running out is a refusal, not a disk failure.
    pub(crate) fn io_or_resource(
        op: &'static str,
        path: impl Into<PathBuf>,
        source: io::Error,
    ) -> Self {
        match ResourceKind::of(&source) {
            Some(kind) => Error::Resource {
                op,
                path: path.into(),
                kind,
                source: Some(source),
            },
            None => Error::io(op, path, source),
        }
    }

    /// True when a write was refused because disk space or file descriptors ran out
    /// ([`Error::Resource`]): nothing of it was logged, the log goes on, and writes resume by
    /// themselves once the resource is back. A server answers such a write with an error
    /// naming the cause and keeps serving reads.
    pub fn is_resource(&self) -> bool {
        matches!(self, Error::Resource { .. })
    }

    /// True when the log can take no more writes in this process: a write, fsync or file
    /// operation failed (the log is poisoned, fail-stop). Refusals of one request (too
    /// large, empty batch, a resource that ran out) and a closed log are not fatal.
    pub fn is_fatal(&self) -> bool {
        matches!(self, Error::Io { .. } | Error::Poisoned { .. })
    }

    /// True when a write that returned this error may or may not be in the log: its bytes
    /// may have reached the disk before a write or fsync failed (the writer that met the
    /// failure gets `Io`, the others of its group `Poisoned`), so after a restart it may be
    /// there. A caller must report such a write as neither done nor refused.
    pub fn outcome_unknown(&self) -> bool {
        self.is_fatal()
    }
}
