//! Frame values and their encoder (`docs/FORMAT.md` section 29).
//!
//! Every frame is `header(16) payload(len) crc(4)`; the header carries its own CRC so that
//! a length is trusted only after it has been checked. The encoder applies the same checks
//! as the decoder ([`check_batch`] is shared), so whatever it writes decodes to the same
//! value, and whatever decodes re-encodes to the same bytes.

use std::fmt;

use super::error::{FrameFault, PeerError};
pub(crate) use super::rebuild_frames::{check_file_chunk, check_hold_ms};
pub use super::rebuild_frames::{
    check_file_name, FileChunk, FilesEnd, Held, Hold, HoldEnded, RebuildRequest, Release,
    MAX_FILE_CHUNK, MAX_FILE_NAME, MAX_HOLD_MS,
};
use super::{
    FrameLimits, BATCHES_HEADER_LEN, BATCH_HEADER_LEN, FRAME_VERSION, HEADER_LEN, MAGIC,
    MAX_MESSAGE_BYTES, NONCE_LEN, PROOF_LEN,
};

/// Bytes of a HELLO or CHALLENGE payload.
pub(crate) const HELLO_LEN: u32 = 66;
/// Bytes of a REFUSE or ERROR payload before its message: code u8, message length u16.
pub(crate) const MESSAGE_HEADER_LEN: u32 = 3;
/// Bytes of a FILE payload besides its name and data: name_len u16, offset u64,
/// total_len u64.
pub(crate) const FILE_HEADER_LEN: u32 = 18;
/// Bytes of a FILES_END payload: files u32 and four u64.
pub(crate) const FILES_END_LEN: u32 = 36;

/// The kind byte of a frame (header byte 5). Codes 1 to 15 are handshake frames, 16 and up
/// data frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FrameKind {
    /// 1: the initiator's identity and nonce.
    Hello,
    /// 2: the acceptor's identity and nonce.
    Challenge,
    /// 3: the initiator's proof of the secret.
    Proof,
    /// 4: the acceptor's proof; the link is established.
    Welcome,
    /// 5: the handshake is refused, with a reason.
    Refuse,
    /// 16: WAL batches of one origin.
    Batches,
    /// 17: the receiver's durable high-water mark of an origin.
    Ack,
    /// 18: an idle origin's time ("nothing more below this stamp").
    Heartbeat,
    /// 19: "resend after this origin LSN".
    Resync,
    /// 20: a fatal error; the sender closes the link.
    Error,
    /// 21: a lost server asks its peer for a backup instead of sending data.
    Rebuild,
    /// 22: a chunk of one file of the backup a REBUILD asked for.
    File,
    /// 23: the backup's files are all sent; what the lost server needs to adopt them.
    FilesEnd,
    /// 24: a rebuilt server asks its peer to hold new writes briefly and name a cut-off.
    Hold,
    /// 25: the peer's answer to a HOLD: the cut-off, and whether writes are held.
    Held,
    /// 26: the rebuilt server ends the hold.
    Release,
    /// 27: the sender cannot send an origin's batches after a position (it no longer
    /// holds them).
    Lacking,
    /// 28: the peer's report of a write hold that ended: the pause and the writes held.
    HoldEnded,
}

impl FrameKind {
    /// Every kind, in code order.
    pub const ALL: [FrameKind; 18] = [
        FrameKind::Hello,
        FrameKind::Challenge,
        FrameKind::Proof,
        FrameKind::Welcome,
        FrameKind::Refuse,
        FrameKind::Batches,
        FrameKind::Ack,
        FrameKind::Heartbeat,
        FrameKind::Resync,
        FrameKind::Error,
        FrameKind::Rebuild,
        FrameKind::File,
        FrameKind::FilesEnd,
        FrameKind::Hold,
        FrameKind::Held,
        FrameKind::Release,
        FrameKind::Lacking,
        FrameKind::HoldEnded,
    ];

    /// The kind byte.
    pub fn code(self) -> u8 {
        match self {
            FrameKind::Hello => 1,
            FrameKind::Challenge => 2,
            FrameKind::Proof => 3,
            FrameKind::Welcome => 4,
            FrameKind::Refuse => 5,
            FrameKind::Batches => 16,
            FrameKind::Ack => 17,
            FrameKind::Heartbeat => 18,
            FrameKind::Resync => 19,
            FrameKind::Error => 20,
            FrameKind::Rebuild => 21,
            FrameKind::File => 22,
            FrameKind::FilesEnd => 23,
            FrameKind::Hold => 24,
            FrameKind::Held => 25,
            FrameKind::Release => 26,
            FrameKind::Lacking => 27,
            FrameKind::HoldEnded => 28,
        }
    }

    /// The kind a byte names, if any.
    pub fn from_code(code: u8) -> Option<FrameKind> {
        FrameKind::ALL.into_iter().find(|k| k.code() == code)
    }

    /// HELLO, CHALLENGE, PROOF, WELCOME and REFUSE: only before the link is established.
    pub fn is_handshake(self) -> bool {
        self.code() < 16
    }

    /// The upper-case name used in FORMAT.md and in messages.
    pub fn name(self) -> &'static str {
        match self {
            FrameKind::Hello => "HELLO",
            FrameKind::Challenge => "CHALLENGE",
            FrameKind::Proof => "PROOF",
            FrameKind::Welcome => "WELCOME",
            FrameKind::Refuse => "REFUSE",
            FrameKind::Batches => "BATCHES",
            FrameKind::Ack => "ACK",
            FrameKind::Heartbeat => "HEARTBEAT",
            FrameKind::Resync => "RESYNC",
            FrameKind::Error => "ERROR",
            FrameKind::Rebuild => "REBUILD",
            FrameKind::File => "FILE",
            FrameKind::FilesEnd => "FILES_END",
            FrameKind::Hold => "HOLD",
            FrameKind::Held => "HELD",
            FrameKind::Release => "RELEASE",
            FrameKind::Lacking => "LACKING",
            FrameKind::HoldEnded => "HOLD_ENDED",
        }
    }

    /// Shortest and longest payload of this kind (the longest before `max_frame_bytes`).
    pub(crate) fn payload_range(self) -> (u32, u32) {
        match self {
            FrameKind::Hello | FrameKind::Challenge => (HELLO_LEN, HELLO_LEN),
            FrameKind::Proof | FrameKind::Welcome => (PROOF_LEN as u32, PROOF_LEN as u32),
            FrameKind::Refuse | FrameKind::Error => (
                MESSAGE_HEADER_LEN,
                MESSAGE_HEADER_LEN + MAX_MESSAGE_BYTES as u32,
            ),
            FrameKind::Batches => ((BATCHES_HEADER_LEN + BATCH_HEADER_LEN) as u32, u32::MAX),
            FrameKind::Ack | FrameKind::Resync | FrameKind::Lacking => (16, 16),
            FrameKind::Heartbeat => (24, 24),
            FrameKind::Rebuild => (1, 1),
            FrameKind::File => (FILE_HEADER_LEN + 1, u32::MAX),
            FrameKind::FilesEnd => (FILES_END_LEN, FILES_END_LEN),
            FrameKind::Hold => (12, 12),
            FrameKind::Held => (17, 17),
            FrameKind::Release => (1, 1),
            FrameKind::HoldEnded => (32, 32),
        }
    }
}

impl fmt::Display for FrameKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A HELLO (initiator) or CHALLENGE (acceptor): who the sender is, and its fresh nonce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// The sender's protocol version ([`super::PROTOCOL_VERSION`]).
    pub protocol: u16,
    /// The cluster the sender belongs to.
    pub cluster_id: u64,
    /// The sender's node id.
    pub node_id: u64,
    /// The sender's incarnation of its node id (a restored server is a new one).
    pub incarnation: u64,
    /// The sender's fencing epoch.
    pub epoch: u64,
    /// Random bytes the sender chose for this handshake.
    pub nonce: [u8; NONCE_LEN],
}

impl Hello {
    // Format: protocol:u16 cluster_id:u64 node_id:u64 incarnation:u64 epoch:u64 nonce[32]
    pub(crate) fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.protocol.to_le_bytes());
        for v in [self.cluster_id, self.node_id, self.incarnation, self.epoch] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&self.nonce);
    }

    /// The 66 payload bytes (what the handshake's keyed hash covers).
    pub fn to_payload(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HELLO_LEN as usize);
        self.write(&mut out);
        out
    }
}

/// A PROOF or WELCOME: an HMAC-SHA256 tag proving the cluster secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Proof(pub [u8; PROOF_LEN]);

/// Why a handshake was refused (REFUSE byte 0). Unknown codes from a newer peer decode as
/// [`RefuseReason::Other`], so its message still reaches the operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefuseReason {
    /// 1: the proof does not match this side's cluster secret.
    WrongSecret,
    /// 2: the peer claims this server's node id, or one already connected.
    DuplicateNodeId,
    /// 3: the peer belongs to another cluster id.
    OtherCluster,
    /// 4: the peer speaks another protocol version.
    VersionMismatch,
    /// 5: the peer broke the handshake protocol (a frame out of place, an echoed nonce).
    Protocol,
    /// 6: the peer's node id is not in this server's membership list.
    NotAMember,
    /// Any other code (0 or from a newer version); never one of the codes above.
    Other(u8),
}

impl RefuseReason {
    /// The reason byte.
    pub fn code(self) -> u8 {
        match self {
            RefuseReason::WrongSecret => 1,
            RefuseReason::DuplicateNodeId => 2,
            RefuseReason::OtherCluster => 3,
            RefuseReason::VersionMismatch => 4,
            RefuseReason::Protocol => 5,
            RefuseReason::NotAMember => 6,
            RefuseReason::Other(c) => c,
        }
    }

    /// The reason a byte names.
    pub fn from_code(code: u8) -> RefuseReason {
        match code {
            1 => RefuseReason::WrongSecret,
            2 => RefuseReason::DuplicateNodeId,
            3 => RefuseReason::OtherCluster,
            4 => RefuseReason::VersionMismatch,
            5 => RefuseReason::Protocol,
            6 => RefuseReason::NotAMember,
            c => RefuseReason::Other(c),
        }
    }
}

impl fmt::Display for RefuseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RefuseReason::WrongSecret => f.write_str("wrong cluster secret"),
            RefuseReason::DuplicateNodeId => f.write_str("duplicate node id"),
            RefuseReason::OtherCluster => f.write_str("other cluster"),
            RefuseReason::VersionMismatch => f.write_str("protocol version mismatch"),
            RefuseReason::Protocol => f.write_str("handshake protocol violation"),
            RefuseReason::NotAMember => f.write_str("not a member of this cluster"),
            RefuseReason::Other(c) => write!(f, "refusal reason {c}"),
        }
    }
}

/// What an ERROR frame reports (ERROR byte 0). Unknown codes decode as
/// [`ErrorCode::Other`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// 1: the peer broke the link protocol.
    Protocol,
    /// 2: the peer's clock is off by more than `max_clock_offset`; its batches are refused
    /// until its clock is back.
    ClockSkew,
    /// 3: what the peer needs is no longer retained; it must be rebuilt.
    NeedsRebuild,
    /// 4: the sender is shutting down.
    ShuttingDown,
    /// 5: the sender failed (I/O error, fenced log).
    Internal,
    /// Any other code (0 or from a newer version); never one of the codes above.
    Other(u8),
}

impl ErrorCode {
    /// The code byte.
    pub fn code(self) -> u8 {
        match self {
            ErrorCode::Protocol => 1,
            ErrorCode::ClockSkew => 2,
            ErrorCode::NeedsRebuild => 3,
            ErrorCode::ShuttingDown => 4,
            ErrorCode::Internal => 5,
            ErrorCode::Other(c) => c,
        }
    }

    /// The code a byte names.
    pub fn from_code(code: u8) -> ErrorCode {
        match code {
            1 => ErrorCode::Protocol,
            2 => ErrorCode::ClockSkew,
            3 => ErrorCode::NeedsRebuild,
            4 => ErrorCode::ShuttingDown,
            5 => ErrorCode::Internal,
            c => ErrorCode::Other(c),
        }
    }
}

/// A REFUSE frame: the reason and a message for the other side's operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refuse {
    /// Why.
    pub reason: RefuseReason,
    /// What the operator should do; at most [`MAX_MESSAGE_BYTES`] bytes of UTF-8.
    pub message: String,
}

impl Refuse {
    /// A refusal whose message is cut (at a character boundary) to [`MAX_MESSAGE_BYTES`].
    pub fn new(reason: RefuseReason, message: &str) -> Refuse {
        Refuse {
            reason,
            message: clip_message(message),
        }
    }
}

/// An ERROR frame: a code and a message; the sender closes the link after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorFrame {
    /// What kind of error.
    pub code: ErrorCode,
    /// What happened; at most [`MAX_MESSAGE_BYTES`] bytes of UTF-8.
    pub message: String,
}

impl ErrorFrame {
    /// An error whose message is cut (at a character boundary) to [`MAX_MESSAGE_BYTES`].
    pub fn new(code: ErrorCode, message: &str) -> ErrorFrame {
        ErrorFrame {
            code,
            message: clip_message(message),
        }
    }
}

fn clip_message(message: &str) -> String {
    let mut end = message.len().min(MAX_MESSAGE_BYTES);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    message[..end].to_owned()
}

/// One WAL batch of an origin, as the receiver holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// The batch's LSN on its origin. Above `prev_origin_lsn`.
    pub origin_lsn: u64,
    /// The origin LSN of the origin's batch before this one (0 for its first), so a
    /// receiver sees a gap: an origin's own LSNs are not consecutive.
    pub prev_origin_lsn: u64,
    /// The batch's HLC timestamp.
    pub stamp: u64,
    /// The batch exactly as the origin's engine logged it (opaque to the link).
    pub payload: Vec<u8>,
}

impl Batch {
    /// The same batch, borrowed.
    pub fn as_ref(&self) -> BatchRef<'_> {
        BatchRef {
            origin_lsn: self.origin_lsn,
            prev_origin_lsn: self.prev_origin_lsn,
            stamp: self.stamp,
            payload: &self.payload,
        }
    }
}

/// One WAL batch, borrowed: what a sender encodes straight from the bytes it read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchRef<'a> {
    /// See [`Batch::origin_lsn`].
    pub origin_lsn: u64,
    /// See [`Batch::prev_origin_lsn`].
    pub prev_origin_lsn: u64,
    /// See [`Batch::stamp`].
    pub stamp: u64,
    /// See [`Batch::payload`].
    pub payload: &'a [u8],
}

/// A BATCHES frame: consecutive batches of one origin, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batches {
    /// The node that wrote the batches.
    pub origin: u64,
    /// At least one, at most `max_batches_per_frame`; each follows the one before it
    /// (its `prev_origin_lsn` is the previous batch's `origin_lsn`).
    pub batches: Vec<Batch>,
}

/// An ACK: the receiver has made durable every batch of `origin` up to `durable_lsn`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    /// The origin acknowledged.
    pub origin: u64,
    /// The receiver's durable high-water mark for that origin (an origin LSN).
    pub durable_lsn: u64,
}

/// A HEARTBEAT: the origin will send nothing stamped below `stamp` after this frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heartbeat {
    /// The origin.
    pub origin: u64,
    /// An HLC timestamp: every later batch of the origin is stamped above it.
    pub stamp: u64,
    /// The origin LSN of the last batch the origin sent on this link (0 if none), so an
    /// idle receiver still sees a lost tail.
    pub last_origin_lsn: u64,
}

/// A RESYNC: the receiver asks the sender to resend the origin's batches after
/// `last_good_lsn` (after a gap or a batch it could not apply).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resync {
    /// The origin.
    pub origin: u64,
    /// The last origin LSN the receiver holds; the sender resumes with the batch after it.
    pub last_good_lsn: u64,
}

/// A LACKING: the sender (a survivor asked to forward an origin's earlier batches to a peer
/// below that origin's rebuilt base) holds none of them after `after` any more, neither in
/// memory nor in its log or archive. A peer that hears it from every other member turns
/// `needs-rebuild` instead of waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lacking {
    /// The origin whose batches are lacking.
    pub origin: u64,
    /// The receiver's mark of that origin: nothing after it can be sent.
    pub after: u64,
}

/// One peer-link frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// HELLO: the initiator's identity and nonce.
    Hello(Hello),
    /// CHALLENGE: the acceptor's identity and nonce.
    Challenge(Hello),
    /// PROOF: the initiator's proof.
    Proof(Proof),
    /// WELCOME: the acceptor's proof.
    Welcome(Proof),
    /// REFUSE: the handshake failed.
    Refuse(Refuse),
    /// BATCHES: WAL batches of one origin.
    Batches(Batches),
    /// ACK: a durable high-water mark.
    Ack(Ack),
    /// HEARTBEAT: an idle origin's time.
    Heartbeat(Heartbeat),
    /// RESYNC: resend after an LSN.
    Resync(Resync),
    /// ERROR: fatal; the link closes.
    Error(ErrorFrame),
    /// REBUILD: the initiator asks for a backup.
    Rebuild(RebuildRequest),
    /// FILE: a chunk of a backup file.
    File(FileChunk),
    /// FILES_END: the backup is complete.
    FilesEnd(FilesEnd),
    /// HOLD: hold writes and name a cut-off.
    Hold(Hold),
    /// HELD: the cut-off.
    Held(Held),
    /// RELEASE: the hold ends.
    Release(Release),
    /// LACKING: the sender cannot send an origin's batches after a position.
    Lacking(Lacking),
    /// HOLD_ENDED: how the hold went, as the peer that held its writes saw it.
    HoldEnded(HoldEnded),
}

impl Frame {
    /// The frame's kind.
    pub fn kind(&self) -> FrameKind {
        match self {
            Frame::Hello(_) => FrameKind::Hello,
            Frame::Challenge(_) => FrameKind::Challenge,
            Frame::Proof(_) => FrameKind::Proof,
            Frame::Welcome(_) => FrameKind::Welcome,
            Frame::Refuse(_) => FrameKind::Refuse,
            Frame::Batches(_) => FrameKind::Batches,
            Frame::Ack(_) => FrameKind::Ack,
            Frame::Heartbeat(_) => FrameKind::Heartbeat,
            Frame::Resync(_) => FrameKind::Resync,
            Frame::Error(_) => FrameKind::Error,
            Frame::Rebuild(_) => FrameKind::Rebuild,
            Frame::File(_) => FrameKind::File,
            Frame::FilesEnd(_) => FrameKind::FilesEnd,
            Frame::Hold(_) => FrameKind::Hold,
            Frame::Held(_) => FrameKind::Held,
            Frame::Release(_) => FrameKind::Release,
            Frame::Lacking(_) => FrameKind::Lacking,
            Frame::HoldEnded(_) => FrameKind::HoldEnded,
        }
    }

    /// Appends the frame to `out`. Fails (appending nothing) if it breaks `limits` or the
    /// format: a message too long, no batch, batches that do not follow one another.
    pub fn encode(&self, limits: &FrameLimits, out: &mut Vec<u8>) -> Result<(), PeerError> {
        if let Frame::Batches(b) = self {
            let refs: Vec<BatchRef<'_>> = b.batches.iter().map(Batch::as_ref).collect();
            return encode_batches(limits, b.origin, &refs, out);
        }
        let kind = self.kind();
        let start = begin(out, kind);
        let written = self.write_small_payload(out);
        match written.and_then(|()| finish(out, start, kind, limits)) {
            Ok(()) => Ok(()),
            Err(fault) => {
                out.truncate(start);
                Err(PeerError::Encode { kind, fault })
            }
        }
    }

    /// The frame's bytes.
    pub fn to_bytes(&self, limits: &FrameLimits) -> Result<Vec<u8>, PeerError> {
        let mut out = Vec::new();
        self.encode(limits, &mut out)?;
        Ok(out)
    }

    /// The payload of every kind. [`Frame::encode`] sends BATCHES through
    /// [`encode_batches`] instead, which checks every batch before writing any.
    fn write_small_payload(&self, out: &mut Vec<u8>) -> Result<(), FrameFault> {
        match self {
            Frame::Hello(h) | Frame::Challenge(h) => h.write(out),
            Frame::Proof(p) | Frame::Welcome(p) => out.extend_from_slice(&p.0),
            Frame::Refuse(r) => write_message(out, r.reason.code(), &r.message)?,
            Frame::Error(e) => write_message(out, e.code.code(), &e.message)?,
            // Format: origin:u64 durable_lsn:u64
            Frame::Ack(a) => put_u64s(out, &[a.origin, a.durable_lsn]),
            // Format: origin:u64 stamp:u64 last_origin_lsn:u64
            Frame::Heartbeat(h) => put_u64s(out, &[h.origin, h.stamp, h.last_origin_lsn]),
            // Format: origin:u64 last_good_lsn:u64
            Frame::Resync(r) => put_u64s(out, &[r.origin, r.last_good_lsn]),
            Frame::Batches(b) => {
                write_batches(out, b.origin, b.batches.iter().map(Batch::as_ref));
            }
            // Format: fresh:u8 (0 or 1)
            Frame::Rebuild(r) => out.push(u8::from(r.fresh)),
            Frame::File(f) => write_file(out, f)?,
            // Format: files:u32 bytes:u64 source_node:u64 source_timeline:u64 lost_node_mark:u64
            Frame::FilesEnd(e) => {
                out.extend_from_slice(&e.files.to_le_bytes());
                put_u64s(
                    out,
                    &[e.bytes, e.source_node, e.source_timeline, e.lost_node_mark],
                );
            }
            // Format: mark:u64 max_ms:u32 (1..=1000)
            Frame::Hold(h) => {
                check_hold_ms(h.max_ms)?;
                put_u64s(out, &[h.mark]);
                out.extend_from_slice(&h.max_ms.to_le_bytes());
            }
            // Format: cutoff:u64 pending:u64 granted:u8 (0 or 1)
            Frame::Held(h) => {
                put_u64s(out, &[h.cutoff, h.pending]);
                out.push(u8::from(h.granted));
            }
            // Format: reached:u8 (0 or 1)
            Frame::Release(r) => out.push(u8::from(r.reached)),
            // Format: origin:u64 after:u64
            Frame::Lacking(l) => put_u64s(out, &[l.origin, l.after]),
            // Format: pause_us:u64 writes_held:u64 held_p50_us:u64 held_max_us:u64
            Frame::HoldEnded(h) => put_u64s(
                out,
                &[h.pause_us, h.writes_held, h.held_p50_us, h.held_max_us],
            ),
        }
        Ok(())
    }
}

/// Appends a BATCHES frame of `origin` holding `batches`, borrowed. Every check the decoder
/// makes is made first, so on error nothing is appended.
pub fn encode_batches(
    limits: &FrameLimits,
    origin: u64,
    batches: &[BatchRef<'_>],
    out: &mut Vec<u8>,
) -> Result<(), PeerError> {
    let kind = FrameKind::Batches;
    let fail = |fault| PeerError::Encode { kind, fault };
    let count = u32::try_from(batches.len()).unwrap_or(u32::MAX);
    check_batch_count(count, limits).map_err(fail)?;
    let mut payload_len = BATCHES_HEADER_LEN as u64;
    let mut before = None;
    for (i, b) in (0u32..).zip(batches) {
        let len = u32::try_from(b.payload.len()).unwrap_or(u32::MAX);
        check_batch(i, before, b.origin_lsn, b.prev_origin_lsn, len, limits).map_err(fail)?;
        before = Some(b.origin_lsn);
        payload_len += (BATCH_HEADER_LEN + b.payload.len()) as u64;
    }
    check_frame_len(payload_len, limits).map_err(fail)?;
    let start = begin(out, kind);
    write_batches(out, origin, batches.iter().copied());
    finish(out, start, kind, limits).map_err(fail)
}

// Format: origin:u64 count:u32 then count x (origin_lsn:u64 prev_origin_lsn:u64 stamp:u64 len:u32 payload[len])
fn write_batches<'a>(
    out: &mut Vec<u8>,
    origin: u64,
    batches: impl ExactSizeIterator<Item = BatchRef<'a>>,
) {
    out.extend_from_slice(&origin.to_le_bytes());
    out.extend_from_slice(&(batches.len() as u32).to_le_bytes());
    for b in batches {
        put_u64s(out, &[b.origin_lsn, b.prev_origin_lsn, b.stamp]);
        out.extend_from_slice(&(b.payload.len() as u32).to_le_bytes());
        out.extend_from_slice(b.payload);
    }
}

/// The count checks of a BATCHES frame, shared by the encoder and the decoder.
pub(crate) fn check_batch_count(count: u32, limits: &FrameLimits) -> Result<(), FrameFault> {
    if count == 0 {
        return Err(FrameFault::EmptyBatches);
    }
    if count > limits.max_batches_per_frame {
        return Err(FrameFault::TooManyBatches {
            count,
            max: limits.max_batches_per_frame,
        });
    }
    Ok(())
}

/// The checks of one batch's header, shared by the encoder and the decoder. `before` is
/// the origin LSN of the batch before it in the frame.
pub(crate) fn check_batch(
    index: u32,
    before: Option<u64>,
    origin_lsn: u64,
    prev_origin_lsn: u64,
    len: u32,
    limits: &FrameLimits,
) -> Result<(), FrameFault> {
    if origin_lsn <= prev_origin_lsn {
        return Err(FrameFault::LsnNotAfterPrevious {
            index,
            origin_lsn,
            prev_origin_lsn,
        });
    }
    if let Some(expected) = before {
        if prev_origin_lsn != expected {
            return Err(FrameFault::BrokenChain {
                index,
                prev_origin_lsn,
                expected,
            });
        }
    }
    if len > limits.max_batch_bytes {
        return Err(FrameFault::BatchTooLarge {
            index,
            len,
            max: limits.max_batch_bytes,
        });
    }
    Ok(())
}

/// Checks a payload length against the frame limit, shared by the encoder and the decoder.
pub(crate) fn check_frame_len(payload_len: u64, limits: &FrameLimits) -> Result<(), FrameFault> {
    let len = payload_len + super::FRAME_OVERHEAD as u64;
    if len > u64::from(limits.max_frame_bytes) {
        return Err(FrameFault::FrameTooLarge {
            len,
            max: limits.max_frame_bytes,
        });
    }
    Ok(())
}

/// Appends a header whose length and CRC [`finish`] fills in; returns where it starts.
fn begin(out: &mut Vec<u8>, kind: FrameKind) -> usize {
    let start = out.len();
    // Format: magic[4] version:u8 kind:u8 flags:u16=0 len:u32 header_crc:u32 (crc32c of bytes 0..12)
    out.extend_from_slice(&MAGIC);
    out.push(FRAME_VERSION);
    out.push(kind.code());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&[0; 8]);
    start
}

/// Fills in the payload length and header CRC of the frame at `start`, and appends the
/// frame CRC (crc32c of header and payload).
fn finish(
    out: &mut Vec<u8>,
    start: usize,
    kind: FrameKind,
    limits: &FrameLimits,
) -> Result<(), FrameFault> {
    let payload_len = out.len() - start - HEADER_LEN;
    check_frame_len(payload_len as u64, limits)?;
    let (min, max) = kind.payload_range();
    let len = payload_len as u32;
    if len < min || len > max {
        return Err(FrameFault::PayloadLength {
            kind,
            len,
            min,
            max,
        });
    }
    out[start + 8..start + 12].copy_from_slice(&len.to_le_bytes());
    let header_crc = crc32c::crc32c(&out[start..start + 12]);
    out[start + 12..start + 16].copy_from_slice(&header_crc.to_le_bytes());
    let crc = crc32c::crc32c(&out[start..]);
    out.extend_from_slice(&crc.to_le_bytes());
    Ok(())
}

// Format: code:u8 message_len:u16 message[message_len] (UTF-8)
fn write_message(out: &mut Vec<u8>, code: u8, message: &str) -> Result<(), FrameFault> {
    if message.len() > MAX_MESSAGE_BYTES {
        return Err(FrameFault::MessageTooLong {
            len: message.len(),
            max: MAX_MESSAGE_BYTES,
        });
    }
    out.push(code);
    out.extend_from_slice(&(message.len() as u16).to_le_bytes());
    out.extend_from_slice(message.as_bytes());
    Ok(())
}

// Format: name_len:u16 name[name_len] (UTF-8) offset:u64 total_len:u64 data[rest of the payload]
fn write_file(out: &mut Vec<u8>, f: &FileChunk) -> Result<(), FrameFault> {
    check_file_name(&f.name)?;
    check_file_chunk(f.offset, f.data.len(), f.total_len)?;
    out.extend_from_slice(&(f.name.len() as u16).to_le_bytes());
    out.extend_from_slice(f.name.as_bytes());
    put_u64s(out, &[f.offset, f.total_len]);
    out.extend_from_slice(&f.data);
    Ok(())
}

fn put_u64s(out: &mut Vec<u8>, values: &[u64]) {
    for v in values {
        out.extend_from_slice(&v.to_le_bytes());
    }
}
