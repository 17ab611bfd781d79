//! The peer link: the frames two `duplexd`s exchange, and the handshake that proves both
//! hold the cluster secret before any data frame is accepted. Byte layouts are in
//! `docs/FORMAT.md` section 29.
//!
//! Pure code over byte buffers (no sockets, no threads, no clock, no randomness), so the
//! server, the whole-system simulation and the fuzzer drive it alike:
//! - [`Frame`] and its parts ([`Hello`], [`Batches`], [`Ack`], ...): one value per frame
//!   kind. [`Frame::encode`] appends a frame; [`encode_batches`] writes a BATCHES frame from
//!   borrowed payloads (what a sender reads from its WAL), without copying them first.
//! - [`decode_frame`] decodes one frame from the front of a buffer; [`FrameDecoder`] is the
//!   incremental form for a connection: feed it bytes, take frames out. Both check every
//!   length against [`FrameLimits`] before allocating anything from it, and a frame that
//!   decodes re-encodes to the same bytes.
//! - [`Handshake`]: the initiator's or the acceptor's state machine. Fed received frames, it
//!   answers the frames to send and ends [`Status::Established`] or [`Status::Refused`].
//!   The caller supplies the secret and a fresh random nonce, so a run is reproducible.
//!   [`Handshake::admit`] is the gate every later frame passes: no data before Established.
//!
//! Invariants: decoding never panics and never allocates more than a small multiple of the
//! bytes it was given; every error names what is wrong and the stream offset where;
//! the cluster secret never enters a frame, a `Debug` output or an error message.

mod decode;
mod error;
mod frame;
mod handshake;
mod rebuild_frames;

pub use decode::{decode_frame, Decoded, FrameDecoder};
pub use error::{FrameFault, PeerError};
pub use frame::{
    check_file_name, encode_batches, Ack, Batch, BatchRef, Batches, ErrorCode, ErrorFrame,
    FileChunk, FilesEnd, Frame, FrameKind, Heartbeat, Held, Hello, Hold, HoldEnded, Lacking, Proof,
    RebuildRequest, Refuse, RefuseReason, Release, Resync, MAX_FILE_CHUNK, MAX_FILE_NAME,
    MAX_HOLD_MS,
};
pub use handshake::{Handshake, NodeIdentity, Party, PeerInfo, Refusal, Role, Status};

/// The first four bytes of every frame. The first is not ASCII, so no text protocol (a RESP
/// request or an inline command) starts like a frame, and a server can tell the two apart
/// from one byte.
pub const MAGIC: [u8; 4] = [0xD7, b'D', b'P', b'L'];
/// Frame format version (header byte 4). A frame of another version is refused.
pub const FRAME_VERSION: u8 = 1;
/// Protocol version a HELLO announces. Peers of another version are refused with
/// [`RefuseReason::VersionMismatch`].
pub const PROTOCOL_VERSION: u16 = 1;
/// Bytes before the payload: magic, version, kind, flags, payload length, header CRC.
pub const HEADER_LEN: usize = 16;
/// Bytes after the payload: the frame CRC.
pub const TRAILER_LEN: usize = 4;
/// Bytes of a frame around its payload.
pub const FRAME_OVERHEAD: usize = HEADER_LEN + TRAILER_LEN;
/// Bytes of a handshake nonce.
pub const NONCE_LEN: usize = 32;
/// Bytes of a proof (an HMAC-SHA256 tag).
pub const PROOF_LEN: usize = 32;
/// Longest message (UTF-8 bytes) in a REFUSE or ERROR frame.
pub const MAX_MESSAGE_BYTES: usize = 1024;
/// Bytes of a BATCHES payload before its first batch: origin u64, count u32.
pub const BATCHES_HEADER_LEN: usize = 12;
/// Bytes of one batch before its payload: origin LSN, previous origin LSN, stamp, length.
pub const BATCH_HEADER_LEN: usize = 28;

/// Engine default largest WAL record: a 16 MiB value, a 4 KiB key and 1 MiB of headroom
/// (`duplex_engine::Config::default()`). A batch travels exactly as logged, so this is the
/// default largest batch.
const DEFAULT_MAX_BATCH_BYTES: u32 = (16 << 20) + 4096 + (1 << 20);

/// Bounds on what a frame may hold, checked before any allocation sized by the peer, when
/// decoding and when encoding (so a sender never builds a frame its peer refuses, given the
/// same limits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameLimits {
    /// Largest whole frame (header, payload and CRC), bytes. Default 18 MiB: one batch of
    /// the default largest size with room to spare. Must hold a largest batch
    /// ([`FrameLimits::validate`]).
    pub max_frame_bytes: u32,
    /// Most batches in one BATCHES frame. Default 4096.
    pub max_batches_per_frame: u32,
    /// Largest payload of one batch, bytes. Default 17 MiB + 4 KiB, the engine's default
    /// largest WAL record; a server sets it from its engine's `max_record_size`.
    pub max_batch_bytes: u32,
}

impl Default for FrameLimits {
    fn default() -> Self {
        FrameLimits {
            max_frame_bytes: 18 << 20,
            max_batches_per_frame: 4096,
            max_batch_bytes: DEFAULT_MAX_BATCH_BYTES,
        }
    }
}

impl FrameLimits {
    /// Smallest `max_frame_bytes` accepted: every handshake frame and a REFUSE or ERROR
    /// with the longest message fit.
    pub const MIN_FRAME_BYTES: u32 = (FRAME_OVERHEAD + 3 + MAX_MESSAGE_BYTES) as u32;

    /// Limits whose frames hold one batch of `max_batch_bytes`: the default frame size, or
    /// more when such a batch needs it.
    pub fn for_batch_bytes(max_batch_bytes: u32) -> FrameLimits {
        let need = Self::frame_bytes_for_batch(max_batch_bytes);
        let dflt = FrameLimits::default();
        FrameLimits {
            max_frame_bytes: u32::try_from(need)
                .unwrap_or(u32::MAX)
                .max(dflt.max_frame_bytes),
            max_batch_bytes,
            ..dflt
        }
    }

    /// Checks that the limits are usable: a frame holds the handshake frames and at least
    /// one batch of `max_batch_bytes`, and a frame may hold at least one batch.
    pub fn validate(&self) -> Result<(), PeerError> {
        if self.max_frame_bytes < Self::MIN_FRAME_BYTES {
            return Err(PeerError::BadLimits {
                what: "max_frame_bytes is below the smallest usable frame (1047 bytes)",
            });
        }
        if self.max_batches_per_frame == 0 {
            return Err(PeerError::BadLimits {
                what: "max_batches_per_frame must be at least 1",
            });
        }
        if Self::frame_bytes_for_batch(self.max_batch_bytes) > u64::from(self.max_frame_bytes) {
            return Err(PeerError::BadLimits {
                what: "max_frame_bytes cannot hold one batch of max_batch_bytes \
                       (it needs max_batch_bytes + 60 bytes)",
            });
        }
        Ok(())
    }

    /// Largest payload a frame may carry.
    pub fn max_payload_bytes(&self) -> u32 {
        self.max_frame_bytes.saturating_sub(FRAME_OVERHEAD as u32)
    }

    fn frame_bytes_for_batch(max_batch_bytes: u32) -> u64 {
        (FRAME_OVERHEAD + BATCHES_HEADER_LEN + BATCH_HEADER_LEN) as u64 + u64::from(max_batch_bytes)
    }
}
