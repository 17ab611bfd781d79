//! The one error type of the crate. Messages name the object (`s3://bucket/key`) and, for
//! damage, the byte offset; they never carry credentials.

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong with object storage.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A location that is neither a path nor `s3://bucket/prefix`.
    #[error("bad object storage location {url:?}: {reason} (write s3://bucket/prefix)")]
    BadLocation {
        /// What was given.
        url: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// The client could not be configured (region, endpoint, ...).
    #[error("cannot configure the S3 client for {url}: {reason} (check AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_ALLOW_HTTP or the [s3] section of the config file)")]
    Config {
        /// The location.
        url: String,
        /// The client's complaint.
        reason: String,
    },
    /// A request failed (after the client's own retries).
    #[error("object storage {op} of {object} failed: {reason} (is the store reachable, the bucket there and the credentials right?)")]
    Request {
        /// What was attempted.
        op: &'static str,
        /// The object or prefix, as `s3://bucket/key`.
        object: String,
        /// The store's or the network's error.
        reason: String,
    },
    /// An object that should exist does not.
    #[error("{object} does not exist in the object store{hint}")]
    Missing {
        /// The object.
        object: String,
        /// What its absence means.
        hint: &'static str,
    },
    /// Bytes read back do not match their checksum.
    #[error("corrupt object {object}: bytes [{offset}, {end}) have CRC32C {found:08x}, expected {expected:08x}; the object is damaged: restore from another backup or archive copy")]
    Corrupt {
        /// The object.
        object: String,
        /// First byte of the damaged range.
        offset: u64,
        /// End of the damaged range.
        end: u64,
        /// CRC32C expected.
        expected: u32,
        /// CRC32C read.
        found: u32,
    },
    /// An object of the wrong length (a truncated or replaced object).
    #[error("corrupt object {object}: {found} bytes, expected {expected}")]
    Length {
        /// The object.
        object: String,
        /// Expected length.
        expected: u64,
        /// Length found.
        found: u64,
    },
    /// An object whose contents or name do not follow the layout.
    #[error("malformed object {object}: {reason}")]
    Malformed {
        /// The object.
        object: String,
        /// What is wrong.
        reason: String,
    },
    /// The archived fragments of a segment do not join up.
    #[error("archive gap in {object}: fragments cover bytes [0, {covered}) but the segment was sealed at {sealed} bytes; that segment's archive is incomplete")]
    Gap {
        /// The segment prefix.
        object: String,
        /// Bytes covered from 0.
        covered: u64,
        /// Sealed length.
        sealed: u64,
    },
    /// A local file could not be read or written.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was attempted.
        op: &'static str,
        /// The file.
        path: std::path::PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A backup already exists under that name in the store.
    #[error("a backup named {object} already exists in the object store; choose another name")]
    Exists {
        /// The backup's prefix.
        object: String,
    },
}

impl Error {
    pub(crate) fn io(op: &'static str, path: &std::path::Path, source: std::io::Error) -> Error {
        Error::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }
}
