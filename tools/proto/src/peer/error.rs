//! The peer link's errors: what is wrong with a frame and where ([`FrameFault`] inside
//! [`PeerError::Frame`]), a frame out of place in the handshake, and unusable settings.
//!
//! A separate enum from the RESP `ProtoError`: a RESP violation is answered with a reply
//! line to a client, a peer-link error closes the link and is shown in the server's INFO.
//! After any of them the stream cannot be resynchronised: the server closes the connection,
//! and the link starts again with a new handshake.

use super::frame::{FrameKind, RefuseReason};

/// What is wrong with a frame's bytes (or with a frame a caller asked to encode).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameFault {
    /// A byte of the magic is wrong (the offset points at it): the other end does not speak
    /// the peer link (a RESP client on the peer port, or a wrong `--peer` address).
    #[error(
        "byte {found:#04x} where the frame magic has {expected:#04x}: the other end is not a \
         duplexd peer link; check the --peer address"
    )]
    BadMagic {
        /// The byte found.
        found: u8,
        /// The magic's byte at that position.
        expected: u8,
    },
    /// The header CRC does not match: the length and kind cannot be trusted.
    #[error("header CRC mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    HeaderCrcMismatch {
        /// CRC stored in the header.
        stored: u32,
        /// CRC of the header bytes received.
        computed: u32,
    },
    /// The frame CRC does not match: a byte of the header or payload was damaged.
    #[error("frame CRC mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    CrcMismatch {
        /// CRC stored after the payload.
        stored: u32,
        /// CRC of the bytes received.
        computed: u32,
    },
    /// A frame format version this build does not read: upgrade the older server.
    #[error("frame version {found} is not supported (this build reads version {supported}); run the same duplexd version on both servers")]
    UnsupportedVersion {
        /// Version byte found.
        found: u8,
        /// The version this build reads.
        supported: u8,
    },
    /// A kind byte that names no frame.
    #[error("unknown frame kind {found}")]
    UnknownKind {
        /// Kind byte found.
        found: u8,
    },
    /// Reserved flag bits are set.
    #[error("reserved flags {found:#06x} set (must be 0)")]
    ReservedFlags {
        /// Flags found.
        found: u16,
    },
    /// The whole frame would exceed `max_frame_bytes`.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes (max_frame_bytes)")]
    FrameTooLarge {
        /// Bytes the frame would span (header, payload, CRC).
        len: u64,
        /// The configured limit.
        max: u32,
    },
    /// The payload length is impossible for the frame's kind.
    #[error("{kind} payload of {len} bytes (must be {min}..={max})")]
    PayloadLength {
        /// The frame's kind.
        kind: FrameKind,
        /// Payload length declared.
        len: u32,
        /// Shortest payload of this kind.
        min: u32,
        /// Longest payload of this kind (before the frame limit).
        max: u32,
    },
    /// The payload ends inside a field.
    #[error("payload ends inside {field}")]
    Truncated {
        /// The field cut short.
        field: &'static str,
    },
    /// Bytes are left after the last field.
    #[error("{count} bytes after the last field")]
    TrailingBytes {
        /// How many.
        count: usize,
    },
    /// A BATCHES frame with no batch.
    #[error("BATCHES frame with no batch")]
    EmptyBatches,
    /// More batches than `max_batches_per_frame`.
    #[error("{count} batches exceed the limit of {max} (max_batches_per_frame)")]
    TooManyBatches {
        /// Batches declared.
        count: u32,
        /// The configured limit.
        max: u32,
    },
    /// More batches declared than the payload could hold (each takes at least 28 bytes).
    #[error("{count} batches declared but the payload holds at most {room}")]
    CountExceedsPayload {
        /// Batches declared.
        count: u32,
        /// Most batches the remaining bytes could hold.
        room: usize,
    },
    /// A batch payload longer than `max_batch_bytes`.
    #[error("batch {index} of {len} bytes exceeds the limit of {max} bytes (max_batch_bytes)")]
    BatchTooLarge {
        /// Index of the batch in the frame.
        index: u32,
        /// Length declared.
        len: u32,
        /// The configured limit.
        max: u32,
    },
    /// A batch whose origin LSN does not lie after its predecessor's.
    #[error("batch {index}: origin LSN {origin_lsn} is not after its previous origin LSN {prev_origin_lsn}")]
    LsnNotAfterPrevious {
        /// Index of the batch in the frame.
        index: u32,
        /// Its origin LSN.
        origin_lsn: u64,
        /// The previous origin LSN it names.
        prev_origin_lsn: u64,
    },
    /// A batch that does not follow the one before it in the same frame.
    #[error("batch {index} names previous origin LSN {prev_origin_lsn}, but the batch before it has {expected}")]
    BrokenChain {
        /// Index of the batch in the frame.
        index: u32,
        /// The previous origin LSN it names.
        prev_origin_lsn: u64,
        /// The origin LSN of the batch before it.
        expected: u64,
    },
    /// A REFUSE or ERROR message longer than [`super::MAX_MESSAGE_BYTES`].
    #[error("message of {len} bytes exceeds {max} bytes")]
    MessageTooLong {
        /// Length declared (or given).
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A REFUSE or ERROR message that is not UTF-8.
    #[error("message is not valid UTF-8")]
    BadUtf8,
    /// A byte that must be 0 or 1 holds something else.
    #[error("{field} is {found} (must be 0 or 1)")]
    BadFlag {
        /// The field.
        field: &'static str,
        /// The byte found.
        found: u8,
    },
    /// A field outside its range.
    #[error("{field} is {value} (must be {min}..={max})")]
    OutOfRange {
        /// The field.
        field: &'static str,
        /// The value found.
        value: u64,
        /// Smallest allowed.
        min: u64,
        /// Largest allowed.
        max: u64,
    },
    /// A FILE name a receiver must not write under its staging directory.
    #[error("FILE name is {why}: a backup file's name must be a relative path inside the backup")]
    BadFileName {
        /// What is wrong with it.
        why: &'static str,
    },
    /// A FILE chunk larger than [`super::MAX_FILE_CHUNK`].
    #[error("FILE chunk of {len} bytes exceeds {max} bytes")]
    FileChunkTooLarge {
        /// Bytes in the chunk.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A FILE chunk that ends past the file's declared length.
    #[error(
        "FILE chunk of {len} bytes at offset {offset} ends past the file's length {total_len}"
    )]
    ChunkBeyondFile {
        /// The chunk's offset.
        offset: u64,
        /// Its length.
        len: usize,
        /// The file's declared length.
        total_len: u64,
    },
}

/// An error of the peer link. Every one ends the connection; the message says what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PeerError {
    /// Received bytes that are not a valid frame. `offset` counts bytes from the start of
    /// the stream (for [`super::decode_frame`]: from the start of its buffer) to the field
    /// at fault (the frame's first byte for header and CRC faults).
    #[error("peer link damaged at stream offset {offset}: {fault}; the connection is closed and the link reconnects")]
    Frame {
        /// Where, in bytes from the start of the stream.
        offset: u64,
        /// What is wrong.
        fault: FrameFault,
    },
    /// A frame a caller asked to encode breaks the limits or the format (a bug in the
    /// sender: the frame is not sent).
    #[error("cannot encode a {kind} frame: {fault}")]
    Encode {
        /// The frame's kind.
        kind: FrameKind,
        /// What is wrong with it.
        fault: FrameFault,
    },
    /// A frame arrived where the link does not allow it (for example data before the
    /// handshake is established): the peer breaks the protocol.
    #[error(
        "{kind} frame received {when}: the peer breaks the link protocol; the connection is closed"
    )]
    UnexpectedFrame {
        /// The frame's kind.
        kind: FrameKind,
        /// In which state it arrived.
        when: &'static str,
    },
    /// The handshake has ended (established or refused) and takes no more frames.
    #[error("the handshake has already ended ({outcome})")]
    HandshakeOver {
        /// How it ended.
        outcome: &'static str,
    },
    /// The peer refused the link after this side considered it established (the
    /// initiator did not accept this side's WELCOME).
    #[error("the peer refused the link: {reason}: {message}")]
    RefusedByPeer {
        /// The peer's reason.
        reason: RefuseReason,
        /// The peer's message.
        message: String,
    },
    /// The cluster secret is empty: nothing would be proved.
    #[error("the cluster secret is empty: put at least one byte (better 32 random bytes) in --cluster-secret-file")]
    EmptySecret,
    /// [`super::FrameLimits`] that cannot work.
    #[error("invalid peer frame limits: {what}")]
    BadLimits {
        /// What is wrong.
        what: &'static str,
    },
}

impl PeerError {
    /// The frame fault, if this is a decoding or encoding error.
    pub fn fault(&self) -> Option<&FrameFault> {
        match self {
            PeerError::Frame { fault, .. } | PeerError::Encode { fault, .. } => Some(fault),
            _ => None,
        }
    }
}
