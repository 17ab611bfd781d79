//! The engine's one error type. WAL errors pass through unchanged in [`Error::Wal`];
//! damage in the page store or manifest is typed like the WAL's, with file and offset.

use std::io;
use std::path::PathBuf;

/// Result alias for the engine.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the engine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// From the write-ahead log (I/O, corruption, poisoning).
    #[error(transparent)]
    Wal(#[from] duplex_wal::Error),
    /// Replication refused a request (a peer's position this server cannot serve).
    #[error(transparent)]
    Repl(#[from] crate::repl::ReplError),

    /// An operating-system call failed on `path`.
    #[error("I/O error during {op} on {path}: {source} (check the disk, its free space and permissions)")]
    Io {
        /// What the engine was doing.
        op: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// Bytes in the page store or manifest fail a check. Nothing wrong was returned.
    #[error("corrupt data in {file} at offset {offset}: {kind} (the data of this node cannot be trusted: restore it with `duplex-recover restore --backup DIR --archive DIR --into NEW_DIR` from a backup plus the archive, then start the server on the new directory)")]
    Corrupt {
        /// The damaged file.
        file: PathBuf,
        /// Offset of the damaged block.
        offset: u64,
        /// What is wrong.
        kind: CorruptKind,
    },

    /// Another process (or another `Database` in this one) has the directory open.
    #[error("the database in {dir} is already open by another process (the directory's lock is held); nothing was written: stop the other process or use another directory")]
    Locked {
        /// The data directory.
        dir: PathBuf,
    },

    /// A key is empty or longer than the configured limit; nothing was written.
    #[error("key of {len} bytes is outside the allowed 1..={max} bytes; nothing was written")]
    KeyTooLarge {
        /// Key length.
        len: usize,
        /// Configured maximum.
        max: usize,
    },

    /// A value is longer than the configured limit; nothing was written.
    #[error("value of {len} bytes exceeds the maximum of {max} bytes; nothing was written (raise the server's max value size setting, or store a smaller value)")]
    ValueTooLarge {
        /// Value length.
        len: usize,
        /// Configured maximum.
        max: usize,
    },

    /// A batch is larger than one WAL record may be; nothing was written.
    #[error("batch of {len} encoded bytes exceeds the maximum of {max}; nothing was written (split it into smaller batches)")]
    BatchTooLarge {
        /// Encoded size.
        len: usize,
        /// Maximum.
        max: usize,
    },

    /// An earlier write to the page store failed; the database refuses writes.
    #[error("the database is poisoned: {0}; restart the process once the disk is healthy (acknowledged writes are safe in the WAL)")]
    Poisoned(String),

    /// The configuration cannot work.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// The database was closed.
    #[error("the database is closed")]
    Closed,

    /// A store or manifest operation ran out of disk space or file descriptors. Nothing
    /// acknowledged is at risk (the WAL holds every acknowledged write) and nothing is
    /// poisoned: the checkpoint is retried later and writes resume by themselves once the
    /// resource is back.
    #[error("{op} on {path} failed: {source} (out of disk space or file descriptors; acknowledged writes are safe in the WAL and the work is retried by itself: free space on the disk or raise the open-file limit)")]
    Resource {
        /// What the engine was doing.
        op: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error (`ENOSPC`, `EDQUOT`, `EMFILE` or `ENFILE`).
        #[source]
        source: io::Error,
    },

    /// A file was written by a newer Duplex, in a format this build cannot read. The data
    /// is not damaged: run a newer `duplexd`.
    #[error("{file} was written by a newer Duplex (format {found}, this build reads up to {supported}); the data is not damaged: use a Duplex release that reads format {found}")]
    NewerFormat {
        /// The file.
        file: PathBuf,
        /// The format version found.
        found: u32,
        /// The newest format version this build reads.
        supported: u32,
    },
}

/// The ways engine bytes on disk can be wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CorruptKind {
    /// Wrong magic bytes.
    #[error("bad magic (not a Duplex file of this kind)")]
    BadMagic,
    /// A format version this build cannot read.
    #[error("unsupported format version {0}")]
    UnsupportedVersion(u32),
    /// A format version above what this build reads: written by a newer Duplex, not damage
    /// (turned into [`Error::NewerFormat`] by the engine).
    #[error("written by a newer Duplex (format {found}, this build reads up to {supported})")]
    NewerFormat {
        /// The version found.
        found: u32,
        /// The newest version this build reads.
        supported: u32,
    },
    /// A checksum mismatch.
    #[error("checksum mismatch (stored {expected:#010x}, computed {actual:#010x})")]
    CrcMismatch {
        /// Stored CRC.
        expected: u32,
        /// Computed CRC.
        actual: u32,
    },
    /// A structure extends past the end of the file or its container.
    #[error("truncated structure")]
    Truncated,
    /// A field holds an impossible value.
    #[error("invalid field: {0}")]
    Invalid(&'static str),
    /// A block of another kind was found where this kind was expected.
    #[error("expected a {expected} block, found kind {found}")]
    WrongBlock {
        /// What was expected.
        expected: &'static str,
        /// Kind byte found.
        found: u8,
    },
    /// A WAL record's payload is not a valid engine record.
    #[error("invalid WAL record payload: {0}")]
    BadRecord(&'static str),
}

impl Error {
    /// An operating-system error on `path`: [`Error::Resource`] when disk space or
    /// descriptors ran out, else [`Error::Io`].
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        if duplex_wal::ResourceKind::of(&source).is_some() {
            return Error::Resource {
                op,
                path: path.into(),
                source,
            };
        }
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// An operating-system error that is fatal whatever its cause: after it the state on
    /// disk is unknown (e.g. a directory fsync after the manifest's rename).
    pub(crate) fn io_fatal(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// Builds an [`Error::Corrupt`], or [`Error::NewerFormat`] for a format above what
    /// this build reads.
    pub(crate) fn corrupt(file: &std::path::Path, offset: u64, kind: CorruptKind) -> Self {
        if let CorruptKind::NewerFormat { found, supported } = kind {
            return Error::NewerFormat {
                file: file.to_path_buf(),
                found,
                supported,
            };
        }
        Error::Corrupt {
            file: file.to_path_buf(),
            offset,
            kind,
        }
    }

    /// True when disk space or file descriptors ran out ([`Error::Resource`], or the WAL's
    /// own refusal): nothing acknowledged is at risk, the database is not poisoned, and
    /// writes (or the checkpoint) resume by themselves once the resource is back.
    pub fn is_resource(&self) -> bool {
        match self {
            Error::Resource { .. } => true,
            Error::Wal(e) => e.is_resource(),
            _ => false,
        }
    }

    /// True when a file was written by a newer Duplex ([`Error::NewerFormat`]).
    pub fn is_newer_format(&self) -> bool {
        matches!(self, Error::NewerFormat { .. })
    }

    /// True when this error reports damaged bytes on disk.
    pub fn is_corruption(&self) -> bool {
        match self {
            Error::Corrupt { .. } => true,
            Error::Wal(e) => e.is_corruption(),
            _ => false,
        }
    }

    /// True when the database can take no more writes in this process: the WAL or the page
    /// store failed an I/O operation (fail-stop). A server moves to `failed` on such an
    /// error; a refusal of one request (limits, configuration) is not fatal.
    pub fn is_fatal(&self) -> bool {
        match self {
            Error::Poisoned(_) | Error::Io { .. } => true,
            Error::Wal(e) => e.is_fatal(),
            _ => false,
        }
    }

    /// True when a write that returned this error may or may not be durable: it failed
    /// during or after its WAL append (a failed write or fsync), so it may reappear after a
    /// restart. Errors for which this is false mean the write was refused and not applied.
    pub fn outcome_unknown(&self) -> bool {
        match self {
            Error::Io { .. } => true,
            Error::Wal(e) => e.outcome_unknown(),
            _ => false,
        }
    }
}
