//! The crate's one error type, [`Error`], and the kinds of damage the `STATE` file decoder
//! tells apart ([`StateDamage`]). Every message says what happened and what to do.

use std::path::PathBuf;

/// Everything that stops `duplexd` from starting or running, or a backup from being taken.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Object storage (an `s3://` backup_dir or archive_dir) failed.
    #[error("object storage: {0}")]
    Remote(#[from] duplex_objstore::Error),
    /// The configuration is unusable.
    #[error("configuration: {0}")]
    Config(String),
    /// A file operation failed.
    #[error("I/O error during {op} on {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The `STATE` file is damaged (never guessed over: the epoch must not go backwards).
    #[error("the state file {path} is damaged ({why}); if this server's data is otherwise sound, move it aside and start again: the server then starts one above the highest epoch its WAL recorded (a fenced or failed mark in the damaged file is lost with it: fence again with DUPLEX.FENCE if it was fenced)")]
    StateFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: StateDamage,
    },
    /// The engine refused (open, backup, ...).
    #[error(transparent)]
    Engine(#[from] duplex_engine::Error),
    /// The listening address cannot be bound (checked before the data directory is touched).
    #[error("cannot listen on {addr}: {source}; if the port is busy (another duplexd or another server on it), stop that one or choose another with --port")]
    Bind {
        /// The address and port.
        addr: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Binding or accepting failed.
    #[error("network: {0}")]
    Net(#[source] std::io::Error),
    /// A backup was asked for while another one runs.
    #[error("a backup is already running; wait for it to finish (INFO persistence shows the last one) and ask again")]
    BackupRunning,
    /// A backup name that is not a plain directory name.
    #[error("backup name {name:?} must be a plain directory name (no '/' or '\\', not starting with '.', not ending in '.tmp')")]
    BackupName {
        /// The name given.
        name: String,
    },
    /// An incremental backup was asked for without a full backup of this lineage to build on.
    #[error("no complete backup of node {node} timeline {timeline} in {} to build an incremental backup on: take a full one first (DUPLEX.BACKUP without INCREMENTAL)", dir.display())]
    NoBaseBackup {
        /// The backup directory searched.
        dir: PathBuf,
        /// This server's node id.
        node: u64,
        /// Its timeline.
        timeline: u64,
    },
    /// The backup's directory exists already.
    #[error("{} already exists; give the backup another name", path.display())]
    BackupExists {
        /// The directory.
        path: PathBuf,
    },
    /// The `REBUILDING` marker of an unfinished rebuild is damaged: whether the rebuilt data
    /// caught up with its peer is unknown, so the server does not start.
    #[error("the rebuild marker {} is damaged ({why}): this data directory was rebuilt from a peer and may not have caught up with it; move the data directory away and rebuild again with --rebuild-from (or, if you know the rebuild finished, remove the marker)", path.display())]
    RebuildMarker {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// A rebuild from a peer (`--rebuild-from`) failed; nothing was put in the data
    /// directory and the peer keeps serving.
    #[error("rebuild from {peer} failed: {why}; the data directory was left untouched and the peer keeps serving: fix the cause and start again with --rebuild-from (a new attempt starts over)")]
    Rebuild {
        /// The peer's address.
        peer: String,
        /// What went wrong.
        why: String,
    },
}

impl Error {
    /// A failed rebuild from `peer`.
    pub fn rebuild(peer: &str, why: impl Into<String>) -> Error {
        Error::Rebuild {
            peer: peer.to_owned(),
            why: why.into(),
        }
    }
}

/// What is wrong with a `STATE` file's bytes (layout in `docs/FORMAT.md`, section "duplexd
/// STATE file").
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StateDamage {
    /// The file is not exactly [`crate::state::STATE_LEN`] bytes.
    #[error("length {len} is not {expected}")]
    Length {
        /// Bytes found.
        len: usize,
        /// Bytes expected.
        expected: usize,
    },
    /// The file does not open with `DPXSTATE`.
    #[error("bad magic")]
    BadMagic,
    /// The checksum does not match the contents.
    #[error("checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    Checksum {
        /// CRC32C stored in the file.
        stored: u32,
        /// CRC32C of the contents.
        computed: u32,
    },
    /// A format version this build does not read.
    #[error("unsupported version {0}")]
    Version(u32),
    /// Reserved bytes are not zero.
    #[error("reserved bytes are not zero")]
    Reserved,
    /// The state byte names no known state.
    #[error("unknown state byte {0}")]
    UnknownState(u8),
}
